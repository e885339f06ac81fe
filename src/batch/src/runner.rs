//! Runs, one at a time (a trigger that arrives during a run is answered at once and
//! skipped), and the one way through a run: look at the file (one whose every order is
//! settled is skipped once its digest says it is the same), read and judge it
//! ([`crate::survey`]), then one stream: read the file again a block per blocking step,
//! cut the orders to send into chunks ([`crate::cut`]), send up to `CHUNKS_IN_FLIGHT` of
//! them at once ([`crate::send`]), and note what became of each in the file's progress
//! ([`crate::progress`]) and the run's summary ([`crate::summary`]). A run that passes
//! `RUN_DEADLINE_SECS` stops and leaves the rest for the next.

use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

use common::trace_context::Link;
use common::wire::largest_order;
use futures_util::future::ready;
use futures_util::{StreamExt, stream};
use tokio::sync::Mutex;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use tracing::field::Empty;

use crate::config::Settings;
use crate::cut::{Chunk, Cutter, Limit, Limits};
use crate::error::Error;
use crate::outcome::ChunkOutcome;
use crate::progress::FileProgress;
use crate::send::{OrderSink, Submitter};
use crate::source::OrdersSource;
use crate::summary::{Outcome, Summary};
use crate::survey::{Survey, survey};

/// Failures in a row, with nothing stored in between, after which order-processor looks
/// down: the orders not sent yet wait for the next run instead of each spending the whole
/// back-off on a target that is not there.
const DOWN_AFTER: u32 = 2;

/// Runs the file through the sink, one run at a time; clones share it.
#[derive(Clone)]
pub struct Runner<S>(Arc<Shared<S>>);

struct Shared<S> {
    /// What is known of the current file, kept from run to run; held by the run in progress.
    progress: Arc<Mutex<Option<FileProgress>>>,
    submitter: Submitter<S>,
    source: OrdersSource,
    limits: Arc<Limits>,
    settings: Settings,
    cancel: CancellationToken,
}

impl<S: OrderSink> Runner<S> {
    /// A runner reading `source` and sending its chunks to `sink` as `settings` say.
    pub fn new(sink: S, source: OrdersSource, settings: Settings) -> Self {
        Self(Arc::new(Shared {
            progress: Arc::default(),
            submitter: Submitter::new(sink, settings.max_retries, settings.retry_delay),
            source,
            limits: Arc::new(Limits::new(settings.chunk_size, settings.chunk_bytes)),
            settings,
            cancel: CancellationToken::new(),
        }))
    }

    /// Stops the run in progress, if any, and every later one.
    pub fn cancel(&self) {
        self.0.cancel.cancel();
    }

    /// Waits until no run is in progress.
    pub async fn idle(&self) {
        drop(self.0.progress.lock().await);
    }

    /// Runs unless a run is in progress ([`Error::RunInProgress`] at once). The run goes
    /// on even if the caller stops waiting for it; [`Error::RunAborted`] when it panicked.
    ///
    /// A run is a trace of its own, linked to `tick` (the span of the caller, the cron
    /// binding's, when there is one), not its child: Container Apps' managed sidecar
    /// samples its cron spans at a rate of its own (1 in 10,000 unless configured), and a
    /// child follows its parent's decision. As a root, the run is sampled by this
    /// service's sampler (`OTEL_TRACES_SAMPLER`, every run by default), and every span
    /// below it, in both services and both sidecars, follows.
    pub async fn run(&self, trigger: &'static str, tick: Option<Link>) -> Result<Summary, Error> {
        let Ok(mut progress) = Arc::clone(&self.0.progress).try_lock_owned() else {
            tracing::info!(
                trigger,
                "run skipped: the previous run is still in progress"
            );
            return Err(Error::RunInProgress);
        };
        let span = tracing::info_span!(
            parent: None,
            "run",
            trigger,
            outcome = Empty,
            orders.read = Empty,
            orders.submitted = Empty,
            orders.inserted = Empty,
            orders.already_present = Empty,
            orders.conflicts = Empty,
            orders.rejected = Empty,
            orders.duplicates = Empty,
            orders.skipped = Empty,
            orders.deferred = Empty,
            orders.unsendable = Empty,
            otel.status_code = Empty,
        );
        if let Some(tick) = tick {
            common::trace_context::link(&span, tick);
        }
        let runner = self.clone();
        let task = async move {
            let (started, mut summary) = (Instant::now(), Summary::default());
            let deadline = started + runner.0.settings.deadline;
            let outcome = runner.execute(&mut progress, &mut summary, deadline).await;
            summary.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            let spans = (progress.as_mut()).map_or(&[][..], |p| p.end_run(Instant::now()));
            summary.end(outcome, spans);
            summary.record_on(&tracing::Span::current());
            summary.log(trigger);
            summary
        };
        tokio::spawn(task.instrument(span)).await.map_err(|error| {
            tracing::error!(trigger, error = %error, "run aborted");
            Error::RunAborted
        })
    }

