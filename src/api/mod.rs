//! The API of compute-server: group `computeserver.io`, version `v1alpha1`.
//!
//! Plain data types without I/O. Doc comments on fields are what `kubectl explain`
//! shows, so they are written for the people who operate the cluster.

// kube-derive's repeated `printcolumn(type_ = ...)` arguments look like duplicated attributes to clippy.
#![allow(clippy::duplicated_attributes)]

pub mod access;
pub mod lifecycle;
mod node;
mod profile;
pub mod quota;
mod resources;
mod server;
pub mod size;
mod snapshot;

pub use access::{Access, Person, Role, Share};
pub use node::{ComputeNode, ComputeNodeSpec, ComputeNodeStatus, NodeGpu, OrphanedVolume};
pub use profile::{ComputeProfile, ComputeProfileSpec, Egress, Lifecycle, Profiles, RestartPolicy};
pub use quota::{ComputeQuota, ComputeQuotaSpec, ComputeQuotaStatus, ComputeUsage, ComputeUsageSpec};
pub use resources::{Amounts, Resources, quantity_schema};
pub use server::{
    Activity, AppProtocol, ComputeServer, ComputeServerSpec, ComputeServerStatus, Endpoint, EnvVar, Phase,
    Port, Restored, app_path, ports,
};
pub use snapshot::{
    ComputeSnapshot, ComputeSnapshotSpec, ComputeSnapshotStatus, Manifest, Part, RestoreFrom, RestoreRefusal,
    SCHEDULED_LABEL, SnapshotPhase, SnapshotSchedule, checksum, hex, human_bytes, location, newest_ready,
    restorable, scheduled, snapshot_name,
};

/// The API group.
pub const GROUP: &str = "computeserver.io";

/// Label with the node a server is placed on (set by the scheduler, or by hand to pin).
pub const NODE_LABEL: &str = "computeserver.io/node";
/// Label with the label-safe form of `spec.owner`; for filtering only.
pub const OWNER_LABEL: &str = "computeserver.io/owner";
/// The value of [`OWNER_LABEL`] for an owner: the name itself when it is a valid label value,
/// else `u-` and the first 16 bytes of its SHA-256 in hex. For filtering only: authorization
/// always compares `spec.owner`.
pub fn owner_label(owner: &str) -> String {
    let valid = !owner.is_empty()
        && owner.len() <= 63
        && owner
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && owner.starts_with(|c: char| c.is_ascii_alphanumeric())
        && owner.ends_with(|c: char| c.is_ascii_alphanumeric());
    if valid {
        return owner.to_string();
    }
    use sha2::Digest;
    let digest = sha2::Sha256::digest(owner.as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("u-{hex}")
}

/// The Lease a node's agent renews as its heartbeat: `computenode-<name>`.
pub fn lease_name(node: &str) -> String {
    format!("computenode-{node}")
}

/// Finalizer that keeps a server until its container is gone.
pub const CONTAINER_FINALIZER: &str = "computeserver.io/container";

/// Condition type: the server has a node.
pub const CONDITION_SCHEDULED: &str = "Scheduled";
/// Condition type: the server's container runs as asked.
pub const CONDITION_READY: &str = "Ready";

/// A condition of `type_`, keeping the transition time of the one in `current` while its
/// status stays the same (as Kubernetes' own conditions do).
pub fn condition(
    current: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    observed_generation: Option<i64>,
) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    let status = if status { "True" } else { "False" };
    let since = current
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| Time(k8s_openapi::jiff::Timestamp::now()));
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation,
        last_transition_time: since,
    }
}

/// A condition of `server` (for its current generation), keeping the transition time of the
/// one it has while its status stays the same.
pub fn server_condition(
    server: &ComputeServer,
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    let current = server
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    condition(
        current,
        type_,
        status,
        reason,
        message,
        server.metadata.generation,
    )
}

/// A container image reference as Docker reads it: `[host[:port]/]path[:tag][@digest]`, with
/// lowercase paths and no spaces (the grammar of github.com/distribution/reference, without
/// IPv6 hosts).
pub const IMAGE_REFERENCE: &str = concat!(
    r"^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*(?::[0-9]+)?/)?",
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*",
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,})?$",
);

const IMAGE_MESSAGE: &str = "must be a container image reference such as \"debian:bookworm\" or \"registry.example.org/team/image:1.0\": lowercase name, no spaces";

/// Schema for one image reference, checked at the API server.
pub fn image_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "minLength": 1,
        "maxLength": 512,
        "x-kubernetes-validations": [{ "rule": format!("self.matches('{}')", IMAGE_REFERENCE.replace('\\', "\\\\")), "message": IMAGE_MESSAGE }],
    })
}

/// Schema for a list of image references, each checked on its own.
pub fn images_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "type": "array", "maxItems": 32, "items": image_schema(generator) })
}

