//! Faults on purpose: the real stack with three nodes, two schedulers, the web front and the
//! bastion, a workload of users creating, stopping, starting and deleting servers (through
//! the web front's JSON API and kubectl), taking snapshots and cloning servers from them, and a
//! fault injector that, at random, SIGKILLs and restarts each role (an agent preferably while it
//! copies a snapshot or restores one), restarts a node's dockerd, the API server and the S3
//! store, and pauses processes. Then the faults stop and the invariants are checked: nothing
//! lost, nothing twice, every snapshot that says Ready restores with its checksum, and the
//! reserved hours the schedulers counted into the API server match what ran, within a minute.
//!
//! `make test` runs it for 60 s with seed 1; `make chaos` for CHAOS_SECONDS (default 300)
//! with CHAOS_SEED (default: a new one, printed, so a failing run can be replayed).

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use compute_server::agent::plan::{NAMESPACE_LABEL, UID_LABEL};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::Value;
use support::{Agent, Bastion, Scheduler, Stack, TestNamespace, WebFront, install_crds, kubectl, unique};

const NODES: usize = 3;
/// The most servers the workload keeps at once (tiny: 250m each).
const MOST_SERVERS: usize = 12;
/// Where a server's data volume is mounted (the tiny profile's dataPath).
const MARKER: &str = "/home/.chaos-marker";
/// How long a server has to reach its desired phase once the faults stop.
const SETTLE: Duration = Duration::from_secs(120);

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn elapsed(start: Instant) -> String {
    format!("{:6.1} s", start.elapsed().as_secs_f64())
}

/// `docker` on local node engine `n` (1 to 3).
fn docker(n: usize, args: &[&str]) -> Option<String> {
    let out = Command::new("docker")
        .args(args)
        .env("DOCKER_HOST", Stack::get().node_docker_host(n))
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).to_string())
}

fn ready(url: &str) -> bool {
    Command::new("curl")
        .args([
            "-sf",
            "-o",
            "/dev/null",
            "--max-time",
            "3",
            &format!("{url}/readyz"),
        ])
        .status()
        .is_ok_and(|s| s.success())
}

/// The roles of the run, each restartable.
struct Cluster {
    ns: String,
    nodes: Vec<String>,
    agents: Vec<Agent>,
    schedulers: Vec<Scheduler>,
    web: Option<WebFront>,
    bastion: Bastion,
    web_port: u16,
    _host_key: tempfile::TempDir,
}

impl Cluster {
    fn agent_flags(&self) -> Vec<String> {
        ["--lease-namespace", &self.ns, "--lease-seconds", "6"]
            .map(String::from)
            .to_vec()
    }

    fn start_agent(&self, i: usize) -> Agent {
        let flags = self.agent_flags();
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        Agent::start_with(&self.nodes[i], i + 1, &flags)
    }

    /// SIGKILL, then a new process; the old handle is not dropped (its Drop deletes the
    /// node's servers, as a test's cleanup).
    fn restart_agent(&mut self, i: usize, after: Duration) {
        self.agents[i].kill();
        std::thread::sleep(after);
        let new = self.start_agent(i);
        std::mem::forget(std::mem::replace(&mut self.agents[i], new));
    }

    fn start_scheduler(&self, j: usize) -> Scheduler {
        Scheduler::start_with(
            &format!("chaos-{j}-{}", unique("s")),
            &self.ns,
            &self.ns,
            &["--usage-interval-seconds", "5"],
        )
    }

    fn restart_scheduler(&mut self, j: usize, after: Duration) {
        self.schedulers[j].kill();
        std::thread::sleep(after);
        self.schedulers[j] = self.start_scheduler(j);
    }

    fn restart_web(&mut self, after: Duration) {
        drop(self.web.take());
        std::thread::sleep(after);
        self.web = Some(start_web(&self.ns, self.web_port));
    }

    /// The process ids a pause may hit: (what, pid).
    fn processes(&self) -> Vec<(String, u32)> {
        let mut all: Vec<(String, u32)> = self
            .agents
            .iter()
            .map(|a| (format!("agent {}", a.node), a.pid()))
            .collect();
        for scheduler in &self.schedulers {
            all.push((format!("scheduler {}", scheduler.identity), scheduler.pid()));
        }
        if let Some(web) = &self.web {
            all.push(("web front".into(), web.pid()));
        }
        all.push(("bastion".into(), self.bastion.pid()));
        all
    }

    /// Every role's /readyz: the ones that are not ready.
    fn not_ready(&self) -> Vec<String> {
        let mut urls: Vec<(String, String)> = self
            .agents
            .iter()
            .map(|a| (format!("agent {}", a.node), a.health_url.clone()))
            .collect();
        for s in &self.schedulers {
            urls.push((format!("scheduler {}", s.identity), s.health_url.clone()));
        }
        if let Some(web) = &self.web {
            urls.push(("web front".into(), web.url.clone()));
        }
        urls.push(("bastion".into(), self.bastion.health_url.clone()));
        urls.into_iter()
            .filter(|(_, url)| !ready(url))
            .map(|(what, url)| format!("{what} ({url}/readyz)"))
            .collect()
    }
}

