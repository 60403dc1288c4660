//! The servers' own Docker networks on a node, and the firewall rules that close them.
//!
//! Servers never run on Docker's default bridge. The agent makes one bridge network per egress
//! (`compute-server`: public addresses; `compute-server-closed`: nothing outside), both with
//! inter-container traffic off (`enable_icc=false`), and installs iptables rules of its own for
//! each bridge, in chains it alone writes (`CSRV-IN-<bridge>`, `CSRV-OUT-<bridge>`), jumped to
//! from the top of INPUT and FORWARD:
//! - INPUT (traffic to the node itself, any of its addresses): only replies to connections the
//!   node opened (docker-proxy reaching a published port) pass; a server cannot reach the node.
//! - FORWARD (traffic through the node): replies pass; other servers on the same bridge,
//!   169.254.0.0/16 (cloud metadata, link-local) and, for `Internet`, private networks except
//!   DNS (port 53) are refused; `None` refuses everything.
//!
//! The rules are installed atomically per chain (`iptables-restore --noflush`), checked at start
//! and on every heartbeat (and put back if something removed them), and removed only by
//! `compute-server agent uninstall`, once no server uses the network. The bridge must pass
//! through iptables (`net.bridge.bridge-nf-call-iptables=1`), which the agent sets.

use std::collections::HashMap;

use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::models::NetworkCreateRequest;
use tracing::{info, warn};

use super::plan::{MANAGED_BY, MANAGED_BY_LABEL};
use super::{Error, Result};
use crate::api::Egress;

/// The Docker network of servers that may reach public addresses.
pub const NETWORK: &str = "compute-server";
/// The Docker network of servers that may reach nothing outside.
pub const CLOSED_NETWORK: &str = "compute-server-closed";
const BRIDGE_NAME: &str = "com.docker.network.bridge.name";
const ENABLE_ICC: &str = "com.docker.network.bridge.enable_icc";
const BRIDGE_NETFILTER: &str = "/proc/sys/net/bridge/bridge-nf-call-iptables";

/// Private and shared address ranges a server with `Internet` egress may reach only for DNS.
const PRIVATE: [&str; 4] = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10"];
/// Link-local, where cloud hosts serve instance metadata and credentials (169.254.169.254).
const LINK_LOCAL: &str = "169.254.0.0/16";
const REJECT: &str = "-j REJECT --reject-with icmp-admin-prohibited";

/// One of the servers' networks on this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bridge {
    pub network: String,
    pub bridge: String,
    pub egress: Egress,
}

/// The iptables state one bridge needs: chains with their rules, and the jumps to them.
#[derive(Debug, PartialEq, Eq)]
pub struct Firewall {
    /// (chain, rules as `iptables -A CHAIN` arguments).
    pub chains: Vec<(String, Vec<String>)>,
    /// (built-in chain, rule arguments) inserted at the top.
    pub jumps: Vec<(&'static str, String)>,
}

/// The rules that close `bridge` for servers of `egress`.
pub fn firewall(bridge: &str, egress: Egress) -> Firewall {
    let input = format!("CSRV-IN-{bridge}");
    let output = format!("CSRV-OUT-{bridge}");
    let replies = "-m conntrack --ctstate RELATED,ESTABLISHED -j RETURN".to_string();
    let mut out = vec![
        replies.clone(),
        format!("-o {bridge} {REJECT}"),
        format!("-d {LINK_LOCAL} {REJECT}"),
    ];
    match egress {
        Egress::Internet => {
            for range in PRIVATE {
                out.push(format!("-d {range} -p udp -m udp --dport 53 -j RETURN"));
                out.push(format!("-d {range} -p tcp -m tcp --dport 53 -j RETURN"));
                out.push(format!("-d {range} {REJECT}"));
            }
        }
        Egress::None => out.push(REJECT.to_string()),
    }
    Firewall {
        jumps: vec![
            ("INPUT", format!("-i {bridge} -j {input}")),
            ("FORWARD", format!("-i {bridge} -j {output}")),
        ],
        chains: vec![(input, vec![replies, REJECT.to_string()]), (output, out)],
    }
}

impl Firewall {
    /// Input for `iptables-restore --noflush`: each chain emptied and filled in one transaction.
    pub fn restore(&self) -> String {
        let mut text = String::from("*filter\n");
        for (chain, _) in &self.chains {
            text.push_str(&format!(":{chain} - [0:0]\n"));
        }
        for (chain, rules) in &self.chains {
            for rule in rules {
                text.push_str(&format!("-A {chain} {rule}\n"));
            }
        }
        text.push_str("COMMIT\n");
        text
    }
}

/// The bridge name for a network the agent makes: short (15 bytes at most), and different for
/// each Docker engine of one host (by its address: engines share their ID when they share
/// /etc/docker). Agents on one engine find the network by name, so only its maker's choice counts.
pub fn bridge_name(docker_host: &str, network: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("{docker_host}/{network}").as_bytes());
    let hex: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    format!("csrv-{hex}")
}

