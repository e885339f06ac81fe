//! The whole system as processes: order-processor and batch (the workspace's binaries),
//! each with a real daprd, against a fresh database. Every stack has its own free ports and
//! its own directory, where the sidecars keep their SQLite name-resolution file, so stacks
//! running at once (or beside `scripts/run.sh`) never resolve each other's apps. As in
//! Container Apps, a sidecar that exits is started again (and counted); the apps are not.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use sqlx::Connection;

use crate::pg::TestDb;
use crate::process::{Proc, Supervised};
pub use crate::process::{binaries, daprd, free_port};
use crate::workspace_root;

/// Ports of one app and its sidecar.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub app: u16,
    pub http: u16,
    pub grpc: u16,
    pub internal: u16,
    pub metrics: u16,
}

impl Ports {
    fn new() -> Self {
        Self {
            app: free_port(),
            http: free_port(),
            grpc: free_port(),
            internal: free_port(),
            metrics: free_port(),
        }
    }
}

/// How a stack is set up.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// The cron schedule, e.g. `@every 1s`.
    pub schedule: String,
    /// The orders file batch reads.
    pub orders: String,
    /// batch's `CHUNK_SIZE`.
    pub chunk_size: usize,
    /// Extra environment for batch.
    pub batch_env: Vec<(String, String)>,
    /// Run release builds (benchmarks) instead of debug builds (tests).
    pub release: bool,
    /// Extra environment for order-processor.
    pub order_processor_env: Vec<(String, String)>,
    /// Extra command-line arguments for a sidecar: `(app id, argument)`, e.g.
    /// `("batch", "--max-body-size=64Ki")`.
    pub sidecar_args: Vec<(&'static str, String)>,
    /// `host:port` of an OTLP/gRPC trace collector: both apps and both sidecars export
    /// their spans to it.
    pub otlp: Option<String>,
}

/// Where order-processor keeps its orders, and how it and its sidecar sign in there.
pub struct Database {
    app_url: Option<String>,
    admin_url: String,
    platform: Option<Platform>,
    _test_db: Option<TestDb>,
}

/// What the platform gives the processes besides the stack's own plumbing (ports, API
/// tokens, the test's settings), for a database the apps sign in to as in Azure: the apps'
/// environment from infra/ with the stand-ins' variables, the environment of
/// order-processor's sidecar, and components that replace those of components/ (file
/// name, contents). The processes then inherit none of the test's own sign-in variables
/// (`AZURE_*`, `IDENTITY_*`, `MSI_*`, `IMDS_*`, `PG*`, `SSL_CERT_*`, `DB_*`, `DATABASE_*`).
#[derive(Debug, Clone, Default)]
pub struct Platform {
    /// order-processor's environment.
    pub order_processor_env: Vec<(String, String)>,
    /// batch's environment.
    pub batch_env: Vec<(String, String)>,
    /// The environment of order-processor's sidecar.
    pub sidecar_env: Vec<(String, String)>,
    /// Component files that replace (or join) those of components/.
    pub components: Vec<(String, String)>,
}

impl Database {
    /// A database given by URLs: the app role's, and a superuser's for checks.
    pub fn new(app_url: String, admin_url: String) -> Self {
        Self {
            app_url: Some(app_url),
            admin_url,
            platform: None,
            _test_db: None,
        }
    }

    /// A database the apps sign in to with what `platform` gives them, and a superuser's
    /// URL for checks.
    pub fn signed_in_by(platform: Platform, admin_url: String) -> Self {
        Self {
            app_url: None,
            admin_url,
            platform: Some(platform),
            _test_db: None,
        }
    }

    /// The URL order-processor and its binding sign in with (databases given by URLs).
    pub fn app_url(&self) -> String {
        self.app_url
            .clone()
            .expect("this database is signed in to as in Azure, without a URL")
    }

    /// A superuser URL of the same database.
    pub fn admin_url(&self) -> String {
        self.admin_url.clone()
    }
}

