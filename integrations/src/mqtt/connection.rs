//! One entry's connection to its broker: a long-lived MQTT session that reconnects with backoff,
//! tells whether it is up, routes received messages to the subscribers of matching filters, and
//! subscribes again to everything after each reconnection (sessions are clean).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, LastWill, MqttOptions,
    Packet, QoS, SubscribeFilter, TlsConfiguration, Transport,
};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::config::{EntryConfig, GENERATED_CLIENT_ID_BYTES, KEEP_ALIVE};
use super::topic::filter_matches;

/// Largest message handed to subscribers, in bytes: a larger one is dropped (and counted in
/// the log). Discovery configs and states of real devices are a few KiB; camera snapshots over
/// MQTT are out of scope.
pub const MAX_INCOMING_MESSAGE_BYTES: usize = 256 * 1024;
/// Largest packet the client reads, in bytes. Far above [`MAX_INCOMING_MESSAGE_BYTES`] on
/// purpose: a packet over it ends the session, and a retained one would end every session after
/// it (the broker sends it again on each resubscription), so only a packet this large, which no
/// device sends, costs the connection.
pub const MAX_INCOMING_PACKET_BYTES: usize = 4 * 1024 * 1024;
/// Largest payload the hub publishes, in bytes (`mqtt.publish` payloads included).
pub const MAX_OUTGOING_MESSAGE_BYTES: usize = 256 * 1024;
/// Largest packet the hub sends: the payload, a topic of at most
/// [`super::topic::MAX_TOPIC_BYTES`] and the packet's header.
const MAX_OUTGOING_PACKET_BYTES: usize =
    MAX_OUTGOING_MESSAGE_BYTES + super::topic::MAX_TOPIC_BYTES + 16;
/// Requests (publish, subscribe) queued towards the broker before a caller waits.
pub const REQUEST_QUEUE: usize = 1024;
/// How long connecting (TCP, TLS and the MQTT handshake) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a publish may wait for room in the queue before it fails.
pub const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);
/// First wait before reconnecting; doubled after each failure up to [`RECONNECT_MAX`].
pub const RECONNECT_INITIAL: Duration = Duration::from_millis(250);
/// Longest wait between two reconnection attempts.
pub const RECONNECT_MAX: Duration = Duration::from_secs(10);
/// QoS of every subscription (Home Assistant's default). Also what brokers handle best: some
/// (rumqttd) hand a new QoS 1 subscription only the first 100 retained messages of a wildcard,
/// which would lose discovery configs.
pub const SUBSCRIPTION_QOS: QoS = QoS::AtMostOnce;
/// Filters per SUBSCRIBE packet when subscribing again after a reconnection.
const RESUBSCRIBE_BATCH: usize = 64;
/// Largest message kept to hand to a later subscriber of the same topic.
pub const MAX_REPLAYED_MESSAGE_BYTES: usize = 16 * 1024;
/// Most payload bytes kept for later subscribers, per connection.
pub const MAX_REPLAY_CACHE_BYTES: usize = 8 * 1024 * 1024;
/// Largest CA file read, in bytes.
pub const MAX_CA_FILE_BYTES: u64 = 1024 * 1024;

/// A message received from the broker.
#[derive(Debug, Clone)]
pub struct Message {
    /// Its topic.
    pub topic: String,
    /// Its payload.
    pub payload: Bytes,
    /// Whether the broker kept it (a retained message delivered on subscribing).
    pub retain: bool,
}

impl Message {
    /// The payload as text (invalid UTF-8 replaced).
    pub fn text(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.payload)
    }
}

/// Called with every message whose topic matches the subscription's filter. Runs on the
/// connection's task: it must be quick and must not block.
pub type Handler = Arc<dyn Fn(&Message) + Send + Sync>;

/// Why connecting failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The broker refused the credentials.
    #[error("the broker refused the credentials ({0:?})")]
    InvalidAuth(ConnectReturnCode),
    /// The broker refused the connection for another reason.
    #[error("the broker refused the connection ({0:?})")]
    Refused(ConnectReturnCode),
    /// The broker could not be reached or the handshake failed.
    #[error("cannot connect to {address}: {reason}")]
    Unreachable {
        /// `host:port`.
        address: String,
        /// What failed.
        reason: String,
    },
    /// The TLS settings are unusable.
    #[error("TLS: {0}")]
    Tls(String),
}

