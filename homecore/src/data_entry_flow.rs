//! Data entry flows: multi-step forms driven by a [`FlowHandler`], as Home Assistant's `data_entry_flow`.
//!
//! A flow is created for a handler key (an integration domain for config flows, an
//! entry id for options flows), runs its first step, and is then driven by
//! `configure` calls until a step finishes it (`create_entry` or `abort`). The
//! generic engine lives here; what finishing means is decided by its owner
//! (see `config_entries`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use futures::future::BoxFuture;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config_entries::ConfigEntry;
use crate::core::Core;
use crate::event::{EVENT_DATA_ENTRY_FLOW_PROGRESSED, EventBus};
use crate::schema::{PathSegment, Schema, ValidationErrors};
use crate::unwind::catch_panic;

#[cfg(test)]
mod tests;

/// Flows that may be in progress at once per manager; more are refused with
/// [`FlowError::TooManyFlows`]. A person runs a handful; discovery may start one per
/// found device; anything near this bound is a runaway integration or peer.
pub const MAX_FLOWS_IN_PROGRESS: usize = 1024;

/// Facts about why and for what a flow runs.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct FlowContext {
    /// What started it (`user`, `import`, `reauth`, `zeroconf`, ...); also the first step's id.
    pub source: String,
    /// The unique id of what is being configured, once the handler knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unique_id: Option<String>,
    /// The entry a reauth/reconfigure flow is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry_id: Option<String>,
    /// Values for the flow's title in a front end.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub title_placeholders: Map<String, Value>,
    /// Whether the person asked for advanced options.
    #[serde(default)]
    pub show_advanced_options: bool,
}

impl FlowContext {
    /// A context for `source`.
    pub fn new(source: impl Into<String>) -> Self {
        Self {
            source: source.into(),
            ..Self::default()
        }
    }
}

/// One choice of a menu step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MenuOption {
    /// The step chosen by this option.
    pub step_id: String,
    /// What a person sees; front ends translate `step_id` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// Text substitutions for a step's translated description.
pub type Placeholders = BTreeMap<String, String>;

/// What a step returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FlowStep {
    /// Show a form and wait for input.
    Form {
        /// The step that handles the input.
        step_id: String,
        /// The fields; input is validated with it before the step sees it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        data_schema: Option<Schema>,
        /// Errors to show, by field (`base` for the whole form).
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        errors: BTreeMap<String, String>,
        /// Substitutions for the description.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        description_placeholders: Placeholders,
        /// Whether submitting finishes the flow (front ends show "Submit" vs "Next").
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last_step: Option<bool>,
        /// A live preview component to show.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        preview: Option<String>,
    },
    /// Finish by creating (or, for options flows, updating) an entry.
    CreateEntry {
        /// The entry's title.
        title: String,
        /// The entry's data.
        data: Map<String, Value>,
        /// The entry's options.
        #[serde(default)]
        options: Map<String, Value>,
        /// The handler's data version.
        #[serde(default = "one")]
        version: u32,
        /// The handler's data minor version.
        #[serde(default = "one")]
        minor_version: u32,
        /// A message for the person.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<String>,
        /// Substitutions for the description.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        description_placeholders: Placeholders,
        /// Set by the manager: the created entry.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        entry_id: Option<String>,
    },
    /// Finish without a result.
    Abort {
        /// Why (`already_configured`, `cannot_connect`, ...).
        reason: String,
        /// Substitutions for the reason's text.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        description_placeholders: Placeholders,
    },
    /// Send the person to an external page; the flow continues when it reports back.
    #[serde(rename = "external")]
    ExternalStep {
        /// The step that handles the callback.
        step_id: String,
        /// Where to send the person.
        url: String,
        /// Substitutions for the description.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        description_placeholders: Placeholders,
    },
    /// The external step is done; configuring again runs `step_id`.
    #[serde(rename = "external_done")]
    ExternalStepDone {
        /// The next step.
        step_id: String,
    },
    /// Work is running; configuring again asks whether it is done.
    #[serde(rename = "progress")]
    ShowProgress {
        /// The step that checks progress.
        step_id: String,
        /// What is being done, for translation.
        progress_action: String,
        /// Substitutions for the description.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        description_placeholders: Placeholders,
    },
    /// The work is done; configuring again runs `step_id`.
    #[serde(rename = "progress_done")]
    ShowProgressDone {
        /// The next step.
        step_id: String,
    },
    /// Let the person choose the next step.
    Menu {
        /// The menu's own step id.
        step_id: String,
        /// The choices, in display order.
        menu_options: Vec<MenuOption>,
        /// Substitutions for the description.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        description_placeholders: Placeholders,
    },
}

