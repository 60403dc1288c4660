//! A Kubernetes API server in memory for unit tests (the kube-rs controller-rs pattern): a
//! [`kube::Client`] whose requests arrive at the test, which checks each one and answers it.
//! Reconcile, placement and handler tests run on it without a cluster; what a role writes is
//! then exactly what the test saw, so a second write or a missing one fails the test.

use std::time::Duration;

use axum::http::{Method, Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use serde::Serialize;
use serde_json::Value;
use tower_test::mock::{self, Handle, SendResponse};

/// How long [`ApiServer::next`] waits for a request before the test fails.
const WAIT: Duration = Duration::from_secs(5);

/// The test's side of the client: the requests it sent, in order.
pub struct ApiServer(Handle<Request<Body>, Response<Body>>);

/// One request, to be answered with [`Call::answer`] or [`Call::status`].
pub struct Call {
    pub method: Method,
    /// The path without the query, as `/apis/computeserver.io/v1alpha1/namespaces/compute/computeservers/lab`.
    pub path: String,
    /// The query string, `""` when there is none.
    pub query: String,
    /// The `Content-Type` the client sent (which patch it is), `""` when none.
    pub content_type: String,
    /// The body as JSON, `Value::Null` when it is empty.
    pub body: Value,
    respond: SendResponse<Response<Body>>,
}

/// A client talking to a new in-memory API server, namespace `compute` by default.
pub fn client() -> (Client, ApiServer) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(service, "compute"), ApiServer(handle))
}

impl ApiServer {
    /// The next request; fails the test when none comes within 5 s.
    pub async fn next(&mut self) -> Call {
        let (request, respond) = tokio::time::timeout(WAIT, self.0.next_request())
            .await
            .expect("the API server waited 5 s for a request that never came")
            .expect("the client went away before its next request");
        let (parts, body) = request.into_parts();
        let bytes = body.collect_bytes().await.expect("the request's body");
        let body = match bytes.is_empty() {
            true => Value::Null,
            false => serde_json::from_slice(&bytes).expect("a JSON body"),
        };
        Call {
            method: parts.method,
            path: parts.uri.path().to_string(),
            query: parts.uri.query().unwrap_or_default().to_string(),
            content_type: parts
                .headers
                .get(axum::http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string(),
            body,
            respond,
        }
    }

    /// Fails the test when a request comes within `quiet` (a write the role should not make).
    pub async fn silent(&mut self, quiet: Duration) {
        if let Ok(Some((request, _))) = tokio::time::timeout(quiet, self.0.next_request()).await {
            panic!("unexpected request: {} {}", request.method(), request.uri());
        }
    }
}

impl ApiServer {
    /// Answers every request from now on with 200 and its own body (an Event, a status) in
    /// the background; the task ends with the client, giving `METHOD path` of each request.
    pub fn answer_all(mut self) -> tokio::task::JoinHandle<Vec<String>> {
        tokio::spawn(async move {
            let mut seen = Vec::new();
            while let Some((request, respond)) = self.0.next_request().await {
                seen.push(format!("{} {}", request.method(), request.uri().path()));
                let body = request.into_body().collect_bytes().await.unwrap_or_default();
                let body = if body.is_empty() {
                    b"{}".to_vec().into()
                } else {
                    body
                };
                let response = Response::builder()
                    .status(StatusCode::OK)
                    .header("content-type", "application/json")
                    .body(Body::from(body.to_vec()))
                    .expect("a response");
                respond.send_response(response);
            }
            seen
        })
    }
}

impl Call {
    /// Answers 200 with `body` as JSON.
    pub fn answer(self, body: &impl Serialize) {
        self.reply(StatusCode::OK, serde_json::to_vec(body).expect("JSON"));
    }

    /// Answers with a Kubernetes `Status` of `code` and `reason` (`NotFound`, `Conflict`, ...).
    pub fn status(self, code: u16, reason: &str) {
        let status = serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": format!("{reason} (from the test's API server)"), "reason": reason, "code": code,
        });
        let code = StatusCode::from_u16(code).expect("a status code");
        self.reply(code, serde_json::to_vec(&status).expect("JSON"));
    }

    /// Asserts the method and path, as `("PATCH", "/apis/.../computeservers/lab")`.
    pub fn expect(self, method: &str, path: &str) -> Self {
        assert_eq!(
            (self.method.as_str(), self.path.as_str()),
            (method, path),
            "the request (query {:?}, body {})",
            self.query,
            self.body
        );
        self
    }

    fn reply(self, code: StatusCode, body: Vec<u8>) {
        self.respond.send_response(json_response(code, body));
    }
}

/// An answer of the API server: `code` with a JSON `body`.
fn json_response(code: StatusCode, body: Vec<u8>) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .expect("a response")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ComputeServer;
    use kube::Api;

    #[tokio::test]
    async fn a_request_reaches_the_test_and_its_answer_the_client() {
        let (client, mut server) = client();
        let api: Api<ComputeServer> = Api::default_namespaced(client);
        let get = tokio::spawn(async move { api.get("lab").await });
        let call = server.next().await.expect(
            "GET",
            "/apis/computeserver.io/v1alpha1/namespaces/compute/computeservers/lab",
        );
        call.status(404, "NotFound");
        let error = get.await.unwrap().unwrap_err();
        assert!(
            matches!(&error, kube::Error::Api(status) if status.code == 404),
            "{error}"
        );
        server.silent(Duration::from_millis(50)).await;
    }
}
