//! The one error type of order-processor's HTTP API. Every error answers with the same JSON
//! shape, `{"error":{"code","message"}}`, plus `details` for invalid orders. Server-side
//! failures are logged with their cause and answered without it.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use common::order::OrderError;
use common::wire::ErrorBody;
use tonic::Code;

use crate::binding::BindingError;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not JSON, or not an order or a list of orders.
    #[error("{0}")]
    MalformedBody(String),
    /// The body holds more orders than one request may carry.
    #[error(
        "the request holds {received} orders; at most {limit} are accepted (MAX_ORDERS_PER_REQUEST)"
    )]
    TooManyOrders {
        /// Orders in the request.
        received: usize,
        /// The most one request may carry.
        limit: usize,
    },
    /// The body is larger than the service accepts.
    #[error("the request body is larger than {limit} bytes")]
    BodyTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The sidecar refused the binding call as too large (gRPC `RESOURCE_EXHAUSTED`: the
    /// message is over its limit); the same request would fail again.
    #[error(
        "the orders are too large for order-processor's sidecar to pass to the database in one call; send smaller requests (fewer orders)"
    )]
    TooLargeForBinding(#[source] BindingError),
    /// The sidecar refused the binding call as not allowed (gRPC `UNAUTHENTICATED` or
    /// `PERMISSION_DENIED`): a configuration fault that retrying does not fix.
    #[error(
        "order-processor's sidecar refused the binding call: check that order-processor's DAPR_API_TOKEN is its sidecar's; details are in order-processor's log"
    )]
    BindingForbidden(#[source] BindingError),
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
    /// The database refused the statement for a reason that does not pass by itself
    /// (SQLSTATE class 22 data, 23 integrity, 42 syntax or access: a missing table or
    /// privilege); the same request would fail again until someone fixes the cause.
    #[error(
        "the database refused the statement (SQLSTATE {sqlstate}: {}); order-processor's log has the database's message",
        sqlstate_class(.sqlstate)
    )]
    DatabaseRefused {
        /// What the database answered.
        sqlstate: String,
        /// The binding's error, logged.
        #[source]
        source: BindingError,
    },
    /// The database or the binding could not be used; the request may be retried.
    #[error("storage is unavailable")]
    Unavailable(#[source] anyhow::Error),
}

/// The SQLSTATE classes whose errors do not pass by themselves: the statement's data,
/// an integrity rule, or its syntax or access rights. Connection (08), resources (53),
/// operator intervention (57), rollbacks such as deadlocks (40) and every other class
/// are taken as passing, and the request may be retried.
const PERMANENT_CLASSES: [(&str, &str); 3] = [
    ("22", "data exception"),
    ("23", "integrity constraint violation"),
    ("42", "syntax error or access rule violation"),
];

fn sqlstate_class(sqlstate: &str) -> &'static str {
    PERMANENT_CLASSES
        .iter()
        .find(|(class, _)| sqlstate.starts_with(class))
        .map_or("a permanent error", |(_, name)| name)
}

fn invalid_message(errors: &[OrderError]) -> String {
    let orders: std::collections::BTreeSet<usize> = errors.iter().map(|e| e.index).collect();
    match orders.len() {
        1 => "1 order is invalid; nothing was stored".to_owned(),
        n => format!("{n} orders are invalid; nothing was stored"),
    }
}

