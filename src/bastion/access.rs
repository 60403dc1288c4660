//! Who may log in and where they may jump: pure decisions over the cached ComputeServers.
//!
//! No I/O here: `session.rs` asks, these functions answer from a snapshot of the cache.

use std::sync::Arc;

use kube::ResourceExt;
use russh::keys::ssh_key::Fingerprint;
use russh::keys::{Certificate, PublicKey};

use crate::api::access::{self, Action, Person};
use crate::api::{ComputeServer, Phase};

/// The only port a jump may ask for: the server's SSH daemon.
pub const SSH_PORT: u32 = 22;

/// Whether `key` is one of the `sshAuthorizedKeys` of a server that `user` owns and that is not
/// being deleted (a server on its way out vouches for no one).
///
/// Keys are compared by algorithm and key data; the comment is ignored. Entries that do not
/// parse are skipped (the API server's schema already refuses most of them).
pub fn user_has_key(servers: &[Arc<ComputeServer>], user: &str, key: &PublicKey) -> bool {
    servers
        .iter()
        .filter(|server| server.spec.owner == user && server.metadata.deletion_timestamp.is_none())
        .flat_map(|server| &server.spec.ssh_authorized_keys)
        .filter_map(|line| PublicKey::from_openssh(line).ok())
        .any(|registered| registered.key_data() == key.key_data())
}

/// Whether `user` owns any server at all (for the audit log's reason, never for the client).
pub fn user_is_known(servers: &[Arc<ComputeServer>], user: &str) -> bool {
    servers.iter().any(|server| server.spec.owner == user)
}

pub use crate::ssh_ca::check_certificate;

/// The certificate extension with the user's groups, comma-separated (signed by the web front,
/// which read them from a verified token).
pub const GROUPS_EXTENSION: &str = "groups@computeserver.io";
/// The certificate extension of a web front's link for web apps only.
pub const APPS_ONLY_EXTENSION: &str = "apps-only@computeserver.io";

/// The groups `user` is in, for servers shared with a group: from the certificate they logged
/// in with when it carries them, else the groups recorded on their own servers
/// (`spec.ownerGroups`, set from a verified source when each was made).
pub fn groups(servers: &[Arc<ComputeServer>], user: &str, credential: &Credential) -> Vec<String> {
    if let Credential::Certificate(cert) = credential
        && let Some(listed) = cert.extensions().get(GROUPS_EXTENSION)
    {
        return listed
            .split(',')
            .filter(|g| !g.is_empty())
            .map(str::to_string)
            .collect();
    }
    let mut groups: Vec<String> = servers
        .iter()
        .filter(|s| s.spec.owner == user)
        .flat_map(|s| s.spec.owner_groups.iter().cloned())
        .collect();
    groups.sort();
    groups.dedup();
    groups
}

/// What a jump needs: `use`, or only `view` for a web front's link for web apps.
pub fn needs(credential: &Credential) -> Action {
    match credential {
        Credential::Certificate(cert) if cert.extensions().contains_key(APPS_ONLY_EXTENSION) => Action::View,
        _ => Action::Use,
    }
}

/// Decides a new jump of `user` (logged in with `credential`) to `host:port` at `now`: the
/// login still good ([`may_still_jump`]), and the server one they may reach ([`still_allowed`]).
#[allow(clippy::too_many_arguments)]
pub fn decide(
    servers: &[Arc<ComputeServer>],
    user: &str,
    admin: bool,
    credential: &Credential,
    cas: &[Fingerprint],
    now: u64,
    host: &str,
    port: u32,
) -> Result<Target, Refusal> {
    may_still_jump(servers, user, credential, cas, now)?;
    still_allowed(servers, user, admin, credential, host, port)
}

/// Whether `user` (logged in with `credential`) may reach `host:port` by the access rule
/// ([`authorize`]): asked for a new jump, and again while one is open, so that a share removed
/// ends it. The login's own validity is not asked again for an open jump: as with sshd, a
/// certificate that expires (the web front's last two minutes) ends no session.
pub fn still_allowed(
    servers: &[Arc<ComputeServer>],
    user: &str,
    admin: bool,
    credential: &Credential,
    host: &str,
    port: u32,
) -> Result<Target, Refusal> {
    let groups = groups(servers, user, credential);
    let who = Person {
        name: user,
        groups: &groups,
        admin,
    };
    authorize(servers, &who, needs(credential), host, port)
}

