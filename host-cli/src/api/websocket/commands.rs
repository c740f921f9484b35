//! The WebSocket API's commands: each message's envelope checked (an integer `id` that only
//! increases, a `type`), its fields checked, and its answer (`result`, `pong`) or its error
//! with Home Assistant's codes queued on the connection's [`Outbox`]. Subscriptions run as
//! tasks owned by the connection, removed with their bus listener or state observer on
//! `unsubscribe_events` and when the connection ends.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use homecore::state::StateObserverHandle;
use homecore::{Context, ServiceError, ServiceRequest, ServiceTarget, State};
use serde_json::{Map, Value, json};
use tokio::sync::{Semaphore, mpsc};

use super::compressed::{self, compressed_state, state_diff};
use super::{HA_VERSION, MAX_COMMANDS_IN_FLIGHT, MAX_SUBSCRIPTIONS, Outbox, SEND_QUEUE_MESSAGES};
use crate::api::ApiState;
use crate::control::{self, Hub};

/// Home Assistant's error codes (`websocket_api/const.py`).
pub mod code {
    /// The message or a field has the wrong shape.
    pub const INVALID_FORMAT: &str = "invalid_format";
    /// The id is not larger than the connection's last one.
    pub const ID_REUSE: &str = "id_reuse";
    /// No such command.
    pub const UNKNOWN_COMMAND: &str = "unknown_command";
    /// No such service, subscription, group.
    pub const NOT_FOUND: &str = "not_found";
    /// A service handler or the hub failed.
    pub const HOME_ASSISTANT_ERROR: &str = "home_assistant_error";
    /// A service refused its data.
    pub const SERVICE_VALIDATION_ERROR: &str = "service_validation_error";
    /// The command is not for this client (a core event type).
    pub const UNAUTHORIZED: &str = "unauthorized";
    /// A limit of the connection was reached.
    pub const NOT_ALLOWED: &str = "not_allowed";
}

/// A command's failure: Home Assistant's `{"code", "message"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandError {
    /// One of [`code`].
    pub code: &'static str,
    /// For people.
    pub message: String,
}

impl CommandError {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    fn invalid(message: impl Into<String>) -> Self {
        Self::new(code::INVALID_FORMAT, message)
    }
}

impl From<ServiceError> for CommandError {
    fn from(error: ServiceError) -> Self {
        let code = match &error {
            ServiceError::NotFound { .. } => code::NOT_FOUND,
            ServiceError::InvalidName(_) => code::INVALID_FORMAT,
            ServiceError::Validation(_)
            | ServiceError::ResponseNotSupported { .. }
            | ServiceError::ResponseRequired { .. } => code::SERVICE_VALIDATION_ERROR,
            ServiceError::Handler(_)
            | ServiceError::InvalidResponse { .. }
            | ServiceError::InvalidSchema(_) => code::HOME_ASSISTANT_ERROR,
        };
        Self::new(code, error.to_string())
    }
}

/// `{"id", "type": "result", "success": true, "result"}`.
pub fn result_message(id: i64, result: Value) -> Value {
    json!({"id": id, "type": "result", "success": true, "result": result})
}

/// `{"id", "type": "result", "success": false, "error": {"code", "message"}}`.
pub fn error_message(id: i64, error: &CommandError) -> Value {
    json!({
        "id": id,
        "type": "result",
        "success": false,
        "error": {"code": error.code, "message": error.message},
    })
}

/// `{"id", "type": "event", "event"}`: what a subscription pushes.
pub fn event_message(id: i64, event: Value) -> Value {
    json!({"id": id, "type": "event", "event": event})
}

/// A subscription: its task, and the state observer feeding it when it has one. Dropping it
/// ends both.
struct Subscription {
    task: tokio::task::JoinHandle<()>,
    observer: Option<StateObserverHandle>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(observer) = self.observer.take() {
            observer.remove();
        }
        self.task.abort();
    }
}

/// One authenticated connection's command state.
pub(crate) struct Connection {
    state: ApiState,
    outbox: Outbox,
    last_id: i64,
    subscriptions: HashMap<i64, Subscription>,
    in_flight: Arc<Semaphore>,
}

impl Connection {
    pub(crate) fn new(state: ApiState, outbox: Outbox) -> Self {
        Self {
            state,
            outbox,
            last_id: 0,
            subscriptions: HashMap::new(),
            in_flight: Arc::new(Semaphore::new(MAX_COMMANDS_IN_FLIGHT)),
        }
    }

