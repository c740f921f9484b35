//! The one place where wire messages become the core's types and back, imported by both sides
//! of the trust boundary: the sandbox runtime reads main's requests and describes its
//! integrations' entities, flows and errors with it; main rebuilds what a sandbox sent with it.
//!
//! It knows nothing of either side's logic. Each function maps one message to one type and
//! checks only what that type itself needs (an entry has an id, a schema parses, a unit system
//! is known). Every bound on what a sandbox may send (sizes, counts, depths, domains) is main's
//! and is applied by main's gates before anything here runs on a sandbox's message.
//!
//! # Layout
//! - [`entries`]: config entries and the core configuration.
//! - [`flows`]: flow results as steps (forms with schemas, selectors and sections, menus, ...).
//! - [`errors`]: validation, service and flow errors, with their kinds and field paths.
//! - [`entities`]: entity descriptions and the device infos in them.
//! - [`integrations`]: manifests as `ready` announces them.
//! - [`contexts`]: context ids.

pub mod contexts;
pub mod entities;
pub mod entries;
pub mod errors;
pub mod flows;
pub mod integrations;

#[cfg(test)]
mod tests;

pub use contexts::{context_from_wire, context_to_wire};
pub use entities::{
    device_info_from_wire, device_info_to_wire, entity_info_from_wire, entity_info_to_wire,
};
pub use entries::{core_config_from_wire, core_config_to_wire, entry_from_wire, entry_to_wire};
pub use errors::{
    flow_error_from_remote, flow_error_to_remote, service_error_from_remote,
    service_error_to_remote, validation_from_wire, validation_to_wire,
};
pub use flows::{flow_result_to_wire, flow_step_from_wire};
pub use integrations::manifest_to_wire;

use sandbox_proto::{RemoteError, json};
use serde_json::{Map, Value};

/// Why a wire message could not be read as a core type.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// A JSON payload field is not what it must be.
    #[error("field `{field}`: {source}")]
    Json {
        /// The field.
        field: &'static str,
        /// What is wrong.
        #[source]
        source: json::JsonError,
    },
    /// A flow result's schema is not a valid schema.
    #[error("field `data_schema_json`: {0}")]
    Schema(serde_json::Error),
    /// A required value is missing or out of range.
    #[error("{0}")]
    Invalid(String),
}

impl From<ConvertError> for RemoteError {
    fn from(error: ConvertError) -> Self {
        RemoteError::bad_request(error.to_string())
    }
}

/// A JSON object payload field; an empty field is an empty object.
fn object(field: &'static str, bytes: &[u8]) -> Result<Map<String, Value>, ConvertError> {
    json::object_from_bytes(bytes).map_err(|source| ConvertError::Json { field, source })
}

/// The name a unit-like core enum has on the wire: its serde name (`diagnostic`, `service`).
fn enum_name<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|value| value.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// A unit-like core enum from its wire name; a name this build does not know (a newer peer's)
/// is `None` rather than an error, so one new value does not fail a whole message.
fn enum_from_name<T: serde::de::DeserializeOwned>(name: Option<&str>) -> Option<T> {
    name.and_then(|name| serde_json::from_value(Value::String(name.to_owned())).ok())
}
