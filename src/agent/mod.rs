//! The `agent` role: one per Docker host. A kube-runtime controller over the ComputeServers
//! labelled with this node turns each into a hardened Docker container and reports status.
//!
//! Steps: resolve the profile and plan the container ([`plan`], pure), then apply it to Docker
//! ([`docker`]), then write status ([`status`]). Every step is idempotent: the container's
//! deterministic name and labels let a restarted agent adopt what it made.

mod activity;
mod copy;
pub mod decide;
pub mod diff;
mod docker;
mod error;
pub mod gateway;
pub mod gpu;
mod metrics;
pub mod network;
pub mod node;
pub mod plan;
mod prune;
mod snapshot;
mod status;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event, finalizer};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use tracing::{info, instrument, warn};

use crate::api::{CONTAINER_FINALIZER, ComputeProfile, ComputeServer, NODE_LABEL, Phase};
pub use error::{Error, Result};

/// How often a healthy server is looked at again: Docker is not watched by the API server.
const RESYNC: Duration = Duration::from_secs(30);
/// How long reconciles in flight may go on after a stop signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Servers reconciled at once: Docker makes containers one or two at a time anyway, and
/// each reconcile in flight holds its buffers.
const CONCURRENT_RECONCILES: u16 = 16;

/// `compute-server agent`: run the agent, or one of its admin commands.
#[derive(clap::Args, Debug)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub run: Args,
}

/// Admin commands run on a node, beside its agent.
#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Remove the data volumes of servers that are gone (listed in the ComputeNode's
    /// status.orphanedVolumes), orphaned for longer than --older-than. Says what it removed.
    Prune(prune::Args),
    /// Remove the servers' Docker networks of this engine and their firewall rules (once the
    /// node's servers are gone: a network still in use keeps its rules).
    Uninstall {
        /// The Docker engine to clean up.
        #[arg(long, env = "DOCKER_HOST", default_value = "unix:///var/run/docker.sock")]
        docker_host: String,
    },
}

/// Runs the agent, or the admin command asked for.
pub async fn main(cli: Cli) -> Result<()> {
    match (cli.command, cli.run) {
        (None, args) => run(args).await,
        (Some(Command::Prune(args)), _) => prune::run(args).await,
        (Some(Command::Uninstall { docker_host }), _) => {
            let docker = docker::connect(&docker_host).await?;
            let done = network::uninstall(&docker, &docker_host).await?;
            if done.is_empty() {
                println!("nothing to remove: no servers' network or firewall rules of compute-server here");
            }
            for line in done {
                println!("{line}");
            }
            Ok(())
        }
    }
}

