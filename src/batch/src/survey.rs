//! Reading the file and judging every order, in two passes through one handle. The first
//! ([`survey`]) decodes and validates each order, notes its problems, and settles ids that
//! appear more than once before anything is sent. The rule for a repeated id: copies that
//! say the same (same customer, same price value) are one order, sent once, and the others
//! are counted as `duplicates`; copies that differ, or where any copy is invalid, cannot all
//! be right, so every copy is rejected and none is stored. Copies are compared by a 32-bit
//! hash of what they say (16 bytes an order with the id and position while the first pass
//! lasts): two that differ pass for the same once in four billion. The second pass
//! ([`Survey::next_block`]) reads the file again, a block per step, and hands out the
//! orders to send in file order as the file writes them, each checked against the first
//! pass by a hash of its bytes ([`Error::Changed`] when the file was written to in between).
//! Between the passes memory holds 8 bytes an order: that hash and the order's size.

use std::hash::BuildHasher;
use std::path::PathBuf;

use common::order::{Order, OrderError};
use common::wire::{Size, decode_order};
use foldhash::quality::FixedState;

use crate::error::Error;
use crate::parse::Elements;
use crate::source::{Digest, Input, OrdersSource};

/// The most problem lines a run logs; the rest are counted.
pub const MAX_LISTED: usize = 20;

/// Why every copy of an id that the file gives with different contents is rejected.
pub const DIFFERING_COPIES: &str =
    "appears more than once in the file with different content; no copy is stored";

/// The content hash of an invalid copy: it differs from every valid one.
const INVALID: u32 = u32::MAX;

/// The `params` share noted for an invalid order, which is never sent.
const NOT_SENT: u32 = u32::MAX;

/// Hashes the same bytes alike within the process.
const HASHER: FixedState = FixedState::with_seed(0x6f72_6465_7273);

/// The problems a run found in the data: the first [`MAX_LISTED`], and how many more.
/// Logged once per file, when a run first reads it ([`Problems::log`]).
#[derive(Debug, Default)]
pub struct Problems {
    listed: Vec<OrderError>,
    more: u64,
}

impl Problems {
    /// Notes the problems of one order.
    pub fn note(&mut self, errors: Vec<OrderError>) {
        let room = MAX_LISTED.saturating_sub(self.listed.len());
        self.more += errors.len().saturating_sub(room) as u64;
        self.listed.extend(errors.into_iter().take(room));
    }

    /// Logs each problem, and how many more there were.
    pub fn log(&self) {
        for problem in &self.listed {
            tracing::warn!(problem = %problem, "order rejected");
        }
        if self.more > 0 {
            tracing::warn!(
                more = self.more,
                "further problems of this file were not logged"
            );
        }
    }
}

/// What the first pass found in a file.
pub struct Survey {
    /// The SHA-256 of its bytes.
    pub digest: Digest,
    /// How many orders it holds.
    pub read: u64,
    /// Orders that are invalid, and copies of ids given with different contents.
    pub rejected: u64,
    /// Copies of an order beyond the first, which are not sent.
    pub duplicates: u64,
    /// The orders to send.
    pub sendable: usize,
    /// For each position, a hash of the order's bytes.
    hashes: Vec<u32>,
    /// For each position, the order's share of the binding's `params` ([`NOT_SENT`]: invalid).
    params: Vec<u32>,
    /// The reader, rewound for the second pass.
    elements: Elements,
    path: PathBuf,
    /// The problems of its orders.
    pub problems: Problems,
}

