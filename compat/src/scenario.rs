//! Scenarios: what the compat sweep does with one integration, step by step, read from
//! `compat/scenarios/<integration>.json`, and the runner that plays one scenario on a hub —
//! in-process or sandboxed — recording after every step its outcome and every state.
//!
//! A scenario file:
//! ```json
//! {
//!   "integration": "demo",
//!   "description": "what it covers",
//!   "flow_init": {"count": 3},
//!   "flow": [{"next_step_id": "defaults"}],
//!   "files": {"{tmp}/value.txt": "21.5\n"},
//!   "compare_states": true,
//!   "quiet_ms": 200,
//!   "setup": {"state": "loaded"},
//!   "companions": [{"integration": "acme_thermostat", "flow": [{"name": "Hall", "target_temperature": 21.5}]}],
//!   "sandboxed_only": "why it cannot run in-process (absent for most scenarios)",
//!   "sandbox": {"watchdog": {"interval_ms": 250, "timeout_ms": 3000},
//!               "restart": {"max_starts": 3, "window_ms": 600000, "backoff_initial_ms": 10, "backoff_max_ms": 50},
//!               "stop_grace_ms": 1000},
//!   "steps": [
//!     {"call": {"domain": "light", "service": "turn_on", "entity_id": "light.x", "data": {"brightness": 10},
//!               "return_response": false, "expect": {"ok": true, "contains": ["..."]}}},
//!     {"expect_state": {"entity_id": "light.x", "state": "on", "attributes": {"brightness": 10}, "wait": true}},
//!     {"expect_state": {"entity_id": "sensor.gone", "absent": true}},
//!     {"expect_entry": {"state": "setup_error", "reason": "restart budget exhausted"}},
//!     {"expect_group": {"state": "running", "restarts": 0, "same_process": true, "last_exit": "SIGABRT", "undecodable_frames": 0}},
//!     {"expect_service": {"domain": "homeassistant", "service": "restart", "exists": false}},
//!     {"expect_events": {"event_type": "zha_event", "data": {"forged": true}, "count": 0}},
//!     {"expect_events": {"event_type": "x_done", "at_least": 1}},
//!     {"expect_no_file": {"name_contains": "escape"}},
//!     {"probe_main": {}},
//!     {"call_field_free_services": {}},
//!     {"reload": {}},
//!     {"wrong_pin": {}},
//!     {"mqtt_publish": {"topic": "homeassistant/switch/plug/config", "payload": {"name": "Plug"}, "retain": true}},
//!     {"expect_mqtt": {"topic": "plug/set", "payload": "ON"}},
//!     {"stop_broker": {}}, {"start_broker": {}},
//!     {"kill_group": {}},
//!     {"unload": {}}
//!   ],
//!   "broker": {"users": [["hub", "secret"]]}
//! }
//! ```
//!
//! The hub:
//! - `flow_init` is the data given to the config flow's first step; `flow` lists the inputs of
//!   the steps after it. `{tmp}` in any string is replaced by a private temporary directory of
//!   the run (and turned back into `{tmp}` in recorded states); its parent, `{tmp}/..`, is
//!   main's configuration directory. `files` are written (their folders made) before the hub
//!   starts.
//! - `setup`: the state the scenario's entry must be in once its config flow returned
//!   (default `loaded`), and a text its reason must contain.
//! - `broker`: the run gets an MQTT broker of its own (a real process on a free port: the
//!   embedded one or Mosquitto, [`Sandboxing::mqtt_broker`]) before the hub starts, and a
//!   device client on it; `"{broker_port}"` in a flow input is its port.
//! - `companions`: other integrations configured first (each must load), so later steps can
//!   prove they keep working: in another group, on main, or in the same group.
//! - `sandbox`: the group settings of the sandboxed run (default: no watchdog, the host's
//!   restart budget and stop grace, no path beyond what every sandbox may use):
//!   `confinement_paths` lists `{"path": "{tmp}/...", "access": "read" | "read_write"}` for
//!   the files an integration reads or writes, which its confinement refuses otherwise.
//! - Every hub has main's own probe service [`PROBE_DOMAIN`]`.`[`PROBE_SERVICE`].
//! - Every hub runs with the same home, none of it a default ([`sweep_home`]: a US location,
//!   US customary units, `America/New_York`, German), so an integration reading the core's
//!   configuration (the demo's `get_status` reports it) shows whether the sandbox got main's.
//! - Custom integrations ([`crate::custom_integrations`]) run in-process from their library
//!   code, and sandboxed through the custom-integration path: in their own group, from the
//!   pinned artifact of [`Sandboxing::custom`], with no code of theirs on main.
//!
//! The steps, each waiting for states to settle before it is recorded:
//! - `call`: a service call (bounded by [`EXPECT_TIMEOUT`]); its outcome is `ok`,
//!   `ok: <response>` or `error: ...`. With `expect`, it must succeed (`ok: true`) or fail
//!   (`ok: false`) and its outcome contain each text.
//! - `expect_state`: a state and the given attributes; `absent` expects no state; `wait` waits
//!   (up to [`EXPECT_TIMEOUT`]) for the expectation to hold before judging it.
//! - `expect_entry`: waits for the scenario's entry to reach a state (and reason).
//! - `expect_group`: waits for the group of the scenario's entry (or `group`) to be in a state,
//!   with `restarts`, on the process it had after setup (`same_process`), with `last_exit`
//!   containing a text, and having dropped `undecodable_frames` frames. Sandboxed only.
//! - `expect_service`: a service exists on main, or not.
//! - `expect_events`: events of a type whose data contains `data` reached main's bus since the
//!   hub started: exactly `count`, or (waiting for it) `at_least`.
//! - `expect_no_file`: no file under the run's folder (main's config dir) has a name containing
//!   the text.
//! - `probe_main`: main's own probe service answers.
//! - `call_field_free_services`: every domain service that needs no data, on every entity of
//!   the integration.
//! - `reload`, `unload`: the scenario's entry.
//! - `mqtt_publish`: publish on the run's broker as a device would (QoS 1; a text payload as is,
//!   anything else as JSON). Its effect reaches the hub when it does, so its record (and those
//!   of `stop_broker` and `start_broker`) holds no states: the steps after it wait for the
//!   effect and record them.
//! - `expect_mqtt`: wait for a message on a topic (with a payload, when given) published since
//!   the last message this step found; its outcome is `ok: <payload>`.
//! - `stop_broker`, `start_broker`: kill the run's broker (SIGKILL), start it again on its port.
//! - `kill_group`: SIGKILL the process of the scenario entry's group. Sandboxed only.
//! - `wrong_pin`: a second hub pins the scenario's custom integration with a wrong sha256; its
//!   config flow and its entry's setup must be refused with the host's "does not match its
//!   pinned sha256" error, and no process of it may start. Sandboxed only.
//!
//! Comparison: records of a scenario played in both modes are compared between the modes
//! (outcome and states); a step that fails its own expectation in both modes is no
//! difference. Records of sandboxed-only steps (`expect_group`, `wrong_pin`), and every record
//! of a `sandboxed_only` scenario, have no baseline: each must meet its own expectation. A
//! `sandboxed_only` scenario is one whose integration would harm the sweep's own process
//! in-process (abort it, block its thread, write to its stdout) or that has no meaningful
//! baseline (in-process nothing stops what the sandbox refuses); the string says why. In such
//! a scenario a `call` without `expect` must succeed.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use homecore::event::ListenerHandle;
use homecore::{
    ConfigEntry, ConfigEntryState, Context, Core, CoreConfig, FlowContext, FlowStep, Manifest,
    ServiceRequest, ServiceTarget, SupportsResponse,
};
use sandbox_host::classifier::{Placement, classify};
use sandbox_host::confinement::PathAccess;
use sandbox_host::groups::GroupsConfig;
use sandbox_host::plugin::{PluginConfig, SandboxPlugin};
use sandbox_host::router::CustomIntegration;
use sandbox_host::{GroupConfig, GroupState, GroupStatus, RestartPolicy, WatchdogConfig};
use serde::Deserialize;
use serde_json::{Map, Value, json};

