//! The `bastion` role: an SSH jump host (russh) that lets people reach their own servers,
//! and only those, with plain OpenSSH: `ssh -J alice@bastion:2222 root@dev`.
//!
//! Logins are by public key only: the key must be in the `sshAuthorizedKeys` of a
//! ComputeServer owned by the SSH user name ([`access`]). The servers come from a watch cache
//! (kube-runtime reflector), not from an API call per login. A `direct-tcpip` request is
//! allowed to port 22 of the user's own Running servers and piped to the server's ssh
//! endpoint (`session.rs`); everything else is refused with a reason the user sees. The host
//! key persists in a file or a Secret ([`host_key`]). Open jumps are reported as the servers'
//! `ssh` activity, so the lifecycle does not stop a server someone is logged in to ([`activity`]).

pub mod access;
pub mod activity;
pub mod host_key;
mod metrics;
mod session;
pub mod throttle;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use russh::keys::HashAlg;
use tracing::{debug, info, warn};

use crate::api::ComputeServer;
use crate::runtime::watch;

/// How long a client may take from connecting to logging in.
const LOGIN_GRACE: Duration = Duration::from_secs(60);

/// How often a connection that has not logged in yet looks whether it has (to stop counting
/// against its source's limit).
const LOGIN_POLL: Duration = Duration::from_millis(50);

/// How often the throttle logs the bursts of refusals that are over and forgets idle sources.
const SWEEP: Duration = Duration::from_secs(5);

/// What a refused client reads before the connection closes (`ssh -v` shows it).
const REFUSED: &[u8] = b"Too many connections from your address; try again shortly\r\n";

/// Flags of `compute-server bastion`.
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("host_key").required(true).args(["host_key_file", "host_key_secret"])))]
pub struct Args {
    /// Where to accept SSH connections.
    #[arg(long, env = "COMPUTE_SERVER_LISTEN", default_value = "0.0.0.0:2222")]
    pub listen: SocketAddr,

    /// File with the host key (OpenSSH format); an ed25519 key is made there (mode 0600) if
    /// there is none. Give this or --host-key-secret.
    #[arg(long, env = "COMPUTE_SERVER_HOST_KEY_FILE")]
    pub host_key_file: Option<PathBuf>,

    /// Secret in --namespace holding the host key (data key `ssh_host_ed25519_key`); made
    /// with a new ed25519 key if missing. Give this or --host-key-file.
    #[arg(long, env = "COMPUTE_SERVER_HOST_KEY_SECRET")]
    pub host_key_secret: Option<String>,

    /// Namespace of the ComputeServers users may reach, and of the host key Secret.
    #[arg(long, env = "COMPUTE_SERVER_NAMESPACE", default_value = "compute")]
    pub namespace: String,

    /// Serve the ComputeServers of every namespace, not only --namespace; a name used in
    /// several namespaces is then addressed as NAME.NAMESPACE.
    #[arg(long, env = "COMPUTE_SERVER_ALL_NAMESPACES")]
    pub all_namespaces: bool,

    /// Usernames allowed to reach every server (comma-separated).
    #[arg(long, env = "COMPUTE_SERVER_ADMINS", value_delimiter = ',')]
    pub admins: Vec<String>,

    /// Address users reach the bastion at (HOST or HOST:PORT), shown in the hints it prints;
    /// default: the address the client connected to.
    #[arg(long, env = "COMPUTE_SERVER_BASTION_ADDRESS")]
    pub bastion_address: Option<String>,

    /// File of CA public keys (one per line, as sshd's TrustedUserCAKeys): user certificates
    /// they signed are accepted for the users named in their principals, while valid, even
    /// without a registered key.
    #[arg(long, env = "COMPUTE_SERVER_USER_CA_KEYS")]
    pub user_ca_keys: Option<PathBuf>,

    /// End a connection that has been idle this long (no bytes through any of its jumps, no new
    /// jump), such as 30m or 8h; 0s: never.
    #[arg(long, env = "COMPUTE_SERVER_IDLE_TIMEOUT", default_value = "1h", value_parser = duration)]
    pub idle_timeout: Duration,

    /// Where to serve /metrics, /healthz and /readyz.
    #[arg(long, env = "COMPUTE_SERVER_METRICS_ADDRESS", default_value = "0.0.0.0:8081")]
    pub metrics_address: SocketAddr,

    /// On SIGTERM (a rolling upgrade), stop taking connections but let open SSH sessions go on
    /// for up to this long, such as 10m; 0s: end them at once. A second SIGTERM or Ctrl-C ends them.
    #[arg(long, env = "COMPUTE_SERVER_DRAIN_TIMEOUT", default_value = "10m", value_parser = duration)]
    pub drain_timeout: Duration,

