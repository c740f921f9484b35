//! The mqtt config flow (the broker's settings, tested by connecting: `cannot_connect` and
//! `invalid_auth` on the form, as Home Assistant's) and the options flow (discovery, birth and
//! last-will messages).

use futures::future::BoxFuture;
use serde_json::{Map, Value, json};

use homecore::{
    ConfigEntry, Field, FieldType, FlowError, FlowHandler, FlowStep, FlowStepContext, Schema,
    Selector,
};

use super::DOMAIN;
use super::config::{
    ConfigError, DEFAULT_BIRTH_PAYLOAD, DEFAULT_DISCOVERY_PREFIX, DEFAULT_PORT,
    DEFAULT_STATUS_TOPIC, DEFAULT_WILL_PAYLOAD, EntryConfig,
};
use super::connection::{ConnectError, probe};

fn text(name: &str, required: bool) -> Field {
    let field = if required {
        Field::required(name, FieldType::string())
    } else {
        Field::optional(name, FieldType::string())
    };
    field.with_selector(Selector::text())
}

fn flag(name: &str, default: bool) -> Field {
    Field::optional(name, FieldType::Boolean)
        .with_default(json!(default))
        .with_selector(Selector::boolean())
}

/// The broker form, suggesting what was typed before.
pub(crate) fn broker_schema() -> Schema {
    Schema::new(vec![
        text("broker", true),
        Field::required("port", FieldType::integer_range(1, 65535))
            .with_default(json!(DEFAULT_PORT))
            .with_selector(Selector::number(1.0, 65535.0, 1.0, false)),
        text("username", false),
        Field::optional("password", FieldType::string()).with_selector(Selector::password()),
        text("client_id", false),
        flag("tls", false),
        text("ca_file", false),
        text("discovery_prefix", false).with_default(json!(DEFAULT_DISCOVERY_PREFIX)),
    ])
}

/// The options form, showing the entry's current settings.
pub(crate) fn options_schema(current: &EntryConfig) -> Schema {
    let birth = current.birth.as_ref();
    let will = current.will.as_ref();
    Schema::new(vec![
        flag("discovery", current.discovery),
        text("discovery_prefix", false).with_default(json!(current.discovery_prefix)),
        flag("birth_enable", birth.is_some()),
        text("birth_topic", false).with_default(json!(
            birth.map_or(DEFAULT_STATUS_TOPIC, |birth| birth.topic.as_str())
        )),
        text("birth_payload", false).with_default(json!(
            birth.map_or(DEFAULT_BIRTH_PAYLOAD, |birth| birth.payload.as_str())
        )),
        flag("will_enable", will.is_some()),
        text("will_topic", false).with_default(json!(
            will.map_or(DEFAULT_STATUS_TOPIC, |will| will.topic.as_str())
        )),
        text("will_payload", false).with_default(json!(
            will.map_or(DEFAULT_WILL_PAYLOAD, |will| will.payload.as_str())
        )),
    ])
}

fn field_error(error: &ConfigError) -> (&'static str, &'static str) {
    match error {
        ConfigError::Missing(field) => (field, "required"),
        ConfigError::Invalid { field, .. } => (field, "invalid"),
    }
}

/// The config flow: one `user` form, tested by connecting before the entry is made.
#[derive(Debug, Default)]
pub(crate) struct MqttConfigFlow;

impl FlowHandler for MqttConfigFlow {
    fn step<'a>(
        &'a mut self,
        _flow: &'a FlowStepContext,
        step_id: &'a str,
        input: Option<Map<String, Value>>,
    ) -> BoxFuture<'a, Result<FlowStep, FlowError>> {
        Box::pin(async move {
            if step_id != "user" {
                return Err(FlowError::UnknownStep {
                    handler: DOMAIN.to_owned(),
                    step_id: step_id.to_owned(),
                });
            }
            let Some(input) = input else {
                return Ok(FlowStep::form("user", Some(broker_schema())));
            };
            let config = match EntryConfig::from_entry(&input, &Map::new()) {
                Ok(config) => config,
                Err(error) => {
                    return Ok(FlowStep::form_with_errors(
                        "user",
                        Some(broker_schema()),
                        &[field_error(&error)],
                    ));
                }
            };
            match probe(&config).await {
                Ok(()) => Ok(FlowStep::create_entry(config.broker.clone(), input)),
                Err(error) => {
                    let key = match error {
                        ConnectError::InvalidAuth(_) => "invalid_auth",
                        ConnectError::Tls(_) => "invalid_tls",
                        ConnectError::Refused(_) | ConnectError::Unreachable { .. } => {
                            "cannot_connect"
                        }
                    };
                    tracing::info!(%error, "the MQTT settings were tested and refused");
                    Ok(FlowStep::form_with_errors(
                        "user",
                        Some(broker_schema()),
                        &[("base", key)],
                    ))
                }
            }
        })
    }
}

/// The options flow: one `init` form.
pub(crate) struct MqttOptionsFlow {
    data: Map<String, Value>,
    options: Map<String, Value>,
}

impl MqttOptionsFlow {
    pub(crate) fn new(entry: &ConfigEntry) -> Self {
        Self {
            data: entry.data.clone(),
            options: entry.options.clone(),
        }
    }
}

impl FlowHandler for MqttOptionsFlow {
    fn step<'a>(
        &'a mut self,
        _flow: &'a FlowStepContext,
        step_id: &'a str,
        input: Option<Map<String, Value>>,
    ) -> BoxFuture<'a, Result<FlowStep, FlowError>> {
        Box::pin(async move {
            if step_id != "init" {
                return Err(FlowError::UnknownStep {
                    handler: DOMAIN.to_owned(),
                    step_id: step_id.to_owned(),
                });
            }
            let current = EntryConfig::from_entry(&self.data, &self.options)
                .map_err(|err| FlowError::abort(format!("invalid entry: {err}")))?;
            let Some(input) = input else {
                return Ok(FlowStep::form("init", Some(options_schema(&current))));
            };
            match EntryConfig::from_entry(&self.data, &input) {
                Ok(_) => Ok(FlowStep::create_entry("", input)),
                Err(error) => Ok(FlowStep::form_with_errors(
                    "init",
                    Some(options_schema(&current)),
                    &[field_error(&error)],
                )),
            }
        })
    }
}
