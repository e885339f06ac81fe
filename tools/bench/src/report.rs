//! The report: what was measured (serialised as JSON for tools and later comparison) and
//! its Markdown rendering for people, with the targets checked against the figures of the
//! same run and, where one is missed, the reason taken from the breakdown.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::environment::Environment;
use crate::export::TraceExport;
use crate::stats::Spread;
use crate::targets::{
    TARGET_PEAK_BYTES, TARGET_READY_MS, Target, Verdict, megabytes, percent, thousands,
};

/// The end-to-end rate must reach this fraction of the `COPY` rate.
pub const TARGET_VS_COPY: f64 = 0.30;
/// Each service's own CPU per 1,000 orders end to end must stay under this many ms.
pub const TARGET_SERVICE_CPU_MS: f64 = 0.8;
/// Dapr's published sidecar overhead, for comparison.
pub fn published_overhead() -> Published {
    Published {
        source:
            "https://docs.dapr.io/operations/performance-and-scalability/perf-service-invocation/"
                .to_owned(),
        p90_ms: 1.40,
        p99_ms: 2.10,
        conditions: "Dapr v1.0 performance summary: two sidecars added about 1.40 ms at p90 and \
                     2.10 ms at p99, at 1,000 requests/s with 1 KB payloads, mTLS on, tracing \
                     sampled at 0.1, sidecars limited to 0.5 vCPU, on a 3-node Kubernetes \
                     cluster of 4-core nodes"
            .to_owned(),
    }
}

/// Everything one benchmark run measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// When the run finished (UTC, RFC 3339).
    pub generated_at: String,
    /// `full`, or `quick` (a smoke run whose figures are not for comparison).
    pub mode: String,
    /// Wall-clock time the benchmark took, in seconds.
    pub took_seconds: f64,
    /// The machine and the versions.
    pub environment: Environment,
    /// How it was measured.
    pub settings: Settings,
    /// The targets, checked against this run's figures.
    pub targets: Vec<Target>,
    /// 1 and 2: end-to-end throughput per file size, beside the database's floor.
    pub throughput: Vec<SizeResult>,
    /// Where the end-to-end time goes: the same orders through fewer and fewer layers.
    pub breakdown: Breakdown,
    /// 3: sidecar overhead on `POST /orders` with one order.
    pub overhead: Overhead,
    /// 4: memory, binary sizes and start-up time.
    pub footprint: Footprint,
    /// 5: end-to-end throughput per chunk size.
    pub chunks: ChunkSweep,
    /// What would close the gap to the target: batch's path with bigger chunks and several
    /// chunks in flight, sent by the benchmark as batch would.
    pub gap: Gap,
    /// 6: the load test, sustained single-order requests through both sidecars.
    pub load: Load,
    /// 7: throughput, memory and start-up with trace export off and on.
    pub trace_export: TraceExport,
}

/// The load test: the highest rate found by a short probe of concurrency levels, then held.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Load {
    /// How long the sustained run was meant to last, in seconds.
    pub seconds: u64,
    /// How long each probed level ran, in seconds.
    pub probe_seconds: u64,
    /// The most orders it could send (a bound, besides the time).
    pub max_orders: usize,
    /// Each probed concurrency: successful requests per second and errors.
    pub probe: Vec<LoadProbe>,
    /// The sustained run, at the probe's best concurrency.
    pub sustained: LoadRun,
}

/// One probed concurrency level.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadProbe {
    /// Workers sending at once.
    pub concurrency: usize,
    /// Successful requests per second.
    pub rate: f64,
    /// Failed requests.
    pub errors: u64,
}

/// The sustained load run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadRun {
    /// Workers sending at once.
    pub concurrency: usize,
    /// How long it ran, in seconds.
    pub seconds: f64,
    /// Requests answered 2xx.
    pub ok: u64,
    /// Failed requests (transport errors or non-2xx answers).
    pub errors: u64,
    /// Orders answered 2xx but not in the table afterwards.
    pub lost: i64,
    /// Successful requests per second over the run.
    pub rate: f64,
    /// Successful requests in the slowest whole second.
    pub slowest_second: u64,
    /// Latency of the successful requests, ms.
    pub p50_ms: f64,
    /// 90th percentile, ms.
    pub p90_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Busy fraction of all cores during the run.
    pub machine_busy: f64,
}

/// How the run was set up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// Seed of the orders generator (each file's seed is derived from it).
    pub seed: u64,
    /// Runs per figure.
    pub runs: usize,
    /// Order counts of the end-to-end files.
    pub sizes: Vec<usize>,
    /// batch's default `CHUNK_SIZE`, used everywhere but in the chunk-size sweep.
    pub default_chunk_size: usize,
    /// PostgreSQL settings that bear on write speed, shared by every figure.
    pub postgres: Vec<(String, String)>,
    /// How the floor (COPY, one INSERT) connects to PostgreSQL.
    pub floor_transport: String,
    /// What "end to end" measures.
    pub end_to_end: String,
}

/// End-to-end throughput of one file size and the floor beside it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SizeResult {
    /// Orders in the file.
    pub orders: usize,
    /// Orders per second from trigger to last row committed.
    pub end_to_end: Spread,
    /// The same in seconds.
    pub end_to_end_seconds: Spread,
    /// The run's own duration as batch reports it, in seconds.
    pub batch_run_seconds: Spread,
    /// Rows per second of `COPY` into a fresh table.
    pub copy: Spread,
    /// Rows per second of one multi-row `INSERT` (sqlx, `UNNEST` of three arrays).
    pub insert: Spread,
    /// End to end divided by `COPY`, run by run.
    pub vs_copy: Spread,
    /// End to end divided by the multi-row `INSERT`, run by run.
    pub vs_insert: Spread,
}

