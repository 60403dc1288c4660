//! Moving a server off a lost node, decided without doing: whether it moves now, from which
//! snapshot, and what its status says meanwhile. The move itself is one write of the server's
//! metadata and spec (its node label removed, `spec.restoreFrom` set), so the lost node's agent,
//! should it come back, no longer sees the server and never starts its stale container; the
//! next pass places it like any new server and that node's agent restores it.

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use crate::api::lifecycle::{Rules, clock, human, lost_since};
use crate::api::{ComputeServer, ComputeSnapshot, newest_ready};

/// A move decided.
#[derive(Debug, PartialEq)]
pub struct Move {
    /// The snapshot it is restored from.
    pub snapshot: String,
    /// Whether the move sets `spec.restoreFrom` (its profile moves it), or its owner set it.
    pub set_restore_from: bool,
    /// What its status says while it moves.
    pub message: String,
}

/// Whether `server`, on lost node `node`, moves now: its owner asked (spec.restoreFrom names a
/// snapshot it was not restored from), or its profile's `moveAfterNodeLost` has passed and it
/// has a Ready snapshot of its own.
pub fn decide<'a>(
    server: &ComputeServer,
    node: &str,
    snapshots: impl IntoIterator<Item = &'a ComputeSnapshot>,
    rules: &Rules,
    now: Timestamp,
) -> Option<Move> {
    if server.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let restored = server
        .status
        .as_ref()
        .and_then(|s| s.restored_from.as_ref())
        .map(|r| r.snapshot.as_str());
    let snapshots: Vec<&ComputeSnapshot> = snapshots.into_iter().collect();
    let taken = |name: &str| {
        snapshots
            .iter()
            .find(|s| s.name_any() == name && s.namespace() == server.namespace())
            .and_then(|s| s.status.as_ref()?.taken_at.as_ref())
            .map(|t| clock(t.0, now))
    };
    let say = |name: &str, why: String| {
        let when = taken(name).map(|t| format!(" taken at {t}")).unwrap_or_default();
        format!(
            "node {node} is lost; {why}: it moves to another node, restored from snapshot {name}{when} \
             (what changed on {node} after it was taken is lost)"
        )
    };
    if let Some(asked) = server.spec.restore_from.as_ref().map(|r| r.snapshot.as_str())
        && Some(asked) != restored
    {
        return Some(Move {
            snapshot: asked.to_string(),
            set_restore_from: false,
            message: say(asked, "its owner asked".into()),
        });
    }
    let after = rules.move_after_node_lost?;
    let since = lost_since(server)?;
    let due = since
        .checked_add(k8s_openapi::jiff::SignedDuration::try_from(after).ok()?)
        .is_ok_and(|at| at <= now);
    let newest = newest_ready(server, snapshots.iter().copied())?;
    // Restored from the newest already: moving again would bring nothing newer.
    (due && Some(newest.name_any().as_str()) != restored).then(|| Move {
        snapshot: newest.name_any(),
        set_restore_from: true,
        message: say(
            &newest.name_any(),
            format!("its profile moves servers after {} lost", human(after)),
        ),
    })
}

