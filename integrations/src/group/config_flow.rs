//! The group config flow: a menu picks light or switch, then one form names the members.

use futures::future::BoxFuture;
use serde_json::{Map, Value, json};

use homecore::{
    Field, FieldType, FlowError, FlowHandler, FlowStep, FlowStepContext, Schema, Selector,
};

use super::{DOMAIN, MAX_MEMBERS, members_of};

/// The group types offered, as `(step id, label)`.
pub(crate) const GROUP_TYPES: [(&str, &str); 2] =
    [("light", "Light group"), ("switch", "Switch group")];

/// The form of a group type's step.
pub(crate) fn group_schema(domain: &str) -> Schema {
    Schema::new(vec![
        Field::required("name", FieldType::string()).with_selector(Selector::text()),
        Field::required("entities", FieldType::entity_ids(&[domain]))
            .with_selector(Selector::entity(Some(domain), true)),
        Field::required("all", FieldType::Boolean)
            .with_default(json!(false))
            .with_selector(Selector::boolean()),
    ])
}

/// The config flow: `user` (menu) → `light` | `switch` (form).
#[derive(Debug, Default)]
pub(crate) struct GroupConfigFlow;

impl FlowHandler for GroupConfigFlow {
    fn step<'a>(
        &'a mut self,
        _flow: &'a FlowStepContext,
        step_id: &'a str,
        input: Option<Map<String, Value>>,
    ) -> BoxFuture<'a, Result<FlowStep, FlowError>> {
        Box::pin(async move {
            if step_id == "user" {
                return Ok(FlowStep::menu("user", &GROUP_TYPES));
            }
            let Some(&(domain, _)) = GROUP_TYPES.iter().find(|(id, _)| *id == step_id) else {
                return Err(FlowError::UnknownStep {
                    handler: DOMAIN.to_owned(),
                    step_id: step_id.to_owned(),
                });
            };
            let Some(mut data) = input else {
                return Ok(FlowStep::form(step_id, Some(group_schema(domain))));
            };
            let name = data
                .get("name")
                .and_then(Value::as_str)
                .map(str::trim)
                .unwrap_or_default()
                .to_owned();
            if name.is_empty() {
                return Ok(FlowStep::form_with_errors(
                    step_id,
                    Some(group_schema(domain)),
                    &[("name", "name_empty")],
                ));
            }
            let members = members_of(&data);
            if members.is_empty() || members.len() > MAX_MEMBERS {
                return Ok(FlowStep::form_with_errors(
                    step_id,
                    Some(group_schema(domain)),
                    &[("entities", "members_required")],
                ));
            }
            data.insert("group_type".to_owned(), json!(domain));
            data.insert("entities".to_owned(), json!(members));
            Ok(FlowStep::create_entry(name, data))
        })
    }
}
