//! `compute-server scheduler`: places unscheduled ComputeServers on Ready ComputeNodes that
//! fit them, and marks nodes whose agent stopped reporting, and their servers, as lost.
//!
//! Several replicas may run; a `coordination.k8s.io` Lease elects the one that acts. Every
//! replica keeps watch caches of servers, nodes, node Leases and profiles, so a standby that
//! takes over starts from warm caches. Each pass looks at the whole picture: what is placed
//! where (including its own placements the caches do not show yet), which nodes are Ready,
//! and places the pending servers oldest first.

mod budget;
mod lifecycle;
mod moving;
pub mod placement;
mod plan;
mod queue;
mod usage;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::sync::Notify;
use tracing::{info, warn};

use crate::api::quota;
use crate::api::{
    CONDITION_READY, CONDITION_SCHEDULED, CONTAINER_FINALIZER, ComputeNode, ComputeProfile, ComputeQuota,
    ComputeServer, ComputeSnapshot, ComputeUsage, NODE_LABEL, Phase,
};
use crate::runtime::events::Events;
use crate::runtime::{status, watch};
use crate::{Error, Result};

const FIELD_MANAGER: &str = "compute-server-scheduler";
/// The leader's Lease, in the lease namespace.
const LEADER_LEASE: &str = "compute-server-scheduler";
/// A pass runs at least this often, so that Leases that run out are noticed.
const TICK: Duration = Duration::from_secs(2);
/// Writes in flight at once during a pass.
const CONCURRENT_WRITES: usize = 64;

/// Flags of `compute-server scheduler`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Namespace of the leader's Lease and of the nodes' heartbeat Leases.
    #[arg(long, env = "COMPUTE_SERVER_LEASE_NAMESPACE", default_value = "compute")]
    pub lease_namespace: String,

    /// This replica's name in the leader election (default: host name and process id).
    #[arg(long, env = "COMPUTE_SERVER_IDENTITY")]
    pub identity: Option<String>,

    /// Seconds the leader's Lease lasts: a standby takes over within this time when the
    /// leader dies.
    #[arg(long, env = "COMPUTE_SERVER_LEADER_LEASE_SECONDS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(3..=600))]
    pub leader_lease_seconds: u64,

    /// Place only the servers of this namespace (default: every namespace), within the
    /// ComputeQuotas labelled computeserver.io/namespace with it (the cluster-wide scheduler
    /// counts those without the label), and count its own ComputeUsage ("NS.2026-12-04").
    #[arg(long, env = "COMPUTE_SERVER_NAMESPACE")]
    pub namespace: Option<String>,

    /// Seconds between two counts of the running servers' hours into the day's ComputeUsage
    /// (what CPU- and GPU-hour budgets count from).
    #[arg(long, env = "COMPUTE_SERVER_USAGE_INTERVAL_SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub usage_interval_seconds: u64,

    /// Where to serve /metrics, /healthz and /readyz.
    #[arg(long, env = "COMPUTE_SERVER_METRICS_ADDRESS", default_value = "0.0.0.0:8081")]
    pub metrics_address: std::net::SocketAddr,
}

/// What the scheduler counts, prefixed `compute_server_scheduler_`.
struct Metrics {
    placements: Counter,
    unschedulable: Gauge,
    pending: Gauge,
    leader: Gauge,
    pass_duration: Histogram,
    lifecycle_stops: Family<StopLabel, Counter>,
    lifecycle_deletions: Counter,
    /// Reserved hours counted into the ledger, per person and per group.
    user_hours: Family<HoursLabel, Counter<f64, std::sync::atomic::AtomicU64>>,
    group_hours: Family<HoursLabel, Counter<f64, std::sync::atomic::AtomicU64>>,
}

/// Whose hours (a person's or a group's name) of which resource (cpu, memory_gib, gpu).
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct HoursLabel {
    name: String,
    resource: String,
}

/// Why the lifecycle stopped a server: idle, lifetime or extension (a keep-running ran out).
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct StopLabel {
    reason: String,
}

