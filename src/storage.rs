//! The install's object store, where snapshots are kept: any S3-compatible store, Google Cloud
//! Storage, Azure Blob Storage or a local folder, through the `object_store` crate. Shared by
//! the agent (which writes and reads snapshots) and the web front (which offers them).

use std::sync::Arc;

use object_store::ObjectStore;
use object_store::path::Path;

/// Flags of the roles that use the object store.
#[derive(clap::Args, Debug, Clone)]
pub struct SnapshotStore {
    /// Where snapshots are kept: s3://BUCKET[/PREFIX] (any S3-compatible store: give its address in
    /// AWS_ENDPOINT, and AWS_ALLOW_HTTP=true for plain HTTP), gs://BUCKET, az://CONTAINER or
    /// file:///PATH. Credentials come from the environment as each store reads them
    /// (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, GOOGLE_SERVICE_ACCOUNT, AZURE_STORAGE_ACCOUNT_KEY,
    /// ...), in a Kubernetes Secret; they are never logged. Unset: no snapshots on this install.
    #[arg(long, env = "COMPUTE_SERVER_SNAPSHOT_STORE")]
    pub snapshot_store: Option<url::Url>,
}

/// An object store and the folder in it that holds compute-server's objects.
#[derive(Clone, Debug)]
pub struct Store {
    pub objects: Arc<dyn ObjectStore>,
    /// The prefix given in the URL (empty: the bucket's root).
    pub root: Path,
    /// The URL, for messages and logs (it holds no secret: credentials come from the environment).
    pub url: String,
}

/// What the environment may say about a store: its variables, by object_store's names.
const PREFIXES: [&str; 3] = ["AWS_", "GOOGLE_", "AZURE_"];

impl Store {
    /// Opens the store at `url`, configured from the environment (see [`SnapshotStore`]).
    pub fn open(url: &url::Url) -> Result<Store, object_store::Error> {
        let options = std::env::vars()
            .filter(|(key, _)| PREFIXES.iter().any(|p| key.starts_with(p)))
            .map(|(key, value)| (key.to_ascii_lowercase(), value));
        let (objects, root) = object_store::parse_url_opts(url, options)?;
        Ok(Store {
            objects: Arc::from(objects),
            root,
            url: url.to_string(),
        })
    }

    /// Opens the store the flags name, if any.
    pub fn from_args(args: &SnapshotStore) -> Result<Option<Store>, object_store::Error> {
        args.snapshot_store.as_ref().map(Store::open).transpose()
    }

    /// The path of `relative` (slash-separated) under the store's root.
    pub fn path(&self, relative: &str) -> Path {
        relative
            .split('/')
            .filter(|part| !part.is_empty())
            .fold(self.root.clone(), |path, part| path.join(part))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_store_puts_objects_under_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let url = url::Url::from_directory_path(dir.path()).unwrap();
        let store = Store::open(&url).unwrap();
        let path = store.path("snapshots/compute/dev/u1/manifest.json");
        assert!(path.as_ref().ends_with("snapshots/compute/dev/u1/manifest.json"));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            object_store::ObjectStoreExt::put(store.objects.as_ref(), &path, "{}".into())
                .await
                .unwrap();
        });
        assert!(dir.path().join("snapshots/compute/dev/u1/manifest.json").exists());
    }
}
