//! When a server stops or goes by itself, from its profile's `lifecycle` and the signs of use in
//! its status: pure, shared by the lifecycle controller (which acts), the agent (whose status
//! message warns) and the web front (which shows the warning and its "Keep running").

use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};

use super::{CONDITION_READY, ComputeProfile, ComputeServer, Lifecycle, Phase, parse_duration};

/// CPU use (percent of the server's limit) above which a server counts as busy, by default.
pub const DEFAULT_IDLE_CPU_PERCENT: i32 = 5;
/// The longest warning before a stop.
const MAX_WARNING: Duration = Duration::from_secs(15 * 60);

/// A profile's lifecycle with its durations read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rules {
    pub idle_stop_after: Option<Duration>,
    pub max_lifetime: Option<Duration>,
    pub max_extension: Option<Duration>,
    pub delete_after_stopped: Option<Duration>,
    pub archive_after_stopped: Option<Duration>,
    pub move_after_node_lost: Option<Duration>,
    pub idle_cpu_percent: i32,
}

impl Rules {
    /// The rules of `profile` (none without one). A duration the API server let through but
    /// that cannot be read counts as unset.
    pub fn of(profile: Option<&ComputeProfile>) -> Rules {
        let lifecycle = profile.map(|p| p.spec.lifecycle.clone()).unwrap_or_default();
        let read = |d: &Option<String>| d.as_deref().and_then(|d| parse_duration(d).ok());
        let Lifecycle {
            idle_stop_after,
            max_lifetime,
            max_extension,
            delete_after_stopped,
            archive_after_stopped,
            move_after_node_lost,
            idle_cpu_percent,
        } = &lifecycle;
        Rules {
            idle_stop_after: read(idle_stop_after),
            max_lifetime: read(max_lifetime),
            max_extension: read(max_extension),
            delete_after_stopped: read(delete_after_stopped),
            archive_after_stopped: read(archive_after_stopped),
            move_after_node_lost: read(move_after_node_lost),
            idle_cpu_percent: idle_cpu_percent.unwrap_or(DEFAULT_IDLE_CPU_PERCENT),
        }
    }

    /// Whether servers of this profile ever stop or go by themselves.
    pub fn any(&self) -> bool {
        self.idle_stop_after.is_some() || self.max_lifetime.is_some() || self.delete_after_stopped.is_some()
    }

    /// How long before a stop it is announced: a tenth of the idle time, at most 15 minutes.
    pub fn warning(&self) -> Duration {
        self.idle_stop_after
            .map(|idle| idle / 10)
            .unwrap_or(MAX_WARNING)
            .min(MAX_WARNING)
    }
}

/// What the lifecycle says of one server now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// The last sign of use: its start, or the newest activity.
    pub last_activity: Option<Timestamp>,
    /// When it stops by itself, if it runs and its profile says so.
    pub stops_at: Option<Timestamp>,
    /// Why it stops then, in plain words.
    pub reason: Option<String>,
    /// What to do now.
    pub act: Act,
}

/// What the lifecycle controller does now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Act {
    #[default]
    Nothing,
    /// Stop it (spec.running: false), for this reason.
    Stop(String),
    /// Delete it, for this reason.
    Delete(String),
}

/// "14:02 UTC", or the date too when it is not today's.
pub fn clock(time: Timestamp, now: Timestamp) -> String {
    let (t, n) = (
        time.to_zoned(k8s_openapi::jiff::tz::TimeZone::UTC),
        now.to_zoned(k8s_openapi::jiff::tz::TimeZone::UTC),
    );
    if t.date() == n.date() {
        t.strftime("%H:%M UTC").to_string()
    } else {
        t.strftime("%Y-%m-%d %H:%M UTC").to_string()
    }
}

/// A duration for a sentence: "4h", "90m", "30s", "1d 2h".
pub fn human(duration: Duration) -> String {
    let secs = duration.as_secs();
    let parts = [
        (secs / 86400, "d"),
        (secs % 86400 / 3600, "h"),
        (secs % 3600 / 60, "m"),
        (secs % 60, "s"),
    ];
    let text: Vec<String> = parts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, u)| format!("{n}{u}"))
        .collect();
    if text.is_empty() {
        "0s".into()
    } else {
        text.join(" ")
    }
}

fn plus(time: Timestamp, duration: Duration) -> Timestamp {
    time.checked_add(SignedDuration::try_from(duration).unwrap_or(SignedDuration::MAX))
        .unwrap_or(Timestamp::MAX)
}

/// Since when a stopped (or archived) server is stopped: the Ready condition's last turn to False.
pub fn stopped_since(server: &ComputeServer) -> Option<Timestamp> {
    let status = server.status.as_ref()?;
    matches!(status.phase, Some(Phase::Stopped | Phase::Archived)).then_some(())?;
    status
        .conditions
        .iter()
        .find(|c| c.type_ == CONDITION_READY && c.status == "False")
        .map(|c| c.last_transition_time.0)
}

