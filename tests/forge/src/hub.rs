//! Main's side of a gate check: a hub (homecore + the host plugin) whose `built-in` group is a
//! real forging child process, the child's report, and the comparisons a check makes, each
//! answering a [`CheckError`] instead of panicking.

use std::ffi::OsString;
use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use homecore::config_entries::ConfigEntryDisabler;
use homecore::event::ListenerHandle;
use homecore::{ConfigEntry, ConfigEntryState, Core, CoreConfig, Event};
use parking_lot::Mutex;
use sandbox_host::bridge::Bridge;
use sandbox_host::confinement::PathAccess;
use sandbox_host::groups::GroupsConfig;
use sandbox_host::plugin::{PluginConfig, SandboxPlugin};
use sandbox_host::refusals::Gate;
use sandbox_host::{GroupConfig, GroupState, GroupStatus, RestartPolicy};
use sandbox_proto::error::ErrorKind;
use sandbox_proto::wire;
use serde_json::{Map, Value, json};

use crate::CheckError;
use crate::forger::ForgeScenario;

/// A hang guard only: far above anything a check needs on a loaded machine.
pub const HANG_GUARD: Duration = Duration::from_secs(60);

/// The group the plugin routes built-in integrations to.
pub(crate) const GROUP: &str = "built-in";
/// The entry main routed to the group (domain `demo`, so the group owns `demo`).
pub(crate) const OWN_ENTRY: &str = "sandboxed-demo-entry";
/// An entry main routed to another group (disabled, so that group never starts).
pub(crate) const FOREIGN_ENTRY: &str = "other-group-entry";
/// The custom integration whose flows the `flow_results` check forges (its group is
/// `custom-forged_flow`).
pub(crate) const FLOW_DOMAIN: &str = "forged_flow";
/// An entry that runs on main (disabled: no integration code is loaded in these checks).
pub(crate) const MAIN_ENTRY: &str = "main-only-entry";
/// An entry main routed to the group but did not load (disabled): it takes no entities.
pub(crate) const IDLE_ENTRY: &str = "idle-group-entry";

/// Events a [`Recorder`] keeps; far above what any check fires (the context flood fires
/// 3 × 2048 state changes). Past it the recorder only notes that it overflowed, and reading it
/// is an error, so a check never judges a truncated record.
pub const MAX_RECORDED_EVENTS: usize = 65_536;

/// Time between two looks at a condition being waited for.
const POLL_INTERVAL: Duration = Duration::from_millis(5);

/// Returns a failed check with a formatted message when `condition` is false.
macro_rules! ensure {
    ($condition:expr, $($message:tt)+) => {
        if !$condition {
            return Err($crate::CheckError::Failed(format!($($message)+)));
        }
    };
}
pub(crate) use ensure;

/// `actual == expected`, or a failed check naming `what` and both values.
pub(crate) fn ensure_eq<T: PartialEq + Debug>(
    actual: T,
    expected: T,
    what: &str,
) -> Result<(), CheckError> {
    if actual == expected {
        Ok(())
    } else {
        Err(CheckError::Failed(format!(
            "{what}: expected {expected:?}, found {actual:?}"
        )))
    }
}

/// A hub whose `built-in` group runs the forging child.
pub(crate) struct Hub {
    pub(crate) core: Core,
    pub(crate) plugin: Arc<SandboxPlugin>,
    pub(crate) config_dir: PathBuf,
    report: PathBuf,
    pid: Option<u32>,
    listeners: Vec<ListenerHandle>,
    _dir: tempfile::TempDir,
}

/// The settings of the forger's groups; they may write their reports in `reports` (and, like
/// any sandbox, nowhere else).
fn group_defaults(scenario: ForgeScenario, reports: &Path) -> GroupConfig {
    let mut config = GroupConfig::new("template");
    config.confinement_paths = vec![(reports.to_owned(), PathAccess::ReadWrite)];
    if scenario == ForgeScenario::EntityCap {
        config.max_entities = crate::forger::FORGE_ENTITY_CAP;
    }
    config.watchdog = None;
    config.ready_timeout = Duration::from_secs(30);
    config.stop_grace = Duration::from_secs(5);
    config.restart = RestartPolicy {
        max_starts: 3,
        window: Duration::from_secs(60),
        backoff_initial: Duration::from_millis(10),
        backoff_max: Duration::from_millis(50),
        forgive_after: Duration::from_secs(300),
    };
    config
}

