//! The device registry: devices merged by identifiers and connections, linked to config entries and areas.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Weak};

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::entity_registry::EntityRegistry;
use crate::event::EventBus;
use crate::registry::{
    REGISTRY_SAVE_DELAY, RegistryAction, RegistryError, announce, load_data, note_change,
};
use crate::store::{Store, Stores};

#[cfg(test)]
mod tests;

/// Store key of the device registry.
pub const DEVICE_REGISTRY_STORE_KEY: &str = "core.device_registry";
/// Event fired on every create, update and remove.
pub const EVENT_DEVICE_REGISTRY_UPDATED: &str = "device_registry_updated";
/// Connection type of MAC addresses, normalized to lowercase `aa:bb:cc:dd:ee:ff`.
pub const CONNECTION_NETWORK_MAC: &str = "mac";
/// Major version of the stored data.
const STORE_VERSION: u32 = 1;
/// Minor version of the stored data.
const STORE_MINOR_VERSION: u32 = 1;

/// A `(kind, value)` pair: an identifier `(domain, id)` or a connection `(type, address)`.
pub type DeviceKey = (String, String);

/// Who disabled a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceDisabler {
    /// Its config entry is disabled.
    ConfigEntry,
    /// The integration disabled it.
    Integration,
    /// A person disabled it.
    User,
}

/// What kind of device entry this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceEntryType {
    /// A service (cloud API, ...), not a physical device.
    Service,
}

/// One registered device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceEntry {
    /// Immutable internal id.
    pub id: String,
    /// Config entries providing this device, in the order they attached.
    pub config_entries: Vec<String>,
    /// The entry that created it, whose name and model win.
    #[serde(default)]
    pub primary_config_entry: Option<String>,
    /// Network connections (`("mac", "aa:bb:...")`), used for merging.
    #[serde(default)]
    pub connections: Vec<DeviceKey>,
    /// Integration identifiers (`("hue", "serial")`), used for merging.
    #[serde(default)]
    pub identifiers: Vec<DeviceKey>,
    /// Who made it.
    #[serde(default)]
    pub manufacturer: Option<String>,
    /// Its model.
    #[serde(default)]
    pub model: Option<String>,
    /// Its model id.
    #[serde(default)]
    pub model_id: Option<String>,
    /// The integration's name for it.
    #[serde(default)]
    pub name: Option<String>,
    /// A name a person chose.
    #[serde(default)]
    pub name_by_user: Option<String>,
    /// Firmware version.
    #[serde(default)]
    pub sw_version: Option<String>,
    /// Hardware version.
    #[serde(default)]
    pub hw_version: Option<String>,
    /// Serial number.
    #[serde(default)]
    pub serial_number: Option<String>,
    /// The hub it is reached through.
    #[serde(default)]
    pub via_device_id: Option<String>,
    /// The area it is in.
    #[serde(default)]
    pub area_id: Option<String>,
    /// The area name its integration suggested when it was created.
    #[serde(default)]
    pub suggested_area: Option<String>,
    /// Why it is disabled, when it is.
    #[serde(default)]
    pub disabled_by: Option<DeviceDisabler>,
    /// Whether it is a service rather than hardware.
    #[serde(default)]
    pub entry_type: Option<DeviceEntryType>,
    /// Where its own configuration page lives.
    #[serde(default)]
    pub configuration_url: Option<String>,
    /// When it was registered.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub modified_at: DateTime<Utc>,
}

/// What an integration knows about a device of one of its config entries.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeviceInfo {
    /// The config entry providing the device.
    pub config_entry_id: String,
    /// Integration identifiers.
    pub identifiers: Vec<DeviceKey>,
    /// Network connections.
    pub connections: Vec<DeviceKey>,
    /// Who made it.
    pub manufacturer: Option<String>,
    /// Its model.
    pub model: Option<String>,
    /// Its model id.
    pub model_id: Option<String>,
    /// Its name.
    pub name: Option<String>,
    /// Firmware version.
    pub sw_version: Option<String>,
    /// Hardware version.
    pub hw_version: Option<String>,
    /// Serial number.
    pub serial_number: Option<String>,
    /// An identifier of the hub it is reached through.
    pub via_device: Option<DeviceKey>,
    /// The area its integration suggests.
    pub suggested_area: Option<String>,
    /// Whether it is a service.
    pub entry_type: Option<DeviceEntryType>,
    /// Its own configuration page.
    pub configuration_url: Option<String>,
}

