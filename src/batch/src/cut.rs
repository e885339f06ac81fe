//! Cutting the orders to send into chunks, each sent in one request: consecutive orders
//! (numbered among the orders to send), at most `CHUNK_SIZE` of them and at most
//! `CHUNK_BYTES` bytes as the request body and as the binding's `params`
//! ([`common::wire::Size`]), whichever comes first. Both limits ([`Limits`]) are lowered
//! for the rest of the process when a chunk is refused as too large, and such a chunk is
//! split in halves ([`Chunk::split`]). Which orders are stored never depends on where the
//! cuts fall: every chunk holds only valid orders.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::body::Bytes;
use common::dapr::MAX_BODY_BYTES;
use common::wire::Size;

/// Which limit a chunk passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// order-processor's `MAX_ORDERS_PER_REQUEST`.
    Orders,
    /// A size limit: a body over 4 MiB, or a binding call too large for the sidecar.
    Bytes,
}

/// The most orders and bytes a new chunk may hold: `CHUNK_SIZE` and `CHUNK_BYTES`,
/// lowered when chunks are refused as too large.
#[derive(Debug)]
pub struct Limits([AtomicUsize; 2]);

impl Limits {
    /// Chunks of at most `orders` orders and `bytes` bytes.
    pub fn new(orders: usize, bytes: usize) -> Self {
        Self([orders.max(1), bytes].map(AtomicUsize::new))
    }

    /// The most orders ([`Limit::Orders`]) or bytes ([`Limit::Bytes`], as
    /// [`Size::largest`]) a chunk may hold.
    pub fn get(&self, limit: Limit) -> usize {
        self.0[limit as usize].load(Ordering::Relaxed)
    }

    /// Whether a chunk of `orders` orders and `size` is within both limits.
    pub fn hold(&self, orders: usize, size: Size) -> bool {
        orders <= self.get(Limit::Orders) && size.largest() <= self.get(Limit::Bytes)
    }

    /// Lowers `limit` to `at_most` (at least 1); whether it was higher.
    pub fn lower(&self, limit: Limit, at_most: usize) -> bool {
        let at_most = at_most.max(1);
        self.0[limit as usize].fetch_min(at_most, Ordering::Relaxed) > at_most
    }
}

/// Orders that travel in one request, written as its body as they were cut.
#[derive(Debug)]
pub struct Chunk {
    /// The chunk's number in its run, from 0 (halves keep their chunk's).
    pub index: usize,
    /// The number of its first order among the orders to send.
    pub start: usize,
    /// Whether its orders were sent already in this run (it is half of one sent).
    pub sent_before: bool,
    /// `[`, then each order's JSON followed by `,`; closed with `]` when it is sealed.
    body: Vec<u8>,
    /// For each order: its position in the file, where its JSON ends in `body`, and its
    /// share of the binding's `params`.
    orders: Vec<(u64, u32, u32)>,
    size: Size,
}

impl Chunk {
    /// An empty chunk with room for `orders` orders and `bytes` bytes of body: made once,
    /// as large as the chunk may grow (room not written to takes no memory), so that its
    /// body is not copied as it grows.
    fn new(index: usize, start: usize, orders: usize, bytes: usize) -> Self {
        // No chunk is larger than daprd's 4 MiB, whatever the limit says.
        let mut body = Vec::with_capacity(bytes.min(MAX_BODY_BYTES) + 2);
        body.push(b'[');
        Self {
            index,
            start,
            sent_before: false,
            body,
            orders: Vec::with_capacity(orders),
            size: Size::EMPTY,
        }
    }

    /// How many orders it holds (never none, once it is cut).
    pub(crate) fn len(&self) -> usize {
        self.orders.len()
    }

    /// The position in the file of its first order.
    pub fn first_position(&self) -> u64 {
        self.orders.first().map_or(0, |(position, _, _)| *position)
    }

    /// The bytes it takes on its way.
    pub fn size(&self) -> Size {
        self.size
    }

    /// Its request body: a JSON array of its orders.
    pub fn body(&self) -> Bytes {
        Bytes::copy_from_slice(&self.body)
    }

    /// Adds an order whose JSON is `json`.
    fn push(&mut self, position: u64, json: &[u8], size: Size) {
        if !self.orders.is_empty() {
            let last = self.body.len() - 1;
            self.body[last] = b',';
        }
        self.body.extend_from_slice(json);
        self.body.push(b']');
        let end = u32::try_from(self.body.len() - 1).unwrap_or(u32::MAX);
        let params = u32::try_from(size.params).unwrap_or(u32::MAX);
        self.orders.push((position, end, params));
        self.size = self.size.plus(size, self.orders.len() == 1);
    }

    /// Its two halves, the back one first; for a chunk of at least two orders.
    pub fn split(self) -> [Self; 2] {
        let half = self.len() / 2;
        let mut halves = [self.start + half, self.start].map(|start| {
            let mut piece = Self::new(self.index, start, half + 1, self.body.len());
            piece.sent_before = self.sent_before;
            piece
        });
        let mut from = 1;
        for (i, &(position, end, params)) in self.orders.iter().enumerate() {
            let json = &self.body[from..end as usize];
            halves[usize::from(i < half)].push(position, json, Size::new(json, params as usize));
            from = end as usize + 1;
        }
        halves
    }
}

