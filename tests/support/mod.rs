//! Shared by the integration tests: where the real stack answers, and a namespace per test.
//!
//! `make test` (tests/support/stack.sh) starts one Docker engine, one kube-apiserver and one
//! Keycloak for the whole run and writes their addresses to an env file named by
//! `COMPUTE_SERVER_TEST_ENV`. These tests never start a stand-in: without the stack they fail
//! and say how to get one.
#![allow(dead_code)] // each test binary uses its own part of this module

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::OnceLock;

mod bastion;
#[allow(unused_imports)] // used by tests/bastion.rs and tests/chaos.rs only
pub use bastion::Bastion;
pub mod chromium;
pub mod people;
pub mod signin;
mod ssh_user;
#[allow(unused_imports)] // used by tests/bastion.rs and tests/cluster.rs only
pub use ssh_user::SshUser;

/// Where the real components of this test run answer.
pub struct Stack {
    vars: HashMap<String, String>,
}

impl Stack {
    pub fn get() -> &'static Stack {
        static STACK: OnceLock<Stack> = OnceLock::new();
        STACK.get_or_init(|| {
            // reqwest is built without a TLS provider of its own (as in the binary): use ring.
            let _ = rustls::crypto::ring::default_provider().install_default();
            let path = std::env::var("COMPUTE_SERVER_TEST_ENV").unwrap_or_else(|_| {
                concat!(env!("CARGO_MANIFEST_DIR"), "/target/test/env").to_string()
            });
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
                panic!(
                    "the integration tests need the real stack, whose addresses are in {path} ({e}). \
                     Run them with `make test`, or start it with `bash tests/support/stack.sh up target/test`."
                )
            });
            let vars = text
                .lines()
                .filter_map(|line| line.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            Stack { vars }
        })
    }

    pub fn var(&self, key: &str) -> &str {
        self.vars
            .get(key)
            .unwrap_or_else(|| panic!("{key} is missing from the stack's env file"))
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.var("KUBECONFIG").into()
    }

    pub fn keycloak_issuer(&self) -> &str {
        self.var("KEYCLOAK_ISSUER")
    }

    pub fn docker_host(&self) -> &str {
        self.var("DOCKER_HOST")
    }

    /// The environment that points an agent at the stack's S3 store (SeaweedFS), as the Helm
    /// chart's snapshots.store and credentials Secret do.
    pub fn snapshot_env(&self) -> Vec<(&'static str, &str)> {
        vec![
            ("COMPUTE_SERVER_SNAPSHOT_STORE", self.var("SNAPSHOT_STORE")),
            ("AWS_ENDPOINT", self.var("S3_ENDPOINT")),
            ("AWS_ACCESS_KEY_ID", self.var("S3_ACCESS_KEY")),
            ("AWS_SECRET_ACCESS_KEY", self.var("S3_SECRET_KEY")),
            ("AWS_ALLOW_HTTP", "true"),
            ("AWS_REGION", "us-east-1"),
        ]
    }

    /// The Docker engine of local node `n`: 1 is the main daemon, 2 and 3 have their own
    /// data root, socket and bridge (started by stack.sh with NODES=3).
    pub fn node_docker_host(&self, n: usize) -> &str {
        match n {
            1 => self.docker_host(),
            n => self.var(&format!("DOCKER_HOST_{n}")),
        }
    }

    /// Stops (`false`) or starts again (`true`) the dockerd of local node `n` (2 or 3),
    /// keeping its containers and data, as a host's Docker restarting would.
    pub fn node_docker(&self, n: usize, running: bool) {
        let env = std::env::var("COMPUTE_SERVER_TEST_ENV")
            .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/target/test/env").to_string());
        let state = std::path::Path::new(&env).parent().expect("state dir");
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/docker.sh");
        let command = if running { "node-start" } else { "node-halt" };
        let status = Command::new("bash")
            .args([script, command])
            .arg(state)
            .arg(n.to_string())
            .status()
            .expect("run docker.sh");
        assert!(status.success(), "docker.sh {command} failed");
    }

    /// The kubectl built for this run, pointed at the test apiserver.
    pub fn kubectl(&self) -> Command {
        let mut cmd = Command::new(self.var("KUBECTL"));
        cmd.arg("--kubeconfig").arg(self.kubeconfig());
        cmd
    }
}

