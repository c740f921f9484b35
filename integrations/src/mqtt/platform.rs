//! What each discovered component does, behind one trait: which topics it listens to, how a
//! message changes its state, what its state and attributes are, and which messages a service
//! call publishes. One module per component; [`from_config`] picks it from the discovery topic.
//!
//! Also the reading of a discovery payload's fields ([`Fields`]): every value comes from the
//! network, so every text, topic, template and list is bounded and checked here, once, when the
//! config arrives; a config that fails is refused whole with the field and the reason.

use serde_json::{Map, Value};

use homecore::{EntityInfo, ServiceError};

use super::topic::check_topic;
use super::value_template::{ValueTemplate, Variables};

pub(crate) mod binary_sensor;
pub(crate) mod button;
pub(crate) mod climate;
pub(crate) mod cover;
pub(crate) mod fan;
pub(crate) mod light;
pub(crate) mod lock;
pub(crate) mod number;
pub(crate) mod select;
pub(crate) mod sensor;
pub(crate) mod switch;

/// Longest payload setting (`payload_on`, `state_open`, ...) accepted, in bytes.
pub const MAX_PAYLOAD_SETTING_BYTES: usize = 1024;
/// Longest template accepted, in bytes.
pub const MAX_TEMPLATE_BYTES: usize = 4096;
/// Most items of a list setting (`options`, `effect_list`, `modes`, `preset_modes`, ...).
pub const MAX_LIST_ITEMS: usize = 256;
/// Longest name, icon, unique id or other descriptive text accepted, in bytes.
pub const MAX_TEXT_BYTES: usize = 255;

/// Every component discovery knows, in the order the docs list them.
pub const COMPONENTS: [&str; 11] = [
    "binary_sensor",
    "button",
    "climate",
    "cover",
    "fan",
    "light",
    "lock",
    "number",
    "select",
    "sensor",
    "switch",
];

/// Why a discovery config was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// A required field is absent.
    #[error("{0} is required")]
    Missing(&'static str),
    /// A field has the wrong type, is too long, or is out of range.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field.
        field: String,
        /// What is wrong.
        reason: String,
    },
}

impl ConfigError {
    pub(crate) fn invalid(field: &str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.to_owned(),
            reason: reason.into(),
        }
    }
}

/// A message a service call publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// Its topic.
    pub topic: String,
    /// Its payload.
    pub payload: String,
}

