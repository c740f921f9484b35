//! What each catalog service does to a demo entity, and the demo's answers to queries.
//!
//! Effects follow Home Assistant's entity models (and its demo integration) and are
//! deterministic: timestamps come from a simulated clock per entity (the demo epoch plus one
//! second per stamped action), never the wall clock, so an in-process and a sandboxed run
//! end in equal states.

use chrono::{DateTime, Duration, NaiveDate, NaiveTime, Utc};
use serde_json::{Map, Value, json};

use homecore::{EntityInfo, ServiceError, catalog};

use super::entity::DemoState;

/// The simulated clock's epoch: "now" for every demo entity before its first stamped action.
pub(crate) const DEMO_EPOCH: &str = "2024-06-01T12:00:00+00:00";

/// Alarm code the demo alarm panel accepts for disarming.
pub const ALARM_CODE: &str = "1234";

/// Volume change of one `volume_up`/`volume_down` (Home Assistant's default step).
const VOLUME_STEP: f64 = 0.1;

/// Percentage a fan turned on without one runs at (Home Assistant's demo fan).
const FAN_DEFAULT_PERCENTAGE: i64 = 67;

/// Most learned remote commands kept per device.
pub(crate) const MAX_LEARNED_COMMANDS: usize = 64;

/// Work a service causes beyond the entity's own state.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum SideEffect {
    /// A button was pressed: counted in the store and announced as `demo_button_pressed`.
    ButtonPressed,
    /// A notification was sent: kept in the store.
    MessageSent {
        /// Its title.
        title: Option<String>,
        /// Its text.
        message: String,
    },
    /// The hub's firmware was installed: the hub device's software version and the entry's
    /// `firmware` data follow it.
    FirmwareInstalled {
        /// The version now installed.
        version: String,
    },
}

/// The result of a service on one entity.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// Response data, for services that return some.
    pub(crate) response: Option<Value>,
    /// Work beyond the entity's state.
    pub(crate) side_effects: Vec<SideEffect>,
}

fn invalid(field: &str, message: impl Into<String>) -> ServiceError {
    ServiceError::validation(&[field], message)
}

fn epoch() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(DEMO_EPOCH)
        .map(|time| time.with_timezone(&Utc))
        .unwrap_or_default()
}

/// The entity's simulated "now" after one more stamped action.
fn tick(state: &mut DemoState) -> String {
    let ticks = state
        .extra
        .get("clock")
        .and_then(Value::as_i64)
        .unwrap_or(0)
        + 1;
    state.extra.insert("clock".into(), json!(ticks));
    iso(epoch() + Duration::seconds(ticks))
}

fn iso(time: DateTime<Utc>) -> String {
    time.format("%Y-%m-%dT%H:%M:%S%.f+00:00").to_string()
}

/// A float as Home Assistant shows it in a state (`42.0`, `21.5`).
pub(crate) fn float_state(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{value:.1}")
    } else {
        format!("{value}")
    }
}

fn str_of<'a>(data: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    data.get(key).and_then(Value::as_str)
}

fn f64_of(data: &Map<String, Value>, key: &str) -> Option<f64> {
    data.get(key).and_then(Value::as_f64)
}

fn set(state: &mut DemoState, key: &str, value: Value) {
    state.attributes.insert(key.to_owned(), value);
}

fn attr_f64(state: &DemoState, key: &str) -> Option<f64> {
    state.attributes.get(key).and_then(Value::as_f64)
}

fn cap<'a>(info: &'a EntityInfo, key: &str) -> Option<&'a Value> {
    info.capabilities.get(key)
}

/// Checks `value` is listed in capability `list`; `field` names the service field.
fn one_of(info: &EntityInfo, list: &str, field: &str, value: &str) -> Result<(), ServiceError> {
    let listed = cap(info, list)
        .and_then(Value::as_array)
        .is_some_and(|items| items.iter().any(|item| item.as_str() == Some(value)));
    if listed {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!(
                "{value} is not a valid {field}; expected one of {}",
                cap(info, list).cloned().unwrap_or(Value::Null)
            ),
        ))
    }
}

fn is(state: &DemoState, value: &str) -> bool {
    state.state.as_deref() == Some(value)
}

fn set_state(state: &mut DemoState, value: &str) {
    state.state = Some(value.to_owned());
}