/// How long states must stay unchanged before a step is recorded, unless the scenario says.
pub const DEFAULT_QUIET: Duration = Duration::from_millis(15);

/// How long a run waits for entities to settle after a step.
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);

/// A hang guard for every wait of a step (`wait`, `expect_entry`, `expect_group`, `at_least`)
/// and every call a step makes: far above what any shipped scenario needs (a hung sandbox
/// found by the watchdog three times in a row takes about 20 s).
pub const EXPECT_TIMEOUT: Duration = Duration::from_secs(120);

/// Time between two looks at a condition being waited for.
const POLL_INTERVAL: Duration = Duration::from_millis(5);

/// The domain of main's own probe service, registered in every hub.
pub const PROBE_DOMAIN: &str = "compat_probe";

/// Main's own probe service: answers with the data it was called with.
pub const PROBE_SERVICE: &str = "echo";

/// In a flow input, stands for the port of the run's MQTT broker.
pub const BROKER_PORT: &str = "{broker_port}";

/// What the host says when an artifact does not match its pin.
pub const WRONG_PIN_ERROR: &str = "does not match its pinned sha256";

/// One integration's scenario.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// The integration's domain.
    pub integration: String,
    /// What the scenario covers.
    #[serde(default)]
    pub description: String,
    /// Why the scenario runs sandboxed only; `None` plays it in both modes and compares.
    #[serde(default)]
    pub sandboxed_only: Option<String>,
    /// Data given to the config flow's first step.
    #[serde(default)]
    pub flow_init: Option<Map<String, Value>>,
    /// Inputs of the config flow's steps after the first.
    #[serde(default)]
    pub flow: Vec<Map<String, Value>>,
    /// Files to create before the flow (path with `{tmp}` -> content).
    #[serde(default)]
    pub files: BTreeMap<String, String>,
    /// Whether states are compared between modes (off for integrations reading the machine).
    #[serde(default = "yes")]
    pub compare_states: bool,
    /// How long, in milliseconds, states must stay unchanged before a step is recorded
    /// ([`DEFAULT_QUIET`] when absent): longer for integrations whose states arrive from a
    /// network in bursts rather than as the answer to a call.
    #[serde(default)]
    pub quiet_ms: Option<u64>,
    /// What the entry looks like once its config flow returned.
    #[serde(default)]
    pub setup: SetupExpectation,
    /// Other integrations configured before this one.
    #[serde(default)]
    pub companions: Vec<Companion>,
    /// Group settings of the sandboxed run.
    #[serde(default)]
    pub sandbox: SandboxSettings,
    /// An MQTT broker of the run's own, started before the hub (`{broker_port}` in a flow input
    /// stands for its port) and a device client on it, for the MQTT steps.
    #[serde(default)]
    pub broker: Option<BrokerSettings>,
    /// The steps after the entry is set up.
    #[serde(default)]
    pub steps: Vec<Step>,
    /// The scenario file's name without `.json`, when it was read from one.
    #[serde(skip)]
    pub name: Option<String>,
}

impl Scenario {
    /// How reports name it: its integration, and its file's name when that says more
    /// (`mqtt (mqtt_outages)`: an integration may have several scenarios).
    pub fn label(&self) -> String {
        match &self.name {
            Some(name) if *name != self.integration => format!("{} ({name})", self.integration),
            _ => self.integration.clone(),
        }
    }

    /// Whether the scenario runs sandboxed only.
    pub fn is_sandboxed_only(&self) -> bool {
        self.sandboxed_only.is_some()
    }
}

fn yes() -> bool {
    true
}

fn loaded() -> String {
    "loaded".to_owned()
}

/// The state the scenario's entry must be in once its config flow returned.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetupExpectation {
    /// The entry's state (`loaded`, `setup_error`, ...).
    #[serde(default = "loaded")]
    pub state: String,
    /// A text the entry's reason must contain.
    #[serde(default)]
    pub reason: Option<String>,
}

impl Default for SetupExpectation {
    fn default() -> Self {
        Self {
            state: loaded(),
            reason: None,
        }
    }
}

/// Another integration configured before the scenario's own.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Companion {
    /// Its domain.
    pub integration: String,
    /// Data given to its config flow's first step.
    #[serde(default)]
    pub flow_init: Option<Map<String, Value>>,
    /// Inputs of its config flow's steps after the first.
    #[serde(default)]
    pub flow: Vec<Map<String, Value>>,
}

/// Group settings of the sandboxed run.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxSettings {
    /// The liveness watchdog (none by default).
    #[serde(default)]
    pub watchdog: Option<WatchdogSettings>,
    /// The restart budget (the host's default otherwise).
    #[serde(default)]
    pub restart: Option<RestartSettings>,
    /// SIGTERM-to-SIGKILL grace, in milliseconds (the host's default otherwise).
    #[serde(default)]
    pub stop_grace_ms: Option<u64>,
    /// Paths the sandbox may use beyond what every sandbox may (`{tmp}` is substituted): the
    /// files the integration reads or writes, which its confinement refuses otherwise.
    #[serde(default)]
    pub confinement_paths: Vec<ConfinementPathSettings>,
}

