//! Tests for the device registry.

use std::collections::HashMap;
use std::sync::Arc as StdArc;

use super::*;
use crate::entity_registry::EntityRegistration;
use crate::state::StateMachine;
use crate::store::MemoryStoreBackend;

fn registries() -> (DeviceRegistry, EntityRegistry, EventBus, Stores) {
    let bus = EventBus::new();
    let stores = Stores::new(StdArc::new(MemoryStoreBackend::new()));
    let entities =
        EntityRegistry::new(bus.clone(), &stores, StateMachine::new(bus.clone())).unwrap();
    let devices = DeviceRegistry::new(bus.clone(), &stores, entities.clone()).unwrap();
    (devices, entities, bus, stores)
}

fn key(a: &str, b: &str) -> DeviceKey {
    (a.to_owned(), b.to_owned())
}

fn info(entry: &str, identifiers: Vec<DeviceKey>, connections: Vec<DeviceKey>) -> DeviceInfo {
    DeviceInfo {
        config_entry_id: entry.into(),
        identifiers,
        connections,
        ..DeviceInfo::default()
    }
}

#[tokio::test]
async fn merges_by_identifier_or_connection() {
    let (devices, _entities, bus, _stores) = registries();
    let mut events = bus.subscribe(EVENT_DEVICE_REGISTRY_UPDATED).unwrap();
    let mut first = info("e1", vec![key("hue", "1")], vec![]);
    first.name = Some("Bridge".into());
    let created = devices.get_or_create(first).unwrap();
    assert_eq!(events.recv().await.unwrap().data["action"], "create");

    let merged = devices
        .get_or_create(info(
            "e2",
            vec![key("hue", "1")],
            vec![key("mac", "AA-BB-CC-DD-EE-FF")],
        ))
        .unwrap();
    assert_eq!(merged.id, created.id);
    assert_eq!(merged.config_entries, vec!["e1", "e2"]);
    assert_eq!(merged.connections, vec![key("mac", "aa:bb:cc:dd:ee:ff")]);
    assert_eq!(
        merged.name.as_deref(),
        Some("Bridge"),
        "absent fields keep their value"
    );
    let event = events.recv().await.unwrap();
    assert_eq!(event.data["action"], "update");
    assert_eq!(event.data["changes"]["config_entries"], json!(["e1"]));

    // A differently formatted MAC finds the same device.
    let by_mac = devices
        .get_or_create(info("e1", vec![], vec![key("mac", "aabbccddeeff")]))
        .unwrap();
    assert_eq!(by_mac.id, created.id);
    assert_eq!(
        devices
            .find(&[], &[key("mac", "AA:BB:CC:DD:EE:FF")])
            .unwrap()
            .id,
        created.id
    );
    assert_eq!(devices.devices().len(), 1);
}

#[tokio::test]
async fn via_device_is_resolved_and_cleared_when_the_hub_goes() {
    let (devices, _entities, _bus, _stores) = registries();
    let hub = devices
        .get_or_create(info("e1", vec![key("hue", "hub")], vec![]))
        .unwrap();
    let mut child = info("e1", vec![key("hue", "bulb")], vec![]);
    child.via_device = Some(key("hue", "hub"));
    let child = devices.get_or_create(child).unwrap();
    assert_eq!(child.via_device_id.as_deref(), Some(hub.id.as_str()));
    devices.remove(&hub.id).unwrap();
    assert_eq!(devices.get(&child.id).unwrap().via_device_id, None);
}

#[tokio::test]
async fn removing_a_device_removes_its_entities_and_last_entry_removes_device() {
    let (devices, entities, _bus, _stores) = registries();
    let device = devices
        .get_or_create(info("e1", vec![key("hue", "1")], vec![]))
        .unwrap();
    devices
        .update(
            &device.id,
            DeviceUpdate {
                add_config_entry_id: Some("e2".into()),
                ..Default::default()
            },
        )
        .unwrap();
    entities
        .get_or_create(EntityRegistration {
            domain: "light".into(),
            platform: "hue".into(),
            unique_id: "1".into(),
            device_id: Some(device.id.clone()),
            config_entry_id: Some("e1".into()),
            ..EntityRegistration::default()
        })
        .unwrap();
    devices.clear_config_entry("e1");
    let left = devices.get(&device.id).unwrap();
    assert_eq!(left.config_entries, vec!["e2"]);
    assert_eq!(left.primary_config_entry.as_deref(), Some("e2"));
    assert_eq!(entities.entries().len(), 1);
    devices.clear_config_entry("e2");
    assert!(devices.get(&device.id).is_none());
    assert!(
        entities.entries().is_empty(),
        "entities of a removed device go too"
    );
}

