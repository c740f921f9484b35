//! Home Assistant's WebSocket API at `/api/websocket`: the `auth_required` / `auth` / `auth_ok`
//! handshake, then commands with increasing ids answered by `result` messages, and
//! subscriptions pushing `event` messages. Every connection is bounded: the size of a message
//! in ([`MAX_MESSAGE_BYTES`]), its subscriptions ([`MAX_SUBSCRIPTIONS`]), what main queues for
//! it ([`SEND_QUEUE_MESSAGES`], [`SEND_QUEUE_BYTES`]: a client that stops reading is
//! disconnected, not buffered for), and the connections at once ([`MAX_CONNECTIONS`]).
//!
//! - [`commands`]: the commands and their answers.
//! - [`compressed`]: `subscribe_entities`' compressed states and diffs.

pub mod commands;
pub mod compressed;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Extension, State};
use axum::response::Response;
use axum::routing::get;
use futures::{SinkExt as _, StreamExt as _};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use super::ApiState;
use super::auth::{Peer, Verdict};

/// The Home Assistant version the API says it speaks (clients check it for features).
pub const HA_VERSION: &str = "2025.1.0";

/// How long a client has to authenticate after connecting.
pub const AUTH_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest message (and frame) a client may send; a larger one closes the connection
/// (code 1009). Home Assistant's own limit on incoming messages is far lower; 1 MiB leaves room
/// for a `call_service` with a large payload.
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;

/// Subscriptions one connection may hold at once; one more is refused with `not_allowed`.
pub const MAX_SUBSCRIPTIONS: usize = 256;

/// Messages main queues for one connection; a client that lets more pile up (it does not read
/// while its subscriptions keep producing) is disconnected as a slow consumer, so its
/// backlog never grows main's memory.
pub const SEND_QUEUE_MESSAGES: usize = 4096;

/// Bytes main queues for one connection, the same way; one message larger than this is still
/// sent when nothing else is queued (a large `get_states`).
pub const SEND_QUEUE_BYTES: usize = 16 << 20;

/// Connections served at once; one more is closed (code 1013) right after the upgrade.
pub const MAX_CONNECTIONS: usize = 256;

/// Commands of one connection running at once (service calls, group controls); past it the
/// connection's further messages wait to be read.
pub const MAX_COMMANDS_IN_FLIGHT: usize = 64;

/// How long the last messages (a result, a close frame) may take to reach a client that is
/// going away before its connection is dropped.
pub const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(1);

/// Disconnections logged per [`DISCONNECT_LOG_WINDOW`] (the rest are counted only).
const DISCONNECT_LOG_LINES: u64 = 10;

/// The window of [`DISCONNECT_LOG_LINES`].
const DISCONNECT_LOG_WINDOW: Duration = Duration::from_secs(60);

/// Why a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disconnect {
    /// The client closed it or went away.
    ClientClosed,
    /// The client's token was refused, or its first message was not `auth`.
    AuthInvalid,
    /// The client did not authenticate within [`AUTH_TIMEOUT`].
    AuthTimeout,
    /// A message was larger than [`MAX_MESSAGE_BYTES`].
    MessageTooLarge,
    /// The client did not read what main queued for it (see [`SEND_QUEUE_MESSAGES`]).
    SlowConsumer,
    /// [`MAX_CONNECTIONS`] were already open.
    TooManyConnections,
    /// The WebSocket itself broke (a protocol error, a reset).
    ProtocolError,
}

impl Disconnect {
    /// Every reason, in the order of [`Stats::disconnections`].
    pub const ALL: [Self; 7] = [
        Self::ClientClosed,
        Self::AuthInvalid,
        Self::AuthTimeout,
        Self::MessageTooLarge,
        Self::SlowConsumer,
        Self::TooManyConnections,
        Self::ProtocolError,
    ];