/// What a connection logged in with, kept to check again before each jump.
#[derive(Debug, Clone)]
pub enum Credential {
    /// A public key from the `sshAuthorizedKeys` of one of the user's servers.
    Key(PublicKey),
    /// A user certificate from a trusted CA.
    Certificate(Box<Certificate>),
}

/// The certificate extension that allows port forwarding, which every jump is.
pub const PERMIT_PORT_FORWARDING: &str = "permit-port-forwarding";

/// Whether what `user` logged in with still lets them jump at `now`: the key is still
/// registered (a server not being deleted still lists it), or the certificate is still valid
/// and permits port forwarding.
pub fn may_still_jump(
    servers: &[Arc<ComputeServer>],
    user: &str,
    credential: &Credential,
    cas: &[Fingerprint],
    now: u64,
) -> Result<(), Refusal> {
    match credential {
        Credential::Key(key) if user_has_key(servers, user, key) => Ok(()),
        Credential::Key(_) => Err(Refusal::KeyGone),
        Credential::Certificate(cert) => {
            check_certificate(cert, user, cas, now).map_err(Refusal::Certificate)?;
            match cert.extensions().contains_key(PERMIT_PORT_FORWARDING) {
                true => Ok(()),
                false => Err(Refusal::NoPortForwarding),
            }
        }
    }
}

/// Where an allowed jump goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The server's name.
    pub name: String,
    /// The server's namespace.
    pub namespace: String,
    /// Its owner.
    pub owner: String,
    /// Host of its ssh endpoint (the node's address).
    pub host: String,
    /// Port of its ssh endpoint on the node.
    pub port: u16,
}

/// Why a jump is refused, in words for the person at the keyboard.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No server of that name that the user may reach; also the answer for others' servers.
    #[error("no server named {0} of yours")]
    NoSuchServer(String),
    #[error(
        "server {name} is shared with you to view only (its web apps), not to log in; ask {owner} for the role use"
    )]
    ViewOnly { name: String, owner: String },
    #[error("you have servers named {name} in several namespaces: use one of {choices}")]
    Ambiguous { name: String, choices: String },
    #[error("server {0} is reachable on port 22 (ssh) only, not on port {1}")]
    WrongPort(String, u32),
    #[error("server {0} is stopped; start it first")]
    Stopped(String),
    #[error("server {name} is not running yet (phase {phase}); try again when it is Running")]
    NotRunning { name: String, phase: String },
    #[error("server {name} has failed: {message}")]
    Failed { name: String, message: String },
    #[error("server {0} has no ssh port")]
    NoSshEndpoint(String),
    #[error(
        "the key you logged in with is no longer in the sshAuthorizedKeys of a server of yours; log in again"
    )]
    KeyGone,
    #[error("the certificate you logged in with is no longer good: {0}; log in again")]
    Certificate(&'static str),
    #[error("your certificate does not permit port forwarding ({PERMIT_PORT_FORWARDING}), and a jump is one")]
    NoPortForwarding,
}

