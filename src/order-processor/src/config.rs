//! order-processor's settings, read once from environment variables at start-up.

use std::time::Duration;

use common::config::{BINDING_TIMEOUT, ConfigError, SERVICE, Service, Setting, Vars};
use common::telemetry;
use secrecy::SecretString;

/// How order-processor reaches PostgreSQL for reads and migrations.
#[derive(Debug, Clone)]
pub enum Database {
    /// A URL with a password (`DATABASE_URL`): local runs and tests.
    Url(SecretString),
    /// Microsoft Entra ID: a managed identity's access token as the password (Azure).
    Entra(EntraDatabase),
}

/// A PostgreSQL server that takes Microsoft Entra ID tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntraDatabase {
    /// Server host name (`DB_HOST`).
    pub host: String,
    /// Server port (`DB_PORT`, default 5432).
    pub port: u16,
    /// Database name (`DB_NAME`).
    pub name: String,
    /// The role to log in as: the managed identity's name (`DB_USER`).
    pub user: String,
    /// Client id of the user-assigned identity (`AZURE_CLIENT_ID`); the system-assigned
    /// identity when unset.
    pub client_id: Option<String>,
}

impl EntraDatabase {
    /// Reads `DB_HOST`, `DB_PORT`, `DB_NAME`, `AZURE_CLIENT_ID` and the role from `user_var`.
    pub fn from_vars(vars: &Vars, user_var: &str) -> Result<Self, ConfigError> {
        Ok(Self {
            host: vars.required("DB_HOST")?,
            port: vars.number_in("DB_PORT", 5432, 1..=u16::MAX)?,
            name: vars.required("DB_NAME")?,
            user: vars.required(user_var)?,
            client_id: vars.optional("AZURE_CLIENT_ID")?,
        })
    }
}

/// What order-processor reads besides [`SERVICE`], [`BINDING_TIMEOUT`] and the telemetry's
/// variables, as lines of [`common::config::settings`].
const SETTINGS: &str = "
DATABASE_URL | | PostgreSQL URL of an ordinary role (local runs and tests); unset, `DB_HOST`, `DB_NAME` and `DB_USER` sign in with Microsoft Entra ID (Azure)
DB_HOST | | the server's host name, signed in to with Entra tokens over TLS with the server verified (`verify-full`)
DB_PORT | 5432 | the server's port (with `DB_HOST`)
DB_NAME | | the database (with `DB_HOST`)
DB_USER | | the app's role: its managed identity's name (with `DB_HOST`)
AZURE_CLIENT_ID | | the client id of the managed identity whose tokens sign in (with `DB_HOST`); unset, the container's only identity
APP_PORT | 6001 | port to listen on (0: any free port)
DB_MAX_CONNECTIONS | 5 | pool size
DB_ACQUIRE_TIMEOUT_SECS | 5 | wait for a pooled connection
DB_STARTUP_TIMEOUT_SECS | 30 | keep retrying the migrations this long at start-up
DAPR_GRPC_PORT | 50001 | the sidecar's gRPC port (bindings)
SQLDB_BINDING | sqldb | name of the PostgreSQL binding component
MAX_ORDERS_PER_REQUEST | 5000 | most orders one request may carry
";

/// Every variable order-processor reads, with its default and meaning.
pub fn settings() -> Vec<Setting> {
    common::config::settings(&[SERVICE, SETTINGS, BINDING_TIMEOUT, telemetry::SETTINGS])
}

/// Everything order-processor can be configured with.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where it listens (`APP_PORT` 6001 by default) and how it reaches its sidecar.
    pub service: Service,
    /// The connection for reads and migrations, as an ordinary role: `DATABASE_URL`, or
    /// `DB_HOST`, `DB_NAME` and `DB_USER` for Microsoft Entra ID authentication.
    pub database: Database,
    /// Most connections the pool opens (`DB_MAX_CONNECTIONS`, default 5).
    pub db_max_connections: u32,
    /// How long a query waits for a free connection (`DB_ACQUIRE_TIMEOUT_SECS`, default 5).
    pub db_acquire_timeout: Duration,
    /// How long start-up keeps retrying the migrations (`DB_STARTUP_TIMEOUT_SECS`, default 30).
    pub db_startup_timeout: Duration,
    /// The sidecar's gRPC port (`DAPR_GRPC_PORT`, default 50001).
    pub dapr_grpc_port: u16,
    /// Name of the PostgreSQL output binding component (`SQLDB_BINDING`, default `sqldb`).
    pub binding_name: String,
    /// Most orders one request may carry (`MAX_ORDERS_PER_REQUEST`, default 5000).
    pub max_orders_per_request: usize,
    /// How long one binding call may take (`BINDING_TIMEOUT_SECS`, see
    /// [`common::config::DEFAULT_BINDING_TIMEOUT_SECS`]).
    pub binding_timeout: Duration,
}

