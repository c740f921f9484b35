//! The forged-frame suite: one hostile test per trust gate. Each test runs a hub (homecore + the
//! host plugin) whose `built-in` group is a real `sandbox-test-child` process forging frames
//! (`--forge SCENARIO`), and proves main refuses the forgery with the right error kind, counts
//! it on the bridge, lets nothing into its bus, services, states, registries or disk, and stays
//! up: the group keeps running on the same process and still answers a ping.

#![allow(clippy::unwrap_used, missing_docs)]

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use homecore::config_entries::ConfigEntryDisabler;
use homecore::event::EventOrigin;
use homecore::{
    ConfigEntry, ConfigEntryState, Core, CoreConfig, DeviceInfo, Event, ServiceRequest,
    SupportsResponse,
};
use sandbox_host::bridge::Bridge;
use sandbox_host::context_cache::MAX_CONTEXTS;
use sandbox_host::groups::GroupsConfig;
use sandbox_host::plugin::{PluginConfig, SandboxPlugin};
use sandbox_host::{GroupConfig, GroupState, RestartPolicy};
use sandbox_proto::error::ErrorKind;
use sandbox_proto::wire;
use serde_json::{Map, Value, json};

/// A hang guard only: far above anything these tests need on a loaded machine.
const HANG_GUARD: Duration = Duration::from_secs(60);

/// The group the plugin routes built-in integrations to.
const GROUP: &str = "built-in";
/// The entry main routed to the group (domain `demo`, so the group owns `demo`).
const OWN_ENTRY: &str = "sandboxed-demo-entry";
/// An entry main routed to another group (disabled, so that group never starts).
const FOREIGN_ENTRY: &str = "other-group-entry";
/// An entry that runs on main (disabled: no integration code is loaded in these tests).
const MAIN_ENTRY: &str = "main-only-entry";

struct Hub {
    core: Core,
    plugin: Arc<SandboxPlugin>,
    config_dir: PathBuf,
    report: PathBuf,
    pid: Option<u32>,
    _dir: tempfile::TempDir,
}