impl ApiError {
    /// The HTTP status and the stable machine-readable code.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::MalformedBody(_) => (StatusCode::BAD_REQUEST, "malformed_body"),
            Self::TooManyOrders { .. } => (StatusCode::BAD_REQUEST, "too_many_orders"),
            Self::BodyTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            Self::TooLargeForBinding(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large_for_binding"),
            Self::BindingForbidden(_) => (StatusCode::INTERNAL_SERVER_ERROR, "binding_forbidden"),
            Self::InvalidOrders(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_orders"),
            Self::InvalidParameter { .. } => (StatusCode::BAD_REQUEST, "invalid_parameter"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::DatabaseRefused { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "database_refused"),
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        }
    }
}

/// How a failed binding call is answered: by what the sidecar said (its gRPC status code)
/// and, for the statement itself, by the database's SQLSTATE. daprd 1.16 answers a wrong
/// or missing `dapr-api-token` with `UNAUTHENTICATED`, a message over its size limit
/// (`--max-body-size`, 4 MiB by default) with `RESOURCE_EXHAUSTED`, and every failure of
/// the binding itself with `INTERNAL`: the database refused the statement (its message
/// ends with the SQLSTATE), or the binding could not reach it, or the sidecar has no such
/// binding (it failed to load, or is not scoped to this app). `PERMISSION_DENIED` is not
/// what daprd 1.16 says here, but a refusal all the same.
impl From<BindingError> for ApiError {
    fn from(error: BindingError) -> Self {
        match (error.code(), error.sqlstate()) {
            (Some(Code::ResourceExhausted), _) => Self::TooLargeForBinding(error),
            (Some(Code::Unauthenticated | Code::PermissionDenied), _) => {
                Self::BindingForbidden(error)
            }
            (_, Some(sqlstate))
                if PERMANENT_CLASSES
                    .iter()
                    .any(|(class, _)| sqlstate.starts_with(class)) =>
            {
                Self::DatabaseRefused {
                    sqlstate: sqlstate.to_owned(),
                    source: error,
                }
            }
            _ => Self::Unavailable(error.into()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        // Every 5xx is one message, `request failed`, whatever its cause: the server-errors
        // alert counts them by it.
        let failed = |cause: &str, error: String| {
            let status = status.as_u16();
            tracing::error!(status, cause, error, "request failed");
        };
        match &self {
            Self::Unavailable(error) => failed(
                "the database or the sidecar is unavailable; the caller may retry",
                format!("{error:#}"),
            ),
            Self::BindingForbidden(error) => failed(
                "the sidecar refused the binding call: DAPR_API_TOKEN must be the sidecar's \
                 token, and the binding component scoped to this app",
                error.to_string(),
            ),
            Self::DatabaseRefused { source, .. } => failed(
                "the database refused the statement; it is not retried",
                source.to_string(),
            ),
            Self::TooLargeForBinding(cause) => {
                tracing::warn!(error = %cause, "the sidecar refused the binding call as too large");
            }
            _ => {}
        }
        let details = match &self {
            Self::InvalidOrders(errors) => Some(errors.clone()),
            _ => None,
        };
        let mut body = ErrorBody::new(code, self.to_string());
        body.error.details = details;
        body.into_response(status)
    }
}

#[cfg(test)]
mod tests {
    use std::fmt::{self, Write as _};
    use std::sync::{Arc, Mutex};

    use tracing::Level;

    use super::*;

    const CAUSE: &str = "grpc: received message larger than max; password hunter2";

    fn refused(code: Code) -> BindingError {
        BindingError::Call(tonic::Status::new(code, CAUSE))
    }

    #[test]
    fn every_grpc_code_from_the_sidecar_has_one_stable_answer() {
        let (too_large, forbidden, unavailable) = (
            (413, "too_large_for_binding"),
            (500, "binding_forbidden"),
            (503, "unavailable"),
        );
        let table = [
            (Code::Ok, unavailable),
            (Code::Cancelled, unavailable),
            (Code::Unknown, unavailable),
            (Code::InvalidArgument, unavailable),
            (Code::DeadlineExceeded, unavailable),
            (Code::NotFound, unavailable),
            (Code::AlreadyExists, unavailable),
            (Code::PermissionDenied, forbidden),
            (Code::ResourceExhausted, too_large),
            (Code::FailedPrecondition, unavailable),
            (Code::Aborted, unavailable),
            (Code::OutOfRange, unavailable),
            (Code::Unimplemented, unavailable),
            (Code::Internal, unavailable),
            (Code::Unavailable, unavailable),
            (Code::DataLoss, unavailable),
            (Code::Unauthenticated, forbidden),
        ];
        for (code, (status, name)) in table {
            let (got_status, got_name) = ApiError::from(refused(code)).status_and_code();
            assert_eq!((got_status.as_u16(), got_name), (status, name), "{code:?}");
        }
        let bad = ApiError::from(BindingError::BadResponse(Some("many".to_owned())));
        assert_eq!(
            bad.status_and_code(),
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
        );
    }

    #[test]
    fn a_refusal_of_the_database_is_permanent_by_its_sqlstate_class_and_the_rest_passes() {
        let failed = |sqlstate: &str| {
            let message = format!("error executing query: ERROR: no (SQLSTATE {sqlstate})");
            ApiError::from(BindingError::Call(tonic::Status::internal(message)))
        };
        for sqlstate in ["42P01", "42501", "23514", "22003"] {
            let error = failed(sqlstate);
            assert_eq!(error.status_and_code().1, "database_refused", "{sqlstate}");
            assert!(error.to_string().contains(sqlstate), "{error}");
        }
        for sqlstate in [
            "08006", "53300", "57P01", "57014", "40P01", "55P03", "XX000",
        ] {
            assert_eq!(
                failed(sqlstate).status_and_code().1,
                "unavailable",
                "{sqlstate}"
            );
        }
    }

    /// Keeps the level and the fields of every event.
    struct Capture(Arc<Mutex<Vec<(Level, String)>>>);

    struct Fields(String);

    impl tracing::field::Visit for Fields {
        fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
            let _ = write!(self.0, "{}={value:?} ", field.name());
        }
    }

    impl tracing::Subscriber for Capture {
        fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            tracing::span::Id::from_u64(1)
        }
        fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
        fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
        fn event(&self, event: &tracing::Event<'_>) {
            let mut fields = Fields(String::new());
            event.record(&mut fields);
            self.0
                .lock()
                .unwrap()
                .push((*event.metadata().level(), fields.0));
        }
        fn enter(&self, _: &tracing::span::Id) {}
        fn exit(&self, _: &tracing::span::Id) {}
    }