fn setup_error(what: &str, error: impl std::fmt::Display) -> CheckError {
    CheckError::Setup(format!("{what}: {error}"))
}

fn entry(entry_id: &str, domain: &str, sandbox: Option<&str>) -> ConfigEntry {
    let mut entry = ConfigEntry::new(domain, format!("{entry_id} title"), Map::new(), "user");
    entry.entry_id = entry_id.to_owned();
    entry.sandbox = sandbox.map(str::to_owned);
    entry.data.insert("host".into(), json!("192.0.2.1"));
    entry
}

impl Hub {
    /// A hub whose `built-in` group runs `forger` (a command prefix) forging `scenario` with
    /// the `extra` flags; the group starts when [`Hub::add_own_entry`] routes the first entry
    /// to it.
    pub(crate) async fn start(
        forger: &[OsString],
        scenario: ForgeScenario,
        extra: &[(&str, &str)],
    ) -> Result<Hub, CheckError> {
        let dir = tempfile::tempdir().map_err(|error| setup_error("temp dir", error))?;
        let config_dir = dir.path().join("config");
        std::fs::create_dir_all(&config_dir).map_err(|error| setup_error("config dir", error))?;
        let reports = dir.path().join("reports");
        std::fs::create_dir_all(&reports).map_err(|error| setup_error("reports dir", error))?;
        let report = reports.join("forge-report.jsonl");
        let mut command: Vec<OsString> = forger.to_vec();
        command.extend([
            "--forge".into(),
            scenario.name().into(),
            "--forge-report".into(),
            report.clone().into(),
            "--own-entry".into(),
            OWN_ENTRY.into(),
            "--foreign-entry".into(),
            FOREIGN_ENTRY.into(),
        ]);
        for (flag, value) in extra {
            command.extend([OsString::from(flag), OsString::from(value)]);
        }
        // The flow checks run a custom integration whose group is the forger too, reporting
        // elsewhere (its flows are forged in answer to main's calls).
        let (custom, custom_commands) = if scenario == ForgeScenario::FlowResults {
            let mut flow_command = command.clone();
            if let Some(report_path) = flow_command.iter().position(|arg| arg == "--forge-report") {
                flow_command[report_path + 1] = reports.join("flow-report.jsonl").into();
            }
            let artifact = PathBuf::from(forger.first().cloned().unwrap_or_default());
            let sha256 = sandbox_host::router::sha256_of_file(&artifact)
                .map_err(|error| setup_error("the forger's hash", error))?;
            let manifest: homecore::Manifest = serde_json::from_value(json!({
                "domain": FLOW_DOMAIN,
                "name": "Forged flows",
                "version": "1.0.0",
                "config_flow": true,
                "platforms": ["light"],
            }))
            .map_err(|error| setup_error("the flow manifest", error))?;
            (
                vec![sandbox_host::router::CustomIntegration {
                    manifest,
                    artifact,
                    sha256,
                }],
                std::collections::HashMap::from([(format!("custom-{FLOW_DOMAIN}"), flow_command)]),
            )
        } else {
            Default::default()
        };
        let core = Core::builder(CoreConfig::new(&config_dir))
            .build()
            .map_err(|error| setup_error("core", error))?;
        let plugin = SandboxPlugin::install(
            &core,
            PluginConfig {
                groups: GroupsConfig {
                    config_dir: config_dir.clone(),
                    runtime_command: command,
                    custom_commands,
                    group_defaults: group_defaults(scenario, &reports),
                    group_overrides: Default::default(),
                },
                custom,
            },
        );
        let hub = Hub {
            core,
            plugin,
            config_dir,
            report,
            pid: None,
            listeners: Vec::new(),
            _dir: dir,
        };
        if let Err(error) = hub.core.start().await {
            hub.stop().await;
            return Err(setup_error("core start", error));
        }
        Ok(hub)
    }

