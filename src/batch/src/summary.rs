//! The summary of a run, logged as one line (`"run finished"`) and returned by the
//! triggers: what became of every order of the file, each counted exactly once
//! ([`Summary::counts_add_up`]), and how the run ended.

use serde::Serialize;

use crate::progress::SetAside;
use crate::survey::MAX_LISTED;

/// How a run ended; its name is written in snake case (`<&str>::from`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default, strum::IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Outcome {
    /// Every order is stored as the file has it (now or by an earlier run).
    #[default]
    Completed,
    /// The file is one whose every order was settled; nothing was read past its digest.
    Unchanged,
    /// Some orders are not stored as the file has them: rejected, in conflict, left for
    /// the next run, or set aside.
    Partial,
    /// The file could not be used; what was stored before that is counted.
    Failed,
    /// The service is shutting down; the rest is left for the next run.
    Cancelled,
}

/// The figures of one run. Every order is counted once:
/// `read = inserted + already_present + conflicts + rejected + duplicates + skipped +
/// deferred + unsendable`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct Summary {
    /// How the run ended.
    pub outcome: Outcome,
    /// Orders in the file.
    pub read: u64,
    /// Orders sent to order-processor (each counted once, however often it was sent).
    pub submitted: u64,
    /// Orders newly stored.
    pub inserted: u64,
    /// Orders that were already stored as they are.
    pub already_present: u64,
    /// Orders already stored with different content, left unchanged.
    pub conflicts: u64,
    /// Invalid orders, and every copy of an id the file gives with different contents.
    pub rejected: u64,
    /// Copies of an order the file gives more than once the same way, beyond the first.
    pub duplicates: u64,
    /// Orders an earlier run of the same file settled.
    pub skipped: u64,
    /// Orders left for the next run: a call failed, order-processor looked down, or the
    /// run stopped (shut down, past its deadline, the file changed) before they were stored.
    pub deferred: u64,
    /// Orders that cannot be stored as things are (listed in `unsendable_chunks`).
    pub unsendable: u64,
    /// How long the run took.
    pub duration_ms: u64,
    /// Why the file could not be used, when it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The spans that cannot be stored, why, and what to change (at most [`MAX_LISTED`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unsendable_chunks: Vec<SetAside>,
    /// How many more spans cannot be stored, when there are more.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unsendable_chunks_not_listed: Option<u64>,
}

impl Summary {
    /// Whether every order read is counted exactly once.
    pub fn counts_add_up(&self) -> bool {
        self.read
            == self.inserted
                + self.already_present
                + self.conflicts
                + self.rejected
                + self.duplicates
                + self.skipped
                + self.deferred
                + self.unsendable
    }

    /// Takes how the run ended (a finished run as [`Outcome::Completed`], which becomes
    /// [`Outcome::Partial`] when some orders are not stored as the file has them), and
    /// lists the spans set aside.
    pub fn end(&mut self, outcome: Outcome, set_aside: &[SetAside]) {
        let listed = set_aside.len().min(MAX_LISTED);
        self.unsendable_chunks = set_aside[..listed].to_vec();
        self.unsendable_chunks_not_listed =
            (set_aside.len() > listed).then_some((set_aside.len() - listed) as u64);
        let clean = self.rejected + self.conflicts + self.deferred + self.unsendable == 0;
        self.outcome = match outcome {
            Outcome::Completed if !clean => Outcome::Partial,
            outcome => outcome,
        };
    }

    /// Puts the outcome and the counts on the run's span, where a trace shows them: each
    /// count as `orders.` and its name in JSON, for the counts the span declares
    /// ([`crate::runner::Runner::run`]).
    pub fn record_on(&self, span: &tracing::Span) {
        span.record("outcome", <&str>::from(self.outcome));
        let json = serde_json::to_value(self).unwrap_or_default();
        for (name, count) in json.as_object().into_iter().flatten() {
            span.record(format!("orders.{name}").as_str(), count.as_u64());
        }
        if self.outcome == Outcome::Failed {
            span.record("otel.status_code", "ERROR");
        }
    }

    /// Logs the summary as one line: at info when all is well, at warn when some orders
    /// are not stored, at error when the file could not be used.
    pub fn log(&self, trigger: &str) {
        let unsendable_chunks = (!self.unsendable_chunks.is_empty())
            .then(|| serde_json::to_string(&self.unsendable_chunks).unwrap_or_default());
        macro_rules! summary_line {
            ($level:ident) => {
                tracing::$level!(
                    trigger,
                    outcome = <&str>::from(self.outcome),
                    read = self.read,
                    submitted = self.submitted,
                    inserted = self.inserted,
                    already_present = self.already_present,
                    conflicts = self.conflicts,
                    rejected = self.rejected,
                    duplicates = self.duplicates,
                    skipped = self.skipped,
                    deferred = self.deferred,
                    unsendable = self.unsendable,
                    duration_ms = self.duration_ms,
                    error = self.error.as_deref(),
                    unsendable_chunks = unsendable_chunks.as_deref(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outcome_is_logged_by_the_name_its_json_gives_it() {
        use Outcome::*;
        for outcome in [Completed, Unchanged, Partial, Failed, Cancelled] {
            let json = serde_json::to_value(outcome).unwrap();
            assert_eq!(json, <&str>::from(outcome));
        }
    }

    #[test]
    fn the_identity_fails_when_an_order_is_counted_twice_or_not_at_all() {
        let mut summary = Summary {
            read: 11,
            inserted: 4,
            rejected: 2,
            duplicates: 1,
            skipped: 2,
            deferred: 1,
            ..Summary::default()
        };
        assert!(!summary.counts_add_up(), "10 of 11 counted");
        summary.unsendable = 1;
        assert!(summary.counts_add_up());
        summary.conflicts = 1;
        assert!(!summary.counts_add_up(), "12 of 11 counted");
    }

    #[test]
    fn a_run_is_completed_only_when_every_order_is_stored_as_the_file_has_it() {
        let ended = |summary: Summary, how| {
            let mut summary = summary;
            summary.end(how, &[]);
            summary.outcome
        };
        let stored = Summary {
            read: 3,
            inserted: 2,
            duplicates: 1,
            ..Summary::default()
        };
        assert_eq!(
            ended(stored.clone(), Outcome::Completed),
            Outcome::Completed
        );
        let rejected = Summary {
            rejected: 1,
            ..stored.clone()
        };
        assert_eq!(
            ended(rejected.clone(), Outcome::Completed),
            Outcome::Partial
        );
        assert_eq!(ended(rejected, Outcome::Cancelled), Outcome::Cancelled);
        assert_eq!(ended(stored, Outcome::Failed), Outcome::Failed);
    }
}
