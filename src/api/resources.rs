//! Resource amounts shared by servers, profiles and nodes.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// An amount of CPU, memory and GPUs.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    /// CPU cores as a Kubernetes quantity: "2", "500m" (half a core), "1.5".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "quantity_schema")]
    #[x_kube(
        validation = Rule::new("type(self) == int || isQuantity(self)").message("cpu must be a quantity such as \"2\", \"1.5\" or \"500m\""),
        validation = Rule::new("type(self) == int ? self > 0 : !isQuantity(self) || quantity(self).isGreaterThan(quantity('0'))").message("cpu must be more than zero"),
    )]
    pub cpu: Option<Quantity>,

    /// Memory as a Kubernetes quantity: "512Mi", "4Gi".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "quantity_schema")]
    #[x_kube(
        validation = Rule::new("type(self) == int || isQuantity(self)").message("memory must be a quantity such as \"512Mi\" or \"4Gi\""),
        validation = Rule::new("type(self) == int ? self > 0 : !isQuantity(self) || quantity(self).isGreaterThan(quantity('0'))").message("memory must be more than zero"),
    )]
    pub memory: Option<Quantity>,

    /// Number of whole GPUs.
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
