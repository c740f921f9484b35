//! Tests for the entity bridge over an in-memory main: every transition in order, and the
//! bounded state queue under a flood written without a single await.

use std::sync::atomic::AtomicU64;

use futures::future::BoxFuture;
use homecore::entity::{Entity, EntityHandle, EntityInfo};
use homecore::entity_platform::EntityPlatform;
use homecore::store::MemoryStoreBackend;
use homecore::{ConfigEntry, CoreConfig};
use parking_lot::Mutex;
use sandbox_proto::test_util::channel_pair;
use sandbox_proto::{ChannelBuilder, ChannelConfig};
use serde_json::Map;

use super::*;

/// A sensor whose state is a counter the test moves.
struct Counter {
    value: AtomicU64,
    handle: Mutex<Option<EntityHandle>>,
}

impl Counter {
    fn set(&self, value: u64) {
        self.value.store(value, Ordering::SeqCst);
        let handle = self.handle.lock().clone();
        handle
            .expect("added to the core")
            .write_state()
            .expect("state written");
    }
}

impl Entity for Counter {
    fn info(&self) -> EntityInfo {
        let mut info = EntityInfo::new("sensor");
        info.unique_id = Some("counter".to_owned());
        info.name = Some("Counter".to_owned());
        info
    }
    fn state(&self) -> Option<String> {
        Some(self.value.load(Ordering::SeqCst).to_string())
    }
    fn added_to_core(&self, handle: EntityHandle) -> BoxFuture<'_, ()> {
        *self.handle.lock() = Some(handle);
        Box::pin(async {})
    }
}

/// What the in-memory main saw: the states pushed, in order.
#[derive(Default)]
struct Main {
    states: Mutex<Vec<String>>,
    descriptions: Mutex<Vec<wire::EntityDescription>>,
}

async fn bridge() -> (EntityBridge, Arc<Counter>, Arc<Main>, Channel, Core) {
    let core = Core::builder(CoreConfig::new("unused"))
        .store_backend(Arc::new(MemoryStoreBackend::new()))
        .build()
        .unwrap();
    core.start().await.unwrap();
    let main = Arc::new(Main::default());
    let seen = Arc::clone(&main);
    let described = Arc::clone(&main);
    let main_side = ChannelBuilder::new(ChannelConfig::named("main"))
        .on_call::<wire::RegisterEntity, _, _>(move |request, _| {
            let described = Arc::clone(&described);
            async move {
                if let Some(description) = &request.description {
                    described.descriptions.lock().push(description.clone());
                }
                Ok(wire::RegisterEntityResult {
                    entity_id: request.description.map(|d| d.entity_id).unwrap_or_default(),
                })
            }
        })
        .on_push_inline::<wire::StateChanged, _>(move |change| {
            seen.states.lock().push(change.state);
        });
    let (main_channel, sandbox_channel) = channel_pair(
        main_side,
        ChannelBuilder::new(ChannelConfig::named("sandbox")),
    );
    let bridge =
        EntityBridge::install(core.clone(), sandbox_channel, Arc::new(Approvals::new())).unwrap();
    let entry = core
        .config_entries()
        .add(ConfigEntry::new("counting", "Counting", Map::new(), "user"))
        .await
        .unwrap();
    let platform = EntityPlatform::new("sensor", "counting", Some(&entry.entry_id));
    core.entities().add_platform(&platform).unwrap();
    let counter = Arc::new(Counter {
        value: AtomicU64::new(0),
        handle: Mutex::new(None),
    });
    platform.add_entity(counter.clone()).await.unwrap();
    wait_until(|| bridge.registered() == 1).await;
    (bridge, counter, main, main_channel, core)
}