/// Changes to a device; `None` leaves a field as it is, `Some(None)` clears it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeviceUpdate {
    /// Set or clear its area.
    pub area_id: Option<Option<String>>,
    /// Set or clear the user's name.
    pub name_by_user: Option<Option<String>>,
    /// Disable or enable it.
    pub disabled_by: Option<Option<DeviceDisabler>>,
    /// Attach another config entry.
    pub add_config_entry_id: Option<String>,
    /// Detach a config entry; a device left without entries is removed.
    pub remove_config_entry_id: Option<String>,
    /// Set or clear the hub it is reached through.
    pub via_device_id: Option<Option<String>>,
    /// Add identifiers.
    pub merge_identifiers: Vec<DeviceKey>,
    /// Add connections.
    pub merge_connections: Vec<DeviceKey>,
}

/// Normalizes a connection: MAC addresses become lowercase, colon separated.
pub fn normalize_connection((kind, value): &DeviceKey) -> DeviceKey {
    if kind == CONNECTION_NETWORK_MAC {
        let hex: String = value.chars().filter(char::is_ascii_hexdigit).collect();
        if hex.len() == 12 {
            let pairs: Vec<String> = hex
                .to_lowercase()
                .as_bytes()
                .chunks(2)
                .map(|pair| String::from_utf8_lossy(pair).into_owned())
                .collect();
            return (kind.clone(), pairs.join(":"));
        }
    }
    (kind.clone(), value.clone())
}

fn merge_keys<T: PartialEq>(into: &mut Vec<T>, more: impl IntoIterator<Item = T>) {
    for key in more {
        if !into.contains(&key) {
            into.push(key);
        }
    }
}

/// The registry's devices.
#[derive(Debug, Default)]
struct DeviceData {
    /// Devices by id.
    by_id: BTreeMap<String, DeviceEntry>,
    /// Ids of the devices holding each identifier, ascending, so finding a device costs a
    /// lookup per key instead of a scan of every device (a scan per registration made
    /// registering N devices quadratic). A key is almost always on one device; an update
    /// merging identifiers, or stored data, may put it on several.
    by_identifier: HashMap<DeviceKey, Vec<String>>,
    /// Ids of the devices holding each connection (as stored), ascending.
    by_connection: HashMap<DeviceKey, Vec<String>>,
}

impl DeviceData {
    /// The devices of `devices`, indexed; a later device replaces an earlier one of its id.
    fn from_devices(devices: impl IntoIterator<Item = DeviceEntry>) -> Self {
        let mut data = Self::default();
        for device in devices {
            data.insert(device);
        }
        data
    }

    /// Stores `device` under its id, replacing any device there.
    fn insert(&mut self, device: DeviceEntry) {
        // Merging only appends keys: then only the appended ones need indexing (a device
        // gaining a key per registration must not cost a re-index of all its keys each time).
        let (known_identifiers, known_connections) = match self.by_id.get(&device.id) {
            Some(old)
                if device.identifiers.starts_with(&old.identifiers)
                    && device.connections.starts_with(&old.connections) =>
            {
                (old.identifiers.len(), old.connections.len())
            }
            Some(_) => {
                self.remove(&device.id.clone());
                (0, 0)
            }
            None => (0, 0),
        };
        for key in &device.identifiers[known_identifiers..] {
            index_add(&mut self.by_identifier, key, &device.id);
        }
        for key in &device.connections[known_connections..] {
            index_add(&mut self.by_connection, key, &device.id);
        }
        self.by_id.insert(device.id.clone(), device);
    }

    /// Removes device `id`.
    fn remove(&mut self, id: &str) -> Option<DeviceEntry> {
        let removed = self.by_id.remove(id)?;
        for key in &removed.identifiers {
            index_remove(&mut self.by_identifier, key, id);
        }
        for key in &removed.connections {
            index_remove(&mut self.by_connection, key, id);
        }
        Some(removed)
    }

    /// Ids of the devices holding any of `identifiers` or `connections`, ascending, once each.
    fn matching_ids(&self, identifiers: &[DeviceKey], connections: &[DeviceKey]) -> Vec<&String> {
        let mut ids: Vec<&String> = identifiers
            .iter()
            .filter_map(|key| self.by_identifier.get(key))
            .chain(
                connections
                    .iter()
                    .filter_map(|key| self.by_connection.get(key)),
            )
            .flatten()
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }

    /// The first device, by id, holding any of `identifiers` or `connections`.
    fn find(&self, identifiers: &[DeviceKey], connections: &[DeviceKey]) -> Option<&DeviceEntry> {
        let first = identifiers
            .iter()
            .filter_map(|key| self.by_identifier.get(key))
            .chain(
                connections
                    .iter()
                    .filter_map(|key| self.by_connection.get(key)),
            )
            .filter_map(|ids| ids.first())
            .min()?;
        self.by_id.get(first)
    }
}

/// Records that device `id` holds `key`.
fn index_add(index: &mut HashMap<DeviceKey, Vec<String>>, key: &DeviceKey, id: &str) {
    let ids = index.entry(key.clone()).or_default();
    if let Err(at) = ids.binary_search_by(|held| held.as_str().cmp(id)) {
        ids.insert(at, id.to_owned());
    }
}

/// Records that device `id` no longer holds `key`.
fn index_remove(index: &mut HashMap<DeviceKey, Vec<String>>, key: &DeviceKey, id: &str) {
    if let Some(ids) = index.get_mut(key) {
        ids.retain(|held| held != id);
        if ids.is_empty() {
            index.remove(key);
        }
    }
}

/// Shared part of the registry.
#[derive(Debug)]
struct DeviceRegistryInner {
    /// The devices, indexed.
    devices: Mutex<DeviceData>,
    /// Where devices persist.
    store: Store,
    /// Where changes are announced.
    bus: EventBus,
    /// Told when a device goes so its entities go too.
    entities: EntityRegistry,
}

/// The device registry: a cheap-to-clone handle.
#[derive(Debug, Clone)]
pub struct DeviceRegistry {
    /// Shared devices.
    inner: Arc<DeviceRegistryInner>,
}

impl DeviceRegistry {
    /// An empty registry persisting through `stores`.
    pub fn new(
        bus: EventBus,
        stores: &Stores,
        entities: EntityRegistry,
    ) -> Result<Self, RegistryError> {
        let store = stores.store(
            DEVICE_REGISTRY_STORE_KEY,
            STORE_VERSION,
            STORE_MINOR_VERSION,
        )?;
        Ok(Self {
            inner: Arc::new(DeviceRegistryInner {
                devices: Mutex::new(DeviceData::default()),
                store,
                bus,
                entities,
            }),
        })
    }

    /// Replaces the devices with those stored.
    pub async fn load(&self) -> Result<(), RegistryError> {
        let Some(data) = load_data(&self.inner.store).await? else {
            return Ok(());
        };
        let devices: Vec<DeviceEntry> =
            serde_json::from_value(data["devices"].clone()).map_err(|err| {
                RegistryError::Invalid(format!("stored device registry is malformed: {err}"))
            })?;
        *self.inner.devices.lock() = DeviceData::from_devices(devices);
        Ok(())
    }

    fn schedule_save(&self) {
        let weak: Weak<DeviceRegistryInner> = Arc::downgrade(&self.inner);
        self.inner.store.delay_save(
            move || {
                let devices: Vec<DeviceEntry> = weak
                    .upgrade()
                    .map(|inner| inner.devices.lock().by_id.values().cloned().collect())
                    .unwrap_or_default();
                json!({ "devices": devices })
            },
            REGISTRY_SAVE_DELAY,
        );
    }

    fn announce(&self, action: RegistryAction, device_id: &str, extra: Map<String, Value>) {
        let mut data = extra;
        data.insert("device_id".into(), Value::String(device_id.to_owned()));
        announce(&self.inner.bus, EVENT_DEVICE_REGISTRY_UPDATED, action, data);
    }

    /// The device with `id`.
    pub fn get(&self, id: &str) -> Option<DeviceEntry> {
        self.inner.devices.lock().by_id.get(id).cloned()
    }

    /// The device sharing any of `identifiers` or `connections`.
    pub fn find(
        &self,
        identifiers: &[DeviceKey],
        connections: &[DeviceKey],
    ) -> Option<DeviceEntry> {
        let connections: Vec<DeviceKey> = connections.iter().map(normalize_connection).collect();
        self.inner
            .devices
            .lock()
            .find(identifiers, &connections)
            .cloned()
    }

    /// Every device sharing any of `identifiers` or `connections`, by id (what a caller checks
    /// before merging into them, without copying every device).
    pub fn find_all(
        &self,
        identifiers: &[DeviceKey],
        connections: &[DeviceKey],
    ) -> Vec<DeviceEntry> {
        let connections: Vec<DeviceKey> = connections.iter().map(normalize_connection).collect();
        let devices = self.inner.devices.lock();
        devices
            .matching_ids(identifiers, &connections)
            .into_iter()
            .filter_map(|id| devices.by_id.get(id))
            .cloned()
            .collect()
    }

