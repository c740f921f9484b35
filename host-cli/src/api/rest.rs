//! Home Assistant's REST API under `/api/`: the core's config, states, services, events, and
//! the config flows and entries as the frontend drives them, in Home Assistant's JSON shapes
//! and status codes.
//!
//! - [`flow_json`]: flow results, form schemas and entries as Home Assistant writes them.

pub mod flow_json;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use homecore::{
    ConfigEntry, ConfigEntryError, Context, EventOrigin, FlowContext, FlowError, FlowResult,
    FlowStep, ServiceError, ServiceRequest, State as EntityState,
};
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::ApiState;
use flow_json::{EntryFeatures, entry_to_ha_json, flow_result_to_ha_json};

/// The largest request body the REST API reads; a larger one is refused with 413 before it
/// is parsed. Service data, event data and flow input are small: a megabyte is generous.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The REST routes.
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/", get(|| async { message("API running.") }))
        .route("/api/config", get(config))
        .route("/api/states", get(states))
        .route("/api/states/{entity_id}", get(entity_state))
        .route("/api/services", get(services))
        .route("/api/services/{domain}/{service}", post(call_service))
        .route("/api/events", get(events))
        .route("/api/events/{event_type}", post(fire_event))
        .route("/api/config/config_entries/flow", post(start_flow))
        .route(
            "/api/config/config_entries/flow/{flow_id}",
            get(flow_step).post(continue_flow).delete(abort_flow),
        )
        .route("/api/config/config_entries/entry", get(entries))
        .route(
            "/api/config/config_entries/entry/{entry_id}",
            axum::routing::delete(remove_entry),
        )
        .route(
            "/api/config/config_entries/entry/{entry_id}/reload",
            post(reload_entry),
        )
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
}

/// Home Assistant's `json_message`: `{"message": text}`.
fn message(text: impl Into<String>) -> axum::Json<Value> {
    axum::Json(json!({ "message": text.into() }))
}

/// An answer other than 200: a status and Home Assistant's `{"message": ...}` body.
#[derive(Debug)]
pub struct RestError {
    status: StatusCode,
    body: Value,
}

impl RestError {
    fn new(status: StatusCode, text: impl Into<String>) -> Self {
        Self {
            status,
            body: json!({ "message": text.into() }),
        }
    }

    fn bad_request(text: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, text)
    }

    fn not_found(text: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, text)
    }
}

impl IntoResponse for RestError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body)).into_response()
    }
}

type RestResult = Result<axum::Json<Value>, RestError>;

/// A JSON body that may be empty (then `None`), or an error carrying Home Assistant's
/// `invalid` message when it is not JSON.
fn optional_json(body: &Bytes, invalid: &str) -> Result<Option<Value>, RestError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(body)
        .map(Some)
        .map_err(|_| RestError::bad_request(invalid))
}

/// An optional JSON object body: `null` or nothing is no data.
fn optional_object(
    body: &Bytes,
    invalid: &str,
    not_object: &str,
) -> Result<Map<String, Value>, RestError> {
    match optional_json(body, invalid)? {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(map)) => Ok(map),
        Some(_) => Err(RestError::bad_request(not_object)),
    }
}

