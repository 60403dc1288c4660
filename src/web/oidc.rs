//! OpenID Connect against the realm: discovery, the authorization code flow with PKCE (through
//! the `openidconnect` crate), and local validation of access tokens against the realm's JWKS.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use openidconnect::core::{CoreAuthenticationFlow, CoreClient};
use openidconnect::{
    AccessTokenHash, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndSessionUrl, EndpointMaybeSet,
    EndpointNotSet, EndpointSet, IssuerUrl, LogoutRequest, Nonce, OAuth2TokenResponse, PkceCodeChallenge,
    PkceCodeVerifier, PostLogoutRedirectUrl, ProviderMetadataWithLogout, RedirectUrl, RefreshToken, Scope,
    TokenResponse,
};
use serde::Deserialize;
use tokio::sync::{Mutex, RwLock};
use tracing::{info, warn};

/// The only algorithms a token may be signed with: asymmetric ones, so that nobody without the
/// realm's private key can make one (never `none`, never HMAC with a guessable secret).
const ALGORITHMS: [Algorithm; 8] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
];

/// How often at most the JWKS is fetched again because a token names an unknown key.
const JWKS_REFETCH: Duration = Duration::from_secs(10);

/// Seconds of clock difference tolerated on `exp` and `nbf`.
const LEEWAY: u64 = 5;

type Client = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// Who a valid access token speaks for.
#[derive(Clone, Debug)]
pub struct User {
    /// `preferred_username`: the owner of the servers this user makes.
    pub name: String,
    /// Keycloak groups (the `groups` claim), without a leading `/`.
    pub groups: Vec<String>,
    /// Holds the admin realm role: sees and manages everyone's servers.
    pub admin: bool,
    /// When the token expires (seconds since the epoch).
    pub expires: u64,
}

impl User {
    /// The user as the access rule ([`crate::api::access`]) takes them.
    pub fn person(&self) -> crate::api::Person<'_> {
        crate::api::Person {
            name: &self.name,
            groups: &self.groups,
            admin: self.admin,
        }
    }
}

/// Why a token was refused. The text goes into logs and 401 answers; it holds no token.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid: {0}")]
    Invalid(String),
    #[error("the token's signing key is unknown")]
    UnknownKey,
}

/// Tokens from the token endpoint, after validation.
pub struct Tokens {
    pub access: String,
    pub refresh: Option<String>,
    pub id: Option<String>,
    pub user: User,
}

/// Why signing in or refreshing failed (logged; users see a plain message).
#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    #[error("token endpoint: {0}")]
    Token(String),
    #[error("ID token: {0}")]
    IdToken(String),
    #[error("access token: {0}")]
    Access(#[from] TokenError),
}

/// Why the realm could not be read (logged; discovery is tried again).
#[derive(Debug, thiserror::Error)]
pub enum RealmError {
    #[error("{what} URL: {source}")]
    Url {
        what: &'static str,
        #[source]
        source: openidconnect::url::ParseError,
    },
    #[error("discovery of {issuer}: {reason}")]
    Discovery { issuer: String, reason: String },
    #[error("JWKS {uri}: {source}")]
    Keys {
        uri: String,
        #[source]
        source: reqwest::Error,
    },
}

/// The realm as discovered: the OpenID Connect client and the access token verifier.
pub struct Provider {
    client: Client,
    end_session: Option<EndSessionUrl>,
    client_id: String,
    http: reqwest::Client,
    verifier: Verifier,
}

/// Validates access tokens locally against the realm's signing keys (JWKS).
pub struct Verifier {
    issuer: String,
    client_id: String,
    admin_role: String,
    jwks_uri: String,
    http: reqwest::Client,
    keys: RwLock<HashMap<String, (DecodingKey, Option<Algorithm>)>>,
    last_fetch: Mutex<Option<Instant>>,
    /// Tokens that passed every check, by their SHA-256, until they expire: a page view then
    /// costs a hash instead of a signature check. Only successes are kept.
    valid: std::sync::Mutex<HashMap<[u8; 32], User>>,
}

