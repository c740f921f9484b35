//! Tests for schemas: coercion, defaults, sections, paths and the JSON form.

use serde_json::json;

use super::*;

fn connection_schema() -> Schema {
    Schema::new(vec![
        Field::required("host", FieldType::string()).with_selector(Selector::text()),
        Field::optional("name", FieldType::string()).with_default(json!("Hub")),
        Field::required(
            "advanced",
            FieldType::section(
                Schema::new(vec![
                    Field::optional("port", FieldType::integer_range(1, 65535))
                        .with_default(json!(80)),
                    Field::optional("timeout", FieldType::float_range(0.1, 60.0)),
                ]),
                true,
            ),
        ),
    ])
}

fn key(name: &str) -> PathSegment {
    PathSegment::Key(name.to_owned())
}

#[test]
fn applies_defaults_inside_and_outside_sections() {
    let out = connection_schema()
        .validate(&json!({"host": "10.0.0.2"}))
        .unwrap();
    assert_eq!(
        Value::Object(out),
        json!({"host": "10.0.0.2", "name": "Hub", "advanced": {"port": 80}})
    );
}

#[test]
fn errors_carry_precise_paths_and_every_problem_is_reported() {
    let err = connection_schema()
        .validate(&json!({"advanced": {"port": 70000, "bogus": 1}, "extra": true}))
        .unwrap_err();
    let found: Vec<(Vec<PathSegment>, &str)> = err
        .errors
        .iter()
        .map(|e| (e.path.clone(), e.message.as_str()))
        .collect();
    assert_eq!(
        found,
        vec![
            (vec![key("host")], "required key not provided"),
            (
                vec![key("advanced"), key("port")],
                "value must be at most 65535"
            ),
            (
                vec![key("advanced"), key("bogus")],
                "extra keys not allowed"
            ),
            (vec![key("extra")], "extra keys not allowed"),
        ]
    );
    assert_eq!(err.errors[1].path_strings(), vec!["advanced", "port"]);
    assert_eq!(
        err.errors[1].to_string(),
        "value must be at most 65535 @ data[\"advanced\"][\"port\"]"
    );
    assert_eq!(
        serde_json::to_value(&err.errors[1].path).unwrap(),
        json!(["advanced", "port"])
    );
}

#[test]
fn numbers_keep_their_kind() {
    let schema = Schema::new(vec![
        Field::required("i", FieldType::integer()),
        Field::required("f", FieldType::float()),
        Field::required("any", FieldType::Any),
    ]);
    let out = schema
        .validate(&json!({"i": "42", "f": 2, "any": 7}))
        .unwrap();
    assert!(out["i"].is_i64() && out["i"] == 42);
    assert!(out["f"].is_f64() && out["f"] == 2.0);
    assert!(out["any"].is_i64());
    let out = schema
        .validate(&json!({"i": 3.0, "f": 0.5, "any": 0.5}))
        .unwrap();
    assert!(out["i"].is_i64());
    assert!(out["any"].is_f64());
    let err = schema
        .validate(&json!({"i": 3.5, "f": "x", "any": null}))
        .unwrap_err();
    assert_eq!(err.errors.len(), 2);
    assert_eq!(err.errors[0].message, "expected int");
    assert_eq!(err.errors[1].message, "expected float");
}

#[test]
fn booleans_coerce_like_home_assistant() {
    let schema = Schema::new(vec![Field::required("b", FieldType::Boolean)]);
    for (input, expected) in [
        (json!(true), true),
        (json!("on"), true),
        (json!("YES"), true),
        (json!(1), true),
        (json!("off"), false),
        (json!(0), false),
        (json!("disable"), false),
    ] {
        assert_eq!(
            schema.validate(&json!({"b": input})).unwrap()["b"],
            expected
        );
    }
    let err = schema.validate(&json!({"b": "maybe"})).unwrap_err();
    assert_eq!(err.errors[0].message, "invalid boolean value maybe");
}

#[test]
fn strings_select_and_lengths() {
    let schema = Schema::new(vec![
        Field::required(
            "code",
            FieldType::String {
                min_length: Some(2),
                max_length: Some(4),
            },
        ),
        Field::required(
            "mode",
            FieldType::select(&[("heat", "Heat"), ("cool", "Cool")]),
        ),
    ]);
    let out = schema
        .validate(&json!({"code": 123, "mode": "heat"}))
        .unwrap();
    assert_eq!(out["code"], "123");
    let err = schema
        .validate(&json!({"code": "x", "mode": "fan"}))
        .unwrap_err();
    assert_eq!(err.errors[0].message, "length of value must be at least 2");
    assert_eq!(
        err.errors[1].message,
        "value must be one of [\"heat\", \"cool\"]"
    );
    let err = schema
        .validate(&json!({"code": {"a": 1}, "mode": "cool"}))
        .unwrap_err();
    assert_eq!(err.errors[0].message, "expected str");
}

#[test]
fn lists_accept_single_values_and_report_item_indexes() {
    let schema = Schema::new(vec![Field::required(
        "ports",
        FieldType::list(FieldType::integer_range(1, 10)),
    )]);
    assert_eq!(
        schema.validate(&json!({"ports": 5})).unwrap()["ports"],
        json!([5])
    );
    assert_eq!(
        schema.validate(&json!({"ports": null})).unwrap()["ports"],
        json!([])
    );
    let err = schema
        .validate(&json!({"ports": [1, 99, "x"]}))
        .unwrap_err();
    assert_eq!(
        err.errors[0].path,
        vec![key("ports"), PathSegment::Index(1)]
    );
    assert_eq!(
        err.errors[1].path,
        vec![key("ports"), PathSegment::Index(2)]
    );
    assert_eq!(
        serde_json::to_value(&err.errors[0].path).unwrap(),
        json!(["ports", 1])
    );
}

