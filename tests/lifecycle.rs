//! Servers stop (and go) by themselves, on the real stack with second-scale durations: the
//! agent runs them and reports CPU, the scheduler's lifecycle controller stops idle or expired
//! ones and deletes those stopped too long; what the user sees is the phase, spec.running, the
//! stop reason, the warning in the status message, Events, and data that survives a stop.

mod support;

use serde_json::Value;
use support::{
    Agent, Scheduler, TestNamespace, docker_cli, events, eventually, install_crds, kubectl_ok, server_json,
    unique, wait_phase,
};

/// A ComputeProfile of this test's own with `lifecycle` (a YAML flow map), deleted when dropped.
struct Profile(String);

impl Profile {
    fn new(lifecycle: &str) -> Profile {
        let name = unique("life");
        let yaml = format!(
            "apiVersion: computeserver.io/v1alpha1\nkind: ComputeProfile\nmetadata: {{name: {name}}}\nspec:\n  \
             image: computeserver/busybox:local\n  command: [sleep, infinity]\n  \
             defaultResources: {{cpu: 250m, memory: 32Mi}}\n  lifecycle: {lifecycle}\n"
        );
        kubectl_ok(&["apply", "-f", "-"], Some(&yaml));
        Profile(name)
    }
}

impl Drop for Profile {
    fn drop(&mut self) {
        let _ = support::kubectl(&["delete", "computeprofile", &self.0, "--wait=false"], None);
    }
}

/// An agent and a scheduler (with its lifecycle controller) for the test's namespace.
fn roles(ns: &str) -> (Agent, Scheduler) {
    let flags = ["--lease-namespace", ns, "--lease-seconds", "8"];
    let agent = Agent::start_with(&unique("node"), 1, &flags);
    let scheduler = Scheduler::start(&unique("sched"), ns, ns);
    (agent, scheduler)
}

fn apply_server(ns: &str, name: &str, profile: &str, extra: &str) {
    let yaml = format!(
        "apiVersion: computeserver.io/v1alpha1\nkind: ComputeServer\nmetadata: {{name: {name}, namespace: {ns}}}\n\
         spec:\n  owner: alice\n  profile: {profile}\n{}",
        extra.lines().map(|l| format!("  {l}\n")).collect::<String>()
    );
    kubectl_ok(&["apply", "-f", "-"], Some(&yaml));
}

