//! The node's GPUs: found with nvidia-smi or given with `--gpu-devices`, and given to servers,
//! each device to one server at a time. Which devices a server gets is decided by [`assign`]
//! (pure); [`Claims`] remembers what this agent gave until its watch shows it in the servers'
//! status.gpuDevices, where assignments live (so they outlast a restart of the agent).

use std::collections::{BTreeMap, HashMap};

use tokio::sync::Mutex;

use kube::ResourceExt;
use tracing::{info, warn};

use crate::api::{ComputeServer, NodeGpu};

/// How nvidia-smi is asked for the inventory.
const QUERY: [&str; 2] = [
    "--query-gpu=index,uuid,name,memory.total",
    "--format=csv,noheader",
];

/// The host's GPUs: the devices given (IDs or UUIDs, in that order), else what nvidia-smi lists,
/// else none. A failing nvidia-smi is logged and counts as no GPUs.
pub async fn inventory(devices: &[String]) -> Vec<NodeGpu> {
    if !devices.is_empty() {
        return given(devices);
    }
    match tokio::process::Command::new("nvidia-smi")
        .args(QUERY)
        .output()
        .await
    {
        Ok(out) if out.status.success() => {
            let gpus = parse_nvidia_smi(&String::from_utf8_lossy(&out.stdout));
            info!(count = gpus.len(), "GPUs found with nvidia-smi");
            gpus
        }
        Ok(out) => {
            warn!(
                status = %out.status,
                stderr = %String::from_utf8_lossy(&out.stderr).trim(),
                "nvidia-smi failed: this node offers no GPUs (give them with --gpu-devices)"
            );
            vec![]
        }
        // No nvidia-smi: no NVIDIA driver, no GPUs.
        Err(_) => vec![],
    }
}

/// GPUs given by ID: each once, in the order given.
pub fn given(devices: &[String]) -> Vec<NodeGpu> {
    let mut gpus: Vec<NodeGpu> = vec![];
    for id in devices.iter().map(|d| d.trim()).filter(|d| !d.is_empty()) {
        if !gpus.iter().any(|g| g.id == id) {
            gpus.push(NodeGpu {
                id: id.to_string(),
                uuid: id.starts_with("GPU-").then(|| id.to_string()),
                ..Default::default()
            });
        }
    }
    gpus
}

/// Reads `nvidia-smi --query-gpu=index,uuid,name,memory.total --format=csv,noheader`:
/// "0, GPU-5f1c…, NVIDIA A100-SXM4-40GB, 40960 MiB" per line. Lines that are not that are
/// skipped.
pub fn parse_nvidia_smi(csv: &str) -> Vec<NodeGpu> {
    csv.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(',').map(str::trim).collect();
            let [index, uuid, name, memory] = fields[..] else {
                return None;
            };
            index.parse::<u32>().ok()?;
            let known = |v: &str| (!v.is_empty() && !v.starts_with('[')).then(|| v.to_string());
            Some(NodeGpu {
                id: index.to_string(),
                uuid: known(uuid),
                model: known(name),
                memory: known(memory),
                server: None,
            })
        })
        .collect()
}

/// Why a server cannot have its GPUs now; it waits, and is tried again.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Wait {
    #[error("waiting for {}: this node has no GPUs", count(*wanted))]
    NoGpus { wanted: usize },
    #[error("waiting for {}: this node has only {total}", count(*wanted))]
    TooFew { wanted: usize, total: usize },
    #[error("waiting for {}: no free GPU on this node ({held} of {total} held by {holders})", count(*wanted))]
    NoneFree {
        wanted: usize,
        total: usize,
        held: usize,
        holders: String,
    },
}

/// "1 GPU", "2 GPUs".
fn count(n: usize) -> String {
    format!("{n} GPU{}", if n == 1 { "" } else { "s" })
}

