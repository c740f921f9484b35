//! Tests of the `button` component.

use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Map, Value, json};

use homecore::EntityInfo;

use super::super::{ConfigError, Fields, Outgoing, Platform};
use super::{Button, iso_utc};

fn button(config: Value) -> Result<Button, ConfigError> {
    let Value::Object(config) = config else {
        panic!("a config is an object");
    };
    Button::from_config(&Fields::new(&config))
}

fn fixed_now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 6, 20, 8, 30, 0)
        .single()
        .expect("a valid time")
}

/// An ESPHome restart button.
fn esphome_restart() -> Value {
    json!({
        "name": "Restart",
        "unique_id": "kitchen-node-restart",
        "command_topic": "kitchen-node/button/restart/command",
        "payload_press": "PRESS",
        "device_class": "restart",
        "entity_category": "config",
        "device": {"identifiers": ["e8db84a1b2c3"], "name": "kitchen-node"}
    })
}

#[test]
fn a_press_publishes_the_payload_and_stamps_the_state() {
    let mut restart = button(esphome_restart()).expect("valid");
    restart.now = fixed_now;
    assert!(restart.topics().is_empty());
    assert_eq!(restart.state(), None);
    let mut info = EntityInfo::new("button");
    restart.describe(&mut info);
    assert_eq!(info.device_class.as_deref(), Some("restart"));
    assert!(!restart.optimistic());

    let sent = restart.command("press", &Map::new()).expect("pressed");
    assert_eq!(
        sent,
        vec![Outgoing {
            topic: "kitchen-node/button/restart/command".to_owned(),
            payload: "PRESS".to_owned(),
        }]
    );
    assert_eq!(
        restart.state().as_deref(),
        Some("2024-06-20T08:30:00+00:00")
    );
}

#[test]
fn the_real_clock_gives_an_iso_utc_time() {
    let mut doorbell =
        button(json!({"command_topic": "bell/ring", "payload_press": "ring"})).expect("valid");
    doorbell.command("press", &Map::new()).expect("pressed");
    let state = doorbell.state().expect("stamped");
    assert!(state.ends_with("+00:00"));
    assert!(DateTime::parse_from_rfc3339(&state).is_ok());
    let with_micros = fixed_now() + chrono::Duration::microseconds(1500);
    assert_eq!(iso_utc(with_micros), "2024-06-20T08:30:00.001500+00:00");
}

#[test]
fn a_command_template_shapes_the_payload() {
    let mut templated = button(json!({
        "command_topic": "b/set",
        "payload_press": "go",
        "command_template": "{{ value }}"
    }))
    .expect("valid");
    let sent = templated.command("press", &Map::new()).expect("pressed");
    assert_eq!(sent[0].payload, "go");
    assert!(templated.command("turn_on", &Map::new()).is_err());
}

#[test]
fn bad_configs_are_refused() {
    assert_eq!(
        button(json!({"payload_press": "PRESS"})).err(),
        Some(ConfigError::Missing("command_topic"))
    );
    assert!(matches!(
        button(json!({"command_topic": "b/set", "device_class": "doorbell"})),
        Err(ConfigError::Invalid { field, .. }) if field == "device_class"
    ));
}