    async fn execute(
        &self,
        known: &mut Option<FileProgress>,
        summary: &mut Summary,
        deadline: Instant,
    ) -> Outcome {
        let shared = &self.0;
        let cancel = shared.cancel.clone();
        let keep_going = move || !cancel.is_cancelled() && Instant::now() < deadline;
        let done = known.as_ref().filter(|p| p.done()).map(|p| p.digest);
        let (source, going) = (shared.source.clone(), keep_going.clone());
        let block = shared.settings.block;
        let looked = crate::blocking(move || -> Result<_, Error> {
            let (mut input, bytes) = source.open()?;
            if let Some(digest) = done
                && source.digest(&mut *input, &going)? == digest
            {
                return Ok(None);
            }
            survey(&source, input, bytes, block, &going).map(Some)
        });
        let survey = match looked.await.and_then(|looked| looked) {
            Err(error) => return self.failed(&error, summary),
            Ok(None) => {
                let read = known.as_ref().map_or(0, |progress| progress.read);
                (summary.read, summary.skipped) = (read, read);
                return Outcome::Unchanged;
            }
            Ok(Some(survey)) => survey,
        };
        let progress = match known.take() {
            Some(progress) if progress.digest == survey.digest => known.insert(progress),
            _ => {
                survey.problems.log();
                known.insert(FileProgress::of(&survey))
            }
        };
        (summary.read, summary.rejected, summary.duplicates) =
            (survey.read, survey.rejected, survey.duplicates);
        let sendable = survey.sendable as u64;
        let feed = Arc::new(Mutex::new(Feed {
            survey,
            skips: progress.skips(Instant::now()),
            cutter: Cutter::new(Arc::clone(&shared.limits)),
            number: 0,
            skipped: [0; 2],
        }));
        let (finished, read) =
            (self.send_all(&feed, keep_going, progress, summary, deadline)).await;
        // A step still reading when the run stopped ends before its counts are taken.
        let feed = feed.lock().await;
        let [skipped, waiting] = feed.skipped;
        (summary.skipped, summary.unsendable) = (skipped, summary.unsendable + waiting);
        // What was not cut, not sent, or on its way when the run stopped.
        let left = sendable.saturating_sub(finished + skipped + waiting);
        summary.deferred += left;
        match read {
            _ if shared.cancel.is_cancelled() => Outcome::Cancelled,
            Err(error) if !matches!(error, Error::Stopped) => self.failed(&error, summary),
            _ if left > 0 && Instant::now() >= deadline => {
                let deadline_secs = shared.settings.deadline.as_secs();
                tracing::warn!(
                    deadline_secs,
                    "the run passed its deadline (RUN_DEADLINE_SECS): what is not stored yet is left for the next run"
                );
                Outcome::Completed
            }
            _ => {
                if progress.done() {
                    tracing::info!(file = %shared.source.path().display(), "every order of the file is settled: later runs skip it until it changes");
                }
                Outcome::Completed
            }
        }
    }