/// `GET /api/config`: the core's configuration as Home Assistant's `Config.as_dict()`.
async fn config(State(state): State<ApiState>) -> axum::Json<Value> {
    let core = &state.hub.core;
    let config = core.config();
    let units = config.unit_system;
    let metric = units == homecore::UnitSystem::Metric;
    let mut components: Vec<String> = core
        .integrations()
        .loaded()
        .into_iter()
        .map(|manifest| manifest.domain)
        .chain(core.entities().loaded_domains())
        .chain(
            core.config_entries()
                .entries(None)
                .into_iter()
                .filter(|entry| entry.state == homecore::ConfigEntryState::Loaded)
                .map(|entry| entry.domain),
        )
        .collect();
    components.sort();
    components.dedup();
    let core_state = match core.state() {
        homecore::CoreState::NotRunning => "NOT_RUNNING",
        homecore::CoreState::Starting => "STARTING",
        homecore::CoreState::Running => "RUNNING",
        homecore::CoreState::Stopping => "STOPPING",
        homecore::CoreState::FinalWrite => "FINAL_WRITE",
        homecore::CoreState::Stopped => "STOPPED",
    };
    axum::Json(json!({
        "allowlist_external_dirs": [],
        "allowlist_external_urls": [],
        "components": components,
        "config_dir": state.hub.config_dir,
        "config_source": "storage",
        "country": config.country,
        "currency": config.currency,
        "debug": false,
        "elevation": config.elevation,
        "external_url": null,
        "internal_url": null,
        "language": config.language,
        "latitude": config.latitude,
        "location_name": config.location_name,
        "longitude": config.longitude,
        "radius": config.radius,
        "recovery_mode": false,
        "safe_mode": false,
        "state": core_state,
        "time_zone": config.time_zone,
        "unit_system": {
            "length": units.length_unit(),
            "accumulated_precipitation": if metric { "mm" } else { "in" },
            "mass": units.mass_unit(),
            "pressure": units.pressure_unit(),
            "temperature": units.temperature_unit(),
            "volume": units.volume_unit(),
            "wind_speed": units.wind_speed_unit(),
        },
        "version": env!("CARGO_PKG_VERSION"),
        "whitelist_external_dirs": [],
    }))
}

/// `GET /api/states`: every state, sorted by entity id.
async fn states(State(state): State<ApiState>) -> axum::Json<Value> {
    let mut states = state.hub.core.states().all(None);
    states.sort_by(|a, b| a.entity_id.cmp(&b.entity_id));
    axum::Json(states.iter().map(|state| state_json(state)).collect())
}

