//! The `crd` role: every CustomResourceDefinition of the API, as YAML.
//!
//! The files in `crds/` are this output; `tests/crds.rs` fails when they drift.

use std::path::Path;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use crate::api::{ComputeNode, ComputeProfile, ComputeServer};
use crate::{Error, Result};

/// All CRDs, in the order they are documented.
pub fn all() -> Vec<CustomResourceDefinition> {
    vec![ComputeServer::crd(), ComputeProfile::crd(), ComputeNode::crd()]
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
