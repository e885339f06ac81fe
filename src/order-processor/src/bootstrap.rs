//! `order-processor bootstrap`: prepares a PostgreSQL server for the app, signed in as the
//! server's administrator. In Azure a Container Apps job runs it inside the virtual network
//! as the Microsoft Entra administrator, which is not a superuser (a member of
//! `azure_pg_admin` with CREATEROLE and CREATEDB). It creates the app identity's role with
//! Azure's `pgaadauth_create_principal_with_oid`, creates the app's database (so that the
//! administrator owns it) and grants the role `CONNECT`, `TEMPORARY` and `CREATE` on it;
//! the app's own migrations then create the schema it owns. It needs no membership in, and
//! no ADMIN OPTION on, the role it created, which Azure's function may not give it. Safe to
//! run again, and from several processes at once (an advisory lock serialises them).

use std::time::Duration;

use anyhow::{Context, bail};
use backon::{ExponentialBuilder, Retryable};
use common::config::{ConfigError, Setting, Vars};
use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, Executor, PgConnection};

use crate::config::EntraDatabase;
use crate::db::is_not_yet_available;
use crate::entra::EntraSignIn;

/// How the bootstrap names itself to PostgreSQL.
const APPLICATION: &str = "order-processor-bootstrap";

/// The database the administrator signs in to first: where Azure keeps its `pgaadauth`
/// functions, and where the advisory lock is taken.
const SERVER_DATABASE: &str = "postgres";

/// The advisory lock key that serialises bootstraps of one server.
const LOCK_KEY: i64 = 0x6461_7072_2d62_6f6f; // "dapr-boo"

/// How the bootstrap signs in as the server's administrator.
#[derive(Debug, Clone)]
pub enum AdminLogin {
    /// A URL with a password (`DATABASE_ADMIN_URL`): servers that emulate Azure's, in tests.
    Url(SecretString),
    /// Microsoft Entra ID, as the administrator's managed identity (Azure): `DB_HOST`,
    /// `DB_PORT`, `DB_ADMIN_USER`, `AZURE_CLIENT_ID`.
    Entra(EntraDatabase),
}

/// What `order-processor bootstrap` reads besides the telemetry's variables, as lines of
/// [`common::config::settings`].
const SETTINGS: &str = "
DATABASE_ADMIN_URL | | PostgreSQL URL of the administrator (tests); unset, `DB_HOST` and `DB_ADMIN_USER` sign in with Microsoft Entra ID (Azure)
DB_HOST | | the server's host name, signed in to with Entra tokens over TLS with the server verified (`verify-full`)
DB_PORT | 5432 | the server's port (with `DB_HOST`)
DB_ADMIN_USER | | the Entra administrator's role: the bootstrap identity's name (with `DB_HOST`)
AZURE_CLIENT_ID | | the client id of the managed identity whose tokens sign in (with `DB_HOST`); unset, the container's only identity
APP_ROLE_OBJECT_ID | | the object (principal) id of the app's managed identity, a GUID
DB_NAME | | the app's database, created when it does not exist
APP_ROLE | | the app's role: its managed identity's name
DB_STARTUP_TIMEOUT_SECS | 300 | keep trying to reach the server this long
";

/// Every variable `order-processor bootstrap` reads, with its default and meaning.
pub fn settings() -> Vec<Setting> {
    common::config::settings(&[SETTINGS, common::telemetry::SETTINGS])
}

/// What the bootstrap is told.
#[derive(Debug, Clone)]
pub struct BootstrapConfig {
    /// How to sign in as the administrator.
    pub admin: AdminLogin,
    /// The app's database (`DB_NAME`); created when it does not exist.
    pub database: String,
    /// The app identity's role name, its identity's name (`APP_ROLE`).
    pub app_role: String,
    /// The app identity's object (principal) id (`APP_ROLE_OBJECT_ID`), a GUID.
    pub app_object_id: String,
    /// How long to keep trying to reach the server (`DB_STARTUP_TIMEOUT_SECS`, default 300).
    pub patience: Duration,
}