fn start_web(ns: &str, port: u16) -> WebFront {
    WebFront::start_on(ns, "compute-server", port)
}

/// The API server of the stack: SIGKILL, then the same command line again, in its own
/// process group and pid file (so `stack.sh down` stops it), until /readyz answers.
fn restart_apiserver(after: Duration) {
    let state = Stack::get().kubeconfig().parent().unwrap().to_path_buf();
    let pidfile = state.join("kube/apiserver.pid");
    let pid = support::stack_pid("apiserver");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("the apiserver runs");
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).to_string())
        .collect();
    let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
    while std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z")
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(after);
    let log = std::fs::OpenOptions::new()
        .append(true)
        .open(state.join("kube/apiserver.log"))
        .unwrap();
    let child = Command::new("setsid")
        .args(&args)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start kube-apiserver again");
    std::fs::write(&pidfile, child.id().to_string()).unwrap();
    std::mem::forget(child);
    support::eventually("the API server to be ready again", 120, || {
        kubectl(&["get", "--raw", "/readyz"], None)
            .status
            .success()
            .then_some(())
    });
}

/// The S3 store of the stack (SeaweedFS): SIGKILL of its process group, then started again on
/// the same port with the same keys and data, by the project's script.
fn restart_s3(after: Duration) {
    let state = Stack::get().kubeconfig().parent().unwrap().to_path_buf();
    let pid = std::fs::read_to_string(state.join("seaweedfs/weed.pid")).expect("SeaweedFS runs");
    let _ = Command::new("kill")
        .args(["-KILL", &format!("-{}", pid.trim())])
        .status();
    std::thread::sleep(after);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/seaweedfs.sh");
    let out = Command::new("bash")
        .args([script, "start"])
        .arg(&state)
        .output()
        .expect("seaweedfs.sh");
    assert!(
        out.status.success(),
        "SeaweedFS did not start again: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The agents copying now: (index, " mid-snapshot of X" or " mid-restore of X").
fn copying(cluster: &Cluster) -> Vec<(usize, String)> {
    let servers = server_list(&cluster.ns).unwrap_or_default();
    let node_of = |name: &str| {
        let server = servers.iter().find(|s| s["metadata"]["name"] == name)?;
        let node = server["metadata"]["labels"]["computeserver.io/node"].as_str()?;
        cluster.nodes.iter().position(|n| n == node)
    };
    let mut busy = vec![];
    for snapshot in snapshot_list(&cluster.ns).unwrap_or_default() {
        // Pending: being copied, or about to be.
        if !matches!(snapshot["status"]["phase"].as_str(), Some("Ready" | "Failed"))
            && let Some(i) = node_of(snapshot["spec"]["server"].as_str().unwrap_or(""))
        {
            busy.push((i, format!(" mid-snapshot of {}", snapshot["spec"]["server"])));
        }
    }
    for server in &servers {
        let name = server["metadata"]["name"].as_str().unwrap_or("");
        if server["status"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("restoring"))
            && let Some(i) = node_of(name)
        {
            busy.push((i, format!(" mid-restore of {name}")));
        }
    }
    busy
}

/// One server the workload made.
#[derive(Clone, Debug, Default)]
struct Made {
    name: String,
    uid: Option<String>,
    /// The create got a 2xx.
    acknowledged: bool,
    /// A delete got a 2xx.
    deleted: bool,
    /// `spec.running` as the last acknowledged stop or start left it; None when the last
    /// such request failed (it may or may not have been carried out).
    running: Option<bool>,
    /// The marker file was written into its data volume.
    marked: bool,
}

#[derive(Default)]
struct Record {
    made: Vec<Made>,
    /// Snapshots asked for (acknowledged).
    snapshots: Vec<String>,
    requests: usize,
    acknowledged: usize,
}

/// A user's bearer token for the web front's JSON API, refreshed every minute.
struct Tokens {
    runtime: tokio::runtime::Runtime,
    cached: HashMap<String, (String, Instant)>,
}

impl Tokens {
    fn get(&mut self, user: &str) -> String {
        if let Some((token, at)) = self.cached.get(user)
            && at.elapsed() < Duration::from_secs(60)
        {
            return token.clone();
        }
        let token = self
            .runtime
            .block_on(support::access_token("compute-server", user));
        self.cached.insert(user.into(), (token.clone(), Instant::now()));
        token
    }
}

/// `curl` to the web front's JSON API: the status code and body (0 when it did not answer).
fn web_api(web: &str, token: &str, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let mut command = Command::new("curl");
    command.args(["-s", "--max-time", "10", "-X", method, "-w", "\n%{http_code}"]);
    command.args(["-H", &format!("Authorization: Bearer {token}")]);
    if let Some(body) = body {
        command.args(["-H", "Content-Type: application/json", "-d", &body.to_string()]);
    }
    let Ok(out) = command.arg(format!("{web}{path}")).output() else {
        return (0, Value::Null);
    };
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (
        code.trim().parse().unwrap_or(0),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

fn server_list(ns: &str) -> Option<Vec<Value>> {
    list(ns, "csrv")
}

fn snapshot_list(ns: &str) -> Option<Vec<Value>> {
    list(ns, "csnap")
}

fn list(ns: &str, kind: &str) -> Option<Vec<Value>> {
    let out = kubectl(
        &["get", kind, "-n", ns, "-o", "json", "--request-timeout=10s"],
        None,
    );
    let list: Value = serde_json::from_slice(&out.stdout).ok()?;
    out.status
        .success()
        .then(|| list["items"].as_array().cloned().unwrap_or_default())
}

/// Users creating, stopping, starting and deleting servers until `stop`, at random from `seed`.
fn workload(
    ns: String,
    web_url: String,
    nodes: Vec<String>,
    seed: u64,
    stop: Arc<AtomicBool>,
    record: Arc<Mutex<Record>>,
) {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed_cafe);
    let mut tokens = Tokens {
        runtime: tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap(),
        cached: HashMap::new(),
    };
    let users = ["alice", "bob"];
    let mut count = 0;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(rng.random_range(300..1500)));
        let live: Vec<usize> = {
            let record = record.lock().unwrap();
            (0..record.made.len())
                .filter(|&i| !record.made[i].deleted)
                .collect()
        };
        let choice = rng.random_range(0..100);
        let user = users[rng.random_range(0..users.len())];
        let via_web = rng.random_bool(0.5);
        let ack = match choice {
            0..35 if live.len() < MOST_SERVERS => {
                count += 1;
                let name = format!("w{count:03}");
                let mut made = Made {
                    name: name.clone(),
                    running: Some(true),
                    ..Default::default()
                };
                if via_web {
                    let body = serde_json::json!({ "name": name, "profile": "tiny" });
                    let (code, answer) = web_api(
                        &web_url,
                        &tokens.get(user),
                        "POST",
                        "/api/v1/servers",
                        Some(&body),
                    );
                    made.acknowledged = (200..300).contains(&code);
                    made.uid = answer["uid"].as_str().map(String::from);
                } else {
                    let yaml = format!(
                        "apiVersion: computeserver.io/v1alpha1\nkind: ComputeServer\nmetadata: {{name: {name}, namespace: {ns}}}\n\
                         spec: {{owner: {user}, profile: tiny}}\n"
                    );
                    let out = kubectl(
                        &[
                            "create",
                            "-f",
                            "-",
                            "-o",
                            "jsonpath={.metadata.uid}",
                            "--request-timeout=10s",
                        ],
                        Some(&yaml),
                    );
                    made.acknowledged = out.status.success();
                    made.uid = made
                        .acknowledged
                        .then(|| String::from_utf8_lossy(&out.stdout).to_string());
                }
                let ack = made.acknowledged;
                record.lock().unwrap().made.push(made);
                ack
            }
            0..65 if !live.is_empty() => {
                let i = live[rng.random_range(0..live.len())];
                let name = record.lock().unwrap().made[i].name.clone();
                let running = rng.random_bool(0.5);
                let ok = if via_web {
                    let owner = owner_of(&ns, &name).unwrap_or_else(|| user.to_string());
                    let path = format!(
                        "/api/v1/servers/{name}/{}",
                        if running { "start" } else { "stop" }
                    );
                    let (code, _) = web_api(&web_url, &tokens.get(&owner), "POST", &path, None);
                    (200..300).contains(&code)
                } else {
                    let patch = format!(r#"{{"spec":{{"running":{running}}}}}"#);
                    kubectl(
                        &[
                            "patch",
                            "csrv",
                            "-n",
                            &ns,
                            &name,
                            "--type=merge",
                            "-p",
                            &patch,
                            "--request-timeout=10s",
                        ],
                        None,
                    )
                    .status
                    .success()
                };
                record.lock().unwrap().made[i].running = ok.then_some(running);
                ok
            }
            0..80 if !live.is_empty() => {
                let i = live[rng.random_range(0..live.len())];
                let name = record.lock().unwrap().made[i].name.clone();
                let ok = if via_web {
                    let owner = owner_of(&ns, &name).unwrap_or_else(|| user.to_string());
                    let (code, _) = web_api(
                        &web_url,
                        &tokens.get(&owner),
                        "DELETE",
                        &format!("/api/v1/servers/{name}"),
                        None,
                    );
                    (200..300).contains(&code)
                } else {
                    kubectl(
                        &[
                            "delete",
                            "csrv",
                            "-n",
                            &ns,
                            &name,
                            "--wait=false",
                            "--request-timeout=10s",
                        ],
                        None,
                    )
                    .status
                    .success()
                };
                if ok {
                    record.lock().unwrap().made[i].deleted = true;
                }
                ok
            }
            0..88 if !live.is_empty() => {
                // A snapshot of a server, by its owner.
                let i = live[rng.random_range(0..live.len())];
                let name = record.lock().unwrap().made[i].name.clone();
                let Some(owner) = owner_of(&ns, &name) else {
                    continue;
                };
                let taken = if via_web {
                    let path = format!("/api/v1/servers/{name}/snapshots");
                    let (code, answer) = web_api(&web_url, &tokens.get(&owner), "POST", &path, None);
                    answer["name"]
                        .as_str()
                        .filter(|_| (200..300).contains(&code))
                        .map(String::from)
                } else {
                    let snapshot = format!("{name}-s{}", rng.random_range(0..1_000_000));
                    let yaml = format!(
                        "apiVersion: computeserver.io/v1alpha1\nkind: ComputeSnapshot\nmetadata: {{name: {snapshot}, namespace: {ns}}}\n\
                         spec: {{server: {name}, owner: {owner}}}\n"
                    );
                    kubectl(&["create", "-f", "-", "--request-timeout=10s"], Some(&yaml))
                        .status
                        .success()
                        .then_some(snapshot)
                };
                if let Some(snapshot) = &taken {
                    record.lock().unwrap().snapshots.push(snapshot.clone());
                }
                taken.is_some()
            }
            0..92 if live.len() < MOST_SERVERS => {
                // A clone of a Ready snapshot, by the snapshot's owner, through the web front.
                let ready: Vec<(String, String)> = snapshot_list(&ns)
                    .unwrap_or_default()
                    .iter()
                    .filter(|s| s["status"]["phase"] == "Ready")
                    .filter_map(|s| {
                        Some((
                            s["metadata"]["name"].as_str()?.to_string(),
                            s["spec"]["owner"].as_str()?.to_string(),
                        ))
                    })
                    .collect();
                if ready.is_empty() {
                    continue;
                }
                let (snapshot, owner) = &ready[rng.random_range(0..ready.len())];
                count += 1;
                let name = format!("w{count:03}");
                let body = serde_json::json!({
                    "name": name, "profile": "tiny", "restoreFrom": {"snapshot": snapshot}
                });
                let (code, answer) = web_api(
                    &web_url,
                    &tokens.get(owner),
                    "POST",
                    "/api/v1/servers",
                    Some(&body),
                );
                let made = Made {
                    name,
                    running: Some(true),
                    acknowledged: (200..300).contains(&code),
                    uid: answer["uid"].as_str().map(String::from),
                    ..Default::default()
                };
                let ack = made.acknowledged;
                record.lock().unwrap().made.push(made);
                ack
            }
            _ => {
                // Leave a mark in the data volume of a running server, to find it again at the end.
                let unmarked: Vec<usize> = {
                    let record = record.lock().unwrap();
                    live.iter().copied().filter(|&i| !record.made[i].marked).collect()
                };
                if unmarked.is_empty() {
                    continue;
                }
                let i = unmarked[rng.random_range(0..unmarked.len())];
                let name = record.lock().unwrap().made[i].name.clone();
                let Some(server) = support::server_json(&ns, &name) else {
                    continue;
                };
                let (Some(uid), Some(node)) = (
                    server["metadata"]["uid"].as_str(),
                    server["metadata"]["labels"]["computeserver.io/node"].as_str(),
                ) else {
                    continue;
                };
                let Some(engine) = nodes.iter().position(|n| n == node) else {
                    continue;
                };
                let container = format!("csrv.{ns}.{name}");
                let write = format!("echo {uid} > {MARKER}");
                if docker(engine + 1, &["exec", &container, "sh", "-c", &write]).is_some() {
                    let mut record = record.lock().unwrap();
                    record.made[i].marked = true;
                    record.made[i].uid = Some(uid.to_string());
                }
                continue;
            }
        };
        let mut record = record.lock().unwrap();
        record.requests += 1;
        record.acknowledged += usize::from(ack);
    }
}

fn owner_of(ns: &str, name: &str) -> Option<String> {
    support::server_json(ns, name)?["spec"]["owner"]
        .as_str()
        .map(String::from)
}

/// Watches where each server is placed: a server whose node label ever changes to another
/// node was placed twice. (uid → node, and the changes seen.)
fn placements(ns: String, stop: Arc<AtomicBool>, twice: Arc<Mutex<Vec<String>>>) {
    let mut seen: HashMap<String, String> = HashMap::new();
    while !stop.load(Ordering::Relaxed) {
        for server in server_list(&ns).unwrap_or_default() {
            let (Some(uid), Some(node)) = (
                server["metadata"]["uid"].as_str(),
                server["metadata"]["labels"]["computeserver.io/node"].as_str(),
            ) else {
                continue;
            };
            if let Some(before) = seen.insert(uid.to_string(), node.to_string())
                && before != node
            {
                let name = server["metadata"]["name"].as_str().unwrap_or("?");
                twice.lock().unwrap().push(format!(
                    "server {name} ({uid}) moved from node {before} to {node}"
                ));
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The CPU-hours the servers of `ns` hold, counted by looking every half second until `stop`:
/// each server placed on a node, asked to run, not archived nor being deleted, at its size (as
/// the ledger counts it, independently). With the most CPUs held at once.
fn observe_usage(ns: String, stop: Arc<AtomicBool>) -> (f64, f64) {
    use compute_server::api::{ComputeProfile, ComputeServer, Profiles, size};
    let out = kubectl(&["get", "computeprofiles", "-o", "json"], None);
    let profiles: Profiles = serde_json::from_slice::<Value>(&out.stdout)
        .ok()
        .and_then(|list| serde_json::from_value::<Vec<ComputeProfile>>(list["items"].clone()).ok())
        .unwrap_or_default()
        .into_iter()
        .collect();
    let (mut hours, mut most) = (0.0, 0.0f64);
    let mut last = Instant::now();
    let mut held = 0.0;
    while !stop.load(Ordering::Relaxed) {
        if let Some(list) = server_list(&ns) {
            let now = Instant::now();
            hours += held * now.duration_since(last).as_secs_f64() / 3600.0;
            last = now;
            held = list
                .into_iter()
                .filter_map(|v| serde_json::from_value::<ComputeServer>(v).ok())
                .filter(|s| {
                    s.metadata
                        .labels
                        .as_ref()
                        .is_some_and(|l| l.contains_key("computeserver.io/node"))
                        && s.spec.running
                        && s.metadata.deletion_timestamp.is_none()
                        && s.archived_to().is_none()
                })
                .map(|s| {
                    size::request(&s, profiles.of(&s))
                        .map(|r| r.nano_cpus)
                        .unwrap_or(0) as f64
                        / 1e9
                })
                .sum();
            most = most.max(held);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    hours += held * last.elapsed().as_secs_f64() / 3600.0;
    (hours, most)
}

/// The CPU-hours in the usage ledger of the namespace's schedulers, and up to when it counted.
fn ledger(ns: &str) -> Option<(f64, String)> {
    let selector = format!("computeserver.io/namespace={ns}");
    let out = kubectl(&["get", "computeusages", "-l", &selector, "-o", "json"], None);
    let list: Value = serde_json::from_slice(&out.stdout).ok()?;
    let days = list["items"].as_array()?;
    let hours = days
        .iter()
        .flat_map(|d| d["spec"]["owners"].as_array().cloned().unwrap_or_default())
        .map(|o| o["cpuHours"].as_f64().unwrap_or(0.0))
        .sum();
    let until = days
        .iter()
        .filter_map(|d| d["spec"]["countedUntil"].as_str())
        .max()?
        .to_string();
    Some((hours, until))
}

/// What Docker holds of the namespace's servers on every engine: uid → (engine, running), and
/// the data volumes' uids with their engines.
type Containers = BTreeMap<String, Vec<(usize, bool)>>;
fn docker_state(ns: &str) -> Option<(Containers, BTreeMap<String, Vec<usize>>)> {
    let filter = format!("label={NAMESPACE_LABEL}={ns}");
    let mut containers = Containers::new();
    let mut volumes: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for engine in 1..=NODES {
        let format = format!("{{{{.Label \"{UID_LABEL}\"}}}} {{{{.State}}}}");
        let out = docker(engine, &["ps", "-a", "--filter", &filter, "--format", &format])?;
        for line in out.lines() {
            let (uid, state) = line.split_once(' ').unwrap_or((line, ""));
            containers
                .entry(uid.to_string())
                .or_default()
                .push((engine, state == "running"));
        }
        let format = format!("{{{{.Label \"{UID_LABEL}\"}}}}");
        let out = docker(
            engine,
            &["volume", "ls", "--filter", &filter, "--format", &format],
        )?;
        for uid in out.lines() {
            volumes.entry(uid.to_string()).or_default().push(engine);
        }
    }
    Some((containers, volumes))
}

/// Every invariant that does not hold, with its evidence.
fn violations(cluster: &Cluster, record: &Record, twice: &[String]) -> Vec<String> {
    let ns = &cluster.ns;
    let mut found: Vec<String> = twice.to_vec();
    let Some(servers) = server_list(ns) else {
        return vec!["the API server does not list the servers".into()];
    };
    let Some((containers, volumes)) = docker_state(ns) else {
        return vec!["a Docker engine does not answer".into()];
    };
    let mut live = BTreeSet::new();
    for server in &servers {
        let name = server["metadata"]["name"].as_str().unwrap_or("?");
        let uid = server["metadata"]["uid"].as_str().unwrap_or("?").to_string();
        live.insert(uid.clone());
        if server["metadata"]["deletionTimestamp"].is_string() {
            found.push(format!(
                "server {name} is still being deleted: {}",
                server["status"]["message"]
            ));
            continue;
        }
        let running = server["spec"]["running"].as_bool().unwrap_or(true);
        let desired = if running { "Running" } else { "Stopped" };
        let phase = server["status"]["phase"].as_str().unwrap_or("none");
        if phase != desired {
            found.push(format!(
                "server {name} is {phase}, not {desired}: {}",
                server["status"]["message"].as_str().unwrap_or("")
            ));
        }
        let node = server["metadata"]["labels"]["computeserver.io/node"].as_str();
        let engine = node
            .and_then(|n| cluster.nodes.iter().position(|x| x == n))
            .map(|i| i + 1);
        match (containers.get(&uid).map(Vec::as_slice), engine) {
            (Some([(on, state)]), Some(engine)) if *on == engine => {
                if *state != running && phase == desired {
                    found.push(format!("server {name} says {phase} but its container's running is {state}"));
                }
            }
            (found_containers, _) => found.push(format!(
                "server {name} on node {node:?} (engine {engine:?}) has containers {found_containers:?}, not exactly one there"
            )),
        }
    }
    for (uid, on) in &containers {
        if !live.contains(uid) {
            found.push(format!(
                "a container of deleted server {uid} is left on engine(s) {on:?}"
            ));
        }
    }
    for (uid, on) in &volumes {
        if !live.contains(uid) {
            found.push(format!(
                "the data volume of deleted server {uid} is left on engine(s) {on:?}"
            ));
        }
    }
    for made in &record.made {
        let current = servers
            .iter()
            .find(|s| s["metadata"]["name"] == made.name.as_str());
        let same = |s: &&Value| made.uid.as_deref().is_none_or(|uid| s["metadata"]["uid"] == uid);
        if made.acknowledged && !made.deleted && !current.is_some_and(|s| same(&s)) {
            found.push(format!(
                "server {} was created (2xx) and never deleted, and is gone or replaced",
                made.name
            ));
        }
        if let (Some(server), false) = (current, made.deleted) {
            if let Some(running) = made.running
                && server["spec"]["running"].as_bool() != Some(running)
            {
                found.push(format!(
                    "server {}: the last acknowledged request set running to {running}, and it is {}",
                    made.name, server["spec"]["running"]
                ));
            }
            if made.marked && same(&server) {
                let node = server["metadata"]["labels"]["computeserver.io/node"]
                    .as_str()
                    .unwrap_or("");
                let engine = cluster.nodes.iter().position(|n| n == node).map_or(1, |i| i + 1);
                let running = server["spec"]["running"].as_bool().unwrap_or(true);
                let container = format!("csrv.{ns}.{}", made.name);
                // A stopped container cannot exec: the volume is read through a helper then.
                let marker = if running {
                    docker(engine, &["exec", &container, "cat", MARKER])
                } else {
                    let volume = format!("{container}.{}.data", made.uid.as_deref().unwrap_or(""));
                    let mount = format!("{volume}:/data:ro");
                    docker(
                        engine,
                        &[
                            "run",
                            "--rm",
                            "--network",
                            "none",
                            "-v",
                            &mount,
                            "computeserver/busybox:local",
                            "cat",
                            "/data/.chaos-marker",
                        ],
                    )
                };
                if marker.as_deref().map(str::trim) != made.uid.as_deref() {
                    found.push(format!(
                        "server {}: the marker in its data volume is {marker:?}, not its uid",
                        made.name
                    ));
                }
            }
        }
    }
    match snapshot_list(ns) {
        Some(snapshots) => {
            for snapshot in snapshots {
                if !matches!(snapshot["status"]["phase"].as_str(), Some("Ready" | "Failed")) {
                    found.push(format!(
                        "snapshot {} is {}: {}",
                        snapshot["metadata"]["name"],
                        snapshot["status"]["phase"],
                        snapshot["status"]["message"]
                    ));
                }
            }
        }
        None => found.push("the API server does not list the snapshots".into()),
    }
    for role in cluster.not_ready() {
        found.push(format!("{role} is not ready"));
    }
    found
}

/// Every snapshot that says Ready restores with its checksum: a new server from each (as its
/// owner would make it) runs, and says it was restored with that checksum. The violations.
fn restores(ns: &str) -> Vec<String> {
    let ready: Vec<Value> = snapshot_list(ns)
        .unwrap_or_default()
        .into_iter()
        .filter(|s| s["status"]["phase"] == "Ready")
        .collect();
    let mut checks = vec![];
    for (i, snapshot) in ready.iter().enumerate() {
        let (name, owner) = (
            snapshot["metadata"]["name"].as_str().unwrap_or("?"),
            snapshot["spec"]["owner"].as_str().unwrap_or("?"),
        );
        let clone = format!("r{i:03}");
        let yaml = format!(
            "apiVersion: computeserver.io/v1alpha1\nkind: ComputeServer\nmetadata: {{name: {clone}, namespace: {ns}}}\n\
             spec: {{owner: {owner}, profile: tiny, restoreFrom: {{snapshot: {name}}}}}\n"
        );
        if kubectl(&["create", "-f", "-"], Some(&yaml)).status.success() {
            checks.push((clone, name.to_string(), snapshot["status"]["checksum"].clone()));
        }
    }
    let mut found = vec![];
    let deadline = Instant::now() + SETTLE;
    for (clone, snapshot, checksum) in &checks {
        let server = loop {
            let server = support::server_json(ns, clone);
            let phase = server
                .as_ref()
                .and_then(|s| s["status"]["phase"].as_str().map(String::from));
            if phase.as_deref() == Some("Running") || Instant::now() > deadline {
                break server;
            }
            std::thread::sleep(Duration::from_secs(1));
        };
        let server = server.unwrap_or_default();
        if server["status"]["phase"] != "Running" || server["status"]["restoredFrom"]["checksum"] != *checksum
        {
            found.push(format!(
                "snapshot {snapshot} says Ready with checksum {checksum}, and a server from it is {} ({}), restored with {}",
                server["status"]["phase"], server["status"]["message"], server["status"]["restoredFrom"]["checksum"]
            ));
        }
    }
    println!(
        "{} Ready snapshots restored, {} violations",
        checks.len(),
        found.len()
    );
    found
}

#[test]
fn chaos_loses_nothing_and_places_nothing_twice() {
    let seconds = env_number("CHAOS_SECONDS").unwrap_or(60);
    let seed = env_number("CHAOS_SEED").unwrap_or(1);
    println!("chaos: {seconds} s of faults, seed {seed} (CHAOS_SEED={seed} replays them)");
    install_crds();
    let ns = TestNamespace::new("chaos");
    let host_key = tempfile::tempdir().unwrap();
    let key_file = host_key.path().join("host_key");
    let nodes: Vec<String> = (1..=NODES).map(|i| format!("{}-{i}", unique("chaos"))).collect();
    let web_port = support::free_port();
    let mut cluster = Cluster {
        ns: ns.name.clone(),
        agents: vec![],
        schedulers: vec![],
        web: Some(start_web(&ns.name, web_port)),
        bastion: Bastion::start(&ns.name, &key_file),
        nodes,
        web_port,
        _host_key: host_key,
    };
    cluster.agents = (0..NODES).map(|i| cluster.start_agent(i)).collect();
    cluster.schedulers = (0..2).map(|j| cluster.start_scheduler(j)).collect();
    support::eventually("every role ready", 90, || {
        cluster.not_ready().is_empty().then_some(())
    });

    let stop = Arc::new(AtomicBool::new(false));
    let record = Arc::new(Mutex::new(Record::default()));
    let twice = Arc::new(Mutex::new(Vec::new()));
    let web_url = cluster.web.as_ref().unwrap().url.clone();
    let users = {
        let (ns, nodes, stop, record) = (
            ns.name.clone(),
            cluster.nodes.clone(),
            stop.clone(),
            record.clone(),
        );
        std::thread::spawn(move || workload(ns, web_url, nodes, seed, stop, record))
    };
    let watch = {
        let (ns, stop, twice) = (ns.name.clone(), stop.clone(), twice.clone());
        std::thread::spawn(move || placements(ns, stop, twice))
    };
    let observed = Arc::new(AtomicBool::new(false));
    let observer = {
        let (ns, observed) = (ns.name.clone(), observed.clone());
        std::thread::spawn(move || observe_usage(ns, observed))
    };

    let mut rng = StdRng::seed_from_u64(seed);
    let start = Instant::now();
    let mut faults = 0;
    while start.elapsed() < Duration::from_secs(seconds) {
        std::thread::sleep(Duration::from_millis(rng.random_range(2000..6000)));
        let after = Duration::from_millis(rng.random_range(0..4000));
        faults += 1;
        let what = match rng.random_range(0..13) {
            0..3 => {
                // An agent copying a snapshot, or restoring one, when there is one.
                let busy = copying(&cluster);
                let (i, doing) = match busy.is_empty() {
                    true => (rng.random_range(0..NODES), String::new()),
                    false => busy[rng.random_range(0..busy.len())].clone(),
                };
                cluster.restart_agent(i, after);
                format!(
                    "SIGKILL agent {}{doing} (started again {:.1} s later)",
                    cluster.nodes[i],
                    after.as_secs_f64()
                )
            }
            3..5 => {
                let j = rng.random_range(0..2);
                let identity = cluster.schedulers[j].identity.clone();
                cluster.restart_scheduler(j, after);
                format!(
                    "SIGKILL scheduler {identity} (a new one {:.1} s later)",
                    after.as_secs_f64()
                )
            }
            5 => {
                cluster.restart_web(after);
                format!(
                    "SIGKILL the web front (started again {:.1} s later)",
                    after.as_secs_f64()
                )
            }
            6 => {
                cluster.bastion.restart();
                "SIGKILL the bastion (started again)".to_string()
            }
            7..9 => {
                let n = rng.random_range(2..=NODES);
                Stack::get().node_docker(n, false);
                std::thread::sleep(after);
                Stack::get().node_docker(n, true);
                format!(
                    "dockerd of node {} stopped for {:.1} s",
                    cluster.nodes[n - 1],
                    after.as_secs_f64()
                )
            }
            9..11 => {
                let processes = cluster.processes();
                let (what, pid) = &processes[rng.random_range(0..processes.len())];
                let pause = Duration::from_millis(rng.random_range(1000..8000));
                let _ = Command::new("kill").args(["-STOP", &pid.to_string()]).status();
                std::thread::sleep(pause);
                let _ = Command::new("kill").args(["-CONT", &pid.to_string()]).status();
                format!("SIGSTOP {what} for {:.1} s, then SIGCONT", pause.as_secs_f64())
            }
            11 => {
                restart_s3(after);
                format!(
                    "SIGKILL the S3 store (started again {:.1} s later)",
                    after.as_secs_f64()
                )
            }
            _ => {
                restart_apiserver(after);
                format!(
                    "SIGKILL kube-apiserver (started again {:.1} s later)",
                    after.as_secs_f64()
                )
            }
        };
        println!("{} fault {faults}: {what}", elapsed(start));
    }
    stop.store(true, Ordering::Relaxed);
    users.join().unwrap();
    watch.join().unwrap();
    println!(
        "{} faults stopped; checking the invariants (up to {} s to settle)",
        elapsed(start),
        SETTLE.as_secs()
    );

    let settled = Instant::now();
    let record = record.lock().unwrap();
    let twice = twice.lock().unwrap().clone();
    let mut found = violations(&cluster, &record, &twice);
    while !found.is_empty() && settled.elapsed() < SETTLE {
        std::thread::sleep(Duration::from_secs(2));
        found = violations(&cluster, &record, &twice);
    }
    let servers = record.made.len();
    println!(
        "{} settled in {:.0} s; {} requests, {} acknowledged; {} servers made, {} deleted, {} marked",
        elapsed(start),
        settled.elapsed().as_secs_f64(),
        record.requests,
        record.acknowledged,
        servers,
        record.made.iter().filter(|m| m.deleted).count(),
        record.made.iter().filter(|m| m.marked).count(),
    );
    for violation in &found {
        println!("violation: {violation}");
    }
    println!(
        "chaos: {faults} faults, {servers} servers, {} violations (seed {seed})",
        found.len()
    );
    assert!(
        found.is_empty(),
        "{} violations (seed {seed}): {found:#?}",
        found.len()
    );
    println!(
        "{} snapshots asked for; restoring every Ready one",
        record.snapshots.len()
    );
    let found = restores(&ns.name);
    assert!(found.is_empty(), "{found:#?}");

    // The hours: what the schedulers counted into the API server, through every kill (theirs,
    // the API server's, the agents'), against what was seen to run, within a minute of what
    // was held at most.
    observed.store(true, Ordering::Relaxed);
    let (seen, most) = observer.join().unwrap();
    let (counted, until) = ledger(&ns.name).expect("the usage ledger of the chaos schedulers");
    let tolerance = most.max(0.25) * 60.0 / 3600.0;
    println!(
        "usage: {counted:.4} CPU-hours counted (up to {until}), {seen:.4} seen running; \
         at most {most} CPUs held at once; tolerance {tolerance:.4}"
    );
    assert!(
        (counted - seen).abs() <= tolerance,
        "the ledger counted {counted:.4} CPU-hours, {seen:.4} were seen running (more than a minute of {most} CPUs apart)"
    );

    // Clean up while the agents run: their finalizers remove the containers and volumes.
    let _ = kubectl(
        &["delete", "csrv", "-n", &ns.name, "--all", "--timeout=120s"],
        None,
    );
    let _ = kubectl(
        &["delete", "csnap", "-n", &ns.name, "--all", "--timeout=120s"],
        None,
    );
}
