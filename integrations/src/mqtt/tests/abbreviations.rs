//! Tests of the discovery abbreviations and base topic: real devices' payloads expand to the
//! full form Home Assistant reads.

use serde_json::{Map, Value, json};

use super::*;

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("not an object: {other}"),
    }
}

fn expanded(value: Value) -> Value {
    let mut payload = object(value);
    expand(&mut payload).expect("expands");
    Value::Object(payload)
}

#[test]
fn tables_are_sorted_unique_and_never_chain() {
    for table in [ABBREVIATIONS, DEVICE_ABBREVIATIONS, ORIGIN_ABBREVIATIONS] {
        for pair in table.windows(2) {
            assert!(pair[0].0 < pair[1].0, "{:?} then {:?}", pair[0], pair[1]);
        }
        // A full name that were another abbreviation would make the result depend on the
        // order keys are expanded in.
        for (abbreviation, full) in table {
            if abbreviation != full {
                assert_eq!(full_name(table, full), None, "{abbreviation} -> {full}");
            }
        }
    }
    assert_eq!(full_name(ABBREVIATIONS, "stat_t"), Some("state_topic"));
    assert_eq!(
        full_name(ABBREVIATIONS, "act_stat_t"),
        Some("activity_state_topic")
    );
    assert_eq!(
        full_name(ABBREVIATIONS, "xy_val_tpl"),
        Some("xy_value_template")
    );
    assert_eq!(full_name(ABBREVIATIONS, "state_topic"), None);
    assert_eq!(full_name(DEVICE_ABBREVIATIONS, "mdl_id"), Some("model_id"));
    assert_eq!(full_name(ORIGIN_ABBREVIATIONS, "url"), Some("support_url"));
    assert!(ABBREVIATIONS.len() > 300);
}

#[test]
fn a_zigbee2mqtt_light_expands_to_the_full_form() {
    let payload = json!({
        "avty": [{"t": "zigbee2mqtt/bridge/state", "val_tpl": "{{ value_json.state }}"}],
        "bri": true,
        "bri_scl": 254,
        "cmd_t": "zigbee2mqtt/Kitchen light/set",
        "clrm": true,
        "dev": {
            "ids": ["zigbee2mqtt_0x00178801021b2d3e"],
            "mf": "Philips",
            "mdl": "Hue white ambiance E27",
            "mdl_id": "8718696548738",
            "name": "Kitchen light",
            "sw": "1.50.2_r30933",
            "via_device": "zigbee2mqtt_bridge_0x00124b0022813501"
        },
        "max_mirs": 454,
        "min_mirs": 153,
        "name": null,
        "o": {"name": "Zigbee2MQTT", "sw": "1.40.0", "url": "https://www.zigbee2mqtt.io"},
        "schema": "json",
        "stat_t": "zigbee2mqtt/Kitchen light",
        "sup_clrm": ["color_temp"],
        "uniq_id": "0x00178801021b2d3e_light_zigbee2mqtt"
    });
    assert_eq!(
        expanded(payload),
        json!({
            "availability": [{
                "topic": "zigbee2mqtt/bridge/state",
                "value_template": "{{ value_json.state }}"
            }],
            "bri": true,
            "brightness_scale": 254,
            "command_topic": "zigbee2mqtt/Kitchen light/set",
            "color_mode": true,
            "device": {
                "identifiers": ["zigbee2mqtt_0x00178801021b2d3e"],
                "manufacturer": "Philips",
                "model": "Hue white ambiance E27",
                "model_id": "8718696548738",
                "name": "Kitchen light",
                "sw_version": "1.50.2_r30933",
                "via_device": "zigbee2mqtt_bridge_0x00124b0022813501"
            },
            "max_mireds": 454,
            "min_mireds": 153,
            "name": null,
            "origin": {
                "name": "Zigbee2MQTT",
                "sw_version": "1.40.0",
                "support_url": "https://www.zigbee2mqtt.io"
            },
            "schema": "json",
            "state_topic": "zigbee2mqtt/Kitchen light",
            "supported_color_modes": ["color_temp"],
            "unique_id": "0x00178801021b2d3e_light_zigbee2mqtt"
        })
    );
}

