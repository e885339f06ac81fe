//! order-processor's settings, read once from environment variables at start-up.

use std::net::IpAddr;
use std::time::Duration;

use common::config::{ConfigError, Vars};
use secrecy::SecretString;

/// Everything order-processor can be configured with.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on (`APP_HOST`, default 127.0.0.1; containers set 0.0.0.0).
    pub host: IpAddr,
    /// Port to listen on (`APP_PORT`, default 6001; 0 picks a free one).
    pub port: u16,
    /// The connection for reads and migrations (`DATABASE_URL`), as an ordinary role.
    pub database_url: SecretString,
    /// Most connections the pool opens (`DB_MAX_CONNECTIONS`, default 5).
    pub db_max_connections: u32,
    /// How long a query waits for a free connection (`DB_ACQUIRE_TIMEOUT_SECS`, default 5).
    pub db_acquire_timeout: Duration,
    /// How long start-up keeps retrying the migrations (`DB_STARTUP_TIMEOUT_SECS`, default 30).
    pub db_startup_timeout: Duration,
    /// The sidecar's HTTP port (`DAPR_HTTP_PORT`, default 3500).
    pub dapr_http_port: u16,
    /// The sidecar's gRPC port (`DAPR_GRPC_PORT`, default 50001).
    pub dapr_grpc_port: u16,
    /// Token the sidecar requires from the app (`DAPR_API_TOKEN`), if any.
    pub dapr_api_token: Option<SecretString>,
    /// Name of the PostgreSQL output binding component (`SQLDB_BINDING`, default `sqldb`).
    pub binding_name: String,
    /// Most orders one request may carry (`MAX_ORDERS_PER_REQUEST`, default 5000).
    pub max_orders_per_request: usize,
}

/// The largest request body accepted: daprd's own default limit (4 MiB).
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

impl Config {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(&Vars::from_env())
    }

    /// Reads the configuration from `vars`.
    pub fn from_vars(vars: &Vars) -> Result<Self, ConfigError> {
        Ok(Self {
            host: vars.parse_or("APP_HOST", IpAddr::from([127, 0, 0, 1]))?,
            port: vars.number_in("APP_PORT", 6001, 0..=u16::MAX)?,
            database_url: vars.secret("DATABASE_URL")?,
            db_max_connections: vars.number_in("DB_MAX_CONNECTIONS", 5, 1..=100)?,
            db_acquire_timeout: Duration::from_secs(vars.number_in(
                "DB_ACQUIRE_TIMEOUT_SECS",
                5,
                1..=60,
            )?),
            db_startup_timeout: Duration::from_secs(vars.number_in(
                "DB_STARTUP_TIMEOUT_SECS",
                30,
                0..=600,
            )?),
            dapr_http_port: vars.number_in("DAPR_HTTP_PORT", 3500, 1..=u16::MAX)?,
            dapr_grpc_port: vars.number_in("DAPR_GRPC_PORT", 50001, 1..=u16::MAX)?,
            dapr_api_token: vars.optional_secret("DAPR_API_TOKEN")?,
            binding_name: vars
                .optional("SQLDB_BINDING")?
                .unwrap_or_else(|| "sqldb".to_owned()),
            max_orders_per_request: vars.number_in("MAX_ORDERS_PER_REQUEST", 5000, 1..=10_000)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_url_is_required() {
        let error = Config::from_vars(&Vars::from_pairs([])).unwrap_err();
        assert_eq!(error.var, "DATABASE_URL");
    }

    #[test]
    fn defaults_match_the_components_and_the_run_script() {
        let config =
            Config::from_vars(&Vars::from_pairs([("DATABASE_URL", "postgres://x@y/z")])).unwrap();
        assert_eq!(config.port, 6001);
        assert_eq!(config.binding_name, "sqldb");
        assert_eq!(config.dapr_grpc_port, 50001);
        assert!(config.host.is_loopback());
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
