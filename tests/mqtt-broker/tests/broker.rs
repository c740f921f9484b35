//! The test broker as the mqtt integration's tests use it, against the broker
//! `SANDBOX_TEST_MQTT_BROKER` names (the embedded one by default, Mosquitto in CI's second
//! run): retained messages, SIGKILL and restart on the same port, users, and nothing left
//! behind.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

use sandbox_mqtt_broker::raw::{ConnectOptions, Message, RawClient};
use sandbox_mqtt_broker::{Broker, BrokerError, BrokerKind, BrokerOptions, PORT_PLACEHOLDER};

/// Hang guard for anything the broker should do at once.
const WAIT: Duration = Duration::from_secs(20);
/// How long a message that should not come is waited for (a weak check on top of the
/// ordered ones; never a speed).
const QUIET: Duration = Duration::from_millis(300);

fn kind() -> BrokerKind {
    BrokerKind::from_env().unwrap_or_else(|error| panic!("{error}"))
}

fn start() -> Broker {
    let kind = kind();
    Broker::start(kind).unwrap_or_else(|error| panic!("the {kind} broker starts: {error}"))
}

fn connect(broker: &Broker, client_id: &str) -> RawClient {
    RawClient::connect(broker.address(), &ConnectOptions::new(client_id), WAIT)
        .unwrap_or_else(|error| panic!("{client_id} connects: {error}"))
}

fn subscribed(broker: &Broker, client_id: &str, filter: &str, qos: u8) -> RawClient {
    let mut client = connect(broker, client_id);
    client.subscribe(filter, qos, WAIT).expect("subscribed");
    client
}

fn next(client: &mut RawClient) -> Message {
    client.next_message(WAIT).expect("a message")
}

fn pid_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Waits until the unreaped child `pid` has died (a zombie): a signal takes effect after
/// `kill` returns.
fn wait_until_dead(pid: u32) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.chars().next());
        // A zombie leader whose other threads are still exiting cannot be reaped yet: the
        // process is dead once its last thread is.
        let threads = std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, Iterator::count);
        if state.is_none() || (state == Some('Z') && threads <= 1) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{pid} still alive");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_retained_message_reaches_a_later_subscriber_and_an_empty_retained_payload_removes_it() {
    let broker = start();
    let mut publisher = connect(&broker, "publisher");
    // Nobody subscribes yet: the broker keeps it without turning the publisher away.
    publisher
        .publish_acknowledged("homeassistant/sensor/a/config", b"{\"a\":1}", true, WAIT)
        .expect("retained a");
    publisher
        .ping(WAIT)
        .expect("the publisher is still connected");

    let mut first = subscribed(&broker, "first", "homeassistant/#", 0);
    let retained = next(&mut first);
    assert_eq!(retained.topic, "homeassistant/sensor/a/config");
    assert_eq!(retained.payload, b"{\"a\":1}");
    assert!(retained.retain, "sent on subscribing, so flagged retained");

    publisher
        .publish_acknowledged("homeassistant/sensor/a/config", b"", true, WAIT)
        .expect("a's removal");
    let removal = next(&mut first);
    assert_eq!(removal.topic, "homeassistant/sensor/a/config");
    assert!(removal.payload.is_empty(), "{removal:?}");
    publisher
        .publish_acknowledged("homeassistant/sensor/b/config", b"{\"b\":1}", true, WAIT)
        .expect("retained b");
    let live = next(&mut first);
    assert_eq!(live.topic, "homeassistant/sensor/b/config");
    assert!(!live.retain, "a live delivery is not flagged retained");

    let mut second = subscribed(&broker, "second", "homeassistant/#", 0);
    let retained = next(&mut second);
    assert_eq!(retained.topic, "homeassistant/sensor/b/config");
    assert!(retained.retain);
    assert_eq!(
        second.try_next_message(QUIET).expect("still connected"),
        None,
        "a's retained message is gone"
    );
}

