//! Home Assistant's WebSocket API at `/api/websocket`.

use axum::Router;

use super::ApiState;

/// The WebSocket route.
pub fn routes() -> Router<ApiState> {
    Router::new()
}
