//! A device on the broker, as the tests need one: an MQTT client (rumqttc) that reconnects by
//! itself, subscribes to a filter after every connection, publishes what devices publish and
//! records what it receives, so a test can wait for the message the hub sent.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Messages a device keeps (the oldest are dropped first).
pub const MAX_RECORDED_MESSAGES: usize = 100_000;

/// How long a device waits to be connected before publishing, or for an expected message.
pub const DEVICE_WAIT: Duration = Duration::from_secs(60);

/// A device's client. Dropping it ends its task.
pub struct Device {
    client: AsyncClient,
    connected: watch::Receiver<bool>,
    received: Arc<Mutex<VecDeque<(String, String)>>>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("connected", &*self.connected.borrow())
            .finish()
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Device {
    /// A device connected to `host:port` (with `credentials`), subscribed to `filter` (QoS 0:
    /// every retained message of it arrives); waits for the subscription.
    pub async fn connect(
        host: &str,
        port: u16,
        credentials: Option<(String, String)>,
        filter: &str,
    ) -> Result<Self, String> {
        let device = Self::start(host, port, credentials, filter);
        let mut connected = device.connected.clone();
        tokio::time::timeout(DEVICE_WAIT, connected.wait_for(|up| *up))
            .await
            .map_err(|_| format!("no connection to {host}:{port} within {DEVICE_WAIT:?}"))?
            .map_err(|error| error.to_string())?;
        Ok(device)
    }

    /// A device that connects in the background (and again after every disconnection).
    pub fn start(
        host: &str,
        port: u16,
        credentials: Option<(String, String)>,
        filter: &str,
    ) -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let number = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut options = MqttOptions::new(
            format!("test-device-{}-{number}", std::process::id()),
            host,
            port,
        );
        options.set_keep_alive(Duration::from_secs(30));
        options.set_max_packet_size(2 * 1024 * 1024, 2 * 1024 * 1024);
        if let Some((name, password)) = credentials {
            options.set_credentials(name, password);
        }
        let (client, mut eventloop) = AsyncClient::new(options, 1024);
        let (connected_tx, connected) = watch::channel(false);
        let received = Arc::new(Mutex::new(VecDeque::new()));
        let sink = Arc::clone(&received);
        let subscriber = client.clone();
        let filter = filter.to_owned();
        let task = tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = subscriber.try_subscribe(filter.clone(), QoS::AtMostOnce);
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        connected_tx.send_replace(true);
                    }
                    Ok(Event::Incoming(Packet::Publish(publish))) => {
                        let mut received = lock(&sink);
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

    /// Whether it is connected and subscribed.
    pub fn is_connected(&self) -> bool {
        *self.connected.borrow()
    }

    /// Publishes (QoS 1) once connected.
    pub async fn publish(
        &self,
        topic: &str,
        payload: impl Into<Vec<u8>>,
        retain: bool,
    ) -> Result<(), String> {
        let mut connected = self.connected.clone();
        tokio::time::timeout(DEVICE_WAIT, connected.wait_for(|up| *up))
            .await
            .map_err(|_| format!("the device was not connected within {DEVICE_WAIT:?}"))?
            .map_err(|error| error.to_string())?;
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload)
            .await
            .map_err(|error| error.to_string())
    }

    /// Waits for a message on `topic` (with `payload`, when given) received since the last
    /// message this returned; its payload, or why there is none.
    pub async fn expect(&self, topic: &str, payload: Option<&str>) -> Result<String, String> {
        let found = tokio::time::timeout(DEVICE_WAIT, async {
            loop {
                {
                    let mut received = lock(&self.received);
                    let position = received
                        .iter()
                        .position(|(t, p)| t == topic && payload.is_none_or(|wanted| wanted == p));
                    if let Some(position) = position {
                        let (_, found) =
                            received.drain(..=position).next_back().unwrap_or_default();
                        return found;
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        found.map_err(|_| {
            let heard: Vec<String> = lock(&self.received)
                .iter()
                .rev()
                .take(5)
                .map(|(topic, payload)| format!("{topic} {payload:?}"))
                .collect();
            format!("no message on {topic} within {DEVICE_WAIT:?} (last heard: {heard:?})")
        })
    }

    /// Every message received and not yet returned by [`Device::expect`], oldest first.
    pub fn received(&self) -> Vec<(String, String)> {
        lock(&self.received).iter().cloned().collect()
    }
}
