//! The host survives integrations that misbehave on purpose. Each test runs a hub (homecore +
//! the host plugin) whose `built-in` group is the real `compat-sandbox` binary (the built-in
//! integrations plus `sandbox_compat::misbehaving::all()`), configures one misbehaving
//! integration through its one-step config flow, and proves main is unharmed.
//!
//! Every wait is bounded by a generous hang guard only; no assertion is about timing.

#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use homecore::config_entries::ConfigEntryDisabler;
use homecore::{
    ConfigEntry, ConfigEntryState, Core, CoreConfig, DeviceInfo, Event, FlowContext, FlowStep,
    ServiceRequest, ServiceTarget, SupportsResponse,
};
use parking_lot::Mutex;
use sandbox_compat::misbehaving::{
    abort_after, escape, flood, forbidden, hang, panic_setup, stdout as noisy,
};
use sandbox_host::confinement::ConfinementProfile;
use sandbox_host::groups::{GroupHandle, GroupsConfig};
use sandbox_host::plugin::{PluginConfig, SandboxPlugin};
use sandbox_host::{
    Credentials, GroupConfig, GroupState, GroupStatus, RestartPolicy, WatchdogConfig,
};
use sandbox_proto::wire;
use serde_json::{Map, Value, json};

/// A hang guard only: far above anything these tests need on a loaded machine.
const HANG_GUARD: Duration = Duration::from_secs(180);

/// The group built-in integrations (the misbehaving ones included) run in.
const GROUP: &str = "built-in";

/// A main-side probe service: it answering shows main's own work goes on.
const PROBE_DOMAIN: &str = "probe";

/// How much main's resident memory may grow while a sandbox floods it (generous: main keeps
/// one state per entity, not one per change).
const FLOOD_RSS_GROWTH_BOUND_KB: u64 = 256 * 1024;

struct Hub {
    core: Core,
    plugin: Arc<SandboxPlugin>,
    dir: tempfile::TempDir,
}

fn group_defaults(watchdog: Option<WatchdogConfig>) -> GroupConfig {
    let mut config = GroupConfig::new("template");
    config.watchdog = watchdog;
    config.ready_timeout = Duration::from_secs(60);
    config.stop_grace = Duration::from_secs(3);
    config.restart = RestartPolicy {
        max_starts: 3,
        window: Duration::from_secs(600),
        backoff_initial: Duration::from_millis(10),
        backoff_max: Duration::from_millis(50),
        forgive_after: Duration::from_secs(3600),
    };
    config
}

async fn hub(watchdog: Option<WatchdogConfig>) -> Hub {
    hub_with(group_defaults(watchdog)).await
}

async fn hub_with(group_defaults: GroupConfig) -> Hub {
    let dir = tempfile::tempdir().unwrap();
    let config_dir = dir.path().join("config");
    std::fs::create_dir_all(&config_dir).unwrap();
    let mut available = integrations::builtin();
    available.extend(sandbox_compat::misbehaving::all());
    let core = Core::builder(CoreConfig::new(&config_dir))
        .integrations(available)
        .build()
        .unwrap();
    let runtime: Vec<OsString> = vec![env!("CARGO_BIN_EXE_compat-sandbox").into()];
    let plugin = SandboxPlugin::install(
        &core,
        PluginConfig {
            groups: GroupsConfig {
                config_dir,
                runtime_command: runtime,
                custom_commands: Default::default(),
                group_defaults,
                group_overrides: Default::default(),
            },
            custom: vec![],
        },
    );
    core.start().await.unwrap();
    core.services()
        .register(
            PROBE_DOMAIN,
            "echo",
            None,
            SupportsResponse::Only,
            |call| async move { Ok(Some(Value::Object(call.data))) },
        )
        .unwrap();
    Hub { core, plugin, dir }
}

impl Hub {
    fn config_dir(&self) -> PathBuf {
        self.dir.path().join("config")
    }

    fn group(&self) -> Arc<GroupHandle> {
        self.plugin.groups().get(GROUP).unwrap()
    }

    fn status(&self) -> GroupStatus {
        self.group().manager.status()
    }

