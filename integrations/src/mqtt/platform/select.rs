//! `select`: one of a list of options, from a state topic, chosen through a command topic.

use serde_json::{Map, Value};

use homecore::{EntityInfo, ServiceError};

use super::{
    ConfigError, Fields, Outgoing, Platform, not_listed, render_command, render_received_value,
    text_field, unsupported,
};
use crate::mqtt::value_template::ValueTemplate;

/// A discovered select.
pub(crate) struct Select {
    command_topic: String,
    state_topic: Option<String>,
    value_template: Option<ValueTemplate>,
    command_template: Option<ValueTemplate>,
    options: Vec<String>,
    optimistic: bool,
    current: Option<String>,
}

impl Select {
    pub(crate) fn from_config(fields: &Fields<'_>) -> Result<Self, ConfigError> {
        let options = fields
            .text_list("options")?
            .ok_or(ConfigError::Missing("options"))?;
        if options.is_empty() {
            return Err(ConfigError::invalid("options", "must not be empty"));
        }
        let state_topic = fields.topic("state_topic")?;
        Ok(Self {
            command_topic: fields.required_topic("command_topic")?,
            optimistic: fields.flag_or("optimistic", false)? || state_topic.is_none(),
            state_topic,
            value_template: fields.template("value_template")?,
            command_template: fields.template("command_template")?,
            options,
            current: None,
        })
    }

    /// The option `offset` away from the current one (the first when none is current),
    /// wrapping around with `cycle`, else stopping at the ends; as Home Assistant moves.
    fn offset(&self, offset: isize, cycle: bool) -> &str {
        let current = self
            .current
            .as_ref()
            .and_then(|current| self.options.iter().position(|option| option == current))
            .unwrap_or(0) as isize;
        let count = self.options.len() as isize;
        let index = if cycle {
            (current + offset).rem_euclid(count)
        } else {
            (current + offset).clamp(0, count - 1)
        };
        self.options.get(index as usize).map_or("", String::as_str)
    }

    fn select(&mut self, option: String) -> Result<Vec<Outgoing>, ServiceError> {
        if !self.options.contains(&option) {
            return Err(not_listed("option", &option, &self.options));
        }
        let payload = render_command(
            self.command_template.as_ref(),
            Value::String(option.clone()),
        )?;
        if self.optimistic {
            self.current = Some(option);
        }
        Ok(vec![Outgoing {
            topic: self.command_topic.clone(),
            payload,
        }])
    }
}

impl Platform for Select {
    fn domain(&self) -> &'static str {
        "select"
    }

    fn topics(&self) -> Vec<(&'static str, String)> {
        super::state_topic(self.state_topic.as_ref())
    }

    fn on_message(&mut self, _role: &'static str, payload: &str) -> bool {
        let Some(value) = render_received_value(self.value_template.as_ref(), payload) else {
            return false;
        };
        let new = if value.eq_ignore_ascii_case("none") {
            None
        } else if self.options.contains(&value) {
            Some(value)
        } else {
            tracing::debug!("an MQTT select received an option not in its list; ignored");
            return false;
        };
        let changed = new != self.current;
        self.current = new;
        changed
    }

    fn state(&self) -> Option<String> {
        self.current.clone()
    }

    fn describe(&self, info: &mut EntityInfo) {
        info.capabilities.insert(
            "options".to_owned(),
            Value::Array(self.options.iter().cloned().map(Value::String).collect()),
        );
    }

    fn optimistic(&self) -> bool {
        self.optimistic
    }

    fn command(
        &mut self,
        service: &str,
        data: &Map<String, Value>,
    ) -> Result<Vec<Outgoing>, ServiceError> {
        let cycle = data.get("cycle").and_then(Value::as_bool).unwrap_or(true);
        let option = match service {
            "select_option" => text_field(data, "option")
                .ok_or_else(|| ServiceError::validation(&["option"], "option is required"))?
                .to_owned(),
            "select_first" => self.options.first().cloned().unwrap_or_default(),
            "select_last" => self.options.last().cloned().unwrap_or_default(),
            "select_next" => self.offset(1, cycle).to_owned(),
            "select_previous" => self.offset(-1, cycle).to_owned(),
            other => return Err(unsupported("select", other)),
        };
        self.select(option)
    }
}

#[cfg(test)]
#[path = "tests/select.rs"]
mod tests;
