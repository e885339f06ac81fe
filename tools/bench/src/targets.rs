//! What the report judges by and how it writes figures: the targets every section shares
//! (memory, start-up), whether each was met, and numbers as the report prints them.

use serde::{Deserialize, Serialize};

/// Each service's peak resident memory must stay under this many bytes (20 MB).
pub const TARGET_PEAK_BYTES: f64 = 20_000_000.0;
/// Each service must answer `/readyz` with 200 within this many ms of its start.
pub const TARGET_READY_MS: f64 = 100.0;

/// Whether a target was met.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Met in this run.
    Met,
    /// Missed in this run.
    Missed,
    /// A comparison, not a target.
    Comparison,
    /// Not measured in this run (e.g. a quick run without the 100,000-order file).
    NotMeasured,
}

/// One target and what this run measured for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Target {
    /// What is measured.
    pub name: String,
    /// The limit, in words.
    pub limit: String,
    /// The figure, in words.
    pub measured: String,
    /// Met, missed or a comparison.
    pub verdict: Verdict,
    /// Why, when missed; context otherwise.
    pub note: String,
}

/// A whole number with thousands separators: `12,345`.
pub fn thousands(value: f64) -> String {
    let rounded = value.round();
    let digits = format!("{:.0}", rounded.abs());
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    if rounded < 0.0 {
        format!("-{out}")
    } else {
        out
    }
}

/// A fraction as a percentage: `0.253` is `25.3 %`.
pub fn percent(fraction: f64) -> String {
    format!("{:.1} %", fraction * 100.0)
}

/// Bytes as MB (10^6 bytes).
pub fn megabytes(bytes: f64) -> String {
    format!("{:.1} MB", bytes / 1_000_000.0)
}