/// Applies `service` with `data` to the entity.
pub(crate) fn apply(
    info: &EntityInfo,
    state: &mut DemoState,
    service: &str,
    data: &Map<String, Value>,
) -> Result<Outcome, ServiceError> {
    let mut outcome = Outcome::default();
    match (info.domain.as_str(), service) {
        ("alarm_control_panel", "alarm_disarm") => {
            if str_of(data, "code") != Some(ALARM_CODE) {
                return Err(invalid("code", "Invalid alarm code provided"));
            }
            set_state(state, "disarmed");
        }
        ("alarm_control_panel", "alarm_trigger") => set_state(state, "triggered"),
        ("alarm_control_panel", arm) if arm.starts_with("alarm_arm_") => {
            set_state(state, &format!("armed_{}", &arm["alarm_arm_".len()..]));
        }
        ("button", "press") => {
            state.state = Some(tick(state));
            outcome.side_effects.push(SideEffect::ButtonPressed);
        }
        ("calendar", "create_event") => create_event(state, data)?,
        ("calendar", "get_events") => outcome.response = Some(get_events(state, data)?),
        ("climate", service) => climate(info, state, service, data)?,
        ("cover", service) => cover(state, service, data),
        ("date", "set_value") => {
            let text = str_of(data, "date").unwrap_or_default();
            let date = NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .map_err(|_| invalid("date", format!("invalid date {text:?}")))?;
            state.state = Some(date.to_string());
        }
        ("datetime", "set_value") => {
            let text = str_of(data, "datetime").unwrap_or_default();
            let time = parse_datetime(text)
                .ok_or_else(|| invalid("datetime", format!("invalid datetime {text:?}")))?;
            state.state = Some(time.format("%Y-%m-%dT%H:%M:%S+00:00").to_string());
        }
        ("fan", service) => fan(info, state, service, data)?,
        ("humidifier", service) => humidifier(info, state, service, data)?,
        ("lawn_mower", "start_mowing") => set_state(state, "mowing"),
        ("lawn_mower", "pause") => set_state(state, "paused"),
        ("lawn_mower", "dock") => set_state(state, "docked"),
        ("light", service) => light(info, state, service, data)?,
        ("lock", "lock") => set_state(state, "locked"),
        ("lock", "unlock") => set_state(state, "unlocked"),
        ("lock", "open") => set_state(state, "open"),
        ("media_player", service) => outcome.response = media_player(info, state, service, data)?,
        ("notify", "send_message") => {
            state.state = Some(tick(state));
            outcome.side_effects.push(SideEffect::MessageSent {
                title: str_of(data, "title").map(str::to_owned),
                message: str_of(data, "message").unwrap_or_default().to_owned(),
            });
        }
        ("number", "set_value") => {
            let value = f64_of(data, "value").unwrap_or_default();
            let min = cap(info, "min").and_then(Value::as_f64).unwrap_or(0.0);
            let max = cap(info, "max").and_then(Value::as_f64).unwrap_or(100.0);
            if !(min..=max).contains(&value) {
                return Err(invalid(
                    "value",
                    format!(
                        "Value {value} for {} is outside valid range {min} - {max}",
                        info.domain
                    ),
                ));
            }
            state.state = Some(float_state(value));
        }
        ("remote", service) => remote(info, state, service, data)?,
        ("scene", "turn_on") => state.state = Some(tick(state)),
        ("select", service) => select(info, state, service, data)?,
        ("siren", "turn_on") => {
            if let Some(tone) = data.get("tone").and_then(Value::as_str) {
                one_of(info, "available_tones", "tone", tone)?;
            }
            set_state(state, "on");
        }
        ("siren", "turn_off") => set_state(state, "off"),
        ("siren", "toggle") => set_state(state, if is(state, "on") { "off" } else { "on" }),
        ("switch", "turn_on") => set_state(state, "on"),
        ("switch", "turn_off") => set_state(state, "off"),
        ("switch", "toggle") => set_state(state, if is(state, "on") { "off" } else { "on" }),
        ("text", "set_value") => {
            let value = str_of(data, "value").unwrap_or_default();
            let length = value.chars().count() as u64;
            let min = cap(info, "min").and_then(Value::as_u64).unwrap_or(0);
            let max = cap(info, "max").and_then(Value::as_u64).unwrap_or(255);
            if length < min || length > max {
                return Err(invalid(
                    "value",
                    format!("Value {value} for text is too long or short (length {min} to {max})"),
                ));
            }
            state.state = Some(value.to_owned());
        }
        ("time", "set_value") => {
            let text = str_of(data, "time").unwrap_or_default();
            let time = NaiveTime::parse_from_str(text, "%H:%M:%S")
                .or_else(|_| NaiveTime::parse_from_str(text, "%H:%M"))
                .map_err(|_| invalid("time", format!("invalid time {text:?}")))?;
            state.state = Some(time.format("%H:%M:%S").to_string());
        }
        ("update", service) => {
            update(state, service, data)?;
            if service == "install"
                && let Some(version) = state
                    .attributes
                    .get("installed_version")
                    .and_then(Value::as_str)
            {
                outcome.side_effects.push(SideEffect::FirmwareInstalled {
                    version: version.to_owned(),
                });
            }
        }
        ("vacuum", service) => vacuum(info, state, service, data)?,
        ("valve", service) => valve(state, service, data),
        ("water_heater", service) => water_heater(info, state, service, data)?,
        ("weather", "get_forecasts") => {
            let kind = str_of(data, "type").unwrap_or("daily");
            outcome.response = Some(json!({"forecast": forecast(info, kind)?}));
        }
        (domain, service) => {
            return Err(ServiceError::handler(format!(
                "the demo does not implement {domain}.{service}"
            )));
        }
    }
    Ok(outcome)
}

/// An event entity fires `event_type`: its state is the (simulated) time it happened.
pub(crate) fn trigger_event(state: &mut DemoState, event_type: &str) {
    state.state = Some(tick(state));
    set(state, "event_type", json!(event_type));
}

