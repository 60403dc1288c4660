//! Fair share: `ComputeQuota` (budgets for Keycloak groups and people) and `ComputeUsage` (the
//! reserved hours of each day, kept in the API server), with the pure rules both follow.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{Timestamp, ToSpan, tz::TimeZone};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::size;

/// Budgets for Keycloak groups and people: what their servers may reserve at once (CPUs, memory,
/// GPUs, servers) and how many CPU- and GPU-hours they may use per period, per person and for
/// all of the subjects together. The scheduler places no server that would go over one; it waits,
/// and its status says which budget it waits for.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "computeserver.io",
    version = "v1alpha1",
    kind = "ComputeQuota",
    status = "ComputeQuotaStatus",
    shortname = "cquota",
    category = "compute",
    derive = "PartialEq",
    doc = "Budgets for Keycloak groups and people: CPUs, memory, GPUs, servers, and CPU- and GPU-hours per period.",
    printcolumn(
        name = "Period",
        type_ = "string",
        json_path = ".spec.period",
        description = "How often the hours are renewed"
    ),
    printcolumn(
        name = "GPUs",
        type_ = "string",
        json_path = ".status.summary.gpus",
        description = "GPUs in use of the total"
    ),
    printcolumn(
        name = "GPU-hours",
        type_ = "string",
        json_path = ".status.summary.gpuHours",
        description = "GPU-hours used this period of the total"
    ),
    printcolumn(
        name = "CPUs",
        type_ = "string",
        json_path = ".status.summary.cpu",
        priority = 1,
        description = "CPUs reserved of the total"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct ComputeQuotaSpec {
    /// Whom it budgets: Keycloak groups ({group: students}) and people ({user: alice}). A person
    /// in several quotas gets, per resource, the most generous per-person budget of those that
    /// set one; every quota's total holds.
    #[schemars(length(min = 1, max = 256))]
    pub subjects: Vec<Subject>,

    /// What each person among the subjects may reserve and use.
    #[serde(default)]
    pub per_user: Budget,

    /// What all of the subjects together may reserve and use.
    #[serde(default)]
    pub total: Budget,

    /// How often the CPU- and GPU-hours are renewed: day (at 00:00 UTC), week (Monday 00:00 UTC)
    /// or month (the 1st, 00:00 UTC).
    #[serde(default)]
    pub period: Period,

    /// What happens to running servers when CPU- or GPU-hours run out: Stop (the default; they
    /// are warned as a lifecycle stop is, then stopped, with their container and data kept) or
    /// KeepRunning (only new servers wait).
    #[serde(default)]
    pub when_spent: WhenSpent,
}

/// What running servers do when their hours run out.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum WhenSpent {
    #[default]
    Stop,
    KeepRunning,
}

/// A Keycloak group or a person (their preferred_username): exactly one of the two.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.user) != has(self.group)").message("each subject names exactly one of user or group"))]
pub struct Subject {
    /// A Keycloak user name (preferred_username).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub user: Option<String>,
    /// A Keycloak group, as in the token's groups claim (without a leading /).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub group: Option<String>,
}

/// Amounts a budget allows; what it leaves out it does not limit.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Budget {
    /// CPU cores reserved at once by servers placed on a node, running or stopped: "8", "500m".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::quantity_schema")]
    #[x_kube(validation = Rule::new("type(self) == int ? self >= 0 : isQuantity(self)").message("cpu must be a quantity such as \"8\" or \"500m\""))]
    pub cpu: Option<Quantity>,
    /// Memory reserved at once: "32Gi".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::quantity_schema")]
    #[x_kube(validation = Rule::new("type(self) == int ? self >= 0 : isQuantity(self)").message("memory must be a quantity such as \"32Gi\""))]
    pub memory: Option<Quantity>,
    /// Whole GPUs reserved at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100000))]
    pub gpus: Option<i32>,
    /// Servers placed at once (running or stopped; an archived server holds nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100000))]
    pub servers: Option<i32>,
    /// CPU-hours per period: a 2-CPU server running for 3 hours uses 6.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100000000))]
    pub cpu_hours: Option<u32>,
    /// GPU-hours per period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100000000))]
    pub gpu_hours: Option<u32>,
}

