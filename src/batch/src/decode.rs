//! Reading one order from its raw JSON, fast. Nearly every order is a plain
//! `{"orderid":…,"customer":"…","price":…}`, which serde's derived parser reads in one go,
//! borrowing the customer's text when it has no escapes, and [`Order::new`] checks. Any
//! order that path does not take as it is goes to common's [`parse_order`], which finds
//! every problem and says why; so both paths accept the same orders, with the same values
//! (a property test holds them to it), and all problems are worded by common.

use std::borrow::Cow;

use common::order::{Order, OrderError, parse_order, parse_price};
use serde::Deserialize;
use serde_json::value::RawValue;

/// Parses and checks the order at `index` of the file.
pub fn decode(index: usize, raw: &RawValue) -> Result<Order, Vec<OrderError>> {
    plain(raw)
        .and_then(|(orderid, customer, price)| Order::new(index, orderid, customer, price).ok())
        .map_or_else(|| parse_order(index, raw), Ok)
}

/// The id of an order, valid or not, when it could be read as one.
pub fn id_of(order: &Result<Order, Vec<OrderError>>) -> Option<i64> {
    match order {
        Ok(order) => Some(order.orderid()),
        Err(errors) => errors.iter().find_map(|error| error.orderid),
    }
}

/// The fields of an order written plainly: exactly the three, the price a JSON number.
fn plain(raw: &RawValue) -> Option<(i64, Cow<'_, str>, rust_decimal::Decimal)> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Plain<'a> {
        orderid: i64,
        #[serde(borrow)]
        customer: Cow<'a, str>,
        #[serde(borrow)]
        price: &'a RawValue,
    }
    let order: Plain<'_> = serde_json::from_str(raw.get()).ok()?;
    let price = order.price.get();
    // A price given as a string is rare: common's parser reads it.
    if !price.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
        return None;
    }
    let price = parse_price(price).ok()?;
    Some((order.orderid, order.customer, price))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::Value;

    use super::*;

    fn raw(json: &str) -> Box<RawValue> {
        RawValue::from_string(json.to_owned()).unwrap()
    }

    #[test]
    fn a_plain_order_is_read_with_its_exact_price() {
        let order = decode(
            3,
            &raw(r#"{"orderid":1,"customer":"Zo\u00eb","price":100.30}"#),
        )
        .unwrap();
        assert_eq!((order.orderid(), order.customer()), (1, "Zoë"));
        assert_eq!(order.price().to_string(), "100.30");
    }

    #[test]
    fn anything_else_is_left_to_common_which_says_why() {
        let cases = [
            (
                r#"{"orderid":1,"customer":"A","price":-1}"#,
                "price must not be negative",
            ),
            (
                r#"{"orderid":1,"customer":"A","price":"+1_000.5"}"#,
                "written as a JSON number",
            ),
            (
                r#"{"orderid":1,"orderid":1,"customer":"A","price":1}"#,
                "appears more than once",
            ),
            (
                r#"{"orderid":1,"customer":"A","price":1,"x":0}"#,
                "x is not a known field",
            ),
            (
                r#"{"orderid":0,"customer":"A","price":1}"#,
                "orderid must be from 1",
            ),
            ("[1]", "must be a JSON object, not an array"),
        ];
        for (json, expected) in cases {
            let errors = decode(5, &raw(json)).unwrap_err();
            assert_eq!(errors[0].index, 5);
            assert!(
                errors.iter().any(|e| e.to_string().contains(expected)),
                "{json}: {errors:?}"
            );
        }
        let string_price =
            decode(0, &raw(r#"{"orderid":1,"customer":"A","price":"0.10"}"#)).unwrap();
        assert_eq!(string_price.price().to_string(), "0.10");
    }

    #[test]
    fn the_id_is_known_for_valid_and_for_most_invalid_orders() {
        assert_eq!(
            id_of(&decode(
                0,
                &raw(r#"{"orderid":4,"customer":"A","price":1}"#)
            )),
            Some(4)
        );
        assert_eq!(
            id_of(&decode(0, &raw(r#"{"orderid":4,"customer":"","price":1}"#))),
            Some(4)
        );
        assert_eq!(
            id_of(&decode(
                0,
                &raw(r#"{"orderid":-4,"customer":"A","price":1}"#)
            )),
            None
        );
    }

    /// Orders that are valid or nearly so, and any JSON with the fields likely.
    fn json_order() -> impl Strategy<Value = String> {
        let id = prop_oneof![
            (1i64..=i64::MAX).prop_map(|i| i.to_string()),
            Just("0".to_owned()),
            Just("-3".to_owned()),
            Just("1.0".to_owned()),
            Just("1e3".to_owned()),
            Just("99999999999999999999".to_owned()),
            Just("\"7\"".to_owned()),
        ];
        let customer = prop_oneof![
            "[a-zé😀 \"\\\\]{0,6}".prop_map(|c| Value::from(c).to_string()),
            Just(r#""A\u0000""#.to_owned()),
            Just(r#""\u00e9\n""#.to_owned()),
            Just("5".to_owned()),
        ];
        let price = prop_oneof![
            "-?[0-9]{1,13}(\\.[0-9]{1,4})?([eE][-+]?[0-9])?",
            "\"[-+ ]?[0-9_.]{1,8}\"",
            Just("null".to_owned()),
            Just("1e300".to_owned()),
        ];
        let extra = prop_oneof![
            6 => Just(String::new()),
            1 => Just(r#","note":1"#.to_owned()),
            1 => Just(r#","orderid":2"#.to_owned()),
        ];
        (id, customer, price, extra, any::<bool>()).prop_map(
            |(id, customer, price, extra, reorder)| {
                if reorder {
                    format!(r#"{{"price":{price},"customer":{customer}{extra},"orderid":{id}}}"#)
                } else {
                    format!(r#"{{"orderid":{id},"customer":{customer},"price":{price}{extra}}}"#)
                }
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 3000, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn the_fast_path_and_commons_parser_agree_on_every_order(
            json in json_order(),
            index in 0usize..10,
        ) {
            let raw = RawValue::from_string(json);
            prop_assume!(raw.is_ok(), "not JSON");
            let raw = raw.unwrap();
            prop_assert_eq!(decode(index, &raw), parse_order(index, &raw));
        }
    }
}
