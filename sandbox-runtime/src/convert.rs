//! The one edge where wire messages become core types and back, for both sides: the sandbox
//! runtime uses it to read main's requests, and the host uses it to rebuild what a sandbox sent.
//! Errors cross with their kind and field paths, so each side raises the same kind of error.

use std::collections::BTreeMap;

use homecore::data_entry_flow::Placeholders;
use homecore::schema::PathSegment;
use homecore::{
    ConfigEntry, FlowError, FlowResult, FlowStep, MenuOption, Schema, SchemaError, ServiceError,
    ValidationErrors,
};
use sandbox_proto::error::{ErrorKind, FieldError};
use sandbox_proto::{RemoteError, json, wire};
use serde_json::{Map, Value};

/// Why a wire message could not be read as a core type.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// A JSON payload field is not what it must be.
    #[error("field `{field}`: {source}")]
    Json {
        /// The field.
        field: &'static str,
        /// What is wrong.
        #[source]
        source: json::JsonError,
    },
    /// A flow result's schema is not a valid schema.
    #[error("field `data_schema_json`: {0}")]
    Schema(serde_json::Error),
    /// A required value is missing or out of range.
    #[error("{0}")]
    Invalid(String),
}

impl From<ConvertError> for RemoteError {
    fn from(error: ConvertError) -> Self {
        RemoteError::bad_request(error.to_string())
    }
}

fn object(field: &'static str, bytes: &[u8]) -> Result<Map<String, Value>, ConvertError> {
    json::object_from_bytes(bytes).map_err(|source| ConvertError::Json { field, source })
}

fn placeholders_to_json(placeholders: &Placeholders) -> bytes::Bytes {
    if placeholders.is_empty() {
        return bytes::Bytes::new();
    }
    let object: Map<String, Value> = placeholders
        .iter()
        .map(|(key, value)| (key.clone(), Value::String(value.clone())))
        .collect();
    json::object_to_bytes(&object)
}

fn placeholders_from_json(bytes: &[u8]) -> Result<Placeholders, ConvertError> {
    Ok(object("description_placeholders_json", bytes)?
        .into_iter()
        .map(|(key, value)| {
            let text = match value {
                Value::String(text) => text,
                other => other.to_string(),
            };
            (key, text)
        })
        .collect())
}

/// A config entry as main sends it, rebuilt in a sandbox's core (tagged with the group).
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
        disabled_by: entry.disabled_by.as_ref().map(|by| {
            serde_json::to_value(by)
                .ok()
                .and_then(|value| value.as_str().map(str::to_owned))
                .unwrap_or_default()
        }),
    }
}

/// A flow step's result as the wire carries it; `unique_id` is the flow's, for main's checks.
pub fn flow_result_to_wire(result: &FlowResult, unique_id: Option<String>) -> wire::FlowResult {
    use wire::FlowResultType as Type;
    let mut out = wire::FlowResult {
        flow_id: result.flow_id.clone(),
        handler: result.handler.clone(),
        unique_id,
        ..wire::FlowResult::default()
    };
    match &result.step {
        FlowStep::Form {
            step_id,
            data_schema,
            errors,
            description_placeholders,
            last_step,
            preview: _,
        } => {
            out.r#type = Type::Form as i32;
            out.step_id = step_id.clone();
            if let Some(schema) = data_schema {
                out.data_schema_json = json::to_bytes(&json::to_json_safe(schema));
            }
            if !errors.is_empty() {
                let errors: Map<String, Value> = errors
                    .iter()
                    .map(|(key, value)| (key.clone(), Value::String(value.clone())))
                    .collect();
                out.errors_json = json::object_to_bytes(&errors);
            }
            out.description_placeholders_json = placeholders_to_json(description_placeholders);
            out.last_step = *last_step;
        }
        FlowStep::CreateEntry {
            title,
            data,
            options,
            version,
            minor_version,
            description,
            description_placeholders,
            entry_id: _,
        } => {
            out.r#type = Type::CreateEntry as i32;
            out.title = title.clone();
            out.data_json = json::object_to_bytes(data);
            out.options_json = json::object_to_bytes(options);
            out.version = *version;
            out.minor_version = *minor_version;
            out.description = description.clone().unwrap_or_default();
            out.description_placeholders_json = placeholders_to_json(description_placeholders);
        }
        FlowStep::Abort {
            reason,
            description_placeholders,
        } => {
            out.r#type = Type::Abort as i32;
            out.reason = reason.clone();
            out.description_placeholders_json = placeholders_to_json(description_placeholders);
        }
        FlowStep::ExternalStep {
            step_id,
            url,
            description_placeholders,
        } => {
            out.r#type = Type::ExternalStep as i32;
            out.step_id = step_id.clone();
            out.url = url.clone();
            out.description_placeholders_json = placeholders_to_json(description_placeholders);
        }
        FlowStep::ExternalStepDone { step_id } => {
            out.r#type = Type::ExternalStepDone as i32;
            out.step_id = step_id.clone();
        }
        FlowStep::ShowProgress {
            step_id,
            progress_action,
            description_placeholders,
        } => {
            out.r#type = Type::ShowProgress as i32;
            out.step_id = step_id.clone();
            out.progress_action = progress_action.clone();
            out.description_placeholders_json = placeholders_to_json(description_placeholders);
        }
        FlowStep::ShowProgressDone { step_id } => {
            out.r#type = Type::ShowProgressDone as i32;
            out.step_id = step_id.clone();
        }
        FlowStep::Menu {
            step_id,
            menu_options,
            description_placeholders,
        } => {
            out.r#type = Type::Menu as i32;
            out.step_id = step_id.clone();
            out.menu_options = menu_options
                .iter()
                .map(|option| wire::MenuOption {
                    id: option.step_id.clone(),
                    label: option.label.clone().unwrap_or_default(),
                })
                .collect();
            out.description_placeholders_json = placeholders_to_json(description_placeholders);
        }
    }
    out
}

