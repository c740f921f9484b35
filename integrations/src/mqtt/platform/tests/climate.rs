//! Tests of the `climate` component.

use serde_json::{Map, Value, json};

use homecore::{EntityInfo, ServiceError};

use super::super::{ConfigError, Platform, from_config};

fn climate(config: Value) -> Result<Box<dyn Platform>, ConfigError> {
    let Value::Object(config) = config else {
        panic!("a config is an object");
    };
    from_config("climate", &config)
}

fn sent(
    platform: &mut dyn Platform,
    service: &str,
    data: Value,
) -> Result<Vec<(String, String)>, ServiceError> {
    let Value::Object(data) = data else {
        panic!("service data is an object");
    };
    Ok(platform
        .command(service, &data)?
        .into_iter()
        .map(|message| (message.topic, message.payload))
        .collect())
}

fn pair(topic: &str, payload: &str) -> (String, String) {
    (topic.to_owned(), payload.to_owned())
}

/// An ESPHome thermostat: mode, target, current temperature, action, fan and presets.
fn esphome_thermostat() -> Value {
    json!({
        "name": "Thermostat",
        "unique_id": "hallwayclimate",
        "modes": ["off", "heat", "cool", "heat_cool"],
        "mode_command_topic": "hallway/climate/thermostat/mode/command",
        "mode_state_topic": "hallway/climate/thermostat/mode/state",
        "temperature_command_topic": "hallway/climate/thermostat/target_temperature/command",
        "temperature_state_topic": "hallway/climate/thermostat/target_temperature/state",
        "current_temperature_topic": "hallway/climate/thermostat/current_temperature/state",
        "action_topic": "hallway/climate/thermostat/action/state",
        "fan_modes": ["auto", "low", "high"],
        "fan_mode_command_topic": "hallway/climate/thermostat/fan_mode/command",
        "fan_mode_state_topic": "hallway/climate/thermostat/fan_mode/state",
        "preset_modes": ["eco", "away"],
        "preset_mode_command_topic": "hallway/climate/thermostat/preset/command",
        "preset_mode_state_topic": "hallway/climate/thermostat/preset/state",
        "min_temp": 10,
        "max_temp": 30,
        "temp_step": 0.5,
        "precision": 0.1,
        "device": {"identifiers": ["a4cf12aabbcc"], "name": "hallway"}
    })
}

#[test]
fn it_shows_its_modes_limits_and_reported_values() {
    let mut thermostat = climate(esphome_thermostat()).expect("valid");
    assert_eq!(thermostat.topics().len(), 6);
    let mut info = EntityInfo::new("climate");
    thermostat.describe(&mut info);
    // TARGET_TEMPERATURE | FAN_MODE | PRESET_MODE | TURN_OFF | TURN_ON.
    assert_eq!(info.supported_features, 1 | 8 | 16 | 128 | 256);
    assert_eq!(
        info.capabilities.get("hvac_modes"),
        Some(&json!(["off", "heat", "cool", "heat_cool"]))
    );
    assert_eq!(info.capabilities.get("min_temp"), Some(&json!(10.0)));
    assert_eq!(info.capabilities.get("max_temp"), Some(&json!(30.0)));
    assert_eq!(info.capabilities.get("target_temp_step"), Some(&json!(0.5)));
    assert_eq!(
        info.capabilities.get("fan_modes"),
        Some(&json!(["auto", "low", "high"]))
    );
    assert_eq!(
        info.capabilities.get("preset_modes"),
        Some(&json!(["none", "eco", "away"]))
    );
    // Reported values start unknown.
    assert_eq!(thermostat.state(), None);

    assert!(thermostat.on_message("mode", "heat"));
    assert!(thermostat.on_message("temperature", "21.5"));
    assert!(thermostat.on_message("current_temperature", "19.87"));
    assert!(thermostat.on_message("action", "heating"));
    assert!(thermostat.on_message("fan_mode", "auto"));
    assert!(thermostat.on_message("preset_mode", "eco"));
    assert_eq!(thermostat.state().as_deref(), Some("heat"));
    let attributes = thermostat.attributes();
    assert_eq!(attributes.get("temperature"), Some(&json!(21.5)));
    assert_eq!(attributes.get("current_temperature"), Some(&json!(19.9)));
    assert_eq!(attributes.get("hvac_action"), Some(&json!("heating")));
    assert_eq!(attributes.get("fan_mode"), Some(&json!("auto")));
    assert_eq!(attributes.get("preset_mode"), Some(&json!("eco")));

    // Unlisted modes and actions, non-numbers are ignored; None resets.
    assert!(!thermostat.on_message("mode", "dry"));
    assert!(!thermostat.on_message("action", "boiling"));
    assert!(!thermostat.on_message("temperature", "warm"));
    assert!(thermostat.on_message("preset_mode", "None"));
    assert_eq!(
        thermostat.attributes().get("preset_mode"),
        Some(&json!("none"))
    );
    assert!(thermostat.on_message("current_temperature", "None"));
    assert_eq!(
        thermostat.attributes().get("current_temperature"),
        Some(&Value::Null)
    );
}

