//! The service registry: register `(domain, service)` handlers with a schema and call them.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;

use futures::future::BoxFuture;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::context::Context;
use crate::entity_id::{EntityIdError, is_valid_entity_id, validate_domain};
use crate::event::{EVENT_CALL_SERVICE, EVENT_SERVICE_REGISTERED, EVENT_SERVICE_REMOVED, EventBus};
use crate::schema::{PathSegment, Schema, SchemaDefinitionError, ValidationErrors};

#[cfg(test)]
mod tests;

/// Keys of service data that name the call's target rather than its parameters.
pub const TARGET_KEYS: &[&str] = &["entity_id", "device_id", "area_id", "floor_id", "label_id"];

/// Entity id meaning "every entity the service applies to" (Home Assistant's `ENTITY_MATCH_ALL`).
pub const ENTITY_MATCH_ALL: &str = "all";

/// Entity id meaning "no entity" (Home Assistant's `ENTITY_MATCH_NONE`).
pub const ENTITY_MATCH_NONE: &str = "none";

/// Whether a service returns response data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SupportsResponse {
    /// It never returns data; asking for a response is an error.
    #[default]
    None,
    /// It returns data when asked.
    Optional,
    /// It only makes sense with a response; calling without asking is an error.
    Only,
}

/// What a service call is aimed at.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ServiceTarget {
    /// Entities targeted (may be [`ENTITY_MATCH_ALL`] or [`ENTITY_MATCH_NONE`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entity_id: Vec<String>,
    /// Devices whose entities are targeted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub device_id: Vec<String>,
    /// Areas whose devices and entities are targeted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub area_id: Vec<String>,
    /// Floors whose areas are targeted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub floor_id: Vec<String>,
    /// Labels whose holders are targeted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub label_id: Vec<String>,
}

impl ServiceTarget {
    /// A target of the given entities.
    pub fn entities<I: IntoIterator<Item = S>, S: Into<String>>(ids: I) -> Self {
        Self {
            entity_id: ids.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }

    /// True when nothing is targeted.
    pub fn is_empty(&self) -> bool {
        self.entity_id.is_empty()
            && self.device_id.is_empty()
            && self.area_id.is_empty()
            && self.floor_id.is_empty()
            && self.label_id.is_empty()
    }

    fn list_mut(&mut self, key: &str) -> Option<&mut Vec<String>> {
        match key {
            "entity_id" => Some(&mut self.entity_id),
            "device_id" => Some(&mut self.device_id),
            "area_id" => Some(&mut self.area_id),
            "floor_id" => Some(&mut self.floor_id),
            "label_id" => Some(&mut self.label_id),
            _ => None,
        }
    }

    /// Adds the ids `value` holds under `key` (a string, comma-separated for entities, or a list).
    fn absorb(&mut self, key: &str, value: &Value) -> Result<(), ValidationErrors> {
        let path = |index: Option<usize>| {
            let mut path = vec![PathSegment::Key(key.to_owned())];
            path.extend(index.map(PathSegment::Index));
            path
        };
        let items: Vec<(Option<usize>, &Value)> = match value {
            Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, v)| (Some(i), v))
                .collect(),
            Value::Null => Vec::new(),
            single => vec![(None, single)],
        };
        let mut ids = Vec::new();
        for (index, item) in items {
            let Value::String(text) = item else {
                return Err(ValidationErrors::single(path(index), "expected str"));
            };
            if key == "entity_id" {
                for part in text
                    .split(',')
                    .map(str::trim)
                    .filter(|part| !part.is_empty())
                {
                    let id = part.to_lowercase();
                    if id != ENTITY_MATCH_ALL && id != ENTITY_MATCH_NONE && !is_valid_entity_id(&id)
                    {
                        return Err(ValidationErrors::single(
                            path(index),
                            format!("Entity {part} is neither a valid entity ID nor a valid UUID"),
                        ));
                    }
                    ids.push(id);
                }
            } else {
                ids.push(text.clone());
            }
        }
        if let Some(list) = self.list_mut(key) {
            for id in ids {
                if !list.contains(&id) {
                    list.push(id);
                }
            }
        }
        Ok(())
    }
}

