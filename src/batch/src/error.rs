//! The one error type of batch: why the orders file cannot be used (reported in the run's
//! summary) and why a trigger cannot start a run (answered as
//! `{"error":{"code","message"}}`).

use std::io;
use std::path::PathBuf;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use common::wire::ErrorBody;

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file cannot be opened or read: the file, and what the system said.
    #[error("cannot read {path}: {1}", path = .0.display())]
    Io(PathBuf, #[source] io::Error),
    /// The file is empty.
    #[error("{} is empty", .0.display())]
    Empty(PathBuf),
    /// The file is not `{"orders":[...]}` in valid JSON: the file, and what is wrong and
    /// where (line and column).
    #[error("{path} is not a valid orders file: {1}", path = .0.display())]
    Malformed(PathBuf, String),
    /// One of the file's orders is larger than [`crate::source::MAX_ORDER_BYTES`]: the
    /// file, the order's position from 0, and the limit in bytes.
    #[error("{path}: the order at index {1} is larger than {2} bytes", path = .0.display())]
    OrderTooLarge(PathBuf, u64, usize),
    /// The file changed between the two passes of a run (written to in place).
    #[error("{} changed while it was being read; the next run reads it again", .0.display())]
    Changed(PathBuf),
    /// The run was cancelled, or passed its deadline, while the file was being read.
    #[error("reading stopped: the run was cancelled or passed its deadline (RUN_DEADLINE_SECS)")]
    Stopped,
    /// A manual run was asked for while one is in progress.
    #[error("a run is in progress; try again when it has finished")]
    RunInProgress,
    /// The run ended abnormally (a bug); its cause is logged.
    #[error("the run ended abnormally; the log says why")]
    RunAborted,
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, code) = match self {
            Self::RunInProgress => (StatusCode::CONFLICT, "run_in_progress"),
            Self::RunAborted => (StatusCode::INTERNAL_SERVER_ERROR, "run_aborted"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        ErrorBody::new(code, self.to_string()).into_response(status)
    }
}
