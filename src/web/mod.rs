//! The `web` role: Keycloak sign-in, the pages people use to request, watch, stop, start and
//! delete their own servers, and the JSON API for scripts. Stateless: sessions live in
//! encrypted cookies, servers and profiles in a watch cache, so replicas share nothing but the
//! session key.
//!
//! [`oidc`] speaks to Keycloak, [`session`] keeps the browser session, [`cache`] watches the
//! cluster, [`servers`] holds the rules both [`pages`] and [`api`] follow.

pub mod api;
pub mod apps;
pub mod cache;
pub mod lifecycle;
pub mod limit;
mod metrics;
pub mod oidc;
pub mod pages;
pub mod servers;
pub mod session;
pub mod snapshots;
pub mod ssh;
pub mod terminal;
pub mod usage;
mod usage_page;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Event;
use kube::Api;
use prometheus_client::registry::Registry;
use tracing::{info, warn};

use crate::api::ComputeServer;
use crate::{Error, Result};
use cache::Cache;
use oidc::Provider;
use session::Cookies;

/// Flags of `compute-server web`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Where to serve the pages, the API, /healthz, /readyz and /metrics.
    #[arg(long, env = "COMPUTE_SERVER_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// The URL people reach this front at; sign-in comes back to {public-url}/auth/callback.
    #[arg(
        long,
        env = "COMPUTE_SERVER_PUBLIC_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub public_url: String,

    /// The Keycloak realm's issuer URL, such as https://keycloak.example.org/realms/compute.
    #[arg(long, env = "COMPUTE_SERVER_OIDC_ISSUER")]
    pub issuer_url: String,

    /// The Keycloak client of this front.
    #[arg(long, env = "COMPUTE_SERVER_OIDC_CLIENT_ID", default_value = "compute-server")]
    pub client_id: String,

    /// The client's secret: set for a confidential client, leave out for a public one.
    #[arg(long, env = "COMPUTE_SERVER_OIDC_CLIENT_SECRET", hide_env_values = true)]
    pub client_secret: Option<String>,

    /// A file holding the client's secret (a mounted Kubernetes Secret), in place of --client-secret.
    #[arg(
        long,
        env = "COMPUTE_SERVER_OIDC_CLIENT_SECRET_FILE",
        conflicts_with = "client_secret"
    )]
    pub client_secret_file: Option<std::path::PathBuf>,

    /// Base64 of at least 64 random bytes that encrypt the session cookies; replicas must share
    /// it. Without it a random key is made, and sessions end when the process does.
    #[arg(long, env = "COMPUTE_SERVER_SESSION_KEY", hide_env_values = true)]
    pub session_key: Option<String>,

    /// A file holding the session key (a mounted Kubernetes Secret), in place of --session-key.
    /// A file that does not exist (an optional Secret not made yet) counts as no key.
    #[arg(long, env = "COMPUTE_SERVER_SESSION_KEY_FILE", conflicts_with = "session_key")]
    pub session_key_file: Option<std::path::PathBuf>,

    /// Namespace where servers are created and listed.
    #[arg(long, env = "COMPUTE_SERVER_NAMESPACE", default_value = "compute")]
    pub namespace: String,

    /// Read the quotas and usage of the scheduler that places only this namespace (its
    /// --namespace); default: the cluster-wide scheduler's.
    #[arg(long, env = "COMPUTE_SERVER_USAGE_SCOPE")]
    pub usage_scope: Option<String>,

    /// Keycloak realm role whose holders see and manage everyone's servers.
    #[arg(long, env = "COMPUTE_SERVER_ADMIN_ROLE", default_value = "compute-admin")]
    pub admin_role: String,

    /// The bastion's address (host:port), shown in SSH commands: ssh -J user@ADDRESS root@server.
    #[arg(long, env = "COMPUTE_SERVER_BASTION_ADDRESS")]
    pub bastion_address: Option<String>,

    /// The user CA's private key (OpenSSH format; its public key is the bastion's and the
    /// agents' --user-ca-keys). With it, detail pages offer a terminal in the browser and the
    /// server's web apps, both through the bastion with a certificate signed for each session.
    #[arg(long, env = "COMPUTE_SERVER_USER_CA_KEY")]
    pub user_ca_key: Option<std::path::PathBuf>,

    /// Where this front reaches the bastion for browser sessions (host:port), when not at
    /// --bastion-address (such as its in-cluster Service).
    #[arg(long, env = "COMPUTE_SERVER_BASTION_CONNECT")]
    pub bastion_connect: Option<String>,

    /// The bastion's public host key (an OpenSSH public key line, or a file holding it):
    /// browser sessions go only to a bastion with this key. Without it, any key is accepted.
    #[arg(long, env = "COMPUTE_SERVER_BASTION_HOST_KEY")]
    pub bastion_host_key: Option<String>,
}

