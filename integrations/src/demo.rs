//! The demo integration: every proxyable entity domain, a full config flow, a response service,
//! events, storage and restore, all deterministic so in-process and sandboxed runs compare equal.
//!
//! - `config_flow`: the config flow (menu, form with a selector and a section) and options flow.
//! - `entities`: the devices and the entity table (at least one entity per proxyable domain).
//! - `entity`: the one demo entity type.
//! - `effects`: what every catalog service does to a demo entity, and the query answers.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use futures::future::BoxFuture;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use homecore::config_entries::ConfigEntryUpdate;
use homecore::event::{EVENT_CORE_CONFIG_UPDATED, EventBus};
use homecore::{
    ConfigEntries, ConfigEntry, Core, CoreConfig, CoreConfigUpdate, DeviceRegistry, Event,
    FlowHandler, Integration, IntegrationType, ListenerHandle, Manifest, ServiceError, SetupError,
    Store, SupportsResponse, catalog,
};

mod config_flow;
mod effects;
mod entities;
mod entity;

#[cfg(test)]
mod tests;

pub use effects::ALARM_CODE;

use effects::SideEffect;
use entity::DemoEntityRef;

/// The integration's domain.
pub const DOMAIN: &str = "demo";
/// Major version of the entries this code writes.
pub const ENTRY_VERSION: u32 = 2;
/// Minor version of the entries this code writes.
pub const ENTRY_MINOR_VERSION: u32 = 1;
/// The domain service answering with the demo's status.
pub const SERVICE_GET_STATUS: &str = "get_status";
/// Fired on every button press, with the entity and the press count.
pub const EVENT_BUTTON_PRESSED: &str = "demo_button_pressed";
/// Fired on every notification sent, with its title and message.
pub const EVENT_MESSAGE_SENT: &str = "demo_message_sent";
/// Version of the demo's stored data.
const STORE_VERSION: u32 = 1;
/// Delay before the demo's data is written after a change (flushed at the core's final write).
pub const STORE_SAVE_DELAY: Duration = Duration::from_secs(1);
/// Most notifications kept in the store; older ones are dropped.
pub const MAX_STORED_MESSAGES: usize = 16;

/// The demo's manifest: its platforms are every proxyable domain of the catalog.
static MANIFEST: LazyLock<Manifest> = LazyLock::new(|| Manifest {
    domain: DOMAIN.to_owned(),
    name: "Demo".to_owned(),
    version: semver::Version::new(1, 0, 0),
    integration_type: IntegrationType::Hub,
    config_flow: true,
    platforms: catalog()
        .proxyable_domains()
        .into_iter()
        .map(str::to_owned)
        .collect(),
    dependencies: Vec::new(),
    iot_class: Some("calculated".to_owned()),
    single_config_entry: true,
});

/// The demo's English strings.
const STRINGS_EN: &str = include_str!("demo/strings.json");

/// One sent notification, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredMessage {
    /// Its title.
    pub title: Option<String>,
    /// Its text.
    pub message: String,
}

/// What the demo keeps in its store.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DemoData {
    /// Button presses ever.
    #[serde(default)]
    pub button_presses: u64,
    /// The last notifications, oldest first, at most [`MAX_STORED_MESSAGES`].
    #[serde(default)]
    pub messages: VecDeque<StoredMessage>,
}

/// What one loaded entry shares between its entities and its service.
pub(crate) struct DemoShared {
    /// The entry's title.
    title: String,
    /// Where events go.
    bus: EventBus,
    /// Where [`DemoData`] persists.
    store: Store,
    /// The data.
    data: Mutex<DemoData>,
    /// The entry's entities, in the order added.
    entities: Mutex<Vec<DemoEntityRef>>,
    /// The entry's options.
    options: Map<String, Value>,
    /// The home as the core describes it, kept current through `core_config_updated`.
    home: Mutex<CoreConfig>,
    /// The entry's id.
    entry_id: String,
    /// The core's config entries, where the entry's data is updated.
    config_entries: ConfigEntries,
    /// The core's device registry, where the hub's firmware version is updated.
    devices: DeviceRegistry,
}

impl DemoShared {
    fn save_later(&self) {
        let data = self.data.lock().clone();
        let value = serde_json::to_value(&data).unwrap_or(Value::Null);
        self.store
            .delay_save(move || value.clone(), STORE_SAVE_DELAY);
    }