/// A kube client for the test apiserver, as the admin.
pub async fn kube_client() -> kube::Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(Stack::get().kubeconfig()).expect("read kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("kubeconfig is usable");
    compute_server::kube_client::from_config(config).expect("kube client")
}

/// A Docker client for the test run's engine.
pub fn docker() -> bollard::Docker {
    bollard::Docker::connect_with_host(Stack::get().docker_host()).expect("docker client")
}

/// Runs kubectl with `args` and, if given, `stdin`; returns what it printed.
pub fn kubectl(args: &[&str], stdin: Option<&str>) -> Output {
    use std::io::Write;
    let mut cmd = Stack::get().kubectl();
    cmd.args(args);
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("run kubectl");
    let mut pipe = child.stdin.take().expect("stdin");
    pipe.write_all(stdin.unwrap_or_default().as_bytes())
        .expect("write to kubectl");
    drop(pipe);
    child.wait_with_output().expect("kubectl output")
}

/// Runs kubectl and returns its standard output, failing the test with its error otherwise.
pub fn kubectl_ok(args: &[&str], stdin: Option<&str>) -> String {
    let out = kubectl(args, stdin);
    assert!(
        out.status.success(),
        "kubectl {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// A namespace of this test's own, deleted when dropped (also when the test fails).
pub struct TestNamespace {
    pub name: String,
}

impl TestNamespace {
    pub fn new(prefix: &str) -> TestNamespace {
        let suffix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .subsec_nanos();
        let name = format!("{prefix}-{}-{suffix:x}", std::process::id());
        kubectl_ok(&["create", "namespace", &name], None);
        TestNamespace { name }
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        // Background deletion: the next test need not wait for it.
        let _ = kubectl(&["delete", "namespace", &self.name, "--wait=false"], None);
        // The cluster-wide quotas and usage of this namespace's scheduler, if it had any.
        let selector = format!("computeserver.io/namespace={}", self.name);
        let _ = kubectl(
            &[
                "delete",
                "computequotas,computeusages",
                "-l",
                &selector,
                "--wait=false",
            ],
            None,
        );
    }
}

/// Installs the CRDs from crds/ (idempotent) and waits until the apiserver serves them.
pub fn install_crds() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/crds");
    kubectl_ok(&["apply", "--server-side", "--force-conflicts", "-f", dir], None);
    kubectl_ok(
        &[
            "wait",
            "--for",
            "condition=Established",
            "--timeout=60s",
            "-f",
            dir,
        ],
        None,
    );
}

/// A `compute-server agent` process for a node of the test's own, stopped when dropped.
pub struct Agent {
    child: std::process::Child,
    pub node: String,
    /// Base URL of its /metrics, /healthz and /readyz.
    pub health_url: String,
    lease_namespace: String,
}

/// A free port on 127.0.0.1 for a process the test starts.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `compute-server ROLE ARGS` with the stack's kubeconfig, logging to
/// target/test-logs/LOG_NAME.log.
pub fn start_role(log_name: &str, args: &[&str], env: &[(&str, &str)]) -> std::process::Child {
    let log_dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target/test-logs"));
    std::fs::create_dir_all(&log_dir).unwrap();
    let log = std::fs::File::create(log_dir.join(format!("{log_name}.log"))).unwrap();
    Command::new(env!("CARGO_BIN_EXE_compute-server"))
        .args(args)
        .env("KUBECONFIG", Stack::get().kubeconfig())
        .env("RUST_LOG", "info,kube=warn")
        .envs(env.iter().copied())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start compute-server")
}

impl Agent {
    /// An agent for `node` on the main Docker engine, heartbeating in namespace compute.
    pub fn start(node: &str) -> Agent {
        Agent::start_with(node, 1, &[])
    }

    /// An agent for `node` on local Docker engine `daemon` (see [`Stack::node_docker_host`]),
    /// with more flags, e.g. `["--lease-namespace", ns, "--lease-seconds", "8"]`.
    pub fn start_with(node: &str, daemon: usize, extra: &[&str]) -> Agent {
        Agent::spawn(node, daemon, &Stack::get().kubeconfig(), extra)
    }

    /// An agent using `kubeconfig` (e.g. a ServiceAccount's token) and extra flags.
    pub fn start_as(node: &str, kubeconfig: &std::path::Path, flags: &[&str]) -> Agent {
        Agent::spawn(node, 1, kubeconfig, flags)
    }

    fn spawn(node: &str, daemon: usize, kubeconfig: &std::path::Path, extra: &[&str]) -> Agent {
        let port = free_port();
        let metrics = format!("127.0.0.1:{port}");
        let mut args = vec!["agent", "--node", node, "--metrics-address", &metrics];
        args.extend_from_slice(extra);
        let lease_namespace = extra
            .iter()
            .position(|a| *a == "--lease-namespace")
            .map(|i| extra[i + 1].to_string())
            .unwrap_or_else(|| "compute".into());
        let kubeconfig = kubeconfig.to_str().expect("utf-8 path");
        let mut env = Stack::get().snapshot_env();
        env.push(("DOCKER_HOST", Stack::get().node_docker_host(daemon)));
        env.push(("KUBECONFIG", kubeconfig));
        let child = start_role(&format!("agent-{node}"), &args, &env);
        Agent {
            child,
            node: node.to_string(),
            health_url: format!("http://127.0.0.1:{port}"),
            lease_namespace,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, as a crash would: no cleanup of any kind.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // Delete this node's servers while the agent still runs, so their finalizer removes
        // the containers and nothing is left behind in Docker.
        let selector = format!("computeserver.io/node={}", self.node);
        let _ = kubectl(&["delete", "csrv", "-A", "-l", &selector, "--timeout=60s"], None);
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = kubectl(&["delete", "computenode", &self.node, "--ignore-not-found"], None);
        let lease = format!("computenode-{}", self.node);
        let _ = kubectl(
            &[
                "delete",
                "lease",
                "-n",
                &self.lease_namespace,
                &lease,
                "--ignore-not-found",
            ],
            None,
        );
    }
}

/// A `compute-server scheduler` process, stopped (SIGTERM, so it hands its lease over)
/// when dropped.
pub struct Scheduler {
    child: std::process::Child,
    pub identity: String,
    /// Base URL of its /metrics, /healthz and /readyz.
    pub health_url: String,
}

impl Scheduler {
    /// A scheduler for the servers of `namespace`, with its leader Lease and the nodes'
    /// Leases in `lease_namespace`, and a 6 s leader Lease so takeovers are quick.
    pub fn start(identity: &str, namespace: &str, lease_namespace: &str) -> Scheduler {
        Scheduler::start_with(identity, namespace, lease_namespace, &[])
    }

    /// [`Scheduler::start`] with more flags, e.g. `["--usage-interval-seconds", "2"]`.
    pub fn start_with(identity: &str, namespace: &str, lease_namespace: &str, extra: &[&str]) -> Scheduler {
        let port = free_port();
        let metrics = format!("127.0.0.1:{port}");
        let mut args = vec![
            "scheduler",
            "--identity",
            identity,
            "--namespace",
            namespace,
            "--lease-namespace",
            lease_namespace,
            "--leader-lease-seconds",
            "6",
            "--metrics-address",
            &metrics,
        ];
        args.extend_from_slice(extra);
        let child = start_role(&format!("scheduler-{identity}"), &args, &[]);
        Scheduler {
            child,
            identity: identity.to_string(),
            health_url: format!("http://127.0.0.1:{port}"),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A counter or gauge from its /metrics, 0 when absent or unreadable.
    pub fn metric(&self, name: &str) -> u64 {
        metric(&self.health_url, name)
    }

    /// SIGKILL, as a crash would: the lease is not handed over.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }
}

/// The server as JSON, or None when it does not exist.
pub fn server_json(ns: &str, name: &str) -> Option<serde_json::Value> {
    let out = kubectl(&["get", "csrv", "-n", ns, name, "-o", "json"], None);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).unwrap())
}

/// The server's condition of `type_` (Null when it has none).
pub fn condition<'a>(server: &'a serde_json::Value, type_: &str) -> &'a serde_json::Value {
    server["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == type_))
        .unwrap_or(&serde_json::Value::Null)
}

/// When the server's Ready condition last changed: for a stopped server, when it stopped.
pub fn ready_since(server: &serde_json::Value) -> jiff::Timestamp {
    condition(server, "Ready")["lastTransitionTime"]
        .as_str()
        .expect("a Ready condition")
        .parse()
        .unwrap()
}

/// Waits until the server's phase is `phase` and returns the server.
pub fn wait_phase(ns: &str, name: &str, phase: &str) -> serde_json::Value {
    eventually(&format!("{name} to be {phase}"), 90, || {
        server_json(ns, name).filter(|s| s["status"]["phase"] == phase)
    })
}

/// `docker inspect` of a container on the main engine, or None when it does not exist.
pub fn inspect(container: &str) -> Option<serde_json::Value> {
    let out = docker_cli(&["inspect", container]);
    out.status
        .success()
        .then(|| serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()[0].clone())
}

/// `kubectl get events` of one object, as text.
pub fn events(ns: &str, name: &str) -> String {
    kubectl_ok(
        &[
            "get",
            "events",
            "-n",
            ns,
            "--field-selector",
            &format!("involvedObject.name={name}"),
        ],
        None,
    )
}

/// A counter or gauge from the /metrics at `base_url`, 0 when absent or unreadable.
pub fn metric(base_url: &str, name: &str) -> u64 {
    let out = Command::new("curl")
        .args(["-sf", &format!("{base_url}/metrics")])
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| {
            l.strip_prefix(name)?
                .strip_prefix(' ')?
                .trim()
                .parse::<f64>()
                .ok()
        })
        .map(|v| v as u64)
        .unwrap_or(0)
}

