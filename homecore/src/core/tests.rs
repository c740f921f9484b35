//! Tests for the core: lifecycle, persistence across a restart, and the store backend seam.

use std::sync::Mutex as StdMutex;

use serde_json::json;

use super::*;
use crate::config_entries::{ConfigEntry, ConfigEntryState, HandlerTable, SOURCE_USER};
use crate::device_registry::DeviceInfo;
use crate::entity_registry::{EntityRegistration, EntityUpdate};
use crate::event::MATCH_ALL;
use crate::store::{MemoryStoreBackend, StoreEnvelope, StoreKey};
use futures::future::BoxFuture;

fn file_core(dir: &std::path::Path) -> Core {
    Core::builder(CoreConfig::new(dir)).build().unwrap()
}

#[tokio::test]
async fn registries_entries_and_restore_state_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let core = file_core(dir.path());
    core.start().await.unwrap();
    assert_eq!(core.state(), CoreState::Running);
    let area = core.area_registry().create("Living Room").unwrap();
    let entry = core
        .config_entries()
        .add(ConfigEntry::new(
            "demo",
            "Demo",
            serde_json::from_value(json!({"port": 8080, "ratio": 0.5})).unwrap(),
            SOURCE_USER,
        ))
        .await
        .unwrap();
    assert_eq!(
        entry.state,
        ConfigEntryState::SetupError,
        "no setup code for demo"
    );
    let device = core
        .device_registry()
        .get_or_create(DeviceInfo {
            config_entry_id: entry.entry_id.clone(),
            identifiers: vec![("demo".into(), "1".into())],
            name: Some("Demo device".into()),
            ..DeviceInfo::default()
        })
        .unwrap();
    let registered = core
        .entity_registry()
        .get_or_create(EntityRegistration {
            domain: "sensor".into(),
            platform: "demo".into(),
            unique_id: "temp".into(),
            config_entry_id: Some(entry.entry_id.clone()),
            device_id: Some(device.id.clone()),
            ..EntityRegistration::default()
        })
        .unwrap();
    core.entity_registry()
        .update(
            &registered.entity_id,
            EntityUpdate {
                area_id: Some(Some(area.id.clone())),
                ..Default::default()
            },
        )
        .unwrap();
    core.states()
        .set(&registered.entity_id, "21", Map::new(), false, None)
        .unwrap();
    core.restore_state().track(&registered.entity_id);
    let failures = core.stop().await.unwrap();
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(core.state(), CoreState::Stopped);
    for key in [
        "core.area_registry",
        "core.device_registry",
        "core.entity_registry",
        "core.config_entries",
        "core.restore_state",
    ] {
        assert!(
            dir.path().join(".storage").join(key).is_file(),
            "{key} written by the final write"
        );
    }

    let restarted = file_core(dir.path());
    restarted.load().await.unwrap();
    assert_eq!(
        restarted.area_registry().get(&area.id),
        core.area_registry().get(&area.id)
    );
    assert_eq!(
        restarted.device_registry().get(&device.id),
        core.device_registry().get(&device.id)
    );
    let entity = restarted
        .entity_registry()
        .get(&registered.entity_id)
        .unwrap();
    assert_eq!(entity.area_id.as_deref(), Some(area.id.as_str()));
    let reloaded = restarted.config_entries().entry(&entry.entry_id).unwrap();
    assert_eq!(reloaded.state, ConfigEntryState::NotLoaded);
    assert!(reloaded.data["port"].is_i64() && reloaded.data["ratio"].is_f64());
    assert_eq!(
        restarted
            .restore_state()
            .last_state(&registered.entity_id)
            .unwrap()
            .state
            .state,
        "21"
    );
}

