//! `fan`: on/off through a command topic, with a speed percentage (scaled from the device's
//! speed range), preset modes, oscillation and direction, each with its own command and state
//! topics; each part optimistic without its state topic.

use serde_json::{Map, Value, json};

use homecore::{EntityInfo, ServiceError};

use super::{
    ConfigError, Fields, OnOff, Outgoing, PAYLOAD_NONE, Platform, float_json, no_topic, not_listed,
    number_field, on_off, render_command, render_received, required_number, text_field,
    unsupported,
};
use crate::mqtt::value_template::ValueTemplate;

/// Home Assistant's fan feature bits.
const SET_SPEED: u64 = 1;
const OSCILLATE: u64 = 2;
const DIRECTION: u64 = 4;
const PRESET_MODE: u64 = 8;
const TURN_OFF: u64 = 16;
const TURN_ON: u64 = 32;

/// The directions of the `fan` domain.
const DIRECTIONS: [&str; 2] = ["forward", "reverse"];

/// One part of a fan: where it is commanded and reported, with its templates.
struct Part {
    command_topic: Option<String>,
    command_template: Option<ValueTemplate>,
    state_topic: Option<String>,
    value_template: Option<ValueTemplate>,
    optimistic: bool,
}

impl Part {
    fn from_config(
        fields: &Fields<'_>,
        name: &str,
        value_template: &str,
        optimistic: bool,
    ) -> Result<Self, ConfigError> {
        let state_topic = fields.topic(&format!("{name}_state_topic"))?;
        Ok(Self {
            command_topic: fields.topic(&format!("{name}_command_topic"))?,
            command_template: fields.template(&format!("{name}_command_template"))?,
            optimistic: optimistic || state_topic.is_none(),
            state_topic,
            value_template: fields.template(value_template)?,
        })
    }

    fn publish(
        &self,
        service: &str,
        topic_key: &str,
        value: Value,
    ) -> Result<Outgoing, ServiceError> {
        let Some(topic) = &self.command_topic else {
            return Err(no_topic(service, topic_key));
        };
        Ok(Outgoing {
            topic: topic.clone(),
            payload: render_command(self.command_template.as_ref(), value)?,
        })
    }
}

/// The device's speed range (`speed_range_min`..`speed_range_max`), Home Assistant's ranged
/// values.
#[derive(Debug, Clone, Copy)]
struct SpeedRange {
    min: i64,
    max: i64,
}

impl SpeedRange {
    fn states(self) -> i64 {
        self.max - self.min + 1
    }

    /// `ranged_value_to_percentage`, in 128 bits: a device's value is any 64-bit number.
    fn to_percentage(self, value: i64) -> i64 {
        let percentage = ((i128::from(value) - (i128::from(self.min) - 1)) * 100)
            .div_euclid(i128::from(self.states()));
        i64::try_from(percentage).unwrap_or(if percentage < 0 { i64::MIN } else { i64::MAX })
    }

    /// `ceil(percentage_to_ranged_value)`.
    fn device_value(self, percentage: f64) -> i64 {
        (self.states() as f64 * percentage / 100.0 + (self.min - 1) as f64).ceil() as i64
    }
}

/// A discovered fan.
pub(crate) struct Fan {
    command_topic: String,
    command_template: Option<ValueTemplate>,
    state_topic: Option<String>,
    state_value_template: Option<ValueTemplate>,
    payloads: OnOff,
    percentage: Part,
    speed_range: SpeedRange,
    payload_reset_percentage: String,
    preset: Part,
    preset_modes: Vec<String>,
    payload_reset_preset_mode: String,
    oscillation: Part,
    payload_oscillation_on: String,
    payload_oscillation_off: String,
    direction: Part,
    optimistic: bool,
    is_on: Option<bool>,
    current_percentage: Option<i64>,
    preset_mode: Option<String>,
    oscillating: Option<bool>,
    current_direction: Option<String>,
}

