//! Runs, one at a time (a trigger that arrives during a run is answered at once and
//! skipped), and the one way through a run: look at the file (one whose every order is
//! settled is skipped once its digest says it is the same), read and judge it
//! ([`crate::survey`]), cut the orders to send into chunks ([`crate::cut`]) on a blocking
//! thread, send up to `CHUNKS_IN_FLIGHT` at once ([`crate::send`]), note what became of
//! each in the file's progress ([`crate::progress`]) and the run's summary
//! ([`crate::summary`]), and log the file's problems once and one summary line. A run
//! that passes `RUN_DEADLINE_SECS` stops sending and leaves the rest for the next.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use common::order::Order;
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
use crate::outcome::ChunkOutcome;
use crate::progress::{FileProgress, Skip, Skips, to_set_aside};
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
    memory: Arc<Mutex<Option<FileProgress>>>,
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
            memory: Arc::clone(&self.memory),
            shared: Arc::clone(&self.shared),
        }
    }
}

/// What became of a part of a chunk (the chunk, or a half of one refused as too large).
struct Part {
    span: Span,
    outcome: ChunkOutcome,
}

/// Which orders a part holds.
#[derive(Clone, Copy)]
struct Span {
    chunk: usize,
    start: usize,
    len: usize,
    first_position: u64,
}

/// What became of one chunk: its parts, and how many of its orders were sent.
struct Delivered {
    len: usize,
    submitted: usize,
    parts: Vec<Part>,
}

/// How the sending of a file went.
#[derive(Default)]
struct Sent {
    /// How the run ended, when not by running out of chunks.
    ended: Option<Ended>,
    /// Why the file could not be read to its end, when it could not.
    failure: Option<Error>,
    /// Orders in the chunks taken from the feed.
    handed: u64,
    /// Orders on their way when the run stopped.
    abandoned: u64,
    /// The feed, with what it skipped and the problems found.
    feed: Option<Feed>,
}

/// The orders to send, cut into chunks on demand, one blocking step at a time: what
/// earlier runs settled or set aside is skipped, and counted.
struct Feed {
    survey: Survey,
    source: OrdersSource,
    skips: Skips,
    cutter: Cutter,
    /// The number of the next order among the orders to send.
    number: usize,
    orders: Vec<(u64, Order)>,
    ready: VecDeque<Chunk>,
    finished: bool,
    /// Settled by an earlier run.
    skipped: u64,
    /// Set aside and still waiting.
    waiting: u64,
    problems: Problems,
}

impl Feed {
    /// The next chunk, or `None` after the last. Blocks while it reads.
    fn next_chunk(&mut self, keep_going: &dyn Fn() -> bool) -> Result<Option<Chunk>, Error> {
        loop {
            if let Some(chunk) = self.ready.pop_front() {
                return Ok(Some(chunk));
            }
            if self.finished {
                return Ok(None);
            }
            let (survey, source, problems) = (&mut self.survey, &self.source, &mut self.problems);
            let more = survey.next_orders(source, keep_going, problems, &mut self.orders)?;
            for (position, order) in self.orders.drain(..) {
                self.number += 1;
                match self.skips.skip(self.number - 1) {
                    Some(Skip::Settled) => self.skipped += 1,
                    Some(Skip::Waiting) => self.waiting += 1,
                    None => self
                        .ready
                        .extend(self.cutter.push(self.number - 1, position, order)),
                }
            }
            if !more {
                self.ready.extend(self.cutter.finish());
                self.finished = true;
            }
        }
    }
}

