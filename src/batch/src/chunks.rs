//! Cutting a file's orders into chunks, each sent in one request: at most `CHUNK_SIZE`
//! orders and at most `CHUNK_BYTES` bytes (see [`crate::budget`]), whichever is reached
//! first. Both limits are lowered for the rest of the process when order-processor
//! refuses a chunk as too large, and such a chunk is split in halves ([`Piece::split`]).
//! Valid orders are written as JSON as they are read, so a chunk's request body is ready
//! (on the reading thread, off the async runtime) when the chunk is.

use std::collections::{HashSet, VecDeque};
use std::io::Write;
use std::mem;
use std::sync::Arc;

use axum::body::Bytes;
use common::order::{Order, OrderError};
use serde_json::value::RawValue;
use tokio_util::bytes::{BufMut, BytesMut};

use crate::budget::{Limits, Size};

/// The reason given for every occurrence of an id that appears more than once.
pub const REPEATED_ID: &str = "appears more than once in the file";

/// Writes `order` as JSON, byte for byte as its `Serialize` implementation does (a test
/// holds it to that), without the two allocations per order that takes.
pub fn write_order(out: &mut impl Write, order: &Order) {
    // Writing into memory cannot fail, so the results carry nothing.
    let _ = out.write_all(b"{\"orderid\":");
    let _ = serde_json::to_writer(&mut *out, &order.orderid());
    let _ = out.write_all(b",\"customer\":");
    let _ = serde_json::to_writer(&mut *out, order.customer());
    let _ = out.write_all(b",\"price\":");
    let _ = write!(out, "{}", order.price());
    let _ = out.write_all(b"}");
}

/// Consecutive valid orders that travel in one request: a whole chunk, or part of one
/// that was refused as too large.
#[derive(Debug, Clone)]
pub struct Piece {
    /// The chunk it comes from.
    pub chunk: usize,
    /// Position of its first order in the file, from 0.
    pub first: usize,
    /// The request body: a JSON array of its orders.
    pub body: Bytes,
    len: usize,
    size: Size,
}

impl Piece {
    /// How many orders it holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds no order (never the case for a piece of a chunk).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes it takes, as a body and in the binding's `params`.
    pub fn size(&self) -> Size {
        self.size
    }

    /// The piece cut in two halves, or `None` for a single order.
    pub fn split(&self) -> Option<(Self, Self)> {
        let half = self.len / 2;
        if half == 0 {
            return None;
        }
        // Where each order is in the body is found again: splitting is rare, and keeping
        // it for every order of every chunk would cost memory.
        let orders: Vec<&RawValue> = serde_json::from_slice(&self.body).ok()?;
        let base = self.body.as_ptr() as usize;
        let start = |raw: &RawValue| raw.get().as_ptr() as usize - base;
        let end = |raw: &RawValue| start(raw) + raw.get().len();
        let bracketed = |inner: &[u8]| {
            let mut body = Vec::with_capacity(inner.len() + 2);
            body.push(b'[');
            body.extend_from_slice(inner);
            body.push(b']');
            Bytes::from(body)
        };
        let (front, back) = orders.split_at(half);
        let half = |first: usize, orders: &[&RawValue]| {
            let body = bracketed(&self.body[start(orders[0])..end(orders[orders.len() - 1])]);
            Self {
                chunk: self.chunk,
                first,
                size: Size::of_body(&body),
                body,
                len: orders.len(),
            }
        };
        Some((
            half(self.first, front),
            half(self.first + front.len(), back),
        ))
    }
}

/// What a chunk holds.
#[derive(Debug, Clone)]
pub enum Content {
    /// Only valid orders: it can be sent.
    Sendable(Piece),
    /// At least one invalid order: it is not sent. Every problem of its orders, positions
    /// counted in the file.
    Invalid(Vec<OrderError>),
}

/// A run of consecutive orders of the file, sent in one request when all are valid.
#[derive(Debug, Clone)]
pub struct Chunk {
    /// Position of the chunk in the file, from 0.
    pub index: usize,
    /// Position of its first order in the file, from 0.
    pub first: usize,
    /// How many orders it holds, valid or not.
    pub len: usize,
    /// Its orders.
    pub content: Content,
    /// Positions and ids of its valid orders, kept for an invalid chunk until repeated ids
    /// are known (a sendable chunk's are in its body).
    valid: Vec<(usize, i64)>,
}

