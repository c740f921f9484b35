//! The custom integration end to end: a hub (homecore + the host plugin) installs
//! `acme_thermostat` as a pinned artifact (the real `acme-thermostat-sandbox` binary, its
//! SHA-256 computed with [`custom_example::pin`]), runs its config flow in the group
//! `custom-acme_thermostat`, sees its entities as proxies and calls its service; and with a
//! wrong pin, setup fails with the clear error and no process of it runs.

#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use custom_example::{BOOST_DEGREES, DOMAIN, SERVICE_BOOST};
use homecore::{
    ConfigEntry, ConfigEntryState, Core, CoreConfig, FlowContext, FlowStep, ServiceRequest,
    ServiceTarget,
};
use sandbox_host::groups::GroupsConfig;
use sandbox_host::plugin::{PluginConfig, SandboxPlugin};
use sandbox_host::router::CustomIntegration;
use sandbox_host::{GroupConfig, GroupState, RestartPolicy};
use serde_json::{Map, Value, json};

/// A hang guard only: far above anything these tests need on a loaded machine.
const HANG_GUARD: Duration = Duration::from_secs(120);

/// The group main runs the custom integration in.
const GROUP: &str = "custom-acme_thermostat";

struct Hub {
    core: Core,
    plugin: Arc<SandboxPlugin>,
    _dir: tempfile::TempDir,
}

fn artifact() -> PathBuf {
    env!("CARGO_BIN_EXE_acme-thermostat-sandbox").into()
}