/// Reads the file at `input` (about `bytes` bytes) once, validating every order and noting
/// its problems. `keep_going` is asked before each block: `false` stops with
/// [`Error::Stopped`].
pub fn survey(
    source: &OrdersSource,
    input: Box<dyn Input>,
    bytes: u64,
    block: usize,
    keep_going: &dyn Fn() -> bool,
) -> Result<Survey, Error> {
    let mut elements = Elements::new(input, source.path().to_owned(), block, true);
    let mut problems = Problems::default();
    // Room as large as the file can need (an order takes at least 38 bytes), made before
    // it is filled: growing it would copy it, and memory not written to takes none.
    let most = (usize::try_from(bytes).unwrap_or(usize::MAX) / 38 + 1).min(1 << 22);
    let (mut hashes, mut params) = (Vec::with_capacity(most), Vec::with_capacity(most));
    // Each order's id, and its content hash and position in one number ([`key`]), to find
    // the ids given more than once.
    let mut keys: Vec<(i64, u64)> = Vec::with_capacity(most);
    let mut invalid = 0;
    loop {
        if !keep_going() {
            return Err(Error::Stopped);
        }
        let more = elements.next_block(|position, json| {
            let Some(decoded) = decode_order(position as usize, json) else {
                return false;
            };
            hashes.push(short_hash(json));
            match decoded {
                Ok(order) => {
                    keys.push((order.orderid(), key(content_hash(&order), position)));
                    params.push(u32::try_from(Size::of(&order).params).unwrap_or(NOT_SENT - 1));
                }
                Err(errors) => {
                    params.push(NOT_SENT);
                    invalid += 1;
                    let id = errors.iter().find_map(|e| e.orderid);
                    keys.extend(id.map(|id| (id, key(INVALID, position))));
                    problems.note(errors);
                }
            }
            true
        })?;
        if !more {
            break;
        }
    }
    keys.sort_unstable();
    let (mut repeated_valid, mut duplicates) = (0, 0);
    for copies in keys.chunk_by(|a, b| a.0 == b.0).filter(|c| c.len() > 1) {
        // Copies that say the same are in file order: the first is sent.
        let first = content(copies[0].1);
        let same = first != INVALID && copies.iter().all(|k| content(k.1) == first);
        for &(id, key) in &copies[usize::from(same)..] {
            let at = (key & u64::from(u32::MAX)) as usize;
            params[at] = NOT_SENT;
            if same {
                duplicates += 1;
            } else if content(key) != INVALID {
                repeated_valid += 1;
                problems.note(vec![OrderError::new(
                    at,
                    Some(id),
                    "orderid",
                    DIFFERING_COPIES,
                )]);
            }
        }
    }
    let (read, digest) = (elements.count(), elements.digest());
    elements.rewind()?;
    Ok(Survey {
        digest,
        read,
        rejected: invalid + repeated_valid,
        duplicates,
        sendable: usize::try_from(read - invalid - repeated_valid - duplicates).unwrap_or(0),
        hashes,
        params,
        elements,
        path: source.path().to_owned(),
        problems,
    })
}

/// A hash of an order's bytes, to see that the second pass reads what the first did.
fn short_hash(json: &[u8]) -> u32 {
    HASHER.hash_one(json) as u32
}

/// A hash of what an order says besides its id; equal prices hash alike (1.5 and 1.50).
fn content_hash(order: &Order) -> u32 {
    let hash = HASHER.hash_one((order.customer(), order.price().normalize()));
    (hash as u32).min(INVALID - 1)
}

/// An order's content hash and its position (below 2^32 in any file under 160 GB: an
/// order takes at least 38 bytes), in one number that sorts by both.
fn key(content: u32, position: u64) -> u64 {
    u64::from(content) << 32 | position.min(u64::from(u32::MAX))
}

/// The content hash in a [`key`].
fn content(key: u64) -> u32 {
    (key >> 32) as u32
}

