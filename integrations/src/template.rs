//! The template integration (a helper, run on main: it reads entities it does not own): a
//! sensor computed from other entities' states with a small, safe expression language.
//!
//! - `expression`: the language (aggregates over numeric states, format strings), pure.
//! - `entity`: the sensor, recomputed on `state_changed` of its sources.
//! - `config_flow`: one form.

use std::collections::BTreeSet;
use std::sync::LazyLock;

use futures::future::BoxFuture;
use parking_lot::Mutex;
use serde_json::{Map, Value};

use homecore::{
    ConfigEntry, Core, FlowHandler, Integration, IntegrationType, Manifest, SetupError,
};

mod config_flow;
mod entity;
pub mod expression;

#[cfg(test)]
mod tests;

pub use config_flow::{ExpressionError, expression_of};
pub use entity::Expression;

use entity::TemplateSensor;

/// The integration's domain (in the host's ALWAYS_MAIN list: it must stay `template`).
pub const DOMAIN: &str = "template";

/// The manifest.
static MANIFEST: LazyLock<Manifest> = LazyLock::new(|| Manifest {
    domain: DOMAIN.to_owned(),
    name: "Template".to_owned(),
    version: semver::Version::new(1, 0, 0),
    integration_type: IntegrationType::Helper,
    config_flow: true,
    platforms: vec!["sensor".to_owned()],
    dependencies: Vec::new(),
    iot_class: Some("local_push".to_owned()),
    single_config_entry: false,
});

/// The English strings.
const STRINGS_EN: &str = include_str!("template/strings.json");

/// The template integration. One instance serves one core.
#[derive(Debug, Default)]
pub struct TemplateIntegration {
    /// Loaded entry ids.
    loaded: Mutex<BTreeSet<String>>,
}

impl TemplateIntegration {
    /// An integration with nothing loaded.
    pub fn new() -> Self {
        Self::default()
    }

    async fn setup(&self, core: &Core, entry: &ConfigEntry) -> Result<(), SetupError> {
        let expression = expression_of(&entry.data)
            .map_err(|err| SetupError::Failed(format!("invalid template entry: {err}")))?;
        let unit = entry
            .data
            .get("unit_of_measurement")
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|unit| !unit.is_empty())
            .map(str::to_owned);
        let sensor = TemplateSensor::new(&entry.entry_id, entry.title.clone(), expression, unit);
        let platform = core
            .entities()
            .forward_entry_setup(entry, "sensor")
            .map_err(|err| SetupError::Failed(err.to_string()))?;
        platform
            .add_entities([sensor as homecore::EntityRef])
            .await
            .map_err(|err| SetupError::Failed(err.to_string()))?;
        self.loaded.lock().insert(entry.entry_id.clone());
        Ok(())
    }

    async fn unload(&self, core: &Core, entry: &ConfigEntry) -> Result<(), String> {
        if self.loaded.lock().remove(&entry.entry_id) {
            core.entities()
                .unload_platform("sensor", &entry.entry_id)
                .await;
        }
        Ok(())
    }
}

impl Integration for TemplateIntegration {
    fn manifest(&self) -> &Manifest {
        &MANIFEST
    }

    fn config_flow(&self) -> Option<Box<dyn FlowHandler>> {
        Some(Box::new(config_flow::TemplateConfigFlow))
    }

    fn setup_entry<'a>(
        &'a self,
        core: &'a Core,
        entry: &'a ConfigEntry,
    ) -> BoxFuture<'a, Result<(), SetupError>> {
        Box::pin(self.setup(core, entry))
    }

    fn unload_entry<'a>(
        &'a self,
        core: &'a Core,
        entry: &'a ConfigEntry,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(self.unload(core, entry))
    }

    fn translations(&self, language: &str) -> Option<Map<String, Value>> {
        crate::english_strings(language, STRINGS_EN)
    }
}
