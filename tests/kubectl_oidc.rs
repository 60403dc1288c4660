//! kubectl for people, through Keycloak: the apiserver trusts the realm's https issuer (a JWT
//! authenticator in its structured authentication configuration), and kubectl gets its token
//! from kubelogin (`kubectl oidc-login`), which runs the device authorization grant. Here alice
//! signs in on Keycloak's own pages as she would in a browser, then uses kubectl as oidc:alice.

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::signin::FormClient;
use support::{
    Agent, Scheduler, Stack, TestNamespace, eventually, install_crds, kubectl_ok, unique, wait_phase,
};

/// The stack's kubeconfig for people (kubelogin through Keycloak), with a token cache of this
/// test's own instead of ~/.kube/cache.
fn people_kubeconfig(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(Stack::get().var("KUBECONFIG_OIDC")).expect("the people's kubeconfig");
    let own = format!(
        "      - get-token\n      - --token-cache-dir={}\n",
        dir.join("token-cache").display()
    );
    assert!(text.contains("      - get-token\n"), "{text}");
    let path = dir.join("kubeconfig");
    std::fs::write(&path, text.replace("      - get-token\n", &own)).unwrap();
    path
}

/// `kubectl ARGS` with `kubeconfig` and `input` on its standard input, its standard error read
/// line by line as it comes.
fn spawn_kubectl(kubeconfig: &Path, args: &[&str], input: &str) -> (Child, mpsc::Receiver<String>) {
    use std::io::Write;
    let mut child = Command::new(Stack::get().var("KUBECTL"))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kubectl");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).unwrap();
    drop(stdin);
    let stderr = child.stderr.take().unwrap();
    let (send, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = send.send(line);
        }
    });
    (child, lines)
}

/// Waits for kubectl to end; returns its standard output, failing with its error otherwise.
fn finish(child: Child, lines: &mpsc::Receiver<String>) -> String {
    let out = child.wait_with_output().expect("kubectl output");
    let stderr: Vec<String> = lines.try_iter().collect();
    assert!(out.status.success(), "kubectl failed: {}", stderr.join("\n"));
    String::from_utf8(out.stdout).unwrap()
}

/// The device verification address kubelogin prints, read from kubectl's standard error.
fn verification_url(lines: &mpsc::Receiver<String>) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        if let Ok(line) = lines.recv_timeout(Duration::from_millis(250)) {
            if let Some(at) = line.find("https://") {
                let url = &line[at..];
                let end = url
                    .find(|c: char| c.is_whitespace() || c == '\'' || c == '"')
                    .unwrap_or(url.len());
                return url[..end].to_string();
            }
            seen.push(line);
        }
    }
    panic!("kubelogin printed no sign-in address within 30 s: {seen:?}");
}

/// What a person does with the address: opens it, signs in as `user`, and grants the device
/// access (Keycloak always asks in the device flow).
async fn approve_device(url: &str, user: &str) {
    let browser = FormClient::new(Some(Stack::get().var("KEYCLOAK_CA")));
    let page = browser.get(url).await;
    assert!(
        page.status.is_success(),
        "{} {}: {}",
        page.status,
        page.url,
        page.html
    );
    let page = browser.log_in(&page, user).await;
    assert!(
        page.html.contains("Do you grant these access privileges?"),
        "{}",
        page.html
    );
    let page = browser
        .submit(&page, "login-actions/consent", &[("accept", "Yes")])
        .await;
    assert!(
        page.status.is_success() && page.html.contains("Device Login Successful"),
        "{} {}: {}",
        page.status,
        page.url,
        page.html
    );
}

#[tokio::test]
async fn alice_signs_in_to_kubectl_through_keycloak_and_makes_her_own_server() {
    install_crds();
    let ns = TestNamespace::new("kubectl-oidc");
    // Until the chart's compute-server-user role is bound here, a Role of the test's own.
    let rbac = format!(
        "apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: servers, namespace: {ns}}}
rules:
- {{apiGroups: [computeserver.io], resources: [computeservers], verbs: [get, list, watch, create, delete]}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: alice-servers, namespace: {ns}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: servers}}
subjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: \"oidc:alice\"}}]
",
        ns = ns.name
    );
    kubectl_ok(&["apply", "-f", "-"], Some(&rbac));
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = people_kubeconfig(dir.path());

    // The first kubectl command has no token yet: kubelogin prints where to sign in, and waits.
    let started = Instant::now();
    let (child, lines) = spawn_kubectl(&kubeconfig, &["auth", "whoami", "-o", "json"], "");
    let url = verification_url(&lines);
    assert!(
        url.starts_with(Stack::get().var("KEYCLOAK_HTTPS_ISSUER")) && url.contains("user_code="),
        "{url}"
    );
    approve_device(&url, "alice").await;
    let review: serde_json::Value = serde_json::from_str(&finish(child, &lines)).unwrap();
    let user = &review["status"]["userInfo"];
    assert_eq!(user["username"], "oidc:alice", "{review}");
    let groups: Vec<&str> = user["groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|g| g.as_str())
        .collect();
    assert!(
        groups.contains(&"oidc:students") && groups.contains(&"system:authenticated"),
        "{groups:?}"
    );
    println!(
        "device sign-in to whoami: {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // Later commands use the cached token: no sign-in asked for.
    let as_alice = |args: &[&str], input: &str| {
        let (child, lines) = spawn_kubectl(&kubeconfig, args, input);
        finish(child, &lines)
    };
    let out = as_alice(&["auth", "whoami"], "");
    assert!(out.contains("oidc:alice"), "{out}");

    // alice makes a server of her own with kubectl, and sees it go Running.
    let node = unique("oidc-node");
    let flags = ["--lease-namespace", ns.name.as_str(), "--lease-seconds", "6"];
    let _agent = Agent::start_with(&node, 1, &flags);
    let _scheduler = Scheduler::start(&unique("sched"), &ns.name, &ns.name);
    let server = format!(
        "apiVersion: computeserver.io/v1alpha1
kind: ComputeServer
metadata: {{name: mine, namespace: {}, labels: {{computeserver.io/owner: alice}}}}
spec: {{owner: alice, profile: debian}}
",
        ns.name
    );
    let out = as_alice(&["apply", "-f", "-"], &server);
    assert!(out.contains("mine created"), "{out}");
    let get = [
        "get",
        "csrv",
        "mine",
        "-n",
        ns.name.as_str(),
        "-o",
        "jsonpath={.status.phase}",
    ];
    eventually("alice to see her server Running", 120, || {
        (as_alice(&get, "") == "Running").then_some(())
    });
    let stored = wait_phase(&ns.name, "mine", "Running");
    assert_eq!(stored["spec"]["owner"], "alice");
}
