//! Entity components: the per-domain machinery that owns platforms, writes entity states and
//! dispatches domain services to entities, all from the [`crate::catalog`].
//!
//! There is one generic code path for every domain: when the first platform of a domain is
//! registered, the domain's services are registered from its catalog row; a call resolves its
//! target (entity ids, devices, areas, floors, area labels) to live entities of the domain,
//! skips unavailable ones, checks feature flags (an entity named explicitly that lacks them is
//! an error, one reached through a device or area is skipped) and calls each entity.
//!
//! Seams for a host or sandbox: [`EntityObserver`]s see every entity added and removed with its
//! full [`EntityDescription`]; [`EntityComponents::call_entity_service`] and
//! [`EntityComponents::query_entity`] reach one entity by id without targeting; and
//! [`EntityComponents::register_remote_platform`] / [`EntityComponents::unregister_remote_platform`]
//! attach and release pre-built entities for a config entry without local integration code.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use serde_json::{Map, Value};
use tokio::time::Instant;

use crate::catalog::{DomainSpec, STATE_UNAVAILABLE, STATE_UNKNOWN, ServiceSpec, catalog};
use crate::config_entries::ConfigEntry;
use crate::context::Context;
use crate::core::{Core, CoreInner};
use crate::entity::{
    EntityDescription, EntityError, EntityHandle, EntityInfo, EntityRef, EntityServiceCall,
};
use crate::entity_id::{HintScope, slugify};
use crate::entity_platform::{Attachment, EntityPlatform};
use crate::entity_registry::{EntityDisabler, EntityRegistration, RegistryEntry};
use crate::event::EVENT_COMPONENT_LOADED;
use crate::service::{
    ENTITY_MATCH_ALL, ServiceCall, ServiceError, ServiceHandler, ServiceTarget, SupportsResponse,
};

#[cfg(test)]
mod tests;

/// How long a service call's context stays attached to an entity, so the state it writes
/// right after is attributed to the call (Home Assistant's `CONTEXT_RECENT_TIME_SECONDS`).
pub const CONTEXT_RECENT_TIME: Duration = Duration::from_secs(5);

/// Entity ids tried with a numeric suffix before giving up on a name (`light.lamp_2`, ...).
/// Bounds the search for entities without a unique id; no home has this many same-named ones.
pub const MAX_ENTITY_ID_SUFFIX: usize = 10_000;

/// Sees every entity a core adds and removes. Called synchronously, in order, outside any
/// lock of the core; must not block (queue the work instead).
pub trait EntityObserver: Send + Sync + 'static {
    /// An entity was added: called after it is registered and before its first state is written.
    fn entity_added(&self, description: &EntityDescription);
    /// An entity was removed: called after its state was removed.
    fn entity_removed(&self, description: &EntityDescription);
}

/// Removes an observer when asked.
#[derive(Debug)]
pub struct ObserverHandle {
    /// The observer's id.
    id: u64,
    /// The components it observes.
    components: Weak<ComponentsInner>,
}

impl ObserverHandle {
    /// Stops the observer.
    pub fn remove(self) {
        if let Some(components) = self.components.upgrade() {
            components
                .observers
                .write()
                .retain(|(id, _)| *id != self.id);
        }
    }
}

/// What the write path of one entity guards.
struct WriteState {
    /// Set once the entity is removed: later writes are dropped, so nothing resurrects its state.
    removed: bool,
    /// The context of the last service call and when it was set.
    context: Option<(Context, Instant)>,
}

/// One live entity.
struct EntityRecord {
    /// The entity.
    entity: EntityRef,
    /// Its description as added.
    description: EntityDescription,
    /// Its platform's slot: `(domain, slot key)`.
    slot: (String, String),
    /// Serializes state writes (compute and store as one step) and records removal.
    write: Mutex<WriteState>,
}

impl EntityRecord {
    fn set_context(&self, context: Context) {
        self.write.lock().context = Some((context, Instant::now()));
    }
}

/// The shared part of the components.
pub(crate) struct ComponentsInner {
    /// The core, weakly: the core owns the components.
    core: Weak<CoreInner>,
    /// Itself, for service handlers and handles.
    this: Weak<ComponentsInner>,
    /// Domains whose services are registered.
    loaded: Mutex<BTreeSet<String>>,
    /// Registered platforms by `(domain, slot key)`.
    platforms: Mutex<BTreeMap<(String, String), EntityPlatform>>,
    /// Live entities by entity id.
    entities: RwLock<HashMap<String, Arc<EntityRecord>>>,
    /// Entity observers.
    observers: RwLock<Vec<(u64, Arc<dyn EntityObserver>)>>,
    /// Source of observer ids.
    next_observer_id: AtomicU64,
}

