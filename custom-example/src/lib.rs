//! An example custom integration, `acme_thermostat`, built as its own sandbox binary.
//!
//! A custom integration is not compiled into the hub: it ships as a sandbox binary built with the
//! SDK (`src/main.rs` here is the whole binary: [`sandbox_runtime::sdk::run_main`] over
//! [`integrations`]), plus a manifest. The host runs it in its own group,
//! `custom-acme_thermostat`, and verifies the binary against a pinned SHA-256 before every setup.
//!
//! # What it provides
//! - A config flow with one form: a name and a target temperature (7–35 °C).
//! - Per entry, one device with a `climate` entity (modes `off`/`heat`, target temperature) and
//!   a temperature `sensor` (the room temperature, which drifts towards the target while
//!   heating).
//! - The service `acme_thermostat.boost` (`minutes`, default 30): raises every thermostat's
//!   target by [`BOOST_DEGREES`] and answers with the new targets.
//!
//! # Shipping and pinning
//! `manifest.json` carries the domain, name and version (the crate's version). The SHA-256 of
//! the binary depends on the build, so it is pinned at install time, after building:
//!
//! ```text
//! cargo build --release -p custom-example
//! cargo run --release -p custom-example --bin pin -- target/release/acme-thermostat-sandbox
//! # {"domain":"acme_thermostat","version":"1.0.0","sha256":"…"}
//! ```
//!
//! The printed `sha256` (see [`pin::pin`]) goes into the host's `CustomIntegration` for this
//! artifact, and the host's `custom_commands["custom-acme_thermostat"]` runs the binary. A
//! binary that no longer matches its pin is refused with "does not match its pinned sha256".

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use futures::future::BoxFuture;
use parking_lot::Mutex;
use serde_json::{Value, json};

use homecore::{
    ConfigEntry, Core, Field, FieldType, FlowHandler, Integration, Manifest, Schema, ServiceError,
    SetupError, SupportsResponse,
};

mod config_flow;
mod entities;
pub mod pin;

pub use entities::Thermostat;

/// The integration's domain.
pub const DOMAIN: &str = "acme_thermostat";

/// The manifest shipped next to the binary.
pub const MANIFEST_JSON: &str = include_str!("../manifest.json");

/// The boost service.
pub const SERVICE_BOOST: &str = "boost";

/// Degrees a boost adds to the target.
pub const BOOST_DEGREES: f64 = 2.0;

/// Minutes a boost lasts when the call does not say.
pub const DEFAULT_BOOST_MINUTES: i64 = 30;

/// Longest boost, in minutes.
pub const MAX_BOOST_MINUTES: i64 = 240;

/// Lowest target temperature, °C.
pub const MIN_TEMP: f64 = 7.0;

/// Highest target temperature, °C.
pub const MAX_TEMP: f64 = 35.0;

/// Target temperature when the entry does not say, °C.
pub const DEFAULT_TARGET: f64 = 21.0;

/// Room temperature a new thermostat starts from, °C.
pub const INITIAL_ROOM_TEMPERATURE: f64 = 19.0;

/// Time between two simulation steps of the room temperature.
pub const TICK: Duration = Duration::from_secs(30);

/// Why the manifest could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// It is not a valid manifest.
    #[error("invalid manifest.json: {0}")]
    Parse(#[from] serde_json::Error),
    /// Its version is not the crate's.
    #[error("manifest.json says version {found}, the crate is {expected}")]
    Version {
        /// The crate's version.
        expected: String,
        /// The manifest's.
        found: String,
    },
}

/// The shipped manifest, checked against the crate's version.
pub fn manifest() -> Result<Manifest, ManifestError> {
    let manifest: Manifest = serde_json::from_str(MANIFEST_JSON)?;
    let expected = env!("CARGO_PKG_VERSION");
    if manifest.version.to_string() != expected {
        return Err(ManifestError::Version {
            expected: expected.to_owned(),
            found: manifest.version.to_string(),
        });
    }
    Ok(manifest)
}

