//! Pure placement: which node, if any, can run a server, and why the others cannot.
//! No client here; the scheduler feeds it what its watch caches hold.

use std::collections::BTreeMap;

use crate::api::size::{Request, cores, memory_quantity};

/// One node as the scheduler sees it during a pass.
#[derive(Clone, Debug)]
pub struct Node {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// Why the node cannot take servers now (its agent stopped reporting, Docker does not
    /// answer, it has no capacity yet); `None` when it is Ready.
    pub not_ready: Option<String>,
    /// Cordoned by an admin (`spec.unschedulable`).
    pub unschedulable: bool,
    /// What the node may promise: its capacity times its allocation ratios.
    pub capacity: Request,
    /// Its CPUs as they are (nano-CPUs): no one server may be larger, whatever the ratio
    /// (Docker refuses a CPU limit above the host's CPUs).
    pub cores: i64,
    /// What the servers placed here ask for, including placements of this pass.
    pub allocated: Request,
    pub servers: usize,
}

impl Node {
    fn free(&self) -> Request {
        Request {
            nano_cpus: self.capacity.nano_cpus - self.allocated.nano_cpus,
            memory_bytes: self.capacity.memory_bytes - self.allocated.memory_bytes,
            gpus: self.capacity.gpus - self.allocated.gpus,
        }
    }

    /// Share of the node in use once `request` is added: the mean of CPU and memory, as
    /// Kubernetes' LeastAllocated scores them.
    fn load_with(&self, request: &Request) -> f64 {
        let share = |used: i64, asked: i64, capacity: i64| (used + asked) as f64 / capacity.max(1) as f64;
        (share(
            self.allocated.nano_cpus,
            request.nano_cpus,
            self.capacity.nano_cpus,
        ) + share(
            self.allocated.memory_bytes,
            request.memory_bytes,
            self.capacity.memory_bytes,
        )) / 2.0
    }
}

/// Why one node cannot run a server; nodes are counted per reason in the message.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Misfit {
    NotReady,
    Cordoned,
    Selector(String),
    Cores,
    Cpu,
    Memory,
    Gpus,
}

fn misfit(node: &Node, request: &Request, selector: &BTreeMap<String, String>) -> Option<Misfit> {
    if node.not_ready.is_some() {
        return Some(Misfit::NotReady);
    }
    if node.unschedulable {
        return Some(Misfit::Cordoned);
    }
    if let Some((key, value)) = selector.iter().find(|(k, v)| node.labels.get(*k) != Some(*v)) {
        return Some(Misfit::Selector(format!("{key}={value}")));
    }
    let free = node.free();
    if request.nano_cpus > node.cores {
        Some(Misfit::Cores)
    } else if request.nano_cpus > free.nano_cpus {
        Some(Misfit::Cpu)
    } else if request.memory_bytes > free.memory_bytes {
        Some(Misfit::Memory)
    } else if request.gpus > free.gpus {
        Some(Misfit::Gpus)
    } else {
        None
    }
}

/// Why no node can take a server now, as a person reads it in the status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unplaceable(pub String);

impl From<&str> for Unplaceable {
    fn from(reason: &str) -> Unplaceable {
        Unplaceable(reason.to_string())
    }
}

