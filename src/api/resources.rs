//! Resource amounts shared by servers, profiles and nodes.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// An amount of CPU, memory and GPUs.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    /// CPU cores as a Kubernetes quantity: "2", "1.5", "500m" (half a core); from 10m (a
    /// hundredth of a core) to 4096. The container's CPU limit is exactly this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "quantity_schema")]
    #[x_kube(
        validation = Rule::new("type(self) == int || isQuantity(self)").message("cpu must be a quantity such as \"2\", \"1.5\" or \"500m\""),
        validation = Rule::new("type(self) == int ? self >= 1 : !isQuantity(self) || quantity(self).compareTo(quantity('10m')) >= 0").message("cpu must be at least 10m (a hundredth of a core)"),
        validation = Rule::new("type(self) == int ? self <= 4096 : !isQuantity(self) || quantity(self).compareTo(quantity('4096')) <= 0").message("cpu must be at most 4096 (cores)"),
    )]
    pub cpu: Option<Quantity>,

    /// Memory as a Kubernetes quantity: "512Mi", "1.5Gi", "4Gi"; from 6Mi (the smallest limit
    /// Docker accepts) to 64Ti. The container's memory limit is exactly this, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "quantity_schema")]
    #[x_kube(
        validation = Rule::new("type(self) == int || isQuantity(self)").message("memory must be a quantity such as \"512Mi\", \"1.5Gi\" or \"4Gi\""),
        validation = Rule::new("type(self) == int ? self >= 6291456 : !isQuantity(self) || quantity(self).compareTo(quantity('6Mi')) >= 0").message("memory must be at least 6Mi (the smallest limit Docker accepts)"),
        validation = Rule::new("type(self) == int ? self <= 70368744177664 : !isQuantity(self) || quantity(self).compareTo(quantity('64Ti')) <= 0").message("memory must be at most 64Ti"),
    )]
    pub memory: Option<Quantity>,

    /// Number of whole GPUs. A profile allows GPUs only up to its maxResources.gpus (unset: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 64))]
    pub gpus: Option<i32>,
}

/// Amounts a node reports (capacity, allocated): as [`Resources`], and zero is fine.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Amounts {
    /// CPU cores as a Kubernetes quantity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "quantity_schema")]
    pub cpu: Option<Quantity>,

    /// Memory as a Kubernetes quantity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "quantity_schema")]
    pub memory: Option<Quantity>,

    /// Number of whole GPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus: Option<i32>,
}

/// A Kubernetes quantity: an integer, or a string such as "500m" or "4Gi".
pub fn quantity_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "x-kubernetes-int-or-string": true,
        "anyOf": [{"type": "integer"}, {"type": "string", "maxLength": 64}],
    })
}
