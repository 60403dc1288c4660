//! A person at their laptop with OpenSSH (tests/bastion.rs, tests/cluster.rs).

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

/// One person at their laptop: an ed25519 key pair, a known_hosts file and an ssh config
/// (`-F`, which OpenSSH passes on to the jump connection too) in a directory of their own.
pub struct SshUser {
    pub dir: tempfile::TempDir,
    pub name: String,
    pub public: String,
}

impl SshUser {
    pub fn new(name: &str) -> SshUser {
        let dir = tempfile::tempdir().unwrap();
        let (_, public) = super::ssh_keypair(dir.path(), &format!("{name}@laptop"));
        let user = SshUser {
            dir,
            name: name.to_string(),
            public,
        };
        user.write_config("accept-new", "");
        user
    }

    /// Writes the ssh config: host keys checked against this user's own known_hosts
    /// (`accept-new`: first contact trusted; `yes`: only known keys), this key only, no prompts.
    pub fn write_config(&self, strict: &str, extra: &str) {
        let dir = self.dir.path().display();
        let config = format!(
            "{extra}\nHost *\n  IdentityFile {dir}/id_ed25519\n  IdentitiesOnly yes\n  BatchMode yes\n  \
             UserKnownHostsFile {dir}/known_hosts\n  StrictHostKeyChecking {strict}\n  ConnectTimeout 10\n"
        );
        std::fs::write(self.config(), config).unwrap();
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("config")
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.arg("-F").arg(self.config()).args(args).stdin(Stdio::null());
        cmd
    }

    pub fn ssh(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run ssh")
    }
}
