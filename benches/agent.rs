//! Agent benchmark, in one run on the same dockerd (release build of the agent):
//! (a) the floor: raw Docker API create+start of N containers with the very body the agent
//!     sends, on the agent's own network (at its own CPU quota: `tiny`'s 250m, and 10m), one at
//!     a time and 8 at a time; and, for scale, the same on Docker's default bridge (a network of
//!     one's own costs Docker about 100 ms more per start here: its embedded DNS);
//! (b) N ComputeServers (pinned to the agent's node) created through the API server until
//!     each reports `Running`, one at a time (250m and 10m) and all at once;
//! then p50/p99 latency, throughput and their ratios; and the agent's RSS with 500
//! ComputeServers on its node. Prints figures; asserts nothing about time.
//!
//! Run with `make bench BENCH=agent` (starts and stops the stack itself); N from BENCH_N
//! (default 40), the RSS count from BENCH_RSS_SERVERS (default 500).

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use compute_server::agent::plan;
use compute_server::api::{ComputeServer, NODE_LABEL};
use futures::{StreamExt, TryStreamExt};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use support::{Agent, TestNamespace, install_crds, kube_client, unique};

const IMAGE: &str = "computeserver/busybox:local";

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Latencies of one run and how long the whole run took.
struct Run {
    latencies: Vec<Duration>,
    wall: Duration,
}

impl Run {
    fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        let index = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
        sorted[index]
    }

    fn throughput(&self) -> f64 {
        self.latencies.len() as f64 / self.wall.as_secs_f64()
    }

    fn line(&self, what: &str) -> String {
        format!(
            "  {what:<44} p50 {:>6.0} ms  p99 {:>6.0} ms  {:>5.1}/s",
            self.percentile(0.5).as_secs_f64() * 1e3,
            self.percentile(0.99).as_secs_f64() * 1e3,
            self.throughput()
        )
    }
}

/// `tiny`'s default CPU, and the least a server may ask for.
const TINY: &str = "250m";
const LEAST: &str = "10m";

fn server(name: &str, node: &str, cpu: &str) -> ComputeServer {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "computeserver.io/v1alpha1", "kind": "ComputeServer",
        "metadata": { "name": name, "labels": { NODE_LABEL: node } },
        "spec": { "owner": "bench", "image": IMAGE, "command": ["sleep", "infinity"],
                  "resources": { "cpu": cpu, "memory": "16Mi" } },
    }))
    .unwrap()
}

/// (a) The floor: the agent's own container body, straight to the Docker API on `network`, at
/// the server's own CPU quota from the start (as `docker run --cpus --network` would).
async fn raw(docker: &bollard::Docker, n: usize, in_flight: usize, cpu: &str, network: &str) -> Run {
    let prefix = unique("bench-raw");
    let started = Instant::now();
    let latencies: Vec<Duration> = futures::stream::iter(0..n)
        .map(|i| {
            let name = format!("{prefix}-{i}");
            async move {
                let mut s = server(&name, "raw", cpu);
                s.metadata.namespace = Some("bench".into());
                let host = plan::Host {
                    user_cas: vec![],
                    publish_address: "127.0.0.1".into(),
                    networks: (network.into(), network.into()),
                    ipv6: std::path::Path::new("/proc/sys/net/ipv6").exists(),
                };
                let plan = plan::plan(&s, None).unwrap();
                let mut body = plan::container(&s, &plan, &host);
                body.host_config.as_mut().unwrap().nano_cpus = Some(plan.request.nano_cpus);
                let t = Instant::now();
                let options = bollard::query_parameters::CreateContainerOptionsBuilder::default()
                    .name(&name)
                    .build();
                docker
                    .create_container(Some(options), body)
                    .await
                    .expect("create");
                docker.start_container(&name, None).await.expect("start");
                t.elapsed()
            }
        })
        .buffer_unordered(in_flight)
        .collect()
        .await;
    let wall = started.elapsed();
    for i in 0..n {
        let options = bollard::query_parameters::RemoveContainerOptionsBuilder::default()
            .force(true)
            .build();
        let _ = docker
            .remove_container(&format!("{prefix}-{i}"), Some(options))
            .await;
        // The body mounts a named data volume, as the agent's does: remove it too.
        let mut s = server(&format!("{prefix}-{i}"), "raw", cpu);
        s.metadata.namespace = Some("bench".into());
        let _ = docker
            .remove_volume(
                &plan::volume_name(&s),
                None::<bollard::query_parameters::RemoveVolumeOptions>,
            )
            .await;
    }
    Run { latencies, wall }
}

