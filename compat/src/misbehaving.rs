//! Integrations that misbehave on purpose, to prove the host survives them.
//!
//! Each has its own domain, a config flow that creates an entry in one step (the flow's first
//! step takes the init data, or nothing, and creates the entry with it, so the compat sweep can
//! configure them like any other integration), and setup code that does one bad thing:
//!
//! - [`panic_setup`] (`misbehave_panic`): panics during setup.
//! - [`abort_after`] (`misbehave_abort`): aborts the whole process N seconds after setup.
//! - [`hang`] (`misbehave_hang`): blocks the runtime's only thread after setup.
//! - [`flood`] (`misbehave_flood`): a sensor whose state changes as fast as possible.
//! - [`stdout`] (`misbehave_stdout`): prints to stdout (fake length prefixes included) during
//!   setup and periodically.
//! - [`forbidden`] (`misbehave_forbidden`): tries every forbidden registration and event.
//! - [`escape`] (`misbehave_escape`): tries to reach main's files, process and kernel past its
//!   confinement, one sensor per attempt showing what it got.
//!
//! They are meant to run in a sandbox (the `compat-sandbox` binary hosts them next to the
//! built-in integrations); run in-process most would do the same harm to the process they are in.
//! The compat sweep plays each (`compat/scenarios/misbehave_*.json`): sandboxed only, judged by
//! what main must survive, except the flood, which is harmless in-process, and the panic, which
//! homecore catches in either mode; those two are compared.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use parking_lot::Mutex;
use serde_json::{Map, Value};
use tokio::task::AbortHandle;

use homecore::{
    ConfigEntry, Core, FlowError, FlowHandler, FlowStep, FlowStepContext, Integration,
    IntegrationType, Manifest, SetupError,
};

pub mod abort_after;
pub mod escape;
pub mod flood;
pub mod forbidden;
pub mod hang;
pub mod panic_setup;
pub mod stdout;
mod toy;

pub use toy::{OnSwitch, ToyEntity};

/// Every misbehaving integration, freshly made.
pub fn all() -> Vec<Arc<dyn Integration>> {
    vec![
        Arc::new(panic_setup::integration()),
        Arc::new(abort_after::integration()),
        Arc::new(hang::integration()),
        Arc::new(flood::integration()),
        Arc::new(stdout::integration()),
        Arc::new(forbidden::integration()),
        Arc::new(escape::integration()),
    ]
}

/// The domains of [`all`], in the same order.
pub const DOMAINS: [&str; 7] = [
    panic_setup::DOMAIN,
    abort_after::DOMAIN,
    hang::DOMAIN,
    flood::DOMAIN,
    stdout::DOMAIN,
    forbidden::DOMAIN,
    escape::DOMAIN,
];

/// What one misbehaving integration does when an entry is set up; tasks it spawns are
/// registered in `tasks` so unloading the entry stops them.
pub(crate) trait Behaviour: Send + Sync + 'static {
    fn setup<'a>(
        &'a self,
        core: &'a Core,
        entry: &'a ConfigEntry,
        tasks: &'a EntryTasks,
    ) -> BoxFuture<'a, Result<(), SetupError>>;
}

/// The tasks an entry spawned, aborted when it unloads.
#[derive(Debug, Default)]
pub(crate) struct EntryTasks {
    handles: Mutex<Vec<AbortHandle>>,
}

impl EntryTasks {
    /// Spawns `task` on the current runtime, to be aborted with the entry.
    pub(crate) fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let handle = tokio::spawn(task);
        self.handles.lock().push(handle.abort_handle());
    }

    fn abort_all(&self) {
        for handle in self.handles.lock().drain(..) {
            handle.abort();
        }
    }
}

/// A misbehaving integration: a manifest, the one-step flow, and its behaviour.
pub(crate) struct Misbehaving {
    manifest: Manifest,
    behaviour: Box<dyn Behaviour>,
    /// Tasks of loaded entries, by entry id.
    tasks: Mutex<BTreeMap<String, Arc<EntryTasks>>>,
}