/// How often hours are renewed.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    Day,
    Week,
    #[default]
    Month,
}

/// What a quota's subjects use now, and this period.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ComputeQuotaStatus {
    /// When the current period began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_start: Option<Time>,
    /// When the hours are renewed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renews_at: Option<Time>,
    /// The subjects together, against spec.total, as "used/total" for kubectl's columns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<Summary>,
    /// The subjects together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<Usage>,
    /// Each person among the subjects with servers placed or hours used this period.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<UserUsage>,
}

/// "used/allowed" per resource, for kubectl's columns ("3/8"; "3" when the total sets none).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub cpu: String,
    pub gpus: String,
    pub gpu_hours: String,
}

/// What is reserved now, and the hours used this period.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    #[schemars(schema_with = "super::quantity_schema")]
    pub cpu: Quantity,
    #[schemars(schema_with = "super::quantity_schema")]
    pub memory: Quantity,
    pub gpus: i64,
    pub servers: i64,
    pub cpu_hours: f64,
    pub gpu_hours: f64,
}

/// One person's use.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct UserUsage {
    pub user: String,
    #[serde(flatten)]
    pub usage: Usage,
}

/// The reserved hours of one UTC day, per person: what quotas count hours from and what
/// `GET /api/v1/usage` reports. Named after the day (2026-12-04); written by the scheduler only.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "computeserver.io",
    version = "v1alpha1",
    kind = "ComputeUsage",
    shortname = "cusage",
    category = "compute",
    derive = "PartialEq",
    doc = "The CPU-, memory- and GPU-hours reserved by running servers on one UTC day, per person.",
    printcolumn(
        name = "Counted Until",
        type_ = "date",
        json_path = ".spec.countedUntil",
        description = "Up to when the day is counted"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ComputeUsageSpec {
    /// Up to when this day is counted.
    pub counted_until: Time,
    /// Per person: their groups and hours.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owners: Vec<OwnerHours>,
}

/// One person's hours of one day, over all their running servers.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct OwnerHours {
    pub owner: String,
    /// The groups of their servers (spec.ownerGroups) that day.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    #[serde(flatten)]
    pub hours: Hours,
}

/// Reserved hours: CPU cores, GiB of memory and GPUs, each times the hours held.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Hours {
    pub cpu_hours: f64,
    pub memory_gib_hours: f64,
    pub gpu_hours: f64,
}

impl std::ops::AddAssign for Hours {
    fn add_assign(&mut self, other: Hours) {
        self.cpu_hours += other.cpu_hours;
        self.memory_gib_hours += other.memory_gib_hours;
        self.gpu_hours += other.gpu_hours;
    }
}

impl Hours {
    /// What `request` reserves over `seconds`.
    pub fn of(request: &size::Request, seconds: f64) -> Hours {
        let hours = seconds / 3600.0;
        Hours {
            cpu_hours: request.nano_cpus as f64 / 1e9 * hours,
            memory_gib_hours: request.memory_bytes as f64 / (1u64 << 30) as f64 * hours,
            gpu_hours: request.gpus as f64 * hours,
        }
    }
}

/// The name of a day's ComputeUsage: "2026-12-04" (UTC); "NS.2026-12-04" for the scheduler that
/// places only namespace NS.
pub fn day_name(at: Timestamp, scope: Option<&str>) -> String {
    let day = at.to_zoned(TimeZone::UTC).date().to_string();
    match scope {
        Some(ns) => format!("{ns}.{day}"),
        None => day,
    }
}

