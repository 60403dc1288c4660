//! The usage page: a person's budgets and hours; for admins, everyone's, with a chart per group
//! per day. The chart is SVG drawn here (no script), so it shows with the page's strict CSP.

use std::collections::BTreeMap;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{Markup, html};

use super::AppState;
use super::oidc::User;
use super::pages::{page_with, problem_page};
use super::servers::Problem;
use super::session::SignedIn;
use super::usage::{self, Asked, Report, Row, UsageQuery};
use crate::api::quota;

pub async fn usage_page(
    State(state): State<AppState>,
    SignedIn(session): SignedIn,
    Query(query): Query<UsageQuery>,
) -> Response {
    let user = &session.user;
    let (asked, report) = match asked_and_report(&state, &query, user).await {
        Ok(both) => both,
        Err(problem) => return problem_page(&session, problem),
    };
    let days = asked.days();
    let by_group = user.admin && asked.user.is_none();
    let who = if by_group { "group" } else { "person" };
    let gpu = usage::series(&report.rows, by_group, |r: &Row| r.gpu_hours);
    let cpu = usage::series(&report.rows, by_group, |r: &Row| r.cpu_hours);
    let title = if user.admin { "Usage" } else { "My usage" };
    let body = html! {
        div.heading {
            h1 { (title) }
            form.filter method="get" action="/usage" {
                label for="from" { "From" }
                input #from type="date" name="from" value=(asked.from);
                label for="to" { "to" }
                input #to type="date" name="to" value=(asked.to);
                @if user.admin {
                    label for="group" { "Group" }
                    input #group type="text" name="group" value=(asked.group.clone().unwrap_or_default()) placeholder="all";
                }
                button.button.secondary type="submit" { "Show" }
                a.button.secondary href={ "/usage/csv?from=" (asked.from) "&to=" (asked.to) @if let Some(g) = &asked.group { "&group=" (g) } } download { "CSV" }
            }
        }
        section.card.usage-summary {
            h2 { (asked.from) " to " (asked.to) }
            p.totals {
                strong { (quota::hours(report.total.cpu_hours)) } " CPU-hours · "
                strong { (quota::hours(report.total.gpu_hours)) } " GPU-hours · "
                (quota::hours(report.total.memory_gib_hours)) " GiB-hours of memory"
                @if !user.admin || asked.user.is_some() { "" } @else { " (everyone)" }
            }
            @if report.budgets.is_empty() {
                p.muted { "No budget (ComputeQuota) holds for you." }
            } @else {
                ul.budgets {
                    @for line in &report.budgets {
                        li {
                            span.whose { (line.whose) } ": " (line.what) " "
                            strong { (line.used) " of " (line.limit) }
                            @if let Some(renews) = &line.renews_at { span.muted { " · renewed " (renews_text(renews)) } }
                            span.muted { " (" (line.quota) ")" }
                        }
                    }
                }
            }
        }
        section.card {
            h2 { "GPU-hours per " (who) " per day" }
            (chart("GPU-hours", &days, &gpu))
            h2 { "CPU-hours per " (who) " per day" }
            (chart("CPU-hours", &days, &cpu))
        }
        @if !report.rows.is_empty() {
            table.usage {
                thead { tr { th { "Day" } th { "Person" } th { "Groups" } th { "CPU-hours" } th { "GiB-hours" } th { "GPU-hours" } } }
                tbody {
                    @for row in report.rows.iter().rev() {
                        tr { td { (row.day) } td { (row.user) } td { (row.groups.join(", ")) } td { (row.cpu_hours) } td { (row.memory_gib_hours) } td { (row.gpu_hours) } }
                    }
                }
            }
        }
    };
    page_with(StatusCode::OK, title, Some(&session), html! {}, body)
}

/// The page's days as CSV, for the signed-in person (as `GET /api/v1/usage?format=csv`).
pub async fn usage_csv(
    State(state): State<AppState>,
    SignedIn(session): SignedIn,
    Query(query): Query<UsageQuery>,
) -> Response {
    let download = match asked_and_report(&state, &query, &session.user).await {
        Ok((_, report)) => usage::csv_download(&report),
        Err(problem) => Err(problem),
    };
    download.unwrap_or_else(|problem| problem_page(&session, problem))
}

/// What `query` asks for, and the report of it for `user`.
async fn asked_and_report(
    state: &AppState,
    query: &UsageQuery,
    user: &User,
) -> Result<(Asked, Report), Problem> {
    let asked = query.asked()?;
    let report = state.ledger.report(&asked, user).await?;
    Ok((asked, report))
}

