//! Flow results, form schemas and config entries in the JSON shapes Home Assistant's frontend
//! reads: `data_schema` as `voluptuous_serialize` writes it, a created entry as
//! `ConfigEntry.as_json_fragment`.

use homecore::schema::SelectOption;
use homecore::{ConfigEntry, Field, FieldType, FlowResult, FlowStep, Schema};
use serde_json::{Map, Value, json};

/// A form schema as `voluptuous_serialize.convert` (with Home Assistant's custom serializer)
/// writes it: one object per field, in order.
pub fn schema_to_ha_json(schema: &Schema) -> Value {
    Value::Array(schema.fields.iter().map(field_to_ha_json).collect())
}

/// One field: its type (or selector), then `name`, `required`/`optional`, `default` and
/// `description.suggested_value`, as voluptuous markers carry them.
fn field_to_ha_json(field: &Field) -> Value {
    let mut out = match &field.selector {
        // A field edited through a selector is a selector in Home Assistant's schema.
        Some(selector) => {
            let mut out = Map::new();
            out.insert(
                "selector".into(),
                json!({ selector.kind.clone(): selector.config }),
            );
            out
        }
        None => field_type_to_ha_json(&field.kind),
    };
    out.insert("name".into(), Value::String(field.name.clone()));
    let marker = if field.required {
        "required"
    } else {
        "optional"
    };
    out.insert(marker.into(), Value::Bool(true));
    if let Some(default) = &field.default {
        out.insert("default".into(), default.clone());
    }
    if let Some(suggested) = &field.suggested_value {
        out.insert(
            "description".into(),
            json!({ "suggested_value": suggested }),
        );
    }
    Value::Object(out)
}

/// A field type as the validator it stands for would serialize: `vol.Coerce(int)` with a
/// `vol.Range` is `{"type": "integer", "valueMin", "valueMax"}`, a `vol.In` is a `select`, a
/// section is `expandable`. Types voluptuous has no plain form for become the selector Home
/// Assistant would use for them.
fn field_type_to_ha_json(kind: &FieldType) -> Map<String, Value> {
    let mut out = Map::new();
    let mut put = |key: &str, value: Value| {
        out.insert(key.to_owned(), value);
    };
    match kind {
        FieldType::String {
            min_length,
            max_length,
        } => {
            put("type", json!("string"));
            if let Some(min) = min_length {
                put("lengthMin", json!(min));
            }
            if let Some(max) = max_length {
                put("lengthMax", json!(max));
            }
        }
        FieldType::Integer { min, max } => {
            put("type", json!("integer"));
            if let Some(min) = min {
                put("valueMin", json!(min));
            }
            if let Some(max) = max {
                put("valueMax", json!(max));
            }
        }
        FieldType::Float { min, max } => {
            put("type", json!("float"));
            if let Some(min) = min {
                put("valueMin", json!(min));
            }
            if let Some(max) = max {
                put("valueMax", json!(max));
            }
        }
        FieldType::Boolean => put("type", json!("boolean")),
        FieldType::Select {
            options,
            multiple: false,
        } => {
            put("type", json!("select"));
            put("options", select_pairs(options));
        }
        FieldType::Select {
            options,
            multiple: true,
        } => multi_select(&mut put, options),
        FieldType::List { item, .. } => match item.as_ref() {
            FieldType::Select { options, .. } => multi_select(&mut put, options),
            FieldType::EntityId { domains } => put("selector", entity_selector(domains, true)),
            FieldType::String { .. } => {
                put("selector", json!({"text": {"multiple": true}}));
            }
            _ => put("selector", json!({"object": {}})),
        },
        FieldType::Object { .. } | FieldType::Any => put("selector", json!({"object": {}})),
        FieldType::Section { schema, collapsed } => {
            put("type", json!("expandable"));
            put("schema", schema_to_ha_json(schema));
            put("expanded", json!(!collapsed));
        }
        FieldType::EntityId { domains } => put("selector", entity_selector(domains, false)),
        FieldType::EntityIds { domains } => put("selector", entity_selector(domains, true)),
        FieldType::TimePeriod => put("type", json!("positive_time_period_dict")),
    }
    out
}