/// The same orders through fewer and fewer layers, one chunk at a time unless said.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Breakdown {
    /// Cores of the machine: what the CPU budget is divided among.
    pub cores: usize,
    /// Orders per run.
    pub orders: usize,
    /// Orders per chunk.
    pub chunk_size: usize,
    /// From the bare statement to the whole system.
    pub steps: Vec<Step>,
    /// CPU used per process during the end-to-end runs of this size (the last row is
    /// everything else on the machine).
    pub cpu: Vec<CpuUse>,
    /// CPU ms per 1,000 orders of the stack's processes together in those runs.
    pub stack_cpu_ms_per_1000_orders: Option<Spread>,
    /// How busy all cores together were during those runs (0–1).
    pub machine_busy: Option<Spread>,
}

/// One layer of the breakdown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// Short name.
    pub name: String,
    /// What the orders went through.
    pub path: String,
    /// Chunks in flight at once.
    pub in_flight: usize,
    /// Orders per second.
    pub orders_per_second: Spread,
    /// Wall-clock milliseconds per chunk (the run's time divided by its chunks).
    pub ms_per_chunk: Spread,
    /// CPU ms per 1,000 orders of every process involved (the stack, PostgreSQL and the
    /// benchmark as the client), not counting other processes.
    pub cpu_ms_per_1000_orders: Spread,
}

/// The sidecar path (what batch sends through) with other chunk sizes and concurrency.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gap {
    /// Orders per run.
    pub orders: usize,
    /// One entry per chunk size and chunks in flight.
    pub results: Vec<GapResult>,
}

/// One combination of the gap grid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GapResult {
    /// Orders per request.
    pub chunk_size: usize,
    /// Requests in flight at once.
    pub in_flight: usize,
    /// Orders per second.
    pub orders_per_second: Spread,
    /// Against the COPY rate of the same size (median of COPY).
    pub vs_copy: Spread,
    /// CPU ms per 1,000 orders of every process involved.
    pub cpu_ms_per_1000_orders: Spread,
    /// How busy all cores together were (0–1).
    pub machine_busy: Spread,
}

impl Gap {
    /// The fastest combination.
    pub fn best(&self) -> Option<&GapResult> {
        self.results.iter().max_by(|a, b| {
            a.orders_per_second
                .median
                .total_cmp(&b.orders_per_second.median)
        })
    }
}

/// CPU one process used during the end-to-end runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CpuUse {
    /// The process (PostgreSQL counts all its server processes).
    pub process: String,
    /// CPU seconds per wall-clock second: 1.0 is one core kept busy.
    pub cores: Spread,
    /// CPU milliseconds per 1,000 orders.
    pub ms_per_1000_orders: Spread,
}

/// Sidecar overhead measurements.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Overhead {
    /// Requests per run and path.
    pub requests_per_run: usize,
    /// One entry per concurrency level.
    pub levels: Vec<Level>,
    /// Dapr's published figure.
    pub published: Published,
}

/// One concurrency level: both paths and the difference.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Level {
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Straight to order-processor's port.
    pub direct: PathLatency,
    /// Through batch's sidecar and order-processor's sidecar.
    pub sidecars: PathLatency,
    /// Sidecars minus direct, run by run, in ms.
    pub added_p50: Spread,
    /// Sidecars minus direct at p90, in ms.
    pub added_p90: Spread,
    /// Sidecars minus direct at p99, in ms.
    pub added_p99: Spread,
}

/// Latency percentiles (ms) and throughput of one path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PathLatency {
    /// Median request, ms.
    pub p50: Spread,
    /// 90th percentile, ms.
    pub p90: Spread,
    /// 99th percentile, ms.
    pub p99: Spread,
    /// Requests per second.
    pub requests_per_second: Spread,
}

/// A published figure to compare with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Published {
    /// Where it is published.
    pub source: String,
    /// Added at p90, ms.
    pub p90_ms: f64,
    /// Added at p99, ms.
    pub p99_ms: f64,
    /// How it was measured.
    pub conditions: String,
}

/// Memory, size and start-up of the services (and the sidecars' memory, for context).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Footprint {
    /// batch and order-processor.
    pub services: Vec<ServiceFootprint>,
    /// The two daprd sidecars.
    pub sidecars: Vec<Memory>,
    /// The file size whose runs the peaks were taken in.
    pub peak_during_orders: usize,
    /// How the peak was taken.
    pub peak_method: String,
}

/// One service's footprint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceFootprint {
    /// Its name.
    pub name: String,
    /// Release binary size in bytes.
    pub binary_bytes: u64,
    /// Whether the binary has neither a symbol table nor debug sections.
    pub binary_stripped: bool,
    /// From spawning the process to `/readyz` answering 200 (its sidecar already up), ms.
    pub ready_ms: Spread,
    /// Resident memory.
    pub memory: Memory,
}

/// Resident memory of one process, in KiB.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Memory {
    /// The process.
    pub name: String,
    /// Started and ready, before any order.
    pub idle_kib: u64,
    /// The peak during each run of the largest file.
    pub peak_kib: Spread,
    /// Idle again after those runs.
    pub after_kib: u64,
}

/// End-to-end throughput per chunk size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkSweep {
    /// Orders per run.
    pub orders: usize,
    /// batch's default.
    pub default_chunk_size: usize,
    /// One entry per chunk size.
    pub results: Vec<ChunkResult>,
}

/// One chunk size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkResult {
    /// Orders per request.
    pub chunk_size: usize,
    /// End-to-end orders per second.
    pub orders_per_second: Spread,
}

