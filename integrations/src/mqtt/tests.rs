//! Tests of the mqtt integration against a real broker process (the embedded one, or Mosquitto
//! with `SANDBOX_TEST_MQTT_BROKER=mosquitto`): the flow's connection test, setup when the broker
//! is down, discovery (add, change in place, remove, bad configs skipped), commands reaching the
//! broker, availability, the broker going away and coming back, birth and `mqtt.publish`.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use sandbox_mqtt_broker::{Broker, BrokerKind, BrokerOptions, Device};
use serde_json::{Map, Value, json};

use homecore::config_entries::SOURCE_USER;
use homecore::{
    ConfigEntry, ConfigEntryState, Core, CoreConfig, FlowContext, FlowStep, MemoryStoreBackend,
    ServiceRequest, ServiceTarget,
};

use super::*;

/// Generous bound on every wait: a broker process, the connection's tasks.
const HANG_GUARD: Duration = Duration::from_secs(30);

fn map(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

async fn broker_with(options: BrokerOptions) -> Broker {
    tokio::task::spawn_blocking(move || {
        Broker::start_with(BrokerKind::from_env().unwrap(), options).unwrap()
    })
    .await
    .unwrap()
}

async fn broker() -> Broker {
    broker_with(BrokerOptions::default()).await
}

async fn stop(broker: Broker) -> Broker {
    tokio::task::spawn_blocking(move || {
        let mut broker = broker;
        broker.stop();
        broker
    })
    .await
    .unwrap()
}

async fn start_again(broker: Broker) -> Broker {
    tokio::task::spawn_blocking(move || {
        let mut broker = broker;
        broker.start_again().unwrap();
        broker
    })
    .await
    .unwrap()
}

async fn core() -> Core {
    let core = Core::builder(CoreConfig::new("unused"))
        .store_backend(Arc::new(MemoryStoreBackend::new()))
        .integrations(vec![
            Arc::new(MqttIntegration::new()) as Arc<dyn homecore::Integration>
        ])
        .build()
        .unwrap();
    core.start().await.unwrap();
    core
}

/// Waits for `condition`, failing the test with `what` after [`HANG_GUARD`].
async fn wait_for(what: &str, condition: impl Fn() -> bool) {
    let waited = tokio::time::timeout(HANG_GUARD, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "timed out waiting for {what}");
}

fn state(core: &Core, entity_id: &str) -> Option<String> {
    core.states()
        .get(entity_id)
        .map(|state| state.state.clone())
}

fn attribute(core: &Core, entity_id: &str, key: &str) -> Option<Value> {
    core.states()
        .get(entity_id)
        .and_then(|state| state.attributes.get(key).cloned())
}

/// Runs the config flow with `input`; the step it ended on.
async fn submit(core: &Core, input: Value) -> FlowStep {
    let flows = core.config_entries().flow();
    let form = flows
        .init(DOMAIN, FlowContext::new(SOURCE_USER), None)
        .await
        .unwrap();
    flows
        .configure(&form.flow_id, Some(map(input)))
        .await
        .unwrap()
        .step
}

/// Sets an entry up on `broker` through the flow; its id.
async fn configure(core: &Core, broker: &Broker) -> String {
    match submit(
        core,
        json!({"broker": broker.host(), "port": broker.port()}),
    )
    .await
    {
        FlowStep::CreateEntry {
            entry_id: Some(entry_id),
            ..
        } => entry_id,
        other => panic!("the flow did not create an entry: {other:?}"),
    }
}

fn entry(core: &Core, entry_id: &str) -> ConfigEntry {
    core.config_entries().entry(entry_id).unwrap()
}

/// A device on `broker` subscribed to `filter`, with what the tests publish as devices do.
async fn device_on(broker: &Broker, filter: &str) -> Device {
    Device::connect(broker.host(), broker.port(), None, filter)
        .await
        .unwrap()
}

async fn publish(device: &Device, topic: &str, payload: impl Into<Vec<u8>>, retain: bool) {
    device.publish(topic, payload, retain).await.unwrap();
}

/// Publishes a retained discovery config.
async fn publish_config(device: &Device, topic: &str, config: Value) {
    publish(device, topic, config.to_string(), true).await;
}

/// Waits for the hub's message on `topic`; its payload.
async fn expect(device: &Device, topic: &str) -> String {
    device.expect(topic, None).await.unwrap()
}

fn plug_config() -> Value {
    json!({
        "name": null,
        "uniq_id": "0x00158d0001a2b3c4_switch",
        "~": "zigbee2mqtt/plug",
        "stat_t": "~",
        "val_tpl": "{{ value_json.state }}",
        "cmd_t": "~/set",
        "pl_on": "ON",
        "pl_off": "OFF",
        "avty_t": "zigbee2mqtt/bridge/state",
        "dev": {
            "ids": ["zigbee2mqtt_0x00158d0001a2b3c4"],
            "name": "Plug",
            "mf": "Xiaomi",
            "mdl": "Smart plug"
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_flow_tests_the_broker_and_creates_an_entry_that_loads() {
    let broker = broker().await;
    let core = core().await;
    let entry_id = configure(&core, &broker).await;
    let entry = entry(&core, &entry_id);
    assert_eq!(entry.state, ConfigEntryState::Loaded);
    assert_eq!(entry.title, "127.0.0.1");
    assert!(core.services().has_service(DOMAIN, SERVICE_PUBLISH));
    core.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_nobody_answers_on_is_cannot_connect_on_the_form() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let core = core().await;
    let step = submit(&core, json!({"broker": "127.0.0.1", "port": port})).await;
    match step {
        FlowStep::Form { errors, .. } => {
            assert_eq!(
                errors.get("base").map(String::as_str),
                Some("cannot_connect")
            );
        }
        other => panic!("expected the form again, got {other:?}"),
    }
    assert!(core.config_entries().entries(Some(DOMAIN)).is_empty());
    core.stop().await.unwrap();
}

/// A peer answering every CONNECT with CONNACK `code`, as a broker refusing credentials does.
async fn refusing_peer(code: u8) -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buffer = [0u8; 512];
            let _ = stream.read(&mut buffer).await;
            let _ = stream.write_all(&[0x20, 0x02, 0x00, code]).await;
        }
    });
    (port, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_are_invalid_auth_on_the_form() {
    let core = core().await;
    for code in [4u8, 5] {
        let (port, peer) = refusing_peer(code).await;
        let step = submit(
            &core,
            json!({"broker": "127.0.0.1", "port": port, "username": "hub", "password": "wrong"}),
        )
        .await;
        peer.abort();
        match step {
            FlowStep::Form { errors, .. } => {
                assert_eq!(
                    errors.get("base").map(String::as_str),
                    Some("invalid_auth"),
                    "{code}"
                );
            }
            other => panic!("expected the form again, got {other:?}"),
        }
    }
    core.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_with_users_lets_the_right_password_in_and_refuses_a_wrong_one() {
    let broker = broker_with(BrokerOptions {
        users: vec![("hub".to_owned(), "s3cret".to_owned())],
    })
    .await;
    let core = core().await;
    let wrong = submit(
        &core,
        json!({"broker": broker.host(), "port": broker.port(), "username": "hub", "password": "nope"}),
    )
    .await;
    let FlowStep::Form { errors, .. } = wrong else {
        panic!("a wrong password made an entry: {wrong:?}");
    };
    // Mosquitto answers CONNACK 5; rumqttd closes the connection without a code, which a
    // client cannot tell from a broker going away.
    let expected = match broker.kind() {
        BrokerKind::Mosquitto => "invalid_auth",
        BrokerKind::Embedded => "cannot_connect",
    };
    assert_eq!(errors.get("base").map(String::as_str), Some(expected));
    let right = submit(
        &core,
        json!({"broker": broker.host(), "port": broker.port(), "username": "hub", "password": "s3cret"}),
    )
    .await;
    assert!(matches!(right, FlowStep::CreateEntry { .. }), "{right:?}");
    core.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_whose_broker_is_down_at_start_is_retried_not_failed() {
    let broker = stop(broker().await).await;
    let core = core().await;
    let added = core
        .config_entries()
        .add(ConfigEntry::new(
            DOMAIN,
            "down",
            map(json!({"broker": broker.host(), "port": broker.port()})),
            SOURCE_USER,
        ))
        .await
        .unwrap();
    assert_eq!(
        added.state,
        ConfigEntryState::SetupRetry,
        "{:?}",
        added.reason
    );
    assert!(
        added
            .reason
            .as_deref()
            .unwrap_or_default()
            .contains("cannot connect"),
        "{:?}",
        added.reason
    );
    core.stop().await.unwrap();
    drop(broker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discovered_switch_follows_its_state_and_its_commands_reach_the_broker() {
    let broker = broker().await;
    let device = device_on(&broker, "zigbee2mqtt/#").await;
    publish_config(
        &device,
        "homeassistant/switch/0x00158d0001a2b3c4/switch/config",
        plug_config(),
    )
    .await;
    publish(&device, "zigbee2mqtt/bridge/state", "online", true).await;
    publish(
        &device,
        "zigbee2mqtt/plug",
        r#"{"state":"OFF","power":0}"#,
        true,
    )
    .await;
    let core = core().await;
    configure(&core, &broker).await;
    let plug = "switch.plug";
    wait_for("the plug, off", || {
        state(&core, plug).as_deref() == Some("off")
    })
    .await;
    let registry = core.registries();
    let registered = registry.entities.get(plug).unwrap();
    let device_id = registered.device_id.clone().unwrap();
    let made = registry.devices.get(&device_id).unwrap();
    assert_eq!(made.manufacturer.as_deref(), Some("Xiaomi"));
    assert_eq!(made.model.as_deref(), Some("Smart plug"));

    core.services()
        .call(
            ServiceRequest::new("switch", "turn_on")
                .with_target(ServiceTarget::entities([plug.to_owned()])),
        )
        .await
        .unwrap();
    assert_eq!(expect(&device, "zigbee2mqtt/plug/set").await, "ON");
    // Not optimistic: the state waits for the device.
    assert_eq!(state(&core, plug).as_deref(), Some("off"));
    publish(&device, "zigbee2mqtt/plug", r#"{"state":"ON"}"#, true).await;
    wait_for("the plug, on", || {
        state(&core, plug).as_deref() == Some("on")
    })
    .await;

    publish(&device, "zigbee2mqtt/bridge/state", "offline", true).await;
    wait_for("the plug, unavailable", || {
        state(&core, plug).as_deref() == Some("unavailable")
    })
    .await;
    publish(&device, "zigbee2mqtt/bridge/state", "online", true).await;
    wait_for("the plug, back", || {
        state(&core, plug).as_deref() == Some("on")
    })
    .await;
    core.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_config_changes_the_entity_in_place_and_an_empty_one_removes_it() {
    let broker = broker().await;
    let device = device_on(&broker, "tele/#").await;
    let topic = "homeassistant/sensor/tasmota_1/temperature/config";
    let mut config = json!({
        "name": "Hall temperature",
        "uniq_id": "tasmota_1_temperature",
        "stat_t": "tele/tasmota_1/SENSOR",
        "val_tpl": "{{ value_json.temperature }}",
        "unit_of_meas": "°C",
        "dev_cla": "temperature",
        "stat_cla": "measurement"
    });
    publish_config(&device, topic, config.clone()).await;
    publish(
        &device,
        "tele/tasmota_1/SENSOR",
        r#"{"temperature": 21.5}"#,
        true,
    )
    .await;
    let core = core().await;
    configure(&core, &broker).await;
    let sensor = "sensor.hall_temperature";
    wait_for("the sensor", || {
        state(&core, sensor).as_deref() == Some("21.5")
    })
    .await;
    assert_eq!(
        attribute(&core, sensor, "unit_of_measurement"),
        Some(json!("°C"))
    );

    config["unit_of_meas"] = json!("°F");
    publish_config(&device, topic, config).await;
    wait_for("the new unit", || {
        attribute(&core, sensor, "unit_of_measurement") == Some(json!("°F"))
    })
    .await;
    assert_eq!(
        state(&core, sensor).as_deref(),
        Some("21.5"),
        "same entity id, same state"
    );

    publish(&device, topic, "", true).await;
    wait_for("the sensor gone", || state(&core, sensor).is_none()).await;
    assert!(core.registries().entities.get(sensor).is_none());
    core.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_configs_are_skipped_and_the_entry_and_its_other_entities_keep_working() {
    let broker = broker().await;
    let device = device_on(&broker, "good/#").await;
    let bad: [(&str, &[u8]); 5] = [
        ("homeassistant/switch/bad1/config", b"{not json"),
        ("homeassistant/switch/bad2/config", b"[1, 2, 3]"),
        (
            "homeassistant/switch/bad3/config",
            br#"{"name": "no command topic"}"#,
        ),
        (
            "homeassistant/vacuum/bad4/config",
            br#"{"name": "unknown component"}"#,
        ),
        (
            "homeassistant/switch/bad5/config",
            br#"{"name": "x", "cmd_t": "a/+/b"}"#,
        ),
    ];
    for (topic, payload) in bad {
        publish(&device, topic, payload.to_vec(), true).await;
    }
    publish_config(
        &device,
        "homeassistant/switch/good/config",
        json!({"name": "Good", "cmd_t": "good/set", "stat_t": "good/state"}),
    )
    .await;
    publish(&device, "good/state", "ON", true).await;
    let core = core().await;
    let entry_id = configure(&core, &broker).await;
    wait_for("the good switch", || {
        state(&core, "switch.good").as_deref() == Some("on")
    })
    .await;
    assert_eq!(entry(&core, &entry_id).state, ConfigEntryState::Loaded);
    assert_eq!(core.states().all(Some("switch")).len(), 1);
    core.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_broker_goes_away_every_entity_is_unavailable_and_comes_back_without_a_restart() {
    let broker = broker().await;
    let core = core().await;
    let entry_id = configure(&core, &broker).await;
    {
        let device = device_on(&broker, "lamp/#").await;
        publish_config(
            &device,
            "homeassistant/switch/lamp/config",
            json!({"name": "Lamp", "cmd_t": "lamp/set", "stat_t": "lamp/state"}),
        )
        .await;
        publish(&device, "lamp/state", "ON", true).await;
        wait_for("the lamp", || {
            state(&core, "switch.lamp").as_deref() == Some("on")
        })
        .await;
    }
    let broker = stop(broker).await;
    wait_for("the lamp, unavailable", || {
        state(&core, "switch.lamp").as_deref() == Some("unavailable")
    })
    .await;
    let refused = core
        .services()
        .call(
            ServiceRequest::new(DOMAIN, SERVICE_PUBLISH)
                .with_data(map(json!({"topic": "lamp/set", "payload": "OFF"}))),
        )
        .await;
    assert!(
        refused.is_err(),
        "a publish while disconnected must fail: {refused:?}"
    );
    let broker = start_again(broker).await;
    // The broker lost its retained messages: the lamp is back (connected), its state known
    // again only once the device republishes it.
    wait_for("the lamp, back", || {
        state(&core, "switch.lamp").is_some_and(|state| state != "unavailable")
    })
    .await;
    let device = device_on(&broker, "lamp/#").await;
    publish(&device, "lamp/state", "OFF", true).await;
    wait_for("the lamp, off", || {
        state(&core, "switch.lamp").as_deref() == Some("off")
    })
    .await;
    assert_eq!(entry(&core, &entry_id).state, ConfigEntryState::Loaded);
    core.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_announces_itself_and_publishes_what_mqtt_publish_asks() {
    let broker = broker().await;
    let device = device_on(&broker, "#").await;
    let core = core().await;
    configure(&core, &broker).await;
    assert_eq!(expect(&device, "homeassistant/status").await, "online");
    core.services()
        .call(ServiceRequest::new(DOMAIN, SERVICE_PUBLISH).with_data(map(
            json!({"topic": "cmnd/tasmota_1/POWER", "payload": "TOGGLE", "qos": 1}),
        )))
        .await
        .unwrap();
    assert_eq!(expect(&device, "cmnd/tasmota_1/POWER").await, "TOGGLE");
    let refused = core
        .services()
        .call(
            ServiceRequest::new(DOMAIN, SERVICE_PUBLISH)
                .with_data(map(json!({"topic": "cmnd/+/POWER", "payload": "x"}))),
        )
        .await;
    assert!(
        refused.is_err(),
        "a wildcard topic must be refused: {refused:?}"
    );
    core.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_options_reload_the_entry_with_the_new_discovery_prefix() {
    let broker = broker().await;
    let device = device_on(&broker, "dev/#").await;
    publish_config(
        &device,
        "custom/switch/one/config",
        json!({"name": "One", "cmd_t": "dev/one/set"}),
    )
    .await;
    let core = core().await;
    let entry_id = configure(&core, &broker).await;
    let flows = core.config_entries().options();
    let form = flows.init(&entry_id, None).await.unwrap();
    flows
        .configure(
            &form.flow_id,
            Some(map(
                json!({"discovery": true, "discovery_prefix": "custom"}),
            )),
        )
        .await
        .unwrap();
    wait_for("the switch under the new prefix", || {
        core.states().get("switch.one").is_some()
    })
    .await;
    assert_eq!(entry(&core, &entry_id).state, ConfigEntryState::Loaded);
    core.stop().await.unwrap();
}

#[test]
fn entry_settings_are_checked_with_the_field_they_belong_to() {
    let bad = [
        (json!({}), "broker"),
        (json!({"broker": "h", "port": 0}), "port"),
        (json!({"broker": "h", "port": 70000}), "port"),
        (json!({"broker": "h", "password": "p"}), "username"),
        (json!({"broker": "h", "ca_file": "/x.pem"}), "ca_file"),
        (
            json!({"broker": "h", "discovery_prefix": "a/#"}),
            "discovery_prefix",
        ),
        (json!({"broker": "h", "tls": "yes"}), "tls"),
    ];
    for (data, field) in bad {
        let error = EntryConfig::from_entry(&map(data.clone()), &Map::new()).unwrap_err();
        assert_eq!(error.field(), field, "{data}: {error}");
    }
    let config = EntryConfig::from_entry(
        &map(json!({"broker": " mqtt.local ", "username": "hub", "password": " p "})),
        &map(json!({"birth_enable": false, "will_payload": "gone"})),
    )
    .unwrap();
    assert_eq!(config.broker, "mqtt.local");
    assert_eq!(config.port, config::DEFAULT_PORT);
    assert_eq!(config.password.as_deref(), Some(" p "));
    assert!(config.birth.is_none());
    assert_eq!(config.will.unwrap().payload, "gone");
    assert_eq!(config.discovery_prefix, "homeassistant");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_entities_on_one_retained_topic_both_get_its_state() {
    let broker = broker().await;
    let device = device_on(&broker, "tele/#").await;
    publish(
        &device,
        "tele/tasmota_2/SENSOR",
        r#"{"AM2301":{"Temperature":19.5,"Humidity":51.0}}"#,
        true,
    )
    .await;
    let sensor = |object: &str, template: &str| {
        json!({"name": object, "stat_t": "tele/tasmota_2/SENSOR", "val_tpl": template,
               "uniq_id": format!("tasmota_2_{object}")})
    };
    publish_config(
        &device,
        "homeassistant/sensor/tasmota_2/temperature/config",
        sensor("temperature", "{{ value_json.AM2301.Temperature }}"),
    )
    .await;
    let core = core().await;
    configure(&core, &broker).await;
    wait_for("the first sensor", || {
        state(&core, "sensor.temperature").as_deref() == Some("19.5")
    })
    .await;
    // The second joins a topic the connection already follows: the broker sent its retained
    // message once, to the first.
    publish_config(
        &device,
        "homeassistant/sensor/tasmota_2/humidity/config",
        sensor("humidity", "{{ value_json.AM2301.Humidity }}"),
    )
    .await;
    wait_for("the second sensor", || {
        state(&core, "sensor.humidity").as_deref() == Some("51.0")
    })
    .await;
    core.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_retained_config_is_dropped_without_costing_the_connection() {
    let broker = broker().await;
    let device = device_on(&broker, "ok/#").await;
    // Larger than what subscribers are handed, smaller than what ends a session.
    let huge = format!(
        r#"{{"name": "huge", "cmd_t": "ok/huge", "x": "{}"}}"#,
        "a".repeat(300 * 1024)
    );
    publish(&device, "homeassistant/switch/huge/config", huge, true).await;
    publish_config(
        &device,
        "homeassistant/switch/ok/config",
        json!({"name": "Ok", "cmd_t": "ok/set", "stat_t": "ok/state"}),
    )
    .await;
    publish(&device, "ok/state", "ON", true).await;
    let core = core().await;
    let entry_id = configure(&core, &broker).await;
    wait_for("the small switch", || {
        state(&core, "switch.ok").as_deref() == Some("on")
    })
    .await;
    assert!(core.states().get("switch.huge").is_none());
    // Still the first session: nothing went unavailable, a command goes out.
    core.services()
        .call(
            ServiceRequest::new("switch", "turn_off")
                .with_target(ServiceTarget::entities(["switch.ok".to_owned()])),
        )
        .await
        .unwrap();
    assert_eq!(expect(&device, "ok/set").await, "OFF");
    assert_eq!(entry(&core, &entry_id).state, ConfigEntryState::Loaded);
    core.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_entity_is_registered_and_an_empty_config_removes_it_and_its_device() {
    let broker = broker().await;
    let device = device_on(&broker, "diag/#").await;
    let topic = "homeassistant/sensor/node/linkquality/config";
    publish_config(
        &device,
        topic,
        json!({"name": "Linkquality", "uniq_id": "node_linkquality", "stat_t": "diag/node",
               "enabled_by_default": false, "availability": {"topic": "diag/available"},
               "dev": {"ids": ["node"], "name": "Node"}}),
    )
    .await;
    let core = core().await;
    configure(&core, &broker).await;
    let registries = core.registries();
    wait_for("the disabled sensor's registration", || {
        registries
            .entities
            .entity_id_for("sensor", DOMAIN, "node_linkquality")
            .is_some()
    })
    .await;
    assert!(core.states().get("sensor.node_linkquality").is_none());
    publish(&device, topic, "", true).await;
    wait_for("the registration gone", || {
        registries
            .entities
            .entity_id_for("sensor", DOMAIN, "node_linkquality")
            .is_none()
    })
    .await;
    assert!(
        registries
            .devices
            .find(&[(DOMAIN.to_owned(), "node".to_owned())], &[])
            .is_none(),
        "the device of its only entity is gone"
    );
    core.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_settings_are_checked_and_a_plain_broker_is_not_a_tls_one() {
    let broker = broker().await;
    let core = core().await;
    let dir = tempfile::tempdir().unwrap();
    let not_pem = dir.path().join("ca.pem");
    std::fs::write(&not_pem, "not a certificate").unwrap();
    for ca_file in [
        dir.path().join("missing.pem").display().to_string(),
        not_pem.display().to_string(),
    ] {
        let step = submit(
            &core,
            json!({"broker": broker.host(), "port": broker.port(), "tls": true, "ca_file": ca_file}),
        )
        .await;
        let FlowStep::Form { errors, .. } = step else {
            panic!("{ca_file}: an unusable CA file made an entry: {step:?}");
        };
        assert_eq!(
            errors.get("base").map(String::as_str),
            Some("invalid_tls"),
            "{ca_file}"
        );
    }
    // The system's CA certificates, and a broker that speaks no TLS: the handshake fails.
    let step = submit(
        &core,
        json!({"broker": broker.host(), "port": broker.port(), "tls": true}),
    )
    .await;
    let FlowStep::Form { errors, .. } = step else {
        panic!("a TLS handshake with a plain broker made an entry: {step:?}");
    };
    let error = errors.get("base").map(String::as_str);
    // Without system certificates the TLS settings themselves are refused.
    assert!(
        matches!(error, Some("cannot_connect" | "invalid_tls")),
        "{error:?}"
    );
    core.stop().await.unwrap();
}
