//! Reads the body of `POST /orders`: one order or an array of orders, every one checked by
//! the shared rules of `common::order`. A body in the form batch sends (objects with the
//! three fields, each once and unescaped, integer ids, prices as plain JSON numbers, no
//! repeated id) is read in one pass straight into orders, each made by `Order::new`, which
//! checks it. Any other body, and every body with a problem, is read again by the general
//! path, which reports each problem by order and field. The fast path only ever declines,
//! so both accept the same bodies and give the same orders.

use std::collections::HashSet;
use std::fmt;

use common::order::{Order, parse_orders};
use common::wire::FastOrder;
use serde::de::{DeserializeSeed, Error as _, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use crate::ApiError;

/// The orders of `body`, at most `max_orders` of them, all valid; or why not.
pub fn parse(body: &[u8], max_orders: usize) -> Result<Vec<Order>, ApiError> {
    match fast(body, max_orders) {
        Some(orders) => Ok(orders),
        None => general(body, max_orders),
    }
}

/// The orders of a body in batch's form that are all valid, or `None`.
fn fast(body: &[u8], max_orders: usize) -> Option<Vec<Order>> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let orders = FastBody { max_orders }
        .deserialize(&mut deserializer)
        .ok()?;
    deserializer.end().ok()?;
    Some(orders)
}

/// Reads one order or an array of orders and checks them all, reporting every problem.
fn general(body: &[u8], max_orders: usize) -> Result<Vec<Order>, ApiError> {
    let raw: Box<RawValue> = serde_json::from_slice(body).map_err(|error| {
        ApiError::MalformedBody(format!("the request body is not valid JSON: {error}"))
    })?;
    let raws: Vec<Box<RawValue>> = match raw.get().as_bytes().first() {
        Some(b'[') => serde_json::from_str(raw.get()).map_err(|error| {
            ApiError::MalformedBody(format!("the request body is not valid JSON: {error}"))
        })?,
        Some(b'{') => vec![raw],
        _ => {
            return Err(ApiError::MalformedBody(
                "the request body must be an order object or an array of orders".to_owned(),
            ));
        }
    };
    if raws.is_empty() {
        return Err(ApiError::MalformedBody(
            "the request body must hold at least one order".to_owned(),
        ));
    }
    if raws.len() > max_orders {
        return Err(ApiError::TooManyOrders {
            received: raws.len(),
            limit: max_orders,
        });
    }
    parse_orders(raws.iter().map(AsRef::as_ref)).map_err(ApiError::InvalidOrders)
}

/// The fast path's reading of a whole body. Its errors only say "decline": the general path
/// finds out what is wrong.
struct FastBody {
    max_orders: usize,
}

impl<'de> DeserializeSeed<'de> for FastBody {
    type Value = Vec<Order>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Vec<Order>, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for FastBody {
    type Value = Vec<Order>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an order or an array of orders")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Vec<Order>, A::Error> {
        FastOrder.visit_map(map).map(|order| vec![order])
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Order>, A::Error> {
        let mut orders = Vec::new();
        while let Some(FastOrderValue(order)) = seq.next_element()? {
            if orders.len() == self.max_orders {
                return Err(A::Error::custom("declined: too many orders"));
            }
            orders.push(order);
        }
        if orders.is_empty() || has_repeated_id(&orders) {
            return Err(A::Error::custom("declined: no orders, or a repeated id"));
        }
        Ok(orders)
    }
}

/// One valid order in batch's form.
struct FastOrderValue(Order);

impl<'de> Deserialize<'de> for FastOrderValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(FastOrder).map(Self)
    }
}