/// Flags of `compute-server agent`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// This node's name: the agent runs the ComputeServers labelled computeserver.io/node=NAME.
    /// (Optional only to clap: the admin commands below take their own.)
    #[arg(long, env = "COMPUTE_SERVER_NODE", required = true)]
    pub node: Option<String>,

    /// The Docker engine to use.
    #[arg(long, env = "DOCKER_HOST", default_value = "unix:///var/run/docker.sock")]
    pub docker_host: String,

    /// Host name or address users reach this node's published ports at.
    #[arg(long, env = "COMPUTE_SERVER_NODE_ADDRESS", default_value = "127.0.0.1")]
    pub address: String,

    /// The only address servers' ports are published on (default: --address when it is an IP
    /// address). Never all interfaces, unless you ask for 0.0.0.0 here.
    #[arg(long, env = "COMPUTE_SERVER_PUBLISH_ADDRESS")]
    pub publish_address: Option<std::net::IpAddr>,

    /// Labels of this node's ComputeNode, for nodeSelector: `--label gpu=true` (repeatable).
    #[arg(long = "label", env = "COMPUTE_SERVER_NODE_LABELS", value_delimiter = ',', value_parser = parse_label)]
    pub labels: Vec<(String, String)>,

    /// The GPUs this node offers to servers, by index or UUID (`--gpu-devices 0,1`), for hosts
    /// where they are not to be found with nvidia-smi (the default: all it lists; none without it).
    #[arg(long, env = "COMPUTE_SERVER_GPU_DEVICES", value_delimiter = ',')]
    pub gpu_devices: Vec<String>,

    /// File of user CA public keys (the bastion's --user-ca-keys): each server's root account
    /// accepts certificates they signed for that server's principal, which is how the web
    /// front's browser terminal and apps log in. Without it, those are not offered.
    #[arg(long, env = "COMPUTE_SERVER_USER_CA_KEYS")]
    pub user_ca_keys: Option<std::path::PathBuf>,

    /// Port of the node's SSH gateway on the publish address, served when --user-ca-keys is
    /// given: the bastion's way into servers whose image runs no sshd (their web apps and
    /// terminal). 0: any free port; each server's status.gateway says which.
    #[arg(long, env = "COMPUTE_SERVER_GATEWAY_PORT", default_value_t = 0)]
    pub gateway_port: u16,

    /// Where to serve /metrics, /healthz and /readyz.
    #[arg(long, env = "COMPUTE_SERVER_METRICS_ADDRESS", default_value = "0.0.0.0:8081")]
    pub metrics_address: std::net::SocketAddr,

    /// Namespace of the node's heartbeat Lease.
    #[arg(long, env = "COMPUTE_SERVER_LEASE_NAMESPACE", default_value = "compute")]
    pub lease_namespace: String,

    /// Seconds the node's Lease lasts; the agent renews it four times as often. When it
    /// runs out, the scheduler marks the node not Ready and its servers NodeLost.
    #[arg(long, env = "COMPUTE_SERVER_LEASE_SECONDS", default_value_t = 40, value_parser = clap::value_parser!(u32).range(4..=3600))]
    pub lease_seconds: u32,

    /// How many times this host's CPUs may be promised to servers (its ComputeNode's
    /// spec.cpuAllocationRatio, written when that is empty; an admin's value stays): 4 lets a
    /// 2-core host take eight 1-CPU servers, each still limited to 1 CPU.
    #[arg(long, env = "COMPUTE_SERVER_CPU_ALLOCATION_RATIO", default_value = "4", value_parser = parse_ratio)]
    pub cpu_allocation_ratio: String,

    /// How many times this host's memory may be promised (spec.memoryAllocationRatio when
    /// empty). 1: none beyond what it has.
    #[arg(long, env = "COMPUTE_SERVER_MEMORY_ALLOCATION_RATIO", default_value = "1", value_parser = parse_ratio)]
    pub memory_allocation_ratio: String,

    #[command(flatten)]
    pub storage: crate::storage::SnapshotStore,
}

fn parse_ratio(text: &str) -> std::result::Result<String, crate::api::Invalid> {
    crate::api::size::ratio_milli(text).map(|_| text.to_string())
}

fn parse_label(text: &str) -> std::result::Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{text:?} is not KEY=VALUE"))
}

/// What every reconcile shares.
pub struct Context {
    /// The Kubernetes API.
    pub client: Client,
    /// This node's Docker engine.
    pub docker: bollard::Docker,
    /// Publishes Kubernetes Events on the servers.
    pub events: crate::runtime::events::Events,
    /// This node's name.
    pub node: String,
    /// Where users reach this node's published ports.
    pub address: String,
    /// Where ports are published and which network each server joins.
    pub host: plan::Host,
    /// The servers' networks and their firewall, checked on every heartbeat.
    pub network: network::Setup,
    /// Reconcile counts and durations, servers by phase.
    pub metrics: metrics::Metrics,
    /// This node's servers, as the controller's watch sees them.
    pub servers: Store<ComputeServer>,
    /// Every ComputeSnapshot, as the snapshots' controller sees them.
    pub snapshots: Store<crate::api::ComputeSnapshot>,
    /// Failed reconciles in a row per server uid, for the retry backoff.
    failures: std::sync::Mutex<std::collections::HashMap<String, u32>>,
    /// The last CPU sample of each container, for the lifecycle's activity.
    samples: activity::Samples,
    /// This node's GPUs.
    pub gpus: Vec<crate::api::NodeGpu>,
    /// GPUs given to servers whose status may not show it yet.
    claims: gpu::Claims,
    /// Where snapshots are kept (None: not set up on this install).
    pub store: Option<crate::storage::Store>,
    /// The port of the node's SSH gateway ([`gateway`]), when it serves one.
    pub gateway: Option<u16>,
}

