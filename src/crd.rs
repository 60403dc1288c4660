//! The `crd` role: every CustomResourceDefinition of the API, as YAML.
//!
//! The files in `crds/` are this output; `tests/crds.rs` fails when they drift. With `--apply`
//! it brings a cluster's CRDs to this version (the Helm chart's pre-upgrade hook).

use std::path::Path;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use kube::{CustomResourceExt, ResourceExt};

use crate::api::{ComputeNode, ComputeProfile, ComputeQuota, ComputeServer, ComputeSnapshot, ComputeUsage};
use crate::{Error, Result};

/// All CRDs, in the order they are documented.
pub fn all() -> Vec<CustomResourceDefinition> {
    vec![
        ComputeServer::crd(),
        ComputeProfile::crd(),
        ComputeNode::crd(),
        ComputeSnapshot::crd(),
        ComputeQuota::crd(),
        ComputeUsage::crd(),
    ]
}

/// The file name in `crds/` for a CRD: `<plural>.<group>.yaml`.
pub fn file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}.yaml", crd.metadata.name.as_deref().unwrap_or("unnamed"))
}

/// One CRD as a YAML document.
pub fn to_yaml(crd: &CustomResourceDefinition) -> Result<String> {
    serde_yaml::to_string(crd).map_err(Error::Yaml)
}

/// All CRDs as one multi-document YAML stream.
pub fn all_yaml() -> Result<String> {
    let docs = all().iter().map(to_yaml).collect::<Result<Vec<_>>>()?;
    Ok(docs.iter().map(|doc| format!("---\n{doc}")).collect())
}

/// Writes each CRD to `<dir>/<plural>.<group>.yaml`.
pub fn write_dir(dir: &Path) -> Result<()> {
    for crd in all() {
        let path = dir.join(file_name(&crd));
        std::fs::write(&path, to_yaml(&crd)?).map_err(|source| Error::Write { path, source })?;
    }
    Ok(())
}

/// The field manager of `crd --apply`.
pub const FIELD_MANAGER: &str = "compute-server-crds";

/// Applies every CRD server-side (taking over the fields Helm's install wrote) and prints, per
/// CRD, whether it was created, updated or already this version's.
pub async fn apply() -> Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(crate::kube_client::connect().await?);
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for crd in all() {
        let name = crd.name_any();
        let before = api.get_opt(&name).await.map_err(Error::Kube)?;
        let after = api
            .patch(&name, &params, &Patch::Apply(&crd))
            .await
            .map_err(Error::Kube)?;
        let what = match before {
            None => "created",
            Some(b) if b.resource_version() == after.resource_version() => "unchanged",
            Some(_) => "updated",
        };
        println!("customresourcedefinition {name}: {what}");
    }
    Ok(())
}
