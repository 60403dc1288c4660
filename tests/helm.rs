//! The Helm chart and the plain manifests against the real apiserver: what `helm install`,
//! `upgrade` and `uninstall` leave in the cluster, what each role's ServiceAccount may and may
//! not do, and that bad values are refused before anything is made.
//!
//! The CRDs are cluster-wide and shared by every test of the run (which re-apply them from
//! crds/), so the installs on the shared apiserver leave them alone (`crds.install=false`). The
//! CRDs' own life cycle (made by the first install, changed by an upgrade, kept by uninstall) is
//! tested on a control plane of its own, started for that test by tests/support/kube.sh.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use support::{Agent, Stack, TestNamespace, docker_cli, eventually, kubectl, kubectl_ok, unique};

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/compute-server");
const SUPPORT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support");
/// The Kubernetes version `helm lint` and `helm template` assume (they see no cluster).
const KUBE_VERSION: &str = "1.36.0";
const SCHEDULER_LEASE: &str = "compute-server-scheduler";

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// helm with `args`, talking to the cluster of `kubeconfig`.
fn helm_at(kubeconfig: &Path, args: &[&str]) -> Output {
    Command::new(Stack::get().var("HELM"))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .expect("run helm")
}

fn helm_ok_at(kubeconfig: &Path, args: &[&str]) -> String {
    let out = helm_at(kubeconfig, args);
    assert!(
        out.status.success(),
        "helm {} failed: {}",
        args.join(" "),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn helm_ok(args: &[&str]) -> String {
    helm_ok_at(&Stack::get().kubeconfig(), args)
}

/// kubectl against the cluster of `kubeconfig`.
fn kubectl_at(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    use std::io::Write;
    let mut child = Command::new(Stack::get().var("KUBECTL"))
        .arg("--kubeconfig")
        .arg(kubeconfig)
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

fn json(args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.extend(["-o", "json"]);
    serde_json::from_str(&kubectl_ok(&args, None)).unwrap()
}

/// Names (kind/name) of the objects of `kinds` labelled with the release, in `ns` or cluster-wide.
fn objects_of(release: &str, kinds: &str, ns: Option<&str>) -> Vec<String> {
    let selector = format!("app.kubernetes.io/instance={release}");
    let mut args = vec!["get", kinds, "-l", &selector, "-o", "name"];
    if let Some(ns) = ns {
        args.extend(["-n", ns]);
    }
    let mut names: Vec<String> = kubectl_ok(&args, None).lines().map(str::to_string).collect();
    names.sort();
    names
}

/// A values file for a test install in namespace `ns`: Keycloak set, the shared CRDs left alone,
/// the admission policies kept to `ns` (the stack's own guard every other namespace), one
/// profile; `extra` follows the profile, so `- name: ...` adds a second one.
fn values_file(dir: &Path, ns: &str, profile: &str, extra: &str) -> PathBuf {
    let path = dir.join("values.yaml");
    let yaml = format!(
        "keycloak: {{url: 'https://keycloak.example.com/'}}\ncrds: {{install: false}}\n\
         admission: {{namespaceSelector: {{matchLabels: {{kubernetes.io/metadata.name: {ns}}}}}}}\n\
         limits: {{maxServersPerUser: 3}}\nprofiles:\n\
         - name: {profile}\n  spec: {{displayName: Chart test, image: computeserver/busybox:local}}\n{extra}"
    );
    std::fs::write(&path, yaml).unwrap();
    path
}

/// A release on the shared apiserver, uninstalled when dropped (its cluster-wide objects
/// outlive the test namespace otherwise).
struct Release {
    name: String,
    ns: String,
}

impl Release {
    fn install(ns: &str, values: &Path) -> (Release, String) {
        let release = Release {
            name: unique("cs"),
            ns: ns.to_string(),
        };
        let notes = helm_ok(&[
            "install",
            &release.name,
            CHART,
            "-n",
            ns,
            "--values",
            values.to_str().unwrap(),
        ]);
        (release, notes)
    }

    /// The name of one role's objects.
    fn of(&self, role: &str) -> String {
        format!("{}-compute-server-{role}", self.name)
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        let _ = helm_at(
            &Stack::get().kubeconfig(),
            &["uninstall", &self.name, "-n", &self.ns, "--ignore-not-found"],
        );
    }
}

#[test]
fn the_charts_crds_are_the_generated_ones() {
    let dir = Path::new(CHART).join("crds");
    let crds = compute_server::crd::all();
    for crd in &crds {
        let path = dir.join(compute_server::crd::file_name(crd));
        let copy = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{} is missing ({e}); run `make crds`", path.display()));
        assert!(
            copy == compute_server::crd::to_yaml(crd).unwrap(),
            "{} differs from the Rust types; run `make crds` and commit the result",
            path.display()
        );
    }
    let files = std::fs::read_dir(&dir).unwrap().count();
    assert_eq!(
        files,
        crds.len(),
        "{} holds a CRD no Rust type makes",
        dir.display()
    );
}

#[test]
fn the_chart_installs_this_version() {
    let chart: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(Path::new(CHART).join("Chart.yaml")).unwrap()).unwrap();
    assert_eq!(chart["appVersion"].as_str(), Some(env!("CARGO_PKG_VERSION")));
    assert_eq!(chart["version"].as_str(), Some(env!("CARGO_PKG_VERSION")));
}

#[test]
fn the_manifests_are_the_rendered_chart_and_the_apiserver_accepts_them() {
    let out = Command::new("bash")
        .arg(format!("{SUPPORT}/manifests.sh"))
        .arg("render")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let committed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/manifests/compute-server.yaml"
    ))
    .unwrap();
    assert!(
        text(&out.stdout) == committed,
        "manifests/compute-server.yaml differs from the chart; run `make manifests` and commit the result"
    );
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/manifests");
    let applied = kubectl_ok(&["apply", "-k", dir, "--dry-run=server"], None);
    for object in [
        "namespace/compute",
        "customresourcedefinition.apiextensions.k8s.io/computeservers.computeserver.io",
        "daemonset.apps/compute-server-agent",
        "deployment.apps/compute-server-scheduler",
        "deployment.apps/compute-server-web",
        "deployment.apps/compute-server-bastion",
        "service/compute-server-web",
        "service/compute-server-bastion",
        "validatingadmissionpolicy.admissionregistration.k8s.io/compute-server-identity",
        "validatingadmissionpolicybinding.admissionregistration.k8s.io/compute-server-identity",
        "mutatingadmissionpolicy.admissionregistration.k8s.io/compute-server-owner-label",
        "mutatingadmissionpolicy.admissionregistration.k8s.io/compute-server-owner-groups",
        "clusterrole.rbac.authorization.k8s.io/compute-server-user",
    ] {
        assert!(
            applied.contains(object),
            "{object} missing from kubectl apply -k:\n{applied}"
        );
    }
    // Plain YAML keeps no secrets: the keys are the admin's to create.
    assert!(
        !committed.contains("kind: Secret"),
        "manifests/ must not carry keys"
    );
}

