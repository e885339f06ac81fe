//! The benchmark: how fast and how small the system is, measured against the limits of
//! this machine in the same run. It starts the real stack (release builds of both
//! services, real daprd sidecars, PostgreSQL) with `testkit`, measures
//!
//! 1. end-to-end throughput of generated orders files, trigger to last row committed;
//! 2. beside it, the database's floor: the same rows by `COPY` and by one multi-row INSERT;
//! 3. the latency the two sidecars add to `POST /orders`;
//! 4. memory, binary sizes and start-up time of both services;
//! 5. end-to-end throughput per chunk size;
//! 6. a load test: single-order requests through both sidecars at the highest rate found,
//!    held for a minute, with failures and lost orders counted;
//! 7. what exporting traces costs: throughput, memory and start-up with export off and on
//!    (to a real Jaeger);
//!
//! and where the end-to-end time goes (the same orders through fewer and fewer layers,
//! CPU per process), then writes `report.md` and `report.json`. Every figure is the median
//! of several runs with its range; nothing here asserts a time.
//! `scripts/bench.sh` provides PostgreSQL, daprd and Jaeger and runs it; see
//! docs/benchmark.md.

pub mod environment;
pub mod export;
pub mod measure;
pub mod orders;
pub mod procfs;
pub mod report;
pub mod stats;
pub mod targets;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use clap::Parser;
use common::config::Vars;
use testkit::stack::{Stack, StackOptions};

use crate::environment::Environment;
use crate::measure::{Bench, CpuSample, Layer, OTHERS, Route, RunSample, SERVICES, SIDECARS};
use crate::report::{
    Breakdown, ChunkResult, ChunkSweep, CpuUse, Footprint, Gap, GapResult, Level, Memory, Overhead,
    PathLatency, Report, ServiceFootprint, Settings, SizeResult, Step,
};
use crate::stats::{Percentiles, Spread};

/// The command line.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "bench",
    about = "Runs the real stack and writes a benchmark report (Markdown and JSON).",
    long_about = "Runs the real stack (release builds, real daprd sidecars, PostgreSQL) and \
                  writes target/bench/report.md and report.json, plus timestamped copies. \
                  Needs TEST_DATABASE_URL (a PostgreSQL superuser URL on this machine) and \
                  DAPRD (a daprd binary); scripts/bench.sh provides both."
)]
pub struct Options {
    /// A smoke run of a minute or two: small files, two runs each. Not for comparison.
    #[arg(long)]
    pub quick: bool,
    /// Runs per figure (default 5, or 2 with --quick).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=50))]
    pub runs: Option<u16>,
    /// Seed of the orders generator; every file's seed is derived from it.
    #[arg(long, default_value_t = 20_260_101)]
    pub seed: u64,
    /// Directory for the report (default: target/bench in the workspace).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Seconds of the sustained load test (default 60, or 10 with --quick).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub load_seconds: Option<u64>,
    /// Most orders the sustained load test may send (a bound besides the time).
    #[arg(long, default_value_t = 2_000_000)]
    pub load_max_orders: usize,
}

/// What a run measures, from the options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// `full` or `quick`.
    pub mode: &'static str,
    /// Runs per figure.
    pub runs: usize,
    /// Order counts of the end-to-end files (the largest also gets the breakdown and the
    /// memory peaks).
    pub sizes: Vec<usize>,
    /// Chunk sizes of the sweep.
    pub chunk_sizes: Vec<usize>,
    /// Orders per run of the sweep.
    pub sweep_orders: usize,
    /// Concurrency levels of the sidecar overhead.
    pub concurrency: Vec<usize>,
    /// Requests per run and path of the sidecar overhead.
    pub requests: usize,
    /// Chunk sizes of the gap grid (batch's path, sent by the benchmark).
    pub gap_chunks: Vec<usize>,
    /// Chunks in flight of the gap grid.
    pub in_flight: Vec<usize>,
    /// The generator's base seed.
    pub seed: u64,
    /// Concurrency levels the load test probes.
    pub load_levels: Vec<usize>,
    /// Seconds per probed level.
    pub probe_seconds: u64,
    /// Seconds of the sustained load.
    pub load_seconds: u64,
    /// Most orders of the sustained load.
    pub load_max_orders: usize,
}