/// Decides a `direct-tcpip` request from `who` to `host:port`, for what it `needs` (`use` for a
/// shell, `view` for a web front's app link).
///
/// `host` is a server name, or `name.namespace` when the name alone is ambiguous. Servers of
/// others are invisible unless shared with `who` ([`access`]) or they are an admin: asking for
/// one gets the same answer as a server that does not exist.
pub fn authorize(
    servers: &[Arc<ComputeServer>],
    who: &Person,
    needs: Action,
    host: &str,
    port: u32,
) -> Result<Target, Refusal> {
    let mut matches: Vec<&ComputeServer> = servers
        .iter()
        .map(Arc::as_ref)
        .filter(|server| access::access(server, who).is_some())
        .filter(|server| {
            let (name, namespace) = (server.name_any(), server.namespace().unwrap_or_default());
            name == host || format!("{name}.{namespace}") == host
        })
        .collect();
    // `dev.team` may name the server `dev.team` and the server `dev` in namespace `team`:
    // the exact name wins.
    if matches.len() > 1 && matches.iter().any(|s| s.name_any() == host) {
        matches.retain(|s| s.name_any() == host);
    }
    let server = match matches.as_slice() {
        [] => return Err(Refusal::NoSuchServer(host.to_string())),
        [one] => *one,
        many => {
            let mut choices: Vec<String> = many
                .iter()
                .map(|s| format!("{}.{}", s.name_any(), s.namespace().unwrap_or_default()))
                .collect();
            choices.sort();
            return Err(Refusal::Ambiguous {
                name: host.to_string(),
                choices: choices.join(", "),
            });
        }
    };
    if !access::may(server, who, needs) {
        return Err(Refusal::ViewOnly {
            name: host.to_string(),
            owner: server.spec.owner.clone(),
        });
    }
    if port != SSH_PORT {
        return Err(Refusal::WrongPort(host.to_string(), port));
    }
    let status = server.status.clone().unwrap_or_default();
    match status.phase {
        Some(Phase::Running) if server.spec.running => {}
        _ if !server.spec.running => return Err(Refusal::Stopped(host.to_string())),
        Some(Phase::Stopped) => return Err(Refusal::Stopped(host.to_string())),
        Some(Phase::Failed) => {
            return Err(Refusal::Failed {
                name: host.to_string(),
                message: status.message.unwrap_or_else(|| "no reason given".into()),
            });
        }
        phase => {
            return Err(Refusal::NotRunning {
                name: host.to_string(),
                phase: phase.map_or("Pending".into(), |p| format!("{p:?}")),
            });
        }
    }
    // The endpoint named "ssh", or the one of the declared port 22 under another name; for an
    // image without sshd, the node's SSH gateway.
    let port_22_name = server
        .spec
        .ports
        .iter()
        .find(|p| p.container_port == SSH_PORT as i32)
        .map(|p| p.name.as_str());
    let endpoint = status
        .endpoints
        .iter()
        .find(|e| e.name == "ssh")
        .or_else(|| {
            status
                .endpoints
                .iter()
                .find(|e| Some(e.name.as_str()) == port_22_name)
        })
        .or(status.gateway.as_ref())
        .ok_or_else(|| Refusal::NoSshEndpoint(host.to_string()))?;
    let port = u16::try_from(endpoint.port).map_err(|_| Refusal::NoSshEndpoint(host.to_string()))?;
    Ok(Target {
        name: server.name_any(),
        namespace: server.namespace().unwrap_or_default(),
        owner: server.spec.owner.clone(),
        host: endpoint.host.clone(),
        port,
    })
}

#[cfg(test)]
mod tests {
    use russh::keys::HashAlg;
    use russh::keys::ssh_key::certificate::CertType;

    use super::*;

    /// A jump that needs `use`, by someone in no group.
    pub(super) fn authorize(
        servers: &[Arc<ComputeServer>],
        user: &str,
        admin: bool,
        host: &str,
        port: u32,
    ) -> Result<Target, Refusal> {
        let who = Person {
            name: user,
            groups: &[],
            admin,
        };
        super::authorize(servers, &who, Action::Use, host, port)
    }

    const ALICE_KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEexMfT7UKd3SQgSHesCCzlKi8Znhm7WTyGhrmfJZ4r5 alice@laptop";
    const OTHER_KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJXcjkh/ndN7UKaY0/EGGWrQOZ2dIu3KvP0yzSTDCgf8 mallory@x";

    /// A server `name` in `namespace` owned by `owner`, with `extra` YAML lines under spec/status.
    fn server(namespace: &str, name: &str, owner: &str, spec: &str, status: &str) -> Arc<ComputeServer> {
        let yaml = format!(
            "apiVersion: computeserver.io/v1alpha1\nkind: ComputeServer\n\
             metadata: {{name: {name}, namespace: {namespace}}}\n\
             spec: {{owner: {owner}, profile: debian, sshAuthorizedKeys: ['{ALICE_KEY}'] {spec}}}\n\
             status: {{{status}}}\n"
        );
        Arc::new(serde_yaml::from_str(&yaml).unwrap())
    }

    const RUNNING: &str = "phase: Running, endpoints: [{name: ssh, host: 10.0.0.5, port: 32768}]";

    fn key(line: &str) -> PublicKey {
        PublicKey::from_openssh(line).unwrap()
    }

    #[test]
    fn a_registered_key_is_known_whatever_its_comment() {
        let servers = vec![server("compute", "dev", "alice", "", RUNNING)];
        let renamed = ALICE_KEY.replace("alice@laptop", "another comment");
        assert!(user_has_key(&servers, "alice", &key(&renamed)));
        assert!(!user_has_key(&servers, "alice", &key(OTHER_KEY)));
        assert!(
            !user_has_key(&servers, "bob", &key(ALICE_KEY)),
            "alice's key is not bob's"
        );
        assert!(user_is_known(&servers, "alice"));
        assert!(!user_is_known(&servers, "bob"));
    }