impl Metrics {
    fn register(registry: &mut Registry) -> Metrics {
        let metrics = Metrics {
            placements: Counter::default(),
            unschedulable: Gauge::default(),
            pending: Gauge::default(),
            leader: Gauge::default(),
            pass_duration: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
            lifecycle_stops: Family::default(),
            lifecycle_deletions: Counter::default(),
            user_hours: Family::default(),
            group_hours: Family::default(),
        };
        registry.register(
            "user_reserved_hours",
            "Reserved hours of running servers counted into the usage ledger, per person and resource \
             (cpu: CPU-hours, memory_gib: GiB-hours, gpu: GPU-hours)",
            metrics.user_hours.clone(),
        );
        registry.register(
            "group_reserved_hours",
            "Reserved hours counted into the usage ledger, per Keycloak group of the servers' owners and resource",
            metrics.group_hours.clone(),
        );
        registry.register(
            "placements",
            "Servers placed on a node",
            metrics.placements.clone(),
        );
        registry.register(
            "unschedulable_servers",
            "Servers no node can run, as of the last pass",
            metrics.unschedulable.clone(),
        );
        registry.register(
            "pending_servers",
            "Servers without a node, as of the last pass",
            metrics.pending.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica is the leader",
            metrics.leader.clone(),
        );
        registry.register(
            "pass_duration_seconds",
            "Time one scheduling pass took",
            metrics.pass_duration.clone(),
        );
        registry.register(
            "lifecycle_stops",
            "Servers the lifecycle stopped, by reason (idle, lifetime, extension)",
            metrics.lifecycle_stops.clone(),
        );
        registry.register(
            "lifecycle_deletions",
            "Servers the lifecycle deleted after they were stopped too long",
            metrics.lifecycle_deletions.clone(),
        );
        metrics
    }
}

/// The watch caches a pass reads.
#[derive(Clone)]
struct Caches {
    servers: Store<ComputeServer>,
    nodes: Store<ComputeNode>,
    leases: Store<Lease>,
    profiles: Store<ComputeProfile>,
    snapshots: Store<ComputeSnapshot>,
    quotas: Store<ComputeQuota>,
    usage: Store<ComputeUsage>,
    /// The namespace this scheduler places alone: its quotas and usage carry its label.
    scope: Option<String>,
}

impl Caches {
    /// Starts a reflector per kind; `changed` is notified on every event.
    fn start(client: &Client, args: &Args, changed: &Arc<Notify>) -> Caches {
        let servers = match &args.namespace {
            Some(ns) => Api::<ComputeServer>::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        };
        let scoped = watcher::Config::default().labels(&quota::scope_selector(args.namespace.as_deref()));
        Caches {
            servers: reflect(servers, watcher::Config::default(), changed),
            nodes: reflect(Api::all(client.clone()), watcher::Config::default(), changed),
            leases: reflect(
                Api::namespaced(client.clone(), &args.lease_namespace),
                watcher::Config::default(),
                changed,
            ),
            profiles: reflect(Api::all(client.clone()), watcher::Config::default(), changed),
            snapshots: match &args.namespace {
                Some(ns) => reflect(
                    Api::namespaced(client.clone(), ns),
                    watcher::Config::default(),
                    changed,
                ),
                None => reflect(Api::all(client.clone()), watcher::Config::default(), changed),
            },
            quotas: reflect(Api::all(client.clone()), scoped.clone(), changed),
            usage: reflect(Api::all(client.clone()), scoped, changed),
            scope: args.namespace.clone(),
        }
    }

    /// What the caches hold now, for a pass.
    fn snapshot(&self, now: Timestamp, count_usage: bool) -> plan::Snapshot {
        plan::Snapshot {
            servers: self.servers.state(),
            nodes: self.nodes.state(),
            leases: self
                .leases
                .state()
                .into_iter()
                .map(|l| (l.name_any(), l))
                .collect(),
            profiles: self.profiles.state().into_iter().collect(),
            snapshots: self.snapshots.state(),
            quotas: self.quotas.state(),
            usage: self.usage.state(),
            count_usage,
            scope: self.scope.clone(),
            now,
        }
    }

    /// Whether every cache has loaded its first full list.
    fn synced(&self) -> bool {
        watch::synced(&self.servers)
            && watch::synced(&self.nodes)
            && watch::synced(&self.leases)
            && watch::synced(&self.profiles)
            && watch::synced(&self.quotas)
            && watch::synced(&self.usage)
    }
}

/// A watch cache of `api` whose every event wakes the pass loop.
fn reflect<K>(api: Api<K>, config: watcher::Config, changed: &Arc<Notify>) -> Store<K>
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
{
    let changed = changed.clone();
    watch::reflect(api, config, watch::keep, move |_| changed.notify_one())
}

