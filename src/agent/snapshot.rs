//! Snapshots on this node: a controller over ComputeSnapshots takes those of the servers placed
//! here ([`reconcile`]), and a server created with spec.restoreFrom is restored before it first
//! starts ([`restore`]). The copying itself is [`copy`](super::copy)'s.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};
use tracing::{info, warn};

use super::copy::{self, Progress};
use super::{Context, Error, Result, plan, status};
use crate::api::{
    ComputeProfile, ComputeServer, ComputeSnapshot, ComputeSnapshotStatus, Manifest, Restored, SnapshotPhase,
    human_bytes,
};
use crate::storage::Store;

/// Finalizer on a snapshot whose objects are in the store: they go with it.
pub const OBJECTS_FINALIZER: &str = "computeserver.io/objects";
/// The field manager of the agent's writes to snapshots.
const FIELD_MANAGER: &str = "compute-server-agent";
/// How often progress is written while a copy runs.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);
/// How often a snapshot that waits (for its server's container, for its node) is looked at.
const WAIT: Duration = Duration::from_secs(10);

/// Takes a pending snapshot of a server on this node; removes the objects of a deleted one.
pub async fn reconcile(snapshot: Arc<ComputeSnapshot>, ctx: Arc<Context>) -> Result<Action> {
    let namespace = snapshot.namespace().unwrap_or_default();
    let api: Api<ComputeSnapshot> = Api::namespaced(ctx.client.clone(), &namespace);
    if snapshot.metadata.deletion_timestamp.is_some() {
        return remove_objects(&snapshot, &api, &ctx).await;
    }
    let phase = snapshot.status.as_ref().and_then(|s| s.phase);
    if matches!(phase, Some(SnapshotPhase::Ready | SnapshotPhase::Failed)) {
        return Ok(Action::await_change());
    }
    let server_ref = ObjectRef::<ComputeServer>::new(&snapshot.spec.server).within(&namespace);
    let Some(server) = ctx.servers.get(&server_ref) else {
        // Not on this node. Whoever has it takes it; a server that does not exist is said by all.
        let servers: Api<ComputeServer> = Api::namespaced(ctx.client.clone(), &namespace);
        if servers
            .get_opt(&snapshot.spec.server)
            .await
            .map_err(Error::Kube)?
            .is_none()
        {
            let message = format!(
                "there is no server {} in namespace {namespace}: a snapshot copies an existing server",
                snapshot.spec.server
            );
            write(&api, &snapshot, failed(message)).await?;
            return Ok(Action::await_change());
        }
        return Ok(Action::requeue(WAIT * 6));
    };
    if server.spec.owner != snapshot.spec.owner {
        let message = format!(
            "server {} belongs to someone else: a snapshot's owner must be its server's",
            snapshot.spec.server
        );
        write(&api, &snapshot, failed(message)).await?;
        return Ok(Action::await_change());
    }
    let Some(store) = ctx.store.clone() else {
        let message = format!(
            "snapshots are not set up on node {}: its agent has no --snapshot-store (see the admin guide, \"Snapshots\")",
            ctx.node
        );
        write(&api, &snapshot, failed(message)).await?;
        return Ok(Action::await_change());
    };
    take(&snapshot, &server, &store, &api, &ctx).await
}