/// A check checkov reports: its id, the resource, and (for a skipped one) the reason given.
type Finding = (String, String, String);

/// checkov's report on the manifests in `dir`: the failed checks and the skipped ones.
fn checkov(dir: &Path) -> (Vec<Finding>, Vec<Finding>) {
    let out = Command::new(Stack::get().var("CHECKOV"))
        // (Not --quiet: its report holds the failed checks only.)
        .args(["--framework", "kubernetes", "-o", "json", "-d"])
        .arg(dir)
        // Its guideline links come from a service this machine does not reach.
        .env("BC_SKIP_MAPPING", "TRUE")
        .output()
        .expect("run checkov (tests/support/install-checkov.sh)");
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("checkov's JSON ({e}): {}{}", text(&out.stdout), text(&out.stderr)));
    let findings = |key: &str| -> Vec<Finding> {
        let checks = report["results"][key].as_array().cloned().unwrap_or_default();
        checks
            .iter()
            .map(|c| {
                let reason = c["check_result"]["suppress_comment"].as_str().unwrap_or_default();
                (
                    c["check_id"].as_str().unwrap().to_string(),
                    c["resource"].as_str().unwrap().to_string(),
                    reason.to_string(),
                )
            })
            .collect()
    };
    (findings("failed_checks"), findings("skipped_checks"))
}

#[test]
fn checkov_finds_nothing_in_the_rendered_chart_but_what_is_by_design_and_says_why() {
    // (Not a hidden folder, such as tempdir()'s .tmpXXXX: checkov skips those.)
    let dir = tempfile::Builder::new().prefix("checkov-").tempdir().unwrap();
    // The chart as an install renders it (with a digest, with browser sessions and a confidential
    // client too), and manifests/ as committed.
    for (name, extra) in [
        ("defaults", &[][..]),
        (
            "options",
            &[
                "--set=image.digest=sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                "--set=browserSessions.userCaSecret=ca",
                "--set=keycloak.clientSecret.existingSecret=client",
            ][..],
        ),
    ] {
        let rendered = helm_ok(
            &[
                &[
                    "template",
                    "compute-server",
                    CHART,
                    "-n",
                    "compute",
                    "--include-crds",
                ][..],
                &[
                    "--kube-version",
                    KUBE_VERSION,
                    "--set",
                    "keycloak.url=https://keycloak.example.com",
                ],
                extra,
            ]
            .concat(),
        );
        let sub = dir.path().join(name);
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(sub.join("compute-server.yaml"), rendered).unwrap();
    }
    for case in [
        dir.path().to_path_buf(),
        Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests"),
    ] {
        let (failed, skipped) = checkov(&case);
        assert!(
            failed.is_empty(),
            "checkov fails {} on: {failed:?}",
            case.display()
        );
        // What is skipped is by design, and says why; only the agent needs its host.
        for (id, resource, reason) in &skipped {
            assert!(
                reason.len() > 20,
                "{id} on {resource} is skipped without a reason"
            );
            let host_only = [
                "CKV_K8S_19",
                "CKV_K8S_23",
                "CKV_K8S_25",
                "CKV_K8S_27",
                "CKV_K8S_40",
            ];
            assert!(
                !host_only.contains(&id.as_str()) || resource.contains("agent"),
                "{id} is skipped on {resource}, which is not the agent"
            );
        }
        assert!(!skipped.is_empty());
    }
}

#[test]
fn helm_lint_is_clean() {
    // With the default values too, which lack the one required value (keycloak.url).
    for values in [
        &[][..],
        &["--set=keycloak.url=https://keycloak.example.com"],
        &["--values=ci/manifests-values.yaml"],
    ] {
        let out = Command::new(Stack::get().var("HELM"))
            .current_dir(CHART)
            .args(["lint", "--strict", "--kube-version", KUBE_VERSION, "."])
            .args(values)
            .output()
            .unwrap();
        let report = text(&out.stdout) + &text(&out.stderr);
        assert!(out.status.success(), "helm lint {values:?}:\n{report}");
        assert!(
            !report.contains("[WARNING]") && !report.contains("[ERROR]"),
            "{report}"
        );
    }
}

