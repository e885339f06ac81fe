//! The order model and its validation, shared by batch (which checks a file before sending
//! it) and order-processor (which checks every request before storing it). Orders arrive as
//! raw JSON so that each problem can be reported with the order's position, its field and
//! the reason, and so that prices are read as exact decimals from their JSON text.

use std::collections::HashMap;
use std::fmt;

use rust_decimal::Decimal;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

/// The longest customer name accepted, in characters.
pub const MAX_CUSTOMER_CHARS: usize = 200;
/// Decimal places a price may have (`NUMERIC(12, 2)` in the database).
pub const PRICE_SCALE: u32 = 2;
/// The most problems listed for one order; the rest are counted in one more.
pub const MAX_PROBLEMS_PER_ORDER: usize = 10;
/// The fields an order has, in the order they are written.
pub const FIELDS: [&str; 3] = ["orderid", "customer", "price"];

/// The largest price accepted: what `NUMERIC(12, 2)` holds.
pub fn max_price() -> Decimal {
    Decimal::new(999_999_999_999, PRICE_SCALE)
}

/// A valid order: its fields are private, so [`parse_order`] and [`Order::new`], which
/// validate, are the only ways to make one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    orderid: i64,
    customer: String,
    price: Decimal,
}

impl Order {
    /// Checks the values and returns the order, or every problem found.
    pub fn new(
        index: usize,
        orderid: i64,
        customer: impl Into<String>,
        price: Decimal,
    ) -> Result<Self, Vec<OrderError>> {
        let order = Self {
            orderid,
            customer: customer.into(),
            price,
        };
        let mut errors = Vec::new();
        let mut report = |field: &str, reason: Option<String>| {
            if let Some(reason) = reason {
                errors.push(OrderError::new(index, Some(orderid), field, reason));
            }
        };
        report("orderid", check_orderid(orderid));
        report("customer", check_customer(&order.customer));
        report("price", check_price(price));
        if errors.is_empty() {
            Ok(order)
        } else {
            Err(errors)
        }
    }

    /// Positive, unique across all orders.
    pub fn orderid(&self) -> i64 {
        self.orderid
    }

    /// Non-blank, at most [`MAX_CUSTOMER_CHARS`] characters, no control characters.
    pub fn customer(&self) -> &str {
        &self.customer
    }

    /// Zero or more, at most two decimal places, at most [`max_price`].
    pub fn price(&self) -> Decimal {
        self.price
    }
}

/// What storing a request's orders did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteOutcome {
    /// Orders in the request.
    pub received: u64,
    /// Orders stored by this request.
    pub inserted: u64,
    /// Orders that were already stored with the same content.
    pub unchanged: u64,
    /// Ids already stored with a different customer or price; left as they were.
    pub conflicts: Vec<i64>,
}

/// One problem with one order: which order, which field, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderError {
    /// Position of the order in its request or file, counting from 0.
    pub index: usize,
    /// The order's id, when it could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orderid: Option<i64>,
    /// The field at fault; empty when the order as a whole is wrong.
    pub field: String,
    /// What is wrong, in words.
    pub reason: String,
}

impl OrderError {
    /// A problem with `field` of the order at `index`.
    pub fn new(
        index: usize,
        orderid: Option<i64>,
        field: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Self {
            index,
            orderid,
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for OrderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "order at index {}", self.index)?;
        if let Some(id) = self.orderid {
            write!(f, " (orderid {id})")?;
        }
        if self.field.is_empty() {
            write!(f, ": {}", self.reason)
        } else {
            write!(f, ": {} {}", self.field, self.reason)
        }
    }
}

