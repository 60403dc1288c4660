//! The scheduler with real agents on three real Docker engines: where servers land, what a
//! server that fits nowhere says, node loss and return, and leader election.
//!
//! Each test has a namespace of its own for its servers and Leases, and runs its scheduler
//! for that namespace: nodes of other tests heartbeat elsewhere, so they are never Ready here.

mod support;

use std::collections::BTreeMap;

use serde_json::Value;
use support::{
    Agent, Scheduler, Stack, TestNamespace, events, eventually, install_crds, kubectl, kubectl_ok,
    server_json, unique, wait_phase,
};

/// Agent flags for a test's nodes: Leases in the test's namespace, lasting 6 s.
fn node_flags(ns: &str) -> Vec<&str> {
    vec!["--lease-namespace", ns, "--lease-seconds", "6"]
}

/// Applies unscheduled busybox servers `names` with the given spec lines, in one call.
fn apply_servers(ns: &str, names: &[String], spec: &str) {
    let items: String = names
        .iter()
        .map(|name| {
            format!(
                "---\napiVersion: computeserver.io/v1alpha1\nkind: ComputeServer\nmetadata:\n  name: {name}\n  \
                 namespace: {ns}\nspec:\n  owner: alice\n  image: computeserver/busybox:local\n  \
                 command: [sleep, infinity]\n{}",
                spec.lines().map(|l| format!("  {l}\n")).collect::<String>()
            )
        })
        .collect();
    kubectl_ok(&["apply", "-f", "-"], Some(&items));
}

fn servers(ns: &str) -> Vec<Value> {
    let list: Value =
        serde_json::from_str(&kubectl_ok(&["get", "csrv", "-n", ns, "-o", "json"], None)).unwrap();
    list["items"].as_array().unwrap().clone()
}

fn node_of(server: &Value) -> Option<String> {
    server["metadata"]["labels"]["computeserver.io/node"]
        .as_str()
        .map(String::from)
}

fn computenode(name: &str) -> Value {
    serde_json::from_str(&kubectl_ok(&["get", "computenode", name, "-o", "json"], None)).unwrap()
}

/// Waits until the node's agent has reported it Ready.
fn wait_ready(node: &str) {
    eventually(&format!("node {node} Ready"), 60, || {
        let out = kubectl(&["get", "computenode", node, "-o", "json"], None);
        let node: Value = serde_json::from_slice(&out.stdout).ok()?;
        let ready = node["status"]["conditions"]
            .as_array()?
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        ready.then_some(())
    });
}

/// One Ready node per local Docker engine 1..=`engines`, heartbeating in `ns`.
fn ready_nodes(ns: &str, prefix: &str, engines: usize) -> Vec<Agent> {
    let agents: Vec<Agent> = (1..=engines)
        .map(|daemon| Agent::start_with(&unique(prefix), daemon, &node_flags(ns)))
        .collect();
    for agent in &agents {
        wait_ready(&agent.node);
    }
    agents
}

/// Waits until the server has a reason for waiting that contains `text`; returns the server.
fn wait_pending_with(ns: &str, name: &str, text: &str) -> Value {
    eventually(&format!("{name} to wait with {text:?}"), 60, || {
        server_json(ns, name).filter(|s| {
            s["status"]["phase"] == "Pending"
                && s["status"]["message"].as_str().is_some_and(|m| m.contains(text))
        })
    })
}

/// Running containers of namespace `ns`'s servers on local node engine `daemon`, by the docker
/// CLI (other tests share the engines).
fn containers_on(daemon: usize, ns: &str) -> usize {
    let out = std::process::Command::new("docker")
        .args([
            "ps",
            "-q",
            "--filter",
            "label=app.kubernetes.io/managed-by=compute-server",
            "--filter",
            &format!("label=computeserver.io/namespace={ns}"),
        ])
        .env("DOCKER_HOST", Stack::get().node_docker_host(daemon))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).lines().count()
}

