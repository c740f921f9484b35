//! Integrations: the [`Integration`] trait, its [`Manifest`], and the [`IntegrationLoader`] over
//! the integrations available to a core.
//!
//! The loader is the core's [`IntegrationHandlers`]: config entries find an integration's
//! config flow, options flow and entry setup through it. It runs an integration's one-time
//! setup (after its dependencies') before its first entry, records which integrations are
//! loaded, and cleans up an entry's platforms when its setup fails or after it unloads, so
//! a retry or re-setup finds free platform slots. A catalog-provider seam lists integrations
//! whose code is not local (a host's sandboxed custom integrations) for display.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::future::BoxFuture;
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::catalog::catalog;
use crate::config_entries::{ConfigEntry, EntrySetupHandler, IntegrationHandlers, SetupError};
use crate::core::Core;
use crate::data_entry_flow::FlowHandler;
use crate::entity_id::validate_domain;
use crate::event::EVENT_COMPONENT_LOADED;
use crate::unwind::catch_panic;

#[cfg(test)]
mod tests;

/// Deepest chain of dependencies followed; a longer one is reported as an error (it is a
/// cycle or a mistake: Home Assistant's deepest real chains are a handful long).
pub const MAX_DEPENDENCY_DEPTH: usize = 32;

/// What kind of integration it is (Home Assistant's `integration_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IntegrationType {
    /// Provides one device.
    Device,
    /// Provides one entity domain (`light`, `sensor`): the entity components.
    Entity,
    /// Hardware the hub runs on.
    Hardware,
    /// A helper a person creates (input booleans, groups).
    Helper,
    /// A hub giving access to many devices.
    #[default]
    Hub,
    /// A cloud or local service.
    Service,
    /// Part of the hub itself.
    System,
    /// An alias of another integration.
    Virtual,
}

/// What an integration declares about itself (Home Assistant's `manifest.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Its domain, unique among integrations (`demo`).
    pub domain: String,
    /// Its name for people.
    pub name: String,
    /// Its version.
    pub version: semver::Version,
    /// What kind of integration it is.
    #[serde(default)]
    pub integration_type: IntegrationType,
    /// Whether it is set up through a config flow.
    #[serde(default)]
    pub config_flow: bool,
    /// The entity domains it provides entities of.
    #[serde(default)]
    pub platforms: Vec<String>,
    /// Integrations set up before it.
    #[serde(default)]
    pub dependencies: Vec<String>,
    /// How it talks to its devices (`local_push`, `cloud_polling`, ...).
    #[serde(default)]
    pub iot_class: Option<String>,
    /// Whether at most one config entry may exist.
    #[serde(default)]
    pub single_config_entry: bool,
}

impl Manifest {
    /// Checks the domain, dependencies and platforms (every platform must be a catalog domain).
    pub fn validate(&self) -> Result<(), IntegrationError> {
        let invalid = |message: String| {
            Err(IntegrationError::InvalidManifest {
                domain: self.domain.clone(),
                message,
            })
        };
        if let Err(err) = validate_domain(&self.domain) {
            return invalid(err.to_string());
        }
        if self.name.trim().is_empty() {
            return invalid("name must not be empty".into());
        }
        for dependency in &self.dependencies {
            if validate_domain(dependency).is_err() || *dependency == self.domain {
                return invalid(format!("invalid dependency {dependency:?}"));
            }
        }
        for platform in &self.platforms {
            if catalog().domain(platform).is_none() {
                return invalid(format!("unknown platform {platform:?}"));
            }
        }
        Ok(())
    }

    /// Its platforms whose entities cannot be proxied (an integration with any runs on main).
    pub fn unproxyable_platforms(&self) -> Vec<&str> {
        self.platforms
            .iter()
            .filter(|platform| !catalog().is_proxyable(platform))
            .map(String::as_str)
            .collect()
    }
}

/// Why an integration could not be added or loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntegrationError {
    /// The manifest is invalid.
    #[error("invalid manifest of {domain}: {message}")]
    InvalidManifest {
        /// The integration.
        domain: String,
        /// What is wrong.
        message: String,
    },
    /// An integration with this domain is already available.
    #[error("integration {0} is already available")]
    Duplicate(String),
}

