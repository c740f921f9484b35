//! Round-trip properties for every conversion of this crate, each through real protobuf bytes:
//! what one side converts and encodes, the other decodes and converts back to the same value,
//! and in every JSON payload an integer stays an integer and a float the same float.
//!
//! Runs are deterministic (a fixed seed) and write no regression file; the case counts keep
//! the whole set well under a few seconds in a debug build.

use std::collections::BTreeMap;
use std::path::PathBuf;

use homecore::config_entries::ConfigEntryDisabler;
use homecore::data_entry_flow::Placeholders;
use homecore::device_registry::{DeviceEntryType, DeviceKey};
use homecore::entity::{EntityDeviceInfo, EntityInfo};
use homecore::entity_id::is_valid_domain;
use homecore::entity_registry::EntityCategory;
use homecore::integration::Manifest;
use homecore::schema::{ExtraKeys, PathSegment, SchemaDefinitionError, SelectOption};
use homecore::selector::SELECTOR_KINDS;
use homecore::{
    ConfigEntry, Context, CoreConfig, Field, FieldType, FlowError, FlowResult, FlowStep,
    MenuOption, Schema, SchemaError, Selector, ServiceError, UnitSystem, ValidationErrors,
};
use proptest::collection::{btree_map, vec};
use proptest::option;
use proptest::prelude::*;
use proptest::test_runner::{RngSeed, TestCaseError};
use sandbox_proto::RemoteError;
use sandbox_proto::error::ErrorKind;
use sandbox_proto::wire;
use serde_json::{Map, Number, Value, json};

use crate::*;

// ---------------------------------------------------------------------------------------------
// Running
// ---------------------------------------------------------------------------------------------

/// A fixed seed, so every run checks the same cases (tests are deterministic), and no
/// regression file, so a failing run leaves nothing in the source tree: a failure prints its
/// shrunk case, which is then kept as a named `#[test]`.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        rng_seed: RngSeed::Fixed(0x5EED_F00D),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Cases per property: enough that the schema property meets a form field's `null` default
/// (`a_null_field_default_survives_a_schemas_json`).
const CASES: u32 = 256;

/// `message` encoded to bytes and decoded back, as a real channel carries it.
fn through_bytes<M: prost::Message + Default>(message: &M) -> M {
    let bytes = prost::Message::encode_to_vec(message);
    M::decode(bytes.as_slice()).expect("what was encoded decodes")
}

/// A remote error as it crosses a channel: to its wire message, bytes, and back (where the
/// receiving side bounds it; the strategies stay within those bounds).
fn remote_through_bytes(error: &RemoteError) -> RemoteError {
    RemoteError::from_wire(through_bytes(&error.to_wire()))
}

// ---------------------------------------------------------------------------------------------
// Strategies: text, names, JSON
// ---------------------------------------------------------------------------------------------

/// Free text: any Unicode scalar values, control characters and NUL included.
fn text() -> impl Strategy<Value = String> + Clone {
    vec(any::<char>(), 0..12).prop_map(String::from_iter)
}

/// Free text that is not empty (where the wire reads an empty string as "none").
fn non_empty_text() -> impl Strategy<Value = String> + Clone {
    vec(any::<char>(), 1..12).prop_map(String::from_iter)
}

/// A domain as the core accepts it: a lowercase slug without leading, trailing or doubled
/// underscores.
fn domain() -> impl Strategy<Value = String> + Clone {
    "[a-z0-9]{1,8}(_[a-z0-9]{1,8}){0,2}"
}

/// A ULID as the core makes them (entry ids, context ids).
fn ulid() -> impl Strategy<Value = ulid::Ulid> + Clone {
    any::<u128>().prop_map(ulid::Ulid)
}

/// A float JSON can hold: any finite one, with the edges (the largest, the smallest normal and
/// subnormal, a whole float, -0.0) drawn often.
fn json_float() -> impl Strategy<Value = f64> + Clone {
    prop_oneof![
        Just(0.5),
        Just(1.0),
        Just(-0.0),
        Just(1e300),
        Just(-1e300),
        Just(f64::MAX),
        Just(f64::MIN_POSITIVE),
        Just(5e-324),
        Just(0.1),
        any::<f64>().prop_filter("JSON holds finite floats", |float| float.is_finite()),
    ]
}

/// A JSON leaf: null, a boolean, an integer (any i64, or a u64 beyond i64), a float, a string.
fn json_leaf() -> impl Strategy<Value = Value> + Clone {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        ((1u64 << 63)..=u64::MAX).prop_map(Value::from),
        json_float()
            .prop_map(|float| Value::Number(Number::from_f64(float).expect("the float is finite"))),
        text().prop_map(Value::String),
    ]
}

