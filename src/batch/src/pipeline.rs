//! Sending a file's chunks: up to `CHUNKS_IN_FLIGHT` at once
//! ([`StreamExt::buffer_unordered`] over the chunk stream), until the stream ends, the file
//! fails or the run's cancellation token fires (then the chunks on their way are
//! abandoned: each is stored whole or not at all, and the next run sends it again). What
//! happens to each chunk is said at [`Context::run`].

use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use common::order::OrderError;
use futures_util::StreamExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use tracing::field::Empty;

use crate::Error;
use crate::budget::{Limits, largest_order};
use crate::chunks::{Chunk, Content, Piece};
use crate::ledger::{Entry, Fate, Ledger, Settled};
use crate::outcome::{ChunkOutcome, Limit};
use crate::problems::Problems;
use crate::read::Feed;
use crate::runner::{Memory, SetAside, pause};
use crate::submit::{OrderSink, Submitter};

/// Failures in a row, with nothing stored in between, after which order-processor looks down.
const DOWN_AFTER: u32 = 2;

/// What a run's chunks are sent with.
pub struct Context<'a, S> {
    /// Sends and retries.
    pub submitter: &'a Submitter<S>,
    /// What earlier runs of the file found.
    pub memory: &'a Memory,
    /// The size of the chunks still to be cut.
    pub limits: &'a Limits,
    /// Failures in a row, and whether order-processor looks down.
    failures: AtomicU32,
    down: AtomicBool,
}

/// What became of a span of orders, with what there is to say about it.
#[derive(Debug)]
pub enum Happened {
    /// Stored.
    Stored {
        /// Orders new in the database.
        inserted: u64,
        /// Orders already stored as they are.
        unchanged: u64,
        /// Ids already stored with other content.
        conflicts: Vec<i64>,
    },
    /// Not sent: batch found invalid orders.
    InvalidHere(Vec<OrderError>),
    /// Refused by order-processor as invalid (positions counted in the file).
    InvalidThere {
        /// order-processor's message.
        message: String,
        /// Each bad order.
        details: Vec<OrderError>,
    },
    /// Settled by an earlier run.
    Skipped(Settled),
    /// Cannot be sent; set aside (`tried`: in this run).
    Unsendable {
        /// Why, what to change, when next.
        set_aside: SetAside,
        /// Whether it was tried in this run.
        tried: bool,
    },
    /// Left for the next run, for this reason.
    Deferred(String),
}

/// A span of orders and what became of it.
#[derive(Debug)]
pub struct Done {
    /// The chunk it belongs to.
    pub chunk: usize,
    /// Position of its first order in the file.
    pub first: usize,
    /// How many orders.
    pub len: usize,
    /// What became of them.
    pub happened: Happened,
}

/// What became of one chunk: of the chunk, or of each of its parts.
#[derive(Debug)]
pub struct Report {
    /// Orders sent at least once.
    pub submitted: u64,
    /// Each span.
    pub done: Vec<Done>,
}

impl<'a, S: OrderSink> Context<'a, S> {
    /// Sends with `submitter`, skipping what `memory` says is settled.
    pub fn new(submitter: &'a Submitter<S>, memory: &'a Memory, limits: &'a Limits) -> Self {
        Self {
            submitter,
            memory,
            limits,
            failures: AtomicU32::new(0),
            down: AtomicBool::new(false),
        }
    }

