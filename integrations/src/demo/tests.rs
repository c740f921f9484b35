//! Tests running the demo in-process: flow, entry, entities in every proxyable domain, every
//! domain service, registries, queries, events, store, unload and restart.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::{Map, Value, json};

use homecore::config_entries::SOURCE_USER;
use homecore::event::MATCH_ALL;
use homecore::{
    ConfigEntry, ConfigEntryState, Core, CoreConfig, EntityDescription, EntityObserver, FieldType,
    FlowContext, FlowStep, MemoryStoreBackend, ServiceError, ServiceRequest, ServiceTarget,
    catalog,
};

use super::*;

/// Generous bound on waits for work the core does on its own tasks.
const HANG_GUARD: Duration = Duration::from_secs(10);

fn memory_core() -> Core {
    Core::builder(CoreConfig::new("unused"))
        .store_backend(Arc::new(MemoryStoreBackend::new()))
        .integrations(crate::builtin())
        .build()
        .unwrap()
}

fn file_core(dir: &std::path::Path) -> Core {
    Core::builder(CoreConfig::new(dir))
        .integrations(crate::builtin())
        .build()
        .unwrap()
}

fn map(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("expected an object, got {other}"),
    }
}

/// Runs the config flow through the menu and the form; returns the created entry.
async fn set_up(core: &Core) -> ConfigEntry {
    let flows = core.config_entries().flow();
    let menu = flows
        .init(DOMAIN, FlowContext::new(SOURCE_USER), None)
        .await
        .unwrap();
    let form = flows
        .configure(
            &menu.flow_id,
            Some(map(json!({"next_step_id": "configure"}))),
        )
        .await
        .unwrap();
    let done = flows
        .configure(
            &form.flow_id,
            Some(map(
                json!({"name": "My demo", "advanced": {"update_interval": 60}}),
            )),
        )
        .await
        .unwrap();
    let FlowStep::CreateEntry { entry_id, .. } = done.step else {
        panic!("expected an entry, got {:?}", done.step);
    };
    core.config_entries().entry(&entry_id.unwrap()).unwrap()
}

fn id(core: &Core, domain: &str, key: &str) -> String {
    core.entity_registry()
        .entity_id_for(domain, DOMAIN, key)
        .unwrap_or_else(|| panic!("{domain} {key} is not registered"))
}

fn state(core: &Core, entity_id: &str) -> Arc<homecore::State> {
    core.states()
        .get(entity_id)
        .unwrap_or_else(|| panic!("{entity_id} has no state"))
}

async fn call(
    core: &Core,
    domain: &str,
    service: &str,
    entity_id: &str,
    data: Value,
    response: bool,
) -> Result<Option<Map<String, Value>>, ServiceError> {
    let mut request = ServiceRequest::new(domain, service)
        .with_data(map(data))
        .with_target(ServiceTarget::entities([entity_id]));
    if response {
        request = request.with_response();
    }
    core.services().call(request).await
}

#[tokio::test]
async fn config_flow_has_a_menu_a_form_with_a_selector_and_a_section_and_creates_version_2() {
    let core = memory_core();
    core.start().await.unwrap();
    let flows = core.config_entries().flow();
    let menu = flows
        .init(DOMAIN, FlowContext::new(SOURCE_USER), None)
        .await
        .unwrap();
    let FlowStep::Menu { menu_options, .. } = &menu.step else {
        panic!("expected a menu, got {:?}", menu.step);
    };
    let offered: Vec<&str> = menu_options.iter().map(|o| o.step_id.as_str()).collect();
    assert_eq!(offered, ["configure", "defaults"]);
    let form = flows
        .configure(
            &menu.flow_id,
            Some(map(json!({"next_step_id": "configure"}))),
        )
        .await
        .unwrap();
    let FlowStep::Form {
        step_id,
        data_schema: Some(schema),
        ..
    } = &form.step
    else {
        panic!("expected a form, got {:?}", form.step);
    };
    assert_eq!(step_id, "configure");
    assert_eq!(
        schema
            .field("mode")
            .unwrap()
            .selector
            .as_ref()
            .unwrap()
            .kind,
        "select"
    );
    assert!(matches!(
        schema.field("advanced").unwrap().kind,
        FieldType::Section { .. }
    ));
    let bad = flows
        .configure(
            &form.flow_id,
            Some(map(json!({"advanced": {"update_interval": 1}}))),
        )
        .await;
    assert!(bad.is_err(), "the section's field is validated");
    let done = flows
        .configure(&form.flow_id, Some(map(json!({"name": "My demo"}))))
        .await
        .unwrap();
    let FlowStep::CreateEntry {
        version,
        minor_version,
        options,
        data,
        entry_id,
        ..
    } = done.step
    else {
        panic!("expected an entry");
    };
    assert_eq!((version, minor_version), (2, 1));
    assert_eq!(options, config_flow::default_options());
    assert_eq!(data["advanced"]["update_interval"], json!(30));
    let entry = core.config_entries().entry(&entry_id.unwrap()).unwrap();
    assert_eq!(entry.state, ConfigEntryState::Loaded);
    assert_eq!(entry.version, 2);

    let again = flows
        .init(DOMAIN, FlowContext::new(SOURCE_USER), None)
        .await
        .unwrap();
    assert_eq!(again.step, FlowStep::abort("single_instance_allowed"));
}

