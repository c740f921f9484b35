//! `cover`: open/close/stop through a command topic, a position (scaled to 0–100) from a
//! position topic and to a set-position topic, a tilt, the state from a state topic; optimistic
//! where nothing reports back.

use serde_json::{Map, Value, json};

use homecore::{EntityInfo, ServiceError};

use super::{
    ConfigError, Fields, Outgoing, PAYLOAD_NONE, Platform, device_class, no_topic, parse_float,
    render_command_with, render_received, required_number, unsupported,
};
use crate::mqtt::value_template::ValueTemplate;

/// Home Assistant's cover feature bits.
const OPEN: u64 = 1;
const CLOSE: u64 = 2;
const SET_POSITION: u64 = 4;
const STOP: u64 = 8;
const TILT_FEATURES: u64 = 16 | 32 | 64 | 128;

/// What a cover is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Motion {
    Open,
    Opening,
    Closed,
    Closing,
}

impl Motion {
    fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Opening => "opening",
            Self::Closed => "closed",
            Self::Closing => "closing",
        }
    }
}

/// A device range (`position_closed`..`position_open`, `tilt_min`..`tilt_max`) mapped to
/// 0–100 the way Home Assistant's ranged-value helpers do; either end may be the larger.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Range {
    /// The device value of 0 %.
    pub(crate) low: f64,
    /// The device value of 100 %.
    pub(crate) high: f64,
}

impl Range {
    /// The percentage of device value `value`, clamped to 0–100.
    pub(crate) fn to_percentage(self, value: f64) -> i64 {
        let steps = self.high - self.low;
        // `(value - offset) * 100 // states`, Python's floor division.
        let percentage = ((value - self.low) * 100.0 / steps).floor();
        percentage.clamp(0.0, 100.0) as i64
    }

    /// The device value of `percentage`, rounded half to even like Python's `round`.
    pub(crate) fn device_value(self, percentage: f64) -> i64 {
        ((self.high - self.low) * percentage / 100.0 + self.low).round_ties_even() as i64
    }
}

/// The tilt part of a cover.
struct Tilt {
    command_topic: Option<String>,
    command_template: Option<ValueTemplate>,
    status_topic: Option<String>,
    status_template: Option<ValueTemplate>,
    range: Range,
    opened_value: f64,
    closed_value: f64,
    payload_stop: Option<String>,
    optimistic: bool,
}

/// A discovered cover.
pub(crate) struct Cover {
    command_topic: Option<String>,
    state_topic: Option<String>,
    position_topic: Option<String>,
    set_position_topic: Option<String>,
    value_template: Option<ValueTemplate>,
    position_template: Option<ValueTemplate>,
    set_position_template: Option<ValueTemplate>,
    payload_open: Option<String>,
    payload_close: Option<String>,
    payload_stop: Option<String>,
    state_open: String,
    state_opening: String,
    state_closed: String,
    state_closing: String,
    state_stopped: String,
    position_range: Range,
    tilt: Tilt,
    optimistic: bool,
    device_class: Option<String>,
    motion: Option<Motion>,
    position: Option<i64>,
    tilt_position: Option<i64>,
}

/// A whole number setting (`position_open`, `tilt_max`, ...), or `default`.
fn integer_or(fields: &Fields<'_>, key: &str, default: i64) -> Result<f64, ConfigError> {
    let value = fields.number_or(key, default as f64)?;
    if value.fract() != 0.0 || value.abs() > 1e9 {
        return Err(ConfigError::invalid(key, "expected a whole number"));
    }
    Ok(value)
}

/// Refuses a template given without the topic it applies to (Home Assistant does too).
fn template_needs_topic(
    fields: &Fields<'_>,
    template: &str,
    topic: &str,
) -> Result<(), ConfigError> {
    if fields.raw(template).is_some() && fields.raw(topic).is_none() {
        return Err(ConfigError::invalid(
            template,
            format!("must be set together with {topic}"),
        ));
    }
    Ok(())
}

