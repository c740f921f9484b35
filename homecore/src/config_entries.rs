//! Config entries: configured integrations, their lifecycle, their flows, and the router seam.
//!
//! Follows Home Assistant's `config_entries`. Two seams let other code take part:
//! [`IntegrationHandlers`] supplies the local flow handlers and setup code by domain,
//! and an optional [`ConfigEntryRouter`], consulted at flow creation, entry setup and
//! entry unload, may take that work elsewhere (answering [`Routed::NotMine`] keeps the
//! local path).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Weak};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tokio::task::JoinHandle;

use crate::core::{Core, CoreInner};
use crate::data_entry_flow::{
    FinishedFlow, FlowContext, FlowError, FlowHandler, FlowManager, FlowOwner, FlowProgress,
    FlowResult, FlowStep,
};
use crate::entity_id::validate_domain;
use crate::event::EventBus;
use crate::store::{Store, StoreError};
use crate::unwind::catch_panic;

#[cfg(test)]
mod tests;

/// Store key of the config entries.
pub const CONFIG_ENTRIES_STORE_KEY: &str = "core.config_entries";
/// Major version of the stored data.
pub(crate) const CONFIG_ENTRIES_STORE_VERSION: u32 = 1;
/// Delay before saving after a change (Home Assistant saves config entries after 1 s).
pub const CONFIG_ENTRIES_SAVE_DELAY: Duration = Duration::from_secs(1);
/// First wait before retrying a setup that was not ready; doubles per try.
pub const SETUP_RETRY_BASE_DELAY: Duration = Duration::from_secs(5);
/// The retry wait stops doubling after this many tries (5 s · 2⁴ = 80 s), as Home Assistant.
pub const SETUP_RETRY_MAX_DOUBLINGS: u32 = 4;

/// Started by a person.
pub const SOURCE_USER: &str = "user";
/// Imported from configuration files.
pub const SOURCE_IMPORT: &str = "import";
/// Credentials stopped working.
pub const SOURCE_REAUTH: &str = "reauth";
/// A person reconfigures an existing entry.
pub const SOURCE_RECONFIGURE: &str = "reconfigure";
/// A discovery the person chose to ignore; such entries are never set up.
pub const SOURCE_IGNORE: &str = "ignore";
/// Found by zeroconf.
pub const SOURCE_ZEROCONF: &str = "zeroconf";
/// Found by SSDP.
pub const SOURCE_SSDP: &str = "ssdp";
/// Found by DHCP.
pub const SOURCE_DHCP: &str = "dhcp";
/// Found over Bluetooth.
pub const SOURCE_BLUETOOTH: &str = "bluetooth";
/// Found by another integration.
pub const SOURCE_INTEGRATION_DISCOVERY: &str = "integration_discovery";

/// The lifecycle state of a config entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConfigEntryState {
    /// Not set up (initial state, or after unload).
    #[default]
    NotLoaded,
    /// Setup is running.
    SetupInProgress,
    /// Set up and running.
    Loaded,
    /// Setup failed; a reload may try again.
    SetupError,
    /// Setup found the device not ready; it is retried with backoff.
    SetupRetry,
    /// The stored data could not be migrated to the integration's version.
    MigrationError,
    /// Unload is running.
    UnloadInProgress,
    /// Unload failed; the entry cannot be set up again without a restart.
    FailedUnload,
}

impl ConfigEntryState {
    /// Whether the entry can be unloaded and set up again without restarting.
    pub fn recoverable(self) -> bool {
        !matches!(self, Self::MigrationError | Self::FailedUnload)
    }

    /// The state's name as stored and shown (`not_loaded`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotLoaded => "not_loaded",
            Self::SetupInProgress => "setup_in_progress",
            Self::Loaded => "loaded",
            Self::SetupError => "setup_error",
            Self::SetupRetry => "setup_retry",
            Self::MigrationError => "migration_error",
            Self::UnloadInProgress => "unload_in_progress",
            Self::FailedUnload => "failed_unload",
        }
    }
}

/// Who disabled a config entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConfigEntryDisabler {
    /// A person.
    User,
}

/// One configured integration instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigEntry {
    /// Unique, immutable id.
    pub entry_id: String,
    /// The integration it configures.
    pub domain: String,
    /// Shown to people.
    pub title: String,
    /// What the integration needs to connect (host, credentials, ...).
    #[serde(default)]
    pub data: Map<String, Value>,
    /// Settings a person may change through an options flow.
    #[serde(default)]
    pub options: Map<String, Value>,
    /// How it was created (`user`, `zeroconf`, `ignore`, ...).
    pub source: String,
    /// The integration's id for what it configures; unique per domain.
    #[serde(default)]
    pub unique_id: Option<String>,
    /// Major version of `data`'s layout.
    pub version: u32,
    /// Minor version of `data`'s layout.
    #[serde(default = "default_minor_version")]
    pub minor_version: u32,
    /// The sandbox group it runs in; decided by the router on the host, never by the entry's code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    /// Why it is disabled, when it is; disabled entries are not set up.
    #[serde(default)]
    pub disabled_by: Option<ConfigEntryDisabler>,
    /// New entities of this entry start disabled.
    #[serde(default)]
    pub pref_disable_new_entities: bool,
    /// The integration should not poll.
    #[serde(default)]
    pub pref_disable_polling: bool,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub modified_at: DateTime<Utc>,
    /// Its lifecycle state (not persisted: every start begins at `not_loaded`).
    #[serde(skip)]
    pub state: ConfigEntryState,
    /// Why setup or unload failed, when it did (not persisted).
    #[serde(skip)]
    pub reason: Option<String>,
}

fn default_minor_version() -> u32 {
    1
}

impl ConfigEntry {
    /// A new, not yet added entry with a fresh id at version 1.1.
    pub fn new(
        domain: impl Into<String>,
        title: impl Into<String>,
        data: Map<String, Value>,
        source: impl Into<String>,
    ) -> Self {
        let now = Utc::now();
        Self {
            entry_id: ulid::Ulid::new().to_string(),
            domain: domain.into(),
            title: title.into(),
            data,
            options: Map::new(),
            source: source.into(),
            unique_id: None,
            version: 1,
            minor_version: 1,
            sandbox: None,
            disabled_by: None,
            pref_disable_new_entities: false,
            pref_disable_polling: false,
            created_at: now,
            modified_at: now,
            state: ConfigEntryState::NotLoaded,
            reason: None,
        }
    }
}