fn climate(
    info: &EntityInfo,
    state: &mut DemoState,
    service: &str,
    data: &Map<String, Value>,
) -> Result<(), ServiceError> {
    let last_on = || -> String { "heat".to_owned() };
    match service {
        "turn_on" => {
            let mode = state
                .extra
                .get("last_hvac_mode")
                .and_then(Value::as_str)
                .map_or_else(last_on, str::to_owned);
            set_state(state, &mode);
        }
        "turn_off" => {
            if let Some(current) = state.state.clone().filter(|mode| mode != "off") {
                state.extra.insert("last_hvac_mode".into(), json!(current));
            }
            set_state(state, "off");
        }
        "toggle" => {
            let next = if is(state, "off") {
                "turn_on"
            } else {
                "turn_off"
            };
            return climate(info, state, next, data);
        }
        "set_hvac_mode" => {
            let mode = str_of(data, "hvac_mode").unwrap_or("off");
            one_of(info, "hvac_modes", "hvac_mode", mode)?;
            if mode == "off" {
                return climate(info, state, "turn_off", data);
            }
            set_state(state, mode);
        }
        "set_temperature" => {
            let min = cap(info, "min_temp").and_then(Value::as_f64).unwrap_or(7.0);
            let max = cap(info, "max_temp")
                .and_then(Value::as_f64)
                .unwrap_or(35.0);
            for key in ["temperature", "target_temp_low", "target_temp_high"] {
                if let Some(value) = f64_of(data, key) {
                    if !(min..=max).contains(&value) {
                        return Err(invalid(
                            key,
                            format!(
                                "Provided temperature {value} is not valid. Accepted range is {min} to {max}"
                            ),
                        ));
                    }
                    set(state, key, json!(value));
                }
            }
            if let Some(mode) = str_of(data, "hvac_mode") {
                one_of(info, "hvac_modes", "hvac_mode", mode)?;
                set_state(state, mode);
            }
        }
        "set_humidity" => {
            let humidity = data.get("humidity").and_then(Value::as_i64).unwrap_or(0);
            let min = cap(info, "min_humidity")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            let max = cap(info, "max_humidity")
                .and_then(Value::as_i64)
                .unwrap_or(100);
            if !(min..=max).contains(&humidity) {
                return Err(invalid(
                    "humidity",
                    format!(
                        "Provided humidity {humidity} is not valid. Accepted range is {min} to {max}"
                    ),
                ));
            }
            set(state, "humidity", json!(humidity));
        }
        "set_fan_mode" | "set_preset_mode" | "set_swing_mode" | "set_swing_horizontal_mode" => {
            let field = &service["set_".len()..];
            let value = str_of(data, field).unwrap_or_default();
            one_of(info, &format!("{field}s"), field, value)?;
            set(state, field, json!(value));
        }
        _ => {
            return Err(ServiceError::handler(format!(
                "climate.{service} is not implemented"
            )));
        }
    }
    Ok(())
}

fn cover(state: &mut DemoState, service: &str, data: &Map<String, Value>) {
    let has_position = state.attributes.contains_key("current_position");
    let position = |state: &mut DemoState, position: i64| {
        if has_position {
            set(state, "current_position", json!(position));
        }
        set_state(state, if position > 0 { "open" } else { "closed" });
    };
    match service {
        "open_cover" => position(state, 100),
        "close_cover" => position(state, 0),
        "set_cover_position" => {
            position(
                state,
                data.get("position").and_then(Value::as_i64).unwrap_or(0),
            );
        }
        "toggle" => {
            let target = if is(state, "closed") { 100 } else { 0 };
            position(state, target);
        }
        "open_cover_tilt" => set(state, "current_tilt_position", json!(100)),
        "close_cover_tilt" => set(state, "current_tilt_position", json!(0)),
        "set_cover_tilt_position" => {
            let tilt = data
                .get("tilt_position")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            set(state, "current_tilt_position", json!(tilt));
        }
        "toggle_cover_tilt" => {
            let open = state
                .attributes
                .get("current_tilt_position")
                .and_then(Value::as_i64)
                .unwrap_or(0)
                > 0;
            set(
                state,
                "current_tilt_position",
                json!(if open { 0 } else { 100 }),
            );
        }
        // The demo moves instantly, so there is never a movement to stop.
        _ => {}
    }
}

fn fan(
    info: &EntityInfo,
    state: &mut DemoState,
    service: &str,
    data: &Map<String, Value>,
) -> Result<(), ServiceError> {
    let set_percentage = |state: &mut DemoState, percentage: i64| {
        let percentage = percentage.clamp(0, 100);
        set(state, "percentage", json!(percentage));
        set(state, "preset_mode", Value::Null);
        set_state(state, if percentage > 0 { "on" } else { "off" });
    };
    let step = attr_f64(state, "percentage_step").unwrap_or(1.0);
    let current = attr_f64(state, "percentage").unwrap_or(0.0);
    match service {
        "turn_on" => {
            if let Some(preset) = str_of(data, "preset_mode") {
                return fan(
                    info,
                    state,
                    "set_preset_mode",
                    &object(json!({"preset_mode": preset})),
                );
            }
            let percentage = data
                .get("percentage")
                .and_then(Value::as_i64)
                .unwrap_or(FAN_DEFAULT_PERCENTAGE);
            set_percentage(state, percentage);
        }
        "turn_off" => set_percentage(state, 0),
        "toggle" => {
            let next = if is(state, "on") {
                "turn_off"
            } else {
                "turn_on"
            };
            return fan(info, state, next, &Map::new());
        }
        "set_percentage" => {
            set_percentage(
                state,
                data.get("percentage").and_then(Value::as_i64).unwrap_or(0),
            );
        }
        "increase_speed" | "decrease_speed" => {
            let step = data
                .get("percentage_step")
                .and_then(Value::as_f64)
                .unwrap_or(step);
            let sign = if service == "increase_speed" {
                1.0
            } else {
                -1.0
            };
            set_percentage(state, (current + sign * step).round() as i64);
        }
        "oscillate" => {
            let oscillating = data
                .get("oscillating")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            set(state, "oscillating", json!(oscillating));
        }
        "set_direction" => set(
            state,
            "direction",
            json!(str_of(data, "direction").unwrap_or("forward")),
        ),
        "set_preset_mode" => {
            let preset = str_of(data, "preset_mode").unwrap_or_default();
            one_of(info, "preset_modes", "preset_mode", preset)?;
            set(state, "preset_mode", json!(preset));
            set(state, "percentage", Value::Null);
            set_state(state, "on");
        }
        _ => {
            return Err(ServiceError::handler(format!(
                "fan.{service} is not implemented"
            )));
        }
    }
    Ok(())
}

