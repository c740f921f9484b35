//! The entity registry: stable entity ids for `(domain, platform, unique_id)`, with user overrides.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Weak};

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::entity_id::{HintScope, slugify, split_entity_id, validate_domain, validate_entity_id};
use crate::event::EventBus;
use crate::registry::{
    REGISTRY_SAVE_DELAY, RegistryAction, RegistryError, announce, load_data, note_change,
};
use crate::state::StateMachine;
use crate::store::{Store, Stores};

#[cfg(test)]
mod tests;

/// Store key of the entity registry.
pub const ENTITY_REGISTRY_STORE_KEY: &str = "core.entity_registry";
/// Event fired on every create, update and remove.
pub const EVENT_ENTITY_REGISTRY_UPDATED: &str = "entity_registry_updated";
/// Major version of the stored data.
const STORE_VERSION: u32 = 1;
/// Minor version of the stored data.
const STORE_MINOR_VERSION: u32 = 1;

/// Who disabled an entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntityDisabler {
    /// Its config entry is disabled.
    ConfigEntry,
    /// Its device is disabled.
    Device,
    /// Hidden by default by the integration (e.g. diagnostic sensors).
    Integration,
    /// A person disabled it.
    User,
}

/// Who hid an entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntityHider {
    /// Hidden by default by the integration.
    Integration,
    /// A person hid it.
    User,
}

/// The category of a non-primary entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntityCategory {
    /// Changes the device's configuration.
    Config,
    /// Reports on the device's health.
    Diagnostic,
}

/// One registered entity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegistryEntry {
    /// Immutable internal id, stable across entity id renames.
    pub id: String,
    /// The entity id, which a person may rename.
    pub entity_id: String,
    /// The integration providing the entity.
    pub platform: String,
    /// The integration's own id for it, unique within `(domain, platform)`.
    pub unique_id: String,
    /// The config entry that created it.
    #[serde(default)]
    pub config_entry_id: Option<String>,
    /// The device it belongs to.
    #[serde(default)]
    pub device_id: Option<String>,
    /// An area set on the entity itself, overriding its device's.
    #[serde(default)]
    pub area_id: Option<String>,
    /// Why it is disabled, when it is.
    #[serde(default)]
    pub disabled_by: Option<EntityDisabler>,
    /// Why it is hidden, when it is.
    #[serde(default)]
    pub hidden_by: Option<EntityHider>,
    /// A name a person chose, overriding `original_name`.
    #[serde(default)]
    pub name: Option<String>,
    /// The name the integration gave.
    #[serde(default)]
    pub original_name: Option<String>,
    /// An icon a person chose.
    #[serde(default)]
    pub icon: Option<String>,
    /// The icon the integration gave.
    #[serde(default)]
    pub original_icon: Option<String>,
    /// A device class a person chose.
    #[serde(default)]
    pub device_class: Option<String>,
    /// The device class the integration gave.
    #[serde(default)]
    pub original_device_class: Option<String>,
    /// Config or diagnostic, for non-primary entities.
    #[serde(default)]
    pub entity_category: Option<EntityCategory>,
    /// Feature flags of the entity's domain.
    #[serde(default)]
    pub supported_features: u64,
    /// Unit of its state.
    #[serde(default)]
    pub unit_of_measurement: Option<String>,
    /// Static capabilities (e.g. supported color modes).
    #[serde(default)]
    pub capabilities: Option<Map<String, Value>>,
    /// Key for translated names.
    #[serde(default)]
    pub translation_key: Option<String>,
    /// Whether its name is relative to its device's.
    #[serde(default)]
    pub has_entity_name: bool,
    /// Per-domain options set by people or integrations.
    #[serde(default)]
    pub options: Map<String, Value>,
    /// When it was registered.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub modified_at: DateTime<Utc>,
}

impl RegistryEntry {
    /// The entity's domain.
    pub fn domain(&self) -> &str {
        self.entity_id
            .split_once('.')
            .map_or("", |(domain, _)| domain)
    }

    /// True when disabled for any reason.
    pub fn disabled(&self) -> bool {
        self.disabled_by.is_some()
    }
}

