//! Tests for entity components: the remote platform seam, observers, writes and dispatch.

use std::sync::Arc;

use futures::future::BoxFuture;
use parking_lot::Mutex;
use serde_json::{Map, Value, json};

use super::*;
use crate::config_entries::SOURCE_USER;
use crate::core::CoreConfig;
use crate::entity::{Entity, EntityServiceCall};
use crate::service::ServiceRequest;
use crate::store::MemoryStoreBackend;

/// A pre-built switch, as a host's proxy would be.
struct Switch {
    /// Its info.
    info: EntityInfo,
    /// Its state.
    on: Mutex<bool>,
    /// Its handle.
    handle: Mutex<Option<EntityHandle>>,
}

impl Switch {
    fn new(unique_id: &str) -> Arc<Self> {
        let mut info = EntityInfo::new("switch");
        info.unique_id = Some(unique_id.to_owned());
        info.name = Some(format!("Switch {unique_id}"));
        Arc::new(Self {
            info,
            on: Mutex::new(false),
            handle: Mutex::new(None),
        })
    }
}

impl Entity for Switch {
    fn info(&self) -> EntityInfo {
        self.info.clone()
    }
    fn state(&self) -> Option<String> {
        Some(if *self.on.lock() { "on" } else { "off" }.to_owned())
    }
    fn added_to_core(&self, handle: EntityHandle) -> BoxFuture<'_, ()> {
        *self.handle.lock() = Some(handle);
        Box::pin(async {})
    }
    fn call_service(
        &self,
        call: EntityServiceCall,
    ) -> BoxFuture<'_, Result<Option<Value>, ServiceError>> {
        Box::pin(async move {
            *self.on.lock() = call.service == "turn_on";
            if let Some(handle) = self.handle.lock().clone() {
                handle.write_state().unwrap();
            }
            Ok(None)
        })
    }
}

async fn core_with_entry() -> (Core, ConfigEntry) {
    let core = Core::builder(CoreConfig::new("unused"))
        .store_backend(Arc::new(MemoryStoreBackend::new()))
        .build()
        .unwrap();
    core.start().await.unwrap();
    let entry = ConfigEntry::new("remote_demo", "Remote", Map::new(), SOURCE_USER);
    let entry = core.config_entries().add(entry).await.unwrap();
    (core, entry)
}

#[derive(Default)]
struct Counter {
    added: Mutex<Vec<String>>,
    removed: Mutex<Vec<String>>,
}

impl EntityObserver for Counter {
    fn entity_added(&self, description: &EntityDescription) {
        self.added.lock().push(description.entity_id.clone());
    }
    fn entity_removed(&self, description: &EntityDescription) {
        self.removed.lock().push(description.entity_id.clone());
    }
}

#[tokio::test]
async fn a_remote_platform_attaches_entities_and_releases_its_slot() {
    let (core, entry) = core_with_entry().await;
    let counter = Arc::new(Counter::default());
    let _observer = core.entities().add_observer(counter.clone());
    let platform = EntityPlatform::new("switch", "remote_demo", Some(&entry.entry_id));
    core.entities()
        .register_remote_platform(&entry, platform.clone())
        .unwrap();
    assert!(platform.is_remote());
    let switch = Switch::new("a");
    let ids = platform
        .add_entities([switch.clone() as EntityRef])
        .await
        .unwrap();
    assert_eq!(ids, ["switch.switch_a"]);
    assert_eq!(*counter.added.lock(), ids);
    assert_eq!(core.states().get("switch.switch_a").unwrap().state, "off");
    assert!(
        core.services().has_service("switch", "turn_on"),
        "the component loaded"
    );

    let context = Context::new();
    core.services()
        .call(
            ServiceRequest::new("switch", "turn_on")
                .with_target(ServiceTarget::entities(["switch.switch_a"]))
                .with_context(context.clone()),
        )
        .await
        .unwrap();
    let on = core.states().get("switch.switch_a").unwrap();
    assert_eq!(on.state, "on");
    assert_eq!(on.context, context, "the write carries the call's context");

    let again = EntityPlatform::new("switch", "remote_demo", Some(&entry.entry_id));
    assert!(matches!(
        core.entities()
            .register_remote_platform(&entry, again.clone()),
        Err(EntityError::PlatformAlreadySetUp { .. })
    ));
    let local_release = core
        .entities()
        .unload_entry_platforms(&entry.entry_id)
        .await;
    assert_eq!(
        local_release, 0,
        "a local unload leaves remote platforms alone"
    );
    assert_eq!(core.entities().unregister_remote_platform(&entry).await, 1);
    assert!(core.states().get("switch.switch_a").is_none());
    assert_eq!(*counter.removed.lock(), ["switch.switch_a"]);
    // A late write from the removed entity does not resurrect its state.
    let handle = switch.handle.lock().clone().unwrap();
    assert!(handle.write_state().is_err());
    assert!(core.states().get("switch.switch_a").is_none());

    core.entities()
        .register_remote_platform(&entry, again.clone())
        .unwrap();
    again.add_entity(Switch::new("a")).await.unwrap();
    assert_eq!(
        core.states().get("switch.switch_a").unwrap().state,
        "off",
        "same entity id again"
    );
}

