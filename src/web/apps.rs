//! Web apps of a server (ports with `appProtocol: http`) at `/servers/{name}/apps/{port}/`, for
//! their owner (and admins): each request goes through an SSH tunnel into the server
//! ([`super::ssh`]), to the app on the container's loopback, WebSockets included. The path is
//! passed whole, with `X-Forwarded-Prefix` (the container also has COMPUTE_SERVER_BASE_URL).
//! The front's own cookies never reach the app, and the app cannot set them.
//!
//! One SSH link per (user, server) is kept while it is used, and closed after
//! [`IDLE`] without requests: an open link counts as the server being in use.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::any;
use hyper_util::rt::TokioIo;
use tokio::sync::Mutex;
use tracing::{info, warn};

use super::AppState;
use super::pages;
use super::servers;
use super::session::SignedIn;
use super::ssh::{self, Link};
use crate::api::{ComputeProfile, ComputeServer, Port};

/// How long an app's SSH link stays open without requests.
pub const IDLE: Duration = Duration::from_secs(300);

/// The app routes (behind the session middleware).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/servers/{name}/apps/{port}", any(to_slash))
        .route("/servers/{name}/apps/{port}/", any(proxy))
        .route("/servers/{name}/apps/{port}/{*rest}", any(proxy))
}

/// Marks a response as the app's own: the front leaves its headers (its policy, framing,
/// caching) as the app set them.
#[derive(Clone, Copy)]
pub struct AppResponse;

/// The server's web apps: its profile's ports and its own (which replace the profile's of the
/// same name) that declare `appProtocol: http`.
pub fn apps(server: &ComputeServer, profiles: &[Arc<ComputeProfile>]) -> Vec<Port> {
    let profile = server
        .spec
        .profile
        .as_deref()
        .and_then(|name| profiles.iter().find(|p| p.metadata.name.as_deref() == Some(name)));
    let mut ports = crate::api::ports(server, profile.map(|p| p.as_ref()));
    ports.retain(Port::is_app);
    ports
}

/// Whose link to which server: (user, name.namespace).
type Key = (String, String);

/// The open links, with when each was last used.
#[derive(Default)]
pub struct Links {
    open: Mutex<HashMap<Key, (Arc<Link>, Instant)>>,
}

impl Links {
    /// A live link for `key`, opened if there is none, and whether it was just opened.
    async fn get(
        &self,
        config: &ssh::Config,
        key: &Key,
        target: &ssh::Target<'_>,
    ) -> Result<(Arc<Link>, bool), ssh::Failure> {
        if let Some(link) = self.live(key).await {
            return Ok((link, false));
        }
        let link = Arc::new(ssh::connect(config, target).await?);
        let mut open = self.open.lock().await;
        // Another request for the same key may have opened one meanwhile: requests may be
        // on it already, so it stays and this one goes.
        if let Some((other, used)) = open.get_mut(key)
            && !other.is_closed()
        {
            *used = Instant::now();
            let other = other.clone();
            drop(open);
            link.close().await;
            return Ok((other, false));
        }
        open.insert(key.clone(), (link.clone(), Instant::now()));
        Ok((link, true))
    }

    async fn live(&self, key: &Key) -> Option<Arc<Link>> {
        let mut open = self.open.lock().await;
        let (link, used) = open.get_mut(key)?;
        if link.is_closed() {
            return None;
        }
        *used = Instant::now();
        Some(link.clone())
    }

    /// Drops `link` from the pool (a channel on it failed): the next request opens another.
    async fn forget(&self, key: &Key, link: &Arc<Link>) {
        let mut open = self.open.lock().await;
        if open.get(key).is_some_and(|(l, _)| Arc::ptr_eq(l, link)) {
            open.remove(key);
        }
    }

