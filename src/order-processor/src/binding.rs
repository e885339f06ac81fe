//! Writes through the Dapr PostgreSQL output binding, over the sidecar's gRPC API. The
//! whole request is one parameterised, set-based statement: the orders travel as three
//! string parameters, PostgreSQL array literals of their ids, customers and prices
//! ([`common::wire::Params`]; daprd would turn numbers in `params` into floats), unpacked
//! in SQL with `unnest`, so prices stay exact and one round trip stores any number of
//! orders.

use std::collections::HashMap;
use std::time::Duration;

pub use common::wire::Params;
use dapr::dapr::proto::runtime::v1::InvokeBindingRequest;
use dapr::dapr::proto::runtime::v1::dapr_client::DaprClient;
use secrecy::{ExposeSecret, SecretString};
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};

/// Inserts the orders of three arrays, skipping ids that already exist. In id order, so
/// two requests with overlapping ids cannot deadlock; rows-affected counts the new rows.
/// The table is named with its schema: the binding's connection sets no `search_path`.
/// `unnest` of typed arrays costs the server about a quarter less than unpacking the same
/// orders from JSON (docs/benchmark.md).
pub const INSERT_SQL: &str = "\
INSERT INTO app.orders (orderid, customer, price) \
SELECT orderid, customer, price \
FROM unnest($1::text::bigint[], $2::text::text[], $3::text::numeric[]) AS input(orderid, customer, price) \
ORDER BY orderid \
ON CONFLICT (orderid) DO NOTHING";

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

    /// The SQLSTATE the database answered the statement with, when the sidecar's message
    /// carries one: the PostgreSQL driver writes it as `(SQLSTATE 42P01)`.
    pub fn sqlstate(&self) -> Option<&str> {
        let Self::Call(status) = self else {
            return None;
        };
        let message = status.message();
        let at = message.rfind("(SQLSTATE ")? + "(SQLSTATE ".len();
        let code = message.get(at..at + 5)?;
        let well_formed = code
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
            && message[at + 5..].starts_with(')');
        well_formed.then_some(code)
    }
}

/// Something that stores orders; the Dapr binding in production, a fake in unit tests.
pub trait OrderWriter: Clone + Send + Sync + 'static {
    /// Runs [`INSERT_SQL`] with `params`, returning how many orders were new.
    fn insert(
        &self,
        params: Params,
        trace: &[(&'static str, String)],
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
        params: Params,
        trace: &[(&'static str, String)],
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
        for (name, value) in trace {
            if let Ok(value) = MetadataValue::try_from(value.as_str()) {
                request.metadata_mut().insert(*name, value);
            }
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
    fn the_sqlstate_is_read_from_the_sidecars_message() {
        let status = |message: &str| BindingError::Call(tonic::Status::internal(message));
        let refused = status(
            "error invoking output binding sqldb: error executing query: ERROR: relation \
             \"app.orders\" does not exist (SQLSTATE 42P01)",
        );
        assert_eq!(refused.sqlstate(), Some("42P01"));
        for message in [
            "error invoking output binding sqldb: failed to connect: connection refused",
            "(SQLSTATE 42P0",
            "(SQLSTATE 42p01)",
            "(SQLSTATE 42P01",
        ] {
            assert_eq!(status(message).sqlstate(), None, "{message}");
        }
        assert_eq!(BindingError::BadResponse(None).sqlstate(), None);
    }
}