pub async fn run(args: Args) -> Result<()> {
    let client = crate::kube_client::connect().await?;
    let identity = args.identity.clone().unwrap_or_else(default_identity);
    let mut registry = Registry::with_prefix("compute_server_scheduler");
    let metrics = Arc::new(Metrics::register(&mut registry));
    let changed = Arc::new(Notify::new());
    let caches = Caches::start(&client, &args, &changed);

    let ready: crate::runtime::health::ReadyCheck = {
        let caches = caches.clone();
        Arc::new(move || {
            let caches = caches.clone();
            Box::pin(async move {
                if caches.synced() {
                    Ok(())
                } else {
                    Err("the watch caches have not loaded yet".into())
                }
            })
        })
    };
    crate::runtime::health::spawn(args.metrics_address, registry, ready);

    let lease_seconds = args.leader_lease_seconds;
    let manager = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), LEADER_LEASE)
        .with_namespace(&args.lease_namespace)
        .with_identity(&identity)
        .with_field_manager(FIELD_MANAGER)
        .with_duration(lease_seconds)
        // Renew at half the lease: a leader whose API calls are slow for a moment keeps it
        // (client-go renews with a third of the lease to spare; this leaves half).
        .with_grace((lease_seconds / 2).max(1))
        .build()
        .await
        .map_err(|e| Error::Leader(e.to_string()))?;
    let (mut leader, mut election) = manager.watch().await;
    info!(%identity, lease = %format!("{}/{LEADER_LEASE}", args.lease_namespace), "scheduler starting; waiting to lead");

    let mut scheduler = Scheduler {
        events: Events::new(client.clone(), FIELD_MANAGER, Some(identity.clone())),
        client,
        caches,
        metrics,
        assumed: HashMap::new(),
        usage_every: Duration::from_secs(args.usage_interval_seconds),
        usage_counted: None,
    };
    let mut leading = false;
    let shutdown = crate::runtime::health::shutdown();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = changed.notified() => {}
            _ = tokio::time::sleep(TICK) => {}
            result = leader.changed() => {
                if result.is_err() {
                    break;
                }
            }
            result = &mut election => {
                return Err(Error::Leader(match result {
                    Ok(Ok(_)) => "the leader election ended".into(),
                    Ok(Err(e)) => e.to_string(),
                    Err(e) => e.to_string(),
                }));
            }
            _ = &mut shutdown => break,
        }
        let now_leading = *leader.borrow();
        if now_leading != leading {
            leading = now_leading;
            scheduler.metrics.leader.set(leading.into());
            if leading {
                info!(%identity, "leading: placing servers");
            } else {
                info!(%identity, "no longer leading: standing by");
                scheduler.assumed.clear();
            }
        }
        if leading && scheduler.caches.synced() {
            scheduler.pass(&leader).await;
        }
    }
    // Hand the lease over at once rather than let a standby wait for it to run out.
    drop(leader);
    let _ = election.await;
    Ok(())
}

fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "scheduler".into());
    format!("{host}_{}", std::process::id())
}

/// The status of a server whose node is lost: NodeLost, with `message` (why, and whether it moves).
fn lost_status(server: &ComputeServer, message: &str) -> serde_json::Value {
    serde_json::json!({
        "phase": Phase::NodeLost,
        "message": message,
        "conditions": [crate::api::server_condition(server, CONDITION_READY, false, "NodeLost", message)],
    })
}

struct Scheduler {
    client: Client,
    events: Events,
    caches: Caches,
    metrics: Arc<Metrics>,
    /// Placements written that the cache does not show yet.
    assumed: plan::Assumed,
    /// How often hours are counted, and when they last were by this leader (the ledger's own
    /// countedUntil says from when; this only keeps a pass on a stale cache from trying again).
    usage_every: Duration,
    usage_counted: Option<std::time::Instant>,
}

/// A write that failed and is to be tried again.
enum Failed {
    /// A placement: the server's uid, forgotten from the assumed placements.
    Placement(String),
    /// A count of hours: counted again at the next pass.
    Usage,
}

impl Scheduler {
    /// One pass: the plan from the caches, then its writes (placements that fail to be written
    /// are forgotten, so the next pass tries them again).
    async fn pass(&mut self, leader: &tokio::sync::watch::Receiver<bool>) {
        let started = std::time::Instant::now();
        let count_usage = self
            .usage_counted
            .is_none_or(|at| at.elapsed() >= self.usage_every);
        if count_usage {
            self.usage_counted = Some(std::time::Instant::now());
        }
        let snapshot = self.caches.snapshot(Timestamp::now(), count_usage);
        let plan = plan::plan(&snapshot, &mut self.assumed);
        self.metrics.pending.set(plan.pending as i64);
        self.metrics.unschedulable.set(plan.unschedulable as i64);
        let failed: Vec<Failed> = futures::stream::iter(plan.writes)
            .map(|write| self.write(write, leader))
            .buffer_unordered(CONCURRENT_WRITES)
            .filter_map(|failed| async move { failed })
            .collect()
            .await;
        for failed in failed {
            match failed {
                Failed::Placement(uid) => {
                    self.assumed.remove(&uid);
                }
                Failed::Usage => self.usage_counted = None,
            }
        }
        self.metrics
            .pass_duration
            .observe(started.elapsed().as_secs_f64());
    }

