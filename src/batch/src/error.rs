//! The one error type of batch's HTTP API, answered as `{"error":{"code","message"}}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A manual run was asked for while one is in progress.
    #[error("a run is in progress; try again when it has finished")]
    RunInProgress,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = match self {
            Self::RunInProgress => (StatusCode::CONFLICT, "run_in_progress"),
        };
        let body = serde_json::json!({ "error": { "code": code, "message": self.to_string() } });
        (status, Json(body)).into_response()
    }
}
