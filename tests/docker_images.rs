//! The two local images start on the real Docker engine, hardened as the agent will run them.

mod support;

use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig, PortBinding};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, InspectContainerOptions, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
};
use futures::StreamExt;

/// Removes the container when the test ends, whatever happened.
struct Container {
    docker: Docker,
    id: String,
}

impl Drop for Container {
    fn drop(&mut self) {
        let (docker, id) = (self.docker.clone(), self.id.clone());
        // Drop cannot await; remove from a thread of its own with a small runtime.
        let _ = std::thread::spawn(move || {
            tokio::runtime::Runtime::new().unwrap().block_on(async {
                let opts = RemoveContainerOptionsBuilder::default()
                    .force(true)
                    .v(true)
                    .build();
                let _ = docker.remove_container(&id, Some(opts)).await;
            })
        })
        .join();
    }
}

/// Creates and starts a container with the hardening the agent applies.
async fn run(name: &str, mut body: ContainerCreateBody, caps: &[&str]) -> Container {
    let docker = support::docker()
        .negotiate_version()
        .await
        .expect("Docker answers");
    let name = format!("cs-test-{name}-{}", std::process::id());
    let host_config = body.host_config.take().unwrap_or_default();
    body.host_config = Some(HostConfig {
        cap_drop: Some(vec!["ALL".into()]),
        cap_add: Some(caps.iter().map(|c| c.to_string()).collect()),
        security_opt: Some(vec!["no-new-privileges".into()]),
        memory: Some(256 << 20),
        nano_cpus: Some(500_000_000),
        pids_limit: Some(128),
        ..host_config
    });
    let opts = CreateContainerOptionsBuilder::default().name(&name).build();
    let created = docker
        .create_container(Some(opts), body)
        .await
        .expect("create container");
    let container = Container {
        docker: docker.clone(),
        id: created.id,
    };
    docker
        .start_container(&container.id, None)
        .await
        .expect("start container");
    container
}

#[tokio::test]
async fn busybox_image_runs_a_command() {
    let body = ContainerCreateBody {
        image: Some("computeserver/busybox:local".into()),
        cmd: Some(vec![
            "sh".into(),
            "-c".into(),
            "echo hello from busybox; id -u".into(),
        ]),
        ..Default::default()
    };
    let container = run("busybox", body, &[]).await;
    let docker = &container.docker;
    let mut wait = docker.wait_container(&container.id, None);
    while let Some(result) = wait.next().await {
        result.expect("exits with code 0");
    }
    let opts = LogsOptionsBuilder::default().stdout(true).stderr(true).build();
    let logs: Vec<String> = docker
        .logs(&container.id, Some(opts))
        .map(|chunk| chunk.expect("logs").to_string())
        .collect()
        .await;
    assert_eq!(logs.concat(), "hello from busybox\n0\n");
}

#[tokio::test]
async fn debian_ssh_image_accepts_the_given_key() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = support::ssh_keypair(dir.path(), "test@compute-server");

    let body = ContainerCreateBody {
        image: Some("computeserver/debian-ssh:local".into()),
        env: Some(vec![format!("SSH_AUTHORIZED_KEYS={}", public)]),
        exposed_ports: Some(vec!["22/tcp".into()]),
        host_config: Some(HostConfig {
            port_bindings: Some(
                [(
                    "22/tcp".to_string(),
                    Some(vec![PortBinding {
                        host_ip: Some("127.0.0.1".into()),
                        host_port: None,
                    }]),
                )]
                .into(),
            ),
            ..Default::default()
        }),
        ..Default::default()
    };
    // The capabilities sshd needs to log a user in, and nothing else.
    let container = run("ssh", body, &["SETUID", "SETGID", "SYS_CHROOT", "AUDIT_WRITE"]).await;
    let info = container
        .docker
        .inspect_container(&container.id, None::<InspectContainerOptions>)
        .await
        .unwrap();
    let port = info
        .network_settings
        .and_then(|n| n.ports)
        .and_then(|p| p.get("22/tcp").cloned().flatten())
        .and_then(|b| b.into_iter().next())
        .and_then(|b| b.host_port)
        .expect("port 22 published");

    // The real OpenSSH client; sshd needs a moment to make its host keys and listen.
    let mut last = String::new();
    for _ in 0..40 {
        let out = support::ssh(
            &key,
            "127.0.0.1",
            &port,
            "echo hello from $(hostname) as $(id -un)",
        );
        if out.status.success() {
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                text.starts_with("hello from ") && text.trim_end().ends_with("as root"),
                "{text}"
            );
            return;
        }
        last = String::from_utf8_lossy(&out.stderr).into_owned();
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    panic!("ssh into the container never worked: {last}");
}
