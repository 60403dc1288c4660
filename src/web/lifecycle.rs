//! The web front's part of the lifecycle: when a server stops by itself, as its owner sees it
//! (the page's warning and its "Keep running", the API's `stopsAt`), `extend` (what Keep running
//! does) and the `web` activity entry a start or an extend leaves.
//!
//! Every decision is `api::lifecycle`'s; this module only reads it for people and writes what
//! they ask.

use std::borrow::Cow;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Api;
use kube::api::{Patch, PatchParams};
use tracing::{info, warn};

use super::cache::Cache;
use super::oidc::User;
use super::servers::{self, FieldError, Problem};
use crate::api::lifecycle::{self, Rules};
use crate::api::{Activity, ComputeServer, parse_duration};

/// The field manager of the web front's status entries.
pub const FIELD_MANAGER: &str = "compute-server-web";
/// The source the web front's activity entry is keyed by.
pub const SOURCE: &str = "web";

/// The lifecycle of `server`'s profile (none without one, or when it is missing).
pub fn rules(cache: &Cache, server: &ComputeServer) -> Rules {
    Rules::of(cache.profile_of(server).as_deref())
}

/// The server with its stop as its owner should see it: the lifecycle controller's word
/// (status.stopsAt and stopReason), unless a Keep running (spec.keepRunningUntil later than that
/// stop) has not reached the status yet: then the stop the controller will write, by the same
/// rules. Never a stop the status does not announce.
pub fn shown<'a>(server: &'a ComputeServer, rules: &Rules, now: Timestamp) -> Cow<'a, ComputeServer> {
    let Some(stops_at) = server.status.as_ref().and_then(|s| s.stops_at.as_ref()) else {
        return Cow::Borrowed(server);
    };
    let kept = server.spec.keep_running_until.as_ref();
    if kept.is_none_or(|keep| keep.0 <= stops_at.0) {
        return Cow::Borrowed(server);
    }
    let verdict = lifecycle::verdict(server, rules, now);
    let (Some(at), Some(reason)) = (verdict.stops_at, verdict.reason) else {
        return Cow::Borrowed(server);
    };
    let mut server = server.clone();
    if let Some(status) = server.status.as_mut() {
        status.stops_at = Some(Time(at));
        status.stop_reason = Some(reason);
    }
    Cow::Owned(server)
}

/// A coming stop, for the page and the API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stop {
    pub at: Timestamp,
    pub reason: String,
    /// "stops at 14:32 UTC unless kept running: …", while the stop is near.
    pub warning: Option<String>,
}

impl Stop {
    /// The quiet line for a stop that is not near: "Stops by itself at 18:00 UTC: …".
    pub fn line(&self, now: Timestamp) -> String {
        format!(
            "Stops by itself at {}: {}",
            lifecycle::clock(self.at, now),
            self.reason
        )
    }
}

/// When `server` stops by itself, if it runs and its status says it will ([`shown`]).
pub fn stop(server: &ComputeServer, rules: &Rules, now: Timestamp) -> Option<Stop> {
    if !servers::runs(server) {
        return None;
    }
    let server = shown(server, rules, now);
    let status = server.status.as_ref()?;
    Some(Stop {
        at: status.stops_at.as_ref()?.0,
        reason: status
            .stop_reason
            .clone()
            .unwrap_or_else(|| "its profile says so".into()),
        warning: lifecycle::warning(&server, rules, now),
    })
}

/// When the warning of `server`'s coming stop begins, if that is still ahead (the live page
/// shows it then).
pub fn warning_starts(server: &ComputeServer, rules: &Rules, now: Timestamp) -> Option<Timestamp> {
    lifecycle::warning_starts(&shown(server, rules, now), rules, now)
}