/// A JSON value nested at most `depth` levels, with few entries per array or object: a leaf
/// half of the time (a recursive strategy alone almost never stops at its root).
fn json_value(depth: u32) -> impl Strategy<Value = Value> + Clone {
    let nested = json_leaf().prop_recursive(depth, 32, 5, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..5).prop_map(Value::Array),
            btree_map(text(), inner, 0..5)
                .prop_map(|entries| Value::Object(entries.into_iter().collect())),
        ]
    });
    prop_oneof![json_leaf(), nested]
}

/// A JSON object (a payload such as entry data or entity capabilities), values nested up to
/// four levels.
fn json_object() -> impl Strategy<Value = Map<String, Value>> + Clone {
    btree_map(text(), json_value(3), 0..5).prop_map(|entries| entries.into_iter().collect())
}

/// Checks that `back` is `sent` number for number: an integer is still an integer of the same
/// range (`is_i64`, `is_u64`), a float still a float with the same bits, objects keep their
/// keys in order. Plain equality alone would let `-0.0` come back as `0.0`.
fn assert_same_json(sent: &Value, back: &Value) -> Result<(), TestCaseError> {
    match (sent, back) {
        (Value::Number(sent), Value::Number(back)) => {
            prop_assert_eq!(
                sent.is_i64(),
                back.is_i64(),
                "{} came back as {}",
                sent,
                back
            );
            prop_assert_eq!(
                sent.is_u64(),
                back.is_u64(),
                "{} came back as {}",
                sent,
                back
            );
            prop_assert_eq!(
                sent.is_f64(),
                back.is_f64(),
                "{} came back as {}",
                sent,
                back
            );
            prop_assert_eq!(
                sent.as_f64().map(f64::to_bits),
                back.as_f64().map(f64::to_bits)
            );
            prop_assert_eq!(sent, back);
        }
        (Value::Array(sent), Value::Array(back)) => {
            prop_assert_eq!(sent.len(), back.len());
            for (sent, back) in sent.iter().zip(back) {
                assert_same_json(sent, back)?;
            }
        }
        (Value::Object(sent), Value::Object(back)) => assert_same_object(sent, back)?,
        _ => prop_assert_eq!(sent, back),
    }
    Ok(())
}

