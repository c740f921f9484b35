//! The command_line config flow: a menu picks the platform, then one form asks for its commands.

use futures::future::BoxFuture;
use serde_json::{Map, Value, json};

use homecore::{
    Field, FieldType, FlowError, FlowHandler, FlowStep, FlowStepContext, Schema, Selector,
};

use super::DOMAIN;
use super::config::{
    ConfigError, DEFAULT_COMMAND_TIMEOUT_SECS, DEFAULT_PAYLOAD_OFF, DEFAULT_PAYLOAD_ON,
    DEFAULT_SCAN_INTERVAL_SECS, EntryConfig, MAX_COMMAND_TIMEOUT_SECS, MAX_SCAN_INTERVAL_SECS,
    MIN_COMMAND_TIMEOUT_SECS, MIN_SCAN_INTERVAL_SECS,
};

/// The platforms offered by the menu, as `(step id, label)`.
pub(crate) const PLATFORMS: [(&str, &str); 3] = [
    ("sensor", "Sensor"),
    ("binary_sensor", "Binary sensor"),
    ("switch", "Switch"),
];

fn timing_fields() -> Vec<Field> {
    vec![
        Field::required(
            "command_timeout",
            FieldType::integer_range(MIN_COMMAND_TIMEOUT_SECS, MAX_COMMAND_TIMEOUT_SECS),
        )
        .with_default(json!(DEFAULT_COMMAND_TIMEOUT_SECS))
        .with_selector(Selector::number(
            MIN_COMMAND_TIMEOUT_SECS as f64,
            MAX_COMMAND_TIMEOUT_SECS as f64,
            1.0,
            false,
        )),
        Field::required(
            "scan_interval",
            FieldType::integer_range(MIN_SCAN_INTERVAL_SECS, MAX_SCAN_INTERVAL_SECS),
        )
        .with_default(json!(DEFAULT_SCAN_INTERVAL_SECS))
        .with_selector(Selector::number(
            MIN_SCAN_INTERVAL_SECS as f64,
            MAX_SCAN_INTERVAL_SECS as f64,
            1.0,
            false,
        )),
    ]
}

fn text_field(name: &str, required: bool) -> Field {
    let field = if required {
        Field::required(name, FieldType::string())
    } else {
        Field::optional(name, FieldType::string())
    };
    field.with_selector(Selector::text())
}

/// The form of one platform's step.
pub(crate) fn platform_schema(platform: &str) -> Option<Schema> {
    let mut fields = vec![text_field("name", true)];
    match platform {
        "sensor" => {
            fields.push(text_field("command", true));
            fields.push(text_field("unit_of_measurement", false));
        }
        "binary_sensor" => {
            fields.push(text_field("command", true));
            fields.push(text_field("payload_on", true).with_default(json!(DEFAULT_PAYLOAD_ON)));
            fields.push(text_field("payload_off", true).with_default(json!(DEFAULT_PAYLOAD_OFF)));
        }
        "switch" => {
            fields.push(text_field("command_on", true));
            fields.push(text_field("command_off", true));
            fields.push(text_field("command_state", false));
        }
        _ => return None,
    }
    fields.extend(timing_fields());
    Some(Schema::new(fields))
}

/// The form field and error key a configuration error is shown on.
fn error_of(err: &ConfigError) -> (&'static str, &'static str) {
    match err {
        ConfigError::Missing(field) => (field, "required"),
        ConfigError::UnknownPlatform(_) => ("base", "unknown_platform"),
        ConfigError::Command { field, problem } => (field, problem.error_key()),
        ConfigError::OutOfRange { field, .. } => (field, "out_of_range"),
        ConfigError::PayloadsEqual => ("payload_off", "payloads_equal"),
    }
}

/// The config flow: `user` (menu) → `sensor` | `binary_sensor` | `switch` (form).
#[derive(Debug, Default)]
pub(crate) struct CommandLineConfigFlow;

impl FlowHandler for CommandLineConfigFlow {
    fn step<'a>(
        &'a mut self,
        _flow: &'a FlowStepContext,
        step_id: &'a str,
        input: Option<Map<String, Value>>,
    ) -> BoxFuture<'a, Result<FlowStep, FlowError>> {
        Box::pin(async move {
            if step_id == "user" {
                return Ok(FlowStep::menu("user", &PLATFORMS));
            }
            let Some(schema) = platform_schema(step_id) else {
                return Err(FlowError::UnknownStep {
                    handler: DOMAIN.to_owned(),
                    step_id: step_id.to_owned(),
                });
            };
            let Some(mut data) = input else {
                return Ok(FlowStep::form(step_id, Some(schema)));
            };
            data.insert("platform".to_owned(), json!(step_id));
            match EntryConfig::from_data(&data) {
                Ok(config) => {
                    // Keep the cleaned values (trimmed commands, defaulted payloads).
                    data.insert("name".to_owned(), json!(config.name));
                    Ok(FlowStep::create_entry(config.name, data))
                }
                Err(err) => Ok(FlowStep::form_with_errors(
                    step_id,
                    Some(schema),
                    &[error_of(&err)],
                )),
            }
        })
    }
}
