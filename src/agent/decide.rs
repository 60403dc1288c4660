//! Pure decisions from what Docker shows: keep or replace a container, start it, stop it or
//! leave it, whether a data volume may be mounted, and how a container's end reads to a person.
//! No client here: [`super::docker`] gathers what Docker shows and carries out the answer.

use std::collections::HashMap;

use bollard::models::{ContainerInspectResponse, ContainerState, Volume};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::ResourceExt;

use super::plan::{SPEC_HASH_LABEL, UID_LABEL};
use crate::api::{CONDITION_READY, ComputeServer};

/// Ready reasons that report a program that ended by itself: once reported for a generation,
/// the agent leaves the container stopped until the server changes (Start, or any edit).
pub const PROGRAM_ENDED: &str = "ProgramEnded";
pub const PROGRAM_FAILED: &str = "ProgramFailed";

/// What to do with the container of the server's name, if there is one.
#[derive(Debug, PartialEq, Eq)]
pub enum Existing {
    /// It is this server's and matches the plan.
    Keep,
    /// It must go first; why, for the Event.
    Replace(&'static str),
    /// There is none; `removed_by_hand` when the status names one this agent made.
    Missing { removed_by_hand: bool },
}

fn label(container: &ContainerInspectResponse, key: &str) -> Option<String> {
    container
        .config
        .as_ref()
        .and_then(|c| c.labels.as_ref())
        .and_then(|l| l.get(key).cloned())
}

/// Whether the existing container (by name) is this server's and is as planned (`desired_hash`),
/// on a network that still exists (`network_gone`: Docker no longer has the network it was
/// attached to, so it cannot start again).
pub fn existing(
    server: &ComputeServer,
    desired_hash: &str,
    current: Option<&ContainerInspectResponse>,
    network_gone: bool,
) -> Existing {
    match current {
        None => Existing::Missing {
            removed_by_hand: server
                .status
                .as_ref()
                .and_then(|s| s.container_id.as_ref())
                .is_some(),
        },
        Some(c) if label(c, UID_LABEL) != server.uid() => {
            Existing::Replace("a container of an earlier server with this name was left behind; replaced it")
        }
        Some(c) if label(c, SPEC_HASH_LABEL).as_deref() != Some(desired_hash) => Existing::Replace(
            "the server's image, size or settings changed; recreated its container (data volume kept)",
        ),
        Some(_) if network_gone => Existing::Replace(
            "its Docker network was removed while it was stopped; recreated its container on the servers' \
             network (data volume kept)",
        ),
        Some(_) => Existing::Keep,
    }
}

/// Whether the data volume of the plan's name may be mounted into this server.
#[derive(Debug, PartialEq, Eq)]
pub enum VolumeUse {
    /// There is none yet: make it, labelled with the server's uid.
    Create,
    /// It was made for this server.
    Mount,
    /// It exists but was not made for this server: never mount it, never delete it.
    Refuse(String),
}

pub fn volume(server: &ComputeServer, node: &str, found: Option<&Volume>) -> VolumeUse {
    let Some(volume) = found else {
        return VolumeUse::Create;
    };
    let owner = volume.labels.get(UID_LABEL);
    if owner.is_some() && owner == server.uid().as_ref() {
        return VolumeUse::Mount;
    }
    let whose = match owner {
        Some(uid) => format!("it belongs to the server with uid {uid}"),
        None => "it carries no server uid".to_string(),
    };
    VolumeUse::Refuse(format!(
        "a Docker volume named {} already exists on node {node} and was not made for this server \
         ({whose}); its data is not mounted here and is left as it is. An admin can look at it \
         (docker volume inspect {0}) and remove or rename it; the server starts once it is gone",
        volume.name
    ))
}

/// The snapshot the server's data must be restored from before it starts: its archive's while
/// it is archived (status.archivedTo), else the one spec.restoreFrom names (when it was created,
/// or moved off a lost node) until its status says that one was restored.
pub fn pending_restore(server: &ComputeServer) -> Option<&str> {
    let status = server.status.as_ref();
    // An archived server's data is only in its archive's snapshot.
    if let Some(archive) = server.archived_to() {
        return Some(archive);
    }
    let wanted = server.spec.restore_from.as_ref()?.snapshot.as_str();
    let restored = status
        .and_then(|s| s.restored_from.as_ref())
        .map(|r| r.snapshot.as_str());
    (restored != Some(wanted)).then_some(wanted)
}

/// Whether this node holds data of the server that a restore would overwrite: a container of
/// it that has run, or its data volume without a container (a restore makes both, and a
/// restore that did not finish leaves a container that never ran). A restore never overwrites
/// data: that goes only with its server's deletion.
pub fn holds_data(container: Option<&ContainerState>, volume: bool) -> bool {
    match container {
        Some(state) => state
            .started_at
            .as_deref()
            .is_some_and(|t| !t.is_empty() && !t.starts_with("0001-01-01")),
        None => volume,
    }
}

/// Whether the restore this server asks for was refused already for its current spec (its
/// status says why): it is not tried again, nor anything made, until the server changes.
pub fn restore_refused(server: &ComputeServer) -> bool {
    let Some(status) = &server.status else {
        return false;
    };
    status.phase == Some(crate::api::Phase::Failed)
        && status.observed_generation == server.metadata.generation
        && status
            .conditions
            .iter()
            .any(|c| c.type_ == crate::api::CONDITION_READY && c.reason == RESTORE_REFUSED)
}

/// The reason of a server's Ready condition when its restore was refused.
pub const RESTORE_REFUSED: &str = "RestoreRefused";

/// How a container that is not running came to stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// It was made but never started.
    NeverRan,
    /// Docker stopped it while the engine ran (`docker stop`, `docker kill`): it is started
    /// again, and the user is warned.
    Stopped { code: i64 },
    /// It stopped with its node's Docker engine (an engine restart, the host's reboot), at
    /// `stopped_at`: it is started again, as the host's own services are.
    EngineRestarted { code: i64, stopped_at: jiff::Timestamp },
    /// Its program ended by itself (or the kernel killed it for memory).
    Program { code: i64, out_of_memory: bool },
}

