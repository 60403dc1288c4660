//! The SSH bastion with the real OpenSSH client, the real apiserver and real Debian containers
//! with sshd, run by a real agent: what a person typing `ssh -J` sees.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use serde_json::Value;
use support::{
    Agent, Bastion, SshUser, TestNamespace, eventually, install_crds, kubectl, kubectl_ok, unique,
};

/// Applies a ComputeServer of `owner`, pinned to `node` (no scheduler needed), with `spec` lines.
fn apply_server(ns: &str, name: &str, node: &str, owner: &str, spec: &str) {
    let yaml = format!(
        "apiVersion: computeserver.io/v1alpha1\nkind: ComputeServer\nmetadata:\n  name: {name}\n  namespace: {ns}\n  \
         labels: {{computeserver.io/node: {node}, computeserver.io/owner: {owner}}}\nspec:\n  owner: {owner}\n{}",
        spec.lines().map(|l| format!("  {l}\n")).collect::<String>()
    );
    kubectl_ok(&["apply", "-f", "-"], Some(&yaml));
}

/// A Debian server with sshd that accepts `public`.
fn debian(public: &str) -> String {
    format!("profile: debian\nsshAuthorizedKeys: [\"{public}\"]")
}

fn wait_phase(ns: &str, name: &str, phase: &str) -> Value {
    eventually(&format!("{name} to be {phase}"), 90, || {
        let out = kubectl(&["get", "csrv", "-n", ns, name, "-o", "json"], None);
        let server: Value = serde_json::from_slice(&out.stdout).ok()?;
        (server["status"]["phase"] == phase).then_some(server)
    })
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl SshUser {
    /// `ssh -J NAME@127.0.0.1:PORT root@TARGET COMMAND`, as the README tells people.
    fn jump_command(&self, bastion: &Bastion, target: &str, command: &str) -> Command {
        let jump = format!("{}@127.0.0.1:{}", self.name, bastion.port);
        self.command(&["-J", &jump, &format!("root@{target}"), command])
    }

    fn jump(&self, bastion: &Bastion, target: &str, command: &str) -> Output {
        self.jump_command(bastion, target, command)
            .output()
            .expect("run ssh")
    }
}

/// The bastion's metric `name` with `labels`, e.g. `jumps_total` and `{outcome="accepted"}`.
fn metric(bastion: &Bastion, name: &str, labels: &str) -> f64 {
    let out = Command::new("curl")
        .args(["-sf", &format!("{}/metrics", bastion.health_url)])
        .output()
        .expect("curl");
    let text = stdout(&out);
    let series = format!("compute_server_bastion_{name}{labels} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&series))
        .map_or(0.0, |value| value.trim().parse().unwrap())
}

/// The bastion's audit lines (JSON, target `audit`) for `event`.
fn audit(ns: &str, event: &str) -> Vec<Value> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/target/test-logs/bastion-").to_string() + ns + ".log";
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["target"] == "audit" && line["fields"]["event"] == event)
        .map(|line| line["fields"].clone())
        .collect()
}