fn group_defaults() -> GroupConfig {
    let mut config = GroupConfig::new("template");
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

/// A hub whose `built-in` group runs the test child forging `scenario`; the group starts when
/// [`Hub::add_own_entry`] routes the first entry to it.
async fn hub(scenario: &str, extra: &[&str]) -> Hub {
    let dir = tempfile::tempdir().unwrap();
    let config_dir = dir.path().join("config");
    std::fs::create_dir_all(&config_dir).unwrap();
    let report = dir.path().join("forge-report.jsonl");
    let mut command: Vec<OsString> = vec![
        env!("CARGO_BIN_EXE_sandbox-test-child").into(),
        "--forge".into(),
        scenario.into(),
        "--forge-report".into(),
        report.clone().into(),
        "--own-entry".into(),
        OWN_ENTRY.into(),
        "--foreign-entry".into(),
        FOREIGN_ENTRY.into(),
    ];
    command.extend(extra.iter().map(OsString::from));
    let core = Core::builder(CoreConfig::new(&config_dir)).build().unwrap();
    let plugin = SandboxPlugin::install(
        &core,
        PluginConfig {
            groups: GroupsConfig {
                config_dir: config_dir.clone(),
                runtime_command: command,
                custom_commands: Default::default(),
                group_defaults: group_defaults(),
            },
            custom: vec![],
        },
    );
    core.start().await.unwrap();
    Hub {
        core,
        plugin,
        config_dir,
        report,
        pid: None,
        _dir: dir,
    }
}

fn entry(entry_id: &str, domain: &str, sandbox: Option<&str>) -> ConfigEntry {
    let mut entry = ConfigEntry::new(domain, format!("{entry_id} title"), Map::new(), "user");
    entry.entry_id = entry_id.to_owned();
    entry.sandbox = sandbox.map(str::to_owned);
    entry.data.insert("host".into(), json!("192.0.2.1"));
    entry
}

impl Hub {
    /// An entry of another group, disabled so nothing starts that group.
    async fn add_foreign_entry(&self) -> ConfigEntry {
        let mut foreign = entry(FOREIGN_ENTRY, "demo", Some("custom-other"));
        foreign.disabled_by = Some(ConfigEntryDisabler::User);
        self.core.config_entries().add(foreign).await.unwrap()
    }

    /// An entry that runs on main, disabled (no integration code is loaded here).
    async fn add_main_entry(&self) -> ConfigEntry {
        let mut main = entry(MAIN_ENTRY, "hue", None);
        main.disabled_by = Some(ConfigEntryDisabler::User);
        self.core.config_entries().add(main).await.unwrap()
    }

    /// Routes the group's entry: starts the forging child and loads the entry in it.
    async fn add_own_entry(&mut self) {
        let own = entry(OWN_ENTRY, "demo", Some(GROUP));
        let added = tokio::time::timeout(HANG_GUARD, self.core.config_entries().add(own))
            .await
            .expect("the group's entry setup hung")
            .unwrap();
        assert_eq!(added.state, ConfigEntryState::Loaded, "{added:?}");
        let status = self.group_status();
        assert_eq!(status.state, GroupState::Running);
        self.pid = status.pid;
        assert!(self.pid.is_some());
    }

    fn group_status(&self) -> sandbox_host::GroupStatus {
        self.plugin.groups().get(GROUP).unwrap().manager.status()
    }

    fn bridge(&self) -> Arc<Bridge> {
        self.plugin.groups().bridge(GROUP).unwrap()
    }

    /// The child's report, once it wrote it (whole).
    async fn report(&self) -> Report {
        wait_until("the forge report", || self.report.exists()).await;
        let text = std::fs::read_to_string(&self.report).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert!(
            lines.iter().all(|line| line.get("error").is_none()),
            "the child could not forge: {lines:?}"
        );
        assert_eq!(lines.last(), Some(&json!({"done": true})), "{lines:?}");
        Report(lines)
    }

    /// Main survived the forgery: the group runs on the same process, its entry is loaded and
    /// the channel still answers.
    async fn assert_still_up(&self) {
        let status = self.group_status();
        assert_eq!(status.state, GroupState::Running, "{status:?}");
        assert_eq!(status.pid, self.pid, "the group was restarted: {status:?}");
        assert_eq!(status.restarts, 0, "{status:?}");
        let own = self.core.config_entries().entry(OWN_ENTRY).unwrap();
        assert_eq!(own.state, ConfigEntryState::Loaded);
        let pong = tokio::time::timeout(
            HANG_GUARD,
            self.bridge().channel().call(&wire::Ping { nonce: 4242 }),
        )
        .await
        .expect("the ping hung")
        .unwrap();
        assert_eq!(pong.nonce, 4242);
    }

    async fn stop(self) {
        self.plugin.stop().await;
        self.plugin.uninstall();
        self.core.stop().await.unwrap();
    }
}

/// The child's report: one JSON line per forged attempt.
struct Report(Vec<Value>);

impl Report {
    fn step(&self, step: &str) -> &Value {
        self.0
            .iter()
            .find(|line| line["step"] == step)
            .unwrap_or_else(|| panic!("no step {step} in {:?}", self.0))
    }

    /// The step was answered with an error of `kind` whose message says `says`.
    fn assert_refused(&self, step: &str, kind: ErrorKind, says: &str) {
        let line = self.step(step);
        assert_eq!(line["ok"], false, "{step} went through: {line}");
        assert_eq!(line["kind"], format!("{kind:?}"), "{step}: {line}");
        let message = line["message"].as_str().unwrap();
        assert!(message.contains(says), "{step}: {message:?} lacks {says:?}");
    }

    /// The control step went through; its line.
    fn assert_ok(&self, step: &str) -> &Value {
        let line = self.step(step);
        assert_eq!(line["ok"], true, "{step} was refused: {line}");
        line
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

fn count(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// Every other gate counter of the bridge is zero.
fn assert_only_counted(bridge: &Bridge, expected: [u64; 6]) {
    let refused = &bridge.refused;
    let actual = [
        count(&refused.foreign_entry),
        count(&refused.foreign_device),
        count(&refused.unproxyable),
        count(&refused.service),
        count(&refused.event),
        count(&refused.store),
    ];
    assert_eq!(
        actual, expected,
        "refusals [foreign_entry, foreign_device, unproxyable, service, event, store]"
    );
}

fn entity_ids(core: &Core) -> Vec<String> {
    let mut ids: Vec<String> = core
        .states()
        .all(None)
        .iter()
        .map(|state| state.entity_id.clone())
        .collect();
    ids.sort();
    ids
}

/// Records every event main's bus delivers to a match-all listener.
fn record_events(core: &Core) -> Arc<Mutex<Vec<Arc<Event>>>> {
    let events: Arc<Mutex<Vec<Arc<Event>>>> = Arc::default();
    let sink = Arc::clone(&events);
    let handle = core
        .bus()
        .listen(homecore::event::MATCH_ALL, move |event| {
            sink.lock().unwrap().push(event);
            async {}
        })
        .unwrap();
    // Lives as long as the core: the test reads it to the end.
    std::mem::forget(handle);
    events
}

fn received(events: &Mutex<Vec<Arc<Event>>>, event_type: &str) -> Vec<Arc<Event>> {
    events
        .lock()
        .unwrap()
        .iter()
        .filter(|event| event.event_type == event_type)
        .cloned()
        .collect()
}

// B4: `register_entity` only for entries main routed to this group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_entity_for_an_entry_of_another_group_is_refused() {
    let mut hub = hub("foreign_entry", &[]).await;
    hub.add_foreign_entry().await;
    hub.add_own_entry().await;
    let report = hub.report().await;

    report.assert_refused(
        "foreign_entry",
        ErrorKind::Refused,
        &format!("config entry {FOREIGN_ENTRY} does not belong to group {GROUP}"),
    );
    report.assert_refused(
        "missing_entry",
        ErrorKind::Refused,
        "config entry no-such-entry does not exist",
    );
    let control = report.assert_ok("control")["entity_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let bridge = hub.bridge();
    assert_only_counted(&bridge, [2, 0, 0, 0, 0, 0]);

    // Nothing leaked: only the control proxy exists, in states and in the registry.
    assert_eq!(entity_ids(&hub.core), vec![control.clone()]);
    assert_eq!(bridge.proxy_entity_ids(), vec![control.clone()]);
    let registry = hub.core.entity_registry();
    assert!(registry.entries_for_config_entry(FOREIGN_ENTRY).is_empty());
    assert!(
        registry
            .entries()
            .iter()
            .all(|registered| registered.config_entry_id.as_deref() == Some(OWN_ENTRY)),
        "{:?}",
        registry.entries()
    );
    hub.assert_still_up().await;
    hub.stop().await;
}

/// A hub forging `foreign_device` against main's device (identifier `hue/main-owned-device`,
/// connection `mac/aa:bb:cc:dd:ee:ff`, of a main-only entry). With `group_device_first`, the
/// group's own device (`demo/sandbox-device`) is older than main's.
async fn device_hub(group_device_first: bool) -> (Hub, homecore::DeviceEntry, Report) {
    let mut hub = hub(
        "foreign_device",
        &[
            "--foreign-device",
            "hue=main-owned-device",
            "--foreign-connection",
            "mac=aa:bb:cc:dd:ee:ff",
        ],
    )
    .await;
    hub.add_main_entry().await;
    let devices = hub.core.device_registry();
    let group_device = group_device_first.then(|| {
        devices
            .get_or_create(DeviceInfo {
                config_entry_id: OWN_ENTRY.to_owned(),
                identifiers: vec![("demo".into(), "sandbox-device".into())],
                ..DeviceInfo::default()
            })
            .unwrap()
    });
    if group_device.is_some() {
        // Device ids are ULIDs: a later millisecond makes main's device sort after it.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let main_device = devices
        .get_or_create(DeviceInfo {
            config_entry_id: MAIN_ENTRY.to_owned(),
            identifiers: vec![("hue".into(), "main-owned-device".into())],
            connections: vec![("mac".into(), "aa:bb:cc:dd:ee:ff".into())],
            name: Some("Main's bridge".into()),
            ..DeviceInfo::default()
        })
        .unwrap();
    if let Some(group_device) = &group_device {
        assert!(
            group_device.id < main_device.id,
            "precondition: creation order"
        );
    }
    hub.add_own_entry().await;
    let report = hub.report().await;
    (hub, main_device, report)
}

// B2: a device that would merge into a device of an entry outside the group is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_merging_into_a_device_owned_outside_the_group_is_refused() {
    let (hub, main_device, report) = device_hub(false).await;

    let says = format!("belongs to a config entry outside group {GROUP}");
    report.assert_refused("by_identifier", ErrorKind::Refused, &says);
    report.assert_refused("by_connection", ErrorKind::Refused, &says);
    report.assert_refused("smuggled", ErrorKind::Refused, &says);
    let control = report.assert_ok("control")["entity_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let bridge = hub.bridge();
    assert_only_counted(&bridge, [0, 3, 0, 0, 0, 0]);

    // Main's device is untouched: same entries, identifiers, connections and name.
    let devices = hub.core.device_registry();
    assert_eq!(devices.get(&main_device.id).unwrap(), main_device);
    // The forged entities exist nowhere; the control one hangs off the sandbox's own device.
    assert_eq!(entity_ids(&hub.core), vec![control.clone()]);
    let own_devices = devices.devices_for_config_entry(OWN_ENTRY);
    assert_eq!(own_devices.len(), 1, "{own_devices:?}");
    assert_eq!(own_devices[0].config_entries, vec![OWN_ENTRY.to_owned()]);
    assert_eq!(
        own_devices[0].identifiers,
        vec![("demo".to_owned(), "sandbox-device".to_owned())]
    );
    assert_eq!(devices.devices().len(), 2);
    hub.assert_still_up().await;
    hub.stop().await;
}

// B2: a description listing the group's own (older) device first and a foreign identifier
// after it: every matching device is checked, so the foreign identifier is not smuggled in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_smuggling_a_foreign_identifier_behind_its_own_is_refused() {
    let (hub, main_device, report) = device_hub(true).await;

    let says = format!("belongs to a config entry outside group {GROUP}");
    report.assert_refused("by_identifier", ErrorKind::Refused, &says);
    report.assert_refused("by_connection", ErrorKind::Refused, &says);
    report.assert_refused("smuggled", ErrorKind::Refused, &says);
    report.assert_ok("control");
    assert_only_counted(&hub.bridge(), [0, 3, 0, 0, 0, 0]);
    let devices = hub.core.device_registry();
    assert_eq!(
        devices.get(&main_device.id).unwrap(),
        main_device,
        "main's device itself is untouched"
    );
    let own = devices.devices_for_config_entry(OWN_ENTRY);
    assert_eq!(own.len(), 1, "{own:?}");
    assert!(
        !own[0]
            .identifiers
            .contains(&("hue".to_owned(), "main-owned-device".to_owned())),
        "the sandbox's device did not take main's identifier: {own:?}"
    );
    let found = devices
        .find(&[("hue".to_owned(), "main-owned-device".to_owned())], &[])
        .unwrap();
    assert_eq!(
        found.id, main_device.id,
        "main's identifier still resolves to main's device"
    );
    hub.assert_still_up().await;
    hub.stop().await;
}

// B1/B4: only proxyable domains get proxies, whatever entry they claim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_entity_of_a_domain_that_cannot_be_proxied_is_refused() {
    let mut hub = hub("unproxyable_domain", &[]).await;
    hub.add_own_entry().await;
    let report = hub.report().await;

    report.assert_refused(
        "camera",
        ErrorKind::Refused,
        &format!("group {GROUP} does not own domain camera"),
    );
    report.assert_refused(
        "unknown_domain",
        ErrorKind::Refused,
        &format!("group {GROUP} does not own domain no_such_domain"),
    );
    let control = report.assert_ok("control")["entity_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let bridge = hub.bridge();
    assert_only_counted(&bridge, [0, 0, 2, 0, 0, 0]);

    assert_eq!(entity_ids(&hub.core), vec![control]);
    assert!(hub.core.entities().component("camera").is_none());
    assert!(hub.core.entities().component("no_such_domain").is_none());
    assert!(
        !bridge.owned_domains().contains("camera"),
        "{:?}",
        bridge.owned_domains()
    );
    hub.assert_still_up().await;
    hub.stop().await;
}

// B5: `register_service` only in owned domains, never over an existing service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_service_outside_owned_domains_or_over_an_existing_one_is_refused() {
    let mut hub = hub("service", &["--existing-service", "demo.main_only"]).await;
    // A service main registered itself, in a domain the group will own.
    hub.core
        .services()
        .register(
            "demo",
            "main_only",
            None,
            SupportsResponse::Optional,
            |_| async { Ok(Some(json!({"answered_by": "main"}))) },
        )
        .unwrap();
    hub.add_own_entry().await;
    let report = hub.report().await;

    let unowned = |domain: &str| format!("group {GROUP} does not own domain {domain}");
    report.assert_refused(
        "persistent_notification.create",
        ErrorKind::Refused,
        &unowned("persistent_notification"),
    );
    report.assert_refused(
        "homeassistant.restart",
        ErrorKind::Refused,
        &unowned("homeassistant"),
    );
    report.assert_refused(
        "demo.main_only",
        ErrorKind::Refused,
        "service demo.main_only already exists",
    );
    report.assert_ok("demo.forged_ok");
    let bridge = hub.bridge();
    assert_only_counted(&bridge, [0, 0, 0, 3, 0, 0]);

    let services = hub.core.services();
    assert!(!services.has_service("persistent_notification", "create"));
    assert!(!services.has_service("homeassistant", "restart"));
    assert!(services.has_service("demo", "forged_ok"), "the control");
    // Never clobbered: main's own handler still answers.
    let response = tokio::time::timeout(
        HANG_GUARD,
        services.call(ServiceRequest::new("demo", "main_only").with_response()),
    )
    .await
    .unwrap()
    .unwrap()
    .unwrap();
    assert_eq!(Value::Object(response), json!({"answered_by": "main"}));
    hub.assert_still_up().await;
    hub.stop().await;
}

// B6: `fire_event` only `<owned>_*`, never a core control-plane event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_and_unowned_events_never_reach_mains_bus() {
    let mut hub = hub("event", &[]).await;
    let events = record_events(&hub.core);
    // `state_reported`/`homeassistant_close` aside, a match-all listener sees every event;
    // `homeassistant_stop` gets its own listener too, since it would stop the whole hub.
    let stops = Arc::new(AtomicU64::new(0));
    let stop_count = Arc::clone(&stops);
    let stop_listener = hub
        .core
        .bus()
        .listen(homecore::event::EVENT_HOMEASSISTANT_STOP, move |_| {
            stop_count.fetch_add(1, Ordering::SeqCst);
            async {}
        })
        .unwrap();
    hub.add_own_entry().await;
    let report = hub.report().await;
    for step in [
        "homeassistant_stop",
        "homeassistant_start",
        "call_service",
        "state_changed",
        "service_registered",
        "zha_event",
        "hue_event",
        "demo_forged_ok",
    ] {
        assert_eq!(report.step(step)["pushed"], true, "{step}");
    }
    // Pushes are handled in arrival order: once the control event is on the bus, every forged
    // one before it has been decided.
    wait_until("the control event", || {
        !received(&events, "demo_forged_ok").is_empty()
    })
    .await;
    let control = received(&events, "demo_forged_ok");
    assert_eq!(control.len(), 1);
    assert_eq!(control[0].origin, EventOrigin::Remote);

    let bridge = hub.bridge();
    assert_only_counted(&bridge, [0, 0, 0, 0, 7, 0]);
    let leaked: Vec<String> = events
        .lock()
        .unwrap()
        .iter()
        .filter(|event| {
            event.event_type != "demo_forged_ok"
                && (event.origin == EventOrigin::Remote || event.data.contains_key("forged"))
        })
        .map(|event| event.event_type.clone())
        .collect();
    assert!(leaked.is_empty(), "forged events reached main: {leaked:?}");
    assert_eq!(
        stops.load(Ordering::SeqCst),
        0,
        "a forged homeassistant_stop"
    );
    stop_listener.remove();
    hub.assert_still_up().await;
    hub.stop().await;
}

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(error) => panic!("cannot list {}: {error}", dir.display()),
    };
    names.sort();
    names
}

