//! kubectl for people, through Keycloak: the apiserver trusts the realm's https issuer (a JWT
//! authenticator in its structured authentication configuration), and kubectl gets its token
//! from kubelogin (`kubectl oidc-login`), which runs the device authorization grant. Here alice
//! signs in on Keycloak's own pages as she would in a browser, then uses kubectl as oidc:alice.

mod support;

use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::mpsc;
use std::time::Instant;

use support::people::{approve_device, finish, verification_url};
use support::{
    Agent, Scheduler, Stack, TestNamespace, eventually, install_crds, kubectl_ok, unique, wait_phase,
};

/// The stack's kubeconfig for people, with a token cache of this test's own.
fn people_kubeconfig(dir: &Path) -> PathBuf {
    support::people::kubeconfig(Stack::get().var("KUBECONFIG_OIDC").as_ref(), dir)
}

fn spawn_kubectl(kubeconfig: &Path, args: &[&str], input: &str) -> (Child, mpsc::Receiver<String>) {
    support::people::spawn_kubectl(Stack::get().var("KUBECTL").as_ref(), kubeconfig, args, input)
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
    approve_device(&url, "alice", Stack::get().var("KEYCLOAK_CA")).await;
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
