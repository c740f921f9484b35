//! Scenarios: what the compat sweep does with one integration, step by step, read from
//! `compat/scenarios/<integration>.json`, and the runner that plays one scenario on a hub —
//! in-process or sandboxed — recording after every step its outcome and every state.
//!
//! A scenario file:
//! ```json
//! {
//!   "integration": "demo",
//!   "description": "what it covers",
//!   "flow": [{"next_step_id": "defaults"}],
//!   "files": {"{tmp}/value.txt": "21.5\n"},
//!   "compare_states": true,
//!   "steps": [
//!     {"call": {"domain": "light", "service": "turn_on", "entity_id": "light.x", "data": {"brightness": 10}}},
//!     {"expect_state": {"entity_id": "light.x", "state": "on", "attributes": {"brightness": 10}}},
//!     {"call_field_free_services": {}},
//!     {"reload": {}},
//!     {"unload": {}}
//!   ]
//! }
//! ```
//! `flow` lists the inputs of the config flow's steps after the first; `{tmp}` in any string is
//! replaced by a private temporary directory of the run.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use homecore::{Context, Core, CoreConfig, FlowContext, FlowStep, ServiceRequest, ServiceTarget};
use sandbox_host::GroupConfig;
use sandbox_host::groups::GroupsConfig;
use sandbox_host::plugin::{PluginConfig, SandboxPlugin};
use serde::Deserialize;
use serde_json::{Map, Value};

/// How long a run waits for entities to settle after a step.
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);

/// One integration's scenario.
#[derive(Debug, Clone, Deserialize)]
pub struct Scenario {
    /// The integration's domain.
    pub integration: String,
    /// What the scenario covers.
    #[serde(default)]
    pub description: String,
    /// Inputs of the config flow's steps after the first.
    #[serde(default)]
    pub flow: Vec<Map<String, Value>>,
    /// Files to create before the flow (path with `{tmp}` -> content).
    #[serde(default)]
    pub files: BTreeMap<String, String>,
    /// Whether states are compared between modes (off for integrations reading the machine).
    #[serde(default = "yes")]
    pub compare_states: bool,
    /// The steps after the entry is set up.
    #[serde(default)]
    pub steps: Vec<Step>,
}

fn yes() -> bool {
    true
}

/// One step.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Call a service (optionally on one entity).
    Call {
        /// The domain.
        domain: String,
        /// The service.
        service: String,
        /// The target entity, if any.
        #[serde(default)]
        entity_id: Option<String>,
        /// The data.
        #[serde(default)]
        data: Map<String, Value>,
        /// Ask for the response.
        #[serde(default)]
        return_response: bool,
    },
    /// Check a state (and attributes, each given key only).
    ExpectState {
        /// The entity.
        entity_id: String,
        /// Its expected state.
        #[serde(default)]
        state: Option<String>,
        /// Expected attributes.
        #[serde(default)]
        attributes: Map<String, Value>,
    },
    /// Call every domain service that needs no data on every entity of the integration.
    CallFieldFreeServices {},
    /// Reload the entry.
    Reload {},
    /// Unload the entry.
    Unload {},
}

/// Where a scenario runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// On main, no sandbox.
    InProcess,
    /// With the host plugin: sandboxed where the classifier says so.
    Sandboxed,
}

/// What one step did.
#[derive(Debug, Clone, PartialEq)]
pub struct StepRecord {
    /// A short label.
    pub label: String,
    /// `ok`, `error: ...`, or `expectation failed: ...`.
    pub outcome: String,
    /// Every state after the step (state and attributes), when states are compared.
    pub states: BTreeMap<String, (String, Value)>,
}

impl StepRecord {
    /// Whether the step met its own expectation.
    pub fn passed(&self) -> bool {
        !self.outcome.starts_with("expectation failed")
    }
}

