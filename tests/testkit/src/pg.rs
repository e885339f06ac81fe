//! Fresh databases on the test PostgreSQL server, one per test, each bootstrapped like a
//! real deployment: an ordinary login role that may create its own schema there and
//! nothing more; and private servers for tests that stop, start or set up a server.

use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};

use tokio::process::Command;
use tokio::sync::Mutex;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Executor};

use crate::workspace_root;

/// The role the service connects as in tests.
pub const APP_ROLE: &str = "order_processor_test";
/// Its password: test databases live on a throwaway, loopback-only server.
pub const APP_PASSWORD: &str = "local-test-only";

/// The superuser URL of the test server, from `TEST_DATABASE_URL`.
pub fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL").expect(
        "TEST_DATABASE_URL is not set: run the tests with scripts/test.sh, or point it at a \
         PostgreSQL superuser URL such as postgres://postgres:secret@127.0.0.1:5432/postgres",
    )
}

/// A database that exists for one test and is dropped when the value is.
pub struct TestDb {
    /// The database's name.
    pub name: String,
    admin: PgConnectOptions,
    server_url: String,
}

impl TestDb {
    /// Creates a new empty database on the test server and runs `db/bootstrap.sql` in it.
    pub async fn create() -> Self {
        Self::create_on(&admin_url()).await
    }

    /// Creates a new empty database on the server of `server_url` (a superuser URL) and
    /// runs `db/bootstrap.sql` in it.
    pub async fn create_on(server_url: &str) -> Self {
        let db = Self::create_bare_on(server_url).await;
        db.bootstrap().await;
        db
    }

    /// Creates a new empty database on the test server, without bootstrapping it.
    pub async fn create_bare() -> Self {
        Self::create_bare_on(&admin_url()).await
    }

