//! `button`: a press publishes `payload_press`; its state is the time of the last press.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use homecore::{EntityInfo, ServiceError};

use super::{ConfigError, Fields, Outgoing, Platform, device_class, render_command, unsupported};
use crate::mqtt::value_template::ValueTemplate;

/// A discovered button.
pub(crate) struct Button {
    command_topic: String,
    command_template: Option<ValueTemplate>,
    payload_press: String,
    device_class: Option<String>,
    /// When it was last pressed, as Home Assistant writes it; unknown before.
    last_pressed: Option<String>,
    /// The clock (a field so tests can fix it).
    now: fn() -> DateTime<Utc>,
}

/// A UTC time as Python's `isoformat()` writes it (microseconds only when not zero).
pub(crate) fn iso_utc(time: DateTime<Utc>) -> String {
    if time.timestamp_subsec_micros() == 0 {
        time.format("%Y-%m-%dT%H:%M:%S+00:00").to_string()
    } else {
        time.format("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string()
    }
}

impl Button {
    pub(crate) fn from_config(fields: &Fields<'_>) -> Result<Self, ConfigError> {
        Ok(Self {
            command_topic: fields.required_topic("command_topic")?,
            command_template: fields.template("command_template")?,
            payload_press: fields.payload_or("payload_press", "PRESS")?,
            device_class: device_class(fields, "button")?,
            last_pressed: None,
            now: Utc::now,
        })
    }
}

impl Platform for Button {
    fn domain(&self) -> &'static str {
        "button"
    }

    fn topics(&self) -> Vec<(&'static str, String)> {
        Vec::new()
    }

    fn on_message(&mut self, _role: &'static str, _payload: &str) -> bool {
        false
    }

    fn state(&self) -> Option<String> {
        self.last_pressed.clone()
    }

    fn describe(&self, info: &mut EntityInfo) {
        info.device_class.clone_from(&self.device_class);
    }

    fn command(
        &mut self,
        service: &str,
        _data: &Map<String, Value>,
    ) -> Result<Vec<Outgoing>, ServiceError> {
        if service != "press" {
            return Err(unsupported("button", service));
        }
        let payload = render_command(
            self.command_template.as_ref(),
            Value::String(self.payload_press.clone()),
        )?;
        // Home Assistant stamps the press before the device is told.
        self.last_pressed = Some(iso_utc((self.now)()));
        Ok(vec![Outgoing {
            topic: self.command_topic.clone(),
            payload,
        }])
    }
}

#[cfg(test)]
#[path = "tests/button.rs"]
mod tests;