impl ChunkSweep {
    /// The chunk size with the highest median throughput.
    pub fn best(&self) -> Option<&ChunkResult> {
        self.results.iter().max_by(|a, b| {
            a.orders_per_second
                .median
                .total_cmp(&b.orders_per_second.median)
        })
    }

    /// The default chunk size's result.
    pub fn default_result(&self) -> Option<&ChunkResult> {
        self.results
            .iter()
            .find(|r| r.chunk_size == self.default_chunk_size)
    }
}

impl Breakdown {
    fn step(&self, name: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.name == name)
    }
}

/// Checks the targets against the figures.
pub fn evaluate(
    throughput: &[SizeResult],
    breakdown: &Breakdown,
    gap: &Gap,
    overhead: &Overhead,
    footprint: &Footprint,
    load: &Load,
) -> Vec<Target> {
    let mut targets = Vec::new();
    let largest = throughput.iter().max_by_key(|r| r.orders);
    targets.push(match largest {
        Some(r) if r.orders >= 100_000 => {
            let met = r.vs_copy.median >= TARGET_VS_COPY;
            Target {
                name: format!(
                    "End to end, {} orders, against COPY",
                    thousands(r.orders as f64)
                ),
                limit: format!("at least {} of the COPY rate", percent(TARGET_VS_COPY)),
                measured: format!(
                    "{} ({} orders/s against {} rows/s)",
                    percent(r.vs_copy.median),
                    thousands(r.end_to_end.median),
                    thousands(r.copy.median)
                ),
                verdict: if met { Verdict::Met } else { Verdict::Missed },
                note: if met {
                    String::new()
                } else {
                    why_slower_than_copy(r, breakdown, gap)
                },
            }
        }
        _ => Target {
            name: "End to end, 100,000 orders, against COPY".to_owned(),
            limit: format!("at least {} of the COPY rate", percent(TARGET_VS_COPY)),
            measured: "not measured (no 100,000-order file in this run)".to_owned(),
            verdict: Verdict::NotMeasured,
            note: String::new(),
        },
    });
    for process in breakdown
        .cpu
        .iter()
        .filter(|c| crate::measure::SERVICES.contains(&c.process.as_str()))
    {
        let per_1000 = &process.ms_per_1000_orders;
        targets.push(Target {
            name: format!("{}: CPU per 1,000 orders end to end", process.process),
            limit: format!("at most {} ms", decimal(TARGET_SERVICE_CPU_MS, 1)),
            measured: format!(
                "{} ms (median of {}; {}–{})",
                decimal(per_1000.median, 2),
                per_1000.runs,
                decimal(per_1000.min, 2),
                decimal(per_1000.max, 2)
            ),
            verdict: verdict(
                per_1000.median <= TARGET_SERVICE_CPU_MS,
                breakdown.orders >= 100_000,
            ),
            note: String::new(),
        });
    }
    for service in &footprint.services {
        let peak_bytes = service.memory.peak_kib.max * 1024.0;
        let met = peak_bytes < TARGET_PEAK_BYTES;
        targets.push(Target {
            name: format!("{}: resident memory at peak", service.name),
            limit: "under 20 MB".to_owned(),
            measured: format!(
                "{} (highest of {} runs of {} orders; idle {})",
                megabytes(peak_bytes),
                service.memory.peak_kib.runs,
                thousands(footprint.peak_during_orders as f64),
                megabytes(service.memory.idle_kib as f64 * 1024.0)
            ),
            verdict: verdict(met, footprint.peak_during_orders >= 100_000),
            note: String::new(),
        });
    }
    for service in &footprint.services {
        let met = service.ready_ms.median < TARGET_READY_MS;
        let worst = if service.ready_ms.max >= TARGET_READY_MS {
            format!(
                "the slowest of {} starts took {} ms",
                service.ready_ms.runs,
                decimal(service.ready_ms.max, 1)
            )
        } else {
            String::new()
        };
        targets.push(Target {
            name: format!("{}: start to /readyz 200", service.name),
            limit: "under 100 ms".to_owned(),
            measured: format!(
                "{} ms (median of {}; {}–{})",
                decimal(service.ready_ms.median, 1),
                service.ready_ms.runs,
                decimal(service.ready_ms.min, 1),
                decimal(service.ready_ms.max, 1)
            ),
            verdict: if met { Verdict::Met } else { Verdict::Missed },
            note: worst,
        });
    }
    if let Some(level) = overhead.levels.iter().min_by_key(|l| l.concurrency) {
        let published = &overhead.published;
        targets.push(Target {
            name: format!(
                "Two sidecars' added latency (concurrency {})",
                level.concurrency
            ),
            limit: format!(
                "Dapr publishes about {} ms at p90 and {} ms at p99",
                decimal(published.p90_ms, 2),
                decimal(published.p99_ms, 2)
            ),
            measured: format!(
                "{} ms at p90, {} ms at p99",
                decimal(level.added_p90.median, 2),
                decimal(level.added_p99.median, 2)
            ),
            verdict: Verdict::Comparison,
            note: "a comparison, not a target: Dapr measured other hardware, with mTLS and at a \
                   fixed 1,000 requests/s"
                .to_owned(),
        });
    }
    targets.push(load_target(load));
    targets
}

/// The load test's target: no error and no lost order while the machine is saturated.
fn load_target(load: &Load) -> Target {
    let run = &load.sustained;
    let met = run.errors == 0 && run.lost == 0 && run.ok > 0;
    Target {
        name: format!(
            "Load: {} s of single-order POST /orders through both sidecars, at the highest rate found",
            load.seconds
        ),
        limit: "no failed request and no lost order".to_owned(),
        measured: format!(
            "{} requests at {}/s with {} workers (slowest second {}), {} failed, {} lost",
            thousands(run.ok as f64),
            thousands(run.rate),
            run.concurrency,
            thousands(run.slowest_second as f64),
            run.errors,
            run.lost
        ),
        verdict: if met { Verdict::Met } else { Verdict::Missed },
        note: String::new(),
    }
}