/// The PostgreSQL binding's name (components/sqldb.yaml).
pub const DEFAULT_SQLDB_BINDING: &str = "sqldb";

impl Config {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(&Vars::from_env())
    }

    /// Reads the configuration from `vars`.
    pub fn from_vars(vars: &Vars) -> Result<Self, ConfigError> {
        let database = match vars.optional_secret("DATABASE_URL")? {
            Some(url) => Database::Url(url),
            None if vars.optional("DB_HOST")?.is_some() => {
                Database::Entra(EntraDatabase::from_vars(vars, "DB_USER")?)
            }
            None => {
                return Err(ConfigError::new(
                    "DATABASE_URL",
                    "is not set (or set DB_HOST, DB_NAME and DB_USER to sign in with Microsoft Entra ID)",
                ));
            }
        };
        Ok(Self {
            service: Service::from_vars(vars, 6001)?,
            database,
            db_max_connections: vars.number_in("DB_MAX_CONNECTIONS", 5, 1..=100)?,
            db_acquire_timeout: vars.seconds_in("DB_ACQUIRE_TIMEOUT_SECS", 5, 1..=60)?,
            db_startup_timeout: vars.seconds_in("DB_STARTUP_TIMEOUT_SECS", 30, 0..=3600)?,
            dapr_grpc_port: vars.number_in("DAPR_GRPC_PORT", 50001, 1..=u16::MAX)?,
            binding_name: vars.name_or("SQLDB_BINDING", DEFAULT_SQLDB_BINDING)?,
            max_orders_per_request: vars.number_in("MAX_ORDERS_PER_REQUEST", 5000, 1..=10_000)?,
            binding_timeout: common::config::binding_timeout(vars)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variable_read_is_listed_with_the_default_the_code_applies() {
        let (url, entra) = (
            Vars::from_pairs([("DATABASE_URL", "postgres://x@y/z")]),
            Vars::from_pairs([("DB_HOST", "h"), ("DB_NAME", "n"), ("DB_USER", "u")]),
        );
        Config::from_vars(&url).unwrap();
        Config::from_vars(&entra).unwrap();
        let own = common::config::settings(&[SERVICE, SETTINGS, BINDING_TIMEOUT]);
        let mismatches = common::config::mismatches(&[&url, &entra], &own);
        assert!(mismatches.is_empty(), "{mismatches:#?}");
    }

    #[test]
    fn docs_local_md_holds_the_settings_order_processor_lists() {
        let doc = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/local.md");
        common::config::doc_holds(&doc, "order-processor", &settings()).unwrap();
        let bootstrap = crate::bootstrap::settings();
        common::config::doc_holds(&doc, "order-processor bootstrap", &bootstrap).unwrap();
    }

    #[test]
    fn a_database_is_required() {
        let error = Config::from_vars(&Vars::from_pairs([])).unwrap_err();
        assert_eq!(error.var, "DATABASE_URL");
        assert!(error.reason.contains("DB_HOST"), "{error}");
    }

    #[test]
    fn defaults_match_the_components_and_the_run_script() {
        let config =
            Config::from_vars(&Vars::from_pairs([("DATABASE_URL", "postgres://x@y/z")])).unwrap();
        assert_eq!(config.service.port, 6001);
        assert_eq!(config.binding_name, "sqldb");
        assert_eq!(config.dapr_grpc_port, 50001);
        assert!(config.service.host.is_loopback());
        assert!(matches!(config.database, Database::Url(_)));
    }

    #[test]
    fn without_a_url_the_entra_settings_are_used_and_required() {
        let vars = Vars::from_pairs([
            ("DB_HOST", "psql-x.postgres.database.azure.com"),
            ("DB_NAME", "orders"),
            ("DB_USER", "id-data-x"),
            ("AZURE_CLIENT_ID", "00000000-0000-0000-0000-000000000001"),
        ]);
        let Database::Entra(entra) = Config::from_vars(&vars).unwrap().database else {
            panic!("expected Entra settings");
        };
        assert_eq!(entra.port, 5432);
        assert_eq!(entra.user, "id-data-x");

        let error = Config::from_vars(&Vars::from_pairs([("DB_HOST", "h")])).unwrap_err();
        assert_eq!(error.var, "DB_NAME");
    }

    #[test]
    fn out_of_range_limit_is_refused() {
        let vars = Vars::from_pairs([
            ("DATABASE_URL", "postgres://x@y/z"),
            ("MAX_ORDERS_PER_REQUEST", "20000"),
        ]);
        let error = Config::from_vars(&vars).unwrap_err();
        assert_eq!(error.var, "MAX_ORDERS_PER_REQUEST");
    }
}
