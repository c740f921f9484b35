//! `sensor`: a value from a state topic, with unit, device class and state class.

use serde_json::{Map, Value};

use homecore::state::MAX_STATE_LENGTH;
use homecore::{EntityInfo, ServiceError};

use super::{ConfigError, Fields, Outgoing, Platform, render_received, unsupported};
use crate::mqtt::value_template::ValueTemplate;

/// A discovered sensor.
pub(crate) struct Sensor {
    state_topic: String,
    value_template: Option<ValueTemplate>,
    unit_of_measurement: Option<String>,
    device_class: Option<String>,
    state_class: Option<String>,
    value: Option<String>,
}

/// The state classes Home Assistant knows.
const STATE_CLASSES: [&str; 4] = [
    "measurement",
    "measurement_angle",
    "total",
    "total_increasing",
];

impl Sensor {
    pub(crate) fn from_config(fields: &Fields<'_>) -> Result<Self, ConfigError> {
        let state_class = fields.text("state_class")?;
        if let Some(state_class) = &state_class
            && !STATE_CLASSES.contains(&state_class.as_str())
        {
            return Err(ConfigError::invalid(
                "state_class",
                format!("{state_class:?} is not one of {STATE_CLASSES:?}"),
            ));
        }
        Ok(Self {
            state_topic: fields.required_topic("state_topic")?,
            value_template: fields.template("value_template")?,
            unit_of_measurement: fields.text("unit_of_measurement")?,
            device_class: fields.text("device_class")?,
            state_class,
            value: None,
        })
    }

    /// Whether the sensor's state must be a number (a unit or a state class says so).
    fn is_numeric(&self) -> bool {
        self.unit_of_measurement.is_some() || self.state_class.is_some()
    }
}

impl Platform for Sensor {
    fn domain(&self) -> &'static str {
        "sensor"
    }

    fn topics(&self) -> Vec<(&'static str, String)> {
        vec![("state", self.state_topic.clone())]
    }

    fn on_message(&mut self, _role: &'static str, payload: &str) -> bool {
        let Some(value) = render_received(self.value_template.as_ref(), payload) else {
            return false;
        };
        // Home Assistant's rules: `None` and an empty value of a numeric sensor are unknown;
        // a numeric sensor's non-number is refused (the state stays); an over-long state is
        // unknown rather than cut.
        let new = if value == "None" || (value.is_empty() && self.is_numeric()) {
            None
        } else if self.is_numeric() && super::parse_float(&value).is_none() {
            tracing::debug!(value = %value.chars().take(64).collect::<String>(),
                "a numeric MQTT sensor received a non-number; ignored");
            return false;
        } else if value.len() > MAX_STATE_LENGTH {
            None
        } else {
            Some(value)
        };
        let changed = new != self.value;
        self.value = new;
        changed
    }

    fn state(&self) -> Option<String> {
        self.value.clone()
    }

    fn describe(&self, info: &mut EntityInfo) {
        info.device_class.clone_from(&self.device_class);
        info.unit_of_measurement
            .clone_from(&self.unit_of_measurement);
        info.state_class.clone_from(&self.state_class);
    }

    fn command(
        &mut self,
        service: &str,
        _data: &Map<String, Value>,
    ) -> Result<Vec<Outgoing>, ServiceError> {
        Err(unsupported("sensor", service))
    }
}
