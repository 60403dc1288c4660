//! The node's SSH gateway: the way into a server from the node's side, so that web apps and the
//! browser terminal work for any image, sshd or not.
//!
//! The agent serves SSH on the publish address (`--gateway-port`) when it has user CAs. The
//! bastion sends a jump there for a server that declares no port 22 (`status.gateway` says
//! where). A login is by a user certificate of a trusted CA for one server's own principal
//! ([`crate::ssh_ca::server_principal`]), as the server's own sshd would take it, and reaches
//! that server only:
//! - `direct-tcpip` to a port on `127.0.0.1` becomes a TCP connection to that port of the
//!   container on its closed network (the certificate must permit port forwarding);
//! - a shell or a command runs in the container through Docker's exec, with a pty when one is
//!   asked for (the certificate must permit a pty: a web front's link for web apps only does not).
//!
//! Who may reach which server is the bastion's decision (the one access rule); the web front
//! holds the CA and signs certificates only for what that rule allows. The gateway checks the
//! certificate and nothing else, as an sshd would.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bollard::exec::{StartExecOptions, StartExecResults};
use bollard::models::ExecConfig;
use futures::StreamExt;
use kube::ResourceExt;
use russh::keys::ssh_key::Fingerprint;
use russh::keys::{Certificate, HashAlg};
use russh::server::{Auth, ChannelOpenHandle, Msg, Session};
use russh::{Channel, ChannelId, ChannelOpenFailure, Pty};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::Context;
use crate::api::{ComputeServer, Phase};

/// How long a connection to a port in the container may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The shell a terminal gets: bash when the image has it, else sh.
const SHELL: &str = "if command -v bash >/dev/null 2>&1; then exec bash -l; else exec sh -l; fi";

/// The certificate extensions the gateway holds to, as sshd does.
const PERMIT_PTY: &str = "permit-pty";
const PERMIT_PORT_FORWARDING: &str = "permit-port-forwarding";

/// Binds the gateway's port on `address` (0: any free port).
pub async fn bind(address: std::net::IpAddr, port: u16) -> std::io::Result<TcpListener> {
    TcpListener::bind(SocketAddr::new(address, port)).await
}

/// Serves SSH connections on `listener` for the servers of this node, until the agent stops.
pub async fn serve(listener: TcpListener, ctx: Arc<Context>, cas: Vec<Fingerprint>) {
    let key = match russh::keys::PrivateKey::random(&mut rand::rng(), russh::keys::Algorithm::Ed25519) {
        Ok(key) => key,
        Err(error) => {
            warn!(%error, "could not make the gateway's host key; no gateway");
            return;
        }
    };
    let config = Arc::new(crate::ssh_ca::server_config(key));
    let cas = Arc::new(cas);
    if let Ok(address) = listener.local_addr() {
        info!(%address, "the node's SSH gateway listens (web apps and terminals of servers without sshd)");
    }
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                warn!(%error, "the gateway could not accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let connection = Connection {
            ctx: ctx.clone(),
            cas: cas.clone(),
            peer,
            login: None,
            address: None,
            ptys: HashMap::new(),
            inputs: HashMap::new(),
        };
        let config = config.clone();
        tokio::spawn(async move {
            match russh::server::run_stream(config, tcp, connection).await {
                Ok(session) => {
                    if let Err(error) = session.await {
                        debug!(%peer, %error, "gateway connection ended with an error");
                    }
                }
                Err(error) => debug!(%peer, %error, "gateway connection failed"),
            }
        });
    }
}

/// Which of `servers` a certificate names by its principal, if it is valid at `now` for it from
/// one of `cas`; the reason otherwise.
pub fn server_of<'a>(
    cert: &Certificate,
    servers: &'a [Arc<ComputeServer>],
    cas: &[Fingerprint],
    now: u64,
) -> Result<&'a Arc<ComputeServer>, &'static str> {
    let server = servers
        .iter()
        .find(|s| {
            let principal = crate::ssh_ca::server_principal(s);
            cert.valid_principals().contains(&principal)
        })
        .ok_or("the certificate names no server of this node")?;
    crate::ssh_ca::check_certificate(cert, &crate::ssh_ca::server_principal(server), cas, now)?;
    Ok(server)
}