/// Why a publish failed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// Not connected to the broker: the message would be lost.
    #[error("not connected to the MQTT broker")]
    NotConnected,
    /// The payload is larger than [`MAX_OUTGOING_MESSAGE_BYTES`].
    #[error("the payload is {0} bytes, more than {MAX_OUTGOING_MESSAGE_BYTES}")]
    TooLarge(usize),
    /// The queue towards the broker stayed full or the session ended.
    #[error("the message could not be queued: {0}")]
    Queue(String),
}

/// Where a subscriber's messages go.
#[derive(Clone)]
enum Sink {
    /// Called on the connection's task.
    Call(Handler),
    /// Queued for a task of the subscriber's; a full queue makes the connection wait.
    Queue(mpsc::Sender<Message>),
}

/// One subscriber of a filter.
struct Subscriber {
    id: u64,
    sink: Sink,
}

/// Who listens to what. Filters without wildcards (nearly all of them: state topics) are found by
/// a hash lookup; only wildcard filters are matched one by one.
#[derive(Default)]
struct Subscriptions {
    exact: HashMap<String, Vec<Subscriber>>,
    wildcard: Vec<(String, Vec<Subscriber>)>,
    /// The last message of each exact filter (up to [`MAX_REPLAYED_MESSAGE_BYTES`], at most
    /// [`MAX_REPLAY_CACHE_BYTES`] in all), handed to a subscriber that joins the filter later:
    /// the broker sent the retained message to the first subscriber only, and a second entity on
    /// the same state topic (Tasmota's `tele/…/SENSOR`) needs it too.
    last: HashMap<String, Message>,
    /// Bytes of payload held in `last`.
    last_bytes: usize,
}

impl Subscriptions {
    /// Adds a subscriber; whether the filter is new, and the filter's last message when the
    /// subscriber joins others (to be handed to it).
    fn add(&mut self, filter: &str, subscriber: Subscriber) -> (bool, Option<Message>) {
        if !filter.contains(['+', '#']) {
            let subscribers = self.exact.entry(filter.to_owned()).or_default();
            subscribers.push(subscriber);
            if subscribers.len() == 1 {
                return (true, None);
            }
            return (false, self.last.get(filter).cloned());
        }
        if let Some((_, subscribers)) = self.wildcard.iter_mut().find(|(f, _)| f == filter) {
            subscribers.push(subscriber);
            return (false, None);
        }
        self.wildcard.push((filter.to_owned(), vec![subscriber]));
        (true, None)
    }

    /// Keeps `message` as its exact filter's last one, within the cache's bounds.
    fn remember(&mut self, message: &Message) {
        if !self.exact.contains_key(&message.topic) {
            return;
        }
        if let Some(old) = self.last.remove(&message.topic) {
            self.last_bytes -= old.payload.len();
        }
        let size = message.payload.len();
        if size <= MAX_REPLAYED_MESSAGE_BYTES && self.last_bytes + size <= MAX_REPLAY_CACHE_BYTES {
            self.last_bytes += size;
            self.last.insert(message.topic.clone(), message.clone());
        }
    }

    fn forget(&mut self, filter: &str) {
        if let Some(old) = self.last.remove(filter) {
            self.last_bytes -= old.payload.len();
        }
    }

    /// Removes a subscriber; the filter when nobody listens to it any more.
    fn remove(&mut self, id: u64) -> Option<String> {
        let mut emptied = None;
        self.exact.retain(|filter, subscribers| {
            subscribers.retain(|subscriber| subscriber.id != id);
            if subscribers.is_empty() {
                emptied = Some(filter.clone());
                return false;
            }
            true
        });
        self.wildcard.retain_mut(|(filter, subscribers)| {
            subscribers.retain(|subscriber| subscriber.id != id);
            if subscribers.is_empty() {
                emptied = Some(filter.clone());
                return false;
            }
            true
        });
        if let Some(filter) = &emptied {
            self.forget(filter);
        }
        emptied
    }

