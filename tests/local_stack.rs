//! `make up` keeps its state: a local stack of its own (tests/support/stack.sh up with the
//! roles, on a state folder of this test's, beside the shared one the other tests use) is
//! stopped whole and started again; the server, its container, its data and a signed-in
//! browser session are all still there.

mod support;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Instant;

use support::signin::FormClient;
use support::{eventually, free_port, unique};

const STACK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/stack.sh");

/// A local stack like `make up`'s (one node, its agent, the scheduler, the web front and the
/// bastion) on a state folder of its own; stopped and its state deleted when dropped.
struct LocalStack {
    dir: PathBuf,
    node: String,
    web_port: u16,
    bastion_port: u16,
}

impl LocalStack {
    fn new() -> LocalStack {
        let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target")).join(unique("restart-state"));
        LocalStack {
            dir,
            node: unique("restart"),
            web_port: free_port(),
            bastion_port: free_port(),
        }
    }

    /// `stack.sh up` with the roles, as `make up` starts it; returns its env file's values.
    fn up(&self) -> HashMap<String, String> {
        let out = Command::new("bash")
            .arg(STACK)
            .arg("up")
            .arg(&self.dir)
            // Its own ports (kept in its state folder), whatever the caller's environment says.
            .env_remove("KEYCLOAK_PORT")
            .env_remove("KEYCLOAK_HTTPS_PORT")
            .env_remove("APISERVER_PORT")
            .envs([
                ("ROLES", "1"),
                ("NODES", "1"),
                ("LOCAL_NODE", self.node.as_str()),
                ("WEB_PORT", &self.web_port.to_string()),
                ("BASTION_PORT", &self.bastion_port.to_string()),
            ])
            .output()
            .expect("run stack.sh up");
        assert!(
            out.status.success(),
            "stack.sh up failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::read_to_string(self.dir.join("env"))
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn down(&self) {
        let out = Command::new("bash")
            .arg(STACK)
            .arg("down")
            .arg(&self.dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "stack.sh down failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// kubectl as the admin of this stack.
    fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Output {
        use std::io::Write;
        let mut child = Command::new(support::Stack::get().var("KUBECTL"))
            .arg("--kubeconfig")
            .arg(self.dir.join("kubeconfig"))
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run kubectl");
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(stdin.unwrap_or_default().as_bytes()).unwrap();
        drop(pipe);
        child.wait_with_output().unwrap()
    }

    fn server(&self, name: &str) -> Option<serde_json::Value> {
        let out = self.kubectl(&["get", "csrv", "-n", "compute", name, "-o", "json"], None);
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).unwrap())
    }

    fn running(&self, name: &str) -> serde_json::Value {
        eventually(&format!("{name} to be Running"), 120, || {
            self.server(name).filter(|s| s["status"]["phase"] == "Running")
        })
    }
}

impl Drop for LocalStack {
    fn drop(&mut self) {
        // reset stops the stack and removes the node's containers and volumes, then the folder.
        let _ = Command::new("bash")
            .arg(STACK)
            .args(["reset"])
            .arg(&self.dir)
            .arg("--yes")
            .output();
    }
}

/// The docker CLI on the main engine (this stack's node).
fn docker(args: &[&str]) -> String {
    let out = support::docker_cli(args);
    assert!(
        out.status.success(),
        "docker {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// "My servers" as a browser holding `cookies` sees it (no redirects followed).
async fn my_servers(web_url: &str, cookies: &str) -> (reqwest::StatusCode, String) {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = client
        .get(format!("{web_url}/"))
        .header("cookie", cookies)
        .send()
        .await
        .expect("the web front answers");
    (response.status(), response.text().await.unwrap())
}

#[tokio::test]
async fn a_restarted_local_stack_keeps_servers_containers_data_and_sessions() {
    let stack = LocalStack::new();
    let started = Instant::now();
    let env = stack.up();
    let first_up = started.elapsed();
    let web_url = env["WEB_URL"].clone();

    // A server with a file in its data volume, and alice signed in on the web front. (Its command
    // ends on SIGTERM, so stopping the stack does not wait out docker's stop timeout.)
    let server = "apiVersion: computeserver.io/v1alpha1
kind: ComputeServer
metadata: {name: keepme, namespace: compute, labels: {computeserver.io/owner: alice}}
spec: {owner: alice, profile: tiny, command: [sh, -c, \"trap 'exit 0' TERM; while sleep 1; do :; done\"]}
";
    let out = stack.kubectl(&["apply", "-f", "-"], Some(server));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let before = stack.running("keepme");
    let container = before["status"]["containerID"].as_str().unwrap().to_string();
    docker(&[
        "exec",
        "csrv.compute.keepme",
        "sh",
        "-c",
        "echo 'chapter one' > /home/thesis.txt",
    ]);

    let browser = FormClient::new(None);
    let login = browser.get(&format!("{web_url}/servers/new")).await;
    let page = browser.log_in(&login, "alice").await;
    assert_eq!(
        page.url,
        format!("{web_url}/servers/new"),
        "signed in: {}",
        page.html
    );
    let cookies = browser.cookies(&web_url);
    let (status, page) = my_servers(&web_url, &cookies).await;
    assert!(status.is_success() && page.contains("keepme"), "{status}: {page}");

    // Everything stops: the web front no longer answers, the server's container is stopped.
    let stopping = Instant::now();
    stack.down();
    let down_took = stopping.elapsed();
    assert!(
        reqwest::get(format!("{web_url}/healthz")).await.is_err(),
        "the web front still answers"
    );
    assert_eq!(
        docker(&["inspect", "-f", "{{.State.Running}}", &container]),
        "false"
    );

    // And starts again as it was.
    let restarting = Instant::now();
    let env = stack.up();
    let second_up = restarting.elapsed();
    assert_eq!(env["WEB_URL"], web_url, "the same address");
    // (Its status still says Running from before the stop: wait for the container itself.)
    eventually("the server's container to run again", 120, || {
        let out = support::docker_cli(&["inspect", "-f", "{{.State.Running}}", &container]);
        (String::from_utf8_lossy(&out.stdout).trim() == "true").then_some(())
    });
    let after = stack.running("keepme");
    let running_again = restarting.elapsed();
    assert_eq!(
        after["metadata"]["uid"], before["metadata"]["uid"],
        "the same server"
    );
    assert_eq!(
        after["status"]["containerID"],
        container.as_str(),
        "its container adopted, not made anew"
    );
    assert_eq!(
        docker(&["exec", "csrv.compute.keepme", "cat", "/home/thesis.txt"]),
        "chapter one"
    );
    let (status, page) = my_servers(&web_url, &cookies).await;
    assert!(
        status.is_success() && page.contains("My servers") && page.contains("keepme"),
        "still signed in: {status}: {page}"
    );
    println!(
        "first up {:.0} s, down {:.0} s, second up {:.0} s (server Running again after {:.0} s)",
        first_up.as_secs_f64(),
        down_took.as_secs_f64(),
        second_up.as_secs_f64(),
        running_again.as_secs_f64()
    );

    // Deleting the server is what deletes its data.
    let out = stack.kubectl(
        &["delete", "csrv", "-n", "compute", "keepme", "--timeout=60s"],
        None,
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
