//! The orders' wire formats, each written in one place: an order's JSON (what batch sends,
//! what order-processor answers), the PostgreSQL binding's `params` (three PostgreSQL array
//! literals, of ids, customers and prices, as JSON strings: daprd would turn JSON numbers
//! into floats), the bytes both take ([`Size`], the most one valid order can take in
//! [`largest_order`]), a fast reader of orders written the plain way ([`decode_order`]),
//! and the error body every service answers with ([`ErrorBody`]).

use std::borrow::Cow;
use std::fmt::{self, Write as _};

use rust_decimal::Decimal;
use serde::de::{Error as _, MapAccess, Visitor};
use serde::ser::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

use crate::order::{MAX_CUSTOMER_CHARS, Order, OrderError, max_price, parse_order};

/// Writes `order` as compact JSON, `{"orderid":1,"customer":"A","price":1.50}`: the price
/// with its exact digits, the customer escaped as serde_json escapes strings.
pub fn write_json(out: &mut Vec<u8>, order: &Order) {
    out.extend_from_slice(b"{\"orderid\":");
    push_display(out, order.orderid());
    out.extend_from_slice(b",\"customer\":\"");
    for &byte in order.customer().as_bytes() {
        push_json_escaped(out, byte);
    }
    out.extend_from_slice(b"\",\"price\":");
    push_display(out, order.price());
    out.push(b'}');
}

/// Written as [`write_json`] writes it: prices as JSON numbers with their
/// exact decimal digits, never through a float.
impl Serialize for Order {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut json = Vec::with_capacity(64 + self.customer().len());
        crate::wire::write_json(&mut json, self);
        let json = String::from_utf8(json).map_err(S::Error::custom)?;
        RawValue::from_string(json)
            .map_err(S::Error::custom)?
            .serialize(serializer)
    }
}

/// The orders as a JSON array: a request body to order-processor.
pub fn orders_json<'a>(orders: impl IntoIterator<Item = &'a Order>) -> Vec<u8> {
    let mut out = Vec::new();
    write_orders(&mut out, orders);
    out
}

/// Appends the orders as a JSON array (to room the caller sized with [`Size`]).
pub fn write_orders<'a>(out: &mut Vec<u8>, orders: impl IntoIterator<Item = &'a Order>) {
    out.push(b'[');
    for (index, order) in orders.into_iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        write_json(out, order);
    }
    out.push(b']');
}

/// The binding's `params` for orders: `["{1,2}","{\"A\",\"B \\\"b\\\"\"}","{1.50,2}"]`,
/// which the statement unpacks with `unnest($1::text::bigint[], $2::text::text[],
/// $3::text::numeric[])`. Customers are quoted array elements (a quote or backslash gets
/// a backslash), and the whole is escaped once more as JSON strings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Params(String);

impl Params {
    /// The params for `orders`, written in one pass.
    pub fn from_orders(orders: &[Order]) -> Self {
        let size = orders
            .iter()
            .fold(Size::EMPTY, |size, order| size.plus(Size::of(order), false));
        let mut out = Vec::with_capacity(size.params);
        out.extend_from_slice(b"[\"{");
        let separated = |out: &mut Vec<u8>, write: &dyn Fn(&mut Vec<u8>, &Order)| {
            for (index, order) in orders.iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                write(out, order);
            }
        };
        separated(&mut out, &|out, order| push_display(out, order.orderid()));
        out.extend_from_slice(b"}\",\"{");
        separated(&mut out, &|out, order| {
            out.extend_from_slice(b"\\\"");
            for &byte in order.customer().as_bytes() {
                match byte {
                    b'"' => out.extend_from_slice(b"\\\\\\\""),
                    b'\\' => out.extend_from_slice(b"\\\\\\\\"),
                    _ => push_json_escaped(out, byte),
                }
            }
            out.extend_from_slice(b"\\\"");
        });
        out.extend_from_slice(b"}\",\"{");
        separated(&mut out, &|out, order| push_display(out, order.price()));
        out.extend_from_slice(b"}\"]");
        // Only ASCII was added around the customers' UTF-8, whose bytes pass unchanged.
        Self(String::from_utf8(out).unwrap_or_default())
    }

    /// The metadata value, as daprd receives it.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The metadata value, for the request that carries it.
    pub fn into_string(self) -> String {
        self.0
    }
}

