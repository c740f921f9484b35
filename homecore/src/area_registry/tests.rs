//! Tests for the area registry.

use std::sync::Arc as StdArc;

use super::*;
use crate::device_registry::{DeviceInfo, DeviceUpdate};
use crate::entity_registry::{EntityRegistration, EntityUpdate};
use crate::state::StateMachine;
use crate::store::MemoryStoreBackend;

fn registries() -> (
    AreaRegistry,
    DeviceRegistry,
    EntityRegistry,
    EventBus,
    Stores,
) {
    let bus = EventBus::new();
    let stores = Stores::new(StdArc::new(MemoryStoreBackend::new()));
    let entities =
        EntityRegistry::new(bus.clone(), &stores, StateMachine::new(bus.clone())).unwrap();
    let devices = DeviceRegistry::new(bus.clone(), &stores, entities.clone()).unwrap();
    let areas = AreaRegistry::new(bus.clone(), &stores, devices.clone(), entities.clone()).unwrap();
    (areas, devices, entities, bus, stores)
}

#[tokio::test]
async fn create_names_ids_and_events() {
    let (areas, _devices, _entities, bus, _stores) = registries();
    let mut events = bus.subscribe(EVENT_AREA_REGISTRY_UPDATED).unwrap();
    let kitchen = areas.create("Kitchen").unwrap();
    assert_eq!(kitchen.id, "kitchen");
    let event = events.recv().await.unwrap();
    assert_eq!(event.data["action"], "create");
    assert_eq!(event.data["area_id"], "kitchen");
    assert!(matches!(
        areas.create("  kit chen "),
        Err(RegistryError::NameTaken(_))
    ));
    assert!(matches!(
        areas.create("   "),
        Err(RegistryError::Invalid(_))
    ));
    // A different name whose slug is taken gets a suffixed id.
    let other = areas.create("Kitchen!").unwrap();
    assert_eq!(other.id, "kitchen_2");
    assert_eq!(areas.get_or_create("KITCHEN").unwrap().id, "kitchen");
    assert_eq!(areas.areas().len(), 2);
}

#[tokio::test]
async fn update_checks_name_and_reports() {
    let (areas, _devices, _entities, bus, _stores) = registries();
    areas.create("Kitchen").unwrap();
    areas.create("Hall").unwrap();
    let mut events = bus.subscribe(EVENT_AREA_REGISTRY_UPDATED).unwrap();
    assert!(matches!(
        areas.update(
            "hall",
            AreaUpdate {
                name: Some("kitchen".into()),
                ..Default::default()
            }
        ),
        Err(RegistryError::NameTaken(_))
    ));
    let hall = areas
        .update(
            "hall",
            AreaUpdate {
                name: Some("Hallway".into()),
                aliases: Some(vec!["corridor".into()]),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(hall.id, "hall", "ids never change");
    assert_eq!(hall.name, "Hallway");
    assert_eq!(events.recv().await.unwrap().data["action"], "update");
    assert!(matches!(
        areas.update("nope", AreaUpdate::default()),
        Err(RegistryError::NotFound { .. })
    ));
}

#[tokio::test]
async fn delete_clears_devices_and_entities() {
    let (areas, devices, entities, _bus, _stores) = registries();
    areas.create("Kitchen").unwrap();
    let device = devices
        .get_or_create(DeviceInfo {
            config_entry_id: "e1".into(),
            identifiers: vec![("hue".into(), "1".into())],
            ..DeviceInfo::default()
        })
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
    let entity = entities
        .get_or_create(EntityRegistration {
            domain: "light".into(),
            platform: "hue".into(),
            unique_id: "1".into(),
            ..EntityRegistration::default()
        })
        .unwrap();
    entities
        .update(
            &entity.entity_id,
            EntityUpdate {
                area_id: Some(Some("kitchen".into())),
                ..Default::default()
            },
        )
        .unwrap();
    areas.delete("kitchen").unwrap();
    assert_eq!(devices.get(&device.id).unwrap().area_id, None);
    assert_eq!(entities.get(&entity.entity_id).unwrap().area_id, None);
    assert!(matches!(
        areas.delete("kitchen"),
        Err(RegistryError::NotFound { .. })
    ));
}

#[tokio::test]
async fn persists_and_reloads() {
    let (areas, devices, entities, bus, stores) = registries();
    areas.create("Kitchen").unwrap();
    stores.flush_pending().await;
    let reloaded = AreaRegistry::new(bus, &stores, devices, entities).unwrap();
    reloaded.load().await.unwrap();
    assert_eq!(reloaded.get("kitchen"), areas.get("kitchen"));
}