/// The node to place a server on: the least allocated of those that fit, ties broken by
/// fewer servers, then by name; with how many fit. When none fits, the reason a person reads in the status:
/// "0/3 nodes can run this: 2 lack 4 free CPUs, 1 does not match nodeSelector gpu=true".
pub fn choose(
    nodes: &[Node],
    request: &Request,
    selector: &BTreeMap<String, String>,
) -> Result<(usize, usize), Unplaceable> {
    let mut misfits: BTreeMap<Misfit, usize> = BTreeMap::new();
    let mut best: Option<(usize, f64)> = None;
    let mut fitting = 0;
    for (index, node) in nodes.iter().enumerate() {
        match misfit(node, request, selector) {
            Some(why) => *misfits.entry(why).or_default() += 1,
            None => {
                fitting += 1;
                let load = node.load_with(request);
                let better = match best {
                    None => true,
                    Some((b, best_load)) => {
                        let other = &nodes[b];
                        (load, node.servers, &node.name) < (best_load, other.servers, &other.name)
                    }
                };
                if better {
                    best = Some((index, load));
                }
            }
        }
    }
    if let Some((index, _)) = best {
        return Ok((index, fitting));
    }
    if nodes.is_empty() {
        return Err(Unplaceable::from(
            "no nodes are registered yet: start an agent on a Docker host \
                    (compute-server agent --node NAME); the server is placed as soon as one is Ready",
        ));
    }
    let reasons: Vec<String> = misfits
        .into_iter()
        .map(|(why, n)| {
            let (one, many) = match &why {
                Misfit::NotReady => ("is not Ready".to_string(), "are not Ready".to_string()),
                Misfit::Cordoned => ("is cordoned".into(), "are cordoned".into()),
                Misfit::Selector(pair) => (
                    format!("does not match nodeSelector {pair}"),
                    format!("do not match nodeSelector {pair}"),
                ),
                Misfit::Cores => {
                    let cpus = cpus(request.nano_cpus);
                    (
                        format!("has fewer than {cpus} CPUs"),
                        format!("have fewer than {cpus} CPUs"),
                    )
                }
                Misfit::Cpu => {
                    let cpus = cpus(request.nano_cpus);
                    (
                        format!("lacks {cpus} free CPUs"),
                        format!("lack {cpus} free CPUs"),
                    )
                }
                Misfit::Memory => {
                    let memory = memory(request.memory_bytes);
                    (
                        format!("lacks {memory} free memory"),
                        format!("lack {memory} free memory"),
                    )
                }
                Misfit::Gpus => {
                    let gpus = request.gpus;
                    (
                        format!("lacks {gpus} free GPUs"),
                        format!("lack {gpus} free GPUs"),
                    )
                }
            };
            format!("{n} {}", if n == 1 { one } else { many })
        })
        .collect();
    Err(Unplaceable(format!(
        "0/{} nodes can run this: {}",
        nodes.len(),
        reasons.join(", ")
    )))
}

/// CPUs for people: "4", "0.5".
fn cpus(nano: i64) -> String {
    cores(nano)
}

/// Memory for people: "4Gi", "512Mi", else bytes.
fn memory(bytes: i64) -> String {
    memory_quantity(bytes).0
}

#[cfg(test)]
mod tests {
    use super::*;

    const GI: i64 = 1 << 30;

    fn request(cpus: i64, memory_gi: i64, gpus: i64) -> Request {
        Request {
            nano_cpus: cpus * 1_000_000_000,
            memory_bytes: memory_gi * GI,
            gpus,
        }
    }

    fn node(name: &str, capacity: Request) -> Node {
        Node {
            name: name.into(),
            labels: BTreeMap::new(),
            not_ready: None,
            unschedulable: false,
            cores: capacity.nano_cpus,
            capacity,
            allocated: Request::default(),
            servers: 0,
        }
    }

    #[test]
    fn picks_the_least_allocated_and_breaks_ties_by_name() {
        let mut nodes = vec![
            node("b", request(4, 8, 0)),
            node("a", request(4, 8, 0)),
            node("c", request(4, 8, 0)),
        ];
        nodes[1].allocated = request(1, 1, 0);
        nodes[1].servers = 1;
        // b and c are empty: b wins by name.
        assert_eq!(choose(&nodes, &request(1, 1, 0), &BTreeMap::new()), Ok((0, 3)));
        nodes[0].allocated = request(1, 1, 0);
        nodes[0].servers = 1;
        assert_eq!(choose(&nodes, &request(1, 1, 0), &BTreeMap::new()), Ok((2, 3)));
    }

    #[test]
    fn spreads_equal_servers_evenly() {
        let mut nodes = vec![
            node("a", request(8, 16, 0)),
            node("b", request(8, 16, 0)),
            node("c", request(8, 16, 0)),
        ];
        let one = Request {
            nano_cpus: 250_000_000,
            memory_bytes: 64 << 20,
            gpus: 0,
        };
        for _ in 0..30 {
            let (i, _) = choose(&nodes, &one, &BTreeMap::new()).unwrap();
            nodes[i].allocated += one;
            nodes[i].servers += 1;
        }
        assert_eq!(
            nodes.iter().map(|n| n.servers).collect::<Vec<_>>(),
            vec![10, 10, 10]
        );
    }

