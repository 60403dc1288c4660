//! Browser sessions over SSH, so that the bastion's rules and audit log cover them as they
//! cover `ssh -J`: for each terminal or app connection the web front makes a fresh key, signs
//! two short-lived certificates with the user CA, logs in to the bastion as the signed-in user
//! (principal: the user name), jumps to the server's port 22, and logs in there as root
//! (principal: that server's own, see [`crate::ssh_ca`]). No Docker access, no stored key.
//!
//! [`certificate`] is pure and tested; [`connect`] does the talking.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use russh::client::{self, AuthResult, Handle};
use russh::keys::ssh_key::certificate::{Builder, CertType};
use russh::keys::ssh_key::{Certificate, HashAlg, PublicKey};
use russh::keys::{Algorithm, PrivateKey};
use russh::{ChannelId, ChannelOpenFailure};
use tracing::{debug, info};

/// How long a certificate is good for: only the logins happen within it (the bastion checks
/// it again before each jump, and a connection makes one).
pub const VALIDITY: Duration = Duration::from_secs(120);

/// How often a jump is made before the server's sshd is given up on (0.75 s apart).
const SSHD_ATTEMPTS: u32 = 8;

/// Where browser sessions go, and with what.
pub struct Config {
    /// The user CA's private key.
    pub ca: PrivateKey,
    /// The bastion's address, HOST:PORT.
    pub bastion: String,
    /// The bastion's host keys; empty: any is accepted (warned at start).
    pub bastion_host_keys: Vec<PublicKey>,
    /// SSH client settings shared by every connection.
    pub client: Arc<client::Config>,
}

impl Config {
    pub fn new(ca: PrivateKey, bastion: String, bastion_host_keys: Vec<PublicKey>) -> Config {
        let client = client::Config {
            inactivity_timeout: None,
            keepalive_interval: Some(Duration::from_secs(30)),
            keepalive_max: 3,
            nodelay: true,
            ..Default::default()
        };
        Config {
            ca,
            bastion,
            bastion_host_keys,
            client: Arc::new(client),
        }
    }
}

/// One server to reach, for one person, for one purpose.
pub struct Target<'a> {
    /// The signed-in user: the bastion's user name and the certificate's principal.
    pub user: &'a str,
    /// The server's name, as the bastion addresses it.
    pub server: &'a str,
    /// Its principal for root logins ([`crate::ssh_ca::server_principal`]).
    pub principal: String,
    /// What for, in the certificate's key id: "terminal", "app jupyter".
    pub purpose: &'a str,
    /// The user's Keycloak groups, for the bastion's access rule (servers shared with a group).
    pub groups: &'a [String],
    /// Web apps only, no shell: what a `view` sharee may have (the bastion checks it).
    pub apps_only: bool,
}

/// The certificate extension that carries the user's groups to the bastion, comma-separated:
/// the web front read them from a verified token, and the CA's signature vouches for them.
pub const GROUPS_EXTENSION: &str = "groups@computeserver.io";
/// The certificate extension of a link for web apps only: the bastion lets `view` sharees jump
/// with it, and the web front opens no shell on it.
pub const APPS_ONLY_EXTENSION: &str = "apps-only@computeserver.io";

/// Why a browser session could not be opened, in words for the page.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("the bastion does not answer at {0}: {1}")]
    Unreachable(String, String),
    #[error("the bastion refused this session: {0}")]
    Refused(String),
    #[error(
        "the server's SSH daemon did not accept the web front's certificate: is the server's image one with sshd, and its agent given --user-ca-keys?"
    )]
    ServerRefused,
    #[error("the server's SSH daemon does not answer yet; try again in a moment")]
    ServerNotReady,
    #[error("SSH: {0}")]
    Ssh(String),
}

fn ssh(error: impl std::fmt::Display) -> Failure {
    Failure::Ssh(error.to_string())
}

/// A user certificate for `key`, signed by `ca`: valid from a minute ago (clocks differ) for
/// [`VALIDITY`], for `principal` alone, with the given extensions (name, value) and no critical
/// options.
pub fn certificate(
    ca: &PrivateKey,
    key: &PublicKey,
    principal: &str,
    key_id: &str,
    extensions: &[(&str, &str)],
    now: u64,
) -> Result<Certificate, russh::keys::ssh_key::Error> {
    sign(ca, key, &[principal], key_id, extensions, now, VALIDITY)
}

