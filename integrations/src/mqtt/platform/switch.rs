//! `switch`: on/off through a command topic, its state from a state topic, or optimistic.

use serde_json::{Map, Value};

use homecore::{EntityInfo, ServiceError};

use super::{ConfigError, Fields, OnOff, Outgoing, Platform, on_off, render_received, unsupported};
use crate::mqtt::value_template::ValueTemplate;

/// A discovered switch.
pub(crate) struct Switch {
    command_topic: String,
    state_topic: Option<String>,
    value_template: Option<ValueTemplate>,
    payloads: OnOff,
    optimistic: bool,
    device_class: Option<String>,
    is_on: Option<bool>,
}

impl Switch {
    pub(crate) fn from_config(fields: &Fields<'_>) -> Result<Self, ConfigError> {
        let state_topic = fields.topic("state_topic")?;
        Ok(Self {
            command_topic: fields.required_topic("command_topic")?,
            optimistic: fields.flag_or("optimistic", state_topic.is_none())?,
            state_topic,
            value_template: fields.template("value_template")?,
            payloads: OnOff::from_config(fields)?,
            device_class: fields.text("device_class")?,
            is_on: None,
        })
    }
}

impl Platform for Switch {
    fn domain(&self) -> &'static str {
        "switch"
    }

    fn topics(&self) -> Vec<(&'static str, String)> {
        super::state_topic(self.state_topic.as_ref())
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

    fn optimistic(&self) -> bool {
        self.optimistic
    }

    fn command(
        &mut self,
        service: &str,
        _data: &Map<String, Value>,
    ) -> Result<Vec<Outgoing>, ServiceError> {
        let on = match service {
            "turn_on" => true,
            "turn_off" => false,
            "toggle" => self.is_on != Some(true),
            other => return Err(unsupported("switch", other)),
        };
        if self.optimistic {
            self.is_on = Some(on);
        }
        let payload = if on {
            &self.payloads.payload_on
        } else {
            &self.payloads.payload_off
        };
        Ok(vec![Outgoing {
            topic: self.command_topic.clone(),
            payload: payload.clone(),
        }])
    }
}