/// "on 1 January 2027 (UTC)".
fn renews_text(rfc3339: &str) -> String {
    match rfc3339.parse::<jiff::Timestamp>() {
        Ok(at) => format!(
            "on {} (UTC)",
            at.to_zoned(jiff::tz::TimeZone::UTC).strftime("%-d %B %Y")
        ),
        Err(_) => rfc3339.to_string(),
    }
}

const COLOURS: [&str; 8] = [
    "#2f5bea", "#117a43", "#a15c00", "#c4321c", "#6b3fa0", "#0f7b8a", "#8a6d0f", "#667085",
];

/// A bar chart: one group of bars per day, one bar per series (a group or a person), with a
/// legend, the largest value on the axis, and each bar's figure in its tooltip.
pub fn chart(unit: &str, days: &[String], series: &BTreeMap<String, BTreeMap<String, f64>>) -> Markup {
    const WIDTH: f64 = 760.0;
    const HEIGHT: f64 = 180.0;
    const LEFT: f64 = 48.0;
    const BOTTOM: f64 = 22.0;
    let max = series
        .values()
        .flat_map(|s| s.values().copied())
        .fold(0.0f64, f64::max);
    let plot = WIDTH - LEFT - 8.0;
    let slot = plot / days.len().max(1) as f64;
    let count = series.len().max(1) as f64;
    let bar = (slot * 0.8 / count).max(1.0);
    let label_every = (days.len() / 10).max(1);
    let name = format!("{unit} per day");
    html! {
        @if series.is_empty() {
            p.muted { "No " (unit) " counted in these days." }
        } @else {
            figure.chart {
                svg viewBox={ "0 0 " (WIDTH) " " (HEIGHT + BOTTOM) } role="img" aria-label=(name) width="100%" {
                    line x1=(LEFT) y1="4" x2=(LEFT) y2=(HEIGHT) stroke="#c8ccd4" {}
                    line x1=(LEFT) y1=(HEIGHT) x2=(WIDTH - 8.0) y2=(HEIGHT) stroke="#c8ccd4" {}
                    text x=(LEFT - 6.0) y="12" text-anchor="end" font-size="11" fill="#667085" { (quota::hours(max)) }
                    text x=(LEFT - 6.0) y=(HEIGHT) text-anchor="end" font-size="11" fill="#667085" { "0" }
                    @for (d, day) in days.iter().enumerate() {
                        @let x0 = LEFT + d as f64 * slot + slot * 0.1;
                        @for (s, (key, values)) in series.iter().enumerate() {
                            @let value = values.get(day).copied().unwrap_or(0.0);
                            @if value > 0.0 {
                                @let h = if max > 0.0 { (value / max) * (HEIGHT - 8.0) } else { 0.0 };
                                rect.bar x=(format!("{:.1}", x0 + s as f64 * bar)) y=(format!("{:.1}", HEIGHT - h)) width=(format!("{:.1}", bar)) height=(format!("{:.1}", h)) fill=(COLOURS[s % COLOURS.len()]) {
                                    title { (key) ", " (day) ": " (quota::hours(value)) " " (unit) }
                                }
                            }
                        }
                        @if d % label_every == 0 {
                            text x=(format!("{:.1}", x0)) y=(HEIGHT + 15.0) font-size="11" fill="#667085" { (day.get(5..).unwrap_or(day)) }
                        }
                    }
                }
                figcaption.legend {
                    @for (s, key) in series.keys().enumerate() {
                        // An SVG swatch: the page's CSP allows no inline style.
                        span.key {
                            svg width="12" height="12" viewBox="0 0 12 12" aria-hidden="true" {
                                rect width="12" height="12" rx="2" fill=(COLOURS[s % COLOURS.len()]) {}
                            }
                            " " (key)
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chart_draws_a_bar_per_series_and_day_with_its_figure() {
        let days: Vec<String> = ["2026-12-01", "2026-12-02"].map(String::from).to_vec();
        let mut series = BTreeMap::new();
        series.insert(
            "staff".to_string(),
            BTreeMap::from([("2026-12-01".to_string(), 2.0)]),
        );
        series.insert(
            "students".to_string(),
            BTreeMap::from([("2026-12-01".to_string(), 4.0), ("2026-12-02".to_string(), 1.5)]),
        );
        let svg = chart("GPU-hours", &days, &series).into_string();
        assert_eq!(svg.matches("<rect class=\"bar\"").count(), 3);
        assert!(svg.contains("students, 2026-12-01: 4 GPU-hours"), "{svg}");
        assert!(svg.contains("students, 2026-12-02: 1.5 GPU-hours"));
        assert!(svg.contains(">12-01<"), "days on the axis");
        let empty = chart("GPU-hours", &days, &BTreeMap::new()).into_string();
        assert!(empty.contains("No GPU-hours counted"));
    }
}