/// A state as Home Assistant's `State.as_dict()`: times in ISO 8601 with an offset and
/// microseconds, the context as `{id, parent_id, user_id}`.
pub fn state_json(state: &EntityState) -> Value {
    let time =
        |at: chrono::DateTime<chrono::Utc>| at.format("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string();
    json!({
        "entity_id": state.entity_id,
        "state": state.state,
        "attributes": state.attributes,
        "last_changed": time(state.last_changed),
        "last_reported": time(state.last_reported),
        "last_updated": time(state.last_updated),
        "context": {
            "id": state.context.id.to_string(),
            "parent_id": state.context.parent_id.map(|id| id.to_string()),
            "user_id": state.context.user_id,
        },
    })
}

/// `GET /api/states/<entity_id>`.
async fn entity_state(State(state): State<ApiState>, Path(entity_id): Path<String>) -> RestResult {
    state
        .hub
        .core
        .states()
        .get(&entity_id)
        .map(|state| axum::Json(state_json(&state)))
        .ok_or_else(|| RestError::not_found("Entity not found."))
}

/// `GET /api/services`: `[{"domain", "services": {name: {"name", "description", "fields"}}}]`.
async fn services(State(state): State<ApiState>) -> axum::Json<Value> {
    let listed: Vec<Value> = state
        .hub
        .core
        .services()
        .services()
        .into_iter()
        .map(|(domain, by_name)| {
            let services: Map<String, Value> = by_name
                .into_iter()
                .map(|(name, description)| {
                    let fields: Map<String, Value> = description
                        .schema
                        .iter()
                        .flat_map(|schema| &schema.fields)
                        .map(|field| (field.name.clone(), service_field_json(field)))
                        .collect();
                    let mut service = json!({
                        "name": "",
                        "description": "",
                        "fields": fields,
                    });
                    let response = match description.supports_response {
                        homecore::SupportsResponse::None => None,
                        homecore::SupportsResponse::Optional => Some(true),
                        homecore::SupportsResponse::Only => Some(false),
                    };
                    if let (Some(optional), Value::Object(map)) = (response, &mut service) {
                        map.insert("response".into(), json!({ "optional": optional }));
                    }
                    (name, service)
                })
                .collect();
            json!({ "domain": domain, "services": services })
        })
        .collect();
    axum::Json(Value::Array(listed))
}

/// One service field as `services.yaml` describes it: `required`, `default`, `selector`.
fn service_field_json(field: &homecore::Field) -> Value {
    let mut out = Map::new();
    out.insert("required".into(), Value::Bool(field.required));
    if let Some(default) = &field.default {
        out.insert("default".into(), default.clone());
    }
    if let Some(description) = &field.description {
        out.insert("description".into(), json!(description));
    }
    if let Some(selector) = &field.selector {
        out.insert(
            "selector".into(),
            json!({ selector.kind.clone(): selector.config }),
        );
    }
    Value::Object(out)
}

/// `POST /api/services/<domain>/<service>`'s query: `?return_response` (any value).
#[derive(Debug, Deserialize)]
struct CallQuery {
    return_response: Option<String>,
}

/// `POST /api/services/<domain>/<service>`: calls the service and answers the states it
/// changed (those whose change carries the call's context), or with `?return_response`
/// `{"changed_states", "service_response"}`.
async fn call_service(
    State(state): State<ApiState>,
    Path((domain, service)): Path<(String, String)>,
    Query(query): Query<CallQuery>,
    body: Bytes,
) -> RestResult {
    let data = optional_object(
        &body,
        "Data should be valid JSON.",
        "Data should be a JSON object.",
    )?;
    let core = state.hub.core.clone();
    let Some(description) = core.services().describe(&domain, &service) else {
        return Err(RestError::bad_request(format!(
            "Service {domain}.{service} not found."
        )));
    };
    let response_requested = query.return_response.is_some();
    match description.supports_response {
        homecore::SupportsResponse::None if response_requested => {
            return Err(RestError::bad_request(
                "Service does not support responses. Remove return_response from request.",
            ));
        }
        homecore::SupportsResponse::Only if !response_requested => {
            return Err(RestError::bad_request(
                "Service call requires responses but caller did not ask for responses. \
                 Add ?return_response to query parameters.",
            ));
        }
        _ => {}
    }

    let context = Context::new();
    let changed: Arc<Mutex<Vec<Arc<EntityState>>>> = Arc::default();
    let observer = {
        let changed = Arc::clone(&changed);
        let context_id = context.id;
        state.hub.core.states().observe(Arc::new(
            move |_: &str, new_state: Option<&Arc<EntityState>>| {
                if let Some(new_state) = new_state.filter(|s| s.context.id == context_id) {
                    changed.lock().push(Arc::clone(new_state));
                }
            },
        ))
    };
    let mut request = ServiceRequest::new(&domain, &service)
        .with_data(data)
        .with_context(context);
    if response_requested {
        request = request.with_response();
    }
    // The call runs on its own task: a client that hangs up does not cancel it halfway.
    let call = tokio::spawn(async move { core.services().call(request).await });
    let outcome = call.await;
    observer.remove();
    let response = match outcome {
        Ok(Ok(response)) => response,
        Ok(Err(error)) => return Err(service_error(error)),
        Err(_) => {
            return Err(RestError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("The call of {domain}.{service} failed."),
            ));
        }
    };
    let changed_states: Vec<Value> = latest_per_entity(&changed.lock())
        .iter()
        .map(|state| state_json(state))
        .collect();
    if response_requested {
        Ok(axum::Json(json!({
            "changed_states": changed_states,
            "service_response": response.unwrap_or_default(),
        })))
    } else {
        Ok(axum::Json(json!(changed_states)))
    }
}

/// The last state of every entity in `changes`, in the order the entities first changed.
fn latest_per_entity(changes: &[Arc<EntityState>]) -> Vec<Arc<EntityState>> {
    let mut order: Vec<&str> = Vec::new();
    let mut latest: BTreeMap<&str, &Arc<EntityState>> = BTreeMap::new();
    for state in changes {
        if latest.insert(&state.entity_id, state).is_none() {
            order.push(&state.entity_id);
        }
    }
    order
        .into_iter()
        .filter_map(|id| latest.get(id).map(|state| Arc::clone(state)))
        .collect()
}