/// What an integration knows about an entity it is registering.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EntityRegistration {
    /// The entity's domain (`light`, `sensor`, ...).
    pub domain: String,
    /// The providing integration.
    pub platform: String,
    /// The integration's unique id for the entity.
    pub unique_id: String,
    /// Preferred object id for a new entity; defaults to `<platform>_<unique_id>`.
    pub suggested_object_id: Option<String>,
    /// The config entry creating it.
    pub config_entry_id: Option<String>,
    /// The device it belongs to.
    pub device_id: Option<String>,
    /// Disabled from the start (only applies to new entities).
    pub disabled_by: Option<EntityDisabler>,
    /// Hidden from the start (only applies to new entities).
    pub hidden_by: Option<EntityHider>,
    /// The integration's name for it.
    pub original_name: Option<String>,
    /// The integration's icon for it.
    pub original_icon: Option<String>,
    /// The integration's device class for it.
    pub original_device_class: Option<String>,
    /// Config or diagnostic.
    pub entity_category: Option<EntityCategory>,
    /// Feature flags.
    pub supported_features: u64,
    /// Unit of its state.
    pub unit_of_measurement: Option<String>,
    /// Static capabilities.
    pub capabilities: Option<Map<String, Value>>,
    /// Key for translated names.
    pub translation_key: Option<String>,
    /// Whether its name is relative to its device's.
    pub has_entity_name: bool,
}

/// Changes to a registered entity; `None` leaves a field as it is, `Some(None)` clears it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EntityUpdate {
    /// Rename the entity (same domain, not taken).
    pub new_entity_id: Option<String>,
    /// Set or clear the user's name.
    pub name: Option<Option<String>>,
    /// Set or clear the user's icon.
    pub icon: Option<Option<String>>,
    /// Set or clear the entity's own area.
    pub area_id: Option<Option<String>>,
    /// Move it to another device, or none.
    pub device_id: Option<Option<String>>,
    /// Move it to another config entry, or none.
    pub config_entry_id: Option<Option<String>>,
    /// Disable or enable it.
    pub disabled_by: Option<Option<EntityDisabler>>,
    /// Hide or show it.
    pub hidden_by: Option<Option<EntityHider>>,
    /// Set or clear the user's device class.
    pub device_class: Option<Option<String>>,
    /// Replace one domain's options (`Some((domain, options))`).
    pub options: Option<(String, Value)>,
}

/// `(domain, platform, unique_id)`: what identifies a registered entity.
type EntityKey = (String, String, String);

/// The key of `entry`.
fn key_of(entry: &RegistryEntry) -> EntityKey {
    (
        entry.domain().to_owned(),
        entry.platform.clone(),
        entry.unique_id.clone(),
    )
}

/// The registry's entries.
#[derive(Debug, Default)]
struct EntityData {
    /// Entries by entity id.
    by_entity_id: BTreeMap<String, RegistryEntry>,
    /// Entity id by key, so a registration finds its entry without scanning every entry
    /// (a scan per registration made registering N entities quadratic). When several entries
    /// share a key (only stored data can hold that), it names the smallest entity id: the one
    /// a scan in entity id order finds.
    by_key: HashMap<EntityKey, String>,
    /// Whether two entries ever shared a key; only then does removing the indexed one have
    /// to look for the next.
    shared_keys: bool,
}

impl EntityData {
    /// The entries of `entries`, indexed.
    fn from_entries(entries: impl IntoIterator<Item = RegistryEntry>) -> Self {
        let mut data = Self::default();
        for entry in entries {
            data.insert(entry);
        }
        data
    }

    fn find_key(&self, domain: &str, platform: &str, unique_id: &str) -> Option<&RegistryEntry> {
        let key = (domain.to_owned(), platform.to_owned(), unique_id.to_owned());
        self.by_key
            .get(&key)
            .and_then(|entity_id| self.by_entity_id.get(entity_id))
    }