/// At most this many validated tokens are remembered (then the memory starts afresh).
const VALID_CACHE: usize = 10_000;

/// The claims of a Keycloak access token this front reads.
#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    aud: OneOrMany,
    azp: Option<String>,
    typ: Option<String>,
    preferred_username: Option<String>,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    realm_access: RealmAccess,
    exp: u64,
}

#[derive(Deserialize, Default)]
#[serde(untagged)]
enum OneOrMany {
    #[default]
    None,
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize, Default)]
struct RealmAccess {
    #[serde(default)]
    roles: Vec<String>,
}

/// An HTTP client for openidconnect that never follows redirects (a redirect from the token
/// endpoint could otherwise send the code or a secret elsewhere).
pub fn http_client() -> reqwest::Client {
    // reqwest is built without a TLS provider of its own: use ring, as the kube client does.
    crate::kube_client::install_crypto();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .expect("an HTTP client without extra configuration builds")
}

async fn send(
    http: reqwest::Client,
    request: openidconnect::HttpRequest,
) -> Result<openidconnect::HttpResponse, reqwest::Error> {
    let response = http.execute(request.try_into()?).await?;
    let mut builder = openidconnect::http::Response::builder().status(response.status());
    for (name, value) in response.headers() {
        builder = builder.header(name, value);
    }
    let body = response.bytes().await?.to_vec();
    Ok(builder
        .body(body)
        .expect("status and headers came from a valid response"))
}

impl Provider {
    /// Reads the realm's discovery document and JWKS.
    pub async fn discover(
        issuer: &str,
        client_id: &str,
        client_secret: Option<&str>,
        redirect_url: &str,
        admin_role: &str,
    ) -> Result<Provider, RealmError> {
        let http = http_client();
        let issuer_url = IssuerUrl::new(issuer.to_string()).map_err(|source| RealmError::Url {
            what: "issuer",
            source,
        })?;
        let metadata = ProviderMetadataWithLogout::discover_async(issuer_url, &|r| send(http.clone(), r))
            .await
            .map_err(|e| RealmError::Discovery {
                issuer: issuer.to_string(),
                reason: e.to_string(),
            })?;
        let provider = Provider::of(
            metadata,
            issuer,
            client_id,
            client_secret,
            redirect_url,
            admin_role,
            http,
        )?;
        provider.verifier.fetch_keys().await?;
        Ok(provider)
    }

