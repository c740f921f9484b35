//! The embedded broker: rumqttd configured in code for tests, served by the
//! `sandbox-mqtt-broker` binary or by any binary that calls [`serve`] (the compat sweep runs it
//! from its own executable), and the command that starts it.
//!
//! What rumqttd 0.20 does that a test must know (read in its router):
//! - A retained PUBLISH is kept per topic and sent once to each new matching subscription with
//!   the retain flag set; a PUBLISH with an empty payload removes the topic's retained message
//!   (even one published without the retain flag) and is still delivered to subscribers.
//! - On subscribing, the retained messages sent are cut to the subscription's free slots:
//!   [`MAX_OUTGOING_PACKETS`] for QoS 0, but a constant 100 in-flight messages for QoS 1 and 2
//!   (not configurable), the rest silently dropped. A subscriber expecting more than 100
//!   retained messages on one filter must subscribe at QoS 0.
//! - Every delivery has the subscription's QoS, not the lower of the publish's and the
//!   subscription's.
//! - Bad credentials close the connection without a CONNACK; a keep-alive of 0 is refused the
//!   same way.
//! - A publish nobody subscribes to is dropped (no error, no disconnection).

use std::collections::HashMap;
use std::ffi::OsString;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use rumqttd::{Config, ConnectionSettings, RouterConfig, ServerSettings};

use crate::{BrokerError, BrokerOptions, PORT_PLACEHOLDER};

/// The package and name of the embedded broker's binary.
const PACKAGE: &str = "sandbox-mqtt-broker";
const BINARY: &str = "sandbox-mqtt-broker";

/// Connections at once: above the 1,000 entities of the load test's devices, each with a
/// client of its own, plus the integration and the test's own clients.
pub const MAX_CONNECTIONS: usize = 4096;
/// The largest payload accepted (1 MiB): above what a hub hands its subscribers (256 KiB), so
/// tests can send it more than it takes.
pub const MAX_PAYLOAD_BYTES: usize = 1024 * 1024;
/// Packets read from one connection per batch, and rumqttd's bound on a connection's queued
/// incoming packets.
pub const MAX_INFLIGHT_COUNT: usize = 1024;
/// How long a new TCP connection may take to send its CONNECT (the most rumqttd's `u16`
/// milliseconds can say: a loaded test machine is slow, and nothing here is hostile).
pub const CONNECTION_TIMEOUT_MS: u16 = u16::MAX;
/// How many messages the router hands a QoS 0 subscription at once, which is also how many
/// retained messages one new QoS 0 subscription receives: far above the 1,000 retained
/// discovery configurations of the load test.
pub const MAX_OUTGOING_PACKETS: u64 = 100_000;
/// The size of one segment of a filter's in-memory log, and how many are kept: a subscriber
/// that falls further behind than `MAX_SEGMENT_BYTES * MAX_SEGMENT_COUNT` (64 MiB) of messages
/// on one filter loses the oldest ones.
pub const MAX_SEGMENT_BYTES: usize = 8 * 1024 * 1024;
/// See [`MAX_SEGMENT_BYTES`].
pub const MAX_SEGMENT_COUNT: usize = 8;

/// The command line of the embedded broker, for the `sandbox-mqtt-broker` binary or for
/// another binary's (hidden) subcommand that flattens it and calls [`serve`].
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// The port to listen on, on 127.0.0.1.
    #[arg(long)]
    pub port: u16,
    /// A user allowed in, as NAME:PASSWORD (repeatable); without any, anyone may connect.
    #[arg(long = "user", value_name = "NAME:PASSWORD", value_parser = parse_user)]
    pub users: Vec<(String, String)>,
}

/// `NAME:PASSWORD`, split at its first colon (a password may contain colons).
fn parse_user(text: &str) -> Result<(String, String), String> {
    match text.split_once(':') {
        Some((name, password)) if !name.is_empty() => Ok((name.to_owned(), password.to_owned())),
        _ => Err(format!("a user is NAME:PASSWORD, not {text:?}")),
    }
}

/// The arguments [`ServeArgs`] parses for `options`, with [`PORT_PLACEHOLDER`] for the port:
/// what follows the program (and subcommand) in a command given to
/// [`crate::Broker::start_command`].
pub fn serve_arguments(options: &BrokerOptions) -> Vec<OsString> {
    let mut arguments: Vec<OsString> = vec!["--port".into(), PORT_PLACEHOLDER.into()];
    for (name, password) in &options.users {
        arguments.push("--user".into());
        arguments.push(format!("{name}:{password}").into());
    }
    arguments
}

/// The command that starts the embedded broker with `options`: the `sandbox-mqtt-broker`
/// binary (built by cargo now if it is not fresh) and [`serve_arguments`].
pub fn embedded_broker_command(options: &BrokerOptions) -> Result<Vec<OsString>, BrokerError> {
    let mut command = vec![embedded_broker_binary()?.into_os_string()];
    command.extend(serve_arguments(options));
    Ok(command)
}