    /// Connections one address may have open that have not logged in yet (as OpenSSH's
    /// MaxStartups, per address); more are closed at once, before any key exchange. 0: no limit.
    #[arg(long, env = "COMPUTE_SERVER_MAX_STARTUPS_PER_SOURCE",
          default_value_t = throttle::Limits::DEFAULT.startups)]
    pub max_startups_per_source: u32,

    /// New connections a second one address may open, over time (the DHEat denial of service,
    /// CVE-2002-20001, needs many); more are closed at once. A connection that logs in gives its
    /// share back. 0: no limit.
    #[arg(long, env = "COMPUTE_SERVER_CONNECTION_RATE_PER_SOURCE",
          default_value_t = throttle::Limits::DEFAULT.rate, value_parser = rate)]
    pub connection_rate_per_source: f64,

    /// New connections one address may open at once before --connection-rate-per-source applies.
    #[arg(long, env = "COMPUTE_SERVER_CONNECTION_BURST_PER_SOURCE",
          default_value_t = throttle::Limits::DEFAULT.burst)]
    pub connection_burst_per_source: u32,
}

/// A rate flag: a number of connections a second, such as 2 or 0.5; 0 turns the limit off.
fn rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate >= 0.0 => Ok(rate),
        _ => Err(format!(
            "\"{text}\" is not a rate; write connections a second, such as 2 or 0.5 (0: no limit)"
        )),
    }
}

/// What a client idle for `limit` is told as it is disconnected.
fn idle_reason(limit: Duration) -> String {
    let friendly =
        jiff::SignedDuration::try_from(limit).map_or_else(|_| format!("{limit:?}"), |d| format!("{d:#}"));
    format!("idle for {friendly}; connect again when you need to")
}

/// What stops the bastion from starting or serving.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("host key from {origin}: {reason}")]
    HostKey { origin: String, reason: String },

    #[error("Kubernetes API: {0}")]
    Kube(#[source] kube::Error),

    #[error("the ComputeServer watch ended before it filled the cache")]
    CacheGone,

    /// What the modules every role shares refuse: the client's configuration, the listening
    /// address, the user CA keys.
    #[error(transparent)]
    Shared(#[from] crate::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A duration flag: `90s`, `30m`, `8h`, `1h30m`.
fn duration(text: &str) -> Result<Duration, String> {
    let parsed: jiff::SignedDuration = text
        .parse()
        .map_err(|_| format!("\"{text}\" is not a duration; write it like 90s, 30m or 8h"))?;
    Duration::try_from(parsed).map_err(|_| format!("\"{text}\" is negative"))
}

/// What the bastion's cache keeps of a server: spec and status, no annotations.
fn trim(server: &mut ComputeServer) {
    server.annotations_mut().clear();
}

/// Runs the bastion until SIGTERM or Ctrl-C: host key, metrics, the server cache, then SSH.
pub async fn run(args: Args) -> Result<()> {
    let client = crate::kube_client::connect().await?;
    let host_key = match (&args.host_key_file, &args.host_key_secret) {
        (Some(path), None) => host_key::from_file(path)?,
        (None, Some(name)) => host_key::from_secret(client.clone(), &args.namespace, name).await?,
        _ => {
            return Err(Error::HostKey {
                origin: "the flags".into(),
                reason: "give exactly one of --host-key-file and --host-key-secret".into(),
            });
        }
    };
    let host_fingerprint = host_key.public_key().fingerprint(HashAlg::Sha256);
    let user_cas = match &args.user_ca_keys {
        Some(path) => read_user_cas(path)?,
        None => Vec::new(),
    };

    let mut registry = prometheus_client::registry::Registry::with_prefix("compute_server_bastion");
    let metrics = metrics::Metrics::register(&mut registry);
    let ready = Arc::new(AtomicBool::new(false));
    let ready_check: crate::runtime::health::ReadyCheck = {
        let ready = ready.clone();
        Arc::new(move || {
            let ready = ready.load(Ordering::Relaxed);
            Box::pin(async move {
                match ready {
                    true => Ok(()),
                    false => Err("the ComputeServer cache is not filled yet".into()),
                }
            })
        })
    };
    let health = crate::runtime::health::spawn(args.metrics_address, registry, ready_check);

    let activity = activity::Reporter::new(client.clone(), metrics.clone());
    let reporter = tokio::spawn(activity.clone().run());
    let servers: Api<ComputeServer> = match args.all_namespaces {
        true => Api::all(client),
        false => Api::namespaced(client, &args.namespace),
    };
    let store = watch::reflect(servers, watcher::Config::default(), trim, |_| {});
    info!(namespace = %args.namespace, all_namespaces = args.all_namespaces, "filling the ComputeServer cache");
    store.wait_until_ready().await.map_err(|_| Error::CacheGone)?;
    ready.store(true, Ordering::Relaxed);

    let shared = Arc::new(session::Shared {
        servers: store,
        admins: args.admins.into_iter().filter(|a| !a.is_empty()).collect(),
        metrics: metrics.clone(),
        address: args.bastion_address,
        user_cas,
        activity,
    });
    let config = Arc::new(crate::ssh_ca::server_config(host_key));
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|source| crate::Error::Listen {
            addr: args.listen,
            source,
        })?;
    let limits = throttle::Limits {
        startups: args.max_startups_per_source,
        rate: args.connection_rate_per_source,
        burst: args.connection_burst_per_source,
    };
    info!(listen = %args.listen, host_key = %host_fingerprint,
          max_startups_per_source = limits.startups, connection_rate_per_source = limits.rate,
          connection_burst_per_source = limits.burst,
          "bastion ready for ssh -J USER@HOST:PORT root@SERVER");
    let throttle = Arc::new(Mutex::new(throttle::Throttle::new(limits)));
    let mut sweep = tokio::time::interval(SWEEP);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    let mut shutdown = std::pin::pin!(crate::runtime::health::shutdown());
    let mut connections = tokio::task::JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    warn!(%error, "could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = sweep.tick() => {
                sweep_throttle(&throttle, &metrics);
                continue;
            }
            () = &mut shutdown => break,
        };
        // Decided before anything is read or written: a refused client costs no key exchange.
        let source = peer.ip().to_canonical();
        let verdict = lock(&throttle).admit(source, Instant::now());
        if let throttle::Verdict::Refuse { why, first } = verdict {
            refuse(tcp, source, why, first, &metrics);
            continue;
        }
        let startup = Startup {
            throttle: throttle.clone(),
            source,
            counted: true,
        };
        connections.spawn(serve_connection(
            tcp,
            peer,
            config.clone(),
            shared.clone(),
            args.idle_timeout,
            startup,
        ));
    }
    // Draining: no new connections (and not ready, so the Service sends none), open sessions go on.
    drop(listener);
    ready.store(false, Ordering::Relaxed);
    drain(connections, args.drain_timeout).await;
    info!("bastion stopping");
    reporter.abort();
    health.abort();
    Ok(())
}