    /// Runs one check: a hub forging `scenario` with the `extra` flags, `body` on it, and the
    /// hub stopped on every path out.
    pub(crate) async fn check(
        forger: &[OsString],
        scenario: ForgeScenario,
        extra: &[(&str, &str)],
        body: impl AsyncFnOnce(&mut Hub) -> Result<(), CheckError>,
    ) -> Result<(), CheckError> {
        let mut hub = Hub::start(forger, scenario, extra).await?;
        let outcome = body(&mut hub).await;
        hub.finish(outcome).await
    }

    /// Registers `demo.main_only`, a service main itself provides in a domain the group will
    /// own (answering `{"answered_by": "main"}`): what `--existing-service demo.main_only` aims at.
    pub(crate) fn register_main_service(&self) -> Result<(), CheckError> {
        self.core
            .services()
            .register(
                "demo",
                "main_only",
                None,
                homecore::SupportsResponse::Optional,
                |_| async { Ok(Some(json!({"answered_by": "main"}))) },
            )
            .map(|_| ())
            .map_err(|error| setup_error("main's own service", error))
    }

    /// An entry of another group, disabled so nothing starts that group.
    pub(crate) async fn add_foreign_entry(&self) -> Result<ConfigEntry, CheckError> {
        let mut foreign = entry(FOREIGN_ENTRY, "demo", Some("custom-other"));
        foreign.disabled_by = Some(ConfigEntryDisabler::User);
        self.core
            .config_entries()
            .add(foreign)
            .await
            .map_err(|error| setup_error("the foreign entry", error))
    }

    /// An entry of the group that main does not load (disabled).
    pub(crate) async fn add_idle_entry(&self) -> Result<ConfigEntry, CheckError> {
        let mut idle = entry(IDLE_ENTRY, "demo", Some(GROUP));
        idle.disabled_by = Some(ConfigEntryDisabler::User);
        self.core
            .config_entries()
            .add(idle)
            .await
            .map_err(|error| setup_error("the idle entry", error))
    }

    /// An entry that runs on main, disabled (no integration code is loaded here).
    pub(crate) async fn add_main_entry(&self) -> Result<ConfigEntry, CheckError> {
        let mut main = entry(MAIN_ENTRY, "hue", None);
        main.disabled_by = Some(ConfigEntryDisabler::User);
        self.core
            .config_entries()
            .add(main)
            .await
            .map_err(|error| setup_error("main's entry", error))
    }

    /// Routes the group's entry: starts the forging child and loads the entry in it.
    pub(crate) async fn add_own_entry(&mut self) -> Result<(), CheckError> {
        let own = entry(OWN_ENTRY, "demo", Some(GROUP));
        let added = tokio::time::timeout(HANG_GUARD, self.core.config_entries().add(own))
            .await
            .map_err(|_| CheckError::Hung("the group's entry setup".to_owned()))?
            .map_err(|error| setup_error("the group's entry", error))?;
        ensure!(
            added.state == ConfigEntryState::Loaded,
            "the group's entry is {:?}, not loaded: {}",
            added.state,
            added.reason.as_deref().unwrap_or("no reason given")
        );
        let status = self.group_status()?;
        ensure_eq(status.state, GroupState::Running, "the group's state")?;
        ensure!(status.pid.is_some(), "the group has no process: {status:?}");
        self.pid = status.pid;
        Ok(())
    }

    pub(crate) fn group_status(&self) -> Result<GroupStatus, CheckError> {
        self.plugin
            .groups()
            .get(GROUP)
            .map(|group| group.manager.status())
            .ok_or_else(|| CheckError::Failed(format!("main has no group {GROUP}")))
    }

    pub(crate) fn bridge(&self) -> Result<Arc<Bridge>, CheckError> {
        self.plugin
            .groups()
            .bridge(GROUP)
            .ok_or_else(|| CheckError::Failed(format!("main has no bridge for {GROUP}")))
    }

    /// Records every event main's bus delivers to a match-all listener, until the hub stops.
    pub(crate) fn record_events(&mut self) -> Result<Arc<Recorder>, CheckError> {
        let recorder = Arc::new(Recorder::default());
        let sink = Arc::clone(&recorder);
        let handle = self
            .core
            .bus()
            .listen(homecore::event::MATCH_ALL, move |event| {
                sink.push(event);
                async {}
            })
            .map_err(|error| setup_error("event listener", error))?;
        self.listeners.push(handle);
        Ok(recorder)
    }

