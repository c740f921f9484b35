//! Entity descriptions and the device infos in them: what a sandbox says about each of its
//! entities when it registers or re-describes it, and what main's proxy tells main's core.

use homecore::device_registry::DeviceKey;
use homecore::entity::{EntityDeviceInfo, EntityInfo};
use sandbox_proto::{json, wire};

use crate::{enum_from_name, enum_name};

/// An entity's info as the wire describes it. The identity fields (`entity_id`, `entry_id`,
/// `platform`) are the registering side's to fill: they come from where the entity lives, not
/// from what it says about itself.
pub fn entity_info_to_wire(info: &EntityInfo) -> wire::EntityDescription {
    wire::EntityDescription {
        domain: info.domain.clone(),
        unique_id: info.unique_id.clone(),
        name: info.name.clone(),
        has_entity_name: info.has_entity_name,
        translation_key: info.translation_key.clone(),
        icon: info.icon.clone(),
        device_class: info.device_class.clone(),
        entity_category: info.entity_category.as_ref().map(enum_name),
        supported_features: info.supported_features,
        unit_of_measurement: info.unit_of_measurement.clone(),
        state_class: info.state_class.clone(),
        capabilities_json: json::object_to_bytes(&info.capabilities),
        device: info.device_info.as_ref().map(device_info_to_wire),
        entity_registry_enabled_default: info.entity_registry_enabled_default,
        ..wire::EntityDescription::default()
    }
}

/// An entity description from the wire as the core's entity info (what a proxy says about
/// itself). Enum-like fields a newer peer may extend (`entity_category`, `entry_type`) are
/// dropped when unknown rather than failing the entity, and capabilities that are not a JSON
/// object are none.
pub fn entity_info_from_wire(description: &wire::EntityDescription) -> EntityInfo {
    let mut info = EntityInfo::new(description.domain.clone());
    info.unique_id = description.unique_id.clone();
    info.name = description.name.clone();
    info.has_entity_name = description.has_entity_name;
    info.translation_key = description.translation_key.clone();
    info.icon = description.icon.clone();
    info.device_class = description.device_class.clone();
    info.entity_category = enum_from_name(description.entity_category.as_deref());
    info.supported_features = description.supported_features;
    info.unit_of_measurement = description.unit_of_measurement.clone();
    info.state_class = description.state_class.clone();
    info.capabilities = json::object_from_bytes(&description.capabilities_json).unwrap_or_default();
    info.device_info = description.device.as_ref().map(device_info_from_wire);
    info.entity_registry_enabled_default = description.entity_registry_enabled_default;
    info
}

/// A device info as the wire carries it.
pub fn device_info_to_wire(device: &EntityDeviceInfo) -> wire::DeviceInfo {
    wire::DeviceInfo {
        identifiers: device.identifiers.iter().map(key_to_wire).collect(),
        connections: device.connections.iter().map(key_to_wire).collect(),
        name: device.name.clone(),
        manufacturer: device.manufacturer.clone(),
        model: device.model.clone(),
        model_id: device.model_id.clone(),
        sw_version: device.sw_version.clone(),
        hw_version: device.hw_version.clone(),
        serial_number: device.serial_number.clone(),
        via_device: device.via_device.as_ref().map(key_to_wire),
        entry_type: device.entry_type.as_ref().map(enum_name),
        configuration_url: device.configuration_url.clone(),
        suggested_area: device.suggested_area.clone(),
    }
}

/// A device info from the wire (an unknown `entry_type` is none).
pub fn device_info_from_wire(device: &wire::DeviceInfo) -> EntityDeviceInfo {
    EntityDeviceInfo {
        identifiers: device.identifiers.iter().map(key_from_wire).collect(),
        connections: device.connections.iter().map(key_from_wire).collect(),
        name: device.name.clone(),
        manufacturer: device.manufacturer.clone(),
        model: device.model.clone(),
        model_id: device.model_id.clone(),
        sw_version: device.sw_version.clone(),
        hw_version: device.hw_version.clone(),
        serial_number: device.serial_number.clone(),
        via_device: device.via_device.as_ref().map(key_from_wire),
        entry_type: enum_from_name(device.entry_type.as_deref()),
        configuration_url: device.configuration_url.clone(),
        suggested_area: device.suggested_area.clone(),
    }
}

/// A device identifier or connection (`("mac", "aa:bb:...")`) as a wire pair.
fn key_to_wire(key: &DeviceKey) -> wire::StringPair {
    wire::StringPair {
        first: key.0.clone(),
        second: key.1.clone(),
    }
}

fn key_from_wire(pair: &wire::StringPair) -> DeviceKey {
    (pair.first.clone(), pair.second.clone())
}