impl Plan {
    /// The plan for `options`: the full benchmark, or a quick smoke run.
    pub fn new(options: &Options) -> Self {
        let runs = options.runs.map(usize::from);
        if options.quick {
            Self {
                mode: "quick",
                runs: runs.unwrap_or(2),
                sizes: vec![1_000, 10_000],
                chunk_sizes: vec![250, 500, 2000],
                sweep_orders: 10_000,
                concurrency: vec![1, 8],
                requests: 200,
                gap_chunks: vec![500, 2000],
                in_flight: vec![1, 4],
                seed: options.seed,
                load_levels: vec![1, 4, 16],
                probe_seconds: 2,
                load_seconds: options.load_seconds.unwrap_or(10),
                load_max_orders: options.load_max_orders,
            }
        } else {
            Self {
                mode: "full",
                runs: runs.unwrap_or(5),
                sizes: vec![1_000, 10_000, 100_000],
                chunk_sizes: vec![100, 250, 500, 1000, 2000, 5000],
                sweep_orders: 100_000,
                concurrency: vec![1, 4, 16],
                requests: 1_000,
                gap_chunks: vec![500, 2000, 5000],
                in_flight: vec![1, 2, 4],
                seed: options.seed,
                load_levels: vec![1, 2, 4, 8, 16, 32],
                probe_seconds: 3,
                load_seconds: options.load_seconds.unwrap_or(60),
                load_max_orders: options.load_max_orders,
            }
        }
    }

    /// The seed of one file: distinct for every phase, size and run, so batch never
    /// finds a file it has already stored.
    pub fn file_seed(&self, phase: u64, orders: usize, run: usize) -> u64 {
        self.seed
            .wrapping_add(phase.wrapping_mul(1_000_000_007))
            .wrapping_add((orders as u64).wrapping_mul(1_000))
            .wrapping_add(run as u64)
    }

    fn largest(&self) -> usize {
        self.sizes.iter().copied().max().unwrap_or(0)
    }
}

/// A stack of release builds for the benchmark: `orders` as its first file, no cron tick
/// during the measurements, spans exported to `otlp` when given.
fn bench_stack(orders: String, chunk_size: usize, otlp: Option<String>) -> StackOptions {
    StackOptions {
        schedule: "@every 1h".to_owned(),
        orders,
        chunk_size,
        batch_env: Vec::new(),
        release: true,
        order_processor_env: Vec::new(),
        sidecar_args: Vec::new(),
        otlp,
    }
}

/// Prints a progress line on stderr.
fn progress(message: impl AsRef<str>) {
    eprintln!("bench: {}", message.as_ref());
}