#[test]
fn entity_ids_are_lowercased_split_and_domain_checked() {
    let schema = Schema::new(vec![
        Field::required("one", FieldType::entity_id(&["light"])),
        Field::optional("many", FieldType::entity_ids(&[])),
    ]);
    let out = schema
        .validate(&json!({"one": "Light.Kitchen", "many": "light.a, switch.b"}))
        .unwrap();
    assert_eq!(out["one"], "light.kitchen");
    assert_eq!(out["many"], json!(["light.a", "switch.b"]));
    let err = schema
        .validate(&json!({"one": "switch.a", "many": ["ok.x", "bad"]}))
        .unwrap_err();
    assert_eq!(
        err.errors[0].message,
        "Entity ID switch.a belongs to domain switch, expected light"
    );
    assert_eq!(err.errors[1].path, vec![key("many"), PathSegment::Index(1)]);
}

#[test]
fn time_periods_become_seconds() {
    let schema = Schema::new(vec![Field::required("t", FieldType::TimePeriod)]);
    for (input, seconds) in [
        (json!(90), json!(90)),
        (json!("01:30"), json!(5400)),
        (json!("00:00:01.5"), json!(1.5)),
        (json!({"minutes": 2, "seconds": 3}), json!(123)),
    ] {
        assert_eq!(schema.validate(&json!({"t": input})).unwrap()["t"], seconds);
    }
    assert!(schema.validate(&json!({"t": "soon"})).is_err());
    assert!(schema.validate(&json!({"t": {"weeks": 1}})).is_err());
}

#[test]
fn extra_key_policies() {
    let base = Schema::new(vec![Field::optional("a", FieldType::Any)]);
    let input = json!({"a": 1, "b": 2});
    assert!(base.validate(&input).is_err());
    assert_eq!(
        Value::Object(
            base.clone()
                .with_extra(ExtraKeys::Allow)
                .validate(&input)
                .unwrap()
        ),
        json!({"a": 1, "b": 2})
    );
    assert_eq!(
        Value::Object(base.with_extra(ExtraKeys::Remove).validate(&input).unwrap()),
        json!({"a": 1})
    );
}

#[test]
fn nested_objects_and_non_object_input() {
    let schema = Schema::new(vec![Field::required(
        "options",
        FieldType::object(Schema::new(vec![Field::required(
            "x",
            FieldType::integer(),
        )])),
    )]);
    let err = schema
        .validate(&json!({"options": {"x": "nope"}}))
        .unwrap_err();
    assert_eq!(err.errors[0].path, vec![key("options"), key("x")]);
    let err = schema.validate(&json!([1, 2])).unwrap_err();
    assert_eq!(err.errors[0].message, "expected a dictionary");
    assert!(err.errors[0].path.is_empty());
}

#[test]
fn schema_round_trips_through_json() {
    let schema = connection_schema();
    let json = serde_json::to_value(&schema).unwrap();
    assert_eq!(json["fields"][0]["type"], "string");
    assert_eq!(json["fields"][0]["selector"], json!({"text": {}}));
    assert_eq!(json["fields"][2]["type"], "section");
    assert_eq!(json["fields"][2]["collapsed"], true);
    assert_eq!(json["fields"][2]["schema"]["fields"][0]["max"], 65535);
    let back: Schema = serde_json::from_value(json).unwrap();
    assert_eq!(back, schema);
    let every_kind = Schema::new(vec![
        Field::required("a", FieldType::Boolean),
        Field::required("b", FieldType::list(FieldType::entity_id(&["light"]))),
        Field::required("c", FieldType::Object { schema: None }),
        Field::required("d", FieldType::TimePeriod),
        Field::required("e", FieldType::float_range(0.5, 1.5)),
        Field::required(
            "f",
            FieldType::Select {
                options: vec![SelectOption {
                    value: "v".into(),
                    label: "V".into(),
                }],
                multiple: true,
            },
        ),
        Field::optional("g", FieldType::Any)
            .with_suggested_value(json!(3))
            .with_description("any"),
    ]);
    let back: Schema = serde_json::from_str(&serde_json::to_string(&every_kind).unwrap()).unwrap();
    assert_eq!(back, every_kind);
}

#[test]
fn malformed_schema_json_is_a_clear_error() {
    let err =
        serde_json::from_value::<Schema>(json!({"fields": [{"name": "x", "type": "quaternion"}]}))
            .unwrap_err();
    assert!(err.to_string().contains("quaternion"), "{err}");
}

#[test]
fn definition_check() {
    assert!(connection_schema().check().is_ok());
    let dup = Schema::new(vec![
        Field::required("a", FieldType::Any),
        Field::required("a", FieldType::Any),
    ]);
    assert_eq!(
        dup.check(),
        Err(SchemaDefinitionError::DuplicateField("a".into()))
    );
    let empty = Schema::new(vec![Field::required("n", FieldType::integer_range(5, 1))]);
    assert_eq!(
        empty.check(),
        Err(SchemaDefinitionError::EmptyRange("n".into()))
    );
    let bad_default = Schema::new(vec![
        Field::optional("n", FieldType::integer()).with_default(json!("x")),
    ]);
    assert!(matches!(
        bad_default.check(),
        Err(SchemaDefinitionError::InvalidDefault { .. })
    ));
}

proptest::proptest! {
    #[test]
    fn validation_never_panics_on_arbitrary_json(text in "[\\[\\]{}\",:0-9a-z. -]{0,64}") {
        if let Ok(value) = serde_json::from_str::<Value>(&text) {
            let _ = connection_schema().validate(&value);
            let _ = connection_schema().validate(&json!({"host": value.clone(), "advanced": value}));
        }
    }
}
