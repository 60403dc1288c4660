//! Pure steps of the reconcile: resolve a server against its profile, check it, and build
//! the Docker container it should have. No client here: each step is a plain function.

use std::collections::HashMap;

use bollard::models::{
    ContainerCreateBody, DeviceRequest, HostConfig, Mount, MountType, PortBinding, RestartPolicy,
    RestartPolicyNameEnum,
};
use kube::ResourceExt;

use crate::api::size::{self, Request};
use crate::api::{ComputeProfile, ComputeServer, Egress, NODE_LABEL, OWNER_LABEL, Port};

/// Labels on every container and volume of ours.
pub const UID_LABEL: &str = "computeserver.io/uid";
pub const NAMESPACE_LABEL: &str = "computeserver.io/namespace";
pub const NAME_LABEL: &str = "computeserver.io/name";
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "compute-server";
/// Hash of the desired container: a container whose label differs is recreated.
pub const SPEC_HASH_LABEL: &str = "computeserver.io/spec-hash";

/// Processes a server may run at once: enough for a shell session, not for a fork bomb.
pub const PIDS_LIMIT: i64 = 1024;
/// Restarts Docker makes after non-zero exits before it gives up (CIS Docker Benchmark 5.14).
const MAX_RESTARTS_ON_FAILURE: i64 = 5;
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
    /// The server's command, else the profile's; empty: the image's own.
    pub command: Vec<String>,
    /// Exact limits: nano-CPUs, bytes, GPUs; CPU and memory are never zero.
    pub request: Request,
    /// The memory as asked for, for messages ("out of memory (limit 1.5Gi)").
    pub memory: String,
    pub ports: Vec<Port>,
    pub data_path: String,
    pub restart: crate::api::RestartPolicy,
    pub egress: Egress,
    /// The node's GPUs given to the server (status.gpuDevices); filled in by the agent once
    /// they are assigned.
    pub gpu_devices: Vec<String>,
}

/// Why a server cannot be planned; shown to the user in status.message.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Refusal {
    #[error("no image: set spec.image, or use a profile that has one")]
    NoImage,
    #[error(transparent)]
    Size(#[from] size::Refusal),
}

/// Deterministic container name: namespaces hold no dots, so `csrv.<ns>.<name>` is unique.
pub fn container_name(server: &ComputeServer) -> String {
    format!(
        "csrv.{}.{}",
        server.namespace().unwrap_or_default(),
        server.name_any()
    )
}

/// The server's data volume: its container's name with its uid and `.data`. The uid keeps
/// the data of an earlier server of the same name (kept when its server went without its
/// agent) apart from a new one's.
pub fn volume_name(server: &ComputeServer) -> String {
    format!(
        "{}.{}.data",
        container_name(server),
        server.uid().unwrap_or_default()
    )
}

