//! compute-server installed as admins install it: the Helm chart on a real one-node Kubernetes
//! (tests/support/cluster.sh: kubelet, containerd, CNI, kube-proxy, CoreDNS, the node's own
//! Docker engine; Keycloak beside it), then used as people use it and kept up as admins keep it.
//!
//! One story, in order: `helm install` → every pod Ready → alice signs in through the installed
//! web front in Chromium, requests a debian server, sees it Running → `ssh -J` through the
//! installed bastion, and the browser terminal (web pod → bastion Service by DNS name) → kubectl
//! as alice through Keycloak → `helm upgrade` with a changed value, then with a new image tag,
//! while her server and her SSH session carry on → `helm uninstall` and `helm install` adopt the
//! server and its data → the host reboots (its Docker engine and kubelet stop and start) and the
//! server comes back with an Event that says so → `kubectl apply -k manifests/` on a fresh cluster.
//! Screenshots go to target/test-artifacts/cluster-*.png; the figures it prints are timings on
//! this machine.

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use fantoccini::{Client, Locator};
use serde_json::Value;
use support::chromium::{ChromeDriver, screenshot, sign_in, terminal_connected, text, type_and_wait};
use support::people::{approve_device, finish, spawn_kubectl, verification_url};
use support::{SshUser, Stack, eventually, eventually_async};

const SUPPORT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support");
const STATE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/target/test-cluster");
const NS: &str = "compute";

