//! The fair queue: in which order waiting servers are placed, and each one's place in line.
//! Pure: no client here.

use std::collections::HashMap;
use std::sync::Arc;

use kube::{Resource, ResourceExt};

use crate::api::ComputeServer;

/// Waiting servers in the order they are placed: a person's first waiting server before
/// anyone's second, counting what each already holds (a person with three servers placed waits
/// behind one with none); among equals, whoever used fewer hours lately (`used`: the ledger's
/// CPU- plus GPU-hours of the last days), then the oldest. The order the cache lists them in plays
/// no part, and a person's line does not jump when one of their servers goes.
pub fn fair_order(
    mut pending: Vec<Arc<ComputeServer>>,
    held: impl Fn(&str) -> usize,
    used: impl Fn(&str) -> f64,
) -> Vec<Arc<ComputeServer>> {
    pending.sort_by_key(|s| age(s));
    let mut turn: HashMap<String, usize> = HashMap::new();
    let mut ranked: Vec<(usize, f64, Arc<ComputeServer>)> = pending
        .into_iter()
        .map(|server| {
            let owner = &server.spec.owner;
            let nth = turn.entry(owner.clone()).or_insert_with(|| held(owner));
            let rank = *nth;
            *nth += 1;
            (rank, used(owner), server)
        })
        .collect();
    // Stable: equals keep their age order.
    ranked.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
    ranked.into_iter().map(|(_, _, server)| server).collect()
}

type Age = (Option<k8s_openapi::jiff::Timestamp>, Option<String>, String);

fn age(server: &ComputeServer) -> Age {
    (
        server.meta().creation_timestamp.as_ref().map(|t| t.0),
        server.namespace(),
        server.name_any(),
    )
}

/// Places in each line, handed out in the fair order.
#[derive(Default)]
pub struct Lines(HashMap<String, u32>);

impl Lines {
    /// The next place in `line` (1 = next to be placed).
    pub fn next(&mut self, line: &str) -> u32 {
        let place = self.0.entry(line.to_string()).or_default();
        *place += 1;
        *place
    }
}

/// "1st", "2nd", "3rd", "11th", "22nd".
pub fn ordinal(n: u32) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::tests::server;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn request(name: &str, owner: &str, minute: u32) -> Arc<ComputeServer> {
        let mut s = server(name, "1", "1Gi");
        s.spec.owner = owner.into();
        s.metadata.creation_timestamp = Some(Time(format!("2026-12-01T00:{minute:02}:00Z").parse().unwrap()));
        Arc::new(s)
    }

    fn names(order: &[Arc<ComputeServer>]) -> Vec<String> {
        order.iter().map(|s| s.name_any()).collect()
    }

    #[test]
    fn a_persons_first_request_goes_before_anothers_tenth() {
        let mut pending: Vec<_> = (0..10).map(|i| request(&format!("a{i}"), "alice", i)).collect();
        pending.push(request("b0", "bob", 30));
        let order = fair_order(pending, |_| 0, |_| 0.0);
        assert_eq!(&names(&order)[..3], ["a0", "b0", "a1"]);
        // What a person holds counts as their earlier turns.
        let pending = vec![request("a0", "alice", 0), request("b0", "bob", 30)];
        let order = fair_order(
            pending.clone(),
            |owner| if owner == "alice" { 2 } else { 0 },
            |_| 0.0,
        );
        assert_eq!(names(&order), ["b0", "a0"]);
        // Among equals, who used less lately goes first, however old the other's request.
        let order = fair_order(pending, |_| 0, |owner| if owner == "alice" { 0.5 } else { 0.0 });
        assert_eq!(names(&order), ["b0", "a0"]);
    }

    #[test]
    fn places_in_line_count_per_line() {
        let mut lines = Lines::default();
        assert_eq!(
            (lines.next("gpu"), lines.next("room"), lines.next("gpu")),
            (1, 1, 2)
        );
        let words: Vec<String> = [1, 2, 3, 4, 11, 12, 13, 21, 22, 101, 111].map(ordinal).to_vec();
        assert_eq!(
            words,
            [
                "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "101st", "111th"
            ]
        );
    }
}
