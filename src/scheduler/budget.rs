//! Budgets (ComputeQuota) as the scheduler counts them during a pass: what each person and each
//! quota's subjects hold, what they used this period, and whether one more server fits. Pure:
//! the pass feeds it the servers it counts as placed, and asks before each placement, so the
//! placements of one pass (and the ones the cache does not show yet) account for each other.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{Timestamp, tz::TimeZone};
use kube::ResourceExt;

use super::usage::Running;
use crate::api::quota::{
    self, ComputeQuota, ComputeQuotaStatus, ComputeUsage, Hours, Limits, Usage, UserUsage,
};
use crate::api::size::{self, Request};

/// What a person or a quota's subjects hold now.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Held {
    pub request: Request,
    pub servers: i64,
}

impl Held {
    fn add(&mut self, request: &Request) {
        self.request += *request;
        self.servers += 1;
    }
}

/// Why a server waits for a budget: the line it waits in, and what a person reads.
#[derive(Clone, Debug, PartialEq)]
pub struct Wait {
    /// Servers waiting for the same budget share a line ("quota students alice").
    pub line: String,
    /// Whose budget, for "3rd in line for ...": "alice's budget", "the budget of the group students".
    pub whose: String,
    pub reason: String,
}

struct Quota {
    name: String,
    spec: quota::ComputeQuotaSpec,
    per_user: Limits,
    total: Limits,
    renews: Timestamp,
    start: Timestamp,
    /// What the subjects together hold now.
    held: Held,
    /// Hours used this period: by the subjects together, and by each person among them.
    hours: Hours,
    hours_by_owner: BTreeMap<String, Hours>,
    /// What each person among the subjects holds now.
    held_by: BTreeMap<String, Held>,
}

/// Each person's CPU- plus GPU-hours in the ledger's days since `since`: what the fair queue
/// orders equals by.
pub fn used_since(ledger: &[Arc<ComputeUsage>], since: Timestamp) -> HashMap<String, f64> {
    let mut used = HashMap::new();
    for day in ledger {
        if quota::day_of(&day.name_any()).is_some_and(|d| d >= since) {
            for row in &day.spec.owners {
                *used.entry(row.owner.clone()).or_default() += row.hours.cpu_hours + row.hours.gpu_hours;
            }
        }
    }
    used
}

/// Every quota's count during one pass.
pub struct Budgets {
    quotas: Vec<Quota>,
    /// What each person holds, over all their servers.
    held: HashMap<String, Held>,
}

impl Budgets {
    /// The quotas as they stand at `now`, with the hours of the days in `ledger`.
    pub fn new(quotas: &[Arc<ComputeQuota>], ledger: &[Arc<ComputeUsage>], now: Timestamp) -> Budgets {
        let mut list: Vec<Quota> = quotas
            .iter()
            .map(|q| {
                let (start, renews) = q.spec.period.bounds(now);
                let mut quota = Quota {
                    name: q.name_any(),
                    spec: q.spec.clone(),
                    per_user: q.spec.per_user.limits(),
                    total: q.spec.total.limits(),
                    renews,
                    start,
                    held: Held::default(),
                    hours: Hours::default(),
                    hours_by_owner: BTreeMap::new(),
                    held_by: BTreeMap::new(),
                };
                for day in ledger {
                    let Some(begins) = quota::day_of(&day.name_any()) else {
                        continue;
                    };
                    if begins < start || begins >= renews {
                        continue;
                    }
                    for row in &day.spec.owners {
                        if quota.spec.covers(&row.owner, &row.groups) {
                            quota.hours += row.hours;
                            *quota.hours_by_owner.entry(row.owner.clone()).or_default() += row.hours;
                        }
                    }
                }
                quota
            })
            .collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        Budgets {
            quotas: list,
            held: HashMap::new(),
        }
    }

    /// Counts a placed server of `owner`, in `groups`.
    pub fn add(&mut self, owner: &str, groups: &[String], request: &Request) {
        self.held.entry(owner.to_string()).or_default().add(request);
        for quota in self.quotas.iter_mut().filter(|q| q.spec.covers(owner, groups)) {
            quota.held.add(request);
            quota.held_by.entry(owner.to_string()).or_default().add(request);
        }
    }

    /// How many servers `owner` holds (the fair line counts them as their earlier turns).
    pub fn servers_of(&self, owner: &str) -> usize {
        self.held.get(owner).map_or(0, |held| held.servers as usize)
    }

