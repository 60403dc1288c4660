//! `ComputeProfile`: what users may request, set by the platform admins.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::{Port, Resources};

/// A kind of compute server users may request: its image, default and maximum sizes,
/// and who may use it. Cluster-wide admin policy.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "computeserver.io",
    version = "v1alpha1",
    kind = "ComputeProfile",
    shortname = "cprof",
    category = "compute",
    derive = "PartialEq",
    doc = "A kind of compute server users may request: image, default and maximum sizes, and who may use it.",
    printcolumn(name = "Display Name", type_ = "string", json_path = ".spec.displayName"),
    printcolumn(name = "Image", type_ = "string", json_path = ".spec.image"),
    printcolumn(
        name = "Max Per User",
        type_ = "integer",
        json_path = ".spec.maxServersPerUser"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(validation = Rule::new("has(self.image) || size(self.allowedImages) > 0").message("set spec.image, or list the images users may choose in spec.allowedImages"))]
#[serde(rename_all = "camelCase")]
pub struct ComputeProfileSpec {
    /// Name shown to users in the request form, such as "Debian with SSH".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 100))]
    pub display_name: Option<String>,

    /// A sentence or two shown under the name in the request form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1000))]
    pub description: Option<String>,

    /// The container image servers of this profile run, such as "debian:bookworm" or
    /// "registry.example.org/team/image:1.0".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::image_schema")]
    pub image: Option<String>,

    /// Other images users may choose for this profile. The first is the default when
    /// spec.image is not set.
    #[serde(default)]
    #[schemars(schema_with = "super::images_schema")]
    pub allowed_images: Vec<String>,

    /// What the image runs when a server gives no command of its own, such as
    /// ["sleep", "infinity"]. Empty: the image's own command.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 4096)))]
    pub command: Vec<String>,

    /// What happens when a server's program ends by itself. Never (the default): the server
    /// shows Stopped (exit code 0) or Failed (any other code, with the last lines of its log)
    /// and stays so until it is started again. OnFailure: started again after a non-zero exit.
    /// Always: started again whenever it ends. Docker waits longer between restarts each time.
    #[serde(default)]
    pub restart_policy: RestartPolicy,

    /// Where servers of this profile may connect to. Internet (the default): public addresses
    /// only; private networks (10/8, 172.16/12, 192.168/16, 100.64/10) are refused except DNS.
    /// None: nothing outside the server. Either way a server never reaches other servers, the
    /// node it runs on, or the link-local metadata address 169.254.169.254.
    #[serde(default)]
    pub egress: Egress,

    /// When servers of this profile stop (and go) by themselves: after being idle, after
    /// running long enough, and how long a stopped one is kept. Unset: never.
    #[serde(default, skip_serializing_if = "Lifecycle::is_empty")]
    pub lifecycle: Lifecycle,

    /// Size given to a server that does not ask for one.
    #[serde(default)]
    pub default_resources: Resources,

    /// Largest size a server of this profile may ask for. Unset: no limit but the node's.
    #[serde(default)]
    pub max_resources: Resources,

    /// Keycloak groups whose members may use this profile. Empty: everyone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 256)))]
    pub allowed_groups: Vec<String>,

    /// How many servers of this profile one person may have at once. Unset: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_servers_per_user: Option<i32>,

    /// Where the server's data volume is mounted in the container; it survives the
    /// container being recreated and is removed only with the server.
    #[serde(default = "default_data_path")]
    #[x_kube(validation = Rule::new("self.startsWith('/')").message("dataPath must be an absolute path such as /home"))]
    #[schemars(length(min = 1, max = 256))]
    pub data_path: String,

    /// Ports every server of this profile gets, such as {name: ssh, containerPort: 22}.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub ports: Vec<Port>,

    /// Servers of this profile run only on ComputeNodes with all of these labels, besides the
    /// server's own nodeSelector: `{gpu: "true"}` keeps GPU servers on GPU nodes.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub node_selector: std::collections::BTreeMap<String, String>,

    /// Snapshots taken by themselves while a server runs: one every `every`, the newest `keep`
    /// kept (older ones are deleted with their objects). Needs the agents' snapshot store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshots: Option<super::SnapshotSchedule>,
}