    /// Stores `entry` under its entity id, replacing any entry there.
    fn insert(&mut self, entry: RegistryEntry) {
        if self.by_entity_id.contains_key(&entry.entity_id) {
            self.remove(&entry.entity_id.clone());
        }
        let key = key_of(&entry);
        match self.by_key.get_mut(&key) {
            None => {
                self.by_key.insert(key, entry.entity_id.clone());
            }
            Some(indexed) => {
                self.shared_keys = true;
                if entry.entity_id < *indexed {
                    *indexed = entry.entity_id.clone();
                }
            }
        }
        self.by_entity_id.insert(entry.entity_id.clone(), entry);
    }

    /// Removes the entry of `entity_id`.
    fn remove(&mut self, entity_id: &str) -> Option<RegistryEntry> {
        let removed = self.by_entity_id.remove(entity_id)?;
        let key = key_of(&removed);
        if self
            .by_key
            .get(&key)
            .is_some_and(|indexed| indexed == entity_id)
        {
            self.by_key.remove(&key);
            if self.shared_keys {
                let next = self
                    .by_entity_id
                    .values()
                    .find(|entry| key_of(entry) == key)
                    .map(|entry| entry.entity_id.clone());
                if let Some(next) = next {
                    self.by_key.insert(key, next);
                }
            }
        }
        Some(removed)
    }
}

/// Shared part of the registry.
#[derive(Debug)]
struct EntityRegistryInner {
    /// The entries.
    data: Mutex<EntityData>,
    /// Where entries persist.
    store: Store,
    /// Where changes are announced.
    bus: EventBus,
    /// Consulted so a new entity id never collides with an unregistered entity's state.
    states: StateMachine,
}

/// The entity registry: a cheap-to-clone handle.
#[derive(Debug, Clone)]
pub struct EntityRegistry {
    /// Shared entries.
    inner: Arc<EntityRegistryInner>,
}

impl EntityRegistry {
    /// An empty registry persisting through `stores`.
    pub fn new(
        bus: EventBus,
        stores: &Stores,
        states: StateMachine,
    ) -> Result<Self, RegistryError> {
        let store = stores.store(
            ENTITY_REGISTRY_STORE_KEY,
            STORE_VERSION,
            STORE_MINOR_VERSION,
        )?;
        Ok(Self {
            inner: Arc::new(EntityRegistryInner {
                data: Mutex::new(EntityData::default()),
                store,
                bus,
                states,
            }),
        })
    }

    /// Replaces the entries with those stored.
    pub async fn load(&self) -> Result<(), RegistryError> {
        let Some(data) = load_data(&self.inner.store).await? else {
            return Ok(());
        };
        let entries: Vec<RegistryEntry> = serde_json::from_value(data["entities"].clone())
            .map_err(|err| {
                RegistryError::Invalid(format!("stored entity registry is malformed: {err}"))
            })?;
        let data = EntityData::from_entries(
            entries
                .into_iter()
                .filter(|entry| validate_entity_id(&entry.entity_id).is_ok()),
        );
        *self.inner.data.lock() = data;
        // Entries of the replaced data may be gone: no hint earned on them holds.
        self.inner.states.id_hints().clear();
        Ok(())
    }

    fn schedule_save(&self) {
        let weak: Weak<EntityRegistryInner> = Arc::downgrade(&self.inner);
        self.inner.store.delay_save(
            move || {
                let entries: Vec<RegistryEntry> = weak
                    .upgrade()
                    .map(|inner| inner.data.lock().by_entity_id.values().cloned().collect())
                    .unwrap_or_default();
                json!({ "entities": entries })
            },
            REGISTRY_SAVE_DELAY,
        );
    }

    fn announce(&self, action: RegistryAction, entity_id: &str, extra: Map<String, Value>) {
        let mut data = extra;
        data.insert("entity_id".into(), Value::String(entity_id.to_owned()));
        announce(&self.inner.bus, EVENT_ENTITY_REGISTRY_UPDATED, action, data);
    }

    /// The entry of `entity_id`.
    pub fn get(&self, entity_id: &str) -> Option<RegistryEntry> {
        self.inner.data.lock().by_entity_id.get(entity_id).cloned()
    }

    /// The entity id registered for `(domain, platform, unique_id)`.
    pub fn entity_id_for(&self, domain: &str, platform: &str, unique_id: &str) -> Option<String> {
        self.inner
            .data
            .lock()
            .find_key(domain, platform, unique_id)
            .map(|entry| entry.entity_id.clone())
    }

