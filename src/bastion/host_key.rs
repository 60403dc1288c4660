//! The bastion's host key, kept across restarts (and shared by replicas) so that clients'
//! known_hosts entries stay valid: a file locally, a Secret in the cluster.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use russh::keys::ssh_key::LineEnding;
use russh::keys::{Algorithm, PrivateKey};
use tracing::info;

use super::{Error, Result};

/// The key in the Secret's data that holds the private key in OpenSSH format.
pub const SECRET_KEY: &str = "ssh_host_ed25519_key";

fn generate() -> Result<PrivateKey> {
    PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519).map_err(|e| Error::HostKey {
        origin: "a new ed25519 key".into(),
        reason: e.to_string(),
    })
}

fn to_openssh(key: &PrivateKey, origin: &str) -> Result<String> {
    key.to_openssh(LineEnding::LF)
        .map(|text| text.to_string())
        .map_err(|e| Error::HostKey {
            origin: origin.into(),
            reason: e.to_string(),
        })
}

/// An unencrypted private key in OpenSSH form, or PKCS#8 PEM (`BEGIN PRIVATE KEY`, what
/// `openssl genpkey` and Helm's `genPrivateKey` make).
fn parse(text: &[u8], origin: &str) -> Result<PrivateKey> {
    let error = |e: String| Error::HostKey {
        origin: origin.into(),
        reason: format!("not an unencrypted OpenSSH or PKCS#8 private key ({e})"),
    };
    let text = std::str::from_utf8(text).map_err(|e| error(e.to_string()))?;
    russh::keys::decode_secret_key(text, None).map_err(|e| error(e.to_string()))
}

/// Reads the key in `path`, or makes a new ed25519 key there (mode 0600) if there is none.
pub fn from_file(path: &Path) -> Result<PrivateKey> {
    let origin = path.display().to_string();
    match std::fs::read(path) {
        Ok(text) => return parse(&text, &origin),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(Error::HostKey {
                origin,
                reason: e.to_string(),
            });
        }
    }
    let key = generate()?;
    let write = |text: &str| -> std::io::Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        // create_new: never overwrite a key another process wrote meanwhile.
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()
    };
    write(&to_openssh(&key, &origin)?).map_err(|e| Error::HostKey {
        origin: origin.clone(),
        reason: e.to_string(),
    })?;
    info!(path = %origin, "made a new host key");
    Ok(key)
}

/// Reads the key from Secret `name` in `namespace`, or creates that Secret with a new key.
pub async fn from_secret(client: Client, namespace: &str, name: &str) -> Result<PrivateKey> {
    let origin = format!("Secret {namespace}/{name}");
    let secrets: Api<Secret> = Api::namespaced(client, namespace);
    if let Some(secret) = secrets.get_opt(name).await.map_err(Error::Kube)? {
        return from_secret_data(&secret, &origin);
    }
    let key = generate()?;
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".into(),
                "compute-server".into(),
            )])),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([(
            SECRET_KEY.into(),
            ByteString(to_openssh(&key, &origin)?.into_bytes()),
        )])),
        ..Secret::default()
    };
    match secrets.create(&PostParams::default(), &secret).await {
        Ok(_) => {
            info!(secret = %origin, "made a new host key");
            Ok(key)
        }
        // Another replica made it first: use theirs, so all replicas show one key.
        Err(kube::Error::Api(status)) if status.is_already_exists() => {
            let secret = secrets.get(name).await.map_err(Error::Kube)?;
            from_secret_data(&secret, &origin)
        }
        Err(e) => Err(Error::Kube(e)),
    }
}

fn from_secret_data(secret: &Secret, origin: &str) -> Result<PrivateKey> {
    let data = secret
        .data
        .as_ref()
        .and_then(|data| data.get(SECRET_KEY))
        .ok_or_else(|| Error::HostKey {
            origin: origin.into(),
            reason: format!("it has no data key {SECRET_KEY}"),
        })?;
    parse(&data.0, origin)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_new_key_file_is_private_and_read_back_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/host_key");
        let made = from_file(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let read = from_file(&path).unwrap();
        assert_eq!(made.public_key(), read.public_key());
        assert_eq!(read.algorithm(), Algorithm::Ed25519);
    }

    #[test]
    fn a_file_that_is_not_a_key_is_an_error_that_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("host_key");
        std::fs::write(&path, "hello").unwrap();
        let error = from_file(&path).unwrap_err().to_string();
        assert!(error.contains("host_key"), "{error}");
        assert!(
            error.contains("not an unencrypted OpenSSH or PKCS#8 private key"),
            "{error}"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "hello", "left as it was");
    }

    #[test]
    fn a_pkcs8_key_as_helm_makes_it_is_read() {
        // `openssl genpkey -algorithm ed25519`; Helm's genPrivateKey "ed25519" writes the same form.
        let pem = "-----BEGIN PRIVATE KEY-----\n\
                   MC4CAQAwBQYDK2VwBCIEIP5/UImfS+INiWvREnUQVLTp/1kZXXCFoKLwTBE4J5QF\n\
                   -----END PRIVATE KEY-----\n";
        let key = parse(pem.as_bytes(), "test").unwrap();
        assert_eq!(key.algorithm(), Algorithm::Ed25519);
    }
}
