//! The file integration: a sensor following a file's last line, and a notifier appending
//! messages to a file, one entity per entry.
//!
//! - `config`: the entry's configuration and the path checks.
//! - `config_flow`: a menu picks sensor or notify; one form asks for the file.
//! - `tail`: reading a file's last line, writing one message line.
//! - `entity`: the sensor (polled on tokio time) and the notifier.

use std::sync::{Arc, LazyLock};

use futures::future::BoxFuture;
use serde_json::{Map, Value};

use homecore::{
    ConfigEntry, Core, FlowHandler, Integration, IntegrationType, Manifest, SetupError,
};

mod config;
mod config_flow;
mod entity;
mod tail;

#[cfg(test)]
mod tests;

pub use config::{
    ConfigError, DEFAULT_SCAN_INTERVAL_SECS, EntryConfig, MAX_PATH_LENGTH, MAX_SCAN_INTERVAL_SECS,
    MIN_SCAN_INTERVAL_SECS, PathError, check_path,
};
pub use tail::{MAX_TAIL_BYTES, append_line, last_line, last_line_of, message_line};

use entity::{FileNotify, FileSensor};

/// The integration's domain.
pub const DOMAIN: &str = "file";

/// The manifest.
static MANIFEST: LazyLock<Manifest> = LazyLock::new(|| Manifest {
    domain: DOMAIN.to_owned(),
    name: "File".to_owned(),
    version: semver::Version::new(1, 0, 0),
    integration_type: IntegrationType::Service,
    config_flow: true,
    platforms: vec!["notify".to_owned(), "sensor".to_owned()],
    dependencies: Vec::new(),
    iot_class: Some("local_polling".to_owned()),
    single_config_entry: false,
});

/// The English strings.
const STRINGS_EN: &str = include_str!("file/strings.json");

/// The file integration. One instance serves one core.
#[derive(Debug, Default)]
pub struct FileIntegration {}

impl FileIntegration {
    /// A fresh instance, for one core.
    pub fn new() -> Self {
        Self::default()
    }

    async fn setup(&self, core: &Core, entry: &ConfigEntry) -> Result<(), SetupError> {
        let config = EntryConfig::from_data(&entry.data)
            .map_err(|err| SetupError::Failed(format!("invalid file entry: {err}")))?;
        let (domain, entity): (&'static str, homecore::EntityRef) = match config {
            EntryConfig::Sensor {
                name,
                path,
                unit_of_measurement,
                numeric,
                scan_interval,
            } => (
                "sensor",
                FileSensor::new(
                    &entry.entry_id,
                    name,
                    path,
                    unit_of_measurement,
                    numeric,
                    scan_interval,
                ),
            ),
            EntryConfig::Notify {
                name,
                path,
                timestamp,
            } => (
                "notify",
                Arc::new(FileNotify::new(&entry.entry_id, name, path, timestamp)),
            ),
        };
        let platform = core
            .entities()
            .forward_entry_setup(entry, domain)
            .map_err(|err| SetupError::Failed(err.to_string()))?;
        platform
            .add_entities([entity])
            .await
            .map_err(|err| SetupError::Failed(err.to_string()))?;
        Ok(())
    }
}

impl Integration for FileIntegration {
    fn manifest(&self) -> &Manifest {
        &MANIFEST
    }

    fn config_flow(&self) -> Option<Box<dyn FlowHandler>> {
        Some(Box::new(config_flow::FileConfigFlow))
    }

    fn setup_entry<'a>(
        &'a self,
        core: &'a Core,
        entry: &'a ConfigEntry,
    ) -> BoxFuture<'a, Result<(), SetupError>> {
        Box::pin(self.setup(core, entry))
    }

    fn translations(&self, language: &str) -> Option<Map<String, Value>> {
        crate::english_strings(language, STRINGS_EN)
    }
}