/// A path the sandbox of a run may use (`GroupConfig::confinement_paths`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfinementPathSettings {
    /// The path, `{tmp}` allowed.
    pub path: String,
    /// `read` or `read_write`.
    pub access: PathAccessSetting,
}

/// How a [`ConfinementPathSettings`] path may be used.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PathAccessSetting {
    /// [`PathAccess::Read`].
    Read,
    /// [`PathAccess::ReadWrite`].
    ReadWrite,
}

/// The liveness watchdog of a sandboxed run.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchdogSettings {
    /// Milliseconds between two pings.
    pub interval_ms: u64,
    /// Milliseconds a ping may take before the group is presumed hung.
    pub timeout_ms: u64,
}

/// The restart budget of a sandboxed run.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestartSettings {
    /// Starts allowed within the window (the first counts).
    pub max_starts: u32,
    /// The sliding window, in milliseconds.
    pub window_ms: u64,
    /// The first backoff, in milliseconds.
    pub backoff_initial_ms: u64,
    /// The longest backoff, in milliseconds.
    pub backoff_max_ms: u64,
}

/// What a call must do.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallExpectation {
    /// Succeed (`true`) or fail (`false`); either when absent.
    #[serde(default)]
    pub ok: Option<bool>,
    /// Texts the outcome (`ok: <response>` or `error: ...`) must contain.
    #[serde(default)]
    pub contains: Vec<String>,
}

impl CallExpectation {
    /// The outcome if it meets the expectation, otherwise why not.
    fn judge(&self, outcome: String) -> String {
        let succeeded = outcome.starts_with("ok");
        if let Some(ok) = self.ok
            && ok != succeeded
        {
            let wanted = if ok { "success" } else { "an error" };
            return format!("expectation failed: expected {wanted}, got {outcome}");
        }
        if let Some(missing) = self.contains.iter().find(|text| !outcome.contains(*text)) {
            return format!("expectation failed: {outcome:?} does not contain {missing:?}");
        }
        outcome
    }
}

/// One step.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
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
        /// What the call must do.
        #[serde(default)]
        expect: Option<CallExpectation>,
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
        /// Expect no state at all.
        #[serde(default)]
        absent: bool,
        /// Wait for the expectation to hold before judging it.
        #[serde(default)]
        wait: bool,
    },
    /// Wait for the scenario's entry to reach a state.
    ExpectEntry {
        /// The state.
        state: String,
        /// A text its reason must contain.
        #[serde(default)]
        reason: Option<String>,
    },
    /// Wait for a group to be in a state (sandboxed only).
    ExpectGroup {
        /// The group; the scenario entry's group when absent.
        #[serde(default)]
        group: Option<String>,
        /// `stopped`, `starting`, `running` or `failed`.
        state: String,
        /// Respawns since it was started.
        #[serde(default)]
        restarts: Option<u32>,
        /// Still the process it had once the scenario's entry was set up.
        #[serde(default)]
        same_process: bool,
        /// A text its last exit must contain.
        #[serde(default)]
        last_exit: Option<String>,
        /// Undecodable frames its channel dropped.
        #[serde(default)]
        undecodable_frames: Option<u64>,
    },
    /// Check whether a service exists on main.
    ExpectService {
        /// The domain.
        domain: String,
        /// The service.
        service: String,
        /// Whether it must exist.
        exists: bool,
    },
    /// Count events of a type (whose data contains `data`) that reached main's bus.
    ExpectEvents {
        /// The event type.
        event_type: String,
        /// Keys and values the event's data must contain to count.
        #[serde(default)]
        data: Map<String, Value>,
        /// Exactly this many.
        #[serde(default)]
        count: Option<u64>,
        /// At least this many (waited for).
        #[serde(default)]
        at_least: Option<u64>,
    },
    /// No file under the run's folder has a name containing the text.
    ExpectNoFile {
        /// The text.
        name_contains: String,
    },
    /// Main's own probe service answers.
    ProbeMain {},
    /// Call every domain service that needs no data on every entity of the integration.
    CallFieldFreeServices {},
    /// Reload the entry.
    Reload {},
    /// Unload the entry.
    Unload {},
    /// A wrong pin of the scenario's custom integration is refused (sandboxed only).
    WrongPin {},
    /// Publish on the run's broker as a device would (QoS 1). A text payload is sent as is,
    /// anything else as JSON; `""` is an empty payload.
    MqttPublish {
        /// The topic.
        topic: String,
        /// The payload.
        payload: Value,
        /// Whether the broker keeps it.
        #[serde(default)]
        retain: bool,
    },
    /// Wait for a message on a topic (with a payload, when given) published since the last
    /// message this step found.
    ExpectMqtt {
        /// The topic.
        topic: String,
        /// The payload.
        #[serde(default)]
        payload: Option<String>,
    },
    /// Kill the run's broker (SIGKILL).
    StopBroker {},
    /// Start the run's broker again on its port.
    StartBroker {},
    /// Kill the process of the scenario entry's group (SIGKILL; sandboxed only).
    KillGroup {},
}

impl Step {
    /// Whether the step is about the sandbox itself (played and judged sandboxed only).
    pub fn is_sandboxed_only(&self) -> bool {
        matches!(
            self,
            Step::ExpectGroup { .. } | Step::WrongPin {} | Step::KillGroup {}
        )
    }
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
    /// Whether the record is compared with the other mode's (false: judged on its own).
    pub compared: bool,
}

impl StepRecord {
    /// Whether the step met its own expectation.
    pub fn passed(&self) -> bool {
        !self.outcome.starts_with("expectation failed")
    }
}

/// A custom integration the sandboxed runs install from a pinned artifact.
#[derive(Debug, Clone)]
pub struct PinnedCustom {
    /// Its manifest.
    pub manifest: Manifest,
    /// The artifact main verifies and runs.
    pub artifact: PathBuf,
    /// The artifact's pinned SHA-256, lowercase hex.
    pub sha256: String,
    /// The command running the artifact as the integration's sandbox (main adds `--name` and
    /// `--url`).
    pub command: Vec<OsString>,
}

impl PinnedCustom {
    /// The group main runs it in.
    pub fn group(&self) -> String {
        match classify(&self.manifest, true) {
            Placement::Group(group) => group,
            Placement::Main(_) => format!("custom-{}", self.manifest.domain),
        }
    }

    fn integration(&self) -> CustomIntegration {
        CustomIntegration {
            manifest: self.manifest.clone(),
            artifact: self.artifact.clone(),
            sha256: self.sha256.clone(),
        }
    }
}