    async fn create_bare_on(server_url: &str) -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let admin = PgConnectOptions::from_str(server_url).expect("superuser URL");
        let name = format!(
            "test_{}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos()
        );
        let mut conn = admin.connect().await.expect("connect to TEST_DATABASE_URL");
        conn.execute(sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE {name}"
        ))))
        .await
        .expect("create test database");
        Self {
            name,
            admin,
            server_url: server_url.to_owned(),
        }
    }

    /// The URL the service uses: the ordinary role, in this database.
    pub fn app_url(&self) -> String {
        self.url_as(APP_ROLE, APP_PASSWORD)
    }

    /// A URL for `role` with `password`, in this database.
    pub fn url_as(&self, role: &str, password: &str) -> String {
        format!(
            "postgres://{role}:{password}@{}:{}/{}",
            self.admin.get_host(),
            self.admin.get_port(),
            self.name
        )
    }

    /// A superuser URL for this database, for checks the app role may not do.
    pub fn admin_url(&self) -> String {
        let mut url = self.server_url.clone();
        let slash = url.rfind('/').expect("database in TEST_DATABASE_URL");
        let query = url[slash..].find('?').map(|q| url[slash + q..].to_owned());
        url.truncate(slash + 1);
        url.push_str(&self.name);
        url.push_str(&query.unwrap_or_default());
        url
    }

    /// A pool connected as the app's role, with the app's schema as its `search_path`
    /// (as order-processor connects).
    pub async fn app_pool(&self) -> PgPool {
        let options = PgConnectOptions::from_str(&self.app_url())
            .expect("app URL")
            .options([("search_path", "app")]);
        PgPoolOptions::new()
            .max_connections(5)
            .connect_with(options)
            .await
            .expect("connect as the app role")
    }

    /// A pool connected as superuser to this database.
    pub async fn admin_pool(&self) -> PgPool {
        PgPoolOptions::new()
            .max_connections(2)
            .connect_with(self.admin.clone().database(&self.name))
            .await
            .expect("connect as superuser")
    }

    async fn bootstrap(&self) {
        // Creating the shared role from parallel tests is serialised within this process.
        static LOCK: Mutex<()> = Mutex::const_new(());
        let _guard = LOCK.lock().await;
        let script = workspace_root().join("db/bootstrap.sql");
        let output = Command::new("psql")
            .arg(self.admin_url())
            .args(["-X", "-q", "-v", &format!("app_role={APP_ROLE}")])
            .args(["-v", &format!("app_password={APP_PASSWORD}")])
            .arg("-f")
            .arg(&script)
            .output()
            .await
            .expect("run psql (install postgresql-client)");
        assert!(
            output.status.success(),
            "db/bootstrap.sql failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// Drops the database on a thread of its own, so that no async runtime waits for it. A
/// database left behind when the test process exits first is dropped by
/// `scripts/test.sh` when it next starts the throwaway server.
impl Drop for TestDb {
    fn drop(&mut self) {
        let (server_url, name) = (self.server_url.clone(), self.name.clone());
        std::thread::spawn(move || {
            let _ = std::process::Command::new("psql")
                .arg(server_url)
                .args(["-X", "-q", "-c"])
                .arg(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .output();
        });
    }
}

/// A PostgreSQL server of a test's own (a throwaway cluster on a free port, in a temporary
/// directory), for tests that stop and start the database or set it up like Azure's.
/// Stopped and removed when dropped.
pub struct PrivateServer {
    dir: tempfile::TempDir,
    port: u16,
    bin: std::path::PathBuf,
    settings: Vec<(String, String)>,
}

/// What a private server has beyond what `initdb` gives it.
#[derive(Debug, Clone, Default)]
pub struct ServerSetup {
    /// Files written into the data directory before the server first starts, readable by
    /// the server alone: `server.crt` and `server.key` for TLS, `pg_hba.conf` to replace
    /// the one `initdb` wrote.
    pub files: Vec<(String, String)>,
    /// Settings the server runs with (`-c name=value`; values without spaces), e.g.
    /// `ssl=on`.
    pub settings: Vec<(String, String)>,
}

/// The superuser's password of every private server.
pub(crate) const PRIVATE_PASSWORD: &str = "private-test-server";

impl PrivateServer {
    /// Creates and starts the cluster (as the `postgres` user when run as root: the server
    /// refuses to run as root).
    pub async fn start() -> Self {
        Self::start_with(ServerSetup::default()).await
    }

    /// [`PrivateServer::start`] with files and settings of the caller's.
    pub async fn start_with(setup: ServerSetup) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("dapr-rust-aca-pg-")
            .tempdir()
            .expect("server dir");
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, PRIVATE_PASSWORD).expect("password file");
        let server = Self {
            dir,
            port: crate::process::free_port(),
            bin: pg_bindir(),
            settings: setup.settings,
        };
        if is_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:"])
                .arg(server.dir.path())
                .status()
                .await
                .expect("chown");
            assert!(status.success(), "chown of the server directory failed");
        }
        server
            .as_owner(
                "initdb",
                &[
                    "-D",
                    &server.data(),
                    "-U",
                    "postgres",
                    "--auth=scram-sha-256",
                    &format!("--pwfile={}", pwfile.display()),
                    "--encoding=UTF8",
                    "--locale=C.UTF-8",
                ],
            )
            .await;
        for (name, contents) in &setup.files {
            server.write_private(name, contents).await;
        }
        server.start_again().await;
        server
    }

    /// Writes a file into the data directory that only the server's user may read (as
    /// PostgreSQL requires of a private key).
    async fn write_private(&self, name: &str, contents: &str) {
        use std::os::unix::fs::PermissionsExt;
        let path = self.dir.path().join("data").join(name);
        std::fs::write(&path, contents).unwrap_or_else(|e| panic!("write {name}: {e}"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .expect("permissions");
        if is_root() {
            let status = Command::new("chown")
                .arg("postgres:")
                .arg(&path)
                .status()
                .await
                .expect("chown");
            assert!(status.success(), "chown of {name} failed");
        }
    }

    /// Replaces files of the data directory (as [`ServerSetup::files`]) and has the server
    /// read its configuration again (`pg_reload_conf()`: e.g. a new certificate, for new
    /// connections; the reload is done when the server next handles a signal).
    pub async fn replace_files(&self, files: &[(String, String)]) {
        for (name, contents) in files {
            self.write_private(name, contents).await;
        }
        let mut conn = self.connect_as_superuser("postgres").await;
        sqlx::query("SELECT pg_reload_conf()")
            .execute(&mut conn)
            .await
            .expect("pg_reload_conf()");
    }

    /// The port it listens on (127.0.0.1 only).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// What the server has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// The superuser URL.
    pub fn admin_url(&self) -> String {
        self.url_as("postgres", PRIVATE_PASSWORD, "postgres")
    }

    /// The URL of `database` for `role` with `password`.
    pub fn url_as(&self, role: &str, password: &str, database: &str) -> String {
        let mut url = url::Url::parse("postgres://127.0.0.1").expect("URL");
        url.set_port(Some(self.port)).expect("port");
        url.set_username(role).expect("user");
        url.set_password(Some(password)).expect("password");
        url.set_path(database);
        url.into()
    }

    /// A connection to `database` as the superuser.
    pub async fn connect_as_superuser(&self, database: &str) -> sqlx::PgConnection {
        let options = PgConnectOptions::new_without_pgpass()
            .host("127.0.0.1")
            .port(self.port)
            .username("postgres")
            .password(PRIVATE_PASSWORD)
            .database(database);
        options.connect().await.expect("connect as the superuser")
    }

    /// Stops the server at once (`pg_ctl stop -m immediate`: like a crash or a lost host).
    pub async fn stop(&self) {
        self.as_owner(
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        )
        .await;
    }

    /// Starts the server (again).
    pub async fn start_again(&self) {
        let mut options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        for (name, value) in &self.settings {
            options.push_str(&format!(" -c {name}={value}"));
        }
        let log = self.dir.path().join("server.log").display().to_string();
        self.as_owner(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-l",
                &log,
                "-w",
                "-t",
                "60",
                "-o",
                &options,
                "start",
            ],
        )
        .await;
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    /// A server program, run as the cluster's owner.
    fn owner_command(&self, program: &str, args: &[&str]) -> std::process::Command {
        let path = self.bin.join(program);
        let mut command = if is_root() {
            let mut command = std::process::Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(path);
            command
        } else {
            std::process::Command::new(path)
        };
        command.args(args);
        command
    }

    async fn as_owner(&self, program: &str, args: &[&str]) {
        let output = Command::from(self.owner_command(program, args))
            .output()
            .await
            .unwrap_or_else(|e| panic!("run {program}: {e}"));
        assert!(
            output.status.success(),
            "{program} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

/// Signals the server to stop at once without waiting for it (`pg_ctl` without `-w`
/// returns as soon as the signal is sent); the temporary directory goes with it.
impl Drop for PrivateServer {
    fn drop(&mut self) {
        let data = self.data();
        let _ = self
            .owner_command("pg_ctl", &["-D", &data, "-m", "immediate", "-W", "stop"])
            .output();
    }
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

/// The bin directory of the PostgreSQL server the tests use: `PG_BINDIR` (scripts/test.sh
/// sets it to a server of the major version infra/ deploys), else Debian's directory of
/// that major version.
fn pg_bindir() -> std::path::PathBuf {
    if let Ok(dir) = std::env::var("PG_BINDIR") {
        return dir.into();
    }
    let bicep = std::fs::read_to_string(workspace_root().join("infra/main.bicep"))
        .expect("infra/main.bicep");
    let major = bicep
        .lines()
        .find_map(|line| line.strip_prefix("param postgresVersion string = "))
        .expect("postgresVersion in infra/main.bicep")
        .trim_matches('\'');
    let dir = std::path::PathBuf::from(format!("/usr/lib/postgresql/{major}/bin"));
    assert!(
        dir.join("postgres").exists(),
        "no PostgreSQL {major} server in {}: set PG_BINDIR (scripts/test.sh does)",
        dir.display()
    );
    dir
}