/// `vol.In({value: label})`: `[[value, label], ...]`.
fn select_pairs(options: &[SelectOption]) -> Value {
    options
        .iter()
        .map(|option| json!([option.value, option.label]))
        .collect()
}

/// `cv.multi_select({value: label})`.
fn multi_select(put: &mut impl FnMut(&str, Value), options: &[SelectOption]) {
    let labels: Map<String, Value> = options
        .iter()
        .map(|option| (option.value.clone(), Value::String(option.label.clone())))
        .collect();
    put("type", json!("multi_select"));
    put("options", Value::Object(labels));
}

fn entity_selector(domains: &[String], multiple: bool) -> Value {
    let mut config = Map::new();
    match domains {
        [] => {}
        [one] => {
            config.insert("domain".into(), json!(one));
        }
        many => {
            config.insert("domain".into(), json!(many));
        }
    }
    if multiple {
        config.insert("multiple".into(), Value::Bool(true));
    }
    json!({ "entity": config })
}

/// What the REST API says of an entry that the core cannot tell: which optional features its
/// integration has.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EntryFeatures {
    /// It has an options flow.
    pub supports_options: bool,
    /// It can be unloaded without a restart.
    pub supports_unload: bool,
}

/// A config entry as `ConfigEntry.as_json_fragment` writes it (times as Unix seconds).
pub fn entry_to_ha_json(entry: &ConfigEntry, features: EntryFeatures) -> Value {
    json!({
        "created_at": timestamp(entry.created_at),
        "entry_id": entry.entry_id,
        "domain": entry.domain,
        "modified_at": timestamp(entry.modified_at),
        "title": entry.title,
        "source": entry.source,
        "state": entry.state.as_str(),
        "supports_options": features.supports_options,
        "supports_remove_device": false,
        "supports_unload": features.supports_unload,
        "supports_reconfigure": false,
        "supported_subentry_types": {},
        "pref_disable_new_entities": entry.pref_disable_new_entities,
        "pref_disable_polling": entry.pref_disable_polling,
        "disabled_by": entry.disabled_by,
        "reason": entry.reason,
        "error_reason_translation_key": null,
        "error_reason_translation_placeholders": null,
        "num_subentries": 0,
    })
}

fn timestamp(at: chrono::DateTime<chrono::Utc>) -> f64 {
    // Microsecond precision, as Python's `datetime.timestamp()`.
    at.timestamp_micros() as f64 / 1_000_000.0
}

