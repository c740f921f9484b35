//! Unit tests of the flow result, schema and entry JSON against the shapes Home Assistant's
//! frontend reads.

use std::collections::BTreeMap;

use homecore::data_entry_flow::MenuOption;
use homecore::{ConfigEntry, Field, FieldType, FlowResult, FlowStep, Schema, Selector};
use serde_json::{Map, json};

use super::*;

fn result(step: FlowStep) -> FlowResult {
    FlowResult {
        flow_id: "f1".into(),
        handler: "demo".into(),
        step,
    }
}

#[test]
fn strings_integers_floats_and_booleans_serialize_as_voluptuous_does() {
    let schema = Schema::new(vec![
        Field::required("host", FieldType::string()),
        Field::optional(
            "name",
            FieldType::String {
                min_length: Some(1),
                max_length: Some(20),
            },
        ),
        Field::required("port", FieldType::integer_range(1, 65535)).with_default(json!(80)),
        Field::optional("ratio", FieldType::float_range(0.0, 1.5)),
        Field::optional("count", FieldType::integer()),
        Field::optional("secure", FieldType::Boolean).with_default(json!(false)),
    ]);
    assert_eq!(
        schema_to_ha_json(&schema),
        json!([
            {"type": "string", "name": "host", "required": true},
            {"type": "string", "lengthMin": 1, "lengthMax": 20, "name": "name", "optional": true},
            {"type": "integer", "valueMin": 1, "valueMax": 65535, "name": "port",
             "required": true, "default": 80},
            {"type": "float", "valueMin": 0.0, "valueMax": 1.5, "name": "ratio", "optional": true},
            {"type": "integer", "name": "count", "optional": true},
            {"type": "boolean", "name": "secure", "optional": true, "default": false},
        ])
    );
}

#[test]
fn selects_keep_their_order_and_labels() {
    let schema = Schema::new(vec![
        Field::required("mode", FieldType::select(&[("b", "Bee"), ("a", "Ay")])),
        Field::optional(
            "modes",
            FieldType::Select {
                options: vec![
                    homecore::schema::SelectOption {
                        value: "z".into(),
                        label: "Zed".into(),
                    },
                    homecore::schema::SelectOption {
                        value: "y".into(),
                        label: "Why".into(),
                    },
                ],
                multiple: true,
            },
        ),
    ]);
    let json = schema_to_ha_json(&schema);
    assert_eq!(
        json[0],
        json!({"type": "select", "options": [["b", "Bee"], ["a", "Ay"]], "name": "mode",
               "required": true})
    );
    assert_eq!(
        json[1],
        json!({"type": "multi_select", "options": {"z": "Zed", "y": "Why"}, "name": "modes",
               "optional": true})
    );
    let keys: Vec<&String> = json[1]["options"]
        .as_object()
        .expect("an object")
        .keys()
        .collect();
    assert_eq!(keys, ["z", "y"], "the options' order is kept");
}

#[test]
fn selectors_sections_defaults_and_suggested_values() {
    let inner = Schema::new(vec![
        Field::optional("timeout", FieldType::integer()).with_suggested_value(json!(10)),
    ]);
    let schema = Schema::new(vec![
        Field::required("password", FieldType::string()).with_selector(Selector::password()),
        Field::optional("light", FieldType::entity_id(&["light"]))
            .with_suggested_value(json!("light.kitchen")),
        Field::optional("lights", FieldType::entity_ids(&[])),
        Field::required("advanced", FieldType::section(inner, true)),
        Field::optional("every", FieldType::TimePeriod),
    ]);
    assert_eq!(
        schema_to_ha_json(&schema),
        json!([
            {"selector": {"text": {"type": "password"}}, "name": "password", "required": true},
            {"selector": {"entity": {"domain": "light"}}, "name": "light", "optional": true,
             "description": {"suggested_value": "light.kitchen"}},
            {"selector": {"entity": {"multiple": true}}, "name": "lights", "optional": true},
            {"type": "expandable", "expanded": false, "name": "advanced", "required": true,
             "schema": [{"type": "integer", "name": "timeout", "optional": true,
                         "description": {"suggested_value": 10}}]},
            {"type": "positive_time_period_dict", "name": "every", "optional": true},
        ])
    );
}

#[test]
fn a_form_has_every_key_the_frontend_reads() {
    let step = FlowStep::form_with_errors(
        "user",
        Some(Schema::new(vec![Field::required(
            "host",
            FieldType::string(),
        )])),
        &[("base", "cannot_connect")],
    );
    assert_eq!(
        flow_result_to_ha_json(&result(step), None),
        json!({
            "type": "form", "flow_id": "f1", "handler": "demo", "step_id": "user",
            "data_schema": [{"type": "string", "name": "host", "required": true}],
            "errors": {"base": "cannot_connect"},
            "description_placeholders": null, "last_step": null, "preview": null,
        })
    );
    let bare = flow_result_to_ha_json(&result(FlowStep::form("confirm", None)), None);
    assert_eq!(bare["data_schema"], json!([]), "no schema is an empty list");
    assert_eq!(bare["errors"], json!(null));
}

