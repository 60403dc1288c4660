//! The agent's sign of use for the lifecycle: CPU above the profile's threshold, measured from
//! Docker's statistics between two heartbeats, reported as the server's `status.activity` entry
//! `cpu` (server-side apply under the agent's own field manager, so the bastion's and the web
//! front's entries stay theirs).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bollard::query_parameters::StatsOptions;
use futures::StreamExt;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use tracing::warn;

use super::Context;
use crate::api::lifecycle::Rules;
use crate::api::{ComputeServer, Phase, Profiles, size};

const FIELD_MANAGER: &str = "compute-server-agent-activity";
/// A busy server's entry is written at most this often (or four times per idle time, if shorter).
const REFRESH: std::time::Duration = std::time::Duration::from_secs(30);

/// The last CPU sample of each container: its total CPU time (ns) and when it was read.
#[derive(Default)]
pub struct Samples(Mutex<HashMap<String, (u64, Instant)>>);

/// The share of `nano_cpus` used between two samples, in percent.
pub fn percent(before: (u64, Instant), after: (u64, Instant), nano_cpus: i64) -> f64 {
    let used = after.0.saturating_sub(before.0) as f64;
    let elapsed = after.1.duration_since(before.1).as_nanos() as f64;
    if elapsed <= 0.0 || nano_cpus <= 0 {
        return 0.0;
    }
    used / elapsed / (nano_cpus as f64 / 1e9) * 100.0
}

/// Measures the CPU of this node's running servers whose profile stops idle servers, and
/// reports the busy ones. Errors are logged: a missed sample only delays an idle stop's count.
pub async fn report(ctx: &Context, servers: &[Arc<ComputeServer>], profiles: &Profiles) {
    for server in servers {
        let profile = profiles.of(server);
        let rules = Rules::of(profile);
        let status = server.status.clone().unwrap_or_default();
        let (Some(idle), Some(Phase::Running), Some(id)) =
            (rules.idle_stop_after, status.phase, status.container_id)
        else {
            continue;
        };
        let Ok(request) = size::request(server, profile) else {
            continue;
        };
        let options = StatsOptions {
            stream: false,
            one_shot: true,
        };
        let Some(Ok(stats)) = ctx.docker.stats(&id, Some(options)).next().await else {
            continue;
        };
        let Some(total) = stats
            .cpu_stats
            .and_then(|c| c.cpu_usage)
            .and_then(|u| u.total_usage)
        else {
            continue;
        };
        let sample = (total, Instant::now());
        let before = ctx
            .samples
            .0
            .lock()
            .expect("samples lock")
            .insert(id.clone(), sample);
        let Some(before) = before else { continue };
        let busy = percent(before, sample, request.nano_cpus);
        if busy < f64::from(rules.idle_cpu_percent) {
            continue;
        }
        let refresh = REFRESH.min(idle / 4).as_secs() as i64;
        let fresh = status
            .activity
            .iter()
            .find(|a| a.source == "cpu")
            .is_some_and(|a| Timestamp::now().duration_since(a.last_seen.0).as_secs() < refresh);
        if fresh {
            continue;
        }
        if let Err(error) = apply(ctx, server, busy).await {
            warn!(%error, server = %server.name_any(), "could not report the server's CPU activity");
        }
    }
}

async fn apply(ctx: &Context, server: &ComputeServer, busy: f64) -> kube::Result<()> {
    let api: Api<ComputeServer> =
        Api::namespaced(ctx.client.clone(), &server.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "apiVersion": "computeserver.io/v1alpha1",
        "kind": "ComputeServer",
        "metadata": { "name": server.name_any(), "namespace": server.namespace() },
        "status": { "activity": [{
            "source": "cpu",
            "lastSeen": k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::now()),
            "detail": format!("{busy:.0}% CPU"),
        }]},
    });
    api.patch_status(
        &server.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(patch),
    )
    .await
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_is_a_share_of_the_servers_own_limit() {
        let t0 = Instant::now();
        let t1 = t0 + std::time::Duration::from_secs(10);
        // 5 s of CPU in 10 s: half a core, which is all of a 500m server and a quarter of 2 CPUs.
        assert_eq!(percent((0, t0), (5_000_000_000, t1), 500_000_000).round(), 100.0);
        assert_eq!(percent((0, t0), (5_000_000_000, t1), 2_000_000_000).round(), 25.0);
        assert_eq!(percent((7, t0), (7, t1), 1_000_000_000), 0.0);
        assert_eq!(
            percent((9, t0), (3, t1), 1_000_000_000),
            0.0,
            "a restarted container counts from zero"
        );
    }
}