/// The entity components of one core: a cheap-to-clone handle.
#[derive(Clone)]
pub struct EntityComponents {
    /// Shared state.
    inner: Arc<ComponentsInner>,
}

impl std::fmt::Debug for EntityComponents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntityComponents")
            .field("loaded", &*self.inner.loaded.lock())
            .field("entities", &self.inner.entities.read().len())
            .finish()
    }
}

/// One domain's component (Home Assistant's `EntityComponent`): a view of the components.
#[derive(Debug, Clone)]
pub struct EntityComponent {
    /// Its domain.
    domain: String,
    /// Its catalog row.
    spec: &'static DomainSpec,
    /// The components it belongs to.
    components: EntityComponents,
}

impl EntityComponent {
    /// The domain.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The domain's catalog row.
    pub fn spec(&self) -> &'static DomainSpec {
        self.spec
    }

    /// Live entities of the domain, sorted.
    pub fn entity_ids(&self) -> Vec<String> {
        self.components.entity_ids(Some(&self.domain))
    }

    /// Registered platforms of the domain.
    pub fn platforms(&self) -> Vec<EntityPlatform> {
        self.components
            .platforms()
            .into_iter()
            .filter(|platform| platform.domain() == self.domain)
            .collect()
    }

    /// Attaches a pre-built platform of this domain for `entry` (see
    /// [`EntityComponents::register_remote_platform`]).
    pub fn register_remote_platform(
        &self,
        entry: &ConfigEntry,
        platform: EntityPlatform,
    ) -> Result<(), EntityError> {
        if platform.domain() != self.domain {
            return Err(EntityError::DomainMismatch {
                platform_domain: self.domain.clone(),
                entity_domain: platform.domain().to_owned(),
            });
        }
        self.components.register_remote_platform(entry, platform)
    }

    /// Releases this domain's remote platform of `entry`, removing its entities; returns
    /// whether there was one.
    pub async fn unregister_remote_platform(&self, entry: &ConfigEntry) -> bool {
        self.components
            .release(&self.domain, &entry.entry_id, Some(true))
            .await
    }
}

impl EntityComponents {
    pub(crate) fn new(core: Weak<CoreInner>) -> Self {
        Self {
            inner: Arc::new_cyclic(|this| ComponentsInner {
                core,
                this: this.clone(),
                loaded: Mutex::new(BTreeSet::new()),
                platforms: Mutex::new(BTreeMap::new()),
                entities: RwLock::new(HashMap::new()),
                observers: RwLock::new(Vec::new()),
                next_observer_id: AtomicU64::new(0),
            }),
        }
    }

    /// Loads the component of `domain` (registering its services) if it is not loaded yet.
    pub fn ensure_component(&self, domain: &str) -> Result<EntityComponent, EntityError> {
        self.inner.ensure_component(domain)?;
        self.component(domain)
            .ok_or_else(|| EntityError::UnknownDomain(domain.to_owned()))
    }

    /// The loaded component of `domain`.
    pub fn component(&self, domain: &str) -> Option<EntityComponent> {
        if !self.inner.loaded.lock().contains(domain) {
            return None;
        }
        Some(EntityComponent {
            domain: domain.to_owned(),
            spec: catalog().domain(domain)?,
            components: self.clone(),
        })
    }

    /// Domains whose component is loaded, sorted.
    pub fn loaded_domains(&self) -> Vec<String> {
        self.inner.loaded.lock().iter().cloned().collect()
    }

    /// Registers a platform of local integration code, claiming its `(domain, entry)` slot.
    pub fn add_platform(&self, platform: &EntityPlatform) -> Result<(), EntityError> {
        self.inner.register(platform, false)
    }

    /// Creates and registers `entry`'s platform of `domain` for its integration (Home
    /// Assistant's forward of an entry's setup to a platform); add entities to the result.
    pub fn forward_entry_setup(
        &self,
        entry: &ConfigEntry,
        domain: &str,
    ) -> Result<EntityPlatform, EntityError> {
        let platform = EntityPlatform::new(domain, &entry.domain, Some(&entry.entry_id));
        self.add_platform(&platform)?;
        Ok(platform)
    }