impl Misbehaving {
    pub(crate) fn new(
        domain: &str,
        name: &str,
        platforms: &[&str],
        behaviour: impl Behaviour,
    ) -> Self {
        Self {
            manifest: Manifest {
                domain: domain.to_owned(),
                name: name.to_owned(),
                version: semver::Version::new(1, 0, 0),
                integration_type: IntegrationType::Device,
                config_flow: true,
                platforms: platforms.iter().map(|p| (*p).to_owned()).collect(),
                dependencies: Vec::new(),
                iot_class: Some("local_push".to_owned()),
                single_config_entry: false,
            },
            behaviour: Box::new(behaviour),
            tasks: Mutex::new(BTreeMap::new()),
        }
    }
}

impl std::fmt::Debug for Misbehaving {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Misbehaving")
            .field("domain", &self.manifest.domain)
            .finish()
    }
}

impl Integration for Misbehaving {
    fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    fn config_flow(&self) -> Option<Box<dyn FlowHandler>> {
        Some(Box::new(OneStepFlow {
            title: self.manifest.name.clone(),
        }))
    }

    fn setup_entry<'a>(
        &'a self,
        core: &'a Core,
        entry: &'a ConfigEntry,
    ) -> BoxFuture<'a, Result<(), SetupError>> {
        Box::pin(async move {
            let tasks = Arc::new(EntryTasks::default());
            if let Some(previous) = self
                .tasks
                .lock()
                .insert(entry.entry_id.clone(), Arc::clone(&tasks))
            {
                previous.abort_all();
            }
            let outcome = self.behaviour.setup(core, entry, &tasks).await;
            if outcome.is_err() {
                tasks.abort_all();
                self.tasks.lock().remove(&entry.entry_id);
            }
            outcome
        })
    }

    fn unload_entry<'a>(
        &'a self,
        _core: &'a Core,
        entry: &'a ConfigEntry,
    ) -> BoxFuture<'a, Result<(), String>> {
        // The loader releases the entry's platforms after this.
        if let Some(tasks) = self.tasks.lock().remove(&entry.entry_id) {
            tasks.abort_all();
        }
        Box::pin(async { Ok(()) })
    }
}

/// The config flow of every misbehaving integration: the first step creates the entry with the
/// input it got (the flow's init data), or with no data.
#[derive(Debug)]
struct OneStepFlow {
    title: String,
}

impl FlowHandler for OneStepFlow {
    fn step<'a>(
        &'a mut self,
        _flow: &'a FlowStepContext,
        _step_id: &'a str,
        input: Option<Map<String, Value>>,
    ) -> BoxFuture<'a, Result<FlowStep, FlowError>> {
        let data = input.unwrap_or_default();
        let title = self.title.clone();
        Box::pin(async move { Ok(FlowStep::create_entry(title, data)) })
    }
}

/// An unsigned integer of the entry's data, or `default` when absent or not one.
pub(crate) fn data_u64(entry: &ConfigEntry, key: &str, default: u64) -> u64 {
    entry
        .data
        .get(key)
        .and_then(Value::as_u64)
        .unwrap_or(default)
}

/// Turns an entity error into a failed setup.
pub(crate) fn failed(error: impl std::fmt::Display) -> SetupError {
    SetupError::Failed(error.to_string())
}

/// Adds `entity` on a fresh platform of its domain for `entry`.
pub(crate) async fn add_entity(
    core: &Core,
    entry: &ConfigEntry,
    entity: &Arc<ToyEntity>,
) -> Result<(), SetupError> {
    let domain = homecore::Entity::info(entity.as_ref()).domain;
    let platform = core
        .entities()
        .forward_entry_setup(entry, &domain)
        .map_err(failed)?;
    platform
        .add_entity(entity.into_ref())
        .await
        .map_err(failed)?;
    Ok(())
}
