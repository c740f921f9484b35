//! A discovered MQTT entity: what every component shares (name, device, availability, JSON
//! attributes, QoS) around the component's own behaviour ([`Platform`]), wired to the
//! connection: its topics' messages update it, its service calls publish.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use futures::future::BoxFuture;
use parking_lot::Mutex;
use rumqttc::QoS;
use serde_json::{Map, Value};

use homecore::entity_registry::EntityCategory;
use homecore::{
    Entity, EntityDeviceInfo, EntityHandle, EntityInfo, EntityServiceCall, ServiceError,
};

use super::DOMAIN;
use super::connection::{Connection, Handler, Message};
use super::platform::{ConfigError, Fields, Platform};
use super::value_template::ValueTemplate;

/// Most availability topics one entity may follow.
pub const MAX_AVAILABILITY_TOPICS: usize = 16;
/// Most attributes taken from a JSON attributes message.
pub const MAX_JSON_ATTRIBUTES: usize = 64;
/// Largest JSON attributes message read, in bytes.
pub const MAX_JSON_ATTRIBUTES_BYTES: usize = 16 * 1024;
/// Most payload bytes an entity keeps (its last message per topic) for an update in place; what
/// does not fit is heard again only when the device republishes.
pub const MAX_REPLAYED_PAYLOAD_BYTES: usize = 16 * 1024;
/// Most identifiers or connections of a discovered device.
pub const MAX_DEVICE_KEYS: usize = 16;

/// Attributes a JSON attributes message may not set: they are the entity's own.
const BLOCKED_ATTRIBUTES: [&str; 12] = [
    "assumed_state",
    "available",
    "device_class",
    "entity_picture",
    "friendly_name",
    "icon",
    "supported_features",
    "unit_of_measurement",
    "state_class",
    "options",
    "hidden",
    "restored",
];

/// One availability topic.
#[derive(Debug, Clone)]
struct Availability {
    topic: String,
    payload_available: String,
    payload_not_available: String,
    template: Option<ValueTemplate>,
}

/// How several availability topics combine (Home Assistant's `availability_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AvailabilityMode {
    /// Available when every topic says so.
    All,
    /// Available when one topic says so.
    Any,
    /// The last message on any of them decides.
    Latest,
}

/// What every discovered component shares.
pub(crate) struct Common {
    /// Its name; `None` names the entity after its device.
    name: Option<String>,
    unique_id: Option<String>,
    icon: Option<String>,
    entity_category: Option<EntityCategory>,
    enabled_by_default: bool,
    device: Option<EntityDeviceInfo>,
    availability: Vec<Availability>,
    availability_mode: AvailabilityMode,
    json_attributes_topic: Option<String>,
    json_attributes_template: Option<ValueTemplate>,
    /// QoS of its subscriptions and commands.
    pub(crate) qos: QoS,
    /// Whether its commands are retained.
    pub(crate) retain: bool,
}

/// The name a component gets when its config names none (Home Assistant's defaults).
fn default_name(domain: &str) -> &'static str {
    match domain {
        "binary_sensor" => "MQTT Binary sensor",
        "button" => "MQTT Button",
        "climate" => "MQTT HVAC",
        "cover" => "MQTT Cover",
        "fan" => "MQTT Fan",
        "light" => "MQTT Light",
        "lock" => "MQTT Lock",
        "number" => "MQTT Number",
        "select" => "MQTT Select",
        "sensor" => "MQTT Sensor",
        "switch" => "MQTT Switch",
        _ => "MQTT Entity",
    }
}