impl Survey {
    /// Reads the next block of the second pass, through the same handle, and hands `each`
    /// the orders to send it holds, in file order: each one's position, JSON (as the file
    /// writes it) and size; `false` once the file is read. Every order must be what the
    /// first pass saw ([`Error::Changed`]). `keep_going` is asked first: `false` stops with
    /// [`Error::Stopped`].
    pub fn next_block(
        &mut self,
        keep_going: &dyn Fn() -> bool,
        each: &mut dyn FnMut(u64, &[u8], Size),
    ) -> Result<bool, Error> {
        if !keep_going() {
            return Err(Error::Stopped);
        }
        let mut as_before = true;
        let more = (self.elements)
            .next_block(|position, json| {
                let at = position as usize;
                as_before &= self.hashes.get(at) == Some(&short_hash(json));
                let params = self.params.get(at).copied().unwrap_or(NOT_SENT);
                if as_before && params != NOT_SENT {
                    each(position, json, Size::new(json, params as usize));
                }
                as_before
            })
            .map_err(|_| Error::Changed(self.path.clone()))?;
        if !as_before || (!more && self.elements.count() != self.read) {
            return Err(Error::Changed(self.path.clone()));
        }
        Ok(more)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    /// The positions and ids handed out, the counts, and every problem's position and
    /// reason.
    type Judged = (Vec<(u64, i64)>, [u64; 4], Vec<(usize, String)>);

    #[test]
    fn docs_design_md_says_how_many_problem_lines_are_logged() {
        let doc = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/design.md");
        let doc = std::fs::read_to_string(doc).unwrap();
        let said = format!("at most {MAX_LISTED} lines, the rest counted");
        assert!(doc.contains(&said), "docs/design.md must say {said:?}");
    }

    /// How `orders` (JSON elements) are judged, read in blocks of `block` bytes.
    fn judge(orders: &[&str], block: usize) -> Judged {
        let content = format!(r#"{{"orders":[{}]}}"#, orders.join(","));
        let input: Box<dyn Input> = Box::new(Cursor::new(content.clone().into_bytes()));
        let source = OrdersSource::Bundled;
        let survey = survey(&source, input, content.len() as u64, block, &|| true).unwrap();
        let counts = [
            survey.read,
            survey.rejected,
            survey.duplicates,
            survey.sendable as u64,
        ];
        let (mut survey, mut sent) = (survey, Vec::new());
        let mut each = |position, json: &[u8], _| {
            let order: serde_json::Value = serde_json::from_slice(json).unwrap();
            sent.push((position, order["orderid"].as_i64().unwrap()));
        };
        while survey.next_block(&|| true, &mut each).unwrap() {}
        let mut found: Vec<(usize, String)> = (survey.problems)
            .listed
            .into_iter()
            .map(|e| (e.index, e.reason))
            .collect();
        found.sort();
        (sent, counts, found)
    }

    #[test]
    fn repeated_ids_decide_by_content_and_the_rest_is_sent_in_file_order() {
        let orders = [
            r#"{"orderid":1,"customer":"A","price":1.5}"#,
            r#"{"orderid":2,"customer":"B","price":2}"#,
            r#"{"orderid":1,"customer":"A","price":1.50}"#,
            r#"{"orderid":3,"customer":"C","price":3}"#,
            r#"{"orderid":2,"customer":"B","price":2.01}"#,
            r#"{"orderid":4,"customer":"","price":4}"#,
            r#"{"orderid":4,"customer":"D","price":4}"#,
            r#"{"orderid":5,"customer":"E","price":-5}"#,
            r#"{"orderid":6,"customer":"F","price":6}"#,
        ];
        for block in [16, 1 << 20] {
            let (sent, counts, problems) = judge(&orders, block);
            assert_eq!(sent, vec![(0, 1), (3, 3), (8, 6)], "block {block}");
            // 9 read: 2 invalid + 3 valid copies of differing ids rejected, 1 duplicate.
            assert_eq!(counts, [9, 5, 1, 3], "block {block}");
            let positions: Vec<usize> = problems.iter().map(|p| p.0).collect();
            assert_eq!(positions, vec![1, 4, 5, 6, 7], "block {block}");
            assert_eq!(problems[0].1, DIFFERING_COPIES);
        }
    }

    #[test]
    fn a_file_written_to_between_the_passes_is_changed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("orders.json");
        let one = r#"{"orders":[{"orderid":1,"customer":"A","price":1}]}"#;
        std::fs::write(&path, one).unwrap();
        let source = OrdersSource::File(path.clone());
        let (input, _) = source.open().unwrap();
        let block = crate::source::BLOCK_BYTES;
        let mut survey = survey(&source, input, 0, block, &|| true).unwrap();
        std::fs::write(&path, one.replace("\"A\"", "\"B\"")).unwrap();
        let mut sent = 0;
        let result = survey.next_block(&|| true, &mut |_, _, _| sent += 1);
        assert!(matches!(result, Err(Error::Changed(_))), "{result:?}");
        assert_eq!(sent, 0, "nothing of the changed file is handed out");
    }

    #[test]
    fn problems_are_capped_and_counted() {
        let mut problems = Problems::default();
        for index in 0..(MAX_LISTED + 5) {
            problems.note(vec![OrderError::new(index, None, "price", "x")]);
        }
        assert_eq!((problems.listed.len(), problems.more), (MAX_LISTED, 5));
    }
}