    /// Keeps `handle` registered until the hub stops.
    pub(crate) fn keep_listener(&mut self, handle: ListenerHandle) {
        self.listeners.push(handle);
    }

    /// The child's report, once it wrote it (whole).
    pub(crate) async fn report(&self) -> Result<Report, CheckError> {
        wait_until("the forge report", || self.report.exists()).await?;
        let text = std::fs::read_to_string(&self.report)
            .map_err(|error| CheckError::Report(format!("cannot read it: {error}")))?;
        let lines = text
            .lines()
            .map(|line| {
                serde_json::from_str::<Value>(line)
                    .map_err(|error| CheckError::Report(format!("{line:?}: {error}")))
            })
            .collect::<Result<Vec<Value>, CheckError>>()?;
        if let Some(error) = lines.iter().find_map(|line| line.get("error")) {
            return Err(CheckError::Report(format!(
                "the child could not forge: {error}"
            )));
        }
        if lines.last() != Some(&json!({"done": true})) {
            return Err(CheckError::Report(format!("unfinished: {lines:?}")));
        }
        Ok(Report(lines))
    }

    /// Main survived the forgery: the group runs on the same process, its entry is loaded and
    /// the channel still answers.
    pub(crate) async fn still_up(&self) -> Result<(), CheckError> {
        let status = self.group_status()?;
        ensure!(
            status.state == GroupState::Running,
            "the group is not running: {status:?}"
        );
        ensure!(
            status.pid == self.pid,
            "the group was restarted: {status:?}"
        );
        ensure_eq(status.restarts, 0, "restarts")?;
        let own = self
            .core
            .config_entries()
            .entry(OWN_ENTRY)
            .ok_or_else(|| CheckError::Failed("the group's entry is gone".to_owned()))?;
        ensure_eq(own.state, ConfigEntryState::Loaded, "the group's entry")?;
        let pong = tokio::time::timeout(
            HANG_GUARD,
            self.bridge()?.channel().call(&wire::Ping { nonce: 4242 }),
        )
        .await
        .map_err(|_| CheckError::Hung("a ping of the group".to_owned()))?
        .map_err(|error| {
            CheckError::Failed(format!("the group does not answer a ping: {error}"))
        })?;
        ensure_eq(pong.nonce, 4242, "the ping's nonce")
    }

    /// Stops the groups and the core; nothing of the hub is left (process, socket, folder).
    pub(crate) async fn stop(self) {
        for handle in self.listeners {
            handle.remove();
        }
        self.plugin.stop().await;
        self.plugin.uninstall();
        if let Err(error) = self.core.stop().await {
            // The check's own verdict matters more; the folder goes with the hub anyway.
            eprintln!("gate check: the hub's core did not stop cleanly: {error}");
        }
    }

    /// Stops the hub whatever `outcome` is, then returns it.
    pub(crate) async fn finish(self, outcome: Result<(), CheckError>) -> Result<(), CheckError> {
        self.stop().await;
        outcome
    }
}

/// The child's report: one JSON line per forged attempt.
pub(crate) struct Report(Vec<Value>);

impl Report {
    pub(crate) fn step(&self, step: &str) -> Result<&Value, CheckError> {
        self.0
            .iter()
            .find(|line| line["step"] == step)
            .ok_or_else(|| CheckError::Report(format!("no step {step} in {:?}", self.0)))
    }

    /// The step was answered with an error of `kind` whose message says `says`.
    pub(crate) fn refused(
        &self,
        step: &str,
        kind: ErrorKind,
        says: &str,
    ) -> Result<(), CheckError> {
        let line = self.step(step)?;
        ensure!(line["ok"] == false, "{step} went through: {line}");
        ensure!(
            line["kind"] == format!("{kind:?}"),
            "{step} was refused as {} instead of {kind:?}: {line}",
            line["kind"]
        );
        let message = line["message"].as_str().unwrap_or_default();
        ensure!(
            message.contains(says),
            "{step}: the refusal {message:?} does not say {says:?}"
        );
        Ok(())
    }

    /// The control step went through; its line.
    pub(crate) fn ok(&self, step: &str) -> Result<&Value, CheckError> {
        let line = self.step(step)?;
        ensure!(line["ok"] == true, "the control {step} was refused: {line}");
        Ok(line)
    }

