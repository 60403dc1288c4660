//! Sharing a server, as two researchers would: alice shares her running server with bob (`use`)
//! and carol (`view`) through the JSON API; bob logs in with plain `ssh -J` and his own key
//! (a certificate the web front signs, never written into alice's server), stops and starts it,
//! but cannot delete or share it; carol sees it but gets no shell; removing bob ends his open
//! SSH session within seconds; a group share reaches its members. Real agent, scheduler,
//! bastion, web front, Keycloak tokens and OpenSSH.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{
    BrowserStack, SshUser, TestNamespace, access_token, eventually, eventually_async, install_crds,
    wait_phase,
};

/// One person at the JSON API with their Keycloak token.
struct Caller {
    token: String,
    base: String,
}

impl Caller {
    async fn new(user: &str, web: &support::WebFront) -> Caller {
        Caller {
            token: access_token("compute-server", user).await,
            base: web.url.clone(),
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut request = reqwest::Client::new()
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }

    async fn share(&self, name: &str, with: Value) -> (StatusCode, Value) {
        let path = format!("/api/v1/servers/{name}/sharing");
        self.call(reqwest::Method::PUT, &path, Some(json!({"sharedWith": with})))
            .await
    }

    /// Asks for a certificate of `person`'s key and saves it where OpenSSH looks for it.
    async fn certificate(&self, person: &SshUser) -> Value {
        let body = json!({"publicKey": format!("{}\n", person.public)});
        let (status, signed) = self
            .call(reqwest::Method::POST, "/api/v1/ssh-certificate", Some(body))
            .await;
        assert_eq!(status, StatusCode::OK, "{signed}");
        assert_eq!(signed["fileName"], "id_ed25519-cert.pub");
        let path = person.dir.path().join("id_ed25519-cert.pub");
        std::fs::write(path, format!("{}\n", signed["certificate"].as_str().unwrap())).unwrap();
        signed
    }
}

/// `ssh -J NAME@127.0.0.1:PORT root@TARGET COMMAND`, as the server's page tells people.
fn jump(person: &SshUser, bastion: &support::Bastion, target: &str, command: &str) -> Command {
    let via = format!("{}@127.0.0.1:{}", person.name, bastion.port);
    person.command(&["-J", &via, &format!("root@{target}"), command])
}

fn run(mut command: Command) -> Output {
    command.output().expect("run ssh")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).trim().to_string()
}

