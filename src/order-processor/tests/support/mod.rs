//! What order-processor's integration tests share: the app spawned on a free port with
//! a fresh database, the Dapr binding replaced by a writer that runs the binding's very
//! statement through sqlx as the same ordinary role.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::time::Duration;

use common::dapr::{AppApiToken, Sidecar};
use order_processor::binding::{BindingError, INSERT_SQL, OrderWriter, Params};
use order_processor::{AppState, WriteOutcome, db, router};
use reqwest::StatusCode;
use serde_json::Value;
use sqlx::PgPool;
use testkit::pg::TestDb;

/// Runs the binding's statement directly, as daprd would: `params` decoded as a JSON array
/// of strings, which become the statement's parameters; a database error is reported as
/// daprd's PostgreSQL driver words it, ending with `(SQLSTATE …)`.
#[derive(Clone)]
pub struct SqlWriter(PgPool);

impl OrderWriter for SqlWriter {
    async fn insert(
        &self,
        params: Params,
        _: &[(&'static str, String)],
    ) -> Result<u64, BindingError> {
        let failed = |message: String| BindingError::Call(tonic::Status::internal(message));
        let values: Vec<String> =
            serde_json::from_str(params.as_str()).map_err(|e| failed(e.to_string()))?;
        let mut query = sqlx::query(INSERT_SQL);
        for value in values {
            query = query.bind(value);
        }
        let result = query.execute(&self.0).await.map_err(|e| match &e {
            sqlx::Error::Database(db) => failed(format!(
                "ERROR: {} (SQLSTATE {})",
                db.message(),
                db.code().unwrap_or_default()
            )),
            _ => failed(e.to_string()),
        })?;
        Ok(result.rows_affected())
    }
}

/// A binding whose sidecar fails with this gRPC status code and an error that mentions
/// secrets.
#[derive(Clone)]
pub struct FailingWriter(pub tonic::Code);

/// What [`FailingWriter`]'s sidecar says; no answer may repeat it.
pub const SECRET_CAUSE: &str = "dial tcp 10.1.2.3:5432: password authentication failed for hunter2";

impl OrderWriter for FailingWriter {
    async fn insert(&self, _: Params, _: &[(&'static str, String)]) -> Result<u64, BindingError> {
        Err(BindingError::Call(tonic::Status::new(self.0, SECRET_CAUSE)))
    }
}

pub struct TestApp {
    pub url: String,
    pub pool: PgPool,
    pub http: reqwest::Client,
    _db: TestDb,
}

impl TestApp {
    pub async fn post(&self, body: impl Into<reqwest::Body>) -> (StatusCode, Value) {
        let response = self
            .http
            .post(format!("{}/orders", self.url))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap())
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.json().await.unwrap())
    }

    pub async fn stored(&self) -> Vec<(i64, String, String)> {
        sqlx::query_as("SELECT orderid, customer, price::text FROM orders ORDER BY orderid")
            .fetch_all(&self.pool)
            .await
            .unwrap()
    }
}

pub async fn spawn_with<W: OrderWriter>(make_writer: impl FnOnce(PgPool) -> W) -> TestApp {
    let db = TestDb::create().await;
    let pool = db.app_pool().await;
    db::migrate(&pool, Duration::ZERO).await.unwrap();
    // No sidecar in these tests: its port is closed.
    let sidecar = Sidecar::new(closed_port(), None, Duration::from_secs(1)).unwrap();
    let state = AppState {
        pool: pool.clone(),
        sidecar,
        binding_name: "sqldb".to_owned(),
        writer: make_writer(pool.clone()),
        max_orders_per_request: 100,
        schema_ready: std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true)),
        app_api_token: AppApiToken::new(None),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(common::shutdown::serve(
        listener,
        router(state),
        std::future::pending(),
        Duration::from_secs(1),
    ));
    TestApp {
        url,
        pool,
        http: reqwest::Client::new(),
        _db: db,
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_with(SqlWriter).await
}

pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

pub fn outcome(body: Value) -> WriteOutcome {
    serde_json::from_value(body).unwrap()
}
