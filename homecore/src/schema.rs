//! Declarative schemas for service data and flow forms: JSON-serializable, validated with precise paths.
//!
//! This replaces Home Assistant's voluptuous schemas. A schema is data, so it can be
//! shown by a front end (through each field's [`Selector`]) and sent across a process
//! boundary; [`Schema::validate`] coerces input the way Home Assistant's config
//! validation helpers do (`"5"` becomes `5` for an integer, `"on"` becomes `true`),
//! applies defaults, and reports every problem with its path (`["advanced", "port"]`).

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};

use crate::entity_id::{is_valid_entity_id, split_entity_id};
use crate::selector::Selector;

#[cfg(test)]
mod tests;

/// A set of named fields, some of them grouped into sections.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Schema {
    /// The fields, in display order.
    pub fields: Vec<Field>,
    /// What to do with keys the schema does not name.
    #[serde(default)]
    pub extra: ExtraKeys,
}

/// What validation does with keys a schema does not name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExtraKeys {
    /// Refuse them (voluptuous's default, `PREVENT_EXTRA`).
    #[default]
    Prevent,
    /// Keep them unvalidated (`ALLOW_EXTRA`).
    Allow,
    /// Drop them silently (`REMOVE_EXTRA`).
    Remove,
}

/// A key that is present holds a value, `null` included (an absent key is `None` through
/// `#[serde(default)]`); serde's own `Option` would read `null` as absent.
fn present_value<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}

/// One named field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Field {
    /// The key in the validated object.
    pub name: String,
    /// A missing required field without a default is an error.
    #[serde(default)]
    pub required: bool,
    /// Used (and validated) when the key is missing. `null` is a default like any other value
    /// (`Some(Value::Null)`), kept as such through JSON.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present_value"
    )]
    pub default: Option<Value>,
    /// Pre-filled in a form but not applied by validation (Home Assistant's `suggested_value`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present_value"
    )]
    pub suggested_value: Option<Value>,
    /// Help text for people filling the field in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// How a front end edits the field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<Selector>,
    /// What values are accepted and how they are coerced.
    #[serde(flatten)]
    pub kind: FieldType,
}

/// One selectable option of a [`FieldType::Select`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SelectOption {
    /// The value stored when chosen.
    pub value: String,
    /// What a person sees.
    pub label: String,
}

/// The type of a field's value, with its constraints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FieldType {
    /// Text; numbers are turned into their decimal text.
    String {
        /// Fewest characters accepted.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        min_length: Option<usize>,
        /// Most characters accepted.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_length: Option<usize>,
    },
    /// A whole number; integral floats and numeric text are accepted.
    Integer {
        /// Smallest value accepted.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        min: Option<i64>,
        /// Largest value accepted.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max: Option<i64>,
    },
    /// A number stored as a float; integers and numeric text are accepted.
    Float {
        /// Smallest value accepted.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        min: Option<f64>,
        /// Largest value accepted.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max: Option<f64>,
    },
    /// True or false; `on`/`off`, `yes`/`no`, `true`/`false`, `1`/`0` and numbers are accepted.
    Boolean,
    /// One of (or, with `multiple`, a list of) the options' values.
    Select {
        /// The choices, in display order.
        options: Vec<SelectOption>,
        /// Accept a list of choices instead of one.
        #[serde(default)]
        multiple: bool,
    },
    /// A list of items of one type; a single item is accepted as a one-item list.
    List {
        /// The type of every item.
        item: Box<FieldType>,
        /// Fewest items accepted.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        min_length: Option<usize>,
        /// Most items accepted.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_length: Option<usize>,
    },
    /// A JSON object, validated by `schema` when one is given.
    Object {
        /// The object's own schema; `None` accepts any object.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        schema: Option<Box<Schema>>,
    },
    /// A collapsible group of fields in a form; its value is an object under the section's name.
    Section {
        /// The grouped fields.
        schema: Box<Schema>,
        /// Whether a front end shows the section folded.
        #[serde(default)]
        collapsed: bool,
    },
    /// An entity id, lowercased, optionally limited to some domains.
    EntityId {
        /// Domains accepted; empty accepts any.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        domains: Vec<String>,
    },
    /// A list of entity ids; a comma-separated string is accepted.
    EntityIds {
        /// Domains accepted; empty accepts any.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        domains: Vec<String>,
    },
    /// A duration, stored as seconds: seconds, `"HH:MM[:SS]"`, or `{days, hours, minutes, seconds, milliseconds}`.
    TimePeriod,
    /// Anything, unvalidated.
    Any,
}