    fn filters(&self) -> Vec<String> {
        self.exact
            .keys()
            .cloned()
            .chain(self.wildcard.iter().map(|(filter, _)| filter.clone()))
            .collect()
    }

    fn sinks_for(&self, topic: &str) -> Vec<Sink> {
        let mut sinks: Vec<Sink> = self
            .exact
            .get(topic)
            .into_iter()
            .flatten()
            .map(|subscriber| subscriber.sink.clone())
            .collect();
        for (filter, subscribers) in &self.wildcard {
            if filter_matches(filter, topic) {
                sinks.extend(subscribers.iter().map(|subscriber| subscriber.sink.clone()));
            }
        }
        sinks
    }
}

/// What the connection's task and its handle share.
struct Shared {
    subscriptions: Mutex<Subscriptions>,
    connected: watch::Sender<bool>,
    next_id: AtomicU64,
    /// Published after every (re)connection.
    birth: Option<(String, String)>,
    /// Set once closing: a disconnection is then not an outage to recover from.
    closing: std::sync::atomic::AtomicBool,
    /// New filters to ask the broker for, sent by a task of their own: whoever subscribes (the
    /// discovery task, which the connection's task may be waiting for) never waits for the
    /// client's request queue, which only the connection's task drains.
    to_subscribe: Mutex<Vec<String>>,
    /// Wakes the subscribing task.
    wake_subscriber: tokio::sync::Notify,
}

/// A live connection to the broker; reconnects by itself until [`Connection::close`].
pub struct Connection {
    client: AsyncClient,
    shared: Arc<Shared>,
    task: Mutex<Option<JoinHandle<()>>>,
    /// Sends [`Shared::to_subscribe`].
    subscriber: JoinHandle<()>,
    address: String,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("address", &self.address)
            .field("connected", &self.is_connected())
            .finish()
    }
}

/// A client id for a session without a configured one: unique enough not to collide with
/// another hub on the same broker (a broker drops the older session of a duplicate id).
pub fn generated_client_id() -> String {
    let id = ulid::Ulid::new().to_string().to_lowercase();
    let mut client_id = format!("hub-{id}");
    client_id.truncate(GENERATED_CLIENT_ID_BYTES);
    client_id
}

/// The rustls configuration: the CA file's certificates, or the system's.
fn tls_config(config: &EntryConfig) -> Result<Arc<rustls::ClientConfig>, ConnectError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    let mut roots = rustls::RootCertStore::empty();
    match &config.ca_file {
        Some(path) => {
            use std::io::Read;
            let file = std::fs::File::open(path)
                .map_err(|err| ConnectError::Tls(format!("{}: {err}", path.display())))?;
            let mut pem = Vec::new();
            file.take(MAX_CA_FILE_BYTES + 1)
                .read_to_end(&mut pem)
                .map_err(|err| ConnectError::Tls(format!("{}: {err}", path.display())))?;
            if pem.len() as u64 > MAX_CA_FILE_BYTES {
                return Err(ConnectError::Tls(format!(
                    "{} is larger than {MAX_CA_FILE_BYTES} bytes",
                    path.display()
                )));
            }
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert =
                    cert.map_err(|err| ConnectError::Tls(format!("{}: {err}", path.display())))?;
                roots
                    .add(cert)
                    .map_err(|err| ConnectError::Tls(format!("{}: {err}", path.display())))?;
            }
            if roots.is_empty() {
                return Err(ConnectError::Tls(format!(
                    "{} holds no PEM certificate",
                    path.display()
                )));
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(native.certs);
            if roots.is_empty() {
                return Err(ConnectError::Tls(
                    "no system CA certificate found; give a CA file".to_owned(),
                ));
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|err| ConnectError::Tls(err.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(tls))
}

/// The session options of `config` with `client_id`.
fn options(config: &EntryConfig, client_id: &str) -> Result<MqttOptions, ConnectError> {
    let mut options = MqttOptions::new(client_id, &config.broker, config.port);
    options
        .set_keep_alive(KEEP_ALIVE)
        .set_clean_session(true)
        .set_max_packet_size(MAX_INCOMING_PACKET_BYTES, MAX_OUTGOING_PACKET_BYTES)
        .set_request_channel_capacity(REQUEST_QUEUE);
    if let Some(username) = &config.username {
        options.set_credentials(username, config.password.as_deref().unwrap_or_default());
    }
    if let Some(will) = &config.will {
        options.set_last_will(LastWill::new(
            &will.topic,
            will.payload.clone(),
            QoS::AtLeastOnce,
            true,
        ));
    }
    if config.tls {
        options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            tls_config(config)?,
        )));
    }
    Ok(options)
}

