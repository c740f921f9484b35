//! What the entity, device and area registries share: errors, actions, save timing and loading.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::area_registry::AreaRegistry;
use crate::device_registry::DeviceRegistry;
use crate::entity_registry::EntityRegistry;
use crate::event::EventBus;
use crate::state::StateMachine;
use crate::store::{StoreError, Stores};

#[cfg(test)]
mod tests;

/// How long a registry waits after a change before saving, so bursts become one write
/// (Home Assistant's registry `SAVE_DELAY`). Unwritten saves are flushed on stop.
pub const REGISTRY_SAVE_DELAY: Duration = Duration::from_secs(10);

/// What happened to a registry entry, as reported in `*_registry_updated` events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegistryAction {
    /// An entry was added.
    Create,
    /// An entry changed; the event's `changes` holds the old values.
    Update,
    /// An entry was removed.
    Remove,
}

/// Why a registry operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// No entry with this id exists.
    #[error("{kind} {id:?} not found")]
    NotFound {
        /// `entity`, `device` or `area`.
        kind: &'static str,
        /// The id looked up.
        id: String,
    },
    /// The requested entity id already belongs to another entity or state.
    #[error("entity id {0} is already in use")]
    EntityIdTaken(String),
    /// The requested area name is already used by another area.
    #[error("the name {0:?} is already in use")]
    NameTaken(String),
    /// The input is invalid (bad entity id, changed domain, missing identifiers, ...).
    #[error("{0}")]
    Invalid(String),
    /// Loading the registry from its store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The three registries of one core, loaded together.
#[derive(Debug, Clone)]
pub struct Registries {
    /// Entities by `(domain, platform, unique_id)`.
    pub entities: EntityRegistry,
    /// Devices by identifiers and connections.
    pub devices: DeviceRegistry,
    /// Areas by id.
    pub areas: AreaRegistry,
}

impl Registries {
    /// Empty registries saving through `stores` and announcing on `bus`.
    pub fn new(
        bus: &EventBus,
        stores: &Stores,
        states: &StateMachine,
    ) -> Result<Self, RegistryError> {
        let entities = EntityRegistry::new(bus.clone(), stores, states.clone())?;
        let devices = DeviceRegistry::new(bus.clone(), stores, entities.clone())?;
        let areas = AreaRegistry::new(bus.clone(), stores, devices.clone(), entities.clone())?;
        Ok(Self {
            entities,
            devices,
            areas,
        })
    }

    /// Loads all three from their stores.
    pub async fn load(&self) -> Result<(), RegistryError> {
        self.areas.load().await?;
        self.devices.load().await?;
        self.entities.load().await
    }
}

/// Loads a registry's data: a corrupt store is logged and read as empty (the file was
/// moved aside, so nothing is lost), as Home Assistant does; other failures are returned.
pub(crate) async fn load_data(store: &crate::store::Store) -> Result<Option<Value>, RegistryError> {
    match store.load().await {
        Ok(data) => Ok(data),
        Err(err @ StoreError::Corrupt { .. }) => {
            tracing::error!(%err, "registry store is corrupt; starting empty");
            Ok(None)
        }
        Err(err) => Err(err.into()),
    }
}

/// Fires a `*_registry_updated` event.
pub(crate) fn announce(
    bus: &EventBus,
    event_type: &str,
    action: RegistryAction,
    mut data: Map<String, Value>,
) {
    data.insert(
        "action".into(),
        serde_json::to_value(action).unwrap_or(Value::Null),
    );
    if let Err(err) = bus.fire(event_type, data, None) {
        tracing::error!(%err, event_type, "could not fire registry event");
    }
}

/// Records `old` under `field` in `changes` when it differs from `new`.
pub(crate) fn note_change<T: PartialEq + Serialize>(
    changes: &mut Map<String, Value>,
    field: &str,
    old: &T,
    new: &T,
) {
    if old != new {
        changes.insert(
            field.to_owned(),
            serde_json::to_value(old).unwrap_or(Value::Null),
        );
    }
}