/// Since when a server's node is lost: its Ready condition's turn to False for NodeLost.
pub fn lost_since(server: &ComputeServer) -> Option<Timestamp> {
    let status = server.status.as_ref()?;
    (status.phase == Some(Phase::NodeLost)).then_some(())?;
    status
        .conditions
        .iter()
        .find(|c| c.type_ == CONDITION_READY && c.status == "False" && c.reason == "NodeLost")
        .map(|c| c.last_transition_time.0)
}

/// Whether a stopped server is due to be archived at `now`: its profile archives after
/// `archiveAfterStopped`, it is asked to stay stopped, and it has been so that long.
pub fn archive_due(server: &ComputeServer, rules: &Rules, now: Timestamp) -> bool {
    let (Some(after), Some(since)) = (rules.archive_after_stopped, stopped_since(server)) else {
        return false;
    };
    let archived = server.archived_to().is_some();
    !server.spec.running
        && !archived
        && server.metadata.deletion_timestamp.is_none()
        && plus(since, after) <= now
}

/// The lifecycle's verdict on `server` with the rules of its profile, at `now`.
pub fn verdict(server: &ComputeServer, rules: &Rules, now: Timestamp) -> Verdict {
    let status = server.status.clone().unwrap_or_default();
    if server.metadata.deletion_timestamp.is_some() || !rules.any() {
        return Verdict::default();
    }
    if !server.spec.running {
        if let (Some(keep), Some(since)) = (rules.delete_after_stopped, stopped_since(server))
            && plus(since, keep) <= now
        {
            return Verdict {
                act: Act::Delete(format!(
                    "stopped since {} (profiles delete after {} stopped)",
                    clock(since, now),
                    human(keep)
                )),
                ..Verdict::default()
            };
        }
        return Verdict::default();
    }
    let (Some(Phase::Running), Some(started)) = (status.phase, status.started_at.as_ref().map(|t| t.0))
    else {
        return Verdict::default();
    };
    let last_activity = status
        .activity
        .iter()
        .map(|a| a.last_seen.0)
        .chain([started])
        .max()
        .unwrap_or(started);
    let idle = rules.idle_stop_after.map(|idle| {
        (
            plus(last_activity, idle),
            format!(
                "idle: no SSH session and under {}% CPU since {}",
                rules.idle_cpu_percent,
                clock(last_activity, now)
            ),
        )
    });
    let lifetime = rules.max_lifetime.map(|life| {
        (
            plus(started, life),
            format!(
                "its lifetime of {} is over (started at {})",
                human(life),
                clock(started, now)
            ),
        )
    });
    let Some((natural, mut reason)) = [idle, lifetime].into_iter().flatten().min_by_key(|(at, _)| *at) else {
        return Verdict {
            last_activity: Some(last_activity),
            ..Verdict::default()
        };
    };
    let mut stops_at = natural;
    if let Some(keep) = server
        .spec
        .keep_running_until
        .as_ref()
        .map(|t| t.0)
        .filter(|keep| *keep > natural)
    {
        match rules.max_extension {
            Some(most) if keep <= plus(natural, most) => {
                stops_at = keep;
                reason = format!("kept running until {}", clock(keep, now));
            }
            Some(most) => {
                stops_at = plus(natural, most);
                reason = format!(
                    "kept running until {}, the most its profile allows ({} past {}); asked until {}",
                    clock(stops_at, now),
                    human(most),
                    clock(natural, now),
                    clock(keep, now)
                );
            }
            None => reason.push_str("; its profile allows no keeping it running longer"),
        }
    }
    Verdict {
        last_activity: Some(last_activity),
        stops_at: Some(stops_at),
        act: if stops_at <= now {
            Act::Stop(reason.clone())
        } else {
            Act::Nothing
        },
        reason: Some(reason),
    }
}

/// The warning to show while a stop is near: "stops at 14:32 UTC (idle: …)"; None before.
pub fn warning(server: &ComputeServer, rules: &Rules, now: Timestamp) -> Option<String> {
    let status = server.status.as_ref()?;
    let stops_at = status.stops_at.as_ref()?.0;
    (server.spec.running && stops_at.duration_since(now) <= SignedDuration::try_from(rules.warning()).ok()?)
        .then(|| {
            format!(
                "stops at {} unless kept running: {}",
                clock(stops_at, now),
                status.stop_reason.as_deref().unwrap_or("its profile says so")
            )
        })
}