impl Fan {
    pub(crate) fn from_config(fields: &Fields<'_>) -> Result<Self, ConfigError> {
        let forced = fields.flag_or("optimistic", false)?;
        let speed_range = SpeedRange {
            min: fields.number_or("speed_range_min", 1.0)? as i64,
            max: fields.number_or("speed_range_max", 100.0)? as i64,
        };
        if speed_range.min <= 0 {
            return Err(ConfigError::invalid("speed_range_min", "must be > 0"));
        }
        if speed_range.min >= speed_range.max {
            return Err(ConfigError::invalid(
                "speed_range_max",
                "must be > speed_range_min",
            ));
        }
        let preset =
            Part::from_config(fields, "preset_mode", "preset_mode_value_template", forced)?;
        let preset_modes = fields.text_list("preset_modes")?.unwrap_or_default();
        if preset.command_topic.is_none() && !preset_modes.is_empty() {
            return Err(ConfigError::invalid(
                "preset_modes",
                "must be set together with preset_mode_command_topic",
            ));
        }
        let payload_reset_preset_mode = fields.payload_or("payload_reset_preset_mode", "None")?;
        if preset_modes.contains(&payload_reset_preset_mode) {
            return Err(ConfigError::invalid(
                "preset_modes",
                "must not contain payload_reset_preset_mode",
            ));
        }
        let state_topic = fields.topic("state_topic")?;
        let payload_on = fields.payload_or("payload_on", "ON")?;
        let payload_off = fields.payload_or("payload_off", "OFF")?;
        let oscillation =
            Part::from_config(fields, "oscillation", "oscillation_value_template", forced)?;
        Ok(Self {
            command_topic: fields.required_topic("command_topic")?,
            command_template: fields.template("command_template")?,
            optimistic: forced || state_topic.is_none(),
            state_topic,
            state_value_template: fields.template("state_value_template")?,
            payloads: OnOff {
                state_on: payload_on.clone(),
                state_off: payload_off.clone(),
                payload_on,
                payload_off,
            },
            percentage: Part::from_config(
                fields,
                "percentage",
                "percentage_value_template",
                forced,
            )?,
            speed_range,
            payload_reset_percentage: fields.payload_or("payload_reset_percentage", "None")?,
            preset,
            preset_modes,
            payload_reset_preset_mode,
            payload_oscillation_on: fields.payload_or("payload_oscillation_on", "oscillate_on")?,
            payload_oscillation_off: fields
                .payload_or("payload_oscillation_off", "oscillate_off")?,
            // Home Assistant starts a reported oscillation at off.
            oscillating: oscillation.state_topic.is_some().then_some(false),
            oscillation,
            direction: Part::from_config(fields, "direction", "direction_value_template", forced)?,
            is_on: None,
            current_percentage: None,
            preset_mode: None,
            current_direction: None,
        })
    }

    fn features(&self) -> u64 {
        let mut features = TURN_ON | TURN_OFF;
        for (part, bit) in [
            (&self.percentage, SET_SPEED),
            (&self.preset, PRESET_MODE),
            (&self.oscillation, OSCILLATE),
            (&self.direction, DIRECTION),
        ] {
            if part.command_topic.is_some() {
                features |= bit;
            }
        }
        features
    }

    fn speed_count(&self) -> i64 {
        if self.percentage.command_topic.is_some() {
            self.speed_range.states().min(100)
        } else {
            100
        }
    }

    fn percentage_step(&self) -> f64 {
        100.0 / self.speed_count() as f64
    }

    fn on_state(&mut self, payload: &str) -> bool {
        let Some(value) = render_received(self.state_value_template.as_ref(), payload) else {
            return false;
        };
        let new = match self.payloads.parse(&value) {
            Some(on) => Some(on),
            None if value == PAYLOAD_NONE => None,
            None => return false,
        };
        let changed = new != self.is_on;
        self.is_on = new;
        changed
    }

    fn on_percentage(&mut self, payload: &str) -> bool {
        let Some(value) = render_received(self.percentage.value_template.as_ref(), payload) else {
            return false;
        };
        if value.is_empty() {
            return false;
        }
        let new = if value == self.payload_reset_percentage {
            None
        } else {
            let Ok(speed) = value.trim().parse::<i64>() else {
                return false;
            };
            let percentage = self.speed_range.to_percentage(speed);
            if !(0..=100).contains(&percentage) {
                return false;
            }
            Some(percentage)
        };
        let changed = new != self.current_percentage;
        self.current_percentage = new;
        changed
    }