/// Reads a stopped container's end. `killed`: whether Docker's event log shows a `kill` before
/// the container died (Some(true)), only the death (Some(false)), or nothing (None: the log
/// was lost, as when Docker itself restarted, which stops every container). `engine_started`:
/// when the Docker engine started; a container that finished before stopped with the engine.
pub fn end(state: &ContainerState, killed: Option<bool>, engine_started: Option<jiff::Timestamp>) -> End {
    // Docker reports a container that never ran as finished at year 1.
    let finished = state
        .finished_at
        .as_deref()
        .filter(|t| !t.starts_with("0001-"))
        .and_then(|t| t.parse::<jiff::Timestamp>().ok());
    let code = state.exit_code.unwrap_or_default();
    let Some(finished) = finished else {
        return End::NeverRan;
    };
    if state.oom_killed == Some(true) {
        End::Program {
            code,
            out_of_memory: true,
        }
    } else if engine_started.is_some_and(|started| finished < started) {
        End::EngineRestarted {
            code,
            stopped_at: finished,
        }
    } else if killed == Some(false) {
        End::Program {
            code,
            out_of_memory: false,
        }
    } else {
        End::Stopped { code }
    }
}

/// Why the agent started a container that was not running, told to the user (an Event, and
/// the status message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// Warning: someone acted outside compute-server; Normal: the node itself restarted.
    pub warning: bool,
    /// The Event's reason.
    pub reason: &'static str,
    pub message: String,
}

/// What to do about whether the container runs.
#[derive(Debug, PartialEq, Eq)]
pub enum Run {
    /// Start it; with a note for the user when it stopped without compute-server stopping it.
    Start(Option<Note>),
    Stop,
    Leave,
}

fn ready(server: &ComputeServer) -> Option<&Condition> {
    server
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == CONDITION_READY))
}

/// Whether the status reports that the program ended by itself, for the current generation.
fn end_reported(server: &ComputeServer) -> bool {
    ready(server).is_some_and(|c| {
        (c.reason == PROGRAM_ENDED || c.reason == PROGRAM_FAILED)
            && c.observed_generation == server.metadata.generation
    })
}

