//! `number`: a value between `min` and `max` from a state topic, set through a command topic.

use serde_json::{Map, Value, json};

use homecore::{EntityInfo, ServiceError};

use super::{
    ConfigError, Fields, Outgoing, Platform, device_class, float_json, float_text, render_command,
    render_received_value, required_number, unsupported,
};
use crate::mqtt::value_template::ValueTemplate;

/// The display modes Home Assistant knows.
const MODES: [&str; 3] = ["auto", "box", "slider"];
/// Smallest step Home Assistant accepts.
const MIN_STEP: f64 = 1e-3;

/// A number value as Home Assistant keeps it: whole numbers received as digits stay whole.
#[derive(Debug, Clone, Copy, PartialEq)]
enum NumberValue {
    Whole(i64),
    Float(f64),
}

impl NumberValue {
    fn as_f64(self) -> f64 {
        match self {
            Self::Whole(whole) => whole as f64,
            Self::Float(float) => float,
        }
    }

    fn text(self) -> String {
        match self {
            Self::Whole(whole) => whole.to_string(),
            Self::Float(float) => float_text(float),
        }
    }

    fn json(self) -> Value {
        match self {
            Self::Whole(whole) => json!(whole),
            Self::Float(float) => float_json(float),
        }
    }

    /// A commanded value: whole when it has no fraction (Home Assistant publishes `42`, not
    /// `42.0`).
    fn commanded(value: f64) -> Self {
        if value.fract() == 0.0 && value.abs() < 1e15 {
            Self::Whole(value as i64)
        } else {
            Self::Float(value)
        }
    }
}

/// A discovered number.
pub(crate) struct Number {
    command_topic: String,
    state_topic: Option<String>,
    value_template: Option<ValueTemplate>,
    command_template: Option<ValueTemplate>,
    min: f64,
    max: f64,
    step: f64,
    mode: String,
    unit_of_measurement: Option<String>,
    device_class: Option<String>,
    payload_reset: String,
    optimistic: bool,
    value: Option<NumberValue>,
}

impl Number {
    pub(crate) fn from_config(fields: &Fields<'_>) -> Result<Self, ConfigError> {
        let min = fields.number_or("min", 1.0)?;
        let max = fields.number_or("max", 100.0)?;
        if min >= max {
            return Err(ConfigError::invalid("max", "must be greater than min"));
        }
        let step = fields.number_or("step", 1.0)?;
        if step < MIN_STEP {
            return Err(ConfigError::invalid(
                "step",
                format!("must be at least {MIN_STEP}"),
            ));
        }
        let mode = fields.text("mode")?.unwrap_or_else(|| "auto".to_owned());
        if !MODES.contains(&mode.as_str()) {
            return Err(ConfigError::invalid(
                "mode",
                format!("{mode:?} is not one of {MODES:?}"),
            ));
        }
        let state_topic = fields.topic("state_topic")?;
        Ok(Self {
            command_topic: fields.required_topic("command_topic")?,
            optimistic: fields.flag_or("optimistic", false)? || state_topic.is_none(),
            state_topic,
            value_template: fields.template("value_template")?,
            command_template: fields.template("command_template")?,
            min,
            max,
            step,
            mode,
            unit_of_measurement: fields.text("unit_of_measurement")?,
            device_class: device_class(fields, "number")?,
            payload_reset: fields.payload_or("payload_reset", "None")?,
            value: None,
        })
    }
}

impl Platform for Number {
    fn domain(&self) -> &'static str {
        "number"
    }

    fn topics(&self) -> Vec<(&'static str, String)> {
        super::state_topic(self.state_topic.as_ref())
    }

    fn on_message(&mut self, _role: &'static str, payload: &str) -> bool {
        let Some(value) = render_received_value(self.value_template.as_ref(), payload) else {
            return false;
        };
        let new = if value == self.payload_reset {
            None
        } else if !value.is_empty() && value.chars().all(|c| c.is_ascii_digit()) {
            match value.parse::<i64>() {
                Ok(whole) => Some(NumberValue::Whole(whole)),
                Err(_) => return false,
            }
        } else {
            match super::parse_float(&value) {
                Some(float) => Some(NumberValue::Float(float)),
                None => return false,
            }
        };
        // Home Assistant refuses a value outside the range (the state stays).
        if let Some(number) = new
            && !(self.min..=self.max).contains(&number.as_f64())
        {
            tracing::debug!("an MQTT number received a value outside its range; ignored");
            return false;
        }
        let changed = new != self.value;
        self.value = new;
        changed
    }

    fn state(&self) -> Option<String> {
        self.value.map(NumberValue::text)
    }

    fn describe(&self, info: &mut EntityInfo) {
        info.device_class.clone_from(&self.device_class);
        info.unit_of_measurement
            .clone_from(&self.unit_of_measurement);
        info.capabilities
            .insert("min".to_owned(), float_json(self.min));
        info.capabilities
            .insert("max".to_owned(), float_json(self.max));
        info.capabilities
            .insert("step".to_owned(), float_json(self.step));
        info.capabilities
            .insert("mode".to_owned(), Value::String(self.mode.clone()));
    }

    fn optimistic(&self) -> bool {
        self.optimistic
    }

    fn command(
        &mut self,
        service: &str,
        data: &Map<String, Value>,
    ) -> Result<Vec<Outgoing>, ServiceError> {
        if service != "set_value" {
            return Err(unsupported("number", service));
        }
        let value = required_number(data, "value")?;
        if !(self.min..=self.max).contains(&value) {
            return Err(ServiceError::validation(
                &["value"],
                format!(
                    "Value {} is outside valid range {} - {}",
                    float_text(value),
                    float_text(self.min),
                    float_text(self.max)
                ),
            ));
        }
        let number = NumberValue::commanded(value);
        let payload = render_command(self.command_template.as_ref(), number.json())?;
        if self.optimistic {
            self.value = Some(number);
        }
        Ok(vec![Outgoing {
            topic: self.command_topic.clone(),
            payload,
        }])
    }
}

#[cfg(test)]
#[path = "tests/number.rs"]
mod tests;
