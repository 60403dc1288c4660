//! Fair share on the real stack: ComputeQuotas held by a real scheduler over real agents (the
//! GPUs are node 3's stand-ins), requests through the web front's JSON API with Keycloak's
//! tokens and through kubectl, the places in line as people see them, and the hours counted
//! into the API server and read back through `GET /api/v1/usage`.
//!
//! Each test's scheduler places only its own namespace, so its quotas and usage carry that
//! namespace's label (computeserver.io/namespace) and no other test's servers count in them.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{
    Agent, Scheduler, TestNamespace, TestProfile, WebFront, access_token, eventually, install_crds, kubectl,
    kubectl_ok, unique,
};

/// The local node engine with the stand-in NVIDIA hook (NODE_GPU_HOOK in stack.sh).
const GPU_ENGINE: usize = 3;

/// A ComputeQuota of the test's scheduler (labelled with its namespace), deleted when dropped.
struct Quota(String);

impl Quota {
    fn new(ns: &str, spec: &str) -> Quota {
        let name = unique("quota");
        let yaml = format!(
            "apiVersion: computeserver.io/v1alpha1\nkind: ComputeQuota\nmetadata:\n  name: {name}\n  \
             labels: {{computeserver.io/namespace: {ns}}}\nspec: {spec}\n"
        );
        kubectl_ok(&["apply", "-f", "-"], Some(&yaml));
        Quota(name)
    }

    fn get(&self) -> Value {
        serde_json::from_str(&kubectl_ok(&["get", "computequota", &self.0, "-o", "json"], None)).unwrap()
    }
}

impl Drop for Quota {
    fn drop(&mut self) {
        let _ = kubectl(&["delete", "computequota", &self.0, "--wait=false"], None);
    }
}

/// The servers of `ns` as kubectl lists them.
fn servers(ns: &str) -> Vec<Value> {
    let list: Value =
        serde_json::from_str(&kubectl_ok(&["get", "csrv", "-n", ns, "-o", "json"], None)).unwrap();
    list["items"].as_array().unwrap().clone()
}

fn placed(server: &Value) -> bool {
    server["metadata"]["labels"]["computeserver.io/node"].is_string()
}

fn name(server: &Value) -> &str {
    server["metadata"]["name"].as_str().unwrap()
}

/// Servers waiting, by name: (queuePosition, message).
fn waiting(ns: &str) -> BTreeMap<String, (u64, String)> {
    servers(ns)
        .iter()
        .filter(|s| !placed(s) && s["status"]["queuePosition"].is_u64())
        .map(|s| {
            (
                name(s).to_string(),
                (
                    s["status"]["queuePosition"].as_u64().unwrap(),
                    s["status"]["message"].as_str().unwrap_or_default().to_string(),
                ),
            )
        })
        .collect()
}

