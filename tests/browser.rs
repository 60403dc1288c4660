//! End to end in headless Chromium (Debian's chromium and chromium-driver, driven through
//! WebDriver with fantoccini): alice signs in on Keycloak's own page, requests a server with the
//! form, watches it go live to Running on a real agent and the real scheduler, reaches it over
//! SSH, stops it and deletes it; ops sees it on the admin page; she is warned of a coming stop
//! and presses Keep running. Screenshots of each page go to
//! target/test-artifacts/.

mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use support::{
    Agent, Scheduler, TestNamespace, TestProfile, WebFront, eventually, eventually_async, free_port,
    install_crds, kubectl, ssh, ssh_keypair, unique,
};

/// A chromedriver process on a free port, killed when dropped.
struct ChromeDriver {
    child: Child,
    url: String,
    profile: tempfile::TempDir,
}

impl ChromeDriver {
    fn start() -> ChromeDriver {
        let port = free_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian's chromium-driver; tests/support/stack.sh install adds it)");
        let url = format!("http://127.0.0.1:{port}");
        let status = format!("{url}/status");
        eventually("chromedriver to answer", 20, || {
            Command::new("curl")
                .args(["-sf", "-o", "/dev/null", &status])
                .status()
                .is_ok_and(|s| s.success())
                .then_some(())
        });
        ChromeDriver {
            child,
            url,
            profile: tempfile::tempdir().unwrap(),
        }
    }

    /// A headless Chromium session of its own (its own profile, so its own cookies).
    async fn session(&self, name: &str) -> Client {
        let dir = self.profile.path().join(name);
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({"args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--window-size=1280,860", format!("--user-data-dir={}", dir.display()),
            ]}),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&self.url)
            .await
            .expect("a Chromium session")
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Saves what the browser shows as target/test-artifacts/NAME.png.
async fn screenshot(browser: &Client, name: &str) {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target/test-artifacts"));
    std::fs::create_dir_all(&dir).unwrap();
    let png = browser.screenshot().await.expect("a screenshot");
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

/// The text of the first element matching `css`; tried again for a few seconds while the page
/// changes under it (a form post navigates, the live status rewrites it).
async fn text(browser: &Client, css: &str) -> String {
    let mut tries = 0;
    loop {
        let found = match browser.find(Locator::Css(css)).await {
            Ok(element) => element.text().await,
            Err(e) => Err(e),
        };
        match found {
            Ok(text) => return text,
            Err(e) if tries < 25 => {
                tries += 1;
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("{css}: {e}"),
        }
    }
}

/// Signs in on Keycloak's login page (the browser is there already).
async fn keycloak_login(browser: &Client, user: &str) {
    browser
        .wait()
        .for_element(Locator::Id("kc-form-login"))
        .await
        .expect("Keycloak's login page");
    browser
        .find(Locator::Id("username"))
        .await
        .unwrap()
        .send_keys(user)
        .await
        .unwrap();
    browser
        .find(Locator::Id("password"))
        .await
        .unwrap()
        .send_keys(user)
        .await
        .unwrap();
    browser
        .find(Locator::Id("kc-login"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

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
    alice
        .find(Locator::LinkText("Sign in"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    keycloak_login(&alice, "alice").await;
    alice.wait().for_element(Locator::Css("span.user")).await.unwrap();
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
