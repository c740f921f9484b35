//! Home Assistant's HTTP and WebSocket API, so the clients people already use (dashboards,
//! Node-RED, AppDaemon, `home-assistant-js-websocket`, `hass-cli`) drive the hub unchanged.
//! One router serves it, with the hub's control routes, on two listeners: TCP (the configured
//! `listen.http`, a token needed) and the unix control socket (trusted, no token).
//!
//! - [`auth`]: tokens checked per request (REST) or per connection (WebSocket), failures slowed
//!   down per address.
//! - [`rest`]: `/api/...` as Home Assistant's REST API.
//! - [`websocket`]: `/api/websocket`, Home Assistant's WebSocket API.

pub mod auth;
pub mod rest;
pub mod websocket;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::control::{self, Hub};
use auth::{Gate, Peer, Verdict};

/// What every API handler reaches.
#[derive(Clone)]
pub struct ApiState {
    /// The hub: its core, the sandbox plugin, its dirs.
    pub hub: Hub,
    /// Tokens and failed attempts.
    pub gate: Arc<Gate>,
}

/// The path of the WebSocket API, which authenticates in band (its `auth` message).
pub const WEBSOCKET_PATH: &str = "/api/websocket";

/// Every route: the control routes, the REST API and the WebSocket API, each request tagged
/// with its [`Peer`] by the listener's layer ([`for_control_socket`] or [`for_network`]).
fn all_routes(state: ApiState) -> Router {
    control::router(state.hub.clone())
        .merge(
            rest::routes()
                .merge(websocket::routes())
                .with_state(state.clone()),
        )
        .layer(axum::middleware::from_fn_with_state(state, require_token))
}

/// The routes as the unix control socket serves them: every request is trusted.
pub fn for_control_socket(state: ApiState) -> Router {
    all_routes(state).layer(axum::Extension(Peer::ControlSocket))
}

/// The routes as the TCP listener serves them: every request but the WebSocket's upgrade
/// needs a token. Serve with `into_make_service_with_connect_info::<SocketAddr>()`.
pub fn for_network(state: ApiState) -> Router {
    all_routes(state).layer(axum::middleware::from_fn(tag_network_peer))
}

async fn tag_network_peer(
    ConnectInfo(address): ConnectInfo<SocketAddr>,
    mut request: Request,
    next: Next,
) -> Response {
    request.extensions_mut().insert(Peer::Network(address.ip()));
    next.run(request).await
}

/// Most TCP connections the HTTP API holds at once (REST and WebSocket together; the
/// WebSocket API has its own, lower cap). Past it a new connection waits in the kernel's backlog
/// until one closes: a client opening connections without end costs main file descriptors only
/// up to here.
pub const MAX_HTTP_CONNECTIONS: usize = 512;

/// The HTTP API's TCP listener: hands axum at most [`MAX_HTTP_CONNECTIONS`] connections at
/// once. Serve it with `.tap_io(|_| {})` (axum's `ListenerExt`) and
/// `into_make_service_with_connect_info::<SocketAddr>()`, so handlers see the peer's address.
pub struct NetworkListener {
    listener: tokio::net::TcpListener,
    slots: Arc<tokio::sync::Semaphore>,
}

impl NetworkListener {
    /// Limits `listener` to [`MAX_HTTP_CONNECTIONS`].
    pub fn new(listener: tokio::net::TcpListener) -> Self {
        Self::with_limit(listener, MAX_HTTP_CONNECTIONS)
    }

    /// Limits `listener` to `connections` at once.
    pub fn with_limit(listener: tokio::net::TcpListener, connections: usize) -> Self {
        Self {
            listener,
            slots: Arc::new(tokio::sync::Semaphore::new(connections)),
        }
    }
}

/// A connection holding its slot until it is dropped.
pub struct SlottedStream {
    stream: tokio::net::TcpStream,
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl tokio::io::AsyncRead for SlottedStream {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
        buffer: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_read(context, buffer)
    }
}

impl tokio::io::AsyncWrite for SlottedStream {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
        bytes: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write(context, bytes)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_flush(context)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(context)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        context: &mut std::task::Context<'_>,
        buffers: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.stream).poll_write_vectored(context, buffers)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

impl axum::serve::Listener for NetworkListener {
    type Io = SlottedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok(slot) = Arc::clone(&self.slots).acquire_owned().await else {
                // The semaphore is never closed; should it be, stop taking connections.
                std::future::pending::<()>().await;
                continue;
            };
            match self.listener.accept().await {
                Ok((stream, address)) => {
                    let _ = stream.set_nodelay(true);
                    return (
                        SlottedStream {
                            stream,
                            _slot: slot,
                        },
                        address,
                    );
                }
                Err(error) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    tracing::warn!(%error, "HTTP API: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}

/// The bearer token of a request, if it has one.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// Lets a request through when its peer is trusted or its bearer token is valid; the
/// WebSocket upgrade passes (it authenticates in band). Anything else is Home Assistant's
/// `401: Unauthorized`.
async fn require_token(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    let peer = request
        .extensions()
        .get::<Peer>()
        .copied()
        // A listener that tagged nothing is treated as the network: never trusted by default.
        .unwrap_or(Peer::Network(std::net::IpAddr::V4(
            std::net::Ipv4Addr::UNSPECIFIED,
        )));
    if peer == Peer::ControlSocket || request.uri().path() == WEBSOCKET_PATH {
        return next.run(request).await;
    }
    match state.gate.check(peer, bearer(request.headers())).await {
        Verdict::Allowed(_) => next.run(request).await,
        Verdict::Refused => (StatusCode::UNAUTHORIZED, "401: Unauthorized").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::serve::ListenerExt as _;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpStream;

    use super::*;

    async fn get(address: SocketAddr) -> String {
        let mut stream = TcpStream::connect(address).await.expect("connects");
        stream
            .write_all(b"GET / HTTP/1.1\r\nhost: hub\r\nconnection: close\r\n\r\n")
            .await
            .expect("writes");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.expect("reads");
        answer
    }

    #[tokio::test]
    async fn connections_past_the_limit_wait_until_one_closes() {
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binds");
        let address = tcp.local_addr().expect("address");
        let app = Router::new().route("/", axum::routing::get(|| async { "served" }));
        let server = tokio::spawn(async move {
            axum::serve(
                NetworkListener::with_limit(tcp, 2).tap_io(|_| {}),
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await
        });
        let held = [
            TcpStream::connect(address).await.expect("connects"),
            TcpStream::connect(address).await.expect("connects"),
        ];
        let waiting = tokio::spawn(get(address));
        // Both slots are held by idle connections: the third is not served meanwhile.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !waiting.is_finished(),
            "a third connection was served past the limit"
        );
        drop(held);
        let answer = tokio::time::timeout(Duration::from_secs(30), waiting)
            .await
            .expect("served once a slot was free")
            .expect("joined");
        assert!(answer.ends_with("served"), "{answer}");
        server.abort();
    }
}
