//! Usage and budgets as people read them: the reserved hours of each day (the scheduler's
//! ComputeUsage ledger) for a person or, for admins, everyone, as JSON, CSV and pages with a
//! chart; and the budgets (ComputeQuota) that hold for a person, with what is used of each.

use std::collections::BTreeMap;

use jiff::civil::Date;
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use serde::{Deserialize, Serialize};

use super::oidc::User;
use super::servers::{Problem, internal};
use crate::api::quota::{self, ComputeQuota, ComputeUsage, Hours};

/// Where usage and budgets are read from.
#[derive(Clone)]
pub struct Ledger {
    pub usage: Api<ComputeUsage>,
    pub quotas: Api<ComputeQuota>,
    /// The scheduler's scope (quota::scope_selector).
    pub selector: String,
}

/// One person's hours of one day.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    pub day: String,
    pub user: String,
    pub groups: Vec<String>,
    pub cpu_hours: f64,
    pub memory_gib_hours: f64,
    pub gpu_hours: f64,
}

/// What `GET /api/v1/usage` answers.
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub from: String,
    pub to: String,
    pub rows: Vec<Row>,
    pub total: Totals,
    /// The budgets that hold for the caller, with what is used of each.
    pub budgets: Vec<BudgetLine>,
}

#[derive(Serialize, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Totals {
    pub cpu_hours: f64,
    pub memory_gib_hours: f64,
    pub gpu_hours: f64,
}

/// One budget of one quota, as a person reads it: "GPU-hours this month: 3 of 40".
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BudgetLine {
    pub quota: String,
    /// "you", or the quota's subjects together ("the group students").
    pub whose: String,
    /// "GPU-hours this month", "GPUs".
    pub what: String,
    pub used: String,
    pub limit: String,
    /// When hours are renewed (RFC 3339), for hour budgets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub renews_at: Option<String>,
}

impl BudgetLine {
    /// Whether nothing is left: a new server (of any size, for hours and servers; holding any
    /// of it, for amounts) would wait for this budget.
    pub fn is_full(&self) -> bool {
        match (self.used.parse::<f64>(), self.limit.parse::<f64>()) {
            (Ok(used), Ok(limit)) => used >= limit,
            _ => false,
        }
    }
}

/// The report's query, as the JSON API, the page and its CSV take it.
#[derive(Deserialize, Default)]
pub struct UsageQuery {
    pub from: Option<String>,
    pub to: Option<String>,
    pub user: Option<String>,
    pub group: Option<String>,
    /// The JSON API's answer: `csv`, or JSON (the default). The page does not read it.
    pub format: Option<String>,
}

impl UsageQuery {
    /// What it asks for, today being today's UTC date.
    pub fn asked(&self) -> Result<Asked, Problem> {
        Asked::parse(
            self.from.as_deref(),
            self.to.as_deref(),
            self.user.as_deref(),
            self.group.as_deref(),
            jiff::Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC).date(),
        )
    }
}

/// Which days, and whose: from the query's `from`, `to` (YYYY-MM-DD, UTC, both included;
/// default this month up to today), `user` and `group` (admins only).
pub struct Asked {
    pub from: Date,
    pub to: Date,
    pub user: Option<String>,
    pub group: Option<String>,
}

impl Asked {
    pub fn parse(
        from: Option<&str>,
        to: Option<&str>,
        user: Option<&str>,
        group: Option<&str>,
        today: Date,
    ) -> Result<Asked, Problem> {
        let date = |field: &str, text: Option<&str>, default: Date| match text.map(str::trim) {
            None | Some("") => Ok(default),
            Some(text) => text.parse::<Date>().map_err(|_| {
                Problem::BadRequest(format!(
                    "{field} must be a day written YYYY-MM-DD, such as {today}; not {text:?}"
                ))
            }),
        };
        let first = today.first_of_month();
        let (from, to) = (date("from", from, first)?, date("to", to, today)?);
        if from > to {
            return Err(Problem::BadRequest(format!("from ({from}) is after to ({to})")));
        }
        if (to - from).get_days() > 400 {
            return Err(Problem::BadRequest("ask for at most 400 days at once".into()));
        }
        let some = |s: Option<&str>| s.map(str::trim).filter(|s| !s.is_empty()).map(String::from);
        Ok(Asked {
            from,
            to,
            user: some(user),
            group: some(group),
        })
    }
}