    /// Handles one text message: one command, or a JSON array of them (as Home Assistant
    /// accepts).
    pub(crate) async fn handle_text(&mut self, text: &str) {
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Array(messages)) => {
                for message in messages {
                    self.handle(message).await;
                }
            }
            Ok(message) => self.handle(message).await,
            Err(error) => {
                self.outbox.send(&error_message(
                    0,
                    &CommandError::invalid(format!("Message incorrectly formatted: {error}")),
                ));
            }
        }
    }

    async fn handle(&mut self, message: Value) {
        let Value::Object(message) = message else {
            self.outbox.send(&error_message(
                0,
                &CommandError::invalid("Message incorrectly formatted: expected an object"),
            ));
            return;
        };
        let id = message.get("id").and_then(Value::as_i64);
        let kind = message.get("type").and_then(Value::as_str);
        let (Some(id), Some(kind)) = (id.filter(|id| *id > 0), kind.filter(|k| !k.is_empty()))
        else {
            self.outbox.send(&error_message(
                id.unwrap_or(0),
                &CommandError::invalid(
                    "Message incorrectly formatted: expected a positive integer id and a type",
                ),
            ));
            return;
        };
        if id <= self.last_id {
            self.outbox.send(&error_message(
                id,
                &CommandError::new(code::ID_REUSE, "Identifier values have to increase."),
            ));
            return;
        }
        self.last_id = id;
        let kind = kind.to_owned();
        let answer = self.dispatch(id, &kind, &message).await;
        match answer {
            Ok(Some(result)) => {
                self.outbox.send(&result_message(id, result));
            }
            Ok(None) => {}
            Err(error) => {
                self.outbox.send(&error_message(id, &error));
            }
        }
    }

    /// Runs a command; `Ok(None)` when it answered already (or answers later, from a task).
    async fn dispatch(
        &mut self,
        id: i64,
        kind: &str,
        message: &Map<String, Value>,
    ) -> Result<Option<Value>, CommandError> {
        let hub = &self.state.hub;
        match kind {
            "ping" => {
                self.outbox.send(&json!({"id": id, "type": "pong"}));
                Ok(None)
            }
            "get_states" => Ok(Some(Value::Array(
                hub.core
                    .states()
                    .all(None)
                    .iter()
                    .map(|state| json!(**state))
                    .collect(),
            ))),
            "get_config" => Ok(Some(core_config(hub))),
            "get_services" => Ok(Some(services(hub))),
            "call_service" => {
                let request = service_request(message)?;
                let core = hub.core.clone();
                self.spawn(id, async move { call_service(&core, request).await })
                    .await;
                Ok(None)
            }
            "fire_event" => fire_event(hub, message).map(Some),
            "subscribe_events" => self.subscribe_events(id, message),
            "subscribe_entities" => self.subscribe_entities(id, message),
            "unsubscribe_events" => {
                let subscription = required_i64(message, "subscription")?;
                match self.subscriptions.remove(&subscription) {
                    Some(subscription) => {
                        drop(subscription);
                        Ok(Some(Value::Null))
                    }
                    None => Err(CommandError::new(
                        code::NOT_FOUND,
                        "Subscription not found.",
                    )),
                }
            }
            "supported_features" => {
                optional_object(message, "features")?;
                Ok(Some(Value::Null))
            }
            "config_entries/get" => {
                let domain = optional_str(message, "domain")?;
                Ok(Some(config_entries(hub, domain)))
            }
            "config/entity_registry/list" => Ok(Some(Value::Array(
                hub.core
                    .entity_registry()
                    .entries()
                    .iter()
                    .map(registry_json)
                    .collect(),
            ))),
            "config/device_registry/list" => Ok(Some(Value::Array(
                hub.core
                    .device_registry()
                    .devices()
                    .iter()
                    .map(registry_json)
                    .collect(),
            ))),
            "config/area_registry/list" => Ok(Some(Value::Array(
                hub.core
                    .area_registry()
                    .areas()
                    .iter()
                    .map(registry_json)
                    .collect(),
            ))),
            "sandbox/groups" => Ok(Some(json!(control::hub_status(hub).groups))),
            "sandbox/start" | "sandbox/stop" | "sandbox/restart" => {
                let group = required_str(message, "group")?.to_owned();
                if hub.plugin.groups().get(&group).is_none() {
                    let known = hub.plugin.groups().names().join(", ");
                    return Err(CommandError::new(
                        code::NOT_FOUND,
                        format!("no group {group:?} (groups: {known})"),
                    ));
                }
                let action = kind.trim_start_matches("sandbox/").to_owned();
                let hub = hub.clone();
                self.spawn(
                    id,
                    async move { control_group(&hub, &group, &action).await },
                )
                .await;
                Ok(None)
            }
            other => Err(CommandError::new(
                code::UNKNOWN_COMMAND,
                format!("Unknown command: {other}"),
            )),
        }
    }

    /// Runs a slow command on a task of its own (at most [`MAX_COMMANDS_IN_FLIGHT`] at once:
    /// past it, this waits and the connection reads nothing more), its answer queued when done.
    async fn spawn<F>(&self, id: i64, command: F)
    where
        F: Future<Output = Result<Value, CommandError>> + Send + 'static,
    {
        let Ok(permit) = Arc::clone(&self.in_flight).acquire_owned().await else {
            return;
        };
        let outbox = self.outbox.clone();
        tokio::spawn(async move {
            let answer = match command.await {
                Ok(result) => result_message(id, result),
                Err(error) => error_message(id, &error),
            };
            drop(permit);
            outbox.send(&answer);
        });
    }

    fn check_subscription_room(&self) -> Result<(), CommandError> {
        if self.subscriptions.len() >= MAX_SUBSCRIPTIONS {
            return Err(CommandError::new(
                code::NOT_ALLOWED,
                format!("at most {MAX_SUBSCRIPTIONS} subscriptions per connection"),
            ));
        }
        Ok(())
    }

    fn subscribe_events(
        &mut self,
        id: i64,
        message: &Map<String, Value>,
    ) -> Result<Option<Value>, CommandError> {
        self.check_subscription_room()?;
        let event_type = optional_str(message, "event_type")?.unwrap_or(homecore::event::MATCH_ALL);
        let mut events = self
            .state
            .hub
            .core
            .bus()
            .subscribe(event_type)
            .map_err(|error| CommandError::invalid(error.to_string()))?;
        self.outbox.send(&result_message(id, Value::Null));
        let outbox = self.outbox.clone();
        let task = tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                if !outbox.send(&event_message(id, json!(*event))) {
                    break;
                }
            }
        });
        self.subscriptions.insert(
            id,
            Subscription {
                task,
                observer: None,
            },
        );
        Ok(None)
    }

    fn subscribe_entities(
        &mut self,
        id: i64,
        message: &Map<String, Value>,
    ) -> Result<Option<Value>, CommandError> {
        self.check_subscription_room()?;
        let wanted: Option<HashSet<String>> =
            optional_str_list(message, "entity_ids")?.map(|ids| ids.into_iter().collect());
        let states = self.state.hub.core.states();
        // The observer first, then the snapshot: a change in between is queued and compared
        // with the snapshot, so none is missed.
        let (changes_in, mut changes) =
            mpsc::channel::<(String, Option<Arc<State>>)>(SEND_QUEUE_MESSAGES);
        let overflow = self.outbox.clone();
        let filter = wanted.clone();
        let observer = states.observe(Arc::new(
            move |entity_id: &str, new: Option<&Arc<State>>| {
                if filter.as_ref().is_some_and(|ids| !ids.contains(entity_id)) {
                    return;
                }
                if let Err(mpsc::error::TrySendError::Full(_)) =
                    changes_in.try_send((entity_id.to_owned(), new.cloned()))
                {
                    // The subscriber fell this far behind: its view would be wrong from here on.
                    overflow.overflowed();
                }
            },
        ));
        let mut known: HashMap<String, Arc<State>> = states
            .all(None)
            .into_iter()
            .filter(|state| {
                wanted
                    .as_ref()
                    .is_none_or(|ids| ids.contains(&state.entity_id))
            })
            .map(|state| (state.entity_id.clone(), state))
            .collect();
        let added: Map<String, Value> = known
            .iter()
            .map(|(entity_id, state)| (entity_id.clone(), compressed_state(state)))
            .collect::<BTreeMap<_, _>>()
            .into_iter()
            .collect();
        self.outbox.send(&result_message(id, Value::Null));
        self.outbox.send(&event_message(
            id,
            json!({ compressed::ADDED: Value::Object(added) }),
        ));
        let outbox = self.outbox.clone();
        let task = tokio::spawn(async move {
            while let Some((entity_id, new)) = changes.recv().await {
                let event = match (known.get(&entity_id), new) {
                    (None, None) => continue,
                    (Some(_), None) => {
                        known.remove(&entity_id);
                        json!({ compressed::REMOVED: [entity_id] })
                    }
                    (None, Some(new)) => {
                        let event = json!({ compressed::ADDED: { entity_id.as_str(): compressed_state(&new) } });
                        known.insert(entity_id, new);
                        event
                    }
                    (Some(old), Some(new)) => {
                        // Older than what the snapshot showed: already seen.
                        if new.last_updated < old.last_updated {
                            continue;
                        }
                        let diff = state_diff(old, &new);
                        known.insert(entity_id.clone(), new);
                        match diff {
                            Some(diff) => json!({ compressed::CHANGED: { entity_id: diff } }),
                            None => continue,
                        }
                    }
                };
                if !outbox.send(&event_message(id, event)) {
                    break;
                }
            }
        });
        self.subscriptions.insert(
            id,
            Subscription {
                task,
                observer: Some(observer),
            },
        );
        Ok(None)
    }
}