    /// Makes one write; the uid of a server whose placement failed (it is retried next pass).
    async fn write(&self, write: plan::Write, leader: &tokio::sync::watch::Receiver<bool>) -> Option<Failed> {
        if !*leader.borrow() {
            return None;
        }
        match write {
            plan::Write::Place {
                server,
                node,
                fitting,
            } => {
                let uid = server.uid().unwrap_or_default();
                match self.place(&server, &node, fitting).await {
                    Ok(()) => {
                        self.metrics.placements.inc();
                        None
                    }
                    Err(error) => {
                        warn!(%error, server = %server.name_any(), %node, "placement not written; retrying");
                        Some(Failed::Placement(uid))
                    }
                }
            }
            plan::Write::Unschedulable {
                server,
                reason,
                position,
                message,
            } => {
                if let Err(error) = self.unschedulable(&server, &reason, position, &message).await {
                    warn!(%error, server = %server.name_any(), "could not write why the server waits");
                }
                None
            }
            plan::Write::Usage(day) => match self.count_usage(&day).await {
                Ok(()) => {
                    for (owner, groups, hours) in &day.added {
                        let each = [
                            ("cpu", hours.cpu_hours),
                            ("memory_gib", hours.memory_gib_hours),
                            ("gpu", hours.gpu_hours),
                        ];
                        for (resource, value) in each {
                            let label = |name: &str| HoursLabel {
                                name: name.to_string(),
                                resource: resource.into(),
                            };
                            self.metrics.user_hours.get_or_create(&label(owner)).inc_by(value);
                            for group in groups {
                                self.metrics
                                    .group_hours
                                    .get_or_create(&label(group))
                                    .inc_by(value);
                            }
                        }
                    }
                    None
                }
                Err(error) => {
                    warn!(%error, day = %day.name, "could not count the hours into the day's ComputeUsage; counting again");
                    Some(Failed::Usage)
                }
            },
            plan::Write::QuotaStatus { name, status } => {
                let patch = serde_json::json!({
                    "apiVersion": ComputeQuota::api_version(&()),
                    "kind": ComputeQuota::kind(&()),
                    "status": status,
                });
                let quotas: Api<ComputeQuota> = Api::all(self.client.clone());
                if let Err(error) = status::apply(&quotas, &name, FIELD_MANAGER, &patch).await {
                    warn!(%error, quota = %name, "could not write the quota's status");
                }
                None
            }
            plan::Write::NodeLost { node, reason } => {
                if let Err(error) = self.node_lost(&node, &reason).await {
                    warn!(%error, node = %node.name_any(), "could not mark the node lost");
                }
                None
            }
            plan::Write::Lifecycle(write) => {
                if let Err(error) = self.lifecycle(write).await {
                    warn!(%error, "lifecycle write failed; retrying next pass");
                }
                None
            }
            plan::Write::Release { server, node } => {
                if let Err(error) = self.release(&server, &node).await {
                    warn!(%error, server = %server.name_any(), %node, "could not release the server of a deleted node");
                }
                None
            }
            plan::Write::ServerLost {
                server,
                node,
                message,
            } => {
                if let Err(error) = self.apply_status(&server, lost_status(&server, &message)).await {
                    warn!(%error, server = %server.name_any(), %node, "could not mark the server NodeLost");
                }
                None
            }
            plan::Write::Move {
                server,
                node,
                decided,
            } => {
                if let Err(error) = self.move_off(&server, &node, decided).await {
                    warn!(%error, server = %server.name_any(), %node, "could not move the server off its lost node; retrying");
                }
                None
            }
        }
    }

    /// The placement is one write, the node label, as kube-scheduler's binding is one: the
    /// agent of that node sees the server then and writes `Scheduled=True` and the node into
    /// its status (as the kubelet reports a bound pod). The label carries the resourceVersion
    /// the decision was based on: a server changed meanwhile is not placed twice. Only the
    /// answer's metadata is asked for (the scheduler's watch brings the rest): less for the API
    /// server to encode and for the scheduler to decode, 10,000 times in a burst.
    async fn place(&self, server: &ComputeServer, node: &str, fitting: usize) -> Result<()> {
        let patch = serde_json::json!({
            "metadata": {
                "resourceVersion": server.resource_version(),
                "labels": { NODE_LABEL: node },
            }
        });
        self.api(server)
            .patch_metadata(&server.name_any(), &self.params(), &Patch::Merge(&patch))
            .await
            .map_err(Error::Kube)?;
        info!(server = %server.name_any(), namespace = server.namespace(), %node, fitting, "placed");
        if server.status.as_ref().is_some_and(|s| s.queue_position.is_some()) {
            // No longer in line. The agent takes over phase and message when it reports.
            let patch = serde_json::json!({ "status": { "queuePosition": null } });
            if let Err(error) = self
                .api(server)
                .patch_status(&server.name_any(), &self.params(), &Patch::Merge(&patch))
                .await
            {
                warn!(%error, server = %server.name_any(), "could not clear the place in line of a placed server");
            }
        }
        Ok(())
    }

