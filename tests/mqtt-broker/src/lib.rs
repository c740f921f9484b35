//! A real MQTT broker for the tests, as a process of its own: started on a free port of
//! 127.0.0.1, killed (SIGKILL) and started again on the same port, gone when dropped.
//!
//! Two kinds ([`BrokerKind`]): the embedded one (rumqttd, built into this package's
//! `sandbox-mqtt-broker` binary, so `cargo test` alone suffices) and Mosquitto (Debian's
//! `mosquitto` package), chosen with `SANDBOX_TEST_MQTT_BROKER` ([`BrokerKind::from_env`]) so
//! CI can run the same tests against both. [`raw`] is a byte-level MQTT 3.1.1 client for the
//! readiness check and for tests that must not rely on the client under test. [`Device`] is
//! a device's client (rumqttc) that records what it receives.
//!
//! ```no_run
//! use sandbox_mqtt_broker::{Broker, BrokerKind};
//! let mut broker = Broker::start(BrokerKind::from_env()?)?;
//! // ... connect to broker.host():broker.port() ...
//! broker.stop(); // SIGKILL: clients see the connection drop
//! broker.start_again()?; // the same port again
//! # Ok::<(), sandbox_mqtt_broker::BrokerError>(())
//! ```

mod device;
mod embedded;
mod mosquitto;
mod process;
pub mod raw;

use std::io;
use std::time::Duration;

pub use device::{DEVICE_WAIT, Device, MAX_RECORDED_MESSAGES};
pub use embedded::{
    CONNECTION_TIMEOUT_MS, MAX_CONNECTIONS, MAX_INFLIGHT_COUNT, MAX_OUTGOING_PACKETS,
    MAX_PAYLOAD_BYTES, MAX_SEGMENT_BYTES, MAX_SEGMENT_COUNT, ServeArgs, embedded_broker_binary,
    embedded_broker_command, serve, serve_arguments,
};
pub use process::Broker;

/// The environment variable choosing the broker the tests run against.
pub const BROKER_ENV: &str = "SANDBOX_TEST_MQTT_BROKER";

/// In a broker command's arguments, replaced by the broker's port.
pub const PORT_PLACEHOLDER: &str = "{port}";

/// How long a broker may take from its spawn to answering a CONNECT.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// How long a (re)started broker that exits at once, as one does when its port is still
/// taken, is started again before that is an error.
pub const BIND_RETRY: Duration = Duration::from_secs(5);

/// Which broker program runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BrokerKind {
    /// rumqttd, from this package's `sandbox-mqtt-broker` binary (or any binary calling
    /// [`serve`]).
    Embedded,
    /// The `mosquitto` program.
    Mosquitto,
}

impl BrokerKind {
    /// The kind [`BROKER_ENV`] names: `embedded` (also when unset or empty) or `mosquitto`.
    pub fn from_env() -> Result<Self, BrokerError> {
        match std::env::var(BROKER_ENV) {
            Ok(value) => Self::parse(&value),
            Err(std::env::VarError::NotPresent) => Ok(Self::Embedded),
            Err(std::env::VarError::NotUnicode(value)) => Err(BrokerError::UnknownKind {
                value: value.to_string_lossy().into_owned(),
            }),
        }
    }

    /// The kind `value` names (`embedded`, empty, or `mosquitto`).
    pub fn parse(value: &str) -> Result<Self, BrokerError> {
        match value.trim() {
            "" | "embedded" => Ok(Self::Embedded),
            "mosquitto" => Ok(Self::Mosquitto),
            _ => Err(BrokerError::UnknownKind {
                value: value.to_owned(),
            }),
        }
    }

    /// `embedded` or `mosquitto`, as [`BROKER_ENV`] spells it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Embedded => "embedded",
            Self::Mosquitto => "mosquitto",
        }
    }
}

impl std::fmt::Display for BrokerKind {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.name())
    }
}

/// How a broker is set up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BrokerOptions {
    /// Users allowed in, as (name, password); empty: anyone may connect without credentials.
    /// The readiness check logs in as the first.
    pub users: Vec<(String, String)>,
}

/// Why a broker could not be had.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// [`BROKER_ENV`] names no known broker.
    #[error(
        "{BROKER_ENV}={value:?} names no broker: accepted values are `embedded` (the default) and `mosquitto`"
    )]
    UnknownKind {
        /// What it said.
        value: String,
    },
    /// Cargo could not build the embedded broker's binary.
    #[error("cannot build the `sandbox-mqtt-broker` binary: {0}")]
    Build(String),
    /// Mosquitto is not installed.
    #[error(
        "mosquitto is not installed (looked for `mosquitto` and `mosquitto_passwd` on PATH and in /usr/sbin, /usr/local/sbin, /usr/bin): install it with `apt-get install -y mosquitto`"
    )]
    MosquittoMissing,
    /// `mosquitto_passwd` failed.
    #[error("cannot make the mosquitto password file: {0}")]
    PasswordFile(String),
    /// No free port could be had.
    #[error("cannot find a free port on 127.0.0.1: {0}")]
    NoFreePort(#[source] io::Error),
    /// A file or directory of the broker could not be made.
    #[error("cannot write {what}: {source}")]
    Io {
        /// Which.
        what: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The command to start a broker is empty.
    #[error("the broker command is empty")]
    EmptyCommand,
    /// The broker's program could not be spawned.
    #[error("cannot spawn `{program}`: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The broker did not answer a CONNECT in time, or kept exiting.
    #[error(
        "the {kind} broker on 127.0.0.1:{port} did not accept an MQTT connection within {waited:?}: {why}; its stderr ends with:\n{stderr_tail}"
    )]
    NotReady {
        /// Which broker.
        kind: BrokerKind,
        /// Its port.
        port: u16,
        /// How long it was given.
        waited: Duration,
        /// What was seen last (its exit status, or the last connection attempt's error).
        why: String,
        /// The last lines it wrote on stderr.
        stderr_tail: String,
    },
    /// [`serve`]: the port is taken.
    #[error("port {port} on 127.0.0.1 is taken: {source}")]
    PortTaken {
        /// The port.
        port: u16,
        /// The bind's error.
        #[source]
        source: io::Error,
    },
    /// [`serve`]: rumqttd refused to start.
    #[error("the broker cannot start: {0}")]
    Serve(String),
    /// [`serve`]: the server stopped (its bind failed, or it crashed).
    #[error("the broker stopped serving 127.0.0.1:{port} (the port was taken, or it failed)")]
    ServerStopped {
        /// The port.
        port: u16,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_from_their_names_and_anything_else_is_refused_naming_the_accepted_values() {
        assert_eq!(BrokerKind::parse("").ok(), Some(BrokerKind::Embedded));
        for kind in [BrokerKind::Embedded, BrokerKind::Mosquitto] {
            assert_eq!(BrokerKind::parse(kind.name()).ok(), Some(kind));
        }
        let error = BrokerKind::parse("nanomq").expect_err("an unknown broker");
        let message = error.to_string();
        assert!(message.contains("\"nanomq\""), "{message}");
        assert!(message.contains("`embedded`"), "{message}");
        assert!(message.contains("`mosquitto`"), "{message}");
        assert!(message.contains(BROKER_ENV), "{message}");
    }
}