fn field_error(key: &str, expected: &str) -> CommandError {
    CommandError::invalid(format!(
        "expected {expected} for dictionary value @ data['{key}']"
    ))
}

fn required_str<'m>(message: &'m Map<String, Value>, key: &str) -> Result<&'m str, CommandError> {
    optional_str(message, key)?
        .ok_or_else(|| CommandError::invalid(format!("required key not provided @ data['{key}']")))
}

fn optional_str<'m>(
    message: &'m Map<String, Value>,
    key: &str,
) -> Result<Option<&'m str>, CommandError> {
    match message.get(key) {
        None => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(_) => Err(field_error(key, "str")),
    }
}

fn required_i64(message: &Map<String, Value>, key: &str) -> Result<i64, CommandError> {
    match message.get(key) {
        None => Err(CommandError::invalid(format!(
            "required key not provided @ data['{key}']"
        ))),
        Some(value) => value.as_i64().ok_or_else(|| field_error(key, "int")),
    }
}

fn optional_object<'m>(
    message: &'m Map<String, Value>,
    key: &str,
) -> Result<Option<&'m Map<String, Value>>, CommandError> {
    match message.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(object)) => Ok(Some(object)),
        Some(_) => Err(field_error(key, "dict")),
    }
}

/// A string or a list of strings.
fn optional_str_list(
    message: &Map<String, Value>,
    key: &str,
) -> Result<Option<Vec<String>>, CommandError> {
    match message.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(vec![text.clone()])),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| field_error(key, "a list of str"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(field_error(key, "a list of str")),
    }
}

