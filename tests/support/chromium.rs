//! Headless Chromium for the tests that drive pages as people do (tests/browser.rs,
//! tests/cluster.rs): Debian's chromium and chromium-driver, through WebDriver with fantoccini.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use super::{eventually, free_port};

/// A chromedriver process on a free port, killed when dropped.
pub struct ChromeDriver {
    child: Child,
    pub url: String,
    profile: tempfile::TempDir,
}

impl ChromeDriver {
    pub fn start() -> ChromeDriver {
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
    pub async fn session(&self, name: &str) -> Client {
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
pub async fn screenshot(browser: &Client, name: &str) {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target/test-artifacts"));
    std::fs::create_dir_all(&dir).unwrap();
    let png = browser.screenshot().await.expect("a screenshot");
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

/// The text of the first element matching `css`; tried again for a few seconds while the page
/// changes under it (a form post navigates, the live status rewrites it).
pub async fn text(browser: &Client, css: &str) -> String {
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
pub async fn keycloak_login(browser: &Client, user: &str) {
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

/// What the terminal shows, row by row.
pub async fn terminal_text(browser: &Client) -> String {
    match browser.find(Locator::Css(".xterm-rows")).await {
        Ok(rows) => rows.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Types `line` and Enter into the terminal, and waits until it shows a line for which
/// `check` answers; returns that answer.
pub async fn type_and_wait<T>(
    browser: &Client,
    line: &str,
    what: &str,
    check: impl Fn(&str) -> Option<T>,
) -> T {
    let input = browser
        .find(Locator::Css(".xterm-helper-textarea"))
        .await
        .unwrap();
    input.send_keys(&format!("{line}\u{E007}")).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let shown = terminal_text(browser).await;
        if let Some(found) = shown.lines().find_map(|l| check(l.trim())) {
            return found;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the terminal did not show {what}: {shown}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the terminal page says Connected.
pub async fn terminal_connected(browser: &Client, seconds: u64) {
    super::eventually_async("the terminal Connected", seconds, || {
        let browser = browser.clone();
        async move { (text(&browser, "[data-terminal-state]").await == "Connected").then_some(()) }
    })
    .await;
}

/// From the web front's welcome page: "Sign in", Keycloak's login page as `user`, and back to
/// the front, signed in.
pub async fn sign_in(browser: &Client, user: &str) {
    browser
        .find(Locator::LinkText("Sign in"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    keycloak_login(browser, user).await;
    browser
        .wait()
        .for_element(Locator::Css("span.user"))
        .await
        .unwrap();
}
