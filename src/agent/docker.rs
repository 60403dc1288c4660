//! Applying a plan to this node's Docker engine through bollard.

use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::models::{ContainerInspectResponse, ContainerSummary, VolumeCreateRequest};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, EventsOptions, ListContainersOptions,
    ListVolumesOptions, LogsOptionsBuilder, RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use futures::TryStreamExt;
use kube::ResourceExt;
use kube::runtime::events::EventType;
use tracing::{info, warn};

use super::plan::{self, Plan, SPEC_HASH_LABEL};
use super::{Context, decide, status};
use super::{Error, Result};
use crate::api::{ComputeServer, NODE_LABEL};

/// Connects to Docker, speaking the daemon's API version when it answers (Debian's 20.10
/// serves 1.41, older than bollard's default). If it does not answer yet, the agent starts
/// anyway and each server's status says so until it does.
pub async fn connect(host: &str) -> Result<Docker> {
    let docker = Docker::connect_with_host(host).map_err(Error::Docker)?;
    match docker.clone().negotiate_version().await {
        Ok(negotiated) => Ok(negotiated),
        Err(error) => {
            warn!(%error, host, "Docker does not answer yet; will keep trying");
            Ok(docker)
        }
    }
}

fn not_found(error: &DockerError) -> bool {
    matches!(
        error,
        DockerError::DockerResponseServerError { status_code: 404, .. }
    )
}

async fn inspect(docker: &Docker, name: &str) -> Result<Option<ContainerInspectResponse>> {
    match docker.inspect_container(name, None).await {
        Ok(found) => Ok(Some(found)),
        Err(error) if not_found(&error) => Ok(None),
        Err(error) => Err(Error::Docker(error)),
    }
}

/// Inspects a container that must exist (it was just made or seen).
async fn inspect_existing(docker: &Docker, name: &str) -> Result<ContainerInspectResponse> {
    inspect(docker, name)
        .await?
        .ok_or_else(|| Error::Gone(name.to_string()))
}

/// What Docker shows after the container was brought to the state the server asks for.
pub struct Observed {
    pub container: ContainerInspectResponse,
    /// Something worth telling the user beyond the phase, such as why it was restarted.
    pub note: Option<String>,
    /// How the container ended, when it is stopped though the server should run.
    pub end: Option<decide::End>,
    /// The last lines of its log, when its program failed.
    pub log_tail: Option<String>,
}

/// Makes the container match the plan: create it (pulling the image, making the data
/// volume) or recreate it when it is stale, then start or stop it per `spec.running`.
/// Each step reads what Docker shows, asks [`decide`] and carries out the answer.
pub async fn ensure(server: &ComputeServer, plan: &Plan, ctx: &Context) -> Result<Observed> {
    let docker = &ctx.docker;
    let (created, mut note) = make_container(server, plan, ctx).await?;
    let told = created.then(|| format!("created container {} from {}", plan.container_name, plan.image));
    let container = inspect_telling(server, plan, ctx, "Created", told).await?;
    let state = container.state.clone().unwrap_or_default();
    let end = match stopped_though_running(server, &state) {
        true => {
            let (killed, engine_started) = tokio::join!(killed(docker, &container), engine_started(docker));
            Some(decide::end(&state, killed, engine_started))
        }
        false => None,
    };
    let started = match decide::run(server, &state, end.as_ref()) {
        decide::Run::Leave => return observed(docker, plan, container, note, end).await,
        decide::Run::Start(why) => {
            if let Some(why) = why {
                let type_ = if why.warning {
                    EventType::Warning
                } else {
                    EventType::Normal
                };
                ctx.event(server, type_, why.reason, why.message.clone()).await;
                note = Some(why.message);
            }
            start(docker, plan, &container).await?;
            true
        }
        decide::Run::Stop => {
            let options = StopContainerOptionsBuilder::default().t(10).build();
            docker
                .stop_container(&plan.container_name, Some(options))
                .await
                .map_err(Error::Docker)?;
            let why = "stopped on request; container and data kept";
            ctx.event(server, EventType::Normal, "Stopped", why.into()).await;
            false
        }
    };
    let told = started.then(|| format!("started container {}", plan.container_name));
    let container = inspect_telling(server, plan, ctx, "Started", told).await?;
    let state = container.state.clone().unwrap_or_default();
    // A program that ends at once, just started by this pass, is seen here already.
    let end = stopped_though_running(server, &state).then(|| decide::end(&state, Some(false), None));
    observed(docker, plan, container, note, end).await
}

