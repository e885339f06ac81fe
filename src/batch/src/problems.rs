//! Logging what a run finds wrong, so that people can fix it, without flooding the log.
//! Problems in the data (invalid orders, conflicts) are logged once per file, on its first
//! run. Chunks that cannot be sent are logged whenever they are tried, and chunks left for
//! the next run whenever a call fails. At most [`MAX_LOGGED`] lines of each kind per run;
//! the rest are counted.

use common::order::OrderError;

use crate::pipeline::{Done, Happened};

/// The most lines of each kind a run logs.
pub const MAX_LOGGED: usize = 20;

/// Logs the problems of a run.
#[derive(Debug)]
pub struct Problems {
    data: Cap,
    sending: Cap,
}

#[derive(Debug)]
struct Cap {
    enabled: bool,
    logged: usize,
    unlogged: usize,
}

impl Cap {
    fn log(&mut self, line: impl FnOnce()) {
        if !self.enabled {
            return;
        }
        if self.logged < MAX_LOGGED {
            line();
            self.logged += 1;
        } else {
            self.unlogged += 1;
        }
    }
}

impl Problems {
    /// Logs data problems only when `first_run` of the file.
    pub fn new(first_run: bool) -> Self {
        let cap = |enabled| Cap {
            enabled,
            logged: 0,
            unlogged: 0,
        };
        Self {
            data: cap(first_run),
            sending: cap(true),
        }
    }

    /// Logs what there is to say about `done`.
    pub fn note(&mut self, done: &Done) {
        let (chunk, first, orders) = (done.chunk, done.first, done.len);
        match &done.happened {
            Happened::InvalidHere(errors) => {
                self.invalid(chunk, errors, "chunk not sent: invalid order");
            }
            Happened::InvalidThere { message, details } => {
                self.data.log(|| {
                    tracing::warn!(chunk, message = %message, "chunk refused by order-processor");
                });
                self.invalid(chunk, details, "chunk refused: invalid order");
            }
            Happened::Stored { conflicts, .. } if !conflicts.is_empty() => self.data.log(|| {
                tracing::warn!(
                    chunk,
                    ids = ?conflicts,
                    "orders already stored with different content were left unchanged"
                );
            }),
            Happened::Unsendable {
                set_aside,
                tried: true,
            } => self.sending.log(|| {
                tracing::error!(
                    chunk,
                    first,
                    orders,
                    reason = %set_aside.reason,
                    what_to_change = %set_aside.what_to_change,
                    attempts = set_aside.attempts,
                    "chunk cannot be sent; it is set aside and tried again later"
                );
            }),
            Happened::Deferred(reason) => self.sending.log(|| {
                tracing::warn!(
                    chunk,
                    first,
                    orders,
                    reason = %reason,
                    "chunk not stored; it is left for the next run"
                );
            }),
            Happened::Stored { .. } | Happened::Skipped(_) | Happened::Unsendable { .. } => {}
        }
    }

    fn invalid(&mut self, chunk: usize, errors: &[OrderError], message: &'static str) {
        for error in errors {
            self.data.log(|| {
                tracing::warn!(chunk, problem = %error, "{message}");
            });
        }
    }

    /// Says how many lines were not logged.
    pub fn finish(&self) {
        let unlogged = self.data.unlogged + self.sending.unlogged;
        if unlogged > 0 {
            tracing::warn!(
                more = unlogged,
                "further problems of this run were not logged"
            );
        }
    }
}