/// Start, stop or leave the container, given `spec.running`, whether it runs (or Docker is
/// restarting it), and how it ended. A program that ended by itself is left stopped: the first
/// time it is seen (the status still says it runs or is being made), and while the status reports that end for
/// the server's current generation; any change to the server after that starts it again.
pub fn run(server: &ComputeServer, state: &ContainerState, end: Option<&End>) -> Run {
    let running = state.running == Some(true) || state.restarting == Some(true);
    match (server.spec.running, running) {
        (true, true) | (false, false) => Run::Leave,
        (false, true) => Run::Stop,
        (true, false) => match end {
            None | Some(End::NeverRan) => Run::Start(None),
            Some(End::Stopped { code }) => Run::Start(Some(Note {
                warning: true,
                reason: "Restarted",
                message: format!(
                    "the container was stopped outside compute-server (exit code {code}); started it again"
                ),
            })),
            // A program that had ended by itself before stays ended.
            Some(End::EngineRestarted { .. }) if end_reported(server) => Run::Leave,
            Some(End::EngineRestarted { stopped_at, .. }) => Run::Start(Some(Note {
                warning: false,
                reason: "HostRestarted",
                message: format!(
                    "the node's Docker engine restarted (the container stopped with it at {} UTC); \
                     started it again",
                    stopped_at.strftime("%Y-%m-%d %H:%M:%S")
                ),
            })),
            Some(End::Program { .. }) => {
                // Its end not reported yet: the status still says it runs, or is being made
                // (the agent's first report, an image pull, a wait for a GPU) for this run.
                let seen_running = ready(server).is_none_or(|c| {
                    matches!(
                        c.reason.as_str(),
                        "Running" | "Restarting" | "Creating" | "WaitingForGpu"
                    )
                });
                if seen_running || end_reported(server) {
                    Run::Leave
                } else {
                    Run::Start(None)
                }
            }
        },
    }
}

/// The phase-to-be, Ready reason and message for a program that ended, in plain words.
/// `log_tail`: the last lines it wrote, shown after a failure.
pub fn ended_message(end: &End, memory: &str, log_tail: Option<&str>) -> (bool, &'static str, String) {
    match end {
        End::Program {
            code,
            out_of_memory: true,
        } => (
            false,
            PROGRAM_FAILED,
            format!("its program ran out of memory (limit {memory}) and was killed (exit code {code})"),
        ),
        End::Program { code: 0, .. } => (
            true,
            PROGRAM_ENDED,
            "its program ended (exit code 0); start the server to run it again".to_string(),
        ),
        End::Program { code, .. } => {
            let mut message = format!("its program ended (exit code {code})");
            if let Some(tail) = log_tail.map(str::trim).filter(|t| !t.is_empty()) {
                message.push_str(&format!("; its last output: {tail}"));
            }
            (false, PROGRAM_FAILED, message)
        }
        End::Stopped { code } => (
            false,
            "NotRunning",
            format!("the container stopped (exit code {code})"),
        ),
        End::EngineRestarted { code, .. } => (
            false,
            "NotRunning",
            format!("the container stopped with the node's Docker engine (exit code {code})"),
        ),
        End::NeverRan => (false, "NotRunning", "the container has not started".to_string()),
    }
}

/// The last `lines` of a log, each line cut to 200 characters, joined with " | ".
pub fn log_tail(log: &str, lines: usize) -> String {
    let kept: Vec<String> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.chars().take(200).collect())
        .collect();
    kept[kept.len().saturating_sub(lines)..].join(" | ")
}

/// What the sweep of a node should do: containers to remove, volumes to report.
#[derive(Debug, PartialEq)]
pub struct Sweeping {
    /// Names of containers whose server is gone.
    pub remove: Vec<String>,
    /// Data volumes whose server is gone; kept.
    pub orphaned_volumes: Vec<Volume>,
    /// Why nothing is removed at all, when the API server shows none of the node's servers.
    pub hold: Option<String>,
}