fn verdict(met: bool, measured: bool) -> Verdict {
    match (measured, met) {
        (false, _) => Verdict::NotMeasured,
        (true, true) => Verdict::Met,
        (true, false) => Verdict::Missed,
    }
}

/// Why end to end is slower than `COPY`, from the breakdown's figures.
fn why_slower_than_copy(result: &SizeResult, breakdown: &Breakdown, gap: &Gap) -> String {
    let mut why = String::new();
    let per_chunk = |name: &str| breakdown.step(name).map(|s| s.ms_per_chunk.median);
    let copy_ms = breakdown.chunk_size as f64 / result.copy.median * 1000.0;
    if let (Some(sql), Some(binding), Some(app), Some(sidecars), Some(batch)) = (
        per_chunk("sql"),
        per_chunk("binding"),
        per_chunk("app"),
        per_chunk("sidecars"),
        per_chunk("batch"),
    ) {
        let _ = write!(
            why,
            "Latency, for one chunk of {} orders at a time: the service's INSERT statement \
             alone takes {} ms (COPY needs {} ms for as many rows), Dapr's PostgreSQL binding \
             adds {} ms, order-processor {} ms and the two sidecars' service invocation {} ms. \
             batch keeps several chunks in flight and so averages {} ms per chunk.",
            breakdown.chunk_size,
            decimal(sql, 1),
            decimal(copy_ms, 1),
            signed(binding - sql),
            signed(app - binding),
            signed(sidecars - app),
            decimal(batch, 1),
        );
    }
    if let Some(cpu) = breakdown.stack_cpu_ms_per_1000_orders {
        let cap = breakdown.cores as f64 * 1_000_000.0 / cpu.median;
        let needed = breakdown.cores as f64 * 1_000_000.0 / (TARGET_VS_COPY * result.copy.median);
        let _ = write!(
            why,
            " CPU: the whole path costs {} ms of CPU per 1,000 orders (most in {}), so {} \
             cores kept fully busy could store at most {} orders/s, {} of COPY; {} of \
             COPY needs {} ms or less.",
            decimal(cpu.median, 1),
            busiest(breakdown),
            breakdown.cores,
            thousands(cap),
            percent(cap / result.copy.median),
            percent(TARGET_VS_COPY),
            decimal(needed, 1)
        );
    }
    if let Some(busy) = breakdown.machine_busy {
        let _ = write!(
            why,
            " All cores together were {} busy during the runs",
            percent(busy.median)
        );
        match breakdown
            .cpu
            .iter()
            .find(|c| c.process == crate::measure::OTHERS)
        {
            Some(others) if others.cores.median >= 0.05 => {
                let _ = write!(
                    why,
                    ", {} cores of it by other processes than the stack: the figures are \
                     lower than on an idle machine.",
                    decimal(others.cores.median, 2)
                );
            }
            _ => why.push('.'),
        }
    }
    if let Some(best) = gap.best() {
        let _ = write!(
            why,
            " Sent as batch could send them, in chunks of {} with {} in flight, the same \
             path reaches {} orders/s ({} of COPY; table \"What would close the gap\").",
            best.chunk_size,
            best.in_flight,
            thousands(best.orders_per_second.median),
            percent(best.vs_copy.median)
        );
    }
    why.trim().to_owned()
}

