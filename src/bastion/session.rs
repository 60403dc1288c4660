//! One SSH connection to the bastion: public-key authentication against the cached
//! ComputeServers, `direct-tcpip` jumps to the user's own servers, and a clear "no" to
//! everything else.
//!
//! Every decision is written to the audit log (target `audit`): user, key fingerprint (SHA256),
//! target, outcome. User-supplied strings are logged quoted (`?`) so they cannot forge lines.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use kube::runtime::reflector::Store;
use russh::keys::ssh_key::Fingerprint;
use russh::keys::{Certificate, HashAlg, PublicKey};
use russh::server::{Auth, ChannelOpenHandle, Msg, PublicKeyOffer, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, ChannelOpenFailure, ChannelStream, Pty};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tracing::{info, warn};

use super::access;
use super::activity::Reporter;
use super::metrics::Metrics;
use crate::api::ComputeServer;

/// How long a jump waits for the server's sshd to accept the TCP connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What all connections share.
pub struct Shared {
    /// The watch cache of ComputeServers.
    pub servers: Store<ComputeServer>,
    /// Usernames that may reach every server.
    pub admins: HashSet<String>,
    /// Counters for /metrics.
    pub metrics: Metrics,
    /// The address users reach the bastion at, for the hints it prints; when unset, the
    /// address the client connected to.
    pub address: Option<String>,
    /// Fingerprints of the CAs whose user certificates are accepted (`--user-ca-keys`).
    pub user_cas: Vec<Fingerprint>,
    /// Reports open jumps as the servers' `ssh` activity.
    pub activity: Arc<Reporter>,
}

/// Who logged in on this connection, and with which key.
#[derive(Clone)]
struct Login {
    user: String,
    fingerprint: String,
    /// Checked again before each jump.
    credential: access::Credential,
}

/// When a connection last did something: logged in, asked for a jump, or carried a byte
/// through one. Connections idle for longer than `--idle-timeout` are ended.
pub struct Activity {
    start: Instant,
    /// Milliseconds from `start` to the last activity.
    last: AtomicU64,
}