fn assert_same_object(
    sent: &Map<String, Value>,
    back: &Map<String, Value>,
) -> Result<(), TestCaseError> {
    prop_assert!(sent.keys().eq(back.keys()), "{:?} != {:?}", sent, back);
    for ((_, sent), (_, back)) in sent.iter().zip(back) {
        assert_same_json(sent, back)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Strategies: schemas and flow steps
// ---------------------------------------------------------------------------------------------

fn selector() -> impl Strategy<Value = Selector> + Clone {
    (
        proptest::sample::select(SELECTOR_KINDS),
        btree_map(text(), json_value(1), 0..3),
    )
        .prop_map(|(kind, config)| Selector {
            kind: kind.to_owned(),
            config: config.into_iter().collect(),
        })
}

/// A field's default or suggested value, `null` included
/// (`a_null_field_default_survives_a_schemas_json`).
fn field_value() -> impl Strategy<Value = Value> + Clone {
    json_value(2)
}

fn leaf_field_type() -> impl Strategy<Value = FieldType> + Clone {
    prop_oneof![
        (option::of(any::<usize>()), option::of(any::<usize>())).prop_map(
            |(min_length, max_length)| FieldType::String {
                min_length,
                max_length
            }
        ),
        (option::of(any::<i64>()), option::of(any::<i64>()))
            .prop_map(|(min, max)| FieldType::Integer { min, max }),
        (option::of(json_float()), option::of(json_float()))
            .prop_map(|(min, max)| FieldType::Float { min, max }),
        Just(FieldType::Boolean),
        (
            vec(
                (text(), text()).prop_map(|(value, label)| SelectOption { value, label }),
                0..4
            ),
            any::<bool>()
        )
            .prop_map(|(options, multiple)| FieldType::Select { options, multiple }),
        Just(FieldType::Object { schema: None }),
        vec(domain(), 0..3).prop_map(|domains| FieldType::EntityId { domains }),
        vec(domain(), 0..3).prop_map(|domains| FieldType::EntityIds { domains }),
        Just(FieldType::TimePeriod),
        Just(FieldType::Any),
    ]
}

/// A field type whose lists, objects and sections nest at most `depth` levels.
fn field_type(depth: u32) -> BoxedStrategy<FieldType> {
    if depth == 0 {
        return leaf_field_type().boxed();
    }
    prop_oneof![
        3 => leaf_field_type(),
        1 => (
            field_type(depth - 1),
            option::of(any::<usize>()),
            option::of(any::<usize>()),
        )
            .prop_map(|(item, min_length, max_length)| FieldType::List {
                item: Box::new(item),
                min_length,
                max_length,
            }),
        1 => schema(depth - 1).prop_map(FieldType::object),
        1 => (schema(depth - 1), any::<bool>())
            .prop_map(|(schema, collapsed)| FieldType::section(schema, collapsed)),
    ]
    .boxed()
}

fn field(depth: u32) -> impl Strategy<Value = Field> {
    (
        text(),
        any::<bool>(),
        option::of(field_value()),
        option::of(field_value()),
        option::of(text()),
        option::of(selector()),
        field_type(depth),
    )
        .prop_map(
            |(name, required, default, suggested_value, description, selector, kind)| Field {
                name,
                required,
                default,
                suggested_value,
                description,
                selector,
                kind,
            },
        )
}

/// A schema whose sections, objects and lists nest at most `depth` levels.
fn schema(depth: u32) -> BoxedStrategy<Schema> {
    (
        vec(field(depth), 0..4),
        prop_oneof![
            Just(ExtraKeys::Prevent),
            Just(ExtraKeys::Allow),
            Just(ExtraKeys::Remove)
        ],
    )
        .prop_map(|(fields, extra)| Schema { fields, extra })
        .boxed()
}

fn placeholders() -> impl Strategy<Value = Placeholders> {
    btree_map(text(), text(), 0..3)
}

/// Every kind of flow step, with what the wire carries. Not carried, so always `None` here:
/// a form's `preview` (the wire has no field for it) and `create_entry`'s `entry_id` (set by
/// main's flow manager once it has created the entry, after the step crossed).
/// A `create_entry` version is at least 1 (the wire reads 0, an absent field, as 1) and its
/// description is `None` or not empty (the wire reads an empty one as none), as is a menu
/// option's label.
fn flow_step() -> impl Strategy<Value = FlowStep> {
    let form = (
        text(),
        option::of(schema(2)),
        btree_map(text(), text(), 0..3),
        placeholders(),
        option::of(any::<bool>()),
    )
        .prop_map(
            |(step_id, data_schema, errors, description_placeholders, last_step)| FlowStep::Form {
                step_id,
                data_schema,
                errors,
                description_placeholders,
                last_step,
                preview: None,
            },
        );
    let create_entry = (
        text(),
        json_object(),
        json_object(),
        1..=u32::MAX,
        1..=u32::MAX,
        option::of(non_empty_text()),
        placeholders(),
    )
        .prop_map(
            |(title, data, options, version, minor_version, description, placeholders)| {
                FlowStep::CreateEntry {
                    title,
                    data,
                    options,
                    version,
                    minor_version,
                    description,
                    description_placeholders: placeholders,
                    entry_id: None,
                }
            },
        );
    let menu = (
        text(),
        vec(
            (text(), option::of(non_empty_text()))
                .prop_map(|(step_id, label)| MenuOption { step_id, label }),
            0..5,
        ),
        placeholders(),
    )
        .prop_map(
            |(step_id, menu_options, description_placeholders)| FlowStep::Menu {
                step_id,
                menu_options,
                description_placeholders,
            },
        );
    // Forms, entries and menus, which carry the most, drawn most often.
    prop_oneof![
        4 => form,
        2 => create_entry,
        2 => menu,
        1 => (text(), placeholders()).prop_map(|(reason, description_placeholders)| {
            FlowStep::Abort {
                reason,
                description_placeholders,
            }
        }),
        1 => (text(), text(), placeholders()).prop_map(|(step_id, url, description_placeholders)| {
            FlowStep::ExternalStep {
                step_id,
                url,
                description_placeholders,
            }
        }),
        1 => text().prop_map(|step_id| FlowStep::ExternalStepDone { step_id }),
        1 => (text(), text(), placeholders()).prop_map(
            |(step_id, progress_action, description_placeholders)| FlowStep::ShowProgress {
                step_id,
                progress_action,
                description_placeholders,
            }
        ),
        1 => text().prop_map(|step_id| FlowStep::ShowProgressDone { step_id }),
    ]
}

// ---------------------------------------------------------------------------------------------
// Strategies: entries, core configuration, errors, entities, manifests
// ---------------------------------------------------------------------------------------------

/// A config entry with everything the wire carries drawn, and `disabled_by` set or not (it is
/// carried to a sandbox but not read back there). Versions are at least 1, as the core's are.
fn config_entry() -> impl Strategy<Value = ConfigEntry> {
    (
        (ulid(), domain(), text(), text()),
        (json_object(), json_object(), option::of(text())),
        (1..=u32::MAX, 1..=u32::MAX),
        (option::of(Just(ConfigEntryDisabler::User)), any::<bool>()),
    )
        .prop_map(
            |(
                (entry_id, domain, title, source),
                (data, options, unique_id),
                (version, minor_version),
                (disabled_by, prefs),
            )| {
                let mut entry = ConfigEntry::new(domain, title, data, source);
                entry.entry_id = entry_id.to_string();
                entry.options = options;
                entry.unique_id = unique_id;
                entry.version = version;
                entry.minor_version = minor_version;
                entry.disabled_by = disabled_by;
                entry.pref_disable_new_entities = prefs;
                entry.pref_disable_polling = !prefs;
                entry.sandbox = Some("main's own group name".into());
                entry
            },
        )
}

/// A core configuration [`CoreConfig::validate`] accepts.
fn core_config() -> impl Strategy<Value = CoreConfig> {
    let latitude = prop_oneof![Just(-90.0), Just(90.0), Just(0.0), -90.0..=90.0f64];
    let longitude = prop_oneof![Just(-180.0), Just(180.0), -180.0..=180.0f64];
    let time_zone = prop_oneof![
        Just("UTC".to_owned()),
        Just("America/Argentina/Buenos_Aires".to_owned()),
        "[A-Za-z0-9_+-]{1,12}(/[A-Za-z0-9_+-]{1,12}){0,3}",
    ];
    (
        (
            non_empty_text().prop_filter("a location name is not blank", |name| {
                !name.trim().is_empty()
            }),
            latitude,
            longitude,
            any::<i32>(),
            any::<u32>(),
        ),
        (
            prop_oneof![Just(UnitSystem::Metric), Just(UnitSystem::UsCustomary)],
            time_zone,
            "[a-zA-Z0-9]{2,3}(-[a-zA-Z0-9]{2,8}){0,2}",
            "[A-Z]{3}",
            option::of("[A-Z]{2}"),
        ),
    )
        .prop_map(
            |(
                (location_name, latitude, longitude, elevation, radius),
                (unit_system, time_zone, language, currency, country),
            )| CoreConfig {
                location_name,
                latitude,
                longitude,
                elevation,
                radius,
                unit_system,
                time_zone,
                language,
                currency,
                country,
                config_dir: PathBuf::from("config"),
            },
        )
}

/// A path segment. A key is never one that parses as a `usize` (`"3"`, `"+3"`): on the wire
/// both kinds of segment are text (`FieldError::path`), and the reading side takes text that
/// is a number as a list index, the only way an index can cross. A form or service schema's
/// field names are not numbers, so nothing real is lost.
fn path_segment() -> impl Strategy<Value = PathSegment> {
    prop_oneof![
        text()
            .prop_filter("a numeric key reads back as an index", |key| key
                .parse::<usize>()
                .is_err())
            .prop_map(PathSegment::Key),
        // Keys that only look numeric ("-3", " 3", "3a") stay keys.
        "[-+ ]?[0-9]{1,3}[a-z. ]?"
            .prop_filter("a numeric key reads back as an index", |key| key
                .parse::<usize>()
                .is_err())
            .prop_map(PathSegment::Key),
        any::<usize>().prop_map(PathSegment::Index),
    ]
}

/// Validation errors (never empty, as the core makes them), within the bounds a receiving
/// side keeps of a peer's error (`sandbox_proto::error::MAX_FIELD_ERRORS`, ...).
fn validation_errors() -> impl Strategy<Value = ValidationErrors> {
    vec(
        (vec(path_segment(), 0..6), text())
            .prop_map(|(path, message)| SchemaError { path, message }),
        1..6,
    )
    .prop_map(|errors| ValidationErrors { errors })
}

fn schema_definition_error() -> impl Strategy<Value = SchemaDefinitionError> {
    prop_oneof![
        text().prop_map(SchemaDefinitionError::DuplicateField),
        text().prop_map(SchemaDefinitionError::EmptyRange),
        (text(), text())
            .prop_map(|(field, message)| SchemaDefinitionError::InvalidDefault { field, message }),
    ]
}

/// Every kind of service error; a `NotFound` names `domain.service`, the service called.
fn service_error(domain: String, service: String) -> impl Strategy<Value = ServiceError> {
    prop_oneof![
        Just(ServiceError::NotFound {
            domain: domain.clone(),
            service: service.clone(),
        }),
        text().prop_map(ServiceError::InvalidName),
        validation_errors().prop_map(ServiceError::Validation),
        Just(ServiceError::ResponseNotSupported {
            domain: domain.clone(),
            service: service.clone(),
        }),
        Just(ServiceError::ResponseRequired {
            domain: domain.clone(),
            service: service.clone(),
        }),
        text().prop_map(move |message| ServiceError::InvalidResponse {
            domain: domain.clone(),
            service: service.clone(),
            message,
        }),
        text().prop_map(ServiceError::Handler),
        schema_definition_error().prop_map(ServiceError::InvalidSchema),
    ]
}

fn flow_error() -> impl Strategy<Value = FlowError> {
    prop_oneof![
        text().prop_map(FlowError::UnknownHandler),
        text().prop_map(FlowError::UnknownFlow),
        (text(), text()).prop_map(|(handler, step_id)| FlowError::UnknownStep { handler, step_id }),
        validation_errors().prop_map(FlowError::InvalidData),
        (text(), placeholders()).prop_map(|(reason, description_placeholders)| {
            FlowError::Abort {
                reason,
                description_placeholders,
            }
        }),
        text().prop_map(FlowError::InvalidTransition),
        Just(FlowError::TooManyFlows),
        text().prop_map(FlowError::Handler),
        text().prop_map(FlowError::NotAllowed),
    ]
}

fn device_key() -> impl Strategy<Value = DeviceKey> {
    (text(), text())
}

fn device_info() -> impl Strategy<Value = EntityDeviceInfo> {
    (
        (
            vec(device_key(), 0..3),
            vec(device_key(), 0..3),
            option::of(text()),
            option::of(text()),
            option::of(text()),
            option::of(text()),
        ),
        (
            option::of(text()),
            option::of(text()),
            option::of(text()),
            option::of(device_key()),
            option::of(Just(DeviceEntryType::Service)),
            option::of(text()),
            option::of(text()),
        ),
    )
        .prop_map(
            |(
                (identifiers, connections, name, manufacturer, model, model_id),
                (
                    sw_version,
                    hw_version,
                    serial_number,
                    via_device,
                    entry_type,
                    configuration_url,
                    suggested_area,
                ),
            )| EntityDeviceInfo {
                identifiers,
                connections,
                name,
                manufacturer,
                model,
                model_id,
                sw_version,
                hw_version,
                serial_number,
                via_device,
                entry_type,
                configuration_url,
                suggested_area,
            },
        )
}

fn entity_info() -> impl Strategy<Value = EntityInfo> {
    let category = option::of(prop_oneof![
        Just(EntityCategory::Config),
        Just(EntityCategory::Diagnostic)
    ]);
    (
        (
            domain(),
            option::of(text()),
            option::of(text()),
            any::<bool>(),
            option::of(text()),
            option::of(text()),
            option::of(text()),
        ),
        (
            category,
            any::<u64>(),
            option::of(text()),
            option::of(text()),
            json_object(),
            option::of(device_info()),
            any::<bool>(),
        ),
    )
        .prop_map(
            |(
                (domain, unique_id, name, has_entity_name, translation_key, icon, device_class),
                (
                    entity_category,
                    supported_features,
                    unit_of_measurement,
                    state_class,
                    capabilities,
                    device_info,
                    entity_registry_enabled_default,
                ),
            )| EntityInfo {
                domain,
                unique_id,
                name,
                has_entity_name,
                translation_key,
                icon,
                device_class,
                entity_category,
                supported_features,
                unit_of_measurement,
                state_class,
                capabilities,
                device_info,
                entity_registry_enabled_default,
            },
        )
}

/// Every integration type with its serde name, spelled out rather than derived from serde, so
/// a renamed variant shows here.
const INTEGRATION_TYPES: &[&str] = &[
    "device", "entity", "hardware", "helper", "hub", "service", "system", "virtual",
];

/// A semver version in its canonical text (no leading zeros in numbers or numeric
/// pre-release identifiers), so the manifest's version prints back as that very text.
fn semver_text() -> impl Strategy<Value = String> {
    let number = "0|[1-9][0-9]{0,5}";
    let pre_identifier = "[0-9]|[1-9][0-9]{1,3}|[a-zA-Z-][0-9a-zA-Z-]{0,5}";
    (
        (number, number, number),
        option::of(vec(pre_identifier, 1..3)),
        option::of(vec("[0-9a-zA-Z-]{1,6}", 1..3)),
    )
        .prop_map(|((major, minor, patch), pre, build)| {
            let mut text = format!("{major}.{minor}.{patch}");
            if let Some(pre) = pre {
                text = format!("{text}-{}", pre.join("."));
            }
            if let Some(build) = build {
                text = format!("{text}+{}", build.join("."));
            }
            text
        })
}

/// A manifest (built from its JSON, as the core reads `manifest.json`) and the version text
/// and integration type name it was built from.
fn manifest() -> impl Strategy<Value = (Manifest, String, String)> {
    (
        (
            domain(),
            text(),
            semver_text(),
            proptest::sample::select(INTEGRATION_TYPES),
        ),
        (
            any::<bool>(),
            vec(domain(), 0..4),
            vec(domain(), 0..4),
            option::of(text()),
            any::<bool>(),
        ),
    )
        .prop_map(
            |(
                (domain, name, version, integration_type),
                (config_flow, platforms, dependencies, iot_class, single_config_entry),
            )| {
                let manifest: Manifest = serde_json::from_value(json!({
                    "domain": domain,
                    "name": name,
                    "version": version,
                    "integration_type": integration_type,
                    "config_flow": config_flow,
                    "platforms": platforms,
                    "dependencies": dependencies,
                    "iot_class": iot_class,
                    "single_config_entry": single_config_entry,
                }))
                .expect("a valid manifest");
                (manifest, version, integration_type.to_owned())
            },
        )
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(CASES))]

    /// JSON alone, the base of every payload below: an integer stays an integer (i64, u64
    /// beyond i64), a float keeps its bits (-0.0, 0.5, 1e300 included), objects keep their
    /// keys in order.
    #[test]
    fn json_payloads_keep_every_number_kind_and_bit(object in json_object()) {
        let wire = wire::ConfigEntry {
            data_json: sandbox_proto::json::object_to_bytes(&object),
            ..wire::ConfigEntry::default()
        };
        let back = crate::object("data_json", &through_bytes(&wire).data_json)
            .expect("an object");
        assert_same_object(&object, &back)?;
    }

    /// Carried: `entry_id`, `domain`, `title`, `data`, `options`, `source`, `unique_id`,
    /// `version`, `minor_version`. Not carried, by design: `disabled_by` is sent but not read
    /// back (main alone enables and disables entries: a sandbox's copy is always one main wants
    /// running); `sandbox` is set to the receiving group (the router's decision, never the
    /// entry's); `created_at`, `modified_at`, the preferences, `state` and `reason` stay main's
    /// (its registry's bookkeeping, not what an integration sets up from).
    #[test]
    fn config_entries_keep_every_carried_field(entry in config_entry(), group in text()) {
        let sent = through_bytes(&entry_to_wire(&entry));
        prop_assert_eq!(
            sent.disabled_by.as_deref(),
            entry.disabled_by.map(|_| "user"),
            "disabled_by is sent by its serde name"
        );
        let back = entry_from_wire(&sent, &group).expect("converts");
        prop_assert_eq!(&back.entry_id, &entry.entry_id);
        prop_assert_eq!(&back.domain, &entry.domain);
        prop_assert_eq!(&back.title, &entry.title);
        assert_same_object(&entry.data, &back.data)?;
        assert_same_object(&entry.options, &back.options)?;
        prop_assert_eq!(&back.source, &entry.source);
        prop_assert_eq!(&back.unique_id, &entry.unique_id);
        prop_assert_eq!(
            (back.version, back.minor_version),
            (entry.version, entry.minor_version)
        );
        prop_assert_eq!(back.disabled_by, None, "a sandbox's entry is never disabled");
        prop_assert_eq!(back.sandbox.as_deref(), Some(group.as_str()));
    }

    /// Every field; `config_dir` is each side's own (where its files live), given on reading.
    #[test]
    fn core_configs_round_trip(config in core_config()) {
        prop_assert!(config.validate().is_ok(), "the strategy makes valid configs");
        let sent = through_bytes(&core_config_to_wire(&config));
        let back = core_config_from_wire(&sent, config.config_dir.clone()).expect("converts");
        prop_assert_eq!(back.latitude.to_bits(), config.latitude.to_bits());
        prop_assert_eq!(back.longitude.to_bits(), config.longitude.to_bits());
        prop_assert_eq!(back, config);
    }

    /// Every step kind through bytes; `flow_id` and `handler` are carried as they are, and
    /// the flow's unique id next to the step.
    #[test]
    fn flow_steps_round_trip(
        flow_id in text(),
        handler in text(),
        step in flow_step(),
        unique_id in option::of(text()),
    ) {
        let result = FlowResult { flow_id, handler, step };
        let sent = through_bytes(&flow_result_to_wire(&result, unique_id.clone()));
        prop_assert_eq!(&sent.flow_id, &result.flow_id);
        prop_assert_eq!(&sent.handler, &result.handler);
        let (back, back_unique_id) = flow_step_from_wire(&sent).expect("converts");
        prop_assert_eq!(back_unique_id, unique_id);
        match (&result.step, &back) {
            (
                FlowStep::CreateEntry { data, options, .. },
                FlowStep::CreateEntry { data: data_back, options: options_back, .. },
            ) => {
                assert_same_object(data, data_back)?;
                assert_same_object(options, options_back)?;
            }
            (
                FlowStep::Form { data_schema: Some(schema), .. },
                FlowStep::Form { data_schema: Some(schema_back), .. },
            ) => {
                let as_json = |schema: &Schema| serde_json::to_value(schema).expect("serialises");
                assert_same_json(&as_json(schema), &as_json(schema_back))?;
            }
            _ => {}
        }
        prop_assert_eq!(back, result.step);
    }

    #[test]
    fn entity_infos_round_trip(info in entity_info()) {
        let sent = through_bytes(&entity_info_to_wire(&info));
        let back = entity_info_from_wire(&sent);
        assert_same_object(&info.capabilities, &back.capabilities)?;
        prop_assert_eq!(back, info);
    }

    #[test]
    fn device_infos_round_trip(device in device_info()) {
        let back = device_info_from_wire(&through_bytes(&device_info_to_wire(&device)));
        prop_assert_eq!(back, device);
    }

    /// Keys and indexes keep their kind (see `path_segment` for why a key is never numeric).
    #[test]
    fn validation_errors_keep_their_paths(errors in validation_errors()) {
        let remote = remote_through_bytes(&RemoteError::validation(
            "invalid",
            validation_to_wire(&errors),
        ));
        prop_assert_eq!(validation_from_wire(&remote.field_errors), errors);
    }

    /// `Validation` (with its paths), `NotFound` and `Handler` come back equal. The kinds with
    /// no counterpart on the calling side come back as `Handler` with the error's sentence:
    /// the caller's own checks (`InvalidName`, `ResponseNotSupported`, `ResponseRequired`)
    /// cross as `BadRequest`, the callee's bugs (`InvalidResponse`, `InvalidSchema`) as
    /// `Internal`.
    #[test]
    fn service_errors_keep_their_kind(
        (domain, service, error) in (domain(), domain())
            .prop_flat_map(|(domain, service)| {
                (Just(domain.clone()), Just(service.clone()), service_error(domain, service))
            }),
    ) {
        let remote = remote_through_bytes(&service_error_to_remote(&error));
        let back = service_error_from_remote(&domain, &service, &remote);
        let (kind, expected) = match &error {
            ServiceError::NotFound { .. } => (ErrorKind::NotFound, error.clone()),
            ServiceError::Validation(_) => (ErrorKind::Validation, error.clone()),
            ServiceError::Handler(_) => (ErrorKind::Handler, error.clone()),
            ServiceError::InvalidName(_)
            | ServiceError::ResponseNotSupported { .. }
            | ServiceError::ResponseRequired { .. } => {
                (ErrorKind::BadRequest, ServiceError::Handler(error.to_string()))
            }
            ServiceError::InvalidResponse { .. } | ServiceError::InvalidSchema(_) => {
                (ErrorKind::Internal, ServiceError::Handler(error.to_string()))
            }
        };
        prop_assert_eq!(remote.kind, kind);
        prop_assert_eq!(back, expected);
    }

    /// `InvalidData` (with its paths), `Handler`, `TooManyFlows` and `NotAllowed` come back
    /// equal. The others keep their kind and sentence: every "no such handler, flow or step"
    /// crosses as `NotFound` and comes back as `UnknownFlow`; an abort raised as an error and an
    /// invalid transition cross as `BadRequest` and come back as `NotAllowed`.
    #[test]
    fn flow_errors_keep_their_kind(error in flow_error()) {
        let remote = remote_through_bytes(&flow_error_to_remote(&error));
        let back = flow_error_from_remote(&remote);
        let (kind, expected) = match &error {
            FlowError::InvalidData(_) => (ErrorKind::Validation, error.clone()),
            FlowError::Handler(_) => (ErrorKind::Handler, error.clone()),
            FlowError::TooManyFlows => (ErrorKind::Overloaded, error.clone()),
            FlowError::NotAllowed(_) => (ErrorKind::BadRequest, error.clone()),
            FlowError::UnknownHandler(_)
            | FlowError::UnknownFlow(_)
            | FlowError::UnknownStep { .. } => {
                (ErrorKind::NotFound, FlowError::UnknownFlow(error.to_string()))
            }
            FlowError::Abort { .. } | FlowError::InvalidTransition(_) => {
                (ErrorKind::BadRequest, FlowError::NotAllowed(error.to_string()))
            }
        };
        prop_assert_eq!(remote.kind, kind);
        prop_assert_eq!(back, expected);
    }

    /// The id crosses; the user and the parent deliberately do not (the issuing side keeps
    /// them and restores them when the id comes back, so a sandbox never learns or forges
    /// them).
    #[test]
    fn contexts_keep_their_id_only(
        id in ulid(),
        user_id in option::of(text()),
        parent_id in option::of(ulid()),
    ) {
        let context = Context { id, user_id, parent_id };
        let sent = through_bytes(&wire::CallService {
            context_id: context_to_wire(&context),
            ..wire::CallService::default()
        });
        let back = context_from_wire(&sent.context_id);
        prop_assert_eq!(back.id, context.id);
        prop_assert_eq!(back.user_id, None);
        prop_assert_eq!(back.parent_id, None);
    }

    /// Text that is not a ULID gives a fresh context rather than an error.
    #[test]
    fn a_context_id_that_is_not_a_ulid_gives_a_fresh_context(id in text()) {
        prop_assume!(id.parse::<ulid::Ulid>().is_err());
        let back = context_from_wire(&id);
        prop_assert_eq!(back.user_id, None);
        prop_assert_eq!(back.parent_id, None);
    }

    /// One way only (main never sends a manifest back): every field `ready` carries is carried
    /// as it is, the version as its text and the integration type by its serde name.
    /// `iot_class` and `single_config_entry` are not carried (`IntegrationInfo` has no field
    /// for them).
    #[test]
    fn manifests_are_announced_as_they_are((manifest, version, integration_type) in manifest()) {
        let sent = through_bytes(&manifest_to_wire(&manifest));
        prop_assert_eq!(&sent.domain, &manifest.domain);
        prop_assert_eq!(&sent.name, &manifest.name);
        prop_assert_eq!(&sent.version, &version);
        prop_assert_eq!(&sent.integration_type, &integration_type);
        prop_assert_eq!(sent.config_flow, manifest.config_flow);
        prop_assert_eq!(&sent.platforms, &manifest.platforms);
        prop_assert_eq!(&sent.dependencies, &manifest.dependencies);
    }

    #[test]
    fn the_domain_strategy_makes_domains_the_core_accepts(domain in domain()) {
        prop_assert!(is_valid_domain(&domain), "{}", domain);
    }
}

