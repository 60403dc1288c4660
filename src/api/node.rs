//! `ComputeNode`: one Docker host, registered and kept up to date by its agent.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::Amounts;

/// A Docker host that runs compute servers. Its agent creates it and keeps its status;
/// select nodes for servers with its labels.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "computeserver.io",
    version = "v1alpha1",
    kind = "ComputeNode",
    status = "ComputeNodeStatus",
    shortname = "cnode",
    category = "compute",
    derive = "PartialEq",
    doc = "A Docker host that runs compute servers, registered and kept up to date by its agent.",
    printcolumn(
        name = "CPU",
        type_ = "string",
        json_path = ".status.capacity.cpu",
        description = "CPU cores on the host"
    ),
    printcolumn(
        name = "Memory",
        type_ = "string",
        json_path = ".status.capacity.memory",
        description = "Memory on the host"
    ),
    printcolumn(
        name = "CPU Ratio",
        type_ = "string",
        json_path = ".spec.cpuAllocationRatio",
        description = "How many times its CPUs may be promised to servers"
    ),
    printcolumn(
        name = "CPU Used",
        type_ = "string",
        json_path = ".status.allocated.cpu",
        description = "CPU given to servers"
    ),
    printcolumn(
        name = "Mem Ratio",
        type_ = "string",
        json_path = ".spec.memoryAllocationRatio",
        description = "How many times its memory may be promised to servers"
    ),
    printcolumn(
        name = "Memory Used",
        type_ = "string",
        json_path = ".status.allocated.memory",
        description = "Memory given to servers"
    ),
    printcolumn(name = "Servers", type_ = "integer", json_path = ".status.servers"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct ComputeNodeSpec {
    /// When true, no new servers are placed here (servers already here keep running),
    /// as `kubectl cordon` does for Nodes.
    #[serde(default)]
    pub unschedulable: bool,

    /// How many times the host's CPUs may be promised to servers, such as "4" (OpenStack's
    /// cpu_allocation_ratio): interactive servers are idle most of the time. Each container's
    /// own limit stays its full size. Set by the agent's --cpu-allocation-ratio when empty;
    /// an admin's value stays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(RATIO_RULE).message(RATIO_MESSAGE))]
    pub cpu_allocation_ratio: Option<String>,

    /// How many times the host's memory may be promised to servers, such as "1" (no
    /// overcommit: a server past its share is killed by the kernel, not slowed down). Set by
    /// the agent's --memory-allocation-ratio when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(RATIO_RULE).message(RATIO_MESSAGE))]
    pub memory_allocation_ratio: Option<String>,
}

/// The CRD's rule for allocation ratios: as [`super::size::ratio_milli`].
const RATIO_RULE: &str =
    "self.matches('^[0-9]{1,2}([.][0-9]{1,3})?$') && double(self) >= 0.5 && double(self) <= 64.0";
const RATIO_MESSAGE: &str =
    "allocation ratios are numbers from 0.5 to 64 with at most 3 decimals, such as \"4\" or \"1.5\"";

/// What the agent last reported about its host.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ComputeNodeStatus {
    /// Everything the host offers to servers.
    #[serde(default)]
    pub capacity: Amounts,

    /// What the servers placed here have asked for.
    #[serde(default)]
    pub allocated: Amounts,

    /// Number of servers placed here.
    #[serde(default)]
    pub servers: i32,

    /// Host name or address users' connections reach this host at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,

    /// Version of the host's Docker engine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_version: Option<String>,

    /// Ready: the agent reports in, Docker answers and the servers' firewall is in place.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "super::conditions_schema")]
    pub conditions: Vec<Condition>,

    /// Data volumes on this host whose ComputeServer is gone (its agent was not there when it
    /// was deleted, or the API server lost it). Kept until an admin removes them with
    /// `compute-server agent prune --node NAME --older-than 7d`. At most 100, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub orphaned_volumes: Vec<OrphanedVolume>,

    /// The host's GPUs (found with nvidia-smi, or given with --gpu-devices) and which server
    /// holds each. capacity.gpus is their number.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpus: Vec<NodeGpu>,
}

/// One GPU of a host.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodeGpu {
    /// The ID servers are given it by: its index or UUID, as Docker's --gpus device= takes it.
    pub id: String,
    /// The GPU's UUID, when nvidia-smi found it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// Its model, such as "NVIDIA A100-SXM4-40GB".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Its memory, such as "40960 MiB".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// The server that holds it, as NAMESPACE/NAME; none when free.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
}

/// A data volume kept on a node after its server went.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OrphanedVolume {
    /// The Docker volume's name.
    pub volume: String,
    /// The name of the ComputeServer it belonged to.
    pub server: String,
    /// That server's namespace.
    pub namespace: String,
    /// That server's uid.
    pub uid: String,
    /// When Docker made the volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<Time>,
    /// When the agent first saw it without its server.
    pub orphaned_since: Time,
}