    /// The reason's name, as counters and logs show it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClientClosed => "client_closed",
            Self::AuthInvalid => "auth_invalid",
            Self::AuthTimeout => "auth_timeout",
            Self::MessageTooLarge => "message_too_large",
            Self::SlowConsumer => "slow_consumer",
            Self::TooManyConnections => "too_many_connections",
            Self::ProtocolError => "protocol_error",
        }
    }

    fn index(self) -> usize {
        Self::ALL
            .iter()
            .position(|reason| *reason == self)
            .unwrap_or_default()
    }

    /// Worth a warning: the server ended the connection because of the client.
    fn is_forced(self) -> bool {
        !matches!(self, Self::ClientClosed)
    }
}

/// The WebSocket API's counters: open connections and disconnections per reason. One per
/// process (the hub serves one API).
#[derive(Debug)]
pub struct Stats {
    open: AtomicUsize,
    accepted: AtomicU64,
    disconnections: [AtomicU64; Disconnect::ALL.len()],
    /// When the current log window started and the lines logged in it.
    logged: Mutex<Option<(Instant, u64)>>,
}

/// The counters of this process's WebSocket API.
pub static STATS: Stats = Stats {
    open: AtomicUsize::new(0),
    accepted: AtomicU64::new(0),
    disconnections: [const { AtomicU64::new(0) }; Disconnect::ALL.len()],
    logged: Mutex::new(None),
};

impl Stats {
    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Connections accepted so far (authenticated or not).
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Connections ended so far for `reason`.
    pub fn disconnections(&self, reason: Disconnect) -> u64 {
        self.disconnections[reason.index()].load(Ordering::Relaxed)
    }

    /// Takes a connection slot, `None` when [`MAX_CONNECTIONS`] are open.
    fn open_slot(&'static self) -> Option<ConnectionSlot> {
        self.accepted.fetch_add(1, Ordering::Relaxed);
        let taken = self
            .open
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |open| {
                (open < MAX_CONNECTIONS).then_some(open + 1)
            });
        taken.is_ok().then_some(ConnectionSlot(self))
    }

    /// Counts a disconnection; logs the forced ones within a budget.
    fn note(&self, reason: Disconnect, peer: Peer) {
        let total = self.disconnections[reason.index()].fetch_add(1, Ordering::Relaxed) + 1;
        if !reason.is_forced() {
            tracing::debug!(reason = reason.as_str(), ?peer, "WebSocket closed");
            return;
        }
        let mut logged = self.logged.lock();
        let window = match *logged {
            Some((since, lines)) if since.elapsed() < DISCONNECT_LOG_WINDOW => (since, lines),
            _ => (Instant::now(), 0),
        };
        if window.1 < DISCONNECT_LOG_LINES {
            tracing::warn!(
                reason = reason.as_str(),
                ?peer,
                total,
                "WebSocket API: disconnected a client"
            );
        }
        *logged = Some((window.0, window.1.saturating_add(1)));
    }
}

