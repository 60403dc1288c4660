//! The bastion's Prometheus metrics, prefixed `compute_server_bastion_`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// An outcome label: `accepted`, `refused` or `failed` (and `applied`, `gone` for activity).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    /// `accepted`, `refused` or `failed` (and `applied`, `gone` for activity).
    pub outcome: &'static str,
}

/// Why the throttle refused a connection: `startups` or `rate`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reason {
    /// `startups` (too many not logged in yet from the address) or `rate` (too many new ones).
    pub reason: &'static str,
}

/// What the bastion counts.
#[derive(Clone, Default)]
pub struct Metrics {
    /// TCP connections accepted.
    pub connections: Counter,
    /// Connections open now.
    pub open_connections: Gauge,
    /// Public-key authentications by outcome.
    pub auths: Family<Outcome, Counter>,
    /// Jumps (direct-tcpip requests) by outcome.
    pub jumps: Family<Outcome, Counter>,
    /// Jumps piping bytes now.
    pub open_jumps: Gauge,
    /// Applies of servers' `ssh` activity entries by outcome.
    pub activity_reports: Family<Outcome, Counter>,
    /// Connections the throttle closed at once, by reason.
    pub throttled: Family<Reason, Counter>,
    /// Source addresses whose connections are being refused now.
    pub throttled_sources: Gauge,
}

impl Metrics {
    /// Makes the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Metrics {
        let metrics = Metrics::default();
        registry.register(
            "connections",
            "SSH connections accepted",
            metrics.connections.clone(),
        );
        registry.register(
            "open_connections",
            "SSH connections open now",
            metrics.open_connections.clone(),
        );
        registry.register(
            "auths",
            "Public-key authentications by outcome (accepted, refused)",
            metrics.auths.clone(),
        );
        registry.register(
            "jumps",
            "Jumps to servers by outcome (accepted, refused, failed: the server did not answer)",
            metrics.jumps.clone(),
        );
        registry.register("open_jumps", "Jumps open now", metrics.open_jumps.clone());
        registry.register(
            "activity_reports",
            "Applies of servers' ssh activity entries (status.activity) by outcome (applied, gone: the server was deleted, failed)",
            metrics.activity_reports.clone(),
        );
        registry.register(
            "throttled_connections",
            "Connections closed at once, before any key exchange, because their source address had too many not logged in yet (reason startups) or opened them too fast (reason rate)",
            metrics.throttled.clone(),
        );
        registry.register(
            "throttled_sources",
            "Source addresses whose connections are being refused now (refused within the last minute)",
            metrics.throttled_sources.clone(),
        );
        metrics
    }

    /// Counts one connection the throttle refused, for `reason`.
    pub fn throttled(&self, reason: &'static str) {
        self.throttled.get_or_create(&Reason { reason }).inc();
    }

    /// Counts one authentication with `outcome`.
    pub fn auth(&self, outcome: &'static str) {
        self.auths.get_or_create(&Outcome { outcome }).inc();
    }

    /// Counts one apply of a server's activity entry with `outcome`.
    pub fn activity_report(&self, outcome: &'static str) {
        self.activity_reports.get_or_create(&Outcome { outcome }).inc();
    }

    /// Counts one jump with `outcome`.
    pub fn jump(&self, outcome: &'static str) {
        self.jumps.get_or_create(&Outcome { outcome }).inc();
    }
}