/// Changes to an entry; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConfigEntryUpdate {
    /// New title.
    pub title: Option<String>,
    /// New data.
    pub data: Option<Map<String, Value>>,
    /// New options.
    pub options: Option<Map<String, Value>>,
    /// New unique id (`Some(None)` clears it).
    pub unique_id: Option<Option<String>>,
    /// New major version (after a migration).
    pub version: Option<u32>,
    /// New minor version (after a migration).
    pub minor_version: Option<u32>,
    /// New sandbox group (`Some(None)` clears it); only the host's router should set it.
    pub sandbox: Option<Option<String>>,
    /// New preference for new entities.
    pub pref_disable_new_entities: Option<bool>,
    /// New polling preference.
    pub pref_disable_polling: Option<bool>,
}

/// Why a config entry operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigEntryError {
    /// No entry with this id.
    #[error("config entry {0:?} not found")]
    UnknownEntry(String),
    /// The entry's state does not allow the operation.
    #[error("{0}")]
    OperationNotAllowed(String),
    /// The input is invalid.
    #[error("{0}")]
    Invalid(String),
    /// Loading from the store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why setting up an entry did not succeed (Home Assistant's setup exceptions).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SetupError {
    /// The device or service is not reachable yet; setup is retried with backoff.
    #[error("not ready: {0}")]
    NotReady(String),
    /// The credentials were refused; a reauth flow is started.
    #[error("authentication failed: {0}")]
    AuthFailed(String),
    /// Setup failed for good (until a reload).
    #[error("{0}")]
    Failed(String),
}

/// A router's answer: keep the local path, or the outcome of the work it took.
#[derive(Debug)]
pub enum Routed<T> {
    /// Not for this router: do it locally.
    NotMine,
    /// The router did the work; this is its outcome.
    Taken(T),
}

/// A flow the router created elsewhere, and the group it chose.
pub struct RoutedFlow {
    /// Drives the flow's steps (typically forwarding them to another process).
    pub handler: Box<dyn FlowHandler>,
    /// The sandbox group recorded in the entry the flow creates.
    pub sandbox: Option<String>,
}

/// Decides where flows and entries run. Installed on the host only; consulted at flow
/// creation, entry setup and entry unload.
pub trait ConfigEntryRouter: Send + Sync + 'static {
    /// Takes a new config flow for `domain`, or leaves it local.
    fn create_flow<'a>(
        &'a self,
        domain: &'a str,
        context: &'a FlowContext,
        data: Option<&'a Map<String, Value>>,
    ) -> BoxFuture<'a, Result<Routed<RoutedFlow>, FlowError>>;

    /// Takes a new options flow for `entry`, or leaves it local.
    fn create_options_flow<'a>(
        &'a self,
        _entry: &'a ConfigEntry,
    ) -> BoxFuture<'a, Result<Routed<Box<dyn FlowHandler>>, FlowError>> {
        Box::pin(async { Ok(Routed::NotMine) })
    }

    /// Sets `entry` up elsewhere, or leaves it local.
    fn setup_entry<'a>(
        &'a self,
        entry: &'a ConfigEntry,
    ) -> BoxFuture<'a, Routed<Result<(), SetupError>>>;

    /// Unloads `entry` elsewhere, or leaves it local. An `Err` marks the entry `failed_unload`.
    fn unload_entry<'a>(
        &'a self,
        entry: &'a ConfigEntry,
    ) -> BoxFuture<'a, Routed<Result<(), String>>>;

    /// Runs the removal of `entry` (already unloaded and gone from the entries) elsewhere —
    /// its integration's `remove_entry` hook and whatever else the entry left there — or
    /// leaves it local (the default). Taken, the local hook does not run.
    fn remove_entry<'a>(&'a self, _entry: &'a ConfigEntry) -> BoxFuture<'a, Routed<()>> {
        Box::pin(async { Routed::NotMine })
    }
}

/// An integration's code for its config entries (Home Assistant's `async_setup_entry` and friends).
pub trait EntrySetupHandler: Send + Sync + 'static {
    /// The `(version, minor_version)` of entry data this code expects.
    fn version(&self) -> (u32, u32) {
        (1, 1)
    }

    /// Sets the entry up.
    fn setup_entry<'a>(
        &'a self,
        core: &'a Core,
        entry: &'a ConfigEntry,
    ) -> BoxFuture<'a, Result<(), SetupError>>;

    /// Unloads the entry; an `Err` marks it `failed_unload`.
    fn unload_entry<'a>(
        &'a self,
        core: &'a Core,
        entry: &'a ConfigEntry,
    ) -> BoxFuture<'a, Result<(), String>>;

    /// Migrates an entry stored at an older version, typically through
    /// [`ConfigEntries::update_entry`]. The default has no migration and fails.
    fn migrate_entry<'a>(
        &'a self,
        _core: &'a Core,
        entry: &'a ConfigEntry,
    ) -> BoxFuture<'a, Result<(), String>> {
        let message = format!(
            "no migration from version {}.{} to {:?}",
            entry.version,
            entry.minor_version,
            self.version()
        );
        Box::pin(async move { Err(message) })
    }

    /// Cleans up after the entry was removed (e.g. deletes remote registrations).
    fn remove_entry<'a>(&'a self, _core: &'a Core, _entry: &'a ConfigEntry) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }
}

/// Finds local integration code by domain. The integration loader implements it.
pub trait IntegrationHandlers: Send + Sync + 'static {
    /// A new config flow handler for `domain`, `None` when it has no config flow.
    fn config_flow<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, Option<Box<dyn FlowHandler>>>;
    /// A new options flow handler for `entry`, `None` when its integration has none.
    fn options_flow<'a>(
        &'a self,
        entry: &'a ConfigEntry,
    ) -> BoxFuture<'a, Option<Box<dyn FlowHandler>>>;
    /// The setup code of `domain`, `None` when unknown.
    fn entry_setup<'a>(
        &'a self,
        domain: &'a str,
    ) -> BoxFuture<'a, Option<Arc<dyn EntrySetupHandler>>>;
}

