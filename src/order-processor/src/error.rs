//! The one error type of order-processor's HTTP API. Every error answers with the same JSON
//! shape, `{"error":{"code","message"}}`, plus `details` for invalid orders. Server-side
//! failures are logged with their cause and answered without it.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use common::order::OrderError;
use serde::Serialize;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not JSON, or not an order or a list of orders.
    #[error("{0}")]
    MalformedBody(String),
    /// The body is larger than the service accepts.
    #[error("the request body is larger than {limit} bytes")]
    BodyTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// At least one order is invalid; nothing was stored.
    #[error("{}", invalid_message(.0))]
    InvalidOrders(Vec<OrderError>),
    /// A query parameter or path segment is malformed.
    #[error("{name} {reason}")]
    InvalidParameter {
        /// The parameter's name.
        name: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The order does not exist.
    #[error("order {0} does not exist")]
    NotFound(i64),
    /// The database or the binding could not be used; the request may be retried.
    #[error("storage is unavailable")]
    Unavailable(#[source] anyhow::Error),
}

fn invalid_message(errors: &[OrderError]) -> String {
    let orders: std::collections::BTreeSet<usize> = errors.iter().map(|e| e.index).collect();
    match orders.len() {
        1 => "1 order is invalid; nothing was stored".to_owned(),
        n => format!("{n} orders are invalid; nothing was stored"),
    }
}

#[derive(Serialize)]
struct Body<'a> {
    error: Detail<'a>,
}

#[derive(Serialize)]
struct Detail<'a> {
    code: &'static str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<&'a [OrderError]>,
}

impl ApiError {
    /// The HTTP status and the stable machine-readable code.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::MalformedBody(_) => (StatusCode::BAD_REQUEST, "malformed_body"),
            Self::BodyTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            Self::InvalidOrders(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_orders"),
            Self::InvalidParameter { .. } => (StatusCode::BAD_REQUEST, "invalid_parameter"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if let Self::Unavailable(cause) = &self {
            tracing::error!(error = format!("{cause:#}"), "request failed");
        }
        let details = match &self {
            Self::InvalidOrders(errors) => Some(errors.as_slice()),
            _ => None,
        };
        let body = Body {
            error: Detail {
                code,
                message: self.to_string(),
                details,
            },
        };
        (status, Json(body)).into_response()
    }
}
