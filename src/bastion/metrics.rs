//! The bastion's Prometheus metrics, prefixed `compute_server_bastion_`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// An outcome label: `accepted`, `refused` or `failed`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    /// `accepted`, `refused` or `failed`.
    pub outcome: &'static str,
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
        metrics
    }

    /// Counts one authentication with `outcome`.
    pub fn auth(&self, outcome: &'static str) {
        self.auths.get_or_create(&Outcome { outcome }).inc();
    }

    /// Counts one jump with `outcome`.
    pub fn jump(&self, outcome: &'static str) {
        self.jumps.get_or_create(&Outcome { outcome }).inc();
    }
}
