//! `ComputeSnapshot`: a copy of one server's data, and of what changed in its system, kept in
//! the install's object store, from which a server is restored or cloned.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// A copy of one ComputeServer's data volume and of what changed in its container's root file
/// system (packages installed with apt, files under /usr/local), kept in object storage. A
/// server made with spec.restoreFrom starts from it, on any node.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "computeserver.io",
    version = "v1alpha1",
    kind = "ComputeSnapshot",
    namespaced,
    status = "ComputeSnapshotStatus",
    shortname = "csnap",
    category = "compute",
    derive = "PartialEq",
    doc = "A copy of one server's data and system changes in object storage, to restore or clone it from.",
    printcolumn(
        name = "Server",
        type_ = "string",
        json_path = ".spec.server",
        description = "The server it copies"
    ),
    printcolumn(
        name = "Owner",
        type_ = "string",
        json_path = ".spec.owner",
        description = "Who it belongs to"
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Pending, Ready or Failed"
    ),
    printcolumn(
        name = "Size",
        type_ = "string",
        json_path = ".status.size",
        description = "What it holds, uncompressed"
    ),
    printcolumn(
        name = "Taken",
        type_ = "date",
        json_path = ".status.takenAt",
        description = "When it was taken"
    ),
    printcolumn(
        name = "Message",
        type_ = "string",
        json_path = ".status.message",
        priority = 1,
        description = "What is happening, in plain words"
    ),
    selectable = ".spec.owner",
    selectable = ".spec.server"
)]
#[serde(rename_all = "camelCase")]
pub struct ComputeSnapshotSpec {
    /// The ComputeServer (in this namespace) to copy. Cannot be changed.
    #[x_kube(
        validation = Rule::new("self == oldSelf").message("spec.server cannot be changed; take a new snapshot of the other server"),
        validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$')").message("spec.server must be the name of a ComputeServer in this namespace"),
    )]
    #[schemars(length(min = 1, max = 253))]
    pub server: String,

    /// Who the snapshot belongs to: the server's owner (Keycloak preferred_username). Only they
    /// (and admins) see it and restore or clone from it. Cannot be changed.
    #[x_kube(
        validation = Rule::new("self != ''").message("spec.owner must name the Keycloak user who owns the server"),
        validation = Rule::new("self == oldSelf").message("spec.owner cannot be changed"),
    )]
    #[schemars(length(max = 253))]
    pub owner: String,
}

/// Where a snapshot is in its life.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, schemars::JsonSchema)]
pub enum SnapshotPhase {
    /// Waiting for, or being taken by, the agent of the server's node.
    Pending,
    /// Stored and checksummed: servers can be restored from it.
    Ready,
    /// Could not be taken; status.message says why. Nothing of it is kept.
    Failed,
}

/// What the agent that took the snapshot reports.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ComputeSnapshotStatus {
    /// Pending, Ready or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<SnapshotPhase>,

    /// What it holds, uncompressed, for people: "12.4 MiB".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,

    /// What it holds, uncompressed, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<i64>,

    /// What it takes in the object store (compressed), in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored_bytes: Option<i64>,

    /// SHA-256 of its manifest (which lists the SHA-256 of each stored object), as
    /// "sha256:HEX": a restore recomputes it and refuses a snapshot that does not match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,

    /// When it was taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taken_at: Option<Time>,

    /// The node it was taken on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,

    /// The image the server ran: what its system changes apply to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,

    /// Where its objects are, under the object store's root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,

    /// What is happening, or what went wrong, in plain words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A snapshot a server starts from: its data and system changes are restored into the server's
/// new data volume and container before it first starts.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RestoreFrom {
    /// A Ready ComputeSnapshot in the server's namespace, of the same owner.
    #[schemars(length(min = 1, max = 253))]
    pub snapshot: String,
}

impl ComputeSnapshot {
    /// A snapshot named `name` of server `server`, owned (and labelled) as `owner`.
    pub fn of(name: &str, server: &str, owner: &str) -> ComputeSnapshot {
        let mut snapshot = ComputeSnapshot::new(
            name,
            ComputeSnapshotSpec {
                server: server.to_string(),
                owner: owner.to_string(),
            },
        );
        kube::ResourceExt::labels_mut(&mut snapshot)
            .insert(super::OWNER_LABEL.into(), super::owner_label(owner));
        snapshot
    }
}

/// A profile's snapshot schedule.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotSchedule {
    /// How often, such as "6h" or "1d".
    #[schemars(schema_with = "super::duration_schema")]
    pub every: String,
    /// How many of the scheduled snapshots to keep, newest first (1 to 100).
    #[schemars(range(min = 1, max = 100))]
    pub keep: i32,
}

/// Label on the snapshots a schedule took: only those are deleted by it.
pub const SCHEDULED_LABEL: &str = "computeserver.io/scheduled";