    /// Whether one more server of `owner` asking for `request` stays within every budget; the
    /// first budget it would go over, when not. Per person: the most generous of the quotas that
    /// set the resource; the totals: every quota's.
    pub fn check(&self, owner: &str, groups: &[String], request: &Request) -> Result<(), Wait> {
        let covering: Vec<&Quota> = self
            .quotas
            .iter()
            .filter(|q| q.spec.covers(owner, groups))
            .collect();
        if covering.is_empty() {
            return Ok(());
        }
        let held = self.held.get(owner).copied().unwrap_or_default();
        let mine = |q: &Quota| q.hours_by_owner.get(owner).copied().unwrap_or_default();
        // Per person: each amount in turn, against the quota that allows the most of it.
        for amount in Amount::ALL {
            let best = covering
                .iter()
                .filter_map(|q| amount.limit(&q.per_user).map(|limit| (limit, *q)))
                .max_by(|a, b| a.0.total_cmp(&b.0));
            if let Some((limit, q)) = best
                && !amount.fits(&held, &mine(q), request, limit)
            {
                return Err(Wait {
                    line: format!("quota {} {owner}", q.name),
                    whose: format!("{owner}'s budget"),
                    reason: amount.over(owner, &held, &mine(q), request, limit, q),
                });
            }
        }
        for q in &covering {
            for amount in Amount::ALL {
                if let Some(limit) = amount.limit(&q.total)
                    && !amount.fits(&q.held, &q.hours, request, limit)
                {
                    let who = q.who();
                    return Err(Wait {
                        line: format!("quota {}", q.name),
                        whose: format!("the budget of {who}"),
                        reason: amount.over(&who, &q.held, &q.hours, request, limit, q),
                    });
                }
            }
        }
        Ok(())
    }

    /// When `running` servers use up the hours of a
    /// quota that stops servers then, counted from `counted_until` (the ledger's, so the
    /// estimate holds still between counts) at what runs now; by uid, with the reason. A server
    /// counts for GPU-hours if it holds GPUs, and for CPU-hours always.
    pub fn run_out(
        &self,
        running: &[Running],
        counted_until: Timestamp,
    ) -> HashMap<String, (Timestamp, String)> {
        let mut out: HashMap<String, (Timestamp, String)> = HashMap::new();
        for q in self
            .quotas
            .iter()
            .filter(|q| q.spec.when_spent == quota::WhenSpent::Stop)
        {
            for gpu in [true, false] {
                let amount = if gpu { Amount::GpuHours } else { Amount::CpuHours };
                let rate = |r: &Request| {
                    if gpu {
                        r.gpus as f64
                    } else {
                        r.nano_cpus as f64 / 1e9
                    }
                };
                let covered: Vec<&Running> = running
                    .iter()
                    .filter(|s| q.spec.covers(&s.owner, &s.groups) && rate(&s.request) > 0.0)
                    .collect();
                // The subjects together.
                if let Some(limit) = amount.limit(&q.total) {
                    let used = if gpu { q.hours.gpu_hours } else { q.hours.cpu_hours };
                    let per_hour: f64 = covered.iter().map(|s| rate(&s.request)).sum();
                    let who = q.who();
                    let at = ends(counted_until, limit - used, per_hour);
                    for s in &covered {
                        earliest(&mut out, &s.uid, at, || spent(&who, amount, limit, q));
                    }
                }
                // Each person, by the most generous quota that sets it (this one, if it is).
                if let Some(limit) = amount.limit(&q.per_user) {
                    let mut owners: BTreeMap<&str, f64> = BTreeMap::new();
                    for s in &covered {
                        *owners.entry(s.owner.as_str()).or_default() += rate(&s.request);
                    }
                    for (owner, per_hour) in owners {
                        let groups = &covered
                            .iter()
                            .find(|s| s.owner == owner)
                            .map(|s| s.groups.clone())
                            .unwrap_or_default();
                        let best = self
                            .quotas
                            .iter()
                            .filter(|o| o.spec.covers(owner, groups))
                            .filter_map(|o| amount.limit(&o.per_user))
                            .fold(f64::MIN, f64::max);
                        if best > limit {
                            continue;
                        }
                        let mine = q.hours_by_owner.get(owner).copied().unwrap_or_default();
                        let used = if gpu { mine.gpu_hours } else { mine.cpu_hours };
                        let at = ends(counted_until, limit - used, per_hour);
                        for s in covered.iter().filter(|s| s.owner == owner) {
                            earliest(&mut out, &s.uid, at, || spent(owner, amount, limit, q));
                        }
                    }
                }
            }
        }
        out
    }

