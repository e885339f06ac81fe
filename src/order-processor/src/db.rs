//! The database side that does not go through Dapr: the connection pool, the schema
//! (sqlx migrations, applied at start-up under sqlx's advisory lock, so replicas that start
//! together apply them once; they create the schema `app` themselves, see `sqlx.toml`)
//! and the typed, compile-time-checked reads.

use std::time::Duration;

use anyhow::Context;
use backon::{ExponentialBuilder, Retryable};
use common::order::Order;
use rust_decimal::Decimal;
use secrecy::ExposeSecret;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use crate::config::{Config, Database};
use crate::entra::EntraSignIn;

/// How the service names itself to PostgreSQL (`pg_stat_activity.application_name`).
const APPLICATION: &str = "order-processor";

/// The schema, embedded from `migrations/`; `sqlx.toml` makes it create the schema [`SCHEMA`].
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// The schema the app owns and keeps its tables in.
pub const SCHEMA: &str = "app";

/// A pool that connects on demand, with explicit limits and timeouts. With Microsoft
/// Entra ID, the first token is fetched here and kept fresh for the life of the process.
pub async fn pool(config: &Config) -> anyhow::Result<PgPool> {
    match &config.database {
        Database::Url(url) => {
            let options: PgConnectOptions = url
                .expose_secret()
                .parse()
                .context("DATABASE_URL is not a valid PostgreSQL URL")?;
            let options = in_app_schema(options.application_name(APPLICATION));
            Ok(pool_options(config).connect_lazy_with(options))
        }
        Database::Entra(database) => {
            let sign_in = EntraSignIn::new(database, APPLICATION)?.adjust(in_app_schema);
            let (options, expires_on) = sign_in.connect_options(&database.name).await?;
            let pool = pool_options(config).connect_lazy_with(options);
            sign_in.keep_fresh(pool.clone(), database.name.clone(), expires_on);
            Ok(pool)
        }
    }
}

/// `options` with the app's schema as the `search_path`, so that queries and migrations
/// name tables without it. Set per connection: the app's role may not set it for itself
/// (`ALTER ROLE … SET` needs rights over the role that Azure's administrator lacks).
pub fn in_app_schema(options: PgConnectOptions) -> PgConnectOptions {
    options.options([("search_path", SCHEMA)])
}

/// The pool's limits and timeouts.
fn pool_options(config: &Config) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(config.db_max_connections)
        .min_connections(0)
        .acquire_timeout(config.db_acquire_timeout)
        .idle_timeout(Duration::from_secs(300))
        .max_lifetime(Duration::from_secs(1800))
}

/// Applies the migrations, retrying with back-off while the database cannot be reached
/// (it may start after the app) for at most `patience`.
pub async fn migrate(pool: &PgPool, patience: Duration) -> anyhow::Result<()> {
    let attempt = || async { MIGRATOR.run(pool).await };
    attempt
        .retry(
            ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(200))
                .with_max_delay(Duration::from_secs(5))
                .with_total_delay(Some(patience))
                .without_max_times()
                .with_jitter(),
        )
        .when(|error| match error {
            sqlx::migrate::MigrateError::Execute(error) => is_not_yet_available(error),
            _ => false,
        })
        .notify(|error, delay| {
            tracing::warn!(%error, retry_in_ms = delay.as_millis(), "database not reachable yet");
        })
        .await
        .context("cannot apply the database migrations")
}

/// Whether `error` may go away by itself: the server is not up yet, or (in Azure, before
/// the bootstrap job has run) the app's role or its database does not exist yet.
pub fn is_not_yet_available(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(error) => error.code().is_some_and(|code| {
            // 28xxx: authentication; 3D000: no such database; 57P03: cannot connect now.
            code.starts_with("28") || code == "3D000" || code == "57P03"
        }),
        _ => false,
    }
}

/// Checks that the database answers.
pub async fn ping(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query_scalar!("SELECT 1 AS \"one!\"")
        .fetch_one(pool)
        .await
        .map(|_| ())
}

/// One order by id.
pub async fn get_order(pool: &PgPool, orderid: i64) -> Result<Option<Order>, sqlx::Error> {
    let row = sqlx::query!(
        "SELECT orderid, customer, price FROM orders WHERE orderid = $1",
        orderid
    )
    .fetch_optional(pool)
    .await?;
    row.map(|r| stored(r.orderid, r.customer, r.price))
        .transpose()
}

/// Up to `limit` orders with ids greater than `after`, in id order (keyset pagination).
pub async fn list_orders(pool: &PgPool, after: i64, limit: i64) -> Result<Vec<Order>, sqlx::Error> {
    let rows = sqlx::query!(
        "SELECT orderid, customer, price FROM orders WHERE orderid > $1 ORDER BY orderid LIMIT $2",
        after,
        limit
    )
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|r| stored(r.orderid, r.customer, r.price))
        .collect()
}

/// The ids among `orders_json` (a JSON array of orders) that are stored with a different
/// customer or price: conflicts, which are reported and never overwritten.
pub async fn conflicting_ids(pool: &PgPool, orders_json: &str) -> Result<Vec<i64>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT o.orderid AS "orderid!"
           FROM jsonb_to_recordset($1::text::jsonb) AS input(orderid bigint, customer text, price numeric)
           JOIN orders o ON o.orderid = input.orderid
           WHERE o.customer <> input.customer OR o.price <> input.price
           ORDER BY o.orderid"#,
        orders_json
    )
    .fetch_all(pool)
    .await
}

/// A stored row is valid (the table's checks repeat the validation), so it becomes an
/// `Order` through the same constructor as any other; a row that is not is a decode error.
fn stored(orderid: i64, customer: String, price: Decimal) -> Result<Order, sqlx::Error> {
    Order::new(0, orderid, customer, price).map_err(|errors| {
        let reasons: Vec<String> = errors.iter().map(ToString::to_string).collect();
        sqlx::Error::Decode(
            format!("stored order {orderid} is invalid: {}", reasons.join("; ")).into(),
        )
    })
}