/// Every file under `dir`, relative.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(folder) = pending.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path.strip_prefix(dir).unwrap().to_owned());
            }
        }
    }
    files.sort();
    files
}

// B10: store keys path-safe and short, values and groups under quota; nothing written otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_requests_over_quota_or_with_unsafe_keys_are_refused_and_write_nothing() {
    let mut hub = hub("store", &[]).await;
    hub.add_own_entry().await;
    let report = hub.report().await;

    report.assert_refused(
        "long_key",
        ErrorKind::BadRequest,
        "129 bytes; the limit is 128",
    );
    for step in ["traversal", "absolute", "dot_dot", "hidden", "empty"] {
        report.assert_refused(step, ErrorKind::BadRequest, "invalid store key");
    }
    report.assert_refused("too_large", ErrorKind::Quota, "the limit is 4194304");
    report.assert_refused("load_traversal", ErrorKind::BadRequest, "invalid store key");
    report.assert_ok("control");

    // On disk: the group's folder holds the control key only, and no forged key landed
    // anywhere else under the config folder.
    let sandbox_dir = hub.config_dir.join(".storage").join("sandbox");
    assert_eq!(listing(&sandbox_dir), vec![GROUP.to_owned()]);
    assert_eq!(
        listing(&sandbox_dir.join(GROUP)),
        vec!["forged_ok".to_owned()]
    );
    let strays: Vec<PathBuf> = files_under(&hub.config_dir)
        .into_iter()
        .filter(|path| {
            let name = path.file_name().unwrap().to_string_lossy();
            name.contains("passwd") || name == "big" || name.starts_with("kkkk")
        })
        .collect();
    assert!(strays.is_empty(), "{strays:?}");
    assert!(!hub.config_dir.join("etc").exists());

    let bridge = hub.bridge();
    assert_only_counted(&bridge, [0, 0, 0, 0, 0, 8]);
    hub.assert_still_up().await;
    hub.stop().await;
}

