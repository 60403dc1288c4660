//! People at the Kubernetes API: kubectl signing in through Keycloak with kubelogin's device
//! authorization grant (tests/kubectl_oidc.rs, tests/cluster.rs).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::signin::FormClient;

/// A copy of the kubeconfig for people `source` (kubelogin through Keycloak), with a token cache
/// of the test's own in `dir` instead of ~/.kube/cache.
pub fn kubeconfig(source: &Path, dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(source).expect("the people's kubeconfig");
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
pub fn spawn_kubectl(
    kubectl: &Path,
    kubeconfig: &Path,
    args: &[&str],
    input: &str,
) -> (Child, mpsc::Receiver<String>) {
    use std::io::Write;
    let mut child = Command::new(kubectl)
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
pub fn finish(child: Child, lines: &mpsc::Receiver<String>) -> String {
    let out = child.wait_with_output().expect("kubectl output");
    let stderr: Vec<String> = lines.iter().collect();
    assert!(out.status.success(), "kubectl failed: {}", stderr.join("\n"));
    String::from_utf8(out.stdout).unwrap()
}

/// The device verification address kubelogin prints, read from kubectl's standard error.
pub fn verification_url(lines: &mpsc::Receiver<String>) -> String {
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
/// `ca`: the CA file of Keycloak's https certificate.
pub async fn approve_device(url: &str, user: &str, ca: &str) {
    let browser = FormClient::new(Some(ca));
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
