//! One run: read the file, skip what is already settled, submit the rest chunk by chunk,
//! and log one summary line. Runs never overlap: a trigger that arrives during a run is
//! answered at once and skipped. What was stored or refused is remembered by the digest of
//! its request body until the file changes, and a file whose every chunk was stored is not
//! read past its digest again until the service restarts.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use tokio::sync::{Mutex, mpsc};
use tokio_util::sync::CancellationToken;

use crate::source::{self, Chunk, Digest, FileError, OrdersSource};
use crate::submit::{OrderSink, Submitted};

/// At most this many problems are logged per file; the rest are counted.
const MAX_LOGGED_PROBLEMS: usize = 20;

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Every order is stored (or was already).
    Completed,
    /// The file is the one last stored completely; nothing was sent.
    Unchanged,
    /// Some chunks were refused as invalid or are left for the next run.
    Partial,
    /// The file could not be read; nothing was sent.
    Failed,
    /// The service is shutting down; the rest is left for the next run.
    Cancelled,
}

/// The figures of one run, logged as one line and returned by the trigger endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// How the run ended.
    pub outcome: Outcome,
    /// Orders in the file.
    pub read: u64,
    /// Orders sent to order-processor.
    pub submitted: u64,
    /// Orders newly stored.
    pub inserted: u64,
    /// Orders that were already stored as they are.
    pub already_present: u64,
    /// Orders already stored with different content, left unchanged.
    pub conflicts: u64,
    /// Orders in chunks refused as invalid (by batch or by order-processor).
    pub rejected: u64,
    /// Orders in chunks settled by an earlier run of the same file.
    pub skipped: u64,
    /// Orders left for the next run because a call failed or the run stopped.
    pub deferred: u64,
    /// How long the run took.
    pub duration_ms: u64,
    /// Why the file could not be used, when it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What became of a chunk that was sent.
struct SubmitDone {
    chunk: Chunk,
    digest: Digest,
    result: Result<Submitted, crate::submit::SubmitError>,
}

/// What remains known between runs.
#[derive(Default)]
struct Memory {
    /// The last file whose every chunk was stored.
    accepted: Option<Digest>,
    /// The file the settled chunks belong to.
    current: Option<Digest>,
    /// Request bodies of `current` that were stored or refused as invalid.
    settled: HashSet<Digest>,
    /// Whether the problems of `current` were logged already.
    problems_logged: bool,
}

/// Runs the file through the sink, one run at a time.
pub struct Runner<S> {
    memory: Arc<Mutex<Memory>>,
    sink: Arc<S>,
    source: OrdersSource,
    chunk_size: usize,
    in_flight: usize,
    cancel: CancellationToken,
}

impl<S> Clone for Runner<S> {
    fn clone(&self) -> Self {
        Self {
            memory: Arc::clone(&self.memory),
            sink: Arc::clone(&self.sink),
            source: self.source.clone(),
            chunk_size: self.chunk_size,
            in_flight: self.in_flight,
            cancel: self.cancel.clone(),
        }
    }
}

impl<S: OrderSink> Runner<S> {
    /// A runner reading `source` in chunks of `chunk_size` orders, with at most
    /// `in_flight` chunks on their way at once (at least one).
    pub fn new(sink: S, source: OrdersSource, chunk_size: usize, in_flight: usize) -> Self {
        Self {
            memory: Arc::default(),
            sink: Arc::new(sink),
            source,
            chunk_size,
            in_flight: in_flight.max(1),
            cancel: CancellationToken::new(),
        }
    }

    /// Stops the run in progress, if any, and every later one.
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// Waits until no run is in progress.
    pub async fn idle(&self) {
        drop(self.memory.lock().await);
    }

