//! The browser terminal: a page with xterm.js at `/servers/{name}/terminal`, and the WebSocket
//! behind it, which runs a shell on the server through the bastion ([`super::ssh`]).
//!
//! On the socket, binary frames carry the terminal's bytes both ways; text frames carry JSON:
//! from the browser `{"resize": [cols, rows]}`, to it `{"error": "..."}` or `{"exit": code}`.
//! Closing the tab closes the socket, which ends the shell and both SSH connections.

use axum::Router;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use maud::html;
use russh::ChannelMsg;
use serde::Deserialize;
use tracing::info;

use super::AppState;
use super::pages;
use super::servers;
use super::session::SignedIn;
use super::ssh;
use crate::api::{ComputeServer, Phase};

/// The terminal routes (behind the session middleware).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/servers/{name}/terminal", get(page))
        .route("/servers/{name}/terminal/socket", get(socket))
}

/// The terminal page's policy: the site's, except that xterm.js sets styles from script (its
/// renderer writes `<style>` elements), so inline styles are allowed here. Scripts stay 'self'.
fn csp(state: &AppState) -> HeaderValue {
    let policy = state
        .csp
        .to_str()
        .unwrap_or_default()
        .replace("style-src 'self'", "style-src 'self' 'unsafe-inline'");
    HeaderValue::from_str(&policy).unwrap_or_else(|_| state.csp.clone())
}

/// Why a server cannot take a terminal (or serve its apps) now, as its page says it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotReachable {
    #[error("This server is stopped: start it first.")]
    Stopped,
    #[error("This server is not running yet (it is {0}); try again when it is Running.")]
    NotYet(String),
}

/// Whether the server can take a terminal now, and why not.
pub fn reachable(server: &ComputeServer) -> Result<(), NotReachable> {
    let phase = server.status.as_ref().and_then(|s| s.phase);
    match phase {
        Some(Phase::Running) if server.spec.running => Ok(()),
        _ if !server.spec.running => Err(NotReachable::Stopped),
        _ => Err(NotReachable::NotYet(servers::phase(server))),
    }
}

/// Neither an sshd in the server nor its node's gateway: web apps and the terminal cannot reach it.
#[derive(Debug, thiserror::Error)]
#[error(
    "Web apps and the terminal reach a server through an SSH daemon inside it (port 22) or its node's SSH \
     gateway, and {server} has neither (profile {profile}): its image runs no sshd and its node's agent serves \
     no gateway (it needs --user-ca-keys). Ask the admins."
)]
pub struct NoWayIn {
    server: String,
    profile: String,
}

/// Whether web apps and the terminal can reach the server: through its own sshd (a declared
/// port 22) or its node's SSH gateway (`status.gateway`).
pub fn way_in(
    server: &ComputeServer,
    profiles: &[std::sync::Arc<crate::api::ComputeProfile>],
) -> Result<(), NoWayIn> {
    let profile = server.spec.profile.as_deref().and_then(|name| {
        profiles
            .iter()
            .find(|p| kube::ResourceExt::name_any(p.as_ref()) == name)
    });
    let ports = crate::api::ports(server, profile.map(|p| p.as_ref()));
    let gateway = server.status.as_ref().is_some_and(|s| s.gateway.is_some());
    match gateway || ports.iter().any(|p| p.container_port == 22) {
        true => Ok(()),
        false => Err(NoWayIn {
            server: kube::ResourceExt::name_any(server),
            profile: server.spec.profile.clone().unwrap_or_else(|| "none".into()),
        }),
    }
}