    fn entry(&self, entry_id: &str) -> ConfigEntry {
        self.core.config_entries().entry(entry_id).unwrap()
    }

    /// Runs `domain`'s one-step config flow with `data`; returns the created entry's id.
    async fn configure(&self, domain: &str, data: Value) -> String {
        let flows = self.core.config_entries().flow();
        let data = data.as_object().cloned().unwrap_or_default();
        let created = tokio::time::timeout(
            HANG_GUARD,
            flows.init(domain, FlowContext::new("user"), Some(data)),
        )
        .await
        .expect("the config flow hung")
        .unwrap();
        let FlowStep::CreateEntry { entry_id, .. } = created.step else {
            panic!("create_entry: {created:?}")
        };
        let entry_id = entry_id.unwrap();
        assert_eq!(self.entry(&entry_id).sandbox.as_deref(), Some(GROUP));
        entry_id
    }

    /// The proxies of `entry_id`'s entities on main, once there are `count`.
    async fn proxies_of(&self, entry_id: &str, count: usize) -> Vec<String> {
        let ids = || self.live_entities_of(entry_id);
        wait_until(&format!("{count} proxies of {entry_id}"), || {
            ids().len() >= count
        })
        .await;
        ids()
    }

    /// Live entities (proxies) of `entry_id` on main.
    fn live_entities_of(&self, entry_id: &str) -> Vec<String> {
        let live = self.core.entities().entity_ids(None);
        self.core
            .entity_registry()
            .entries_for_config_entry(entry_id)
            .into_iter()
            .map(|entry| entry.entity_id)
            .filter(|id| live.contains(id))
            .collect()
    }

    /// The running group answers a ping on its current channel.
    async fn ping(&self) {
        let channel = self.group().manager.channel().expect("the group runs");
        let pong = tokio::time::timeout(HANG_GUARD, channel.call(&wire::Ping { nonce: 7 }))
            .await
            .expect("the ping hung")
            .unwrap();
        assert_eq!(pong.nonce, 7);
    }

    /// Main's own service answers.
    async fn probe(&self, nonce: u64) {
        let request = ServiceRequest::new(PROBE_DOMAIN, "echo")
            .with_data(json!({"nonce": nonce}).as_object().cloned().unwrap())
            .with_response();
        let answer = tokio::time::timeout(HANG_GUARD, self.core.services().call(request))
            .await
            .expect("main's own service hung")
            .unwrap();
        assert_eq!(answer.unwrap().get("nonce"), Some(&json!(nonce)));
    }

    async fn call_entity(&self, domain: &str, service: &str, entity_id: &str) {
        let request =
            ServiceRequest::new(domain, service).with_target(ServiceTarget::entities([entity_id]));
        tokio::time::timeout(HANG_GUARD, self.core.services().call(request))
            .await
            .expect("the service call hung")
            .unwrap();
    }

    fn state_of(&self, entity_id: &str) -> Option<String> {
        self.core
            .states()
            .get(entity_id)
            .map(|state| state.state.clone())
    }

    async fn stop(self) {
        tokio::time::timeout(HANG_GUARD, self.plugin.stop())
            .await
            .expect("stopping the groups hung");
        self.plugin.uninstall();
        self.core.stop().await.unwrap();
        let status = self.status();
        assert!(
            matches!(status.state, GroupState::Stopped | GroupState::Failed),
            "{status:?}"
        );
        assert_eq!(status.pid, None, "no process left: {status:?}");
    }
}