async fn wait_until(condition: impl Fn() -> bool) {
    tokio::time::timeout(std::time::Duration::from_secs(30), async {
        while !condition() {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("hang guard");
}

fn numbers(main: &Main) -> Vec<u64> {
    main.states
        .lock()
        .iter()
        .filter_map(|state| state.parse().ok())
        .collect()
}

#[tokio::test]
async fn every_transition_reaches_main_in_order() {
    let (bridge, counter, main, main_channel, _core) = bridge().await;
    for value in 1..=500 {
        counter.set(value);
        if value % 7 == 0 {
            tokio::task::yield_now().await;
        }
    }
    wait_until(|| numbers(&main).last() == Some(&500)).await;
    let seen = numbers(&main);
    let after_registration: Vec<u64> = seen.into_iter().filter(|n| *n > 0).collect();
    assert_eq!(after_registration, (1..=500).collect::<Vec<u64>>());
    assert_eq!(bridge.skipped_transitions(), 0);
    main_channel.close().await;
}

#[tokio::test]
async fn a_flood_past_the_queue_skips_transitions_but_main_ends_on_the_latest_state() {
    let (bridge, counter, main, main_channel, _core) = bridge().await;
    let written = (STATE_QUEUE_CAPACITY + 1000) as u64;
    // No await in between: the worker cannot run, so the queue fills up.
    for value in 1..=written {
        counter.set(value);
    }
    assert_eq!(
        bridge.skipped_transitions(),
        1000,
        "the changes past capacity"
    );
    wait_until(|| numbers(&main).last() == Some(&written)).await;
    let seen: Vec<u64> = numbers(&main).into_iter().filter(|n| *n > 0).collect();
    // The queued transitions in order, then the latest state of the overflowed entity.
    let mut expected: Vec<u64> = (1..=STATE_QUEUE_CAPACITY as u64).collect();
    expected.push(written);
    assert_eq!(seen, expected);
    main_channel.close().await;
}

#[tokio::test]
async fn an_entity_without_a_config_entry_is_counted_and_never_registered() {
    let core = Core::builder(CoreConfig::new("unused"))
        .store_backend(Arc::new(MemoryStoreBackend::new()))
        .build()
        .unwrap();
    core.start().await.unwrap();
    let registered = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = Arc::clone(&registered);
    let main_side = ChannelBuilder::new(ChannelConfig::named("main"))
        .on_call::<wire::RegisterEntity, _, _>(move |request, _| {
            let entity_id = request.description.map(|d| d.entity_id).unwrap_or_default();
            seen.lock().push(entity_id.clone());
            async move { Ok(wire::RegisterEntityResult { entity_id }) }
        });
    let (main_channel, sandbox_channel) = channel_pair(
        main_side,
        ChannelBuilder::new(ChannelConfig::named("sandbox")),
    );
    let bridge =
        EntityBridge::install(core.clone(), sandbox_channel, Arc::new(Approvals::new())).unwrap();
    let counter = || {
        Arc::new(Counter {
            value: AtomicU64::new(0),
            handle: Mutex::new(None),
        })
    };
    // First an entity on a platform without an entry, then one of an entry: the worker takes
    // them in that order, so once the second is registered the first had its turn.
    let loose = EntityPlatform::new("sensor", "loose", None);
    core.entities().add_platform(&loose).unwrap();
    let loose_id = loose.add_entity(counter()).await.unwrap().unwrap();
    let entry = core
        .config_entries()
        .add(ConfigEntry::new("counting", "Counting", Map::new(), "user"))
        .await
        .unwrap();
    let platform = EntityPlatform::new("sensor", "counting", Some(&entry.entry_id));
    core.entities().add_platform(&platform).unwrap();
    let entry_id = platform.add_entity(counter()).await.unwrap().unwrap();
    wait_until(|| registered.lock().contains(&entry_id)).await;
    assert_eq!(*registered.lock(), [entry_id], "{loose_id} is not mirrored");
    assert_eq!(bridge.entities_without_entry(), 1);
    assert_eq!(bridge.registered(), 1);
    main_channel.close().await;
}

#[tokio::test]
async fn an_unregistered_entity_releases_its_domain_approval() {
    let core = Core::builder(CoreConfig::new("unused"))
        .store_backend(Arc::new(MemoryStoreBackend::new()))
        .build()
        .unwrap();
    core.start().await.unwrap();
    let unregistered = Arc::new(AtomicU64::new(0));
    let seen = Arc::clone(&unregistered);
    let main_side = ChannelBuilder::new(ChannelConfig::named("main"))
        .on_call::<wire::RegisterEntity, _, _>(|request, _| async move {
            Ok(wire::RegisterEntityResult {
                entity_id: request.description.map(|d| d.entity_id).unwrap_or_default(),
            })
        })
        .on_call::<wire::UnregisterEntity, _, _>(move |_, _| {
            seen.fetch_add(1, Ordering::SeqCst);
            async { Ok(wire::UnregisterEntityResult {}) }
        });
    let (main_channel, sandbox_channel) = channel_pair(
        main_side,
        ChannelBuilder::new(ChannelConfig::named("sandbox")),
    );
    let approvals = Arc::new(Approvals::new());
    let bridge =
        EntityBridge::install(core.clone(), sandbox_channel, Arc::clone(&approvals)).unwrap();
    let entry = core
        .config_entries()
        .add(ConfigEntry::new("counting", "Counting", Map::new(), "user"))
        .await
        .unwrap();
    let platform = EntityPlatform::new("sensor", "counting", Some(&entry.entry_id));
    core.entities().add_platform(&platform).unwrap();
    let entity_id = platform
        .add_entity(Arc::new(Counter {
            value: AtomicU64::new(0),
            handle: Mutex::new(None),
        }))
        .await
        .unwrap()
        .unwrap();
    wait_until(|| bridge.registered() == 1).await;
    assert_eq!(
        approvals.holds("sensor"),
        1,
        "a registered entity holds its domain"
    );
    platform.remove_entity(&entity_id).await.unwrap();
    wait_until(|| unregistered.load(Ordering::SeqCst) == 1).await;
    assert_eq!(bridge.registered(), 0);
    assert_eq!(approvals.holds("sensor"), 0, "the unregister released it");
    assert!(!approvals.is_approved("sensor"));
    main_channel.close().await;
}

#[tokio::test]
async fn a_registry_update_redescribes_from_the_registry_and_an_idle_one_sends_nothing() {
    let (bridge, _counter, main, main_channel, core) = bridge().await;
    assert_eq!(main.descriptions.lock().len(), 1);
    core.entity_registry()
        .update(
            "sensor.counter",
            homecore::entity_registry::EntityUpdate {
                name: Some(Some("Hall counter".to_owned())),
                icon: Some(Some("mdi:counter".to_owned())),
                ..Default::default()
            },
        )
        .unwrap();
    wait_until(|| main.descriptions.lock().len() == 2).await;
    let redescribed = main.descriptions.lock()[1].clone();
    assert_eq!(redescribed.name.as_deref(), Some("Hall counter"));
    assert_eq!(redescribed.icon.as_deref(), Some("mdi:counter"));
    // A registry change main does not show (an option) re-describes nothing.
    core.entity_registry()
        .update(
            "sensor.counter",
            homecore::entity_registry::EntityUpdate {
                options: Some(("sensor".to_owned(), serde_json::json!({"precision": 1}))),
                ..Default::default()
            },
        )
        .unwrap();
    // The worker has settled the option update on its own (the registry listener ran, the
    // worker went idle): merged with the next update it could not be told apart.
    core.bus().wait_idle().await;
    assert!(
        bridge
            .wait_settled(std::time::Duration::from_secs(30))
            .await,
        "hang guard"
    );
    assert_eq!(main.descriptions.lock().len(), 2, "an identical re-send");
    // Then a visible one: main sees it, and nothing for the option before it.
    core.entity_registry()
        .update(
            "sensor.counter",
            homecore::entity_registry::EntityUpdate {
                icon: Some(Some("mdi:numeric".to_owned())),
                ..Default::default()
            },
        )
        .unwrap();
    wait_until(|| {
        main.descriptions
            .lock()
            .last()
            .is_some_and(|last| last.icon.as_deref() == Some("mdi:numeric"))
    })
    .await;
    assert_eq!(main.descriptions.lock().len(), 3, "an identical re-send");
    main_channel.close().await;
}
