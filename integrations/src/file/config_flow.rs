//! The file config flow: a menu picks sensor or notify, then one form asks for the file.

use futures::future::BoxFuture;
use serde_json::{Map, Value, json};

use homecore::{
    Field, FieldType, FlowError, FlowHandler, FlowStep, FlowStepContext, Schema, Selector,
};

use super::DOMAIN;
use super::config::{
    ConfigError, DEFAULT_SCAN_INTERVAL_SECS, EntryConfig, MAX_SCAN_INTERVAL_SECS,
    MIN_SCAN_INTERVAL_SECS, check_path,
};

/// The form of one platform's step.
pub(crate) fn platform_schema(platform: &str) -> Option<Schema> {
    let mut fields = vec![
        Field::required("name", FieldType::string()).with_selector(Selector::text()),
        Field::required("file_path", FieldType::string()).with_selector(Selector::text()),
    ];
    match platform {
        "sensor" => {
            fields.push(
                Field::optional("unit_of_measurement", FieldType::string())
                    .with_selector(Selector::text()),
            );
            fields.push(
                Field::required("numeric", FieldType::Boolean)
                    .with_default(json!(false))
                    .with_selector(Selector::boolean()),
            );
            fields.push(
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
            );
        }
        "notify" => fields.push(
            Field::required("timestamp", FieldType::Boolean)
                .with_default(json!(false))
                .with_selector(Selector::boolean()),
        ),
        _ => return None,
    }
    Some(Schema::new(fields))
}

/// The config flow: `user` (menu) → `sensor` | `notify` (form).
#[derive(Debug, Default)]
pub(crate) struct FileConfigFlow;

impl FlowHandler for FileConfigFlow {
    fn step<'a>(
        &'a mut self,
        flow: &'a FlowStepContext,
        step_id: &'a str,
        input: Option<Map<String, Value>>,
    ) -> BoxFuture<'a, Result<FlowStep, FlowError>> {
        Box::pin(async move {
            if step_id == "user" {
                return Ok(FlowStep::menu(
                    "user",
                    &[("sensor", "Sensor"), ("notify", "Notification")],
                ));
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
            let raw_path = data
                .get("file_path")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let path = match check_path(raw_path, step_id == "notify") {
                Ok(path) => path,
                Err(err) => {
                    return Ok(FlowStep::form_with_errors(
                        step_id,
                        Some(schema),
                        &[("file_path", err.error_key())],
                    ));
                }
            };
            let path = path.display().to_string();
            // One entry per platform and file (Home Assistant's `_async_abort_entries_match`).
            let taken = flow
                .core()
                .config_entries()
                .entries(Some(DOMAIN))
                .iter()
                .any(|entry| {
                    entry.data.get("platform") == Some(&json!(step_id))
                        && entry.data.get("file_path") == Some(&json!(path))
                });
            if taken {
                return Err(FlowError::abort("already_configured"));
            }
            data.insert("platform".to_owned(), json!(step_id));
            data.insert("file_path".to_owned(), json!(path));
            match EntryConfig::from_data(&data) {
                Ok(EntryConfig::Sensor { name, .. } | EntryConfig::Notify { name, .. }) => {
                    data.insert("name".to_owned(), json!(name));
                    Ok(FlowStep::create_entry(name, data))
                }
                Err(ConfigError::Missing(field)) => Ok(FlowStep::form_with_errors(
                    step_id,
                    Some(schema),
                    &[(field, "required")],
                )),
                Err(err) => Err(FlowError::Handler(err.to_string())),
            }
        })
    }
}