#[test]
fn thirty_servers_spread_evenly_over_three_nodes() {
    install_crds();
    let ns = TestNamespace::new("sched-spread");
    // One agent per Docker engine: three real daemons, three nodes; heartbeats that hold through
    // a busy moment of the machine (a node whose Lease ran out for a second gets no servers).
    let flags = ["--lease-namespace", ns.name.as_str(), "--lease-seconds", "20"];
    let agents: Vec<Agent> = (1..=3)
        .map(|daemon| Agent::start_with(&unique("spread"), daemon, &flags))
        .collect();
    for agent in &agents {
        wait_ready(&agent.node);
    }
    let _scheduler = Scheduler::start(&unique("sched"), &ns.name, &ns.name);

    let names: Vec<String> = (0..30).map(|i| format!("s{i:02}")).collect();
    apply_servers(&ns.name, &names, "resources: {cpu: 100m, memory: 32Mi}");

    let placed = eventually("30 servers Running", 240, || {
        let all = servers(&ns.name);
        (all.len() == 30 && all.iter().all(|s| s["status"]["phase"] == "Running")).then_some(all)
    });
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for server in &placed {
        let node = node_of(server).expect("every server has a node");
        assert_eq!(server["status"]["node"], node.as_str());
        let scheduled = support::condition(server, "Scheduled");
        assert_eq!(scheduled["status"], "True", "{server}");
        assert!(
            scheduled["message"]
                .as_str()
                .unwrap()
                .starts_with(&format!("placed on node {node}")),
            "{scheduled}"
        );
        *per_node.entry(node).or_default() += 1;
    }
    let expected: BTreeMap<String, usize> = agents.iter().map(|a| (a.node.clone(), 10)).collect();
    assert_eq!(per_node, expected, "servers per node");

    // Docker agrees: ten containers of these servers on each engine.
    for daemon in 1..=3 {
        eventually("ten containers per engine", 30, || {
            (containers_on(daemon, &ns.name) == 10).then_some(())
        });
    }
    // And so do the nodes' own reports, as `kubectl get computenodes` shows them.
    for agent in &agents {
        eventually("the node reports its 10 servers", 30, || {
            let node = computenode(&agent.node);
            (node["status"]["servers"] == 10 && node["status"]["allocated"]["cpu"] == "1").then_some(())
        });
    }
    let table = kubectl_ok(&["get", "computenodes", &agents[0].node], None);
    assert!(
        table.starts_with("NAME") && table.contains("CPU USED") && table.contains("SERVERS"),
        "{table}"
    );
    // Where `kubectl describe` shows it: the Scheduled condition, written by the node's agent
    // (a placement is one write, the label; no Event for each).
    let described = kubectl_ok(&["describe", "csrv", "-n", &ns.name, "s00"], None);
    assert!(described.contains("placed on node"), "{described}");
}

/// The status fields each manager owns, from the server's managedFields: manager → the
/// `f:status` keys (conditions as `conditions[Type]`), and the manager's last write time.
fn status_owners(ns: &str, name: &str) -> BTreeMap<String, (Vec<String>, String)> {
    let mut owners = BTreeMap::new();
    for entry in support::managed_fields(ns, name) {
        let mut fields = vec![];
        for (key, value) in entry["fieldsV1"]["f:status"].as_object().into_iter().flatten() {
            let Some(field) = key.strip_prefix("f:") else {
                continue;
            };
            if field == "conditions" {
                for condition in value.as_object().into_iter().flatten().map(|(k, _)| k) {
                    if let Some(key) = condition.strip_prefix("k:") {
                        let key: Value = serde_json::from_str(key).unwrap();
                        fields.push(format!("conditions[{}]", key["type"].as_str().unwrap()));
                    }
                }
            } else {
                fields.push(field.to_string());
            }
        }
        if entry["fieldsV1"]["f:metadata"]["f:labels"]["f:computeserver.io/node"].is_object() {
            fields.push("label node".into());
        }
        if !fields.is_empty() {
            fields.sort();
            let manager = entry["manager"].as_str().unwrap().to_string();
            owners.insert(
                manager,
                (fields, entry["time"].as_str().unwrap_or("").to_string()),
            );
        }
    }
    owners
}