/// Copies the server into the store, saying how far it got every few seconds.
async fn take(
    snapshot: &ComputeSnapshot,
    server: &ComputeServer,
    store: &Store,
    api: &Api<ComputeSnapshot>,
    ctx: &Context,
) -> Result<Action> {
    let profile = super::profile_of(server, ctx).await?;
    let plan = match plan::plan(server, profile.as_ref()) {
        Ok(plan) => plan,
        Err(refusal) => {
            write(
                api,
                snapshot,
                failed(format!("its server cannot be planned: {refusal}")),
            )
            .await?;
            return Ok(Action::await_change());
        }
    };
    if ctx
        .docker
        .inspect_container(&plan.container_name, None)
        .await
        .is_err()
    {
        let message = format!(
            "waiting for server {}'s container on node {}",
            server.name_any(),
            ctx.node
        );
        write(api, snapshot, pending(&message, None)).await?;
        return Ok(Action::requeue(WAIT));
    }
    add_finalizer(api, snapshot).await?;
    let location = crate::api::location(
        &snapshot.namespace().unwrap_or_default(),
        &server.name_any(),
        &snapshot.uid().unwrap_or_default(),
    );
    let taken_at = Time(k8s_openapi::jiff::Timestamp::now());
    let manifest = Manifest {
        version: Manifest::VERSION,
        server: format!("{}/{}", server.namespace().unwrap_or_default(), server.name_any()),
        server_uid: server.uid().unwrap_or_default(),
        image: plan.image.clone(),
        data_path: plan.data_path.clone(),
        parts: vec![],
        removed: vec![],
    };
    info!(snapshot = %snapshot.name_any(), server = %server.name_any(), %location, "taking snapshot");
    let progress = Arc::new(Progress::default());
    let copying = copy::take(
        &ctx.docker,
        store,
        &plan.container_name,
        manifest,
        &location,
        &progress,
    );
    let say = |bytes: u64| format!("copying on node {}: {} so far", ctx.node, human_bytes(bytes));
    let result = with_progress(copying, &progress, |bytes| async move {
        let _ = write(api, snapshot, pending(&say(bytes), Some(&ctx.node))).await;
    })
    .await;
    match result {
        Ok((manifest, bytes)) => {
            let part = |i: usize| human_bytes(manifest.parts.get(i).map_or(0, |p| p.size));
            let message = format!(
                "holds {} ({}) and {} of changes to its system; {} stored",
                plan.data_path,
                part(0),
                part(1),
                human_bytes(manifest.stored()),
            );
            let status = ComputeSnapshotStatus {
                phase: Some(SnapshotPhase::Ready),
                size: Some(human_bytes(manifest.size())),
                size_bytes: i64::try_from(manifest.size()).ok(),
                stored_bytes: i64::try_from(manifest.stored()).ok(),
                checksum: Some(crate::api::checksum(&bytes)),
                taken_at: Some(taken_at),
                node: Some(ctx.node.clone()),
                image: Some(plan.image.clone()),
                location: Some(location),
                message: Some(message.clone()),
            };
            write(api, snapshot, status).await?;
            ctx.event(
                server,
                EventType::Normal,
                "SnapshotTaken",
                format!("snapshot {}: {message}", snapshot.name_any()),
            )
            .await;
            Ok(Action::await_change())
        }
        Err(error) => {
            warn!(%error, snapshot = %snapshot.name_any(), "snapshot failed");
            if let Err(error) = copy::remove(store, &location).await {
                warn!(%error, %location, "could not remove the failed snapshot's objects");
            }
            write(api, snapshot, failed(format!("could not take it: {error}"))).await?;
            Ok(Action::await_change())
        }
    }
}

/// Runs `work`, calling `report` with the bytes copied every [`PROGRESS_EVERY`] until it ends.
async fn with_progress<T, F, R>(
    work: impl std::future::Future<Output = T>,
    progress: &Progress,
    report: R,
) -> T
where
    R: Fn(u64) -> F,
    F: std::future::Future<Output = ()>,
{
    tokio::pin!(work);
    let mut tick = tokio::time::interval(PROGRESS_EVERY);
    tick.tick().await;
    loop {
        tokio::select! {
            done = &mut work => return done,
            _ = tick.tick() => report(progress.bytes()).await,
        }
    }
}

fn failed(message: String) -> ComputeSnapshotStatus {
    ComputeSnapshotStatus {
        phase: Some(SnapshotPhase::Failed),
        message: Some(message),
        ..Default::default()
    }
}

fn pending(message: &str, node: Option<&str>) -> ComputeSnapshotStatus {
    ComputeSnapshotStatus {
        phase: Some(SnapshotPhase::Pending),
        node: node.map(str::to_string),
        message: Some(message.to_string()),
        ..Default::default()
    }
}

