//! Tests of the `fan` component.

use serde_json::{Value, json};

use homecore::{EntityInfo, ServiceError};

use super::super::{ConfigError, Outgoing, Platform, from_config};

fn fan(config: Value) -> Result<Box<dyn Platform>, ConfigError> {
    let Value::Object(config) = config else {
        panic!("a config is an object");
    };
    from_config("fan", &config)
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

fn sent(platform: &mut dyn Platform, service: &str, data: Value) -> Vec<(String, String)> {
    call(platform, service, data)
        .expect("the service succeeds")
        .into_iter()
        .map(|message| (message.topic, message.payload))
        .collect()
}

fn pair(topic: &str, payload: &str) -> (String, String) {
    (topic.to_owned(), payload.to_owned())
}

/// A Zigbee2MQTT ceiling fan controller with three speeds and two presets.
fn ceiling_fan() -> Value {
    json!({
        "name": null,
        "unique_id": "0x842e14fffe112233_fan_zigbee2mqtt",
        "command_topic": "zigbee2mqtt/ceiling_fan/set/fan_state",
        "state_topic": "zigbee2mqtt/ceiling_fan",
        "state_value_template": "{{ value_json.fan_state }}",
        "percentage_command_topic": "zigbee2mqtt/ceiling_fan/set/speed",
        "percentage_state_topic": "zigbee2mqtt/ceiling_fan",
        "percentage_value_template": "{{ value_json.speed }}",
        "speed_range_min": 1,
        "speed_range_max": 3,
        "preset_mode_command_topic": "zigbee2mqtt/ceiling_fan/set/fan_mode",
        "preset_mode_state_topic": "zigbee2mqtt/ceiling_fan",
        "preset_mode_value_template": "{{ value_json.fan_mode }}",
        "preset_modes": ["auto", "smart"],
        "oscillation_command_topic": "zigbee2mqtt/ceiling_fan/set/oscillation",
        "oscillation_state_topic": "zigbee2mqtt/ceiling_fan",
        "oscillation_value_template": "{{ value_json.oscillation }}",
        "payload_oscillation_on": "ON",
        "payload_oscillation_off": "OFF",
        "device": {"identifiers": ["zigbee2mqtt_0x842e14fffe112233"]}
    })
}

#[test]
fn a_zigbee2mqtt_fan_reports_state_speed_preset_and_oscillation() {
    let mut ceiling = fan(ceiling_fan()).expect("valid");
    let roles: Vec<&str> = ceiling.topics().into_iter().map(|(role, _)| role).collect();
    assert_eq!(roles, ["state", "percentage", "preset_mode", "oscillation"]);
    let mut info = EntityInfo::new("fan");
    ceiling.describe(&mut info);
    // SET_SPEED | OSCILLATE | PRESET_MODE | TURN_OFF | TURN_ON.
    assert_eq!(info.supported_features, 1 | 2 | 8 | 16 | 32);
    assert_eq!(
        info.capabilities.get("preset_modes"),
        Some(&json!(["auto", "smart"]))
    );
    assert!(!ceiling.optimistic());
    assert_eq!(ceiling.attributes().get("oscillating"), Some(&json!(false)));

    let message = r#"{"fan_state":"ON","speed":2,"fan_mode":"smart","oscillation":"ON"}"#;
    for role in ["state", "percentage", "preset_mode", "oscillation"] {
        assert!(ceiling.on_message(role, message), "{role} changes");
    }
    assert_eq!(ceiling.state().as_deref(), Some("on"));
    let attributes = ceiling.attributes();
    assert_eq!(attributes.get("percentage"), Some(&json!(66)));
    assert_eq!(attributes.get("percentage_step"), Some(&json!(100.0 / 3.0)));
    assert_eq!(attributes.get("preset_mode"), Some(&json!("smart")));
    assert_eq!(attributes.get("oscillating"), Some(&json!(true)));
    assert!(!attributes.contains_key("direction"));

    // Unknown presets and non-integer speeds are ignored; resets clear.
    assert!(!ceiling.on_message("preset_mode", r#"{"fan_mode":"turbo"}"#));
    assert!(!ceiling.on_message("percentage", r#"{"speed":"fast"}"#));
    assert!(ceiling.on_message("percentage", r#"{"speed":"None"}"#));
    assert_eq!(ceiling.attributes().get("percentage"), Some(&Value::Null));
}

#[test]
fn each_service_publishes_to_its_topic() {
    let mut ceiling = fan(ceiling_fan()).expect("valid");
    let state = "zigbee2mqtt/ceiling_fan/set/fan_state";
    let speed = "zigbee2mqtt/ceiling_fan/set/speed";
    let mode = "zigbee2mqtt/ceiling_fan/set/fan_mode";
    assert_eq!(
        sent(ceiling.as_mut(), "turn_on", json!({})),
        vec![pair(state, "ON")]
    );
    assert_eq!(
        sent(
            ceiling.as_mut(),
            "turn_on",
            json!({"percentage": 50, "preset_mode": "auto"})
        ),
        vec![pair(state, "ON"), pair(speed, "2"), pair(mode, "auto")]
    );
    assert_eq!(
        sent(ceiling.as_mut(), "turn_off", json!({})),
        vec![pair(state, "OFF")]
    );
    assert_eq!(
        sent(
            ceiling.as_mut(),
            "set_percentage",
            json!({"percentage": 100})
        ),
        vec![pair(speed, "3")]
    );
    assert_eq!(
        sent(
            ceiling.as_mut(),
            "set_percentage",
            json!({"percentage": 10})
        ),
        vec![pair(speed, "1")]
    );
    assert_eq!(
        sent(ceiling.as_mut(), "oscillate", json!({"oscillating": true})),
        vec![pair("zigbee2mqtt/ceiling_fan/set/oscillation", "ON")]
    );
    assert_eq!(
        sent(
            ceiling.as_mut(),
            "set_preset_mode",
            json!({"preset_mode": "smart"})
        ),
        vec![pair(mode, "smart")]
    );
    // One speed up from speed 1 of 3 is speed 2.
    ceiling.on_message("percentage", r#"{"speed":1}"#);
    assert_eq!(
        sent(ceiling.as_mut(), "increase_speed", json!({})),
        vec![pair(speed, "2")]
    );
    assert_eq!(
        sent(ceiling.as_mut(), "decrease_speed", json!({})),
        vec![pair(speed, "0")]
    );
    assert_eq!(
        sent(
            ceiling.as_mut(),
            "increase_speed",
            json!({"percentage_step": 50})
        ),
        vec![pair(speed, "3")]
    );
    // Toggle follows the reported state.
    ceiling.on_message("state", r#"{"fan_state":"ON"}"#);
    assert_eq!(
        sent(ceiling.as_mut(), "toggle", json!({})),
        vec![pair(state, "OFF")]
    );
    // Not optimistic: nothing commanded is shown.
    assert_eq!(ceiling.attributes().get("preset_mode"), Some(&Value::Null));
}

#[test]
fn an_unlisted_preset_is_refused_before_anything_is_published() {
    let mut ceiling = fan(ceiling_fan()).expect("valid");
    for (service, data) in [
        ("set_preset_mode", json!({"preset_mode": "turbo"})),
        ("turn_on", json!({"preset_mode": "turbo"})),
    ] {
        let error = call(ceiling.as_mut(), service, data).expect_err("not listed");
        assert!(matches!(error, ServiceError::Validation(_)));
    }
    assert!(
        call(
            ceiling.as_mut(),
            "set_direction",
            json!({"direction": "forward"})
        )
        .is_err()
    );
}

#[test]
fn without_state_topics_each_part_is_optimistic() {
    let mut desk = fan(json!({
        "command_topic": "desk_fan/on/set",
        "percentage_command_topic": "desk_fan/speed/set",
        "oscillation_command_topic": "desk_fan/oscillation/set",
        "direction_command_topic": "desk_fan/direction/set",
        "preset_mode_command_topic": "desk_fan/preset/set",
        "preset_modes": ["breeze"]
    }))
    .expect("valid");
    assert!(desk.topics().is_empty());
    assert!(desk.optimistic());
    sent(desk.as_mut(), "turn_on", json!({"percentage": 40}));
    assert_eq!(desk.state().as_deref(), Some("on"));
    assert_eq!(desk.attributes().get("percentage"), Some(&json!(40)));
    assert_eq!(desk.attributes().get("percentage_step"), Some(&json!(1.0)));
    assert_eq!(
        sent(desk.as_mut(), "oscillate", json!({"oscillating": false})),
        vec![pair("desk_fan/oscillation/set", "oscillate_off")]
    );
    assert_eq!(desk.attributes().get("oscillating"), Some(&json!(false)));
    assert_eq!(
        sent(
            desk.as_mut(),
            "set_direction",
            json!({"direction": "reverse"})
        ),
        vec![pair("desk_fan/direction/set", "reverse")]
    );
    assert_eq!(desk.attributes().get("direction"), Some(&json!("reverse")));
    sent(
        desk.as_mut(),
        "set_preset_mode",
        json!({"preset_mode": "breeze"}),
    );
    assert_eq!(desk.attributes().get("preset_mode"), Some(&json!("breeze")));
    sent(desk.as_mut(), "toggle", json!({}));
    assert_eq!(desk.state().as_deref(), Some("off"));
}

#[test]
fn bad_configs_are_refused() {
    assert_eq!(
        fan(json!({"state_topic": "f/state"})).err(),
        Some(ConfigError::Missing("command_topic"))
    );
    for (config, field) in [
        (
            json!({"command_topic": "f/set", "speed_range_min": 0}),
            "speed_range_min",
        ),
        (
            json!({"command_topic": "f/set", "speed_range_min": 5, "speed_range_max": 5}),
            "speed_range_max",
        ),
        (
            json!({"command_topic": "f/set", "preset_modes": ["eco"]}),
            "preset_modes",
        ),
        (
            json!({"command_topic": "f/set", "preset_mode_command_topic": "f/p", "preset_modes": ["None"]}),
            "preset_modes",
        ),
    ] {
        assert!(
            matches!(fan(config), Err(ConfigError::Invalid { field: got, .. }) if got == field),
            "{field} is refused"
        );
    }
}

#[test]
fn a_speed_far_outside_its_range_neither_panics_nor_wraps() {
    let Value::Object(config) = json!({
        "command_topic": "fan/set",
        "percentage_command_topic": "fan/speed/set",
        "percentage_state_topic": "fan/speed",
        "speed_range_min": 1,
        "speed_range_max": 1e18
    }) else {
        unreachable!()
    };
    let mut fan = from_config("fan", &config).expect("the config is valid");
    for payload in [
        "9223372036854775807",
        "-9223372036854775808",
        "184467440737095517",
    ] {
        let _ = fan.on_message("percentage", payload);
        let percentage = fan.attributes().get("percentage").cloned();
        assert!(
            percentage
                .as_ref()
                .is_none_or(|value| value.is_null()
                    || value.as_i64().is_some_and(|p| (0..=100).contains(&p))),
            "{payload}: {percentage:?}"
        );
    }
}