/// One of the [`MAX_CONNECTIONS`], given back on drop.
struct ConnectionSlot(&'static Stats);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The WebSocket route.
pub fn routes() -> Router<ApiState> {
    Router::new().route(super::WEBSOCKET_PATH, get(upgrade))
}

async fn upgrade(
    State(state): State<ApiState>,
    peer: Option<Extension<Peer>>,
    socket: WebSocketUpgrade,
) -> Response {
    // A listener that tagged nothing is the network: never trusted by default.
    let peer = peer.map_or(Peer::Network(IpAddr::V4(Ipv4Addr::UNSPECIFIED)), |p| p.0);
    socket
        .max_message_size(MAX_MESSAGE_BYTES)
        .max_frame_size(MAX_MESSAGE_BYTES)
        .on_upgrade(move |socket| serve(socket, state, peer))
}

async fn serve(mut socket: WebSocket, state: ApiState, peer: Peer) {
    let Some(_slot) = STATS.open_slot() else {
        let _ = tokio::time::timeout(
            CLOSE_FLUSH_TIMEOUT,
            socket.send(close_message(1013, "too many connections")),
        )
        .await;
        STATS.note(Disconnect::TooManyConnections, peer);
        return;
    };
    let reason = run(socket, state, peer).await;
    STATS.note(reason, peer);
}

fn close_message(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}

/// The next text message of the handshake; `Err` ends the connection.
async fn next_text(
    stream: &mut futures::stream::SplitStream<WebSocket>,
) -> Result<String, Disconnect> {
    loop {
        match stream.next().await {
            None | Some(Ok(Message::Close(_))) => return Err(Disconnect::ClientClosed),
            Some(Ok(Message::Text(text))) => return Ok(text.as_str().to_owned()),
            Some(Ok(Message::Binary(bytes))) => {
                return Ok(String::from_utf8_lossy(&bytes).into_owned());
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Err(error)) => return Err(read_error(&error)),
        }
    }
}

/// What a read error means: tungstenite reports a message over the limit as a capacity error.
fn read_error(error: &axum::Error) -> Disconnect {
    let text = error.to_string();
    if text.contains("too long") || text.contains("Space limit") {
        Disconnect::MessageTooLarge
    } else {
        Disconnect::ProtocolError
    }
}

/// A connection from its upgrade to its end.
async fn run(socket: WebSocket, state: ApiState, peer: Peer) -> Disconnect {
    let (mut sink, mut stream) = socket.split();
    let handshake = async {
        sink.send(Message::Text(
            json!({"type": "auth_required", "ha_version": HA_VERSION})
                .to_string()
                .into(),
        ))
        .await
        .map_err(|_| Disconnect::ClientClosed)?;
        let text = match tokio::time::timeout(AUTH_TIMEOUT, next_text(&mut stream)).await {
            Ok(text) => text?,
            Err(_) => {
                let _ = sink
                    .send(close_message(1008, "authentication timed out"))
                    .await;
                return Err(Disconnect::AuthTimeout);
            }
        };
        let message: Option<Value> = serde_json::from_str(&text).ok();
        let token = message
            .as_ref()
            .filter(|message| message["type"] == "auth")
            .map(|message| message["access_token"].as_str());
        let verdict = match token {
            Some(token) => state.gate.check(peer, token).await,
            None => Verdict::Refused,
        };
        if verdict == Verdict::Refused {
            let message = if token.is_some() {
                "Invalid access token or password"
            } else {
                "Message incorrectly formatted: expected {\"type\": \"auth\", \"access_token\": ...}"
            };
            let _ = sink
                .send(Message::Text(
                    json!({"type": "auth_invalid", "message": message})
                        .to_string()
                        .into(),
                ))
                .await;
            let _ = sink.send(close_message(1008, "auth_invalid")).await;
            return Err(Disconnect::AuthInvalid);
        }
        sink.send(Message::Text(
            json!({"type": "auth_ok", "ha_version": HA_VERSION})
                .to_string()
                .into(),
        ))
        .await
        .map_err(|_| Disconnect::ClientClosed)
    };
    // Bound the whole handshake (a slowed-down address waits inside the gate, a client that
    // does not read blocks the sends).
    match tokio::time::timeout(AUTH_TIMEOUT + super::auth::MAX_FAILURE_DELAY, handshake).await {
        Ok(Ok(())) => {}
        Ok(Err(reason)) => return reason,
        Err(_) => return Disconnect::AuthTimeout,
    }

    let (outbox, queue) = Outbox::new();
    let writer = tokio::spawn(write_queue(sink, queue, outbox.queued_bytes.clone()));
    let mut overflow = outbox.overflow.subscribe();
    let mut connection = commands::Connection::new(state, outbox.clone());
    let reason = loop {
        tokio::select! {
            () = async { drop(overflow.wait_for(Option::is_some).await) } => {
                break Disconnect::SlowConsumer;
            }
            message = stream.next() => match message {
                None | Some(Ok(Message::Close(_))) => break Disconnect::ClientClosed,
                Some(Ok(Message::Text(text))) => connection.handle_text(text.as_str()).await,
                Some(Ok(Message::Binary(bytes))) => {
                    connection.handle_text(&String::from_utf8_lossy(&bytes)).await;
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Err(error)) => break read_error(&error),
            },
        }
    };
    // Subscriptions end with the connection: their listeners and observers are removed here.
    drop(connection);
    match reason {
        Disconnect::SlowConsumer | Disconnect::ProtocolError => writer.abort(),
        Disconnect::MessageTooLarge => {
            let text = format!("message larger than {MAX_MESSAGE_BYTES} bytes");
            outbox.close_with(1009, &text);
        }
        _ => outbox.close_with(1000, ""),
    }
    drop(outbox);
    let abort = writer.abort_handle();
    if tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, writer)
        .await
        .is_err()
    {
        abort.abort();
    }
    reason
}

