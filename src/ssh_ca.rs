//! The user CA that browser sessions go through, as the bastion, the agents and the web front
//! share it, and the SSH server settings of the bastion and the nodes' gateways ([`server_config`]): the CA's public keys (a file as sshd's `TrustedUserCAKeys`), and the principal a
//! certificate must name to log in to one server's sshd as root.
//!
//! The web front signs short-lived certificates with the CA's private key (`web::ssh`); the
//! bastion accepts them for the user they name; each server's root account accepts them for
//! its own principal only, by an `authorized_keys` line the agent writes (`cert-authority,
//! principals="…"`), so a certificate for one server opens no other.

use std::path::Path;

use kube::ResourceExt;
use russh::keys::ssh_key::Fingerprint;
use russh::keys::ssh_key::certificate::CertType;
use russh::keys::{Certificate, HashAlg, PublicKey};

use crate::api::ComputeServer;
use crate::{Error, Result};

/// The CA public keys in `path`: one OpenSSH public key per line; blank lines and `#`
/// comments are skipped. At least one.
pub fn read_public_keys(path: &Path) -> Result<Vec<PublicKey>> {
    let error = |reason: String| Error::UserCa {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
    let keys = parse_public_keys(&text).map_err(error)?;
    if keys.is_empty() {
        return Err(error("it holds no CA public key".into()));
    }
    Ok(keys)
}

fn parse_public_keys(text: &str) -> Result<Vec<PublicKey>, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .enumerate()
        .map(|(n, line)| {
            PublicKey::from_openssh(line)
                .map_err(|e| format!("key {} is not an SSH public key line ({e})", n + 1))
        })
        .collect()
}

/// Whether `cert` lets `user` log in at `now` (seconds since 1970): a user certificate signed
/// by one of the trusted `cas`, valid now, naming `user` among its principals, with no
/// critical options (this bastion enforces none, so it accepts none). The reason otherwise.
///
/// The client's possession of the certified key is checked by russh before this is asked.
pub fn check_certificate(
    cert: &Certificate,
    user: &str,
    cas: &[Fingerprint],
    now: u64,
) -> Result<(), &'static str> {
    if cert.cert_type() != CertType::User {
        return Err("a host certificate, not a user certificate");
    }
    if !cas.contains(&cert.signature_key().fingerprint(HashAlg::Sha256)) {
        return Err("certificate signed by a CA not trusted here");
    }
    cert.validate_at(now, cas)
        .map_err(|_| "certificate expired, not yet valid, or badly signed")?;
    if !cert.valid_principals().iter().any(|principal| principal == user) {
        return Err("certificate is not for this user (not among its principals)");
    }
    if !cert.critical_options().is_empty() {
        return Err("certificate has critical options, which this bastion does not enforce");
    }
    Ok(())
}

/// What the bastion and the nodes' SSH gateways offer, as ssh-audit's hardening guides keep it: hybrid post-quantum and
/// X25519 key exchange only (no finite-field Diffie-Hellman, the DHEat target), with strict key
/// exchange against Terrapin; AEAD ciphers or CTR with encrypt-then-MAC MACs only. Host key
/// algorithms are narrowed to the host key's own type when offered; RSA only with SHA-2.
pub const PREFERRED: russh::Preferred = russh::Preferred {
    kex: std::borrow::Cow::Borrowed(&[
        russh::kex::MLKEM768X25519_SHA256,
        russh::kex::CURVE25519,
        russh::kex::CURVE25519_PRE_RFC_8731,
        russh::kex::EXTENSION_SUPPORT_AS_SERVER,
        russh::kex::EXTENSION_OPENSSH_STRICT_KEX_AS_SERVER,
    ]),
    key: std::borrow::Cow::Borrowed(&[
        russh::keys::Algorithm::Ed25519,
        russh::keys::Algorithm::Ecdsa {
            curve: russh::keys::EcdsaCurve::NistP256,
        },
        russh::keys::Algorithm::Ecdsa {
            curve: russh::keys::EcdsaCurve::NistP384,
        },
        russh::keys::Algorithm::Ecdsa {
            curve: russh::keys::EcdsaCurve::NistP521,
        },
        russh::keys::Algorithm::Rsa {
            hash: Some(russh::keys::HashAlg::Sha512),
        },
        russh::keys::Algorithm::Rsa {
            hash: Some(russh::keys::HashAlg::Sha256),
        },
    ]),
    host_key_certificates: std::borrow::Cow::Borrowed(&[]),
    cipher: std::borrow::Cow::Borrowed(&[
        russh::cipher::CHACHA20_POLY1305,
        russh::cipher::AES_256_GCM,
        russh::cipher::AES_128_GCM,
        russh::cipher::AES_256_CTR,
        russh::cipher::AES_192_CTR,
        russh::cipher::AES_128_CTR,
    ]),
    mac: std::borrow::Cow::Borrowed(&[russh::mac::HMAC_SHA512_ETM, russh::mac::HMAC_SHA256_ETM]),
    compression: russh::Preferred::DEFAULT.compression,
};

/// The SSH server settings the bastion and the nodes' SSH gateways share, with `host_key`:
/// public keys only, [`PREFERRED`] algorithms, OpenSSH's first "none" probe answered at once
/// and real refusals after a second, no inactivity timeout (a quiet session through a jump is
/// fine) but keepalives that find a dead client.
pub fn server_config(host_key: russh::keys::PrivateKey) -> russh::server::Config {
    russh::server::Config {
        methods: (&[russh::MethodKind::PublicKey][..]).into(),
        keys: vec![host_key],
        preferred: PREFERRED,
        auth_rejection_time: std::time::Duration::from_secs(1),
        auth_rejection_time_initial: Some(std::time::Duration::ZERO),
        inactivity_timeout: None,
        keepalive_interval: Some(std::time::Duration::from_secs(30)),
        keepalive_max: 3,
        nodelay: true,
        ..Default::default()
    }
}

/// The principal that lets a certificate log in as root to `server`, and to no other: its uid.
pub fn server_principal(server: &ComputeServer) -> String {
    format!("compute-server:{}", server.uid().unwrap_or_default())
}

/// The `authorized_keys` line that lets certificates of `ca` for `principal` log in.
pub fn authorized_line(ca: &PublicKey, principal: &str) -> String {
    let mut ca = ca.clone();
    ca.set_comment("compute-server user CA");
    let key = ca.to_openssh().unwrap_or_default();
    format!("cert-authority,principals=\"{principal}\" {key}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const CA: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl ca@example";

    #[test]
    fn ca_files_are_read_as_sshd_reads_them() {
        let keys = parse_public_keys(&format!("# our CA\n\n{CA}\n")).unwrap();
        assert_eq!(keys.len(), 1);
        let error = parse_public_keys("not a key").unwrap_err();
        assert!(error.contains("key 1 is not an SSH public key line"), "{error}");
    }

    #[test]
    fn a_server_trusts_the_ca_for_its_own_principal_only() {
        let server: ComputeServer = serde_yaml::from_str(
            "apiVersion: computeserver.io/v1alpha1\nkind: ComputeServer\n\
             metadata: {name: dev, namespace: compute, uid: 1234-abcd}\nspec: {owner: alice}\n",
        )
        .unwrap();
        assert_eq!(server_principal(&server), "compute-server:1234-abcd");
        let ca = PublicKey::from_openssh(CA).unwrap();
        let line = authorized_line(&ca, &server_principal(&server));
        assert_eq!(
            line,
            "cert-authority,principals=\"compute-server:1234-abcd\" ssh-ed25519 \
             AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl compute-server user CA"
        );
    }
}