    /// A certificate for `key`, signed by `ca`, valid for `principals` from `after` to `before`,
    /// with the extension permit-port-forwarding (as `ssh-keygen -s` gives by default).
    fn certificate(
        key: &PublicKey,
        ca: &russh::keys::PrivateKey,
        principals: &[&str],
        (after, before): (u64, u64),
        cert_type: CertType,
    ) -> Certificate {
        certificate_with(
            key,
            ca,
            principals,
            (after, before),
            cert_type,
            &[PERMIT_PORT_FORWARDING],
        )
    }

    fn certificate_with(
        key: &PublicKey,
        ca: &russh::keys::PrivateKey,
        principals: &[&str],
        (after, before): (u64, u64),
        cert_type: CertType,
        extensions: &[&str],
    ) -> Certificate {
        let mut builder =
            russh::keys::ssh_key::certificate::Builder::new([7; 16], key.key_data().clone(), after, before)
                .unwrap();
        builder
            .cert_type(cert_type)
            .unwrap()
            .key_id("alice via web")
            .unwrap();
        for principal in principals {
            builder.valid_principal(*principal).unwrap();
        }
        if principals.is_empty() {
            builder.all_principals_valid().unwrap();
        }
        for extension in extensions {
            builder.extension(*extension, "").unwrap();
        }
        builder.sign(ca).unwrap()
    }

