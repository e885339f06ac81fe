//! What batch remembers of the current file between runs, until it restarts
//! ([`FileProgress`]): which of its orders to send are settled (stored, or found stored
//! with other content: not sent again for this file), and which are set aside because
//! they cannot be stored as things are, each span with its next attempt after a pause
//! that doubles from [`FIRST_PAUSE`] up to [`MAX_PAUSE`]. A file whose every order to send
//! is settled is done: later runs skip it until it changes. A byte an order, plus a few
//! bytes a span set aside.

use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::cut::Chunk;
use crate::source::Digest;
use crate::survey::Survey;

/// The pause before orders that could not be stored are tried again the first time: one
/// tick of the default cron, so that a refusal that only looked permanent costs little.
pub const FIRST_PAUSE: Duration = Duration::from_secs(10);
/// The longest pause: orders that cannot be stored cost one refused request, and one log
/// line, at most this often.
pub const MAX_PAUSE: Duration = Duration::from_secs(15 * 60);

/// The pause after the `attempts`-th failed attempt.
pub fn pause(attempts: u32) -> Duration {
    let doublings = attempts.saturating_sub(1).min(16);
    FIRST_PAUSE.saturating_mul(1 << doublings).min(MAX_PAUSE)
}

/// Orders that cannot be stored as things are, waiting for their next attempt; listed so
/// in a run's summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SetAside {
    /// The chunk they were sent in, in the run that set them aside.
    pub chunk: usize,
    /// The position in the file of the first.
    pub first: u64,
    /// How many.
    pub orders: usize,
    /// Why they could not be stored.
    pub reason: String,
    /// The setting, deployment or database to change.
    pub what_to_change: String,
    /// How many attempts failed.
    pub attempts: u32,
    /// When they are tried again, in seconds from the end of the run that lists them.
    pub next_attempt_in_secs: u64,
    /// The number of the first among the orders to send.
    #[serde(skip)]
    pub start: usize,
    #[serde(skip)]
    retry_at: Instant,
    /// Whether this run tried them again: the entry gives way at the run's end.
    #[serde(skip)]
    retried: bool,
}

impl SetAside {
    fn overlaps(&self, start: usize, len: usize) -> bool {
        self.start < start + len && start < self.start + self.orders
    }
}

/// What is known of one file.
#[derive(Debug)]
pub struct FileProgress {
    /// The file's digest.
    pub digest: Digest,
    /// How many orders it holds.
    pub read: u64,
    settled: Vec<bool>,
    set_aside: Vec<SetAside>,
    new_set_aside: Vec<SetAside>,
}

impl FileProgress {
    /// A file nothing is known of yet but what its first pass found.
    pub fn of(survey: &Survey) -> Self {
        Self {
            digest: survey.digest,
            read: survey.read,
            settled: vec![false; survey.sendable],
            set_aside: Vec::new(),
            new_set_aside: Vec::new(),
        }
    }

    /// For each order to send, by its number, whether it is skipped as a run begins at
    /// `now`: `Some(true)` when settled, `Some(false)` when set aside and its pause is not
    /// over.
    pub fn skips(&self, now: Instant) -> Vec<Option<bool>> {
        let mut skips: Vec<_> = self.settled.iter().map(|s| s.then_some(true)).collect();
        for span in self.set_aside.iter().filter(|s| now < s.retry_at) {
            for skip in &mut skips[span.start..span.start + span.orders] {
                *skip = skip.or(Some(false));
            }
        }
        skips
    }

    /// Notes that the `len` orders from `start` are settled.
    pub fn settle(&mut self, start: usize, len: usize) {
        self.settled[start..start + len].fill(true);
        self.mark_retried(start, len);
    }

