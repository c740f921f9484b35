//! The demo's devices and entities: one table, at least one entity per proxyable domain.

use std::sync::Weak;

use serde_json::{Map, Value, json};

use homecore::entity_registry::EntityCategory;
use homecore::{EntityDeviceInfo, EntityInfo, catalog};

use super::DemoShared;
use super::effects::calendar_state;
use super::entity::{DemoEntity, DemoState};

/// The integration's domain, used in device identifiers.
const DOMAIN: &str = "demo";

/// The demo's devices: `(key, description)`; the hub comes first so others can be reached through it.
pub(crate) fn devices() -> Vec<(&'static str, EntityDeviceInfo)> {
    let hub = (DOMAIN.to_owned(), "hub".to_owned());
    let room = |key: &str, name: &str, model: &str, area: &str| EntityDeviceInfo {
        identifiers: vec![(DOMAIN.to_owned(), key.to_owned())],
        name: Some(name.to_owned()),
        manufacturer: Some("Demo Industries".to_owned()),
        model: Some(model.to_owned()),
        sw_version: Some("1.0.0".to_owned()),
        via_device: Some(hub.clone()),
        suggested_area: Some(area.to_owned()),
        ..EntityDeviceInfo::default()
    };
    vec![
        (
            "hub",
            EntityDeviceInfo {
                identifiers: vec![hub.clone()],
                connections: vec![("mac".to_owned(), "02:00:00:de:00:01".to_owned())],
                name: Some("Demo Hub".to_owned()),
                manufacturer: Some("Demo Industries".to_owned()),
                model: Some("Hub One".to_owned()),
                model_id: Some("DH-1".to_owned()),
                sw_version: Some("1.2.0".to_owned()),
                hw_version: Some("rev2".to_owned()),
                serial_number: Some("DH1-0001".to_owned()),
                configuration_url: Some("http://demo-hub.local".to_owned()),
                ..EntityDeviceInfo::default()
            },
        ),
        (
            "living_room",
            room("living_room", "Living Room", "Console", "Living Room"),
        ),
        ("kitchen", room("kitchen", "Kitchen", "Panel", "Kitchen")),
        ("garden", room("garden", "Garden", "Station", "Garden")),
    ]
}

/// One row of the entity table.
pub(crate) struct Row {
    /// Unique id (and key within the demo).
    key: &'static str,
    /// Entity domain.
    domain: &'static str,
    /// Name relative to the device.
    name: &'static str,
    /// Key of its device.
    device: &'static str,
    /// Initial state.
    state: Option<&'static str>,
    /// Initial attributes (the keys the entity owns).
    attributes: Value,
    /// Static capabilities.
    capabilities: Value,
    /// Feature flag names (resolved through the catalog).
    features: &'static [&'static str],
    /// Device class.
    device_class: Option<&'static str>,
    /// Unit of the state.
    unit: Option<&'static str>,
    /// Sensor state class.
    state_class: Option<&'static str>,
    /// Config or diagnostic.
    category: Option<EntityCategory>,
    /// Icon.
    icon: Option<&'static str>,
}

fn row(
    domain: &'static str,
    key: &'static str,
    name: &'static str,
    device: &'static str,
    state: Option<&'static str>,
) -> Row {
    Row {
        key,
        domain,
        name,
        device,
        state,
        attributes: json!({}),
        capabilities: json!({}),
        features: &[],
        device_class: None,
        unit: None,
        state_class: None,
        category: None,
        icon: None,
    }
}

impl Row {
    fn attrs(mut self, attributes: Value) -> Self {
        self.attributes = attributes;
        self
    }
    fn caps(mut self, capabilities: Value) -> Self {
        self.capabilities = capabilities;
        self
    }
    fn features(mut self, features: &'static [&'static str]) -> Self {
        self.features = features;
        self
    }
    fn class(mut self, device_class: &'static str) -> Self {
        self.device_class = Some(device_class);
        self
    }
    fn unit(mut self, unit: &'static str, state_class: Option<&'static str>) -> Self {
        self.unit = Some(unit);
        self.state_class = state_class;
        self
    }
    fn category(mut self, category: EntityCategory) -> Self {
        self.category = Some(category);
        self
    }
    fn icon(mut self, icon: &'static str) -> Self {
        self.icon = Some(icon);
        self
    }
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// Every feature flag of `domain`.
const ALL: &[&str] = &["*"];

