//! GPUs without a GPU: local node 3's dockerd runs with a stand-in for the NVIDIA Container
//! Toolkit's hook on its PATH (tests/support/nvidia/), so Docker registers its real "nvidia"
//! device driver, sets NVIDIA_VISIBLE_DEVICES for each GPU container and runs the hook, which
//! records what it was asked. A real agent with `--gpu-devices 0,1` gives each server devices of
//! its own; the main engine has no such hook, as a host without the toolkit.

mod support;

use std::process::Command;

use serde_json::Value;
use support::{
    Agent, Stack, TestNamespace, TestProfile, eventually, install_crds, kubectl_ok, server_json, unique,
};

/// The local node engine with the stand-in hook (NODE_GPU_HOOK in stack.sh).
const GPU_ENGINE: usize = 3;

fn apply_gpu_server(ns: &str, name: &str, node: &str, profile: &str) {
    let yaml = format!(
        "apiVersion: computeserver.io/v1alpha1\nkind: ComputeServer\nmetadata:\n  name: {name}\n  namespace: {ns}\n  \
         labels: {{computeserver.io/node: {node}, computeserver.io/owner: alice}}\n\
         spec: {{owner: alice, profile: {profile}, resources: {{gpus: 1}}}}\n"
    );
    kubectl_ok(&["apply", "-f", "-"], Some(&yaml));
}

fn wait_for(ns: &str, name: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    eventually(&format!("{name}: {what}"), 90, || {
        server_json(ns, name).filter(|s| check(s))
    })
}

/// The ComputeNode, once its agent has registered it.
fn computenode(name: &str) -> Option<Value> {
    let out = support::kubectl(&["get", "computenode", name, "-o", "json"], None);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).unwrap())
}

fn phase_is(phase: &'static str) -> impl Fn(&Value) -> bool {
    move |s: &Value| s["status"]["phase"] == phase
}

fn devices(server: &Value) -> Vec<String> {
    serde_json::from_value(server["status"]["gpuDevices"].clone()).unwrap_or_default()
}

/// `docker` on local node engine `n`.
fn docker_on(n: usize, args: &[&str]) -> std::process::Output {
    Command::new("docker")
        .args(args)
        .env("DOCKER_HOST", Stack::get().node_docker_host(n))
        .output()
        .unwrap()
}

