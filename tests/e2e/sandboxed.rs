//! End to end over the real `sandbox-runtime` binary: a hub (homecore + the host plugin)
//! configures the demo integration through its config flow in the `built-in` group, and the
//! sandboxed demo must look like the in-process baseline; then crash, recovery, unload while
//! down, budget exhaustion and shutdown; and the runtime's log lines as main reads them.

#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::sync::Arc;
use std::time::Duration;

use homecore::{
    ConfigEntryState, Context, Core, CoreConfig, FlowContext, FlowStep, ServiceRequest,
    ServiceTarget,
};
use sandbox_host::groups::GroupsConfig;
use sandbox_host::plugin::{PluginConfig, SandboxPlugin};
use sandbox_host::{GroupConfig, GroupState, RestartPolicy};
use serde_json::{Map, Value, json};

const HANG_GUARD: Duration = Duration::from_secs(60);

struct Hub {
    core: Core,
    plugin: Option<Arc<SandboxPlugin>>,
    _dir: tempfile::TempDir,
}

fn group_defaults() -> GroupConfig {
    let mut config = GroupConfig::new("template");
    config.watchdog = None;
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

async fn hub(sandboxed: bool, runtime: Vec<OsString>) -> Hub {
    hub_in(tempfile::tempdir().unwrap(), sandboxed, runtime).await
}

/// A hub whose core configuration `home` changes from the defaults.
async fn hub_at_home(
    sandboxed: bool,
    runtime: Vec<OsString>,
    home: impl FnOnce(&mut CoreConfig),
) -> Hub {
    hub_in_at_home(tempfile::tempdir().unwrap(), sandboxed, runtime, home).await
}

/// A hub on `dir`: a restart when a hub ran there before.
async fn hub_in(dir: tempfile::TempDir, sandboxed: bool, runtime: Vec<OsString>) -> Hub {
    hub_in_at_home(dir, sandboxed, runtime, |_| {}).await
}

/// A hub on `dir` whose core configuration `home` changes from the defaults.
async fn hub_in_at_home(
    dir: tempfile::TempDir,
    sandboxed: bool,
    runtime: Vec<OsString>,
    home: impl FnOnce(&mut CoreConfig),
) -> Hub {
    let mut config = CoreConfig::new(dir.path());
    home(&mut config);
    let core = Core::builder(config)
        .integrations(integrations::builtin())
        .build()
        .unwrap();
    let plugin = sandboxed.then(|| {
        SandboxPlugin::install(
            &core,
            PluginConfig {
                groups: GroupsConfig {
                    config_dir: dir.path().to_owned(),
                    runtime_command: runtime,
                    custom_commands: Default::default(),
                    group_defaults: group_defaults(),
                    group_overrides: Default::default(),
                },
                custom: vec![],
            },
        )
    });
    core.start().await.unwrap();
    Hub {
        core,
        plugin,
        _dir: dir,
    }
}

fn runtime() -> Vec<OsString> {
    vec![sandbox_tests::binary(sandbox_tests::SANDBOX_RUNTIME).into()]
}

/// Runs the demo's config flow (menu, then defaults) and returns the created entry's id.
async fn configure_demo(core: &Core) -> String {
    let flows = core.config_entries().flow();
    let menu = flows
        .init("demo", FlowContext::new("user"), None)
        .await
        .unwrap();
    assert!(matches!(menu.step, FlowStep::Menu { .. }), "{menu:?}");
    let choice = Map::from_iter([("next_step_id".to_owned(), json!("defaults"))]);
    let created = flows.configure(&menu.flow_id, Some(choice)).await.unwrap();
    let FlowStep::CreateEntry {
        entry_id, version, ..
    } = created.step
    else {
        panic!("create_entry: {created:?}")
    };
    assert_eq!(version, 2);
    entry_id.unwrap()
}

/// A hub with the demo configured in the real sandbox runtime, every proxy in place; the entry id.
async fn sandboxed_demo() -> (Hub, String) {
    let hub = hub(true, runtime()).await;
    let entry = configure_demo(&hub.core).await;
    wait_until("proxies", || {
        domains_with_entities(&hub.core) == proxyable_count()
    })
    .await;
    (hub, entry)
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

fn demo_states(core: &Core) -> BTreeMap<String, String> {
    core.states()
        .all(None)
        .into_iter()
        .map(|state| (state.entity_id.clone(), state.state.clone()))
        .collect()
}

fn proxyable_count() -> usize {
    homecore::catalog::catalog()
        .domains()
        .filter(|spec| spec.proxyable)
        .count()
}

fn domains_with_entities(core: &Core) -> usize {
    let domains: std::collections::BTreeSet<String> = core
        .states()
        .all(None)
        .iter()
        .map(|state| state.domain().to_owned())
        .collect();
    homecore::catalog::catalog()
        .domains()
        .filter(|spec| spec.proxyable && domains.contains(&spec.domain))
        .count()
}

async fn call(
    core: &Core,
    domain: &str,
    service: &str,
    entity_id: &str,
    data: Value,
    context: Context,
) {
    let request = ServiceRequest::new(domain, service)
        .with_target(ServiceTarget::entities([entity_id]))
        .with_data(data.as_object().cloned().unwrap_or_default())
        .with_context(context);
    core.services().call(request).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandboxed_demo_matches_the_in_process_baseline() {
    let baseline = hub(false, vec![]).await;
    let entry = configure_demo(&baseline.core).await;
    assert_eq!(
        baseline
            .core
            .config_entries()
            .entry(&entry)
            .unwrap()
            .sandbox,
        None
    );
    wait_until("baseline entities", || {
        domains_with_entities(&baseline.core) == proxyable_count()
    })
    .await;

    let sandboxed = hub(true, runtime()).await;
    let entry = configure_demo(&sandboxed.core).await;
    let stored = sandboxed.core.config_entries().entry(&entry).unwrap();
    assert_eq!(
        stored.sandbox.as_deref(),
        Some("built-in"),
        "main decided the group"
    );
    assert_eq!(stored.state, ConfigEntryState::Loaded);
    wait_until("proxies in every proxyable domain", || {
        domains_with_entities(&sandboxed.core) == proxyable_count()
    })
    .await;
    let expected = demo_states(&baseline.core);
    wait_until("the same entities and states", || {
        demo_states(&sandboxed.core) == expected
    })
    .await;

    // A service call through a proxy: same new state, and the caller's context comes back.
    let light = expected
        .keys()
        .find(|id| id.starts_with("light."))
        .unwrap()
        .clone();
    for hub in [&baseline, &sandboxed] {
        let context = Context::with_user("user-1");
        call(
            &hub.core,
            "light",
            "turn_on",
            &light,
            json!({"brightness": 77}),
            context.clone(),
        )
        .await;
        wait_until("the light's state", || {
            hub.core
                .states()
                .get(&light)
                .is_some_and(|state| state.attributes.get("brightness") == Some(&json!(77)))
        })
        .await;
        let state = hub.core.states().get(&light).unwrap();
        assert_eq!(state.state, "on");
        assert_eq!(
            state.context, context,
            "the state change is attributed to the caller"
        );
        assert_eq!(state.context.user_id.as_deref(), Some("user-1"));
    }

    // The same integration services, and the same events for the same action.
    let demo_services = |core: &Core| {
        core.services()
            .services()
            .get("demo")
            .map(|s| s.keys().cloned().collect::<Vec<_>>())
    };
    assert_eq!(
        demo_services(&baseline.core),
        demo_services(&sandboxed.core)
    );
    assert!(demo_services(&sandboxed.core).is_some_and(|services| !services.is_empty()));
    let button = expected
        .keys()
        .find(|id| id.starts_with("button."))
        .unwrap()
        .clone();
    let mut events = Vec::new();
    for hub in [&baseline, &sandboxed] {
        let (tx, mut rx) = tokio::sync::mpsc::channel(4);
        let listener = hub
            .core
            .bus()
            .listen("demo_button_pressed", move |event: Arc<homecore::Event>| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send(event.data.clone()).await;
                }
            })
            .unwrap();
        call(
            &hub.core,
            "button",
            "press",
            &button,
            json!({}),
            Context::new(),
        )
        .await;
        events.push(
            tokio::time::timeout(HANG_GUARD, rx.recv())
                .await
                .unwrap()
                .unwrap(),
        );
        listener.remove();
    }
    assert_eq!(
        events[0], events[1],
        "the sandboxed event carries the same data"
    );
    sandboxed.plugin.as_ref().unwrap().stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_turns_proxies_unavailable_and_a_respawn_recovers_them() {
    let (hub, entry) = sandboxed_demo().await;
    let plugin = hub.plugin.clone().unwrap();
    let group = plugin.groups().get("built-in").unwrap();
    let pid = group.manager.status().pid.unwrap();
    let proxies = plugin
        .groups()
        .bridge("built-in")
        .unwrap()
        .proxy_entity_ids();
    assert!(!proxies.is_empty());

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_until("every proxy unavailable", || {
        proxies.iter().all(|id| {
            hub.core
                .states()
                .get(id)
                .is_some_and(|state| state.state == "unavailable")
        })
    })
    .await;
    wait_until("a respawn", || {
        group.manager.status().pid.is_some_and(|new| new != pid)
            && group.manager.status().state == GroupState::Running
    })
    .await;
    wait_until("proxies back", || {
        proxies.iter().all(|id| {
            hub.core
                .states()
                .get(id)
                .is_some_and(|state| state.state != "unavailable")
        })
    })
    .await;
    assert_eq!(
        hub.core.config_entries().entry(&entry).unwrap().state,
        ConfigEntryState::Loaded
    );
    plugin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unload_while_the_sandbox_is_down_releases_main_side_proxies() {
    let (hub, entry) = sandboxed_demo().await;
    let plugin = hub.plugin.clone().unwrap();
    let group = plugin.groups().get("built-in").unwrap();
    group.manager.stop().await;
    assert!(hub.core.config_entries().unload(&entry).await.unwrap());
    assert_eq!(domains_with_entities(&hub.core), 0, "no proxy left behind");
    // And a later setup works: the platform slots were freed.
    assert!(hub.core.config_entries().setup(&entry).await.unwrap());
    wait_until("proxies again", || {
        domains_with_entities(&hub.core) == proxyable_count()
    })
    .await;
    plugin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budget_exhaustion_shows_setup_error_and_a_manual_reload_recovers() {
    let (hub, entry) = sandboxed_demo().await;
    let plugin = hub.plugin.clone().unwrap();
    let group = plugin.groups().get("built-in").unwrap();
    // Three starts are allowed in the window: crash the first and both respawns.
    for _ in 0..3 {
        let pid = group.manager.status().pid.unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        wait_until("a respawn or the failure", || {
            let status = group.manager.status();
            status.state == GroupState::Failed
                || (status.state == GroupState::Running && status.pid != Some(pid))
        })
        .await;
    }
    assert_eq!(group.manager.status().state, GroupState::Failed);
    wait_until("the entry shows setup_error", || {
        hub.core.config_entries().entry(&entry).unwrap().state == ConfigEntryState::SetupError
    })
    .await;
    wait_until("main's fail-over to finish", || {
        !group
            .failing_over
            .load(std::sync::atomic::Ordering::Acquire)
    })
    .await;
    let reason = hub
        .core
        .config_entries()
        .entry(&entry)
        .unwrap()
        .reason
        .unwrap_or_default();
    assert!(reason.contains("restart budget exhausted"), "{reason}");
    assert_eq!(domains_with_entities(&hub.core), 0, "no dead proxies left");

    // A manual reload starts the group again with a fresh budget.
    let reloaded = hub.core.config_entries().reload(&entry).await.unwrap();
    let after = hub.core.config_entries().entry(&entry).unwrap();
    assert!(
        reloaded,
        "{:?} {:?} {:?}",
        after.state,
        after.reason,
        group.manager.status()
    );
    assert_eq!(group.manager.status().state, GroupState::Running);
    wait_until("proxies again", || {
        domains_with_entities(&hub.core) == proxyable_count()
    })
    .await;
    plugin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_runs_and_answers_calls_with_its_files_confined_by_the_default_profile() {
    use std::os::unix::fs::PermissionsExt;
    let kernel_abi = sandbox_host::confinement::kernel_landlock_abi();
    assert!(
        kernel_abi > 0,
        "the machine's kernel has no Landlock: nothing to prove"
    );
    let (hub, _entry) = sandboxed_demo().await;
    let plugin = hub.plugin.clone().unwrap();
    let status = plugin.groups().get("built-in").unwrap().manager.status();
    assert_eq!(
        status.landlock_abi,
        Some(kernel_abi),
        "the runtime's files are confined with the kernel's Landlock ABI"
    );
    // Its TMPDIR is the private directory the host made for it.
    let pid = status.pid.unwrap();
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let tmpdir = environ
        .split(|&byte| byte == 0)
        .find_map(|entry| entry.strip_prefix(b"TMPDIR="))
        .map(|path| std::path::PathBuf::from(String::from_utf8_lossy(path).into_owned()))
        .expect("TMPDIR set");
    assert_eq!(
        std::fs::metadata(&tmpdir).unwrap().permissions().mode() & 0o777,
        0o700
    );

    // A service call through a proxy still reaches the confined sandbox and comes back.
    let light = demo_states(&hub.core)
        .into_keys()
        .find(|id| id.starts_with("light."))
        .unwrap();
    call(
        &hub.core,
        "light",
        "turn_on",
        &light,
        json!({"brightness": 33}),
        Context::new(),
    )
    .await;
    wait_until("the light's new brightness", || {
        hub.core
            .states()
            .get(&light)
            .is_some_and(|state| state.attributes.get("brightness") == Some(&json!(33)))
    })
    .await;

    // What the group's integrations run is confined with it: a command_line sensor in the
    // same sandbox cannot read a file in main's configuration directory, and can write in its
    // TMPDIR.
    let secret = hub._dir.path().join("secret");
    std::fs::write(&secret, "credentials").unwrap();
    let command = format!(
        "r=read; cat '{}' >/dev/null 2>&1 || r=refused; \
         w=wrote; echo x 2>/dev/null > \"$TMPDIR/probe\" || w=unwritable; echo \"$r $w\"",
        secret.display()
    );
    let flows = hub.core.config_entries().flow();
    let menu = flows
        .init("command_line", FlowContext::new("user"), None)
        .await
        .unwrap();
    let sensor = Map::from_iter([("next_step_id".to_owned(), json!("sensor"))]);
    let form = flows.configure(&menu.flow_id, Some(sensor)).await.unwrap();
    let input = Map::from_iter([
        ("name".to_owned(), json!("Probe")),
        ("command".to_owned(), json!(command)),
    ]);
    let created = flows.configure(&form.flow_id, Some(input)).await.unwrap();
    assert!(
        matches!(created.step, FlowStep::CreateEntry { .. }),
        "{created:?}"
    );
    wait_until("the probe's state", || {
        hub.core
            .states()
            .get("sensor.probe")
            .is_some_and(|state| state.state != "unknown" && state.state != "unavailable")
    })
    .await;
    assert_eq!(
        hub.core.states().get("sensor.probe").unwrap().state,
        "refused wrote"
    );

    hub.core.stop().await.unwrap();
    assert!(
        !tmpdir.exists(),
        "the private TMPDIR is gone with the sandbox"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_hub_stops_the_groups_and_keeps_their_restore_state() {
    let (hub, _entry) = sandboxed_demo().await;
    let plugin = hub.plugin.clone().unwrap();
    let pid = plugin
        .groups()
        .get("built-in")
        .unwrap()
        .manager
        .status()
        .pid
        .unwrap();
    hub.core.stop().await.unwrap();
    let status = plugin.groups().get("built-in").unwrap().manager.status();
    assert_eq!(status.state, GroupState::Stopped);
    assert!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_err(),
        "no process left"
    );
    // The sandbox's core saved its restore state through main at the shutdown it answered:
    // the file its next start loads (a_sandboxed_entitys_state_comes_back_after_a_hub_restart).
    let saved = hub
        ._dir
        .path()
        .join(".storage/sandbox/built-in")
        .join(homecore::restore_state::RESTORE_STATE_STORE_KEY);
    let listing: Vec<_> = std::fs::read_dir(saved.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let saved: Value = serde_json::from_slice(
        &std::fs::read(&saved).unwrap_or_else(|e| panic!("{e}: {listing:?}")),
    )
    .unwrap();
    assert!(
        saved["data"]
            .as_array()
            .is_some_and(|states| !states.is_empty()),
        "{saved}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandboxed_entitys_state_comes_back_after_a_hub_restart() {
    let (hub, _entry) = sandboxed_demo().await;
    // The demo's kitchen light, off until turned on.
    let kitchen = hub
        .core
        .states()
        .all(Some("light"))
        .into_iter()
        .find(|state| state.state == "off")
        .unwrap()
        .entity_id
        .clone();
    call(
        &hub.core,
        "light",
        "turn_on",
        &kitchen,
        json!({"brightness": 77}),
        Context::new(),
    )
    .await;
    let lit = |core: &Core| {
        core.states()
            .get(&kitchen)
            .is_some_and(|state| state.state == "on" && state.attributes["brightness"] == 77)
    };
    assert!(
        lit(&hub.core),
        "the call's state is on main when it returns"
    );
    hub.core.stop().await.unwrap();

    // A new hub on the same folder: the entry is set up again in a new sandbox, whose demo
    // light restores what it was before the stop.
    let Hub { _dir: dir, .. } = hub;
    let hub = hub_in(dir, true, runtime()).await;
    wait_until("the kitchen light as it was before the restart", || {
        lit(&hub.core)
    })
    .await;
    hub.core.stop().await.unwrap();
}

/// Every state as (state, attributes): what the two hubs must agree on.
fn full_states(core: &Core) -> BTreeMap<String, (String, Value)> {
    core.states()
        .all(None)
        .into_iter()
        .map(|state| {
            (
                state.entity_id.clone(),
                (state.state.clone(), Value::Object(state.attributes.clone())),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_field_free_domain_service_has_the_same_effect_sandboxed() {
    // Each domain service that needs no data is called on every entity of its domain, in the
    // same order on both hubs; outcomes and every state (attributes included) must match.
    let baseline = hub(false, vec![]).await;
    configure_demo(&baseline.core).await;
    wait_until("baseline entities", || {
        domains_with_entities(&baseline.core) == proxyable_count()
    })
    .await;
    let sandboxed = hub(true, runtime()).await;
    configure_demo(&sandboxed.core).await;
    wait_until("proxies", || {
        domains_with_entities(&sandboxed.core) == proxyable_count()
    })
    .await;
    let expected = full_states(&baseline.core);
    wait_until("the same starting states", || {
        full_states(&sandboxed.core) == expected
    })
    .await;

    let mut calls = 0;
    for spec in homecore::catalog::catalog()
        .domains()
        .filter(|spec| spec.proxyable)
    {
        for service in &spec.services {
            if service.schema.fields.iter().any(|field| field.required) {
                continue;
            }
            for entity_id in baseline.core.states().entity_ids(Some(&spec.domain)) {
                let mut outcomes = Vec::new();
                for hub in [&baseline, &sandboxed] {
                    let mut request =
                        ServiceRequest::new(spec.domain.clone(), service.name.clone())
                            .with_target(ServiceTarget::entities([entity_id.clone()]))
                            .with_context(Context::new());
                    if service.supports_response == homecore::SupportsResponse::Only {
                        request = request.with_response();
                    }
                    let outcome = hub.core.services().call(request).await;
                    outcomes.push(match outcome {
                        Ok(_) => "ok".to_owned(),
                        Err(error) => format!("error: {error}"),
                    });
                }
                assert_eq!(
                    outcomes[0], outcomes[1],
                    "{}.{} on {entity_id}",
                    spec.domain, service.name
                );
                let expected = full_states(&baseline.core);
                wait_until(
                    &format!("{}.{} on {entity_id} to match", spec.domain, service.name),
                    || full_states(&sandboxed.core) == expected,
                )
                .await;
                calls += 1;
            }
        }
    }
    assert!(calls > 40, "only {calls} calls were compared");
    sandboxed.plugin.as_ref().unwrap().stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_a_proxied_call_returns_main_already_shows_what_it_wrote() {
    let (hub, _entry) = sandboxed_demo().await;
    let switch = hub
        .core
        .states()
        .entity_ids(Some("switch"))
        .into_iter()
        .next()
        .unwrap();
    for round in 0..50 {
        let before = hub.core.states().get(&switch).unwrap().state.clone();
        let context = Context::new();
        call(
            &hub.core,
            "switch",
            "toggle",
            &switch,
            json!({}),
            context.clone(),
        )
        .await;
        // No waiting: the sandbox sends the states a call wrote ahead of its reply.
        let after = hub.core.states().get(&switch).unwrap();
        assert_ne!(
            after.state, before,
            "round {round}: the toggle is not on main yet"
        );
        assert_eq!(after.context.id, context.id, "round {round}");
    }
    hub.plugin.clone().unwrap().stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_on_many_proxies_of_a_group_leaves_as_one_rpc_with_every_entity_answered() {
    let (hub, _entry) = sandboxed_demo().await;
    let lights = hub.core.states().entity_ids(Some("light"));
    assert!(lights.len() >= 2, "{lights:?}");
    let channel = hub
        .plugin
        .clone()
        .unwrap()
        .groups()
        .get("built-in")
        .unwrap()
        .manager
        .channel()
        .unwrap();
    let before: BTreeMap<String, String> = lights
        .iter()
        .map(|id| (id.clone(), hub.core.states().get(id).unwrap().state.clone()))
        .collect();
    let calls_before = channel.stats().calls_sent;
    let context = Context::new();
    let request = ServiceRequest::new("light", "toggle")
        .with_target(ServiceTarget::entities(lights.iter().cloned()))
        .with_context(context.clone());
    hub.core.services().call(request).await.unwrap();
    assert_eq!(
        channel.stats().calls_sent - calls_before,
        1,
        "one call_service for {} lights",
        lights.len()
    );
    for id in &lights {
        let after = hub.core.states().get(id).unwrap();
        assert_ne!(after.state, before[id], "{id} toggled");
        assert_eq!(after.context.id, context.id, "{id}");
    }
    hub.plugin.clone().unwrap().stop().await;
}

/// A US home: nothing of it is a default of the core's configuration.
fn new_york(config: &mut CoreConfig) {
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
}

async fn demo_home(core: &Core) -> Value {
    wait_until("demo.get_status", || {
        core.services().has_service("demo", "get_status")
    })
    .await;
    let response = core
        .services()
        .call(ServiceRequest::new("demo", "get_status").with_response())
        .await
        .unwrap()
        .unwrap();
    response["home"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandbox_runs_with_mains_core_configuration_and_follows_its_changes() {
    let baseline = hub_at_home(false, vec![], new_york).await;
    configure_demo(&baseline.core).await;
    let expected = demo_home(&baseline.core).await;
    assert_eq!(expected["time_zone"], "America/New_York", "{expected}");
    assert_eq!(expected["temperature_unit"], "°F", "{expected}");

    let sandboxed = hub_at_home(true, runtime(), new_york).await;
    configure_demo(&sandboxed.core).await;
    assert_eq!(
        demo_home(&sandboxed.core).await,
        expected,
        "the sandboxed integration sees main's home"
    );

    // A change on main reaches the running sandbox.
    let update = homecore::CoreConfigUpdate {
        location_name: Some("Cabin".into()),
        unit_system: Some(homecore::UnitSystem::Metric),
        language: Some("fr".into()),
        ..Default::default()
    };
    baseline.core.update_config(update.clone()).await.unwrap();
    sandboxed.core.update_config(update).await.unwrap();
    // The demo hears of it through its core's event, on a task of its own.
    let deadline = tokio::time::Instant::now() + HANG_GUARD;
    let expected = loop {
        let home = demo_home(&baseline.core).await;
        if home["location_name"] == "Cabin" {
            break home;
        }
        assert!(tokio::time::Instant::now() < deadline, "{home}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    loop {
        let home = demo_home(&sandboxed.core).await;
        if home == expected {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the sandbox kept {home}, main has {expected}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    sandboxed.plugin.as_ref().unwrap().stop().await;
}

/// Installs the demo hub's firmware update through main.
async fn install_firmware(core: &Core) {
    let update = core
        .states()
        .entity_ids(Some("update"))
        .into_iter()
        .next()
        .unwrap();
    call(
        core,
        "update",
        "install",
        &update,
        json!({}),
        Context::new(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_sandboxed_integration_writes_into_its_entry_reaches_main() {
    let (hub, entry_id) = sandboxed_demo().await;
    install_firmware(&hub.core).await;
    // The demo records the installed firmware in its entry, in the sandbox's core: main owns
    // the entry and must end up with it, or the next setup sends the stale data back.
    wait_until("the entry's new data on main", || {
        hub.core
            .config_entries()
            .entry(&entry_id)
            .is_some_and(|entry| entry.data.get("firmware") == Some(&json!("1.3.0")))
    })
    .await;
    // A reload sets the entry up with main's copy, which now has it; nothing is lost.
    assert!(hub.core.config_entries().reload(&entry_id).await.unwrap());
    let entry = hub.core.config_entries().entry(&entry_id).unwrap();
    assert_eq!(entry.data.get("firmware"), Some(&json!("1.3.0")));
    hub.plugin.clone().unwrap().stop().await;
}

/// File names in `dir` containing `entry_id` (without case).
fn files_of_entry(dir: &std::path::Path, entry_id: &str) -> Vec<String> {
    let needle = entry_id.to_lowercase();
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
                .filter(|name| name.to_lowercase().contains(&needle))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_sandboxed_entry_runs_its_hook_in_the_sandbox_and_frees_its_store_keys() {
    let (hub, entry_id) = sandboxed_demo().await;
    let storage = hub._dir.path().join(".storage");
    let group_dir = storage.join("sandbox/built-in");
    let envelope = |key: &str| {
        serde_json::to_vec(&json!({"version": 1, "minor_version": 1, "key": key, "data": {}}))
            .unwrap()
    };
    // A key of the entry the integration's hook does not know of, left in the group's folder.
    let leftover = format!("leftover.{entry_id}");
    std::fs::create_dir_all(&group_dir).unwrap();
    std::fs::write(group_dir.join(&leftover), envelope(&leftover)).unwrap();
    // A file of the demo's key in main's own folder: the demo's hook would delete it if it ran
    // on main, where the entry's integration does not run.
    let demo_key = format!("demo.{}", entry_id.to_lowercase());
    std::fs::write(storage.join(&demo_key), envelope(&demo_key)).unwrap();

    hub.core.config_entries().remove(&entry_id).await.unwrap();
    assert!(hub.core.config_entries().entry(&entry_id).is_none());
    assert_eq!(
        files_of_entry(&group_dir, &entry_id),
        Vec::<String>::new(),
        "the entry's store keys are gone from the group's folder"
    );
    assert!(
        storage.join(&demo_key).exists(),
        "the removal hook ran on main"
    );
    assert_eq!(domains_with_entities(&hub.core), 0, "no proxy left behind");
    hub.plugin.clone().unwrap().stop().await;
}

/// The software version main's device registry holds for the demo hub.
fn hub_sw_version(core: &Core) -> Option<String> {
    core.device_registry()
        .find(&[("demo".to_owned(), "hub".to_owned())], &[])
        .and_then(|device| device.sw_version)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_changed_in_the_sandbox_is_changed_on_main() {
    let baseline = hub(false, vec![]).await;
    configure_demo(&baseline.core).await;
    wait_until("baseline entities", || {
        domains_with_entities(&baseline.core) == proxyable_count()
    })
    .await;
    install_firmware(&baseline.core).await;
    assert_eq!(hub_sw_version(&baseline.core).as_deref(), Some("1.3.0"));

    let (hub, _entry) = sandboxed_demo().await;
    assert_eq!(hub_sw_version(&hub.core).as_deref(), Some("1.2.0"));
    let devices_before = hub.core.device_registry().devices().len();
    install_firmware(&hub.core).await;
    // The demo updates its hub device in the sandbox's registry; main's device follows, in
    // place (no second device), as it does in-process.
    wait_until("the hub's new software version on main", || {
        hub_sw_version(&hub.core).as_deref() == Some("1.3.0")
    })
    .await;
    assert_eq!(hub.core.device_registry().devices().len(), devices_before);
    hub.plugin.clone().unwrap().stop().await;
}

#[tokio::test]
async fn with_main_absent_the_first_error_line_names_the_real_cause_in_a_level_main_reads() {
    // stdio:// with stdin at its end: main is not there.
    let config_dir = tempfile::tempdir().unwrap();
    let output =
        tokio::process::Command::new(sandbox_tests::binary(sandbox_tests::SANDBOX_RUNTIME))
            .args(["--name", "g", "--url", "stdio://", "--config-dir"])
            .arg(config_dir.path())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .output()
            .await
            .unwrap();
    assert_eq!(output.status.code(), Some(3));
    let stderr = String::from_utf8(output.stderr).unwrap();
    // A pipe is no terminal: plain lines, no colour codes between main and the level.
    assert!(!stderr.contains('\u{1b}'), "{stderr:?}");
    let first_error = stderr
        .lines()
        .map(sandbox_host::process::parse_log_line)
        .find(|(level, _)| *level == sandbox_host::process::LineLevel::Error)
        .unwrap_or_else(|| panic!("no line main reads as an error: {stderr:?}"));
    assert!(
        first_error
            .1
            .starts_with("failed to start: main closed the channel before the sandbox was ready"),
        "{first_error:?}"
    );
    assert!(!first_error.1.contains("store"), "{first_error:?}");
}
