//! The local realm as the web front and the JSON API will rely on it, against real Keycloak.

mod support;

use base64::Engine;
use serde_json::Value;
use support::Stack;

/// Signs in with the password grant and returns the access token's claims.
async fn token_claims(user: &str, password: &str) -> Result<Value, String> {
    let url = format!("{}/protocol/openid-connect/token", Stack::get().keycloak_issuer());
    let response = reqwest::Client::new()
        .post(url)
        .form(&[
            ("grant_type", "password"),
            ("client_id", "compute-server"),
            ("username", user),
            ("password", password),
            ("scope", "openid"),
        ])
        .send()
        .await
        .expect("Keycloak answers");
    let status = response.status();
    let body: Value = response.json().await.expect("JSON from Keycloak");
    if !status.is_success() {
        return Err(format!("{status}: {body}"));
    }
    let token = body["access_token"].as_str().expect("an access token");
    let payload = token.split('.').nth(1).expect("a JWT");
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url");
    Ok(serde_json::from_slice(&json).expect("JSON claims"))
}

fn strings(value: &Value) -> Vec<&str> {
    match value {
        Value::String(s) => vec![s.as_str()],
        Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    }
}

#[tokio::test]
async fn alice_gets_a_token_with_username_groups_and_audience() {
    let claims = token_claims("alice", "alice").await.expect("alice signs in");
    assert_eq!(claims["preferred_username"], "alice");
    assert_eq!(strings(&claims["groups"]), ["students"], "{claims}");
    assert!(
        strings(&claims["aud"]).contains(&"compute-server"),
        "audience: {}",
        claims["aud"]
    );
    assert_eq!(claims["iss"], Stack::get().keycloak_issuer());
    assert_eq!(claims["azp"], "compute-server");
    let roles = strings(&claims["realm_access"]["roles"]);
    assert!(!roles.contains(&"compute-admin"), "alice is no admin: {roles:?}");
}

#[tokio::test]
async fn the_demo_users_have_their_groups_and_roles() {
    let carol = token_claims("carol", "carol").await.expect("carol signs in");
    assert_eq!(strings(&carol["groups"]), ["staff"]);
    let bob = token_claims("bob", "bob").await.expect("bob signs in");
    assert_eq!(strings(&bob["groups"]), ["students"]);
    let ops = token_claims("ops", "ops").await.expect("ops signs in");
    assert_eq!(strings(&ops["groups"]), ["compute-admins"]);
    assert!(
        strings(&ops["realm_access"]["roles"]).contains(&"compute-admin"),
        "{ops}"
    );
}

#[tokio::test]
async fn a_wrong_password_gets_no_token() {
    let error = token_claims("alice", "bob")
        .await
        .expect_err("wrong password refused");
    assert!(error.contains("invalid_grant"), "{error}");
}

#[tokio::test]
async fn the_login_page_asks_for_username_and_password() {
    let issuer = Stack::get().keycloak_issuer();
    let url = format!(
        "{issuer}/protocol/openid-connect/auth?client_id=compute-server&response_type=code&scope=openid\
         &redirect_uri=http%3A%2F%2F127.0.0.1%3A8080%2Fauth%2Fcallback&state=s&nonce=n\
         &code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256"
    );
    let page = reqwest::get(url).await.unwrap();
    assert!(page.status().is_success(), "{}", page.status());
    let html = page.text().await.unwrap();
    assert!(
        html.contains("kc-form-login") && html.contains("name=\"password\""),
        "no login form"
    );
}
