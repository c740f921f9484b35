//! Tests for entity types: the description's wire shape.

use serde_json::json;

use super::*;

#[test]
fn a_description_serializes_flat_and_round_trips() {
    let mut info = EntityInfo::new("light");
    info.unique_id = Some("l1".into());
    info.supported_features = 44;
    info.device_info = Some(EntityDeviceInfo {
        identifiers: vec![("demo".into(), "hub".into())],
        via_device: Some(("demo".into(), "root".into())),
        ..EntityDeviceInfo::default()
    });
    let description = EntityDescription {
        entity_id: "light.l1".into(),
        config_entry_id: Some("entry".into()),
        platform: "demo".into(),
        info,
    };
    let value = serde_json::to_value(&description).unwrap();
    for key in [
        "entity_id",
        "config_entry_id",
        "platform",
        "domain",
        "unique_id",
        "name",
        "has_entity_name",
        "translation_key",
        "icon",
        "device_class",
        "entity_category",
        "supported_features",
        "unit_of_measurement",
        "state_class",
        "capabilities",
        "device_info",
        "entity_registry_enabled_default",
    ] {
        assert!(value.get(key).is_some(), "{key} missing from {value}");
    }
    assert_eq!(value["device_info"]["via_device"], json!(["demo", "root"]));
    let back: EntityDescription = serde_json::from_value(value).unwrap();
    assert_eq!(back, description);
    let minimal: EntityInfo = serde_json::from_value(json!({"domain": "switch"})).unwrap();
    assert!(minimal.entity_registry_enabled_default);
}