/// Whether two orders share an id. Batch sends ids in ascending order, which shows there
/// are none without hashing.
fn has_repeated_id(orders: &[Order]) -> bool {
    if orders.windows(2).all(|w| w[0].orderid() < w[1].orderid()) {
        return false;
    }
    let mut seen = HashSet::with_capacity(orders.len());
    !orders.iter().all(|order| seen.insert(order.orderid()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::order::OrderError;
    use rust_decimal::Decimal;

    /// What a reader of the answer sees: the status, the code, the message, the details.
    type Refusal = (u16, &'static str, String, Option<Vec<OrderError>>);

    fn seen(result: Result<Vec<Order>, ApiError>) -> Result<Vec<Order>, Refusal> {
        result.map_err(|error| {
            let (status, code) = error.status_and_code();
            let details = match &error {
                ApiError::InvalidOrders(errors) => Some(errors.clone()),
                _ => None,
            };
            (status.as_u16(), code, error.to_string(), details)
        })
    }

    fn batch_body(count: i64) -> String {
        let orders: Vec<Order> = (1..=count)
            .map(|id| {
                let customer =
                    ["John Smith", "Jane O'Brien", "Zoë \"Z\" Nguyễn", r"C:\path"][id as usize % 4];
                Order::new(0, id * 3, customer, Decimal::new(id * 1_001 % 1_000_000, 2)).unwrap()
            })
            .collect();
        serde_json::to_string(&orders).unwrap()
    }

    /// Bodies the fast path must decline, each valid or not; the general path decides.
    fn declined_bodies() -> Vec<String> {
        let order = |fields: &str| format!("[{{{fields}}}]");
        let mut bodies: Vec<String> = [
            r#""orderid":1,"customer":"A","price":"1.50""#,
            r#""orderid":1,"customer":"A","price":1e2"#,
            r#""orderid":1,"customer":"A","price":15E-1"#,
            r#""orderid":1,"customer":"A","price":1.005"#,
            r#""orderid":1,"customer":"A","price":-1"#,
            r#""orderid":1,"customer":"A","price":null"#,
            r#""orderid":1,"customer":"A","price":true"#,
            r#""orderid":1,"customer":"A","price":1000000000000"#,
            r#""orderid":1,"customer":"A","price":100000000000000000000000000000000"#,
            r#""orderid":1.0,"customer":"A","price":1"#,
            r#""orderid":"1","customer":"A","price":1"#,
            r#""orderid":0,"customer":"A","price":1"#,
            r#""orderid":-1,"customer":"A","price":1"#,
            r#""orderid":9223372036854775808,"customer":"A","price":1"#,
            r#""orderid":1,"customer":"","price":1"#,
            r#""orderid":1,"customer":" ","price":1"#,
            r#""orderid":1,"customer":"A\u0007","price":1"#,
            r#""orderid":1,"customer":5,"price":1"#,
            r#""order\u0069d":1,"customer":"A","price":1"#,
            r#""orderid":1,"customer":"A","price":1,"note":"x""#,
            r#""orderid":1,"orderid":1,"customer":"A","price":1"#,
            r#""orderid":1,"customer":"A","customer":"A","price":1"#,
            r#""orderid":1,"customer":"A","price":1,"price":1"#,
            r#""orderid":1,"customer":"A""#,
            "",
        ]
        .iter()
        .map(|fields| order(fields))
        .collect();
        let long = "é".repeat(201);
        bodies.push(order(&format!(
            r#""orderid":1,"customer":"{long}","price":1"#
        )));
        bodies.extend(
            [
                "",
                "[]",
                "{}",
                "42",
                "\"orders\"",
                "[1]",
                "[[]]",
                "[{\"orderid\":1,\"customer\":\"A\",\"price\":1}",
                "[{\"orderid\":1,\"customer\":\"A\",\"price\":1}] x",
                "[{\"orderid\":1,\"customer\":\"A\",\"price\":1},]",
                r#"[{"orderid":1,"customer":"A","price":1},{"orderid":1,"customer":"A","price":1}]"#,
                r#"[{"orderid":2,"customer":"A","price":1},{"orderid":1,"customer":"A","price":1},{"orderid":2,"customer":"B","price":2}]"#,
            ]
            .map(str::to_owned),
        );
        bodies.push(batch_body(11));
        bodies
    }

    #[test]
    fn bodies_in_batchs_form_are_read_by_the_fast_path() {
        let body = batch_body(500);
        let orders = fast(body.as_bytes(), 500).expect("the fast path declined batch's form");
        assert_eq!(Ok(orders), seen(general(body.as_bytes(), 500)));

        for body in [
            r#"{"orderid":7,"customer":"Solo","price":1}"#,
            " [ {\"price\" : 0.10 , \"customer\" : \"A\" ,\n\"orderid\" : 2 } ] \n",
            r#"[{"orderid":3,"customer":"C","price":3},{"orderid":1,"customer":"A","price":1.500}]"#,
        ] {
            let orders = fast(body.as_bytes(), 10).expect(body);
            assert_eq!(Ok(orders), seen(general(body.as_bytes(), 10)), "{body}");
        }
    }

    #[test]
    fn the_fast_path_declines_every_other_body_and_the_general_path_decides() {
        for body in declined_bodies() {
            assert_eq!(fast(body.as_bytes(), 10), None, "{body}");
            assert_eq!(
                seen(parse(body.as_bytes(), 10)),
                seen(general(body.as_bytes(), 10)),
                "{body}"
            );
        }
    }

    #[test]
    fn a_body_with_more_orders_than_the_limit_is_refused_with_the_count_and_the_limit() {
        let body = batch_body(11);
        let refusal = seen(parse(body.as_bytes(), 10)).unwrap_err();
        assert_eq!(
            refusal,
            (
                400,
                "too_many_orders",
                "the request holds 11 orders; at most 10 are accepted (MAX_ORDERS_PER_REQUEST)"
                    .to_owned(),
                None
            )
        );
        assert_eq!(parse(body.as_bytes(), 11).unwrap().len(), 11);
    }

    #[test]
    fn prices_keep_their_digits_on_the_fast_path() {
        let body = r#"[{"orderid":1,"customer":"A","price":9999999999.99},
                       {"orderid":2,"customer":"B","price":0.10},
                       {"orderid":3,"customer":"C","price":-0}]"#;
        let orders = fast(body.as_bytes(), 10).unwrap();
        let prices: Vec<String> = orders.iter().map(|o| o.price().to_string()).collect();
        assert_eq!(prices, ["9999999999.99", "0.10", "0"]);
        assert_eq!(Ok(orders), seen(general(body.as_bytes(), 10)));
    }
}