    /// Each quota's status now, by name: what the subjects hold and used, together and per person.
    pub fn statuses(&self) -> Vec<(String, ComputeQuotaStatus)> {
        self.quotas
            .iter()
            .map(|q| {
                let mut users: BTreeMap<&str, Usage> = BTreeMap::new();
                for (owner, hours) in &q.hours_by_owner {
                    let entry = users.entry(owner).or_insert_with(empty);
                    entry.cpu_hours = quota::round_hours(hours.cpu_hours);
                    entry.gpu_hours = quota::round_hours(hours.gpu_hours);
                }
                for (owner, held) in &q.held_by {
                    set_held(users.entry(owner).or_insert_with(empty), held);
                }
                let mut total = empty();
                set_held(&mut total, &q.held);
                total.cpu_hours = quota::round_hours(q.hours.cpu_hours);
                total.gpu_hours = quota::round_hours(q.hours.gpu_hours);
                let of = |used: String, limit: Option<String>| match limit {
                    Some(limit) => format!("{used}/{limit}"),
                    None => used,
                };
                let summary = quota::Summary {
                    cpu: of(
                        size::cores(q.held.request.nano_cpus),
                        q.total.nano_cpus.map(size::cores),
                    ),
                    gpus: of(
                        q.held.request.gpus.to_string(),
                        q.total.gpus.map(|g| g.to_string()),
                    ),
                    gpu_hours: of(
                        quota::hours(q.hours.gpu_hours),
                        q.total.gpu_hours.map(quota::hours),
                    ),
                };
                let status = ComputeQuotaStatus {
                    period_start: Some(Time(q.start)),
                    renews_at: Some(Time(q.renews)),
                    summary: Some(summary),
                    total: Some(total),
                    users: users
                        .into_iter()
                        .map(|(user, usage)| UserUsage {
                            user: user.to_string(),
                            usage,
                        })
                        .collect(),
                };
                (q.name.clone(), status)
            })
            .collect()
    }
}

impl Quota {
    /// Its subjects as a message names them: "the group students", "alice", or "the subjects of
    /// quota staff" when there are several.
    fn who(&self) -> String {
        match &self.spec.subjects[..] {
            [one] => one.describe(),
            _ => format!("the subjects of quota {}", self.name),
        }
    }
}

/// When `left` hours run out at `per_hour`, from `from`, to the minute (so that the estimate
/// does not move with every count); now-ish when none are left.
fn ends(from: Timestamp, left: f64, per_hour: f64) -> Timestamp {
    let seconds = if left <= 0.0 {
        0.0
    } else {
        left / per_hour * 3600.0
    };
    let at = from.as_second().saturating_add(seconds.min(1e10) as i64);
    Timestamp::from_second(at - at.rem_euclid(60)).unwrap_or(from)
}

fn earliest(
    out: &mut HashMap<String, (Timestamp, String)>,
    uid: &str,
    at: Timestamp,
    why: impl Fn() -> String,
) {
    if out.get(uid).is_none_or(|(t, _)| at < *t) {
        out.insert(uid.to_string(), (at, why()));
    }
}

/// "alice's 40 GPU-hours for this month run out (ComputeQuota students); renewed on 1 January 2027".
fn spent(who: &str, amount: Amount, limit: f64, q: &Quota) -> String {
    let kind = if matches!(amount, Amount::GpuHours) {
        "GPU"
    } else {
        "CPU"
    };
    let hours = format!(
        "{} {kind}-hours for {}",
        quota::hours(limit),
        q.spec.period.this()
    );
    let what = if who.starts_with("the ") {
        format!("the {hours} of {who} run out")
    } else {
        format!("{who}'s {hours} run out")
    };
    format!(
        "{what} (ComputeQuota {}); renewed on {}",
        q.name,
        q.renews.to_zoned(TimeZone::UTC).strftime("%-d %B %Y")
    )
}

fn empty() -> Usage {
    Usage {
        cpu: size::cpu_quantity(0),
        memory: size::memory_quantity(0),
        ..Default::default()
    }
}