/// Makes a config flow handler.
pub type ConfigFlowFactory = Arc<dyn Fn() -> Box<dyn FlowHandler> + Send + Sync>;
/// Makes an options flow handler for an entry.
pub type OptionsFlowFactory = Arc<dyn Fn(&ConfigEntry) -> Box<dyn FlowHandler> + Send + Sync>;

/// An [`IntegrationHandlers`] filled by registration, for built-in code and tests.
#[derive(Default)]
pub struct HandlerTable {
    /// Config flow factories by domain.
    config_flows: RwLock<HashMap<String, ConfigFlowFactory>>,
    /// Options flow factories by domain.
    options_flows: RwLock<HashMap<String, OptionsFlowFactory>>,
    /// Setup code by domain.
    setups: RwLock<HashMap<String, Arc<dyn EntrySetupHandler>>>,
}

impl HandlerTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `domain`'s config flow.
    pub fn register_config_flow(
        &self,
        domain: &str,
        factory: impl Fn() -> Box<dyn FlowHandler> + Send + Sync + 'static,
    ) {
        self.config_flows
            .write()
            .insert(domain.to_owned(), Arc::new(factory));
    }

    /// Registers `domain`'s options flow.
    pub fn register_options_flow(
        &self,
        domain: &str,
        factory: impl Fn(&ConfigEntry) -> Box<dyn FlowHandler> + Send + Sync + 'static,
    ) {
        self.options_flows
            .write()
            .insert(domain.to_owned(), Arc::new(factory));
    }

    /// Registers `domain`'s setup code.
    pub fn register_entry_setup(&self, domain: &str, handler: Arc<dyn EntrySetupHandler>) {
        self.setups.write().insert(domain.to_owned(), handler);
    }
}

impl IntegrationHandlers for HandlerTable {
    fn config_flow<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, Option<Box<dyn FlowHandler>>> {
        let factory = self.config_flows.read().get(domain).cloned();
        Box::pin(async move { factory.map(|factory| factory()) })
    }

    fn options_flow<'a>(
        &'a self,
        entry: &'a ConfigEntry,
    ) -> BoxFuture<'a, Option<Box<dyn FlowHandler>>> {
        let factory = self.options_flows.read().get(&entry.domain).cloned();
        Box::pin(async move { factory.map(|factory| factory(entry)) })
    }

    fn entry_setup<'a>(
        &'a self,
        domain: &'a str,
    ) -> BoxFuture<'a, Option<Arc<dyn EntrySetupHandler>>> {
        let handler = self.setups.read().get(domain).cloned();
        Box::pin(async move { handler })
    }
}

/// Called with the entry after it changed.
pub type UpdateListener = Arc<dyn Fn(Core, ConfigEntry) -> BoxFuture<'static, ()> + Send + Sync>;

/// Told of every change [`ConfigEntries::update_entry`] makes to any entry, with the entry as
/// it now is; called synchronously, in change order, outside the manager's locks (it must not
/// block: hand work to a task).
pub type EntryUpdateObserver = Arc<dyn Fn(&ConfigEntry) + Send + Sync>;

/// What removing an entry reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoveResult {
    /// The entry could not be unloaded cleanly; a restart finishes the removal.
    pub require_restart: bool,
}

/// An entry plus its runtime bookkeeping.
struct EntryRecord {
    /// The entry.
    entry: ConfigEntry,
    /// Serializes setup, unload and reload of this entry.
    lock: Arc<tokio::sync::Mutex<()>>,
    /// The pending setup retry, if any.
    retry: Option<JoinHandle<()>>,
    /// Setup attempts that found the entry not ready, for the backoff.
    tries: u32,
    /// Listeners called after the entry changes; cleared on unload.
    update_listeners: Vec<(u64, UpdateListener)>,
}

/// Shared part of the manager.
pub(crate) struct ConfigEntriesInner {
    /// The core, weakly: the core owns this manager.
    core: Weak<CoreInner>,
    /// Entries by id (ULIDs, so creation order).
    entries: Mutex<BTreeMap<String, EntryRecord>>,
    /// Where entries persist.
    store: Store,
    /// Decides where flows and entries run, when installed.
    router: RwLock<Option<Arc<dyn ConfigEntryRouter>>>,
    /// Finds local integration code.
    handlers: RwLock<Option<Arc<dyn IntegrationHandlers>>>,
    /// Config flows in progress.
    flows: FlowManager,
    /// Options flows in progress.
    options_flows: FlowManager,
    /// Source of update listener ids.
    next_listener_id: Mutex<u64>,
    /// Observers of every entry's updates, by id.
    update_observers: RwLock<Vec<(u64, EntryUpdateObserver)>>,
}

/// The config entries manager: a cheap-to-clone handle.
#[derive(Clone)]
pub struct ConfigEntries {
    /// Shared state.
    inner: Arc<ConfigEntriesInner>,
}

impl std::fmt::Debug for ConfigEntries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigEntries")
            .field("entries", &self.inner.entries.lock().len())
            .finish()
    }
}

impl ConfigEntries {
    pub(crate) fn new(core: Weak<CoreInner>, bus: EventBus, store: Store) -> Self {
        Self {
            inner: Arc::new(ConfigEntriesInner {
                core,
                entries: Mutex::new(BTreeMap::new()),
                store,
                router: RwLock::new(None),
                handlers: RwLock::new(None),
                flows: FlowManager::new(bus.clone()),
                options_flows: FlowManager::new(bus),
                next_listener_id: Mutex::new(0),
                update_observers: RwLock::new(Vec::new()),
            }),
        }
    }

    fn core(&self) -> Result<Core, ConfigEntryError> {
        self.inner
            .core
            .upgrade()
            .map(Core::from_inner)
            .ok_or_else(|| ConfigEntryError::OperationNotAllowed("the core is gone".into()))
    }

    /// Installs (or with `None` removes) the router.
    pub fn set_router(&self, router: Option<Arc<dyn ConfigEntryRouter>>) {
        *self.inner.router.write() = router;
    }

    /// Installs the lookup of local integration code.
    pub fn set_handlers(&self, handlers: Arc<dyn IntegrationHandlers>) {
        *self.inner.handlers.write() = Some(handlers);
    }

    fn router(&self) -> Option<Arc<dyn ConfigEntryRouter>> {
        self.inner.router.read().clone()
    }

