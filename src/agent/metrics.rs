//! The agent's Prometheus metrics, prefixed `compute_server_agent_`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabel {
    pub phase: String,
}

/// What the agent counts.
pub struct Metrics {
    /// Reconcile passes run.
    pub reconciles: Counter,
    /// Reconcile passes that ended in an error (retried).
    pub failures: Counter,
    /// Seconds each reconcile pass took.
    pub duration: Histogram,
    /// Servers on this node by phase, as of the last heartbeat.
    pub servers: Family<PhaseLabel, Gauge>,
    /// Data volumes kept whose server is gone, as of the last heartbeat.
    pub orphaned_volumes: Gauge,
    /// 1 while the sweep holds back because the API server shows none of this node's servers.
    pub sweep_held: Gauge,
}

impl Metrics {
    pub fn register(registry: &mut Registry) -> Metrics {
        let metrics = Metrics {
            reconciles: Counter::default(),
            failures: Counter::default(),
            duration: Histogram::new(exponential_buckets(0.005, 2.0, 12)),
            servers: Family::default(),
            orphaned_volumes: Gauge::default(),
            sweep_held: Gauge::default(),
        };
        registry.register("reconciles", "Reconcile passes run", metrics.reconciles.clone());
        registry.register(
            "reconcile_failures",
            "Reconcile passes that failed and will be retried",
            metrics.failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time one reconcile pass took",
            metrics.duration.clone(),
        );
        registry.register(
            "servers",
            "ComputeServers on this node by phase",
            metrics.servers.clone(),
        );
        registry.register(
            "orphaned_volumes",
            "Data volumes kept on this node whose ComputeServer is gone (compute-server agent prune removes them)",
            metrics.orphaned_volumes.clone(),
        );
        registry.register(
            "sweep_held",
            "1 while nothing is removed because the API server shows none of this node's servers",
            metrics.sweep_held.clone(),
        );
        metrics
    }
}