    #[test]
    fn says_why_no_node_fits() {
        let mut gpu = node("gpu", request(2, 8, 1));
        gpu.labels.insert("gpu".into(), "true".into());
        let mut cordoned = node("cordoned", request(64, 64, 0));
        cordoned.unschedulable = true;
        let mut lost = node("lost", request(64, 64, 0));
        lost.not_ready = Some("agent stopped reporting".into());
        let nodes = vec![
            node("a", request(2, 8, 0)),
            node("b", request(2, 8, 0)),
            gpu,
            cordoned,
            lost,
        ];
        assert_eq!(
            choose(&nodes, &request(4, 1, 0), &BTreeMap::new()),
            Err("0/5 nodes can run this: 1 is not Ready, 1 is cordoned, 3 have fewer than 4 CPUs".into())
        );
        let selector = BTreeMap::from([("gpu".to_string(), "true".to_string())]);
        assert_eq!(
            choose(&nodes, &request(4, 1, 0), &selector),
            Err("0/5 nodes can run this: 1 is not Ready, 1 is cordoned, \
                 2 do not match nodeSelector gpu=true, 1 has fewer than 4 CPUs"
                .into())
        );
        assert_eq!(choose(&nodes, &request(1, 1, 1), &selector), Ok((2, 1)));
        assert_eq!(
            choose(&nodes, &request(1, 16, 0), &BTreeMap::new()),
            Err("0/5 nodes can run this: 1 is not Ready, 1 is cordoned, 3 lack 16Gi free memory".into())
        );
        assert_eq!(
            choose(&nodes[..2], &request(1, 1, 2), &BTreeMap::new()),
            Err("0/2 nodes can run this: 2 lack 2 free GPUs".into())
        );
    }

    #[test]
    fn counts_what_is_already_placed() {
        let mut nodes = vec![node("a", request(2, 4, 0))];
        nodes[0].allocated = request(1, 3, 0);
        assert_eq!(choose(&nodes, &request(1, 1, 0), &BTreeMap::new()), Ok((0, 1)));
        assert_eq!(
            choose(&nodes, &request(2, 1, 0), &BTreeMap::new()),
            Err("0/1 nodes can run this: 1 lacks 2 free CPUs".into())
        );
    }

    #[test]
    fn no_nodes_says_what_to_do() {
        let reason = choose(&[], &request(1, 1, 0), &BTreeMap::new()).unwrap_err();
        assert!(reason.0.contains("start an agent"), "{reason}");
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(cpus(500_000_000), "0.5");
        assert_eq!(cpus(4_000_000_000), "4");
        assert_eq!(memory(512 << 20), "512Mi");
        assert_eq!(memory(3 * GI), "3Gi");
    }

