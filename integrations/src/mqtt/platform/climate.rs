//! `climate`: HVAC mode, target temperature, fan mode and preset, each through its own command
//! and state topics (optimistic without a state topic), the current temperature and action
//! reported, power on/off through a power topic or the modes.

use serde_json::{Map, Value, json};

use homecore::{EntityInfo, ServiceError};

use super::{
    ConfigError, Fields, Outgoing, PAYLOAD_NONE, Platform, float_json, not_listed, number_field,
    parse_float, render_command, render_received, text_field, unsupported,
};
use crate::mqtt::value_template::ValueTemplate;

/// Home Assistant's climate feature bits.
const TARGET_TEMPERATURE: u64 = 1;
const FAN_MODE: u64 = 8;
const PRESET_MODE: u64 = 16;
const TURN_OFF: u64 = 128;
const TURN_ON: u64 = 256;

/// The HVAC modes of the `climate` domain.
const HVAC_MODES: [&str; 7] = [
    "off",
    "heat",
    "cool",
    "heat_cool",
    "auto",
    "dry",
    "fan_only",
];
/// Home Assistant's default `modes`.
const DEFAULT_MODES: [&str; 6] = ["auto", "off", "cool", "heat", "dry", "fan_only"];
/// Home Assistant's default `fan_modes`.
const DEFAULT_FAN_MODES: [&str; 4] = ["auto", "low", "medium", "high"];
/// The HVAC actions Home Assistant knows.
const HVAC_ACTIONS: [&str; 8] = [
    "off",
    "preheating",
    "heating",
    "cooling",
    "drying",
    "idle",
    "fan",
    "defrosting",
];
/// The preset meaning "no preset".
const PRESET_NONE: &str = "none";

/// One commanded setting: its topics and templates.
struct Setting {
    command_topic: Option<String>,
    command_template: Option<ValueTemplate>,
    state_topic: Option<String>,
    state_template: Option<ValueTemplate>,
}

impl Setting {
    fn from_config(
        fields: &Fields<'_>,
        name: &str,
        state_template: &str,
        fallback: Option<&ValueTemplate>,
    ) -> Result<Self, ConfigError> {
        Ok(Self {
            command_topic: fields.topic(&format!("{name}_command_topic"))?,
            command_template: fields.template(&format!("{name}_command_template"))?,
            state_topic: fields.topic(&format!("{name}_state_topic"))?,
            state_template: fields
                .template(state_template)?
                .or_else(|| fallback.cloned()),
        })
    }

    /// The message setting it to `value`; none without a command topic (Home Assistant then
    /// only changes what it shows).
    fn publish(&self, value: Value, out: &mut Vec<Outgoing>) -> Result<(), ServiceError> {
        if let Some(topic) = &self.command_topic {
            out.push(Outgoing {
                topic: topic.clone(),
                payload: render_command(self.command_template.as_ref(), value)?,
            });
        }
        Ok(())
    }
}

/// A discovered climate device.
pub(crate) struct Climate {
    modes: Vec<String>,
    mode: Setting,
    temperature: Setting,
    fan_modes: Vec<String>,
    fan: Setting,
    preset_modes: Vec<String>,
    preset: Setting,
    current_temperature_topic: Option<String>,
    current_temperature_template: Option<ValueTemplate>,
    action_topic: Option<String>,
    action_template: Option<ValueTemplate>,
    power_command_topic: Option<String>,
    power_command_template: Option<ValueTemplate>,
    payload_on: String,
    payload_off: String,
    min_temp: f64,
    max_temp: f64,
    temp_step: f64,
    precision: f64,
    optimistic: bool,
    hvac_mode: Option<String>,
    target_temperature: Option<f64>,
    current_temperature: Option<f64>,
    hvac_action: Option<String>,
    fan_mode: Option<String>,
    preset_mode: Option<String>,
}

fn list_or(fields: &Fields<'_>, key: &str, default: &[&str]) -> Result<Vec<String>, ConfigError> {
    Ok(fields
        .text_list(key)?
        .unwrap_or_else(|| default.iter().map(|item| (*item).to_owned()).collect()))
}