fn fields_of(owners: &BTreeMap<String, (Vec<String>, String)>, manager: &str) -> Vec<String> {
    owners.get(manager).map(|(f, _)| f.clone()).unwrap_or_default()
}

#[test]
fn the_scheduler_writes_the_label_the_agent_the_status_and_no_field_flaps_between_them() {
    install_crds();
    let ns = TestNamespace::new("sched-owners");
    let mut flags = node_flags(&ns.name);
    flags.extend(["--cpu-allocation-ratio", "1"]);
    let node = unique("owners");
    let mut agent = Agent::start_with(&node, 1, &flags);
    wait_ready(&node);
    let mut schedulers = vec![
        Scheduler::start(&unique("one"), &ns.name, &ns.name),
        Scheduler::start(&unique("two"), &ns.name, &ns.name),
    ];

    // Too big for the node: the scheduler says why it waits, and owns just that.
    apply_servers(
        &ns.name,
        &["later".into()],
        "resources: {cpu: \"64\", memory: 32Mi}",
    );
    wait_pending_with(&ns.name, "later", "fewer than 64 CPUs");
    let waiting = status_owners(&ns.name, "later");
    assert_eq!(
        fields_of(&waiting, "compute-server-scheduler"),
        ["conditions[Scheduled]", "message", "phase", "queuePosition"],
        "{waiting:?}"
    );

    // Placed: one write by the scheduler (the label); the agent reports Scheduled and the rest.
    apply_servers(&ns.name, &["work".into()], "resources: {cpu: 100m, memory: 32Mi}");
    let running = wait_phase(&ns.name, "work", "Running");
    assert_eq!(running["status"]["node"], node.as_str());
    let scheduled = support::condition(&running, "Scheduled");
    assert_eq!(scheduled["status"], "True");
    assert_eq!(scheduled["message"], format!("placed on node {node}"));
    let owners = status_owners(&ns.name, "work");
    assert_eq!(
        fields_of(&owners, "compute-server-scheduler"),
        ["label node"],
        "{owners:?}"
    );
    let agents = fields_of(&owners, "compute-server-agent");
    for field in [
        "conditions[Ready]",
        "conditions[Scheduled]",
        "containerID",
        "message",
        "node",
        "phase",
    ] {
        assert!(
            agents.iter().any(|f| f == field),
            "the agent owns {field}: {owners:?}"
        );
    }
    for (manager, (fields, _)) in &owners {
        if manager != "compute-server-agent" {
            assert!(
                !fields.iter().any(|f| f == "phase" || f.starts_with("conditions")),
                "{manager} writes the agent's fields too: {owners:?}"
            );
        }
    }

    // The waiting server fits once it asks for less: the agent takes its status over.
    apply_servers(
        &ns.name,
        &["later".into()],
        "resources: {cpu: 100m, memory: 32Mi}",
    );
    wait_phase(&ns.name, "later", "Running");
    let taken = status_owners(&ns.name, "later");
    assert_eq!(
        fields_of(&taken, "compute-server-scheduler"),
        ["label node"],
        "{taken:?}"
    );

    // The agent restarts and the leading scheduler dies: nobody writes the servers again.
    let before = (status_owners(&ns.name, "work"), status_owners(&ns.name, "later"));
    agent.kill();
    let _agent = Agent::start_with(&node, 1, &flags);
    let holder = eventually("a leader", 30, || leader(&ns.name));
    let leading = schedulers.iter().position(|s| s.identity == holder).unwrap();
    schedulers[leading].kill();
    eventually("the standby leads", 30, || {
        leader(&ns.name).filter(|l| *l != holder)
    });
    wait_ready(&node);
    // A few passes and reconciles later.
    std::thread::sleep(std::time::Duration::from_secs(6));
    let after = (status_owners(&ns.name, "work"), status_owners(&ns.name, "later"));
    let unchanged = |(fields, time): &(Vec<String>, String), manager: &str| {
        (fields.clone(), time.clone(), manager.to_string())
    };
    for (b, a) in [(&before.0, &after.0), (&before.1, &after.1)] {
        for manager in ["compute-server-agent", "compute-server-scheduler"] {
            assert_eq!(
                b.get(manager).map(|e| unchanged(e, manager)),
                a.get(manager).map(|e| unchanged(e, manager)),
                "{manager} wrote again after the restarts"
            );
        }
    }
    assert_eq!(
        wait_phase(&ns.name, "work", "Running")["status"]["node"],
        node.as_str()
    );
    schedulers.clear();
}