/// Schema for a duration such as "30s", "90m", "2h", "7d" or "1h30m", checked at the API server.
pub fn duration_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "maxLength": 32,
        "x-kubernetes-validations": [{
            "rule": "self.matches('^([0-9]+(s|m|h|d))+$')",
            "message": "must be a duration such as 30s, 90m, 2h, 7d or 1h30m",
        }],
    })
}

/// A value a person wrote that is not one, and what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

/// A duration as profiles write it ("30s", "90m", "2h", "7d", "1h30m"), or why it is not one.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, Invalid> {
    let refuse = || {
        Invalid(format!(
            "{text:?} is not a duration; write it like 30s, 90m, 2h, 7d or 1h30m"
        ))
    };
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit() || b"smhd".contains(&b)) {
        return Err(refuse());
    }
    let (mut total, mut number) = (0u64, String::new());
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let n: u64 = number.parse().map_err(|_| refuse())?;
        number.clear();
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            _ => 86400,
        };
        total = n
            .checked_mul(unit)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(refuse)?;
    }
    if !number.is_empty() {
        return Err(refuse());
    }
    Ok(std::time::Duration::from_secs(total))
}

/// Schema for a list of conditions keyed by `type`, as Kubernetes' own types have them.
pub fn conditions_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    use schemars::JsonSchema;
    let mut schema = <Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>>::json_schema(generator);
    schema.insert("x-kubernetes-list-type".into(), "map".into());
    schema.insert("x-kubernetes-list-map-keys".into(), serde_json::json!(["type"]));
    schema
}

#[cfg(test)]
mod tests {
    use kube::CustomResourceExt;

    use super::*;

    #[test]
    fn image_references_follow_dockers_grammar() {
        let reference = regex::Regex::new(IMAGE_REFERENCE).unwrap();
        for good in [
            "debian",
            "debian:bookworm",
            "computeserver/busybox:local",
            "registry.example.org/team/image:1.0",
            "localhost:5000/a/b_c.d-e:v1.2-rc_3",
            "quay.io/jupyter/scipy-notebook@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert!(reference.is_match(good), "{good} is a valid reference");
        }
        for bad in [
            "ubuntu latest",
            "Ubuntu",
            "debian:",
            ":tag",
            "a//b",
            "-debian",
            "debian:bookworm\n",
            "evil.example/miner:latest; rm -rf /",
            "debian@sha256:short",
        ] {
            assert!(!reference.is_match(bad), "{bad:?} must be refused");
        }
    }

    /// The admission policy lets the scheduler change spec.running (or spec.restoreFrom) alone by
    /// naming every other field of the spec: a field added to the spec must be added there too.
    #[test]
    fn the_admission_policy_names_every_spec_field_but_running() {
        let policy = include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/charts/compute-server/templates/admission.yaml"
        ));
        let line = policy
            .lines()
            .find(|l| l.contains("$specFields := list \"owner\""))
            .expect("the spec's field list");
        let mut named: Vec<&str> = line.split('"').skip(1).step_by(2).collect();
        named.push("restoreFrom");
        named.sort();
        let crd = serde_json::to_value(ComputeServer::crd()).unwrap();
        let spec =
            &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
        let mut fields: Vec<&str> = spec
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .filter(|f| *f != "running")
            .collect();
        fields.sort();
        assert_eq!(named, fields);
    }

    /// The API server, the web front and the agent refuse a size with the same words.
    #[test]
    fn the_crds_refuse_sizes_in_the_words_the_agent_and_the_web_front_use() {
        let crd = serde_json::to_string(&ComputeServer::crd()).unwrap();
        for message in [
            size::CPU_NOT_A_QUANTITY,
            size::CPU_TOO_SMALL,
            size::CPU_TOO_BIG,
            size::MEMORY_NOT_A_QUANTITY,
            size::MEMORY_TOO_SMALL,
            size::MEMORY_TOO_BIG,
        ] {
            assert!(
                crd.contains(&serde_json::to_string(message).unwrap()),
                "{message}"
            );
        }
        for bound in [size::MIN_CPU, size::MAX_CPU, size::MIN_MEMORY, size::MAX_MEMORY] {
            assert!(crd.contains(&format!("quantity('{bound}')")), "{bound}");
        }
        assert!(crd.contains(&size::MIN_MEMORY_BYTES.to_string()));
        assert!(crd.contains(&size::MAX_MEMORY_BYTES.to_string()));
    }

    #[test]
    fn owner_labels_are_the_name_when_valid_else_a_hash() {
        assert_eq!(owner_label("alice"), "alice");
        assert_eq!(owner_label("a.b_c-9"), "a.b_c-9");
        let odd = owner_label("alice@example.org");
        assert!(odd.starts_with("u-") && odd.len() == 34, "{odd}");
        assert_eq!(odd, owner_label("alice@example.org"), "stable");
        assert_ne!(odd, owner_label("bob@example.org"));
        assert!(owner_label(&"x".repeat(64)).starts_with("u-"));
        assert!(owner_label("-alice").starts_with("u-"));
    }
}