/// A `VmHWM:` (peak) or `VmRSS:` line of /proc/PID/status, in KiB.
pub fn status_kib(pid: u32, key: &str) -> u64 {
    kib_line(&format!("/proc/{pid}/status"), key)
}

/// CPU time (user + system) process `pid` has used so far, in seconds.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime and stime are 14th and 15th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// The pid of the stack's etcd or kube-apiserver (`name`: "etcd", "apiserver").
pub fn stack_pid(name: &str) -> u32 {
    let state = Stack::get().kubeconfig().parent().unwrap().to_path_buf();
    std::fs::read_to_string(state.join(format!("kube/{name}.pid")))
        .ok()
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no pid file for the stack's {name}"))
}

/// The machine a benchmark ran on, for its printout: CPU, cores, memory, kernel, Docker.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let mem_gib = kib_line("/proc/meminfo", "MemTotal:") as f64 / (1 << 20) as f64;
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let docker = Command::new("docker")
        .args(["version", "-f", "{{.Server.Version}}"])
        .env("DOCKER_HOST", Stack::get().docker_host())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    format!(
        "{model}, {cores} cores, {mem_gib:.0} GiB, Linux {}, dockerd {docker}",
        kernel.trim()
    )
}

/// The KiB figure of the `key` line of a /proc file such as /proc/meminfo.
fn kib_line(path: &str, key: &str) -> u64 {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A name unique to this test process and call, usable as a node or object name.
pub fn unique(prefix: &str) -> String {
    static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{prefix}-{}-{n}", std::process::id())
}

/// Polls `check` every 250 ms until it returns Some, for at most `seconds`.
pub fn eventually<T>(what: &str, seconds: u64, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {seconds} s waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}

/// The docker CLI, pointed at the test run's engine.
pub fn docker_cli(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .env("DOCKER_HOST", Stack::get().docker_host())
        .output()
        .expect("run docker")
}

/// A fresh ed25519 key pair in `dir`: the private key's path and the public key line.
pub fn ssh_keypair(dir: &std::path::Path, comment: &str) -> (PathBuf, String) {
    let key = dir.join("id_ed25519");
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(&key)
        .status()
        .expect("ssh-keygen");
    assert!(status.success());
    let public = std::fs::read_to_string(key.with_extension("pub"))
        .unwrap()
        .trim()
        .to_string();
    (key, public)
}

/// Runs `command` as root on host:port with the real OpenSSH client and key `key`.
pub fn ssh(key: &std::path::Path, host: &str, port: &str, command: &str) -> Output {
    Command::new("ssh")
        .arg("-i")
        .arg(key)
        .args([
            "-p",
            port,
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
        ])
        .args([
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=5",
            "-o",
            "LogLevel=ERROR",
        ])
        .arg(format!("root@{host}"))
        .arg(command)
        .output()
        .expect("run ssh")
}

/// [`eventually`] for checks that await.
pub async fn eventually_async<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    seconds: u64,
    mut check: impl FnMut() -> F,
) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {seconds} s waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