#[test]
fn each_service_publishes_to_its_topic() {
    let mut thermostat = climate(esphome_thermostat()).expect("valid");
    let base = "hallway/climate/thermostat";
    assert_eq!(
        sent(
            thermostat.as_mut(),
            "set_hvac_mode",
            json!({"hvac_mode": "cool"})
        )
        .expect("listed"),
        vec![pair(&format!("{base}/mode/command"), "cool")]
    );
    assert_eq!(
        sent(
            thermostat.as_mut(),
            "set_temperature",
            json!({"temperature": 22.0, "hvac_mode": "heat"})
        )
        .expect("in range"),
        vec![
            pair(&format!("{base}/mode/command"), "heat"),
            pair(&format!("{base}/target_temperature/command"), "22.0")
        ]
    );
    assert_eq!(
        sent(
            thermostat.as_mut(),
            "set_fan_mode",
            json!({"fan_mode": "high"})
        )
        .expect("listed"),
        vec![pair(&format!("{base}/fan_mode/command"), "high")]
    );
    assert_eq!(
        sent(
            thermostat.as_mut(),
            "set_preset_mode",
            json!({"preset_mode": "away"})
        )
        .expect("listed"),
        vec![pair(&format!("{base}/preset/command"), "away")]
    );
    // Without a power topic, on and off are modes (heat_cool first, as Home Assistant).
    assert_eq!(
        sent(thermostat.as_mut(), "turn_on", json!({})).expect("a mode"),
        vec![pair(&format!("{base}/mode/command"), "heat_cool")]
    );
    assert_eq!(
        sent(thermostat.as_mut(), "turn_off", json!({})).expect("off"),
        vec![pair(&format!("{base}/mode/command"), "off")]
    );
    thermostat.on_message("mode", "off");
    assert_eq!(
        sent(thermostat.as_mut(), "toggle", json!({})).expect("a mode"),
        vec![pair(&format!("{base}/mode/command"), "heat_cool")]
    );
    // Everything is reported: nothing commanded is shown.
    assert_eq!(thermostat.state().as_deref(), Some("off"));
    assert_eq!(
        thermostat.attributes().get("temperature"),
        Some(&Value::Null)
    );
}

#[test]
fn out_of_range_temperatures_and_unlisted_modes_are_refused() {
    let mut thermostat = climate(esphome_thermostat()).expect("valid");
    for (service, data) in [
        ("set_temperature", json!({"temperature": 31})),
        ("set_hvac_mode", json!({"hvac_mode": "dry"})),
        ("set_fan_mode", json!({"fan_mode": "turbo"})),
        ("set_preset_mode", json!({"preset_mode": "boost"})),
        (
            "set_temperature",
            json!({"temperature": 20, "hvac_mode": "fan_only"}),
        ),
    ] {
        let error = sent(thermostat.as_mut(), service, data).expect_err("refused");
        assert!(matches!(error, ServiceError::Validation(_)), "{service}");
    }
    assert!(thermostat.command("set_humidity", &Map::new()).is_err());
}

/// A Tasmota-driven heater with a power topic and no state topics.
#[test]
fn without_state_topics_it_keeps_what_it_commanded_and_powers_through_its_topic() {
    let mut heater = climate(json!({
        "name": "Heater",
        "modes": ["off", "heat"],
        "mode_command_topic": "cmnd/heater/MODE",
        "temperature_command_topic": "cmnd/heater/TEMP",
        "power_command_topic": "cmnd/heater/POWER",
        "payload_on": "1",
        "payload_off": "0",
        "temperature_unit": "F"
    }))
    .expect("valid");
    assert!(heater.topics().is_empty());
    // Home Assistant's starting values: off, 21 °C in the unit, fan low; whole degrees in F.
    assert_eq!(heater.state().as_deref(), Some("off"));
    assert_eq!(heater.attributes().get("temperature"), Some(&json!(70)));
    let mut info = EntityInfo::new("climate");
    heater.describe(&mut info);
    assert_eq!(info.capabilities.get("min_temp"), Some(&json!(45)));
    assert_eq!(info.capabilities.get("max_temp"), Some(&json!(95)));
    assert_eq!(info.supported_features, 1 | 128 | 256);

    sent(
        heater.as_mut(),
        "set_hvac_mode",
        json!({"hvac_mode": "heat"}),
    )
    .expect("listed");
    assert_eq!(heater.state().as_deref(), Some("heat"));
    sent(
        heater.as_mut(),
        "set_temperature",
        json!({"temperature": 68}),
    )
    .expect("in range");
    assert_eq!(heater.attributes().get("temperature"), Some(&json!(68)));
    assert_eq!(
        sent(heater.as_mut(), "turn_off", json!({})).expect("power"),
        vec![pair("cmnd/heater/POWER", "0")]
    );
    assert_eq!(
        sent(heater.as_mut(), "turn_on", json!({})).expect("power"),
        vec![pair("cmnd/heater/POWER", "1")]
    );
}

#[test]
fn defaults_and_bad_configs() {
    let plain = climate(json!({"mode_command_topic": "c/mode"})).expect("valid");
    let mut info = EntityInfo::new("climate");
    plain.describe(&mut info);
    assert_eq!(
        info.capabilities.get("hvac_modes"),
        Some(&json!(["auto", "off", "cool", "heat", "dry", "fan_only"]))
    );
    assert_eq!(info.capabilities.get("min_temp"), Some(&json!(7.0)));
    assert_eq!(info.capabilities.get("max_temp"), Some(&json!(35.0)));
    assert_eq!(info.capabilities.get("target_temp_step"), Some(&json!(1.0)));
    assert_eq!(info.supported_features, 128 | 256);

    for (config, field) in [
        (json!({"modes": ["heat", "boost"]}), "modes"),
        (json!({"preset_modes": ["eco"]}), "preset_modes"),
        (
            json!({"preset_mode_command_topic": "p", "preset_modes": ["none"]}),
            "preset_modes",
        ),
        (json!({"precision": 0.25}), "precision"),
        (json!({"temperature_unit": "K"}), "temperature_unit"),
        (json!({"min_temp": 30, "max_temp": 10}), "max_temp"),
    ] {
        assert!(
            matches!(climate(config), Err(ConfigError::Invalid { field: got, .. }) if got == field),
            "{field} is refused"
        );
    }
}