impl FieldType {
    /// Text of any length.
    pub fn string() -> Self {
        Self::String {
            min_length: None,
            max_length: None,
        }
    }

    /// Any whole number.
    pub fn integer() -> Self {
        Self::Integer {
            min: None,
            max: None,
        }
    }

    /// A whole number within `min..=max`.
    pub fn integer_range(min: i64, max: i64) -> Self {
        Self::Integer {
            min: Some(min),
            max: Some(max),
        }
    }

    /// Any number, stored as a float.
    pub fn float() -> Self {
        Self::Float {
            min: None,
            max: None,
        }
    }

    /// A number within `min..=max`, stored as a float.
    pub fn float_range(min: f64, max: f64) -> Self {
        Self::Float {
            min: Some(min),
            max: Some(max),
        }
    }

    /// One of `(value, label)` options.
    pub fn select(options: &[(&str, &str)]) -> Self {
        Self::Select {
            options: options
                .iter()
                .map(|(value, label)| SelectOption {
                    value: (*value).to_owned(),
                    label: (*label).to_owned(),
                })
                .collect(),
            multiple: false,
        }
    }

    /// A list of `item`s.
    pub fn list(item: FieldType) -> Self {
        Self::List {
            item: Box::new(item),
            min_length: None,
            max_length: None,
        }
    }

    /// An object validated by `schema`.
    pub fn object(schema: Schema) -> Self {
        Self::Object {
            schema: Some(Box::new(schema)),
        }
    }

    /// A form section holding `schema`.
    pub fn section(schema: Schema, collapsed: bool) -> Self {
        Self::Section {
            schema: Box::new(schema),
            collapsed,
        }
    }

    /// An entity id in one of `domains` (any when empty).
    pub fn entity_id(domains: &[&str]) -> Self {
        Self::EntityId {
            domains: domains.iter().map(|d| (*d).to_owned()).collect(),
        }
    }

    /// A list of entity ids in one of `domains` (any when empty).
    pub fn entity_ids(domains: &[&str]) -> Self {
        Self::EntityIds {
            domains: domains.iter().map(|d| (*d).to_owned()).collect(),
        }
    }
}

impl Field {
    /// A required field.
    pub fn required(name: impl Into<String>, kind: FieldType) -> Self {
        Self {
            name: name.into(),
            required: true,
            default: None,
            suggested_value: None,
            description: None,
            selector: None,
            kind,
        }
    }

    /// An optional field.
    pub fn optional(name: impl Into<String>, kind: FieldType) -> Self {
        Self {
            required: false,
            ..Self::required(name, kind)
        }
    }

    /// Sets the value used when the key is missing.
    pub fn with_default(mut self, default: Value) -> Self {
        self.default = Some(default);
        self
    }

    /// Sets the value a form pre-fills.
    pub fn with_suggested_value(mut self, value: Value) -> Self {
        self.suggested_value = Some(value);
        self
    }

    /// Sets the front end's widget.
    pub fn with_selector(mut self, selector: Selector) -> Self {
        self.selector = Some(selector);
        self
    }

    /// Sets the help text.
    pub fn with_description(mut self, description: impl Into<String>) -> Self {
        self.description = Some(description.into());
        self
    }
}

/// One step of a path into validated data: an object key or a list index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PathSegment {
    /// A key of an object.
    Key(String),
    /// An index into a list.
    Index(usize),
}

impl fmt::Display for PathSegment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Key(key) => write!(f, "[{key:?}]"),
            Self::Index(index) => write!(f, "[{index}]"),
        }
    }
}

/// One validation problem and where it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaError {
    /// Where in the data the problem is; empty for the data itself.
    pub path: Vec<PathSegment>,
    /// What is wrong, in voluptuous's words where it has them.
    pub message: String,
}

