//! The JSON API under `/api/v1/`, for scripts and CLIs: `Authorization: Bearer <access token>`
//! only (cookies are never read here, so a browser session cannot be ridden by another site),
//! errors as `{"error": "...", "message": "..."}`.

use super::snapshots::SnapshotView;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use kube::ResourceExt;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::AppState;
use super::lifecycle;
use super::oidc::User;
use super::servers::{self, Action, FieldError, NewServer, Problem, ServerView};
use crate::api::{ComputeServer, Resources};

/// The API's routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/servers", get(list).post(create))
        .route("/api/v1/servers/{name}", get(one).delete(delete))
        .route("/api/v1/servers/{name}/stop", post(stop))
        .route("/api/v1/servers/{name}/start", post(start))
        .route("/api/v1/servers/{name}/extend", post(extend))
        .route("/api/v1/servers/{name}/snapshots", get(snapshots).post(snapshot))
        .route("/api/v1/servers/{name}/move", post(move_off))
        .route("/api/v1/servers/{name}/sharing", get(sharing).put(share))
        .route("/api/v1/ssh-certificate", post(ssh_certificate))
        .route("/api/v1/profiles", get(profiles))
        .route("/api/v1/usage", get(usage))
}

/// A [`Problem`] as the API answers it.
pub struct ApiError(pub Problem);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.0.status();
        let mut body = json!({"error": code, "message": self.0.message()});
        if let Problem::Invalid(fields) = &self.0 {
            body["fields"] = json!(fields);
        }
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer error=\"invalid_token\""),
            );
        }
        response
    }
}

impl From<Problem> for ApiError {
    fn from(problem: Problem) -> Self {
        ApiError(problem)
    }
}

/// The caller, from a valid `Authorization: Bearer` access token.
pub struct Bearer(pub User);

impl FromRequestParts<AppState> for Bearer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .ok_or_else(|| {
                ApiError(Problem::Unauthorized(
                    "send an access token from Keycloak: Authorization: Bearer <token>".into(),
                ))
            })?;
        let oidc = state.oidc.get().ok_or_else(|| {
            ApiError(Problem::Unavailable(
                "Keycloak has not answered yet; try again soon".into(),
            ))
        })?;
        oidc.validate(token)
            .await
            .map(Bearer)
            .map_err(|e| ApiError(Problem::Unauthorized(e.to_string())))
    }
}

/// A server as the API shows it now.
fn view(state: &AppState, user: &User, server: &ComputeServer) -> ServerView {
    let rules = lifecycle::rules(&state.cache, server);
    ServerView::new(
        server,
        user,
        &rules,
        state.bastion.as_deref(),
        jiff::Timestamp::now(),
    )
}