#[test]
fn a_menu_offers_next_step_id_as_a_select() {
    let step = FlowStep::menu("user", &[("defaults", "Defaults"), ("custom", "Custom")]);
    assert_eq!(
        flow_result_to_ha_json(&result(step), None),
        json!({
            "type": "menu", "flow_id": "f1", "handler": "demo", "step_id": "user",
            "data_schema": [{"type": "select",
                             "options": [["defaults", "Defaults"], ["custom", "Custom"]],
                             "name": "next_step_id"}],
            "menu_options": {"defaults": "Defaults", "custom": "Custom"},
            "description_placeholders": null,
        })
    );
    let unlabelled = FlowStep::Menu {
        step_id: "user".into(),
        menu_options: vec![MenuOption {
            step_id: "one".into(),
            label: None,
        }],
        description_placeholders: BTreeMap::from([("n".into(), "1".into())]),
    };
    let json = flow_result_to_ha_json(&result(unlabelled), None);
    assert_eq!(json["menu_options"], json!(["one"]));
    assert_eq!(json["description_placeholders"], json!({"n": "1"}));
}

#[test]
fn create_entry_carries_the_entry_but_not_its_data() {
    let mut data = Map::new();
    data.insert("secret".into(), json!("s3cret"));
    let mut step = FlowStep::create_entry("Demo", data.clone());
    if let FlowStep::CreateEntry { entry_id, .. } = &mut step {
        *entry_id = Some("e1".into());
    }
    let mut entry = ConfigEntry::new("demo", "Demo", data, "user");
    entry.entry_id = "e1".into();
    let features = EntryFeatures {
        supports_options: false,
        supports_unload: true,
    };
    let json = flow_result_to_ha_json(&result(step), Some((&entry, features)));
    assert_eq!(json["type"], "create_entry");
    assert_eq!(json["title"], "Demo");
    assert_eq!(json["version"], 1);
    assert_eq!(json["minor_version"], 1);
    assert_eq!(json["result"]["entry_id"], "e1");
    assert_eq!(json["result"]["domain"], "demo");
    assert_eq!(json["result"]["state"], "not_loaded");
    assert_eq!(json["result"]["supports_unload"], true);
    assert!(json.get("data").is_none(), "the data stays on the hub");
    assert!(!json.to_string().contains("s3cret"), "{json}");
}

#[test]
fn abort_external_and_progress_steps() {
    let abort = flow_result_to_ha_json(&result(FlowStep::abort("already_configured")), None);
    assert_eq!(
        abort,
        json!({"type": "abort", "flow_id": "f1", "handler": "demo",
               "reason": "already_configured", "description_placeholders": null})
    );
    let external = FlowStep::ExternalStep {
        step_id: "auth".into(),
        url: "https://example.com/auth".into(),
        description_placeholders: BTreeMap::new(),
    };
    assert_eq!(
        flow_result_to_ha_json(&result(external), None),
        json!({"type": "external", "flow_id": "f1", "handler": "demo", "step_id": "auth",
               "url": "https://example.com/auth", "description_placeholders": null})
    );
    let done = FlowStep::ExternalStepDone {
        step_id: "finish".into(),
    };
    assert_eq!(
        flow_result_to_ha_json(&result(done), None),
        json!({"type": "external_done", "flow_id": "f1", "handler": "demo",
               "step_id": "finish"})
    );
    let progress = FlowStep::ShowProgress {
        step_id: "wait".into(),
        progress_action: "pairing".into(),
        description_placeholders: BTreeMap::new(),
    };
    assert_eq!(
        flow_result_to_ha_json(&result(progress), None),
        json!({"type": "progress", "flow_id": "f1", "handler": "demo", "step_id": "wait",
               "progress_action": "pairing", "description_placeholders": null})
    );
    let progress_done = FlowStep::ShowProgressDone {
        step_id: "finish".into(),
    };
    assert_eq!(
        flow_result_to_ha_json(&result(progress_done), None),
        json!({"type": "progress_done", "flow_id": "f1", "handler": "demo",
               "step_id": "finish"})
    );
}

#[test]
fn an_entry_has_home_assistants_keys() {
    let entry = ConfigEntry::new("demo", "Demo", Map::new(), "user");
    let json = entry_to_ha_json(&entry, EntryFeatures::default());
    for key in [
        "created_at",
        "entry_id",
        "domain",
        "modified_at",
        "title",
        "source",
        "state",
        "supports_options",
        "supports_remove_device",
        "supports_unload",
        "supports_reconfigure",
        "supported_subentry_types",
        "pref_disable_new_entities",
        "pref_disable_polling",
        "disabled_by",
        "reason",
        "error_reason_translation_key",
        "error_reason_translation_placeholders",
        "num_subentries",
    ] {
        assert!(json.get(key).is_some(), "{key} missing from {json}");
    }
    assert!(json["created_at"].is_f64(), "a Unix timestamp: {json}");
}
