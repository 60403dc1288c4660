//! The server's status as the agent reports it: phase, message, endpoints, conditions.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};

use super::docker::Observed;
use super::plan::Plan;
use super::{Context, decide};
use crate::api::{CONDITION_READY, ComputeServer, ComputeServerStatus, Endpoint, Phase};
use crate::{Error, Result};

/// Whether the server's status shows something other than this phase and message.
pub fn differs(server: &ComputeServer, phase: Phase, message: &str) -> bool {
    let status = server.status.as_ref();
    status.and_then(|s| s.phase) != Some(phase) || status.and_then(|s| s.message.as_deref()) != Some(message)
}

/// The Ready condition, keeping its transition time while its status stays the same.
fn ready(server: &ComputeServer, ready: bool, reason: &str, message: &str) -> Condition {
    let current = server
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    crate::api::condition(
        current,
        CONDITION_READY,
        ready,
        reason,
        message,
        server.metadata.generation,
    )
}

/// Status fields every report shares, with the other conditions (Scheduled) kept.
fn base(
    server: &ComputeServer,
    ctx: &Context,
    phase: Phase,
    message: String,
    condition: Condition,
) -> ComputeServerStatus {
    let old = server.status.clone().unwrap_or_default();
    let mut conditions: Vec<Condition> = old
        .conditions
        .into_iter()
        .filter(|c| c.type_ != CONDITION_READY)
        .collect();
    conditions.push(condition);
    ComputeServerStatus {
        phase: Some(phase),
        node: Some(ctx.node.clone()),
        message: Some(message),
        observed_generation: server.metadata.generation,
        conditions,
        gpu_devices: server
            .status
            .as_ref()
            .map(|s| s.gpu_devices.clone())
            .unwrap_or_default(),
        ..Default::default()
    }
}

pub fn failed(server: &ComputeServer, ctx: &Context, reason: &str, message: String) -> ComputeServerStatus {
    let condition = ready(server, false, reason, &message);
    let old = server.status.clone().unwrap_or_default();
    ComputeServerStatus {
        container_id: old.container_id,
        ..base(server, ctx, Phase::Failed, message, condition)
    }
}

/// Waiting on its node for something other servers hold (GPUs).
pub fn waiting(server: &ComputeServer, ctx: &Context, reason: &str, message: String) -> ComputeServerStatus {
    let condition = ready(server, false, reason, &message);
    let old = server.status.clone().unwrap_or_default();
    ComputeServerStatus {
        container_id: old.container_id,
        ..base(server, ctx, Phase::Pending, message, condition)
    }
}

pub fn creating(server: &ComputeServer, ctx: &Context, message: String) -> ComputeServerStatus {
    let condition = ready(server, false, "Creating", &message);
    base(server, ctx, Phase::Creating, message, condition)
}

/// Status from what Docker shows of the container.
pub fn observed(
    server: &ComputeServer,
    ctx: &Context,
    plan: &Plan,
    observed: &Observed,
    warning: Option<&str>,
) -> ComputeServerStatus {
    let container = &observed.container;
    let state = container.state.clone().unwrap_or_default();
    let restarting = state.restarting == Some(true);
    let running = state.running.unwrap_or(false) && !restarting;
    let (phase, reason, mut message) = if running {
        (Phase::Running, "Running", format!("running on node {}", ctx.node))
    } else if restarting {
        let code = state.exit_code.unwrap_or_default();
        (
            Phase::Creating,
            "Restarting",
            format!("its program ended (exit code {code}); Docker starts it again, as its profile asks"),
        )
    } else if !server.spec.running {
        (
            Phase::Stopped,
            "Stopped",
            "stopped; set spec.running to true to start it again (data kept)".to_string(),
        )
    } else {
        let end = observed.end.clone().unwrap_or(decide::End::NeverRan);
        let (stopped, reason, message) =
            decide::ended_message(&end, &plan.memory, observed.log_tail.as_deref());
        (
            if stopped { Phase::Stopped } else { Phase::Failed },
            reason,
            message,
        )
    };
    if let Some(note) = &observed.note {
        message = format!("{message} ({note})");
    }
    if let (true, Some(warning)) = (running, warning) {
        message = format!("{message}; {warning}");
    }
    let endpoints = if running {
        endpoints(plan, container, &ctx.address)
    } else {
        vec![]
    };
    let started_at = running
        .then(|| state.started_at.as_deref().and_then(|t| t.parse().ok()).map(Time))
        .flatten();
    let condition = ready(server, running, reason, &message);
    ComputeServerStatus {
        container_id: container.id.clone(),
        endpoints,
        started_at,
        ..base(server, ctx, phase, message, condition)
    }
}

fn endpoints(
    plan: &Plan,
    container: &bollard::models::ContainerInspectResponse,
    address: &str,
) -> Vec<Endpoint> {
    let ports = container
        .network_settings
        .as_ref()
        .and_then(|n| n.ports.clone())
        .unwrap_or_default();
    plan.ports
        .iter()
        .filter_map(|p| {
            let bindings = ports
                .get(&format!("{}/tcp", p.container_port))
                .cloned()
                .flatten()?;
            let port = bindings.into_iter().find_map(|b| b.host_port?.parse().ok())?;
            Some(Endpoint {
                name: p.name.clone(),
                host: address.to_string(),
                port,
            })
        })
        .collect()
}

/// Writes the status if it changed (ignoring condition timestamps, which are kept), so
/// that an unchanged server does not trigger another reconcile.
pub async fn write(server: &ComputeServer, ctx: &Context, status: ComputeServerStatus) -> Result<()> {
    // Compared on the agent's own fields: the lifecycle's, bastion's and web front's are theirs.
    let current = server.status.clone().unwrap_or_default();
    let mine = ComputeServerStatus {
        activity: current.activity.clone(),
        last_activity: current.last_activity.clone(),
        stops_at: current.stops_at.clone(),
        stop_reason: current.stop_reason.clone(),
        ..status.clone()
    };
    if server.status.is_some() && current == mine {
        return Ok(());
    }
    let api: Api<ComputeServer> =
        Api::namespaced(ctx.client.clone(), &server.namespace().unwrap_or_default());
    let patch = serde_json::json!({ "status": status });
    api.patch_status(&server.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(Error::Kube)?;
    Ok(())
}
