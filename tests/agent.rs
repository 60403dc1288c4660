//! The node agent against the real apiserver and the real Docker engine: what the user sees
//! (`kubectl get`, status, Events) and what Docker really did (`docker inspect`).

mod support;

use serde_json::Value;
use support::{
    Agent, TestNamespace, docker_cli, events, eventually, inspect, install_crds, kubectl, kubectl_ok,
    server_json, unique, wait_phase,
};

/// A busybox server of the `tiny` profile that sleeps until stopped.
const SLEEPER: &str = "owner: alice\nprofile: tiny\ncommand: [sleep, infinity]";

/// Applies a ComputeServer pinned to `node`, with the given spec lines.
fn apply_server(ns: &str, name: &str, node: &str, spec: &str) {
    let yaml = format!(
        "apiVersion: computeserver.io/v1alpha1\nkind: ComputeServer\nmetadata:\n  name: {name}\n  namespace: {ns}\n  \
         labels: {{computeserver.io/node: {node}, computeserver.io/owner: alice}}\nspec:\n{}",
        spec.lines().map(|l| format!("  {l}\n")).collect::<String>()
    );
    kubectl_ok(&["apply", "-f", "-"], Some(&yaml));
}

#[test]
fn a_pinned_server_becomes_a_hardened_running_container() {
    install_crds();
    let ns = TestNamespace::new("agent-run");
    let agent = Agent::start(&unique("node"));
    apply_server(
        &ns.name,
        "box",
        &agent.node,
        "owner: alice\nprofile: tiny\ncommand: [sleep, infinity]\nenv: [{name: GREETING, value: hi}]",
    );

    let server = wait_phase(&ns.name, "box", "Running");
    assert_eq!(server["status"]["node"], agent.node.as_str());
    assert_eq!(
        server["status"]["message"],
        format!("running on node {}", agent.node)
    );
    assert_eq!(
        server["status"]["observedGeneration"],
        server["metadata"]["generation"]
    );
    let ready = server["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap();
    assert_eq!(ready["status"], "True");
    assert!(
        server["metadata"]["finalizers"]
            .as_array()
            .unwrap()
            .contains(&"computeserver.io/container".into())
    );

    let container = inspect(&format!("csrv.{}.box", ns.name)).expect("container exists");
    assert_eq!(container["Id"], server["status"]["containerID"]);
    let host = &container["HostConfig"];
    assert_eq!(host["Memory"], 64 << 20, "the profile's default memory");
    assert_eq!(host["NanoCpus"], 250_000_000, "the profile's default CPU");
    assert!(host["PidsLimit"].as_i64().unwrap() > 0, "a pids limit is set");
    assert_eq!(host["CapDrop"], serde_json::json!(["ALL"]));
    let added: Vec<&str> = host["CapAdd"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    for dangerous in ["SYS_ADMIN", "NET_ADMIN", "NET_RAW", "SYS_PTRACE", "MKNOD"] {
        assert!(
            !added.iter().any(|c| c.ends_with(dangerous)),
            "{dangerous} must not be granted: {added:?}"
        );
    }
    assert_eq!(host["SecurityOpt"], serde_json::json!(["no-new-privileges"]));
    assert_eq!(host["Privileged"], false);
    assert!(host["Binds"].is_null(), "no host mounts");
    // The rest of the CIS Docker Benchmark's section 5 that applies (see README "Isolation").
    assert_eq!(
        host["NetworkMode"], "compute-server",
        "5.29: not Docker's default bridge, not the host's network"
    );
    for (mode, what) in [("PidMode", "5.15"), ("UTSMode", "5.20"), ("UsernsMode", "5.30")] {
        assert_eq!(host[mode], "", "{what}: {mode} is not the host's");
    }
    assert_ne!(host["IpcMode"], "host", "5.16");
    assert!(
        host["Devices"].as_array().is_none_or(|d| d.is_empty()),
        "5.17: no host devices"
    );
    assert_eq!(
        host["Init"], true,
        "an init process reaps zombies and passes signals on"
    );
    assert_eq!(
        host["RestartPolicy"]["Name"], "no",
        "the tiny profile asks for no restarts"
    );
    assert!(
        !host["SecurityOpt"].to_string().contains("unconfined"),
        "5.21: the default seccomp profile stays"
    );
    let mounts = container["Mounts"].as_array().unwrap();
    assert_eq!(mounts.len(), 1);
    assert_eq!(
        (mounts[0]["Type"].as_str(), mounts[0]["Destination"].as_str()),
        (Some("volume"), Some("/home"))
    );
    let labels = &container["Config"]["Labels"];
    assert_eq!(labels["computeserver.io/uid"], server["metadata"]["uid"]);
    assert_eq!(labels["computeserver.io/name"], "box");
    assert_eq!(labels["computeserver.io/namespace"], ns.name.as_str());
    assert_eq!(labels["computeserver.io/owner"], "alice");
    assert_eq!(labels["app.kubernetes.io/managed-by"], "compute-server");
    assert!(
        container["Config"]["Env"]
            .as_array()
            .unwrap()
            .contains(&"GREETING=hi".into())
    );

    let seen = events(&ns.name, "box");
    assert!(seen.contains("Created") && seen.contains("Started"), "{seen}");
}

#[test]
fn stop_start_and_delete() {
    install_crds();
    let ns = TestNamespace::new("agent-life");
    let agent = Agent::start(&unique("node"));
    let container = format!("csrv.{}.life", ns.name);
    apply_server(&ns.name, "life", &agent.node, SLEEPER);
    wait_phase(&ns.name, "life", "Running");

    // Data written to the volume survives a change that recreates the container.
    assert!(
        docker_cli(&["exec", &container, "sh", "-c", "echo kept > /home/note"])
            .status
            .success()
    );
    apply_server(
        &ns.name,
        "life",
        &agent.node,
        "owner: alice\nprofile: tiny\ncommand: [sleep, infinity]\nresources: {memory: 128Mi}",
    );
    eventually("the container to be recreated with 128Mi", 60, || {
        inspect(&container)
            .filter(|c| c["HostConfig"]["Memory"] == 128 << 20 && c["State"]["Running"] == true)
    });
    let note = docker_cli(&["exec", &container, "cat", "/home/note"]);
    assert_eq!(
        String::from_utf8_lossy(&note.stdout),
        "kept\n",
        "the data volume outlives the container"
    );

    kubectl_ok(
        &[
            "patch",
            "csrv",
            "-n",
            &ns.name,
            "life",
            "--type=merge",
            "-p",
            r#"{"spec":{"running":false}}"#,
        ],
        None,
    );
    let stopped = wait_phase(&ns.name, "life", "Stopped");
    assert!(
        stopped["status"]["message"]
            .as_str()
            .unwrap()
            .contains("set spec.running to true")
    );
    assert_eq!(
        inspect(&container).expect("kept while stopped")["State"]["Running"],
        false
    );

    kubectl_ok(
        &[
            "patch",
            "csrv",
            "-n",
            &ns.name,
            "life",
            "--type=merge",
            "-p",
            r#"{"spec":{"running":true}}"#,
        ],
        None,
    );
    wait_phase(&ns.name, "life", "Running");
    assert_eq!(
        String::from_utf8_lossy(&docker_cli(&["exec", &container, "cat", "/home/note"]).stdout),
        "kept\n"
    );

    kubectl_ok(&["delete", "csrv", "-n", &ns.name, "life", "--timeout=60s"], None);
    assert!(
        inspect(&container).is_none(),
        "the container is removed with the server"
    );
    let volumes = docker_cli(&[
        "volume",
        "ls",
        "-q",
        "--filter",
        &format!("name={container}.data"),
    ]);
    assert_eq!(
        String::from_utf8_lossy(&volumes.stdout).trim(),
        "",
        "the data volume is removed with the server"
    );
}

/// The CPU quota the container's cgroup holds it to, seen from inside: "QUOTA PERIOD" in
/// microseconds, as cgroup v2's `cpu.max` (or v1's `cpu.cfs_quota_us` and `cpu.cfs_period_us`).
fn cpu_max(container: &str) -> String {
    let read = "cat /sys/fs/cgroup/cpu.max 2>/dev/null || \
                echo $(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us) $(cat /sys/fs/cgroup/cpu/cpu.cfs_period_us)";
    let out = docker_cli(&["exec", container, "sh", "-c", read]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn a_small_server_starts_with_room_and_is_running_only_once_held_to_its_own_quota() {
    install_crds();
    let ns = TestNamespace::new("agent-quota");
    let agent = Agent::start(&unique("node"));
    let container = format!("csrv.{}.small", ns.name);
    let spec = "owner: alice\nimage: computeserver/busybox:local\ncommand: [sleep, infinity]\n\
                resources: {cpu: 10m, memory: 32Mi}";
    apply_server(&ns.name, "small", &agent.node, spec);
    // 10m: 1,000 us of every 100,000, as soon as the status says Running.
    wait_phase(&ns.name, "small", "Running");
    assert_eq!(cpu_max(&container), "1000 100000");
    assert_eq!(inspect(&container).unwrap()["HostConfig"]["NanoCpus"], 10_000_000);

    // Stopped and started again: the same.
    for running in [false, true] {
        kubectl_ok(
            &[
                "patch",
                "csrv",
                "-n",
                &ns.name,
                "small",
                "--type=merge",
                "-p",
                &format!(r#"{{"spec":{{"running":{running}}}}}"#),
            ],
            None,
        );
        wait_phase(&ns.name, "small", if running { "Running" } else { "Stopped" });
    }
    assert_eq!(cpu_max(&container), "1000 100000");
}

#[test]
fn asking_for_more_than_the_profile_allows_is_refused_and_nothing_runs() {
    install_crds();
    let ns = TestNamespace::new("agent-refuse");
    let agent = Agent::start(&unique("node"));
    apply_server(
        &ns.name,
        "big",
        &agent.node,
        "owner: alice\nprofile: tiny\nresources: {memory: 1Gi}",
    );
    let server = wait_phase(&ns.name, "big", "Failed");
    assert_eq!(
        server["status"]["message"],
        "memory 1Gi is more than profile \"tiny\" allows (256Mi); ask for less"
    );
    assert!(events(&ns.name, "big").contains("Refused"));
    assert!(
        inspect(&format!("csrv.{}.big", ns.name)).is_none(),
        "no container for a refused server"
    );

    apply_server(
        &ns.name,
        "nope",
        &agent.node,
        "owner: alice\nprofile: no-such-profile",
    );
    let server = wait_phase(&ns.name, "nope", "Failed");
    assert!(
        server["status"]["message"]
            .as_str()
            .unwrap()
            .starts_with("profile \"no-such-profile\" does not exist")
    );
}

#[test]
fn a_container_removed_by_hand_comes_back() {
    install_crds();
    let ns = TestNamespace::new("agent-drift");
    let agent = Agent::start(&unique("node"));
    let container = format!("csrv.{}.drift", ns.name);
    apply_server(&ns.name, "drift", &agent.node, SLEEPER);
    let first = wait_phase(&ns.name, "drift", "Running")["status"]["containerID"].clone();
    assert!(docker_cli(&["rm", "-f", &container]).status.success());
    // Docker is not watched: the agent finds the drift on its periodic resync (30 s).
    let again = eventually("a new container", 90, || {
        server_json(&ns.name, "drift")
            .filter(|s| s["status"]["phase"] == "Running" && s["status"]["containerID"] != first)
    });
    let seen = events(&ns.name, "drift");
    assert!(
        seen.contains("Recreated") && seen.contains("removed outside compute-server"),
        "{seen}"
    );
    let count = docker_cli(&[
        "ps",
        "-aq",
        "--filter",
        &format!(
            "label=computeserver.io/uid={}",
            again["metadata"]["uid"].as_str().unwrap()
        ),
    ]);
    assert_eq!(
        String::from_utf8_lossy(&count.stdout).lines().count(),
        1,
        "exactly one container"
    );
}

#[test]
fn alice_logs_in_to_her_debian_server_with_her_key() {
    install_crds();
    let ns = TestNamespace::new("agent-ssh");
    let agent = Agent::start(&unique("node"));
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = support::ssh_keypair(dir.path(), "alice@laptop");
    apply_server(
        &ns.name,
        "dev",
        &agent.node,
        &format!(
            "owner: alice\nprofile: debian\nsshAuthorizedKeys: [\"{}\"]",
            public
        ),
    );
    let server = wait_phase(&ns.name, "dev", "Running");
    let endpoint = &server["status"]["endpoints"][0];
    assert_eq!(endpoint["name"], "ssh");
    let port = endpoint["port"].as_i64().unwrap().to_string();
    let host = endpoint["host"].as_str().unwrap();

    let out = eventually("ssh to work", 30, || {
        let out = support::ssh(&key, host, &port, "hostname; id -un");
        out.status.success().then_some(out)
    });
    assert_eq!(String::from_utf8_lossy(&out.stdout), "dev\nroot\n");
}

#[test]
fn the_agent_registers_its_node_and_reports_in() {
    install_crds();
    let ns = TestNamespace::new("agent-node");
    let agent = Agent::start(&unique("node"));
    apply_server(
        &ns.name,
        "a",
        &agent.node,
        "owner: alice\nprofile: tiny\ncommand: [sleep, infinity]\nresources: {cpu: 500m, memory: 128Mi}",
    );
    wait_phase(&ns.name, "a", "Running");

    let cores = std::thread::available_parallelism().unwrap().get().to_string();
    let node = eventually("the ComputeNode to count the server", 40, || {
        let out = kubectl(&["get", "computenode", &agent.node, "-o", "json"], None);
        let node: Value = serde_json::from_slice(&out.stdout).ok()?;
        (node["status"]["servers"] == 1).then_some(node)
    });
    let status = &node["status"];
    assert_eq!(
        status["capacity"]["cpu"],
        cores.as_str(),
        "capacity from Docker's info"
    );
    assert!(status["capacity"]["memory"].as_str().unwrap().ends_with("Mi"));
    assert_eq!(status["allocated"]["cpu"], "500m");
    assert_eq!(status["allocated"]["memory"], "128Mi");
    assert!(status["dockerVersion"].as_str().is_some_and(|v| !v.is_empty()));
    let ready = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap();
    assert_eq!(ready["status"], "True");

    let table = kubectl_ok(&["get", "computenodes", &agent.node], None);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME", "CPU", "MEMORY", "CPU", "RATIO", "CPU", "USED", "MEM", "RATIO", "MEMORY", "USED",
            "SERVERS", "READY", "AGE"
        ]
    );
    assert!(table.lines().nth(1).unwrap().contains("500m"), "{table}");

    // The heartbeat: a Lease renewed while the agent runs.
    let lease = format!("computenode-{}", agent.node);
    let renew = || {
        kubectl_ok(
            &[
                "get",
                "lease",
                "-n",
                "compute",
                &lease,
                "-o",
                "jsonpath={.spec.renewTime}",
            ],
            None,
        )
    };
    let first = renew();
    assert_eq!(
        kubectl_ok(
            &[
                "get",
                "lease",
                "-n",
                "compute",
                &lease,
                "-o",
                "jsonpath={.spec.holderIdentity}"
            ],
            None
        ),
        agent.node
    );
    eventually("the Lease to be renewed", 30, || (renew() != first).then_some(()));

    // An admin's cordon survives the agent's next reports.
    kubectl_ok(
        &[
            "patch",
            "computenode",
            &agent.node,
            "--type=merge",
            "-p",
            r#"{"spec":{"unschedulable":true}}"#,
        ],
        None,
    );
    let renewed = renew();
    eventually("another report", 30, || (renew() != renewed).then_some(()));
    let cordoned = kubectl_ok(
        &[
            "get",
            "computenode",
            &agent.node,
            "-o",
            "jsonpath={.spec.unschedulable}",
        ],
        None,
    );
    assert_eq!(cordoned, "true");
}

/// A container and a data volume of ours on `node` for a server (uid) the API server does not know.
fn orphan(node: &str, ns: &str, name: &str, uid: &str) -> (String, String) {
    let labels = [
        "app.kubernetes.io/managed-by=compute-server".to_string(),
        format!("computeserver.io/node={node}"),
        format!("computeserver.io/uid={uid}"),
        format!("computeserver.io/namespace={ns}"),
        format!("computeserver.io/name={name}"),
    ];
    let container = format!("csrv.{ns}.{name}");
    let volume = format!("{container}.{uid}.data");
    let label_args: Vec<&str> = labels.iter().flat_map(|l| ["--label", l.as_str()]).collect();
    let mut args = vec!["volume", "create"];
    args.extend(&label_args);
    args.push(&volume);
    assert!(docker_cli(&args).status.success());
    let mount = format!("{volume}:/home");
    let mut args = vec!["create", "--name", &container, "-v", &mount];
    args.extend(&label_args);
    args.extend(["computeserver/busybox:local", "sleep", "infinity"]);
    assert!(docker_cli(&args).status.success());
    (container, volume)
}

fn volume_exists(volume: &str) -> bool {
    docker_cli(&["volume", "inspect", volume]).status.success()
}

fn orphans_listed(node: &str) -> Value {
    let out = kubectl_ok(
        &[
            "get",
            "computenode",
            node,
            "-o",
            "jsonpath={.status.orphanedVolumes}",
        ],
        None,
    );
    serde_json::from_str(if out.is_empty() { "[]" } else { &out }).unwrap()
}

#[test]
fn containers_whose_server_is_gone_are_removed_their_data_kept_until_pruned() {
    install_crds();
    let ns = TestNamespace::new("agent-orphan");
    let agent = Agent::start(&unique("node"));
    // A live server: the API server does know this node's servers.
    apply_server(&ns.name, "live", &agent.node, SLEEPER);
    wait_phase(&ns.name, "live", "Running");
    let uid = "00000000-0000-0000-0000-000000000001";
    let (container, volume) = orphan(&agent.node, &ns.name, "gone", uid);
    // Another node's container is not this agent's business.
    let (foreign, foreign_volume) = orphan(&format!("other-{}", agent.node), "foreign", &agent.node, uid);

    eventually("the orphaned container to be removed", 40, || {
        inspect(&container).is_none().then_some(())
    });
    assert!(volume_exists(&volume), "its data volume is kept");
    let listed = eventually("the volume to be listed on the ComputeNode", 40, || {
        let listed = orphans_listed(&agent.node);
        (listed.as_array().unwrap().len() == 1).then_some(listed)
    });
    assert_eq!(listed[0]["volume"], volume.as_str());
    assert_eq!(
        (listed[0]["server"].as_str(), listed[0]["namespace"].as_str()),
        (Some("gone"), Some(ns.name.as_str()))
    );
    assert_eq!(listed[0]["uid"], uid);
    assert!(listed[0]["orphanedSince"].is_string());
    assert_eq!(
        support::metric(&agent.health_url, "compute_server_agent_orphaned_volumes"),
        1
    );
    assert!(
        inspect(&foreign).is_some(),
        "a container of another node was touched"
    );

    // prune: not yet (orphaned just now), then, once it is old enough, that volume and no other.
    let prune = |older_than: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_compute-server"))
            .args([
                "agent",
                "prune",
                "--node",
                &agent.node,
                "--older-than",
                older_than,
            ])
            .env("KUBECONFIG", support::Stack::get().kubeconfig())
            .env("DOCKER_HOST", support::Stack::get().docker_host())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let said = prune("1h");
    assert!(
        said.contains("removed 0 orphaned volume(s)") && said.contains("kept 1"),
        "{said}"
    );
    assert!(volume_exists(&volume));
    let two_days_ago = (jiff::Timestamp::now() - jiff::SignedDuration::from_hours(48)).to_string();
    let patch = serde_json::json!({"status": {"orphanedVolumes": [{
        "volume": volume, "server": "gone", "namespace": ns.name, "uid": uid, "orphanedSince": two_days_ago,
    }]}});
    kubectl_ok(
        &[
            "patch",
            "computenode",
            &agent.node,
            "--subresource=status",
            "--type=merge",
            "-p",
            &patch.to_string(),
        ],
        None,
    );
    let said = prune("1d");
    assert!(
        said.contains(&format!(
            "removed volume {volume} of server {}/gone (uid {uid})",
            ns.name
        )),
        "{said}"
    );
    assert!(!volume_exists(&volume));
    assert!(volume_exists(&foreign_volume), "another node's volume was pruned");
    assert!(docker_cli(&["rm", "-f", &foreign]).status.success());
    assert!(docker_cli(&["volume", "rm", &foreign_volume]).status.success());
}

#[test]
fn an_agent_that_sees_none_of_its_servers_removes_nothing_and_says_so() {
    install_crds();
    let agent = Agent::start(&unique("node"));
    let (container, volume) = orphan(
        &agent.node,
        "restored",
        "thesis",
        "00000000-0000-0000-0000-000000000002",
    );
    eventually("the held sweep to show", 40, || {
        (support::metric(&agent.health_url, "compute_server_agent_sweep_held") == 1).then_some(())
    });
    // Two more heartbeats (every 10 s): still nothing removed.
    std::thread::sleep(std::time::Duration::from_secs(21));
    assert!(
        inspect(&container).is_some(),
        "a container was removed on an empty API server"
    );
    assert!(volume_exists(&volume));
    assert_eq!(orphans_listed(&agent.node)[0]["volume"], volume.as_str());
    let log = std::fs::read_to_string(
        concat!(env!("CARGO_MANIFEST_DIR"), "/target/test-logs/agent-").to_string() + &agent.node + ".log",
    )
    .unwrap();
    assert!(
        log.contains("ERROR") && log.contains("empty or restored cluster"),
        "{log}"
    );
    drop(agent);
    assert!(docker_cli(&["rm", "-f", &container]).status.success());
    assert!(docker_cli(&["volume", "rm", &volume]).status.success());
}

#[test]
fn an_agent_killed_mid_create_adopts_its_container_after_restart() {
    install_crds();
    let ns = TestNamespace::new("agent-kill");
    let node = unique("node");
    let container = format!("csrv.{}.k", ns.name);
    let mut agent = Agent::start(&node);
    apply_server(&ns.name, "k", &node, SLEEPER);
    // SIGKILL as soon as the container exists: before (or while) the status is written.
    eventually("the container to appear", 60, || inspect(&container).map(|_| ()));
    agent.kill();
    let agent = Agent::start(&node);
    let server = wait_phase(&ns.name, "k", "Running");
    let uid = server["metadata"]["uid"].as_str().unwrap();
    let all = docker_cli(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=computeserver.io/uid={uid}"),
    ]);
    assert_eq!(
        String::from_utf8_lossy(&all.stdout).lines().count(),
        1,
        "exactly one container after the restart"
    );
    assert_eq!(
        inspect(&container).unwrap()["Id"],
        server["status"]["containerID"]
    );
    drop(agent);
}

#[tokio::test]
async fn metrics_and_health_endpoints_answer() {
    install_crds();
    let ns = TestNamespace::new("agent-metrics");
    let agent = Agent::start(&unique("node"));
    apply_server(&ns.name, "m", &agent.node, SLEEPER);
    tokio::task::spawn_blocking({
        let ns = ns.name.clone();
        move || wait_phase(&ns, "m", "Running")
    })
    .await
    .unwrap();
    let get = |path: &str| {
        let url = format!("{}{path}", agent.health_url);
        async move {
            let response = reqwest::get(url).await.expect("the agent answers");
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };
    assert_eq!(get("/healthz").await, (200, "ok".to_string()));
    assert_eq!(get("/readyz").await.0, 200);
    let (status, text) = get("/metrics").await;
    assert_eq!(status, 200);
    assert!(text.contains("compute_server_agent_reconciles_total"), "{text}");
    assert!(
        text.contains("compute_server_agent_reconcile_duration_seconds_bucket"),
        "{text}"
    );
    let running = "compute_server_agent_servers{phase=\"Running\"} 1";
    let text = support::eventually_async("the heartbeat to count the server", 60, || async {
        let (_, text) = get("/metrics").await;
        text.contains(running).then_some(text)
    })
    .await;
    assert!(text.contains(running));
}

#[test]
fn an_image_that_cannot_be_pulled_fails_with_the_reason() {
    install_crds();
    let ns = TestNamespace::new("agent-pull");
    let agent = Agent::start(&unique("node"));
    // A registry that does not answer (a closed port on loopback), as for a typo in its name.
    apply_server(
        &ns.name,
        "p",
        &agent.node,
        "owner: alice\nimage: 127.0.0.1:9/nobody/nothing:1",
    );
    let server = wait_phase(&ns.name, "p", "Failed");
    let message = server["status"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("could not pull image 127.0.0.1:9/nobody/nothing:1: "),
        "{message}"
    );
    assert!(
        message.len() > "could not pull image 127.0.0.1:9/nobody/nothing:1: ".len() + 5,
        "the registry's reason: {message}"
    );
    let seen = events(&ns.name, "p");
    assert!(seen.contains("Pulling"), "{seen}");
}

#[test]
fn a_server_deleted_while_its_container_is_made_leaves_nothing_behind() {
    install_crds();
    let ns = TestNamespace::new("agent-race");
    let agent = Agent::start(&unique("node"));
    for i in 0..3 {
        let name = format!("r{i}");
        apply_server(&ns.name, &name, &agent.node, SLEEPER);
        // Delete at once, while the agent is adding its finalizer or making the container.
        kubectl_ok(&["delete", "csrv", "-n", &ns.name, &name, "--wait=false"], None);
    }
    for i in 0..3 {
        let name = format!("r{i}");
        eventually(&format!("{name} to be gone"), 60, || {
            server_json(&ns.name, &name).is_none().then_some(())
        });
        let container = format!("csrv.{}.{name}", ns.name);
        // A pass already under way may finish creating just after the delete; the finalizer's
        // cleanup or the orphan sweep must still remove it.
        eventually(&format!("no container for {name}"), 30, || {
            inspect(&container).is_none().then_some(())
        });
    }
}

#[test]
fn docker_stopped_and_started_again_is_reported_and_recovered_from() {
    install_crds();
    let ns = TestNamespace::new("agent-dockerd");
    // Node engine 2 is this test's own: stopping it disturbs no other test.
    let agent = Agent::start_with(&unique("restart"), 2, &["--lease-seconds", "8"]);
    apply_server(&ns.name, "steady", &agent.node, SLEEPER);
    let before = wait_phase(&ns.name, "steady", "Running");
    let stack = support::Stack::get();

    stack.node_docker(2, false);
    let failed = eventually("the server to say Docker is gone", 60, || {
        server_json(&ns.name, "steady").filter(|s| {
            s["status"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("does not answer"))
        })
    });
    assert_eq!(failed["status"]["phase"], "Failed");
    let message = failed["status"]["message"].as_str().unwrap();
    assert!(
        message.starts_with(&format!("Docker on node {} does not answer", agent.node)),
        "{message}"
    );
    eventually("the node to be not Ready", 30, || {
        let out = kubectl(&["get", "computenode", &agent.node, "-o", "json"], None);
        let node: Value = serde_json::from_slice(&out.stdout).ok()?;
        node["status"]["conditions"]
            .as_array()?
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "False" && c["reason"] == "DockerUnreachable")
            .then_some(())
    });

    // Docker comes back: the agent notices by itself and the same container runs again, with
    // an Event that says the engine restarted (not that someone stopped it).
    stack.node_docker(2, true);
    let back = wait_phase(&ns.name, "steady", "Running");
    assert_eq!(back["status"]["containerID"], before["status"]["containerID"]);
    let seen = events(&ns.name, "steady");
    assert!(
        seen.contains("HostRestarted") && seen.contains("the node's Docker engine restarted"),
        "{seen}"
    );
    assert!(!seen.contains("stopped outside compute-server"), "{seen}");

    // Someone's `docker stop` is another matter: started again, with a warning.
    let container = back["status"]["containerID"].as_str().unwrap().to_string();
    let engine = stack.node_docker_host(2).to_string();
    let stopped = std::process::Command::new("docker")
        .args(["stop", "-t", "1", &container])
        .env("DOCKER_HOST", &engine)
        .output()
        .unwrap();
    assert!(
        stopped.status.success(),
        "{}",
        String::from_utf8_lossy(&stopped.stderr)
    );
    // Docker is not watched: the agent finds it on its periodic resync (30 s).
    let warned = eventually("a warning that it was stopped by hand", 90, || {
        let seen = events(&ns.name, "steady");
        seen.lines()
            .any(|l| l.contains("Warning") && l.contains("stopped outside compute-server"))
            .then_some(seen)
    });
    assert!(warned.contains("Restarted"), "{warned}");
    let again = wait_phase(&ns.name, "steady", "Running");
    assert_eq!(again["status"]["containerID"], before["status"]["containerID"]);
}

#[test]
fn a_stopped_servers_network_is_kept_by_uninstall_and_a_removed_one_is_healed_on_start() {
    use std::process::Command;
    install_crds();
    let ns = TestNamespace::new("agent-net");
    // Local node 2's engine, on the closed network, which few other tests use.
    let profile = support::TestProfile::new("closed", "egress: None");
    let agent = Agent::start_with(&unique("node"), 2, &[]);
    let engine = support::Stack::get().node_docker_host(2).to_string();
    let docker = |args: &[&str]| {
        Command::new("docker")
            .args(args)
            .env("DOCKER_HOST", &engine)
            .output()
            .unwrap()
    };
    let container = format!("csrv.{}.kept", ns.name);
    apply_server(
        &ns.name,
        "kept",
        &agent.node,
        &format!("owner: alice\nprofile: {}", profile.name),
    );
    wait_phase(&ns.name, "kept", "Running");
    assert!(
        docker(&["exec", &container, "sh", "-c", "echo kept > /home/note"])
            .status
            .success()
    );
    let running = |on: bool| {
        let patch = format!("{{\"spec\":{{\"running\":{on}}}}}");
        kubectl_ok(
            &[
                "patch",
                "csrv",
                "-n",
                &ns.name,
                "kept",
                "--type=merge",
                "-p",
                &patch,
            ],
            None,
        );
    };
    running(false);
    wait_phase(&ns.name, "kept", "Stopped");

    // uninstall removes nothing while a server's container is on the engine, even stopped.
    let out = Command::new(env!("CARGO_BIN_EXE_compute-server"))
        .args(["agent", "uninstall", "--docker-host", &engine])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("still on this engine, running or stopped") && said.contains(&container),
        "{said}"
    );
    assert!(said.contains("nothing was removed"), "{said}");
    assert!(
        docker(&["network", "inspect", "compute-server-closed"])
            .status
            .success()
    );

    // Removed by hand all the same: starting the server again recreates its container on the
    // network the agent puts back, with its data.
    let removed = docker(&["network", "rm", "compute-server-closed"]);
    assert!(
        removed.status.success(),
        "{}",
        String::from_utf8_lossy(&removed.stderr)
    );
    running(true);
    let server = wait_phase(&ns.name, "kept", "Running");
    assert_eq!(server["status"]["phase"], "Running");
    let note = docker(&["exec", &container, "cat", "/home/note"]);
    assert_eq!(String::from_utf8_lossy(&note.stdout), "kept\n");
    let events = events(&ns.name, "kept");
    assert!(
        events.contains("its Docker network was removed while it was stopped"),
        "{events}"
    );
    drop(agent);
}
