//! Writes through the Dapr PostgreSQL output binding, over the sidecar's gRPC API. The
//! whole request is one parameterised, set-based statement: the orders travel as one JSON
//! string parameter (daprd would turn numbers in `params` into floats) and are unpacked in
//! SQL, so prices stay exact and one round trip stores any number of orders. The `params`
//! text is written in one pass from the validated orders, already escaped as the string
//! inside its JSON array, so no order is serialised twice.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

use common::order::Order;
use dapr::dapr::proto::runtime::v1::InvokeBindingRequest;
use dapr::dapr::proto::runtime::v1::dapr_client::DaprClient;
use secrecy::{ExposeSecret, SecretString};
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};

/// Inserts the orders of a JSON array, skipping ids that already exist. In id order, so
/// two requests with overlapping ids cannot deadlock; rows-affected counts the new rows.
/// The table is named with its schema: the binding's connection sets no `search_path`.
pub const INSERT_SQL: &str = "\
INSERT INTO app.orders (orderid, customer, price) \
SELECT orderid, customer, price \
FROM jsonb_to_recordset($1::text::jsonb) AS input(orderid bigint, customer text, price numeric) \
ORDER BY orderid \
ON CONFLICT (orderid) DO NOTHING";

/// The binding's `params` metadata: a JSON array whose single element is a string holding
/// the orders as a JSON array, `["[{\"orderid\":1,…}]"]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Params(String);

impl Params {
    /// The params for `orders`, written in one pass. The orders' JSON inside is what
    /// [`orders_json`] gives and what serde gives for them: prices with their exact digits.
    pub fn from_orders(orders: &[Order]) -> Self {
        let mut out = String::with_capacity(4 + capacity(orders));
        out.push_str("[\"");
        write_orders(&mut out, orders, Nesting::InString);
        out.push_str("\"]");
        Self(out)
    }

