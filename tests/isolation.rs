//! The walls between users on a node, on the real stack: exact limits (what `docker inspect`
//! shows), sizes refused at the API server, closed networks (tried from inside a server with
//! real connections), ports on one address, data volumes that belong to one server, and
//! programs that end without a restart loop.

mod support;

use compute_server::api::size;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde_json::Value;
use support::{
    Agent, Stack, TestNamespace, docker_cli, eventually, install_crds, kubectl, kubectl_ok, server_json,
    unique, wait_phase,
};

/// Applies a ComputeServer pinned to `node`, with the given spec lines.
fn apply_server(ns: &str, name: &str, node: &str, spec: &str) {
    let yaml = server_yaml(ns, name, node, spec);
    kubectl_ok(&["apply", "-f", "-"], Some(&yaml));
}

fn server_yaml(ns: &str, name: &str, node: &str, spec: &str) -> String {
    format!(
        "apiVersion: computeserver.io/v1alpha1\nkind: ComputeServer\nmetadata:\n  name: {name}\n  namespace: {ns}\n  \
         labels: {{computeserver.io/node: {node}}}\nspec:\n{}",
        spec.lines().map(|l| format!("  {l}\n")).collect::<String>()
    )
}

fn profiles() {
    let profiles = concat!(env!("CARGO_MANIFEST_DIR"), "/manifests/examples/profiles.yaml");
    kubectl_ok(&["apply", "-f", profiles], None);
}

/// `docker` on local engine `n`.
fn docker_on(n: usize, args: &[&str]) -> std::process::Output {
    std::process::Command::new("docker")
        .args(args)
        .env("DOCKER_HOST", Stack::get().node_docker_host(n))
        .output()
        .expect("run docker")
}