/// What every handler shares; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// Servers and profiles, from the watches.
    pub cache: Arc<Cache>,
    /// The realm, once its discovery document has been read.
    pub oidc: Arc<OnceLock<Provider>>,
    /// Session cookie names, attributes and key.
    pub cookies: Arc<Cookies>,
    /// ComputeServers of the namespace, for changes.
    pub servers: Api<ComputeServer>,
    /// Leases of the namespace: each user's turn to create ([`limit`]).
    pub leases: Api<Lease>,
    /// Events of the namespace, for the detail page.
    pub events: Api<Event>,
    /// ComputeSnapshots of the namespace: taken and listed for their owners.
    pub snapshots: Api<crate::api::ComputeSnapshot>,
    /// The public URL without a trailing slash.
    pub public_url: Arc<str>,
    /// The bastion's address for SSH commands.
    pub bastion: Option<Arc<str>>,
    /// Browser terminals and apps over SSH, when the front has a user CA.
    pub ssh: Option<Arc<ssh::Config>>,
    /// The apps' open SSH links.
    pub apps: Arc<apps::Links>,
    /// Usage and budgets.
    pub ledger: usage::Ledger,
    /// The Content-Security-Policy header.
    csp: HeaderValue,
}

fn config(text: String) -> Error {
    Error::Config(text)
}

/// How a plain-http public URL is reached: not at all (https), on this machine, on a private
/// network, or elsewhere.
#[derive(Debug, PartialEq, Eq)]
enum PlainHttp {
    No,
    Loopback,
    Private,
    Public,
}

/// Where a plain-http public URL points. Like Keycloak's `sslRequired: external`, loopback and
/// private addresses (RFC 1918, IPv6 unique local) may go without TLS; then cookies go without
/// `Secure`, which browsers would never send back over http.
fn plain_http(url: &reqwest::Url) -> PlainHttp {
    if url.scheme() != "http" {
        return PlainHttp::No;
    }
    let host = url.host_str().unwrap_or_default();
    let ip = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
        .ok();
    match ip {
        _ if host == "localhost" => PlainHttp::Loopback,
        Some(ip) if ip.is_loopback() => PlainHttp::Loopback,
        Some(std::net::IpAddr::V4(v4)) if v4.is_private() => PlainHttp::Private,
        Some(std::net::IpAddr::V6(v6)) if (v6.segments()[0] & 0xfe00) == 0xfc00 => PlainHttp::Private,
        _ => PlainHttp::Public,
    }
}

/// A secret given as a value or as a file (a mounted Secret): the value, or the file's text
/// without its line end. A file that does not exist is `missing_ok` (Ok(None)) or an error.
fn secret(value: Option<&str>, file: Option<&std::path::Path>, missing_ok: bool) -> Result<Option<String>> {
    let Some(path) = file else {
        return Ok(value.map(str::to_string));
    };
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text.trim_end_matches(['\r', '\n']).to_string())),
        Err(e) if missing_ok && e.kind() == std::io::ErrorKind::NotFound => {
            warn!(path = %path.display(), "the secret's file does not exist (yet)");
            Ok(None)
        }
        Err(e) => Err(config(format!("could not read {}: {e}", path.display()))),
    }
}

fn session_key(text: Option<&str>) -> Result<cookie::Key> {
    match text {
        Some(text) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .map_err(|e| config(format!("--session-key is not base64: {e}")))?;
            cookie::Key::try_from(bytes.as_slice()).map_err(|_| {
                config(format!(
                    "--session-key must hold at least 64 bytes; it has {}",
                    bytes.len()
                ))
            })
        }
        None => {
            warn!(
                "no --session-key: made a random one; sessions end on restart, and replicas must share one key"
            );
            Ok(cookie::Key::generate())
        }
    }
}