/// `call_service`'s fields as a request.
fn service_request(message: &Map<String, Value>) -> Result<ServiceRequest, CommandError> {
    let domain = required_str(message, "domain")?;
    let service = required_str(message, "service")?;
    let mut request = ServiceRequest::new(domain, service);
    if let Some(data) = optional_object(message, "service_data")? {
        request = request.with_data(data.clone());
    }
    if let Some(target) = optional_object(message, "target")? {
        let mut parsed = ServiceTarget::default();
        for (key, list) in [
            ("entity_id", &mut parsed.entity_id),
            ("device_id", &mut parsed.device_id),
            ("area_id", &mut parsed.area_id),
            ("floor_id", &mut parsed.floor_id),
            ("label_id", &mut parsed.label_id),
        ] {
            if let Some(ids) = optional_str_list(target, key)? {
                *list = ids;
            }
        }
        if let Some(unknown) = target.keys().find(|key| {
            !["entity_id", "device_id", "area_id", "floor_id", "label_id"].contains(&key.as_str())
        }) {
            return Err(CommandError::invalid(format!(
                "extra keys not allowed @ data['target']['{unknown}']"
            )));
        }
        request = request.with_target(parsed);
    }
    match message.get("return_response") {
        None | Some(Value::Bool(false)) => {}
        Some(Value::Bool(true)) => request = request.with_response(),
        Some(_) => return Err(field_error("return_response", "bool")),
    }
    Ok(request)
}

