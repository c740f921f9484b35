//! The mqtt integration over the real binaries, against a real broker process (the embedded one,
//! or Mosquitto with `SANDBOX_TEST_MQTT_BROKER=mosquitto`): the compat sweep's mqtt scenarios
//! played in-process and sandboxed (with the real `sandbox-runtime`) must not differ, and the
//! `sandbox-host` hub service runs the integration sandboxed: added by its config flow from the
//! command line, a discovered device's state read and its command sent over the REST API.

#![allow(clippy::unwrap_used, missing_docs)]

use std::path::PathBuf;

use sandbox_compat::scenario::{self, BrokerLauncher, Sandboxing, Scenario};
use sandbox_mqtt_broker::{Broker, BrokerKind, Device};
use sandbox_tests::http::request;
use sandbox_tests::hub::{HANG_GUARD, RunningHub as Hub, text};
use sandbox_tests::{SANDBOX_RUNTIME, binary};
use serde_json::{Value, json};

fn mqtt_scenarios() -> Vec<(PathBuf, Scenario)> {
    let folder = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("compat")
        .join("scenarios");
    let mut scenarios: Vec<(PathBuf, Scenario)> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with("mqtt") && name.ends_with(".json"))
        })
        .map(|path| {
            let scenario = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
                .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
            (path, scenario)
        })
        .collect();
    scenarios.sort_by(|a, b| a.0.cmp(&b.0));
    scenarios
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mqtt_scenarios_play_the_same_in_process_and_sandboxed() {
    let kind = BrokerKind::from_env().unwrap();
    let sandboxing = Sandboxing {
        runtime: vec![binary(SANDBOX_RUNTIME).into_os_string()],
        custom: Vec::new(),
        mqtt_broker: BrokerLauncher::Kind(kind),
    };
    let scenarios = mqtt_scenarios();
    assert!(
        !scenarios.is_empty(),
        "no mqtt scenario in compat/scenarios"
    );
    let mut failures = Vec::new();
    for (path, scenario) in scenarios {
        let outcome = tokio::time::timeout(10 * HANG_GUARD, scenario::play(scenario, &sandboxing))
            .await
            .unwrap_or_else(|_| panic!("{} hung", path.display()))
            .unwrap();
        let steps = outcome.sandboxed.len();
        assert!(
            steps > 5,
            "{}: only {steps} steps were played",
            path.display()
        );
        for line in outcome.differences().into_iter().chain(outcome.unmet()) {
            failures.push(format!("{} ({kind}): {line}", path.display()));
        }
        let failed: Vec<String> = outcome
            .baseline
            .iter()
            .flatten()
            .chain(&outcome.sandboxed)
            .filter(|record| !record.passed())
            .map(|record| format!("{}: {} -> {}", path.display(), record.label, record.outcome))
            .collect();
        failures.extend(failed);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_service_runs_mqtt_sandboxed_from_its_config_flow_to_a_device_command() {
    let broker = tokio::task::spawn_blocking(|| Broker::start(BrokerKind::from_env().unwrap()))
        .await
        .unwrap()
        .unwrap();
    let device = Device::connect(broker.host(), broker.port(), None, "plug/#")
        .await
        .unwrap();
    device
        .publish(
            "homeassistant/switch/plug/config",
            json!({
                "name": "Plug",
                "unique_id": "plug-1",
                "command_topic": "plug/set",
                "state_topic": "plug/state"
            })
            .to_string(),
            true,
        )
        .await
        .unwrap();
    device
        .publish("plug/state", "ON".to_owned(), true)
        .await
        .unwrap();

    let hub = tokio::task::spawn_blocking(Hub::start).await.unwrap();
    let port = broker.port().to_string();
    let added = hub.cli(&[
        "add",
        "mqtt",
        "--data",
        "broker=127.0.0.1",
        "--data",
        &format!("port={port}"),
    ]);
    assert_eq!(added.status.code(), Some(0), "{}", text(&added));
    let token = hub.token("mqtt-test");
    let address = hub.address();
    let started = std::time::Instant::now();
    let plug = loop {
        let (status, body) = request(
            &address,
            "GET",
            "/api/states/switch.plug",
            Some(&token),
            None,
        )
        .await;
        if status == 200 && body["state"] == "on" {
            break body;
        }
        assert!(
            started.elapsed() < HANG_GUARD,
            "switch.plug never came: {status} {body}\n{}",
            hub.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(plug["attributes"]["friendly_name"], json!("Plug"));
    // The plug is the built-in group's only entity: mqtt runs sandboxed.
    let group: Value = hub.group("built-in");
    assert_eq!(group["state"], "running", "{group}");
    assert_eq!(group["entities"], 1, "{group}");

    let body = serde_json::to_vec(&json!({"entity_id": "switch.plug"})).unwrap();
    let (status, answer) = request(
        &address,
        "POST",
        "/api/services/switch/turn_off",
        Some(&token),
        Some(body),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(device.expect("plug/set", Some("OFF")).await.unwrap(), "OFF");
    drop(hub);
    drop(broker);
}
