//! Tests of the `select` component.

use serde_json::{Map, Value, json};

use homecore::{EntityInfo, ServiceError};

use super::super::{ConfigError, MAX_LIST_ITEMS, Outgoing, Platform, from_config};

fn select(config: Value) -> Result<Box<dyn Platform>, ConfigError> {
    let Value::Object(config) = config else {
        panic!("a config is an object");
    };
    from_config("select", &config)
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

fn payload(platform: &mut dyn Platform, service: &str, data: Value) -> String {
    let sent = call(platform, service, data).expect("the service succeeds");
    assert_eq!(sent.len(), 1);
    sent[0].payload.clone()
}

/// A Zigbee2MQTT smart plug's power-on behaviour.
fn power_on_behavior() -> Value {
    json!({
        "name": "Power-on behavior",
        "unique_id": "0xa4c138aabbccddee_power_on_behavior_zigbee2mqtt",
        "command_topic": "zigbee2mqtt/plug/set/power_on_behavior",
        "state_topic": "zigbee2mqtt/plug",
        "value_template": "{{ value_json.power_on_behavior }}",
        "options": ["off", "on", "toggle", "previous"],
        "entity_category": "config",
        "device": {"identifiers": ["zigbee2mqtt_0xa4c138aabbccddee"]}
    })
}

#[test]
fn it_shows_its_options_and_the_reported_one() {
    let mut behaviour = select(power_on_behavior()).expect("valid");
    assert_eq!(
        behaviour.topics(),
        vec![("state", "zigbee2mqtt/plug".to_owned())]
    );
    let mut info = EntityInfo::new("select");
    behaviour.describe(&mut info);
    assert_eq!(
        info.capabilities.get("options"),
        Some(&json!(["off", "on", "toggle", "previous"]))
    );
    assert!(!behaviour.optimistic());
    assert!(behaviour.on_message("state", r#"{"power_on_behavior":"previous"}"#));
    assert_eq!(behaviour.state().as_deref(), Some("previous"));
    assert!(!behaviour.on_message("state", r#"{"power_on_behavior":"blink"}"#));
    assert_eq!(behaviour.state().as_deref(), Some("previous"));
    assert!(behaviour.on_message("state", r#"{"power_on_behavior":"None"}"#));
    assert_eq!(behaviour.state(), None);
}

#[test]
fn select_option_publishes_and_refuses_an_unlisted_option() {
    let mut behaviour = select(power_on_behavior()).expect("valid");
    let sent = call(
        behaviour.as_mut(),
        "select_option",
        json!({"option": "toggle"}),
    )
    .expect("listed");
    assert_eq!(
        sent,
        vec![Outgoing {
            topic: "zigbee2mqtt/plug/set/power_on_behavior".to_owned(),
            payload: "toggle".to_owned()
        }]
    );
    // Not optimistic: the device reports it.
    assert_eq!(behaviour.state(), None);
    let error = call(
        behaviour.as_mut(),
        "select_option",
        json!({"option": "blink"}),
    )
    .expect_err("not listed");
    assert!(matches!(error, ServiceError::Validation(_)));
}

#[test]
fn first_last_next_and_previous_move_as_home_assistant_does() {
    let mut behaviour = select(power_on_behavior()).expect("valid");
    assert_eq!(
        payload(behaviour.as_mut(), "select_first", json!({})),
        "off"
    );
    assert_eq!(
        payload(behaviour.as_mut(), "select_last", json!({})),
        "previous"
    );
    // Nothing current counts as the first.
    assert_eq!(payload(behaviour.as_mut(), "select_next", json!({})), "on");
    assert_eq!(
        payload(behaviour.as_mut(), "select_previous", json!({})),
        "previous"
    );
    behaviour.on_message("state", r#"{"power_on_behavior":"previous"}"#);
    assert_eq!(payload(behaviour.as_mut(), "select_next", json!({})), "off");
    assert_eq!(
        payload(behaviour.as_mut(), "select_next", json!({"cycle": false})),
        "previous"
    );
    behaviour.on_message("state", r#"{"power_on_behavior":"off"}"#);
    assert_eq!(
        payload(
            behaviour.as_mut(),
            "select_previous",
            json!({"cycle": false})
        ),
        "off"
    );
}

#[test]
fn without_a_state_topic_it_is_optimistic() {
    let mut mode = select(json!({
        "command_topic": "vacuum/mode/set",
        "options": ["quiet", "standard", "turbo"]
    }))
    .expect("valid");
    assert!(mode.optimistic());
    call(mode.as_mut(), "select_option", json!({"option": "turbo"})).expect("listed");
    assert_eq!(mode.state().as_deref(), Some("turbo"));
    call(mode.as_mut(), "select_next", json!({})).expect("moves");
    assert_eq!(mode.state().as_deref(), Some("quiet"));
    assert!(mode.command("turn_on", &Map::new()).is_err());
}

#[test]
fn bad_configs_are_refused() {
    assert_eq!(
        select(json!({"command_topic": "s/set"})).err(),
        Some(ConfigError::Missing("options"))
    );
    assert!(matches!(
        select(json!({"command_topic": "s/set", "options": []})),
        Err(ConfigError::Invalid { field, .. }) if field == "options"
    ));
    let too_many: Vec<String> = (0..=MAX_LIST_ITEMS)
        .map(|index| format!("o{index}"))
        .collect();
    assert!(matches!(
        select(json!({"command_topic": "s/set", "options": too_many})),
        Err(ConfigError::Invalid { field, .. }) if field == "options"
    ));
    assert_eq!(
        select(json!({"options": ["a"]})).err(),
        Some(ConfigError::Missing("command_topic"))
    );
}