fn context_json(context: &Context) -> Value {
    json!({
        "id": context.id.to_string(),
        "parent_id": context.parent_id.map(|id| id.to_string()),
        "user_id": context.user_id,
    })
}

async fn call_service(
    core: &homecore::Core,
    request: ServiceRequest,
) -> Result<Value, CommandError> {
    let context = Context::new();
    let return_response = request.return_response;
    let response = core
        .services()
        .call(request.with_context(context.clone()))
        .await?;
    let mut result = json!({ "context": context_json(&context) });
    if return_response {
        result["response"] = response.map_or(Value::Null, Value::Object);
    }
    Ok(result)
}

fn fire_event(hub: &Hub, message: &Map<String, Value>) -> Result<Value, CommandError> {
    let event_type = required_str(message, "event_type")?;
    if sandbox_host::gates::is_core_event(event_type) {
        return Err(CommandError::new(
            code::UNAUTHORIZED,
            format!("{event_type} is the core's own event type"),
        ));
    }
    let data = optional_object(message, "event_data")?
        .cloned()
        .unwrap_or_default();
    let context = Context::new();
    hub.core
        .bus()
        .fire(event_type, data, Some(context.clone()))
        .map_err(|error| CommandError::invalid(error.to_string()))?;
    Ok(json!({ "context": context_json(&context) }))
}

/// Home Assistant's unit system dictionary.
fn unit_system(units: homecore::UnitSystem) -> Value {
    let (precipitation, area) = match units {
        homecore::UnitSystem::Metric => ("mm", "m²"),
        homecore::UnitSystem::UsCustomary => ("in", "ft²"),
    };
    json!({
        "length": units.length_unit(),
        "accumulated_precipitation": precipitation,
        "area": area,
        "mass": units.mass_unit(),
        "pressure": units.pressure_unit(),
        "temperature": units.temperature_unit(),
        "volume": units.volume_unit(),
        "wind_speed": units.wind_speed_unit(),
    })
}

fn core_config(hub: &Hub) -> Value {
    let core = &hub.core;
    let config = core.config();
    let mut components: Vec<String> = core
        .integrations()
        .loaded()
        .into_iter()
        .map(|manifest| manifest.domain)
        .chain(
            core.config_entries()
                .entries(None)
                .into_iter()
                .filter(|entry| entry.state == homecore::ConfigEntryState::Loaded)
                .map(|entry| entry.domain),
        )
        .chain(
            core.states()
                .all(None)
                .iter()
                .map(|state| state.domain().to_owned()),
        )
        .collect();
    components.sort();
    components.dedup();
    let state = match core.state() {
        homecore::CoreState::NotRunning => "NOT_RUNNING",
        homecore::CoreState::Starting => "STARTING",
        homecore::CoreState::Running => "RUNNING",
        homecore::CoreState::Stopping => "STOPPING",
        homecore::CoreState::FinalWrite => "FINAL_WRITE",
        homecore::CoreState::Stopped => "STOPPED",
    };
    json!({
        "latitude": config.latitude,
        "longitude": config.longitude,
        "elevation": config.elevation,
        "radius": config.radius,
        "unit_system": unit_system(config.unit_system),
        "location_name": config.location_name,
        "time_zone": config.time_zone,
        "language": config.language,
        "currency": config.currency,
        "country": config.country,
        "components": components,
        "config_dir": hub.config_dir,
        "allowlist_external_dirs": [],
        "allowlist_external_urls": [],
        "version": HA_VERSION,
        "config_source": "storage",
        "recovery_mode": false,
        "safe_mode": false,
        "state": state,
        "external_url": null,
        "internal_url": null,
        "debug": false,
    })
}

fn services(hub: &Hub) -> Value {
    let mut domains = Map::new();
    for (domain, services) in hub.core.services().services() {
        let mut described = Map::new();
        for (service, description) in services {
            let fields: Map<String, Value> = description
                .schema
                .iter()
                .flat_map(|schema| schema.fields.iter())
                .map(|field| {
                    let mut shown = Map::new();
                    shown.insert("required".into(), json!(field.required));
                    if let Some(text) = &field.description {
                        shown.insert("description".into(), json!(text));
                    }
                    if let Some(default) = &field.default {
                        shown.insert("default".into(), default.clone());
                    }
                    if let Some(selector) = &field.selector {
                        shown.insert("selector".into(), json!(selector));
                    }
                    (field.name.clone(), Value::Object(shown))
                })
                .collect();
            let mut entry = json!({"name": service, "description": "", "fields": fields});
            if description.supports_response != homecore::SupportsResponse::None {
                entry["response"] = json!({
                    "optional": description.supports_response == homecore::SupportsResponse::Optional
                });
            }
            described.insert(service, entry);
        }
        domains.insert(domain, Value::Object(described));
    }
    Value::Object(domains)
}