/// The throttle, whichever thread held it last (its state stays consistent: every change is one
/// step).
fn lock(
    throttle: &Mutex<throttle::Throttle<IpAddr>>,
) -> std::sync::MutexGuard<'_, throttle::Throttle<IpAddr>> {
    throttle.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Closes a refused connection at once, with a line for the client; counted, and logged when it
/// is the first of a burst from its source.
fn refuse(
    tcp: tokio::net::TcpStream,
    source: IpAddr,
    why: throttle::Refusal,
    first: bool,
    metrics: &metrics::Metrics,
) {
    metrics.throttled(why.label());
    if first {
        warn!(target: "audit", event = "throttle", outcome = "refused", %source, reason = why.describe(),
              "refusing connections from {source} before any key exchange ({}); further refusals are counted \
               in compute_server_bastion_throttled_connections_total, and logged once it has been quiet for {} s",
              why.describe(), throttle::QUIET.as_secs());
    }
    // A fresh socket's send buffer is empty: this does not block, and a failure changes nothing.
    let _ = tcp.try_write(REFUSED);
}

/// Logs the bursts of refusals that are over, and sets the gauge of sources being refused.
fn sweep_throttle(throttle: &Mutex<throttle::Throttle<IpAddr>>, metrics: &metrics::Metrics) {
    let (over, refusing) = {
        let mut throttle = lock(throttle);
        (throttle.sweep(Instant::now()), throttle.refusing())
    };
    for burst in over {
        info!(target: "audit", event = "throttle", outcome = "over", source = %burst.source,
              refused = burst.refused, seconds = (burst.last - burst.first).as_secs(),
              "no longer refusing connections from {}: {} refused", burst.source, burst.refused);
    }
    metrics
        .throttled_sources
        .set(i64::try_from(refusing).unwrap_or(i64::MAX));
}

/// A connection that has not logged in yet, as its source's throttle counts it: it stops counting
/// when it logs in ([`Startup::logged_in`]) or ends (dropped).
struct Startup {
    throttle: Arc<Mutex<throttle::Throttle<IpAddr>>>,
    source: IpAddr,
    counted: bool,
}

impl Startup {
    fn logged_in(&mut self) {
        if std::mem::take(&mut self.counted) {
            lock(&self.throttle).logged_in(&self.source, Instant::now());
        }
    }
}