    /// Attaches a pre-built platform for `entry` without local integration code (the host's
    /// proxies of a sandbox's entities). The platform must belong to `entry`; its slot must be free.
    pub fn register_remote_platform(
        &self,
        entry: &ConfigEntry,
        platform: EntityPlatform,
    ) -> Result<(), EntityError> {
        if platform.config_entry_id() != Some(entry.entry_id.as_str()) {
            return Err(EntityError::EntryMismatch {
                expected: entry.entry_id.clone(),
                found: platform.config_entry_id().map(str::to_owned),
            });
        }
        self.inner.register(&platform, true)
    }

    /// Releases every remote platform of `entry` in every domain, removing their entities and
    /// freeing their slots so a later setup works; returns how many were released.
    pub async fn unregister_remote_platform(&self, entry: &ConfigEntry) -> usize {
        self.release_entry(&entry.entry_id, Some(true)).await
    }

    /// Unloads `entry`'s platform of `domain` (local or remote); returns whether there was one.
    pub async fn unload_platform(&self, domain: &str, entry_id: &str) -> bool {
        self.release(domain, entry_id, None).await
    }

    /// Unloads every local platform of `entry_id`; returns how many.
    pub async fn unload_entry_platforms(&self, entry_id: &str) -> usize {
        self.release_entry(entry_id, Some(false)).await
    }

    async fn release_entry(&self, entry_id: &str, remote: Option<bool>) -> usize {
        let domains: Vec<String> = self
            .inner
            .platforms
            .lock()
            .keys()
            .filter(|(_, key)| key == entry_id)
            .map(|(domain, _)| domain.clone())
            .collect();
        let mut released = 0;
        for domain in domains {
            if self.release(&domain, entry_id, remote).await {
                released += 1;
            }
        }
        released
    }

    /// Removes the platform in slot `(domain, key)` and its entities, when it matches `remote`.
    async fn release(&self, domain: &str, key: &str, remote: Option<bool>) -> bool {
        let slot = (domain.to_owned(), key.to_owned());
        let platform = self.inner.platforms.lock().get(&slot).cloned();
        let Some(platform) = platform else {
            return false;
        };
        if remote.is_some_and(|remote| remote != platform.is_remote()) {
            return false;
        }
        platform.reset().await;
        let removed = {
            let mut platforms = self.inner.platforms.lock();
            match platforms.get(&slot) {
                Some(current) if Arc::ptr_eq(&current.inner, &platform.inner) => {
                    platforms.remove(&slot);
                    true
                }
                _ => false,
            }
        };
        *platform.inner.attachment.lock() = None;
        removed
    }

    /// Every registered platform.
    pub fn platforms(&self) -> Vec<EntityPlatform> {
        self.inner.platforms.lock().values().cloned().collect()
    }

    /// The platform in `domain` for `entry_id`.
    pub fn platform(&self, domain: &str, entry_id: &str) -> Option<EntityPlatform> {
        self.inner
            .platforms
            .lock()
            .get(&(domain.to_owned(), entry_id.to_owned()))
            .cloned()
    }

    /// Live entity ids, optionally of one domain, sorted.
    pub fn entity_ids(&self, domain: Option<&str>) -> Vec<String> {
        let mut ids: Vec<String> = self
            .inner
            .entities
            .read()
            .values()
            .filter(|record| domain.is_none_or(|domain| record.description.info.domain == domain))
            .map(|record| record.description.entity_id.clone())
            .collect();
        ids.sort();
        ids
    }

    /// The live entity `entity_id`.
    pub fn entity(&self, entity_id: &str) -> Option<EntityRef> {
        self.inner
            .entities
            .read()
            .get(entity_id)
            .map(|record| Arc::clone(&record.entity))
    }

    /// The description of live entity `entity_id` as it was added.
    pub fn description(&self, entity_id: &str) -> Option<EntityDescription> {
        self.inner
            .entities
            .read()
            .get(entity_id)
            .map(|record| record.description.clone())
    }

    /// Descriptions of every live entity, sorted by entity id (to replay to a new observer).
    pub fn descriptions(&self) -> Vec<EntityDescription> {
        let mut descriptions: Vec<EntityDescription> = self
            .inner
            .entities
            .read()
            .values()
            .map(|record| record.description.clone())
            .collect();
        descriptions.sort_by(|a, b| a.entity_id.cmp(&b.entity_id));
        descriptions
    }

    /// Calls `observer` for every entity added and removed from now on.
    pub fn add_observer(&self, observer: Arc<dyn EntityObserver>) -> ObserverHandle {
        let id = self.inner.next_observer_id.fetch_add(1, Ordering::Relaxed);
        self.inner.observers.write().push((id, observer));
        ObserverHandle {
            id,
            components: Arc::downgrade(&self.inner),
        }
    }