#[tokio::test]
async fn options_flow_updates_options_and_reloads_the_entry() {
    let core = memory_core();
    core.start().await.unwrap();
    let entry = set_up(&core).await;
    let options = core.config_entries().options();
    let form = options.init(&entry.entry_id, None).await.unwrap();
    assert!(matches!(form.step, FlowStep::Form { .. }));
    let mut changes = core.bus().subscribe(MATCH_ALL).unwrap();
    options
        .configure(
            &form.flow_id,
            Some(map(
                json!({"announce_presses": false, "volume_step": 5, "theme": "dark"}),
            )),
        )
        .await
        .unwrap();
    let stored = core.config_entries().entry(&entry.entry_id).unwrap();
    assert_eq!(stored.options["theme"], json!("dark"));
    // The reload removes and re-adds every entity: wait for the switch to come back.
    let switch = id(&core, "switch", "switch_ac");
    tokio::time::timeout(HANG_GUARD, async {
        let mut removed = false;
        while let Some(event) = changes.recv().await {
            if event.event_type == "state_changed" && event.data["entity_id"] == json!(switch) {
                if event.data["new_state"].is_null() {
                    removed = true;
                } else if removed {
                    break;
                }
            }
        }
    })
    .await
    .expect("the entry reloaded");
    // With presses no longer announced, a press fires no event.
    let mut pressed = core.bus().subscribe(EVENT_BUTTON_PRESSED).unwrap();
    let button = id(&core, "button", "button_doorbell");
    call(&core, "button", "press", &button, json!({}), false)
        .await
        .unwrap();
    assert!(pressed.try_recv().is_none());
}

#[tokio::test]
async fn entities_devices_and_registry_entries_exist_in_every_proxyable_domain() {
    let core = memory_core();
    core.start().await.unwrap();
    let entry = set_up(&core).await;
    let proxyable = catalog().proxyable_domains();
    assert_eq!(proxyable.len(), 31);
    for domain in &proxyable {
        let states = core.states().all(Some(domain));
        assert!(!states.is_empty(), "no {domain} entity");
        for state in states {
            assert_ne!(state.state, "unavailable", "{}", state.entity_id);
            let registered = core.entity_registry().get(&state.entity_id).unwrap();
            assert_eq!(
                registered.config_entry_id.as_deref(),
                Some(entry.entry_id.as_str())
            );
            assert_eq!(registered.platform, DOMAIN);
            assert!(
                registered.device_id.is_some(),
                "{} has no device",
                state.entity_id
            );
            assert!(state.attributes.contains_key("friendly_name"));
        }
    }
    let devices = core
        .device_registry()
        .devices_for_config_entry(&entry.entry_id);
    assert_eq!(devices.len(), 4);
    let hub = devices
        .iter()
        .find(|device| device.name.as_deref() == Some("Demo Hub"))
        .unwrap();
    assert_eq!(hub.manufacturer.as_deref(), Some("Demo Industries"));
    assert_eq!(hub.serial_number.as_deref(), Some("DH1-0001"));
    for device in devices.iter().filter(|device| device.id != hub.id) {
        assert_eq!(device.via_device_id.as_deref(), Some(hub.id.as_str()));
    }
    // Names are relative to the device; the state carries features, units and classes.
    let light = state(&core, &id(&core, "light", "light_ceiling"));
    assert_eq!(
        light.attributes["friendly_name"],
        json!("Living Room Ceiling light")
    );
    assert_eq!(light.attributes["supported_features"], json!(44));
    assert_eq!(light.attributes["effect_list"], json!(["rainbow", "none"]));
    let temperature = state(&core, &id(&core, "sensor", "sensor_outside_temperature"));
    assert_eq!(temperature.state, "15.6");
    assert_eq!(temperature.attributes["unit_of_measurement"], json!("°C"));
    assert_eq!(temperature.attributes["state_class"], json!("measurement"));
    assert_eq!(temperature.attributes["device_class"], json!("temperature"));
    let calendar = state(&core, &id(&core, "calendar", "calendar_family"));
    assert_eq!(
        calendar.state, "on",
        "the team meeting is in progress at the demo epoch"
    );
    assert_eq!(calendar.attributes["message"], json!("Team meeting"));
    let loaded: Vec<String> = core
        .integrations()
        .loaded()
        .into_iter()
        .map(|manifest| manifest.domain)
        .collect();
    assert_eq!(loaded, [DOMAIN]);
}

/// One service call and what Home Assistant would show afterwards.
struct Step {
    domain: &'static str,
    key: &'static str,
    service: &'static str,
    data: Value,
    state: Option<&'static str>,
    attributes: Value,
}

fn step(
    domain: &'static str,
    key: &'static str,
    service: &'static str,
    data: Value,
    state: Option<&'static str>,
    attributes: Value,
) -> Step {
    Step {
        domain,
        key,
        service,
        data,
        state,
        attributes,
    }
}