#[test]
fn a_thousand_retained_configs_and_a_stream_of_states_all_reach_qos_0_subscribers() {
    const ENTITIES: usize = 1000;
    const STATES: usize = 5000;
    let broker = start();
    let mut publisher = connect(&broker, "devices");
    for entity in 0..ENTITIES - 1 {
        let config = format!(
            "{{\"name\":\"sensor {entity}\",\"padding\":\"{:0>200}\"}}",
            ""
        );
        publisher
            .publish(
                &format!("homeassistant/sensor/e{entity}/config"),
                config.as_bytes(),
                true,
            )
            .expect("a config");
    }
    // Acknowledged after every earlier one from the same client is handled.
    publisher
        .publish_acknowledged(
            &format!("homeassistant/sensor/e{}/config", ENTITIES - 1),
            b"{}",
            true,
            WAIT,
        )
        .expect("the last config");

    let mut discovery = subscribed(&broker, "discovery", "homeassistant/+/+/config", 0);
    let mut topics = BTreeSet::new();
    while topics.len() < ENTITIES {
        let message = next(&mut discovery);
        assert!(message.retain, "{message:?}");
        topics.insert(message.topic);
    }

    let mut states = subscribed(&broker, "states", "sandbox/#", 0);
    for index in 0..STATES {
        publisher
            .publish(
                &format!("sandbox/e{}/state", index % ENTITIES),
                index.to_string().as_bytes(),
                false,
            )
            .expect("a state");
    }
    for index in 0..STATES {
        let message = next(&mut states);
        assert_eq!(
            message.topic,
            format!("sandbox/e{}/state", index % ENTITIES)
        );
        assert_eq!(
            message.payload,
            index.to_string().as_bytes(),
            "in order, none lost"
        );
    }
}

#[test]
fn a_qos_1_subscription_receives_retained_messages_up_to_the_brokers_in_flight_limit() {
    const RETAINED: usize = 300;
    let broker = start();
    let mut publisher = connect(&broker, "devices");
    for entity in 0..RETAINED {
        publisher
            .publish_acknowledged(&format!("limit/e{entity}/config"), b"{}", true, WAIT)
            .expect("a config");
    }
    let mut subscriber = subscribed(&broker, "discovery", "limit/#", 1);
    // rumqttd sends a new subscription at most its (fixed) 100 in-flight QoS 1 messages of
    // the retained ones and drops the rest; Mosquitto queues them all.
    let expected = match broker.kind() {
        BrokerKind::Embedded => 100,
        BrokerKind::Mosquitto => RETAINED,
    };
    let mut topics = BTreeSet::new();
    while topics.len() < expected {
        let message = next(&mut subscriber);
        assert_eq!(message.qos, 1);
        topics.insert(message.topic);
    }
    assert_eq!(
        subscriber.try_next_message(QUIET).expect("still connected"),
        None
    );
}

#[test]
fn stop_kills_the_broker_and_restart_serves_the_same_port_again_without_the_old_state() {
    let mut broker = start();
    let port = broker.port();
    let first_pid = broker.pid().expect("running");
    let mut publisher = connect(&broker, "publisher");
    publisher
        .publish_acknowledged("homeassistant/sensor/a/config", b"{}", true, WAIT)
        .expect("retained");
    let mut subscriber = subscribed(&broker, "subscriber", "sandbox/#", 0);

    broker.stop();
    assert_eq!(broker.pid(), None);
    assert!(!pid_alive(first_pid), "killed and reaped");
    let dropped = subscriber
        .next_message(WAIT)
        .expect_err("the connection drops with the broker");
    assert!(dropped.is_closed(), "{dropped:?}");
    let refused = RawClient::connect(broker.address(), &ConnectOptions::new("late"), WAIT)
        .expect_err("nothing listens on a stopped broker's port");
    assert!(!refused.is_refusal(), "no broker to refuse: {refused:?}");

    broker.restart().expect("started again");
    assert_eq!(broker.port(), port);
    assert_ne!(broker.pid(), Some(first_pid));
    let mut subscriber = subscribed(&broker, "subscriber", "#", 0);
    let mut publisher = connect(&broker, "publisher");
    publisher
        .publish_acknowledged("sandbox/e1/state", b"on", false, WAIT)
        .expect("a state");
    let message = next(&mut subscriber);
    assert_eq!(
        (message.topic.as_str(), message.payload.as_slice()),
        ("sandbox/e1/state", b"on".as_slice()),
        "the restarted broker forgot the retained config (no persistence)"
    );
}

