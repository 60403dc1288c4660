//! The lifecycle controller, run by the acting scheduler: from its watch caches, it keeps each
//! server's `status.lastActivity`, `stopsAt` and `stopReason` (server-side apply under field
//! manager `compute-server-lifecycle`, so the agent, bastion and web front keep their own fields),
//! stops servers that are idle or past their lifetime (`spec.running: false`: container and data
//! kept) and deletes those stopped longer than their profile keeps them. What to do comes from
//! [`crate::api::lifecycle`]; this module turns it into writes.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;

use crate::api::lifecycle::{self, Act, Rules};
use crate::api::{ComputeServer, Profiles};

/// The field manager of the lifecycle's status fields.
pub const FIELD_MANAGER: &str = "compute-server-lifecycle";
/// How a stop by the lifecycle starts its stopReason; kept while the server stays stopped.
const STOPPED_AT: &str = "stopped at ";

/// One write of the lifecycle.
#[derive(Debug, PartialEq)]
pub enum Write {
    /// Apply these status fields (absent ones are removed).
    Status {
        server: Arc<ComputeServer>,
        fields: Fields,
    },
    /// Stop the server (spec.running: false), then say why in status.
    Stop {
        server: Arc<ComputeServer>,
        reason: String,
        fields: Fields,
    },
    /// Delete the server, for this reason.
    Delete {
        server: Arc<ComputeServer>,
        reason: String,
    },
}

/// The status fields the lifecycle owns.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fields {
    pub last_activity: Option<Time>,
    pub stops_at: Option<Time>,
    pub stop_reason: Option<String>,
}

impl Fields {
    fn of(server: &ComputeServer) -> Fields {
        let status = server.status.clone().unwrap_or_default();
        Fields {
            last_activity: status.last_activity,
            stops_at: status.stops_at,
            stop_reason: status.stop_reason,
        }
    }

    /// The server-side apply body for these fields.
    pub fn apply(&self, server: &ComputeServer) -> serde_json::Value {
        let mut status = serde_json::Map::new();
        if let Some(t) = &self.last_activity {
            status.insert("lastActivity".into(), serde_json::json!(t));
        }
        if let Some(t) = &self.stops_at {
            status.insert("stopsAt".into(), serde_json::json!(t));
        }
        if let Some(r) = &self.stop_reason {
            status.insert("stopReason".into(), serde_json::json!(r));
        }
        serde_json::json!({
            "apiVersion": "computeserver.io/v1alpha1",
            "kind": "ComputeServer",
            "metadata": { "name": server.name_any(), "namespace": server.namespace() },
            "status": status,
        })
    }
}

/// A time as the API server keeps it (whole seconds), so that what was written compares equal.
fn second(t: Timestamp) -> Time {
    Time(Timestamp::from_second(t.as_second()).unwrap_or(t))
}

