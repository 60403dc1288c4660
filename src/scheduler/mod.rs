//! `compute-server scheduler`: places unscheduled ComputeServers on Ready ComputeNodes that
//! fit them, and marks nodes whose agent stopped reporting, and their servers, as lost.
//!
//! Several replicas may run; a `coordination.k8s.io` Lease elects the one that acts. Every
//! replica keeps watch caches of servers, nodes, node Leases and profiles, so a standby that
//! takes over starts from warm caches. Each pass looks at the whole picture: what is placed
//! where (including its own placements the caches do not show yet), which nodes are Ready,
//! and places the pending servers oldest first.

mod lifecycle;
pub mod placement;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
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

use crate::api::size::{self, Request};
use crate::api::{
    CONDITION_READY, CONDITION_SCHEDULED, CONTAINER_FINALIZER, ComputeNode, ComputeProfile, ComputeServer,
    NODE_LABEL, Phase,
};
use crate::runtime::watch;
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

    /// Place only the servers of this namespace (default: every namespace).
    #[arg(long, env = "COMPUTE_SERVER_NAMESPACE")]
    pub namespace: Option<String>,

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
        };
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
}

impl Caches {
    /// Starts a reflector per kind; `changed` is notified on every event.
    fn start(client: &Client, args: &Args, changed: &Arc<Notify>) -> Caches {
        let servers = match &args.namespace {
            Some(ns) => Api::<ComputeServer>::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        };
        Caches {
            servers: reflect(servers, watcher::Config::default(), changed),
            nodes: reflect(Api::all(client.clone()), watcher::Config::default(), changed),
            leases: reflect(
                Api::namespaced(client.clone(), &args.lease_namespace),
                watcher::Config::default(),
                changed,
            ),
            profiles: reflect(Api::all(client.clone()), watcher::Config::default(), changed),
        }
    }

    /// Whether every cache has loaded its first full list.
    fn synced(&self) -> bool {
        watch::synced(&self.servers)
            && watch::synced(&self.nodes)
            && watch::synced(&self.leases)
            && watch::synced(&self.profiles)
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
    let health = crate::runtime::health::serve(
        args.metrics_address,
        crate::runtime::health::router(Arc::new(registry), ready),
    );
    tokio::spawn(async move {
        if let Err(error) = health.await {
            tracing::error!(%error, "the metrics and health endpoints stopped");
        }
    });

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
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: FIELD_MANAGER.into(),
                instance: Some(identity.clone()),
            },
        ),
        client,
        caches,
        metrics,
        assumed: HashMap::new(),
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

/// Where a node stands for placement.
enum Health {
    Ready,
    /// Cannot take servers; the reason.
    NotReady(String),
    /// Its agent stopped renewing the Lease; the reason.
    Lost(String),
}

fn node_health(node: &ComputeNode, lease: Option<&Lease>, now: Timestamp) -> Health {
    let spec = lease.and_then(|l| l.spec.as_ref());
    let renewed = spec.and_then(|s| s.renew_time.as_ref()).map(|t| t.0);
    let seconds = spec.and_then(|s| s.lease_duration_seconds).unwrap_or(40);
    match renewed {
        None => return Health::NotReady("its agent has not reported yet".into()),
        Some(renewed) => {
            let silent = now.duration_since(renewed).as_secs();
            if silent > seconds.into() {
                return Health::Lost(format!("its agent has not reported for {silent} s"));
            }
        }
    }
    let status = node.status.as_ref();
    match status.and_then(|s| s.conditions.iter().find(|c| c.type_ == CONDITION_READY)) {
        Some(c) if c.status == "True" => {}
        Some(c) => return Health::NotReady(c.message.clone()),
        None => return Health::NotReady("its agent has not reported yet".into()),
    }
    if status.is_none_or(|s| s.capacity.cpu.is_none() || s.capacity.memory.is_none()) {
        return Health::NotReady("it has not reported its capacity".into());
    }
    Health::Ready
}

/// The node's CPUs as its agent reported them, in nano-CPUs.
fn cores(node: &ComputeNode) -> i64 {
    let cpu = node.status.as_ref().and_then(|s| s.capacity.cpu.as_ref());
    cpu.and_then(|q| size::node_nano_cpus(q).ok()).unwrap_or(0)
}