fn ready(state: &AppState) -> Result<(), ApiError> {
    if state.cache.synced() {
        Ok(())
    } else {
        Err(ApiError(Problem::Unavailable(
            "still loading the servers; try again soon".into(),
        )))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    owner: Option<String>,
    /// The servers shared with the caller (not their own) in place of their own.
    #[serde(default)]
    shared: bool,
}

async fn list(
    State(state): State<AppState>,
    Bearer(user): Bearer,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Vec<ServerView>>, ApiError> {
    ready(&state)?;
    let Query(query) = query.map_err(|e| ApiError(Problem::BadRequest(e.body_text())))?;
    let servers = match query.shared {
        true if query.owner.is_some() => {
            return Err(ApiError(Problem::BadRequest(
                "ask for ?shared=true or ?owner=, not both".into(),
            )));
        }
        true => servers::shared_with(&state.cache, &user),
        false => servers::list(&state.cache, &user, query.owner.as_deref())?,
    };
    Ok(Json(servers.iter().map(|s| view(&state, &user, s)).collect()))
}

async fn one(
    State(state): State<AppState>,
    Bearer(user): Bearer,
    Path(name): Path<String>,
) -> Result<Json<ServerView>, ApiError> {
    ready(&state)?;
    let server = servers::visible(&state.cache, &user, &name)?;
    Ok(Json(view(&state, &user, &server)))
}

async fn create(
    State(state): State<AppState>,
    Bearer(user): Bearer,
    body: Result<Json<NewServer>, JsonRejection>,
) -> Result<(StatusCode, Json<ServerView>), ApiError> {
    ready(&state)?;
    let Json(new) = body.map_err(|e| ApiError(Problem::BadRequest(e.body_text())))?;
    let server = servers::create(&state.servers, &state.leases, &state.cache, &user, new).await?;
    Ok((StatusCode::CREATED, Json(view(&state, &user, &server))))
}

/// Stops or starts a server: the server as it is now.
async fn change(
    state: &AppState,
    user: &User,
    name: &str,
    action: Action,
) -> Result<Json<ServerView>, ApiError> {
    ready(state)?;
    // Only a delete leaves no server to show.
    let changed = servers::act(&state.servers, &state.cache, user, name, action)
        .await?
        .ok_or(ApiError(Problem::Internal))?;
    Ok(Json(view(state, user, &changed)))
}

async fn stop(
    State(state): State<AppState>,
    Bearer(user): Bearer,
    Path(name): Path<String>,
) -> Result<Json<ServerView>, ApiError> {
    change(&state, &user, &name, Action::Stop).await
}

async fn start(
    State(state): State<AppState>,
    Bearer(user): Bearer,
    Path(name): Path<String>,
) -> Result<Json<ServerView>, ApiError> {
    change(&state, &user, &name, Action::Start).await
}

/// The body of an extend: `{"for": "4h"}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Extend {
    #[serde(rename = "for", default)]
    keep_for: Option<serde_json::Value>,
}

/// Keep running: `{"for": "4h"}` sets spec.keepRunningUntil, within the profile's maxExtension.
async fn extend(
    State(state): State<AppState>,
    Bearer(user): Bearer,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<ServerView>, ApiError> {
    ready(&state)?;
    // No body at all is a missing `for`, as `{}` is.
    let body: Extend = match body.is_empty() {
        true => Extend { keep_for: None },
        false => serde_json::from_slice(&body).map_err(|e| {
            ApiError(Problem::BadRequest(format!(
                "the body is not {{\"for\": \"4h\"}}: {e}"
            )))
        })?,
    };
    let asked = match &body.keep_for {
        Some(serde_json::Value::String(text)) => lifecycle::keep_for(Some(text))?,
        None | Some(serde_json::Value::Null) => lifecycle::keep_for(None)?,
        Some(other) => {
            return Err(ApiError(Problem::Invalid(vec![FieldError {
                field: "for",
                message: format!("must be text such as \"4h\", not {other}"),
            }])));
        }
    };
    let server = lifecycle::extend(&state.servers, &state.cache, &user, &name, asked).await?;
    Ok(Json(view(&state, &user, &server)))
}

/// `?snapshots=true`: the server's snapshots go with it (else they are kept).
#[derive(serde::Deserialize, Default)]
struct DeleteQuery {
    #[serde(default)]
    snapshots: bool,
}

async fn delete(
    State(state): State<AppState>,
    Bearer(user): Bearer,
    Path(name): Path<String>,
    query: Result<Query<DeleteQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    ready(&state)?;
    let Query(query) = query.map_err(|e| ApiError(Problem::BadRequest(e.body_text())))?;
    let deleted = super::snapshots::delete_server(
        &state.servers,
        &state.snapshots,
        &state.cache,
        &user,
        &name,
        query.snapshots,
    )
    .await?;
    let message = match query.snapshots {
        true => format!(
            "deleting: the server is gone once its container is removed; {deleted} snapshot(s) of it deleted"
        ),
        false => {
            "deleting: the server is gone once its container is removed; its snapshots are kept".to_string()
        }
    };
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"name": name, "message": message})),
    )
        .into_response())
}

/// A profile as the API shows it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ProfileView {
    name: String,
    display_name: Option<String>,
    description: Option<String>,
    default_resources: Resources,
    max_resources: Resources,
    max_servers_per_user: Option<i32>,
}

/// Takes a snapshot of the caller's server: 201 with the snapshot (Pending until its agent took
/// it); 404 for a server that is not the caller's.
async fn snapshot(
    State(state): State<AppState>,
    Bearer(user): Bearer,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<SnapshotView>), ApiError> {
    ready(&state)?;
    let taken = super::snapshots::take(&state.snapshots, &state.cache, &user, &name).await?;
    Ok((StatusCode::CREATED, Json(SnapshotView::of(&taken))))
}

/// What a move asks for: the snapshot to restore from (by default the newest Ready one).
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct MoveRequest {
    snapshot: Option<String>,
}

/// Moves the caller's server off its lost node, restored from a snapshot: 202 with the server
/// (the scheduler places it anew, its agent restores it); 409 when its node is not lost.
async fn move_off(
    State(state): State<AppState>,
    Bearer(user): Bearer,
    Path(name): Path<String>,
    body: Result<Json<Option<MoveRequest>>, JsonRejection>,
) -> Result<(StatusCode, Json<ServerView>), ApiError> {
    ready(&state)?;
    // No body (or null): the newest Ready snapshot.
    let asked = match body {
        Ok(Json(asked)) => asked.unwrap_or_default(),
        Err(JsonRejection::MissingJsonContentType(_)) => MoveRequest::default(),
        Err(e) => return Err(ApiError(Problem::BadRequest(e.body_text()))),
    };
    let moved = super::snapshots::move_off(
        &state.servers,
        &state.snapshots,
        &state.cache,
        &user,
        &name,
        asked.snapshot.as_deref(),
    )
    .await?;
    Ok((StatusCode::ACCEPTED, Json(view(&state, &user, &moved))))
}

