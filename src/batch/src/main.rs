//! batch: on every Dapr cron tick, sends the orders of its data file to order-processor.
//! See the crate documentation in `lib.rs`.

use batch::{App, Config};
use clap::Parser;

/// Sends the orders of a data file to order-processor through Dapr, on every tick of the
/// cron binding and on `POST /runs`.
#[derive(Parser)]
#[command(version, after_help = common::config::help(&batch::config::settings()))]
struct Cli {}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    Cli::parse();
    let _telemetry = common::telemetry::init("batch")?;
    let config = Config::from_env()?;
    let app = App::build(&config)?;
    let listener = config.service.listen().await?;
    let (address, orders) = (listener.local_addr()?, config.source.path().display());
    tracing::info!(%address, %orders, "batch listening");
    app.serve(listener, common::shutdown::signal()).await
}