    /// Every device, by id.
    pub fn devices(&self) -> Vec<DeviceEntry> {
        self.inner.devices.lock().by_id.values().cloned().collect()
    }

    /// Devices provided by config entry `entry_id`.
    pub fn devices_for_config_entry(&self, entry_id: &str) -> Vec<DeviceEntry> {
        self.inner
            .devices
            .lock()
            .by_id
            .values()
            .filter(|device| device.config_entries.iter().any(|id| id == entry_id))
            .cloned()
            .collect()
    }

    /// The device described by `info`, creating it or merging `info` into the device that
    /// shares an identifier or connection with it.
    pub fn get_or_create(&self, info: DeviceInfo) -> Result<DeviceEntry, RegistryError> {
        if info.identifiers.is_empty() && info.connections.is_empty() {
            return Err(RegistryError::Invalid(
                "device info needs at least one identifier or connection".into(),
            ));
        }
        if info.config_entry_id.is_empty() {
            return Err(RegistryError::Invalid(
                "device info needs a config entry id".into(),
            ));
        }
        let connections: Vec<DeviceKey> =
            info.connections.iter().map(normalize_connection).collect();
        let now = Utc::now();
        let mut devices = self.inner.devices.lock();
        let via_device_id = info.via_device.as_ref().and_then(|via| {
            devices
                .find(std::slice::from_ref(via), &[])
                .map(|d| d.id.clone())
        });
        let existing = devices.find(&info.identifiers, &connections).cloned();
        let created = existing.is_none();
        let old = existing.clone();
        let mut device = existing.unwrap_or_else(|| DeviceEntry {
            id: ulid::Ulid::new().to_string().to_lowercase(),
            config_entries: Vec::new(),
            primary_config_entry: Some(info.config_entry_id.clone()),
            connections: Vec::new(),
            identifiers: Vec::new(),
            manufacturer: None,
            model: None,
            model_id: None,
            name: None,
            name_by_user: None,
            sw_version: None,
            hw_version: None,
            serial_number: None,
            via_device_id: None,
            area_id: None,
            suggested_area: info.suggested_area.clone(),
            disabled_by: None,
            entry_type: None,
            configuration_url: None,
            created_at: now,
            modified_at: now,
        });
        merge_keys(&mut device.config_entries, [info.config_entry_id.clone()]);
        merge_keys(&mut device.identifiers, info.identifiers);
        merge_keys(&mut device.connections, connections);
        macro_rules! take {
            ($($field:ident),*) => {$(
                if info.$field.is_some() {
                    device.$field = info.$field;
                }
            )*};
        }
        take!(
            manufacturer,
            model,
            model_id,
            name,
            sw_version,
            hw_version,
            serial_number,
            entry_type,
            configuration_url
        );
        if via_device_id.is_some() {
            device.via_device_id = via_device_id;
        }
        let changes = old
            .as_ref()
            .map(|old| diff(old, &device))
            .unwrap_or_default();
        if !created && changes.is_empty() {
            return Ok(device);
        }
        device.modified_at = now;
        devices.insert(device.clone());
        drop(devices);
        if created {
            self.announce(RegistryAction::Create, &device.id, Map::new());
        } else {
            self.announce(RegistryAction::Update, &device.id, changes_payload(changes));
        }
        self.schedule_save();
        Ok(device)
    }

    /// Applies `update` to device `id`; returns the new device, or `None` when detaching
    /// its last config entry removed it.
    pub fn update(
        &self,
        id: &str,
        update: DeviceUpdate,
    ) -> Result<Option<DeviceEntry>, RegistryError> {
        let mut devices = self.inner.devices.lock();
        let old = devices
            .by_id
            .get(id)
            .cloned()
            .ok_or_else(|| RegistryError::NotFound {
                kind: "device",
                id: id.to_owned(),
            })?;
        let mut device = old.clone();
        if let Some(v) = update.area_id {
            device.area_id = v;
        }
        if let Some(v) = update.name_by_user {
            device.name_by_user = v;
        }
        if let Some(v) = update.disabled_by {
            device.disabled_by = v;
        }
        if let Some(v) = update.via_device_id {
            device.via_device_id = v;
        }
        if let Some(entry_id) = update.add_config_entry_id {
            merge_keys(&mut device.config_entries, [entry_id]);
        }
        merge_keys(&mut device.identifiers, update.merge_identifiers);
        merge_keys(
            &mut device.connections,
            update.merge_connections.iter().map(normalize_connection),
        );
        if let Some(entry_id) = update.remove_config_entry_id {
            device.config_entries.retain(|id| *id != entry_id);
            if device.primary_config_entry.as_deref() == Some(entry_id.as_str()) {
                device.primary_config_entry = device.config_entries.first().cloned();
            }
            if device.config_entries.is_empty() {
                drop(devices);
                self.remove(id);
                return Ok(None);
            }
        }
        let changes = diff(&old, &device);
        if changes.is_empty() {
            return Ok(Some(old));
        }
        device.modified_at = Utc::now();
        devices.insert(device.clone());
        drop(devices);
        self.announce(RegistryAction::Update, id, changes_payload(changes));
        self.schedule_save();
        Ok(Some(device))
    }

