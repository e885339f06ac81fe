//! order-processor takes orders through Dapr service invocation (`POST /orders`, one order
//! or an array), validates all of them, and stores them through the Dapr PostgreSQL output
//! binding in one idempotent statement per request: a request with any invalid order
//! stores nothing, an order id that is already stored is never written twice, and one
//! stored with different content is reported as a conflict, never overwritten. It owns the
//! schema (sqlx migrations) and serves the stored orders with sqlx.

pub mod binding;
pub mod binding_watch;
mod body;
pub mod bootstrap;
mod config;
pub mod db;
mod entra;
mod error;
mod routes;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use common::dapr::{AppApiToken, Sidecar};
use sqlx::PgPool;

pub use binding::{DaprBinding, OrderWriter};
use binding_watch::{AppDatabase, BindingWatch};
pub use common::dapr::MAX_BODY_BYTES;
pub use common::order::WriteOutcome;
pub use config::{Config, Database, EntraDatabase, settings};
pub use error::ApiError;
pub use routes::router;

/// What the request handlers share.
#[derive(Clone, Debug)]
pub struct AppState<W> {
    /// Reads, migrations and the readiness check.
    pub pool: PgPool,
    /// The app's own sidecar, for the readiness check.
    pub sidecar: Sidecar,
    /// The name of the PostgreSQL binding, which the sidecar must have loaded to be ready.
    pub binding_name: String,
    /// Where orders are written: the Dapr binding.
    pub writer: W,
    /// The most orders one request may carry.
    pub max_orders_per_request: usize,
    /// Set once the migrations have been applied.
    pub schema_ready: Arc<AtomicBool>,
    /// What the API routes require from the caller (the sidecar).
    pub app_api_token: AppApiToken,
}

/// The service, ready to serve: clients built, migrations still to run.
pub struct App {
    router: axum::Router,
    pool: PgPool,
    schema_ready: Arc<AtomicBool>,
    db_startup_timeout: Duration,
    watch: BindingWatch<Sidecar, AppDatabase>,
}

impl App {
    /// Builds the pool and the clients and the HTTP routes. Nothing is connected yet,
    /// except that with Microsoft Entra ID the first token is fetched.
    pub async fn build(config: &Config) -> anyhow::Result<Self> {
        let pool = db::pool(config).await?;
        let sidecar = (config.service)
            .sidecar(Duration::from_secs(10))
            .context("cannot build the HTTP client for the Dapr sidecar")?;
        let writer = DaprBinding::new(
            config.dapr_grpc_port,
            config.binding_name.clone(),
            config.service.dapr_api_token.clone(),
            config.binding_timeout,
        )
        .context("cannot build the gRPC client for the Dapr sidecar")?;
        let schema_ready = Arc::new(AtomicBool::new(false));
        let watch = BindingWatch::new(
            sidecar.clone(),
            config.binding_name.clone(),
            AppDatabase {
                pool: pool.clone(),
                schema_ready: Arc::clone(&schema_ready),
            },
        );
        let state = AppState {
            pool: pool.clone(),
            sidecar,
            binding_name: config.binding_name.clone(),
            writer,
            max_orders_per_request: config.max_orders_per_request,
            schema_ready: Arc::clone(&schema_ready),
            app_api_token: AppApiToken::new(config.service.app_api_token.clone()),
        };
        Ok(Self {
            router: router(state),
            pool,
            schema_ready,
            db_startup_timeout: config.db_startup_timeout,
            watch,
        })
    }

    /// Serves on `listener` at once and applies the migrations meanwhile (`/readyz` says
    /// when they are done; the service exits if they cannot be applied within
    /// `DB_STARTUP_TIMEOUT_SECS`), then watches that the sidecar has the binding
    /// ([`binding_watch`]). After `shutdown` completes, the requests in flight finish within
    /// [`common::shutdown::GRACE_PERIOD`].
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        // Aborted when serving ends.
        let watch = AbortOnDrop(tokio::spawn(self.watch.run()));
        let (pool, ready, patience) = (self.pool, self.schema_ready, self.db_startup_timeout);
        let migrations = tokio::spawn(async move {
            db::migrate(&pool, patience).await?;
            ready.store(true, Ordering::Release);
            tracing::info!("database schema is up to date");
            anyhow::Ok(())
        });
        let server = common::shutdown::serve(
            listener,
            self.router,
            shutdown,
            common::shutdown::GRACE_PERIOD,
        );
        let failed_migrations = async {
            match migrations.await {
                Ok(Ok(())) => std::future::pending().await,
                Ok(Err(error)) => error,
                Err(error) => anyhow::Error::new(error).context("the migrations task failed"),
            }
        };
        tokio::select! {
            result = server => result.context("server failed")?,
            error = failed_migrations => return Err(error),
        }
        drop(watch);
        tracing::info!("order-processor stopped");
        Ok(())
    }
}

/// A task that is aborted when this is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