impl Asked {
    /// Its days, `from` to `to`, as YYYY-MM-DD.
    pub fn days(&self) -> Vec<String> {
        self.from
            .series(jiff::ToSpan::day(1))
            .take_while(|day| *day <= self.to)
            .map(|day| day.to_string())
            .collect()
    }
}

/// The rows of `days` within `asked`, for `user`: their own, or, for an admin, everyone's (or
/// one person's or group's). Anyone else's answers Forbidden.
pub fn rows(days: &[ComputeUsage], asked: &Asked, user: &User) -> Result<Vec<Row>, Problem> {
    if !user.admin && (asked.user.as_ref().is_some_and(|u| u != &user.name) || asked.group.is_some()) {
        return Err(Problem::Forbidden(
            "only compute-server admins see others' usage; leave out user and group for your own".into(),
        ));
    }
    let who = match (&asked.user, user.admin) {
        (Some(one), _) => Some(one.as_str()),
        (None, true) => None,
        (None, false) => Some(user.name.as_str()),
    };
    let mut rows = Vec::new();
    for usage in days {
        let Some(day) = quota::day_of(&usage.name_any()) else {
            continue;
        };
        let day = day.to_zoned(jiff::tz::TimeZone::UTC).date();
        if day < asked.from || day > asked.to {
            continue;
        }
        for owner in &usage.spec.owners {
            if who.is_some_and(|w| w != owner.owner)
                || asked.group.as_ref().is_some_and(|g| !owner.groups.contains(g))
            {
                continue;
            }
            rows.push(Row {
                day: day.to_string(),
                user: owner.owner.clone(),
                groups: owner.groups.clone(),
                cpu_hours: quota::round_hours(owner.hours.cpu_hours),
                memory_gib_hours: quota::round_hours(owner.hours.memory_gib_hours),
                gpu_hours: quota::round_hours(owner.hours.gpu_hours),
            });
        }
    }
    rows.sort_by(|a, b| (&a.day, &a.user).cmp(&(&b.day, &b.user)));
    Ok(rows)
}

pub fn totals(rows: &[Row]) -> Totals {
    let mut hours = Hours::default();
    for row in rows {
        hours += Hours {
            cpu_hours: row.cpu_hours,
            memory_gib_hours: row.memory_gib_hours,
            gpu_hours: row.gpu_hours,
        };
    }
    Totals {
        cpu_hours: quota::round_hours(hours.cpu_hours),
        memory_gib_hours: quota::round_hours(hours.memory_gib_hours),
        gpu_hours: quota::round_hours(hours.gpu_hours),
    }
}

/// The budgets of `quotas` that hold for `user`, with what the scheduler last counted.
pub fn budgets(quotas: &[ComputeQuota], user: &User) -> Vec<BudgetLine> {
    let mut lines = Vec::new();
    for q in quotas {
        if !q.spec.covers(&user.name, &user.groups) {
            continue;
        }
        let status = q.status.clone().unwrap_or_default();
        let mine = status
            .users
            .iter()
            .find(|u| u.user == user.name)
            .map(|u| u.usage.clone());
        let renews = status.renews_at.as_ref().map(|t| t.0.to_string());
        let period = q.spec.period.this();
        let who = match &q.spec.subjects[..] {
            [one] if one.group.is_some() => one.describe(),
            _ => format!("quota {}", q.name_any()),
        };
        for (whose, budget, used) in [
            ("you".to_string(), &q.spec.per_user, mine.unwrap_or_default()),
            (who, &q.spec.total, status.total.clone().unwrap_or_default()),
        ] {
            let mut add = |what: String, used: String, limit: String, hours: bool| {
                lines.push(BudgetLine {
                    quota: q.name_any(),
                    whose: whose.clone(),
                    what,
                    used,
                    limit,
                    renews_at: if hours { renews.clone() } else { None },
                })
            };
            if let Some(limit) = budget.gpu_hours {
                add(
                    format!("GPU-hours {period}"),
                    quota::hours(used.gpu_hours),
                    limit.to_string(),
                    true,
                );
            }
            if let Some(limit) = budget.cpu_hours {
                add(
                    format!("CPU-hours {period}"),
                    quota::hours(used.cpu_hours),
                    limit.to_string(),
                    true,
                );
            }
            if let Some(limit) = budget.gpus {
                add("GPUs".into(), used.gpus.to_string(), limit.to_string(), false);
            }
            if let Some(limit) = &budget.cpu {
                let cores = crate::api::size::node_nano_cpus(&used.cpu).map(crate::api::size::cores);
                add(
                    "CPUs".into(),
                    cores.unwrap_or(used.cpu.0.clone()),
                    limit.0.clone(),
                    false,
                );
            }
            if let Some(limit) = &budget.memory {
                add("memory".into(), used.memory.0.clone(), limit.0.clone(), false);
            }
            if let Some(limit) = budget.servers {
                add(
                    "servers".into(),
                    used.servers.to_string(),
                    limit.to_string(),
                    false,
                );
            }
        }
    }
    lines
}

