//! Events on objects, as `kubectl describe` and the web's detail page show them. Publishing is
//! never fatal: a failure is logged and the work goes on.

use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource, ResourceExt};
use tracing::warn;

/// Publishes Events as `controller` (such as `compute-server-agent`), from `instance` (a node).
#[derive(Clone)]
pub struct Events(Recorder);

impl Events {
    pub fn new(client: Client, controller: &str, instance: Option<String>) -> Events {
        let reporter = Reporter {
            controller: controller.into(),
            instance,
        };
        Events(Recorder::new(client, reporter))
    }

    /// Publishes an Event of `type_` with `reason` and `note` about `action` on `object`.
    pub async fn publish<K>(&self, object: &K, type_: EventType, reason: &str, action: &str, note: String)
    where
        K: Resource<DynamicType = ()>,
    {
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: None,
        };
        if let Err(error) = self.0.publish(&event, &object.object_ref(&())).await {
            warn!(%error, object = %object.name_any(), %reason, "could not publish an event");
        }
    }
}