/// An integration's code (Home Assistant's integration module): setup, config entries,
/// flows and translations. One instance serves one core.
pub trait Integration: Send + Sync + 'static {
    /// What it declares about itself.
    fn manifest(&self) -> &Manifest;

    /// One-time setup before its first config entry (register services of its own domain here
    /// when they do not depend on an entry).
    fn setup<'a>(&'a self, _core: &'a Core) -> BoxFuture<'a, Result<(), SetupError>> {
        Box::pin(async { Ok(()) })
    }

    /// A new config flow handler, when it has a config flow.
    fn config_flow(&self) -> Option<Box<dyn FlowHandler>> {
        None
    }

    /// A new options flow handler for `entry`, when it has options.
    fn options_flow(&self, _entry: &ConfigEntry) -> Option<Box<dyn FlowHandler>> {
        None
    }

    /// The `(version, minor_version)` of entry data this code expects.
    fn entry_version(&self) -> (u32, u32) {
        (1, 1)
    }

    /// Sets a config entry up (creates its platforms and entities, connects, ...).
    fn setup_entry<'a>(
        &'a self,
        core: &'a Core,
        entry: &'a ConfigEntry,
    ) -> BoxFuture<'a, Result<(), SetupError>>;

    /// Unloads a config entry; an `Err` marks it `failed_unload`. The core releases the entry's
    /// platforms (and their entities) afterwards, so an integration with nothing else to stop
    /// (no task, no connection, no listener) keeps this default.
    fn unload_entry<'a>(
        &'a self,
        _core: &'a Core,
        _entry: &'a ConfigEntry,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }

    /// Migrates an entry stored at an older version (through `ConfigEntries::update_entry`).
    fn migrate_entry<'a>(
        &'a self,
        _core: &'a Core,
        entry: &'a ConfigEntry,
    ) -> BoxFuture<'a, Result<(), String>> {
        let message = format!(
            "no migration from version {}.{}",
            entry.version, entry.minor_version
        );
        Box::pin(async move { Err(message) })
    }

    /// Cleans up after an entry was removed.
    fn remove_entry<'a>(&'a self, _core: &'a Core, _entry: &'a ConfigEntry) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }

    /// Its translation strings (the shape of Home Assistant's `strings.json`) in `language`.
    fn translations(&self, _language: &str) -> Option<Map<String, Value>> {
        None
    }
}

/// An integration whose code is not local, as listed for people (a picker entry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntegrationDescriptor {
    /// Its domain.
    pub domain: String,
    /// Its name.
    pub name: String,
    /// What kind of integration it is.
    #[serde(default)]
    pub integration_type: IntegrationType,
    /// Whether it is set up through a config flow.
    #[serde(default)]
    pub config_flow: bool,
    /// Its title by language, when known.
    #[serde(default)]
    pub title_translations: BTreeMap<String, String>,
}

impl From<&Manifest> for IntegrationDescriptor {
    fn from(manifest: &Manifest) -> Self {
        Self {
            domain: manifest.domain.clone(),
            name: manifest.name.clone(),
            integration_type: manifest.integration_type,
            config_flow: manifest.config_flow,
            title_translations: BTreeMap::new(),
        }
    }
}

/// Lists integrations whose code is not local. Display only: nothing is loaded from it.
pub trait IntegrationCatalogProvider: Send + Sync + 'static {
    /// The integrations it knows.
    fn descriptors(&self) -> Vec<IntegrationDescriptor>;
}

/// Removes a catalog provider when asked.
#[derive(Debug)]
pub struct CatalogProviderHandle {
    /// The provider's id.
    id: u64,
    /// The loader it is registered with.
    loader: std::sync::Weak<LoaderInner>,
}

impl CatalogProviderHandle {
    /// Unregisters the provider.
    pub fn remove(self) {
        if let Some(loader) = self.loader.upgrade() {
            loader
                .catalog_providers
                .write()
                .retain(|(id, _)| *id != self.id);
        }
    }
}

/// Shared part of the loader.
pub(crate) struct LoaderInner {
    /// Available integrations by domain.
    available: RwLock<BTreeMap<String, Arc<dyn Integration>>>,
    /// Domains whose one-time setup ran.
    loaded: Mutex<BTreeSet<String>>,
    /// Serializes one-time setups, so concurrent entries set an integration up once.
    setup_lock: tokio::sync::Mutex<()>,
    /// Catalog providers.
    catalog_providers: RwLock<Vec<(u64, Arc<dyn IntegrationCatalogProvider>)>>,
    /// Source of provider ids.
    next_provider_id: AtomicU64,
}

impl std::fmt::Debug for LoaderInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoaderInner")
            .field(
                "available",
                &self.available.read().keys().collect::<Vec<_>>(),
            )
            .field("loaded", &*self.loaded.lock())
            .finish()
    }
}

/// The integrations available to one core: a cheap-to-clone handle.
#[derive(Debug, Clone)]
pub struct IntegrationLoader {
    /// Shared state.
    inner: Arc<LoaderInner>,
}

impl Default for IntegrationLoader {
    fn default() -> Self {
        Self::new()
    }
}