// B7: an unknown context id gets a fresh main-minted context, never the sandbox's ULID, and a
// flood of unknown ids keeps the cache bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contexts_main_never_issued_are_never_adopted_and_stay_bounded() {
    let mut hub = hub("context", &[]).await;
    let events = record_events(&hub.core);
    hub.add_own_entry().await;
    let report = hub.report().await;
    let proxy = report.assert_ok("control")["entity_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let forged = report.step("forged_context")["context_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(report.step("flood")["pushed"], 3 * MAX_CONTEXTS);
    wait_until("the end of the flood", || {
        !received(&events, "demo_flood_done").is_empty()
    })
    .await;

    // The event fired with the forged id carries a context main minted, with no user.
    let forged_event = received(&events, "demo_forged_context");
    assert_eq!(forged_event.len(), 1);
    let minted = &forged_event[0].context;
    assert_ne!(minted.id.to_string(), forged);
    assert_eq!(minted.user_id, None);
    assert_eq!(minted.parent_id, None);
    // The state change with the forged id: main's own context there too.
    let changes: Vec<Arc<Event>> = received(&events, "state_changed")
        .into_iter()
        .filter(|event| event.data.get("entity_id") == Some(&json!(proxy)))
        .collect();
    let to_off = changes
        .iter()
        .find(|event| event.data["new_state"]["state"] == "off")
        .expect("the forged state change reached the proxy");
    assert_ne!(to_off.context.id.to_string(), forged);
    assert_eq!(to_off.context.user_id, None);
    // One sandbox cause, one main context.
    assert_eq!(to_off.context.id, minted.id);
    let state = hub.core.states().get(&proxy).unwrap();
    assert_eq!(state.state, "off");
    assert_ne!(state.context.id.to_string(), forged);
    assert_eq!(state.context.user_id, None);
    // No event or state on main carries the forged id.
    assert!(
        events
            .lock()
            .unwrap()
            .iter()
            .all(|event| event.context.id.to_string() != forged)
    );

    // The flood of 3x the cap: the cache holds at most the cap.
    let cached = hub.plugin.groups().contexts().len();
    assert!(
        cached > 0 && cached <= MAX_CONTEXTS,
        "{cached} contexts cached after a flood of {}",
        3 * MAX_CONTEXTS
    );
    assert_only_counted(&hub.bridge(), [0, 0, 0, 0, 0, 0]);
    hub.assert_still_up().await;
    hub.stop().await;
}