fn device_keys(value: Option<&Value>, field: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let items: Vec<&Value> = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items.iter().collect(),
        Some(single) => vec![single],
    };
    if items.len() > MAX_DEVICE_KEYS {
        return Err(ConfigError::invalid(
            field,
            format!("more than {MAX_DEVICE_KEYS} items"),
        ));
    }
    items
        .into_iter()
        .map(|item| match (field, item) {
            ("device.identifiers", Value::String(id)) if id.len() <= 255 => {
                Ok((DOMAIN.to_owned(), id.clone()))
            }
            ("device.identifiers", Value::Number(id)) => Ok((DOMAIN.to_owned(), id.to_string())),
            ("device.connections", Value::Array(pair)) => match pair.as_slice() {
                [Value::String(kind), Value::String(id)] if kind.len() <= 64 && id.len() <= 255 => {
                    // Home Assistant lowercases MAC addresses so both spellings merge.
                    let id = if kind == "mac" {
                        id.to_lowercase()
                    } else {
                        id.clone()
                    };
                    Ok((kind.clone(), id))
                }
                _ => Err(ConfigError::invalid(
                    field,
                    "expected [type, value] pairs of texts",
                )),
            },
            _ => Err(ConfigError::invalid(field, "unexpected item")),
        })
        .collect()
}

fn device_of(fields: &Fields<'_>) -> Result<Option<EntityDeviceInfo>, ConfigError> {
    let Some(device) = fields.raw("device") else {
        return Ok(None);
    };
    let Value::Object(device) = device else {
        return Err(ConfigError::invalid("device", "expected an object"));
    };
    let block = Fields::new(device);
    let identifiers = device_keys(device.get("identifiers"), "device.identifiers")?;
    let connections = device_keys(device.get("connections"), "device.connections")?;
    if identifiers.is_empty() && connections.is_empty() {
        return Err(ConfigError::invalid(
            "device",
            "needs identifiers or connections",
        ));
    }
    let text = |key: &str| {
        block
            .text(key)
            .map_err(|err| ConfigError::invalid(&format!("device.{key}"), err.to_string()))
    };
    let via_device = text("via_device")?.map(|id| (DOMAIN.to_owned(), id));
    Ok(Some(EntityDeviceInfo {
        identifiers,
        connections,
        name: text("name")?,
        manufacturer: text("manufacturer")?,
        model: text("model")?,
        model_id: text("model_id")?,
        sw_version: text("sw_version")?,
        hw_version: text("hw_version")?,
        serial_number: text("serial_number")?,
        via_device,
        entry_type: None,
        configuration_url: block
            .payload("configuration_url")?
            .filter(|url| url.starts_with("http://") || url.starts_with("https://")),
        suggested_area: text("suggested_area")?,
    }))
}

fn availability_of(fields: &Fields<'_>) -> Result<Vec<Availability>, ConfigError> {
    let default_available = fields.payload_or("payload_available", "online")?;
    let default_not_available = fields.payload_or("payload_not_available", "offline")?;
    let mut topics = Vec::new();
    if let Some(topic) = fields.topic("availability_topic")? {
        topics.push(Availability {
            topic,
            payload_available: default_available.clone(),
            payload_not_available: default_not_available.clone(),
            template: fields.template("availability_template")?,
        });
    }
    let items: Vec<&Value> = match fields.raw("availability") {
        None => Vec::new(),
        Some(Value::Array(items)) => items.iter().collect(),
        // Home Assistant takes one availability object as a list of one.
        Some(single @ Value::Object(_)) => vec![single],
        Some(_) => return Err(ConfigError::invalid("availability", "expected a list")),
    };
    if items.len() > MAX_AVAILABILITY_TOPICS {
        return Err(ConfigError::invalid(
            "availability",
            format!("more than {MAX_AVAILABILITY_TOPICS} topics"),
        ));
    }
    for item in items {
        let Value::Object(item) = item else {
            return Err(ConfigError::invalid("availability", "expected objects"));
        };
        let item = Fields::new(item);
        topics.push(Availability {
            topic: item.required_topic("topic")?,
            payload_available: item.payload_or("payload_available", &default_available)?,
            payload_not_available: item
                .payload_or("payload_not_available", &default_not_available)?,
            template: item.template("value_template")?,
        });
    }
    if topics.len() > MAX_AVAILABILITY_TOPICS {
        return Err(ConfigError::invalid(
            "availability",
            format!("more than {MAX_AVAILABILITY_TOPICS} topics"),
        ));
    }
    Ok(topics)
}