/// Times from create to `Running`, per server name, as a watch sees them.
async fn watch_running(api: Api<ComputeServer>, names: Vec<String>) -> HashMap<String, Instant> {
    let mut running = HashMap::new();
    let mut stream = std::pin::pin!(watcher(api, watcher::Config::default()).applied_objects());
    while running.len() < names.len() {
        let server = match tokio::time::timeout(Duration::from_secs(300), stream.try_next()).await {
            Ok(Ok(Some(server))) => server,
            other => panic!("watch ended or timed out: {other:?}"),
        };
        let phase = server.status.as_ref().and_then(|s| s.phase);
        if phase == Some(compute_server::api::Phase::Running) && names.contains(&server.name_any()) {
            running.entry(server.name_any()).or_insert_with(Instant::now);
        }
    }
    running
}

/// (b) ComputeServers through the API server, `all_at_once` or one after another.
async fn servers(api: &Api<ComputeServer>, node: &str, n: usize, all_at_once: bool, cpu: &str) -> Run {
    let prefix = unique("b");
    let names: Vec<String> = (0..n).map(|i| format!("{prefix}-{i}")).collect();
    let started = Instant::now();
    let mut latencies = Vec::new();
    if all_at_once {
        let watch = tokio::spawn(watch_running(api.clone(), names.clone()));
        tokio::time::sleep(Duration::from_millis(300)).await; // the watch is established
        let started = Instant::now();
        let created: HashMap<String, Instant> = futures::stream::iter(names.clone())
            .map(|name| async move {
                let t = Instant::now();
                api.create(&PostParams::default(), &server(&name, node, cpu))
                    .await
                    .expect("create");
                (name, t)
            })
            .buffer_unordered(n)
            .collect()
            .await;
        let running = watch.await.unwrap();
        latencies = names.iter().map(|n| running[n] - created[n]).collect();
        let wall = running.values().max().unwrap().duration_since(started);
        delete_all(api, n).await;
        return Run { latencies, wall };
    }
    for name in &names {
        let watch = tokio::spawn(watch_running(api.clone(), vec![name.clone()]));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let t = Instant::now();
        api.create(&PostParams::default(), &server(name, node, cpu))
            .await
            .expect("create");
        let running = watch.await.unwrap();
        latencies.push(running[name] - t);
    }
    let wall = started.elapsed();
    delete_all(api, n).await;
    Run { latencies, wall }
}