/// The `for` of an extend ("4h", "90m", "1h30m"), or the field error that says how to write it.
pub fn keep_for(text: Option<&str>) -> Result<Duration, Problem> {
    let invalid = |message: String| {
        Problem::Invalid(vec![FieldError {
            field: "for",
            message,
        }])
    };
    let text = text.map(str::trim).filter(|t| !t.is_empty()).ok_or_else(|| {
        invalid("say how long to keep the server running, such as \"4h\", \"90m\" or \"1h30m\"".into())
    })?;
    match parse_duration(text) {
        Ok(duration) if duration.is_zero() => Err(invalid("must be longer than 0s, such as \"4h\"".into())),
        Ok(duration) => Ok(duration),
        Err(message) => Err(invalid(message.0)),
    }
}

/// "Keep running for `asked`": sets `spec.keepRunningUntil` of a running server `user` may see
/// to what its profile allows ([`lifecycle::keep_until`]), and records the web activity.
pub async fn extend(
    api: &Api<ComputeServer>,
    cache: &Cache,
    user: &User,
    name: &str,
    asked: Duration,
) -> Result<ComputeServer, Problem> {
    let server = servers::reach(cache, user, name, crate::api::access::Action::Use)?;
    if !servers::runs(&server) {
        return Err(Problem::Conflict(format!(
            "{name} is not running: start it instead (a start counts as use too)"
        )));
    }
    let rules = rules(cache, &server);
    let now = Timestamp::now();
    let until = lifecycle::keep_until(&server, &rules, asked, now).map_err(|reason| {
        let profile = server.spec.profile.as_deref().unwrap_or("none");
        Problem::Conflict(format!(
            "{name} cannot be kept running: {reason} (profile {profile} sets no lifecycle.maxExtension)"
        ))
    })?;
    // Whole seconds, as the API server keeps times.
    let until = Timestamp::from_second(until.as_second()).unwrap_or(until);
    let patch = serde_json::json!([
        {"op": "test", "path": "/spec/owner", "value": server.spec.owner},
        {"op": "add", "path": "/spec/keepRunningUntil", "value": Time(until)},
    ]);
    let patch: json_patch::Patch = serde_json::from_value(patch).expect("a valid JSON patch");
    let changed = api
        .patch(name, &PatchParams::default(), &Patch::Json::<()>(patch))
        .await
        .map_err(|e| servers::change_failed(name, e))?;
    info!(user = %user.name, server = %name, until = %until, "kept running");
    touch(
        api,
        name,
        format!("kept running for {} by {}", lifecycle::human(asked), user.name),
    )
    .await;
    // The page shown next reads the cache: let the watch bring the change first.
    let kept = |s: &ComputeServer| s.spec.keep_running_until == changed.spec.keep_running_until;
    if !cache.wait_until(name, kept, Duration::from_secs(5)).await {
        warn!(server = %name, "the watch has not shown the kept server after 5 s");
    }
    Ok(changed)
}

