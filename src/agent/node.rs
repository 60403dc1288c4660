//! The agent's `ComputeNode`: registration, capacity from Docker, what is allocated here,
//! and a Lease renewed as the node's heartbeat (as the kubelet does for Nodes).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bollard::models::Volume;
use futures::FutureExt;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{ListParams, ObjectMeta, Patch, PatchParams};
use tracing::{error, info, warn};

use super::{Context, plan};
use super::{Error, Result};
use crate::api::size::{self, Request};
use crate::api::{
    Amounts, CONDITION_READY, ComputeNode, ComputeNodeStatus, ComputeProfile, ComputeServer, NODE_LABEL,
    OrphanedVolume, Profiles, lease_name,
};

const FIELD_MANAGER: &str = "compute-server-agent";

/// What the node registers as, and how long its Lease lasts.
pub struct Registration {
    /// Labels of the ComputeNode, for nodeSelector.
    pub labels: BTreeMap<String, String>,
    /// Namespace of the Lease.
    pub lease_namespace: String,
    /// Seconds the Lease lasts; the node reports in four times as often.
    pub lease_seconds: u32,
    /// The CPU and memory allocation ratios to write when the node's spec has none.
    pub ratios: (String, String),
}

/// Registers the node, then reports in (a quarter of the Lease's time) until the process ends.
/// Whenever Docker stops or starts answering, sends on `docker_changed`, so that every server
/// is reconciled at once: their status says Docker is gone, or they are brought back.
pub async fn heartbeat(
    ctx: &Context,
    registration: Registration,
    docker_changed: futures::channel::mpsc::UnboundedSender<()>,
) {
    let every = Duration::from_secs(registration.lease_seconds.into()) / 4;
    let mut docker_was_up = None;
    loop {
        let docker_up = ctx.docker.ping().await.is_ok();
        if docker_was_up.is_some_and(|was| was != docker_up) {
            if docker_up {
                info!("Docker answers again: reconciling every server");
            } else {
                warn!("Docker stopped answering: reconciling every server");
            }
            let _ = docker_changed.unbounded_send(());
        }
        docker_was_up = Some(docker_up);
        if let Err(error) = report(ctx, &registration).await {
            warn!(%error, "could not report this node's state");
        }
        tokio::time::sleep(every).await;
    }
}

/// One report: the node's ComputeNode (spec labels, status), then its Lease. The Lease is
/// renewed whatever became of the status, on purpose: it says "this agent runs and reaches the
/// API server", which stays true when Docker, the firewall or a status write fails (Docker and
/// the firewall are the status's Ready condition; a status that could not be written keeps its
/// old time). Only an API server that refuses the Lease itself lets the node go NotReady.
pub(super) async fn report(ctx: &Context, registration: &Registration) -> Result<()> {
    let status = report_status(ctx, registration).await;
    let lease = renew_lease(ctx, &registration.lease_namespace, registration.lease_seconds).await;
    if let (Err(_), Err(error)) = (&status, &lease) {
        warn!(%error, "could not renew this node's Lease");
    }
    status.and(lease)
}