fn group_defaults() -> GroupConfig {
    let mut config = GroupConfig::new("template");
    config.watchdog = None;
    config.ready_timeout = Duration::from_secs(60);
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

/// A hub with the built-in integrations on main and `acme_thermostat` pinned at `sha256`.
async fn hub(sha256: String) -> Hub {
    let dir = tempfile::tempdir().unwrap();
    let core = Core::builder(CoreConfig::new(dir.path()))
        .integrations(integrations::builtin())
        .build()
        .unwrap();
    let command: Vec<OsString> = vec![artifact().into()];
    let plugin = SandboxPlugin::install(
        &core,
        PluginConfig {
            groups: GroupsConfig {
                config_dir: dir.path().to_owned(),
                // Never used here: only the custom group starts.
                runtime_command: command.clone(),
                custom_commands: HashMap::from([(GROUP.to_owned(), command)]),
                group_defaults: group_defaults(),
                group_overrides: Default::default(),
            },
            custom: vec![CustomIntegration {
                manifest: custom_example::manifest().unwrap(),
                artifact: artifact(),
                sha256,
            }],
        },
    );
    core.start().await.unwrap();
    Hub {
        core,
        plugin,
        _dir: dir,
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

fn state_of(core: &Core, entity_id: &str) -> Option<Arc<homecore::State>> {
    core.states().get(entity_id)
}

fn live_ids(core: &Core, domain: &str) -> Vec<String> {
    core.entities()
        .entity_ids(Some(domain))
        .into_iter()
        .filter(|id| state_of(core, id).is_some())
        .collect()
}

#[test]
fn pin_hashes_the_artifact_and_names_the_manifest() {
    let pinned = custom_example::pin::pin(&artifact()).unwrap();
    assert_eq!(pinned.domain, DOMAIN);
    assert_eq!(pinned.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(pinned.sha256.len(), 64);
    assert!(pinned.sha256.chars().all(|c| c.is_ascii_hexdigit()));
    // The host agrees with the pin.
    let custom = CustomIntegration {
        manifest: custom_example::manifest().unwrap(),
        artifact: artifact(),
        sha256: pinned.sha256.clone(),
    };
    sandbox_host::router::verify_artifact(&custom).unwrap();

    // And the `pin` tool prints the same thing as one JSON object.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_pin"))
        .arg(artifact())
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let printed: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        printed,
        json!({"domain": DOMAIN, "version": env!("CARGO_PKG_VERSION"), "sha256": pinned.sha256})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pinned_custom_integration_runs_in_its_own_group() {
    let sha256 = custom_example::pin::sha256_file(&artifact()).unwrap();
    let hub = hub(sha256).await;
    assert_eq!(
        hub.plugin.placement(DOMAIN),
        Some(sandbox_host::classifier::Placement::Group(GROUP.to_owned()))
    );
    assert!(
        hub.core.integrations().get(DOMAIN).is_none(),
        "its code is not on main"
    );
    assert!(
        hub.core.integrations().descriptor(DOMAIN).is_some(),
        "it is listed in the picker"
    );

    // The config flow runs in the custom group: a form, then the entry.
    let flows = hub.core.config_entries().flow();
    let form = tokio::time::timeout(
        HANG_GUARD,
        flows.init(DOMAIN, FlowContext::new("user"), None),
    )
    .await
    .unwrap()
    .unwrap();
    let FlowStep::Form { data_schema, .. } = &form.step else {
        panic!("a form: {form:?}")
    };
    let schema = data_schema.as_ref().unwrap();
    assert!(schema.field("name").is_some() && schema.field("target_temperature").is_some());
    assert_eq!(hub.plugin.groups().names(), vec![GROUP.to_owned()]);
    let input = json!({"name": "Hall", "target_temperature": 22.5});
    let created = tokio::time::timeout(
        HANG_GUARD,
        flows.configure(&form.flow_id, input.as_object().cloned()),
    )
    .await
    .unwrap()
    .unwrap();
    let FlowStep::CreateEntry { entry_id, .. } = created.step else {
        panic!("create_entry: {created:?}")
    };
    let entry = hub.core.config_entries().entry(&entry_id.unwrap()).unwrap();
    assert_eq!(entry.sandbox.as_deref(), Some(GROUP));
    assert_eq!(entry.title, "Hall");
    assert_eq!(entry.state, ConfigEntryState::Loaded, "{entry:?}");

    // Its entities appear on main as proxies.
    wait_until("the climate and sensor proxies", || {
        live_ids(&hub.core, "climate").len() == 1 && live_ids(&hub.core, "sensor").len() == 1
    })
    .await;
    let climate = live_ids(&hub.core, "climate").remove(0);
    let sensor = live_ids(&hub.core, "sensor").remove(0);
    let state = state_of(&hub.core, &climate).unwrap();
    assert_eq!(state.state, "heat");
    assert_eq!(state.attributes.get("temperature"), Some(&json!(22.5)));
    let room = state_of(&hub.core, &sensor).unwrap();
    assert_eq!(room.state, "19.0");
    assert_eq!(
        room.attributes.get("device_class"),
        Some(&json!("temperature"))
    );
    let bridge = hub.plugin.groups().bridge(GROUP).unwrap();
    assert_eq!(bridge.proxy_entity_ids().len(), 2);

    // An entity service through the proxy.
    let request = ServiceRequest::new("climate", "set_temperature")
        .with_target(ServiceTarget::entities([climate.clone()]))
        .with_data(json!({"temperature": 23.0}).as_object().cloned().unwrap());
    hub.core.services().call(request).await.unwrap();
    wait_until("the new target", || {
        state_of(&hub.core, &climate)
            .is_some_and(|state| state.attributes.get("temperature") == Some(&json!(23.0)))
    })
    .await;

    // The integration's own service answers with a response.
    let request = ServiceRequest::new(DOMAIN, SERVICE_BOOST)
        .with_data(json!({"minutes": 15}).as_object().cloned().unwrap())
        .with_response();
    let response = tokio::time::timeout(HANG_GUARD, hub.core.services().call(request))
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let boosted = response["boosted"].as_array().unwrap();
    assert_eq!(boosted.len(), 1, "{response:?}");
    let expected = 23.0 + BOOST_DEGREES;
    assert_eq!(boosted[0]["target_temperature"], json!(expected));
    assert_eq!(boosted[0]["entity_id"], json!(climate));
    wait_until("the boosted target", || {
        state_of(&hub.core, &climate)
            .is_some_and(|state| state.attributes.get("temperature") == Some(&json!(expected)))
    })
    .await;

    hub.plugin.stop().await;
    assert_eq!(
        hub.plugin.groups().get(GROUP).unwrap().manager.status().pid,
        None
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_pin_refuses_setup_with_a_clear_error_and_runs_nothing() {
    let hub = hub("0".repeat(64)).await;
    // An entry main routed to the custom group (as a config flow would have).
    let mut entry = ConfigEntry::new(DOMAIN, "Hall", Map::new(), "user");
    entry
        .data
        .insert("name".to_owned(), Value::String("Hall".to_owned()));
    entry.sandbox = Some(GROUP.to_owned());
    let entry = tokio::time::timeout(HANG_GUARD, hub.core.config_entries().add(entry))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(entry.state, ConfigEntryState::SetupError, "{entry:?}");
    let reason = entry.reason.unwrap_or_default();
    assert!(
        reason.contains("does not match its pinned sha256"),
        "{reason}"
    );
    assert!(reason.contains(DOMAIN), "{reason}");
    // Nothing of it was started: no group process, no entity, no service.
    let status = hub
        .plugin
        .groups()
        .get(GROUP)
        .map(|group| group.manager.status());
    assert!(
        status
            .as_ref()
            .is_none_or(|status| status.pid.is_none() && status.state != GroupState::Running),
        "{status:?}"
    );
    assert!(live_ids(&hub.core, "climate").is_empty());
    assert!(!hub.core.services().has_service(DOMAIN, SERVICE_BOOST));
    hub.plugin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_pin_refuses_the_config_flow_before_anything_runs() {
    let hub = hub("0".repeat(64)).await;
    let flows = hub.core.config_entries().flow();
    let outcome = tokio::time::timeout(
        HANG_GUARD,
        flows.init(DOMAIN, FlowContext::new("user"), None),
    )
    .await
    .unwrap();
    let error = outcome.expect_err("a wrong pin refuses the flow");
    assert!(
        error
            .to_string()
            .contains("does not match its pinned sha256"),
        "{error}"
    );
    let status = hub
        .plugin
        .groups()
        .get(GROUP)
        .map(|group| group.manager.status());
    assert!(
        status.as_ref().is_none_or(|status| status.pid.is_none()),
        "the unverified artifact never ran: {status:?}"
    );
    assert!(live_ids(&hub.core, "climate").is_empty());
    hub.plugin.stop().await;
}