impl From<TestDb> for Database {
    fn from(db: TestDb) -> Self {
        Self {
            app_url: Some(db.app_url()),
            admin_url: db.admin_url(),
            platform: None,
            _test_db: Some(db),
        }
    }
}

/// The running system. Its sidecars require `dapr_token` from callers and send
/// `app_token` to the apps, which require it (as Container Apps does).
pub struct Stack {
    pub db: Database,
    pub dapr_token: String,
    pub app_token: String,
    pub dir: PathBuf,
    pub op: Ports,
    pub batch: Ports,
    procs: HashMap<&'static str, Proc>,
    sidecars: HashMap<&'static str, Supervised>,
    batch_env: Vec<(String, String)>,
    op_env: Vec<(String, String)>,
    sidecar_args: Vec<(&'static str, String)>,
    release: bool,
    _dir_guard: TempDir,
}

impl Stack {
    /// Starts order-processor and its sidecar, then batch and its sidecar, and waits until
    /// both apps report ready.
    pub async fn start(options: StackOptions) -> Self {
        Self::start_on(options, TestDb::create().await).await
    }

    /// [`Stack::start`] with a database of the caller's (e.g. on a server it stops).
    pub async fn start_on(options: StackOptions, db: impl Into<Database>) -> Self {
        let mut stack = Self::start_unready(options, db).await;
        stack.wait_ready("order-processor").await;
        stack
    }

    /// Starts everything as [`Stack::start_on`] does, but waits for batch only: for a
    /// database order-processor cannot use yet (as before the bootstrap in Azure).
    pub async fn start_unready(options: StackOptions, db: impl Into<Database>) -> Self {
        let db = db.into();
        let dir_guard = TempDir::new();
        let dir = dir_guard.path();
        let platform = db.platform.clone().unwrap_or_default();
        write_resources(
            &dir,
            &options.schedule,
            options.otlp.as_deref(),
            &platform.components,
        );
        let mut op_env = options.order_processor_env;
        let mut batch_env = options.batch_env;
        if let Some(address) = &options.otlp {
            for env in [&mut op_env, &mut batch_env] {
                env.push((
                    "OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(),
                    format!("http://{address}"),
                ));
            }
        }
        fs::write(dir.join("orders.json"), &options.orders).expect("write orders file");
        let mut stack = Self {
            db,
            dapr_token: random_token(),
            app_token: random_token(),
            dir,
            op: Ports::new(),
            batch: Ports::new(),
            procs: HashMap::new(),
            sidecars: HashMap::new(),
            batch_env: Vec::new(),
            op_env,
            sidecar_args: options.sidecar_args,
            release: options.release,
            _dir_guard: dir_guard,
        };
        stack.start_order_processor();
        stack.start_sidecar("order-processor");
        // The sidecars share the SQLite file of name resolution, and one that creates its
        // tables while the other does fails with SQLITE_BUSY and resolves no app: one at
        // a time, as scripts/run.sh starts them.
        stack.wait_sidecar("order-processor").await;
        let mut env = platform.batch_env.clone();
        env.extend([
            (
                "ORDERS_FILE".to_owned(),
                stack.dir.join("orders.json").display().to_string(),
            ),
            ("CHUNK_SIZE".to_owned(), options.chunk_size.to_string()),
            ("INVOKE_RETRY_DELAY_MS".to_owned(), "50".to_owned()),
            ("INVOKE_MAX_RETRIES".to_owned(), "3".to_owned()),
        ]);
        env.extend(batch_env);
        env.push(("DAPR_API_TOKEN".to_owned(), stack.dapr_token.clone()));
        env.push(("APP_API_TOKEN".to_owned(), stack.app_token.clone()));
        env.push(("APP_PORT".to_owned(), stack.batch.app.to_string()));
        env.push(("DAPR_HTTP_PORT".to_owned(), stack.batch.http.to_string()));
        stack.batch_env = env;
        stack.start_batch();
        stack.start_sidecar("batch");
        stack.wait_ready("batch").await;
        stack
    }