    /// Every entry, sorted by entity id.
    pub fn entries(&self) -> Vec<RegistryEntry> {
        self.inner
            .data
            .lock()
            .by_entity_id
            .values()
            .cloned()
            .collect()
    }

    /// `read` applied to the entry of `entity_id`, without copying the entry (hot paths: every
    /// state write consults the registry). The registry is locked while `read` runs, so `read`
    /// must not call back into it.
    pub fn with_entry<R>(
        &self,
        entity_id: &str,
        read: impl FnOnce(&RegistryEntry) -> R,
    ) -> Option<R> {
        self.inner.data.lock().by_entity_id.get(entity_id).map(read)
    }

    /// The entity ids of the entries `keep` selects, sorted, without copying the entries. The
    /// registry is locked while `keep` runs, so `keep` must not call back into it.
    pub fn select_ids(&self, keep: impl Fn(&RegistryEntry) -> bool) -> Vec<String> {
        self.select(keep, |entry| entry.entity_id.clone())
    }

    /// Entries created by config entry `entry_id`.
    pub fn entries_for_config_entry(&self, entry_id: &str) -> Vec<RegistryEntry> {
        self.filter(|entry| entry.config_entry_id.as_deref() == Some(entry_id))
    }

    /// Entries belonging to device `device_id`.
    pub fn entries_for_device(&self, device_id: &str) -> Vec<RegistryEntry> {
        self.filter(|entry| entry.device_id.as_deref() == Some(device_id))
    }

    fn filter(&self, keep: impl Fn(&RegistryEntry) -> bool) -> Vec<RegistryEntry> {
        self.select(keep, RegistryEntry::clone)
    }

    /// `take` of every entry `keep` selects, in entity id order, under one lock.
    fn select<T>(
        &self,
        keep: impl Fn(&RegistryEntry) -> bool,
        take: impl Fn(&RegistryEntry) -> T,
    ) -> Vec<T> {
        self.inner
            .data
            .lock()
            .by_entity_id
            .values()
            .filter(|entry| keep(entry))
            .map(take)
            .collect()
    }

    fn is_taken(&self, data: &EntityData, entity_id: &str) -> bool {
        data.by_entity_id.contains_key(entity_id) || self.inner.states.contains(entity_id)
    }