fn one() -> u32 {
    1
}

impl FlowStep {
    /// A form for `step_id` with `schema`.
    pub fn form(step_id: impl Into<String>, schema: Option<Schema>) -> Self {
        Self::Form {
            step_id: step_id.into(),
            data_schema: schema,
            errors: BTreeMap::new(),
            description_placeholders: Placeholders::new(),
            last_step: None,
            preview: None,
        }
    }

    /// A form re-shown with `errors` (field name, or `base`, to error key).
    pub fn form_with_errors(
        step_id: impl Into<String>,
        schema: Option<Schema>,
        errors: &[(&str, &str)],
    ) -> Self {
        Self::Form {
            step_id: step_id.into(),
            data_schema: schema,
            errors: errors
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            description_placeholders: Placeholders::new(),
            last_step: None,
            preview: None,
        }
    }

    /// Finish with an entry at version 1.1.
    pub fn create_entry(title: impl Into<String>, data: Map<String, Value>) -> Self {
        Self::CreateEntry {
            title: title.into(),
            data,
            options: Map::new(),
            version: 1,
            minor_version: 1,
            description: None,
            description_placeholders: Placeholders::new(),
            entry_id: None,
        }
    }

    /// Finish with `reason`.
    pub fn abort(reason: impl Into<String>) -> Self {
        Self::Abort {
            reason: reason.into(),
            description_placeholders: Placeholders::new(),
        }
    }

    /// A menu of `(step_id, label)` choices, order kept.
    pub fn menu(step_id: impl Into<String>, options: &[(&str, &str)]) -> Self {
        Self::Menu {
            step_id: step_id.into(),
            menu_options: options
                .iter()
                .map(|(id, label)| MenuOption {
                    step_id: (*id).to_owned(),
                    label: Some((*label).to_owned()),
                })
                .collect(),
            description_placeholders: Placeholders::new(),
        }
    }

    /// The step id this result continues with, for results that continue.
    pub fn step_id(&self) -> Option<&str> {
        match self {
            Self::Form { step_id, .. }
            | Self::ExternalStep { step_id, .. }
            | Self::ExternalStepDone { step_id }
            | Self::ShowProgress { step_id, .. }
            | Self::ShowProgressDone { step_id }
            | Self::Menu { step_id, .. } => Some(step_id),
            Self::CreateEntry { .. } | Self::Abort { .. } => None,
        }
    }

    /// True for results that end the flow.
    pub fn is_finished(&self) -> bool {
        matches!(self, Self::CreateEntry { .. } | Self::Abort { .. })
    }
}

/// A step's result as callers see it: the step plus which flow produced it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlowResult {
    /// The flow.
    pub flow_id: String,
    /// The flow's handler key (domain, or entry id for options flows).
    pub handler: String,
    /// The step's outcome.
    #[serde(flatten)]
    pub step: FlowStep,
}

/// A flow in progress, as listed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlowProgress {
    /// The flow.
    pub flow_id: String,
    /// Its handler key.
    pub handler: String,
    /// The step it waits in.
    pub step_id: Option<String>,
    /// Its context.
    pub context: FlowContext,
    /// The sandbox group its handler runs in, when routed.
    pub sandbox: Option<String>,
}

/// Why a flow operation failed, or (for [`FlowError::Abort`]) how a step ends its flow.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FlowError {
    /// No flow handler exists for this key.
    #[error("no flow handler for {0:?}")]
    UnknownHandler(String),
    /// No flow with this id is in progress.
    #[error("flow {0:?} not found")]
    UnknownFlow(String),
    /// The handler has no such step.
    #[error("handler {handler:?} has no step {step_id:?}")]
    UnknownStep {
        /// The handler key.
        handler: String,
        /// The missing step.
        step_id: String,
    },
    /// The input does not match the step's schema (or is not an offered menu option).
    #[error("invalid flow input: {0}")]
    InvalidData(ValidationErrors),
    /// Returned by a step to end its flow with an abort result (Home Assistant's `AbortFlow`).
    #[error("flow aborted: {reason}")]
    Abort {
        /// Why.
        reason: String,
        /// Substitutions for the reason's text.
        description_placeholders: Placeholders,
    },
    /// The step returned a result not allowed after the previous one.
    #[error("invalid flow transition: {0}")]
    InvalidTransition(String),
    /// [`MAX_FLOWS_IN_PROGRESS`] flows are already running.
    #[error("too many flows in progress (at most {MAX_FLOWS_IN_PROGRESS})")]
    TooManyFlows,
    /// The handler failed; the flow stays where it was, unless the handler panicked (the
    /// flow then ended).
    #[error("flow handler failed: {0}")]
    Handler(String),
    /// The request is not allowed in the current state (e.g. options for a missing entry).
    #[error("{0}")]
    NotAllowed(String),
}

