//! Tests of the `cover` component, from configs shaped as devices publish them.

use serde_json::{Map, Value, json};

use homecore::EntityInfo;

use super::super::{ConfigError, Outgoing, Platform, from_config};

fn cover(config: Value) -> Result<Box<dyn Platform>, ConfigError> {
    let Value::Object(config) = config else {
        panic!("a config is an object");
    };
    from_config("cover", &config)
}

fn features(platform: &dyn Platform) -> u64 {
    let mut info = EntityInfo::new("cover");
    platform.describe(&mut info);
    info.supported_features
}

fn call(platform: &mut dyn Platform, service: &str, data: Value) -> Vec<Outgoing> {
    let Value::Object(data) = data else {
        panic!("service data is an object");
    };
    platform
        .command(service, &data)
        .expect("the service succeeds")
}

fn out(topic: &str, payload: &str) -> Outgoing {
    Outgoing {
        topic: topic.to_owned(),
        payload: payload.to_owned(),
    }
}

/// A Zigbee2MQTT roller blind: one JSON state topic with `state` and `position`.
fn zigbee2mqtt_blind() -> Value {
    json!({
        "name": null,
        "unique_id": "0x00158d0001a2b3c4_cover_zigbee2mqtt",
        "device_class": "blind",
        "command_topic": "zigbee2mqtt/living_blind/set",
        "state_topic": "zigbee2mqtt/living_blind",
        "value_template": "{{ value_json.state }}",
        "state_open": "OPEN",
        "state_closed": "CLOSE",
        "state_stopped": "STOP",
        "position_topic": "zigbee2mqtt/living_blind",
        "position_template": "{{ value_json.position }}",
        "set_position_topic": "zigbee2mqtt/living_blind/set",
        "set_position_template": "{{ value }}",
        "device": {"identifiers": ["zigbee2mqtt_0x00158d0001a2b3c4"], "name": "Living blind"}
    })
}

#[test]
fn a_zigbee2mqtt_blind_listens_to_its_state_and_position_and_offers_every_command() {
    let blind = cover(zigbee2mqtt_blind()).expect("the config is valid");
    assert_eq!(
        blind.topics(),
        vec![
            ("state", "zigbee2mqtt/living_blind".to_owned()),
            ("position", "zigbee2mqtt/living_blind".to_owned()),
        ]
    );
    // OPEN | CLOSE | SET_POSITION | STOP.
    assert_eq!(features(blind.as_ref()), 1 | 2 | 4 | 8);
    assert!(!blind.optimistic());
    let mut info = EntityInfo::new("cover");
    blind.describe(&mut info);
    assert_eq!(info.device_class.as_deref(), Some("blind"));
    assert_eq!(blind.state(), None);
    assert!(blind.attributes().is_empty());
}

