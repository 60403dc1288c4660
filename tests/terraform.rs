//! The Terraform module (terraform/modules/compute-server) and its example
//! (terraform/examples/local) with OpenTofu and the Kubernetes provider of the local mirror
//! (tests/support/install-tofu.sh): formatted and valid, bad input refused with a message, the
//! example's plan, apply, plan again with no change and destroy, and the module's install giving
//! the objects of manifests/.
//!
//! Each test that talks to an API server starts one of its own (tests/support/kube.sh), so these
//! tests need only the binaries in ~/.cache/compute-server/bin, not the shared stack.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const SUPPORT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support");

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// $CS_BIN of tests/support/lib.sh.
fn cs_bin() -> PathBuf {
    let cache = std::env::var("CS_CACHE").map(PathBuf::from).unwrap_or_else(|_| {
        std::env::var("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache"))
            .join("compute-server")
    });
    cache.join("bin")
}

/// A copy of terraform/ in a temporary folder, so that `tofu init` and the state stay out of the
/// work tree; the relative module sources still hold.
fn terraform_copy() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("terraform-")
        .tempdir_in(Path::new(REPO).join("target"))
        .unwrap();
    let status = Command::new("cp")
        .arg("-r")
        .arg(Path::new(REPO).join("terraform"))
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    for leftover in [".terraform", ".terraform.lock.hcl", "terraform.tfstate"] {
        let _ = std::fs::remove_dir_all(dir.path().join("terraform/examples/local").join(leftover));
        let _ = std::fs::remove_file(dir.path().join("terraform/examples/local").join(leftover));
    }
    dir
}

/// tofu (through tests/support/tofu.sh: the local provider mirror only) in `dir`.
fn tofu(dir: &Path, args: &[&str]) -> Output {
    Command::new("bash")
        .arg(format!("{SUPPORT}/tofu.sh"))
        .arg(format!("-chdir={}", dir.display()))
        .args(args)
        .env("TF_INPUT", "0")
        .env("TF_IN_AUTOMATION", "1")
        .env("NO_COLOR", "1")
        .output()
        .expect("run tofu")
}