fn substitute(value: &Value, tmp: &Path) -> Value {
    match value {
        Value::String(text) => Value::String(text.replace("{tmp}", &tmp.display().to_string())),
        Value::Array(items) => {
            Value::Array(items.iter().map(|item| substitute(item, tmp)).collect())
        }
        Value::Object(object) => Value::Object(
            object
                .iter()
                .map(|(k, v)| (k.clone(), substitute(v, tmp)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(object) => object,
        _ => Map::new(),
    }
}

/// The inverse of [`substitute`]: the run's private directory reads `{tmp}` again, so two runs
/// (each with its own directory) compare equal.
fn unsubstitute(value: &Value, tmp: &Path) -> Value {
    match value {
        Value::String(text) => Value::String(text.replace(&tmp.display().to_string(), "{tmp}")),
        Value::Array(items) => {
            Value::Array(items.iter().map(|item| unsubstitute(item, tmp)).collect())
        }
        Value::Object(object) => Value::Object(
            object
                .iter()
                .map(|(k, v)| (k.clone(), unsubstitute(v, tmp)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn snapshot(core: &Core, compare: bool, tmp: &Path) -> BTreeMap<String, (String, Value)> {
    if !compare {
        return core
            .states()
            .all(None)
            .into_iter()
            .map(|state| (state.entity_id.clone(), (String::new(), Value::Null)))
            .collect();
    }
    core.states()
        .all(None)
        .into_iter()
        .map(|state| {
            let attributes = unsubstitute(&Value::Object(state.attributes.clone()), tmp);
            (state.entity_id.clone(), (state.state.clone(), attributes))
        })
        .collect()
}

/// Waits until the states stop changing (sandboxed states arrive after a call returns).
async fn settle(core: &Core, compare: bool, tmp: &Path) -> BTreeMap<String, (String, Value)> {
    let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
    let mut last = snapshot(core, compare, tmp);
    let mut stable = 0;
    while stable < 3 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let now = snapshot(core, compare, tmp);
        if now == last {
            stable += 1;
        } else {
            stable = 0;
            last = now;
        }
    }
    last
}

/// Plays `scenario` on a fresh hub in `mode`; `runtime` is the sandbox runtime's command.
pub async fn run(
    scenario: &Scenario,
    mode: Mode,
    runtime: &[OsString],
) -> anyhow::Result<Vec<StepRecord>> {
    let dir = tempfile::tempdir()?;
    let tmp = dir.path().join("scenario");
    std::fs::create_dir_all(&tmp)?;
    let core = Core::builder(CoreConfig::new(dir.path()))
        .integrations(crate::all_integrations())
        .build()?;
    let plugin = (mode == Mode::Sandboxed).then(|| {
        let mut group_defaults = GroupConfig::new("template");
        group_defaults.watchdog = None;
        SandboxPlugin::install(
            &core,
            PluginConfig {
                groups: GroupsConfig {
                    config_dir: dir.path().to_owned(),
                    runtime_command: runtime.to_vec(),
                    custom_commands: Default::default(),
                    group_defaults,
                },
                custom: vec![],
            },
        )
    });
    core.start().await?;
    let mut records = Vec::new();
    let compare = scenario.compare_states;
    for (path, content) in &scenario.files {
        let path = path.replace("{tmp}", &tmp.display().to_string());
        std::fs::write(&path, content)?;
    }

    // The config flow.
    let flows = core.config_entries().flow();
    let mut result = flows
        .init(&scenario.integration, FlowContext::new("user"), None)
        .await;
    for input in &scenario.flow {
        let Ok(current) = &result else { break };
        if current.step.is_finished() {
            break;
        }
        let input = object(substitute(&Value::Object(input.clone()), &tmp));
        result = flows.configure(&current.flow_id.clone(), Some(input)).await;
    }
    let entry_id = match &result {
        Ok(done) => match &done.step {
            FlowStep::CreateEntry {
                entry_id: Some(entry_id),
                ..
            } => Some(entry_id.clone()),
            other => {
                records.push(StepRecord {
                    label: "config flow".into(),
                    outcome: format!("expectation failed: ended in {other:?}"),
                    states: BTreeMap::new(),
                });
                None
            }
        },
        Err(error) => {
            records.push(StepRecord {
                label: "config flow".into(),
                outcome: format!("expectation failed: {error}"),
                states: BTreeMap::new(),
            });
            None
        }
    };
    if let Some(entry_id) = entry_id {
        let states = settle(&core, compare, &tmp).await;
        let loaded = core
            .config_entries()
            .entry(&entry_id)
            .map(|entry| entry.state.as_str().to_owned())
            .unwrap_or_default();
        let outcome = if loaded == "loaded" {
            "ok".to_owned()
        } else {
            format!("expectation failed: entry {loaded}")
        };
        records.push(StepRecord {
            label: "config flow and setup".into(),
            outcome,
            states,
        });
        for (index, step) in scenario.steps.iter().enumerate() {
            records.extend(
                play(
                    &core,
                    step,
                    index,
                    &entry_id,
                    &scenario.integration,
                    &tmp,
                    compare,
                )
                .await,
            );
        }
    }
    if let Some(plugin) = &plugin {
        plugin.stop().await;
        plugin.uninstall();
    }
    core.stop().await?;
    Ok(records)
}

async fn play(
    core: &Core,
    step: &Step,
    index: usize,
    entry_id: &str,
    integration: &str,
    tmp: &Path,
    compare: bool,
) -> Vec<StepRecord> {
    match step {
        Step::Call {
            domain,
            service,
            entity_id,
            data,
            return_response,
        } => {
            let mut request = ServiceRequest::new(domain.clone(), service.clone())
                .with_data(object(substitute(&Value::Object(data.clone()), tmp)))
                .with_context(Context::new());
            if let Some(entity_id) = entity_id {
                request = request.with_target(ServiceTarget::entities([entity_id.clone()]));
            }
            if *return_response {
                request = request.with_response();
            }
            let outcome = match core.services().call(request).await {
                Ok(Some(response)) => format!("ok: {}", Value::Object(response)),
                Ok(None) => "ok".to_owned(),
                Err(error) => format!("error: {error}"),
            };
            let label = format!(
                "{index}: {domain}.{service}{}",
                entity_id
                    .as_deref()
                    .map(|id| format!(" on {id}"))
                    .unwrap_or_default()
            );
            vec![StepRecord {
                label,
                outcome,
                states: settle(core, compare, tmp).await,
            }]
        }
        Step::ExpectState {
            entity_id,
            state,
            attributes,
        } => {
            let states = settle(core, compare, tmp).await;
            let actual = core.states().get(entity_id);
            let outcome = match actual {
                None => format!("expectation failed: {entity_id} does not exist"),
                Some(actual) => {
                    let wrong_state = state.as_ref().filter(|wanted| **wanted != actual.state);
                    let wrong_attribute = attributes
                        .iter()
                        .find(|(key, value)| actual.attributes.get(*key) != Some(value));
                    match (wrong_state, wrong_attribute) {
                        (Some(wanted), _) => format!(
                            "expectation failed: {entity_id} is {} not {wanted}",
                            actual.state
                        ),
                        (_, Some((key, value))) => format!(
                            "expectation failed: {entity_id}.{key} is {} not {value}",
                            actual.attributes.get(key).cloned().unwrap_or(Value::Null)
                        ),
                        _ => "ok".to_owned(),
                    }
                }
            };
            vec![StepRecord {
                label: format!("{index}: expect {entity_id}"),
                outcome,
                states,
            }]
        }
        Step::CallFieldFreeServices {} => {
            let mut records = Vec::new();
            let entities: Vec<String> = core
                .entities()
                .descriptions()
                .into_iter()
                .filter(|description| description.platform == integration)
                .map(|description| description.entity_id)
                .collect();
            for entity_id in entities {
                let domain = entity_id.split('.').next().unwrap_or_default().to_owned();
                let Some(spec) = homecore::catalog::catalog().domain(&domain) else {
                    continue;
                };
                for service in &spec.services {
                    if service.schema.fields.iter().any(|field| field.required) {
                        continue;
                    }
                    let mut request = ServiceRequest::new(domain.clone(), service.name.clone())
                        .with_target(ServiceTarget::entities([entity_id.clone()]))
                        .with_context(Context::new());
                    if service.supports_response == homecore::SupportsResponse::Only {
                        request = request.with_response();
                    }
                    let outcome = match core.services().call(request).await {
                        Ok(_) => "ok".to_owned(),
                        Err(error) => format!("error: {error}"),
                    };
                    records.push(StepRecord {
                        label: format!("{index}: {domain}.{} on {entity_id}", service.name),
                        outcome,
                        states: settle(core, compare, tmp).await,
                    });
                }
            }
            records
        }
        Step::Reload {} => {
            let outcome = match core.config_entries().reload(entry_id).await {
                Ok(true) => "ok".to_owned(),
                Ok(false) => "expectation failed: not loaded after reload".to_owned(),
                Err(error) => format!("expectation failed: {error}"),
            };
            vec![StepRecord {
                label: format!("{index}: reload"),
                outcome,
                states: settle(core, compare, tmp).await,
            }]
        }
        Step::Unload {} => {
            let outcome = match core.config_entries().unload(entry_id).await {
                Ok(true) => "ok".to_owned(),
                Ok(false) => "expectation failed: unload refused".to_owned(),
                Err(error) => format!("expectation failed: {error}"),
            };
            vec![StepRecord {
                label: format!("{index}: unload"),
                outcome,
                states: settle(core, compare, tmp).await,
            }]
        }
    }
}
