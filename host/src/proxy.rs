//! The proxy entity: one generic type, driven by the domain catalog, standing on main for an
//! entity that lives in a sandbox. It mirrors the entity's description (name, icon, device
//! class, category, features, device) and state; every domain service and query on it is one
//! RPC to the sandbox, with the caller's context remembered so the resulting state change comes
//! back attributed to the caller.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use homecore::entity::{Entity, EntityHandle, EntityInfo, EntityServiceCall};
use homecore::{Context, ServiceError};
use parking_lot::Mutex;
use sandbox_proto::{CallError, Channel, json, wire};
use sandbox_runtime::convert::{entity_info_from_wire, service_error_from_remote};
use serde_json::{Map, Value};

use crate::context_cache::ContextCache;

/// How long a service call or query through a proxy may take before main gives up on the
/// sandbox (the watchdog restarts a sandbox that hangs for good).
pub const PROXY_CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// What a group's proxies share with its bridge.
pub struct ProxyLink {
    /// The group, for error messages.
    pub group: String,
    /// The group's channel (of this bridge's generation).
    pub channel: Channel,
    /// False once the sandbox is gone: every proxy reads unavailable.
    pub alive: AtomicBool,
    /// Contexts main issued to this group.
    pub contexts: Arc<ContextCache>,
}

impl ProxyLink {
    fn call_error(&self, domain: &str, service: &str, error: CallError) -> ServiceError {
        match error {
            CallError::Remote { error, .. } => service_error_from_remote(domain, service, &error),
            other => ServiceError::handler(format!(
                "sandbox group {} could not run {domain}.{service}: {other}",
                self.group
            )),
        }
    }
}

/// The last state the sandbox reported.
#[derive(Debug, Clone, Default)]
struct Mirrored {
    state: String,
    attributes: Map<String, Value>,
    available: bool,
}

/// An entity of a sandbox, as main sees it.
pub struct ProxyEntity {
    link: Arc<ProxyLink>,
    /// The entity's id inside the sandbox (the key of every message about it).
    sandbox_entity_id: String,
    description: Mutex<wire::EntityDescription>,
    /// The description as the core reads it, built once per description (the core reads it
    /// on every state write and service call).
    info: Mutex<EntityInfo>,
    state: Mutex<Mirrored>,
    handle: Mutex<Option<EntityHandle>>,
}

impl ProxyEntity {
    /// A proxy for a registered entity with its initial state.
    pub fn new(
        link: Arc<ProxyLink>,
        description: wire::EntityDescription,
        state: Option<&wire::EntityState>,
    ) -> Self {
        let mirrored = state
            .map(|state| Mirrored {
                state: state.state.clone(),
                attributes: json::object_from_bytes(&state.attributes_json).unwrap_or_default(),
                available: state.available,
            })
            .unwrap_or_default();
        Self {
            link,
            sandbox_entity_id: description.entity_id.clone(),
            info: Mutex::new(proxy_info(&description)),
            description: Mutex::new(description),
            state: Mutex::new(mirrored),
            handle: Mutex::new(None),
        }
    }

    /// The entity's id inside the sandbox.
    pub fn sandbox_entity_id(&self) -> &str {
        &self.sandbox_entity_id
    }

    /// The proxy's entity id on main, once added.
    pub fn entity_id(&self) -> Option<String> {
        self.handle
            .lock()
            .as_ref()
            .map(|handle| handle.entity_id().to_owned())
    }

    /// Applies a state the sandbox pushed, attributed to `context`.
    pub fn apply_state(&self, change: &wire::StateChanged, context: Context) {
        *self.state.lock() = Mirrored {
            state: change.state.clone(),
            attributes: json::object_from_bytes(&change.attributes_json).unwrap_or_default(),
            available: change.available,
        };
        self.write(Some(context));
    }

    /// Takes a new description (a registry update in the sandbox) and rewrites the state.
    pub fn redescribe(
        &self,
        description: wire::EntityDescription,
        state: Option<&wire::EntityState>,
    ) {
        *self.info.lock() = proxy_info(&description);
        *self.description.lock() = description;
        if let Some(state) = state {
            *self.state.lock() = Mirrored {
                state: state.state.clone(),
                attributes: json::object_from_bytes(&state.attributes_json).unwrap_or_default(),
                available: state.available,
            };
        }
        self.write(None);
    }

