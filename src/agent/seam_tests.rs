//! The agent's writes against an API server in memory (src/mock_api.rs), with a Docker engine
//! that does not answer: the finalizer, the status and the node's heartbeat, checked request by
//! request without a cluster.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::*;
use crate::api::{ComputeServerStatus, lease_name};
use crate::mock_api::{self, ApiServer};

const SERVERS: &str = "/apis/computeserver.io/v1alpha1/namespaces/compute/computeservers";

/// The agent of node `n1` on the mocked API server; its Docker engine is a loopback port
/// nobody listens on (9, discard), so every Docker call fails as when the daemon is down.
fn context() -> (Arc<Context>, ApiServer) {
    let docker = bollard::Docker::connect_with_http("http://127.0.0.1:9", 2, bollard::API_DEFAULT_VERSION)
        .expect("a client (it connects on first use)");
    context_with(docker)
}

/// The agent of node `n1` on the mocked API server and `docker`.
fn context_with(docker: bollard::Docker) -> (Arc<Context>, ApiServer) {
    let (client, api) = mock_api::client();
    let network = network::Setup {
        docker_host: "tcp://127.0.0.1:9".into(),
        publish_address: "127.0.0.1".into(),
        bridges: Vec::new(),
    };
    let ctx = Context {
        gpus: Vec::new(),
        claims: Default::default(),
        servers: crate::runtime::watch::filled(Vec::new()),
        snapshots: crate::runtime::watch::filled(Vec::new()),
        metrics: metrics::Metrics::register(&mut prometheus_client::registry::Registry::default()),
        events: crate::runtime::events::Events::new(
            client.clone(),
            "compute-server-agent",
            Some("n1".into()),
        ),
        client,
        docker,
        node: "n1".into(),
        address: "127.0.0.1".into(),
        host: plan::Host {
            publish_address: "127.0.0.1".into(),
            networks: ("compute-server".into(), "compute-server-closed".into()),
            ipv6: false,
            user_cas: Vec::new(),
        },
        network,
        failures: Default::default(),
        samples: Default::default(),
        store: None,
        gateway: None,
    };
    (Arc::new(ctx), api)
}

/// alice's server `lab`, placed on n1.
fn lab() -> ComputeServer {
    serde_json::from_value(json!({
        "apiVersion": "computeserver.io/v1alpha1", "kind": "ComputeServer",
        "metadata": {"name": "lab", "namespace": "compute", "uid": "uid-lab", "resourceVersion": "3",
                     "labels": {NODE_LABEL: "n1"}},
        "spec": {"owner": "alice", "image": "busybox"},
    }))
    .unwrap()
}

#[tokio::test]
async fn a_new_server_gets_the_finalizer_first_and_nothing_else() {
    let (ctx, mut api) = context();
    let server = Arc::new(lab());
    let running = tokio::spawn(reconcile_steps_owned(server.clone(), ctx.clone()));
    let call = api.next().await.expect("PATCH", &format!("{SERVERS}/lab"));
    assert_eq!(call.content_type, "application/json-patch+json");
    let adds: Vec<&serde_json::Value> = call
        .body
        .as_array()
        .unwrap()
        .iter()
        .filter(|op| op["op"] == "add")
        .collect();
    assert_eq!(adds.len(), 1, "{}", call.body);
    assert!(adds[0].to_string().contains(CONTAINER_FINALIZER), "{}", call.body);
    let mut with = lab();
    with.metadata.finalizers = Some(vec![CONTAINER_FINALIZER.into()]);
    call.answer(&with);
    assert!(running.await.unwrap().is_ok());
    api.silent(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn a_server_whose_container_cannot_be_removed_keeps_its_finalizer() {
    let (ctx, mut api) = context();
    let mut deleting = lab();
    deleting.metadata.finalizers = Some(vec![CONTAINER_FINALIZER.into()]);
    deleting.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::now(),
    ));
    let result = tokio::spawn(reconcile_steps_owned(Arc::new(deleting), ctx.clone()));
    // Docker is down: the cleanup fails, and the finalizer stays (its data is not let go).
    api.silent(Duration::from_millis(500)).await;
    let error = result.await.unwrap().unwrap_err();
    assert!(error.to_string().contains("finalizer"), "{error}");
}

