//! The web front against the real apiserver and real Keycloak: the JSON API as alice, bob and
//! ops with Keycloak's own tokens, tokens that must be refused, the browser-less sign-in flow
//! (redirects and Keycloak's login form), refresh when the access token expires, sign-out, and
//! the pages refusing what is not the caller's.

mod support;

use std::sync::Arc;

use base64::Engine;
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{Stack, TestNamespace, WebFront, access_token, install_crds, kubectl, kubectl_ok};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// A client without cookies, for the API.
fn api() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn call(method: reqwest::Method, url: String, token: &str, body: Option<Value>) -> (StatusCode, Value) {
    let mut request = api().request(method, url).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("the web front answers");
    let status = response.status();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// The server as the apiserver has it (kubectl), to check that nothing changed.
fn stored(ns: &str, name: &str) -> Option<Value> {
    let out = kubectl(&["get", "csrv", "-n", ns, name, "-o", "json"], None);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).unwrap())
}

fn names(list: &Value) -> Vec<&str> {
    let mut names: Vec<&str> = list
        .as_array()
        .expect("a list")
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn the_api_serves_each_user_their_own_servers_and_admins_everyones() {
    install_crds();
    let ns = TestNamespace::new("web-api");
    let web = WebFront::start(&ns.name, "compute-server", &[]);
    let (alice, bob, ops) = (
        access_token("compute-server", "alice").await,
        access_token("compute-server", "bob").await,
        access_token("compute-server", "ops").await,
    );
    let servers = format!("{}/api/v1/servers", web.url);
    use reqwest::Method as M;

    let (status, created) = call(
        M::POST,
        servers.clone(),
        &alice,
        Some(json!({"name": "alice-box", "profile": "tiny", "resources": {"cpu": "500m", "memory": 134217728}})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["owner"], "alice");
    assert_eq!(created["phase"], "Pending");
    let object = stored(&ns.name, "alice-box").expect("created in the cluster");
    assert_eq!(object["spec"]["owner"], "alice");
    assert_eq!(object["metadata"]["labels"]["computeserver.io/owner"], "alice");
    assert_eq!(
        object["spec"]["resources"],
        json!({"cpu": "500m", "memory": "134217728"})
    );
    let (status, _) = call(
        M::POST,
        servers.clone(),
        &bob,
        Some(json!({"name": "bob-box", "profile": "tiny"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);

    // Each sees their own (the cache may need a moment for the new objects).
    let list_of = |token: String, query: &'static str| {
        let url = format!("{servers}{query}");
        async move { call(M::GET, url, &token, None).await }
    };
    support::eventually_async("alice to see her server", 10, || async {
        let (_, list) = list_of(alice.clone(), "").await;
        (names(&list) == ["alice-box"]).then_some(())
    })
    .await;
    let (_, list) = list_of(bob.clone(), "").await;
    assert_eq!(names(&list), ["bob-box"]);
    let (status, one) = call(M::GET, format!("{servers}/alice-box"), &alice, None).await;
    assert_eq!(
        (status, one["name"].as_str()),
        (StatusCode::OK, Some("alice-box"))
    );

    // Admins see everyone's, or one owner's; others may not ask for someone else's.
    let (_, list) = list_of(ops.clone(), "").await;
    assert_eq!(names(&list), ["alice-box", "bob-box"]);
    let (_, list) = list_of(ops.clone(), "?owner=alice").await;
    assert_eq!(names(&list), ["alice-box"]);
    let (status, error) = list_of(bob.clone(), "?owner=alice").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{error}");
    assert_eq!(error["error"], "forbidden");

    // Bob cannot read, stop, start or delete alice's server: 404, and the object is untouched.
    let before = stored(&ns.name, "alice-box").unwrap();
    for (method, path) in [
        (M::GET, ""),
        (M::POST, "/stop"),
        (M::POST, "/start"),
        (M::DELETE, ""),
    ] {
        let (status, error) = call(method.clone(), format!("{servers}/alice-box{path}"), &bob, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {error}");
        assert_eq!(error["error"], "not_found");
        assert_eq!(error["message"], "you have no server named \"alice-box\"");
    }
    assert_eq!(
        stored(&ns.name, "alice-box").unwrap(),
        before,
        "bob changed nothing"
    );

    // Alice stops and starts her own; ops may too.
    let (status, stopped) = call(M::POST, format!("{servers}/alice-box/stop"), &alice, None).await;
    assert_eq!(
        (status, &stopped["running"]),
        (StatusCode::OK, &json!(false)),
        "{stopped}"
    );
    assert_eq!(stored(&ns.name, "alice-box").unwrap()["spec"]["running"], false);
    let (status, _) = call(M::POST, format!("{servers}/alice-box/start"), &ops, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(stored(&ns.name, "alice-box").unwrap()["spec"]["running"], true);

    // Alice deletes hers; then it is not found.
    let (status, _) = call(M::DELETE, format!("{servers}/alice-box"), &alice, None).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    support::eventually("alice-box to be gone", 30, || {
        stored(&ns.name, "alice-box").is_none().then_some(())
    });
    support::eventually_async("the cache to forget alice-box", 10, || async {
        let (status, _) = call(M::GET, format!("{servers}/alice-box"), &alice, None).await;
        (status == StatusCode::NOT_FOUND).then_some(())
    })
    .await;
    assert!(stored(&ns.name, "bob-box").is_some());

    // Profiles: everyone may use the two local ones.
    let (status, profiles) = call(M::GET, format!("{}/api/v1/profiles", web.url), &bob, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(names(&profiles), ["debian", "tiny"]);
}

#[tokio::test]
async fn the_api_refuses_bad_requests_with_field_messages_and_enforces_the_per_user_limit() {
    install_crds();
    let ns = TestNamespace::new("web-create");
    let web = WebFront::start(&ns.name, "compute-server", &[]);
    let carol = access_token("compute-server", "carol").await;
    let servers = format!("{}/api/v1/servers", web.url);
    let post = |body: Value| call(reqwest::Method::POST, servers.clone(), &carol, Some(body));

    let (status, error) = post(json!({
        "name": "Bad_Name", "profile": "debian",
        "resources": {"cpu": "8", "memory": "lots"},
        "sshAuthorizedKeys": ["not a key"],
    }))
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{error}");
    assert_eq!(error["error"], "invalid");
    let fields: Vec<&str> = error["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["name", "cpu", "memory", "sshAuthorizedKeys"]);
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("cpu: at most 2 for profile debian; you asked for 8"),
        "{error}"
    );

    // Sizes that would mean "no limit" get the API server's words, as field errors.
    for (resources, field, message) in [
        (
            json!({"cpu": "0.4n"}),
            "cpu",
            compute_server::api::size::CPU_TOO_SMALL,
        ),
        (
            json!({"memory": "0.25Ki"}),
            "memory",
            compute_server::api::size::MEMORY_TOO_SMALL,
        ),
        (
            json!({"memory": "8Ei"}),
            "memory",
            compute_server::api::size::MEMORY_TOO_BIG,
        ),
        (
            json!({"memory": "64Mb"}),
            "memory",
            compute_server::api::size::MEMORY_NOT_A_QUANTITY,
        ),
    ] {
        let (status, error) =
            post(json!({"name": "tiny-size", "profile": "tiny", "resources": resources})).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{resources}: {error}");
        assert_eq!(
            error["fields"],
            json!([{"field": field, "message": message}]),
            "{resources}"
        );
    }
    // A bare number in the memory field is bytes: the answer says how to write what was meant.
    for memory in [json!("0.5"), json!(100)] {
        let (status, error) =
            post(json!({"name": "tiny-size", "profile": "tiny", "resources": {"memory": memory}})).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        let text = memory.to_string().trim_matches('"').to_string();
        assert_eq!(
            error["fields"][0]["message"],
            format!(
                "{}; a number alone counts bytes: write {text}Gi or {text}Mi",
                compute_server::api::size::MEMORY_TOO_SMALL
            )
        );
    }
    assert!(
        kubectl(&["get", "csrv", "-n", &ns.name, "tiny-size"], None)
            .status
            .code()
            != Some(0),
        "nothing is stored"
    );
    // What a person types for half a gigabyte is fine.
    let (status, created) =
        post(json!({"name": "half", "profile": "tiny", "resources": {"cpu": "0.5", "memory": "0.25Gi"}}))
            .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    kubectl_ok(&["delete", "csrv", "-n", &ns.name, "half", "--wait=false"], None);

    let (status, error) = post(json!({"profile": "gpu-large"})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        error["message"],
        "profile: there is no profile \"gpu-large\" you may use; choose one of: debian, tiny"
    );

    // The owner comes from the token only: a body naming one is refused outright.
    let (status, error) = post(json!({"name": "x", "profile": "tiny", "owner": "alice"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{error}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("unknown field `owner`"),
        "{error}"
    );
    let (status, _) = call(reqwest::Method::POST, servers.clone(), &carol, None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        kubectl_ok(&["get", "csrv", "-n", &ns.name, "-o", "name"], None),
        "",
        "nothing was made"
    );

    // debian allows 2 per person; a name taken is a conflict too.
    for name in ["one", "two"] {
        let (status, body) = post(json!({"name": name, "profile": "debian"})).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    let (status, error) = post(json!({"name": "three", "profile": "debian"})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{error}");
    assert_eq!(error["error"], "limit_reached");
    assert_eq!(
        error["message"],
        "you have 2 servers of profile debian already, and its limit (maxServersPerUser) is 2; delete one first"
    );
    let (status, error) = post(json!({"name": "one", "profile": "tiny"})).await;
    assert_eq!(
        (status, &error["error"]),
        (StatusCode::CONFLICT, &json!("already_exists"))
    );
    assert!(stored(&ns.name, "three").is_none());
}

/// A fresh RSA key (PEM) from openssl, to sign tokens Keycloak never made.
fn foreign_key() -> Vec<u8> {
    let out = std::process::Command::new("openssl")
        .args(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"])
        .output()
        .expect("openssl");
    assert!(out.status.success());
    out.stdout
}

fn parts(token: &str) -> (Value, Value) {
    let mut it = token.split('.');
    let header = serde_json::from_slice(&B64.decode(it.next().unwrap()).unwrap()).unwrap();
    let claims = serde_json::from_slice(&B64.decode(it.next().unwrap()).unwrap()).unwrap();
    (header, claims)
}

#[tokio::test]
async fn the_api_refuses_tokens_it_cannot_trust() {
    install_crds();
    let ns = TestNamespace::new("web-tokens");
    let web = WebFront::start(&ns.name, "compute-server", &[]);
    let alice = access_token("compute-server", "alice").await;
    let servers = format!("{}/api/v1/servers", web.url);
    let (header, claims) = parts(&alice);
    let signature = alice.rsplit('.').next().unwrap();
    let encode = |v: &Value| B64.encode(serde_json::to_vec(v).unwrap());

    // A key of our own, once with Keycloak's key id and once with its own.
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(&foreign_key()).unwrap();
    let mut forged_header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    forged_header.kid = header["kid"].as_str().map(String::from);
    let forged_same_kid = jsonwebtoken::encode(&forged_header, &claims, &key).unwrap();
    forged_header.kid = Some("someone-elses-key".into());
    let forged_other_kid = jsonwebtoken::encode(&forged_header, &claims, &key).unwrap();

    let none = format!(
        "{}.{}.",
        encode(&json!({"alg": "none", "typ": "JWT"})),
        encode(&claims)
    );
    let mut bob_claims = claims.clone();
    bob_claims["preferred_username"] = json!("ops");
    bob_claims["realm_access"] = json!({"roles": ["compute-admin"]});
    let tampered = format!("{}.{}.{signature}", encode(&header), encode(&bob_claims));
    // HS256 "signed" with the public key id: the classic algorithm confusion.
    let hs = jsonwebtoken::encode(
        &jsonwebtoken::Header {
            kid: header["kid"].as_str().map(String::from),
            ..jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256)
        },
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(b"guessable"),
    )
    .unwrap();
    // Real Keycloak tokens, but for another client (aud and azp are not compute-server), and
    // from another realm (another issuer, signed by that realm's key).
    let other_client = access_token("admin-cli", "alice").await;
    let (_, other_claims) = parts(&other_client);
    assert_ne!(other_claims["azp"], "compute-server");
    let other_realm = support::keycloak_admin_token().await;

    for (what, token, expect) in [
        (
            "signed by another key with Keycloak's key id",
            forged_same_kid.as_str(),
            "InvalidSignature",
        ),
        (
            "signed by an unknown key",
            forged_other_kid.as_str(),
            "signing key is unknown",
        ),
        ("alg none", none.as_str(), "not valid"),
        ("tampered payload", tampered.as_str(), "InvalidSignature"),
        ("HS256 algorithm confusion", hs.as_str(), "not allowed"),
        (
            "for another client (wrong audience)",
            other_client.as_str(),
            "not issued for compute-server",
        ),
        ("from another realm (wrong issuer)", other_realm.as_str(), ""),
        ("garbage", "abc", "not valid"),
    ] {
        let (status, error) = call(reqwest::Method::GET, servers.clone(), token, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}: {error}");
        assert_eq!(error["error"], "unauthorized", "{what}");
        assert!(
            error["message"].as_str().unwrap().contains(expect),
            "{what}: {error}"
        );
        // A forged admin token must not create anything either.
        let (status, _) = call(
            reqwest::Method::POST,
            servers.clone(),
            token,
            Some(json!({"name": "forged", "profile": "tiny"})),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}");
    }
    let response = api().get(&servers).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        response.headers()["www-authenticate"],
        "Bearer error=\"invalid_token\""
    );
    assert!(stored(&ns.name, "forged").is_none());

    // The real token still works: the refusals above were about the tokens.
    let (status, _) = call(reqwest::Method::GET, servers.clone(), &alice, None).await;
    assert_eq!(status, StatusCode::OK);
}

/// A browser without a browser: a cookie store, following redirects.
struct Browser {
    client: reqwest::Client,
    jar: Arc<reqwest::cookie::Jar>,
}

impl Browser {
    fn new() -> Browser {
        let jar = Arc::new(reqwest::cookie::Jar::default());
        let client = reqwest::Client::builder()
            .cookie_provider(jar.clone())
            .build()
            .unwrap();
        Browser { client, jar }
    }

    async fn get(&self, url: &str) -> (StatusCode, String, String) {
        let response = self.client.get(url).send().await.expect("answers");
        let (status, at) = (response.status(), response.url().to_string());
        (status, at, response.text().await.unwrap())
    }

    async fn post(&self, url: &str, form: &[(&str, &str)]) -> (StatusCode, String, String) {
        let response = self.client.post(url).form(form).send().await.expect("answers");
        let (status, at) = (response.status(), response.url().to_string());
        (status, at, response.text().await.unwrap())
    }

    /// Signs in as `user` through Keycloak's login form; returns the page it lands on.
    async fn sign_in(&self, web: &WebFront, user: &str) -> String {
        let (status, at, page) = self.get(&format!("{}/servers/new", web.url)).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert!(
            at.starts_with(Stack::get().keycloak_issuer()),
            "sent to Keycloak: {at}"
        );
        let action = login_action(&page);
        let (status, at, page) = self
            .post(&action, &[("username", user), ("password", user)])
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert_eq!(at, format!("{}/servers/new", web.url), "back where it started");
        page
    }

    /// The cookies the browser holds for the web front, as a Cookie header.
    fn cookies(&self, web: &WebFront) -> String {
        use reqwest::cookie::CookieStore;
        self.jar
            .cookies(&web.url.parse().unwrap())
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    }
}

/// The action URL of Keycloak's login form.
fn login_action(page: &str) -> String {
    let form = &page[page.find("id=\"kc-form-login\"").expect("Keycloak's login form")..];
    let start = form.find("action=\"").unwrap() + 8;
    let end = start + form[start..].find('"').unwrap();
    form[start..end].replace("&amp;", "&")
}

/// The CSRF token in a page's forms.
fn csrf(page: &str) -> String {
    let start = page.find("name=\"csrf\" value=\"").expect("a CSRF field") + 19;
    let end = start + page[start..].find('"').unwrap();
    page[start..end].to_string()
}

#[tokio::test]
async fn signing_in_through_keycloak_lands_on_the_page_and_the_pages_refuse_others() {
    install_crds();
    let ns = TestNamespace::new("web-pages");
    let web = WebFront::start(&ns.name, "compute-server", &[]);
    let alice = Browser::new();
    let page = alice.sign_in(&web, "alice").await;
    assert!(
        page.contains("Request a server") && page.contains(">alice<"),
        "{page}"
    );
    assert!(page.contains("Debian with SSH") && page.contains("Tiny (busybox)"));
    let cookies = alice.cookies(&web);
    assert!(cookies.contains("cs-session="), "{cookies}");
    assert!(
        !cookies.contains("cs-login="),
        "the login cookie is gone: {cookies}"
    );

    // Request a server with the form; a bad field is shown next to it, and nothing is made.
    let token = csrf(&page);
    let form = |name: &'static str, cpu: &'static str| {
        vec![
            ("csrf", token.clone()),
            ("profile", "tiny".to_string()),
            ("name", name.to_string()),
            ("cpu", cpu.to_string()),
            ("memory", String::new()),
            ("ssh_keys", String::new()),
        ]
    };
    let as_refs = |f: &[(&'static str, String)]| f.iter().map(|(k, v)| (*k, v.clone())).collect::<Vec<_>>();
    let response = alice
        .client
        .post(format!("{}/servers", web.url))
        .form(&as_refs(&form("mine", "4")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let page = response.text().await.unwrap();
    assert!(
        page.contains("<p class=\"error\" id=\"error-cpu\">at most 1 for profile tiny; you asked for 4</p>"),
        "{page}"
    );
    assert!(page.contains("value=\"mine\""), "the form keeps what was typed");
    assert!(stored(&ns.name, "mine").is_none());

    let response = alice
        .client
        .post(format!("{}/servers", web.url))
        .form(&as_refs(&form("mine", "")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.url().path(), "/servers/mine");
    assert_eq!(stored(&ns.name, "mine").unwrap()["spec"]["owner"], "alice");

    // A state-changing form without this session's CSRF token does nothing.
    for bad in [vec![], vec![("csrf", "forged".to_string())]] {
        let response = alice
            .client
            .post(format!("{}/servers/mine/stop", web.url))
            .form(&bad)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert!(response.text().await.unwrap().contains("nothing was done"));
    }
    let mut missing = form("other", "");
    missing.retain(|(k, _)| *k != "csrf");
    let response = alice
        .client
        .post(format!("{}/servers", web.url))
        .form(&as_refs(&missing))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(stored(&ns.name, "other").is_none());
    assert_eq!(stored(&ns.name, "mine").unwrap()["spec"]["running"], true);

    // My servers lists it (from the watch cache).
    support::eventually_async("my servers to list mine", 10, || async {
        let (_, _, page) = alice.get(&format!("{}/", web.url)).await;
        page.contains("href=\"/servers/mine\"").then_some(())
    })
    .await;

    // Bob signs in; alice's server is "not found" for him by page, and his forms change nothing.
    let bob = Browser::new();
    let bob_page = bob.sign_in(&web, "bob").await;
    let bob_csrf = csrf(&bob_page);
    let (_, _, home) = bob.get(&format!("{}/", web.url)).await;
    assert!(!home.contains("/servers/mine"), "bob's list has no alice server");
    let before = stored(&ns.name, "mine").unwrap();
    let (status, _, page) = bob.get(&format!("{}/servers/mine", web.url)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(page.contains("you have no server named"), "{page}");
    let (status, _, _) = bob.get(&format!("{}/servers/mine/events", web.url)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    for action in ["stop", "start", "delete"] {
        let (status, _, page) = bob
            .post(
                &format!("{}/servers/mine/{action}", web.url),
                &[("csrf", &bob_csrf)],
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{action}: {page}");
    }
    let (status, _, _) = bob.get(&format!("{}/admin", web.url)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(stored(&ns.name, "mine").unwrap(), before, "bob changed nothing");

    // Alice's own stop works, with her token; and a token of alice's is no good in bob's session.
    let (status, at, _) = alice
        .post(
            &format!("{}/servers/mine/stop", web.url),
            &[("csrf", &csrf(&page_of(&alice, &web).await))],
        )
        .await;
    assert_eq!(
        (status, at),
        (StatusCode::OK, format!("{}/servers/mine", web.url))
    );
    assert_eq!(stored(&ns.name, "mine").unwrap()["spec"]["running"], false);
    let (status, _, _) = bob
        .post(
            &format!("{}/servers/mine/start", web.url),
            &[("csrf", &csrf(&page_of(&alice, &web).await))],
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "alice's CSRF token is not bob's");
    assert_eq!(stored(&ns.name, "mine").unwrap()["spec"]["running"], false);

    // The pages carry the security headers.
    let response = alice.client.get(format!("{}/", web.url)).send().await.unwrap();
    let headers = response.headers();
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe-inline"));
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert!(headers.contains_key("referrer-policy"));

    // The API takes Bearer tokens only: the browser's session cookie is not enough.
    let response = api()
        .get(format!("{}/api/v1/servers", web.url))
        .header("cookie", alice.cookies(&web))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

async fn page_of(browser: &Browser, web: &WebFront) -> String {
    browser.get(&format!("{}/", web.url)).await.2
}

#[tokio::test]
async fn the_session_renews_its_token_ends_when_keycloak_does_and_signs_out() {
    install_crds();
    let ns = TestNamespace::new("web-session");
    // compute-server-short: access tokens last 10 s.
    let web = WebFront::start(&ns.name, "compute-server-short", &[]);
    let api_token = access_token("compute-server-short", "alice").await;
    let alice = Browser::new();
    alice.sign_in(&web, "alice").await;
    let first = alice.cookies(&web);

    tokio::time::sleep(std::time::Duration::from_secs(16)).await;

    // The API refuses the expired token; the page renews the session's with the refresh token.
    let (status, error) = call(
        reqwest::Method::GET,
        format!("{}/api/v1/servers", web.url),
        &api_token,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error["message"], "the token has expired");
    let response = alice.client.get(format!("{}/", web.url)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response
            .headers()
            .get_all("set-cookie")
            .iter()
            .any(|c| c.to_str().unwrap().starts_with("cs-session=")),
        "a renewed session cookie"
    );
    let page = response.text().await.unwrap();
    assert!(page.contains("My servers") && page.contains(">alice<"), "{page}");
    let renewed = alice.cookies(&web);
    assert_ne!(first, renewed);

    // Sign out: the cookies go, Keycloak's session ends, and the browser is back at the start.
    let (status, at, page) = alice
        .post(&format!("{}/auth/logout", web.url), &[("csrf", &csrf(&page))])
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(at, format!("{}/", web.url));
    assert!(page.contains("Sign in"), "{page}");
    assert!(!alice.cookies(&web).contains("cs-session="));
    let (_, at, page) = alice.get(&format!("{}/servers/new", web.url)).await;
    assert!(
        at.starts_with(Stack::get().keycloak_issuer()),
        "Keycloak asks again: {at}"
    );
    assert!(page.contains("kc-form-login"));

    // The cookie from before signing out: once its access token expires, the refresh fails
    // (Keycloak ended the session), so the session ends.
    tokio::time::sleep(std::time::Duration::from_secs(12)).await;
    let response = api()
        .get(format!("{}/servers/new", web.url))
        .header("cookie", renewed)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert!(
        response.headers()["location"]
            .to_str()
            .unwrap()
            .starts_with("/auth/login")
    );
    assert!(
        response
            .headers()
            .get_all("set-cookie")
            .iter()
            .any(|c| c.to_str().unwrap().starts_with("cs-session=;")),
        "the old session cookie is cleared"
    );
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    install_crds();
    let ns = TestNamespace::new("web-health");
    let web = WebFront::start(&ns.name, "compute-server", &[]);
    let get = |path: &str| reqwest::get(format!("{}{path}", web.url));
    assert_eq!(get("/healthz").await.unwrap().text().await.unwrap(), "ok");
    assert_eq!(get("/readyz").await.unwrap().status(), StatusCode::OK);
    let alice = access_token("compute-server", "alice").await;
    call(
        reqwest::Method::GET,
        format!("{}/api/v1/servers/nope", web.url),
        &alice,
        None,
    )
    .await;
    let metrics = get("/metrics").await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains(
            "compute_server_web_http_requests_total{route=\"/api/v1/servers/{name}\",method=\"GET\",status=\"404\"} 1"
        ),
        "{metrics}"
    );
    assert!(metrics.contains("compute_server_web_http_request_duration_seconds_bucket{"));

    // Unknown addresses: a JSON error under /api/, a page elsewhere.
    let response = get("/api/v1/nothing").await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(response.json::<Value>().await.unwrap()["error"], "not_found");
    let response = get("/favicon.ico").await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("There is no page at this address.")
    );
}

#[tokio::test]
async fn twenty_requests_at_once_against_a_limit_of_five_leave_five_on_two_replicas() {
    install_crds();
    let ns = TestNamespace::new("web-limit");
    // Two replicas of the front: a lock in one process would not do.
    let fronts = [
        WebFront::start(&ns.name, "compute-server", &[]),
        WebFront::start(&ns.name, "compute-server", &[]),
    ];
    let alice = access_token("compute-server", "alice").await;
    // tiny allows 5 servers per person.
    let requests = (0..20).map(|n| {
        let url = format!("{}/api/v1/servers", fronts[n % 2].url);
        let body = json!({"name": format!("box-{n}"), "profile": "tiny"});
        call(reqwest::Method::POST, url, &alice, Some(body))
    });
    let answers = futures::future::join_all(requests).await;
    let created = answers.iter().filter(|(s, _)| *s == StatusCode::CREATED).count();
    let refused: Vec<&Value> = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::CONFLICT)
        .map(|(_, body)| body)
        .collect();
    assert_eq!(created, 5, "{answers:?}");
    assert_eq!(refused.len(), 15, "{answers:?}");
    for body in refused {
        assert_eq!(body["error"], "limit_reached", "{body}");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("its limit (maxServersPerUser) is 5"),
            "{body}"
        );
    }
    let stored = kubectl_ok(&["get", "csrv", "-n", &ns.name, "-o", "name"], None);
    assert_eq!(stored.lines().count(), 5, "{stored}");
    // Every turn was given back.
    assert_eq!(
        kubectl_ok(&["get", "leases", "-n", &ns.name, "-o", "name"], None),
        ""
    );
}

#[tokio::test]
async fn a_made_up_method_is_counted_as_other() {
    install_crds();
    let ns = TestNamespace::new("web-method");
    let web = WebFront::start(&ns.name, "compute-server", &[]);
    for method in ["BREW", "X-UNIQUE-12345", "get"] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        api()
            .request(method, format!("{}/", web.url))
            .send()
            .await
            .unwrap();
    }
    let metrics = reqwest::get(format!("{}/metrics", web.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            "compute_server_web_http_requests_total{route=\"/\",method=\"other\",status=\"405\"} 3"
        ),
        "{metrics}"
    );
    assert!(
        !metrics.contains("BREW") && !metrics.contains("X-UNIQUE") && !metrics.contains("method=\"get\"")
    );
}

#[tokio::test]
async fn after_sign_in_only_a_path_of_this_site_is_followed() {
    install_crds();
    let ns = TestNamespace::new("web-next");
    let web = WebFront::start(&ns.name, "compute-server", &[]);
    let alice = Browser::new();
    for (next, lands) in [
        ("/servers/new", "/servers/new"),
        ("//evil.example/", "/"),
        ("/\\evil.example/", "/"),
        ("/\t/evil.example/", "/"),
        ("/\r\n/evil.example/", "/"),
        ("https://evil.example/", "/"),
        ("/a\\..\\\\evil.example/", "/"),
    ] {
        let query = serde_urlencoded::to_string([("next", next)]).unwrap();
        let (status, at, page) = alice.get(&format!("{}/auth/login?{query}", web.url)).await;
        // The first time Keycloak asks; later its own session signs alice in at once.
        let (status, at) = if page.contains("kc-form-login") {
            let (status, at, _) = alice
                .post(
                    &login_action(&page),
                    &[("username", "alice"), ("password", "alice")],
                )
                .await;
            (status, at)
        } else {
            (status, at)
        };
        assert_eq!(status, StatusCode::OK, "{next:?}");
        assert_eq!(at, format!("{}{lands}", web.url), "next={next:?}");
    }
}

#[tokio::test]
async fn the_live_status_stream_ends_when_its_session_does() {
    install_crds();
    let ns = TestNamespace::new("web-live");
    // compute-server-short: access tokens last 10 s.
    let web = WebFront::start(&ns.name, "compute-server-short", &[]);
    let server = format!(
        "apiVersion: computeserver.io/v1alpha1\nkind: ComputeServer\nmetadata: {{name: dev, namespace: {}}}\n\
         spec: {{owner: alice, profile: tiny}}\n",
        ns.name
    );
    kubectl_ok(&["apply", "-f", "-"], Some(&server));
    let alice = Browser::new();
    alice.sign_in(&web, "alice").await;
    let events = format!("{}/servers/dev/events", web.url);

    // A stream follows the server until the session's token expires, then ends.
    let follow = || async {
        let started = std::time::Instant::now();
        let mut response = alice.client.get(&events).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        let first = response.chunk().await.unwrap().unwrap();
        assert!(String::from_utf8_lossy(&first).contains("event: status"));
        let ended = tokio::time::timeout(std::time::Duration::from_secs(30), async {
            while response.chunk().await.unwrap_or(None).is_some() {}
        })
        .await;
        assert!(ended.is_ok(), "the stream outlived its session by far");
        started.elapsed()
    };
    let lasted = follow().await;
    assert!(
        lasted.as_secs() <= 12,
        "ended after {lasted:?}, with a 10 s token"
    );
    // The browser asks again: the session is renewed (refresh token) and a new stream starts.
    let cookie = alice.cookies(&web);
    follow().await;

    // Signed out, Keycloak's session ends: once the token in the old cookie expires, asking
    // again gets no stream but the way to sign in.
    let page = alice.get(&format!("{}/", web.url)).await.2;
    alice
        .post(&format!("{}/auth/logout", web.url), &[("csrf", &csrf(&page))])
        .await;
    tokio::time::sleep(std::time::Duration::from_secs(12)).await;
    let response = api().get(&events).header("cookie", cookie).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SEE_OTHER);
    assert!(
        response.headers()["location"]
            .to_str()
            .unwrap()
            .starts_with("/auth/login")
    );
}

/// What the lifecycle controller writes of a server (it does not run here): the stop its
/// verdict gives, by the same pure function.
async fn write_verdict(ns: &str, name: &str, profile: &str) -> (jiff::Timestamp, String) {
    use compute_server::api::lifecycle::{Rules, verdict};
    use compute_server::api::{ComputeProfile, ComputeServer};
    let client = support::kube_client().await;
    let server = kube::Api::<ComputeServer>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .unwrap();
    let profile = kube::Api::<ComputeProfile>::all(client)
        .get(profile)
        .await
        .unwrap();
    let verdict = verdict(&server, &Rules::of(Some(&profile)), jiff::Timestamp::now());
    let (at, reason) = (verdict.stops_at.unwrap(), verdict.reason.unwrap());
    support::patch_status(ns, name, json!({"stopsAt": at.to_string(), "stopReason": reason}));
    (at, reason)
}

#[tokio::test]
async fn keep_running_sets_keep_running_until_within_the_profiles_extension_for_the_owner_only() {
    use compute_server::api::lifecycle::clock;
    use jiff::{SignedDuration, Timestamp};
    install_crds();
    let ns = TestNamespace::new("web-extend");
    let keeps = support::TestProfile::new("keeps", "lifecycle: {idleStopAfter: 30m, maxExtension: 2h}");
    let stops = support::TestProfile::new("stops", "lifecycle: {idleStopAfter: 30m}");
    let web = WebFront::start(&ns.name, "compute-server", &[]);
    let (alice, bob, ops) = (
        access_token("compute-server", "alice").await,
        access_token("compute-server", "bob").await,
        access_token("compute-server", "ops").await,
    );
    // Two Running servers of alice (their status as an agent writes it), with the stop the
    // lifecycle controller would announce.
    let started = Timestamp::from_second(Timestamp::now().as_second()).unwrap();
    for (name, profile) in [("kept", &keeps.name), ("stopping", &stops.name)] {
        let yaml = format!(
            "apiVersion: computeserver.io/v1alpha1\nkind: ComputeServer\nmetadata: {{name: {name}, namespace: {}}}\n\
             spec: {{owner: alice, profile: {profile}}}\n",
            ns.name
        );
        kubectl_ok(&["apply", "-f", "-"], Some(&yaml));
        support::patch_status(
            &ns.name,
            name,
            json!({"phase": "Running", "startedAt": started.to_string()}),
        );
        let (at, _) = write_verdict(&ns.name, name, profile).await;
        assert_eq!(at, started + SignedDuration::from_mins(30));
    }
    let servers = format!("{}/api/v1/servers", web.url);
    let extend = |name: &str, token: &str, body: Option<Value>| {
        let (url, token) = (format!("{servers}/{name}/extend"), token.to_string());
        async move { call(reqwest::Method::POST, url, &token, body).await }
    };
    let stop_at = (started + SignedDuration::from_mins(30)).to_string();
    support::eventually_async("the web front to see the stops", 10, || async {
        let (_, list) = call(reqwest::Method::GET, servers.clone(), &alice, None).await;
        let all = list.as_array()?;
        (all.len() == 2 && all.iter().all(|s| s["stopsAt"] == stop_at.as_str())).then_some(())
    })
    .await;
    let before = stored(&ns.name, "kept").unwrap();

    // Bob may not keep alice's server running: to him it does not exist.
    let (status, error) = extend("kept", &bob, Some(json!({"for": "1h"}))).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{error}");
    assert_eq!(error["message"], "you have no server named \"kept\"");

    // How long must be a duration; the answer names the field.
    for body in [
        Some(json!({"for": "soon"})),
        Some(json!({"for": "0s"})),
        Some(json!({"for": 4})),
        Some(json!({})),
        None,
    ] {
        let (status, error) = extend("kept", &alice, body.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body:?}: {error}");
        assert_eq!(error["fields"][0]["field"], "for", "{body:?}: {error}");
    }
    let (_, error) = extend("kept", &alice, Some(json!({"for": "soon"}))).await;
    assert_eq!(
        error["message"],
        "for: \"soon\" is not a duration; write it like 30s, 90m, 2h, 7d or 1h30m"
    );
    let (status, _) = extend("kept", &alice, Some(json!({"for": "1h", "until": "forever"}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // A profile without maxExtension allows none, and says so.
    let (status, error) = extend("stopping", &alice, Some(json!({"for": "1h"}))).await;
    assert_eq!(status, StatusCode::CONFLICT, "{error}");
    assert_eq!(
        error["message"],
        format!(
            "stopping cannot be kept running: its profile allows no keeping it running longer \
             (profile {} sets no lifecycle.maxExtension)",
            stops.name
        )
    );
    assert_eq!(stored(&ns.name, "kept").unwrap(), before, "nothing changed");
    assert!(stored(&ns.name, "stopping").unwrap()["spec"]["keepRunningUntil"].is_null());

    // Asking for a week gets what the profile allows: 2h past the idle stop.
    let (status, kept) = extend("kept", &alice, Some(json!({"for": "7d"}))).await;
    assert_eq!(status, StatusCode::OK, "{kept}");
    let most = started + SignedDuration::from_mins(150);
    let spec = stored(&ns.name, "kept").unwrap()["spec"].clone();
    assert_eq!(spec["keepRunningUntil"], most.to_string());
    assert_eq!(kept["keepRunningUntil"], most.to_string());
    // The answer shows the stop that follows from it (the controller has not written it yet).
    assert_eq!(kept["stopsAt"], most.to_string());
    assert_eq!(
        kept["stopReason"],
        format!("kept running until {}", clock(most, Timestamp::now()))
    );
    assert_eq!(kept["warning"], Value::Null);
    // The extend is a sign of use, in the web front's own entry.
    let server = stored(&ns.name, "kept").unwrap();
    assert_eq!(
        server["status"]["activity"][0]["detail"],
        "kept running for 7d by alice"
    );
    assert_eq!(
        support::activity_managers(&ns.name, "kept")["web"],
        "compute-server-web"
    );

    // An hour from now is within what the profile allows; admins may keep it running too.
    for token in [&alice, &ops] {
        let asked = Timestamp::from_second(Timestamp::now().as_second()).unwrap();
        let (status, kept) = extend("kept", token, Some(json!({"for": "1h"}))).await;
        assert_eq!(status, StatusCode::OK, "{kept}");
        let until: Timestamp = kept["keepRunningUntil"].as_str().unwrap().parse().unwrap();
        let hour = SignedDuration::from_hours(1);
        assert!(
            until >= asked + hour && until <= Timestamp::now() + hour,
            "{until} is an hour after {asked}"
        );
        assert_eq!(kept["stopsAt"], until.to_string());
    }
    assert_eq!(
        stored(&ns.name, "kept").unwrap()["status"]["activity"][0]["detail"],
        "kept running for 1h by ops"
    );

    // Near its stop, the API warns.
    let soon = Timestamp::from_second(Timestamp::now().as_second() + 60).unwrap();
    let reason = "idle: no SSH session and under 5% CPU since the test began";
    support::patch_status(
        &ns.name,
        "stopping",
        json!({"stopsAt": soon.to_string(), "stopReason": reason}),
    );
    let warning = format!(
        "stops at {} unless kept running: {reason}",
        clock(soon, Timestamp::now())
    );
    support::eventually_async("the API to warn", 10, || async {
        let (_, one) = call(reqwest::Method::GET, format!("{servers}/stopping"), &alice, None).await;
        (one["warning"] == warning.as_str()).then_some(())
    })
    .await;

    // A start through the web front is a sign of use too.
    let (status, _) = call(
        reqwest::Method::POST,
        format!("{servers}/stopping/start"),
        &alice,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        stored(&ns.name, "stopping").unwrap()["status"]["activity"][0]["detail"],
        "started by alice"
    );

    // The page's Keep running form needs the session's CSRF token.
    let browser = Browser::new();
    browser.sign_in(&web, "alice").await;
    let before = stored(&ns.name, "kept").unwrap()["spec"].clone();
    let (status, _, page) = browser
        .post(
            &format!("{}/servers/kept/extend", web.url),
            &[("csrf", "forged"), ("for", "2h")],
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{page}");
    assert_eq!(stored(&ns.name, "kept").unwrap()["spec"], before);
}

/// `make bench-web`: wrk against alice's "My servers" page with a signed-in session, with
/// 10,000 ComputeServers in the namespace (50 of them alice's). Prints req/s, latency
/// percentiles and the web front's RSS.
#[tokio::test]
#[ignore = "a benchmark: make bench BENCH=web"]
async fn bench_my_servers_with_10000_servers() {
    install_crds();
    let ns = TestNamespace::new("web-bench");
    let total = 10_000;
    for chunk in 0..total / 1000 {
        let items: String = (chunk * 1000..(chunk + 1) * 1000)
            .map(|i| {
                let owner = if i % 200 == 0 { "alice".to_string() } else { format!("user-{}", i % 199) };
                format!(
                    "---\napiVersion: computeserver.io/v1alpha1\nkind: ComputeServer\nmetadata:\n  name: s-{i}\n  \
                     namespace: {}\n  labels: {{computeserver.io/owner: {owner}}}\nspec: {{owner: {owner}, profile: tiny}}\n",
                    ns.name
                )
            })
            .collect();
        kubectl_ok(&["create", "-f", "-", "-o", "name"], Some(&items));
    }
    let web = WebFront::start(&ns.name, "compute-server", &[]);
    let alice = Browser::new();
    alice.sign_in(&web, "alice").await;
    let (_, _, page) = alice.get(&format!("{}/", web.url)).await;
    assert_eq!(
        page.matches("href=\"/servers/s-").count(),
        50,
        "alice's 50 servers: {page}"
    );
    let rss_before = support::status_kib(web.pid(), "VmRSS:");

    let duration = std::env::var("BENCH_SECONDS").unwrap_or_else(|_| "20".into());
    let cookie = alice.cookies(&web);
    // The floor, in the same run: the front's /healthz (the same server and middleware, no
    // session and no page), then alice's page.
    let (floor, floor_report) = wrk(&format!("{}/healthz", web.url), None, &duration);
    let (page, report) = wrk(&format!("{}/", web.url), Some(&cookie), &duration);
    let rss_after = support::status_kib(web.pid(), "VmRSS:");
    let peak = support::status_kib(web.pid(), "VmHWM:");
    println!(
        "\n{}\n/healthz (the floor), 2 threads, 32 connections, {duration} s:\n{floor_report}\n\
         My servers (50 of {total} servers), 2 threads, 32 connections, {duration} s:\n{report}\n\
         web RSS: {} MiB before, {} MiB after, peak {} MiB",
        support::machine(),
        rss_before / 1024,
        rss_after / 1024,
        peak / 1024
    );
    println!("| path | requests/s | p99 |\n|---|---|---|");
    println!("| /healthz (floor) | {:.0} | {:.2} ms |", floor.0, floor.1);
    println!("| My servers | {:.0} | {:.2} ms |", page.0, page.1);
    println!(
        "\nweb: requests_per_s={:.0} p99_ms={:.2} floor_requests_per_s={:.0} peak_rss_mib={:.1} ratio={:.2}",
        page.0,
        page.1,
        floor.0,
        peak as f64 / 1024.0,
        page.0 / floor.0
    );
}

/// `wrk -t2 -c32 --latency` against `url` for `seconds`: (requests/s, p99 in ms) and the
/// report. Every answer must be a 2xx.
fn wrk(url: &str, cookie: Option<&str>, seconds: &str) -> ((f64, f64), String) {
    let mut command = std::process::Command::new("wrk");
    command.args(["-t2", "-c32", &format!("-d{seconds}s"), "--latency"]);
    if let Some(cookie) = cookie {
        command.args(["-H", &format!("Cookie: {cookie}")]);
    }
    let out = command
        .arg(url)
        .output()
        .expect("wrk (Debian's wrk; tests/support/stack.sh install adds it)");
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success() && report.contains("Requests/sec"),
        "{report}"
    );
    assert!(!report.contains("Non-2xx"), "every answer was a 2xx: {report}");
    let field = |prefix: &str| {
        report
            .lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(prefix))
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    let rate: f64 = field("Requests/sec:").parse().unwrap_or(0.0);
    let p99 = field("99%");
    let p99_ms = match p99.strip_suffix("ms") {
        Some(ms) => ms.parse().unwrap_or(f64::NAN),
        None => match p99.strip_suffix("us") {
            Some(us) => us.parse::<f64>().map_or(f64::NAN, |us| us / 1000.0),
            None => p99
                .strip_suffix('s')
                .and_then(|s| s.parse::<f64>().ok())
                .map_or(f64::NAN, |s| s * 1000.0),
        },
    };
    ((rate, p99_ms), report)
}