/// What Docker was asked to give the container, and what its first process sees.
fn given(ns: &str, name: &str) -> (Value, String) {
    let container = format!("csrv.{ns}.{name}");
    let out = docker_on(GPU_ENGINE, &["inspect", &container]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let inspect: Value = serde_json::from_slice(&out.stdout).unwrap();
    let requests = inspect[0]["HostConfig"]["DeviceRequests"].clone();
    let environ = docker_on(GPU_ENGINE, &["exec", &container, "cat", "/proc/1/environ"]);
    let visible = String::from_utf8_lossy(&environ.stdout)
        .split('\0')
        .find_map(|v| v.strip_prefix("NVIDIA_VISIBLE_DEVICES=").map(str::to_string))
        .unwrap_or_default();
    (requests, visible)
}

#[test]
fn servers_get_gpus_of_their_own_wait_when_none_is_free_and_keep_theirs_across_a_stop() {
    install_crds();
    let ns = TestNamespace::new("gpu");
    let profile = TestProfile::new("gpu", "maxResources: {cpu: '1', memory: 256Mi, gpus: 2}");
    let flags = [
        "--gpu-devices",
        "0,1",
        "--lease-namespace",
        ns.name.as_str(),
        "--lease-seconds",
        "8",
    ];
    let agent = Agent::start_with(&unique("gpu-node"), GPU_ENGINE, &flags);
    let hook_log = Stack::get()
        .var(&format!("GPU_HOOK_LOG_{GPU_ENGINE}"))
        .to_string();
    let hooks_before = std::fs::read_to_string(&hook_log)
        .unwrap_or_default()
        .lines()
        .count();

    // The node lists its two GPUs.
    let node = eventually("the node to list its GPUs", 30, || {
        let node = computenode(&agent.node)?;
        (node["status"]["capacity"]["gpus"] == 2).then_some(node)
    });
    assert_eq!(node["status"]["gpus"][0]["id"], "0");
    assert_eq!(node["status"]["gpus"][1]["id"], "1");

    // Two servers of one GPU each: device 0 and device 1, no more, no less.
    apply_gpu_server(&ns.name, "first", &agent.node, &profile.name);
    let first = wait_for(&ns.name, "first", "Running", phase_is("Running"));
    assert_eq!(devices(&first), ["0"]);
    apply_gpu_server(&ns.name, "second", &agent.node, &profile.name);
    let second = wait_for(&ns.name, "second", "Running", phase_is("Running"));
    assert_eq!(devices(&second), ["1"]);
    for (name, device) in [("first", "0"), ("second", "1")] {
        let (requests, visible) = given(&ns.name, name);
        assert_eq!(
            requests,
            serde_json::json!([{"Driver": "nvidia", "Count": 0, "DeviceIDs": [device],
                "Capabilities": [["gpu"]], "Options": null}]),
            "{name}"
        );
        assert_eq!(visible, device, "{name}: NVIDIA_VISIBLE_DEVICES");
    }
    let hooks = std::fs::read_to_string(&hook_log).unwrap();
    let prestarts: Vec<&str> = hooks
        .lines()
        .skip(hooks_before)
        .filter(|l| l.starts_with("prestart "))
        .collect();
    assert_eq!(
        prestarts.len(),
        2,
        "the NVIDIA hook ran for each container: {hooks}"
    );

    // A third waits, saying why; the node shows who holds what.
    apply_gpu_server(&ns.name, "third", &agent.node, &profile.name);
    let third = wait_for(&ns.name, "third", "Pending", phase_is("Pending"));
    let message = third["status"]["message"].as_str().unwrap();
    let (a, b) = (format!("{}/first", ns.name), format!("{}/second", ns.name));
    assert_eq!(
        message,
        format!(
            "waiting for 1 GPU: no free GPU on this node (2 of 2 held by {a}, {b}); it starts when one is free"
        )
    );
    assert!(devices(&third).is_empty());
    let node = eventually("the node to show the holders", 30, || {
        let node = computenode(&agent.node)?;
        (node["status"]["gpus"][1]["server"] == b.as_str() && node["status"]["servers"] == 3).then_some(node)
    });
    assert_eq!(node["status"]["gpus"][0]["server"], a.as_str());
    assert_eq!(
        node["status"]["allocated"]["gpus"], 3,
        "asked for, with the one waiting"
    );

    // Stopped, the second keeps its GPU (the third still waits); started again, it has it.
    let patch = |name: &str, running: bool| {
        let body = format!("{{\"spec\":{{\"running\":{running}}}}}");
        kubectl_ok(
            &["patch", "csrv", "-n", &ns.name, name, "--type=merge", "-p", &body],
            None,
        );
    };
    patch("second", false);
    wait_for(&ns.name, "second", "Stopped", phase_is("Stopped"));
    std::thread::sleep(std::time::Duration::from_secs(6));
    assert_eq!(
        server_json(&ns.name, "third").unwrap()["status"]["phase"],
        "Pending"
    );
    patch("second", true);
    let second = wait_for(&ns.name, "second", "Running again", phase_is("Running"));
    assert_eq!(devices(&second), ["1"]);
    assert_eq!(given(&ns.name, "second").1, "1");

    // A restarted agent (killed, as a crash would) keeps every assignment.
    let mut crashed = agent;
    crashed.kill();
    let agent = Agent::start_with(&crashed.node, GPU_ENGINE, &flags);
    std::thread::sleep(std::time::Duration::from_secs(6));
    assert_eq!(devices(&server_json(&ns.name, "first").unwrap()), ["0"]);
    assert_eq!(devices(&server_json(&ns.name, "second").unwrap()), ["1"]);
    assert_eq!(
        server_json(&ns.name, "third").unwrap()["status"]["phase"],
        "Pending"
    );

    // The first deleted, its GPU is free: the third gets device 0.
    kubectl_ok(&["delete", "csrv", "-n", &ns.name, "first"], None);
    let third = wait_for(&ns.name, "third", "Running", phase_is("Running"));
    assert_eq!(devices(&third), ["0"]);
    assert_eq!(given(&ns.name, "third").1, "0");
    drop(agent);
    drop(crashed);
}

#[test]
fn a_node_without_the_nvidia_toolkit_refuses_gpu_servers_saying_what_to_install() {
    install_crds();
    let ns = TestNamespace::new("gpu-none");
    let profile = TestProfile::new("gpu-none", "maxResources: {cpu: '1', memory: 256Mi, gpus: 1}");
    // The main engine has no NVIDIA hook: Docker has no "nvidia" device driver.
    let flags = [
        "--gpu-devices",
        "0",
        "--lease-namespace",
        ns.name.as_str(),
        "--lease-seconds",
        "8",
    ];
    let agent = Agent::start_with(&unique("plain-node"), 1, &flags);
    apply_gpu_server(&ns.name, "wants", &agent.node, &profile.name);
    let failed = wait_for(&ns.name, "wants", "Failed", phase_is("Failed"));
    let message = failed["status"]["message"].as_str().unwrap();
    assert!(
        message.starts_with(&format!(
            "node {} cannot give containers GPUs: its Docker has no NVIDIA runtime. On the node, install \
             the NVIDIA driver and the NVIDIA Container Toolkit",
            agent.node
        )),
        "{message}"
    );
    assert_eq!(
        devices(&failed),
        ["0"],
        "assigned all the same: it runs once the node can"
    );
}

#[test]
fn the_example_gpu_profile_is_accepted_by_the_apiserver() {
    install_crds();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/manifests/examples/gpu.yaml");
    let out = kubectl_ok(&["apply", "--dry-run=server", "-f", path], None);
    assert!(
        ["created", "configured", "unchanged"]
            .iter()
            .any(|done| out.trim() == format!("computeprofile.computeserver.io/gpu {done} (server dry run)")),
        "{out}"
    );
}
