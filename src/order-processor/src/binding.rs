//! Writes through the Dapr PostgreSQL output binding, over the sidecar's gRPC API. The
//! whole request is one parameterised, set-based statement: the orders travel as one JSON
//! string parameter (daprd would turn numbers in `params` into floats) and are unpacked in
//! SQL, so prices stay exact and one round trip stores any number of orders.

use std::collections::HashMap;
use std::time::Duration;

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

/// Builds the binding's `params` metadata: a JSON array holding the orders' JSON as its
/// single string element.
pub fn params(orders_json: &str) -> String {
    serde_json::Value::from(vec![orders_json]).to_string()
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

/// Something that stores orders; the Dapr binding in production, a fake in unit tests.
pub trait OrderWriter: Clone + Send + Sync + 'static {
    /// Inserts the orders given as a JSON array, returning how many were new.
    fn insert(
        &self,
        orders_json: &str,
        traceparent: Option<&str>,
    ) -> impl Future<Output = Result<u64, BindingError>> + Send;
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
    async fn insert(
        &self,
        orders_json: &str,
        traceparent: Option<&str>,
    ) -> Result<u64, BindingError> {
        let metadata = HashMap::from([
            ("sql".to_owned(), INSERT_SQL.to_owned()),
            ("params".to_owned(), params(orders_json)),
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
    use super::*;

    #[test]
    fn params_carry_the_orders_as_one_string() {
        let orders = r#"[{"orderid":1,"customer":"A \"B\"","price":100.32}]"#;
        let params: Vec<String> = serde_json::from_str(&params(orders)).unwrap();
        assert_eq!(params, vec![orders.to_owned()]);
    }
}