fn humidifier(
    info: &EntityInfo,
    state: &mut DemoState,
    service: &str,
    data: &Map<String, Value>,
) -> Result<(), ServiceError> {
    match service {
        "turn_on" => set_state(state, "on"),
        "turn_off" => set_state(state, "off"),
        "toggle" => set_state(state, if is(state, "on") { "off" } else { "on" }),
        "set_mode" => {
            let mode = str_of(data, "mode").unwrap_or_default();
            one_of(info, "available_modes", "mode", mode)?;
            set(state, "mode", json!(mode));
        }
        "set_humidity" => {
            let humidity = data.get("humidity").and_then(Value::as_i64).unwrap_or(0);
            let min = cap(info, "min_humidity")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            let max = cap(info, "max_humidity")
                .and_then(Value::as_i64)
                .unwrap_or(100);
            if !(min..=max).contains(&humidity) {
                return Err(invalid(
                    "humidity",
                    format!(
                        "Provided humidity {humidity} is not valid. Accepted range is {min} to {max}"
                    ),
                ));
            }
            set(state, "humidity", json!(humidity));
        }
        _ => {
            return Err(ServiceError::handler(format!(
                "humidifier.{service} is not implemented"
            )));
        }
    }
    Ok(())
}

/// Hue/saturation (degrees, percent) to RGB at full value, as Home Assistant's `color_hs_to_RGB`.
pub(crate) fn hs_to_rgb(hue: f64, saturation: f64) -> [i64; 3] {
    let s = saturation / 100.0;
    let h = (hue % 360.0) / 60.0;
    let sector = h.floor();
    let f = h - sector;
    let (p, q, t) = (1.0 - s, 1.0 - s * f, 1.0 - s * (1.0 - f));
    let (r, g, b) = match sector as i64 {
        0 => (1.0, t, p),
        1 => (q, 1.0, p),
        2 => (p, 1.0, t),
        3 => (p, q, 1.0),
        4 => (t, p, 1.0),
        _ => (1.0, p, q),
    };
    [r, g, b].map(|channel| (channel * 255.0).round() as i64)
}

/// RGB to hue/saturation (degrees, percent), rounded to 3 decimals, as Home Assistant's `color_RGB_to_hs`.
pub(crate) fn rgb_to_hs(rgb: [f64; 3]) -> [f64; 2] {
    let [r, g, b] = rgb.map(|channel| channel / 255.0);
    let max = r.max(g).max(b);
    let min = r.min(g).min(b);
    let delta = max - min;
    let hue = if delta == 0.0 {
        0.0
    } else if max == r {
        60.0 * (((g - b) / delta) % 6.0)
    } else if max == g {
        60.0 * ((b - r) / delta + 2.0)
    } else {
        60.0 * ((r - g) / delta + 4.0)
    };
    let hue = if hue < 0.0 { hue + 360.0 } else { hue };
    let saturation = if max == 0.0 { 0.0 } else { delta / max * 100.0 };
    [round3(hue), round3(saturation)]
}

fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