/// A `compute-server web` process on a free port of 127.0.0.1, for servers of `namespace`,
/// signing in through the stack's Keycloak; stopped when dropped.
pub struct WebFront {
    child: std::process::Child,
    /// Its base URL, such as http://127.0.0.1:41234 (also its public URL).
    pub url: String,
}

impl WebFront {
    /// A front with Keycloak client `client_id` (the realm has `compute-server` and
    /// `compute-server-short`, whose access tokens last 10 s); waits until /readyz answers.
    pub fn start(namespace: &str, client_id: &str, extra: &[&str]) -> WebFront {
        WebFront::start_with(namespace, client_id, extra, free_port())
    }

    /// [`WebFront::start`] on a given port (to start it again at the same URL).
    pub fn start_on(namespace: &str, client_id: &str, port: u16) -> WebFront {
        WebFront::start_with(namespace, client_id, &[], port)
    }

    fn start_with(namespace: &str, client_id: &str, extra: &[&str], port: u16) -> WebFront {
        let url = format!("http://127.0.0.1:{port}");
        let listen = format!("127.0.0.1:{port}");
        let mut args = vec![
            "web",
            "--listen",
            &listen,
            "--public-url",
            &url,
            "--issuer-url",
            Stack::get().keycloak_issuer(),
            "--client-id",
            client_id,
            "--namespace",
            namespace,
        ];
        args.extend_from_slice(extra);
        let child = start_role(&format!("web-{namespace}-{client_id}"), &args, &[]);
        let web = WebFront { child, url };
        let ready = format!("{}/readyz", web.url);
        eventually("the web front to be ready", 60, || {
            let out = Command::new("curl")
                .args(["-sf", "-o", "/dev/null", &ready])
                .status();
            out.is_ok_and(|s| s.success()).then_some(())
        });
        web
    }
}