impl SchemaError {
    fn new(path: &[PathSegment], message: impl Into<String>) -> Self {
        Self {
            path: path.to_vec(),
            message: message.into(),
        }
    }

    /// The path's keys and indexes as text (`["advanced", "port"]` gives `advanced`, `port`).
    pub fn path_strings(&self) -> Vec<String> {
        self.path
            .iter()
            .map(|segment| match segment {
                PathSegment::Key(key) => key.clone(),
                PathSegment::Index(index) => index.to_string(),
            })
            .collect()
    }
}

impl fmt::Display for SchemaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} @ data", self.message)?;
        for segment in &self.path {
            write!(f, "{segment}")?;
        }
        Ok(())
    }
}

/// Every problem validation found (never empty).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub struct ValidationErrors {
    /// The problems, in schema order.
    pub errors: Vec<SchemaError>,
}

impl ValidationErrors {
    /// A single problem at `path`.
    pub fn single(path: Vec<PathSegment>, message: impl Into<String>) -> Self {
        Self {
            errors: vec![SchemaError {
                path,
                message: message.into(),
            }],
        }
    }

    /// The first problem.
    pub fn first(&self) -> Option<&SchemaError> {
        self.errors.first()
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, error) in self.errors.iter().enumerate() {
            if index > 0 {
                write!(f, "; ")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

/// Why a schema definition itself is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaDefinitionError {
    /// Two fields at the same level share a name.
    #[error("field {0:?} is defined twice")]
    DuplicateField(String),
    /// A lower bound is above its upper bound.
    #[error("field {0:?} has a minimum above its maximum")]
    EmptyRange(String),
    /// A default does not validate against its own field.
    #[error("the default of field {field:?} is invalid: {message}")]
    InvalidDefault {
        /// The field with the bad default.
        field: String,
        /// Why its default fails.
        message: String,
    },
}

impl Schema {
    /// A schema of `fields` that refuses unknown keys.
    pub fn new(fields: Vec<Field>) -> Self {
        Self {
            fields,
            extra: ExtraKeys::Prevent,
        }
    }

    /// Sets what happens to unknown keys.
    pub fn with_extra(mut self, extra: ExtraKeys) -> Self {
        self.extra = extra;
        self
    }

    /// The field named `name` at the top level.
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|field| field.name == name)
    }