    /// The string `field` of the step's line.
    pub(crate) fn text(&self, step: &str, field: &str) -> Result<String, CheckError> {
        let line = self.step(step)?;
        line[field]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| CheckError::Report(format!("{step} has no {field}: {line}")))
    }
}

/// Waits until `condition` holds, bounded by [`HANG_GUARD`].
pub(crate) async fn wait_until(what: &str, condition: impl Fn() -> bool) -> Result<(), CheckError> {
    tokio::time::timeout(HANG_GUARD, async {
        while !condition() {
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    })
    .await
    .map_err(|_| CheckError::Hung(what.to_owned()))
}

/// The bridge counted exactly `expected` refusals per gate
/// (`[foreign_entry, foreign_device, unproxyable, service, event, store]`).
pub(crate) fn only_counted(
    bridge: &Arc<Bridge>,
    expected: &[(Gate, u64)],
) -> Result<(), CheckError> {
    let actual: Vec<(&str, u64)> = bridge
        .refused
        .snapshot()
        .into_iter()
        .map(|(gate, count)| (gate.name(), count))
        .collect();
    let expected: Vec<(&str, u64)> = Gate::ALL
        .iter()
        .map(|gate| {
            let count = expected
                .iter()
                .find(|(counted, _)| counted == gate)
                .map_or(0, |(_, count)| *count);
            (gate.name(), count)
        })
        .collect();
    ensure_eq(actual, expected, "refusals counted per gate")
}

/// Every entity id with a state on `core`, sorted.
pub(crate) fn entity_ids(core: &Core) -> Vec<String> {
    let mut ids: Vec<String> = core
        .states()
        .all(None)
        .iter()
        .map(|state| state.entity_id.clone())
        .collect();
    ids.sort();
    ids
}

/// Events seen on main's bus, up to [`MAX_RECORDED_EVENTS`].
#[derive(Default)]
pub(crate) struct Recorder {
    events: Mutex<Vec<Arc<Event>>>,
    overflowed: AtomicBool,
}

impl Recorder {
    fn push(&self, event: Arc<Event>) {
        let mut events = self.events.lock();
        if events.len() < MAX_RECORDED_EVENTS {
            events.push(event);
        } else {
            self.overflowed.store(true, Ordering::Relaxed);
        }
    }

    /// Every recorded event.
    pub(crate) fn all(&self) -> Result<Vec<Arc<Event>>, CheckError> {
        if self.overflowed.load(Ordering::Relaxed) {
            return Err(CheckError::Failed(format!(
                "more than {MAX_RECORDED_EVENTS} events reached main's bus"
            )));
        }
        Ok(self.events.lock().clone())
    }

    /// Recorded events of `event_type`.
    pub(crate) fn of(&self, event_type: &str) -> Result<Vec<Arc<Event>>, CheckError> {
        Ok(self
            .all()?
            .into_iter()
            .filter(|event| event.event_type == event_type)
            .collect())
    }

    /// Whether an event of `event_type` was recorded (for waiting).
    pub(crate) fn seen(&self, event_type: &str) -> bool {
        self.events
            .lock()
            .iter()
            .any(|event| event.event_type == event_type)
    }
}

/// Names of the entries of `dir`, sorted; none when it does not exist.
pub(crate) fn listing(dir: &Path) -> Result<Vec<String>, CheckError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => {
            return Err(CheckError::Failed(format!(
                "cannot list {}: {error}",
                dir.display()
            )));
        }
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|error| {
            CheckError::Failed(format!("cannot list {}: {error}", dir.display()))
        })?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}

/// Every file under `dir`, relative to it.
pub(crate) fn files_under(dir: &Path) -> Result<Vec<PathBuf>, CheckError> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_owned()];
    let unreadable =
        |path: &Path, error| CheckError::Failed(format!("cannot list {}: {error}", path.display()));
    while let Some(folder) = pending.pop() {
        for entry in std::fs::read_dir(&folder).map_err(|error| unreadable(&folder, error))? {
            let path = entry.map_err(|error| unreadable(&folder, error))?.path();
            if path.is_dir() {
                pending.push(path);
            } else if let Ok(relative) = path.strip_prefix(dir) {
                files.push(relative.to_owned());
            }
        }
    }
    files.sort();
    Ok(files)
}
