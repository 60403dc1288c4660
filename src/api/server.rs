//! `ComputeServer`: one person's container on one of the cluster's Docker hosts.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::Resources;

/// A personal compute server: a container on one of the cluster's Docker hosts,
/// reachable over SSH. Users request them through the web front; admins may also
/// create them with kubectl.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "computeserver.io",
    version = "v1alpha1",
    kind = "ComputeServer",
    namespaced,
    status = "ComputeServerStatus",
    shortname = "csrv",
    category = "compute",
    derive = "PartialEq",
    doc = "A personal compute server: a container on one of the cluster's Docker hosts, reachable over SSH.",
    printcolumn(
        name = "Owner",
        type_ = "string",
        json_path = ".spec.owner",
        description = "Who the server belongs to"
    ),
    printcolumn(
        name = "Profile",
        type_ = "string",
        json_path = ".spec.profile",
        description = "The ComputeProfile it was made from"
    ),
    printcolumn(
        name = "Node",
        type_ = "string",
        json_path = ".status.node",
        description = "The Docker host it runs on"
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Where it is in its life"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    printcolumn(
        name = "Message",
        type_ = "string",
        json_path = ".status.message",
        priority = 1,
        description = "What is happening, in plain words"
    ),
    printcolumn(
        name = "Stops At",
        // A time, not an age: kubectl shows a date in the future as <invalid>.
        type_ = "string",
        json_path = ".status.stopsAt",
        priority = 1,
        description = "When it stops by itself (idle, or its lifetime ends) unless kept running"
    ),
    printcolumn(
        name = "Stop Reason",
        type_ = "string",
        json_path = ".status.stopReason",
        priority = 1,
        description = "Why it stops, or why it was stopped"
    ),
    selectable = ".spec.owner"
)]
#[x_kube(validation = Rule::new("!has(oldSelf.restoreFrom) || has(self.restoreFrom)").message("spec.restoreFrom cannot be removed once set"))]
#[x_kube(validation = Rule::new("has(self.profile) || has(self.image)").message("set spec.profile (the name of a ComputeProfile) or spec.image (a container image)"))]
#[serde(rename_all = "camelCase")]
pub struct ComputeServerSpec {
    /// The Keycloak username (preferred_username) of the person who owns this server.
    /// Only they (and admins) can see, reach and manage it. Cannot be changed.
    #[x_kube(
        validation = Rule::new("self != ''").message("spec.owner must name the Keycloak user who owns this server"),
        validation = Rule::new("self == oldSelf").message("spec.owner cannot be changed; create a new server for the new owner"),
    )]
    #[schemars(length(max = 253))]
    pub owner: String,

    /// The owner's Keycloak groups when the server was made: what group budgets (ComputeQuota)
    /// count it against. Set by the web front from the owner's token, and by the API server's
    /// admission policy from the groups of whoever creates their own server with kubectl; only
    /// compute-server admins set it for others. Cannot be changed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("spec.ownerGroups cannot be changed"))]
    pub owner_groups: Vec<String>,

    /// Others who may reach this server, each a user or a group with a role: `view` (sees it,
    /// its status, Events and web apps), `use` (also its terminal, SSH through the bastion, start,
    /// stop, keep running) or `admin` (also changes this list, with roles up to `use`). Only the
    /// owner and compute-server admins delete, resize or snapshot a server. Changed by the owner,
    /// an `admin` sharee or compute-server admins ("Share..." on the server's page).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new("self.all(s, self.exists_one(t, (has(t.user) ? 'user ' + t.user : 'group ' + t.group) == (has(s.user) ? 'user ' + s.user : 'group ' + s.group)))").message("sharedWith lists each user or group once; give each one role"))]
    pub shared_with: Vec<super::Share>,

    /// The ComputeProfile this server is made from: it gives the image, default and
    /// maximum sizes, and who may use it (`kubectl get computeprofiles`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub profile: Option<String>,

    /// Container image to run, when not taken from the profile (admins, via kubectl), such as
    /// "debian:bookworm".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::image_schema")]
    pub image: Option<String>,

    /// Command to run instead of the profile's (spec.command of the ComputeProfile) or the
    /// image's default.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub command: Vec<String>,

    /// Environment variables for the container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new("self.all(e, self.exists_one(f, f.name == e.name))").message("environment variable names must be unique"))]
    pub env: Vec<EnvVar>,

    /// CPU, memory and GPUs for the server. Unset values come from the profile.
    #[serde(default)]
    pub resources: Resources,

    /// SSH public keys allowed to log in, one key per entry, as in an authorized_keys
    /// file: "ssh-ed25519 AAAA... alice@laptop".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "ssh_keys_schema")]
    pub ssh_authorized_keys: Vec<String>,

    /// Ports the container listens on. Each is published on the node at a port Docker
    /// chooses and reported in status.endpoints.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[x_kube(validation = Rule::new("self.all(p, self.exists_one(q, q.name == p.name))").message("port names must be unique"))]
    pub ports: Vec<Port>,

    /// Whether the container should run. Set to false to stop the server and keep its
    /// container and data; set back to true to start it again.
    #[serde(default = "default_true")]
    pub running: bool,

    /// Run only on ComputeNodes with all of these labels (`kubectl get computenodes --show-labels`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,

    /// Keep the server running until this time (RFC 3339), past an idle or lifetime stop, up to
    /// its profile's lifecycle.maxExtension ("Keep running" on the web page sets it). A later
    /// time is cut to what the profile allows, and status.stopReason says so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_running_until: Option<Time>,

    /// Start from this snapshot (a ComputeSnapshot of the same owner in this namespace): its
    /// data and the system changes it holds are restored into the server's new data volume
    /// before it first starts, on whichever node it is placed: a clone of another of your
    /// servers, or yesterday's state of this one. Set when the server is created; changed later
    /// only to move a server off a lost node (phase NodeLost: the admission policy holds to
    /// that), which restores it from that snapshot on another node. A restore never overwrites
    /// data a node holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_from: Option<super::RestoreFrom>,
}