#[test]
fn state_and_position_messages_set_the_state_and_current_position() {
    let mut blind = cover(zigbee2mqtt_blind()).expect("valid");
    let message = r#"{"state":"OPEN","position":70,"linkquality":120}"#;
    assert!(blind.on_message("state", message));
    assert!(blind.on_message("position", message));
    assert_eq!(blind.state().as_deref(), Some("open"));
    assert_eq!(blind.attributes().get("current_position"), Some(&json!(70)));

    // Moving, then stopped at 0: the reported position decides closed.
    assert!(blind.on_message("state", r#"{"state":"closing"}"#));
    assert_eq!(blind.state().as_deref(), Some("closing"));
    assert!(blind.on_message("position", r#"{"position":0}"#));
    assert!(blind.on_message("state", r#"{"state":"STOP"}"#));
    assert_eq!(blind.state().as_deref(), Some("closed"));

    // Something else leaves it; `None` is unknown.
    assert!(!blind.on_message("state", r#"{"state":"jammed"}"#));
    assert_eq!(blind.state().as_deref(), Some("closed"));
    assert!(blind.on_message("state", r#"{"state":"None"}"#));
    assert_eq!(blind.state(), None);
}

#[test]
fn each_service_publishes_its_payload() {
    let mut blind = cover(zigbee2mqtt_blind()).expect("valid");
    let set = "zigbee2mqtt/living_blind/set";
    assert_eq!(
        call(blind.as_mut(), "open_cover", json!({})),
        vec![out(set, "OPEN")]
    );
    assert_eq!(
        call(blind.as_mut(), "close_cover", json!({})),
        vec![out(set, "CLOSE")]
    );
    assert_eq!(
        call(blind.as_mut(), "stop_cover", json!({})),
        vec![out(set, "STOP")]
    );
    assert_eq!(
        call(
            blind.as_mut(),
            "set_cover_position",
            json!({"position": 30})
        ),
        vec![out(set, "30")]
    );
    // Not optimistic: what was commanded is not taken as the state.
    assert_eq!(blind.state(), None);
    // Toggle of an open cover closes it; of a moving one with stop, stops it.
    blind.on_message("state", r#"{"state":"OPEN"}"#);
    assert_eq!(
        call(blind.as_mut(), "toggle", json!({})),
        vec![out(set, "CLOSE")]
    );
    blind.on_message("state", r#"{"state":"opening"}"#);
    assert_eq!(
        call(blind.as_mut(), "toggle", json!({})),
        vec![out(set, "STOP")]
    );
    blind.on_message("state", r#"{"state":"CLOSE"}"#);
    assert_eq!(
        call(blind.as_mut(), "toggle", json!({})),
        vec![out(set, "OPEN")]
    );
}

#[test]
fn positions_are_scaled_between_position_closed_and_position_open() {
    // A shutter reporting 0..255, 255 being open.
    let mut shutter = cover(json!({
        "command_topic": "shutter/cmd",
        "position_topic": "shutter/position",
        "set_position_topic": "shutter/position/set",
        "position_open": 255,
        "position_closed": 0
    }))
    .expect("valid");
    assert!(shutter.on_message("position", "255"));
    assert_eq!(
        shutter.attributes().get("current_position"),
        Some(&json!(100))
    );
    // No state topic: the position says open or closed.
    assert_eq!(shutter.state().as_deref(), Some("open"));
    shutter.on_message("position", "127.5");
    assert_eq!(
        shutter.attributes().get("current_position"),
        Some(&json!(50))
    );
    shutter.on_message("position", "0");
    assert_eq!(shutter.state().as_deref(), Some("closed"));
    // Out of range clamps; a non-number is ignored.
    shutter.on_message("position", "300");
    assert_eq!(
        shutter.attributes().get("current_position"),
        Some(&json!(100))
    );
    assert!(!shutter.on_message("position", "half"));
    assert_eq!(
        call(
            shutter.as_mut(),
            "set_cover_position",
            json!({"position": 50})
        ),
        vec![out("shutter/position/set", "128")]
    );

    // An inverted device: 100 is closed.
    let mut inverted = cover(json!({
        "position_topic": "inv/position",
        "set_position_topic": "inv/set",
        "position_open": 0,
        "position_closed": 100
    }))
    .expect("valid");
    inverted.on_message("position", "30");
    assert_eq!(
        inverted.attributes().get("current_position"),
        Some(&json!(70))
    );
    assert_eq!(
        call(
            inverted.as_mut(),
            "set_cover_position",
            json!({"position": 100})
        ),
        vec![out("inv/set", "0")]
    );
}

#[test]
fn without_a_state_or_position_topic_it_is_optimistic() {
    let mut garage = cover(json!({
        "command_topic": "garage/door/set",
        "device_class": "garage"
    }))
    .expect("valid");
    assert!(garage.topics().is_empty());
    assert!(garage.optimistic());
    assert_eq!(
        call(garage.as_mut(), "open_cover", json!({})),
        vec![out("garage/door/set", "OPEN")]
    );
    assert_eq!(garage.state().as_deref(), Some("open"));
    call(garage.as_mut(), "close_cover", json!({}));
    assert_eq!(garage.state().as_deref(), Some("closed"));
    // Optimistic with a position topic: the commanded position is shown too.
    let mut forced = cover(json!({
        "command_topic": "c/set",
        "position_topic": "c/pos",
        "set_position_topic": "c/pos/set",
        "optimistic": true
    }))
    .expect("valid");
    call(
        forced.as_mut(),
        "set_cover_position",
        json!({"position": 40}),
    );
    assert_eq!(forced.state().as_deref(), Some("open"));
    assert_eq!(
        forced.attributes().get("current_position"),
        Some(&json!(40))
    );
    call(forced.as_mut(), "close_cover", json!({}));
    assert_eq!(forced.attributes().get("current_position"), Some(&json!(0)));
}

#[test]
fn a_null_payload_disables_its_command_and_feature() {
    let mut gate = cover(json!({
        "command_topic": "gate/set",
        "state_topic": "gate/state",
        "payload_stop": null,
        "device_class": "gate"
    }))
    .expect("valid");
    assert_eq!(features(gate.as_ref()), 1 | 2);
    assert!(gate.command("stop_cover", &Map::new()).is_err());
    // Without a command topic nothing is commanded.
    let sensor_only = cover(json!({"state_topic": "c/state"})).expect("valid");
    assert_eq!(features(sensor_only.as_ref()), 0);
}

#[test]
fn tilt_is_scaled_and_commanded() {
    let mut venetian = cover(json!({
        "command_topic": "v/set",
        "state_topic": "v/state",
        "tilt_command_topic": "v/tilt/set",
        "tilt_status_topic": "v/tilt",
        "tilt_min": 0,
        "tilt_max": 180,
        "tilt_opened_value": 180,
        "tilt_closed_value": 0
    }))
    .expect("valid");
    assert_eq!(features(venetian.as_ref()), 1 | 2 | 8 | 16 | 32 | 64 | 128);
    assert!(venetian.topics().contains(&("tilt", "v/tilt".to_owned())));
    assert!(venetian.on_message("tilt", "90"));
    assert_eq!(
        venetian.attributes().get("current_tilt_position"),
        Some(&json!(50))
    );
    assert!(!venetian.on_message("tilt", "200"));
    assert_eq!(
        call(
            venetian.as_mut(),
            "set_cover_tilt_position",
            json!({"tilt_position": 25})
        ),
        vec![out("v/tilt/set", "45")]
    );
    assert_eq!(
        call(venetian.as_mut(), "open_cover_tilt", json!({})),
        vec![out("v/tilt/set", "180")]
    );
    assert_eq!(
        call(venetian.as_mut(), "stop_cover_tilt", json!({})),
        vec![out("v/tilt/set", "stop")]
    );
    // Reported, so not optimistic: the tilt shown is still the reported one.
    assert_eq!(
        venetian.attributes().get("current_tilt_position"),
        Some(&json!(50))
    );
}

#[test]
fn bad_configs_are_refused() {
    assert!(matches!(
        cover(json!({"set_position_topic": "c/set"})),
        Err(ConfigError::Invalid { field, .. }) if field == "set_position_topic"
    ));
    assert!(matches!(
        cover(json!({"command_topic": "c/set", "value_template": "{{ value }}"})),
        Err(ConfigError::Invalid { field, .. }) if field == "value_template"
    ));
    assert!(matches!(
        cover(json!({"command_topic": "c/set", "device_class": "sofa"})),
        Err(ConfigError::Invalid { field, .. }) if field == "device_class"
    ));
    assert!(matches!(
        cover(json!({"command_topic": "c/set", "position_open": 5, "position_closed": 5})),
        Err(ConfigError::Invalid { .. })
    ));
    assert!(matches!(
        cover(json!({"command_topic": "c/+/set"})),
        Err(ConfigError::Invalid { field, .. }) if field == "command_topic"
    ));
}

#[test]
fn a_set_position_template_reads_the_position_and_the_range_as_zigbee2mqtt_writes_it() {
    let mut config = zigbee2mqtt_blind();
    config["set_position_template"] =
        json!("{ \"position\": {{ position }}, \"of\": {{ position_open }} }");
    let mut blind = cover(config).expect("the config is valid");
    assert_eq!(
        call(
            blind.as_mut(),
            "set_cover_position",
            json!({"position": 40})
        ),
        [out(
            "zigbee2mqtt/living_blind/set",
            "{ \"position\": 40, \"of\": 100.0 }"
        )]
    );
}