    /// Runs unless a run is in progress (then returns `None` at once). The run itself goes
    /// on even if the caller stops waiting for it.
    pub async fn run(&self, trigger: &'static str, traceparent: Option<String>) -> Option<Summary> {
        let Ok(memory) = Arc::clone(&self.memory).try_lock_owned() else {
            tracing::info!(
                trigger,
                "run skipped: the previous run is still in progress"
            );
            return None;
        };
        let runner = self.clone();
        let task = tokio::spawn(async move {
            let mut memory = memory;
            let summary = runner.execute(&mut memory, traceparent.as_deref()).await;
            log_summary(trigger, &summary);
            summary
        });
        match task.await {
            Ok(summary) => Some(summary),
            Err(error) => {
                tracing::error!(%error, "run aborted");
                None
            }
        }
    }

    async fn execute(&self, memory: &mut Memory, traceparent: Option<&str>) -> Summary {
        let started = Instant::now();
        let mut summary = Summary::new();
        let finish = |mut summary: Summary| {
            summary.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            summary
        };
        if self.cancel.is_cancelled() {
            summary.outcome = Outcome::Cancelled;
            return finish(summary);
        }

        let scan = {
            let source = self.source.clone();
            let cancel = self.cancel.clone();
            tokio::task::spawn_blocking(move || source::scan(&source, || !cancel.is_cancelled()))
                .await
        };
        let scan = match scan {
            Ok(Ok(scan)) => scan,
            Ok(Err(error)) => return finish(summary.failed(&self.cancel, &error)),
            Err(join) => return finish(summary.failed(&self.cancel, &join)),
        };
        summary.read = scan.orders;
        if memory.accepted == Some(scan.digest) {
            summary.outcome = Outcome::Unchanged;
            return finish(summary);
        }
        if memory.current != Some(scan.digest) {
            memory.current = Some(scan.digest);
            memory.settled.clear();
            memory.problems_logged = false;
        }

        // The file is parsed on a blocking thread and handed over a chunk at a time, so
        // memory holds at most a few chunks whatever the file's size.
        let (tx, mut rx) = mpsc::channel::<Chunk>(2);
        let reader = {
            let source = self.source.clone();
            let chunk_size = self.chunk_size;
            let digest = scan.digest;
            let repeated = scan.repeated_ids;
            tokio::task::spawn_blocking(move || {
                source::read_chunks(&source, chunk_size, &digest, &repeated, |chunk| {
                    tx.blocking_send(chunk).is_ok()
                })
            })
        };

        let mut problems = Problems::new(!memory.problems_logged);
        // Up to `in_flight` chunks are on their way at once: while order-processor and the
        // database work on one, the next is already travelling through the sidecars.
        let mut pending = FuturesUnordered::new();
        let mut orders_in_flight = 0u64;
        let mut reading = true;
        let mut stop_sending = false;
        while reading || !pending.is_empty() {
            tokio::select! {
                () = self.cancel.cancelled() => {
                    summary.deferred += orders_in_flight;
                    break;
                }
                Some(done) = pending.next(), if !pending.is_empty() => {
                    let SubmitDone { chunk, digest, result } = done;
                    let len = chunk.len as u64;
                    orders_in_flight -= len;
                    match result {
                        Ok(Submitted::Accepted(outcome)) => {
                            summary.inserted += outcome.inserted;
                            summary.already_present += outcome.unchanged;
                            summary.conflicts += outcome.conflicts.len() as u64;
                            if !outcome.conflicts.is_empty() {
                                problems.conflicts(&chunk, &outcome.conflicts);
                            }
                            memory.settled.insert(digest);
                        }
                        Ok(Submitted::Rejected { message, details }) => {
                            summary.rejected += len;
                            let in_file = details.into_iter().map(|mut error| {
                                error.index += chunk.first;
                                error
                            });
                            problems.refused_by_order_processor(&chunk, &message, in_file);
                            memory.settled.insert(digest);
                        }
                        Err(error) => {
                            tracing::error!(%error, chunk = chunk.index, "chunk not stored; it is left for the next run");
                            summary.deferred += len;
                            stop_sending = true;
                        }
                    }
                }
                received = rx.recv(), if reading && pending.len() < self.in_flight => {
                    let Some(chunk) = received else {
                        reading = false;
                        continue;
                    };
                    let len = chunk.len as u64;
                    if stop_sending {
                        summary.deferred += len;
                        continue;
                    }
                    if !chunk.errors.is_empty() {
                        summary.rejected += len;
                        problems.chunk_refused(&chunk, chunk.errors.iter().cloned());
                        continue;
                    }
                    let body = match serde_json::to_vec(&chunk.orders) {
                        Ok(body) => body,
                        Err(error) => {
                            tracing::error!(%error, chunk = chunk.index, "cannot serialise a chunk");
                            summary.deferred += len;
                            continue;
                        }
                    };
                    let digest: Digest = Sha256::digest(&body).into();
                    if memory.settled.contains(&digest) {
                        summary.skipped += len;
                        continue;
                    }
                    summary.submitted += len;
                    orders_in_flight += len;
                    let sink = &self.sink;
                    pending.push(async move {
                        let result = sink.submit(body, traceparent).await;
                        SubmitDone { chunk, digest, result }
                    });
                }
            }
        }
        drop(rx);
        problems.finish();
        memory.problems_logged = true;

        match reader.await {
            Ok(Ok(())) => {}
            Ok(Err(FileError::Stopped)) => summary.outcome = Outcome::Cancelled,
            Ok(Err(error)) => return finish(summary.failed(&self.cancel, &error)),
            Err(join) => return finish(summary.failed(&self.cancel, &join)),
        }
        if self.cancel.is_cancelled() {
            summary.outcome = Outcome::Cancelled;
        } else if summary.rejected > 0 || summary.deferred > 0 {
            summary.outcome = Outcome::Partial;
        } else {
            memory.accepted = Some(scan.digest);
        }
        finish(summary)
    }
}