/// The entity table, in the order entities are added.
pub(crate) fn rows() -> Vec<Row> {
    vec![
        row("alarm_control_panel", "alarm_security", "Security", "hub", Some("disarmed"))
            .features(ALL)
            .attrs(json!({"code_format": "number", "changed_by": null, "code_arm_required": false})),
        row("binary_sensor", "binary_sensor_window", "Window", "living_room", Some("off"))
            .class("window"),
        row("binary_sensor", "binary_sensor_movement", "Movement", "garden", Some("on"))
            .class("motion"),
        row("button", "button_doorbell", "Ring doorbell", "garden", None),
        row("calendar", "calendar_family", "Family", "hub", Some("off"))
            .features(&["CREATE_EVENT"])
            .attrs(json!({"message": null, "all_day": null, "start_time": null, "end_time": null, "location": null, "description": null})),
        row("climate", "climate_thermostat", "Thermostat", "living_room", Some("heat"))
            .features(&["TARGET_TEMPERATURE", "TARGET_TEMPERATURE_RANGE", "TARGET_HUMIDITY", "FAN_MODE", "PRESET_MODE", "SWING_MODE", "TURN_OFF", "TURN_ON", "SWING_HORIZONTAL_MODE"])
            .caps(json!({
                "hvac_modes": ["off", "heat", "cool", "heat_cool", "auto", "dry", "fan_only"],
                "min_temp": 7.0, "max_temp": 35.0, "target_temp_step": 0.5,
                "min_humidity": 30, "max_humidity": 99,
                "fan_modes": ["on_low", "on_high", "auto_low", "auto_high", "off"],
                "preset_modes": ["home", "eco", "away"],
                "swing_modes": ["off", "vertical", "horizontal", "both"],
                "swing_horizontal_modes": ["on", "off"]}))
            .attrs(json!({
                "current_temperature": 22.0, "temperature": 21.0,
                "target_temp_high": null, "target_temp_low": null,
                "current_humidity": 54, "humidity": 67,
                "fan_mode": "on_high", "preset_mode": "home", "swing_mode": "off",
                "swing_horizontal_mode": "off", "hvac_action": "heating"})),
        row("cover", "cover_living_room_window", "Window blind", "living_room", Some("open"))
            .features(ALL)
            .class("blind")
            .attrs(json!({"current_position": 70, "current_tilt_position": 50})),
        row("cover", "cover_garage_door", "Garage door", "garden", Some("closed"))
            .features(&["OPEN", "CLOSE"])
            .class("garage"),
        row("date", "date_appointment", "Appointment", "hub", Some("2024-06-20")),
        row("datetime", "datetime_alarm", "Alarm time", "hub", Some("2024-06-20T08:30:00+00:00")),
        row("device_tracker", "device_tracker_phone", "Phone", "hub", Some("home"))
            .attrs(json!({"source_type": "gps", "latitude": 52.3731339, "longitude": 4.8903147, "gps_accuracy": 10, "battery_level": 87})),
        row("event", "event_doorbell", "Doorbell", "garden", None)
            .class("doorbell")
            .caps(json!({"event_types": ["ring", "long_press"]}))
            .attrs(json!({"event_type": null})),
        row("fan", "fan_ceiling", "Ceiling fan", "living_room", Some("on"))
            .features(ALL)
            .caps(json!({"preset_modes": ["auto", "smart", "sleep", "on"]}))
            .attrs(json!({"percentage": 67, "percentage_step": 33.333333333333336, "preset_mode": null, "oscillating": false, "direction": "forward"})),
        row("humidifier", "humidifier_dehumidifier", "Dehumidifier", "kitchen", Some("on"))
            .features(&["MODES"])
            .class("dehumidifier")
            .caps(json!({"min_humidity": 30, "max_humidity": 80, "available_modes": ["normal", "eco", "boost", "sleep"]}))
            .attrs(json!({"humidity": 54, "current_humidity": 59, "mode": "normal", "action": "drying"})),
        row("lawn_mower", "lawn_mower_mower", "Mower", "garden", Some("docked")).features(ALL),
        row("light", "light_ceiling", "Ceiling light", "living_room", Some("on"))
            .features(&["EFFECT", "FLASH", "TRANSITION"])
            .caps(json!({"supported_color_modes": ["color_temp", "hs"], "min_color_temp_kelvin": 2000, "max_color_temp_kelvin": 6500, "effect_list": ["rainbow", "none"]}))
            .attrs(json!({"brightness": 180, "color_mode": "hs", "hs_color": [345.0, 75.0], "rgb_color": [255, 64, 112], "color_temp_kelvin": null, "effect": "none"})),
        row("light", "light_kitchen", "Kitchen light", "kitchen", Some("off"))
            .caps(json!({"supported_color_modes": ["brightness"]}))
            .attrs(json!({"brightness": null, "color_mode": null})),
        row("lock", "lock_front_door", "Front door", "hub", Some("locked")).features(&["OPEN"]),
        row("lock", "lock_kitchen_door", "Kitchen door", "kitchen", Some("unlocked")),
        row("media_player", "media_player_living_room", "Speaker", "living_room", Some("playing"))
            .features(ALL)
            .class("speaker")
            .caps(json!({"source_list": ["TV", "Radio", "Bluetooth"], "sound_mode_list": ["Music", "Movie"]}))
            .attrs(json!({
                "volume_level": 0.5, "is_volume_muted": false,
                "media_content_id": "track-1", "media_content_type": "music",
                "media_title": "Track 1", "media_artist": "Demo Band", "media_track": 1,
                "media_position": 0.0, "source": "Radio", "sound_mode": "Music",
                "shuffle": false, "repeat": "off", "group_members": []})),
        row("notify", "notify_display", "Display", "living_room", None).features(&["TITLE"]),
        row("number", "number_volume", "Volume", "kitchen", Some("42.0"))
            .caps(json!({"min": 0.0, "max": 100.0, "step": 1.0, "mode": "slider"}))
            .unit("%", None)
            .category(EntityCategory::Config),
        row("remote", "remote_tv", "TV remote", "living_room", Some("on"))
            .features(ALL)
            .caps(json!({"activity_list": ["TV", "Music", "Game"]}))
            .attrs(json!({"current_activity": "TV"})),
        row("scene", "scene_movie_night", "Movie night", "hub", None).icon("mdi:movie"),
        row("select", "select_speed", "Speed", "hub", Some("ridiculous_speed"))
            .caps(json!({"options": ["light_speed", "ridiculous_speed", "ludicrous_speed"]}))
            .category(EntityCategory::Config),
        row("sensor", "sensor_outside_temperature", "Outside temperature", "garden", Some("15.6"))
            .class("temperature")
            .unit("°C", Some("measurement")),
        row("sensor", "sensor_hub_uptime", "Uptime", "hub", Some("2024-06-01T00:00:00+00:00"))
            .class("timestamp")
            .category(EntityCategory::Diagnostic),
        row("siren", "siren_alarm", "Siren", "hub", Some("off"))
            .features(ALL)
            .caps(json!({"available_tones": ["fire", "alarm"]})),
        row("switch", "switch_decorative_lights", "Decorative lights", "living_room", Some("on"))
            .class("outlet"),
        row("switch", "switch_ac", "Air conditioner", "kitchen", Some("off"))
            .class("switch")
            .icon("mdi:air-conditioner"),
        row("text", "text_message", "Message", "living_room", Some("Hello world"))
            .caps(json!({"min": 0, "max": 100, "mode": "text", "pattern": null})),
        row("time", "time_wake_up", "Wake up", "hub", Some("07:30:00")),
        row("update", "update_firmware", "Firmware", "hub", Some("on"))
            .features(ALL)
            .class("firmware")
            .category(EntityCategory::Config)
            .attrs(json!({
                "installed_version": "1.2.0", "latest_version": "1.3.0", "skipped_version": null,
                "in_progress": false, "update_percentage": null, "auto_update": false,
                "release_summary": "Faster everything", "release_url": "https://example.com/demo/1.3.0",
                "title": "Demo Hub firmware", "display_precision": 0})),
        row("vacuum", "vacuum_robot", "Robot vacuum", "kitchen", Some("docked"))
            .features(&["PAUSE", "STOP", "RETURN_HOME", "FAN_SPEED", "BATTERY", "SEND_COMMAND", "LOCATE", "CLEAN_SPOT", "STATE", "START"])
            .caps(json!({"fan_speed_list": ["min", "medium", "high", "max"]}))
            .attrs(json!({"fan_speed": "medium", "battery_level": 100})),
        row("valve", "valve_water_main", "Water main", "kitchen", Some("open"))
            .features(ALL)
            .class("water")
            .attrs(json!({"current_position": 100})),
        row("water_heater", "water_heater_boiler", "Boiler", "kitchen", Some("eco"))
            .features(ALL)
            .caps(json!({"min_temp": 43.0, "max_temp": 60.0, "operation_list": ["eco", "electric", "performance", "gas", "off"]}))
            .attrs(json!({"temperature": 50.0, "target_temp_high": null, "target_temp_low": null, "current_temperature": 48.0, "away_mode": "off", "operation_mode": "eco"})),
        row("weather", "weather_home", "Forecast", "garden", Some("sunny"))
            .features(&["FORECAST_DAILY", "FORECAST_HOURLY"])
            .attrs(json!({
                "temperature": 21.6, "apparent_temperature": 22.0, "humidity": 62,
                "pressure": 1013.0, "wind_speed": 5.4, "wind_bearing": 180,
                "temperature_unit": "°C", "pressure_unit": "hPa", "wind_speed_unit": "km/h",
                "visibility_unit": "km", "precipitation_unit": "mm"})),
    ]
}