    /// The entity id registered for the registration's key, registering it first when new.
    ///
    /// A new entity gets `<domain>.<slug of suggested_object_id>` (or of
    /// `<platform>_<unique_id>`), suffixed `_2`, `_3`, ... until free. An existing one has
    /// its integration-provided fields refreshed.
    pub fn get_or_create(
        &self,
        registration: EntityRegistration,
    ) -> Result<RegistryEntry, RegistryError> {
        let r = registration;
        validate_domain(&r.domain).map_err(|err| RegistryError::Invalid(err.to_string()))?;
        validate_domain(&r.platform)
            .map_err(|err| RegistryError::Invalid(format!("invalid platform: {err}")))?;
        if r.unique_id.is_empty() {
            return Err(RegistryError::Invalid("unique_id must not be empty".into()));
        }
        let now = Utc::now();
        let mut data = self.inner.data.lock();
        if let Some(existing) = data.find_key(&r.domain, &r.platform, &r.unique_id).cloned() {
            let mut entry = existing.clone();
            if r.config_entry_id.is_some() {
                entry.config_entry_id = r.config_entry_id;
            }
            if r.device_id.is_some() {
                entry.device_id = r.device_id;
            }
            entry.original_name = r.original_name;
            entry.original_icon = r.original_icon;
            entry.original_device_class = r.original_device_class;
            entry.entity_category = r.entity_category;
            entry.supported_features = r.supported_features;
            entry.unit_of_measurement = r.unit_of_measurement;
            entry.capabilities = r.capabilities;
            entry.translation_key = r.translation_key;
            entry.has_entity_name = r.has_entity_name;
            let changes = diff(&existing, &entry);
            if changes.is_empty() {
                return Ok(existing);
            }
            entry.modified_at = now;
            data.insert(entry.clone());
            drop(data);
            self.announce(
                RegistryAction::Update,
                &entry.entity_id,
                changes_payload(changes),
            );
            self.schedule_save();
            return Ok(entry);
        }
        let base = r
            .suggested_object_id
            .as_deref()
            .map(slugify)
            .filter(|slug| !slug.is_empty())
            .unwrap_or_else(|| slugify(&format!("{}_{}", r.platform, r.unique_id)));
        let base = if base.is_empty() {
            "unnamed_device".to_owned()
        } else {
            base
        };
        // Unbounded, as before: every entry and state takes one id, so a free one exists.
        let hints = self.inner.states.id_hints();
        let candidate = hints
            .first_free(HintScope::Registry, &r.domain, &base, usize::MAX, |id| {
                self.is_taken(&data, id)
            })
            .map(|(candidate, _)| candidate)
            .ok_or_else(|| {
                RegistryError::Invalid(format!("no free entity id for {}.{base}", r.domain))
            })?;
        // Slugs may exceed the entity id limit; refuse rather than truncate silently.
        validate_entity_id(&candidate).map_err(|err| RegistryError::Invalid(err.to_string()))?;
        let entry = RegistryEntry {
            id: ulid::Ulid::new().to_string().to_lowercase(),
            entity_id: candidate.clone(),
            platform: r.platform,
            unique_id: r.unique_id,
            config_entry_id: r.config_entry_id,
            device_id: r.device_id,
            area_id: None,
            disabled_by: r.disabled_by,
            hidden_by: r.hidden_by,
            name: None,
            original_name: r.original_name,
            icon: None,
            original_icon: r.original_icon,
            device_class: None,
            original_device_class: r.original_device_class,
            entity_category: r.entity_category,
            supported_features: r.supported_features,
            unit_of_measurement: r.unit_of_measurement,
            capabilities: r.capabilities,
            translation_key: r.translation_key,
            has_entity_name: r.has_entity_name,
            options: Map::new(),
            created_at: now,
            modified_at: now,
        };
        data.insert(entry.clone());
        drop(data);
        self.announce(RegistryAction::Create, &candidate, Map::new());
        self.schedule_save();
        Ok(entry)
    }

    /// Applies `update` to `entity_id`, returning the new entry.
    pub fn update(
        &self,
        entity_id: &str,
        update: EntityUpdate,
    ) -> Result<RegistryEntry, RegistryError> {
        let mut data = self.inner.data.lock();
        let old =
            data.by_entity_id
                .get(entity_id)
                .cloned()
                .ok_or_else(|| RegistryError::NotFound {
                    kind: "entity",
                    id: entity_id.to_owned(),
                })?;
        let mut entry = old.clone();
        if let Some(new_id) = &update.new_entity_id
            && new_id != entity_id
        {
            let (new_domain, _) =
                split_entity_id(new_id).map_err(|err| RegistryError::Invalid(err.to_string()))?;
            if new_domain != old.domain() {
                return Err(RegistryError::Invalid(format!(
                    "new entity id {new_id} must keep the domain {}",
                    old.domain()
                )));
            }
            if self.is_taken(&data, new_id) {
                return Err(RegistryError::EntityIdTaken(new_id.clone()));
            }
            entry.entity_id = new_id.clone();
        }
        let EntityUpdate {
            name,
            icon,
            area_id,
            device_id,
            config_entry_id,
            disabled_by,
            hidden_by,
            device_class,
            options,
            ..
        } = update;
        if let Some(v) = name {
            entry.name = v;
        }
        if let Some(v) = icon {
            entry.icon = v;
        }
        if let Some(v) = area_id {
            entry.area_id = v;
        }
        if let Some(v) = device_id {
            entry.device_id = v;
        }
        if let Some(v) = config_entry_id {
            entry.config_entry_id = v;
        }
        if let Some(v) = disabled_by {
            entry.disabled_by = v;
        }
        if let Some(v) = hidden_by {
            entry.hidden_by = v;
        }
        if let Some(v) = device_class {
            entry.device_class = v;
        }
        if let Some((domain, value)) = options {
            entry.options.insert(domain, value);
        }
        let changes = diff(&old, &entry);
        if changes.is_empty() {
            return Ok(old);
        }
        entry.modified_at = Utc::now();
        data.remove(entity_id);
        data.insert(entry.clone());
        if entry.entity_id != entity_id {
            self.inner.states.id_hints().freed(entity_id);
        }
        drop(data);
        let mut payload = changes_payload(changes);
        if entry.entity_id != entity_id {
            payload.insert("old_entity_id".into(), Value::String(entity_id.to_owned()));
        }
        self.announce(RegistryAction::Update, &entry.entity_id, payload);
        self.schedule_save();
        Ok(entry)
    }