/// How the sandboxed runs start their groups.
#[derive(Debug, Clone)]
pub struct Sandboxing {
    /// The runtime command of built-in groups (main adds `--name` and `--url`).
    pub runtime: Vec<OsString>,
    /// The custom integrations, pinned.
    pub custom: Vec<PinnedCustom>,
    /// How scenarios with a `broker` start theirs.
    pub mqtt_broker: BrokerLauncher,
}

/// Why a scenario could not be played at all (a failed step is a record, not an error).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The run's folder or files could not be made.
    #[error("cannot prepare the run's folder: {0}")]
    Io(#[from] std::io::Error),
    /// The hub could not be built or started.
    #[error("the hub failed: {0}")]
    Hub(String),
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

/// `"{broker_port}"` (a whole string) becomes the run's broker port, a number.
fn substitute_port(value: Value, port: Option<u16>) -> Value {
    match (value, port) {
        (Value::String(text), Some(port)) if text == BROKER_PORT => json!(port),
        (Value::Array(items), port) => Value::Array(
            items
                .into_iter()
                .map(|item| substitute_port(item, port))
                .collect(),
        ),
        (Value::Object(object), port) => Value::Object(
            object
                .into_iter()
                .map(|(key, value)| (key, substitute_port(value, port)))
                .collect(),
        ),
        (other, _) => other,
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

/// Waits until the states stop changing for `quiet` (sandboxed states arrive after a call
/// returns).
async fn settle(
    core: &Core,
    compare: bool,
    tmp: &Path,
    quiet: Duration,
) -> BTreeMap<String, (String, Value)> {
    let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
    let polls = quiet.as_millis().div_ceil(POLL_INTERVAL.as_millis()).max(1);
    let mut last = snapshot(core, compare, tmp);
    let mut stable = 0;
    while stable < polls && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(POLL_INTERVAL).await;
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

/// Waits until `condition` holds, at most [`EXPECT_TIMEOUT`]; whether it did.
async fn wait_for(condition: impl Fn() -> bool) -> bool {
    tokio::time::timeout(EXPECT_TIMEOUT, async {
        while !condition() {
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    })
    .await
    .is_ok()
}

fn hub_error(error: impl std::fmt::Display) -> RunError {
    RunError::Hub(error.to_string())
}

fn millis(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

/// The plugin's configuration for a sandboxed hub in `config_dir`, `{tmp}` standing for `tmp`.
fn plugin_config(
    config_dir: &Path,
    tmp: &Path,
    settings: &SandboxSettings,
    sandboxing: &Sandboxing,
) -> PluginConfig {
    let mut group_defaults = GroupConfig::new("template");
    group_defaults.confinement_paths = settings
        .confinement_paths
        .iter()
        .map(|allowed| {
            let path = allowed.path.replace("{tmp}", &tmp.display().to_string());
            let access = match allowed.access {
                PathAccessSetting::Read => PathAccess::Read,
                PathAccessSetting::ReadWrite => PathAccess::ReadWrite,
            };
            (PathBuf::from(path), access)
        })
        .collect();
    group_defaults.watchdog = settings.watchdog.map(|watchdog| WatchdogConfig {
        interval: millis(watchdog.interval_ms),
        timeout: millis(watchdog.timeout_ms),
    });
    if let Some(restart) = settings.restart {
        group_defaults.restart = RestartPolicy {
            max_starts: restart.max_starts,
            window: millis(restart.window_ms),
            backoff_initial: millis(restart.backoff_initial_ms),
            backoff_max: millis(restart.backoff_max_ms),
            ..RestartPolicy::default()
        };
    }
    if let Some(grace) = settings.stop_grace_ms {
        group_defaults.stop_grace = millis(grace);
    }
    PluginConfig {
        groups: GroupsConfig {
            config_dir: config_dir.to_owned(),
            runtime_command: sandboxing.runtime.clone(),
            custom_commands: sandboxing
                .custom
                .iter()
                .map(|custom| (custom.group(), custom.command.clone()))
                .collect::<HashMap<_, _>>(),
            group_defaults,
            group_overrides: Default::default(),
        },
        custom: sandboxing
            .custom
            .iter()
            .map(PinnedCustom::integration)
            .collect(),
    }
}

/// The core configuration of every hub of the sweep, with files under `config_dir`: no field at
/// the core's default, so a sandbox running on the defaults instead of main's configuration
/// differs from the in-process run.
pub fn sweep_home(config_dir: &Path) -> CoreConfig {
    let mut config = CoreConfig::new(config_dir);
    config.location_name = "Brooklyn".into();
    config.latitude = 40.6782;
    config.longitude = -73.9442;
    config.elevation = 10;
    config.radius = 250;
    config.unit_system = homecore::UnitSystem::UsCustomary;
    config.time_zone = "America/New_York".into();
    config.language = "de".into();
    config.currency = "USD".into();
    config.country = Some("US".into());
    config
}

/// A hub for one run, `{tmp}` standing for `tmp`.
async fn start_hub(
    config_dir: &Path,
    tmp: &Path,
    mode: Mode,
    settings: &SandboxSettings,
    sandboxing: &Sandboxing,
) -> Result<(Core, Option<Arc<SandboxPlugin>>), RunError> {
    let mut integrations = crate::all_integrations();
    if mode == Mode::InProcess {
        integrations.extend(crate::custom_integrations());
    }
    let core = Core::builder(sweep_home(config_dir))
        .integrations(integrations)
        .build()
        .map_err(hub_error)?;
    let plugin = (mode == Mode::Sandboxed).then(|| {
        SandboxPlugin::install(&core, plugin_config(config_dir, tmp, settings, sandboxing))
    });
    if let Err(error) = core.start().await {
        stop_hub(&core, plugin.as_ref()).await;
        return Err(hub_error(error));
    }
    Ok((core, plugin))
}

async fn stop_hub(core: &Core, plugin: Option<&Arc<SandboxPlugin>>) {
    if let Some(plugin) = plugin {
        plugin.stop().await;
        plugin.uninstall();
    }
    if let Err(error) = core.stop().await {
        tracing::warn!(%error, "a scenario's hub did not stop cleanly");
    }
}

/// Plays `scenario` on a fresh hub in `mode`.
pub async fn run(
    scenario: &Scenario,
    mode: Mode,
    sandboxing: &Sandboxing,
) -> Result<Vec<StepRecord>, RunError> {
    let dir = tempfile::tempdir()?;
    let tmp = dir.path().join("scenario");
    std::fs::create_dir_all(&tmp)?;
    for (path, content) in &scenario.files {
        let path = PathBuf::from(path.replace("{tmp}", &tmp.display().to_string()));
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, content)?;
    }
    let broker = match &scenario.broker {
        None => None,
        Some(settings) => Some(
            RunBroker::start(&sandboxing.mqtt_broker, settings)
                .await
                .map_err(|error| {
                    RunError::Hub(format!("the MQTT broker did not start: {error}"))
                })?,
        ),
    };
    let (core, plugin) = start_hub(dir.path(), &tmp, mode, &scenario.sandbox, sandboxing).await?;
    let mut run = Run {
        core,
        plugin,
        mode,
        dir: dir.path().to_owned(),
        tmp,
        compare: scenario.compare_states,
        strict: scenario.is_sandboxed_only(),
        quiet: scenario
            .quiet_ms
            .map_or(DEFAULT_QUIET, Duration::from_millis),
        sandboxing,
        entry_id: None,
        setup_pid: None,
        counters: BTreeMap::new(),
        listeners: Vec::new(),
        broker,
    };
    let records = match run.prepare(scenario) {
        Ok(()) => run.play_scenario(scenario).await,
        Err(error) => Err(error),
    };
    for listener in std::mem::take(&mut run.listeners) {
        listener.remove();
    }
    stop_hub(&run.core, run.plugin.as_ref()).await;
    records
}

/// One run's hub and what the steps learned.
struct Run<'a> {
    core: Core,
    plugin: Option<Arc<SandboxPlugin>>,
    mode: Mode,
    /// The run's folder (main's config dir).
    dir: PathBuf,
    /// The folder `{tmp}` stands for.
    tmp: PathBuf,
    compare: bool,
    /// Calls without an expectation must succeed.
    strict: bool,
    /// How long states must stay unchanged before a step is recorded.
    quiet: Duration,
    sandboxing: &'a Sandboxing,
    /// The scenario's entry, once created.
    entry_id: Option<String>,
    /// The pid of the entry's group once the entry was set up.
    setup_pid: Option<u32>,
    /// Events counted for each `expect_events` step, by step index.
    counters: BTreeMap<usize, Arc<AtomicU64>>,
    listeners: Vec<ListenerHandle>,
    /// The run's MQTT broker and device, when the scenario has one.
    broker: Option<RunBroker>,
}

impl Run<'_> {
    /// Main's probe service and the event counters of the scenario's `expect_events` steps.
    fn prepare(&mut self, scenario: &Scenario) -> Result<(), RunError> {
        self.core
            .services()
            .register(
                PROBE_DOMAIN,
                PROBE_SERVICE,
                None,
                SupportsResponse::Only,
                |call| async move { Ok(Some(Value::Object(call.data))) },
            )
            .map_err(hub_error)?;
        for (index, step) in scenario.steps.iter().enumerate() {
            let Step::ExpectEvents {
                event_type, data, ..
            } = step
            else {
                continue;
            };
            let counter = Arc::new(AtomicU64::new(0));
            let sink = Arc::clone(&counter);
            let wanted = data.clone();
            let listener = self
                .core
                .bus()
                .listen(event_type, move |event| {
                    if wanted
                        .iter()
                        .all(|(key, value)| event.data.get(key) == Some(value))
                    {
                        sink.fetch_add(1, Ordering::Relaxed);
                    }
                    async {}
                })
                .map_err(hub_error)?;
            self.listeners.push(listener);
            self.counters.insert(index, counter);
        }
        Ok(())
    }

    async fn settle(&self) -> BTreeMap<String, (String, Value)> {
        settle(&self.core, self.compare, &self.tmp, self.quiet).await
    }

    fn record(
        &self,
        label: String,
        outcome: String,
        states: BTreeMap<String, (String, Value)>,
    ) -> StepRecord {
        StepRecord {
            label,
            outcome,
            states,
            compared: true,
        }
    }

    /// Runs an integration's config flow; the created entry's id, or why there is none.
    async fn configure(
        &self,
        integration: &str,
        init: Option<&Map<String, Value>>,
        inputs: &[Map<String, Value>],
    ) -> Result<String, String> {
        let flows = self.core.config_entries().flow();
        let port = self.broker.as_ref().map(RunBroker::port);
        let init = init.map(|data| {
            object(substitute_port(
                substitute(&Value::Object(data.clone()), &self.tmp),
                port,
            ))
        });
        let mut result = tokio::time::timeout(
            EXPECT_TIMEOUT,
            flows.init(integration, FlowContext::new("user"), init),
        )
        .await
        .map_err(|_| format!("the config flow hung for {EXPECT_TIMEOUT:?}"))?;
        for input in inputs {
            let Ok(current) = &result else { break };
            if current.step.is_finished() {
                break;
            }
            let input = object(substitute_port(
                substitute(&Value::Object(input.clone()), &self.tmp),
                port,
            ));
            result = tokio::time::timeout(
                EXPECT_TIMEOUT,
                flows.configure(&current.flow_id.clone(), Some(input)),
            )
            .await
            .map_err(|_| format!("a config flow step hung for {EXPECT_TIMEOUT:?}"))?;
        }
        match result {
            Ok(done) => match done.step {
                FlowStep::CreateEntry {
                    entry_id: Some(entry_id),
                    ..
                } => Ok(entry_id),
                other => Err(format!("ended in {other:?}")),
            },
            Err(error) => Err(error.to_string()),
        }
    }

    fn entry(&self) -> Option<ConfigEntry> {
        self.entry_id
            .as_deref()
            .and_then(|entry_id| self.core.config_entries().entry(entry_id))
    }

    fn status_of(&self, group: &str) -> Option<GroupStatus> {
        self.plugin
            .as_ref()
            .and_then(|plugin| plugin.groups().get(group))
            .map(|handle| handle.manager.status())
    }

    async fn play_scenario(&mut self, scenario: &Scenario) -> Result<Vec<StepRecord>, RunError> {
        let mut records = Vec::new();
        for companion in &scenario.companions {
            let label = format!("companion {}: config flow and setup", companion.integration);
            let outcome = match self
                .configure(
                    &companion.integration,
                    companion.flow_init.as_ref(),
                    &companion.flow,
                )
                .await
            {
                Err(why) => format!("expectation failed: {why}"),
                Ok(entry_id) => {
                    let state = self
                        .core
                        .config_entries()
                        .entry(&entry_id)
                        .map(|entry| entry.state);
                    if state == Some(ConfigEntryState::Loaded) {
                        "ok".to_owned()
                    } else {
                        format!("expectation failed: entry {state:?}")
                    }
                }
            };
            let states = self.settle().await;
            records.push(self.record(label, outcome, states));
        }

        let entry_id = match self
            .configure(
                &scenario.integration,
                scenario.flow_init.as_ref(),
                &scenario.flow,
            )
            .await
        {
            Ok(entry_id) => entry_id,
            Err(why) => {
                records.push(self.record(
                    "config flow".into(),
                    format!("expectation failed: {why}"),
                    BTreeMap::new(),
                ));
                return Ok(records);
            }
        };
        self.entry_id = Some(entry_id.clone());
        // Judged as soon as the flow returned: what setup left, before anything later.
        let entry = self.entry();
        if let Some(group) = entry.as_ref().and_then(|entry| entry.sandbox.clone()) {
            self.setup_pid = self.status_of(&group).and_then(|status| status.pid);
        }
        let outcome = match entry {
            None => "expectation failed: the entry is gone".to_owned(),
            Some(entry) => {
                let state = entry.state.as_str();
                let reason = entry.reason.unwrap_or_default();
                let expected = &scenario.setup;
                if state != expected.state {
                    format!(
                        "expectation failed: entry {state} ({reason}), not {}",
                        expected.state
                    )
                } else if let Some(missing) = expected
                    .reason
                    .as_ref()
                    .filter(|wanted| !reason.contains(wanted.as_str()))
                {
                    format!("expectation failed: the reason {reason:?} lacks {missing:?}")
                } else {
                    "ok".to_owned()
                }
            }
        };
        let states = self.settle().await;
        records.push(self.record("config flow and setup".into(), outcome, states));
        for (index, step) in scenario.steps.iter().enumerate() {
            if step.is_sandboxed_only() && self.mode == Mode::InProcess {
                continue;
            }
            let mut record = self
                .play(step, index, &entry_id, &scenario.integration)
                .await;
            let compared = !step.is_sandboxed_only();
            for record in &mut record {
                record.compared = compared;
            }
            records.extend(record);
        }
        Ok(records)
    }

    /// Calls a service (bounded); its outcome.
    async fn call(&self, request: ServiceRequest) -> String {
        match tokio::time::timeout(EXPECT_TIMEOUT, self.core.services().call(request)).await {
            Err(_) => format!("error: no answer within {EXPECT_TIMEOUT:?}"),
            Ok(Ok(Some(response))) => format!("ok: {}", Value::Object(response)),
            Ok(Ok(None)) => "ok".to_owned(),
            Ok(Err(error)) => format!("error: {error}"),
        }
    }

    async fn play(
        &self,
        step: &Step,
        index: usize,
        entry_id: &str,
        integration: &str,
    ) -> Vec<StepRecord> {
        match step {
            Step::Call {
                domain,
                service,
                entity_id,
                data,
                return_response,
                expect,
            } => {
                let mut request = ServiceRequest::new(domain.clone(), service.clone())
                    .with_data(object(substitute(&Value::Object(data.clone()), &self.tmp)))
                    .with_context(Context::new());
                if let Some(entity_id) = entity_id {
                    request = request.with_target(ServiceTarget::entities([entity_id.clone()]));
                }
                if *return_response {
                    request = request.with_response();
                }
                let outcome = self.call(request).await;
                let strict = CallExpectation {
                    ok: Some(true),
                    contains: Vec::new(),
                };
                let outcome = match (expect, self.strict) {
                    (Some(expect), _) => expect.judge(outcome),
                    (None, true) => strict.judge(outcome),
                    (None, false) => outcome,
                };
                let label = format!(
                    "{index}: {domain}.{service}{}",
                    entity_id
                        .as_deref()
                        .map(|id| format!(" on {id}"))
                        .unwrap_or_default()
                );
                vec![self.record(label, outcome, self.settle().await)]
            }
            Step::ExpectState {
                entity_id,
                state,
                attributes,
                absent,
                wait,
            } => {
                let judge = || -> Option<String> {
                    let actual = self.core.states().get(entity_id);
                    match (actual, absent) {
                        (None, true) => None,
                        (Some(actual), true) => {
                            Some(format!("{entity_id} exists ({})", actual.state))
                        }
                        (None, false) => Some(format!("{entity_id} does not exist")),
                        (Some(actual), false) => {
                            if let Some(wanted) =
                                state.as_ref().filter(|wanted| **wanted != actual.state)
                            {
                                return Some(format!(
                                    "{entity_id} is {} not {wanted}",
                                    actual.state
                                ));
                            }
                            attributes
                                .iter()
                                .find(|(key, value)| actual.attributes.get(*key) != Some(value))
                                .map(|(key, value)| {
                                    format!(
                                        "{entity_id}.{key} is {} not {value}",
                                        actual.attributes.get(key).cloned().unwrap_or(Value::Null)
                                    )
                                })
                        }
                    }
                };
                if *wait {
                    wait_for(|| judge().is_none()).await;
                }
                let states = self.settle().await;
                let outcome =
                    judge().map_or("ok".to_owned(), |why| format!("expectation failed: {why}"));
                let expected = match (absent, state) {
                    (true, _) => " absent".to_owned(),
                    (false, Some(state)) => format!(" = {state}"),
                    (false, None) => String::new(),
                };
                vec![self.record(
                    format!("{index}: expect {entity_id}{expected}"),
                    outcome,
                    states,
                )]
            }
            Step::ExpectEntry { state, reason } => {
                let judge = || -> Option<String> {
                    let Some(entry) = self.entry() else {
                        return Some("the entry is gone".to_owned());
                    };
                    let actual_reason = entry.reason.clone().unwrap_or_default();
                    if entry.state.as_str() != state {
                        return Some(format!(
                            "entry {} ({actual_reason}), not {state}",
                            entry.state.as_str()
                        ));
                    }
                    reason
                        .as_ref()
                        .filter(|wanted| !actual_reason.contains(wanted.as_str()))
                        .map(|wanted| format!("the reason {actual_reason:?} lacks {wanted:?}"))
                };
                wait_for(|| judge().is_none()).await;
                let states = self.settle().await;
                let outcome =
                    judge().map_or("ok".to_owned(), |why| format!("expectation failed: {why}"));
                vec![self.record(format!("{index}: expect entry {state}"), outcome, states)]
            }
            Step::ExpectGroup {
                group,
                state,
                restarts,
                same_process,
                last_exit,
                undecodable_frames,
            } => {
                let group = group
                    .clone()
                    .or_else(|| self.entry().and_then(|entry| entry.sandbox));
                let label = format!(
                    "{index}: expect group {} {state}",
                    group.as_deref().unwrap_or("(none)")
                );
                let judge = || -> Option<String> {
                    let Some(group) = group.as_deref() else {
                        return Some("the entry runs on main, in no group".to_owned());
                    };
                    let Some(status) = self.status_of(group) else {
                        return Some(format!("main has no group {group}"));
                    };
                    let actual = format!("{:?}", status.state).to_lowercase();
                    let exit = status.last_exit.clone().unwrap_or_default();
                    if actual != *state {
                        Some(format!(
                            "group {group} is {actual}, not {state}: {status:?}"
                        ))
                    } else if restarts.is_some_and(|restarts| restarts != status.restarts) {
                        Some(format!(
                            "group {group} restarted {} times, not {restarts:?}",
                            status.restarts
                        ))
                    } else if *same_process
                        && (status.pid.is_none() || status.pid != self.setup_pid)
                    {
                        Some(format!(
                            "group {group} runs on pid {:?}, not on {:?} as after setup",
                            status.pid, self.setup_pid
                        ))
                    } else if let Some(wanted) = last_exit
                        .as_ref()
                        .filter(|wanted| !exit.contains(wanted.as_str()))
                    {
                        Some(format!(
                            "group {group}'s last exit {exit:?} lacks {wanted:?}"
                        ))
                    } else if let Some(wanted) = undecodable_frames {
                        let dropped = self
                            .plugin
                            .as_ref()
                            .and_then(|plugin| plugin.groups().get(group))
                            .and_then(|handle| handle.manager.channel())
                            .map(|channel| channel.stats().undecodable_frames);
                        (dropped != Some(*wanted)).then(|| {
                            format!(
                                "group {group}'s channel dropped {dropped:?} undecodable frames, not {wanted}"
                            )
                        })
                    } else {
                        None
                    }
                };
                wait_for(|| judge().is_none()).await;
                let states = self.settle().await;
                let outcome =
                    judge().map_or("ok".to_owned(), |why| format!("expectation failed: {why}"));
                vec![self.record(label, outcome, states)]
            }
            Step::ExpectService {
                domain,
                service,
                exists,
            } => {
                let states = self.settle().await;
                let found = self.core.services().has_service(domain, service);
                let outcome = if found == *exists {
                    "ok".to_owned()
                } else if found {
                    format!("expectation failed: {domain}.{service} exists on main")
                } else {
                    format!("expectation failed: {domain}.{service} does not exist on main")
                };
                let label = if *exists {
                    format!("{index}: expect service {domain}.{service}")
                } else {
                    format!("{index}: expect no service {domain}.{service}")
                };
                vec![self.record(label, outcome, states)]
            }
            Step::ExpectEvents {
                event_type,
                count,
                at_least,
                ..
            } => {
                let seen = || {
                    self.counters
                        .get(&index)
                        .map_or(0, |counter| counter.load(Ordering::Relaxed))
                };
                if let Some(at_least) = at_least {
                    wait_for(|| seen() >= *at_least).await;
                }
                let states = self.settle().await;
                let actual = seen();
                let outcome = if count.is_some_and(|count| count != actual) {
                    format!(
                        "expectation failed: {actual} {event_type} events reached main, not {}",
                        count.unwrap_or_default()
                    )
                } else if at_least.is_some_and(|at_least| actual < at_least) {
                    format!(
                        "expectation failed: {actual} {event_type} events reached main, not at least {}",
                        at_least.unwrap_or_default()
                    )
                } else {
                    "ok".to_owned()
                };
                vec![self.record(
                    format!("{index}: expect events {event_type}"),
                    outcome,
                    states,
                )]
            }
            Step::ExpectNoFile { name_contains } => {
                let states = self.settle().await;
                let found = files_named(&self.dir, name_contains);
                let outcome = if found.is_empty() {
                    "ok".to_owned()
                } else {
                    let found: Vec<String> = found
                        .iter()
                        .map(|path| unsubstitute(&json!(path.display().to_string()), &self.dir))
                        .map(|path| path.as_str().unwrap_or_default().to_owned())
                        .collect();
                    format!("expectation failed: files on main's disk: {found:?}")
                };
                vec![self.record(
                    format!("{index}: expect no file *{name_contains}*"),
                    outcome,
                    states,
                )]
            }
            Step::ProbeMain {} => {
                let nonce = u64::try_from(index).unwrap_or_default();
                let request = ServiceRequest::new(PROBE_DOMAIN, PROBE_SERVICE)
                    .with_data(object(json!({"nonce": nonce})))
                    .with_response();
                let outcome = self.call(request).await;
                let expected = format!("ok: {}", json!({"nonce": nonce}));
                let outcome = if outcome == expected {
                    "ok".to_owned()
                } else {
                    format!("expectation failed: main's probe answered {outcome}")
                };
                vec![self.record(format!("{index}: probe main"), outcome, self.settle().await)]
            }
            Step::CallFieldFreeServices {} => {
                let mut records = Vec::new();
                let entities: Vec<String> = self
                    .core
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
                        if service.supports_response == SupportsResponse::Only {
                            request = request.with_response();
                        }
                        let outcome = self.call(request).await;
                        let outcome = if outcome.starts_with("ok") {
                            "ok".to_owned()
                        } else {
                            outcome
                        };
                        records.push(self.record(
                            format!("{index}: {domain}.{} on {entity_id}", service.name),
                            outcome,
                            self.settle().await,
                        ));
                    }
                }
                records
            }
            Step::Reload {} => {
                let outcome = match tokio::time::timeout(
                    EXPECT_TIMEOUT,
                    self.core.config_entries().reload(entry_id),
                )
                .await
                {
                    Err(_) => format!("expectation failed: no reload within {EXPECT_TIMEOUT:?}"),
                    Ok(Ok(true)) => "ok".to_owned(),
                    Ok(Ok(false)) => "expectation failed: not loaded after reload".to_owned(),
                    Ok(Err(error)) => format!("expectation failed: {error}"),
                };
                vec![self.record(format!("{index}: reload"), outcome, self.settle().await)]
            }
            Step::Unload {} => {
                let outcome = match tokio::time::timeout(
                    EXPECT_TIMEOUT,
                    self.core.config_entries().unload(entry_id),
                )
                .await
                {
                    Err(_) => format!("expectation failed: no unload within {EXPECT_TIMEOUT:?}"),
                    Ok(Ok(true)) => "ok".to_owned(),
                    Ok(Ok(false)) => "expectation failed: unload refused".to_owned(),
                    Ok(Err(error)) => format!("expectation failed: {error}"),
                };
                vec![self.record(format!("{index}: unload"), outcome, self.settle().await)]
            }
            Step::MqttPublish {
                topic,
                payload,
                retain,
            } => {
                let payload = match payload {
                    Value::String(text) => text.clone(),
                    other => other.to_string(),
                };
                let outcome = match &self.broker {
                    None => "expectation failed: the scenario has no broker".to_owned(),
                    Some(broker) => match broker.device().publish(topic, payload, *retain).await {
                        Ok(()) => "ok".to_owned(),
                        Err(why) => format!("expectation failed: {why}"),
                    },
                };
                vec![self.record(
                    format!("{index}: publish {topic}"),
                    outcome,
                    // What a device publishes reaches the hub when it does: the steps after
                    // it wait for its effect and record the states.
                    BTreeMap::new(),
                )]
            }
            Step::ExpectMqtt { topic, payload } => {
                let outcome = match &self.broker {
                    None => "expectation failed: the scenario has no broker".to_owned(),
                    Some(broker) => match broker.device().expect(topic, payload.as_deref()).await {
                        Ok(payload) => format!("ok: {payload}"),
                        Err(why) => format!("expectation failed: {why}"),
                    },
                };
                vec![self.record(
                    format!("{index}: expect a message on {topic}"),
                    outcome,
                    self.settle().await,
                )]
            }
            Step::StopBroker {} | Step::StartBroker {} => {
                let stopping = matches!(step, Step::StopBroker {});
                let outcome = match &self.broker {
                    None => "expectation failed: the scenario has no broker".to_owned(),
                    Some(broker) => {
                        let done = if stopping {
                            broker.stop().await
                        } else {
                            broker.start_again().await
                        };
                        done.map_or_else(
                            |why| format!("expectation failed: {why}"),
                            |()| "ok".to_owned(),
                        )
                    }
                };
                let label = if stopping { "stop" } else { "start" };
                vec![self.record(
                    format!("{index}: {label} the broker"),
                    outcome,
                    BTreeMap::new(),
                )]
            }
            Step::KillGroup {} => {
                let group = self.entry().and_then(|entry| entry.sandbox);
                let pid = group
                    .as_deref()
                    .and_then(|group| self.status_of(group))
                    .and_then(|status| status.pid);
                let outcome = match pid.and_then(|pid| i32::try_from(pid).ok()) {
                    None => "expectation failed: the entry's group runs no process".to_owned(),
                    Some(pid) => match nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    ) {
                        Ok(()) => "ok".to_owned(),
                        Err(error) => format!("expectation failed: {error}"),
                    },
                };
                vec![self.record(
                    format!("{index}: kill the group"),
                    outcome,
                    self.settle().await,
                )]
            }
            Step::WrongPin {} => {
                let outcome = wrong_pin(self.sandboxing, integration).await;
                vec![self.record(
                    format!("{index}: wrong pin refused"),
                    outcome,
                    self.settle().await,
                )]
            }
        }
    }
}