async fn run(program: &str, args: &[&str], stdin: Option<&str>) -> std::result::Result<String, String> {
    use tokio::io::AsyncWriteExt;
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = command
        .spawn()
        .map_err(|e| format!("could not run {program} (is the iptables package installed?): {e}"))?;
    if let Some(mut pipe) = child.stdin.take() {
        pipe.write_all(stdin.unwrap_or_default().as_bytes())
            .await
            .map_err(|e| format!("{program}: {e}"))?;
    }
    let output = child
        .wait_with_output()
        .await
        .map_err(|e| format!("{program}: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

async fn iptables(args: &str) -> std::result::Result<String, String> {
    let mut all = vec!["-w", "5"];
    all.extend(args.split(' '));
    run("iptables", &all, None).await
}

/// Whether the firewall is in place: the jumps exist and each chain holds its rules.
pub async fn installed(firewall: &Firewall) -> bool {
    for (chain, rule) in &firewall.jumps {
        if iptables(&format!("-C {chain} {rule}")).await.is_err() {
            return false;
        }
    }
    for (chain, rules) in &firewall.chains {
        let Ok(listed) = iptables(&format!("-S {chain}")).await else {
            return false;
        };
        if listed.lines().filter(|l| l.starts_with("-A ")).count() != rules.len() {
            return false;
        }
    }
    true
}

/// Installs the firewall: chains replaced atomically, jumps added once at the top.
pub async fn install(firewall: &Firewall) -> Result<()> {
    run(
        "iptables-restore",
        &["-w", "5", "--noflush"],
        Some(&firewall.restore()),
    )
    .await
    .map_err(Error::Firewall)?;
    for (chain, rule) in &firewall.jumps {
        if iptables(&format!("-C {chain} {rule}")).await.is_err() {
            iptables(&format!("-I {chain} 1 {rule}"))
                .await
                .map_err(Error::Firewall)?;
        }
    }
    Ok(())
}

/// Makes sure bridged traffic passes through iptables, without which servers on one bridge
/// would reach each other whatever the rules say.
fn bridge_netfilter() -> Result<()> {
    match std::fs::read_to_string(BRIDGE_NETFILTER) {
        Ok(value) if value.trim() == "1" => Ok(()),
        Ok(_) => std::fs::write(BRIDGE_NETFILTER, "1").map_err(|e| {
            Error::Firewall(format!(
                "could not turn on {BRIDGE_NETFILTER} ({e}); without it servers on one node reach each other: \
                 run `sysctl -w net.bridge.bridge-nf-call-iptables=1` as root"
            ))
        }),
        Err(e) => Err(Error::Firewall(format!(
            "{BRIDGE_NETFILTER} is missing ({e}): load the br_netfilter kernel module (modprobe br_netfilter)"
        ))),
    }
}

/// The network for `egress`, made if missing (inter-container traffic off, ports published on
/// `publish_address` by default); an existing one must keep servers apart.
async fn ensure_network(
    docker: &Docker,
    docker_host: &str,
    name: &str,
    publish_address: &str,
) -> Result<String> {
    for _ in 0..2 {
        match docker.inspect_network(name, None).await {
            Ok(network) => {
                let options = network.options.unwrap_or_default();
                if options.get(ENABLE_ICC).map(String::as_str) != Some("false") {
                    return Err(Error::Firewall(format!(
                        "the Docker network {name} exists but lets containers reach each other ({ENABLE_ICC} is \
                         not false); remove it (docker network rm {name}) so that the agent makes it anew"
                    )));
                }
                let id = network.id.unwrap_or_default();
                return Ok(options
                    .get(BRIDGE_NAME)
                    .cloned()
                    .unwrap_or_else(|| format!("br-{}", id.chars().take(12).collect::<String>())));
            }
            Err(DockerError::DockerResponseServerError { status_code: 404, .. }) => {
                let request = NetworkCreateRequest {
                    name: name.to_string(),
                    driver: Some("bridge".into()),
                    enable_ipv6: Some(false),
                    options: Some(HashMap::from([
                        (BRIDGE_NAME.to_string(), bridge_name(docker_host, name)),
                        (ENABLE_ICC.to_string(), "false".to_string()),
                        (
                            "com.docker.network.bridge.host_binding_ipv4".to_string(),
                            publish_address.to_string(),
                        ),
                    ])),
                    labels: Some(HashMap::from([(
                        MANAGED_BY_LABEL.to_string(),
                        MANAGED_BY.to_string(),
                    )])),
                    ..Default::default()
                };
                match docker.create_network(request).await {
                    Ok(_) => info!(network = name, "made the servers' network"),
                    // Made meanwhile by another agent on this engine (409: the name, 403: the
                    // bridge name is taken): inspect it again.
                    Err(DockerError::DockerResponseServerError {
                        status_code: 403 | 409,
                        ..
                    }) => {}
                    Err(error) => return Err(Error::Docker(error)),
                }
            }
            Err(error) => return Err(Error::Docker(error)),
        }
    }
    Err(Error::Firewall(format!(
        "the Docker network {name} could not be made"
    )))
}

/// Where the servers' networks are: the engine (by its address), the publish address, the
/// networks as last set up.
#[derive(Clone, Debug)]
pub struct Setup {
    pub docker_host: String,
    pub publish_address: String,
    pub bridges: Vec<Bridge>,
}

impl Setup {
    /// The Docker network of servers of `egress`.
    pub fn network(&self, egress: Egress) -> String {
        self.bridges
            .iter()
            .find(|b| b.egress == egress)
            .map(|b| b.network.clone())
            .unwrap_or_default()
    }
}

/// Sets up both servers' networks and their firewall, and checks it: the agent does not start
/// without it.
pub async fn setup(docker: &Docker, docker_host: &str, publish_address: &str) -> Result<Setup> {
    bridge_netfilter()?;
    let mut bridges = Vec::new();
    for (network, egress) in [(NETWORK, Egress::Internet), (CLOSED_NETWORK, Egress::None)] {
        let bridge = ensure_network(docker, docker_host, network, publish_address).await?;
        let rules = firewall(&bridge, egress);
        install(&rules).await?;
        if !installed(&rules).await {
            return Err(Error::Firewall(format!(
                "the firewall rules for {bridge} did not hold after installing them; is another tool rewriting iptables?"
            )));
        }
        info!(%network, %bridge, ?egress, "servers' network closed: no other server, no node, no 169.254.0.0/16");
        bridges.push(Bridge {
            network: network.to_string(),
            bridge,
            egress,
        });
    }
    Ok(Setup {
        docker_host: docker_host.to_string(),
        publish_address: publish_address.to_string(),
        bridges,
    })
}

/// Puts the networks and the firewall back if something removed them (`docker network rm`, a
/// host firewall reload); Err when that fails, which makes the node not Ready.
pub async fn check(docker: &Docker, setup: &Setup) -> Result<()> {
    bridge_netfilter()?;
    for bridge in &setup.bridges {
        let now = ensure_network(
            docker,
            &setup.docker_host,
            &bridge.network,
            &setup.publish_address,
        )
        .await?;
        if now != bridge.bridge {
            return Err(Error::Firewall(format!(
                "the Docker network {} now uses bridge {now}, not {}: restart the agent",
                bridge.network, bridge.bridge
            )));
        }
        let rules = firewall(&bridge.bridge, bridge.egress);
        if !installed(&rules).await {
            warn!(bridge = %bridge.bridge, "the servers' firewall rules were missing or changed; putting them back");
            install(&rules).await?;
        }
    }
    Ok(())
}

/// `agent uninstall`: removes the servers' networks of this Docker engine, and the firewall
/// rules of each network that could be removed (a network still in use keeps its rules).
pub async fn uninstall(docker: &Docker, docker_host: &str) -> Result<Vec<String>> {
    // Stopped containers keep their network's ID: removing it under them would keep them from
    // starting again. Nothing is removed while any server's container is here.
    let options = bollard::query_parameters::ListContainersOptions {
        all: true,
        filters: Some(HashMap::from([(
            "label".to_string(),
            vec![format!("{MANAGED_BY_LABEL}={MANAGED_BY}")],
        )])),
        ..Default::default()
    };
    let left = docker
        .list_containers(Some(options))
        .await
        .map_err(Error::Docker)?;
    if !left.is_empty() {
        let names: Vec<String> = left
            .iter()
            .filter_map(|c| {
                c.names
                    .as_ref()?
                    .first()
                    .map(|n| n.trim_start_matches('/').to_string())
            })
            .collect();
        return Err(Error::Firewall(format!(
            "{} servers' containers are still on this engine, running or stopped ({}): delete their \
             servers first; nothing was removed",
            left.len(),
            names.join(", ")
        )));
    }
    let mut done = Vec::new();
    for network in [NETWORK, CLOSED_NETWORK] {
        let bridge = match docker.inspect_network(network, None).await {
            Ok(found) => {
                let bridge = found.options.unwrap_or_default().get(BRIDGE_NAME).cloned();
                if let Err(error) = docker.remove_network(network).await {
                    return Err(Error::Firewall(format!(
                        "could not remove the Docker network {network} (delete its servers first): {error}"
                    )));
                }
                done.push(format!("removed the Docker network {network}"));
                bridge
            }
            Err(DockerError::DockerResponseServerError { status_code: 404, .. }) => {
                Some(bridge_name(docker_host, network))
            }
            Err(error) => return Err(Error::Docker(error)),
        };
        let Some(bridge) = bridge else { continue };
        let rules = firewall(&bridge, Egress::None);
        let mut removed = false;
        for (chain, rule) in &rules.jumps {
            while iptables(&format!("-D {chain} {rule}")).await.is_ok() {
                removed = true;
            }
        }
        for (chain, _) in &rules.chains {
            if iptables(&format!("-F {chain}")).await.is_ok() {
                let _ = iptables(&format!("-X {chain}")).await;
                removed = true;
            }
        }
        if removed {
            done.push(format!("removed the firewall rules of bridge {bridge}"));
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_reach_neither_each_other_nor_the_node_nor_metadata() {
        let rules = firewall("csrv-0a1b2c3d", Egress::Internet);
        assert_eq!(
            rules.jumps,
            vec![
                ("INPUT", "-i csrv-0a1b2c3d -j CSRV-IN-csrv-0a1b2c3d".to_string()),
                (
                    "FORWARD",
                    "-i csrv-0a1b2c3d -j CSRV-OUT-csrv-0a1b2c3d".to_string()
                ),
            ]
        );
        let (input, to_node) = &rules.chains[0];
        assert_eq!(input, "CSRV-IN-csrv-0a1b2c3d");
        assert_eq!(
            to_node,
            &vec![
                "-m conntrack --ctstate RELATED,ESTABLISHED -j RETURN".to_string(),
                "-j REJECT --reject-with icmp-admin-prohibited".to_string(),
            ],
            "the node answers only connections it opened"
        );
        let (_, out) = &rules.chains[1];
        assert_eq!(out[0], "-m conntrack --ctstate RELATED,ESTABLISHED -j RETURN");
        assert_eq!(
            out[1],
            "-o csrv-0a1b2c3d -j REJECT --reject-with icmp-admin-prohibited"
        );
        assert_eq!(
            out[2],
            "-d 169.254.0.0/16 -j REJECT --reject-with icmp-admin-prohibited"
        );
        assert!(out.contains(&"-d 10.0.0.0/8 -p udp -m udp --dport 53 -j RETURN".to_string()));
        assert!(out.contains(&"-d 192.168.0.0/16 -j REJECT --reject-with icmp-admin-prohibited".to_string()));
        assert!(!out.iter().any(|r| r == REJECT), "public addresses stay open");
        for name in [&rules.chains[0].0, &rules.chains[1].0] {
            assert!(name.len() <= 28, "iptables chain names hold 28 bytes: {name}");
        }
    }

    #[test]
    fn a_closed_network_reaches_nothing_outside() {
        let rules = firewall("csrv-0a1b2c3d", Egress::None);
        let out = &rules.chains[1].1;
        assert_eq!(out.last().map(String::as_str), Some(REJECT));
        assert!(!out.iter().any(|r| r.contains("--dport 53")));
    }

    #[test]
    fn chains_are_replaced_in_one_transaction() {
        let text = firewall("csrv-0a1b2c3d", Egress::None).restore();
        assert!(
            text.starts_with("*filter\n:CSRV-IN-csrv-0a1b2c3d - [0:0]\n:CSRV-OUT-csrv-0a1b2c3d - [0:0]\n")
        );
        assert!(text.ends_with("COMMIT\n"));
        assert!(text.contains("-A CSRV-OUT-csrv-0a1b2c3d -o csrv-0a1b2c3d -j REJECT"));
    }

    #[test]
    fn bridge_names_fit_linux_and_agree_per_engine() {
        let name = bridge_name("unix:///var/run/docker.sock", NETWORK);
        assert!(name.len() <= 15, "{name}");
        assert_eq!(name, bridge_name("unix:///var/run/docker.sock", NETWORK));
        assert_ne!(name, bridge_name("unix:///var/run/docker.sock", CLOSED_NETWORK));
        assert_ne!(name, bridge_name("unix:///run/node-2/docker.sock", NETWORK));
    }
}
