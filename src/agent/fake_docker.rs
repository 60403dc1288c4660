//! A Docker Engine in memory for unit tests: the HTTP API bollard speaks, on a loopback port,
//! with containers, volumes and images kept in a map. The agent's `ensure` runs against it
//! unchanged, without a daemon; every call it makes is recorded, so a test sees exactly which
//! Docker writes a pass made.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

#[derive(Default)]
struct Engine {
    containers: HashMap<String, Value>,
    volumes: HashMap<String, Value>,
    /// `METHOD /path` of every call but reads of state (GET), in order.
    writes: Vec<String>,
}

/// The fake engine; dropped, it stops serving.
#[derive(Clone, Default)]
pub struct FakeDocker(Arc<Mutex<Engine>>);

impl FakeDocker {
    /// Serves a new engine on a free loopback port; a bollard client to it.
    pub async fn start() -> (FakeDocker, bollard::Docker) {
        let fake = FakeDocker::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let app = Router::new().fallback(serve).with_state(fake.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let client = bollard::Docker::connect_with_http(
            &format!("http://{address}"),
            10,
            bollard::API_DEFAULT_VERSION,
        )
        .unwrap();
        (fake, client)
    }

    /// The writes made since the last call, as `POST /containers/create`, and forgets them.
    pub fn writes(&self) -> Vec<String> {
        std::mem::take(&mut self.0.lock().unwrap().writes)
    }

    /// The container `name` as `docker inspect` shows it.
    pub fn container(&self, name: &str) -> Option<Value> {
        self.0.lock().unwrap().containers.get(name).cloned()
    }
}

fn answer(code: StatusCode, body: Value) -> Response {
    (code, axum::Json(body)).into_response()
}

fn missing(what: &str) -> Response {
    answer(
        StatusCode::NOT_FOUND,
        json!({"message": format!("No such {what}")}),
    )
}

async fn serve(State(fake): State<FakeDocker>, method: Method, uri: Uri, body: Bytes) -> Response {
    // bollard puts the API version first: /v1.47/containers/...
    let path = uri.path();
    let path = match path.strip_prefix("/v1.") {
        Some(rest) => rest.split_once('/').map_or("/", |(_, p)| p),
        None => path.trim_start_matches('/'),
    };
    let parts: Vec<&str> = path.split('/').collect();
    let query: HashMap<String, String> = uri
        .query()
        .map(|q| serde_urlencoded::from_str(q).unwrap_or_default())
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut engine = fake.0.lock().unwrap();
    if method != Method::GET {
        engine.writes.push(format!("{method} /{}", parts.join("/")));
    }
    match (method.as_str(), parts.as_slice()) {
        ("GET", ["_ping"]) => (StatusCode::OK, "OK").into_response(),
        ("GET", ["images", .., "json"]) => answer(StatusCode::OK, json!({"Id": "sha256:fake"})),
        ("GET", ["volumes", name]) => match engine.volumes.get(*name) {
            Some(volume) => answer(StatusCode::OK, volume.clone()),
            None => missing("volume"),
        },
        ("POST", ["volumes", "create"]) => {
            let name = body["Name"].as_str().unwrap_or_default().to_string();
            let volume = json!({"Name": name, "Driver": "local", "Mountpoint": "/fake", "Labels": body["Labels"],
                                "Scope": "local", "Options": {}});
            engine.volumes.insert(name, volume.clone());
            answer(StatusCode::CREATED, volume)
        }
        ("GET", ["containers", name, "json"]) => match engine.containers.get(*name) {
            Some(container) => answer(StatusCode::OK, container.clone()),
            None => missing("container"),
        },
        ("POST", ["containers", "create"]) => {
            let name = query.get("name").cloned().unwrap_or_default();
            if engine.containers.contains_key(&name) {
                return answer(
                    StatusCode::CONFLICT,
                    json!({"message": "Conflict. The container name is in use"}),
                );
            }
            let networks = body["NetworkingConfig"]["EndpointsConfig"].clone();
            let container = json!({
                "Id": format!("id-{name}"), "Name": format!("/{name}"), "Created": "2026-12-01T00:00:00Z",
                "Config": {"Image": body["Image"], "Labels": body["Labels"], "Env": body["Env"]},
                "HostConfig": body["HostConfig"],
                "State": {"Status": "created", "Running": false, "ExitCode": 0,
                          "StartedAt": "0001-01-01T00:00:00Z", "FinishedAt": "0001-01-01T00:00:00Z"},
                "NetworkSettings": {"Networks": networks, "Ports": {}},
                "RestartCount": 0,
            });
            engine.containers.insert(name.clone(), container);
            answer(
                StatusCode::CREATED,
                json!({"Id": format!("id-{name}"), "Warnings": []}),
            )
        }
        ("POST", ["containers", name, action]) => {
            let Some(container) = engine.containers.get_mut(*name) else {
                return missing("container");
            };
            match *action {
                "start" => {
                    container["State"]["Running"] = true.into();
                    container["State"]["Status"] = "running".into();
                    container["State"]["StartedAt"] = "2026-12-01T00:00:01Z".into();
                }
                "stop" => {
                    container["State"]["Running"] = false.into();
                    container["State"]["Status"] = "exited".into();
                }
                "update" => {
                    if let Some(cpus) = body.get("NanoCpus") {
                        container["HostConfig"]["NanoCpus"] = cpus.clone();
                    }
                }
                _ => return answer(StatusCode::NOT_IMPLEMENTED, json!({"message": "not in the fake"})),
            }
            StatusCode::NO_CONTENT.into_response()
        }
        ("DELETE", ["containers", name]) => match engine.containers.remove(*name) {
            Some(_) => StatusCode::NO_CONTENT.into_response(),
            None => missing("container"),
        },
        ("DELETE", ["volumes", name]) => match engine.volumes.remove(*name) {
            Some(_) => StatusCode::NO_CONTENT.into_response(),
            None => missing("volume"),
        },
        _ => answer(
            StatusCode::NOT_IMPLEMENTED,
            json!({"message": format!("{method} /{path} is not in the fake engine")}),
        ),
    }
}