/// Each entry is checked on its own, so the API server's message names the bad one.
fn ssh_keys_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "maxItems": 32,
        "items": {
            "type": "string",
            "maxLength": 16384,
            "x-kubernetes-validations": [{
                "rule": r"self.matches('^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\\.com|sk-ecdsa-sha2-nistp256@openssh\\.com) AAAA[A-Za-z0-9+/]+={0,3}( [^\\r\\n]*)?$')",
                "message": "must be one SSH public key line, such as \"ssh-ed25519 AAAAC3Nza... alice@laptop\" (the contents of ~/.ssh/id_ed25519.pub)",
            }],
        },
    })
}

fn default_true() -> bool {
    true
}

/// An environment variable.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct EnvVar {
    /// The variable's name: letters, digits and underscores, not starting with a digit.
    #[schemars(length(max = 256))]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z_][A-Za-z0-9_]*$')").message("environment variable names must start with a letter or underscore and hold only letters, digits and underscores, such as MY_VAR"))]
    pub name: String,

    /// The variable's value.
    #[serde(default)]
    #[schemars(length(max = 32768))]
    pub value: String,
}

/// A port the container listens on.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Port {
    /// A short name for the port, such as "ssh" or "http": lowercase letters, digits
    /// and dashes, at most 15 characters.
    #[schemars(length(max = 63))]
    #[x_kube(validation = Rule::new("size(self) <= 15 && self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')").message("port names must be 1 to 15 lowercase letters, digits or dashes, starting and ending with a letter or digit, such as \"ssh\""))]
    pub name: String,

    /// The port number inside the container, from 1 to 65535.
    #[x_kube(validation = Rule::new("self >= 1 && self <= 65535").message("containerPort must be a port number from 1 to 65535"))]
    pub container_port: i32,

    /// `http`: a web app (Jupyter, code-server, TensorBoard) the web front serves to the owner
    /// at /servers/NAME/apps/PORT-NAME/, through an SSH tunnel into the server; it is not
    /// published on the node, so it may listen on 127.0.0.1 only. Unset: a plain port,
    /// published on the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_protocol: Option<AppProtocol>,
}

impl Port {
    /// Whether the web front serves this port as a web app.
    pub fn is_app(&self) -> bool {
        self.app_protocol == Some(AppProtocol::Http)
    }
}

/// What a port speaks, for the web front.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AppProtocol {
    /// A web app over HTTP (WebSockets included).
    Http,
}

/// The server's ports: its profile's, with the server's own in place of those of the same name.
pub fn ports(server: &ComputeServer, profile: Option<&super::ComputeProfile>) -> Vec<Port> {
    let mut ports = profile.map(|p| p.spec.ports.clone()).unwrap_or_default();
    for port in &server.spec.ports {
        ports.retain(|p| p.name != port.name);
        ports.push(port.clone());
    }
    ports
}

/// Where the web front serves the app on `port` of server `name`; also the app's
/// COMPUTE_SERVER_BASE_URL.
pub fn app_path(name: &str, port: &str) -> String {
    format!("/servers/{name}/apps/{port}/")
}

/// Where a server is in its life.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, schemars::JsonSchema)]
pub enum Phase {
    /// Waiting for the scheduler to choose a node.
    Pending,
    /// A node is chosen; its agent has not started work yet.
    Scheduled,
    /// The agent is making the container (and pulling its image if needed).
    Creating,
    /// The container runs.
    Running,
    /// Stopped on request (spec.running is false); container and data are kept.
    Stopped,
    /// Something went wrong; status.message says what.
    Failed,
    /// Being deleted: the container is being removed.
    Terminating,
    /// The node's agent stopped reporting; the server may still run there.
    NodeLost,
    /// Stopped and kept only as a snapshot in the object store (status.archivedTo): no
    /// container or data volume on any node, nothing reserved. Starting it restores it on any
    /// node with room.
    Archived,
}

