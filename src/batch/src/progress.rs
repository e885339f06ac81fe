//! What batch remembers of the current file between runs, until it restarts
//! ([`FileProgress`]): which of its orders to send are settled (stored, or found stored
//! with other content: never sent again for this file), and which are set aside because
//! they cannot be stored as things are, each span with its next attempt after a pause
//! that doubles from [`FIRST_PAUSE`] up to [`MAX_PAUSE`]. A file whose every order to send
//! is settled is done: later runs skip it until it changes. One bit an order, plus a few
//! bytes a span set aside.

use std::time::Duration;

use tokio::time::Instant;

use crate::source::{Digest, Stamp};

/// The pause before a span that could not be stored is tried again the first time: one
/// tick of the default cron, so that a refusal that only looked permanent costs little.
pub const FIRST_PAUSE: Duration = Duration::from_secs(10);
/// The longest pause: a span that cannot be stored costs one refused request, and one log
/// line, at most this often.
pub const MAX_PAUSE: Duration = Duration::from_secs(15 * 60);

/// The pause after the `attempts`-th failed attempt.
pub fn pause(attempts: u32) -> Duration {
    let doublings = attempts.saturating_sub(1).min(16);
    FIRST_PAUSE.saturating_mul(1 << doublings).min(MAX_PAUSE)
}

/// Orders that cannot be stored as things are, waiting for their next attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetAside {
    /// The chunk they were sent in.
    pub chunk: usize,
    /// The number of the first among the orders to send.
    pub start: usize,
    /// How many.
    pub len: usize,
    /// The position in the file of the first.
    pub first_position: u64,
    /// How many attempts failed.
    pub attempts: u32,
    /// When they are tried again.
    pub retry_at: Instant,
    /// Why they could not be stored.
    pub reason: String,
    /// What to change.
    pub what_to_change: String,
    /// Whether this run tried them again (the entry is replaced at its end).
    retried: bool,
}

impl SetAside {
    /// Whether the order numbered `number` is one of them.
    pub fn holds(&self, number: usize) -> bool {
        (self.start..self.start + self.len).contains(&number)
    }
}

/// What is known of one file.
#[derive(Debug)]
pub struct FileProgress {
    /// The file's digest.
    pub digest: Digest,
    /// Its stamp when it was last read.
    pub stamp: Stamp,
    /// How many orders it holds.
    pub read: u64,
    /// Whether its problems were logged (once per file).
    pub problems_logged: bool,
    /// Whether it was said that the file is skipped until it changes.
    pub done_said: bool,
    settled: Vec<bool>,
    set_aside: Vec<SetAside>,
    new_set_aside: Vec<SetAside>,
}

impl FileProgress {
    /// A file nothing is known of yet, with `sendable` orders to send.
    pub fn new(digest: Digest, stamp: Stamp, read: u64, sendable: usize) -> Self {
        Self {
            digest,
            stamp,
            read,
            problems_logged: false,
            done_said: false,
            settled: vec![false; sendable],
            set_aside: Vec::new(),
            new_set_aside: Vec::new(),
        }
    }

    /// What a run must skip: the orders settled, and the spans set aside whose pause is not
    /// over at `now`.
    pub fn skips(&self, now: Instant) -> Skips {
        Skips {
            settled: self.settled.clone(),
            waiting: self
                .set_aside
                .iter()
                .filter(|s| now < s.retry_at)
                .cloned()
                .collect(),
        }
    }

    /// Notes that the `len` orders from `start` are settled.
    pub fn settle(&mut self, start: usize, len: usize) {
        self.settled[start..start + len].fill(true);
        self.mark_retried(start, len);
    }

    /// Sets the `len` orders from `start` aside; one attempt more than the spans they were
    /// in before.
    pub fn set_aside(&mut self, mut entry: SetAside) -> SetAside {
        let before = self
            .overlapping(entry.start, entry.len)
            .map(|s| s.attempts)
            .max();
        entry.attempts = before.unwrap_or(0) + 1;
        entry.retry_at = Instant::now() + pause(entry.attempts);
        entry.retried = false;
        self.mark_retried(entry.start, entry.len);
        self.new_set_aside.push(entry.clone());
        entry
    }

