//! The watch cache: kube-runtime reflectors over the ComputeServers of the namespace and over
//! the ComputeProfiles, an index of servers by owner, and a broadcast of every change for the
//! live status pages. Pages and the API read from here: no API call per page view.
//!
//! It also gives every server of the namespace its owner label when that is missing or wrong:
//! the API server's admission policy sets it only when `spec.owner` is itself a label value,
//! as CEL cannot compute the hashed form.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};

use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use tokio::sync::broadcast;
use tracing::warn;

use crate::api::{ComputeProfile, ComputeServer, OWNER_LABEL, owner_label};
use crate::runtime::watch;

/// A change to a server, for the live status pages.
#[derive(Clone, Debug)]
pub enum Change {
    /// Created or changed: its current state.
    Applied(Arc<ComputeServer>),
    /// Gone: its name.
    Deleted(String),
}

type ByOwner = HashMap<String, BTreeMap<String, Arc<ComputeServer>>>;

/// What the owner index needs of a watch event (the server itself is read from the store).
enum Indexed {
    /// A full list is in the store.
    Listed,
    Applied {
        name: String,
        owner: String,
    },
    Deleted {
        name: String,
        owner: String,
    },
}

impl Indexed {
    fn of(event: &watcher::Event<ComputeServer>) -> Option<Indexed> {
        let named = |s: &ComputeServer| (s.name_any(), s.spec.owner.clone());
        match event {
            watcher::Event::Init | watcher::Event::InitApply(_) => None,
            watcher::Event::InitDone => Some(Indexed::Listed),
            watcher::Event::Apply(server) => {
                let (name, owner) = named(server);
                Some(Indexed::Applied { name, owner })
            }
            watcher::Event::Delete(server) => {
                let (name, owner) = named(server);
                Some(Indexed::Deleted { name, owner })
            }
        }
    }
}

/// What the web front knows of the cluster, kept current by watches.
pub struct Cache {
    namespace: String,
    servers: Store<ComputeServer>,
    profiles: Store<ComputeProfile>,
    /// `spec.owner` → server name → server (the same `Arc`s as in the store).
    by_owner: RwLock<ByOwner>,
    /// For setting owner labels.
    api: Api<ComputeServer>,
    /// The owner index has been built from a full list.
    servers_synced: AtomicBool,
    changes: broadcast::Sender<Change>,
}

impl Cache {
    /// Starts the watches in the background; [`Cache::synced`] says when they have listed all.
    pub fn start(client: Client, namespace: &str) -> Arc<Cache> {
        let (events, mut received) = tokio::sync::mpsc::unbounded_channel();
        let servers = watch::reflect(
            Api::namespaced(client.clone(), namespace),
            watcher::Config::default(),
            watch::keep,
            move |event| {
                if let Some(event) = Indexed::of(event) {
                    let _ = events.send(event);
                }
            },
        );
        let profiles = watch::reflect(
            Api::all(client.clone()),
            watcher::Config::default(),
            watch::keep,
            |_| {},
        );
        let cache = Arc::new(Cache::new(client, namespace, servers, profiles));
        let me = cache.clone();
        tokio::spawn(async move {
            while let Some(event) = received.recv().await {
                me.index(event);
            }
        });
        cache
    }

    fn new(
        client: Client,
        namespace: &str,
        servers: Store<ComputeServer>,
        profiles: Store<ComputeProfile>,
    ) -> Cache {
        Cache {
            namespace: namespace.to_string(),
            servers,
            profiles,
            by_owner: RwLock::default(),
            api: Api::namespaced(client, namespace),
            servers_synced: AtomicBool::new(false),
            changes: broadcast::channel(1024).0,
        }
    }

    /// A cache of `servers` and `profiles` that never changes, for tests (`client` is where
    /// owner labels would be written).
    #[cfg(test)]
    pub fn in_memory(
        client: Client,
        namespace: &str,
        servers: Vec<ComputeServer>,
        profiles: Vec<ComputeProfile>,
    ) -> Arc<Cache> {
        let cache = Cache::new(client, namespace, watch::filled(servers), watch::filled(profiles));
        cache.index(Indexed::Listed);
        Arc::new(cache)
    }

