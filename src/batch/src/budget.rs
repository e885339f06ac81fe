//! How many bytes a chunk takes on its way to the database, and the most one valid order
//! can take. A chunk travels as JSON twice: as the request body to order-processor
//! (through both sidecars, which refuse bodies over 4 MiB by default), and inside the
//! PostgreSQL binding's `params` metadata, where order-processor passes the same JSON
//! escaped as one string (`["[{\"orderid\":…}]"]`) in a gRPC message that its sidecar
//! also limits to 4 MiB. Escaping grows a quote or backslash of a customer's name from
//! 2 bytes in the body to 4 in `params`, and the 8 quotes of every order's own keys and
//! strings from 1 to 2; a character of 2 to 4 bytes stays as it is (serde_json escapes
//! only quotes, backslashes and control characters, and validation refuses the latter).
//! `CHUNK_BYTES` bounds the larger of the two sizes; [`largest_order`] computes the worst
//! case from the validation rules, which is the smallest budget that carries every valid
//! order. [`Limits`] holds the limits in force, lowered when order-processor refuses a
//! chunk as too large.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use common::order::{MAX_CUSTOMER_CHARS, Order, max_price};
use rust_decimal::Decimal;

use crate::chunks::write_order;
use crate::outcome::Limit;

/// The request body limit of daprd (`--max-body-size`, 4 MiB by default; also the limit of
/// its gRPC API), which order-processor applies to its own requests too.
pub const DAPR_BODY_LIMIT: usize = 4 * 1024 * 1024;

/// The default `CHUNK_BYTES`: 1 MiB under daprd's limit, for the binding's SQL statement,
/// its other metadata and the framing around `params`.
pub const DEFAULT_CHUNK_BYTES: usize = 3 * 1024 * 1024;

/// The sizes of a chunk of orders on its way, in bytes; by default, of an empty chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    /// The request body: `[order,order,…]`.
    pub body: usize,
    /// The binding's `params`: the body escaped as a JSON string, in an array.
    pub params: usize,
}

impl Size {
    /// An empty chunk: `[]` as the body, `["[]"]` as `params`.
    pub const EMPTY: Self = Self { body: 2, params: 6 };

    /// The sizes once `order_json` (one order's JSON) is added, after a comma unless it is
    /// the first order.
    pub fn with(self, order_json: &[u8], first: bool) -> Self {
        let separator = usize::from(!first);
        let escapes = order_json
            .iter()
            .filter(|&&b| b == b'"' || b == b'\\')
            .count();
        Self {
            body: self.body + separator + order_json.len(),
            params: self.params + separator + order_json.len() + escapes,
        }
    }

    /// The sizes of a finished request body.
    pub fn of_body(body: &[u8]) -> Self {
        let escapes = body.iter().filter(|&&b| b == b'"' || b == b'\\').count();
        Self {
            body: body.len(),
            params: 4 + body.len() + escapes,
        }
    }

    /// The larger of the two, which `CHUNK_BYTES` bounds.
    pub fn largest(self) -> usize {
        self.body.max(self.params)
    }
}

impl Default for Size {
    fn default() -> Self {
        Self::EMPTY
    }
}

/// The most bytes a chunk of one valid order takes, as the body and in `params` (each the
/// largest over all valid orders): a `CHUNK_BYTES` below `largest_order().largest()` could
/// not carry every valid order.
pub fn largest_order() -> Size {
    worst_orders()
        .map(|order| {
            let mut json = Vec::new();
            write_order(&mut json, &order);
            Size::EMPTY.with(&json, true)
        })
        .fold(Size::EMPTY, |most, size| Size {
            body: most.body.max(size.body),
            params: most.params.max(size.params),
        })
}

/// The candidates for the largest order: the largest id, the longest price text, and a
/// customer of the most characters, each of one of the kinds that differ in size (1 to 4
/// bytes of UTF-8, or a quote or backslash that JSON escapes). Any other valid order is
/// at most as large as one of these.
fn worst_orders() -> impl Iterator<Item = Order> {
    ['a', 'é', '€', '😀', '"', '\\']
        .into_iter()
        .filter_map(|c| {
            let customer = c.to_string().repeat(MAX_CUSTOMER_CHARS);
            Order::new(0, i64::MAX, customer, longest_price()).ok()
        })
}

/// The valid price whose text is the longest. A `Decimal` keeps the scale it was written
/// with (`1.5000` stays `1.5000`), up to 28 places, so the longest text has as many places
/// as its 96-bit mantissa allows at the highest value validation accepts.
pub fn longest_price() -> Decimal {
    const MANTISSA_MAX: i128 = (1 << 96) - 1;
    let cents_max = max_price().mantissa();
    (0..=28u32)
        .map(|scale| {
            let mantissa = if scale >= 2 {
                let unit = 10i128.pow(scale - 2);
                (cents_max * unit).min(MANTISSA_MAX / unit * unit)
            } else {
                cents_max / 10i128.pow(2 - scale)
            };
            Decimal::from_i128_with_scale(mantissa, scale)
        })
        .max_by_key(|price| price.to_string().len())
        .unwrap_or_else(max_price)
}

/// The most orders and bytes a new chunk may hold: the configured `CHUNK_SIZE` and
/// `CHUNK_BYTES`, lowered when order-processor refuses chunks as too large.
#[derive(Debug)]
pub struct Limits {
    orders: AtomicUsize,
    bytes: AtomicUsize,
    configured_orders: usize,
    configured_bytes: usize,
    lowered_orders: AtomicBool,
    lowered_bytes: AtomicBool,
}

