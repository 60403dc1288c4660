//! Whether one more SSH connection from a source address is served: the bastion's answer to
//! connection floods (the DHEat denial of service, CVE-2002-20001), decided before any key
//! exchange.
//!
//! Per source, at most [`Limits::startups`] connections that have not logged in yet (OpenSSH's
//! MaxStartups, per address), and new connections at [`Limits::rate`] a second with bursts of
//! [`Limits::burst`] (a token bucket). A connection that logs in no longer counts against its
//! source and gives its token back, so people who log in (the web front opens every browser
//! terminal from one address) are held back only by the first limit, for a moment.
//!
//! Refusals are logged once per source per burst: the first one says so
//! ([`Verdict::Refuse`]'s `first`), [`Throttle::sweep`] says when a source has been quiet for
//! [`QUIET`] and how many were refused. No I/O here: the accept loop in `mod.rs` asks, with the
//! time passed in.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// How long a source must go without a refusal for its burst of refusals to end.
pub const QUIET: Duration = Duration::from_secs(60);

/// The limits per source address; 0 turns one off.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limits {
    /// Connections a source may have open that have not logged in yet.
    pub startups: u32,
    /// New connections a second a source may open, over time.
    pub rate: f64,
    /// New connections a source may open at once before the rate applies (the bucket's size).
    pub burst: u32,
}

impl Limits {
    /// The bastion's defaults: 20 at once (the tests open 20 jumps from one address, the web
    /// front every browser terminal), and 2 a second after a burst of 20, which ssh-audit's
    /// DHEat test (3 sockets for 1.5 s, safe below 20 connections a second) finds limited.
    pub const DEFAULT: Limits = Limits {
        startups: 20,
        rate: 2.0,
        burst: 20,
    };
}

/// Why a connection is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// The source has [`Limits::startups`] connections open that have not logged in yet.
    Startups,
    /// The source opened connections faster than [`Limits::rate`], beyond the burst.
    Rate,
}

impl Refusal {
    /// The metric's label.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Startups => "startups",
            Refusal::Rate => "rate",
        }
    }

    /// What the person reading the log is told.
    pub fn describe(self) -> &'static str {
        match self {
            Refusal::Startups => "too many connections from this address have not logged in yet",
            Refusal::Rate => "this address opens connections faster than the rate allowed",
        }
    }
}

/// The answer for one new connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Serve it; tell the throttle when it logs in ([`Throttle::logged_in`]) or ends without
    /// ([`Throttle::ended`]).
    Admit,
    /// Close it at once. `first`: the first refusal of a burst from this source, the one to log.
    Refuse { why: Refusal, first: bool },
}

/// A burst of refusals from one source that is over: no refusal for [`QUIET`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Burst<K> {
    pub source: K,
    /// Connections refused in it.
    pub refused: u64,
    /// Its first and last refusal.
    pub first: Instant,
    pub last: Instant,
}

/// What the throttle keeps of one source.
#[derive(Clone, Debug)]
struct Source {
    /// Connections open that have not logged in yet.
    startups: u32,
    /// The bucket, as the generic cell rate algorithm keeps it: when it is full again. Each
    /// connection moves it one interval on; a connection may start while it is at most
    /// `burst - 1` intervals ahead of now.
    full_at: Instant,
    /// The ongoing burst of refusals: refused, first, last.
    refusing: Option<(u64, Instant, Instant)>,
}

/// The per-source state of the bastion's listener.
#[derive(Clone, Debug)]
pub struct Throttle<K> {
    limits: Limits,
    /// One token's worth of time (1 / rate); `None`: no rate limit.
    interval: Option<Duration>,
    sources: HashMap<K, Source>,
    /// Bursts found over while deciding, reported by the next [`Throttle::sweep`].
    over: Vec<Burst<K>>,
}

impl<K: Hash + Eq + Clone> Throttle<K> {
    /// A throttle with `limits`; a rate that is not a positive number turns the rate limit off.
    pub fn new(limits: Limits) -> Throttle<K> {
        let interval = (limits.rate.is_finite() && limits.rate > 0.0)
            .then(|| Duration::from_secs_f64(1.0 / limits.rate));
        Throttle {
            limits,
            interval,
            sources: HashMap::new(),
            over: Vec::new(),
        }
    }