    #[test]
    fn no_server_larger_than_a_hosts_cpus_is_placed_there_whatever_its_ratio() {
        let mut host = node("a", request(8, 16, 0));
        host.cores = 2_000_000_000;
        let error = choose(&[host], &request(3, 1, 0), &BTreeMap::new()).unwrap_err();
        assert_eq!(error.0, "0/1 nodes can run this: 1 has fewer than 3 CPUs");
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    const GI: i64 = 1 << 30;

    fn a_node() -> impl Strategy<Value = Node> {
        (
            "[a-e]",
            1i64..=8,
            1i64..=16,
            0i64..=2,
            prop_oneof![3 => Just(1000i64), 1 => 500i64..=4000],
            proptest::option::of(Just("its agent has not reported yet".to_string())),
            proptest::bool::weighted(0.15),
            proptest::bool::ANY,
        )
            .prop_map(
                |(name, cpus, memory, gpus, ratio, not_ready, unschedulable, gpu_label)| {
                    let cores = cpus * 1_000_000_000;
                    let mut labels = BTreeMap::new();
                    if gpu_label {
                        labels.insert("gpu".to_string(), "true".to_string());
                    }
                    Node {
                        name: format!("node-{name}"),
                        labels,
                        not_ready,
                        unschedulable,
                        capacity: Request {
                            nano_cpus: cores * ratio / 1000,
                            memory_bytes: memory * GI,
                            gpus,
                        },
                        cores,
                        allocated: Request::default(),
                        servers: 0,
                    }
                },
            )
    }

    fn nodes() -> impl Strategy<Value = Vec<Node>> {
        proptest::collection::vec(a_node(), 0..6).prop_map(|mut nodes| {
            // Names are unique, as ComputeNodes' are.
            nodes.sort_by(|a, b| a.name.cmp(&b.name));
            nodes.dedup_by(|a, b| a.name == b.name);
            nodes
        })
    }

    fn a_request() -> impl Strategy<Value = (Request, bool)> {
        (10i64..=4000, 6i64..=4096, 0i64..=2, proptest::bool::weighted(0.2)).prop_map(
            |(milli_cpus, memory_mi, gpus, wants_gpu_node)| {
                let request = Request {
                    nano_cpus: milli_cpus * 1_000_000,
                    memory_bytes: memory_mi << 20,
                    gpus,
                };
                (request, wants_gpu_node)
            },
        )
    }

    fn selector(wants_gpu_node: bool) -> BTreeMap<String, String> {
        match wants_gpu_node {
            true => BTreeMap::from([("gpu".to_string(), "true".to_string())]),
            false => BTreeMap::new(),
        }
    }

    /// Places `requests` one after another as a pass does; the nodes chosen (None: waits).
    fn place_all(nodes: &mut [Node], requests: &[(Request, bool)]) -> Vec<Option<String>> {
        requests
            .iter()
            .map(|(request, gpu)| {
                let (index, _) = choose(nodes, request, &selector(*gpu)).ok()?;
                nodes[index].allocated += *request;
                nodes[index].servers += 1;
                Some(nodes[index].name.clone())
            })
            .collect()
    }

    proptest! {
        /// However many servers of whatever size: no node is promised more than its capacity
        /// times its ratios, nor a server larger than its CPUs, and only Ready, uncordoned,
        /// matching nodes get any. A server that waits fits on no node, and says how many there are.
        #[test]
        fn placement_never_overfills_a_node_and_only_uses_nodes_that_may_take_it(
            mut nodes in nodes(),
            requests in proptest::collection::vec(a_request(), 1..40),
        ) {
            for (request, gpu) in &requests {
                match choose(&nodes, request, &selector(*gpu)) {
                    Ok((index, fitting)) => {
                        let node = &mut nodes[index];
                        prop_assert!(node.not_ready.is_none() && !node.unschedulable);
                        prop_assert!(!*gpu || node.labels.get("gpu").map(String::as_str) == Some("true"));
                        prop_assert!(request.nano_cpus <= node.cores);
                        prop_assert!(fitting >= 1);
                        node.allocated += *request;
                        node.servers += 1;
                        let (allocated, capacity) = (node.allocated, node.capacity);
                        prop_assert!(allocated.nano_cpus <= capacity.nano_cpus);
                        prop_assert!(allocated.memory_bytes <= capacity.memory_bytes);
                        prop_assert!(allocated.gpus <= capacity.gpus);
                    }
                    Err(reason) => {
                        let counted = reason.0.starts_with(&format!("0/{} nodes", nodes.len()));
                        prop_assert!(counted || (nodes.is_empty() && reason.0.starts_with("no nodes")), "{}", reason);
                        for node in &nodes {
                            prop_assert!(misfit(node, request, &selector(*gpu)).is_some());
                        }
                    }
                }
            }
        }

        /// The same nodes and servers give the same placements, whatever order the nodes
        /// are listed in (a standby that takes over decides as the leader would have).
        #[test]
        fn placement_is_deterministic_and_independent_of_the_nodes_order(
            nodes in nodes(),
            requests in proptest::collection::vec(a_request(), 1..30),
            rotate in 0usize..6,
        ) {
            let first = place_all(&mut nodes.clone(), &requests);
            prop_assert_eq!(&first, &place_all(&mut nodes.clone(), &requests));
            let mut rotated = nodes.clone();
            if !rotated.is_empty() {
                let by = rotate % rotated.len();
                rotated.rotate_left(by);
                rotated.reverse();
            }
            prop_assert_eq!(first, place_all(&mut rotated, &requests));
        }
    }
}
