//! The ledger of a run: what became of each chunk (or part of one), and the summary that
//! is derived from it, logged as one line and returned by the triggers, in which every
//! order of the file is counted exactly once whatever the run's outcome (see [`Summary`]).

use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::runner::SetAside;

/// At most this many chunks that cannot be sent are listed in a summary; the rest are
/// counted.
pub const MAX_LISTED: usize = 20;

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Every order is stored as the file has it (now or by an earlier run).
    Completed,
    /// The file is the one last stored completely; nothing was sent.
    Unchanged,
    /// Some orders are not stored as the file has them: invalid, in conflict, left for the
    /// next run, or not sendable as things are configured.
    Partial,
    /// The file could not be used; what was stored before that is counted.
    Failed,
    /// The service is shutting down; the rest is left for the next run.
    Cancelled,
}

/// What an earlier run of the same file found for a span of orders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Settled {
    /// Stored as the file has it.
    Clean,
    /// Stored, but some ids were already stored with other content.
    Conflicts,
    /// Refused by order-processor as invalid.
    Invalid,
}

/// What became of a span of orders in this run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fate {
    /// Sent and stored.
    Stored {
        /// Orders new in the database.
        inserted: u64,
        /// Orders already stored with the same content.
        unchanged: u64,
        /// Orders already stored with other content.
        conflicts: u64,
    },
    /// Refused as invalid, by order-processor (`settled`: not sent again for this file) or
    /// by batch (checked again on every run).
    Rejected {
        /// Whether order-processor refused it.
        settled: bool,
    },
    /// Stored or refused by an earlier run of the same file.
    Skipped(Settled),
    /// Cannot be sent as things are configured; set aside until its next attempt.
    Unsendable {
        /// Why, what to change and when it is tried again.
        set_aside: SetAside,
        /// Whether it was tried in this run (else it waits for its next attempt).
        tried: bool,
    },
    /// Left for the next run: a failure that may pass, or the target looked down.
    Deferred,
}

/// One span of orders and its fate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The chunk the span belongs to.
    pub chunk: usize,
    /// Position of its first order in the file.
    pub first: usize,
    /// How many orders.
    pub len: usize,
    /// What became of them.
    pub fate: Fate,
}

/// How a run ended, before its figures are known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// Every chunk was dealt with.
    Finished,
    /// The file is the one last stored completely.
    Unchanged,
    /// The run was cancelled.
    Cancelled,
    /// The file could not be used, for this reason.
    Failed(String),
}

/// What became of every chunk of a run.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Orders in the file, once known.
    pub read: u64,
    /// Orders sent to order-processor at least once.
    pub submitted: u64,
    entries: Vec<Entry>,
}

impl Ledger {
    /// Notes what became of a span.
    pub fn record(&mut self, entry: Entry) {
        self.entries.push(entry);
    }

    /// Every span noted, in the order they were noted.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The run's figures; `now` dates the next attempts of what was set aside.
    pub fn summary(&self, ended: Ended, duration: Duration, now: Instant) -> Summary {
        let mut summary = Summary {
            outcome: Outcome::Completed,
            read: self.read,
            submitted: self.submitted,
            inserted: 0,
            already_present: 0,
            conflicts: 0,
            rejected: 0,
            skipped: 0,
            deferred: 0,
            unsendable: 0,
            duration_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
            error: None,
            unsendable_chunks: Vec::new(),
            unsendable_chunks_not_listed: 0,
        };
        let mut clean = true;
        for entry in &self.entries {
            let len = entry.len as u64;
            match &entry.fate {
                Fate::Stored {
                    inserted,
                    unchanged,
                    conflicts,
                } => {
                    summary.inserted += inserted;
                    summary.already_present += unchanged;
                    summary.conflicts += conflicts;
                    clean &= *conflicts == 0;
                }
                Fate::Rejected { .. } => {
                    summary.rejected += len;
                    clean = false;
                }
                Fate::Skipped(settled) => {
                    summary.skipped += len;
                    clean &= *settled == Settled::Clean;
                }
                Fate::Unsendable { set_aside, .. } => {
                    summary.unsendable += len;
                    clean = false;
                    if summary.unsendable_chunks.len() < MAX_LISTED {
                        summary
                            .unsendable_chunks
                            .push(UnsendableChunk::new(entry, set_aside, now));
                    } else {
                        summary.unsendable_chunks_not_listed += 1;
                    }
                }
                Fate::Deferred => clean = false,
            }
        }
        let accounted = summary.inserted
            + summary.already_present
            + summary.conflicts
            + summary.rejected
            + summary.skipped
            + summary.unsendable;
        debug_assert!(
            accounted <= summary.read,
            "{accounted} of {} orders",
            summary.read
        );
        summary.deferred = summary.read.saturating_sub(accounted);
        summary.outcome = match ended {
            Ended::Cancelled => Outcome::Cancelled,
            Ended::Failed(error) => {
                summary.error = Some(error);
                Outcome::Failed
            }
            Ended::Unchanged => {
                summary.skipped += summary.deferred;
                summary.deferred = 0;
                Outcome::Unchanged
            }
            Ended::Finished if clean && summary.deferred == 0 => Outcome::Completed,
            Ended::Finished => Outcome::Partial,
        };
        summary
    }
}