fn config_entries(hub: &Hub, domain: Option<&str>) -> Value {
    Value::Array(
        hub.core
            .config_entries()
            .entries(domain)
            .into_iter()
            .map(|entry| {
                json!({
                    "entry_id": entry.entry_id,
                    "domain": entry.domain,
                    "title": entry.title,
                    "source": entry.source,
                    "state": entry.state.as_str(),
                    "reason": entry.reason,
                    "disabled_by": entry.disabled_by,
                    "pref_disable_new_entities": entry.pref_disable_new_entities,
                    "pref_disable_polling": entry.pref_disable_polling,
                    "created_at": compressed::timestamp(&entry.created_at),
                    "modified_at": compressed::timestamp(&entry.modified_at),
                    "sandbox_group": entry.sandbox,
                })
            })
            .collect(),
    )
}

/// A registry entry as its JSON, with Home Assistant's float timestamps.
fn registry_json<T: serde::Serialize>(entry: &T) -> Value {
    let mut value = json!(entry);
    if let Value::Object(fields) = &mut value {
        for key in ["created_at", "modified_at"] {
            let timestamp = fields
                .get(key)
                .and_then(Value::as_str)
                .and_then(|text| chrono::DateTime::parse_from_rfc3339(text).ok())
                .map(|time| compressed::timestamp(&time.with_timezone(&chrono::Utc)));
            if let Some(timestamp) = timestamp {
                fields.insert(key.into(), json!(timestamp));
            }
        }
    }
    value
}

async fn control_group(hub: &Hub, group: &str, action: &str) -> Result<Value, CommandError> {
    let groups = hub.plugin.groups();
    let handle = groups
        .get(group)
        .ok_or_else(|| CommandError::new(code::NOT_FOUND, format!("no group {group:?}")))?;
    match action {
        // As the control API: a start clears a failed state and the restart budget.
        "start" => {
            hub.plugin.start_group(group).await;
        }
        "restart" => handle.manager.restart().await,
        _ => {
            handle.manager.stop().await;
        }
    }
    sandbox_host::report::group_reports(groups)
        .into_iter()
        .find(|report| report.name == group)
        .map(|report| json!(report))
        .ok_or_else(|| CommandError::new(code::NOT_FOUND, format!("no group {group:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn call_service_fields_are_checked_by_type() {
        let missing = service_request(&message(json!({"service": "turn_on"})));
        assert_eq!(missing.map(|_| ()).unwrap_err().code, code::INVALID_FORMAT);
        let wrong = service_request(&message(json!({"domain": 1, "service": "turn_on"})));
        assert_eq!(wrong.map(|_| ()).unwrap_err().code, code::INVALID_FORMAT);
        let target = service_request(&message(json!({
            "domain": "light", "service": "turn_on",
            "target": {"entity_id": "light.kitchen"}, "return_response": false,
        })))
        .expect("valid");
        assert_eq!(
            target.target.expect("a target").entity_id,
            vec!["light.kitchen".to_owned()]
        );
        let extra = service_request(&message(json!({
            "domain": "light", "service": "turn_on", "target": {"floor": "x"},
        })));
        assert_eq!(extra.map(|_| ()).unwrap_err().code, code::INVALID_FORMAT);
    }

    #[test]
    fn service_errors_map_to_home_assistants_codes() {
        let code_of = |error: ServiceError| CommandError::from(error).code;
        assert_eq!(
            code_of(ServiceError::NotFound {
                domain: "light".into(),
                service: "nope".into()
            }),
            code::NOT_FOUND
        );
        assert_eq!(
            code_of(ServiceError::validation(&["brightness"], "too bright")),
            code::SERVICE_VALIDATION_ERROR
        );
        assert_eq!(
            code_of(ServiceError::handler("broke")),
            code::HOME_ASSISTANT_ERROR
        );
    }
}
