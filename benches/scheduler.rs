//! Scheduler benchmark: 10,000 pending ComputeServers of 500 people over 100 ComputeNodes,
//! placed by a real `compute-server scheduler` (release build) against the real apiserver,
//! under budgets: a ComputeQuota for the people's group (per person and in all, each server
//! checked against both, every placement counted) that lets every server through, so the
//! figure is the price of budgets and the fair line, not of waiting.
//! The floor, in the same run: the API server's rate for single writes of the same objects
//! at the scheduler's concurrency (a merge patch of one label on each of the 10,000, with
//! the resourceVersion, as a placement is). Prints placements per second, their ratio to
//! the floor and the scheduler's peak RSS; asserts nothing about time.
//!
//! Run with `make bench BENCH=scheduler` (starts and stops the stack itself). The nodes are
//! registered objects with a long Lease and no Docker engine behind them: the benchmark
//! measures placement, not containers.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use compute_server::api::{ComputeNode, ComputeServer, NODE_LABEL};
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use support::{Scheduler, TestNamespace, install_crds, kube_client, unique};

const NODES: usize = 100;
const SERVERS: usize = 10_000;
/// The scheduler's writes in flight (its CONCURRENT_WRITES).
const WRITES_IN_FLIGHT: usize = 64;

#[tokio::main]
async fn main() {
    install_crds();
    let ns = TestNamespace::new("bench-sched");
    let client = kube_client().await;
    let prefix = unique("bench");
    let nodes: Vec<String> = (0..NODES).map(|i| format!("{prefix}-{i:03}")).collect();
    register_nodes(&client, &ns.name, &nodes).await;

    let servers: Api<ComputeServer> = Api::namespaced(client.clone(), &ns.name);
    // 20 servers of 100m per person (2 CPUs), 1,000 CPUs in all: every server fits its budgets.
    let quota = format!(
        "apiVersion: computeserver.io/v1alpha1\nkind: ComputeQuota\nmetadata: {{name: {prefix}, labels: \
         {{computeserver.io/namespace: {ns}}}}}\nspec: {{subjects: [{{group: bench}}], perUser: {{cpu: '2', \
         servers: 20, gpuHours: 100}}, total: {{cpu: '1000', memory: 1000Gi, servers: 10000}}}}\n",
        ns = ns.name
    );
    support::kubectl_ok(&["apply", "-f", "-"], Some(&quota));
    let started = Instant::now();
    futures::stream::iter(0..SERVERS)
        .map(|i| {
            let servers = servers.clone();
            async move {
                let server: ComputeServer = serde_json::from_value(serde_json::json!({
                    "apiVersion": "computeserver.io/v1alpha1", "kind": "ComputeServer",
                    "metadata": { "name": format!("s{i:05}") },
                    "spec": { "owner": format!("user{}", i % 500), "ownerGroups": ["bench"],
                              "image": "computeserver/busybox:local",
                              "resources": { "cpu": "100m", "memory": "64Mi" } },
                }))
                .unwrap();
                servers
                    .create(&PostParams::default(), &server)
                    .await
                    .expect("create a server");
            }
        })
        .buffer_unordered(32)
        .collect::<()>()
        .await;
    let created = started.elapsed();
    println!(
        "created {SERVERS} pending ComputeServers in {:.1} s ({:.0}/s through the apiserver)",
        created.as_secs_f64(),
        SERVERS as f64 / created.as_secs_f64()
    );

    // The floor: one write per server of the same kind as a placement, 64 in flight; then the
    // same with a watch of those servers open, as the scheduler has (for the record: the
    // ratio is against the first).
    let (apiserver, etcd) = (support::stack_pid("apiserver"), support::stack_pid("etcd"));
    let cpu = |pids: &[u32]| {
        pids.iter()
            .map(|p| support::cpu_seconds(*p))
            .collect::<Vec<f64>>()
    };
    // CPU seconds each of `pids` used since `before` was read.
    let used = |pids: &[u32], before: &[f64]| {
        cpu(pids)
            .iter()
            .zip(before)
            .map(|(now, then)| now - then)
            .collect::<Vec<f64>>()
    };
    let floor_cpu = cpu(&[apiserver, etcd]);
    let floor = label_writes(&servers, "written").await;
    let floor_cpu = used(&[apiserver, etcd], &floor_cpu);
    let watch =
        tokio::spawn(kube::runtime::watcher(servers.clone(), Default::default()).for_each(|_| async {}));
    tokio::time::sleep(Duration::from_secs(2)).await; // its initial list is done
    let watched_cpu = cpu(&[apiserver, etcd]);
    let floor_watched = label_writes(&servers, "again").await;
    let watched_cpu = used(&[apiserver, etcd], &watched_cpu);
    watch.abort();
    println!(
        "floor: {SERVERS} single label writes, {WRITES_IN_FLIGHT} in flight: {floor:.0}/s; with a watch open: {floor_watched:.0}/s"
    );

    let scheduler = Scheduler::start(&unique("bench"), &ns.name, &ns.name);
    let pid = scheduler.pid();
    let placing_cpu = cpu(&[apiserver, etcd, pid]);
    let start = Instant::now();
    let mut first = None;
    let mut peak_kib = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        peak_kib = peak_kib.max(support::status_kib(pid, "VmHWM:"));
        let placed = scheduler.metric("compute_server_scheduler_placements_total");
        if placed > 0 && first.is_none() {
            first = Some(start.elapsed());
        }
        if placed >= SERVERS as u64 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(900),
            "only {placed} placed after 15 min"
        );
    }
    let done = start.elapsed();
    let placing_cpu = used(&[apiserver, etcd, pid], &placing_cpu);
    let first = first.unwrap();
    let placing = done - first;

    // Where they went: every server placed, spread over every node.
    let placed = servers
        .list(&ListParams::default().labels(NODE_LABEL))
        .await
        .unwrap();
    let mut per_node = std::collections::HashMap::<String, usize>::new();
    for server in &placed.items {
        *per_node
            .entry(server.metadata.labels.as_ref().unwrap()[NODE_LABEL].clone())
            .or_default() += 1;
    }
    let (min, max) = (per_node.values().min().unwrap(), per_node.values().max().unwrap());

    let rate = SERVERS as f64 / placing.as_secs_f64();
    let rss = peak_kib as f64 / 1024.0;
    let machine = support::machine();
    println!("\nScheduler benchmark ({machine})");
    println!(
        "  {SERVERS} pending ComputeServers of 500 people, {NODES} ComputeNodes, under a ComputeQuota, release build\n"
    );
    println!("  | figure | value |");
    println!("  |---|---|");
    println!("  | single writes of the same objects, {WRITES_IN_FLIGHT} in flight (floor) | {floor:.0}/s |");
    println!(
        "  | placements ({} placed in {:.2} s) | {rate:.0}/s |",
        placed.items.len(),
        placing.as_secs_f64()
    );
    println!(
        "  | first placement after start (election, cache sync) | {:.2} s |",
        first.as_secs_f64()
    );
    println!("  | servers per node | min {min}, max {max} |");
    println!("  | the same writes with a watch of the servers open | {floor_watched:.0}/s |");
    println!(
        "  | CPU seconds, floor: apiserver, etcd | {:.1}, {:.1} |",
        floor_cpu[0], floor_cpu[1]
    );
    println!(
        "  | CPU seconds, floor with the watch: apiserver, etcd | {:.1}, {:.1} |",
        watched_cpu[0], watched_cpu[1]
    );
    println!(
        "  | CPU seconds, placing: apiserver, etcd, scheduler | {:.1}, {:.1}, {:.1} |",
        placing_cpu[0], placing_cpu[1], placing_cpu[2]
    );
    println!("  | scheduler peak RSS (target <= 100 MiB) | {rss:.1} MiB |");
    println!(
        "\nscheduler: placements_per_s={rate:.0} floor_writes_per_s={floor:.0} floor_watched_writes_per_s={floor_watched:.0} \
         watched_ratio={:.2} peak_rss_mib={rss:.1} ratio={:.2}",
        rate / floor_watched,
        rate / floor
    );

    drop(scheduler);
    let _ = support::kubectl(&["delete", "computequota", &prefix, "--wait=false"], None);
    let nodes_api: Api<ComputeNode> = Api::all(client.clone());
    for node in &nodes {
        let _ = nodes_api.delete(node, &Default::default()).await;
    }
}