// B4 (entries): `update_entry` only for entries of this group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_entry_for_an_entry_of_another_group_is_refused() {
    let mut hub = hub("update_entry", &[]).await;
    let foreign = hub.add_foreign_entry().await;
    hub.add_own_entry().await;
    let report = hub.report().await;

    report.assert_refused(
        "foreign_entry",
        ErrorKind::Refused,
        &format!("config entry {FOREIGN_ENTRY} does not belong to group {GROUP}"),
    );
    report.assert_refused(
        "missing_entry",
        ErrorKind::Refused,
        "config entry no-such-entry does not exist",
    );
    report.assert_ok("control");
    assert_only_counted(&hub.bridge(), [2, 0, 0, 0, 0, 0]);

    // The other group's entry is exactly as it was; the group's own entry took the update.
    assert_eq!(
        hub.core.config_entries().entry(FOREIGN_ENTRY).unwrap(),
        foreign
    );
    assert!(hub.core.config_entries().entry("no-such-entry").is_none());
    let own = hub.core.config_entries().entry(OWN_ENTRY).unwrap();
    assert_eq!(own.title, "renamed by the sandbox");
    assert_eq!(own.unique_id.as_deref(), Some("stolen"));
    assert_eq!(own.sandbox.as_deref(), Some(GROUP), "main alone decides");
    hub.assert_still_up().await;
    hub.stop().await;
}