/// Every service of every proxyable domain, in an order where each changes something.
fn script() -> Vec<Step> {
    let none = json!({});
    vec![
        step(
            "alarm_control_panel",
            "alarm_security",
            "alarm_arm_home",
            none.clone(),
            Some("armed_home"),
            none.clone(),
        ),
        step(
            "alarm_control_panel",
            "alarm_security",
            "alarm_arm_away",
            none.clone(),
            Some("armed_away"),
            none.clone(),
        ),
        step(
            "alarm_control_panel",
            "alarm_security",
            "alarm_arm_night",
            none.clone(),
            Some("armed_night"),
            none.clone(),
        ),
        step(
            "alarm_control_panel",
            "alarm_security",
            "alarm_arm_vacation",
            none.clone(),
            Some("armed_vacation"),
            none.clone(),
        ),
        step(
            "alarm_control_panel",
            "alarm_security",
            "alarm_arm_custom_bypass",
            none.clone(),
            Some("armed_custom_bypass"),
            none.clone(),
        ),
        step(
            "alarm_control_panel",
            "alarm_security",
            "alarm_trigger",
            none.clone(),
            Some("triggered"),
            none.clone(),
        ),
        step(
            "alarm_control_panel",
            "alarm_security",
            "alarm_disarm",
            json!({"code": ALARM_CODE}),
            Some("disarmed"),
            none.clone(),
        ),
        step(
            "button",
            "button_doorbell",
            "press",
            none.clone(),
            Some("2024-06-01T12:00:01+00:00"),
            none.clone(),
        ),
        step(
            "calendar",
            "calendar_family",
            "create_event",
            json!({"summary": "Dentist", "start_date_time": "2024-06-01T11:50:00+00:00", "end_date_time": "2024-06-01T12:10:00+00:00"}),
            Some("on"),
            json!({"message": "Team meeting"}),
        ),
        step(
            "calendar",
            "calendar_family",
            "get_events",
            json!({"start_date_time": "2024-06-01T00:00:00+00:00", "end_date_time": "2024-06-02T00:00:00+00:00"}),
            Some("on"),
            none.clone(),
        ),
        step(
            "climate",
            "climate_thermostat",
            "set_hvac_mode",
            json!({"hvac_mode": "cool"}),
            Some("cool"),
            none.clone(),
        ),
        step(
            "climate",
            "climate_thermostat",
            "set_temperature",
            json!({"temperature": 23.5}),
            Some("cool"),
            json!({"temperature": 23.5}),
        ),
        step(
            "climate",
            "climate_thermostat",
            "set_humidity",
            json!({"humidity": 45}),
            Some("cool"),
            json!({"humidity": 45}),
        ),
        step(
            "climate",
            "climate_thermostat",
            "set_fan_mode",
            json!({"fan_mode": "auto_low"}),
            Some("cool"),
            json!({"fan_mode": "auto_low"}),
        ),
        step(
            "climate",
            "climate_thermostat",
            "set_preset_mode",
            json!({"preset_mode": "eco"}),
            Some("cool"),
            json!({"preset_mode": "eco"}),
        ),
        step(
            "climate",
            "climate_thermostat",
            "set_swing_mode",
            json!({"swing_mode": "both"}),
            Some("cool"),
            json!({"swing_mode": "both"}),
        ),
        step(
            "climate",
            "climate_thermostat",
            "set_swing_horizontal_mode",
            json!({"swing_horizontal_mode": "on"}),
            Some("cool"),
            json!({"swing_horizontal_mode": "on"}),
        ),
        step(
            "climate",
            "climate_thermostat",
            "turn_off",
            none.clone(),
            Some("off"),
            none.clone(),
        ),
        step(
            "climate",
            "climate_thermostat",
            "turn_on",
            none.clone(),
            Some("cool"),
            none.clone(),
        ),
        step(
            "climate",
            "climate_thermostat",
            "toggle",
            none.clone(),
            Some("off"),
            none.clone(),
        ),
        step(
            "cover",
            "cover_living_room_window",
            "close_cover",
            none.clone(),
            Some("closed"),
            json!({"current_position": 0}),
        ),
        step(
            "cover",
            "cover_living_room_window",
            "open_cover",
            none.clone(),
            Some("open"),
            json!({"current_position": 100}),
        ),
        step(
            "cover",
            "cover_living_room_window",
            "set_cover_position",
            json!({"position": 30}),
            Some("open"),
            json!({"current_position": 30}),
        ),
        step(
            "cover",
            "cover_living_room_window",
            "stop_cover",
            none.clone(),
            Some("open"),
            json!({"current_position": 30}),
        ),
        step(
            "cover",
            "cover_living_room_window",
            "toggle",
            none.clone(),
            Some("closed"),
            json!({"current_position": 0}),
        ),
        step(
            "cover",
            "cover_living_room_window",
            "close_cover_tilt",
            none.clone(),
            Some("closed"),
            json!({"current_tilt_position": 0}),
        ),
        step(
            "cover",
            "cover_living_room_window",
            "open_cover_tilt",
            none.clone(),
            Some("closed"),
            json!({"current_tilt_position": 100}),
        ),
        step(
            "cover",
            "cover_living_room_window",
            "set_cover_tilt_position",
            json!({"tilt_position": 40}),
            Some("closed"),
            json!({"current_tilt_position": 40}),
        ),
        step(
            "cover",
            "cover_living_room_window",
            "stop_cover_tilt",
            none.clone(),
            Some("closed"),
            json!({"current_tilt_position": 40}),
        ),
        step(
            "cover",
            "cover_living_room_window",
            "toggle_cover_tilt",
            none.clone(),
            Some("closed"),
            json!({"current_tilt_position": 0}),
        ),
        step(
            "date",
            "date_appointment",
            "set_value",
            json!({"date": "2024-07-04"}),
            Some("2024-07-04"),
            none.clone(),
        ),
        step(
            "datetime",
            "datetime_alarm",
            "set_value",
            json!({"datetime": "2024-07-04T06:15:00+02:00"}),
            Some("2024-07-04T04:15:00+00:00"),
            none.clone(),
        ),
        step(
            "fan",
            "fan_ceiling",
            "set_percentage",
            json!({"percentage": 33}),
            Some("on"),
            json!({"percentage": 33}),
        ),
        step(
            "fan",
            "fan_ceiling",
            "increase_speed",
            none.clone(),
            Some("on"),
            json!({"percentage": 66}),
        ),
        step(
            "fan",
            "fan_ceiling",
            "decrease_speed",
            json!({"percentage_step": 50}),
            Some("on"),
            json!({"percentage": 16}),
        ),
        step(
            "fan",
            "fan_ceiling",
            "oscillate",
            json!({"oscillating": true}),
            Some("on"),
            json!({"oscillating": true}),
        ),
        step(
            "fan",
            "fan_ceiling",
            "set_direction",
            json!({"direction": "reverse"}),
            Some("on"),
            json!({"direction": "reverse"}),
        ),
        step(
            "fan",
            "fan_ceiling",
            "set_preset_mode",
            json!({"preset_mode": "sleep"}),
            Some("on"),
            json!({"preset_mode": "sleep", "percentage": null}),
        ),
        step(
            "fan",
            "fan_ceiling",
            "turn_off",
            none.clone(),
            Some("off"),
            json!({"percentage": 0}),
        ),
        step(
            "fan",
            "fan_ceiling",
            "turn_on",
            none.clone(),
            Some("on"),
            json!({"percentage": 67}),
        ),
        step(
            "fan",
            "fan_ceiling",
            "toggle",
            none.clone(),
            Some("off"),
            none.clone(),
        ),
        step(
            "humidifier",
            "humidifier_dehumidifier",
            "set_humidity",
            json!({"humidity": 40}),
            Some("on"),
            json!({"humidity": 40}),
        ),
        step(
            "humidifier",
            "humidifier_dehumidifier",
            "set_mode",
            json!({"mode": "eco"}),
            Some("on"),
            json!({"mode": "eco"}),
        ),
        step(
            "humidifier",
            "humidifier_dehumidifier",
            "turn_off",
            none.clone(),
            Some("off"),
            none.clone(),
        ),
        step(
            "humidifier",
            "humidifier_dehumidifier",
            "turn_on",
            none.clone(),
            Some("on"),
            none.clone(),
        ),
        step(
            "humidifier",
            "humidifier_dehumidifier",
            "toggle",
            none.clone(),
            Some("off"),
            none.clone(),
        ),
        step(
            "lawn_mower",
            "lawn_mower_mower",
            "start_mowing",
            none.clone(),
            Some("mowing"),
            none.clone(),
        ),
        step(
            "lawn_mower",
            "lawn_mower_mower",
            "pause",
            none.clone(),
            Some("paused"),
            none.clone(),
        ),
        step(
            "lawn_mower",
            "lawn_mower_mower",
            "dock",
            none.clone(),
            Some("docked"),
            none.clone(),
        ),
        step(
            "light",
            "light_ceiling",
            "turn_on",
            json!({"brightness_pct": 50, "rgb_color": [255, 0, 0]}),
            Some("on"),
            json!({"brightness": 128, "color_mode": "hs", "hs_color": [0.0, 100.0], "rgb_color": [255, 0, 0]}),
        ),
        step(
            "light",
            "light_ceiling",
            "turn_on",
            json!({"color_temp_kelvin": 3000, "effect": "rainbow"}),
            Some("on"),
            json!({"color_mode": "color_temp", "color_temp_kelvin": 3000, "hs_color": null, "effect": "rainbow"}),
        ),
        step(
            "light",
            "light_ceiling",
            "turn_off",
            none.clone(),
            Some("off"),
            json!({"brightness": null, "color_mode": null}),
        ),
        step(
            "light",
            "light_ceiling",
            "toggle",
            none.clone(),
            Some("on"),
            json!({"brightness": 128}),
        ),
        step(
            "lock",
            "lock_front_door",
            "unlock",
            none.clone(),
            Some("unlocked"),
            none.clone(),
        ),
        step(
            "lock",
            "lock_front_door",
            "lock",
            none.clone(),
            Some("locked"),
            none.clone(),
        ),
        step(
            "lock",
            "lock_front_door",
            "open",
            none.clone(),
            Some("open"),
            none.clone(),
        ),
        step(
            "media_player",
            "media_player_living_room",
            "media_pause",
            none.clone(),
            Some("paused"),
            none.clone(),
        ),
        step(
            "media_player",
            "media_player_living_room",
            "media_play",
            none.clone(),
            Some("playing"),
            none.clone(),
        ),
        step(
            "media_player",
            "media_player_living_room",
            "media_play_pause",
            none.clone(),
            Some("paused"),
            none.clone(),
        ),
        step(
            "media_player",
            "media_player_living_room",
            "media_stop",
            none.clone(),
            Some("idle"),
            none.clone(),
        ),
        step(
            "media_player",
            "media_player_living_room",
            "volume_set",
            json!({"volume_level": 0.3}),
            Some("idle"),
            json!({"volume_level": 0.3}),
        ),
        step(
            "media_player",
            "media_player_living_room",
            "volume_up",
            none.clone(),
            Some("idle"),
            json!({"volume_level": 0.4}),
        ),
        step(
            "media_player",
            "media_player_living_room",
            "volume_down",
            none.clone(),
            Some("idle"),
            json!({"volume_level": 0.3}),
        ),
        step(
            "media_player",
            "media_player_living_room",
            "volume_mute",
            json!({"is_volume_muted": true}),
            Some("idle"),
            json!({"is_volume_muted": true}),
        ),
        step(
            "media_player",
            "media_player_living_room",
            "media_next_track",
            none.clone(),
            Some("idle"),
            json!({"media_track": 2, "media_title": "Track 2"}),
        ),
        step(
            "media_player",
            "media_player_living_room",
            "media_previous_track",
            none.clone(),
            Some("idle"),
            json!({"media_track": 1}),
        ),
        step(
            "media_player",
            "media_player_living_room",
            "media_seek",
            json!({"seek_position": 42}),
            Some("idle"),
            json!({"media_position": 42.0}),
        ),
        step(
            "media_player",
            "media_player_living_room",
            "select_source",
            json!({"source": "TV"}),
            Some("idle"),
            json!({"source": "TV"}),
        ),
        step(
            "media_player",
            "media_player_living_room",
            "select_sound_mode",
            json!({"sound_mode": "Movie"}),
            Some("idle"),
            json!({"sound_mode": "Movie"}),
        ),
        step(
            "media_player",
            "media_player_living_room",
            "shuffle_set",
            json!({"shuffle": true}),
            Some("idle"),
            json!({"shuffle": true}),
        ),
        step(
            "media_player",
            "media_player_living_room",
            "repeat_set",
            json!({"repeat": "all"}),
            Some("idle"),
            json!({"repeat": "all"}),
        ),
        step(
            "media_player",
            "media_player_living_room",
            "play_media",
            json!({"media_content_id": "track-3", "media_content_type": "music"}),
            Some("playing"),
            json!({"media_content_id": "track-3"}),
        ),
        step(
            "media_player",
            "media_player_living_room",
            "join",
            json!({"group_members": ["media_player.kitchen"]}),
            Some("playing"),
            json!({"group_members": ["media_player.kitchen"]}),
        ),
        step(
            "media_player",
            "media_player_living_room",
            "unjoin",
            none.clone(),
            Some("playing"),
            json!({"group_members": []}),
        ),
        step(
            "media_player",
            "media_player_living_room",
            "browse_media",
            none.clone(),
            Some("playing"),
            none.clone(),
        ),
        step(
            "media_player",
            "media_player_living_room",
            "search_media",
            json!({"search_query": "track 2"}),
            Some("playing"),
            none.clone(),
        ),
        step(
            "media_player",
            "media_player_living_room",
            "clear_playlist",
            none.clone(),
            Some("idle"),
            json!({"media_content_id": null}),
        ),
        step(
            "media_player",
            "media_player_living_room",
            "turn_off",
            none.clone(),
            Some("off"),
            none.clone(),
        ),
        step(
            "media_player",
            "media_player_living_room",
            "turn_on",
            none.clone(),
            Some("playing"),
            none.clone(),
        ),
        step(
            "media_player",
            "media_player_living_room",
            "toggle",
            none.clone(),
            Some("off"),
            none.clone(),
        ),
        step(
            "notify",
            "notify_display",
            "send_message",
            json!({"message": "Dinner is ready", "title": "Kitchen"}),
            Some("2024-06-01T12:00:01+00:00"),
            none.clone(),
        ),
        step(
            "number",
            "number_volume",
            "set_value",
            json!({"value": 55}),
            Some("55.0"),
            none.clone(),
        ),
        step(
            "remote",
            "remote_tv",
            "turn_on",
            json!({"activity": "Music"}),
            Some("on"),
            json!({"current_activity": "Music"}),
        ),
        step(
            "remote",
            "remote_tv",
            "send_command",
            json!({"command": ["volume_up"]}),
            Some("on"),
            none.clone(),
        ),
        step(
            "remote",
            "remote_tv",
            "learn_command",
            json!({"device": "tv", "command": ["power"]}),
            Some("on"),
            none.clone(),
        ),
        step(
            "remote",
            "remote_tv",
            "delete_command",
            json!({"device": "tv", "command": ["power"]}),
            Some("on"),
            none.clone(),
        ),
        step(
            "remote",
            "remote_tv",
            "turn_off",
            none.clone(),
            Some("off"),
            none.clone(),
        ),
        step(
            "remote",
            "remote_tv",
            "toggle",
            none.clone(),
            Some("on"),
            none.clone(),
        ),
        step(
            "scene",
            "scene_movie_night",
            "turn_on",
            none.clone(),
            Some("2024-06-01T12:00:01+00:00"),
            none.clone(),
        ),
        step(
            "select",
            "select_speed",
            "select_option",
            json!({"option": "light_speed"}),
            Some("light_speed"),
            none.clone(),
        ),
        step(
            "select",
            "select_speed",
            "select_next",
            none.clone(),
            Some("ridiculous_speed"),
            none.clone(),
        ),
        step(
            "select",
            "select_speed",
            "select_last",
            none.clone(),
            Some("ludicrous_speed"),
            none.clone(),
        ),
        step(
            "select",
            "select_speed",
            "select_first",
            none.clone(),
            Some("light_speed"),
            none.clone(),
        ),
        step(
            "select",
            "select_speed",
            "select_previous",
            none.clone(),
            Some("ludicrous_speed"),
            none.clone(),
        ),
        step(
            "siren",
            "siren_alarm",
            "turn_on",
            json!({"tone": "fire"}),
            Some("on"),
            none.clone(),
        ),
        step(
            "siren",
            "siren_alarm",
            "turn_off",
            none.clone(),
            Some("off"),
            none.clone(),
        ),
        step(
            "siren",
            "siren_alarm",
            "toggle",
            none.clone(),
            Some("on"),
            none.clone(),
        ),
        step(
            "switch",
            "switch_ac",
            "turn_on",
            none.clone(),
            Some("on"),
            none.clone(),
        ),
        step(
            "switch",
            "switch_ac",
            "turn_off",
            none.clone(),
            Some("off"),
            none.clone(),
        ),
        step(
            "switch",
            "switch_ac",
            "toggle",
            none.clone(),
            Some("on"),
            none.clone(),
        ),
        step(
            "text",
            "text_message",
            "set_value",
            json!({"value": "Goodbye"}),
            Some("Goodbye"),
            none.clone(),
        ),
        step(
            "time",
            "time_wake_up",
            "set_value",
            json!({"time": "06:45"}),
            Some("06:45:00"),
            none.clone(),
        ),
        step(
            "update",
            "update_firmware",
            "skip",
            none.clone(),
            Some("off"),
            json!({"skipped_version": "1.3.0"}),
        ),
        step(
            "update",
            "update_firmware",
            "clear_skipped",
            none.clone(),
            Some("on"),
            json!({"skipped_version": null}),
        ),
        step(
            "update",
            "update_firmware",
            "install",
            json!({"backup": true}),
            Some("off"),
            json!({"installed_version": "1.3.0"}),
        ),
        step(
            "vacuum",
            "vacuum_robot",
            "start",
            none.clone(),
            Some("cleaning"),
            none.clone(),
        ),
        step(
            "vacuum",
            "vacuum_robot",
            "pause",
            none.clone(),
            Some("paused"),
            none.clone(),
        ),
        step(
            "vacuum",
            "vacuum_robot",
            "clean_spot",
            none.clone(),
            Some("cleaning"),
            none.clone(),
        ),
        step(
            "vacuum",
            "vacuum_robot",
            "locate",
            none.clone(),
            Some("cleaning"),
            none.clone(),
        ),
        step(
            "vacuum",
            "vacuum_robot",
            "send_command",
            json!({"command": "spin"}),
            Some("cleaning"),
            none.clone(),
        ),
        step(
            "vacuum",
            "vacuum_robot",
            "set_fan_speed",
            json!({"fan_speed": "max"}),
            Some("cleaning"),
            json!({"fan_speed": "max"}),
        ),
        step(
            "vacuum",
            "vacuum_robot",
            "stop",
            none.clone(),
            Some("idle"),
            none.clone(),
        ),
        step(
            "vacuum",
            "vacuum_robot",
            "return_to_base",
            none.clone(),
            Some("returning"),
            none.clone(),
        ),
        step(
            "valve",
            "valve_water_main",
            "close_valve",
            none.clone(),
            Some("closed"),
            json!({"current_position": 0}),
        ),
        step(
            "valve",
            "valve_water_main",
            "open_valve",
            none.clone(),
            Some("open"),
            json!({"current_position": 100}),
        ),
        step(
            "valve",
            "valve_water_main",
            "set_valve_position",
            json!({"position": 25}),
            Some("open"),
            json!({"current_position": 25}),
        ),
        step(
            "valve",
            "valve_water_main",
            "stop_valve",
            none.clone(),
            Some("open"),
            json!({"current_position": 25}),
        ),
        step(
            "valve",
            "valve_water_main",
            "toggle",
            none.clone(),
            Some("closed"),
            json!({"current_position": 0}),
        ),
        step(
            "water_heater",
            "water_heater_boiler",
            "set_temperature",
            json!({"temperature": 55}),
            Some("eco"),
            json!({"temperature": 55.0}),
        ),
        step(
            "water_heater",
            "water_heater_boiler",
            "set_operation_mode",
            json!({"operation_mode": "performance"}),
            Some("performance"),
            json!({"operation_mode": "performance"}),
        ),
        step(
            "water_heater",
            "water_heater_boiler",
            "set_away_mode",
            json!({"away_mode": true}),
            Some("performance"),
            json!({"away_mode": "on"}),
        ),
        step(
            "water_heater",
            "water_heater_boiler",
            "turn_off",
            none.clone(),
            Some("off"),
            none.clone(),
        ),
        step(
            "water_heater",
            "water_heater_boiler",
            "turn_on",
            none.clone(),
            Some("performance"),
            none.clone(),
        ),
        step(
            "weather",
            "weather_home",
            "get_forecasts",
            json!({"type": "daily"}),
            Some("sunny"),
            none.clone(),
        ),
    ]
}

