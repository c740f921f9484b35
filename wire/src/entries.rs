//! Config entries and the core configuration, as main sends them to a sandbox and back.

use homecore::ConfigEntry;
use sandbox_proto::{json, wire};

use crate::{ConvertError, enum_name, object};

/// A config entry as main sends it, rebuilt in a sandbox's core (tagged with the group).
/// `disabled_by` stays main's: main sets up and unloads entries, so a sandbox's copy of an
/// entry is always one main wants running.
pub fn entry_from_wire(
    entry: &wire::ConfigEntry,
    group: &str,
) -> Result<ConfigEntry, ConvertError> {
    if entry.entry_id.is_empty() || entry.domain.is_empty() {
        return Err(ConvertError::Invalid(
            "a config entry needs an entry_id and a domain".into(),
        ));
    }
    let mut rebuilt = ConfigEntry::new(
        entry.domain.clone(),
        entry.title.clone(),
        object("data_json", &entry.data_json)?,
        entry.source.clone(),
    );
    rebuilt.entry_id = entry.entry_id.clone();
    rebuilt.options = object("options_json", &entry.options_json)?;
    rebuilt.unique_id = entry.unique_id.clone();
    rebuilt.version = entry.version.max(1);
    rebuilt.minor_version = entry.minor_version.max(1);
    rebuilt.sandbox = Some(group.to_owned());
    Ok(rebuilt)
}

/// Main's core configuration as the wire carries it.
pub fn core_config_to_wire(config: &homecore::CoreConfig) -> wire::CoreConfig {
    wire::CoreConfig {
        location_name: config.location_name.clone(),
        latitude: config.latitude,
        longitude: config.longitude,
        elevation: f64::from(config.elevation),
        unit_system: match config.unit_system {
            homecore::UnitSystem::Metric => "metric",
            homecore::UnitSystem::UsCustomary => "us_customary",
        }
        .to_owned(),
        time_zone: config.time_zone.clone(),
        language: config.language.clone(),
        currency: config.currency.clone(),
        radius: config.radius,
        country: config.country.clone(),
    }
}

/// A core configuration from the wire, for a core whose files live in `config_dir`; checked
/// as the core checks its own ([`homecore::CoreConfig::validate`]).
pub fn core_config_from_wire(
    config: &wire::CoreConfig,
    config_dir: std::path::PathBuf,
) -> Result<homecore::CoreConfig, ConvertError> {
    let unit_system = match config.unit_system.as_str() {
        "metric" => homecore::UnitSystem::Metric,
        "us_customary" => homecore::UnitSystem::UsCustomary,
        other => {
            return Err(ConvertError::Invalid(format!(
                "unknown unit system {other:?}"
            )));
        }
    };
    if !config.elevation.is_finite() {
        return Err(ConvertError::Invalid("elevation is not a number".into()));
    }
    let rebuilt = homecore::CoreConfig {
        location_name: config.location_name.clone(),
        latitude: config.latitude,
        longitude: config.longitude,
        // Meters, whole: saturating at the integer's range.
        elevation: config.elevation.round() as i32,
        radius: config.radius,
        unit_system,
        time_zone: config.time_zone.clone(),
        language: config.language.clone(),
        currency: config.currency.clone(),
        country: config.country.clone(),
        config_dir,
    };
    rebuilt
        .validate()
        .map_err(|error| ConvertError::Invalid(error.to_string()))?;
    Ok(rebuilt)
}

/// A core config entry as the wire carries it.
pub fn entry_to_wire(entry: &ConfigEntry) -> wire::ConfigEntry {
    wire::ConfigEntry {
        entry_id: entry.entry_id.clone(),
        domain: entry.domain.clone(),
        title: entry.title.clone(),
        data_json: json::object_to_bytes(&entry.data),
        options_json: json::object_to_bytes(&entry.options),
        source: entry.source.clone(),
        unique_id: entry.unique_id.clone(),
        version: entry.version,
        minor_version: entry.minor_version,
        disabled_by: entry.disabled_by.as_ref().map(enum_name),
    }
}