/// The UTC day a ComputeUsage counts, from its name.
pub fn day_of(name: &str) -> Option<Timestamp> {
    let day = name.rsplit('.').next()?;
    let date: k8s_openapi::jiff::civil::Date = day.parse().ok()?;
    date.to_zoned(TimeZone::UTC).ok().map(|z| z.timestamp())
}

/// Label of the quotas and usage of a scheduler that places only one namespace (its
/// `--namespace`): each such scheduler counts its own, and the cluster-wide one those without it.
pub const SCOPE_LABEL: &str = "computeserver.io/namespace";

/// The label selector of the quotas and usage of the scheduler of `scope` (None: cluster-wide).
pub fn scope_selector(scope: Option<&str>) -> String {
    match scope {
        Some(ns) => format!("{SCOPE_LABEL}={ns}"),
        None => format!("!{SCOPE_LABEL}"),
    }
}

/// The start of the UTC day `at` falls in.
pub fn day_start(at: Timestamp) -> Timestamp {
    let zoned = at.to_zoned(TimeZone::UTC);
    zoned.start_of_day().map(|z| z.timestamp()).unwrap_or(at)
}

impl Period {
    /// When the period `at` falls in began, and when it ends (UTC).
    pub fn bounds(self, at: Timestamp) -> (Timestamp, Timestamp) {
        let day = day_start(at).to_zoned(TimeZone::UTC);
        let (start, length) = match self {
            Period::Day => (day, 1.day()),
            Period::Week => {
                let back = i64::from(day.weekday().to_monday_zero_offset());
                (day.checked_sub(back.days()).unwrap_or(day.clone()), 1.week())
            }
            Period::Month => (day.first_of_month().unwrap_or(day.clone()), 1.month()),
        };
        let end = start.checked_add(length).unwrap_or(start.clone());
        (start.timestamp(), end.timestamp())
    }

    /// "this month", "this week", "today".
    pub fn this(self) -> &'static str {
        match self {
            Period::Day => "today",
            Period::Week => "this week",
            Period::Month => "this month",
        }
    }
}

impl Subject {
    /// Whether a server of `owner`, in `groups`, is this subject's.
    pub fn covers(&self, owner: &str, groups: &[String]) -> bool {
        match (&self.user, &self.group) {
            (Some(user), _) => user == owner,
            (None, Some(group)) => groups.iter().any(|g| g == group),
            (None, None) => false,
        }
    }

    /// "group students", "alice".
    pub fn describe(&self) -> String {
        match (&self.user, &self.group) {
            (Some(user), _) => user.clone(),
            (None, Some(group)) => format!("the group {group}"),
            (None, None) => "nobody".into(),
        }
    }
}

impl ComputeQuotaSpec {
    /// Whether the quota holds for a server of `owner` in `groups`.
    pub fn covers(&self, owner: &str, groups: &[String]) -> bool {
        self.subjects.iter().any(|s| s.covers(owner, groups))
    }
}

/// A budget in the units the scheduler counts in; None: not limited.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Limits {
    pub nano_cpus: Option<i64>,
    pub memory_bytes: Option<i64>,
    pub gpus: Option<i64>,
    pub servers: Option<i64>,
    pub cpu_hours: Option<f64>,
    pub gpu_hours: Option<f64>,
}

impl Budget {
    /// In the scheduler's units. An unreadable amount (the CRD's rules let none through) counts as 0:
    /// a budget the API server stored is never read as "no limit".
    pub fn limits(&self) -> Limits {
        Limits {
            nano_cpus: self.cpu.as_ref().map(|q| size::node_nano_cpus(q).unwrap_or(0)),
            memory_bytes: self
                .memory
                .as_ref()
                .map(|q| size::node_memory_bytes(q).unwrap_or(0)),
            gpus: self.gpus.map(i64::from),
            servers: self.servers.map(i64::from),
            cpu_hours: self.cpu_hours.map(f64::from),
            gpu_hours: self.gpu_hours.map(f64::from),
        }
    }

    pub fn is_empty(&self) -> bool {
        self == &Budget::default()
    }
}

