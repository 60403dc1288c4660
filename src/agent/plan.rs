//! Pure steps of the reconcile: resolve a server against its profile, check it, and build
//! the Docker container it should have. No client here: each step is a plain function.

use std::collections::HashMap;

use bollard::models::{
    ContainerCreateBody, HostConfig, Mount, MountType, PortBinding, RestartPolicy, RestartPolicyNameEnum,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::ResourceExt;
use kube_quantity::ParsedQuantity;

use crate::api::{ComputeProfile, ComputeServer, NODE_LABEL, OWNER_LABEL, Port};

/// Labels on every container and volume of ours.
pub const UID_LABEL: &str = "computeserver.io/uid";
pub const NAMESPACE_LABEL: &str = "computeserver.io/namespace";
pub const NAME_LABEL: &str = "computeserver.io/name";
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "compute-server";
/// Hash of the desired container: a container whose label differs is recreated.
pub const SPEC_HASH_LABEL: &str = "computeserver.io/spec-hash";

/// Size used when neither the server nor its profile asks for one.
const FALLBACK_CPU: &str = "1";
const FALLBACK_MEMORY: &str = "512Mi";
/// Processes a server may run at once: enough for a shell session, not for a fork bomb.
const PIDS_LIMIT: i64 = 1024;
/// Capabilities left after dropping all: what sshd needs to log a user in (see
/// ENVIRONMENT-NOTES: SETUID, SETGID, SYS_CHROOT, AUDIT_WRITE) and what root needs to
/// own files it installs (CHOWN, FOWNER, DAC_OVERRIDE), nothing that reaches the host.
pub const CAPABILITIES: [&str; 7] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "SETUID",
    "SETGID",
    "SYS_CHROOT",
    "AUDIT_WRITE",
];

/// What a server asks for once its profile is applied: everything the container needs.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub container_name: String,
    pub volume_name: String,
    pub image: String,
    pub nano_cpus: i64,
    pub memory_bytes: i64,
    pub memory: String,
    pub gpus: i64,
    pub ports: Vec<Port>,
    pub data_path: String,
}

/// What a server takes from its node once its profile is applied: the scheduler places by
/// it and the agent reports the sum as the node's `status.allocated`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Request {
    pub nano_cpus: i64,
    pub memory_bytes: i64,
    pub gpus: i64,
}

impl std::ops::AddAssign for Request {
    fn add_assign(&mut self, other: Request) {
        self.nano_cpus += other.nano_cpus;
        self.memory_bytes += other.memory_bytes;
        self.gpus += other.gpus;
    }
}

impl Plan {
    pub fn request(&self) -> Request {
        Request {
            nano_cpus: self.nano_cpus,
            memory_bytes: self.memory_bytes,
            gpus: self.gpus,
        }
    }
}

/// Why a server cannot be planned; shown to the user in status.message.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Refusal {
    #[error("profile {0:?} does not exist; ask an admin, or pick one from `kubectl get computeprofiles`")]
    NoProfile(String),
    #[error("no image: set spec.image, or use a profile that has one")]
    NoImage,
    #[error("{what} {asked} is more than profile {profile:?} allows ({max}); ask for less")]
    TooBig {
        what: &'static str,
        asked: String,
        max: String,
        profile: String,
    },
    #[error("{what} {value:?} is not a quantity this agent understands")]
    BadQuantity { what: &'static str, value: String },
}

/// Deterministic container name: namespaces hold no dots, so `csrv.<ns>.<name>` is unique.
pub fn container_name(server: &ComputeServer) -> String {
    format!(
        "csrv.{}.{}",
        server.namespace().unwrap_or_default(),
        server.name_any()
    )
}

/// The server's data volume: its container's name with `.data`.
pub fn volume_name(server: &ComputeServer) -> String {
    format!("{}.data", container_name(server))
}

fn parse(what: &'static str, q: &Quantity) -> Result<ParsedQuantity, Refusal> {
    ParsedQuantity::try_from(q).map_err(|_| Refusal::BadQuantity {
        what,
        value: q.0.clone(),
    })
}