/// A flow result as Home Assistant's flow views answer it: the step's own keys plus
/// `flow_id` and `handler`, `data_schema` serialized (an empty list for a form without one),
/// and for `create_entry` the created entry under `result` (its `data` and the flow's context
/// left out). `entry` is the created entry, when the step created one.
pub fn flow_result_to_ha_json(
    result: &FlowResult,
    entry: Option<(&ConfigEntry, EntryFeatures)>,
) -> Value {
    let mut out = Map::new();
    let flow_id = Value::String(result.flow_id.clone());
    let handler = Value::String(result.handler.clone());
    let mut put = |key: &str, value: Value| {
        out.insert(key.to_owned(), value);
    };
    match &result.step {
        FlowStep::Form {
            step_id,
            data_schema,
            errors,
            description_placeholders,
            last_step,
            preview,
        } => {
            put("type", json!("form"));
            put("flow_id", flow_id);
            put("handler", handler);
            put("step_id", json!(step_id));
            put(
                "data_schema",
                data_schema.as_ref().map_or(json!([]), schema_to_ha_json),
            );
            put(
                "errors",
                if errors.is_empty() {
                    Value::Null
                } else {
                    json!(errors)
                },
            );
            put(
                "description_placeholders",
                placeholders(description_placeholders),
            );
            put("last_step", json!(last_step));
            put("preview", json!(preview));
        }
        FlowStep::CreateEntry {
            title,
            options,
            version,
            minor_version,
            description,
            description_placeholders,
            ..
        } => {
            put("type", json!("create_entry"));
            put("flow_id", flow_id);
            put("handler", handler);
            put("version", json!(version));
            put("minor_version", json!(minor_version));
            put("title", json!(title));
            put("description", json!(description));
            put(
                "description_placeholders",
                placeholders(description_placeholders),
            );
            put("options", Value::Object(options.clone()));
            put(
                "result",
                entry.map_or(Value::Null, |(entry, features)| {
                    entry_to_ha_json(entry, features)
                }),
            );
        }
        FlowStep::Abort {
            reason,
            description_placeholders,
        } => {
            put("type", json!("abort"));
            put("flow_id", flow_id);
            put("handler", handler);
            put("reason", json!(reason));
            put(
                "description_placeholders",
                placeholders(description_placeholders),
            );
        }
        FlowStep::ExternalStep {
            step_id,
            url,
            description_placeholders,
        } => {
            put("type", json!("external"));
            put("flow_id", flow_id);
            put("handler", handler);
            put("step_id", json!(step_id));
            put("url", json!(url));
            put(
                "description_placeholders",
                placeholders(description_placeholders),
            );
        }
        FlowStep::ExternalStepDone { step_id } => {
            put("type", json!("external_done"));
            put("flow_id", flow_id);
            put("handler", handler);
            put("step_id", json!(step_id));
        }
        FlowStep::ShowProgress {
            step_id,
            progress_action,
            description_placeholders,
        } => {
            put("type", json!("progress"));
            put("flow_id", flow_id);
            put("handler", handler);
            put("step_id", json!(step_id));
            put("progress_action", json!(progress_action));
            put(
                "description_placeholders",
                placeholders(description_placeholders),
            );
        }
        FlowStep::ShowProgressDone { step_id } => {
            put("type", json!("progress_done"));
            put("flow_id", flow_id);
            put("handler", handler);
            put("step_id", json!(step_id));
        }
        FlowStep::Menu {
            step_id,
            menu_options,
            description_placeholders,
        } => {
            // `async_show_menu` offers the choice as `vol.In(menu_options)` under
            // `next_step_id`; a menu of labels is Home Assistant's `{step_id: label}` form.
            let labelled = menu_options.iter().any(|option| option.label.is_some());
            let (options, pairs): (Value, Vec<Value>) = if labelled {
                let map: Map<String, Value> = menu_options
                    .iter()
                    .map(|option| {
                        let label = option.label.as_deref().unwrap_or(&option.step_id);
                        (option.step_id.clone(), json!(label))
                    })
                    .collect();
                let pairs = map.iter().map(|(id, label)| json!([id, label])).collect();
                (Value::Object(map), pairs)
            } else {
                let ids: Vec<&str> = menu_options.iter().map(|o| o.step_id.as_str()).collect();
                let pairs = ids.iter().map(|id| json!([id, id])).collect();
                (json!(ids), pairs)
            };
            put("type", json!("menu"));
            put("flow_id", flow_id);
            put("handler", handler);
            put("step_id", json!(step_id));
            put(
                "data_schema",
                json!([{"type": "select", "options": pairs, "name": "next_step_id"}]),
            );
            put("menu_options", options);
            put(
                "description_placeholders",
                placeholders(description_placeholders),
            );
        }
    }
    Value::Object(out)
}

/// Home Assistant sends `null` for a step without placeholders.
fn placeholders(placeholders: &homecore::data_entry_flow::Placeholders) -> Value {
    if placeholders.is_empty() {
        Value::Null
    } else {
        json!(placeholders)
    }
}

#[cfg(test)]
mod tests;