#[tokio::test]
async fn alice_shares_her_server_with_bob_to_use_and_carol_to_view_and_a_revoke_ends_bobs_ssh() {
    install_crds();
    let ns = TestNamespace::new("sharing");
    let stack = BrowserStack::start(&ns.name);
    let (alice_ssh, bob_ssh, carol_ssh) = (SshUser::new("alice"), SshUser::new("bob"), SshUser::new("carol"));
    let alice = Caller::new("alice", &stack.web).await;
    let bob = Caller::new("bob", &stack.web).await;
    let carol = Caller::new("carol", &stack.web).await;

    let new = json!({"name": "lab", "profile": "debian", "sshAuthorizedKeys": [alice_ssh.public]});
    let (status, made) = alice
        .call(reqwest::Method::POST, "/api/v1/servers", Some(new))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    wait_phase(&ns.name, "lab", "Running");

    // Not shared yet: to bob it does not exist.
    assert_eq!(bob.get("/api/v1/servers/lab").await.0, StatusCode::NOT_FOUND);
    assert_eq!(bob.get("/api/v1/servers?shared=true").await.1, json!([]));

    let (status, shared) = alice
        .share(
            "lab",
            json!([{"user": "bob", "role": "use"}, {"user": "carol", "role": "view"}]),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{shared}");

    // "Shared with me": each sees it with their role; a sharee sees no one's keys.
    let listed = eventually_async("lab shared with bob", 10, || async {
        let listed = bob.get("/api/v1/servers?shared=true").await.1;
        (listed.as_array().is_some_and(|l| !l.is_empty())).then_some(listed)
    })
    .await;
    assert_eq!(listed[0]["name"], "lab");
    assert_eq!(listed[0]["owner"], "alice");
    assert_eq!(listed[0]["access"], "use");
    assert_eq!(listed[0]["sshAuthorizedKeys"], json!([]));
    let ssh = listed[0]["ssh"].as_str().unwrap();
    assert!(ssh.starts_with("ssh -J bob@"), "bob's own command: {ssh}");
    let (status, seen) = carol.get("/api/v1/servers/lab").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(seen["access"], "view");
    assert_eq!(seen["ssh"], Value::Null, "no SSH command for a viewer");
    assert_eq!(
        bob.get("/api/v1/servers").await.1,
        json!([]),
        "his own list is his own"
    );

    // What bob's role does not allow: refused, with why; nothing changes.
    let (status, refusal) = bob
        .call(reqwest::Method::DELETE, "/api/v1/servers/lab", None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{refusal}");
    assert_eq!(
        refusal["message"],
        "lab is alice's and shared with you to use; only its owner or a compute-server admin may delete, resize, move or snapshot it"
    );
    let (status, refusal) = bob.share("lab", json!([{"user": "bob", "role": "admin"}])).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{refusal}");
    let (status, refusal) = carol
        .call(reqwest::Method::POST, "/api/v1/servers/lab/stop", None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{refusal}");
    assert!(
        refusal["message"].as_str().unwrap().contains("need the role use"),
        "{refusal}"
    );

    // bob logs in with his own key: the front signs it, alice's server never holds it.
    let signed = bob.certificate(&bob_ssh).await;
    assert_eq!(signed["servers"], json!(["lab"]));
    // (The server's sshd may still be starting when the server is first Running.)
    let out = eventually("bob's ssh -J", 30, || {
        let out = run(jump(&bob_ssh, &stack.bastion, "lab", "hostname"));
        match out.status.success() {
            true => Some(out),
            false => {
                eprintln!("bob's ssh -J, not yet: {}", text(&out.stderr));
                None
            }
        }
    });
    assert_eq!(text(&out.stdout), "lab");
    let out = run(jump(
        &alice_ssh,
        &stack.bastion,
        "lab",
        "cat /root/.ssh/authorized_keys",
    ));
    assert!(out.status.success(), "alice's ssh -J: {}", text(&out.stderr));
    let key_data = bob_ssh.public.split(' ').nth(1).unwrap();
    assert!(
        !text(&out.stdout).contains(key_data),
        "bob's key was written into alice's server"
    );

    // carol may look, not log in.
    let signed = carol.certificate(&carol_ssh).await;
    assert_eq!(signed["servers"], json!([]));
    let out = run(jump(&carol_ssh, &stack.bastion, "lab", "hostname"));
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("server lab is shared with you to view only (its web apps), not to log in; ask alice for the role use"),
        "{}",
        text(&out.stderr)
    );

    // bob stops and starts it.
    let (status, _) = bob
        .call(reqwest::Method::POST, "/api/v1/servers/lab/stop", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    wait_phase(&ns.name, "lab", "Stopped");
    let (status, _) = bob
        .call(reqwest::Method::POST, "/api/v1/servers/lab/start", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    wait_phase(&ns.name, "lab", "Running");

    // Revoking: bob's open session ends within seconds, and he cannot come back.
    let mut session = eventually("bob's session to open", 30, || {
        let mut child = jump(&bob_ssh, &stack.bastion, "lab", "echo started; sleep 300")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        match line.trim() == "started" {
            true => Some(child),
            false => {
                let _ = child.wait();
                None
            }
        }
    });
    let revoked = Instant::now();
    let (status, _) = alice
        .share("lab", json!([{"user": "carol", "role": "view"}]))
        .await;
    assert_eq!(status, StatusCode::OK);
    let ended = eventually("bob's session to end", 10, || session.try_wait().unwrap());
    let took = revoked.elapsed();
    println!(
        "bob's open SSH session ended {:.2} s after alice removed him",
        took.as_secs_f64()
    );
    assert!(!ended.success(), "ended by the bastion, not by itself");
    assert!(took < Duration::from_secs(5), "revoked in {took:?}");
    let out = run(jump(&bob_ssh, &stack.bastion, "lab", "hostname"));
    assert!(
        text(&out.stderr).contains("no server named lab of yours"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(bob.get("/api/v1/servers/lab").await.0, StatusCode::NOT_FOUND);
    let log = std::fs::read_to_string(format!(
        "{}/target/test-logs/bastion-{}.log",
        env!("CARGO_MANIFEST_DIR"),
        ns.name
    ))
    .unwrap();
    let audited = log.lines().any(|l| {
        l.contains(r#""outcome":"revoked""#)
            && l.contains(r#""user":"\"bob\"""#)
            && l.contains(r#""owner":"\"alice\"""#)
    });
    assert!(
        audited,
        "no audited revoke of bob's jump to alice's server:\n{log}"
    );

    // A group share: carol is in staff, and her new certificate logs her in.
    let (status, _) = alice
        .share("lab", json!([{"group": "staff", "role": "use"}]))
        .await;
    assert_eq!(status, StatusCode::OK);
    let signed = eventually_async("lab shared with staff", 10, || async {
        let signed = carol.certificate(&carol_ssh).await;
        (signed["servers"] == json!(["lab"])).then_some(signed)
    })
    .await;
    assert_eq!(signed["servers"], json!(["lab"]));
    let out = eventually("carol's ssh -J as one of staff", 10, || {
        let out = run(jump(&carol_ssh, &stack.bastion, "lab", "hostname"));
        out.status.success().then_some(out)
    });
    assert_eq!(text(&out.stdout), "lab");

    // Someone who joins staff afterwards reaches it too, with no change to the server.
    let newcomer = Newcomer::join("staff").await;
    let (newcomer_ssh, caller) = (
        SshUser::new(&newcomer.name),
        Caller::new(&newcomer.name, &stack.web).await,
    );
    let (status, seen) = caller.get("/api/v1/servers/lab").await;
    assert_eq!(
        (status, seen["access"].as_str()),
        (StatusCode::OK, Some("use")),
        "{seen}"
    );
    caller.certificate(&newcomer_ssh).await;
    let out = run(jump(&newcomer_ssh, &stack.bastion, "lab", "hostname"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "lab");
    newcomer.leave().await;
}

/// A Keycloak user made for one test, in one group (password = name), through the admin API.
struct Newcomer {
    name: String,
    id: String,
    admin: String,
    token: String,
}

impl Newcomer {
    async fn join(group: &str) -> Newcomer {
        let issuer = support::Stack::get().keycloak_issuer().to_string();
        let base = issuer.trim_end_matches("/realms/compute").to_string();
        let client = reqwest::Client::new();
        let token = support::keycloak_admin_token().await;
        let admin = format!("{base}/admin/realms/compute");
        let name = support::unique("newcomer").replace('_', "-");
        let user = json!({
            "username": name, "enabled": true, "emailVerified": true,
            "firstName": "New", "lastName": "Comer", "email": format!("{name}@example.org"),
            "credentials": [{"type": "password", "value": name, "temporary": false}],
        });
        let made = client
            .post(format!("{admin}/users"))
            .bearer_auth(&token)
            .json(&user)
            .send()
            .await
            .unwrap();
        assert_eq!(
            made.status(),
            StatusCode::CREATED,
            "{}",
            made.text().await.unwrap()
        );
        let id = made.headers()["location"]
            .to_str()
            .unwrap()
            .rsplit('/')
            .next()
            .unwrap()
            .to_string();
        let groups: Value = client
            .get(format!("{admin}/groups?search={group}&exact=true"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let group_id = groups[0]["id"].as_str().expect("the group").to_string();
        let joined = client
            .put(format!("{admin}/users/{id}/groups/{group_id}"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert!(joined.status().is_success(), "{}", joined.status());
        Newcomer {
            name,
            id,
            admin,
            token,
        }
    }

    async fn leave(self) {
        let _ = reqwest::Client::new()
            .delete(format!("{}/users/{}", self.admin, self.id))
            .bearer_auth(&self.token)
            .send()
            .await;
    }
}

/// A profile of the test's own: busybox serving a page with its httpd on port 8080, as web app
/// `web`, and a second app `idle` on 9090 where nothing listens; no sshd, no port 22.
fn plain_httpd_profile() -> support::TestProfile {
    let profile = support::TestProfile {
        name: support::unique("plain-httpd"),
    };
    // The app is served under its base URL, which the front passes on unchanged.
    let script = "mkdir -p /tmp/www$COMPUTE_SERVER_BASE_URL && \
                  echo hello from $(hostname) > /tmp/www${COMPUTE_SERVER_BASE_URL}index.html && \
                  exec httpd -f -p 8080 -h /tmp/www";
    let yaml = format!(
        "apiVersion: computeserver.io/v1alpha1\nkind: ComputeProfile\nmetadata: {{name: {}}}\n\
         spec: {{image: 'computeserver/busybox:local', command: [sh, -c, '{script}'], \
         defaultResources: {{cpu: 100m, memory: 32Mi}}, \
         ports: [{{name: web, containerPort: 8080, appProtocol: http}}, {{name: idle, containerPort: 9090, appProtocol: http}}]}}\n",
        profile.name
    );
    support::kubectl_ok(&["apply", "-f", "-"], Some(&yaml));
    profile
}

/// Signs `user` in through Keycloak's pages with a cookie-keeping client, landing on `path`.
async fn signed_in(web: &support::WebFront, user: &str, path: &str) -> support::signin::FormClient {
    let client = support::signin::FormClient::new(None);
    let login = client.get(&format!("{}{path}", web.url)).await;
    client.log_in(&login, user).await;
    client
}

#[tokio::test]
async fn a_plain_image_without_sshd_serves_its_app_and_terminal_through_the_nodes_gateway() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};

    install_crds();
    let ns = TestNamespace::new("sharing-plain");
    let stack = BrowserStack::start(&ns.name);
    let profile = plain_httpd_profile();
    let yaml = format!(
        "apiVersion: computeserver.io/v1alpha1\nkind: ComputeServer\nmetadata:\n  name: plain\n  namespace: {}\n  \
         labels: {{computeserver.io/owner: alice}}\nspec: {{owner: alice, profile: {}, \
         sharedWith: [{{user: carol, role: view}}]}}\n",
        ns.name, profile.name
    );
    support::kubectl_ok(&["apply", "-f", "-"], Some(&yaml));
    let server = wait_phase(&ns.name, "plain", "Running");
    assert_eq!(
        server["status"]["endpoints"],
        Value::Null,
        "nothing published: {server}"
    );
    assert_eq!(server["status"]["gateway"]["name"], "gateway", "{server}");

    // alice, its owner, opens its app: busybox's httpd, reached from the node's side.
    let app = format!("{}/servers/plain/apps/web/", stack.web.url);
    let alice = signed_in(&stack.web, "alice", "/servers/plain/apps/web/").await;
    let page = eventually_async("the app's page", 30, || async {
        let page = alice.get(&app).await;
        (page.status == StatusCode::OK).then_some(page)
    })
    .await;
    assert_eq!(page.html.trim(), "hello from plain");

    // carol (view) opens it too; bob gets "not found".
    let carol = signed_in(&stack.web, "carol", "/servers/plain/apps/web/").await;
    let page = carol.get(&app).await;
    assert_eq!(
        (page.status, page.html.trim()),
        (StatusCode::OK, "hello from plain")
    );
    let bob = signed_in(&stack.web, "bob", "/servers/plain/apps/web/").await;
    assert_eq!(bob.get(&app).await.status, StatusCode::NOT_FOUND);

    // An app where nothing listens: a page that says what, not an empty 502.
    let idle = alice
        .get(&format!("{}/servers/plain/apps/idle/", stack.web.url))
        .await;
    assert_eq!(idle.status, StatusCode::BAD_GATEWAY);
    assert!(
        idle.html
            .contains("Nothing answers on port 9090 inside plain: is the app running?"),
        "{}",
        idle.html
    );

    // alice's terminal: a shell in the container through Docker's exec, no sshd.
    let terminal = |client: &support::signin::FormClient| {
        let url = format!(
            "{}/servers/plain/terminal/socket?cols=80&rows=24",
            stack.web.url.replace("http://", "ws://")
        );
        let mut request = url.into_client_request().unwrap();
        let headers = request.headers_mut();
        headers.insert("cookie", client.cookies(&stack.web.url).parse().unwrap());
        headers.insert("origin", stack.web.url.parse().unwrap());
        request
    };
    let (mut socket, _) = tokio_tungstenite::connect_async(terminal(&alice))
        .await
        .expect("alice's terminal socket");
    socket
        .send(Message::Binary(b"echo on-$(hostname)-$((6*7))\n".to_vec().into()))
        .await
        .unwrap();
    let mut shown = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !String::from_utf8_lossy(&shown).contains("on-plain-42") {
        assert!(
            Instant::now() < deadline,
            "no answer: {}",
            String::from_utf8_lossy(&shown)
        );
        match tokio::time::timeout(Duration::from_secs(30), socket.next()).await {
            Ok(Some(Ok(Message::Binary(bytes)))) => shown.extend_from_slice(&bytes),
            Ok(Some(Ok(Message::Text(text)))) => panic!("the terminal said {text}"),
            Ok(Some(Ok(_))) => {}
            other => panic!("the socket ended: {other:?}: {}", String::from_utf8_lossy(&shown)),
        }
    }
    // carol, a viewer, gets no terminal.
    let refused = tokio_tungstenite::connect_async(terminal(&carol)).await;
    assert!(refused.is_err(), "a viewer opened a terminal");
}