impl Climate {
    pub(crate) fn from_config(fields: &Fields<'_>) -> Result<Self, ConfigError> {
        let modes = list_or(fields, "modes", &DEFAULT_MODES)?;
        if let Some(bad) = modes
            .iter()
            .find(|mode| !HVAC_MODES.contains(&mode.as_str()))
        {
            return Err(ConfigError::invalid(
                "modes",
                format!("{bad:?} is not one of {HVAC_MODES:?}"),
            ));
        }
        let fahrenheit = match fields.text("temperature_unit")?.as_deref() {
            None | Some("C" | "°C") => false,
            Some("F" | "°F") => true,
            Some(other) => {
                return Err(ConfigError::invalid(
                    "temperature_unit",
                    format!("{other:?} is neither C nor F"),
                ));
            }
        };
        let celsius = |value: f64| {
            if fahrenheit {
                value * 1.8 + 32.0
            } else {
                value
            }
        };
        let precision = match fields.raw("precision") {
            None => {
                if fahrenheit {
                    1.0
                } else {
                    0.1
                }
            }
            Some(_) => {
                let precision = fields.number_or("precision", 0.1)?;
                if ![0.1, 0.5, 1.0].contains(&precision) {
                    return Err(ConfigError::invalid("precision", "must be 0.1, 0.5 or 1.0"));
                }
                precision
            }
        };
        let min_temp = fields.number_or("min_temp", celsius(7.0))?;
        let max_temp = fields.number_or("max_temp", celsius(35.0))?;
        if min_temp >= max_temp {
            return Err(ConfigError::invalid(
                "max_temp",
                "must be greater than min_temp",
            ));
        }
        let temp_step = fields.number_or("temp_step", 1.0)?;
        if temp_step <= 0.0 {
            return Err(ConfigError::invalid("temp_step", "must be positive"));
        }
        let value_template = fields.template("value_template")?;
        let fallback = value_template.as_ref();
        let mode = Setting::from_config(fields, "mode", "mode_state_template", fallback)?;
        let temperature = Setting::from_config(
            fields,
            "temperature",
            "temperature_state_template",
            fallback,
        )?;
        let fan = Setting::from_config(fields, "fan_mode", "fan_mode_state_template", fallback)?;
        let preset = Setting::from_config(
            fields,
            "preset_mode",
            "preset_mode_value_template",
            fallback,
        )?;
        let mut preset_modes = fields.text_list("preset_modes")?.unwrap_or_default();
        if preset.command_topic.is_none() && !preset_modes.is_empty() {
            return Err(ConfigError::invalid(
                "preset_modes",
                "must be set together with preset_mode_command_topic",
            ));
        }
        if preset_modes.iter().any(|mode| mode == PRESET_NONE) {
            return Err(ConfigError::invalid(
                "preset_modes",
                "must not include preset mode 'none'",
            ));
        }
        if !preset_modes.is_empty() {
            preset_modes.insert(0, PRESET_NONE.to_owned());
        }
        let optimistic = fields.flag_or("optimistic", false)?;
        // Home Assistant's starting values for what nothing reports.
        let unreported = |setting: &Setting| optimistic || setting.state_topic.is_none();
        Ok(Self {
            hvac_mode: unreported(&mode).then(|| "off".to_owned()),
            target_temperature: unreported(&temperature).then(|| celsius(21.0)),
            fan_mode: unreported(&fan).then(|| "low".to_owned()),
            preset_mode: preset
                .command_topic
                .is_some()
                .then(|| PRESET_NONE.to_owned()),
            current_temperature_topic: fields.topic("current_temperature_topic")?,
            current_temperature_template: fields
                .template("current_temperature_template")?
                .or_else(|| value_template.clone()),
            action_topic: fields.topic("action_topic")?,
            action_template: fields
                .template("action_template")?
                .or_else(|| value_template.clone()),
            power_command_topic: fields.topic("power_command_topic")?,
            power_command_template: fields.template("power_command_template")?,
            payload_on: fields.payload_or("payload_on", "ON")?,
            payload_off: fields.payload_or("payload_off", "OFF")?,
            fan_modes: list_or(fields, "fan_modes", &DEFAULT_FAN_MODES)?,
            modes,
            mode,
            temperature,
            fan,
            preset_modes,
            preset,
            min_temp,
            max_temp,
            temp_step,
            precision,
            optimistic,
            current_temperature: None,
            hvac_action: None,
        })
    }

    fn features(&self) -> u64 {
        let mut features = TURN_ON | TURN_OFF;
        let configured =
            |setting: &Setting| setting.command_topic.is_some() || setting.state_topic.is_some();
        if configured(&self.temperature) {
            features |= TARGET_TEMPERATURE;
        }
        if configured(&self.fan) {
            features |= FAN_MODE;
        }
        if self.preset.command_topic.is_some() {
            features |= PRESET_MODE;
        }
        features
    }