fn tofu_ok(dir: &Path, args: &[&str]) -> String {
    let out = tofu(dir, args);
    assert!(
        out.status.success(),
        "tofu {} in {} failed:\n{}\n{}",
        args.join(" "),
        dir.display(),
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// `tofu plan -detailed-exitcode`: 0 no changes, 2 changes (1 is a failure).
fn plan_exit(dir: &Path, args: &[&str]) -> (i32, String) {
    let mut all = vec!["plan", "-detailed-exitcode", "-no-color"];
    all.extend_from_slice(args);
    let out = tofu(dir, &all);
    let code = out.status.code().unwrap_or(-1);
    assert!(
        code == 0 || code == 2,
        "tofu plan failed:\n{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    (code, text(&out.stdout))
}

/// etcd and kube-apiserver of this test's own (tests/support/kube.sh), stopped when dropped.
struct PrivateCluster {
    dir: tempfile::TempDir,
}

impl PrivateCluster {
    fn start() -> PrivateCluster {
        let dir = tempfile::Builder::new()
            .prefix("terraform-cluster-")
            .tempdir_in(Path::new(REPO).join("target"))
            .unwrap();
        let out = Command::new("bash")
            .arg(format!("{SUPPORT}/kube.sh"))
            .arg("start")
            .arg(dir.path())
            .env("ETCD_NO_FSYNC", "1")
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

    fn kubectl(&self, args: &[&str]) -> Output {
        Command::new(cs_bin().join("kubectl"))
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .args(args)
            .output()
            .expect("run kubectl")
    }

    fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {}: {}",
            args.join(" "),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    /// Does what the namespace controller would (this control plane has none): once `ns` is
    /// being deleted, and so emptied by whoever deletes it, removes its finalizer.
    fn finalize_namespace_when_deleted(&self, ns: &str) -> std::thread::JoinHandle<()> {
        let kubectl = cs_bin().join("kubectl");
        let kubeconfig = self.kubeconfig();
        let ns = ns.to_string();
        std::thread::spawn(move || {
            let start = std::time::Instant::now();
            while start.elapsed() < std::time::Duration::from_secs(300) {
                let out = Command::new(&kubectl)
                    .arg("--kubeconfig")
                    .arg(&kubeconfig)
                    .args(["get", "namespace", &ns, "-o", "json"])
                    .output()
                    .unwrap();
                if !out.status.success() {
                    return; // gone
                }
                let mut namespace: Value = serde_json::from_slice(&out.stdout).unwrap();
                if namespace["metadata"]["deletionTimestamp"].is_string() {
                    namespace["spec"]["finalizers"] = serde_json::json!([]);
                    let mut child = Command::new(&kubectl)
                        .arg("--kubeconfig")
                        .arg(&kubeconfig)
                        .args([
                            "replace",
                            "--raw",
                            &format!("/api/v1/namespaces/{ns}/finalize"),
                            "-f",
                            "-",
                        ])
                        .stdin(std::process::Stdio::piped())
                        .stdout(std::process::Stdio::null())
                        .spawn()
                        .unwrap();
                    use std::io::Write;
                    child
                        .stdin
                        .take()
                        .unwrap()
                        .write_all(namespace.to_string().as_bytes())
                        .unwrap();
                    child.wait().unwrap();
                }
                std::thread::sleep(std::time::Duration::from_millis(500));
            }
        })
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        serde_json::from_str(&self.kubectl_ok(&all)).unwrap()
    }

    /// The CRDs from crds/, as `make up` installs them.
    fn install_crds(&self) {
        let crds = format!("{REPO}/crds/");
        self.kubectl_ok(&["apply", "--server-side", "-f", &crds]);
        self.kubectl_ok(&[
            "wait",
            "--for",
            "condition=Established",
            "--timeout=60s",
            "-f",
            &crds,
        ]);
    }

    fn profile_names(&self) -> BTreeSet<String> {
        self.json(&["get", "computeprofiles"])["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
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

/// The folders under terraform/ that hold .tf files.
fn tf_folders(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        let mut has_tf = false;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() && path.file_name().unwrap() != ".terraform" {
                todo.push(path);
            } else if path.extension().is_some_and(|e| e == "tf") {
                has_tf = true;
            }
        }
        if has_tf {
            found.push(dir);
        }
    }
    found.sort();
    found
}

#[test]
fn every_tf_folder_is_formatted_and_valid() {
    let copy = terraform_copy();
    let root = copy.path().join("terraform");
    let out = tofu(&root, &["fmt", "-check", "-recursive", "-diff"]);
    assert!(
        out.status.success(),
        "tofu fmt -check: these files need `tofu fmt` (bash tests/support/tofu.sh fmt -recursive terraform):\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let folders = tf_folders(&root);
    assert!(
        folders.len() >= 2,
        "terraform/ has no module or example: {folders:?}"
    );
    for dir in folders {
        tofu_ok(&dir, &["init", "-backend=false", "-no-color"]);
        let valid = tofu_ok(&dir, &["validate", "-no-color"]);
        assert!(
            valid.contains("The configuration is valid"),
            "{}: {valid}",
            dir.display()
        );
    }
}

#[test]
fn the_modules_crds_are_the_generated_ones() {
    let dir = Path::new(REPO).join("terraform/modules/compute-server/crds");
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
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        crds.len(),
        "{} holds a CRD no Rust type makes",
        dir.display()
    );
}

#[test]
fn the_example_applies_plans_no_change_and_destroys_only_what_it_made() {
    let cluster = PrivateCluster::start();
    // What `make up` has: the CRDs, and a profile of its own the example must leave alone.
    cluster.install_crds();
    cluster.kubectl_ok(&["apply", "-f", &format!("{REPO}/manifests/examples/profiles.yaml")]);
    let copy = terraform_copy();
    let dir = copy.path().join("terraform/examples/local");
    let kubeconfig = format!("kubeconfig={}", cluster.kubeconfig().display());
    let var = ["-var", kubeconfig.as_str()];

    // A kubeconfig that is not there is refused by the variable's validation, naming it.
    tofu_ok(&dir, &["init", "-no-color"]);
    let out = tofu(
        &dir,
        &["plan", "-no-color", "-var", "kubeconfig=/nonexistent/kubeconfig"],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("kubeconfig must be the path of an existing file"),
        "{}",
        text(&out.stderr)
    );

    let (code, plan) = plan_exit(&dir, &var);
    assert_eq!(code, 2, "the first plan makes the profile:\n{plan}");
    assert!(
        plan.contains("Plan: 1 to add, 0 to change, 0 to destroy"),
        "{plan}"
    );
    assert!(
        !cluster.profile_names().contains("terraform-example"),
        "plan changed nothing"
    );

    tofu_ok(&dir, &["apply", "-auto-approve", "-no-color", var[0], var[1]]);
    let profile = cluster.json(&["get", "computeprofile", "terraform-example"]);
    assert_eq!(profile["spec"]["image"], "computeserver/busybox:local");
    assert_eq!(profile["spec"]["maxResources"]["memory"], "256Mi");
    assert_eq!(profile["spec"]["maxServersPerUser"], 2);
    assert_eq!(profile["spec"]["allowedGroups"][0], "staff");
    assert_eq!(profile["spec"]["lifecycle"]["idleStopAfter"], "2h");
    assert_eq!(
        profile["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "OpenTofu"
    );
    let output = tofu_ok(&dir, &["output", "-json", "profiles"]);
    assert_eq!(
        serde_json::from_str::<Value>(&output).unwrap(),
        serde_json::json!(["terraform-example"])
    );

    let (code, plan) = plan_exit(&dir, &var);
    assert_eq!(code, 0, "a second plan must show no changes:\n{plan}");
    assert!(plan.contains("No changes"), "{plan}");
    let after_plan = cluster.json(&["get", "computeprofile", "terraform-example"]);
    assert_eq!(
        after_plan["metadata"]["resourceVersion"], profile["metadata"]["resourceVersion"],
        "a plan wrote to the profile"
    );

    // A change by hand is drift the next plan shows, and apply puts back.
    cluster.kubectl_ok(&[
        "patch",
        "computeprofile",
        "terraform-example",
        "--type=merge",
        "-p",
        r#"{"spec":{"maxServersPerUser":9}}"#,
    ]);
    let (code, plan) = plan_exit(&dir, &var);
    assert_eq!(code, 2, "a change by hand is shown:\n{plan}");
    assert!(plan.contains("maxServersPerUser"), "{plan}");
    tofu_ok(&dir, &["apply", "-auto-approve", "-no-color", var[0], var[1]]);
    let profile = cluster.json(&["get", "computeprofile", "terraform-example"]);
    assert_eq!(profile["spec"]["maxServersPerUser"], 2);

    tofu_ok(&dir, &["destroy", "-auto-approve", "-no-color", var[0], var[1]]);
    let left = cluster.profile_names();
    assert!(
        !left.contains("terraform-example"),
        "destroy left the profile: {left:?}"
    );
    assert!(
        left.contains("tiny") && left.contains("debian"),
        "destroy removed what it did not make: {left:?}"
    );
    cluster.kubectl_ok(&["get", "crd", "computeprofiles.computeserver.io"]);
}

/// kind/namespace/name of every object in manifests/compute-server.yaml (namespace empty for
/// cluster-wide ones).
fn manifest_objects() -> BTreeSet<String> {
    let yaml = std::fs::read_to_string(format!("{REPO}/manifests/compute-server.yaml")).unwrap();
    serde_yaml::Deserializer::from_str(&yaml)
        .filter_map(|doc| {
            let v: serde_yaml::Value = serde::Deserialize::deserialize(doc).unwrap();
            let kind = v["kind"].as_str()?;
            Some(format!(
                "{kind}/{}/{}",
                v["metadata"]["namespace"].as_str().unwrap_or(""),
                v["metadata"]["name"].as_str().unwrap()
            ))
        })
        .collect()
}

/// The root module of the install test, calling the module with `inputs` (HCL).
fn write_install_config(dir: &Path, kubeconfig: &Path, inputs: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("main.tf"),
        format!(
            r#"terraform {{
  required_providers {{
    kubernetes = {{ source = "hashicorp/kubernetes" }}
  }}
}}

provider "kubernetes" {{
  config_path = "{}"
}}

module "compute_server" {{
  source = "../modules/compute-server"
{inputs}
}}

output "objects" {{
  value = module.compute_server.objects
}}
"#,
            kubeconfig.display()
        ),
    )
    .unwrap();
}

#[test]
fn the_module_installs_the_objects_of_the_manifests_and_refuses_bad_input() {
    let cluster = PrivateCluster::start();
    let copy = terraform_copy();
    let dir = copy.path().join("terraform/install");

    // Bad input: each mistake is named before anything reaches the cluster.
    write_install_config(
        &dir,
        &cluster.kubeconfig(),
        r#"
  keycloak = { url = "keycloak.example.com/" }
  image    = { pull_policy = "Sometimes" }
  log      = { format = "yaml" }
  roles    = { agent = { node_selector = {} } }
  profiles = { big = { displayName = "no image" } }
  quotas   = { students = { total = { gpus = 8 } } }
"#,
    );
    tofu_ok(&dir, &["init", "-no-color"]);
    let out = tofu(&dir, &["plan", "-no-color"]);
    assert!(!out.status.success());
    let errors = text(&out.stderr).split_whitespace().collect::<Vec<_>>().join(" ");
    for message in [
        "keycloak.url must be an http(s) URL without a trailing slash",
        "image.pull_policy must be one of Always, IfNotPresent, Never",
        "log.format must be \"text\" or \"json\"",
        "roles.agent.node_selector must select some nodes",
        "Each profile needs an image",
        "Each quota needs subjects",
    ] {
        assert!(errors.contains(message), "no {message:?} in:\n{errors}");
    }
    assert!(
        cluster
            .kubectl(&["get", "crd", "computeservers.computeserver.io"])
            .status
            .code()
            != Some(0),
        "a refused plan made something"
    );

    // The values manifests/ is rendered with (charts/compute-server/ci/manifests-values.yaml).
    write_install_config(
        &dir,
        &cluster.kubeconfig(),
        r#"  keycloak = { url = "https://keycloak.example.com" }"#,
    );
    tofu_ok(&dir, &["apply", "-auto-approve", "-no-color"]);
    let expected = manifest_objects();
    let output: BTreeSet<String> =
        serde_json::from_str(&tofu_ok(&dir, &["output", "-json", "objects"])).unwrap();
    assert_eq!(
        output, expected,
        "the module's objects (left) differ from manifests/compute-server.yaml's (right)"
    );

    // And the API server holds them all.
    let names: Vec<String> = expected
        .iter()
        .map(|o| {
            let (kind, rest) = o.split_once('/').unwrap();
            format!("{}/{}", kind.to_lowercase(), rest.rsplit_once('/').unwrap().1)
        })
        .collect();
    let mut args = vec!["get", "-n", "compute"];
    args.extend(names.iter().map(String::as_str));
    let items = cluster.json(&args);
    let found: BTreeSet<String> = items["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            format!(
                "{}/{}/{}",
                o["kind"].as_str().unwrap(),
                o["metadata"]["namespace"].as_str().unwrap_or(""),
                o["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        found, expected,
        "in the API server (left) and in manifests/ (right)"
    );
    let web = cluster.json(&["get", "deployment", "compute-server-web", "-n", "compute"]);
    let env = &web["spec"]["template"]["spec"]["containers"][0]["env"];
    assert!(
        env.as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "COMPUTE_SERVER_OIDC_ISSUER"
                && e["value"] == "https://keycloak.example.com/realms/compute"),
        "{env}"
    );

    let (code, plan) = plan_exit(&dir, &[]);
    assert_eq!(code, 0, "a second plan must show no changes:\n{plan}");

    let finalizer = cluster.finalize_namespace_when_deleted("compute");
    tofu_ok(&dir, &["destroy", "-auto-approve", "-no-color"]);
    finalizer.join().unwrap();
    for gone in [
        "namespace/compute",
        "clusterrole/compute-server-user",
        "crd/computeservers.computeserver.io",
        "validatingadmissionpolicy/compute-server-identity",
    ] {
        let out = cluster.kubectl(&["get", gone]);
        assert!(!out.status.success(), "destroy left {gone}");
    }
}