/// Runs the benchmark and writes the report; returns the Markdown file's path.
pub async fn run(options: Options) -> anyhow::Result<PathBuf> {
    for var in ["TEST_DATABASE_URL", "DAPRD", "JAEGER"] {
        ensure!(
            std::env::var_os(var).is_some(),
            "{var} is not set: run the benchmark with scripts/bench.sh, which starts PostgreSQL \
             and finds daprd and Jaeger"
        );
    }
    let plan = Plan::new(&options);
    let started = Instant::now();
    let root = testkit::workspace_root();
    let out = options
        .out
        .clone()
        .unwrap_or_else(|| default_out_dir(&root));
    progress(format!(
        "{} run: {} runs per figure, files of {:?} orders; report in {}",
        plan.mode,
        plan.runs,
        plan.sizes,
        out.display()
    ));

    let load_at_start = procfs::load_average();
    let busy_before_start = busy_over(Duration::from_secs(1)).await?;
    let default_chunk_size = batch::Config::from_vars(&Vars::from_pairs([]))?
        .settings
        .chunk_size;

    progress("building the services (release) and starting the stack");
    let stack = Stack::start(bench_stack(
        orders::orders_file(&orders::generate(plan.seed, 10)?)?,
        default_chunk_size,
        None,
    ))
    .await;
    let mut bench = Bench::new(stack).await?;
    let environment = Environment {
        cpu: environment::cpu_model(),
        cores: std::thread::available_parallelism().map_or(0, usize::from),
        memory_gib: environment::memory_gib(),
        os: environment::os_name(),
        kernel: environment::kernel(),
        rust: environment::command_line("rustc", &["--version"], &root),
        dapr: environment::command_line(testkit::stack::daprd(), &["--version"], &root),
        postgres: bench.setting("server_version").await?,
        commit: environment::commit(&root),
        load_at_start,
        busy_before_start,
    };
    let mut postgres = Vec::new();
    for name in [
        "fsync",
        "synchronous_commit",
        "full_page_writes",
        "shared_buffers",
        "max_wal_size",
    ] {
        postgres.push((name.to_owned(), bench.setting(name).await?));
    }

    progress("start-up times (each service restarted, its sidecar running)");
    let ready = bench.ready_times(plan.runs).await?;
    bench.warm_paths().await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle: HashMap<String, u64> = bench.resident()?.into_iter().collect();

    progress("warm-up run");
    let warm = orders::generate(plan.file_seed(0, 1_000, 0), 1_000)?;
    bench.end_to_end(&warm, false).await?;

    let (throughput, largest_runs) = throughput(&bench, &plan).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after: HashMap<String, u64> = bench.resident()?.into_iter().collect();

    let breakdown = breakdown(
        &bench,
        &plan,
        default_chunk_size,
        &throughput,
        &largest_runs,
    )
    .await?;
    let gap = gap(&bench, &plan, &throughput).await?;
    let overhead = overhead(&bench, &plan).await?;
    let footprint = footprint(&plan, &ready, &idle, &after, &largest_runs)?;
    let chunks = chunk_sweep(&mut bench, &plan, default_chunk_size).await?;
    let load = load(&bench, &plan).await?;
    let floor_transport = bench.floor_transport.clone();
    drop(bench);
    let trace_export = export::measure(&plan, default_chunk_size).await?;

    let mut targets = report::evaluate(&throughput, &breakdown, &gap, &overhead, &footprint, &load);
    targets.extend(export::targets(&trace_export));
    let report = Report {
        generated_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        mode: plan.mode.to_owned(),
        took_seconds: started.elapsed().as_secs_f64(),
        environment,
        settings: Settings {
            seed: plan.seed,
            runs: plan.runs,
            sizes: plan.sizes.clone(),
            default_chunk_size,
            postgres,
            floor_transport,
            end_to_end: END_TO_END.to_owned(),
        },
        targets,
        throughput,
        breakdown,
        overhead,
        footprint,
        chunks,
        gap,
        load,
        trace_export,
    };
    write(&report, &out)
}