#[test]
fn alice_reaches_her_server_through_the_bastion_twenty_at_once_and_not_once_it_is_stopped() {
    install_crds();
    let ns = TestNamespace::new("bastion-jump");
    let alice = SshUser::new("alice");
    // Started before the server exists: the bastion learns of it from its watch.
    let bastion = Bastion::start(&ns.name, &alice.dir.path().join("bastion_host_key"));
    let agent = Agent::start(&unique("node"));
    apply_server(&ns.name, "dev", &agent.node, "alice", &debian(&alice.public));
    wait_phase(&ns.name, "dev", "Running");

    let out = eventually("ssh -J to reach dev", 30, || {
        let out = alice.jump(&bastion, "dev", "hostname; id -un");
        out.status.success().then_some(out)
    });
    assert_eq!(stdout(&out), "dev\nroot\n");
    let accepted = metric(&bastion, "jumps_total", "{outcome=\"accepted\"}");
    assert!(accepted >= 1.0);

    // The same through ProxyJump in ~/.ssh/config, and with the server's namespace spelled out.
    let proxy_jump = format!(
        "Host mydev\n  HostName dev.{}\n  User root\n  ProxyJump alice@127.0.0.1:{}",
        ns.name, bastion.port
    );
    alice.write_config("accept-new", &proxy_jump);
    let out = alice.ssh(&["mydev", "echo via ProxyJump"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "via ProxyJump\n");

    // 20 sessions open at the same time: each says "started", then waits for a line on its
    // stdin and echoes it. Nobody gets a line before all 20 have started. They are opened five
    // at a time: the container's sshd drops handshakes beyond ten at once (MaxStartups 10).
    let mut sessions = vec![];
    for _batch in 0..4 {
        let batch: Vec<_> = (0..5)
            .map(|_| {
                alice
                    .jump_command(&bastion, "dev", "echo started; read line; echo $line")
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for mut child in batch {
            let mut stdout = BufReader::new(child.stdout.take().unwrap());
            let mut line = String::new();
            stdout.read_line(&mut line).unwrap();
            if line != "started\n" {
                let mut err = String::new();
                child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
                panic!("a concurrent session did not start: {err}");
            }
            sessions.push((child, stdout));
        }
    }
    assert_eq!(metric(&bastion, "open_jumps", ""), 20.0, "20 jumps open at once");
    for (n, (child, _)) in sessions.iter_mut().enumerate() {
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(format!("session {n} done\n").as_bytes()).unwrap();
    }
    for (n, (child, mut stdout)) in sessions.into_iter().enumerate() {
        let mut rest = String::new();
        stdout.read_to_string(&mut rest).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "session {n}: {}", stderr(&out));
        assert_eq!(
            rest,
            format!("session {n} done\n"),
            "each session carries its own bytes"
        );
    }
    assert_eq!(
        metric(&bastion, "jumps_total", "{outcome=\"accepted\"}"),
        accepted + 21.0,
        "one jump counted per session"
    );

    kubectl_ok(
        &[
            "patch",
            "csrv",
            "dev",
            "-n",
            &ns.name,
            "--type=merge",
            "-p",
            r#"{"spec":{"running":false}}"#,
        ],
        None,
    );
    wait_phase(&ns.name, "dev", "Stopped");
    let out = alice.jump(&bastion, "dev", "true");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("server dev is stopped; start it first"),
        "{}",
        stderr(&out)
    );
    assert_eq!(metric(&bastion, "jumps_total", "{outcome=\"refused\"}"), 1.0);
    drop(agent);
}

#[test]
fn the_bastion_refuses_others_servers_other_hosts_shells_and_unknown_keys_and_says_why() {
    install_crds();
    let ns = TestNamespace::new("bastion-refuse");
    let agent = Agent::start(&unique("node"));
    let (alice, bob) = (SshUser::new("alice"), SshUser::new("bob"));
    apply_server(&ns.name, "dev", &agent.node, "alice", &debian(&alice.public));
    apply_server(&ns.name, "bobs", &agent.node, "bob", &debian(&bob.public));
    let bastion = Bastion::start(&ns.name, &alice.dir.path().join("bastion_host_key"));
    wait_phase(&ns.name, "dev", "Running");
    wait_phase(&ns.name, "bobs", "Running");

    // bob reaches his server: what alice is refused below is the bastion's decision.
    let out = eventually("bob to reach bobs", 30, || {
        let out = bob.jump(&bastion, "bobs", "hostname");
        out.status.success().then_some(out)
    });
    assert_eq!(stdout(&out), "bobs\n");

    // Another user's server gets the same answer as one that does not exist.
    let out = alice.jump(&bastion, "bobs", "hostname");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("open failed: administratively prohibited: no server named bobs of yours"),
        "{}",
        stderr(&out)
    );
    let out = alice.jump(&bastion, "nosuch", "hostname");
    assert!(
        stderr(&out).contains("no server named nosuch of yours"),
        "{}",
        stderr(&out)
    );

    // An arbitrary host:port, here one that really listens (the bastion's own metrics port).
    let metrics_port = bastion.health_url.rsplit_once(':').unwrap().1;
    let jump = format!("alice@127.0.0.1:{}", bastion.port);
    let out = alice.ssh(&["-J", &jump, "-p", metrics_port, "root@127.0.0.1", "true"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no server named 127.0.0.1 of yours"),
        "{}",
        stderr(&out)
    );
    let out = alice.ssh(&["-J", &jump, "-p", "80", "root@dev", "true"]);
    assert!(
        stderr(&out).contains("server dev is reachable on port 22 (ssh) only, not on port 80"),
        "{}",
        stderr(&out)
    );

    // A shell or a command on the bastion itself: refused, with the command to use instead.
    let port = bastion.port.to_string();
    for command in [vec![], vec!["ls", "/"]] {
        let mut args = vec!["-p", &port, "alice@127.0.0.1"];
        args.extend(command);
        let out = alice.ssh(&args);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(stdout(&out).is_empty());
        assert!(
            stderr(&out).contains("this is a jump host: it runs no shells or commands.")
                && stderr(&out).contains(&format!(
                    "Reach your server with: ssh -J alice@127.0.0.1:{port} root@SERVER"
                )),
            "{}",
            stderr(&out)
        );
    }
    // Port forwarding from the bastion itself.
    let out = alice.ssh(&[
        "-p",
        &port,
        "-N",
        "-o",
        "ExitOnForwardFailure=yes",
        "-R",
        "0:127.0.0.1:22",
        "alice@127.0.0.1",
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("remote port forwarding failed"),
        "{}",
        stderr(&out)
    );

    // A key in none of alice's servers, and alice's key under a name that owns nothing.
    let stranger = SshUser::new("alice");
    let out = stranger.jump(&bastion, "dev", "true");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("alice@127.0.0.1: Permission denied (publickey)"),
        "{}",
        stderr(&out)
    );
    let mallory = SshUser {
        name: "mallory".into(),
        ..alice
    };
    let out = mallory.jump(&bastion, "dev", "true");
    assert!(
        stderr(&out).contains("mallory@127.0.0.1: Permission denied (publickey)"),
        "{}",
        stderr(&out)
    );

    // The audit log: who, with which key, where to, what happened; no key material.
    let jumps = audit(&ns.name, "jump");
    let refused = jumps
        .iter()
        .find(|j| j["target"] == "\"bobs:22\"" && j["user"] == "\"alice\"")
        .expect("an audit line for alice's jump to bobs");
    assert_eq!(refused["outcome"], "refused");
    assert_eq!(refused["user"], "\"alice\"");
    assert!(refused["key"].as_str().unwrap().starts_with("SHA256:"));
    assert_eq!(refused["reason"], "no server named bobs of yours");
    let auths = audit(&ns.name, "auth");
    assert!(
        auths
            .iter()
            .any(|a| a["outcome"] == "refused" && a["user"] == "\"mallory\"")
    );
    let log = std::fs::read_to_string(
        concat!(env!("CARGO_MANIFEST_DIR"), "/target/test-logs/bastion-").to_string() + &ns.name + ".log",
    )
    .unwrap();
    assert!(!log.contains("PRIVATE KEY"));
    let alice_key_data = mallory.public.split(' ').nth(1).unwrap();
    assert!(
        !log.contains(alice_key_data),
        "keys are logged by fingerprint only"
    );
    assert!(metric(&bastion, "auths_total", "{outcome=\"refused\"}") >= 2.0);
}

#[test]
fn the_bastion_host_key_is_the_same_after_a_restart() {
    install_crds();
    let ns = TestNamespace::new("bastion-hostkey");
    let alice = SshUser::new("alice");
    // The key alone lets alice log in to the bastion; the server need not run for that.
    apply_server(&ns.name, "dev", "nowhere", "alice", &debian(&alice.public));
    let host_key = alice.dir.path().join("bastion_host_key");
    let mut bastion = Bastion::start(&ns.name, &host_key);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&host_key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let port = bastion.port.to_string();
    let keyscan = || {
        let out = Command::new("ssh-keyscan")
            .args(["-p", &port, "-t", "ed25519", "127.0.0.1"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out)
    };
    let before = keyscan();
    assert!(before.contains("ssh-ed25519 AAAA"), "{before}");
    let login = || alice.ssh(&["-p", &port, "alice@127.0.0.1", "true"]);
    let out = login();
    assert!(stderr(&out).contains("this is a jump host"), "{}", stderr(&out));

    bastion.restart();
    assert_eq!(keyscan(), before);
    alice.write_config("yes", "");
    let out = login();
    assert!(
        stderr(&out).contains("this is a jump host"),
        "the key in known_hosts still fits: {}",
        stderr(&out)
    );

    // The check above can fail: a bastion with a new key is caught by the same client.
    std::fs::remove_file(&host_key).unwrap();
    bastion.restart();
    assert_ne!(keyscan(), before);
    let out = login();
    assert!(
        stderr(&out).contains("REMOTE HOST IDENTIFICATION HAS CHANGED"),
        "{}",
        stderr(&out)
    );
}

/// Percentile `p` (0..=100) of sorted `values`.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank]
}

/// Time from starting `ssh` to the first byte of the command's output.
fn time_to_first_byte(mut cmd: Command) -> f64 {
    use std::io::Read;
    let started = Instant::now();
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut byte = [0u8; 1];
    let n = child.stdout.as_mut().unwrap().read(&mut byte).unwrap();
    let elapsed = started.elapsed().as_secs_f64() * 1000.0;
    let out = child.wait_with_output().unwrap();
    assert!(n == 1 && out.status.success(), "{}", stderr(&out));
    elapsed
}

fn summary(label: &str, mut ms: Vec<f64>) -> f64 {
    ms.sort_by(f64::total_cmp);
    let (p50, p99) = (percentile(&ms, 50.0), percentile(&ms, 99.0));
    println!(
        "{label:<44} p50 {p50:7.1} ms   p99 {p99:7.1} ms   min {:7.1} ms   max {:7.1} ms",
        ms[0],
        ms[ms.len() - 1]
    );
    p50
}

/// `make bench-bastion`: time to first byte of `echo` through the bastion versus straight to
/// the container's published port, BENCH_RUNS times each (default 30), interleaved.
#[test]
#[ignore = "benchmark: run with `make bench BENCH=bastion`"]
fn bench_time_to_first_byte_through_the_bastion_versus_direct() {
    let runs: usize = std::env::var("BENCH_RUNS").map_or(30, |n| n.parse().unwrap());
    install_crds();
    let ns = TestNamespace::new("bastion-bench");
    let alice = SshUser::new("alice");
    let agent = Agent::start(&unique("node"));
    apply_server(&ns.name, "dev", &agent.node, "alice", &debian(&alice.public));
    let bastion = Bastion::start(&ns.name, &alice.dir.path().join("bastion_host_key"));
    let server = wait_phase(&ns.name, "dev", "Running");
    let endpoint = &server["status"]["endpoints"][0];
    let (host, port) = (
        endpoint["host"].as_str().unwrap().to_string(),
        endpoint["port"].as_i64().unwrap().to_string(),
    );
    let direct = || alice.command(&["-p", &port, &format!("root@{host}"), "echo x"]);
    let jump = || alice.jump_command(&bastion, "dev", "echo x");
    // Warm up: host keys into known_hosts, sshd and caches awake.
    eventually("direct ssh", 30, || {
        direct().output().unwrap().status.success().then_some(())
    });
    eventually("ssh -J", 30, || {
        jump().output().unwrap().status.success().then_some(())
    });

    // The same jump with a persistent connection to the bastion (ControlMaster), as in the
    // README's tip: only the hop to the server is new each time.
    let mux_config = alice.dir.path().join("config-mux");
    let control = format!(
        "Host 127.0.0.1\n  ControlMaster auto\n  ControlPath {}/cm-%C\n  ControlPersist 120\n",
        alice.dir.path().display()
    );
    std::fs::write(
        &mux_config,
        control + &std::fs::read_to_string(alice.config()).unwrap(),
    )
    .unwrap();
    let jump_spec = format!("alice@127.0.0.1:{}", bastion.port);
    let mux = || {
        let mut cmd = Command::new("ssh");
        cmd.arg("-F").arg(&mux_config);
        cmd.args(["-J", &jump_spec, "root@dev", "echo x"])
            .stdin(Stdio::null());
        cmd
    };
    mux().output().unwrap();

    // Interleaved, so that load from elsewhere on the machine hits all three alike.
    let (mut direct_ms, mut jump_ms, mut mux_ms) = (vec![], vec![], vec![]);
    for _ in 0..runs {
        direct_ms.push(time_to_first_byte(direct()));
        jump_ms.push(time_to_first_byte(jump()));
        mux_ms.push(time_to_first_byte(mux()));
    }
    let bastion_port = bastion.port.to_string();
    let mut exit = Command::new("ssh");
    exit.arg("-F").arg(&mux_config);
    let _ = exit
        .args(["-O", "exit", "-p", &bastion_port, "alice@127.0.0.1"])
        .output();

    println!("\ntime to first byte of `ssh ... echo x`, {runs} runs each:");
    let d = summary("direct to the published port", direct_ms);
    let j = summary("through the bastion (ssh -J)", jump_ms);
    let m = summary("through the bastion, ControlMaster to it", mux_ms);
    println!(
        "ratio of p50s: ssh -J / direct = {:.2}, with ControlMaster = {:.2}",
        j / d,
        m / d
    );
    println!(
        "\nbastion: runs={runs} direct_p50_ms={d:.1} jump_p50_ms={j:.1} controlmaster_p50_ms={m:.1} ratio={:.2}",
        j / d
    );
    drop(agent);
}

#[test]
fn a_host_key_kept_in_a_secret_is_made_once_and_served_after_a_restart() {
    install_crds();
    let ns = TestNamespace::new("bastion-secret");
    let mut bastion = Bastion::start_with(&ns.name, &["--host-key-secret".into(), "bastion-host-key".into()]);
    let port = bastion.port.to_string();
    let keyscan = || {
        let out = Command::new("ssh-keyscan")
            .args(["-p", &port, "-t", "ed25519", "127.0.0.1"])
            .output()
            .unwrap();
        stdout(&out).split_once(' ').unwrap().1.trim().to_string()
    };
    let served = keyscan();

    // The Secret holds the private key the bastion serves: its public half is what clients see.
    let secret: Value = serde_json::from_str(&kubectl_ok(
        &["get", "secret", "-n", &ns.name, "bastion-host-key", "-o", "json"],
        None,
    ))
    .unwrap();
    assert_eq!(
        secret["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "compute-server"
    );
    let encoded = secret["data"]["ssh_host_ed25519_key"].as_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let private = dir.path().join("key");
    let decoded = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, encoded).unwrap();
    std::fs::write(&private, decoded).unwrap();
    std::fs::set_permissions(&private, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let public = Command::new("ssh-keygen")
        .arg("-y")
        .arg("-f")
        .arg(&private)
        .output()
        .unwrap();
    assert_eq!(stdout(&public).trim(), served);

    bastion.restart();
    assert_eq!(keyscan(), served, "the same key after a restart");
}

/// Signs `user`'s key with the CA key `ca` for `principal`, valid for `validity` (ssh-keygen -V).
fn sign(user: &SshUser, ca: &std::path::Path, principal: &str, validity: &str) {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-s"])
        .arg(ca)
        .args([
            "-I",
            &format!("{principal} via web"),
            "-n",
            principal,
            "-V",
            validity,
        ])
        .arg(user.dir.path().join("id_ed25519.pub"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn a_certificate_from_the_trusted_ca_admits_its_user_without_a_registered_key() {
    install_crds();
    let ns = TestNamespace::new("bastion-cert");
    let cas = tempfile::tempdir().unwrap();
    let (ca, ca_public) = support::ssh_keypair(cas.path(), "user-ca");
    let ca_file = cas.path().join("user_ca_keys");
    std::fs::write(&ca_file, format!("# the web front's CA\n{ca_public}\n")).unwrap();
    let rogue = tempfile::tempdir().unwrap();
    let (rogue_ca, _) = support::ssh_keypair(rogue.path(), "rogue-ca");
    let flags = [
        "--host-key-file".to_string(),
        cas.path().join("host_key").display().to_string(),
        "--user-ca-keys".to_string(),
        ca_file.display().to_string(),
    ];
    // alice logs in with a registered key, as before; carol has no server and no key anywhere.
    let alice = SshUser::new("alice");
    apply_server(&ns.name, "dev", "nowhere", "alice", &debian(&alice.public));
    let bastion = Bastion::start_with(&ns.name, &flags);
    let port = bastion.port.to_string();
    let login = |user: &SshUser, name: &str| user.ssh(&["-p", &port, &format!("{name}@127.0.0.1"), "true"]);

    let out = login(&alice, "alice");
    assert!(stderr(&out).contains("this is a jump host"), "{}", stderr(&out));

    let carol = SshUser::new("carol");
    let out = login(&carol, "carol");
    assert!(
        stderr(&out).contains("Permission denied (publickey)"),
        "{}",
        stderr(&out)
    );
    sign(&carol, &ca, "carol", "-5m:+1h");
    let out = login(&carol, "carol");
    assert!(
        stderr(&out).contains("this is a jump host"),
        "carol's certificate lets her in: {}",
        stderr(&out)
    );
    // The certificate is for carol only.
    let out = login(&carol, "alice");
    assert!(
        stderr(&out).contains("Permission denied (publickey)"),
        "{}",
        stderr(&out)
    );
    // Logged in, carol still reaches only servers of her own: alice's is not one.
    let out = carol.jump(&bastion, "dev", "true");
    assert!(
        stderr(&out).contains("no server named dev of yours"),
        "{}",
        stderr(&out)
    );

    // Expired, or signed by a CA the bastion does not trust: refused.
    let dave = SshUser::new("dave");
    sign(&dave, &ca, "dave", "20200101:20200102");
    let out = login(&dave, "dave");
    assert!(
        stderr(&out).contains("Permission denied (publickey)"),
        "{}",
        stderr(&out)
    );
    let erin = SshUser::new("erin");
    sign(&erin, &rogue_ca, "erin", "-5m:+1h");
    let out = login(&erin, "erin");
    assert!(
        stderr(&out).contains("Permission denied (publickey)"),
        "{}",
        stderr(&out)
    );

    let auths = audit(&ns.name, "auth");
    let accepted = auths
        .iter()
        .find(|a| a["user"] == "\"carol\"" && a["outcome"] == "accepted")
        .expect("an audit line for carol's certificate");
    assert_eq!(accepted["certificate"], "\"carol via web\"");
    let reasons: Vec<&str> = auths.iter().filter_map(|a| a["reason"].as_str()).collect();
    assert!(reasons.contains(&"certificate is not for this user (not among its principals)"));
    // An expired certificate is turned away by russh before the bastion is asked; the key
    // inside it is then tried on its own, and that refusal is audited.
    assert!(
        auths
            .iter()
            .any(|a| a["user"] == "\"dave\"" && a["outcome"] == "refused")
    );
    assert!(reasons.contains(&"certificate signed by a CA not trusted here"));
}

#[test]
fn with_all_namespaces_a_name_used_twice_needs_its_namespace() {
    install_crds();
    let (one, two) = (
        TestNamespace::new("bastion-all"),
        TestNamespace::new("bastion-all"),
    );
    let alice = SshUser::new("alice");
    let name = unique("twin");
    apply_server(&one.name, &name, "nowhere", "alice", &debian(&alice.public));
    apply_server(&two.name, &name, "nowhere", "alice", &debian(&alice.public));
    let flags = [
        "--all-namespaces".to_string(),
        "--host-key-file".to_string(),
        alice.dir.path().join("host_key").display().to_string(),
    ];
    let bastion = Bastion::start_with(&one.name, &flags);

    let out = alice.jump(&bastion, &name, "true");
    let mut choices = [format!("{name}.{}", one.name), format!("{name}.{}", two.name)];
    choices.sort();
    let expected = format!(
        "you have servers named {name} in several namespaces: use one of {}",
        choices.join(", ")
    );
    assert!(stderr(&out).contains(&expected), "{}", stderr(&out));

    // Spelled out, the server is found; it has no node, so it is not running yet.
    let out = alice.jump(&bastion, &choices[1], "true");
    assert!(
        stderr(&out).contains(&format!(
            "server {} is not running yet (phase Pending); try again when it is Running",
            choices[1]
        )),
        "{}",
        stderr(&out)
    );
}

/// `kubectl patch csrv NAME --type=merge -p PATCH` as the admin.
fn patch_server(ns: &str, name: &str, patch: &str) {
    kubectl_ok(
        &["patch", "csrv", name, "-n", ns, "--type=merge", "-p", patch],
        None,
    );
}

#[test]
fn a_server_being_deleted_vouches_for_no_key() {
    install_crds();
    let ns = TestNamespace::new("bastion-going");
    let alice = SshUser::new("alice");
    apply_server(&ns.name, "dev", "nowhere", "alice", &debian(&alice.public));
    // A finalizer no one removes keeps the server in "being deleted" for the test.
    patch_server(
        &ns.name,
        "dev",
        r#"{"metadata":{"finalizers":["test.computeserver.io/hold"]}}"#,
    );
    let bastion = Bastion::start(&ns.name, &alice.dir.path().join("host_key"));
    let port = bastion.port.to_string();
    let login = || alice.ssh(&["-p", &port, "alice@127.0.0.1", "true"]);
    let out = login();
    assert!(stderr(&out).contains("this is a jump host"), "{}", stderr(&out));

    kubectl_ok(&["delete", "csrv", "dev", "-n", &ns.name, "--wait=false"], None);
    eventually("alice's key to stop working", 10, || {
        let out = login();
        stderr(&out)
            .contains("Permission denied (publickey)")
            .then_some(())
    });
    patch_server(&ns.name, "dev", r#"{"metadata":{"finalizers":null}}"#);
}

/// A master connection to the bastion that later `ssh -S SOCKET` commands share (ControlMaster,
/// as the README's ~/.ssh/config has it); closed when dropped.
struct Master {
    child: std::process::Child,
    socket: PathBuf,
    /// What the master prints: the reasons of refused jumps go there, not to the command.
    log: PathBuf,
}

impl Master {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl SshUser {
    /// Opens a master connection to `bastion` as `login`.
    fn master(&self, bastion: &Bastion, login: &str) -> Master {
        let socket = self.dir.path().join(format!("{login}.sock"));
        let log = self.dir.path().join(format!("{login}.log"));
        let port = bastion.port.to_string();
        let child = self
            .command(&["-M", "-S", socket.to_str().unwrap(), "-N", "-p", &port])
            .arg(format!("{login}@127.0.0.1"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let master = Master { child, socket, log };
        eventually("the master connection", 10, || {
            let out = self.ssh(&["-S", master.socket.to_str().unwrap(), "-O", "check", "x"]);
            out.status.success().then_some(())
        });
        master
    }

    /// A jump to `target` over `master` (`ssh -W`, what -J runs): what the master printed of it.
    fn jump_over(&self, master: &Master, target: &str) -> String {
        let before = master.log().len();
        let socket = master.socket.to_str().unwrap();
        let out = self.ssh(&["-S", socket, "-W", &format!("{target}:22"), "x"]);
        assert!(!out.status.success(), "no server here answers");
        master.log()[before..].to_string()
    }
}

#[test]
fn each_jump_on_an_open_connection_checks_the_login_again() {
    install_crds();
    let ns = TestNamespace::new("bastion-again");
    let cas = tempfile::tempdir().unwrap();
    let (ca, ca_public) = support::ssh_keypair(cas.path(), "user-ca");
    let ca_file = cas.path().join("user_ca_keys");
    std::fs::write(&ca_file, format!("{ca_public}\n")).unwrap();
    let flags = [
        "--host-key-file".to_string(),
        cas.path().join("host_key").display().to_string(),
        "--user-ca-keys".to_string(),
        ca_file.display().to_string(),
    ];
    let alice = SshUser::new("alice");
    apply_server(&ns.name, "dev", "nowhere", "alice", &debian(&alice.public));
    let bastion = Bastion::start_with(&ns.name, &flags);

    // A key: each jump over the open connection finds it registered, until it is not.
    let master = alice.master(&bastion, "alice");
    let said = alice.jump_over(&master, "dev");
    assert!(
        said.contains("server dev is not running yet"),
        "the key is good: {said}"
    );
    let other = SshUser::new("alice");
    patch_server(
        &ns.name,
        "dev",
        &format!(r#"{{"spec":{{"sshAuthorizedKeys":["{}"]}}}}"#, other.public),
    );
    eventually("the jump to be refused for the key", 10, || {
        alice
            .jump_over(&master, "dev")
            .contains("the key you logged in with is no longer in the sshAuthorizedKeys of a server of yours")
            .then_some(())
    });
    drop(master);

    // A certificate: good while valid, refused once it has expired.
    let carol = SshUser::new("carol");
    sign(&carol, &ca, "carol", "-1m:+8s");
    let signed = std::time::Instant::now();
    let master = carol.master(&bastion, "carol");
    let said = carol.jump_over(&master, "dev");
    assert!(
        said.contains("no server named dev of yours"),
        "the certificate is good: {said}"
    );
    std::thread::sleep(std::time::Duration::from_secs(10).saturating_sub(signed.elapsed()));
    let said = carol.jump_over(&master, "dev");
    assert!(
        said.contains("the certificate you logged in with is no longer good: certificate expired"),
        "{said}"
    );
    drop(master);
    let refused = audit(&ns.name, "jump")
        .into_iter()
        .filter(|j| j["outcome"] == "refused")
        .count();
    assert!(refused >= 4, "each refused jump is audited");
}

#[test]
fn a_certificate_without_port_forwarding_cannot_jump() {
    install_crds();
    let ns = TestNamespace::new("bastion-nofwd");
    let cas = tempfile::tempdir().unwrap();
    let (ca, ca_public) = support::ssh_keypair(cas.path(), "user-ca");
    let ca_file = cas.path().join("user_ca_keys");
    std::fs::write(&ca_file, format!("{ca_public}\n")).unwrap();
    let flags = [
        "--host-key-file".to_string(),
        cas.path().join("host_key").display().to_string(),
        "--user-ca-keys".to_string(),
        ca_file.display().to_string(),
    ];
    // carol's server holds another key of hers: she logs in with the certificate.
    let (carol, laptop) = (SshUser::new("carol"), SshUser::new("carol"));
    apply_server(&ns.name, "dev", "nowhere", "carol", &debian(&laptop.public));
    let bastion = Bastion::start_with(&ns.name, &flags);
    let out = Command::new("ssh-keygen")
        .args(["-q", "-s"])
        .arg(&ca)
        .args([
            "-I",
            "carol, no forwarding",
            "-n",
            "carol",
            "-V",
            "-5m:+1h",
            "-O",
            "no-port-forwarding",
        ])
        .arg(carol.dir.path().join("id_ed25519.pub"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    // Logged in with it (the bastion says what it is for), but no jump.
    let out = carol.ssh(&["-p", &bastion.port.to_string(), "carol@127.0.0.1", "true"]);
    assert!(stderr(&out).contains("this is a jump host"), "{}", stderr(&out));
    let out = carol.jump(&bastion, "dev", "true");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(
            "your certificate does not permit port forwarding (permit-port-forwarding), and a jump is one"
        ),
        "{}",
        stderr(&out)
    );
}

#[test]
fn an_idle_connection_ends_after_the_idle_timeout_and_a_busy_one_does_not() {
    install_crds();
    let ns = TestNamespace::new("bastion-idle");
    let alice = SshUser::new("alice");
    let agent = Agent::start(&unique("node"));
    apply_server(&ns.name, "dev", &agent.node, "alice", &debian(&alice.public));
    let flags = [
        "--host-key-file".to_string(),
        alice.dir.path().join("host_key").display().to_string(),
        "--idle-timeout".to_string(),
        "3s".to_string(),
    ];
    let bastion = Bastion::start_with(&ns.name, &flags);

    // Connected and doing nothing (ssh -N, as a ControlMaster waits): ended after 3 s.
    let started = Instant::now();
    let out = alice.ssh(&["-N", "-p", &bastion.port.to_string(), "alice@127.0.0.1"]);
    let lasted = started.elapsed().as_secs_f64();
    assert!((2.5..10.0).contains(&lasted), "ended after {lasted} s");
    assert!(stderr(&out).contains("idle for 3s"), "{}", stderr(&out));

    // A session through a jump that prints a line a second for 6 s is not idle.
    wait_phase(&ns.name, "dev", "Running");
    let out = eventually("ssh -J to reach dev", 30, || {
        let out = alice.jump(&bastion, "dev", "for i in 1 2 3 4 5 6; do echo $i; sleep 1; done");
        out.status.success().then_some(out)
    });
    assert_eq!(stdout(&out), "1\n2\n3\n4\n5\n6\n");
    drop(agent);
}

/// The server's `status.activity` entry of `source`, if there is one.
fn activity(ns: &str, name: &str, source: &str) -> Option<Value> {
    let out = kubectl(&["get", "csrv", "-n", ns, name, "-o", "json"], None);
    let server: Value = serde_json::from_slice(&out.stdout).ok()?;
    server["status"]["activity"]
        .as_array()?
        .iter()
        .find(|a| a["source"] == source)
        .cloned()
}

fn last_seen(entry: &Value) -> jiff::Timestamp {
    entry["lastSeen"].as_str().unwrap().parse().unwrap()
}

#[test]
fn an_open_quiet_jump_keeps_the_servers_ssh_activity_fresh_and_other_roles_entries_stay() {
    use jiff::{SignedDuration, Timestamp};
    install_crds();
    let ns = TestNamespace::new("bastion-activity");
    let alice = SshUser::new("alice");
    let agent = Agent::start(&unique("node"));
    apply_server(&ns.name, "dev", &agent.node, "alice", &debian(&alice.public));
    let bastion = Bastion::start(&ns.name, &alice.dir.path().join("bastion_host_key"));
    let server = wait_phase(&ns.name, "dev", "Running");
    // sshd answers (straight to its port, not through the bastion, which would count it).
    let endpoint = &server["status"]["endpoints"][0];
    let (host, port) = (endpoint["host"].as_str().unwrap(), endpoint["port"].to_string());
    eventually("sshd to answer", 30, || {
        let out = alice.ssh(&["-p", &port, &format!("root@{host}"), "true"]);
        out.status.success().then_some(())
    });
    // Another role's entry (the agent's cpu), under a field manager of its own.
    let cpu = format!(
        "apiVersion: computeserver.io/v1alpha1\nkind: ComputeServer\nmetadata: {{name: dev, namespace: {}}}\n\
         status: {{activity: [{{source: cpu, lastSeen: '2026-12-01T14:00:00Z', detail: 38% CPU}}]}}\n",
        ns.name
    );
    let apply = [
        "apply",
        "--server-side",
        "--subresource=status",
        "--field-manager=test-agent",
        "-f",
        "-",
    ];
    kubectl_ok(&apply, Some(&cpu));
    let cpu = activity(&ns.name, "dev", "cpu").unwrap();
    assert!(activity(&ns.name, "dev", "ssh").is_none(), "no session yet");

    // A session that is open and sends nothing: it waits for a line on its stdin.
    let mut child = alice
        .jump_command(&bastion, "dev", "echo started; read line; echo $line")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "started\n");
    let opened = Timestamp::now();
    let first = eventually("the ssh entry to appear", 10, || activity(&ns.name, "dev", "ssh"));
    assert_eq!(first["detail"], "1 SSH session");
    assert!(last_seen(&first) >= opened - SignedDuration::from_secs(2));
    let applied = || metric(&bastion, "activity_reports_total", "{outcome=\"applied\"}");
    assert_eq!(applied(), 1.0);

    // Quiet as it is, it is refreshed within a minute, and not sooner than 30 s after.
    let refreshed = eventually("the ssh entry to be refreshed", 70, || {
        activity(&ns.name, "dev", "ssh").filter(|entry| last_seen(entry) > last_seen(&first))
    });
    let gap = last_seen(&refreshed).duration_since(last_seen(&first)).as_secs();
    assert!((30..=60).contains(&gap), "refreshed after {gap} s");
    assert_eq!(refreshed["detail"], "1 SSH session");
    assert_eq!(applied(), 2.0);

    // Closed: reported once more, with the time it closed.
    child.stdin.take().unwrap().write_all(b"bye\n").unwrap();
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "bye\n");
    assert!(child.wait().unwrap().success());
    let closed = Timestamp::now();
    let last = eventually("the close to be reported", 40, || {
        activity(&ns.name, "dev", "ssh").filter(|entry| entry["detail"] == "0 SSH sessions")
    });
    let seen = last_seen(&last);
    assert!(
        seen >= closed - SignedDuration::from_secs(3) && seen <= closed,
        "last seen {seen}, closed at {closed}"
    );
    assert_eq!(applied(), 3.0);

    // Each entry has its own field manager, and the bastion's applies left the other alone.
    assert_eq!(activity(&ns.name, "dev", "cpu").unwrap(), cpu);
    let managers = support::activity_managers(&ns.name, "dev");
    assert_eq!(managers["ssh"], "compute-server-bastion");
    assert_eq!(managers["cpu"], "test-agent");
    drop(agent);
}

#[test]
fn an_open_ssh_session_keeps_an_idle_server_running_and_it_stops_once_closed() {
    use jiff::{SignedDuration, Timestamp};
    install_crds();
    let ns = TestNamespace::new("bastion-idle");
    let alice = SshUser::new("alice");
    // A Debian profile that stops servers after a minute without use; the scheduler's
    // lifecycle controller does it, the bastion's ssh entry is the use.
    let profile = unique("idle-ssh");
    let yaml = format!(
        "apiVersion: computeserver.io/v1alpha1\nkind: ComputeProfile\nmetadata: {{name: {profile}}}\n\
         spec: {{image: 'computeserver/debian-ssh:local', defaultResources: {{cpu: 500m, memory: 256Mi}}, \
         ports: [{{name: ssh, containerPort: 22}}], lifecycle: {{idleStopAfter: 60s}}}}\n"
    );
    kubectl_ok(&["apply", "-f", "-"], Some(&yaml));
    let flags = ["--lease-namespace", ns.name.as_str(), "--lease-seconds", "8"];
    let agent = Agent::start_with(&unique("node"), 1, &flags);
    let _scheduler = support::Scheduler::start(&unique("sched"), &ns.name, &ns.name);
    let bastion = Bastion::start(&ns.name, &alice.dir.path().join("bastion_host_key"));
    let spec = format!("profile: {profile}\nsshAuthorizedKeys: [\"{}\"]", alice.public);
    apply_server(&ns.name, "dev", &agent.node, "alice", &spec);
    let running = wait_phase(&ns.name, "dev", "Running");
    let started: Timestamp = running["status"]["startedAt"].as_str().unwrap().parse().unwrap();

    // A session that is open and quiet: it waits for a line on its stdin.
    let mut child = eventually("a session through the bastion", 30, || {
        let mut child = alice
            .jump_command(&bastion, "dev", "echo started; read line; echo $line")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        if line == "started\n" {
            Some(child)
        } else {
            let _ = child.wait();
            None
        }
    });
    // Well past the minute the server would have had without it, and 15 s past its idle time
    // after the session's first report: still running, the stop moved on by the session.
    let held_until = started + SignedDuration::from_secs(80);
    std::thread::sleep(held_until.duration_since(Timestamp::now()).unsigned_abs());
    let server = support::server_json(&ns.name, "dev").unwrap();
    assert_eq!(server["status"]["phase"], "Running", "{}", server["status"]);
    let ssh = activity(&ns.name, "dev", "ssh").expect("the bastion reports the session");
    assert_eq!(ssh["detail"], "1 SSH session");
    let stops_at: Timestamp = server["status"]["stopsAt"].as_str().unwrap().parse().unwrap();
    assert!(stops_at > Timestamp::now(), "stops at {stops_at}");

    // Closed: the server is idle from then on, and stops a minute later, saying why.
    child.stdin.take().unwrap().write_all(b"bye\n").unwrap();
    assert!(child.wait().unwrap().success());
    let closed = Timestamp::now();
    let stopped = eventually("the idle server to stop", 150, || {
        support::server_json(&ns.name, "dev").filter(|s| s["status"]["phase"] == "Stopped")
    });
    let stopped_at = support::ready_since(&stopped);
    assert!(
        stopped_at >= closed + SignedDuration::from_secs(55),
        "stopped at {stopped_at}, the session closed at {closed}"
    );
    let reason = stopped["status"]["stopReason"].as_str().unwrap();
    assert!(
        reason.contains("idle: no SSH session and under 5% CPU since"),
        "{reason}"
    );
    assert_eq!(stopped["spec"]["running"], false);
    let _ = kubectl(&["delete", "computeprofile", &profile, "--wait=false"], None);
    drop(agent);
}

/// What ssh-audit warns of and why it stays: X25519 key exchange does not resist a quantum
/// computer, but OpenSSH offers the hybrid mlkem768x25519-sha256 only from 9.9 and russh has no
/// sntrup761x25519, so without it Debian 12, Ubuntu 24.04 or RHEL 9 clients could not log in. The
/// hybrid comes first: every client that has it uses it.
const SSH_AUDIT_WARNINGS_BY_DESIGN: [(&str, &str, &str); 2] = [
    (
        "kex",
        "curve25519-sha256",
        "does not provide protection against post-quantum attacks",
    ),
    (
        "kex",
        "curve25519-sha256@libssh.org",
        "does not provide protection against post-quantum attacks",
    ),
];

/// ssh-audit's threshold in its DHEat test: a server that lets one address open connections
/// faster than this is "potentially vulnerable" (ssh_audit/dheat.py, MAX_SAFE_RATE).
const DHEAT_MAX_SAFE_RATE: f64 = 20.0;

/// The number after `label` in `text`, such as `14.0` in `...results: 14.0 connections`.
fn figure_after(text: &str, label: &str) -> Option<f64> {
    let (_, after) = text.split_once(label)?;
    let figure: String = after
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    figure.trim_end_matches('.').parse().ok()
}

#[test]
fn ssh_audit_finds_only_the_x25519_fallback_and_a_connection_flood_throttled() {
    let ssh_audit = support::Stack::get().var("SSH_AUDIT").to_string();
    install_crds();
    let ns = TestNamespace::new("bastion-audit");
    let dir = tempfile::tempdir().unwrap();
    // The defaults, as an install runs them.
    let bastion = Bastion::start(&ns.name, &dir.path().join("host_key"));
    let port = bastion.port.to_string();

    // The audit, which ends with its DHEat test (key exchanges it can make costly are offered:
    // X25519 is one): 3 sockets connecting as fast as they close, for 1.5 s or 38 banners.
    // Debug lines (-d) carry that test's figures, the JSON report comes last.
    let out = Command::new(&ssh_audit)
        .args(["-j", "-d", "-p", &port, "127.0.0.1"])
        .output()
        .expect("run ssh-audit (tests/support/install-ssh-audit.sh)");
    let text = stdout(&out);
    let (debug, json) = text.trim_end().rsplit_once('\n').unwrap_or(("", &text));
    let report: Value = serde_json::from_str(json)
        .unwrap_or_else(|e| panic!("ssh-audit's JSON ({e}): {text}{}", stderr(&out)));
    println!(
        "ssh-audit on 127.0.0.1:{port} ({}):",
        report["banner"]["raw"].as_str().unwrap_or_default()
    );
    let mut unexpected = vec![];
    for kind in ["kex", "key", "enc", "mac"] {
        for algorithm in report[kind].as_array().unwrap() {
            let name = algorithm["algorithm"].as_str().unwrap();
            let mut line = format!("  ({kind}) {name}");
            for level in ["fail", "warn"] {
                for note in algorithm["notes"][level].as_array().into_iter().flatten() {
                    let note = note.as_str().unwrap();
                    line += &format!(" -- [{level}] {note}");
                    if level == "fail" || !SSH_AUDIT_WARNINGS_BY_DESIGN.contains(&(kind, name, note)) {
                        unexpected.push(format!("({kind}) {name}: [{level}] {note}"));
                    }
                }
            }
            println!("{line}");
        }
    }
    for note in report["additional_notes"].as_array().into_iter().flatten() {
        println!("  (nfo) {}", note.as_str().unwrap());
    }
    // "DHEat.dh_rate_test() results: time elapsed: 1.500151; connections created: 21"
    let dheat = debug
        .lines()
        .find(|l| l.starts_with("DHEat.dh_rate_test() results: time elapsed:"))
        .unwrap_or_else(|| panic!("ssh-audit ran no DHEat test: {debug}"));
    let elapsed = figure_after(dheat, "time elapsed:").unwrap();
    let served = figure_after(dheat, "connections created:").unwrap();
    let rate = served / elapsed;
    println!(
        "  (dheat) {served} connections served in {elapsed:.2} s to ssh-audit's 3 sockets: {rate:.1}/s \
         (it finds a server safe below {DHEAT_MAX_SAFE_RATE}/s)"
    );

    assert!(
        unexpected.is_empty(),
        "ssh-audit fails or warns of: {unexpected:#?}"
    );
    assert_eq!(report["cves"], serde_json::json!([]), "ssh-audit lists CVEs");
    let names = |kind: &str| -> Vec<String> {
        report[kind]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["algorithm"].as_str().unwrap().to_string())
            .collect()
    };
    let kex = names("kex");
    assert_eq!(kex[0], "mlkem768x25519-sha256", "the post-quantum hybrid first");
    assert!(
        !kex.iter().any(|k| k.starts_with("diffie-hellman")),
        "no finite-field Diffie-Hellman: {kex:?}"
    );
    assert!(kex.contains(&"kex-strict-s-v00@openssh.com".to_string()));
    assert!(
        names("mac").iter().all(|m| m.ends_with("-etm@openssh.com")),
        "encrypt-then-MAC only: {:?}",
        names("mac")
    );

    // Its DHEat test found the bastion throttling.
    assert!(
        rate < DHEAT_MAX_SAFE_RATE,
        "ssh-audit opened {rate} connections a second (safe below {DHEAT_MAX_SAFE_RATE})"
    );
    assert!(
        !report.to_string().contains("DHEat"),
        "ssh-audit finds the bastion open to DHEat: {:#}",
        report["additional_notes"]
    );
    // Counted; logged once for the burst, not once per connection.
    let refused = metric(&bastion, "throttled_connections_total", "{reason=\"rate\"}");
    assert!(refused >= 1.0, "no refusal counted");
    let refusals = audit(&ns.name, "throttle");
    assert_eq!(
        refusals.len(),
        1,
        "one log line for {refused} refusals: {refusals:?}"
    );
    assert_eq!(refusals[0]["outcome"], "refused");
    assert_eq!(refusals[0]["source"], "127.0.0.1");

    // Once the flood stops, the address is served again within a token's time (half a second).
    eventually("the bastion to answer again", 5, || {
        let mut tcp = std::net::TcpStream::connect(("127.0.0.1", bastion.port)).ok()?;
        let mut banner = [0u8; 4];
        tcp.read_exact(&mut banner).ok()?;
        (&banner == b"SSH-").then_some(())
    });
}
