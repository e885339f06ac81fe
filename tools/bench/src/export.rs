//! 7: what exporting traces costs. Two stacks of their own, one after the other on the
//! same machine: one exporting nothing, one with both services and both sidecars exporting
//! every span to a real collector (Jaeger v2, `JAEGER`). Each gets the same files of the
//! largest size and the same restarts, so the difference is the export's: throughput,
//! the services' peak memory and their start-up time.

use std::collections::HashMap;
use std::fmt::Write as _;

use anyhow::{Context, ensure};
use serde::{Deserialize, Serialize};
use testkit::jaeger::Jaeger;
use testkit::stack::Stack;

use crate::measure::{Bench, SERVICES};
use crate::orders;
use crate::stats::Spread;
use crate::targets::{
    TARGET_PEAK_BYTES, TARGET_READY_MS, Target, Verdict, megabytes, percent, thousands,
};
use crate::{Plan, bench_stack, progress, spread};

/// The section's phase in [`Plan::file_seed`]: files no other section sends.
const PHASE: u64 = 7;

/// Export off beside export on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceExport {
    /// Orders per run.
    pub orders: usize,
    /// Orders per chunk (the default).
    pub chunk_size: usize,
    /// Nothing exported.
    pub off: ExportRuns,
    /// Every span of both services and both sidecars exported over OTLP/gRPC.
    pub on: ExportRuns,
    /// Spans in the trace of one run with export on (all four processes).
    pub spans_per_run: usize,
}

/// One stack's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportRuns {
    /// End to end, orders per second.
    pub orders_per_second: Spread,
    /// Per service: peak resident memory during the runs, KiB.
    pub peak_kib: Vec<(String, Spread)>,
    /// Per service: spawn to `/readyz` 200, ms.
    pub ready_ms: Vec<(String, Spread)>,
}

impl TraceExport {
    /// How much slower end to end is with export on, as a fraction (medians).
    pub fn throughput_cost(&self) -> f64 {
        1.0 - self.on.orders_per_second.median / self.off.orders_per_second.median
    }
}

/// Measures both stacks; `chunk_size` is the default one.
pub async fn measure(plan: &Plan, chunk_size: usize) -> anyhow::Result<TraceExport> {
    let orders = plan.largest();
    let (off, _) = runs(plan, chunk_size, None).await?;
    let jaeger = Jaeger::start().await;
    let (on, spans_per_run) = runs(plan, chunk_size, Some(&jaeger)).await?;
    Ok(TraceExport {
        orders,
        chunk_size,
        off,
        on,
        spans_per_run,
    })
}

/// Starts a stack (exporting to `jaeger` when given), restarts each service `plan.runs`
/// times, then sends `plan.runs` files of the largest size; returns its figures and the
/// number of spans in the last run's trace (0 without export).
async fn runs(
    plan: &Plan,
    chunk_size: usize,
    jaeger: Option<&Jaeger>,
) -> anyhow::Result<(ExportRuns, usize)> {
    let label = if jaeger.is_some() { "on" } else { "off" };
    progress(format!("trace export {label}: starting a stack of its own"));
    let stack = Stack::start(bench_stack(
        orders::orders_file(&orders::generate(plan.file_seed(PHASE, 10, 0), 10)?)?,
        chunk_size,
        jaeger.map(|j| j.otlp_grpc.clone()),
    ))
    .await;
    let mut bench = Bench::new(stack).await?;
    let ready = bench.ready_times(plan.runs).await?;
    bench.warm_paths().await?;
    let size = plan.largest();
    let warm = orders::generate(plan.file_seed(PHASE, 1_000, 0), 1_000)?;
    bench.end_to_end(&warm, false).await?;

    let (mut rates, mut peaks): (Vec<f64>, HashMap<String, Vec<f64>>) = Default::default();
    for run in 0..plan.runs {
        progress(format!(
            "trace export {label}: {size} orders, run {} of {}",
            run + 1,
            plan.runs
        ));
        let orders = orders::generate(plan.file_seed(PHASE, size, run), size)?;
        let sample = bench.end_to_end(&orders, true).await?;
        rates.push(size as f64 / sample.seconds);
        for app in SERVICES {
            let peak = sample
                .peaks
                .get(app)
                .with_context(|| format!("no memory peak of {app}"))?;
            peaks.entry(app.to_owned()).or_default().push(*peak as f64);
        }
    }
    let spans = match jaeger {
        Some(jaeger) => last_trace_spans(&bench, jaeger).await?,
        None => 0,
    };
    let per_service = |values: &HashMap<String, Vec<f64>>, what: &str| {
        SERVICES
            .iter()
            .map(|app| {
                let values = values.get(*app).map_or(&[][..], Vec::as_slice);
                Ok(((*app).to_owned(), spread(values, what)?))
            })
            .collect::<anyhow::Result<Vec<_>>>()
    };
    let ready: HashMap<String, Vec<f64>> = ready
        .into_iter()
        .map(|(app, values)| (app.to_owned(), values))
        .collect();
    Ok((
        ExportRuns {
            orders_per_second: spread(&rates, "end to end")?,
            peak_kib: per_service(&peaks, "peak memory")?,
            ready_ms: per_service(&ready, "start-up")?,
        },
        spans,
    ))
}

