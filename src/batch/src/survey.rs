//! Reading the file and judging every order: each is decoded and validated as it is read
//! ([`survey`]), and ids that appear more than once are settled before anything is sent.
//! The rule for a repeated id: copies that say the same (same customer, same price value)
//! are one order, sent once, and the others are counted as `duplicates`; copies that
//! differ, or where any copy is invalid, cannot all be right, so every copy is rejected
//! and none is stored. The orders to send are then handed out in file order
//! ([`Survey::next_orders`]): from memory for a small file, whose valid orders are
//! kept (about the file's size); by a second pass through the same handle for a larger
//! one, which keeps 16 bytes an order (id and content hash) and checks each order against
//! what the first pass saw, failing with [`Error::Changed`] when the file was written to
//! in between.

use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::PathBuf;

use common::order::{Order, OrderError};
use common::wire::{Size, decode_order, write_json};

use crate::error::Error;
use crate::parse::{BlockLimits, Elements};
use crate::source::{Digest, Input, OrdersSource};

/// The most problem lines a run logs; the rest are counted.
pub const MAX_LISTED: usize = 20;

/// Why every copy of an id that the file gives with different contents is rejected.
pub const DIFFERING_COPIES: &str =
    "appears more than once in the file with different content; no copy is stored";

/// The content hash of an invalid copy: it differs from every valid one.
const INVALID: u64 = u64::MAX;

/// Kept orders handed out per step.
const HELD_STEP: usize = 4096;

/// The valid orders of a file small enough to keep them: their JSON, one after the other,
/// as requests carry them, and for each its position, its end in `json` and its share of
/// the binding's `params`. About the file's size, in two allocations.
struct Held {
    json: Vec<u8>,
    orders: Vec<(u32, u32, u32)>,
    next: usize,
}

/// How a file is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadLimits {
    /// Block size and the largest order.
    pub blocks: BlockLimits,
    /// The valid orders of a file are kept in memory (one pass) while they take at most
    /// this many bytes; past it the file is read a second time instead.
    pub hold_bytes: usize,
}

impl Default for ReadLimits {
    fn default() -> Self {
        Self {
            blocks: BlockLimits::default(),
            hold_bytes: 12 << 20,
        }
    }
}

/// The problems a run found in the data: the first [`MAX_LISTED`], and how many more.
/// Logged once per file, after the run ([`Problems::log`]).
#[derive(Debug, Default)]
pub struct Problems {
    listed: Vec<OrderError>,
    more: u64,
}

impl Problems {
    /// Notes the problems of one order.
    pub fn note(&mut self, errors: Vec<OrderError>) {
        for error in errors {
            if self.listed.len() < MAX_LISTED {
                self.listed.push(error);
            } else {
                self.more += 1;
            }
        }
    }

