//! Round trips through the wire for every flow result type, entries and errors: hand-written
//! examples here, properties over generated values in [`roundtrip`].

mod roundtrip;

use homecore::data_entry_flow::Placeholders;
use homecore::schema::PathSegment;
use homecore::{
    ConfigEntry, FlowError, FlowResult, FlowStep, Schema, ServiceError, ValidationErrors,
};
use sandbox_proto::error::ErrorKind;
use sandbox_proto::wire;
use serde_json::Map;

use crate::*;
use homecore::schema::Field;
use homecore::{FieldType, Selector};
use serde_json::json;

fn result(step: FlowStep) -> FlowResult {
    FlowResult {
        flow_id: "flow-1".into(),
        handler: "demo".into(),
        step,
    }
}

fn round_trip(step: FlowStep, unique_id: Option<&str>) -> (FlowStep, Option<String>) {
    let wire = flow_result_to_wire(&result(step), unique_id.map(str::to_owned));
    // Through bytes, as on a real channel.
    let bytes = prost::Message::encode_to_vec(&wire);
    let decoded: wire::FlowResult = prost::Message::decode(bytes.as_slice()).expect("decodes");
    flow_step_from_wire(&decoded).expect("converts")
}

#[test]
fn a_form_keeps_its_schema_selectors_sections_and_errors() {
    let schema = Schema::new(vec![
        Field::required("host", FieldType::string()).with_selector(Selector::text()),
        Field::optional(
            "mode",
            FieldType::select(&[("eco", "Eco"), ("boost", "Boost")]),
        )
        .with_selector(Selector::select(
            &[("eco", "Eco"), ("boost", "Boost")],
            false,
        )),
        Field::optional(
            "advanced",
            FieldType::section(
                Schema::new(vec![
                    Field::optional("port", FieldType::integer_range(1, 65535))
                        .with_default(json!(8080)),
                ]),
                true,
            ),
        ),
    ]);
    let step = FlowStep::Form {
        step_id: "user".into(),
        data_schema: Some(schema),
        errors: [("base".to_owned(), "cannot_connect".to_owned())].into(),
        description_placeholders: [("model".to_owned(), "Demo 3000".to_owned())].into(),
        last_step: Some(false),
        preview: None,
    };
    let (back, unique_id) = round_trip(step.clone(), None);
    assert_eq!(back, step);
    assert_eq!(unique_id, None);
}

#[test]
fn a_menu_keeps_its_labels_in_order() {
    let step = FlowStep::menu(
        "pick",
        &[
            ("zeta", "Last letter"),
            ("alpha", "First letter"),
            ("mid", ""),
        ],
    );
    let (back, _) = round_trip(step, None);
    let FlowStep::Menu { menu_options, .. } = back else {
        panic!("a menu")
    };
    let ids: Vec<_> = menu_options
        .iter()
        .map(|option| option.step_id.as_str())
        .collect();
    assert_eq!(ids, ["zeta", "alpha", "mid"]);
    assert_eq!(menu_options[0].label.as_deref(), Some("Last letter"));
    assert_eq!(menu_options[2].label, None, "an empty label means none");
}

#[test]
fn create_entry_keeps_version_minor_version_options_and_unique_id() {
    let step = FlowStep::CreateEntry {
        title: "Demo".into(),
        data: json!({"host": "10.0.0.2", "port": 8080, "ratio": 0.5})
            .as_object()
            .cloned()
            .expect("object"),
        options: json!({"scan_interval": 30})
            .as_object()
            .cloned()
            .expect("object"),
        version: 2,
        minor_version: 3,
        description: None,
        description_placeholders: Placeholders::new(),
        entry_id: None,
    };
    let (back, unique_id) = round_trip(step.clone(), Some("demo-1234"));
    assert_eq!(back, step);
    assert_eq!(unique_id.as_deref(), Some("demo-1234"));
    let FlowStep::CreateEntry { data, .. } = back else {
        panic!("create_entry")
    };
    assert!(data["port"].is_u64(), "an integer stays an integer");
    assert!(data["ratio"].is_f64());
}