    /// Keeps the owner index in step with the store (already updated by the reflector).
    fn index(&self, event: Indexed) {
        match event {
            // The store takes a relisted set only at InitDone: rebuild the index from it then.
            Indexed::Listed => {
                let mut index = ByOwner::new();
                for server in self.servers.state() {
                    self.label_owner(&server);
                    index
                        .entry(server.spec.owner.clone())
                        .or_default()
                        .insert(server.name_any(), server);
                }
                *self.by_owner.write().expect("index lock") = index;
                self.servers_synced.store(true, Ordering::Release);
            }
            Indexed::Applied { name, owner } => {
                let Some(stored) = self.stored(&name) else { return };
                self.label_owner(&stored);
                {
                    let mut index = self.by_owner.write().expect("index lock");
                    index.values_mut().for_each(|servers| {
                        servers.remove(&name);
                    });
                    index.entry(owner).or_default().insert(name, stored.clone());
                }
                let _ = self.changes.send(Change::Applied(stored));
            }
            Indexed::Deleted { name, owner } => {
                {
                    let mut index = self.by_owner.write().expect("index lock");
                    if let Some(servers) = index.get_mut(&owner) {
                        servers.remove(&name);
                    }
                }
                let _ = self.changes.send(Change::Deleted(name));
            }
        }
    }

    /// Sets the owner label of `server` if it is missing or wrong (made with kubectl, by a user
    /// whose name is not a label value). Every replica may do it at once: they write the same.
    fn label_owner(&self, server: &ComputeServer) {
        let want = owner_label(&server.spec.owner);
        if server.labels().get(OWNER_LABEL) == Some(&want) || server.metadata.deletion_timestamp.is_some() {
            return;
        }
        let (api, name) = (self.api.clone(), server.name_any());
        tokio::spawn(async move {
            let patch = serde_json::json!({"metadata": {"labels": {OWNER_LABEL: want}}});
            let params = PatchParams::default();
            match api.patch(&name, &params, &Patch::Merge(&patch)).await {
                Ok(_) => tracing::info!(server = %name, label = %want, "set the owner label"),
                Err(error) => warn!(server = %name, "could not set the owner label: {error}"),
            }
        });
    }

    fn stored(&self, name: &str) -> Option<Arc<ComputeServer>> {
        self.servers.get(&ObjectRef::new(name).within(&self.namespace))
    }

    /// Whether both watches have listed everything once (and the owner index is built).
    pub fn synced(&self) -> bool {
        self.servers_synced.load(Ordering::Acquire) && watch::synced(&self.profiles)
    }

    /// The servers whose `spec.owner` is `owner`, by name.
    pub fn owned_by(&self, owner: &str) -> Vec<Arc<ComputeServer>> {
        let index = self.by_owner.read().expect("index lock");
        index
            .get(owner)
            .map(|servers| servers.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Every server of the namespace, by owner and name (for admins).
    pub fn all(&self) -> Vec<Arc<ComputeServer>> {
        let mut all = self.servers.state();
        all.sort_by(|a, b| (&a.spec.owner, a.name_any()).cmp(&(&b.spec.owner, b.name_any())));
        all
    }

    /// One server by name, whoever owns it; callers check the owner.
    pub fn server(&self, name: &str) -> Option<Arc<ComputeServer>> {
        self.stored(name)
    }

    /// Waits (at most `timeout`) until the watch has brought server `name`, so that a page
    /// shown right after creating it finds it.
    pub async fn wait_for(&self, name: &str, timeout: std::time::Duration) -> bool {
        self.wait_until(name, |_| true, timeout).await
    }

    /// Waits (at most `timeout`) until the watch has brought server `name` in a state where
    /// `check` holds, such as a change just made.
    pub async fn wait_until(
        &self,
        name: &str,
        check: impl Fn(&ComputeServer) -> bool,
        timeout: std::time::Duration,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while !self.server(name).is_some_and(|s| check(&s)) {
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        true
    }

    /// One profile by name.
    pub fn profile(&self, name: &str) -> Option<Arc<ComputeProfile>> {
        self.profiles.get(&ObjectRef::new(name))
    }

    /// The profile `server` names (none when it names none, or one that does not exist).
    pub fn profile_of(&self, server: &ComputeServer) -> Option<Arc<ComputeProfile>> {
        self.profile(server.spec.profile.as_deref()?)
    }

    /// Every profile, by name.
    pub fn profiles(&self) -> Vec<Arc<ComputeProfile>> {
        let mut all = self.profiles.state();
        all.sort_by_key(|p| p.name_any());
        all
    }

    /// Changes to servers from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    /// The namespace the servers live in.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }
}