impl Context {
    /// Publishes an Event on `server`; a failure to publish is logged, never fatal.
    async fn event(&self, server: &ComputeServer, type_: EventType, reason: &str, note: String) {
        self.events.publish(server, type_, reason, reason, note).await;
    }
}

pub async fn run(args: Args) -> Result<()> {
    let node = args
        .node
        .clone()
        .ok_or_else(|| Error::Config("give --node NAME (or COMPUTE_SERVER_NODE)".into()))?;
    let publish_address = match (args.publish_address, args.address.parse::<std::net::IpAddr>()) {
        (Some(address), _) | (None, Ok(address)) => address,
        (None, Err(_)) => {
            return Err(Error::Config(format!(
                "--address {} is a host name: give --publish-address, the IP address of this node that \
                 servers' ports are published on",
                args.address
            )));
        }
    };
    let store = crate::storage::Store::from_args(&args.storage)
        .map_err(|e| Error::Config(format!("--snapshot-store: {e}")))?;
    let client = crate::kube_client::connect().await?;
    let docker = docker::connect(&args.docker_host).await?;
    // No server starts on a network that is not closed.
    let network = network::setup(&docker, &args.docker_host, &publish_address.to_string()).await?;
    let host = plan::Host {
        publish_address: publish_address.to_string(),
        networks: (
            network.network(crate::api::Egress::Internet),
            network.network(crate::api::Egress::None),
        ),
        ipv6: std::path::Path::new("/proc/sys/net/ipv6").exists(),
        user_cas: match &args.user_ca_keys {
            Some(path) => crate::ssh_ca::read_public_keys(path)?,
            None => Vec::new(),
        },
    };
    let gateway = match host.user_cas.is_empty() {
        true => None,
        false => Some(
            gateway::bind(publish_address, args.gateway_port)
                .await
                .map_err(|e| {
                    Error::Config(format!(
                        "the gateway cannot listen on {publish_address}:{}: {e}",
                        args.gateway_port
                    ))
                })?,
        ),
    };
    let gateway_cas: Vec<_> = host
        .user_cas
        .iter()
        .map(|ca| ca.fingerprint(russh::keys::HashAlg::Sha256))
        .collect();
    let mut registry = prometheus_client::registry::Registry::with_prefix("compute_server_agent");
    let metrics = metrics::Metrics::register(&mut registry);
    let selector = format!("{NODE_LABEL}={node}");
    let controller = Controller::new(
        Api::<ComputeServer>::all(client.clone()),
        watcher::Config::default().labels(&selector),
    );
    let servers = controller.store();
    let snapshot_controller = Controller::new(
        Api::<crate::api::ComputeSnapshot>::all(client.clone()),
        watcher::Config::default(),
    );
    let gpus = gpu::inventory(&args.gpu_devices).await;
    let ctx = Arc::new(Context {
        gpus,
        claims: Default::default(),
        servers: servers.clone(),
        snapshots: snapshot_controller.store(),
        metrics,
        events: crate::runtime::events::Events::new(
            client.clone(),
            "compute-server-agent",
            Some(node.clone()),
        ),
        client: client.clone(),
        docker,
        node: node.clone(),
        address: args.address,
        host,
        network,
        failures: Default::default(),
        samples: Default::default(),
        store,
        gateway: gateway
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .map(|a| a.port()),
    });
    let gateway = gateway.map(|listener| tokio::spawn(gateway::serve(listener, ctx.clone(), gateway_cas)));
    info!(%node, %selector, "agent starting");
    let ready: crate::runtime::health::ReadyCheck = {
        let docker = ctx.docker.clone();
        Arc::new(move || {
            let docker = docker.clone();
            Box::pin(async move {
                docker
                    .ping()
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("Docker does not answer: {e}").into())
            })
        })
    };
    let health = crate::runtime::health::spawn(args.metrics_address, registry, ready);
    let (docker_changed, reconcile_all) = futures::channel::mpsc::unbounded();
    let heartbeat = {
        let registration = node::Registration {
            labels: args.labels.into_iter().collect(),
            lease_namespace: args.lease_namespace,
            lease_seconds: args.lease_seconds,
            ratios: (args.cpu_allocation_ratio, args.memory_allocation_ratio),
        };
        let ctx = ctx.clone();
        tokio::spawn(async move { node::heartbeat(&ctx, registration, docker_changed).await })
    };
    let controller = controller
        .with_config(ControllerConfig::default().concurrency(CONCURRENT_RECONCILES))
        .reconcile_all_on(reconcile_all)
        .graceful_shutdown_on(crate::runtime::health::shutdown())
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|result| async move {
            if let Err(error) = result {
                warn!(%error, "reconcile failed");
            }
        });
    let snapshots = snapshot_controller
        .graceful_shutdown_on(crate::runtime::health::shutdown())
        .run(snapshot::reconcile, snapshot_error_policy, ctx.clone())
        .for_each(|result| async move {
            if let Err(error) = result {
                warn!(%error, "snapshot reconcile failed");
            }
        });
    let controller = async {
        futures::future::join(controller, snapshots).await;
    };
    // Reconciles in flight get a while to finish after a stop signal (they are idempotent:
    // what one leaves half done, the next agent completes), not forever.
    let deadline = async {
        crate::runtime::health::shutdown().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        () = controller => {}
        () = deadline => warn!(grace = ?SHUTDOWN_GRACE, "reconciles still running after the stop signal; exiting anyway"),
    }
    heartbeat.abort();
    health.abort();
    if let Some(gateway) = gateway {
        gateway.abort();
    }
    Ok(())
}