#[tokio::test]
async fn every_domain_service_changes_state_as_home_assistant_would() {
    let core = memory_core();
    core.start().await.unwrap();
    set_up(&core).await;
    let script = script();
    let covered: BTreeSet<(String, String)> = script
        .iter()
        .map(|step| (step.domain.to_owned(), step.service.to_owned()))
        .collect();
    for domain in catalog().proxyable_domains() {
        for service in &catalog().domain(domain).unwrap().services {
            assert!(
                covered.contains(&(domain.to_owned(), service.name.clone())),
                "{domain}.{} is not exercised",
                service.name
            );
        }
    }
    for step in script {
        let entity_id = id(&core, step.domain, step.key);
        let spec = catalog()
            .domain(step.domain)
            .unwrap()
            .service(step.service)
            .unwrap();
        let wants_response = spec.supports_response != homecore::SupportsResponse::None;
        let response = call(
            &core,
            step.domain,
            step.service,
            &entity_id,
            step.data,
            wants_response,
        )
        .await
        .unwrap_or_else(|err| panic!("{}.{} failed: {err}", step.domain, step.service));
        if wants_response {
            let response = response.expect("a response");
            let own = response.get(&entity_id).expect("keyed by entity id");
            assert!(
                own.as_object().is_some_and(|own| !own.is_empty()),
                "{}.{} answered {own}",
                step.domain,
                step.service
            );
        }
        let current = state(&core, &entity_id);
        if let Some(expected) = step.state {
            assert_eq!(current.state, expected, "{}.{}", step.domain, step.service);
        }
        for (key, value) in map(step.attributes) {
            assert_eq!(
                current.attributes.get(&key),
                Some(&value),
                "{}.{}: attribute {key} of {:?}",
                step.domain,
                step.service,
                current.attributes
            );
        }
    }
    // The button press rang the doorbell event entity.
    let doorbell = state(&core, &id(&core, "event", "event_doorbell"));
    assert_eq!(doorbell.attributes["event_type"], json!("ring"));
}

