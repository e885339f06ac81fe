//! order-processor takes orders through Dapr service invocation (`POST /orders`, one order
//! or an array), validates all of them, and stores them through the Dapr PostgreSQL output
//! binding in one idempotent statement per request: a request with any invalid order
//! stores nothing, an order id that is already stored is never written twice, and one
//! stored with different content is reported as a conflict, never overwritten. It owns the
//! schema (sqlx migrations) and serves the stored orders with sqlx.

pub mod binding;
mod config;
pub mod db;
mod error;
mod routes;

use std::time::Duration;

use anyhow::Context;
use common::dapr::Sidecar;
use sqlx::PgPool;

pub use binding::{DaprBinding, OrderWriter};
pub use common::order::WriteOutcome;
pub use config::{Config, MAX_BODY_BYTES};
pub use error::ApiError;
pub use routes::router;

/// What the request handlers share.
#[derive(Clone, Debug)]
pub struct AppState<W> {
    /// Reads, migrations and the readiness check.
    pub pool: PgPool,
    /// The app's own sidecar, for the readiness check.
    pub sidecar: Sidecar,
    /// Where orders are written: the Dapr binding.
    pub writer: W,
    /// The most orders one request may carry.
    pub max_orders_per_request: usize,
}

/// The service, ready to serve: database migrated, clients built.
pub struct App {
    router: axum::Router,
}

impl App {
    /// Connects the pool, applies the migrations and builds the HTTP routes.
    pub async fn build(config: &Config) -> anyhow::Result<Self> {
        let pool = db::pool(config)?;
        db::migrate(&pool, config.db_startup_timeout).await?;
        let sidecar = Sidecar::new(
            config.dapr_http_port,
            config.dapr_api_token.clone(),
            Duration::from_secs(10),
        )
        .context("cannot build the HTTP client for the Dapr sidecar")?;
        let writer = DaprBinding::new(
            config.dapr_grpc_port,
            config.binding_name.clone(),
            config.dapr_api_token.clone(),
            Duration::from_secs(30),
        )
        .context("cannot build the gRPC client for the Dapr sidecar")?;
        let state = AppState {
            pool,
            sidecar,
            writer,
            max_orders_per_request: config.max_orders_per_request,
        };
        Ok(Self {
            router: router(state),
        })
    }

    /// Serves on `listener` until `shutdown` completes, then finishes the requests in
    /// flight within [`common::shutdown::GRACE_PERIOD`].
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        common::shutdown::serve(
            listener,
            self.router,
            shutdown,
            common::shutdown::GRACE_PERIOD,
        )
        .await
        .context("server failed")?;
        tracing::info!("order-processor stopped");
        Ok(())
    }
}