/// What the node may promise to servers: its capacity times its allocation ratios (GPUs are
/// never shared). A ratio that is unset or unreadable counts as 1.
fn capacity(node: &ComputeNode) -> Request {
    let capacity = node
        .status
        .as_ref()
        .map(|s| s.capacity.clone())
        .unwrap_or_default();
    let ratio = |r: &Option<String>| {
        r.as_deref()
            .and_then(|r| size::ratio_milli(r).ok())
            .unwrap_or(1000)
    };
    let nano_cpus = cores(node);
    let memory_bytes = capacity
        .memory
        .as_ref()
        .and_then(|q| size::node_memory_bytes(q).ok())
        .unwrap_or(0);
    Request {
        nano_cpus: size::scaled(nano_cpus, ratio(&node.spec.cpu_allocation_ratio)),
        memory_bytes: size::scaled(memory_bytes, ratio(&node.spec.memory_allocation_ratio)),
        gpus: capacity.gpus.unwrap_or(0).into(),
    }
}

/// What a server asks of its node once its profile is applied; why it cannot be placed.
fn request(
    server: &ComputeServer,
    profiles: &HashMap<String, Arc<ComputeProfile>>,
) -> Result<Request, String> {
    let profile = server
        .spec
        .profile
        .as_ref()
        .and_then(|p| profiles.get(p))
        .map(|p| p.as_ref());
    size::request(server, profile).map_err(|refusal| refusal.to_string())
}

/// The labels a node needs for `server`: its own nodeSelector and its profile's, where the
/// profile's win (an admin's rule, such as gpu=true, is not the user's to change).
fn node_selector(
    server: &ComputeServer,
    profiles: &HashMap<String, Arc<ComputeProfile>>,
) -> std::collections::BTreeMap<String, String> {
    let mut selector = server.spec.node_selector.clone();
    if let Some(profile) = server.spec.profile.as_ref().and_then(|p| profiles.get(p)) {
        selector.extend(profile.spec.node_selector.clone());
    }
    selector
}

struct Scheduler {
    client: Client,
    recorder: Recorder,
    caches: Caches,
    metrics: Arc<Metrics>,
    /// Placements written whose label the cache does not show yet: server uid → node and
    /// request. Counted as placed, so placements in quick succession account for each other.
    assumed: HashMap<String, (String, Request)>,
}

/// One write a pass makes.
enum Write {
    /// `fitting`: how many Ready nodes could have taken it.
    Place {
        server: Arc<ComputeServer>,
        node: String,
        fitting: usize,
    },
    Unschedulable {
        server: Arc<ComputeServer>,
        reason: String,
    },
    NodeLost {
        node: Arc<ComputeNode>,
        reason: String,
    },
    ServerLost {
        server: Arc<ComputeServer>,
        node: String,
        reason: String,
    },
    /// What the lifecycle controller writes.
    Lifecycle(lifecycle::Write),
    /// A server being deleted whose ComputeNode is gone: nobody is left to run its finalizer.
    Release {
        server: Arc<ComputeServer>,
        node: String,
    },
}

