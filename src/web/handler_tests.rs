//! Handler tests on the whole router (`app` + `oneshot`, as axum's testing example): the
//! token verifier and the server cache are built in memory and the API server is mocked
//! (src/mock_api.rs), so what users see at the door is checked without Keycloak, a cluster or
//! Docker. A second write, or one too few, fails a test.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use jsonwebtoken::{DecodingKey, EncodingKey};
use serde_json::{Value, json};
use tower::ServiceExt;

use super::*;
use crate::api::{ComputeProfile, ComputeServer};
use crate::mock_api::{self, ApiServer};

const ISSUER: &str = "http://127.0.0.1:8180/realms/compute";
const CLIENT: &str = "compute-server";
const SERVERS: &str = "/apis/computeserver.io/v1alpha1/namespaces/compute/computeservers";
/// The realm's signing key in these tests (P-256, made for them; it signs nothing else).
const PRIVATE_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQggdl8DV7ompnCv7w4
oiBDWjMTS4OI9r5lg+7XMETDN0yhRANCAARel4cQ6nFQm0DpI8dzyHq4JfO7oyUu
JhOTFEzO79KpDKDrInWv0Ne63k2iAWUXeyHmELsybFJvW7e27xZWsv/C
-----END PRIVATE KEY-----";
const PUBLIC_KEY: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEXpeHEOpxUJtA6SPHc8h6uCXzu6Ml
LiYTkxRMzu/SqQyg6yJ1r9DXut5NogFlF3sh5hC7MmxSb1u3tu8WVrL/wg==
-----END PUBLIC KEY-----";
const CSRF: &str = "the-sessions-csrf-token";

/// An access token of the realm for `user`, as Keycloak makes them.
fn token(user: &str) -> String {
    let now = jsonwebtoken::get_current_timestamp();
    let claims = json!({
        "iss": ISSUER, "aud": CLIENT, "azp": CLIENT, "typ": "Bearer",
        "preferred_username": user, "groups": [], "realm_access": {"roles": []},
        "iat": now, "exp": now + 300,
    });
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some("test".into());
    let key = EncodingKey::from_ec_pem(PRIVATE_KEY.as_bytes()).unwrap();
    jsonwebtoken::encode(&header, &claims, &key).unwrap()
}

fn profile() -> ComputeProfile {
    serde_json::from_value(json!({
        "apiVersion": "computeserver.io/v1alpha1", "kind": "ComputeProfile",
        "metadata": {"name": "small"},
        "spec": {"image": "busybox", "defaultResources": {"cpu": "1", "memory": "1Gi"}},
    }))
    .unwrap()
}

/// alice's server `lab`, Running, shared with carol to view.
fn lab() -> ComputeServer {
    serde_json::from_value(json!({
        "apiVersion": "computeserver.io/v1alpha1", "kind": "ComputeServer",
        "metadata": {"name": "lab", "namespace": "compute", "uid": "uid-lab", "resourceVersion": "3",
                     "labels": {crate::api::OWNER_LABEL: crate::api::owner_label("alice")},
                     "creationTimestamp": "2026-12-01T00:00:00Z"},
        "spec": {"owner": "alice", "profile": "small", "sharedWith": [{"user": "carol", "role": "view"}]},
        "status": {"phase": "Running", "node": "n1"},
    }))
    .unwrap()
}

