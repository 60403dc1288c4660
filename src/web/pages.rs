//! The browser pages, rendered on the server with maud (which escapes every value): my
//! servers, the request form, a server's detail with live status, and the admin list.
//! No inline script: the little JavaScript there is comes from /static/app.js.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Event;
use kube::ResourceExt;
use kube::api::ListParams;
use maud::{DOCTYPE, Markup, html};
use serde::Deserialize;

use super::AppState;
use super::cache::Change;
use super::lifecycle;
use super::servers::{self, Action, FieldError, NewResources, NewServer, Problem};
use super::session::{MaybeSession, Session, SignedIn};
use crate::api::access;
use crate::api::lifecycle::Rules;
use crate::api::{ComputeProfile, ComputeServer, EnvVar};

/// The page routes (behind the session middleware).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(home))
        .route("/servers/new", get(new_form))
        .route("/servers", post(create))
        .route("/servers/{name}", get(detail))
        .route("/servers/{name}/events", get(live))
        .route("/servers/{name}/{action}", post(act))
        .route("/admin", get(admin))
        .route("/usage", get(super::usage_page::usage_page))
        .route("/usage/csv", get(super::usage_page::usage_csv))
}

/// The stylesheet and scripts, compiled in: ours, and xterm.js from the npm registry
/// (`tests/support/web-assets.sh` puts it in static/vendor before the build).
pub fn static_routes() -> Router<AppState> {
    const FILES: [(&str, &str, &str); 6] = [
        (
            "/static/app.css",
            "text/css; charset=utf-8",
            include_str!("static/app.css"),
        ),
        (
            "/static/app.js",
            "text/javascript; charset=utf-8",
            include_str!("static/app.js"),
        ),
        (
            "/static/terminal.js",
            "text/javascript; charset=utf-8",
            include_str!("static/terminal.js"),
        ),
        (
            "/static/vendor/xterm.js",
            "text/javascript; charset=utf-8",
            include_str!("static/vendor/xterm.js"),
        ),
        (
            "/static/vendor/xterm.css",
            "text/css; charset=utf-8",
            include_str!("static/vendor/xterm.css"),
        ),
        (
            "/static/vendor/addon-fit.js",
            "text/javascript; charset=utf-8",
            include_str!("static/vendor/addon-fit.js"),
        ),
    ];
    let cache = "public, max-age=3600";
    FILES
        .into_iter()
        .fold(Router::new(), |router, (path, kind, text)| {
            router.route(
                path,
                get(move || async move {
                    (
                        [(header::CONTENT_TYPE, kind), (header::CACHE_CONTROL, cache)],
                        text,
                    )
                }),
            )
        })
}

fn layout(title: &str, session: Option<&Session>, body: Markup) -> Markup {
    layout_with(title, session, html! {}, body)
}

/// A page with more in its head (the terminal's scripts).
pub fn page_with(
    status: StatusCode,
    title: &str,
    session: Option<&Session>,
    head: Markup,
    body: Markup,
) -> Response {
    (status, layout_with(title, session, head, body)).into_response()
}