/// How long a certificate for a person's own key is good for ([`for_person`]): a working day.
pub const PERSON_VALIDITY: Duration = Duration::from_secs(8 * 3600);

/// A certificate for a person's own `key`, for plain `ssh -J`: it logs them in to the bastion as
/// `user` (with their `groups`, for servers shared with a group) and, through it, as root to
/// each server of `servers` ([`crate::ssh_ca::server_principal`]), for [`PERSON_VALIDITY`].
/// Their key is never written into a server. The bastion decides each jump from the cache, so a
/// share removed ends their sessions whatever the certificate says.
pub fn for_person(
    ca: &PrivateKey,
    key: &PublicKey,
    user: &str,
    groups: &[String],
    servers: &[String],
    now: u64,
) -> Result<Certificate, russh::keys::ssh_key::Error> {
    let mut principals = vec![user];
    principals.extend(servers.iter().map(String::as_str));
    let groups = groups.join(",");
    let extensions = [
        ("permit-pty", ""),
        ("permit-port-forwarding", ""),
        (GROUPS_EXTENSION, groups.as_str()),
    ];
    let id = format!("{user} via the web front");
    sign(ca, key, &principals, &id, &extensions, now, PERSON_VALIDITY)
}

fn sign(
    ca: &PrivateKey,
    key: &PublicKey,
    principals: &[&str],
    key_id: &str,
    extensions: &[(&str, &str)],
    now: u64,
    validity: Duration,
) -> Result<Certificate, russh::keys::ssh_key::Error> {
    let mut nonce = [0u8; 32];
    rand::fill(&mut nonce);
    let mut builder = Builder::new(
        nonce,
        key.key_data().clone(),
        now.saturating_sub(60),
        now + validity.as_secs(),
    )?;
    builder
        .serial(u64::from_le_bytes(nonce[..8].try_into().unwrap_or_default()))?
        .cert_type(CertType::User)?
        .key_id(key_id)?;
    for principal in principals {
        builder.valid_principal(*principal)?;
    }
    for (name, value) in extensions {
        builder.extension(*name, *value)?;
    }
    builder.sign(ca)
}

/// The client side of the bastion: checks its host key, and keeps the reason it gives when
/// it refuses a jump.
struct Bastion {
    host_keys: Vec<PublicKey>,
    refusal: Arc<Mutex<Option<String>>>,
}

impl client::Handler for Bastion {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } = key else {
            return Ok(false);
        };
        Ok(self.host_keys.is_empty() || self.host_keys.iter().any(|k| k.key_data() == key.key_data()))
    }

    async fn channel_open_failure(
        &mut self,
        _channel: ChannelId,
        _reason: ChannelOpenFailure,
        description: &str,
        _language: &str,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        if let Ok(mut refusal) = self.refusal.lock() {
            *refusal = Some(description.to_string());
        }
        Ok(())
    }
}

/// The client side of the server's sshd. Its host key is the container's own, made at its
/// first start and known to no one: the bastion, which chose the endpoint, vouches for it.
pub struct Server;

impl client::Handler for Server {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        _key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

/// A logged-in SSH connection to a server's root account, through the bastion.
pub struct Link {
    /// The session with the server's sshd: open shells and tunnels here.
    pub server: Handle<Server>,
    /// The bastion connection it runs in; kept while the link lives.
    bastion: Handle<Bastion>,
}

impl Link {
    /// Whether either connection has ended.
    pub fn is_closed(&self) -> bool {
        self.server.is_closed() || self.bastion.is_closed()
    }