impl WebFront {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for WebFront {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An access token for `user` from the stack's Keycloak (password grant) through `client_id`.
pub async fn access_token(client_id: &str, user: &str) -> String {
    let url = format!("{}/protocol/openid-connect/token", Stack::get().keycloak_issuer());
    let body: serde_json::Value = reqwest::Client::new()
        .post(url)
        .form(&[
            ("grant_type", "password"),
            ("client_id", client_id),
            ("username", user),
            ("password", user),
            ("scope", "openid"),
        ])
        .send()
        .await
        .expect("Keycloak answers")
        .json()
        .await
        .expect("JSON from Keycloak");
    body["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no access token for {user}: {body}"))
        .to_string()
}

/// An access token of Keycloak's own admin (admin/admin, realm master): its admin API, and a
/// token of another realm than the front's.
pub async fn keycloak_admin_token() -> String {
    let url = Stack::get()
        .keycloak_issuer()
        .replace("/realms/compute", "/realms/master/protocol/openid-connect/token");
    let body: serde_json::Value = reqwest::Client::new()
        .post(url)
        .form(&[
            ("grant_type", "password"),
            ("client_id", "admin-cli"),
            ("username", "admin"),
            ("password", "admin"),
        ])
        .send()
        .await
        .expect("Keycloak answers")
        .json()
        .await
        .expect("JSON from Keycloak");
    body["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no admin token: {body}"))
        .to_string()
}

/// A ComputeProfile of the test's own (they are cluster-wide), deleted when dropped.
pub struct TestProfile {
    pub name: String,
}

impl TestProfile {
    /// A busybox profile (as `tiny`) named `prefix-PID-N`, with `spec` added: the insides of a
    /// YAML flow mapping such as `lifecycle: {idleStopAfter: 30m, maxExtension: 2h}`.
    pub fn new(prefix: &str, spec: &str) -> TestProfile {
        let name = unique(prefix);
        let yaml = format!(
            "apiVersion: computeserver.io/v1alpha1\nkind: ComputeProfile\nmetadata: {{name: {name}}}\n\
             spec: {{image: 'computeserver/busybox:local', command: [sleep, infinity], \
             defaultResources: {{cpu: 100m, memory: 32Mi}}, {spec}}}\n"
        );
        kubectl_ok(&["apply", "-f", "-"], Some(&yaml));
        TestProfile { name }
    }
}

