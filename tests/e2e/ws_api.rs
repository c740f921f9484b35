//! Home Assistant's WebSocket API over the real `sandbox-host run`, with a real client: the
//! handshake (good, bad and missing tokens), every command on a hub running the demo
//! integration in its sandbox, `subscribe_entities` following a service call and a sandbox
//! crash, every kind of bad input answered on a connection that stays usable, and a client
//! that stops reading disconnected while the others are still served.

#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::VecDeque;
use std::time::Instant;

use futures::{SinkExt as _, StreamExt as _};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use sandbox_tests::hub::{HANG_GUARD, RunningHub as Hub};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A WebSocket client: numbered commands, and the messages read while waiting for another
/// kept for later.
struct Client {
    socket: Socket,
    next_id: i64,
    pending: VecDeque<Value>,
}

async fn open(address: &str) -> Socket {
    let (socket, _) = tokio_tungstenite::connect_async(format!("ws://{address}/api/websocket"))
        .await
        .unwrap();
    socket
}

/// The next message as JSON; `None` once the server closed the connection.
async fn read(socket: &mut Socket) -> Option<Value> {
    tokio::time::timeout(HANG_GUARD, read_now(socket))
        .await
        .expect("a message in time")
}

async fn read_now(socket: &mut Socket) -> Option<Value> {
    loop {
        let message = socket.next().await;
        match message {
            Some(Ok(Message::Text(text))) => return Some(serde_json::from_str(&text).unwrap()),
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
            Some(Ok(Message::Binary(_))) => panic!("a binary message"),
            Some(Ok(Message::Close(_)) | Err(_)) | None => return None,
        }
    }
}

async fn send(socket: &mut Socket, message: Value) {
    socket
        .send(Message::Text(message.to_string().into()))
        .await
        .unwrap();
}

impl Client {
    /// Connects and authenticates with `token`.
    async fn connect(address: &str, token: &str) -> Self {
        let mut socket = open(address).await;
        let required = read(&mut socket).await.unwrap();
        assert_eq!(required["type"], "auth_required");
        assert!(required["ha_version"].is_string());
        send(&mut socket, json!({"type": "auth", "access_token": token})).await;
        let ok = read(&mut socket).await.unwrap();
        assert_eq!(ok["type"], "auth_ok", "{ok}");
        Self {
            socket,
            next_id: 1,
            pending: VecDeque::new(),
        }
    }

    /// Sends `message` with the next id; returns the id.
    async fn send(&mut self, mut message: Value) -> i64 {
        let id = self.next_id;
        self.next_id += 1;
        message["id"] = json!(id);
        send(&mut self.socket, message).await;
        id
    }

    /// The first message (kept or read) that `matches`; the others are kept.
    async fn wait(&mut self, what: &str, matches: impl Fn(&Value) -> bool) -> Value {
        if let Some(index) = self.pending.iter().position(&matches) {
            return self.pending.remove(index).unwrap();
        }
        loop {
            let message = tokio::time::timeout(HANG_GUARD, read_now(&mut self.socket))
                .await
                .unwrap_or_else(|_| {
                    panic!("timed out waiting for {what}; read: {:?}", self.pending)
                })
                .unwrap_or_else(|| panic!("closed while waiting for {what}"));
            if matches(&message) {
                return message;
            }
            self.pending.push_back(message);
        }
    }

    /// The answer to the message with `id`.
    async fn answer(&mut self, id: i64) -> Value {
        self.wait(&format!("the answer to {id}"), |message| {
            message["id"] == id && message["type"] != "event"
        })
        .await
    }

    /// Sends a command and returns its answer.
    async fn command(&mut self, message: Value) -> Value {
        let id = self.send(message).await;
        self.answer(id).await
    }

    /// Sends a command that must succeed; returns its `result`.
    async fn ok(&mut self, message: Value) -> Value {
        let answer = self.command(message.clone()).await;
        assert_eq!(answer["success"], true, "{message} -> {answer}");
        answer["result"].clone()
    }

