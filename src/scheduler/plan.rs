//! The scheduler's decisions, without doing: a snapshot of the watch caches in, the writes of
//! one pass out. No client and no I/O here: [`super::Scheduler`] carries the writes out, and
//! the placement itself is [`placement::choose`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;
use kube::{Resource, ResourceExt};

use super::budget::Budgets;
use super::queue::{self, Lines};
use super::{lifecycle, moving, placement, usage};
use crate::api::lifecycle::Rules;
use crate::api::size::{self, Request};
use crate::api::{
    CONDITION_READY, CONDITION_SCHEDULED, CONTAINER_FINALIZER, ComputeNode, ComputeQuota, ComputeQuotaStatus,
    ComputeServer, ComputeSnapshot, ComputeUsage, NODE_LABEL, Phase, Profiles,
};

/// What a pass looks at: the watch caches at one moment.
pub struct Snapshot {
    pub servers: Vec<Arc<ComputeServer>>,
    pub nodes: Vec<Arc<ComputeNode>>,
    /// The nodes' heartbeat Leases, by name.
    pub leases: HashMap<String, Arc<Lease>>,
    pub profiles: Profiles,
    /// Every ComputeSnapshot: what a lost node's servers move from.
    pub snapshots: Vec<Arc<ComputeSnapshot>>,
    /// The budgets, and the ledger of reserved hours they count from.
    pub quotas: Vec<Arc<ComputeQuota>>,
    pub usage: Vec<Arc<ComputeUsage>>,
    /// Whether this pass counts the running servers' hours into the ledger.
    pub count_usage: bool,
    /// The namespace this scheduler places alone, if any (its ledger's names say so).
    pub scope: Option<String>,
    pub now: Timestamp,
}

/// Placements written whose label the cache does not show yet, by server uid. Counted as placed,
/// so placements in quick succession account for each other, on the nodes and in the budgets.
pub type Assumed = HashMap<String, Placed>;

/// A placement the cache may not show yet.
#[derive(Clone, Debug)]
pub struct Placed {
    pub node: String,
    pub request: Request,
    pub owner: String,
    pub groups: Vec<String>,
}

/// What one pass decided.
pub struct Plan {
    pub writes: Vec<Write>,
    /// Servers waiting for a node when the pass began.
    pub pending: usize,
    /// Of those, the ones no node can take now.
    pub unschedulable: usize,
}

/// One write a pass makes.
pub enum Write {
    /// `fitting`: how many Ready nodes could have taken it.
    Place {
        server: Arc<ComputeServer>,
        node: String,
        fitting: usize,
    },
    /// Waits for a node: `reason` (why no node can take it, or which budget it would exceed) goes
    /// in the Scheduled condition; `message`, its place in line and the reason, in status.message.
    Unschedulable {
        server: Arc<ComputeServer>,
        reason: String,
        position: Option<u32>,
        message: String,
    },
    /// Counts the hours of one day into its ComputeUsage.
    Usage(usage::Day),
    /// A quota's status changed: what its subjects hold and used.
    QuotaStatus {
        name: String,
        status: ComputeQuotaStatus,
    },
    NodeLost {
        node: Arc<ComputeNode>,
        reason: String,
    },
    ServerLost {
        server: Arc<ComputeServer>,
        node: String,
        message: String,
    },
    /// Off its lost node `node`: unlabelled (and spec.restoreFrom set), to be placed anew.
    Move {
        server: Arc<ComputeServer>,
        node: String,
        decided: moving::Move,
    },
    /// What the lifecycle controller writes.
    Lifecycle(lifecycle::Write),
    /// A server being deleted whose ComputeNode is gone: nobody is left to run its finalizer.
    Release {
        server: Arc<ComputeServer>,
        node: String,
    },
}