    /// Sets the orders of `chunk` aside, one attempt more than the spans they were in before.
    pub fn set_aside(&mut self, chunk: &Chunk, reason: String, what_to_change: String) {
        let (start, orders) = (chunk.start, chunk.len());
        let overlapping = self.set_aside.iter().filter(|s| s.overlaps(start, orders));
        let attempts = overlapping.map(|s| s.attempts).max().unwrap_or(0) + 1;
        let entry = SetAside {
            chunk: chunk.index,
            first: chunk.first_position(),
            orders,
            reason,
            what_to_change,
            attempts,
            next_attempt_in_secs: 0,
            start,
            retry_at: Instant::now() + pause(attempts),
            retried: false,
        };
        self.mark_retried(start, orders);
        self.new_set_aside.push(entry);
    }

    /// At the end of a run: the spans it tried again give way to what it found; returns
    /// every span set aside, in file order, as of `now`.
    pub fn end_run(&mut self, now: Instant) -> &[SetAside] {
        self.set_aside.retain(|s| !s.retried);
        self.set_aside.append(&mut self.new_set_aside);
        self.set_aside.sort_by_key(|s| s.start);
        for span in &mut self.set_aside {
            span.next_attempt_in_secs = span.retry_at.saturating_duration_since(now).as_secs();
        }
        &self.set_aside
    }

    /// Whether every order to send is settled: nothing is left to retry.
    pub fn done(&self) -> bool {
        self.settled.iter().all(|settled| *settled)
    }

    fn mark_retried(&mut self, start: usize, len: usize) {
        for entry in self.set_aside.iter_mut().filter(|s| s.overlaps(start, len)) {
            entry.retried = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use common::wire::Size;

    use super::*;
    use crate::cut::{Cutter, Limits};

    fn file(sendable: usize) -> FileProgress {
        FileProgress {
            digest: [0; 32],
            read: sendable as u64,
            settled: vec![false; sendable],
            set_aside: Vec::new(),
            new_set_aside: Vec::new(),
        }
    }

    /// Sets orders `start..start + len` aside, as one chunk.
    fn aside(progress: &mut FileProgress, start: usize, len: usize) {
        let mut cutter = Cutter::new(Arc::new(Limits::new(len, usize::MAX)));
        let json = br#"{"orderid":1,"customer":"A","price":1}"#;
        for number in start..start + len {
            let size = Size::new(json, json.len());
            assert!(cutter.push(number, number as u64, json, size).is_none());
        }
        let chunk = cutter.finish().unwrap();
        progress.set_aside(&chunk, "404".into(), "TARGET_APP_ID".into());
    }

    #[test]
    fn pauses_double_up_to_the_longest() {
        let pauses: Vec<u64> = (1..=9).map(|n| pause(n).as_secs()).collect();
        assert_eq!(pauses, vec![10, 20, 40, 80, 160, 320, 640, 900, 900]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_span_set_aside_again_counts_its_attempts_and_waits_longer() {
        let mut progress = file(10);
        aside(&mut progress, 0, 4);
        assert_eq!(progress.end_run(Instant::now())[0].next_attempt_in_secs, 10);
        let skips = progress.skips(Instant::now());
        assert_eq!((skips[3], skips[4]), (Some(false), None));
        tokio::time::advance(FIRST_PAUSE).await;
        assert_eq!(progress.skips(Instant::now())[0], None, "its pause is over");
        // Tried again in halves: one is stored, the other set aside a second time.
        progress.settle(0, 2);
        aside(&mut progress, 2, 2);
        let spans = progress.end_run(Instant::now()).to_vec();
        assert_eq!(
            (
                spans.len(),
                spans[0].attempts,
                spans[0].next_attempt_in_secs
            ),
            (1, 2, 20)
        );
        assert!(!progress.done());
        progress.settle(2, 8);
        assert!(progress.end_run(Instant::now()).is_empty() && progress.done());
    }

    #[test]
    fn settled_orders_are_skipped() {
        let mut progress = file(5);
        progress.settle(1, 2);
        let skips = progress.skips(Instant::now());
        assert_eq!(skips, vec![None, Some(true), Some(true), None, None]);
    }
}