#[test]
fn a_server_no_node_fits_waits_with_the_reason_until_one_with_room_joins() {
    install_crds();
    let ns = TestNamespace::new("sched-room");
    let mut flags = node_flags(&ns.name);
    flags.extend(["--cpu-allocation-ratio", "1"]);
    let first = Agent::start_with(&unique("room"), 1, &flags);
    wait_ready(&first.node);
    let _scheduler = Scheduler::start(&unique("sched"), &ns.name, &ns.name);

    // The node's engine has 2 CPUs: 1.5 fit, then 1 more does not.
    apply_servers(&ns.name, &["big".into()], "resources: {cpu: 1500m, memory: 32Mi}");
    let big = wait_phase(&ns.name, "big", "Running");
    assert_eq!(node_of(&big).as_deref(), Some(first.node.as_str()));

    apply_servers(
        &ns.name,
        &["more".into()],
        "resources: {cpu: \"1\", memory: 32Mi}",
    );
    let waiting = wait_pending_with(&ns.name, "more", "1 lacks 1 free CPUs");
    // The message: its place in line, then why; the condition and the Event: why.
    let message = waiting["status"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("1st in line for room on a node: 0/"),
        "{message}"
    );
    assert_eq!(waiting["status"]["queuePosition"], 1);
    let scheduled = support::condition(&waiting, "Scheduled");
    assert_eq!(scheduled["status"], "False");
    assert_eq!(scheduled["reason"], "Unschedulable");
    let reason = scheduled["message"].as_str().unwrap();
    assert!(reason.starts_with("0/") && message.ends_with(reason), "{reason}");
    assert_eq!(node_of(&waiting), None);
    assert!(events(&ns.name, "more").contains("FailedScheduling"));

    // A node with room joins: the server is placed there without anyone touching it.
    let second = Agent::start_with(&unique("room"), 2, &flags);
    let placed = wait_phase(&ns.name, "more", "Running");
    assert_eq!(node_of(&placed).as_deref(), Some(second.node.as_str()));
    assert!(
        placed["status"]["queuePosition"].is_null(),
        "out of line once placed"
    );
    assert_eq!(support::condition(&placed, "Scheduled")["status"], "True");
}

