//! `/metrics`, `/healthz` and `/readyz` for a role, on an address of its own.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use futures::future::BoxFuture;
use prometheus_client::registry::Registry;
use tracing::info;

use crate::{Error, Result};

/// Answers whether the role can do its work now; the reason when it cannot.
pub type ReadyCheck = Arc<dyn Fn() -> BoxFuture<'static, std::result::Result<(), NotReady>> + Send + Sync>;

/// Why a role cannot do its work now, as `/readyz` says it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NotReady(pub String);

impl From<&str> for NotReady {
    fn from(why: &str) -> NotReady {
        NotReady(why.into())
    }
}

impl From<String> for NotReady {
    fn from(why: String) -> NotReady {
        NotReady(why)
    }
}

#[derive(Clone)]
struct Health {
    registry: Arc<Registry>,
    ready: ReadyCheck,
}

pub fn router(registry: Arc<Registry>, ready: ReadyCheck) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(Health { registry, ready })
}

/// Serves `/metrics` (from `registry`), `/healthz` and `/readyz` (asking `ready`) on `addr` in
/// the background; a failure to listen is logged (the role goes on without them).
pub fn spawn(addr: SocketAddr, registry: Registry, ready: ReadyCheck) -> tokio::task::JoinHandle<()> {
    let health = serve(addr, router(Arc::new(registry), ready));
    tokio::spawn(async move {
        if let Err(error) = health.await {
            tracing::error!(%error, "the metrics and health endpoints stopped");
        }
    })
}

/// Serves the router on `addr` until the process ends; logs the address it got.
pub async fn serve(addr: SocketAddr, router: Router) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Listen { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| Error::Listen { addr, source })?;
    info!("metrics and health on http://{local}/metrics, /healthz, /readyz");
    axum::serve(listener, router)
        .await
        .map_err(|source| Error::Listen { addr, source })
}

async fn metrics(State(health): State<Health>) -> impl IntoResponse {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &health.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        ),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain")],
            "could not encode metrics".into(),
        ),
    }
}

async fn readyz(State(health): State<Health>) -> impl IntoResponse {
    match (health.ready)().await {
        Ok(()) => (StatusCode::OK, "ready".to_string()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why.0),
    }
}

/// Resolves on SIGTERM (Kubernetes stopping the pod) or Ctrl-C.
pub async fn shutdown() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