    /// Sends raw text; returns the next answer.
    async fn raw(&mut self, text: &str) -> Value {
        self.socket
            .send(Message::Text(text.to_owned().into()))
            .await
            .unwrap();
        self.wait("an answer to raw text", |message| {
            message["type"] == "result"
        })
        .await
    }

    async fn error_code(&mut self, message: Value) -> String {
        let answer = self.command(message).await;
        assert_eq!(answer["success"], false, "{answer}");
        answer["error"]["code"].as_str().unwrap().to_owned()
    }

    /// The connection still answers.
    async fn still_usable(&mut self) {
        let id = self.send(json!({"type": "ping"})).await;
        let pong = self.answer(id).await;
        assert_eq!(pong["type"], "pong", "{pong}");
    }

    /// The next event of subscription `id` that `matches`.
    async fn event(&mut self, id: i64, what: &str, matches: impl Fn(&Value) -> bool) -> Value {
        self.wait(what, |message| {
            message["id"] == id && message["type"] == "event" && matches(&message["event"])
        })
        .await["event"]
            .clone()
    }
}

/// The first handshake answer to `auth`, and whether the server then closed.
async fn try_auth(address: &str, auth: Value) -> (Value, bool) {
    let mut socket = open(address).await;
    assert_eq!(read(&mut socket).await.unwrap()["type"], "auth_required");
    send(&mut socket, auth).await;
    let answer = read(&mut socket).await.unwrap();
    let closed = read(&mut socket).await.is_none();
    (answer, closed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handshake_and_every_bad_input() {
    let hub = Hub::start();
    let address = hub.address();
    let token = hub.token("test");

    // Bad, missing, and a message other than auth: auth_invalid, then closed.
    for auth in [
        json!({"type": "auth", "access_token": "sht_not_a_token"}),
        json!({"type": "auth"}),
        json!({"type": "ping", "id": 1}),
    ] {
        let (answer, closed) = try_auth(&address, auth.clone()).await;
        assert_eq!(answer["type"], "auth_invalid", "{auth} -> {answer}");
        assert!(answer["message"].is_string());
        assert!(closed, "closed after {auth}");
    }

    let mut client = Client::connect(&address, &token).await;
    client.still_usable().await;
    // Malformed JSON: invalid_format with id 0.
    let answer = client.raw("{not json").await;
    assert_eq!(answer["id"], 0);
    assert_eq!(answer["error"]["code"], "invalid_format");
    client.still_usable().await;
    // No id.
    let answer = client.raw(r#"{"type": "ping"}"#).await;
    assert_eq!(answer["error"]["code"], "invalid_format");
    client.still_usable().await;
    // An id that does not increase.
    let answer = client.raw(r#"{"id": 1, "type": "ping"}"#).await;
    assert_eq!(answer["error"]["code"], "id_reuse", "{answer}");
    client.still_usable().await;
    assert_eq!(
        client.error_code(json!({"type": "no_such_command"})).await,
        "unknown_command"
    );
    client.still_usable().await;
    // Wrong types.
    assert_eq!(
        client
            .error_code(json!({"type": "call_service", "service": "turn_on"}))
            .await,
        "invalid_format"
    );
    assert_eq!(
        client
            .error_code(json!({"type": "call_service", "domain": 7, "service": "turn_on"}))
            .await,
        "invalid_format"
    );
    assert_eq!(
        client
            .error_code(json!({"type": "unsubscribe_events", "subscription": "x"}))
            .await,
        "invalid_format"
    );
    client.still_usable().await;
    // Unknown service, subscription, group; a core event type.
    assert_eq!(
        client
            .error_code(json!({"type": "call_service", "domain": "light", "service": "no_such"}))
            .await,
        "not_found"
    );
    assert_eq!(
        client
            .error_code(json!({"type": "unsubscribe_events", "subscription": 999}))
            .await,
        "not_found"
    );
    assert_eq!(
        client
            .error_code(json!({"type": "sandbox/restart", "group": "no-such-group"}))
            .await,
        "not_found"
    );
    assert_eq!(
        client
            .error_code(json!({"type": "fire_event", "event_type": "state_changed"}))
            .await,
        "unauthorized"
    );
    client.still_usable().await;
    // The subscription limit.
    let mut refused = None;
    for _ in 0..300 {
        let answer = client.command(json!({"type": "subscribe_events"})).await;
        if answer["success"] == false {
            refused = Some(answer["error"]["code"].clone());
            break;
        }
    }
    assert_eq!(refused, Some(json!("not_allowed")));
    client.still_usable().await;
    // A message over the size limit closes that connection with a reason; others go on.
    let mut large = Client::connect(&address, &token).await;
    let blob = "x".repeat(2 << 20);
    let _ = large
        .socket
        .send(Message::Text(
            json!({"id": 1, "type": "ping", "blob": blob})
                .to_string()
                .into(),
        ))
        .await;
    assert!(
        read(&mut large.socket).await.is_none(),
        "closed after a too large message"
    );
    client.still_usable().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_on_a_sandboxed_demo() {
    let hub = Hub::start();
    hub.add_demo();
    let address = hub.address();
    let token = hub.token("test");
    let mut client = Client::connect(&address, &token).await;

    let states = client.ok(json!({"type": "get_states"})).await;
    let light = states
        .as_array()
        .unwrap()
        .iter()
        .find(|state| state["entity_id"].as_str().unwrap().starts_with("light."))
        .cloned()
        .expect("a demo light");
    let light_id = light["entity_id"].as_str().unwrap().to_owned();
    assert!(light["last_changed"].is_string() && light["context"]["id"].is_string());

    let config = client.ok(json!({"type": "get_config"})).await;
    assert_eq!(config["state"], "RUNNING");
    assert_eq!(config["unit_system"]["temperature"], "°C");
    assert!(
        config["components"]
            .as_array()
            .unwrap()
            .contains(&json!("light")),
        "{config}"
    );
    let services = client.ok(json!({"type": "get_services"})).await;
    assert!(
        services["light"]["turn_on"]["fields"].is_object(),
        "{services}"
    );
    assert_eq!(
        client
            .ok(json!({"type": "supported_features", "features": {"coalesce_messages": 1}}))
            .await,
        Value::Null
    );
    let entries = client.ok(json!({"type": "config_entries/get"})).await;
    assert_eq!(entries[0]["domain"], "demo");
    assert_eq!(entries[0]["state"], "loaded");
    let entities = client
        .ok(json!({"type": "config/entity_registry/list"}))
        .await;
    assert!(
        entities
            .as_array()
            .unwrap()
            .iter()
            .any(|entity| entity["entity_id"] == light_id.as_str())
    );
    let devices = client
        .ok(json!({"type": "config/device_registry/list"}))
        .await;
    assert!(!devices.as_array().unwrap().is_empty());
    let areas = client
        .ok(json!({"type": "config/area_registry/list"}))
        .await;
    assert!(areas.is_array());
    let groups = client.ok(json!({"type": "sandbox/groups"})).await;
    assert_eq!(groups[0]["name"], "built-in");

    // A second connection follows the entities: `a` first, then the call's `c` diff.
    let mut watcher = Client::connect(&address, &token).await;
    let entities_id = watcher.send(json!({"type": "subscribe_entities"})).await;
    assert_eq!(watcher.answer(entities_id).await["success"], true);
    let added = watcher.event(entities_id, "the first a", |_| true).await;
    assert_eq!(
        added["a"][light_id.as_str()]["s"],
        light["state"],
        "{added}"
    );
    let events_id = watcher
        .send(json!({"type": "subscribe_events", "event_type": "state_changed"}))
        .await;
    assert_eq!(watcher.answer(events_id).await["success"], true);

    let (service, wanted) = if light["state"] == "on" {
        ("turn_off", "off")
    } else {
        ("turn_on", "on")
    };
    let called = client
        .ok(json!({
            "type": "call_service", "domain": "light", "service": service,
            "target": {"entity_id": light_id},
        }))
        .await;
    assert!(called["context"]["id"].is_string(), "{called}");
    let changed = watcher
        .event(entities_id, "the light's c diff", |event| {
            event["c"][light_id.as_str()]["+"]["s"] == wanted
        })
        .await;
    assert!(changed["c"][light_id.as_str()]["+"]["lc"].is_f64());
    let event = watcher
        .event(events_id, "its state_changed", |event| {
            event["data"]["entity_id"] == light_id.as_str()
        })
        .await;
    assert_eq!(event["event_type"], "state_changed");
    assert_eq!(event["data"]["new_state"]["state"], wanted);
    assert!(event["time_fired"].is_string() && event["origin"] == "LOCAL");

    // fire_event reaches an event subscriber; unsubscribing stops it.
    let custom_id = watcher
        .send(json!({"type": "subscribe_events", "event_type": "ws_test_event"}))
        .await;
    assert_eq!(watcher.answer(custom_id).await["success"], true);
    client
        .ok(json!({"type": "fire_event", "event_type": "ws_test_event", "event_data": {"n": 1}}))
        .await;
    let fired = watcher.event(custom_id, "the fired event", |_| true).await;
    assert_eq!(fired["data"]["n"], 1);
    watcher
        .ok(json!({"type": "unsubscribe_events", "subscription": custom_id}))
        .await;
    client
        .ok(json!({"type": "fire_event", "event_type": "ws_test_event", "event_data": {"n": 2}}))
        .await;
    watcher.still_usable().await;
    assert!(
        !watcher
            .pending
            .iter()
            .any(|message| message["id"] == custom_id && message["type"] == "event"),
        "no event after unsubscribing: {:?}",
        watcher.pending
    );

    // An unknown entity is no error (as Home Assistant: nothing to do).
    let answer = client
        .command(json!({
            "type": "call_service", "domain": "light", "service": "turn_on",
            "target": {"entity_id": "light.no_such_light"},
        }))
        .await;
    assert_eq!(answer["type"], "result", "{answer}");
    client.still_usable().await;

    // The group controls.
    let restarted = client
        .ok(json!({"type": "sandbox/restart", "group": "built-in"}))
        .await;
    assert_eq!(restarted["name"], "built-in");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_sandbox_shows_as_unavailable_then_comes_back() {
    let hub = Hub::start();
    hub.add_demo();
    let address = hub.address();
    let mut watcher = Client::connect(&address, &hub.token("test")).await;
    let states = watcher.ok(json!({"type": "get_states"})).await;
    let light = states
        .as_array()
        .unwrap()
        .iter()
        .find(|state| state["entity_id"].as_str().unwrap().starts_with("light."))
        .cloned()
        .unwrap();
    let light_id = light["entity_id"].as_str().unwrap().to_owned();
    let id = watcher
        .send(json!({"type": "subscribe_entities", "entity_ids": [light_id]}))
        .await;
    assert_eq!(watcher.answer(id).await["success"], true);
    let added = watcher.event(id, "the first a", |_| true).await;
    assert_eq!(
        added["a"].as_object().unwrap().len(),
        1,
        "only the light: {added}"
    );

    let pid = hub.group("built-in")["pid"].as_u64().unwrap();
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    watcher
        .event(id, "the light unavailable", |event| {
            event["c"][light_id.as_str()]["+"]["s"] == "unavailable"
        })
        .await;
    // Back after the respawn: a change out of `unavailable`, or (as the respawned sandbox
    // registers its entities again) a removal and a fresh `a`.
    let back = watcher
        .event(id, "the light back", |event| {
            event["c"][light_id.as_str()]["+"]["s"]
                .as_str()
                .is_some_and(|state| state != "unavailable")
                || event["a"][light_id.as_str()]["s"]
                    .as_str()
                    .is_some_and(|state| state != "unavailable")
        })
        .await;
    let state = if back["c"].is_object() {
        &back["c"][light_id.as_str()]["+"]["s"]
    } else {
        &back["a"][light_id.as_str()]["s"]
    };
    assert_eq!(*state, light["state"], "{back}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_read_is_disconnected_and_others_are_still_served() {
    let hub = Hub::start();
    hub.add_demo();
    let address = hub.address();
    let token = hub.token("test");
    let mut driver = Client::connect(&address, &token).await;
    let states = driver.ok(json!({"type": "get_states"})).await;
    let light_id = states
        .as_array()
        .unwrap()
        .iter()
        .map(|state| state["entity_id"].as_str().unwrap().to_owned())
        .find(|id| id.starts_with("light."))
        .unwrap();

    // A client with a tiny receive buffer subscribes many times and never reads again.
    let tcp = tokio::net::TcpSocket::new_v4().unwrap();
    tcp.set_recv_buffer_size(4096).unwrap();
    let stream = tcp.connect(address.parse().unwrap()).await.unwrap();
    let (socket, _) = tokio_tungstenite::client_async(
        format!("ws://{address}/api/websocket"),
        MaybeTlsStream::Plain(stream),
    )
    .await
    .unwrap();
    let mut slow = Client {
        socket,
        next_id: 1,
        pending: VecDeque::new(),
    };
    assert_eq!(
        read(&mut slow.socket).await.unwrap()["type"],
        "auth_required"
    );
    send(
        &mut slow.socket,
        json!({"type": "auth", "access_token": token}),
    )
    .await;
    assert_eq!(read(&mut slow.socket).await.unwrap()["type"], "auth_ok");
    slow.send(json!({"type": "subscribe_entities"})).await;
    for _ in 0..100 {
        slow.send(json!({"type": "subscribe_events"})).await;
    }

    // Change the light fast from another connection until the hub gives up on the reader.
    let hub_pid = hub.status().0["pid"].as_u64().unwrap();
    let resident_before = resident_bytes(hub_pid);
    let started = Instant::now();
    let mut calls = 0u64;
    while !hub.log().contains("slow_consumer") {
        assert!(
            started.elapsed() < HANG_GUARD,
            "the slow client was never disconnected; the hub's log:\n{}",
            hub.log()
        );
        let mut ids = Vec::new();
        for _ in 0..20 {
            calls += 1;
            ids.push(
                driver
                    .send(json!({
                        "type": "call_service", "domain": "light", "service": "turn_on",
                        "target": {"entity_id": light_id},
                        "service_data": {"brightness": 1 + calls % 250},
                    }))
                    .await,
            );
        }
        for id in ids {
            assert_eq!(driver.answer(id).await["success"], true);
        }
        driver.pending.clear();
    }
    // What main queued for the client is bounded (`SEND_QUEUE_BYTES`, 16 MiB), so the hub's
    // memory grew by at most that and the allocator's slack, whatever the client did.
    let grown = resident_bytes(hub_pid).saturating_sub(resident_before);
    assert!(
        grown < 64 << 20,
        "the hub grew by {grown} bytes while the client did not read"
    );
    // The other client is still served.
    driver.still_usable().await;
    let states_again = driver.ok(json!({"type": "get_states"})).await;
    assert!(states_again.as_array().unwrap().len() >= 37);
    // The slow client finds its connection closed after what was already on the way: less
    // than everything produced for it (about 100 events per call).
    let mut received = 0u64;
    while read(&mut slow.socket).await.is_some() {
        received += 1;
    }
    assert!(
        received < calls * 100,
        "received {received} of about {} messages",
        calls * 100
    );
}

/// A process's resident memory in bytes (`/proc/<pid>/statm`, in pages).
fn resident_bytes(pid: u64) -> u64 {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .unwrap()
        .unwrap();
    pages * page as u64
}
