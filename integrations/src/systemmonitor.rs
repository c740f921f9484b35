//! The systemmonitor integration: CPU, memory, disk, load and network sensors of the machine it
//! runs on, read from `/proc` and `statvfs` every N seconds.
//!
//! - `parse`: pure readers of the kernel's text files and the disk figures.
//! - `sensor`: the sensor kinds, the per-entry monitor (sampling) and the sensor entity.
//! - `config_flow`: one form (disk path, interface, interval), one entry per core.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use futures::future::BoxFuture;
use parking_lot::Mutex;
use serde_json::{Map, Value};
use tokio::task::AbortHandle;

use homecore::{
    ConfigEntry, Core, FlowHandler, Integration, IntegrationType, Manifest, SetupError,
};

mod config_flow;
pub mod parse;
mod sensor;

#[cfg(test)]
mod tests;

pub use sensor::SensorKind;

use sensor::{Monitor, Sources, SystemSensor};

/// The integration's domain.
pub const DOMAIN: &str = "systemmonitor";
/// Where the kernel's files are read from on a real machine.
pub const PROC_ROOT: &str = "/proc";
/// Disk path offered by the flow.
pub const DEFAULT_DISK_PATH: &str = "/";
/// Shortest refresh interval, in seconds.
pub const MIN_SCAN_INTERVAL_SECS: i64 = 1;
/// Longest refresh interval, in seconds.
pub const MAX_SCAN_INTERVAL_SECS: i64 = 3600;
/// Refresh interval when none is configured, in seconds.
pub const DEFAULT_SCAN_INTERVAL_SECS: i64 = 30;

/// The manifest.
static MANIFEST: LazyLock<Manifest> = LazyLock::new(|| Manifest {
    domain: DOMAIN.to_owned(),
    name: "System Monitor".to_owned(),
    version: semver::Version::new(1, 0, 0),
    integration_type: IntegrationType::Device,
    config_flow: true,
    platforms: vec!["sensor".to_owned()],
    dependencies: Vec::new(),
    iot_class: Some("local_push".to_owned()),
    single_config_entry: true,
});

/// The English strings.
const STRINGS_EN: &str = include_str!("systemmonitor/strings.json");

/// A loaded entry: its monitor and the task refreshing it.
struct LoadedEntry {
    /// Keeps the monitor alive while loaded.
    _monitor: Arc<Monitor>,
    /// The refresh task.
    refresher: AbortHandle,
}

/// The systemmonitor integration. One instance serves one core.
pub struct SystemMonitorIntegration {
    /// Folder standing for `/proc`.
    proc_root: PathBuf,
    /// Loaded entries by id.
    loaded: Mutex<BTreeMap<String, LoadedEntry>>,
}

impl Default for SystemMonitorIntegration {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for SystemMonitorIntegration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SystemMonitorIntegration")
            .field("proc_root", &self.proc_root)
            .field("loaded", &self.loaded.lock().keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Why an entry's data cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    /// The disk path is missing or not absolute.
    #[error("the entry's disk_path {0:?} is not an absolute path")]
    DiskPath(String),
    /// The interval is missing or out of range.
    #[error(
        "the entry's scan_interval must be within {MIN_SCAN_INTERVAL_SECS}..={MAX_SCAN_INTERVAL_SECS} seconds"
    )]
    ScanInterval,
}

impl SystemMonitorIntegration {
    /// The integration reading the real `/proc`.
    pub fn new() -> Self {
        Self::with_proc_root(PROC_ROOT)
    }

    /// The integration reading kernel files under `proc_root` (tests use sample files).
    pub fn with_proc_root(proc_root: impl Into<PathBuf>) -> Self {
        Self {
            proc_root: proc_root.into(),
            loaded: Mutex::new(BTreeMap::new()),
        }
    }

    fn sources(&self, data: &Map<String, Value>) -> Result<(Sources, Duration), EntryError> {
        let disk_path = data
            .get("disk_path")
            .and_then(Value::as_str)
            .unwrap_or(DEFAULT_DISK_PATH);
        if !disk_path.starts_with('/') {
            return Err(EntryError::DiskPath(disk_path.to_owned()));
        }
        let interval = data
            .get("scan_interval")
            .and_then(Value::as_i64)
            .unwrap_or(DEFAULT_SCAN_INTERVAL_SECS);
        if !(MIN_SCAN_INTERVAL_SECS..=MAX_SCAN_INTERVAL_SECS).contains(&interval) {
            return Err(EntryError::ScanInterval);
        }
        let sources = Sources {
            proc_root: self.proc_root.clone(),
            disk_path: PathBuf::from(disk_path),
            interface: data
                .get("network_interface")
                .and_then(Value::as_str)
                .map(str::to_owned),
        };
        Ok((sources, Duration::from_secs(interval.unsigned_abs())))
    }

    async fn setup(&self, core: &Core, entry: &ConfigEntry) -> Result<(), SetupError> {
        let (sources, interval) = self
            .sources(&entry.data)
            .map_err(|err| SetupError::Failed(err.to_string()))?;
        let monitor = Monitor::new(sources);
        // First sample before the sensors are added, so they start with values.
        monitor.refresh();
        let platform = core
            .entities()
            .forward_entry_setup(entry, "sensor")
            .map_err(|err| SetupError::Failed(err.to_string()))?;
        let sensors: Vec<homecore::EntityRef> = monitor
            .kinds()
            .into_iter()
            .map(|kind| {
                Arc::new(SystemSensor::new(
                    kind,
                    &entry.entry_id,
                    Arc::clone(&monitor),
                )) as homecore::EntityRef
            })
            .collect();
        platform
            .add_entities(sensors)
            .await
            .map_err(|err| SetupError::Failed(err.to_string()))?;
        let weak = Arc::downgrade(&monitor);
        let refresher = tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                let Some(monitor) = weak.upgrade() else {
                    return;
                };
                monitor.refresh();
            }
        })
        .abort_handle();
        let previous = self.loaded.lock().insert(
            entry.entry_id.clone(),
            LoadedEntry {
                _monitor: monitor,
                refresher,
            },
        );
        if let Some(previous) = previous {
            previous.refresher.abort();
        }
        Ok(())
    }

    async fn unload(&self, core: &Core, entry: &ConfigEntry) -> Result<(), String> {
        let loaded = self.loaded.lock().remove(&entry.entry_id);
        if let Some(loaded) = loaded {
            loaded.refresher.abort();
        }
        core.entities()
            .unload_platform("sensor", &entry.entry_id)
            .await;
        Ok(())
    }
}

impl Integration for SystemMonitorIntegration {
    fn manifest(&self) -> &Manifest {
        &MANIFEST
    }

    fn config_flow(&self) -> Option<Box<dyn FlowHandler>> {
        Some(Box::new(config_flow::SystemMonitorConfigFlow {
            proc_root: self.proc_root.clone(),
        }))
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
