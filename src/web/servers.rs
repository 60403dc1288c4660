//! What a user may do with servers, shared by the pages and the JSON API: see their own (admins:
//! all), request one within a profile's bounds and limits, stop, start and delete. The owner
//! always comes from the verified token; someone else's server is "not found".

use std::sync::Arc;

use base64::Engine;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Api, ResourceExt};
use serde::{Deserialize, Serialize};
use tracing::{error, info};

use super::cache::Cache;
use super::limit::{self, Turn};
use super::oidc::User;
use crate::api::access;
use crate::api::{
    ComputeProfile, ComputeServer, ComputeServerSpec, EnvVar, OWNER_LABEL, Resources, RestoreFrom,
    owner_label, size,
};

/// Why a request was refused, in words for the person who made it.
#[derive(Debug)]
pub enum Problem {
    /// No valid token or session (401).
    Unauthorized(String),
    /// The request itself is malformed (400).
    BadRequest(String),
    /// Not allowed for this user (403).
    Forbidden(String),
    /// No such server for this user (404): also for someone else's server.
    NotFound(String),
    /// A server of that name exists already (409).
    Exists(String),
    /// A per-user limit of the profile is reached (409).
    Limit(String),
    /// Not possible for this server as it is (409): not running, or its profile forbids it.
    Conflict(String),
    /// Fields with bad values, each with its message (422).
    Invalid(Vec<FieldError>),
    /// Not ready to serve yet (503).
    Unavailable(String),
    /// The Kubernetes API failed; details only in the log (500).
    Internal,
}

/// A field's name (as in the JSON API and the form) and what is wrong with it.
#[derive(Debug, Clone, Serialize)]
pub struct FieldError {
    pub field: &'static str,
    pub message: String,
}

impl Problem {
    /// HTTP status and machine-readable code.
    pub fn status(&self) -> (u16, &'static str) {
        match self {
            Problem::BadRequest(_) => (400, "bad_request"),
            Problem::Unauthorized(_) => (401, "unauthorized"),
            Problem::Forbidden(_) => (403, "forbidden"),
            Problem::NotFound(_) => (404, "not_found"),
            Problem::Exists(_) => (409, "already_exists"),
            Problem::Limit(_) => (409, "limit_reached"),
            Problem::Conflict(_) => (409, "conflict"),
            Problem::Invalid(_) => (422, "invalid"),
            Problem::Unavailable(_) => (503, "unavailable"),
            Problem::Internal => (500, "internal"),
        }
    }

    /// The message for people.
    pub fn message(&self) -> String {
        match self {
            Problem::BadRequest(m)
            | Problem::Unauthorized(m)
            | Problem::Forbidden(m)
            | Problem::Exists(m)
            | Problem::Limit(m)
            | Problem::Conflict(m)
            | Problem::Unavailable(m) => m.clone(),
            Problem::NotFound(name) => format!("you have no server named \"{name}\""),
            Problem::Invalid(errors) => errors
                .iter()
                .map(|e| format!("{}: {}", e.field, e.message))
                .collect::<Vec<_>>()
                .join("; "),
            Problem::Internal => "something went wrong on our side; try again, or ask the admins".into(),
        }
    }
}

pub(super) fn internal(what: &str, e: impl std::fmt::Display) -> Problem {
    error!("{what}: {e}");
    Problem::Internal
}

/// A request for a new server: the JSON API's body, and the form's fields.
#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NewServer {
    /// Optional; made from the profile's name when empty.
    #[serde(default)]
    pub name: Option<String>,
    pub profile: String,
    #[serde(default)]
    pub resources: NewResources,
    #[serde(default)]
    pub ssh_authorized_keys: Vec<String>,
    #[serde(default)]
    pub env: Vec<EnvVar>,
    /// A snapshot of the caller's to start from (a clone, or an earlier state).
    #[serde(default)]
    pub restore_from: Option<RestoreFrom>,
}

/// Sizes as given: numbers or quantity strings, unset for the profile's default.
#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
pub struct NewResources {
    #[serde(default, deserialize_with = "quantity_text")]
    pub cpu: Option<String>,
    #[serde(default, deserialize_with = "quantity_text")]
    pub memory: Option<String>,
    #[serde(default)]
    pub gpus: Option<i32>,
}

fn quantity_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumOrText {
        Num(serde_json::Number),
        Text(String),
    }
    Ok(match Option::<NumOrText>::deserialize(d)? {
        None => None,
        Some(NumOrText::Num(n)) => Some(n.to_string()),
        Some(NumOrText::Text(t)) if t.trim().is_empty() => None,
        Some(NumOrText::Text(t)) => Some(t.trim().to_string()),
    })
}