    #[test]
    fn every_5xx_is_logged_as_request_failed_with_its_status_and_cause() {
        let refused_by_the_database = BindingError::Call(tonic::Status::internal(
            "error executing query: ERROR: permission denied (SQLSTATE 42501)",
        ));
        for (error, status) in [
            (refused(Code::Internal), 503),
            (refused(Code::Unauthenticated), 500),
            (refused_by_the_database, 500),
        ] {
            let events = Arc::default();
            let response = tracing::subscriber::with_default(Capture(Arc::clone(&events)), || {
                ApiError::from(error).into_response()
            });
            assert_eq!(response.status().as_u16(), status);
            let events = events.lock().unwrap();
            let [(Level::ERROR, fields)] = &events[..] else {
                panic!("{status}: {events:?}");
            };
            assert!(fields.contains("message=request failed"), "{fields}");
            assert!(fields.contains(&format!("status={status}")), "{fields}");
            assert!(
                fields.contains("cause=") && fields.contains("error="),
                "{fields}"
            );
        }
    }

    #[tokio::test]
    async fn a_refused_binding_call_is_logged_with_its_cause_and_answered_without_it() {
        for (code, level) in [
            (Code::ResourceExhausted, Level::WARN),
            (Code::Unauthenticated, Level::ERROR),
            (Code::PermissionDenied, Level::ERROR),
            (Code::Internal, Level::ERROR),
        ] {
            let events = Arc::default();
            let response = tracing::subscriber::with_default(Capture(Arc::clone(&events)), || {
                ApiError::from(refused(code)).into_response()
            });
            let body = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap();
            let body = String::from_utf8(body.to_vec()).unwrap();
            assert!(!body.contains("hunter2"), "{code:?}: {body}");
            let events = events.lock().unwrap();
            assert!(
                events
                    .iter()
                    .any(|(l, fields)| *l == level && fields.contains("hunter2")),
                "{code:?}: {events:?}"
            );
        }
    }
}
