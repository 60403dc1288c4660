//! Sessions without server-side storage: the tokens live in cookies encrypted and authenticated
//! with the session key (AES-256-GCM, the `cookie` crate's private jar), so every replica that
//! shares the key can serve every request. The access token is validated on each request and
//! renewed with the refresh token when it expires; when that fails, the session ends.
//!
//! Also the sign-in (`/auth/login`, `/auth/callback`) and sign-out (`/auth/logout`) routes.

use axum::Router;
use axum::extract::{FromRequestParts, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use cookie::{Cookie, CookieJar, Key, SameSite};
use openidconnect::{CsrfToken, Nonce};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::oidc::{Tokens, User};
use super::{AppState, pages};

/// Cookie names and attributes, from the public URL.
pub struct Cookies {
    key: Key,
    secure: bool,
    session: String,
    id: String,
    login: String,
}

/// What the session cookie holds: the tokens and this session's CSRF token.
#[derive(Serialize, Deserialize)]
struct SessionCookie {
    /// Access token.
    a: String,
    /// Refresh token.
    r: Option<String>,
    /// CSRF token for this session's forms.
    c: String,
}

/// What the short-lived login cookie holds between `/auth/login` and `/auth/callback`.
#[derive(Serialize, Deserialize)]
struct LoginCookie {
    state: String,
    nonce: String,
    verifier: String,
    next: String,
}

/// A signed-in browser session.
#[derive(Clone)]
pub struct Session {
    pub user: User,
    /// Must come back in every state-changing form.
    pub csrf: String,
}

impl Session {
    /// Whether a submitted CSRF token is this session's (compared in constant time).
    pub fn csrf_ok(&self, submitted: &str) -> bool {
        same(&self.csrf, submitted)
    }
}

/// Compares two secrets in time that does not depend on where they differ.
fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The request's session, if any: put in the request's extensions by [`layer`].
#[derive(Clone)]
pub struct MaybeSession(pub Option<Session>);

impl Cookies {
    /// The names of the front's own cookies, which web apps must never see or set.
    pub fn names(&self) -> [&str; 3] {
        [&self.session, &self.id, &self.login]
    }

    /// `secure` is false only for a plain-http public URL on this machine or a private network;
    /// the `__Host-` prefix (host-only, path /, Secure) is used whenever cookies are Secure.
    pub fn new(key: Key, secure: bool) -> Cookies {
        let prefix = if secure { "__Host-" } else { "" };
        Cookies {
            key,
            secure,
            session: format!("{prefix}cs-session"),
            id: format!("{prefix}cs-id"),
            login: format!("{prefix}cs-login"),
        }
    }

    fn jar(headers: &HeaderMap) -> CookieJar {
        let mut jar = CookieJar::new();
        for value in headers.get_all(header::COOKIE) {
            let Ok(text) = value.to_str() else { continue };
            for cookie in Cookie::split_parse_encoded(text.to_string()).flatten() {
                jar.add_original(cookie);
            }
        }
        jar
    }

    fn read<T: for<'de> Deserialize<'de>>(&self, jar: &CookieJar, name: &str) -> Option<T> {
        let cookie = jar.private(&self.key).get(name)?;
        serde_json::from_str(cookie.value()).ok()
    }

    fn cookie(&self, name: &str, value: String, max_age: Option<i64>) -> Cookie<'static> {
        let mut builder = Cookie::build((name.to_string(), value))
            .path("/")
            .http_only(true)
            .secure(self.secure)
            .same_site(SameSite::Lax);
        if let Some(seconds) = max_age {
            builder = builder.max_age(cookie::time::Duration::seconds(seconds));
        }
        builder.build()
    }

    /// Set-Cookie values that store `value` encrypted under `name`.
    fn set(&self, name: &str, value: &impl Serialize, max_age: Option<i64>) -> String {
        let mut jar = CookieJar::new();
        let json = serde_json::to_string(value).expect("cookie contents serialize");
        jar.private_mut(&self.key).add(self.cookie(name, json, max_age));
        let cookie = jar.get(name).expect("just added");
        let text = cookie.encoded().to_string();
        if text.len() > 4000 {
            warn!(
                cookie = name,
                bytes = text.len(),
                "a session cookie is near the 4 KB browsers keep; Keycloak's tokens may be too large"
            );
        }
        text
    }

    /// The `Cookie` header of a browser signed in with `access_token`, whose forms carry `csrf`.
    #[cfg(test)]
    pub fn signed_in(&self, access_token: &str, csrf: &str) -> String {
        let session = SessionCookie {
            a: access_token.into(),
            r: None,
            c: csrf.into(),
        };
        let set = self.set(&self.session, &session, None);
        set.split(';').next().unwrap_or_default().to_string()
    }

    /// A Set-Cookie value that removes `name`.
    fn clear(&self, name: &str) -> String {
        let mut cookie = self.cookie(name, String::new(), Some(0));
        cookie.make_removal();
        cookie.encoded().to_string()
    }

    fn session_cookies(&self, tokens: &Tokens, csrf: &str) -> Vec<String> {
        let mut set = vec![self.set(
            &self.session,
            &SessionCookie {
                a: tokens.access.clone(),
                r: tokens.refresh.clone(),
                c: csrf.to_string(),
            },
            None,
        )];
        // The ID token is needed only to end the Keycloak session; it lives in a cookie of its
        // own so that neither cookie nears the browsers' 4 KB limit.
        if let Some(id) = &tokens.id {
            set.push(self.set(&self.id, id, None));
        }
        set
    }
}