/// Whether `user` may use `profile`: everyone when it names no groups; admins always.
pub fn may_use(user: &User, profile: &ComputeProfile) -> bool {
    let allowed = &profile.spec.allowed_groups;
    user.admin
        || allowed.is_empty()
        || allowed
            .iter()
            .any(|g| user.groups.iter().any(|mine| mine == g.trim_start_matches('/')))
}

/// The profiles `user` may use.
pub fn profiles_for(cache: &Cache, user: &User) -> Vec<Arc<ComputeProfile>> {
    cache
        .profiles()
        .into_iter()
        .filter(|p| may_use(user, p))
        .collect()
}

/// The server `name` if `user` may see it (theirs, shared with them, or any for admins); else
/// "not found".
pub fn visible(cache: &Cache, user: &User, name: &str) -> Result<Arc<ComputeServer>, Problem> {
    reach(cache, user, name, access::Action::View)
}

/// The server `name` if `user` may do `action` to it ([`access::may`]): "not found" when they
/// may not even see it, "not allowed" with what their role is when they see it.
pub fn reach(
    cache: &Cache,
    user: &User,
    name: &str,
    action: access::Action,
) -> Result<Arc<ComputeServer>, Problem> {
    let server = cache
        .server(name)
        .ok_or_else(|| Problem::NotFound(name.to_string()))?;
    match access::access(&server, &user.person()) {
        None => Err(Problem::NotFound(name.to_string())),
        Some(held) if held.allows(action) => Ok(server),
        Some(held) => Err(Problem::Forbidden(format!(
            "{name} is {}'s and shared with you to {}; {}",
            server.spec.owner,
            held.as_str(),
            match action {
                access::Action::Use => "its terminal, SSH, start, stop and keep running need the role use",
                access::Action::Share => "only its owner or a sharee with role admin may share it",
                _ => "only its owner or a compute-server admin may delete, resize, move or snapshot it",
            }
        ))),
    }
}

/// The servers shared with `user` (not their own).
pub fn shared_with(cache: &Cache, user: &User) -> Vec<Arc<ComputeServer>> {
    let person = user.person();
    cache
        .all()
        .into_iter()
        .filter(|s| matches!(access::access(s, &person), Some(access::Access::Shared(_))))
        .collect()
}

/// Sets whom server `name` is shared with to `shares`, if `user` may ([`access::check_shares`]).
/// The change is made only if the server is still the one checked (its owner and its list).
pub async fn share(
    api: &Api<ComputeServer>,
    cache: &Cache,
    user: &User,
    name: &str,
    shares: Vec<access::Share>,
) -> Result<ComputeServer, Problem> {
    let server = reach(cache, user, name, access::Action::View)?;
    let shares: Vec<access::Share> = shares.into_iter().map(access::Share::normalized).collect();
    access::check_shares(&server, &user.person(), &shares).map_err(|refusal| match refusal {
        access::ShareRefusal::NotAllowed { .. } | access::ShareRefusal::AdminEntry(_) => {
            Problem::Forbidden(refusal.to_string())
        }
        _ => Problem::Invalid(vec![FieldError {
            field: "sharedWith",
            message: refusal.to_string(),
        }]),
    })?;
    let mut ops = vec![serde_json::json!({"op": "test", "path": "/spec/owner", "value": server.spec.owner})];
    if !server.spec.shared_with.is_empty() {
        // Changed by someone else since it was read: refused, not overwritten.
        ops.push(
            serde_json::json!({"op": "test", "path": "/spec/sharedWith", "value": server.spec.shared_with}),
        );
    }
    ops.push(serde_json::json!({"op": "add", "path": "/spec/sharedWith", "value": shares}));
    let patch: json_patch::Patch = serde_json::from_value(ops.into()).expect("a valid JSON patch");
    let changed = api
        .patch(name, &PatchParams::default(), &Patch::Json::<()>(patch))
        .await
        .map_err(|e| change_failed(name, e))?;
    let who: Vec<String> = changed
        .spec
        .shared_with
        .iter()
        .map(|s| format!("{} ({})", s.who(), s.role.as_str()))
        .collect();
    info!(target: "audit", event = "share", user = %user.name, server = %name,
          owner = %server.spec.owner, shared_with = %who.join(", "), "shared");
    Ok(changed)
}

/// A certificate for a person's own SSH key ([`super::ssh::for_person`]), as the JSON API and
/// the page give it.
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct PersonCertificate {
    /// One line, as in a `-cert.pub` file.
    pub certificate: String,
    /// Where OpenSSH finds it by itself: next to the key, as `id_ed25519-cert.pub`.
    pub file_name: String,
    /// Until when it is good (RFC 3339).
    pub valid_before: String,
    /// The servers it logs in to (theirs, and those shared with them to use), as NAME.
    pub servers: Vec<String>,
}