    /// Calls domain service `service` on the one entity `entity_id`, without targeting:
    /// the data is validated by the catalog's schema and the entity's feature flags are
    /// checked. Returns the entity's own response (not keyed by entity id). An unavailable
    /// entity is skipped, as a targeted call would.
    pub async fn call_entity_service(
        &self,
        entity_id: &str,
        service: &str,
        data: Map<String, Value>,
        context: Option<Context>,
        return_response: bool,
    ) -> Result<Option<Value>, ServiceError> {
        let record = self.inner.record(entity_id)?;
        let domain = record.description.info.domain.clone();
        let spec = service_spec(&domain, service)?;
        check_response_mode(spec, &domain, return_response)?;
        let data = spec
            .schema
            .validate_map(&data)
            .map_err(ServiceError::Validation)?;
        if !record.entity.available() {
            return Ok(return_response.then(|| Value::Object(Map::new())));
        }
        if !spec.is_supported_by(record.entity.info().supported_features) {
            return Err(not_supported(entity_id, &domain, service));
        }
        let context = context.unwrap_or_default();
        record.set_context(context.clone());
        let response = record
            .entity
            .call_service(EntityServiceCall {
                service: service.to_owned(),
                data,
                context,
                return_response,
                fanned_out_to: 1,
            })
            .await?;
        Ok(if return_response { response } else { None })
    }

    /// Calls query method `method` of entity `entity_id` with `args`; the method must be one
    /// of the domain's catalog queries.
    pub async fn query_entity(
        &self,
        entity_id: &str,
        method: &str,
        args: Map<String, Value>,
    ) -> Result<Value, ServiceError> {
        self.query_entity_as(entity_id, method, args, Context::new())
            .await
    }

    /// [`EntityComponents::query_entity`] on behalf of `context` (who asked), handed to the
    /// entity's [`Entity::query_with_context`].
    pub async fn query_entity_as(
        &self,
        entity_id: &str,
        method: &str,
        args: Map<String, Value>,
        context: Context,
    ) -> Result<Value, ServiceError> {
        let record = self.inner.record(entity_id)?;
        let domain = &record.description.info.domain;
        let known = catalog()
            .domain(domain)
            .is_some_and(|spec| spec.has_query(method));
        if !known {
            return Err(ServiceError::validation(
                &["method"],
                format!("{domain} entities have no query method {method}"),
            ));
        }
        record
            .entity
            .query_with_context(method, args, context)
            .await
    }

    /// Writes the current state of `entity_id` now (what an entity's handle does).
    pub fn write_state(&self, entity_id: &str) -> Result<(), EntityError> {
        self.inner.write_state(entity_id, None)
    }

    /// Registers live entity `entity_id` again from what it says about itself now (its
    /// `info()`): its device merged into the device registry and its entity registry entry's
    /// integration fields refreshed, as at adding; then writes its state. For an entity whose
    /// description changes after it was added (a proxy its sandbox re-described); the
    /// description kept "as added" ([`Self::description`]) does not change.
    pub fn refresh_registration(&self, entity_id: &str) -> Result<(), EntityError> {
        let record = self
            .inner
            .entities
            .read()
            .get(entity_id)
            .cloned()
            .ok_or_else(|| EntityError::NotFound(entity_id.to_owned()))?;
        let platform = self
            .inner
            .platforms
            .lock()
            .get(&record.slot)
            .cloned()
            .ok_or_else(|| EntityError::NotFound(entity_id.to_owned()))?;
        let info = record.entity.info();
        if let Some(unique_id) = &info.unique_id {
            let core = self.inner.core()?;
            self.inner
                .register_entity(&core, &platform, &info, unique_id)?;
        }
        self.inner.write_state(entity_id, None)
    }
}

fn service_spec(domain: &str, service: &str) -> Result<&'static ServiceSpec, ServiceError> {
    catalog()
        .domain(domain)
        .and_then(|spec| spec.service(service))
        .ok_or_else(|| ServiceError::NotFound {
            domain: domain.to_owned(),
            service: service.to_owned(),
        })
}

fn check_response_mode(
    spec: &ServiceSpec,
    domain: &str,
    return_response: bool,
) -> Result<(), ServiceError> {
    match (spec.supports_response, return_response) {
        (SupportsResponse::None, true) => Err(ServiceError::ResponseNotSupported {
            domain: domain.to_owned(),
            service: spec.name.clone(),
        }),
        (SupportsResponse::Only, false) => Err(ServiceError::ResponseRequired {
            domain: domain.to_owned(),
            service: spec.name.clone(),
        }),
        _ => Ok(()),
    }
}