impl Activity {
    pub fn new() -> Activity {
        Activity {
            start: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    pub fn touch(&self) {
        let millis = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.fetch_max(millis, Ordering::Relaxed);
    }

    /// When the connection becomes idle for `limit`, unless something happens before.
    pub fn idle_at(&self, limit: Duration) -> Instant {
        self.start + Duration::from_millis(self.last.load(Ordering::Relaxed)) + limit
    }
}

impl Default for Activity {
    fn default() -> Activity {
        Activity::new()
    }
}

/// A stream (a jump's channel) that records each byte it carries, either way, as activity.
struct Touching<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Touching<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Touching<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The state of one client connection.
pub struct Connection {
    shared: Arc<Shared>,
    peer: SocketAddr,
    local: SocketAddr,
    login: Option<Login>,
    logged_in: Arc<AtomicBool>,
    activity: Arc<Activity>,
}

impl Connection {
    /// A connection from `peer` to the bastion's address `local`, not logged in yet, whose
    /// activity goes to `activity`.
    pub fn new(
        shared: Arc<Shared>,
        peer: SocketAddr,
        local: SocketAddr,
        activity: Arc<Activity>,
    ) -> Connection {
        Connection {
            shared,
            peer,
            local,
            login: None,
            logged_in: Arc::default(),
            activity,
        }
    }

    /// Becomes true once the client has logged in.
    pub fn logged_in(&self) -> Arc<AtomicBool> {
        self.logged_in.clone()
    }

    /// Whether `key` may log in as `user`; a refusal is audited here.
    fn check_key(&self, user: &str, key: &PublicKey) -> bool {
        let servers = self.shared.servers.state();
        if access::user_has_key(&servers, user, key) {
            return true;
        }
        let reason = if access::user_is_known(&servers, user) {
            "key not in the sshAuthorizedKeys of any of the user's servers"
        } else {
            "no server is owned by this user"
        };
        self.shared.metrics.auth("refused");
        info!(target: "audit", event = "auth", outcome = "refused", user = ?user,
              key = %fingerprint(key), peer = %self.peer, reason);
        false
    }

    /// The `-J` hint: `user@address`, as the client should type it.
    fn jump_spec(&self) -> String {
        let user = self.login.as_ref().map_or("USER", |l| l.user.as_str());
        let address = self
            .shared
            .address
            .clone()
            .unwrap_or_else(|| match self.local.port() {
                22 => self.local.ip().to_string(),
                _ => self.local.to_string(),
            });
        format!("{user}@{address}")
    }

    /// Answers a shell, command or subsystem: this host runs nothing; say how to use it.
    fn refuse_session(
        &self,
        channel: ChannelId,
        what: &str,
        session: &mut Session,
    ) -> Result<(), russh::Error> {
        let login = self.login.as_ref();
        info!(target: "audit", event = "session", outcome = "refused",
              user = ?login.map(|l| &l.user), key = login.map(|l| l.fingerprint.as_str()),
              request = what, peer = %self.peer);
        let text = format!(
            "this is a jump host: it runs no shells or commands.\r\n\
             Reach your server with: ssh -J {} root@SERVER\r\n",
            self.jump_spec()
        );
        session.channel_success(channel)?;
        session.extended_data(channel, 1, text.into_bytes())?;
        session.exit_status_request(channel, 1)?;
        session.eof(channel)?;
        session.close(channel)
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// How often an open jump is checked against the cache: a share removed or a server deleted
/// ends it within this (plus the watch's delay).
const RECHECK: Duration = Duration::from_secs(1);

/// Resolves when `login` may no longer jump to `target`, with why.
async fn revoked(shared: &Shared, login: &Login, target: &access::Target) -> access::Refusal {
    let address = format!("{}.{}", target.name, target.namespace);
    let admin = shared.admins.contains(&login.user);
    let mut tick = tokio::time::interval(RECHECK);
    loop {
        tick.tick().await;
        let servers = shared.servers.state();
        let decision = access::still_allowed(
            &servers,
            &login.user,
            admin,
            &login.credential,
            &address,
            access::SSH_PORT,
        );
        match decision {
            // Stopping is the lifecycle's to end (the container goes, and the connection with it).
            Ok(_) | Err(access::Refusal::Stopped(_) | access::Refusal::NotRunning { .. }) => {}
            Err(refusal) => return refusal,
        }
    }
}

fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

impl russh::server::Handler for Connection {
    type Error = russh::Error;

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        // The offer does not say whether the key came in a certificate: with a user CA, the
        // decision waits until the signature is checked (auth_publickey or _certificate).
        if !self.shared.user_cas.is_empty() {
            return Ok(Auth::Accept);
        }
        // Spares the client a signature for a key that would be refused anyway.
        Ok(match self.check_key(user, offer.public_key) {
            true => Auth::Accept,
            false => Auth::reject(),
        })
    }

    async fn auth_publickey(&mut self, user: &str, key: VerifiedPublicKey<'_>) -> Result<Auth, Self::Error> {
        // Checked again: the servers may have changed since the key was offered.
        if !self.check_key(user, key.public_key) {
            return Ok(Auth::reject());
        }
        let login = Login {
            user: user.to_string(),
            fingerprint: fingerprint(key.public_key),
            credential: access::Credential::Key(key.public_key.clone()),
        };
        self.shared.metrics.auth("accepted");
        info!(target: "audit", event = "auth", outcome = "accepted", user = ?login.user,
              key = %login.fingerprint, peer = %self.peer);
        self.login = Some(login);
        self.logged_in.store(true, Ordering::Relaxed);
        self.activity.touch();
        Ok(Auth::Accept)
    }

    async fn auth_openssh_certificate(
        &mut self,
        user: &str,
        cert: &Certificate,
    ) -> Result<Auth, Self::Error> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let key = cert.public_key().fingerprint(HashAlg::Sha256).to_string();
        let ca = cert.signature_key().fingerprint(HashAlg::Sha256);
        if let Err(reason) = access::check_certificate(cert, user, &self.shared.user_cas, now) {
            self.shared.metrics.auth("refused");
            info!(target: "audit", event = "auth", outcome = "refused", user = ?user, key,
                  certificate = ?cert.key_id(), serial = cert.serial(), %ca, peer = %self.peer, reason);
            return Ok(Auth::reject());
        }
        self.shared.metrics.auth("accepted");
        info!(target: "audit", event = "auth", outcome = "accepted", user = ?user, key,
              certificate = ?cert.key_id(), serial = cert.serial(), %ca, peer = %self.peer);
        self.login = Some(Login {
            user: user.to_string(),
            fingerprint: key,
            credential: access::Credential::Certificate(Box::new(cert.clone())),
        });
        self.logged_in.store(true, Ordering::Relaxed);
        self.activity.touch();
        Ok(Auth::Accept)
    }

    async fn channel_open_session(
        &mut self,
        _channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        // Accepted only to print, on the first request, why nothing runs here.
        reply.accept().await;
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _cols: u32,
        _rows: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // A "yes" keeps "PTY allocation request failed" out of the user's way; the shell
        // request that follows gets the explanation.
        session.channel_success(channel)
    }

    async fn shell_request(&mut self, channel: ChannelId, session: &mut Session) -> Result<(), Self::Error> {
        self.refuse_session(channel, "shell", session)
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        _command: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refuse_session(channel, "exec", session)
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.refuse_session(channel, &format!("subsystem {name:?}"), session)
    }

    async fn tcpip_forward(
        &mut self,
        address: &str,
        port: &mut u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        let login = self.login.as_ref();
        info!(target: "audit", event = "remote-forward", outcome = "refused",
              user = ?login.map(|l| &l.user), key = login.map(|l| l.fingerprint.as_str()),
              target = ?format!("{address}:{port}"), peer = %self.peer);
        Ok(false)
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
        let Some(login) = self.login.clone() else {
            // russh opens channels only after authentication; never reached.
            reply.reject(ChannelOpenFailure::AdministrativelyProhibited).await;
            return Ok(());
        };
        self.activity.touch();
        let wanted = format!("{host}:{port}");
        let admin = self.shared.admins.contains(&login.user);
        let servers = self.shared.servers.state();
        let decision = access::decide(
            &servers,
            &login.user,
            admin,
            &login.credential,
            &self.shared.user_cas,
            unix_now(),
            host,
            port,
        );
        match decision {
            Err(refusal) => {
                self.shared.metrics.jump("refused");
                info!(target: "audit", event = "jump", outcome = "refused", user = ?login.user,
                      key = %login.fingerprint, target = ?wanted, peer = %self.peer, reason = %refusal);
                let reason = refusal.to_string();
                reply.reject(ChannelOpenFailure::Other { code: 1, reason }).await;
            }
            Ok(target) => {
                let (shared, peer) = (self.shared.clone(), self.peer);
                let channel = Touching {
                    inner: channel.into_stream(),
                    activity: self.activity.clone(),
                };
                tokio::spawn(jump(shared, login, peer, wanted, target, channel, reply));
            }
        }
        Ok(())
    }
}

/// Connects to the server's sshd and pipes bytes both ways until either side ends.
async fn jump(
    shared: Arc<Shared>,
    login: Login,
    peer: SocketAddr,
    wanted: String,
    target: access::Target,
    mut channel: Touching<ChannelStream<Msg>>,
    reply: ChannelOpenHandle,
) {
    let server = format!("{}/{}", target.namespace, target.name);
    let endpoint = format!("{}:{}", target.host, target.port);
    let connect = tokio::time::timeout(
        CONNECT_TIMEOUT,
        TcpStream::connect((target.host.as_str(), target.port)),
    );
    let mut tcp = match connect.await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(error)) => {
            return failed(&shared, &login, peer, &wanted, &server, error.to_string(), reply).await;
        }
        Err(_) => return failed(&shared, &login, peer, &wanted, &server, "timed out".into(), reply).await,
    };
    let _ = tcp.set_nodelay(true);
    reply.accept().await;
    // The server is in use while this is held, traffic or not (the lifecycle's idle stop).
    let _in_use = shared.activity.open(&target.namespace, &target.name);
    shared.metrics.jump("accepted");
    shared.metrics.open_jumps.inc();
    info!(target: "audit", event = "jump", outcome = "accepted", user = ?login.user,
          key = %login.fingerprint, target = ?wanted, server, owner = ?target.owner, endpoint, peer = %peer);
    let started = Instant::now();
    let result = tokio::select! {
        result = tokio::io::copy_bidirectional(&mut channel, &mut tcp) => result,
        refusal = revoked(&shared, &login, &target) => {
            shared.metrics.open_jumps.dec();
            shared.metrics.jump("revoked");
            warn!(target: "audit", event = "jump", outcome = "revoked", user = ?login.user,
                  key = %login.fingerprint, server, owner = ?target.owner, peer = %peer,
                  seconds = started.elapsed().as_secs(), reason = %refusal);
            // Dropping the channel closes it: the client's session through it ends.
            return;
        }
    };
    shared.metrics.open_jumps.dec();
    let seconds = started.elapsed().as_secs();
    match result {
        Ok((up, down)) => {
            info!(user = ?login.user, server, seconds, bytes_up = up, bytes_down = down, "jump ended")
        }
        Err(error) => info!(user = ?login.user, server, seconds, %error, "jump ended"),
    }
}

async fn failed(
    shared: &Shared,
    login: &Login,
    peer: SocketAddr,
    wanted: &str,
    server: &str,
    error: String,
    reply: ChannelOpenHandle,
) {
    shared.metrics.jump("failed");
    warn!(target: "audit", event = "jump", outcome = "failed", user = ?login.user,
          key = %login.fingerprint, target = ?wanted, server, peer = %peer, %error);
    let name = wanted.rsplit_once(':').map_or(wanted, |(host, _)| host);
    let reason = format!("server {name} does not answer on its ssh port; try again in a moment");
    reply.reject(ChannelOpenFailure::Other { code: 2, reason }).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_is_idle_a_limit_after_its_last_activity() {
        let activity = Activity::new();
        let limit = Duration::from_secs(60);
        let first = activity.idle_at(limit);
        assert!(first <= Instant::now() + limit);
        std::thread::sleep(Duration::from_millis(20));
        activity.touch();
        let later = activity.idle_at(limit);
        assert!(
            later >= first + Duration::from_millis(20),
            "touched: the deadline moves"
        );
    }
}