fn inspect_on(n: usize, container: &str) -> Option<Value> {
    let out = docker_on(n, &["inspect", container]);
    out.status
        .success()
        .then(|| serde_json::from_slice::<Value>(&out.stdout).unwrap()[0].clone())
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn sizes_become_exact_limits() {
    install_crds();
    profiles();
    let ns = TestNamespace::new("iso-size");
    let agent = Agent::start(&unique("node"));
    for (name, resources, nano, bytes) in [
        (
            "half",
            "{cpu: 250m, memory: 0.5Gi}",
            250_000_000i64,
            536_870_912i64,
        ),
        (
            "more",
            "{cpu: '1.5', memory: 1536Mi}",
            1_500_000_000,
            1_610_612_736,
        ),
        (
            "quarter",
            "{cpu: '0.5', memory: 0.25Gi}",
            500_000_000,
            268_435_456,
        ),
    ] {
        apply_server(
            &ns.name,
            name,
            &agent.node,
            &format!(
                "owner: alice\nimage: computeserver/busybox:local\ncommand: [sleep, infinity]\nresources: {resources}"
            ),
        );
        wait_phase(&ns.name, name, "Running");
        let container = support::inspect(&format!("csrv.{}.{name}", ns.name)).unwrap();
        let host = &container["HostConfig"];
        assert_eq!(host["NanoCpus"], nano, "{name}: {resources}");
        assert_eq!(host["Memory"], bytes, "{name}: {resources}");
        assert_eq!(host["MemorySwap"], bytes, "{name}: no swap beyond the limit");
        assert_eq!(host["PidsLimit"], 1024, "{name}");
    }
    // What the node reports is the exact sum, once its next heartbeat has counted all three.
    eventually("the node to report 2250m and 2304Mi allocated", 30, || {
        let node = kubectl_ok(
            &[
                "get",
                "computenode",
                &agent.node,
                "-o",
                "jsonpath={.status.allocated}",
            ],
            None,
        );
        let allocated: Value = serde_json::from_str(&node).ok()?;
        (allocated["cpu"] == "2250m" && allocated["memory"] == "2304Mi").then_some(())
    });
}

#[test]
fn sizes_that_mean_no_limit_are_refused_at_the_api_server_and_nothing_is_stored() {
    install_crds();
    let ns = TestNamespace::new("iso-refuse");
    for (resources, rule) in [
        ("{cpu: 0.4n}", size::CPU_TOO_SMALL),
        ("{cpu: 1m}", size::CPU_TOO_SMALL),
        ("{cpu: 5000}", size::CPU_TOO_BIG),
        ("{memory: '100'}", size::MEMORY_TOO_SMALL),
        ("{memory: 100}", size::MEMORY_TOO_SMALL),
        ("{memory: 0.25Ki}", size::MEMORY_TOO_SMALL),
        ("{memory: 8Ei}", size::MEMORY_TOO_BIG),
        ("{memory: 2 GB}", size::MEMORY_NOT_A_QUANTITY),
    ] {
        let yaml = server_yaml(
            &ns.name,
            "bad",
            "nowhere",
            &format!("owner: alice\nprofile: tiny\nresources: {resources}"),
        );
        let out = kubectl(&["create", "-f", "-"], Some(&yaml));
        assert!(!out.status.success(), "{resources} was accepted");
        assert!(text(&out).contains(rule), "{resources}: {}", text(&out));
        assert!(
            server_json(&ns.name, "bad").is_none(),
            "{resources}: nothing is stored"
        );
    }
    let out = kubectl(
        &["create", "-f", "-"],
        Some(&server_yaml(
            &ns.name,
            "bad",
            "nowhere",
            "owner: alice\nimage: ubuntu latest",
        )),
    );
    assert!(
        !out.status.success() && text(&out).contains("must be a container image reference"),
        "{}",
        text(&out)
    );
}

/// The API server's rules and the agent's exact parser agree on what is a size: every one of
/// these is either refused by both or accepted by both (as a dry run: nothing is stored).
#[test]
fn the_api_server_and_the_agent_agree_on_every_size() {
    install_crds();
    let ns = TestNamespace::new("iso-agree");
    let cpus = [
        "10m",
        "9m",
        "0.01",
        "0.0099",
        "1",
        "4096",
        "4096.001",
        "4097",
        "1e3",
        "1e4",
        "250m",
        "9999999n",
        "10000000n",
    ];
    let memories = [
        "6Mi", "6291455", "6291456", "6Mi", "5.99Mi", "0.5Gi", "1.5Gi", "64Ti", "64.001Ti", "65Ti", "8Ei",
        "6e6", "7e6", "2G", "1.5e9",
    ];
    for (what, values) in [("cpu", &cpus[..]), ("memory", &memories[..])] {
        for value in values {
            let yaml = server_yaml(
                &ns.name,
                "probe",
                "nowhere",
                &format!("owner: alice\nimage: busybox\nresources: {{{what}: '{value}'}}"),
            );
            let api = kubectl(&["create", "--dry-run=server", "-f", "-"], Some(&yaml))
                .status
                .success();
            let quantity = Quantity(value.to_string());
            let agent = match what {
                "cpu" => size::nano_cpus(&quantity).is_ok(),
                _ => size::memory_bytes(&quantity).is_ok(),
            };
            assert_eq!(
                api, agent,
                "{what} {value}: API server accepts: {api}, agent accepts: {agent}"
            );
        }
    }
}

/// From inside a server: another server's port and a listener on the node are out of reach,
/// on the main engine (Docker manages iptables) and on node 2 (Docker's iptables off).
#[test]
fn servers_reach_neither_each_other_nor_the_node() {
    install_crds();
    profiles();
    let ns = TestNamespace::new("iso-net");
    // A listener on the node, on every address, as a database or the kubelet would be.
    let listener = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let node_port = listener.local_addr().unwrap().port().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            use std::io::Write;
            let _ = (&stream).write_all(b"node-secret\n");
        }
    });
    for daemon in [1, 2] {
        let agent = Agent::start_with(&unique("node"), daemon, &[]);
        let (bob, alice) = (format!("bob{daemon}"), format!("alice{daemon}"));
        apply_server(
            &ns.name,
            &bob,
            &agent.node,
            "owner: bob\nprofile: tiny\ncommand: [sh, -c, 'echo bob-secret > /tmp/index.html; exec httpd -f -p 8000 -h /tmp']",
        );
        apply_server(&ns.name, &alice, &agent.node, "owner: alice\nprofile: tiny");
        wait_phase(&ns.name, &bob, "Running");
        wait_phase(&ns.name, &alice, "Running");
        let bob_container = inspect_on(daemon, &format!("csrv.{}.{bob}", ns.name)).unwrap();
        let network = &bob_container["NetworkSettings"]["Networks"]["compute-server"];
        let bob_ip = network["IPAddress"]
            .as_str()
            .expect("bob is on the compute-server network")
            .to_string();
        let gateway = network["Gateway"].as_str().unwrap().to_string();
        assert_eq!(bob_container["HostConfig"]["NetworkMode"], "compute-server");

        // The node itself reaches both: so a refusal below is the wall, not a broken setup.
        let fetch = |host: &str, port: &str| {
            let out = std::process::Command::new("curl")
                .args([
                    "-s",
                    "--max-time",
                    "5",
                    &format!("http://{host}:{port}/index.html"),
                ])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        eventually("bob's web server to answer the node", 20, || {
            fetch(&bob_ip, "8000").contains("bob-secret").then_some(())
        });
        let mut control = std::net::TcpStream::connect((gateway.as_str(), node_port.parse::<u16>().unwrap()))
            .expect("the node reaches its own listener on the servers' gateway address");
        let mut greeting = String::new();
        use std::io::Read;
        let _ = control.read_to_string(&mut greeting);
        assert!(greeting.contains("node-secret"), "{greeting}");

        let alice_container = format!("csrv.{}.{alice}", ns.name);
        let from_alice = |host: &str, port: &str| {
            text(&docker_on(
                daemon,
                &[
                    "exec",
                    &alice_container,
                    "sh",
                    "-c",
                    &format!("echo GET / | nc -w 3 {host} {port}; echo rc=$?"),
                ],
            ))
        };
        let to_bob = from_alice(&bob_ip, "8000");
        assert!(
            !to_bob.contains("bob-secret") && !to_bob.contains("rc=0"),
            "alice reached bob: {to_bob}"
        );
        let to_node = from_alice(&gateway, &node_port);
        assert!(
            !to_node.contains("node-secret") && !to_node.contains("rc=0"),
            "alice reached the node: {to_node}"
        );
    }
}