impl Drop for TestProfile {
    fn drop(&mut self) {
        let _ = kubectl(&["delete", "computeprofile", &self.name, "--wait=false"], None);
    }
}

/// Merges `status` into the server's status (the status subresource, as admin): what a role
/// that is not running in the test would have written.
pub fn patch_status(ns: &str, name: &str, status: serde_json::Value) {
    let patch = serde_json::json!({ "status": status }).to_string();
    kubectl_ok(
        &[
            "patch",
            "csrv",
            name,
            "-n",
            ns,
            "--subresource=status",
            "--type=merge",
            "-p",
            &patch,
        ],
        None,
    );
}

/// The server's `metadata.managedFields` entries, as `kubectl --show-managed-fields` shows them.
pub fn managed_fields(ns: &str, name: &str) -> Vec<serde_json::Value> {
    let out = kubectl_ok(
        &[
            "get",
            "csrv",
            "-n",
            ns,
            name,
            "--show-managed-fields",
            "-o",
            "json",
        ],
        None,
    );
    let server: serde_json::Value = serde_json::from_str(&out).unwrap();
    server["metadata"]["managedFields"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The field managers of the server's `status.activity` entries: source → manager, from its
/// managedFields.
pub fn activity_managers(ns: &str, name: &str) -> std::collections::BTreeMap<String, String> {
    let mut managers = std::collections::BTreeMap::new();
    for field in managed_fields(ns, name) {
        let activity = &field["fieldsV1"]["f:status"]["f:activity"];
        for key in activity.as_object().into_iter().flatten().map(|(k, _)| k) {
            // Entries of a list-map are named k:{"source":"ssh"}.
            if let Some(entry) = key.strip_prefix("k:") {
                let source: serde_json::Value = serde_json::from_str(entry).unwrap();
                managers.insert(
                    source["source"].as_str().unwrap().to_string(),
                    field["manager"].as_str().unwrap().to_string(),
                );
            }
        }
    }
    managers
}

/// The roles a browser session goes through: an agent, the scheduler, a bastion and a web
/// front sharing one user CA (as `make up` runs them), for servers of one namespace.
pub struct BrowserStack {
    _agent: Agent,
    _scheduler: Scheduler,
    pub bastion: Bastion,
    pub web: WebFront,
    _keys: tempfile::TempDir,
}

impl BrowserStack {
    pub fn start(ns: &str) -> BrowserStack {
        let keys = tempfile::tempdir().unwrap();
        let dir = |name: &str| {
            let dir = keys.path().join(name);
            std::fs::create_dir(&dir).unwrap();
            dir
        };
        let (ca, ca_public) = ssh_keypair(&dir("ca"), "user-ca");
        let ca_file = keys.path().join("user_ca_keys");
        std::fs::write(&ca_file, format!("{ca_public}\n")).unwrap();
        let ca_file = ca_file.display().to_string();
        let (host_key, host_public) = ssh_keypair(&dir("host"), "bastion");
        let agent_flags = [
            "--lease-namespace",
            ns,
            "--lease-seconds",
            "6",
            "--user-ca-keys",
            &ca_file,
        ];
        let agent = Agent::start_with(&unique("browser-node"), 1, &agent_flags);
        let scheduler = Scheduler::start(&unique("sched"), ns, ns);
        let bastion = Bastion::start_with(
            ns,
            &[
                "--host-key-file".into(),
                host_key.display().to_string(),
                "--user-ca-keys".into(),
                ca_file.clone(),
            ],
        );
        let address = format!("127.0.0.1:{}", bastion.port);
        let ca = ca.display().to_string();
        let web = WebFront::start(
            ns,
            "compute-server",
            &[
                "--bastion-address",
                &address,
                "--user-ca-key",
                &ca,
                "--bastion-host-key",
                &host_public,
            ],
        );
        BrowserStack {
            _agent: agent,
            _scheduler: scheduler,
            bastion,
            web,
            _keys: keys,
        }
    }
}