#[instrument(skip_all, fields(server = %server.name_any(), namespace = server.namespace()))]
async fn reconcile(server: Arc<ComputeServer>, ctx: Arc<Context>) -> Result<Action> {
    let started = std::time::Instant::now();
    ctx.metrics.reconciles.inc();
    let uid = server.uid().unwrap_or_default();
    let result = reconcile_steps(server, &ctx).await;
    ctx.metrics.duration.observe(started.elapsed().as_secs_f64());
    match &result {
        Ok(_) => {
            ctx.failures.lock().expect("failures lock").remove(&uid);
        }
        Err(_) => {
            ctx.metrics.failures.inc();
        }
    }
    result
}

async fn reconcile_steps(server: Arc<ComputeServer>, ctx: &Context) -> Result<Action> {
    let api: Api<ComputeServer> =
        Api::namespaced(ctx.client.clone(), &server.namespace().unwrap_or_default());
    finalizer(&api, CONTAINER_FINALIZER, server, |event| async {
        match event {
            Event::Apply(server) => apply(&server, ctx).await,
            Event::Cleanup(server) => cleanup(&server, ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

/// Retries a failed server after 2 s, then twice as long each time it fails again, up to a minute
/// (a change to the server, or Docker answering again, retries it at once).
fn error_policy(server: Arc<ComputeServer>, error: &Error, ctx: Arc<Context>) -> Action {
    let mut failures = ctx.failures.lock().expect("failures lock");
    let count = failures.entry(server.uid().unwrap_or_default()).or_default();
    *count += 1;
    let delay = retry_delay(*count);
    warn!(%error, server = %server.name_any(), retry_in = ?delay, "will retry");
    Action::requeue(delay)
}

/// A snapshot that failed for a passing reason (the API server) is tried again in 10 s.
fn snapshot_error_policy(
    snapshot: Arc<crate::api::ComputeSnapshot>,
    error: &Error,
    _: Arc<Context>,
) -> Action {
    warn!(%error, snapshot = %snapshot.name_any(), "snapshot: will retry");
    Action::requeue(Duration::from_secs(10))
}

fn retry_delay(failures: u32) -> Duration {
    (Duration::from_secs(2) * 2u32.saturating_pow(failures.saturating_sub(1).min(10)))
        .min(Duration::from_secs(60))
}

/// The server's profile, read from the API server (None: it names none, or none of that name).
async fn profile_of(server: &ComputeServer, ctx: &Context) -> Result<Option<ComputeProfile>> {
    match &server.spec.profile {
        Some(name) => Api::<ComputeProfile>::all(ctx.client.clone())
            .get_opt(name)
            .await
            .map_err(Error::Kube),
        None => Ok(None),
    }
}

async fn apply(server: &ComputeServer, ctx: &Context) -> Result<Action> {
    // Archived and to stay stopped: nothing of it is here, and nothing is made.
    if let Some(snapshot) = server.archived_to()
        && !server.spec.running
    {
        status::write(server, ctx, status::archived(server, ctx, snapshot)).await?;
        return Ok(Action::await_change());
    }
    let profile = profile_of(server, ctx).await?;
    let plan = match plan::plan(server, profile.as_ref()) {
        Ok(plan) => plan,
        Err(refusal) => {
            let message = refusal.to_string();
            if status::differs(server, Phase::Failed, &message) {
                ctx.event(server, EventType::Warning, "Refused", message.clone())
                    .await;
            }
            status::write(server, ctx, status::failed(server, ctx, "Refused", message)).await?;
            return Ok(Action::await_change());
        }
    };
    // Placed here and not reported yet: say so at once (the scheduler's placement was the
    // label alone), before the container is made.
    if status::first_report(server, ctx) {
        let message = format!("placed on node {}; creating its container", ctx.node);
        status::write(server, ctx, status::creating(server, ctx, message)).await?;
    }
    // Its GPUs first, recorded in its status before a container uses them.
    let (server, plan) = match gpus(server, plan, ctx).await? {
        Ok(ready) => ready,
        Err(wait) => {
            let message = format!("{wait}; it starts when one is free");
            status::write(
                server,
                ctx,
                status::waiting(server, ctx, "WaitingForGpu", message),
            )
            .await?;
            return Ok(Action::requeue(GPU_RETRY));
        }
    };
    // A server made from a snapshot gets its data before it first starts.
    let server = match decide::pending_restore(&server) {
        Some(_) if decide::restore_refused(&server) => return Ok(Action::await_change()),
        Some(name) => match snapshot::restore(&server, &plan, name, ctx).await? {
            snapshot::Restore::Done(restored) => *restored,
            snapshot::Restore::Refused => return Ok(Action::await_change()),
            snapshot::Restore::Wait => return Ok(Action::requeue(GPU_RETRY)),
        },
        None => server,
    };
    let server = &server;
    match docker::ensure(server, &plan, ctx).await {
        Ok(observed) => {
            // A stop near: the message says when and why, from the moment the warning begins.
            let rules = crate::api::lifecycle::Rules::of(profile.as_ref());
            let now = k8s_openapi::jiff::Timestamp::now();
            let warning = crate::api::lifecycle::warning(server, &rules, now);
            let status = status::observed(server, ctx, &plan, &observed, warning.as_deref());
            let stopped = status.phase == Some(Phase::Stopped);
            let running = status.phase == Some(Phase::Running);
            status::write(server, ctx, status).await?;
            if stopped && crate::api::lifecycle::archive_due(server, &rules, now) {
                return snapshot::archive(server, ctx).await;
            }
            // A running server's scheduled snapshots, if its profile has a schedule.
            let scheduled = match running {
                true => snapshot::schedule(server, profile.as_ref(), ctx).await?,
                false => None,
            };
            // Looked at again when a stop's warning begins, or when it is due to be archived.
            let archive_at = rules
                .archive_after_stopped
                .zip(crate::api::lifecycle::stopped_since(server))
                .and_then(|(after, since)| since.checked_add(after).ok());
            let next = [
                crate::api::lifecycle::warning_starts(server, &rules, now),
                archive_at,
            ]
            .into_iter()
            .flatten()
            .filter_map(|t| std::time::Duration::try_from(t.duration_since(now)).ok())
            .chain(scheduled)
            .fold(RESYNC, |next, until| {
                next.min(until.max(Duration::from_millis(200)))
            });
            Ok(Action::requeue(next))
        }
        Err(error) => {
            let message = docker::explain(&error, &plan, &ctx.node);
            let reason = match error {
                Error::VolumeConflict(_) => "VolumeConflict",
                _ => "DockerError",
            };
            status::write(server, ctx, status::failed(server, ctx, reason, message)).await?;
            Err(error)
        }
    }
}

/// How often a server waiting for a GPU is tried again.
const GPU_RETRY: Duration = Duration::from_secs(5);

/// Assigns the server its GPUs (one server at a time: under the claims' lock) and records
/// them in its status.gpuDevices; the plan gets them. `Ok(Err)`: it has to wait.
async fn gpus(
    server: &ComputeServer,
    mut plan: plan::Plan,
    ctx: &Context,
) -> Result<std::result::Result<(ComputeServer, plan::Plan), gpu::Wait>> {
    let uid = server.uid().unwrap_or_default();
    let had = server
        .status
        .as_ref()
        .map(|s| s.gpu_devices.clone())
        .unwrap_or_default();
    let wanted = usize::try_from(plan.request.gpus).unwrap_or_default();
    if wanted == 0 && had.is_empty() {
        return Ok(Ok((server.clone(), plan)));
    }
    let mut claims = ctx.claims.0.lock().await;
    let servers = ctx.servers.state();
    claims.retain(|uid, _| servers.iter().any(|s| s.uid().as_deref() == Some(uid)));
    let held = gpu::held_by_others(&servers, &claims, &uid);
    let devices = match gpu::assign(&ctx.gpus, &held, &had, wanted) {
        Ok(devices) => devices,
        Err(wait) => return Ok(Err(wait)),
    };
    let mut server = server.clone();
    if devices != had {
        let api: Api<ComputeServer> =
            Api::namespaced(ctx.client.clone(), &server.namespace().unwrap_or_default());
        let patch = serde_json::json!({ "status": { "gpuDevices": devices } });
        api.patch_status(
            &server.name_any(),
            &Default::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .map_err(Error::Kube)?;
        info!(?devices, "GPUs assigned");
        server.status.get_or_insert_default().gpu_devices = devices.clone();
    }
    claims.insert(uid, (gpu::holder(&server), devices.clone()));
    plan.gpu_devices = devices;
    Ok(Ok((server, plan)))
}

async fn cleanup(server: &ComputeServer, ctx: &Context) -> Result<Action> {
    docker::remove(server, ctx).await?;
    ctx.claims
        .0
        .lock()
        .await
        .remove(&server.uid().unwrap_or_default());
    info!("container and data volume removed");
    Ok(Action::await_change())
}

#[cfg(test)]
mod fake_docker;
#[cfg(test)]
mod seam_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_to_a_minute() {
        let delays: Vec<u64> = (1..=8).map(|n| retry_delay(n).as_secs()).collect();
        assert_eq!(delays, vec![2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(retry_delay(1000).as_secs(), 60);
    }
}