#[test]
fn a_node_promises_its_cpus_times_its_ratio_and_an_admins_ratio_stays() {
    install_crds();
    let ns = TestNamespace::new("sched-ratio");
    let agent = Agent::start_with(&unique("ratio"), 1, &node_flags(&ns.name));
    wait_ready(&agent.node);
    // The agent's default ratios are written into the node's spec, and shown by kubectl.
    let spec = eventually("the node's ratios", 30, || {
        let spec = computenode(&agent.node)["spec"].clone();
        spec["cpuAllocationRatio"].is_string().then_some(spec)
    });
    assert_eq!(
        (
            spec["cpuAllocationRatio"].as_str(),
            spec["memoryAllocationRatio"].as_str()
        ),
        (Some("4"), Some("1"))
    );
    let table = kubectl_ok(&["get", "computenode", &agent.node], None);
    assert!(table.lines().next().unwrap().contains("CPU RATIO"), "{table}");
    let _scheduler = Scheduler::start(&unique("sched"), &ns.name, &ns.name);

    // The engine has 2 CPUs: with ratio 4 it takes four servers of 2 CPUs, each limited to 2.
    let cores = std::thread::available_parallelism().unwrap().get() as i64;
    let names: Vec<String> = (0..4).map(|i| format!("full{i}")).collect();
    let per = cores.to_string();
    apply_servers(
        &ns.name,
        &names,
        &format!("resources: {{cpu: \"{per}\", memory: 32Mi}}"),
    );
    for name in &names {
        let server = wait_phase(&ns.name, name, "Running");
        assert_eq!(node_of(&server).as_deref(), Some(agent.node.as_str()));
        let container = support::inspect(&format!("csrv.{}.{name}", ns.name)).unwrap();
        assert_eq!(
            container["HostConfig"]["NanoCpus"],
            cores * 1_000_000_000,
            "the container's own limit is its size"
        );
    }
    // All 4 x cores promised: one more CPU does not fit. Nor does a server larger than the
    // host, whatever the ratio.
    apply_servers(&ns.name, &["big".into()], "resources: {cpu: \"1\", memory: 32Mi}");
    wait_pending_with(&ns.name, "big", "1 lacks 1 free CPUs");
    let huge = (cores + 1).to_string();
    apply_servers(
        &ns.name,
        &["huge".into()],
        &format!("resources: {{cpu: \"{huge}\", memory: 32Mi}}"),
    );
    wait_pending_with(&ns.name, "huge", &format!("1 has fewer than {huge} CPUs"));

    // An admin raises the ratio: the server is placed, and the agent leaves the value alone.
    kubectl_ok(
        &[
            "patch",
            "computenode",
            &agent.node,
            "--type=merge",
            "-p",
            r#"{"spec":{"cpuAllocationRatio":"5.5"}}"#,
        ],
        None,
    );
    let placed = wait_phase(&ns.name, "big", "Running");
    assert_eq!(node_of(&placed).as_deref(), Some(agent.node.as_str()));
    std::thread::sleep(std::time::Duration::from_secs(4)); // more than two of its heartbeats
    assert_eq!(computenode(&agent.node)["spec"]["cpuAllocationRatio"], "5.5");

    // A ratio a person might mistype is refused by the API server with the rule.
    let out = kubectl(
        &[
            "patch",
            "computenode",
            &agent.node,
            "--type=merge",
            "-p",
            r#"{"spec":{"cpuAllocationRatio":"100"}}"#,
        ],
        None,
    );
    assert!(!out.status.success());
    let error = String::from_utf8_lossy(&out.stderr);
    assert!(
        error.contains("allocation ratios are numbers from 0.5 to 64"),
        "{error}"
    );
}