impl Chunk {
    /// Makes every valid order whose id is in `repeated` invalid, and with it the chunk.
    fn mark_repeated(&mut self, repeated: &HashSet<i64>) {
        #[derive(serde::Deserialize)]
        struct Id {
            orderid: i64,
        }
        let valid = match &self.content {
            Content::Sendable(piece) => serde_json::from_slice::<Vec<Id>>(&piece.body)
                .map(|ids| {
                    let positions = self.first..;
                    positions
                        .zip(ids.into_iter().map(|id| id.orderid))
                        .collect()
                })
                .unwrap_or_default(),
            Content::Invalid(_) => mem::take(&mut self.valid),
        };
        let found: Vec<OrderError> = valid
            .into_iter()
            .filter(|(_, id)| repeated.contains(id))
            .map(|(position, id)| repeated_error(position, id))
            .collect();
        if found.is_empty() {
            return;
        }
        let errors = match mem::replace(&mut self.content, Content::Invalid(Vec::new())) {
            Content::Sendable(_) => found,
            Content::Invalid(mut errors) => {
                errors.extend(found);
                errors.sort_by_key(|error| error.index);
                errors
            }
        };
        self.content = Content::Invalid(errors);
    }

    /// The bytes its request body takes (0 when it cannot be sent).
    pub fn body_bytes(&self) -> usize {
        match &self.content {
            Content::Sendable(piece) => piece.body.len(),
            Content::Invalid(_) => 0,
        }
    }
}

fn repeated_error(position: usize, id: i64) -> OrderError {
    OrderError::new(position, Some(id), "orderid", REPEATED_ID)
}

/// The ids that appear more than once in `ids`.
pub fn repeated(mut ids: Vec<i64>) -> HashSet<i64> {
    ids.sort_unstable();
    ids.windows(2)
        .filter(|pair| pair[0] == pair[1])
        .map(|pair| pair[0])
        .collect()
}

/// What is known of repeated ids when chunks are cut.
#[derive(Debug)]
pub enum Repeated {
    /// These ids appear more than once in the file (from a pass before).
    Known(HashSet<i64>),
    /// Not known yet: the chunker keeps every order's id (8 bytes an order) and marks the
    /// chunks once it has them all ([`Chunker::into_chunks`]).
    FoundAtTheEnd,
}

/// Takes the file's orders one by one and cuts them into chunks.
#[derive(Debug)]
pub struct Chunker {
    limits: Arc<Limits>,
    repeated: HashSet<i64>,
    /// With [`Repeated::FoundAtTheEnd`]: the id of every order that has one.
    ids: Option<Vec<i64>>,
    position: usize,
    index: usize,
    building: Building,
    scratch: Vec<u8>,
    /// The request bodies: the one being written, then the rest of the space for the
    /// next ones. Sealed bodies are split off it and share its allocation, so the chunks
    /// of a file kept whole take one allocation, made once.
    bodies: BytesMut,
    ready: VecDeque<Chunk>,
    ready_bytes: usize,
}

/// The chunk being filled.
#[derive(Debug, Default)]
struct Building {
    first: usize,
    len: usize,
    orders: usize,
    size: Size,
    errors: Vec<OrderError>,
    valid: Vec<(usize, i64)>,
}

impl Chunker {
    /// Cuts chunks within `limits`; orders whose id is repeated are invalid. The request
    /// bodies are written into `bodies`, and into more room when it is full.
    pub fn new(limits: Arc<Limits>, repeated: Repeated, bodies: BytesMut) -> Self {
        let (repeated, ids) = match repeated {
            Repeated::Known(ids) => (ids, None),
            // Sized as for orders of 64 bytes, the bodies' room being about the file's size.
            Repeated::FoundAtTheEnd => (
                HashSet::new(),
                Some(Vec::with_capacity(bodies.capacity() / 64)),
            ),
        };
        Self {
            limits,
            repeated,
            ids,
            position: 0,
            index: 0,
            building: Building::default(),
            scratch: Vec::with_capacity(1024),
            bodies,
            ready: VecDeque::new(),
            ready_bytes: 0,
        }
    }

    /// Adds the next order of the file, valid or with its problems.
    pub fn push(&mut self, order: Result<Order, Vec<OrderError>>) {
        let position = self.position;
        self.position += 1;
        if let Some(ids) = &mut self.ids {
            ids.extend(crate::decode::id_of(&order));
        }
        let order = match order {
            Ok(order) if self.repeated.contains(&order.orderid()) => {
                Err(vec![repeated_error(position, order.orderid())])
            }
            other => other,
        };
        if self.building.len > 0 && self.building.len >= self.limits.orders() {
            self.seal(position);
        }
        match order {
            Ok(order) => self.add(position, &order),
            Err(mut errors) => self.building.errors.append(&mut errors),
        }
        self.building.len += 1;
    }