impl BootstrapConfig {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(&Vars::from_env())
    }

    /// Reads the configuration from `vars`.
    pub fn from_vars(vars: &Vars) -> Result<Self, ConfigError> {
        let admin = match vars.optional_secret("DATABASE_ADMIN_URL")? {
            Some(url) => AdminLogin::Url(url),
            None => AdminLogin::Entra(EntraDatabase::from_vars(vars, "DB_ADMIN_USER")?),
        };
        let app_object_id = vars.required("APP_ROLE_OBJECT_ID")?;
        if !is_guid(&app_object_id) {
            return Err(ConfigError::new(
                "APP_ROLE_OBJECT_ID",
                "is not a GUID (the object id of the app's managed identity, e.g. 00000000-0000-0000-0000-000000000000)",
            ));
        }
        Ok(Self {
            admin,
            database: vars.required("DB_NAME")?,
            app_role: vars.required("APP_ROLE")?,
            app_object_id,
            patience: vars.seconds_in("DB_STARTUP_TIMEOUT_SECS", 300, 0..=3600)?,
        })
    }
}

fn is_guid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(group, len)| group.len() == len && group.chars().all(|c| c.is_ascii_hexdigit()))
}

/// What a bootstrap changed: `false` everywhere when the server was prepared already.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Changes {
    /// The app's role was created.
    pub created_role: bool,
    /// The app's database was created.
    pub created_database: bool,
}

/// Prepares the server: the role, the database, the grants. See the module documentation.
pub async fn run(config: &BootstrapConfig) -> anyhow::Result<Changes> {
    let options = match &config.admin {
        AdminLogin::Url(url) => url
            .expose_secret()
            .parse::<PgConnectOptions>()
            .context("DATABASE_ADMIN_URL is not a valid PostgreSQL URL")?
            .database(SERVER_DATABASE),
        AdminLogin::Entra(database) => {
            let sign_in = EntraSignIn::new(database, APPLICATION)?;
            sign_in.connect_options(SERVER_DATABASE).await?.0
        }
    };
    let mut conn = connect(options.application_name(APPLICATION), config.patience).await?;
    // Held until the connection closes: bootstraps of one server run one after the other.
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(LOCK_KEY)
        .execute(&mut conn)
        .await?;
    let admin: String = sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(&mut conn)
        .await?;
    // The database first: one the administrator cannot grant on stops the bootstrap
    // before anything is created.
    let created_database = ensure_database(&mut conn, &admin, &config.database).await?;
    let changes = Changes {
        created_role: ensure_role(&mut conn, &config.app_role, &config.app_object_id).await?,
        created_database,
    };
    grant(&mut conn, &admin, &config.database, &config.app_role).await?;
    conn.close().await?;
    tracing::info!(
        role = %config.app_role,
        database = %config.database,
        administrator = %admin,
        created_role = changes.created_role,
        created_database = changes.created_database,
        "bootstrap done: the role may connect to the database and create its schema there"
    );
    Ok(changes)
}

/// Connects, retrying while the server (or, in Azure, the administrator's own role) is not
/// there yet, for at most `patience`.
async fn connect(options: PgConnectOptions, patience: Duration) -> anyhow::Result<PgConnection> {
    (|| PgConnection::connect_with(&options))
        .retry(
            ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(500))
                .with_max_delay(Duration::from_secs(10))
                .with_total_delay(Some(patience))
                .without_max_times(),
        )
        .when(is_not_yet_available)
        .notify(|error, delay| {
            tracing::warn!(%error, retry_in_ms = delay.as_millis(), "cannot sign in as the administrator yet");
        })
        .await
        .context("cannot sign in to the server as its administrator")
}

