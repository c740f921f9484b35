//! Home Assistant's REST API under `/api/`.

use axum::Router;
use axum::routing::get;

use super::ApiState;

/// The REST routes.
pub fn routes() -> Router<ApiState> {
    Router::new().route(
        "/api/",
        get(|| async { axum::Json(serde_json::json!({"message": "API running."})) }),
    )
}