/// Sorts this node's containers and volumes by whether their server (by uid) is `live`.
/// When the API server shows no server at all for a node that has containers, it is an empty
/// or restored cluster, not a node whose servers all went: nothing is removed.
pub fn sweep(
    containers: &[bollard::models::ContainerSummary],
    volumes: &[Volume],
    live: &std::collections::HashSet<String>,
) -> Sweeping {
    let uid = |labels: Option<&HashMap<String, String>>| labels.and_then(|l| l.get(UID_LABEL)).cloned();
    let remove: Vec<String> = containers
        .iter()
        .filter(|c| !uid(c.labels.as_ref()).is_some_and(|u| live.contains(&u)))
        .filter_map(|c| c.names.iter().flatten().next())
        .map(|n| n.trim_start_matches('/').to_string())
        .collect();
    let orphaned_volumes: Vec<Volume> = volumes
        .iter()
        .filter(|v| !uid(Some(&v.labels)).is_some_and(|u| live.contains(&u)))
        .cloned()
        .collect();
    if live.is_empty() && !remove.is_empty() {
        let hold = format!(
            "the API server shows none of this node's servers, but Docker holds {} of their containers: \
             this looks like an empty or restored cluster, so nothing is removed. If the servers were \
             deleted for good, remove the containers by hand (docker rm -f) and prune the volumes \
             (compute-server agent prune)",
            remove.len()
        );
        return Sweeping {
            remove: vec![],
            orphaned_volumes,
            hold: Some(hold),
        };
    }
    Sweeping {
        remove,
        orphaned_volumes,
        hold: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(yaml: &str) -> ComputeServer {
        serde_yaml::from_str(yaml).unwrap()
    }

    const RUNNING: &str = "
apiVersion: computeserver.io/v1alpha1
kind: ComputeServer
metadata: {name: dev, namespace: compute, uid: u1, generation: 3}
spec: {owner: alice, image: busybox}
status:
  containerID: abc
  conditions: [{type: Ready, status: 'True', reason: Running, message: running, lastTransitionTime: '2026-01-01T00:00:00Z', observedGeneration: 3}]
";

    #[test]
    fn a_restore_is_done_once_and_a_refused_one_waits_for_a_change() {
        let made = |status: &str| {
            server(&format!(
                "{{apiVersion: computeserver.io/v1alpha1, kind: ComputeServer, metadata: {{name: c, generation: 1}}, \
                 spec: {{owner: alice, image: busybox, restoreFrom: {{snapshot: monday}}}}, status: {status}}}"
            ))
        };
        let fresh = made("{}");
        assert_eq!(pending_restore(&fresh), Some("monday"));
        assert!(!restore_refused(&fresh));
        let done = made("{restoredFrom: {snapshot: monday, checksum: 'sha256:ab'}}");
        assert_eq!(pending_restore(&done), None);
        let moved = made("{restoredFrom: {snapshot: sunday, checksum: 'sha256:ab'}}");
        assert_eq!(
            pending_restore(&moved),
            Some("monday"),
            "moved off a lost node: restored from the snapshot named now"
        );
        let archived =
            made("{archivedTo: c-archive-1, restoredFrom: {snapshot: monday, checksum: 'sha256:ab'}}");
        assert_eq!(pending_restore(&archived), Some("c-archive-1"));
        let refused = |generation: i64| {
            made(&format!(
                "{{phase: Failed, observedGeneration: {generation}, conditions: [{{type: Ready, status: 'False', \
                 reason: RestoreRefused, message: m, lastTransitionTime: '2026-01-01T00:00:00Z'}}]}}"
            ))
        };
        assert!(restore_refused(&refused(1)));
        assert!(!restore_refused(&refused(0)), "a changed server is tried again");
        assert_eq!(
            pending_restore(&server(RUNNING)),
            None,
            "no restoreFrom: nothing to restore"
        );
    }

    #[test]
    fn a_restore_overwrites_only_what_a_restore_made() {
        let never = ContainerState {
            started_at: Some("0001-01-01T00:00:00Z".into()),
            ..Default::default()
        };
        let ran = ContainerState {
            started_at: Some("2026-12-04T10:00:00.1Z".into()),
            ..Default::default()
        };
        assert!(!holds_data(None, false), "nothing here");
        assert!(!holds_data(Some(&never), true), "a restore that did not finish");
        assert!(holds_data(Some(&ran), true), "a server that ran here");
        assert!(holds_data(None, true), "a data volume left behind");
    }

    fn exited(code: i64) -> ContainerState {
        ContainerState {
            running: Some(false),
            exit_code: Some(code),
            finished_at: Some("2026-12-01T10:00:00Z".into()),
            ..Default::default()
        }
    }

    fn with_ready(yaml: &str, reason: &str, generation: i64) -> ComputeServer {
        let mut s = server(yaml);
        let status = s.status.as_mut().unwrap();
        status.conditions[0].reason = reason.into();
        status.conditions[0].observed_generation = Some(generation);
        s
    }

    #[test]
    fn a_program_that_ends_by_itself_is_reported_not_restarted() {
        let s = server(RUNNING);
        let end = end(
            &exited(0),
            Some(false),
            Some("2026-12-01T09:00:00Z".parse().unwrap()),
        );
        assert_eq!(
            end,
            End::Program {
                code: 0,
                out_of_memory: false
            }
        );
        assert_eq!(
            run(&s, &exited(0), Some(&end)),
            Run::Leave,
            "first seen: report it"
        );
        let reported = with_ready(RUNNING, PROGRAM_ENDED, 3);
        assert_eq!(
            run(&reported, &exited(0), Some(&end)),
            Run::Leave,
            "reported: stays stopped"
        );
        let changed = with_ready(RUNNING, PROGRAM_ENDED, 2);
        assert_eq!(
            run(&changed, &exited(0), Some(&end)),
            Run::Start(None),
            "the server changed since"
        );
        for coming_up in ["Creating", "WaitingForGpu"] {
            assert_eq!(
                run(&with_ready(RUNNING, coming_up, 3), &exited(0), Some(&end)),
                Run::Leave,
                "the status said it was being made ({coming_up}): this end is its first, report it"
            );
        }
        let stopped_and_started = with_ready(RUNNING, "Stopped", 4);
        assert_eq!(
            run(&stopped_and_started, &exited(0), Some(&end)),
            Run::Start(None)
        );
    }

    #[test]
    fn a_container_docker_stopped_is_started_again_with_a_warning() {
        let s = server(RUNNING);
        // The engine started before the container ended: someone stopped it.
        let before: jiff::Timestamp = "2026-12-01T09:00:00Z".parse().unwrap();
        for (killed, engine_started) in [(Some(true), Some(before)), (None, Some(before)), (None, None)] {
            let end = end(&exited(143), killed, engine_started);
            assert_eq!(end, End::Stopped { code: 143 });
            assert_eq!(
                run(&s, &exited(143), Some(&end)),
                Run::Start(Some(Note {
                    warning: true,
                    reason: "Restarted",
                    message:
                        "the container was stopped outside compute-server (exit code 143); started it again"
                            .into()
                }))
            );
        }
    }

    #[test]
    fn a_container_that_stopped_with_the_docker_engine_is_started_again_as_the_host_restarted() {
        let s = server(RUNNING);
        // The engine (re)started after the container ended: it stopped with the engine.
        let after: jiff::Timestamp = "2026-12-01T10:00:05Z".parse().unwrap();
        for code in [0, 137, 143, 255] {
            let end = end(&exited(code), None, Some(after));
            assert_eq!(
                end,
                End::EngineRestarted {
                    code,
                    stopped_at: "2026-12-01T10:00:00Z".parse().unwrap()
                }
            );
            assert_eq!(
                run(&s, &exited(code), Some(&end)),
                Run::Start(Some(Note {
                    warning: false,
                    reason: "HostRestarted",
                    message: "the node's Docker engine restarted (the container stopped with it at \
                              2026-12-01 10:00:00 UTC); started it again"
                        .into()
                }))
            );
        }
        // A program that had ended by itself, and was reported so, stays ended.
        let reported = with_ready(RUNNING, PROGRAM_ENDED, 3);
        let end = end(&exited(0), None, Some(after));
        assert_eq!(run(&reported, &exited(0), Some(&end)), Run::Leave);
        // A server stopped on request stays stopped.
        let mut stopped = server(RUNNING);
        stopped.spec.running = false;
        assert_eq!(run(&stopped, &exited(0), Some(&end)), Run::Leave);
    }

    #[test]
    fn out_of_memory_is_a_failure_of_the_program() {
        let mut state = exited(137);
        state.oom_killed = Some(true);
        let end = end(&state, None, None);
        let (stopped, reason, message) = ended_message(&end, "64Mi", None);
        assert!(!stopped);
        assert_eq!(reason, PROGRAM_FAILED);
        assert_eq!(
            message,
            "its program ran out of memory (limit 64Mi) and was killed (exit code 137)"
        );
    }

    #[test]
    fn messages_say_it_once_in_plain_words() {
        let ended = End::Program {
            code: 0,
            out_of_memory: false,
        };
        assert_eq!(
            ended_message(&ended, "64Mi", Some("bye")),
            (
                true,
                PROGRAM_ENDED,
                "its program ended (exit code 0); start the server to run it again".into()
            )
        );
        let failed = End::Program {
            code: 3,
            out_of_memory: false,
        };
        assert_eq!(
            ended_message(
                &failed,
                "64Mi",
                Some(&log_tail("a\n\nb\nno such file: /data\n", 2))
            )
            .2,
            "its program ended (exit code 3); its last output: b | no such file: /data"
        );
    }

    #[test]
    fn never_started_containers_start_and_running_ones_stop_on_request() {
        let s = server(RUNNING);
        let fresh = ContainerState {
            running: Some(false),
            finished_at: Some("0001-01-01T00:00:00Z".into()),
            ..Default::default()
        };
        assert_eq!(end(&fresh, None, None), End::NeverRan);
        assert_eq!(run(&s, &fresh, Some(&End::NeverRan)), Run::Start(None));
        let mut stop = s.clone();
        stop.spec.running = false;
        let up = ContainerState {
            running: Some(true),
            ..Default::default()
        };
        assert_eq!(run(&stop, &up, None), Run::Stop);
        assert_eq!(run(&s, &up, None), Run::Leave);
    }

    #[test]
    fn only_a_volume_made_for_this_server_is_mounted() {
        let s = server(RUNNING);
        let made_for = |uid: Option<&str>| Volume {
            name: "csrv.compute.dev.u1.data".into(),
            labels: uid
                .map(|u| HashMap::from([(UID_LABEL.to_string(), u.to_string())]))
                .unwrap_or_default(),
            ..Default::default()
        };
        assert_eq!(volume(&s, "n1", None), VolumeUse::Create);
        assert_eq!(volume(&s, "n1", Some(&made_for(Some("u1")))), VolumeUse::Mount);
        let VolumeUse::Refuse(why) = volume(&s, "n1", Some(&made_for(Some("u0")))) else {
            panic!("another server's volume must not be mounted")
        };
        assert!(why.contains("uid u0") && why.contains("node n1"), "{why}");
        assert!(matches!(
            volume(&s, "n1", Some(&made_for(None))),
            VolumeUse::Refuse(_)
        ));
    }

    #[test]
    fn the_sweep_removes_orphaned_containers_keeps_their_volumes_and_holds_on_an_empty_cluster() {
        let labelled = |uid: &str| HashMap::from([(UID_LABEL.to_string(), uid.to_string())]);
        let container = |name: &str, uid: &str| bollard::models::ContainerSummary {
            names: Some(vec![format!("/{name}")]),
            labels: Some(labelled(uid)),
            ..Default::default()
        };
        let volume = |name: &str, uid: &str| Volume {
            name: name.into(),
            labels: labelled(uid),
            ..Default::default()
        };
        let containers = [container("csrv.a.live", "u1"), container("csrv.a.gone", "u2")];
        let volumes = [
            volume("csrv.a.live.u1.data", "u1"),
            volume("csrv.a.gone.u2.data", "u2"),
        ];
        let live = std::collections::HashSet::from(["u1".to_string()]);
        let found = sweep(&containers, &volumes, &live);
        assert_eq!(found.remove, ["csrv.a.gone"]);
        assert_eq!(found.orphaned_volumes.len(), 1);
        assert_eq!(found.orphaned_volumes[0].name, "csrv.a.gone.u2.data");
        assert_eq!(found.hold, None);

        let empty = sweep(&containers, &volumes, &Default::default());
        assert!(empty.remove.is_empty(), "an empty API server removes nothing");
        assert!(empty.hold.unwrap().contains("empty or restored cluster"));
        assert_eq!(empty.orphaned_volumes.len(), 2, "and says which volumes it holds");
    }

    #[test]
    fn a_stale_or_foreign_container_is_replaced() {
        let s = server(RUNNING);
        let container = |uid: &str, hash: &str| ContainerInspectResponse {
            config: Some(bollard::models::ContainerConfig {
                labels: Some(HashMap::from([
                    (UID_LABEL.to_string(), uid.to_string()),
                    (SPEC_HASH_LABEL.to_string(), hash.to_string()),
                ])),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            existing(&s, "h", Some(&container("u1", "h")), false),
            Existing::Keep
        );
        assert!(matches!(
            existing(&s, "h", Some(&container("u0", "h")), false),
            Existing::Replace(_)
        ));
        assert!(matches!(
            existing(&s, "h", Some(&container("u1", "old")), false),
            Existing::Replace(_)
        ));
        assert_eq!(
            existing(&s, "h", Some(&container("u1", "h")), true),
            Existing::Replace(
                "its Docker network was removed while it was stopped; recreated its container on the \
                 servers' network (data volume kept)"
            )
        );
        assert_eq!(
            existing(&s, "h", None, false),
            Existing::Missing {
                removed_by_hand: true
            }
        );
    }
}
