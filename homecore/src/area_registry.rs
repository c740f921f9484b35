//! The area registry: named areas (rooms) that devices and entities are placed in.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::device_registry::DeviceRegistry;
use crate::entity_id::slugify;
use crate::entity_registry::EntityRegistry;
use crate::event::EventBus;
use crate::registry::{REGISTRY_SAVE_DELAY, RegistryAction, RegistryError, announce, load_data};
use crate::store::{Store, Stores};

#[cfg(test)]
mod tests;

/// Store key of the area registry.
pub const AREA_REGISTRY_STORE_KEY: &str = "core.area_registry";
/// Event fired on every create, update and remove.
pub const EVENT_AREA_REGISTRY_UPDATED: &str = "area_registry_updated";
/// Major version of the stored data.
const STORE_VERSION: u32 = 1;
/// Minor version of the stored data.
const STORE_MINOR_VERSION: u32 = 1;

/// One area.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AreaEntry {
    /// Immutable id, derived from the first name.
    pub id: String,
    /// Display name, unique ignoring case and spaces.
    pub name: String,
    /// Other names voice assistants accept.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// The floor it is on.
    #[serde(default)]
    pub floor_id: Option<String>,
    /// Icon.
    #[serde(default)]
    pub icon: Option<String>,
    /// Picture URL.
    #[serde(default)]
    pub picture: Option<String>,
    /// Labels attached to it.
    #[serde(default)]
    pub labels: Vec<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub modified_at: DateTime<Utc>,
}

/// Changes to an area; `None` leaves a field as it is, `Some(None)` clears it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AreaUpdate {
    /// Rename (the new name must be free).
    pub name: Option<String>,
    /// Replace the aliases.
    pub aliases: Option<Vec<String>>,
    /// Set or clear the floor.
    pub floor_id: Option<Option<String>>,
    /// Set or clear the icon.
    pub icon: Option<Option<String>>,
    /// Set or clear the picture.
    pub picture: Option<Option<String>>,
    /// Replace the labels.
    pub labels: Option<Vec<String>>,
}

/// Names compare ignoring case and whitespace, as Home Assistant's `normalize_name`.
fn normalize_name(name: &str) -> String {
    name.chars()
        .filter(|c| !c.is_whitespace())
        .flat_map(char::to_lowercase)
        .collect()
}

/// Shared part of the registry.
#[derive(Debug)]
struct AreaRegistryInner {
    /// Areas by id.
    areas: Mutex<BTreeMap<String, AreaEntry>>,
    /// Where areas persist.
    store: Store,
    /// Where changes are announced.
    bus: EventBus,
    /// Told when an area goes, so devices leave it.
    devices: DeviceRegistry,
    /// Told when an area goes, so entities leave it.
    entities: EntityRegistry,
}

/// The area registry: a cheap-to-clone handle.
#[derive(Debug, Clone)]
pub struct AreaRegistry {
    /// Shared areas.
    inner: Arc<AreaRegistryInner>,
}

impl AreaRegistry {
    /// An empty registry persisting through `stores`.
    pub fn new(
        bus: EventBus,
        stores: &Stores,
        devices: DeviceRegistry,
        entities: EntityRegistry,
    ) -> Result<Self, RegistryError> {
        let store = stores.store(AREA_REGISTRY_STORE_KEY, STORE_VERSION, STORE_MINOR_VERSION)?;
        Ok(Self {
            inner: Arc::new(AreaRegistryInner {
                areas: Mutex::new(BTreeMap::new()),
                store,
                bus,
                devices,
                entities,
            }),
        })
    }

    /// Replaces the areas with those stored.
    pub async fn load(&self) -> Result<(), RegistryError> {
        let Some(data) = load_data(&self.inner.store).await? else {
            return Ok(());
        };
        let areas: Vec<AreaEntry> =
            serde_json::from_value(data["areas"].clone()).map_err(|err| {
                RegistryError::Invalid(format!("stored area registry is malformed: {err}"))
            })?;
        *self.inner.areas.lock() = areas.into_iter().map(|a| (a.id.clone(), a)).collect();
        Ok(())
    }

    fn schedule_save(&self) {
        let weak: Weak<AreaRegistryInner> = Arc::downgrade(&self.inner);
        self.inner.store.delay_save(
            move || {
                let areas: Vec<AreaEntry> = weak
                    .upgrade()
                    .map(|inner| inner.areas.lock().values().cloned().collect())
                    .unwrap_or_default();
                json!({ "areas": areas })
            },
            REGISTRY_SAVE_DELAY,
        );
    }

