//! The MQTT side of a scenario: the run's own broker (a real process on a free port, stopped and
//! started again by steps) and a device client that publishes what devices publish and records
//! what the hub publishes.

use std::ffi::OsString;
use std::sync::Arc;

use parking_lot::Mutex;
use sandbox_mqtt_broker::{Broker, BrokerKind, BrokerOptions, Device};
use serde::Deserialize;

/// How a scenario's broker is started.
#[derive(Debug, Clone)]
pub enum BrokerLauncher {
    /// A kind of the broker package (its embedded broker is built by cargo when needed).
    Kind(BrokerKind),
    /// A program (and subcommand) running the embedded broker, e.g. the sweep's own hidden
    /// subcommand: [`sandbox_mqtt_broker::serve_arguments`] (port, users) are added.
    Command(Vec<OsString>),
}

impl BrokerLauncher {
    /// The broker the environment asks for ([`sandbox_mqtt_broker::BROKER_ENV`]), or `embedded`.
    pub fn from_env_or(embedded: Vec<OsString>) -> Result<Self, sandbox_mqtt_broker::BrokerError> {
        Ok(match BrokerKind::from_env()? {
            BrokerKind::Mosquitto => Self::Kind(BrokerKind::Mosquitto),
            BrokerKind::Embedded => Self::Command(embedded),
        })
    }

    fn start(&self, options: &BrokerOptions) -> Result<Broker, sandbox_mqtt_broker::BrokerError> {
        match self {
            Self::Kind(kind) => Broker::start_with(*kind, options.clone()),
            Self::Command(command) => {
                let mut command = command.clone();
                command.extend(sandbox_mqtt_broker::serve_arguments(options));
                Broker::start_command(BrokerKind::Embedded, command, options)
            }
        }
    }
}

/// A scenario's broker.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerSettings {
    /// Users allowed in, as `[name, password]`; none: anyone may connect.
    #[serde(default)]
    pub users: Vec<(String, String)>,
}

/// The run's broker and device.
pub(crate) struct RunBroker {
    broker: Arc<Mutex<Broker>>,
    device: Device,
}

impl RunBroker {
    /// Starts the broker and the device client.
    pub(crate) async fn start(
        launcher: &BrokerLauncher,
        settings: &BrokerSettings,
    ) -> Result<Self, String> {
        let options = BrokerOptions {
            users: settings.users.clone(),
        };
        let launcher = launcher.clone();
        let started = tokio::task::spawn_blocking(move || launcher.start(&options))
            .await
            .map_err(|error| error.to_string())?
            .map_err(|error| error.to_string())?;
        let port = started.port();
        Ok(Self {
            broker: Arc::new(Mutex::new(started)),
            device: Device::start("127.0.0.1", port, settings.users.first().cloned(), "#"),
        })
    }

    /// Its port.
    pub(crate) fn port(&self) -> u16 {
        self.broker.lock().port()
    }

    /// Kills the broker (SIGKILL: every client sees its connection drop).
    pub(crate) async fn stop(&self) -> Result<(), String> {
        let broker = Arc::clone(&self.broker);
        tokio::task::spawn_blocking(move || broker.lock().stop())
            .await
            .map_err(|error| error.to_string())
    }

    /// Starts the broker again on its port.
    pub(crate) async fn start_again(&self) -> Result<(), String> {
        let broker = Arc::clone(&self.broker);
        tokio::task::spawn_blocking(move || broker.lock().start_again())
            .await
            .map_err(|error| error.to_string())?
            .map_err(|error| error.to_string())
    }

    /// The device client.
    pub(crate) fn device(&self) -> &Device {
        &self.device
    }
}