#[test]
fn start_again_leaves_a_running_broker_alone_and_revives_a_crashed_one() {
    let mut broker = start();
    let pid = broker.pid().expect("running");
    broker.start_again().expect("a no-op");
    assert_eq!(broker.pid(), Some(pid));

    let killed = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    wait_until_dead(pid);
    broker.start_again().expect("started again");
    assert_ne!(broker.pid(), Some(pid));
    connect(&broker, "after").ping(WAIT).expect("served");
}

#[test]
fn with_a_user_a_wrong_password_or_none_is_refused_and_the_right_one_accepted() {
    let kind = kind();
    let broker = Broker::start_with(
        kind,
        BrokerOptions {
            users: vec![
                ("hub".to_owned(), "s3cret:with colon".to_owned()),
                ("device".to_owned(), "other".to_owned()),
            ],
        },
    )
    .unwrap_or_else(|error| panic!("the {kind} broker starts with users: {error}"));
    for (what, options) in [
        (
            "a wrong password",
            ConnectOptions::new("wrong").with_credentials("hub", "nope"),
        ),
        (
            "another user's password",
            ConnectOptions::new("swapped").with_credentials("hub", "other"),
        ),
        ("no credentials", ConnectOptions::new("anonymous")),
    ] {
        // rumqttd closes the connection without a CONNACK, Mosquitto answers CONNACK 5.
        let error = RawClient::connect(broker.address(), &options, WAIT)
            .expect_err(&format!("{what} is refused"));
        assert!(error.is_refusal(), "{what}: {error:?}");
    }
    for (user, password) in [("hub", "s3cret:with colon"), ("device", "other")] {
        RawClient::connect(
            broker.address(),
            &ConnectOptions::new(user).with_credentials(user, password),
            WAIT,
        )
        .unwrap_or_else(|error| panic!("{user} is let in: {error}"))
        .ping(WAIT)
        .expect("served");
    }
}

#[test]
fn dropping_the_broker_leaves_no_process_and_no_directory() {
    let mut broker = start();
    broker.restart().expect("a second process");
    let pid = broker.pid().expect("running");
    let dir = broker.private_dir().to_owned();
    let address = broker.address();
    assert!(dir.exists());
    drop(broker);
    assert!(!pid_alive(pid), "killed and reaped");
    assert!(!dir.exists(), "{}", dir.display());
    assert!(RawClient::connect(address, &ConnectOptions::new("late"), WAIT).is_err());
}

#[test]
fn a_broker_that_keeps_exiting_is_an_error_quoting_its_stderr() {
    let command: Vec<OsString> = [
        "sh",
        "-c",
        "echo cannot listen on $0 >&2; exit 3",
        PORT_PLACEHOLDER,
    ]
    .into_iter()
    .map(OsString::from)
    .collect();
    let error = Broker::start_command(BrokerKind::Embedded, command, &BrokerOptions::default())
        .expect_err("never ready");
    let BrokerError::NotReady {
        port,
        ref why,
        ref stderr_tail,
        ..
    } = error
    else {
        panic!("not ready: {error:?}")
    };
    assert!(why.contains("exit status: 3"), "{why}");
    assert_eq!(stderr_tail, &format!("cannot listen on {port}"), "{error}");
}

#[test]
fn the_embedded_binary_exits_non_zero_naming_a_taken_port() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("a port");
    let port = taken.local_addr().expect("its address").port();
    let output = Command::new(env!("CARGO_BIN_EXE_sandbox-mqtt-broker"))
        .args(["--port", &port.to_string()])
        .output()
        .expect("the binary runs");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("port {port} on 127.0.0.1 is taken")),
        "{stderr}"
    );
}

#[test]
fn a_command_running_serve_under_another_name_is_a_broker_too() {
    // How the compat sweep runs the embedded broker from its own executable: any program
    // whose arguments end with `serve_arguments`.
    let options = BrokerOptions {
        users: vec![("hub".to_owned(), "secret".to_owned())],
    };
    let mut command = vec![OsString::from(env!("CARGO_BIN_EXE_sandbox-mqtt-broker"))];
    command.extend(sandbox_mqtt_broker::serve_arguments(&options));
    let broker = Broker::start_command(BrokerKind::Embedded, command, &options)
        .expect("started from the command");
    RawClient::connect(
        broker.address(),
        &ConnectOptions::new("hub").with_credentials("hub", "secret"),
        WAIT,
    )
    .expect("let in")
    .ping(WAIT)
    .expect("served");
}