/// Home Assistant's `ServiceNotSupported`, a validation error naming the entity.
fn not_supported(entity_id: &str, domain: &str, service: &str) -> ServiceError {
    ServiceError::validation(
        &["entity_id"],
        format!("Entity {entity_id} does not support action {domain}.{service}"),
    )
}

impl ComponentsInner {
    fn core(&self) -> Result<Core, EntityError> {
        self.core
            .upgrade()
            .map(Core::from_inner)
            .ok_or(EntityError::CoreGone)
    }

    fn record(&self, entity_id: &str) -> Result<Arc<EntityRecord>, ServiceError> {
        self.entities.read().get(entity_id).cloned().ok_or_else(|| {
            ServiceError::validation(&["entity_id"], format!("Entity {entity_id} is not loaded"))
        })
    }

    fn ensure_component(&self, domain: &str) -> Result<(), EntityError> {
        let spec = catalog()
            .domain(domain)
            .ok_or_else(|| EntityError::UnknownDomain(domain.to_owned()))?;
        {
            let mut loaded = self.loaded.lock();
            if !loaded.insert(domain.to_owned()) {
                return Ok(());
            }
        }
        let core = self.core()?;
        for service in &spec.services {
            let this = self.this.clone();
            let handler: ServiceHandler = Arc::new(move |call: ServiceCall| {
                let this = this.clone();
                Box::pin(async move {
                    let components = this
                        .upgrade()
                        .ok_or_else(|| ServiceError::handler("the core is gone"))?;
                    components.dispatch(call).await
                })
            });
            if let Err(err) = core.services().register_handler(
                domain,
                &service.name,
                Some(service.schema.clone()),
                service.supports_response,
                handler,
            ) {
                tracing::error!(%domain, service = %service.name, %err, "could not register entity service");
            }
        }
        let mut data = Map::new();
        data.insert("component".into(), Value::String(domain.to_owned()));
        if let Err(err) = core.bus().fire(EVENT_COMPONENT_LOADED, data, None) {
            tracing::error!(%err, "could not fire component_loaded");
        }
        Ok(())
    }

    fn register(&self, platform: &EntityPlatform, remote: bool) -> Result<(), EntityError> {
        self.ensure_component(platform.domain())?;
        let slot = (platform.domain().to_owned(), platform.slot_key().to_owned());
        let mut platforms = self.platforms.lock();
        if platforms.contains_key(&slot) || platform.is_registered() {
            return Err(EntityError::PlatformAlreadySetUp {
                domain: platform.domain().to_owned(),
                platform: platform.platform().to_owned(),
                key: platform.slot_key().to_owned(),
            });
        }
        *platform.inner.attachment.lock() = Some(Attachment {
            components: self.this.clone(),
            remote,
        });
        platforms.insert(slot, platform.clone());
        Ok(())
    }

    fn observers(&self) -> Vec<Arc<dyn EntityObserver>> {
        self.observers
            .read()
            .iter()
            .map(|(_, observer)| Arc::clone(observer))
            .collect()
    }

    pub(crate) async fn add_entity(
        &self,
        platform: &EntityPlatform,
        entity: EntityRef,
    ) -> Result<Option<String>, EntityError> {
        let core = self.core()?;
        let info = entity.info();
        if info.domain != platform.domain() {
            return Err(EntityError::DomainMismatch {
                platform_domain: platform.domain().to_owned(),
                entity_domain: info.domain,
            });
        }
        let entity_id = match &info.unique_id {
            Some(unique_id) => {
                let Some(registered) = self.register_entity(&core, platform, &info, unique_id)?
                else {
                    return Ok(None);
                };
                registered.entity_id
            }
            None => self.generate_entity_id(&core, &info)?,
        };
        let description = EntityDescription {
            entity_id: entity_id.clone(),
            config_entry_id: platform.config_entry_id().map(str::to_owned),
            platform: platform.platform().to_owned(),
            info,
        };
        let record = Arc::new(EntityRecord {
            entity: Arc::clone(&entity),
            description: description.clone(),
            slot: (platform.domain().to_owned(), platform.slot_key().to_owned()),
            write: Mutex::new(WriteState {
                removed: false,
                context: None,
            }),
        });
        {
            let mut entities = self.entities.write();
            if entities.contains_key(&entity_id) {
                return Err(EntityError::EntityIdTaken(entity_id));
            }
            entities.insert(entity_id.clone(), record);
        }
        platform.inner.entity_ids.lock().push(entity_id.clone());
        if entity.restores_state() {
            core.restore_state().track(&entity_id);
        }
        for observer in self.observers() {
            observer.entity_added(&description);
        }
        let handle = EntityHandle::new(entity_id.clone(), self.this.clone(), self.core.clone());
        entity.added_to_core(handle).await;
        self.write_state(&entity_id, None)?;
        Ok(Some(entity_id))
    }

