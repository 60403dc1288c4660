//! The API of compute-server: group `computeserver.io`, version `v1alpha1`.
//!
//! Plain data types without I/O. Doc comments on fields are what `kubectl explain`
//! shows, so they are written for the people who operate the cluster.

// kube-derive's repeated `printcolumn(type_ = ...)` arguments look like duplicated attributes to clippy.
#![allow(clippy::duplicated_attributes)]

mod node;
mod profile;
mod resources;
mod server;

pub use node::{ComputeNode, ComputeNodeSpec, ComputeNodeStatus};
pub use profile::{ComputeProfile, ComputeProfileSpec};
pub use resources::{Amounts, Resources, quantity_schema};
pub use server::{ComputeServer, ComputeServerSpec, ComputeServerStatus, Endpoint, EnvVar, Phase, Port};

/// The API group.
pub const GROUP: &str = "computeserver.io";

/// Label with the node a server is placed on (set by the scheduler, or by hand to pin).
pub const NODE_LABEL: &str = "computeserver.io/node";
/// Label with the label-safe form of `spec.owner`; for filtering only.
pub const OWNER_LABEL: &str = "computeserver.io/owner";
/// Finalizer that keeps a server until its container is gone.
pub const CONTAINER_FINALIZER: &str = "computeserver.io/container";

/// Condition type: the server has a node.
pub const CONDITION_SCHEDULED: &str = "Scheduled";
/// Condition type: the server's container runs as asked.
pub const CONDITION_READY: &str = "Ready";

/// Schema for a list of conditions keyed by `type`, as Kubernetes' own types have them.
pub fn conditions_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    use schemars::JsonSchema;
    let mut schema = <Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>>::json_schema(generator);
    schema.insert("x-kubernetes-list-type".into(), "map".into());
    schema.insert("x-kubernetes-list-map-keys".into(), serde_json::json!(["type"]));
    schema
}