impl Summary {
    fn new() -> Self {
        Self {
            outcome: Outcome::Completed,
            read: 0,
            submitted: 0,
            inserted: 0,
            already_present: 0,
            conflicts: 0,
            rejected: 0,
            skipped: 0,
            deferred: 0,
            duration_ms: 0,
            error: None,
        }
    }

    fn failed(mut self, cancel: &CancellationToken, error: &dyn std::fmt::Display) -> Self {
        if cancel.is_cancelled() {
            self.outcome = Outcome::Cancelled;
        } else {
            self.outcome = Outcome::Failed;
            self.error = Some(error.to_string());
        }
        self
    }
}

fn log_summary(trigger: &str, s: &Summary) {
    let outcome = serde_json::to_value(s.outcome).ok();
    let outcome = outcome.as_ref().and_then(|v| v.as_str()).unwrap_or("?");
    macro_rules! summary_line {
        ($level:ident) => {
            tracing::$level!(
                trigger,
                outcome,
                read = s.read,
                submitted = s.submitted,
                inserted = s.inserted,
                already_present = s.already_present,
                conflicts = s.conflicts,
                rejected = s.rejected,
                skipped = s.skipped,
                deferred = s.deferred,
                duration_ms = s.duration_ms,
                error = s.error.as_deref(),
                "run finished"
            )
        };
    }
    match s.outcome {
        Outcome::Failed => summary_line!(error),
        Outcome::Partial | Outcome::Cancelled => summary_line!(warn),
        Outcome::Completed | Outcome::Unchanged => summary_line!(info),
    }
}

/// Logs the problems of a file once, capped, with a count of the rest.
struct Problems {
    enabled: bool,
    logged: usize,
    unlogged: usize,
}

impl Problems {
    fn new(enabled: bool) -> Self {
        Self {
            enabled,
            logged: 0,
            unlogged: 0,
        }
    }

    fn log(&mut self, line: impl FnOnce()) {
        if !self.enabled {
            return;
        }
        if self.logged < MAX_LOGGED_PROBLEMS {
            line();
            self.logged += 1;
        } else {
            self.unlogged += 1;
        }
    }

    fn chunk_refused(
        &mut self,
        chunk: &Chunk,
        errors: impl Iterator<Item = common::order::OrderError>,
    ) {
        for error in errors {
            self.log(|| {
                tracing::warn!(chunk = chunk.index, problem = %error, "chunk not sent: invalid order");
            });
        }
    }