/// The node's ComputeNode: its labels and missing allocation ratios, the sweep of orphaned
/// containers, the activity of its servers, and its status.
async fn report_status(ctx: &Context, registration: &Registration) -> Result<()> {
    let Registration { labels, ratios, .. } = registration;
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let nodes: Api<ComputeNode> = Api::all(ctx.client.clone());
    // An empty spec: spec.unschedulable belongs to the admins (cordon), not to this manager.
    let node = serde_json::json!({
        "apiVersion": "computeserver.io/v1alpha1", "kind": "ComputeNode",
        "metadata": { "name": ctx.node, "labels": labels },
        "spec": {},
    });
    // The apply answers with the whole object: its status is what we reported last time.
    let applied = nodes
        .patch(&ctx.node, &params, &Patch::Apply(&node))
        .await
        .map_err(Error::Kube)?;
    if let Some(missing) = missing_ratios(&applied.spec, ratios) {
        // A merge patch, not this manager's apply: the value is then the admins' to change.
        let patch = serde_json::json!({ "spec": missing });
        nodes
            .patch(&ctx.node, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(Error::Kube)?;
        info!(node = %ctx.node, ratios = %patch["spec"], "set the node's allocation ratios from the flags");
    }
    let previous = applied.status;

    // Containers first, then servers: a container listed has its server listed too, unless
    // that server is gone; so a server created meanwhile is never taken for gone.
    let containers = super::docker::list_ours(ctx).await;
    // The controller's cache once it has loaded (a container listed above was made from a
    // server in it, so a server created meanwhile is never taken for gone); until then, a list.
    let servers = if ctx.servers.wait_until_ready().now_or_never().is_some() {
        ctx.servers.state()
    } else {
        Api::<ComputeServer>::all(ctx.client.clone())
            .list(&ListParams::default().labels(&format!("{NODE_LABEL}={}", ctx.node)))
            .await
            .map_err(Error::Kube)?
            .items
            .into_iter()
            .map(Arc::new)
            .collect()
    };
    let swept = match containers {
        Ok(containers) => match super::docker::sweep(ctx, &containers, &servers).await {
            Ok(swept) => Some(swept),
            Err(error) => {
                warn!(%error, "could not sweep orphaned containers");
                None
            }
        },
        Err(error) => {
            warn!(%error, "could not list this node's containers");
            None
        }
    };
    let previous_orphans = previous
        .as_ref()
        .map(|s| s.orphaned_volumes.clone())
        .unwrap_or_default();
    let orphaned_volumes = match &swept {
        Some(swept) => {
            ctx.metrics.sweep_held.set(swept.held.is_some().into());
            if let Some(why) = &swept.held {
                error!("{why}");
            }
            orphans(&swept.orphaned_volumes, &previous_orphans, Timestamp::now())
        }
        None => previous_orphans,
    };
    ctx.metrics.orphaned_volumes.set(orphaned_volumes.len() as i64);
    ctx.metrics.servers.clear();
    for server in &servers {
        let phase = server
            .status
            .as_ref()
            .and_then(|s| s.phase)
            .map(|p| format!("{p:?}"))
            .unwrap_or_else(|| "Unknown".into());
        ctx.metrics
            .servers
            .get_or_create(&super::metrics::PhaseLabel { phase })
            .inc();
    }
    let profiles: Profiles = Api::<ComputeProfile>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await
        .map_err(Error::Kube)?
        .items
        .into_iter()
        .collect();
    super::activity::report(ctx, &servers, &profiles).await;
    let firewall = super::network::check(&ctx.docker, &ctx.network).await;
    let mut status = status(ctx, previous, &servers, &profiles, firewall).await?;
    status.orphaned_volumes = orphaned_volumes;
    let patch = serde_json::json!({ "apiVersion": "computeserver.io/v1alpha1", "kind": "ComputeNode", "status": status });
    nodes
        .patch_status(&ctx.node, &params, &Patch::Apply(&patch))
        .await
        .map_err(Error::Kube)?;
    Ok(())
}

/// Renews the node's heartbeat Lease.
async fn renew_lease(ctx: &Context, lease_namespace: &str, lease_seconds: u32) -> Result<()> {
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some(lease_name(&ctx.node)),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(ctx.node.clone()),
            lease_duration_seconds: Some(lease_seconds as i32),
            renew_time: Some(MicroTime(k8s_openapi::jiff::Timestamp::now())),
            ..Default::default()
        }),
    };
    let leases: Api<Lease> = Api::namespaced(ctx.client.clone(), lease_namespace);
    leases
        .patch(
            &lease_name(&ctx.node),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&lease),
        )
        .await
        .map_err(Error::Kube)?;
    Ok(())
}

/// The allocation ratios the node's spec lacks, with the flags' values; `None` when it has both.
fn missing_ratios(
    spec: &crate::api::ComputeNodeSpec,
    (cpu, memory): &(String, String),
) -> Option<serde_json::Value> {
    let mut missing = serde_json::Map::new();
    if spec.cpu_allocation_ratio.is_none() {
        missing.insert("cpuAllocationRatio".into(), cpu.clone().into());
    }
    if spec.memory_allocation_ratio.is_none() {
        missing.insert("memoryAllocationRatio".into(), memory.clone().into());
    }
    (!missing.is_empty()).then_some(serde_json::Value::Object(missing))
}