    fn handlers(&self) -> Option<Arc<dyn IntegrationHandlers>> {
        self.inner.handlers.read().clone()
    }

    /// Replaces the entries with those stored (all `not_loaded`).
    pub async fn load(&self) -> Result<(), ConfigEntryError> {
        let data = match self.inner.store.load().await {
            Ok(data) => data,
            Err(err @ StoreError::Corrupt { .. }) => {
                tracing::error!(%err, "config entries store is corrupt; starting without entries");
                None
            }
            Err(err) => return Err(err.into()),
        };
        let Some(data) = data else {
            return Ok(());
        };
        let entries: Vec<ConfigEntry> =
            serde_json::from_value(data["entries"].clone()).map_err(|err| {
                ConfigEntryError::Invalid(format!("stored config entries are malformed: {err}"))
            })?;
        let mut records = self.inner.entries.lock();
        records.clear();
        for entry in entries {
            records.insert(entry.entry_id.clone(), EntryRecord::new(entry));
        }
        Ok(())
    }

    fn schedule_save(&self) {
        let weak = Arc::downgrade(&self.inner);
        self.inner.store.delay_save(
            move || {
                let entries: Vec<ConfigEntry> = weak
                    .upgrade()
                    .map(|inner| {
                        inner
                            .entries
                            .lock()
                            .values()
                            .map(|r| r.entry.clone())
                            .collect()
                    })
                    .unwrap_or_default();
                json!({ "entries": entries })
            },
            CONFIG_ENTRIES_SAVE_DELAY,
        );
    }

    /// Every entry, optionally of one domain, in creation order.
    pub fn entries(&self, domain: Option<&str>) -> Vec<ConfigEntry> {
        self.inner
            .entries
            .lock()
            .values()
            .filter(|record| domain.is_none_or(|domain| record.entry.domain == domain))
            .map(|record| record.entry.clone())
            .collect()
    }

    /// Every entry's integration domain and `sandbox` group, without copying the entries'
    /// data: for a host deciding ownership on every message of a group.
    pub fn domains_and_groups(&self) -> Vec<(String, Option<String>)> {
        self.inner
            .entries
            .lock()
            .values()
            .map(|record| (record.entry.domain.clone(), record.entry.sandbox.clone()))
            .collect()
    }

    /// The entry `entry_id`.
    pub fn entry(&self, entry_id: &str) -> Option<ConfigEntry> {
        self.inner
            .entries
            .lock()
            .get(entry_id)
            .map(|record| record.entry.clone())
    }

    /// The entry of `domain` with `unique_id`.
    pub fn entry_for_unique_id(&self, domain: &str, unique_id: &str) -> Option<ConfigEntry> {
        self.inner
            .entries
            .lock()
            .values()
            .find(|record| {
                record.entry.domain == domain
                    && record.entry.unique_id.as_deref() == Some(unique_id)
            })
            .map(|record| record.entry.clone())
    }

    fn entry_lock(&self, entry_id: &str) -> Result<Arc<tokio::sync::Mutex<()>>, ConfigEntryError> {
        self.inner
            .entries
            .lock()
            .get(entry_id)
            .map(|record| Arc::clone(&record.lock))
            .ok_or_else(|| ConfigEntryError::UnknownEntry(entry_id.to_owned()))
    }

    fn require(&self, entry_id: &str) -> Result<ConfigEntry, ConfigEntryError> {
        self.entry(entry_id)
            .ok_or_else(|| ConfigEntryError::UnknownEntry(entry_id.to_owned()))
    }

    fn set_state(&self, entry_id: &str, state: ConfigEntryState, reason: Option<String>) {
        if let Some(record) = self.inner.entries.lock().get_mut(entry_id) {
            record.entry.state = state;
            record.entry.reason = reason;
        }
    }

    /// Adds `entry` (persisted) and sets it up. Fails when its id exists or its domain is invalid.
    pub async fn add(&self, entry: ConfigEntry) -> Result<ConfigEntry, ConfigEntryError> {
        validate_domain(&entry.domain).map_err(|err| ConfigEntryError::Invalid(err.to_string()))?;
        let entry_id = entry.entry_id.clone();
        {
            let mut records = self.inner.entries.lock();
            if records.contains_key(&entry_id) {
                return Err(ConfigEntryError::Invalid(format!(
                    "config entry {entry_id} already exists"
                )));
            }
            let mut entry = entry;
            entry.state = ConfigEntryState::NotLoaded;
            entry.reason = None;
            records.insert(entry_id.clone(), EntryRecord::new(entry));
        }
        self.schedule_save();
        self.setup(&entry_id).await?;
        self.require(&entry_id)
    }

    /// Sets up every entry that is not disabled or ignored, concurrently.
    pub async fn setup_all(&self) {
        let ids: Vec<String> = self
            .entries(None)
            .into_iter()
            .filter(|entry| entry.state == ConfigEntryState::NotLoaded)
            .map(|entry| entry.entry_id)
            .collect();
        let setups = ids.iter().map(|id| self.setup(id));
        for (id, result) in ids.iter().zip(futures::future::join_all(setups).await) {
            if let Err(err) = result {
                tracing::error!(entry_id = %id, %err, "config entry setup failed");
            }
        }
    }

    /// Sets up `entry_id`; returns whether it ended `loaded`. Only a `not_loaded` entry can be set up.
    pub async fn setup(&self, entry_id: &str) -> Result<bool, ConfigEntryError> {
        let lock = self.entry_lock(entry_id)?;
        let _guard = lock.lock().await;
        self.setup_locked(entry_id, false).await
    }

