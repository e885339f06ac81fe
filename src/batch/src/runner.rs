//! Runs, one at a time (a trigger that arrives during a run is answered at once and
//! skipped), and the one way through a run: look at the file (one whose every order is
//! settled is skipped once its digest says it is the same), read and judge it
//! ([`crate::survey`]), cut the orders to send into chunks ([`crate::cut`]) in short
//! blocking steps, send up to `CHUNKS_IN_FLIGHT` at once while the next is cut
//! ([`crate::send`]), note what became of each in the file's progress
//! ([`crate::progress`]) and the run's summary ([`crate::summary`]), log the file's
//! problems once and one summary line. A run that passes `RUN_DEADLINE_SECS` stops and
//! leaves the rest for the next.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use common::trace_context::Link;
use common::wire::largest_order;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::sync::Mutex;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use tracing::field::Empty;

use crate::config::Settings;
use crate::cut::{Chunk, Cutter, Limit, Limits};
use crate::error::Error;
use crate::outcome::{ChunkOutcome, SAME_VERSION};
use crate::progress::{FileProgress, SetAside};
use crate::send::{OrderSink, Submitter};
use crate::source::OrdersSource;
use crate::summary::{Ended, Summary};
use crate::survey::{MAX_LISTED, Problems, Survey, survey};

/// Failures in a row, with nothing stored in between, after which order-processor looks
/// down: the orders not sent yet wait for the next run instead of each spending the whole
/// back-off on a target that is not there.
const DOWN_AFTER: u32 = 2;

/// Runs the file through the sink, one run at a time.
pub struct Runner<S> {
    /// What is known of the current file, kept from run to run; held by the run in progress.
    progress: Arc<Mutex<Option<FileProgress>>>,
    shared: Arc<Shared<S>>,
}

struct Shared<S> {
    submitter: Submitter<S>,
    source: OrdersSource,
    limits: Arc<Limits>,
    settings: Settings,
    cancel: CancellationToken,
}

impl<S> Clone for Runner<S> {
    fn clone(&self) -> Self {
        Self {
            progress: Arc::clone(&self.progress),
            shared: Arc::clone(&self.shared),
        }
    }
}

/// The orders to send, cut into chunks on demand, one blocking step at a time; what
/// earlier runs settled or set aside is skipped, and counted.
struct Feed {
    survey: Survey,
    source: OrdersSource,
    /// Whether an order (by its number) is settled (`true`) or waiting (`false`).
    skip: Box<dyn Fn(usize) -> Option<bool> + Send>,
    cutter: Cutter,
    ready: VecDeque<Chunk>,
    /// The number of the next order to send.
    number: usize,
    /// Orders handed out in chunks, settled by an earlier run, and set aside and waiting.
    counts: [u64; 3],
    finished: bool,
    problems: Problems,
}

impl Feed {
    /// The next chunk, or `None` after the last. Blocks while it reads.
    fn next_chunk(&mut self, keep_going: &dyn Fn() -> bool) -> Result<Option<Chunk>, Error> {
        while self.ready.is_empty() && !self.finished {
            let (number, counts, ready) = (&mut self.number, &mut self.counts, &mut self.ready);
            let (skip, cutter) = (&self.skip, &mut self.cutter);
            let more = self.survey.next_orders(
                &self.source,
                keep_going,
                &mut self.problems,
                &mut |position, json, size| {
                    *number += 1;
                    match skip(*number - 1) {
                        Some(true) => counts[1] += 1,
                        Some(false) => counts[2] += 1,
                        None => ready.extend(cutter.push(*number - 1, position, json, size)),
                    }
                },
            )?;
            if !more {
                self.ready.extend(self.cutter.finish());
                self.finished = true;
            }
        }
        let chunk = self.ready.pop_front();
        self.counts[0] += chunk.as_ref().map_or(0, |chunk| chunk.len() as u64);
        Ok(chunk)
    }
}

/// What became of a part of a chunk: the chunk, or a half of one refused as too large.
struct Part {
    chunk: usize,
    start: usize,
    len: usize,
    first: u64,
    outcome: ChunkOutcome,
}

impl<S: OrderSink> Runner<S> {
    /// A runner reading `source` and sending its chunks to `sink` as `settings` say.
    pub fn new(sink: S, source: OrdersSource, settings: Settings) -> Self {
        Self {
            progress: Arc::default(),
            shared: Arc::new(Shared {
                submitter: Submitter::new(sink, settings.max_retries, settings.retry_delay),
                source,
                limits: Arc::new(Limits::new(settings.chunk_size, settings.chunk_bytes)),
                settings,
                cancel: CancellationToken::new(),
            }),
        }
    }

