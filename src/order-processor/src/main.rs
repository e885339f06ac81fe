//! order-processor: takes orders through Dapr service invocation and stores them through
//! the Dapr PostgreSQL binding. See the crate documentation in `lib.rs`.

use clap::{Parser, Subcommand};
use order_processor::bootstrap::{self, BootstrapConfig};
use order_processor::{App, Config};

#[derive(Parser)]
#[command(version, about, after_help = common::config::help(&order_processor::settings()))]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Create the app's database and role and grant it what it needs, as the Microsoft Entra
    /// administrator (Azure's bootstrap job, before every deploy of order-processor).
    #[command(after_help = common::config::help(&bootstrap::settings()))]
    Bootstrap,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _telemetry = common::telemetry::init("order-processor")?;
    if let Some(Command::Bootstrap) = cli.command {
        return bootstrap::run(&BootstrapConfig::from_env()?)
            .await
            .map(drop);
    }
    let config = Config::from_env()?;
    let app = App::build(&config).await?;
    let listener = config.service.listen().await?;
    tracing::info!(address = %listener.local_addr()?, "order-processor listening");
    app.serve(listener, common::shutdown::signal()).await
}