/// Spans of the last run's trace in the collector, once all have arrived: the count has
/// not grown for 10 s, twice the interval at which the services and the sidecars export.
async fn last_trace_spans(bench: &Bench, jaeger: &Jaeger) -> anyhow::Result<usize> {
    let trace_id = bench
        .stack
        .summaries()
        .last()
        .and_then(|summary| summary["trace_id"].as_str().map(str::to_owned))
        .context("batch's last summary line has no trace_id")?;
    let (mut last, mut steady) = (0, 0);
    for _ in 0..120 {
        let count = jaeger.trace(&trace_id).await.len();
        steady = if count > 0 && count == last {
            steady + 1
        } else {
            0
        };
        if steady == 20 {
            return Ok(count);
        }
        last = count;
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    ensure!(last > 0, "the collector never received trace {trace_id}");
    Ok(last)
}

/// The targets with export on: the same memory and start-up limits as without.
pub fn targets(export: &TraceExport) -> Vec<Target> {
    let mut targets = Vec::new();
    for (app, peak) in &export.on.peak_kib {
        let bytes = peak.max * 1024.0;
        targets.push(Target {
            name: format!("{app}: resident memory at peak, export on"),
            limit: "under 20 MB".to_owned(),
            measured: format!(
                "{} (highest of {} runs of {} orders)",
                megabytes(bytes),
                peak.runs,
                thousands(export.orders as f64)
            ),
            verdict: if bytes < TARGET_PEAK_BYTES {
                Verdict::Met
            } else {
                Verdict::Missed
            },
            note: String::new(),
        });
    }
    for (app, ready) in &export.on.ready_ms {
        targets.push(Target {
            name: format!("{app}: start to /readyz 200, export on"),
            limit: "under 100 ms".to_owned(),
            measured: format!("{:.1} ms (median of {})", ready.median, ready.runs),
            verdict: if ready.median < TARGET_READY_MS {
                Verdict::Met
            } else {
                Verdict::Missed
            },
            note: String::new(),
        });
    }
    targets
}

/// The throughput cost, and whether the runs can tell it from their spread.
fn cost_in_words(export: &TraceExport) -> String {
    let (off, on) = (&export.off.orders_per_second, &export.on.orders_per_second);
    let cost = export.throughput_cost();
    if on.min <= off.max && off.min <= on.max {
        format!(
            "Export on changes the end-to-end rate by {} (medians), within the runs' spread: \
             **no cost this benchmark can measure**.",
            percent(-cost)
        )
    } else if cost > 0.0 {
        format!(
            "Export on costs **{}** of the end-to-end rate (medians).",
            percent(cost)
        )
    } else {
        format!(
            "Export on was **{}** faster end to end (medians), beyond the runs' spread.",
            percent(-cost)
        )
    }
}

/// Section 7 of the Markdown report.
pub fn render(md: &mut String, export: &TraceExport) {
    let range = |s: &Spread, f: &dyn Fn(f64) -> String| {
        if s.runs <= 1 {
            f(s.median)
        } else {
            format!("{} ({}–{})", f(s.median), f(s.min), f(s.max))
        }
    };
    let _ = writeln!(
        md,
        "## 7. Trace export: off and on\n\n\
         Two stacks of their own, one after the other, each sent the same {} files of {} \
         orders (chunks of {}): one exporting nothing, one with both services and both \
         sidecars exporting every span over OTLP/gRPC to Jaeger v2 on this machine ({} spans \
         in one run's trace). {}\n",
        export.off.orders_per_second.runs,
        thousands(export.orders as f64),
        export.chunk_size,
        thousands(export.spans_per_run as f64),
        cost_in_words(export)
    );
    let _ = writeln!(md, "| | export off | export on |");
    let _ = writeln!(md, "| --- | ---: | ---: |");
    let _ = writeln!(
        md,
        "| end to end, orders/s | {} | {} |",
        range(&export.off.orders_per_second, &thousands),
        range(&export.on.orders_per_second, &thousands)
    );
    for ((app, off), (_, on)) in export.off.peak_kib.iter().zip(&export.on.peak_kib) {
        let mb = |kib: f64| megabytes(kib * 1024.0);
        let _ = writeln!(
            md,
            "| {app}: peak memory | {} | {} |",
            range(off, &mb),
            range(on, &mb)
        );
    }
    for ((app, off), (_, on)) in export.off.ready_ms.iter().zip(&export.on.ready_ms) {
        let ms = |v: f64| format!("{v:.1} ms");
        let _ = writeln!(
            md,
            "| {app}: start to `/readyz` 200 | {} | {} |",
            range(off, &ms),
            range(on, &ms)
        );
    }
    let _ = writeln!(md);
}
