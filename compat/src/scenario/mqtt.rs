//! The MQTT side of a scenario: the run's own broker (a real process on a free port, stopped and
//! started again by steps) and a device client that publishes what devices publish and records
//! what the hub publishes.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use sandbox_mqtt_broker::{Broker, BrokerKind, BrokerOptions};
use serde::Deserialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{EXPECT_TIMEOUT, POLL_INTERVAL};

/// Messages the device client keeps (the oldest are dropped first).
pub const MAX_RECORDED_MESSAGES: usize = 10_000;

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
            device: Device::start(port, settings.users.first().cloned()),
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

/// A device's client: reconnects by itself, subscribes to everything, records what it receives.
pub(crate) struct Device {
    client: AsyncClient,
    connected: watch::Receiver<bool>,
    received: Arc<Mutex<VecDeque<(String, String)>>>,
    task: JoinHandle<()>,
}

impl Drop for Device {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Device {
    fn start(port: u16, credentials: Option<(String, String)>) -> Self {
        let mut options = MqttOptions::new("compat-device", "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(30));
        if let Some((name, password)) = credentials {
            options.set_credentials(name, password);
        }
        let (client, mut eventloop) = AsyncClient::new(options, 1024);
        let (connected_tx, connected) = watch::channel(false);
        let received = Arc::new(Mutex::new(VecDeque::new()));
        let sink = Arc::clone(&received);
        let subscriber = client.clone();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = subscriber.try_subscribe("#", QoS::AtLeastOnce);
                        connected_tx.send_replace(true);
                    }
                    Ok(Event::Incoming(Packet::Publish(publish))) => {
                        let mut received = sink.lock();
                        if received.len() >= MAX_RECORDED_MESSAGES {
                            received.pop_front();
                        }
                        received.push_back((
                            publish.topic,
                            String::from_utf8_lossy(&publish.payload).into_owned(),
                        ));
                    }
                    Ok(_) => {}
                    Err(_) => {
                        connected_tx.send_replace(false);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        });
        Self {
            client,
            connected,
            received,
            task,
        }
    }

    /// Publishes once connected (QoS 1).
    pub(crate) async fn publish(
        &self,
        topic: &str,
        payload: String,
        retain: bool,
    ) -> Result<(), String> {
        let mut connected = self.connected.clone();
        tokio::time::timeout(EXPECT_TIMEOUT, connected.wait_for(|up| *up))
            .await
            .map_err(|_| format!("the device did not reach the broker within {EXPECT_TIMEOUT:?}"))?
            .map_err(|error| error.to_string())?;
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload)
            .await
            .map_err(|error| error.to_string())
    }

    /// Waits for a message on `topic` (with `payload`, when given) received since the last
    /// message this returned; its payload, or why there is none.
    pub(crate) async fn expect(&self, topic: &str, payload: Option<&str>) -> Result<String, String> {
        let found = tokio::time::timeout(EXPECT_TIMEOUT, async {
            loop {
                {
                    let mut received = self.received.lock();
                    let position = received.iter().position(|(t, p)| {
                        t == topic && payload.is_none_or(|wanted| wanted == p)
                    });
                    if let Some(position) = position {
                        let (_, payload) = received.drain(..=position).last().unwrap_or_default();
                        return payload;
                    }
                }
                tokio::time::sleep(POLL_INTERVAL).await;
            }
        })
        .await;
        found.map_err(|_| {
            let heard: Vec<String> = self
                .received
                .lock()
                .iter()
                .rev()
                .take(5)
                .map(|(topic, payload)| format!("{topic} {payload:?}"))
                .collect();
            format!("no message on {topic} within {EXPECT_TIMEOUT:?} (last heard: {heard:?})")
        })
    }
}