/// Home Assistant answers 400 to bad data and unknown services; a failing handler is a 500.
fn service_error(error: ServiceError) -> RestError {
    match error {
        ServiceError::NotFound { domain, service } => {
            RestError::bad_request(format!("Service {domain}.{service} not found."))
        }
        ServiceError::InvalidName(_)
        | ServiceError::Validation(_)
        | ServiceError::ResponseNotSupported { .. }
        | ServiceError::ResponseRequired { .. } => RestError::bad_request(error.to_string()),
        other => RestError::new(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
    }
}

/// `GET /api/events`: `[{"event", "listener_count"}]`, by event type.
async fn events(State(state): State<ApiState>) -> axum::Json<Value> {
    let counts: BTreeMap<String, usize> =
        state.hub.core.bus().listener_counts().into_iter().collect();
    axum::Json(
        counts
            .into_iter()
            .map(
                |(event, listener_count)| json!({"event": event, "listener_count": listener_count}),
            )
            .collect(),
    )
}

/// `POST /api/events/<event_type>`: fires the event with the body as its data. The core's
/// own events (and those the hub reserves) are refused with 403: a client of the bus trusts
/// them to come from the core.
async fn fire_event(
    State(state): State<ApiState>,
    Path(event_type): Path<String>,
    body: Bytes,
) -> RestResult {
    let data = optional_object(
        &body,
        "Event data should be valid JSON.",
        "Event data should be a JSON object",
    )?;
    if sandbox_host::gates::is_core_event(&event_type) {
        return Err(RestError::new(
            StatusCode::FORBIDDEN,
            format!("Event {event_type} is the core's: it cannot be fired over the API."),
        ));
    }
    state
        .hub
        .core
        .bus()
        .fire_with_origin(&event_type, data, None, EventOrigin::Remote)
        .map_err(|error| RestError::bad_request(error.to_string()))?;
    Ok(message(format!("Event {event_type} fired.")))
}

/// The features the REST API reports for `entry`.
fn features_of(_entry: &ConfigEntry) -> EntryFeatures {
    // Every entry, local or in a sandbox group, unloads without a restart; options flows are
    // not offered over this API yet.
    EntryFeatures {
        supports_options: false,
        supports_unload: true,
    }
}

/// A flow result with the entry it created, when it created one.
fn flow_json(state: &ApiState, result: &FlowResult) -> Value {
    let entry = match &result.step {
        FlowStep::CreateEntry {
            entry_id: Some(entry_id),
            ..
        } => state.hub.core.config_entries().entry(entry_id),
        _ => None,
    };
    flow_result_to_ha_json(
        result,
        entry.as_ref().map(|entry| (entry, features_of(entry))),
    )
}

/// Flow errors as Home Assistant's flow views answer them.
fn flow_error(error: FlowError) -> RestError {
    match error {
        FlowError::UnknownHandler(_) => RestError::not_found("Invalid handler specified"),
        FlowError::UnknownFlow(_) => RestError::not_found("Invalid flow specified"),
        FlowError::UnknownStep { .. } => RestError::bad_request("Handler does not support user"),
        FlowError::InvalidData(errors) => {
            // `{"errors": {field: message}}`, the field being the error's path.
            let by_field: Map<String, Value> = errors
                .errors
                .iter()
                .map(|error| {
                    let path = error.path_strings();
                    let key = if path.is_empty() {
                        "base".to_owned()
                    } else {
                        path.join(".")
                    };
                    (key, Value::String(error.message.clone()))
                })
                .collect();
            RestError {
                status: StatusCode::BAD_REQUEST,
                body: json!({ "errors": by_field }),
            }
        }
        FlowError::TooManyFlows | FlowError::NotAllowed(_) => {
            RestError::bad_request(error.to_string())
        }
        other => RestError::new(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
    }
}

/// `POST /api/config/config_entries/flow`'s body.
#[derive(Debug, Deserialize)]
struct StartFlow {
    handler: String,
    #[serde(default)]
    show_advanced_options: bool,
}

/// `POST /api/config/config_entries/flow`: starts a config flow at its `user` step.
async fn start_flow(State(state): State<ApiState>, body: Bytes) -> RestResult {
    let request: StartFlow = parse_flow_body(&body)?;
    let mut context = FlowContext::new(homecore::config_entries::SOURCE_USER);
    context.show_advanced_options = request.show_advanced_options;
    let result = state
        .hub
        .core
        .config_entries()
        .flow()
        .init(&request.handler, context, None)
        .await
        .map_err(flow_error)?;
    Ok(axum::Json(flow_json(&state, &result)))
}

/// A flow view's body, checked as Home Assistant's `RequestDataValidator` does.
fn parse_flow_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, RestError> {
    let value: Value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Object(Map::new())
    } else {
        serde_json::from_slice(body).map_err(|_| RestError::bad_request("Invalid JSON."))?
    };
    serde_json::from_value(value)
        .map_err(|error| RestError::bad_request(format!("Message format incorrect: {error}")))
}

/// `GET /api/config/config_entries/flow/<flow_id>`: the step the flow waits in. As in Home
/// Assistant, the step runs again without input: a form or a menu shows itself again, a
/// progress step says whether it is done.
async fn flow_step(State(state): State<ApiState>, Path(flow_id): Path<String>) -> RestResult {
    let flows = state.hub.core.config_entries().flow();
    match flows.configure(&flow_id, None).await {
        Ok(result) => Ok(axum::Json(flow_json(&state, &result))),
        Err(error) => Err(flow_error(error)),
    }
}

/// `POST /api/config/config_entries/flow/<flow_id>`: the step's input; the next result.
async fn continue_flow(
    State(state): State<ApiState>,
    Path(flow_id): Path<String>,
    body: Bytes,
) -> RestResult {
    let input: Map<String, Value> = parse_flow_body(&body)?;
    let result = state
        .hub
        .core
        .config_entries()
        .flow()
        .configure(&flow_id, Some(input))
        .await
        .map_err(flow_error)?;
    Ok(axum::Json(flow_json(&state, &result)))
}

/// `DELETE /api/config/config_entries/flow/<flow_id>`.
async fn abort_flow(State(state): State<ApiState>, Path(flow_id): Path<String>) -> RestResult {
    state
        .hub
        .core
        .config_entries()
        .flow()
        .abort(&flow_id)
        .await
        .map_err(flow_error)?;
    Ok(message("Flow aborted"))
}

/// `GET /api/config/config_entries/entry`'s query.
#[derive(Debug, Deserialize)]
struct EntriesQuery {
    domain: Option<String>,
}

/// `GET /api/config/config_entries/entry[?domain=...]`.
async fn entries(
    State(state): State<ApiState>,
    Query(query): Query<EntriesQuery>,
) -> axum::Json<Value> {
    axum::Json(
        state
            .hub
            .core
            .config_entries()
            .entries(query.domain.as_deref())
            .iter()
            .map(|entry| entry_to_ha_json(entry, features_of(entry)))
            .collect(),
    )
}

fn entry_error(error: ConfigEntryError) -> RestError {
    match error {
        ConfigEntryError::UnknownEntry(_) => RestError::not_found("Invalid entry specified"),
        ConfigEntryError::OperationNotAllowed(_) => {
            RestError::new(StatusCode::FORBIDDEN, "Entry cannot be reloaded")
        }
        other => RestError::new(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
    }
}

/// `DELETE /api/config/config_entries/entry/<entry_id>`: `{"require_restart": bool}`.
async fn remove_entry(State(state): State<ApiState>, Path(entry_id): Path<String>) -> RestResult {
    let removed = state
        .hub
        .core
        .config_entries()
        .remove(&entry_id)
        .await
        .map_err(entry_error)?;
    Ok(axum::Json(
        json!({ "require_restart": removed.require_restart }),
    ))
}

/// `POST /api/config/config_entries/entry/<entry_id>/reload`: `{"require_restart": bool}`.
async fn reload_entry(State(state): State<ApiState>, Path(entry_id): Path<String>) -> RestResult {
    let entries = state.hub.core.config_entries();
    if entries.entry(&entry_id).is_none() {
        return Err(RestError::not_found("Invalid entry specified"));
    }
    entries.reload(&entry_id).await.map_err(entry_error)?;
    let recoverable = entries
        .entry(&entry_id)
        .is_some_and(|entry| entry.state.recoverable());
    Ok(axum::Json(json!({ "require_restart": !recoverable })))
}