/// The size of a terminal asked for on a channel.
#[derive(Clone)]
struct PtySize {
    term: String,
    cols: u32,
    rows: u32,
}

struct Login {
    server: String,
    container: String,
    key_id: String,
    pty: bool,
    forwarding: bool,
}

struct Connection {
    ctx: Arc<Context>,
    cas: Arc<Vec<Fingerprint>>,
    peer: SocketAddr,
    login: Option<Login>,
    /// The container's address on its network, once looked up (the app proxy opens a channel
    /// per request; the address holds while the container runs).
    address: Option<std::net::IpAddr>,
    /// The terminals asked for, per session channel.
    ptys: HashMap<ChannelId, PtySize>,
    /// What the client types, per channel with a running exec.
    inputs: HashMap<ChannelId, (String, mpsc::UnboundedSender<Vec<u8>>)>,
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Connection {
    /// The container's address on its network: asked of Docker on the connection's first
    /// forward, then kept.
    async fn address(&mut self, container: &str) -> Option<std::net::IpAddr> {
        if self.address.is_none() {
            let inspected = self.ctx.docker.inspect_container(container, None).await.ok()?;
            self.address = inspected
                .network_settings?
                .networks?
                .values()
                .filter_map(|n| n.ip_address.as_deref())
                .find_map(|ip| ip.parse().ok());
        }
        self.address
    }

    /// Runs `command` (a shell when None) in the login's container, its output to `channel`.
    async fn run(
        &mut self,
        channel: ChannelId,
        command: Option<String>,
        session: &mut Session,
    ) -> Result<(), russh::Error> {
        let Some(login) = &self.login else {
            return session.channel_failure(channel);
        };
        if !login.pty {
            warn!(target: "audit", event = "gateway", outcome = "refused", server = %login.server,
                  certificate = %login.key_id, peer = %self.peer, reason = "no permit-pty: web apps only");
            return session.channel_failure(channel);
        }
        let pty = self.ptys.get(&channel).cloned();
        let mut env = vec![];
        if let Some(pty) = &pty {
            env.push(format!("TERM={}", pty.term));
        }
        let cmd = vec![
            "/bin/sh".to_string(),
            "-c".to_string(),
            command.clone().unwrap_or_else(|| SHELL.into()),
        ];
        let config = ExecConfig {
            attach_stdin: Some(true),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            tty: Some(pty.is_some()),
            env: Some(env),
            cmd: Some(cmd),
            console_size: pty.as_ref().map(|p| vec![p.rows as usize, p.cols as usize]),
            ..Default::default()
        };
        let docker = self.ctx.docker.clone();
        let exec = match docker.create_exec(&login.container, config).await {
            Ok(exec) => exec.id,
            Err(error) => {
                warn!(server = %login.server, %error, "the gateway could not exec in the container");
                return session.channel_failure(channel);
            }
        };
        let options = StartExecOptions {
            detach: false,
            tty: pty.is_some(),
            output_capacity: None,
        };
        let (mut output, mut input) = match docker.start_exec(&exec, Some(options)).await {
            Ok(StartExecResults::Attached { output, input }) => (output, input),
            Ok(StartExecResults::Detached) | Err(_) => return session.channel_failure(channel),
        };
        session.channel_success(channel)?;
        info!(target: "audit", event = "gateway", outcome = "accepted", server = %login.server,
              certificate = %login.key_id, peer = %self.peer,
              what = if command.is_some() { "exec" } else { "shell" });
        let (typed, mut keys) = mpsc::unbounded_channel::<Vec<u8>>();
        self.inputs.insert(channel, (exec.clone(), typed));
        tokio::spawn(async move {
            while let Some(bytes) = keys.recv().await {
                if input.write_all(&bytes).await.is_err() {
                    break;
                }
                let _ = input.flush().await;
            }
            let _ = input.shutdown().await;
        });
        let handle = session.handle();
        tokio::spawn(async move {
            while let Some(Ok(chunk)) = output.next().await {
                let sent = match chunk {
                    bollard::container::LogOutput::StdErr { message } => {
                        handle.extended_data(channel, 1, message).await
                    }
                    other => handle.data(channel, other.into_bytes()).await,
                };
                if sent.is_err() {
                    break;
                }
            }
            let code = docker
                .inspect_exec(&exec)
                .await
                .ok()
                .and_then(|e| e.exit_code)
                .unwrap_or(255);
            let _ = handle
                .exit_status_request(channel, u32::try_from(code).unwrap_or(255))
                .await;
            let _ = handle.eof(channel).await;
            let _ = handle.close(channel).await;
        });
        Ok(())
    }
}

impl russh::server::Handler for Connection {
    type Error = russh::Error;

