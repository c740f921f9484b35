//! `Core`: one home-automation core — its configuration, lifecycle and every part above, behind one handle.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::task::JoinHandle;

use crate::area_registry::AreaRegistry;
use crate::config_entries::{ConfigEntries, ConfigEntryError};
use crate::device_registry::DeviceRegistry;
use crate::entity_component::EntityComponents;
use crate::entity_registry::EntityRegistry;
use crate::event::{
    EVENT_CORE_CONFIG_UPDATED, EVENT_HOMEASSISTANT_CLOSE, EVENT_HOMEASSISTANT_FINAL_WRITE,
    EVENT_HOMEASSISTANT_START, EVENT_HOMEASSISTANT_STARTED, EVENT_HOMEASSISTANT_STOP, EventBus,
};
use crate::file_backend::FileStoreBackend;
use crate::integration::{Integration, IntegrationError, IntegrationLoader};
use crate::registry::{Registries, RegistryError};
use crate::restore_state::{RestoreState, STATE_DUMP_INTERVAL};
use crate::service::ServiceRegistry;
use crate::state::StateMachine;
use crate::store::{Store, StoreBackend, StoreError, Stores};
use crate::translation::Translations;

#[cfg(test)]
mod tests;

/// Store key of the core configuration set at run time.
pub const CORE_CONFIG_STORE_KEY: &str = "core.config";
/// How long each stop stage waits for listeners before going on (Home Assistant's stop-stage timeout).
pub const STOP_STAGE_TIMEOUT: Duration = Duration::from_secs(100);
/// How long the final-write stage waits (Home Assistant's final-write timeout).
pub const FINAL_WRITE_STAGE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the close stage waits (Home Assistant's close timeout).
pub const CLOSE_STAGE_TIMEOUT: Duration = Duration::from_secs(30);

/// Units the core shows values in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnitSystem {
    /// °C, km, kg, L, hPa.
    #[default]
    Metric,
    /// °F, mi, lb, gal, psi.
    UsCustomary,
}

impl UnitSystem {
    /// Temperature unit.
    pub fn temperature_unit(self) -> &'static str {
        match self {
            Self::Metric => "°C",
            Self::UsCustomary => "°F",
        }
    }

    /// Length unit.
    pub fn length_unit(self) -> &'static str {
        match self {
            Self::Metric => "km",
            Self::UsCustomary => "mi",
        }
    }

    /// Mass unit.
    pub fn mass_unit(self) -> &'static str {
        match self {
            Self::Metric => "kg",
            Self::UsCustomary => "lb",
        }
    }

    /// Volume unit.
    pub fn volume_unit(self) -> &'static str {
        match self {
            Self::Metric => "L",
            Self::UsCustomary => "gal",
        }
    }

    /// Pressure unit.
    pub fn pressure_unit(self) -> &'static str {
        match self {
            Self::Metric => "Pa",
            Self::UsCustomary => "psi",
        }
    }

    /// Wind speed unit.
    pub fn wind_speed_unit(self) -> &'static str {
        match self {
            Self::Metric => "m/s",
            Self::UsCustomary => "mph",
        }
    }
}

/// Where the home is and how it speaks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CoreConfig {
    /// The home's name.
    pub location_name: String,
    /// Latitude in degrees.
    pub latitude: f64,
    /// Longitude in degrees.
    pub longitude: f64,
    /// Elevation in meters.
    pub elevation: i32,
    /// Radius of the home zone in meters.
    pub radius: u32,
    /// Units for display.
    pub unit_system: UnitSystem,
    /// IANA time zone name (`Europe/Amsterdam`, `UTC`).
    pub time_zone: String,
    /// Language tag (`en`, `pt-BR`).
    pub language: String,
    /// ISO 4217 currency code.
    pub currency: String,
    /// ISO 3166 country code.
    pub country: Option<String>,
    /// Where files live (`.storage/` beneath it); not changeable at run time, not persisted.
    #[serde(skip)]
    pub config_dir: PathBuf,
}