/// Removes a container that must go and creates the planned one where there is none ([`decide::existing`]):
/// whether it created one, and a note for the user when someone removed it by hand.
async fn make_container(
    server: &ComputeServer,
    plan: &Plan,
    ctx: &Context,
) -> Result<(bool, Option<String>)> {
    let docker = &ctx.docker;
    let desired = plan::container(server, plan, &ctx.host);
    let desired_hash = desired
        .labels
        .as_ref()
        .and_then(|l| l.get(SPEC_HASH_LABEL).cloned())
        .unwrap_or_default();
    let current = inspect(docker, &plan.container_name).await?;
    let gone = match &current {
        Some(c) if c.state.as_ref().and_then(|s| s.running) != Some(true) => network_gone(docker, c).await?,
        _ => false,
    };
    let (create, note) = match decide::existing(server, &desired_hash, current.as_ref(), gone) {
        decide::Existing::Keep => (false, None),
        decide::Existing::Replace(why) => {
            remove_container(docker, &plan.container_name).await?;
            ctx.event(server, EventType::Normal, "Recreated", why.into())
                .await;
            (true, None)
        }
        decide::Existing::Missing {
            removed_by_hand: false,
        } => (true, None),
        decide::Existing::Missing {
            removed_by_hand: true,
        } => {
            let why = "the container was removed outside compute-server; created it again (data volume kept)";
            ctx.event(server, EventType::Warning, "Recreated", why.into())
                .await;
            (true, Some(why.to_string()))
        }
    };
    if create {
        create_container(server, plan, desired, ctx).await?;
    }
    Ok((create, note))
}

/// Makes the server's container (and data volume) as [`ensure`] would, without starting it.
pub async fn prepare(server: &ComputeServer, plan: &Plan, ctx: &Context) -> Result<()> {
    make_container(server, plan, ctx).await.map(|_| ())
}

/// Inspects the server's container while the Event `told` (if any) goes out under `reason`: the
/// Event is out before the status that follows.
async fn inspect_telling(
    server: &ComputeServer,
    plan: &Plan,
    ctx: &Context,
    reason: &str,
    told: Option<String>,
) -> Result<ContainerInspectResponse> {
    let event = async {
        if let Some(note) = told {
            ctx.event(server, EventType::Normal, reason, note).await;
        }
    };
    let (container, ()) = tokio::join!(inspect_existing(&ctx.docker, &plan.container_name), event);
    container
}

/// Starts the container with room to start in; [`own_quota`] then holds it to its own.
async fn start(docker: &Docker, plan: &Plan, container: &ContainerInspectResponse) -> Result<()> {
    let boost = plan::start_nano_cpus(plan.request.nano_cpus);
    if nano_cpus(container) != Some(boost) {
        set_nano_cpus(docker, &plan.container_name, boost).await?;
    }
    docker
        .start_container(&plan.container_name, None)
        .await
        .map_err(Error::Docker)
}

/// What a pass reports: the container held to its own quota, and the last lines of a program
/// that failed.
async fn observed(
    docker: &Docker,
    plan: &Plan,
    container: ContainerInspectResponse,
    note: Option<String>,
    end: Option<decide::End>,
) -> Result<Observed> {
    let container = own_quota(docker, plan, container).await?;
    let log_tail = match &end {
        Some(decide::End::Program { code, .. }) if *code != 0 => log_tail(docker, &plan.container_name).await,
        _ => None,
    };
    Ok(Observed {
        container,
        note,
        end,
        log_tail,
    })
}

fn nano_cpus(container: &ContainerInspectResponse) -> Option<i64> {
    container.host_config.as_ref().and_then(|h| h.nano_cpus)
}