    /// Registers the entity (and its device); `None` when its registry entry is disabled.
    fn register_entity(
        &self,
        core: &Core,
        platform: &EntityPlatform,
        info: &EntityInfo,
        unique_id: &str,
    ) -> Result<Option<RegistryEntry>, EntityError> {
        let entry = platform
            .config_entry_id()
            .and_then(|entry_id| core.config_entries().entry(entry_id));
        let device = match (&info.device_info, platform.config_entry_id()) {
            (Some(device_info), Some(entry_id)) => Some(
                core.device_registry()
                    .get_or_create(device_info.to_registry(entry_id))?,
            ),
            _ => None,
        };
        let device_name = device
            .as_ref()
            .and_then(|device| device.name_by_user.clone().or(device.name.clone()));
        let suggested_object_id = if info.has_entity_name {
            match (&device_name, &info.name) {
                (Some(device), Some(name)) => Some(format!("{device} {name}")),
                (Some(device), None) => Some(device.clone()),
                (None, name) => name.clone(),
            }
        } else {
            info.name.clone()
        };
        let disabled_by = if !info.entity_registry_enabled_default
            || entry
                .as_ref()
                .is_some_and(|entry| entry.pref_disable_new_entities)
        {
            Some(EntityDisabler::Integration)
        } else if device
            .as_ref()
            .is_some_and(|device| device.disabled_by.is_some())
        {
            Some(EntityDisabler::Device)
        } else {
            None
        };
        let registered = core.entity_registry().get_or_create(EntityRegistration {
            domain: info.domain.clone(),
            platform: platform.platform().to_owned(),
            unique_id: unique_id.to_owned(),
            suggested_object_id,
            config_entry_id: platform.config_entry_id().map(str::to_owned),
            device_id: device.map(|device| device.id),
            disabled_by,
            hidden_by: None,
            original_name: info.name.clone(),
            original_icon: info.icon.clone(),
            original_device_class: info.device_class.clone(),
            entity_category: info.entity_category,
            supported_features: info.supported_features,
            unit_of_measurement: info.unit_of_measurement.clone(),
            capabilities: (!info.capabilities.is_empty()).then(|| info.capabilities.clone()),
            translation_key: info.translation_key.clone(),
            has_entity_name: info.has_entity_name,
        })?;
        Ok((!registered.disabled()).then_some(registered))
    }

    /// An entity id for an entity without a unique id: its slugified name, suffixed until free.
    fn generate_entity_id(&self, core: &Core, info: &EntityInfo) -> Result<String, EntityError> {
        let base = info
            .name
            .as_deref()
            .map(slugify)
            .filter(|slug| !slug.is_empty())
            .unwrap_or_else(|| "unnamed_device".to_owned());
        let entities = self.entities.read();
        let taken = |candidate: &str| {
            entities.contains_key(candidate)
                || core.states().contains(candidate)
                || core
                    .entity_registry()
                    .with_entry(candidate, |_| ())
                    .is_some()
        };
        let (candidate, _) = core
            .states()
            .id_hints()
            .first_free(
                HintScope::Components,
                &info.domain,
                &base,
                MAX_ENTITY_ID_SUFFIX,
                taken,
            )
            .ok_or_else(|| EntityError::InvalidEntityId(format!("{}.{base}", info.domain)))?;
        crate::entity_id::validate_entity_id(&candidate)
            .map_err(|_| EntityError::InvalidEntityId(candidate.clone()))?;
        Ok(candidate)
    }

    pub(crate) async fn remove_entity(&self, entity_id: &str) -> Result<(), EntityError> {
        let record = self
            .entities
            .read()
            .get(entity_id)
            .cloned()
            .ok_or_else(|| EntityError::NotFound(entity_id.to_owned()))?;
        record.entity.will_remove_from_core().await;
        record.write.lock().removed = true;
        let still_ours = {
            let mut entities = self.entities.write();
            match entities.get(entity_id) {
                Some(current) if Arc::ptr_eq(current, &record) => {
                    entities.remove(entity_id);
                    true
                }
                _ => false,
            }
        };
        if !still_ours {
            return Ok(());
        }
        if let Ok(core) = self.core() {
            core.states().id_hints().freed(entity_id);
        }
        if let Some(platform) = self.platforms.lock().get(&record.slot) {
            platform.inner.entity_ids.lock().remove(entity_id);
        }
        if let Ok(core) = self.core() {
            if record.entity.restores_state() {
                core.restore_state().untrack(entity_id);
            }
            core.states().remove(entity_id, None);
        }
        for observer in self.observers() {
            observer.entity_removed(&record.description);
        }
        Ok(())
    }

