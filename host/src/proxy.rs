//! The proxy entity: one generic type, driven by the domain catalog, standing on main for an
//! entity that lives in a sandbox. It mirrors the entity's description (name, icon, device
//! class, category, features, device) and state; every domain service and query on it is one
//! RPC to the sandbox, with the caller's context remembered so the resulting state change comes
//! back attributed to the caller.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;

use futures::future::BoxFuture;
use homecore::entity::{Entity, EntityHandle, EntityInfo, EntityServiceCall};
use homecore::{Context, ServiceError};
use parking_lot::Mutex;
use sandbox_proto::{CallError, Channel, json, wire};
use sandbox_wire::{entity_info_from_wire, service_error_from_remote};
use serde_json::{Map, Value};

use crate::context_cache::ContextCache;
use crate::limits;
use crate::refusals::GateCounters;

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
    /// The group's refusals: replies over a bound are counted at `bounds`.
    pub refused: Arc<GateCounters>,
    /// The sandbox answers joined entity calls one outcome per entity (feature
    /// `entity_outcomes`): same-tick calls of one service on several proxies leave as one RPC.
    pub joins_entity_calls: bool,
    /// Joined calls waiting to leave, by what they share.
    pub open_batches: Mutex<HashMap<BatchKey, Vec<Joined>>>,
}

/// What entity calls must share to leave in one `call_service`: the same service, data,
/// context and response mode (one service call fanned out over several entities).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BatchKey {
    domain: String,
    service: String,
    data_json: Bytes,
    context_id: String,
    return_response: bool,
}

/// One entity call waiting in a batch for its own outcome.
pub struct Joined {
    sandbox_entity_id: String,
    outcome: oneshot::Sender<Result<Option<Value>, ServiceError>>,
}

/// Drops the open batch of a leader cancelled before sending it, so the calls that joined fail
/// at once (their outcome senders drop) instead of waiting for a send that never comes.
struct OpenBatchGuard<'a> {
    link: &'a ProxyLink,
    key: Option<BatchKey>,
}

impl Drop for OpenBatchGuard<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.link.open_batches.lock().remove(&key);
        }
    }
}

impl ProxyLink {
    /// Runs one entity's call, joined with the other calls of this service call made in the
    /// same tick (X4): the first call opens a batch, the calls fanned out next to it (an area
    /// call's `join_all`) join it, and the one that completes the fan-out sends one
    /// `call_service` with `per_entity` and hands every call its own outcome. When part of the
    /// fan-out is not in this group the batch never fills: the first call, after yielding once,
    /// sends whatever joined.
    async fn call_joined(
        &self,
        key: BatchKey,
        sandbox_entity_id: &str,
        fanned_out_to: usize,
    ) -> Result<Option<Value>, ServiceError> {
        let (outcome_tx, outcome_rx) = oneshot::channel();
        let joined = Joined {
            sandbox_entity_id: sandbox_entity_id.to_owned(),
            outcome: outcome_tx,
        };
        // The call that completes the fan-out sends the batch at once; the first one yields
        // once and sends whatever joined, in case some of the fan-out is not in this group.
        let (leads, full) = {
            let mut open = self.open_batches.lock();
            match open.entry(key.clone()) {
                Entry::Occupied(mut batch) => {
                    batch.get_mut().push(joined);
                    let full = batch.get().len() >= fanned_out_to;
                    (false, full.then(|| batch.remove()))
                }
                Entry::Vacant(vacant) => {
                    vacant.insert(vec![joined]);
                    (true, None)
                }
            }
        };
        if let Some(batch) = full {
            self.send_batch(&key, batch).await;
        } else if leads {
            let mut guard = OpenBatchGuard {
                link: self,
                key: Some(key),
            };
            tokio::task::yield_now().await;
            let key = guard.key.take().expect("the guard holds the key until now");
            let batch = self.open_batches.lock().remove(&key);
            if let Some(batch) = batch {
                self.send_batch(&key, batch).await;
            }
        }
        outcome_rx.await.unwrap_or_else(|_| {
            Err(ServiceError::handler(format!(
                "the call to sandbox group {} was cancelled",
                self.group
            )))
        })
    }