#[test]
fn ports_are_published_on_the_publish_address_only_and_endpoints_say_so() {
    install_crds();
    profiles();
    let ns = TestNamespace::new("iso-ports");
    let agent = Agent::start_with(&unique("node"), 1, &["--address", "127.0.0.1"]);
    apply_server(
        &ns.name,
        "web",
        &agent.node,
        "owner: alice\nprofile: tiny\ncommand: [sh, -c, 'echo hello > /tmp/index.html; exec httpd -f -p 8000 -h /tmp']\n\
         ports: [{name: web, containerPort: 8000}]",
    );
    let server = wait_phase(&ns.name, "web", "Running");
    let container = support::inspect(&format!("csrv.{}.web", ns.name)).unwrap();
    let bindings = container["NetworkSettings"]["Ports"]["8000/tcp"]
        .as_array()
        .unwrap()
        .clone();
    assert!(!bindings.is_empty());
    for binding in &bindings {
        assert_eq!(
            binding["HostIp"], "127.0.0.1",
            "never all interfaces: {bindings:?}"
        );
    }
    let endpoint = &server["status"]["endpoints"][0];
    assert_eq!(endpoint["host"], "127.0.0.1");
    assert_eq!(
        endpoint["port"].to_string(),
        bindings[0]["HostPort"].as_str().unwrap()
    );
    let listening = std::process::Command::new("ss").args(["-Htln"]).output().unwrap();
    let listening = String::from_utf8_lossy(&listening.stdout);
    let port = bindings[0]["HostPort"].as_str().unwrap();
    assert!(listening.contains(&format!("127.0.0.1:{port} ")), "{listening}");
    assert!(!listening.contains(&format!("0.0.0.0:{port} ")) && !listening.contains(&format!("*:{port} ")));
}

