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

    /// The container image servers of this profile run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,

    /// Other images users may choose for this profile. The first is the default when
    /// spec.image is not set.
    #[serde(default)]
    #[schemars(length(max = 32), inner(length(min = 1, max = 512)))]
    pub allowed_images: Vec<String>,

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
}

fn default_data_path() -> String {
    "/home".into()
}