#[tokio::test]
async fn bad_device_info_is_refused() {
    let (devices, _entities, _bus, _stores) = registries();
    assert!(matches!(
        devices.get_or_create(info("e1", vec![], vec![])),
        Err(RegistryError::Invalid(_))
    ));
    assert!(matches!(
        devices.get_or_create(info("", vec![key("a", "b")], vec![])),
        Err(RegistryError::Invalid(_))
    ));
    assert!(matches!(
        devices.update("nope", DeviceUpdate::default()),
        Err(RegistryError::NotFound { .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn persists_through_the_store_and_reloads() {
    let (devices, entities, bus, stores) = registries();
    let device = devices
        .get_or_create(info("e1", vec![key("hue", "1")], vec![]))
        .unwrap();
    devices
        .update(
            &device.id,
            DeviceUpdate {
                area_id: Some(Some("kitchen".into())),
                ..Default::default()
            },
        )
        .unwrap();
    stores.flush_pending().await;
    let reloaded = DeviceRegistry::new(bus, &stores, entities).unwrap();
    reloaded.load().await.unwrap();
    assert_eq!(reloaded.get(&device.id), devices.get(&device.id));
    assert_eq!(
        reloaded.get(&device.id).unwrap().area_id.as_deref(),
        Some("kitchen")
    );
}

#[test]
fn mac_normalization() {
    assert_eq!(
        normalize_connection(&key("mac", "AA:BB:CC:DD:EE:FF")).1,
        "aa:bb:cc:dd:ee:ff"
    );
    assert_eq!(
        normalize_connection(&key("mac", "aabb.ccdd.eeff")).1,
        "aa:bb:cc:dd:ee:ff"
    );
    assert_eq!(normalize_connection(&key("mac", "short")).1, "short");
    assert_eq!(normalize_connection(&key("zigbee", "AB")).1, "AB");
}

/// What the index must agree with: whether `device` holds any of the keys.
fn holds(device: &DeviceEntry, identifiers: &[DeviceKey], connections: &[DeviceKey]) -> bool {
    device.identifiers.iter().any(|id| identifiers.contains(id))
        || device.connections.iter().any(|c| connections.contains(c))
}

/// Checks the index against the devices: every key held maps to exactly its holders, ascending.
fn assert_index_matches_the_devices(devices: &DeviceRegistry) {
    let data = devices.inner.devices.lock();
    let mut by_identifier: HashMap<DeviceKey, Vec<String>> = HashMap::new();
    let mut by_connection: HashMap<DeviceKey, Vec<String>> = HashMap::new();
    for device in data.by_id.values() {
        for key in &device.identifiers {
            index_add(&mut by_identifier, key, &device.id);
        }
        for key in &device.connections {
            index_add(&mut by_connection, key, &device.id);
        }
    }
    assert_eq!(data.by_identifier, by_identifier);
    assert_eq!(data.by_connection, by_connection);
}

#[tokio::test]
async fn the_index_finds_what_a_scan_of_every_device_finds() {
    let (devices, _entities, _bus, stores) = registries();
    let hub = devices
        .get_or_create(info("e1", vec![key("demo", "hub")], vec![]))
        .unwrap();
    let lamp = devices
        .get_or_create(info(
            "e1",
            vec![key("demo", "lamp")],
            vec![key("mac", "AA:BB:CC:DD:EE:01")],
        ))
        .unwrap();
    // A device gaining keys registration after registration (merges append them).
    for n in 0..20 {
        devices
            .get_or_create(info(
                "e1",
                vec![key("demo", "hub"), key("demo", &format!("extra{n}"))],
                vec![],
            ))
            .unwrap();
    }
    assert_index_matches_the_devices(&devices);
    // An update may put a key on a second device: the first by id wins, as in a scan.
    devices
        .update(
            &lamp.id,
            DeviceUpdate {
                merge_identifiers: vec![key("demo", "hub")],
                merge_connections: vec![key("mac", "aa-bb-cc-dd-ee-02")],
                ..DeviceUpdate::default()
            },
        )
        .unwrap();
    assert_index_matches_the_devices(&devices);
    let queries = [
        (vec![key("demo", "hub")], vec![]),
        (vec![key("demo", "extra7")], vec![]),
        (
            vec![key("demo", "nothing")],
            vec![key("mac", "aa:bb:cc:dd:ee:02")],
        ),
        (vec![], vec![key("mac", "AA-BB-CC-DD-EE-01")]),
        (vec![key("demo", "nothing")], vec![]),
    ];
    let check = |devices: &DeviceRegistry| {
        for (identifiers, connections) in &queries {
            let normalized: Vec<DeviceKey> = connections.iter().map(normalize_connection).collect();
            // A scan of every device, by id, as the registry did before it had an index.
            let all: Vec<DeviceEntry> = devices
                .devices()
                .into_iter()
                .filter(|device| holds(device, identifiers, &normalized))
                .collect();
            let expected = all.first().cloned();
            assert_eq!(devices.find(identifiers, connections), expected);
            assert_eq!(devices.find_all(identifiers, connections), all);
        }
    };
    check(&devices);
    assert_eq!(
        devices.find_all(&[key("demo", "hub")], &[]).len(),
        2,
        "the hub and the lamp that merged its identifier"
    );
    // Removing the first holder leaves the other to be found; reloading rebuilds the index.
    let first = hub.id.min(lamp.id.clone());
    devices.remove(&first);
    assert_index_matches_the_devices(&devices);
    check(&devices);
    stores.flush_pending().await;
    devices.load().await.unwrap();
    assert_index_matches_the_devices(&devices);
    check(&devices);
}
