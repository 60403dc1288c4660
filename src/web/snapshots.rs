//! Snapshots as a person sees them at the web front: take one of a server of theirs, list a
//! server's. The agents take them; this only creates the ComputeSnapshot, owned by the caller.

use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Api, ResourceExt};
use serde::Serialize;
use tracing::error;

use super::cache::Cache;
use super::oidc::User;
use super::servers::{self, Problem};
use crate::api::{ComputeServer, ComputeSnapshot, Phase, SnapshotPhase};

/// Takes a snapshot of `user`'s server `server` (admins: anyone's, owned by the server's owner).
pub async fn take(
    api: &Api<ComputeSnapshot>,
    cache: &Cache,
    user: &User,
    server: &str,
) -> Result<ComputeSnapshot, Problem> {
    let found = servers::reach(cache, user, server, crate::api::access::Action::Own)?;
    let owner = found.spec.owner.clone();
    let name = crate::api::snapshot_name(server, None, jiff::Timestamp::now());
    let snapshot = ComputeSnapshot::of(&name, server, &owner);
    match api.create(&PostParams::default(), &snapshot).await {
        Ok(created) => Ok(created),
        Err(kube::Error::Api(e)) if e.code == 409 => Err(Problem::Exists(
            "a snapshot of this server was just asked for; wait a second and try again".into(),
        )),
        Err(e) => {
            error!("create snapshot: {e}");
            Err(Problem::Internal)
        }
    }
}

/// The snapshots of `user`'s server `server`, newest first.
pub async fn of_server(
    api: &Api<ComputeSnapshot>,
    cache: &Cache,
    user: &User,
    server: &str,
) -> Result<Vec<ComputeSnapshot>, Problem> {
    let found = servers::reach(cache, user, server, crate::api::access::Action::Own)?;
    let fields = format!("spec.server={server},spec.owner={}", found.spec.owner);
    let mut list = match api.list(&ListParams::default().fields(&fields)).await {
        Ok(list) => list.items,
        Err(e) => {
            error!("list snapshots: {e}");
            return Err(Problem::Internal);
        }
    };
    list.sort_by_key(|s| std::cmp::Reverse(s.creation_timestamp()));
    Ok(list)
}

/// Moves `user`'s server off its lost node: spec.restoreFrom names `snapshot` (by default its
/// newest Ready one); the scheduler then unlabels it and places it anew, and the agent there
/// restores it. Only a server whose node is lost (phase NodeLost) moves.
pub async fn move_off(
    servers_api: &Api<ComputeServer>,
    api: &Api<ComputeSnapshot>,
    cache: &Cache,
    user: &User,
    server: &str,
    snapshot: Option<&str>,
) -> Result<ComputeServer, Problem> {
    let found = servers::reach(cache, user, server, crate::api::access::Action::Own)?;
    let phase = found.status.as_ref().and_then(|s| s.phase);
    if phase != Some(Phase::NodeLost) {
        let now = phase
            .map(|p| format!("{p:?}"))
            .unwrap_or_else(|| "Pending".into());
        return Err(Problem::Conflict(format!(
            "only a server whose node is lost (NodeLost) is moved; {server} is {now}"
        )));
    }
    let list = of_server(api, cache, user, server).await?;
    let chosen = match snapshot {
        Some(name) => {
            let named = list
                .iter()
                .find(|s| s.name_any() == name)
                .ok_or_else(|| Problem::NotFound(format!("snapshot {name} of server {server}")))?;
            if named.status.as_ref().and_then(|s| s.phase) != Some(SnapshotPhase::Ready) {
                return Err(Problem::Conflict(format!(
                    "snapshot {name} is not Ready: a server moves only from a Ready snapshot"
                )));
            }
            named
        }
        None => crate::api::newest_ready(&found, &list).ok_or_else(|| {
            Problem::Conflict(format!(
                "{server} has no Ready snapshot to be restored from, so it cannot be moved; it runs again when its node comes back"
            ))
        })?,
    };
    let patch = serde_json::json!([
        {"op": "test", "path": "/spec/owner", "value": found.spec.owner},
        {"op": "add", "path": "/spec/restoreFrom", "value": {"snapshot": chosen.name_any()}},
    ]);
    let patch: json_patch::Patch = serde_json::from_value(patch).expect("a valid JSON patch");
    let moved = servers_api
        .patch(server, &PatchParams::default(), &Patch::Json::<()>(patch))
        .await
        .map_err(|e| servers::change_failed(server, e))?;
    tracing::info!(user = %user.name, %server, snapshot = %chosen.name_any(), "moving off a lost node");
    Ok(moved)
}

/// Deletes `user`'s server `server`, and with `snapshots` its snapshots too (a server's deletion
/// keeps them unless asked): how many snapshots were deleted.
pub async fn delete_server(
    servers_api: &Api<ComputeServer>,
    api: &Api<ComputeSnapshot>,
    cache: &Cache,
    user: &User,
    server: &str,
    snapshots: bool,
) -> Result<usize, Problem> {
    let listed = match snapshots {
        true => of_server(api, cache, user, server).await?,
        false => vec![],
    };
    servers::act(servers_api, cache, user, server, servers::Action::Delete).await?;
    for snapshot in &listed {
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: snapshot.uid(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(&snapshot.name_any(), &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => {
                error!("delete snapshot: {e}");
                return Err(Problem::Internal);
            }
        }
    }
    Ok(listed.len())
}

/// A snapshot as the JSON API shows it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotView {
    pub name: String,
    pub server: String,
    pub owner: String,
    pub phase: String,
    pub size: Option<String>,
    pub taken_at: Option<String>,
    pub message: Option<String>,
    pub status: Option<crate::api::ComputeSnapshotStatus>,
}

impl SnapshotView {
    pub fn of(snapshot: &ComputeSnapshot) -> SnapshotView {
        let status = snapshot.status.clone().unwrap_or_default();
        SnapshotView {
            name: snapshot.name_any(),
            server: snapshot.spec.server.clone(),
            owner: snapshot.spec.owner.clone(),
            phase: format!("{:?}", status.phase.unwrap_or(crate::api::SnapshotPhase::Pending)),
            size: status.size.clone(),
            taken_at: status.taken_at.as_ref().map(|t| t.0.to_string()),
            message: status.message.clone(),
            status: snapshot.status.clone(),
        }
    }
}