fn text_of(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `bash tests/support/SCRIPT ARGS`, its output shown when it fails.
fn script(name: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let out = Command::new("bash")
        .arg(format!("{SUPPORT}/{name}"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run bash");
    assert!(
        out.status.success(),
        "{name} {}:\n{}{}",
        args.join(" "),
        text_of(&out.stdout),
        text_of(&out.stderr)
    );
    out
}

/// The one-node cluster of this test, in target/test-cluster; stopped when dropped (its state is
/// kept for a look afterwards, and made afresh by the next run).
struct Cluster {
    env: HashMap<String, String>,
}

impl Cluster {
    /// A fresh cluster, with the image of the binary under test imported into its node.
    fn fresh() -> Cluster {
        let docker_host = Stack::get().docker_host().to_string();
        script(
            "image.sh",
            &["build"],
            &[
                ("DOCKER_HOST", &docker_host),
                ("COMPUTE_SERVER_BINARY", env!("CARGO_BIN_EXE_compute-server")),
            ],
        );
        script("cluster.sh", &["reset", STATE], &[]);
        Cluster::start()
    }

    /// `cluster.sh up` on the kept state: a fresh cluster, or one that was down (a reboot).
    fn start() -> Cluster {
        let started = Instant::now();
        let docker_host = Stack::get().docker_host().to_string();
        script(
            "cluster.sh",
            &["up", STATE],
            &[("DOCKER_HOST", &docker_host), ("ETCD_NO_FSYNC", "1")],
        );
        println!(
            "cluster: node Ready with CoreDNS in {:.0} s",
            started.elapsed().as_secs_f64()
        );
        let env = std::fs::read_to_string(Path::new(STATE).join("env"))
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Cluster { env }
    }

    fn var(&self, key: &str) -> &str {
        self.env
            .get(key)
            .unwrap_or_else(|| panic!("{key} missing from the cluster's env"))
    }

    fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let kubectl = Path::new(self.var("KUBECTL"));
        let (child, lines) = spawn_kubectl(
            kubectl,
            self.var("KUBECONFIG").as_ref(),
            args,
            stdin.unwrap_or(""),
        );
        collect(child, &lines)
    }

    fn kubectl_ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.kubectl(args, stdin);
        assert!(
            out.status.success(),
            "kubectl {}: {}",
            args.join(" "),
            text_of(&out.stderr)
        );
        text_of(&out.stdout)
    }

    fn json(&self, args: &[&str]) -> Value {
        let out = self.kubectl_ok(&[args, &["-o", "json"]].concat(), None);
        serde_json::from_str(&out).unwrap()
    }

    fn helm(&self, args: &[&str]) -> String {
        let out = Command::new(self.var("HELM"))
            .arg("--kubeconfig")
            .arg(self.var("KUBECONFIG"))
            .args(args)
            .output()
            .expect("run helm");
        assert!(
            out.status.success(),
            "helm {}: {}",
            args.join(" "),
            text_of(&out.stderr)
        );
        text_of(&out.stdout)
    }

    /// `helm upgrade --install` with the values this cluster needs (cluster.sh install-chart),
    /// and HELM ARGS; waits until every pod is Ready. Prints how long it took.
    fn install_chart(&self, what: &str, helm_args: &[&str]) -> String {
        let started = Instant::now();
        let out = script(
            "cluster.sh",
            &[&["install-chart", STATE][..], helm_args].concat(),
            &[],
        );
        println!("cluster: {what} in {:.0} s", started.elapsed().as_secs_f64());
        text_of(&out.stdout)
    }

    /// The pods of compute-server's roles: (component, name, uid, image, ready).
    fn pods(&self) -> Vec<(String, String, String, String, bool)> {
        let pods = self.json(&[
            "get",
            "pods",
            "-n",
            NS,
            "-l",
            "app.kubernetes.io/name=compute-server",
        ]);
        pods["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .map(|p| {
                let ready = p["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True");
                (
                    p["metadata"]["labels"]["app.kubernetes.io/component"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                    p["metadata"]["name"].as_str().unwrap().to_string(),
                    p["metadata"]["uid"].as_str().unwrap().to_string(),
                    p["spec"]["containers"][0]["image"].as_str().unwrap().to_string(),
                    ready,
                )
            })
            .collect()
    }

    /// Waits until each role has its pods, all Ready: one agent (one node), two schedulers, one web
    /// front, one bastion. Returns them.
    fn all_ready(&self) -> Vec<(String, String, String, String, bool)> {
        eventually("every role's pods Ready", 180, || {
            let pods = self.pods();
            let count = |role: &str| pods.iter().filter(|p| p.0 == role && p.4).count();
            (count("agent") == 1
                && count("scheduler") == 2
                && count("web") == 1
                && count("bastion") == 1
                && pods.len() == 5)
                .then_some(pods)
        })
    }

    fn server(&self, name: &str) -> Value {
        self.json(&["get", "csrv", "-n", NS, name])
    }

    fn wait_running(&self, name: &str, seconds: u64) -> Value {
        eventually(&format!("{name} Running"), seconds, || {
            let server = self.server(name);
            (server["status"]["phase"] == "Running").then_some(server)
        })
    }

    fn events(&self, name: &str) -> String {
        self.kubectl_ok(
            &[
                "get",
                "events",
                "-n",
                NS,
                "--field-selector",
                &format!("involvedObject.name={name}"),
            ],
            None,
        )
    }

    /// Runs `command` in the server's container through the node's Docker engine.
    fn docker(&self, args: &[&str]) -> Output {
        Command::new("docker")
            .args(args)
            .env("DOCKER_HOST", self.var("NODE_DOCKER_HOST"))
            .output()
            .expect("run docker")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(format!("{SUPPORT}/cluster.sh"))
            .args(["down", STATE])
            .output();
    }
}

/// An SSH session held open through the bastion: `cat` on the server echoes each line back.
struct Session {
    child: Child,
    input: ChildStdin,
    lines: mpsc::Receiver<String>,
}

impl Session {
    fn open(user: &SshUser, bastion: &str, server: &str) -> Session {
        let jump = format!("{}@{bastion}", user.name);
        let mut child = user
            .command(&["-J", &jump, &format!("root@{server}"), "cat"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run ssh");
        let input = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = send.send(line);
            }
        });
        let mut session = Session { child, input, lines };
        session.echo("hello");
        session
    }

    /// Sends a line and waits for it to come back: the session still carries data.
    fn echo(&mut self, line: &str) {
        writeln!(self.input, "{line}").expect("the SSH session takes input");
        let back = self.lines.recv_timeout(Duration::from_secs(20));
        assert_eq!(back.as_deref(), Ok(line), "the SSH session did not echo {line:?}");
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// alice's kubectl through Keycloak: the device sign-in done by "her" in a browser, then her
/// cached token.
struct Alice {
    /// Her token cache.
    _dir: tempfile::TempDir,
    kubeconfig: PathBuf,
    kubectl: PathBuf,
}

impl Alice {
    async fn sign_in(cluster: &Cluster) -> Alice {
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = support::people::kubeconfig(cluster.var("KUBECONFIG_OIDC").as_ref(), dir.path());
        let kubectl = PathBuf::from(cluster.var("KUBECTL"));
        let (child, lines) = spawn_kubectl(&kubectl, &kubeconfig, &["auth", "whoami"], "");
        let url = verification_url(&lines);
        approve_device(&url, "alice", cluster.var("KEYCLOAK_CA")).await;
        let whoami = finish(child, &lines);
        assert!(whoami.contains("oidc:alice"), "{whoami}");
        Alice {
            _dir: dir,
            kubeconfig,
            kubectl,
        }
    }

    fn kubectl(&self, args: &[&str], input: &str) -> Output {
        let (child, lines) = spawn_kubectl(&self.kubectl, &self.kubeconfig, args, input);
        collect(child, &lines)
    }
}

/// A spawned kubectl's output, with its standard error (read line by line to its end).
fn collect(child: Child, lines: &mpsc::Receiver<String>) -> Output {
    let out = child.wait_with_output().unwrap();
    let stderr: Vec<String> = lines.iter().collect();
    Output {
        stderr: stderr.join("\n").into_bytes(),
        ..out
    }
}

fn server_manifest(name: &str, owner: &str) -> String {
    format!(
        "apiVersion: computeserver.io/v1alpha1\nkind: ComputeServer\n\
         metadata: {{name: {name}, namespace: {NS}}}\nspec: {{owner: {owner}, profile: tiny}}\n"
    )
}

/// alice requests a debian server named `name` with the form, in her signed-in browser, and
/// follows it on its page to Running; returns the SSH command the page shows.
async fn request_in_browser(browser: &Client, web: &str, name: &str, public_key: &str) -> String {
    browser.goto(&format!("{web}/servers/new")).await.unwrap();
    browser
        .find(Locator::Css("input[value=debian]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    for (field, value) in [("name", name), ("ssh_keys", public_key)] {
        browser
            .find(Locator::Id(field))
            .await
            .unwrap()
            .send_keys(value)
            .await
            .unwrap();
    }
    screenshot(browser, "cluster-1-request").await;
    browser
        .find(Locator::Css("form.request button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .wait()
        .for_url(&format!("{web}/servers/{name}").parse().unwrap())
        .await
        .unwrap();
    eventually_async("the page to show Running", 180, || {
        let browser = browser.clone();
        async move { (text(&browser, "[data-field=phase]").await == "Running").then_some(()) }
    })
    .await;
    browser.refresh().await.unwrap();
    screenshot(browser, "cluster-2-running").await;
    text(browser, "[data-field=ssh]").await
}

#[tokio::test]
async fn installed_with_helm_on_a_real_node_it_serves_people_and_survives_upgrades_reinstalls_and_reboots() {
    let cluster = Cluster::fresh();
    let node = cluster.var("NODE_NAME").to_string();
    let web = cluster.var("WEB_URL").to_string();
    let bastion = cluster.var("BASTION_ADDRESS").to_string();

    // The node is Ready, marked for the agent, and its runtime is containerd.
    let k8s_node = cluster.json(&["get", "node", &node]);
    assert_eq!(k8s_node["metadata"]["labels"]["computeserver.io/agent"], "true");
    assert!(
        k8s_node["status"]["nodeInfo"]["containerRuntimeVersion"]
            .as_str()
            .unwrap()
            .starts_with("containerd://"),
        "{}",
        k8s_node["status"]["nodeInfo"]
    );

    // helm install, once: the CRDs, the roles and the profiles together (no second upgrade).
    let notes = cluster.install_chart("helm install to every pod Ready", &[]);
    assert!(!notes.contains("NOT created"), "{notes}");
    let first = cluster.all_ready();
    let profiles = cluster.kubectl_ok(&["get", "computeprofiles", "-o", "name"], None);
    assert!(
        profiles.contains("computeprofile.computeserver.io/debian")
            && profiles.contains("computeprofile.computeserver.io/tiny"),
        "{profiles}"
    );
    // The agent in its pod registered the node's Docker engine, by in-cluster credentials.
    let computenode = eventually("the ComputeNode Ready", 60, || {
        let n = cluster.json(&["get", "computenode", &node]);
        n["status"]["conditions"]
            .as_array()?
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
            .then_some(n)
    });
    assert!(
        computenode["status"]["dockerVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with("20.10")),
        "{}",
        computenode["status"]
    );

    // alice signs in through the installed web front and Keycloak, and requests a server.
    let driver = ChromeDriver::start();
    let browser = driver.session("alice").await;
    browser.goto(&web).await.unwrap();
    sign_in(&browser, "alice").await;
    assert_eq!(text(&browser, "span.user").await, "alice");
    let alice_ssh = SshUser::new("alice");
    let command = request_in_browser(&browser, &web, "lab", &alice_ssh.public).await;
    assert_eq!(command, format!("ssh -J alice@{bastion} root@lab"));
    let server = cluster.server("lab");
    assert_eq!(server["status"]["node"], node);
    let container = server["status"]["containerID"].as_str().unwrap().to_string();

    // The command the page shows works: OpenSSH through the installed bastion's NodePort (once
    // the server's sshd listens, a moment after Running).
    let out = eventually("ssh -J through the bastion", 60, || {
        let out = alice_ssh.ssh(&[
            "-J",
            &format!("alice@{bastion}"),
            "root@lab",
            "hostname; echo kept >/home/note",
        ]);
        out.status.success().then_some(out)
    });
    assert_eq!(text_of(&out.stdout).trim(), "lab");

    // The browser terminal: the web pod reaches the bastion by its Service's DNS name.
    browser
        .goto(&format!("{web}/servers/lab/terminal"))
        .await
        .unwrap();
    terminal_connected(&browser, 60).await;
    type_and_wait(&browser, "cat /home/note", "the file written over SSH", |l| {
        (l == "kept").then_some(())
    })
    .await;
    screenshot(&browser, "cluster-3-terminal").await;

    // kubectl as alice, through Keycloak: a server of her own, and not one for bob.
    let alice = Alice::sign_in(&cluster).await;
    let out = alice.kubectl(&["apply", "-f", "-"], &server_manifest("mine", "alice"));
    assert!(out.status.success(), "{}", text_of(&out.stderr));
    let out = alice.kubectl(&["apply", "-f", "-"], &server_manifest("bobs", "bob"));
    assert!(!out.status.success());
    assert!(
        text_of(&out.stderr).contains("spec.owner must be your own user name"),
        "{}",
        text_of(&out.stderr)
    );
    cluster.wait_running("mine", 120);
    drop(alice);

    // Day two. alice keeps an SSH session open through everything that follows.
    let mut session = Session::open(&alice_ssh, &bastion, "lab");

    // The CRDs come from the new version on each upgrade, before anything else: a CRD changed
    // by hand is put back.
    cluster.kubectl_ok(
        &[
            "patch",
            "crd",
            "computeservers.computeserver.io",
            "--type=json",
            "-p",
            r#"[{"op": "remove", "path": "/spec/versions/0/additionalPrinterColumns/0"}]"#,
        ],
        None,
    );
    let columns = |c: &Cluster| {
        let crd = c.json(&["get", "crd", "computeservers.computeserver.io"]);
        crd["spec"]["versions"][0]["additionalPrinterColumns"]
            .as_array()
            .unwrap()
            .len()
    };
    let changed = columns(&cluster);

    // helm upgrade with a changed value rolls every role; the server runs on, the session holds.
    cluster.install_chart(
        "helm upgrade (logLevel) to every pod Ready",
        &["--set", "logLevel=debug"],
    );
    let second = cluster.all_ready();
    for (role, name, uid, ..) in &first {
        assert!(
            !second.iter().any(|p| &p.2 == uid),
            "{role} pod {name} was not replaced by the upgrade"
        );
    }
    assert_eq!(
        columns(&cluster),
        changed + 1,
        "the pre-upgrade Job applied this version's CRD"
    );
    session.echo("after the first upgrade");
    assert_eq!(cluster.server("lab")["status"]["containerID"], container.as_str());

    // The agent's DaemonSet rolls one node at a time.
    let ds = cluster.json(&["get", "daemonset", "-n", NS, "compute-server-agent"]);
    assert_eq!(ds["spec"]["updateStrategy"]["type"], "RollingUpdate");
    assert_eq!(ds["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"], 1);

    // helm upgrade with a new image tag (the same build, tagged anew and imported into the node).
    let version = env!("CARGO_PKG_VERSION");
    let tag = format!("{version}-next");
    let image = format!("computeserver/compute-server:{tag}");
    let docker_host = Stack::get().docker_host().to_string();
    let tagged = Command::new("docker")
        .args(["tag", &format!("computeserver/compute-server:{version}"), &image])
        .env("DOCKER_HOST", &docker_host)
        .status()
        .unwrap();
    assert!(tagged.success());
    script(
        "cluster.sh",
        &["import-image", STATE, &image],
        &[("DOCKER_HOST", &docker_host)],
    );
    cluster.install_chart(
        "helm upgrade (image tag) to every pod Ready",
        &["--reuse-values", "--set", &format!("image.tag={tag}")],
    );
    let third = cluster.all_ready();
    assert!(
        third.iter().all(|p| p.3 == image),
        "every pod runs {image}: {third:?}"
    );
    session.echo("after the second upgrade");
    assert_eq!(cluster.server("lab")["status"]["containerID"], container.as_str());
    drop(session);

    // helm uninstall, then helm install: the servers and their data are adopted, the bastion
    // keeps its host key (alice's known_hosts still holds), people stay signed in.
    let started = Instant::now();
    cluster.helm(&["uninstall", "compute-server", "-n", NS, "--wait"]);
    println!(
        "cluster: helm uninstall in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    assert!(cluster.pods().is_empty());
    assert_eq!(cluster.server("lab")["status"]["containerID"], container.as_str());
    cluster.install_chart("helm install again to every pod Ready", &[]);
    cluster.all_ready();
    alice_ssh.write_config("yes", "");
    let out = eventually("ssh through the reinstalled bastion", 60, || {
        let out = alice_ssh.ssh(&["-J", &format!("alice@{bastion}"), "root@lab", "cat /home/note"]);
        out.status.success().then_some(out)
    });
    assert_eq!(text_of(&out.stdout).trim(), "kept");
    assert_eq!(
        cluster.wait_running("lab", 60)["status"]["containerID"],
        container.as_str()
    );
    browser.goto(&format!("{web}/servers/lab")).await.unwrap();
    assert_eq!(text(&browser, "span.user").await, "alice", "still signed in");

    // The host reboots: its Docker engine, containerd, the kubelet and every pod stop, then
    // start. The server comes back by itself, with its data, and an Event says why.
    let started = Instant::now();
    drop(cluster);
    let cluster = Cluster::start();
    let back = cluster.wait_running("lab", 240);
    println!(
        "cluster: reboot to the server Running again in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(back["status"]["containerID"], container.as_str());
    let events = cluster.events("lab");
    assert!(
        events.contains("HostRestarted") && events.contains("the node's Docker engine restarted"),
        "{events}"
    );
    assert!(!events.contains("stopped outside compute-server"), "{events}");
    let note = cluster.docker(&["exec", &container, "cat", "/home/note"]);
    assert_eq!(text_of(&note.stdout).trim(), "kept");
    cluster.all_ready();
    let out = eventually("ssh after the reboot", 60, || {
        let out = alice_ssh.ssh(&["-J", &format!("alice@{bastion}"), "root@lab", "hostname"]);
        out.status.success().then_some(out)
    });
    assert_eq!(text_of(&out.stdout).trim(), "lab");
    drop(browser);

    // kubectl apply -k manifests/ on a fresh cluster, as README "With kubectl" says: the same
    // pods Ready, and a server Running.
    drop(cluster);
    script("cluster.sh", &["reset", STATE], &[]);
    let cluster = Cluster::start();
    let started = Instant::now();
    apply_manifests(&cluster);
    cluster.all_ready();
    println!(
        "cluster: kubectl apply -k to every pod Ready in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    let examples = concat!(env!("CARGO_MANIFEST_DIR"), "/manifests/examples/profiles.yaml");
    cluster.kubectl_ok(&["apply", "-f", examples], None);
    cluster.kubectl_ok(&["apply", "-f", "-"], Some(&server_manifest("plain", "alice")));
    cluster.wait_running("plain", 120);

    // tofu apply of terraform/examples/cluster on a fresh cluster: the same pods Ready.
    drop(cluster);
    script("cluster.sh", &["reset", STATE], &[]);
    let cluster = Cluster::start();
    let started = Instant::now();
    admin_keys(&cluster);
    let copy = Path::new(STATE).join("terraform");
    let _ = std::fs::remove_dir_all(&copy);
    let copied = Command::new("cp")
        .arg("-r")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/terraform"))
        .arg(&copy)
        .status()
        .unwrap();
    assert!(copied.success());
    let example = copy.join("examples/cluster");
    let chdir = format!("-chdir={}", example.display());
    script("tofu.sh", &[&chdir, "init", "-input=false"], &[]);
    let vars = [
        format!("kubeconfig={}", cluster.var("KUBECONFIG")),
        format!("keycloak_url={}", cluster.var("KEYCLOAK_URL")),
        format!("web_public_url={}", cluster.var("WEB_URL")),
        format!("bastion_address={}", cluster.var("BASTION_ADDRESS")),
        format!(
            "docker_socket={}",
            cluster.var("NODE_DOCKER_HOST").trim_start_matches("unix://")
        ),
        "web_node_port=30080".to_string(),
        "bastion_node_port=30022".to_string(),
    ];
    let mut apply = vec![chdir.as_str(), "apply", "-auto-approve", "-input=false"];
    for var in &vars {
        apply.extend(["-var", var]);
    }
    script("tofu.sh", &apply, &[]);
    cluster.all_ready();
    println!(
        "cluster: tofu apply to every pod Ready in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    cluster.kubectl_ok(&["apply", "-f", examples], None);
    cluster.kubectl_ok(&["apply", "-f", "-"], Some(&server_manifest("planned", "alice")));
    cluster.wait_running("planned", 120);
    let web = reqwest::get(cluster.var("WEB_URL")).await.unwrap();
    assert!(web.status().is_success(), "{}", web.status());
    drop(cluster);
}

/// What an admin makes before an install without Helm (README "With kubectl", "Terraform"): the
/// namespace and the two keys plain objects cannot make.
fn admin_keys(cluster: &Cluster) {
    let dir = Path::new(STATE).join("keys");
    std::fs::create_dir_all(&dir).unwrap();
    cluster.kubectl_ok(&["create", "namespace", NS], None);
    let key = dir.join("host_key");
    let _ = std::fs::remove_file(&key);
    let _ = std::fs::remove_file(key.with_extension("pub"));
    let made = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(made.success());
    let session_key = {
        use base64::Engine;
        let bytes: Vec<u8> = (0..64).map(|_| rand::random::<u8>()).collect();
        base64::engine::general_purpose::STANDARD.encode(bytes)
    };
    for args in [
        [
            "compute-server-web-session".to_string(),
            format!("--from-literal=session-key={session_key}"),
        ],
        [
            "compute-server-bastion-host-key".to_string(),
            format!("--from-file=ssh_host_ed25519_key={}", key.display()),
        ],
    ] {
        cluster.kubectl_ok(
            &["-n", NS, "create", "secret", "generic", &args[0], &args[1]],
            None,
        );
    }
}

/// What an admin does for `kubectl apply -k` (README "With kubectl"): the namespace and the two
/// keys, then an overlay of manifests/ with this site's addresses.
fn apply_manifests(cluster: &Cluster) {
    admin_keys(cluster);
    let dir = Path::new(STATE).join("overlay");
    std::fs::create_dir_all(&dir).unwrap();
    // The overlay sits in target/test-cluster, two folders below manifests/.
    let kustomization = format!(
        r#"resources: [../../../manifests]
patches:
  - patch: |
      apiVersion: apps/v1
      kind: Deployment
      metadata: {{name: compute-server-web, namespace: compute}}
      spec:
        template:
          spec:
            containers:
              - name: web
                env:
                  - {{name: COMPUTE_SERVER_OIDC_ISSUER, value: "{issuer}"}}
                  - {{name: COMPUTE_SERVER_PUBLIC_URL, value: "{web}"}}
                  - {{name: COMPUTE_SERVER_BASTION_ADDRESS, value: "{bastion}"}}
  - patch: |
      apiVersion: v1
      kind: Service
      metadata: {{name: compute-server-web, namespace: compute}}
      spec:
        type: NodePort
        ports: [{{name: http, port: 8080, nodePort: 30080}}]
  - patch: |
      apiVersion: v1
      kind: Service
      metadata: {{name: compute-server-bastion, namespace: compute}}
      spec:
        type: NodePort
        ports: [{{name: ssh, port: 2222, nodePort: 30022}}]
  - patch: |
      apiVersion: apps/v1
      kind: DaemonSet
      metadata: {{name: compute-server-agent, namespace: compute}}
      spec:
        template:
          spec:
            volumes:
              - {{name: docker-socket, hostPath: {{path: "{socket}", type: Socket}}}}
"#,
        issuer = cluster.var("KEYCLOAK_ISSUER"),
        web = cluster.var("WEB_URL"),
        bastion = cluster.var("BASTION_ADDRESS"),
        socket = cluster.var("NODE_DOCKER_HOST").trim_start_matches("unix://"),
    );
    std::fs::write(dir.join("kustomization.yaml"), kustomization).unwrap();
    cluster.kubectl_ok(&["apply", "-k", dir.to_str().unwrap()], None);
}