/// What the lifecycle writes now, for every server in the cache. `run_out`: when running servers'
/// budgets of hours run out, and why, by uid (see `budget::Budgets::run_out`): a stop like the
/// profile's, the earlier of the two.
pub fn writes(
    servers: &[Arc<ComputeServer>],
    profiles: &Profiles,
    run_out: &HashMap<String, (Timestamp, String)>,
    now: Timestamp,
) -> Vec<Write> {
    let mut writes = Vec::new();
    for server in servers {
        let rules = Rules::of(profiles.of(server));
        let current = Fields::of(server);
        let spent = run_out
            .get(&server.uid().unwrap_or_default())
            .filter(|_| server.spec.running);
        if !rules.any() && current == Fields::default() && spent.is_none() {
            continue;
        }
        let mut verdict = lifecycle::verdict(server, &rules, now);
        if let Some((at, why)) = spent
            && verdict.stops_at.is_none_or(|stops| *at < stops)
        {
            verdict.stops_at = Some(*at);
            verdict.reason = Some(why.clone());
            if *at <= now && server.metadata.deletion_timestamp.is_none() {
                verdict.act = Act::Stop(why.clone());
            }
        }
        let mut fields = Fields {
            last_activity: verdict.last_activity.map(second),
            stops_at: verdict.stops_at.map(second),
            stop_reason: verdict.reason.clone(),
        };
        if !server.spec.running {
            // Why it was stopped stays while it is stopped; a forecast does not.
            fields.stop_reason = current.stop_reason.clone().filter(|r| r.starts_with(STOPPED_AT));
        }
        match verdict.act {
            Act::Stop(reason) => writes.push(Write::Stop {
                server: server.clone(),
                fields: Fields {
                    last_activity: fields.last_activity,
                    stops_at: None,
                    stop_reason: Some(format!("{STOPPED_AT}{}: {reason}", lifecycle::clock(now, now))),
                },
                reason,
            }),
            Act::Delete(reason) => writes.push(Write::Delete {
                server: server.clone(),
                reason,
            }),
            Act::Nothing if fields != current => writes.push(Write::Status {
                server: server.clone(),
                fields,
            }),
            Act::Nothing => {}
        }
    }
    writes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ComputeProfile, ComputeServerStatus, Phase};

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn profile() -> Profiles {
        let p: ComputeProfile = serde_yaml::from_str(
            "{apiVersion: computeserver.io/v1alpha1, kind: ComputeProfile, metadata: {name: p}, \
             spec: {image: busybox, lifecycle: {idleStopAfter: 30m, maxExtension: 2h}}}",
        )
        .unwrap();
        [p].into_iter().collect()
    }

    fn server(running: bool, phase: Phase) -> ComputeServer {
        let mut s: ComputeServer = serde_yaml::from_str(
            "{apiVersion: computeserver.io/v1alpha1, kind: ComputeServer, metadata: {name: a, namespace: n}, \
             spec: {owner: alice, profile: p}}",
        )
        .unwrap();
        s.spec.running = running;
        s.status = Some(ComputeServerStatus {
            phase: Some(phase),
            started_at: Some(Time(at("2026-12-01T14:00:00Z"))),
            ..Default::default()
        });
        s
    }

    #[test]
    fn the_forecast_is_written_once_then_left_alone() {
        let now = at("2026-12-01T14:10:00Z");
        let s = Arc::new(server(true, Phase::Running));
        let [Write::Status { fields, .. }] =
            &writes(std::slice::from_ref(&s), &profile(), &HashMap::new(), now)[..]
        else {
            panic!("one status write")
        };
        assert_eq!(fields.stops_at, Some(Time(at("2026-12-01T14:30:00Z"))));
        assert_eq!(
            fields.stop_reason.as_deref(),
            Some("idle: no SSH session and under 5% CPU since 14:00 UTC")
        );
        let mut written = (*s).clone();
        let status = written.status.as_mut().unwrap();
        status.last_activity = fields.last_activity.clone();
        status.stops_at = fields.stops_at.clone();
        status.stop_reason = fields.stop_reason.clone();
        assert_eq!(
            writes(&[Arc::new(written)], &profile(), &HashMap::new(), now),
            vec![],
            "nothing changed"
        );
    }

    #[test]
    fn an_idle_server_is_stopped_and_says_so_while_stopped() {
        let now = at("2026-12-01T14:31:00Z");
        let s = Arc::new(server(true, Phase::Running));
        let [Write::Stop { reason, fields, .. }] = &writes(&[s], &profile(), &HashMap::new(), now)[..] else {
            panic!("a stop")
        };
        assert_eq!(reason, "idle: no SSH session and under 5% CPU since 14:00 UTC");
        assert_eq!(
            fields.stop_reason.as_deref(),
            Some("stopped at 14:31 UTC: idle: no SSH session and under 5% CPU since 14:00 UTC")
        );
        assert_eq!(fields.stops_at, None);
        let mut stopped = server(false, Phase::Stopped);
        stopped.status.as_mut().unwrap().stop_reason = fields.stop_reason.clone();
        assert_eq!(
            writes(&[Arc::new(stopped)], &profile(), &HashMap::new(), now),
            vec![],
            "the reason stays"
        );
        let mut by_hand = server(false, Phase::Stopped);
        by_hand.status.as_mut().unwrap().stop_reason = Some("idle: … since 14:00 UTC".into());
        let [Write::Status { fields, .. }] =
            &writes(&[Arc::new(by_hand)], &profile(), &HashMap::new(), now)[..]
        else {
            panic!("the forecast goes when the owner stops it")
        };
        assert_eq!(fields, &Fields::default());
    }
}