/// The bytes a chunk of orders takes on its way: as the request body (a JSON array) and
/// as the binding's `params`. Both must stay under daprd's 4 MiB limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Size {
    /// The request body.
    pub body: usize,
    /// The binding's `params`.
    pub params: usize,
}

impl Size {
    /// No order: `[]` and `["{}","{}","{}"]`.
    pub const EMPTY: Self = Self {
        body: 2,
        params: 16,
    };

    /// What an order written as `json` adds, separators apart, when its share of the
    /// binding's `params` is known (`params`).
    pub fn new(json: &[u8], params: usize) -> Self {
        Self {
            body: json.len(),
            params,
        }
    }

    /// What one order adds, separators apart.
    pub fn of(order: &Order) -> Self {
        let (id, price) = (display_len(order.orderid()), display_len(order.price()));
        let (mut json, mut params) = (0, 4);
        for &byte in order.customer().as_bytes() {
            let escaped = json_escaped_len(byte);
            json += escaped;
            params += if byte == b'"' || byte == b'\\' {
                4
            } else {
                escaped
            };
        }
        Self {
            body: 35 + id + json + price,
            params: id + params + price,
        }
    }

    /// What one order adds, separators apart, from its JSON as [`write_json`] wrote it:
    /// no second formatting of its id and price. The same as [`Size::of`].
    pub fn of_json(json: &[u8], order: &Order) -> Self {
        // In `params` the customer is quoted (4 bytes) and every quote or backslash of it
        // takes 4 bytes, not 2; the 35 bytes of field names and quotes are not there.
        let doubled = order
            .customer()
            .bytes()
            .filter(|b| *b == b'"' || *b == b'\\')
            .count();
        Self::new(json, json.len() + 4 + 2 * doubled - 35)
    }

    /// The sizes once an order of size `order` joins (after separators, unless `first`).
    pub fn plus(self, order: Self, first: bool) -> Self {
        let separator = usize::from(!first);
        Self {
            body: self.body + separator + order.body,
            params: self.params + 3 * separator + order.params,
        }
    }

    /// The larger of the two, which a byte budget bounds.
    pub fn largest(self) -> usize {
        self.body.max(self.params)
    }
}

/// The most bytes a chunk of one valid order takes, each size the largest over all valid
/// orders: a byte budget below its [`Size::largest`] could not carry every valid order.
/// The candidates are the largest id and the longest price text with a customer of the
/// most characters of each kind that differs in size (1 to 4 bytes of UTF-8, or a quote
/// or backslash, which both formats escape).
pub fn largest_order() -> Size {
    ['a', 'é', '€', '😀', '"', '\\']
        .into_iter()
        .filter_map(|c| {
            let customer = c.to_string().repeat(MAX_CUSTOMER_CHARS);
            Order::new(0, i64::MAX, customer, longest_price()).ok()
        })
        .map(|order| Size::EMPTY.plus(Size::of(&order), true))
        .fold(Size::EMPTY, |most, size| Size {
            body: most.body.max(size.body),
            params: most.params.max(size.params),
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
        .max_by_key(|price| display_len(price))
        .unwrap_or_else(max_price)
}

/// Reads and checks the order at `index` from its JSON text; `None` when the text is not
/// one JSON value. An order written the plain way (the three fields once each, unescaped
/// keys, an integer id, the price a JSON number) is read in one go, borrowing the customer
/// when it has no escapes; any other goes to [`parse_order`], which finds every problem.
/// Both give the same result for every input.
pub fn decode_order(index: usize, json: &[u8]) -> Option<Result<Order, Vec<OrderError>>> {
    let mut deserializer = serde_json::Deserializer::from_slice(json);
    match deserializer.deserialize_map(FastOrder) {
        Ok(order) if deserializer.end().is_ok() => Some(Ok(order)),
        _ => serde_json::from_slice::<&RawValue>(json)
            .ok()
            .map(|raw| parse_order(index, raw)),
    }
}

/// A serde visitor that reads one valid order written the plain way, and declines (with an
/// error that says only that) anything else, valid or not.
pub struct FastOrder;

impl<'de> Visitor<'de> for FastOrder {
    type Value = Order;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an order written the plain way")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Order, A::Error> {
        let declined = || A::Error::custom("declined: not a plain valid order");
        let (mut orderid, mut customer, mut price) = (None, None, None);
        // Borrowed keys: a key written with escapes fails here, and the general path reads it.
        while let Some(key) = map.next_key::<&'de str>()? {
            match key {
                "orderid" if orderid.is_none() => orderid = Some(map.next_value::<i64>()?),
                "customer" if customer.is_none() => {
                    customer = Some(map.next_value::<Cow<'de, str>>()?);
                }
                "price" if price.is_none() => {
                    let raw = map.next_value::<&'de RawValue>()?;
                    price = Some(plain_price(raw.get()).ok_or_else(declined)?);
                }
                _ => return Err(declined()),
            }
        }
        let (Some(orderid), Some(customer), Some(price)) = (orderid, customer, price) else {
            return Err(declined());
        };
        Order::new(0, orderid, customer, price).map_err(|_| declined())
    }
}

/// A price written as a JSON number without an exponent, read exactly as the general path
/// reads it; `None` for any other form, which that path reads.
fn plain_price(text: &str) -> Option<Decimal> {
    let number = text.starts_with(|c: char| c == '-' || c.is_ascii_digit());
    (number && !text.contains(['e', 'E']))
        .then(|| Decimal::from_str_exact(text).ok())
        .flatten()
}

/// The body of every error answer: `{"error":{"code","message"}}`, with `details` naming
/// each invalid order when there are some.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The inside of [`ErrorBody`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// A stable, machine-readable code.
    pub code: Cow<'static, str>,
    /// What happened, for people.
    pub message: String,
    /// Each problem of each invalid order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Vec<OrderError>>,
}