fn light(
    info: &EntityInfo,
    state: &mut DemoState,
    service: &str,
    data: &Map<String, Value>,
) -> Result<(), ServiceError> {
    let color_keys = [
        "hs_color",
        "rgb_color",
        "color_temp_kelvin",
        "effect",
        "color_mode",
        "brightness",
    ];
    match service {
        "turn_off" => {
            set_state(state, "off");
            for key in color_keys {
                if state.attributes.contains_key(key) {
                    set(state, key, Value::Null);
                }
            }
            return Ok(());
        }
        "toggle" => {
            if is(state, "on") {
                return light(info, state, "turn_off", data);
            }
            return light(info, state, "turn_on", data);
        }
        "turn_on" => {}
        _ => {
            return Err(ServiceError::handler(format!(
                "light.{service} is not implemented"
            )));
        }
    }
    let modes: Vec<String> = cap(info, "supported_color_modes")
        .and_then(Value::as_array)
        .map(|modes| {
            modes
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let was_on = is(state, "on");
    let stored_brightness = state.extra.get("brightness").and_then(Value::as_i64);
    let current = if was_on {
        state.attributes.get("brightness").and_then(Value::as_i64)
    } else {
        None
    }
    .or(stored_brightness)
    .unwrap_or(255);
    let mut brightness = current;
    if let Some(value) = data.get("brightness").and_then(Value::as_i64) {
        brightness = value;
    }
    if let Some(pct) = f64_of(data, "brightness_pct") {
        brightness = (255.0 * pct / 100.0).round() as i64;
    }
    if let Some(step) = data.get("brightness_step").and_then(Value::as_i64) {
        brightness = current + step;
    }
    if let Some(step) = f64_of(data, "brightness_step_pct") {
        brightness = current + (255.0 * step / 100.0).round() as i64;
    }
    let brightness = brightness.clamp(0, 255);
    if brightness == 0 {
        // Home Assistant turns a light off when asked for brightness 0.
        return light(info, state, "turn_off", data);
    }
    set_state(state, "on");
    if modes.iter().any(|mode| mode != "onoff") {
        set(state, "brightness", json!(brightness));
        state.extra.insert("brightness".into(), json!(brightness));
    }
    let supports = |mode: &str| modes.iter().any(|m| m == mode);
    if let Some(kelvin) = data.get("color_temp_kelvin").and_then(Value::as_i64) {
        if !supports("color_temp") {
            return Err(invalid(
                "color_temp_kelvin",
                "the light does not support color temperature",
            ));
        }
        let min = cap(info, "min_color_temp_kelvin")
            .and_then(Value::as_i64)
            .unwrap_or(2000);
        let max = cap(info, "max_color_temp_kelvin")
            .and_then(Value::as_i64)
            .unwrap_or(6500);
        set(state, "color_temp_kelvin", json!(kelvin.clamp(min, max)));
        set(state, "color_mode", json!("color_temp"));
        set(state, "hs_color", Value::Null);
        set(state, "rgb_color", Value::Null);
    } else if let Some(hs) = data.get("hs_color").and_then(Value::as_array) {
        if !supports("hs") {
            return Err(invalid("hs_color", "the light does not support colors"));
        }
        let hue = hs.first().and_then(Value::as_f64).unwrap_or(0.0);
        let saturation = hs.get(1).and_then(Value::as_f64).unwrap_or(0.0);
        set(state, "hs_color", json!([round3(hue), round3(saturation)]));
        set(state, "rgb_color", json!(hs_to_rgb(hue, saturation)));
        set(state, "color_mode", json!("hs"));
        set(state, "color_temp_kelvin", Value::Null);
    } else if let Some(rgb) = data.get("rgb_color").and_then(Value::as_array) {
        if !supports("hs") {
            return Err(invalid("rgb_color", "the light does not support colors"));
        }
        let channels: Vec<f64> = rgb.iter().filter_map(Value::as_f64).collect();
        let rgb3 = [0, 1, 2].map(|i| channels.get(i).copied().unwrap_or(0.0));
        let hs = rgb_to_hs(rgb3);
        set(state, "hs_color", json!(hs));
        set(
            state,
            "rgb_color",
            json!(rgb3.map(|channel| channel as i64)),
        );
        set(state, "color_mode", json!("hs"));
        set(state, "color_temp_kelvin", Value::Null);
    } else if !was_on && state.attributes.contains_key("color_mode") {
        let mode = modes.first().cloned().unwrap_or_else(|| "onoff".to_owned());
        if state
            .attributes
            .get("color_mode")
            .is_none_or(Value::is_null)
        {
            set(state, "color_mode", json!(mode));
        }
    }
    if let Some(effect) = str_of(data, "effect") {
        one_of(info, "effect_list", "effect", effect)?;
        set(state, "effect", json!(effect));
    } else if !was_on && state.attributes.contains_key("effect") {
        set(state, "effect", json!("none"));
    }
    Ok(())
}

fn media_player(
    info: &EntityInfo,
    state: &mut DemoState,
    service: &str,
    data: &Map<String, Value>,
) -> Result<Option<Value>, ServiceError> {
    let volume = attr_f64(state, "volume_level").unwrap_or(0.0);
    let set_track = |state: &mut DemoState, track: i64| {
        set(state, "media_track", json!(track));
        set(state, "media_title", json!(format!("Track {track}")));
        set(state, "media_content_id", json!(format!("track-{track}")));
        set(state, "media_position", json!(0.0));
    };
    let track = state
        .attributes
        .get("media_track")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    match service {
        "turn_on" => set_state(state, "playing"),
        "turn_off" => set_state(state, "off"),
        "toggle" => set_state(state, if is(state, "off") { "playing" } else { "off" }),
        "volume_up" => set(
            state,
            "volume_level",
            json!(round3((volume + VOLUME_STEP).min(1.0))),
        ),
        "volume_down" => set(
            state,
            "volume_level",
            json!(round3((volume - VOLUME_STEP).max(0.0))),
        ),
        "volume_set" => set(
            state,
            "volume_level",
            json!(f64_of(data, "volume_level").unwrap_or(volume)),
        ),
        "volume_mute" => set(
            state,
            "is_volume_muted",
            json!(
                data.get("is_volume_muted")
                    .and_then(Value::as_bool)
                    .unwrap_or(false)
            ),
        ),
        "media_play_pause" => set_state(
            state,
            if is(state, "playing") {
                "paused"
            } else {
                "playing"
            },
        ),
        "media_play" => set_state(state, "playing"),
        "media_pause" => set_state(state, "paused"),
        "media_stop" => set_state(state, "idle"),
        "media_next_track" => set_track(state, track + 1),
        "media_previous_track" => set_track(state, (track - 1).max(1)),
        "clear_playlist" => {
            set_state(state, "idle");
            for key in [
                "media_content_id",
                "media_title",
                "media_artist",
                "media_track",
            ] {
                set(state, key, Value::Null);
            }
        }
        "media_seek" => set(
            state,
            "media_position",
            json!(f64_of(data, "seek_position").unwrap_or(0.0)),
        ),
        "join" => {
            let members = data
                .get("group_members")
                .cloned()
                .unwrap_or_else(|| json!([]));
            set(state, "group_members", members);
        }
        "unjoin" => set(state, "group_members", json!([])),
        "select_source" => {
            let source = str_of(data, "source").unwrap_or_default();
            one_of(info, "source_list", "source", source)?;
            set(state, "source", json!(source));
        }
        "select_sound_mode" => {
            let mode = str_of(data, "sound_mode").unwrap_or("Music");
            one_of(info, "sound_mode_list", "sound_mode", mode)?;
            set(state, "sound_mode", json!(mode));
        }
        "play_media" => {
            set(
                state,
                "media_content_id",
                json!(str_of(data, "media_content_id")),
            );
            set(
                state,
                "media_content_type",
                json!(str_of(data, "media_content_type")),
            );
            set(
                state,
                "media_title",
                json!(str_of(data, "media_content_id")),
            );
            set(state, "media_track", Value::Null);
            set(state, "media_position", json!(0.0));
            set_state(state, "playing");
        }
        "shuffle_set" => set(
            state,
            "shuffle",
            json!(
                data.get("shuffle")
                    .and_then(Value::as_bool)
                    .unwrap_or(false)
            ),
        ),
        "repeat_set" => set(
            state,
            "repeat",
            json!(str_of(data, "repeat").unwrap_or("off")),
        ),
        "browse_media" | "search_media" => return query(info, state, service, data).map(Some),
        _ => {
            return Err(ServiceError::handler(format!(
                "media_player.{service} is not implemented"
            )));
        }
    }
    Ok(None)
}

fn remote(
    info: &EntityInfo,
    state: &mut DemoState,
    service: &str,
    data: &Map<String, Value>,
) -> Result<(), ServiceError> {
    match service {
        "turn_on" => {
            if let Some(activity) = str_of(data, "activity") {
                one_of(info, "activity_list", "activity", activity)?;
                set(state, "current_activity", json!(activity));
            }
            set_state(state, "on");
        }
        "turn_off" => set_state(state, "off"),
        "toggle" => set_state(state, if is(state, "on") { "off" } else { "on" }),
        // Sending a command changes nothing Home Assistant can see.
        "send_command" => {}
        "learn_command" | "delete_command" => {
            let device = str_of(data, "device").unwrap_or("default").to_owned();
            let commands: Vec<Value> = data
                .get("command")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let learned = state
                .extra
                .entry("learned_commands")
                .or_insert_with(|| json!({}));
            if let Value::Object(by_device) = learned {
                let list = by_device.entry(device).or_insert_with(|| json!([]));
                if let Value::Array(list) = list {
                    if service == "learn_command" {
                        for command in commands {
                            if !list.contains(&command) && list.len() < MAX_LEARNED_COMMANDS {
                                list.push(command);
                            }
                        }
                    } else {
                        list.retain(|command| !commands.contains(command));
                    }
                }
            }
        }
        _ => {
            return Err(ServiceError::handler(format!(
                "remote.{service} is not implemented"
            )));
        }
    }
    Ok(())
}

fn select(
    info: &EntityInfo,
    state: &mut DemoState,
    service: &str,
    data: &Map<String, Value>,
) -> Result<(), ServiceError> {
    let options: Vec<String> = cap(info, "options")
        .and_then(Value::as_array)
        .map(|options| {
            options
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let current = state
        .state
        .as_ref()
        .and_then(|current| options.iter().position(|option| option == current));
    let cycle = data.get("cycle").and_then(Value::as_bool).unwrap_or(true);
    let last = options.len().saturating_sub(1);
    let index = match service {
        "select_option" => {
            let option = str_of(data, "option").unwrap_or_default();
            one_of(info, "options", "option", option)?;
            options.iter().position(|candidate| candidate == option)
        }
        "select_first" => Some(0),
        "select_last" => Some(last),
        "select_next" => Some(match current {
            Some(index) if index < last => index + 1,
            Some(_) if cycle => 0,
            Some(index) => index,
            None => 0,
        }),
        "select_previous" => Some(match current {
            Some(index) if index > 0 => index - 1,
            Some(_) if cycle => last,
            Some(index) => index,
            None => last,
        }),
        _ => {
            return Err(ServiceError::handler(format!(
                "select.{service} is not implemented"
            )));
        }
    };
    if let Some(option) = index.and_then(|index| options.get(index)) {
        state.state = Some(option.clone());
    }
    Ok(())
}

fn update(
    state: &mut DemoState,
    service: &str,
    data: &Map<String, Value>,
) -> Result<(), ServiceError> {
    let installed = state
        .attributes
        .get("installed_version")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let latest = state
        .attributes
        .get("latest_version")
        .and_then(Value::as_str)
        .map(str::to_owned);
    match service {
        "install" => {
            let version = str_of(data, "version").map(str::to_owned);
            if version.is_none() && installed == latest {
                return Err(ServiceError::handler("No update available"));
            }
            set(
                state,
                "installed_version",
                json!(version.or(latest.clone())),
            );
            set(state, "in_progress", json!(false));
        }
        "skip" => {
            if installed == latest {
                return Err(ServiceError::handler("No update available to skip"));
            }
            set(state, "skipped_version", json!(latest));
        }
        "clear_skipped" => set(state, "skipped_version", Value::Null),
        _ => {
            return Err(ServiceError::handler(format!(
                "update.{service} is not implemented"
            )));
        }
    }
    let installed = state.attributes.get("installed_version").cloned();
    let latest = state.attributes.get("latest_version").cloned();
    let skipped = state.attributes.get("skipped_version").cloned();
    let available = latest != installed && latest != skipped;
    set_state(state, if available { "on" } else { "off" });
    Ok(())
}

fn vacuum(
    info: &EntityInfo,
    state: &mut DemoState,
    service: &str,
    data: &Map<String, Value>,
) -> Result<(), ServiceError> {
    match service {
        "start" | "clean_spot" => set_state(state, "cleaning"),
        "pause" => set_state(state, "paused"),
        "stop" => set_state(state, "idle"),
        "return_to_base" => set_state(state, "returning"),
        // Locating beeps and a command is opaque: nothing Home Assistant can see changes.
        "locate" | "send_command" => {}
        "set_fan_speed" => {
            let speed = str_of(data, "fan_speed").unwrap_or_default();
            one_of(info, "fan_speed_list", "fan_speed", speed)?;
            set(state, "fan_speed", json!(speed));
        }
        _ => {
            return Err(ServiceError::handler(format!(
                "vacuum.{service} is not implemented"
            )));
        }
    }
    Ok(())
}

fn valve(state: &mut DemoState, service: &str, data: &Map<String, Value>) {
    let has_position = state.attributes.contains_key("current_position");
    let position = |state: &mut DemoState, position: i64| {
        if has_position {
            set(state, "current_position", json!(position));
        }
        set_state(state, if position > 0 { "open" } else { "closed" });
    };
    match service {
        "open_valve" => position(state, 100),
        "close_valve" => position(state, 0),
        "set_valve_position" => position(
            state,
            data.get("position").and_then(Value::as_i64).unwrap_or(0),
        ),
        "toggle" => {
            let target = if is(state, "closed") { 100 } else { 0 };
            position(state, target);
        }
        // The demo moves instantly, so there is never a movement to stop.
        _ => {}
    }
}

fn water_heater(
    info: &EntityInfo,
    state: &mut DemoState,
    service: &str,
    data: &Map<String, Value>,
) -> Result<(), ServiceError> {
    let operation = |state: &mut DemoState, mode: &str| {
        set_state(state, mode);
        set(state, "operation_mode", json!(mode));
    };
    match service {
        "set_temperature" => {
            let value = f64_of(data, "temperature").unwrap_or_default();
            let min = cap(info, "min_temp")
                .and_then(Value::as_f64)
                .unwrap_or(43.0);
            let max = cap(info, "max_temp")
                .and_then(Value::as_f64)
                .unwrap_or(60.0);
            if !(min..=max).contains(&value) {
                return Err(invalid(
                    "temperature",
                    format!(
                        "Provided temperature {value} is not valid. Accepted range is {min} to {max}"
                    ),
                ));
            }
            set(state, "temperature", json!(value));
            if let Some(mode) = str_of(data, "operation_mode") {
                one_of(info, "operation_list", "operation_mode", mode)?;
                operation(state, mode);
            }
        }
        "set_operation_mode" => {
            let mode = str_of(data, "operation_mode").unwrap_or_default();
            one_of(info, "operation_list", "operation_mode", mode)?;
            if mode != "off" {
                state
                    .extra
                    .insert("last_operation_mode".into(), json!(mode));
            }
            operation(state, mode);
        }
        "set_away_mode" => {
            let away = data
                .get("away_mode")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            set(state, "away_mode", json!(if away { "on" } else { "off" }));
        }
        "turn_on" => {
            let mode = state
                .extra
                .get("last_operation_mode")
                .and_then(Value::as_str)
                .unwrap_or("eco")
                .to_owned();
            operation(state, &mode);
        }
        "turn_off" => {
            if let Some(current) = state.state.clone().filter(|mode| mode != "off") {
                state
                    .extra
                    .insert("last_operation_mode".into(), json!(current));
            }
            operation(state, "off");
        }
        _ => {
            return Err(ServiceError::handler(format!(
                "water_heater.{service} is not implemented"
            )));
        }
    }
    Ok(())
}

fn parse_datetime(text: &str) -> Option<DateTime<Utc>> {
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Some(time.with_timezone(&Utc));
    }
    [
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ]
    .iter()
    .find_map(|format| chrono::NaiveDateTime::parse_from_str(text, format).ok())
    .map(|naive| naive.and_utc())
}

fn events(state: &DemoState) -> Vec<Value> {
    state
        .extra
        .get("events")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn event_bounds(event: &Value) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let start = parse_datetime(event.get("start")?.as_str()?)?;
    let end = parse_datetime(event.get("end")?.as_str()?)?;
    Some((start, end))
}

/// Recomputes a calendar's state and attributes from its events at the simulated "now":
/// `on` while an event is in progress, with the current (or next) event's details.
pub(crate) fn calendar_state(state: &mut DemoState) {
    let now = epoch();
    let mut upcoming: Vec<(DateTime<Utc>, DateTime<Utc>, Value)> = events(state)
        .into_iter()
        .filter_map(|event| event_bounds(&event).map(|(start, end)| (start, end, event)))
        .filter(|(_, end, _)| *end > now)
        .collect();
    upcoming.sort_by_key(|(start, _, _)| *start);
    match upcoming.first() {
        Some((start, end, event)) => {
            let all_day = event
                .get("all_day")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            set(
                state,
                "message",
                event.get("summary").cloned().unwrap_or(Value::Null),
            );
            set(state, "all_day", json!(all_day));
            set(
                state,
                "start_time",
                json!(start.format("%Y-%m-%d %H:%M:%S").to_string()),
            );
            set(
                state,
                "end_time",
                json!(end.format("%Y-%m-%d %H:%M:%S").to_string()),
            );
            set(
                state,
                "location",
                event.get("location").cloned().unwrap_or(Value::Null),
            );
            set(
                state,
                "description",
                event.get("description").cloned().unwrap_or(Value::Null),
            );
            set_state(state, if *start <= now { "on" } else { "off" });
        }
        None => {
            for key in [
                "message",
                "all_day",
                "start_time",
                "end_time",
                "location",
                "description",
            ] {
                set(state, key, Value::Null);
            }
            set_state(state, "off");
        }
    }
}

fn create_event(state: &mut DemoState, data: &Map<String, Value>) -> Result<(), ServiceError> {
    let (start, end, all_day) = match (
        str_of(data, "start_date_time"),
        str_of(data, "end_date_time"),
    ) {
        (Some(start), Some(end)) => (
            parse_datetime(start).ok_or_else(|| invalid("start_date_time", "invalid datetime"))?,
            parse_datetime(end).ok_or_else(|| invalid("end_date_time", "invalid datetime"))?,
            false,
        ),
        _ => match (str_of(data, "start_date"), str_of(data, "end_date")) {
            (Some(start), Some(end)) => {
                let day = |text: &str, field: &str| {
                    NaiveDate::parse_from_str(text, "%Y-%m-%d")
                        .map(|date| date.and_time(NaiveTime::MIN).and_utc())
                        .map_err(|_| invalid(field, "invalid date"))
                };
                (day(start, "start_date")?, day(end, "end_date")?, true)
            }
            _ => {
                return Err(invalid(
                    "start_date_time",
                    "Expected start and end as start_date_time/end_date_time or start_date/end_date",
                ));
            }
        },
    };
    if end <= start {
        return Err(invalid(
            "end_date_time",
            "Expected end time to be after start time",
        ));
    }
    let mut all = events(state);
    let uid = (all.len() + 1).to_string();
    all.push(json!({
        "uid": uid,
        "summary": str_of(data, "summary").unwrap_or_default(),
        "description": str_of(data, "description"),
        "location": str_of(data, "location"),
        "start": iso(start),
        "end": iso(end),
        "all_day": all_day,
    }));
    state.extra.insert("events".into(), Value::Array(all));
    calendar_state(state);
    Ok(())
}

fn get_events(state: &DemoState, data: &Map<String, Value>) -> Result<Value, ServiceError> {
    let start = match str_of(data, "start_date_time") {
        Some(text) => {
            parse_datetime(text).ok_or_else(|| invalid("start_date_time", "invalid datetime"))?
        }
        None => epoch(),
    };
    let end = match (
        str_of(data, "end_date_time"),
        data.get("duration").and_then(Value::as_f64),
    ) {
        (Some(text), _) => {
            parse_datetime(text).ok_or_else(|| invalid("end_date_time", "invalid datetime"))?
        }
        (None, Some(seconds)) => start + Duration::milliseconds((seconds * 1000.0) as i64),
        (None, None) => start + Duration::days(1),
    };
    let found: Vec<Value> = events(state)
        .into_iter()
        .filter(|event| event_bounds(event).is_some_and(|(s, e)| s < end && e > start))
        .map(|event| {
            json!({
                "start": event.get("start"),
                "end": event.get("end"),
                "summary": event.get("summary"),
                "description": event.get("description"),
                "location": event.get("location"),
            })
        })
        .collect();
    Ok(json!({"events": found}))
}

fn forecast(info: &EntityInfo, kind: &str) -> Result<Vec<Value>, ServiceError> {
    let flag = match kind {
        "daily" => "FORECAST_DAILY",
        "hourly" => "FORECAST_HOURLY",
        _ => "FORECAST_TWICE_DAILY",
    };
    let bit = catalog()
        .domain("weather")
        .and_then(|spec| spec.feature_bit(flag))
        .unwrap_or(0);
    if info.supported_features & bit == 0 {
        return Err(invalid(
            "type",
            format!("Weather entity does not support '{kind}' forecast"),
        ));
    }
    let conditions = ["sunny", "partlycloudy", "cloudy", "rainy", "sunny"];
    let step = if kind == "hourly" {
        Duration::hours(1)
    } else {
        Duration::days(1)
    };
    Ok(conditions
        .iter()
        .enumerate()
        .map(|(index, condition)| {
            let offset = i32::try_from(index).unwrap_or(0);
            json!({
                "datetime": iso(epoch() + step * offset),
                "condition": condition,
                "temperature": 21.0 + f64::from(offset),
                "templow": 12.0 + f64::from(offset),
                "precipitation_probability": offset * 10,
            })
        })
        .collect())
}

/// The demo library a media player browses: a folder of tracks.
fn library() -> Value {
    let tracks: Vec<Value> = (1..=5)
        .map(|track| {
            json!({
                "title": format!("Track {track}"), "media_class": "track",
                "media_content_id": format!("track-{track}"), "media_content_type": "music",
                "can_play": true, "can_expand": false, "thumbnail": null, "children": null
            })
        })
        .collect();
    json!({
        "title": "Demo library", "media_class": "directory", "media_content_id": "library",
        "media_content_type": "library", "can_play": false, "can_expand": true,
        "thumbnail": null, "children": tracks
    })
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// Answers a query-shaped call.
pub(crate) fn query(
    info: &EntityInfo,
    state: &DemoState,
    method: &str,
    args: &Map<String, Value>,
) -> Result<Value, ServiceError> {
    match (info.domain.as_str(), method) {
        ("calendar", "get_events") => get_events(state, args),
        ("weather", "get_forecasts") => {
            let kind = str_of(args, "type").unwrap_or("daily");
            Ok(json!({"forecast": forecast(info, kind)?}))
        }
        ("media_player", "browse_media") => {
            let library = library();
            match str_of(args, "media_content_id") {
                None | Some("library") => Ok(library),
                Some(id) => library["children"]
                    .as_array()
                    .and_then(|children| {
                        children
                            .iter()
                            .find(|child| child["media_content_id"].as_str() == Some(id))
                    })
                    .cloned()
                    .ok_or_else(|| invalid("media_content_id", format!("media {id} not found"))),
            }
        }
        ("media_player", "search_media") => {
            let needle = str_of(args, "search_query")
                .unwrap_or_default()
                .to_lowercase();
            let found: Vec<Value> = library()["children"]
                .as_array()
                .map(|children| {
                    children
                        .iter()
                        .filter(|child| {
                            child["title"]
                                .as_str()
                                .is_some_and(|title| title.to_lowercase().contains(&needle))
                        })
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            Ok(json!({"result": found}))
        }
        ("update", "release_notes") => {
            let latest = state
                .attributes
                .get("latest_version")
                .and_then(Value::as_str)
                .unwrap_or("?");
            Ok(Value::String(format!(
                "## Demo Hub firmware {latest}\n\n- Faster everything\n- Fewer bugs"
            )))
        }
        (domain, method) => Err(ServiceError::handler(format!(
            "the demo's {domain} entities do not answer {method}"
        ))),
    }
}