    fn on_preset(&mut self, payload: &str) -> bool {
        let Some(value) = render_received(self.preset.value_template.as_ref(), payload) else {
            return false;
        };
        let new = if value == self.payload_reset_preset_mode {
            None
        } else if self.preset_modes.contains(&value) {
            Some(value)
        } else {
            return false;
        };
        let changed = new != self.preset_mode;
        self.preset_mode = new;
        changed
    }

    fn on_oscillation(&mut self, payload: &str) -> bool {
        let Some(value) = render_received(self.oscillation.value_template.as_ref(), payload) else {
            return false;
        };
        let new = if value == self.payload_oscillation_on {
            true
        } else if value == self.payload_oscillation_off {
            false
        } else {
            return false;
        };
        let changed = Some(new) != self.oscillating;
        self.oscillating = Some(new);
        changed
    }

    fn on_direction(&mut self, payload: &str) -> bool {
        let Some(value) = render_received(self.direction.value_template.as_ref(), payload) else {
            return false;
        };
        if !DIRECTIONS.contains(&value.as_str()) {
            return false;
        }
        let changed = self.current_direction.as_deref() != Some(value.as_str());
        self.current_direction = Some(value);
        changed
    }

    fn on_off_message(&mut self, on: bool) -> Result<Outgoing, ServiceError> {
        let payload = if on {
            &self.payloads.payload_on
        } else {
            &self.payloads.payload_off
        };
        let payload = render_command(
            self.command_template.as_ref(),
            Value::String(payload.clone()),
        )?;
        if self.optimistic {
            self.is_on = Some(on);
        }
        Ok(Outgoing {
            topic: self.command_topic.clone(),
            payload,
        })
    }

    fn set_percentage(&mut self, service: &str, percentage: f64) -> Result<Outgoing, ServiceError> {
        let percentage = percentage.clamp(0.0, 100.0);
        let device_value = self.speed_range.device_value(percentage);
        let message =
            self.percentage
                .publish(service, "percentage_command_topic", json!(device_value))?;
        if self.percentage.optimistic {
            self.current_percentage = Some(percentage.round() as i64);
        }
        Ok(message)
    }

    fn check_preset(&self, preset: &str) -> Result<(), ServiceError> {
        if self.preset_modes.iter().any(|mode| mode == preset) {
            Ok(())
        } else {
            Err(not_listed("preset_mode", preset, &self.preset_modes))
        }
    }

    fn set_preset(&mut self, service: &str, preset: &str) -> Result<Outgoing, ServiceError> {
        self.check_preset(preset)?;
        let message = self
            .preset
            .publish(service, "preset_mode_command_topic", json!(preset))?;
        if self.preset.optimistic {
            self.preset_mode = Some(preset.to_owned());
        }
        Ok(message)
    }

    /// `increase_speed` / `decrease_speed`: by `percentage_step`, or one of its speeds.
    fn adjust_speed(
        &mut self,
        service: &str,
        step: Option<f64>,
        up: bool,
    ) -> Result<Outgoing, ServiceError> {
        let sign = if up { 1.0 } else { -1.0 };
        let current = self.current_percentage.unwrap_or(0) as f64;
        let target = match step {
            Some(step) => current + step * sign,
            None => {
                let speeds = SpeedRange {
                    min: 1,
                    max: self.speed_count(),
                };
                let index = speeds.device_value(current) + sign as i64;
                speeds.to_percentage(index) as f64
            }
        };
        self.set_percentage(service, target.clamp(0.0, 100.0))
    }
}