impl ErrorBody {
    /// An error answer's body.
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            error: ErrorDetail {
                code: Cow::Borrowed(code),
                message: message.into(),
                details: None,
            },
        }
    }

    /// The answer: `status` with this body as JSON.
    pub fn into_response(self, status: axum::http::StatusCode) -> axum::response::Response {
        axum::response::IntoResponse::into_response((status, axum::Json(self)))
    }
}

fn push_json_escaped(out: &mut Vec<u8>, byte: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    match byte {
        b'"' => out.extend_from_slice(b"\\\""),
        b'\\' => out.extend_from_slice(b"\\\\"),
        b'\n' => out.extend_from_slice(b"\\n"),
        b'\r' => out.extend_from_slice(b"\\r"),
        b'\t' => out.extend_from_slice(b"\\t"),
        0x08 => out.extend_from_slice(b"\\b"),
        0x0c => out.extend_from_slice(b"\\f"),
        0..0x20 => out.extend_from_slice(&[
            b'\\',
            b'u',
            b'0',
            b'0',
            HEX[usize::from(byte >> 4)],
            HEX[usize::from(byte & 0xf)],
        ]),
        _ => out.push(byte),
    }
}

fn json_escaped_len(byte: u8) -> usize {
    match byte {
        b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
        0..0x20 => 6,
        _ => 1,
    }
}

/// Writes a value's `Display` form without an allocation.
fn push_display(out: &mut Vec<u8>, value: impl fmt::Display) {
    struct Bytes<'a>(&'a mut Vec<u8>);
    impl fmt::Write for Bytes<'_> {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            self.0.extend_from_slice(s.as_bytes());
            Ok(())
        }
    }
    // Writing into memory cannot fail.
    let _ = write!(Bytes(out), "{value}");
}