    /// The realm as its discovery document describes it, without its keys yet.
    fn of(
        metadata: ProviderMetadataWithLogout,
        issuer: &str,
        client_id: &str,
        client_secret: Option<&str>,
        redirect_url: &str,
        admin_role: &str,
        http: reqwest::Client,
    ) -> Result<Provider, RealmError> {
        let end_session = metadata.additional_metadata().end_session_endpoint.clone();
        let jwks_uri = metadata.jwks_uri().url().to_string();
        let client = CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(client_id.to_string()),
            client_secret.map(|s| ClientSecret::new(s.to_string())),
        )
        .set_redirect_uri(RedirectUrl::new(redirect_url.to_string()).map_err(|source| {
            RealmError::Url {
                what: "redirect",
                source,
            }
        })?);
        let verifier = Verifier {
            issuer: issuer.to_string(),
            client_id: client_id.to_string(),
            admin_role: admin_role.to_string(),
            jwks_uri,
            http: http.clone(),
            keys: RwLock::default(),
            last_fetch: Mutex::default(),
            valid: Default::default(),
        };
        Ok(Provider {
            client,
            end_session,
            client_id: client_id.to_string(),
            http,
            verifier,
        })
    }

    /// Validates an access token (see [`Verifier::validate`]).
    pub async fn validate(&self, token: &str) -> Result<User, TokenError> {
        self.verifier.validate(token).await
    }
    /// Where to send the browser to sign in, with a fresh state, nonce and PKCE verifier.
    pub fn authorize_url(&self) -> (String, CsrfToken, Nonce, PkceCodeVerifier) {
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, state, nonce) = self
            .client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .add_scope(Scope::new("openid".into()))
            .set_pkce_challenge(challenge)
            .url();
        (url.to_string(), state, nonce, verifier)
    }

    /// Trades the authorization code for tokens; checks the ID token (signature, audience,
    /// nonce, access token hash) and the access token.
    pub async fn exchange_code(
        &self,
        code: String,
        verifier: String,
        nonce: &Nonce,
    ) -> Result<Tokens, FlowError> {
        let response = self
            .client
            .exchange_code(AuthorizationCode::new(code))
            .map_err(|e| FlowError::Token(e.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(verifier))
            .request_async(&|r| send(self.http.clone(), r))
            .await
            .map_err(|e| FlowError::Token(describe(&e)))?;
        let id_token = response
            .id_token()
            .ok_or_else(|| FlowError::IdToken("none in the answer".into()))?;
        let verifier = self.client.id_token_verifier();
        let claims = id_token
            .claims(&verifier, nonce)
            .map_err(|e| FlowError::IdToken(e.to_string()))?;
        if let Some(expected) = claims.access_token_hash() {
            let id_error = |e: &dyn std::error::Error| FlowError::IdToken(e.to_string());
            let alg = id_token.signing_alg().map_err(|e| id_error(&e))?;
            let key = id_token.signing_key(&verifier).map_err(|e| id_error(&e))?;
            let actual =
                AccessTokenHash::from_token(response.access_token(), alg, key).map_err(|e| id_error(&e))?;
            if actual != *expected {
                return Err(FlowError::IdToken("access token hash does not match".into()));
            }
        }
        let access = response.access_token().secret().clone();
        let user = self.validate(&access).await?;
        Ok(Tokens {
            access,
            refresh: response.refresh_token().map(|t| t.secret().clone()),
            id: Some(id_token.to_string()),
            user,
        })
    }

    /// A new access token for a refresh token; fails when the Keycloak session has ended.
    pub async fn refresh(&self, refresh_token: &str) -> Result<Tokens, FlowError> {
        let refresh = RefreshToken::new(refresh_token.to_string());
        let response = self
            .client
            .exchange_refresh_token(&refresh)
            .map_err(|e| FlowError::Token(e.to_string()))?
            .request_async(&|r| send(self.http.clone(), r))
            .await
            .map_err(|e| FlowError::Token(describe(&e)))?;
        let access = response.access_token().secret().clone();
        let user = self.validate(&access).await?;
        Ok(Tokens {
            access,
            refresh: response.refresh_token().map(|t| t.secret().clone()),
            id: response.id_token().map(|t| t.to_string()),
            user,
        })
    }

    /// RP-initiated logout: Keycloak's end-session URL with the ID token as hint.
    pub fn logout_url(&self, id_token: Option<&str>, after: &str) -> Option<String> {
        let endpoint = self.end_session.clone()?;
        let mut request = LogoutRequest::from(endpoint);
        if let Ok(after) = PostLogoutRedirectUrl::new(after.to_string()) {
            request = request.set_post_logout_redirect_uri(after);
        }
        match id_token.and_then(|t| t.parse::<openidconnect::core::CoreIdToken>().ok()) {
            Some(hint) => request = request.set_id_token_hint(&hint),
            None => request = request.set_client_id(ClientId::new(self.client_id.clone())),
        }
        Some(request.http_get_url().to_string())
    }
}

