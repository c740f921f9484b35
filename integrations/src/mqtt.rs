//! The mqtt integration: one connection per entry to an MQTT broker, Home Assistant's MQTT
//! discovery turning the configs devices publish into entities, and the `mqtt.publish` service.
//!
//! - `config`: the entry's settings (broker, credentials, TLS, discovery, birth and will).
//! - `config_flow`: the broker form, tested by connecting; the options form.
//! - `connection`: the long-lived session: reconnection with backoff, subscriptions routed to
//!   entities, resubscription after each reconnection.
//! - `discovery`: discovery configs in, entities out (added, changed in place, removed).
//! - `entity`: what every discovered entity shares: name, device, availability, JSON attributes.
//! - `platform`: each component's behaviour (`light`, `switch`, `sensor`, ...) behind one trait,
//!   and the bounded reading of a config's fields.
//! - `abbreviations`, `topic`, `value_template`: pure parsing of what devices publish.
//!
//! Everything received from the broker is untrusted input: sizes, counts and nesting are bounded
//! by the constants of each module, bad configs and messages are logged (rate-limited) and
//! skipped. See `docs/MQTT.md` for what is supported.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use futures::future::BoxFuture;
use parking_lot::Mutex;
use rumqttc::QoS;
use serde_json::{Map, Value, json};
use tokio::task::JoinHandle;

use homecore::{
    ConfigEntry, Core, Field, FieldType, FlowHandler, Integration, IntegrationType, Manifest,
    Schema, ServiceError, SetupError, SupportsResponse,
};

pub mod abbreviations;
pub mod config;
mod config_flow;
pub mod connection;
pub mod discovery;
pub mod entity;
pub mod platform;
pub mod topic;
pub mod value_template;

#[cfg(test)]
mod tests;

pub use config::EntryConfig;
pub use connection::{ConnectError, Connection};

use discovery::{DiscoveredEntities, Discovery};

/// The integration's domain.
pub const DOMAIN: &str = "mqtt";
/// The service publishing a message.
pub const SERVICE_PUBLISH: &str = "publish";

/// The manifest: every component discovery knows.
static MANIFEST: LazyLock<Manifest> = LazyLock::new(|| Manifest {
    domain: DOMAIN.to_owned(),
    name: "MQTT".to_owned(),
    version: semver::Version::new(1, 0, 0),
    integration_type: IntegrationType::Service,
    config_flow: true,
    platforms: platform::COMPONENTS
        .iter()
        .map(|component| (*component).to_owned())
        .collect(),
    dependencies: Vec::new(),
    iot_class: Some("local_push".to_owned()),
    single_config_entry: true,
});

/// The English strings.
const STRINGS_EN: &str = include_str!("mqtt/strings.json");

/// A loaded entry.
struct LoadedEntry {
    connection: Arc<Connection>,
    /// Discovery, when on.
    discovery: Option<JoinHandle<()>>,
    /// Rewrites every entity's state when the connection goes down or comes back.
    availability: JoinHandle<()>,
    /// The entry's update listener.
    listener: u64,
}

/// The loaded entries, by entry id (at most one: the integration has a single entry).
type LoadedEntries = Arc<Mutex<HashMap<String, LoadedEntry>>>;

/// The mqtt integration. One instance serves one core.
#[derive(Default)]
pub struct MqttIntegration {
    /// Shared with the publish service, which holds it weakly.
    entries: LoadedEntries,
}

impl std::fmt::Debug for MqttIntegration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttIntegration").finish()
    }
}

/// `mqtt.publish`: checks the topic, publishes through the loaded entry's connection.
async fn publish(entries: &LoadedEntries, data: Map<String, Value>) -> Result<(), ServiceError> {
    let topic = data
        .get("topic")
        .and_then(Value::as_str)
        .unwrap_or_default();
    topic::check_topic(topic)
        .map_err(|err| ServiceError::handler(format!("invalid topic: {err}")))?;
    let payload = match data.get("payload") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(text)) => text.clone(),
        Some(other) => other.to_string(),
    };
    let qos = qos_of(data.get("qos").and_then(Value::as_i64).unwrap_or(0));
    let retain = data.get("retain").and_then(Value::as_bool).unwrap_or(false);
    let connection = entries
        .lock()
        .values()
        .next()
        .map(|loaded| Arc::clone(&loaded.connection))
        .ok_or_else(|| ServiceError::handler("no MQTT broker is set up"))?;
    connection
        .publish(topic, payload, qos, retain)
        .await
        .map_err(|err| ServiceError::handler(err.to_string()))
}