    pub(crate) fn write_state(
        &self,
        entity_id: &str,
        context: Option<Context>,
    ) -> Result<(), EntityError> {
        let record = self
            .entities
            .read()
            .get(entity_id)
            .cloned()
            .ok_or_else(|| EntityError::NotFound(entity_id.to_owned()))?;
        let core = self.core()?;
        let guard = record.write.lock();
        if guard.removed {
            return Err(EntityError::NotFound(entity_id.to_owned()));
        }
        let context = context.or_else(|| {
            guard
                .context
                .as_ref()
                .filter(|(_, at)| at.elapsed() < CONTEXT_RECENT_TIME)
                .map(|(context, _)| context.clone())
        });
        let (state, attributes) = compose_state(&core, &record);
        core.states()
            .set(entity_id, state, attributes, false, context)?;
        drop(guard);
        Ok(())
    }

    /// Resolves a call's target to `(entity id, named explicitly)` pairs of live entities of `domain`.
    fn resolve_targets(
        &self,
        core: &Core,
        domain: &str,
        target: &ServiceTarget,
    ) -> Vec<(String, bool)> {
        // Liveness is a map lookup per id; only `all` lists the domain's entities (sorted).
        let is_live = |entities: &HashMap<String, Arc<EntityRecord>>, id: &str| {
            entities
                .get(id)
                .is_some_and(|record| record.description.info.domain == domain)
        };
        let mut out: Vec<(String, bool)> = Vec::new();
        let mut seen = HashSet::new();
        let all = target.entity_id.iter().any(|id| id == ENTITY_MATCH_ALL);
        {
            let entities = self.entities.read();
            for id in &target.entity_id {
                if is_live(&entities, id) {
                    if seen.insert(id.clone()) {
                        out.push((id.clone(), true));
                    }
                } else if id
                    .strip_prefix(domain)
                    .is_some_and(|rest| rest.starts_with('.'))
                {
                    tracing::warn!(entity_id = %id, "referenced entity is missing or not loaded");
                }
            }
            if all {
                let mut ids: Vec<&String> = entities
                    .values()
                    .filter(|record| record.description.info.domain == domain)
                    .map(|record| &record.description.entity_id)
                    .collect();
                ids.sort();
                for id in ids {
                    if seen.insert(id.clone()) {
                        out.push((id.clone(), false));
                    }
                }
            }
        }
        let mut areas: BTreeSet<String> = target.area_id.iter().cloned().collect();
        if !target.floor_id.is_empty() || !target.label_id.is_empty() {
            for area in core.area_registry().areas() {
                let on_floor = area
                    .floor_id
                    .as_ref()
                    .is_some_and(|floor| target.floor_id.contains(floor));
                let labelled = area
                    .labels
                    .iter()
                    .any(|label| target.label_id.contains(label));
                if on_floor || labelled {
                    areas.insert(area.id);
                }
            }
        }
        if target.device_id.is_empty() && areas.is_empty() {
            return out;
        }
        let devices_in_areas: HashSet<String> = core
            .device_registry()
            .devices()
            .into_iter()
            .filter(|device| {
                device
                    .area_id
                    .as_ref()
                    .is_some_and(|area| areas.contains(area))
            })
            .map(|device| device.id)
            .collect();
        let candidates = core.entity_registry().select_ids(|entry| {
            // Indirect targets skip config, diagnostic and hidden entities, as Home Assistant does.
            if entry.domain() != domain
                || entry.entity_category.is_some()
                || entry.hidden_by.is_some()
            {
                return false;
            }
            let by_device = entry
                .device_id
                .as_ref()
                .is_some_and(|device| target.device_id.contains(device));
            let by_area = match &entry.area_id {
                Some(area) => areas.contains(area),
                None => entry
                    .device_id
                    .as_ref()
                    .is_some_and(|device| devices_in_areas.contains(device)),
            };
            by_device || by_area
        });
        let entities = self.entities.read();
        for entity_id in candidates {
            if is_live(&entities, &entity_id) && seen.insert(entity_id.clone()) {
                out.push((entity_id, false));
            }
        }
        out
    }