    async fn setup_locked(&self, entry_id: &str, retrying: bool) -> Result<bool, ConfigEntryError> {
        let entry = self.require(entry_id)?;
        let allowed = entry.state == ConfigEntryState::NotLoaded
            || (retrying && entry.state == ConfigEntryState::SetupRetry);
        if !allowed {
            return Err(ConfigEntryError::OperationNotAllowed(format!(
                "the config entry {} ({}) with entry_id {} cannot be set up because it is in the {} state",
                entry.title,
                entry.domain,
                entry.entry_id,
                entry.state.as_str()
            )));
        }
        if entry.disabled_by.is_some() || entry.source == SOURCE_IGNORE {
            return Ok(false);
        }
        let core = self.core()?;
        self.set_state(entry_id, ConfigEntryState::SetupInProgress, None);
        let routed = match self.router() {
            Some(router) => router.setup_entry(&entry).await,
            None => Routed::NotMine,
        };
        let outcome = match routed {
            Routed::Taken(outcome) => outcome.map_err(SetupFailure::Setup),
            Routed::NotMine => self.setup_local(&core, entry_id).await,
        };
        match outcome {
            Ok(()) => {
                if let Some(record) = self.inner.entries.lock().get_mut(entry_id) {
                    record.tries = 0;
                }
                self.set_state(entry_id, ConfigEntryState::Loaded, None);
                Ok(true)
            }
            Err(SetupFailure::Migration(reason)) => {
                tracing::error!(%entry_id, %reason, "config entry migration failed");
                self.set_state(entry_id, ConfigEntryState::MigrationError, Some(reason));
                Ok(false)
            }
            Err(SetupFailure::Setup(SetupError::NotReady(reason))) => {
                self.set_state(entry_id, ConfigEntryState::SetupRetry, Some(reason.clone()));
                self.schedule_retry(entry_id, &reason);
                Ok(false)
            }
            Err(SetupFailure::Setup(SetupError::AuthFailed(reason))) => {
                self.set_state(entry_id, ConfigEntryState::SetupError, Some(reason));
                self.start_reauth(entry_id);
                Ok(false)
            }
            Err(SetupFailure::Setup(SetupError::Failed(reason))) => {
                tracing::error!(%entry_id, %reason, "config entry setup failed");
                self.set_state(entry_id, ConfigEntryState::SetupError, Some(reason));
                Ok(false)
            }
        }
    }

    async fn setup_local(&self, core: &Core, entry_id: &str) -> Result<(), SetupFailure> {
        let entry = self
            .require(entry_id)
            .map_err(|err| SetupFailure::Setup(SetupError::Failed(err.to_string())))?;
        let handler = match self.handlers() {
            Some(handlers) => handlers.entry_setup(&entry.domain).await,
            None => None,
        };
        let Some(handler) = handler else {
            return Err(SetupFailure::Setup(SetupError::Failed(format!(
                "integration {} not found or has no config entry setup",
                entry.domain
            ))));
        };
        let (version, minor_version) = handler.version();
        if entry.version > version {
            return Err(SetupFailure::Migration(format!(
                "entry version {}.{} is newer than the integration's {version}.{minor_version}",
                entry.version, entry.minor_version
            )));
        }
        let entry = if entry.version < version || entry.minor_version < minor_version {
            let what = format!("migration of {}", entry.domain);
            catch_panic(&what, || handler.migrate_entry(core, &entry))
                .await
                .map_err(SetupFailure::Migration)?
                .map_err(SetupFailure::Migration)?;
            self.require(entry_id)
                .map_err(|err| SetupFailure::Setup(SetupError::Failed(err.to_string())))?
        } else {
            entry
        };
        let what = format!("entry setup of {}", entry.domain);
        catch_panic(&what, || handler.setup_entry(core, &entry))
            .await
            .unwrap_or_else(|reason| Err(SetupError::Failed(reason)))
            .map_err(SetupFailure::Setup)
    }