#[test]
fn node_selector_and_cordon_are_honoured() {
    install_crds();
    let ns = TestNamespace::new("sched-select");
    let mut flags = node_flags(&ns.name);
    let plain = Agent::start_with(&unique("plain"), 1, &flags);
    flags.extend(["--label", "disk=ssd"]);
    let ssd = Agent::start_with(&unique("ssd"), 1, &flags);
    wait_ready(&plain.node);
    wait_ready(&ssd.node);
    let _scheduler = Scheduler::start(&unique("sched"), &ns.name, &ns.name);

    // Least allocated would spread these; the selector keeps them on the ssd node.
    let fast: Vec<String> = (0..3).map(|i| format!("fast{i}")).collect();
    apply_servers(
        &ns.name,
        &fast,
        "resources: {cpu: 100m, memory: 32Mi}\nnodeSelector: {disk: ssd}",
    );
    for name in &fast {
        let server = wait_phase(&ns.name, name, "Running");
        assert_eq!(node_of(&server).as_deref(), Some(ssd.node.as_str()), "{name}");
    }

    // Cordoned: nothing new lands there, the servers there keep running.
    kubectl_ok(
        &[
            "patch",
            "computenode",
            &ssd.node,
            "--type=merge",
            "-p",
            r#"{"spec":{"unschedulable":true}}"#,
        ],
        None,
    );
    apply_servers(
        &ns.name,
        &["fast-late".into()],
        "resources: {cpu: 100m, memory: 32Mi}\nnodeSelector: {disk: ssd}",
    );
    apply_servers(&ns.name, &["any".into()], "resources: {cpu: 100m, memory: 32Mi}");
    let waiting = wait_pending_with(&ns.name, "fast-late", "1 is cordoned");
    assert!(
        waiting["status"]["message"]
            .as_str()
            .unwrap()
            .contains("does not match nodeSelector disk=ssd"),
        "{}",
        waiting["status"]["message"]
    );
    let any = wait_phase(&ns.name, "any", "Running");
    assert_eq!(node_of(&any).as_deref(), Some(plain.node.as_str()));
    for name in &fast {
        assert_eq!(server_json(&ns.name, name).unwrap()["status"]["phase"], "Running");
    }

    // Uncordoned: the waiting server goes there.
    kubectl_ok(
        &[
            "patch",
            "computenode",
            &ssd.node,
            "--type=merge",
            "-p",
            r#"{"spec":{"unschedulable":false}}"#,
        ],
        None,
    );
    let placed = wait_phase(&ns.name, "fast-late", "Running");
    assert_eq!(node_of(&placed).as_deref(), Some(ssd.node.as_str()));
}

#[test]
fn a_killed_agent_makes_its_servers_node_lost_until_it_comes_back() {
    install_crds();
    let ns = TestNamespace::new("sched-lost");
    let flags = node_flags(&ns.name);
    let node = unique("lost");
    let mut agent = Agent::start_with(&node, 1, &flags);
    wait_ready(&node);
    let _scheduler = Scheduler::start(&unique("sched"), &ns.name, &ns.name);
    apply_servers(&ns.name, &["work".into()], "resources: {cpu: 100m, memory: 32Mi}");
    let running = wait_phase(&ns.name, "work", "Running");
    let container = running["status"]["containerID"].clone();

    agent.kill();
    // The Lease lasts 6 s; then the node is not Ready and its server is NodeLost.
    let lost = wait_phase(&ns.name, "work", "NodeLost");
    let message = lost["status"]["message"].as_str().unwrap();
    assert!(message.starts_with(&format!("node {node} is lost")), "{message}");
    assert!(message.contains("not moved to another node"), "{message}");
    assert_eq!(support::condition(&lost, "Ready")["status"], "False");
    assert_eq!(support::condition(&lost, "Ready")["reason"], "NodeLost");
    let cnode = computenode(&node);
    let ready = cnode["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap();
    assert_eq!(ready["status"], "False", "{ready}");
    assert_eq!(ready["reason"], "NodeLost");
    // Not moved: still labelled with its node.
    assert_eq!(node_of(&lost).as_deref(), Some(node.as_str()));

    // The agent comes back: the same container runs on, and the server says so.
    let _agent = Agent::start_with(&node, 1, &flags);
    let back = wait_phase(&ns.name, "work", "Running");
    assert_eq!(back["status"]["containerID"], container);
    assert_eq!(support::condition(&back, "Ready")["status"], "True");
    wait_ready(&node);
}

/// The placements counter of a scheduler's /metrics.
fn placements(scheduler: &Scheduler) -> u64 {
    scheduler.metric("compute_server_scheduler_placements_total")
}

fn leader(ns: &str) -> Option<String> {
    let out = kubectl(
        &[
            "get",
            "lease",
            "-n",
            ns,
            "compute-server-scheduler",
            "-o",
            "jsonpath={.spec.holderIdentity}",
        ],
        None,
    );
    let holder = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !holder.is_empty()).then_some(holder)
}