/// What the writer task sends.
enum Outgoing {
    Text(String),
    Close(u16, String),
}

/// The connection's bounded send queue, shared by its commands and subscriptions.
#[derive(Clone)]
pub(crate) struct Outbox {
    sender: mpsc::Sender<Outgoing>,
    queued_bytes: Arc<AtomicUsize>,
    /// Set once the queue overflowed: the connection ends.
    overflow: Arc<watch::Sender<Option<Disconnect>>>,
}

impl Outbox {
    fn new() -> (Self, mpsc::Receiver<Outgoing>) {
        let (sender, receiver) = mpsc::channel(SEND_QUEUE_MESSAGES);
        let (overflow, _) = watch::channel(None);
        (
            Self {
                sender,
                queued_bytes: Arc::new(AtomicUsize::new(0)),
                overflow: Arc::new(overflow),
            },
            receiver,
        )
    }

    /// Queues `value`; `false` when the connection is closing or the client is too slow (and
    /// then the connection ends).
    pub(crate) fn send(&self, value: &Value) -> bool {
        self.send_text(value.to_string())
    }

    fn send_text(&self, text: String) -> bool {
        if self.overflow.borrow().is_some() {
            return false;
        }
        let len = text.len();
        let before = self.queued_bytes.fetch_add(len, Ordering::SeqCst);
        if before > 0 && before.saturating_add(len) > SEND_QUEUE_BYTES {
            self.queued_bytes.fetch_sub(len, Ordering::SeqCst);
            self.overflowed();
            return false;
        }
        match self.sender.try_send(Outgoing::Text(text)) {
            Ok(()) => true,
            Err(error) => {
                self.queued_bytes.fetch_sub(len, Ordering::SeqCst);
                if matches!(error, mpsc::error::TrySendError::Full(_)) {
                    self.overflowed();
                }
                false
            }
        }
    }

    /// Ends the connection as a slow consumer.
    pub(crate) fn overflowed(&self) {
        self.overflow.send_if_modified(|reason| {
            let first = reason.is_none();
            if first {
                *reason = Some(Disconnect::SlowConsumer);
            }
            first
        });
    }

    fn close_with(&self, code: u16, reason: &str) {
        let _ = self
            .sender
            .try_send(Outgoing::Close(code, reason.to_owned()));
    }
}

