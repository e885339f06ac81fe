//! Property tests of the order parser and validator (proptest, a bounded number of cases
//! per run): valid orders survive a round trip exactly, and no input, however hostile,
//! makes the parser panic or lets an invalid order through.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use common::order::{FIELDS, MAX_CUSTOMER_CHARS, Order, max_price, parse_order, parse_orders};
use proptest::prelude::*;
use rust_decimal::Decimal;
use serde_json::Value;
use serde_json::value::RawValue;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 2000,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn valid_order() -> impl Strategy<Value = Order> {
    let customer = "[^\\p{Cc}]{1,200}".prop_filter("not blank", |c| !c.trim().is_empty());
    let cents = 0i64..=999_999_999_999;
    (1i64..=i64::MAX, customer, cents).prop_map(|(orderid, customer, cents)| {
        Order::new(0, orderid, customer, Decimal::new(cents, 2)).expect("a valid order")
    })
}

/// Any JSON value, nested a few levels, with the order's field names likely.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "\\PC{0,20}".prop_map(Value::String),
        "-?[0-9]{1,30}(\\.[0-9]{0,30})?(e-?[0-9]{1,3})?"
            .prop_map(|n| { serde_json::from_str::<Value>(&n).unwrap_or(Value::String(n)) }),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        let key = prop_oneof![
            Just("orderid".to_owned()),
            Just("customer".to_owned()),
            Just("price".to_owned()),
            "[a-z]{1,8}",
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(key, inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn a_valid_order_survives_serialising_and_parsing_exactly(order in valid_order()) {
        let json = serde_json::to_string(&order).unwrap();
        let raw: Box<RawValue> = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(parse_order(0, &raw).unwrap(), order);
    }

    #[test]
    fn any_json_is_either_a_valid_order_or_refused_with_reasons(value in json_value()) {
        let raw = RawValue::from_string(value.to_string()).unwrap();
        match parse_order(5, &raw) {
            Ok(order) => {
                prop_assert!(order.orderid() >= 1);
                prop_assert!(!order.customer().trim().is_empty());
                prop_assert!(order.customer().chars().count() <= MAX_CUSTOMER_CHARS);
                prop_assert!(!order.price().is_sign_negative() || order.price().is_zero());
                prop_assert!(order.price() <= max_price());
                prop_assert!(order.price().normalize().scale() <= 2);
                let object = value.as_object().unwrap();
                prop_assert!(object.keys().all(|k| FIELDS.contains(&k.as_str())));
            }
            Err(errors) => {
                prop_assert!(!errors.is_empty());
                for error in errors {
                    prop_assert_eq!(error.index, 5);
                    prop_assert!(!error.reason.is_empty());
                }
            }
        }
    }

    /// A price given as a string is read exactly when the same text is a JSON number, and
    /// then as the number would be: no form that only rust_decimal reads (`+1_000.5`).
    #[test]
    fn a_price_string_is_read_only_when_it_is_written_as_a_json_number(
        text in "[-+ ]?[0-9_]{0,4}(\\.[0-9_]{0,3})?([eE][-+]?[0-9]{1,2})?"
    ) {
        let order = |price: String| {
            RawValue::from_string(format!(r#"{{"orderid":1,"customer":"A","price":{price}}}"#))
        };
        let as_string = order(Value::from(text.clone()).to_string()).unwrap();
        match (parse_order(0, &as_string), order(text.clone())) {
            (Ok(read), Ok(number)) => prop_assert_eq!(parse_order(0, &number).unwrap(), read),
            (Ok(read), Err(_)) => prop_assert!(false, "{text:?} was read as {read:?}"),
            (Err(_), _) => {}
        }
    }

    #[test]
    fn any_text_as_an_order_list_never_panics(text in "\\PC{0,200}") {
        if let Ok(raws) = serde_json::from_str::<Vec<Box<RawValue>>>(&text) {
            let _ = parse_orders(raws.iter().map(AsRef::as_ref));
        }
    }
}