/// The container held to its own CPU quota, before anyone is told it runs: it may have
/// been started with more ([`plan::start_nano_cpus`]), and an agent may have died between
/// that start and this.
async fn own_quota(
    docker: &Docker,
    plan: &Plan,
    container: ContainerInspectResponse,
) -> Result<ContainerInspectResponse> {
    if nano_cpus(&container) == Some(plan.request.nano_cpus) {
        return Ok(container);
    }
    set_nano_cpus(docker, &plan.container_name, plan.request.nano_cpus).await?;
    inspect_existing(docker, &plan.container_name).await
}

/// Changes a container's CPU quota, running or not (`docker update --cpus`).
async fn set_nano_cpus(docker: &Docker, name: &str, nano_cpus: i64) -> Result<()> {
    let update = bollard::models::ContainerUpdateBody {
        nano_cpus: Some(nano_cpus),
        ..Default::default()
    };
    docker.update_container(name, update).await.map_err(Error::Docker)
}

/// The server should run, and its container neither runs nor is being restarted by Docker.
fn stopped_though_running(server: &ComputeServer, state: &bollard::models::ContainerState) -> bool {
    server.spec.running && state.running != Some(true) && state.restarting != Some(true)
}

/// Makes the container: the image (pulled if missing), the data volume (only one made for
/// this server is mounted), then the container itself.
async fn create_container(
    server: &ComputeServer,
    plan: &Plan,
    desired: bollard::models::ContainerCreateBody,
    ctx: &Context,
) -> Result<()> {
    let docker = &ctx.docker;
    ensure_image(server, plan, ctx).await?;
    let volume = match docker.inspect_volume(&plan.volume_name).await {
        Ok(volume) => Some(volume),
        Err(error) if not_found(&error) => None,
        Err(error) => return Err(Error::Docker(error)),
    };
    match decide::volume(server, &ctx.node, volume.as_ref()) {
        decide::VolumeUse::Mount => {}
        decide::VolumeUse::Create => {
            let volume = VolumeCreateRequest {
                name: Some(plan.volume_name.clone()),
                labels: Some(plan::labels(server)),
                ..Default::default()
            };
            docker.create_volume(volume).await.map_err(Error::Docker)?;
        }
        decide::VolumeUse::Refuse(why) => {
            warn!(volume = %plan.volume_name, "{why}");
            if server.status.as_ref().and_then(|s| s.message.as_deref()) != Some(why.as_str()) {
                ctx.event(server, EventType::Warning, "VolumeConflict", why.clone())
                    .await;
            }
            return Err(Error::VolumeConflict(why));
        }
    }
    let options = CreateContainerOptionsBuilder::default()
        .name(&plan.container_name)
        .build();
    match docker.create_container(Some(options), desired).await {
        Ok(_) => {}
        // Created meanwhile by an earlier pass of ours: the name makes that safe.
        Err(DockerError::DockerResponseServerError { status_code: 409, .. }) => {}
        Err(error) => return Err(Error::Docker(error)),
    }
    info!(container = %plan.container_name, image = %plan.image, "container created");
    Ok(())
}

/// Whether Docker's event log shows the stopped container being killed (`docker stop`, `docker
/// kill`) during its last run, only its death, or nothing (the log is gone: Docker restarted).
async fn killed(docker: &Docker, container: &ContainerInspectResponse) -> Option<bool> {
    let state = container.state.as_ref()?;
    let time = |t: Option<&String>| t.and_then(|t| t.parse::<jiff::Timestamp>().ok());
    let started = time(state.started_at.as_ref())?;
    let finished = time(state.finished_at.as_ref())?;
    let filters = std::collections::HashMap::from([
        ("container".to_string(), vec![container.id.clone()?]),
        ("type".to_string(), vec!["container".to_string()]),
        ("event".to_string(), vec!["kill".to_string(), "die".to_string()]),
    ]);
    let options = EventsOptions {
        since: Some(started.as_second().to_string()),
        until: Some((finished.as_second() + 2).to_string()),
        filters: Some(filters),
    };
    let events: Vec<_> = docker.events(Some(options)).try_collect().await.ok()?;
    let action = |name: &str| events.iter().any(|e| e.action.as_deref() == Some(name));
    if action("kill") {
        Some(true)
    } else if action("die") {
        Some(false)
    } else {
        None
    }
}