impl FlowError {
    /// Ends the flow with `reason` (use with `?` or `return Err(...)` in a step).
    pub fn abort(reason: impl Into<String>) -> Self {
        Self::Abort {
            reason: reason.into(),
            description_placeholders: Placeholders::new(),
        }
    }
}

/// One integration's flow: a step function of `(step_id, input)`.
///
/// Implemented by integrations (and by proxies that forward steps elsewhere).
pub trait FlowHandler: Send + 'static {
    /// Runs step `step_id` with the person's validated `input` (`None` the first time a step runs).
    fn step<'a>(
        &'a mut self,
        flow: &'a FlowStepContext,
        step_id: &'a str,
        input: Option<Map<String, Value>>,
    ) -> BoxFuture<'a, Result<FlowStep, FlowError>>;

    /// Called once when the flow ends for any reason (finished, aborted, removed).
    fn on_remove(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// What a step can see and do besides its input.
pub struct FlowStepContext {
    /// The flow's id.
    flow_id: String,
    /// The handler key.
    handler: String,
    /// The flow's context, shared with the manager so other flows see its unique id.
    context: Arc<Mutex<FlowContext>>,
    /// The core the flow runs in.
    core: Core,
    /// The manager, to look at other flows.
    manager: FlowManager,
}

impl FlowStepContext {
    /// The flow's id.
    pub fn flow_id(&self) -> &str {
        &self.flow_id
    }

    /// The handler key (the domain for config flows, the entry id for options flows).
    pub fn handler(&self) -> &str {
        &self.handler
    }

    /// A copy of the flow's context.
    pub fn context(&self) -> FlowContext {
        self.context.lock().clone()
    }

    /// Sets placeholders for the flow's title.
    pub fn set_title_placeholders(&self, placeholders: Map<String, Value>) {
        self.context.lock().title_placeholders = placeholders;
    }

    /// The core.
    pub fn core(&self) -> &Core {
        &self.core
    }

    /// Records the unique id of what this flow configures and returns the entry already
    /// configured with it, if any. With `raise_on_progress`, another flow of the same
    /// handler with the same unique id aborts this one with `already_in_progress`.
    pub fn set_unique_id(
        &self,
        unique_id: Option<&str>,
        raise_on_progress: bool,
    ) -> Result<Option<ConfigEntry>, FlowError> {
        if let (Some(unique_id), true) = (unique_id, raise_on_progress)
            && !self
                .manager
                .flows_with_unique_id(&self.handler, unique_id, Some(&self.flow_id))
                .is_empty()
        {
            return Err(FlowError::abort("already_in_progress"));
        }
        self.context.lock().unique_id = unique_id.map(str::to_owned);
        Ok(unique_id.and_then(|unique_id| {
            self.core
                .config_entries()
                .entry_for_unique_id(&self.handler, unique_id)
        }))
    }

    /// Aborts with `already_configured` when an entry with this flow's unique id exists
    /// (except an ignored entry met by a flow a person started), first merging `updates` into its data (and reloading it when `reload_on_update`
    /// and the data changed), as Home Assistant's `_abort_if_unique_id_configured`.
    pub async fn abort_if_unique_id_configured(
        &self,
        updates: Option<Map<String, Value>>,
        reload_on_update: bool,
    ) -> Result<(), FlowError> {
        let (unique_id, source) = {
            let context = self.context.lock();
            (context.unique_id.clone(), context.source.clone())
        };
        let Some(unique_id) = unique_id else {
            return Ok(());
        };
        let entries = self.core.config_entries();
        let Some(entry) = entries.entry_for_unique_id(&self.handler, &unique_id) else {
            return Ok(());
        };
        if let Some(updates) = updates {
            let mut data = entry.data.clone();
            data.extend(updates);
            let changed = entries
                .update_entry(
                    &entry.entry_id,
                    crate::config_entries::ConfigEntryUpdate {
                        data: Some(data),
                        ..Default::default()
                    },
                )
                .unwrap_or(false);
            if changed && reload_on_update {
                entries.schedule_reload(&entry.entry_id);
            }
        }
        // A person may configure by hand what discovery was told to ignore.
        if entry.source == crate::config_entries::SOURCE_IGNORE
            && source == crate::config_entries::SOURCE_USER
        {
            return Ok(());
        }
        Err(FlowError::abort("already_configured"))
    }
}

/// What an owner needs to know about a flow that just finished.
#[derive(Debug, Clone)]
pub(crate) struct FinishedFlow {
    /// The flow's id.
    pub(crate) flow_id: String,
    /// Its handler key.
    pub(crate) handler: String,
    /// Its context when it finished.
    pub(crate) context: FlowContext,
    /// The sandbox group it was routed to, if any.
    pub(crate) sandbox: Option<String>,
}

/// Decides what a finished flow means (Home Assistant's `async_finish_flow`).
pub(crate) trait FlowOwner: Send + Sync {
    /// Turns the finishing step into the final result (e.g. creates the entry).
    fn finish<'a>(
        &'a self,
        flow: &'a FinishedFlow,
        step: FlowStep,
    ) -> BoxFuture<'a, Result<FlowStep, FlowError>>;
}