/// The devices a server that wants `wanted` GPUs gets, given the node's `inventory`, the devices
/// other servers hold (`held`: device ID → holder) and those it `had`: those it had, as long as
/// the node still has them and nobody else holds them, then free ones in the inventory's order.
pub fn assign(
    inventory: &[NodeGpu],
    held: &BTreeMap<String, String>,
    had: &[String],
    wanted: usize,
) -> Result<Vec<String>, Wait> {
    if wanted == 0 {
        return Ok(vec![]);
    }
    let total = inventory.len();
    if total == 0 {
        return Err(Wait::NoGpus { wanted });
    }
    if wanted > total {
        return Err(Wait::TooFew { wanted, total });
    }
    let free = |id: &String| !held.contains_key(id);
    let mut mine: Vec<String> = inventory
        .iter()
        .map(|g| g.id.clone())
        .filter(|id| had.contains(id) && free(id))
        .take(wanted)
        .collect();
    for id in inventory.iter().map(|g| &g.id) {
        if mine.len() == wanted {
            break;
        }
        if free(id) && !mine.contains(id) {
            mine.push(id.clone());
        }
    }
    if mine.len() < wanted {
        let mut holders: Vec<&str> = held.values().map(String::as_str).collect();
        holders.sort_unstable();
        holders.dedup();
        return Err(Wait::NoneFree {
            wanted,
            total,
            held: held
                .keys()
                .filter(|id| inventory.iter().any(|g| &g.id == *id))
                .count(),
            holders: holders.join(", "),
        });
    }
    // In the inventory's order, whatever order they were found in.
    mine.sort_by_key(|id| inventory.iter().position(|g| &g.id == id));
    Ok(mine)
}

/// A server as a GPU holder: NAMESPACE/NAME.
pub fn holder(server: &ComputeServer) -> String {
    format!("{}/{}", server.namespace().unwrap_or_default(), server.name_any())
}

/// Devices held by the servers of `servers` other than `uid`: what their status says, and what
/// this agent gave them that the status may not show yet (`claims`).
pub fn held_by_others(
    servers: &[std::sync::Arc<ComputeServer>],
    claims: &HashMap<String, (String, Vec<String>)>,
    uid: &str,
) -> BTreeMap<String, String> {
    let mut held = BTreeMap::new();
    for server in servers {
        let other = server.uid().unwrap_or_default();
        if other == uid {
            continue;
        }
        let devices = server
            .status
            .as_ref()
            .map(|s| s.gpu_devices.as_slice())
            .unwrap_or_default();
        for device in devices {
            held.insert(device.clone(), holder(server));
        }
        if let Some((name, devices)) = claims.get(&other) {
            for device in devices {
                held.insert(device.clone(), name.clone());
            }
        }
    }
    held
}

/// The devices this agent gave each server (uid → holder and devices), until the server is
/// gone. Assignments are made under its lock, one server at a time.
#[derive(Default)]
pub struct Claims(pub Mutex<HashMap<String, (String, Vec<String>)>>);