/// Takes the orders to send one by one and cuts them into chunks.
#[derive(Debug)]
pub struct Cutter {
    limits: Arc<Limits>,
    building: Option<Chunk>,
    chunks: usize,
}

impl Cutter {
    /// Cuts within `limits`, as they are when each order comes.
    pub fn new(limits: Arc<Limits>) -> Self {
        Self {
            limits,
            building: None,
            chunks: 0,
        }
    }

    /// Adds order number `number` (among the orders to send), at `position` in the file,
    /// written as `json`, of `size`; returns the chunk it closed, if it closed one. An
    /// order that does not follow the last one closes the chunk too: a chunk's orders are
    /// consecutive.
    pub fn push(&mut self, number: usize, position: u64, json: &[u8], size: Size) -> Option<Chunk> {
        let full = self.building.as_ref().is_some_and(|chunk| {
            chunk.start + chunk.len() != number
                || !(self.limits).hold(chunk.len() + 1, chunk.size.plus(size, false))
        });
        let closed = if full { self.building.take() } else { None };
        let chunk = self.building.get_or_insert_with(|| {
            self.chunks += 1;
            let [orders, bytes] = [Limit::Orders, Limit::Bytes].map(|l| self.limits.get(l));
            Chunk::new(self.chunks - 1, number, orders, bytes)
        });
        chunk.push(position, json, size);
        closed
    }

    /// The last chunk, after the last order.
    pub fn finish(&mut self) -> Option<Chunk> {
        self.building.take()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use rust_decimal::Decimal;

    use common::order::Order;

    use super::*;

    fn order(id: i64, customer: &str) -> Order {
        Order::new(0, id, customer, Decimal::new(id * 101, 2)).unwrap()
    }

    fn cut(limits: Limits, numbers: impl IntoIterator<Item = usize>) -> Vec<Chunk> {
        let mut cutter = Cutter::new(Arc::new(limits));
        let mut chunks: Vec<Chunk> = numbers
            .into_iter()
            .filter_map(|n| {
                let order = order(n as i64 + 1, "A \"B\"");
                let mut json = Vec::new();
                common::wire::write_json(&mut json, &order);
                let size = Size::of_json(&json, &order);
                cutter.push(n, n as u64 * 2, &json, size)
            })
            .collect();
        chunks.extend(cutter.finish());
        chunks
    }

    fn ids(chunk: &Chunk) -> Vec<i64> {
        let orders: Vec<serde_json::Value> = serde_json::from_slice(&chunk.body()).unwrap();
        orders
            .iter()
            .map(|o| o["orderid"].as_i64().unwrap())
            .collect()
    }

    #[test]
    fn a_chunk_closes_at_the_order_limit_and_where_the_numbers_skip() {
        let chunks = cut(Limits::new(2, usize::MAX), [0, 1, 2, 3, 4, 6, 7]);
        let spans: Vec<(usize, usize)> = chunks.iter().map(|c| (c.start, c.len())).collect();
        assert_eq!(spans, vec![(0, 2), (2, 2), (4, 1), (6, 2)]);
        assert_eq!(ids(&chunks[1]), vec![3, 4]);
        assert_eq!((chunks[3].index, chunks[3].first_position()), (3, 12));
    }

    #[test]
    fn a_chunk_closes_before_it_would_pass_the_byte_limit() {
        let one = Size::EMPTY.plus(Size::of(&order(1, "A \"B\"")), true);
        let three = (0..2).fold(one, |size, _| {
            size.plus(Size::of(&order(1, "A \"B\"")), false)
        });
        let chunks = cut(Limits::new(100, three.largest()), 0..7);
        let lens: Vec<usize> = chunks.iter().map(Chunk::len).collect();
        assert_eq!(lens, vec![3, 3, 1]);
        assert!(chunks.iter().all(|c| c.size().largest() <= three.largest()));
    }

    #[test]
    fn a_limit_is_only_ever_lowered() {
        let limits = Limits::new(2000, 100);
        assert!(limits.lower(Limit::Orders, 1000));
        assert!(!limits.lower(Limit::Orders, 1500));
        assert_eq!(limits.get(Limit::Orders), 1000);
        assert!(!limits.lower(Limit::Bytes, 100));
        assert!(limits.lower(Limit::Bytes, 50));
        assert_eq!(limits.get(Limit::Bytes), 50);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 100, failure_persistence: None, ..ProptestConfig::default() })]

        /// Halving any chunk, again and again, gives chunks whose bodies and sizes are
        /// what cutting their orders alone would give, down to single orders.
        #[test]
        fn halves_are_the_chunks_of_their_orders(n in 1usize..40) {
            let mut work = cut(Limits::new(100, usize::MAX), 0..n);
            let mut singles = 0;
            while let Some(chunk) = work.pop() {
                let expected: Vec<i64> = (chunk.start..chunk.start + chunk.len()).map(|i| i as i64 + 1).collect();
                prop_assert_eq!(ids(&chunk), expected);
                prop_assert_eq!(chunk.size().body, chunk.body().len());
                if chunk.len() > 1 {
                    work.extend(chunk.split());
                } else {
                    singles += 1;
                }
            }
            prop_assert_eq!(singles, n);
        }
    }
}