impl Cover {
    pub(crate) fn from_config(fields: &Fields<'_>) -> Result<Self, ConfigError> {
        let command_topic = fields.topic("command_topic")?;
        let state_topic = fields.topic("state_topic")?;
        let position_topic = fields.topic("position_topic")?;
        let set_position_topic = fields.topic("set_position_topic")?;
        if set_position_topic.is_some() && position_topic.is_none() {
            return Err(ConfigError::invalid(
                "set_position_topic",
                "must be set together with position_topic",
            ));
        }
        for (template, topic) in [
            ("value_template", "state_topic"),
            ("position_template", "position_topic"),
            ("set_position_template", "set_position_topic"),
            ("tilt_command_template", "tilt_command_topic"),
            ("tilt_status_template", "tilt_status_topic"),
        ] {
            template_needs_topic(fields, template, topic)?;
        }
        let position_range = Range {
            low: integer_or(fields, "position_closed", 0)?,
            high: integer_or(fields, "position_open", 100)?,
        };
        if position_range.low == position_range.high {
            return Err(ConfigError::invalid(
                "position_open",
                "must differ from position_closed",
            ));
        }
        let tilt_range = Range {
            low: integer_or(fields, "tilt_min", 0)?,
            high: integer_or(fields, "tilt_max", 100)?,
        };
        if tilt_range.low == tilt_range.high {
            return Err(ConfigError::invalid(
                "tilt_max",
                "must differ from tilt_min",
            ));
        }
        let tilt_command_topic = fields.topic("tilt_command_topic")?;
        let tilt_status_topic = fields.topic("tilt_status_topic")?;

        // Home Assistant's rule: optimistic when asked, or when no part reports back (no
        // state, position or tilt status topic).
        let optimistic = fields.flag_or("optimistic", false)?
            || (state_topic.is_none() && position_topic.is_none() && tilt_status_topic.is_none());
        let tilt_optimistic =
            fields.flag_or("tilt_optimistic", false)? || tilt_status_topic.is_none();

        // An explicit `null` payload disables its command (and feature); an absent one is
        // the default.
        let payload = |key: &str, default: &str| -> Result<Option<String>, ConfigError> {
            if fields.has(key) {
                fields.payload(key)
            } else {
                Ok(Some(default.to_owned()))
            }
        };
        Ok(Self {
            payload_open: payload("payload_open", "OPEN")?,
            payload_close: payload("payload_close", "CLOSE")?,
            payload_stop: payload("payload_stop", "STOP")?,
            state_open: fields.payload_or("state_open", "open")?,
            state_opening: fields.payload_or("state_opening", "opening")?,
            state_closed: fields.payload_or("state_closed", "closed")?,
            state_closing: fields.payload_or("state_closing", "closing")?,
            state_stopped: fields.payload_or("state_stopped", "stopped")?,
            value_template: fields.template("value_template")?,
            position_template: fields.template("position_template")?,
            set_position_template: fields.template("set_position_template")?,
            position_range,
            tilt: Tilt {
                command_template: fields.template("tilt_command_template")?,
                status_template: fields.template("tilt_status_template")?,
                opened_value: integer_or(fields, "tilt_opened_value", 100)?,
                closed_value: integer_or(fields, "tilt_closed_value", 0)?,
                payload_stop: payload("payload_stop_tilt", "stop")?,
                range: tilt_range,
                optimistic: tilt_optimistic,
                command_topic: tilt_command_topic,
                status_topic: tilt_status_topic,
            },
            optimistic,
            device_class: device_class(fields, "cover")?,
            command_topic,
            state_topic,
            position_topic,
            set_position_topic,
            motion: None,
            position: None,
            tilt_position: None,
        })
    }

    fn supported_features(&self) -> u64 {
        let mut features = 0;
        if self.command_topic.is_some() {
            for (payload, bit) in [
                (&self.payload_open, OPEN),
                (&self.payload_close, CLOSE),
                (&self.payload_stop, STOP),
            ] {
                if payload.is_some() {
                    features |= bit;
                }
            }
        }
        if self.set_position_topic.is_some() {
            features |= SET_POSITION;
        }
        if self.tilt.command_topic.is_some() {
            features |= TILT_FEATURES;
        }
        features
    }

    fn on_state(&mut self, payload: &str) -> bool {
        let Some(value) = render_received(self.value_template.as_ref(), payload) else {
            return false;
        };
        if value.is_empty() {
            return false;
        }
        let new = if value == self.state_stopped {
            // Stopped: open or closed, from the position when one is reported, else from the
            // way it was going.
            let closed = if self.position_topic.is_some() {
                self.position == Some(0)
            } else {
                matches!(self.motion, Some(Motion::Closed | Motion::Closing))
            };
            Some(if closed { Motion::Closed } else { Motion::Open })
        } else if value == self.state_opening {
            Some(Motion::Opening)
        } else if value == self.state_closing {
            Some(Motion::Closing)
        } else if value == self.state_open {
            Some(Motion::Open)
        } else if value == self.state_closed {
            Some(Motion::Closed)
        } else if value == PAYLOAD_NONE {
            None
        } else {
            tracing::debug!("an MQTT cover state payload is none of its states; ignored");
            return false;
        };
        let changed = new != self.motion;
        self.motion = new;
        changed
    }