    /// Sends a batch and answers each of its calls.
    async fn send_batch(&self, key: &BatchKey, batch: Vec<Joined>) {
        let request = wire::CallService {
            domain: key.domain.clone(),
            service: key.service.clone(),
            entity_ids: batch
                .iter()
                .map(|joined| joined.sandbox_entity_id.clone())
                .collect(),
            data_json: key.data_json.clone(),
            context_id: key.context_id.clone(),
            return_response: key.return_response,
            per_entity: true,
        };
        let result = match self
            .channel
            .call_timeout(&request, PROXY_CALL_TIMEOUT)
            .await
        {
            Ok(result) => result,
            Err(error) => {
                let message = self.call_error(&key.domain, &key.service, error);
                for joined in batch {
                    let _ = joined.outcome.send(Err(message.clone()));
                }
                return;
            }
        };
        let mut outcomes: HashMap<String, wire::EntityOutcome> = result
            .outcomes
            .into_iter()
            .map(|outcome| (outcome.entity_id.clone(), outcome))
            .collect();
        for joined in batch {
            let answer = match outcomes.remove(&joined.sandbox_entity_id) {
                None => Err(ServiceError::handler(format!(
                    "sandbox group {} sent no outcome for {}",
                    self.group, joined.sandbox_entity_id
                ))),
                Some(outcome) => match outcome.error {
                    Some(error) => Err(service_error_from_remote(
                        &key.domain,
                        &key.service,
                        &sandbox_proto::RemoteError::from_wire(error),
                    )),
                    None => self.read_response(key.return_response, outcome.response_json),
                },
            };
            let _ = joined.outcome.send(answer);
        }
    }

    /// A reply's JSON, within [`limits::MAX_RESPONSE_BYTES`] and the depth bound; over them, the
    /// caller gets an error and the refusal is counted at `bounds`.
    pub fn read_json(&self, field: &str, bytes: &[u8]) -> Result<Value, ServiceError> {
        limits::bounded_value(field, bytes, limits::MAX_RESPONSE_BYTES).map_err(|error| {
            let refusal = self.refused.over_bound(error);
            ServiceError::handler(format!(
                "sandbox group {} sent a reply main refused: {}",
                self.group, refusal.message
            ))
        })
    }

    /// An entity's or service's response as the caller gets it: the JSON the sandbox sent,
    /// when asked for.
    pub fn read_response(
        &self,
        return_response: bool,
        response_json: Option<Bytes>,
    ) -> Result<Option<Value>, ServiceError> {
        match response_json {
            Some(bytes) if return_response => self.read_json("response_json", &bytes).map(Some),
            _ => Ok(None),
        }
    }

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

/// The last state the sandbox reported, checked against main's bounds by the bridge.
#[derive(Debug, Clone, Default)]
pub struct Mirrored {
    /// The state (empty: none).
    pub state: String,
    /// Its attributes.
    pub attributes: Map<String, Value>,
    /// Whether the sandbox says the entity is available.
    pub available: bool,
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
        mirrored: Mirrored,
    ) -> Self {
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

    /// The entity's domain (fixed for the proxy's life).
    pub fn domain(&self) -> String {
        self.description.lock().domain.clone()
    }

    /// Applies a state the sandbox pushed, attributed to `context`.
    pub fn apply_state(&self, mirrored: Mirrored, context: Context) {
        *self.state.lock() = mirrored;
        self.write(Some(context));
    }

    /// The description it was last given.
    pub fn description(&self) -> wire::EntityDescription {
        self.description.lock().clone()
    }

    /// Takes a new description (a registry update in the sandbox) and rewrites the state.
    pub fn redescribe(&self, description: wire::EntityDescription, state: Option<Mirrored>) {
        *self.info.lock() = proxy_info(&description);
        *self.description.lock() = description;
        if let Some(state) = state {
            *self.state.lock() = state;
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
            let data_json = json::object_to_bytes(&call.data);
            let context_id = self.link.contexts.remember(&call.context);
            if self.link.joins_entity_calls && call.fanned_out_to > 1 {
                let key = BatchKey {
                    domain,
                    service: call.service,
                    data_json,
                    context_id,
                    return_response: call.return_response,
                };
                return self
                    .link
                    .call_joined(key, &self.sandbox_entity_id, call.fanned_out_to)
                    .await;
            }
            let request = wire::CallService {
                domain: domain.clone(),
                service: call.service.clone(),
                entity_ids: vec![self.sandbox_entity_id.clone()],
                data_json,
                context_id,
                return_response: call.return_response,
                per_entity: false,
            };
            let result = self
                .link
                .channel
                .call_timeout(&request, PROXY_CALL_TIMEOUT)
                .await
                .map_err(|error| self.link.call_error(&domain, &call.service, error))?;
            self.link
                .read_response(call.return_response, result.response_json)
        })
    }

    fn query<'a>(
        &'a self,
        method: &'a str,
        args: Map<String, Value>,
    ) -> BoxFuture<'a, Result<Value, ServiceError>> {
        self.query_with_context(method, args, Context::new())
    }

    /// The query as one RPC, with the caller's context remembered as a service call's is, so
    /// what the query causes in the sandbox comes back attributed to the caller.
    fn query_with_context<'a>(
        &'a self,
        method: &'a str,
        args: Map<String, Value>,
        context: Context,
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
                context_id: self.link.contexts.remember(&context),
            };
            let domain = self.description.lock().domain.clone();
            let result = self
                .link
                .channel
                .call_timeout(&request, PROXY_CALL_TIMEOUT)
                .await
                .map_err(|error| self.link.call_error(&domain, method, error))?;
            self.link.read_json("result_json", &result.result_json)
        })
    }
}

#[cfg(test)]
mod tests;