    /// Carries out a side effect of a service on entity `entity_id`.
    pub(crate) async fn apply(&self, side_effect: SideEffect, entity_id: Option<&str>) {
        match side_effect {
            SideEffect::ButtonPressed => {
                let presses = {
                    let mut data = self.data.lock();
                    data.button_presses += 1;
                    data.button_presses
                };
                self.save_later();
                let doorbell = self
                    .entities
                    .lock()
                    .iter()
                    .find(|entity| entity.key == "event_doorbell")
                    .cloned();
                if let Some(doorbell) = doorbell {
                    doorbell.trigger("ring");
                }
                let announce = self
                    .options
                    .get("announce_presses")
                    .and_then(Value::as_bool)
                    .unwrap_or(true);
                if announce {
                    let data = json!({"entity_id": entity_id, "presses": presses});
                    self.fire(EVENT_BUTTON_PRESSED, data);
                }
            }
            SideEffect::FirmwareInstalled { version } => {
                // As a real hub integration does after a firmware update: the device shows the
                // new version, and the entry remembers it (without a reload: options unchanged).
                if let Some((_, hub)) = entities::devices()
                    .into_iter()
                    .find(|(key, _)| *key == "hub")
                {
                    let mut device = hub.to_registry(&self.entry_id);
                    device.sw_version = Some(version.clone());
                    if let Err(err) = self.devices.get_or_create(device) {
                        tracing::warn!(%err, "demo could not update the hub's firmware version");
                    }
                }
                let Some(entry) = self.config_entries.entry(&self.entry_id) else {
                    return;
                };
                let mut data = entry.data;
                data.insert("firmware".into(), json!(version));
                if let Err(err) = self.config_entries.update_entry(
                    &self.entry_id,
                    ConfigEntryUpdate {
                        data: Some(data),
                        ..ConfigEntryUpdate::default()
                    },
                ) {
                    tracing::warn!(%err, "demo could not record the firmware version");
                }
            }
            SideEffect::MessageSent { title, message } => {
                {
                    let mut data = self.data.lock();
                    data.messages.push_back(StoredMessage {
                        title: title.clone(),
                        message: message.clone(),
                    });
                    while data.messages.len() > MAX_STORED_MESSAGES {
                        data.messages.pop_front();
                    }
                }
                self.save_later();
                let data = json!({"entity_id": entity_id, "title": title, "message": message});
                self.fire(EVENT_MESSAGE_SENT, data);
            }
        }
    }

    fn fire(&self, event_type: &str, data: Value) {
        let Value::Object(data) = data else {
            return;
        };
        if let Err(err) = self.bus.fire(event_type, data, None) {
            tracing::error!(%err, event_type, "demo could not fire an event");
        }
    }

    fn status(&self) -> Value {
        let data = self.data.lock().clone();
        json!({
            "title": self.title,
            "entities": self.entities.lock().len(),
            "button_presses": data.button_presses,
            "messages": data.messages,
            "home": home_status(&self.home.lock()),
        })
    }
}

/// What `get_status` tells of the home: every field of the core configuration but its folder.
fn home_status(home: &CoreConfig) -> Value {
    json!({
        "location_name": home.location_name,
        "latitude": home.latitude,
        "longitude": home.longitude,
        "elevation": home.elevation,
        "radius": home.radius,
        "unit_system": home.unit_system,
        "temperature_unit": home.unit_system.temperature_unit(),
        "time_zone": home.time_zone,
        "language": home.language,
        "currency": home.currency,
        "country": home.country,
    })
}

/// A loaded entry.
struct LoadedEntry {
    /// Shared with its entities.
    shared: Arc<DemoShared>,
    /// Its options listener.
    listener: u64,
    /// Its core configuration listener.
    home_listener: ListenerHandle,
}

/// The demo integration. One instance serves one core.
#[derive(Default)]
pub struct DemoIntegration {
    /// Loaded entries by id.
    entries: Mutex<BTreeMap<String, LoadedEntry>>,
}