impl CoreConfig {
    /// Home Assistant's defaults, with files under `config_dir`.
    pub fn new(config_dir: impl Into<PathBuf>) -> Self {
        Self {
            location_name: "Home".into(),
            latitude: 52.3731339,
            longitude: 4.8903147,
            elevation: 0,
            radius: 100,
            unit_system: UnitSystem::Metric,
            time_zone: "UTC".into(),
            language: "en".into(),
            currency: "EUR".into(),
            country: None,
            config_dir: config_dir.into(),
        }
    }

    /// Checks every field's shape.
    pub fn validate(&self) -> Result<(), CoreError> {
        let invalid = |message: String| Err(CoreError::InvalidConfig(message));
        if !(-90.0..=90.0).contains(&self.latitude) {
            return invalid(format!("latitude {} is outside -90..=90", self.latitude));
        }
        if !(-180.0..=180.0).contains(&self.longitude) {
            return invalid(format!(
                "longitude {} is outside -180..=180",
                self.longitude
            ));
        }
        if self.location_name.trim().is_empty() {
            return invalid("location name must not be empty".into());
        }
        let tz_ok = !self.time_zone.is_empty()
            && self.time_zone.len() <= 64
            && self.time_zone.split('/').all(|part| {
                !part.is_empty()
                    && part
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_-+".contains(c))
            });
        if !tz_ok {
            return invalid(format!("invalid time zone {:?}", self.time_zone));
        }
        let lang_ok = self.language.split('-').enumerate().all(|(i, part)| {
            (if i == 0 { 2..=3 } else { 2..=8 }).contains(&part.len())
                && part.chars().all(|c| c.is_ascii_alphanumeric())
        });
        if !lang_ok {
            return invalid(format!("invalid language {:?}", self.language));
        }
        if self.currency.len() != 3 || !self.currency.chars().all(|c| c.is_ascii_uppercase()) {
            return invalid(format!(
                "invalid currency {:?}: expected an ISO 4217 code like EUR",
                self.currency
            ));
        }
        if let Some(country) = &self.country
            && (country.len() != 2 || !country.chars().all(|c| c.is_ascii_uppercase()))
        {
            return invalid(format!(
                "invalid country {country:?}: expected an ISO 3166 code like NL"
            ));
        }
        Ok(())
    }
}

/// Changes to the core configuration; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CoreConfigUpdate {
    /// New home name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location_name: Option<String>,
    /// New latitude.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latitude: Option<f64>,
    /// New longitude.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub longitude: Option<f64>,
    /// New elevation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elevation: Option<i32>,
    /// New home zone radius.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub radius: Option<u32>,
    /// New unit system.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit_system: Option<UnitSystem>,
    /// New time zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// New language.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// New currency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// New country.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
}

impl CoreConfigUpdate {
    /// The fields that differ from `old` in `new`, with `new`'s values (`config_dir` is not
    /// part of an update). A country cleared in `new` cannot be expressed and is left out.
    pub fn between(old: &CoreConfig, new: &CoreConfig) -> Self {
        fn changed<T: PartialEq + Clone>(old: &T, new: &T) -> Option<T> {
            (old != new).then(|| new.clone())
        }
        Self {
            location_name: changed(&old.location_name, &new.location_name),
            latitude: changed(&old.latitude, &new.latitude),
            longitude: changed(&old.longitude, &new.longitude),
            elevation: changed(&old.elevation, &new.elevation),
            radius: changed(&old.radius, &new.radius),
            unit_system: changed(&old.unit_system, &new.unit_system),
            time_zone: changed(&old.time_zone, &new.time_zone),
            language: changed(&old.language, &new.language),
            currency: changed(&old.currency, &new.currency),
            country: changed(&old.country, &new.country).flatten(),
        }
    }