/// The demo entities of `domain`, made from the table.
pub(crate) fn entities_of(domain: &str, shared: &Weak<DemoShared>) -> Vec<DemoEntity> {
    let devices = devices();
    rows()
        .into_iter()
        .filter(|row| row.domain == domain)
        .map(|row| {
            let spec = catalog().domain(row.domain);
            let supported_features = match (row.features, spec) {
                (features, Some(spec)) if features == ALL => spec.all_features(),
                (features, Some(spec)) => features
                    .iter()
                    .filter_map(|name| spec.feature_bit(name))
                    .fold(0, |mask, bit| mask | bit),
                (_, None) => 0,
            };
            let mut info = EntityInfo::new(row.domain);
            info.unique_id = Some(row.key.to_owned());
            info.name = Some(row.name.to_owned());
            info.has_entity_name = true;
            info.translation_key = Some(row.key.to_owned());
            info.icon = row.icon.map(str::to_owned);
            info.device_class = row.device_class.map(str::to_owned);
            info.entity_category = row.category;
            info.supported_features = supported_features;
            info.unit_of_measurement = row.unit.map(str::to_owned);
            info.state_class = row.state_class.map(str::to_owned);
            info.capabilities = object(row.capabilities);
            info.device_info = devices
                .iter()
                .find(|(key, _)| *key == row.device)
                .map(|(_, device)| device.clone());
            let mut state = DemoState {
                state: row.state.map(str::to_owned),
                attributes: object(row.attributes),
                extra: Map::new(),
            };
            if row.domain == "calendar" {
                state.extra.insert(
                    "events".into(),
                    json!([
                        {"uid": "1", "summary": "Team meeting", "description": "Weekly sync", "location": "Office",
                         "start": DEMO_EPOCH_MINUS_30, "end": DEMO_EPOCH_PLUS_30},
                        {"uid": "2", "summary": "Picnic", "description": "Bring snacks", "location": "Park",
                         "start": "2024-06-02T12:00:00+00:00", "end": "2024-06-02T15:00:00+00:00"}
                    ]),
                );
                calendar_state(&mut state);
            }
            DemoEntity::new(row.key.to_owned(), info, state, shared.clone())
        })
        .collect()
}

/// Start of the calendar event in progress at the demo clock's epoch.
const DEMO_EPOCH_MINUS_30: &str = "2024-06-01T11:30:00+00:00";
/// End of the calendar event in progress at the demo clock's epoch.
const DEMO_EPOCH_PLUS_30: &str = "2024-06-01T12:30:00+00:00";