/// A realm in memory for tests: the discovery document of a Keycloak realm at `issuer`
/// (nothing is fetched), and `key` (ES256, key id `kid`) its one signing key.
#[cfg(test)]
impl Provider {
    pub fn in_memory(
        issuer: &str,
        client_id: &str,
        admin_role: &str,
        kid: &str,
        key: DecodingKey,
    ) -> Provider {
        let endpoint = |path: &str| format!("{issuer}/protocol/openid-connect/{path}");
        let metadata: ProviderMetadataWithLogout = serde_json::from_value(serde_json::json!({
            "issuer": issuer,
            "authorization_endpoint": endpoint("auth"),
            "token_endpoint": endpoint("token"),
            "jwks_uri": endpoint("certs"),
            "end_session_endpoint": endpoint("logout"),
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
        }))
        .expect("a discovery document");
        let redirect = "http://127.0.0.1:8080/auth/callback";
        let provider = Provider::of(
            metadata,
            issuer,
            client_id,
            None,
            redirect,
            admin_role,
            http_client(),
        )
        .expect("a provider");
        let keys = HashMap::from([(kid.to_string(), (key, Some(Algorithm::ES256)))]);
        *provider.verifier.keys.try_write().expect("a new lock") = keys;
        provider
    }
}

impl Verifier {
    async fn fetch_keys(&self) -> Result<(), RealmError> {
        let failed = |source| RealmError::Keys {
            uri: self.jwks_uri.clone(),
            source,
        };
        let set: JwkSet = self
            .http
            .get(&self.jwks_uri)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(failed)?
            .json()
            .await
            .map_err(failed)?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let signing = !matches!(
                jwk.common.public_key_use,
                Some(jsonwebtoken::jwk::PublicKeyUse::Encryption)
            );
            let alg = jwk
                .common
                .key_algorithm
                .and_then(|a| a.to_string().parse::<Algorithm>().ok());
            match (&jwk.common.key_id, signing, DecodingKey::from_jwk(jwk)) {
                (Some(kid), true, Ok(key)) => {
                    keys.insert(kid.clone(), (key, alg));
                }
                _ => continue,
            }
        }
        info!(keys = keys.len(), "loaded the realm's signing keys");
        *self.keys.write().await = keys;
        Ok(())
    }

    /// The key with this id; the JWKS is fetched again (at most every few seconds) when it is
    /// unknown, so a key rotation in Keycloak needs no restart.
    async fn key(&self, kid: &str) -> Result<(DecodingKey, Option<Algorithm>), TokenError> {
        if let Some(key) = self.keys.read().await.get(kid) {
            return Ok(key.clone());
        }
        {
            let mut last = self.last_fetch.lock().await;
            if last.is_some_and(|t| t.elapsed() < JWKS_REFETCH) {
                return Err(TokenError::UnknownKey);
            }
            *last = Some(Instant::now());
            if let Err(error) = self.fetch_keys().await {
                warn!("{error}");
            }
        }
        self.keys
            .read()
            .await
            .get(kid)
            .cloned()
            .ok_or(TokenError::UnknownKey)
    }

    /// Validates an access token locally: signature by a realm key with an allowed algorithm,
    /// issuer, audience or authorized party, expiry and not-before.
    pub async fn validate(&self, token: &str) -> Result<User, TokenError> {
        use sha2::Digest;
        let digest: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        let now = jsonwebtoken::get_current_timestamp();
        if let Some(user) = self.valid.lock().expect("token cache lock").get(&digest)
            && user.expires + LEEWAY >= now
        {
            return Ok(user.clone());
        }
        let user = self.check(token).await?;
        let mut valid = self.valid.lock().expect("token cache lock");
        if valid.len() >= VALID_CACHE {
            valid.clear();
        }
        valid.insert(digest, user.clone());
        Ok(user)
    }

    async fn check(&self, token: &str) -> Result<User, TokenError> {
        let invalid = |e: jsonwebtoken::errors::Error| match e.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
            _ => TokenError::Invalid(e.to_string()),
        };
        let header = jsonwebtoken::decode_header(token).map_err(invalid)?;
        if !ALGORITHMS.contains(&header.alg) {
            return Err(TokenError::Invalid(format!(
                "algorithm {:?} is not allowed",
                header.alg
            )));
        }
        let kid = header
            .kid
            .ok_or_else(|| TokenError::Invalid("no key id".into()))?;
        let (key, key_alg) = self.key(&kid).await?;
        if key_alg.is_some_and(|a| a != header.alg) {
            return Err(TokenError::Invalid("algorithm does not match the key".into()));
        }
        let mut validation = Validation::new(header.alg);
        validation.algorithms = vec![header.alg];
        validation.set_issuer(&[&self.issuer]);
        validation.set_required_spec_claims(&["exp", "iss"]);
        validation.validate_aud = false; // checked below: aud or azp
        validation.validate_nbf = true;
        validation.leeway = LEEWAY;
        let claims = jsonwebtoken::decode::<Claims>(token, &key, &validation)
            .map_err(invalid)?
            .claims;
        let audience = match &claims.aud {
            OneOrMany::None => false,
            OneOrMany::One(a) => *a == self.client_id,
            OneOrMany::Many(all) => all.contains(&self.client_id),
        };
        if !audience && claims.azp.as_deref() != Some(&self.client_id) {
            return Err(TokenError::Invalid(format!("not issued for {}", self.client_id)));
        }
        // Keycloak marks access tokens "Bearer"; an ID token ("ID") is no access token.
        if claims
            .typ
            .as_deref()
            .is_some_and(|t| !t.eq_ignore_ascii_case("bearer"))
        {
            return Err(TokenError::Invalid("not an access token".into()));
        }
        let name = claims
            .preferred_username
            .filter(|n| !n.is_empty())
            .ok_or_else(|| TokenError::Invalid("no preferred_username".into()))?;
        Ok(User {
            name,
            groups: claims
                .groups
                .into_iter()
                .map(|g| g.trim_start_matches('/').to_string())
                .collect(),
            admin: claims.realm_access.roles.contains(&self.admin_role),
            expires: claims.exp,
        })
    }
}