    /// The params for orders already written as a JSON array.
    pub fn from_json(orders_json: &str) -> Self {
        let mut out = String::with_capacity(4 + orders_json.len() + orders_json.len() / 8);
        out.push_str("[\"");
        push_escaped(&mut out, orders_json);
        out.push_str("\"]");
        Self(out)
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

/// The orders as a JSON array, as serde writes them (see [`Order`]'s `Serialize`), for the
/// conflict query.
pub fn orders_json(orders: &[Order]) -> String {
    let mut out = String::with_capacity(capacity(orders));
    write_orders(&mut out, orders, Nesting::Plain);
    out
}

/// Room for `orders` as JSON: the customer and 64 bytes for the rest, enough for the field
/// names, their escapes and usual ids and prices. Grown once for orders that need more.
fn capacity(orders: &[Order]) -> usize {
    2 + orders
        .iter()
        .map(|order| 64 + order.customer().len())
        .sum::<usize>()
}

/// Where the orders' JSON is written: as it is, or as the contents of a JSON string.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Nesting {
    Plain,
    InString,
}

impl Nesting {
    /// The text of an order up to its id, from its id to its customer, and from its
    /// customer to its price.
    fn pieces(self) -> [&'static str; 3] {
        match self {
            Self::Plain => [r#"{"orderid":"#, r#","customer":""#, r#"","price":"#],
            Self::InString => [
                r#"{\"orderid\":"#,
                r#",\"customer\":\""#,
                r#"\",\"price\":"#,
            ],
        }
    }
}

/// Writes `orders` as a compact JSON array, field by field in the order serde writes them;
/// inside a JSON string every quote and backslash of that JSON is escaped once more.
fn write_orders(out: &mut String, orders: &[Order], nesting: Nesting) {
    let [open, to_customer, to_price] = nesting.pieces();
    let mut scratch = String::new();
    out.push('[');
    for (index, order) in orders.iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        out.push_str(open);
        // Writing to a String cannot fail.
        let _ = write!(out, "{}", order.orderid());
        out.push_str(to_customer);
        let customer = order.customer();
        if nesting == Nesting::InString && customer.bytes().any(needs_escape) {
            scratch.clear();
            push_escaped(&mut scratch, customer);
            push_escaped(out, &scratch);
        } else {
            push_escaped(out, customer);
        }
        out.push_str(to_price);
        let _ = write!(out, "{}", order.price());
        out.push('}');
    }
    out.push(']');
}

fn needs_escape(byte: u8) -> bool {
    byte == b'"' || byte == b'\\' || byte < 0x20
}

/// Appends `text` escaped as the contents of a JSON string, exactly as serde_json escapes
/// it: quote, backslash and the control characters below U+0020; everything else as it is.
fn push_escaped(out: &mut String, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut start = 0;
    for (at, byte) in text.bytes().enumerate() {
        if !needs_escape(byte) {
            continue;
        }
        // Every escaped byte is ASCII, so `at` is a character boundary.
        out.push_str(&text[start..at]);
        match byte {
            b'"' => out.push_str(r#"\""#),
            b'\\' => out.push_str(r"\\"),
            b'\n' => out.push_str(r"\n"),
            b'\r' => out.push_str(r"\r"),
            b'\t' => out.push_str(r"\t"),
            0x08 => out.push_str(r"\b"),
            0x0c => out.push_str(r"\f"),
            _ => {
                out.push_str(r"\u00");
                out.push(char::from(HEX[usize::from(byte >> 4)]));
                out.push(char::from(HEX[usize::from(byte & 0xf)]));
            }
        }
        start = at + 1;
    }
    out.push_str(&text[start..]);
}

/// Why a write through the binding failed.
#[derive(Debug, thiserror::Error)]
pub enum BindingError {
    /// The sidecar or the binding refused or failed the call.
    #[error("binding call failed: {0}")]
    Call(#[from] tonic::Status),
    /// The sidecar answered without a usable `rows-affected`.
    #[error("binding answered without a valid rows-affected: {0:?}")]
    BadResponse(Option<String>),
}

impl BindingError {
    /// The gRPC status code of a call the sidecar refused or failed.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            Self::Call(status) => Some(status.code()),
            Self::BadResponse(_) => None,
        }
    }
}

/// Something that stores orders; the Dapr binding in production, a fake in unit tests.
pub trait OrderWriter: Clone + Send + Sync + 'static {
    /// Runs [`INSERT_SQL`] with `params`, returning how many orders were new.
    fn insert_params(
        &self,
        params: Params,
        traceparent: Option<&str>,
    ) -> impl Future<Output = Result<u64, BindingError>> + Send;

    /// Inserts the orders given as a JSON array, returning how many were new.
    fn insert(
        &self,
        orders_json: &str,
        traceparent: Option<&str>,
    ) -> impl Future<Output = Result<u64, BindingError>> + Send {
        self.insert_params(Params::from_json(orders_json), traceparent)
    }
}

/// The PostgreSQL output binding behind the app's own sidecar.
#[derive(Clone, Debug)]
pub struct DaprBinding {
    client: DaprClient<Channel>,
    name: String,
    api_token: Option<SecretString>,
}

impl DaprBinding {
    /// A client for binding `name` through the sidecar's gRPC port. Connects on first use,
    /// so the app may start before its sidecar.
    pub fn new(
        grpc_port: u16,
        name: impl Into<String>,
        api_token: Option<SecretString>,
        timeout: Duration,
    ) -> Result<Self, tonic::transport::Error> {
        let channel = Endpoint::from_shared(format!("http://127.0.0.1:{grpc_port}"))?
            .connect_timeout(Duration::from_secs(2))
            .timeout(timeout)
            .connect_lazy();
        Ok(Self {
            client: DaprClient::new(channel),
            name: name.into(),
            api_token,
        })
    }
}