    async fn dispatch(&self, call: ServiceCall) -> Result<Option<Value>, ServiceError> {
        let spec = service_spec(&call.domain, &call.service)?;
        let core = self
            .core()
            .map_err(|err| ServiceError::handler(err.to_string()))?;
        let mut selected = Vec::new();
        for (entity_id, explicit) in self.resolve_targets(&core, &call.domain, &call.target) {
            let Some(record) = self.entities.read().get(&entity_id).cloned() else {
                continue;
            };
            if !record.entity.available() {
                continue;
            }
            if !spec.is_supported_by(record.entity.info().supported_features) {
                if explicit {
                    return Err(not_supported(&entity_id, &call.domain, &call.service));
                }
                continue;
            }
            selected.push(record);
        }
        let calls = selected.iter().map(|record| {
            record.set_context(call.context.clone());
            record.entity.call_service(EntityServiceCall {
                service: call.service.clone(),
                data: call.data.clone(),
                context: call.context.clone(),
                return_response: call.return_response,
                fanned_out_to: selected.len(),
            })
        });
        let results = futures::future::join_all(calls).await;
        let mut response = Map::new();
        for (record, result) in selected.iter().zip(results) {
            let value = result?;
            if call.return_response {
                response.insert(
                    record.description.entity_id.clone(),
                    value.unwrap_or_else(|| Value::Object(Map::new())),
                );
            }
        }
        Ok(call.return_response.then_some(Value::Object(response)))
    }
}

/// The state string and attributes to write for `record`, as Home Assistant computes them:
/// capabilities, then (when available) the entity's attributes, then the standard ones.
fn compose_state(core: &Core, record: &EntityRecord) -> (String, Map<String, Value>) {
    let entity = &record.entity;
    let info = entity.info();
    // Only the fields a state needs, read in place (no copy of the whole registry entry).
    let registered = core
        .entity_registry()
        .with_entry(&record.description.entity_id, |entry| RegistryOverrides {
            icon: entry.icon.clone(),
            name: entry.name.clone(),
            device_id: entry.device_id.clone(),
            device_class: entry.device_class.clone(),
        })
        .unwrap_or_default();
    let available = entity.available();
    let state = if available {
        entity.state().unwrap_or_else(|| STATE_UNKNOWN.to_owned())
    } else {
        STATE_UNAVAILABLE.to_owned()
    };
    let mut attributes = info.capabilities.clone();
    if available {
        attributes.extend(entity.attributes());
    }
    if let Some(state_class) = &info.state_class {
        attributes
            .entry("state_class")
            .or_insert_with(|| Value::String(state_class.clone()));
    }
    if let Some(unit) = &info.unit_of_measurement {
        attributes.insert("unit_of_measurement".into(), Value::String(unit.clone()));
    }
    if let Some(icon) = registered.icon.or_else(|| info.icon.clone()) {
        attributes.insert("icon".into(), Value::String(icon));
    }
    if let Some(name) = friendly_name(core, registered.name, registered.device_id, &info) {
        attributes.insert("friendly_name".into(), Value::String(name));
    }
    let has_features = catalog()
        .domain(&info.domain)
        .is_some_and(|spec| !spec.features.is_empty());
    if has_features || info.supported_features != 0 {
        attributes.insert(
            "supported_features".into(),
            Value::from(info.supported_features),
        );
    }
    if let Some(device_class) = registered
        .device_class
        .or_else(|| info.device_class.clone())
    {
        attributes.insert("device_class".into(), Value::String(device_class));
    }
    (state, attributes)
}

/// What a person set in the entity registry that overrides the entity's own description.
#[derive(Default)]
struct RegistryOverrides {
    icon: Option<String>,
    name: Option<String>,
    device_id: Option<String>,
    device_class: Option<String>,
}

/// The name shown for an entity: a person's name for it, else (with `has_entity_name`) its
/// device's name followed by its own, else its own.
fn friendly_name(
    core: &Core,
    registered_name: Option<String>,
    device_id: Option<String>,
    info: &EntityInfo,
) -> Option<String> {
    if registered_name.is_some() {
        return registered_name;
    }
    if !info.has_entity_name {
        return info.name.clone();
    }
    let device_name = device_id
        .and_then(|device_id| core.device_registry().get(&device_id))
        .and_then(|device| device.name_by_user.or(device.name));
    match (device_name, &info.name) {
        (Some(device), Some(name)) => Some(format!("{device} {name}")),
        (Some(device), None) => Some(device),
        (None, name) => name.clone(),
    }
}
