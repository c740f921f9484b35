//! Flow results as the wire carries them, and back as the core's flow steps: forms with their
//! schemas (selectors and sections included), menus, entries to create, aborts and progress.

use std::collections::BTreeMap;

use homecore::data_entry_flow::Placeholders;
use homecore::{FlowResult, FlowStep, MenuOption, Schema};
use sandbox_proto::{json, wire};
use serde_json::{Map, Value};

use crate::{ConvertError, object};

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
