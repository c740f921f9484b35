//! Tests for the entity registry.

use std::collections::HashMap;
use std::sync::Arc as StdArc;

use super::*;
use crate::store::MemoryStoreBackend;

fn registry() -> (EntityRegistry, EventBus, StateMachine, Stores) {
    let bus = EventBus::new();
    let stores = Stores::new(StdArc::new(MemoryStoreBackend::new()));
    let states = StateMachine::new(bus.clone());
    let registry = EntityRegistry::new(bus.clone(), &stores, states.clone()).unwrap();
    (registry, bus, states, stores)
}

fn registration(unique_id: &str, suggested: Option<&str>) -> EntityRegistration {
    EntityRegistration {
        domain: "light".into(),
        platform: "hue".into(),
        unique_id: unique_id.into(),
        suggested_object_id: suggested.map(Into::into),
        config_entry_id: Some("entry1".into()),
        ..EntityRegistration::default()
    }
}

#[tokio::test]
async fn same_key_same_entity_id_and_collisions_get_suffixes() {
    let (registry, bus, states, _stores) = registry();
    let mut events = bus.subscribe(EVENT_ENTITY_REGISTRY_UPDATED).unwrap();
    let first = registry
        .get_or_create(registration("u1", Some("Living Room")))
        .unwrap();
    assert_eq!(first.entity_id, "light.living_room");
    assert_eq!(
        registry
            .get_or_create(registration("u1", Some("Other")))
            .unwrap()
            .entity_id,
        "light.living_room"
    );
    let second = registry
        .get_or_create(registration("u2", Some("Living Room")))
        .unwrap();
    assert_eq!(second.entity_id, "light.living_room_2");
    // An unregistered state also blocks an id.
    states
        .set("light.living_room_3", "on", Map::new(), false, None)
        .unwrap();
    let third = registry
        .get_or_create(registration("u3", Some("Living Room")))
        .unwrap();
    assert_eq!(third.entity_id, "light.living_room_4");
    let fallback = registry.get_or_create(registration("AB:CD", None)).unwrap();
    assert_eq!(fallback.entity_id, "light.hue_ab_cd");
    assert_eq!(
        registry.entity_id_for("light", "hue", "u2").as_deref(),
        Some("light.living_room_2")
    );

    let event = events.recv().await.unwrap();
    assert_eq!(event.data["action"], "create");
    assert_eq!(event.data["entity_id"], "light.living_room");
}

#[tokio::test]
async fn refreshing_integration_fields_is_an_update_with_old_values() {
    let (registry, bus, _states, _stores) = registry();
    registry
        .get_or_create(registration("u1", Some("lamp")))
        .unwrap();
    let mut events = bus.subscribe(EVENT_ENTITY_REGISTRY_UPDATED).unwrap();
    let mut again = registration("u1", None);
    again.original_name = Some("Lamp".into());
    let entry = registry.get_or_create(again).unwrap();
    assert_eq!(entry.original_name.as_deref(), Some("Lamp"));
    let event = events.recv().await.unwrap();
    assert_eq!(event.data["action"], "update");
    assert_eq!(event.data["changes"], json!({"original_name": null}));
}

#[tokio::test]
async fn rename_and_overrides() {
    let (registry, bus, _states, _stores) = registry();
    registry
        .get_or_create(registration("u1", Some("lamp")))
        .unwrap();
    registry
        .get_or_create(registration("u2", Some("other")))
        .unwrap();
    let mut events = bus.subscribe(EVENT_ENTITY_REGISTRY_UPDATED).unwrap();
    let renamed = registry
        .update(
            "light.lamp",
            EntityUpdate {
                new_entity_id: Some("light.desk".into()),
                name: Some(Some("Desk".into())),
                disabled_by: Some(Some(EntityDisabler::User)),
                area_id: Some(Some("office".into())),
                ..EntityUpdate::default()
            },
        )
        .unwrap();
    assert_eq!(renamed.entity_id, "light.desk");
    assert!(renamed.disabled());
    assert!(registry.get("light.lamp").is_none());
    assert_eq!(
        registry.entity_id_for("light", "hue", "u1").as_deref(),
        Some("light.desk")
    );
    let event = events.recv().await.unwrap();
    assert_eq!(event.data["old_entity_id"], "light.lamp");
    assert_eq!(event.data["changes"]["name"], Value::Null);

    assert!(matches!(
        registry.update(
            "light.desk",
            EntityUpdate {
                new_entity_id: Some("light.other".into()),
                ..Default::default()
            }
        ),
        Err(RegistryError::EntityIdTaken(_))
    ));
    assert!(matches!(
        registry.update(
            "light.desk",
            EntityUpdate {
                new_entity_id: Some("switch.desk".into()),
                ..Default::default()
            }
        ),
        Err(RegistryError::Invalid(_))
    ));
    assert!(matches!(
        registry.update(
            "light.desk",
            EntityUpdate {
                new_entity_id: Some("Light.Bad".into()),
                ..Default::default()
            }
        ),
        Err(RegistryError::Invalid(_))
    ));
    assert!(matches!(
        registry.update("light.nope", EntityUpdate::default()),
        Err(RegistryError::NotFound { .. })
    ));
}