/// The mutable part of a flow, locked while a step runs.
struct FlowRunner {
    /// The integration's handler.
    handler: Box<dyn FlowHandler>,
    /// The last result shown, which decides how the next input is read.
    current: Option<FlowStep>,
    /// Set once the flow ended, so late `configure` calls find nothing.
    finished: bool,
}

/// One flow in progress.
struct FlowSlot {
    /// The flow's id.
    flow_id: String,
    /// Its handler key.
    handler: String,
    /// Its context, readable without waiting for a running step.
    context: Arc<Mutex<FlowContext>>,
    /// The sandbox group its handler runs in, if routed.
    sandbox: Option<String>,
    /// The handler and its position, one step at a time.
    runner: tokio::sync::Mutex<FlowRunner>,
}

/// Shared part of a flow manager.
struct FlowManagerInner {
    /// Flows in progress by id.
    flows: Mutex<HashMap<String, Arc<FlowSlot>>>,
    /// Where progress events go.
    bus: EventBus,
}

/// The generic flow engine (one for config flows, one for options flows).
#[derive(Clone)]
pub(crate) struct FlowManager {
    /// Shared flows.
    inner: Arc<FlowManagerInner>,
}

impl FlowManager {
    pub(crate) fn new(bus: EventBus) -> Self {
        Self {
            inner: Arc::new(FlowManagerInner {
                flows: Mutex::new(HashMap::new()),
                bus,
            }),
        }
    }

    /// Flows in progress.
    pub(crate) fn progress(&self) -> Vec<FlowProgress> {
        let slots: Vec<Arc<FlowSlot>> = self.inner.flows.lock().values().cloned().collect();
        let mut progress: Vec<FlowProgress> = slots
            .iter()
            .map(|slot| FlowProgress {
                flow_id: slot.flow_id.clone(),
                handler: slot.handler.clone(),
                step_id: slot.runner.try_lock().ok().and_then(|runner| {
                    runner
                        .current
                        .as_ref()
                        .and_then(|s| s.step_id().map(str::to_owned))
                }),
                context: slot.context.lock().clone(),
                sandbox: slot.sandbox.clone(),
            })
            .collect();
        progress.sort_by(|a, b| a.flow_id.cmp(&b.flow_id));
        progress
    }

    /// Ids of flows of `handler` whose unique id is `unique_id`, except `exclude`.
    pub(crate) fn flows_with_unique_id(
        &self,
        handler: &str,
        unique_id: &str,
        exclude: Option<&str>,
    ) -> Vec<String> {
        self.inner
            .flows
            .lock()
            .values()
            .filter(|slot| {
                slot.handler == handler
                    && Some(slot.flow_id.as_str()) != exclude
                    && slot.context.lock().unique_id.as_deref() == Some(unique_id)
            })
            .map(|slot| slot.flow_id.clone())
            .collect()
    }