    /// Removes `entity_id`; returns the removed entry.
    pub fn remove(&self, entity_id: &str) -> Option<RegistryEntry> {
        let removed = self.inner.data.lock().remove(entity_id)?;
        self.inner.states.id_hints().freed(entity_id);
        self.announce(RegistryAction::Remove, entity_id, Map::new());
        self.schedule_save();
        Some(removed)
    }

    /// Removes every entity of config entry `entry_id`.
    pub fn clear_config_entry(&self, entry_id: &str) {
        for entry in self.entries_for_config_entry(entry_id) {
            self.remove(&entry.entity_id);
        }
    }

    /// Removes every entity of device `device_id` (the device is gone).
    pub fn remove_device_entities(&self, device_id: &str) {
        for entry in self.entries_for_device(device_id) {
            self.remove(&entry.entity_id);
        }
    }

    /// Clears `area_id` from every entity that has it (the area is gone).
    pub fn clear_area_id(&self, area_id: &str) {
        for entry in self.filter(|entry| entry.area_id.as_deref() == Some(area_id)) {
            let _ = self.update(
                &entry.entity_id,
                EntityUpdate {
                    area_id: Some(None),
                    ..EntityUpdate::default()
                },
            );
        }
    }
}

/// Old values of every field that differs between `old` and `new`, ignoring timestamps.
fn diff(old: &RegistryEntry, new: &RegistryEntry) -> Map<String, Value> {
    let mut changes = Map::new();
    note_change(&mut changes, "entity_id", &old.entity_id, &new.entity_id);
    note_change(
        &mut changes,
        "config_entry_id",
        &old.config_entry_id,
        &new.config_entry_id,
    );
    note_change(&mut changes, "device_id", &old.device_id, &new.device_id);
    note_change(&mut changes, "area_id", &old.area_id, &new.area_id);
    note_change(
        &mut changes,
        "disabled_by",
        &old.disabled_by,
        &new.disabled_by,
    );
    note_change(&mut changes, "hidden_by", &old.hidden_by, &new.hidden_by);
    note_change(&mut changes, "name", &old.name, &new.name);
    note_change(
        &mut changes,
        "original_name",
        &old.original_name,
        &new.original_name,
    );
    note_change(&mut changes, "icon", &old.icon, &new.icon);
    note_change(
        &mut changes,
        "original_icon",
        &old.original_icon,
        &new.original_icon,
    );
    note_change(
        &mut changes,
        "device_class",
        &old.device_class,
        &new.device_class,
    );
    note_change(
        &mut changes,
        "original_device_class",
        &old.original_device_class,
        &new.original_device_class,
    );
    note_change(
        &mut changes,
        "entity_category",
        &old.entity_category,
        &new.entity_category,
    );
    note_change(
        &mut changes,
        "supported_features",
        &old.supported_features,
        &new.supported_features,
    );
    note_change(
        &mut changes,
        "unit_of_measurement",
        &old.unit_of_measurement,
        &new.unit_of_measurement,
    );
    note_change(
        &mut changes,
        "capabilities",
        &old.capabilities,
        &new.capabilities,
    );
    note_change(
        &mut changes,
        "translation_key",
        &old.translation_key,
        &new.translation_key,
    );
    note_change(
        &mut changes,
        "has_entity_name",
        &old.has_entity_name,
        &new.has_entity_name,
    );
    note_change(&mut changes, "options", &old.options, &new.options);
    changes
}

fn changes_payload(changes: Map<String, Value>) -> Map<String, Value> {
    let mut payload = Map::new();
    payload.insert("changes".into(), Value::Object(changes));
    payload
}