/// Middleware for the browser pages: reads and validates the session (renewing the access
/// token when it has expired), and writes the renewed or ended session back as cookies.
pub async fn layer(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let cookies = &state.cookies;
    let jar = Cookies::jar(request.headers());
    let mut set_cookies = Vec::new();
    let mut session = None;
    if let (Some(stored), Some(oidc)) = (
        cookies.read::<SessionCookie>(&jar, &cookies.session),
        state.oidc.get(),
    ) {
        match oidc.validate(&stored.a).await {
            Ok(user) if user.expires > jsonwebtoken::get_current_timestamp() + 2 => {
                session = Some(Session { user, csrf: stored.c })
            }
            outcome => {
                let renewed = match (&outcome, &stored.r) {
                    (Ok(_) | Err(super::oidc::TokenError::Expired), Some(refresh)) => {
                        oidc.refresh(refresh).await.map_err(|e| e.to_string())
                    }
                    (Err(e), _) => Err(e.to_string()),
                    (Ok(_), None) => Err("expired and no refresh token".into()),
                };
                match renewed {
                    Ok(tokens) => {
                        set_cookies = cookies.session_cookies(&tokens, &stored.c);
                        session = Some(Session {
                            user: tokens.user,
                            csrf: stored.c,
                        });
                    }
                    Err(why) => {
                        info!("session ended: {why}");
                        set_cookies = vec![cookies.clear(&cookies.session), cookies.clear(&cookies.id)];
                    }
                }
            }
        }
    }
    request.extensions_mut().insert(MaybeSession(session));
    let mut response = next.run(request).await;
    for value in set_cookies {
        if let Ok(value) = value.parse() {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    response
}

/// A signed-in user, for pages; without a session a GET is sent to sign in first.
pub struct SignedIn(pub Session);

/// Why a page needs a session it does not have.
pub enum NotSignedIn {
    /// A page view: sign in, then come back.
    Redirect(String),
    /// A form post from a session that has ended.
    Expired,
}

impl IntoResponse for NotSignedIn {
    fn into_response(self) -> Response {
        match self {
            NotSignedIn::Redirect(next) => {
                let query = serde_urlencoded::to_string([("next", next)]).unwrap_or_default();
                Redirect::to(&format!("/auth/login?{query}")).into_response()
            }
            NotSignedIn::Expired => pages::message(
                StatusCode::UNAUTHORIZED,
                "Signed out",
                "Your session has ended. Sign in again and repeat what you did.",
            ),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for SignedIn {
    type Rejection = NotSignedIn;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        match parts.extensions.get::<MaybeSession>() {
            Some(MaybeSession(Some(session))) => Ok(SignedIn(session.clone())),
            _ if parts.method == Method::GET => Err(NotSignedIn::Redirect(
                parts
                    .uri
                    .path_and_query()
                    .map(|p| p.to_string())
                    .unwrap_or_else(|| "/".into()),
            )),
            _ => Err(NotSignedIn::Expired),
        }
    }
}

/// The sign-in and sign-out routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/auth/login", get(login))
        .route("/auth/callback", get(callback))
        .route("/auth/logout", post(logout))
}

/// Only a path on this site may follow sign-in (no open redirect to another): one that starts
/// with a single `/` and holds visible ASCII only. Browsers read `//host`, `/\host` and
/// `/<tab>/host` (they drop tabs and newlines) as another host, and more such spellings exist,
/// so any control character, space, non-ASCII byte, backslash or `//` sends the user to `/`.
fn local_path(next: Option<String>) -> String {
    match next {
        Some(p)
            if p.starts_with('/')
                && !p.contains("//")
                && p.bytes().all(|b| b.is_ascii_graphic() && b != b'\\') =>
        {
            p
        }
        _ => "/".into(),
    }
}

#[derive(Deserialize)]
struct LoginQuery {
    next: Option<String>,
}

async fn login(State(state): State<AppState>, Query(query): Query<LoginQuery>) -> Response {
    let Some(oidc) = state.oidc.get() else {
        return pages::message(
            StatusCode::SERVICE_UNAVAILABLE,
            "Sign-in unavailable",
            "Keycloak has not answered yet. Try again in a minute.",
        );
    };
    let (url, csrf_state, nonce, verifier) = oidc.authorize_url();
    let login = LoginCookie {
        state: csrf_state.secret().clone(),
        nonce: nonce.secret().clone(),
        verifier: verifier.secret().clone(),
        next: local_path(query.next),
    };
    let cookie = state.cookies.set(&state.cookies.login, &login, Some(600));
    ([(header::SET_COOKIE, cookie)], Redirect::to(&url)).into_response()
}

#[derive(Deserialize)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

async fn callback(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<CallbackQuery>,
) -> Response {
    let cookies = &state.cookies;
    let clear_login = cookies.clear(&cookies.login);
    let failed = |why: &str| {
        (
            [(header::SET_COOKIE, clear_login.clone())],
            pages::sign_in_failed(why),
        )
            .into_response()
    };
    let Some(oidc) = state.oidc.get() else {
        return failed("Keycloak has not answered yet.");
    };
    if let Some(error) = query.error {
        let text = query.error_description.unwrap_or(error);
        return failed(&format!("Keycloak said: {text}"));
    }
    let Some(login) = cookies.read::<LoginCookie>(&Cookies::jar(&headers), &cookies.login) else {
        return failed("The sign-in took too long or was started in another browser.");
    };
    let state_ok = query.state.as_deref().is_some_and(|s| same(s, &login.state));
    let (Some(code), true) = (query.code, state_ok) else {
        warn!("sign-in callback with a wrong or missing state");
        return failed("The sign-in answer did not match this browser's request.");
    };
    match oidc
        .exchange_code(code, login.verifier, &Nonce::new(login.nonce))
        .await
    {
        Ok(tokens) => {
            info!(user = %tokens.user.name, "signed in");
            let csrf = CsrfToken::new_random().secret().clone();
            let mut response = Redirect::to(&login.next).into_response();
            for value in std::iter::once(clear_login).chain(cookies.session_cookies(&tokens, &csrf)) {
                if let Ok(value) = value.parse() {
                    response.headers_mut().append(header::SET_COOKIE, value);
                }
            }
            response
        }
        Err(error) => {
            warn!("sign-in failed: {error}");
            failed("Keycloak's answer could not be verified.")
        }
    }
}

#[cfg(test)]
fn placeholder() -> User {
    User {
        name: String::new(),
        groups: vec![],
        admin: false,
        expires: 0,
    }
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: Option<String>,
}

async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    axum::Extension(MaybeSession(session)): axum::Extension<MaybeSession>,
    axum::Form(form): axum::Form<CsrfForm>,
) -> Response {
    let cookies = &state.cookies;
    let Some(session) = session else {
        return Redirect::to("/").into_response();
    };
    if !session.csrf_ok(form.csrf.as_deref().unwrap_or_default()) {
        return pages::bad_csrf();
    }
    let id_token: Option<String> = cookies.read(&Cookies::jar(&headers), &cookies.id);
    let after = format!("{}/", state.public_url);
    let target = state
        .oidc
        .get()
        .and_then(|oidc| oidc.logout_url(id_token.as_deref(), &after))
        .unwrap_or(after);
    info!(user = %session.user.name, "signed out");
    let mut response = Redirect::to(&target).into_response();
    for value in [cookies.clear(&cookies.session), cookies.clear(&cookies.id)] {
        if let Ok(value) = value.parse() {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_follow_sign_in() {
        assert_eq!(local_path(Some("/servers/dev".into())), "/servers/dev");
        assert_eq!(local_path(Some("//evil.example".into())), "/");
        assert_eq!(local_path(Some("/\\evil.example".into())), "/");
        assert_eq!(local_path(Some("https://evil.example".into())), "/");
        assert_eq!(local_path(None), "/");
        assert_eq!(local_path(Some("/servers/new?x=1".into())), "/servers/new?x=1");
        for sneaky in [
            "/\t/evil.example",
            "/\n/evil.example",
            "/\r\n/evil.example",
            "/\0/evil.example",
            "/\x7f/evil.example",
            "/ /evil.example",
            "/servers\\..\\\\evil.example",
            "/a//evil.example",
            "/\u{3000}/evil.example",
            "evil.example",
            "",
        ] {
            assert_eq!(local_path(Some(sneaky.into())), "/", "{sneaky:?}");
        }
    }

    #[test]
    fn cookies_are_encrypted_and_tamper_evident() {
        let cookies = Cookies::new(Key::generate(), true);
        let value = cookies.set(&cookies.session, &"secret-token", None);
        assert!(value.starts_with("__Host-cs-session="), "{value}");
        assert!(value.contains("HttpOnly") && value.contains("Secure") && value.contains("SameSite=Lax"));
        assert!(!value.contains("secret-token"), "not in clear text");
        let pair = value.split(';').next().unwrap().to_string();
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, pair.parse().unwrap());
        let read: Option<String> = cookies.read(&Cookies::jar(&headers), &cookies.session);
        assert_eq!(read.as_deref(), Some("secret-token"));

        let (name, data) = pair.split_once('=').unwrap();
        // Another last character (one in 64 cookies ends in A already).
        let last = if data.ends_with('A') { 'B' } else { 'A' };
        let flipped = format!("{name}={}{last}", &data[..data.len() - 1]);
        headers.insert(header::COOKIE, flipped.parse().unwrap());
        let read: Option<String> = cookies.read(&Cookies::jar(&headers), &cookies.session);
        assert_eq!(read, None, "a changed cookie is refused");
        let other = Cookies::new(Key::generate(), true);
        headers.insert(header::COOKIE, pair.parse().unwrap());
        let read: Option<String> = other.read(&Cookies::jar(&headers), &cookies.session);
        assert_eq!(read, None, "another key cannot read it");
    }

    #[test]
    fn csrf_tokens_compare_exactly() {
        let session = Session {
            user: placeholder(),
            csrf: "abc".into(),
        };
        assert!(session.csrf_ok("abc"));
        assert!(!session.csrf_ok("abd"));
        assert!(!session.csrf_ok(""));
        assert!(!session.csrf_ok("abcd"));
    }
}