/// What a server's schedule asks for at `now`, from its scheduled snapshots (name and creation
/// time): whether to take one (none yet, or the newest is `every` old) and which to delete
/// (all but the newest `keep`).
pub fn scheduled(
    every: std::time::Duration,
    keep: usize,
    existing: &[(String, k8s_openapi::jiff::Timestamp)],
    now: k8s_openapi::jiff::Timestamp,
) -> (bool, Vec<String>) {
    let mut newest_first = existing.to_vec();
    newest_first.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| b.0.cmp(&a.0)));
    let due = newest_first.first().is_none_or(|(_, taken)| {
        taken
            .checked_add(
                k8s_openapi::jiff::SignedDuration::try_from(every)
                    .unwrap_or(k8s_openapi::jiff::SignedDuration::MAX),
            )
            .is_ok_and(|next| next <= now)
    });
    // Room for the one about to be taken.
    let kept = if due { keep.saturating_sub(1) } else { keep };
    let delete = newest_first
        .iter()
        .skip(kept)
        .map(|(name, _)| name.clone())
        .collect();
    (due, delete)
}

/// The newest Ready snapshot of `server` (same namespace, server name and owner) among
/// `snapshots`: what it is moved from when its node is lost.
pub fn newest_ready<'a>(
    server: &super::ComputeServer,
    snapshots: impl IntoIterator<Item = &'a ComputeSnapshot>,
) -> Option<&'a ComputeSnapshot> {
    use kube::ResourceExt;
    snapshots
        .into_iter()
        .filter(|s| {
            s.namespace() == server.namespace()
                && s.spec.server == server.name_any()
                && s.spec.owner == server.spec.owner
                && s.status.as_ref().and_then(|st| st.phase) == Some(SnapshotPhase::Ready)
        })
        .max_by_key(|s| {
            (
                s.status.as_ref().and_then(|st| st.taken_at.clone()).map(|t| t.0),
                s.name_any(),
            )
        })
}

/// The manifest a snapshot stores beside its objects: what each holds and its checksum.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// The format of this manifest.
    pub version: u32,
    /// The server it was taken of, as namespace/name, and its uid.
    pub server: String,
    pub server_uid: String,
    /// The image the server ran.
    pub image: String,
    /// Where the data volume was mounted in the container.
    pub data_path: String,
    /// The stored objects, each a zstd-compressed tar.
    pub parts: Vec<Part>,
    /// Paths of the image the server had removed (not restored: a restore starts from the image).
    #[serde(default)]
    pub removed: Vec<String>,
}

/// One stored object of a snapshot.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Part {
    /// `data` (the data volume) or `system` (what changed in the root file system).
    pub name: String,
    /// Its object's path under the snapshot's location.
    pub object: String,
    /// Bytes of tar before compression.
    pub size: u64,
    /// Bytes stored.
    pub stored: u64,
    /// SHA-256 of the stored bytes, hex.
    pub sha256: String,
}

impl Manifest {
    /// The manifest's format version written now.
    pub const VERSION: u32 = 1;

    /// Bytes of tar it holds, before compression.
    pub fn size(&self) -> u64 {
        self.parts.iter().map(|p| p.size).sum()
    }

    /// Bytes it takes in the store.
    pub fn stored(&self) -> u64 {
        self.parts.iter().map(|p| p.stored).sum()
    }
}

/// A snapshot's name: its server's, a word, and a time ("dev-20261204-101502",
/// "dev-archive-20261204-101502"), shortened so it stays a valid object name.
pub fn snapshot_name(server: &str, word: Option<&str>, at: k8s_openapi::jiff::Timestamp) -> String {
    let stamp = match word {
        Some(word) => format!("{word}-{}", at.strftime("%Y%m%d-%H%M%S")),
        None => at.strftime("%Y%m%d-%H%M%S").to_string(),
    };
    let room = 253 - stamp.len() - 1;
    let base: String = server.chars().take(room).collect();
    format!("{}-{stamp}", base.trim_end_matches(['-', '.']))
}

/// "sha256:HEX" of some bytes: a snapshot's checksum is this of its manifest's bytes.
pub fn checksum(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex(&sha2::Sha256::digest(bytes)))
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where a snapshot's objects live under the store's root: by namespace, server and the
/// snapshot's uid, so a snapshot made anew under the same name never meets the old one's objects.
pub fn location(namespace: &str, server: &str, snapshot_uid: &str) -> String {
    format!("snapshots/{namespace}/{server}/{snapshot_uid}")
}

/// Bytes for people: "512 B", "12.4 MiB", "1.2 GiB".
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if value < 10.0 {
        format!("{value:.1} {}", UNITS[unit])
    } else {
        format!("{value:.0} {}", UNITS[unit])
    }
}

/// Why a server may not start from a snapshot; said in its status.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RestoreRefusal {
    #[error("snapshot {0} does not exist in this namespace; `kubectl get csnap` lists the snapshots")]
    Missing(String),
    #[error("snapshot {name} is not ready yet ({phase}); the server starts once it is")]
    NotReady { name: String, phase: String },
    #[error("snapshot {name} failed and cannot be restored: {message}")]
    Failed { name: String, message: String },
}