    /// A temperature as Home Assistant shows it, rounded to the precision.
    fn shown(&self, value: Option<f64>) -> Value {
        match value {
            None => Value::Null,
            Some(value) if self.precision == 1.0 => json!(value.round_ties_even() as i64),
            Some(value) if self.precision == 0.5 => {
                float_json((value * 2.0).round_ties_even() / 2.0)
            }
            Some(value) => float_json((value * 10.0).round_ties_even() / 10.0),
        }
    }

    fn is_optimistic(&self, setting: &Setting) -> bool {
        self.optimistic || setting.state_topic.is_none()
    }

    fn set_mode(&mut self, mode: &str, out: &mut Vec<Outgoing>) -> Result<(), ServiceError> {
        if !self.modes.iter().any(|known| known == mode) {
            return Err(not_listed("hvac_mode", mode, &self.modes));
        }
        self.mode.publish(json!(mode), out)?;
        if self.is_optimistic(&self.mode) {
            self.hvac_mode = Some(mode.to_owned());
        }
        Ok(())
    }

    fn turn(&mut self, on: bool, out: &mut Vec<Outgoing>) -> Result<(), ServiceError> {
        if let Some(topic) = &self.power_command_topic {
            let payload = if on {
                &self.payload_on
            } else {
                &self.payload_off
            };
            out.push(Outgoing {
                topic: topic.clone(),
                payload: render_command(self.power_command_template.as_ref(), json!(payload))?,
            });
            if !on && self.optimistic {
                self.hvac_mode = Some("off".to_owned());
            }
            return Ok(());
        }
        let has = |mode: &str| self.modes.iter().any(|known| known == mode);
        let target = if !on {
            has("off").then_some("off")
        } else if self.modes.len() == 2 && has("off") {
            self.modes
                .iter()
                .map(String::as_str)
                .find(|mode| *mode != "off")
        } else {
            ["heat_cool", "heat", "cool"]
                .into_iter()
                .find(|mode| has(mode))
        };
        let Some(target) = target.map(str::to_owned) else {
            return Err(ServiceError::handler(format!(
                "this MQTT climate has no mode to turn {}",
                if on { "on" } else { "off" }
            )));
        };
        self.set_mode(&target, out)
    }

    fn set_temperature(
        &mut self,
        data: &Map<String, Value>,
        out: &mut Vec<Outgoing>,
    ) -> Result<(), ServiceError> {
        let temperature = number_field(data, "temperature");
        if let Some(temperature) = temperature
            && !(self.min_temp..=self.max_temp).contains(&temperature)
        {
            return Err(ServiceError::validation(
                &["temperature"],
                format!(
                    "Provided temperature {temperature} is not valid. Accepted range is {} to {}",
                    self.min_temp, self.max_temp
                ),
            ));
        }
        if let Some(mode) = text_field(data, "hvac_mode") {
            self.set_mode(mode, out)?;
        }
        if let Some(temperature) = temperature {
            self.temperature.publish(float_json(temperature), out)?;
            if self.is_optimistic(&self.temperature) {
                self.target_temperature = Some(temperature);
            }
        }
        Ok(())
    }

    fn set_listed(
        &mut self,
        service: &str,
        data: &Map<String, Value>,
        out: &mut Vec<Outgoing>,
    ) -> Result<(), ServiceError> {
        let (field, list, setting) = if service == "set_fan_mode" {
            ("fan_mode", &self.fan_modes, &self.fan)
        } else {
            ("preset_mode", &self.preset_modes, &self.preset)
        };
        let value = text_field(data, field).unwrap_or_default();
        if !list.iter().any(|known| known == value) {
            return Err(not_listed(field, value, list));
        }
        setting.publish(json!(value), out)?;
        let optimistic = self.is_optimistic(setting);
        if optimistic {
            let slot = if service == "set_fan_mode" {
                &mut self.fan_mode
            } else {
                &mut self.preset_mode
            };
            *slot = Some(value.to_owned());
        }
        Ok(())
    }
}

/// Reads a received number: `Some(None)` for `None`, `None` to ignore the message.
fn received_number(template: Option<&ValueTemplate>, payload: &str) -> Option<Option<f64>> {
    let value = render_received(template, payload)?;
    if value.is_empty() {
        return None;
    }
    if value == PAYLOAD_NONE {
        return Some(None);
    }
    parse_float(&value).map(Some)
}