    /// Rewrites the state (after the link went down or up).
    pub fn refresh(&self) {
        self.write(None);
    }

    fn write(&self, context: Option<Context>) {
        let handle = self.handle.lock().clone();
        if let Some(handle) = handle {
            let written = match context {
                Some(context) => handle.write_state_with_context(context),
                None => handle.write_state(),
            };
            if let Err(error) = written {
                tracing::debug!(entity_id = handle.entity_id(), %error, "proxy state not written");
            }
        }
    }
}

/// What the core reads of a proxy's description.
fn proxy_info(description: &wire::EntityDescription) -> EntityInfo {
    let mut info = entity_info_from_wire(description);
    // Two integrations of one group may reuse a unique id; on main both are the platform of
    // the group's proxies, so the integration is part of the proxy's unique id.
    info.unique_id = description
        .unique_id
        .as_ref()
        .map(|unique_id| format!("{}:{unique_id}", description.platform));
    info
}

impl Entity for ProxyEntity {
    fn info(&self) -> EntityInfo {
        self.info.lock().clone()
    }

    fn available(&self) -> bool {
        self.link.alive.load(Ordering::Acquire) && self.state.lock().available
    }

    fn state(&self) -> Option<String> {
        let state = self.state.lock();
        (!state.state.is_empty()).then(|| state.state.clone())
    }

    fn attributes(&self) -> Map<String, Value> {
        self.state.lock().attributes.clone()
    }

    fn added_to_core(&self, handle: EntityHandle) -> BoxFuture<'_, ()> {
        *self.handle.lock() = Some(handle);
        Box::pin(async {})
    }

    fn call_service(
        &self,
        call: EntityServiceCall,
    ) -> BoxFuture<'_, Result<Option<Value>, ServiceError>> {
        Box::pin(async move {
            let domain = self.description.lock().domain.clone();
            if !self.link.alive.load(Ordering::Acquire) {
                return Err(ServiceError::handler(format!(
                    "sandbox group {} is not running",
                    self.link.group
                )));
            }
            let request = wire::CallService {
                domain: domain.clone(),
                service: call.service.clone(),
                entity_ids: vec![self.sandbox_entity_id.clone()],
                data_json: json::object_to_bytes(&call.data),
                context_id: self.link.contexts.remember(&call.context),
                return_response: call.return_response,
            };
            let result = self
                .link
                .channel
                .call_timeout(&request, PROXY_CALL_TIMEOUT)
                .await
                .map_err(|error| self.link.call_error(&domain, &call.service, error))?;
            match result.response_json {
                Some(bytes) if call.return_response => {
                    json::from_bytes(&bytes).map(Some).map_err(|error| {
                        ServiceError::handler(format!(
                            "the sandbox sent an unreadable response: {error}"
                        ))
                    })
                }
                _ => Ok(None),
            }
        })
    }

    fn query<'a>(
        &'a self,
        method: &'a str,
        args: Map<String, Value>,
    ) -> BoxFuture<'a, Result<Value, ServiceError>> {
        Box::pin(async move {
            if !self.link.alive.load(Ordering::Acquire) {
                return Err(ServiceError::handler(format!(
                    "sandbox group {} is not running",
                    self.link.group
                )));
            }
            let request = wire::EntityQuery {
                entity_id: self.sandbox_entity_id.clone(),
                method: method.to_owned(),
                args_json: json::object_to_bytes(&args),
                context_id: self.link.contexts.remember(&Context::new()),
            };
            let domain = self.description.lock().domain.clone();
            let result = self
                .link
                .channel
                .call_timeout(&request, PROXY_CALL_TIMEOUT)
                .await
                .map_err(|error| self.link.call_error(&domain, method, error))?;
            json::from_bytes(&result.result_json).map_err(|error| {
                ServiceError::handler(format!("the sandbox sent an unreadable result: {error}"))
            })
        })
    }
}