    fn refused_by_order_processor(
        &mut self,
        chunk: &Chunk,
        message: &str,
        errors: impl Iterator<Item = common::order::OrderError>,
    ) {
        self.log(|| {
            tracing::warn!(
                chunk = chunk.index,
                message,
                "chunk refused by order-processor"
            )
        });
        for error in errors {
            self.log(|| {
                tracing::warn!(chunk = chunk.index, problem = %error, "chunk refused: invalid order");
            });
        }
    }

    fn conflicts(&mut self, chunk: &Chunk, ids: &[i64]) {
        self.log(|| {
            tracing::warn!(chunk = chunk.index, ids = ?ids, "orders already stored with different content were left unchanged");
        });
    }

    fn finish(&self) {
        if self.unlogged > 0 {
            tracing::warn!(
                more = self.unlogged,
                "further problems with this file were not logged"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::Mutex as SyncMutex;

    use common::order::{Order, OrderError, WriteOutcome};
    use tokio::sync::Notify;

    use super::*;
    use crate::submit::SubmitError;

    type Reply = Box<dyn Fn(&[Order]) -> Result<Submitted, SubmitError> + Send + Sync>;

    /// Records what it is sent and answers as told; can be held until released.
    struct FakeSink {
        sent: SyncMutex<Vec<Vec<i64>>>,
        reply: Reply,
        gate: Option<Arc<Notify>>,
    }

    impl OrderSink for Arc<FakeSink> {
        async fn submit(&self, body: Vec<u8>, _: Option<&str>) -> Result<Submitted, SubmitError> {
            if let Some(gate) = &self.gate {
                gate.notified().await;
            }
            let orders: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap();
            let orders: Vec<Order> = orders
                .iter()
                .map(|o| {
                    Order::new(
                        0,
                        o["orderid"].as_i64().unwrap(),
                        o["customer"].as_str().unwrap(),
                        o["price"].to_string().parse().unwrap(),
                    )
                    .unwrap()
                })
                .collect();
            self.sent
                .lock()
                .unwrap()
                .push(orders.iter().map(|o| o.orderid()).collect());
            (self.reply)(&orders)
        }
    }

    fn stored(orders: &[Order]) -> Result<Submitted, SubmitError> {
        Ok(Submitted::Accepted(WriteOutcome {
            received: orders.len() as u64,
            inserted: orders.len() as u64,
            unchanged: 0,
            conflicts: vec![],
        }))
    }

    fn sink(
        reply: impl Fn(&[Order]) -> Result<Submitted, SubmitError> + Send + Sync + 'static,
    ) -> Arc<FakeSink> {
        Arc::new(FakeSink {
            sent: SyncMutex::default(),
            reply: Box::new(reply),
            gate: None,
        })
    }

    fn orders_file(ids: &[i64]) -> tempfile::NamedTempFile {
        let orders: Vec<String> = ids
            .iter()
            .map(|id| {
                let price = if *id < 0 {
                    "-1".to_owned()
                } else {
                    format!("{id}.5")
                };
                format!(
                    r#"{{"orderid":{},"customer":"C{id}","price":{price}}}"#,
                    id.abs()
                )
            })
            .collect();
        let mut file = tempfile::NamedTempFile::new().unwrap();
        write!(file, r#"{{"orders":[{}]}}"#, orders.join(",")).unwrap();
        file
    }

    fn runner(
        sink: &Arc<FakeSink>,
        file: &tempfile::NamedTempFile,
        chunk: usize,
    ) -> Runner<Arc<FakeSink>> {
        Runner::new(
            Arc::clone(sink),
            OrdersSource::File(file.path().to_owned()),
            chunk,
            1,
        )
    }

    fn sent(sink: &FakeSink) -> Vec<Vec<i64>> {
        sink.sent.lock().unwrap().clone()
    }

    #[tokio::test]
    async fn a_run_sends_every_chunk_and_sums_the_outcomes() {
        let sink = sink(stored);
        let file = orders_file(&[1, 2, 3, 4, 5]);
        let summary = runner(&sink, &file, 2).run("test", None).await.unwrap();
        assert_eq!(sent(&sink), vec![vec![1, 2], vec![3, 4], vec![5]]);
        assert_eq!(summary.outcome, Outcome::Completed);
        assert_eq!(
            (summary.read, summary.submitted, summary.inserted),
            (5, 5, 5)
        );
    }

    #[tokio::test]
    async fn an_unchanged_file_is_not_sent_again() {
        let sink = sink(stored);
        let file = orders_file(&[1, 2, 3]);
        let runner = runner(&sink, &file, 2);
        runner.run("test", None).await.unwrap();
        let second = runner.run("test", None).await.unwrap();
        assert_eq!(second.outcome, Outcome::Unchanged);
        assert_eq!((second.read, second.submitted), (3, 0));
        assert_eq!(sent(&sink).len(), 2);
    }

    #[tokio::test]
    async fn a_changed_file_is_sent_again() {
        let sink = sink(stored);
        let file = orders_file(&[1, 2, 3]);
        let runner = runner(&sink, &file, 2);
        runner.run("test", None).await.unwrap();
        std::fs::copy(orders_file(&[1, 2, 3, 4]).path(), file.path()).unwrap();
        let second = runner.run("test", None).await.unwrap();
        assert_eq!(second.outcome, Outcome::Completed);
        assert_eq!(second.submitted, 4);
    }

    #[tokio::test]
    async fn a_chunk_with_an_invalid_order_is_not_sent_and_the_rest_is() {
        let sink = sink(stored);
        let file = orders_file(&[1, 2, -3, 4, 5]);
        let runner = runner(&sink, &file, 2);
        let first = runner.run("test", None).await.unwrap();
        assert_eq!(sent(&sink), vec![vec![1, 2], vec![5]]);
        assert_eq!(first.outcome, Outcome::Partial);
        assert_eq!((first.rejected, first.submitted), (2, 3));
        // The next tick sends nothing: valid chunks are settled, the bad one stays refused.
        let second = runner.run("test", None).await.unwrap();
        assert_eq!(sent(&sink).len(), 2);
        assert_eq!(
            (second.skipped, second.rejected, second.submitted),
            (3, 2, 0)
        );
    }

    #[tokio::test]
    async fn a_chunk_refused_by_order_processor_is_not_resent_until_the_file_changes() {
        let sink = sink(|orders: &[Order]| {
            if orders.iter().any(|o| o.orderid() == 2) {
                Ok(Submitted::Rejected {
                    message: "1 order is invalid".into(),
                    details: vec![OrderError::new(1, Some(2), "price", "too high")],
                })
            } else {
                stored(orders)
            }
        });
        let file = orders_file(&[1, 2, 3]);
        let runner = runner(&sink, &file, 2);
        let first = runner.run("test", None).await.unwrap();
        assert_eq!((first.rejected, first.inserted), (2, 1));
        let second = runner.run("test", None).await.unwrap();
        assert_eq!(sent(&sink).len(), 2, "neither chunk is sent again");
        assert_eq!((second.skipped, second.submitted), (3, 0));
    }

    #[tokio::test]
    async fn a_failed_chunk_defers_the_rest_to_the_next_run() {
        let fail = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let failing = Arc::clone(&fail);
        let sink = sink(move |orders: &[Order]| {
            if orders[0].orderid() == 3 && failing.load(std::sync::atomic::Ordering::SeqCst) {
                Err(SubmitError::Status {
                    status: reqwest::StatusCode::BAD_GATEWAY,
                    body: String::new(),
                })
            } else {
                stored(orders)
            }
        });
        let file = orders_file(&[1, 2, 3, 4, 5]);
        let runner = runner(&sink, &file, 2);
        let first = runner.run("test", None).await.unwrap();
        assert_eq!(first.outcome, Outcome::Partial);
        assert_eq!((first.inserted, first.deferred), (2, 3));
        assert_eq!(
            sent(&sink),
            vec![vec![1, 2], vec![3, 4]],
            "nothing is sent after a failure"
        );

        fail.store(false, std::sync::atomic::Ordering::SeqCst);
        let second = runner.run("test", None).await.unwrap();
        assert_eq!(second.outcome, Outcome::Completed);
        assert_eq!((second.skipped, second.inserted), (2, 3));
    }

    /// Counts how many submissions are under way at once.
    struct ConcurrentSink {
        now: std::sync::atomic::AtomicUsize,
        most: std::sync::atomic::AtomicUsize,
    }

    impl OrderSink for Arc<ConcurrentSink> {
        async fn submit(&self, body: Vec<u8>, _: Option<&str>) -> Result<Submitted, SubmitError> {
            use std::sync::atomic::Ordering::SeqCst;
            let now = self.now.fetch_add(1, SeqCst) + 1;
            self.most.fetch_max(now, SeqCst);
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            self.now.fetch_sub(1, SeqCst);
            let orders: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap();
            let n = orders.len() as u64;
            Ok(Submitted::Accepted(WriteOutcome {
                received: n,
                inserted: n,
                unchanged: 0,
                conflicts: vec![],
            }))
        }
    }

    #[tokio::test]
    async fn chunks_travel_at_most_in_flight_at_once_and_all_arrive() {
        let sink = Arc::new(ConcurrentSink {
            now: Default::default(),
            most: Default::default(),
        });
        let ids: Vec<i64> = (1..=40).collect();
        let file = orders_file(&ids);
        let runner = Runner::new(
            Arc::clone(&sink),
            OrdersSource::File(file.path().to_owned()),
            4,
            3,
        );
        let summary = runner.run("test", None).await.unwrap();
        assert_eq!(summary.outcome, Outcome::Completed);
        assert_eq!((summary.submitted, summary.inserted), (40, 40));
        assert_eq!(sink.most.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_tick_during_a_run_is_skipped() {
        let gate = Arc::new(Notify::new());
        let sink = Arc::new(FakeSink {
            sent: SyncMutex::default(),
            reply: Box::new(stored),
            gate: Some(Arc::clone(&gate)),
        });
        let file = orders_file(&[1]);
        let runner = runner(&sink, &file, 10);
        let first = tokio::spawn({
            let runner = runner.clone();
            async move { runner.run("test", None).await }
        });
        while runner.memory.try_lock().is_ok() {
            tokio::task::yield_now().await;
        }
        assert_eq!(runner.run("test", None).await, None);
        gate.notify_one();
        assert_eq!(first.await.unwrap().unwrap().outcome, Outcome::Completed);
        assert_eq!(sent(&sink).len(), 1);
    }

    #[tokio::test]
    async fn cancelling_stops_a_run_and_defers_its_chunk() {
        let gate = Arc::new(Notify::new());
        let sink = Arc::new(FakeSink {
            sent: SyncMutex::default(),
            reply: Box::new(stored),
            gate: Some(gate),
        });
        let file = orders_file(&[1, 2, 3]);
        let runner = runner(&sink, &file, 1);
        let run = tokio::spawn({
            let runner = runner.clone();
            async move { runner.run("test", None).await }
        });
        while runner.memory.try_lock().is_ok() {
            tokio::task::yield_now().await;
        }
        runner.cancel();
        let summary = run.await.unwrap().unwrap();
        assert_eq!(summary.outcome, Outcome::Cancelled);
        assert_eq!(summary.inserted, 0);
        assert!(sent(&sink).is_empty());
    }

    #[tokio::test]
    async fn an_unreadable_file_fails_the_run_and_sends_nothing() {
        let sink = sink(stored);
        let mut file = tempfile::NamedTempFile::new().unwrap();
        write!(
            file,
            r#"{{"orders":[{{"orderid":1,"customer":"A","price":1}},"#
        )
        .unwrap();
        let summary = runner(&sink, &file, 10).run("test", None).await.unwrap();
        assert_eq!(summary.outcome, Outcome::Failed);
        assert!(
            summary
                .error
                .unwrap()
                .contains("is not a valid orders file")
        );
        assert!(sent(&sink).is_empty());
    }
}