    /// Starts order-processor (again).
    pub fn start_order_processor(&mut self) {
        let mut env = self
            .db
            .platform
            .as_ref()
            .map(|p| p.order_processor_env.clone())
            .unwrap_or_default();
        if let Some(url) = &self.db.app_url {
            env.push(("DATABASE_URL".to_owned(), url.clone()));
        }
        let plumbing: Vec<(String, String)> = [
            ("APP_PORT", &self.op.app.to_string()),
            ("DAPR_HTTP_PORT", &self.op.http.to_string()),
            ("DAPR_GRPC_PORT", &self.op.grpc.to_string()),
            ("DAPR_API_TOKEN", &self.dapr_token),
            ("APP_API_TOKEN", &self.app_token),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .into();
        env.extend(plumbing);
        env.extend(self.op_env.iter().cloned());
        self.spawn_app("order-processor", &env);
    }

    /// Starts batch (again), with the environment it was first started with.
    pub fn start_batch(&mut self) {
        let env = self.batch_env.clone();
        self.spawn_app("batch", &env);
    }

    /// Sets a variable of batch's environment (replacing its value if it has one) for the
    /// next [`Stack::start_batch`], e.g. another `CHUNK_SIZE` for a benchmark.
    pub fn set_batch_env(&mut self, key: &str, value: &str) {
        self.batch_env.retain(|(k, _)| k != key);
        self.batch_env.push((key.to_owned(), value.to_owned()));
    }

    /// Sets a variable of order-processor's environment for the next
    /// [`Stack::start_order_processor`].
    pub fn set_order_processor_env(&mut self, key: &str, value: &str) {
        self.op_env.retain(|(k, _)| k != key);
        self.op_env.push((key.to_owned(), value.to_owned()));
    }

    /// Stops `app` (`batch` or `order-processor`) and starts it again with the
    /// environment set since, and waits until it is ready.
    pub async fn restart(&mut self, app: &'static str) {
        self.kill(app);
        if app == "batch" {
            self.start_batch();
        } else {
            self.start_order_processor();
        }
        self.wait_ready(app).await;
    }

    /// Holds every write to the orders table (a `SHARE` lock in an open transaction;
    /// reads go on) until the guard is released or dropped: a stalled database, and a
    /// gate that keeps a run going while a test acts.
    pub async fn hold_writes(&self) -> WritesHeld {
        let mut conn = self.admin().await;
        sqlx::raw_sql("BEGIN; LOCK TABLE app.orders IN SHARE MODE")
            .execute(&mut conn)
            .await
            .expect("lock app.orders");
        WritesHeld(Some(conn))
    }

    /// How many statements are waiting to write orders (on the lock of
    /// [`Stack::hold_writes`]).
    pub async fn writes_waiting(&self) -> i64 {
        self.waiting_writes().await.len() as i64
    }

    /// The statements waiting to write orders, each named by its backend and start.
    pub async fn waiting_writes(&self) -> Vec<String> {
        sqlx::query_scalar(
            "SELECT pid || '@' || query_start FROM pg_stat_activity \
             WHERE wait_event_type = 'Lock' AND query LIKE 'INSERT INTO app.orders%' \
             AND datname = current_database()",
        )
        .fetch_all(&mut self.admin().await)
        .await
        .expect("pg_stat_activity")
    }

    fn spawn_app(&mut self, name: &'static str, env: &[(String, String)]) {
        let log = self.log_file(name);
        let mut command = Command::new(binaries(self.release).join(name));
        if self.db.platform.is_some() {
            without_inherited_sign_in(&mut command);
        }
        let child = command
            .envs(env.iter().cloned())
            .env("RUST_LOG", "info")
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        self.procs.insert(
            name,
            Proc {
                child,
                name: name.to_owned(),
            },
        );
    }

    /// Starts the sidecar of `app_id` (`batch` or `order-processor`), again after a kill.
    /// It is started again whenever it exits by itself.
    pub fn start_sidecar(&mut self, app_id: &'static str) {
        let ports = if app_id == "batch" {
            self.batch
        } else {
            self.op
        };
        let daprd = daprd();
        let dir = self.dir.clone();
        let log = self.dir.join(format!("{app_id}-daprd.log"));
        let tokens = (self.dapr_token.clone(), self.app_token.clone());
        let is_op = app_id == "order-processor";
        let connection = is_op.then(|| self.db.app_url.clone()).flatten();
        let hermetic = self.db.platform.is_some();
        let platform_env = match &self.db.platform {
            Some(platform) if is_op => platform.sidecar_env.clone(),
            _ => Vec::new(),
        };
        let extra: Vec<String> = self
            .sidecar_args
            .iter()
            .filter(|(app, _)| *app == app_id)
            .map(|(_, arg)| arg.clone())
            .collect();
        let start = move || {
            let log = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .expect("log file");
            let mut command = Command::new(&daprd);
            command
                .current_dir(&dir)
                .args(["--app-id", app_id, "--app-protocol", "http"])
                .args(["--app-port", &ports.app.to_string()])
                .args(["--dapr-http-port", &ports.http.to_string()])
                .args(["--dapr-grpc-port", &ports.grpc.to_string()])
                .args(["--dapr-internal-grpc-port", &ports.internal.to_string()])
                .args(["--metrics-port", &ports.metrics.to_string()])
                .args(["--dapr-listen-addresses", "127.0.0.1"])
                .arg("--resources-path")
                .arg(dir.join("resources"))
                .arg("--config")
                .arg(dir.join("config.yaml"))
                .args(&extra)
                .env("DAPR_API_TOKEN", &tokens.0)
                .env("APP_API_TOKEN", &tokens.1)
                .stdout(log.try_clone().expect("log"))
                .stderr(log);
            if hermetic {
                without_inherited_sign_in(&mut command);
            }
            command.envs(platform_env.iter().cloned());
            if let Some(url) = &connection {
                command.env("SQLDB_CONNECTION_STRING", url);
            }
            command.spawn().unwrap_or_else(|e| {
                panic!(
                    "start daprd ({}): {e}; set DAPRD or run scripts/test.sh",
                    daprd.display()
                )
            })
        };
        let name = if app_id == "batch" {
            "batch-daprd"
        } else {
            "order-processor-daprd"
        };
        self.sidecars.insert(name, Supervised::start(start));
    }

    /// How often the sidecar of `app_id` exited by itself and was started again.
    pub fn sidecar_restarts(&self, app_id: &str) -> u32 {
        self.sidecars
            .get(format!("{app_id}-daprd").as_str())
            .map_or(0, |s| s.restarts.load(Ordering::Acquire))
    }

    fn log_file(&self, name: &str) -> fs::File {
        fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{name}.log")))
            .expect("log file")
    }

    /// A client that sends the sidecars' API token.
    pub fn sidecar_client(&self) -> reqwest::Client {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            "dapr-api-token",
            self.dapr_token.parse().expect("token header"),
        );
        reqwest::Client::builder()
            .default_headers(headers)
            .build()
            .expect("client")
    }

