//! SSH activity for the lifecycle: while someone has a jump open to a server, the bastion keeps
//! that server's `status.activity` entry `ssh` fresh, so an idle stop does not end a session
//! that is open but quiet.
//!
//! [`Tracker`] decides (pure, driven by the clock it is given): an entry is applied when a first
//! jump opens, refreshed every [`REFRESH`] while any is open, and applied once more when the
//! last one closes (with the time it closed), but never sooner than [`MIN_GAP`] after the last
//! apply for that server, whatever the traffic or the number of sessions. [`Reporter`] does:
//! server-side apply of the one entry on the status subresource, under the bastion's own field
//! manager, so the agent's `cpu` and the web front's `web` entries are never touched.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use tokio::sync::Notify;
use tracing::{debug, warn};

use super::metrics::Metrics;
use crate::api::{Activity, ComputeServer};

/// The field manager of the bastion's status entries.
pub const FIELD_MANAGER: &str = "compute-server-bastion";
/// The source the bastion's entry is keyed by.
pub const SOURCE: &str = "ssh";
/// How often an open session is reported again: well within a minute.
pub const REFRESH: Duration = Duration::from_secs(45);
/// The least time between two applies for one server.
pub const MIN_GAP: Duration = Duration::from_secs(30);
/// How many applies run at once.
const CONCURRENCY: usize = 16;

/// A server: its namespace and name.
pub type Key = (String, String);

/// One apply to make: the server's entry with this time and number of open sessions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub server: Key,
    /// When a session was last seen open: now while one is, the time the last one closed after.
    pub last_seen: Timestamp,
    pub open: usize,
}

impl Report {
    /// The entry as it goes into status.activity.
    pub fn activity(&self) -> Activity {
        Activity {
            source: SOURCE.into(),
            last_seen: Time(self.last_seen),
            detail: Some(detail(self.open)),
        }
    }
}

/// "1 SSH session", "3 SSH sessions", "0 SSH sessions" (after the last one closed).
pub fn detail(open: usize) -> String {
    match open {
        1 => "1 SSH session".into(),
        n => format!("{n} SSH sessions"),
    }
}

#[derive(Debug)]
struct Entry {
    open: usize,
    /// Whether a jump opened since the last report (it may have closed again meanwhile).
    opened: bool,
    /// When the last session closed (while none is open).
    closed: Timestamp,
    /// The last apply tried: when, and the number of sessions it reported (None: it failed).
    applied: Option<(Instant, Option<usize>)>,
}

/// The open jumps of every server, and what has been reported of them.
#[derive(Debug, Default)]
pub struct Tracker {
    servers: HashMap<Key, Entry>,
}

impl Tracker {
    /// A jump to `server` opened.
    pub fn opened(&mut self, server: &Key) {
        let entry = self.servers.entry(server.clone()).or_insert(Entry {
            open: 0,
            opened: false,
            closed: Timestamp::UNIX_EPOCH,
            applied: None,
        });
        entry.open += 1;
        entry.opened = true;
    }

    /// A jump to `server` closed at `at`.
    pub fn closed(&mut self, server: &Key, at: Timestamp) {
        if let Some(entry) = self.servers.get_mut(server) {
            entry.open = entry.open.saturating_sub(1);
            if entry.open == 0 {
                entry.closed = at;
            }
        }
    }

    /// When `entry` is due next (`now` at the earliest), if ever.
    fn due_at(entry: &Entry, now: Instant) -> Option<Instant> {
        match entry.applied {
            None => Some(now),
            Some((at, reported)) if entry.opened || reported != Some(entry.open) => Some(at + MIN_GAP),
            Some((at, _)) if entry.open > 0 => Some(at + REFRESH),
            Some(_) => None,
        }
    }

    /// The reports due at `now` (wall clock `wall`), recorded as tried; entries of servers
    /// with no session left whose last report went through are forgotten once `MIN_GAP` has
    /// passed (so a jump opened again soon still waits its turn).
    pub fn due(&mut self, now: Instant, wall: Timestamp) -> Vec<Report> {
        self.servers.retain(|_, entry| match entry.applied {
            Some((at, Some(0))) => entry.open > 0 || entry.opened || now.duration_since(at) < MIN_GAP,
            _ => true,
        });
        let mut reports = Vec::new();
        for (server, entry) in &mut self.servers {
            if Tracker::due_at(entry, now).is_some_and(|at| at <= now) {
                reports.push(Report {
                    server: server.clone(),
                    last_seen: if entry.open > 0 { wall } else { entry.closed },
                    open: entry.open,
                });
                entry.applied = Some((now, Some(entry.open)));
                entry.opened = false;
            }
        }
        reports.sort_by(|a, b| a.server.cmp(&b.server));
        reports
    }