/// Signs `user`'s public key `line` for the servers they may log in to: their own and those
/// shared with them with the role `use` or `admin`.
pub fn certificate_for(
    cache: &Cache,
    config: Option<&super::ssh::Config>,
    user: &User,
    line: &str,
) -> Result<PersonCertificate, Problem> {
    let config = config.ok_or_else(|| {
        Problem::Conflict(
            "this installation signs no SSH certificates: the web front has no user CA (--user-ca-key)"
                .into(),
        )
    })?;
    let invalid = |message: String| {
        Problem::Invalid(vec![FieldError {
            field: "publicKey",
            message,
        }])
    };
    let line = line.trim();
    if !is_ssh_key(line) {
        return Err(invalid(
            "must be one SSH public key line, such as \"ssh-ed25519 AAAAC3Nza... bob@laptop\" (the contents of ~/.ssh/id_ed25519.pub)".into(),
        ));
    }
    let key = russh::keys::PublicKey::from_openssh(line)
        .map_err(|e| invalid(format!("not a key this front can sign: {e}")))?;
    let person = user.person();
    let servers: Vec<Arc<ComputeServer>> = cache
        .all()
        .into_iter()
        .filter(|s| match access::access(s, &person) {
            Some(access::Access::Owner) => true,
            Some(access::Access::Shared(role)) => role >= access::Role::Use,
            _ => false,
        })
        .take(255)
        .collect();
    let principals: Vec<String> = servers
        .iter()
        .map(|s| crate::ssh_ca::server_principal(s))
        .collect();
    let now = jiff::Timestamp::now();
    let cert = super::ssh::for_person(
        &config.ca,
        &key,
        &user.name,
        &user.groups,
        &principals,
        now.as_second().max(0) as u64,
    )
    .map_err(|e| internal("sign a certificate", e))?;
    let file_name = match key.algorithm() {
        russh::keys::Algorithm::Ed25519 => "id_ed25519-cert.pub",
        russh::keys::Algorithm::Rsa { .. } => "id_rsa-cert.pub",
        russh::keys::Algorithm::Ecdsa { .. } => "id_ecdsa-cert.pub",
        russh::keys::Algorithm::SkEd25519 => "id_ed25519_sk-cert.pub",
        russh::keys::Algorithm::SkEcdsaSha2NistP256 => "id_ecdsa_sk-cert.pub",
        _ => "id-cert.pub",
    };
    let valid_before = now + super::ssh::PERSON_VALIDITY;
    info!(target: "audit", event = "certificate", user = %user.name,
          key = %key.fingerprint(russh::keys::HashAlg::Sha256), servers = principals.len(), "signed");
    Ok(PersonCertificate {
        certificate: cert
            .to_openssh()
            .map_err(|e| internal("write a certificate", e))?,
        file_name: file_name.into(),
        valid_before: jiff::Timestamp::from_second(valid_before.as_second())
            .unwrap_or(valid_before)
            .to_string(),
        servers: servers.iter().map(|s| s.name_any()).collect(),
    })
}

/// The servers `user` sees: their own, or (admins) everyone's or one owner's.
pub fn list(cache: &Cache, user: &User, owner: Option<&str>) -> Result<Vec<Arc<ComputeServer>>, Problem> {
    match owner.filter(|o| !o.is_empty()) {
        Some(o) if o == user.name => Ok(cache.owned_by(o)),
        Some(o) if user.admin => Ok(cache.owned_by(o)),
        Some(_) => Err(Problem::Forbidden(
            "only admins may list other people's servers".into(),
        )),
        None if user.admin => Ok(cache.all()),
        None => Ok(cache.owned_by(&user.name)),
    }
}

fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
}

/// Whether `line` is one SSH public key as in an authorized_keys file, without options.
pub fn is_ssh_key(line: &str) -> bool {
    const TYPES: [&str; 6] = [
        "ssh-ed25519",
        "ssh-rsa",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
    ];
    if line.contains(['\n', '\r']) {
        return false;
    }
    let mut parts = line.splitn(3, ' ');
    let (Some(kind), Some(data)) = (parts.next(), parts.next()) else {
        return false;
    };
    // The key's own first field repeats its type: a pasted key of another type is caught too.
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(data)
        .unwrap_or_default();
    TYPES.contains(&kind)
        && data.starts_with("AAAA")
        && decoded.len() > 4 + kind.len()
        && decoded[4..4 + kind.len()] == *kind.as_bytes()
}