impl Common {
    pub(crate) fn from_config(
        domain: &str,
        config: &Map<String, Value>,
    ) -> Result<Self, ConfigError> {
        let fields = Fields::new(config);
        // An explicit `null` name names the entity after its device; an absent one gets the
        // component's default name.
        let name = if fields.has("name") {
            fields.text("name")?
        } else {
            Some(default_name(domain).to_owned())
        };
        let entity_category = match fields.text("entity_category")?.as_deref() {
            None => None,
            Some("config") => Some(EntityCategory::Config),
            Some("diagnostic") => Some(EntityCategory::Diagnostic),
            Some(other) => {
                return Err(ConfigError::invalid(
                    "entity_category",
                    format!("{other:?} is neither config nor diagnostic"),
                ));
            }
        };
        let qos = match fields.number_or("qos", 0.0)? {
            0.0 => QoS::AtMostOnce,
            1.0 => QoS::AtLeastOnce,
            2.0 => QoS::ExactlyOnce,
            other => {
                return Err(ConfigError::invalid(
                    "qos",
                    format!("{other} is not 0, 1 or 2"),
                ));
            }
        };
        let availability_mode = match fields.text("availability_mode")?.as_deref() {
            None | Some("latest") => AvailabilityMode::Latest,
            Some("all") => AvailabilityMode::All,
            Some("any") => AvailabilityMode::Any,
            Some(other) => {
                return Err(ConfigError::invalid(
                    "availability_mode",
                    format!("{other:?} is not all, any or latest"),
                ));
            }
        };
        Ok(Self {
            name,
            unique_id: fields.text("unique_id")?,
            icon: fields.text("icon")?,
            entity_category,
            enabled_by_default: fields.flag_or("enabled_by_default", true)?,
            device: device_of(&fields)?,
            availability: availability_of(&fields)?,
            availability_mode,
            json_attributes_topic: fields.topic("json_attributes_topic")?,
            json_attributes_template: fields.template("json_attributes_template")?,
            qos,
            retain: fields.flag_or("retain", false)?,
        })
    }
}

/// Where a received message goes.
#[derive(Debug, Clone, Copy)]
enum Route {
    /// To the component, with its role.
    Platform(&'static str),
    /// The availability topic at this index.
    Availability(usize),
    /// The JSON attributes topic.
    JsonAttributes,
}

/// The live, changing part of an entity.
struct Live {
    common: Common,
    platform: Box<dyn Platform>,
    /// The last availability payload per availability topic (`None`: nothing heard yet).
    available: Vec<Option<bool>>,
    /// The availability heard last (for the `latest` mode).
    latest: Option<bool>,
    json_attributes: Map<String, Value>,
    /// The last payload heard on each topic (up to [`MAX_REPLAYED_PAYLOAD_BYTES`]), replayed
    /// into a new config so an update in place does not blank what the entity showed.
    heard: HashMap<String, String>,
}

impl Live {
    fn is_available(&self) -> bool {
        if self.common.availability.is_empty() {
            return true;
        }
        match self.common.availability_mode {
            AvailabilityMode::Latest => self.latest == Some(true),
            AvailabilityMode::All => self.available.iter().all(|seen| *seen == Some(true)),
            AvailabilityMode::Any => self.available.contains(&Some(true)),
        }
    }

