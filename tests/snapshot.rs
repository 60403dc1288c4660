//! Snapshots against the real thing: two agents on two Docker engines, the apiserver, and the
//! stack's S3 store (SeaweedFS). What the user sees is the ComputeSnapshot's and the servers'
//! status; what is really there is read with `docker exec` and from the store over S3.

mod support;

use serde_json::Value;
use support::{
    Agent, Scheduler, Stack, TestNamespace, TestProfile, eventually, install_crds, kubectl, kubectl_ok,
    server_json, unique, wait_phase,
};

/// A busybox server of the `tiny` profile (data at /home) that sleeps until stopped.
const SLEEPER: &str = "profile: tiny\ncommand: [sleep, infinity]";

fn apply(ns: &str, kind: &str, name: &str, labels: &str, spec: &str) {
    let yaml = format!(
        "apiVersion: computeserver.io/v1alpha1\nkind: {kind}\nmetadata:\n  name: {name}\n  namespace: {ns}\n  \
         labels: {{{labels}}}\nspec:\n{}",
        spec.lines().map(|l| format!("  {l}\n")).collect::<String>()
    );
    kubectl_ok(&["apply", "-f", "-"], Some(&yaml));
}

fn server(ns: &str, name: &str, node: &str, owner: &str, spec: &str) {
    let labels = format!("computeserver.io/node: {node}, computeserver.io/owner: {owner}");
    apply(
        ns,
        "ComputeServer",
        name,
        &labels,
        &format!("owner: {owner}\n{spec}"),
    );
}

fn snapshot_json(ns: &str, name: &str) -> Option<Value> {
    let out = kubectl(&["get", "csnap", "-n", ns, name, "-o", "json"], None);
    serde_json::from_slice(&out.stdout).ok()
}

/// Waits for the snapshot to leave Pending; returns it.
fn settled(ns: &str, name: &str) -> Value {
    eventually(&format!("snapshot {name} to be Ready or Failed"), 120, || {
        snapshot_json(ns, name).filter(|s| matches!(s["status"]["phase"].as_str(), Some("Ready" | "Failed")))
    })
}

