//! order-processor: takes orders through Dapr service invocation and stores them through
//! the Dapr PostgreSQL binding. See the crate documentation in `lib.rs`.

use anyhow::Context;
use order_processor::{App, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    common::telemetry::init();
    let config = Config::from_env()?;
    let app = App::build(&config).await?;
    let listener = tokio::net::TcpListener::bind((config.host, config.port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", config.host, config.port))?;
    tracing::info!(address = %listener.local_addr()?, "order-processor listening");
    app.serve(listener, common::shutdown::signal()).await
}