    /// Applies a message; whether anything shown changed.
    fn apply(&mut self, route: Route, payload: &str) -> bool {
        match route {
            Route::Platform(role) => self.platform.on_message(role, payload),
            Route::Availability(index) => {
                let Some(availability) = self.common.availability.get(index) else {
                    return false;
                };
                let Some(value) =
                    super::platform::render_received(availability.template.as_ref(), payload)
                else {
                    return false;
                };
                let now = if value == availability.payload_available {
                    true
                } else if value == availability.payload_not_available {
                    false
                } else {
                    return false;
                };
                let before = self.is_available();
                self.available[index] = Some(now);
                self.latest = Some(now);
                before != self.is_available()
            }
            Route::JsonAttributes => {
                if payload.len() > MAX_JSON_ATTRIBUTES_BYTES {
                    return false;
                }
                let Some(text) = super::platform::render_received(
                    self.common.json_attributes_template.as_ref(),
                    payload,
                ) else {
                    return false;
                };
                let Ok(Value::Object(attributes)) = serde_json::from_str::<Value>(&text) else {
                    return false;
                };
                let attributes: Map<String, Value> = attributes
                    .into_iter()
                    .filter(|(key, _)| !BLOCKED_ATTRIBUTES.contains(&key.as_str()))
                    .take(MAX_JSON_ATTRIBUTES)
                    .collect();
                let changed = attributes != self.json_attributes;
                self.json_attributes = attributes;
                changed
            }
        }
    }
}

/// A discovered entity.
pub(crate) struct MqttEntity {
    connection: Arc<Connection>,
    live: Mutex<Live>,
    handle: Mutex<Option<EntityHandle>>,
    /// The connection's subscriptions of this entity.
    subscriptions: Mutex<Vec<u64>>,
}

impl MqttEntity {
    pub(crate) fn new(
        connection: Arc<Connection>,
        common: Common,
        platform: Box<dyn Platform>,
    ) -> Arc<Self> {
        let available = vec![None; common.availability.len()];
        Arc::new(Self {
            connection,
            live: Mutex::new(Live {
                common,
                platform,
                available,
                latest: None,
                json_attributes: Map::new(),
                heard: HashMap::new(),
            }),
            handle: Mutex::new(None),
            subscriptions: Mutex::new(Vec::new()),
        })
    }

    /// Every topic the entity listens to, with where its messages go.
    fn routes(&self) -> Vec<(String, Route)> {
        let live = self.live.lock();
        let mut routes: Vec<(String, Route)> = live
            .platform
            .topics()
            .into_iter()
            .map(|(role, topic)| (topic, Route::Platform(role)))
            .collect();
        routes.extend(
            live.common
                .availability
                .iter()
                .enumerate()
                .map(|(index, availability)| {
                    (availability.topic.clone(), Route::Availability(index))
                }),
        );
        if let Some(topic) = &live.common.json_attributes_topic {
            routes.push((topic.clone(), Route::JsonAttributes));
        }
        routes
    }

    /// Subscribes to the entity's topics (retained states arrive right after).
    pub(crate) fn subscribe(self: &Arc<Self>) {
        for (topic, route) in self.routes() {
            let entity: Weak<Self> = Arc::downgrade(self);
            let handler: Handler = Arc::new(move |message: &Message| {
                if let Some(entity) = entity.upgrade() {
                    entity.received(route, message);
                }
            });
            let id = self.connection.subscribe(&topic, handler);
            self.subscriptions.lock().push(id);
        }
    }

    /// Ends the entity's subscriptions.
    pub(crate) fn unsubscribe(&self) {
        let ids = std::mem::take(&mut *self.subscriptions.lock());
        for id in ids {
            self.connection.unsubscribe(id);
        }
    }

    /// What the entity last heard on each of its topics.
    pub(crate) fn heard(&self) -> HashMap<String, String> {
        self.live.lock().heard.clone()
    }

    /// Applies what an earlier config of the same entity heard on the topics this one follows
    /// (so a changed config does not blank what the entity shows while the broker resends).
    pub(crate) fn replay(&self, heard: HashMap<String, String>) {
        let routes = self.routes();
        let mut live = self.live.lock();
        for (topic, route) in &routes {
            if let Some(payload) = heard.get(topic) {
                live.apply(*route, payload);
            }
        }
        live.heard = heard
            .into_iter()
            .filter(|(topic, _)| routes.iter().any(|(kept, _)| kept == topic))
            .collect();
    }

