//! Snapshots as a person sees them at the web front: take one of a server of theirs, list a
//! server's. The agents take them; this only creates the ComputeSnapshot, owned by the caller.

use kube::api::{ListParams, PostParams};
use kube::{Api, ResourceExt};
use serde::Serialize;
use tracing::error;

use super::cache::Cache;
use super::oidc::User;
use super::servers::{self, Problem};
use crate::api::{ComputeSnapshot, ComputeSnapshotSpec, OWNER_LABEL, owner_label};

/// A snapshot's name: its server's, then when it was asked for ("dev-20261204-101502"),
/// shortened so it stays a valid object name.
pub fn name_for(server: &str, now: jiff::Timestamp) -> String {
    let stamp = now.strftime("%Y%m%d-%H%M%S").to_string();
    let room = 253 - stamp.len() - 1;
    let base: String = server.chars().take(room).collect();
    format!("{}-{stamp}", base.trim_end_matches(['-', '.']))
}

/// Takes a snapshot of `user`'s server `server` (admins: anyone's, owned by the server's owner).
pub async fn take(
    api: &Api<ComputeSnapshot>,
    cache: &Cache,
    user: &User,
    server: &str,
) -> Result<ComputeSnapshot, Problem> {
    let found = servers::visible(cache, user, server)?;
    let owner = found.spec.owner.clone();
    let mut snapshot = ComputeSnapshot::new(
        &name_for(server, jiff::Timestamp::now()),
        ComputeSnapshotSpec {
            server: server.to_string(),
            owner: owner.clone(),
        },
    );
    snapshot
        .labels_mut()
        .insert(OWNER_LABEL.into(), owner_label(&owner));
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
    let found = servers::visible(cache, user, server)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_is_named_after_its_server_and_the_time() {
        let now: jiff::Timestamp = "2026-12-04T10:15:02Z".parse().unwrap();
        assert_eq!(name_for("dev", now), "dev-20261204-101502");
        let long = "a".repeat(253);
        let name = name_for(&long, now);
        assert_eq!(name.len(), 253);
        assert!(name.ends_with("-20261204-101502"));
    }
}