/// The node's orphaned volumes for its status: each kept with the time it was first seen
/// orphaned (`previous`), newly seen ones logged; at most [`MAX_ORPHANS_LISTED`], oldest first.
fn orphans(volumes: &[Volume], previous: &[OrphanedVolume], now: Timestamp) -> Vec<OrphanedVolume> {
    let mut listed: Vec<OrphanedVolume> = volumes
        .iter()
        .map(|volume| {
            let label = |key: &str| volume.labels.get(key).cloned().unwrap_or_default();
            let since = previous.iter().find(|p| p.volume == volume.name).map(|p| p.orphaned_since.clone());
            let entry = OrphanedVolume {
                volume: volume.name.clone(),
                server: label(plan::NAME_LABEL),
                namespace: label(plan::NAMESPACE_LABEL),
                uid: label(plan::UID_LABEL),
                created_at: volume.created_at.as_deref().and_then(|t| t.parse().ok()).map(Time),
                orphaned_since: since.clone().unwrap_or(Time(now)),
            };
            if since.is_none() {
                info!(
                    volume = %entry.volume, server = %format!("{}/{}", entry.namespace, entry.server), uid = %entry.uid,
                    "kept the data volume of a server that is gone; `compute-server agent prune` removes it"
                );
            }
            entry
        })
        .collect();
    listed.sort_by(|a, b| (&a.orphaned_since.0, &a.volume).cmp(&(&b.orphaned_since.0, &b.volume)));
    listed.truncate(MAX_ORPHANS_LISTED);
    listed
}

/// Orphaned volumes listed in a ComputeNode's status; the metric counts them all.
const MAX_ORPHANS_LISTED: usize = 100;

async fn status(
    ctx: &Context,
    previous: Option<ComputeNodeStatus>,
    servers: &[Arc<ComputeServer>],
    profiles: &Profiles,
    firewall: Result<()>,
) -> Result<ComputeNodeStatus> {
    // An archived server is on no node, whatever its label says: it reserves nothing here.
    let servers: Vec<Arc<ComputeServer>> = servers
        .iter()
        .filter(|s| s.archived_to().is_none())
        .cloned()
        .collect();
    let mut used = Request::default();
    for server in &servers {
        let profile = profiles.of(server);
        if let Ok(request) = size::request(server, profile) {
            used += request;
        }
    }

    let (capacity, docker_version, ready) = match ctx.docker.info().await {
        Ok(info) => (
            Amounts {
                cpu: info.ncpu.map(|n| Quantity(n.to_string())),
                // Whole MiB, rounded down: easier to read, and never more than the host has.
                memory: info.mem_total.map(|m| size::memory_quantity(m >> 20 << 20)),
                gpus: Some(ctx.gpus.len() as i32),
            },
            info.server_version,
            Ok(()),
        ),
        Err(error) => (
            Amounts::default(),
            None,
            Err(format!("Docker does not answer: {error}")),
        ),
    };
    let (reason, ready) = match (ready, firewall) {
        (Err(docker), _) => ("DockerUnreachable", Err(docker)),
        (Ok(()), Err(firewall)) => (
            "FirewallMissing",
            Err(format!("the servers' firewall is not in place: {firewall}")),
        ),
        (Ok(()), Ok(())) => ("AgentReady", Ok(())),
    };
    let message = ready
        .clone()
        .err()
        .unwrap_or_else(|| "agent reports in, Docker answers and the servers' firewall is in place".into());
    let current = previous.map(|s| s.conditions).unwrap_or_default();
    let condition = crate::api::condition(&current, CONDITION_READY, ready.is_ok(), reason, &message, None);
    Ok(ComputeNodeStatus {
        capacity,
        allocated: Amounts {
            cpu: Some(size::cpu_quantity(used.nano_cpus)),
            memory: Some(size::memory_quantity(used.memory_bytes)),
            gpus: Some(used.gpus as i32),
        },
        servers: servers.len() as i32,
        address: Some(ctx.address.clone()),
        docker_version,
        conditions: vec![condition],
        orphaned_volumes: vec![],
        gpus: super::gpu::listed(&ctx.gpus, &servers),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_missing_ratios_are_filled_in_so_an_admins_stay() {
        let flags = ("4".to_string(), "1".to_string());
        let empty = crate::api::ComputeNodeSpec::default();
        assert_eq!(
            missing_ratios(&empty, &flags),
            Some(serde_json::json!({"cpuAllocationRatio": "4", "memoryAllocationRatio": "1"}))
        );
        let admins = crate::api::ComputeNodeSpec {
            cpu_allocation_ratio: Some("8".into()),
            ..Default::default()
        };
        assert_eq!(
            missing_ratios(&admins, &flags),
            Some(serde_json::json!({"memoryAllocationRatio": "1"}))
        );
        let both = crate::api::ComputeNodeSpec {
            memory_allocation_ratio: Some("1.5".into()),
            ..admins
        };
        assert_eq!(missing_ratios(&both, &flags), None);
    }
}