    /// Moves a server off its lost node: its status says so (still NodeLost, so a move that
    /// fails halfway is decided again), then one write of its metadata and spec removes its node
    /// label and names the snapshot in spec.restoreFrom. From then on the lost node's agent no
    /// longer sees it (nor starts its stale container), and the next pass places it.
    async fn move_off(&self, server: &ComputeServer, node: &str, decided: moving::Move) -> Result<()> {
        let written = self
            .apply_status(server, lost_status(server, &decided.message))
            .await?;
        let mut patch = serde_json::json!({
            "metadata": {
                "resourceVersion": written.resource_version(),
                "labels": { NODE_LABEL: null },
            }
        });
        if decided.set_restore_from {
            patch["spec"] = serde_json::json!({ "restoreFrom": { "snapshot": decided.snapshot } });
        }
        self.api(server)
            .patch(&server.name_any(), &self.params(), &Patch::Merge(&patch))
            .await
            .map_err(Error::Kube)?;
        info!(server = %server.name_any(), namespace = server.namespace(), %node, snapshot = %decided.snapshot, "moving off a lost node");
        self.event(server, EventType::Warning, "Moving", decided.message)
            .await;
        Ok(())
    }

    /// Carries out one write of the lifecycle controller.
    async fn lifecycle(&self, write: lifecycle::Write) -> Result<()> {
        match write {
            lifecycle::Write::Status { server, fields } => {
                self.lifecycle_status(&server, &fields).await?;
            }
            lifecycle::Write::Stop {
                server,
                reason,
                fields,
            } => {
                // Based on what was decided on: a server changed meanwhile is looked at again.
                let patch = serde_json::json!({
                    "metadata": { "resourceVersion": server.resource_version() },
                    "spec": { "running": false },
                });
                self.api(&server)
                    .patch(&server.name_any(), &self.params(), &Patch::Merge(&patch))
                    .await
                    .map_err(Error::Kube)?;
                self.lifecycle_status(&server, &fields).await?;
                let kind = if reason.starts_with("idle") {
                    "idle"
                } else if reason.starts_with("kept running") {
                    "extension"
                } else {
                    "lifetime"
                };
                self.metrics
                    .lifecycle_stops
                    .get_or_create(&StopLabel { reason: kind.into() })
                    .inc();
                info!(server = %server.name_any(), namespace = server.namespace(), %reason, "stopped by the lifecycle");
                let note = format!(
                    "stopped it ({reason}); its container and data are kept: start it again to go on"
                );
                self.event(&server, EventType::Normal, "LifecycleStop", note)
                    .await;
            }
            lifecycle::Write::Delete { server, reason } => {
                let params = kube::api::DeleteParams {
                    preconditions: Some(kube::api::Preconditions {
                        uid: server.uid(),
                        resource_version: server.resource_version(),
                    }),
                    ..Default::default()
                };
                self.event(
                    &server,
                    EventType::Normal,
                    "LifecycleDelete",
                    format!("deleting it: {reason}"),
                )
                .await;
                self.api(&server)
                    .delete(&server.name_any(), &params)
                    .await
                    .map_err(Error::Kube)?;
                self.metrics.lifecycle_deletions.inc();
                info!(server = %server.name_any(), namespace = server.namespace(), %reason, "deleted by the lifecycle");
            }
        }
        Ok(())
    }

    /// The lifecycle's status fields of `server`, under its own field manager.
    async fn lifecycle_status(&self, server: &ComputeServer, fields: &lifecycle::Fields) -> Result<()> {
        let name = server.name_any();
        status::apply(
            &self.api(server),
            &name,
            lifecycle::FIELD_MANAGER,
            &fields.apply(server),
        )
        .await
        .map_err(Error::Kube)?;
        Ok(())
    }