/// Parses and checks the order at `index` from its JSON text, collecting every problem.
pub fn parse_order(index: usize, raw: &RawValue) -> Result<Order, Vec<OrderError>> {
    let fields = match serde_json::from_str::<Fields>(raw.get()) {
        Ok(fields) => fields.0,
        Err(_) => {
            return Err(vec![OrderError::new(
                index,
                None,
                "",
                format!("must be a JSON object, not {}", json_kind(raw)),
            )]);
        }
    };

    let mut seen: HashMap<&str, &RawValue> = HashMap::new();
    let mut problems: Vec<(String, String)> = Vec::new();
    for (name, value) in &fields {
        if !FIELDS.contains(&name.as_str()) {
            problems.push((
                name.clone(),
                format!(
                    "is not a known field (the fields are {})",
                    FIELDS.join(", ")
                ),
            ));
        } else if seen.insert(name.as_str(), value).is_some() {
            problems.push((name.clone(), "appears more than once".to_owned()));
        }
    }

    let orderid = field(&seen, "orderid", &mut problems, read_orderid);
    let customer = field(&seen, "customer", &mut problems, read_customer);
    let price = field(&seen, "price", &mut problems, read_price);

    match (orderid, customer, price) {
        (Some(orderid), Some(customer), Some(price)) if problems.is_empty() => Ok(Order {
            orderid,
            customer,
            price,
        }),
        (orderid, _, _) => {
            // An order of thousands of unknown fields is one bad order, not thousands.
            let more = problems.len().saturating_sub(MAX_PROBLEMS_PER_ORDER);
            problems.truncate(MAX_PROBLEMS_PER_ORDER);
            if more > 0 {
                problems.push((String::new(), format!("has {more} more problems")));
            }
            Err(problems
                .into_iter()
                .map(|(field, reason)| OrderError::new(index, orderid, field, reason))
                .collect())
        }
    }
}

/// Parses a list of orders and checks them together: an order id may appear only once.
/// Returns every valid order, or every problem found in any of them.
pub fn parse_orders<'a>(
    raws: impl IntoIterator<Item = &'a RawValue>,
) -> Result<Vec<Order>, Vec<OrderError>> {
    let mut orders = Vec::new();
    let mut errors = Vec::new();
    let mut first_index: HashMap<i64, usize> = HashMap::new();
    for (index, raw) in raws.into_iter().enumerate() {
        match parse_order(index, raw) {
            Ok(order) => {
                if let Some(first) = first_index.get(&order.orderid) {
                    errors.push(OrderError::new(
                        index,
                        Some(order.orderid),
                        "orderid",
                        format!("duplicates the order at index {first}"),
                    ));
                } else {
                    first_index.insert(order.orderid, index);
                    orders.push(order);
                }
            }
            Err(mut problems) => errors.append(&mut problems),
        }
    }
    if errors.is_empty() {
        Ok(orders)
    } else {
        Err(errors)
    }
}

fn field<T>(
    seen: &HashMap<&str, &RawValue>,
    name: &str,
    problems: &mut Vec<(String, String)>,
    read: impl FnOnce(&RawValue) -> Result<T, String>,
) -> Option<T> {
    let Some(raw) = seen.get(name) else {
        problems.push((name.to_owned(), "is required".to_owned()));
        return None;
    };
    match read(raw) {
        Ok(value) => Some(value),
        Err(reason) => {
            problems.push((name.to_owned(), reason));
            None
        }
    }
}

fn read_orderid(raw: &RawValue) -> Result<i64, String> {
    let text = raw.get();
    let value: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let Value::Number(number) = value else {
        return Err(format!("must be a whole number, not {}", json_kind(raw)));
    };
    let id = match number.as_i64() {
        Some(id) => id,
        None if is_integer_text(text) => return Err(out_of_range_id(text)),
        None => return Err("must be a whole number".to_owned()),
    };
    check_orderid(id).map_or(Ok(id), Err)
}

fn check_orderid(id: i64) -> Option<String> {
    (id < 1).then(|| out_of_range_id(&id.to_string()))
}

fn out_of_range_id(given: &str) -> String {
    format!("must be from 1 to {}, not {given}", i64::MAX)
}