/// What a server's status says when its node is lost: whether and when it moves by itself.
pub fn lost_message<'a>(
    server: &ComputeServer,
    node: &str,
    reason: &str,
    snapshots: impl IntoIterator<Item = &'a ComputeSnapshot>,
    rules: &Rules,
    now: Timestamp,
) -> String {
    let lost = format!(
        "node {node} is lost ({reason}); the server's state is unknown. It reports again by itself when the node comes back"
    );
    let newest = newest_ready(server, snapshots);
    match (rules.move_after_node_lost, newest) {
        (Some(after), Some(snapshot)) => {
            let taken = snapshot
                .status
                .as_ref()
                .and_then(|s| s.taken_at.as_ref())
                .map(|t| format!(" of {}", clock(t.0, now)))
                .unwrap_or_default();
            let at = now
                .checked_add(k8s_openapi::jiff::SignedDuration::try_from(after).unwrap_or_default())
                .unwrap_or(now);
            format!(
                "{lost}; if it does not by {}, it moves to another node, restored from its newest snapshot ({}{taken})",
                clock(at, now),
                snapshot.name_any()
            )
        }
        (Some(_), None) => {
            format!("{lost}; it is not moved to another node: it has no Ready snapshot to be restored from")
        }
        (None, Some(_)) => format!(
            "{lost}; it is not moved to another node by itself: its owner can move it, restored from a \
             snapshot (Move on its page, or spec.restoreFrom)"
        ),
        (None, None) => format!("{lost}; it is not moved to another node"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ComputeServerStatus, ComputeSnapshotStatus, Phase, Restored, SnapshotPhase};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn lost(owner: &str) -> ComputeServer {
        let mut server: ComputeServer = serde_yaml::from_str(&format!(
            "{{apiVersion: computeserver.io/v1alpha1, kind: ComputeServer, metadata: {{name: box, namespace: ns}}, \
             spec: {{owner: {owner}, profile: p}}}}"
        ))
        .unwrap();
        server.status = Some(ComputeServerStatus {
            phase: Some(Phase::NodeLost),
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: "False".into(),
                reason: "NodeLost".into(),
                message: "lost".into(),
                observed_generation: None,
                last_transition_time: Time(at("2026-12-04T10:00:00Z")),
            }],
            ..Default::default()
        });
        server
    }

    fn snapshot(name: &str, server: &str, owner: &str, taken: &str, phase: SnapshotPhase) -> ComputeSnapshot {
        let mut s = ComputeSnapshot::of(name, server, owner);
        s.metadata.namespace = Some("ns".into());
        s.status = Some(ComputeSnapshotStatus {
            phase: Some(phase),
            taken_at: Some(Time(at(taken))),
            ..Default::default()
        });
        s
    }

    fn rules(after: Option<&str>) -> Rules {
        Rules {
            move_after_node_lost: after.map(|a| crate::api::parse_duration(a).unwrap()),
            ..Rules::default()
        }
    }

    #[test]
    fn a_lost_server_moves_after_its_profiles_time_from_its_own_newest_ready_snapshot() {
        let server = lost("alice");
        let snapshots = [
            snapshot(
                "old",
                "box",
                "alice",
                "2026-12-04T08:00:00Z",
                SnapshotPhase::Ready,
            ),
            snapshot(
                "new",
                "box",
                "alice",
                "2026-12-04T09:00:00Z",
                SnapshotPhase::Ready,
            ),
            snapshot(
                "failed",
                "box",
                "alice",
                "2026-12-04T09:30:00Z",
                SnapshotPhase::Failed,
            ),
            snapshot("bobs", "box", "bob", "2026-12-04T09:40:00Z", SnapshotPhase::Ready),
            snapshot(
                "other",
                "other",
                "alice",
                "2026-12-04T09:50:00Z",
                SnapshotPhase::Ready,
            ),
        ];
        let r = rules(Some("5m"));
        assert_eq!(
            decide(&server, "n1", &snapshots, &r, at("2026-12-04T10:04:59Z")),
            None
        );
        let moved = decide(&server, "n1", &snapshots, &r, at("2026-12-04T10:05:00Z")).unwrap();
        assert_eq!(moved.snapshot, "new");
        assert!(moved.set_restore_from);
        assert_eq!(
            moved.message,
            "node n1 is lost; its profile moves servers after 5m lost: it moves to another node, restored \
             from snapshot new taken at 09:00 UTC (what changed on n1 after it was taken is lost)"
        );
        assert_eq!(
            decide(
                &server,
                "n1",
                &snapshots,
                &rules(None),
                at("2026-12-05T00:00:00Z")
            ),
            None,
            "without the rule it waits for its node or its owner"
        );
        assert_eq!(
            decide(&server, "n1", &snapshots[2..3], &r, at("2026-12-05T00:00:00Z")),
            None,
            "nothing Ready of its own: it is not moved"
        );
        let mut done = server.clone();
        done.status.as_mut().unwrap().restored_from = Some(Restored {
            snapshot: "new".into(),
            checksum: "x".into(),
            taken_at: None,
        });
        assert_eq!(
            decide(&done, "n1", &snapshots, &r, at("2026-12-05T00:00:00Z")),
            None,
            "restored from the newest already"
        );
    }

    #[test]
    fn an_owner_moves_a_lost_server_by_naming_a_snapshot_at_once() {
        let mut server = lost("alice");
        server.spec.restore_from = Some(crate::api::RestoreFrom {
            snapshot: "old".into(),
        });
        let snapshots = [snapshot(
            "old",
            "box",
            "alice",
            "2026-12-03T08:00:00Z",
            SnapshotPhase::Ready,
        )];
        let moved = decide(
            &server,
            "n1",
            &snapshots,
            &rules(None),
            at("2026-12-04T10:00:01Z"),
        )
        .unwrap();
        assert_eq!(moved.snapshot, "old");
        assert!(!moved.set_restore_from);
        assert!(moved.message.contains("its owner asked"), "{}", moved.message);
        assert!(
            moved.message.contains("taken at 2026-12-03 08:00 UTC"),
            "{}",
            moved.message
        );
    }

    #[test]
    fn the_lost_message_says_whether_and_when_it_moves() {
        let server = lost("alice");
        let snapshots = [snapshot(
            "new",
            "box",
            "alice",
            "2026-12-04T09:00:00Z",
            SnapshotPhase::Ready,
        )];
        let now = at("2026-12-04T10:00:00Z");
        let says = |snapshots: &[ComputeSnapshot], r: &Rules| {
            lost_message(&server, "n1", "no heartbeat", snapshots, r, now)
        };
        let moving = says(&snapshots, &rules(Some("30m")));
        assert!(moving.starts_with("node n1 is lost (no heartbeat)"), "{moving}");
        assert!(
            moving.ends_with("if it does not by 10:30 UTC, it moves to another node, restored from its newest snapshot (new of 09:00 UTC)"),
            "{moving}"
        );
        assert!(says(&[], &rules(Some("30m"))).ends_with("it has no Ready snapshot to be restored from"));
        assert!(says(&snapshots, &rules(None)).contains("its owner can move it"));
        assert!(says(&[], &rules(None)).ends_with("it is not moved to another node"));
    }
}