/// The exact amount a size stands for, or the field error the API server would give too.
fn exact_size(field: &'static str, text: &str, errors: &mut Vec<FieldError>) -> Option<i64> {
    let quantity = Quantity(text.to_string());
    let exact = match field {
        "cpu" => size::nano_cpus(&quantity),
        _ => size::memory_bytes(&quantity),
    };
    exact
        .map_err(|error| {
            let mut message = error.rule();
            // "0.5" or "512" in the memory field most likely meant GiB or MiB, not bytes.
            let bare_number = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit() || b == b'.');
            if field == "memory" && bare_number && matches!(error, size::SizeError::TooSmall { .. }) {
                message.push_str(&format!(
                    "; a number alone counts bytes: write {text}Gi or {text}Mi"
                ));
            }
            errors.push(FieldError { field, message })
        })
        .ok()
}

/// Checks a request against the profile and builds the server; every bad field is reported.
pub fn build(
    user: &User,
    new: NewServer,
    profiles: &[Arc<ComputeProfile>],
) -> Result<ComputeServer, Problem> {
    let mut errors = Vec::new();
    let profile = profiles.iter().find(|p| p.name_any() == new.profile);
    let Some(profile) = profile else {
        let names: Vec<String> = profiles.iter().map(|p| p.name_any()).collect();
        let message = if new.profile.is_empty() {
            "choose a profile".to_string()
        } else if names.is_empty() {
            format!(
                "there is no profile \"{}\" you may use, and no other",
                new.profile
            )
        } else {
            format!(
                "there is no profile \"{}\" you may use; choose one of: {}",
                new.profile,
                names.join(", ")
            )
        };
        return Err(Problem::Invalid(vec![FieldError {
            field: "profile",
            message,
        }]));
    };
    let name = match new.name.as_deref().map(str::trim) {
        Some(n) if !n.is_empty() => n.to_string(),
        _ => format!("{}-{}", profile.name_any(), random_suffix()),
    };
    if !is_dns_label(&name) {
        errors.push(FieldError {
            field: "name",
            message:
                "use 1 to 63 lowercase letters, digits and dashes, starting with a letter, such as \"dev-1\""
                    .into(),
        });
    }

    let max = &profile.spec.max_resources;
    let mut check = |field: &'static str, text: Option<&str>, limit: &Option<Quantity>| {
        let text = text?;
        let asked = exact_size(field, text, &mut errors)?;
        let limit_exact = |limit: &Quantity| match field {
            "cpu" => size::node_nano_cpus(limit),
            _ => size::node_memory_bytes(limit),
        };
        if let Some(limit) = limit
            && let Ok(limit_exact) = limit_exact(limit)
            && asked > limit_exact
        {
            errors.push(FieldError {
                field,
                message: format!(
                    "at most {} for profile {}; you asked for {text}",
                    limit.0,
                    profile.name_any()
                ),
            });
            return None;
        }
        Some(Quantity(text.to_string()))
    };
    let cpu = check("cpu", new.resources.cpu.as_deref(), &max.cpu);
    let memory = check("memory", new.resources.memory.as_deref(), &max.memory);
    let gpus = new.resources.gpus;
    if let Some(g) = gpus {
        let limit = max.gpus.unwrap_or(0);
        if g < 0 || g > limit {
            errors.push(FieldError {
                field: "gpus",
                message: format!("profile {} allows 0 to {limit} GPUs", profile.name_any()),
            });
        }
    }

    let keys: Vec<String> = new
        .ssh_authorized_keys
        .iter()
        .map(|k| k.trim().to_string())
        .filter(|k| !k.is_empty())
        .collect();
    if let Some(bad) = keys.iter().position(|k| !is_ssh_key(k)) {
        errors.push(FieldError {
            field: "sshAuthorizedKeys",
            message: format!(
                "key {} is not an SSH public key line; paste the contents of ~/.ssh/id_ed25519.pub, such as \"ssh-ed25519 AAAAC3Nza... you@laptop\"",
                bad + 1
            ),
        });
    }
    if keys.len() > 32 {
        errors.push(FieldError {
            field: "sshAuthorizedKeys",
            message: "at most 32 keys".into(),
        });
    }
    // The API server's limits (the CRD's schema), said here in the form's words.
    if new.env.len() > 64 {
        errors.push(FieldError {
            field: "env",
            message: "at most 64 variables".into(),
        });
    }
    if let Some(long) = new.env.iter().find(|v| v.value.chars().count() > 32768) {
        errors.push(FieldError {
            field: "env",
            message: format!(
                "the value of {} is longer than 32768 characters",
                long.name.chars().take(64).collect::<String>()
            ),
        });
    }
    for (i, var) in new.env.iter().enumerate() {
        let valid = !var.name.is_empty()
            && var.name.len() <= 256
            && var.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            && !var.name.starts_with(|c: char| c.is_ascii_digit());
        if !valid || new.env[..i].iter().any(|e| e.name == var.name) {
            errors.push(FieldError {
                field: "env",
                message: format!(
                    "\"{}\" must be a unique name of letters, digits and underscores, such as MY_VAR",
                    var.name
                ),
            });
        }
    }
    if !errors.is_empty() {
        return Err(Problem::Invalid(errors));
    }

    let mut server = ComputeServer::new(
        &name,
        ComputeServerSpec {
            owner: user.name.clone(),
            owner_groups: user.groups.clone(),
            profile: Some(profile.name_any()),
            image: None,
            command: vec![],
            env: new.env,
            resources: Resources { cpu, memory, gpus },
            ssh_authorized_keys: keys,
            ports: vec![],
            running: true,
            node_selector: Default::default(),
            keep_running_until: None,
            restore_from: new.restore_from,
            shared_with: vec![],
        },
    );
    server
        .labels_mut()
        .insert(OWNER_LABEL.into(), owner_label(&user.name));
    Ok(server)
}