#[tokio::test]
async fn lifecycle_events_fire_in_order_and_stop_is_idempotent() {
    let core = Core::builder(CoreConfig::new("/nonexistent"))
        .store_backend(Arc::new(MemoryStoreBackend::new()))
        .build()
        .unwrap();
    let seen = Arc::new(StdMutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    let _listener = core
        .bus()
        .listen(MATCH_ALL, move |event| {
            let sink = Arc::clone(&sink);
            async move { sink.lock().unwrap().push(event.event_type.clone()) }
        })
        .unwrap();
    core.start().await.unwrap();
    assert!(matches!(
        core.start().await,
        Err(CoreError::InvalidState { .. })
    ));
    core.stop().await.unwrap();
    core.stop().await.unwrap();
    core.bus().wait_idle().await;
    assert_eq!(
        *seen.lock().unwrap(),
        vec![
            "homeassistant_start",
            "homeassistant_started",
            "homeassistant_stop",
            "homeassistant_final_write"
        ],
        "homeassistant_close is not delivered to match-all listeners"
    );
    assert!(matches!(
        core.start().await,
        Err(CoreError::InvalidState { .. })
    ));
}

/// A backend that records every save, as a backend routing IO to another process would see it.
#[derive(Default)]
struct RecordingBackend {
    /// Envelopes saved, by key.
    saved: StdMutex<Vec<(String, StoreEnvelope)>>,
}

impl StoreBackend for RecordingBackend {
    fn load<'a>(
        &'a self,
        key: &'a StoreKey,
    ) -> BoxFuture<'a, Result<Option<StoreEnvelope>, StoreError>> {
        Box::pin(async move {
            Ok(self
                .saved
                .lock()
                .unwrap()
                .iter()
                .rev()
                .find(|(k, _)| k == key.as_str())
                .map(|(_, e)| e.clone()))
        })
    }
    fn save<'a>(
        &'a self,
        key: &'a StoreKey,
        envelope: &'a StoreEnvelope,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            self.saved
                .lock()
                .unwrap()
                .push((key.to_string(), envelope.clone()));
            Ok(())
        })
    }
    fn remove<'a>(&'a self, _key: &'a StoreKey) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async { Ok(()) })
    }
}

#[tokio::test]
async fn delayed_and_final_saves_go_through_the_installed_backend() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Arc::new(RecordingBackend::default());
    let core = Core::builder(CoreConfig::new(dir.path()))
        .store_backend(backend.clone())
        .build()
        .unwrap();
    core.start().await.unwrap();
    core.area_registry().create("Kitchen").unwrap();
    let custom = core.stores().store("demo.cache", 1, 1).unwrap();
    custom.delay_save(|| json!({"n": 1}), Duration::from_secs(3600));
    core.stop().await.unwrap();
    let keys: Vec<String> = backend
        .saved
        .lock()
        .unwrap()
        .iter()
        .map(|(k, _)| k.clone())
        .collect();
    assert!(keys.contains(&"core.area_registry".to_owned()), "{keys:?}");
    assert!(keys.contains(&"demo.cache".to_owned()));
    assert!(keys.contains(&"core.restore_state".to_owned()));
    assert!(
        !dir.path().join(".storage").exists(),
        "nothing bypassed the backend"
    );
}

#[tokio::test]
async fn entries_are_set_up_at_start() {
    let backend = Arc::new(MemoryStoreBackend::new());
    let first = Core::builder(CoreConfig::new("/nonexistent"))
        .store_backend(backend.clone())
        .build()
        .unwrap();
    first.start().await.unwrap();
    first
        .config_entries()
        .add(ConfigEntry::new("demo", "Demo", Map::new(), SOURCE_USER))
        .await
        .unwrap();
    first.stop().await.unwrap();

    struct Ok1;
    impl crate::config_entries::EntrySetupHandler for Ok1 {
        fn setup_entry<'a>(
            &'a self,
            _: &'a Core,
            _: &'a ConfigEntry,
        ) -> BoxFuture<'a, Result<(), crate::config_entries::SetupError>> {
            Box::pin(async { Ok(()) })
        }
        fn unload_entry<'a>(
            &'a self,
            _: &'a Core,
            _: &'a ConfigEntry,
        ) -> BoxFuture<'a, Result<(), String>> {
            Box::pin(async { Ok(()) })
        }
    }
    let second = Core::builder(CoreConfig::new("/nonexistent"))
        .store_backend(backend)
        .build()
        .unwrap();
    let table = HandlerTable::new();
    table.register_entry_setup("demo", Arc::new(Ok1));
    second.config_entries().set_handlers(Arc::new(table));
    second.start().await.unwrap();
    assert_eq!(
        second.config_entries().entries(None)[0].state,
        ConfigEntryState::Loaded
    );
}