impl Scheduler {
    async fn pass(&mut self, leader: &tokio::sync::watch::Receiver<bool>) {
        let started = std::time::Instant::now();
        let now = Timestamp::now();
        let profiles: HashMap<String, Arc<ComputeProfile>> = self
            .caches
            .profiles
            .state()
            .into_iter()
            .map(|p| (p.name_any(), p))
            .collect();
        let leases: HashMap<String, Arc<Lease>> = self
            .caches
            .leases
            .state()
            .into_iter()
            .map(|l| (l.name_any(), l))
            .collect();

        let mut writes = Vec::new();
        let mut nodes = Vec::new();
        let mut lost = BTreeMap::new();
        for node in self.caches.nodes.state() {
            let lease = leases.get(&crate::api::lease_name(&node.name_any()));
            let not_ready = match node_health(&node, lease.map(|l| l.as_ref()), now) {
                Health::Ready => None,
                Health::NotReady(reason) => Some(reason),
                Health::Lost(reason) => {
                    let ready = node
                        .status
                        .as_ref()
                        .and_then(|s| s.conditions.iter().find(|c| c.type_ == CONDITION_READY));
                    if ready.is_none_or(|c| c.status != "False" || c.reason != "NodeLost") {
                        writes.push(Write::NodeLost {
                            node: node.clone(),
                            reason: reason.clone(),
                        });
                    }
                    lost.insert(node.name_any(), reason.clone());
                    Some(reason)
                }
            };
            nodes.push(placement::Node {
                name: node.name_any(),
                labels: node.labels().clone(),
                not_ready,
                unschedulable: node.spec.unschedulable,
                capacity: capacity(&node),
                cores: cores(&node),
                allocated: Request::default(),
                servers: 0,
            });
        }
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        let index: HashMap<String, usize> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.name.clone(), i))
            .collect();

        // What is placed where: labelled servers, then placements the cache does not show yet.
        let servers = self.caches.servers.state();
        let mut pending = Vec::new();
        let mut unlabelled = std::collections::HashSet::new();
        for server in &servers {
            match server.labels().get(NODE_LABEL) {
                Some(node) => {
                    let deleting = server.meta().deletion_timestamp.is_some();
                    if let Some(&i) = index.get(node) {
                        nodes[i].allocated += request(server, &profiles).unwrap_or_default();
                        nodes[i].servers += 1;
                    } else if deleting && server.finalizers().iter().any(|f| f == CONTAINER_FINALIZER) {
                        writes.push(Write::Release {
                            server: server.clone(),
                            node: node.clone(),
                        });
                        continue;
                    } else {
                        lost.entry(node.clone()).or_insert_with(|| {
                            "there is no ComputeNode of that name: it was deleted, or its agent has not registered yet"
                                .to_string()
                        });
                    }
                    if let Some(reason) = lost.get(node)
                        && server.meta().deletion_timestamp.is_none()
                        && server.status.as_ref().and_then(|s| s.phase) != Some(Phase::NodeLost)
                    {
                        writes.push(Write::ServerLost {
                            server: server.clone(),
                            node: node.clone(),
                            reason: reason.clone(),
                        });
                    }
                }
                None if server.meta().deletion_timestamp.is_none() => {
                    unlabelled.insert(server.uid().unwrap_or_default());
                    pending.push(server.clone());
                }
                None => {}
            }
        }
        self.assumed.retain(|uid, _| unlabelled.contains(uid));
        for (node, request) in self.assumed.values() {
            if let Some(&i) = index.get(node) {
                nodes[i].allocated += *request;
                nodes[i].servers += 1;
            }
        }
        pending.retain(|s| !self.assumed.contains_key(&s.uid().unwrap_or_default()));
        pending.sort_by(|a, b| {
            let key = |s: &ComputeServer| {
                (
                    s.meta().creation_timestamp.as_ref().map(|t| t.0),
                    s.namespace(),
                    s.name_any(),
                )
            };
            key(a).cmp(&key(b))
        });
        self.metrics.pending.set(pending.len() as i64);

        let mut unschedulable = 0;
        for server in pending {
            let placed = request(&server, &profiles).and_then(|request| {
                let selector = node_selector(&server, &profiles);
                placement::choose(&nodes, &request, &selector).map(|placed| (placed, request))
            });
            match placed {
                Ok(((i, fitting), request)) => {
                    nodes[i].allocated += request;
                    nodes[i].servers += 1;
                    self.assumed
                        .insert(server.uid().unwrap_or_default(), (nodes[i].name.clone(), request));
                    writes.push(Write::Place {
                        server,
                        node: nodes[i].name.clone(),
                        fitting,
                    });
                }
                Err(reason) => {
                    unschedulable += 1;
                    if scheduled_condition(&server).is_none_or(|c| c.status != "False" || c.message != reason)
                    {
                        writes.push(Write::Unschedulable { server, reason });
                    }
                }
            }
        }
        self.metrics.unschedulable.set(unschedulable);
        writes.extend(
            lifecycle::writes(&servers, &profiles, now)
                .into_iter()
                .map(Write::Lifecycle),
        );

        let failed: Vec<String> = futures::stream::iter(writes)
            .map(|write| self.write(write, leader))
            .buffer_unordered(CONCURRENT_WRITES)
            .filter_map(|failed| async move { failed })
            .collect()
            .await;
        for uid in failed {
            self.assumed.remove(&uid);
        }
        self.metrics
            .pass_duration
            .observe(started.elapsed().as_secs_f64());
    }

    /// Makes one write; the uid of a server whose placement failed (it is retried next pass).
    async fn write(&self, write: Write, leader: &tokio::sync::watch::Receiver<bool>) -> Option<String> {
        if !*leader.borrow() {
            return None;
        }
        match write {
            Write::Place {
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
                        Some(uid)
                    }
                }
            }
            Write::Unschedulable { server, reason } => {
                if let Err(error) = self.unschedulable(&server, &reason).await {
                    warn!(%error, server = %server.name_any(), "could not write why the server waits");
                }
                None
            }
            Write::NodeLost { node, reason } => {
                if let Err(error) = self.node_lost(&node, &reason).await {
                    warn!(%error, node = %node.name_any(), "could not mark the node lost");
                }
                None
            }
            Write::Lifecycle(write) => {
                if let Err(error) = self.lifecycle(write).await {
                    warn!(%error, "lifecycle write failed; retrying next pass");
                }
                None
            }
            Write::Release { server, node } => {
                if let Err(error) = self.release(&server, &node).await {
                    warn!(%error, server = %server.name_any(), %node, "could not release the server of a deleted node");
                }
                None
            }
            Write::ServerLost { server, node, reason } => {
                let message = format!(
                    "node {node} is lost ({reason}); the server's state is unknown. It reports again by \
                     itself when the node comes back; it is not moved to another node"
                );
                let status = serde_json::json!({
                    "phase": Phase::NodeLost,
                    "message": message,
                    "conditions": [crate::api::server_condition(&server, CONDITION_READY, false, "NodeLost", &message)],
                });
                if let Err(error) = self.apply_status(&server, status).await {
                    warn!(%error, server = %server.name_any(), "could not mark the server NodeLost");
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
        Ok(())
    }

    /// Carries out one write of the lifecycle controller.
    async fn lifecycle(&self, write: lifecycle::Write) -> Result<()> {
        let apply = PatchParams::apply(lifecycle::FIELD_MANAGER).force();
        match write {
            lifecycle::Write::Status { server, fields } => {
                self.api(&server)
                    .patch_status(&server.name_any(), &apply, &Patch::Apply(fields.apply(&server)))
                    .await
                    .map_err(Error::Kube)?;
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
                self.api(&server)
                    .patch_status(&server.name_any(), &apply, &Patch::Apply(fields.apply(&server)))
                    .await
                    .map_err(Error::Kube)?;
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

    async fn unschedulable(&self, server: &ComputeServer, reason: &str) -> Result<()> {
        let status = serde_json::json!({
            "phase": Phase::Pending,
            "message": reason,
            "conditions": [crate::api::server_condition(server, CONDITION_SCHEDULED, false, "Unschedulable", reason)],
        });
        self.apply_status(server, status).await?;
        info!(server = %server.name_any(), namespace = server.namespace(), %reason, "cannot place");
        self.event(server, EventType::Warning, "FailedScheduling", reason.to_string())
            .await;
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
    async fn apply_status(&self, server: &ComputeServer, status: serde_json::Value) -> Result<()> {
        let patch = serde_json::json!({
            "apiVersion": ComputeServer::api_version(&()),
            "kind": ComputeServer::kind(&()),
            "metadata": { "resourceVersion": server.resource_version() },
            "status": status,
        });
        self.api(server)
            .patch_status(
                &server.name_any(),
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(patch),
            )
            .await
            .map_err(Error::Kube)?;
        Ok(())
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
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: "Scheduling".into(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, &server.object_ref(&())).await {
            warn!(%error, server = %server.name_any(), "could not publish an event");
        }
    }
}

fn scheduled_condition(server: &ComputeServer) -> Option<&Condition> {
    server
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == CONDITION_SCHEDULED))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_profiles_node_selector_adds_to_the_servers_and_wins() {
        let profile: ComputeProfile = serde_yaml::from_str(
            "{apiVersion: computeserver.io/v1alpha1, kind: ComputeProfile, metadata: {name: gpu}, \
             spec: {image: busybox, nodeSelector: {gpu: 'true'}}}",
        )
        .unwrap();
        let profiles = HashMap::from([("gpu".to_string(), Arc::new(profile))]);
        let server: ComputeServer = serde_yaml::from_str(
            "{apiVersion: computeserver.io/v1alpha1, kind: ComputeServer, metadata: {name: s}, \
             spec: {owner: alice, profile: gpu, nodeSelector: {gpu: 'false', zone: a}}}",
        )
        .unwrap();
        let selector = node_selector(&server, &profiles);
        let pairs: Vec<(&str, &str)> = selector.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(pairs, [("gpu", "true"), ("zone", "a")]);
        let mut plain = server.clone();
        plain.spec.profile = None;
        assert_eq!(node_selector(&plain, &profiles), server.spec.node_selector);
    }

    #[test]
    fn a_node_promises_its_capacity_times_its_ratios_but_never_more_gpus() {
        let node: ComputeNode = serde_yaml::from_str(
            "{apiVersion: computeserver.io/v1alpha1, kind: ComputeNode, metadata: {name: n}, \
             spec: {cpuAllocationRatio: '4', memoryAllocationRatio: '1.5'}, \
             status: {capacity: {cpu: '2', memory: 4Gi, gpus: 1}}}",
        )
        .unwrap();
        let promised = capacity(&node);
        assert_eq!(promised.nano_cpus, 8_000_000_000);
        assert_eq!(promised.memory_bytes, 6 << 30);
        assert_eq!(promised.gpus, 1);
        let mut plain = node.clone();
        plain.spec.cpu_allocation_ratio = None;
        plain.spec.memory_allocation_ratio = Some("lots".into());
        let promised = capacity(&plain);
        assert_eq!(
            (promised.nano_cpus, promised.memory_bytes),
            (2_000_000_000, 4 << 30),
            "unset or unreadable: 1"
        );
    }
}
