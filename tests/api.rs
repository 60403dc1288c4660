//! The API as a cluster admin meets it with kubectl, against the real kube-apiserver.

mod support;

use support::{TestNamespace, install_crds, kubectl, kubectl_ok};

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMn1Zbq3b2P2T5l0yYQ6i1l7q7N4o2Q9bQbq0G9d0aU1 alice@laptop";

/// A ComputeServer manifest named `name` in `ns` whose spec holds the given YAML lines.
fn server(ns: &str, name: &str, spec: &str) -> String {
    format!(
        "apiVersion: computeserver.io/v1alpha1\nkind: ComputeServer\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n{}",
        spec.lines().map(|l| format!("  {l}\n")).collect::<String>()
    )
}

fn apply(yaml: &str) -> (bool, String) {
    let out = kubectl(&["apply", "-f", "-"], Some(yaml));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn exists(ns: &str, name: &str) -> bool {
    kubectl(&["get", "computeserver", "-n", ns, name], None)
        .status
        .success()
}

#[test]
fn examples_apply_and_kubectl_get_shows_the_columns() {
    install_crds();
    let ns = TestNamespace::new("examples");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/examples");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(
        files.len() >= 3,
        "manifests/examples/ should hold profiles and servers"
    );
    // Profiles are cluster-wide: the examples' are the stack's (debian, tiny), but for gpu and
    // jupyter, which are removed again so that other tests see the stack's profiles only.
    struct RemoveExtraProfiles;
    impl Drop for RemoveExtraProfiles {
        fn drop(&mut self) {
            let _ = kubectl(
                &["delete", "computeprofile", "gpu", "jupyter", "--ignore-not-found"],
                None,
            );
        }
    }
    let _extra = RemoveExtraProfiles;
    for path in files {
        // The examples live in namespace `compute`; this test runs them in its own.
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("namespace: compute", &format!("namespace: {}", ns.name));
        let (ok, err) = apply(&text);
        assert!(ok, "kubectl apply -f {} failed: {err}", path.display());
    }

    let table = kubectl_ok(&["get", "csrv", "-n", &ns.name], None);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "OWNER", "PROFILE", "NODE", "PHASE", "AGE"]);
    let row = table
        .lines()
        .find(|l| l.starts_with("alice-dev"))
        .expect("alice-dev listed");
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cells[..3], ["alice-dev", "alice", "debian"]);

    let wide = kubectl_ok(&["get", "csrv", "-n", &ns.name, "-o", "wide"], None);
    assert!(
        wide.lines().next().unwrap().contains("MESSAGE"),
        "wide output adds the message column"
    );

    let profiles = kubectl_ok(&["get", "computeprofiles"], None);
    assert!(
        profiles.contains("Debian with SSH") && profiles.contains("computeserver/debian-ssh:local"),
        "{profiles}"
    );

    // Owner field selectors work (the web front filters by label; admins can use either).
    let alices = kubectl_ok(
        &[
            "get",
            "csrv",
            "-n",
            &ns.name,
            "--field-selector",
            "spec.owner=alice",
            "-o",
            "name",
        ],
        None,
    );
    assert_eq!(alices.trim(), "computeserver.computeserver.io/alice-dev");
}