impl Drop for Startup {
    fn drop(&mut self) {
        if self.counted {
            lock(&self.throttle).ended(&self.source);
        }
    }
}

/// Waits for the open connections to end, up to `limit` or a second SIGTERM or Ctrl-C; then ends
/// the rest.
async fn drain(mut connections: tokio::task::JoinSet<()>, limit: Duration) {
    while connections.try_join_next().is_some() {}
    if connections.is_empty() || limit.is_zero() {
        return;
    }
    info!(open = connections.len(), limit = ?limit, "stopped taking connections; waiting for the open ones to end");
    let all_ended = async { while connections.join_next().await.is_some() {} };
    tokio::select! {
        () = all_ended => info!("every connection ended"),
        () = tokio::time::sleep(limit) => warn!("connections still open after the drain timeout; ending them"),
        () = crate::runtime::health::shutdown() => warn!("told to stop again; ending the open connections"),
    }
}

/// The fingerprints of the CA keys in `path`.
fn read_user_cas(path: &std::path::Path) -> Result<Vec<russh::keys::ssh_key::Fingerprint>> {
    let keys = crate::ssh_ca::read_public_keys(path)?;
    Ok(keys
        .iter()
        .map(|key| {
            let fingerprint = key.fingerprint(HashAlg::Sha256);
            info!(ca = %fingerprint, "user certificates signed by this CA are accepted");
            fingerprint
        })
        .collect())
}

/// Runs one client connection to its end; a client that has not logged in within
/// [`LOGIN_GRACE`], or that has been idle for `idle_timeout` (unless zero), is disconnected.
/// `startup` stops counting against its source once the client logs in.
async fn serve_connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    config: Arc<russh::server::Config>,
    shared: Arc<session::Shared>,
    idle_timeout: Duration,
    mut startup: Startup,
) {
    let metrics = shared.metrics.clone();
    metrics.connections.inc();
    metrics.open_connections.inc();
    let local = tcp.local_addr().unwrap_or_else(|_| ([0, 0, 0, 0], 0).into());
    let _ = tcp.set_nodelay(true);
    let activity = Arc::new(session::Activity::new());
    let connection = session::Connection::new(shared, peer, local, activity.clone());
    let logged_in = connection.logged_in();
    let login_seen = logged_in.clone();
    let watch_login = async {
        while !login_seen.load(Ordering::Relaxed) {
            tokio::time::sleep(LOGIN_POLL).await;
        }
        startup.logged_in();
        std::future::pending::<()>().await;
    };
    let served = async {
        let session = tokio::time::timeout(LOGIN_GRACE, russh::server::run_stream(config, tcp, connection))
            .await
            .map_err(|_| russh::Error::ConnectionTimeout)??;
        let handle = session.handle();
        let idle = (!idle_timeout.is_zero()).then(|| {
            let handle = handle.clone();
            tokio::spawn(async move {
                // Sleeps until the connection would be idle long enough, then looks again.
                loop {
                    let at = activity.idle_at(idle_timeout);
                    if tokio::time::Instant::now() >= at.into() {
                        break;
                    }
                    tokio::time::sleep_until(at.into()).await;
                }
                info!(target: "audit", event = "idle", outcome = "disconnected", peer = %peer,
                      seconds = idle_timeout.as_secs());
                let reason = idle_reason(idle_timeout);
                let _ = handle
                    .disconnect(russh::Disconnect::ByApplication, reason, String::new())
                    .await;
            })
        });
        let grace = tokio::spawn(async move {
            tokio::time::sleep(LOGIN_GRACE).await;
            if !logged_in.load(Ordering::Relaxed) {
                let _ = handle
                    .disconnect(
                        russh::Disconnect::ByApplication,
                        "no login in time".into(),
                        String::new(),
                    )
                    .await;
            }
        });
        let result = session.await;
        grace.abort();
        if let Some(idle) = idle {
            idle.abort();
        }
        result
    };
    let result = tokio::select! {
        result = served => result,
        () = watch_login => unreachable!("watching for the login never ends"),
    };
    drop(startup);
    metrics.open_connections.dec();
    if let Err(error) = result {
        debug!(%peer, %error, "connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_timeouts_are_written_as_people_do() {
        assert_eq!(duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(duration("0s"), Ok(Duration::ZERO));
        assert!(
            duration("soon")
                .unwrap_err()
                .contains("write it like 90s, 30m or 8h")
        );
        assert!(duration("-5m").is_err());
        assert_eq!(
            idle_reason(Duration::from_secs(3)),
            "idle for 3s; connect again when you need to"
        );
        assert_eq!(
            idle_reason(Duration::from_secs(3600)),
            "idle for 1h; connect again when you need to"
        );
    }
}