impl Limits {
    /// Chunks of at most `orders` orders and `bytes` bytes.
    pub fn new(orders: usize, bytes: usize) -> Self {
        Self {
            orders: AtomicUsize::new(orders.max(1)),
            bytes: AtomicUsize::new(bytes),
            configured_orders: orders.max(1),
            configured_bytes: bytes,
            lowered_orders: AtomicBool::new(false),
            lowered_bytes: AtomicBool::new(false),
        }
    }

    /// The most orders in a chunk.
    pub fn orders(&self) -> usize {
        self.orders.load(Ordering::Relaxed)
    }

    /// The most bytes of a chunk ([`Size::largest`]).
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// The limit as configured.
    pub fn configured(&self, limit: Limit) -> usize {
        match limit {
            Limit::Orders => self.configured_orders,
            Limit::Bytes => self.configured_bytes,
        }
    }

    /// Lowers `limit` to `at_most` (at least 1). Whether this is the first time it is
    /// lowered, which is worth a warning.
    pub fn lower(&self, limit: Limit, at_most: usize) -> bool {
        let (value, lowered) = match limit {
            Limit::Orders => (&self.orders, &self.lowered_orders),
            Limit::Bytes => (&self.bytes, &self.lowered_bytes),
        };
        let at_most = at_most.max(1);
        value.fetch_min(at_most, Ordering::Relaxed) > at_most
            && !lowered.swap(true, Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use common::order::parse_order;
    use proptest::prelude::*;
    use serde_json::value::RawValue;

    use super::*;

    fn json(order: &Order) -> Vec<u8> {
        let mut out = Vec::new();
        write_order(&mut out, order);
        out
    }

    /// The sizes as order-processor and the binding produce them.
    fn measured(orders: &[Order]) -> Size {
        let body = serde_json::to_string(orders).unwrap();
        let params = serde_json::Value::from(vec![body.clone()]).to_string();
        Size {
            body: body.len(),
            params: params.len(),
        }
    }

    #[test]
    fn the_largest_valid_order_is_worked_out_from_the_validation_rules() {
        // The highest value, 7.92, whose 96-bit mantissa still holds 28 decimal places; the
        // same length as 7922816251.42 written with 19 places, or 0 with 28.
        let price = longest_price();
        assert_eq!(price.to_string(), "7.9200000000000000000000000000");
        assert_eq!(price.to_string().len(), 30);
        let largest = largest_order();
        // {"orderid":<19 digits>,"customer":"<200 four-byte characters>","price":<30>}:
        // 11 + 19 + 13 + 800 + 10 + 30 + 1 bytes, in brackets; escaped, its 8 quotes
        // double (200 quotes instead of the four-byte characters take as much: 2 bytes
        // each in the body, 4 in params), and `["` and `"]` go around it.
        let order = 11 + 19 + 13 + 800 + 10 + 30 + 1;
        assert_eq!(
            largest,
            Size {
                body: 2 + order,
                params: 4 + 2 + order + 8,
            }
        );
        assert_eq!(largest.largest(), 898);
        // At the default budget a chunk holds thousands even of these.
        assert_eq!(DEFAULT_CHUNK_BYTES / largest.largest(), 3503);
    }

    #[test]
    fn the_worst_orders_are_valid_and_as_large_as_said() {
        for order in worst_orders() {
            assert!(Size::EMPTY.with(&json(&order), true).largest() <= largest_order().largest());
            let raw = RawValue::from_string(String::from_utf8(json(&order)).unwrap()).unwrap();
            assert_eq!(parse_order(0, &raw).unwrap(), order);
        }
        assert_eq!(worst_orders().count(), 6);
    }

    #[test]
    fn sizes_add_up_to_what_is_sent_and_escaped() {
        let orders: Vec<Order> = worst_orders().collect();
        let mut size = Size::EMPTY;
        for (i, order) in orders.iter().enumerate() {
            size = size.with(&json(order), i == 0);
        }
        assert_eq!(size, measured(&orders));
        let body = serde_json::to_vec(&orders).unwrap();
        assert_eq!(Size::of_body(&body), size);
        assert_eq!(Size::of_body(b"[]"), Size::EMPTY);
    }

    fn valid_order() -> impl Strategy<Value = Order> {
        let customer = "[a-zé€😀\"\\\\ ]{1,200}".prop_filter("not blank", |c| !c.trim().is_empty());
        let price = (0i64..=999_999_999_999, 0u32..=26).prop_filter_map(
            "representable",
            |(cents, extra)| {
                let mantissa = i128::from(cents).checked_mul(10i128.pow(extra))?;
                Decimal::try_from_i128_with_scale(mantissa, 2 + extra).ok()
            },
        );
        (1i64..=i64::MAX, customer, price).prop_filter_map("valid", |(id, customer, price)| {
            Order::new(0, id, customer, price).ok()
        })
    }

    #[test]
    fn lowering_a_limit_says_only_the_first_time() {
        let limits = Limits::new(2000, 100);
        assert!(limits.lower(Limit::Orders, 1000));
        assert!(!limits.lower(Limit::Orders, 1500));
        assert!(!limits.lower(Limit::Orders, 500));
        assert_eq!(limits.orders(), 500);
        assert!(!limits.lower(Limit::Orders, 0));
        assert_eq!(limits.orders(), 1);
        assert_eq!(limits.configured(Limit::Orders), 2000);
        assert!(!limits.lower(Limit::Bytes, 100));
        assert!(limits.lower(Limit::Bytes, 50));
        assert_eq!(limits.bytes(), 50);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 500, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn no_valid_order_is_larger_than_the_largest(order in valid_order()) {
            let size = Size::EMPTY.with(&json(&order), true);
            prop_assert_eq!(size, measured(std::slice::from_ref(&order)));
            prop_assert!(size.largest() <= largest_order().largest());
            prop_assert!(order.price().to_string().len() <= longest_price().to_string().len());
        }
    }
}
