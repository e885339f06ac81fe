//! The measurements against a running stack: end-to-end runs, the database's floor, the
//! same orders through fewer layers, single-order latencies with and without the sidecars,
//! start-up times, and the processes' memory and CPU while they work.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use common::order::Order;
use futures_util::{StreamExt, TryStreamExt};
use order_processor::binding::{DaprBinding, INSERT_SQL, OrderWriter, Params};
use rust_decimal::Decimal;
use secrecy::SecretString;
use sqlx::postgres::{PgPool, PgPoolOptions};
use testkit::stack::Stack;

use crate::orders;
use crate::procfs;
use crate::stats::{Latencies, Percentiles};

/// The processes the benchmark watches, by the names [`Stack::pid`] knows.
pub const SERVICES: [&str; 2] = ["batch", "order-processor"];
/// The sidecars, watched for context.
pub const SIDECARS: [&str; 2] = ["batch-daprd", "order-processor-daprd"];
/// The CPU row for every process that is not part of the stack or the benchmark.
pub const OTHERS: &str = "everything else on this machine";
/// Longest a single end-to-end run may take before the benchmark gives up.
const RUN_TIMEOUT: Duration = Duration::from_secs(600);

/// A running stack and the clients to measure it with.
pub struct Bench {
    /// The system under test.
    pub stack: Stack,
    /// How the floor connects to PostgreSQL, in words.
    pub floor_transport: String,
    http: reqwest::Client,
    probe: reqwest::Client,
    admin: PgPool,
    floor: PgPool,
    postmaster: u32,
    ticks_per_second: f64,
    next_id: AtomicI64,
}

/// One load run: single-order requests through both sidecars for a while.
#[derive(Debug, Clone)]
pub struct LoadSample {
    /// Workers sending at once.
    pub concurrency: usize,
    /// How long it ran.
    pub seconds: f64,
    /// Requests answered 2xx.
    pub ok: u64,
    /// Requests that failed (transport error or non-2xx).
    pub errors: u64,
    /// Orders of this load found in the table afterwards.
    pub stored: u64,
    /// Successful requests per second.
    pub rate: f64,
    /// Successful requests in the slowest whole second.
    pub slowest_second: u64,
    /// Latencies of the successful requests.
    pub latencies: Percentiles,
    /// CPU per process and how busy the machine was.
    pub cpu: CpuSample,
}

/// One end-to-end run.
#[derive(Debug, Clone)]
pub struct RunSample {
    /// Trigger to the run's answer (after which every row is committed), seconds.
    pub seconds: f64,
    /// The run's duration as batch's summary reports it, seconds.
    pub batch_seconds: f64,
    /// CPU per process and how busy the machine was, when watched.
    pub cpu: Option<CpuSample>,
    /// Peak resident memory per process in KiB, when watched.
    pub peaks: HashMap<String, u64>,
}

/// CPU used during one run.
#[derive(Debug, Clone)]
pub struct CpuSample {
    /// CPU seconds per process.
    pub seconds: Vec<(String, f64)>,
    /// Busy fraction of all cores.
    pub machine_busy: f64,
}

/// The paths a single order can take to order-processor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Straight to order-processor's port, with its app token.
    Direct,
    /// Through batch's sidecar and order-processor's sidecar.
    Sidecars,
}

/// The layers of the breakdown, from the bare statement up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer {
    /// order-processor's INSERT statement, straight through sqlx as the app's role.
    Sql,
    /// The same statement through order-processor's sidecar's PostgreSQL binding (gRPC).
    Binding,
    /// `POST /orders` straight to order-processor.
    App,
    /// `POST /orders` through both sidecars.
    Sidecars,
}