    fn schedule_retry(&self, entry_id: &str, reason: &str) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut records = self.inner.entries.lock();
        let Some(record) = records.get_mut(entry_id) else {
            return;
        };
        let delay = SETUP_RETRY_BASE_DELAY * 2u32.pow(record.tries.min(SETUP_RETRY_MAX_DOUBLINGS));
        record.tries += 1;
        tracing::warn!(%entry_id, %reason, ?delay, "config entry not ready; retrying");
        let entries = Arc::downgrade(&self.inner);
        let id = entry_id.to_owned();
        let task = runtime.spawn(async move {
            tokio::time::sleep(delay).await;
            let Some(inner) = entries.upgrade() else {
                return;
            };
            let this = ConfigEntries { inner };
            let Ok(lock) = this.entry_lock(&id) else {
                return;
            };
            let _guard = lock.lock().await;
            if this
                .entry(&id)
                .is_some_and(|entry| entry.state == ConfigEntryState::SetupRetry)
                && let Err(err) = this.setup_locked(&id, true).await
            {
                tracing::error!(entry_id = %id, %err, "config entry setup retry failed");
            }
        });
        if let Some(previous) = record.retry.replace(task) {
            previous.abort();
        }
    }

    fn cancel_retry(&self, entry_id: &str) {
        if let Some(task) = self
            .inner
            .entries
            .lock()
            .get_mut(entry_id)
            .and_then(|record| record.retry.take())
        {
            task.abort();
        }
    }

    /// Starts a reauth flow for `entry_id` unless one is in progress.
    pub fn start_reauth(&self, entry_id: &str) {
        let Some(entry) = self.entry(entry_id) else {
            return;
        };
        let in_progress = self.inner.flows.flows_where(|handler, context| {
            handler == entry.domain
                && context.source == SOURCE_REAUTH
                && context.entry_id.as_deref() == Some(entry_id)
        });
        if !in_progress.is_empty() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let this = self.clone();
        runtime.spawn(async move {
            let mut context = FlowContext::new(SOURCE_REAUTH);
            context.entry_id = Some(entry.entry_id.clone());
            context.unique_id = entry.unique_id.clone();
            context
                .title_placeholders
                .insert("name".into(), Value::String(entry.title.clone()));
            if let Err(err) = this
                .flow()
                .init(&entry.domain, context, Some(entry.data.clone()))
                .await
            {
                tracing::warn!(entry_id = %entry.entry_id, %err, "could not start reauth flow");
            }
        });
    }

    /// Unloads `entry_id`; returns whether it ended `not_loaded`.
    pub async fn unload(&self, entry_id: &str) -> Result<bool, ConfigEntryError> {
        let lock = self.entry_lock(entry_id)?;
        let _guard = lock.lock().await;
        self.unload_locked(entry_id).await
    }

    async fn unload_locked(&self, entry_id: &str) -> Result<bool, ConfigEntryError> {
        let entry = self.require(entry_id)?;
        if !entry.state.recoverable() {
            return Err(ConfigEntryError::OperationNotAllowed(format!(
                "the config entry {} ({}) with entry_id {} cannot be unloaded because it is not in a recoverable state ({})",
                entry.title,
                entry.domain,
                entry.entry_id,
                entry.state.as_str()
            )));
        }
        if entry.state != ConfigEntryState::Loaded {
            // Nothing is running: a pending retry is cancelled and the entry is simply not loaded.
            self.cancel_retry(entry_id);
            self.set_state(entry_id, ConfigEntryState::NotLoaded, None);
            return Ok(true);
        }
        let core = self.core()?;
        self.set_state(entry_id, ConfigEntryState::UnloadInProgress, None);
        let routed = match self.router() {
            Some(router) => router.unload_entry(&entry).await,
            None => Routed::NotMine,
        };
        let outcome = match routed {
            Routed::Taken(outcome) => outcome,
            Routed::NotMine => {
                let handler = match self.handlers() {
                    Some(handlers) => handlers.entry_setup(&entry.domain).await,
                    None => None,
                };
                match handler {
                    Some(handler) => {
                        let what = format!("entry unload of {}", entry.domain);
                        catch_panic(&what, || handler.unload_entry(&core, &entry))
                            .await
                            .and_then(|outcome| outcome)
                    }
                    None => Err(format!("integration {} not found", entry.domain)),
                }
            }
        };
        match outcome {
            Ok(()) => {
                if let Some(record) = self.inner.entries.lock().get_mut(entry_id) {
                    record.update_listeners.clear();
                }
                self.set_state(entry_id, ConfigEntryState::NotLoaded, None);
                Ok(true)
            }
            Err(reason) => {
                tracing::error!(%entry_id, %reason, "config entry unload failed");
                self.set_state(entry_id, ConfigEntryState::FailedUnload, Some(reason));
                Ok(false)
            }
        }
    }

    /// Unloads then sets up `entry_id`; returns whether it ended `loaded`.
    pub async fn reload(&self, entry_id: &str) -> Result<bool, ConfigEntryError> {
        let lock = self.entry_lock(entry_id)?;
        let _guard = lock.lock().await;
        if !self.unload_locked(entry_id).await? {
            return Ok(false);
        }
        self.setup_locked(entry_id, false).await
    }

    /// Reloads `entry_id` on a task of its own (used by update listeners and flows).
    pub fn schedule_reload(&self, entry_id: &str) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let this = self.clone();
        let id = entry_id.to_owned();
        runtime.spawn(async move {
            if let Err(err) = this.reload(&id).await {
                tracing::error!(entry_id = %id, %err, "config entry reload failed");
            }
        });
    }

    /// Unloads and removes `entry_id`, its devices and entities, and its flows.
    pub async fn remove(&self, entry_id: &str) -> Result<RemoveResult, ConfigEntryError> {
        let entry = self.require(entry_id)?;
        let unloaded = if entry.state.recoverable() {
            self.unload(entry_id).await?
        } else {
            entry.state != ConfigEntryState::FailedUnload
        };
        let core = self.core()?;
        self.cancel_retry(entry_id);
        let removed = self.inner.entries.lock().remove(entry_id);
        let Some(removed) = removed else {
            return Err(ConfigEntryError::UnknownEntry(entry_id.to_owned()));
        };
        self.schedule_save();
        let routed = match self.router() {
            Some(router) => router.remove_entry(&removed.entry).await,
            None => Routed::NotMine,
        };
        if matches!(routed, Routed::NotMine)
            && let Some(handlers) = self.handlers()
            && let Some(handler) = handlers.entry_setup(&removed.entry.domain).await
        {
            // A panic is logged by the boundary; the entry is removed all the same.
            let what = format!("entry removal of {}", removed.entry.domain);
            let _ = catch_panic(&what, || handler.remove_entry(&core, &removed.entry)).await;
        }
        core.device_registry().clear_config_entry(entry_id);
        core.entity_registry().clear_config_entry(entry_id);
        for flow_id in self
            .inner
            .options_flows
            .flows_where(|handler, _| handler == entry_id)
        {
            let _ = self.inner.options_flows.abort(&flow_id).await;
        }
        for flow_id in self
            .inner
            .flows
            .flows_where(|_, context| context.entry_id.as_deref() == Some(entry_id))
        {
            let _ = self.inner.flows.abort(&flow_id).await;
        }
        Ok(RemoveResult {
            require_restart: !unloaded,
        })
    }

    /// Applies `update`; returns whether anything changed. Update listeners run on their own tasks.
    pub fn update_entry(
        &self,
        entry_id: &str,
        update: ConfigEntryUpdate,
    ) -> Result<bool, ConfigEntryError> {
        let (entry, listeners) = {
            let mut records = self.inner.entries.lock();
            let record = records
                .get_mut(entry_id)
                .ok_or_else(|| ConfigEntryError::UnknownEntry(entry_id.to_owned()))?;
            let before = record.entry.clone();
            let entry = &mut record.entry;
            if let Some(v) = update.title {
                entry.title = v;
            }
            if let Some(v) = update.data {
                entry.data = v;
            }
            if let Some(v) = update.options {
                entry.options = v;
            }
            if let Some(v) = update.unique_id {
                entry.unique_id = v;
            }
            if let Some(v) = update.version {
                entry.version = v;
            }
            if let Some(v) = update.minor_version {
                entry.minor_version = v;
            }
            if let Some(v) = update.sandbox {
                entry.sandbox = v;
            }
            if let Some(v) = update.pref_disable_new_entities {
                entry.pref_disable_new_entities = v;
            }
            if let Some(v) = update.pref_disable_polling {
                entry.pref_disable_polling = v;
            }
            if *entry == before {
                return Ok(false);
            }
            entry.modified_at = Utc::now();
            let listeners: Vec<UpdateListener> = record
                .update_listeners
                .iter()
                .map(|(_, listener)| Arc::clone(listener))
                .collect();
            (record.entry.clone(), listeners)
        };
        self.schedule_save();
        let observers: Vec<EntryUpdateObserver> = self
            .inner
            .update_observers
            .read()
            .iter()
            .map(|(_, observer)| Arc::clone(observer))
            .collect();
        for observer in observers {
            observer(&entry);
        }
        if !listeners.is_empty()
            && let (Ok(core), Ok(runtime)) = (self.core(), tokio::runtime::Handle::try_current())
        {
            for listener in listeners {
                runtime.spawn(listener(core.clone(), entry.clone()));
            }
        }
        Ok(true)
    }

    /// Disables (unloading) or enables (setting up) `entry_id`; returns whether that succeeded.
    pub async fn set_disabled_by(
        &self,
        entry_id: &str,
        disabled_by: Option<ConfigEntryDisabler>,
    ) -> Result<bool, ConfigEntryError> {
        let entry = self.require(entry_id)?;
        if entry.disabled_by == disabled_by {
            return Ok(true);
        }
        if disabled_by.is_some() {
            let unloaded = self.unload(entry_id).await?;
            self.with_record(entry_id, |record| record.entry.disabled_by = disabled_by);
            self.schedule_save();
            Ok(unloaded)
        } else {
            self.with_record(entry_id, |record| record.entry.disabled_by = None);
            self.schedule_save();
            self.setup(entry_id).await
        }
    }

    fn with_record(&self, entry_id: &str, change: impl FnOnce(&mut EntryRecord)) {
        if let Some(record) = self.inner.entries.lock().get_mut(entry_id) {
            change(record);
            record.entry.modified_at = Utc::now();
        }
    }

    /// Calls `listener` after every change of `entry_id` until it is unloaded; returns an id for removal.
    pub fn add_update_listener(
        &self,
        entry_id: &str,
        listener: UpdateListener,
    ) -> Result<u64, ConfigEntryError> {
        let id = {
            let mut next = self.inner.next_listener_id.lock();
            *next += 1;
            *next
        };
        let mut records = self.inner.entries.lock();
        let record = records
            .get_mut(entry_id)
            .ok_or_else(|| ConfigEntryError::UnknownEntry(entry_id.to_owned()))?;
        record.update_listeners.push((id, listener));
        Ok(id)
    }

    /// Reloads `entry` when its options change from what they are now (an options flow
    /// finished): what an integration whose options shape its setup registers while setting up;
    /// its own writes to the entry's data reload nothing. Returns the listener's id.
    pub fn reload_on_new_options(&self, entry: &ConfigEntry) -> Result<u64, ConfigEntryError> {
        let loaded_with = entry.options.clone();
        self.add_update_listener(
            &entry.entry_id,
            Arc::new(move |core: Core, entry: ConfigEntry| {
                let changed = entry.options != loaded_with;
                Box::pin(async move {
                    if changed {
                        core.config_entries().schedule_reload(&entry.entry_id);
                    }
                })
            }),
        )
    }

    /// Calls `observer` after every change [`Self::update_entry`] makes to any entry (an
    /// integration's own writes, a flow's `abort_if_unique_id_configured` updates, migrations):
    /// the seam a host uses to learn of entry changes made where it does not see them. Returns
    /// an id for [`Self::remove_update_observer`].
    pub fn add_update_observer(&self, observer: EntryUpdateObserver) -> u64 {
        let id = {
            let mut next = self.inner.next_listener_id.lock();
            *next += 1;
            *next
        };
        self.inner.update_observers.write().push((id, observer));
        id
    }

    /// Removes an update observer.
    pub fn remove_update_observer(&self, id: u64) {
        self.inner
            .update_observers
            .write()
            .retain(|(observer, _)| *observer != id);
    }

    /// Removes an update listener.
    pub fn remove_update_listener(&self, entry_id: &str, listener_id: u64) {
        if let Some(record) = self.inner.entries.lock().get_mut(entry_id) {
            record.update_listeners.retain(|(id, _)| *id != listener_id);
        }
    }

    /// Cancels pending setup retries (on core stop); entries stay as they are.
    pub fn shutdown(&self) {
        for record in self.inner.entries.lock().values_mut() {
            if let Some(task) = record.retry.take() {
                task.abort();
            }
        }
    }

    /// Config flows.
    pub fn flow(&self) -> ConfigFlows {
        ConfigFlows {
            entries: self.clone(),
        }
    }

    /// Options flows.
    pub fn options(&self) -> OptionsFlows {
        OptionsFlows {
            entries: self.clone(),
        }
    }
}