#[tokio::test]
async fn platforms_refuse_what_does_not_fit() {
    let (core, entry) = core_with_entry().await;
    let unknown = EntityPlatform::new("teleporter", "remote_demo", Some(&entry.entry_id));
    assert!(matches!(
        core.entities().add_platform(&unknown),
        Err(EntityError::UnknownDomain(_))
    ));
    let other = EntityPlatform::new("switch", "remote_demo", Some("another-entry"));
    assert!(matches!(
        core.entities().register_remote_platform(&entry, other),
        Err(EntityError::EntryMismatch { .. })
    ));
    let unregistered = EntityPlatform::new("switch", "remote_demo", Some(&entry.entry_id));
    assert!(matches!(
        unregistered.add_entity(Switch::new("b")).await,
        Err(EntityError::PlatformNotRegistered { .. })
    ));
    let lights = core
        .entities()
        .forward_entry_setup(&entry, "light")
        .unwrap();
    assert!(matches!(
        lights.add_entity(Switch::new("c")).await,
        Err(EntityError::DomainMismatch { .. })
    ));
    let switches = core
        .entities()
        .forward_entry_setup(&entry, "switch")
        .unwrap();
    switches.add_entity(Switch::new("d")).await.unwrap();
    assert!(core.entities().description("switch.switch_d").is_some());
    let err = core
        .entities()
        .call_entity_service(
            "switch.switch_d",
            "turn_on",
            json!({"bad": 1}).as_object().cloned().unwrap_or_default(),
            None,
            false,
        )
        .await;
    assert!(matches!(err, Err(ServiceError::Validation(_))));
    let missing = core
        .entities()
        .call_entity_service("switch.nope", "turn_on", Map::new(), None, false)
        .await;
    assert!(matches!(missing, Err(ServiceError::Validation(_))));
    assert_eq!(
        core.entities()
            .unload_entry_platforms(&entry.entry_id)
            .await,
        2
    );
    assert!(core.entities().platforms().is_empty());
}

/// A switch without a unique id: named, never registered.
fn unregistered_switch(name: &str) -> Arc<Switch> {
    let mut info = EntityInfo::new("switch");
    info.name = Some(name.to_owned());
    Arc::new(Switch {
        info,
        on: Mutex::new(false),
        handle: Mutex::new(None),
    })
}

#[tokio::test]
async fn same_named_entities_without_unique_id_get_the_ids_a_search_from_one_gives() {
    const ENTITIES: usize = 300;
    let (core, entry) = core_with_entry().await;
    let platform = core
        .entities()
        .forward_entry_setup(&entry, "switch")
        .unwrap();
    for n in 1..=ENTITIES {
        let entity_id = platform
            .add_entity(unregistered_switch("Pump"))
            .await
            .unwrap();
        let expected = if n == 1 {
            "switch.pump".to_owned()
        } else {
            format!("switch.pump_{n}")
        };
        assert_eq!(entity_id.as_deref(), Some(expected.as_str()));
    }
    // Searching from 1 every time would probe ENTITIES² / 2 ids.
    let probes = core.states().id_hints().probes();
    assert!(probes <= 2 * ENTITIES as u64, "{probes} probes");

    // A removed entity's id is found again, lowest first; a registered entity's id stays taken.
    platform.remove_entity("switch.pump_40").await.unwrap();
    platform.remove_entity("switch.pump_9").await.unwrap();
    let registered = core
        .entity_registry()
        .get_or_create(crate::entity_registry::EntityRegistration {
            domain: "switch".into(),
            platform: "other".into(),
            unique_id: "x".into(),
            suggested_object_id: Some("pump_9".into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(registered.entity_id, "switch.pump_9");
    let next = platform.add_entity(unregistered_switch("Pump")).await;
    assert_eq!(next.unwrap().as_deref(), Some("switch.pump_40"));
    core.entity_registry().remove("switch.pump_9");
    let next = platform.add_entity(unregistered_switch("Pump")).await;
    assert_eq!(next.unwrap().as_deref(), Some("switch.pump_9"));
    let next = platform.add_entity(unregistered_switch("Pump")).await;
    assert_eq!(next.unwrap().as_deref(), Some("switch.pump_301"));
    platform.reset().await;
    assert!(core.states().is_empty());
}