/// Applies the profile to the server: image, sizes within the profile's limits, ports, data path.
pub fn plan(server: &ComputeServer, profile: Option<&ComputeProfile>) -> Result<Plan, Refusal> {
    let spec = &server.spec;
    if let (Some(name), None) = (&spec.profile, profile) {
        return Err(Refusal::NoProfile(name.clone()));
    }
    let defaults = profile
        .map(|p| p.spec.default_resources.clone())
        .unwrap_or_default();
    let image = spec
        .image
        .clone()
        .or_else(|| {
            profile.and_then(|p| {
                p.spec
                    .image
                    .clone()
                    .or_else(|| p.spec.allowed_images.first().cloned())
            })
        })
        .ok_or(Refusal::NoImage)?;

    let pick = |mine: &Option<Quantity>, default: &Option<Quantity>, fallback: &str| {
        mine.clone()
            .or_else(|| default.clone())
            .unwrap_or_else(|| Quantity(fallback.into()))
    };
    let cpu = pick(&spec.resources.cpu, &defaults.cpu, FALLBACK_CPU);
    let memory = pick(&spec.resources.memory, &defaults.memory, FALLBACK_MEMORY);
    let (cpu_parsed, memory_parsed) = (parse("cpu", &cpu)?, parse("memory", &memory)?);
    if let Some(profile) = profile {
        let max = &profile.spec.max_resources;
        check_max(profile, "cpu", &cpu, &cpu_parsed, &max.cpu)?;
        check_max(profile, "memory", &memory, &memory_parsed, &max.memory)?;
    }

    let mut ports = profile.map(|p| p.spec.ports.clone()).unwrap_or_default();
    for port in &spec.ports {
        ports.retain(|p| p.name != port.name);
        ports.push(port.clone());
    }
    let to_i64 = |q: ParsedQuantity, what| {
        q.to_bytes_i64().ok_or(Refusal::BadQuantity {
            what,
            value: q.to_string(),
        })
    };
    Ok(Plan {
        container_name: container_name(server),
        volume_name: volume_name(server),
        image,
        nano_cpus: cpu_parsed
            .to_bytes_f64()
            .map(|cores| (cores * 1e9).round() as i64)
            .ok_or(Refusal::BadQuantity {
                what: "cpu",
                value: cpu.0.clone(),
            })?,
        memory_bytes: to_i64(memory_parsed, "memory")?,
        memory: memory.0,
        gpus: spec.resources.gpus.or(defaults.gpus).unwrap_or(0).into(),
        ports,
        data_path: profile
            .map(|p| p.spec.data_path.clone())
            .unwrap_or_else(|| "/home".into()),
    })
}

fn check_max(
    profile: &ComputeProfile,
    what: &'static str,
    asked: &Quantity,
    parsed: &ParsedQuantity,
    limit: &Option<Quantity>,
) -> Result<(), Refusal> {
    match limit {
        Some(limit) if *parsed > parse(what, limit)? => Err(Refusal::TooBig {
            what,
            asked: asked.0.clone(),
            max: limit.0.clone(),
            profile: profile.name_any(),
        }),
        _ => Ok(()),
    }
}

/// Labels that tie a container or volume to its server.
pub fn labels(server: &ComputeServer) -> HashMap<String, String> {
    let label = |key: &str| server.labels().get(key).cloned().unwrap_or_default();
    HashMap::from([
        (NODE_LABEL.into(), label(NODE_LABEL)),
        (UID_LABEL.into(), server.uid().unwrap_or_default()),
        (NAMESPACE_LABEL.into(), server.namespace().unwrap_or_default()),
        (NAME_LABEL.into(), server.name_any()),
        (OWNER_LABEL.into(), label(OWNER_LABEL)),
        (MANAGED_BY_LABEL.into(), MANAGED_BY.into()),
    ])
}