    /// Sends the chunks of `feed`, `in_flight` at once, until they are all dealt with or
    /// `cancel` fires, noting each in `ledger` and its problems in `problems`. Returns the
    /// file's failure, if it failed while being read. A chunk, or each half of one, that
    /// an earlier run of the file settled is skipped; one set aside whose pause is not over
    /// is counted unsendable again; any other is sent, and then:
    /// - too large: split in halves, and the chunks cut after it are made smaller;
    /// - cannot be sent: set aside for a pause that doubles with each attempt
    ///   ([`crate::runner::pause`]); the chunks after it go on;
    /// - a failure that may pass (after the submitter's retries): left for the next run.
    ///   Two such in a row, with nothing stored or refused in between, mean
    ///   order-processor looks down: the chunks not sent yet wait for the next run too,
    ///   instead of each spending the whole back-off on a target that is not there. One
    ///   failing chunk alone does not stop the file: the next one is tried and, when it is
    ///   stored, so are the rest.
    pub async fn run(
        &self,
        feed: Feed,
        in_flight: usize,
        cancel: &CancellationToken,
        ledger: &mut Ledger,
        problems: &mut Problems,
    ) -> Result<(), Error> {
        let results = feed
            .into_stream()
            .map(|chunk| async move { Ok(self.handle(chunk?).await) })
            .buffer_unordered(in_flight.max(1));
        let mut results = pin!(results);
        let mut failure = Ok(());
        loop {
            let next = tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                next = results.next() => next,
            };
            match next {
                None => break,
                Some(Ok(report)) => {
                    ledger.submitted += report.submitted;
                    for done in report.done {
                        problems.note(&done);
                        ledger.record(done.into_entry());
                    }
                }
                Some(Err(error)) => failure = Err(error),
            }
        }
        failure
    }

    async fn handle(&self, chunk: Chunk) -> Report {
        match chunk.content {
            Content::Invalid(errors) => Report {
                submitted: 0,
                done: vec![Done {
                    chunk: chunk.index,
                    first: chunk.first,
                    len: chunk.len,
                    happened: Happened::InvalidHere(errors),
                }],
            },
            Content::Sendable(piece) => self.deliver(piece).await,
        }
    }

    /// Sends a chunk, and its halves when it is too large.
    async fn deliver(&self, whole: Piece) -> Report {
        let mut report = Report {
            submitted: 0,
            done: Vec::new(),
        };
        let orders = whole.len() as u64;
        let mut work = vec![whole];
        while let Some(piece) = work.pop() {
            let (chunk, first, len) = (piece.chunk, piece.first, piece.len());
            let happened = if let Some(settled) = self.memory.settled(first, len) {
                Happened::Skipped(settled)
            } else if let Some(set_aside) = self.memory.held(first, len, Instant::now()) {
                Happened::Unsendable {
                    set_aside: set_aside.clone(),
                    tried: false,
                }
            } else if self.down.load(Ordering::Relaxed) {
                Happened::Deferred("order-processor looks down".to_owned())
            } else if self.over_limits(&piece) {
                // Cut before order-processor taught smaller limits: halve it unsent.
                match halves(piece).await {
                    Ok((front, back)) => {
                        work.extend([back, front]);
                        continue;
                    }
                    Err(happened) => happened,
                }
            } else {
                report.submitted = orders;
                let span = tracing::info_span!(
                    "chunk",
                    otel.kind = "client",
                    chunk,
                    first,
                    orders = len,
                    outcome = Empty,
                    inserted = Empty,
                );
                let traceparent = common::trace_context::traceparent(&span);
                let outcome = self
                    .submitter
                    .submit(&piece.body, len, traceparent.as_deref())
                    .instrument(span.clone())
                    .await;
                span.record("outcome", outcome.name());
                if let ChunkOutcome::Stored { inserted, .. } = outcome {
                    span.record("inserted", inserted);
                }
                match outcome {
                    ChunkOutcome::TooLarge { limit, reason } if len > 1 => {
                        self.lower(&piece, limit, &reason);
                        match halves(piece).await {
                            Ok((front, back)) => {
                                work.extend([back, front]);
                                continue;
                            }
                            Err(happened) => happened,
                        }
                    }
                    outcome => self.settle(first, len, outcome),
                }
            };
            report.done.push(Done {
                chunk,
                first,
                len,
                happened,
            });
        }
        report
    }

    /// Whether a piece of several orders is larger than chunks are now cut.
    fn over_limits(&self, piece: &Piece) -> bool {
        piece.len() > 1
            && (piece.len() > self.limits.orders() || piece.size().largest() > self.limits.bytes())
    }

    /// What an outcome other than too large means for a span, noting the target's health.
    fn settle(&self, first: usize, len: usize, outcome: ChunkOutcome) -> Happened {
        match outcome {
            ChunkOutcome::Stored {
                inserted,
                unchanged,
                conflicts,
            } => {
                self.failures.store(0, Ordering::Relaxed);
                Happened::Stored {
                    inserted,
                    unchanged,
                    conflicts,
                }
            }
            ChunkOutcome::Invalid { message, details } => {
                self.failures.store(0, Ordering::Relaxed);
                let details = details
                    .into_iter()
                    .map(|mut error| {
                        error.index += first;
                        error
                    })
                    .collect();
                Happened::InvalidThere { message, details }
            }
            ChunkOutcome::RetryLater { reason } => {
                let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
                if failures >= DOWN_AFTER && !self.down.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        failures,
                        "order-processor looks down: the chunks not sent yet wait for the next run"
                    );
                }
                Happened::Deferred(reason)
            }
            ChunkOutcome::CannotSend {
                reason,
                what_to_change,
            } => self.set_aside(first, len, reason, what_to_change),
            ChunkOutcome::TooLarge { limit, reason } => {
                let what_to_change = match limit {
                    Limit::Orders => "order-processor refuses even one order per request: \
                                      check its MAX_ORDERS_PER_REQUEST"
                        .to_owned(),
                    Limit::Bytes => format!(
                        "raise the request body limits of the sidecars and order-processor to \
                         at least {} bytes, what the largest valid order takes",
                        largest_order().largest()
                    ),
                };
                self.set_aside(first, len, reason, what_to_change)
            }
        }
    }

    /// Lowers the limit a piece of several orders passed, so that the chunks cut after it
    /// are smaller, and says the first time which setting to change.
    fn lower(&self, piece: &Piece, limit: Limit, reason: &str) {
        let at_most = match limit {
            Limit::Orders => piece.len().div_ceil(2),
            Limit::Bytes => (piece.size().largest() / 2).max(largest_order().largest()),
        };
        if !self.limits.lower(limit, at_most) {
            return;
        }
        let configured = self.limits.configured(limit);
        match limit {
            Limit::Orders => tracing::warn!(
                reason,
                chunk_size = configured,
                "order-processor takes fewer orders per request than batch sends: chunks are \
                 split, and made smaller for as long as batch runs. Set CHUNK_SIZE of batch to \
                 at most MAX_ORDERS_PER_REQUEST of order-processor"
            ),
            Limit::Bytes => tracing::warn!(
                reason,
                chunk_bytes = configured,
                "a chunk was too large for order-processor or its sidecar: chunks are split, \
                 and made smaller for as long as batch runs. Lower CHUNK_BYTES of batch"
            ),
        }
    }

    fn set_aside(
        &self,
        first: usize,
        len: usize,
        reason: String,
        what_to_change: String,
    ) -> Happened {
        let attempts = self
            .memory
            .set_aside(first, len)
            .map_or(1, |earlier| earlier.attempts + 1);
        Happened::Unsendable {
            set_aside: SetAside {
                len,
                attempts,
                retry_at: Instant::now() + pause(attempts),
                reason,
                what_to_change,
            },
            tried: true,
        }
    }
}

/// The halves of a piece of several orders. Copying their bodies is blocking work, kept
/// off the async runtime.
async fn halves(piece: Piece) -> Result<(Piece, Piece), Happened> {
    match crate::blocking(move || piece.split()).await {
        Ok(Some(halves)) => Ok(halves),
        Ok(None) | Err(_) => Err(Happened::Deferred(
            "the chunk could not be split".to_owned(),
        )),
    }
}

impl Done {
    /// The ledger's entry: what counts, without what is only logged.
    pub fn into_entry(self) -> Entry {
        let fate = match self.happened {
            Happened::Stored {
                inserted,
                unchanged,
                conflicts,
            } => Fate::Stored {
                inserted,
                unchanged,
                conflicts: conflicts.len() as u64,
            },
            Happened::InvalidHere(_) => Fate::Rejected { settled: false },
            Happened::InvalidThere { .. } => Fate::Rejected { settled: true },
            Happened::Skipped(settled) => Fate::Skipped(settled),
            Happened::Unsendable { set_aside, tried } => Fate::Unsendable { set_aside, tried },
            Happened::Deferred(_) => Fate::Deferred,
        };
        Entry {
            chunk: self.chunk,
            first: self.first,
            len: self.len,
            fate,
        }
    }
}