    /// `config` with this update applied.
    pub fn applied_to(&self, config: &CoreConfig) -> CoreConfig {
        apply_update(config, self)
    }
}

/// Where the core is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CoreState {
    /// Built, not started.
    NotRunning,
    /// Loading data and setting up entries.
    Starting,
    /// Running.
    Running,
    /// Stop requested; integrations are stopping.
    Stopping,
    /// Writing data for the last time.
    FinalWrite,
    /// Stopped; a stopped core cannot start again.
    Stopped,
}

/// Why a core operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// The configuration is invalid.
    #[error("invalid core configuration: {0}")]
    InvalidConfig(String),
    /// The operation is not allowed in the current state.
    #[error("cannot {operation} while the core is {state:?}")]
    InvalidState {
        /// What was attempted.
        operation: &'static str,
        /// The state it was attempted in.
        state: CoreState,
    },
    /// A store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A registry failed to load.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// Config entries failed to load.
    #[error(transparent)]
    ConfigEntries(#[from] ConfigEntryError),
    /// An integration could not be made available.
    #[error(transparent)]
    Integration(#[from] IntegrationError),
}

/// Everything one core owns.
pub(crate) struct CoreInner {
    /// The configuration.
    config: RwLock<CoreConfig>,
    /// The lifecycle state.
    state: RwLock<CoreState>,
    /// The event bus.
    bus: EventBus,
    /// The state machine.
    states: StateMachine,
    /// The service registry.
    services: ServiceRegistry,
    /// Storage, through this core's backend.
    stores: Stores,
    /// Entity, device and area registries.
    registries: Registries,
    /// Config entries and their flows.
    config_entries: ConfigEntries,
    /// Restore state.
    restore_state: RestoreState,
    /// Entity components, platforms and live entities.
    entities: EntityComponents,
    /// The integrations available to this core.
    integrations: IntegrationLoader,
    /// Integrations' translation strings.
    translations: Translations,
    /// The runtime configuration's store.
    config_store: Store,
    /// The default file backend, when in use, to sweep interrupted writes at load.
    file_backend: Option<FileStoreBackend>,
    /// Whether `load` already ran.
    loaded: tokio::sync::Mutex<bool>,
    /// The periodic restore-state save, while running.
    dump_task: Mutex<Option<JoinHandle<()>>>,
}

/// A home-automation core: a cheap-to-clone handle usable from many tasks.
#[derive(Clone)]
pub struct Core {
    /// Everything the core owns.
    inner: Arc<CoreInner>,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("state", &self.state())
            .field("location_name", &self.config().location_name)
            .finish()
    }
}

/// Builds a [`Core`].
pub struct CoreBuilder {
    /// The configuration.
    config: CoreConfig,
    /// A store backend replacing the default file backend.
    backend: Option<Arc<dyn StoreBackend>>,
    /// Integrations made available at build.
    integrations: Vec<Arc<dyn Integration>>,
}

impl CoreBuilder {
    /// Routes all storage IO of the core through `backend` instead of `<config_dir>/.storage`.
    pub fn store_backend(mut self, backend: Arc<dyn StoreBackend>) -> Self {
        self.backend = Some(backend);
        self
    }

    /// Makes `integrations` available to the core (see [`Core::integrations`]).
    pub fn integrations(
        mut self,
        integrations: impl IntoIterator<Item = Arc<dyn Integration>>,
    ) -> Self {
        self.integrations.extend(integrations);
        self
    }