fn connect_error(config: &EntryConfig, error: ConnectionError) -> ConnectError {
    match error {
        ConnectionError::ConnectionRefused(
            code @ (ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized),
        ) => ConnectError::InvalidAuth(code),
        ConnectionError::ConnectionRefused(code) => ConnectError::Refused(code),
        ConnectionError::NetworkTimeout => ConnectError::Unreachable {
            address: config.address(),
            reason: format!("no answer within {CONNECT_TIMEOUT:?}"),
        },
        other => ConnectError::Unreachable {
            address: config.address(),
            reason: other.to_string(),
        },
    }
}

/// Connects once: the session's first `ConnAck`, or why there is none.
async fn first_connection(
    config: &EntryConfig,
    client_id: &str,
) -> Result<(AsyncClient, EventLoop), ConnectError> {
    let (client, mut eventloop) = AsyncClient::new(options(config, client_id)?, REQUEST_QUEUE);
    let mut network = eventloop.network_options();
    network.set_connection_timeout(CONNECT_TIMEOUT.as_secs());
    network.set_tcp_nodelay(true);
    eventloop.set_network_options(network);
    let connected = tokio::time::timeout(CONNECT_TIMEOUT, async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(error) => return Err(connect_error(config, error)),
            }
        }
    })
    .await;
    match connected {
        Ok(Ok(())) => Ok((client, eventloop)),
        Ok(Err(error)) => Err(error),
        Err(_) => Err(ConnectError::Unreachable {
            address: config.address(),
            reason: format!("no answer within {CONNECT_TIMEOUT:?}"),
        }),
    }
}

/// Checks settings by connecting once and disconnecting (the config flow's test).
pub async fn probe(config: &EntryConfig) -> Result<(), ConnectError> {
    let (client, mut eventloop) = first_connection(config, &generated_client_id()).await?;
    // Say goodbye so the broker does not publish the will of a probe.
    if client.try_disconnect().is_ok() {
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while eventloop.poll().await.is_ok() {}
        })
        .await;
    }
    Ok(())
}

impl Connection {
    /// Connects to the broker of `config` (the first connection must succeed within
    /// [`CONNECT_TIMEOUT`]), then keeps the session up in a task of its own.
    pub async fn connect(config: &EntryConfig) -> Result<Self, ConnectError> {
        let client_id = config.client_id.clone().unwrap_or_else(generated_client_id);
        let (client, eventloop) = first_connection(config, &client_id).await?;
        let (connected, _) = watch::channel(true);
        let shared = Arc::new(Shared {
            subscriptions: Mutex::new(Subscriptions::default()),
            connected,
            next_id: AtomicU64::new(1),
            birth: config
                .birth
                .as_ref()
                .map(|birth| (birth.topic.clone(), birth.payload.clone())),
            closing: std::sync::atomic::AtomicBool::new(false),
            to_subscribe: Mutex::new(Vec::new()),
            wake_subscriber: tokio::sync::Notify::new(),
        });
        let task = tokio::spawn(run(
            eventloop,
            client.clone(),
            Arc::clone(&shared),
            config.address(),
        ));
        let subscriber = tokio::spawn(send_subscriptions(client.clone(), Arc::clone(&shared)));
        Ok(Self {
            client,
            shared,
            task: Mutex::new(Some(task)),
            subscriber,
            address: config.address(),
        })
    }