/// The schema of `mqtt.publish`.
fn publish_schema() -> Schema {
    Schema::new(vec![
        Field::required("topic", FieldType::string()),
        Field::optional("payload", FieldType::Any),
        Field::optional("qos", FieldType::integer_range(0, 2)).with_default(json!(0)),
        Field::optional("retain", FieldType::Boolean).with_default(json!(false)),
    ])
}

fn qos_of(level: i64) -> QoS {
    match level {
        2 => QoS::ExactlyOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::AtMostOnce,
    }
}

impl MqttIntegration {
    /// A fresh instance.
    pub fn new() -> Self {
        Self::default()
    }

    async fn setup(&self, core: &Core, entry: &ConfigEntry) -> Result<(), SetupError> {
        let config = EntryConfig::from_entry(&entry.data, &entry.options)
            .map_err(|err| SetupError::Failed(format!("invalid mqtt entry: {err}")))?;
        let connection = Connection::connect(&config)
            .await
            .map_err(|err| match err {
                ConnectError::Unreachable { .. } => SetupError::NotReady(err.to_string()),
                other => SetupError::Failed(other.to_string()),
            })?;
        let connection = Arc::new(connection);
        let mut platforms = HashMap::new();
        for component in platform::COMPONENTS {
            let slot = core
                .entities()
                .forward_entry_setup(entry, component)
                .map_err(|err| SetupError::Failed(err.to_string()))?;
            platforms.insert(component, slot);
        }
        let discovered: DiscoveredEntities = Arc::default();
        let discovery = config.discovery.then(|| {
            let discovery = Discovery::new(
                core.clone(),
                Arc::clone(&connection),
                platforms,
                config.discovery_prefix.clone(),
                Arc::clone(&discovered),
            );
            let configs = discovery.subscribe();
            tokio::spawn(discovery.run(configs))
        });
        // Discovery listens now: the birth message may make devices republish.
        connection.announce();
        let availability = tokio::spawn(follow_availability(
            connection.watch_connected(),
            Arc::clone(&discovered),
        ));
        if !core.services().has_service(DOMAIN, SERVICE_PUBLISH) {
            let entries = Arc::downgrade(&self.entries);
            core.services()
                .register(
                    DOMAIN,
                    SERVICE_PUBLISH,
                    Some(publish_schema()),
                    SupportsResponse::None,
                    move |call| {
                        let entries = entries.upgrade();
                        async move {
                            let entries = entries
                                .ok_or_else(|| ServiceError::handler("mqtt is not loaded"))?;
                            publish(&entries, call.data).await.map(|()| None)
                        }
                    },
                )
                .map_err(|err| SetupError::Failed(err.to_string()))?;
        }
        let listener = core
            .config_entries()
            .reload_on_new_options(entry)
            .map_err(|err| SetupError::Failed(err.to_string()))?;
        self.entries.lock().insert(
            entry.entry_id.clone(),
            LoadedEntry {
                connection,
                discovery,
                availability,
                listener,
            },
        );
        Ok(())
    }

    async fn unload(&self, core: &Core, entry: &ConfigEntry) -> Result<(), String> {
        let loaded = self.entries.lock().remove(&entry.entry_id);
        if let Some(loaded) = loaded {
            if let Some(discovery) = &loaded.discovery {
                discovery.abort();
            }
            loaded.availability.abort();
            loaded.connection.close().await;
            core.config_entries()
                .remove_update_listener(&entry.entry_id, loaded.listener);
        }
        if self.entries.lock().is_empty() {
            core.services().remove(DOMAIN, SERVICE_PUBLISH);
        }
        Ok(())
    }
}

/// Rewrites every discovered entity's state each time the connection goes down or comes back:
/// while disconnected every MQTT entity is unavailable.
async fn follow_availability(
    mut connected: tokio::sync::watch::Receiver<bool>,
    discovered: DiscoveredEntities,
) {
    while connected.changed().await.is_ok() {
        let entities: Vec<_> = discovered
            .lock()
            .values()
            .map(|found| Arc::clone(&found.entity))
            .collect();
        for entity in entities {
            entity.write_state();
        }
    }
}

impl Integration for MqttIntegration {
    fn manifest(&self) -> &Manifest {
        &MANIFEST
    }

    fn config_flow(&self) -> Option<Box<dyn FlowHandler>> {
        Some(Box::new(config_flow::MqttConfigFlow))
    }

    fn options_flow(&self, entry: &ConfigEntry) -> Option<Box<dyn FlowHandler>> {
        Some(Box::new(config_flow::MqttOptionsFlow::new(entry)))
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

    fn translations(&self, language: &str) -> Option<Map<String, Value>> {
        crate::english_strings(language, STRINGS_EN)
    }
}
