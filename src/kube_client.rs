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

/// A client for `config`. Through a proxy, or with credentials from an exec plugin, kube's own
/// client (which knows proxies, and when such credentials expire).
pub fn from_config(config: Config) -> kube::Result<Client> {
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