/// One call of a service, as its handler receives it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceCall {
    /// The service's domain.
    pub domain: String,
    /// The service's name within the domain.
    pub service: String,
    /// Parameters, validated and coerced by the service's schema.
    pub data: Map<String, Value>,
    /// What caused the call.
    pub context: Context,
    /// What the call is aimed at.
    pub target: ServiceTarget,
    /// Whether the caller wants response data.
    pub return_response: bool,
}

/// Response data of a service: always a JSON object.
pub type ServiceResponse = Map<String, Value>;

/// Why a service could not be registered or called.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ServiceError {
    /// No such service is registered.
    #[error("service {domain}.{service} not found")]
    NotFound {
        /// The requested domain.
        domain: String,
        /// The requested service.
        service: String,
    },
    /// The domain or service name is not a lowercase slug.
    #[error("invalid service name {0:?}")]
    InvalidName(String),
    /// The call's data did not match the service's schema (or a handler judged it invalid).
    #[error("invalid service data: {0}")]
    Validation(ValidationErrors),
    /// A response was asked for but the service never returns one.
    #[error(
        "service {domain}.{service} does not support responses; remove return_response from the call"
    )]
    ResponseNotSupported {
        /// The called domain.
        domain: String,
        /// The called service.
        service: String,
    },
    /// The service only works with a response but none was asked for.
    #[error("service {domain}.{service} requires responses but the call did not ask for one")]
    ResponseRequired {
        /// The called domain.
        domain: String,
        /// The called service.
        service: String,
    },
    /// The handler returned something other than a JSON object as a response.
    #[error("service {domain}.{service} returned an invalid response: {message}")]
    InvalidResponse {
        /// The called domain.
        domain: String,
        /// The called service.
        service: String,
        /// What was wrong with it.
        message: String,
    },
    /// The handler failed.
    #[error("service handler failed: {0}")]
    Handler(String),
    /// The schema given at registration is itself broken.
    #[error("invalid service schema: {0}")]
    InvalidSchema(#[from] SchemaDefinitionError),
}

impl ServiceError {
    /// A handler failure with `message`.
    pub fn handler(message: impl Into<String>) -> Self {
        Self::Handler(message.into())
    }

    /// A validation failure at `path`, for handlers that find the data invalid themselves.
    pub fn validation(path: &[&str], message: impl Into<String>) -> Self {
        Self::Validation(ValidationErrors::single(
            path.iter()
                .map(|key| PathSegment::Key((*key).to_owned()))
                .collect(),
            message,
        ))
    }
}

impl From<EntityIdError> for ServiceError {
    fn from(err: EntityIdError) -> Self {
        Self::InvalidName(err.to_string())
    }
}

/// What a registered service accepts and returns, for callers and front ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceDescription {
    /// The schema its data is validated with, if any.
    pub schema: Option<Schema>,
    /// Whether it returns response data.
    pub supports_response: SupportsResponse,
}

/// A service handler: an async function of the call.
pub type ServiceHandler = Arc<
    dyn Fn(ServiceCall) -> BoxFuture<'static, Result<Option<Value>, ServiceError>> + Send + Sync,
>;

/// A registered service.
struct RegisteredService {
    /// Its schema and response mode.
    description: ServiceDescription,
    /// Its handler.
    handler: ServiceHandler,
}

/// A request to call a service; built with [`ServiceRequest::new`] and the `with_*` methods.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ServiceRequest {
    /// The service's domain.
    pub domain: String,
    /// The service's name.
    pub service: String,
    /// Parameters; target keys (`entity_id`, ...) found here are moved to the target.
    pub data: Map<String, Value>,
    /// What the call is aimed at.
    pub target: Option<ServiceTarget>,
    /// What caused the call; a fresh context when `None`.
    pub context: Option<Context>,
    /// Whether response data is wanted.
    pub return_response: bool,
}

impl ServiceRequest {
    /// A call of `domain.service` with no data.
    pub fn new(domain: impl Into<String>, service: impl Into<String>) -> Self {
        Self {
            domain: domain.into(),
            service: service.into(),
            ..Self::default()
        }
    }

    /// Sets the data.
    pub fn with_data(mut self, data: Map<String, Value>) -> Self {
        self.data = data;
        self
    }

    /// Sets the target.
    pub fn with_target(mut self, target: ServiceTarget) -> Self {
        self.target = Some(target);
        self
    }

