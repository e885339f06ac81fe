//! `bench`: runs the real stack and writes the benchmark report. See the library's
//! documentation and docs/benchmark.md; `scripts/bench.sh` is the way to run it.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let options = bench::Options::parse();
    let report = bench::run(options).await?;
    println!("{}", report.display());
    Ok(())
}
