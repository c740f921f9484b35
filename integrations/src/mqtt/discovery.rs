//! Home Assistant MQTT discovery: configs published under
//! `<prefix>/<component>/[<node_id>/]<object_id>/config` become entities, a changed config
//! changes its entity in place, an empty one removes it. Configs are processed one at a time,
//! in the order the broker delivered them, by one task per entry; a bad config is logged
//! (rate-limited) and skipped, never the end of the entry.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::{Map, Value};
use tokio::sync::mpsc;

use homecore::{Core, Entity as _, EntityPlatform};

use super::abbreviations;
use super::connection::{Connection, Message};
use super::entity::{Common, MqttEntity};
use super::platform::{self, COMPONENTS};
use super::topic::parse_discovery_topic;

/// Largest discovery config read, in bytes (real configs are under 4 KiB).
pub const MAX_DISCOVERY_PAYLOAD_BYTES: usize = 64 * 1024;
/// Most entities one entry discovers: a bound on what a broker's retained configs can make the
/// hub hold, above the largest real installations (a few thousand entities), below what a
/// sandbox group may mirror on main.
pub const MAX_DISCOVERED_ENTITIES: usize = 5_000;
/// Discovery configs received and not processed yet; a full queue makes the connection wait
/// (the broker then holds the rest), so memory stays bounded whatever is published.
pub const DISCOVERY_QUEUE: usize = 256;
/// Warnings about refused configs logged per [`WARNING_WINDOW`]; the rest are counted.
pub const WARNINGS_PER_WINDOW: u32 = 20;
/// The window of [`WARNINGS_PER_WINDOW`].
pub const WARNING_WINDOW: Duration = Duration::from_secs(60);