fn random_suffix() -> String {
    let token = openidconnect::CsrfToken::new_random();
    token
        .secret()
        .bytes()
        .filter(|b| b.is_ascii_alphanumeric())
        .map(|b| (b as char).to_ascii_lowercase())
        .take(5)
        .collect()
}

/// Creates a server for `user` after checking the profile's per-user limit against the API (not
/// the cache), during the user's turn ([`super::limit`]): concurrent requests, on any replica,
/// cannot slip under it together.
pub async fn create(
    api: &Api<ComputeServer>,
    leases: &Api<Lease>,
    cache: &Cache,
    user: &User,
    new: NewServer,
) -> Result<ComputeServer, Problem> {
    let profiles = profiles_for(cache, user);
    let server = build(user, new, &profiles)?;
    let profile_name = server.spec.profile.clone().unwrap_or_default();
    let limit = profiles
        .iter()
        .find(|p| p.name_any() == profile_name)
        .and_then(|p| p.spec.max_servers_per_user);
    let created = match limit {
        None => api.create(&PostParams::default(), &server).await,
        Some(limit) => {
            let turn = Turn::take(leases.clone(), &user.name, std::time::Duration::from_secs(10))
                .await
                .map_err(|error| match error {
                    limit::Error::Busy => Problem::Unavailable(
                        "other requests of yours are still being handled; try again in a moment".into(),
                    ),
                    limit::Error::Kube(e) => internal("take the user's turn", e),
                })?;
            let result = create_within(api, &turn, user, &server, limit).await;
            turn.release().await;
            result?
        }
    };
    match created {
        Ok(created) => {
            info!(user = %user.name, server = %created.name_any(), "server requested");
            // The next page (or API call) reads the cache: let the watch catch up first.
            if !cache
                .wait_for(&created.name_any(), std::time::Duration::from_secs(5))
                .await
            {
                tracing::warn!(server = %created.name_any(), "the watch has not shown a new server after 5 s");
            }
            Ok(created)
        }
        Err(kube::Error::Api(status)) if status.code == 409 => Err(Problem::Exists(format!(
            "a server named \"{}\" exists already; choose another name",
            server.name_any()
        ))),
        Err(kube::Error::Api(status)) if status.code == 422 || status.code == 403 => {
            // The API server's own validation (CEL rules, admission policy): its message is for people.
            Err(Problem::Invalid(vec![FieldError {
                field: "server",
                message: status.message,
            }]))
        }
        Err(e) => Err(internal("create server", e)),
    }
}

/// Counts `user`'s servers of the profile of `server` and creates it if that is under `limit`;
/// called during the user's turn.
async fn create_within(
    api: &Api<ComputeServer>,
    turn: &Turn,
    user: &User,
    server: &ComputeServer,
    limit: i32,
) -> Result<Result<ComputeServer, kube::Error>, Problem> {
    let profile = server.spec.profile.as_deref();
    let selector = format!("{OWNER_LABEL}={}", owner_label(&user.name));
    let same_profile = api
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| internal("list servers", e))?
        .items
        .iter()
        .filter(|s| s.spec.owner == user.name && s.spec.profile.as_deref() == profile)
        .count();
    if same_profile >= usize::try_from(limit).unwrap_or(0) {
        return Err(Problem::Limit(format!(
            "you have {same_profile} servers of profile {} already, and its limit (maxServersPerUser) is {limit}; delete one first",
            profile.unwrap_or_default()
        )));
    }
    if !turn.held() {
        // The API was so slow that another request may have taken the turn over.
        return Err(Problem::Unavailable(
            "the cluster is answering slowly; try again in a moment".into(),
        ));
    }
    Ok(api.create(&PostParams::default(), server).await)
}

/// What a user can do to an existing server.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Action {
    Stop,
    Start,
    Delete,
}