/// One discovered component's behaviour and state.
pub(crate) trait Platform: Send + Sync + 'static {
    /// Its entity domain.
    fn domain(&self) -> &'static str;

    /// The topics it listens to, each with the role [`Platform::on_message`] gets back.
    fn topics(&self) -> Vec<(&'static str, String)>;

    /// A message arrived on the topic of `role`; whether its state or attributes changed.
    fn on_message(&mut self, role: &'static str, payload: &str) -> bool;

    /// Its state; `None` is `unknown`.
    fn state(&self) -> Option<String>;

    /// Its state attributes.
    fn attributes(&self) -> Map<String, Value> {
        Map::new()
    }

    /// Adds what it says about itself (features, capabilities, unit, ...) to `info`.
    fn describe(&self, _info: &mut EntityInfo) {}

    /// Whether its state is only what it last commanded (no state topic).
    fn optimistic(&self) -> bool {
        false
    }

    /// The messages service `service` with `data` publishes; an optimistic platform also
    /// takes on the commanded state.
    fn command(
        &mut self,
        service: &str,
        data: &Map<String, Value>,
    ) -> Result<Vec<Outgoing>, ServiceError>;
}

/// The component of `component` from an expanded discovery payload.
pub(crate) fn from_config(
    component: &str,
    config: &Map<String, Value>,
) -> Result<Box<dyn Platform>, ConfigError> {
    let fields = Fields::new(config);
    Ok(match component {
        "binary_sensor" => Box::new(binary_sensor::BinarySensor::from_config(&fields)?),
        "button" => Box::new(button::Button::from_config(&fields)?),
        "climate" => Box::new(climate::Climate::from_config(&fields)?),
        "cover" => Box::new(cover::Cover::from_config(&fields)?),
        "fan" => Box::new(fan::Fan::from_config(&fields)?),
        "light" => light::from_config(&fields)?,
        "lock" => Box::new(lock::Lock::from_config(&fields)?),
        "number" => Box::new(number::Number::from_config(&fields)?),
        "select" => Box::new(select::Select::from_config(&fields)?),
        "sensor" => Box::new(sensor::Sensor::from_config(&fields)?),
        "switch" => Box::new(switch::Switch::from_config(&fields)?),
        other => {
            return Err(ConfigError::invalid(
                "component",
                format!("{other} is not a supported component"),
            ));
        }
    })
}

/// A service the component does not offer.
pub(crate) fn unsupported(domain: &str, service: &str) -> ServiceError {
    ServiceError::handler(format!(
        "{domain}.{service} is not supported by this MQTT entity"
    ))
}

/// A service that needs a topic the config did not give.
pub(crate) fn no_topic(service: &str, topic: &str) -> ServiceError {
    ServiceError::handler(format!(
        "{service} needs {topic}, which this MQTT entity has not"
    ))
}

/// Renders `template` (or passes the payload through) for a received message; `None` when the
/// template fails (logged by the caller's rate-limited path: the message is ignored).
pub(crate) fn render_received(template: Option<&ValueTemplate>, payload: &str) -> Option<String> {
    match template {
        None => Some(payload.to_owned()),
        Some(template) => match template.render(&Variables::from_payload(payload)) {
            Ok(rendered) => Some(rendered),
            Err(error) => {
                tracing::debug!(%error, "an MQTT value template failed; the message is ignored");
                None
            }
        },
    }
}

/// [`render_received`] for a value: a blank one is no value (the message is ignored).
pub(crate) fn render_received_value(
    template: Option<&ValueTemplate>,
    payload: &str,
) -> Option<String> {
    render_received(template, payload).filter(|value| !value.trim().is_empty())
}

/// Renders a command template with `value` (or the value as text without one).
pub(crate) fn render_command(
    template: Option<&ValueTemplate>,
    value: Value,
) -> Result<String, ServiceError> {
    render_command_with(template, value, &[])
}

/// Renders a command template with `value` and the command's named variables (`position`,
/// `red`, `code`, ... as Home Assistant's platforms define them), or the value as text.
pub(crate) fn render_command_with(
    template: Option<&ValueTemplate>,
    value: Value,
    named: &[(&str, Value)],
) -> Result<String, ServiceError> {
    match template {
        None => Ok(match value {
            Value::String(text) => text,
            other => other.to_string(),
        }),
        Some(template) => {
            let variables = named
                .iter()
                .fold(Variables::from_value(value), |variables, (name, value)| {
                    variables.with(name, value.clone())
                });
            template.render(&variables).map_err(|error| {
                ServiceError::handler(format!("the command template failed: {error}"))
            })
        }
    }
}

/// A discovery payload's fields, read with their bounds.
pub(crate) struct Fields<'a> {
    map: &'a Map<String, Value>,
}

impl<'a> Fields<'a> {
    pub(crate) fn new(map: &'a Map<String, Value>) -> Self {
        Self { map }
    }