/// 6: the load test. Probes the concurrency levels briefly, then holds the fastest one
/// without failures for the planned time (bounded by a count too).
async fn load(bench: &Bench, plan: &Plan) -> anyhow::Result<report::Load> {
    let mut probe = Vec::new();
    for &level in &plan.load_levels {
        progress(format!(
            "load probe: {level} workers for {} s",
            plan.probe_seconds
        ));
        let sample = bench
            .sustained_load(level, plan.probe_seconds, plan.load_max_orders)
            .await?;
        probe.push(report::LoadProbe {
            concurrency: level,
            rate: sample.rate,
            errors: sample.errors,
        });
    }
    let best = probe
        .iter()
        .filter(|p| p.errors == 0)
        .max_by(|a, b| a.rate.total_cmp(&b.rate))
        .map_or(1, |p| p.concurrency);
    progress(format!(
        "load: {best} workers for {} s (at most {} orders)",
        plan.load_seconds, plan.load_max_orders
    ));
    let run = bench
        .sustained_load(best, plan.load_seconds, plan.load_max_orders)
        .await?;
    Ok(report::Load {
        seconds: plan.load_seconds,
        probe_seconds: plan.probe_seconds,
        max_orders: plan.load_max_orders,
        probe,
        sustained: report::LoadRun {
            concurrency: run.concurrency,
            seconds: run.seconds,
            ok: run.ok,
            errors: run.errors,
            lost: i64::try_from(run.ok).unwrap_or(i64::MAX)
                - i64::try_from(run.stored).unwrap_or(0),
            rate: run.rate,
            slowest_second: run.slowest_second,
            p50_ms: run.latencies.p50,
            p90_ms: run.latencies.p90,
            p99_ms: run.latencies.p99,
            machine_busy: run.cpu.machine_busy,
        },
    })
}

/// What "end to end" means in this report.
const END_TO_END: &str = "End to end is timed from the request that triggers a batch run \
    (`POST /v1.0/invoke/batch/method/runs` on batch's sidecar) to its answer, which batch \
    sends once order-processor has answered for the last chunk, that is after the last \
    INSERT committed; the row count is then checked to equal the file's. Each run starts \
    from an empty table with a new file (another seed), so batch reads, validates and \
    sends all of it.";

fn default_out_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root.join("target"), PathBuf::from)
        .join("bench")
}

/// How busy all cores were over `period` (0–1).
async fn busy_over(period: Duration) -> anyhow::Result<f64> {
    let (busy0, total0) = procfs::machine_ticks()?;
    tokio::time::sleep(period).await;
    let (busy1, total1) = procfs::machine_ticks()?;
    let total = total1.saturating_sub(total0) as f64;
    Ok(if total > 0.0 {
        busy1.saturating_sub(busy0) as f64 / total
    } else {
        0.0
    })
}

fn spread(values: &[f64], what: &str) -> anyhow::Result<Spread> {
    Spread::of(values).with_context(|| format!("no valid runs for {what}"))
}