    /// Stops the run in progress, if any, and every later one.
    pub fn cancel(&self) {
        self.shared.cancel.cancel();
    }

    /// Waits until no run is in progress.
    pub async fn idle(&self) {
        drop(self.progress.lock().await);
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
        let Ok(mut progress) = Arc::clone(&self.progress).try_lock_owned() else {
            tracing::info!(
                trigger,
                "run skipped: the previous run is still in progress"
            );
            return Err(Error::RunInProgress);
        };
        let runner = self.clone();
        // A child of the request's span: one trace from the tick to the rows stored.
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
        let task = async move {
            let (started, mut summary) = (Instant::now(), Summary::default());
            let ended = runner.execute(&mut progress, &mut summary, started).await;
            summary.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
            let spans = (progress.as_mut()).map_or(&[][..], |p| p.end_run(Instant::now()));
            summary.end(ended, spans);
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
        started: Instant,
    ) -> Ended {
        let shared = &self.shared;
        let deadline = started + shared.settings.deadline;
        let cancel = shared.cancel.clone();
        let keep_going = move || !cancel.is_cancelled() && Instant::now() < deadline;
        let done = (known.as_ref())
            .filter(|p| p.done())
            .map(|p| (p.digest, p.stamp));
        let (source, limits, going) = (
            shared.source.clone(),
            shared.settings.read,
            keep_going.clone(),
        );
        let looked = crate::blocking(move || -> Result<_, Error> {
            let (mut input, stamp) = source.open()?;
            if let Some((digest, at)) = done
                && at == stamp
                && source.digest(&mut *input, &going)? == digest
            {
                return Ok((stamp, None));
            }
            let mut problems = Problems::default();
            let survey = survey(&source, input, stamp.bytes, limits, &going, &mut problems)?;
            let same = done.is_some_and(|(digest, _)| digest == survey.digest);
            Ok((stamp, (!same).then_some((survey, problems))))
        });
        let (stamp, survey, problems) = match looked.await.and_then(|looked| looked) {
            Err(error) => return self.failed(&error, deadline),
            Ok((stamp, None)) => {
                if let Some(progress) = known.as_mut() {
                    progress.stamp = stamp;
                    (summary.read, summary.skipped) = (progress.read, progress.read);
                }
                return Ended::Unchanged;
            }
            Ok((stamp, Some((survey, problems)))) => (stamp, survey, problems),
        };
        let progress = match known.take() {
            Some(progress) if progress.digest == survey.digest => known.insert(progress),
            _ => known.insert(FileProgress::new(
                survey.digest,
                stamp,
                survey.read,
                survey.sendable,
            )),
        };
        progress.stamp = stamp;
        (summary.read, summary.rejected, summary.duplicates) =
            (survey.read, survey.rejected, survey.duplicates);
        let sendable = survey.sendable as u64;
        let feed = Feed {
            survey,
            source: shared.source.clone(),
            skip: Box::new(progress.skips(Instant::now())),
            cutter: Cutter::new(Arc::clone(&shared.limits)),
            ready: VecDeque::new(),
            number: 0,
            counts: [0; 3],
            finished: false,
            problems,
        };
        let (ended, feed, on_their_way) = self
            .send_all(feed, keep_going, progress, summary, deadline)
            .await;
        let [handed, skipped, waiting] = feed.as_ref().map_or([0; 3], |feed| feed.counts);
        (summary.skipped, summary.unsendable) = (skipped, summary.unsendable + waiting);
        // What was never handed out in a chunk, or was on its way when the run stopped,
        // is left for the next run.
        summary.deferred += on_their_way + sendable.saturating_sub(handed + skipped + waiting);
        if let Some(feed) = feed
            && !progress.problems_logged
        {
            feed.problems.log();
            progress.problems_logged = true;
        }
        let ended = ended.unwrap_or(Ended::Finished);
        if ended == Ended::Finished && progress.done() {
            tracing::info!(file = %shared.source, "every order of the file is settled: later runs skip it until it changes");
        }
        ended
    }

    /// Sends the chunks `feed` cuts, up to `CHUNKS_IN_FLIGHT` at once while the next is
    /// cut, noting what became of each, until the feed runs out or fails, order-processor
    /// looks down, or the run is cancelled or passes its deadline. Returns how it ended
    /// when not by running out, the feed, and the orders on their way when it stopped.
    async fn send_all(
        &self,
        feed: Feed,
        keep_going: impl Fn() -> bool + Clone + Send + 'static,
        progress: &mut FileProgress,
        summary: &mut Summary,
        deadline: Instant,
    ) -> (Option<Ended>, Option<Feed>, u64) {
        let (failures, mut logged) = (AtomicU32::new(0), Logged::default());
        let mut in_flight = FuturesUnordered::new();
        let (mut feed, mut cutting, mut open, mut on_their_way) = (Some(feed), None, true, 0);
        let ended = loop {
            if open
                && cutting.is_none()
                && in_flight.len() < self.shared.settings.in_flight
                && let Some(mut next) = feed.take()
            {
                let going = keep_going.clone();
                cutting = Some(Box::pin(crate::blocking(move || {
                    (next.next_chunk(&going), next)
                })));
            }
            if cutting.is_none() && in_flight.is_empty() {
                break None;
            }
            tokio::select! {
                biased;
                () = self.shared.cancel.cancelled() => break Some(Ended::Cancelled),
                () = tokio::time::sleep_until(deadline) => {
                    let deadline_secs = self.shared.settings.deadline.as_secs();
                    tracing::warn!(deadline_secs, "the run passed its deadline (RUN_DEADLINE_SECS): what is not stored yet is left for the next run");
                    break None;
                }
                Some((len, submitted, parts)) = in_flight.next(), if !in_flight.is_empty() => {
                    on_their_way -= len;
                    summary.submitted += submitted;
                    for part in parts {
                        record(part, progress, summary, &mut logged);
                    }
                    open &= failures.load(Ordering::Relaxed) < DOWN_AFTER;
                }
                cut = async { cutting.as_mut()?.await.ok() }, if cutting.is_some() => {
                    cutting = None;
                    let Some((chunk, next)) = cut else { break None };
                    feed = Some(next);
                    match chunk {
                        Ok(Some(chunk)) => {
                            on_their_way += chunk.len() as u64;
                            in_flight.push(self.deliver(chunk, &failures));
                        }
                        Ok(None) => open = false,
                        // Stopped by the deadline: the branch above says so.
                        Err(Error::Stopped) if !self.shared.cancel.is_cancelled() => break None,
                        Err(error) => break Some(self.failed(&error, deadline)),
                    }
                }
            }
        };
        logged.finish();
        // A chunk being cut when the run stopped is never handed out.
        if let Some(cutting) = cutting
            && let Ok((Ok(Some(chunk)), mut next)) = cutting.await
        {
            next.counts[0] -= chunk.len() as u64;
            feed = Some(next);
        }
        (ended, feed, on_their_way)
    }

    /// Sends a chunk, and its halves when it is too large: what became of each part, with
    /// the chunk's size and how many of its orders were sent.
    async fn deliver(&self, chunk: Chunk, failures: &AtomicU32) -> (u64, u64, Vec<Part>) {
        let (len, mut submitted, mut parts) = (chunk.len() as u64, 0, Vec::new());
        let mut work = vec![chunk];
        while let Some(mut chunk) = work.pop() {
            let limits = &self.shared.limits;
            let over = chunk.len() > limits.orders() || chunk.size().largest() > limits.bytes();
            let outcome = if failures.load(Ordering::Relaxed) >= DOWN_AFTER {
                let reason = "order-processor looks down".to_owned();
                ChunkOutcome::RetryLater { reason }
            } else if over && chunk.len() > 1 {
                // Cut before smaller limits were learnt: halved unsent.
                work.extend(halves(chunk));
                continue;
            } else {
                if !chunk.sent_before {
                    (submitted, chunk.sent_before) = (submitted + chunk.len() as u64, true);
                }
                match self.submit(&chunk).await {
                    ChunkOutcome::TooLarge { limit, reason } if chunk.len() > 1 => {
                        self.lower(&chunk, limit, &reason);
                        work.extend(halves(chunk));
                        continue;
                    }
                    outcome @ ChunkOutcome::Stored { .. } => {
                        failures.store(0, Ordering::Relaxed);
                        outcome
                    }
                    outcome @ ChunkOutcome::RetryLater { .. } => {
                        if failures.fetch_add(1, Ordering::Relaxed) + 1 == DOWN_AFTER {
                            tracing::warn!(
                                "order-processor looks down: the orders not sent yet wait for the next run"
                            );
                        }
                        outcome
                    }
                    outcome => outcome,
                }
            };
            let (start, first) = (chunk.start, chunk.first_position());
            parts.push(Part {
                chunk: chunk.index,
                start,
                len: chunk.len(),
                first,
                outcome,
            });
        }
        (len, submitted, parts)
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
        let (body, submitter) = (chunk.body(), &self.shared.submitter);
        let submitting = submitter.submit(&body, chunk.len(), &trace);
        let outcome = submitting.instrument(span.clone()).await;
        span.record("outcome", outcome.name());
        if let ChunkOutcome::Stored { inserted, .. } = outcome {
            span.record("inserted", inserted);
        }
        outcome
    }

    /// Lowers the limit a chunk of several orders passed, so that the chunks cut after it
    /// are smaller, and says which setting to change.
    fn lower(&self, chunk: &Chunk, limit: Limit, reason: &str) {
        let settings = &self.shared.settings;
        let lowered = match limit {
            Limit::Orders => self.shared.limits.lower(limit, chunk.len().div_ceil(2)),
            Limit::Bytes => {
                let half = (chunk.size().largest() / 2).max(largest_order().largest());
                self.shared.limits.lower(limit, half)
            }
        };
        match limit {
            _ if !lowered => {}
            Limit::Orders => tracing::warn!(
                reason,
                chunk_size = settings.chunk_size,
                "order-processor takes fewer orders per request than batch sends: chunks are \
                 split, and made smaller for as long as batch runs. Set CHUNK_SIZE of batch to \
                 at most MAX_ORDERS_PER_REQUEST of order-processor"
            ),
            Limit::Bytes => tracing::warn!(
                reason,
                chunk_bytes = settings.chunk_bytes,
                "a chunk was too large for order-processor or its sidecar: chunks are split, \
                 and made smaller for as long as batch runs. Lower CHUNK_BYTES of batch"
            ),
        }
    }

    fn failed(&self, error: &Error, deadline: Instant) -> Ended {
        if self.shared.cancel.is_cancelled() {
            Ended::Cancelled
        } else if matches!(error, Error::Stopped) && Instant::now() >= deadline {
            Ended::Failed(
                "the run passed its deadline (RUN_DEADLINE_SECS) while reading the file".to_owned(),
            )
        } else {
            Ended::Failed(error.to_string())
        }
    }
}

fn halves(chunk: Chunk) -> Vec<Chunk> {
    match chunk.split() {
        Ok((front, back)) => vec![back, front],
        Err(single) => vec![single],
    }
}

/// Notes what became of a part, in the file's progress and the run's summary.
fn record(part: Part, progress: &mut FileProgress, summary: &mut Summary, logged: &mut Logged) {
    let Part {
        chunk,
        start,
        len,
        first,
        outcome,
    } = part;
    let (reason, what_to_change) = match outcome {
        ChunkOutcome::Stored {
            inserted,
            unchanged,
            conflicts,
        } => {
            summary.inserted += inserted;
            summary.already_present += unchanged;
            summary.conflicts += conflicts.len() as u64;
            progress.settle(start, len);
            if !conflicts.is_empty() {
                logged.line(|| tracing::warn!(chunk, ids = ?conflicts, "orders already stored with different content were left unchanged"));
            }
            return;
        }
        ChunkOutcome::RetryLater { reason } => {
            summary.deferred += len as u64;
            logged.line(|| tracing::warn!(chunk, first, orders = len, reason = %reason, "chunk not stored; it is left for the next run"));
            return;
        }
        ChunkOutcome::CannotSend {
            reason,
            what_to_change,
        } => (reason, what_to_change),
        // A chunk of several orders refused as too large is split, never recorded.
        ChunkOutcome::TooLarge { reason, .. } => (reason, SAME_VERSION.to_owned()),
    };
    summary.unsendable += len as u64;
    let span = progress.set_aside(SetAside::new(
        chunk,
        start,
        len,
        first,
        reason,
        what_to_change,
    ));
    logged.line(|| {
        tracing::error!(
            chunk,
            first,
            orders = len,
            reason = %span.reason,
            what_to_change = %span.what_to_change,
            attempts = span.attempts,
            "orders cannot be stored; they are set aside and tried again later"
        );
    });
}

/// At most [`MAX_LISTED`] lines about sending per run; the rest are counted.
#[derive(Default)]
struct Logged {
    lines: usize,
    more: usize,
}

impl Logged {
    fn line(&mut self, log: impl FnOnce()) {
        if self.lines < MAX_LISTED {
            log();
            self.lines += 1;
        } else {
            self.more += 1;
        }
    }

    fn finish(&self) {
        if self.more > 0 {
            tracing::warn!(
                more = self.more,
                "further problems of this run were not logged"
            );
        }
    }
}