/// Writes the snapshot's status (server-side apply, the agent's fields), unless it shows it.
async fn write(
    api: &Api<ComputeSnapshot>,
    snapshot: &ComputeSnapshot,
    status: ComputeSnapshotStatus,
) -> Result<()> {
    if snapshot.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let patch = serde_json::json!({
        "apiVersion": ComputeSnapshot::api_version(&()),
        "kind": ComputeSnapshot::kind(&()),
        "status": status,
    });
    crate::runtime::status::apply(api, &snapshot.name_any(), FIELD_MANAGER, &patch)
        .await
        .map_err(Error::Kube)?;
    Ok(())
}

async fn add_finalizer(api: &Api<ComputeSnapshot>, snapshot: &ComputeSnapshot) -> Result<()> {
    if snapshot.finalizers().iter().any(|f| f == OBJECTS_FINALIZER) {
        return Ok(());
    }
    let patch = serde_json::json!({"metadata": {"finalizers": [OBJECTS_FINALIZER]}});
    api.patch(
        &snapshot.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(Error::Kube)?;
    Ok(())
}

/// A deleted snapshot's objects are removed from the store, then its finalizer.
async fn remove_objects(
    snapshot: &ComputeSnapshot,
    api: &Api<ComputeSnapshot>,
    ctx: &Context,
) -> Result<Action> {
    let Some(at) = snapshot.finalizers().iter().position(|f| f == OBJECTS_FINALIZER) else {
        return Ok(Action::await_change());
    };
    let Some(store) = &ctx.store else {
        return Ok(Action::await_change());
    };
    let location = crate::api::location(
        &snapshot.namespace().unwrap_or_default(),
        &snapshot.spec.server,
        &snapshot.uid().unwrap_or_default(),
    );
    copy::remove(store, &location).await.map_err(Error::Copy)?;
    // Test, then remove: another agent may have done it meanwhile.
    let patch: json_patch::Patch = serde_json::from_value(serde_json::json!([
        {"op": "test", "path": format!("/metadata/finalizers/{at}"), "value": OBJECTS_FINALIZER},
        {"op": "remove", "path": format!("/metadata/finalizers/{at}")},
    ]))
    .expect("a JSON patch");
    match api
        .patch(
            &snapshot.name_any(),
            &PatchParams::default(),
            &Patch::Json::<()>(patch),
        )
        .await
    {
        Ok(_) => info!(snapshot = %snapshot.name_any(), %location, "snapshot's objects removed"),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 422 => {}
        Err(error) => return Err(Error::Kube(error)),
    }
    Ok(Action::await_change())
}

/// What became of a restore the server asked for.
pub enum Restore {
    /// Done: the server's status now says from what.
    Done(Box<ComputeServer>),
    /// Not possible now or ever; its status says why and nothing was started.
    Refused,
    /// The snapshot is not ready yet.
    Wait,
}

/// Restores the snapshot the server starts from into a new container and data volume (made
/// here, not started), checking every checksum; a restore that fails leaves neither behind.
pub async fn restore(
    server: &ComputeServer,
    plan: &plan::Plan,
    name: &str,
    ctx: &Context,
) -> Result<Restore> {
    let namespace = server.namespace().unwrap_or_default();
    let snapshot = Api::<ComputeSnapshot>::namespaced(ctx.client.clone(), &namespace)
        .get_opt(name)
        .await
        .map_err(Error::Kube)?;
    let (location, checksum) = match crate::api::restorable(name, &server.spec.owner, snapshot.as_ref()) {
        Ok(found) => found,
        Err(refusal @ crate::api::RestoreRefusal::NotReady { .. }) => {
            let status = status::waiting(server, ctx, "WaitingForSnapshot", refusal.to_string());
            status::write(server, ctx, status).await?;
            return Ok(Restore::Wait);
        }
        Err(refusal) => return refuse(server, ctx, refusal.to_string()).await,
    };
    let Some(store) = &ctx.store else {
        let message = format!(
            "it starts from snapshot {name}, but node {}'s agent has no --snapshot-store (see the admin guide, \"Snapshots\")",
            ctx.node
        );
        return refuse(server, ctx, message).await;
    };
    let taken_at = snapshot
        .as_ref()
        .and_then(|s| s.status.as_ref()?.taken_at.clone());
    let taken = taken_at
        .as_ref()
        .map(|t| {
            format!(
                " (taken at {})",
                crate::api::lifecycle::clock(t.0, k8s_openapi::jiff::Timestamp::now())
            )
        })
        .unwrap_or_default();
    // A restore never overwrites data this node holds of the server (a stale copy, after a move
    // off this node); a restore that did not finish left a container that never ran, and goes.
    if super::docker::holds_data(server, ctx).await? {
        let message = format!(
            "it is to be restored from snapshot {name}, but node {} holds data of it (its container ran \
             here, or its data volume is here without one), and a restore never overwrites data. An admin \
             can look at the volume (docker volume inspect {}) and move it away; nothing was started",
            ctx.node, plan.volume_name
        );
        return refuse(server, ctx, message).await;
    }
    super::docker::remove(server, ctx).await?;
    super::docker::prepare(server, plan, ctx).await?;
    let total = AtomicU64::new(0);
    let progress = Progress::default();
    let copying = copy::restore(
        &ctx.docker,
        store,
        &plan.container_name,
        location,
        checksum,
        &total,
        &progress,
    );
    let say = |bytes: u64| {
        let total = total.load(std::sync::atomic::Ordering::Relaxed);
        format!(
            "restoring {} of {} from snapshot {name}{taken}",
            human_bytes(bytes),
            human_bytes(total)
        )
    };
    let result = with_progress(copying, &progress, |bytes| {
        let message = say(bytes);
        async move {
            let _ = status::write(server, ctx, status::creating(server, ctx, message)).await;
        }
    })
    .await;
    match result {
        Ok(manifest) => {
            let mut restored = server.clone();
            let status = restored.status.get_or_insert_default();
            status.archived_to = None;
            status.restored_from = Some(Restored {
                snapshot: name.into(),
                checksum: checksum.into(),
                taken_at,
            });
            let message = format!(
                "restored {} from snapshot {name}; starting it",
                human_bytes(manifest.size())
            );
            status::write(&restored, ctx, status::creating(&restored, ctx, message.clone())).await?;
            ctx.event(server, EventType::Normal, "Restored", message).await;
            Ok(Restore::Done(Box::new(restored)))
        }
        Err(copy::Error::Corrupt(why)) => {
            super::docker::remove(server, ctx).await?;
            refuse(
                server,
                ctx,
                format!("snapshot {name} cannot be restored: {why}; nothing was started"),
            )
            .await
        }
        Err(error) => {
            super::docker::remove(server, ctx).await?;
            Err(Error::Copy(error))
        }
    }
}

/// Archives a stopped server: its archive snapshot (named after when it stopped) is asked for,
/// and once it is Ready the container and data volume leave this node; the status then says
/// Archived and names the snapshot. A snapshot that failed leaves the server as it is.
pub async fn archive(server: &ComputeServer, ctx: &Context) -> Result<Action> {
    let Some(since) = crate::api::lifecycle::stopped_since(server) else {
        return Ok(Action::requeue(super::RESYNC));
    };
    let namespace = server.namespace().unwrap_or_default();
    let name = crate::api::snapshot_name(&server.name_any(), Some("archive"), since);
    let api: Api<ComputeSnapshot> = Api::namespaced(ctx.client.clone(), &namespace);
    let Some(snapshot) = api.get_opt(&name).await.map_err(Error::Kube)? else {
        let snapshot = ComputeSnapshot::of(&name, &server.name_any(), &server.spec.owner);
        match api.create(&kube::api::PostParams::default(), &snapshot).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(error) => return Err(Error::Kube(error)),
        }
        let note = format!("stopped long enough to be archived: taking snapshot {name} first");
        ctx.event(server, EventType::Normal, "Archiving", note).await;
        return Ok(Action::requeue(WAIT / 2));
    };
    match snapshot.status.as_ref().and_then(|s| s.phase) {
        Some(SnapshotPhase::Ready) => {
            super::docker::remove(server, ctx).await?;
            let size = snapshot
                .status
                .as_ref()
                .and_then(|s| s.size.clone())
                .unwrap_or_default();
            status::write(server, ctx, status::archived(server, ctx, &name)).await?;
            let note = format!(
                "archived to snapshot {name} ({size}); its container and data volume left node {}",
                ctx.node
            );
            ctx.event(server, EventType::Normal, "Archived", note).await;
            info!(snapshot = %name, "server archived");
            Ok(Action::await_change())
        }
        // It stays stopped, with its data here; the next stop tries again.
        Some(SnapshotPhase::Failed) => Ok(Action::requeue(super::RESYNC)),
        _ => Ok(Action::requeue(WAIT / 2)),
    }
}