/// Writes `bench.computeserver.io/floor: VALUE` on every server, a merge patch with its
/// resourceVersion as a placement is, 64 in flight; the writes per second.
async fn label_writes(servers: &Api<ComputeServer>, value: &str) -> f64 {
    let listed = servers.list(&ListParams::default()).await.unwrap().items;
    let started = Instant::now();
    futures::stream::iter(listed)
        .map(|server| {
            let servers = servers.clone();
            async move {
                let patch = serde_json::json!({ "metadata": {
                    "resourceVersion": server.metadata.resource_version,
                    "labels": { "bench.computeserver.io/floor": value },
                }});
                servers
                    .patch(&server.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .expect("write a label");
            }
        })
        .buffer_unordered(WRITES_IN_FLIGHT)
        .collect::<()>()
        .await;
    SERVERS as f64 / started.elapsed().as_secs_f64()
}

/// 100 Ready nodes of 64 CPUs and 256 GiB, with Leases that last the whole run.
async fn register_nodes(client: &kube::Client, lease_namespace: &str, nodes: &[String]) {
    let params = PatchParams::apply("compute-server-bench").force();
    let api: Api<ComputeNode> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client.clone(), lease_namespace);
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    for name in nodes {
        let node = serde_json::json!({
            "apiVersion": "computeserver.io/v1alpha1", "kind": "ComputeNode",
            "metadata": { "name": name }, "spec": {},
        });
        api.patch(name, &params, &Patch::Apply(&node)).await.unwrap();
        let status = serde_json::json!({
            "apiVersion": "computeserver.io/v1alpha1", "kind": "ComputeNode",
            "status": {
                "capacity": { "cpu": "64", "memory": "256Gi", "gpus": 0 },
                "conditions": [{ "type": "Ready", "status": "True", "reason": "Bench",
                                 "message": "registered by the benchmark", "lastTransitionTime": now }],
            },
        });
        api.patch_status(name, &params, &Patch::Apply(&status))
            .await
            .unwrap();
        let lease = serde_json::json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": { "name": format!("computenode-{name}") },
            "spec": { "holderIdentity": name, "leaseDurationSeconds": 3600,
                      "renewTime": k8s_openapi::jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string() },
        });
        leases
            .patch(&format!("computenode-{name}"), &params, &Patch::Apply(&lease))
            .await
            .unwrap();
    }
}