async fn post(url: &str, token: &str, body: Value) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .post(url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("the web front answers");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn get(url: &str, token: &str) -> (StatusCode, String) {
    let response = reqwest::Client::new()
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .expect("the web front answers");
    (response.status(), response.text().await.unwrap())
}

/// A GPU node of the test's own (stand-in GPUs 0-3) and a profile of up to one GPU.
fn gpu_node(ns: &str) -> (Agent, TestProfile) {
    let flags = [
        "--gpu-devices",
        "0,1,2,3",
        "--lease-namespace",
        ns,
        "--lease-seconds",
        "8",
    ];
    let agent = Agent::start_with(&unique("quota-node"), GPU_ENGINE, &flags);
    let profile = TestProfile::new("quota", "maxResources: {cpu: '1', memory: 256Mi, gpus: 1}");
    eventually("the GPU node to be Ready with 4 GPUs", 60, || {
        let out = kubectl(&["get", "computenode", &agent.node, "-o", "json"], None);
        let node: Value = serde_json::from_slice(&out.stdout).ok()?;
        let ready = node["status"]["conditions"]
            .as_array()?
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        (ready && node["status"]["capacity"]["gpus"] == 4).then_some(())
    });
    (agent, profile)
}

#[tokio::test]
async fn fifty_parallel_requests_never_exceed_the_budgets_and_each_waits_with_its_place() {
    install_crds();
    let ns = TestNamespace::new("quota");
    let (agent, profile) = gpu_node(&ns.name);
    // Students may hold one GPU each and two in all; the node has four.
    let quota = Quota::new(
        &ns.name,
        "{subjects: [{group: students}], perUser: {gpus: 1}, total: {gpus: 2}}",
    );
    let _scheduler = Scheduler::start(&unique("quota"), &ns.name, &ns.name);
    let web = WebFront::start(&ns.name, "compute-server", &["--usage-scope", &ns.name]);
    let (alice, bob) = (
        access_token("compute-server", "alice").await,
        access_token("compute-server", "bob").await,
    );

    // 40 through the JSON API (alice and bob, 20 each) and 10 through kubectl (an admin's, for
    // alice as a student), all at once.
    let url = format!("{}/api/v1/servers", web.url);
    let api_requests = (0..40).map(|i| {
        let (who, token) = if i % 2 == 0 { ("a", &alice) } else { ("b", &bob) };
        let body = json!({"name": format!("{who}{i:02}"), "profile": profile.name,
                          "resources": {"cpu": "100m", "memory": "32Mi", "gpus": 1}});
        let url = url.clone();
        let token = token.clone();
        tokio::spawn(async move { post(&url, &token, body).await })
    });
    let kubectl_requests = (0..10).map(|i| {
        let yaml = format!(
            "apiVersion: computeserver.io/v1alpha1\nkind: ComputeServer\nmetadata: {{name: k{i:02}, namespace: {}}}\n\
             spec: {{owner: alice, ownerGroups: [students], profile: {}, resources: {{cpu: 100m, memory: 32Mi, gpus: 1}}}}\n",
            ns.name, profile.name
        );
        tokio::task::spawn_blocking(move || kubectl(&["create", "-f", "-"], Some(&yaml)))
    });
    let watching = {
        let ns = ns.name.clone();
        tokio::task::spawn_blocking(move || {
            // While they land: never more than two GPUs placed for students, one per person.
            let mut most = 0;
            for _ in 0..40 {
                let list = servers(&ns);
                let held: Vec<&Value> = list.iter().filter(|s| placed(s)).collect();
                let alice = held.iter().filter(|s| s["spec"]["owner"] == "alice").count();
                let bob = held.iter().filter(|s| s["spec"]["owner"] == "bob").count();
                assert!(
                    held.len() <= 2 && alice <= 1 && bob <= 1,
                    "over budget: {} placed",
                    held.len()
                );
                most = most.max(held.len());
                std::thread::sleep(Duration::from_millis(250));
            }
            most
        })
    };
    for request in api_requests {
        let (status, body) = request.await.unwrap();
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    for request in kubectl_requests {
        let out = request.await.unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    assert!(watching.await.unwrap() <= 2);

    // Settled: one of alice's and one of bob's run; 48 wait, each with its place.
    let lines = eventually("48 servers waiting, each with its place in line", 90, || {
        let lines = waiting(&ns.name);
        (lines.len() == 48).then_some(lines)
    });
    let list = servers(&ns.name);
    let held: Vec<&Value> = list.iter().filter(|s| placed(s)).collect();
    let mut owners: Vec<&str> = held
        .iter()
        .map(|s| s["spec"]["owner"].as_str().unwrap())
        .collect();
    owners.sort();
    assert_eq!(owners, ["alice", "bob"]);
    // The web front wrote bob's groups from his token.
    let bobs = list.iter().find(|s| s["spec"]["owner"] == "bob").unwrap();
    assert_eq!(bobs["spec"]["ownerGroups"], json!(["students"]));
    // Each person's waiting servers are in their own line, 1st to 24th (alice: 20 + 10 - 1).
    let mut alice_places: Vec<u64> = lines
        .iter()
        .filter(|(n, _)| n.starts_with('a') || n.starts_with('k'))
        .map(|(_, (p, _))| *p)
        .collect();
    alice_places.sort();
    assert_eq!(alice_places, (1..=29).collect::<Vec<u64>>());
    let (_, first) = lines
        .values()
        .find(|(p, m)| *p == 1 && m.contains("alice's"))
        .unwrap();
    assert_eq!(
        first,
        &format!(
            "1st in line for alice's budget: alice uses 1 of 1 GPUs (ComputeQuota {}); this server asks for 1 more",
            quota.0
        )
    );
    let quota_status = eventually("the quota's status to count both", 30, || {
        let q = quota.get();
        (q["status"]["summary"]["gpus"] == "2/2").then_some(q)
    });
    let users: Vec<&str> = quota_status["status"]["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["user"].as_str().unwrap())
        .collect();
    assert_eq!(users, ["alice", "bob"]);

    // Bob's server goes: his next one takes its place, and his line moves up.
    let bobs_running = held.iter().find(|s| s["spec"]["owner"] == "bob").unwrap();
    let before = waiting(&ns.name);
    kubectl_ok(
        &[
            "delete",
            "csrv",
            "-n",
            &ns.name,
            name(bobs_running),
            "--wait=true",
        ],
        None,
    );
    let next = before
        .iter()
        .find(|(n, (p, _))| n.starts_with('b') && *p == 1)
        .map(|(n, _)| n.clone())
        .unwrap();
    eventually("bob's 1st in line to be placed", 60, || {
        servers(&ns.name)
            .iter()
            .any(|s| name(s) == next && placed(s))
            .then_some(())
    });
    let after = eventually("bob's line to move up", 30, || {
        let lines = waiting(&ns.name);
        let bobs: Vec<u64> = lines
            .iter()
            .filter(|(n, _)| n.starts_with('b'))
            .map(|(_, (p, _))| *p)
            .collect();
        (bobs.len() == 18 && bobs.iter().all(|p| *p <= 18)).then_some(lines)
    });
    for (server, (place, _)) in &after {
        if server.starts_with('b') {
            assert_eq!(*place, before[server].0 - 1, "{server} moved up one place");
        }
    }
    drop(agent);
}

#[tokio::test]
async fn a_persons_first_request_goes_before_anothers_tenth_and_the_page_says_so() {
    install_crds();
    let ns = TestNamespace::new("quota-fair");
    let (_agent, profile) = gpu_node(&ns.name);
    // One GPU for the students in all.
    let quota = Quota::new(&ns.name, "{subjects: [{group: students}], total: {gpus: 1}}");
    let _scheduler = Scheduler::start_with(
        &unique("quota-fair"),
        &ns.name,
        &ns.name,
        &["--usage-interval-seconds", "2"],
    );
    let web = WebFront::start(&ns.name, "compute-server", &["--usage-scope", &ns.name]);
    let (alice, bob) = (
        access_token("compute-server", "alice").await,
        access_token("compute-server", "bob").await,
    );
    let url = format!("{}/api/v1/servers", web.url);
    // Alice asks ten times first; bob once, last.
    for i in 0..10 {
        let body = json!({"name": format!("a{i}"), "profile": profile.name, "resources": {"gpus": 1}});
        let (status, body) = post(&url, &alice, body).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    eventually("alice's first to be placed", 60, || {
        servers(&ns.name)
            .iter()
            .any(|s| name(s) == "a0" && placed(s))
            .then_some(())
    });
    let body = json!({"name": "b0", "profile": profile.name, "resources": {"gpus": 1}});
    let (status, body) = post(&url, &bob, body).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let lines = eventually("bob first in line, before alice's second", 30, || {
        let lines = waiting(&ns.name);
        (lines.get("b0").map(|l| l.0) == Some(1) && lines.len() == 10).then_some(lines)
    });
    assert_eq!(lines["a1"].0, 2, "{lines:?}");
    assert_eq!(lines["a9"].0, 10);
    assert_eq!(
        lines["b0"].1,
        format!(
            "1st in line for the budget of the group students: the group students uses 1 of 1 GPUs \
             (ComputeQuota {}); this server asks for 1 more",
            quota.0
        )
    );
    // What the API shows bob of his own server: the same place and why.
    let (status, text) = get(&format!("{url}/b0"), &bob).await;
    assert_eq!(status, StatusCode::OK);
    let view: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(view["queuePosition"], 1, "{view}");
    assert!(
        view["message"].as_str().unwrap().starts_with("1st in line"),
        "{view}"
    );

    // Alice's running one is deleted once its hours are counted: bob's goes next, not her
    // second (each holds nothing then; alice used more lately).
    let today = jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC).date();
    eventually("alice's hours to be counted", 30, || {
        let out = kubectl(
            &[
                "get",
                "computeusage",
                &format!("{}.{today}", ns.name),
                "-o",
                "json",
            ],
            None,
        );
        let usage: Value = serde_json::from_slice(&out.stdout).ok()?;
        let owners = usage["spec"]["owners"].as_array()?.clone();
        owners
            .iter()
            .any(|o| o["owner"] == "alice" && o["gpuHours"].as_f64() > Some(0.0))
            .then_some(())
    });
    assert_eq!(waiting(&ns.name)["b0"].0, 1, "bob is still 1st in line");
    kubectl_ok(&["delete", "csrv", "-n", &ns.name, "a0", "--wait=true"], None);
    eventually("bob's to be placed", 60, || {
        servers(&ns.name)
            .iter()
            .any(|s| name(s) == "b0" && placed(s))
            .then_some(())
    });
    let lines = eventually("alice's line to move up", 30, || {
        let lines = waiting(&ns.name);
        (lines.get("a1").map(|l| l.0) == Some(1)).then_some(lines)
    });
    assert_eq!(lines.len(), 9);
}

#[tokio::test]
async fn hours_are_counted_in_the_api_server_and_a_spent_budget_waits_until_renewed() {
    install_crds();
    let ns = TestNamespace::new("quota-hours");
    let (_agent, profile) = gpu_node(&ns.name);
    let quota = Quota::new(
        &ns.name,
        "{subjects: [{group: students}], perUser: {gpuHours: 40}, period: month}",
    );
    // alice has used her 40 GPU-hours already this month (today's ledger says so).
    let now = jiff::Timestamp::now();
    let today = now.to_zoned(jiff::tz::TimeZone::UTC).date();
    let day = format!("{}.{today}", ns.name);
    let ledger = format!(
        "apiVersion: computeserver.io/v1alpha1\nkind: ComputeUsage\nmetadata:\n  name: {day}\n  \
         labels: {{computeserver.io/namespace: {}}}\nspec:\n  countedUntil: '{}'\n  \
         owners: [{{owner: alice, groups: [students], cpuHours: 40, memoryGibHours: 10, gpuHours: 40}}, \
         {{owner: bob, groups: [students], cpuHours: 1, memoryGibHours: 1, gpuHours: 39.99}}]\n",
        ns.name,
        now.strftime("%Y-%m-%dT%H:%M:%SZ")
    );
    kubectl_ok(&["create", "-f", "-"], Some(&ledger));
    let mut scheduler = Scheduler::start_with(
        &unique("quota-hours"),
        &ns.name,
        &ns.name,
        &["--usage-interval-seconds", "2"],
    );
    let web = WebFront::start(&ns.name, "compute-server", &["--usage-scope", &ns.name]);
    let (alice, bob, carol) = (
        access_token("compute-server", "alice").await,
        access_token("compute-server", "bob").await,
        access_token("compute-server", "carol").await,
    );
    let url = format!("{}/api/v1/servers", web.url);
    for (token, name, cpu, gpus) in [
        (&alice, "a-gpu", "100m", 1),
        (&alice, "a-cpu", "100m", 0),
        (&bob, "b-gpu", "100m", 1),
        (&carol, "c-cpu", "1", 0),
    ] {
        let body = json!({"name": name, "profile": profile.name, "resources": {"cpu": cpu, "gpus": gpus}});
        let (status, body) = post(&url, token, body).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    // Her GPU server waits, saying until when; her CPU-only server runs; bob's GPU server runs
    // until his last 36 seconds of GPU-hours are spent, and is stopped then, saying why.
    let renewed = today
        .first_of_month()
        .checked_add(jiff::ToSpan::month(1))
        .unwrap()
        .strftime("%-d %B %Y")
        .to_string();
    let lines = eventually("alice's GPU server to wait for her GPU-hours", 60, || {
        let lines = waiting(&ns.name);
        lines.contains_key("a-gpu").then_some(lines)
    });
    assert_eq!(
        lines["a-gpu"].1,
        format!(
            "1st in line for alice's budget: alice has used 40 of 40 GPU-hours this month (ComputeQuota {}), \
             renewed on {renewed}",
            quota.0
        )
    );
    support::wait_phase(&ns.name, "a-cpu", "Running");
    support::wait_phase(&ns.name, "c-cpu", "Running");
    let stopped = eventually(
        "bob's GPU server to be stopped when his GPU-hours are spent",
        120,
        || {
            let s = support::server_json(&ns.name, "b-gpu")?;
            (s["spec"]["running"] == false && s["status"]["phase"] == "Stopped").then_some(s)
        },
    );
    let reason = stopped["status"]["stopReason"].as_str().unwrap();
    assert!(
        reason.contains(&format!(
            "bob's 40 GPU-hours for this month run out (ComputeQuota {}); renewed on {renewed}",
            quota.0
        )),
        "{reason}"
    );
    assert!(support::events(&ns.name, "b-gpu").contains("LifecycleStop"));

    // The running servers' hours are counted into the day's ComputeUsage, also across a crash
    // of the scheduler (what it missed is counted when it is back, from countedUntil).
    let hours = |owner: &str| -> f64 {
        let usage: Value =
            serde_json::from_str(&kubectl_ok(&["get", "computeusage", &day, "-o", "json"], None)).unwrap();
        usage["spec"]["owners"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["owner"] == owner)
            .map(|o| o["cpuHours"].as_f64().unwrap())
            .unwrap_or(0.0)
    };
    let started = std::time::Instant::now();
    let carol_before = eventually("carol's hours to be counted", 30, || {
        let h = hours("carol");
        (h > 0.0).then_some(h)
    });
    scheduler.kill();
    std::thread::sleep(Duration::from_secs(6));
    let scheduler = Scheduler::start_with(
        &unique("quota-hours"),
        &ns.name,
        &ns.name,
        &["--usage-interval-seconds", "2"],
    );
    let counted = eventually("carol's hours to grow past the crash", 60, || {
        let h = hours("carol");
        (h - carol_before > 8.0 / 3600.0).then_some(h)
    });
    let elapsed = started.elapsed().as_secs_f64() / 3600.0;
    // 1 CPU for the time between the two reads, within the counting interval either side.
    assert!(
        (counted - carol_before - elapsed).abs() < 10.0 / 3600.0,
        "carol's server ran {elapsed:.4} h of 1 CPU between the two reads; counted {:.4}",
        counted - carol_before
    );
    assert!(hours("alice") >= 40.0, "alice's earlier hours are kept");
    // The same hours as Prometheus counters, per person and per group.
    let metrics = reqwest::get(format!("{}/metrics", scheduler.health_url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for series in [
        "compute_server_scheduler_user_reserved_hours_total{name=\"carol\",resource=\"cpu\"}",
        "compute_server_scheduler_group_reserved_hours_total{name=\"staff\",resource=\"cpu\"}",
    ] {
        let value: f64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(series))
            .unwrap_or_else(|| panic!("{series} in {metrics}"))
            .trim()
            .parse()
            .unwrap();
        assert!(value > 0.0, "{series} {value}");
    }

    // GET /api/v1/usage: each person their own, in JSON and CSV.
    let usage = format!("{}/api/v1/usage", web.url);
    let (status, text) = get(&usage, &alice).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let report: Value = serde_json::from_str(&text).unwrap();
    let rows = report["rows"].as_array().unwrap();
    assert!(rows.iter().all(|r| r["user"] == "alice"), "{report}");
    assert_eq!(rows[0]["day"], today.to_string());
    assert!(report["total"]["gpuHours"].as_f64().unwrap() >= 40.0);
    let budget = &report["budgets"][0];
    assert_eq!(
        (
            budget["what"].as_str(),
            budget["used"].as_str(),
            budget["limit"].as_str()
        ),
        (Some("GPU-hours this month"), Some("40"), Some("40")),
        "{report}"
    );
    let (status, text) = get(&format!("{usage}?user=alice"), &bob).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{text}");
    let (status, text) = get(&format!("{usage}?format=csv"), &bob).await;
    assert_eq!(status, StatusCode::OK);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "day,user,groups,cpu_hours,memory_gib_hours,gpu_hours");
    assert!(lines[1].starts_with(&format!("{today},bob,students,1")), "{text}");
    let (status, text) = get(&format!("{usage}?from=last-week"), &bob).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(text.contains("from must be a day written YYYY-MM-DD"), "{text}");
    drop(scheduler);
}