/// Runs the web front until the process is told to stop.
pub async fn run(args: Args) -> Result<()> {
    let public = reqwest::Url::parse(&args.public_url)
        .map_err(|e| config(format!("--public-url {}: {e}", args.public_url)))?;
    let public_url: Arc<str> = args.public_url.trim_end_matches('/').into();
    let issuer = reqwest::Url::parse(&args.issuer_url)
        .map_err(|e| config(format!("--issuer-url {}: {e}", args.issuer_url)))?;
    let plain = plain_http(&public);
    let secure = matches!(plain, PlainHttp::No | PlainHttp::Public);
    match plain {
        PlainHttp::Private => warn!(
            "--public-url is plain http on a private address: sessions travel unencrypted on that network; \
             serve the web front over https (an Ingress with TLS) where others share it"
        ),
        PlainHttp::Public => warn!(
            "--public-url is plain http on a public name or address: browsers will not send the Secure \
             session cookie back, so nobody can sign in; serve it over https"
        ),
        PlainHttp::No | PlainHttp::Loopback => {}
    }
    let ssh = ssh_config(&args)?;
    let session_text = secret(
        args.session_key.as_deref(),
        args.session_key_file.as_deref(),
        true,
    )?;
    let client_secret = secret(
        args.client_secret.as_deref(),
        args.client_secret_file.as_deref(),
        false,
    )?;
    let client = crate::kube_client::connect().await?;
    let cache = Cache::start(client.clone(), &args.namespace);
    let oidc = Arc::new(OnceLock::new());
    let state = AppState {
        cache,
        oidc: oidc.clone(),
        cookies: Arc::new(Cookies::new(session_key(session_text.as_deref())?, secure)),
        servers: Api::namespaced(client.clone(), &args.namespace),
        leases: Api::namespaced(client.clone(), &args.namespace),
        snapshots: Api::namespaced(client.clone(), &args.namespace),
        events: Api::namespaced(client.clone(), &args.namespace),
        ledger: usage::Ledger {
            usage: Api::all(client.clone()),
            quotas: Api::all(client),
            selector: crate::api::quota::scope_selector(args.usage_scope.as_deref()),
        },
        public_url: public_url.clone(),
        bastion: args.bastion_address.as_deref().map(Arc::from),
        ssh,
        apps: Arc::default(),
        csp: csp(&issuer.origin().ascii_serialization()),
    };
    tokio::spawn(state.apps.clone().reap());

    tokio::spawn(async move {
        let redirect = format!("{public_url}/auth/callback");
        let mut wait = Duration::from_secs(1);
        loop {
            match Provider::discover(
                &args.issuer_url,
                &args.client_id,
                client_secret.as_deref(),
                &redirect,
                &args.admin_role,
            )
            .await
            {
                Ok(provider) => {
                    info!(issuer = %args.issuer_url, client = %args.client_id, "OpenID Connect discovery done");
                    let _ = oidc.set(provider);
                    return;
                }
                Err(error) => {
                    warn!("{error}; trying again in {} s", wait.as_secs());
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(30));
                }
            }
        }
    });

    let router = app(state);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|source| Error::Listen {
            addr: args.listen,
            source,
        })?;
    info!("web front on http://{}", args.listen);
    axum::serve(listener, router)
        .with_graceful_shutdown(crate::runtime::health::shutdown())
        .await
        .map_err(|source| Error::Listen {
            addr: args.listen,
            source,
        })
}

/// What browser sessions need, from the flags: none without --user-ca-key.
fn ssh_config(args: &Args) -> Result<Option<Arc<ssh::Config>>> {
    let Some(path) = &args.user_ca_key else {
        info!("no --user-ca-key: no browser terminal and no web apps");
        return Ok(None);
    };
    let ca_error = |reason: String| Error::UserCa {
        path: path.clone(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| ca_error(e.to_string()))?;
    let ca = russh::keys::PrivateKey::from_openssh(text.trim())
        .map_err(|e| ca_error(format!("not an OpenSSH private key without a passphrase ({e})")))?;
    let Some(bastion) = args
        .bastion_connect
        .clone()
        .or_else(|| args.bastion_address.clone())
    else {
        return Err(config(
            "--user-ca-key needs the bastion's address: --bastion-connect or --bastion-address".into(),
        ));
    };
    let host_keys = match &args.bastion_host_key {
        Some(text) => {
            let line = match std::path::Path::new(text).is_file() {
                true => std::fs::read_to_string(text)
                    .map_err(|e| config(format!("--bastion-host-key {text}: {e}")))?,
                false => text.clone(),
            };
            let key = russh::keys::PublicKey::from_openssh(line.trim())
                .map_err(|e| config(format!("--bastion-host-key is not an OpenSSH public key ({e})")))?;
            vec![key]
        }
        None => {
            warn!("no --bastion-host-key: browser sessions accept any host key at {bastion}");
            Vec::new()
        }
    };
    info!(%bastion, ca = %ca.public_key().fingerprint(russh::keys::HashAlg::Sha256),
          "browser terminal and web apps on, through the bastion");
    Ok(Some(Arc::new(ssh::Config::new(ca, bastion, host_keys))))
}

fn csp(issuer_origin: &str) -> HeaderValue {
    // form-action: the sign-out form is answered with a redirect to Keycloak.
    let policy = format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; \
         form-action 'self' {issuer_origin}; frame-ancestors 'none'; base-uri 'none'"
    );
    HeaderValue::from_str(&policy).unwrap_or(HeaderValue::from_static("default-src 'none'"))
}