/// The length of a value's `Display` form, counted without writing it anywhere.
fn display_len(value: impl fmt::Display) -> usize {
    struct Count(usize);
    impl fmt::Write for Count {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            self.0 += s.len();
            Ok(())
        }
    }
    let mut count = Count(0);
    let _ = write!(count, "{value}");
    count.0
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn order(id: i64, customer: &str, cents: i64) -> Order {
        Order::new(0, id, customer, Decimal::new(cents, 2)).unwrap()
    }

    /// Customers that test the escaping: quotes, backslashes, what looks like escapes,
    /// non-ASCII letters, characters JSON may leave unescaped.
    fn tricky() -> Vec<Order> {
        [
            "John Smith",
            "Jane O'Brien",
            r#"A "quoted" name"#,
            r"back\slash",
            r#"\"already escaped\""#,
            r"\u0041 is not A",
            "Zoë Nguyễn 😀",
            "line\u{2028}separator",
            "{a,b}",
            "NULL",
            r#"""#,
            r"\",
        ]
        .iter()
        .enumerate()
        .map(|(i, customer)| order(i as i64 + 1, customer, 1030 * i as i64))
        .collect()
    }

    /// What PostgreSQL reads from a one-dimensional array literal of quoted elements.
    fn array_elements(literal: &str) -> Vec<String> {
        let inner = literal
            .strip_prefix('{')
            .unwrap()
            .strip_suffix('}')
            .unwrap();
        let (mut elements, mut current, mut chars) = (Vec::new(), None, inner.chars());
        while let Some(c) = chars.next() {
            match (c, &mut current) {
                ('"', None) => current = Some(String::new()),
                ('"', Some(_)) => elements.push(current.take().unwrap()),
                ('\\', Some(s)) => s.push(chars.next().unwrap()),
                (c, Some(s)) => s.push(c),
                (',', None) => {}
                (c, None) => panic!("unquoted {c:?} in {literal}"),
            }
        }
        elements
    }

    #[test]
    fn orders_are_written_as_serde_json_writes_the_same_values() {
        for order in tricky() {
            let mut out = Vec::new();
            write_json(&mut out, &order);
            let expected = serde_json::json!({
                "orderid": order.orderid(),
                "customer": order.customer(),
            });
            let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(value["orderid"], expected["orderid"]);
            assert_eq!(value["customer"], expected["customer"]);
            let text = String::from_utf8(out).unwrap();
            assert!(
                text.ends_with(&format!(",\"price\":{}}}", order.price())),
                "{text}"
            );
        }
        assert_eq!(orders_json(&[]), b"[]");
    }

    #[test]
    fn params_are_three_array_literals_that_give_back_the_orders() {
        let orders = tricky();
        let [ids, customers, prices]: [String; 3] =
            serde_json::from_str(Params::from_orders(&orders).as_str()).unwrap();
        let ids: Vec<i64> = ids[1..ids.len() - 1]
            .split(',')
            .map(|id| id.parse().unwrap())
            .collect();
        let prices: Vec<Decimal> = prices[1..prices.len() - 1]
            .split(',')
            .map(|p| Decimal::from_str_exact(p).unwrap())
            .collect();
        let customers = array_elements(&customers);
        for (i, order) in orders.iter().enumerate() {
            assert_eq!(ids[i], order.orderid());
            assert_eq!(customers[i], order.customer());
            assert_eq!(prices[i].to_string(), order.price().to_string());
        }
        assert_eq!(Params::from_orders(&[]).as_str(), r#"["{}","{}","{}"]"#);
    }

    #[test]
    fn the_largest_valid_order_is_worked_out_from_the_validation_rules() {
        let price = longest_price();
        assert_eq!(price.to_string(), "7.9200000000000000000000000000");
        // 200 quotes: 2 bytes each in the body, 4 in params, the most of any character
        // but a four-byte one in the body (which takes as much).
        let largest = largest_order();
        assert_eq!(largest.body, 2 + 35 + 19 + 800 + 30);
        assert_eq!(largest.params, 16 + 19 + 4 + 800 + 30);
        assert_eq!(largest.largest(), 886);
    }

    #[test]
    fn an_error_body_reads_back_as_it_was_written() {
        let body = ErrorBody::new("invalid_orders", "1 order is invalid");
        let json = serde_json::to_string(&body).unwrap();
        assert_eq!(
            json,
            r#"{"error":{"code":"invalid_orders","message":"1 order is invalid"}}"#
        );
        assert_eq!(serde_json::from_str::<ErrorBody>(&json).unwrap(), body);
    }

    fn valid_order() -> impl Strategy<Value = Order> {
        let customer =
            "[a-zé€😀\"\\\\{},' ]{1,200}".prop_filter("not blank", |c| !c.trim().is_empty());
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

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

        /// The sizes are exactly the bytes written, for any orders; none is larger than
        /// the largest.
        #[test]
        fn sizes_are_the_bytes_written(orders in prop::collection::vec(valid_order(), 0..6)) {
            let size = orders
                .iter()
                .enumerate()
                .fold(Size::EMPTY, |size, (i, order)| size.plus(Size::of(order), i == 0));
            prop_assert_eq!(size.body, orders_json(&orders).len());
            prop_assert_eq!(size.params, Params::from_orders(&orders).as_str().len());
            for order in &orders {
                let mut json = Vec::new();
                write_json(&mut json, order);
                prop_assert_eq!(Size::of_json(&json, order), Size::of(order));
                prop_assert!(Size::EMPTY.plus(Size::of(order), true).largest() <= largest_order().largest());
                let text = String::from_utf8(orders_json([order])).unwrap();
                prop_assert_eq!(&decode_order(0, &text.as_bytes()[1..text.len() - 1]).unwrap().unwrap(), order);
            }
        }
    }
}