    /// Lets a server on a deleted ComputeNode go, as Kubernetes does for the pods of a deleted
    /// Node: its finalizer is removed without removing its container, which nobody can reach now.
    /// Checked against the API server first, not only the cache.
    async fn release(&self, server: &ComputeServer, node: &str) -> Result<()> {
        let nodes: Api<ComputeNode> = Api::all(self.client.clone());
        if nodes.get_opt(node).await.map_err(Error::Kube)?.is_some() {
            return Ok(());
        }
        let finalizers: Vec<&String> = server
            .finalizers()
            .iter()
            .filter(|f| *f != CONTAINER_FINALIZER)
            .collect();
        let patch = serde_json::json!({
            "metadata": { "resourceVersion": server.resource_version(), "finalizers": finalizers },
        });
        self.api(server)
            .patch(&server.name_any(), &self.params(), &Patch::Merge(&patch))
            .await
            .map_err(Error::Kube)?;
        let message = format!(
            "node {node} was deleted, so no agent can remove this server's container: released it. If that host \
             comes back, its agent removes the container and lists the data volume as orphaned on its ComputeNode"
        );
        warn!(server = %server.name_any(), namespace = server.namespace(), %node, "released a server of a deleted node");
        self.event(server, EventType::Warning, "NodeDeleted", message)
            .await;
        Ok(())
    }

    /// Why a server waits, and its place in line. An Event only when the reason changes, not
    /// each time the line moves.
    async fn unschedulable(
        &self,
        server: &ComputeServer,
        reason: &str,
        position: Option<u32>,
        message: &str,
    ) -> Result<()> {
        let status = serde_json::json!({
            "phase": Phase::Pending,
            "message": message,
            "queuePosition": position,
            "conditions": [crate::api::server_condition(server, CONDITION_SCHEDULED, false, "Unschedulable", reason)],
        });
        let before = server
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == CONDITION_SCHEDULED))
            .map(|c| c.message.clone());
        self.apply_status(server, status).await?;
        if before.as_deref() != Some(reason) {
            info!(server = %server.name_any(), namespace = server.namespace(), %reason, "cannot place");
            self.event(server, EventType::Warning, "FailedScheduling", reason.to_string())
                .await;
        }
        Ok(())
    }

    /// Writes one day's ComputeUsage: created, or replaced on the version the count began from.
    async fn count_usage(&self, day: &usage::Day) -> Result<()> {
        let api: Api<ComputeUsage> = Api::all(self.client.clone());
        let mut object = ComputeUsage::new(&day.name, day.spec.clone());
        object
            .labels_mut()
            .insert("app.kubernetes.io/managed-by".into(), "compute-server".into());
        if let Some(ns) = &self.caches.scope {
            object.labels_mut().insert(quota::SCOPE_LABEL.into(), ns.clone());
        }
        match &day.resource_version {
            None => {
                api.create(&Default::default(), &object)
                    .await
                    .map_err(Error::Kube)?;
            }
            Some(version) => {
                object.metadata.resource_version = Some(version.clone());
                api.replace(&day.name, &Default::default(), &object)
                    .await
                    .map_err(Error::Kube)?;
            }
        }
        Ok(())
    }

    async fn node_lost(&self, node: &ComputeNode, reason: &str) -> Result<()> {
        let message = format!("node lost: {reason}");
        let patch = serde_json::json!({ "status": { "conditions": [Condition {
            type_: CONDITION_READY.into(),
            status: "False".into(),
            reason: "NodeLost".into(),
            message: message.clone(),
            observed_generation: None,
            last_transition_time: Time(Timestamp::now()),
        }]}});
        Api::<ComputeNode>::all(self.client.clone())
            .patch_status(&node.name_any(), &self.params(), &Patch::Merge(&patch))
            .await
            .map_err(Error::Kube)?;
        warn!(node = %node.name_any(), %reason, "node lost");
        Ok(())
    }

    /// Applies the scheduler's status fields (server-side apply, as
    /// [`FIELD_MANAGER`]): phase, message and the Scheduled condition of a server it cannot
    /// place, or phase, message and Ready of a server on a lost node. The agent takes them over
    /// when it reports the server; these writes happen only while it cannot. Based on the
    /// resourceVersion decided on.
    async fn apply_status(&self, server: &ComputeServer, status: serde_json::Value) -> Result<ComputeServer> {
        let patch = serde_json::json!({
            "apiVersion": ComputeServer::api_version(&()),
            "kind": ComputeServer::kind(&()),
            "metadata": { "resourceVersion": server.resource_version() },
            "status": status,
        });
        status::apply(&self.api(server), &server.name_any(), FIELD_MANAGER, &patch)
            .await
            .map_err(Error::Kube)
    }

    fn api(&self, server: &ComputeServer) -> Api<ComputeServer> {
        Api::namespaced(self.client.clone(), &server.namespace().unwrap_or_default())
    }

    fn params(&self) -> PatchParams {
        PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        }
    }

    async fn event(&self, server: &ComputeServer, type_: EventType, reason: &str, note: String) {
        self.events
            .publish(server, type_, reason, "Scheduling", note)
            .await;
    }
}

