//! The container image, made by tests/support/image.sh from the binary under test on a locally made
//! base, with the Dockerfile's last stage: it runs compute-server, as a non-root user, under the
//! restrictions the chart sets.

mod support;

use support::{Stack, docker_cli};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn the_image_runs_compute_server_as_a_non_root_user() {
    // `make test` makes the image before the tests start; this makes it again from the same binary.
    let out = std::process::Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/image.sh"))
        .arg("build")
        .env("DOCKER_HOST", Stack::get().docker_host())
        .env("COMPUTE_SERVER_BINARY", env!("CARGO_BIN_EXE_compute-server"))
        .output()
        .expect("run image.sh");
    assert!(
        out.status.success(),
        "image.sh build failed:\n{}",
        text(&out.stderr)
    );
    let image = text(&out.stdout).trim().to_string();
    assert_eq!(
        image,
        concat!("computeserver/compute-server:", env!("CARGO_PKG_VERSION"))
    );

    // As the chart runs it: read-only root, no capabilities, no privilege escalation.
    let restricted = [
        "run",
        "--rm",
        "--read-only",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
    ];
    let version = docker_cli(&[&restricted[..], &[&image, "--version"]].concat());
    assert!(version.status.success(), "{}", text(&version.stderr));
    assert_eq!(
        text(&version.stdout),
        concat!("compute-server ", env!("CARGO_PKG_VERSION"), "\n")
    );
    let crds = docker_cli(&[&restricted[..], &[&image, "crd"]].concat());
    assert_eq!(
        text(&crds.stdout)
            .matches("kind: CustomResourceDefinition")
            .count(),
        compute_server::crd::all().len()
    );

    // Non-root by default: the image says so, and the process cannot write where only root may.
    let user = docker_cli(&["image", "inspect", "-f", "{{.Config.User}}", &image]);
    assert_eq!(text(&user.stdout).trim(), "65532:65532");
    let as_root_only = docker_cli(&["run", "--rm", &image, "crd", "--out-dir", "/"]);
    assert!(!as_root_only.status.success());
    assert!(
        text(&as_root_only.stderr).contains("Permission denied"),
        "{}",
        text(&as_root_only.stderr)
    );
    let writable = docker_cli(&["run", "--rm", &image, "crd", "--out-dir", "/tmp"]);
    assert!(writable.status.success(), "{}", text(&writable.stderr));

    // The agent's firewall: iptables runs in the image (listing rules needs the host's network).
    let iptables = docker_cli(&[
        "run",
        "--rm",
        "--entrypoint",
        "/usr/sbin/iptables",
        &image,
        "--version",
    ]);
    assert!(
        iptables.status.success() && text(&iptables.stdout).starts_with("iptables v1.8"),
        "{}{}",
        text(&iptables.stdout),
        text(&iptables.stderr)
    );

    // Small: the binary, glibc, iptables and CA certificates.
    let size = docker_cli(&["image", "inspect", "-f", "{{.Size}}", &image]);
    let size: u64 = text(&size.stdout).trim().parse().unwrap();
    assert!(size < 80 << 20, "the image is {} MB", size >> 20);
}