/// When a profile's servers stop and go by themselves. Durations such as "30s", "90m", "2h",
/// "7d" or "1h30m".
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Lifecycle {
    /// Stop a server (spec.running: false; container and data kept) once it has been idle this
    /// long: no SSH session through the bastion, CPU under idleCpuPercent, no start or extend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::duration_schema")]
    pub idle_stop_after: Option<String>,

    /// Stop a server once it has run this long since it last started, busy or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::duration_schema")]
    pub max_lifetime: Option<String>,

    /// The longest a user may keep a server running past its idle or lifetime stop, with
    /// "Keep running" (spec.keepRunningUntil). Unset: users cannot extend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::duration_schema")]
    pub max_extension: Option<String>,

    /// Delete servers that have been stopped this long (their data goes with them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::duration_schema")]
    pub delete_after_stopped: Option<String>,

    /// Archive servers that have been stopped this long: a snapshot is taken into the object
    /// store, then their container and data volume leave the node and they reserve nothing
    /// (phase Archived). Starting one restores it on any node with room. Needs the agents'
    /// snapshot store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::duration_schema")]
    pub archive_after_stopped: Option<String>,

    /// Move a server whose node has been lost this long to another node, restored from its
    /// newest Ready snapshot (what changed since that snapshot is lost). Unset: a lost node's
    /// servers wait for it to come back, or for their owner to move them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::duration_schema")]
    pub move_after_node_lost: Option<String>,

    /// CPU use (percent of the server's CPU limit) above which a server counts as busy.
    /// Default 5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub idle_cpu_percent: Option<i32>,
}

impl Lifecycle {
    pub fn is_empty(&self) -> bool {
        self == &Lifecycle::default()
    }
}

/// What happens when a server's program ends by itself.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub enum RestartPolicy {
    /// Show Stopped or Failed and wait to be started again.
    #[default]
    Never,
    /// Start it again after a non-zero exit.
    OnFailure,
    /// Start it again whenever it ends.
    Always,
}

/// Where a server may connect to.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub enum Egress {
    /// Public addresses, and DNS anywhere.
    #[default]
    Internet,
    /// Nothing outside the server.
    None,
}

fn default_data_path() -> String {
    "/home".into()
}
/// The profiles by name: the one place a server's profile is looked up (`spec.profile`).
#[derive(Clone, Debug, Default)]
pub struct Profiles(std::collections::HashMap<String, std::sync::Arc<ComputeProfile>>);

impl Profiles {
    /// The profile `server` names; none when it names none or one that does not exist (then
    /// what the server says alone counts: see [`super::size::request`]).
    pub fn of(&self, server: &super::ComputeServer) -> Option<&ComputeProfile> {
        self.get(server.spec.profile.as_deref()?)
    }

    /// The profile called `name`.
    pub fn get(&self, name: &str) -> Option<&ComputeProfile> {
        self.0.get(name).map(|p| p.as_ref())
    }
}

impl<P: Into<std::sync::Arc<ComputeProfile>>> FromIterator<P> for Profiles {
    fn from_iter<I: IntoIterator<Item = P>>(profiles: I) -> Profiles {
        use kube::ResourceExt;
        Profiles(
            profiles
                .into_iter()
                .map(Into::into)
                .map(|p: std::sync::Arc<ComputeProfile>| (p.name_any(), p))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ComputeServer;

    #[test]
    fn a_server_finds_the_profile_it_names_and_none_otherwise() {
        let profile = |name: &str| {
            let mut p = ComputeProfile::new(name, serde_json::from_str(r#"{"image": "debian"}"#).unwrap());
            p.spec.display_name = Some(name.to_uppercase());
            p
        };
        let profiles: Profiles = [profile("small"), profile("gpu")].into_iter().collect();
        let server = |named: Option<&str>| {
            let mut spec = serde_json::json!({"owner": "alice", "image": "debian"});
            if let Some(name) = named {
                spec["profile"] = name.into();
            }
            ComputeServer::new("lab", serde_json::from_value(spec).unwrap())
        };
        let found = profiles
            .of(&server(Some("gpu")))
            .map(|p| p.spec.display_name.clone());
        assert_eq!(found, Some(Some("GPU".into())));
        assert!(profiles.of(&server(Some("gone"))).is_none());
        assert!(profiles.of(&server(None)).is_none());
    }
}
