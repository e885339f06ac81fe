//! Sending a chunk to order-processor through Dapr service invocation: plain HTTP to the
//! app's own sidecar ([`DaprSink`], one attempt, which waits at most `INVOKE_TIMEOUT_SECS`
//! for the answer). [`Submitter`] decides what each answer means
//! ([`crate::outcome::decide`]) and tries again what may pass (the sidecar or
//! order-processor down, 5xx, timeouts) with exponential back-off and jitter, because
//! Container Apps cannot apply a Dapr resiliency policy to service invocation. Attempts
//! follow one another: a chunk is never sent again while an attempt is still waiting.

use std::time::Duration;

use axum::body::Bytes;
use backon::{ExponentialBuilder, Retryable};
use common::dapr::Sidecar;

use crate::outcome::{ChunkOutcome, Reply, decide};

/// The W3C headers that carry a trace on: `traceparent` and `tracestate`.
pub type TraceHeaders = [(&'static str, String)];

/// Where chunks go: order-processor through the sidecar, or a fake in tests; cheap to
/// clone, as a handle is.
pub trait OrderSink: Clone + Send + Sync + 'static {
    /// Sends one chunk (a JSON array of orders) once and returns what came back.
    fn send(&self, body: Bytes, trace: &TraceHeaders) -> impl Future<Output = Reply> + Send;
}

/// order-processor, reached through Dapr service invocation.
#[derive(Debug, Clone)]
pub struct DaprSink {
    sidecar: Sidecar,
    app_id: String,
}

impl DaprSink {
    /// Sends to `app_id` through `sidecar`.
    pub fn new(sidecar: Sidecar, app_id: String) -> Self {
        Self { sidecar, app_id }
    }
}

impl OrderSink for DaprSink {
    async fn send(&self, body: Bytes, trace: &TraceHeaders) -> Reply {
        let mut request = self
            .sidecar
            .invoke(&self.app_id, "orders")
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        for (name, value) in trace {
            request = request.header(*name, value);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(error) => return Err(format!("{:#}", anyhow::Error::new(error))),
        };
        let status = response.status();
        match response.bytes().await {
            Ok(body) => Ok((status, body)),
            Err(error) => Err(format!(
                "the answer ({status}) broke off: {:#}",
                anyhow::Error::new(error)
            )),
        }
    }
}

/// Sends chunks through a sink and decides what became of them, retrying what may pass.
#[derive(Debug)]
pub struct Submitter<S> {
    sink: S,
    backoff: ExponentialBuilder,
}

impl<S: OrderSink> Submitter<S> {
    /// Retries up to `max_retries` times, with delays that start at `first_delay` and
    /// double up to 4 s, with jitter.
    pub fn new(sink: S, max_retries: usize, first_delay: Duration) -> Self {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(first_delay)
            .with_max_delay(Duration::from_secs(4).max(first_delay))
            .with_max_times(max_retries)
            .with_jitter();
        Self { sink, backoff }
    }

    /// Sends `body`, a JSON array of `orders` orders, until its outcome is known or the
    /// retries are used up.
    pub async fn submit(&self, body: &Bytes, orders: usize, trace: &TraceHeaders) -> ChunkOutcome {
        let attempt = || async {
            match decide(orders, self.sink.send(body.clone(), trace).await) {
                ChunkOutcome::RetryLater { reason } => Err(reason),
                known => Ok(known),
            }
        };
        attempt
            .retry(self.backoff)
            .sleep(tokio::time::sleep)
            .notify(|reason, delay| {
                let retry_in_ms = delay.as_millis();
                tracing::warn!(reason, retry_in_ms, "submitting a chunk failed; retrying");
            })
            .await
            .unwrap_or_else(|reason| {
                tracing::warn!(
                    reason,
                    "submitting a chunk failed; it is left for the next run"
                );
                ChunkOutcome::RetryLater { reason }
            })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use reqwest::StatusCode;

    use super::*;

    /// Answers from a script, one per attempt, and counts the attempts.
    #[derive(Clone)]
    struct Script(Arc<Mutex<Vec<Reply>>>);

    impl OrderSink for Script {
        async fn send(&self, _: Bytes, _: &TraceHeaders) -> Reply {
            self.0.lock().unwrap().remove(0)
        }
    }

    fn status(code: u16) -> Reply {
        let stored = br#"{"received":1,"inserted":1,"unchanged":0,"conflicts":[]}"#;
        Ok((
            StatusCode::from_u16(code).unwrap(),
            Bytes::from_static(stored),
        ))
    }

    #[tokio::test(start_paused = true)]
    async fn failures_that_may_pass_are_retried_with_backoff_until_they_pass() {
        let script = Script(Arc::new(Mutex::new(vec![
            Err("refused".into()),
            status(503),
            status(200),
        ])));
        let submitter = Submitter::new(script.clone(), 4, Duration::from_millis(250));
        let started = tokio::time::Instant::now();
        let outcome = submitter.submit(&Bytes::new(), 1, &[]).await;
        assert!(
            matches!(&outcome, ChunkOutcome::Stored(stored) if stored.inserted == 1),
            "{outcome:?}"
        );
        assert!(script.0.lock().unwrap().is_empty());
        // Two back-off delays of at least 250 ms and 500 ms passed (on tokio's paused clock).
        assert!(started.elapsed() >= Duration::from_millis(750));
    }

    #[tokio::test(start_paused = true)]
    async fn after_the_last_retry_the_failure_is_the_outcome() {
        let script = Script(Arc::new(Mutex::new(vec![
            status(503),
            status(503),
            status(503),
        ])));
        let submitter = Submitter::new(script.clone(), 2, Duration::from_millis(1));
        let outcome = submitter.submit(&Bytes::new(), 1, &[]).await;
        assert!(
            matches!(outcome, ChunkOutcome::RetryLater { .. }),
            "{outcome:?}"
        );
        assert!(script.0.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn what_cannot_pass_is_not_retried() {
        let script = Script(Arc::new(Mutex::new(vec![status(404), status(200)])));
        let submitter = Submitter::new(script.clone(), 4, Duration::from_millis(1));
        let outcome = submitter.submit(&Bytes::new(), 1, &[]).await;
        assert!(
            matches!(outcome, ChunkOutcome::CannotSend { .. }),
            "{outcome:?}"
        );
        assert_eq!(script.0.lock().unwrap().len(), 1);
    }
}