impl Ledger {
    pub async fn days(&self) -> Result<Vec<ComputeUsage>, Problem> {
        let list = self
            .usage
            .list(&ListParams::default().labels(&self.selector))
            .await
            .map_err(|e| internal("list the usage ledger", e))?;
        Ok(list.items)
    }

    pub async fn quotas(&self) -> Result<Vec<ComputeQuota>, Problem> {
        let list = self
            .quotas
            .list(&ListParams::default().labels(&self.selector))
            .await
            .map_err(|e| internal("list the quotas", e))?;
        Ok(list.items)
    }

    /// The report of `asked` for `user`.
    pub async fn report(&self, asked: &Asked, user: &User) -> Result<Report, Problem> {
        let rows = rows(&self.days().await?, asked, user)?;
        Ok(Report {
            from: asked.from.to_string(),
            to: asked.to.to_string(),
            total: totals(&rows),
            budgets: budgets(&self.quotas().await?, user),
            rows,
        })
    }
}

/// The rows as CSV: day, user, groups (separated by spaces), then the hours.
pub fn csv(rows: &[Row]) -> Result<String, Problem> {
    let mut out = csv::Writer::from_writer(Vec::new());
    let fail = |e: csv::Error| internal("write CSV", e);
    out.write_record([
        "day",
        "user",
        "groups",
        "cpu_hours",
        "memory_gib_hours",
        "gpu_hours",
    ])
    .map_err(fail)?;
    for row in rows {
        out.write_record([
            row.day.clone(),
            safe(&row.user),
            safe(&row.groups.join(" ")),
            row.cpu_hours.to_string(),
            row.memory_gib_hours.to_string(),
            row.gpu_hours.to_string(),
        ])
        .map_err(fail)?;
    }
    let bytes = out
        .into_inner()
        .map_err(|e| internal("write CSV", e.into_error()))?;
    String::from_utf8(bytes).map_err(|e| internal("write CSV", e))
}

/// The report's rows as a CSV download, `usage-FROM-TO.csv`.
pub fn csv_download(report: &Report) -> Result<axum::response::Response, Problem> {
    use axum::http::header;
    use axum::response::IntoResponse;
    let disposition = format!("attachment; filename=\"usage-{}-{}.csv\"", report.from, report.to);
    let headers = [
        (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
        (header::CONTENT_DISPOSITION, disposition),
    ];
    Ok((headers, csv(&report.rows)?).into_response())
}

/// A cell a spreadsheet will not read as a formula (OWASP's advice for CSV injection).
fn safe(text: &str) -> String {
    match text.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{text}"),
        _ => text.to_string(),
    }
}

