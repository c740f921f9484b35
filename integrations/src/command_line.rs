//! The command_line integration: one sensor, binary sensor or switch per entry, driven by shell
//! commands run as real subprocesses with a timeout and capped output.
//!
//! - `config`: the entry's configuration, read from its data and checked.
//! - `config_flow`: a menu picks the platform; one form asks for its commands.
//! - `runner`: runs one command (`/bin/sh -c`, own process group, timeout, capped output).
//! - `entity`: the entity, polling its state command with tokio time.

use std::sync::{Arc, LazyLock};

use futures::future::BoxFuture;
use serde_json::{Map, Value};

use homecore::{
    ConfigEntry, Core, FlowHandler, Integration, IntegrationType, Manifest, SetupError,
};

mod config;
mod config_flow;
mod entity;
mod runner;

#[cfg(test)]
mod tests;

pub use config::{
    CommandProblem, ConfigError, DEFAULT_COMMAND_TIMEOUT_SECS, DEFAULT_PAYLOAD_OFF,
    DEFAULT_PAYLOAD_ON, DEFAULT_SCAN_INTERVAL_SECS, EntryConfig, MAX_COMMAND_LENGTH,
    MAX_COMMAND_TIMEOUT_SECS, MAX_SCAN_INTERVAL_SECS, MIN_COMMAND_TIMEOUT_SECS,
    MIN_SCAN_INTERVAL_SECS, PlatformConfig, check_command,
};
pub use runner::{
    CommandError, CommandOutput, CommandRunner, MAX_OUTPUT_BYTES, MAX_STDERR_BYTES, SHELL,
    ShellRunner, run_shell,
};

use entity::CommandLineEntity;

/// The integration's domain.
pub const DOMAIN: &str = "command_line";

/// The manifest: the three platforms an entry may pick from.
static MANIFEST: LazyLock<Manifest> = LazyLock::new(|| Manifest {
    domain: DOMAIN.to_owned(),
    name: "Command Line".to_owned(),
    version: semver::Version::new(1, 0, 0),
    integration_type: IntegrationType::Service,
    config_flow: true,
    platforms: vec![
        "binary_sensor".to_owned(),
        "sensor".to_owned(),
        "switch".to_owned(),
    ],
    dependencies: Vec::new(),
    iot_class: Some("local_polling".to_owned()),
    single_config_entry: false,
});

/// The English strings.
const STRINGS_EN: &str = include_str!("command_line/strings.json");

/// The command_line integration. One instance serves one core.
pub struct CommandLineIntegration {
    /// Runs the entities' commands.
    runner: Arc<dyn CommandRunner>,
}

impl Default for CommandLineIntegration {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for CommandLineIntegration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandLineIntegration").finish()
    }
}

impl CommandLineIntegration {
    /// The integration running real subprocesses.
    pub fn new() -> Self {
        Self::with_runner(Arc::new(ShellRunner))
    }

    /// The integration running commands through `runner` (tests run commands without processes).
    pub fn with_runner(runner: Arc<dyn CommandRunner>) -> Self {
        Self { runner }
    }

    async fn setup(&self, core: &Core, entry: &ConfigEntry) -> Result<(), SetupError> {
        let config = EntryConfig::from_data(&entry.data)
            .map_err(|err| SetupError::Failed(format!("invalid command_line entry: {err}")))?;
        let domain = config.platform.domain();
        let platform = core
            .entities()
            .forward_entry_setup(entry, domain)
            .map_err(|err| SetupError::Failed(err.to_string()))?;
        let entity = CommandLineEntity::new(&entry.entry_id, config, Arc::clone(&self.runner));
        platform
            .add_entities([entity as homecore::EntityRef])
            .await
            .map_err(|err| SetupError::Failed(err.to_string()))?;
        Ok(())
    }
}

impl Integration for CommandLineIntegration {
    fn manifest(&self) -> &Manifest {
        &MANIFEST
    }

    fn config_flow(&self) -> Option<Box<dyn FlowHandler>> {
        Some(Box::new(config_flow::CommandLineConfigFlow))
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
