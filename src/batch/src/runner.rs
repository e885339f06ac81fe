//! Runs, one at a time, and what they remember in between ([`Memory`]). A run
//! fingerprints the file, reads it into chunks ([`crate::read`]), sends them (the
//! pipeline) and logs one summary line ([`crate::ledger`]). A trigger that arrives during
//! a run is answered at once and skipped.

use std::collections::HashMap;
use std::mem::take;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;
use tokio_util::bytes::BytesMut;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use tracing::field::Empty;

use crate::Error;
use crate::budget::Limits;
use crate::ledger::{Ended, Fate, Ledger, Outcome, Settled, Summary};
use crate::pipeline::Context;
use crate::problems::Problems;
use crate::read::{Prepared, ReadLimits, prepare};
use crate::source::{Digest, OrdersSource, Stamp, fingerprint};
use crate::submit::{OrderSink, Submitter};

/// The pause before a span that could not be sent is tried again the first time: one tick
/// of the default cron, so that an answer that only looked permanent (a sidecar restarting
/// can give one) costs little.
pub const FIRST_PAUSE: Duration = Duration::from_secs(10);
/// The longest pause between attempts: a span that cannot be sent costs one refused
/// request, and one log line, at most this often.
pub const MAX_PAUSE: Duration = Duration::from_secs(15 * 60);

/// The pause after the `attempts`-th attempt that could not send a span.
pub fn pause(attempts: u32) -> Duration {
    let doublings = attempts.saturating_sub(1).min(16);
    FIRST_PAUSE.saturating_mul(1 << doublings).min(MAX_PAUSE)
}

/// A span of orders that cannot be sent as things are configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetAside {
    /// How many orders, from the position it is known by.
    pub len: usize,
    /// How many attempts failed.
    pub attempts: u32,
    /// When it is tried again.
    pub retry_at: Instant,
    /// Why it could not be sent.
    pub reason: String,
    /// What to change.
    pub what_to_change: String,
}

/// The last file whose every order was stored as it is.
#[derive(Debug, Clone, Copy)]
struct Accepted {
    digest: Digest,
    stamp: Stamp,
    orders: u64,
}

/// What remains known between runs, until the service restarts: the file last stored
/// completely (its fingerprint: it is not read past that again); for the current file,
/// each span of orders stored or refused as invalid (not sent again until the file
/// changes), and each span that could not be sent, with its next attempt after a pause
/// that doubles from [`FIRST_PAUSE`] up to [`MAX_PAUSE`]. About 50 bytes a chunk. (The
/// smaller chunk limits that order-processor's refusals taught are kept by the runner.)
#[derive(Debug, Default)]
pub struct Memory {
    /// The last file whose every order was stored as it is.
    accepted: Option<Accepted>,
    /// The file the spans below belong to.
    current: Option<Digest>,
    /// Spans stored or refused as invalid, by the position of their first order.
    settled: HashMap<usize, (usize, Settled)>,
    /// Spans that could not be sent, by the position of their first order.
    set_aside: HashMap<usize, SetAside>,
    /// Whether the problems of the current file were logged already.
    problems_logged: bool,
}

impl Memory {
    /// What earlier runs found for the `len` orders from `first`, when spans they settled
    /// cover exactly these: the worst of them.
    pub fn settled(&self, first: usize, len: usize) -> Option<Settled> {
        let end = first + len;
        let (mut at, mut worst) = (first, Settled::Clean);
        while at < end {
            let (span, settled) = self.settled.get(&at)?;
            at += span;
            worst = worst.max(*settled);
        }
        (at == end).then_some(worst)
    }

    /// The span of `len` orders from `first`, when it was set aside.
    pub fn set_aside(&self, first: usize, len: usize) -> Option<&SetAside> {
        self.set_aside.get(&first).filter(|s| s.len == len)
    }

    /// The span, when it was set aside and its pause is not over at `now`.
    pub fn held(&self, first: usize, len: usize, now: Instant) -> Option<&SetAside> {
        self.set_aside(first, len).filter(|s| now < s.retry_at)
    }

    /// Starts on the file `digest`: what was known of another file is forgotten.
    fn begin(&mut self, digest: Digest) {
        if self.current != Some(digest) {
            self.current = Some(digest);
            self.settled.clear();
            self.set_aside.clear();
            self.problems_logged = false;
        }
    }

    /// Forgets the current file (it changed while it was read).
    fn forget(&mut self) {
        self.current = None;
        self.settled.clear();
        self.set_aside.clear();
    }

    /// Keeps what this run found.
    fn remember(&mut self, ledger: &Ledger) {
        for entry in ledger.entries() {
            let settled = match &entry.fate {
                Fate::Stored { conflicts: 0, .. } => Settled::Clean,
                Fate::Stored { .. } => Settled::Conflicts,
                Fate::Rejected { settled: true } => Settled::Invalid,
                Fate::Unsendable {
                    set_aside,
                    tried: true,
                } => {
                    self.set_aside.insert(entry.first, set_aside.clone());
                    continue;
                }
                _ => continue,
            };
            self.settled.insert(entry.first, (entry.len, settled));
            if self.set_aside(entry.first, entry.len).is_some() {
                self.set_aside.remove(&entry.first);
            }
        }
    }
}