#[test]
fn abort_external_and_progress_round_trip() {
    for step in [
        FlowStep::abort("already_configured"),
        FlowStep::ExternalStep {
            step_id: "auth".into(),
            url: "https://example.invalid/auth".into(),
            description_placeholders: Placeholders::new(),
        },
        FlowStep::ExternalStepDone {
            step_id: "finish".into(),
        },
        FlowStep::ShowProgress {
            step_id: "wait".into(),
            progress_action: "discovering".into(),
            description_placeholders: Placeholders::new(),
        },
        FlowStep::ShowProgressDone {
            step_id: "finish".into(),
        },
    ] {
        assert_eq!(round_trip(step.clone(), None).0, step);
    }
}

#[test]
fn entries_round_trip_and_are_tagged_with_the_group() {
    let mut entry = ConfigEntry::new(
        "demo",
        "Demo",
        json!({"n": 1}).as_object().cloned().expect("object"),
        "user",
    );
    entry.options = json!({"x": 0.5}).as_object().cloned().expect("object");
    entry.unique_id = Some("u1".into());
    entry.version = 2;
    entry.minor_version = 1;
    let rebuilt = entry_from_wire(&entry_to_wire(&entry), "built-in").expect("converts");
    assert_eq!(rebuilt.entry_id, entry.entry_id);
    assert_eq!(rebuilt.data, entry.data);
    assert_eq!(rebuilt.options, entry.options);
    assert_eq!(rebuilt.unique_id, entry.unique_id);
    assert_eq!((rebuilt.version, rebuilt.minor_version), (2, 1));
    assert_eq!(rebuilt.sandbox.as_deref(), Some("built-in"));
}

#[test]
fn a_malformed_entry_is_a_clear_error() {
    let mut wire = entry_to_wire(&ConfigEntry::new("demo", "Demo", Map::new(), "user"));
    wire.data_json = b"[1, 2]".to_vec().into();
    let error = entry_from_wire(&wire, "built-in").expect_err("data must be an object");
    assert_eq!(
        error.to_string(),
        "field `data_json`: expected a JSON object, got an array"
    );
    wire.entry_id.clear();
    assert!(entry_from_wire(&wire, "built-in").is_err());
}

#[test]
fn validation_errors_keep_their_paths_both_ways() {
    let error = ServiceError::validation(&["advanced", "port"], "expected int");
    let remote = service_error_to_remote(&error);
    assert_eq!(remote.kind, ErrorKind::Validation);
    assert_eq!(remote.field_errors[0].path, ["advanced", "port"]);
    assert_eq!(service_error_from_remote("demo", "set", &remote), error);
    let list_error = ValidationErrors::single(
        vec![PathSegment::Key("items".into()), PathSegment::Index(2)],
        "bad",
    );
    assert_eq!(
        validation_from_wire(&validation_to_wire(&list_error)),
        list_error
    );
}

#[test]
fn service_and_flow_errors_keep_their_kind() {
    let not_found = ServiceError::NotFound {
        domain: "demo".into(),
        service: "nope".into(),
    };
    assert_eq!(
        service_error_to_remote(&not_found).kind,
        ErrorKind::NotFound
    );
    assert_eq!(
        service_error_from_remote("demo", "nope", &service_error_to_remote(&not_found)),
        not_found
    );
    assert_eq!(
        service_error_to_remote(&ServiceError::handler("boom")).kind,
        ErrorKind::Handler
    );
    let flow = FlowError::UnknownFlow("f".into());
    assert_eq!(flow_error_to_remote(&flow).kind, ErrorKind::NotFound);
    assert!(matches!(
        flow_error_from_remote(&flow_error_to_remote(&FlowError::Handler("x".into()))),
        FlowError::Handler(_)
    ));
}