/// Deletes every server of the namespace and waits until their finalizers are done.
async fn delete_all(api: &Api<ComputeServer>, expected: usize) {
    api.delete_collection(&DeleteParams::default(), &ListParams::default())
        .await
        .expect("delete servers");
    let deadline = Instant::now() + Duration::from_secs(60 + expected as u64);
    while !api.list(&ListParams::default()).await.unwrap().items.is_empty() {
        assert!(Instant::now() < deadline, "servers not gone in time");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::main]
async fn main() {
    let n = env_number("BENCH_N", 40);
    let rss_servers = env_number("BENCH_RSS_SERVERS", 500);
    install_crds();
    let ns = TestNamespace::new("bench-agent");
    let client = kube_client().await;
    let docker = support::docker();
    let api: Api<ComputeServer> = Api::namespaced(client, &ns.name);
    let agent = Agent::start(&unique("bench"));
    let node = agent.node.clone();
    // Warm-up: the agent's caches and the first container.
    servers(&api, &node, 2, false, TINY).await;

    // The agent made its network at start: the floor's containers join it too.
    let network = compute_server::agent::network::NETWORK;
    let raw_one = raw(&docker, n, 1, TINY, network).await;
    let raw_eight = raw(&docker, n, 8, TINY, network).await;
    let raw_least = raw(&docker, n, 1, LEAST, network).await;
    let raw_bridge = raw(&docker, n, 1, TINY, "bridge").await;
    let one = servers(&api, &node, n, false, TINY).await;
    let least = servers(&api, &node, n, false, LEAST).await;
    let all = servers(&api, &node, n, true, TINY).await;

    println!("\nAgent benchmark ({})", support::machine());
    println!("  {n} containers per run, image {IMAGE}, agent release build; raw runs on network {network}\n");
    println!(
        "{}",
        raw_one.line(&format!("raw Docker API create+start at {TINY}, one at a time"))
    );
    println!(
        "{}",
        raw_eight.line(&format!("raw Docker API create+start at {TINY}, 8 in flight"))
    );
    println!(
        "{}",
        raw_least.line(&format!("raw Docker API create+start at {LEAST}, one at a time"))
    );
    println!(
        "{}",
        raw_bridge.line(&format!("  the same at {TINY} on Docker's default bridge"))
    );
    println!(
        "{}",
        one.line(&format!("ComputeServer {TINY} to Running, one at a time"))
    );
    println!(
        "{}",
        least.line(&format!("ComputeServer {LEAST} to Running, one at a time"))
    );
    println!(
        "{}",
        all.line(&format!("ComputeServer {TINY} to Running, all {n} at once"))
    );
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    let floor_ratio = ratio(one.percentile(0.5), raw_one.percentile(0.5));
    let bridge_ratio = ratio(one.percentile(0.5), raw_bridge.percentile(0.5));
    let small_ratio = ratio(least.percentile(0.5), one.percentile(0.5));
    let throughput_ratio = all.throughput() / raw_eight.throughput();
    println!("\n  p50 latency at {TINY}, one at a time: {floor_ratio:.2} x the raw floor (target <= 1.2)");
    println!("  (and {bridge_ratio:.2} x the same container started on Docker's default bridge)");
    println!("  p50 latency at {LEAST} vs {TINY}: {small_ratio:.2} x (target <= 1.5)");
    println!("  throughput, all at once vs raw 8 in flight: {throughput_ratio:.2} x (target >= 0.8)");

    // The agent's memory with many servers on its node.
    let names: Vec<String> = (0..rss_servers).map(|i| format!("rss-{i:04}")).collect();
    let watch = tokio::spawn(watch_running(api.clone(), names.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    futures::stream::iter(names)
        .map(|name| {
            let api = api.clone();
            let node = node.clone();
            async move {
                api.create(&PostParams::default(), &server(&name, &node, LEAST))
                    .await
                    .expect("create")
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    watch.await.unwrap();
    let up = started.elapsed();
    tokio::time::sleep(Duration::from_secs(25)).await; // a couple of heartbeats and resyncs
    let pid = agent.pid();
    let (rss, peak) = (
        support::status_kib(pid, "VmRSS:") as f64 / 1024.0,
        support::status_kib(pid, "VmHWM:") as f64 / 1024.0,
    );
    println!(
        "\n  {rss_servers} ComputeServers Running on the node after {:.0} s; agent RSS {rss:.1} MiB, peak {peak:.1} MiB (target <= 40)",
        up.as_secs_f64(),
    );
    delete_all(&api, rss_servers).await;
    let ms = |run: &Run| run.percentile(0.5).as_secs_f64() * 1e3;
    println!(
        "\nagent: p50_ms={:.0} raw_p50_ms={:.0} raw_bridge_p50_ms={:.0} p50_10m_ms={:.0} raw_p50_10m_ms={:.0} \
         small_vs_tiny={small_ratio:.2} throughput_ratio={throughput_ratio:.2} rss_mib={rss:.1} ratio={floor_ratio:.2}",
        ms(&one),
        ms(&raw_one),
        ms(&raw_bridge),
        ms(&least),
        ms(&raw_least),
    );
}
