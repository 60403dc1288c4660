//! One request at a time per person, across every replica of the web front, so that a profile's
//! `maxServersPerUser` holds when many requests arrive at once.
//!
//! Counting the servers and creating one are two API calls; two requests that count before
//! either creates would both slip under the limit. So a request first takes the person's
//! *turn*: a Lease `compute-server-limit-<hash of the user>` in the servers namespace, which the
//! API server lets only one client create. It counts and creates while holding it, then
//! deletes it. A replica that dies holding a turn leaves a Lease that is cleared once it is
//! older than [`HOLD`]. (So the web front needs get, create and delete on Leases there.)

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{DeleteParams, ObjectMeta, PostParams, Preconditions};
use kube::{Api, ResourceExt};
use sha2::Digest;

/// How long a turn may be held before others may take it over.
pub const HOLD: Duration = Duration::from_secs(10);

/// The name of `owner`'s turn Lease (user names may hold characters object names may not).
pub fn lease_name(owner: &str) -> String {
    let digest = sha2::Sha256::digest(owner.as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("compute-server-limit-{hex}")
}

/// Whether a turn Lease was taken so long ago, at `acquired`, that its holder must be gone.
pub fn abandoned(lease: &Lease, now: k8s_openapi::jiff::Timestamp) -> bool {
    let spec = lease.spec.as_ref();
    let held = spec.and_then(|s| s.lease_duration_seconds).unwrap_or(0);
    match spec.and_then(|s| s.acquire_time.as_ref()) {
        Some(MicroTime(acquired)) => {
            now.duration_since(*acquired) > k8s_openapi::jiff::SignedDuration::from_secs(held.into())
        }
        None => true,
    }
}

/// A person's turn, held until [`Turn::release`].
pub struct Turn {
    api: Api<Lease>,
    name: String,
    /// The Lease as made by this turn: released only if still ours.
    resource_version: Option<String>,
    since: Instant,
}

/// Why no turn was had.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("other requests of yours are still being handled")]
    Busy,
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

impl Turn {
    /// Waits (at most `wait`) for `owner`'s turn.
    pub async fn take(api: Api<Lease>, owner: &str, wait: Duration) -> Result<Turn, Error> {
        let name = lease_name(owner);
        let deadline = Instant::now() + wait;
        let mut pause = Duration::from_millis(10);
        loop {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    acquire_time: Some(MicroTime(k8s_openapi::jiff::Timestamp::now())),
                    lease_duration_seconds: Some(HOLD.as_secs() as i32),
                    ..LeaseSpec::default()
                }),
            };
            let taken = match api.create(&PostParams::default(), &lease).await {
                Ok(made) => Some(made),
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    match api.get_opt(&name).await? {
                        // Held by a replica that did not finish: clear it (only the Lease that
                        // was read, so two requests cannot both clear one), then try again.
                        Some(held) if abandoned(&held, k8s_openapi::jiff::Timestamp::now()) => {
                            let params = DeleteParams {
                                preconditions: Some(Preconditions {
                                    resource_version: held.resource_version(),
                                    uid: None,
                                }),
                                ..DeleteParams::default()
                            };
                            match api.delete(&name, &params).await {
                                Ok(_) => continue,
                                Err(kube::Error::Api(status)) if [404, 409].contains(&status.code) => None,
                                Err(error) => return Err(error.into()),
                            }
                        }
                        // Released meanwhile.
                        None => continue,
                        Some(_) => None,
                    }
                }
                Err(error) => return Err(error.into()),
            };
            if let Some(made) = taken {
                return Ok(Turn {
                    api,
                    name,
                    resource_version: made.resource_version(),
                    since: Instant::now(),
                });
            }
            if Instant::now() + pause > deadline {
                return Err(Error::Busy);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    /// Whether the turn is still surely this request's: well within [`HOLD`].
    pub fn held(&self) -> bool {
        self.since.elapsed() < HOLD / 2
    }

    /// Ends the turn. If it was taken over meanwhile, the other holder's Lease stays.
    pub async fn release(self) {
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                resource_version: self.resource_version,
                uid: None,
            }),
            ..DeleteParams::default()
        };
        if let Err(error) = self.api.delete(&self.name, &params).await {
            tracing::warn!(lease = %self.name, "could not end a turn: {error}; it lapses in {} s", HOLD.as_secs());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_user_has_a_lease_of_a_valid_name() {
        let name = lease_name("Alice@Example.org");
        assert_eq!(name.len(), "compute-server-limit-".len() + 32);
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        );
        assert_ne!(name, lease_name("alice@example.org"));
    }

    #[test]
    fn a_turn_is_abandoned_once_older_than_its_hold() {
        let at = |secs: i64| k8s_openapi::jiff::Timestamp::from_second(secs).unwrap();
        let lease = Lease {
            spec: Some(LeaseSpec {
                acquire_time: Some(MicroTime(at(1000))),
                lease_duration_seconds: Some(10),
                ..LeaseSpec::default()
            }),
            ..Lease::default()
        };
        assert!(!abandoned(&lease, at(1005)));
        assert!(!abandoned(&lease, at(1010)));
        assert!(abandoned(&lease, at(1011)));
        assert!(
            abandoned(&Lease::default(), at(1000)),
            "a Lease without a time is nobody's"
        );
    }
}
