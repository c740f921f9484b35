//! The demo's config flow (a menu, then a form with a selector and a section) and its options flow.

use futures::future::BoxFuture;
use serde_json::{Map, Value, json};

use homecore::config_entries::ConfigEntry;
use homecore::data_entry_flow::Placeholders;
use homecore::{
    Field, FieldType, FlowError, FlowHandler, FlowStep, FlowStepContext, Schema, Selector,
};

use super::{DOMAIN, ENTRY_MINOR_VERSION, ENTRY_VERSION};

/// Default title of a demo entry.
pub(crate) const DEFAULT_NAME: &str = "Demo";

/// Options a new entry starts with.
pub(crate) fn default_options() -> Map<String, Value> {
    object(json!({"announce_presses": true, "volume_step": 10, "theme": "light"}))
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// The form of the `configure` step: a name, a mode picked with a select selector, and an
/// "advanced" section.
pub(crate) fn configure_schema() -> Schema {
    Schema::new(vec![
        Field::required("name", FieldType::string())
            .with_default(json!(DEFAULT_NAME))
            .with_selector(Selector::text()),
        Field::required(
            "mode",
            FieldType::select(&[("standard", "Standard"), ("eco", "Eco")]),
        )
        .with_default(json!("standard"))
        .with_selector(Selector::select(
            &[("standard", "Standard"), ("eco", "Eco")],
            false,
        )),
        Field::required(
            "advanced",
            FieldType::section(
                Schema::new(vec![
                    Field::required("update_interval", FieldType::integer_range(5, 3600))
                        .with_default(json!(30))
                        .with_selector(Selector::number(5.0, 3600.0, 1.0, false)),
                    Field::optional("debug", FieldType::Boolean)
                        .with_default(json!(false))
                        .with_selector(Selector::boolean()),
                ]),
                true,
            ),
        ),
    ])
}

fn create_entry(title: String, data: Map<String, Value>) -> FlowStep {
    FlowStep::CreateEntry {
        title,
        data,
        options: default_options(),
        version: ENTRY_VERSION,
        minor_version: ENTRY_MINOR_VERSION,
        description: None,
        description_placeholders: Placeholders::new(),
        entry_id: None,
    }
}

/// The config flow: `user` (a menu) leads to `configure` (a form) or `defaults` (no questions).
#[derive(Debug, Default)]
pub(crate) struct DemoConfigFlow;

impl FlowHandler for DemoConfigFlow {
    fn step<'a>(
        &'a mut self,
        flow: &'a FlowStepContext,
        step_id: &'a str,
        input: Option<Map<String, Value>>,
    ) -> BoxFuture<'a, Result<FlowStep, FlowError>> {
        Box::pin(async move {
            match step_id {
                "user" => {
                    // One demo per core: its devices and unique ids are fixed.
                    if !flow
                        .core()
                        .config_entries()
                        .entries(Some(DOMAIN))
                        .is_empty()
                    {
                        return Err(FlowError::abort("single_instance_allowed"));
                    }
                    Ok(FlowStep::menu(
                        "user",
                        &[("configure", "Configure"), ("defaults", "Use defaults")],
                    ))
                }
                "configure" => match input {
                    None => Ok(FlowStep::form("configure", Some(configure_schema()))),
                    Some(input) => {
                        let name = input
                            .get("name")
                            .and_then(Value::as_str)
                            .unwrap_or(DEFAULT_NAME)
                            .trim()
                            .to_owned();
                        if name.is_empty() {
                            return Ok(FlowStep::form_with_errors(
                                "configure",
                                Some(configure_schema()),
                                &[("name", "name_empty")],
                            ));
                        }
                        flow.set_unique_id(Some(DOMAIN), true)?;
                        flow.abort_if_unique_id_configured(None, false).await?;
                        Ok(create_entry(name, input))
                    }
                },
                "defaults" => {
                    flow.set_unique_id(Some(DOMAIN), true)?;
                    flow.abort_if_unique_id_configured(None, false).await?;
                    let data = configure_schema()
                        .validate(&json!({}))
                        .map_err(FlowError::InvalidData)?;
                    Ok(create_entry(DEFAULT_NAME.to_owned(), data))
                }
                other => Err(FlowError::UnknownStep {
                    handler: DOMAIN.to_owned(),
                    step_id: other.to_owned(),
                }),
            }
        })
    }
}

/// The options form, pre-filled with the entry's current options.
pub(crate) fn options_schema(current: &Map<String, Value>) -> Schema {
    let defaults = default_options();
    let value = |key: &str| {
        current
            .get(key)
            .or(defaults.get(key))
            .cloned()
            .unwrap_or(Value::Null)
    };
    Schema::new(vec![
        Field::required("announce_presses", FieldType::Boolean)
            .with_default(value("announce_presses"))
            .with_selector(Selector::boolean()),
        Field::required("volume_step", FieldType::integer_range(1, 50))
            .with_default(value("volume_step"))
            .with_selector(Selector::number(1.0, 50.0, 1.0, true)),
        Field::required(
            "theme",
            FieldType::select(&[("light", "Light"), ("dark", "Dark")]),
        )
        .with_default(value("theme"))
        .with_selector(Selector::select(
            &[("light", "Light"), ("dark", "Dark")],
            false,
        )),
    ])
}

/// The options flow: one form (`init`) whose answer becomes the entry's options.
#[derive(Debug)]
pub(crate) struct DemoOptionsFlow {
    /// The entry's options when the flow started.
    current: Map<String, Value>,
}

impl DemoOptionsFlow {
    pub(crate) fn new(entry: &ConfigEntry) -> Self {
        Self {
            current: entry.options.clone(),
        }
    }
}

impl FlowHandler for DemoOptionsFlow {
    fn step<'a>(
        &'a mut self,
        _flow: &'a FlowStepContext,
        step_id: &'a str,
        input: Option<Map<String, Value>>,
    ) -> BoxFuture<'a, Result<FlowStep, FlowError>> {
        Box::pin(async move {
            match (step_id, input) {
                ("init", None) => Ok(FlowStep::form("init", Some(options_schema(&self.current)))),
                ("init", Some(input)) => Ok(FlowStep::create_entry("", input)),
                (other, _) => Err(FlowError::UnknownStep {
                    handler: DOMAIN.to_owned(),
                    step_id: other.to_owned(),
                }),
            }
        })
    }
}