    /// Ids of flows matching `predicate` on handler and context.
    pub(crate) fn flows_where(
        &self,
        predicate: impl Fn(&str, &FlowContext) -> bool,
    ) -> Vec<String> {
        self.inner
            .flows
            .lock()
            .values()
            .filter(|slot| predicate(&slot.handler, &slot.context.lock()))
            .map(|slot| slot.flow_id.clone())
            .collect()
    }

    /// Starts a flow with `handler` and runs `init_step` with `data`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn start(
        &self,
        owner: &dyn FlowOwner,
        core: Core,
        handler_key: &str,
        context: FlowContext,
        handler: Box<dyn FlowHandler>,
        sandbox: Option<String>,
        init_step: &str,
        data: Option<Map<String, Value>>,
    ) -> Result<FlowResult, FlowError> {
        let flow_id = ulid::Ulid::new().to_string();
        let slot = Arc::new(FlowSlot {
            flow_id: flow_id.clone(),
            handler: handler_key.to_owned(),
            context: Arc::new(Mutex::new(context)),
            sandbox,
            runner: tokio::sync::Mutex::new(FlowRunner {
                handler,
                current: None,
                finished: false,
            }),
        });
        {
            let mut flows = self.inner.flows.lock();
            if flows.len() >= MAX_FLOWS_IN_PROGRESS {
                return Err(FlowError::TooManyFlows);
            }
            flows.insert(flow_id.clone(), Arc::clone(&slot));
        }
        let mut runner = slot.runner.lock().await;
        let result = self
            .run_step(owner, core, &slot, &mut runner, init_step.to_owned(), data)
            .await;
        if result.is_err() && runner.current.is_none() {
            // A first step that fails leaves nothing to configure: drop the flow.
            self.end(&slot, &mut runner).await;
        }
        result
    }

    /// Feeds `input` to the step flow `flow_id` waits in.
    pub(crate) async fn configure(
        &self,
        owner: &dyn FlowOwner,
        core: Core,
        flow_id: &str,
        input: Option<Map<String, Value>>,
    ) -> Result<FlowResult, FlowError> {
        let slot = self
            .inner
            .flows
            .lock()
            .get(flow_id)
            .cloned()
            .ok_or_else(|| FlowError::UnknownFlow(flow_id.to_owned()))?;
        let mut runner = slot.runner.lock().await;
        if runner.finished {
            return Err(FlowError::UnknownFlow(flow_id.to_owned()));
        }
        let current = runner
            .current
            .clone()
            .ok_or_else(|| FlowError::UnknownFlow(flow_id.to_owned()))?;
        let (step_id, input) = match current {
            FlowStep::Form {
                step_id,
                data_schema,
                ..
            } => {
                let input = match (data_schema, input) {
                    (Some(schema), Some(input)) => Some(
                        schema
                            .validate_map(&input)
                            .map_err(FlowError::InvalidData)?,
                    ),
                    (_, input) => input,
                };
                (step_id, input)
            }
            // A menu asked again without a choice shows itself again, as a form does when it
            // runs again without input (what a front end does to show a flow's current step).
            FlowStep::Menu { .. } if input.is_none() => {
                return Ok(FlowResult {
                    flow_id: slot.flow_id.clone(),
                    handler: slot.handler.clone(),
                    step: current,
                });
            }
            FlowStep::Menu { menu_options, .. } => {
                let chosen = input
                    .as_ref()
                    .and_then(|input| input.get("next_step_id"))
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                match chosen {
                    Some(next) if menu_options.iter().any(|option| option.step_id == next) => {
                        (next, None)
                    }
                    _ => {
                        let offered: Vec<&str> =
                            menu_options.iter().map(|o| o.step_id.as_str()).collect();
                        return Err(FlowError::InvalidData(ValidationErrors::single(
                            vec![PathSegment::Key("next_step_id".into())],
                            format!("value must be one of {offered:?}"),
                        )));
                    }
                }
            }
            FlowStep::ExternalStep { step_id, .. }
            | FlowStep::ExternalStepDone { step_id }
            | FlowStep::ShowProgress { step_id, .. }
            | FlowStep::ShowProgressDone { step_id } => (step_id, input),
            FlowStep::CreateEntry { .. } | FlowStep::Abort { .. } => {
                return Err(FlowError::UnknownFlow(flow_id.to_owned()));
            }
        };
        self.run_step(owner, core, &slot, &mut runner, step_id, input)
            .await
    }

    async fn run_step(
        &self,
        owner: &dyn FlowOwner,
        core: Core,
        slot: &Arc<FlowSlot>,
        runner: &mut FlowRunner,
        step_id: String,
        input: Option<Map<String, Value>>,
    ) -> Result<FlowResult, FlowError> {
        let flow = FlowStepContext {
            flow_id: slot.flow_id.clone(),
            handler: slot.handler.clone(),
            context: Arc::clone(&slot.context),
            core,
            manager: self.clone(),
        };
        let what = format!("flow step {step_id} of {}", slot.handler);
        let outcome = catch_panic(&what, || runner.handler.step(&flow, &step_id, input)).await;
        let step = match outcome {
            Ok(Ok(step)) => step,
            Ok(Err(FlowError::Abort {
                reason,
                description_placeholders,
            })) => FlowStep::Abort {
                reason,
                description_placeholders,
            },
            Ok(Err(err)) => return Err(err),
            Err(reason) => {
                // A handler that panicked halfway through a step cannot be trusted with the
                // next one: the flow ends.
                self.end(slot, runner).await;
                return Err(FlowError::Handler(reason));
            }
        };
        let previous = runner.current.as_ref();
        match previous {
            Some(FlowStep::ExternalStep { .. })
                if !matches!(
                    step,
                    FlowStep::ExternalStep { .. }
                        | FlowStep::ExternalStepDone { .. }
                        | FlowStep::Abort { .. }
                ) =>
            {
                return Err(FlowError::InvalidTransition(
                    "an external step can only be followed by an external step, external step done or abort".into(),
                ));
            }
            Some(FlowStep::ShowProgress { .. })
                if !matches!(
                    step,
                    FlowStep::ShowProgress { .. }
                        | FlowStep::ShowProgressDone { .. }
                        | FlowStep::Abort { .. }
                ) =>
            {
                return Err(FlowError::InvalidTransition(
                    "a progress step can only be followed by a progress step, progress done or abort".into(),
                ));
            }
            _ => {}
        }
        let progressed = matches!(
            (previous, &step),
            (
                Some(FlowStep::ExternalStep { .. }),
                FlowStep::ExternalStepDone { .. }
            ) | (
                Some(FlowStep::ShowProgress { .. }),
                FlowStep::ShowProgressDone { .. }
            )
        );
        if progressed {
            let mut data = Map::new();
            data.insert("handler".into(), Value::String(slot.handler.clone()));
            data.insert("flow_id".into(), Value::String(slot.flow_id.clone()));
            data.insert("refresh".into(), Value::Bool(true));
            if let Err(err) = self
                .inner
                .bus
                .fire(EVENT_DATA_ENTRY_FLOW_PROGRESSED, data, None)
            {
                tracing::error!(%err, "could not fire flow progress event");
            }
        }
        if !step.is_finished() {
            runner.current = Some(step.clone());
            return Ok(FlowResult {
                flow_id: slot.flow_id.clone(),
                handler: slot.handler.clone(),
                step,
            });
        }
        self.end(slot, runner).await;
        let finished = FinishedFlow {
            flow_id: slot.flow_id.clone(),
            handler: slot.handler.clone(),
            context: slot.context.lock().clone(),
            sandbox: slot.sandbox.clone(),
        };
        let step = owner.finish(&finished, step).await?;
        Ok(FlowResult {
            flow_id: slot.flow_id.clone(),
            handler: slot.handler.clone(),
            step,
        })
    }

    /// Ends flow `flow_id` without a result.
    pub(crate) async fn abort(&self, flow_id: &str) -> Result<(), FlowError> {
        let slot = self
            .inner
            .flows
            .lock()
            .remove(flow_id)
            .ok_or_else(|| FlowError::UnknownFlow(flow_id.to_owned()))?;
        let mut runner = slot.runner.lock().await;
        self.end(&slot, &mut runner).await;
        Ok(())
    }

    /// Ends a flow: no longer in progress, no further step, and its handler's `on_remove`
    /// called once (a panic in it is logged and goes no further).
    async fn end(&self, slot: &FlowSlot, runner: &mut FlowRunner) {
        self.inner.flows.lock().remove(&slot.flow_id);
        if runner.finished {
            return;
        }
        runner.finished = true;
        let what = format!("removal of a flow of {}", slot.handler);
        let _ = catch_panic(&what, || runner.handler.on_remove()).await;
    }
}
