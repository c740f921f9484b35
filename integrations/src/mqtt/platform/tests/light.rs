//! Tests of the `light` component: configs as Zigbee2MQTT, Tasmota and ESPHome publish them
//! (expanded), the state they report, the commands service calls publish, and refusals.

use serde_json::{Map, Value, json};

use homecore::EntityInfo;

use crate::mqtt::platform::{ConfigError, Platform, from_config};

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

fn light(config: Value) -> Box<dyn Platform> {
    match from_config("light", &object(config)) {
        Ok(light) => light,
        Err(error) => panic!("config refused: {error}"),
    }
}

fn refusal(config: Value) -> ConfigError {
    match from_config("light", &object(config)) {
        Ok(_) => panic!("config accepted"),
        Err(error) => error,
    }
}

fn info(light: &dyn Platform) -> EntityInfo {
    let mut info = EntityInfo::new(light.domain());
    light.describe(&mut info);
    info
}

/// The messages a call publishes, as (topic, payload).
fn call(light: &mut dyn Platform, service: &str, data: Value) -> Vec<(String, String)> {
    light
        .command(service, &object(data))
        .expect("call accepted")
        .into_iter()
        .map(|message| (message.topic, message.payload))
        .collect()
}

/// The one JSON command a call publishes on `topic`.
fn json_call(light: &mut dyn Platform, topic: &str, service: &str, data: Value) -> Value {
    let messages = call(light, service, data);
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(messages[0].0, topic);
    serde_json::from_str(&messages[0].1).expect("a JSON command")
}

const Z2M_SET: &str = "zigbee2mqtt/Kitchen bulb/set";
const Z2M_STATE: &str = "zigbee2mqtt/Kitchen bulb";

/// A Zigbee2MQTT color temperature + xy bulb, as Zigbee2MQTT publishes its config.
fn zigbee2mqtt_bulb() -> Box<dyn Platform> {
    light(json!({
        "availability": [{"topic": "zigbee2mqtt/bridge/state", "value_template": "{{ value_json.state }}"}],
        "brightness": true,
        "brightness_scale": 254,
        "command_topic": Z2M_SET,
        "device": {"identifiers": ["zigbee2mqtt_0x000b57fffec6a5b2"], "manufacturer": "IKEA", "model": "TRADFRI bulb E27 CWS 806lm", "name": "Kitchen bulb"},
        "effect": true,
        "effect_list": ["blink", "breathe", "okay", "channel_change", "finish_effect", "stop_effect"],
        "max_mireds": 454,
        "min_mireds": 250,
        "name": null,
        "object_id": "kitchen_bulb",
        "origin": {"name": "Zigbee2MQTT", "sw": "1.40.2", "url": "https://www.zigbee2mqtt.io"},
        "schema": "json",
        "state_topic": Z2M_STATE,
        "supported_color_modes": ["xy", "color_temp"],
        "unique_id": "0x000b57fffec6a5b2_light_zigbee2mqtt"
    }))
}

#[test]
fn zigbee2mqtt_json_light_describes_itself_like_any_light() {
    let bulb = zigbee2mqtt_bulb();
    assert_eq!(bulb.domain(), "light");
    assert_eq!(bulb.topics(), vec![("state", Z2M_STATE.to_owned())]);
    assert!(!bulb.optimistic());
    let info = info(bulb.as_ref());
    // EFFECT | FLASH | TRANSITION: flash and transition are on unless the config says not.
    assert_eq!(info.supported_features, 4 | 8 | 32);
    assert_eq!(
        Value::Object(info.capabilities),
        json!({
            "supported_color_modes": ["color_temp", "xy"],
            "min_color_temp_kelvin": 2202,
            "max_color_temp_kelvin": 4000,
            "effect_list": ["blink", "breathe", "okay", "channel_change", "finish_effect", "stop_effect"],
        })
    );
    // Nothing heard yet: unknown, every attribute null.
    assert_eq!(bulb.state(), None);
    assert_eq!(
        Value::Object(bulb.attributes()),
        json!({"effect": null, "color_mode": null, "brightness": null, "color_temp_kelvin": null,
               "hs_color": null, "rgb_color": null, "xy_color": null})
    );
}