    /// What a process has logged so far.
    pub fn log(&self, name: &str) -> String {
        fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default()
    }

    /// The URL of order-processor's `POST /orders` through batch's sidecar.
    pub fn orders_via_sidecars(&self) -> String {
        format!(
            "http://127.0.0.1:{}/v1.0/invoke/order-processor/method/orders",
            self.batch.http
        )
    }

    /// Posts `orders` (JSON) to order-processor through both sidecars, with the token.
    pub async fn post_orders(&self, orders: &impl serde::Serialize) -> reqwest::Response {
        self.sidecar_client()
            .post(self.orders_via_sidecars())
            .json(orders)
            .send()
            .await
            .expect("POST /orders through the sidecars")
    }

    /// Runs batch now (through its sidecar, as a caller would) and returns the summary.
    pub async fn run_now(&self) -> serde_json::Value {
        let url = format!(
            "http://127.0.0.1:{}/v1.0/invoke/batch/method/runs",
            self.batch.http
        );
        let response = self
            .sidecar_client()
            .post(url)
            .send()
            .await
            .expect("trigger a run");
        assert!(response.status().is_success(), "run: {}", response.status());
        response.json().await.expect("run summary")
    }

    /// Starts a run (as [`Stack::run_now`] does) and returns at once: its summary comes
    /// through the handle, or `None` when the call failed (batch stopped meanwhile).
    pub fn start_run(&self) -> tokio::task::JoinHandle<Option<serde_json::Value>> {
        let url = format!(
            "http://127.0.0.1:{}/v1.0/invoke/batch/method/runs",
            self.batch.http
        );
        let client = self.sidecar_client();
        tokio::spawn(async move { client.post(url).send().await.ok()?.json().await.ok() })
    }