/// Why setup did not succeed, including migration failures (which have their own state).
enum SetupFailure {
    /// The entry's data could not be migrated.
    Migration(String),
    /// Setup itself failed.
    Setup(SetupError),
}

impl EntryRecord {
    fn new(entry: ConfigEntry) -> Self {
        Self {
            entry,
            lock: Arc::new(tokio::sync::Mutex::new(())),
            retry: None,
            tries: 0,
            update_listeners: Vec::new(),
        }
    }
}

/// Config flows: create entries for integrations (Home Assistant's `ConfigEntriesFlowManager`).
#[derive(Debug, Clone)]
pub struct ConfigFlows {
    /// The manager the flows create entries in.
    entries: ConfigEntries,
}

impl ConfigFlows {
    /// Starts a config flow for `domain`; its first step is `context.source`.
    /// The router may take it; otherwise the domain's local handler runs it.
    pub async fn init(
        &self,
        domain: &str,
        context: FlowContext,
        data: Option<Map<String, Value>>,
    ) -> Result<FlowResult, FlowError> {
        validate_domain(domain).map_err(|_| FlowError::UnknownHandler(domain.to_owned()))?;
        if context.source.is_empty() {
            return Err(FlowError::NotAllowed(
                "a flow context needs a source".into(),
            ));
        }
        let core = self
            .entries
            .core()
            .map_err(|err| FlowError::NotAllowed(err.to_string()))?;
        let routed = match self.entries.router() {
            Some(router) => router.create_flow(domain, &context, data.as_ref()).await?,
            None => Routed::NotMine,
        };
        let (handler, sandbox) = match routed {
            Routed::Taken(RoutedFlow { handler, sandbox }) => (handler, sandbox),
            Routed::NotMine => {
                let handler = match self.entries.handlers() {
                    Some(handlers) => {
                        let what = format!("config flow creation of {domain}");
                        catch_panic(&what, || handlers.config_flow(domain))
                            .await
                            .map_err(FlowError::Handler)?
                    }
                    None => None,
                };
                (
                    handler.ok_or_else(|| FlowError::UnknownHandler(domain.to_owned()))?,
                    None,
                )
            }
        };
        let init_step = context.source.clone();
        self.entries
            .inner
            .flows
            .start(
                self, core, domain, context, handler, sandbox, &init_step, data,
            )
            .await
    }