/// Applies the profile to the server: image, command, exact sizes within the profile's and
/// the cluster's bounds, ports, data path, restart policy and egress.
pub fn plan(server: &ComputeServer, profile: Option<&ComputeProfile>) -> Result<Plan, Refusal> {
    let spec = &server.spec;
    let request = size::request(server, profile)?;
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
    let command = if spec.command.is_empty() {
        profile.map(|p| p.spec.command.clone()).unwrap_or_default()
    } else {
        spec.command.clone()
    };
    let memory = spec
        .resources
        .memory
        .clone()
        .or_else(|| profile.and_then(|p| p.spec.default_resources.memory.clone()))
        .map(|q| q.0)
        .unwrap_or_else(|| size::memory_quantity(request.memory_bytes).0);

    let ports = crate::api::ports(server, profile);
    Ok(Plan {
        container_name: container_name(server),
        volume_name: volume_name(server),
        image,
        command,
        request,
        memory,
        ports,
        data_path: profile
            .map(|p| p.spec.data_path.clone())
            .unwrap_or_else(|| "/home".into()),
        restart: profile.map(|p| p.spec.restart_policy).unwrap_or_default(),
        egress: profile.map(|p| p.spec.egress).unwrap_or_default(),
        gpu_devices: vec![],
    })
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

/// What the node gives each container.
#[derive(Clone, Debug, PartialEq)]
pub struct Host {
    /// The only address server ports are published on.
    pub publish_address: String,
    /// The Docker network for servers of each egress: (Internet, None).
    pub networks: (String, String),
    /// Whether the node has IPv6: then it is turned off inside servers (no firewall rules for it).
    pub ipv6: bool,
    /// User CAs whose certificates for a server's own principal log in as root
    /// ([`crate::ssh_ca`]): the web front's terminal and apps.
    pub user_cas: Vec<russh::keys::PublicKey>,
}

impl Host {
    pub fn network(&self, egress: Egress) -> &str {
        match egress {
            Egress::Internet => &self.networks.0,
            Egress::None => &self.networks.1,
        }
    }
}

/// The hardened container for a plan: limits always set, capabilities dropped to a few,
/// no-new-privileges, never privileged, no host mounts, an init process; on the node's closed
/// servers' network, ports published on the publish address only, at a port Docker picks.
pub fn container(server: &ComputeServer, plan: &Plan, host: &Host) -> ContainerCreateBody {
    let spec = &server.spec;
    let mut env: Vec<String> = spec
        .env
        .iter()
        .map(|e| format!("{}={}", e.name, e.value))
        .collect();
    let principal = crate::ssh_ca::server_principal(server);
    let authorized: Vec<String> = (spec.ssh_authorized_keys.iter().cloned())
        .chain(
            host.user_cas
                .iter()
                .map(|ca| crate::ssh_ca::authorized_line(ca, &principal)),
        )
        .collect();
    if !authorized.is_empty() {
        // The image's entrypoint writes these to ~/.ssh/authorized_keys for its sshd.
        env.push(format!("SSH_AUTHORIZED_KEYS={}", authorized.join("\n")));
    }
    // Where the web front serves the first web app: apps such as Jupyter need their base URL.
    if let Some(app) = plan.ports.iter().find(|p| p.is_app()) {
        env.push(format!(
            "COMPUTE_SERVER_BASE_URL={}",
            crate::api::app_path(&server.name_any(), &app.name)
        ));
    }
    let port_key = |p: &Port| format!("{}/tcp", p.container_port);
    // Web apps are reached through the web front's tunnel, never published on the node.
    let published: Vec<&Port> = plan.ports.iter().filter(|p| !p.is_app()).collect();
    let bindings = published
        .iter()
        .map(|p| {
            (
                port_key(p),
                Some(vec![PortBinding {
                    host_ip: Some(host.publish_address.clone()),
                    host_port: Some(String::new()),
                }]),
            )
        })
        .collect();

    let mut body = ContainerCreateBody {
        image: Some(plan.image.clone()),
        cmd: (!plan.command.is_empty()).then(|| plan.command.clone()),
        env: Some(env),
        hostname: Some(server.name_any().chars().take(63).collect()),
        labels: Some(labels(server)),
        exposed_ports: Some(published.iter().map(|p| port_key(p)).collect()),
        host_config: Some(HostConfig {
            memory: Some(plan.request.memory_bytes),
            memory_swap: Some(plan.request.memory_bytes),
            nano_cpus: Some(plan.request.nano_cpus),
            pids_limit: Some(PIDS_LIMIT),
            init: Some(true),
            network_mode: Some(host.network(plan.egress).to_string()),
            sysctls: host
                .ipv6
                .then(|| HashMap::from([("net.ipv6.conf.all.disable_ipv6".to_string(), "1".to_string())])),
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
            restart_policy: Some(restart_policy(plan.restart)),
            // As `docker run --gpus device=0,1`: the NVIDIA Container Toolkit's hook hands
            // these devices, and no others, to the container.
            device_requests: (!plan.gpu_devices.is_empty()).then(|| {
                vec![DeviceRequest {
                    driver: Some("nvidia".into()),
                    device_ids: Some(plan.gpu_devices.clone()),
                    capabilities: Some(vec![vec!["gpu".into()]]),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let hash = spec_hash(&body);
    body.labels
        .get_or_insert_default()
        .insert(SPEC_HASH_LABEL.into(), hash);
    // Created with the quota it starts with; the hash is of its own.
    if let Some(host_config) = body.host_config.as_mut() {
        host_config.nano_cpus = Some(start_nano_cpus(plan.request.nano_cpus));
    }
    body
}

/// The least CPU quota a container starts with. runc's init runs inside the container's
/// cgroup, so a small quota slows its own start: on a 2-core host `docker run --cpus 0.01`
/// takes about 2 s to create and start, 0.1 about 0.35 s, 0.25 and above about 0.25 s.
/// At 250m (`tiny`'s default) and above, a container starts at its own quota.
pub const START_NANO_CPUS: i64 = 250_000_000;

/// The CPU quota to start a container of `own` nano-CPUs with: its own, or
/// [`START_NANO_CPUS`] if that is more. Lowered to its own as soon as it runs, before it is
/// reported Running ([`super::docker::ensure`]).
pub fn start_nano_cpus(own: i64) -> i64 {
    own.max(START_NANO_CPUS)
}

fn restart_policy(policy: crate::api::RestartPolicy) -> RestartPolicy {
    use crate::api::RestartPolicy::*;
    let (name, retries) = match policy {
        Never => (RestartPolicyNameEnum::NO, None),
        OnFailure => (RestartPolicyNameEnum::ON_FAILURE, Some(MAX_RESTARTS_ON_FAILURE)),
        Always => (RestartPolicyNameEnum::UNLESS_STOPPED, None),
    };
    RestartPolicy {
        name: Some(name),
        maximum_retry_count: retries,
    }
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
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    use super::*;

    fn server(yaml: &str) -> ComputeServer {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn profile(yaml: &str) -> ComputeProfile {
        serde_yaml::from_str(yaml).unwrap()
    }

    pub(super) fn host() -> Host {
        Host {
            publish_address: "127.0.0.1".into(),
            networks: ("compute-server".into(), "compute-server-closed".into()),
            ipv6: true,
            user_cas: vec![],
        }
    }

    pub(super) const TINY_PROFILE: &str = TINY;

    const TINY: &str = "
apiVersion: computeserver.io/v1alpha1
kind: ComputeProfile
metadata: {name: tiny}
spec:
  image: computeserver/busybox:local
  command: [sleep, infinity]
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
        assert_eq!(plan.volume_name, "csrv.compute.dev.u1.data");
        assert_eq!(plan.image, "computeserver/busybox:local");
        assert_eq!(plan.command, ["sleep", "infinity"]);
        assert_eq!(plan.request.nano_cpus, 250_000_000);
        assert_eq!(plan.request.memory_bytes, 64 << 20);
        assert_eq!(plan.ports[0].container_port, 22);
        assert_eq!(plan.data_path, "/home");
        assert_eq!(plan.restart, crate::api::RestartPolicy::Never);
        assert_eq!(plan.egress, Egress::Internet);
    }

    #[test]
    fn the_servers_own_command_wins_over_the_profiles() {
        let s = server(
            "
apiVersion: computeserver.io/v1alpha1
kind: ComputeServer
metadata: {name: dev, namespace: compute, uid: u1}
spec: {owner: alice, profile: tiny, command: [httpd, -f]}
",
        );
        assert_eq!(plan(&s, Some(&profile(TINY))).unwrap().command, ["httpd", "-f"]);
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
    fn sizes_that_would_mean_no_limit_are_refused() {
        for (resources, rule) in [
            ("{cpu: 0.4n}", size::CPU_TOO_SMALL),
            ("{memory: '100'}", size::MEMORY_TOO_SMALL),
            ("{memory: 8Ei}", size::MEMORY_TOO_BIG),
        ] {
            let s = server(&format!(
                "{{apiVersion: computeserver.io/v1alpha1, kind: ComputeServer, metadata: {{name: x, namespace: compute}}, \
                 spec: {{owner: alice, image: busybox, resources: {resources}}}}}"
            ));
            let refusal = plan(&s, None).unwrap_err().to_string();
            assert!(refusal.starts_with(rule), "{resources}: {refusal}");
        }
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
            Refusal::Size(size::Refusal::NoProfile("gpu-large".into()))
        );
    }

    #[test]
    fn a_small_server_starts_with_a_cpu_to_start_in_and_its_hash_is_of_its_own_quota() {
        let tiny = |cpu: &str| {
            server(&format!(
                "{{apiVersion: computeserver.io/v1alpha1, kind: ComputeServer, metadata: {{name: t, uid: u1}}, \
                 spec: {{owner: alice, image: busybox, resources: {{cpu: '{cpu}', memory: 64Mi}}}}}}"
            ))
        };
        let body = |cpu: &str| {
            let s = tiny(cpu);
            container(&s, &plan(&s, None).unwrap(), &host())
        };
        let small = body("10m");
        assert_eq!(
            small.host_config.as_ref().unwrap().nano_cpus,
            Some(START_NANO_CPUS)
        );
        let other = body("20m");
        assert_eq!(
            other.host_config.as_ref().unwrap().nano_cpus,
            Some(START_NANO_CPUS)
        );
        assert_ne!(
            small.labels.unwrap()[SPEC_HASH_LABEL],
            other.labels.unwrap()[SPEC_HASH_LABEL],
            "a new size is a new container"
        );
        assert_eq!(
            body("2").host_config.unwrap().nano_cpus,
            Some(2_000_000_000),
            "no boost down"
        );
        assert_eq!(
            start_nano_cpus(250_000_000),
            250_000_000,
            "tiny's default starts as it is"
        );
        assert_eq!(start_nano_cpus(100_000_000), START_NANO_CPUS);
    }

    #[test]
    fn the_container_is_hardened_limited_and_closed() {
        let s = server(
            "
apiVersion: computeserver.io/v1alpha1
kind: ComputeServer
metadata: {name: dev, namespace: compute, uid: u1, labels: {computeserver.io/owner: alice}}
spec:
  owner: alice
  image: computeserver/debian-ssh:local
  resources: {cpu: '1.5', memory: 1.5Gi}
  sshAuthorizedKeys: ['ssh-ed25519 AAAAC3Nza a@b']
  env: [{name: A, value: '1'}]
  ports: [{name: ssh, containerPort: 22}]
",
        );
        let p = plan(&s, None).unwrap();
        let body = container(&s, &p, &host());
        let host_config = body.host_config.as_ref().unwrap();
        assert_eq!(host_config.nano_cpus, Some(1_500_000_000));
        assert_eq!(host_config.memory, Some(1_610_612_736));
        assert_eq!(
            host_config.memory_swap,
            Some(1_610_612_736),
            "no swap beyond the limit"
        );
        assert_eq!(host_config.pids_limit, Some(PIDS_LIMIT));
        assert_eq!(host_config.cap_drop.as_deref(), Some(&["ALL".to_string()][..]));
        assert_eq!(
            host_config.security_opt.as_deref(),
            Some(&["no-new-privileges".to_string()][..])
        );
        assert_eq!(host_config.privileged, Some(false));
        assert_eq!(host_config.init, Some(true));
        assert_eq!(host_config.network_mode.as_deref(), Some("compute-server"));
        assert_eq!(
            host_config.sysctls.as_ref().unwrap()["net.ipv6.conf.all.disable_ipv6"],
            "1"
        );
        let bindings = host_config.port_bindings.as_ref().unwrap()["22/tcp"]
            .as_ref()
            .unwrap();
        assert_eq!(
            bindings[0].host_ip.as_deref(),
            Some("127.0.0.1"),
            "one address, never 0.0.0.0"
        );
        assert!(host_config.binds.is_none(), "no host mounts");
        let mounts = host_config.mounts.as_ref().unwrap();
        assert_eq!((mounts.len(), mounts[0].typ), (1, Some(MountType::VOLUME)));
        assert_eq!(mounts[0].source.as_deref(), Some("csrv.compute.dev.u1.data"));
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
            container(&s, &p, &host()).labels.unwrap()[SPEC_HASH_LABEL]
        );
        let mut bigger = s.clone();
        bigger.spec.resources.memory = Some(Quantity("2Gi".into()));
        let other = container(&bigger, &plan(&bigger, None).unwrap(), &host());
        assert_ne!(labels[SPEC_HASH_LABEL], other.labels.unwrap()[SPEC_HASH_LABEL]);
    }

    #[test]
    fn a_closed_profile_puts_servers_on_the_closed_network_and_restarts_as_asked() {
        let closed = profile(
            "
apiVersion: computeserver.io/v1alpha1
kind: ComputeProfile
metadata: {name: closed}
spec: {image: busybox, egress: None, restartPolicy: OnFailure}
",
        );
        let s = server(
            "{apiVersion: computeserver.io/v1alpha1, kind: ComputeServer, metadata: {name: c, namespace: compute}, spec: {owner: alice, profile: closed}}",
        );
        let body = container(&s, &plan(&s, Some(&closed)).unwrap(), &host());
        let host_config = body.host_config.unwrap();
        assert_eq!(host_config.network_mode.as_deref(), Some("compute-server-closed"));
        let restart = host_config.restart_policy.unwrap();
        assert_eq!(restart.name, Some(RestartPolicyNameEnum::ON_FAILURE));
        assert_eq!(restart.maximum_retry_count, Some(5));
    }

    #[test]
    fn assigned_gpus_are_handed_to_the_container_as_docker_run_gpus_does() {
        let gpu = profile(
            "
apiVersion: computeserver.io/v1alpha1
kind: ComputeProfile
metadata: {name: gpu}
spec: {image: busybox, maxResources: {gpus: 2}}
",
        );
        let s = server(
            "{apiVersion: computeserver.io/v1alpha1, kind: ComputeServer, metadata: {name: g, namespace: compute}, spec: {owner: alice, profile: gpu, resources: {gpus: 2}}}",
        );
        let mut planned = plan(&s, Some(&gpu)).unwrap();
        assert_eq!(planned.request.gpus, 2);
        let none = container(&s, &planned, &host());
        assert!(
            none.host_config.unwrap().device_requests.is_none(),
            "none before they are assigned"
        );
        planned.gpu_devices = vec!["0".into(), "GPU-abc".into()];
        let body = container(&s, &planned, &host());
        let requests = body.host_config.unwrap().device_requests.unwrap();
        assert_eq!(requests.len(), 1);
        assert_eq!(requests[0].driver.as_deref(), Some("nvidia"));
        assert_eq!(
            requests[0].device_ids.as_deref(),
            Some(&["0".to_string(), "GPU-abc".to_string()][..])
        );
        assert_eq!(requests[0].capabilities, Some(vec![vec!["gpu".to_string()]]));
        assert_eq!(requests[0].count, None, "devices by ID, never a count");
        // Other devices are another container.
        planned.gpu_devices = vec!["1".into()];
        let other = container(&s, &planned, &host());
        assert_ne!(
            body.labels.unwrap()[SPEC_HASH_LABEL],
            other.labels.unwrap()[SPEC_HASH_LABEL]
        );
    }

    #[test]
    fn web_apps_are_not_published_and_are_told_their_base_url_and_the_ca_logs_in_for_this_server_only() {
        let s = server(
            "
apiVersion: computeserver.io/v1alpha1
kind: ComputeServer
metadata: {name: nb, namespace: compute, uid: u9}
spec:
  owner: alice
  image: computeserver/jupyter:local
  ports: [{name: ssh, containerPort: 22}, {name: jupyter, containerPort: 8888, appProtocol: http}]
",
        );
        let ca = russh::keys::PublicKey::from_openssh(
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl ca",
        )
        .unwrap();
        let host = Host {
            user_cas: vec![ca],
            ..host()
        };
        let body = container(&s, &plan(&s, None).unwrap(), &host);
        let bindings = body.host_config.unwrap().port_bindings.unwrap();
        assert_eq!(
            bindings.keys().collect::<Vec<_>>(),
            ["22/tcp"],
            "the app port stays unpublished"
        );
        let env = body.env.unwrap();
        assert!(env.contains(&"COMPUTE_SERVER_BASE_URL=/servers/nb/apps/jupyter/".to_string()));
        let keys = env
            .iter()
            .find(|e| e.starts_with("SSH_AUTHORIZED_KEYS="))
            .unwrap();
        assert!(
            keys.starts_with(
                "SSH_AUTHORIZED_KEYS=cert-authority,principals=\"compute-server:u9\" ssh-ed25519 "
            ),
            "{keys}"
        );
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::tests::{TINY_PROFILE, host};
    use super::*;

    /// A server as anyone may write it: sizes in and out of bounds, ports, env, keys, a profile or none.
    fn a_server() -> impl Strategy<Value = ComputeServer> {
        let size = prop_oneof![
            Just(None),
            "[0-9]{1,5}(m|Mi|Gi|k|M|G)?".prop_map(Some),
            "0\\.[0-9]{1,3}(Gi)?".prop_map(Some),
        ];
        (
            size.clone(),
            size,
            proptest::option::of(0i32..3),
            proptest::collection::vec((1i32..70000, proptest::bool::ANY), 0..4),
            proptest::bool::ANY,
            proptest::bool::ANY,
        )
            .prop_map(|(cpu, memory, gpus, ports, with_profile, running)| {
                let mut server: ComputeServer = serde_yaml::from_str(
                    "{apiVersion: computeserver.io/v1alpha1, kind: ComputeServer, \
                     metadata: {name: s, namespace: compute, uid: u1}, spec: {owner: alice}}",
                )
                .unwrap();
                let spec = &mut server.spec;
                spec.running = running;
                spec.image = (!with_profile).then(|| "computeserver/busybox:local".to_string());
                spec.profile = with_profile.then(|| "tiny".to_string());
                spec.resources.cpu = cpu.map(Quantity);
                spec.resources.memory = memory.map(Quantity);
                spec.resources.gpus = gpus;
                spec.ports = ports
                    .into_iter()
                    .enumerate()
                    .map(|(i, (port, http))| {
                        serde_json::from_value(serde_json::json!({
                            "name": format!("p{i}"), "containerPort": port,
                            "appProtocol": if http { Some("http") } else { None },
                        }))
                        .unwrap()
                    })
                    .collect();
                server
            })
    }

    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    proptest! {
        /// Whatever the spec: a plan is refused with a reason, or it makes a container that is
        /// hardened and limited, with its ports on the publish address only and no mount but
        /// its own data volume.
        #[test]
        fn every_plan_is_a_refusal_or_a_hardened_limited_container(server in a_server()) {
            let profile: ComputeProfile = serde_yaml::from_str(TINY_PROFILE).unwrap();
            let profile = server.spec.profile.as_ref().map(|_| &profile);
            match plan(&server, profile) {
                Err(refusal) => prop_assert!(!refusal.to_string().is_empty()),
                Ok(plan) => {
                    let request = plan.request;
                    prop_assert!((10_000_000..=4096 * 1_000_000_000).contains(&request.nano_cpus));
                    prop_assert!(request.memory_bytes >= 6 << 20);
                    let body = container(&server, &plan, &host());
                    let config = body.host_config.unwrap();
                    prop_assert_eq!(config.memory, Some(request.memory_bytes));
                    prop_assert_eq!(config.memory_swap, Some(request.memory_bytes));
                    prop_assert!(config.nano_cpus.unwrap() >= request.nano_cpus);
                    prop_assert_eq!(config.pids_limit, Some(PIDS_LIMIT));
                    prop_assert_eq!(config.privileged, Some(false));
                    prop_assert_eq!(config.cap_drop, Some(vec!["ALL".to_string()]));
                    prop_assert_eq!(config.security_opt, Some(vec!["no-new-privileges".to_string()]));
                    prop_assert!(config.binds.is_none() && config.volumes_from.is_none());
                    let mounts = config.mounts.unwrap();
                    prop_assert_eq!(mounts.len(), 1);
                    prop_assert_eq!(mounts[0].source.as_deref(), Some(plan.volume_name.as_str()));
                    for bindings in config.port_bindings.unwrap_or_default().values().flatten() {
                        for binding in bindings {
                            prop_assert_eq!(binding.host_ip.as_deref(), Some("127.0.0.1"));
                        }
                    }
                }
            }
        }
    }
}