#[tokio::test]
async fn service_errors_feature_flags_and_indirect_targets_follow_home_assistant() {
    let core = memory_core();
    core.start().await.unwrap();
    let entry = set_up(&core).await;
    let garage = id(&core, "cover", "cover_garage_door");
    let err = call(
        &core,
        "cover",
        "set_cover_position",
        &garage,
        json!({"position": 5}),
        false,
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("does not support action cover.set_cover_position"),
        "{err}"
    );
    let alarm = id(&core, "alarm_control_panel", "alarm_security");
    call(
        &core,
        "alarm_control_panel",
        "alarm_arm_away",
        &alarm,
        json!({}),
        false,
    )
    .await
    .unwrap();
    let wrong = call(
        &core,
        "alarm_control_panel",
        "alarm_disarm",
        &alarm,
        json!({"code": "0000"}),
        false,
    )
    .await;
    assert!(matches!(wrong, Err(ServiceError::Validation(_))));
    assert_eq!(state(&core, &alarm).state, "armed_away");
    let number = id(&core, "number", "number_volume");
    let out_of_range = call(
        &core,
        "number",
        "set_value",
        &number,
        json!({"value": 500}),
        false,
    )
    .await;
    assert!(matches!(out_of_range, Err(ServiceError::Validation(_))));
    let select = id(&core, "select", "select_speed");
    let unknown = call(
        &core,
        "select",
        "select_option",
        &select,
        json!({"option": "warp"}),
        false,
    )
    .await;
    assert!(matches!(unknown, Err(ServiceError::Validation(_))));
    let extra = call(
        &core,
        "switch",
        "turn_on",
        &garage,
        json!({"brightness": 3}),
        false,
    )
    .await;
    assert!(
        matches!(extra, Err(ServiceError::Validation(_))),
        "schema refuses unknown fields"
    );

    // An area reaches entities through their device, skipping ones without the feature.
    let kitchen = core.area_registry().create("Kitchen").unwrap();
    let kitchen_device = core
        .device_registry()
        .devices_for_config_entry(&entry.entry_id)
        .into_iter()
        .find(|device| device.name.as_deref() == Some("Kitchen"))
        .unwrap();
    core.device_registry()
        .update(
            &kitchen_device.id,
            homecore::device_registry::DeviceUpdate {
                area_id: Some(Some(kitchen.id.clone())),
                ..Default::default()
            },
        )
        .unwrap();
    let area = ServiceTarget {
        area_id: vec![kitchen.id.clone()],
        ..ServiceTarget::default()
    };
    core.services()
        .call(ServiceRequest::new("switch", "turn_on").with_target(area.clone()))
        .await
        .unwrap();
    assert_eq!(state(&core, &id(&core, "switch", "switch_ac")).state, "on");
    core.services()
        .call(
            ServiceRequest::new("switch", "turn_off").with_target(ServiceTarget::entities([id(
                &core,
                "switch",
                "switch_decorative_lights",
            )])),
        )
        .await
        .unwrap();
    core.services()
        .call(ServiceRequest::new("switch", "turn_on").with_target(area.clone()))
        .await
        .unwrap();
    assert_eq!(
        state(&core, &id(&core, "switch", "switch_decorative_lights")).state,
        "off",
        "the living room is not in the kitchen"
    );
    // `lock.open` through the area: the kitchen door lacks OPEN and is skipped, not an error.
    core.services()
        .call(ServiceRequest::new("lock", "open").with_target(area))
        .await
        .unwrap();
    assert_eq!(
        state(&core, &id(&core, "lock", "lock_kitchen_door")).state,
        "unlocked"
    );
    // `all` reaches every entity of the domain.
    core.services()
        .call(
            ServiceRequest::new("switch", "turn_off").with_target(ServiceTarget::entities(["all"])),
        )
        .await
        .unwrap();
    for switch in core.states().all(Some("switch")) {
        assert_eq!(switch.state, "off");
    }
    // A device target.
    core.services()
        .call(
            ServiceRequest::new("switch", "turn_on").with_target(ServiceTarget {
                device_id: vec![kitchen_device.id.clone()],
                ..ServiceTarget::default()
            }),
        )
        .await
        .unwrap();
    assert_eq!(state(&core, &id(&core, "switch", "switch_ac")).state, "on");
}