fn set_held(usage: &mut Usage, held: &Held) {
    usage.cpu = size::cpu_quantity(held.request.nano_cpus);
    usage.memory = size::memory_quantity(held.request.memory_bytes);
    usage.gpus = held.request.gpus;
    usage.servers = held.servers;
}

/// One amount a budget may limit.
#[derive(Clone, Copy)]
enum Amount {
    Servers,
    Gpus,
    Cpu,
    Memory,
    GpuHours,
    CpuHours,
}

impl Amount {
    const ALL: [Amount; 6] = [
        Amount::Servers,
        Amount::Gpus,
        Amount::Cpu,
        Amount::Memory,
        Amount::GpuHours,
        Amount::CpuHours,
    ];

    fn limit(self, limits: &Limits) -> Option<f64> {
        match self {
            Amount::Servers => limits.servers.map(|v| v as f64),
            Amount::Gpus => limits.gpus.map(|v| v as f64),
            Amount::Cpu => limits.nano_cpus.map(|v| v as f64),
            Amount::Memory => limits.memory_bytes.map(|v| v as f64),
            Amount::GpuHours => limits.gpu_hours,
            Amount::CpuHours => limits.cpu_hours,
        }
    }

    /// What is used of this amount, and what one more server adds (hours: nothing up front; a
    /// server whose owner has hours left is placed, and counted while it runs).
    fn used_and_asked(self, held: &Held, hours: &Hours, request: &Request) -> (f64, f64) {
        match self {
            Amount::Servers => (held.servers as f64, 1.0),
            Amount::Gpus => (held.request.gpus as f64, request.gpus as f64),
            Amount::Cpu => (held.request.nano_cpus as f64, request.nano_cpus as f64),
            Amount::Memory => (held.request.memory_bytes as f64, request.memory_bytes as f64),
            Amount::GpuHours => (hours.gpu_hours, if request.gpus > 0 { f64::EPSILON } else { 0.0 }),
            Amount::CpuHours => (hours.cpu_hours, f64::EPSILON),
        }
    }

    fn fits(self, held: &Held, hours: &Hours, request: &Request, limit: f64) -> bool {
        let (used, asked) = self.used_and_asked(held, hours, request);
        match self {
            // Hours: what is used must be below the budget for a server that uses any.
            Amount::GpuHours | Amount::CpuHours => asked == 0.0 || used < limit,
            _ => asked == 0.0 || used + asked <= limit,
        }
    }

    /// "the group students uses 8 of 8 GPUs", "alice has used 40 of 40 GPU-hours this month,
    /// renewed on 1 January".
    fn over(self, who: &str, held: &Held, hours: &Hours, request: &Request, limit: f64, q: &Quota) -> String {
        let (used, _) = self.used_and_asked(held, hours, request);
        let plural = who.starts_with("the subjects ");
        let (uses, has) = if plural { ("use", "have") } else { ("uses", "has") };
        let budget = format!("(ComputeQuota {})", q.name);
        match self {
            Amount::Servers => format!(
                "{who} {uses} {} of {} servers {budget}: stop and archive, or delete, one to make room",
                used as i64, limit as i64
            ),
            Amount::Gpus => format!(
                "{who} {uses} {} of {} GPUs {budget}; this server asks for {} more",
                used as i64, limit as i64, request.gpus
            ),
            Amount::Cpu => format!(
                "{who} {uses} {} of {} CPUs {budget}; this server asks for {} more",
                size::cores(used as i64),
                size::cores(limit as i64),
                size::cores(request.nano_cpus)
            ),
            Amount::Memory => format!(
                "{who} {uses} {} of {} memory {budget}; this server asks for {} more",
                size::memory_quantity(used as i64).0,
                size::memory_quantity(limit as i64).0,
                size::memory_quantity(request.memory_bytes).0
            ),
            Amount::GpuHours | Amount::CpuHours => {
                let kind = if matches!(self, Amount::GpuHours) {
                    "GPU"
                } else {
                    "CPU"
                };
                let renewed = q.renews.to_zoned(TimeZone::UTC);
                format!(
                    "{who} {has} used {} of {} {kind}-hours {} {budget}, renewed on {}",
                    quota::hours(used),
                    quota::hours(limit),
                    q.spec.period.this(),
                    renewed.strftime("%-d %B %Y")
                )
            }
        }
    }
}