/// The firewall the agent installs, read back from iptables; put back when removed.
/// (No traffic is ever sent to 169.254.169.254 or any address outside this machine.)
#[test]
fn the_firewall_closes_metadata_and_private_networks_and_comes_back_when_removed() {
    install_crds();
    let agent = Agent::start_with(&unique("node"), 3, &["--lease-seconds", "8"]);
    eventually("the node to be Ready", 60, || {
        let ready = kubectl(
            &[
                "get",
                "computenode",
                &agent.node,
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
            ],
            None,
        );
        (String::from_utf8_lossy(&ready.stdout) == "True").then_some(())
    });
    let network = |name: &str| -> Value {
        serde_json::from_slice::<Value>(&docker_on(3, &["network", "inspect", name]).stdout).unwrap()[0]
            .clone()
    };
    let open = network("compute-server");
    let closed = network("compute-server-closed");
    for net in [&open, &closed] {
        assert_eq!(
            net["Options"]["com.docker.network.bridge.enable_icc"], "false",
            "{net}"
        );
    }
    let bridge = open["Options"]["com.docker.network.bridge.name"]
        .as_str()
        .unwrap()
        .to_string();
    let closed_bridge = closed["Options"]["com.docker.network.bridge.name"]
        .as_str()
        .unwrap()
        .to_string();
    let rules = |chain: &str| {
        text(
            &std::process::Command::new("iptables")
                .args(["-w", "5", "-S", chain])
                .output()
                .unwrap(),
        )
    };
    let all = rules("INPUT") + &rules("FORWARD");
    assert!(
        all.contains(&format!("-A INPUT -i {bridge} -j CSRV-IN-{bridge}")),
        "{all}"
    );
    assert!(
        all.contains(&format!("-A FORWARD -i {bridge} -j CSRV-OUT-{bridge}")),
        "{all}"
    );
    let to_node = rules(&format!("CSRV-IN-{bridge}"));
    assert!(
        to_node.contains("--ctstate RELATED,ESTABLISHED -j RETURN"),
        "{to_node}"
    );
    assert!(to_node.contains("-j REJECT"), "{to_node}");
    let out = rules(&format!("CSRV-OUT-{bridge}"));
    for expected in [
        format!("-o {bridge} -j REJECT"),
        "-d 169.254.0.0/16 -j REJECT".to_string(),
        "-d 10.0.0.0/8 -j REJECT".to_string(),
        "-d 172.16.0.0/12 -j REJECT".to_string(),
        "-d 192.168.0.0/16 -j REJECT".to_string(),
        "-d 100.64.0.0/10 -j REJECT".to_string(),
        "-d 10.0.0.0/8 -p udp -m udp --dport 53 -j RETURN".to_string(),
    ] {
        assert!(out.contains(&expected), "missing {expected:?} in:\n{out}");
    }
    let closed_out = rules(&format!("CSRV-OUT-{closed_bridge}"));
    assert!(closed_out.contains("-d 169.254.0.0/16 -j REJECT"), "{closed_out}");
    assert!(
        closed_out
            .trim_end()
            .ends_with("-j REJECT --reject-with icmp-admin-prohibited")
            && !closed_out.contains("--dport 53"),
        "a closed network refuses everything: {closed_out}"
    );

    // Someone flushes the chain (a firewall reload): the next heartbeat puts it back.
    let chain = format!("CSRV-OUT-{closed_bridge}");
    assert!(
        std::process::Command::new("iptables")
            .args(["-w", "5", "-F", &chain])
            .status()
            .unwrap()
            .success()
    );
    eventually("the agent to put the rules back", 30, || {
        rules(&chain)
            .contains("-d 169.254.0.0/16 -j REJECT")
            .then_some(())
    });
}