/// The web front with alice's `lab` in its cache, a realm in memory (unless `keycloak_down`)
/// and the API server mocked.
fn front(keycloak_down: bool) -> (Router, ApiServer, Arc<session::Cookies>) {
    let (client, api) = mock_api::client();
    let oidc = Arc::new(OnceLock::new());
    if !keycloak_down {
        let key = DecodingKey::from_ec_pem(PUBLIC_KEY.as_bytes()).unwrap();
        let _ = oidc.set(Provider::in_memory(ISSUER, CLIENT, "compute-admin", "test", key));
    }
    let cookies = Arc::new(Cookies::new(cookie::Key::generate(), false));
    let state = AppState {
        cache: Cache::in_memory(client.clone(), "compute", vec![lab()], vec![profile()]),
        oidc,
        cookies: cookies.clone(),
        servers: Api::namespaced(client.clone(), "compute"),
        leases: Api::namespaced(client.clone(), "compute"),
        snapshots: Api::namespaced(client.clone(), "compute"),
        events: Api::namespaced(client.clone(), "compute"),
        ledger: usage::Ledger {
            usage: Api::all(client.clone()),
            quotas: Api::all(client),
            selector: crate::api::quota::scope_selector(None),
        },
        public_url: "http://127.0.0.1:8080".into(),
        bastion: Some("127.0.0.1:2222".into()),
        ssh: None,
        apps: Arc::default(),
        csp: csp("http://127.0.0.1:8180"),
    };
    (app(state), api, cookies)
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// Sends `request` through the whole router; fails the test when the handler waits 10 s (for
/// an API call the test did not expect, so does not answer).
async fn send(app: &Router, request: Request<Body>) -> Answer {
    let path = request.uri().to_string();
    let response = tokio::time::timeout(Duration::from_secs(10), app.clone().oneshot(request))
        .await
        .unwrap_or_else(|_| panic!("{path}: no answer in 10 s; did it call the API server?"))
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

fn get(path: &str) -> axum::http::request::Builder {
    Request::get(path)
}

fn page(path: &str, cookies: &session::Cookies, user: &str) -> Request<Body> {
    get(path)
        .header(header::COOKIE, cookies.signed_in(&token(user), CSRF))
        .body(Body::empty())
        .unwrap()
}

fn api_call(method: &str, path: &str, user: &str, body: Value) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(path)
        .header(header::AUTHORIZATION, format!("Bearer {}", token(user)))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

#[tokio::test]
async fn a_page_without_a_session_sends_the_browser_to_sign_in_and_back() {
    let (app, mut api, _) = front(false);
    let answer = send(&app, get("/servers/lab").body(Body::empty()).unwrap()).await;
    assert_eq!(answer.status, StatusCode::SEE_OTHER);
    assert_eq!(
        answer.headers[header::LOCATION],
        "/auth/login?next=%2Fservers%2Flab"
    );
    let login = send(
        &app,
        get("/auth/login?next=%2Fservers%2Flab")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    let location = login.headers[header::LOCATION].to_str().unwrap();
    assert!(
        location.starts_with(&format!("{ISSUER}/protocol/openid-connect/auth?")),
        "{location}"
    );
    for part in [
        "response_type=code",
        "code_challenge_method=S256",
        "client_id=compute-server",
    ] {
        assert!(location.contains(part), "{part} in {location}");
    }
    api.silent(Duration::from_millis(50)).await;
}

#[tokio::test]
async fn another_users_server_is_not_found_on_its_page_and_in_the_api() {
    let (app, mut api, cookies) = front(false);
    // Its owner's page lists its Events.
    let (app2, request) = (app.clone(), page("/servers/lab", &cookies, "alice"));
    let own = tokio::spawn(async move { send(&app2, request).await });
    let events = api
        .next()
        .await
        .expect("GET", "/api/v1/namespaces/compute/events");
    assert!(
        events.query.contains("involvedObject.name%3Dlab"),
        "{}",
        events.query
    );
    events.answer(&json!({"apiVersion": "v1", "kind": "EventList", "metadata": {}, "items": []}));
    // ... and its snapshots: only hers of this server, by field selector.
    let snapshots = api.next().await.expect(
        "GET",
        "/apis/computeserver.io/v1alpha1/namespaces/compute/computesnapshots",
    );
    assert!(
        snapshots.query.contains("spec.server%3Dlab%2Cspec.owner%3Dalice"),
        "{}",
        snapshots.query
    );
    snapshots.answer(&json!({"apiVersion": "computeserver.io/v1alpha1", "kind": "ComputeSnapshotList", "metadata": {}, "items": []}));
    let own = own.await.unwrap();
    assert_eq!(own.status, StatusCode::OK);
    assert!(own.body.contains("<h1>lab <span"), "{}", own.body);
    assert!(
        own.body.contains("ssh -J alice@127.0.0.1:2222 root@lab"),
        "{}",
        own.body
    );
    let other = send(&app, page("/servers/lab", &cookies, "bob")).await;
    assert_eq!(other.status, StatusCode::NOT_FOUND);
    assert!(other.body.contains("you have no server named"), "{}", other.body);
    let listed = send(&app, page("/", &cookies, "bob")).await;
    assert_eq!(listed.status, StatusCode::OK);
    assert!(
        !listed.body.contains("/servers/lab"),
        "bob's list shows alice's server"
    );

    let other = send(&app, api_call("GET", "/api/v1/servers/lab", "bob", Value::Null)).await;
    assert_eq!(other.status, StatusCode::NOT_FOUND);
    assert_eq!(
        other.json(),
        json!({"error": "not_found", "message": "you have no server named \"lab\""})
    );
    let stop = send(
        &app,
        api_call("POST", "/api/v1/servers/lab/stop", "bob", Value::Null),
    )
    .await;
    assert_eq!(stop.status, StatusCode::NOT_FOUND, "{}", stop.body);
    let moved = send(
        &app,
        api_call("POST", "/api/v1/servers/lab/move", "bob", Value::Null),
    )
    .await;
    assert_eq!(moved.status, StatusCode::NOT_FOUND, "{}", moved.body);
    for method in ["GET", "POST"] {
        let snapshot = send(
            &app,
            api_call(method, "/api/v1/servers/lab/snapshots", "bob", Value::Null),
        )
        .await;
        assert_eq!(snapshot.status, StatusCode::NOT_FOUND, "{}", snapshot.body);
    }
    let own = send(&app, api_call("GET", "/api/v1/servers", "alice", Value::Null)).await;
    assert_eq!(own.json().as_array().map(|a| a.len()), Some(1), "{}", own.body);
    api.silent(Duration::from_millis(50)).await;
}

#[tokio::test]
async fn a_form_without_the_sessions_csrf_token_changes_nothing() {
    let (app, mut api, cookies) = front(false);
    let signed_in = cookies.signed_in(&token("alice"), CSRF);
    let form = move |csrf: &str| {
        Request::post("/servers/lab/stop")
            .header(header::COOKIE, signed_in.clone())
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(format!("csrf={csrf}")))
            .unwrap()
    };
    let forged = send(&app, form("guessed")).await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN, "{}", forged.body);
    api.silent(Duration::from_millis(100)).await;
    // With the session's token, the stop is one write.
    let app2 = app.clone();
    let request = form(CSRF);
    let stop = tokio::spawn(async move { send(&app2, request).await });
    let call = api.next().await.expect("PATCH", &format!("{SERVERS}/lab"));
    assert_eq!(
        call.body,
        json!([{"op": "test", "path": "/spec/owner", "value": "alice"},
               {"op": "replace", "path": "/spec/running", "value": false}]),
        "a stop only of alice's server"
    );
    let mut stopped = lab();
    stopped.spec.running = false;
    call.answer(&stopped);
    assert_eq!(stop.await.unwrap().status, StatusCode::SEE_OTHER);
    api.silent(Duration::from_millis(50)).await;
}

#[tokio::test]
async fn every_answer_carries_the_security_headers() {
    let (app, _api, cookies) = front(false);
    for request in [
        page("/", &cookies, "alice"),
        get("/nowhere").body(Body::empty()).unwrap(),
        api_call("GET", "/api/v1/servers", "alice", Value::Null),
    ] {
        let path = request.uri().path().to_string();
        let answer = send(&app, request).await;
        let header =
            |name: header::HeaderName| answer.headers.get(name).map(|v| v.to_str().unwrap().to_string());
        let policy = header(header::CONTENT_SECURITY_POLICY).unwrap_or_default();
        assert!(policy.contains("default-src 'none'"), "{path}: {policy}");
        assert!(policy.contains("frame-ancestors 'none'"), "{path}: {policy}");
        assert_eq!(header(header::X_FRAME_OPTIONS).as_deref(), Some("DENY"), "{path}");
        assert_eq!(
            header(header::X_CONTENT_TYPE_OPTIONS).as_deref(),
            Some("nosniff"),
            "{path}"
        );
        assert_eq!(
            header(header::REFERRER_POLICY).as_deref(),
            Some("same-origin"),
            "{path}"
        );
        assert_eq!(
            header(header::CACHE_CONTROL).as_deref(),
            Some("no-store"),
            "{path}"
        );
    }
}

#[tokio::test]
async fn the_json_api_refuses_in_its_documented_shape() {
    let (app, mut api, _) = front(false);
    let none = send(&app, get("/api/v1/servers").body(Body::empty()).unwrap()).await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        none.headers[header::WWW_AUTHENTICATE],
        "Bearer error=\"invalid_token\""
    );
    assert_eq!(none.json()["error"], "unauthorized");
    let forged = Request::get("/api/v1/servers")
        .header(header::AUTHORIZATION, format!("Bearer {}x", token("alice")))
        .body(Body::empty())
        .unwrap();
    let forged = send(&app, forged).await;
    assert_eq!(forged.status, StatusCode::UNAUTHORIZED);
    assert!(
        forged.json()["message"]
            .as_str()
            .unwrap()
            .starts_with("the token is not valid"),
        "{}",
        forged.body
    );

    let invalid = send(
        &app,
        api_call(
            "POST",
            "/api/v1/servers",
            "alice",
            json!({"profile": "small", "resources": {"cpu": "lots"}}),
        ),
    )
    .await;
    assert_eq!(
        invalid.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        invalid.body
    );
    let body = invalid.json();
    assert_eq!(body["error"], "invalid");
    assert_eq!(body["fields"][0]["field"], "cpu", "{body}");
    assert!(
        body["fields"][0]["message"]
            .as_str()
            .unwrap()
            .contains("such as \"2\", \"1.5\" or \"500m\""),
        "{body}"
    );
    let malformed = send(
        &app,
        api_call("POST", "/api/v1/servers", "alice", json!({"profile": 7})),
    )
    .await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    assert_eq!(malformed.json()["error"], "bad_request");
    let unknown = send(&app, api_call("GET", "/api/v1/nothing", "alice", Value::Null)).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.json()["error"], "not_found");
    api.silent(Duration::from_millis(50)).await;
}