    /// Checks the definition: unique names, non-empty ranges, valid defaults (recursively).
    pub fn check(&self) -> Result<(), SchemaDefinitionError> {
        let mut seen = std::collections::HashSet::new();
        for field in &self.fields {
            if !seen.insert(field.name.as_str()) {
                return Err(SchemaDefinitionError::DuplicateField(field.name.clone()));
            }
            check_kind(&field.name, &field.kind)?;
            if let Some(default) = &field.default {
                let mut errors = Vec::new();
                validate_value(&field.kind, default, &[], &mut errors);
                if let Some(error) = errors.first() {
                    return Err(SchemaDefinitionError::InvalidDefault {
                        field: field.name.clone(),
                        message: error.to_string(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Validates `input` (which must be an object), returning it coerced with defaults applied.
    pub fn validate(&self, input: &Value) -> Result<Map<String, Value>, ValidationErrors> {
        let mut errors = Vec::new();
        let out = match input {
            Value::Object(map) => validate_object(self, map, &[], &mut errors),
            _ => {
                errors.push(SchemaError::new(&[], "expected a dictionary"));
                Map::new()
            }
        };
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(ValidationErrors { errors })
        }
    }

    /// Validates an object, returning it coerced with defaults applied.
    pub fn validate_map(
        &self,
        input: &Map<String, Value>,
    ) -> Result<Map<String, Value>, ValidationErrors> {
        let mut errors = Vec::new();
        let out = validate_object(self, input, &[], &mut errors);
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(ValidationErrors { errors })
        }
    }
}

fn check_kind(name: &str, kind: &FieldType) -> Result<(), SchemaDefinitionError> {
    let empty = match kind {
        FieldType::String {
            min_length: Some(min),
            max_length: Some(max),
        }
        | FieldType::List {
            min_length: Some(min),
            max_length: Some(max),
            ..
        } => min > max,
        FieldType::Integer {
            min: Some(min),
            max: Some(max),
        } => min > max,
        FieldType::Float {
            min: Some(min),
            max: Some(max),
        } => min > max,
        _ => false,
    };
    if empty {
        return Err(SchemaDefinitionError::EmptyRange(name.to_owned()));
    }
    match kind {
        FieldType::Object {
            schema: Some(schema),
        }
        | FieldType::Section { schema, .. } => schema.check(),
        FieldType::List { item, .. } => check_kind(name, item),
        _ => Ok(()),
    }
}

fn child(path: &[PathSegment], segment: PathSegment) -> Vec<PathSegment> {
    let mut path = path.to_vec();
    path.push(segment);
    path
}

fn validate_object(
    schema: &Schema,
    input: &Map<String, Value>,
    path: &[PathSegment],
    errors: &mut Vec<SchemaError>,
) -> Map<String, Value> {
    let mut out = Map::new();
    for field in &schema.fields {
        let field_path = child(path, PathSegment::Key(field.name.clone()));
        let value = match (input.get(&field.name), &field.default, &field.kind) {
            (Some(value), _, _) => value.clone(),
            (None, Some(default), _) => default.clone(),
            // A missing section still gets its own defaults (front ends always send sections).
            (None, None, FieldType::Section { .. }) => Value::Object(Map::new()),
            (None, None, _) if field.required => {
                errors.push(SchemaError::new(&field_path, "required key not provided"));
                continue;
            }
            (None, None, _) => continue,
        };
        if let Some(coerced) = validate_value(&field.kind, &value, &field_path, errors) {
            out.insert(field.name.clone(), coerced);
        }
    }
    for (key, value) in input {
        if schema.field(key).is_some() {
            continue;
        }
        match schema.extra {
            ExtraKeys::Prevent => errors.push(SchemaError::new(
                &child(path, PathSegment::Key(key.clone())),
                "extra keys not allowed",
            )),
            ExtraKeys::Allow => {
                out.insert(key.clone(), value.clone());
            }
            ExtraKeys::Remove => {}
        }
    }
    out
}

/// Validates one value; on failure records errors and returns `None`.
fn validate_value(
    kind: &FieldType,
    value: &Value,
    path: &[PathSegment],
    errors: &mut Vec<SchemaError>,
) -> Option<Value> {
    let result = match kind {
        FieldType::String {
            min_length,
            max_length,
        } => coerce_string(value).and_then(|text| {
            check_length(text.chars().count(), *min_length, *max_length)
                .map(|()| Value::String(text))
        }),
        FieldType::Integer { min, max } => coerce_integer(value)
            .and_then(|number| check_range(number, *min, *max).map(|()| Value::from(number))),
        FieldType::Float { min, max } => coerce_float(value).and_then(|number| {
            check_range(number, *min, *max).and_then(|()| {
                Number::from_f64(number)
                    .map(Value::Number)
                    .ok_or_else(|| "expected a finite float".to_owned())
            })
        }),
        FieldType::Boolean => coerce_boolean(value).map(Value::Bool),
        FieldType::Select { options, multiple } => {
            if *multiple {
                return validate_list(
                    value,
                    path,
                    errors,
                    None,
                    None,
                    |item, item_path, errors| {
                        record(check_option(options, item), item_path, errors)
                    },
                );
            }
            check_option(options, value)
        }
        FieldType::List {
            item,
            min_length,
            max_length,
        } => {
            return validate_list(
                value,
                path,
                errors,
                *min_length,
                *max_length,
                |element, element_path, errors| validate_value(item, element, element_path, errors),
            );
        }
        FieldType::Object { schema } => match (value, schema) {
            (Value::Object(_), None) => Ok(value.clone()),
            (Value::Object(map), Some(schema)) => return nested(schema, map, path, errors),
            _ => Err("expected a dictionary".to_owned()),
        },
        FieldType::Section { schema, .. } => match value {
            Value::Object(map) => return nested(schema, map, path, errors),
            _ => Err("expected a dictionary".to_owned()),
        },
        FieldType::EntityId { domains } => coerce_entity_id(value, domains).map(Value::String),
        FieldType::EntityIds { domains } => {
            let items = match value {
                Value::String(text) => text
                    .split(',')
                    .map(|part| Value::String(part.trim().to_owned()))
                    .filter(|part| part.as_str() != Some(""))
                    .collect(),
                other => other.clone(),
            };
            return validate_list(
                &items,
                path,
                errors,
                None,
                None,
                |item, item_path, errors| {
                    record(
                        coerce_entity_id(item, domains).map(Value::String),
                        item_path,
                        errors,
                    )
                },
            );
        }
        FieldType::TimePeriod => coerce_time_period(value),
        FieldType::Any => Ok(value.clone()),
    };
    record(result, path, errors)
}

fn record(
    result: Result<Value, String>,
    path: &[PathSegment],
    errors: &mut Vec<SchemaError>,
) -> Option<Value> {
    match result {
        Ok(value) => Some(value),
        Err(message) => {
            errors.push(SchemaError::new(path, message));
            None
        }
    }
}

fn nested(
    schema: &Schema,
    map: &Map<String, Value>,
    path: &[PathSegment],
    errors: &mut Vec<SchemaError>,
) -> Option<Value> {
    let before = errors.len();
    let out = validate_object(schema, map, path, errors);
    (errors.len() == before).then_some(Value::Object(out))
}

fn validate_list(
    value: &Value,
    path: &[PathSegment],
    errors: &mut Vec<SchemaError>,
    min_length: Option<usize>,
    max_length: Option<usize>,
    mut item: impl FnMut(&Value, &[PathSegment], &mut Vec<SchemaError>) -> Option<Value>,
) -> Option<Value> {
    // Home Assistant's `ensure_list`: null is empty, a single value is a one-item list.
    let items: Vec<Value> = match value {
        Value::Array(items) => items.clone(),
        Value::Null => Vec::new(),
        other => vec![other.clone()],
    };
    if let Err(message) = check_length(items.len(), min_length, max_length) {
        errors.push(SchemaError::new(path, message));
        return None;
    }
    let before = errors.len();
    let out: Vec<Value> = items
        .iter()
        .enumerate()
        .filter_map(|(index, element)| {
            item(element, &child(path, PathSegment::Index(index)), errors)
        })
        .collect();
    (errors.len() == before).then_some(Value::Array(out))
}

fn coerce_string(value: &Value) -> Result<String, String> {
    match value {
        Value::String(text) => Ok(text.clone()),
        Value::Number(number) => Ok(number.to_string()),
        _ => Err("expected str".to_owned()),
    }
}

fn check_length(len: usize, min: Option<usize>, max: Option<usize>) -> Result<(), String> {
    if let Some(min) = min.filter(|min| len < *min) {
        return Err(format!("length of value must be at least {min}"));
    }
    if let Some(max) = max.filter(|max| len > *max) {
        return Err(format!("length of value must be at most {max}"));
    }
    Ok(())
}

fn check_range<T: PartialOrd + fmt::Display>(
    number: T,
    min: Option<T>,
    max: Option<T>,
) -> Result<(), String> {
    if let Some(min) = min.filter(|min| number < *min) {
        return Err(format!("value must be at least {min}"));
    }
    if let Some(max) = max.filter(|max| number > *max) {
        return Err(format!("value must be at most {max}"));
    }
    Ok(())
}

fn coerce_integer(value: &Value) -> Result<i64, String> {
    let expected = || "expected int".to_owned();
    match value {
        Value::Number(number) => {
            if let Some(int) = number.as_i64() {
                Ok(int)
            } else if number.is_u64() {
                Err("value must be at most 9223372036854775807".to_owned())
            } else {
                let float = number.as_f64().ok_or_else(expected)?;
                if float.fract() == 0.0 && float.abs() < 9.0e15 {
                    Ok(float as i64)
                } else {
                    Err(expected())
                }
            }
        }
        Value::String(text) => text.trim().parse::<i64>().map_err(|_| expected()),
        _ => Err(expected()),
    }
}

fn coerce_float(value: &Value) -> Result<f64, String> {
    let parsed = match value {
        Value::Number(number) => number.as_f64(),
        Value::String(text) => text.trim().parse::<f64>().ok(),
        _ => None,
    };
    parsed
        .filter(|float| float.is_finite())
        .ok_or_else(|| "expected float".to_owned())
}

fn coerce_boolean(value: &Value) -> Result<bool, String> {
    match value {
        Value::Bool(flag) => Ok(*flag),
        Value::Number(number) => Ok(number.as_f64().is_some_and(|n| n != 0.0)),
        Value::String(text) => match text.trim().to_lowercase().as_str() {
            "1" | "true" | "yes" | "on" | "enable" => Ok(true),
            "0" | "false" | "no" | "off" | "disable" => Ok(false),
            _ => Err(format!("invalid boolean value {text}")),
        },
        _ => Err("expected boolean".to_owned()),
    }
}

fn check_option(options: &[SelectOption], value: &Value) -> Result<Value, String> {
    match value {
        Value::String(text) if options.iter().any(|option| &option.value == text) => {
            Ok(value.clone())
        }
        _ => {
            let values: Vec<&str> = options.iter().map(|option| option.value.as_str()).collect();
            Err(format!("value must be one of {values:?}"))
        }
    }
}

fn coerce_entity_id(value: &Value, domains: &[String]) -> Result<String, String> {
    let Value::String(text) = value else {
        return Err("expected str".to_owned());
    };
    let entity_id = text.trim().to_lowercase();
    if !is_valid_entity_id(&entity_id) {
        return Err(format!("Entity ID {text} is an invalid entity ID"));
    }
    if !domains.is_empty() {
        let (domain, _) = split_entity_id(&entity_id).map_err(|err| err.to_string())?;
        if !domains.iter().any(|allowed| allowed == domain) {
            return Err(format!(
                "Entity ID {entity_id} belongs to domain {domain}, expected {}",
                domains.join(", ")
            ));
        }
    }
    Ok(entity_id)
}

fn seconds_value(seconds: f64) -> Result<Value, String> {
    if seconds.fract() == 0.0 && seconds.abs() < 9.0e15 {
        Ok(Value::from(seconds as i64))
    } else {
        Number::from_f64(seconds)
            .map(Value::Number)
            .ok_or_else(|| "expected a finite duration".to_owned())
    }
}

fn coerce_time_period(value: &Value) -> Result<Value, String> {
    let invalid = || "offset should be format 'HH:MM', 'HH:MM:SS' or 'HH:MM:SS.F'".to_owned();
    match value {
        Value::Number(number) => seconds_value(number.as_f64().ok_or_else(invalid)?),
        Value::String(text) => {
            let text = text.trim();
            if let Ok(seconds) = text.parse::<f64>() {
                return seconds_value(seconds);
            }
            let (negative, body) = match text.strip_prefix('-') {
                Some(rest) => (true, rest),
                None => (false, text.strip_prefix('+').unwrap_or(text)),
            };
            let parts: Vec<&str> = body.split(':').collect();
            if !(2..=3).contains(&parts.len()) {
                return Err(invalid());
            }
            let hours: f64 = parts[0].parse::<u32>().map_err(|_| invalid())?.into();
            let minutes: f64 = parts[1].parse::<u32>().map_err(|_| invalid())?.into();
            let seconds = match parts.get(2) {
                Some(part) => part.parse::<f64>().map_err(|_| invalid())?,
                None => 0.0,
            };
            let total = hours * 3600.0 + minutes * 60.0 + seconds;
            seconds_value(if negative { -total } else { total })
        }
        Value::Object(map) => {
            const UNITS: [(&str, f64); 5] = [
                ("days", 86_400.0),
                ("hours", 3_600.0),
                ("minutes", 60.0),
                ("seconds", 1.0),
                ("milliseconds", 0.001),
            ];
            let mut total = 0.0;
            for (key, amount) in map {
                let Some((_, factor)) = UNITS.iter().find(|(unit, _)| unit == key) else {
                    return Err(format!("extra keys not allowed in a time period: {key}"));
                };
                total += coerce_float(amount)? * factor;
            }
            if map.is_empty() {
                return Err("a time period needs at least one of days, hours, minutes, seconds, milliseconds".into());
            }
            seconds_value(total)
        }
        _ => Err(invalid()),
    }
}