    /// Runs batch now, again and again, until the table holds `count` orders.
    pub async fn run_until_stored(&self, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(180);
        while self.stored().await.len() < count {
            assert!(
                Instant::now() < deadline,
                "not every order stored:\n{}",
                tail(&self.log("batch"), 30)
            );
            self.run_now().await;
        }
    }

    /// Waits until `count` statements wait on [`Stack::hold_writes`]: a run is under way.
    pub async fn wait_for_waiting_writes(&self, count: i64) {
        self.wait_until(
            "writes waiting on the lock",
            Duration::from_secs(60),
            || async { self.writes_waiting().await >= count },
        )
        .await;
    }

    /// batch's run summaries so far, as JSON objects.
    pub fn summaries(&self) -> Vec<serde_json::Value> {
        self.log("batch")
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|v| v["message"] == "run finished")
            .collect()
    }

    /// How an app's process ended, once it has: `None` while it runs.
    pub fn exited(&mut self, name: &str) -> Option<std::process::ExitStatus> {
        let proc = self.procs.get_mut(name)?;
        let status = proc.child.try_wait().expect("try_wait")?;
        self.procs.remove(name);
        Some(status)
    }

    /// The process id of `order-processor`, `batch` or `<app>-daprd`, while it runs.
    pub fn pid(&self, name: &str) -> Option<u32> {
        self.procs
            .get(name)
            .map(|p| p.child.id())
            .or_else(|| self.sidecars.get(name).map(Supervised::pid))
    }

    /// Kills a process: `order-processor`, `batch` or `<app>-daprd` (which then stays
    /// down until [`Stack::start_sidecar`]).
    pub fn kill(&mut self, name: &str) {
        if self.sidecars.remove(name).is_some() {
            return;
        }
        let mut proc = self
            .procs
            .remove(name)
            .unwrap_or_else(|| panic!("no process {name}"));
        proc.child.kill().expect("kill");
        proc.child.wait().expect("wait");
    }

    /// Sends SIGTERM and waits for the process to exit; returns how long it took.
    pub fn terminate(&mut self, name: &str) -> Duration {
        let mut proc = self
            .procs
            .remove(name)
            .unwrap_or_else(|| panic!("no process {name}"));
        let started = Instant::now();
        let _ = Command::new("kill")
            .args(["-TERM", &proc.child.id().to_string()])
            .status();
        proc.child.wait().expect("wait");
        started.elapsed()
    }

    /// What the app's `/readyz` answers now: its status and body (`None` when it does not
    /// answer).
    pub async fn readiness(&self, app: &str) -> Option<(u16, serde_json::Value)> {
        let port = if app == "batch" {
            self.batch.app
        } else {
            self.op.app
        };
        let response = reqwest::get(format!("http://127.0.0.1:{port}/readyz"))
            .await
            .ok()?;
        let status = response.status().as_u16();
        Some((status, response.json().await.ok()?))
    }