/// The processes that use the most CPU per order in the end-to-end runs, in words.
fn busiest(breakdown: &Breakdown) -> String {
    let mut stack: Vec<&CpuUse> = breakdown
        .cpu
        .iter()
        .filter(|c| c.process != crate::measure::OTHERS)
        .collect();
    stack.sort_by(|a, b| {
        b.ms_per_1000_orders
            .median
            .total_cmp(&a.ms_per_1000_orders.median)
    });
    stack
        .iter()
        .take(2)
        .map(|c| {
            format!(
                "{} {} ms",
                c.process,
                decimal(c.ms_per_1000_orders.median, 1)
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Renders the report as Markdown.
pub fn markdown(report: &Report) -> String {
    let mut md = String::new();
    let env = &report.environment;
    let _ = writeln!(md, "# Benchmark report\n");
    let _ = writeln!(
        md,
        "{} run of {} on {} ({} cores, {} GiB, {}, Linux {}), commit `{}`; took {} min.\n",
        if report.mode == "quick" {
            "A **quick** (smoke)"
        } else {
            "A full"
        },
        report.generated_at,
        env.cpu,
        env.cores,
        decimal(env.memory_gib, 0),
        env.os,
        env.kernel,
        env.commit,
        decimal(report.took_seconds / 60.0, 1)
    );
    if report.mode == "quick" {
        let _ = writeln!(
            md,
            "> Quick mode: small files and few runs, to check that the benchmark works. Do \
             not compare these figures.\n"
        );
    }
    let _ = writeln!(
        md,
        "Versions: {}; daprd {}; PostgreSQL {}. Release builds of both services. Load \
         average at the start: {}; the cores were {} busy in the second before it started.\n",
        env.rust,
        env.dapr,
        env.postgres,
        env.load_at_start,
        percent(env.busy_before_start)
    );
    let settings: Vec<String> = report
        .settings
        .postgres
        .iter()
        .map(|(k, v)| format!("`{k}={v}`"))
        .collect();
    let _ = writeln!(
        md,
        "Every figure is the median of {} runs, with the lowest and highest run in brackets. \
         PostgreSQL runs with {}: the floor and the end-to-end figures share these settings. \
         {}\n",
        report.settings.runs,
        settings.join(", "),
        report.settings.end_to_end
    );

    let _ = writeln!(md, "## Targets\n");
    let _ = writeln!(md, "| target | limit | this run | verdict |");
    let _ = writeln!(md, "| --- | --- | --- | --- |");
    for t in &report.targets {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} |",
            t.name,
            t.limit,
            t.measured,
            match t.verdict {
                Verdict::Met => "met",
                Verdict::Missed => "**missed**",
                Verdict::Comparison => "comparison",
                Verdict::NotMeasured => "not measured",
            }
        );
    }
    for t in report.targets.iter().filter(|t| !t.note.is_empty()) {
        let _ = writeln!(md, "\n- **{}**: {}", t.name, t.note);
    }
    md.push('\n');

    let _ = writeln!(
        md,
        "## 1–2. End-to-end throughput and the database's floor\n"
    );
    let _ = writeln!(
        md,
        "| orders | end to end, orders/s | seconds | batch's run, s | COPY, rows/s | one INSERT, rows/s | end to end / COPY | end to end / INSERT |"
    );
    let _ = writeln!(
        md,
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for r in &report.throughput {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            thousands(r.orders as f64),
            spread(&r.end_to_end, thousands),
            spread(&r.end_to_end_seconds, |v| decimal(v, 2)),
            spread(&r.batch_run_seconds, |v| decimal(v, 2)),
            spread(&r.copy, thousands),
            spread(&r.insert, thousands),
            spread(&r.vs_copy, percent),
            spread(&r.vs_insert, percent),
        );
    }
    let _ = writeln!(
        md,
        "\nCOPY: `COPY ... FROM STDIN (FORMAT csv)` into a fresh table like `app.orders` \
         (same primary key and checks). One INSERT: a single sqlx statement, `INSERT ... \
         SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::numeric[])`, into a fresh table. \
         Both carry the same rows as the end-to-end file, in the same run, and connect \
         over {}.\n",
        report.settings.floor_transport
    );

    let b = &report.breakdown;
    let _ = writeln!(
        md,
        "## Where the time goes: {} orders, chunks of {}\n",
        thousands(b.orders as f64),
        b.chunk_size
    );
    let _ = writeln!(
        md,
        "| step | what the orders go through | orders/s | ms per chunk | CPU ms per 1,000 orders |"
    );
    let _ = writeln!(md, "| --- | --- | ---: | ---: | ---: |");
    for s in &b.steps {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} |",
            s.name,
            s.path,
            spread(&s.orders_per_second, thousands),
            spread(&s.ms_per_chunk, |v| decimal(v, 2)),
            spread(&s.cpu_ms_per_1000_orders, |v| decimal(v, 1)),
        );
    }
    let _ = writeln!(
        md,
        "\nEach step sends one chunk at a time; the last row is batch's own run, which keeps \
         several chunks in flight (`CHUNKS_IN_FLIGHT`). CPU counts every process involved \
         (PostgreSQL, the services, their sidecars, and the benchmark where it is the client)."
    );
    if !b.cpu.is_empty() {
        let _ = writeln!(
            md,
            "\nCPU per process during the end-to-end runs of {} orders{}:\n",
            thousands(b.orders as f64),
            b.machine_busy.map_or(String::new(), |busy| format!(
                " (all cores together {} busy)",
                percent(busy.median)
            ))
        );
        let _ = writeln!(md, "| process | cores busy | CPU ms per 1,000 orders |");
        let _ = writeln!(md, "| --- | ---: | ---: |");
        for c in &b.cpu {
            let _ = writeln!(
                md,
                "| {} | {} | {} |",
                c.process,
                spread(&c.cores, |v| decimal(v, 2)),
                spread(&c.ms_per_1000_orders, |v| decimal(v, 1)),
            );
        }
    }
    md.push('\n');

    let o = &report.overhead;
    let _ = writeln!(
        md,
        "## 3. Sidecar overhead: `POST /orders` with one order\n\n{} requests per run and \
         path, each a new order. Direct: to order-processor's port with its app token. \
         Sidecars: to batch's sidecar, `/v1.0/invoke/order-processor/method/orders`. Both \
         store the order through order-processor's sidecar's binding, so the difference is \
         the two sidecars' service invocation. Latencies in ms.\n",
        thousands(o.requests_per_run as f64)
    );
    let _ = writeln!(
        md,
        "| concurrency | path | p50 | p90 | p99 | requests/s |\n| ---: | --- | ---: | ---: | ---: | ---: |"
    );
    for l in &o.levels {
        for (name, p) in [("direct", &l.direct), ("two sidecars", &l.sidecars)] {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} |",
                l.concurrency,
                name,
                spread(&p.p50, |v| decimal(v, 2)),
                spread(&p.p90, |v| decimal(v, 2)),
                spread(&p.p99, |v| decimal(v, 2)),
                spread(&p.requests_per_second, thousands),
            );
        }
        let _ = writeln!(
            md,
            "| {} | **added** | **{}** | **{}** | **{}** | |",
            l.concurrency,
            spread(&l.added_p50, |v| decimal(v, 2)),
            spread(&l.added_p90, |v| decimal(v, 2)),
            spread(&l.added_p99, |v| decimal(v, 2)),
        );
    }
    let _ = writeln!(
        md,
        "| | Dapr's published figure | | {} | {} | |\n\n{} ([source]({})). Here: no mTLS \
         (no Sentry locally), tracing sampled at 1 without an exporter (`components/config.yaml`), \
         closed-loop clients, everything on one {}-core machine.\n",
        decimal(o.published.p90_ms, 2),
        decimal(o.published.p99_ms, 2),
        o.published.conditions,
        o.published.source,
        env.cores
    );

    let f = &report.footprint;
    let _ = writeln!(md, "## 4. Footprint\n");
    let _ = writeln!(
        md,
        "| process | binary (stripped?) | ready after start, ms | idle | peak ({} orders) | idle after |",
        thousands(f.peak_during_orders as f64)
    );
    let _ = writeln!(md, "| --- | ---: | ---: | ---: | ---: | ---: |");
    for s in &f.services {
        let _ = writeln!(
            md,
            "| {} | {} ({}) | {} | {} | {} | {} |",
            s.name,
            megabytes(s.binary_bytes as f64),
            if s.binary_stripped { "yes" } else { "no" },
            spread(&s.ready_ms, |v| decimal(v, 1)),
            megabytes(s.memory.idle_kib as f64 * 1024.0),
            spread(&s.memory.peak_kib, |v| megabytes(v * 1024.0)),
            megabytes(s.memory.after_kib as f64 * 1024.0),
        );
    }
    for m in &f.sidecars {
        let _ = writeln!(
            md,
            "| {} (context, not a target) | | | {} | {} | {} |",
            m.name,
            megabytes(m.idle_kib as f64 * 1024.0),
            spread(&m.peak_kib, |v| megabytes(v * 1024.0)),
            megabytes(m.after_kib as f64 * 1024.0),
        );
    }
    let _ = writeln!(
        md,
        "\nMemory is resident set size (MB = 10^6 bytes). Peak: {}. Ready: from spawning the \
         process (its sidecar already running) to the first `/readyz` that answers 200, \
         polled every millisecond.\n",
        f.peak_method
    );

    let g = &report.gap;
    let _ = writeln!(
        md,
        "## What would close the gap: batch's path, bigger chunks, several in flight\n\n\
         {} orders through batch's sidecar and order-processor's sidecar, sent by the \
         benchmark in chunks of several sizes with several in flight, as batch can be set \
         to (`CHUNK_SIZE`, `CHUNKS_IN_FLIGHT`): what each setting is worth on this path. \
         Against COPY of the same number of rows.\n",
        thousands(g.orders as f64)
    );
    let _ = writeln!(
        md,
        "| chunk size | in flight | orders/s | of COPY | CPU ms per 1,000 orders | cores busy |"
    );
    let _ = writeln!(md, "| ---: | ---: | ---: | ---: | ---: | ---: |");
    for r in &g.results {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} |",
            r.chunk_size,
            r.in_flight,
            spread(&r.orders_per_second, thousands),
            spread(&r.vs_copy, percent),
            spread(&r.cpu_ms_per_1000_orders, |v| decimal(v, 1)),
            spread(&r.machine_busy, percent),
        );
    }
    md.push('\n');

    let c = &report.chunks;
    let _ = writeln!(
        md,
        "## 5. Chunk size: end to end, {} orders\n",
        thousands(c.orders as f64)
    );
    let _ = writeln!(md, "| chunk size | orders/s |\n| ---: | ---: |");
    for r in &c.results {
        let _ = writeln!(
            md,
            "| {}{} | {} |",
            r.chunk_size,
            if r.chunk_size == c.default_chunk_size {
                " (default)"
            } else {
                ""
            },
            spread(&r.orders_per_second, thousands)
        );
    }
    if let (Some(best), Some(default)) = (c.best(), c.default_result()) {
        let gain = best.orders_per_second.median / default.orders_per_second.median - 1.0;
        let _ = writeln!(
            md,
            "\nFastest: chunks of {} ({} orders/s), {} against the default of {}.",
            best.chunk_size,
            thousands(best.orders_per_second.median),
            if best.chunk_size == c.default_chunk_size {
                "which is the default".to_owned()
            } else {
                format!("{} faster", percent(gain))
            },
            c.default_chunk_size
        );
    }
    let l = &report.load;
    let run = &l.sustained;
    let _ = writeln!(
        md,
        "\n## 6. Load: sustained `POST /orders` through both sidecars\n\n\
         One new order per request, to batch's sidecar (`/v1.0/invoke/order-processor/method/orders`), \
         on loopback. A probe of {} s per level finds the concurrency with the highest rate \
         and no failures; then {} s (at most {} orders) at that level. Afterwards the orders \
         answered 2xx are counted in the table: a missing one is lost.\n",
        l.probe_seconds,
        l.seconds,
        thousands(l.max_orders as f64)
    );
    let _ = writeln!(md, "| workers | requests/s | failed |");
    let _ = writeln!(md, "| ---: | ---: | ---: |");
    for p in &l.probe {
        let _ = writeln!(
            md,
            "| {} | {} | {} |",
            p.concurrency,
            thousands(p.rate),
            p.errors
        );
    }
    let _ = writeln!(
        md,
        "\nSustained with {} workers for {} s: {} requests answered 2xx, {}/s (slowest whole \
         second: {}), {} failed, {} lost; latency p50 {} ms, p90 {} ms, p99 {} ms; all cores \
         {} busy.",
        run.concurrency,
        decimal(run.seconds, 1),
        thousands(run.ok as f64),
        thousands(run.rate),
        thousands(run.slowest_second as f64),
        run.errors,
        run.lost,
        decimal(run.p50_ms, 2),
        decimal(run.p90_ms, 2),
        decimal(run.p99_ms, 2),
        percent(run.machine_busy)
    );
    let _ = writeln!(md);
    crate::export::render(&mut md, &report.trace_export);

    md
}