fn started_at(server: &Value) -> String {
    server["status"]["startedAt"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn an_idle_server_stops_with_the_reason_and_keeps_its_data() {
    install_crds();
    let ns = TestNamespace::new("life-idle");
    let profile = Profile::new("{idleStopAfter: 20s}");
    let (_agent, scheduler) = roles(&ns.name);
    apply_server(&ns.name, "quiet", &profile.0, "");
    let running = wait_phase(&ns.name, "quiet", "Running");
    let container = format!("csrv.{}.quiet", ns.name);
    assert!(
        docker_cli(&["exec", &container, "sh", "-c", "echo kept > /home/thesis.txt"])
            .status
            .success()
    );
    let forecast = eventually("the stop to be forecast", 30, || {
        server_json(&ns.name, "quiet").filter(|s| s["status"]["stopsAt"].is_string())
    });
    let reason = forecast["status"]["stopReason"].as_str().unwrap();
    assert!(
        reason.starts_with("idle: no SSH session and under 5% CPU since "),
        "{reason}"
    );
    let wide = kubectl_ok(&["get", "csrv", "-n", &ns.name, "quiet", "-o", "wide"], None);
    let stops_at = forecast["status"]["stopsAt"].as_str().unwrap();
    assert!(
        wide.contains("STOPS AT") && wide.contains(stops_at) && wide.contains("idle: no SSH session"),
        "kubectl shows when, as a time: {wide}"
    );
    assert!(!wide.contains("<invalid>"), "{wide}");

    // The agent may report Stopped a moment before the lifecycle's stopReason lands (the stop
    // is written first, then why): wait for both, as a person refreshing the page would.
    wait_phase(&ns.name, "quiet", "Stopped");
    let stopped = eventually("the stop's reason", 30, || {
        server_json(&ns.name, "quiet").filter(|s| s["status"]["stopReason"].is_string())
    });
    assert_eq!(stopped["status"]["phase"], "Stopped");
    assert_eq!(stopped["spec"]["running"], false);
    let reason = stopped["status"]["stopReason"].as_str().unwrap();
    assert!(
        reason.starts_with("stopped at ") && reason.contains(": idle: no SSH session"),
        "{reason}"
    );
    assert!(
        stopped["status"]["stopsAt"].is_null(),
        "no stop ahead of a stopped server"
    );
    assert!(events(&ns.name, "quiet").contains("LifecycleStop"));
    assert!(scheduler.metric("compute_server_scheduler_lifecycle_stops_total{reason=\"idle\"}") >= 1);

    // Started again: the same container and data, and a new idle count.
    kubectl_ok(
        &[
            "patch",
            "csrv",
            "-n",
            &ns.name,
            "quiet",
            "--type=merge",
            "-p",
            r#"{"spec":{"running":true}}"#,
        ],
        None,
    );
    let again = eventually("the server to run again", 60, || {
        server_json(&ns.name, "quiet")
            .filter(|s| s["status"]["phase"] == "Running" && started_at(s) != started_at(&running))
    });
    assert_eq!(again["status"]["containerID"], running["status"]["containerID"]);
    let note = docker_cli(&["exec", &container, "cat", "/home/thesis.txt"]);
    assert_eq!(String::from_utf8_lossy(&note.stdout), "kept\n");
}

#[test]
fn a_busy_server_keeps_running_and_a_lifetime_stops_it() {
    install_crds();
    let ns = TestNamespace::new("life-busy");
    let profile = Profile::new("{idleStopAfter: 15s, maxLifetime: 45s}");
    let (_agent, _scheduler) = roles(&ns.name);
    apply_server(
        &ns.name,
        "busy",
        &profile.0,
        "command: [sh, -c, 'while :; do :; done']",
    );
    let running = wait_phase(&ns.name, "busy", "Running");
    let started: jiff::Timestamp = started_at(&running).parse().unwrap();
    // Past the idle time several times over: the CPU loop counts as use.
    std::thread::sleep(std::time::Duration::from_secs(30));
    let busy = server_json(&ns.name, "busy").unwrap();
    assert_eq!(busy["status"]["phase"], "Running", "{}", busy["status"]);
    let cpu = busy["status"]["activity"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["source"] == "cpu")
        .cloned();
    let cpu = cpu.expect("the agent reports CPU activity");
    assert!(cpu["detail"].as_str().unwrap().ends_with("% CPU"), "{cpu}");

    let stopped = wait_phase(&ns.name, "busy", "Stopped");
    let reason = stopped["status"]["stopReason"].as_str().unwrap();
    assert!(reason.contains("its lifetime of 45s is over"), "{reason}");
    let stopped_at = support::ready_since(&stopped);
    let lived = stopped_at.duration_since(started).as_secs();
    assert!((45..75).contains(&lived), "stopped {lived} s after it started");
}

#[test]
fn keep_running_holds_an_idle_server_until_then_and_the_warning_comes_first() {
    install_crds();
    let ns = TestNamespace::new("life-keep");
    let profile = Profile::new("{idleStopAfter: 40s, maxExtension: 10m}");
    let (_agent, _scheduler) = roles(&ns.name);
    let until = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(70);
    let until = until.round(jiff::Unit::Second).unwrap();
    apply_server(
        &ns.name,
        "kept",
        &profile.0,
        &format!("keepRunningUntil: '{until}'"),
    );
    wait_phase(&ns.name, "kept", "Running");
    // Well past the idle time: kept running, and it says until when.
    std::thread::sleep(std::time::Duration::from_secs(50));
    let kept = server_json(&ns.name, "kept").unwrap();
    assert_eq!(kept["status"]["phase"], "Running");
    assert_eq!(kept["status"]["stopsAt"], until.to_string());
    assert!(
        kept["status"]["stopReason"]
            .as_str()
            .unwrap()
            .starts_with("kept running until ")
    );
    // The warning (a tenth of the idle time: 4 s before) reaches the status message first.
    let warned = eventually("the warning in the message", 40, || {
        server_json(&ns.name, "kept").filter(|s| {
            s["status"]["phase"] == "Stopped"
                || s["status"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("unless kept running"))
        })
    });
    assert_eq!(
        warned["status"]["phase"], "Running",
        "stopped without a warning: {}",
        warned["status"]
    );
    assert!(
        warned["status"]["message"]
            .as_str()
            .unwrap()
            .contains("stops at ")
    );
    let stopped = wait_phase(&ns.name, "kept", "Stopped");
    assert!(
        stopped["status"]["stopReason"]
            .as_str()
            .unwrap()
            .contains("kept running until"),
        "{}",
        stopped["status"]
    );
    let stopped_at = jiff::Timestamp::now();
    assert!(stopped_at >= until, "stopped before the time it was kept until");
}

#[test]
fn a_server_stopped_too_long_is_deleted_through_the_normal_path() {
    install_crds();
    let ns = TestNamespace::new("life-delete");
    let profile = Profile::new("{deleteAfterStopped: 10s}");
    let (_agent, _scheduler) = roles(&ns.name);
    apply_server(&ns.name, "old", &profile.0, "");
    let running = wait_phase(&ns.name, "old", "Running");
    let volume = format!(
        "csrv.{}.old.{}.data",
        ns.name,
        running["metadata"]["uid"].as_str().unwrap()
    );
    kubectl_ok(
        &[
            "patch",
            "csrv",
            "-n",
            &ns.name,
            "old",
            "--type=merge",
            "-p",
            r#"{"spec":{"running":false}}"#,
        ],
        None,
    );
    wait_phase(&ns.name, "old", "Stopped");
    eventually("the stopped server to be deleted", 60, || {
        server_json(&ns.name, "old").is_none().then_some(())
    });
    assert!(events(&ns.name, "old").contains("LifecycleDelete"));
    // The finalizer path ran: container and data volume are gone with it.
    eventually("its container and volume to go", 30, || {
        (support::inspect(&format!("csrv.{}.old", ns.name)).is_none()
            && !docker_cli(&["volume", "inspect", &volume]).status.success())
        .then_some(())
    });
}