    /// Writes a valid order into the chunk, or into a new one when it would pass the byte
    /// limit. Written in place: the order is copied only when it starts a new chunk.
    fn add(&mut self, position: usize, order: &Order) {
        let first = self.building.orders == 0;
        let mark = self.bodies.len();
        self.bodies.put_u8(if first { b'[' } else { b',' });
        write_order(&mut (&mut self.bodies).writer(), order);
        let json = &self.bodies[mark + 1..];
        let size = self.building.size.with(json, first);
        if first || size.largest() <= self.limits.bytes() {
            self.building.size = size;
        } else {
            self.scratch.clear();
            self.scratch.extend_from_slice(json);
            self.bodies.truncate(mark);
            self.seal(position);
            self.bodies.put_u8(b'[');
            self.bodies.extend_from_slice(&self.scratch);
            self.building.size = Size::EMPTY.with(&self.scratch, true);
        }
        self.building.orders += 1;
        if self.ids.is_some() {
            self.building.valid.push((position, order.orderid()));
        }
    }

    /// Closes the last chunk, after the last order.
    pub fn finish(&mut self) {
        if self.building.len > 0 {
            self.seal(self.position);
        }
    }

    /// The next finished chunk, if any.
    pub fn pop(&mut self) -> Option<Chunk> {
        let chunk = self.ready.pop_front()?;
        self.ready_bytes -= chunk.body_bytes();
        Some(chunk)
    }

    /// Every finished chunk, in order, each invalid where its orders' ids repeat; and what
    /// is left of the room for bodies, which can have all of it again once the chunks are
    /// gone ([`BytesMut::try_reclaim`]).
    pub fn into_chunks(self) -> (VecDeque<Chunk>, BytesMut) {
        let mut chunks = self.ready;
        if let Some(ids) = self.ids {
            let repeated = repeated(ids);
            if !repeated.is_empty() {
                chunks.iter_mut().for_each(|c| c.mark_repeated(&repeated));
            }
        }
        (chunks, self.bodies)
    }

    /// The bytes of the request bodies held: of the finished chunks and the one being filled.
    pub fn held_bytes(&self) -> usize {
        self.ready_bytes + self.bodies.len()
    }