/// Applies the web front's activity entry of server `name` (a start, an extend): its own
/// entry only, under its own field manager. A failure is logged: what the user asked for is
/// done already.
pub async fn touch(api: &Api<ComputeServer>, name: &str, detail: String) {
    let activity = Activity {
        source: SOURCE.into(),
        last_seen: Time(Timestamp::now()),
        detail: Some(detail),
    };
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let patch = Patch::Apply(activity.apply_patch(name));
    if let Err(error) = api.patch_status(name, &params, &patch).await {
        warn!(server = %name, %error, "could not record the web activity");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ComputeServerStatus, Phase};

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn server(stops_at: &str, keep: Option<&str>) -> ComputeServer {
        let mut server: ComputeServer = serde_yaml::from_str(
            "{apiVersion: computeserver.io/v1alpha1, kind: ComputeServer, metadata: {name: a}, spec: {owner: alice, profile: p}}",
        )
        .unwrap();
        server.spec.keep_running_until = keep.map(|k| Time(at(k)));
        server.status = Some(ComputeServerStatus {
            phase: Some(Phase::Running),
            started_at: Some(Time(at("2026-12-01T14:00:00Z"))),
            stops_at: Some(Time(at(stops_at))),
            stop_reason: Some("idle: no SSH session and under 5% CPU since 14:00 UTC".into()),
            ..Default::default()
        });
        server
    }

    fn rules() -> Rules {
        Rules {
            idle_stop_after: Some(Duration::from_secs(30 * 60)),
            max_extension: Some(Duration::from_secs(4 * 3600)),
            ..Rules::default()
        }
    }

    #[test]
    fn the_status_says_when_a_server_stops_and_warns_when_it_is_near() {
        let server = server("2026-12-01T14:30:00Z", None);
        let far = stop(&server, &rules(), at("2026-12-01T14:10:00Z")).unwrap();
        assert_eq!(far.warning, None);
        assert_eq!(
            far.line(at("2026-12-01T14:10:00Z")),
            "Stops by itself at 14:30 UTC: idle: no SSH session and under 5% CPU since 14:00 UTC"
        );
        let near = stop(&server, &rules(), at("2026-12-01T14:28:00Z")).unwrap();
        assert_eq!(
            near.warning.as_deref(),
            Some(
                "stops at 14:30 UTC unless kept running: idle: no SSH session and under 5% CPU since 14:00 UTC"
            )
        );
        assert_eq!(
            warning_starts(&server, &rules(), at("2026-12-01T14:10:00Z")),
            Some(at("2026-12-01T14:27:00Z"))
        );
    }

    #[test]
    fn a_keep_running_the_status_does_not_show_yet_is_shown_as_the_controller_will_write_it() {
        let now = at("2026-12-01T14:28:00Z");
        let kept = server("2026-12-01T14:30:00Z", Some("2026-12-01T18:28:00Z"));
        let shown = stop(&kept, &rules(), now).unwrap();
        assert_eq!(
            (shown.at, shown.reason.as_str(), shown.warning),
            (at("2026-12-01T18:28:00Z"), "kept running until 18:28 UTC", None)
        );
        // Once the status has it, the status is what shows.
        let mut caught_up = kept.clone();
        caught_up.status.as_mut().unwrap().stops_at = Some(Time(at("2026-12-01T18:28:00Z")));
        caught_up.status.as_mut().unwrap().stop_reason = Some("kept running (the controller's words)".into());
        assert_eq!(
            stop(&caught_up, &rules(), now).unwrap().reason,
            "kept running (the controller's words)"
        );
        // An older keepRunningUntil changes nothing.
        let old = server("2026-12-01T14:30:00Z", Some("2026-12-01T14:05:00Z"));
        assert_eq!(stop(&old, &rules(), now).unwrap().at, at("2026-12-01T14:30:00Z"));
    }

    #[test]
    fn no_stop_shows_for_a_stopped_server_or_without_the_status_saying_so() {
        let mut stopped = server("2026-12-01T14:30:00Z", None);
        stopped.spec.running = false;
        assert_eq!(stop(&stopped, &rules(), at("2026-12-01T14:28:00Z")), None);
        let mut unknown = server("2026-12-01T14:30:00Z", Some("2026-12-01T18:00:00Z"));
        unknown.status.as_mut().unwrap().stops_at = None;
        assert_eq!(stop(&unknown, &rules(), at("2026-12-01T14:28:00Z")), None);
    }

    #[test]
    fn how_long_to_keep_running_is_a_duration_or_a_field_error_naming_for() {
        assert_eq!(keep_for(Some("4h")).unwrap(), Duration::from_secs(4 * 3600));
        assert_eq!(keep_for(Some(" 1h30m ")).unwrap(), Duration::from_secs(5400));
        for bad in [None, Some(""), Some("soon"), Some("0s"), Some("4 hours")] {
            let Err(Problem::Invalid(errors)) = keep_for(bad) else {
                panic!("{bad:?} refused")
            };
            assert_eq!(errors[0].field, "for", "{bad:?}");
        }
    }
}