#[tokio::test]
async fn entities_answer_queries_and_services_by_entity_id() {
    let core = memory_core();
    core.start().await.unwrap();
    set_up(&core).await;
    let entities = core.entities();
    let calendar = id(&core, "calendar", "calendar_family");
    let events = entities
        .query_entity(&calendar, "get_events", map(json!({"start_date_time": "2024-06-01T00:00:00+00:00", "end_date_time": "2024-06-03T00:00:00+00:00"})))
        .await
        .unwrap();
    assert_eq!(events["events"].as_array().unwrap().len(), 2);
    let weather = id(&core, "weather", "weather_home");
    let hourly = entities
        .query_entity(&weather, "get_forecasts", map(json!({"type": "hourly"})))
        .await
        .unwrap();
    assert_eq!(
        hourly["forecast"][1]["datetime"],
        json!("2024-06-01T13:00:00+00:00")
    );
    let twice = entities
        .query_entity(
            &weather,
            "get_forecasts",
            map(json!({"type": "twice_daily"})),
        )
        .await;
    assert!(
        twice.is_err(),
        "the demo weather has no twice-daily forecast"
    );
    let player = id(&core, "media_player", "media_player_living_room");
    let library = entities
        .query_entity(&player, "browse_media", Map::new())
        .await
        .unwrap();
    assert_eq!(library["children"].as_array().unwrap().len(), 5);
    let update = id(&core, "update", "update_firmware");
    let notes = entities
        .query_entity(&update, "release_notes", Map::new())
        .await
        .unwrap();
    assert!(notes.as_str().unwrap().contains("1.3.0"));
    let unknown = entities
        .query_entity(&update, "get_events", Map::new())
        .await;
    assert!(matches!(unknown, Err(ServiceError::Validation(_))));

    // A service on one entity by id, bypassing targeting, with the catalog's checks.
    let light = id(&core, "light", "light_ceiling");
    entities
        .call_entity_service(
            &light,
            "turn_on",
            map(json!({"brightness": "100"})),
            None,
            false,
        )
        .await
        .unwrap();
    assert_eq!(state(&core, &light).attributes["brightness"], json!(100));
    let garage = id(&core, "cover", "cover_garage_door");
    assert!(
        entities
            .call_entity_service(&garage, "stop_cover", Map::new(), None, false)
            .await
            .is_err()
    );
    let forecast = entities
        .call_entity_service(
            &weather,
            "get_forecasts",
            map(json!({"type": "daily"})),
            None,
            true,
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(forecast["forecast"].as_array().unwrap().len(), 5);
}

#[tokio::test]
async fn domain_service_events_and_store() {
    let core = memory_core();
    core.start().await.unwrap();
    let entry = set_up(&core).await;
    let mut pressed = core.bus().subscribe(EVENT_BUTTON_PRESSED).unwrap();
    let mut sent = core.bus().subscribe(EVENT_MESSAGE_SENT).unwrap();
    let button = id(&core, "button", "button_doorbell");
    call(&core, "button", "press", &button, json!({}), false)
        .await
        .unwrap();
    call(&core, "button", "press", &button, json!({}), false)
        .await
        .unwrap();
    let event = pressed.try_recv().expect("a demo_button_pressed event");
    assert_eq!(event.data["entity_id"], json!(button));
    assert_eq!(event.data["presses"], json!(1));
    let notify = id(&core, "notify", "notify_display");
    call(
        &core,
        "notify",
        "send_message",
        &notify,
        json!({"message": "hi"}),
        false,
    )
    .await
    .unwrap();
    assert_eq!(sent.try_recv().unwrap().data["message"], json!("hi"));
    assert_eq!(state(&core, &button).state, "2024-06-01T12:00:02+00:00");

    let status = core
        .services()
        .call(ServiceRequest::new(DOMAIN, SERVICE_GET_STATUS).with_response())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status["button_presses"], json!(2));
    assert_eq!(status["title"], json!("My demo"));
    assert_eq!(status["messages"][0]["message"], json!("hi"));
    let without = core
        .services()
        .call(ServiceRequest::new(DOMAIN, SERVICE_GET_STATUS))
        .await;
    assert!(matches!(
        without,
        Err(ServiceError::ResponseRequired { .. })
    ));

    let store = core
        .stores()
        .store(&store_key(&entry.entry_id), 1, 1)
        .unwrap();
    let stored: DemoData = serde_json::from_value(store.load().await.unwrap().unwrap()).unwrap();
    assert_eq!(stored.button_presses, 2);
    let translations = core.translations().get("en", &[DOMAIN]).await;
    assert_eq!(translations[DOMAIN]["title"], json!("Demo"));
}

