//! The flow runner: config and options flows of sandboxed integrations, driven by main.
//!
//! Flows run in the private core's own flow managers, so validation, menus, unique-id checks
//! against flows in progress and external/progress rules are the core's. One thing differs:
//! main owns config entries, so a finished flow must not create (or update) an entry here. Every
//! integration flow handler is wrapped: when it returns `create_entry`, the wrapper keeps the
//! result (with the flow's unique id) and ends the local flow with an abort carrying
//! [`CAPTURED_CREATE_ENTRY`]; the runner hands the kept `create_entry` to main instead.

use std::collections::HashMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use homecore::data_entry_flow::FlowStepContext;
use homecore::{
    ConfigEntry, Core, EntrySetupHandler, FlowContext, FlowError, FlowHandler, FlowResult,
    FlowStep, IntegrationHandlers,
};
use parking_lot::Mutex;
use sandbox_proto::{RemoteError, json, wire};
use serde_json::{Map, Value};

use sandbox_wire::{flow_error_to_remote, flow_result_to_wire};

/// The abort reason that marks a flow whose `create_entry` was kept for main.
pub const CAPTURED_CREATE_ENTRY: &str = "create_entry_sent_to_main";

/// The most kept `create_entry` results at once. Each is taken as soon as its step returns, so
/// more than a handful means results are leaking; past this the oldest is dropped.
pub const MAX_CAPTURED_RESULTS: usize = 256;

/// A kept `create_entry` and the unique id its flow set.
type Kept = (FlowStep, Option<String>);

/// `create_entry` results kept for main, by flow id.
#[derive(Default)]
struct Captured {
    /// Kept results by flow id, with insertion order for eviction.
    by_flow: Mutex<(HashMap<String, Kept>, Vec<String>)>,
}

impl Captured {
    fn keep(&self, flow_id: &str, step: FlowStep, unique_id: Option<String>) {
        let mut guard = self.by_flow.lock();
        let (map, order) = &mut *guard;
        if map.len() >= MAX_CAPTURED_RESULTS && !order.is_empty() {
            let oldest = order.remove(0);
            map.remove(&oldest);
        }
        map.insert(flow_id.to_owned(), (step, unique_id));
        order.push(flow_id.to_owned());
    }

    fn take(&self, flow_id: &str) -> Option<Kept> {
        let mut guard = self.by_flow.lock();
        let (map, order) = &mut *guard;
        order.retain(|id| id != flow_id);
        map.remove(flow_id)
    }
}

/// Wraps an integration's flow handler so its `create_entry` goes to main.
struct CapturingFlow {
    inner: Box<dyn FlowHandler>,
    captured: Arc<Captured>,
}

impl FlowHandler for CapturingFlow {
    fn step<'a>(
        &'a mut self,
        flow: &'a FlowStepContext,
        step_id: &'a str,
        input: Option<Map<String, Value>>,
    ) -> BoxFuture<'a, Result<FlowStep, FlowError>> {
        Box::pin(async move {
            let step = self.inner.step(flow, step_id, input).await?;
            if matches!(step, FlowStep::CreateEntry { .. }) {
                self.captured
                    .keep(flow.flow_id(), step, flow.context().unique_id);
                return Err(FlowError::abort(CAPTURED_CREATE_ENTRY));
            }
            Ok(step)
        })
    }

    fn on_remove(&mut self) -> BoxFuture<'_, ()> {
        self.inner.on_remove()
    }
}

/// The integration handlers a sandbox core uses: the integrations' own, with every flow
/// handler wrapped (see the module docs).
pub struct SandboxHandlers {
    inner: Arc<dyn IntegrationHandlers>,
    captured: Arc<Captured>,
}

impl IntegrationHandlers for SandboxHandlers {
    fn config_flow<'a>(&'a self, domain: &'a str) -> BoxFuture<'a, Option<Box<dyn FlowHandler>>> {
        Box::pin(async move {
            let inner = self.inner.config_flow(domain).await?;
            Some(Box::new(CapturingFlow {
                inner,
                captured: Arc::clone(&self.captured),
            }) as Box<dyn FlowHandler>)
        })
    }

    fn options_flow<'a>(
        &'a self,
        entry: &'a ConfigEntry,
    ) -> BoxFuture<'a, Option<Box<dyn FlowHandler>>> {
        Box::pin(async move {
            let inner = self.inner.options_flow(entry).await?;
            Some(Box::new(CapturingFlow {
                inner,
                captured: Arc::clone(&self.captured),
            }) as Box<dyn FlowHandler>)
        })
    }

    fn entry_setup<'a>(
        &'a self,
        domain: &'a str,
    ) -> BoxFuture<'a, Option<Arc<dyn EntrySetupHandler>>> {
        self.inner.entry_setup(domain)
    }
}

/// Runs flows for main.
#[derive(Clone)]
pub struct FlowRunner {
    core: Core,
    captured: Arc<Captured>,
}

