//! `binary_sensor`: on/off from a state topic.

use serde_json::{Map, Value};

use homecore::{EntityInfo, ServiceError};

use super::{ConfigError, Fields, OnOff, Outgoing, Platform, on_off, render_received, unsupported};
use crate::mqtt::value_template::ValueTemplate;

/// A discovered binary sensor.
pub(crate) struct BinarySensor {
    state_topic: String,
    value_template: Option<ValueTemplate>,
    payloads: OnOff,
    device_class: Option<String>,
    is_on: Option<bool>,
}

impl BinarySensor {
    pub(crate) fn from_config(fields: &Fields<'_>) -> Result<Self, ConfigError> {
        Ok(Self {
            state_topic: fields.required_topic("state_topic")?,
            value_template: fields.template("value_template")?,
            payloads: OnOff::from_config(fields)?,
            device_class: fields.text("device_class")?,
            is_on: None,
        })
    }
}

impl Platform for BinarySensor {
    fn domain(&self) -> &'static str {
        "binary_sensor"
    }

    fn topics(&self) -> Vec<(&'static str, String)> {
        vec![("state", self.state_topic.clone())]
    }

    fn on_message(&mut self, _role: &'static str, payload: &str) -> bool {
        let Some(value) = render_received(self.value_template.as_ref(), payload) else {
            return false;
        };
        self.payloads.apply(&value, &mut self.is_on)
    }

    fn state(&self) -> Option<String> {
        on_off(self.is_on)
    }

    fn describe(&self, info: &mut EntityInfo) {
        info.device_class.clone_from(&self.device_class);
    }

    fn command(
        &mut self,
        service: &str,
        _data: &Map<String, Value>,
    ) -> Result<Vec<Outgoing>, ServiceError> {
        Err(unsupported("binary_sensor", service))
    }
}