    /// The raw value of `key`, `null` counting as absent.
    pub(crate) fn raw(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|value| !value.is_null())
    }

    /// Whether `key` is present (even as `null`).
    pub(crate) fn has(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }

    /// A text of at most `max` bytes; numbers and booleans are taken as their text (YAML
    /// configs turn `ON` into `true`, devices publish `1`).
    fn bounded_text(&self, key: &str, max: usize) -> Result<Option<String>, ConfigError> {
        let text = match self.raw(key) {
            None => return Ok(None),
            Some(Value::String(text)) => text.clone(),
            Some(Value::Bool(flag)) => if *flag { "True" } else { "False" }.to_owned(),
            Some(Value::Number(number)) => number.to_string(),
            Some(other) => {
                return Err(ConfigError::invalid(
                    key,
                    format!("expected text, got {}", kind_of(other)),
                ));
            }
        };
        if text.len() > max {
            return Err(ConfigError::invalid(
                key,
                format!("longer than {max} bytes"),
            ));
        }
        Ok(Some(text))
    }

    /// Descriptive text (name, icon, unique id, unit, ...).
    pub(crate) fn text(&self, key: &str) -> Result<Option<String>, ConfigError> {
        self.bounded_text(key, MAX_TEXT_BYTES)
    }

    /// A payload setting, or `default`.
    pub(crate) fn payload_or(&self, key: &str, default: &str) -> Result<String, ConfigError> {
        Ok(self
            .bounded_text(key, MAX_PAYLOAD_SETTING_BYTES)?
            .unwrap_or_else(|| default.to_owned()))
    }

    /// A payload setting; `None` when absent or `null` (a `null` payload disables a command).
    pub(crate) fn payload(&self, key: &str) -> Result<Option<String>, ConfigError> {
        self.bounded_text(key, MAX_PAYLOAD_SETTING_BYTES)
    }

    /// A topic one may publish to or subscribe to exactly.
    pub(crate) fn topic(&self, key: &str) -> Result<Option<String>, ConfigError> {
        let Some(topic) = self.bounded_text(key, MAX_PAYLOAD_SETTING_BYTES)? else {
            return Ok(None);
        };
        check_topic(&topic).map_err(|err| ConfigError::invalid(key, err.to_string()))?;
        Ok(Some(topic))
    }

    /// A required topic.
    pub(crate) fn required_topic(&self, key: &'static str) -> Result<String, ConfigError> {
        self.topic(key)?.ok_or(ConfigError::Missing(key))
    }

    /// A template, parsed.
    pub(crate) fn template(&self, key: &str) -> Result<Option<ValueTemplate>, ConfigError> {
        let Some(text) = self.bounded_text(key, MAX_TEMPLATE_BYTES)? else {
            return Ok(None);
        };
        ValueTemplate::parse(&text)
            .map(Some)
            .map_err(|err| ConfigError::invalid(key, err.to_string()))
    }

    /// A flag, or `default`.
    pub(crate) fn flag_or(&self, key: &str, default: bool) -> Result<bool, ConfigError> {
        match self.raw(key) {
            None => Ok(default),
            Some(Value::Bool(flag)) => Ok(*flag),
            Some(other) => Err(ConfigError::invalid(
                key,
                format!("expected true or false, got {}", kind_of(other)),
            )),
        }
    }

    /// A number (numbers as text accepted), or `default`.
    pub(crate) fn number_or(&self, key: &str, default: f64) -> Result<f64, ConfigError> {
        let number = match self.raw(key) {
            None => return Ok(default),
            Some(Value::Number(number)) => number.as_f64(),
            Some(Value::String(text)) => text.trim().parse::<f64>().ok(),
            Some(_) => None,
        };
        number
            .filter(|number| number.is_finite())
            .ok_or_else(|| ConfigError::invalid(key, "expected a number"))
    }

    /// A list of texts of at most [`MAX_LIST_ITEMS`] items.
    pub(crate) fn text_list(&self, key: &str) -> Result<Option<Vec<String>>, ConfigError> {
        let Some(value) = self.raw(key) else {
            return Ok(None);
        };
        let Value::Array(items) = value else {
            return Err(ConfigError::invalid(key, "expected a list"));
        };
        if items.len() > MAX_LIST_ITEMS {
            return Err(ConfigError::invalid(
                key,
                format!("more than {MAX_LIST_ITEMS} items"),
            ));
        }
        items
            .iter()
            .map(|item| match item {
                Value::String(text) if text.len() <= MAX_TEXT_BYTES => Ok(text.clone()),
                Value::Number(number) => Ok(number.to_string()),
                _ => Err(ConfigError::invalid(
                    key,
                    format!("items must be texts of at most {MAX_TEXT_BYTES} bytes"),
                )),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "text",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// An on/off command platform's common reading: `ON`/`OFF` payloads, with state payloads
/// defaulting to them.
#[derive(Debug, Clone)]
pub(crate) struct OnOff {
    pub(crate) payload_on: String,
    pub(crate) payload_off: String,
    pub(crate) state_on: String,
    pub(crate) state_off: String,
}

impl OnOff {
    pub(crate) fn from_config(fields: &Fields<'_>) -> Result<Self, ConfigError> {
        let payload_on = fields.payload_or("payload_on", "ON")?;
        let payload_off = fields.payload_or("payload_off", "OFF")?;
        Ok(Self {
            state_on: fields.payload_or("state_on", &payload_on)?,
            state_off: fields.payload_or("state_off", &payload_off)?,
            payload_on,
            payload_off,
        })
    }

    /// Applies a received (rendered) value to `is_on`; whether it changed. Anything but the two
    /// state payloads leaves the state as it was (Home Assistant ignores it too), except
    /// `None`, which Home Assistant reads as unknown.
    pub(crate) fn apply(&self, value: &str, is_on: &mut Option<bool>) -> bool {
        let new = match self.parse(value) {
            Some(on) => Some(on),
            None if value == "None" => None,
            None => return false,
        };
        let changed = new != *is_on;
        *is_on = new;
        changed
    }

    /// `Some(true)` for the on state, `Some(false)` for off, `None` for anything else.
    pub(crate) fn parse(&self, payload: &str) -> Option<bool> {
        if payload == self.state_on {
            Some(true)
        } else if payload == self.state_off {
            Some(false)
        } else {
            None
        }
    }
}

/// The topics of a component whose only topic is an optional state topic.
pub(crate) fn state_topic(topic: Option<&String>) -> Vec<(&'static str, String)> {
    topic
        .map(|topic| vec![("state", topic.clone())])
        .unwrap_or_default()
}

/// `on` / `off` / unknown.
pub(crate) fn on_off(state: Option<bool>) -> Option<String> {
    state.map(|on| if on { "on" } else { "off" }.to_owned())
}

/// The payload Home Assistant reads as "unknown" on a state topic.
pub(crate) const PAYLOAD_NONE: &str = "None";

/// A device class, checked against the domain's list in the catalog (when it has one).
pub(crate) fn device_class(
    fields: &Fields<'_>,
    domain: &str,
) -> Result<Option<String>, ConfigError> {
    let Some(class) = fields.text("device_class")? else {
        return Ok(None);
    };
    let known = homecore::catalog()
        .domain(domain)
        .map(|spec| &spec.device_classes)
        .filter(|classes| !classes.is_empty());
    if let Some(known) = known
        && !known.contains(&class)
    {
        return Err(ConfigError::invalid(
            "device_class",
            format!("{class:?} is not a {domain} device class"),
        ));
    }
    Ok(Some(class))
}

/// A number as Python prints a float (`21.0`, `21.5`): what Home Assistant publishes for a
/// float and shows in a state.
pub(crate) fn float_text(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e16 {
        format!("{value:.1}")
    } else {
        format!("{value}")
    }
}

/// A float as a JSON number (non-finite ones, which no reading lets through, as `null`).
pub(crate) fn float_json(value: f64) -> Value {
    serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number)
}

/// A service field's value that is not in the entity's list, as Home Assistant words it.
pub(crate) fn not_listed(field: &str, value: &str, list: &[String]) -> ServiceError {
    ServiceError::validation(
        &[field],
        format!(
            "{value} is not a valid {field}; valid ones are: {}",
            list.join(", ")
        ),
    )
}

/// A text field of a service call.
pub(crate) fn text_field<'a>(data: &'a Map<String, Value>, field: &str) -> Option<&'a str> {
    data.get(field).and_then(Value::as_str)
}

/// A number field of a service call (numbers as text accepted).
pub(crate) fn number_field(data: &Map<String, Value>, field: &str) -> Option<f64> {
    match data.get(field)? {
        Value::Number(number) => number.as_f64(),
        Value::String(text) => text.trim().parse().ok(),
        _ => None,
    }
    .filter(|number: &f64| number.is_finite())
}

/// A required number field of a service call.
pub(crate) fn required_number(data: &Map<String, Value>, field: &str) -> Result<f64, ServiceError> {
    number_field(data, field)
        .ok_or_else(|| ServiceError::validation(&[field], format!("{field} must be a number")))
}

/// Parses a received number as Python's `float()` does (surrounding spaces allowed); `None`
/// for anything else, non-finite values included.
pub(crate) fn parse_float(text: &str) -> Option<f64> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|number| number.is_finite())
}