/// Records what the entity observer seam reports.
#[derive(Default)]
struct Recorder {
    /// Added entity ids.
    added: Mutex<Vec<EntityDescription>>,
    /// Removed entity ids.
    removed: Mutex<Vec<String>>,
}

impl EntityObserver for Recorder {
    fn entity_added(&self, description: &EntityDescription) {
        self.added.lock().push(description.clone());
    }
    fn entity_removed(&self, description: &EntityDescription) {
        self.removed.lock().push(description.entity_id.clone());
    }
}

#[tokio::test]
async fn unload_removes_every_entity_and_service_and_setup_works_again() {
    let core = memory_core();
    core.start().await.unwrap();
    let recorder = Arc::new(Recorder::default());
    let observer = core.entities().add_observer(recorder.clone());
    let entry = set_up(&core).await;
    let live = core.entities().entity_ids(None);
    assert_eq!(recorder.added.lock().len(), live.len());
    let described = recorder.added.lock()[0].clone();
    assert_eq!(described.platform, DOMAIN);
    assert_eq!(
        described.config_entry_id.as_deref(),
        Some(entry.entry_id.as_str())
    );
    assert!(described.info.device_info.is_some());
    assert!(core.services().has_service(DOMAIN, SERVICE_GET_STATUS));

    assert!(core.config_entries().unload(&entry.entry_id).await.unwrap());
    assert!(
        core.states().is_empty(),
        "left: {:?}",
        core.states().entity_ids(None)
    );
    assert!(core.entities().entity_ids(None).is_empty());
    assert!(core.entities().platforms().is_empty());
    assert!(!core.services().has_service(DOMAIN, SERVICE_GET_STATUS));
    let removed: HashSet<String> = recorder.removed.lock().iter().cloned().collect();
    assert_eq!(removed, live.iter().cloned().collect());
    // Registry entries stay, as in Home Assistant; the entity ids are kept for the next setup.
    assert_eq!(
        core.entity_registry()
            .entries_for_config_entry(&entry.entry_id)
            .len(),
        live.len()
    );

    assert!(core.config_entries().setup(&entry.entry_id).await.unwrap());
    assert_eq!(core.entities().entity_ids(None), live);
    observer.remove();
}