impl FlowRunner {
    /// Wraps `handlers` for the sandbox core and returns the runner and the wrapped handlers
    /// (install those on the core).
    pub fn new(core: Core, handlers: Arc<dyn IntegrationHandlers>) -> (Self, Arc<SandboxHandlers>) {
        let captured = Arc::new(Captured::default());
        let wrapped = Arc::new(SandboxHandlers {
            inner: handlers,
            captured: Arc::clone(&captured),
        });
        (Self { core, captured }, wrapped)
    }

    /// `flow_init`.
    pub async fn init(&self, request: wire::FlowInit) -> Result<wire::FlowResult, RemoteError> {
        let data = optional_object("data_json", &request.data_json)?;
        crate::entries::adopt_core_config(&self.core, request.core_config.as_ref())?;
        let kind = wire::FlowKind::try_from(request.kind).unwrap_or(wire::FlowKind::Unspecified);
        let result = match kind {
            wire::FlowKind::Config => {
                let mut context: FlowContext = if request.context_json.is_empty() {
                    FlowContext::default()
                } else {
                    serde_json::from_slice(&request.context_json).map_err(|error| {
                        RemoteError::bad_request(format!("field `context_json`: {error}"))
                    })?
                };
                context.source = if request.source.is_empty() {
                    "user".to_owned()
                } else {
                    request.source.clone()
                };
                self.core
                    .config_entries()
                    .flow()
                    .init(&request.handler, context, data)
                    .await
            }
            wire::FlowKind::Options => {
                let entry = request
                    .entry
                    .as_ref()
                    .ok_or_else(|| RemoteError::bad_request("an options flow needs its entry"))?;
                if self.core.config_entries().entry(&entry.entry_id).is_none() {
                    return Err(RemoteError::not_found(format!(
                        "config entry {} is not loaded in this sandbox",
                        entry.entry_id
                    )));
                }
                self.core
                    .config_entries()
                    .options()
                    .init(&entry.entry_id, data)
                    .await
            }
            wire::FlowKind::Unspecified => {
                return Err(RemoteError::bad_request("flow_init needs a kind"));
            }
        };
        self.answer(result)
    }

    /// `flow_step`.
    pub async fn step(&self, request: wire::FlowStep) -> Result<wire::FlowResult, RemoteError> {
        let input = optional_object("user_input_json", &request.user_input_json)?;
        let entries = self.core.config_entries();
        let result = if entries
            .flow()
            .progress()
            .iter()
            .any(|flow| flow.flow_id == request.flow_id)
        {
            entries.flow().configure(&request.flow_id, input).await
        } else if entries
            .options()
            .progress()
            .iter()
            .any(|flow| flow.flow_id == request.flow_id)
        {
            entries.options().configure(&request.flow_id, input).await
        } else {
            Err(FlowError::UnknownFlow(request.flow_id.clone()))
        };
        self.answer(result)
    }

    /// `flow_abort`: aborting a flow that is already gone is not an error (main aborts its
    /// proxy flows whenever they go away, whatever the sandbox flow did).
    pub async fn abort(
        &self,
        request: wire::FlowAbort,
    ) -> Result<wire::FlowAbortResult, RemoteError> {
        let entries = self.core.config_entries();
        let outcome = match entries.flow().abort(&request.flow_id).await {
            Err(FlowError::UnknownFlow(_)) => entries.options().abort(&request.flow_id).await,
            other => other,
        };
        match outcome {
            Ok(()) | Err(FlowError::UnknownFlow(_)) => Ok(wire::FlowAbortResult {}),
            Err(error) => Err(flow_error_to_remote(&error)),
        }
    }

    fn answer(
        &self,
        result: Result<FlowResult, FlowError>,
    ) -> Result<wire::FlowResult, RemoteError> {
        let result = result.map_err(|error| flow_error_to_remote(&error))?;
        if let FlowStep::Abort { reason, .. } = &result.step
            && reason == CAPTURED_CREATE_ENTRY
            && let Some((step, unique_id)) = self.captured.take(&result.flow_id)
        {
            let created = FlowResult {
                flow_id: result.flow_id.clone(),
                handler: result.handler.clone(),
                step,
            };
            return Ok(flow_result_to_wire(&created, unique_id));
        }
        Ok(flow_result_to_wire(&result, None))
    }
}

fn optional_object(
    field: &'static str,
    bytes: &[u8],
) -> Result<Option<Map<String, Value>>, RemoteError> {
    if bytes.is_empty() {
        return Ok(None);
    }
    match json::from_bytes(bytes) {
        Ok(Value::Object(object)) => Ok(Some(object)),
        Ok(Value::Null) => Ok(None),
        Ok(_) => Err(RemoteError::bad_request(format!(
            "field `{field}` must be a JSON object"
        ))),
        Err(error) => Err(RemoteError::bad_request(format!(
            "field `{field}`: {error}"
        ))),
    }
}
