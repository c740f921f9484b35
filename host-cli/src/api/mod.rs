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