/// When the Docker engine started: it makes its default network ("bridge") anew on every start,
/// so that network's creation time. None where it has none (`--bridge=none`).
async fn engine_started(docker: &Docker) -> Option<jiff::Timestamp> {
    let bridge = docker.inspect_network("bridge", None).await.ok()?;
    bridge.created?.parse().ok()
}

/// The last lines the container wrote, for the message of a program that failed.
async fn log_tail(docker: &Docker, name: &str) -> Option<String> {
    let options = LogsOptionsBuilder::default()
        .stdout(true)
        .stderr(true)
        .tail("5")
        .build();
    let chunks: Vec<_> = docker.logs(name, Some(options)).try_collect().await.ok()?;
    let text: String = chunks.iter().map(|c| c.to_string()).collect();
    Some(decide::log_tail(&text, 3))
}

/// Whether a network the (stopped) container is attached to is gone, or is another network of
/// the same name now (`compute-server agent uninstall`, or `docker network rm`, while it was
/// stopped): Docker would refuse to start it.
async fn network_gone(docker: &Docker, container: &ContainerInspectResponse) -> Result<bool> {
    let attached = container
        .network_settings
        .as_ref()
        .and_then(|n| n.networks.clone())
        .unwrap_or_default();
    for (name, endpoint) in attached {
        match docker
            .inspect_network(&name, None::<bollard::query_parameters::InspectNetworkOptions>)
            .await
        {
            // A container made but never started (a restore fills it first) names its networks
            // without their IDs yet: Docker looks them up by name when it starts.
            Ok(network)
                if network.id.is_some()
                    && endpoint.network_id.as_deref().is_some_and(|id| !id.is_empty())
                    && network.id != endpoint.network_id =>
            {
                return Ok(true);
            }
            Ok(_) => {}
            Err(error) if not_found(&error) => return Ok(true),
            Err(error) => return Err(Error::Docker(error)),
        }
    }
    Ok(false)
}

/// Pulls the image if this node lacks it, telling the user while it does.
async fn ensure_image(server: &ComputeServer, plan: &Plan, ctx: &Context) -> Result<()> {
    match ctx.docker.inspect_image(&plan.image).await {
        Ok(_) => return Ok(()),
        Err(error) if not_found(&error) => {}
        Err(error) => return Err(Error::Docker(error)),
    }
    let message = format!("pulling image {} on node {}", plan.image, ctx.node);
    status::write(server, ctx, status::creating(server, ctx, message.clone())).await?;
    ctx.event(server, EventType::Normal, "Pulling", message).await;
    let options = CreateImageOptionsBuilder::default()
        .from_image(&plan.image)
        .build();
    ctx.docker
        .create_image(Some(options), None, None)
        .try_for_each(|_| async { Ok(()) })
        .await
        .map_err(|source| Error::Pull {
            image: plan.image.clone(),
            source,
        })
}

/// A removal whose target is already gone has done its job.
fn gone_is_fine(result: std::result::Result<(), DockerError>) -> Result<()> {
    match result {
        Err(error) if !not_found(&error) => Err(Error::Docker(error)),
        _ => Ok(()),
    }
}

async fn remove_container(docker: &Docker, name: &str) -> Result<()> {
    let options = RemoveContainerOptionsBuilder::default().force(true).build();
    gone_is_fine(docker.remove_container(name, Some(options)).await)
}

async fn remove_volume(docker: &Docker, name: &str) -> Result<()> {
    gone_is_fine(
        docker
            .remove_volume(name, None::<bollard::query_parameters::RemoveVolumeOptions>)
            .await,
    )
}

/// Whether this node holds data of the server that a restore must not overwrite (see
/// [`decide::holds_data`]).
pub async fn holds_data(server: &ComputeServer, ctx: &Context) -> Result<bool> {
    let container = inspect(&ctx.docker, &plan::container_name(server)).await?;
    let volume = match ctx.docker.inspect_volume(&plan::volume_name(server)).await {
        Ok(_) => true,
        Err(error) if not_found(&error) => false,
        Err(error) => return Err(Error::Docker(error)),
    };
    Ok(decide::holds_data(
        container.as_ref().and_then(|c| c.state.as_ref()),
        volume,
    ))
}