/// The manifest, or a placeholder naming the problem (`Integration::manifest` cannot fail; the
/// placeholder fails validation, so the integration is never loaded).
static MANIFEST: LazyLock<Manifest> = LazyLock::new(|| {
    manifest().unwrap_or_else(|error| Manifest {
        domain: DOMAIN.to_owned(),
        name: String::new(),
        version: semver::Version::new(0, 0, 0),
        integration_type: homecore::IntegrationType::Device,
        config_flow: false,
        platforms: vec![format!("invalid manifest: {error}")],
        dependencies: Vec::new(),
        iot_class: None,
        single_config_entry: false,
    })
});

/// Every integration this binary hosts (just the one).
pub fn integrations() -> Vec<Arc<dyn Integration>> {
    vec![Arc::new(AcmeThermostat::new())]
}

/// The `acme_thermostat` integration. One instance serves one core.
#[derive(Default)]
pub struct AcmeThermostat {
    /// Loaded entries' thermostats, by entry id.
    loaded: Arc<Mutex<BTreeMap<String, Arc<Thermostat>>>>,
}

impl std::fmt::Debug for AcmeThermostat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcmeThermostat")
            .field("loaded", &self.loaded.lock().keys().collect::<Vec<_>>())
            .finish()
    }
}

impl AcmeThermostat {
    /// Nothing loaded.
    pub fn new() -> Self {
        Self::default()
    }

    fn boost_schema() -> Schema {
        Schema::new(vec![
            Field::optional("minutes", FieldType::integer_range(1, MAX_BOOST_MINUTES))
                .with_default(json!(DEFAULT_BOOST_MINUTES)),
        ])
    }

    async fn setup(&self, core: &Core, entry: &ConfigEntry) -> Result<(), SetupError> {
        let thermostat = Thermostat::new(entry);
        thermostat
            .add_to(core, entry)
            .await
            .map_err(|error| SetupError::Failed(error.to_string()))?;
        let first = {
            let mut loaded = self.loaded.lock();
            loaded.insert(entry.entry_id.clone(), Arc::clone(&thermostat));
            loaded.len() == 1
        };
        if first && !core.services().has_service(DOMAIN, SERVICE_BOOST) {
            let loaded = Arc::downgrade(&self.loaded);
            core.services()
                .register(
                    DOMAIN,
                    SERVICE_BOOST,
                    Some(Self::boost_schema()),
                    SupportsResponse::Optional,
                    move |call| {
                        let thermostats: Vec<Arc<Thermostat>> = loaded
                            .upgrade()
                            .map(|loaded| loaded.lock().values().cloned().collect())
                            .unwrap_or_default();
                        async move {
                            let minutes = call
                                .data
                                .get("minutes")
                                .and_then(Value::as_i64)
                                .unwrap_or(DEFAULT_BOOST_MINUTES);
                            if thermostats.is_empty() {
                                return Err(ServiceError::handler("no thermostat is loaded"));
                            }
                            let boosted: Vec<Value> = thermostats
                                .iter()
                                .map(|thermostat| thermostat.boost(minutes, call.context.clone()))
                                .collect();
                            Ok(Some(json!({ "boosted": boosted })))
                        }
                    },
                )
                .map_err(|error| SetupError::Failed(error.to_string()))?;
        }
        Ok(())
    }

    async fn unload(&self, core: &Core, entry: &ConfigEntry) -> Result<(), String> {
        let thermostat = self.loaded.lock().remove(&entry.entry_id);
        if let Some(thermostat) = thermostat {
            thermostat.stop();
        }
        for domain in ["climate", "sensor"] {
            core.entities()
                .unload_platform(domain, &entry.entry_id)
                .await;
        }
        if self.loaded.lock().is_empty() {
            core.services().remove(DOMAIN, SERVICE_BOOST);
        }
        Ok(())
    }
}

impl Integration for AcmeThermostat {
    fn manifest(&self) -> &Manifest {
        &MANIFEST
    }

    fn config_flow(&self) -> Option<Box<dyn FlowHandler>> {
        Some(Box::new(config_flow::AcmeConfigFlow))
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
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_shipped_manifest_is_valid_and_at_the_crate_version() {
        let manifest = manifest().unwrap();
        manifest.validate().unwrap();
        assert_eq!(manifest.domain, DOMAIN);
        assert_eq!(manifest.version.to_string(), env!("CARGO_PKG_VERSION"));
        assert!(manifest.unproxyable_platforms().is_empty());
        assert_eq!(MANIFEST.clone(), manifest);
    }
}