async fn write_queue(
    mut sink: futures::stream::SplitSink<WebSocket, Message>,
    mut queue: mpsc::Receiver<Outgoing>,
    queued_bytes: Arc<AtomicUsize>,
) {
    while let Some(outgoing) = queue.recv().await {
        let message = match outgoing {
            Outgoing::Text(text) => {
                queued_bytes.fetch_sub(text.len(), Ordering::SeqCst);
                Message::Text(text.into())
            }
            Outgoing::Close(code, reason) => {
                let _ = sink.send(close_message(code, &reason)).await;
                return;
            }
        };
        if sink.send(message).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::auth::Gate;
    use crate::control::Hub;
    use crate::tokens::TokenStore;
    use tokio_tungstenite::tungstenite::Message as ClientMessage;

    type Client = tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >;

    /// A hub with no group running, its API served as the control socket serves it (trusted).
    async fn serve_hub(dir: &std::path::Path) -> (homecore::Core, std::net::SocketAddr) {
        let core = homecore::Core::builder(homecore::CoreConfig::new(dir))
            .build()
            .expect("core");
        let plugin = sandbox_host::plugin::SandboxPlugin::install(
            &core,
            sandbox_host::plugin::PluginConfig {
                groups: sandbox_host::groups::GroupsConfig {
                    config_dir: dir.to_owned(),
                    runtime_command: vec!["unused".into()],
                    custom_commands: Default::default(),
                    group_defaults: sandbox_host::GroupConfig::new("built-in"),
                    group_overrides: Default::default(),
                },
                custom: Vec::new(),
            },
        );
        let state = ApiState {
            hub: Hub {
                core: core.clone(),
                plugin,
                config_dir: dir.to_owned(),
                started: Instant::now(),
                control_refusals: Arc::default(),
                http_address: None,
            },
            gate: Gate::new(TokenStore::new(dir)),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binds");
        let address = listener.local_addr().expect("address");
        let router = crate::api::for_control_socket(state);
        tokio::spawn(async move { axum::serve(listener, router).await });
        (core, address)
    }

    async fn read(client: &mut Client) -> Value {
        loop {
            let message = tokio::time::timeout(Duration::from_secs(30), client.next())
                .await
                .expect("in time")
                .expect("open")
                .expect("read");
            if let ClientMessage::Text(text) = message {
                return serde_json::from_str(&text).expect("JSON");
            }
        }
    }

    async fn send(client: &mut Client, message: Value) {
        client
            .send(ClientMessage::Text(message.to_string().into()))
            .await
            .expect("sent");
    }

    /// Reads until the answer to `id`.
    async fn answer(client: &mut Client, id: i64) -> Value {
        loop {
            let message = read(client).await;
            if message["id"] == id && message["type"] == "result" {
                return message;
            }
        }
    }

    fn listeners(core: &homecore::Core) -> usize {
        core.bus().listener_counts().values().sum()
    }

    #[tokio::test]
    async fn subscriptions_end_with_unsubscribe_and_with_the_connection() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (core, address) = serve_hub(dir.path()).await;
        let baseline = listeners(&core);
        let (mut client, _) =
            tokio_tungstenite::connect_async(format!("ws://{address}/api/websocket"))
                .await
                .expect("connects");
        assert_eq!(read(&mut client).await["type"], "auth_required");
        // The control socket is trusted: no token needed.
        send(&mut client, json!({"type": "auth"})).await;
        assert_eq!(read(&mut client).await["type"], "auth_ok");

        send(&mut client, json!({"id": 1, "type": "subscribe_events"})).await;
        assert_eq!(answer(&mut client, 1).await["success"], true);
        assert_eq!(listeners(&core), baseline + 1);
        send(
            &mut client,
            json!({"id": 2, "type": "unsubscribe_events", "subscription": 1}),
        )
        .await;
        assert_eq!(answer(&mut client, 2).await["success"], true);
        assert_eq!(listeners(&core), baseline, "removed on unsubscribe");

        send(
            &mut client,
            json!({"id": 3, "type": "subscribe_events", "event_type": "custom"}),
        )
        .await;
        assert_eq!(answer(&mut client, 3).await["success"], true);
        send(&mut client, json!({"id": 4, "type": "subscribe_entities"})).await;
        assert_eq!(answer(&mut client, 4).await["success"], true);
        assert_eq!(listeners(&core), baseline + 1);
        // A state change reaches the entity subscription as an `a`, then a `c`.
        core.states()
            .set("sensor.one", "1", serde_json::Map::new(), false, None)
            .expect("set");
        core.states()
            .set("sensor.one", "2", serde_json::Map::new(), false, None)
            .expect("set");
        let mut seen = Vec::new();
        while seen.len() < 3 {
            let message = read(&mut client).await;
            if message["id"] == 4 {
                seen.push(message["event"].clone());
            }
        }
        assert_eq!(seen[1]["a"]["sensor.one"]["s"], "1");
        assert_eq!(seen[2]["c"]["sensor.one"]["+"]["s"], "2");

        client.close(None).await.expect("closes");
        let started = Instant::now();
        while listeners(&core) != baseline {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the connection's listener outlived it"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