fn is_integer_text(text: &str) -> bool {
    let digits = text.strip_prefix('-').unwrap_or(text);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

fn read_customer(raw: &RawValue) -> Result<String, String> {
    match serde_json::from_str::<Value>(raw.get()) {
        Ok(Value::String(customer)) => check_customer(&customer).map_or(Ok(customer), Err),
        _ => Err(format!("must be a string, not {}", json_kind(raw))),
    }
}

fn check_customer(customer: &str) -> Option<String> {
    if customer.trim().is_empty() {
        Some("must not be blank".to_owned())
    } else if customer.chars().count() > MAX_CUSTOMER_CHARS {
        Some(format!(
            "must be at most {MAX_CUSTOMER_CHARS} characters long, not {}",
            customer.chars().count()
        ))
    } else if customer.chars().any(char::is_control) {
        Some("must not contain control characters".to_owned())
    } else {
        None
    }
}

fn read_price(raw: &RawValue) -> Result<Decimal, String> {
    match serde_json::from_str::<Value>(raw.get()) {
        Ok(Value::Number(_)) => parse_price(raw.get()),
        // Money in a string is a plain decimal: an exponent there is more likely a mistake.
        Ok(Value::String(text)) if text.contains(['e', 'E']) => Err(format!(
            "given as a string must be a plain decimal (digits with an optional '-' and '.', \
             no exponent), not {text:?}"
        )),
        Ok(Value::String(text)) => parse_price(&text),
        _ => Err(format!("must be a decimal number, not {}", json_kind(raw))),
    }
}

/// Reads and checks a price from its text, which must be written as a JSON number is
/// (an optional `-`, digits without leading zeros, an optional fraction and exponent),
/// whether the order gives it as a number or as a string. Returns the reason otherwise.
pub fn parse_price(text: &str) -> Result<Decimal, String> {
    let parsed = if text.contains(['e', 'E']) {
        Decimal::from_scientific(text)
    } else {
        Decimal::from_str_exact(text)
    };
    let Ok(price) = parsed else {
        return Err(format!(
            "must be a decimal number from 0 to {} with at most {PRICE_SCALE} decimal places, not {text:?}",
            max_price()
        ));
    };
    // rust_decimal also reads forms such as `+1_000.5`, `007.5` or `.5`, which neither a
    // JSON number nor PostgreSQL's numeric accepts: a typo there must not pass as a price.
    if !is_json_number(text) {
        return Err(format!(
            "must be written as a JSON number (digits with an optional '-', '.' and exponent; \
             no '+', '_', spaces or leading zeros), not {text:?}"
        ));
    }
    check_price(price).map_or(Ok(price), Err)
}

fn is_json_number(text: &str) -> bool {
    text.starts_with(|c: char| c == '-' || c.is_ascii_digit())
        && serde_json::from_str::<&RawValue>(text).is_ok_and(|raw| raw.get().len() == text.len())
}

fn check_price(price: Decimal) -> Option<String> {
    if price.is_sign_negative() && !price.is_zero() {
        Some("must not be negative".to_owned())
    } else if price.normalize().scale() > PRICE_SCALE {
        Some(format!("must have at most {PRICE_SCALE} decimal places"))
    } else if price > max_price() {
        Some(format!("must be at most {}", max_price()))
    } else {
        None
    }
}

fn json_kind(raw: &RawValue) -> &'static str {
    match raw.get().trim_start().as_bytes().first() {
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

/// The members of a JSON object in their written order, duplicates kept.
struct Fields(Vec<(String, Box<RawValue>)>);

impl<'de> Deserialize<'de> for Fields {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldsVisitor;
        impl<'de> Visitor<'de> for FieldsVisitor {
            type Value = Fields;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields, A::Error> {
                let mut fields = Vec::new();
                while let Some(entry) = map.next_entry::<String, Box<RawValue>>()? {
                    fields.push(entry);
                }
                Ok(Fields(fields))
            }
        }
        deserializer.deserialize_map(FieldsVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw_values(json: &str) -> Result<Vec<Box<RawValue>>, serde_json::Error> {
        serde_json::from_str(json)
    }

    fn parse(json: &str) -> Result<Order, Vec<OrderError>> {
        let raw: Box<RawValue> = serde_json::from_str(json).unwrap();
        parse_order(0, &raw)
    }

    fn reasons(json: &str) -> Vec<(String, String)> {
        parse(json)
            .unwrap_err()
            .into_iter()
            .map(|e| (e.field, e.reason))
            .collect()
    }

    #[test]
    fn sample_order_parses_with_an_exact_price() {
        let order = parse(r#"{"orderid":1,"customer":"John Smith","price":100.32}"#).unwrap();
        assert_eq!(order.orderid, 1);
        assert_eq!(order.customer, "John Smith");
        assert_eq!(order.price, Decimal::new(10032, 2));
    }

    #[test]
    fn price_may_be_a_decimal_string() {
        let order = parse(r#"{"orderid":1,"customer":"A","price":"0.10"}"#).unwrap();
        assert_eq!(order.price, Decimal::new(10, 2));
    }

    #[test]
    fn a_price_string_is_refused_unless_it_is_written_as_a_json_number() {
        // Each of these rust_decimal reads as a number.
        for text in [
            "+1_000.5", "1_000", "+5", "007.5", ".5", "5.", "-.5", "1_0.0_1",
        ] {
            let json = format!(r#"{{"orderid":1,"customer":"A","price":{text:?}}}"#);
            let found = reasons(&json);
            assert_eq!(found.len(), 1, "{text:?} was accepted");
            assert_eq!(found[0].0, "price");
            assert!(
                found[0].1.contains("written as a JSON number"),
                "{text:?}: {}",
                found[0].1
            );
        }
        for text in [" 5", "5 ", "0x10"] {
            let json = format!(r#"{{"orderid":1,"customer":"A","price":{text:?}}}"#);
            assert!(
                reasons(&json)[0].1.starts_with("must be a decimal number"),
                "{text:?}"
            );
        }
        for text in ["1e2", "1E+2", "15e-1", "1e"] {
            let json = format!(r#"{{"orderid":1,"customer":"A","price":{text:?}}}"#);
            assert!(reasons(&json)[0].1.contains("plain decimal"), "{text:?}");
        }
        for text in ["5", "0.10", "-0", "9999999999.99"] {
            let json = format!(r#"{{"orderid":1,"customer":"A","price":{text:?}}}"#);
            assert!(parse(&json).is_ok(), "{text:?} was refused");
        }
    }

    #[test]
    fn price_that_a_float_would_round_is_kept_exactly() {
        let order = parse(r#"{"orderid":1,"customer":"A","price":9999999999.99}"#).unwrap();
        assert_eq!(order.price.to_string(), "9999999999.99");
    }

    #[test]
    fn serialised_price_keeps_its_digits() {
        let order = Order::new(0, 7, "Jane", Decimal::new(1030, 2)).unwrap();
        assert_eq!(
            serde_json::to_string(&order).unwrap(),
            r#"{"orderid":7,"customer":"Jane","price":10.30}"#
        );
    }

    #[test]
    fn every_problem_is_reported_with_its_field() {
        let found = reasons(r#"{"orderid":0,"customer":"","price":-1}"#);
        assert_eq!(
            found,
            vec![
                ("orderid".to_owned(), out_of_range_id("0")),
                ("customer".to_owned(), "must not be blank".to_owned()),
                ("price".to_owned(), "must not be negative".to_owned()),
            ]
        );
    }

    #[test]
    fn missing_fields_are_required() {
        let found = reasons(r#"{"customer":"A"}"#);
        assert!(found.contains(&("orderid".to_owned(), "is required".to_owned())));
        assert!(found.contains(&("price".to_owned(), "is required".to_owned())));
    }

    #[test]
    fn unknown_and_repeated_fields_are_rejected() {
        let found = reasons(r#"{"orderid":1,"orderid":2,"customer":"A","price":1,"note":"x"}"#);
        assert!(found.contains(&("orderid".to_owned(), "appears more than once".to_owned())));
        assert!(
            found
                .iter()
                .any(|(f, r)| f == "note" && r.starts_with("is not a known field"))
        );
    }

    #[test]
    fn an_order_with_thousands_of_unknown_fields_lists_ten_problems_and_counts_the_rest() {
        let junk: Vec<String> = (0..5000).map(|i| format!(r#""f{i}":0"#)).collect();
        let json = format!(
            r#"{{"orderid":1,"customer":"A","price":1,{}}}"#,
            junk.join(",")
        );
        let found = reasons(&json);
        assert_eq!(found.len(), MAX_PROBLEMS_PER_ORDER + 1);
        assert_eq!(found[MAX_PROBLEMS_PER_ORDER].1, "has 4990 more problems");
    }

    #[test]
    fn wrong_types_are_named() {
        let found = reasons(r#"{"orderid":"1","customer":5,"price":true}"#);
        assert_eq!(
            found,
            vec![
                (
                    "orderid".to_owned(),
                    "must be a whole number, not a string".to_owned()
                ),
                (
                    "customer".to_owned(),
                    "must be a string, not a number".to_owned()
                ),
                (
                    "price".to_owned(),
                    "must be a decimal number, not a boolean".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn fractional_and_huge_ids_are_rejected() {
        assert_eq!(
            reasons(r#"{"orderid":1.5,"customer":"A","price":1}"#)[0].1,
            "must be a whole number"
        );
        assert_eq!(
            reasons(r#"{"orderid":99999999999999999999,"customer":"A","price":1}"#)[0].1,
            out_of_range_id("99999999999999999999")
        );
    }

    #[test]
    fn price_with_three_decimal_places_is_rejected_not_rounded() {
        assert_eq!(
            reasons(r#"{"orderid":1,"customer":"A","price":1.005}"#)[0].1,
            "must have at most 2 decimal places"
        );
        // Trailing zeros are not extra precision.
        assert!(parse(r#"{"orderid":1,"customer":"A","price":1.500}"#).is_ok());
    }

    #[test]
    fn absurd_prices_are_rejected() {
        assert_eq!(
            reasons(r#"{"orderid":1,"customer":"A","price":1e12}"#)[0].1,
            format!("must be at most {}", max_price())
        );
        assert!(
            reasons(r#"{"orderid":1,"customer":"A","price":"NaN"}"#)[0]
                .1
                .starts_with("must be a decimal number")
        );
    }

    #[test]
    fn customer_with_control_characters_or_too_long_is_rejected() {
        assert_eq!(
            reasons(r#"{"orderid":1,"customer":"A\u0000B","price":1}"#)[0].1,
            "must not contain control characters"
        );
        let long = "x".repeat(MAX_CUSTOMER_CHARS + 1);
        let json = format!(r#"{{"orderid":1,"customer":"{long}","price":1}}"#);
        assert!(
            reasons(&json)[0]
                .1
                .starts_with("must be at most 200 characters")
        );
    }

    #[test]
    fn customer_of_multibyte_characters_is_measured_in_characters() {
        let name = "é".repeat(MAX_CUSTOMER_CHARS);
        let json = format!(r#"{{"orderid":1,"customer":"{name}","price":1}}"#);
        assert!(parse(&json).is_ok());
    }

    #[test]
    fn an_order_that_is_not_an_object_is_rejected_as_a_whole() {
        let found = parse("[1,2]").unwrap_err();
        assert_eq!(found[0].field, "");
        assert_eq!(found[0].reason, "must be a JSON object, not an array");
    }

    #[test]
    fn error_carries_the_orderid_when_it_could_be_read() {
        let found = parse(r#"{"orderid":42,"customer":"A","price":-3}"#).unwrap_err();
        assert_eq!(found[0].orderid, Some(42));
        assert_eq!(
            found[0].to_string(),
            "order at index 0 (orderid 42): price must not be negative"
        );
    }

    #[test]
    fn duplicate_ids_in_one_list_are_invalid() {
        let raws = raw_values(
            r#"[{"orderid":1,"customer":"A","price":1},
                {"orderid":2,"customer":"B","price":2},
                {"orderid":1,"customer":"A","price":1}]"#,
        )
        .unwrap();
        let errors = parse_orders(raws.iter().map(AsRef::as_ref)).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].index, 2);
        assert_eq!(errors[0].reason, "duplicates the order at index 0");
    }

    #[test]
    fn a_valid_list_keeps_its_order() {
        let raws = raw_values(
            r#"[{"orderid":3,"customer":"C","price":3},{"orderid":1,"customer":"A","price":1}]"#,
        )
        .unwrap();
        let ids: Vec<i64> = parse_orders(raws.iter().map(AsRef::as_ref))
            .unwrap()
            .iter()
            .map(|o| o.orderid)
            .collect();
        assert_eq!(ids, vec![3, 1]);
    }
}