/// The hardened container for a plan: limits always set, capabilities dropped to a few,
/// no-new-privileges, never privileged, no host mounts; ports published on a port Docker picks.
pub fn container(server: &ComputeServer, plan: &Plan) -> ContainerCreateBody {
    let spec = &server.spec;
    let mut env: Vec<String> = spec
        .env
        .iter()
        .map(|e| format!("{}={}", e.name, e.value))
        .collect();
    if !spec.ssh_authorized_keys.is_empty() {
        // The image's entrypoint writes these to ~/.ssh/authorized_keys for its sshd.
        env.push(format!(
            "SSH_AUTHORIZED_KEYS={}",
            spec.ssh_authorized_keys.join("\n")
        ));
    }
    let port_key = |p: &Port| format!("{}/tcp", p.container_port);
    let bindings = plan
        .ports
        .iter()
        .map(|p| {
            (
                port_key(p),
                Some(vec![PortBinding {
                    host_ip: None,
                    host_port: Some(String::new()),
                }]),
            )
        })
        .collect();

    let mut body = ContainerCreateBody {
        image: Some(plan.image.clone()),
        cmd: (!spec.command.is_empty()).then(|| spec.command.clone()),
        env: Some(env),
        hostname: Some(server.name_any().chars().take(63).collect()),
        labels: Some(labels(server)),
        exposed_ports: Some(plan.ports.iter().map(port_key).collect()),
        host_config: Some(HostConfig {
            memory: Some(plan.memory_bytes),
            memory_swap: Some(plan.memory_bytes),
            nano_cpus: Some(plan.nano_cpus),
            pids_limit: Some(PIDS_LIMIT),
            cap_drop: Some(vec!["ALL".into()]),
            cap_add: Some(CAPABILITIES.iter().map(|c| c.to_string()).collect()),
            security_opt: Some(vec!["no-new-privileges".into()]),
            privileged: Some(false),
            port_bindings: Some(bindings),
            mounts: Some(vec![Mount {
                target: Some(plan.data_path.clone()),
                source: Some(plan.volume_name.clone()),
                typ: Some(MountType::VOLUME),
                ..Default::default()
            }]),
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::NO),
                maximum_retry_count: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let hash = spec_hash(&body);
    body.labels
        .get_or_insert_default()
        .insert(SPEC_HASH_LABEL.into(), hash);
    body
}

/// A stable hash of the desired container, so a change in spec or profile is noticed.
/// serde_json's maps are sorted, so the same body always gives the same text.
fn spec_hash(body: &ContainerCreateBody) -> String {
    use sha2::Digest;
    let canonical = serde_json::to_vec(&serde_json::to_value(body).unwrap_or_default()).unwrap_or_default();
    let digest = sha2::Sha256::digest(canonical);
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(yaml: &str) -> ComputeServer {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn profile(yaml: &str) -> ComputeProfile {
        serde_yaml::from_str(yaml).unwrap()
    }

    const TINY: &str = "
apiVersion: computeserver.io/v1alpha1
kind: ComputeProfile
metadata: {name: tiny}
spec:
  image: computeserver/busybox:local
  defaultResources: {cpu: 250m, memory: 64Mi}
  maxResources: {cpu: '1', memory: 256Mi}
  ports: [{name: ssh, containerPort: 22}]
";

    #[test]
    fn profile_defaults_fill_in_what_the_server_leaves_out() {
        let s = server(
            "
apiVersion: computeserver.io/v1alpha1
kind: ComputeServer
metadata: {name: dev, namespace: compute, uid: u1}
spec: {owner: alice, profile: tiny}
",
        );
        let plan = plan(&s, Some(&profile(TINY))).unwrap();
        assert_eq!(plan.container_name, "csrv.compute.dev");
        assert_eq!(plan.volume_name, "csrv.compute.dev.data");
        assert_eq!(plan.image, "computeserver/busybox:local");
        assert_eq!(plan.nano_cpus, 250_000_000);
        assert_eq!(plan.memory_bytes, 64 << 20);
        assert_eq!(plan.ports[0].container_port, 22);
        assert_eq!(plan.data_path, "/home");
    }

    #[test]
    fn asking_for_more_than_the_profile_allows_is_refused() {
        let s = server(
            "
apiVersion: computeserver.io/v1alpha1
kind: ComputeServer
metadata: {name: big, namespace: compute}
spec: {owner: alice, profile: tiny, resources: {memory: 1Gi}}
",
        );
        let refusal = plan(&s, Some(&profile(TINY))).unwrap_err();
        assert_eq!(
            refusal.to_string(),
            "memory 1Gi is more than profile \"tiny\" allows (256Mi); ask for less"
        );
    }

    #[test]
    fn a_missing_profile_is_refused_with_its_name() {
        let s = server(
            "
apiVersion: computeserver.io/v1alpha1
kind: ComputeServer
metadata: {name: x, namespace: compute}
spec: {owner: alice, profile: gpu-large}
",
        );
        assert_eq!(
            plan(&s, None).unwrap_err(),
            Refusal::NoProfile("gpu-large".into())
        );
    }

    #[test]
    fn the_container_is_hardened_and_limited() {
        let s = server(
            "
apiVersion: computeserver.io/v1alpha1
kind: ComputeServer
metadata: {name: dev, namespace: compute, uid: u1, labels: {computeserver.io/owner: alice}}
spec:
  owner: alice
  image: computeserver/debian-ssh:local
  resources: {cpu: '1.5', memory: 1Gi}
  sshAuthorizedKeys: ['ssh-ed25519 AAAAC3Nza a@b']
  env: [{name: A, value: '1'}]
",
        );
        let p = plan(&s, None).unwrap();
        let body = container(&s, &p);
        let host = body.host_config.as_ref().unwrap();
        assert_eq!(host.nano_cpus, Some(1_500_000_000));
        assert_eq!(host.memory, Some(1 << 30));
        assert_eq!(host.pids_limit, Some(PIDS_LIMIT));
        assert_eq!(host.cap_drop.as_deref(), Some(&["ALL".to_string()][..]));
        assert_eq!(
            host.security_opt.as_deref(),
            Some(&["no-new-privileges".to_string()][..])
        );
        assert_eq!(host.privileged, Some(false));
        assert!(host.binds.is_none(), "no host mounts");
        let mounts = host.mounts.as_ref().unwrap();
        assert_eq!((mounts.len(), mounts[0].typ), (1, Some(MountType::VOLUME)));
        let env = body.env.as_ref().unwrap();
        assert!(env.contains(&"A=1".to_string()));
        assert!(env.contains(&"SSH_AUTHORIZED_KEYS=ssh-ed25519 AAAAC3Nza a@b".to_string()));
        let labels = body.labels.as_ref().unwrap();
        assert_eq!(labels[UID_LABEL], "u1");
        assert_eq!(labels[OWNER_LABEL], "alice");
        assert_eq!(labels[MANAGED_BY_LABEL], "compute-server");
        // The same server gives the same container; a changed size gives another.
        assert_eq!(
            labels[SPEC_HASH_LABEL],
            container(&s, &p).labels.unwrap()[SPEC_HASH_LABEL]
        );
        let mut bigger = s.clone();
        bigger.spec.resources.memory = Some(Quantity("2Gi".into()));
        let other = container(&bigger, &plan(&bigger, None).unwrap());
        assert_ne!(labels[SPEC_HASH_LABEL], other.labels.unwrap()[SPEC_HASH_LABEL]);
    }
}