fn spread(s: &Spread, format: impl Fn(f64) -> String) -> String {
    if s.runs <= 1 {
        format(s.median)
    } else {
        format!("{} ({}–{})", format(s.median), format(s.min), format(s.max))
    }
}

fn decimal(value: f64, places: usize) -> String {
    format!("{value:.places$}")
}

fn signed(value: f64) -> String {
    format!("{value:+.1}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(median: f64) -> Spread {
        Spread {
            median,
            min: median * 0.9,
            max: median * 1.1,
            runs: 3,
        }
    }

    fn size(orders: usize, e2e: f64, copy: f64) -> SizeResult {
        SizeResult {
            orders,
            end_to_end: s(e2e),
            end_to_end_seconds: s(orders as f64 / e2e),
            batch_run_seconds: s(orders as f64 / e2e),
            copy: s(copy),
            insert: s(copy / 2.0),
            vs_copy: s(e2e / copy),
            vs_insert: s(e2e / copy * 2.0),
        }
    }

    fn step(name: &str, in_flight: usize, ms: f64) -> Step {
        Step {
            name: name.to_owned(),
            path: String::new(),
            in_flight,
            orders_per_second: s(500.0 / ms * 1000.0),
            ms_per_chunk: s(ms),
            cpu_ms_per_1000_orders: s(10.0),
        }
    }

    fn load(errors: u64, lost: i64) -> Load {
        Load {
            seconds: 60,
            probe_seconds: 3,
            max_orders: 2_000_000,
            probe: vec![LoadProbe {
                concurrency: 4,
                rate: 900.0,
                errors: 0,
            }],
            sustained: LoadRun {
                concurrency: 4,
                seconds: 60.0,
                ok: 54_000,
                errors,
                lost,
                rate: 900.0,
                slowest_second: 850,
                p50_ms: 4.0,
                p90_ms: 6.0,
                p99_ms: 9.0,
                machine_busy: 0.95,
            },
        }
    }

    #[test]
    fn a_load_without_failures_or_losses_meets_its_target_and_any_of_either_misses_it() {
        assert_eq!(load_target(&load(0, 0)).verdict, Verdict::Met);
        assert_eq!(load_target(&load(1, 0)).verdict, Verdict::Missed);
        assert_eq!(load_target(&load(0, 1)).verdict, Verdict::Missed);
        assert!(
            load_target(&load(0, 0))
                .measured
                .contains("54,000 requests at 900/s")
        );
    }

    fn gap() -> Gap {
        Gap {
            orders: 100_000,
            results: vec![GapResult {
                chunk_size: 2000,
                in_flight: 4,
                orders_per_second: s(125_000.0),
                vs_copy: s(0.3125),
                cpu_ms_per_1000_orders: s(12.0),
                machine_busy: s(0.9),
            }],
        }
    }

    fn breakdown() -> Breakdown {
        Breakdown {
            cores: 2,
            orders: 100_000,
            chunk_size: 500,
            steps: vec![
                step("sql", 1, 5.0),
                step("binding", 1, 8.0),
                step("app", 1, 9.0),
                step("sidecars", 1, 11.0),
                step("batch", 1, 12.0),
            ],
            cpu: vec![
                CpuUse {
                    process: "postgres".to_owned(),
                    cores: s(0.7),
                    ms_per_1000_orders: s(10.0),
                },
                CpuUse {
                    process: crate::measure::OTHERS.to_owned(),
                    cores: s(0.5),
                    ms_per_1000_orders: s(8.0),
                },
            ],
            stack_cpu_ms_per_1000_orders: Some(s(20.0)),
            machine_busy: Some(s(0.6)),
        }
    }

    fn footprint(peak_kib: f64, ready_ms: f64) -> Footprint {
        Footprint {
            services: vec![ServiceFootprint {
                name: "batch".to_owned(),
                binary_bytes: 5_000_000,
                binary_stripped: true,
                ready_ms: s(ready_ms),
                memory: Memory {
                    name: "batch".to_owned(),
                    idle_kib: 4000,
                    peak_kib: Spread {
                        median: peak_kib,
                        min: peak_kib,
                        max: peak_kib,
                        runs: 3,
                    },
                    after_kib: 5000,
                },
            }],
            sidecars: vec![],
            peak_during_orders: 100_000,
            peak_method: "VmHWM".to_owned(),
        }
    }

    fn overhead() -> Overhead {
        let p = PathLatency {
            p50: s(1.0),
            p90: s(2.0),
            p99: s(3.0),
            requests_per_second: s(900.0),
        };
        Overhead {
            requests_per_run: 1000,
            levels: vec![Level {
                concurrency: 1,
                direct: p.clone(),
                sidecars: p,
                added_p50: s(0.5),
                added_p90: s(0.8),
                added_p99: s(1.2),
            }],
            published: published_overhead(),
        }
    }

    #[test]
    fn a_slow_end_to_end_run_is_a_missed_target_with_its_reasons() {
        let targets = evaluate(
            &[size(100_000, 40_000.0, 400_000.0)],
            &breakdown(),
            &gap(),
            &overhead(),
            &footprint(10_000.0, 20.0),
            &load(0, 0),
        );
        let e2e = &targets[0];
        assert_eq!(e2e.verdict, Verdict::Missed);
        assert!(e2e.measured.starts_with("10.0 %"), "{}", e2e.measured);
        assert!(
            e2e.note.contains("averages 12.0 ms per chunk"),
            "{}",
            e2e.note
        );
        assert!(
            e2e.note.contains("Dapr's PostgreSQL binding adds +3.0 ms"),
            "{}",
            e2e.note
        );
        // 2 cores at 20 ms of CPU per 1,000 orders: at most 100,000 orders/s, 25 % of COPY.
        let cap = "at most 100,000 orders/s, 25.0 % of COPY";
        assert!(e2e.note.contains(cap), "{}", e2e.note);
        let others = "0.50 cores of it by other processes";
        assert!(e2e.note.contains(others), "{}", e2e.note);
        let gap = "chunks of 2000 with 4 in flight";
        assert!(e2e.note.contains(gap), "{}", e2e.note);
    }

    #[test]
    fn a_fast_enough_run_meets_the_target_without_excuses() {
        let targets = evaluate(
            &[size(100_000, 150_000.0, 400_000.0)],
            &breakdown(),
            &gap(),
            &overhead(),
            &footprint(10_000.0, 20.0),
            &load(0, 0),
        );
        assert_eq!(targets[0].verdict, Verdict::Met);
        assert!(targets[0].note.is_empty());
    }

    #[test]
    fn a_quick_run_without_the_large_file_does_not_judge_it() {
        let targets = evaluate(
            &[size(10_000, 40_000.0, 400_000.0)],
            &breakdown(),
            &gap(),
            &overhead(),
            &footprint(10_000.0, 20.0),
            &load(0, 0),
        );
        assert_eq!(targets[0].verdict, Verdict::NotMeasured);
    }

    #[test]
    fn memory_and_start_up_are_judged_against_their_limits() {
        let targets = evaluate(
            &[size(100_000, 40_000.0, 400_000.0)],
            &breakdown(),
            &gap(),
            &overhead(),
            &footprint(25_000.0, 150.0),
            &load(0, 0),
        );
        let by_name = |n: &str| targets.iter().find(|t| t.name.contains(n)).unwrap();
        assert_eq!(by_name("resident memory").verdict, Verdict::Missed);
        assert_eq!(by_name("readyz").verdict, Verdict::Missed);
        assert_eq!(by_name("sidecars").verdict, Verdict::Comparison);
    }

    #[test]
    fn the_markdown_shows_every_section_and_the_verdicts() {
        let throughput = vec![size(100_000, 40_000.0, 400_000.0)];
        let report = Report {
            generated_at: "2026-01-01T00:00:00Z".to_owned(),
            mode: "full".to_owned(),
            took_seconds: 600.0,
            environment: Environment {
                cpu: "CPU".to_owned(),
                cores: 2,
                memory_gib: 24.0,
                os: "Debian".to_owned(),
                kernel: "6".to_owned(),
                rust: "rustc 1.95.0".to_owned(),
                dapr: "1.18.2".to_owned(),
                postgres: "15".to_owned(),
                commit: "abc".to_owned(),
                load_at_start: "0.1 0.1 0.1".to_owned(),
                busy_before_start: 0.01,
            },
            settings: Settings {
                seed: 1,
                runs: 3,
                sizes: vec![100_000],
                default_chunk_size: 500,
                postgres: vec![("fsync".to_owned(), "off".to_owned())],
                floor_transport: "a socket".to_owned(),
                end_to_end: String::new(),
            },
            targets: evaluate(
                &throughput,
                &breakdown(),
                &gap(),
                &overhead(),
                &footprint(10_000.0, 20.0),
                &load(0, 0),
            ),
            throughput,
            breakdown: breakdown(),
            overhead: overhead(),
            footprint: footprint(10_000.0, 20.0),
            gap: gap(),
            load: load(0, 0),
            trace_export: trace_export(),
            chunks: ChunkSweep {
                orders: 100_000,
                default_chunk_size: 500,
                results: vec![
                    ChunkResult {
                        chunk_size: 500,
                        orders_per_second: s(40_000.0),
                    },
                    ChunkResult {
                        chunk_size: 2000,
                        orders_per_second: s(50_000.0),
                    },
                ],
            },
        };
        let md = markdown(&report);
        for heading in [
            "## Targets",
            "## 1–2.",
            "## Where the time goes",
            "## 3.",
            "## 4.",
            "## 5.",
            "## What would close the gap",
            "## 7. Trace export",
        ] {
            assert!(md.contains(heading), "{heading} missing:\n{md}");
        }
        assert!(md.contains("**missed**"));
        assert!(md.contains("`fsync=off`"));
        assert!(md.contains("40,000 (36,000–44,000)"));
        assert!(md.contains("Fastest: chunks of 2000 (50,000 orders/s), 25.0 % faster"));
        let json = serde_json::to_string(&report).unwrap();
        let back: Report = serde_json::from_str(&json).unwrap();
        assert_eq!(back.targets, report.targets);
        assert_eq!(back.chunks.best().unwrap().chunk_size, 2000);
    }

    fn trace_export() -> TraceExport {
        let runs = |rate: f64| crate::export::ExportRuns {
            orders_per_second: s(rate),
            peak_kib: vec![("batch".to_owned(), s(9_000.0))],
            ready_ms: vec![("batch".to_owned(), s(8.0))],
        };
        TraceExport {
            orders: 100_000,
            chunk_size: 2000,
            off: runs(50_000.0),
            on: runs(45_000.0),
            spans_per_run: 300,
        }
    }

    #[test]
    fn the_cost_of_trace_export_is_stated() {
        let export = trace_export();
        assert!((export.throughput_cost() - 0.1).abs() < 1e-9);
        let mut md = String::new();
        crate::export::render(&mut md, &export);
        assert!(md.contains("within the runs' spread"), "{md}");
        let mut apart = export.clone();
        apart.on.orders_per_second = s(30_000.0);
        let mut md = String::new();
        crate::export::render(&mut md, &apart);
        assert!(md.contains("costs **40.0 %**"), "{md}");
        assert!(
            crate::export::targets(&export)
                .iter()
                .all(|t| t.verdict == Verdict::Met)
        );
    }

    #[test]
    fn numbers_are_written_for_people() {
        assert_eq!(thousands(1234567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(-1000.0), "-1,000");
        assert_eq!(percent(0.2534), "25.3 %");
        assert_eq!(megabytes(12_345_678.0), "12.3 MB");
    }
}
