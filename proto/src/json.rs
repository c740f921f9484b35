//! The one place dynamic payloads become JSON bytes and back.
//!
//! Dynamic values (attributes, service data, flow input, store data) cross the wire as JSON text
//! so their types survive: `serde_json` keeps an integer an integer and `0.5` a float, which a
//! protobuf `Struct` (all numbers double) would not. Values that JSON cannot hold are coerced
//! here, once: non-finite floats become `null`, and anything that fails to serialise becomes its
//! debug text rather than failing the whole payload. A float crosses bit for bit: `serde_json`
//! is built with `float_roundtrip` (workspace `Cargo.toml`), so text is read to the nearest
//! double and not, as by default, a last digit off for some values.

use std::fmt::Debug;

use bytes::Bytes;
use serde::Serialize;
use serde_json::{Map, Value};

/// Why JSON bytes could not be read.
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    /// Not valid JSON.
    #[error("invalid JSON payload: {0}")]
    Invalid(#[from] serde_json::Error),
    /// Valid JSON but not an object where one is required.
    #[error("expected a JSON object, got {found}")]
    NotAnObject {
        /// The kind of value found instead.
        found: &'static str,
    },
}

/// Encodes a value as JSON bytes.
pub fn to_bytes(value: &Value) -> Bytes {
    // Serialising a `Value` cannot fail: its map keys are strings and its numbers finite.
    Bytes::from(serde_json::to_vec(value).expect("a serde_json::Value always serialises"))
}

/// Encodes an object as JSON bytes.
pub fn object_to_bytes(object: &Map<String, Value>) -> Bytes {
    Bytes::from(serde_json::to_vec(object).expect("a serde_json::Map always serialises"))
}

/// Decodes JSON bytes; empty bytes (an absent field) decode to `null`.
pub fn from_bytes(bytes: &[u8]) -> Result<Value, JsonError> {
    if bytes.is_empty() {
        return Ok(Value::Null);
    }
    Ok(serde_json::from_slice(bytes)?)
}

/// Decodes JSON bytes that must hold an object; empty bytes and `null` decode to an empty object.
pub fn object_from_bytes(bytes: &[u8]) -> Result<Map<String, Value>, JsonError> {
    match from_bytes(bytes)? {
        Value::Object(object) => Ok(object),
        Value::Null => Ok(Map::new()),
        other => Err(JsonError::NotAnObject {
            found: kind_name(&other),
        }),
    }
}

/// Converts any serialisable value into JSON, coercing what JSON cannot hold instead of failing.
pub fn to_json_safe<T: Serialize + Debug + ?Sized>(value: &T) -> Value {
    match serde_json::to_value(value) {
        Ok(json) => json,
        Err(_) => Value::String(format!("{value:?}")),
    }
}

fn kind_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::{Strategy, prop_assert_eq, prop_assume};
    use serde_json::json;
    use std::collections::{BTreeMap, BTreeSet};

    #[test]
    fn integers_stay_integers_and_floats_stay_floats() {
        let value = json!({"brightness": 255, "ratio": 0.5, "whole_float": 1.0, "big": u64::MAX, "neg": -3});
        let back = from_bytes(&to_bytes(&value)).expect("valid");
        assert!(back["brightness"].is_u64());
        assert!(back["ratio"].is_f64());
        assert!(back["whole_float"].is_f64(), "1.0 stays a float");
        assert_eq!(back["big"].as_u64(), Some(u64::MAX));
        assert!(back["neg"].is_i64());
        assert_eq!(back, value);
    }

    #[test]
    fn a_float_keeps_its_last_digit_across_the_wire() {
        // Parsed without correct rounding this would be 1.5555555555555555e22 and come back
        // as 1.5555555555555557e22.
        for text in [
            "15555555555555555555552",
            "1.5555555555555555e22",
            "2.2250738585072014e-308",
            "9007199254740993.0",
            "0.1",
            "1.7976931348623157e308",
        ] {
            let parsed = from_bytes(text.as_bytes()).expect("valid");
            let expected: f64 = text.parse().expect("a float");
            assert_eq!(
                parsed.as_f64().map(f64::to_bits),
                Some(expected.to_bits()),
                "{text} parses to the nearest float"
            );
            let back = from_bytes(&to_bytes(&parsed)).expect("valid");
            assert_eq!(back, parsed, "{text} comes back as it went");
        }
    }

    proptest::proptest! {
        #[test]
        fn every_finite_float_crosses_the_wire_bit_for_bit(
            float in proptest::num::f64::ANY.prop_filter("JSON holds finite floats", |f| f.is_finite())
        ) {
            let back = from_bytes(&to_bytes(&json!({"float": float}))).expect("valid");
            prop_assert_eq!(back["float"].as_f64().map(f64::to_bits), Some(float.to_bits()));
        }

        #[test]
        fn decimal_text_parses_to_the_nearest_float_and_comes_back(
            mantissa in "[1-9][0-9]{0,24}",
            exponent in -330i32..310,
        ) {
            let text = format!("{mantissa}e{exponent}");
            let expected: f64 = text.parse().expect("a float");
            prop_assume!(expected.is_finite());
            let parsed = from_bytes(text.as_bytes()).expect("valid");
            prop_assert_eq!(parsed.as_f64().map(f64::to_bits), Some(expected.to_bits()), "{}", text);
            let back = from_bytes(&to_bytes(&parsed)).expect("valid");
            prop_assert_eq!(back, parsed);
        }

        #[test]
        fn integers_past_u64_parse_to_the_nearest_float(digits in "[1-9][0-9]{20,40}") {
            let expected: f64 = digits.parse().expect("a float");
            let parsed = from_bytes(digits.as_bytes()).expect("valid");
            prop_assert_eq!(parsed.as_f64().map(f64::to_bits), Some(expected.to_bits()), "{}", digits);
            let back = from_bytes(&to_bytes(&parsed)).expect("valid");
            prop_assert_eq!(back, parsed);
        }
    }

    #[test]
    fn empty_bytes_are_null_and_an_empty_object() {
        assert_eq!(from_bytes(b"").expect("valid"), Value::Null);
        assert!(object_from_bytes(b"").expect("valid").is_empty());
        assert!(object_from_bytes(b"null").expect("valid").is_empty());
    }

    #[test]
    fn non_object_where_object_required_is_a_clear_error() {
        let error = object_from_bytes(b"[1,2]").expect_err("not an object");
        assert_eq!(error.to_string(), "expected a JSON object, got an array");
        assert!(
            from_bytes(b"{nope")
                .expect_err("invalid")
                .to_string()
                .starts_with("invalid JSON payload")
        );
    }

    #[test]
    fn odd_values_are_coerced() {
        assert_eq!(to_json_safe(&f64::NAN), Value::Null);
        assert_eq!(to_json_safe(&f64::INFINITY), Value::Null);
        assert_eq!(to_json_safe(&BTreeSet::from([3, 1, 2])), json!([1, 2, 3]));
        let tuple_keys = BTreeMap::from([((1, 2), "x")]);
        assert_eq!(
            to_json_safe(&tuple_keys),
            Value::String("{(1, 2): \"x\"}".into())
        );
    }
}