    /// Feeds input to flow `flow_id`.
    pub async fn configure(
        &self,
        flow_id: &str,
        input: Option<Map<String, Value>>,
    ) -> Result<FlowResult, FlowError> {
        let core = self
            .entries
            .core()
            .map_err(|err| FlowError::NotAllowed(err.to_string()))?;
        self.entries
            .inner
            .flows
            .configure(self, core, flow_id, input)
            .await
    }

    /// Aborts flow `flow_id`, removing it.
    pub async fn abort(&self, flow_id: &str) -> Result<(), FlowError> {
        self.entries.inner.flows.abort(flow_id).await
    }

    /// Flows in progress.
    pub fn progress(&self) -> Vec<FlowProgress> {
        self.entries.inner.flows.progress()
    }

    /// Flows in progress for `domain`.
    pub fn progress_by_handler(&self, domain: &str) -> Vec<FlowProgress> {
        self.progress()
            .into_iter()
            .filter(|flow| flow.handler == domain)
            .collect()
    }
}

impl FlowOwner for ConfigFlows {
    fn finish<'a>(
        &'a self,
        flow: &'a FinishedFlow,
        step: FlowStep,
    ) -> BoxFuture<'a, Result<FlowStep, FlowError>> {
        Box::pin(async move {
            let FlowStep::CreateEntry {
                title,
                data,
                options,
                version,
                minor_version,
                description,
                description_placeholders,
                ..
            } = step
            else {
                return Ok(step);
            };
            let entries = &self.entries;
            if let Some(unique_id) = &flow.context.unique_id {
                // Others configuring the same thing are now moot.
                for other in entries.inner.flows.flows_with_unique_id(
                    &flow.handler,
                    unique_id,
                    Some(&flow.flow_id),
                ) {
                    let _ = entries.inner.flows.abort(&other).await;
                }
                if let Some(existing) = entries.entry_for_unique_id(&flow.handler, unique_id) {
                    if existing.source != SOURCE_IGNORE {
                        return Ok(FlowStep::abort("already_configured"));
                    }
                    // Configuring something that was ignored replaces the ignore entry.
                    entries
                        .remove(&existing.entry_id)
                        .await
                        .map_err(|err| FlowError::Handler(err.to_string()))?;
                }
            }
            let mut entry = ConfigEntry::new(
                flow.handler.clone(),
                title.clone(),
                data.clone(),
                flow.context.source.clone(),
            );
            entry.options = options.clone();
            entry.unique_id = flow.context.unique_id.clone();
            entry.version = version;
            entry.minor_version = minor_version;
            entry.sandbox = flow.sandbox.clone();
            let entry_id = entry.entry_id.clone();
            entries
                .add(entry)
                .await
                .map_err(|err| FlowError::Handler(err.to_string()))?;
            Ok(FlowStep::CreateEntry {
                title,
                data,
                options,
                version,
                minor_version,
                description,
                description_placeholders,
                entry_id: Some(entry_id),
            })
        })
    }
}

/// Options flows: change an entry's options (Home Assistant's `OptionsFlowManager`).
#[derive(Debug, Clone)]
pub struct OptionsFlows {
    /// The manager holding the entries.
    entries: ConfigEntries,
}

/// First step of every options flow.
pub const OPTIONS_FLOW_INIT_STEP: &str = "init";

impl OptionsFlows {
    /// Starts an options flow for `entry_id` at step `init`.
    pub async fn init(
        &self,
        entry_id: &str,
        data: Option<Map<String, Value>>,
    ) -> Result<FlowResult, FlowError> {
        let entry = self
            .entries
            .entry(entry_id)
            .ok_or_else(|| FlowError::UnknownHandler(entry_id.to_owned()))?;
        let core = self
            .entries
            .core()
            .map_err(|err| FlowError::NotAllowed(err.to_string()))?;
        let routed = match self.entries.router() {
            Some(router) => router.create_options_flow(&entry).await?,
            None => Routed::NotMine,
        };
        let handler = match routed {
            Routed::Taken(handler) => handler,
            Routed::NotMine => {
                let handler = match self.entries.handlers() {
                    Some(handlers) => {
                        let what = format!("options flow creation of {}", entry.domain);
                        catch_panic(&what, || handlers.options_flow(&entry))
                            .await
                            .map_err(FlowError::Handler)?
                    }
                    None => None,
                };
                handler.ok_or_else(|| FlowError::UnknownHandler(entry_id.to_owned()))?
            }
        };
        let context = FlowContext::new(SOURCE_USER);
        self.entries
            .inner
            .options_flows
            .start(
                self,
                core,
                entry_id,
                context,
                handler,
                entry.sandbox.clone(),
                OPTIONS_FLOW_INIT_STEP,
                data,
            )
            .await
    }

    /// Feeds input to options flow `flow_id`.
    pub async fn configure(
        &self,
        flow_id: &str,
        input: Option<Map<String, Value>>,
    ) -> Result<FlowResult, FlowError> {
        let core = self
            .entries
            .core()
            .map_err(|err| FlowError::NotAllowed(err.to_string()))?;
        self.entries
            .inner
            .options_flows
            .configure(self, core, flow_id, input)
            .await
    }

    /// Aborts options flow `flow_id`.
    pub async fn abort(&self, flow_id: &str) -> Result<(), FlowError> {
        self.entries.inner.options_flows.abort(flow_id).await
    }

    /// Options flows in progress.
    pub fn progress(&self) -> Vec<FlowProgress> {
        self.entries.inner.options_flows.progress()
    }
}

impl FlowOwner for OptionsFlows {
    fn finish<'a>(
        &'a self,
        flow: &'a FinishedFlow,
        step: FlowStep,
    ) -> BoxFuture<'a, Result<FlowStep, FlowError>> {
        Box::pin(async move {
            if let FlowStep::CreateEntry { data, .. } = &step {
                self.entries
                    .update_entry(
                        &flow.handler,
                        ConfigEntryUpdate {
                            options: Some(data.clone()),
                            ..ConfigEntryUpdate::default()
                        },
                    )
                    .map_err(|err| FlowError::NotAllowed(err.to_string()))?;
            }
            Ok(step)
        })
    }
}