    /// Takes `fresh`'s config in place (same component, discovery id and description): the
    /// entity keeps its id and registration; its subscriptions follow the new topics.
    pub(crate) fn take_config_of(self: &Arc<Self>, fresh: Arc<Self>) {
        let Ok(fresh) = Arc::try_unwrap(fresh) else {
            return;
        };
        self.unsubscribe();
        let fresh = fresh.live.into_inner();
        *self.live.lock() = fresh;
        self.subscribe();
        self.write_state();
    }

    fn received(&self, route: Route, message: &Message) {
        let payload = message.text();
        let changed = {
            let mut live = self.live.lock();
            let changed = live.apply(route, &payload);
            live.heard.remove(&message.topic);
            let kept: usize = live.heard.values().map(String::len).sum();
            if kept + payload.len() <= MAX_REPLAYED_PAYLOAD_BYTES {
                live.heard
                    .insert(message.topic.clone(), payload.into_owned());
            }
            changed
        };
        if changed {
            self.write_state();
        }
    }

    /// Writes the entity's state, when it has been added.
    pub(crate) fn write_state(&self) {
        let handle = self.handle.lock().clone();
        if let Some(handle) = handle
            && let Err(error) = handle.write_state()
        {
            tracing::debug!(entity_id = handle.entity_id(), %error, "an MQTT state was not written");
        }
    }

    /// Its unique id.
    pub(crate) fn unique_id(&self) -> Option<String> {
        self.live.lock().common.unique_id.clone()
    }

    /// The entity id it was added as.
    pub(crate) fn entity_id(&self) -> Option<String> {
        self.handle
            .lock()
            .as_ref()
            .map(|handle| handle.entity_id().to_owned())
    }
}

impl Entity for MqttEntity {
    fn info(&self) -> EntityInfo {
        let live = self.live.lock();
        let common = &live.common;
        let mut info = EntityInfo::new(live.platform.domain());
        info.unique_id.clone_from(&common.unique_id);
        info.has_entity_name = common.device.is_some();
        info.name.clone_from(&common.name);
        info.icon.clone_from(&common.icon);
        info.entity_category = common.entity_category;
        info.entity_registry_enabled_default = common.enabled_by_default;
        info.device_info.clone_from(&common.device);
        live.platform.describe(&mut info);
        info
    }

    fn available(&self) -> bool {
        self.connection.is_connected() && self.live.lock().is_available()
    }

    fn state(&self) -> Option<String> {
        self.live.lock().platform.state()
    }

    fn attributes(&self) -> Map<String, Value> {
        let live = self.live.lock();
        let mut attributes = live.json_attributes.clone();
        attributes.extend(live.platform.attributes());
        if live.platform.optimistic() {
            attributes.insert("assumed_state".to_owned(), Value::Bool(true));
        }
        attributes
    }

    fn added_to_core(&self, handle: EntityHandle) -> BoxFuture<'_, ()> {
        *self.handle.lock() = Some(handle);
        Box::pin(async {})
    }

    fn will_remove_from_core(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.unsubscribe();
            self.handle.lock().take();
        })
    }

    fn call_service(
        &self,
        call: EntityServiceCall,
    ) -> BoxFuture<'_, Result<Option<Value>, ServiceError>> {
        Box::pin(async move {
            let (messages, qos, retain) = {
                let mut live = self.live.lock();
                let messages = live.platform.command(&call.service, &call.data)?;
                (messages, live.common.qos, live.common.retain)
            };
            for message in messages {
                self.connection
                    .publish(&message.topic, message.payload, qos, retain)
                    .await
                    .map_err(|error| ServiceError::handler(error.to_string()))?;
            }
            // A command may change what the entity shows even when it is not optimistic as a
            // whole (a button's last press, a climate's fields without a state topic); an
            // unchanged state writes nothing new.
            self.write_state();
            Ok(None)
        })
    }
}
