//! `compute-server agent prune`: the admin's way to remove data volumes whose server is gone.
//! The agent never removes them by itself; this command removes only those its ComputeNode lists
//! as orphaned for longer than asked, after checking again that no server of theirs exists.

use kube::api::ListParams;
use kube::{Api, ResourceExt};

use super::docker;
use super::{Error, Result};
use crate::api::{ComputeNode, ComputeServer, NODE_LABEL};

/// Flags of `compute-server agent prune`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The node whose orphaned volumes to remove.
    #[arg(long, env = "COMPUTE_SERVER_NODE")]
    pub node: String,

    /// Remove volumes orphaned for longer than this, such as 7d, 12h or 30m.
    #[arg(long, value_parser = parse_age)]
    pub older_than: std::time::Duration,

    /// Say what would be removed, and remove nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// The node's Docker engine.
    #[arg(long, env = "DOCKER_HOST", default_value = "unix:///var/run/docker.sock")]
    pub docker_host: String,
}

/// An age such as `7d`, `12h`, `30m` or `1h 30m`.
pub fn parse_age(text: &str) -> std::result::Result<std::time::Duration, crate::api::Invalid> {
    let span: jiff::Span = text
        .parse()
        .map_err(|_| crate::api::Invalid(format!("{text:?} is not an age; write it like 7d, 12h or 30m")))?;
    let duration = span
        .to_duration(jiff::SpanRelativeTo::days_are_24_hours())
        .map_err(|e| crate::api::Invalid(format!("{text:?}: {e}")))?;
    std::time::Duration::try_from(duration)
        .map_err(|_| crate::api::Invalid(format!("{text:?} must not be negative")))
}

pub async fn run(args: Args) -> Result<()> {
    let client = crate::kube_client::connect().await?;
    let docker = docker::connect(&args.docker_host).await?;
    let node = Api::<ComputeNode>::all(client.clone())
        .get_opt(&args.node)
        .await
        .map_err(Error::Kube)?
        .ok_or_else(|| Error::Config(format!("there is no ComputeNode {:?}", args.node)))?;
    let listed = node.status.map(|s| s.orphaned_volumes).unwrap_or_default();
    // Checked again now: a server may have come back (a restored cluster) since the agent looked.
    let live: std::collections::HashSet<String> = Api::<ComputeServer>::all(client)
        .list(&ListParams::default().labels(&format!("{NODE_LABEL}={}", args.node)))
        .await
        .map_err(Error::Kube)?
        .items
        .iter()
        .filter_map(|s| s.uid())
        .collect();
    let present: std::collections::HashSet<String> = docker::list_volumes(&docker, &args.node)
        .await?
        .into_iter()
        .map(|v| v.name)
        .collect();
    let now = jiff::Timestamp::now();
    let (mut removed, mut kept) = (0, 0);
    for orphan in &listed {
        let age = now.duration_since(orphan.orphaned_since.0);
        let old_enough = std::time::Duration::try_from(age).is_ok_and(|age| age >= args.older_than);
        let who = format!(
            "server {}/{} (uid {})",
            orphan.namespace, orphan.server, orphan.uid
        );
        if live.contains(&orphan.uid) || !present.contains(&orphan.volume) {
            continue;
        }
        if !old_enough {
            kept += 1;
            continue;
        }
        if args.dry_run {
            println!(
                "would remove volume {} of {who}, orphaned since {}",
                orphan.volume, orphan.orphaned_since.0
            );
        } else {
            docker::prune_volume(&docker, &orphan.volume).await?;
            println!(
                "removed volume {} of {who}, orphaned since {}",
                orphan.volume, orphan.orphaned_since.0
            );
        }
        removed += 1;
    }
    let verb = if args.dry_run { "would remove" } else { "removed" };
    println!(
        "{verb} {removed} orphaned volume(s) on node {}; kept {kept} orphaned for less than {}",
        args.node,
        jiff::SignedDuration::try_from(args.older_than)
            .map(|d| format!("{d:#}"))
            .unwrap_or_default()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_age;

    #[test]
    fn ages_read_as_people_write_them() {
        assert_eq!(parse_age("7d").unwrap().as_secs(), 7 * 86400);
        assert_eq!(parse_age("12h").unwrap().as_secs(), 12 * 3600);
        assert_eq!(parse_age("1h 30m").unwrap().as_secs(), 5400);
        assert!(parse_age("seven days").unwrap_err().0.contains("7d, 12h or 30m"));
        assert!(parse_age("-1d").is_err());
    }
}
