//! End to end in headless Chromium (Debian's chromium and chromium-driver, driven through
//! WebDriver with fantoccini): alice signs in on Keycloak's own page, requests a server with the
//! form, watches it go live to Running on a real agent and the real scheduler, reaches it over
//! SSH, stops it and deletes it; ops sees it on the admin page; she is warned of a coming stop
//! and presses Keep running. Screenshots of each page go to
//! target/test-artifacts/.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, Locator};
use serde_json::json;
use support::chromium::{
    ChromeDriver, keycloak_login, screenshot, sign_in, terminal_connected, text, type_and_wait,
};
use support::{
    Agent, BrowserStack, Scheduler, TestNamespace, TestProfile, WebFront, eventually, eventually_async,
    free_port, install_crds, kubectl, kubectl_ok, ssh, ssh_keypair, unique,
};

/// Waits until the detail page (not reloaded) shows `phase`; returns the phases it saw.
async fn wait_for_phase(browser: &Client, phase: &str, seconds: u64) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(seconds);
    loop {
        let now = text(browser, "[data-field=phase]").await;
        if seen.last() != Some(&now) {
            seen.push(now.clone());
        }
        if now == phase {
            return seen;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the page did not show {phase} within {seconds} s; it showed {seen:?}: {}",
            text(browser, "p.message").await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn alice_requests_a_server_in_chromium_sees_it_running_stops_and_deletes_it() {
    install_crds();
    let ns = TestNamespace::new("browser");
    let node = unique("browser-node");
    let flags = ["--lease-namespace", ns.name.as_str(), "--lease-seconds", "6"];
    let _agent = Agent::start_with(&node, 1, &flags);
    let _scheduler = Scheduler::start(&unique("sched"), &ns.name, &ns.name);
    let web = WebFront::start(&ns.name, "compute-server", &[]);
    let driver = ChromeDriver::start();
    let keys = tempfile::tempdir().unwrap();
    let (private_key, public_key) = ssh_keypair(keys.path(), "alice@browser-test");

    // Sign in through Keycloak's own page.
    let alice = driver.session("alice").await;
    alice.goto(&web.url).await.unwrap();
    screenshot(&alice, "0-welcome").await;
    sign_in(&alice, "alice").await;
    assert_eq!(text(&alice, "span.user").await, "alice");
    assert_eq!(
        alice.current_url().await.unwrap().as_str(),
        format!("{}/", web.url)
    );
    assert!(text(&alice, "main").await.contains("You have no servers yet."));

    // The form shows a field's error next to it and keeps what was typed.
    alice.goto(&format!("{}/servers/new", web.url)).await.unwrap();
    alice
        .find(Locator::Css("input[value=debian]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    alice
        .find(Locator::Id("name"))
        .await
        .unwrap()
        .send_keys("e2e")
        .await
        .unwrap();
    alice
        .find(Locator::Id("ssh_keys"))
        .await
        .unwrap()
        .send_keys(&public_key)
        .await
        .unwrap();
    screenshot(&alice, "1-request-form").await;
    alice
        .find(Locator::Id("cpu"))
        .await
        .unwrap()
        .send_keys("8")
        .await
        .unwrap();
    alice
        .find(Locator::Css("form.request button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(
        text(&alice, "#error-cpu").await,
        "at most 2 for profile debian; you asked for 8"
    );
    screenshot(&alice, "2-request-form-errors").await;
    assert!(
        kubectl(&["get", "csrv", "-n", &ns.name, "e2e"], None)
            .status
            .code()
            != Some(0)
    );

    // Corrected, it is requested; the detail page follows it live to Running.
    let cpu = alice.find(Locator::Id("cpu")).await.unwrap();
    cpu.clear().await.unwrap();
    cpu.send_keys("1").await.unwrap();
    alice
        .find(Locator::Css("form.request button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    alice
        .wait()
        .for_url(&format!("{}/servers/e2e", web.url).parse().unwrap())
        .await
        .unwrap();
    let seen = wait_for_phase(&alice, "Running", 120).await;
    assert!(
        seen.len() >= 2,
        "the phase changed on the page without a reload: {seen:?}"
    );
    let message = text(&alice, "p.message").await;
    assert_eq!(message, format!("running on node {node}"));
    assert_eq!(text(&alice, "[data-field=node]").await, node);
    let command = text(&alice, "[data-field=ssh]").await;
    // Events are read when the page loads: load it again to show the agent's.
    alice.refresh().await.unwrap();
    let events = text(&alice, "table.events").await;
    assert!(events.contains("Started"), "{events}");
    screenshot(&alice, "3-server-detail").await;

    // Take snapshot: the page lists it, Pending, then Ready with its size (after a reload).
    alice
        .find(Locator::Css("form[action$='/snapshot'] button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let listed = loop {
        let listed = text(&alice, "table.snapshots").await;
        if listed.contains("Ready") || std::time::Instant::now() > deadline {
            break listed;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        alice.refresh().await.unwrap();
    };
    assert!(
        listed.contains("e2e-2") && listed.contains("Ready") && listed.contains("holds /home"),
        "{listed}"
    );
    screenshot(&alice, "4-server-snapshot").await;

    // Clone: the snapshot's link opens the form set to start from it; the clone runs with it.
    alice
        .find(Locator::Css("table.snapshots a[href^='/servers/new?from=e2e-2']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let notice = text(&alice, "[data-field=restore-from]").await;
    assert!(notice.starts_with("Starts from snapshot e2e-2"), "{notice}");
    alice
        .find(Locator::Id("name"))
        .await
        .unwrap()
        .send_keys("e2e-copy")
        .await
        .unwrap();
    alice
        .find(Locator::Css("form.request button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    alice
        .wait()
        .for_url(&format!("{}/servers/e2e-copy", web.url).parse().unwrap())
        .await
        .unwrap();
    wait_for_phase(&alice, "Running", 120).await;
    alice.refresh().await.unwrap();
    let restored = text(&alice, "[data-field=restored]").await;
    assert!(restored.starts_with("Restored from snapshot e2e-2"), "{restored}");
    screenshot(&alice, "4-server-clone").await;
    kubectl_ok(
        &["delete", "csrv", "-n", &ns.name, "e2e-copy", "--wait=false"],
        None,
    );
    alice.goto(&format!("{}/servers/e2e", web.url)).await.unwrap();

    // The SSH command shown works, with the key given in the form.
    let port = command
        .strip_prefix("ssh -p ")
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("an ssh command: {command}"))
        .to_string();
    let hostname = eventually("ssh into the server", 60, || {
        let out = ssh(&private_key, "127.0.0.1", &port, "hostname");
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    });
    assert_eq!(hostname, "e2e");

    // My servers lists it, Running.
    alice.goto(&web.url).await.unwrap();
    let row = text(&alice, "table.servers tbody tr").await;
    assert!(
        row.contains("e2e") && row.contains("Running") && row.contains(&node),
        "{row}"
    );
    screenshot(&alice, "4-my-servers").await;

    // Ops sees it on the admin page.
    let ops = driver.session("ops").await;
    ops.goto(&format!("{}/admin", web.url)).await.unwrap();
    keycloak_login(&ops, "ops").await;
    ops.wait()
        .for_element(Locator::Css("table.servers"))
        .await
        .unwrap();
    let table = text(&ops, "table.servers").await;
    assert!(table.contains("e2e") && table.contains("alice"), "{table}");
    screenshot(&ops, "5-admin").await;
    ops.close().await.unwrap();

    // Stop: the page follows to Stopped; Start is offered instead of Stop.
    alice.goto(&format!("{}/servers/e2e", web.url)).await.unwrap();
    alice
        .find(Locator::Css("form[action$='/stop'] button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_phase(&alice, "Stopped", 60).await;
    assert!(
        alice
            .find(Locator::Css("form[action$='/start'] button"))
            .await
            .unwrap()
            .is_displayed()
            .await
            .unwrap()
    );
    assert!(
        !alice
            .find(Locator::Css("form[action$='/stop'] button"))
            .await
            .unwrap()
            .is_displayed()
            .await
            .unwrap()
    );

    // Delete (after the confirmation): back on My servers, and the server is gone.
    alice
        .find(Locator::Css("form[action$='/delete'] button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    alice.accept_alert().await.unwrap();
    alice
        .wait()
        .for_url(&format!("{}/", web.url).parse().unwrap())
        .await
        .unwrap();
    let ns_name = ns.name.clone();
    eventually_async("the server to be gone", 60, || {
        let ns_name = ns_name.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                kubectl(&["get", "csrv", "-n", &ns_name, "e2e"], None)
                    .status
                    .code()
                    != Some(0)
            })
            .await
            .unwrap()
            .then_some(())
        }
    })
    .await;
    alice.goto(&web.url).await.unwrap();
    assert!(text(&alice, "main").await.contains("You have no servers yet."));
    alice.close().await.unwrap();
}

/// Whether the first element matching `css` is shown.
async fn shown(browser: &Client, css: &str) -> bool {
    browser
        .find(Locator::Css(css))
        .await
        .unwrap()
        .is_displayed()
        .await
        .unwrap()
}

#[tokio::test]
async fn alice_is_warned_of_a_coming_stop_and_keeps_her_server_running() {
    install_crds();
    let ns = TestNamespace::new("browser-life");
    let flags = ["--lease-namespace", ns.name.as_str(), "--lease-seconds", "6"];
    let agent = Agent::start_with(&unique("browser-node"), 1, &flags);
    let _scheduler = Scheduler::start(&unique("sched"), &ns.name, &ns.name);
    // Servers of this profile stop after 10 minutes, whatever they do: inside the warning
    // (15 minutes at most) from their start. Keep running holds one up to 2 hours longer.
    let profile = TestProfile::new("lifetime", "lifecycle: {maxLifetime: 10m, maxExtension: 2h}");
    let yaml = format!(
        "apiVersion: computeserver.io/v1alpha1\nkind: ComputeServer\nmetadata:\n  name: job\n  namespace: {}\n  \
         labels: {{computeserver.io/owner: alice}}\nspec: {{owner: alice, profile: {}}}\n",
        ns.name, profile.name
    );
    support::kubectl_ok(&["apply", "-f", "-"], Some(&yaml));
    let web = WebFront::start(&ns.name, "compute-server", &[]);
    let driver = ChromeDriver::start();

    let alice = driver.session("alice").await;
    alice.goto(&format!("{}/servers/job", web.url)).await.unwrap();
    keycloak_login(&alice, "alice").await;
    alice.wait().for_element(Locator::Css("span.user")).await.unwrap();
    wait_for_phase(&alice, "Running", 90).await;

    // The warning: when, why, and the button, live on the page as the controller writes it.
    eventually_async("the warning on the page", 30, || {
        let alice = alice.clone();
        async move { shown(&alice, "div.stop-warning").await.then_some(()) }
    })
    .await;
    let warning = text(&alice, "div.stop-warning").await;
    assert!(
        warning.starts_with("This server stops at ")
            && warning.contains(" UTC unless kept running: its lifetime of 10m is over (started at "),
        "{warning}"
    );
    let button = text(&alice, "div.stop-warning button").await;
    assert_eq!(button, "Keep running for 2h");
    screenshot(&alice, "6-stop-warning").await;

    // Keep running: the server is kept two hours on, and the page says so quietly.
    let pressed = jiff::Timestamp::now();
    alice
        .find(Locator::Css("div.stop-warning button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    alice
        .wait()
        .for_url(&format!("{}/servers/job", web.url).parse().unwrap())
        .await
        .unwrap();
    let stops = text(&alice, "[data-field=stops]").await;
    assert!(stops.starts_with("Stops by itself at "), "{stops}");
    assert!(!shown(&alice, "div.stop-warning").await);
    screenshot(&alice, "7-kept-running").await;
    let ns_name = ns.name.clone();
    let server: serde_json::Value = tokio::task::spawn_blocking(move || {
        let out = support::kubectl_ok(&["get", "csrv", "-n", &ns_name, "job", "-o", "json"], None);
        serde_json::from_str(&out).unwrap()
    })
    .await
    .unwrap();
    let until: jiff::Timestamp = server["spec"]["keepRunningUntil"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let held = until.duration_since(pressed).as_secs();
    assert!((7195..=7205).contains(&held), "kept {held} s from the press");
    assert_eq!(server["status"]["phase"], "Running");
    alice.close().await.unwrap();
    drop(agent);
}

#[tokio::test]
async fn alice_sees_her_place_in_line_her_budgets_and_usage_and_ops_a_chart_per_group() {
    install_crds();
    let ns = TestNamespace::new("browser-quota");
    let flags = ["--lease-namespace", ns.name.as_str(), "--lease-seconds", "6"];
    let _agent = Agent::start_with(&unique("browser-node"), 1, &flags);
    // Students may hold one CPU each; this scheduler's quotas and usage carry its namespace.
    let quota = unique("students");
    let today = jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC).date();
    let yesterday = today.yesterday().unwrap();
    let mut yaml = format!(
        "apiVersion: computeserver.io/v1alpha1\nkind: ComputeQuota\nmetadata: {{name: {quota}, labels: {{computeserver.io/namespace: {ns}}}}}\n\
         spec: {{subjects: [{{group: students}}], perUser: {{cpu: '1', gpuHours: 40}}, total: {{cpu: '8'}}}}\n",
        ns = ns.name
    );
    // What was counted before: yesterday's and today's hours, for two groups.
    for (day, scale) in [(yesterday, 1.0), (today, 0.5)] {
        yaml.push_str(&format!(
            "---\napiVersion: computeserver.io/v1alpha1\nkind: ComputeUsage\nmetadata: {{name: {ns}.{day}, labels: {{computeserver.io/namespace: {ns}}}}}\n\
             spec: {{countedUntil: '{until}', owners: [\
             {{owner: alice, groups: [students], cpuHours: {a}, memoryGibHours: 8, gpuHours: {ag}}}, \
             {{owner: bob, groups: [students], cpuHours: {b}, memoryGibHours: 2, gpuHours: 0}}, \
             {{owner: carol, groups: [staff], cpuHours: {c}, memoryGibHours: 30, gpuHours: {cg}}}]}}\n",
            ns = ns.name,
            until = if day == today { jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string() } else { format!("{today}T00:00:00Z") },
            a = 12.0 * scale, ag = 3.0 * scale, b = 4.0 * scale, c = 20.0 * scale, cg = 6.0 * scale,
        ));
    }
    kubectl_ok(&["apply", "-f", "-"], Some(&yaml));
    struct Cleanup(String);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = kubectl(&["delete", "computequota", &self.0, "--wait=false"], None);
        }
    }
    let _cleanup = Cleanup(quota.clone());
    let profile = TestProfile::new("quota", "maxResources: {cpu: '1', memory: 256Mi}");
    for name in ["first", "second"] {
        let yaml = format!(
            "apiVersion: computeserver.io/v1alpha1\nkind: ComputeServer\nmetadata: {{name: {name}, namespace: {}}}\n\
             spec: {{owner: alice, ownerGroups: [students], profile: {}, resources: {{cpu: '1'}}}}\n",
            ns.name, profile.name
        );
        kubectl_ok(&["apply", "-f", "-"], Some(&yaml));
        std::thread::sleep(Duration::from_millis(1100));
    }
    let _scheduler = Scheduler::start_with(
        &unique("sched"),
        &ns.name,
        &ns.name,
        &["--usage-interval-seconds", "2"],
    );
    let web = WebFront::start(&ns.name, "compute-server", &["--usage-scope", &ns.name]);
    let driver = ChromeDriver::start();

    // Her second server waits, and its page says for what and where she is in line.
    let alice = signed_in(&driver, &web, "alice", "/servers/second").await;
    let waits = eventually_async("the place in line on the page", 60, || {
        let alice = alice.clone();
        async move {
            alice.refresh().await.ok()?;
            let page = text(&alice, "main").await;
            page.contains("in line").then_some(page)
        }
    })
    .await;
    assert!(
        waits.contains(&format!(
            "1st in line for alice's budget: alice uses 1 of 1 CPUs (ComputeQuota {quota}); this server asks for 1 more"
        )),
        "{waits}"
    );
    screenshot(&alice, "9-waiting-in-line").await;

    // Her usage: her budgets, with what is used of them, and her hours per day in a chart.
    alice
        .goto(&format!("{}/usage?from={yesterday}", web.url))
        .await
        .unwrap();
    let budgets = text(&alice, "ul.budgets").await;
    assert!(budgets.contains("you: CPUs 1 of 1"), "{budgets}");
    assert!(budgets.contains("you: GPU-hours this month"), "{budgets}");
    assert!(budgets.contains("the group students: CPUs 1 of 8"), "{budgets}");
    let bars = alice
        .find_all(Locator::Css("figure.chart rect.bar"))
        .await
        .unwrap()
        .len();
    assert!(bars >= 2, "alice's hours of two days: {bars} bars");
    let legend = text(&alice, "figcaption.legend").await;
    assert_eq!(legend, "alice", "a person sees only her own");
    screenshot(&alice, "9-my-usage").await;

    // The form says before she asks that a new server would wait.
    alice.goto(&format!("{}/servers/new", web.url)).await.unwrap();
    let notice = text(&alice, "section.budgets p.notice").await;
    assert!(notice.starts_with("A new server would wait"), "{notice}");
    assert!(notice.contains("you use 1 of 1 CPUs"), "{notice}");
    screenshot(&alice, "9-request-form-budgets").await;

    // An admin sees everyone's, with a chart per group per day, drawn in the page.
    let ops = signed_in(&driver, &web, "ops", &format!("/usage?from={yesterday}")).await;
    let legend = text(&ops, "figcaption.legend").await;
    assert_eq!(
        legend.split_whitespace().collect::<Vec<_>>(),
        ["staff", "students"]
    );
    let height = ops
        .execute(
            "return document.querySelector('figure.chart svg').getBoundingClientRect().height",
            vec![],
        )
        .await
        .unwrap();
    assert!(height.as_f64().unwrap() > 100.0, "the chart is drawn: {height}");
    let first = ops
        .find(Locator::Css("figure.chart rect.bar title"))
        .await
        .unwrap()
        .html(false)
        .await
        .unwrap();
    assert!(
        first.contains(&format!("staff, {yesterday}: 6 GPU-hours")),
        "{first}"
    );
    screenshot(&ops, "9-admin-usage").await;
}

/// Applies a server of alice's and waits until it runs.
fn alices_server(ns: &str, name: &str, profile: &str) {
    let yaml = format!(
        "apiVersion: computeserver.io/v1alpha1\nkind: ComputeServer\nmetadata:\n  name: {name}\n  namespace: {ns}\n  \
         labels: {{computeserver.io/owner: alice}}\nspec: {{owner: alice, profile: {profile}}}\n"
    );
    support::kubectl_ok(&["apply", "-f", "-"], Some(&yaml));
    support::wait_phase(ns, name, "Running");
}

/// Signs `user` in with a browser of their own, landing on `path`.
async fn signed_in(driver: &ChromeDriver, web: &WebFront, user: &str, path: &str) -> Client {
    let browser = driver.session(user).await;
    browser.goto(&format!("{}{path}", web.url)).await.unwrap();
    keycloak_login(&browser, user).await;
    browser
        .wait()
        .for_element(Locator::Css("span.user"))
        .await
        .unwrap();
    browser
}

#[tokio::test]
async fn alice_types_in_a_terminal_in_her_browser_and_bob_cannot_open_it() {
    install_crds();
    let ns = TestNamespace::new("browser-term");
    let stack = BrowserStack::start(&ns.name);
    alices_server(&ns.name, "term", "debian");
    let driver = ChromeDriver::start();

    // The detail page offers the terminal; it opens, and runs a shell on the server.
    let alice = signed_in(&driver, &stack.web, "alice", "/servers/term").await;
    let link = alice.find(Locator::LinkText("Open terminal")).await.unwrap();
    assert!(link.is_displayed().await.unwrap());
    let href = link.attr("href").await.unwrap().unwrap();
    assert_eq!(href, "/servers/term/terminal");
    alice.goto(&format!("{}{href}", stack.web.url)).await.unwrap();
    terminal_connected(&alice, 30).await;
    type_and_wait(&alice, "hostname", "the host name", |l| {
        (l == "term").then_some(())
    })
    .await;
    screenshot(&alice, "7-terminal").await;

    // Resizing the window resizes the terminal (stty reads the pty's size).
    let size = |l: &str| {
        let (rows, cols) = l.split_once(' ')?;
        Some((rows.parse::<u32>().ok()?, cols.parse::<u32>().ok()?))
    };
    let before = type_and_wait(&alice, "stty size", "its size", size).await;
    alice.set_window_size(900, 600).await.unwrap();
    let after = eventually_async("another size", 20, || {
        let alice = alice.clone();
        async move {
            let now = type_and_wait(&alice, "clear; stty size", "its size", size).await;
            (now != before).then_some(now)
        }
    })
    .await;
    assert!(
        after.1 < before.1,
        "narrower window, fewer columns: {before:?} then {after:?}"
    );

    // The bastion's audit log has the browser session, with alice's name.
    let log = std::fs::read_to_string(format!(
        "{}/target/test-logs/bastion-{}.log",
        env!("CARGO_MANIFEST_DIR"),
        ns.name
    ))
    .unwrap();
    let audited = log.lines().any(|l| {
        l.contains("\"event\":\"auth\"")
            && l.contains("\"outcome\":\"accepted\"")
            && l.contains("\"user\":\"\\\"alice\\\"\"")
            && l.contains(&format!("web terminal of alice on term.{}", ns.name))
    });
    assert!(
        audited,
        "no audited browser login of alice in the bastion's log:\n{log}"
    );
    assert_eq!(
        support::metric(&stack.bastion.health_url, "compute_server_bastion_open_jumps"),
        1
    );

    // Closing the page ends the session: the bastion's jump closes.
    alice
        .goto(&format!("{}/servers/term", stack.web.url))
        .await
        .unwrap();
    eventually("the jump to close", 20, || {
        (support::metric(&stack.bastion.health_url, "compute_server_bastion_open_jumps") == 0).then_some(())
    });

    // Bob gets "not found", as for a server that does not exist.
    let bob = signed_in(&driver, &stack.web, "bob", "/servers/new").await;
    for path in ["/servers/term/terminal", "/servers/term/apps/jupyter/"] {
        bob.goto(&format!("{}{path}", stack.web.url)).await.unwrap();
        assert_eq!(text(&bob, "h1").await, "Not found", "{path}");
    }
    alice.close().await.unwrap();
    bob.close().await.unwrap();
}

#[tokio::test]
async fn alice_shares_her_server_on_its_page_bob_opens_its_terminal_and_loses_it_when_removed() {
    install_crds();
    let ns = TestNamespace::new("browser-share");
    let stack = BrowserStack::start(&ns.name);
    alices_server(&ns.name, "lab", "debian");
    let driver = ChromeDriver::start();

    // alice shares it with bob, to use, from its page.
    let alice = signed_in(&driver, &stack.web, "alice", "/servers/lab").await;
    let who = alice.find(Locator::Id("share-who")).await.unwrap();
    who.send_keys("bob").await.unwrap();
    screenshot(&alice, "11-share-dialog").await;
    alice
        .find(Locator::Css("form.share button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    alice
        .wait()
        .for_element(Locator::Css("tr[data-share='user bob']"))
        .await
        .unwrap();
    assert_eq!(
        text(&alice, "tr[data-share='user bob'] td:nth-child(2)").await,
        "use"
    );

    // bob finds it under "Shared with me", with alice as its owner and his role.
    let bob = signed_in(&driver, &stack.web, "bob", "/servers/new").await;
    bob.goto(&format!("{}/", stack.web.url)).await.unwrap();
    assert_eq!(text(&bob, "h2#shared").await, "Shared with me");
    let row = text(&bob, "h2#shared + table tbody tr").await;
    assert!(row.starts_with("lab alice use"), "{row}");
    assert!(row.contains("ssh -J bob@"), "his own ssh command: {row}");
    screenshot(&bob, "12-shared-with-me").await;

    // His terminal opens on alice's server, through the bastion as bob.
    bob.goto(&format!("{}/servers/lab", stack.web.url)).await.unwrap();
    assert_eq!(
        text(&bob, ".actions .role").await,
        "Shared with you by alice: use"
    );
    assert!(
        bob.find(Locator::Css("form[action='/servers/lab/delete']"))
            .await
            .is_err(),
        "no Delete for bob"
    );
    bob.goto(&format!("{}/servers/lab/terminal", stack.web.url))
        .await
        .unwrap();
    terminal_connected(&bob, 30).await;
    type_and_wait(&bob, "hostname", "the host name", |l| (l == "lab").then_some(())).await;
    assert_eq!(
        support::metric(&stack.bastion.health_url, "compute_server_bastion_open_jumps"),
        1
    );

    // alice removes him: his terminal's session ends at once, and the server is gone for him.
    alice.refresh().await.unwrap();
    alice
        .find(Locator::Css("tr[data-share='user bob'] form button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let removed = std::time::Instant::now();
    eventually("bob's terminal's jump to close", 10, || {
        (support::metric(&stack.bastion.health_url, "compute_server_bastion_open_jumps") == 0).then_some(())
    });
    let took = removed.elapsed();
    println!(
        "bob's terminal closed {:.2} s after alice removed him",
        took.as_secs_f64()
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
    bob.goto(&format!("{}/servers/lab", stack.web.url)).await.unwrap();
    assert_eq!(text(&bob, "h1").await, "Not found");
    for browser in [alice, bob] {
        browser.close().await.unwrap();
    }
}

#[tokio::test]
async fn alice_opens_jupyter_through_the_front_and_its_kernel_answers_over_websockets() {
    install_crds();
    let ns = TestNamespace::new("browser-app");
    let stack = BrowserStack::start(&ns.name);
    let profile = jupyter_profile();
    alices_server(&ns.name, "nb", &profile.name);
    let driver = ChromeDriver::start();

    // The detail page lists the app; it opens at its path on the front.
    let alice = signed_in(&driver, &stack.web, "alice", "/servers/nb").await;
    let link = alice.find(Locator::LinkText("Open jupyter")).await.unwrap();
    assert_eq!(
        link.attr("href").await.unwrap().as_deref(),
        Some("/servers/nb/apps/jupyter/")
    );
    let app = format!("{}/servers/nb/apps/jupyter/", stack.web.url);
    eventually_async("Jupyter's page", 90, || {
        let (alice, app) = (alice.clone(), app.clone());
        async move {
            alice.goto(&app).await.ok()?;
            let title = alice.title().await.ok()?;
            title.contains("Home").then_some(())
        }
    })
    .await;
    let url = alice.current_url().await.unwrap();
    assert!(url.path().starts_with("/servers/nb/apps/jupyter/tree"), "{url}");
    screenshot(&alice, "8-jupyter").await;

    // A kernel starts, and runs code over its WebSocket, through the front.
    let answer = alice
        .execute_async(
            r#"const done = arguments[arguments.length - 1];
            const base = "/servers/nb/apps/jupyter/";
            const xsrf = decodeURIComponent((document.cookie.match(/_xsrf=([^;]+)/) || [])[1] || "");
            fetch(base + "api/kernels", {method: "POST", headers: {"X-XSRFToken": xsrf}})
              .then((r) => r.json())
              .then((kernel) => {
                const ws = new WebSocket(`ws://${location.host}${base}api/kernels/${kernel.id}/channels`);
                ws.onopen = () => ws.send(JSON.stringify({
                  header: {msg_id: "m1", username: "test", session: "s1", msg_type: "execute_request",
                           version: "5.3", date: new Date().toISOString()},
                  parent_header: {}, metadata: {}, channel: "shell", buffers: [],
                  content: {code: "print(6 * 7)", silent: false, store_history: false,
                            user_expressions: {}, allow_stdin: false}}));
                ws.onmessage = (event) => {
                  const message = JSON.parse(event.data);
                  if (message.msg_type === "stream") { done(message.content.text.trim()); ws.close(); }
                };
                ws.onerror = () => done("the WebSocket failed");
              })
              .catch((error) => done("error: " + error));"#,
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(answer, json!("42"));

    // Bob: not found. Signed out: to the sign-in.
    let bob = signed_in(&driver, &stack.web, "bob", "/servers/new").await;
    bob.goto(&app).await.unwrap();
    assert_eq!(text(&bob, "h1").await, "Not found");

    // Shared with carol to view: she opens the app (the bastion lets her web front's link for
    // apps through), and gets no terminal.
    kubectl_ok(
        &[
            "patch",
            "csrv",
            "nb",
            "-n",
            &ns.name,
            "--type=merge",
            "-p",
            r#"{"spec":{"sharedWith":[{"user":"carol","role":"view"}]}}"#,
        ],
        None,
    );
    let carol = signed_in(&driver, &stack.web, "carol", "/servers/nb").await;
    assert!(
        carol.find(Locator::LinkText("Open terminal")).await.is_err(),
        "a viewer is offered no terminal"
    );
    eventually_async("Jupyter's page for carol", 30, || {
        let (carol, app) = (carol.clone(), app.clone());
        async move {
            carol.goto(&app).await.ok()?;
            let title = carol.title().await.ok()?;
            title.contains("Home").then_some(())
        }
    })
    .await;
    carol
        .goto(&format!("{}/servers/nb/terminal", stack.web.url))
        .await
        .unwrap();
    assert_eq!(text(&carol, "h1").await, "Not allowed");
    carol.close().await.unwrap();
    let nobody = driver.session("nobody").await;
    nobody.goto(&app).await.unwrap();
    nobody
        .wait()
        .for_element(Locator::Id("kc-form-login"))
        .await
        .unwrap();
    for browser in [alice, bob, nobody] {
        browser.close().await.unwrap();
    }
}

/// A profile of the test's own with the jupyter image: ssh, and Jupyter as a web app.
fn jupyter_profile() -> TestProfile {
    let profile = TestProfile {
        name: unique("jupyter"),
    };
    let yaml = format!(
        "apiVersion: computeserver.io/v1alpha1\nkind: ComputeProfile\nmetadata: {{name: {}}}\n\
         spec: {{image: 'computeserver/jupyter:local', defaultResources: {{cpu: '1', memory: 1Gi}}, \
         ports: [{{name: ssh, containerPort: 22}}, {{name: jupyter, containerPort: 8888, appProtocol: http}}]}}\n",
        profile.name
    );
    support::kubectl_ok(&["apply", "-f", "-"], Some(&yaml));
    profile
}

fn p50(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// Reads from `read` until what came holds `needle`; the time it took.
fn read_until(read: &mut impl std::io::Read, needle: &[u8]) -> Duration {
    let start = std::time::Instant::now();
    let (mut seen, mut buffer) = (Vec::new(), [0u8; 4096]);
    while !seen.windows(needle.len()).any(|w| w == needle) {
        let n = read.read(&mut buffer).expect("ssh's output");
        assert!(n > 0, "ssh ended: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buffer[..n]);
    }
    start.elapsed()
}

/// `make bench-browser`: a keystroke's echo through the browser terminal's WebSocket versus
/// `ssh -tt -J` to the same server, and a page of Jupyter through the front's proxy versus
/// through `ssh -L` over the same bastion; BENCH_RUNS samples each (default 200), p50s and
/// their ratios.
#[tokio::test]
#[ignore = "benchmark: run with `make bench BENCH=browser`"]
async fn bench_terminal_echo_and_app_page_through_the_front_versus_ssh() {
    use futures::{SinkExt, StreamExt};
    use std::io::Write;
    use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};
    let runs: usize = std::env::var("BENCH_RUNS").map_or(200, |n| n.parse().unwrap());
    install_crds();
    let ns = TestNamespace::new("browser-bench");
    let stack = BrowserStack::start(&ns.name);
    let profile = jupyter_profile();
    let keys = tempfile::tempdir().unwrap();
    let (key, public) = ssh_keypair(keys.path(), "alice@bench");
    let yaml = format!(
        "apiVersion: computeserver.io/v1alpha1\nkind: ComputeServer\nmetadata:\n  name: nb\n  namespace: {}\n  \
         labels: {{computeserver.io/owner: alice}}\nspec: {{owner: alice, profile: {}, sshAuthorizedKeys: ['{public}']}}\n",
        ns.name, profile.name
    );
    support::kubectl_ok(&["apply", "-f", "-"], Some(&yaml));
    support::wait_phase(&ns.name, "nb", "Running");

    // alice signs in on Keycloak's pages, as her browser would; her cookie opens the socket.
    let form = support::signin::FormClient::new(None);
    let login = form.get(&format!("{}/servers/nb", stack.web.url)).await;
    let landed = form.log_in(&login, "alice").await;
    assert!(landed.url.ends_with("/servers/nb"), "{}", landed.url);
    let cookie = form.cookies(&stack.web.url);
    let socket_url = format!(
        "{}/servers/nb/terminal/socket?cols=80&rows=24",
        stack.web.url.replace("http://", "ws://")
    );
    let mut request = socket_url.into_client_request().unwrap();
    request.headers_mut().insert("cookie", cookie.parse().unwrap());
    request
        .headers_mut()
        .insert("origin", stack.web.url.parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("the terminal's socket");
    let mut shown = Vec::new();
    while !String::from_utf8_lossy(&shown).contains("# ") {
        match socket.next().await {
            Some(Ok(Message::Binary(bytes))) => shown.extend_from_slice(&bytes),
            Some(Ok(Message::Text(text))) => panic!("the terminal said {text}"),
            Some(Ok(_)) => {}
            other => panic!("the socket ended before a prompt: {other:?}"),
        }
    }
    let mut through_front = Vec::new();
    for i in 0..runs {
        let start = std::time::Instant::now();
        socket.send(Message::Binary(b"x".to_vec().into())).await.unwrap();
        loop {
            match socket.next().await {
                Some(Ok(Message::Binary(bytes))) if bytes.contains(&b'x') => break,
                Some(Ok(_)) => {}
                other => panic!("the socket ended: {other:?}"),
            }
        }
        through_front.push(start.elapsed().as_secs_f64() * 1000.0);
        if i % 50 == 49 {
            socket
                .send(Message::Binary(b"\x15".to_vec().into()))
                .await
                .unwrap(); // Ctrl-U
        }
    }

    // The same keystrokes with OpenSSH through the bastion.
    let jump = format!("alice@127.0.0.1:{}", stack.bastion.port);
    // Options for the jump host too: ssh applies command-line options to the destination only.
    let config = keys.path().join("config");
    std::fs::write(
        &config,
        format!(
            "Host *\n  IdentityFile {}\n  IdentitiesOnly yes\n  StrictHostKeyChecking no\n  \
             UserKnownHostsFile /dev/null\n  LogLevel ERROR\n",
            key.display()
        ),
    )
    .unwrap();
    let ssh_args = |extra: &[&str]| {
        let mut args: Vec<String> = ["-F", &config.display().to_string(), "-J", &jump]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    let target = format!("root@nb.{}", ns.name);
    let mut ssh = Command::new("ssh")
        .args(ssh_args(&["-tt", &target]))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (mut stdin, mut stdout) = (ssh.stdin.take().unwrap(), ssh.stdout.take().unwrap());
    let with_ssh = tokio::task::spawn_blocking(move || {
        read_until(&mut stdout, b"# ");
        let mut samples = Vec::new();
        for i in 0..runs {
            let start = std::time::Instant::now();
            stdin.write_all(b"x").unwrap();
            stdin.flush().unwrap();
            read_until(&mut stdout, b"x");
            samples.push(start.elapsed().as_secs_f64() * 1000.0);
            if i % 50 == 49 {
                stdin.write_all(b"\x15").unwrap();
            }
        }
        samples
    })
    .await
    .unwrap();
    let _ = ssh.kill();
    let _ = ssh.wait();

    // Jupyter's /api: through the front, and through an ssh -L tunnel over the same bastion.
    let local = free_port();
    let forward = format!("127.0.0.1:{local}:127.0.0.1:8888");
    let mut tunnel = Command::new("ssh")
        .args(ssh_args(&["-N", "-L", &forward, &target]))
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let proxied = format!("{}/servers/nb/apps/jupyter/api", stack.web.url);
    let direct = format!("http://127.0.0.1:{local}/servers/nb/apps/jupyter/api");
    eventually_async("Jupyter through the tunnel", 60, || {
        let (client, direct) = (client.clone(), direct.clone());
        async move {
            client
                .get(&direct)
                .send()
                .await
                .ok()?
                .status()
                .is_success()
                .then_some(())
        }
    })
    .await;
    let (mut front_pages, mut tunnel_pages) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        for (url, cookie, samples) in [
            (&proxied, cookie.as_str(), &mut front_pages),
            (&direct, "", &mut tunnel_pages),
        ] {
            let start = std::time::Instant::now();
            let answer = client.get(url).header("cookie", cookie).send().await.unwrap();
            assert!(answer.status().is_success(), "{url}: {}", answer.status());
            answer.bytes().await.unwrap();
            samples.push(start.elapsed().as_secs_f64() * 1000.0);
        }
    }
    let _ = tunnel.kill();
    let _ = tunnel.wait();

    let (front, ssh) = (p50(through_front), p50(with_ssh));
    let (page, tunnelled) = (p50(front_pages), p50(tunnel_pages));
    println!("machine: {}", support::machine());
    println!(
        "browser-terminal: runs={runs} echo_p50_ms={front:.2} ssh_echo_p50_ms={ssh:.2} ratio={:.2}",
        front / ssh
    );
    println!(
        "browser-app: runs={runs} proxy_p50_ms={page:.2} ssh_tunnel_p50_ms={tunnelled:.2} ratio={:.2}",
        page / tunnelled
    );
}