/// Removes the server's container and its data volume; what is already gone is fine.
pub async fn remove(server: &ComputeServer, ctx: &Context) -> Result<()> {
    remove_container(&ctx.docker, &plan::container_name(server)).await?;
    remove_volume(&ctx.docker, &plan::volume_name(server)).await
}

/// What the sweep of this node's containers and volumes did and found.
pub struct Sweep {
    /// Data volumes whose server is gone: kept, reported on the ComputeNode.
    pub orphaned_volumes: Vec<bollard::models::Volume>,
    /// The API server shows none of this node's servers: nothing was removed.
    pub held: Option<String>,
}

/// Removes this node's containers whose ComputeServer is gone (`servers`, listed after the
/// containers, holds every server placed here) and lists the data volumes whose server is gone,
/// which are kept: data goes only with its server's deletion, or an admin's `agent prune`.
pub async fn sweep(
    ctx: &Context,
    containers: &[ContainerSummary],
    servers: &[std::sync::Arc<ComputeServer>],
) -> Result<Sweep> {
    let live: std::collections::HashSet<String> = servers.iter().filter_map(|s| s.uid()).collect();
    let volumes = list_volumes(&ctx.docker, &ctx.node).await?;
    let found = decide::sweep(containers, &volumes, &live);
    if let Some(why) = &found.hold {
        return Ok(Sweep {
            orphaned_volumes: found.orphaned_volumes,
            held: Some(why.clone()),
        });
    }
    for name in &found.remove {
        info!(container = %name, "removing orphan: its ComputeServer is gone (its data volume is kept)");
        remove_container(&ctx.docker, name).await?;
    }
    Ok(Sweep {
        orphaned_volumes: found.orphaned_volumes,
        held: None,
    })
}

/// This node's data volumes (made by compute-server for servers placed here).
pub async fn list_volumes(docker: &Docker, node: &str) -> Result<Vec<bollard::models::Volume>> {
    let volumes = docker
        .list_volumes(Some(ListVolumesOptions {
            filters: Some(ours(node)),
        }))
        .await
        .map_err(Error::Docker)?;
    Ok(volumes.volumes.unwrap_or_default())
}

/// Removes one data volume (for `agent prune`); what is already gone is fine.
pub async fn prune_volume(docker: &Docker, name: &str) -> Result<()> {
    remove_volume(docker, name).await
}

/// Filters for what this agent made on its node.
pub fn ours(node: &str) -> std::collections::HashMap<String, Vec<String>> {
    let labels = vec![
        format!("{}={}", plan::MANAGED_BY_LABEL, plan::MANAGED_BY),
        format!("{NODE_LABEL}={node}"),
    ];
    std::collections::HashMap::from([("label".to_string(), labels)])
}

/// This node's containers (all, running or not).
pub async fn list_ours(ctx: &Context) -> Result<Vec<ContainerSummary>> {
    let options = ListContainersOptions {
        all: true,
        filters: Some(ours(&ctx.node)),
        ..Default::default()
    };
    ctx.docker
        .list_containers(Some(options))
        .await
        .map_err(Error::Docker)
}

/// The user's view of an error while applying a plan.
pub fn explain(error: &Error, plan: &Plan, node: &str) -> String {
    match error {
        Error::Pull { image, source } => format!("could not pull image {image}: {}", docker_reason(source)),
        Error::VolumeConflict(why) => why.clone(),
        Error::Docker(source) => match source {
            DockerError::DockerResponseServerError { message, .. }
                if message.contains("could not select device driver") =>
            {
                format!(
                    "node {node} cannot give containers GPUs: its Docker has no NVIDIA runtime. On the \
                     node, install the NVIDIA driver and the NVIDIA Container Toolkit (package \
                     nvidia-container-toolkit), then restart Docker ({message})"
                )
            }
            DockerError::DockerResponseServerError { message, .. } => {
                format!("Docker on node {node} refused: {message}")
            }
            other => format!("Docker on node {node} does not answer ({other}); retrying"),
        },
        other => format!("could not apply container {}: {other}", plan.container_name),
    }
}

fn docker_reason(error: &DockerError) -> String {
    match error {
        DockerError::DockerResponseServerError { message, .. } => message.clone(),
        DockerError::DockerStreamError { error } => error.clone(),
        other => other.to_string(),
    }
}