    fn seal(&mut self, next_first: usize) {
        let building = mem::replace(
            &mut self.building,
            Building {
                first: next_first,
                ..Building::default()
            },
        );
        let content = if building.errors.is_empty() {
            self.bodies.extend_from_slice(b"]");
            Content::Sendable(Piece {
                chunk: self.index,
                first: building.first,
                body: self.bodies.split().freeze(),
                len: building.orders,
                size: building.size,
            })
        } else {
            self.bodies.clear();
            Content::Invalid(building.errors)
        };
        let valid = match content {
            Content::Invalid(_) => building.valid,
            Content::Sendable(_) => Vec::new(),
        };
        let chunk = Chunk {
            index: self.index,
            first: building.first,
            len: building.len,
            content,
            valid,
        };
        self.ready_bytes += chunk.body_bytes();
        self.ready.push_back(chunk);
        self.index += 1;
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use rust_decimal::Decimal;

    use super::*;

    fn order(id: i64, customer: &str) -> Order {
        Order::new(0, id, customer, Decimal::new(id * 101, 2)).unwrap()
    }

    fn cut(limits: Limits, orders: Vec<Result<Order, Vec<OrderError>>>) -> Vec<Chunk> {
        let mut chunker = Chunker::new(Arc::new(limits), Repeated::FoundAtTheEnd, BytesMut::new());
        for order in orders {
            chunker.push(order);
        }
        chunker.finish();
        chunker.into_chunks().0.into()
    }

    fn piece(chunk: &Chunk) -> &Piece {
        match &chunk.content {
            Content::Sendable(piece) => piece,
            Content::Invalid(errors) => panic!("invalid chunk: {errors:?}"),
        }
    }

    fn ids(body: &[u8]) -> Vec<i64> {
        let orders: Vec<serde_json::Value> = serde_json::from_slice(body).unwrap();
        orders
            .iter()
            .map(|o| o["orderid"].as_i64().unwrap())
            .collect()
    }

    #[test]
    fn a_chunk_closes_at_the_order_limit() {
        let chunks = cut(
            Limits::new(2, usize::MAX),
            (1..=5).map(|id| Ok(order(id, "A"))).collect(),
        );
        let sizes: Vec<usize> = chunks.iter().map(|c| c.len).collect();
        assert_eq!(sizes, vec![2, 2, 1]);
        assert_eq!(ids(&piece(&chunks[1]).body), vec![3, 4]);
        assert_eq!((chunks[2].index, chunks[2].first), (2, 4));
    }

    #[test]
    fn a_chunk_closes_before_its_body_or_its_escaped_body_would_pass_the_byte_limit() {
        // Quotes in the names grow the escaped body more than the body.
        let orders: Vec<Order> = (1..=7).map(|id| order(id, "\"\"")).collect();
        let mut json = Vec::new();
        write_order(&mut json, &orders[0]);
        let three = Size::EMPTY
            .with(&json, true)
            .with(&json, false)
            .with(&json, false);
        assert!(three.params > three.body);
        let chunks = cut(
            Limits::new(100, three.largest()),
            orders.into_iter().map(Ok).collect(),
        );
        let sizes: Vec<usize> = chunks.iter().map(|c| c.len).collect();
        assert_eq!(sizes, vec![3, 3, 1]);
        assert_eq!(Size::of_body(&piece(&chunks[0]).body), three);
    }

    #[test]
    fn an_order_larger_than_the_byte_limit_goes_alone() {
        let chunks = cut(
            Limits::new(100, 10),
            vec![Ok(order(1, "A")), Ok(order(2, "B"))],
        );
        assert_eq!(chunks.len(), 2);
        assert_eq!(ids(&piece(&chunks[0]).body), vec![1]);
    }

    #[test]
    fn a_chunk_with_an_invalid_order_keeps_its_problems_and_no_body() {
        let bad = vec![OrderError::new(1, Some(2), "price", "must not be negative")];
        let chunks = cut(
            Limits::new(2, usize::MAX),
            vec![Ok(order(1, "A")), Err(bad.clone()), Ok(order(3, "C"))],
        );
        assert!(matches!(&chunks[0].content, Content::Invalid(errors) if *errors == bad));
        assert_eq!(chunks[0].body_bytes(), 0);
        assert_eq!(ids(&piece(&chunks[1]).body), vec![3]);
    }

    #[test]
    fn every_occurrence_of_a_repeated_id_makes_its_chunk_invalid() {
        let bad = OrderError::new(3, Some(1), "price", "must not be negative");
        let orders = || -> Vec<Result<Order, Vec<OrderError>>> {
            vec![
                Ok(order(1, "A")),
                Ok(order(2, "B")),
                Ok(order(1, "A")),
                Err(vec![bad.clone()]),
                Ok(order(2, "B")),
            ]
        };
        let mut chunker = Chunker::new(
            Arc::new(Limits::new(2, usize::MAX)),
            Repeated::Known(HashSet::from([1, 2])),
            BytesMut::new(),
        );
        orders().into_iter().for_each(|o| chunker.push(o));
        chunker.finish();
        let known_before = chunker.into_chunks().0;
        let found_at_the_end = cut(Limits::new(2, usize::MAX), orders());
        for chunks in [Vec::from(known_before), found_at_the_end] {
            let problems: Vec<Vec<(usize, String)>> = chunks
                .iter()
                .map(|c| match &c.content {
                    Content::Invalid(errors) => {
                        errors.iter().map(|e| (e.index, e.reason.clone())).collect()
                    }
                    Content::Sendable(_) => Vec::new(),
                })
                .collect();
            let repeated = |i| (i, REPEATED_ID.to_owned());
            assert_eq!(
                problems,
                vec![
                    vec![repeated(0), repeated(1)],
                    vec![repeated(2), (3, bad.reason.clone())],
                    vec![repeated(4)],
                ]
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn orders_are_written_exactly_as_their_serialize_writes_them(
            id in 1i64..=i64::MAX,
            customer in "[a-zé€😀\"\\\\' ]{0,8}[a-z]",
            cents in 0i64..=999_999_999_999,
            places in 2u32..=12,
        ) {
            let mantissa = i128::from(cents) * 10i128.pow(places - 2);
            let price = Decimal::from_i128_with_scale(mantissa, places);
            let order = Order::new(0, id, customer, price).unwrap();
            let mut out = Vec::new();
            write_order(&mut out, &order);
            prop_assert_eq!(out, serde_json::to_vec(&order).unwrap());
        }

        /// Halving any piece, again and again, gives pieces whose bodies are exactly what
        /// cutting their orders as a chunk would give.
        #[test]
        fn split_halves_are_the_chunks_of_their_orders(
            n in 1usize..40,
            names in prop::collection::vec("[a-z\"é]{1,5}", 40),
        ) {
            let orders: Vec<Order> = (0..n).map(|i| order(i as i64 + 1, &names[i])).collect();
            let whole = cut(Limits::new(100, usize::MAX), orders.iter().cloned().map(Ok).collect());
            let mut pieces = vec![piece(&whole[0]).clone()];
            while let Some(p) = pieces.pop() {
                let expected = serde_json::to_vec(&orders[p.first..p.first + p.len()]).unwrap();
                prop_assert_eq!(&p.body[..], &expected[..]);
                prop_assert_eq!(p.size(), Size::of_body(&p.body));
                if let Some((front, back)) = p.split() {
                    prop_assert_eq!(front.len() + back.len(), p.len());
                    prop_assert_eq!(back.first, p.first + front.len());
                    pieces.push(front);
                    pieces.push(back);
                } else {
                    prop_assert_eq!(p.len(), 1);
                }
            }
        }
    }
}