/// The whole front: pages (with the session middleware), sign-in, the API, static files,
/// /healthz, /readyz and /metrics; security headers and request metrics on everything.
pub fn app(state: AppState) -> Router {
    let mut registry = Registry::with_prefix("compute_server_web");
    let metrics = metrics::Metrics::new(&mut registry);
    let ready_state = state.clone();
    let ready: crate::runtime::health::ReadyCheck = Arc::new(move || {
        let state = ready_state.clone();
        Box::pin(async move {
            match (state.cache.synced(), state.oidc.get().is_some()) {
                (true, true) => Ok(()),
                (false, _) => {
                    Err("the watches of ComputeServers and ComputeProfiles have not synced yet".into())
                }
                (_, false) => Err("Keycloak's discovery document is not loaded yet".into()),
            }
        })
    });
    let browser = pages::routes()
        .merge(terminal::routes())
        .merge(apps::routes())
        .merge(session::routes())
        .route_layer(middleware::from_fn_with_state(state.clone(), session::layer));
    Router::new()
        .merge(browser)
        .merge(api::routes())
        .merge(pages::static_routes())
        .fallback(not_found)
        .with_state(state.clone())
        .merge(crate::runtime::health::router(Arc::new(registry), ready))
        .route_layer(middleware::from_fn_with_state(metrics, metrics::track))
        .layer(middleware::from_fn_with_state(state, security_headers))
}

/// Unknown paths: JSON under /api/, a page elsewhere.
async fn not_found(uri: axum::http::Uri) -> Response {
    if uri.path().starts_with("/api/") {
        let body = serde_json::json!({"error": "not_found", "message": "no such API call; see docs/user-guide.md, \"JSON API\""});
        (axum::http::StatusCode::NOT_FOUND, axum::Json(body)).into_response()
    } else {
        pages::message(
            axum::http::StatusCode::NOT_FOUND,
            "Not found",
            "There is no page at this address.",
        )
    }
}

async fn security_headers(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    if response.extensions().get::<apps::AppResponse>().is_some() {
        // A server's web app: its own headers, as it set them.
        return response;
    }
    let headers = response.headers_mut();
    if !headers.contains_key(header::CONTENT_SECURITY_POLICY) {
        headers.insert(header::CONTENT_SECURITY_POLICY, state.csp.clone());
    }
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    if !headers.contains_key(header::CACHE_CONTROL) {
        // Pages show one person's servers: no shared caches.
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

#[cfg(test)]
mod handler_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_go_without_secure_only_on_plain_http_to_this_machine_or_a_private_network() {
        let url = |u: &str| plain_http(&reqwest::Url::parse(u).unwrap());
        assert_eq!(url("http://127.0.0.1:8080"), PlainHttp::Loopback);
        assert_eq!(url("http://localhost:8080"), PlainHttp::Loopback);
        assert_eq!(url("http://[::1]:8080"), PlainHttp::Loopback);
        assert_eq!(url("http://10.241.1.2:30080"), PlainHttp::Private);
        assert_eq!(url("http://192.168.1.20"), PlainHttp::Private);
        assert_eq!(url("http://172.16.0.1"), PlainHttp::Private);
        assert_eq!(url("http://[fd00::2]:8080"), PlainHttp::Private);
        assert_eq!(url("https://127.0.0.1:8080"), PlainHttp::No);
        assert_eq!(url("https://10.0.0.1"), PlainHttp::No);
        assert_eq!(url("http://compute.example.org"), PlainHttp::Public);
        assert_eq!(url("http://localhost.example.org"), PlainHttp::Public);
        assert_eq!(url("http://8.8.8.8"), PlainHttp::Public);
        assert_eq!(url("http://172.32.0.1"), PlainHttp::Public);
    }

    #[test]
    fn secrets_come_from_a_value_or_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("session-key");
        std::fs::write(&file, "c2VjcmV0\n").unwrap();
        assert_eq!(secret(Some("v"), None, false).unwrap().as_deref(), Some("v"));
        assert_eq!(secret(None, None, false).unwrap(), None);
        assert_eq!(
            secret(None, Some(&file), false).unwrap().as_deref(),
            Some("c2VjcmV0")
        );
        let absent = dir.path().join("absent");
        assert_eq!(secret(None, Some(&absent), true).unwrap(), None);
        let error = secret(None, Some(&absent), false).unwrap_err().to_string();
        assert!(
            error.contains("could not read") && error.contains("absent"),
            "{error}"
        );
    }

    #[test]
    fn session_keys_need_64_bytes() {
        let b64 = |n: usize| base64::engine::general_purpose::STANDARD.encode(vec![7u8; n]);
        assert!(session_key(Some(&b64(64))).is_ok());
        let error = session_key(Some(&b64(32))).unwrap_err().to_string();
        assert!(error.contains("at least 64 bytes"), "{error}");
        assert!(session_key(Some("not base64!")).is_err());
    }
}