/// The token endpoint's own error text when there is one (such as "invalid_grant: Token is not
/// active"), without any token.
fn describe<E: std::error::Error>(error: &E) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::{Value, json};

    use super::*;

    const ISSUER: &str = "http://keycloak.test/realms/compute";

    /// A fresh RSA key pair (PEM) from openssl: private, public.
    fn rsa_pair() -> (Vec<u8>, Vec<u8>) {
        let run = |args: &[&str], input: Option<&[u8]>| {
            use std::io::Write;
            let mut child = std::process::Command::new("openssl")
                .args(args)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("openssl");
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.unwrap_or_default())
                .unwrap();
            child.wait_with_output().unwrap().stdout
        };
        let private = run(
            &["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
            None,
        );
        let public = run(&["pkey", "-pubout"], Some(&private));
        (private, public)
    }

    /// A verifier that trusts one key, "k1", and cannot fetch others.
    fn verifier(public: &[u8]) -> Verifier {
        let key = DecodingKey::from_rsa_pem(public).unwrap();
        Verifier {
            issuer: ISSUER.into(),
            client_id: "compute-server".into(),
            admin_role: "compute-admin".into(),
            jwks_uri: "http://127.0.0.1:9/no-jwks".into(),
            http: http_client(),
            keys: RwLock::new(HashMap::from([("k1".to_string(), (key, Some(Algorithm::RS256)))])),
            last_fetch: Mutex::new(Some(Instant::now())),
            valid: Default::default(),
        }
    }

    fn claims() -> Value {
        let now = jsonwebtoken::get_current_timestamp();
        json!({
            "iss": ISSUER, "aud": ["compute-server", "account"], "azp": "compute-server", "typ": "Bearer",
            "exp": now + 300, "iat": now, "nbf": now - 1,
            "preferred_username": "alice", "groups": ["/students"],
            "realm_access": {"roles": ["default-roles-compute"]},
        })
    }

    fn sign(private: &[u8], kid: &str, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(kid.into());
        encode(&header, claims, &EncodingKey::from_rsa_pem(private).unwrap()).unwrap()
    }

    #[tokio::test]
    async fn tokens_are_checked_claim_by_claim() {
        let (private, public) = rsa_pair();
        let v = verifier(&public);
        let user = v.validate(&sign(&private, "k1", &claims())).await.unwrap();
        assert_eq!(
            (user.name.as_str(), user.groups.as_slice(), user.admin),
            ("alice", &["students".to_string()][..], false)
        );

        let with = |change: &dyn Fn(&mut Value)| {
            let mut c = claims();
            change(&mut c);
            sign(&private, "k1", &c)
        };
        let admin = with(&|c| c["realm_access"]["roles"] = json!(["compute-admin"]));
        assert!(v.validate(&admin).await.unwrap().admin);
        // aud alone or azp alone is enough.
        let aud_only = with(&|c| c["azp"] = json!("other"));
        assert!(v.validate(&aud_only).await.is_ok());
        let azp_only = with(&|c| c["aud"] = json!("account"));
        assert!(v.validate(&azp_only).await.is_ok());

        let now = jsonwebtoken::get_current_timestamp();
        // A token validated once is remembered, but not past its expiry.
        v.valid.lock().unwrap().clear();
        let good = sign(&private, "k1", &claims());
        assert!(v.validate(&good).await.is_ok());
        assert_eq!(v.valid.lock().unwrap().len(), 1);
        for user in v.valid.lock().unwrap().values_mut() {
            user.expires = now - LEEWAY - 1;
        }
        let again = v.validate(&good).await;
        assert!(again.is_ok(), "checked afresh (the token itself is still valid)");
        assert!(v.valid.lock().unwrap().values().all(|u| u.expires > now));
        for (what, token, expect) in [
            (
                "wrong issuer",
                with(&|c| c["iss"] = json!("http://evil.test/realms/compute")),
                "InvalidIssuer",
            ),
            (
                "neither aud nor azp",
                with(&|c| {
                    c["aud"] = json!(["account"]);
                    c["azp"] = json!("other")
                }),
                "not issued for compute-server",
            ),
            ("expired", with(&|c| c["exp"] = json!(now - 60)), "expired"),
            (
                "not yet valid",
                with(&|c| c["nbf"] = json!(now + 60)),
                "ImmatureSignature",
            ),
            (
                "an ID token",
                with(&|c| c["typ"] = json!("ID")),
                "not an access token",
            ),
            (
                "no username",
                with(&|c| c["preferred_username"] = json!("")),
                "no preferred_username",
            ),
            (
                "no exp",
                with(&|c| c.as_object_mut().unwrap().remove("exp").map(drop).unwrap()),
                "not valid",
            ),
            (
                "unknown key id",
                sign(&private, "k2", &claims()),
                "signing key is unknown",
            ),
        ] {
            let error = v.validate(&token).await.expect_err(what).to_string();
            assert!(error.contains(expect), "{what}: {error}");
        }
    }

    #[tokio::test]
    async fn forged_tokens_are_refused() {
        let (private, public) = rsa_pair();
        let (other, _) = rsa_pair();
        let v = verifier(&public);
        let b64 = |v: &Value| {
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
        };
        let good = sign(&private, "k1", &claims());
        let mut admin = claims();
        admin["realm_access"]["roles"] = json!(["compute-admin"]);
        let signature = good.rsplit('.').next().unwrap();
        let tampered = format!(
            "{}.{}.{signature}",
            b64(&json!({"alg": "RS256", "kid": "k1"})),
            b64(&admin)
        );
        let none = format!(
            "{}.{}.",
            b64(&json!({"alg": "none", "kid": "k1"})),
            b64(&claims())
        );
        let mut hs_header = Header::new(Algorithm::HS256);
        hs_header.kid = Some("k1".into());
        let hs = encode(&hs_header, &claims(), &EncodingKey::from_secret(&public)).unwrap();
        for (what, token) in [
            ("another key", sign(&other, "k1", &claims())),
            ("tampered payload", tampered),
            ("alg none", none),
            ("HS256 with the public key as secret", hs),
        ] {
            assert!(v.validate(&token).await.is_err(), "{what} accepted");
        }
    }
}
