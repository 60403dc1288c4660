//! A `compute-server bastion` process for the tests (tests/bastion.rs).

use std::path::PathBuf;
use std::process::Command;

use super::{Stack, eventually};

/// A `compute-server bastion` process serving the servers of one namespace, stopped when dropped.
pub struct Bastion {
    child: std::process::Child,
    namespace: String,
    host_key: Vec<String>,
    /// The SSH port on 127.0.0.1.
    pub port: u16,
    /// Base URL of its /metrics, /healthz and /readyz.
    pub health_url: String,
}

impl Bastion {
    /// Starts a bastion for `namespace` with its host key in the file `host_key`, and waits
    /// until it accepts SSH connections (it listens only once its server cache is filled).
    pub fn start(namespace: &str, host_key: &std::path::Path) -> Bastion {
        let flags = ["--host-key-file".to_string(), host_key.display().to_string()];
        Self::start_with(namespace, &flags)
    }

    /// [`Bastion::start`] with the host key flags given: `["--host-key-secret", NAME]`.
    pub fn start_with(namespace: &str, host_key: &[String]) -> Bastion {
        let free = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        };
        let (port, health) = (free(), free());
        let mut bastion = Bastion {
            child: Self::spawn(namespace, host_key, port, health),
            namespace: namespace.to_string(),
            host_key: host_key.to_vec(),
            port,
            health_url: format!("http://127.0.0.1:{health}"),
        };
        bastion.wait_listening();
        bastion
    }

    fn spawn(namespace: &str, host_key: &[String], port: u16, health: u16) -> std::process::Child {
        let log_dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target/test-logs"));
        std::fs::create_dir_all(&log_dir).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_dir.join(format!("bastion-{namespace}.log")))
            .unwrap();
        Command::new(env!("CARGO_BIN_EXE_compute-server"))
            .args(["--log-format", "json", "bastion", "--namespace", namespace])
            .arg(format!("--listen=127.0.0.1:{port}"))
            .arg(format!("--metrics-address=127.0.0.1:{health}"))
            .args(host_key)
            .env("KUBECONFIG", Stack::get().kubeconfig())
            .env("RUST_LOG", "info,kube=warn")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start the bastion")
    }

    fn wait_listening(&mut self) {
        let port = self.port;
        let child = &mut self.child;
        eventually("the bastion to listen", 30, || {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("the bastion exited with {status}; see target/test-logs/bastion-*.log");
            }
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the process (SIGKILL) and starts it again on the same ports and host key flags.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let health = self.health_url.rsplit_once(':').unwrap().1.parse().unwrap();
        self.child = Self::spawn(&self.namespace, &self.host_key, self.port, health);
        self.wait_listening();
    }
}

impl Drop for Bastion {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