fn layout_with(title: &str, session: Option<&Session>, head: Markup, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · compute-server" }
                link rel="stylesheet" href="/static/app.css";
                script src="/static/app.js" defer {}
                (head)
            }
            body {
                header.top {
                    a.brand href="/" { "compute-server" }
                    @if let Some(session) = session {
                        nav {
                            a href="/" { "My servers" }
                            a href="/servers/new" { "Request a server" }
                            a href="/usage" { "Usage" }
                            @if session.user.admin { a href="/admin" { "All servers" } }
                        }
                        div.who {
                            span.user { (session.user.name) }
                            form method="post" action="/auth/logout" {
                                input type="hidden" name="csrf" value=(session.csrf);
                                button.link type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

fn page(status: StatusCode, title: &str, session: Option<&Session>, body: Markup) -> Response {
    (status, layout(title, session, body)).into_response()
}

/// A page with a heading and one message.
pub fn message(status: StatusCode, title: &str, text: &str) -> Response {
    page(
        status,
        title,
        None,
        html! { section.card { h1 { (title) } p { (text) } p { a href="/" { "Back to the start" } } } },
    )
}

/// Signing in went wrong: say so and offer to try again.
pub fn sign_in_failed(why: &str) -> Response {
    page(
        StatusCode::BAD_REQUEST,
        "Sign-in failed",
        None,
        html! {
            section.card {
                h1 { "Sign-in failed" }
                p { (why) }
                p { a.button href="/auth/login" { "Try again" } }
            }
        },
    )
}

/// A form came without this session's CSRF token: nothing was done.
pub fn bad_csrf() -> Response {
    message(
        StatusCode::FORBIDDEN,
        "Form expired",
        "This form does not belong to your current session, so nothing was done. Reload the page and try again.",
    )
}

pub(super) fn problem_page(session: &Session, problem: Problem) -> Response {
    let (status, _) = problem.status();
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let title = match problem {
        Problem::NotFound(_) => "Not found",
        Problem::Forbidden(_) => "Not allowed",
        _ => "Something went wrong",
    };
    page(
        status,
        title,
        Some(session),
        html! { section.card { h1 { (title) } p { (problem.message()) } p { a href="/" { "Back to my servers" } } } },
    )
}

/// "3m", "2h", "5d": how long ago the server was made.
fn age(server: &ComputeServer) -> String {
    let Some(created) = &server.metadata.creation_timestamp else {
        return "—".into();
    };
    let seconds = jiff::Timestamp::now().duration_since(created.0).as_secs().max(0);
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// "1 CPU · 512Mi": what was asked, else the profile's default.
fn size(server: &ComputeServer, profiles: &[Arc<ComputeProfile>]) -> String {
    let defaults = server
        .spec
        .profile
        .as_ref()
        .and_then(|name| profiles.iter().find(|p| p.name_any() == *name))
        .map(|p| p.spec.default_resources.clone())
        .unwrap_or_default();
    let res = &server.spec.resources;
    let cpu = res
        .cpu
        .as_ref()
        .or(defaults.cpu.as_ref())
        .map(|q| q.0.as_str())
        .unwrap_or("?");
    let memory = res
        .memory
        .as_ref()
        .or(defaults.memory.as_ref())
        .map(|q| q.0.as_str())
        .unwrap_or("?");
    let gpus = res.gpus.or(defaults.gpus).unwrap_or(0);
    let mut text = format!("{cpu} CPU · {memory}");
    if gpus > 0 {
        text.push_str(&format!(" · {gpus} GPU"));
    }
    text
}

/// A snapshot's phase, coloured as a server's (Ready as Running); not updated live.
fn snapshot_badge(phase: &str) -> Markup {
    let colour = match phase {
        "Ready" => "running",
        "Failed" => "failed",
        _ => "pending",
    };
    html! { span class={ "phase phase-" (colour) } { (phase) } }
}

fn phase_badge(phase: &str) -> Markup {
    html! { span class={ "phase phase-" (phase.to_lowercase()) } data-field="phase" { (phase) } }
}

fn servers_table(state: &AppState, list: &[Arc<ComputeServer>], with_owner: bool) -> Markup {
    servers_table_for(state, list, with_owner, None)
}

/// The servers table; with `sharee`, the servers shared with them: an Owner and a Role column,
/// and their own SSH command where their role lets them log in.
fn servers_table_for(
    state: &AppState,
    list: &[Arc<ComputeServer>],
    with_owner: bool,
    sharee: Option<&super::oidc::User>,
) -> Markup {
    let profiles = state.cache.profiles();
    html! {
        table.servers {
            thead { tr {
                th { "Name" }
                @if with_owner || sharee.is_some() { th { "Owner" } }
                @if sharee.is_some() { th { "Your role" } }
                th { "Profile" } th { "Phase" } th { "Node" } th { "Size" } th { "Age" } th { "SSH" }
            } }
            tbody {
                @for server in list {
                    @let name = server.name_any();
                    tr {
                        td { a href={ "/servers/" (name) } { (name) } }
                        @if with_owner { td { a href={ "/admin?owner=" (server.spec.owner) } { (server.spec.owner) } } }
                        @if let Some(user) = sharee {
                            td { (server.spec.owner) }
                            td { (access::access(server, &user.person()).map_or("—", |a| a.as_str())) }
                        }
                        td { (server.spec.profile.as_deref().unwrap_or("—")) }
                        td { (phase_badge(&servers::phase(server))) }
                        td { (server.status.as_ref().and_then(|s| s.node.as_deref()).unwrap_or("—")) }
                        td { (size(server, &profiles)) }
                        td { (age(server)) }
                        td {
                            @let ssh_user = sharee.map_or(server.spec.owner.as_str(), |u| u.name.as_str());
                            @let may_log_in = sharee.is_none_or(|u| access::may(server, &u.person(), access::Action::Use));
                            @match servers::ssh_command(server, state.bastion.as_deref(), ssh_user).filter(|_| may_log_in) {
                                Some(cmd) => code.ssh { (cmd) },
                                None => span.muted { "—" },
                            }
                        }
                    }
                }
            }
        }
    }
}

async fn home(
    State(state): State<AppState>,
    axum::Extension(MaybeSession(session)): axum::Extension<MaybeSession>,
) -> Response {
    let Some(session) = session else {
        return page(
            StatusCode::OK,
            "Welcome",
            None,
            html! {
                section.card.welcome {
                    h1 { "Your own compute server, now" }
                    p { "Sign in with your organisation's account to request a server, see your servers and reach them over SSH." }
                    p { a.button href="/auth/login" { "Sign in" } }
                }
            },
        );
    };
    let mine = state.cache.owned_by(&session.user.name);
    let shared = servers::shared_with(&state.cache, &session.user);
    page(
        StatusCode::OK,
        "My servers",
        Some(&session),
        html! {
            div.heading {
                h1 { "My servers" }
                a.button href="/servers/new" { "Request a server" }
            }
            @if !state.cache.synced() {
                p.notice { "Still loading the servers; reload in a moment." }
            } @else if mine.is_empty() {
                section.card.empty {
                    p { "You have no servers yet." }
                    p { a href="/servers/new" { "Request your first one" } }
                }
            } @else {
                (servers_table(&state, &mine, false))
            }
            @if !shared.is_empty() {
                h2 #shared { "Shared with me" }
                (servers_table_for(&state, &shared, false, Some(&session.user)))
            }
        },
    )
}

/// What the request form shows back after a refusal.
#[derive(Deserialize, Default)]
struct RequestForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    profile: String,
    #[serde(default)]
    cpu: String,
    #[serde(default)]
    memory: String,
    #[serde(default)]
    ssh_keys: String,
    /// A snapshot of the person's to start from (a clone): `?from=NAME` on the form.
    #[serde(default, alias = "from")]
    restore_from: String,
}

fn field_error(errors: &[FieldError], field: &str) -> Markup {
    html! {
        @for e in errors.iter().filter(|e| e.field == field) {
            p.error id={ "error-" (field) } { (e.message) }
        }
    }
}

async fn request_page(
    state: &AppState,
    session: &Session,
    form: &RequestForm,
    errors: &[FieldError],
    notice: Option<String>,
    status: StatusCode,
) -> Response {
    let profiles = servers::profiles_for(&state.cache, &session.user);
    // The budgets that hold for this person: what a new server would wait for, said up front.
    let budgets = match state.ledger.quotas().await {
        Ok(quotas) => super::usage::budgets(&quotas, &session.user),
        Err(_) => vec![],
    };
    let full: Vec<&super::usage::BudgetLine> = budgets.iter().filter(|b| b.is_full()).collect();
    let chosen = if form.profile.is_empty() {
        profiles.first().map(|p| p.name_any()).unwrap_or_default()
    } else {
        form.profile.clone()
    };
    let others: Vec<&FieldError> = errors
        .iter()
        .filter(|e| {
            ![
                "name",
                "profile",
                "cpu",
                "memory",
                "gpus",
                "sshAuthorizedKeys",
                "restoreFrom",
            ]
            .contains(&e.field)
        })
        .collect();
    page(
        status,
        "Request a server",
        Some(session),
        html! {
            h1 { "Request a server" }
            @if let Some(notice) = notice { p.notice.error role="alert" { (notice) } }
            @for e in others { p.notice.error role="alert" { (e.message) } }
                @if !budgets.is_empty() {
                    section.budgets data-field="budgets" {
                        h2 { "Your budgets" }
                        @if !full.is_empty() {
                            p.notice role="status" {
                                "A new server would wait (in line, placed as soon as the budget allows): "
                                @for (i, b) in full.iter().enumerate() {
                                    @if i > 0 { "; " }
                                    (b.whose) " " @if b.whose == "you" { "use" } @else { "uses" } " " (b.used) " of " (b.limit) " " (b.what)
                                }
                                "."
                            }
                        }
                        ul.budgets {
                            @for b in &budgets {
                                li { span.whose { (b.whose) } ": " (b.what) " " strong { (b.used) " of " (b.limit) } span.muted { " (" (b.quota) ")" } }
                            }
                        }
                        p.muted { a href="/usage" { "Your usage" } }
                    }
                }
            @if profiles.is_empty() {
                section.card { p { "There is no profile you may use. Ask the admins to give your group one." } }
            } @else {
                form.request method="post" action="/servers" novalidate {
                    input type="hidden" name="csrf" value=(session.csrf);
                    @if !form.restore_from.is_empty() {
                        input type="hidden" name="restore_from" value=(form.restore_from);
                        p.notice data-field="restore-from" {
                            "Starts from snapshot " code { (form.restore_from) } ": its data and the software installed in it."
                        }
                        (field_error(errors, "restoreFrom"))
                    }
                    fieldset {
                        legend { "Profile" }
                        @for p in &profiles {
                            @let name = p.name_any();
                            label.profile {
                                input type="radio" name="profile" value=(name) checked[name == chosen];
                                span {
                                    strong { (p.spec.display_name.as_deref().unwrap_or(&name)) }
                                    @if let Some(d) = &p.spec.description { span.muted { (d) } }
                                    span.limits {
                                        "default " (fmt_res(&p.spec.default_resources))
                                        " · up to " (fmt_res(&p.spec.max_resources))
                                        @if let Some(max) = p.spec.max_servers_per_user { " · " (max) " per person" }
                                    }
                                }
                            }
                        }
                        (field_error(errors, "profile"))
                    }
                    label for="name" { "Name " span.muted { "(optional)" } }
                    input #name type="text" name="name" value=(form.name) placeholder="dev" maxlength="63" autocomplete="off";
                    (field_error(errors, "name"))
                    div.row {
                        div {
                            label for="cpu" { "CPUs " span.muted { "(empty: the profile's default)" } }
                            input #cpu type="text" name="cpu" value=(form.cpu) placeholder="1";
                            (field_error(errors, "cpu"))
                        }
                        div {
                            label for="memory" { "Memory " span.muted { "(such as 512Mi or 2Gi)" } }
                            input #memory type="text" name="memory" value=(form.memory) placeholder="512Mi";
                            (field_error(errors, "memory"))
                        }
                    }
                    (field_error(errors, "gpus"))
                    label for="ssh_keys" { "SSH public key " span.muted { "(optional; one per line)" } }
                    textarea #ssh_keys name="ssh_keys" rows="3" placeholder="ssh-ed25519 AAAAC3Nza... you@laptop" { (form.ssh_keys) }
                    (field_error(errors, "sshAuthorizedKeys"))
                    button.button type="submit" { "Request" }
                }
            }
        },
    )
}

fn fmt_res(r: &crate::api::Resources) -> String {
    let cpu = r.cpu.as_ref().map(|q| q.0.as_str()).unwrap_or("any");
    let mem = r.memory.as_ref().map(|q| q.0.as_str()).unwrap_or("any");
    format!("{cpu} CPU, {mem}")
}

async fn new_form(
    State(state): State<AppState>,
    SignedIn(session): SignedIn,
    Query(form): Query<RequestForm>,
) -> Response {
    // A link may preset the profile and the snapshot to start from, nothing else.
    let form = RequestForm {
        profile: form.profile,
        restore_from: form.restore_from,
        ..RequestForm::default()
    };
    request_page(&state, &session, &form, &[], None, StatusCode::OK).await
}

async fn create(
    State(state): State<AppState>,
    SignedIn(session): SignedIn,
    Form(form): Form<RequestForm>,
) -> Response {
    if !session.csrf_ok(&form.csrf) {
        return bad_csrf();
    }
    let new = NewServer {
        name: Some(form.name.clone()),
        profile: form.profile.clone(),
        resources: NewResources {
            cpu: Some(form.cpu.trim().to_string()).filter(|s| !s.is_empty()),
            memory: Some(form.memory.trim().to_string()).filter(|s| !s.is_empty()),
            gpus: None,
        },
        ssh_authorized_keys: form.ssh_keys.lines().map(str::to_string).collect(),
        env: Vec::<EnvVar>::new(),
        restore_from: Some(form.restore_from.trim())
            .filter(|s| !s.is_empty())
            .map(|snapshot| crate::api::RestoreFrom {
                snapshot: snapshot.to_string(),
            }),
    };
    match servers::create(&state.servers, &state.leases, &state.cache, &session.user, new).await {
        Ok(server) => Redirect::to(&format!("/servers/{}", server.name_any())).into_response(),
        Err(Problem::Invalid(errors)) => {
            request_page(
                &state,
                &session,
                &form,
                &errors,
                Some("Please correct the fields marked below.".into()),
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await
        }
        Err(problem @ (Problem::Limit(_) | Problem::Exists(_))) => {
            request_page(
                &state,
                &session,
                &form,
                &[],
                Some(problem.message()),
                StatusCode::CONFLICT,
            )
            .await
        }
        Err(problem) => problem_page(&session, problem),
    }
}

async fn events_of(state: &AppState, server: &ComputeServer) -> Vec<Event> {
    let params = ListParams::default().fields(&format!("involvedObject.name={}", server.name_any()));
    let mut events: Vec<Event> = match state.events.list(&params).await {
        Ok(list) => list
            .items
            .into_iter()
            .filter(|e| e.involved_object.uid == server.uid())
            .collect(),
        Err(error) => {
            tracing::warn!("list events: {error}");
            vec![]
        }
    };
    let when = |e: &Event| {
        e.last_timestamp
            .as_ref()
            .map(|t| t.0)
            .or(e.event_time.as_ref().map(|t| t.0))
    };
    events.sort_by_key(|e| std::cmp::Reverse(when(e)));
    events.truncate(20);
    events
}

async fn detail(
    State(state): State<AppState>,
    SignedIn(session): SignedIn,
    Path(name): Path<String>,
) -> Response {
    let server = match servers::visible(&state.cache, &session.user, &name) {
        Ok(server) => server,
        Err(problem) => return problem_page(&session, problem),
    };
    let events = events_of(&state, &server).await;
    let snapshots = super::snapshots::of_server(&state.snapshots, &state.cache, &session.user, &name)
        .await
        .unwrap_or_default();
    let status = server.status.clone().unwrap_or_default();
    let phase = servers::phase(&server);
    let ssh = servers::ssh_command(&server, state.bastion.as_deref(), &session.user.name);
    let held =
        access::access(&server, &session.user.person()).unwrap_or(access::Access::Shared(access::Role::View));
    let (can_use, can_own, can_share) = (
        held.allows(access::Action::Use),
        held.allows(access::Action::Own),
        held.allows(access::Action::Share),
    );
    let profiles = state.cache.profiles();
    let declares_ssh = {
        let profile = server
            .spec
            .profile
            .as_deref()
            .and_then(|p| profiles.iter().find(|q| q.name_any() == p));
        crate::api::ports(&server, profile.map(|p| p.as_ref()))
            .iter()
            .any(|p| p.container_port == 22)
    };
    let running = servers::runs(&server).to_string();
    let rules = lifecycle::rules(&state.cache, &server);
    let now = jiff::Timestamp::now();
    let stop = lifecycle::stop(&server, &rules, now);
    let warning = stop.as_ref().and_then(|s| s.warning.clone());
    let line = stop.filter(|s| s.warning.is_none()).map(|s| s.line(now));
    let apps = super::apps::apps(&server, &profiles);
    let browser = state.ssh.is_some();
    let reachable = super::terminal::reachable(&server).is_ok();
    let lost = status.phase == Some(crate::api::Phase::NodeLost);
    page(
        StatusCode::OK,
        &name,
        Some(&session),
        html! {
            div.heading data-events={ "/servers/" (name) "/events" } {
                h1 { (name) " " (phase_badge(&phase)) }
                div.actions {
                    @if !matches!(held, access::Access::Owner) {
                        span.muted.role title="What you may do with this server" { (shared_by(&server, held)) }
                    }
                    @if can_use {
                    form method="post" action={ "/servers/" (name) "/stop" } data-when-running="true" hidden[running != "true"] {
                        input type="hidden" name="csrf" value=(session.csrf);
                        button.button.secondary type="submit" { "Stop" }
                    }
                    form method="post" action={ "/servers/" (name) "/start" } data-when-running="false" hidden[running != "false"] {
                        input type="hidden" name="csrf" value=(session.csrf);
                        button.button.secondary type="submit" { "Start" }
                    }
                    }
                    @if can_own {
                    form method="post" action={ "/servers/" (name) "/delete" } data-confirm={ "Delete " (name) " and its data?" } {
                        input type="hidden" name="csrf" value=(session.csrf);
                        @if !snapshots.is_empty() {
                            label.inline title="Unticked, its snapshots are kept: a new server can start from them" {
                                input type="checkbox" name="snapshots" value="true";
                                " and its " (snapshots.len()) " snapshot(s)"
                            }
                        }
                        button.button.danger type="submit" { "Delete" }
                    }
                    }
                }
            }
            @if browser {
                nav.browser data-shown-by="reachable" hidden[!reachable] {
                    @if can_use {
                        a.button href={ "/servers/" (name) "/terminal" } target="_blank" rel="noopener" { "Open terminal" }
                    }
                    @for app in &apps {
                        a.button.secondary href=(crate::api::app_path(&name, &app.name)) target="_blank" rel="noopener" {
                            "Open " (app.name)
                        }
                    }
                }
            }
            p.message data-field="message" { (status.message.as_deref().unwrap_or("Waiting for the scheduler to choose a node.")) }
            div.stop-warning role="status" data-shown-by="warning" hidden[warning.is_none()] {
                p { "This server " span data-field="warning" { (warning.as_deref().unwrap_or("")) } "." }
                @match rules.max_extension.filter(|_| can_use) {
                    Some(most) => form method="post" action={ "/servers/" (name) "/extend" } {
                        input type="hidden" name="csrf" value=(session.csrf);
                        input type="hidden" name="for" value={ (most.as_secs()) "s" };
                        button.button type="submit" { "Keep running for " (crate::api::lifecycle::human(most)) }
                    },
                    None => p.muted { "Its profile does not let it be kept running longer." },
                }
            }
            p.muted.stops data-shown-by="stops" hidden[line.is_none()] {
                span data-field="stops" { (line.as_deref().unwrap_or("")) }
            }
            section.card {
                dl.facts {
                    dt { "Owner" } dd { (server.spec.owner) }
                    dt { "Profile" } dd { (server.spec.profile.as_deref().unwrap_or("—")) }
                    dt { "Size" } dd { (size(&server, &profiles)) }
                    @if !status.gpu_devices.is_empty() {
                        dt { "GPUs" } dd data-field="gpus" { "device " (status.gpu_devices.join(", ")) }
                    }
                    dt { "Node" } dd data-field="node" { (status.node.as_deref().unwrap_or("—")) }
                    dt { "Age" } dd { (age(&server)) }
                    @if can_use {
                        dt { "SSH" } dd { code.ssh data-field="ssh" { (ssh.as_deref().unwrap_or("—")) } }
                    }
                    @if !apps.is_empty() {
                        dt { "Apps" } dd {
                            @for app in &apps {
                                a href=(crate::api::app_path(&name, &app.name)) { (app.name) } " (port " (app.container_port) ") "
                            }
                        }
                    }
                }
            }
            // Sharees, and owners of a server whose image runs no sshd (its node's gateway takes
            // certificates only), log in with a certificate for their own key.
            @if can_use && state.ssh.is_some() && (!matches!(held, access::Access::Owner) || !declares_ssh) {
                (own_key_form(&session, &server, ssh.as_deref()))
            }
            (sharing(&session, &server, can_share, matches!(held, access::Access::Owner | access::Access::Admin)))
            @if can_own {
            div.heading #snapshots {
                h2 { "Snapshots" }
                div.actions {
                    @if lost && snapshots.iter().any(|s| s.status.as_ref().and_then(|st| st.phase) == Some(crate::api::SnapshotPhase::Ready)) {
                        form method="post" action={ "/servers/" (name) "/move" } {
                            input type="hidden" name="csrf" value=(session.csrf);
                            button.button type="submit" title="Restore it on another node from its newest Ready snapshot; what changed since is lost" { "Move to another node" }
                        }
                    }
                    form method="post" action={ "/servers/" (name) "/snapshot" } {
                        input type="hidden" name="csrf" value=(session.csrf);
                        button.button.secondary type="submit" { "Take snapshot" }
                    }
                }
            }
            @if let Some(restored) = &status.restored_from {
                p.muted data-field="restored" {
                    "Restored from snapshot " code { (restored.snapshot) }
                    @if let Some(taken) = &restored.taken_at { " (taken " (taken.0.strftime("%Y-%m-%d %H:%M UTC")) ")" }
                    "."
                }
            }
            @if snapshots.is_empty() {
                p.muted { "No snapshots yet. A snapshot copies this server's data and what changed in its system into the object store; a new server can start from it." }
            } @else {
                table.snapshots {
                    thead { tr { th { "Name" } th { "Phase" } th { "Size" } th { "Taken" } th { "Message" } th {} } }
                    tbody {
                        @for s in &snapshots {
                            @let view = super::snapshots::SnapshotView::of(s);
                            tr {
                                td { code { (view.name) } }
                                td { (snapshot_badge(&view.phase)) }
                                td { (view.size.as_deref().unwrap_or("—")) }
                                td {
                                    @match s.status.as_ref().and_then(|st| st.taken_at.as_ref()) {
                                        Some(taken) => time datetime=(taken.0.to_string()) { (taken.0.strftime("%Y-%m-%d %H:%M UTC")) },
                                        None => "—",
                                    }
                                }
                                td { (view.message.as_deref().unwrap_or("")) }
                                td {
                                    @if view.phase == "Ready" {
                                        a href={ "/servers/new?from=" (view.name) "&profile=" (server.spec.profile.as_deref().unwrap_or("")) } title="A new server that starts with this snapshot's data and software" { "Clone" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            }
            h2 { "Events" }
            @if events.is_empty() {
                p.muted { "No events yet." }
            } @else {
                table.events {
                    thead { tr { th { "Type" } th { "Reason" } th { "Message" } th { "Count" } } }
                    tbody {
                        @for e in &events {
                            tr class=[e.type_.as_deref().map(|t| t.to_lowercase())] {
                                td { (e.type_.as_deref().unwrap_or("")) }
                                td { (e.reason.as_deref().unwrap_or("")) }
                                td { (e.message.as_deref().unwrap_or("")) }
                                td { (e.count.unwrap_or(1)) }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// A certificate for the person's own key, from the page's form: a file to save next to it.
async fn certificate(state: AppState, session: Session, form: ActionForm) -> Response {
    if !session.csrf_ok(&form.csrf) {
        return bad_csrf();
    }
    match servers::certificate_for(
        &state.cache,
        state.ssh.as_deref(),
        &session.user,
        &form.public_key,
    ) {
        Ok(signed) => (
            [
                (header::CONTENT_TYPE, "text/plain; charset=utf-8".to_string()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"{}\"", signed.file_name),
                ),
            ],
            format!("{}\n", signed.certificate),
        )
            .into_response(),
        Err(problem) => problem_page(&session, problem),
    }
}

/// For a sharee who may log in: how to, with their own key (a certificate the front signs).
fn own_key_form(session: &Session, server: &ComputeServer, ssh: Option<&str>) -> Markup {
    html! {
        details.certificate #own-key {
            summary { "SSH with your own key" }
            p {
                "Log in with a certificate for your own key: the web front signs it, good for 8 hours, for "
                "your servers and those shared with you, and your key is written into no server. Save it next to your key (as "
                code { "~/.ssh/id_ed25519-cert.pub" } " for " code { "~/.ssh/id_ed25519" } "), then: "
                code.ssh { (ssh.unwrap_or("ssh -J …")) }
            }
            form method="post" action={ "/servers/" (server.name_any()) "/certificate" } {
                input type="hidden" name="csrf" value=(session.csrf);
                label for="own-key-line" { "Your public key" }
                textarea #own-key-line name="publicKey" rows="2" required placeholder="ssh-ed25519 AAAAC3Nza... you@laptop" {}
                button.button.secondary type="submit" { "Get a certificate" }
            }
        }
    }
}

/// "Shared with you by alice: use": what a sharee (or an admin) holds.
fn shared_by(server: &ComputeServer, held: access::Access) -> String {
    match held {
        access::Access::Shared(role) => {
            format!("Shared with you by {}: {}", server.spec.owner, role.as_str())
        }
        _ => format!("{}'s; you are a compute-server admin", server.spec.owner),
    }
}

/// Who has access: the owner and each entry of `sharedWith`; with Remove buttons and the
/// Share form for those who may change it (`admin_roles`: and grant the role admin).
fn sharing(session: &Session, server: &ComputeServer, can_share: bool, admin_roles: bool) -> Markup {
    let name = server.name_any();
    let roles: &[access::Role] = match admin_roles {
        true => &[access::Role::View, access::Role::Use, access::Role::Admin],
        false => &[access::Role::View, access::Role::Use],
    };
    html! {
        section.card.sharing #sharing {
            h2 { "Who has access" }
            table.access {
                thead { tr { th { "Who" } th { "Role" } th {} } }
                tbody {
                    tr { td { "user " (server.spec.owner) } td { "owner" } td {} }
                    @for share in &server.spec.shared_with {
                        tr data-share=(share.who()) {
                            td { (share.who()) }
                            td { (share.role.as_str()) }
                            td {
                                @if can_share && (admin_roles || share.role != access::Role::Admin) {
                                    form.inline method="post" action={ "/servers/" (name) "/unshare" } {
                                        input type="hidden" name="csrf" value=(session.csrf);
                                        input type="hidden" name="kind" value=(if share.user.is_some() { "user" } else { "group" });
                                        input type="hidden" name="who" value=(share.user.as_deref().or(share.group.as_deref()).unwrap_or(""));
                                        button.link type="submit" { "Remove" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if can_share {
                details.share open[server.spec.shared_with.is_empty()] {
                    summary { "Share…" }
                    form.share method="post" action={ "/servers/" (name) "/share" } {
                        input type="hidden" name="csrf" value=(session.csrf);
                        label for="share-kind" { "With" }
                        select #share-kind name="kind" {
                            option value="user" selected { "user" }
                            option value="group" { "group" }
                        }
                        input #share-who type="text" name="who" required maxlength="253" placeholder="a Keycloak user or group name" aria-label="User or group name";
                        label for="share-role" { "as" }
                        select #share-role name="role" {
                            @for role in roles {
                                option value=(role.as_str()) selected[*role == access::Role::Use] { (role.as_str()) }
                            }
                        }
                        button.button type="submit" { "Share" }
                    }
                    p.muted {
                        "view: sees it and its web apps · use: also its terminal and SSH, start, stop, keep running"
                        @if admin_roles { " · admin: also shares it, with roles up to use" }
                        ". Only its owner deletes, resizes or snapshots it. Removing someone closes their open sessions."
                    }
                }
            }
        }
    }
}

/// Share or unshare from the page's form: the whole new list goes through the one rule.
async fn share(state: AppState, session: Session, name: String, form: ActionForm, add: bool) -> Response {
    if !session.csrf_ok(&form.csrf) {
        return bad_csrf();
    }
    let server = match servers::visible(&state.cache, &session.user, &name) {
        Ok(server) => server,
        Err(problem) => return problem_page(&session, problem),
    };
    let who = form.who.trim().to_string();
    let entry = |role| access::Share {
        user: (form.kind != "group").then(|| who.clone()),
        group: (form.kind == "group").then(|| who.trim_start_matches('/').to_string()),
        role,
    };
    let role = match form.role.as_deref() {
        None | Some("") if !add => access::Role::View,
        Some("view") => access::Role::View,
        Some("use") => access::Role::Use,
        Some("admin") => access::Role::Admin,
        _ => {
            return problem_page(
                &session,
                Problem::BadRequest("choose a role: view, use or admin".into()),
            );
        }
    };
    let new_entry = entry(role);
    let mut list: Vec<access::Share> = server
        .spec
        .shared_with
        .iter()
        .filter(|s| !s.same_subject(&new_entry))
        .cloned()
        .collect();
    if add {
        list.push(new_entry);
    }
    match servers::share(&state.servers, &state.cache, &session.user, &name, list).await {
        Ok(_) => Redirect::to(&format!("/servers/{name}#sharing")).into_response(),
        Err(problem) => problem_page(&session, problem),
    }
}

/// The status fields the detail page updates live/// The status fields the detail page updates live: `warning` while a stop is near, else `stops`
/// when one is coming ("" when not).
fn status_json(server: &ComputeServer, bastion: Option<&str>, rules: &Rules) -> String {
    let status = server.status.clone().unwrap_or_default();
    let now = jiff::Timestamp::now();
    let stop = lifecycle::stop(server, rules, now);
    let warning = stop.as_ref().and_then(|s| s.warning.clone());
    let line = stop.filter(|s| s.warning.is_none()).map(|s| s.line(now));
    serde_json::json!({
        "phase": servers::phase(server),
        "message": status.message.unwrap_or_else(|| "Waiting for the scheduler to choose a node.".into()),
        "node": status.node.unwrap_or_else(|| "—".into()),
        "ssh": servers::ssh_command(server, bastion, &server.spec.owner).unwrap_or_else(|| "—".into()),
        "running": servers::runs(server),
        "reachable": super::terminal::reachable(server).is_ok(),
        "warning": warning.unwrap_or_default(),
        "stops": line.unwrap_or_default(),
    })
    .to_string()
}

/// Server-sent events with the server's status, from the watch cache: one now, then one per
/// change, and one when the warning of a coming stop begins; `deleted` when it is gone. The
/// stream ends when the session's access token expires: the browser then asks again, and that
/// request renews the session or finds it ended.
async fn live(
    State(state): State<AppState>,
    SignedIn(session): SignedIn,
    Path(name): Path<String>,
) -> Response {
    let changes = state.cache.subscribe();
    let server = match servers::visible(&state.cache, &session.user, &name) {
        Ok(server) => server,
        Err(problem) => return problem_page(&session, problem),
    };
    let bastion = state.bastion.clone();
    let rules = lifecycle::rules(&state.cache, &server);
    let first = SseEvent::default()
        .event("status")
        .data(status_json(&server, bastion.as_deref(), &rules));
    let user = session.user;
    let left = user.expires.saturating_sub(jsonwebtoken::get_current_timestamp());
    let session_ends = tokio::time::sleep(std::time::Duration::from_secs(left));
    let cache = state.cache.clone();
    let updates = futures::stream::unfold(Some((changes, server)), move |state| {
        let (name, user, cache, bastion) = (name.clone(), user.clone(), cache.clone(), bastion.clone());
        async move {
            let (mut changes, mut last) = state?;
            loop {
                // The warning's start is no change in the cluster: wake for it.
                let now = jiff::Timestamp::now();
                let warn_in = lifecycle::warning_starts(&last, &lifecycle::rules(&cache, &last), now)
                    .and_then(|at| std::time::Duration::try_from(at.duration_since(now)).ok())
                    .unwrap_or(std::time::Duration::from_secs(24 * 3600));
                let changed = tokio::select! {
                    changed = changes.recv() => changed,
                    () = tokio::time::sleep(warn_in) => Ok(Change::Applied(last.clone())),
                };
                let server = match changed {
                    Ok(Change::Applied(s)) if s.name_any() == name => s,
                    Ok(Change::Deleted(n)) if n == name => {
                        return Some((SseEvent::default().event("deleted").data("{}"), None));
                    }
                    Ok(_) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => match cache.server(&name) {
                        Some(s) => s,
                        None => continue,
                    },
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                };
                if !crate::api::access::may(&server, &user.person(), crate::api::access::Action::View) {
                    return None;
                }
                last = server;
                let rules = lifecycle::rules(&cache, &last);
                let event =
                    SseEvent::default()
                        .event("status")
                        .data(status_json(&last, bastion.as_deref(), &rules));
                return Some((event, Some((changes, last))));
            }
        }
    });
    let stream = futures::stream::once(async { first })
        .chain(updates)
        .take_until(session_ends)
        .map(Ok::<_, Infallible>);
    Sse::new(stream).keep_alive(KeepAlive::default()).into_response()
}

#[derive(Deserialize)]
struct ActionForm {
    #[serde(default)]
    csrf: String,
    /// How long to keep running (extend only).
    #[serde(default, rename = "for")]
    keep_for: Option<String>,
    /// Delete only: its snapshots go too ("true").
    #[serde(default)]
    snapshots: Option<String>,
    /// Certificate: the person's public key.
    #[serde(default, rename = "publicKey")]
    public_key: String,
    /// Share and unshare: "user" or "group", its name, and (share) the role.
    #[serde(default)]
    kind: String,
    #[serde(default)]
    who: String,
    #[serde(default)]
    role: Option<String>,
}

async fn act(
    State(state): State<AppState>,
    SignedIn(session): SignedIn,
    Path((name, action)): Path<(String, String)>,
    Form(form): Form<ActionForm>,
) -> Response {
    let action = match action.as_str() {
        "stop" => Action::Stop,
        "start" => Action::Start,
        "delete" => Action::Delete,
        "extend" => return extend(state, session, name, form).await,
        "snapshot" => return snapshot(state, session, name, form).await,
        "move" => return move_off(state, session, name, form).await,
        "share" => return share(state, session, name, form, true).await,
        "certificate" => return certificate(state, session, form).await,
        "unshare" => return share(state, session, name, form, false).await,
        _ => return problem_page(&session, Problem::NotFound(name)),
    };
    if !session.csrf_ok(&form.csrf) {
        return bad_csrf();
    }
    if action == Action::Delete {
        let snapshots = form.snapshots.as_deref() == Some("true");
        let deleted = super::snapshots::delete_server(
            &state.servers,
            &state.snapshots,
            &state.cache,
            &session.user,
            &name,
            snapshots,
        )
        .await;
        return match deleted {
            Ok(_) => Redirect::to("/").into_response(),
            Err(problem) => problem_page(&session, problem),
        };
    }
    match servers::act(&state.servers, &state.cache, &session.user, &name, action).await {
        Ok(_) => Redirect::to(&format!("/servers/{name}")).into_response(),
        Err(problem) => problem_page(&session, problem),
    }
}

/// Take a snapshot, from the page's button: back to the page, which lists it.
async fn snapshot(state: AppState, session: Session, name: String, form: ActionForm) -> Response {
    if !session.csrf_ok(&form.csrf) {
        return bad_csrf();
    }
    match super::snapshots::take(&state.snapshots, &state.cache, &session.user, &name).await {
        Ok(_) => Redirect::to(&format!("/servers/{name}#snapshots")).into_response(),
        Err(problem) => problem_page(&session, problem),
    }
}

/// Move off a lost node, from the page's button: restored from the newest Ready snapshot.
async fn move_off(state: AppState, session: Session, name: String, form: ActionForm) -> Response {
    if !session.csrf_ok(&form.csrf) {
        return bad_csrf();
    }
    let moved = super::snapshots::move_off(
        &state.servers,
        &state.snapshots,
        &state.cache,
        &session.user,
        &name,
        None,
    )
    .await;
    match moved {
        Ok(_) => Redirect::to(&format!("/servers/{name}")).into_response(),
        Err(problem) => problem_page(&session, problem),
    }
}

/// Keep running, from the warning's button: back to the page, which shows the new stop.
async fn extend(state: AppState, session: Session, name: String, form: ActionForm) -> Response {
    if !session.csrf_ok(&form.csrf) {
        return bad_csrf();
    }
    let asked = match lifecycle::keep_for(form.keep_for.as_deref()) {
        Ok(asked) => asked,
        Err(problem) => return problem_page(&session, problem),
    };
    match lifecycle::extend(&state.servers, &state.cache, &session.user, &name, asked).await {
        Ok(_) => Redirect::to(&format!("/servers/{name}")).into_response(),
        Err(problem) => problem_page(&session, problem),
    }
}

#[derive(Deserialize)]
struct OwnerQuery {
    owner: Option<String>,
}

async fn admin(
    State(state): State<AppState>,
    SignedIn(session): SignedIn,
    Query(query): Query<OwnerQuery>,
) -> Response {
    if !session.user.admin {
        return problem_page(
            &session,
            Problem::Forbidden("This page is for admins (the compute-admin role).".into()),
        );
    }
    let owner = query.owner.unwrap_or_default();
    let list = match servers::list(&state.cache, &session.user, Some(owner.trim())) {
        Ok(list) => list,
        Err(problem) => return problem_page(&session, problem),
    };
    page(
        StatusCode::OK,
        "All servers",
        Some(&session),
        html! {
            div.heading {
                h1 { "All servers" }
                form.filter method="get" action="/admin" {
                    label for="owner" { "Owner" }
                    input #owner type="text" name="owner" value=(owner) placeholder="everyone";
                    button.button.secondary type="submit" { "Filter" }
                }
            }
            p.muted {
                (list.len()) @if list.len() == 1 { " server" } @else { " servers" }
                @if !owner.is_empty() { " of " (owner) }
            }
            (servers_table(&state, &list, true))
        },
    )
}