    /// Whether a new connection from `source` is served at `now`. An admitted one counts as a
    /// startup of its source until [`Throttle::logged_in`] or [`Throttle::ended`].
    pub fn admit(&mut self, source: K, now: Instant) -> Verdict {
        let entry = self.sources.entry(source.clone()).or_insert(Source {
            startups: 0,
            full_at: now,
            refusing: None,
        });
        let why = if self.limits.startups > 0 && entry.startups >= self.limits.startups {
            Some(Refusal::Startups)
        } else {
            match self.interval {
                Some(interval) => {
                    let from = entry.full_at.max(now);
                    let ahead = from - now;
                    let burst = self.limits.burst.max(1);
                    if ahead > interval * (burst - 1) {
                        Some(Refusal::Rate)
                    } else {
                        entry.full_at = from + interval;
                        None
                    }
                }
                None => None,
            }
        };
        let Some(why) = why else {
            entry.startups += 1;
            return Verdict::Admit;
        };
        let first = match &mut entry.refusing {
            Some((refused, _, last)) if now.saturating_duration_since(*last) < QUIET => {
                *refused += 1;
                *last = now;
                false
            }
            stale => {
                if let Some((refused, first, last)) = stale.take() {
                    self.over.push(Burst {
                        source,
                        refused,
                        first,
                        last,
                    });
                }
                *stale = Some((1, now, now));
                true
            }
        };
        Verdict::Refuse { why, first }
    }

    /// A connection of `source` admitted earlier has logged in at `now`: it no longer counts,
    /// and its token goes back to the bucket.
    pub fn logged_in(&mut self, source: &K, now: Instant) {
        let interval = self.interval;
        if let Some(entry) = self.sources.get_mut(source) {
            entry.startups = entry.startups.saturating_sub(1);
            if let Some(interval) = interval {
                entry.full_at = entry
                    .full_at
                    .checked_sub(interval)
                    .map_or(now, |back| back.max(now));
            }
        }
    }

    /// A connection of `source` admitted earlier has ended without logging in.
    pub fn ended(&mut self, source: &K) {
        if let Some(entry) = self.sources.get_mut(source) {
            entry.startups = entry.startups.saturating_sub(1);
        }
    }

    /// The bursts of refusals that are over at `now` (to log), and forgets the sources that
    /// hold nothing: no startup, a full bucket, no ongoing burst. Call it every few seconds.
    pub fn sweep(&mut self, now: Instant) -> Vec<Burst<K>> {
        let mut over = std::mem::take(&mut self.over);
        self.sources.retain(|source, entry| {
            if let Some((refused, first, last)) = entry.refusing
                && now.saturating_duration_since(last) >= QUIET
            {
                over.push(Burst {
                    source: source.clone(),
                    refused,
                    first,
                    last,
                });
                entry.refusing = None;
            }
            entry.startups > 0 || entry.full_at > now || entry.refusing.is_some()
        });
        over
    }

    /// Sources whose connections are being refused now (a burst not over yet).
    pub fn refusing(&self) -> usize {
        self.sources.values().filter(|s| s.refusing.is_some()).count()
    }