async fn wait_until(what: &str, condition: impl Fn() -> bool) {
    tokio::time::timeout(HANG_GUARD, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

/// Records every event of `event_type` on `core`'s bus.
fn record_events(core: &Core, event_type: &str) -> Arc<Mutex<Vec<Arc<Event>>>> {
    let seen: Arc<Mutex<Vec<Arc<Event>>>> = Arc::default();
    let sink = Arc::clone(&seen);
    let listener = core
        .bus()
        .listen(event_type, move |event: Arc<Event>| {
            sink.lock().push(event);
            async {}
        })
        .unwrap();
    // Kept for the hub's life: the core drops its listeners when it stops.
    std::mem::forget(listener);
    seen
}

/// Main's resident set size, in KiB.
fn vm_rss_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return files;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_setup_shows_setup_error_and_the_sandbox_stays_up() {
    let hub = hub(None).await;
    let entry_id = hub.configure(panic_setup::DOMAIN, json!({})).await;
    let entry = hub.entry(&entry_id);
    assert_eq!(entry.state, ConfigEntryState::SetupError, "{entry:?}");
    let reason = entry.reason.unwrap_or_default();
    assert!(reason.contains("panicked"), "{reason}");

    // The same process goes on: not restarted, answers a ping, and sets up another entry.
    let status = hub.status();
    assert_eq!(status.state, GroupState::Running, "{status:?}");
    assert_eq!(
        status.restarts, 0,
        "the panic killed the sandbox: {status:?}"
    );
    let pid = status.pid;
    hub.ping().await;
    let other = hub.configure(flood::DOMAIN, json!({"count": 3})).await;
    assert_eq!(hub.entry(&other).state, ConfigEntryState::Loaded);
    let sensor = hub.proxies_of(&other, 1).await.remove(0);
    wait_until("the other entry's last state", || {
        hub.state_of(&sensor).as_deref() == Some("3")
    })
    .await;
    assert_eq!(hub.status().pid, pid, "still the same sandbox process");
    assert_eq!(hub.status().restarts, 0);
    hub.probe(1).await;
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_respawns_the_group_sets_the_entry_up_again_and_ends_failed_under_the_budget() {
    let hub = hub(None).await;
    let states = record_events(&hub.core, "state_changed");
    let entry_id = hub
        .configure(abort_after::DOMAIN, json!({"seconds": 1}))
        .await;

    wait_until("the restart budget to run out", || {
        hub.status().state == GroupState::Failed
    })
    .await;
    let group = hub.group();
    wait_until("main's fail-over to finish", || {
        !group.failing_over.load(Ordering::Acquire)
            && hub.entry(&entry_id).state == ConfigEntryState::SetupError
    })
    .await;
    let status = hub.status();
    assert_eq!(
        status.restarts, 2,
        "three starts, two of them respawns: {status:?}"
    );
    let last_exit = status.last_exit.clone().unwrap_or_default();
    assert!(last_exit.contains("SIGABRT"), "{status:?}");
    let reason = hub.entry(&entry_id).reason.unwrap_or_default();
    assert!(reason.contains("restart budget exhausted"), "{reason}");

    // The entry was set up again in a respawned process: its sensor reported more than one
    // process id (one per process that set it up).
    let pids: std::collections::BTreeSet<String> = states
        .lock()
        .iter()
        .filter_map(|event| event.data.get("new_state"))
        .filter(|state| {
            state["entity_id"]
                .as_str()
                .is_some_and(|id| id.starts_with("sensor."))
        })
        .filter_map(|state| state["state"].as_str().map(str::to_owned))
        .filter(|state| state.parse::<u32>().is_ok())
        .collect();
    assert!(pids.len() >= 2, "set up in one process only: {pids:?}");
    assert_eq!(
        hub.live_entities_of(&entry_id),
        Vec::<String>::new(),
        "no live proxy of the failed entry"
    );
    hub.probe(2).await;
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_sandbox_is_restarted_by_the_watchdog() {
    let watchdog = WatchdogConfig {
        interval: Duration::from_millis(250),
        timeout: Duration::from_secs(3),
    };
    let hub = hub(Some(watchdog)).await;
    let first_pid = {
        hub.configure(hang::DOMAIN, json!({"hang_after_ms": 1000}))
            .await;
        hub.status().pid
    };
    wait_until("the watchdog to restart the hung sandbox", || {
        let status = hub.status();
        let hung = status
            .last_exit
            .as_deref()
            .is_some_and(|exit| exit.contains("presumed hung"));
        let replaced = status.state == GroupState::Running && status.pid != first_pid;
        hung && (replaced || status.state == GroupState::Failed)
    })
    .await;
    let status = hub.status();
    assert!(
        status.restarts >= 1 || status.state == GroupState::Failed,
        "{status:?}"
    );
    // Main never waited on the hung process for its own work.
    hub.probe(3).await;
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_flood_leaves_main_responsive_and_bounded_and_ends_on_the_last_state() {
    let hub = hub(None).await;
    let rss_before = vm_rss_kb();
    let entry_id = hub.configure(flood::DOMAIN, json!({})).await;
    assert_eq!(hub.entry(&entry_id).state, ConfigEntryState::Loaded);
    let sensor = hub.proxies_of(&entry_id, 1).await.remove(0);
    let last = flood::DEFAULT_COUNT.to_string();
    let mut nonce = 0;
    tokio::time::timeout(HANG_GUARD, async {
        // While the flood runs, main's own service and the group's channel keep answering.
        while hub.state_of(&sensor).as_deref() != Some(last.as_str()) {
            nonce += 1;
            hub.probe(nonce).await;
            hub.ping().await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "the proxy did not end on {last}: {:?}",
            hub.state_of(&sensor)
        )
    });
    assert!(nonce >= 1);
    let rss_after = vm_rss_kb();
    assert!(
        rss_after.saturating_sub(rss_before) < FLOOD_RSS_GROWTH_BOUND_KB,
        "main grew from {rss_before} kB to {rss_after} kB"
    );
    let status = hub.status();
    assert_eq!(status.restarts, 0, "{status:?}");
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdout_noise_does_not_corrupt_the_channel() {
    let hub = hub(None).await;
    let entry_id = hub
        .configure(noisy::DOMAIN, json!({"interval_ms": 10}))
        .await;
    assert_eq!(hub.entry(&entry_id).state, ConfigEntryState::Loaded);
    let switch = hub.proxies_of(&entry_id, 1).await.remove(0);
    assert!(switch.starts_with("switch."), "{switch}");
    let pid = hub.status().pid;
    for (service, state) in [("turn_on", "on"), ("turn_off", "off"), ("toggle", "on")] {
        hub.call_entity("switch", service, &switch).await;
        wait_until(&format!("{switch} {state}"), || {
            hub.state_of(&switch).as_deref() == Some(state)
        })
        .await;
    }
    hub.ping().await;
    let status = hub.status();
    assert_eq!(status.pid, pid, "{status:?}");
    assert_eq!(status.restarts, 0, "{status:?}");
    let stats = hub.group().manager.channel().unwrap().stats();
    assert_eq!(stats.undecodable_frames, 0, "{stats:?}");
    hub.stop().await;
}

/// An entry that runs on main (disabled: no `hue` code exists here) owning a device.
const MAIN_ENTRY: &str = "main-hue-entry";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_forbidden_reaches_main_and_the_own_entity_works() {
    let hub = hub(None).await;
    let mut main_entry = ConfigEntry::new("hue", "Main's hue", Map::new(), "user");
    main_entry.entry_id = MAIN_ENTRY.to_owned();
    main_entry.disabled_by = Some(ConfigEntryDisabler::User);
    hub.core.config_entries().add(main_entry).await.unwrap();
    let (hijack_domain, hijack_id) = forbidden::HIJACK_IDENTIFIER;
    let main_device = hub
        .core
        .device_registry()
        .get_or_create(DeviceInfo {
            config_entry_id: MAIN_ENTRY.to_owned(),
            identifiers: vec![(hijack_domain.into(), hijack_id.into())],
            name: Some("Main's bridge".into()),
            ..DeviceInfo::default()
        })
        .unwrap();
    let forged: Vec<_> = forbidden::FORBIDDEN_EVENTS
        .iter()
        .map(|event_type| record_events(&hub.core, event_type))
        .collect();
    let done = record_events(&hub.core, forbidden::EVENT_DONE);

    let entry_id = hub.configure(forbidden::DOMAIN, json!({})).await;
    assert_eq!(hub.entry(&entry_id).state, ConfigEntryState::Loaded);
    // The done event comes after every forbidden attempt, through the same ordered pushes.
    wait_until("the integration's done event", || !done.lock().is_empty()).await;
    let refused = Arc::clone(&hub.group().refused);
    wait_until("the hijacking device refused", || {
        refused.count(sandbox_host::refusals::Gate::ForeignDevice) >= 1
    })
    .await;

    // No forbidden service, event, or store file reached main.
    for (domain, service) in forbidden::FORBIDDEN_SERVICES {
        assert!(
            !hub.core.services().has_service(domain, service),
            "{domain}.{service} reached main"
        );
    }
    for (event_type, seen) in forbidden::FORBIDDEN_EVENTS.iter().zip(&forged) {
        let forged: Vec<_> = seen
            .lock()
            .iter()
            .filter(|event| event.data.get("forged").is_some())
            .cloned()
            .collect();
        assert!(forged.is_empty(), "{event_type} reached main: {forged:?}");
    }
    let files = files_under(hub.dir.path());
    assert!(
        files.iter().all(|path| {
            let name = path.to_string_lossy();
            !name.contains("misbehave_escape") && !name.contains(forbidden::HUGE_KEY)
        }),
        "a forbidden store write reached the disk: {files:?}"
    );
    assert!(hub.config_dir().exists());

    // Main's device is not hijacked, and the hijacking entity exists nowhere on main.
    let devices = hub.core.device_registry();
    assert_eq!(devices.get(&main_device.id).unwrap(), main_device);
    for device in devices.devices_for_config_entry(&entry_id) {
        assert!(
            !device
                .identifiers
                .contains(&(hijack_domain.to_owned(), hijack_id.to_owned())),
            "{device:?}"
        );
    }
    let proxies = hub.proxies_of(&entry_id, 1).await;
    assert_eq!(proxies.len(), 1, "only the own switch: {proxies:?}");
    let switch = proxies[0].clone();
    assert!(switch.starts_with("switch."), "{switch}");

    // The integration's own entity and service work.
    hub.call_entity("switch", "turn_on", &switch).await;
    wait_until("the own switch on", || {
        hub.state_of(&switch).as_deref() == Some("on")
    })
    .await;
    let report = hub
        .core
        .services()
        .call(ServiceRequest::new(forbidden::DOMAIN, forbidden::SERVICE_REPORT).with_response())
        .await
        .unwrap()
        .unwrap();
    let store_huge = report[&format!("store {}", forbidden::HUGE_KEY)]
        .as_str()
        .unwrap();
    assert!(store_huge.starts_with("error"), "{report:?}");
    for key in forbidden::TRAVERSAL_KEYS {
        let outcome = report[&format!("store {key}")].as_str().unwrap();
        assert!(outcome.starts_with("error"), "{key}: {report:?}");
    }
    let status = hub.status();
    assert_eq!(status.restarts, 0, "{status:?}");
    hub.ping().await;
    hub.stop().await;
}

/// What the escape attempts got in a group confined by `confinement` (running as
/// `credentials`, if any), by attempt, and whether the file it tried to plant in main's
/// configuration directory is there.
async fn escape_outcomes(
    confinement: ConfinementProfile,
    credentials: Option<Credentials>,
) -> (BTreeMap<String, String>, bool) {
    let mut defaults = group_defaults(None);
    defaults.confinement = confinement;
    defaults.credentials = credentials;
    let hub = hub_with(defaults).await;
    let other_group_file = hub
        .config_dir()
        .join(".storage")
        .join("sandbox")
        .join("other")
        .join("credentials");
    std::fs::create_dir_all(other_group_file.parent().unwrap()).unwrap();
    std::fs::write(&other_group_file, "another group's secret").unwrap();
    let entry_id = hub
        .configure(
            escape::DOMAIN,
            json!({"config_dir": hub.config_dir(), "other_group_file": other_group_file}),
        )
        .await;
    assert_eq!(hub.entry(&entry_id).state, ConfigEntryState::Loaded);
    let pid = hub.status().pid;
    let sensors: Vec<(String, String)> = escape::ATTEMPTS
        .iter()
        .map(|(key, _)| ((*key).to_owned(), escape::sensor_of(key)))
        .collect();
    wait_until("every escape attempt's outcome", || {
        sensors.iter().all(|(_, sensor)| {
            hub.state_of(sensor)
                .is_some_and(|state| state != escape::PENDING)
        })
    })
    .await;
    let outcomes = sensors
        .iter()
        .map(|(key, sensor)| (key.clone(), hub.state_of(sensor).unwrap()))
        .collect();
    let planted = hub.config_dir().join(escape::PLANTED_FILE).exists();
    // The integration kept running on the same process.
    hub.ping().await;
    let status = hub.status();
    assert_eq!((status.pid, status.restarts), (pid, 0), "{status:?}");
    // The status says what was applied.
    assert_eq!(status.confinement, Some(confinement), "{status:?}");
    assert_eq!(
        status.seccomp,
        Some(confinement == ConfinementProfile::Default),
        "{status:?}"
    );
    hub.probe(4).await;
    hub.stop().await;
    (outcomes, planted)
}

/// Every escape attempt and what it gets under the default profile, whoever the sandbox runs
/// as.
const REFUSED_BY_DEFAULT: [(&str, &str); 12] = [
    ("read_main_config_entries", "EACCES"),
    ("read_other_group_store", "EACCES"),
    ("write_main_config_dir", "EACCES"),
    ("read_main_environ", "EACCES"),
    ("ptrace_attach_main", "EPERM"),
    ("ptrace_attach_own_child", "EPERM"),
    ("socket_packet", "EPERM"),
    ("mount_tmpfs", "EPERM"),
    ("init_module", "EPERM"),
    ("finit_module", "EPERM"),
    ("unshare_user", "EPERM"),
    ("mount_and_packet_in_own_namespaces", "EPERM"),
];

fn expected_default() -> BTreeMap<String, String> {
    REFUSED_BY_DEFAULT
        .iter()
        .map(|(key, errno)| ((*key).to_owned(), (*errno).to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_escape_attempt_is_refused_by_the_default_profile_and_most_succeed_without_it() {
    let (confined, planted) = escape_outcomes(ConfinementProfile::Default, None).await;
    assert_eq!(confined, expected_default());
    assert!(!planted, "a file landed in main's configuration directory");

    // The same attempts unconfined, as the same (root) user: what the default profile refused
    // is its own doing wherever the machine allows the attempt at all.
    let (unconfined, planted) = escape_outcomes(ConfinementProfile::Off, None).await;
    let got = |key: &str| unconfined[key].as_str();
    for key in [
        "read_main_config_entries",
        "read_other_group_store",
        "write_main_config_dir",
        "ptrace_attach_own_child",
        "unshare_user",
        "mount_and_packet_in_own_namespaces",
    ] {
        assert_eq!(got(key), "ok", "{key} unconfined: {unconfined:?}");
    }
    assert!(planted, "the unconfined write did not land");
    // Capabilities are dropped under every profile: a packet socket and a mount in main's
    // namespaces need one the sandbox does not have. Under a root main, which holds every
    // capability, the kernel's own ptrace check also refuses main's environment and an attach
    // to main. (The filter refusing the same calls is shown by the attempts in the sandbox's
    // own child and namespaces above.)
    for key in ["socket_packet", "mount_tmpfs"] {
        assert_eq!(got(key), "EPERM", "{key} unconfined: {unconfined:?}");
    }
    if nix::unistd::geteuid().is_root() {
        assert_eq!(got("read_main_environ"), "EACCES", "{unconfined:?}");
        assert_eq!(got("ptrace_attach_main"), "EPERM", "{unconfined:?}");
    }
    // Garbage is no module: a kernel without module support says ENOSYS, one with it refuses
    // the missing capability (EPERM) before it parses anything; never "ok".
    for key in ["init_module", "finit_module"] {
        assert!(
            ["ENOSYS", "EPERM"].contains(&got(key)),
            "{key} unconfined: {unconfined:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_escape_attempt_is_refused_by_the_default_profile_under_a_group_uid_too() {
    if !nix::unistd::geteuid().is_root() {
        // Only a root main can start a group as another user.
        eprintln!("not run: main is not root");
        return;
    }
    let nobody = Credentials {
        uid: 65534,
        gid: 65534,
    };
    let (confined, planted) = escape_outcomes(ConfinementProfile::Default, Some(nobody)).await;
    assert_eq!(confined, expected_default());
    assert!(!planted, "a file landed in main's configuration directory");
}