#[test]
fn zigbee2mqtt_json_state_sets_state_and_attributes() {
    let mut bulb = zigbee2mqtt_bulb();
    let report = r#"{"state":"ON","brightness":200,"color_temp":370,"color_mode":"color_temp","color":{"r":255,"g":0,"b":0,"h":0,"s":100,"x":0.7,"y":0.3},"linkquality":120,"update":{"state":"idle"}}"#;
    assert!(bulb.on_message("state", report));
    assert_eq!(bulb.state().as_deref(), Some("on"));
    let attributes = bulb.attributes();
    assert_eq!(attributes["color_mode"], json!("color_temp"));
    // 200 of 254 is 201 of 255; 370 mireds is 2702 K.
    assert_eq!(attributes["brightness"], json!(201));
    assert_eq!(attributes["color_temp_kelvin"], json!(2702));
    // The color of a color temperature is shown in all three notations, as Home Assistant.
    for key in ["hs_color", "rgb_color", "xy_color"] {
        assert!(attributes[key].is_array(), "{key}: {attributes:?}");
    }
    assert_eq!(attributes["effect"], Value::Null);
    // The same report again changes nothing.
    assert!(!bulb.on_message("state", report));

    assert!(bulb.on_message("state", r#"{"color_mode":"xy","color":{"x":0.7,"y":0.3}}"#));
    let attributes = bulb.attributes();
    assert_eq!(attributes["color_mode"], json!("xy"));
    assert_eq!(attributes["xy_color"], json!([0.7, 0.3]));
    assert_eq!(attributes["color_temp_kelvin"], Value::Null);
    assert!(attributes["rgb_color"].is_array());

    assert!(bulb.on_message("state", r#"{"state":"OFF"}"#));
    assert_eq!(bulb.state().as_deref(), Some("off"));
    assert_eq!(bulb.attributes()["color_mode"], Value::Null);
    assert_eq!(bulb.attributes()["brightness"], Value::Null);

    // `null` is unknown.
    assert!(bulb.on_message("state", r#"{"state":null}"#));
    assert_eq!(bulb.state(), None);
}

#[test]
fn json_state_is_bounded_and_clamped() {
    let mut bulb = zigbee2mqtt_bulb();
    assert!(bulb.on_message("state", r#"{"state":"ON","brightness":100}"#));
    // Not an object, not JSON, too large, unsupported color mode, incomplete color: ignored.
    for ignored in [
        "ON".to_owned(),
        "[1,2]".to_owned(),
        r#"{"state":"#.to_owned(),
        r#"{"color_mode":"hs","color":{"h":10,"s":20}}"#.to_owned(),
        r#"{"color_mode":"xy","color":{"x":0.3}}"#.to_owned(),
        r#"{"brightness":0}"#.to_owned(),
        r#"{"brightness":"dim"}"#.to_owned(),
        format!(
            r#"{{"state":"OFF","pad":"{}"}}"#,
            "x".repeat(super::MAX_JSON_STATE_BYTES)
        ),
    ] {
        assert!(!bulb.on_message("state", &ignored), "{ignored:.80}");
    }
    assert_eq!(bulb.state().as_deref(), Some("on"));
    // Out of range numbers are clamped: brightness to 255, coordinates to 0..1, a color
    // temperature to the bulb's range.
    assert!(bulb.on_message(
        "state",
        r#"{"brightness":100000,"color_mode":"xy","color":{"x":1.7,"y":-2}}"#
    ));
    assert_eq!(bulb.attributes()["brightness"], json!(255));
    assert_eq!(bulb.attributes()["xy_color"], json!([1.0, 0.0]));
    assert!(bulb.on_message("state", r#"{"color_mode":"color_temp","color_temp":100}"#));
    assert_eq!(bulb.attributes()["color_temp_kelvin"], json!(4000));
}

#[test]
fn zigbee2mqtt_json_commands_carry_only_what_was_asked() {
    let mut bulb = zigbee2mqtt_bulb();
    // 128 of 255 is 127 of 254.
    assert_eq!(
        json_call(
            bulb.as_mut(),
            Z2M_SET,
            "turn_on",
            json!({"brightness": 128})
        ),
        json!({"state": "ON", "brightness": 127})
    );
    // The entity gets brightness_pct as called and converts it itself (as the demo light).
    assert_eq!(
        json_call(
            bulb.as_mut(),
            Z2M_SET,
            "turn_on",
            json!({"brightness_pct": 50})
        ),
        json!({"state": "ON", "brightness": 127})
    );
    // Kelvin to mireds; beyond the range, clamped to it (6500 K -> 4000 K -> 250 mireds).
    assert_eq!(
        json_call(
            bulb.as_mut(),
            Z2M_SET,
            "turn_on",
            json!({"color_temp_kelvin": 3000})
        ),
        json!({"state": "ON", "color_temp": 333})
    );
    assert_eq!(
        json_call(
            bulb.as_mut(),
            Z2M_SET,
            "turn_on",
            json!({"color_temp_kelvin": 6500})
        ),
        json!({"state": "ON", "color_temp": 250})
    );
    // An xy bulb gets hs and rgb colors as xy.
    assert_eq!(
        json_call(
            bulb.as_mut(),
            Z2M_SET,
            "turn_on",
            json!({"rgb_color": [255, 0, 0]})
        ),
        json!({"state": "ON", "color": {"x": 0.701, "y": 0.299}})
    );
    assert_eq!(
        json_call(
            bulb.as_mut(),
            Z2M_SET,
            "turn_on",
            json!({"hs_color": [0, 100]})
        ),
        json!({"state": "ON", "color": {"x": 0.701, "y": 0.299}})
    );
    assert_eq!(
        json_call(
            bulb.as_mut(),
            Z2M_SET,
            "turn_on",
            json!({"effect": "blink", "transition": 2})
        ),
        json!({"state": "ON", "effect": "blink", "transition": 2})
    );
    assert_eq!(
        json_call(bulb.as_mut(), Z2M_SET, "turn_on", json!({"flash": "long"})),
        json!({"state": "ON", "flash": 10})
    );
    assert_eq!(
        json_call(bulb.as_mut(), Z2M_SET, "turn_off", json!({"transition": 2})),
        json!({"state": "OFF", "transition": 2})
    );
    // Brightness 0 turns the light off.
    assert_eq!(
        json_call(bulb.as_mut(), Z2M_SET, "turn_on", json!({"brightness": 0})),
        json!({"state": "OFF"})
    );
    // Not optimistic: commands do not change the state, the report does.
    assert_eq!(bulb.state(), None);
    assert_eq!(
        json_call(bulb.as_mut(), Z2M_SET, "toggle", json!({})),
        json!({"state": "ON"})
    );
    bulb.on_message("state", r#"{"state":"ON","brightness":254}"#);
    assert_eq!(
        json_call(bulb.as_mut(), Z2M_SET, "toggle", json!({"transition": 1})),
        json!({"state": "OFF", "transition": 1})
    );
    // A step from the current brightness (255 - 55 = 200 -> 199 of 254).
    assert_eq!(
        json_call(
            bulb.as_mut(),
            Z2M_SET,
            "turn_on",
            json!({"brightness_step": -55})
        ),
        json!({"state": "ON", "brightness": 199})
    );
}

#[test]
fn light_calls_it_cannot_honour_are_refused() {
    let mut bulb = zigbee2mqtt_bulb();
    for data in [
        json!({"effect": "disco"}),
        json!({"rgbw_color": [1, 2, 3, 4]}),
        json!({"color_name": "red"}),
        json!({"hs_color": [0, 100], "color_temp_kelvin": 3000}),
    ] {
        assert!(
            bulb.command("turn_on", &object(data.clone())).is_err(),
            "{data}"
        );
    }
    assert!(bulb.command("set_value", &Map::new()).is_err());
}

const TASMOTA_POWER: &str = "tasmota_ABCDEF/cmnd/POWER";
const TASMOTA_DIMMER: &str = "tasmota_ABCDEF/cmnd/Dimmer";
const TASMOTA_COLOR: &str = "tasmota_ABCDEF/cmnd/Color2";
const TASMOTA_SCHEME: &str = "tasmota_ABCDEF/cmnd/Scheme";
const TASMOTA_STATE: &str = "tasmota_ABCDEF/tele/STATE";

/// A Tasmota RGB light as its legacy discovery publishes it (`~` expanded).
fn tasmota_light() -> Box<dyn Platform> {
    light(json!({
        "name": "Tasmota",
        "command_topic": TASMOTA_POWER,
        "state_topic": TASMOTA_STATE,
        "value_template": "{{value_json.POWER}}",
        "payload_off": "OFF",
        "payload_on": "ON",
        "availability_topic": "tasmota_ABCDEF/tele/LWT",
        "payload_available": "Online",
        "payload_not_available": "Offline",
        "unique_id": "ABCDEF_LI_1",
        "device": {"identifiers": ["ABCDEF"], "name": "Tasmota", "model": "Generic", "sw_version": "9.1.0", "manufacturer": "Tasmota"},
        "brightness_command_topic": TASMOTA_DIMMER,
        "brightness_state_topic": TASMOTA_STATE,
        "brightness_scale": 100,
        "on_command_type": "brightness",
        "brightness_value_template": "{{value_json.Dimmer}}",
        "rgb_command_topic": TASMOTA_COLOR,
        "rgb_state_topic": TASMOTA_STATE,
        "rgb_value_template": "{{value_json.Color}}",
        "effect_command_topic": TASMOTA_SCHEME,
        "effect_state_topic": TASMOTA_STATE,
        "effect_value_template": "{{value_json.Scheme}}",
        "effect_list": [0, 1, 2, 3, 4]
    }))
}

const TASMOTA_REPORT: &str = r#"{"Time":"2024-05-01T12:00:00","Uptime":"0T01:00:00","POWER":"ON","Dimmer":50,"Color":"255,128,0","Scheme":2,"Fade":"OFF","Speed":1}"#;

#[test]
fn tasmota_basic_light_follows_its_state_topics() {
    let mut tasmota = tasmota_light();
    // Four roles on one topic: one subscription, each message read by all four.
    assert_eq!(tasmota.topics(), vec![("state", TASMOTA_STATE.to_owned())]);
    let info = info(tasmota.as_ref());
    assert_eq!(info.supported_features, 4);
    assert_eq!(
        Value::Object(info.capabilities),
        json!({"supported_color_modes": ["rgb"], "effect_list": ["0", "1", "2", "3", "4"]})
    );
    assert!(tasmota.on_message("state", TASMOTA_REPORT));
    assert!(!tasmota.on_message("state", TASMOTA_REPORT));
    assert_eq!(tasmota.state().as_deref(), Some("on"));
    assert!(!tasmota.optimistic());
    let attributes = tasmota.attributes();
    assert_eq!(attributes["color_mode"], json!("rgb"));
    // Dimmer 50 of 100 is 128 of 255.
    assert_eq!(attributes["brightness"], json!(128));
    assert_eq!(attributes["rgb_color"], json!([255, 128, 0]));
    assert_eq!(attributes["hs_color"], json!([30.118, 100.0]));
    assert!(attributes["xy_color"].is_array());
    assert_eq!(attributes["effect"], json!("2"));
    assert!(attributes.get("color_temp_kelvin").is_none());

    // Unparsable values leave the state as it was; `None` is unknown.
    assert!(!tasmota.on_message("state", r#"{"Dimmer":"bright"}"#));
    assert!(!tasmota.on_message("state", r#"{"Color":"red"}"#));
    assert!(!tasmota.on_message("state", r#"{"Color":"1,2"}"#));
    assert!(!tasmota.on_message("state", r#"{"POWER":"BLINK"}"#));
    assert_eq!(tasmota.attributes()["brightness"], json!(128));
    assert_eq!(tasmota.state().as_deref(), Some("on"));
    assert!(tasmota.on_message("state", r#"{"POWER":"None"}"#));
    assert_eq!(tasmota.state(), None);
}

#[test]
fn tasmota_basic_light_commands() {
    let mut tasmota = tasmota_light();
    tasmota.on_message("state", TASMOTA_REPORT);
    // on_command_type brightness: the dimmer turns it on, no POWER message.
    assert_eq!(
        call(tasmota.as_mut(), "turn_on", json!({"brightness": 128})),
        vec![(TASMOTA_DIMMER.to_owned(), "50".to_owned())]
    );
    assert_eq!(
        call(tasmota.as_mut(), "turn_on", json!({"brightness_pct": 100})),
        vec![(TASMOTA_DIMMER.to_owned(), "100".to_owned())]
    );
    // No brightness asked: the current one.
    assert_eq!(
        call(tasmota.as_mut(), "turn_on", json!({})),
        vec![(TASMOTA_DIMMER.to_owned(), "50".to_owned())]
    );
    // A color at full scale (the brightness has its own topic), then the brightness.
    assert_eq!(
        call(
            tasmota.as_mut(),
            "turn_on",
            json!({"rgb_color": [10, 20, 30]})
        ),
        vec![
            (TASMOTA_COLOR.to_owned(), "10,20,30".to_owned()),
            (TASMOTA_DIMMER.to_owned(), "50".to_owned()),
        ]
    );
    // hs converted to the RGB the light takes.
    assert_eq!(
        call(tasmota.as_mut(), "turn_on", json!({"hs_color": [120, 100]}))[0],
        (TASMOTA_COLOR.to_owned(), "0,255,0".to_owned())
    );
    assert_eq!(
        call(tasmota.as_mut(), "turn_on", json!({"effect": "3"})),
        vec![
            (TASMOTA_DIMMER.to_owned(), "50".to_owned()),
            (TASMOTA_SCHEME.to_owned(), "3".to_owned()),
        ]
    );
    // No transition feature: the transition is dropped, the off payload goes out.
    assert_eq!(
        call(tasmota.as_mut(), "turn_off", json!({"transition": 5})),
        vec![(TASMOTA_POWER.to_owned(), "OFF".to_owned())]
    );
    assert_eq!(
        call(tasmota.as_mut(), "toggle", json!({})),
        vec![(TASMOTA_POWER.to_owned(), "OFF".to_owned())]
    );
    // Not optimistic: still what the device said.
    assert_eq!(tasmota.state().as_deref(), Some("on"));
}

#[test]
fn basic_light_color_temperature_in_mireds_and_on_command_types() {
    let mut bulb = light(json!({
        "command_topic": "bulb/set",
        "state_topic": "bulb/state",
        "color_temp_command_topic": "bulb/ct/set",
        "color_temp_state_topic": "bulb/ct",
        "on_command_type": "first",
        "min_kelvin": 2700,
        "max_kelvin": 6500
    }));
    assert_eq!(
        Value::Object(info(bulb.as_ref()).capabilities),
        json!({"supported_color_modes": ["color_temp"], "min_color_temp_kelvin": 2700, "max_color_temp_kelvin": 6500})
    );
    assert_eq!(
        call(bulb.as_mut(), "turn_on", json!({"color_temp_kelvin": 4000})),
        vec![
            ("bulb/set".to_owned(), "ON".to_owned()),
            ("bulb/ct/set".to_owned(), "250".to_owned()),
        ]
    );
    assert!(bulb.on_message("state", "ON"));
    assert!(bulb.on_message("color_temp", "300"));
    assert_eq!(bulb.attributes()["color_temp_kelvin"], json!(3333));
    assert_eq!(bulb.attributes()["color_mode"], json!("color_temp"));
    assert!(!bulb.on_message("color_temp", "warm"));
    assert!(!bulb.on_message("color_temp", ""));
    // A color asked of a color-temperature-only light becomes its correlated temperature
    // (McCamy: 2723 K, 367 mireds).
    let messages = call(
        bulb.as_mut(),
        "turn_on",
        json!({"xy_color": [0.4578, 0.41]}),
    );
    assert_eq!(messages[1].0, "bulb/ct/set");
    assert_eq!(messages[1].1, "367");
}

#[test]
fn optimistic_basic_light_takes_on_what_it_commands() {
    let mut lamp = light(json!({
        "command_topic": "lamp/set",
        "brightness_command_topic": "lamp/brightness/set",
        "payload_on": "1",
        "payload_off": "0"
    }));
    assert!(lamp.optimistic());
    assert!(lamp.topics().is_empty());
    assert_eq!(
        Value::Object(info(lamp.as_ref()).capabilities),
        json!({"supported_color_modes": ["brightness"]})
    );
    assert_eq!(
        call(lamp.as_mut(), "turn_on", json!({"brightness": 64})),
        vec![
            ("lamp/brightness/set".to_owned(), "64".to_owned()),
            ("lamp/set".to_owned(), "1".to_owned()),
        ]
    );
    assert_eq!(lamp.state().as_deref(), Some("on"));
    assert_eq!(lamp.attributes()["brightness"], json!(64));
    assert_eq!(lamp.attributes()["color_mode"], json!("brightness"));
    assert_eq!(
        call(lamp.as_mut(), "toggle", json!({})),
        vec![("lamp/set".to_owned(), "0".to_owned())]
    );
    assert_eq!(lamp.state().as_deref(), Some("off"));
    assert_eq!(lamp.attributes()["brightness"], Value::Null);

    // A bare on/off light.
    let mut plain = light(json!({"command_topic": "plain/set", "schema": "basic"}));
    assert_eq!(
        Value::Object(info(plain.as_ref()).capabilities),
        json!({"supported_color_modes": ["onoff"]})
    );
    assert_eq!(
        call(plain.as_mut(), "turn_on", json!({"brightness": 10})),
        vec![("plain/set".to_owned(), "ON".to_owned())]
    );
    assert_eq!(
        Value::Object(plain.attributes()),
        json!({"color_mode": "onoff"})
    );
}

const ESPHOME_COMMAND: &str = "desk/light/desk_strip/command";

/// An ESPHome RGB strip, as ESPHome publishes its discovery config (expanded).
fn esphome_strip() -> Box<dyn Platform> {
    light(json!({
        "schema": "json",
        "color_mode": true,
        "supported_color_modes": ["rgb"],
        "brightness": true,
        "effect": true,
        "effect_list": ["Rainbow", "None"],
        "name": "Desk Strip",
        "state_topic": "desk/light/desk_strip/state",
        "command_topic": ESPHOME_COMMAND,
        "availability_topic": "desk/status",
        "unique_id": "ESPlightdesk_strip",
        "device": {"identifiers": "84f3eb0c1a2b", "name": "desk", "sw_version": "esphome v2024.6.0", "model": "nodemcuv2", "manufacturer": "espressif"}
    }))
}

#[test]
fn esphome_json_light() {
    let mut strip = esphome_strip();
    assert!(strip.on_message(
        "state",
        r#"{"state":"ON","color_mode":"rgb","brightness":128,"color":{"r":0,"g":0,"b":255},"effect":"None"}"#
    ));
    let attributes = strip.attributes();
    assert_eq!(attributes["color_mode"], json!("rgb"));
    assert_eq!(attributes["brightness"], json!(128));
    assert_eq!(attributes["rgb_color"], json!([0, 0, 255]));
    assert_eq!(attributes["hs_color"], json!([240.0, 100.0]));
    assert_eq!(attributes["effect"], json!("None"));
    assert!(attributes.get("color_temp_kelvin").is_none());
    // With the brightness flag the color goes at full scale, the brightness apart.
    assert_eq!(
        json_call(
            strip.as_mut(),
            ESPHOME_COMMAND,
            "turn_on",
            json!({"rgb_color": [255, 0, 0], "brightness": 51})
        ),
        json!({"state": "ON", "color": {"r": 255, "g": 0, "b": 0}, "brightness": 51})
    );
    // A color temperature on an RGB-only strip: its color.
    let command = json_call(
        strip.as_mut(),
        ESPHOME_COMMAND,
        "turn_on",
        json!({"color_temp_kelvin": 2000}),
    );
    assert_eq!(command["color"]["r"], json!(255));
    assert!(command.get("color_temp").is_none());
    assert_eq!(
        json_call(
            strip.as_mut(),
            ESPHOME_COMMAND,
            "turn_on",
            json!({"effect": "Rainbow"})
        ),
        json!({"state": "ON", "effect": "Rainbow"})
    );
}

#[test]
fn optimistic_json_light_takes_on_what_it_commands() {
    let mut strip = light(json!({
        "schema": "json",
        "command_topic": "strip/set",
        "supported_color_modes": ["hs", "color_temp"],
        "flash": false,
        "transition": false,
        "color_temp_kelvin": true
    }));
    assert!(strip.optimistic());
    assert!(strip.topics().is_empty());
    assert_eq!(info(strip.as_ref()).supported_features, 0);
    assert_eq!(
        json_call(
            strip.as_mut(),
            "strip/set",
            "turn_on",
            json!({"hs_color": [30, 50], "brightness": 100, "transition": 3, "flash": "short"})
        ),
        json!({"state": "ON", "color": {"h": 30.0, "s": 50.0}, "brightness": 100})
    );
    assert_eq!(strip.state().as_deref(), Some("on"));
    let attributes = strip.attributes();
    assert_eq!(attributes["color_mode"], json!("hs"));
    assert_eq!(attributes["hs_color"], json!([30.0, 50.0]));
    assert_eq!(attributes["brightness"], json!(100));
    assert_eq!(
        json_call(
            strip.as_mut(),
            "strip/set",
            "turn_on",
            json!({"color_temp_kelvin": 3000})
        ),
        json!({"state": "ON", "color_temp": 3000})
    );
    assert_eq!(strip.attributes()["color_mode"], json!("color_temp"));
    assert_eq!(strip.attributes()["color_temp_kelvin"], json!(3000));
    assert_eq!(
        json_call(strip.as_mut(), "strip/set", "turn_off", json!({})),
        json!({"state": "OFF"})
    );
    assert_eq!(strip.state().as_deref(), Some("off"));
}

#[test]
fn bad_light_configs_are_refused() {
    assert_eq!(
        refusal(json!({"state_topic": "a"})),
        ConfigError::Missing("command_topic")
    );
    assert_eq!(
        refusal(json!({"schema": "json", "state_topic": "a"})),
        ConfigError::Missing("command_topic")
    );
    let template = refusal(json!({
        "schema": "template",
        "command_topic": "a",
        "command_on_template": "on",
        "command_off_template": "off"
    }));
    assert!(
        template
            .to_string()
            .contains("schema template is not supported"),
        "{template}"
    );
    for (modes, says) in [
        (json!(["rgbcct"]), "not a color mode"),
        (json!(["rgbw"]), "color mode rgbw is not supported"),
        (json!(["onoff", "rgb"]), "onoff and brightness only alone"),
        (json!([]), "at least one mode"),
    ] {
        let error = refusal(
            json!({"schema": "json", "command_topic": "a", "supported_color_modes": modes}),
        );
        assert!(error.to_string().contains(says), "{error}");
    }
    let error = refusal(json!({"command_topic": "a", "white_command_topic": "w"}));
    assert!(error.to_string().contains("not supported"), "{error}");
    // Accepted, but a turn_on would publish nothing: refused when called.
    let mut mute = light(json!({"command_topic": "a", "on_command_type": "brightness"}));
    assert!(mute.command("turn_on", &Map::new()).is_err());
    assert_eq!(
        call(mute.as_mut(), "turn_off", json!({})),
        vec![("a".to_owned(), "OFF".to_owned())]
    );
    let error = refusal(json!({"command_topic": "a", "on_command_type": "sometimes"}));
    assert!(error.to_string().contains("on_command_type"), "{error}");
    let error = refusal(json!({"command_topic": "a", "brightness_scale": 0}));
    assert!(error.to_string().contains("brightness_scale"), "{error}");
}

#[test]
fn color_conversions_match_home_assistant() {
    use super::color::{
        hs_to_rgb, hs_to_xy, kelvin_to_hs, mired_kelvin, rgb_to_hs, rgb_to_xy, xy_to_hs,
        xy_to_kelvin, xy_to_rgb,
    };
    // Values of Home Assistant's color_util tests.
    assert_eq!(rgb_to_xy([255.0, 0.0, 0.0]), [0.701, 0.299]);
    assert_eq!(rgb_to_xy([0.0, 0.0, 0.0]), [0.0, 0.0]);
    assert_eq!(xy_to_rgb([0.35, 0.35]), [255, 243, 222]);
    assert_eq!(xy_to_rgb([1.0, 0.0]), [255, 0, 60]);
    assert_eq!(xy_to_rgb([0.0, 1.0]), [0, 255, 0]);
    assert_eq!(xy_to_rgb([0.0, 0.0]), [0, 63, 255]);
    assert_eq!(rgb_to_hs([0.0, 0.0, 0.0]), [0.0, 0.0]);
    assert_eq!(rgb_to_hs([255.0, 255.0, 255.0]), [0.0, 0.0]);
    assert_eq!(rgb_to_hs([0.0, 0.0, 255.0]), [240.0, 100.0]);
    assert_eq!(rgb_to_hs([0.0, 255.0, 0.0]), [120.0, 100.0]);
    assert_eq!(rgb_to_hs([255.0, 0.0, 0.0]), [0.0, 100.0]);
    assert_eq!(hs_to_rgb([240.0, 100.0]), [0, 0, 255]);
    assert_eq!(hs_to_rgb([0.0, 0.0]), [255, 255, 255]);
    assert_eq!(hs_to_rgb([360.0, 100.0]), [255, 0, 0]);
    assert_eq!(xy_to_hs([1.0, 1.0]), [47.294, 100.0]);
    assert_eq!(xy_to_hs([0.35, 0.35]), [38.182, 12.941]);
    assert_eq!(xy_to_hs([1.0, 0.0]), [345.882, 100.0]);
    assert_eq!(xy_to_hs([0.0, 1.0]), [120.0, 100.0]);
    assert_eq!(xy_to_hs([0.0, 0.0]), [225.176, 100.0]);
    assert_eq!(hs_to_xy([0.0, 100.0]), [0.701, 0.299]);
    assert_eq!(mired_kelvin(25_000), 40);
    assert_eq!(mired_kelvin(200), 5000);
    assert_eq!(mired_kelvin(0), 1_000_000);
    // Warm white is orange-ish, daylight nearly white.
    let [hue, saturation] = kelvin_to_hs(2700);
    assert!(
        (25.0..45.0).contains(&hue) && saturation > 40.0,
        "{hue} {saturation}"
    );
    assert!(kelvin_to_hs(6600)[1] < 1.0);
    // McCamy's approximation: D65 is about 6500 K.
    assert!((6400..6600).contains(&xy_to_kelvin([0.3127, 0.3290])));
}

#[test]
fn basic_rgb_without_brightness_topic_carries_the_brightness_in_the_color() {
    let mut strip = light(json!({
        "command_topic": "strip/set",
        "state_topic": "strip/state",
        "rgb_command_topic": "strip/rgb/set",
        "rgb_state_topic": "strip/rgb"
    }));
    assert_eq!(strip.topics().len(), 2);
    assert!(strip.on_message("state", "ON"));
    // The brightest channel is the brightness; the color is kept at full brightness.
    assert!(strip.on_message("rgb", "128,64,0"));
    assert_eq!(strip.attributes()["brightness"], json!(128));
    assert_eq!(strip.attributes()["rgb_color"], json!([255, 128, 0]));
    assert!(!strip.on_message("rgb", "0,0,0"));
    assert!(!strip.on_message("rgb", "1,2,3,4"));
    // Dimming scales the current color; a color goes out at the current brightness.
    assert_eq!(
        call(strip.as_mut(), "turn_on", json!({"brightness": 51})),
        vec![
            ("strip/rgb/set".to_owned(), "51,25,0".to_owned()),
            ("strip/set".to_owned(), "ON".to_owned()),
        ]
    );
    assert_eq!(
        call(strip.as_mut(), "turn_on", json!({"rgb_color": [0, 0, 255]}))[0],
        ("strip/rgb/set".to_owned(), "0,0,128".to_owned())
    );
}