/// The figures of one run, logged as one line and returned by the trigger endpoints.
/// Every order is counted once:
/// `read = inserted + already_present + conflicts + rejected + skipped + deferred + unsendable`.
/// Orders no entry of the ledger accounts for (not read yet, or on their way, when the run
/// was cancelled or failed) count as deferred: the next run sends them.
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
    /// Orders left for the next run: a call failed, order-processor looked down, or the
    /// run stopped before they were stored.
    pub deferred: u64,
    /// Orders in chunks that cannot be sent as things are configured (listed in
    /// `unsendable_chunks`).
    pub unsendable: u64,
    /// How long the run took.
    pub duration_ms: u64,
    /// Why the file could not be used, when it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The chunks that cannot be sent, why, and what to change (at most [`MAX_LISTED`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unsendable_chunks: Vec<UnsendableChunk>,
    /// How many more chunks cannot be sent.
    #[serde(skip_serializing_if = "is_zero")]
    pub unsendable_chunks_not_listed: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A chunk (or part of one) that cannot be sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnsendableChunk {
    /// The chunk's position in the file, from 0.
    pub chunk: usize,
    /// Position of the first of its orders in the file, from 0.
    pub first: usize,
    /// How many orders.
    pub orders: usize,
    /// What went wrong.
    pub reason: String,
    /// The setting or deployment to change.
    pub what_to_change: String,
    /// When it is tried again, in seconds from the end of this run.
    pub next_attempt_in_secs: u64,
}

impl UnsendableChunk {
    fn new(entry: &Entry, set_aside: &SetAside, now: Instant) -> Self {
        Self {
            chunk: entry.chunk,
            first: entry.first,
            orders: entry.len,
            reason: set_aside.reason.clone(),
            what_to_change: set_aside.what_to_change.clone(),
            next_attempt_in_secs: set_aside.retry_at.saturating_duration_since(now).as_secs(),
        }
    }
}

impl Summary {
    /// Whether every order read is counted exactly once: read = inserted + already present
    /// + conflicts + rejected + skipped + deferred + unsendable.
    pub fn counts_add_up(&self) -> bool {
        self.read
            == self.inserted
                + self.already_present
                + self.conflicts
                + self.rejected
                + self.skipped
                + self.deferred
                + self.unsendable
    }

    /// Puts the outcome and the counts on the run's span (declared in
    /// [`crate::runner::Runner::run`]), where a trace shows them.
    pub fn record_on(&self, span: &tracing::Span) {
        span.record("outcome", self.outcome.as_str());
        span.record("orders.read", self.read);
        span.record("orders.submitted", self.submitted);
        span.record("orders.inserted", self.inserted);
        span.record("orders.already_present", self.already_present);
        span.record("orders.conflicts", self.conflicts);
        span.record("orders.rejected", self.rejected);
        span.record("orders.skipped", self.skipped);
        span.record("orders.deferred", self.deferred);
        span.record("orders.unsendable", self.unsendable);
        if self.outcome == Outcome::Failed {
            span.record("otel.status_code", "ERROR");
        }
    }

    /// Logs the summary as one line: at info when all is well, at warn when some orders
    /// are not stored, at error when the file could not be used.
    pub fn log(&self, trigger: &str) {
        let unsendable_chunks = serde_json::to_string(&self.unsendable_chunks).unwrap_or_default();
        macro_rules! summary_line {
            ($level:ident) => {
                tracing::$level!(
                    trigger,
                    outcome = self.outcome.as_str(),
                    read = self.read,
                    submitted = self.submitted,
                    inserted = self.inserted,
                    already_present = self.already_present,
                    conflicts = self.conflicts,
                    rejected = self.rejected,
                    skipped = self.skipped,
                    deferred = self.deferred,
                    unsendable = self.unsendable,
                    duration_ms = self.duration_ms,
                    error = self.error.as_deref(),
                    unsendable_chunks =
                        (!self.unsendable_chunks.is_empty()).then_some(unsendable_chunks.as_str()),
                    "run finished"
                )
            };
        }
        match self.outcome {
            Outcome::Failed => summary_line!(error),
            Outcome::Partial | Outcome::Cancelled => summary_line!(warn),
            Outcome::Completed | Outcome::Unchanged => summary_line!(info),
        }
    }
}