/// The `sandbox-mqtt-broker` binary's path, built by cargo now if it is not fresh.
///
/// A binary of this package has no `CARGO_BIN_EXE_*` variable in another package's tests, and
/// `cargo test -p OTHER` alone would not build it, so cargo is asked to (a no-op when it is
/// fresh), with the profile this code was built with and the same target directory; the path
/// is taken from cargo's own report, once per process.
pub fn embedded_broker_binary() -> Result<PathBuf, BrokerError> {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    static BUILDING: Mutex<()> = Mutex::new(());
    if let Some(path) = BUILT.get() {
        return Ok(path.clone());
    }
    // Held across the build: two tests of one process asking at once build it once.
    let _building = BUILDING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(path) = BUILT.get() {
        return Ok(path.clone());
    }
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../Cargo.toml")
        .canonicalize()
        .map_err(|source| BrokerError::Io {
            what: "the workspace manifest".into(),
            source,
        })?;
    let run = escargot::CargoBuild::new()
        .manifest_path(manifest)
        .package(PACKAGE)
        .bin(BINARY)
        .current_release()
        .run()
        .map_err(|error| BrokerError::Build(error.to_string()))?;
    Ok(BUILT.get_or_init(|| run.path().to_owned()).clone())
}

/// Serves MQTT 3.1.1 on 127.0.0.1:`port` until the process ends; with `users`, only they may
/// connect. Blocks; returns only with an error: the port is taken, or the server stopped.
///
/// rumqttd logs through `tracing`; this installs no subscriber (the binary installs one).
pub fn serve(port: u16, users: &[(String, String)]) -> Result<(), BrokerError> {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    // rumqttd only logs a failed bind and then returns as though it had served: try the port
    // first, so a taken one is a clear error. (rumqttd binds with SO_REUSEADDR like this, so
    // connections of a killed predecessor in TIME_WAIT do not count as taking it.)
    drop(TcpListener::bind(address).map_err(|source| BrokerError::PortTaken { port, source })?);
    let mut broker = rumqttd::Broker::new(config(address, users));
    broker
        .start()
        .map_err(|error| BrokerError::Serve(error.to_string()))?;
    // `start` returns only when its server thread ended, which is a bind that failed after
    // all (someone took the port meanwhile) or a crash.
    Err(BrokerError::ServerStopped { port })
}

/// The broker's configuration: one MQTT 3.1.1 server on `address`, sized for the load test
/// (see the constants), no console, metrics, cluster or bridge.
fn config(address: SocketAddr, users: &[(String, String)]) -> Config {
    let connections = ConnectionSettings {
        connection_timeout_ms: CONNECTION_TIMEOUT_MS,
        max_payload_size: MAX_PAYLOAD_BYTES,
        max_inflight_count: MAX_INFLIGHT_COUNT,
        auth: (!users.is_empty()).then(|| users.iter().cloned().collect::<HashMap<_, _>>()),
        external_auth: None,
        dynamic_filters: false,
    };
    let server = ServerSettings {
        name: format!("v4-{address}"),
        listen: address,
        tls: None,
        next_connection_delay_ms: 0,
        connections,
    };
    Config {
        id: 0,
        router: RouterConfig {
            max_connections: MAX_CONNECTIONS,
            max_outgoing_packet_count: MAX_OUTGOING_PACKETS,
            max_segment_size: MAX_SEGMENT_BYTES,
            max_segment_count: MAX_SEGMENT_COUNT,
            ..RouterConfig::default()
        },
        v4: Some(HashMap::from([("1".to_owned(), server)])),
        ..Config::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_is_split_at_its_first_colon() {
        assert_eq!(
            parse_user("hub:se:cret"),
            Ok(("hub".to_owned(), "se:cret".to_owned()))
        );
        assert_eq!(parse_user("hub:"), Ok(("hub".to_owned(), String::new())));
        assert!(parse_user("hub").is_err());
        assert!(parse_user(":secret").is_err());
    }

    #[test]
    fn the_arguments_for_options_parse_back_into_them() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Command {
            #[command(flatten)]
            serve: ServeArgs,
        }
        let options = BrokerOptions {
            users: vec![("hub".into(), "a:b".into()), ("device".into(), "c".into())],
        };
        let arguments = serve_arguments(&options).into_iter().map(|argument| {
            if argument == PORT_PLACEHOLDER {
                "1883".into()
            } else {
                argument
            }
        });
        let parsed = Command::try_parse_from(std::iter::once(OsString::from("x")).chain(arguments))
            .expect("the arguments parse");
        assert_eq!(parsed.serve.port, 1883);
        assert_eq!(parsed.serve.users, options.users);
    }
}