#[test]
fn a_volume_not_made_for_the_server_is_never_mounted_nor_deleted() {
    install_crds();
    profiles();
    let ns = TestNamespace::new("iso-vol");
    let node = unique("node");
    // The server exists before any agent runs for its node, so the volume can be made first.
    apply_server(&ns.name, "thesis", &node, "owner: alice\nprofile: tiny");
    let uid = server_json(&ns.name, "thesis").unwrap()["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    let volume = format!("csrv.{}.thesis.{uid}.data", ns.name);
    let legacy = format!("csrv.{}.thesis.data", ns.name);
    for (name, labels) in [
        (&volume, vec!["--label", "computeserver.io/uid=someone-else"]),
        (&legacy, vec![]),
    ] {
        let mut args = vec!["volume", "create"];
        args.extend(labels);
        args.push(name);
        assert!(docker_cli(&args).status.success());
        let out = docker_cli(&[
            "run",
            "--rm",
            "-v",
            &format!("{name}:/d"),
            "computeserver/busybox:local",
            "sh",
            "-c",
            "echo bob-data > /d/secret",
        ]);
        assert!(out.status.success(), "{}", text(&out));
    }

    let agent = Agent::start(&node);
    let server = wait_phase(&ns.name, "thesis", "Failed");
    let message = server["status"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("a Docker volume named {volume} already exists"))
            && message.contains("was not made for this server"),
        "{message}"
    );
    assert!(
        support::inspect(&format!("csrv.{}.thesis", ns.name)).is_none(),
        "no container may mount it"
    );
    assert!(support::events(&ns.name, "thesis").contains("VolumeConflict"));

    // The admin moves it aside: the server starts with a volume of its own, empty.
    assert!(docker_cli(&["volume", "rm", &volume]).status.success());
    wait_phase(&ns.name, "thesis", "Running");
    let home = docker_cli(&["exec", &format!("csrv.{}.thesis", ns.name), "ls", "-A", "/home"]);
    assert_eq!(
        text(&home),
        "",
        "neither the foreign volume nor the old-style one is mounted"
    );
    let kept = docker_cli(&[
        "run",
        "--rm",
        "-v",
        &format!("{legacy}:/d"),
        "computeserver/busybox:local",
        "cat",
        "/d/secret",
    ]);
    assert_eq!(text(&kept), "bob-data\n", "the other volume is never deleted");
    drop(agent);
    assert!(docker_cli(&["volume", "rm", &legacy]).status.success());
}

#[test]
fn a_tiny_server_stays_running_and_a_program_that_ends_says_so_once() {
    install_crds();
    profiles();
    let ns = TestNamespace::new("iso-end");
    let agent = Agent::start(&unique("node"));
    apply_server(&ns.name, "tiny", &agent.node, "owner: alice\nprofile: tiny");
    apply_server(
        &ns.name,
        "done",
        &agent.node,
        "owner: alice\nprofile: tiny\ncommand: [sh, -c, 'echo bye; exit 0']",
    );
    apply_server(
        &ns.name,
        "oops",
        &agent.node,
        "owner: alice\nprofile: tiny\ncommand: [sh, -c, 'echo starting; echo no such file: /data/input >&2; exit 3']",
    );
    wait_phase(&ns.name, "tiny", "Running");
    let done = wait_phase(&ns.name, "done", "Stopped");
    assert_eq!(
        done["status"]["message"],
        "its program ended (exit code 0); start the server to run it again"
    );
    let oops = wait_phase(&ns.name, "oops", "Failed");
    let message = oops["status"]["message"].as_str().unwrap();
    // Docker keeps stdout and stderr apart, so their lines may come in either order.
    assert!(
        message.starts_with("its program ended (exit code 3); its last output: ")
            && message.contains("starting")
            && message.contains("no such file: /data/input"),
        "{message}"
    );
    // No restart loop: the container ran once, and stays stopped across resyncs.
    let started = |name: &str| {
        support::inspect(&format!("csrv.{}.{name}", ns.name)).unwrap()["State"]["StartedAt"].clone()
    };
    let first = (started("done"), started("oops"));
    std::thread::sleep(std::time::Duration::from_secs(35));
    assert_eq!(
        (started("done"), started("oops")),
        first,
        "restarted though its profile asks for no restarts"
    );
    assert_eq!(
        server_json(&ns.name, "tiny").unwrap()["status"]["phase"],
        "Running"
    );
    assert_eq!(
        server_json(&ns.name, "done").unwrap()["status"]["phase"],
        "Stopped"
    );

    // Starting it again (stop, then start) runs it once more.
    for running in ["false", "true"] {
        kubectl_ok(
            &[
                "patch",
                "csrv",
                "-n",
                &ns.name,
                "done",
                "--type",
                "merge",
                "-p",
                &format!("{{\"spec\":{{\"running\":{running}}}}}"),
            ],
            None,
        );
    }
    eventually("the program to run again", 60, || {
        (started("done") != first.0).then_some(())
    });
    wait_phase(&ns.name, "done", "Stopped");
}