    #[test]
    fn a_server_being_deleted_vouches_for_no_key() {
        let mut going = (*server("compute", "dev", "alice", "", RUNNING)).clone();
        going.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::now(),
        ));
        let going = vec![Arc::new(going)];
        assert!(!user_has_key(&going, "alice", &key(ALICE_KEY)));
        let login = Credential::Key(key(ALICE_KEY));
        assert_eq!(
            may_still_jump(&going, "alice", &login, &[], 0),
            Err(Refusal::KeyGone)
        );
    }

    #[test]
    fn each_jump_needs_the_login_key_still_registered() {
        let servers = vec![server("compute", "dev", "alice", "", RUNNING)];
        let login = Credential::Key(key(ALICE_KEY));
        assert_eq!(may_still_jump(&servers, "alice", &login, &[], 0), Ok(()));
        let rekeyed = vec![server("compute", "dev", "alice", "", RUNNING)]
            .into_iter()
            .map(|s| {
                let mut s = (*s).clone();
                s.spec.ssh_authorized_keys = vec![OTHER_KEY.into()];
                Arc::new(s)
            })
            .collect::<Vec<_>>();
        let refusal = may_still_jump(&rekeyed, "alice", &login, &[], 0).unwrap_err();
        assert_eq!(
            refusal.to_string(),
            "the key you logged in with is no longer in the sshAuthorizedKeys of a server of yours; log in again"
        );
    }

    #[test]
    fn each_jump_needs_the_certificate_still_valid_and_permitting_port_forwarding() {
        use russh::keys::{Algorithm, PrivateKey};
        let ca = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519).unwrap();
        let trusted = [ca.public_key().fingerprint(HashAlg::Sha256)];
        let alice = key(ALICE_KEY);
        let hours = (1_799_990_000, 1_800_010_000);
        let good = Credential::Certificate(Box::new(certificate(
            &alice,
            &ca,
            &["alice"],
            hours,
            CertType::User,
        )));
        assert_eq!(
            may_still_jump(&[], "alice", &good, &trusted, 1_800_000_000),
            Ok(())
        );
        let refusal = may_still_jump(&[], "alice", &good, &trusted, 1_800_020_000).unwrap_err();
        assert_eq!(
            refusal.to_string(),
            "the certificate you logged in with is no longer good: certificate expired, not yet valid, or badly signed; log in again"
        );
        let no_forwarding = certificate_with(&alice, &ca, &["alice"], hours, CertType::User, &["permit-pty"]);
        let refusal = may_still_jump(
            &[],
            "alice",
            &Credential::Certificate(Box::new(no_forwarding)),
            &trusted,
            1_800_000_000,
        )
        .unwrap_err();
        assert_eq!(
            refusal.to_string(),
            "your certificate does not permit port forwarding (permit-port-forwarding), and a jump is one"
        );
    }

    #[test]
    fn a_user_certificate_from_a_trusted_ca_admits_its_principals_while_valid() {
        use russh::keys::{Algorithm, PrivateKey};
        let ca = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519).unwrap();
        let other_ca = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519).unwrap();
        let trusted = [ca.public_key().fingerprint(HashAlg::Sha256)];
        let alice = key(ALICE_KEY);
        let (now, hours) = (1_800_000_000, (1_799_990_000, 1_800_010_000));
        let good = certificate(&alice, &ca, &["alice"], hours, CertType::User);
        assert_eq!(check_certificate(&good, "alice", &trusted, now), Ok(()));
        assert_eq!(
            check_certificate(&good, "bob", &trusted, now),
            Err("certificate is not for this user (not among its principals)")
        );
        assert_eq!(
            check_certificate(&good, "alice", &trusted, 1_800_020_000),
            Err("certificate expired, not yet valid, or badly signed")
        );
        let untrusted = certificate(&alice, &other_ca, &["alice"], hours, CertType::User);
        assert_eq!(
            check_certificate(&untrusted, "alice", &trusted, now),
            Err("certificate signed by a CA not trusted here")
        );
        let anyone = certificate(&alice, &ca, &[], hours, CertType::User);
        assert!(
            check_certificate(&anyone, "alice", &trusted, now).is_err(),
            "no principals: no one"
        );
        let host = certificate(&alice, &ca, &["alice"], hours, CertType::Host);
        assert!(check_certificate(&host, "alice", &trusted, now).is_err());
    }

    #[test]
    fn alice_reaches_her_running_server_on_port_22() {
        let servers = vec![server("compute", "dev", "alice", "", RUNNING)];
        let target = authorize(&servers, "alice", false, "dev", 22).unwrap();
        assert_eq!(
            target,
            Target {
                name: "dev".into(),
                namespace: "compute".into(),
                owner: "alice".into(),
                host: "10.0.0.5".into(),
                port: 32768
            }
        );
        assert_eq!(authorize(&servers, "alice", false, "dev.compute", 22), Ok(target));
    }

    #[test]
    fn another_users_server_looks_like_no_server_except_to_admins() {
        let servers = vec![server("compute", "dev", "bob", "", RUNNING)];
        let refusal = authorize(&servers, "alice", false, "dev", 22).unwrap_err();
        assert_eq!(refusal.to_string(), "no server named dev of yours");
        assert_eq!(
            authorize(&servers, "alice", false, "nosuch", 22)
                .unwrap_err()
                .to_string(),
            "no server named nosuch of yours"
        );
        assert!(authorize(&servers, "ops", true, "dev", 22).is_ok());
    }

    #[test]
    fn a_sharee_jumps_with_the_role_use_and_a_viewer_only_on_an_app_link() {
        use russh::keys::{Algorithm, PrivateKey};
        let servers = vec![
            server(
                "compute",
                "dev",
                "alice",
                ", sharedWith: [{user: bob, role: use}, {user: carol, role: view}, {group: staff, role: use}]",
                RUNNING,
            ),
            server("compute", "own", "dan", ", ownerGroups: [staff]", RUNNING),
        ];
        let key = Credential::Key(key(ALICE_KEY));
        let jump = |user: &str, credential: &Credential| {
            decide(&servers, user, false, credential, &[], 1_800_000_000, "dev", 22)
        };
        // Keys are checked on the user's own servers: here only the rule is looked at.
        let who = |name: &'static str, groups: &'static [String]| Person {
            name,
            groups,
            admin: false,
        };
        assert!(super::authorize(&servers, &who("bob", &[]), Action::Use, "dev", 22).is_ok());
        let refusal = super::authorize(&servers, &who("carol", &[]), Action::Use, "dev", 22).unwrap_err();
        assert_eq!(
            refusal.to_string(),
            "server dev is shared with you to view only (its web apps), not to log in; ask alice for the role use"
        );
        assert!(super::authorize(&servers, &who("carol", &[]), Action::View, "dev", 22).is_ok());
        assert_eq!(
            super::authorize(&servers, &who("eve", &[]), Action::View, "dev", 22),
            Err(Refusal::NoSuchServer("dev".into()))
        );
        // dan's groups come from his own server's ownerGroups: staff may use dev.
        assert_eq!(groups(&servers, "dan", &key), vec!["staff".to_string()]);
        let ca = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519).unwrap();
        let trusted = [ca.public_key().fingerprint(HashAlg::Sha256)];
        let hours = (1_799_990_000, 1_800_010_000);
        let carol_key = self::key(OTHER_KEY);
        let app_link = Credential::Certificate(Box::new(certificate_with(
            &carol_key,
            &ca,
            &["carol"],
            hours,
            CertType::User,
            &[PERMIT_PORT_FORWARDING, APPS_ONLY_EXTENSION],
        )));
        let shell_link = Credential::Certificate(Box::new(certificate_with(
            &carol_key,
            &ca,
            &["carol"],
            hours,
            CertType::User,
            &[PERMIT_PORT_FORWARDING],
        )));
        let decide_at = |user: &str, credential: &Credential| {
            decide(
                &servers,
                user,
                false,
                credential,
                &trusted,
                1_800_000_000,
                "dev",
                22,
            )
        };
        assert!(decide_at("carol", &app_link).is_ok(), "a viewer's app link");
        // Past its certificate's validity: no new jump, but the open one stands while shared.
        let later = |user: &str, credential: &Credential| {
            decide(
                &servers,
                user,
                false,
                credential,
                &trusted,
                1_800_020_000,
                "dev",
                22,
            )
        };
        assert!(matches!(later("carol", &app_link), Err(Refusal::Certificate(_))));
        assert!(still_allowed(&servers, "carol", false, &app_link, "dev", 22).is_ok());
        assert!(matches!(
            decide_at("carol", &shell_link),
            Err(Refusal::ViewOnly { .. })
        ));
        assert!(jump("eve", &key).is_err());
    }

    #[test]
    fn only_port_22_is_reachable() {
        let servers = vec![server("compute", "dev", "alice", "", RUNNING)];
        assert_eq!(
            authorize(&servers, "alice", false, "dev", 80)
                .unwrap_err()
                .to_string(),
            "server dev is reachable on port 22 (ssh) only, not on port 80"
        );
    }

    #[test]
    fn a_stopped_or_unready_server_is_refused_with_what_to_do() {
        let stopped = server("compute", "dev", "alice", ", running: false", "phase: Stopped");
        assert_eq!(
            authorize(&[stopped], "alice", false, "dev", 22)
                .unwrap_err()
                .to_string(),
            "server dev is stopped; start it first"
        );
        let creating = server("compute", "dev", "alice", "", "phase: Creating");
        assert_eq!(
            authorize(&[creating], "alice", false, "dev", 22)
                .unwrap_err()
                .to_string(),
            "server dev is not running yet (phase Creating); try again when it is Running"
        );
        let failed = server(
            "compute",
            "dev",
            "alice",
            "",
            "phase: Failed, message: image gone",
        );
        assert_eq!(
            authorize(&[failed], "alice", false, "dev", 22)
                .unwrap_err()
                .to_string(),
            "server dev has failed: image gone"
        );
        let no_ssh = server("compute", "web", "alice", "", "phase: Running");
        assert_eq!(
            authorize(&[no_ssh], "alice", false, "web", 22)
                .unwrap_err()
                .to_string(),
            "server web has no ssh port"
        );
    }

    #[test]
    fn a_server_without_sshd_is_reached_through_its_nodes_gateway() {
        let servers = vec![server(
            "compute",
            "web",
            "alice",
            ", ports: [{name: http, containerPort: 8080, appProtocol: http}]",
            "phase: Running, gateway: {name: gateway, host: node-a, port: 41000}",
        )];
        let target = authorize(&servers, "alice", false, "web", 22).unwrap();
        assert_eq!((target.host.as_str(), target.port), ("node-a", 41000));
        let with_sshd = vec![server(
            "compute",
            "dev",
            "alice",
            "",
            "phase: Running, endpoints: [{name: ssh, host: node-a, port: 32768}], gateway: {name: gateway, host: node-a, port: 41000}",
        )];
        let target = authorize(&with_sshd, "alice", false, "dev", 22).unwrap();
        assert_eq!(target.port, 32768, "its own sshd first");
    }

    #[test]
    fn an_ssh_port_under_another_name_is_found_by_container_port() {
        let servers = vec![server(
            "compute",
            "dev",
            "alice",
            ", ports: [{name: shell, containerPort: 22}]",
            "phase: Running, endpoints: [{name: shell, host: node-a, port: 40000}]",
        )];
        let target = authorize(&servers, "alice", false, "dev", 22).unwrap();
        assert_eq!((target.host.as_str(), target.port), ("node-a", 40000));
    }

    #[test]
    fn a_name_in_several_namespaces_needs_its_namespace() {
        let servers = vec![
            server("team-a", "dev", "alice", "", RUNNING),
            server("team-b", "dev", "alice", "", RUNNING),
        ];
        assert_eq!(
            authorize(&servers, "alice", false, "dev", 22)
                .unwrap_err()
                .to_string(),
            "you have servers named dev in several namespaces: use one of dev.team-a, dev.team-b"
        );
        let target = authorize(&servers, "alice", false, "dev.team-b", 22).unwrap();
        assert_eq!(target.namespace, "team-b");
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    use super::tests::authorize;

    const PHASES: [&str; 5] = ["Running", "Pending", "Stopped", "Failed", "Creating"];

    /// A cluster of a few servers, some names in several namespaces, of three owners.
    fn servers() -> impl Strategy<Value = Vec<Arc<ComputeServer>>> {
        proptest::collection::vec(
            (
                "[ab]",
                "(dev|gpu|dev\\.a)",
                "(alice|bob|mallory)",
                0usize..5,
                proptest::bool::weighted(0.8),
                proptest::bool::ANY,
            ),
            0..8,
        )
        .prop_map(|specs| {
            let mut seen = std::collections::HashSet::new();
            specs
                .into_iter()
                .filter(|(ns, name, ..)| seen.insert(format!("{name}/{ns}")))
                .map(|(namespace, name, owner, phase, running, ssh)| {
                    let endpoints = if ssh {
                        "[{name: ssh, host: 10.0.0.5, port: 32768}]"
                    } else {
                        "[]"
                    };
                    let yaml = format!(
                        "apiVersion: computeserver.io/v1alpha1\nkind: ComputeServer\n\
                         metadata: {{name: '{name}', namespace: {namespace}}}\n\
                         spec: {{owner: {owner}, running: {running}}}\n\
                         status: {{phase: {}, endpoints: {endpoints}}}\n",
                        PHASES[phase]
                    );
                    Arc::new(serde_yaml::from_str::<ComputeServer>(&yaml).unwrap())
                })
                .collect()
        })
    }

    proptest! {
        /// Whatever a user asks for: a jump goes only to a server of theirs (admins: any) of
        /// the name asked, running, on port 22; and anything of someone else's gets the very
        /// answer a server that does not exist gets.
        #[test]
        fn a_jump_goes_only_to_a_running_server_of_ones_own(
            servers in servers(),
            user in "(alice|bob|eve)",
            admin in proptest::bool::weighted(0.1),
            host in "(dev|gpu|dev\\.a|dev\\.b|gpu\\.a|dev\\.a\\.b|x)",
            port in prop_oneof![4 => Just(22u32), 1 => 0u32..70000],
        ) {
            let result = authorize(&servers, &user, admin, &host, port);
            let own: Vec<&Arc<ComputeServer>> = servers
                .iter()
                .filter(|s| admin || s.spec.owner == user)
                .filter(|s| {
                    let name = s.name_any();
                    name == host || format!("{name}.{}", s.namespace().unwrap_or_default()) == host
                })
                .collect();
            match result {
                Ok(target) => {
                    let server = servers
                        .iter()
                        .find(|s| s.name_any() == target.name && s.namespace().as_deref() == Some(&target.namespace));
                    prop_assert!(server.is_some());
                    let server = server.unwrap();
                    prop_assert!(admin || server.spec.owner == user, "{user} reached {}'s server", server.spec.owner);
                    prop_assert!(server.spec.running);
                    prop_assert_eq!(server.status.as_ref().and_then(|s| s.phase), Some(Phase::Running));
                    prop_assert_eq!(port, SSH_PORT);
                }
                Err(Refusal::NoSuchServer(name)) => {
                    prop_assert_eq!(name, host);
                    prop_assert!(own.is_empty(), "one of theirs exists: {:?}", own.len());
                }
                Err(_) => prop_assert!(!own.is_empty(), "a refusal other than 'no such server' tells of another's server"),
            }
        }
    }
}