// Paused time: the create then waits for the watch (which never shows it here) in no time.
#[tokio::test(start_paused = true)]
async fn a_create_through_the_api_is_one_create_at_the_api_server() {
    let (app, mut api, _) = front(false);
    let app2 = app.clone();
    let request = api_call(
        "POST",
        "/api/v1/servers",
        "alice",
        json!({"name": "notebook", "profile": "small", "resources": {"cpu": "0.5", "memory": "1.5Gi"}}),
    );
    let created = tokio::spawn(async move { send(&app2, request).await });
    let call = api.next().await.expect("POST", SERVERS);
    assert_eq!(
        call.body["spec"]["owner"], "alice",
        "the owner is the token's user"
    );
    assert_eq!(
        call.body["spec"]["resources"],
        json!({"cpu": "0.5", "memory": "1.5Gi"}),
        "{}",
        call.body
    );
    let body = call.body.clone();
    call.answer(&body);
    let created = created.await.unwrap();
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(created.json()["name"], "notebook");
    api.silent(Duration::from_millis(50)).await;
}

#[tokio::test]
async fn ready_only_once_the_cache_and_keycloak_are() {
    let (app, _api, _) = front(false);
    assert_eq!(
        send(&app, get("/readyz").body(Body::empty()).unwrap())
            .await
            .status,
        StatusCode::OK
    );
    let (app, _api, _) = front(true);
    let answer = send(&app, get("/readyz").body(Body::empty()).unwrap()).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(answer.body.contains("Keycloak"), "{}", answer.body);
    let api_call = send(&app, api_call("GET", "/api/v1/servers", "alice", Value::Null)).await;
    assert_eq!(api_call.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(api_call.json()["error"], "unavailable", "{}", api_call.body);
}

#[tokio::test]
async fn a_snapshot_through_the_api_is_one_create_owned_by_the_servers_owner() {
    let (app, mut api, _) = front(false);
    let app2 = app.clone();
    let request = api_call("POST", "/api/v1/servers/lab/snapshots", "alice", Value::Null);
    let taken = tokio::spawn(async move { send(&app2, request).await });
    let call = api.next().await.expect(
        "POST",
        "/apis/computeserver.io/v1alpha1/namespaces/compute/computesnapshots",
    );
    assert_eq!(call.body["spec"], json!({"server": "lab", "owner": "alice"}));
    assert_eq!(call.body["metadata"]["labels"]["computeserver.io/owner"], "alice");
    let name = call.body["metadata"]["name"].as_str().unwrap().to_string();
    assert!(name.starts_with("lab-2"), "{name}");
    let mut created = call.body.clone();
    created["metadata"]["creationTimestamp"] = json!("2026-12-04T10:15:02Z");
    call.answer(&created);
    let taken = taken.await.unwrap();
    assert_eq!(taken.status, StatusCode::CREATED, "{}", taken.body);
    assert_eq!(taken.json()["name"], name);
    assert_eq!(taken.json()["phase"], "Pending");
    api.silent(Duration::from_millis(50)).await;
}

#[tokio::test]
async fn only_a_server_whose_node_is_lost_is_moved_and_that_changes_nothing_else() {
    let (app, mut api, _) = front(false);
    let running = send(
        &app,
        api_call("POST", "/api/v1/servers/lab/move", "alice", Value::Null),
    )
    .await;
    assert_eq!(running.status, StatusCode::CONFLICT, "{}", running.body);
    assert_eq!(
        running.json(),
        json!({"error": "conflict", "message": "only a server whose node is lost (NodeLost) is moved; lab is Running"})
    );
    let unknown = send(
        &app,
        api_call(
            "POST",
            "/api/v1/servers/lab/move",
            "alice",
            json!({"snapshot": "x", "node": "n2"}),
        ),
    )
    .await;
    assert_eq!(
        unknown.status,
        StatusCode::BAD_REQUEST,
        "unknown fields are refused: {}",
        unknown.body
    );
    assert!(
        unknown.json()["message"]
            .as_str()
            .unwrap()
            .contains("unknown field `node`"),
        "{}",
        unknown.body
    );
    api.silent(Duration::from_millis(50)).await;
}

#[tokio::test]
async fn a_server_deleted_with_its_snapshots_takes_only_its_own_along() {
    let (app, mut api, _) = front(false);
    let app2 = app.clone();
    let request = api_call(
        "DELETE",
        "/api/v1/servers/lab?snapshots=true",
        "alice",
        Value::Null,
    );
    let deleting = tokio::spawn(async move { send(&app2, request).await });
    const SNAPSHOTS: &str = "/apis/computeserver.io/v1alpha1/namespaces/compute/computesnapshots";
    let list = api.next().await.expect("GET", SNAPSHOTS);
    assert!(
        list.query.contains("spec.server%3Dlab%2Cspec.owner%3Dalice"),
        "{}",
        list.query
    );
    list.answer(
        &json!({"apiVersion": "computeserver.io/v1alpha1", "kind": "ComputeSnapshotList", "metadata": {},
        "items": [{"apiVersion": "computeserver.io/v1alpha1", "kind": "ComputeSnapshot",
                   "metadata": {"name": "lab-1", "namespace": "compute", "uid": "uid-snap"},
                   "spec": {"server": "lab", "owner": "alice"}}]}),
    );
    let server = api.next().await.expect(
        "DELETE",
        "/apis/computeserver.io/v1alpha1/namespaces/compute/computeservers/lab",
    );
    assert_eq!(server.body["preconditions"]["uid"], "uid-lab");
    server.answer(&lab());
    let snapshot = api.next().await.expect("DELETE", &format!("{SNAPSHOTS}/lab-1"));
    assert_eq!(
        snapshot.body["preconditions"]["uid"], "uid-snap",
        "the one listed, not a new one of that name"
    );
    snapshot.status(404, "NotFound");
    let deleted = deleting.await.unwrap();
    assert_eq!(deleted.status, StatusCode::ACCEPTED, "{}", deleted.body);
    assert!(
        deleted.json()["message"]
            .as_str()
            .unwrap()
            .ends_with("1 snapshot(s) of it deleted"),
        "{}",
        deleted.body
    );

    // Without asking, they are kept: one DELETE, of the server.
    let app2 = app.clone();
    let request = api_call("DELETE", "/api/v1/servers/lab", "alice", Value::Null);
    let deleting = tokio::spawn(async move { send(&app2, request).await });
    api.next()
        .await
        .expect(
            "DELETE",
            "/apis/computeserver.io/v1alpha1/namespaces/compute/computeservers/lab",
        )
        .answer(&lab());
    let deleted = deleting.await.unwrap();
    assert!(
        deleted.json()["message"]
            .as_str()
            .unwrap()
            .ends_with("its snapshots are kept"),
        "{}",
        deleted.body
    );
    api.silent(Duration::from_millis(50)).await;
}

#[tokio::test]
async fn usage_as_csv_from_the_page_holds_only_the_persons_own_rows() {
    let (app, mut api, cookies) = front(false);
    let request = page("/usage/csv?from=2026-12-01&to=2026-12-31", &cookies, "alice");
    let app2 = app.clone();
    let answer = tokio::spawn(async move { send(&app2, request).await });
    // The ledger of the cluster-wide scheduler (no namespace label), then the quotas.
    let days = api
        .next()
        .await
        .expect("GET", "/apis/computeserver.io/v1alpha1/computeusages");
    assert!(
        days.query
            .contains("labelSelector=%21computeserver.io%2Fnamespace"),
        "{}",
        days.query
    );
    days.answer(&json!({"apiVersion": "computeserver.io/v1alpha1", "kind": "ComputeUsageList", "metadata": {},
        "items": [{"apiVersion": "computeserver.io/v1alpha1", "kind": "ComputeUsage", "metadata": {"name": "2026-12-03"},
                   "spec": {"countedUntil": "2026-12-04T00:00:00Z", "owners": [
                       {"owner": "alice", "groups": ["students"], "cpuHours": 12, "memoryGibHours": 24, "gpuHours": 3},
                       {"owner": "bob", "groups": ["students"], "cpuHours": 5, "memoryGibHours": 5, "gpuHours": 0}]}}]}));
    let quotas = api
        .next()
        .await
        .expect("GET", "/apis/computeserver.io/v1alpha1/computequotas");
    quotas.answer(&json!({"apiVersion": "computeserver.io/v1alpha1", "kind": "ComputeQuotaList", "metadata": {}, "items": []}));
    let answer = answer.await.unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.headers[header::CONTENT_TYPE], "text/csv; charset=utf-8");
    assert_eq!(
        answer.body,
        "day,user,groups,cpu_hours,memory_gib_hours,gpu_hours\n2026-12-03,alice,students,12,24,3\n"
    );
}