#[test]
fn a_tasmota_switch_with_a_base_topic_expands_to_the_full_form() {
    let payload = json!({
        "~": "tasmota_1A2B3C/",
        "name": "Desk lamp",
        "cmd_t": "~cmnd/POWER",
        "stat_t": "~tele/STATE",
        "val_tpl": "{{ value_json.POWER }}",
        "pl_off": "OFF",
        "pl_on": "ON",
        "avty_t": "~tele/LWT",
        "pl_avail": "Online",
        "pl_not_avail": "Offline",
        "json_attr_t": "~tele/HASS_STATE",
        "uniq_id": "1A2B3C_RL_1",
        "dev": {
            "ids": ["1A2B3C"],
            "cns": [["mac", "A0:20:A6:1A:2B:3C"]],
            "name": "Desk",
            "mdl": "Sonoff Basic",
            "sw": "9.5.0(tasmota)",
            "mf": "ITEAD",
            "cu": "http://192.168.1.20/"
        }
    });
    assert_eq!(
        expanded(payload),
        json!({
            "name": "Desk lamp",
            "command_topic": "tasmota_1A2B3C/cmnd/POWER",
            "state_topic": "tasmota_1A2B3C/tele/STATE",
            "value_template": "{{ value_json.POWER }}",
            "payload_off": "OFF",
            "payload_on": "ON",
            "availability_topic": "tasmota_1A2B3C/tele/LWT",
            "payload_available": "Online",
            "payload_not_available": "Offline",
            "json_attributes_topic": "tasmota_1A2B3C/tele/HASS_STATE",
            "unique_id": "1A2B3C_RL_1",
            "device": {
                "identifiers": ["1A2B3C"],
                "connections": [["mac", "A0:20:A6:1A:2B:3C"]],
                "name": "Desk",
                "model": "Sonoff Basic",
                "sw_version": "9.5.0(tasmota)",
                "manufacturer": "ITEAD",
                "configuration_url": "http://192.168.1.20/"
            }
        })
    );
}

#[test]
fn keys_keep_their_position() {
    let mut payload = object(json!({"name": "a", "stat_t": "s", "qos": 1, "cmd_t": "c"}));
    expand(&mut payload).expect("expands");
    let keys: Vec<&str> = payload.keys().map(String::as_str).collect();
    assert_eq!(keys, ["name", "state_topic", "qos", "command_topic"]);
}

#[test]
fn availability_items_expand_in_a_list_and_alone() {
    let payload = json!({
        "avty": [
            {"t": "~/status", "pl_avail": "up", "pl_not_avail": "down"},
            {"topic": "bridge/state", "val_tpl": "{{ value_json.state }}"},
            "not an object",
            7
        ],
        "avty_mode": "all",
        "~": "home/dev1"
    });
    assert_eq!(
        expanded(payload),
        json!({
            "availability": [
                {"topic": "home/dev1/status", "payload_available": "up", "payload_not_available": "down"},
                {"topic": "bridge/state", "value_template": "{{ value_json.state }}"},
                "not an object",
                7
            ],
            "availability_mode": "all"
        })
    );
    // Home Assistant reads a single object as a list of one.
    let single = json!({"availability": {"t": "~/lwt", "pl_avail": "on"}, "~": "dev"});
    assert_eq!(
        expanded(single),
        json!({"availability": {"topic": "dev/lwt", "payload_available": "on"}})
    );
}

#[test]
fn the_abbreviation_wins_over_its_full_key_in_either_order() {
    // Home Assistant moves the abbreviated value onto the full key, whatever came first.
    let full_first = json!({"state_topic": "full", "name": "n", "stat_t": "short"});
    assert_eq!(
        expanded(full_first),
        json!({"state_topic": "short", "name": "n"})
    );
    let short_first = json!({"stat_t": "short", "state_topic": "full"});
    assert_eq!(expanded(short_first), json!({"state_topic": "short"}));
    let device = json!({"device": {"manufacturer": "full", "mf": "short"}});
    assert_eq!(
        expanded(device),
        json!({"device": {"manufacturer": "short"}})
    );
}

#[test]
fn unknown_and_full_keys_are_kept_and_nested_values_untouched() {
    let payload = json!({
        "state_topic": "a/b",
        "my_custom_key": {"stat_t": "nested, not expanded"},
        "device_class": "temperature",
        "o": "not an object"
    });
    assert_eq!(
        expanded(payload),
        json!({
            "state_topic": "a/b",
            "my_custom_key": {"stat_t": "nested, not expanded"},
            "device_class": "temperature",
            "origin": "not an object"
        })
    );
}

