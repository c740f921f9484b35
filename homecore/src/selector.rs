//! UI selectors: `{"<kind>": {config}}` descriptions of how a field is edited, as Home Assistant's.
//!
//! A selector is data, not behaviour: it tells a front end which widget to show
//! and crosses process boundaries as JSON. Validation lives in the schema's field type.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value, json};

#[cfg(test)]
mod tests;

/// Selector kinds Home Assistant knows; any other kind is refused when read.
pub const SELECTOR_KINDS: &[&str] = &[
    "action",
    "addon",
    "area",
    "assist_pipeline",
    "attribute",
    "backup_location",
    "boolean",
    "color_rgb",
    "color_temp",
    "condition",
    "config_entry",
    "constant",
    "conversation_agent",
    "country",
    "date",
    "datetime",
    "device",
    "duration",
    "entity",
    "file",
    "floor",
    "icon",
    "label",
    "language",
    "location",
    "media",
    "number",
    "object",
    "qr_code",
    "select",
    "selector",
    "state",
    "statistic",
    "target",
    "template",
    "text",
    "theme",
    "time",
    "trigger",
];

/// How a field is edited in a front end.
#[derive(Debug, Clone, PartialEq)]
pub struct Selector {
    /// Which widget (`text`, `number`, `entity`, ...), one of [`SELECTOR_KINDS`].
    pub kind: String,
    /// The widget's options (`min`, `max`, `domain`, `options`, ...), passed through untouched.
    pub config: Map<String, Value>,
}

/// Why a selector description was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// The kind is not one of [`SELECTOR_KINDS`].
    #[error("unknown selector kind {0:?}")]
    UnknownKind(String),
    /// The JSON is not an object with exactly one key whose value is an object or null.
    #[error(
        "a selector is an object with exactly one key (its kind) mapping to its options; got {0}"
    )]
    Malformed(String),
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

impl Selector {
    /// A selector of `kind` with `config`, refusing unknown kinds.
    pub fn new(kind: &str, config: Map<String, Value>) -> Result<Self, SelectorError> {
        if !SELECTOR_KINDS.contains(&kind) {
            return Err(SelectorError::UnknownKind(kind.to_owned()));
        }
        Ok(Self {
            kind: kind.to_owned(),
            config,
        })
    }

    fn known(kind: &'static str, config: Value) -> Self {
        Self {
            kind: kind.to_owned(),
            config: object(config),
        }
    }

    /// A free-text box.
    pub fn text() -> Self {
        Self::known("text", json!({}))
    }

    /// A password box (text whose input is hidden).
    pub fn password() -> Self {
        Self::known("text", json!({"type": "password"}))
    }

    /// A number box or slider between `min` and `max` in steps of `step`.
    pub fn number(min: f64, max: f64, step: f64, slider: bool) -> Self {
        let mode = if slider { "slider" } else { "box" };
        Self::known(
            "number",
            json!({"min": min, "max": max, "step": step, "mode": mode}),
        )
    }

    /// A toggle.
    pub fn boolean() -> Self {
        Self::known("boolean", json!({}))
    }

    /// A choice among `(value, label)` pairs, in the order given.
    pub fn select(options: &[(&str, &str)], multiple: bool) -> Self {
        let options: Vec<Value> = options
            .iter()
            .map(|(value, label)| json!({"value": value, "label": label}))
            .collect();
        Self::known("select", json!({"options": options, "multiple": multiple}))
    }

    /// An entity picker, optionally limited to one domain.
    pub fn entity(domain: Option<&str>, multiple: bool) -> Self {
        let mut config = json!({"multiple": multiple});
        if let (Some(domain), Value::Object(map)) = (domain, &mut config) {
            map.insert("domain".into(), json!(domain));
        }
        Self::known("entity", config)
    }

    /// A device picker.
    pub fn device() -> Self {
        Self::known("device", json!({}))
    }

    /// An area picker.
    pub fn area() -> Self {
        Self::known("area", json!({}))
    }

    /// A duration picker.
    pub fn duration() -> Self {
        Self::known("duration", json!({}))
    }

    /// A free-form object (YAML/JSON) editor.
    pub fn object() -> Self {
        Self::known("object", json!({}))
    }
}

impl Serialize for Selector {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = Map::new();
        map.insert(self.kind.clone(), Value::Object(self.config.clone()));
        map.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Selector {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        Selector::try_from(value).map_err(D::Error::custom)
    }
}

impl TryFrom<Value> for Selector {
    type Error = SelectorError;

    fn try_from(value: Value) -> Result<Self, Self::Error> {
        let malformed = || SelectorError::Malformed(value.to_string());
        let Value::Object(map) = &value else {
            return Err(malformed());
        };
        let mut entries = map.iter();
        let (Some((kind, config)), None) = (entries.next(), entries.next()) else {
            return Err(malformed());
        };
        let config = match config {
            Value::Object(config) => config.clone(),
            Value::Null => Map::new(),
            _ => return Err(malformed()),
        };
        Selector::new(kind, config)
    }
}
