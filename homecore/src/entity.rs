//! Entities: the [`Entity`] trait integrations implement, what an entity says about itself, and its handle.
//!
//! An entity describes itself once through [`EntityInfo`] (Home Assistant's entity
//! description: name, icon, device class, features, device, ...), reports its state and
//! attributes when asked, pushes its own updates through the [`EntityHandle`] it gets when
//! added, handles its domain's services and answers query-shaped calls. The generic
//! machinery that adds entities, writes their states and routes services to them lives in
//! [`crate::entity_platform`] and [`crate::entity_component`].

use std::sync::{Arc, Weak};

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::context::Context;
use crate::core::{Core, CoreInner};
use crate::device_registry::{DeviceEntryType, DeviceInfo, DeviceKey};
use crate::entity_component::ComponentsInner;
use crate::entity_registry::EntityCategory;
use crate::registry::RegistryError;
use crate::restore_state::StoredState;
use crate::service::ServiceError;
use crate::state::StateError;

#[cfg(test)]
mod tests;

/// What an entity says about the device it belongs to (Home Assistant's `DeviceInfo`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct EntityDeviceInfo {
    /// Integration identifiers (`("demo", "hub-1")`), used to find and merge devices.
    #[serde(default)]
    pub identifiers: Vec<DeviceKey>,
    /// Network connections (`("mac", "aa:bb:...")`), used to find and merge devices.
    #[serde(default)]
    pub connections: Vec<DeviceKey>,
    /// The device's name.
    #[serde(default)]
    pub name: Option<String>,
    /// Who made it.
    #[serde(default)]
    pub manufacturer: Option<String>,
    /// Its model.
    #[serde(default)]
    pub model: Option<String>,
    /// Its model id.
    #[serde(default)]
    pub model_id: Option<String>,
    /// Firmware version.
    #[serde(default)]
    pub sw_version: Option<String>,
    /// Hardware version.
    #[serde(default)]
    pub hw_version: Option<String>,
    /// Serial number.
    #[serde(default)]
    pub serial_number: Option<String>,
    /// An identifier of the hub it is reached through.
    #[serde(default)]
    pub via_device: Option<DeviceKey>,
    /// Whether it is a service rather than hardware.
    #[serde(default)]
    pub entry_type: Option<DeviceEntryType>,
    /// Its own configuration page.
    #[serde(default)]
    pub configuration_url: Option<String>,
    /// The area it is suggested to be placed in.
    #[serde(default)]
    pub suggested_area: Option<String>,
}

impl EntityDeviceInfo {
    /// The device registry's view of this device, provided by config entry `config_entry_id`.
    pub fn to_registry(&self, config_entry_id: &str) -> DeviceInfo {
        DeviceInfo {
            config_entry_id: config_entry_id.to_owned(),
            identifiers: self.identifiers.clone(),
            connections: self.connections.clone(),
            manufacturer: self.manufacturer.clone(),
            model: self.model.clone(),
            model_id: self.model_id.clone(),
            name: self.name.clone(),
            sw_version: self.sw_version.clone(),
            hw_version: self.hw_version.clone(),
            serial_number: self.serial_number.clone(),
            via_device: self.via_device.clone(),
            suggested_area: self.suggested_area.clone(),
            entry_type: self.entry_type,
            configuration_url: self.configuration_url.clone(),
        }
    }
}

fn enabled_by_default() -> bool {
    true
}

/// What an entity says about itself (Home Assistant's `EntityDescription` plus identity).
///
/// Read when the entity is added (to register it) and at every state write (for the
/// attributes derived from it), so an entity may change it over time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntityInfo {
    /// The entity domain it belongs to (`light`).
    pub domain: String,
    /// The integration's stable id for it; without one it is not registered and cannot be renamed.
    #[serde(default)]
    pub unique_id: Option<String>,
    /// Its name; with `has_entity_name`, relative to its device's (`None` then means "the device itself").
    #[serde(default)]
    pub name: Option<String>,
    /// Whether `name` is relative to the device's name (modern naming).
    #[serde(default)]
    pub has_entity_name: bool,
    /// Key into the integration's translations for the name and states.
    #[serde(default)]
    pub translation_key: Option<String>,
    /// Its icon (`mdi:lightbulb`).
    #[serde(default)]
    pub icon: Option<String>,
    /// Its device class (`temperature`, `door`, ...).
    #[serde(default)]
    pub device_class: Option<String>,
    /// Config or diagnostic, for non-primary entities.
    #[serde(default)]
    pub entity_category: Option<EntityCategory>,
    /// Its domain's feature flags it supports (bits from the catalog).
    #[serde(default)]
    pub supported_features: u64,
    /// Unit of its state.
    #[serde(default)]
    pub unit_of_measurement: Option<String>,
    /// Sensor state class (`measurement`, `total`, `total_increasing`).
    #[serde(default)]
    pub state_class: Option<String>,
    /// Static capability attributes (`min`/`max`, `effect_list`, `hvac_modes`, ...),
    /// stored in the entity registry and written into every state.
    #[serde(default)]
    pub capabilities: Map<String, Value>,
    /// The device it belongs to.
    #[serde(default)]
    pub device_info: Option<EntityDeviceInfo>,
    /// Whether a newly registered entity starts enabled.
    #[serde(default = "enabled_by_default")]
    pub entity_registry_enabled_default: bool,
}