impl IntegrationLoader {
    /// A loader with no integrations.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(LoaderInner {
                available: RwLock::new(BTreeMap::new()),
                loaded: Mutex::new(BTreeSet::new()),
                setup_lock: tokio::sync::Mutex::new(()),
                catalog_providers: RwLock::new(Vec::new()),
                next_provider_id: AtomicU64::new(0),
            }),
        }
    }

    /// Makes `integration` available, after validating its manifest.
    pub fn add(&self, integration: Arc<dyn Integration>) -> Result<(), IntegrationError> {
        let manifest = integration.manifest();
        manifest.validate()?;
        let mut available = self.inner.available.write();
        if available.contains_key(&manifest.domain) {
            return Err(IntegrationError::Duplicate(manifest.domain.clone()));
        }
        available.insert(manifest.domain.clone(), integration);
        Ok(())
    }

    /// Makes every integration of `integrations` available.
    pub fn add_all(
        &self,
        integrations: impl IntoIterator<Item = Arc<dyn Integration>>,
    ) -> Result<(), IntegrationError> {
        integrations
            .into_iter()
            .try_for_each(|integration| self.add(integration))
    }

    /// The integration of `domain`.
    pub fn get(&self, domain: &str) -> Option<Arc<dyn Integration>> {
        self.inner.available.read().get(domain).cloned()
    }

    /// The manifest of `domain`.
    pub fn manifest(&self, domain: &str) -> Option<Manifest> {
        self.get(domain)
            .map(|integration| integration.manifest().clone())
    }

    /// Manifests of every available integration, by domain.
    pub fn available(&self) -> Vec<Manifest> {
        self.inner
            .available
            .read()
            .values()
            .map(|integration| integration.manifest().clone())
            .collect()
    }

    /// Manifests of the integrations whose setup ran, by domain.
    pub fn loaded(&self) -> Vec<Manifest> {
        let loaded: Vec<String> = self.inner.loaded.lock().iter().cloned().collect();
        loaded
            .iter()
            .filter_map(|domain| self.manifest(domain))
            .collect()
    }

    /// Whether `domain`'s setup ran.
    pub fn is_loaded(&self, domain: &str) -> bool {
        self.inner.loaded.lock().contains(domain)
    }

    /// Runs the one-time setup of `domain` and, first, of its dependencies, unless done.
    pub async fn ensure_setup(&self, core: &Core, domain: &str) -> Result<(), SetupError> {
        if self.is_loaded(domain) {
            return Ok(());
        }
        let _guard = self.inner.setup_lock.lock().await;
        for dependency in self.setup_order(domain)? {
            if self.is_loaded(&dependency) {
                continue;
            }
            let integration = self
                .get(&dependency)
                .ok_or_else(|| SetupError::Failed(format!("integration {dependency} not found")))?;
            let what = format!("setup of integration {dependency}");
            catch_panic(&what, || integration.setup(core))
                .await
                .map_err(SetupError::Failed)??;
            self.inner.loaded.lock().insert(dependency.clone());
            let mut data = Map::new();
            data.insert("component".into(), Value::String(dependency));
            if let Err(err) = core.bus().fire(EVENT_COMPONENT_LOADED, data, None) {
                tracing::error!(%err, "could not fire component_loaded");
            }
        }
        Ok(())
    }

    /// `domain` and its dependencies, dependencies first.
    fn setup_order(&self, domain: &str) -> Result<Vec<String>, SetupError> {
        let mut order = Vec::new();
        self.visit(domain, &mut Vec::new(), &mut order)?;
        Ok(order)
    }

    fn visit(
        &self,
        domain: &str,
        path: &mut Vec<String>,
        order: &mut Vec<String>,
    ) -> Result<(), SetupError> {
        if order.iter().any(|done| done == domain) {
            return Ok(());
        }
        if path.iter().any(|seen| seen == domain) {
            return Err(SetupError::Failed(format!(
                "dependency cycle: {} -> {domain}",
                path.join(" -> ")
            )));
        }
        if path.len() >= MAX_DEPENDENCY_DEPTH {
            return Err(SetupError::Failed(format!(
                "dependencies of {domain} nest deeper than {MAX_DEPENDENCY_DEPTH}"
            )));
        }
        let manifest = self
            .manifest(domain)
            .ok_or_else(|| SetupError::Failed(format!("integration {domain} not found")))?;
        path.push(domain.to_owned());
        for dependency in &manifest.dependencies {
            self.visit(dependency, path, order)?;
        }
        path.pop();
        order.push(domain.to_owned());
        Ok(())
    }

    /// Lists integrations provided by `provider` (whose code is not local) from now on.
    pub fn add_catalog_provider(
        &self,
        provider: Arc<dyn IntegrationCatalogProvider>,
    ) -> CatalogProviderHandle {
        let id = self.inner.next_provider_id.fetch_add(1, Ordering::Relaxed);
        self.inner.catalog_providers.write().push((id, provider));
        CatalogProviderHandle {
            id,
            loader: Arc::downgrade(&self.inner),
        }
    }

    /// Every integration a person can pick: local ones, then the catalog providers' (a local
    /// integration wins a domain collision; the first provider wins among providers).
    pub fn descriptors(&self) -> Vec<IntegrationDescriptor> {
        let mut by_domain: BTreeMap<String, IntegrationDescriptor> = self
            .available()
            .iter()
            .map(|manifest| {
                (
                    manifest.domain.clone(),
                    IntegrationDescriptor::from(manifest),
                )
            })
            .collect();
        let providers: Vec<Arc<dyn IntegrationCatalogProvider>> = self
            .inner
            .catalog_providers
            .read()
            .iter()
            .map(|(_, provider)| Arc::clone(provider))
            .collect();
        for provider in providers {
            for descriptor in provider.descriptors() {
                if validate_domain(&descriptor.domain).is_ok() {
                    by_domain
                        .entry(descriptor.domain.clone())
                        .or_insert(descriptor);
                }
            }
        }
        by_domain.into_values().collect()
    }

    /// The descriptor of `domain`, local or provided.
    pub fn descriptor(&self, domain: &str) -> Option<IntegrationDescriptor> {
        self.descriptors()
            .into_iter()
            .find(|descriptor| descriptor.domain == domain)
    }
}