/// Per resource, the most generous of the budgets that set it.
pub fn most_generous<'a>(budgets: impl IntoIterator<Item = &'a Limits>) -> Limits {
    fn max<T: PartialOrd + Copy>(a: Option<T>, b: Option<T>) -> Option<T> {
        match (a, b) {
            (Some(a), Some(b)) => Some(if b > a { b } else { a }),
            (a, b) => a.or(b),
        }
    }
    budgets.into_iter().fold(Limits::default(), |acc, l| Limits {
        nano_cpus: max(acc.nano_cpus, l.nano_cpus),
        memory_bytes: max(acc.memory_bytes, l.memory_bytes),
        gpus: max(acc.gpus, l.gpus),
        servers: max(acc.servers, l.servers),
        cpu_hours: max(acc.cpu_hours, l.cpu_hours),
        gpu_hours: max(acc.gpu_hours, l.gpu_hours),
    })
}

/// Hours to the hundredth, as status, reports and people read them.
pub fn round_hours(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

/// Hours for people: "12", "0.5", "3.25".
pub fn hours(value: f64) -> String {
    let text = format!("{:.2}", round_hours(value));
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn periods_begin_and_end_in_utc() {
        let now = at("2026-12-03T15:04:05Z"); // a Thursday
        assert_eq!(
            Period::Day.bounds(now),
            (at("2026-12-03T00:00:00Z"), at("2026-12-04T00:00:00Z"))
        );
        assert_eq!(
            Period::Week.bounds(now),
            (at("2026-11-30T00:00:00Z"), at("2026-12-07T00:00:00Z"))
        );
        assert_eq!(
            Period::Month.bounds(now),
            (at("2026-12-01T00:00:00Z"), at("2027-01-01T00:00:00Z"))
        );
        assert_eq!(day_name(now, None), "2026-12-03");
        assert_eq!(day_name(now, Some("lab")), "lab.2026-12-03");
        assert_eq!(day_of("lab.2026-12-03"), Some(at("2026-12-03T00:00:00Z")));
        assert_eq!(day_of("2026-12-03"), Some(at("2026-12-03T00:00:00Z")));
        assert_eq!(day_of("yesterday"), None);
    }

    #[test]
    fn subjects_cover_their_user_or_their_groups_members() {
        let students = Subject {
            group: Some("students".into()),
            ..Default::default()
        };
        let alice = Subject {
            user: Some("alice".into()),
            ..Default::default()
        };
        assert!(students.covers("bob", &["staff".into(), "students".into()]));
        assert!(
            !students.covers("students", &[]),
            "a user named like the group is not in it"
        );
        assert!(alice.covers("alice", &[]));
        assert!(!alice.covers("bob", &["alice".into()]));
    }

    #[test]
    fn the_most_generous_budget_wins_per_resource_and_unset_does_not_lift_one() {
        let one = Limits {
            gpus: Some(1),
            nano_cpus: Some(8_000_000_000),
            ..Default::default()
        };
        let two = Limits {
            gpus: Some(2),
            ..Default::default()
        };
        let both = most_generous([&one, &two]);
        assert_eq!(both.gpus, Some(2));
        assert_eq!(both.nano_cpus, Some(8_000_000_000));
        assert_eq!(both.servers, None);
    }

    #[test]
    fn a_budget_reads_in_the_schedulers_units() {
        let budget: Budget =
            serde_yaml::from_str("{cpu: 1500m, memory: 2Gi, gpus: 1, gpuHours: 40}").unwrap();
        let limits = budget.limits();
        assert_eq!(limits.nano_cpus, Some(1_500_000_000));
        assert_eq!(limits.memory_bytes, Some(2 << 30));
        assert_eq!(limits.gpu_hours, Some(40.0));
        assert_eq!(hours(12.0), "12");
        assert_eq!(hours(0.504), "0.5");
        assert_eq!(hours(3.256), "3.26");
    }
}