/// Keeps a running server's scheduled snapshots (its profile's `snapshots: {every, keep}`): takes
/// one when due (named after its period, so a second agent pass makes no twin), deletes those
/// beyond `keep`. Returns how long until the next is due.
pub async fn schedule(
    server: &ComputeServer,
    profile: Option<&ComputeProfile>,
    ctx: &Context,
) -> Result<Option<Duration>> {
    let Some(schedule) = profile.and_then(|p| p.spec.snapshots.as_ref()) else {
        return Ok(None);
    };
    let (Ok(every), Some(_)) = (crate::api::parse_duration(&schedule.every), &ctx.store) else {
        return Ok(None);
    };
    let namespace = server.namespace().unwrap_or_default();
    let name = server.name_any();
    let now = k8s_openapi::jiff::Timestamp::now();
    let existing: Vec<(String, k8s_openapi::jiff::Timestamp)> = ctx
        .snapshots
        .state()
        .iter()
        .filter(|s| s.namespace().as_deref() == Some(namespace.as_str()) && s.spec.server == name)
        .filter(|s| s.labels().get(crate::api::SCHEDULED_LABEL).map(String::as_str) == Some("true"))
        .filter(|s| s.metadata.deletion_timestamp.is_none())
        .filter_map(|s| Some((s.name_any(), s.creation_timestamp()?.0)))
        .collect();
    let keep = usize::try_from(schedule.keep).unwrap_or(1).max(1);
    let (due, delete) = crate::api::scheduled(every, keep, &existing, now);
    let api: Api<ComputeSnapshot> = Api::namespaced(ctx.client.clone(), &namespace);
    for old in &delete {
        match api.delete(old, &Default::default()).await {
            Ok(_) => info!(snapshot = %old, "scheduled snapshot beyond the profile's keep: deleted"),
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(error) => return Err(Error::Kube(error)),
        }
    }
    if !due {
        let newest = existing.iter().map(|(_, t)| *t).max().unwrap_or(now);
        let next = newest
            .checked_add(k8s_openapi::jiff::SignedDuration::try_from(every).unwrap_or_default())
            .unwrap_or(now);
        return Ok(Some(
            Duration::try_from(next.duration_since(now)).unwrap_or_default(),
        ));
    }
    // Named after the start of its period: a pass that does not see it yet makes no twin.
    let period = i64::try_from(every.as_secs().max(1)).unwrap_or(i64::MAX);
    let slot = k8s_openapi::jiff::Timestamp::from_second(now.as_second() / period * period).unwrap_or(now);
    let snapshot_name = crate::api::snapshot_name(&name, Some("auto"), slot);
    let mut snapshot = ComputeSnapshot::of(&snapshot_name, &name, &server.spec.owner);
    snapshot
        .labels_mut()
        .insert(crate::api::SCHEDULED_LABEL.into(), "true".into());
    match api.create(&kube::api::PostParams::default(), &snapshot).await {
        Ok(_) => {
            let note = format!(
                "scheduled snapshot {snapshot_name} (every {}, the newest {keep} kept)",
                schedule.every
            );
            ctx.event(server, EventType::Normal, "SnapshotScheduled", note)
                .await;
        }
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(error) => return Err(Error::Kube(error)),
    }
    Ok(Some(every))
}

async fn refuse(server: &ComputeServer, ctx: &Context, message: String) -> Result<Restore> {
    if status::differs(server, crate::api::Phase::Failed, &message) {
        ctx.event(
            server,
            EventType::Warning,
            super::decide::RESTORE_REFUSED,
            message.clone(),
        )
        .await;
    }
    status::write(
        server,
        ctx,
        status::failed(server, ctx, super::decide::RESTORE_REFUSED, message),
    )
    .await?;
    Ok(Restore::Refused)
}
