//! The server's status as the agent reports it: phase, message, endpoints, conditions.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{Api, Resource, ResourceExt};

use super::docker::Observed;
use super::plan::Plan;
use super::{Context, decide};
use super::{Error, Result};
use crate::api::{CONDITION_READY, CONDITION_SCHEDULED, ComputeServer, ComputeServerStatus, Endpoint, Phase};

/// Whether the server's status shows something other than this phase and message.
pub fn differs(server: &ComputeServer, phase: Phase, message: &str) -> bool {
    let status = server.status.as_ref();
    status.and_then(|s| s.phase) != Some(phase) || status.and_then(|s| s.message.as_deref()) != Some(message)
}

fn ready(server: &ComputeServer, ready: bool, reason: &str, message: &str) -> Condition {
    crate::api::server_condition(server, CONDITION_READY, ready, reason, message)
}

/// Status fields every report shares. The agent is the one to say the server is scheduled:
/// the scheduler's placement is the node label alone, and its agent reports it here.
fn base(
    server: &ComputeServer,
    ctx: &Context,
    phase: Phase,
    message: String,
    ready: Condition,
) -> ComputeServerStatus {
    let placed = format!("placed on node {}", ctx.node);
    let scheduled = crate::api::server_condition(server, CONDITION_SCHEDULED, true, "Scheduled", &placed);
    ComputeServerStatus {
        phase: Some(phase),
        node: Some(ctx.node.clone()),
        message: Some(message),
        observed_generation: server.metadata.generation,
        conditions: vec![scheduled, ready],
        gpu_devices: server
            .status
            .as_ref()
            .map(|s| s.gpu_devices.clone())
            .unwrap_or_default(),
        restored_from: server.status.as_ref().and_then(|s| s.restored_from.clone()),
        archived_to: server.status.as_ref().and_then(|s| s.archived_to.clone()),
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

/// Archived: kept only as the snapshot `snapshot`; nothing of it on this node.
pub fn archived(server: &ComputeServer, ctx: &Context, snapshot: &str) -> ComputeServerStatus {
    let message = format!(
        "archived to snapshot {snapshot}: nothing of it is on a node and it reserves nothing; start it \
         to restore it on any node with room"
    );
    let condition = ready(server, false, "Archived", &message);
    ComputeServerStatus {
        archived_to: Some(snapshot.to_string()),
        ..base(server, ctx, Phase::Archived, message, condition)
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
    let gateway = ctx.gateway.filter(|_| running).map(|port| Endpoint {
        name: "gateway".into(),
        host: ctx.address.clone(),
        port: i32::from(port),
    });
    ComputeServerStatus {
        container_id: container.id.clone(),
        endpoints,
        gateway,
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

/// Whether the server's status already shows `status`, compared on the agent's own fields
/// (the lifecycle's, bastion's and web front's are theirs) and conditions in any order.
fn unchanged(server: &ComputeServer, status: &ComputeServerStatus) -> bool {
    let Some(current) = server.status.clone() else {
        return false;
    };
    let sorted = |mut conditions: Vec<Condition>| {
        conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
        conditions
    };
    let mine = ComputeServerStatus {
        activity: current.activity.clone(),
        last_activity: current.last_activity.clone(),
        stops_at: current.stops_at.clone(),
        stop_reason: current.stop_reason.clone(),
        conditions: sorted(status.conditions.clone()),
        ..status.clone()
    };
    ComputeServerStatus {
        conditions: sorted(current.conditions),
        ..current
    } == mine
}

/// Whether this agent has not reported the server yet: its status names another node or
/// none, or does not say it is scheduled.
pub fn first_report(server: &ComputeServer, ctx: &Context) -> bool {
    let status = server.status.as_ref();
    let scheduled = status
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == CONDITION_SCHEDULED))
        .is_some_and(|c| c.status == "True");
    !scheduled || status.and_then(|s| s.node.as_deref()) != Some(ctx.node.as_str())
}

/// The agent's field manager: it owns the status fields it reports (server-side apply).
pub const FIELD_MANAGER: &str = "compute-server-agent";

/// Writes the status if it changed (ignoring condition timestamps, which are kept), so
/// that an unchanged server does not trigger another reconcile. Applied as
/// [`FIELD_MANAGER`]: phase, node, message, observedGeneration, the Scheduled and Ready
/// conditions, containerId, endpoints, startedAt and gpuDevices are the agent's, and a field
/// left out (the endpoints of a stopped server) is removed. Forced: the scheduler writes some
/// of them while no agent reports the server (why it waits; its node is lost), and they come
/// back to the agent with its next report.
pub async fn write(server: &ComputeServer, ctx: &Context, status: ComputeServerStatus) -> Result<()> {
    if unchanged(server, &status) {
        return Ok(());
    }
    let api: Api<ComputeServer> =
        Api::namespaced(ctx.client.clone(), &server.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "apiVersion": ComputeServer::api_version(&()),
        "kind": ComputeServer::kind(&()),
        "status": ComputeServerStatus {
            activity: vec![],
            last_activity: None,
            stops_at: None,
            stop_reason: None,
            ..status
        },
    });
    crate::runtime::status::apply(&api, &server.name_any(), FIELD_MANAGER, &patch)
        .await
        .map_err(Error::Kube)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(status: &str) -> ComputeServer {
        serde_yaml::from_str(&format!(
            "{{apiVersion: computeserver.io/v1alpha1, kind: ComputeServer, metadata: {{name: s}}, \
             spec: {{owner: alice}}, status: {status}}}"
        ))
        .unwrap()
    }

    #[test]
    fn a_report_is_written_only_when_the_agents_own_fields_changed() {
        let t = "2026-12-02T08:00:00Z";
        let current = server(&format!(
            "{{phase: Running, node: n1, message: running on node n1, lastActivity: '{t}', \
             activity: [{{source: ssh, lastSeen: '{t}'}}], conditions: [\
             {{type: Ready, status: 'True', reason: Running, message: m, lastTransitionTime: '{t}'}}, \
             {{type: Scheduled, status: 'True', reason: Scheduled, message: placed on node n1, lastTransitionTime: '{t}'}}]}}"
        ));
        let mut report = current.status.clone().unwrap();
        report.activity.clear();
        report.last_activity = None;
        report.conditions.reverse();
        assert!(
            unchanged(&current, &report),
            "others' fields and the conditions' order do not count"
        );
        report.message = Some("stopped".into());
        assert!(!unchanged(&current, &report));
        let mut none = current.clone();
        none.status = None;
        assert!(
            !unchanged(&none, &ComputeServerStatus::default()),
            "no status yet: written"
        );
    }
}