#[test]
fn bad_input_is_refused_with_a_message_and_nothing_is_stored() {
    install_crds();
    let ns = TestNamespace::new("bad-input");
    let cases = [
        (
            "zero cpu",
            "owner: alice\nprofile: tiny\nresources: {cpu: 0}",
            "cpu must be at least 10m (a hundredth of a core)",
        ),
        (
            "negative cpu",
            "owner: alice\nprofile: tiny\nresources: {cpu: \"-500m\"}",
            "cpu must be at least 10m (a hundredth of a core)",
        ),
        (
            "negative memory",
            "owner: alice\nprofile: tiny\nresources: {memory: \"-1Gi\"}",
            "memory must be at least 6Mi (the smallest limit Docker accepts)",
        ),
        (
            "zero memory",
            "owner: alice\nprofile: tiny\nresources: {memory: \"0\"}",
            "memory must be at least 6Mi (the smallest limit Docker accepts)",
        ),
        (
            "unparseable cpu",
            "owner: alice\nprofile: tiny\nresources: {cpu: two}",
            "cpu must be a quantity such as",
        ),
        (
            "unparseable memory",
            "owner: alice\nprofile: tiny\nresources: {memory: 4GB}",
            "memory must be a quantity such as",
        ),
        (
            "empty owner",
            "owner: \"\"\nprofile: tiny",
            "spec.owner must name the Keycloak user who owns this server",
        ),
        ("no owner", "profile: tiny", "spec.owner: Required value"),
        (
            "neither profile nor image",
            "owner: alice",
            "set spec.profile (the name of a ComputeProfile) or spec.image",
        ),
        (
            "port above 65535",
            "owner: alice\nprofile: tiny\nports: [{name: ssh, containerPort: 70000}]",
            "containerPort must be a port number from 1 to 65535",
        ),
        (
            "port zero",
            "owner: alice\nprofile: tiny\nports: [{name: ssh, containerPort: 0}]",
            "containerPort must be a port number from 1 to 65535",
        ),
        (
            "port name",
            "owner: alice\nprofile: tiny\nports: [{name: SSH_Port, containerPort: 22}]",
            "port names must be 1 to 15 lowercase letters",
        ),
        (
            "duplicate port names",
            "owner: alice\nprofile: tiny\nports: [{name: ssh, containerPort: 22}, {name: ssh, containerPort: 2222}]",
            "port names must be unique",
        ),
        (
            "env name with a dash",
            "owner: alice\nprofile: tiny\nenv: [{name: MY-VAR, value: x}]",
            "environment variable names must start with a letter or underscore",
        ),
        (
            "env name with a digit first",
            "owner: alice\nprofile: tiny\nenv: [{name: 1VAR, value: x}]",
            "environment variable names must start with a letter or underscore",
        ),
        (
            "duplicate env names",
            "owner: alice\nprofile: tiny\nenv: [{name: A, value: one}, {name: A, value: two}]",
            "environment variable names must be unique",
        ),
        (
            "ssh key that is not a key",
            "owner: alice\nprofile: tiny\nsshAuthorizedKeys: [\"my password is hunter2\"]",
            "spec.sshAuthorizedKeys[0]: Invalid value",
        ),
        (
            "ssh key with options in front",
            &format!("owner: alice\nprofile: tiny\nsshAuthorizedKeys: ['command=\"/bin/sh\" {KEY}']"),
            "must be one SSH public key line",
        ),
        (
            "two keys in one entry",
            &format!("owner: alice\nprofile: tiny\nsshAuthorizedKeys: [\"{KEY}\\n{KEY}\"]"),
            "must be one SSH public key line",
        ),
        (
            "private key",
            "owner: alice\nprofile: tiny\nsshAuthorizedKeys: [\"-----BEGIN OPENSSH PRIVATE KEY-----\"]",
            "must be one SSH public key line",
        ),
    ];
    let mut failures = Vec::new();
    for (i, (what, spec, message)) in cases.iter().enumerate() {
        let name = format!("bad-{i}");
        let (ok, err) = apply(&server(&ns.name, &name, spec));
        if ok || !err.contains(message) {
            failures.push(format!(
                "{what}: accepted={ok}, expected message {message:?}, got: {err}"
            ));
        }
        if exists(&ns.name, &name) {
            failures.push(format!("{what}: the server was stored"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn good_input_is_accepted() {
    install_crds();
    let ns = TestNamespace::new("good-input");
    let spec = format!(
        "owner: alice@example.org\nimage: computeserver/busybox:local\nresources: {{cpu: \"1.5\", memory: 512Mi, gpus: 0}}\n\
         sshAuthorizedKeys: [\"{KEY}\", \"ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7 bob\"]\n\
         ports: [{{name: ssh, containerPort: 22}}, {{name: http, containerPort: 8080}}]\n\
         env: [{{name: _PRIVATE, value: x}}, {{name: HOME_DIR}}]\nnodeSelector: {{gpu: \"true\"}}"
    );
    let (ok, err) = apply(&server(&ns.name, "good", &spec));
    assert!(ok, "a valid server was refused: {err}");
    let running = kubectl_ok(
        &[
            "get",
            "csrv",
            "-n",
            &ns.name,
            "good",
            "-o",
            "jsonpath={.spec.running}",
        ],
        None,
    );
    assert_eq!(running, "true", "spec.running defaults to true");
}

#[test]
fn owner_cannot_change_after_creation() {
    install_crds();
    let ns = TestNamespace::new("owner");
    let (ok, err) = apply(&server(&ns.name, "mine", "owner: alice\nprofile: tiny"));
    assert!(ok, "{err}");
    let (ok, err) = apply(&server(&ns.name, "mine", "owner: bob\nprofile: tiny"));
    assert!(!ok, "changing the owner was accepted");
    assert!(
        err.contains("spec.owner cannot be changed"),
        "unclear message: {err}"
    );
    let owner = kubectl_ok(
        &[
            "get",
            "csrv",
            "-n",
            &ns.name,
            "mine",
            "-o",
            "jsonpath={.spec.owner}",
        ],
        None,
    );
    assert_eq!(owner, "alice");
    // Other fields stay editable.
    let (ok, err) = apply(&server(
        &ns.name,
        "mine",
        "owner: alice\nprofile: tiny\nrunning: false",
    ));
    assert!(ok, "{err}");
}

#[test]
fn kubectl_explain_reads_the_doc_comments() {
    install_crds();
    // kubectl wraps the text to the terminal; compare it unwrapped.
    let explain = |field: &str| {
        kubectl_ok(&["explain", field], None)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    let out = explain("computeserver.spec.owner");
    assert!(
        out.contains("The Keycloak username (preferred_username) of the person who owns this server"),
        "{out}"
    );
    let out = explain("csrv.spec.running");
    assert!(
        out.contains("Set to false to stop the server and keep its"),
        "{out}"
    );
    let out = explain("computenodes.spec.unschedulable");
    assert!(out.contains("no new servers are placed here"), "{out}");
}

#[test]
fn status_conditions_are_a_map_keyed_by_type() {
    install_crds();
    let schema = kubectl_ok(
        &[
            "get",
            "crd",
            "computeservers.computeserver.io",
            "-o",
            "jsonpath={.spec.versions[0].schema.openAPIV3Schema.properties.status.properties.conditions}",
        ],
        None,
    );
    let schema: serde_json::Value = serde_json::from_str(&schema).unwrap();
    assert_eq!(schema["x-kubernetes-list-type"], "map");
    assert_eq!(schema["x-kubernetes-list-map-keys"], serde_json::json!(["type"]));
    let subresources = kubectl_ok(
        &[
            "get",
            "crd",
            "computeservers.computeserver.io",
            "-o",
            "jsonpath={.spec.versions[0].subresources}",
        ],
        None,
    );
    assert!(
        subresources.contains("status"),
        "status subresource enabled: {subresources}"
    );
}