impl Platform for Fan {
    fn domain(&self) -> &'static str {
        "fan"
    }

    fn topics(&self) -> Vec<(&'static str, String)> {
        [
            ("state", &self.state_topic),
            ("percentage", &self.percentage.state_topic),
            ("preset_mode", &self.preset.state_topic),
            ("oscillation", &self.oscillation.state_topic),
            ("direction", &self.direction.state_topic),
        ]
        .into_iter()
        .filter_map(|(role, topic)| topic.as_ref().map(|topic| (role, topic.clone())))
        .collect()
    }

    fn on_message(&mut self, role: &'static str, payload: &str) -> bool {
        match role {
            "state" => self.on_state(payload),
            "percentage" => self.on_percentage(payload),
            "preset_mode" => self.on_preset(payload),
            "oscillation" => self.on_oscillation(payload),
            "direction" => self.on_direction(payload),
            _ => false,
        }
    }

    fn state(&self) -> Option<String> {
        on_off(self.is_on)
    }

    fn attributes(&self) -> Map<String, Value> {
        let features = self.features();
        let mut attributes = Map::new();
        if features & DIRECTION != 0 {
            attributes.insert("direction".to_owned(), json!(self.current_direction));
        }
        if features & OSCILLATE != 0 {
            attributes.insert("oscillating".to_owned(), json!(self.oscillating));
        }
        if features & SET_SPEED != 0 {
            attributes.insert("percentage".to_owned(), json!(self.current_percentage));
            attributes.insert(
                "percentage_step".to_owned(),
                float_json(self.percentage_step()),
            );
        }
        if features & (SET_SPEED | PRESET_MODE) != 0 {
            attributes.insert("preset_mode".to_owned(), json!(self.preset_mode));
        }
        attributes
    }

    fn describe(&self, info: &mut EntityInfo) {
        let features = self.features();
        info.supported_features = features;
        if features & (SET_SPEED | PRESET_MODE) != 0 {
            info.capabilities
                .insert("preset_modes".to_owned(), json!(self.preset_modes));
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
        Ok(match service {
            "turn_on" => {
                let preset = text_field(data, "preset_mode");
                if let Some(preset) = preset {
                    self.check_preset(preset)?;
                }
                let mut messages = vec![self.on_off_message(true)?];
                if let Some(percentage) = number_field(data, "percentage").filter(|p| *p != 0.0) {
                    messages.push(self.set_percentage(service, percentage)?);
                }
                if let Some(preset) = preset {
                    messages.push(self.set_preset(service, preset)?);
                }
                messages
            }
            "turn_off" => vec![self.on_off_message(false)?],
            "toggle" => {
                let on = self.is_on != Some(true);
                return self.command(if on { "turn_on" } else { "turn_off" }, &Map::new());
            }
            "set_percentage" => {
                let percentage = required_number(data, "percentage")?;
                vec![self.set_percentage(service, percentage)?]
            }
            "increase_speed" | "decrease_speed" => {
                let step = number_field(data, "percentage_step");
                vec![self.adjust_speed(service, step, service == "increase_speed")?]
            }
            "set_preset_mode" => {
                let preset = text_field(data, "preset_mode")
                    .unwrap_or_default()
                    .to_owned();
                vec![self.set_preset(service, &preset)?]
            }
            "oscillate" => {
                let oscillating = data
                    .get("oscillating")
                    .and_then(Value::as_bool)
                    .ok_or_else(|| {
                        ServiceError::validation(
                            &["oscillating"],
                            "oscillating must be true or false",
                        )
                    })?;
                let payload = if oscillating {
                    &self.payload_oscillation_on
                } else {
                    &self.payload_oscillation_off
                };
                let message = self.oscillation.publish(
                    service,
                    "oscillation_command_topic",
                    Value::String(payload.clone()),
                )?;
                if self.oscillation.optimistic {
                    self.oscillating = Some(oscillating);
                }
                vec![message]
            }
            "set_direction" => {
                let direction = text_field(data, "direction").unwrap_or_default();
                if !DIRECTIONS.contains(&direction) {
                    return Err(ServiceError::validation(
                        &["direction"],
                        "direction must be forward or reverse",
                    ));
                }
                let message =
                    self.direction
                        .publish(service, "direction_command_topic", json!(direction))?;
                if self.direction.optimistic {
                    self.current_direction = Some(direction.to_owned());
                }
                vec![message]
            }
            other => return Err(unsupported("fan", other)),
        })
    }
}

#[cfg(test)]
#[path = "tests/fan.rs"]
mod tests;