/// The snapshots of the caller's server, newest first.
async fn snapshots(
    State(state): State<AppState>,
    Bearer(user): Bearer,
    Path(name): Path<String>,
) -> Result<Json<Vec<SnapshotView>>, ApiError> {
    ready(&state)?;
    let list = super::snapshots::of_server(&state.snapshots, &state.cache, &user, &name).await?;
    Ok(Json(list.iter().map(SnapshotView::of).collect()))
}

async fn profiles(
    State(state): State<AppState>,
    Bearer(user): Bearer,
) -> Result<Json<Vec<ProfileView>>, ApiError> {
    ready(&state)?;
    Ok(Json(
        servers::profiles_for(&state.cache, &user)
            .iter()
            .map(|p| ProfileView {
                name: p.name_any(),
                display_name: p.spec.display_name.clone(),
                description: p.spec.description.clone(),
                default_resources: p.spec.default_resources.clone(),
                max_resources: p.spec.max_resources.clone(),
                max_servers_per_user: p.spec.max_servers_per_user,
            })
            .collect(),
    ))
}

/// The reserved hours per day and person (`?from=&to=` as YYYY-MM-DD, UTC, both included;
/// default this month): a person their own, admins everyone's (or `?user=`, `?group=`); with
/// the budgets that hold for the caller. `?format=csv` for a spreadsheet.
async fn usage(
    State(state): State<AppState>,
    Bearer(user): Bearer,
    query: Result<Query<super::usage::UsageQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError(Problem::BadRequest(e.body_text())))?;
    let report = state.ledger.report(&query.asked()?, &user).await?;
    match query.format.as_deref() {
        Some("csv") => Ok(super::usage::csv_download(&report)?),
        None | Some("json") => Ok(Json(report).into_response()),
        Some(other) => Err(ApiError(Problem::BadRequest(format!(
            "format must be json or csv, not {other:?}"
        )))),
    }
}

/// Whom a server is shared with: `{"sharedWith": [{"user": "bob", "role": "use"}, {"group": "staff", "role": "view"}]}`.
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Sharing {
    shared_with: Vec<crate::api::Share>,
}

/// Whom the server is shared with (anyone who sees it may ask).
async fn sharing(
    State(state): State<AppState>,
    Bearer(user): Bearer,
    Path(name): Path<String>,
) -> Result<Json<Sharing>, ApiError> {
    ready(&state)?;
    let server = servers::visible(&state.cache, &user, &name)?;
    Ok(Json(Sharing {
        shared_with: server.spec.shared_with.clone(),
    }))
}

/// Sets whom the server is shared with, the whole list: its owner, a compute-server admin, or a
/// sharee with role admin (roles up to use, the admins' entries unchanged). Removing someone
/// closes their open terminal, SSH and app sessions.
async fn share(
    State(state): State<AppState>,
    Bearer(user): Bearer,
    Path(name): Path<String>,
    body: Result<Json<Sharing>, JsonRejection>,
) -> Result<Json<Sharing>, ApiError> {
    ready(&state)?;
    let Json(body) = body.map_err(|e| ApiError(Problem::BadRequest(e.body_text())))?;
    let changed = servers::share(&state.servers, &state.cache, &user, &name, body.shared_with).await?;
    Ok(Json(Sharing {
        shared_with: changed.spec.shared_with,
    }))
}

/// A key to sign: `{"publicKey": "ssh-ed25519 AAAA... bob@laptop"}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct KeyToSign {
    public_key: String,
}

/// Signs the caller's own public key for plain `ssh -J` to their servers and those shared with
/// them to use: 200 with the certificate, the file name OpenSSH looks for, until when it is good.
async fn ssh_certificate(
    State(state): State<AppState>,
    Bearer(user): Bearer,
    body: Result<Json<KeyToSign>, JsonRejection>,
) -> Result<Json<servers::PersonCertificate>, ApiError> {
    ready(&state)?;
    let Json(body) = body.map_err(|e| ApiError(Problem::BadRequest(e.body_text())))?;
    Ok(Json(servers::certificate_for(
        &state.cache,
        state.ssh.as_deref(),
        &user,
        &body.public_key,
    )?))
}