#[tokio::test]
async fn bad_registrations_are_refused() {
    let (registry, _bus, _states, _stores) = registry();
    let mut bad = registration("u", None);
    bad.domain = "Light".into();
    assert!(matches!(
        registry.get_or_create(bad),
        Err(RegistryError::Invalid(_))
    ));
    assert!(matches!(
        registry.get_or_create(registration("", None)),
        Err(RegistryError::Invalid(_))
    ));
    let long = registration("u", Some(&"x".repeat(300)));
    assert!(matches!(
        registry.get_or_create(long),
        Err(RegistryError::Invalid(_))
    ));
}

#[tokio::test]
async fn remove_and_clear_config_entry() {
    let (registry, bus, _states, _stores) = registry();
    registry
        .get_or_create(registration("u1", Some("a")))
        .unwrap();
    let mut other = registration("u2", Some("b"));
    other.config_entry_id = Some("entry2".into());
    registry.get_or_create(other).unwrap();
    let mut events = bus.subscribe(EVENT_ENTITY_REGISTRY_UPDATED).unwrap();
    registry.clear_config_entry("entry1");
    assert_eq!(registry.entries().len(), 1);
    assert_eq!(events.recv().await.unwrap().data["action"], "remove");
    assert!(registry.remove("light.b").is_some());
    assert!(registry.remove("light.b").is_none());
}

