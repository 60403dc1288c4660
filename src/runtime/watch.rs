//! Watch caches: a kube-runtime reflector per kind, kept small (no `managedFields`), with one
//! way to ask whether it has loaded its first full list.

use futures::{FutureExt, StreamExt};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};
use tracing::warn;

/// Starts a reflector over `api` in the background and returns its store. Every object loses
/// its `managedFields` (most of its size; no role reads them) and then goes through `trim`;
/// `each` sees every event after the store has taken it. Watch errors are logged and retried
/// with backoff.
pub fn reflect<K>(
    api: Api<K>,
    config: watcher::Config,
    trim: fn(&mut K),
    mut each: impl FnMut(&watcher::Event<K>) + Send + 'static,
) -> Store<K>
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
{
    let (store, writer) = reflector::store();
    let kind = K::kind(&Default::default()).to_string();
    let stream = watcher(api, config)
        .default_backoff()
        .modify(move |object| {
            object.managed_fields_mut().clear();
            trim(object);
        })
        .reflect(writer);
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(event) => each(&event),
                Err(error) => warn!(%error, %kind, "watch failed; retrying"),
            }
        }
    });
    store
}

/// Leaves an object as it is: for [`reflect`]'s `trim`.
pub fn keep<K>(_: &mut K) {}

/// Whether `store` has loaded its first full list (the one answer to "is the cache ready").
pub fn synced<K>(store: &Store<K>) -> bool
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    store.wait_until_ready().now_or_never().is_some_and(|r| r.is_ok())
}

/// A store holding `items` as a watch's first full list would: ready, for tests.
#[cfg(test)]
pub fn filled<K>(items: Vec<K>) -> Store<K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let (store, mut writer) = reflector::store();
    writer.apply_watcher_event(&watcher::Event::Init);
    for item in items {
        writer.apply_watcher_event(&watcher::Event::InitApply(item));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
    store
}