    /// Waits until `app`'s sidecar has loaded its components (`/v1.0/healthz/outbound`).
    pub async fn wait_sidecar(&self, app: &str) {
        let port = if app == "batch" {
            self.batch.http
        } else {
            self.op.http
        };
        let url = format!("http://127.0.0.1:{port}/v1.0/healthz/outbound");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = reqwest::get(&url).await
                && r.status().is_success()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{app}'s sidecar not up within 60 s:\n{}",
                tail(&self.log(&format!("{app}-daprd")), 40)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the app answers `/readyz` with 200.
    pub async fn wait_ready(&mut self, app: &str) {
        let port = if app == "batch" {
            self.batch.app
        } else {
            self.op.app
        };
        let url = format!("http://127.0.0.1:{port}/readyz");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = reqwest::get(&url).await
                && r.status().is_success()
            {
                return;
            }
            let exited = self.procs.values_mut().find_map(|p| {
                p.child
                    .try_wait()
                    .ok()
                    .flatten()
                    .map(|s| (p.name.clone(), s))
            });
            if let Some((name, status)) = exited {
                panic!("{name} exited ({status}):\n{}", self.log(&name));
            }
            assert!(
                Instant::now() < deadline,
                "{app} not ready within 60 s:\n{}\n--- its sidecar's log (tail) ---\n{}",
                tail(&self.log(app), 40),
                tail(&self.log(&format!("{app}-daprd")), 40)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A connection as the database's superuser, for checks and for the faults a test
    /// causes (a lock, a revoked privilege).
    pub async fn admin(&self) -> sqlx::PgConnection {
        sqlx::PgConnection::connect(&self.db.admin_url())
            .await
            .expect("connect as superuser")
    }

    /// Empties the orders table.
    pub async fn empty_the_table(&self) {
        sqlx::query("TRUNCATE app.orders")
            .execute(&mut self.admin().await)
            .await
            .expect("truncate app.orders");
    }

    /// The stored orders as `(orderid, customer, price as text)`, in id order; none while
    /// the table does not exist yet.
    pub async fn stored(&self) -> Vec<(i64, String, String)> {
        let mut conn = sqlx::PgConnection::connect(&self.db.admin_url())
            .await
            .expect("connect as superuser");
        let exists: bool = sqlx::query_scalar("SELECT to_regclass('app.orders') IS NOT NULL")
            .fetch_one(&mut conn)
            .await
            .expect("look for the table");
        if !exists {
            return Vec::new();
        }
        let rows = sqlx::query_as(
            "SELECT orderid, customer, price::text FROM app.orders ORDER BY orderid",
        )
        .fetch_all(&mut conn)
        .await
        .expect("read orders");
        let _ = conn.close().await;
        rows
    }

    /// Waits until `check` holds, polling every 100 ms, for at most `timeout`.
    pub async fn wait_until<F, Fut>(&self, what: &str, timeout: Duration, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let deadline = Instant::now() + timeout;
        while !check().await {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}\n--- batch log (tail) ---\n{}\n--- order-processor log (tail) ---\n{}",
                tail(&self.log("batch"), 30),
                tail(&self.log("order-processor"), 30)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Writes held by [`Stack::hold_writes`].
pub struct WritesHeld(Option<sqlx::PgConnection>);

impl WritesHeld {
    /// Lets the writes go on.
    pub async fn release(mut self) {
        if let Some(mut conn) = self.0.take() {
            sqlx::raw_sql("ROLLBACK")
                .execute(&mut conn)
                .await
                .expect("unlock app.orders");
        }
    }
}

/// A random token (32 hex digits), e.g. for the sidecars and apps of one stack.
pub fn random_token() -> String {
    use std::hash::{BuildHasher, RandomState};
    let state = RandomState::new();
    format!("{:016x}{:016x}", state.hash_one(1u8), state.hash_one(2u8))
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The variables of the test's own environment a process could sign in with, which
/// processes signed in as in Azure do not inherit.
pub(crate) fn inherited_sign_in_vars() -> Vec<std::ffi::OsString> {
    const PREFIXES: [&str; 8] = [
        "AZURE_",
        "IDENTITY_",
        "MSI_",
        "IMDS_",
        "PG",
        "SSL_CERT_",
        "DB_",
        "DATABASE_",
    ];
    std::env::vars_os()
        .map(|(name, _)| name)
        .filter(|name| {
            let text = name.to_string_lossy();
            PREFIXES.iter().any(|p| text.starts_with(p))
        })
        .collect()
}

fn without_inherited_sign_in(command: &mut Command) {
    for name in inherited_sign_in_vars() {
        command.env_remove(name);
    }
}

/// Copies `components/` with the cron schedule replaced, then writes `replacements` (file
/// name, contents) over it; the Configuration goes next to it and exports spans to `otlp`
/// when given.
fn write_resources(
    dir: &Path,
    schedule: &str,
    otlp: Option<&str>,
    replacements: &[(String, String)],
) {
    let source = workspace_root().join("components");
    let resources = dir.join("resources");
    fs::create_dir_all(&resources).expect("resources dir");
    for entry in fs::read_dir(&source).expect("components/") {
        let path = entry.expect("entry").path();
        let text = fs::read_to_string(&path).expect("read component");
        let name = path.file_name().expect("file name");
        if text.contains("kind: Configuration") {
            let text = match otlp {
                Some(address) => with_otel(&text, address),
                None => text,
            };
            fs::write(dir.join("config.yaml"), text).expect("write config");
        } else {
            let text = text.replace("\"@every 10s\"", &format!("\"{schedule}\""));
            fs::write(resources.join(name), text).expect("write component");
        }
    }
    for (name, text) in replacements {
        fs::write(resources.join(name), text).expect("write component");
    }
}

/// `config` (components/config.yaml) with its spans exported over OTLP/gRPC to `address`,
/// in plain text (Dapr's `isSecure` defaults to true).
pub fn with_otel(config: &str, address: &str) -> String {
    let anchor = "    stdout: false\n";
    assert!(
        config.contains(anchor),
        "components/config.yaml has no tracing.stdout"
    );
    config.replacen(
        anchor,
        &format!(
            "{anchor}    otel:\n      endpointAddress: \"{address}\"\n      isSecure: false\n      protocol: grpc\n"
        ),
        1,
    )
}

/// The stack's directory: removed when dropped, kept when `KEEP_TEST_DIRS` is set (for
/// debugging).
struct TempDir(Option<tempfile::TempDir>);

impl TempDir {
    fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("dapr-rust-aca-")
            .tempdir()
            .expect("temp dir");
        Self(Some(dir))
    }

    fn path(&self) -> PathBuf {
        self.0.as_ref().expect("temp dir").path().to_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("KEEP_TEST_DIRS").is_some()
            && let Some(dir) = self.0.take()
        {
            eprintln!("kept {}", dir.keep().display());
        }
    }
}

impl StackOptions {
    /// Debug builds, the cron every second, `orders` sent in chunks of `chunk_size`.
    pub fn every_second(orders: String, chunk_size: usize) -> Self {
        Self {
            schedule: "@every 1s".to_owned(),
            orders,
            chunk_size,
            batch_env: Vec::new(),
            release: false,
            order_processor_env: Vec::new(),
            sidecar_args: Vec::new(),
            otlp: None,
        }
    }
}

/// The rows [`orders_json`] stores, as [`Stack::stored`] reads them.
pub fn expected_rows(first: i64, count: i64) -> Vec<(i64, String, String)> {
    (first..first + count)
        .map(|id| {
            (
                id,
                format!("Customer {id}"),
                format!("{}.{:02}", id % 1000, id % 100),
            )
        })
        .collect()
}

/// An orders file of `count` orders with ids from `first`, in the bundled file's format.
pub fn orders_json(first: i64, count: i64) -> String {
    let orders: Vec<String> = (first..first + count)
        .map(|id| {
            format!(
                r#"{{"orderid":{id},"customer":"Customer {id}","price":{}.{:02}}}"#,
                id % 1000,
                id % 100
            )
        })
        .collect();
    format!("{{\"orders\":[\n{}\n]}}", orders.join(",\n"))
}