/// Stops, starts or deletes a server `user` may see. The change is made only if the object is
/// still the one that was checked (its owner for stop/start, its uid for delete).
pub async fn act(
    api: &Api<ComputeServer>,
    cache: &Cache,
    user: &User,
    name: &str,
    action: Action,
) -> Result<Option<ComputeServer>, Problem> {
    let need = match action {
        Action::Delete => access::Action::Own,
        Action::Stop | Action::Start => access::Action::Use,
    };
    let server = reach(cache, user, name, need)?;
    let result = match action {
        Action::Stop | Action::Start => {
            let set = |running: bool| {
                let patch = serde_json::json!([
                    {"op": "test", "path": "/spec/owner", "value": server.spec.owner},
                    {"op": "replace", "path": "/spec/running", "value": running},
                ]);
                let patch: json_patch::Patch = serde_json::from_value(patch).expect("a valid JSON patch");
                async move {
                    api.patch(name, &PatchParams::default(), &Patch::Json::<()>(patch))
                        .await
                }
            };
            async {
                // A server whose program ended still has running: true; the agent starts it
                // again once the server changes, so Start stops it, then starts it.
                if action == Action::Start && server.spec.running {
                    set(false).await?;
                }
                set(action == Action::Start).await.map(Some)
            }
            .await
        }
        Action::Delete => {
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: server.uid(),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            api.delete(name, &params).await.map(|_| None)
        }
    };
    let changed = result.map_err(|e| change_failed(name, e))?;
    info!(user = %user.name, server = %name, ?action, "server changed");
    if action == Action::Start {
        super::lifecycle::touch(api, name, format!("started by {}", user.name)).await;
    }
    Ok(changed)
}

/// What a failed change of server `name` means for its user.
pub fn change_failed(name: &str, error: kube::Error) -> Problem {
    match error {
        // Gone, or replaced by another object of the same name since the check.
        kube::Error::Api(status) if [404, 409, 422].contains(&status.code) => {
            Problem::NotFound(name.to_string())
        }
        e => internal("change server", e),
    }
}

/// A server as the JSON API shows it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerView {
    pub name: String,
    pub owner: String,
    pub profile: Option<String>,
    pub resources: Resources,
    pub running: bool,
    pub phase: String,
    pub node: Option<String>,
    pub message: Option<String>,
    /// While it waits for a node: its place in line (1 = next); the message says for what.
    pub queue_position: Option<u32>,
    pub ssh: Option<String>,
    pub created: Option<String>,
    pub ssh_authorized_keys: Vec<String>,
    /// When it stops by itself (idle, or its lifetime ends) unless kept running.
    pub stops_at: Option<String>,
    /// Why it stops then.
    pub stop_reason: Option<String>,
    /// "stops at 14:32 UTC unless kept running: …", while that stop is near.
    pub warning: Option<String>,
    /// What Keep running (extend) set.
    pub keep_running_until: Option<String>,
    /// Whom it is shared with, and in what role.
    pub shared_with: Vec<access::Share>,
    /// What the caller holds: owner, compute-server admin, admin, use or view.
    pub access: String,
    pub status: Option<crate::api::ComputeServerStatus>,
}

/// Whether the server runs as far as its owner can tell: asked to run, and not stopped or
/// failed (a program that ended leaves `spec.running` true). The page offers Stop when it
/// runs, Start when not.
pub fn runs(server: &ComputeServer) -> bool {
    use crate::api::Phase;
    let phase = server.status.as_ref().and_then(|s| s.phase);
    server.spec.running && !matches!(phase, Some(Phase::Stopped | Phase::Failed))
}

/// The phase to show: the status's, or Pending before anything wrote one.
pub fn phase(server: &ComputeServer) -> String {
    if server.metadata.deletion_timestamp.is_some() {
        return "Terminating".into();
    }
    server
        .status
        .as_ref()
        .and_then(|s| s.phase)
        .map(|p| format!("{p:?}"))
        .unwrap_or_else(|| "Pending".into())
}

/// The command that reaches the server over SSH: through the bastion when there is one, else
/// straight to the published port.
pub fn ssh_command(server: &ComputeServer, bastion: Option<&str>, user: &str) -> Option<String> {
    let status = server.status.as_ref()?;
    if status.phase != Some(crate::api::Phase::Running) {
        return None;
    }
    match bastion {
        Some(bastion) => Some(format!("ssh -J {user}@{bastion} root@{}", server.name_any())),
        None => {
            let ep = status.endpoints.iter().find(|e| e.name == "ssh")?;
            Some(format!("ssh -p {} root@{}", ep.port, ep.host))
        }
    }
}