#[tokio::test(start_paused = true)]
async fn persists_through_the_store_and_reloads() {
    let (registry, bus, states, stores) = registry();
    registry
        .get_or_create(registration("u1", Some("a")))
        .unwrap();
    registry
        .update(
            "light.a",
            EntityUpdate {
                name: Some(Some("Named".into())),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(stores.pending_keys(), vec![ENTITY_REGISTRY_STORE_KEY]);
    tokio::time::sleep(REGISTRY_SAVE_DELAY + std::time::Duration::from_secs(1)).await;
    assert!(stores.pending_keys().is_empty());
    let reloaded = EntityRegistry::new(bus, &stores, states).unwrap();
    reloaded.load().await.unwrap();
    let entry = reloaded.get("light.a").unwrap();
    assert_eq!(entry.name.as_deref(), Some("Named"));
    assert_eq!(entry, registry.get("light.a").unwrap());
}

#[tokio::test]
async fn same_named_registrations_get_the_ids_a_search_from_one_gives() {
    const ENTITIES: usize = 300;
    let (registry, _bus, states, _stores) = registry();
    for n in 1..=ENTITIES {
        let entry = registry
            .get_or_create(registration(&format!("u{n}"), Some("Lamp")))
            .unwrap();
        let expected = if n == 1 {
            "light.lamp".to_owned()
        } else {
            format!("light.lamp_{n}")
        };
        assert_eq!(entry.entity_id, expected);
    }
    // Searching from 1 every time would probe ENTITIES² / 2 ids.
    let probes = states.id_hints().probes();
    assert!(probes <= 2 * ENTITIES as u64, "{probes} probes");

    // Freed ids are found again, lowest first, whoever freed them.
    registry.remove("light.lamp_7");
    registry
        .update(
            "light.lamp_3",
            EntityUpdate {
                new_entity_id: Some("light.desk".into()),
                ..EntityUpdate::default()
            },
        )
        .unwrap();
    let next = |unique_id: &str| {
        registry
            .get_or_create(registration(unique_id, Some("Lamp")))
            .unwrap()
            .entity_id
    };
    assert_eq!(next("a"), "light.lamp_3");
    assert_eq!(next("b"), "light.lamp_7");
    assert_eq!(next("c"), "light.lamp_301");
    states
        .set("light.lamp_302", "on", Map::new(), false, None)
        .unwrap();
    assert_eq!(next("d"), "light.lamp_303");
    states.remove("light.lamp_302", None);
    assert_eq!(next("e"), "light.lamp_302");
    // A state that only looks numbered frees nothing of `lamp`.
    states
        .set("light.lamp_0304", "on", Map::new(), false, None)
        .unwrap();
    states.remove("light.lamp_0304", None);
    assert_eq!(next("f"), "light.lamp_304");
}

#[tokio::test]
async fn reloading_forgets_where_searches_start() {
    let (registry, _bus, _states, stores) = registry();
    for n in 1..=5 {
        registry
            .get_or_create(registration(&format!("u{n}"), Some("Lamp")))
            .unwrap();
    }
    // Stored data holding only the first entry: the ids of the others are free again.
    let first = registry.get("light.lamp").unwrap();
    stores
        .store(
            ENTITY_REGISTRY_STORE_KEY,
            STORE_VERSION,
            STORE_MINOR_VERSION,
        )
        .unwrap()
        .save(json!({ "entities": [first] }))
        .await
        .unwrap();
    registry.load().await.unwrap();
    let entry = registry
        .get_or_create(registration("new", Some("Lamp")))
        .unwrap();
    assert_eq!(entry.entity_id, "light.lamp_2");
}

/// Checks that the key index says what a scan in entity id order would.
fn assert_index_matches_a_scan(registry: &EntityRegistry) {
    let data = registry.inner.data.lock();
    let mut scanned: HashMap<EntityKey, String> = HashMap::new();
    for entry in data.by_entity_id.values() {
        scanned
            .entry(key_of(entry))
            .or_insert_with(|| entry.entity_id.clone());
    }
    assert_eq!(data.by_key, scanned);
}

#[tokio::test]
async fn the_key_index_finds_what_a_scan_finds_even_for_stored_duplicates() {
    let (registry, _bus, _states, stores) = registry();
    for (unique_id, name) in [("u1", "b"), ("u2", "a"), ("u3", "c")] {
        registry
            .get_or_create(registration(unique_id, Some(name)))
            .unwrap();
    }
    // Stored data may hold two entries of one key: the smallest entity id wins, as in a scan.
    let mut entries = registry.entries();
    let mut twin = registry.get("light.b").unwrap();
    twin.entity_id = "light.a_twin".into();
    twin.id = "twin".into();
    entries.push(twin);
    stores
        .store(
            ENTITY_REGISTRY_STORE_KEY,
            STORE_VERSION,
            STORE_MINOR_VERSION,
        )
        .unwrap()
        .save(json!({ "entities": entries }))
        .await
        .unwrap();
    registry.load().await.unwrap();
    assert_index_matches_a_scan(&registry);
    assert_eq!(
        registry.entity_id_for("light", "hue", "u1").as_deref(),
        Some("light.a_twin")
    );
    registry.remove("light.a_twin");
    assert_index_matches_a_scan(&registry);
    assert_eq!(
        registry.entity_id_for("light", "hue", "u1").as_deref(),
        Some("light.b")
    );
    registry
        .update(
            "light.b",
            EntityUpdate {
                new_entity_id: Some("light.z".into()),
                ..EntityUpdate::default()
            },
        )
        .unwrap();
    assert_index_matches_a_scan(&registry);
    assert_eq!(
        registry.entity_id_for("light", "hue", "u1").as_deref(),
        Some("light.z")
    );
    let mut refreshed = registration("u1", None);
    refreshed.original_name = Some("Z".into());
    assert_eq!(
        registry.get_or_create(refreshed).unwrap().entity_id,
        "light.z"
    );
    registry.clear_config_entry("entry1");
    assert_index_matches_a_scan(&registry);
    assert_eq!(registry.entity_id_for("light", "hue", "u1"), None);
}