    /// A report could not be applied: it is tried again after `MIN_GAP`.
    pub fn failed(&mut self, report: &Report) {
        if let Some(entry) = self.servers.get_mut(&report.server)
            && let Some((_, reported)) = &mut entry.applied
        {
            *reported = None;
        }
    }

    /// When the next report is due (`now` at the earliest), if any is.
    pub fn next(&self, now: Instant) -> Option<Instant> {
        self.servers
            .values()
            .filter_map(|e| Tracker::due_at(e, now))
            .min()
    }
}

/// The tracker shared by the connections, and the reporter that applies what it says.
pub struct Reporter {
    tracker: Mutex<Tracker>,
    wake: Notify,
    client: Client,
    metrics: Metrics,
}

/// Holds one jump open in the tracker; closing it (dropping) records the close.
pub struct OpenJump {
    reporter: Arc<Reporter>,
    server: Key,
}

impl Drop for OpenJump {
    fn drop(&mut self) {
        self.reporter.lock().closed(&self.server, Timestamp::now());
        self.reporter.wake.notify_one();
    }
}

impl Reporter {
    pub fn new(client: Client, metrics: Metrics) -> Arc<Reporter> {
        Arc::new(Reporter {
            tracker: Mutex::default(),
            wake: Notify::new(),
            client,
            metrics,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tracker> {
        // A panic while holding the lock leaves a usable tracker: take it anyway.
        self.tracker
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records a jump to `namespace/name` as open until the returned guard is dropped.
    pub fn open(self: &Arc<Reporter>, namespace: &str, name: &str) -> OpenJump {
        let server = (namespace.to_string(), name.to_string());
        self.lock().opened(&server);
        self.wake.notify_one();
        OpenJump {
            reporter: self.clone(),
            server,
        }
    }

    /// Applies the reports as they fall due, until the process ends.
    pub async fn run(self: Arc<Reporter>) {
        loop {
            let next = self.lock().next(Instant::now());
            let wait = next.map(|at| at.saturating_duration_since(Instant::now()));
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(wait.unwrap_or(Duration::from_secs(3600))) => {}
            }
            let reports = self.lock().due(Instant::now(), Timestamp::now());
            futures::stream::iter(reports)
                .for_each_concurrent(CONCURRENCY, |report| self.apply(report))
                .await;
        }
    }

    async fn apply(&self, report: Report) {
        let (namespace, name) = &report.server;
        let api: Api<ComputeServer> = Api::namespaced(self.client.clone(), namespace);
        let patch = report.activity().apply_patch(name);
        let params = PatchParams::apply(FIELD_MANAGER).force();
        match api.patch_status(name, &params, &Patch::Apply(&patch)).await {
            Ok(_) => {
                self.metrics.activity_report("applied");
                debug!(server = %format!("{namespace}/{name}"), open = report.open, "SSH activity applied");
            }
            // Deleted meanwhile: nothing to report to.
            Err(kube::Error::Api(status)) if status.code == 404 => self.metrics.activity_report("gone"),
            Err(error) => {
                self.metrics.activity_report("failed");
                warn!(server = %format!("{namespace}/{name}"), %error, "could not report SSH activity; trying again soon");
                self.lock().failed(&report);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Key {
        ("compute".into(), "dev".into())
    }

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn seconds(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn an_open_jump_is_reported_at_once_then_refreshed_within_a_minute() {
        let (mut tracker, t0) = (Tracker::default(), Instant::now());
        tracker.opened(&key());
        let first = tracker.due(t0, at("2026-12-01T14:00:00Z"));
        assert_eq!(
            first,
            [Report {
                server: key(),
                last_seen: at("2026-12-01T14:00:00Z"),
                open: 1
            }]
        );
        assert_eq!(tracker.next(t0), Some(t0 + REFRESH));
        assert!(REFRESH < seconds(60));
        assert_eq!(tracker.due(t0 + seconds(44), at("2026-12-01T14:00:44Z")), []);
        let refreshed = tracker.due(t0 + REFRESH, at("2026-12-01T14:00:45Z"));
        assert_eq!(refreshed[0].last_seen, at("2026-12-01T14:00:45Z"));
    }

    #[test]
    fn hundreds_of_sessions_opening_and_closing_make_one_apply_per_30_seconds() {
        let (mut tracker, t0) = (Tracker::default(), Instant::now());
        let wall = at("2026-12-01T14:00:00Z");
        let mut applies = 0;
        for second in 0..120u64 {
            for _ in 0..5 {
                tracker.opened(&key());
            }
            for _ in 0..(if second % 2 == 0 { 3 } else { 7 }) {
                tracker.closed(&key(), wall);
            }
            tracker.opened(&key());
            applies += tracker.due(t0 + seconds(second), wall).len();
        }
        assert_eq!(applies, 4, "at 0, 30, 60 and 90 s");
    }

    #[test]
    fn the_last_close_is_reported_once_with_its_time_then_forgotten() {
        let (mut tracker, t0) = (Tracker::default(), Instant::now());
        tracker.opened(&key());
        tracker.opened(&key());
        assert_eq!(tracker.due(t0, at("2026-12-01T14:00:00Z"))[0].open, 2);
        tracker.closed(&key(), at("2026-12-01T14:00:05Z"));
        tracker.closed(&key(), at("2026-12-01T14:00:10Z"));
        assert_eq!(tracker.next(t0), Some(t0 + MIN_GAP), "not before the gap");
        assert_eq!(tracker.due(t0 + seconds(10), at("2026-12-01T14:00:10Z")), []);
        let last = tracker.due(t0 + MIN_GAP, at("2026-12-01T14:00:30Z"));
        assert_eq!(
            last,
            [Report {
                server: key(),
                last_seen: at("2026-12-01T14:00:10Z"),
                open: 0
            }]
        );
        assert_eq!(last[0].activity().detail.as_deref(), Some("0 SSH sessions"));
        assert_eq!(tracker.next(t0 + MIN_GAP), None, "nothing more to say");
        // A jump opened again soon waits for the gap, and is reported even if it closed
        // meanwhile; much later a jump is reported at once.
        tracker.opened(&key());
        assert_eq!(tracker.due(t0 + seconds(40), at("2026-12-01T14:00:40Z")), []);
        tracker.closed(&key(), at("2026-12-01T14:00:41Z"));
        let again = tracker.due(t0 + seconds(60), at("2026-12-01T14:01:00Z"));
        assert_eq!(
            (again[0].last_seen, again[0].open),
            (at("2026-12-01T14:00:41Z"), 0)
        );
        assert!(
            tracker
                .due(t0 + seconds(95), at("2026-12-01T14:01:35Z"))
                .is_empty()
        );
        assert!(tracker.servers.is_empty(), "forgotten");
        tracker.opened(&key());
        assert_eq!(tracker.due(t0 + seconds(96), at("2026-12-01T14:01:36Z")).len(), 1);
    }

    #[test]
    fn a_failed_apply_is_tried_again_after_the_gap() {
        let (mut tracker, t0) = (Tracker::default(), Instant::now());
        tracker.opened(&key());
        let report = tracker.due(t0, at("2026-12-01T14:00:00Z")).remove(0);
        tracker.failed(&report);
        assert_eq!(tracker.next(t0), Some(t0 + MIN_GAP));
        assert_eq!(tracker.due(t0 + MIN_GAP, at("2026-12-01T14:00:30Z")).len(), 1);
    }

    #[test]
    fn each_server_has_its_own_turn() {
        let (mut tracker, t0) = (Tracker::default(), Instant::now());
        let other: Key = ("compute".into(), "other".into());
        tracker.opened(&key());
        assert_eq!(tracker.due(t0, at("2026-12-01T14:00:00Z")).len(), 1);
        tracker.opened(&other);
        let reports = tracker.due(t0 + seconds(1), at("2026-12-01T14:00:01Z"));
        assert_eq!(reports.iter().map(|r| &r.server).collect::<Vec<_>>(), [&other]);
    }
}