/// Every file under `dir` whose name contains `text`.
fn files_named(dir: &Path, text: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(folder) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if entry.file_name().to_string_lossy().contains(text) {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// `sha256` with its first hex digit changed: a pin that cannot match.
fn wrong(sha256: &str) -> String {
    let mut chars = sha256.chars();
    let first = match chars.next() {
        Some('0') => '1',
        _ => '0',
    };
    std::iter::once(first).chain(chars).collect()
}

/// A hub pinning `integration`'s artifact with a wrong sha256: its config flow and its entry's
/// setup must be refused with the host's pin error, and no process of it may start. The
/// step's outcome.
async fn wrong_pin(sandboxing: &Sandboxing, integration: &str) -> String {
    let Some(custom) = sandboxing
        .custom
        .iter()
        .find(|custom| custom.manifest.domain == integration)
    else {
        return format!("expectation failed: {integration} is not a pinned custom integration");
    };
    let mut pinned = custom.clone();
    pinned.sha256 = wrong(&custom.sha256);
    let group = pinned.group();
    let wrongly = Sandboxing {
        runtime: sandboxing.runtime.clone(),
        custom: vec![pinned],
        mqtt_broker: sandboxing.mqtt_broker.clone(),
    };
    let dir = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(error) => return format!("expectation failed: no folder for the hub: {error}"),
    };
    let (core, plugin) = match start_hub(
        dir.path(),
        dir.path(),
        Mode::Sandboxed,
        &SandboxSettings::default(),
        &wrongly,
    )
    .await
    {
        Ok(hub) => hub,
        Err(error) => return format!("expectation failed: {error}"),
    };
    let mut failures = Vec::new();
    let flow = tokio::time::timeout(
        EXPECT_TIMEOUT,
        core.config_entries()
            .flow()
            .init(integration, FlowContext::new("user"), None),
    )
    .await;
    match flow {
        Ok(Err(error)) if error.to_string().contains(WRONG_PIN_ERROR) => {}
        Ok(Err(error)) => failures.push(format!("the config flow failed otherwise: {error}")),
        Ok(Ok(result)) => failures.push(format!("the config flow ran: {:?}", result.step)),
        Err(_) => failures.push("the config flow hung".to_owned()),
    }
    let mut entry = ConfigEntry::new(integration, "wrong pin", Map::new(), "user");
    entry.sandbox = Some(group.clone());
    match tokio::time::timeout(EXPECT_TIMEOUT, core.config_entries().add(entry)).await {
        Ok(Ok(added))
            if added.state == ConfigEntryState::SetupError
                && added
                    .reason
                    .as_deref()
                    .is_some_and(|reason| reason.contains(WRONG_PIN_ERROR)) => {}
        Ok(Ok(added)) => failures.push(format!(
            "the entry's setup was not refused for its pin: {} ({:?})",
            added.state.as_str(),
            added.reason
        )),
        Ok(Err(error)) => failures.push(format!("the entry could not be added: {error}")),
        Err(_) => failures.push("the entry's setup hung".to_owned()),
    }
    let status = plugin
        .as_ref()
        .and_then(|plugin| plugin.groups().get(&group))
        .map(|handle| handle.manager.status());
    if let Some(status) = status.filter(|status| {
        status.pid.is_some() || status.state == GroupState::Running || status.restarts > 0
    }) {
        failures.push(format!("a process of it ran: {status:?}"));
    }
    stop_hub(&core, plugin.as_ref()).await;
    if failures.is_empty() {
        format!("ok: refused before its config flow and at setup ({WRONG_PIN_ERROR})")
    } else {
        format!("expectation failed: {}", failures.join("; "))
    }
}

mod mqtt;
mod outcome;

pub use mqtt::{BrokerLauncher, BrokerSettings};
pub use outcome::{Outcome, play};

use mqtt::RunBroker;

#[cfg(test)]
mod tests;
