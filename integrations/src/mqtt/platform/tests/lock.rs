//! Tests of the `lock` component and its code check.

use serde_json::{Map, Value, json};

use homecore::{EntityInfo, ServiceError};

use super::super::{ConfigError, Outgoing, Platform, from_config};
use super::CodeFormat;

fn lock(config: Value) -> Result<Box<dyn Platform>, ConfigError> {
    let Value::Object(config) = config else {
        panic!("a config is an object");
    };
    from_config("lock", &config)
}

fn call(
    platform: &mut dyn Platform,
    service: &str,
    data: Value,
) -> Result<Vec<Outgoing>, ServiceError> {
    let Value::Object(data) = data else {
        panic!("service data is an object");
    };
    platform.command(service, &data)
}

/// A Zigbee2MQTT door lock with a latch, reporting `LOCK`/`UNLOCK` in a JSON state.
fn front_door() -> Value {
    json!({
        "name": null,
        "unique_id": "0x000d6f0011223344_lock_zigbee2mqtt",
        "command_topic": "zigbee2mqtt/front_door/set",
        "state_topic": "zigbee2mqtt/front_door",
        "value_template": "{{ value_json.state }}",
        "payload_lock": "LOCK",
        "payload_unlock": "UNLOCK",
        "payload_open": "OPEN",
        "state_locked": "LOCK",
        "state_unlocked": "UNLOCK",
        "code_format": "^\\d{4}$",
        "device": {"identifiers": ["zigbee2mqtt_0x000d6f0011223344"]}
    })
}

#[test]
fn it_listens_to_its_state_and_offers_open_when_configured() {
    let mut door = lock(front_door()).expect("valid");
    assert_eq!(
        door.topics(),
        vec![("state", "zigbee2mqtt/front_door".to_owned())]
    );
    let mut info = EntityInfo::new("lock");
    door.describe(&mut info);
    assert_eq!(info.supported_features, 1);
    assert_eq!(
        door.attributes().get("code_format"),
        Some(&json!("^\\d{4}$"))
    );
    assert!(!door.optimistic());

    assert!(door.on_message("state", r#"{"state":"LOCK"}"#));
    assert_eq!(door.state().as_deref(), Some("locked"));
    // The other states keep Home Assistant's default payloads.
    assert!(door.on_message("state", r#"{"state":"JAMMED"}"#));
    assert_eq!(door.state().as_deref(), Some("jammed"));
    assert!(door.on_message("state", r#"{"state":"OPENING"}"#));
    assert_eq!(door.state().as_deref(), Some("opening"));
    assert!(!door.on_message("state", r#"{"state":"ajar"}"#));
    assert!(door.on_message("state", r#"{"state":"None"}"#));
    assert_eq!(door.state(), None);
}

#[test]
fn each_service_publishes_after_the_code_is_checked() {
    let mut door = lock(front_door()).expect("valid");
    let topic = "zigbee2mqtt/front_door/set";
    for (service, payload) in [("lock", "LOCK"), ("unlock", "UNLOCK"), ("open", "OPEN")] {
        assert_eq!(
            call(door.as_mut(), service, json!({"code": "1234"})).expect("right code"),
            vec![Outgoing {
                topic: topic.to_owned(),
                payload: payload.to_owned()
            }]
        );
    }
    assert_eq!(door.state(), None, "not optimistic");
    for bad in [json!({"code": "12345"}), json!({"code": "12a4"}), json!({})] {
        let error = call(door.as_mut(), "unlock", bad).expect_err("wrong code");
        assert!(matches!(error, ServiceError::Validation(_)));
    }
}

#[test]
fn without_a_state_topic_it_is_optimistic_and_open_needs_payload_open() {
    let mut shed = lock(json!({"command_topic": "shed/lock/set"})).expect("valid");
    assert!(shed.optimistic());
    let mut info = EntityInfo::new("lock");
    shed.describe(&mut info);
    assert_eq!(info.supported_features, 0);
    assert!(shed.attributes().is_empty());
    call(shed.as_mut(), "lock", json!({})).expect("locks");
    assert_eq!(shed.state().as_deref(), Some("locked"));
    call(shed.as_mut(), "unlock", json!({})).expect("unlocks");
    assert_eq!(shed.state().as_deref(), Some("unlocked"));
    assert!(call(shed.as_mut(), "open", json!({})).is_err());
    assert!(shed.command("toggle", &Map::new()).is_err());
}

#[test]
fn code_formats_match_as_python_re_match_does() {
    let four = CodeFormat::parse("^\\d{4}$").expect("simple");
    assert!(four.matches("0000"));
    assert!(!four.matches("000"));
    assert!(!four.matches("00000"));
    // Without `$` only the start must match (re.match).
    let prefix = CodeFormat::parse("\\d{2}").expect("simple");
    assert!(prefix.matches("12abc"));
    assert!(!prefix.matches("1abc"));
    let ranged = CodeFormat::parse("^[0-9A-F]{4,6}$").expect("simple");
    assert!(ranged.matches("BEEF"));
    assert!(ranged.matches("00BEEF"));
    assert!(!ranged.matches("beef"));
    let any = CodeFormat::parse(".+").expect("simple");
    assert!(any.matches("x"));
    assert!(!any.matches(""));
    let optional = CodeFormat::parse("^a?b*c\\.$").expect("simple");
    assert!(optional.matches("c."));
    assert!(optional.matches("abbbc."));
    assert!(!optional.matches("aac."));
    let negated = CodeFormat::parse("^[^0-9]+$").expect("simple");
    assert!(negated.matches("abc"));
    assert!(!negated.matches("a1c"));
    // Many stars over a long code stay fast (no backtracking).
    let stars = CodeFormat::parse(".*.*.*.*.*.*.*.*x").expect("simple");
    assert!(!stars.matches(&"a".repeat(64)));
}

#[test]
fn complex_code_formats_are_refused() {
    for pattern in [
        "^(\\d{4})$",
        "1|2",
        "a**",
        "\\1",
        "[a-",
        "\\d{3,1}",
        "x{1000}",
        "a$b",
    ] {
        assert!(CodeFormat::parse(pattern).is_err(), "{pattern} is refused");
        assert!(matches!(
            lock(json!({"command_topic": "l/set", "code_format": pattern})),
            Err(ConfigError::Invalid { field, .. }) if field == "code_format"
        ));
    }
    assert!(CodeFormat::parse(&"a".repeat(65)).is_err());
    assert_eq!(
        lock(json!({"state_topic": "l/state"})).err(),
        Some(ConfigError::Missing("command_topic"))
    );
}