/// 1 and 2: end to end per size, with COPY and one INSERT of the same rows in the same
/// runs. Returns the samples of the largest size too (CPU and memory were watched).
async fn throughput(
    bench: &Bench,
    plan: &Plan,
) -> anyhow::Result<(Vec<SizeResult>, Vec<RunSample>)> {
    let mut results = Vec::new();
    let mut largest_runs = Vec::new();
    for &size in &plan.sizes {
        let watch = size == plan.largest();
        let (mut e2e, mut secs, mut batch, mut copy, mut insert, mut vs_copy, mut vs_insert) =
            (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
        for run in 0..plan.runs {
            progress(format!(
                "end to end, {size} orders, run {} of {}",
                run + 1,
                plan.runs
            ));
            let orders = orders::generate(plan.file_seed(1, size, run), size)?;
            let sample = bench.end_to_end(&orders, watch).await?;
            let copy_s = bench.copy_floor(&orders).await?;
            let insert_s = bench.insert_floor(&orders).await?;
            let n = size as f64;
            e2e.push(n / sample.seconds);
            secs.push(sample.seconds);
            batch.push(sample.batch_seconds);
            copy.push(n / copy_s);
            insert.push(n / insert_s);
            vs_copy.push(copy_s / sample.seconds);
            vs_insert.push(insert_s / sample.seconds);
            if watch {
                largest_runs.push(sample);
            }
        }
        results.push(SizeResult {
            orders: size,
            end_to_end: spread(&e2e, "end to end")?,
            end_to_end_seconds: spread(&secs, "end to end")?,
            batch_run_seconds: spread(&batch, "batch's run")?,
            copy: spread(&copy, "COPY")?,
            insert: spread(&insert, "INSERT")?,
            vs_copy: spread(&vs_copy, "end to end / COPY")?,
            vs_insert: spread(&vs_insert, "end to end / INSERT")?,
        });
    }
    Ok((results, largest_runs))
}

/// Where the time goes: the largest file through fewer and fewer layers at the default
/// chunk size, and the CPU each process used during the end-to-end runs.
async fn breakdown(
    bench: &Bench,
    plan: &Plan,
    chunk_size: usize,
    throughput: &[SizeResult],
    largest_runs: &[RunSample],
) -> anyhow::Result<Breakdown> {
    let size = plan.largest();
    let chunks = size.div_ceil(chunk_size) as f64;
    let mut steps = Vec::new();
    let layers: [(Layer, &str, &str); 4] = [
        (
            Layer::Sql,
            "sql",
            "order-processor's INSERT statement, straight through sqlx",
        ),
        (
            Layer::Binding,
            "binding",
            "the same statement through order-processor's sidecar's PostgreSQL binding (gRPC)",
        ),
        (
            Layer::App,
            "app",
            "`POST /orders` straight to order-processor (validation, then the binding)",
        ),
        (
            Layer::Sidecars,
            "sidecars",
            "`POST /orders` through batch's sidecar and order-processor's sidecar",
        ),
    ];
    // Round by round, every layer once per round, so that drift affects all alike.
    let mut samples: Vec<(Vec<f64>, Vec<f64>, Vec<f64>)> = vec![Default::default(); layers.len()];
    for run in 0..plan.runs {
        let orders = orders::generate(plan.file_seed(2, size, run), size)?;
        for ((layer, name, _), (rates, per_chunk, cpu)) in layers.iter().zip(&mut samples) {
            progress(format!(
                "breakdown, {name}, run {} of {}",
                run + 1,
                plan.runs
            ));
            let (seconds, sample) = bench.layer(*layer, &orders, chunk_size, 1).await?;
            rates.push(size as f64 / seconds);
            per_chunk.push(seconds * 1000.0 / chunks);
            cpu.push(involved_cpu_ms_per_1000(&sample, size));
        }
    }
    for ((_, name, path), (rates, per_chunk, cpu)) in layers.iter().zip(&samples) {
        steps.push(Step {
            name: (*name).to_owned(),
            path: (*path).to_owned(),
            in_flight: 1,
            orders_per_second: spread(rates, name)?,
            ms_per_chunk: spread(per_chunk, name)?,
            cpu_ms_per_1000_orders: spread(cpu, name)?,
        });
    }
    let e2e_cpu: Vec<f64> = largest_runs
        .iter()
        .filter_map(|run| run.cpu.as_ref())
        .map(|cpu| involved_cpu_ms_per_1000(cpu, size))
        .collect();
    if let Some(e2e) = throughput.iter().find(|r| r.orders == size) {
        steps.push(Step {
            name: "batch".to_owned(),
            path: "a whole batch run: read and validate the file, then the above (the end-to-end figure)"
                .to_owned(),
            in_flight: 1,
            orders_per_second: e2e.end_to_end,
            ms_per_chunk: Spread {
                median: e2e.end_to_end_seconds.median * 1000.0 / chunks,
                min: e2e.end_to_end_seconds.min * 1000.0 / chunks,
                max: e2e.end_to_end_seconds.max * 1000.0 / chunks,
                runs: e2e.end_to_end_seconds.runs,
            },
            cpu_ms_per_1000_orders: spread(&e2e_cpu, "batch")?,
        });
    }

    let mut per_process: Vec<(String, Vec<f64>, Vec<f64>)> = Vec::new();
    let mut busy = Vec::new();
    for run in largest_runs {
        let Some(cpu) = &run.cpu else { continue };
        busy.push(cpu.machine_busy);
        for (process, seconds) in &cpu.seconds {
            let entry = match per_process.iter_mut().find(|(p, _, _)| p == process) {
                Some(entry) => entry,
                None => {
                    per_process.push((process.clone(), Vec::new(), Vec::new()));
                    let last = per_process.len() - 1;
                    &mut per_process[last]
                }
            };
            entry.1.push(seconds / run.seconds);
            entry.2.push(seconds * 1000.0 / (size as f64 / 1000.0));
        }
    }
    let cpu = per_process
        .into_iter()
        .map(|(process, cores, per_1000)| {
            Ok(CpuUse {
                cores: spread(&cores, &process)?,
                ms_per_1000_orders: spread(&per_1000, &process)?,
                process,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Breakdown {
        cores: std::thread::available_parallelism().map_or(1, usize::from),
        orders: size,
        chunk_size,
        steps,
        cpu,
        stack_cpu_ms_per_1000_orders: Spread::of(&e2e_cpu),
        machine_busy: Spread::of(&busy),
    })
}

/// CPU ms per 1,000 orders of every process involved in a run (not other processes).
fn involved_cpu_ms_per_1000(cpu: &CpuSample, orders: usize) -> f64 {
    let seconds: f64 = cpu
        .seconds
        .iter()
        .filter(|(process, _)| process != OTHERS)
        .map(|(_, s)| s)
        .sum();
    seconds * 1000.0 / (orders as f64 / 1000.0)
}

/// What would close the gap: the largest file along batch's path (both sidecars) in
/// bigger chunks and with several chunks in flight, sent by the benchmark.
async fn gap(bench: &Bench, plan: &Plan, throughput: &[SizeResult]) -> anyhow::Result<Gap> {
    let size = plan.largest();
    let copy = throughput
        .iter()
        .find(|r| r.orders == size)
        .map_or(f64::NAN, |r| r.copy.median);
    let combinations: Vec<(usize, usize)> = plan
        .gap_chunks
        .iter()
        .flat_map(|&c| plan.in_flight.iter().map(move |&k| (c, k)))
        .collect();
    // Round by round, every combination once per round.
    let mut samples: Vec<(Vec<f64>, Vec<f64>, Vec<f64>)> =
        vec![Default::default(); combinations.len()];
    for run in 0..plan.runs {
        let orders = orders::generate(plan.file_seed(5, size, run), size)?;
        for (&(chunk_size, in_flight), (rates, cpu, busy)) in combinations.iter().zip(&mut samples)
        {
            progress(format!(
                "closing the gap, chunks of {chunk_size}, {in_flight} in flight, run {} of {}",
                run + 1,
                plan.runs
            ));
            let (seconds, sample) = bench
                .layer(Layer::Sidecars, &orders, chunk_size, in_flight)
                .await?;
            rates.push(size as f64 / seconds);
            cpu.push(involved_cpu_ms_per_1000(&sample, size));
            busy.push(sample.machine_busy);
        }
    }
    let mut results = Vec::new();
    for (&(chunk_size, in_flight), (rates, cpu, busy)) in combinations.iter().zip(&samples) {
        let rate = spread(rates, "gap")?;
        results.push(GapResult {
            chunk_size,
            in_flight,
            vs_copy: Spread {
                median: rate.median / copy,
                min: rate.min / copy,
                max: rate.max / copy,
                runs: rate.runs,
            },
            orders_per_second: rate,
            cpu_ms_per_1000_orders: spread(cpu, "gap CPU")?,
            machine_busy: spread(busy, "gap busy")?,
        });
    }
    Ok(Gap {
        orders: size,
        results,
    })
}

/// 3: single-order latencies straight to order-processor and through both sidecars.
async fn overhead(bench: &Bench, plan: &Plan) -> anyhow::Result<Overhead> {
    progress("sidecar overhead: warm-up");
    for route in [Route::Direct, Route::Sidecars] {
        bench.single_orders(route, 1, 100).await?;
    }
    let mut levels = Vec::new();
    for &concurrency in &plan.concurrency {
        let mut direct: Vec<(Percentiles, f64)> = Vec::new();
        let mut sidecars: Vec<(Percentiles, f64)> = Vec::new();
        for run in 0..plan.runs {
            progress(format!(
                "sidecar overhead, concurrency {concurrency}, run {} of {}",
                run + 1,
                plan.runs
            ));
            // Alternate which path goes first, so drift does not favour one.
            let order = if run % 2 == 0 {
                [Route::Direct, Route::Sidecars]
            } else {
                [Route::Sidecars, Route::Direct]
            };
            for route in order {
                let result = bench
                    .single_orders(route, concurrency, plan.requests)
                    .await?;
                match route {
                    Route::Direct => direct.push(result),
                    Route::Sidecars => sidecars.push(result),
                }
            }
        }
        let added = |f: fn(&Percentiles) -> f64| -> Vec<f64> {
            direct
                .iter()
                .zip(&sidecars)
                .map(|((d, _), (s, _))| f(s) - f(d))
                .collect()
        };
        levels.push(Level {
            concurrency,
            direct: path_latency(&direct)?,
            sidecars: path_latency(&sidecars)?,
            added_p50: spread(&added(|p| p.p50), "added p50")?,
            added_p90: spread(&added(|p| p.p90), "added p90")?,
            added_p99: spread(&added(|p| p.p99), "added p99")?,
        });
    }
    Ok(Overhead {
        requests_per_run: plan.requests,
        levels,
        published: report::published_overhead(),
    })
}

fn path_latency(runs: &[(Percentiles, f64)]) -> anyhow::Result<PathLatency> {
    let pick = |f: fn(&Percentiles) -> f64| runs.iter().map(|(p, _)| f(p)).collect::<Vec<_>>();
    Ok(PathLatency {
        p50: spread(&pick(|p| p.p50), "p50")?,
        p90: spread(&pick(|p| p.p90), "p90")?,
        p99: spread(&pick(|p| p.p99), "p99")?,
        requests_per_second: spread(
            &runs.iter().map(|(_, rps)| *rps).collect::<Vec<_>>(),
            "requests per second",
        )?,
    })
}

/// 4: binary sizes, start-up times and memory.
fn footprint(
    plan: &Plan,
    ready: &HashMap<&str, Vec<f64>>,
    idle: &HashMap<String, u64>,
    after: &HashMap<String, u64>,
    largest_runs: &[RunSample],
) -> anyhow::Result<Footprint> {
    let memory = |name: &str| -> anyhow::Result<Memory> {
        let peaks: Vec<f64> = largest_runs
            .iter()
            .filter_map(|run| run.peaks.get(name).map(|kib| *kib as f64))
            .collect();
        Ok(Memory {
            name: name.to_owned(),
            idle_kib: idle.get(name).copied().unwrap_or(0),
            peak_kib: spread(&peaks, name)?,
            after_kib: after.get(name).copied().unwrap_or(0),
        })
    };
    let binaries = testkit::stack::binaries(true);
    let mut services = Vec::new();
    for name in SERVICES {
        let (binary_bytes, binary_stripped) = measure::binary(&binaries.join(name))?;
        services.push(ServiceFootprint {
            name: name.to_owned(),
            binary_bytes,
            binary_stripped,
            ready_ms: spread(ready.get(name).map_or(&[][..], Vec::as_slice), name)?,
            memory: memory(name)?,
        });
    }
    let sidecars = SIDECARS
        .iter()
        .map(|name| memory(name))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Footprint {
        services,
        sidecars,
        peak_during_orders: plan.largest(),
        peak_method: "the highest of VmHWM (reset through /proc/<pid>/clear_refs before each \
                      run) and VmRSS sampled every 5 ms during the run"
            .to_owned(),
    })
}

/// 5: end to end per chunk size (batch restarted with each), then back to the default.
async fn chunk_sweep(
    bench: &mut Bench,
    plan: &Plan,
    default_chunk_size: usize,
) -> anyhow::Result<ChunkSweep> {
    // Round by round, every chunk size once per round (batch restarted with each).
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); plan.chunk_sizes.len()];
    for run in 0..plan.runs {
        let orders =
            orders::generate(plan.file_seed(3, plan.sweep_orders, run), plan.sweep_orders)?;
        for (&chunk_size, rates) in plan.chunk_sizes.iter().zip(&mut rates) {
            bench.set_chunk_size(chunk_size).await?;
            progress(format!(
                "chunk size {chunk_size}, {} orders, run {} of {}",
                plan.sweep_orders,
                run + 1,
                plan.runs
            ));
            let sample = bench.end_to_end(&orders, false).await?;
            rates.push(plan.sweep_orders as f64 / sample.seconds);
        }
    }
    let results = plan
        .chunk_sizes
        .iter()
        .zip(&rates)
        .map(|(&chunk_size, rates)| {
            Ok(ChunkResult {
                chunk_size,
                orders_per_second: spread(rates, "chunk size")?,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    bench.set_chunk_size(default_chunk_size).await?;
    Ok(ChunkSweep {
        orders: plan.sweep_orders,
        default_chunk_size,
        results,
    })
}

/// Writes `report.md` and `report.json` (the latest) and timestamped copies beside them.
pub fn write(report: &Report, out: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let markdown = report::markdown(report);
    let json = serde_json::to_string_pretty(report)?;
    let stamp = report.generated_at.replace(['-', ':'], "");
    for (name, text) in [
        ("report.md".to_owned(), &markdown),
        ("report.json".to_owned(), &json),
        (format!("report-{stamp}.md"), &markdown),
        (format!("report-{stamp}.json"), &json),
    ] {
        let path = out.join(name);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(out.join("report.md"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(quick: bool) -> Options {
        Options {
            quick,
            runs: None,
            seed: 1,
            out: None,
            load_seconds: None,
            load_max_orders: 2_000_000,
        }
    }

    #[test]
    fn the_full_plan_holds_the_load_for_a_minute_and_the_quick_one_briefly() {
        assert_eq!(Plan::new(&options(false)).load_seconds, 60);
        assert_eq!(Plan::new(&options(true)).load_seconds, 10);
    }

    #[test]
    fn the_full_plan_measures_the_sizes_the_issue_names() {
        let plan = Plan::new(&options(false));
        assert_eq!(plan.sizes, vec![1_000, 10_000, 100_000]);
        assert_eq!(plan.runs, 5);
        assert!(plan.chunk_sizes.contains(&500));
    }

    #[test]
    fn a_quick_plan_is_small() {
        let plan = Plan::new(&options(true));
        assert_eq!(plan.mode, "quick");
        assert!(plan.largest() <= 10_000);
        assert_eq!(plan.runs, 2);
    }

    #[test]
    fn every_file_of_a_run_has_its_own_seed() {
        let plan = Plan::new(&options(false));
        let mut seeds = std::collections::HashSet::new();
        for phase in [0, 1, 2, 3, 5] {
            for &size in &plan.sizes {
                for run in 0..plan.runs {
                    assert!(seeds.insert(plan.file_seed(phase, size, run)));
                }
            }
        }
    }

    #[test]
    fn the_command_line_takes_quick_runs_and_seed() {
        let options =
            Options::try_parse_from(["bench", "--quick", "--runs", "3", "--seed", "9"]).unwrap();
        let plan = Plan::new(&options);
        assert_eq!((plan.mode, plan.runs, plan.seed), ("quick", 3, 9));
        assert!(Options::try_parse_from(["bench", "--runs", "0"]).is_err());
    }
}
