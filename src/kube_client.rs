//! The Kubernetes client of every role: kube's own client stack, with Nagle's algorithm off.
//!
//! kube-client (5.0) leaves TCP_NODELAY unset on its connections (kube-rs/kube#2056). A
//! request whose head and body leave as separate TLS records then holds the body back until the
//! API server acknowledges the head, which Linux delays by 40 ms: measured here, a ComputeServer
//! create took 50 ms through kube's default client and 5 ms through kubectl (Go sets
//! TCP_NODELAY on every connection). This builds the same stack as `Client::try_from(Config)`,
//! (connect, read and write timeouts, TLS from the kubeconfig, base URI, authentication, extra
//! headers, retries when asked) on a connector that sets TCP_NODELAY.

use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kube::client::ConfigExt;
use kube::{Client, Config};

use crate::{Error, Result};

/// A client from the environment (in-cluster, or KUBECONFIG / ~/.kube/config), as
/// `Client::try_default` infers it.
pub async fn connect() -> Result<Client> {
    let config = Config::infer()
        .await
        .map_err(|e| Error::Kube(kube::Error::InferConfig(e)))?;
    from_config(config).map_err(Error::Kube)
}

/// Makes ring the process's TLS provider, as kube's own TLS is built: the object store's HTTP
/// client brings aws-lc-rs too, and with two providers rustls chooses none by itself.
pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A client for `config`. Through a proxy, or with credentials from an exec plugin, kube's own
/// client (which knows proxies, and when such credentials expire).
pub fn from_config(mut config: Config) -> kube::Result<Client> {
    install_crypto();
    // Named in the API server's audit log, and as the field manager of writes that name none
    // (kube's finalizer helper): "compute-server", not "unknown".
    if !config
        .headers
        .iter()
        .any(|(name, _)| name == hyper::header::USER_AGENT)
    {
        config.headers.push((
            hyper::header::USER_AGENT,
            hyper::header::HeaderValue::from_static(concat!("compute-server/", env!("CARGO_PKG_VERSION"))),
        ));
    }
    if config.proxy_url.is_some() || config.auth_info.exec.is_some() {
        return Client::try_from(config);
    }
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    let https = config.rustls_https_connector_with_connector(http)?;
    let mut connector = hyper_timeout::TimeoutConnector::new(https);
    connector.set_connect_timeout(config.connect_timeout);
    connector.set_read_timeout(config.read_timeout);
    connector.set_write_timeout(config.write_timeout);
    connector.set_reset_reader_on_write(config.reset_reader_on_write);
    let http_client = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(connector);
    let retry = config
        .default_retry
        .then(|| tower::retry::RetryLayer::new(kube::client::retry::RetryPolicy::server_retry()));
    let service = tower::ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(retry)
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(tower::BoxError::from)
        .service(http_client);
    Ok(Client::new(service, config.default_namespace))
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// The stack is whole: the request reaches the configured server at its path, with the
    /// configured headers and compute-server's user agent, and the answer comes back decoded.
    #[tokio::test]
    async fn requests_reach_the_server_with_the_headers_and_the_answer_comes_back() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            while !request.ends_with(b"\r\n\r\n") {
                let mut byte = [0u8];
                socket.read_exact(&mut byte).await.unwrap();
                request.push(byte[0]);
            }
            let body = r#"{"major":"1","minor":"36","gitVersion":"v1.36.3","gitCommit":"","gitTreeState":"","buildDate":"","goVersion":"","compiler":"","platform":""}"#;
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            socket.write_all(answer.as_bytes()).await.unwrap();
            String::from_utf8(request).unwrap().to_lowercase()
        });
        let mut config = kube::Config::new(url.parse().unwrap());
        config.headers.push((
            hyper::header::HeaderName::from_static("x-check"),
            hyper::header::HeaderValue::from_static("kept"),
        ));
        let client = super::from_config(config).unwrap();
        let version = client.apiserver_version().await.unwrap();
        assert_eq!(version.git_version, "v1.36.3");
        let request = server.await.unwrap();
        assert!(request.starts_with("get /version http/1.1\r\n"), "{request}");
        assert!(request.contains("\r\nx-check: kept\r\n"), "{request}");
        assert!(
            request.contains(&format!(
                "\r\nuser-agent: compute-server/{}\r\n",
                env!("CARGO_PKG_VERSION")
            )),
            "{request}"
        );
    }
}