    /// Asks the broker for every filter, then publishes the birth message: called once the
    /// first subscribers (discovery) are in, so devices answering the birth are heard, and after
    /// every reconnection by the connection itself.
    pub fn announce(&self) {
        announce(&self.client, &self.shared);
    }

    /// Whether the session is up.
    pub fn is_connected(&self) -> bool {
        *self.shared.connected.borrow()
    }

    /// Follows the session's state (`true` while connected).
    pub fn watch_connected(&self) -> watch::Receiver<bool> {
        self.shared.connected.subscribe()
    }

    /// `host:port` of the broker.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Calls `handler` with every message matching `filter` (a checked topic filter) until
    /// [`Connection::unsubscribe`] with the returned id. Retained messages of the filter arrive
    /// right after subscribing.
    pub fn subscribe(&self, filter: &str, handler: Handler) -> u64 {
        self.add_subscriber(filter, Sink::Call(handler))
    }

    /// Queues every message matching `filter` into `queue` (for work that must await); while
    /// the queue is full the connection waits, so the broker holds what is not read yet.
    pub fn subscribe_queue(&self, filter: &str, queue: mpsc::Sender<Message>) -> u64 {
        self.add_subscriber(filter, Sink::Queue(queue))
    }

    fn add_subscriber(&self, filter: &str, sink: Sink) -> u64 {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let (new, last) = self.shared.subscriptions.lock().add(
            filter,
            Subscriber {
                id,
                sink: sink.clone(),
            },
        );
        if let (Some(message), Sink::Call(handler)) = (last, &sink) {
            call(handler, &message);
        }
        // While disconnected the filter is asked for after the reconnection, with the others.
        if new && self.is_connected() {
            self.shared.to_subscribe.lock().push(filter.to_owned());
            self.shared.wake_subscriber.notify_one();
        }
        id
    }

    /// Ends subscription `id`; the broker is told when nobody else listens to its filter.
    pub fn unsubscribe(&self, id: u64) {
        let emptied = self.shared.subscriptions.lock().remove(id);
        if let Some(filter) = emptied
            && self.is_connected()
        {
            // Never waits (see `Shared::to_subscribe`); a filter the queue had no room for stays
            // subscribed at the broker until the next reconnection, its messages routed nowhere.
            let _ = self.client.try_unsubscribe(filter);
        }
    }

    /// Publishes a message; fails at once while disconnected (QoS 0 and 1 messages would be lost
    /// or replayed late, both worse than an error the caller sees).
    pub async fn publish(
        &self,
        topic: &str,
        payload: impl Into<Vec<u8>>,
        qos: QoS,
        retain: bool,
    ) -> Result<(), PublishError> {
        let payload = payload.into();
        if payload.len() > MAX_OUTGOING_MESSAGE_BYTES || topic.len() > super::topic::MAX_TOPIC_BYTES
        {
            return Err(PublishError::TooLarge(payload.len() + topic.len()));
        }
        if !self.is_connected() {
            return Err(PublishError::NotConnected);
        }
        match tokio::time::timeout(
            PUBLISH_TIMEOUT,
            self.client.publish(topic, qos, retain, payload),
        )
        .await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(PublishError::Queue(error.to_string())),
            Err(_) => Err(PublishError::Queue(format!(
                "the queue stayed full for {PUBLISH_TIMEOUT:?}"
            ))),
        }
    }

    /// Ends the session cleanly (the broker does not publish the will) and stops reconnecting.
    pub async fn close(&self) {
        self.shared.closing.store(true, Ordering::Relaxed);
        let task = self.task.lock().take();
        if let Some(mut task) = task {
            // Connected, the task ends once the DISCONNECT went out; otherwise there is nobody
            // to say goodbye to.
            let said_goodbye = self.is_connected() && self.client.try_disconnect().is_ok();
            if !said_goodbye
                || tokio::time::timeout(Duration::from_secs(2), &mut task)
                    .await
                    .is_err()
            {
                task.abort();
            }
        }
        self.shared.connected.send_replace(false);
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.subscriber.abort();
        if let Some(task) = self.task.lock().take() {
            task.abort();
        }
    }
}