impl<S: OrderSink> Runner<S> {
    /// A runner reading `source` and sending its chunks to `sink` as `settings` say.
    pub fn new(sink: S, source: OrdersSource, settings: Settings) -> Self {
        Self {
            memory: Arc::default(),
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
        drop(self.memory.lock().await);
    }

    /// Runs unless a run is in progress ([`Error::RunInProgress`] at once). The run goes
    /// on even if the caller stops waiting for it; [`Error::RunAborted`] when it panicked.
    pub async fn run(&self, trigger: &'static str) -> Result<Summary, Error> {
        let Ok(memory) = Arc::clone(&self.memory).try_lock_owned() else {
            tracing::info!(
                trigger,
                "run skipped: the previous run is still in progress"
            );
            return Err(Error::RunInProgress);
        };
        let runner = self.clone();
        // A child of the request's span: one trace from the tick to the rows stored.
        let span = tracing::info_span!(
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
        let task = tokio::spawn(
            async move {
                let mut memory = memory;
                let started = Instant::now();
                let mut summary = Summary::default();
                let ended = runner.execute(&mut memory, &mut summary, started).await;
                summary.duration_ms =
                    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                let spans = memory.as_ref().map_or(&[][..], |p| p.set_aside_spans());
                summary.end(ended, spans, Instant::now());
                summary.record_on(&tracing::Span::current());
                summary.log(trigger);
                summary
            }
            .instrument(span),
        );
        task.await.map_err(|error| {
            tracing::error!(trigger, error = %error, "run aborted");
            Error::RunAborted
        })
    }

    async fn execute(
        &self,
        memory: &mut Option<FileProgress>,
        summary: &mut Summary,
        started: Instant,
    ) -> Ended {
        let shared = &self.shared;
        let deadline = started + shared.settings.deadline;
        let keep_going = {
            let cancel = shared.cancel.clone();
            move || !cancel.is_cancelled() && Instant::now() < deadline
        };
        let done = memory
            .as_ref()
            .filter(|p| p.done())
            .map(|p| (p.digest, p.stamp));
        let (source, read) = (shared.source.clone(), shared.settings.read);
        let going = keep_going.clone();
        let looked = crate::blocking(move || -> Result<_, Error> {
            let (mut input, stamp) = source.open()?;
            if let Some((digest, done_stamp)) = done
                && done_stamp == stamp
                && source.digest(&mut *input, &going)? == digest
            {
                return Ok((stamp, None));
            }
            let mut problems = Problems::default();
            let survey = survey(&source, input, stamp.bytes, read, &going, &mut problems)?;
            let same = done.is_some_and(|(digest, _)| digest == survey.digest);
            Ok((stamp, (!same).then_some((survey, problems))))
        })
        .await
        .and_then(|looked| looked);
        let (stamp, survey, problems) = match looked {
            Err(error) => return self.failed(&error, deadline),
            Ok((stamp, None)) => {
                if let Some(progress) = memory.as_mut() {
                    progress.stamp = stamp;
                    (summary.read, summary.skipped) = (progress.read, progress.read);
                }
                return Ended::Unchanged;
            }
            Ok((stamp, Some((survey, problems)))) => (stamp, survey, problems),
        };
        let progress = match memory.take() {
            Some(progress) if progress.digest == survey.digest => memory.insert(progress),
            _ => memory.insert(FileProgress::new(
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
            skips: progress.skips(Instant::now()),
            cutter: Cutter::new(Arc::clone(&shared.limits)),
            number: 0,
            orders: Vec::new(),
            ready: VecDeque::new(),
            finished: false,
            skipped: 0,
            waiting: 0,
            problems,
        };
        let sent = self
            .deliver_all(feed, keep_going, progress, summary, deadline)
            .await;
        let (skipped, waiting) = sent
            .feed
            .as_ref()
            .map_or((0, 0), |f| (f.skipped, f.waiting));
        summary.skipped += skipped;
        summary.unsendable += waiting;
        // What was never cut into a chunk that was sent, or was on its way when the run
        // stopped, is left for the next run.
        summary.deferred +=
            sent.abandoned + sendable.saturating_sub(skipped + waiting + sent.handed);
        if let Some(feed) = &sent.feed
            && !progress.problems_logged
        {
            feed.problems.log();
            progress.problems_logged = true;
        }
        progress.end_run();
        let ended = match sent.ended {
            Some(ended) => ended,
            None => match sent.failure {
                Some(error) => self.failed(&error, deadline),
                None => Ended::Finished,
            },
        };
        if ended == Ended::Finished && progress.done() && !progress.done_said {
            tracing::info!(file = %shared.source, "every order of the file is settled: later runs skip it until it changes");
            progress.done_said = true;
        }
        ended
    }

    /// Sends the chunks `feed` cuts, up to `CHUNKS_IN_FLIGHT` at once while the next is
    /// cut, noting what became of each, until the feed runs out, fails, order-processor
    /// looks down, the run is cancelled or passes its deadline.
    async fn deliver_all(
        &self,
        feed: Feed,
        keep_going: impl Fn() -> bool + Clone + Send + 'static,
        progress: &mut FileProgress,
        summary: &mut Summary,
        deadline: Instant,
    ) -> Sent {
        let health = Health::default();
        let mut logged = Logged::default();
        let mut in_flight = FuturesUnordered::new();
        let mut sent = Sent::default();
        let (mut feed, mut cutting, mut open) = (Some(feed), None, true);
        let mut on_their_way = 0u64;
        let ended = loop {
            let room = in_flight.len() < self.shared.settings.in_flight;
            if open
                && room
                && cutting.is_none()
                && let Some(mut next) = feed.take()
            {
                let going = keep_going.clone();
                cutting = Some(Box::pin(crate::blocking(move || {
                    let chunk = next.next_chunk(&going);
                    (next, chunk)
                })));
            }
            if cutting.is_none() && in_flight.is_empty() {
                break None;
            }
            tokio::select! {
                biased;
                () = self.shared.cancel.cancelled() => break Some(Ended::Cancelled),
                () = tokio::time::sleep_until(deadline) => {
                    tracing::warn!(
                        deadline_secs = self.shared.settings.deadline.as_secs(),
                        "the run passed its deadline (RUN_DEADLINE_SECS): what is not stored yet is left for the next run"
                    );
                    break None;
                }
                Some(delivered) = in_flight.next(), if !in_flight.is_empty() => {
                    let delivered: Delivered = delivered;
                    on_their_way -= delivered.len as u64;
                    summary.submitted += delivered.submitted as u64;
                    for part in delivered.parts {
                        record(part, progress, summary, &mut logged);
                    }
                    open &= !health.down.load(Ordering::Relaxed);
                }
                cut = async { cutting.as_mut()?.await.ok() }, if cutting.is_some() => {
                    cutting = None;
                    let Some((next, chunk)) = cut else {
                        open = false;
                        continue;
                    };
                    feed = Some(next);
                    match chunk {
                        Ok(Some(chunk)) => {
                            sent.handed += chunk.len() as u64;
                            on_their_way += chunk.len() as u64;
                            in_flight.push(self.deliver(chunk, &health));
                        }
                        Ok(None) => open = false,
                        Err(error) => {
                            open = false;
                            sent.failure = Some(error);
                        }
                    }
                }
            }
        };
        logged.finish();
        // A chunk being cut when the run stopped is not sent: it was never handed out.
        if let Some(cutting) = cutting
            && let Ok((next, _)) = cutting.await
        {
            feed = Some(next);
        }
        sent.ended = ended;
        sent.abandoned = on_their_way;
        sent.feed = feed;
        sent
    }

    /// Sends a chunk, and its halves when it is too large.
    async fn deliver(&self, chunk: Chunk, health: &Health) -> Delivered {
        let mut delivered = Delivered {
            len: chunk.len(),
            submitted: 0,
            parts: Vec::new(),
        };
        let mut work = vec![chunk];
        while let Some(mut chunk) = work.pop() {
            let limits = &self.shared.limits;
            let over = chunk.len() > limits.orders() || chunk.size().largest() > limits.bytes();
            let outcome = if health.down.load(Ordering::Relaxed) {
                ChunkOutcome::RetryLater {
                    reason: "order-processor looks down".to_owned(),
                }
            } else if over && chunk.len() > 1 {
                // Cut before smaller limits were learnt: halved unsent.
                work.extend(halves(chunk));
                continue;
            } else {
                if !chunk.sent_before {
                    delivered.submitted += chunk.len();
                    chunk.sent_before = true;
                }
                let outcome = self.submit(&chunk).await;
                if let ChunkOutcome::TooLarge { limit, reason } = &outcome
                    && chunk.len() > 1
                {
                    self.lower(&chunk, *limit, reason);
                    work.extend(halves(chunk));
                    continue;
                }
                health.note(&outcome);
                outcome
            };
            let span = Span {
                chunk: chunk.index,
                start: chunk.start,
                len: chunk.len(),
                first_position: chunk.first_position(),
            };
            delivered.parts.push(Part { span, outcome });
        }
        delivered
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
        let traceparent = common::trace_context::traceparent(&span);
        let body = chunk.body();
        let outcome = self
            .shared
            .submitter
            .submit(&body, chunk.len(), traceparent.as_deref())
            .instrument(span.clone())
            .await;
        span.record("outcome", outcome.name());
        if let ChunkOutcome::Stored { inserted, .. } = outcome {
            span.record("inserted", inserted);
        }
        outcome
    }

    /// Lowers the limit a chunk of several orders passed, so that the chunks cut after it
    /// are smaller, and says the first time which setting to change.
    fn lower(&self, chunk: &Chunk, limit: Limit, reason: &str) {
        let at_most = match limit {
            Limit::Orders => chunk.len().div_ceil(2),
            Limit::Bytes => (chunk.size().largest() / 2).max(largest_order().largest()),
        };
        if !self.shared.limits.lower(limit, at_most) {
            return;
        }
        match limit {
            Limit::Orders => tracing::warn!(
                reason,
                chunk_size = self.shared.settings.chunk_size,
                "order-processor takes fewer orders per request than batch sends: chunks are \
                 split, and made smaller for as long as batch runs. Set CHUNK_SIZE of batch to \
                 at most MAX_ORDERS_PER_REQUEST of order-processor"
            ),
            Limit::Bytes => tracing::warn!(
                reason,
                chunk_bytes = self.shared.settings.chunk_bytes,
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
        span: part,
        outcome,
    } = part;
    let len = part.len as u64;
    match outcome {
        ChunkOutcome::Stored {
            inserted,
            unchanged,
            conflicts,
        } => {
            summary.inserted += inserted;
            summary.already_present += unchanged;
            summary.conflicts += conflicts.len() as u64;
            progress.settle(part.start, part.len);
            if !conflicts.is_empty() {
                logged.line(|| {
                    tracing::warn!(chunk = part.chunk, ids = ?conflicts, "orders already stored with different content were left unchanged");
                });
            }
        }
        ChunkOutcome::RetryLater { reason } => {
            summary.deferred += len;
            logged.line(|| {
                tracing::warn!(chunk = part.chunk, first = part.first_position, orders = len, reason = %reason, "chunk not stored; it is left for the next run");
            });
        }
        ChunkOutcome::TooLarge { limit, reason } => {
            let what_to_change = match limit {
                Limit::Orders => "order-processor refuses even one order per request: check its \
                                  MAX_ORDERS_PER_REQUEST"
                    .to_owned(),
                Limit::Bytes => format!(
                    "raise the request body limits of the sidecars and order-processor to at \
                     least {} bytes, what the largest valid order takes",
                    largest_order().largest()
                ),
            };
            set_aside(part, reason, what_to_change, progress, summary, logged);
        }
        ChunkOutcome::CannotSend {
            reason,
            what_to_change,
        } => set_aside(part, reason, what_to_change, progress, summary, logged),
    }
}

fn set_aside(
    part: Span,
    reason: String,
    what_to_change: String,
    progress: &mut FileProgress,
    summary: &mut Summary,
    logged: &mut Logged,
) {
    summary.unsendable += part.len as u64;
    let span = progress.set_aside(to_set_aside(
        part.chunk,
        part.start,
        part.len,
        part.first_position,
        reason,
        what_to_change,
    ));
    logged.line(|| {
        tracing::error!(
            chunk = span.chunk,
            first = span.first_position,
            orders = span.len,
            reason = %span.reason,
            what_to_change = %span.what_to_change,
            attempts = span.attempts,
            "orders cannot be stored; they are set aside and tried again later"
        );
    });
}

/// Whether order-processor looks down: failures in a row, nothing stored in between.
#[derive(Default)]
struct Health {
    failures: AtomicU32,
    down: AtomicBool,
}

impl Health {
    fn note(&self, outcome: &ChunkOutcome) {
        match outcome {
            ChunkOutcome::Stored { .. } => self.failures.store(0, Ordering::Relaxed),
            ChunkOutcome::RetryLater { .. } => {
                let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
                if failures >= DOWN_AFTER && !self.down.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        failures,
                        "order-processor looks down: the orders not sent yet wait for the next run"
                    );
                }
            }
            ChunkOutcome::TooLarge { .. } | ChunkOutcome::CannotSend { .. } => {}
        }
    }
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
