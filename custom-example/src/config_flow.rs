//! The config flow: one form asking for a name and a target temperature.

use futures::future::BoxFuture;
use serde_json::{Map, Value, json};

use homecore::{
    Field, FieldType, FlowError, FlowHandler, FlowStep, FlowStepContext, Schema, Selector,
};

use super::{DEFAULT_TARGET, MAX_TEMP, MIN_TEMP};

/// The form of the `user` step.
pub(crate) fn user_schema() -> Schema {
    Schema::new(vec![
        Field::required("name", FieldType::string())
            .with_default(json!("Acme thermostat"))
            .with_selector(Selector::text()),
        Field::required(
            "target_temperature",
            FieldType::float_range(MIN_TEMP, MAX_TEMP),
        )
        .with_default(json!(DEFAULT_TARGET))
        .with_selector(Selector::number(MIN_TEMP, MAX_TEMP, 0.5, false)),
    ])
}

/// `user` (form) → create_entry.
#[derive(Debug, Default)]
pub(crate) struct AcmeConfigFlow;

impl FlowHandler for AcmeConfigFlow {
    fn step<'a>(
        &'a mut self,
        _flow: &'a FlowStepContext,
        step_id: &'a str,
        input: Option<Map<String, Value>>,
    ) -> BoxFuture<'a, Result<FlowStep, FlowError>> {
        Box::pin(async move {
            if step_id != "user" {
                return Err(FlowError::UnknownStep {
                    handler: super::DOMAIN.to_owned(),
                    step_id: step_id.to_owned(),
                });
            }
            let Some(mut data) = input else {
                return Ok(FlowStep::form("user", Some(user_schema())));
            };
            let name = data
                .get("name")
                .and_then(Value::as_str)
                .map(str::trim)
                .unwrap_or_default()
                .to_owned();
            if name.is_empty() {
                return Ok(FlowStep::form_with_errors(
                    "user",
                    Some(user_schema()),
                    &[("name", "required")],
                ));
            }
            data.insert("name".to_owned(), json!(name));
            Ok(FlowStep::create_entry(name, data))
        })
    }
}