async fn page(
    State(state): State<AppState>,
    SignedIn(session): SignedIn,
    Path(name): Path<String>,
) -> Response {
    let server = match servers::reach(
        &state.cache,
        &session.user,
        &name,
        crate::api::access::Action::Use,
    ) {
        Ok(server) => server,
        Err(problem) => return pages::problem_page(&session, problem),
    };
    if state.ssh.is_none() {
        return pages::message(
            StatusCode::NOT_FOUND,
            "No browser terminal here",
            "This installation has no browser terminal: the web front has no user CA (--user-ca-key). Use ssh.",
        );
    }
    if let Err(reason) = reachable(&server) {
        return pages::message(StatusCode::CONFLICT, "Not running", &reason.to_string());
    }
    if let Err(missing) = way_in(&server, &state.cache.profiles()) {
        return pages::message(
            StatusCode::CONFLICT,
            "No terminal for this server",
            &missing.to_string(),
        );
    }
    let head = html! {
        link rel="stylesheet" href="/static/vendor/xterm.css";
        script src="/static/vendor/xterm.js" defer {}
        script src="/static/vendor/addon-fit.js" defer {}
        script src="/static/terminal.js" defer {}
    };
    let body = html! {
        div.terminal-bar {
            a href={ "/servers/" (name) } { "← " (name) }
            span.muted data-terminal-state { "Connecting…" }
        }
        div #terminal data-socket={ "/servers/" (name) "/terminal/socket" } {}
    };
    let mut response = pages::page_with(
        StatusCode::OK,
        &format!("Terminal: {name}"),
        Some(&session),
        head,
        body,
    );
    response
        .headers_mut()
        .insert(header::CONTENT_SECURITY_POLICY, csp(&state));
    response
}

/// The terminal's size when the socket is opened: `?cols=&rows=`.
#[derive(Deserialize)]
struct Size {
    #[serde(default = "default_cols")]
    cols: u32,
    #[serde(default = "default_rows")]
    rows: u32,
}

fn default_cols() -> u32 {
    80
}

fn default_rows() -> u32 {
    24
}

/// A terminal size the pty takes: 1 to 1000 columns and rows.
fn clamp(cols: u32, rows: u32) -> (u32, u32) {
    (cols.clamp(1, 1000), rows.clamp(1, 1000))
}

/// A resize from the browser: `{"resize": [cols, rows]}`.
#[derive(Deserialize)]
struct Control {
    resize: (u32, u32),
}

/// Whether a request comes from a page of this site (a WebSocket has no CORS: without this,
/// any site the user visits could open their terminal with their cookie).
pub fn same_origin(headers: &HeaderMap, public_url: &str) -> bool {
    let origin = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok());
    let public = reqwest::Url::parse(public_url).map(|u| u.origin().ascii_serialization());
    matches!((origin, public), (Some(origin), Ok(public)) if origin == public)
}

async fn socket(
    State(state): State<AppState>,
    SignedIn(session): SignedIn,
    Path(name): Path<String>,
    Query(size): Query<Size>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let user = session.user.name.clone();
    let groups = session.user.groups.clone();
    if !same_origin(&headers, &state.public_url) {
        info!(target: "audit", event = "terminal", outcome = "refused", user = ?user, server = ?name,
              reason = "the request does not come from a page of this site");
        return (
            StatusCode::FORBIDDEN,
            "terminals open from this site's pages only",
        )
            .into_response();
    }
    let server = match servers::reach(
        &state.cache,
        &session.user,
        &name,
        crate::api::access::Action::Use,
    ) {
        Ok(server) => server,
        Err(problem) => return pages::problem_page(&session, problem),
    };
    let Some(config) = state.ssh.clone() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if let Err(reason) = reachable(&server) {
        return (StatusCode::CONFLICT, reason.to_string()).into_response();
    }
    let namespace = server.metadata.namespace.clone().unwrap_or_default();
    let principal = crate::ssh_ca::server_principal(&server);
    let (cols, rows) = clamp(size.cols, size.rows);
    upgrade.on_upgrade(move |socket| async move {
        let address = format!("{name}.{namespace}");
        let target = ssh::Target {
            user: &user,
            server: &address,
            principal,
            purpose: "terminal",
            groups: &groups,
            apps_only: false,
        };
        info!(target: "audit", event = "terminal", outcome = "opening", user = ?user, server = %address);
        let result = run(socket, &config, &target, cols, rows).await;
        info!(target: "audit", event = "terminal", outcome = "ended", user = ?user, server = %address,
              reason = %result.err().unwrap_or_else(|| "closed".into()));
    })
}

