//! Counting reserved hours into the day's ComputeUsage: from where the ledger was counted up to
//! now, split at each UTC midnight. Pure: the pass carries out what this returns.

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;

use crate::api::quota::{self, ComputeUsage, ComputeUsageSpec, Hours, OwnerHours};
use crate::api::size::Request;

/// A running server, as its hours are counted (into the ledger, and against budgets that run out).
pub struct Running {
    pub uid: String,
    pub owner: String,
    pub groups: Vec<String>,
    pub request: Request,
}

/// One day's ComputeUsage to write: created when `resource_version` is None, else replaced on
/// that version (a pass on a stale cache fails to write rather than count twice).
#[derive(Debug, Clone, PartialEq)]
pub struct Day {
    pub name: String,
    pub resource_version: Option<String>,
    pub spec: ComputeUsageSpec,
    /// What this count adds, per person (with their servers' groups): for the metrics.
    pub added: Vec<(String, Vec<String>, Hours)>,
}

/// Hours further back than this are not counted (a scheduler that was down for longer starts
/// again from then).
const LONGEST_GAP: SignedDuration = SignedDuration::from_hours(24 * 40);

/// The days to write for `running` since the ledger `days` was last counted, up to `now`. With
/// no ledger yet, today's is started, counted from now.
pub fn count(
    days: &[Arc<ComputeUsage>],
    running: &[Running],
    now: Timestamp,
    scope: Option<&str>,
) -> Vec<Day> {
    let Some(latest) = days.iter().max_by_key(|d| quota::day_of(&d.name_any())) else {
        return vec![Day {
            name: quota::day_name(now, scope),
            resource_version: None,
            spec: ComputeUsageSpec {
                counted_until: Time(now),
                owners: vec![],
            },
            added: vec![],
        }];
    };
    let mut cursor = latest.spec.counted_until.0.max(now - LONGEST_GAP);
    let mut out = Vec::new();
    while cursor < now {
        let name = quota::day_name(cursor, scope);
        let day_end = quota::day_start(cursor) + SignedDuration::from_hours(24);
        let upto = now.min(day_end);
        let seconds = upto.duration_since(cursor).as_secs_f64();
        let existing = days.iter().find(|d| d.name_any() == name);
        let mut spec = existing.map(|d| d.spec.clone()).unwrap_or(ComputeUsageSpec {
            counted_until: Time(cursor),
            owners: vec![],
        });
        let mut added: Vec<(String, Vec<String>, Hours)> = Vec::new();
        for server in running {
            let hours = Hours::of(&server.request, seconds);
            match added
                .iter_mut()
                .find(|a| a.0 == server.owner && a.1 == server.groups)
            {
                Some(entry) => entry.2 += hours,
                None => added.push((server.owner.clone(), server.groups.clone(), hours)),
            }
            let row = match spec.owners.iter().position(|o| o.owner == server.owner) {
                Some(i) => &mut spec.owners[i],
                None => {
                    spec.owners.push(OwnerHours {
                        owner: server.owner.clone(),
                        ..Default::default()
                    });
                    spec.owners.last_mut().unwrap()
                }
            };
            for group in &server.groups {
                if !row.groups.contains(group) {
                    row.groups.push(group.clone());
                }
            }
            row.hours += hours;
        }
        spec.owners.sort_by(|a, b| a.owner.cmp(&b.owner));
        spec.counted_until = Time(upto);
        out.push(Day {
            name,
            resource_version: existing.and_then(|d| d.resource_version()),
            spec,
            added,
        });
        cursor = upto;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(name: &str, until: &str) -> Arc<ComputeUsage> {
        let mut usage = ComputeUsage::new(
            name,
            ComputeUsageSpec {
                counted_until: Time(until.parse().unwrap()),
                owners: vec![],
            },
        );
        usage.metadata.resource_version = Some("5".into());
        Arc::new(usage)
    }

    fn running(owner: &str, cpus: i64, gpus: i64) -> Running {
        Running {
            uid: format!("uid-{owner}"),
            owner: owner.into(),
            groups: vec!["students".into()],
            request: Request {
                nano_cpus: cpus * 1_000_000_000,
                memory_bytes: 1 << 30,
                gpus,
            },
        }
    }

    #[test]
    fn hours_are_counted_from_where_the_ledger_stopped_and_split_at_midnight() {
        let ledger = [day("2026-12-03", "2026-12-03T23:30:00Z")];
        let now: Timestamp = "2026-12-04T01:00:00Z".parse().unwrap();
        let days = count(
            &ledger,
            &[running("alice", 2, 1), running("alice", 1, 0)],
            now,
            None,
        );
        assert_eq!(days.len(), 2);
        assert_eq!(days[0].name, "2026-12-03");
        assert_eq!(
            days[0].resource_version.as_deref(),
            Some("5"),
            "replaced on its version"
        );
        let alice = &days[0].spec.owners[0];
        assert_eq!((alice.hours.cpu_hours, alice.hours.gpu_hours), (1.5, 0.5));
        assert_eq!(
            days[0].spec.counted_until.0,
            "2026-12-04T00:00:00Z".parse::<Timestamp>().unwrap()
        );
        assert_eq!(days[1].name, "2026-12-04");
        assert_eq!(days[1].resource_version, None, "a new day is created");
        assert_eq!(days[1].spec.owners[0].hours.cpu_hours, 3.0);
        assert_eq!(days[1].spec.owners[0].groups, ["students"]);
        assert_eq!(days[1].spec.counted_until.0, now);
    }

    #[test]
    fn a_first_count_starts_today_and_nothing_is_counted_twice() {
        let now: Timestamp = "2026-12-04T10:00:00Z".parse().unwrap();
        let first = count(&[], &[running("bob", 1, 0)], now, Some("lab"));
        assert_eq!(first[0].name, "lab.2026-12-04");
        assert_eq!(first.len(), 1);
        assert!(first[0].spec.owners.is_empty(), "nothing before the first count");
        let ledger = [day("2026-12-04", "2026-12-04T10:00:00Z")];
        assert!(count(&ledger, &[running("bob", 1, 0)], now, None).is_empty());
    }
}