impl EntityInfo {
    /// Info for an entity of `domain`, with everything else unset and enabled by default.
    pub fn new(domain: impl Into<String>) -> Self {
        Self {
            domain: domain.into(),
            unique_id: None,
            name: None,
            has_entity_name: false,
            translation_key: None,
            icon: None,
            device_class: None,
            entity_category: None,
            supported_features: 0,
            unit_of_measurement: None,
            state_class: None,
            capabilities: Map::new(),
            device_info: None,
            entity_registry_enabled_default: true,
        }
    }
}

/// Everything known about an added entity: its info plus where it lives.
///
/// This is what entity observers receive, what a sandbox sends to main, and what a host
/// builds a proxy from; serialized, its fields are flat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntityDescription {
    /// Its entity id.
    pub entity_id: String,
    /// The config entry whose platform added it.
    #[serde(default)]
    pub config_entry_id: Option<String>,
    /// The integration providing it (the platform name, e.g. `demo`).
    pub platform: String,
    /// What it says about itself.
    #[serde(flatten)]
    pub info: EntityInfo,
}

/// A service call as one entity receives it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntityServiceCall {
    /// The domain service (`turn_on`).
    pub service: String,
    /// Its data, validated by the catalog's schema.
    pub data: Map<String, Value>,
    /// What caused the call; states written soon after carry it.
    pub context: Context,
    /// Whether the caller wants response data.
    pub return_response: bool,
    /// How many entities this service call runs on at once (1 for a call on one entity): an
    /// entity that forwards calls elsewhere (a sandbox's proxy) joins the calls of a fan-out.
    pub fanned_out_to: usize,
}

/// Why an entity operation failed.
#[derive(Debug, thiserror::Error)]
pub enum EntityError {
    /// The domain is not in the catalog.
    #[error("unknown entity domain {0:?}")]
    UnknownDomain(String),
    /// An entity was added to a platform of another domain.
    #[error("entity of domain {entity_domain} cannot be added to a {platform_domain} platform")]
    DomainMismatch {
        /// The platform's domain.
        platform_domain: String,
        /// The entity's domain.
        entity_domain: String,
    },
    /// A platform for this domain and config entry is already set up.
    #[error("platform {platform} for {domain} and config entry {key} has already been set up")]
    PlatformAlreadySetUp {
        /// The entity domain.
        domain: String,
        /// The integration.
        platform: String,
        /// The config entry id (or platform name without an entry).
        key: String,
    },
    /// The platform is not registered with a core.
    #[error("platform {platform} for {domain} is not registered with a core")]
    PlatformNotRegistered {
        /// The entity domain.
        domain: String,
        /// The integration.
        platform: String,
    },
    /// A remote platform was registered for a config entry other than its own.
    #[error("the platform belongs to config entry {found:?}, not {expected}")]
    EntryMismatch {
        /// The entry it was registered for.
        expected: String,
        /// The entry it belongs to.
        found: Option<String>,
    },
    /// Another live entity already has this entity id.
    #[error("entity id {0} is already in use")]
    EntityIdTaken(String),
    /// No live entity has this id.
    #[error("entity {0} is not loaded")]
    NotFound(String),
    /// No entity id could be made from the entity's name.
    #[error("cannot make an entity id for {0}")]
    InvalidEntityId(String),
    /// The registries refused it.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The state machine refused its state.
    #[error(transparent)]
    State(#[from] StateError),
    /// The core was dropped.
    #[error("the core is gone")]
    CoreGone,
}

/// An entity: a thing with a state, attributes and services (Home Assistant's `Entity`).
///
/// Implemented by integrations' entities and by a host's proxies of remote entities.
/// Getters are called often and must not block; long work belongs in the async methods.
pub trait Entity: Send + Sync + 'static {
    /// What the entity says about itself.
    fn info(&self) -> EntityInfo;