    fn on_position(&mut self, payload: &str) -> bool {
        let Some(value) = render_received(self.position_template.as_ref(), payload) else {
            return false;
        };
        if value.is_empty() {
            return false;
        }
        let before = (self.motion, self.position, self.tilt_position);
        // A position template may give `{"position": .., "tilt_position": ..}`.
        let position = match serde_json::from_str::<Value>(&value) {
            Ok(Value::Object(object)) => {
                let Some(position) = object.get("position") else {
                    return false;
                };
                if let Some(tilt) = object.get("tilt_position") {
                    self.set_tilt_from(&json_text(tilt));
                }
                json_text(position)
            }
            _ => value,
        };
        let Some(number) = parse_float(&position) else {
            return before != (self.motion, self.position, self.tilt_position);
        };
        let percentage = self.position_range.to_percentage(number);
        self.position = Some(percentage);
        if self.state_topic.is_none() {
            self.motion = Some(if percentage == 0 {
                Motion::Closed
            } else {
                Motion::Open
            });
        }
        before != (self.motion, self.position, self.tilt_position)
    }

    fn on_tilt(&mut self, payload: &str) -> bool {
        let Some(value) = render_received(self.tilt.status_template.as_ref(), payload) else {
            return false;
        };
        if value.is_empty() {
            return false;
        }
        let before = self.tilt_position;
        self.set_tilt_from(&value);
        before != self.tilt_position
    }

    /// Takes a tilt device value within the tilt range; anything else is ignored.
    fn set_tilt_from(&mut self, value: &str) {
        let Some(tilt) = parse_float(value).map(f64::round_ties_even) else {
            return;
        };
        let Range { low, high } = self.tilt.range;
        if (low.min(high)..=low.max(high)).contains(&tilt) {
            self.tilt_position = Some(self.tilt.range.to_percentage(tilt));
        }
    }

    fn open_close(&mut self, open: bool) -> Result<Vec<Outgoing>, ServiceError> {
        let (service, payload) = if open {
            ("open_cover", &self.payload_open)
        } else {
            ("close_cover", &self.payload_close)
        };
        let (Some(topic), Some(payload)) = (&self.command_topic, payload) else {
            return Err(no_topic(service, "command_topic"));
        };
        let message = Outgoing {
            topic: topic.clone(),
            payload: payload.clone(),
        };
        if self.optimistic {
            self.motion = Some(if open { Motion::Open } else { Motion::Closed });
            if self.position_topic.is_some() {
                self.position = Some(if open { 100 } else { 0 });
            }
        }
        Ok(vec![message])
    }

    fn stop(&self) -> Result<Vec<Outgoing>, ServiceError> {
        let (Some(topic), Some(payload)) = (&self.command_topic, &self.payload_stop) else {
            return Err(no_topic("stop_cover", "command_topic"));
        };
        Ok(vec![Outgoing {
            topic: topic.clone(),
            payload: payload.clone(),
        }])
    }

    fn set_position(&mut self, percentage: f64) -> Result<Vec<Outgoing>, ServiceError> {
        let Some(topic) = &self.set_position_topic else {
            return Err(no_topic("set_cover_position", "set_position_topic"));
        };
        let device_value = self.position_range.device_value(percentage);
        let payload = render_command_with(
            self.set_position_template.as_ref(),
            json!(device_value),
            &[
                ("position", json!(device_value)),
                ("position_open", json!(self.position_range.high)),
                ("position_closed", json!(self.position_range.low)),
            ],
        )?;
        let message = Outgoing {
            topic: topic.clone(),
            payload,
        };
        if self.optimistic {
            let percentage = percentage.round() as i64;
            self.position = Some(percentage);
            self.motion = Some(if percentage == 0 {
                Motion::Closed
            } else {
                Motion::Open
            });
        }
        Ok(vec![message])
    }