    /// Builds the core (not yet loaded or started). Its config entries find local
    /// integration code through the core's [`IntegrationLoader`].
    pub fn build(self) -> Result<Core, CoreError> {
        self.config.validate()?;
        let (backend, file_backend): (Arc<dyn StoreBackend>, Option<FileStoreBackend>) =
            match self.backend {
                Some(backend) => (backend, None),
                None => {
                    let file = FileStoreBackend::new(&self.config.config_dir);
                    (Arc::new(file.clone()), Some(file))
                }
            };
        let bus = EventBus::new();
        let stores = Stores::new(backend);
        let states = StateMachine::new(bus.clone());
        let services = ServiceRegistry::new(bus.clone());
        let registries = Registries::new(&bus, &stores, &states)?;
        let restore_state = RestoreState::new(&stores, states.clone())?;
        let config_store = stores.store(CORE_CONFIG_STORE_KEY, 1, 1)?;
        let entries_store = stores.store(
            crate::config_entries::CONFIG_ENTRIES_STORE_KEY,
            crate::config_entries::CONFIG_ENTRIES_STORE_VERSION,
            1,
        )?;
        let integrations = IntegrationLoader::new();
        integrations.add_all(self.integrations)?;
        let translations = Translations::new(integrations.clone());
        let inner = Arc::new_cyclic(|weak| CoreInner {
            config_entries: ConfigEntries::new(weak.clone(), bus.clone(), entries_store),
            entities: EntityComponents::new(weak.clone()),
            integrations: integrations.clone(),
            translations,
            config: RwLock::new(self.config),
            state: RwLock::new(CoreState::NotRunning),
            bus,
            states,
            services,
            stores,
            registries,
            restore_state,
            config_store,
            file_backend,
            loaded: tokio::sync::Mutex::new(false),
            dump_task: Mutex::new(None),
        });
        inner.config_entries.set_handlers(Arc::new(integrations));
        Ok(Core { inner })
    }
}

impl Core {
    /// A builder for a core configured by `config`.
    pub fn builder(config: CoreConfig) -> CoreBuilder {
        CoreBuilder {
            config,
            backend: None,
            integrations: Vec::new(),
        }
    }

    pub(crate) fn from_inner(inner: Arc<CoreInner>) -> Self {
        Self { inner }
    }

    /// A copy of the configuration.
    pub fn config(&self) -> CoreConfig {
        self.inner.config.read().clone()
    }

    /// The lifecycle state.
    pub fn state(&self) -> CoreState {
        *self.inner.state.read()
    }

    /// The event bus.
    pub fn bus(&self) -> &EventBus {
        &self.inner.bus
    }

    /// The state machine.
    pub fn states(&self) -> &StateMachine {
        &self.inner.states
    }

    /// The service registry.
    pub fn services(&self) -> &ServiceRegistry {
        &self.inner.services
    }

    /// Storage: make stores with [`Stores::store`].
    pub fn stores(&self) -> &Stores {
        &self.inner.stores
    }

    /// All three registries.
    pub fn registries(&self) -> &Registries {
        &self.inner.registries
    }

    /// The entity registry.
    pub fn entity_registry(&self) -> &EntityRegistry {
        &self.inner.registries.entities
    }

    /// The device registry.
    pub fn device_registry(&self) -> &DeviceRegistry {
        &self.inner.registries.devices
    }

    /// The area registry.
    pub fn area_registry(&self) -> &AreaRegistry {
        &self.inner.registries.areas
    }

    /// Config entries and their flows.
    pub fn config_entries(&self) -> &ConfigEntries {
        &self.inner.config_entries
    }

    /// Restore state.
    pub fn restore_state(&self) -> &RestoreState {
        &self.inner.restore_state
    }

    /// Entity components: platforms, live entities, entity services and the sandbox seams
    /// (observers, call by entity id, remote platforms).
    pub fn entities(&self) -> &EntityComponents {
        &self.inner.entities
    }

    /// The integrations available to this core, and which are loaded.
    pub fn integrations(&self) -> &IntegrationLoader {
        &self.inner.integrations
    }

    /// Integrations' translation strings and the translation provider seam.
    pub fn translations(&self) -> &Translations {
        &self.inner.translations
    }

    fn set_state(&self, state: CoreState) {
        *self.inner.state.write() = state;
    }