    /// Whether it can be reached; an unavailable entity's state is `unavailable`.
    fn available(&self) -> bool {
        true
    }

    /// Its state; `None` writes `unknown`.
    fn state(&self) -> Option<String>;

    /// Its state attributes (capabilities and the standard attributes are added by the core).
    fn attributes(&self) -> Map<String, Value> {
        Map::new()
    }

    /// Whether its last state is kept across restarts ([`EntityHandle::last_state`] reads it back).
    fn restores_state(&self) -> bool {
        false
    }

    /// Called once when added, before its first state is written. Keep `handle` to push
    /// updates ([`EntityHandle::write_state`]) and to read a restored state.
    fn added_to_core(&self, _handle: EntityHandle) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }

    /// Called once before it is removed (unload, platform reset).
    fn will_remove_from_core(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }

    /// Handles one of its domain's services; returns response data for services that have it.
    /// The entity writes its new state itself (through its handle).
    fn call_service(
        &self,
        call: EntityServiceCall,
    ) -> BoxFuture<'_, Result<Option<Value>, ServiceError>> {
        Box::pin(async move {
            Err(ServiceError::handler(format!(
                "{} is not implemented by this entity",
                call.service
            )))
        })
    }

    /// Answers a query-shaped call (`get_events`, `get_forecasts`, `browse_media`,
    /// `release_notes`) with `args`.
    fn query<'a>(
        &'a self,
        method: &'a str,
        _args: Map<String, Value>,
    ) -> BoxFuture<'a, Result<Value, ServiceError>> {
        Box::pin(async move {
            Err(ServiceError::handler(format!(
                "{method} is not implemented by this entity"
            )))
        })
    }

    /// [`Entity::query`] asked on behalf of `context`. An entity that hands the query on (a
    /// sandbox's proxy) passes the caller's context along, so what the query causes is
    /// attributed to the caller; the default answers with [`Entity::query`].
    fn query_with_context<'a>(
        &'a self,
        method: &'a str,
        args: Map<String, Value>,
        context: Context,
    ) -> BoxFuture<'a, Result<Value, ServiceError>> {
        let _ = context;
        self.query(method, args)
    }
}

/// An added entity's link back to the core: push state updates, read its restored state.
///
/// Cheap to clone; holds the core weakly, so an entity keeping it does not keep the core alive.
#[derive(Clone)]
pub struct EntityHandle {
    /// The entity's id.
    entity_id: String,
    /// The components that hold the entity.
    components: Weak<ComponentsInner>,
    /// The core.
    core: Weak<CoreInner>,
}

impl std::fmt::Debug for EntityHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntityHandle")
            .field("entity_id", &self.entity_id)
            .finish()
    }
}

impl EntityHandle {
    pub(crate) fn new(
        entity_id: String,
        components: Weak<ComponentsInner>,
        core: Weak<CoreInner>,
    ) -> Self {
        Self {
            entity_id,
            components,
            core,
        }
    }

    /// The entity's id.
    pub fn entity_id(&self) -> &str {
        &self.entity_id
    }

    /// The core, while it exists.
    pub fn core(&self) -> Option<Core> {
        self.core.upgrade().map(Core::from_inner)
    }

    /// Writes the entity's current state and attributes, carrying the context of the service
    /// call that just changed it (if one did, recently). A removed entity writes nothing.
    pub fn write_state(&self) -> Result<(), EntityError> {
        let components = self.components.upgrade().ok_or(EntityError::CoreGone)?;
        components.write_state(&self.entity_id, None)
    }

    /// Writes the entity's current state with `context` as its cause.
    pub fn write_state_with_context(&self, context: Context) -> Result<(), EntityError> {
        let components = self.components.upgrade().ok_or(EntityError::CoreGone)?;
        components.write_state(&self.entity_id, Some(context))
    }

    /// The state the entity had before the restart (or before it was last removed).
    pub fn last_state(&self) -> Option<StoredState> {
        self.core()?.restore_state().last_state(&self.entity_id)
    }

    /// Sets extra data kept with the entity's state across restarts.
    pub fn set_restore_extra_data(&self, extra_data: Option<Value>) {
        if let Some(core) = self.core() {
            core.restore_state()
                .set_extra_data(&self.entity_id, extra_data);
        }
    }
}

/// Shared pointer to an entity.
pub type EntityRef = Arc<dyn Entity>;
