//! Fresh databases on the test PostgreSQL server, one per test, each bootstrapped like a
//! real deployment: an ordinary login role that owns the `app` schema and nothing more.

use std::process::Command;
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};

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
}

impl TestDb {
    /// Creates a new empty database and runs `db/bootstrap.sql` in it.
    pub async fn create() -> Self {
        let db = Self::create_bare().await;
        db.bootstrap();
        db
    }

    /// Creates a new empty database, without bootstrapping it.
    pub async fn create_bare() -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let admin = PgConnectOptions::from_str(&admin_url()).expect("TEST_DATABASE_URL");
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
        Self { name, admin }
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
        let mut url = admin_url();
        let slash = url.rfind('/').expect("database in TEST_DATABASE_URL");
        let query = url[slash..].find('?').map(|q| url[slash + q..].to_owned());
        url.truncate(slash + 1);
        url.push_str(&self.name);
        url.push_str(&query.unwrap_or_default());
        url
    }

    /// A pool connected as the app's role.
    pub async fn app_pool(&self) -> PgPool {
        PgPoolOptions::new()
            .max_connections(5)
            .connect(&self.app_url())
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

    fn bootstrap(&self) {
        // Creating the shared role from parallel tests is serialised within this process.
        static LOCK: OnceLock<Mutex<()>> = OnceLock::new();
        let _guard = LOCK.get_or_init(|| Mutex::new(())).lock().unwrap();
        let script = workspace_root().join("db/bootstrap.sql");
        let output = Command::new("psql")
            .arg(self.admin_url())
            .args(["-X", "-q", "-v", &format!("app_role={APP_ROLE}")])
            .args(["-v", &format!("app_password={APP_PASSWORD}")])
            .arg("-f")
            .arg(&script)
            .output()
            .expect("run psql (install postgresql-client)");
        assert!(
            output.status.success(),
            "db/bootstrap.sql failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .arg(admin_url())
            .args(["-X", "-q", "-c"])
            .arg(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .output();
    }
}