impl ServerView {
    /// The view of `server` for `caller`, whose profile's lifecycle is `rules`, at `now`. A
    /// sharee sees no SSH keys, and an SSH command of their own where their role allows one.
    pub fn new(
        server: &ComputeServer,
        caller: &User,
        rules: &crate::api::lifecycle::Rules,
        bastion: Option<&str>,
        now: jiff::Timestamp,
    ) -> ServerView {
        let stop = super::lifecycle::stop(server, rules, now);
        let held = access::access(server, &caller.person());
        let owns = held.is_some_and(|a| a.allows(access::Action::Own));
        let uses = held.is_some_and(|a| a.allows(access::Action::Use));
        ServerView {
            name: server.name_any(),
            owner: server.spec.owner.clone(),
            profile: server.spec.profile.clone(),
            resources: server.spec.resources.clone(),
            running: server.spec.running,
            phase: phase(server),
            node: server.status.as_ref().and_then(|s| s.node.clone()),
            message: server.status.as_ref().and_then(|s| s.message.clone()),
            queue_position: server
                .status
                .as_ref()
                .filter(|_| server.labels().get(crate::api::NODE_LABEL).is_none())
                .and_then(|s| s.queue_position),
            ssh: ssh_command(server, bastion, &caller.name).filter(|_| uses),
            created: server
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.to_string()),
            ssh_authorized_keys: match owns {
                true => server.spec.ssh_authorized_keys.clone(),
                false => vec![],
            },
            stops_at: stop.as_ref().map(|s| s.at.to_string()),
            stop_reason: stop.as_ref().map(|s| s.reason.clone()),
            warning: stop.and_then(|s| s.warning),
            keep_running_until: server.spec.keep_running_until.as_ref().map(|t| t.0.to_string()),
            shared_with: server.spec.shared_with.clone(),
            access: held.map_or("none", |a| a.as_str()).to_string(),
            status: server.status.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn alice() -> User {
        User {
            name: "alice".into(),
            groups: vec!["students".into()],
            admin: false,
            expires: 0,
        }
    }

    fn profile(yaml: &str) -> Arc<ComputeProfile> {
        Arc::new(serde_yaml::from_str(yaml).unwrap())
    }

    pub(super) fn debian() -> Arc<ComputeProfile> {
        profile(
            "apiVersion: computeserver.io/v1alpha1\nkind: ComputeProfile\nmetadata: {name: debian}\n\
             spec: {image: d, defaultResources: {cpu: '1', memory: 512Mi}, maxResources: {cpu: '2', memory: 4Gi}}",
        )
    }

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl alice@laptop";

    #[test]
    fn a_good_request_becomes_a_server_owned_by_the_caller() {
        let new = NewServer {
            name: Some("dev".into()),
            profile: "debian".into(),
            resources: NewResources {
                cpu: Some("2".into()),
                memory: Some("1Gi".into()),
                gpus: None,
            },
            ssh_authorized_keys: vec![KEY.into(), " ".into()],
            env: vec![],
            restore_from: None,
        };
        let server = build(&alice(), new, &[debian()]).unwrap();
        assert_eq!(server.spec.owner, "alice");
        assert_eq!(server.labels()[OWNER_LABEL], "alice");
        assert_eq!(server.spec.ssh_authorized_keys, [KEY]);
        assert_eq!(server.spec.resources.cpu, Some(Quantity("2".into())));
    }

    #[test]
    fn every_bad_field_gets_its_own_message() {
        let new = NewServer {
            name: Some("Dev_1".into()),
            profile: "debian".into(),
            resources: NewResources {
                cpu: Some("3".into()),
                memory: Some("lots".into()),
                gpus: Some(1),
            },
            ssh_authorized_keys: vec!["ssh-ed25519 not-a-key".into()],
            env: vec![EnvVar {
                name: "1X".into(),
                value: String::new(),
            }],
            restore_from: None,
        };
        let Err(Problem::Invalid(errors)) = build(&alice(), new, &[debian()]) else {
            panic!("refused")
        };
        let fields: Vec<&str> = errors.iter().map(|e| e.field).collect();
        assert_eq!(
            fields,
            ["name", "cpu", "memory", "gpus", "sshAuthorizedKeys", "env"]
        );
        assert!(
            errors[1].message.contains("at most 2 for profile debian"),
            "{errors:?}"
        );
    }

    #[test]
    fn a_server_whose_program_ended_offers_start() {
        let mut server: ComputeServer = serde_yaml::from_str(
            "{apiVersion: computeserver.io/v1alpha1, kind: ComputeServer, metadata: {name: a}, spec: {owner: alice, profile: tiny}}",
        )
        .unwrap();
        assert!(runs(&server), "pending: it is meant to run");
        server.status = Some(crate::api::ComputeServerStatus {
            phase: Some(crate::api::Phase::Stopped),
            ..Default::default()
        });
        assert!(!runs(&server), "its program ended: Start, not Stop");
        server.status.as_mut().unwrap().phase = Some(crate::api::Phase::Running);
        assert!(runs(&server));
        server.spec.running = false;
        assert!(!runs(&server));
    }

    #[test]
    fn profiles_follow_groups() {
        let staff = profile(
            "apiVersion: computeserver.io/v1alpha1\nkind: ComputeProfile\nmetadata: {name: gpu}\n\
             spec: {image: d, allowedGroups: [staff]}",
        );
        assert!(!may_use(&alice(), &staff));
        assert!(may_use(&alice(), &debian()));
        let new = NewServer {
            profile: "gpu".into(),
            ..NewServer::default()
        };
        let Err(Problem::Invalid(errors)) = build(&alice(), new, &[debian()]) else {
            panic!("refused")
        };
        assert_eq!(errors[0].field, "profile");
        assert!(errors[0].message.contains("choose one of: debian"));
    }

    #[test]
    fn ssh_keys_are_checked_line_by_line() {
        assert!(is_ssh_key(KEY));
        assert!(!is_ssh_key(
            "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
        ));
        assert!(!is_ssh_key("-----BEGIN OPENSSH PRIVATE KEY-----"));
        assert!(!is_ssh_key(&format!("{KEY}\nssh-ed25519 AAAA")));
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::tests::{alice, debian};
    use super::*;

    /// Text a person (or an attacker) might put in a field: sizes, names, keys, nonsense.
    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            "[0-9]{1,4}(\\.[0-9]{1,3})?(m|k|M|G|Mi|Gi|Ti|e3)?",
            "[a-z][a-z0-9-]{0,70}",
            "ssh-(ed25519|rsa) [A-Za-z0-9+/=]{0,80}( [a-z@]{1,10})?\n?",
            any::<String>(),
        ]
    }