/// When the warning of a server's coming stop begins, if it is still ahead.
pub fn warning_starts(server: &ComputeServer, rules: &Rules, now: Timestamp) -> Option<Timestamp> {
    let stops_at = server.status.as_ref()?.stops_at.as_ref()?.0;
    let starts = stops_at
        .checked_sub(SignedDuration::try_from(rules.warning()).ok()?)
        .ok()?;
    (starts > now).then_some(starts)
}

/// Why a server cannot be kept running longer: its profile allows no extension.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("its profile allows no keeping it running longer")]
pub struct NoExtension;

/// The time "Keep running for `asked`" sets (spec.keepRunningUntil): `now + asked`, cut to
/// what the profile allows past the stop as it stands.
pub fn keep_until(
    server: &ComputeServer,
    rules: &Rules,
    asked: Duration,
    now: Timestamp,
) -> Result<Timestamp, NoExtension> {
    let Some(most) = rules.max_extension else {
        return Err(NoExtension);
    };
    let natural = verdict(
        &{
            let mut s = server.clone();
            s.spec.keep_running_until = None;
            s
        },
        rules,
        now,
    )
    .stops_at
    .unwrap_or(now);
    Ok(plus(now, asked).min(plus(natural.max(now), most)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Activity, ComputeServerStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn running(started: &str) -> ComputeServer {
        let mut server: ComputeServer = serde_yaml::from_str(
            "{apiVersion: computeserver.io/v1alpha1, kind: ComputeServer, metadata: {name: a}, spec: {owner: alice, profile: p}}",
        )
        .unwrap();
        server.status = Some(ComputeServerStatus {
            phase: Some(Phase::Running),
            started_at: Some(Time(at(started))),
            ..Default::default()
        });
        server
    }

    fn rules(idle: &str, life: Option<&str>, extension: Option<&str>) -> Rules {
        Rules {
            idle_stop_after: parse_duration(idle).ok(),
            max_lifetime: life.map(|l| parse_duration(l).unwrap()),
            max_extension: extension.map(|e| parse_duration(e).unwrap()),
            delete_after_stopped: None,
            archive_after_stopped: None,
            move_after_node_lost: None,
            idle_cpu_percent: 5,
        }
    }

    fn seen(server: &mut ComputeServer, source: &str, when: &str) {
        server.status.as_mut().unwrap().activity.push(Activity {
            source: source.into(),
            last_seen: Time(at(when)),
            detail: None,
        });
    }

    #[test]
    fn an_idle_server_stops_after_its_idle_time_with_the_reason() {
        let server = running("2026-12-01T14:02:00Z");
        let r = rules("30m", None, None);
        let before = verdict(&server, &r, at("2026-12-01T14:20:00Z"));
        assert_eq!(before.stops_at, Some(at("2026-12-01T14:32:00Z")));
        assert_eq!(before.act, Act::Nothing);
        let after = verdict(&server, &r, at("2026-12-01T14:32:00Z"));
        assert_eq!(
            after.act,
            Act::Stop("idle: no SSH session and under 5% CPU since 14:02 UTC".into())
        );
    }

    #[test]
    fn use_of_any_source_moves_the_stop() {
        let mut server = running("2026-12-01T14:00:00Z");
        seen(&mut server, "ssh", "2026-12-01T14:25:00Z");
        seen(&mut server, "cpu", "2026-12-01T14:10:00Z");
        let v = verdict(&server, &rules("30m", None, None), at("2026-12-01T14:40:00Z"));
        assert_eq!(v.last_activity, Some(at("2026-12-01T14:25:00Z")));
        assert_eq!(v.stops_at, Some(at("2026-12-01T14:55:00Z")));
        assert_eq!(v.act, Act::Nothing);
    }

    #[test]
    fn a_lifetime_stops_a_busy_server() {
        let mut server = running("2026-12-01T06:00:00Z");
        seen(&mut server, "cpu", "2026-12-01T13:59:00Z");
        let v = verdict(
            &server,
            &rules("30m", Some("8h"), None),
            at("2026-12-01T14:00:00Z"),
        );
        assert_eq!(
            v.act,
            Act::Stop("its lifetime of 8h is over (started at 06:00 UTC)".into())
        );
    }

    #[test]
    fn keeping_it_running_holds_within_the_profiles_extension() {
        let mut server = running("2026-12-01T14:00:00Z");
        server.spec.keep_running_until = Some(Time(at("2026-12-01T16:00:00Z")));
        let now = at("2026-12-01T14:45:00Z");
        let kept = verdict(&server, &rules("30m", None, Some("4h")), now);
        assert_eq!(
            (kept.stops_at, kept.act.clone()),
            (Some(at("2026-12-01T16:00:00Z")), Act::Nothing)
        );
        assert_eq!(kept.reason.as_deref(), Some("kept running until 16:00 UTC"));
        let cut = verdict(&server, &rules("30m", None, Some("1h")), now);
        assert_eq!(cut.stops_at, Some(at("2026-12-01T15:30:00Z")));
        assert!(
            cut.reason
                .unwrap()
                .contains("the most its profile allows (1h past 14:30 UTC)")
        );
        let none = verdict(&server, &rules("30m", None, None), now);
        assert_eq!(none.stops_at, Some(at("2026-12-01T14:30:00Z")));
        assert!(matches!(none.act, Act::Stop(r) if r.ends_with("allows no keeping it running longer")));
    }

    #[test]
    fn extend_asks_are_cut_to_what_the_profile_allows() {
        let server = running("2026-12-01T14:00:00Z");
        let now = at("2026-12-01T14:20:00Z");
        let r = rules("30m", None, Some("2h"));
        assert_eq!(
            keep_until(&server, &r, Duration::from_secs(3600), now),
            Ok(at("2026-12-01T15:20:00Z"))
        );
        assert_eq!(
            keep_until(&server, &r, Duration::from_secs(8 * 3600), now),
            Ok(at("2026-12-01T16:30:00Z"))
        );
        assert!(keep_until(&server, &rules("30m", None, None), Duration::from_secs(60), now).is_err());
    }

    #[test]
    fn the_warning_starts_a_tenth_of_the_idle_time_before_at_most_15_minutes() {
        let mut server = running("2026-12-01T14:00:00Z");
        let status = server.status.as_mut().unwrap();
        status.stops_at = Some(Time(at("2026-12-01T16:00:00Z")));
        status.stop_reason = Some("idle: no SSH session and under 5% CPU since 14:00 UTC".into());
        let long = rules("2h", None, None);
        assert_eq!(long.warning(), Duration::from_secs(12 * 60));
        assert_eq!(warning(&server, &long, at("2026-12-01T15:40:00Z")), None);
        assert_eq!(
            warning(&server, &long, at("2026-12-01T15:50:00Z")).as_deref(),
            Some(
                "stops at 16:00 UTC unless kept running: idle: no SSH session and under 5% CPU since 14:00 UTC"
            )
        );
        assert_eq!(
            warning_starts(&server, &long, at("2026-12-01T15:40:00Z")),
            Some(at("2026-12-01T15:48:00Z"))
        );
        assert_eq!(rules("10h", None, None).warning(), Duration::from_secs(15 * 60));
    }

    #[test]
    fn stopped_servers_go_after_delete_after_stopped() {
        let mut server = running("2026-12-01T10:00:00Z");
        server.spec.running = false;
        let status = server.status.as_mut().unwrap();
        status.phase = Some(Phase::Stopped);
        status.conditions = vec![Condition {
            type_: "Ready".into(),
            status: "False".into(),
            reason: "Stopped".into(),
            message: "stopped".into(),
            observed_generation: None,
            last_transition_time: Time(at("2026-12-01T12:00:00Z")),
        }];
        let r = Rules {
            delete_after_stopped: parse_duration("7d").ok(),
            ..Rules::default()
        };
        assert_eq!(verdict(&server, &r, at("2026-12-05T12:00:00Z")).act, Act::Nothing);
        assert!(matches!(
            verdict(&server, &r, at("2026-12-08T12:00:00Z")).act,
            Act::Delete(_)
        ));
    }

    #[test]
    fn a_stopped_server_is_archived_after_archive_after_stopped_once() {
        let mut server = running("2026-12-01T10:00:00Z");
        server.spec.running = false;
        let status = server.status.as_mut().unwrap();
        status.phase = Some(Phase::Stopped);
        status.conditions = vec![Condition {
            type_: CONDITION_READY.into(),
            status: "False".into(),
            reason: "Stopped".into(),
            message: "stopped".into(),
            observed_generation: None,
            last_transition_time: Time(at("2026-12-01T12:00:00Z")),
        }];
        let r = Rules {
            archive_after_stopped: parse_duration("1d").ok(),
            ..Rules::default()
        };
        assert!(!archive_due(&server, &r, at("2026-12-02T11:59:59Z")));
        assert!(archive_due(&server, &r, at("2026-12-02T12:00:00Z")));
        assert!(
            !archive_due(&server, &Rules::default(), at("2027-01-01T00:00:00Z")),
            "not archived without the rule"
        );
        server.status.as_mut().unwrap().archived_to = Some("x".into());
        assert!(
            !archive_due(&server, &r, at("2026-12-03T00:00:00Z")),
            "archived once"
        );
    }

    #[test]
    fn durations_read_as_profiles_write_them() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86400)));
        assert!(
            parse_duration("1.5h").is_err() && parse_duration("h").is_err() && parse_duration("5").is_err()
        );
        assert_eq!(human(Duration::from_secs(93600)), "1d 2h");
    }
}