#[test]
fn two_schedulers_never_place_a_server_twice_and_the_standby_takes_over() {
    install_crds();
    let ns = TestNamespace::new("sched-ha");
    let _nodes = ready_nodes(&ns.name, "ha", 2);
    let mut schedulers = vec![
        Scheduler::start(&unique("one"), &ns.name, &ns.name),
        Scheduler::start(&unique("two"), &ns.name, &ns.name),
    ];
    let holder = eventually("a leader", 30, || leader(&ns.name));
    assert!(schedulers.iter().any(|s| s.identity == holder), "{holder}");

    let names: Vec<String> = (0..12).map(|i| format!("ha{i:02}")).collect();
    apply_servers(&ns.name, &names, "resources: {cpu: 100m, memory: 32Mi}");
    eventually("12 servers placed", 120, || {
        servers(&ns.name)
            .iter()
            .all(|s| node_of(s).is_some())
            .then_some(())
    });
    // One placement each: the counters of both add up to 12, all of them the leader's.
    assert_eq!(schedulers.iter().map(placements).sum::<u64>(), 12);
    let standby = schedulers.iter().position(|s| s.identity != holder).unwrap();
    assert_eq!(placements(&schedulers[standby]), 0, "the standby placed nothing");

    // The leader dies without handing over; the standby takes over once the 6 s lease runs out.
    let leader_index = 1 - standby;
    schedulers[leader_index].kill();
    let late: Vec<String> = (0..4).map(|i| format!("late{i}")).collect();
    apply_servers(&ns.name, &late, "resources: {cpu: 100m, memory: 32Mi}");
    for name in &late {
        wait_phase(&ns.name, name, "Running");
    }
    assert_eq!(
        leader(&ns.name).as_deref(),
        Some(schedulers[standby].identity.as_str())
    );
    assert_eq!(placements(&schedulers[standby]), 4);
    schedulers.clear();
}

#[test]
fn a_server_on_a_deleted_node_can_be_deleted_and_its_data_is_reported_when_the_host_returns() {
    install_crds();
    let ns = TestNamespace::new("sched-gone");
    let flags = node_flags(&ns.name);
    let node = unique("gone");
    let mut agent = Agent::start_with(&node, 1, &flags);
    wait_ready(&node);
    let _scheduler = Scheduler::start(&unique("sched"), &ns.name, &ns.name);
    apply_servers(&ns.name, &["work".into()], "resources: {cpu: 100m, memory: 32Mi}");
    let running = wait_phase(&ns.name, "work", "Running");
    let uid = running["metadata"]["uid"].as_str().unwrap().to_string();
    let volume = format!("csrv.{}.work.{uid}.data", ns.name);

    // The host is gone for good: its agent is dead and an admin deletes its ComputeNode.
    agent.kill();
    kubectl_ok(&["delete", "computenode", &node], None);
    let out = kubectl(&["delete", "csrv", "-n", &ns.name, "work", "--timeout=60s"], None);
    assert!(
        out.status.success(),
        "the delete hung: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(server_json(&ns.name, "work").is_none());
    let seen = events(&ns.name, "work");
    assert!(
        seen.contains("NodeDeleted") && seen.contains(&format!("node {node} was deleted")),
        "{seen}"
    );

    // The host comes back after all: its agent keeps the data and lists it as orphaned.
    let _agent = Agent::start_with(&node, 1, &flags);
    eventually("the volume to be listed as orphaned", 60, || {
        let out = kubectl(
            &[
                "get",
                "computenode",
                &node,
                "-o",
                "jsonpath={.status.orphanedVolumes[*].volume}",
            ],
            None,
        );
        String::from_utf8_lossy(&out.stdout)
            .contains(&volume)
            .then_some(())
    });
    let docker = |args: &[&str]| {
        std::process::Command::new("docker")
            .args(args)
            .env("DOCKER_HOST", Stack::get().docker_host())
            .status()
            .unwrap()
    };
    assert!(
        docker(&["volume", "inspect", &volume]).success(),
        "the data is still on the host"
    );
    let _ = docker(&["rm", "-f", &format!("csrv.{}.work", ns.name)]);
    let _ = docker(&["volume", "rm", &volume]);
}