    /// Adds what another part of the run found.
    pub fn merge(&mut self, other: Self) {
        self.more += other.more;
        self.note(other.listed);
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

/// Room a run reads a file into, kept for the next run: allocated once, not on every
/// run (an allocator that keeps memory per thread would otherwise keep it several times).
#[derive(Debug, Default)]
pub struct Room {
    json: Vec<u8>,
    orders: Vec<(u32, u32, u32)>,
    keys: Vec<(i64, u64)>,
    valid: Vec<bool>,
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
    /// Id and content hash of every order (invalid: [`INVALID`]), sorted.
    keys: Vec<(i64, u64)>,
    /// Which positions hold a valid order.
    valid: Vec<bool>,
    repeats: Repeats,
    /// The valid orders, when the file was small enough to keep them.
    held: Option<Held>,
    /// The handle, for the second pass, when they were not kept.
    input: Option<Box<dyn Input>>,
    /// The second pass, once it has begun.
    second: Option<Elements>,
    path: PathBuf,
    blocks: BlockLimits,
}

/// Reads the file at `input` (about `bytes` bytes) once, validating every order and noting
/// its problems in `problems`. `keep_going` is asked before each block: `false` stops with
/// [`Error::Stopped`].
pub fn survey(
    source: &OrdersSource,
    input: Box<dyn Input>,
    bytes: u64,
    limits: ReadLimits,
    keep_going: &dyn Fn() -> bool,
    problems: &mut Problems,
    room: Room,
) -> Result<Survey, Error> {
    let mut elements = Elements::new(input, source.path().to_owned(), limits.blocks);
    // Room as large as the file can need (an order takes at least 38 bytes), made before
    // it is filled: growing it would copy it, and memory not written to takes none.
    let bytes = usize::try_from(bytes).unwrap_or(usize::MAX);
    let most = (bytes / 38 + 1).min(1 << 22);
    let Room {
        mut json,
        mut orders,
        mut keys,
        mut valid,
    } = room;
    keys.clear();
    keys.reserve(most);
    valid.clear();
    valid.reserve(most);
    let mut held = (bytes <= limits.hold_bytes).then(|| {
        json.clear();
        orders.clear();
        json.reserve(bytes);
        orders.reserve(most);
        Held {
            json,
            orders,
            next: 0,
        }
    });
    let mut invalid = 0;
    loop {
        if !keep_going() {
            return Err(Error::Stopped);
        }
        let more = elements.next_block(|position, json| {
            match decode_order(position as usize, json) {
                None => return false,
                Some(Ok(order)) => {
                    valid.push(true);
                    keys.push((order.orderid(), content_hash(&order)));
                    if let Some(kept) = &mut held {
                        let start = kept.json.len();
                        write_json(&mut kept.json, &order);
                        let params = Size::of_json(&kept.json[start..], &order).params;
                        let end = u32::try_from(kept.json.len()).unwrap_or(u32::MAX);
                        let at = u32::try_from(position).unwrap_or(u32::MAX);
                        kept.orders.push((at, end, params as u32));
                        if kept.json.len() + 12 * kept.orders.len() > limits.hold_bytes {
                            held = None;
                        }
                    }
                }
                Some(Err(errors)) => {
                    valid.push(false);
                    invalid += 1;
                    let id = errors.iter().find_map(|e| e.orderid);
                    keys.extend(id.map(|id| (id, INVALID)));
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
    let (mut differing, mut identical) = (HashSet::new(), HashSet::new());
    let (mut repeated_valid, mut duplicates) = (0, 0);
    for copies in keys.chunk_by(|a, b| a.0 == b.0).filter(|c| c.len() > 1) {
        let same = copies.iter().all(|k| k.1 == copies[0].1 && k.1 != INVALID);
        if same {
            identical.insert(copies[0].0);
            duplicates += copies.len() as u64 - 1;
        } else {
            differing.insert(copies[0].0);
            repeated_valid += copies.iter().filter(|k| k.1 != INVALID).count() as u64;
        }
    }
    let read = elements.count();
    let valid_orders = read - invalid;
    let digest = elements.digest();
    let input = held.is_none().then(|| elements.into_input());
    Ok(Survey {
        digest,
        read,
        rejected: invalid + repeated_valid,
        duplicates,
        sendable: usize::try_from(valid_orders - repeated_valid - duplicates).unwrap_or(0),
        keys,
        valid,
        repeats: Repeats {
            differing,
            identical,
            sent: HashSet::new(),
        },
        held,
        input,
        second: None,
        path: source.path().to_owned(),
        blocks: limits.blocks,
    })
}

impl Survey {
    /// Its room, for the next run.
    pub fn into_room(self) -> Room {
        let (json, orders) = self
            .held
            .map_or_else(Default::default, |held| (held.json, held.orders));
        Room {
            json,
            orders,
            keys: self.keys,
            valid: self.valid,
        }
    }
}

/// The id of an order as [`write_json`] wrote it: `{"orderid":<id>,…`.
fn id_of(json: &[u8]) -> i64 {
    let digits = json.get(11..).unwrap_or_default();
    let end = digits
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(digits.len());
    std::str::from_utf8(&digits[..end])
        .ok()
        .and_then(|id| id.parse().ok())
        .unwrap_or(0)
}

/// A hash of what an order says besides its id; equal prices hash alike (1.5 and 1.50).
fn content_hash(order: &Order) -> u64 {
    let mut hasher = DefaultHasher::new();
    order.customer().hash(&mut hasher);
    order.price().normalize().hash(&mut hasher);
    hasher.finish().min(INVALID - 1)
}

impl Survey {
    /// Hands `each` the next orders to send, in file order: each one's position, JSON (as
    /// a request carries it) and size; `false` once there are no more. Each call takes a
    /// step: a few thousand orders kept in memory, or the next block of a file read again
    /// through the same handle, where every order must be what the first pass saw. Every
    /// copy of an id given with different contents is noted in `problems`.
    pub fn next_orders(
        &mut self,
        source: &OrdersSource,
        keep_going: &dyn Fn() -> bool,
        problems: &mut Problems,
        each: &mut dyn FnMut(u64, &[u8], Size),
    ) -> Result<bool, Error> {
        if !keep_going() {
            return Err(Error::Stopped);
        }
        if let Some(held) = &mut self.held {
            let last = held.orders.len().min(held.next + HELD_STEP);
            for at in held.next..last {
                let (position, end, params) = held.orders[at];
                let start = at.checked_sub(1).map_or(0, |before| held.orders[before].1) as usize;
                let json = &held.json[start..end as usize];
                if self
                    .repeats
                    .sends(u64::from(position), || id_of(json), problems)
                {
                    let size = Size {
                        body: json.len(),
                        params: params as usize,
                    };
                    each(u64::from(position), json, size);
                }
            }
            held.next = last;
            return Ok(last < held.orders.len());
        }
        let mut elements = match self.second.take() {
            Some(elements) => elements,
            None => {
                let mut input = self.input.take().ok_or(Error::Stopped)?;
                source.rewind(&mut *input)?;
                Elements::new(input, self.path.clone(), self.blocks)
            }
        };
        let changed = || Error::Changed(self.path.clone());
        let (mut as_before, mut json) = (true, Vec::new());
        let more = elements
            .next_block(|position, text| {
                let Some(decoded) = decode_order(position as usize, text) else {
                    return false;
                };
                as_before &= match &decoded {
                    Ok(order) => {
                        let key = (order.orderid(), content_hash(order));
                        self.valid.get(position as usize) == Some(&true)
                            && self.keys.binary_search(&key).is_ok()
                    }
                    Err(_) => self.valid.get(position as usize) == Some(&false),
                };
                if let Ok(order) = decoded
                    && as_before
                    && self.repeats.sends(position, || order.orderid(), problems)
                {
                    json.clear();
                    write_json(&mut json, &order);
                    each(position, &json, Size::of_json(&json, &order));
                }
                true
            })
            .map_err(|_| changed())?;
        if !as_before {
            return Err(changed());
        }
        if !more && (elements.digest() != self.digest || elements.count() != self.read) {
            return Err(changed());
        }
        self.second = more.then_some(elements);
        Ok(more)
    }
}

/// What the first pass found of repeated ids.
#[derive(Debug, Default)]
struct Repeats {
    differing: HashSet<i64>,
    identical: HashSet<i64>,
    /// The ids given identically more than once whose first copy was handed out.
    sent: HashSet<i64>,
}

impl Repeats {
    /// Whether a valid order is sent: not when its id's copies differ, and an order given
    /// more than once the same way only the first time.
    fn sends(&mut self, position: u64, id: impl FnOnce() -> i64, problems: &mut Problems) -> bool {
        if self.differing.is_empty() && self.identical.is_empty() {
            return true;
        }
        let id = id();
        if self.differing.contains(&id) {
            let index = usize::try_from(position).unwrap_or(usize::MAX);
            problems.note(vec![OrderError::new(
                index,
                Some(id),
                "orderid",
                DIFFERING_COPIES,
            )]);
            false
        } else if self.identical.contains(&id) {
            self.sent.insert(id)
        } else {
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    /// The positions and ids handed out, the counts, and every problem's position and
    /// reason.
    type Judged = (Vec<(u64, i64)>, [u64; 4], Vec<(usize, String)>);

    /// How `orders` (JSON elements) are judged, kept in memory or read twice.
    fn judge(orders: &[&str], keep: bool) -> Judged {
        let content = format!(r#"{{"orders":[{}]}}"#, orders.join(","));
        let limits = ReadLimits {
            blocks: BlockLimits {
                block: 16,
                ..BlockLimits::default()
            },
            hold_bytes: if keep { 1 << 20 } else { 0 },
        };
        let input: Box<dyn Input> = Box::new(Cursor::new(content.clone().into_bytes()));
        let source = OrdersSource::Bundled;
        let mut problems = Problems::default();
        let survey = survey(
            &source,
            input,
            content.len() as u64,
            limits,
            &|| true,
            &mut problems,
            Room::default(),
        )
        .unwrap();
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
        while survey
            .next_orders(&source, &|| true, &mut problems, &mut each)
            .unwrap()
        {}
        let mut found: Vec<(usize, String)> = problems
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
        for keep in [true, false] {
            let (sent, counts, problems) = judge(&orders, keep);
            assert_eq!(sent, vec![(0, 1), (3, 3), (8, 6)], "keep {keep}");
            // 9 read: 2 invalid + 3 valid copies of differing ids rejected, 1 duplicate.
            assert_eq!(counts, [9, 5, 1, 3], "keep {keep}");
            let positions: Vec<usize> = problems.iter().map(|p| p.0).collect();
            assert_eq!(positions, vec![1, 4, 5, 6, 7], "keep {keep}");
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
        let limits = ReadLimits {
            hold_bytes: 0,
            ..ReadLimits::default()
        };
        let mut problems = Problems::default();
        let mut survey = survey(
            &source,
            input,
            0,
            limits,
            &|| true,
            &mut problems,
            Room::default(),
        )
        .unwrap();
        std::fs::write(&path, one.replace("\"A\"", "\"B\"")).unwrap();
        let mut sent = 0;
        let result = survey.next_orders(&source, &|| true, &mut problems, &mut |_, _, _| sent += 1);
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
