//! A status written by server-side apply: each role owns the status fields it sets under its
//! own field manager (docs/ARCHITECTURE.md, "Who writes which field"), and takes them over
//! from an earlier owner (`force`).

use kube::api::{Patch, PatchParams};
use kube::{Api, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Applies `patch` (an object with `apiVersion`, `kind` and the `status` fields this manager
/// owns) to the status of `name`, as `manager`.
pub async fn apply<K>(
    api: &Api<K>,
    name: &str,
    manager: &str,
    patch: &(impl Serialize + std::fmt::Debug),
) -> kube::Result<K>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    api.patch_status(name, &PatchParams::apply(manager).force(), &Patch::Apply(patch))
        .await
}