/// One pass: which nodes are lost, what is placed where (with the placements in `assumed`,
/// which this updates: placements the cache now shows leave it, new ones enter), the pending
/// servers placed oldest first, the servers of lost or deleted nodes, and the lifecycle's writes.
pub fn plan(snapshot: &Snapshot, assumed: &mut Assumed) -> Plan {
    let mut writes = Vec::new();
    let mut nodes = Vec::new();
    let mut lost = BTreeMap::new();
    for node in snapshot.nodes.iter().cloned() {
        let lease = snapshot.leases.get(&crate::api::lease_name(&node.name_any()));
        let not_ready = match node_health(&node, lease.map(|l| l.as_ref()), snapshot.now) {
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
    // Each also counts in its owner's budgets; running ones count hours.
    let servers = &snapshot.servers;
    let mut budgets = Budgets::new(&snapshot.quotas, &snapshot.usage, snapshot.now);
    let mut running = Vec::new();
    let mut stopping = Vec::new();
    let mut pending = Vec::new();
    let mut unlabelled = HashSet::new();
    for server in servers {
        // An archived server is on no node: it reserves nothing, and once it is to run again it
        // is placed anew (its label, if any, names the node it left).
        if server.archived_to().is_some() {
            if server.spec.running && server.meta().deletion_timestamp.is_none() {
                unlabelled.insert(server.uid().unwrap_or_default());
                pending.push(server.clone());
            }
            continue;
        }
        match server.labels().get(NODE_LABEL) {
            Some(node) => {
                let deleting = server.meta().deletion_timestamp.is_some();
                let asked = request(server, &snapshot.profiles).unwrap_or_default();
                budgets.add(&server.spec.owner, &server.spec.owner_groups, &asked);
                if server.spec.running && !deleting {
                    running.push(usage::Running {
                        uid: server.uid().unwrap_or_default(),
                        owner: server.spec.owner.clone(),
                        groups: server.spec.owner_groups.clone(),
                        request: asked,
                    });
                }
                if let Some(&i) = index.get(node) {
                    nodes[i].allocated += asked;
                    nodes[i].servers += 1;
                    if let Some(stops) = server.status.as_ref().and_then(|s| s.stops_at.as_ref())
                        && server.spec.running
                    {
                        stopping.push((i, asked, stops.0));
                    }
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
                {
                    let rules = Rules::of(snapshot.profiles.of(server));
                    let snapshots = snapshot.snapshots.iter().map(|s| s.as_ref());
                    if server.status.as_ref().and_then(|s| s.phase) != Some(Phase::NodeLost) {
                        let message =
                            moving::lost_message(server, node, reason, snapshots, &rules, snapshot.now);
                        writes.push(Write::ServerLost {
                            server: server.clone(),
                            node: node.clone(),
                            message,
                        });
                    } else if let Some(decided) =
                        moving::decide(server, node, snapshots, &rules, snapshot.now)
                    {
                        writes.push(Write::Move {
                            server: server.clone(),
                            node: node.clone(),
                            decided,
                        });
                    }
                }
            }
            None if server.meta().deletion_timestamp.is_none() => {
                unlabelled.insert(server.uid().unwrap_or_default());
                pending.push(server.clone());
            }
            None => {}
        }
    }
    assumed.retain(|uid, _| unlabelled.contains(uid));
    for placed in assumed.values() {
        budgets.add(&placed.owner, &placed.groups, &placed.request);
        if let Some(&i) = index.get(&placed.node) {
            nodes[i].allocated += placed.request;
            nodes[i].servers += 1;
        }
    }
    pending.retain(|s| !assumed.contains_key(&s.uid().unwrap_or_default()));
    let lately = super::budget::used_since(
        &snapshot.usage,
        crate::api::quota::day_start(snapshot.now) - k8s_openapi::jiff::SignedDuration::from_hours(24 * 6),
    );
    let pending = queue::fair_order(
        pending,
        |owner| budgets.servers_of(owner),
        |owner| lately.get(owner).copied().unwrap_or(0.0),
    );
    let waiting = pending.len();

    let mut unschedulable = 0;
    let mut lines = Lines::default();
    for server in pending {
        let (owner, groups) = (&server.spec.owner, &server.spec.owner_groups);
        let decided = request(&server, &snapshot.profiles)
            .map_err(|refused| (None, refused))
            .and_then(|request| {
                budgets.check(owner, groups, &request).map_err(|wait| {
                    let place = lines.next(&wait.line);
                    (
                        Some((
                            place,
                            format!("{} in line for {}", queue::ordinal(place), wait.whose),
                        )),
                        wait.reason,
                    )
                })?;
                let selector = node_selector(&server, &snapshot.profiles);
                placement::choose(&nodes, &request, &selector)
                    .map(|placed| (placed, request))
                    .map_err(|why| {
                        // The line, what it waits for, and what frees.
                        let (line, what, frees) = match request.gpus {
                            0 => ("room", "room on a node", "room"),
                            _ => ("gpu", "a GPU", "a GPU"),
                        };
                        let place = lines.next(line);
                        let mut waits = format!("{} in line for {what}", queue::ordinal(place));
                        if let Some(by) = frees_by(&nodes, &stopping, &request, &selector) {
                            waits.push_str(&format!(
                                " ({frees} frees by {} UTC at the latest)",
                                by.strftime("%H:%M")
                            ));
                        }
                        (Some((place, waits)), why.0)
                    })
            });
        match decided {
            Ok(((i, fitting), request)) => {
                nodes[i].allocated += request;
                nodes[i].servers += 1;
                budgets.add(owner, groups, &request);
                assumed.insert(
                    server.uid().unwrap_or_default(),
                    Placed {
                        node: nodes[i].name.clone(),
                        request,
                        owner: owner.clone(),
                        groups: groups.clone(),
                    },
                );
                writes.push(Write::Place {
                    server,
                    node: nodes[i].name.clone(),
                    fitting,
                });
            }
            Err((line, reason)) => {
                unschedulable += 1;
                let (position, message) = match line {
                    Some((place, line)) => (Some(place), format!("{line}: {reason}")),
                    None => (None, reason.clone()),
                };
                let status = server.status.as_ref();
                let written = scheduled_condition(&server)
                    .is_some_and(|c| c.status == "False" && c.message == reason)
                    && status.and_then(|s| s.message.as_deref()) == Some(message.as_str())
                    && status.and_then(|s| s.queue_position) == position;
                if !written {
                    writes.push(Write::Unschedulable {
                        server,
                        reason,
                        position,
                        message,
                    });
                }
            }
        }
    }
    for (name, status) in budgets.statuses() {
        let current = snapshot.quotas.iter().find(|q| q.name_any() == name);
        if current.is_some_and(|q| q.status.as_ref() != Some(&status)) {
            writes.push(Write::QuotaStatus { name, status });
        }
    }
    if snapshot.count_usage {
        writes.extend(
            usage::count(&snapshot.usage, &running, snapshot.now, snapshot.scope.as_deref())
                .into_iter()
                .map(Write::Usage),
        );
    }
    let counted_until = snapshot
        .usage
        .iter()
        .map(|d| d.spec.counted_until.0)
        .max()
        .unwrap_or(snapshot.now);
    let run_out = budgets.run_out(&running, counted_until);
    writes.extend(
        lifecycle::writes(servers, &snapshot.profiles, &run_out, snapshot.now)
            .into_iter()
            .map(Write::Lifecycle),
    );

    Plan {
        writes,
        pending: waiting,
        unschedulable,
    }
}

/// Where a node stands for placement.
pub enum Health {
    Ready,
    /// Cannot take servers; the reason.
    NotReady(String),
    /// Its agent stopped renewing the Lease; the reason.
    Lost(String),
}

pub fn node_health(node: &ComputeNode, lease: Option<&Lease>, now: Timestamp) -> Health {
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
pub fn cores(node: &ComputeNode) -> i64 {
    let cpu = node.status.as_ref().and_then(|s| s.capacity.cpu.as_ref());
    cpu.and_then(|q| size::node_nano_cpus(q).ok()).unwrap_or(0)
}

/// What the node may promise to servers: its capacity times its allocation ratios (GPUs are
/// never shared). A ratio that is unset or unreadable counts as 1.
pub fn capacity(node: &ComputeNode) -> Request {
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
fn request(server: &ComputeServer, profiles: &Profiles) -> Result<Request, String> {
    size::request(server, profiles.of(server)).map_err(|refusal| refusal.to_string())
}

/// When room for `request` frees at the latest: the earliest end among the running servers that
/// stop by themselves (`stopping`: node index, what it holds, when it stops) whose stop alone
/// makes room for it on a node that may take it.
fn frees_by(
    nodes: &[placement::Node],
    stopping: &[(usize, Request, Timestamp)],
    request: &Request,
    selector: &BTreeMap<String, String>,
) -> Option<Timestamp> {
    stopping
        .iter()
        .filter(|(i, held, _)| {
            let mut node = nodes[*i].clone();
            node.allocated.nano_cpus -= held.nano_cpus;
            node.allocated.memory_bytes -= held.memory_bytes;
            node.allocated.gpus -= held.gpus;
            placement::choose(&[node], request, selector).is_ok()
        })
        .map(|(_, _, stops)| *stops)
        .min()
}

/// The labels a node needs for `server`: its own nodeSelector and its profile's, where the
/// profile's win (an admin's rule, such as gpu=true, is not the user's to change).
fn node_selector(server: &ComputeServer, profiles: &Profiles) -> BTreeMap<String, String> {
    let mut selector = server.spec.node_selector.clone();
    if let Some(profile) = profiles.of(server) {
        selector.extend(profile.spec.node_selector.clone());
    }
    selector
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
    use crate::api::ComputeProfile;
    use crate::scheduler::tests::{lease, node, server};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn snapshot(servers: Vec<ComputeServer>, nodes: Vec<ComputeNode>, leases: Vec<Lease>) -> Snapshot {
        Snapshot {
            servers: servers.into_iter().map(Arc::new).collect(),
            nodes: nodes.into_iter().map(Arc::new).collect(),
            leases: leases.into_iter().map(|l| (l.name_any(), Arc::new(l))).collect(),
            profiles: Profiles::default(),
            snapshots: vec![],
            quotas: vec![],
            usage: vec![],
            count_usage: false,
            scope: None,
            now: Timestamp::now(),
        }
    }

    /// The writes as `kind server node`, for comparing.
    fn summary(plan: &Plan) -> Vec<String> {
        plan.writes
            .iter()
            .map(|write| match write {
                Write::Place { server, node, .. } => format!("place {} {node}", server.name_any()),
                Write::Unschedulable { server, .. } => format!("unschedulable {}", server.name_any()),
                Write::NodeLost { node, .. } => format!("node-lost {}", node.name_any()),
                Write::ServerLost { server, node, .. } => format!("server-lost {} {node}", server.name_any()),
                Write::Move { server, decided, .. } => {
                    format!("move {} {}", server.name_any(), decided.snapshot)
                }
                Write::Lifecycle(_) => "lifecycle".into(),
                Write::Release { server, node } => format!("release {} {node}", server.name_any()),
                Write::Usage(day) => format!("usage {}", day.name),
                Write::QuotaStatus { name, .. } => format!("quota {name}"),
            })
            .collect()
    }

    #[test]
    fn placements_in_one_pass_account_for_each_other_oldest_first() {
        let mut servers: Vec<ComputeServer> = ["c", "a", "b"].iter().map(|n| server(n, "1", "1Gi")).collect();
        servers[0].metadata.creation_timestamp = Some(Time("2026-12-02T00:00:00Z".parse().unwrap()));
        let now = Timestamp::now();
        let snapshot = snapshot(servers, vec![node("n1", "2", "4Gi")], vec![lease("n1", now)]);
        let mut assumed = Assumed::new();
        let plan = plan(&snapshot, &mut assumed);
        assert_eq!(summary(&plan), ["place a n1", "place b n1", "unschedulable c"]);
        assert_eq!((plan.pending, plan.unschedulable), (3, 1));
        assert_eq!(assumed.len(), 2);
        // The next pass, on the same cache: what it placed counts, nothing is placed twice.
        let again = super::plan(&snapshot, &mut assumed);
        assert_eq!(summary(&again), ["unschedulable c"]);
    }

    #[test]
    fn a_node_whose_agent_went_silent_is_lost_with_its_servers() {
        let mut placed = server("lab", "1", "1Gi");
        placed.labels_mut().insert(NODE_LABEL.into(), "n1".into());
        let long_ago = Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_secs(600);
        let snapshot = snapshot(
            vec![placed],
            vec![node("n1", "2", "4Gi")],
            vec![lease("n1", long_ago)],
        );
        let plan = plan(&snapshot, &mut Assumed::new());
        assert_eq!(summary(&plan), ["node-lost n1", "server-lost lab n1"]);
        let Write::NodeLost { reason, .. } = &plan.writes[0] else {
            unreachable!()
        };
        assert!(reason.contains("has not reported for"), "{reason}");
    }

    #[test]
    fn a_server_being_deleted_on_a_deleted_node_is_released() {
        let mut gone = server("lab", "1", "1Gi");
        gone.labels_mut().insert(NODE_LABEL.into(), "n9".into());
        gone.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
        gone.metadata.finalizers = Some(vec![CONTAINER_FINALIZER.into()]);
        let snapshot = snapshot(vec![gone], vec![], vec![]);
        assert_eq!(summary(&plan(&snapshot, &mut Assumed::new())), ["release lab n9"]);
    }

    #[test]
    fn an_archived_server_reserves_nothing_and_is_placed_anew_when_started() {
        let now = Timestamp::now();
        let mut big = server("big", "1", "1Gi");
        big.labels_mut().insert(NODE_LABEL.into(), "n1".into());
        big.spec.running = false;
        big.status = Some(crate::api::ComputeServerStatus {
            phase: Some(Phase::Archived),
            archived_to: Some("big-archive-1".into()),
            ..Default::default()
        });
        let fresh = server("fresh", "1", "1Gi");
        let nodes = vec![node("n1", "1", "1Gi")];
        let both = snapshot(vec![big.clone(), fresh], nodes.clone(), vec![lease("n1", now)]);
        let placed = plan(&both, &mut Assumed::new());
        assert_eq!(
            summary(&placed),
            ["place fresh n1"],
            "the archived one holds no room"
        );
        big.spec.running = true;
        let started = snapshot(vec![big], nodes, vec![lease("n1", now)]);
        let placed = plan(&started, &mut Assumed::new());
        assert_eq!(summary(&placed), ["place big n1"], "started: placed anew");
    }

    #[test]
    fn a_node_not_ready_takes_nothing_and_the_reason_says_why() {
        let snapshot = snapshot(
            vec![server("lab", "1", "1Gi")],
            vec![node("n1", "2", "4Gi")],
            vec![],
        );
        let plan = plan(&snapshot, &mut Assumed::new());
        let [Write::Unschedulable { reason, .. }] = &plan.writes[..] else {
            panic!("{:?}", summary(&plan))
        };
        assert_eq!(reason, "0/1 nodes can run this: 1 is not Ready");
    }

    #[test]
    fn a_profiles_node_selector_adds_to_the_servers_and_wins() {
        let profile: ComputeProfile = serde_yaml::from_str(
            "{apiVersion: computeserver.io/v1alpha1, kind: ComputeProfile, metadata: {name: gpu}, \
             spec: {image: busybox, nodeSelector: {gpu: 'true'}}}",
        )
        .unwrap();
        let profiles: Profiles = [profile].into_iter().collect();
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

    fn quota(yaml: &str) -> Arc<ComputeQuota> {
        Arc::new(serde_yaml::from_str(yaml).unwrap())
    }

    fn owned(name: &str, owner: &str, groups: &[&str], gpus: i32, minute: u32) -> ComputeServer {
        let mut s = server(name, "1", "1Gi");
        s.spec.owner = owner.into();
        s.spec.owner_groups = groups.iter().map(|g| g.to_string()).collect();
        s.spec.resources.gpus = Some(gpus);
        s.metadata.creation_timestamp = Some(Time(format!("2026-12-01T00:{minute:02}:00Z").parse().unwrap()));
        s
    }

    fn gpu_node(name: &str, gpus: i32) -> ComputeNode {
        let mut n = node(name, "64", "256Gi");
        n.status.as_mut().unwrap().capacity.gpus = Some(gpus);
        n
    }

    /// The waiting servers' messages, by name.
    fn waiting(plan: &Plan) -> Vec<(String, Option<u32>, String)> {
        plan.writes
            .iter()
            .filter_map(|w| match w {
                Write::Unschedulable {
                    server,
                    position,
                    message,
                    ..
                } => Some((server.name_any(), *position, message.clone())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_group_budget_holds_over_everyone_in_it_and_the_waiting_say_whose() {
        let now = Timestamp::now();
        let mut s = snapshot(
            vec![
                owned("a1", "alice", &["students"], 1, 0),
                owned("b1", "bob", &["students"], 1, 1),
                owned("c1", "carol", &["staff"], 1, 2),
                owned("a2", "alice", &["students"], 1, 3),
            ],
            vec![gpu_node("n1", 8)],
            vec![lease("n1", now)],
        );
        s.quotas = vec![quota(
            "{metadata: {name: students}, spec: {subjects: [{group: students}], total: {gpus: 1}}}",
        )];
        let plan = plan(&s, &mut Assumed::new());
        let placed: Vec<String> = summary(&plan)
            .into_iter()
            .filter(|w| w.starts_with("place"))
            .collect();
        assert_eq!(placed, ["place a1 n1", "place c1 n1"], "carol is not a student");
        assert_eq!(
            waiting(&plan),
            [
                (
                    "b1".to_string(),
                    Some(1),
                    "1st in line for the budget of the group students: the group students uses 1 of 1 GPUs \
                     (ComputeQuota students); this server asks for 1 more"
                        .to_string()
                ),
                (
                    "a2".to_string(),
                    Some(2),
                    "2nd in line for the budget of the group students: the group students uses 1 of 1 GPUs \
                     (ComputeQuota students); this server asks for 1 more"
                        .to_string()
                ),
            ],
            "bob's first goes before alice's second"
        );
    }

    #[test]
    fn a_placed_server_counts_in_the_budget_of_the_next_pass() {
        let now = Timestamp::now();
        let mut a0 = owned("a0", "alice", &["students"], 1, 0);
        a0.labels_mut().insert(NODE_LABEL.into(), "n1".into());
        let mut s = snapshot(
            vec![a0, owned("a1", "alice", &["students"], 1, 1)],
            vec![gpu_node("n1", 8)],
            vec![lease("n1", now)],
        );
        s.quotas = vec![quota(
            "{metadata: {name: students}, spec: {subjects: [{group: students}], total: {gpus: 1}}}",
        )];
        let plan = plan(&s, &mut Assumed::new());
        assert_eq!(summary(&plan), ["unschedulable a1", "quota students"]);
    }

    #[test]
    fn a_person_in_two_groups_gets_the_more_generous_per_person_budget() {
        let now = Timestamp::now();
        let mut s = snapshot(
            (0..4)
                .map(|i| owned(&format!("a{i}"), "alice", &["students", "staff"], 1, i))
                .collect(),
            vec![gpu_node("n1", 8)],
            vec![lease("n1", now)],
        );
        s.quotas = vec![
            quota("{metadata: {name: students}, spec: {subjects: [{group: students}], perUser: {gpus: 1}}}"),
            quota("{metadata: {name: staff}, spec: {subjects: [{group: staff}], perUser: {gpus: 2}}}"),
        ];
        let plan = plan(&s, &mut Assumed::new());
        let placed = summary(&plan)
            .into_iter()
            .filter(|w| w.starts_with("place"))
            .count();
        assert_eq!(placed, 2);
        let (_, position, message) = &waiting(&plan)[0];
        assert_eq!(*position, Some(1));
        assert!(
            message
                .starts_with("1st in line for alice's budget: alice uses 2 of 2 GPUs (ComputeQuota staff)"),
            "{message}"
        );
    }

    #[test]
    fn gpu_hours_used_up_wait_until_renewed_and_say_when() {
        let now: Timestamp = "2026-12-15T10:00:00Z".parse().unwrap();
        let mut s = snapshot(
            vec![
                owned("a1", "alice", &["students"], 1, 0),
                owned("a2", "alice", &["students"], 0, 1),
            ],
            vec![gpu_node("n1", 8)],
            vec![lease("n1", now)],
        );
        s.now = now;
        s.quotas = vec![quota(
            "{metadata: {name: students}, spec: {subjects: [{group: students}], perUser: {gpuHours: 40}}}",
        )];
        s.usage = vec![Arc::new(
            serde_yaml::from_str(
                "{metadata: {name: '2026-12-03'}, spec: {countedUntil: '2026-12-04T00:00:00Z', \
                 owners: [{owner: alice, groups: [students], cpuHours: 40, memoryGibHours: 40, gpuHours: 40}]}}",
            )
            .unwrap(),
        )];
        let plan = plan(&s, &mut Assumed::new());
        assert!(
            summary(&plan).contains(&"place a2 n1".to_string()),
            "no GPU, no GPU-hours"
        );
        let (name, _, message) = &waiting(&plan)[0];
        assert_eq!(name, "a1");
        assert!(
            message.ends_with(
                "alice has used 40 of 40 GPU-hours this month (ComputeQuota students), renewed on 1 January 2027"
            ),
            "{message}"
        );
    }

    #[test]
    fn running_servers_are_warned_when_their_hours_run_out_and_stopped_then() {
        let now: Timestamp = "2026-12-15T10:00:00Z".parse().unwrap();
        let mut running = owned("a1", "alice", &["students"], 1, 0);
        running.labels_mut().insert(NODE_LABEL.into(), "n1".into());
        let ledger = |gpu_hours: f64| -> Arc<ComputeUsage> {
            Arc::new(
                serde_yaml::from_str(&format!(
                    "{{metadata: {{name: '2026-12-15'}}, spec: {{countedUntil: '2026-12-15T09:59:00Z',                      owners: [{{owner: alice, groups: [students], cpuHours: 1, memoryGibHours: 1, gpuHours: {gpu_hours}}}]}}}}"
                ))
                .unwrap(),
            )
        };
        let mut s = snapshot(vec![running], vec![gpu_node("n1", 8)], vec![lease("n1", now)]);
        s.now = now;
        s.quotas = vec![quota(
            "{metadata: {name: students}, spec: {subjects: [{group: students}], perUser: {gpuHours: 40}}}",
        )];
        s.usage = vec![ledger(39.5)];
        let plan = super::plan(&s, &mut Assumed::new());
        let fields = plan
            .writes
            .iter()
            .find_map(|w| match w {
                Write::Lifecycle(lifecycle::Write::Status { fields, .. }) => Some(fields.clone()),
                _ => None,
            })
            .expect("a forecast");
        assert_eq!(
            fields.stops_at.unwrap().0,
            "2026-12-15T10:29:00Z".parse::<Timestamp>().unwrap()
        );
        assert_eq!(
            fields.stop_reason.as_deref(),
            Some(
                "alice's 40 GPU-hours for this month run out (ComputeQuota students); renewed on 1 January 2027"
            )
        );
        s.usage = vec![ledger(40.0)];
        let plan = super::plan(&s, &mut Assumed::new());
        assert!(
            plan.writes.iter().any(
                |w| matches!(w, Write::Lifecycle(lifecycle::Write::Stop { reason, .. })
                if reason.starts_with("alice's 40 GPU-hours"))
            ),
            "stopped once they are spent"
        );
        s.quotas = vec![quota(
            "{metadata: {name: students}, spec: {subjects: [{group: students}], perUser: {gpuHours: 40}, whenSpent: KeepRunning}}",
        )];
        let plan = super::plan(&s, &mut Assumed::new());
        assert!(
            !plan.writes.iter().any(|w| matches!(w, Write::Lifecycle(_))),
            "kept running"
        );
    }

    #[test]
    fn a_waiting_gpu_server_says_its_place_and_when_a_gpu_frees() {
        let now: Timestamp = "2026-12-04T10:00:00Z".parse().unwrap();
        let mut busy = owned("busy", "carol", &[], 1, 0);
        busy.labels_mut().insert(NODE_LABEL.into(), "n1".into());
        busy.status = Some(crate::api::ComputeServerStatus {
            stops_at: Some(Time("2026-12-04T14:30:00Z".parse().unwrap())),
            ..Default::default()
        });
        let mut s = snapshot(
            vec![
                busy,
                owned("a1", "alice", &[], 1, 1),
                owned("b1", "bob", &[], 1, 2),
            ],
            vec![gpu_node("n1", 1)],
            vec![lease("n1", now)],
        );
        s.now = now;
        let plan = plan(&s, &mut Assumed::new());
        let lines: Vec<(String, Option<u32>)> = waiting(&plan).into_iter().map(|(n, p, _)| (n, p)).collect();
        assert_eq!(lines, [("a1".to_string(), Some(1)), ("b1".to_string(), Some(2))]);
        let (_, _, message) = &waiting(&plan)[1];
        assert!(
            message.starts_with("2nd in line for a GPU (a GPU frees by 14:30 UTC at the latest): 0/1 nodes"),
            "{message}"
        );
    }

    #[test]
    fn hours_are_counted_only_when_asked_and_quotas_get_their_status() {
        let now = Timestamp::now();
        let mut placed = owned("a1", "alice", &["students"], 1, 0);
        placed.labels_mut().insert(NODE_LABEL.into(), "n1".into());
        let mut s = snapshot(vec![placed], vec![gpu_node("n1", 8)], vec![lease("n1", now)]);
        s.quotas = vec![quota(
            "{metadata: {name: students}, spec: {subjects: [{group: students}], total: {gpus: 8}}}",
        )];
        assert_eq!(summary(&plan(&s, &mut Assumed::new())), ["quota students"]);
        s.count_usage = true;
        let plan = plan(&s, &mut Assumed::new());
        assert_eq!(
            summary(&plan),
            [
                "quota students",
                format!("usage {}", crate::api::quota::day_name(now, None)).as_str()
            ]
        );
        let Write::QuotaStatus { status, .. } = &plan.writes[0] else {
            unreachable!()
        };
        assert_eq!(status.summary.as_ref().unwrap().gpus, "1/8");
        assert_eq!(status.users[0].user, "alice");
        assert_eq!(status.users[0].usage.gpus, 1);
    }
}

#[cfg(test)]
mod properties {
    //! Budgets and the fair queue under any servers, in any order.

    use std::collections::HashMap;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use proptest::prelude::*;

    use super::*;
    use crate::scheduler::tests::{lease, node, server};

    fn a_server() -> impl Strategy<Value = (usize, i32, u32)> {
        (0usize..4, 0i32..=2, 0u32..60)
    }

    const OWNERS: [&str; 4] = ["alice", "bob", "carol", "dave"];

    /// alice and bob are students; carol and dave are not.
    fn build(specs: &[(usize, i32, u32)]) -> Vec<Arc<ComputeServer>> {
        specs
            .iter()
            .enumerate()
            .map(|(i, (owner, gpus, minute))| {
                let mut s = server(&format!("s{i:02}"), "1", "1Gi");
                s.metadata.uid = Some(format!("uid-{i}"));
                s.spec.owner = OWNERS[*owner].into();
                if *owner < 2 {
                    s.spec.owner_groups = vec!["students".into()];
                }
                s.spec.resources.gpus = Some(*gpus);
                s.metadata.creation_timestamp =
                    Some(Time(format!("2026-12-01T00:{minute:02}:00Z").parse().unwrap()));
                Arc::new(s)
            })
            .collect()
    }

    fn snapshot(servers: Vec<Arc<ComputeServer>>) -> Snapshot {
        let now = Timestamp::now();
        let mut n = node("n1", "64", "256Gi");
        n.status.as_mut().unwrap().capacity.gpus = Some(6);
        let quotas: Vec<ComputeQuota> = vec![
            serde_yaml::from_str("{metadata: {name: students}, spec: {subjects: [{group: students}], total: {gpus: 3, servers: 6}, perUser: {gpus: 2}}}").unwrap(),
            serde_yaml::from_str("{metadata: {name: dave}, spec: {subjects: [{user: dave}], perUser: {servers: 1}}}").unwrap(),
        ];
        Snapshot {
            servers,
            nodes: vec![Arc::new(n)],
            leases: [lease("n1", now)]
                .into_iter()
                .map(|l| (l.name_any(), Arc::new(l)))
                .collect(),
            profiles: Profiles::default(),
            snapshots: vec![],
            quotas: quotas.into_iter().map(Arc::new).collect(),
            usage: vec![],
            count_usage: false,
            scope: None,
            now,
        }
    }

    fn placed(plan: &Plan) -> Vec<String> {
        plan.writes
            .iter()
            .filter_map(|w| match w {
                Write::Place { server, .. } => Some(server.name_any()),
                _ => None,
            })
            .collect()
    }

    proptest! {
        /// Whatever is asked, in whatever order and over however many passes: no budget is
        /// exceeded, and the order the cache lists servers in changes nothing.
        #[test]
        fn budgets_hold_and_the_order_is_fair_whatever_the_list_order(
            specs in proptest::collection::vec(a_server(), 1..30),
            seed in 0usize..1000,
        ) {
            let servers = build(&specs);
            let mut shuffled = servers.clone();
            shuffled.rotate_left(seed % servers.len());
            shuffled.reverse();
            let mut assumed = Assumed::new();
            let first = placed(&plan(&snapshot(servers.clone()), &mut assumed));
            let next = placed(&plan(&snapshot(servers.clone()), &mut assumed));
            prop_assert!(next.is_empty(), "a second pass on the same cache places nothing more: {:?}", next);
            let again = placed(&plan(&snapshot(shuffled), &mut Assumed::new()));
            prop_assert_eq!(&first, &again);

            let chosen: Vec<&Arc<ComputeServer>> =
                servers.iter().filter(|s| first.contains(&s.name_any())).collect();
            let students: Vec<_> = chosen.iter().filter(|s| !s.spec.owner_groups.is_empty()).collect();
            let student_gpus: i32 = students.iter().map(|s| s.spec.resources.gpus.unwrap()).sum();
            prop_assert!(student_gpus <= 3, "the students' total of 3 GPUs");
            prop_assert!(students.len() <= 6);
            let mut per_student: HashMap<&str, i32> = HashMap::new();
            for s in &students {
                *per_student.entry(&s.spec.owner).or_default() += s.spec.resources.gpus.unwrap();
            }
            for (owner, gpus) in per_student {
                prop_assert!(gpus <= 2, "{} holds {} GPUs", owner, gpus);
            }
            prop_assert!(chosen.iter().filter(|s| s.spec.owner == "dave").count() <= 1);
            let gpus: i32 = chosen.iter().map(|s| s.spec.resources.gpus.unwrap()).sum();
            prop_assert!(gpus <= 6, "the node's 6 GPUs");
        }
    }
}