    /// Removes device `id` and its entities; devices reached through it lose their hub.
    pub fn remove(&self, id: &str) -> Option<DeviceEntry> {
        let removed = self.inner.devices.lock().remove(id)?;
        self.announce(RegistryAction::Remove, id, Map::new());
        self.inner.entities.remove_device_entities(id);
        let children: Vec<String> = self
            .inner
            .devices
            .lock()
            .by_id
            .values()
            .filter(|device| device.via_device_id.as_deref() == Some(id))
            .map(|device| device.id.clone())
            .collect();
        for child in children {
            let _ = self.update(
                &child,
                DeviceUpdate {
                    via_device_id: Some(None),
                    ..DeviceUpdate::default()
                },
            );
        }
        self.schedule_save();
        Some(removed)
    }

    /// Detaches config entry `entry_id` from every device, removing devices left without entries.
    pub fn clear_config_entry(&self, entry_id: &str) {
        for device in self.devices_for_config_entry(entry_id) {
            let _ = self.update(
                &device.id,
                DeviceUpdate {
                    remove_config_entry_id: Some(entry_id.to_owned()),
                    ..DeviceUpdate::default()
                },
            );
        }
    }

    /// Clears `area_id` from every device in it (the area is gone).
    pub fn clear_area_id(&self, area_id: &str) {
        let in_area: Vec<String> = self
            .inner
            .devices
            .lock()
            .by_id
            .values()
            .filter(|device| device.area_id.as_deref() == Some(area_id))
            .map(|device| device.id.clone())
            .collect();
        for id in in_area {
            let _ = self.update(
                &id,
                DeviceUpdate {
                    area_id: Some(None),
                    ..DeviceUpdate::default()
                },
            );
        }
    }
}

fn diff(old: &DeviceEntry, new: &DeviceEntry) -> Map<String, Value> {
    let mut changes = Map::new();
    note_change(
        &mut changes,
        "config_entries",
        &old.config_entries,
        &new.config_entries,
    );
    note_change(
        &mut changes,
        "primary_config_entry",
        &old.primary_config_entry,
        &new.primary_config_entry,
    );
    note_change(
        &mut changes,
        "connections",
        &old.connections,
        &new.connections,
    );
    note_change(
        &mut changes,
        "identifiers",
        &old.identifiers,
        &new.identifiers,
    );
    note_change(
        &mut changes,
        "manufacturer",
        &old.manufacturer,
        &new.manufacturer,
    );
    note_change(&mut changes, "model", &old.model, &new.model);
    note_change(&mut changes, "model_id", &old.model_id, &new.model_id);
    note_change(&mut changes, "name", &old.name, &new.name);
    note_change(
        &mut changes,
        "name_by_user",
        &old.name_by_user,
        &new.name_by_user,
    );
    note_change(&mut changes, "sw_version", &old.sw_version, &new.sw_version);
    note_change(&mut changes, "hw_version", &old.hw_version, &new.hw_version);
    note_change(
        &mut changes,
        "serial_number",
        &old.serial_number,
        &new.serial_number,
    );
    note_change(
        &mut changes,
        "via_device_id",
        &old.via_device_id,
        &new.via_device_id,
    );
    note_change(&mut changes, "area_id", &old.area_id, &new.area_id);
    note_change(
        &mut changes,
        "disabled_by",
        &old.disabled_by,
        &new.disabled_by,
    );
    note_change(&mut changes, "entry_type", &old.entry_type, &new.entry_type);
    note_change(
        &mut changes,
        "configuration_url",
        &old.configuration_url,
        &new.configuration_url,
    );
    changes
}

fn changes_payload(changes: Map<String, Value>) -> Map<String, Value> {
    let mut payload = Map::new();
    payload.insert("changes".into(), Value::Object(changes));
    payload
}