#[tokio::test]
async fn config_updates_are_validated_persisted_and_announced() {
    let backend = Arc::new(MemoryStoreBackend::new());
    let core = Core::builder(CoreConfig::new("/nonexistent"))
        .store_backend(backend.clone())
        .build()
        .unwrap();
    let mut updates = core
        .bus()
        .subscribe(crate::event::EVENT_CORE_CONFIG_UPDATED)
        .unwrap();
    core.update_config(CoreConfigUpdate {
        location_name: Some("Cabin".into()),
        unit_system: Some(UnitSystem::UsCustomary),
        time_zone: Some("America/New_York".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    let event = updates.recv().await.unwrap();
    assert_eq!(event.data["location_name"], "Cabin");
    assert!(
        event.data.get("latitude").is_none(),
        "only changed fields are announced"
    );
    assert_eq!(core.config().unit_system.temperature_unit(), "°F");
    for bad in [
        CoreConfigUpdate {
            latitude: Some(91.0),
            ..Default::default()
        },
        CoreConfigUpdate {
            currency: Some("euro".into()),
            ..Default::default()
        },
        CoreConfigUpdate {
            time_zone: Some("Not a zone".into()),
            ..Default::default()
        },
        CoreConfigUpdate {
            language: Some("english!".into()),
            ..Default::default()
        },
    ] {
        assert!(matches!(
            core.update_config(bad).await,
            Err(CoreError::InvalidConfig(_))
        ));
    }
    assert_eq!(core.config().location_name, "Cabin");

    let restarted = Core::builder(CoreConfig::new("/nonexistent"))
        .store_backend(backend)
        .build()
        .unwrap();
    restarted.load().await.unwrap();
    assert_eq!(restarted.config().location_name, "Cabin");
    assert_eq!(restarted.config().time_zone, "America/New_York");
}

#[tokio::test]
async fn an_adopted_config_is_announced_but_never_persisted() {
    let backend = Arc::new(MemoryStoreBackend::new());
    let core = Core::builder(CoreConfig::new("/nonexistent"))
        .store_backend(backend.clone())
        .build()
        .unwrap();
    let mut updates = core
        .bus()
        .subscribe(crate::event::EVENT_CORE_CONFIG_UPDATED)
        .unwrap();
    let mut config = CoreConfig::new("/elsewhere");
    config.unit_system = UnitSystem::UsCustomary;
    config.country = Some("US".into());
    assert!(core.adopt_config(config.clone()).unwrap());
    let event = updates.recv().await.unwrap();
    assert_eq!(event.data["unit_system"], "us_customary");
    assert_eq!(event.data["country"], "US");
    assert!(event.data.get("language").is_none(), "only changed fields");
    assert_eq!(core.config().config_dir, PathBuf::from("/nonexistent"));
    assert!(!core.adopt_config(config).unwrap(), "nothing changed");
    let mut bad = CoreConfig::new("/nonexistent");
    bad.currency = "euro".into();
    assert!(core.adopt_config(bad).is_err());
    assert_eq!(core.config().unit_system, UnitSystem::UsCustomary);
    assert!(
        backend.keys().is_empty(),
        "an adopted configuration is not stored"
    );
}

#[tokio::test]
async fn a_corrupt_registry_file_does_not_stop_the_core() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join(".storage")).unwrap();
    std::fs::write(dir.path().join(".storage/core.entity_registry"), b"{broken").unwrap();
    std::fs::write(
        dir.path().join(".storage/.tmp-crashed-core.area_registry"),
        b"{",
    )
    .unwrap();
    let core = file_core(dir.path());
    core.start().await.unwrap();
    assert!(core.entity_registry().entries().is_empty());
    assert!(
        !dir.path()
            .join(".storage/.tmp-crashed-core.area_registry")
            .exists(),
        "interrupted writes are swept"
    );
    core.stop().await.unwrap();
}

#[test]
fn invalid_config_is_refused_at_build() {
    let mut config = CoreConfig::new("/nonexistent");
    config.longitude = 200.0;
    assert!(matches!(
        Core::builder(config).build(),
        Err(CoreError::InvalidConfig(_))
    ));
}

#[tokio::test]
async fn the_core_is_usable_from_many_tasks() {
    let core = Core::builder(CoreConfig::new("/nonexistent"))
        .store_backend(Arc::new(MemoryStoreBackend::new()))
        .build()
        .unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let core = core.clone();
            tokio::spawn(async move {
                for n in 0..50 {
                    core.states()
                        .set(
                            &format!("sensor.t{i}"),
                            n.to_string(),
                            Map::new(),
                            false,
                            None,
                        )
                        .unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(core.states().len(), 8);
    assert_eq!(core.states().get("sensor.t3").unwrap().state, "49");
}