#[cfg(test)]
pub(super) mod tests {
    //! The scheduler's writes against an API server in memory (src/mock_api.rs): what a pass
    //! sends is exactly what these tests see, so a second write, or one too few, fails them.
    //! The fixtures serve plan.rs's tests too.

    use super::*;
    use crate::mock_api::{self, ApiServer};

    const SERVERS: &str = "/apis/computeserver.io/v1alpha1/namespaces/compute/computeservers";

    /// A Ready node with `cpu` CPUs and `memory`, its agent reporting in at `now`.
    pub(in crate::scheduler) fn node(name: &str, cpu: &str, memory: &str) -> ComputeNode {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "computeserver.io/v1alpha1", "kind": "ComputeNode",
            "metadata": {"name": name},
            "spec": {"cpuAllocationRatio": "1", "memoryAllocationRatio": "1"},
            "status": {
                "capacity": {"cpu": cpu, "memory": memory, "gpus": 0},
                "conditions": [{"type": "Ready", "status": "True", "reason": "Reporting",
                                "message": "ok", "lastTransitionTime": "2026-12-01T00:00:00Z"}],
            },
        }))
        .unwrap()
    }

    /// The heartbeat Lease of `node`, renewed at `renewed`.
    pub(in crate::scheduler) fn lease(node: &str, renewed: Timestamp) -> Lease {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": crate::api::lease_name(node), "namespace": "compute"},
            "spec": {"holderIdentity": node, "leaseDurationSeconds": 40,
                     "renewTime": renewed.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()},
        }))
        .unwrap()
    }

    /// A pending server of alice's asking for `cpu` and `memory`.
    pub(in crate::scheduler) fn server(name: &str, cpu: &str, memory: &str) -> ComputeServer {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "computeserver.io/v1alpha1", "kind": "ComputeServer",
            "metadata": {"name": name, "namespace": "compute", "uid": format!("uid-{name}"),
                         "resourceVersion": "7", "creationTimestamp": "2026-12-01T00:00:00Z"},
            "spec": {"owner": "alice", "image": "busybox", "resources": {"cpu": cpu, "memory": memory}},
        }))
        .unwrap()
    }

    /// A scheduler on the mocked API server whose caches hold one 2-CPU node and `servers`.
    fn scheduler(servers: Vec<ComputeServer>) -> (Scheduler, ApiServer) {
        let (client, api) = mock_api::client();
        let caches = Caches {
            servers: watch::filled(servers),
            nodes: watch::filled(vec![node("n1", "2", "4Gi")]),
            leases: watch::filled(vec![lease("n1", Timestamp::now())]),
            profiles: watch::filled(Vec::new()),
            snapshots: watch::filled(Vec::new()),
            quotas: watch::filled(Vec::new()),
            usage: watch::filled(Vec::new()),
            scope: None,
        };
        let scheduler = Scheduler {
            events: Events::new(client.clone(), FIELD_MANAGER, None),
            client,
            caches,
            metrics: Arc::new(Metrics::register(&mut Registry::default())),
            assumed: Default::default(),
            // Hours are counted in plan.rs's and usage.rs's tests, not here.
            usage_every: Duration::from_secs(3600),
            usage_counted: Some(std::time::Instant::now()),
        };
        (scheduler, api)
    }

    /// Runs one pass in the background (leading or not); the test answers its requests.
    fn pass(mut scheduler: Scheduler, leading: bool) -> tokio::task::JoinHandle<Scheduler> {
        tokio::spawn(async move {
            let (_sender, leader) = tokio::sync::watch::channel(leading);
            scheduler.pass(&leader).await;
            scheduler
        })
    }

    #[tokio::test]
    async fn a_pending_server_is_placed_with_one_write_and_not_again() {
        let lab = server("lab", "1", "1Gi");
        let (scheduler, mut api) = scheduler(vec![lab.clone()]);
        let running = pass(scheduler, true);
        let call = api.next().await.expect("PATCH", &format!("{SERVERS}/lab"));
        assert_eq!(call.body["metadata"]["labels"][NODE_LABEL], "n1", "{}", call.body);
        assert_eq!(
            call.body["metadata"]["resourceVersion"], "7",
            "placed on the version decided on"
        );
        call.answer(&lab);
        let scheduler = running.await.unwrap();
        assert_eq!(scheduler.metrics.placements.get(), 1);
        // The cache does not show the label yet: the next pass counts it placed, and is silent.
        let running = pass(scheduler, true);
        api.silent(Duration::from_millis(300)).await;
        let scheduler = running.await.unwrap();
        assert_eq!(scheduler.metrics.placements.get(), 1);
    }

    #[tokio::test]
    async fn a_placement_refused_by_the_api_server_is_tried_again_next_pass() {
        let lab = server("lab", "1", "1Gi");
        let (scheduler, mut api) = scheduler(vec![lab.clone()]);
        let running = pass(scheduler, true);
        api.next()
            .await
            .expect("PATCH", &format!("{SERVERS}/lab"))
            .status(409, "Conflict");
        let scheduler = running.await.unwrap();
        assert!(
            scheduler.assumed.is_empty(),
            "a placement not written is not assumed"
        );
        let running = pass(scheduler, true);
        api.next()
            .await
            .expect("PATCH", &format!("{SERVERS}/lab"))
            .answer(&lab);
        assert_eq!(running.await.unwrap().metrics.placements.get(), 1);
    }

    #[tokio::test]
    async fn a_scheduler_that_does_not_lead_writes_nothing() {
        let (scheduler, mut api) = scheduler(vec![server("lab", "1", "1Gi")]);
        let running = pass(scheduler, false);
        api.silent(Duration::from_millis(300)).await;
        running.await.unwrap();
    }

    #[tokio::test]
    async fn a_server_no_node_can_take_gets_its_reason_once_and_an_event() {
        let big = server("big", "64", "1Gi");
        let (scheduler, mut api) = scheduler(vec![big.clone()]);
        let running = pass(scheduler, true);
        let call = api.next().await.expect("PATCH", &format!("{SERVERS}/big/status"));
        assert!(
            call.query.contains("fieldManager=compute-server-scheduler"),
            "{}",
            call.query
        );
        assert_eq!(call.body["status"]["phase"], "Pending");
        let message = call.body["status"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(
            message.contains("CPU"),
            "the reason names what is missing: {message}"
        );
        assert!(
            message.starts_with("1st in line for room on a node: 0/1 nodes"),
            "{message}"
        );
        assert_eq!(call.body["status"]["queuePosition"], 1);
        let reason = call.body["status"]["conditions"][0]["message"]
            .as_str()
            .unwrap()
            .to_string();
        call.answer(&big);
        let event = api.next().await;
        assert_eq!(event.method, "POST");
        assert!(event.path.ends_with("/events"), "{}", event.path);
        assert_eq!(event.body["reason"], "FailedScheduling");
        assert_eq!(
            event.body["note"],
            reason.as_str(),
            "the Event says why, not the place in line"
        );
        let answer = event.body.clone();
        event.answer(&answer);
        assert_eq!(running.await.unwrap().metrics.unschedulable.get(), 1);
    }

    #[tokio::test]
    async fn a_server_moved_off_its_lost_node_is_unlabelled_in_one_write_after_its_status() {
        let mut lab = server("lab", "1", "1Gi");
        lab.labels_mut().insert(NODE_LABEL.into(), "gone".into());
        lab.spec.restore_from = Some(crate::api::RestoreFrom {
            snapshot: "lab-1".into(),
        });
        lab.status = Some(crate::api::ComputeServerStatus {
            phase: Some(Phase::NodeLost),
            ..Default::default()
        });
        let (scheduler, mut api) = scheduler(vec![lab.clone()]);
        let running = pass(scheduler, true);
        let call = api.next().await.expect("PATCH", &format!("{SERVERS}/lab/status"));
        assert_eq!(
            call.body["status"]["phase"], "NodeLost",
            "still lost until placed anew"
        );
        let message = call.body["status"]["message"].as_str().unwrap().to_string();
        assert!(
            message.starts_with(
                "node gone is lost; its owner asked: it moves to another node, restored from snapshot lab-1"
            ),
            "{message}"
        );
        let mut written = lab.clone();
        written.metadata.resource_version = Some("8".into());
        call.answer(&written);
        let call = api.next().await.expect("PATCH", &format!("{SERVERS}/lab"));
        assert_eq!(
            call.body["metadata"]["labels"][NODE_LABEL],
            serde_json::Value::Null,
            "{}",
            call.body
        );
        assert_eq!(
            call.body["metadata"]["resourceVersion"], "8",
            "on the version its status was written to"
        );
        assert!(
            call.body.get("spec").is_none(),
            "its owner named the snapshot: {}",
            call.body
        );
        call.answer(&written);
        let event = api.next().await;
        assert_eq!(event.body["reason"], "Moving");
        let answer = event.body.clone();
        event.answer(&answer);
        running.await.unwrap();
    }
}