/// Calls a subscriber; a panic in it (a component's bug on some payload) is logged, never the
/// end of the connection's task.
fn call(handler: &Handler, message: &Message) {
    let called = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handler(message)));
    if called.is_err() {
        tracing::error!(topic = %message.topic.chars().take(256).collect::<String>(),
            "an MQTT message made its subscriber panic; the message is ignored");
    }
}

/// Sends the filters new subscribers asked for, in batches, while connected (a reconnection
/// asks for every filter anyway).
async fn send_subscriptions(client: AsyncClient, shared: Arc<Shared>) {
    loop {
        shared.wake_subscriber.notified().await;
        let filters = std::mem::take(&mut *shared.to_subscribe.lock());
        if !*shared.connected.borrow() {
            continue;
        }
        for batch in filters.chunks(RESUBSCRIBE_BATCH) {
            let batch: Vec<SubscribeFilter> = batch
                .iter()
                .map(|filter| SubscribeFilter::new(filter.clone(), SUBSCRIPTION_QOS))
                .collect();
            if client.subscribe_many(batch).await.is_err() {
                return;
            }
        }
    }
}

/// After a (re)connection: every filter asked for again, then the birth message. Done off the
/// connection's task, which must keep polling for the queue to drain.
fn announce(client: &AsyncClient, shared: &Arc<Shared>) {
    let client = client.clone();
    let shared = Arc::clone(shared);
    tokio::spawn(async move {
        let filters = shared.subscriptions.lock().filters();
        for batch in filters.chunks(RESUBSCRIBE_BATCH) {
            let batch: Vec<SubscribeFilter> = batch
                .iter()
                .map(|filter| SubscribeFilter::new(filter.clone(), SUBSCRIPTION_QOS))
                .collect();
            if client.subscribe_many(batch).await.is_err() {
                return;
            }
        }
        if let Some((topic, payload)) = &shared.birth {
            let _ = client
                .publish(topic.as_str(), QoS::AtLeastOnce, false, payload.clone())
                .await;
        }
    });
}

/// The session's task: polls the event loop, routes messages, reconnects with backoff.
async fn run(mut eventloop: EventLoop, client: AsyncClient, shared: Arc<Shared>, address: String) {
    let mut backoff = RECONNECT_INITIAL;
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                if publish.payload.len() > MAX_INCOMING_MESSAGE_BYTES {
                    tracing::debug!(
                        bytes = publish.payload.len(),
                        "an MQTT message larger than {MAX_INCOMING_MESSAGE_BYTES} bytes was dropped"
                    );
                    continue;
                }
                // A copy: the client's payload shares its whole read buffer, which a message
                // kept (queued, cached) would keep alive.
                let message = Message {
                    topic: publish.topic,
                    payload: Bytes::copy_from_slice(&publish.payload),
                    retain: publish.retain,
                };
                let sinks = {
                    let mut subscriptions = shared.subscriptions.lock();
                    subscriptions.remember(&message);
                    subscriptions.sinks_for(&message.topic)
                };
                for sink in sinks {
                    match sink {
                        Sink::Call(handler) => call(&handler, &message),
                        // A closed queue is a subscriber that stopped: nothing to deliver to.
                        Sink::Queue(queue) => {
                            let _ = queue.send(message.clone()).await;
                        }
                    }
                }
            }
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff = RECONNECT_INITIAL;
                tracing::info!(broker = %address, "reconnected to the MQTT broker");
                shared.connected.send_replace(true);
                announce(&client, &shared);
            }
            Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => {
                if shared.closing.load(Ordering::Relaxed) {
                    shared.connected.send_replace(false);
                    return;
                }
            }
            Ok(_) => {}
            Err(error) => {
                let was_connected = shared.connected.send_replace(false);
                if shared.closing.load(Ordering::Relaxed) {
                    return;
                }
                if was_connected {
                    tracing::warn!(broker = %address, %error, "lost the MQTT broker; reconnecting");
                } else {
                    tracing::debug!(broker = %address, %error, "the MQTT broker is still unreachable");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RECONNECT_MAX);
            }
        }
    }
}