    /// A channel to `port` inside the server: on a pooled link, and if that fails (it may
    /// have just ended), once more on a new one.
    async fn channel(
        &self,
        config: &ssh::Config,
        key: &Key,
        target: &ssh::Target<'_>,
        port: u32,
    ) -> Result<(Arc<Link>, Option<russh::Channel<russh::client::Msg>>), ssh::Failure> {
        loop {
            let (link, fresh) = self.get(config, key, target).await?;
            match link
                .server
                .channel_open_direct_tcpip("127.0.0.1", port, "127.0.0.1", 0)
                .await
            {
                Ok(channel) => return Ok((link, Some(channel))),
                Err(_) if fresh => return Ok((link, None)),
                Err(_) => self.forget(key, &link).await,
            }
        }
    }

    /// Closes the links unused for [`IDLE`], every half minute, for ever.
    pub async fn reap(self: Arc<Links>) {
        loop {
            tokio::time::sleep(Duration::from_secs(30)).await;
            let idle: Vec<Arc<Link>> = {
                let mut open = self.open.lock().await;
                let gone: Vec<_> = open
                    .iter()
                    // Held elsewhere: a request or a WebSocket is still on it.
                    .filter(|(_, (link, used))| {
                        link.is_closed() || (used.elapsed() > IDLE && Arc::strong_count(link) == 1)
                    })
                    .map(|(key, _)| key.clone())
                    .collect();
                gone.iter()
                    .filter_map(|key| open.remove(key))
                    .map(|(link, _)| link)
                    .collect()
            };
            for link in idle {
                link.close().await;
            }
        }
    }
}

async fn to_slash(Path((name, port)): Path<(String, String)>) -> Redirect {
    Redirect::permanent(&crate::api::app_path(&name, &port))
}

/// Headers that belong to one hop, not to the request (RFC 9110, 7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
];

/// The request headers for the app: hop-by-hop ones dropped (kept for a WebSocket upgrade), the
/// front's cookies removed, the prefix and the public URL's scheme and host added.
pub fn request_headers(
    headers: &HeaderMap,
    ours: &[&str],
    prefix: &str,
    public_url: &str,
    upgrade: bool,
) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (name, value) in headers {
        let hop = HOP_BY_HOP.contains(&name.as_str());
        if (hop && !(upgrade && (name == header::CONNECTION || name == header::UPGRADE)))
            || name == header::COOKIE
        {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    let cookies: Vec<&str> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .filter(|c| !ours.contains(&c.split('=').next().unwrap_or_default().trim()))
        .collect();
    if !cookies.is_empty()
        && let Ok(value) = HeaderValue::from_str(&cookies.join("; "))
    {
        out.insert(header::COOKIE, value);
    }
    let url = reqwest::Url::parse(public_url).ok();
    let set = |out: &mut HeaderMap, name: &'static str, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            out.insert(HeaderName::from_static(name), value);
        }
    };
    set(&mut out, "x-forwarded-prefix", prefix.trim_end_matches('/'));
    if let Some(url) = url {
        set(&mut out, "x-forwarded-proto", url.scheme());
        if let Some(host) = url.host_str() {
            let host = url.port().map_or(host.to_string(), |p| format!("{host}:{p}"));
            set(&mut out, "x-forwarded-host", &host);
        }
    }
    out
}

/// The response headers for the browser: hop-by-hop ones dropped (kept for an upgrade), and
/// no Set-Cookie for one of the front's cookies.
pub fn response_headers(headers: &HeaderMap, ours: &[&str], upgrade: bool) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (name, value) in headers {
        let hop = HOP_BY_HOP.contains(&name.as_str()) || name == header::TRANSFER_ENCODING;
        if hop && !(upgrade && (name == header::CONNECTION || name == header::UPGRADE)) {
            continue;
        }
        if name == header::SET_COOKIE {
            let cookie = value.to_str().unwrap_or_default();
            let cookie_name = cookie.split('=').next().unwrap_or_default().trim();
            if ours.contains(&cookie_name) {
                continue;
            }
        }
        out.append(name.clone(), value.clone());
    }
    out
}

