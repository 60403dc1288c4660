//! Applying a plan to this node's Docker engine through bollard.

use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::models::{ContainerInspectResponse, ContainerState, ContainerSummary, VolumeCreateRequest};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, ListContainersOptions, ListVolumesOptions,
    RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use futures::TryStreamExt;
use kube::ResourceExt;
use kube::runtime::events::EventType;
use tracing::{info, warn};

use super::plan::{self, Plan, SPEC_HASH_LABEL, UID_LABEL};
use super::{Context, status};
use crate::api::{ComputeServer, NODE_LABEL};
use crate::{Error, Result};

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
}

/// Makes the container match the plan: create it (pulling the image, making the data
/// volume) or recreate it when it is stale, then start or stop it per `spec.running`.
pub async fn ensure(server: &ComputeServer, plan: &Plan, ctx: &Context) -> Result<Observed> {
    let docker = &ctx.docker;
    let desired = plan::container(server, plan);
    let label = |c: &ContainerInspectResponse, key: &str| {
        c.config
            .as_ref()
            .and_then(|c| c.labels.as_ref())
            .and_then(|l| l.get(key).cloned())
    };
    let mut note = None;
    let mut current = inspect(docker, &plan.container_name).await?;
    if let Some(container) = &current {
        let stale = if label(container, UID_LABEL) != server.uid() {
            Some("a container of an earlier server with this name was left behind; replaced it")
        } else if label(container, SPEC_HASH_LABEL)
            != desired
                .labels
                .as_ref()
                .and_then(|l| l.get(SPEC_HASH_LABEL).cloned())
        {
            Some("the server's image, size or settings changed; recreated its container (data volume kept)")
        } else {
            None
        };
        if let Some(why) = stale {
            remove_container(docker, &plan.container_name).await?;
            ctx.event(server, EventType::Normal, "Recreated", why.into())
                .await;
            current = None;
        }
    } else if server
        .status
        .as_ref()
        .and_then(|s| s.container_id.as_ref())
        .is_some()
    {
        let why = "the container was removed outside compute-server; created it again (data volume kept)";
        ctx.event(server, EventType::Warning, "Recreated", why.into())
            .await;
        note = Some(why.to_string());
    }

    if current.is_none() {
        ensure_image(server, plan, ctx).await?;
        let volume = VolumeCreateRequest {
            name: Some(plan.volume_name.clone()),
            labels: Some(plan::labels(server)),
            ..Default::default()
        };
        docker.create_volume(volume).await.map_err(Error::Docker)?;
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
        ctx.event(
            server,
            EventType::Normal,
            "Created",
            format!("created container {} from {}", plan.container_name, plan.image),
        )
        .await;
    }

    let container = inspect_existing(docker, &plan.container_name).await?;
    let state = container.state.clone().unwrap_or_default();
    let running = state.running.unwrap_or(false);
    if server.spec.running && !running {
        if let Some(exit) = exit_message(&state, plan) {
            let why = format!("{exit}; started it again");
            ctx.event(server, EventType::Warning, "Restarted", why.clone())
                .await;
            note = Some(why);
        }
        docker
            .start_container(&plan.container_name, None)
            .await
            .map_err(Error::Docker)?;
        ctx.event(
            server,
            EventType::Normal,
            "Started",
            format!("started container {}", plan.container_name),
        )
        .await;
    } else if !server.spec.running && running {
        let options = StopContainerOptionsBuilder::default().t(10).build();
        docker
            .stop_container(&plan.container_name, Some(options))
            .await
            .map_err(Error::Docker)?;
        ctx.event(
            server,
            EventType::Normal,
            "Stopped",
            "stopped on request; container and data kept".into(),
        )
        .await;
    } else {
        // Nothing changed since the inspect above.
        return Ok(Observed { container, note });
    }
    let container = inspect_existing(docker, &plan.container_name).await?;
    Ok(Observed { container, note })
}

/// Why a container that ran is no longer running, in plain words; None if it never ran.
pub fn exit_message(state: &ContainerState, plan: &Plan) -> Option<String> {
    // Docker reports a container that never ran as finished at year 1.
    state.finished_at.as_deref().filter(|t| !t.starts_with("0001-"))?;
    let code = state.exit_code.unwrap_or_default();
    Some(if state.oom_killed == Some(true) {
        format!(
            "container exited with code {code}: out of memory (limit {})",
            plan.memory
        )
    } else {
        format!("container exited with code {code}")
    })
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

/// Removes the server's container and its data volume; what is already gone is fine.
pub async fn remove(server: &ComputeServer, ctx: &Context) -> Result<()> {
    remove_container(&ctx.docker, &plan::container_name(server)).await?;
    remove_volume(&ctx.docker, &plan::volume_name(server)).await
}

/// Removes this node's containers and volumes whose ComputeServer is gone (`servers`, listed
/// after the containers, holds every server placed here). Returns how many containers went.
pub async fn remove_orphans(
    ctx: &Context,
    containers: &[ContainerSummary],
    servers: &[std::sync::Arc<ComputeServer>],
) -> Result<usize> {
    let live: std::collections::HashSet<String> = servers.iter().filter_map(|s| s.uid()).collect();
    let uid = |labels: &Option<std::collections::HashMap<String, String>>| {
        labels
            .as_ref()
            .and_then(|l| l.get(UID_LABEL).cloned())
            .unwrap_or_default()
    };
    let mut removed = 0;
    for container in containers.iter().filter(|c| !live.contains(&uid(&c.labels))) {
        let name = container
            .names
            .iter()
            .flatten()
            .next()
            .map(|n| n.trim_start_matches('/').to_string());
        let Some(name) = name else { continue };
        info!(container = %name, "removing orphan: its ComputeServer is gone");
        remove_container(&ctx.docker, &name).await?;
        removed += 1;
    }
    let volumes = ctx
        .docker
        .list_volumes(Some(ListVolumesOptions {
            filters: Some(ours(&ctx.node)),
        }))
        .await
        .map_err(Error::Docker)?;
    for volume in volumes
        .volumes
        .iter()
        .flatten()
        .filter(|v| !live.contains(&uid(&Some(v.labels.clone()))))
    {
        match remove_volume(&ctx.docker, &volume.name).await {
            Err(error) => warn!(%error, volume = %volume.name, "could not remove an orphaned volume"),
            Ok(()) => info!(volume = %volume.name, "removed orphaned volume"),
        }
    }
    Ok(removed)
}

/// Filters for what this agent made on its node.
fn ours(node: &str) -> std::collections::HashMap<String, Vec<String>> {
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
        Error::Docker(source) => match source {
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