#[tokio::test]
async fn a_restart_restores_states_and_stored_data() {
    let dir = tempfile::tempdir().unwrap();
    let (light, number, switch, calendar) = {
        let core = file_core(dir.path());
        core.start().await.unwrap();
        set_up(&core).await;
        let light = id(&core, "light", "light_ceiling");
        let number = id(&core, "number", "number_volume");
        let switch = id(&core, "switch", "switch_ac");
        let calendar = id(&core, "calendar", "calendar_family");
        call(
            &core,
            "light",
            "turn_on",
            &light,
            json!({"brightness": 10, "hs_color": [120, 50]}),
            false,
        )
        .await
        .unwrap();
        call(
            &core,
            "number",
            "set_value",
            &number,
            json!({"value": 7}),
            false,
        )
        .await
        .unwrap();
        call(&core, "switch", "turn_on", &switch, json!({}), false)
            .await
            .unwrap();
        call(
            &core,
            "calendar",
            "create_event",
            &calendar,
            json!({"summary": "Later", "start_date": "2024-06-05", "end_date": "2024-06-06"}),
            false,
        )
        .await
        .unwrap();
        let button = id(&core, "button", "button_doorbell");
        call(&core, "button", "press", &button, json!({}), false)
            .await
            .unwrap();
        assert!(core.stop().await.unwrap().is_empty());
        (light, number, switch, calendar)
    };
    let core = file_core(dir.path());
    core.start().await.unwrap();
    let entry = core.config_entries().entries(Some(DOMAIN)).pop().unwrap();
    assert_eq!(entry.state, ConfigEntryState::Loaded);
    assert_eq!(entry.version, 2);
    let restored = state(&core, &light);
    assert_eq!(restored.state, "on");
    assert_eq!(restored.attributes["brightness"], json!(10));
    assert_eq!(restored.attributes["hs_color"], json!([120.0, 50.0]));
    assert_eq!(state(&core, &number).state, "7.0");
    assert_eq!(state(&core, &switch).state, "on");
    let events = core
        .entities()
        .query_entity(&calendar, "get_events", map(json!({"start_date_time": "2024-06-05T00:00:00+00:00", "end_date_time": "2024-06-06T00:00:00+00:00"})))
        .await
        .unwrap();
    assert_eq!(
        events["events"][0]["summary"],
        json!("Later"),
        "extra data is restored"
    );
    let status = core
        .services()
        .call(ServiceRequest::new(DOMAIN, SERVICE_GET_STATUS).with_response())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status["button_presses"], json!(1));
    core.stop().await.unwrap();
}

#[tokio::test]
async fn a_version_1_entry_is_migrated_to_version_2() {
    let core = memory_core();
    core.start().await.unwrap();
    let mut entry = ConfigEntry::new(DOMAIN, "Old demo", Map::new(), SOURCE_USER);
    entry.version = 1;
    let added = core.config_entries().add(entry).await.unwrap();
    assert_eq!(added.state, ConfigEntryState::Loaded);
    assert_eq!((added.version, added.minor_version), (2, 1));
    assert_eq!(added.data["mode"], json!("standard"));
    assert_eq!(added.data["advanced"]["update_interval"], json!(30));
}

#[test]
fn manifest_lists_every_proxyable_domain_and_is_valid() {
    let demo = DemoIntegration::new();
    let manifest = demo.manifest();
    manifest.validate().unwrap();
    assert_eq!(manifest.platforms.len(), 31);
    assert!(manifest.unproxyable_platforms().is_empty());
    assert_eq!(effects::float_state(42.0), "42.0");
    assert_eq!(effects::float_state(21.5), "21.5");
    assert_eq!(effects::hs_to_rgb(0.0, 100.0), [255, 0, 0]);
    assert_eq!(effects::rgb_to_hs([0.0, 0.0, 255.0]), [240.0, 100.0]);
}
