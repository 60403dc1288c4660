//! The scheduler's decisions, without doing: a snapshot of the watch caches in, the writes of
//! one pass out. No client and no I/O here: [`super::Scheduler`] carries the writes out, and
//! the placement itself is [`placement::choose`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;
use kube::{Resource, ResourceExt};

use super::{lifecycle, moving, placement};
use crate::api::lifecycle::Rules;
use crate::api::size::{self, Request};
use crate::api::{
    CONDITION_READY, CONDITION_SCHEDULED, CONTAINER_FINALIZER, ComputeNode, ComputeServer, ComputeSnapshot,
    NODE_LABEL, Phase, Profiles,
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
    pub now: Timestamp,
}

/// Placements written whose label the cache does not show yet: server uid → node and
/// request. Counted as placed, so placements in quick succession account for each other.
pub type Assumed = HashMap<String, (String, Request)>;

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
    let servers = &snapshot.servers;
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
                if let Some(&i) = index.get(node) {
                    nodes[i].allocated += request(server, &snapshot.profiles).unwrap_or_default();
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
    for (node, request) in assumed.values() {
        if let Some(&i) = index.get(node) {
            nodes[i].allocated += *request;
            nodes[i].servers += 1;
        }
    }
    pending.retain(|s| !assumed.contains_key(&s.uid().unwrap_or_default()));
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
    let waiting = pending.len();

    let mut unschedulable = 0;
    for server in pending {
        let placed = request(&server, &snapshot.profiles).and_then(|request| {
            let selector = node_selector(&server, &snapshot.profiles);
            placement::choose(&nodes, &request, &selector)
                .map(|placed| (placed, request))
                .map_err(|why| why.0)
        });
        match placed {
            Ok(((i, fitting), request)) => {
                nodes[i].allocated += request;
                nodes[i].servers += 1;
                assumed.insert(server.uid().unwrap_or_default(), (nodes[i].name.clone(), request));
                writes.push(Write::Place {
                    server,
                    node: nodes[i].name.clone(),
                    fitting,
                });
            }
            Err(reason) => {
                unschedulable += 1;
                if scheduled_condition(&server).is_none_or(|c| c.status != "False" || c.message != reason) {
                    writes.push(Write::Unschedulable { server, reason });
                }
            }
        }
    }
    writes.extend(
        lifecycle::writes(servers, &snapshot.profiles, snapshot.now)
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
}