impl Outcome {
    /// The outcome as it is written in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Unchanged => "unchanged",
            Self::Partial => "partial",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(first: usize, len: usize, fate: Fate) -> Entry {
        Entry {
            chunk: first / 10,
            first,
            len,
            fate,
        }
    }

    fn stored(n: u64, conflicts: u64) -> Fate {
        Fate::Stored {
            inserted: n - conflicts,
            unchanged: 0,
            conflicts,
        }
    }

    fn set_aside(now: Instant) -> Fate {
        Fate::Unsendable {
            set_aside: SetAside {
                len: 10,
                attempts: 1,
                retry_at: now + Duration::from_secs(60),
                reason: "the Dapr sidecar answered 404 Not Found".into(),
                what_to_change: "TARGET_APP_ID".into(),
            },
            tried: true,
        }
    }

    #[test]
    fn every_order_is_counted_once_whatever_the_outcome() {
        let now = Instant::now();
        let mut ledger = Ledger {
            read: 60,
            ..Ledger::default()
        };
        ledger.record(entry(0, 10, stored(10, 0)));
        ledger.record(entry(10, 10, Fate::Rejected { settled: true }));
        ledger.record(entry(20, 10, Fate::Skipped(Settled::Clean)));
        ledger.record(entry(30, 10, set_aside(now)));
        ledger.record(entry(40, 10, Fate::Deferred));
        for ended in [
            Ended::Finished,
            Ended::Cancelled,
            Ended::Failed("x".into()),
            Ended::Unchanged,
        ] {
            let summary = ledger.summary(ended.clone(), Duration::ZERO, now);
            assert!(summary.counts_add_up(), "{ended:?}: {summary:?}");
        }
        let summary = ledger.summary(Ended::Cancelled, Duration::ZERO, now);
        // The last 10 were never read: deferred like the 10 that failed.
        assert_eq!((summary.deferred, summary.inserted), (20, 10));
    }

    #[test]
    fn a_failure_keeps_what_was_stored_as_stored() {
        let mut ledger = Ledger {
            read: 30,
            ..Ledger::default()
        };
        ledger.record(entry(0, 10, stored(10, 0)));
        let summary = ledger.summary(
            Ended::Failed("changed".into()),
            Duration::ZERO,
            Instant::now(),
        );
        assert_eq!(summary.outcome, Outcome::Failed);
        assert_eq!((summary.inserted, summary.deferred), (10, 20));
    }

    #[test]
    fn conflicts_make_a_run_partial_now_and_when_skipped_later() {
        let mut ledger = Ledger {
            read: 10,
            ..Ledger::default()
        };
        ledger.record(entry(0, 10, stored(10, 1)));
        let summary = ledger.summary(Ended::Finished, Duration::ZERO, Instant::now());
        assert_eq!((summary.outcome, summary.conflicts), (Outcome::Partial, 1));

        let mut later = Ledger {
            read: 10,
            ..Ledger::default()
        };
        later.record(entry(0, 10, Fate::Skipped(Settled::Conflicts)));
        let summary = later.summary(Ended::Finished, Duration::ZERO, Instant::now());
        assert_eq!(summary.outcome, Outcome::Partial);
    }

    #[test]
    fn only_a_run_where_everything_is_stored_cleanly_is_completed() {
        let mut ledger = Ledger {
            read: 20,
            ..Ledger::default()
        };
        ledger.record(entry(0, 10, stored(10, 0)));
        ledger.record(entry(10, 10, Fate::Skipped(Settled::Clean)));
        let summary = ledger.summary(Ended::Finished, Duration::ZERO, Instant::now());
        assert_eq!(summary.outcome, Outcome::Completed);
        ledger.read = 21;
        let summary = ledger.summary(Ended::Finished, Duration::ZERO, Instant::now());
        assert_eq!((summary.outcome, summary.deferred), (Outcome::Partial, 1));
    }

    #[test]
    fn unsendable_chunks_are_listed_with_why_and_when_up_to_a_bound() {
        let now = Instant::now();
        let mut ledger = Ledger {
            read: 10 * (MAX_LISTED as u64 + 5),
            ..Ledger::default()
        };
        for i in 0..MAX_LISTED + 5 {
            ledger.record(entry(i * 10, 10, set_aside(now)));
        }
        let summary = ledger.summary(Ended::Finished, Duration::ZERO, now);
        assert_eq!(summary.unsendable, ledger.read);
        assert_eq!(summary.unsendable_chunks.len(), MAX_LISTED);
        assert_eq!(summary.unsendable_chunks_not_listed, 5);
        let json = serde_json::to_value(&summary).unwrap();
        assert_eq!(
            json["unsendable_chunks"][1],
            serde_json::json!({
                "chunk": 1, "first": 10, "orders": 10,
                "reason": "the Dapr sidecar answered 404 Not Found",
                "what_to_change": "TARGET_APP_ID", "next_attempt_in_secs": 60,
            })
        );
    }
}