impl Platform for Climate {
    fn domain(&self) -> &'static str {
        "climate"
    }

    fn topics(&self) -> Vec<(&'static str, String)> {
        [
            ("mode", &self.mode.state_topic),
            ("temperature", &self.temperature.state_topic),
            ("current_temperature", &self.current_temperature_topic),
            ("action", &self.action_topic),
            ("fan_mode", &self.fan.state_topic),
            ("preset_mode", &self.preset.state_topic),
        ]
        .into_iter()
        .filter_map(|(role, topic)| topic.as_ref().map(|topic| (role, topic.clone())))
        .collect()
    }

    fn on_message(&mut self, role: &'static str, payload: &str) -> bool {
        fn replace<T: PartialEq>(slot: &mut T, new: T) -> bool {
            let changed = *slot != new;
            *slot = new;
            changed
        }
        match role {
            "temperature" | "current_temperature" => {
                let template = if role == "temperature" {
                    self.temperature.state_template.as_ref()
                } else {
                    self.current_temperature_template.as_ref()
                };
                let Some(number) = received_number(template, payload) else {
                    return false;
                };
                if role == "temperature" {
                    replace(&mut self.target_temperature, number)
                } else {
                    replace(&mut self.current_temperature, number)
                }
            }
            "mode" | "fan_mode" | "action" | "preset_mode" => {
                let (template, list, slot) = match role {
                    "mode" => (&self.mode.state_template, &self.modes, &mut self.hvac_mode),
                    "fan_mode" => (
                        &self.fan.state_template,
                        &self.fan_modes,
                        &mut self.fan_mode,
                    ),
                    "preset_mode" => (
                        &self.preset.state_template,
                        &self.preset_modes,
                        &mut self.preset_mode,
                    ),
                    _ => (&self.action_template, &Vec::new(), &mut self.hvac_action),
                };
                let Some(value) = render_received(template.as_ref(), payload) else {
                    return false;
                };
                let new = if value == PAYLOAD_NONE {
                    // A reset preset is "none", not unknown.
                    (role == "preset_mode").then(|| PRESET_NONE.to_owned())
                } else if role == "action" {
                    if !HVAC_ACTIONS.contains(&value.as_str()) {
                        return false;
                    }
                    Some(value)
                } else if list.contains(&value) {
                    Some(value)
                } else {
                    return false;
                };
                replace(slot, new)
            }
            _ => false,
        }
    }

    fn state(&self) -> Option<String> {
        self.hvac_mode.clone()
    }

    fn attributes(&self) -> Map<String, Value> {
        let features = self.features();
        let mut attributes = Map::new();
        attributes.insert(
            "current_temperature".to_owned(),
            self.shown(self.current_temperature),
        );
        if features & TARGET_TEMPERATURE != 0 {
            attributes.insert(
                "temperature".to_owned(),
                self.shown(self.target_temperature),
            );
        }
        if features & FAN_MODE != 0 {
            attributes.insert("fan_mode".to_owned(), json!(self.fan_mode));
        }
        if let Some(action) = &self.hvac_action {
            attributes.insert("hvac_action".to_owned(), json!(action));
        }
        if features & PRESET_MODE != 0 {
            attributes.insert("preset_mode".to_owned(), json!(self.preset_mode));
        }
        attributes
    }

    fn describe(&self, info: &mut EntityInfo) {
        let features = self.features();
        info.supported_features = features;
        let capabilities = &mut info.capabilities;
        capabilities.insert("hvac_modes".to_owned(), json!(self.modes));
        capabilities.insert("min_temp".to_owned(), self.shown(Some(self.min_temp)));
        capabilities.insert("max_temp".to_owned(), self.shown(Some(self.max_temp)));
        capabilities.insert("target_temp_step".to_owned(), float_json(self.temp_step));
        if features & FAN_MODE != 0 {
            capabilities.insert("fan_modes".to_owned(), json!(self.fan_modes));
        }
        if features & PRESET_MODE != 0 {
            capabilities.insert("preset_modes".to_owned(), json!(self.preset_modes));
        }
    }

    fn optimistic(&self) -> bool {
        self.optimistic
    }

    fn command(
        &mut self,
        service: &str,
        data: &Map<String, Value>,
    ) -> Result<Vec<Outgoing>, ServiceError> {
        let mut out = Vec::new();
        match service {
            "set_hvac_mode" => {
                let mode = text_field(data, "hvac_mode").unwrap_or_default().to_owned();
                self.set_mode(&mode, &mut out)?;
            }
            "set_temperature" => self.set_temperature(data, &mut out)?,
            "set_fan_mode" | "set_preset_mode" => self.set_listed(service, data, &mut out)?,
            "turn_on" => self.turn(true, &mut out)?,
            "turn_off" => self.turn(false, &mut out)?,
            "toggle" => {
                let on = self.hvac_mode.as_deref() == Some("off");
                self.turn(on, &mut out)?;
            }
            other => return Err(unsupported("climate", other)),
        }
        Ok(out)
    }
}

#[cfg(test)]
#[path = "tests/climate.rs"]
mod tests;