async fn say(socket: &mut WebSocket, value: serde_json::Value) {
    let _ = socket.send(Message::Text(value.to_string().into())).await;
}

/// Pipes the socket to a shell on the server until either ends; the reason it ended, if not
/// closed by the browser or the shell's exit.
async fn run(
    mut socket: WebSocket,
    config: &ssh::Config,
    target: &ssh::Target<'_>,
    cols: u32,
    rows: u32,
) -> Result<(), String> {
    let link = match ssh::connect(config, target).await {
        Ok(link) => link,
        Err(failure) => {
            say(&mut socket, serde_json::json!({"error": failure.to_string()})).await;
            let _ = socket
                .send(Message::Close(Some(CloseFrame {
                    code: 1011,
                    reason: "".into(),
                })))
                .await;
            return Err(failure.to_string());
        }
    };
    let opened = async {
        let channel = link.server.channel_open_session().await?;
        channel
            .request_pty(false, "xterm-256color", cols, rows, 0, 0, &[])
            .await?;
        channel.request_shell(false).await?;
        Ok::<_, russh::Error>(channel)
    };
    let mut channel = match opened.await {
        Ok(channel) => channel,
        Err(error) => {
            say(
                &mut socket,
                serde_json::json!({"error": format!("could not start a shell: {error}")}),
            )
            .await;
            link.close().await;
            return Err(error.to_string());
        }
    };
    let ended = loop {
        tokio::select! {
            message = socket.recv() => match message {
                Some(Ok(Message::Binary(bytes))) => {
                    if channel.data_bytes(bytes).await.is_err() {
                        break Err("the shell's channel closed".to_string());
                    }
                }
                Some(Ok(Message::Text(text))) => {
                    if let Ok(Control { resize: (c, r) }) = serde_json::from_str(&text) {
                        let (c, r) = clamp(c, r);
                        let _ = channel.window_change(c, r, 0, 0).await;
                    }
                }
                Some(Ok(Message::Close(_))) | None => break Ok(()),
                Some(Ok(_)) => {}
                Some(Err(error)) => break Err(error.to_string()),
            },
            message = channel.wait() => match message {
                Some(ChannelMsg::Data { data }) | Some(ChannelMsg::ExtendedData { data, .. }) => {
                    if socket.send(Message::Binary(data.to_vec().into())).await.is_err() {
                        break Ok(());
                    }
                }
                Some(ChannelMsg::ExitStatus { exit_status }) => {
                    say(&mut socket, serde_json::json!({"exit": exit_status})).await;
                }
                Some(ChannelMsg::Eof) | Some(ChannelMsg::Close) | None => {
                    let _ = socket.send(Message::Close(None)).await;
                    break Ok(());
                }
                Some(_) => {}
            },
        }
    };
    let _ = channel.close().await;
    link.close().await;
    ended
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_open_from_this_sites_pages_only() {
        let headers = |origin: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::ORIGIN, HeaderValue::from_str(origin).unwrap());
            h
        };
        let public = "http://127.0.0.1:8080";
        assert!(same_origin(&headers("http://127.0.0.1:8080"), public));
        assert!(!same_origin(&headers("http://evil.example"), public));
        assert!(!same_origin(&headers("http://127.0.0.1:8081"), public));
        assert!(!same_origin(&HeaderMap::new(), public), "no Origin, no terminal");
        assert!(same_origin(
            &headers("https://compute.example.org"),
            "https://compute.example.org/"
        ));
    }

    #[test]
    fn sizes_stay_within_what_a_pty_takes() {
        assert_eq!(clamp(0, 0), (1, 1));
        assert_eq!(clamp(120, 40), (120, 40));
        assert_eq!(clamp(u32::MAX, 5000), (1000, 1000));
    }
}