impl std::fmt::Debug for DemoIntegration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DemoIntegration")
            .field("entries", &self.entries.lock().keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The store key of `entry_id`'s data.
pub fn store_key(entry_id: &str) -> String {
    format!("{DOMAIN}.{}", entry_id.to_lowercase())
}

impl DemoIntegration {
    /// A demo with nothing loaded.
    pub fn new() -> Self {
        Self::default()
    }

    async fn setup(&self, core: &Core, entry: &ConfigEntry) -> Result<(), SetupError> {
        let store = core
            .stores()
            .store(&store_key(&entry.entry_id), STORE_VERSION, 1)
            .map_err(|err| SetupError::Failed(err.to_string()))?;
        let data: DemoData = match store.load().await {
            Ok(Some(value)) => serde_json::from_value(value).unwrap_or_default(),
            Ok(None) => DemoData::default(),
            Err(err) => return Err(SetupError::NotReady(err.to_string())),
        };
        let shared = Arc::new(DemoShared {
            title: entry.title.clone(),
            bus: core.bus().clone(),
            store,
            data: Mutex::new(data),
            entities: Mutex::new(Vec::new()),
            options: entry.options.clone(),
            home: Mutex::new(core.config()),
            entry_id: entry.entry_id.clone(),
            config_entries: core.config_entries().clone(),
            devices: core.device_registry().clone(),
        });
        let weak = Arc::downgrade(&shared);
        for domain in &MANIFEST.platforms {
            let platform = core
                .entities()
                .forward_entry_setup(entry, domain)
                .map_err(|err| SetupError::Failed(err.to_string()))?;
            let made: Vec<DemoEntityRef> = entities::entities_of(domain, &weak)
                .into_iter()
                .map(Arc::new)
                .collect();
            shared.entities.lock().extend(made.iter().cloned());
            platform
                .add_entities(made.into_iter().map(|entity| entity as homecore::EntityRef))
                .await
                .map_err(|err| SetupError::Failed(err.to_string()))?;
        }
        let status = Arc::downgrade(&shared);
        core.services()
            .register(
                DOMAIN,
                SERVICE_GET_STATUS,
                None,
                SupportsResponse::Only,
                move |_call| {
                    let status = status.upgrade().map(|shared| shared.status());
                    async move {
                        status
                            .map(Some)
                            .ok_or_else(|| ServiceError::handler("the demo entry is not loaded"))
                    }
                },
            )
            .map_err(|err| SetupError::Failed(err.to_string()))?;
        // Only new options need a reload; the demo's own data writes do not.
        let listener = core
            .config_entries()
            .reload_on_new_options(entry)
            .map_err(|err| SetupError::Failed(err.to_string()))?;
        let home = Arc::downgrade(&shared);
        let home_listener = core
            .bus()
            .listen(EVENT_CORE_CONFIG_UPDATED, move |event: Arc<Event>| {
                let home = home.upgrade();
                async move {
                    let (Some(shared), Ok(update)) = (
                        home,
                        serde_json::from_value::<CoreConfigUpdate>(Value::Object(
                            event.data.clone(),
                        )),
                    ) else {
                        return;
                    };
                    let mut home = shared.home.lock();
                    *home = update.applied_to(&home);
                }
            })
            .map_err(|err| SetupError::Failed(err.to_string()))?;
        self.entries.lock().insert(
            entry.entry_id.clone(),
            LoadedEntry {
                shared,
                listener,
                home_listener,
            },
        );
        Ok(())
    }

    async fn unload(&self, core: &Core, entry: &ConfigEntry) -> Result<(), String> {
        for domain in &MANIFEST.platforms {
            core.entities()
                .unload_platform(domain, &entry.entry_id)
                .await;
        }
        let loaded = self.entries.lock().remove(&entry.entry_id);
        if let Some(loaded) = loaded {
            core.config_entries()
                .remove_update_listener(&entry.entry_id, loaded.listener);
            loaded.home_listener.remove();
            let data = loaded.shared.data.lock().clone();
            let value = serde_json::to_value(&data).map_err(|err| err.to_string())?;
            loaded
                .shared
                .store
                .save(value)
                .await
                .map_err(|err| err.to_string())?;
        }
        if self.entries.lock().is_empty() {
            core.services().remove(DOMAIN, SERVICE_GET_STATUS);
        }
        Ok(())
    }
}

impl Integration for DemoIntegration {
    fn manifest(&self) -> &Manifest {
        &MANIFEST
    }

    fn config_flow(&self) -> Option<Box<dyn FlowHandler>> {
        Some(Box::new(config_flow::DemoConfigFlow))
    }

    fn options_flow(&self, entry: &ConfigEntry) -> Option<Box<dyn FlowHandler>> {
        Some(Box::new(config_flow::DemoOptionsFlow::new(entry)))
    }

    fn entry_version(&self) -> (u32, u32) {
        (ENTRY_VERSION, ENTRY_MINOR_VERSION)
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

    /// Version 1 entries held only a name; version 2 adds the mode and the advanced section.
    fn migrate_entry<'a>(
        &'a self,
        core: &'a Core,
        entry: &'a ConfigEntry,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            if entry.version != 1 {
                return Err(format!("cannot migrate from version {}", entry.version));
            }
            let mut data = entry.data.clone();
            data.entry("name".to_owned())
                .or_insert_with(|| json!(entry.title));
            data.entry("mode".to_owned())
                .or_insert_with(|| json!("standard"));
            data.entry("advanced".to_owned())
                .or_insert_with(|| json!({"update_interval": 30, "debug": false}));
            core.config_entries()
                .update_entry(
                    &entry.entry_id,
                    ConfigEntryUpdate {
                        data: Some(data),
                        version: Some(ENTRY_VERSION),
                        minor_version: Some(ENTRY_MINOR_VERSION),
                        ..ConfigEntryUpdate::default()
                    },
                )
                .map(|_| ())
                .map_err(|err| err.to_string())
        })
    }

    fn remove_entry<'a>(&'a self, core: &'a Core, entry: &'a ConfigEntry) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if let Ok(store) = core
                .stores()
                .store(&store_key(&entry.entry_id), STORE_VERSION, 1)
                && let Err(err) = store.remove().await
            {
                tracing::warn!(%err, "could not remove the demo's data");
            }
        })
    }

    fn translations(&self, language: &str) -> Option<Map<String, Value>> {
        crate::english_strings(language, STRINGS_EN)
    }
}