/// Whether `server_owner`'s server may start from `snapshot` (None: not found). `Ok` gives the
/// location and checksum to restore and check.
pub fn restorable<'a>(
    name: &str,
    server_owner: &str,
    snapshot: Option<&'a ComputeSnapshot>,
) -> Result<(&'a str, &'a str), RestoreRefusal> {
    // Another person's snapshot answers as one that does not exist would: a server starts
    // only from its owner's snapshots, and learns nothing of others'.
    let snapshot = snapshot
        .filter(|s| s.spec.owner == server_owner)
        .ok_or_else(|| RestoreRefusal::Missing(name.into()))?;
    let status = snapshot.status.clone().unwrap_or_default();
    match (status.phase, snapshot.status.as_ref()) {
        (
            Some(SnapshotPhase::Ready),
            Some(ComputeSnapshotStatus {
                location: Some(location),
                checksum: Some(sum),
                ..
            }),
        ) => Ok((location.as_str(), sum.as_str())),
        (Some(SnapshotPhase::Failed), _) => Err(RestoreRefusal::Failed {
            name: name.into(),
            message: status.message.unwrap_or_default(),
        }),
        (phase, _) => Err(RestoreRefusal::NotReady {
            name: name.into(),
            phase: format!("{:?}", phase.unwrap_or(SnapshotPhase::Pending)),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(owner: &str, phase: Option<SnapshotPhase>) -> ComputeSnapshot {
        let mut s = ComputeSnapshot::new(
            "snap",
            ComputeSnapshotSpec {
                server: "dev".into(),
                owner: owner.into(),
            },
        );
        s.status = Some(ComputeSnapshotStatus {
            phase,
            location: Some("snapshots/compute/dev/u1".into()),
            checksum: Some("sha256:ab".into()),
            message: Some("Docker refused".into()),
            ..Default::default()
        });
        s
    }

    #[test]
    fn a_server_starts_only_from_a_ready_snapshot_of_its_owner() {
        let ready = snapshot("alice", Some(SnapshotPhase::Ready));
        assert_eq!(
            restorable("snap", "alice", Some(&ready)),
            Ok(("snapshots/compute/dev/u1", "sha256:ab"))
        );
        assert_eq!(
            restorable("snap", "bob", Some(&ready)),
            Err(RestoreRefusal::Missing("snap".into()))
        );
        assert_eq!(
            restorable("snap", "alice", None),
            Err(RestoreRefusal::Missing("snap".into()))
        );
        let pending = snapshot("alice", None);
        assert_eq!(
            restorable("snap", "alice", Some(&pending))
                .unwrap_err()
                .to_string(),
            "snapshot snap is not ready yet (Pending); the server starts once it is"
        );
        let failed = snapshot("alice", Some(SnapshotPhase::Failed));
        assert_eq!(
            restorable("snap", "alice", Some(&failed))
                .unwrap_err()
                .to_string(),
            "snapshot snap failed and cannot be restored: Docker refused"
        );
    }

    #[test]
    fn a_snapshot_is_named_after_its_server_and_the_time() {
        let now: k8s_openapi::jiff::Timestamp = "2026-12-04T10:15:02Z".parse().unwrap();
        assert_eq!(snapshot_name("dev", None, now), "dev-20261204-101502");
        assert_eq!(
            snapshot_name("dev", Some("archive"), now),
            "dev-archive-20261204-101502"
        );
        let name = snapshot_name(&"a".repeat(253), None, now);
        assert_eq!(name.len(), 253);
        assert!(name.ends_with("-20261204-101502"));
    }

    #[test]
    fn a_schedule_takes_one_every_period_and_keeps_the_newest() {
        let at = |t: &str| -> k8s_openapi::jiff::Timestamp { t.parse().unwrap() };
        let six_hours = std::time::Duration::from_secs(6 * 3600);
        assert_eq!(
            scheduled(six_hours, 2, &[], at("2026-12-04T10:00:00Z")),
            (true, vec![])
        );
        let existing = vec![
            ("a".to_string(), at("2026-12-04T00:00:00Z")),
            ("c".to_string(), at("2026-12-04T12:00:00Z")),
            ("b".to_string(), at("2026-12-04T06:00:00Z")),
        ];
        assert_eq!(
            scheduled(six_hours, 2, &existing, at("2026-12-04T17:59:59Z")),
            (false, vec!["a".to_string()]),
            "not due yet: the newest two stay"
        );
        assert_eq!(
            scheduled(six_hours, 2, &existing, at("2026-12-04T18:00:00Z")),
            (true, vec!["b".to_string(), "a".to_string()]),
            "due: room is made for the new one"
        );
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(13 * 1024 * 1024 + 400_000), "13 MiB");
        assert_eq!(human_bytes(3 * 1024 * 1024 * 1024 / 2), "1.5 GiB");
    }

    #[test]
    fn the_checksum_is_sha256_of_the_bytes() {
        assert_eq!(
            checksum(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