    async fn auth_publickey_offered(
        &mut self,
        _user: &str,
        _key: russh::server::PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        // Only a certificate logs in: the decision waits for it.
        Ok(Auth::Accept)
    }

    async fn auth_publickey(
        &mut self,
        _user: &str,
        _key: russh::server::VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(Auth::reject())
    }

    async fn auth_openssh_certificate(
        &mut self,
        user: &str,
        cert: &Certificate,
    ) -> Result<Auth, Self::Error> {
        let servers = self.ctx.servers.state();
        let key = cert.public_key().fingerprint(HashAlg::Sha256);
        let server = match server_of(cert, &servers, &self.cas, now()) {
            Ok(server) => server,
            Err(reason) => {
                info!(target: "audit", event = "gateway-auth", outcome = "refused", user = ?user, %key,
                      certificate = ?cert.key_id(), peer = %self.peer, reason);
                return Ok(Auth::reject());
            }
        };
        let running = server.status.as_ref().and_then(|s| s.phase) == Some(Phase::Running);
        if !running || server.metadata.deletion_timestamp.is_some() {
            info!(target: "audit", event = "gateway-auth", outcome = "refused", user = ?user, %key,
                  server = %server.name_any(), peer = %self.peer, reason = "the server is not running");
            return Ok(Auth::reject());
        }
        let extensions = cert.extensions();
        let login = Login {
            server: format!("{}/{}", server.namespace().unwrap_or_default(), server.name_any()),
            container: super::plan::container_name(server),
            key_id: cert.key_id().to_string(),
            pty: extensions.contains_key(PERMIT_PTY),
            forwarding: extensions.contains_key(PERMIT_PORT_FORWARDING),
        };
        info!(target: "audit", event = "gateway-auth", outcome = "accepted", user = ?user, %key,
              certificate = ?cert.key_id(), server = %login.server, peer = %self.peer);
        self.login = Some(login);
        Ok(Auth::Accept)
    }