impl Bench {
    /// Wraps a started stack.
    pub async fn new(stack: Stack) -> anyhow::Result<Self> {
        let admin = PgPoolOptions::new()
            .max_connections(2)
            .connect(&stack.db.admin_url())
            .await
            .context("cannot connect to the stack's database as superuser")?;
        let backend: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&admin)
            .await?;
        let postmaster = procfs::parent(u32::try_from(backend)?)
            .context("cannot find PostgreSQL's server process (is it on this machine?)")?;
        let (floor, floor_transport) = floor_pool(&stack, &admin).await?;
        let http = reqwest::Client::builder().timeout(RUN_TIMEOUT).build()?;
        // Readiness probes open a new connection each time, as a fresh caller would.
        let probe = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .pool_max_idle_per_host(0)
            .build()?;
        Ok(Self {
            stack,
            floor_transport,
            http,
            probe,
            admin,
            floor,
            postmaster,
            ticks_per_second: procfs::ticks_per_second(),
            next_id: AtomicI64::new(1_000_000_000_000),
        })
    }

    /// A PostgreSQL setting, e.g. `fsync`.
    pub async fn setting(&self, name: &str) -> anyhow::Result<String> {
        Ok(sqlx::query_scalar("SELECT current_setting($1)")
            .bind(name)
            .fetch_one(&self.admin)
            .await?)
    }

    /// The pid of a stack process.
    pub fn pid(&self, name: &str) -> anyhow::Result<u32> {
        self.stack
            .pid(name)
            .with_context(|| format!("{name} is not running"))
    }

    async fn truncate(&self) -> anyhow::Result<()> {
        sqlx::query("TRUNCATE app.orders")
            .execute(&self.admin)
            .await?;
        Ok(())
    }

    async fn count(&self) -> anyhow::Result<i64> {
        Ok(sqlx::query_scalar("SELECT count(*) FROM app.orders")
            .fetch_one(&self.admin)
            .await?)
    }

    fn sidecar_url(&self, app_id: &str, method: &str) -> String {
        format!(
            "http://127.0.0.1:{}/v1.0/invoke/{app_id}/method/{method}",
            self.stack.batch.http
        )
    }

    /// Calls `/healthz` of both apps through batch's sidecar until both answer, so that
    /// the sidecars' connections to freshly started apps are in place.
    pub async fn warm_paths(&self) -> anyhow::Result<()> {
        for app in ["batch", "order-processor"] {
            let url = self.sidecar_url(app, "healthz");
            let mut attempts = 0;
            loop {
                let answer = self
                    .http
                    .get(&url)
                    .header("dapr-api-token", &self.stack.dapr_token)
                    .send()
                    .await;
                match answer {
                    Ok(r) if r.status().is_success() => break,
                    _ if attempts < 50 => attempts += 1,
                    Ok(r) => bail!("{app} through batch's sidecar answers {}", r.status()),
                    Err(error) => {
                        return Err(error).context(format!("{app} through batch's sidecar"));
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    }

    /// One batch run of `orders` from an empty table: writes the orders file, triggers a
    /// run through batch's sidecar and waits for its summary, then checks that every order
    /// is stored. With `watch`, also the CPU and peak memory of every process.
    pub async fn end_to_end(&self, orders: &[Order], watch: bool) -> anyhow::Result<RunSample> {
        let n = orders.len();
        std::fs::write(
            self.stack.dir.join("orders.json"),
            orders::orders_file(orders)?,
        )
        .context("cannot write the orders file")?;
        self.truncate().await?;
        let watched = if watch { self.watched()? } else { Vec::new() };
        let reset: Vec<bool> = watched
            .iter()
            .map(|(_, pid)| procfs::reset_peak(*pid))
            .collect();
        let sampler = RssSampler::start(&watched);
        let before = self.cpu_snapshot(&watched)?;

        let started = Instant::now();
        let response = self
            .http
            .post(self.sidecar_url("batch", "runs"))
            .header("dapr-api-token", &self.stack.dapr_token)
            .send()
            .await
            .context("triggering a run through batch's sidecar")?;
        let status = response.status();
        let body = response.text().await?;
        let seconds = started.elapsed().as_secs_f64();

        let after = self.cpu_snapshot(&watched)?;
        let mut peaks = sampler.stop().await;
        for ((name, pid), reset) in watched.iter().zip(reset) {
            if reset && let Ok(hwm) = procfs::status_kib(*pid, "VmHWM") {
                let peak = peaks.entry(name.clone()).or_insert(0);
                *peak = (*peak).max(hwm);
            }
        }
        ensure!(status.is_success(), "the run answered {status}: {body}");
        let summary: serde_json::Value =
            serde_json::from_str(&body).with_context(|| format!("the run answered {body}"))?;
        ensure!(
            summary["outcome"] == "completed" && summary["inserted"].as_u64() == Some(n as u64),
            "the run did not store all {n} orders: {summary}"
        );
        let stored = self.count().await?;
        ensure!(stored == n as i64, "{stored} rows stored, not {n}");
        let batch_seconds = summary["duration_ms"].as_f64().unwrap_or(f64::NAN) / 1000.0;
        let cpu = watch.then(|| self.cpu_delta(&before, &after));
        Ok(RunSample {
            seconds,
            batch_seconds,
            cpu,
            peaks,
        })
    }

    fn watched(&self) -> anyhow::Result<Vec<(String, u32)>> {
        SERVICES
            .iter()
            .chain(SIDECARS.iter())
            .map(|name| Ok(((*name).to_owned(), self.pid(name)?)))
            .collect()
    }

    fn cpu_snapshot(&self, watched: &[(String, u32)]) -> anyhow::Result<CpuSnapshot> {
        let mut ticks = Vec::new();
        for (name, pid) in watched {
            ticks.push((name.clone(), procfs::cpu_ticks(*pid, false)?));
        }
        if !watched.is_empty() {
            ticks.push((
                "postgres (all its processes)".to_owned(),
                procfs::tree_cpu_ticks(self.postmaster)?,
            ));
            ticks.push((
                "the benchmark itself".to_owned(),
                procfs::cpu_ticks(std::process::id(), false)?,
            ));
        }
        Ok(CpuSnapshot {
            ticks,
            machine: procfs::machine_ticks()?,
        })
    }

    fn cpu_delta(&self, before: &CpuSnapshot, after: &CpuSnapshot) -> CpuSample {
        let mut seconds: Vec<(String, f64)> = before
            .ticks
            .iter()
            .zip(&after.ticks)
            .map(|((name, a), (_, b))| {
                (
                    name.clone(),
                    b.saturating_sub(*a) as f64 / self.ticks_per_second,
                )
            })
            .collect();
        let busy = after.machine.0.saturating_sub(before.machine.0) as f64;
        let total = after.machine.1.saturating_sub(before.machine.1) as f64;
        // /proc/stat counts in the same clock ticks as /proc/<pid>/stat.
        let ours: f64 = seconds.iter().map(|(_, s)| s).sum();
        seconds.push((
            OTHERS.to_owned(),
            (busy / self.ticks_per_second - ours).max(0.0),
        ));
        CpuSample {
            seconds,
            machine_busy: if total > 0.0 { busy / total } else { f64::NAN },
        }
    }

    /// Seconds to `COPY` the orders into a fresh table like `app.orders`.
    pub async fn copy_floor(&self, orders: &[Order]) -> anyhow::Result<f64> {
        let data = orders::csv(orders);
        self.fresh_floor_table().await?;
        let mut conn = self.floor.acquire().await?;
        let started = Instant::now();
        let mut copy = conn
            .copy_in_raw(
                "COPY bench_floor.orders (orderid, customer, price) FROM STDIN (FORMAT csv)",
            )
            .await?;
        copy.send(data.as_slice()).await?;
        let rows = copy.finish().await?;
        let seconds = started.elapsed().as_secs_f64();
        drop(conn);
        ensure!(rows == orders.len() as u64, "COPY stored {rows} rows");
        self.drop_floor_table().await?;
        Ok(seconds)
    }

    /// Seconds to store the orders with one multi-row INSERT into a fresh table.
    pub async fn insert_floor(&self, orders: &[Order]) -> anyhow::Result<f64> {
        let ids: Vec<i64> = orders.iter().map(|o| o.orderid()).collect();
        let customers: Vec<String> = orders.iter().map(|o| o.customer().to_owned()).collect();
        let prices: Vec<Decimal> = orders.iter().map(|o| o.price()).collect();
        self.fresh_floor_table().await?;
        let started = Instant::now();
        let done = sqlx::query(
            "INSERT INTO bench_floor.orders (orderid, customer, price) \
             SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::numeric[])",
        )
        .bind(ids)
        .bind(customers)
        .bind(prices)
        .execute(&self.floor)
        .await?;
        let seconds = started.elapsed().as_secs_f64();
        ensure!(
            done.rows_affected() == orders.len() as u64,
            "INSERT stored {} rows",
            done.rows_affected()
        );
        self.drop_floor_table().await?;
        Ok(seconds)
    }

    async fn fresh_floor_table(&self) -> anyhow::Result<()> {
        sqlx::raw_sql(
            "CREATE SCHEMA IF NOT EXISTS bench_floor; \
             DROP TABLE IF EXISTS bench_floor.orders; \
             CREATE TABLE bench_floor.orders (LIKE app.orders INCLUDING ALL)",
        )
        .execute(&self.admin)
        .await?;
        Ok(())
    }

    async fn drop_floor_table(&self) -> anyhow::Result<()> {
        sqlx::query("DROP TABLE bench_floor.orders")
            .execute(&self.admin)
            .await?;
        Ok(())
    }

    /// Seconds to store `orders` in chunks of `chunk_size` through `layer`, with
    /// `in_flight` chunks at once, from an empty table, and the CPU every process used
    /// meanwhile; checks every order is stored.
    pub async fn layer(
        &self,
        layer: Layer,
        orders: &[Order],
        chunk_size: usize,
        in_flight: usize,
    ) -> anyhow::Result<(f64, CpuSample)> {
        let bodies = orders::chunk_bodies(orders, chunk_size)?;
        let payloads: Vec<Payload> = orders
            .chunks(chunk_size.max(1))
            .zip(bodies)
            .map(|(chunk, body)| Payload::new(chunk, body))
            .collect::<anyhow::Result<_>>()?;
        self.truncate().await?;
        let sender = LayerSender::new(self, layer, in_flight).await?;
        let watched = self.watched()?;
        let before = self.cpu_snapshot(&watched)?;
        let started = Instant::now();
        futures_util::stream::iter(payloads.iter().map(|payload| sender.send(payload)))
            .buffer_unordered(in_flight.max(1))
            .try_collect::<Vec<()>>()
            .await?;
        let seconds = started.elapsed().as_secs_f64();
        let after = self.cpu_snapshot(&watched)?;
        sender.close().await;
        let stored = self.count().await?;
        ensure!(
            stored == orders.len() as i64,
            "{layer:?}: {stored} rows stored, not {}",
            orders.len()
        );
        Ok((seconds, self.cpu_delta(&before, &after)))
    }

    /// `requests` single-order `POST /orders` along `route` by `concurrency` workers:
    /// their latencies and the requests per second.
    pub async fn single_orders(
        &self,
        route: Route,
        concurrency: usize,
        requests: usize,
    ) -> anyhow::Result<(Percentiles, f64)> {
        let (url, token) = match route {
            Route::Direct => (
                format!("http://127.0.0.1:{}/orders", self.stack.op.app),
                &self.stack.app_token,
            ),
            Route::Sidecars => (
                self.sidecar_url("order-processor", "orders"),
                &self.stack.dapr_token,
            ),
        };
        let issued = AtomicUsize::new(0);
        let worker = || async {
            let mut latencies = Latencies::new()?;
            while issued.fetch_add(1, Ordering::Relaxed) < requests {
                let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                let order = Order::new(0, id, "Bench Customer", Decimal::new(1234, 2))
                    .map_err(|e| anyhow::anyhow!("invalid order: {e:?}"))?;
                let body = serde_json::to_vec(&order)?;
                let started = Instant::now();
                let response = self
                    .http
                    .post(&url)
                    .header("dapr-api-token", token)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body)
                    .send()
                    .await?;
                let status = response.status();
                let answer = response.bytes().await?;
                latencies.record(started.elapsed());
                ensure!(
                    status.is_success(),
                    "{route:?}: POST /orders answered {status}: {}",
                    String::from_utf8_lossy(&answer)
                );
            }
            anyhow::Ok(latencies)
        };
        let started = Instant::now();
        let workers =
            futures_util::future::try_join_all((0..concurrency.max(1)).map(|_| worker())).await?;
        let seconds = started.elapsed().as_secs_f64();
        let mut all = Latencies::new()?;
        for w in &workers {
            all.merge(w)?;
        }
        Ok((all.percentiles(), all.count() as f64 / seconds))
    }

    /// Single-order `POST /orders` through both sidecars by `concurrency` workers, for
    /// `seconds` or until `max_orders` were sent, whichever comes first. Errors are counted,
    /// not fatal; afterwards the stored rows of this load are counted, so a lost order
    /// shows as `ok - stored`.
    pub async fn sustained_load(
        &self,
        concurrency: usize,
        seconds: u64,
        max_orders: usize,
    ) -> anyhow::Result<LoadSample> {
        let url = self.sidecar_url("order-processor", "orders");
        let token = &self.stack.dapr_token;
        let first_id = self.next_id.load(Ordering::Relaxed);
        let issued = AtomicUsize::new(0);
        let errors = AtomicUsize::new(0);
        let per_second: Vec<AtomicU64> = (0..seconds.max(1)).map(|_| AtomicU64::new(0)).collect();
        let started = Instant::now();
        let deadline = started + Duration::from_secs(seconds);
        let watched = self.watched()?;
        let before = self.cpu_snapshot(&watched)?;
        let worker = || async {
            let mut latencies = Latencies::new()?;
            while Instant::now() < deadline && issued.fetch_add(1, Ordering::Relaxed) < max_orders {
                let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                let order = Order::new(0, id, "Load Customer", Decimal::new(4200, 2))
                    .map_err(|e| anyhow::anyhow!("invalid order: {e:?}"))?;
                let sent = Instant::now();
                let response = self
                    .http
                    .post(&url)
                    .header("dapr-api-token", token)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(serde_json::to_vec(&order)?)
                    .send()
                    .await;
                let ok = match response {
                    Ok(response) => {
                        let status = response.status();
                        response.bytes().await.is_ok() && status.is_success()
                    }
                    Err(_) => false,
                };
                if ok {
                    latencies.record(sent.elapsed());
                    let second = sent.duration_since(started).as_secs() as usize;
                    if let Some(bucket) = per_second.get(second) {
                        bucket.fetch_add(1, Ordering::Relaxed);
                    }
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            anyhow::Ok(latencies)
        };
        let workers =
            futures_util::future::try_join_all((0..concurrency.max(1)).map(|_| worker())).await?;
        let elapsed = started.elapsed().as_secs_f64();
        let after = self.cpu_snapshot(&watched)?;
        let mut all = Latencies::new()?;
        for w in &workers {
            all.merge(w)?;
        }
        let last_id = self.next_id.load(Ordering::Relaxed);
        let stored: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM app.orders WHERE orderid >= $1 AND orderid < $2",
        )
        .bind(first_id)
        .bind(last_id)
        .fetch_one(&self.admin)
        .await?;
        let ok = all.count();
        let full_seconds: Vec<u64> = per_second
            .iter()
            .take(elapsed.floor() as usize)
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        Ok(LoadSample {
            concurrency,
            seconds: elapsed,
            ok,
            errors: errors.load(Ordering::Relaxed) as u64,
            stored: u64::try_from(stored).unwrap_or(0),
            rate: ok as f64 / elapsed,
            slowest_second: full_seconds.iter().copied().min().unwrap_or(0),
            latencies: all.percentiles(),
            cpu: self.cpu_delta(&before, &after),
        })
    }

    /// Restarts each service `runs` times, one after the other, and returns the
    /// milliseconds to `/readyz` of every start ([`Bench::ready_ms`]).
    pub async fn ready_times(
        &mut self,
        runs: usize,
    ) -> anyhow::Result<HashMap<&'static str, Vec<f64>>> {
        let mut ready: HashMap<&'static str, Vec<f64>> = HashMap::new();
        for _ in 0..runs {
            for app in SERVICES {
                let ms = self.ready_ms(app).await?;
                ready.entry(app).or_default().push(ms);
            }
        }
        Ok(ready)
    }

    /// Restarts `app` and returns the milliseconds from spawning it to `/readyz`
    /// answering 200 (its sidecar keeps running).
    pub async fn ready_ms(&mut self, app: &'static str) -> anyhow::Result<f64> {
        let port = if app == "batch" {
            self.stack.batch.app
        } else {
            self.stack.op.app
        };
        let url = format!("http://127.0.0.1:{port}/readyz");
        self.stack.kill(app);
        let started = Instant::now();
        if app == "batch" {
            self.stack.start_batch();
        } else {
            self.stack.start_order_processor();
        }
        loop {
            if let Ok(r) = self.probe.get(&url).send().await
                && r.status().is_success()
            {
                return Ok(started.elapsed().as_secs_f64() * 1000.0);
            }
            if started.elapsed() > Duration::from_secs(60) {
                bail!("{app} not ready within 60 s:\n{}", self.stack.log(app));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Restarts batch with another chunk size.
    pub async fn set_chunk_size(&mut self, chunk_size: usize) -> anyhow::Result<()> {
        self.stack
            .set_batch_env("CHUNK_SIZE", &chunk_size.to_string());
        self.stack.kill("batch");
        self.stack.start_batch();
        self.stack.wait_ready("batch").await;
        self.warm_paths().await
    }

    /// Resident memory of each watched process now, in KiB.
    pub fn resident(&self) -> anyhow::Result<Vec<(String, u64)>> {
        self.watched()?
            .into_iter()
            .map(|(name, pid)| Ok((name, procfs::status_kib(pid, "VmRSS")?)))
            .collect()
    }
}

struct CpuSnapshot {
    ticks: Vec<(String, u64)>,
    machine: (u64, u64),
}

/// Samples the resident memory of some processes every 5 ms until stopped.
struct RssSampler {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<HashMap<String, u64>>,
}

impl RssSampler {
    fn start(watched: &[(String, u32)]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let watched = watched.to_vec();
        let flag = Arc::clone(&stop);
        let task = tokio::spawn(async move {
            let mut peaks: HashMap<String, u64> = HashMap::new();
            while !flag.load(Ordering::Relaxed) {
                for (name, pid) in &watched {
                    if let Ok(kib) = procfs::status_kib(*pid, "VmRSS") {
                        let peak = peaks.entry(name.clone()).or_insert(0);
                        *peak = (*peak).max(kib);
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            peaks
        });
        Self { stop, task }
    }

    async fn stop(self) -> HashMap<String, u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap_or_default()
    }
}

/// One chunk in each form a layer takes: the request body, the binding's params, and the
/// statement's three parameters as sqlx binds them. Made before the clock starts.
struct Payload {
    body: String,
    params: Params,
    values: [String; 3],
}

impl Payload {
    fn new(orders: &[Order], body: String) -> anyhow::Result<Self> {
        let params = Params::from_orders(orders);
        let values = serde_json::from_str(params.as_str())?;
        Ok(Self {
            body,
            params,
            values,
        })
    }
}

/// Sends chunks through one layer.
enum LayerSender<'a> {
    Sql(PgPool),
    Binding(DaprBinding),
    Http {
        client: &'a reqwest::Client,
        url: String,
        token: &'a str,
    },
}

impl<'a> LayerSender<'a> {
    async fn new(bench: &'a Bench, layer: Layer, in_flight: usize) -> anyhow::Result<Self> {
        Ok(match layer {
            Layer::Sql => {
                let pool = PgPoolOptions::new()
                    .max_connections(u32::try_from(in_flight.max(1))?)
                    .connect(&bench.stack.db.app_url())
                    .await?;
                // Connected before the clock starts, as order-processor's pool would be.
                let empty = Payload::new(&[], "[]".to_owned())?;
                let [ids, customers, prices] = &empty.values;
                sqlx::query(INSERT_SQL)
                    .bind(ids)
                    .bind(customers)
                    .bind(prices)
                    .execute(&pool)
                    .await?;
                Self::Sql(pool)
            }
            Layer::Binding => {
                let binding = DaprBinding::new(
                    bench.stack.op.grpc,
                    "sqldb",
                    Some(SecretString::from(bench.stack.dapr_token.clone())),
                    Duration::from_secs(30),
                )?;
                binding.insert(Params::from_orders(&[]), &[]).await?;
                Self::Binding(binding)
            }
            Layer::App => Self::Http {
                client: &bench.http,
                url: format!("http://127.0.0.1:{}/orders", bench.stack.op.app),
                token: &bench.stack.app_token,
            },
            Layer::Sidecars => Self::Http {
                client: &bench.http,
                url: bench.sidecar_url("order-processor", "orders"),
                token: &bench.stack.dapr_token,
            },
        })
    }

    async fn send(&self, payload: &Payload) -> anyhow::Result<()> {
        let body = payload.body.as_str();
        match self {
            Self::Sql(pool) => {
                let [ids, customers, prices] = &payload.values;
                sqlx::query(INSERT_SQL)
                    .bind(ids)
                    .bind(customers)
                    .bind(prices)
                    .execute(pool)
                    .await?;
            }
            Self::Binding(binding) => {
                binding.insert(payload.params.clone(), &[]).await?;
            }
            Self::Http { client, url, token } => {
                let response = client
                    .post(url)
                    .header("dapr-api-token", *token)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.to_owned())
                    .send()
                    .await?;
                let status = response.status();
                let answer = response.text().await?;
                ensure!(
                    status.is_success(),
                    "POST /orders answered {status}: {answer}"
                );
            }
        }
        Ok(())
    }

    async fn close(self) {
        if let Self::Sql(pool) = self {
            pool.close().await;
        }
    }
}

/// The connection for the floor: PostgreSQL's Unix socket when it has one, else TCP. sqlx
/// leaves Nagle's algorithm on for TCP, so the small end-of-COPY message after a large
/// one can wait for the server's delayed acknowledgement (40 ms on Linux): a stall of the
/// client library, not of the database, which the socket avoids.
async fn floor_pool(stack: &Stack, admin: &PgPool) -> anyhow::Result<(PgPool, String)> {
    let dirs: String = sqlx::query_scalar("SELECT current_setting('unix_socket_directories')")
        .fetch_one(admin)
        .await?;
    let options: sqlx::postgres::PgConnectOptions = stack.db.admin_url().parse()?;
    if let Some(dir) = dirs.split(',').map(str::trim).find(|d| !d.is_empty()) {
        let socket = options.clone().socket(dir);
        if let Ok(pool) = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(socket)
            .await
        {
            return Ok((pool, "PostgreSQL's Unix socket".to_owned()));
        }
    }
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await?;
    Ok((
        pool,
        "TCP on 127.0.0.1 (no Unix socket reachable)".to_owned(),
    ))
}

/// Size of a file and whether it is stripped (no symbol table, no debug sections).
pub fn binary(path: &Path) -> anyhow::Result<(u64, bool)> {
    use object::{Object, ObjectSection};
    let data = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let file = object::File::parse(data.as_slice())
        .with_context(|| format!("{} is not an executable this tool can read", path.display()))?;
    let debug = file
        .sections()
        .any(|s| s.name().is_ok_and(|n| n.starts_with(".debug_")));
    Ok((data.len() as u64, file.symbol_table().is_none() && !debug))
}