/// The node's inventory with the holder of each device, for ComputeNode.status.gpus.
pub fn listed(inventory: &[NodeGpu], servers: &[std::sync::Arc<ComputeServer>]) -> Vec<NodeGpu> {
    let held = held_by_others(servers, &HashMap::new(), "");
    inventory
        .iter()
        .map(|gpu| NodeGpu {
            server: held.get(&gpu.id).cloned(),
            ..gpu.clone()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two() -> Vec<NodeGpu> {
        given(&["0".into(), "1".into()])
    }

    fn held(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(d, s)| (d.to_string(), s.to_string()))
            .collect()
    }

    #[test]
    fn nvidia_smi_lists_index_uuid_model_and_memory() {
        let csv = "0, GPU-5f1c2d3e-aaaa-bbbb-cccc-000000000001, NVIDIA A100-SXM4-40GB, 40960 MiB\n\
                   1, GPU-5f1c2d3e-aaaa-bbbb-cccc-000000000002, NVIDIA A100-SXM4-40GB, [N/A]\n\
                   No devices were found\n";
        let gpus = parse_nvidia_smi(csv);
        assert_eq!(gpus.len(), 2);
        assert_eq!(gpus[0].id, "0");
        assert_eq!(
            gpus[0].uuid.as_deref(),
            Some("GPU-5f1c2d3e-aaaa-bbbb-cccc-000000000001")
        );
        assert_eq!(gpus[0].model.as_deref(), Some("NVIDIA A100-SXM4-40GB"));
        assert_eq!(gpus[0].memory.as_deref(), Some("40960 MiB"));
        assert_eq!(gpus[1].memory, None, "[N/A] is not a value");
        assert!(parse_nvidia_smi("").is_empty());
    }

    #[test]
    fn devices_given_count_once_and_uuids_are_known_as_such() {
        let gpus = given(&["0".into(), " 1".into(), "0".into(), "".into(), "GPU-abc".into()]);
        let ids: Vec<&str> = gpus.iter().map(|g| g.id.as_str()).collect();
        assert_eq!(ids, ["0", "1", "GPU-abc"]);
        assert_eq!(gpus[2].uuid.as_deref(), Some("GPU-abc"));
        assert_eq!(gpus[0].uuid, None);
    }

    #[test]
    fn servers_get_disjoint_devices_in_order() {
        let first = assign(&two(), &held(&[]), &[], 1).unwrap();
        assert_eq!(first, ["0"]);
        let second = assign(&two(), &held(&[("0", "ns/a")]), &[], 1).unwrap();
        assert_eq!(second, ["1"]);
        assert_eq!(assign(&two(), &held(&[]), &[], 2).unwrap(), ["0", "1"]);
        assert_eq!(
            assign(&two(), &held(&[("0", "ns/a")]), &[], 0).unwrap(),
            Vec::<String>::new()
        );
    }

    #[test]
    fn a_server_keeps_its_devices_across_restarts() {
        // It had 1; 0 is free again: it keeps 1 all the same (a recreate, a stop and start).
        assert_eq!(assign(&two(), &held(&[]), &["1".into()], 1).unwrap(), ["1"]);
        // Taken by another meanwhile (an admin's edit): it gets a free one.
        assert_eq!(
            assign(&two(), &held(&[("1", "ns/b")]), &["1".into()], 1).unwrap(),
            ["0"]
        );
        // A device the node no longer has is not kept.
        assert_eq!(assign(&two(), &held(&[]), &["7".into()], 1).unwrap(), ["0"]);
        // Asking for more keeps what it had and adds, in the inventory's order.
        assert_eq!(assign(&two(), &held(&[]), &["1".into()], 2).unwrap(), ["0", "1"]);
    }

    #[test]
    fn a_server_waits_while_none_is_free_with_the_reason() {
        let full = held(&[("0", "ns/a"), ("1", "ns/b")]);
        assert_eq!(
            assign(&two(), &full, &[], 1).unwrap_err().to_string(),
            "waiting for 1 GPU: no free GPU on this node (2 of 2 held by ns/a, ns/b)"
        );
        assert_eq!(
            assign(&two(), &held(&[]), &[], 3).unwrap_err().to_string(),
            "waiting for 3 GPUs: this node has only 2"
        );
        assert_eq!(
            assign(&[], &held(&[]), &[], 1).unwrap_err().to_string(),
            "waiting for 1 GPU: this node has no GPUs"
        );
        // Released when its holder goes: held no longer lists it.
        assert_eq!(assign(&two(), &held(&[("1", "ns/b")]), &[], 1).unwrap(), ["0"]);
    }

    #[test]
    fn status_and_claims_both_count_as_held() {
        let server = |name: &str, uid: &str, devices: &[&str]| {
            let mut s: ComputeServer = serde_json::from_value(serde_json::json!({
                "apiVersion": "computeserver.io/v1alpha1", "kind": "ComputeServer",
                "metadata": {"name": name, "namespace": "ns", "uid": uid},
                "spec": {"owner": "alice"},
            }))
            .unwrap();
            s.status = Some(crate::api::ComputeServerStatus {
                gpu_devices: devices.iter().map(|d| d.to_string()).collect(),
                ..Default::default()
            });
            std::sync::Arc::new(s)
        };
        let servers = vec![
            server("a", "u-a", &["0"]),
            server("b", "u-b", &[]),
            server("c", "u-c", &[]),
        ];
        let claims = HashMap::from([("u-b".to_string(), ("ns/b".to_string(), vec!["1".to_string()]))]);
        assert_eq!(
            held_by_others(&servers, &claims, "u-c"),
            held(&[("0", "ns/a"), ("1", "ns/b")])
        );
        assert_eq!(held_by_others(&servers, &claims, "u-a"), held(&[("1", "ns/b")]));
        let listed = listed(&two(), &servers);
        assert_eq!(listed[0].server.as_deref(), Some("ns/a"));
        assert_eq!(listed[1].server, None);
    }
}