#[test]
fn helm_template_renders_without_a_cluster_and_an_old_cluster_is_told_what_it_needs() {
    // As GitOps tools render charts: no cluster, so Helm assumes Kubernetes 1.20.
    let template = |extra: &[&str]| {
        Command::new(Stack::get().var("HELM"))
            .args([
                "template",
                "t",
                CHART,
                "--set",
                "keycloak.url=https://keycloak.example.com",
            ])
            .args(extra)
            .output()
            .unwrap()
    };
    let out = template(&[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("kind: DaemonSet"));
    // A cluster known to be too old is refused with what it needs.
    let out = template(&["--kube-version", "1.29.3"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("compute-server needs Kubernetes 1.30 or later")
            && text(&out.stderr).contains("v1.29.3"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn bad_values_are_refused_with_a_message_naming_them() {
    let cases: &[(&[&str], &str)] = &[
        (&["--set", "keycloak.url=keycloak.example.com"], "'/keycloak/url'"),
        (
            &["--set", "admission.usernamePrefix=oidc: "],
            "'/admission/usernamePrefix'",
        ),
        (&["--set", "userRole.groups[0]="], "'/userRole/groups/0'"),
        (&["--set", "scheduler.replicas=-1"], "'/scheduler/replicas'"),
        (&["--set", "image.pullPolicy=Sometimes"], "'/image/pullPolicy'"),
        (&["--set", "web.replica=2"], "'replica' not allowed"),
        (
            &["--set", "agent.publishAddress=all interfaces"],
            "'/agent/publishAddress'",
        ),
        (
            &["--set", "bastion.externalAddress=bastion.example.com"],
            "'/bastion/externalAddress'",
        ),
        (
            &[
                "--set",
                "profiles[0].name=Big_One",
                "--set",
                "profiles[0].spec.image=x",
            ],
            "'/profiles/0/name'",
        ),
        (
            &[
                "--set-json",
                r#"quotas=[{"name":"students","spec":{"subjects":[]}}]"#,
            ],
            "'/quotas/0/spec/subjects'",
        ),
    ];
    for (args, message) in cases {
        let mut all = vec!["template", "t", CHART, "--kube-version", KUBE_VERSION];
        if !args.iter().any(|a| a.starts_with("keycloak.url")) {
            all.extend(["--set", "keycloak.url=https://keycloak.example.com"]);
        }
        all.extend(*args);
        let out = helm_at(&Stack::get().kubeconfig(), &all);
        let error = text(&out.stderr);
        assert!(!out.status.success(), "helm template {args:?} was accepted");
        assert!(
            error.contains("values don't meet the specifications") && error.contains(message),
            "helm template {args:?}: expected {message} in:\n{error}"
        );
    }

    // Without the Keycloak URL: refused, naming the value to set.
    let out = helm_at(
        &Stack::get().kubeconfig(),
        &["template", "t", CHART, "--kube-version", KUBE_VERSION],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("keycloak.url is not set: give Keycloak's base URL"),
        "{}",
        text(&out.stderr)
    );

    // An install with a value missing makes nothing at all.
    let ns = TestNamespace::new("helm-bad");
    let out = helm_at(
        &Stack::get().kubeconfig(),
        &[
            "install",
            "bad",
            CHART,
            "-n",
            &ns.name,
            "--set",
            "crds.install=false",
        ],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("keycloak.url is not set"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(helm_ok(&["list", "-n", &ns.name, "-q", "-a"]).trim(), "");
    assert_eq!(
        objects_of("bad", "all,sa,secrets,roles", Some(&ns.name)),
        Vec::<String>::new()
    );
    assert_eq!(objects_of("bad", "clusterroles", None), Vec::<String>::new());
}

#[test]
fn helm_template_with_every_option_is_accepted_by_the_apiserver() {
    let ns = TestNamespace::new("helm-dry");
    let dir = tempfile::tempdir().unwrap();
    let profile = unique("helm-dry");
    let values = values_file(
        dir.path(),
        &ns.name,
        &profile,
        "agent: {publishAddress: 10.0.0.5, nodeLabels: {gpu: 'true'}, gpuDevices: ['0', 'GPU-4b1c'], gpuDiscovery: true}
userRole: {groups: ['oidc:students', 'oidc:staff']}
web:
  serviceAccountName: front
  ingress: {enabled: true, className: nginx, host: compute.example.org, tlsSecret: compute-tls}
bastion: {admins: [ops], externalAddress: 'bastion.example.org:22', service: {type: LoadBalancer}}
networkPolicy:
  enabled: true
  metricsFrom: [{namespaceSelector: {matchLabels: {name: monitoring}}}]
",
    );
    // A quota as values.yaml's example has it (cluster-wide: named as the profile, unique).
    let quotas = format!(
        r#"quotas=[{{"name":"{profile}","spec":{{"subjects":[{{"group":"students"}}],"perUser":{{"cpu":"4","gpus":1,"gpuHours":40}},"total":{{"gpus":8}},"period":"month"}}}}]"#
    );
    // Without a cluster helm cannot know the ComputeProfile API is served: say it is.
    let yaml = helm_ok(&[
        "template",
        "dry",
        CHART,
        "-n",
        &ns.name,
        "--kube-version",
        KUBE_VERSION,
        "--api-versions",
        "computeserver.io/v1alpha1/ComputeProfile",
        "--api-versions",
        "computeserver.io/v1alpha1/ComputeQuota",
        "--api-versions",
        "admissionregistration.k8s.io/v1/MutatingAdmissionPolicy",
        "--values",
        values.to_str().unwrap(),
        "--set",
        "keycloak.clientSecret.existingSecret=keycloak-client",
        "--set-json",
        &quotas,
    ]);
    assert!(yaml.contains("COMPUTE_SERVER_OIDC_CLIENT_SECRET"));
    assert!(
        yaml.contains(&format!("system:serviceaccount:{}:front", ns.name)),
        "the policy names the web's account"
    );
    for kind in [
        "Ingress",
        "NetworkPolicy",
        "ComputeProfile",
        "ComputeQuota",
        "DaemonSet",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
        "MutatingAdmissionPolicy",
        "MutatingAdmissionPolicyBinding",
    ] {
        assert!(yaml.contains(&format!("kind: {kind}\n")), "no {kind} rendered");
    }
    let applied = kubectl_ok(
        &["apply", "--dry-run=server", "-n", &ns.name, "-f", "-"],
        Some(&yaml),
    );
    assert!(applied.contains(&format!(
        "computeprofile.computeserver.io/{profile} created (server dry run)"
    )));
    assert!(applied.contains(&format!(
        "computequota.computeserver.io/{profile} created (server dry run)"
    )));
    assert!(applied.contains("ingress.networking.k8s.io/dry-compute-server-web created (server dry run)"));
    assert!(applied.contains("serviceaccount/front created (server dry run)"));
    assert!(applied.contains(
        "validatingadmissionpolicy.admissionregistration.k8s.io/dry-compute-server-identity created (server dry run)"
    ));
    assert!(applied.contains(
        "mutatingadmissionpolicy.admissionregistration.k8s.io/dry-compute-server-owner-label created (server dry run)"
    ));
    assert!(applied.contains(
        "mutatingadmissionpolicy.admissionregistration.k8s.io/dry-compute-server-owner-groups created (server dry run)"
    ));
    assert!(
        applied.contains(
            "rolebinding.rbac.authorization.k8s.io/dry-compute-server-user created (server dry run)"
        )
    );

    // The ServiceMonitor's CRD is not in the test cluster: check what is rendered instead.
    let monitor = helm_ok(&[
        "template",
        "dry",
        CHART,
        "--kube-version",
        KUBE_VERSION,
        "--set",
        "keycloak.url=https://keycloak.example.com",
        "--set",
        "metrics.serviceMonitor.enabled=true",
        "--show-only",
        "templates/servicemonitor.yaml",
    ]);
    let monitor: serde_yaml::Value = serde_yaml::from_str(&monitor).unwrap();
    assert_eq!(monitor["kind"].as_str(), Some("ServiceMonitor"));
    assert_eq!(monitor["spec"]["endpoints"][0]["port"].as_str(), Some("metrics"));
}

/// The pod spec of a workload, with the checks every role's pods must pass.
fn check_pod_security(kind: &str, workload: &Value, as_root: bool) {
    let name = workload["metadata"]["name"].as_str().unwrap();
    let pod = &workload["spec"]["template"]["spec"];
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
        "{kind} {name}"
    );
    assert_eq!(pod["securityContext"]["runAsNonRoot"], !as_root, "{kind} {name}");
    for container in pod["containers"].as_array().unwrap() {
        let security = &container["securityContext"];
        assert_eq!(security["readOnlyRootFilesystem"], true, "{kind} {name}");
        assert_eq!(security["allowPrivilegeEscalation"], false, "{kind} {name}");
        assert_eq!(
            security["capabilities"]["drop"],
            serde_json::json!(["ALL"]),
            "{kind} {name}"
        );
        // Only the agent adds any: what its firewall for the servers' networks needs.
        let added = if as_root {
            serde_json::json!(["NET_ADMIN", "NET_RAW"])
        } else {
            Value::Null
        };
        assert_eq!(security["capabilities"]["add"], added, "{kind} {name}");
        assert_eq!(
            container["livenessProbe"]["httpGet"]["path"], "/healthz",
            "{kind} {name}"
        );
        assert_eq!(
            container["readinessProbe"]["httpGet"]["path"], "/readyz",
            "{kind} {name}"
        );
        assert!(
            container["resources"]["requests"]["memory"].is_string(),
            "{kind} {name}"
        );
        assert!(
            container["resources"]["limits"]["memory"].is_string(),
            "{kind} {name}"
        );
    }
}

fn secret_value(ns: &str, name: &str, key: &str) -> Vec<u8> {
    use base64::Engine;
    let secret = json(&["get", "secret", "-n", ns, name]);
    base64::engine::general_purpose::STANDARD
        .decode(secret["data"][key].as_str().unwrap())
        .unwrap()
}

#[test]
fn install_upgrade_and_uninstall_make_change_and_remove_the_release() {
    let ns = TestNamespace::new("helm-life");
    let dir = tempfile::tempdir().unwrap();
    let profile = unique("helm-life");
    let (release, notes) = Release::install(&ns.name, &values_file(dir.path(), &ns.name, &profile, ""));
    let n = &ns.name;
    assert!(
        notes.contains("kubectl label node NODE computeserver.io/agent=true"),
        "{notes}"
    );
    assert!(
        notes.contains(&format!("port-forward svc/{} 8080:8080", release.of("web"))),
        "{notes}"
    );

    let names = |role: &str, kinds: &[&str]| -> Vec<String> {
        kinds
            .iter()
            .map(|k| format!("{k}/{}", release.of(role)))
            .collect()
    };
    let mut expected: Vec<String> = ["agent", "scheduler", "web", "bastion"]
        .iter()
        .flat_map(|role| names(role, &["serviceaccount", "service"]))
        .chain(names(
            "agent",
            &[
                "daemonset.apps",
                "role.rbac.authorization.k8s.io",
                "rolebinding.rbac.authorization.k8s.io",
            ],
        ))
        .chain(names(
            "scheduler",
            &[
                "deployment.apps",
                "role.rbac.authorization.k8s.io",
                "rolebinding.rbac.authorization.k8s.io",
            ],
        ))
        .chain(names(
            "web",
            &[
                "deployment.apps",
                "role.rbac.authorization.k8s.io",
                "rolebinding.rbac.authorization.k8s.io",
            ],
        ))
        .chain(names(
            "bastion",
            &[
                "deployment.apps",
                "role.rbac.authorization.k8s.io",
                "rolebinding.rbac.authorization.k8s.io",
            ],
        ))
        .chain([
            format!("secret/{}-compute-server-web-session", release.name),
            format!("secret/{}-compute-server-bastion-host-key", release.name),
        ])
        .collect();
    expected.sort();
    let kinds = "serviceaccounts,services,daemonsets,deployments,roles,rolebindings,secrets";
    assert_eq!(objects_of(&release.name, kinds, Some(n)), expected);
    let admission = "validatingadmissionpolicy.admissionregistration.k8s.io,\
                     validatingadmissionpolicybinding.admissionregistration.k8s.io,\
                     mutatingadmissionpolicy.admissionregistration.k8s.io,\
                     mutatingadmissionpolicybinding.admissionregistration.k8s.io";
    let cluster_kinds = format!("clusterroles,clusterrolebindings,computeprofiles,{admission}");
    let mut cluster_wide: Vec<String> = ["agent", "scheduler", "web"]
        .iter()
        .flat_map(|role| {
            names(
                role,
                &[
                    "clusterrole.rbac.authorization.k8s.io",
                    "clusterrolebinding.rbac.authorization.k8s.io",
                ],
            )
        })
        .chain(names("user", &["clusterrole.rbac.authorization.k8s.io"]))
        .chain(admission.split(',').flat_map(|kind| {
            let policies: &[&str] = if kind.starts_with("mutating") {
                &["owner-groups", "owner-label"]
            } else {
                &["identity", "snapshots"]
            };
            policies
                .iter()
                .map(|policy| format!("{kind}/{}-compute-server-{policy}", release.name))
                .collect::<Vec<_>>()
        }))
        .chain([format!("computeprofile.computeserver.io/{profile}")])
        .collect();
    cluster_wide.sort();
    assert_eq!(objects_of(&release.name, &cluster_kinds, None), cluster_wide);
    // Kept to this test's namespace (values_file), as admission.namespaceSelector says.
    let binding = json(&[
        "get",
        "validatingadmissionpolicybinding",
        &format!("{}-compute-server-identity", release.name),
    ]);
    assert_eq!(
        binding["spec"]["matchResources"]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        n.as_str()
    );

    // The workloads: replicas, the agent's node and Docker socket, hardened pods.
    let scheduler = json(&["get", "deployment", "-n", n, &release.of("scheduler")]);
    assert_eq!(scheduler["spec"]["replicas"], 2);
    let apart = &scheduler["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"];
    let term = &apart["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"];
    assert_eq!(term["topologyKey"], "kubernetes.io/hostname");
    let agent = json(&["get", "daemonset", "-n", n, &release.of("agent")]);
    let pod = &agent["spec"]["template"]["spec"];
    assert_eq!(pod["nodeSelector"]["computeserver.io/agent"], "true");
    assert_eq!(
        pod["volumes"][0]["hostPath"],
        serde_json::json!({"path": "/var/run/docker.sock", "type": "Socket"})
    );
    let env = &pod["containers"][0]["env"];
    let node = env
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "COMPUTE_SERVER_NODE")
        .unwrap();
    assert_eq!(node["valueFrom"]["fieldRef"]["fieldPath"], "spec.nodeName");
    assert_eq!(
        pod["hostNetwork"], true,
        "the servers' firewall is in the host's network"
    );
    check_pod_security("DaemonSet", &agent, true);
    for role in ["scheduler", "web", "bastion"] {
        let deployment = json(&["get", "deployment", "-n", n, &release.of(role)]);
        check_pod_security("Deployment", &deployment, false);
        assert_eq!(
            deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"],
            65532
        );
        assert_eq!(
            deployment["spec"]["template"]["spec"]["containers"][0]["args"],
            serde_json::json!([role])
        );
    }
    let web = json(&["get", "deployment", "-n", n, &release.of("web")]);
    let web_env = web["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .clone();
    let issuer = web_env
        .iter()
        .find(|e| e["name"] == "COMPUTE_SERVER_OIDC_ISSUER")
        .unwrap();
    assert_eq!(issuer["value"], "https://keycloak.example.com/realms/compute");
    let port = |role: &str| {
        json(&["get", "service", "-n", n, &release.of(role)])["spec"]["ports"][0]["port"].clone()
    };
    assert_eq!(port("web"), 8080);
    assert_eq!(port("bastion"), 2222);

    // Keys made by the chart; the profile with the per-user limit.
    let session_key = secret_value(
        n,
        &format!("{}-compute-server-web-session", release.name),
        "session-key",
    );
    // What the web reads from COMPUTE_SERVER_SESSION_KEY: base64 of 64 random bytes.
    let decoded = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(&session_key)
            .expect("the session key is base64")
    };
    assert_eq!(decoded.len(), 64);
    let host_key = secret_value(
        n,
        &format!("{}-compute-server-bastion-host-key", release.name),
        "ssh_host_ed25519_key",
    );
    assert!(
        host_key.starts_with(b"-----BEGIN PRIVATE KEY-----"),
        "{}",
        text(&host_key)
    );
    let made = json(&["get", "computeprofile", &profile]);
    assert_eq!(made["spec"]["maxServersPerUser"], 3);

    // Upgrade: new replicas and profiles; the keys stay (a new one would sign everyone out and
    // make every ssh client warn of a changed host key).
    let second = unique("helm-life");
    let upgraded = values_file(
        dir.path(),
        n,
        &profile,
        &format!(
            "- name: {second}\n  spec: {{image: computeserver/busybox:local, maxServersPerUser: 1}}\n\
             web: {{replicas: 3}}\n"
        ),
    );
    helm_ok(&[
        "upgrade",
        &release.name,
        CHART,
        "-n",
        n,
        "--values",
        upgraded.to_str().unwrap(),
    ]);
    assert_eq!(
        json(&["get", "deployment", "-n", n, &release.of("web")])["spec"]["replicas"],
        3
    );
    assert_eq!(
        json(&["get", "computeprofile", &second])["spec"]["maxServersPerUser"],
        1
    );
    assert_eq!(
        session_key,
        secret_value(
            n,
            &format!("{}-compute-server-web-session", release.name),
            "session-key"
        )
    );
    assert_eq!(
        host_key,
        secret_value(
            n,
            &format!("{}-compute-server-bastion-host-key", release.name),
            "ssh_host_ed25519_key"
        )
    );

    // Uninstall: nothing of the release is left, in the namespace or cluster-wide, but the two
    // keys, kept so that an install of the same release takes them over again (known_hosts
    // entries stay valid, people stay signed in).
    helm_ok(&["uninstall", &release.name, "-n", n, "--wait"]);
    assert_eq!(
        objects_of(&release.name, kinds, Some(n)),
        vec![
            format!("secret/{}-compute-server-bastion-host-key", release.name),
            format!("secret/{}-compute-server-web-session", release.name),
        ]
    );
    assert_eq!(
        objects_of(&release.name, &cluster_kinds, None),
        Vec::<String>::new()
    );
}

/// `kubectl auth can-i` as a ServiceAccount: true for "yes", false for "no".
fn can(ns: &str, sa: &str, verb: &str, what: &str, scope: &[&str]) -> bool {
    let user = format!("system:serviceaccount:{ns}:{sa}");
    let mut args = vec!["auth", "can-i", verb, what, "--as", &user];
    args.extend(scope);
    let out = kubectl(&args, None);
    let answer = text(&out.stdout);
    match answer.trim() {
        "yes" => true,
        a if a.starts_with("no") => false,
        _ => panic!(
            "kubectl auth can-i {}: {answer} {}",
            args.join(" "),
            text(&out.stderr)
        ),
    }
}

#[test]
fn each_role_may_do_its_job_and_nothing_more() {
    let ns = TestNamespace::new("helm-rbac");
    let dir = tempfile::tempdir().unwrap();
    let (release, _) = Release::install(
        &ns.name,
        &values_file(dir.path(), &ns.name, &unique("helm-rbac"), ""),
    );
    let here: &[&str] = &["-n", &ns.name];
    let elsewhere: &[&str] = &["-n", "default"];
    let everywhere: &[&str] = &["--all-namespaces"];
    let status: &[&str] = &["--all-namespaces", "--subresource=status"];
    let host_key = format!("secret/{}-compute-server-bastion-host-key", release.name);
    let own_lease = format!("lease/{SCHEDULER_LEASE}");
    #[rustfmt::skip]
    let table: &[(&str, &str, &str, &[&str], bool)] = &[
        // The agent: its node's servers anywhere, their status and finalizer, Events, its
        // ComputeNode and heartbeat Lease; no Secrets, no creating or deleting servers.
        ("agent", "watch", "computeservers", everywhere, true),
        ("agent", "patch", "computeservers", everywhere, true),
        ("agent", "patch", "computeservers", status, true),
        ("agent", "create", "events.events.k8s.io", elsewhere, true),
        ("agent", "list", "computeprofiles", &[], true),
        ("agent", "create", "computenodes", &[], true),
        ("agent", "patch", "computenodes", &["--subresource=status"], true),
        ("agent", "patch", "leases", here, true),
        ("agent", "create", "leases", here, true),
        ("agent", "create", "computeservers", everywhere, false),
        ("agent", "delete", "computeservers", everywhere, false),
        ("agent", "delete", "computenodes", &[], false),
        ("agent", "patch", "computeprofiles", &[], false),
        ("agent", "list", "computequotas", &[], false),
        ("agent", "create", "computeusages", &[], false),
        ("agent", "patch", "leases", elsewhere, false),
        ("agent", "get", "secrets", here, false),
        ("agent", "list", "secrets", everywhere, false),
        // The scheduler: labels servers, writes their condition, reads nodes and heartbeats,
        // marks lost nodes in their status, holds its own leader Lease only.
        ("scheduler", "list", "computeservers", everywhere, true),
        ("scheduler", "watch", "computeservers", everywhere, true),
        ("scheduler", "patch", "computeservers", everywhere, true),
        ("scheduler", "patch", "computeservers", status, true),
        ("scheduler", "watch", "computenodes", &[], true),
        ("scheduler", "list", "leases", here, true),
        ("scheduler", "update", &own_lease, here, true),
        ("scheduler", "update", "lease/computenode-a", here, false),
        ("scheduler", "delete", "computeservers", everywhere, true),
        ("scheduler", "create", "computeservers", everywhere, false),
        ("scheduler", "patch", "computenodes", &["--subresource=status"], true),
        ("scheduler", "patch", "computenodes", &[], false),
        // Budgets: reads the quotas and applies their status; keeps the daily usage ledger.
        ("scheduler", "watch", "computequotas", &[], true),
        ("scheduler", "patch", "computequotas", &["--subresource=status"], true),
        ("scheduler", "patch", "computequotas", &[], false),
        ("scheduler", "create", "computequotas", &[], false),
        ("scheduler", "list", "computeusages", &[], true),
        ("scheduler", "create", "computeusages", &[], true),
        ("scheduler", "update", "computeusages", &[], true),
        ("scheduler", "delete", "computeusages", &[], false),
        ("scheduler", "get", "secrets", here, false),
        // The web front: people's servers in its namespace, profiles, Events.
        ("web", "create", "computeservers", here, true),
        ("web", "list", "computeservers", here, true),
        ("web", "watch", "computeservers", here, true),
        ("web", "get", "computeservers", here, true),
        ("web", "patch", "computeservers", here, true),
        ("web", "delete", "computeservers", here, true),
        ("web", "list", "computeprofiles", &[], true),
        // The budgets and the usage ledger, read only (the usage page and GET /api/v1/usage).
        ("web", "watch", "computequotas", &[], true),
        ("web", "list", "computeusages", &[], true),
        ("web", "update", "computequotas", &[], false),
        ("web", "patch", "computequotas", &["--subresource=status"], false),
        ("web", "create", "computeusages", &[], false),
        ("web", "watch", "events", here, true),
        // Each person's turn to create (the per-user limit across replicas).
        ("web", "create", "leases", here, true),
        ("web", "delete", "leases", here, true),
        ("web", "update", "leases", here, false),
        ("web", "create", "leases", elsewhere, false),
        ("web", "create", "computeservers", elsewhere, false),
        // Its own entry of status.activity (a start, Keep running).
        ("web", "patch", "computeservers", &["-n", &ns.name, "--subresource=status"], true),
        ("web", "patch", "computeservers", &["-n", "default", "--subresource=status"], false),
        ("web", "delete", "computenodes", &[], false),
        ("web", "list", "computenodes", &[], false),
        ("web", "create", "computeprofiles", &[], false),
        ("web", "get", "secrets", here, false),
        ("web", "list", "secrets", everywhere, false),
        // The bastion: reads servers and its own host key, reports open jumps in their status.
        ("bastion", "get", "computeservers", here, true),
        ("bastion", "list", "computeservers", here, true),
        ("bastion", "watch", "computeservers", here, true),
        ("bastion", "get", &host_key, here, true),
        ("bastion", "create", "computeservers", here, false),
        ("bastion", "delete", "computeservers", here, false),
        ("bastion", "patch", "computeservers", here, false),
        ("bastion", "patch", "computeservers", &["-n", &ns.name, "--subresource=status"], true),
        ("bastion", "patch", "computeservers", &["-n", "default", "--subresource=status"], false),
        ("bastion", "get", "secret/other", here, false),
        ("bastion", "list", "secrets", here, false),
        ("bastion", "list", "computeusages", &[], false),
        ("bastion", "update", &host_key, here, false),
    ];
    let wrong: Vec<String> = table
        .iter()
        .filter(|(role, verb, what, scope, expected)| {
            can(&ns.name, &release.of(role), verb, what, scope) != *expected
        })
        .map(|(role, verb, what, scope, expected)| {
            format!(
                "{role} {} {verb} {what} {}",
                if *expected { "cannot" } else { "CAN" },
                scope.join(" ")
            )
        })
        .collect();
    assert!(wrong.is_empty(), "RBAC is not as designed:\n{}", wrong.join("\n"));
}

/// A kubeconfig for the test apiserver that signs in as ServiceAccount `sa` of `ns`, with a
/// token the apiserver issues for it.
fn service_account_kubeconfig(dir: &Path, ns: &str, sa: &str) -> PathBuf {
    service_account_kubeconfig_at(&Stack::get().kubeconfig(), dir, ns, sa)
}

/// [`service_account_kubeconfig`] for the cluster of the admin kubeconfig `admin`.
fn service_account_kubeconfig_at(admin: &Path, dir: &Path, ns: &str, sa: &str) -> PathBuf {
    let run = |args: &[&str]| {
        let out = kubectl_at(admin, args, None);
        assert!(out.status.success(), "kubectl {args:?}: {}", text(&out.stderr));
        text(&out.stdout)
    };
    let token = run(&["create", "token", sa, "-n", ns, "--duration", "1h"]);
    let admin: Value =
        serde_json::from_str(&run(&["config", "view", "--raw", "--minify", "-o", "json"])).unwrap();
    let cluster = &admin["clusters"][0]["cluster"];
    let kubeconfig = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "test", "cluster": cluster}],
        "users": [{"name": sa, "user": {"token": token.trim()}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": sa, "namespace": ns}}],
        "current-context": "test",
    });
    let path = dir.join(format!("{sa}.kubeconfig"));
    std::fs::write(&path, kubeconfig.to_string()).unwrap();
    path
}

#[test]
fn the_agent_runs_a_server_with_nothing_but_its_service_accounts_rights() {
    let ns = TestNamespace::new("helm-agent");
    let dir = tempfile::tempdir().unwrap();
    let (release, _) = Release::install(
        &ns.name,
        &values_file(dir.path(), &ns.name, &unique("helm-agent"), ""),
    );
    let kubeconfig = service_account_kubeconfig(dir.path(), &ns.name, &release.of("agent"));
    let node = unique("helm-node");
    let _agent = Agent::start_as(&node, &kubeconfig, &["--lease-namespace", &ns.name]);

    let server = format!(
        "apiVersion: computeserver.io/v1alpha1\nkind: ComputeServer\nmetadata:\n  name: rbac\n  \
         namespace: {}\n  labels: {{computeserver.io/node: {node}, computeserver.io/owner: alice}}\n\
         spec: {{owner: alice, profile: tiny, command: [sleep, infinity]}}\n",
        ns.name
    );
    kubectl_ok(&["apply", "-f", "-"], Some(&server));
    let phase = || json(&["get", "csrv", "-n", &ns.name, "rbac"])["status"]["phase"].clone();
    eventually("the server to run", 90, || (phase() == "Running").then_some(()));
    let container = format!("csrv.{}.rbac", ns.name);
    let inspect = docker_cli(&["inspect", "-f", "{{.State.Running}}", &container]);
    assert_eq!(text(&inspect.stdout).trim(), "true");
    // Its finalizer, its Events, its ComputeNode and its heartbeat Lease, all written as the
    // ServiceAccount.
    let finalizers = json(&["get", "csrv", "-n", &ns.name, "rbac"])["metadata"]["finalizers"].clone();
    assert_eq!(finalizers, serde_json::json!(["computeserver.io/container"]));
    let events = kubectl_ok(
        &[
            "get",
            "events",
            "-n",
            &ns.name,
            "--field-selector",
            "involvedObject.name=rbac",
        ],
        None,
    );
    assert!(events.contains("Started"), "{events}");
    // The node reports in every 10 s, apart from the servers.
    eventually("the ComputeNode to be Ready", 30, || {
        let node = kubectl(&["get", "computenode", &node, "-o", "json"], None);
        let node: Value = serde_json::from_slice(&node.stdout).ok()?;
        let conditions = node["status"]["conditions"].as_array()?.clone();
        conditions
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
            .then_some(())
    });
    kubectl_ok(
        &["get", "lease", "-n", &ns.name, &format!("computenode-{node}")],
        None,
    );

    // Deleting the server: the agent removes the container, then its finalizer.
    kubectl_ok(&["delete", "csrv", "-n", &ns.name, "rbac", "--timeout=60s"], None);
    assert!(
        !docker_cli(&["inspect", &container]).status.success(),
        "{container} is still there"
    );
    let log = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("target/test-logs/agent-{node}.log")),
    )
    .unwrap();
    assert!(
        !log.contains("forbidden"),
        "the agent was refused something:\n{log}"
    );
}

/// etcd and kube-apiserver of this test's own (tests/support/kube.sh), stopped when dropped.
struct PrivateCluster {
    dir: tempfile::TempDir,
}

impl PrivateCluster {
    fn start() -> PrivateCluster {
        let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
        let dir = tempfile::Builder::new()
            .prefix("helm-cluster-")
            .tempdir_in(target)
            .unwrap();
        let out = Command::new("bash")
            .arg(format!("{SUPPORT}/kube.sh"))
            .arg("start")
            .arg(dir.path())
            .output()
            .unwrap();
        let cluster = PrivateCluster { dir };
        assert!(
            out.status.success(),
            "kube.sh start failed: {}",
            text(&out.stderr)
        );
        cluster
    }

    fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    fn kubectl_ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = kubectl_at(&self.kubeconfig(), args, stdin);
        assert!(
            out.status.success(),
            "kubectl {}: {}",
            args.join(" "),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    /// The names of the printer columns of the ComputeServer CRD.
    fn server_columns(&self) -> Vec<String> {
        let crd: Value = serde_json::from_str(&self.kubectl_ok(
            &["get", "crd", "computeservers.computeserver.io", "-o", "json"],
            None,
        ))
        .unwrap();
        crd["spec"]["versions"][0]["additionalPrinterColumns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect()
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(format!("{SUPPORT}/kube.sh"))
            .arg("stop")
            .arg(self.dir.path())
            .output();
    }
}

#[test]
fn the_first_install_makes_the_crds_and_the_profiles_and_uninstall_keeps_the_crds() {
    // (How an upgrade brings a version's CRDs, a Job of its image, is tested where pods run:
    // tests/cluster.rs.)
    let cluster = PrivateCluster::start();
    let kubeconfig = cluster.kubeconfig();
    let helm = |args: &[&str]| helm_ok_at(&kubeconfig, args);
    let dir = tempfile::tempdir().unwrap();
    let values = dir.path().join("values.yaml");
    std::fs::write(
        &values,
        "keycloak: {url: 'https://keycloak.example.com'}\n\
         profiles: [{name: tiny, spec: {image: computeserver/busybox:local}}]\n\
         quotas: [{name: students, spec: {subjects: [{group: students}]}}]\n",
    )
    .unwrap();
    let values = values.to_str().unwrap();

    // A cluster that has never seen compute-server: one install makes the CRDs (Helm makes the
    // chart's crds/ before the rest) and the profile with them, no second upgrade needed.
    assert!(
        !cluster
            .kubectl_ok(&["get", "crd", "-o", "name"], None)
            .contains("computeserver.io")
    );
    let notes = helm(&[
        "install",
        "cs",
        CHART,
        "--create-namespace",
        "-n",
        "compute",
        "--values",
        values,
    ]);
    assert!(!notes.contains("NOT created"), "{notes}");
    assert_eq!(
        cluster
            .kubectl_ok(&["get", "computeprofiles", "-o", "name"], None)
            .trim(),
        "computeprofile.computeserver.io/tiny"
    );
    assert_eq!(
        cluster
            .kubectl_ok(&["get", "computequotas", "-o", "name"], None)
            .trim(),
        "computequota.computeserver.io/students"
    );
    // They are this version's CRDs.
    let columns: Vec<String> = compute_server::crd::all()[0].spec.versions[0]
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.clone())
        .collect();
    assert_eq!(cluster.server_columns(), columns);
    // A rendering for an upgrade carries the Job that brings the CRDs to that version first.
    let upgrade = helm(&[
        "upgrade",
        "cs",
        CHART,
        "-n",
        "compute",
        "--values",
        values,
        "--dry-run",
    ]);
    assert!(
        upgrade.contains("helm.sh/hook: pre-upgrade") && upgrade.contains("args: [crd, --apply]"),
        "{upgrade}"
    );

    // Uninstall removes the release but keeps the CRDs, and with them everyone's servers.
    helm(&["uninstall", "cs", "-n", "compute", "--wait"]);
    let crds = cluster.kubectl_ok(&["get", "crd", "-o", "name"], None);
    assert_eq!(
        crds.matches("computeserver.io").count(),
        compute_server::crd::all().len(),
        "{crds}"
    );
    assert!(
        cluster
            .kubectl_ok(&["get", "computeprofiles,computequotas", "-o", "name"], None)
            .is_empty()
    );
    let left = cluster.kubectl_ok(
        &[
            "get",
            "deployments,daemonsets,serviceaccounts",
            "-n",
            "compute",
            "-o",
            "name",
        ],
        None,
    );
    // (No controller-manager here, so not even a "default" ServiceAccount.)
    assert_eq!(left.trim(), "");
}

#[test]
fn the_admission_policy_and_the_user_role_are_installed_and_hold() {
    // A control plane of its own: the release's policy guards every namespace, as by default.
    let cluster = PrivateCluster::start();
    let kubeconfig = cluster.kubeconfig();
    let dir = tempfile::tempdir().unwrap();
    helm_ok_at(
        &kubeconfig,
        &[
            "install",
            "compute-server",
            CHART,
            "-n",
            "compute",
            "--create-namespace",
            "--set",
            "keycloak.url=https://keycloak.example.com",
            "--set",
            "userRole.groups={oidc:students}",
        ],
    );
    cluster.kubectl_ok(
        &[
            "wait",
            "--for",
            "condition=Established",
            "--timeout=60s",
            "crd",
            "computeservers.computeserver.io",
        ],
        None,
    );
    let policies = cluster.kubectl_ok(
        &[
            "get",
            "validatingadmissionpolicies,mutatingadmissionpolicies",
            "-o",
            "name",
        ],
        None,
    );
    assert!(
        policies.contains("validatingadmissionpolicy.admissionregistration.k8s.io/compute-server-identity")
            && policies
                .contains("mutatingadmissionpolicy.admissionregistration.k8s.io/compute-server-owner-label")
            && policies
                .contains("mutatingadmissionpolicy.admissionregistration.k8s.io/compute-server-owner-groups"),
        "{policies}"
    );
    let server = |name: &str, spec: &str| {
        format!(
            "apiVersion: computeserver.io/v1alpha1\nkind: ComputeServer\n\
             metadata: {{name: {name}, namespace: compute}}\nspec: {{{spec}}}\n"
        )
    };
    let as_person = |user: &str, args: &[&str], stdin: Option<&str>| {
        let mut all = vec![
            "--as",
            user,
            "--as-group",
            "oidc:students",
            "--as-group",
            "system:authenticated",
        ];
        all.extend(args);
        kubectl_at(&kubeconfig, &all, stdin)
    };
    // Policies take effect once the API server has loaded them: until then it is asked with
    // dry runs, so a request let through before stores nothing (then an apply of the same
    // object would be a change of nothing, which the policy allows).
    let for_alice = server("for-alice", "owner: alice, profile: tiny");
    eventually("the policy to refuse mallory's server for alice", 60, || {
        let out = as_person(
            "oidc:mallory",
            &["create", "--dry-run=server", "-f", "-"],
            Some(&for_alice),
        );
        let error = text(&out.stderr);
        (!out.status.success() && error.contains("ValidatingAdmissionPolicy")).then_some(error)
    });
    let out = as_person("oidc:mallory", &["apply", "-f", "-"], Some(&for_alice));
    let refusal = text(&out.stderr);
    assert!(
        !out.status.success() && refusal.contains("spec.owner must be your own user name (mallory)"),
        "{refusal}"
    );
    eventually("the owner label policy to be loaded", 30, || {
        let args = ["apply", "--dry-run=server", "-o", "json", "-f", "-"];
        let out = kubectl_at(
            &kubeconfig,
            &args,
            Some(&server("probe", "owner: carol, profile: tiny")),
        );
        let probe: Value = serde_json::from_slice(&out.stdout).ok()?;
        (probe["metadata"]["labels"]["computeserver.io/owner"] == "carol").then_some(())
    });
    // Whoever makes their own server gets their groups, without the prefix, in spec.ownerGroups
    // (what group budgets count it against), whatever they wrote there.
    eventually("the owner groups policy to be loaded", 30, || {
        let out = as_person(
            "oidc:dave",
            &["create", "--dry-run=server", "-o", "json", "-f", "-"],
            Some(&server(
                "probe",
                "owner: dave, profile: tiny, ownerGroups: [staff]",
            )),
        );
        let probe: Value = serde_json::from_slice(&out.stdout).ok()?;
        (probe["spec"]["ownerGroups"] == serde_json::json!(["students"])).then_some(())
    });
    let out = kubectl_at(&kubeconfig, &["get", "csrv", "-n", "compute", "-o", "name"], None);
    assert_eq!(text(&out.stdout), "", "nothing was stored");

    // The user role, bound by userRole.groups: her own server, labelled for her; the profiles
    // and nodes to choose from; nothing in other namespaces.
    let out = as_person(
        "oidc:mallory",
        &["apply", "-f", "-"],
        Some(&server("mine", "owner: mallory, profile: tiny")),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mine: Value = serde_json::from_str(
        &cluster.kubectl_ok(&["get", "csrv", "-n", "compute", "mine", "-o", "json"], None),
    )
    .unwrap();
    assert_eq!(mine["metadata"]["labels"]["computeserver.io/owner"], "mallory");
    assert_eq!(mine["spec"]["ownerGroups"], serde_json::json!(["students"]));
    for (verb, what, ns, yes) in [
        ("list", "computeprofiles", None, true),
        ("get", "computenodes", None, true),
        ("watch", "computequotas", None, true),
        ("update", "computequotas", None, false),
        ("list", "computeusages", None, false),
        ("delete", "computeservers", Some("compute"), true),
        ("create", "computeservers", Some("default"), false),
        ("create", "computeprofiles", None, false),
        ("get", "secrets", Some("compute"), false),
    ] {
        let mut args = vec!["auth", "can-i", verb, what];
        if let Some(ns) = ns {
            args.extend(["-n", ns]);
        }
        let out = as_person("oidc:mallory", &args, None);
        assert_eq!(
            text(&out.stdout).trim() == "yes",
            yes,
            "mallory {verb} {what} {ns:?}"
        );
    }
    // Aggregated to edit: a namespace's editors get it (the controller-manager does the
    // aggregating, and this control plane runs none, so the label and edit's selector are read).
    let role: Value = serde_json::from_str(
        &cluster.kubectl_ok(&["get", "clusterrole", "compute-server-user", "-o", "json"], None),
    )
    .unwrap();
    assert_eq!(
        role["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"],
        "true"
    );
    let edit: Value =
        serde_json::from_str(&cluster.kubectl_ok(&["get", "clusterrole", "edit", "-o", "json"], None))
            .unwrap();
    let selectors = edit["aggregationRule"]["clusterRoleSelectors"]
        .as_array()
        .unwrap();
    assert!(
        selectors
            .iter()
            .any(|s| s["matchLabels"]["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"),
        "{edit}"
    );

    // The roles' own ServiceAccounts, with tokens the API server issues: the web front makes
    // servers for anyone; the agent and the scheduler cannot change a spec.
    let token = |role: &str| {
        service_account_kubeconfig_at(
            &kubeconfig,
            dir.path(),
            "compute",
            &format!("compute-server-{role}"),
        )
    };
    let web = token("web");
    let out = kubectl_at(
        &web,
        &["apply", "-f", "-"],
        Some(&server("bobs", "owner: bob, profile: tiny")),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let patch = |kubeconfig: &Path, patch: &str| {
        kubectl_at(
            kubeconfig,
            &[
                "patch",
                "csrv",
                "bobs",
                "-n",
                "compute",
                "--type=merge",
                "-p",
                patch,
            ],
            None,
        )
    };
    let out = patch(&token("agent"), r#"{"spec":{"profile":"big"}}"#);
    assert!(
        text(&out.stderr).contains("the agent's service account may change only the finalizers and status"),
        "{}",
        text(&out.stderr)
    );
    let scheduler = token("scheduler");
    let out = patch(&scheduler, r#"{"spec":{"profile":"big"}}"#);
    assert!(
        text(&out.stderr)
            .contains("the scheduler's service account may change only the label computeserver.io/node"),
        "{}",
        text(&out.stderr)
    );
    let out = patch(
        &scheduler,
        r#"{"metadata":{"labels":{"computeserver.io/node":"node-a"}}}"#,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let bobs: Value = serde_json::from_str(
        &cluster.kubectl_ok(&["get", "csrv", "-n", "compute", "bobs", "-o", "json"], None),
    )
    .unwrap();
    assert_eq!(bobs["spec"]["profile"], "tiny");

    // Where no MutatingAdmissionPolicy sets them (a cluster before 1.36), the validation holds
    // alone: a person's new server lists exactly their groups.
    cluster.kubectl_ok(
        &[
            "delete",
            "mutatingadmissionpolicybinding",
            "compute-server-owner-groups",
        ],
        None,
    );
    let erins = |groups: &str| {
        let spec = format!("owner: erin, profile: tiny, ownerGroups: [{groups}]");
        as_person(
            "oidc:erin",
            &["create", "--dry-run=server", "-f", "-"],
            Some(&server("erins", &spec)),
        )
    };
    let refusal = eventually("the owner groups policy to be unloaded", 30, || {
        let out = erins("staff");
        let error = text(&out.stderr);
        error.contains("spec.ownerGroups").then_some(error)
    });
    assert!(
        refusal.contains("spec.ownerGroups must list your groups as the API server knows them (students)"),
        "{refusal}"
    );
    let out = erins("students");
    assert!(out.status.success(), "{}", text(&out.stderr));

    // Uninstalled, the policies go with the release.
    helm_ok_at(
        &kubeconfig,
        &["uninstall", "compute-server", "-n", "compute", "--wait"],
    );
    let left = cluster.kubectl_ok(
        &[
            "get",
            "validatingadmissionpolicies,mutatingadmissionpolicies",
            "-o",
            "name",
        ],
        None,
    );
    assert_eq!(left.trim(), "");
}
