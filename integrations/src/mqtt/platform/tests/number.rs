//! Tests of the `number` component.

use serde_json::{Map, Value, json};

use homecore::{EntityInfo, ServiceError};

use super::super::{ConfigError, Outgoing, Platform, from_config};

fn number(config: Value) -> Result<Box<dyn Platform>, ConfigError> {
    let Value::Object(config) = config else {
        panic!("a config is an object");
    };
    from_config("number", &config)
}

fn set_value(platform: &mut dyn Platform, value: Value) -> Result<Vec<Outgoing>, ServiceError> {
    let mut data = Map::new();
    data.insert("value".to_owned(), value);
    platform.command("set_value", &data)
}

/// A Zigbee2MQTT thermostat's local temperature calibration.
fn calibration() -> Value {
    json!({
        "name": "Local temperature calibration",
        "unique_id": "0x0c4314fffe1a2b3c_local_temperature_calibration_zigbee2mqtt",
        "command_topic": "zigbee2mqtt/radiator/set/local_temperature_calibration",
        "state_topic": "zigbee2mqtt/radiator",
        "value_template": "{{ value_json.local_temperature_calibration }}",
        "min": -12.8,
        "max": 12.7,
        "step": 0.1,
        "unit_of_measurement": "°C",
        "device_class": "temperature",
        "entity_category": "config",
        "device": {"identifiers": ["zigbee2mqtt_0x0c4314fffe1a2b3c"]}
    })
}

#[test]
fn it_shows_its_range_mode_unit_and_state() {
    let mut calibration = number(calibration()).expect("valid");
    assert_eq!(
        calibration.topics(),
        vec![("state", "zigbee2mqtt/radiator".to_owned())]
    );
    let mut info = EntityInfo::new("number");
    calibration.describe(&mut info);
    assert_eq!(info.capabilities.get("min"), Some(&json!(-12.8)));
    assert_eq!(info.capabilities.get("max"), Some(&json!(12.7)));
    assert_eq!(info.capabilities.get("step"), Some(&json!(0.1)));
    assert_eq!(info.capabilities.get("mode"), Some(&json!("auto")));
    assert_eq!(info.unit_of_measurement.as_deref(), Some("°C"));
    assert_eq!(info.device_class.as_deref(), Some("temperature"));
    assert!(!calibration.optimistic());

    assert!(calibration.on_message("state", r#"{"local_temperature_calibration":-1.5}"#));
    assert_eq!(calibration.state().as_deref(), Some("-1.5"));
    // Out of range and non-numbers leave the state; `None` resets it.
    assert!(!calibration.on_message("state", r#"{"local_temperature_calibration":20}"#));
    assert!(!calibration.on_message("state", r#"{"local_temperature_calibration":"warm"}"#));
    assert_eq!(calibration.state().as_deref(), Some("-1.5"));
    assert!(calibration.on_message("state", r#"{"local_temperature_calibration":"None"}"#));
    assert_eq!(calibration.state(), None);
}

#[test]
fn set_value_publishes_whole_numbers_without_a_fraction() {
    let mut calibration = number(calibration()).expect("valid");
    let topic = "zigbee2mqtt/radiator/set/local_temperature_calibration";
    let sent = set_value(calibration.as_mut(), json!(2.0)).expect("in range");
    assert_eq!(
        sent,
        vec![Outgoing {
            topic: topic.to_owned(),
            payload: "2".to_owned()
        }]
    );
    let sent = set_value(calibration.as_mut(), json!(-0.5)).expect("in range");
    assert_eq!(sent[0].payload, "-0.5");
    // Not optimistic: the state waits for the device.
    assert_eq!(calibration.state(), None);
}

#[test]
fn an_out_of_range_value_is_refused() {
    let mut calibration = number(calibration()).expect("valid");
    let error = set_value(calibration.as_mut(), json!(13)).expect_err("out of range");
    assert!(matches!(error, ServiceError::Validation(_)));
    assert!(
        error
            .to_string()
            .contains("outside valid range -12.8 - 12.7")
    );
}

#[test]
fn without_a_state_topic_it_is_optimistic() {
    let mut volume = number(json!({
        "command_topic": "speaker/volume/set",
        "min": 0,
        "max": 100,
        "mode": "slider",
        "unit_of_measurement": "%"
    }))
    .expect("valid");
    assert!(volume.topics().is_empty());
    assert!(volume.optimistic());
    set_value(volume.as_mut(), json!(42)).expect("in range");
    assert_eq!(volume.state().as_deref(), Some("42"));
    set_value(volume.as_mut(), json!(42.5)).expect("in range");
    assert_eq!(volume.state().as_deref(), Some("42.5"));
    assert!(volume.command("increment", &Map::new()).is_err());
}

#[test]
fn bad_configs_are_refused() {
    assert_eq!(
        number(json!({"state_topic": "n/state"})).err(),
        Some(ConfigError::Missing("command_topic"))
    );
    for (config, field) in [
        (json!({"command_topic": "n/set", "mode": "dial"}), "mode"),
        (
            json!({"command_topic": "n/set", "min": 10, "max": 5}),
            "max",
        ),
        (json!({"command_topic": "n/set", "step": 0}), "step"),
        (
            json!({"command_topic": "n/set", "device_class": "colour"}),
            "device_class",
        ),
    ] {
        assert!(
            matches!(number(config), Err(ConfigError::Invalid { field: got, .. }) if got == field),
            "{field} is refused"
        );
    }
}