    /// Ends both connections.
    pub async fn close(&self) {
        let _ = (self.server)
            .disconnect(russh::Disconnect::ByApplication, "closed in the browser", "")
            .await;
        let _ = (self.bastion)
            .disconnect(russh::Disconnect::ByApplication, "closed in the browser", "")
            .await;
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Logs in to the bastion as the target's user, jumps to its server and logs in there.
pub async fn connect(config: &Config, target: &Target<'_>) -> Result<Link, Failure> {
    let key = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519).map_err(ssh)?;
    let key = Arc::new(key);
    let id = format!("web {} of {} on {}", target.purpose, target.user, target.server);
    let now = now();
    let groups = target.groups.join(",");
    let mut extensions = vec![
        ("permit-port-forwarding", ""),
        (GROUPS_EXTENSION, groups.as_str()),
    ];
    if target.apps_only {
        extensions.push((APPS_ONLY_EXTENSION, ""));
    }
    let to_bastion =
        certificate(&config.ca, key.public_key(), target.user, &id, &extensions, now).map_err(ssh)?;
    // A link for web apps only gets no pty: the node's gateway then runs nothing on it.
    let server_extensions: &[(&str, &str)] = match target.apps_only {
        true => &[("permit-port-forwarding", "")],
        false => &[("permit-pty", ""), ("permit-port-forwarding", "")],
    };
    let to_server = certificate(
        &config.ca,
        key.public_key(),
        &target.principal,
        &id,
        server_extensions,
        now,
    )
    .map_err(ssh)?;

    let refusal = Arc::new(Mutex::new(None));
    let handler = Bastion {
        host_keys: config.bastion_host_keys.clone(),
        refusal: refusal.clone(),
    };
    let mut bastion = client::connect(config.client.clone(), config.bastion.as_str(), handler)
        .await
        .map_err(|e| Failure::Unreachable(config.bastion.clone(), e.to_string()))?;
    match bastion
        .authenticate_openssh_cert(target.user, key.clone(), to_bastion)
        .await
        .map_err(ssh)?
    {
        AuthResult::Success => {}
        AuthResult::Failure { .. } => {
            return Err(Failure::Refused(
                "it does not trust the web front's certificates (give it the CA's public key with --user-ca-keys)".into(),
            ));
        }
    }
    // A server that has just started may not run its sshd yet: the jump connects (Docker's
    // proxy answers) and the connection is reset. Tried again for a few seconds.
    let mut attempts = 0;
    let mut server = loop {
        attempts += 1;
        let channel = match bastion
            .channel_open_direct_tcpip(target.server, 22, "127.0.0.1", 0)
            .await
        {
            Ok(channel) => channel,
            Err(error) => {
                let reason = refusal.lock().ok().and_then(|mut r| r.take());
                return Err(Failure::Refused(reason.unwrap_or_else(|| error.to_string())));
            }
        };
        match client::connect_stream(config.client.clone(), channel.into_stream(), Server).await {
            Ok(server) => break server,
            Err(error) if attempts < SSHD_ATTEMPTS => {
                debug!(server = %target.server, %error, attempts, "the server's sshd did not answer; trying again");
                tokio::time::sleep(Duration::from_millis(750)).await;
            }
            Err(_) => return Err(Failure::ServerNotReady),
        }
    };
    match server
        .authenticate_openssh_cert("root", key, to_server)
        .await
        .map_err(ssh)?
    {
        AuthResult::Success => {}
        AuthResult::Failure { .. } => return Err(Failure::ServerRefused),
    }
    info!(user = %target.user, server = %target.server, purpose = %target.purpose,
          fingerprint = %config.ca.public_key().fingerprint(HashAlg::Sha256), "browser session opened through the bastion");
    Ok(Link { server, bastion })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_are_for_one_principal_short_lived_and_signed_by_the_ca() {
        let ca = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519).unwrap();
        let key = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519).unwrap();
        let now = 1_800_000_000;
        let cert = certificate(
            &ca,
            key.public_key(),
            "alice",
            "web terminal of alice on dev",
            &[("permit-port-forwarding", "")],
            now,
        )
        .unwrap();
        assert_eq!(cert.valid_principals(), ["alice"]);
        assert_eq!(cert.cert_type(), CertType::User);
        assert_eq!(cert.key_id(), "web terminal of alice on dev");
        assert!(cert.critical_options().is_empty());
        assert!(cert.extensions().contains_key("permit-port-forwarding"));
        let trusted = [ca.public_key().fingerprint(HashAlg::Sha256)];
        assert!(cert.validate_at(now, &trusted).is_ok());
        assert!(
            cert.validate_at(now + VALIDITY.as_secs() + 1, &trusted).is_err(),
            "gone after its validity"
        );
        let other = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519).unwrap();
        assert!(
            cert.validate_at(now, &[other.public_key().fingerprint(HashAlg::Sha256)])
                .is_err()
        );
    }
}