    /// Sets the context.
    pub fn with_context(mut self, context: Context) -> Self {
        self.context = Some(context);
        self
    }

    /// Asks for response data.
    pub fn with_response(mut self) -> Self {
        self.return_response = true;
        self
    }
}

/// The shared part of the registry.
struct ServiceRegistryInner {
    /// Services by domain, then by name.
    services: RwLock<HashMap<String, HashMap<String, Arc<RegisteredService>>>>,
    /// Where registrations and calls are announced.
    bus: EventBus,
}

/// The service registry: a cheap-to-clone handle.
#[derive(Clone)]
pub struct ServiceRegistry {
    /// Shared services.
    inner: Arc<ServiceRegistryInner>,
}

impl std::fmt::Debug for ServiceRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceRegistry")
            .field("services", &self.services().keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Lowercases and checks a `(domain, service)` pair.
fn normalize(domain: &str, service: &str) -> Result<(String, String), ServiceError> {
    let domain = domain.to_lowercase();
    let service = service.to_lowercase();
    validate_domain(&domain)?;
    // Service names follow the same slug rules as domains.
    validate_domain(&service).map_err(|_| ServiceError::InvalidName(service.clone()))?;
    Ok((domain, service))
}

impl ServiceRegistry {
    /// An empty registry announcing on `bus`.
    pub fn new(bus: EventBus) -> Self {
        Self {
            inner: Arc::new(ServiceRegistryInner {
                services: RwLock::new(HashMap::new()),
                bus,
            }),
        }
    }

    /// Registers (or replaces, as Home Assistant does) `domain.service` and fires `service_registered`.
    pub fn register<F, Fut>(
        &self,
        domain: &str,
        service: &str,
        schema: Option<Schema>,
        supports_response: SupportsResponse,
        handler: F,
    ) -> Result<(), ServiceError>
    where
        F: Fn(ServiceCall) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Option<Value>, ServiceError>> + Send + 'static,
    {
        let handler: ServiceHandler = Arc::new(move |call| Box::pin(handler(call)));
        self.register_handler(domain, service, schema, supports_response, handler)
    }

    /// Like [`ServiceRegistry::register`], with an already boxed handler.
    pub fn register_handler(
        &self,
        domain: &str,
        service: &str,
        schema: Option<Schema>,
        supports_response: SupportsResponse,
        handler: ServiceHandler,
    ) -> Result<(), ServiceError> {
        let (domain, service) = normalize(domain, service)?;
        if let Some(schema) = &schema {
            schema.check()?;
        }
        let registered = Arc::new(RegisteredService {
            description: ServiceDescription {
                schema,
                supports_response,
            },
            handler,
        });
        self.inner
            .services
            .write()
            .entry(domain.clone())
            .or_default()
            .insert(service.clone(), registered);
        self.announce(EVENT_SERVICE_REGISTERED, &domain, &service);
        Ok(())
    }

    /// Removes `domain.service`, firing `service_removed`; false when it was not registered.
    pub fn remove(&self, domain: &str, service: &str) -> bool {
        let Ok((domain, service)) = normalize(domain, service) else {
            return false;
        };
        let removed = {
            let mut services = self.inner.services.write();
            let removed = services
                .get_mut(&domain)
                .and_then(|by_name| by_name.remove(&service))
                .is_some();
            if services.get(&domain).is_some_and(HashMap::is_empty) {
                services.remove(&domain);
            }
            removed
        };
        if removed {
            self.announce(EVENT_SERVICE_REMOVED, &domain, &service);
        }
        removed
    }

    fn announce(&self, event_type: &str, domain: &str, service: &str) {
        let mut data = Map::new();
        data.insert("domain".into(), Value::String(domain.to_owned()));
        data.insert("service".into(), Value::String(service.to_owned()));
        if let Err(err) = self.inner.bus.fire(event_type, data, None) {
            tracing::error!(%err, event_type, "could not fire service event");
        }
    }

    /// True when `domain.service` is registered.
    pub fn has_service(&self, domain: &str, service: &str) -> bool {
        self.describe(domain, service).is_some()
    }

    /// The schema and response mode of `domain.service`.
    pub fn describe(&self, domain: &str, service: &str) -> Option<ServiceDescription> {
        let (domain, service) = normalize(domain, service).ok()?;
        self.inner
            .services
            .read()
            .get(&domain)?
            .get(&service)
            .map(|registered| registered.description.clone())
    }

    /// Every registered service, by domain then name.
    pub fn services(&self) -> BTreeMap<String, BTreeMap<String, ServiceDescription>> {
        self.inner
            .services
            .read()
            .iter()
            .map(|(domain, by_name)| {
                let by_name = by_name
                    .iter()
                    .map(|(name, registered)| (name.clone(), registered.description.clone()))
                    .collect();
                (domain.clone(), by_name)
            })
            .collect()
    }

    /// Calls a service and waits for it to finish.
    ///
    /// Target keys in the data join the target; the rest is validated by the service's
    /// schema; `call_service` is fired; the handler runs on its own task (a panic
    /// becomes [`ServiceError::Handler`]). Returns the response when one was asked for.
    pub async fn call(
        &self,
        request: ServiceRequest,
    ) -> Result<Option<ServiceResponse>, ServiceError> {
        let (domain, service) = normalize(&request.domain, &request.service)?;
        let registered = self
            .inner
            .services
            .read()
            .get(&domain)
            .and_then(|by_name| by_name.get(&service))
            .cloned()
            .ok_or_else(|| ServiceError::NotFound {
                domain: domain.clone(),
                service: service.clone(),
            })?;
        let supports_response = registered.description.supports_response;
        if request.return_response && supports_response == SupportsResponse::None {
            return Err(ServiceError::ResponseNotSupported { domain, service });
        }
        if !request.return_response && supports_response == SupportsResponse::Only {
            return Err(ServiceError::ResponseRequired { domain, service });
        }

        let schema = registered.description.schema.as_ref();
        let mut target = request.target.clone().unwrap_or_default();
        let mut data = Map::new();
        for (key, value) in &request.data {
            let declared = schema.is_some_and(|schema| schema.field(key).is_some());
            if TARGET_KEYS.contains(&key.as_str()) {
                target
                    .absorb(key, value)
                    .map_err(ServiceError::Validation)?;
                if !declared {
                    continue;
                }
            }
            data.insert(key.clone(), value.clone());
        }
        let data = match schema {
            Some(schema) => schema
                .validate_map(&data)
                .map_err(ServiceError::Validation)?,
            None => data,
        };

        let context = request.context.clone().unwrap_or_default();
        // The `call_service` event copies the data and target: built only when someone listens.
        if self.inner.bus.has_listeners_for(EVENT_CALL_SERVICE) {
            let mut service_data = data.clone();
            if let Value::Object(target_fields) =
                serde_json::to_value(&target).unwrap_or(Value::Null)
            {
                service_data.extend(target_fields);
            }
            let mut event = Map::new();
            event.insert("domain".into(), Value::String(domain.clone()));
            event.insert("service".into(), Value::String(service.clone()));
            event.insert("service_data".into(), Value::Object(service_data));
            if let Err(err) = self
                .inner
                .bus
                .fire(EVENT_CALL_SERVICE, event, Some(context.clone()))
            {
                tracing::error!(%err, "could not fire call_service");
            }
        }

        let call = ServiceCall {
            domain: domain.clone(),
            service: service.clone(),
            data,
            context,
            target,
            return_response: request.return_response,
        };
        // The handler runs in the caller's task (no hop to another task: a service call is on
        // the hot path of every proxy call); a panic still comes back as a handler error.
        let handler = std::panic::AssertUnwindSafe((registered.handler)(call));
        let response = match futures::FutureExt::catch_unwind(handler).await {
            Ok(result) => result?,
            Err(_) => {
                tracing::error!(%domain, %service, "service handler panicked");
                return Err(ServiceError::Handler(format!(
                    "the handler of {domain}.{service} panicked"
                )));
            }
        };
        if !request.return_response {
            return Ok(None);
        }
        match response {
            Some(Value::Object(map)) => Ok(Some(map)),
            other => Err(ServiceError::InvalidResponse {
                domain,
                service,
                message: format!(
                    "expected a dictionary, got {}",
                    other.map_or_else(|| "nothing".to_owned(), |value| value.to_string())
                ),
            }),
        }
    }
}