/// Runs an integration's entry code for the config entries manager.
struct EntrySetup {
    /// The integration.
    integration: Arc<dyn Integration>,
    /// The loader, for one-time setups.
    loader: IntegrationLoader,
}

impl EntrySetupHandler for EntrySetup {
    fn version(&self) -> (u32, u32) {
        self.integration.entry_version()
    }

    fn setup_entry<'a>(
        &'a self,
        core: &'a Core,
        entry: &'a ConfigEntry,
    ) -> BoxFuture<'a, Result<(), SetupError>> {
        Box::pin(async move {
            self.loader.ensure_setup(core, &entry.domain).await?;
            let what = format!("entry setup of {}", entry.domain);
            let outcome = catch_panic(&what, || self.integration.setup_entry(core, entry))
                .await
                .unwrap_or_else(|reason| Err(SetupError::Failed(reason)));
            if outcome.is_err() {
                // A failed setup leaves nothing behind, so a retry finds free platform slots.
                core.entities()
                    .unload_entry_platforms(&entry.entry_id)
                    .await;
            }
            outcome
        })
    }

    fn unload_entry<'a>(
        &'a self,
        core: &'a Core,
        entry: &'a ConfigEntry,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let what = format!("entry unload of {}", entry.domain);
            catch_panic(&what, || self.integration.unload_entry(core, entry)).await??;
            let leftover = core
                .entities()
                .unload_entry_platforms(&entry.entry_id)
                .await;
            if leftover > 0 {
                tracing::debug!(entry_id = %entry.entry_id, leftover, "released platforms the integration left loaded");
            }
            Ok(())
        })
    }

    fn migrate_entry<'a>(
        &'a self,
        core: &'a Core,
        entry: &'a ConfigEntry,
    ) -> BoxFuture<'a, Result<(), String>> {
        self.integration.migrate_entry(core, entry)
    }

    fn remove_entry<'a>(&'a self, core: &'a Core, entry: &'a ConfigEntry) -> BoxFuture<'a, ()> {
        self.integration.remove_entry(core, entry)
    }
}

impl IntegrationHandlers for IntegrationLoader {
    fn config_flow<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, Option<Box<dyn FlowHandler>>> {
        let integration = self.get(domain);
        Box::pin(async move { integration?.config_flow() })
    }

    fn options_flow<'a>(
        &'a self,
        entry: &'a ConfigEntry,
    ) -> BoxFuture<'a, Option<Box<dyn FlowHandler>>> {
        let integration = self.get(&entry.domain);
        Box::pin(async move { integration?.options_flow(entry) })
    }

    fn entry_setup<'a>(
        &'a self,
        domain: &'a str,
    ) -> BoxFuture<'a, Option<Arc<dyn EntrySetupHandler>>> {
        let integration = self.get(domain);
        let loader = self.clone();
        Box::pin(async move {
            integration.map(|integration| {
                Arc::new(EntrySetup {
                    integration,
                    loader,
                }) as Arc<dyn EntrySetupHandler>
            })
        })
    }
}