    /// Sources the throttle keeps something of.
    pub fn sources(&self) -> usize {
        self.sources.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn limits(startups: u32, rate: f64, burst: u32) -> Limits {
        Limits {
            startups,
            rate,
            burst,
        }
    }

    fn refused(verdict: Verdict) -> Option<Refusal> {
        match verdict {
            Verdict::Admit => None,
            Verdict::Refuse { why, .. } => Some(why),
        }
    }

    #[test]
    fn a_burst_is_served_then_the_rate() {
        let t0 = Instant::now();
        let mut throttle = Throttle::new(limits(0, 2.0, 5));
        for _ in 0..5 {
            assert_eq!(throttle.admit("a", t0), Verdict::Admit);
            throttle.ended(&"a");
        }
        assert_eq!(
            throttle.admit("a", t0),
            Verdict::Refuse {
                why: Refusal::Rate,
                first: true
            }
        );
        // One token every half second.
        assert_eq!(refused(throttle.admit("a", t0 + 499 * MS)), Some(Refusal::Rate));
        assert_eq!(throttle.admit("a", t0 + 500 * MS), Verdict::Admit);
        assert_eq!(refused(throttle.admit("a", t0 + 501 * MS)), Some(Refusal::Rate));
        // After 2.5 s the bucket is full again: another burst of 5.
        let later = t0 + 3000 * MS;
        for _ in 0..5 {
            assert_eq!(throttle.admit("a", later), Verdict::Admit);
        }
        assert_eq!(refused(throttle.admit("a", later)), Some(Refusal::Rate));
    }

    #[test]
    fn connections_that_have_not_logged_in_are_limited_and_those_that_have_are_not() {
        let t0 = Instant::now();
        let mut throttle = Throttle::new(limits(3, 0.0, 0));
        for _ in 0..3 {
            assert_eq!(throttle.admit("a", t0), Verdict::Admit);
        }
        assert_eq!(
            throttle.admit("a", t0),
            Verdict::Refuse {
                why: Refusal::Startups,
                first: true
            }
        );
        throttle.logged_in(&"a", t0);
        throttle.ended(&"a");
        assert_eq!(throttle.admit("a", t0), Verdict::Admit);
        assert_eq!(throttle.admit("a", t0), Verdict::Admit);
        assert_eq!(refused(throttle.admit("a", t0)), Some(Refusal::Startups));
        // Hundreds logged in at once from one address (the web front) are fine.
        for _ in 0..300 {
            throttle.logged_in(&"a", t0);
            assert_eq!(throttle.admit("a", t0), Verdict::Admit);
        }
    }

    #[test]
    fn a_login_gives_its_token_back_and_an_end_without_login_does_not() {
        let t0 = Instant::now();
        let mut throttle = Throttle::new(limits(0, 1.0, 2));
        // A thousand logins in a second from one address: never refused.
        for n in 0..1000 {
            let now = t0 + n * MS;
            assert_eq!(throttle.admit("web", now), Verdict::Admit, "connection {n}");
            throttle.logged_in(&"web", now);
        }
        // Two that do not log in use the bucket up.
        for _ in 0..2 {
            assert_eq!(throttle.admit("web", t0 + 1000 * MS), Verdict::Admit);
            throttle.ended(&"web");
        }
        assert_eq!(
            refused(throttle.admit("web", t0 + 1000 * MS)),
            Some(Refusal::Rate)
        );
        // A token given back never makes the bucket larger than its size.
        let mut throttle = Throttle::new(limits(0, 1.0, 2));
        for _ in 0..5 {
            throttle.logged_in(&"web", t0);
        }
        assert_eq!(throttle.admit("web", t0), Verdict::Admit);
        assert_eq!(throttle.admit("web", t0), Verdict::Admit);
        assert_eq!(refused(throttle.admit("web", t0)), Some(Refusal::Rate));
    }

    #[test]
    fn one_flooding_source_leaves_the_others_alone() {
        let t0 = Instant::now();
        let mut throttle = Throttle::new(Limits::DEFAULT);
        for n in 0..10_000 {
            let _ = throttle.admit("mallory", t0 + n * MS / 10);
        }
        assert_eq!(throttle.admit("alice", t0 + 1000 * MS), Verdict::Admit);
        assert_eq!(throttle.refusing(), 1);
    }

    #[test]
    fn a_burst_of_refusals_is_logged_once_and_its_end_once() {
        let t0 = Instant::now();
        let mut throttle = Throttle::new(limits(1, 0.0, 0));
        assert_eq!(throttle.admit("a", t0), Verdict::Admit);
        let firsts = (0..1000)
            .filter(|&n| {
                matches!(
                    throttle.admit("a", t0 + n * MS),
                    Verdict::Refuse { first: true, .. }
                )
            })
            .count();
        assert_eq!(firsts, 1);
        let last = t0 + 999 * MS;
        assert!(
            throttle.sweep(last + QUIET - MS).is_empty(),
            "not quiet long enough"
        );
        assert_eq!(
            throttle.sweep(last + QUIET),
            vec![Burst {
                source: "a",
                refused: 1000,
                first: t0,
                last
            }]
        );
        assert!(throttle.sweep(last + QUIET * 2).is_empty(), "reported once");
        assert_eq!(throttle.refusing(), 0);
        // The next refusal starts a new burst, logged again.
        assert_eq!(
            throttle.admit("a", last + QUIET * 2),
            Verdict::Refuse {
                why: Refusal::Startups,
                first: true
            }
        );
        // A burst found over while deciding (no sweep in between) is reported too.
        let again = last + QUIET * 4;
        assert!(matches!(
            throttle.admit("a", again),
            Verdict::Refuse { first: true, .. }
        ));
        assert_eq!(throttle.sweep(again)[0].refused, 1);
    }

    #[test]
    fn the_sweep_forgets_sources_that_hold_nothing_and_keeps_the_others() {
        let t0 = Instant::now();
        let mut throttle = Throttle::new(limits(5, 1.0, 5));
        let _ = throttle.admit("open", t0);
        let _ = throttle.admit("gone", t0);
        throttle.ended(&"gone");
        throttle.sweep(t0);
        assert_eq!(throttle.sources(), 2, "gone's bucket is not full yet");
        throttle.sweep(t0 + 1000 * MS);
        assert_eq!(throttle.sources(), 1);
        throttle.sweep(t0 + QUIET * 10);
        assert_eq!(
            throttle.sources(),
            1,
            "open has a connection that has not logged in"
        );
        throttle.ended(&"open");
        throttle.sweep(t0 + QUIET * 10);
        assert_eq!(throttle.sources(), 0);
    }

    #[test]
    fn limits_of_zero_are_off() {
        let t0 = Instant::now();
        let mut throttle = Throttle::new(limits(0, 0.0, 0));
        for _ in 0..10_000 {
            assert_eq!(throttle.admit("a", t0), Verdict::Admit);
        }
        assert_eq!(Throttle::<&str>::new(limits(0, f64::NAN, 1)).interval, None);
    }

    /// ssh-audit's DHEat test keeps 3 sockets connecting, each closed as soon as the server's
    /// banner (or nothing) arrives, for 1.5 s or 38 banners, after its own few connections; it
    /// finds a server safe below 20 connections a second. The tests open 20 jumps at once.
    #[test]
    fn the_defaults_pass_ssh_audits_dheat_test_and_serve_twenty_jumps_at_once() {
        let t0 = Instant::now();
        let mut throttle = Throttle::new(Limits::DEFAULT);
        for _ in 0..3 {
            assert_eq!(throttle.admit("audit", t0), Verdict::Admit);
            throttle.ended(&"audit");
        }
        let (mut served, mut at) = (0, t0);
        while at < t0 + 1500 * MS && served < 38 {
            for _ in 0..3 {
                if throttle.admit("audit", at) == Verdict::Admit {
                    served += 1;
                    throttle.ended(&"audit");
                }
            }
            at += MS / 5;
        }
        let rate = f64::from(served) / (at - t0).as_secs_f64();
        assert!(rate < 20.0, "{served} banners in {:?}: {rate}/s", at - t0);

        let mut throttle = Throttle::new(Limits::DEFAULT);
        for _ in 0..20 {
            assert_eq!(throttle.admit("127.0.0.1", t0), Verdict::Admit);
        }
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    /// What happens next, after some milliseconds: a new connection from a source (0 to 2), the
    /// oldest connection of a source that has not logged in yet logs in or ends, or a sweep.
    #[derive(Clone, Copy, Debug)]
    enum Event {
        Connect(u8),
        LogIn(u8),
        End(u8),
        Sweep,
    }

    fn events() -> impl Strategy<Value = Vec<(u64, Event)>> {
        let event = prop_oneof![
            6 => (0u8..3).prop_map(Event::Connect),
            2 => (0u8..3).prop_map(Event::LogIn),
            2 => (0u8..3).prop_map(Event::End),
            1 => Just(Event::Sweep),
        ];
        let pause = prop_oneof![3 => 0u64..5, 1 => 0u64..2000, 1 => Just(61_000u64)];
        proptest::collection::vec((pause, event), 0..300)
    }

    fn limits() -> impl Strategy<Value = Limits> {
        (0u32..6, prop_oneof![Just(0.0), 0.5f64..50.0], 0u32..8).prop_map(|(startups, rate, burst)| Limits {
            startups,
            rate,
            burst,
        })
    }

    /// What one source saw of a run.
    #[derive(Clone, Debug, Default, PartialEq)]
    struct Seen {
        verdicts: Vec<(Instant, Verdict)>,
        admitted: Vec<Instant>,
        logins: Vec<Instant>,
        /// Connections open that have not logged in, at most.
        most_open: u32,
        /// Refusals counted in the bursts the sweeps reported.
        reported: u64,
    }

    /// Counts the refusals of the `bursts` a sweep at `now` reported.
    fn report(bursts: Vec<Burst<u8>>, now: Instant, seen: &mut [Seen; 3]) {
        for burst in bursts {
            assert!(now - burst.last >= QUIET, "a burst reported before it is over");
            assert!(burst.first <= burst.last && burst.refused >= 1);
            seen[usize::from(burst.source)].reported += burst.refused;
        }
    }

    /// Runs `events` from `t0` for the sources `only` lets through, with a last sweep once
    /// every burst is over; what each source saw.
    fn run(t0: Instant, limits: Limits, events: &[(u64, Event)], only: impl Fn(u8) -> bool) -> [Seen; 3] {
        let mut throttle = Throttle::new(limits);
        let mut now = t0;
        let mut seen: [Seen; 3] = Default::default();
        let mut open = [0u32; 3];
        for &(ms, event) in events {
            now += Duration::from_millis(ms);
            match event {
                Event::Connect(s) if only(s) => {
                    let i = usize::from(s);
                    let verdict = throttle.admit(s, now);
                    seen[i].verdicts.push((now, verdict));
                    if verdict == Verdict::Admit {
                        seen[i].admitted.push(now);
                        open[i] += 1;
                        seen[i].most_open = seen[i].most_open.max(open[i]);
                    }
                }
                Event::LogIn(s) | Event::End(s) if only(s) && open[usize::from(s)] > 0 => {
                    let i = usize::from(s);
                    open[i] -= 1;
                    if let Event::LogIn(_) = event {
                        throttle.logged_in(&s, now);
                        seen[i].logins.push(now);
                    } else {
                        throttle.ended(&s);
                    }
                }
                Event::Sweep => report(throttle.sweep(now), now, &mut seen),
                _ => {}
            }
        }
        now += QUIET;
        report(throttle.sweep(now), now, &mut seen);
        seen
    }

    proptest! {
        /// Whatever the sources do: none ever has more than its limit of connections open that
        /// have not logged in; in any stretch of time a source is admitted at most the burst,
        /// the rate over that time and the logins in it; a refusal is for a limit that is on;
        /// what one source gets does not depend on what the others do; and each burst of
        /// refusals is logged once (its first refusal, after `QUIET` without one) and every
        /// refusal counted in exactly one reported burst.
        #[test]
        fn each_source_keeps_to_its_limits_whatever_the_others_do(limits in limits(), events in events()) {
            let t0 = Instant::now();
            let all = run(t0, limits, &events, |_| true);
            for (s, seen) in all.iter().enumerate() {
                let alone = run(t0, limits, &events, |o| usize::from(o) == s);
                prop_assert_eq!(&seen.verdicts, &alone[s].verdicts, "source {} depends on the others", s);
                prop_assert!(limits.startups == 0 || seen.most_open <= limits.startups);

                let mut last_refusal: Option<Instant> = None;
                let mut refusals = 0;
                for &(at, verdict) in &seen.verdicts {
                    if let Verdict::Refuse { why, first } = verdict {
                        match why {
                            Refusal::Startups => prop_assert!(limits.startups > 0),
                            Refusal::Rate => prop_assert!(limits.rate > 0.0),
                        }
                        prop_assert_eq!(first, last_refusal.is_none_or(|last| at - last >= QUIET));
                        last_refusal = Some(at);
                        refusals += 1;
                    }
                }
                prop_assert_eq!(seen.reported, refusals);

                if limits.rate > 0.0 {
                    let interval = Duration::from_secs_f64(1.0 / limits.rate).as_nanos();
                    for (i, &from) in seen.admitted.iter().enumerate() {
                        for (j, &to) in seen.admitted.iter().enumerate().skip(i) {
                            let admitted = (j - i + 1) as u128;
                            let given_back =
                                seen.logins.iter().filter(|&&t| t >= from && t <= to).count() as u128;
                            let tokens = u128::from(limits.burst.max(1)) + (to - from).as_nanos() / interval;
                            prop_assert!(
                                admitted <= tokens + given_back,
                                "source {}: {} admitted in {:?}: {} tokens, {} given back",
                                s, admitted, to - from, tokens, given_back
                            );
                        }
                    }
                }
            }
        }
    }
}