/// A discovered entity's key: its component and discovery id.
pub(crate) type DiscoveryKey = (&'static str, String);

/// One discovered entity.
pub(crate) struct Discovered {
    /// The entity.
    pub(crate) entity: Arc<MqttEntity>,
    /// A fingerprint of its expanded config: an identical config published again changes
    /// nothing (a hash, not the config: thousands of configs of up to 64 KiB are not kept).
    fingerprint: u64,
}

/// What an entry discovered, shared with whoever must reach every discovered entity.
pub(crate) type DiscoveredEntities = Arc<Mutex<HashMap<DiscoveryKey, Discovered>>>;

/// A config's fingerprint (a fixed-key hash of its JSON, the same in every process).
fn fingerprint(config: &Map<String, Value>) -> u64 {
    use std::hash::{Hash as _, Hasher as _};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(config)
        .unwrap_or_default()
        .hash(&mut hasher);
    hasher.finish()
}

/// A rate limit on warnings about what devices publish.
struct Warnings {
    window_start: Instant,
    logged: u32,
    suppressed: u64,
}

impl Warnings {
    fn new() -> Self {
        Self {
            window_start: Instant::now(),
            logged: 0,
            suppressed: 0,
        }
    }

    fn warn(&mut self, topic: &str, reason: &str) {
        if self.window_start.elapsed() >= WARNING_WINDOW {
            if self.suppressed > 0 {
                tracing::warn!(
                    suppressed = self.suppressed,
                    "more MQTT discovery configs were refused"
                );
            }
            self.window_start = Instant::now();
            self.logged = 0;
            self.suppressed = 0;
        }
        if self.logged < WARNINGS_PER_WINDOW {
            self.logged += 1;
            let topic: String = topic.chars().take(256).collect();
            tracing::warn!(%topic, %reason, "MQTT discovery config refused");
        } else {
            self.suppressed += 1;
        }
    }
}

/// One entry's discovery.
pub(crate) struct Discovery {
    core: Core,
    connection: Arc<Connection>,
    platforms: HashMap<&'static str, EntityPlatform>,
    prefix: String,
    discovered: DiscoveredEntities,
    /// The unique ids in use, with the config holding each.
    unique_ids: HashMap<String, DiscoveryKey>,
    warnings: Warnings,
}

impl Discovery {
    pub(crate) fn new(
        core: Core,
        connection: Arc<Connection>,
        platforms: HashMap<&'static str, EntityPlatform>,
        prefix: String,
        discovered: DiscoveredEntities,
    ) -> Self {
        Self {
            core,
            connection,
            platforms,
            prefix,
            discovered,
            unique_ids: HashMap::new(),
            warnings: Warnings::new(),
        }
    }

    /// Subscribes to the discovery topics; what [`Discovery::run`] reads.
    pub(crate) fn subscribe(&self) -> mpsc::Receiver<Message> {
        let (sender, receiver) = mpsc::channel(DISCOVERY_QUEUE);
        for filter in [
            format!("{}/+/+/config", self.prefix),
            format!("{}/+/+/+/config", self.prefix),
        ] {
            self.connection.subscribe_queue(&filter, sender.clone());
        }
        receiver
    }

    /// Processes configs until the connection closes.
    pub(crate) async fn run(mut self, mut receiver: mpsc::Receiver<Message>) {
        while let Some(message) = receiver.recv().await {
            self.handle(message).await;
        }
    }

    /// Processes one message on a discovery topic.
    pub(crate) async fn handle(&mut self, message: Message) {
        let Some(topic) = parse_discovery_topic(&self.prefix, &message.topic) else {
            return;
        };
        let Some(component) = COMPONENTS
            .iter()
            .copied()
            .find(|component| *component == topic.component)
        else {
            self.warnings.warn(
                &message.topic,
                &format!("component {:?} is not supported", topic.component),
            );
            return;
        };
        let key = (component, topic.discovery_id());
        if message.payload.is_empty() {
            self.remove(&key, true).await;
            return;
        }
        if message.payload.len() > MAX_DISCOVERY_PAYLOAD_BYTES {
            self.warnings.warn(
                &message.topic,
                &format!("larger than {MAX_DISCOVERY_PAYLOAD_BYTES} bytes"),
            );
            return;
        }
        let mut config = match serde_json::from_slice::<Value>(&message.payload) {
            Ok(Value::Object(config)) => config,
            Ok(_) => {
                self.warnings.warn(&message.topic, "not a JSON object");
                return;
            }
            Err(error) => {
                self.warnings
                    .warn(&message.topic, &format!("not JSON: {error}"));
                return;
            }
        };
        if let Err(error) = abbreviations::expand(&mut config) {
            self.warnings.warn(&message.topic, &error.to_string());
            return;
        }
        let existing = self.discovered.lock().get(&key).map(|found| {
            (
                Arc::clone(&found.entity),
                found.fingerprint == fingerprint(&config),
            )
        });
        if let Some((_, true)) = existing {
            return;
        }
        let made = Common::from_config(component, &config).and_then(|common| {
            platform::from_config(component, &config).map(|platform| (common, platform))
        });
        let (common, platform) = match made {
            Ok(made) => made,
            Err(error) => {
                // A bad update leaves the entity as it was configured before.
                self.warnings.warn(&message.topic, &error.to_string());
                return;
            }
        };
        match existing {
            Some((entity, _)) => self.update(&key, entity, common, platform, config).await,
            None => {
                let entity = MqttEntity::new(Arc::clone(&self.connection), common, platform);
                self.add(&message.topic, key, component, entity, config)
                    .await;
            }
        }
    }

    async fn update(
        &mut self,
        key: &DiscoveryKey,
        entity: Arc<MqttEntity>,
        common: Common,
        platform: Box<dyn platform::Platform>,
        config: Map<String, Value>,
    ) {
        let fresh = MqttEntity::new(Arc::clone(&self.connection), common, platform);
        fresh.replay(entity.heard());
        let topic = format!("{} {}", key.0, key.1);
        if fresh.unique_id() != entity.unique_id() {
            // Another identity: the old entity and its registry entry go, a new one comes.
            self.remove(key, true).await;
            self.add(&topic, key.clone(), key.0, fresh, config).await;
            return;
        }
        // Without a unique id a new entity would get a new id from its new name: it changes in
        // place (Home Assistant keeps the id too).
        if fresh.unique_id().is_some() && fresh.info() != entity.info() {
            // What it says about itself changed (name, unit, device class, features, device):
            // it is added again, under the same entity id (its registry entry stays), so every
            // view of it (a sandbox's main included) is described anew; what it heard carries over.
            self.remove(key, false).await;
            self.add(&topic, key.clone(), key.0, fresh, config).await;
            return;
        }
        entity.take_config_of(fresh);
        if let Some(found) = self.discovered.lock().get_mut(key) {
            found.fingerprint = fingerprint(&config);
        }
    }

    async fn add(
        &mut self,
        topic: &str,
        key: DiscoveryKey,
        component: &'static str,
        entity: Arc<MqttEntity>,
        config: Map<String, Value>,
    ) {
        let refusal = {
            let discovered = self.discovered.lock();
            if discovered.len() >= MAX_DISCOVERED_ENTITIES {
                Some(format!(
                    "the entry already has {MAX_DISCOVERED_ENTITIES} discovered entities"
                ))
            } else {
                entity
                    .unique_id()
                    .filter(|unique_id| self.unique_ids.contains_key(unique_id))
                    .map(|unique_id| {
                        format!("unique_id {unique_id:?} is already used by another config")
                    })
            }
        };
        if let Some(reason) = refusal {
            self.warnings.warn(topic, &reason);
            return;
        }
        let Some(platform_slot) = self.platforms.get(component) else {
            return;
        };
        entity.subscribe();
        match platform_slot
            .add_entity(Arc::clone(&entity) as homecore::EntityRef)
            .await
        {
            Ok(added) => {
                if added.is_none() {
                    // Registered disabled: it follows nothing until a person enables it (and
                    // the entry reloads); its config is kept for an update or removal.
                    entity.unsubscribe();
                }
                if let Some(unique_id) = entity.unique_id() {
                    self.unique_ids.insert(unique_id, key.clone());
                }
                self.discovered.lock().insert(
                    key,
                    Discovered {
                        entity,
                        fingerprint: fingerprint(&config),
                    },
                );
            }
            Err(error) => {
                entity.unsubscribe();
                self.warnings.warn(topic, &error.to_string());
            }
        }
    }

    /// Removes a discovered entity; with `forget`, also its registry entry and its device when
    /// it was the last entity of it (Home Assistant's behaviour for an empty config).
    async fn remove(&mut self, key: &DiscoveryKey, forget: bool) {
        let Some(found) = self.discovered.lock().remove(key) else {
            return;
        };
        let unique_id = found.entity.unique_id();
        if let Some(unique_id) = &unique_id {
            self.unique_ids.remove(unique_id);
        }
        found.entity.unsubscribe();
        let live = found.entity.entity_id();
        if let Some(entity_id) = &live
            && let Some(platform_slot) = self.platforms.get(key.0)
            && let Err(error) = platform_slot.remove_entity(entity_id).await
        {
            tracing::debug!(%entity_id, %error, "a removed MQTT entity was already gone");
        }
        if !forget {
            return;
        }
        let registries = self.core.registries();
        // A disabled entity (`enabled_by_default: false`) was registered but never added.
        let registered = live.or_else(|| {
            unique_id.and_then(|unique_id| {
                registries
                    .entities
                    .entity_id_for(key.0, super::DOMAIN, &unique_id)
            })
        });
        if let Some(entity_id) = registered
            && let Some(entry) = registries.entities.remove(&entity_id)
            && let Some(device_id) = entry.device_id
            && registries
                .entities
                .entries_for_device(&device_id)
                .is_empty()
        {
            registries.devices.remove(&device_id);
        }
    }
}