#[tokio::test]
async fn the_status_is_applied_as_the_agents_field_manager_only_when_it_changed() {
    let (ctx, mut api) = context();
    let server = lab();
    let status = ComputeServerStatus {
        phase: Some(Phase::Running),
        node: Some("n1".into()),
        message: Some("running".into()),
        ..Default::default()
    };
    let write = {
        let (server, ctx, status) = (server.clone(), ctx.clone(), status.clone());
        tokio::spawn(async move { status::write(&server, &ctx, status).await })
    };
    let call = api.next().await.expect("PATCH", &format!("{SERVERS}/lab/status"));
    assert_eq!(call.content_type, "application/apply-patch+yaml");
    assert!(
        call.query.contains("fieldManager=compute-server-agent"),
        "{}",
        call.query
    );
    assert!(call.query.contains("force=true"), "{}", call.query);
    assert_eq!(call.body["status"]["phase"], "Running");
    assert_eq!(call.body["status"]["node"], "n1");
    let mut written = server.clone();
    written.status = Some(status.clone());
    call.answer(&written);
    write.await.unwrap().unwrap();
    // The same status again: no write (an unchanged server triggers no reconcile).
    status::write(&written, &ctx, status).await.unwrap();
    api.silent(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn the_lease_is_renewed_when_the_nodes_status_cannot_be_written() {
    let (ctx, mut api) = context();
    let registration = node::Registration {
        labels: Default::default(),
        lease_namespace: "compute".into(),
        lease_seconds: 40,
        ratios: ("4".into(), "1".into()),
    };
    let report = tokio::spawn(async move { node::report(&ctx, &registration).await });
    api.next()
        .await
        .expect("PATCH", "/apis/computeserver.io/v1alpha1/computenodes/n1")
        .status(500, "InternalError");
    let call = api.next().await.expect(
        "PATCH",
        &format!(
            "/apis/coordination.k8s.io/v1/namespaces/compute/leases/{}",
            lease_name("n1")
        ),
    );
    assert_eq!(call.body["spec"]["holderIdentity"], "n1");
    assert_eq!(call.body["spec"]["leaseDurationSeconds"], 40);
    assert!(call.body["spec"]["renewTime"].is_string(), "{}", call.body);
    let lease = call.body.clone();
    call.answer(&lease);
    let error = report.await.unwrap().unwrap_err();
    assert!(
        error.to_string().contains("InternalError"),
        "the status's error is reported: {error}"
    );
}

#[tokio::test]
async fn ensure_makes_the_container_once_then_leaves_it_and_replaces_it_when_the_spec_changes() {
    let (fake, engine) = super::fake_docker::FakeDocker::start().await;
    let (ctx, api) = context_with(engine);
    let events = api.answer_all();
    let mut server = lab();
    server.spec.resources.cpu = Some(k8s_openapi::apimachinery::pkg::api::resource::Quantity(
        "1".into(),
    ));
    let planned = plan::plan(&server, None).unwrap();
    let name = planned.container_name.clone();

    let observed = docker::ensure(&server, &planned, &ctx).await.unwrap();
    assert_eq!(observed.container.state.and_then(|s| s.running), Some(true));
    let made = fake.writes();
    assert_eq!(
        made,
        [
            "POST /volumes/create".to_string(),
            "POST /containers/create".into(),
            format!("POST /containers/{name}/start"),
        ],
        "the data volume, the container, its start"
    );
    let container = fake.container(&name).unwrap();
    assert_eq!(
        container["HostConfig"]["NanoCpus"], 1_000_000_000,
        "exactly its CPU"
    );
    assert_eq!(
        container["HostConfig"]["CapDrop"],
        json!(["ALL"]),
        "hardened: {}",
        container["HostConfig"]
    );

    // Nothing changed: a pass reads and writes nothing to Docker.
    docker::ensure(&server, &planned, &ctx).await.unwrap();
    assert_eq!(fake.writes(), Vec::<String>::new());

    // Another image: the container is made anew, its data volume kept.
    server.spec.image = Some("debian".into());
    let replanned = plan::plan(&server, None).unwrap();
    docker::ensure(&server, &replanned, &ctx).await.unwrap();
    let made = fake.writes();
    assert_eq!(
        made.first().map(String::as_str),
        Some(format!("DELETE /containers/{name}").as_str()),
        "{made:?}"
    );
    assert!(
        !made.iter().any(|w| w.contains("volumes")),
        "the data volume stays: {made:?}"
    );
    assert_eq!(fake.container(&name).unwrap()["Config"]["Image"], "debian");
    drop(ctx);
    let published = events.await.unwrap();
    assert!(
        published
            .iter()
            .all(|call| call.contains(" /apis/events.k8s.io/v1/namespaces/compute/events")),
        "only Events: {published:?}"
    );
    assert!(published.len() >= 3, "created, started, recreated: {published:?}");
}

async fn reconcile_steps_owned(server: Arc<ComputeServer>, ctx: Arc<Context>) -> Result<Action> {
    reconcile_steps(server, &ctx).await
}