/// `docker exec` in a container of local engine `daemon`: its output, or panics.
fn exec(daemon: usize, container: &str, script: &str) -> String {
    let out = std::process::Command::new("docker")
        .args(["exec", container, "sh", "-c", script])
        .env("DOCKER_HOST", Stack::get().node_docker_host(daemon))
        .output()
        .expect("docker exec");
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Whether local engine `daemon` has a container or volume of this name.
fn exists(daemon: usize, what: &str, name: &str) -> bool {
    std::process::Command::new("docker")
        .args([what, "inspect", name])
        .env("DOCKER_HOST", Stack::get().node_docker_host(daemon))
        .output()
        .expect("docker inspect")
        .status
        .success()
}

/// An S3 request to the stack's store, signed with its keys: (HTTP status, body).
fn s3(method: &str, key: &str, body: Option<&[u8]>) -> (u16, Vec<u8>) {
    let stack = Stack::get();
    let url = format!("{}/{}/{key}", stack.var("S3_ENDPOINT"), stack.var("S3_BUCKET"));
    let user = format!("{}:{}", stack.var("S3_ACCESS_KEY"), stack.var("S3_SECRET_KEY"));
    let mut curl = std::process::Command::new("curl");
    curl.args(["-s", "-o", "-", "-w", "\n%{http_code}", "-X", method])
        .args(["--aws-sigv4", "aws:amz:us-east-1:s3", "--user", &user, &url]);
    // An upload from a file (-T): curl signs it as S3 wants.
    let file = tempfile::NamedTempFile::new().unwrap();
    if let Some(body) = body {
        std::fs::write(file.path(), body).unwrap();
        curl.arg("-T").arg(file.path());
    }
    let out = curl.output().expect("curl");
    let split = out.stdout.iter().rposition(|b| *b == b'\n').unwrap();
    let code = String::from_utf8_lossy(&out.stdout[split + 1..])
        .trim()
        .parse()
        .unwrap();
    (code, out.stdout[..split].to_vec())
}

/// A label for a test's own nodes and the agent flags that give it, with Leases in the test's
/// namespace (its scheduler's too): other tests' schedulers never lead there.
fn own_nodes(ns: &TestNamespace, prefix: &str) -> (String, Vec<String>) {
    let label = unique(prefix);
    let flags = [
        "--label",
        &format!("test={label}"),
        "--lease-namespace",
        &ns.name,
        "--lease-seconds",
        "6",
    ];
    (label, flags.map(String::from).to_vec())
}

#[test]
fn a_snapshot_holds_home_and_installed_files_and_a_clone_on_another_node_has_them() {
    install_crds();
    let ns = TestNamespace::new("snap");
    let first = Agent::start_with(&unique("snap-a"), 1, &[]);
    let second = Agent::start_with(&unique("snap-b"), 2, &[]);
    server(&ns.name, "src", &first.node, "alice", SLEEPER);
    wait_phase(&ns.name, "src", "Running");
    let container = format!("csrv.{}.src", ns.name);
    // Work in /home (the data volume), a package's worth of files outside it, 3 MiB of noise.
    exec(
        1,
        &container,
        "echo 'my notes' > /home/notes.txt && mkdir -p /usr/local/share/tool && \
         echo 'installed' > /usr/local/share/tool/VERSION && \
         dd if=/dev/urandom of=/home/noise bs=1024 count=3072 2>/dev/null",
    );
    let noise = exec(1, &container, "md5sum /home/noise | cut -d' ' -f1");

    apply(
        &ns.name,
        "ComputeSnapshot",
        "monday",
        "",
        "server: src\nowner: alice",
    );
    let snap = settled(&ns.name, "monday");
    let status = &snap["status"];
    assert_eq!(status["phase"], "Ready", "{status}");
    assert!(
        status["checksum"].as_str().unwrap().starts_with("sha256:"),
        "{status}"
    );
    assert_eq!(status["node"], first.node.as_str());
    let size = status["sizeBytes"].as_i64().unwrap();
    let stored = status["storedBytes"].as_i64().unwrap();
    assert!(
        (3 << 20) < size && size < (4 << 20),
        "it holds the 3 MiB written, not the image: {size}"
    );
    assert!(
        stored < (4 << 20),
        "random data stays about its size compressed: {stored}"
    );
    let message = status["message"].as_str().unwrap();
    assert!(message.starts_with("holds /home ("), "{message}");
    // Its objects are in the store: the manifest lists each part with its SHA-256.
    let location = status["location"].as_str().unwrap().to_string();
    let (code, manifest) = s3("GET", &format!("{location}/manifest.json"), None);
    assert_eq!(code, 200);
    let manifest: Value = serde_json::from_slice(&manifest).unwrap();
    let parts: Vec<&str> = manifest["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(parts, ["data", "system"]);

    // A clone on the other node, on another Docker engine: both files, the same noise.
    server(
        &ns.name,
        "copy",
        &second.node,
        "alice",
        &format!("{SLEEPER}\nrestoreFrom: {{snapshot: monday}}"),
    );
    let copy = wait_phase(&ns.name, "copy", "Running");
    let clone = format!("csrv.{}.copy", ns.name);
    assert_eq!(exec(2, &clone, "cat /home/notes.txt"), "my notes\n");
    assert_eq!(
        exec(2, &clone, "cat /usr/local/share/tool/VERSION"),
        "installed\n"
    );
    assert_eq!(exec(2, &clone, "md5sum /home/noise | cut -d' ' -f1"), noise);
    assert_eq!(copy["status"]["restoredFrom"]["snapshot"], "monday");
    assert_eq!(copy["status"]["restoredFrom"]["checksum"], status["checksum"]);

    // Someone else's server cannot start from it: it answers as a snapshot that does not exist.
    server(
        &ns.name,
        "bobs",
        &second.node,
        "bob",
        &format!("{SLEEPER}\nrestoreFrom: {{snapshot: monday}}"),
    );
    let refused = wait_phase(&ns.name, "bobs", "Failed");
    assert_eq!(
        refused["status"]["message"],
        "snapshot monday does not exist in this namespace; `kubectl get csnap` lists the snapshots"
    );
    assert!(!exists(2, "container", &format!("csrv.{}.bobs", ns.name)));
    // Nor may a snapshot of alice's server be bob's.
    apply(
        &ns.name,
        "ComputeSnapshot",
        "stolen",
        "",
        "server: src\nowner: bob",
    );
    let stolen = settled(&ns.name, "stolen");
    assert_eq!(stolen["status"]["phase"], "Failed");
    assert_eq!(
        stolen["status"]["message"],
        "server src belongs to someone else: a snapshot's owner must be its server's"
    );

    // A corrupted object: the restore is refused with the reason, and nothing is left running.
    let (code, _) = s3(
        "PUT",
        &format!("{location}/data.tar.zst"),
        Some(b"not what was stored"),
    );
    assert_eq!(code, 200);
    server(
        &ns.name,
        "broken",
        &second.node,
        "alice",
        &format!("{SLEEPER}\nrestoreFrom: {{snapshot: monday}}"),
    );
    let broken = wait_phase(&ns.name, "broken", "Failed");
    let message = broken["status"]["message"].as_str().unwrap();
    assert!(
        message.starts_with("snapshot monday cannot be restored: its data part (data.tar.zst)")
            && message.ends_with("; nothing was started"),
        "{message}"
    );
    let uid = broken["metadata"]["uid"].as_str().unwrap();
    assert!(!exists(2, "container", &format!("csrv.{}.broken", ns.name)));
    assert!(!exists(
        2,
        "volume",
        &format!("csrv.{}.broken.{uid}.data", ns.name)
    ));

    // Deleting a snapshot removes its objects from the store.
    kubectl_ok(
        &["delete", "csnap", "-n", &ns.name, "monday", "--timeout=60s"],
        None,
    );
    assert_eq!(s3("GET", &format!("{location}/manifest.json"), None).0, 404);
    // The servers made from it keep their data.
    assert_eq!(exec(2, &clone, "cat /home/notes.txt"), "my notes\n");
    assert!(server_json(&ns.name, "copy").is_some());
    // The rest go while the agents that remove their objects still run.
    kubectl_ok(
        &["delete", "csnap", "-n", &ns.name, "--all", "--timeout=60s"],
        None,
    );
    drop((first, second));
}

#[test]
fn a_stopped_server_is_archived_off_its_node_and_restored_on_another_when_started() {
    install_crds();
    let ns = TestNamespace::new("archive");
    let profile = TestProfile::new("archiver", "lifecycle: {archiveAfterStopped: 2s}");
    let (label, flags) = own_nodes(&ns, "archive");
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let first = Agent::start_with(&unique("arch-a"), 1, &flags);
    let second = Agent::start_with(&unique("arch-b"), 2, &flags);
    let _scheduler = Scheduler::start(&unique("arch-sched"), &ns.name, &ns.name);
    let spec = format!("profile: {}\nnodeSelector: {{test: {label}}}", profile.name);
    server(&ns.name, "box", &first.node, "alice", &spec);
    wait_phase(&ns.name, "box", "Running");
    let container = format!("csrv.{}.box", ns.name);
    exec(
        1,
        &container,
        "echo work > /home/work.txt && mkdir -p /usr/local/bin && echo tool > /usr/local/bin/tool",
    );

    // Stopped, then archived: a snapshot, and nothing of it left on its node.
    kubectl_ok(
        &[
            "patch",
            "csrv",
            "box",
            "-n",
            &ns.name,
            "--type=merge",
            "-p",
            r#"{"spec":{"running":false}}"#,
        ],
        None,
    );
    let archived = wait_phase(&ns.name, "box", "Archived");
    let snapshot = archived["status"]["archivedTo"].as_str().unwrap().to_string();
    assert!(snapshot.starts_with("box-archive-"), "{snapshot}");
    let message = archived["status"]["message"].as_str().unwrap();
    assert!(message.contains("it reserves nothing"), "{message}");
    let uid = archived["metadata"]["uid"].as_str().unwrap();
    assert!(!exists(1, "container", &container));
    assert!(!exists(1, "volume", &format!("{container}.{uid}.data")));
    // Its node counts nothing of it any more (its label still names the node it left).
    eventually("the first node to count nothing of it", 60, || {
        let out = kubectl(&["get", "computenode", &first.node, "-o", "json"], None);
        let node: Value = serde_json::from_slice(&out.stdout).ok()?;
        (node["status"]["allocated"]["cpu"] == "0" && node["status"]["servers"] == 0).then_some(())
    });
    assert_eq!(
        snapshot_json(&ns.name, &snapshot).unwrap()["status"]["phase"],
        "Ready"
    );

    // Its node takes no more servers; started, it is placed on the other and restored there.
    kubectl_ok(
        &[
            "patch",
            "computenode",
            &first.node,
            "--type=merge",
            "-p",
            r#"{"spec":{"unschedulable":true}}"#,
        ],
        None,
    );
    kubectl_ok(
        &[
            "patch",
            "csrv",
            "box",
            "-n",
            &ns.name,
            "--type=merge",
            "-p",
            r#"{"spec":{"running":true}}"#,
        ],
        None,
    );
    let back = eventually("box to run again on the other node", 120, || {
        server_json(&ns.name, "box")
            .filter(|s| s["status"]["phase"] == "Running" && s["status"]["node"] == second.node.as_str())
    });
    assert_eq!(back["status"]["restoredFrom"]["snapshot"], snapshot.as_str());
    assert!(back["status"]["archivedTo"].is_null());
    assert_eq!(exec(2, &container, "cat /home/work.txt"), "work\n");
    assert_eq!(exec(2, &container, "cat /usr/local/bin/tool"), "tool\n");

    kubectl_ok(
        &["delete", "csrv", "-n", &ns.name, "--all", "--timeout=60s"],
        None,
    );
    kubectl_ok(
        &["delete", "csnap", "-n", &ns.name, "--all", "--timeout=60s"],
        None,
    );
    drop((first, second));
}

/// `docker` on local engine `daemon`: its output, or panics.
fn docker(daemon: usize, args: &[&str]) -> String {
    let out = std::process::Command::new("docker")
        .args(args)
        .env("DOCKER_HOST", Stack::get().node_docker_host(daemon))
        .output()
        .expect("docker");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn a_server_on_a_lost_node_moves_by_itself_from_its_newest_snapshot_and_the_node_back_starts_nothing() {
    install_crds();
    let ns = TestNamespace::new("move");
    let profile = TestProfile::new("mover", "lifecycle: {moveAfterNodeLost: 3s}");
    let (label, flags) = own_nodes(&ns, "move");
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut first = Agent::start_with(&unique("move-a"), 1, &flags);
    let _scheduler = Scheduler::start(&unique("move-sched"), &ns.name, &ns.name);
    let spec = format!("profile: {}\nnodeSelector: {{test: {label}}}", profile.name);
    server(&ns.name, "box", &first.node, "alice", &spec);
    let running = wait_phase(&ns.name, "box", "Running");
    let uid = running["metadata"]["uid"].as_str().unwrap().to_string();
    let container = format!("csrv.{}.box", ns.name);
    let volume = format!("{container}.{uid}.data");
    exec(
        1,
        &container,
        "echo kept > /home/kept.txt && mkdir -p /usr/local/bin && echo tool > /usr/local/bin/tool",
    );
    apply(
        &ns.name,
        "ComputeSnapshot",
        "box-monday",
        "",
        "server: box\nowner: alice",
    );
    let snapshot = settled(&ns.name, "box-monday");
    // A second node, where it can go.
    let second = Agent::start_with(&unique("move-b"), 2, &flags);
    assert_eq!(snapshot["status"]["phase"], "Ready", "{snapshot}");
    exec(1, &container, "echo after > /home/after.txt");

    // The host dies: its agent and its container with it.
    first.kill();
    docker(1, &["stop", "-t", "1", &container]);
    let lost = wait_phase(&ns.name, "box", "NodeLost");
    let message = lost["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("it moves to another node, restored from its newest snapshot (box-monday of "),
        "{message}"
    );

    // It moves by itself: restored on the second node from the snapshot, what came after lost.
    let moved = eventually("box to run on the second node", 120, || {
        server_json(&ns.name, "box")
            .filter(|s| s["status"]["phase"] == "Running" && s["status"]["node"] == second.node.as_str())
    });
    assert_eq!(moved["metadata"]["uid"], uid.as_str(), "the same server");
    assert_eq!(moved["spec"]["restoreFrom"]["snapshot"], "box-monday");
    assert_eq!(moved["status"]["restoredFrom"]["snapshot"], "box-monday");
    assert_eq!(
        exec(2, &container, "cat /home/kept.txt /usr/local/bin/tool"),
        "kept\ntool\n"
    );
    assert_eq!(
        exec(2, &container, "ls /home/after.txt 2>/dev/null || echo lost"),
        "lost\n"
    );
    let events = support::events(&ns.name, "box");
    let taken = snapshot["status"]["takenAt"].as_str().unwrap();
    let clock = &taken[11..16];
    assert!(events.contains("Moving"), "{events}");
    assert!(
        events.contains(&format!("restored from snapshot box-monday taken at {clock} UTC")),
        "the move names when the snapshot was taken ({clock}):\n{events}"
    );

    // The first host comes back: its agent never starts the stale container, and keeps its
    // volume as an orphan for the admin.
    let back = Agent::start_with(&first.node, 1, &flags);
    eventually("the stale volume listed as orphaned", 60, || {
        let out = kubectl(&["get", "computenode", &first.node, "-o", "json"], None);
        let node: Value = serde_json::from_slice(&out.stdout).ok()?;
        node["status"]["orphanedVolumes"]
            .as_array()?
            .iter()
            .any(|o| o["volume"] == volume.as_str())
            .then_some(())
    });
    let state = docker(1, &["inspect", "-f", "{{.State.Running}}", &container]);
    assert_eq!(state.trim(), "false", "the stale container is not started");
    assert_eq!(
        docker(1, &["volume", "inspect", "-f", "{{.Name}}", &volume]).trim(),
        volume
    );
    assert_eq!(
        server_json(&ns.name, "box").unwrap()["status"]["node"],
        second.node.as_str(),
        "the server stays where it moved"
    );

    kubectl_ok(
        &["delete", "csrv", "-n", &ns.name, "--all", "--timeout=60s"],
        None,
    );
    kubectl_ok(
        &["delete", "csnap", "-n", &ns.name, "--all", "--timeout=60s"],
        None,
    );
    let _ = docker(1, &["rm", "-f", &container]);
    let _ = docker(1, &["volume", "rm", &volume]);
    drop((back, first, second));
}

/// A tar of one `bytes`-long file at `home/blob`, as a file in `dir`.
fn floor_tar(dir: &std::path::Path, bytes: usize) -> std::path::PathBuf {
    std::fs::create_dir(dir.join("home")).unwrap();
    std::fs::write(dir.join("home/blob"), vec![7u8; bytes]).unwrap();
    let tar = dir.join("floor.tar");
    let ok = std::process::Command::new("tar")
        .arg("-C")
        .arg(dir)
        .arg("-cf")
        .arg(&tar)
        .arg("home")
        .status()
        .unwrap();
    assert!(ok.success());
    tar
}

/// Seconds Docker's archive API (`PUT /containers/ID/archive`, as `docker cp` and a restore use
/// it) takes to extract what `source` (a shell command) writes into a new container's data
/// volume on local engine `daemon`.
fn docker_archive_floor(daemon: usize, source: &str) -> f64 {
    let name = unique("floor");
    let volume = format!("{name}:/home");
    docker(
        daemon,
        &[
            "create",
            "--name",
            &name,
            "-v",
            &volume,
            "computeserver/busybox:local",
            "true",
        ],
    );
    let socket = Stack::get()
        .node_docker_host(daemon)
        .trim_start_matches("unix://")
        .to_string();
    let pipeline = format!(
        "set -o pipefail; {source} | curl -sf -o /dev/null -X PUT --unix-socket {socket} -T - \
         'http://docker/containers/{name}/archive?path=/'"
    );
    let started = std::time::Instant::now();
    let ok = std::process::Command::new("bash")
        .args(["-c", &pipeline])
        .status()
        .unwrap();
    let took = started.elapsed().as_secs_f64();
    assert!(ok.success(), "{pipeline}");
    docker(daemon, &["rm", "-f", &name]);
    docker(daemon, &["volume", "rm", &name]);
    took
}

/// `make bench BENCH=snapshot`: snapshot and restore throughput of 256 MiB in a server's /home
/// (random: it does not compress, so the store gets all of it), against a floor measured in the
/// same run: the same number of bytes put into the same store as one plain upload, and read back
/// as one plain download (curl). Also the agent's peak memory while it copies.
#[test]
#[ignore = "a benchmark: make bench BENCH=snapshot"]
fn bench_snapshot() {
    // SNAPSHOT_BENCH_MIB=1024 for the issue's 1 GiB memory check.
    let mib_asked: u64 = std::env::var("SNAPSHOT_BENCH_MIB")
        .ok()
        .and_then(|m| m.parse().ok())
        .unwrap_or(256);
    install_crds();
    let ns = TestNamespace::new("bench-snap");
    let first = Agent::start_with(&unique("bsnap-a"), 1, &[]);
    let second = Agent::start_with(&unique("bsnap-b"), 2, &[]);
    server(&ns.name, "src", &first.node, "alice", SLEEPER);
    wait_phase(&ns.name, "src", "Running");
    let container = format!("csrv.{}.src", ns.name);
    exec(
        1,
        &container,
        &format!("dd if=/dev/urandom of=/home/blob bs=1048576 count={mib_asked} 2>/dev/null"),
    );
    let rss_before = support::status_kib(first.pid(), "VmRSS:");

    let started = std::time::Instant::now();
    apply(
        &ns.name,
        "ComputeSnapshot",
        "bench",
        "",
        "server: src\nowner: alice",
    );
    let snap = settled(&ns.name, "bench");
    let took = started.elapsed().as_secs_f64();
    assert_eq!(snap["status"]["phase"], "Ready", "{}", snap["status"]);
    let peak = support::status_kib(first.pid(), "VmHWM:");

    let started = std::time::Instant::now();
    server(
        &ns.name,
        "copy",
        &second.node,
        "alice",
        &format!("{SLEEPER}\nrestoreFrom: {{snapshot: bench}}"),
    );
    wait_phase(&ns.name, "copy", "Running");
    let restored = started.elapsed().as_secs_f64();
    // What a server takes to run on that node without a restore: placement, container, start.
    let started = std::time::Instant::now();
    server(&ns.name, "plain", &second.node, "alice", SLEEPER);
    wait_phase(&ns.name, "plain", "Running");
    let fixed = started.elapsed().as_secs_f64();
    let copying = (restored - fixed).max(0.001);

    // The floor: the same bytes as one plain upload and one plain download.
    let bytes = snap["status"]["storedBytes"].as_i64().unwrap() as usize;
    let dir = tempfile::tempdir().unwrap();
    let tar = floor_tar(dir.path(), bytes);
    let blob = std::fs::read(&tar).unwrap();
    let started = std::time::Instant::now();
    assert_eq!(s3("PUT", "bench/floor", Some(&blob)).0, 200);
    let put = started.elapsed().as_secs_f64();
    let started = std::time::Instant::now();
    assert_eq!(s3("GET", "bench/floor", None).0, 200);
    let get = started.elapsed().as_secs_f64();
    // Docker's archive API, which a restore writes through: the tar from a file, and the tar
    // as it comes from the store (GET piped into it): what a restore does, without checking.
    let docker_put = docker_archive_floor(2, &format!("cat {}", tar.display()));
    let stack = Stack::get();
    let get_command = format!(
        "curl -sf --aws-sigv4 aws:amz:us-east-1:s3 --user {}:{} {}/{}/bench/floor",
        stack.var("S3_ACCESS_KEY"),
        stack.var("S3_SECRET_KEY"),
        stack.var("S3_ENDPOINT"),
        stack.var("S3_BUCKET")
    );
    let piped = docker_archive_floor(2, &get_command);
    s3("DELETE", "bench/floor", None);

    let mib = bytes as f64 / (1024.0 * 1024.0);
    let rate = |seconds: f64| mib / seconds;
    println!(
        "snapshot: {mib_asked} MiB of /home ({mib:.0} MiB stored) on {}; agent RSS {} MiB before, peak {} MiB",
        support::machine(),
        rss_before / 1024,
        peak / 1024
    );
    println!(
        "snapshot: snapshot_mib_s={:.0} restore_mib_s={:.0} floor_put_mib_s={:.0} floor_get_mib_s={:.0} \
         floor_docker_put_mib_s={:.0} floor_get_into_docker_mib_s={:.0} snapshot_ratio={:.2} restore_ratio={:.2}",
        rate(took),
        rate(copying),
        rate(put),
        rate(get),
        rate(docker_put),
        rate(piped),
        put / took,
        piped / copying
    );
    println!(
        "snapshot: a server from it ran {restored:.2} s after its create, one without a restore {fixed:.2} s: \
         the restore's own {copying:.2} s give restore_mib_s"
    );
    kubectl_ok(
        &["delete", "csrv", "-n", &ns.name, "--all", "--timeout=60s"],
        None,
    );
    kubectl_ok(
        &["delete", "csnap", "-n", &ns.name, "--all", "--timeout=60s"],
        None,
    );
    drop((first, second));
}

#[test]
fn a_profiles_schedule_takes_snapshots_by_itself_and_keeps_the_newest() {
    install_crds();
    let ns = TestNamespace::new("sched-snap");
    let profile = TestProfile::new("every3s", "snapshots: {every: 3s, keep: 2}");
    let agent = Agent::start_with(&unique("ssnap"), 1, &[]);
    server(
        &ns.name,
        "box",
        &agent.node,
        "alice",
        &format!("profile: {}", profile.name),
    );
    wait_phase(&ns.name, "box", "Running");
    // Within 20 s: at least three were taken (one every 3 s), and only the newest two are kept.
    let seen = std::cell::RefCell::new(std::collections::BTreeSet::new());
    let kept = eventually("three scheduled snapshots, two kept", 30, || {
        let out = kubectl_ok(
            &[
                "get",
                "csnap",
                "-n",
                &ns.name,
                "-l",
                "computeserver.io/scheduled=true",
                "-o",
                "json",
            ],
            None,
        );
        let list: Value = serde_json::from_str(&out).unwrap();
        let names: Vec<String> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["metadata"]["deletionTimestamp"].is_null())
            .map(|s| s["metadata"]["name"].as_str().unwrap().to_string())
            .collect();
        assert!(names.len() <= 2, "more than keep: {names:?}");
        seen.borrow_mut().extend(names.iter().cloned());
        (seen.borrow().len() >= 3 && names.len() == 2).then_some(names)
    });
    assert!(kept.iter().all(|n| n.starts_with("box-auto-")), "{kept:?}");
    kubectl_ok(
        &["delete", "csrv", "-n", &ns.name, "--all", "--timeout=60s"],
        None,
    );
    kubectl_ok(
        &["delete", "csnap", "-n", &ns.name, "--all", "--timeout=60s"],
        None,
    );
}