    fn tilt_to(&mut self, service: &str, device_value: i64) -> Result<Vec<Outgoing>, ServiceError> {
        let Some(topic) = &self.tilt.command_topic else {
            return Err(no_topic(service, "tilt_command_topic"));
        };
        let payload = render_command_with(
            self.tilt.command_template.as_ref(),
            json!(device_value),
            &[
                ("tilt_position", json!(device_value)),
                ("tilt_min", json!(self.tilt.range.low)),
                ("tilt_max", json!(self.tilt.range.high)),
            ],
        )?;
        let message = Outgoing {
            topic: topic.clone(),
            payload,
        };
        if self.tilt.optimistic {
            self.tilt_position = Some(self.tilt.range.to_percentage(device_value as f64));
        }
        Ok(vec![message])
    }

    fn toggle(&mut self) -> Result<Vec<Outgoing>, ServiceError> {
        let moving = matches!(self.motion, Some(Motion::Opening | Motion::Closing));
        if moving && self.supported_features() & STOP != 0 {
            return self.stop();
        }
        // Closed (or closing without a stop) opens; anything else closes.
        let open = matches!(self.motion, Some(Motion::Closed | Motion::Closing));
        self.open_close(open)
    }
}

/// A JSON value as the text a number parser reads.
fn json_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

impl Platform for Cover {
    fn domain(&self) -> &'static str {
        "cover"
    }

    fn topics(&self) -> Vec<(&'static str, String)> {
        let mut topics = Vec::new();
        if let Some(topic) = &self.state_topic {
            topics.push(("state", topic.clone()));
        }
        if let Some(topic) = &self.position_topic {
            topics.push(("position", topic.clone()));
        }
        if let Some(topic) = &self.tilt.status_topic {
            topics.push(("tilt", topic.clone()));
        }
        topics
    }

    fn on_message(&mut self, role: &'static str, payload: &str) -> bool {
        match role {
            "state" => self.on_state(payload),
            "position" => self.on_position(payload),
            "tilt" => self.on_tilt(payload),
            _ => false,
        }
    }

    fn state(&self) -> Option<String> {
        self.motion.map(|motion| motion.as_str().to_owned())
    }

    fn attributes(&self) -> Map<String, Value> {
        let mut attributes = Map::new();
        if let Some(position) = self.position {
            attributes.insert("current_position".to_owned(), json!(position));
        }
        if let Some(tilt) = self.tilt_position {
            attributes.insert("current_tilt_position".to_owned(), json!(tilt));
        }
        attributes
    }

    fn describe(&self, info: &mut EntityInfo) {
        info.device_class.clone_from(&self.device_class);
        info.supported_features = self.supported_features();
    }

    fn optimistic(&self) -> bool {
        self.optimistic
    }

    fn command(
        &mut self,
        service: &str,
        data: &Map<String, Value>,
    ) -> Result<Vec<Outgoing>, ServiceError> {
        match service {
            "open_cover" => self.open_close(true),
            "close_cover" => self.open_close(false),
            "stop_cover" => self.stop(),
            "toggle" => self.toggle(),
            "set_cover_position" => {
                let position = required_number(data, "position")?;
                self.set_position(position.clamp(0.0, 100.0))
            }
            "open_cover_tilt" => self.tilt_to(service, self.tilt.opened_value as i64),
            "close_cover_tilt" => self.tilt_to(service, self.tilt.closed_value as i64),
            "set_cover_tilt_position" => {
                let percentage = required_number(data, "tilt_position")?.clamp(0.0, 100.0);
                let device_value = self.tilt.range.device_value(percentage);
                self.tilt_to(service, device_value)
            }
            "stop_cover_tilt" => {
                let (Some(topic), Some(payload)) =
                    (&self.tilt.command_topic, &self.tilt.payload_stop)
                else {
                    return Err(no_topic(service, "tilt_command_topic"));
                };
                Ok(vec![Outgoing {
                    topic: topic.clone(),
                    payload: payload.clone(),
                }])
            }
            "toggle_cover_tilt" => {
                let closed_percentage = self.tilt.range.to_percentage(self.tilt.closed_value);
                let closed = self
                    .tilt_position
                    .is_some_and(|tilt| tilt <= closed_percentage);
                let value = if closed {
                    self.tilt.opened_value
                } else {
                    self.tilt.closed_value
                };
                self.tilt_to(service, value as i64)
            }
            other => Err(unsupported("cover", other)),
        }
    }
}

#[cfg(test)]
#[path = "tests/cover.rs"]
mod tests;