/// Creates the app's role through Azure's principal function unless it exists; refuses a
/// role that exists with administrative rights. Returns whether it created the role.
async fn ensure_role(conn: &mut PgConnection, role: &str, object_id: &str) -> anyhow::Result<bool> {
    let existing: Option<(bool, bool)> = sqlx::query_as(
        "SELECT rolsuper OR rolcreaterole OR rolcreatedb OR rolbypassrls OR rolreplication,
                EXISTS (SELECT FROM pg_auth_members m JOIN pg_roles a ON a.oid = m.roleid
                        WHERE m.member = r.oid AND a.rolname = 'azure_pg_admin')
         FROM pg_roles r WHERE rolname = $1",
    )
    .bind(role)
    .fetch_optional(&mut *conn)
    .await?;
    match existing {
        Some((false, false)) => {
            tracing::info!(%role, "the app's role exists");
            Ok(false)
        }
        Some(_) => bail!(
            "the role {role} exists with administrative rights (superuser, CREATEROLE, CREATEDB, \
             BYPASSRLS, REPLICATION or azure_pg_admin): order-processor must sign in as an \
             ordinary role; drop it or use another identity"
        ),
        None => {
            sqlx::query(
                "SELECT pgaadauth_create_principal_with_oid($1, $2, 'service', false, false)",
            )
            .bind(role)
            .bind(object_id)
            .execute(&mut *conn)
            .await
            .map_err(|error| match error.as_database_error().and_then(|e| e.code()) {
                Some(code) if code == "42883" => anyhow::anyhow!(
                    "this server has no pgaadauth_create_principal_with_oid: it is not an Azure \
                     Database for PostgreSQL flexible server with Microsoft Entra authentication"
                ),
                _ => anyhow::Error::new(error).context(format!("cannot create the role {role}")),
            })?;
            tracing::info!(%role, %object_id, "created the app's role for its managed identity");
            Ok(true)
        }
    }
}

/// Creates `database`, owned by the administrator, unless it exists; refuses one whose
/// owner's rights the administrator does not hold (it could not grant on it). Returns
/// whether it created it.
async fn ensure_database(
    conn: &mut PgConnection,
    admin: &str,
    database: &str,
) -> anyhow::Result<bool> {
    let existing: Option<(String, bool)> = sqlx::query_as(
        "SELECT pg_get_userbyid(datdba)::text, pg_has_role(current_user, datdba, 'USAGE')
         FROM pg_database WHERE datname = $1",
    )
    .bind(database)
    .fetch_optional(&mut *conn)
    .await?;
    match existing {
        Some((owner, true)) => {
            tracing::info!(%database, %owner, "the app's database exists");
            return Ok(false);
        }
        Some((owner, false)) => bail!(cannot_grant(admin, database, &owner)),
        None => {}
    }
    let create = statement(conn, "SELECT format('CREATE DATABASE %I', $1)", &[database]).await?;
    conn.execute(sqlx::AssertSqlSafe(create))
        .await
        .with_context(|| format!("cannot create the database {database}"))?;
    tracing::info!(%database, "created the app's database");
    Ok(true)
}

/// Grants `role` what it needs on `database`, and checks that it holds it: a `GRANT` by a
/// role that does not own the database only warns ("no privileges were granted").
async fn grant(
    conn: &mut PgConnection,
    admin: &str,
    database: &str,
    role: &str,
) -> anyhow::Result<()> {
    let sql = statement(
        conn,
        "SELECT format('GRANT CONNECT, TEMPORARY, CREATE ON DATABASE %I TO %I', $1, $2)",
        &[database, role],
    )
    .await?;
    conn.execute(sqlx::AssertSqlSafe(sql.clone()))
        .await
        .with_context(|| format!("bootstrap statement failed: {sql}"))?;
    let (granted, owner): (bool, String) = sqlx::query_as(
        "SELECT has_database_privilege($2, d.oid, 'CONNECT')
                AND has_database_privilege($2, d.oid, 'CREATE'),
                pg_get_userbyid(d.datdba)::text
         FROM pg_database d WHERE d.datname = $1",
    )
    .bind(database)
    .bind(role)
    .fetch_one(&mut *conn)
    .await?;
    if !granted {
        bail!(cannot_grant(admin, database, &owner));
    }
    tracing::info!(%role, %database, "granted CONNECT, TEMPORARY and CREATE");
    Ok(())
}