    async fn channel_open_session(
        &mut self,
        _channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        match self.login.is_some() {
            true => reply.accept().await,
            false => reply.reject(ChannelOpenFailure::AdministrativelyProhibited).await,
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn pty_request(
        &mut self,
        channel: ChannelId,
        term: &str,
        cols: u32,
        rows: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if !self.login.as_ref().is_some_and(|l| l.pty) {
            return session.channel_failure(channel);
        }
        self.ptys.insert(
            channel,
            PtySize {
                term: term.to_string(),
                cols,
                rows,
            },
        );
        session.channel_success(channel)
    }

    async fn shell_request(&mut self, channel: ChannelId, session: &mut Session) -> Result<(), Self::Error> {
        self.run(channel, None, session).await
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let command = String::from_utf8_lossy(data).into_owned();
        self.run(channel, Some(command), session).await
    }

    async fn data(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some((_, input)) = self.inputs.get(&channel) {
            let _ = input.send(data.to_vec());
        }
        Ok(())
    }

    async fn channel_eof(&mut self, channel: ChannelId, _session: &mut Session) -> Result<(), Self::Error> {
        // The client typed its last: the exec's stdin ends.
        self.inputs.remove(&channel);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn window_change_request(
        &mut self,
        channel: ChannelId,
        cols: u32,
        rows: u32,
        _pix_width: u32,
        _pix_height: u32,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some((exec, _)) = self.inputs.get(&channel) {
            let size = bollard::query_parameters::ResizeExecOptions {
                h: i32::try_from(rows).unwrap_or(24),
                w: i32::try_from(cols).unwrap_or(80),
            };
            let _ = self.ctx.docker.resize_exec(exec, size).await;
        }
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host: &str,
        port: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let refuse = |reply: ChannelOpenHandle, why| async move {
            reply.reject(why).await;
            Ok(())
        };
        let Some((server, container, forwarding)) =
            (self.login.as_ref()).map(|l| (l.server.clone(), l.container.clone(), l.forwarding))
        else {
            return refuse(reply, ChannelOpenFailure::AdministrativelyProhibited).await;
        };
        let local = matches!(host, "127.0.0.1" | "localhost" | "::1");
        let port = u16::try_from(port).ok().filter(|p| *p > 0);
        let (true, true, Some(port)) = (forwarding, local, port) else {
            info!(target: "audit", event = "gateway-forward", outcome = "refused", server = %server,
                  target = ?format!("{host}:{port:?}"), peer = %self.peer,
                  reason = "only ports of the server itself (127.0.0.1), with permit-port-forwarding");
            return refuse(reply, ChannelOpenFailure::AdministrativelyProhibited).await;
        };
        let Some(address) = self.address(&container).await else {
            warn!(server = %server, "the gateway found no address of the container");
            return refuse(reply, ChannelOpenFailure::ConnectFailed).await;
        };
        let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((address, port))).await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(error)) => {
                debug!(server = %server, port, %error, "nothing answers on that port of the server");
                return refuse(reply, ChannelOpenFailure::ConnectFailed).await;
            }
            Err(_) => return refuse(reply, ChannelOpenFailure::ConnectFailed).await,
        };
        reply.accept().await;
        let _ = tcp.set_nodelay(true);
        debug!(server = %server, port, "forwarding into the server");
        tokio::spawn(async move {
            let mut tcp = tcp;
            let mut stream = channel.into_stream();
            let _ = tokio::io::copy_bidirectional(&mut stream, &mut tcp).await;
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use russh::keys::ssh_key::certificate::{Builder, CertType};
    use russh::keys::{Algorithm, PrivateKey};

    use super::*;

    fn server(uid: &str) -> Arc<ComputeServer> {
        Arc::new(
            serde_yaml::from_str(&format!(
                "apiVersion: computeserver.io/v1alpha1\nkind: ComputeServer\n\
                 metadata: {{name: dev-{uid}, namespace: compute, uid: {uid}}}\nspec: {{owner: alice}}\n"
            ))
            .unwrap(),
        )
    }

    fn certificate(ca: &PrivateKey, principal: &str) -> Certificate {
        let key = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519).unwrap();
        let mut builder = Builder::new([1; 16], key.public_key().key_data().clone(), 100, 200).unwrap();
        builder.cert_type(CertType::User).unwrap();
        builder.valid_principal(principal).unwrap();
        builder.sign(ca).unwrap()
    }

    #[test]
    fn a_certificate_opens_the_one_server_it_names_while_valid_from_a_trusted_ca() {
        let ca = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519).unwrap();
        let other = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519).unwrap();
        let cas = [ca.public_key().fingerprint(HashAlg::Sha256)];
        let servers = vec![server("a"), server("b")];
        let cert = certificate(&ca, "compute-server:b");
        assert_eq!(server_of(&cert, &servers, &cas, 150).unwrap().name_any(), "dev-b");
        assert_eq!(
            server_of(&cert, &servers, &cas, 250).unwrap_err(),
            "certificate expired, not yet valid, or badly signed"
        );
        assert_eq!(
            server_of(&certificate(&other, "compute-server:a"), &servers, &cas, 150).unwrap_err(),
            "certificate signed by a CA not trusted here"
        );
        assert_eq!(
            server_of(&certificate(&ca, "compute-server:c"), &servers, &cas, 150).unwrap_err(),
            "the certificate names no server of this node"
        );
        assert_eq!(
            server_of(&certificate(&ca, "alice"), &servers, &cas, 150).unwrap_err(),
            "the certificate names no server of this node"
        );
    }
}