    /// Sends the chunks `feed` cuts, a block of the file per step, up to `CHUNKS_IN_FLIGHT`
    /// at once, noting what became of each, until the file is read, order-processor looks
    /// down, or the run is cancelled or passes its deadline. Returns how many orders it
    /// dealt with, and whether the file could be read.
    async fn send_all(
        &self,
        feed: &Arc<Mutex<Feed>>,
        keep_going: impl Fn() -> bool + Clone + Send + 'static,
        progress: &mut FileProgress,
        summary: &mut Summary,
        deadline: Instant,
    ) -> (u64, Result<(), Error>) {
        let (failures, mut finished, mut read) = (AtomicU32::new(0), 0, Ok(()));
        let steps = stream::unfold(true, |more| {
            let (feed, going) = (Arc::clone(feed), keep_going.clone());
            let step = more.then(|| crate::blocking(move || feed.blocking_lock().step(&going)));
            async move {
                let step = step?.await.and_then(|step| step);
                let more = matches!(step, Ok((_, true)));
                Some((step.map(|(chunks, _)| chunks), more))
            }
        });
        let stop = (self.0.cancel).run_until_cancelled(tokio::time::sleep_until(deadline));
        {
            let mut outcomes = pin!(
                steps
                    .flat_map(|step| stream::iter(step.unwrap_or_else(|error| {
                        read = Err(error);
                        Vec::new()
                    })))
                    .take_while(|_| ready(failures.load(Relaxed) < DOWN_AFTER))
                    .map(|chunk| self.deliver(chunk, &failures))
                    .buffer_unordered(self.0.settings.in_flight)
                    .take_until(stop)
            );
            while let Some((submitted, parts)) = outcomes.next().await {
                summary.submitted += submitted;
                for (chunk, outcome) in parts {
                    finished += chunk.len() as u64;
                    record(&chunk, outcome, progress, summary);
                }
            }
        }
        (finished, read)
    }

    /// Sends a chunk, and its halves when it is too large: how many of its orders were
    /// sent for the first time, and each part with what became of it.
    async fn deliver(
        &self,
        chunk: Chunk,
        failures: &AtomicU32,
    ) -> (u64, Vec<(Chunk, ChunkOutcome)>) {
        let (limits, mut submitted) = (&self.0.limits, 0);
        let (mut work, mut parts) = (vec![chunk], Vec::new());
        while let Some(mut chunk) = work.pop() {
            let over = !limits.hold(chunk.len(), chunk.size());
            let outcome = if failures.load(Relaxed) >= DOWN_AFTER {
                let reason = "order-processor looks down".to_owned();
                ChunkOutcome::RetryLater { reason }
            } else if over && chunk.len() > 1 {
                // Cut before smaller limits were learnt: halved unsent.
                work.extend(chunk.split());
                continue;
            } else {
                if !chunk.sent_before {
                    (submitted, chunk.sent_before) = (submitted + chunk.len() as u64, true);
                }
                let outcome = self.submit(&chunk).await;
                match &outcome {
                    ChunkOutcome::TooLarge { limit, reason, .. } if chunk.len() > 1 => {
                        self.lower(&chunk, *limit, reason);
                        work.extend(chunk.split());
                        continue;
                    }
                    ChunkOutcome::Stored(_) => failures.store(0, Relaxed),
                    ChunkOutcome::RetryLater { .. }
                        if failures.fetch_add(1, Relaxed) + 1 == DOWN_AFTER =>
                    {
                        tracing::warn!(
                            "order-processor looks down: the orders not sent yet wait for the next run"
                        );
                    }
                    _ => {}
                }
                outcome
            };
            parts.push((chunk, outcome));
        }
        (submitted, parts)
    }