/// How a runner cuts and sends chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Most orders per chunk (`CHUNK_SIZE`).
    pub chunk_size: usize,
    /// Most bytes per chunk (`CHUNK_BYTES`).
    pub chunk_bytes: usize,
    /// Chunks on their way at once (`CHUNKS_IN_FLIGHT`).
    pub in_flight: usize,
    /// Retries of a call that may pass (`INVOKE_MAX_RETRIES`).
    pub max_retries: usize,
    /// The first back-off delay (`INVOKE_RETRY_DELAY_MS`).
    pub retry_delay: Duration,
    /// How the file is read.
    pub read: ReadLimits,
}

/// What a run finds when it looks at the file.
enum Looked {
    /// The file last stored completely, with this many orders.
    Unchanged(u64),
    /// Another file (with its stamp), ready to be sent.
    Changed(Stamp, Prepared),
}

/// Runs the file through the sink, one run at a time.
pub struct Runner<S> {
    memory: Arc<Mutex<Memory>>,
    shared: Arc<Shared<S>>,
}

struct Shared<S> {
    submitter: Submitter<S>,
    source: OrdersSource,
    /// Room for the request bodies of a small file, kept from run to run: memory that
    /// need not be mapped and cleared again each time (the size of the last such file,
    /// rounded up to a power of two: at most 16 MiB).
    spare: std::sync::Mutex<BytesMut>,
    limits: Arc<Limits>,
    in_flight: usize,
    read: ReadLimits,
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

impl<S: OrderSink> Runner<S> {
    /// A runner reading `source` and sending its chunks to `sink` as `settings` say.
    pub fn new(sink: S, source: OrdersSource, settings: Settings) -> Self {
        Self {
            memory: Arc::default(),
            shared: Arc::new(Shared {
                submitter: Submitter::new(sink, settings.max_retries, settings.retry_delay),
                source,
                spare: std::sync::Mutex::default(),
                limits: Arc::new(Limits::new(settings.chunk_size, settings.chunk_bytes)),
                in_flight: settings.in_flight.max(1),
                read: settings.read,
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
            orders.skipped = Empty,
            orders.deferred = Empty,
            orders.unsendable = Empty,
            otel.status_code = Empty,
        );
        let task = tokio::spawn(
            async move {
                let mut memory = memory;
                let summary = runner.execute(&mut memory).await;
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

    async fn execute(&self, memory: &mut Memory) -> Summary {
        let started = std::time::Instant::now();
        let shared = &self.shared;
        let mut ledger = Ledger::default();
        let summary =
            |ledger: &Ledger, ended| ledger.summary(ended, started.elapsed(), Instant::now());
        if shared.cancel.is_cancelled() {
            return summary(&ledger, Ended::Cancelled);
        }

        // A file whose stamp has not changed since it was stored is most likely the same:
        // its fingerprint tells, without parsing it. Any other is read, and its digest
        // taken as it is read. One blocking task: one hand-over per run.
        let looked = {
            let (source, limits, read) = (
                shared.source.clone(),
                Arc::clone(&shared.limits),
                shared.read,
            );
            let cancel = shared.cancel.clone();
            let accepted = memory.accepted;
            let runner = self.clone();
            crate::blocking(move || {
                let keep_going = || !cancel.is_cancelled();
                let stamp = source.stamp()?;
                if let Some(accepted) = accepted
                    && accepted.stamp == stamp
                    && fingerprint(&source, &keep_going)?.digest == accepted.digest
                {
                    return Ok(Looked::Unchanged(accepted.orders));
                }
                let mut spare = runner
                    .shared
                    .spare
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                let mut prepared = prepare(
                    &source,
                    stamp.bytes,
                    &limits,
                    read,
                    &keep_going,
                    take(&mut *spare),
                )?;
                *spare = take(&mut prepared.spare);
                Ok(match accepted {
                    Some(accepted) if accepted.digest == prepared.digest => {
                        Looked::Unchanged(accepted.orders)
                    }
                    _ => Looked::Changed(stamp, prepared),
                })
            })
            .await
        };
        let (stamp, prepared) = match looked.and_then(|looked| looked) {
            Ok(Looked::Unchanged(orders)) => {
                ledger.read = orders;
                return summary(&ledger, Ended::Unchanged);
            }
            Ok(Looked::Changed(stamp, prepared)) => (stamp, prepared),
            Err(error) => {
                if matches!(error, Error::Changed(_)) {
                    memory.forget();
                }
                return summary(&ledger, self.failed(&error));
            }
        };
        let digest = prepared.digest;
        memory.begin(digest);
        ledger.read = prepared.orders;

        let mut problems = Problems::new(!memory.problems_logged);
        let sent = Context::new(&shared.submitter, memory, &shared.limits)
            .run(
                prepared.feed,
                shared.in_flight,
                &shared.cancel,
                &mut ledger,
                &mut problems,
            )
            .await;
        problems.finish();
        memory.problems_logged = true;
        memory.remember(&ledger);
        let ended = match sent {
            _ if shared.cancel.is_cancelled() => Ended::Cancelled,
            Ok(()) => Ended::Finished,
            Err(error) => {
                if matches!(error, Error::Changed(_)) {
                    memory.forget();
                }
                self.failed(&error)
            }
        };
        let summary = summary(&ledger, ended);
        if summary.outcome == Outcome::Completed {
            memory.accepted = Some(Accepted {
                digest,
                stamp,
                orders: summary.read,
            });
        }
        summary
    }

    fn failed(&self, error: &Error) -> Ended {
        if self.shared.cancel.is_cancelled() || matches!(error, Error::Stopped) {
            Ended::Cancelled
        } else {
            Ended::Failed(error.to_string())
        }
    }
}