/// A flow result from the wire, rebuilt as a core step (schema, selectors and sections
/// included), with the unique id the sandbox's flow set.
pub fn flow_step_from_wire(
    result: &wire::FlowResult,
) -> Result<(FlowStep, Option<String>), ConvertError> {
    use wire::FlowResultType as Type;
    let kind = Type::try_from(result.r#type).map_err(|_| {
        ConvertError::Invalid(format!("unknown flow result type {}", result.r#type))
    })?;
    let placeholders = placeholders_from_json(&result.description_placeholders_json)?;
    let step = match kind {
        Type::Form => {
            let data_schema = if result.data_schema_json.is_empty() {
                None
            } else {
                Some(
                    serde_json::from_slice::<Schema>(&result.data_schema_json)
                        .map_err(ConvertError::Schema)?,
                )
            };
            let errors: BTreeMap<String, String> = object("errors_json", &result.errors_json)?
                .into_iter()
                .map(|(key, value)| {
                    (
                        key,
                        value
                            .as_str()
                            .map(str::to_owned)
                            .unwrap_or_else(|| value.to_string()),
                    )
                })
                .collect();
            FlowStep::Form {
                step_id: result.step_id.clone(),
                data_schema,
                errors,
                description_placeholders: placeholders,
                last_step: result.last_step,
                preview: None,
            }
        }
        Type::CreateEntry => FlowStep::CreateEntry {
            title: result.title.clone(),
            data: object("data_json", &result.data_json)?,
            options: object("options_json", &result.options_json)?,
            version: result.version.max(1),
            minor_version: result.minor_version.max(1),
            description: (!result.description.is_empty()).then(|| result.description.clone()),
            description_placeholders: placeholders,
            entry_id: None,
        },
        Type::Abort => FlowStep::Abort {
            reason: result.reason.clone(),
            description_placeholders: placeholders,
        },
        Type::ExternalStep => FlowStep::ExternalStep {
            step_id: result.step_id.clone(),
            url: result.url.clone(),
            description_placeholders: placeholders,
        },
        Type::ExternalStepDone => FlowStep::ExternalStepDone {
            step_id: result.step_id.clone(),
        },
        Type::ShowProgress => FlowStep::ShowProgress {
            step_id: result.step_id.clone(),
            progress_action: result.progress_action.clone(),
            description_placeholders: placeholders,
        },
        Type::ShowProgressDone => FlowStep::ShowProgressDone {
            step_id: result.step_id.clone(),
        },
        Type::Menu => FlowStep::Menu {
            step_id: result.step_id.clone(),
            menu_options: result
                .menu_options
                .iter()
                .map(|option| MenuOption {
                    step_id: option.id.clone(),
                    label: (!option.label.is_empty()).then(|| option.label.clone()),
                })
                .collect(),
            description_placeholders: placeholders,
        },
        Type::Unspecified => {
            return Err(ConvertError::Invalid("flow result without a type".into()));
        }
    };
    Ok((step, result.unique_id.clone()))
}

fn path_to_wire(path: &[PathSegment]) -> Vec<String> {
    path.iter()
        .map(|segment| match segment {
            PathSegment::Key(key) => key.clone(),
            PathSegment::Index(index) => index.to_string(),
        })
        .collect()
}

fn path_from_wire(path: &[String]) -> Vec<PathSegment> {
    path.iter()
        .map(|segment| match segment.parse::<usize>() {
            Ok(index) => PathSegment::Index(index),
            Err(_) => PathSegment::Key(segment.clone()),
        })
        .collect()
}

/// Validation errors as wire field errors.
pub fn validation_to_wire(errors: &ValidationErrors) -> Vec<FieldError> {
    errors
        .errors
        .iter()
        .map(|error| FieldError {
            path: path_to_wire(&error.path),
            message: error.message.clone(),
        })
        .collect()
}

/// Wire field errors as validation errors.
pub fn validation_from_wire(fields: &[FieldError]) -> ValidationErrors {
    ValidationErrors {
        errors: fields
            .iter()
            .map(|field| SchemaError {
                path: path_from_wire(&field.path),
                message: field.message.clone(),
            })
            .collect(),
    }
}

/// A service error as it crosses the wire.
pub fn service_error_to_remote(error: &ServiceError) -> RemoteError {
    match error {
        ServiceError::NotFound { .. } => RemoteError::not_found(error.to_string()),
        ServiceError::Validation(errors) => {
            RemoteError::validation(error.to_string(), validation_to_wire(errors))
        }
        ServiceError::ResponseNotSupported { .. }
        | ServiceError::ResponseRequired { .. }
        | ServiceError::InvalidName(_) => RemoteError::bad_request(error.to_string()),
        ServiceError::InvalidResponse { .. } | ServiceError::InvalidSchema(_) => {
            RemoteError::internal(error.to_string())
        }
        ServiceError::Handler(message) => RemoteError::handler(message.clone()),
    }
}

/// A remote error rebuilt as the same kind of service error.
pub fn service_error_from_remote(domain: &str, service: &str, error: &RemoteError) -> ServiceError {
    match error.kind {
        ErrorKind::NotFound => ServiceError::NotFound {
            domain: domain.to_owned(),
            service: service.to_owned(),
        },
        ErrorKind::Validation => {
            ServiceError::Validation(validation_from_wire(&error.field_errors))
        }
        _ => ServiceError::Handler(error.message.clone()),
    }
}

/// A flow error as it crosses the wire.
pub fn flow_error_to_remote(error: &FlowError) -> RemoteError {
    match error {
        FlowError::UnknownHandler(_)
        | FlowError::UnknownFlow(_)
        | FlowError::UnknownStep { .. } => RemoteError::not_found(error.to_string()),
        FlowError::InvalidData(errors) => {
            RemoteError::validation(error.to_string(), validation_to_wire(errors))
        }
        FlowError::Handler(message) => RemoteError::handler(message.clone()),
        FlowError::TooManyFlows => RemoteError::new(ErrorKind::Overloaded, error.to_string()),
        FlowError::Abort { .. } | FlowError::InvalidTransition(_) | FlowError::NotAllowed(_) => {
            RemoteError::bad_request(error.to_string())
        }
    }
}

/// A remote error rebuilt as the same kind of flow error.
pub fn flow_error_from_remote(error: &RemoteError) -> FlowError {
    match error.kind {
        ErrorKind::Validation => FlowError::InvalidData(validation_from_wire(&error.field_errors)),
        ErrorKind::NotFound => FlowError::UnknownFlow(error.message.clone()),
        ErrorKind::Overloaded => FlowError::TooManyFlows,
        ErrorKind::BadRequest | ErrorKind::Refused => FlowError::NotAllowed(error.message.clone()),
        _ => FlowError::Handler(error.message.clone()),
    }
}

#[cfg(test)]
mod tests;

/// An entity description from the wire as the core's entity info (what a proxy says about
/// itself). Enum-like fields a newer peer may extend (`entity_category`, `entry_type`) are
/// dropped when unknown rather than failing the entity.
pub fn entity_info_from_wire(
    description: &wire::EntityDescription,
) -> homecore::entity::EntityInfo {
    use homecore::entity::{EntityDeviceInfo, EntityInfo};
    fn parse<T: serde::de::DeserializeOwned>(text: &Option<String>) -> Option<T> {
        text.as_ref()
            .and_then(|text| serde_json::from_value(Value::String(text.clone())).ok())
    }
    let pair = |pair: &wire::StringPair| (pair.first.clone(), pair.second.clone());
    let mut info = EntityInfo::new(description.domain.clone());
    info.unique_id = description.unique_id.clone();
    info.name = description.name.clone();
    info.has_entity_name = description.has_entity_name;
    info.translation_key = description.translation_key.clone();
    info.icon = description.icon.clone();
    info.device_class = description.device_class.clone();
    info.entity_category = parse(&description.entity_category);
    info.supported_features = description.supported_features;
    info.unit_of_measurement = description.unit_of_measurement.clone();
    info.state_class = description.state_class.clone();
    info.capabilities = json::object_from_bytes(&description.capabilities_json).unwrap_or_default();
    info.device_info = description.device.as_ref().map(|device| EntityDeviceInfo {
        identifiers: device.identifiers.iter().map(pair).collect(),
        connections: device.connections.iter().map(pair).collect(),
        name: device.name.clone(),
        manufacturer: device.manufacturer.clone(),
        model: device.model.clone(),
        model_id: device.model_id.clone(),
        sw_version: device.sw_version.clone(),
        hw_version: device.hw_version.clone(),
        serial_number: device.serial_number.clone(),
        via_device: device.via_device.as_ref().map(pair),
        entry_type: parse(&device.entry_type),
        configuration_url: device.configuration_url.clone(),
        suggested_area: device.suggested_area.clone(),
    });
    info.entity_registry_enabled_default = description.entity_registry_enabled_default;
    info
}