    async fn submit(&self, chunk: &Chunk) -> ChunkOutcome {
        let span = tracing::info_span!(
            "chunk",
            otel.kind = "client",
            chunk = chunk.index,
            first = chunk.first_position(),
            orders = chunk.len(),
            outcome = Empty,
            inserted = Empty,
        );
        let trace = common::trace_context::trace_headers(&span);
        let body = chunk.body();
        let submitting = (self.0.submitter).submit(&body, chunk.len(), &trace);
        let outcome = submitting.instrument(span.clone()).await;
        span.record("outcome", <&str>::from(&outcome));
        if let ChunkOutcome::Stored(stored) = &outcome {
            span.record("inserted", stored.inserted);
        }
        outcome
    }

    /// Lowers the limit a chunk of several orders passed, so that the chunks cut after it
    /// are smaller, and says which setting to change.
    fn lower(&self, chunk: &Chunk, limit: Limit, reason: &str) {
        let (half, change) = match limit {
            Limit::Orders => (
                chunk.len().div_ceil(2),
                "set CHUNK_SIZE of batch to at most MAX_ORDERS_PER_REQUEST of order-processor",
            ),
            Limit::Bytes => (
                (chunk.size().largest() / 2).max(largest_order().largest()),
                "lower CHUNK_BYTES of batch",
            ),
        };
        if self.0.limits.lower(limit, half) {
            tracing::warn!(
                reason,
                "a chunk was too large for order-processor or its sidecar: chunks are split, \
                 and made smaller for as long as batch runs; {change}"
            );
        }
    }

    /// A run that could not use the file: why, in the summary.
    fn failed(&self, error: &Error, summary: &mut Summary) -> Outcome {
        if self.0.cancel.is_cancelled() {
            return Outcome::Cancelled;
        }
        summary.error = Some(error.to_string());
        Outcome::Failed
    }
}

/// The orders to send, read and cut into chunks a block of the file at a time; what
/// earlier runs settled or set aside is skipped, and counted.
struct Feed {
    survey: Survey,
    /// Whether each order (by its number) is settled (`true`) or waiting (`false`).
    skips: Vec<Option<bool>>,
    cutter: Cutter,
    /// The number of the next order to send.
    number: usize,
    /// Orders settled by an earlier run, and set aside and waiting.
    skipped: [u64; 2],
}

impl Feed {
    /// Reads the next block: the chunks it closed, and whether more of the file remains.
    /// Blocks while it reads.
    fn step(&mut self, keep_going: &dyn Fn() -> bool) -> Result<(Vec<Chunk>, bool), Error> {
        let mut closed = Vec::new();
        let more = self
            .survey
            .next_block(keep_going, &mut |position, json, size| {
                self.number += 1;
                match self.skips.get(self.number - 1).copied().flatten() {
                    Some(settled) => self.skipped[usize::from(!settled)] += 1,
                    None => closed.extend(self.cutter.push(self.number - 1, position, json, size)),
                }
            })?;
        if !more {
            closed.extend(self.cutter.finish());
        }
        Ok((closed, more))
    }
}

/// Notes what became of a chunk, in the file's progress and the run's summary. What a
/// set-aside chunk needs is said in the summary; a conflict, by order-processor.
fn record(
    chunk: &Chunk,
    outcome: ChunkOutcome,
    progress: &mut FileProgress,
    summary: &mut Summary,
) {
    let len = chunk.len();
    match outcome {
        ChunkOutcome::Stored(stored) => {
            summary.inserted += stored.inserted;
            summary.already_present += stored.unchanged;
            summary.conflicts += stored.conflicts.len() as u64;
            progress.settle(chunk.start, len);
        }
        ChunkOutcome::RetryLater { .. } => summary.deferred += len as u64,
        // A chunk of several orders refused as too large was split: this is one order.
        ChunkOutcome::CannotSend {
            reason,
            what_to_change,
        }
        | ChunkOutcome::TooLarge {
            reason,
            what_to_change,
            ..
        } => {
            summary.unsendable += len as u64;
            progress.set_aside(chunk, reason, what_to_change);
        }
    }
}
