//! A quick measurement of batch's own work, not a check: the CPU time of whole runs of a
//! 100,000-order file (fingerprinting, reading, validating, chunking, writing the request
//! bodies) into a sink that answers at once, per 1,000 orders, and the peak memory of the
//! process. The orders look like the benchmark's (tools/bench): ascending ids, names with
//! apostrophes and non-ASCII letters, prices up to 9,999.99. Run it in release mode:
//!
//! ```text
//! cargo test --release -p batch --test cpu -- --ignored --nocapture
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::time::Instant;

use axum::body::Bytes;
use batch::Settings;
use batch::outcome::Reply;
use batch::runner::Runner;
use batch::send::OrderSink;
use batch::source::OrdersSource;
use batch::summary::Outcome;
use reqwest::StatusCode;

const ORDERS: usize = 100_000;
const RUNS: usize = 10;

const FIRST: [&str; 8] = [
    "John", "Zoë", "José", "Łukasz", "Anaïs", "Mei", "Ahmed", "Olga",
];
const LAST: [&str; 8] = [
    "Smith",
    "O'Brien",
    "Müller",
    "García",
    "Nguyễn",
    "Kowalski",
    "Dubois",
    "van der Berg",
];

/// Answers every chunk as stored; counts its orders by their opening braces (no name
/// holds one).
#[derive(Clone)]
struct Accepting;

impl OrderSink for Accepting {
    async fn send(&self, body: Bytes, _: &batch::send::TraceHeaders) -> Reply {
        let n = body.iter().filter(|&&b| b == b'{').count();
        let outcome = format!(r#"{{"received":{n},"inserted":{n},"unchanged":0,"conflicts":[]}}"#);
        Ok((StatusCode::OK, Bytes::from(outcome)))
    }
}

/// User and system CPU time of this process so far, in milliseconds.
fn cpu_ms() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    // Linux counts in USER_HZ, 100 per second everywhere it runs.
    ticks * 10.0
}

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn orders_file() -> tempfile::NamedTempFile {
    let mut file = std::io::BufWriter::new(tempfile::NamedTempFile::new().unwrap());
    file.write_all(b"{\"orders\":[").unwrap();
    let mut id = 1000i64;
    for i in 0..ORDERS {
        let cents = (i as i64 * 7919) % 1_000_000;
        let separator = if i == 0 { "" } else { "," };
        write!(
            file,
            r#"{separator}{{"orderid":{id},"customer":"{} {}","price":{}.{:02}}}"#,
            FIRST[i % 8],
            LAST[(i / 8) % 8],
            cents / 100,
            cents % 100
        )
        .unwrap();
        id += 1 + (i as i64 % 3);
    }
    file.write_all(b"]}").unwrap();
    file.into_inner().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run it in release mode, with --nocapture"]
async fn cpu_per_thousand_orders_of_a_whole_run() {
    let file = orders_file();
    let bytes = std::fs::metadata(file.path()).unwrap().len();
    let settings = Settings {
        chunk_size: 2000,
        chunk_bytes: batch::config::DEFAULT_CHUNK_BYTES,
        in_flight: 4,
        max_retries: 0,
        retry_delay: std::time::Duration::from_millis(250),
        deadline: std::time::Duration::from_secs(600),
        block: batch::source::BLOCK_BYTES,
    };
    // One runner, as in the service; the file gets one more trailing space before each
    // run, so that it is another file and read whole (the writing is not counted).
    let runner = Runner::new(
        Accepting,
        OrdersSource::File(file.path().to_owned()),
        settings,
    );
    let (mut cpu, mut wall) = (0.0, std::time::Duration::ZERO);
    for _ in 0..RUNS {
        std::fs::OpenOptions::new()
            .append(true)
            .open(file.path())
            .unwrap()
            .write_all(b" ")
            .unwrap();
        let (before, started) = (cpu_ms(), Instant::now());
        let summary = runner.run("measure", None).await.unwrap();
        (cpu, wall) = (cpu + cpu_ms() - before, wall + started.elapsed());
        assert_eq!(
            (summary.outcome, summary.inserted + summary.already_present),
            (Outcome::Completed, ORDERS as u64)
        );
    }
    let per_thousand = cpu / RUNS as f64 / (ORDERS as f64 / 1000.0);
    let wall = wall.as_secs_f64() * 1000.0 / RUNS as f64;
    println!(
        "{ORDERS} orders ({bytes} bytes): {per_thousand:.3} ms CPU per 1,000 orders, \
         {wall:.1} ms per run, peak resident memory {:.1} MiB",
        peak_rss_kib() as f64 / 1024.0
    );
}