/// What the system last saw of the server.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ComputeServerStatus {
    /// Where the server is in its life: Pending, Scheduled, Creating, Running, Stopped,
    /// Failed, Terminating, NodeLost or Archived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,

    /// The ComputeNode the server is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,

    /// The Docker container's ID on that node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "containerID")]
    pub container_id: Option<String>,

    /// Where each declared port can be reached.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<Endpoint>,

    /// Where the node's SSH gateway answers for this server while it runs: the bastion's way in
    /// when the image runs no sshd (web apps and the browser terminal), by the user CA's
    /// certificates for this server only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Endpoint>,

    /// When the container last started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,

    /// What is happening, or what is wrong and what to do, in plain words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,

    /// While it waits for a node: its place in line among the servers waiting for the same
    /// thing (room for a GPU, room for CPU and memory, or the same budget), 1 being next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_position: Option<u32>,

    /// The metadata.generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Scheduled: whether a node is chosen. Ready: whether the container runs as asked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "super::conditions_schema")]
    pub conditions: Vec<Condition>,

    /// The last sign of use, of any source (activity): what an idle stop counts from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_activity: Option<Time>,

    /// When the server stops by itself unless it is used or kept running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stops_at: Option<Time>,

    /// Why it stops at stopsAt, or why it was stopped, in plain words, such as "idle: no SSH
    /// session and under 5% CPU since 14:02".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<String>,

    /// Signs of use, one entry per source, each written by its own role: ssh (the bastion:
    /// sessions through it), cpu (the agent: CPU above the profile's threshold), web (the web
    /// front: a start or extend, a terminal or app opened).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "activity_schema")]
    pub activity: Vec<Activity>,

    /// The GPUs of its node given to this server (their IDs as the node lists them in
    /// status.gpus), by its agent: the same after an agent restart, a recreate or a stop and
    /// start, and free for other servers once it is deleted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub gpu_devices: Vec<String>,

    /// The snapshot the server's data volume was restored from, by its agent, with the
    /// snapshot's checksum as verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_from: Option<Restored>,

    /// The snapshot the server was archived to (by its profile's lifecycle.archiveAfterStopped):
    /// while set, its data is only there; its next start restores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archived_to: Option<String>,
}

impl ComputeServer {
    /// The snapshot it is archived to, while it is: then nothing of it is on a node and it
    /// reserves nothing there (its node label, if any, names the node it left).
    pub fn archived_to(&self) -> Option<&str> {
        self.status.as_ref()?.archived_to.as_deref()
    }
}

/// A restore done.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Restored {
    /// The ComputeSnapshot's name.
    pub snapshot: String,
    /// Its checksum, as verified while restoring.
    pub checksum: String,
    /// When the snapshot was taken: what the server holds is from then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taken_at: Option<Time>,
}

/// A sign that a server is in use, from one source.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Activity {
    /// Where it comes from: ssh, cpu or web.
    pub source: String,
    /// When it was last seen.
    pub last_seen: Time,
    /// What was seen, for people: "2 SSH sessions", "38% CPU".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Activity {
    /// The server-side apply body that sets this one entry of server `name`'s status.activity
    /// (to send to the status subresource under the role's own field manager): the entries of
    /// other sources, owned by other managers, are left as they are.
    pub fn apply_patch(&self, name: &str) -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "computeserver.io/v1alpha1",
            "kind": "ComputeServer",
            "metadata": {"name": name},
            "status": {"activity": [self]},
        })
    }
}

/// A list of activities keyed by source: each role applies its own entry (server-side apply).
fn activity_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    use schemars::JsonSchema;
    let mut schema = <Vec<Activity>>::json_schema(generator);
    schema.insert("x-kubernetes-list-type".into(), "map".into());
    schema.insert("x-kubernetes-list-map-keys".into(), serde_json::json!(["source"]));
    schema.insert("maxItems".into(), 8.into());
    schema
}

/// A reachable address of a container port.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Endpoint {
    /// The port's name from spec.ports.
    pub name: String,
    /// Host name or address of the node.
    pub host: String,
    /// Port on the node.
    pub port: i32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_activity_apply_carries_only_its_own_entry() {
        let activity = Activity {
            source: "ssh".into(),
            last_seen: Time("2026-12-01T14:02:03.5Z".parse().unwrap()),
            detail: Some("2 SSH sessions".into()),
        };
        assert_eq!(
            activity.apply_patch("dev"),
            serde_json::json!({
                "apiVersion": "computeserver.io/v1alpha1",
                "kind": "ComputeServer",
                "metadata": {"name": "dev"},
                "status": {"activity": [
                    {"source": "ssh", "lastSeen": "2026-12-01T14:02:03Z", "detail": "2 SSH sessions"}
                ]},
            })
        );
    }
}