    fn new_server() -> impl Strategy<Value = NewServer> {
        (
            proptest::option::of(text()),
            prop_oneof![Just("debian".to_string()), text()],
            proptest::option::of(text()),
            proptest::option::of(text()),
            proptest::option::of(-3i32..5),
            proptest::collection::vec(text(), 0..3),
            proptest::collection::vec(
                (
                    prop_oneof![text(), "[A-Z_]{250,260}"],
                    prop_oneof![text(), "x{32760,32770}"],
                ),
                0..3,
            ),
        )
            .prop_map(|(name, profile, cpu, memory, gpus, keys, env)| NewServer {
                name,
                profile,
                resources: NewResources { cpu, memory, gpus },
                ssh_authorized_keys: keys,
                env: env
                    .into_iter()
                    .map(|(name, value)| EnvVar { name, value })
                    .collect(),
                restore_from: None,
            })
    }

    const FIELDS: [&str; 7] = [
        "profile",
        "name",
        "cpu",
        "memory",
        "gpus",
        "sshAuthorizedKeys",
        "env",
    ];

    proptest! {
        /// Whatever comes in: no panic; a refusal names a field of the request and says what
        /// is wrong; what is accepted is the caller's, within the profile, and has sizes the
        /// agent and the API server take.
        #[test]
        fn every_request_is_a_server_of_the_callers_or_a_refusal_that_names_a_field(new in new_server()) {
            let user = alice();
            match build(&user, new, &[debian()]) {
                Ok(server) => {
                    prop_assert_eq!(&server.spec.owner, "alice");
                    prop_assert!(is_dns_label(&server.name_any()));
                    let request = size::request(&server, Some(&debian()));
                    prop_assert!(request.is_ok(), "{:?}", request);
                    let request = request.unwrap();
                    prop_assert!(request.nano_cpus <= 2_000_000_000 && request.memory_bytes <= 4 << 30);
                    prop_assert!(server.spec.ssh_authorized_keys.iter().all(|k| is_ssh_key(k)));
                    prop_assert!(server.spec.env.len() <= 64);
                    for var in &server.spec.env {
                        prop_assert!(var.name.len() <= 256 && var.value.chars().count() <= 32768);
                        prop_assert!(!var.name.is_empty() && !var.name.starts_with(|c: char| c.is_ascii_digit()));
                    }
                }
                Err(Problem::Invalid(errors)) => {
                    prop_assert!(!errors.is_empty());
                    for error in errors {
                        prop_assert!(FIELDS.contains(&error.field), "{}", error.field);
                        prop_assert!(!error.message.is_empty());
                    }
                }
                Err(other) => prop_assert!(false, "not a field error: {other:?}"),
            }
        }

        /// The JSON API's body: any JSON object is read or refused, never a panic.
        #[test]
        fn any_json_body_is_read_or_refused(body in "\\{(\"[a-zA-Z]{1,12}\": ?(\"[^\"]{0,12}\"|[0-9.e-]{1,6}|null|\\[\\]|\\{\\}), ?){0,4}\"profile\": ?\"debian\"\\}") {
            let _ = serde_json::from_str::<NewServer>(&body);
        }
    }
}