    /// Loads stored data: runtime configuration, registries, config entries, restore state.
    /// Runs once; later calls return at once.
    pub async fn load(&self) -> Result<(), CoreError> {
        let mut loaded = self.inner.loaded.lock().await;
        if *loaded {
            return Ok(());
        }
        if let Some(file) = self.inner.file_backend.clone() {
            let swept = tokio::task::spawn_blocking(move || file.remove_stale_temp_files()).await;
            match swept {
                Ok(Ok(0)) => {}
                Ok(Ok(count)) => {
                    tracing::info!(count, "removed temp files of interrupted store writes")
                }
                Ok(Err(err)) => tracing::warn!(%err, "could not sweep interrupted store writes"),
                Err(err) => tracing::warn!(%err, "store sweep task failed"),
            }
        }
        if let Some(stored) = self.inner.config_store.load().await? {
            let update: CoreConfigUpdate = serde_json::from_value(stored).map_err(|err| {
                CoreError::InvalidConfig(format!("stored core configuration is malformed: {err}"))
            })?;
            let merged = apply_update(&self.config(), &update);
            merged.validate()?;
            *self.inner.config.write() = merged;
        }
        self.inner.registries.load().await?;
        self.inner.config_entries.load().await?;
        self.inner.restore_state.load().await?;
        *loaded = true;
        Ok(())
    }

    /// Loads, sets up every enabled config entry, fires `homeassistant_start` and
    /// `homeassistant_started`, and starts the periodic restore-state save.
    pub async fn start(&self) -> Result<(), CoreError> {
        let state = self.state();
        if state != CoreState::NotRunning {
            return Err(CoreError::InvalidState {
                operation: "start",
                state,
            });
        }
        self.set_state(CoreState::Starting);
        if let Err(err) = self.load().await {
            self.set_state(CoreState::NotRunning);
            return Err(err);
        }
        self.inner.config_entries.setup_all().await;
        self.fire(EVENT_HOMEASSISTANT_START);
        self.set_state(CoreState::Running);
        self.fire(EVENT_HOMEASSISTANT_STARTED);
        let restore = self.inner.restore_state.clone();
        let dump = tokio::spawn(async move {
            let mut interval = tokio::time::interval(STATE_DUMP_INTERVAL);
            interval.tick().await;
            loop {
                interval.tick().await;
                if let Err(err) = restore.save().await {
                    tracing::error!(%err, "periodic restore state save failed");
                }
            }
        });
        *self.inner.dump_task.lock() = Some(dump);
        Ok(())
    }

    fn fire(&self, event_type: &str) {
        if let Err(err) = self.inner.bus.fire(event_type, Map::new(), None) {
            tracing::error!(%err, event_type, "could not fire lifecycle event");
        }
    }

    async fn wait_stage(&self, stage: &'static str, timeout: Duration) {
        if tokio::time::timeout(timeout, self.inner.bus.wait_idle())
            .await
            .is_err()
        {
            tracing::warn!(
                stage,
                ?timeout,
                "stop stage timed out waiting for event listeners; continuing"
            );
        }
    }