impl OrderWriter for DaprBinding {
    async fn insert_params(
        &self,
        params: Params,
        traceparent: Option<&str>,
    ) -> Result<u64, BindingError> {
        let metadata = HashMap::from([
            ("sql".to_owned(), INSERT_SQL.to_owned()),
            ("params".to_owned(), params.into_string()),
        ]);
        let mut request = tonic::Request::new(InvokeBindingRequest {
            name: self.name.clone(),
            data: Vec::new(),
            metadata,
            operation: "exec".to_owned(),
        });
        if let Some(token) = &self.api_token
            && let Ok(value) = MetadataValue::try_from(token.expose_secret())
        {
            request
                .metadata_mut()
                .insert(common::dapr::API_TOKEN_HEADER, value);
        }
        if let Some(value) = traceparent.and_then(|t| MetadataValue::try_from(t).ok()) {
            request.metadata_mut().insert("traceparent", value);
        }
        let response = self
            .client
            .clone()
            .invoke_binding(request)
            .await?
            .into_inner();
        let rows = response.metadata.get("rows-affected").cloned();
        rows.as_deref()
            .and_then(|r| r.parse().ok())
            .ok_or(BindingError::BadResponse(rows))
    }
}

#[cfg(test)]
mod tests {
    use rust_decimal::Decimal;

    use super::*;

    fn order(orderid: i64, customer: &str, cents: i64) -> Order {
        Order::new(0, orderid, customer, Decimal::new(cents, 2)).unwrap()
    }

    /// Customers that test the escaping: quotes, backslashes, what looks like escapes,
    /// non-ASCII letters, characters JSON may leave unescaped.
    fn tricky_orders() -> Vec<Order> {
        [
            "John Smith",
            "Jane O'Brien",
            r#"A "quoted" name"#,
            r"back\slash",
            r#"\"already escaped\""#,
            r"\u0041 is not A",
            "Zoë Nguyễn 😀",
            "line\u{2028}separator",
            r#"""#,
            r"\",
        ]
        .iter()
        .enumerate()
        .map(|(i, customer)| order(i as i64 + 1, customer, 1030 * i as i64))
        .collect()
    }

    #[test]
    fn params_carry_the_orders_as_one_string() {
        let orders = r#"[{"orderid":1,"customer":"A \"B\"","price":100.32}]"#;
        let params: Vec<String> = serde_json::from_str(Params::from_json(orders).as_str()).unwrap();
        assert_eq!(params, vec![orders.to_owned()]);
    }

    #[test]
    fn params_written_from_orders_are_what_serialising_them_twice_gave() {
        let orders = tricky_orders();
        let serialised = serde_json::to_string(&orders).unwrap();
        let twice = serde_json::Value::from(vec![serialised.as_str()]).to_string();
        assert_eq!(Params::from_orders(&orders).as_str(), twice);
        assert_eq!(Params::from_json(&serialised).as_str(), twice);
    }

    #[test]
    fn orders_json_is_what_serde_writes() {
        let orders = tricky_orders();
        assert_eq!(
            orders_json(&orders),
            serde_json::to_string(&orders).unwrap()
        );
        assert_eq!(orders_json(&[]), "[]");
        assert_eq!(Params::from_orders(&[]).as_str(), r#"["[]"]"#);
    }

    #[test]
    fn the_params_string_decodes_to_the_orders_with_their_exact_prices() {
        let orders = vec![
            order(1, "A", 1030),
            order(2, "B", 999_999_999_999),
            order(3, "C", 0),
        ];
        let [inner]: [String; 1] =
            serde_json::from_str(Params::from_orders(&orders).as_str()).unwrap();
        assert_eq!(
            inner,
            r#"[{"orderid":1,"customer":"A","price":10.30},{"orderid":2,"customer":"B","price":9999999999.99},{"orderid":3,"customer":"C","price":0.00}]"#
        );
    }

    #[test]
    fn every_character_is_escaped_as_serde_json_escapes_it() {
        let text: String = (0u8..=0x7f)
            .map(char::from)
            .chain(['é', '\u{7ff}', '😀'])
            .collect();
        let mut escaped = String::new();
        push_escaped(&mut escaped, &text);
        assert_eq!(
            format!("\"{escaped}\""),
            serde_json::to_string(&text).unwrap()
        );
    }
}