/// -0.0 is kept in the JSON strategy because it crosses with its sign: `serde_json` writes it
/// as `-0.0` and reads that back as -0.0 (plain `==` would not tell, hence the bits).
#[test]
fn negative_zero_keeps_its_sign() {
    let data = json!({"zero": -0.0, "list": [-0.0, 0.0]});
    let entry = ConfigEntry::new(
        "demo",
        "Demo",
        data.as_object().cloned().expect("object"),
        "user",
    );
    let back = entry_from_wire(&through_bytes(&entry_to_wire(&entry)), "group").expect("converts");
    assert_eq!(
        back.data["zero"].as_f64().map(f64::to_bits),
        Some((-0.0f64).to_bits())
    );
    assert_eq!(
        back.data["list"][0].as_f64().map(f64::to_bits),
        Some((-0.0f64).to_bits())
    );
    assert_eq!(
        back.data["list"][1].as_f64().map(f64::to_bits),
        Some(0.0f64.to_bits())
    );
}

/// `null` as a form field's default survives a schema's JSON: the core's `Field` once read
/// `"default": null` back as no default, so main, validating a routed form's input with the
/// schema it read, refused a required field with a `null` default ("required key not provided")
/// that the integration's own schema accepted.
#[test]
fn a_null_field_default_survives_a_schemas_json() {
    let schema = Schema::new(vec![
        Field::required("timeout", FieldType::Any).with_default(Value::Null),
    ]);
    let step = FlowStep::Form {
        step_id: "user".into(),
        data_schema: Some(schema.clone()),
        errors: BTreeMap::new(),
        description_placeholders: Placeholders::new(),
        last_step: None,
        preview: None,
    };
    let result = FlowResult {
        flow_id: "flow".into(),
        handler: "demo".into(),
        step,
    };
    let sent = through_bytes(&flow_result_to_wire(&result, None));
    let (back, _) = flow_step_from_wire(&sent).expect("converts");
    let FlowStep::Form {
        data_schema: Some(schema_back),
        ..
    } = back
    else {
        panic!("a form with a schema")
    };
    assert_eq!(schema_back.fields[0].default, Some(Value::Null));
    let empty = Map::new();
    assert_eq!(
        schema_back
            .validate_map(&empty)
            .expect("main's copy accepts what the integration's schema accepts")["timeout"],
        Value::Null
    );
}