async fn proxy(
    State(state): State<AppState>,
    SignedIn(session): SignedIn,
    Path(params): Path<HashMap<String, String>>,
    mut request: Request,
) -> Response {
    let (Some(name), Some(port_name)) = (params.get("name"), params.get("port")) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let server = match servers::visible(&state.cache, &session.user, name) {
        Ok(server) => server,
        Err(problem) => return pages::problem_page(&session, problem),
    };
    let Some(port) = apps(&server, &state.cache.profiles())
        .into_iter()
        .find(|p| &p.name == port_name)
    else {
        return pages::message(
            StatusCode::NOT_FOUND,
            "No such app",
            &format!("Server {name} has no web app named {port_name}."),
        );
    };
    let Some(config) = state.ssh.clone() else {
        return pages::message(
            StatusCode::NOT_FOUND,
            "No web apps here",
            "This installation serves no web apps: the web front has no user CA (--user-ca-key).",
        );
    };
    if let Err(reason) = super::terminal::reachable(&server) {
        return pages::message(
            StatusCode::SERVICE_UNAVAILABLE,
            "Not running",
            &reason.to_string(),
        );
    }
    if let Err(missing) = super::terminal::way_in(&server, &state.cache.profiles()) {
        return pages::message(
            StatusCode::BAD_GATEWAY,
            "Cannot reach the app",
            &missing.to_string(),
        );
    }
    let namespace = server.metadata.namespace.clone().unwrap_or_default();
    let address = format!("{name}.{namespace}");
    let purpose = format!("app {port_name}");
    let target = ssh::Target {
        user: &session.user.name,
        server: &address,
        principal: crate::ssh_ca::server_principal(&server),
        purpose: &purpose,
        groups: &session.user.groups,
        // Whoever may only view it reaches its apps, never a shell: the bastion holds to that.
        apps_only: !crate::api::access::may(&server, &session.user.person(), crate::api::access::Action::Use),
    };
    let key = (session.user.name.clone(), address.clone());
    let channel = state
        .apps
        .channel(&config, &key, &target, port.container_port as u32)
        .await;
    let (link, channel) = match channel {
        Ok(found) => found,
        Err(failure) => {
            warn!(user = ?session.user.name, server = %address, app = %port_name, %failure, "could not reach an app");
            return pages::message(
                StatusCode::BAD_GATEWAY,
                "Cannot reach the app",
                &failure.to_string(),
            );
        }
    };
    let unanswered = || {
        pages::message(
            StatusCode::BAD_GATEWAY,
            "The app does not answer",
            &format!(
                "Nothing answers on port {} inside {name}: is the app running? (It may listen on 127.0.0.1.)",
                port.container_port
            ),
        )
    };
    let Some(channel) = channel else {
        return unanswered();
    };
    let Ok((mut sender, connection)) =
        hyper::client::conn::http1::handshake(TokioIo::new(channel.into_stream())).await
    else {
        return unanswered();
    };
    let in_use = link.clone();
    tokio::spawn(async move {
        let _ = connection.with_upgrades().await;
        drop(in_use);
    });

    let upgrade = request
        .headers()
        .get(header::UPGRADE)
        .is_some_and(|u| u.as_bytes().eq_ignore_ascii_case(b"websocket"));
    let from_browser = upgrade.then(|| hyper::upgrade::on(&mut request));
    let ours = state.cookies.names();
    let headers = request_headers(
        request.headers(),
        &ours,
        &crate::api::app_path(name, port_name),
        &state.public_url,
        upgrade,
    );
    let method = request.method().clone();
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let mut upstream = hyper::Request::new(request.into_body());
    *upstream.method_mut() = method;
    *upstream.headers_mut() = headers;
    match path.parse() {
        Ok(uri) => *upstream.uri_mut() = uri,
        Err(_) => return StatusCode::BAD_REQUEST.into_response(),
    }
    let Ok(mut response) = sender.send_request(upstream).await else {
        return unanswered();
    };
    let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
    if switching && let Some(from_browser) = from_browser {
        let to_app = hyper::upgrade::on(&mut response);
        let (user, link) = (session.user.name.clone(), link.clone());
        info!(user = ?user, server = %address, app = %port_name, "app WebSocket opened");
        tokio::spawn(async move {
            if let (Ok(browser), Ok(app)) = tokio::join!(from_browser, to_app) {
                let _ =
                    tokio::io::copy_bidirectional(&mut TokioIo::new(browser), &mut TokioIo::new(app)).await;
            }
            // The link is in use while this socket is open.
            drop(link);
        });
    }
    let status = response.status();
    let headers = response_headers(response.headers(), &ours, switching);
    let body = match switching {
        true => Body::empty(),
        false => Body::new(response.into_body()),
    };
    let mut out = Response::new(body);
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    out.extensions_mut().insert(AppResponse);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(yaml: &str) -> ComputeServer {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn apps_are_the_http_ports_of_the_profile_and_the_server() {
        let profile: ComputeProfile = serde_yaml::from_str(
            "apiVersion: computeserver.io/v1alpha1\nkind: ComputeProfile\nmetadata: {name: jupyter}\n\
             spec: {image: j, ports: [{name: ssh, containerPort: 22}, {name: jupyter, containerPort: 8888, appProtocol: http}]}\n",
        )
        .unwrap();
        let profiles = [Arc::new(profile)];
        let s = server(
            "apiVersion: computeserver.io/v1alpha1\nkind: ComputeServer\nmetadata: {name: nb, namespace: compute}\n\
             spec: {owner: alice, profile: jupyter, ports: [{name: board, containerPort: 6006, appProtocol: http}]}\n",
        );
        let names: Vec<(String, i32)> = apps(&s, &profiles)
            .into_iter()
            .map(|p| (p.name, p.container_port))
            .collect();
        assert_eq!(
            names,
            [("jupyter".to_string(), 8888), ("board".to_string(), 6006)]
        );
        let plain = server(
            "apiVersion: computeserver.io/v1alpha1\nkind: ComputeServer\nmetadata: {name: nb, namespace: compute}\n\
             spec: {owner: alice, profile: jupyter, ports: [{name: jupyter, containerPort: 8888}]}\n",
        );
        assert!(
            apps(&plain, &profiles).is_empty(),
            "the server's own port of that name is not an app"
        );
    }

    #[test]
    fn the_app_gets_the_prefix_and_none_of_the_fronts_cookies() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("csrv_session=secret; _xsrf=abc; csrv_id=x"),
        );
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        let ours = ["csrv_session", "csrv_id", "csrv_login"];
        let out = request_headers(
            &headers,
            &ours,
            "/servers/nb/apps/jupyter/",
            "http://127.0.0.1:8080",
            false,
        );
        assert_eq!(out[header::COOKIE], "_xsrf=abc");
        assert_eq!(out["x-forwarded-prefix"], "/servers/nb/apps/jupyter");
        assert_eq!(out["x-forwarded-proto"], "http");
        assert_eq!(out["x-forwarded-host"], "127.0.0.1:8080");
        assert_eq!(out[header::HOST], "127.0.0.1:8080");
        assert!(out.get(header::UPGRADE).is_none(), "hop-by-hop, unless upgrading");
        let upgrading = request_headers(&headers, &ours, "/p/", "http://127.0.0.1:8080", true);
        assert_eq!(upgrading[header::UPGRADE], "websocket");
        let only_ours =
            HeaderMap::from_iter([(header::COOKIE, HeaderValue::from_static("csrv_session=secret"))]);
        assert!(
            request_headers(&only_ours, &ours, "/p/", "http://h", false)
                .get(header::COOKIE)
                .is_none()
        );

        let mut answer = HeaderMap::new();
        answer.append(
            header::SET_COOKIE,
            HeaderValue::from_static("csrv_session=forged; Path=/"),
        );
        answer.append(
            header::SET_COOKIE,
            HeaderValue::from_static("_xsrf=new; Path=/servers/nb/apps/jupyter/"),
        );
        answer.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("frame-ancestors 'self'"),
        );
        let out = response_headers(&answer, &ours, false);
        let cookies: Vec<_> = out.get_all(header::SET_COOKIE).iter().collect();
        assert_eq!(cookies, ["_xsrf=new; Path=/servers/nb/apps/jupyter/"]);
        assert_eq!(out[header::CONTENT_SECURITY_POLICY], "frame-ancestors 'self'");
    }
}