/// Why the administrator cannot prepare `database`, and what to do about it.
fn cannot_grant(admin: &str, database: &str, owner: &str) -> String {
    format!(
        "{admin} cannot grant CONNECT and CREATE on the database {database}, which {owner} \
         owns (a GRANT there would only warn \"no privileges were granted\"). Drop that \
         database if it is empty and run the bootstrap again: it then creates the database \
         as {admin}. Or have {owner} grant the app's role CONNECT, TEMPORARY and CREATE on it."
    )
}

/// A statement built by the server's `format()`, which quotes identifiers (`%I`).
async fn statement(
    conn: &mut PgConnection,
    builder: &'static str,
    args: &[&str],
) -> anyhow::Result<String> {
    let mut query = sqlx::query_scalar(builder);
    for arg in args {
        query = query.bind(*arg);
    }
    Ok(query.fetch_one(conn).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vars {
        Vars::from_pairs(pairs.iter().copied())
    }

    #[test]
    fn every_variable_read_is_listed_with_the_default_the_code_applies() {
        let guid = ("APP_ROLE_OBJECT_ID", "00000000-0000-0000-0000-000000000001");
        let app = [("DB_NAME", "orders"), ("APP_ROLE", "id-data"), guid];
        let url = vars(&[&app[..], &[("DATABASE_ADMIN_URL", "postgres://a@h/p")]].concat());
        let entra = vars(&[&app[..], &[("DB_HOST", "h"), ("DB_ADMIN_USER", "id-admin")]].concat());
        BootstrapConfig::from_vars(&url).unwrap();
        BootstrapConfig::from_vars(&entra).unwrap();
        let own = common::config::settings(&[SETTINGS]);
        let mismatches = common::config::mismatches(&[&url, &entra], &own);
        assert!(mismatches.is_empty(), "{mismatches:#?}");
    }

    #[test]
    fn the_object_id_must_be_a_guid() {
        let error = BootstrapConfig::from_vars(&vars(&[
            ("DATABASE_ADMIN_URL", "postgres://a:b@h/postgres"),
            ("DB_NAME", "orders"),
            ("APP_ROLE", "id-data"),
            ("APP_ROLE_OBJECT_ID", "not-a-guid"),
        ]))
        .unwrap_err();
        assert_eq!(error.var, "APP_ROLE_OBJECT_ID");
        assert!(error.reason.contains("GUID"), "{error}");
    }

    #[test]
    fn without_an_admin_url_the_entra_administrator_is_required() {
        let error = BootstrapConfig::from_vars(&vars(&[
            ("DB_HOST", "psql-x.postgres.database.azure.com"),
            ("DB_NAME", "orders"),
            ("APP_ROLE", "id-data"),
            ("APP_ROLE_OBJECT_ID", "0b9c6f1e-2a3d-4e5f-8a9b-0c1d2e3f4a5b"),
        ]))
        .unwrap_err();
        assert_eq!(error.var, "DB_ADMIN_USER");
    }

    #[test]
    fn guids_are_recognised() {
        assert!(is_guid("0b9c6f1e-2a3d-4e5f-8a9b-0c1d2e3f4a5b"));
        assert!(!is_guid("0b9c6f1e2a3d4e5f8a9b0c1d2e3f4a5b"));
        assert!(!is_guid("0b9c6f1e-2a3d-4e5f-8a9b-0c1d2e3f4a5g"));
        assert!(!is_guid("'; DROP ROLE x; --"));
    }
}