    /// Stops the core: fires `homeassistant_stop` (and waits, bounded, for listeners),
    /// cancels setup retries, saves restore state, fires `homeassistant_final_write`,
    /// writes every delayed save through the store backend, fires `homeassistant_close`.
    /// Returns the store writes that failed. Stopping twice is a no-op.
    pub async fn stop(&self) -> Result<Vec<(crate::store::StoreKey, StoreError)>, CoreError> {
        let state = self.state();
        if matches!(
            state,
            CoreState::Stopping | CoreState::FinalWrite | CoreState::Stopped
        ) {
            return Ok(Vec::new());
        }
        self.set_state(CoreState::Stopping);
        if let Some(task) = self.inner.dump_task.lock().take() {
            task.abort();
        }
        self.fire(EVENT_HOMEASSISTANT_STOP);
        self.wait_stage("stop", STOP_STAGE_TIMEOUT).await;
        self.inner.config_entries.shutdown();
        let mut failures = Vec::new();
        if *self.inner.loaded.lock().await {
            // Only a loaded core may save: an unloaded one would overwrite stored states with nothing.
            if let Err(err) = self.inner.restore_state.save().await {
                tracing::error!(%err, "saving restore state failed");
                failures.push((self.inner.restore_state.store_key().clone(), err));
            }
        }
        self.set_state(CoreState::FinalWrite);
        self.fire(EVENT_HOMEASSISTANT_FINAL_WRITE);
        self.wait_stage("final write", FINAL_WRITE_STAGE_TIMEOUT)
            .await;
        failures.extend(self.inner.stores.flush_pending().await);
        self.fire(EVENT_HOMEASSISTANT_CLOSE);
        self.wait_stage("close", CLOSE_STAGE_TIMEOUT).await;
        self.set_state(CoreState::Stopped);
        Ok(failures)
    }

    /// Changes the configuration, persists it, and fires `core_config_updated` with the changed fields.
    pub async fn update_config(&self, update: CoreConfigUpdate) -> Result<(), CoreError> {
        let merged = apply_update(&self.config(), &update);
        merged.validate()?;
        *self.inner.config.write() = merged.clone();
        let stored = serde_json::to_value(&merged).map_err(|err| {
            CoreError::InvalidConfig(format!("cannot serialize configuration: {err}"))
        })?;
        self.inner.config_store.save(stored).await?;
        let data = match serde_json::to_value(&update) {
            Ok(Value::Object(map)) => map,
            _ => Map::new(),
        };
        if let Err(err) = self.inner.bus.fire(EVENT_CORE_CONFIG_UPDATED, data, None) {
            tracing::error!(%err, "could not fire core_config_updated");
        }
        Ok(())
    }
}

impl Core {
    /// Takes `config` (all but `config_dir`, which stays) as this core's configuration without
    /// persisting it: for a core whose configuration is owned elsewhere (a sandbox's core
    /// follows main's). Fires `core_config_updated` with the changed fields when anything
    /// changed, as [`Core::update_config`] does; returns whether anything changed.
    pub fn adopt_config(&self, config: CoreConfig) -> Result<bool, CoreError> {
        config.validate()?;
        let (old, new) = {
            let mut current = self.inner.config.write();
            let old = current.clone();
            let new = CoreConfig {
                config_dir: old.config_dir.clone(),
                ..config
            };
            *current = new.clone();
            (old, new)
        };
        if old == new {
            return Ok(false);
        }
        let data = match serde_json::to_value(CoreConfigUpdate::between(&old, &new)) {
            Ok(Value::Object(map)) => map,
            _ => Map::new(),
        };
        if let Err(err) = self.inner.bus.fire(EVENT_CORE_CONFIG_UPDATED, data, None) {
            tracing::error!(%err, "could not fire core_config_updated");
        }
        Ok(true)
    }
}

fn apply_update(config: &CoreConfig, update: &CoreConfigUpdate) -> CoreConfig {
    let mut config = config.clone();
    let update = update.clone();
    if let Some(v) = update.location_name {
        config.location_name = v;
    }
    if let Some(v) = update.latitude {
        config.latitude = v;
    }
    if let Some(v) = update.longitude {
        config.longitude = v;
    }
    if let Some(v) = update.elevation {
        config.elevation = v;
    }
    if let Some(v) = update.radius {
        config.radius = v;
    }
    if let Some(v) = update.unit_system {
        config.unit_system = v;
    }
    if let Some(v) = update.time_zone {
        config.time_zone = v;
    }
    if let Some(v) = update.language {
        config.language = v;
    }
    if let Some(v) = update.currency {
        config.currency = v;
    }
    if let Some(v) = update.country {
        config.country = Some(v);
    }
    config
}
