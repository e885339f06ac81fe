//! Submitting a chunk of orders to order-processor through Dapr service invocation: plain
//! HTTP to the app's own sidecar. Transient failures (the sidecar or order-processor down,
//! 5xx, timeouts) are retried here with exponential back-off and jitter, because Container
//! Apps cannot apply a Dapr resiliency policy to service invocation. A chunk that
//! order-processor refuses as invalid is not retried.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use common::dapr::Sidecar;
use common::order::{OrderError, WriteOutcome};
use reqwest::StatusCode;
use serde::Deserialize;

/// What order-processor did with a chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Submitted {
    /// Stored: some new, some already there, some in conflict.
    Accepted(WriteOutcome),
    /// Refused as invalid; nothing of it was stored.
    Rejected {
        /// order-processor's message.
        message: String,
        /// Each bad order, positions counted within the chunk.
        details: Vec<OrderError>,
    },
}

/// Why a chunk could not be submitted; it waits for the next run.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The sidecar could not be reached or did not answer in time.
    #[error("cannot reach the Dapr sidecar: {0}")]
    Transport(#[from] reqwest::Error),
    /// The sidecar or order-processor answered with an error.
    #[error("order-processor answered {status}: {body}")]
    Status {
        /// The status code.
        status: StatusCode,
        /// The start of the answer's body.
        body: String,
    },
}

impl SubmitError {
    /// Whether trying again soon may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Transport(_) => true,
            Self::Status { status, .. } => {
                status.is_server_error()
                    || *status == StatusCode::TOO_MANY_REQUESTS
                    || *status == StatusCode::REQUEST_TIMEOUT
            }
        }
    }
}

/// Where chunks go: order-processor through the sidecar, or a fake in unit tests.
pub trait OrderSink: Send + Sync + 'static {
    /// Sends one chunk (a JSON array of orders), retrying transient failures.
    fn submit(
        &self,
        body: Vec<u8>,
        traceparent: Option<&str>,
    ) -> impl Future<Output = Result<Submitted, SubmitError>> + Send;
}

/// order-processor, reached through Dapr service invocation.
#[derive(Debug, Clone)]
pub struct DaprSink {
    sidecar: Sidecar,
    app_id: String,
    backoff: ExponentialBuilder,
}

impl DaprSink {
    /// Sends to `app_id` through `sidecar`, retrying up to `max_retries` times with delays
    /// that start at `first_delay` and double up to 4 s, with jitter.
    pub fn new(
        sidecar: Sidecar,
        app_id: String,
        max_retries: usize,
        first_delay: Duration,
    ) -> Self {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(first_delay)
            .with_max_delay(Duration::from_secs(4).max(first_delay))
            .with_max_times(max_retries)
            .with_jitter();
        Self {
            sidecar,
            app_id,
            backoff,
        }
    }

    async fn attempt(
        &self,
        body: &[u8],
        traceparent: Option<&str>,
    ) -> Result<Submitted, SubmitError> {
        let mut request = self
            .sidecar
            .invoke(&self.app_id, "orders")
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_vec());
        if let Some(traceparent) = traceparent {
            request = request.header("traceparent", traceparent);
        }
        let response = request.send().await?;
        let status = response.status();
        if status.is_success() {
            return Ok(Submitted::Accepted(response.json().await?));
        }
        let text = response.text().await.unwrap_or_default();
        let refused = [
            StatusCode::UNPROCESSABLE_ENTITY,
            StatusCode::BAD_REQUEST,
            StatusCode::PAYLOAD_TOO_LARGE,
        ];
        if refused.contains(&status)
            && let Ok(refusal) = serde_json::from_str::<Refusal>(&text)
        {
            return Ok(Submitted::Rejected {
                message: refusal.error.message,
                details: refusal.error.details,
            });
        }
        Err(SubmitError::Status {
            status,
            body: text.chars().take(300).collect(),
        })
    }
}

/// order-processor's error body.
#[derive(Deserialize)]
struct Refusal {
    error: RefusalDetail,
}

#[derive(Deserialize)]
struct RefusalDetail {
    message: String,
    #[serde(default)]
    details: Vec<OrderError>,
}

impl OrderSink for DaprSink {
    async fn submit(
        &self,
        body: Vec<u8>,
        traceparent: Option<&str>,
    ) -> Result<Submitted, SubmitError> {
        (|| self.attempt(&body, traceparent))
            .retry(self.backoff)
            .sleep(tokio::time::sleep)
            .when(SubmitError::is_transient)
            .notify(|error, delay| {
                tracing::warn!(%error, retry_in_ms = delay.as_millis(), "submitting a chunk failed; retrying");
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_and_timeouts_are_transient_refusals_are_not() {
        let status = |code: u16| SubmitError::Status {
            status: StatusCode::from_u16(code).unwrap(),
            body: String::new(),
        };
        assert!(status(500).is_transient());
        assert!(status(503).is_transient());
        assert!(status(429).is_transient());
        assert!(!status(404).is_transient());
        assert!(!status(403).is_transient());
    }
}