    fn announce(&self, action: RegistryAction, area_id: &str) {
        let mut data = Map::new();
        data.insert("area_id".into(), Value::String(area_id.to_owned()));
        announce(&self.inner.bus, EVENT_AREA_REGISTRY_UPDATED, action, data);
    }

    /// The area with `id`.
    pub fn get(&self, id: &str) -> Option<AreaEntry> {
        self.inner.areas.lock().get(id).cloned()
    }

    /// The area named `name` (ignoring case and spaces).
    pub fn get_by_name(&self, name: &str) -> Option<AreaEntry> {
        let wanted = normalize_name(name);
        self.inner
            .areas
            .lock()
            .values()
            .find(|area| normalize_name(&area.name) == wanted)
            .cloned()
    }

    /// Every area, by id.
    pub fn areas(&self) -> Vec<AreaEntry> {
        self.inner.areas.lock().values().cloned().collect()
    }

    /// Creates an area named `name`; its id is the name's slug, suffixed `_2`, `_3`, ... if taken.
    pub fn create(&self, name: &str) -> Result<AreaEntry, RegistryError> {
        let name = name.trim();
        if name.is_empty() {
            return Err(RegistryError::Invalid("an area needs a name".into()));
        }
        if self.get_by_name(name).is_some() {
            return Err(RegistryError::NameTaken(name.to_owned()));
        }
        let mut areas = self.inner.areas.lock();
        let base = match slugify(name) {
            slug if slug.is_empty() => "area".to_owned(),
            slug => slug,
        };
        let mut id = base.clone();
        let mut tries = 1;
        while areas.contains_key(&id) {
            tries += 1;
            id = format!("{base}_{tries}");
        }
        let now = Utc::now();
        let area = AreaEntry {
            id: id.clone(),
            name: name.to_owned(),
            aliases: Vec::new(),
            floor_id: None,
            icon: None,
            picture: None,
            labels: Vec::new(),
            created_at: now,
            modified_at: now,
        };
        areas.insert(id.clone(), area.clone());
        drop(areas);
        self.announce(RegistryAction::Create, &id);
        self.schedule_save();
        Ok(area)
    }

    /// The area named `name`, created when missing.
    pub fn get_or_create(&self, name: &str) -> Result<AreaEntry, RegistryError> {
        match self.get_by_name(name) {
            Some(area) => Ok(area),
            None => self.create(name),
        }
    }

    /// Applies `update` to area `id`.
    pub fn update(&self, id: &str, update: AreaUpdate) -> Result<AreaEntry, RegistryError> {
        if let Some(name) = &update.name {
            if name.trim().is_empty() {
                return Err(RegistryError::Invalid("an area needs a name".into()));
            }
            if self.get_by_name(name).is_some_and(|other| other.id != id) {
                return Err(RegistryError::NameTaken(name.clone()));
            }
        }
        let mut areas = self.inner.areas.lock();
        let area = areas.get_mut(id).ok_or_else(|| RegistryError::NotFound {
            kind: "area",
            id: id.to_owned(),
        })?;
        let old = area.clone();
        if let Some(name) = update.name {
            area.name = name.trim().to_owned();
        }
        if let Some(v) = update.aliases {
            area.aliases = v;
        }
        if let Some(v) = update.floor_id {
            area.floor_id = v;
        }
        if let Some(v) = update.icon {
            area.icon = v;
        }
        if let Some(v) = update.picture {
            area.picture = v;
        }
        if let Some(v) = update.labels {
            area.labels = v;
        }
        if *area == old {
            return Ok(old);
        }
        area.modified_at = Utc::now();
        let updated = area.clone();
        drop(areas);
        self.announce(RegistryAction::Update, id);
        self.schedule_save();
        Ok(updated)
    }

    /// Deletes area `id`; devices and entities in it lose their area.
    pub fn delete(&self, id: &str) -> Result<AreaEntry, RegistryError> {
        let removed =
            self.inner
                .areas
                .lock()
                .remove(id)
                .ok_or_else(|| RegistryError::NotFound {
                    kind: "area",
                    id: id.to_owned(),
                })?;
        self.inner.devices.clear_area_id(id);
        self.inner.entities.clear_area_id(id);
        self.announce(RegistryAction::Remove, id);
        self.schedule_save();
        Ok(removed)
    }
}