#[tokio::test]
async fn a_sharee_gets_what_their_role_allows_and_only_the_owner_shares() {
    let (app, mut api, _) = front(false);
    // carol, who may view: she sees it, with her role, and no one's keys.
    let seen = send(&app, api_call("GET", "/api/v1/servers/lab", "carol", Value::Null)).await;
    assert_eq!(seen.status, StatusCode::OK, "{}", seen.body);
    assert_eq!(seen.json()["access"], "view");
    assert_eq!(seen.json()["ssh"], Value::Null);
    let shared = send(
        &app,
        api_call("GET", "/api/v1/servers?shared=true", "carol", Value::Null),
    )
    .await;
    assert_eq!(
        shared.json().as_array().map(|a| a.len()),
        Some(1),
        "{}",
        shared.body
    );
    assert_eq!(
        send(&app, api_call("GET", "/api/v1/servers", "carol", Value::Null))
            .await
            .json(),
        json!([]),
        "her own list is her own"
    );
    // ... and may not stop it, share it, or sign a certificate that reaches it.
    let stop = send(
        &app,
        api_call("POST", "/api/v1/servers/lab/stop", "carol", Value::Null),
    )
    .await;
    assert_eq!(stop.status, StatusCode::FORBIDDEN, "{}", stop.body);
    assert_eq!(
        stop.json()["message"],
        "lab is alice's and shared with you to view; its terminal, SSH, start, stop and keep running need the role use"
    );
    let share = send(
        &app,
        api_call(
            "PUT",
            "/api/v1/servers/lab/sharing",
            "carol",
            json!({"sharedWith": [{"user": "carol", "role": "admin"}]}),
        ),
    )
    .await;
    assert_eq!(share.status, StatusCode::FORBIDDEN, "{}", share.body);
    // Someone it is not shared with: not found, whatever they ask.
    let sharing = send(
        &app,
        api_call("GET", "/api/v1/servers/lab/sharing", "bob", Value::Null),
    )
    .await;
    assert_eq!(sharing.status, StatusCode::NOT_FOUND, "{}", sharing.body);
    // Bad lists are refused before the API server is asked.
    let twice = send(
        &app,
        api_call(
            "PUT",
            "/api/v1/servers/lab/sharing",
            "alice",
            json!({"sharedWith": [{"user": "bob", "role": "use"}, {"user": "bob", "role": "view"}]}),
        ),
    )
    .await;
    assert_eq!(twice.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", twice.body);
    assert_eq!(
        twice.json()["fields"][0]["message"],
        "user bob is listed twice; give each user or group one role"
    );
    let unknown = send(
        &app,
        api_call(
            "PUT",
            "/api/v1/servers/lab/sharing",
            "alice",
            json!({"sharedWith": [{"user": "bob", "role": "owner"}]}),
        ),
    )
    .await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST, "{}", unknown.body);
    api.silent(Duration::from_millis(50)).await;

    // alice shares: one patch, that holds only if the server is still hers and the list as read.
    let app2 = app.clone();
    let request = api_call(
        "PUT",
        "/api/v1/servers/lab/sharing",
        "alice",
        json!({"sharedWith": [{"user": "bob", "role": "use"}]}),
    );
    let shared = tokio::spawn(async move { send(&app2, request).await });
    let call = api.next().await.expect("PATCH", &format!("{SERVERS}/lab"));
    assert_eq!(
        call.body,
        json!([
            {"op": "test", "path": "/spec/owner", "value": "alice"},
            {"op": "test", "path": "/spec/sharedWith", "value": [{"user": "carol", "role": "view"}]},
            {"op": "add", "path": "/spec/sharedWith", "value": [{"user": "bob", "role": "use"}]},
        ])
    );
    let mut after = serde_json::to_value(lab()).unwrap();
    after["spec"]["sharedWith"] = json!([{"user": "bob", "role": "use"}]);
    call.answer(&after);
    let shared = shared.await.unwrap();
    assert_eq!(shared.status, StatusCode::OK, "{}", shared.body);
    assert_eq!(
        shared.json(),
        json!({"sharedWith": [{"user": "bob", "role": "use"}]})
    );
    api.silent(Duration::from_millis(50)).await;
}