/// Per group (or per person, for a person's own page) and day: the hours of `pick`.
pub fn series(
    rows: &[Row],
    by_group: bool,
    pick: fn(&Row) -> f64,
) -> BTreeMap<String, BTreeMap<String, f64>> {
    let mut out: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    for row in rows {
        let keys: Vec<String> = match (by_group, row.groups.is_empty()) {
            (true, false) => row.groups.clone(),
            (true, true) => vec!["(no group)".into()],
            (false, _) => vec![row.user.clone()],
        };
        for key in keys {
            *out.entry(key).or_default().entry(row.day.clone()).or_default() += pick(row);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, admin: bool) -> User {
        User {
            name: name.into(),
            groups: vec!["students".into()],
            admin,
            expires: 0,
        }
    }

    fn day(name: &str, yaml_owners: &str) -> ComputeUsage {
        serde_yaml::from_str(&format!(
            "{{metadata: {{name: '{name}'}}, spec: {{countedUntil: '2026-12-04T10:00:00Z', owners: {yaml_owners}}}}}"
        ))
        .unwrap()
    }

    fn ledger() -> Vec<ComputeUsage> {
        vec![
            day(
                "2026-12-03",
                "[{owner: alice, groups: [students], cpuHours: 12, memoryGibHours: 24, gpuHours: 3}, \
                  {owner: bob, groups: [students], cpuHours: 1, memoryGibHours: 1, gpuHours: 0}]",
            ),
            day(
                "2026-11-30",
                "[{owner: alice, groups: [students], cpuHours: 5, memoryGibHours: 5, gpuHours: 1}]",
            ),
        ]
    }

    fn asked(user: Option<&str>) -> Asked {
        let today: Date = "2026-12-04".parse().unwrap();
        Asked::parse(None, None, user, None, today).unwrap()
    }

    #[test]
    fn a_person_sees_their_own_days_of_this_month() {
        let rows = rows(&ledger(), &asked(None), &user("alice", false)).unwrap();
        assert_eq!(rows.len(), 1, "November is not this month; bob's are not hers");
        assert_eq!(
            (rows[0].day.as_str(), rows[0].cpu_hours, rows[0].gpu_hours),
            ("2026-12-03", 12.0, 3.0)
        );
        let refused = super::rows(&ledger(), &asked(Some("bob")), &user("alice", false));
        assert!(matches!(refused, Err(Problem::Forbidden(_))));
        let all = super::rows(&ledger(), &asked(None), &user("ops", true)).unwrap();
        assert_eq!(all.len(), 2, "an admin sees everyone");
        assert_eq!(totals(&all).cpu_hours, 13.0);
    }

    #[test]
    fn days_are_checked_and_explained() {
        let today: Date = "2026-12-04".parse().unwrap();
        let bad = Asked::parse(Some("yesterday"), None, None, None, today)
            .err()
            .unwrap();
        assert_eq!(
            bad.message(),
            "from must be a day written YYYY-MM-DD, such as 2026-12-04; not \"yesterday\""
        );
        let backwards = Asked::parse(Some("2026-12-05"), Some("2026-12-01"), None, None, today)
            .err()
            .unwrap();
        assert!(backwards.message().contains("after"), "{}", backwards.message());
        let range = Asked::parse(Some("2026-11-01"), Some("2026-11-30"), None, None, today).unwrap();
        let rows = rows(&ledger(), &range, &user("alice", false)).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].day, "2026-11-30");
    }

    #[test]
    fn the_days_asked_for_are_each_day_from_the_first_to_the_last() {
        let today: Date = "2026-12-04".parse().unwrap();
        let asked = Asked::parse(Some("2026-11-29"), Some("2026-12-02"), None, None, today).unwrap();
        assert_eq!(
            asked.days(),
            ["2026-11-29", "2026-11-30", "2026-12-01", "2026-12-02"]
        );
        let one = Asked::parse(Some("2026-12-04"), None, None, None, today).unwrap();
        assert_eq!(one.days(), ["2026-12-04"]);
    }

    #[test]
    fn csv_has_a_header_and_cells_a_spreadsheet_does_not_run() {
        let mut rows = rows(&ledger(), &asked(None), &user("ops", true)).unwrap();
        rows[0].user = "=HYPERLINK(\"x\")".into();
        let text = csv(&rows).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "day,user,groups,cpu_hours,memory_gib_hours,gpu_hours");
        assert_eq!(lines[1], "2026-12-03,\"'=HYPERLINK(\"\"x\"\")\",students,12,24,3");
    }

    #[test]
    fn budgets_that_hold_for_a_person_read_as_used_of_allowed() {
        let quota: ComputeQuota = serde_yaml::from_str(
            "{metadata: {name: students}, spec: {subjects: [{group: students}], perUser: {gpuHours: 40}, total: {gpus: 8}}, \
             status: {renewsAt: '2027-01-01T00:00:00Z', total: {cpu: '2', memory: 2Gi, gpus: 5, servers: 3, cpuHours: 9, gpuHours: 7}, \
                      users: [{user: alice, cpu: '1', memory: 1Gi, gpus: 1, servers: 1, cpuHours: 6, gpuHours: 3}]}}",
        )
        .unwrap();
        let lines = budgets(std::slice::from_ref(&quota), &user("alice", false));
        let text: Vec<String> = lines
            .iter()
            .map(|l| format!("{}: {} {} of {}", l.whose, l.what, l.used, l.limit))
            .collect();
        assert_eq!(
            text,
            [
                "you: GPU-hours this month 3 of 40",
                "the group students: GPUs 5 of 8"
            ]
        );
        let mut staff = user("carol", false);
        staff.groups = vec!["staff".into()];
        assert!(budgets(&[quota], &staff).is_empty());
    }
}