#[test]
fn only_string_topics_are_substituted_and_only_at_the_ends() {
    let payload = json!({
        "~": "base",
        "state_topic": "~/state",
        "command_topic": "cmd/~",
        "topic": "~",
        "json_attributes_topic": "a/~/b",
        "brightness_state_topic": 12,
        "rgb_state_topic": null,
        "effect_state_topic": ["~/x"],
        "xy_state_topic": "",
        "name": "~/not a topic key",
        "value_template": "~"
    });
    assert_eq!(
        expanded(payload),
        json!({
            "state_topic": "base/state",
            "command_topic": "cmd/base",
            "topic": "base",
            "json_attributes_topic": "a/~/b",
            "brightness_state_topic": 12,
            "rgb_state_topic": null,
            "effect_state_topic": ["~/x"],
            "xy_state_topic": "",
            "name": "~/not a topic key",
            "value_template": "~"
        })
    );
    // Both ends at once: each is replaced.
    let both = json!({"~": "b", "state_topic": "~/x/~"});
    assert_eq!(expanded(both), json!({"state_topic": "b/x/b"}));
}

#[test]
fn without_a_base_topic_tildes_stay() {
    let payload = json!({"stat_t": "~/state"});
    assert_eq!(expanded(payload), json!({"state_topic": "~/state"}));
}

#[test]
fn a_device_discovery_payload_expands_each_component() {
    let mut payload = object(json!({
        "dev": {"ids": "ea334450945afc", "name": "Kitchen", "mf": "Bla electronics", "sn": "1"},
        "o": {"name": "bla2mqtt", "sw": "2.1", "url": "https://bla2mqtt.example.com/support"},
        "cmps": {
            "temp": {"p": "sensor", "dev_cla": "temperature", "unit_of_meas": "°C",
                     "val_tpl": "{{ value_json.temperature }}", "uniq_id": "temp01ae_t",
                     "~": "sensorBedroom", "stat_t": "~/state"},
            "hum": {"p": "sensor", "avty": [{"t": "~/lwt"}]},
            "broken": "not an object"
        },
        "stat_t": "sensorBedroom/state",
        "qos": 2
    }));
    expand_abbreviations(&mut payload);
    assert_eq!(
        Value::Object(payload.clone()),
        json!({
            "device": {"identifiers": "ea334450945afc", "name": "Kitchen",
                       "manufacturer": "Bla electronics", "serial_number": "1"},
            "origin": {"name": "bla2mqtt", "sw_version": "2.1",
                       "support_url": "https://bla2mqtt.example.com/support"},
            "components": {
                "temp": {"platform": "sensor", "device_class": "temperature",
                         "unit_of_measurement": "°C",
                         "value_template": "{{ value_json.temperature }}",
                         "unique_id": "temp01ae_t", "~": "sensorBedroom", "state_topic": "~/state"},
                "hum": {"platform": "sensor", "availability": [{"topic": "~/lwt"}]},
                "broken": "not an object"
            },
            "state_topic": "sensorBedroom/state",
            "qos": 2
        })
    );
    // The base topic is then applied per component.
    let Some(Value::Object(components)) = payload.get_mut("components") else {
        panic!("components")
    };
    let Some(Value::Object(temp)) = components.get_mut("temp") else {
        panic!("temp")
    };
    apply_base_topic(temp).expect("applies");
    assert_eq!(temp.get("state_topic"), Some(&json!("sensorBedroom/state")));
    assert!(!temp.contains_key("~"));
}

#[test]
fn a_hostile_base_topic_is_refused() {
    let mut not_a_string = object(json!({"~": 5, "stat_t": "~/x"}));
    assert_eq!(expand(&mut not_a_string), Err(BaseTopicError::NotAString));

    let long = "b".repeat(MAX_BASE_TOPIC_BYTES + 1);
    let mut too_long = object(json!({"~": long, "stat_t": "~/x"}));
    assert_eq!(
        expand(&mut too_long),
        Err(BaseTopicError::TooLong {
            len: MAX_BASE_TOPIC_BYTES + 1,
            max: MAX_BASE_TOPIC_BYTES
        })
    );

    // A base at the limit substituted into many topic keys would multiply the payload.
    let mut many = Map::new();
    many.insert("~".into(), json!("b".repeat(MAX_BASE_TOPIC_BYTES)));
    for index in 0..(MAX_BASE_TOPIC_GROWTH / MAX_BASE_TOPIC_BYTES + 1) {
        many.insert(format!("k{index}_topic"), json!("~"));
    }
    assert_eq!(
        expand(&mut many),
        Err(BaseTopicError::TooMuchGrowth {
            max: MAX_BASE_TOPIC_GROWTH
        })
    );
    // Just under the bound is fine.
    let mut enough = Map::new();
    enough.insert("~".into(), json!("b".repeat(MAX_BASE_TOPIC_BYTES)));
    for index in 0..(MAX_BASE_TOPIC_GROWTH / MAX_BASE_TOPIC_BYTES) {
        enough.insert(format!("k{index}_topic"), json!("~"));
    }
    assert_eq!(expand(&mut enough), Ok(()));
}