    /// At the end of a run: the spans it tried again give way to what it found.
    pub fn end_run(&mut self) {
        self.set_aside.retain(|s| !s.retried);
        self.set_aside.append(&mut self.new_set_aside);
        self.set_aside.sort_by_key(|s| s.start);
    }

    /// The spans set aside, in file order.
    pub fn set_aside_spans(&self) -> &[SetAside] {
        &self.set_aside
    }

    /// Whether every order to send is settled: nothing is left to retry.
    pub fn done(&self) -> bool {
        self.settled.iter().all(|settled| *settled)
    }

    fn overlapping(&self, start: usize, len: usize) -> impl Iterator<Item = &SetAside> {
        self.set_aside
            .iter()
            .filter(move |s| s.start < start + len && start < s.start + s.len)
    }

    fn mark_retried(&mut self, start: usize, len: usize) {
        for entry in &mut self.set_aside {
            if entry.start < start + len && start < entry.start + entry.len {
                entry.retried = true;
            }
        }
    }
}

/// What a run skips, as it was when the run began.
#[derive(Debug, Clone, Default)]
pub struct Skips {
    settled: Vec<bool>,
    waiting: Vec<SetAside>,
}

/// Why an order is skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Settled by an earlier run.
    Settled,
    /// Set aside, waiting for its next attempt.
    Waiting,
}

impl Skips {
    /// Whether and why the order numbered `number` is skipped.
    pub fn skip(&self, number: usize) -> Option<Skip> {
        if self.settled.get(number) == Some(&true) {
            return Some(Skip::Settled);
        }
        let at = self.waiting.partition_point(|s| s.start + s.len <= number);
        self.waiting
            .get(at)
            .filter(|s| s.holds(number))
            .map(|_| Skip::Waiting)
    }
}

/// A span to set aside, before its attempts and pause are known.
pub fn to_set_aside(
    chunk: usize,
    start: usize,
    len: usize,
    first_position: u64,
    reason: String,
    what_to_change: String,
) -> SetAside {
    SetAside {
        chunk,
        start,
        len,
        first_position,
        attempts: 0,
        retry_at: Instant::now(),
        reason,
        what_to_change,
        retried: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(sendable: usize) -> FileProgress {
        let stamp = Stamp {
            bytes: 0,
            modified: None,
        };
        FileProgress::new([0; 32], stamp, sendable as u64, sendable)
    }

    fn aside(start: usize, len: usize) -> SetAside {
        to_set_aside(
            0,
            start,
            len,
            start as u64,
            "404".into(),
            "TARGET_APP_ID".into(),
        )
    }

    #[test]
    fn pauses_double_up_to_the_longest() {
        let pauses: Vec<u64> = (1..=9).map(|n| pause(n).as_secs()).collect();
        assert_eq!(pauses, vec![10, 20, 40, 80, 160, 320, 640, 900, 900]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_span_set_aside_again_counts_its_attempts_and_waits_longer() {
        let mut progress = file(10);
        progress.set_aside(aside(0, 4));
        progress.end_run();
        let skips = progress.skips(Instant::now());
        assert_eq!(skips.skip(3), Some(Skip::Waiting));
        assert_eq!(skips.skip(4), None);
        tokio::time::advance(FIRST_PAUSE).await;
        assert_eq!(
            progress.skips(Instant::now()).skip(0),
            None,
            "its pause is over"
        );
        // Tried again in halves: one is stored, the other set aside a second time.
        progress.settle(0, 2);
        let second = progress.set_aside(aside(2, 2));
        progress.end_run();
        assert_eq!(second.attempts, 2);
        assert_eq!(progress.set_aside_spans(), [second]);
        assert!(!progress.done());
        progress.settle(2, 2);
        progress.settle(4, 6);
        progress.end_run();
        assert!(progress.done() && progress.set_aside_spans().is_empty());
    }

    #[test]
    fn settled_orders_are_skipped() {
        let mut progress = file(5);
        progress.settle(1, 2);
        let skips = progress.skips(Instant::now());
        let skipped: Vec<Option<Skip>> = (0..5).map(|n| skips.skip(n)).collect();
        assert_eq!(
            skipped,
            vec![None, Some(Skip::Settled), Some(Skip::Settled), None, None]
        );
    }
}
