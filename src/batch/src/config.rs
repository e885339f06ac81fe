//! batch's settings, read once from environment variables at start-up. Besides those
//! the README lists, `CHUNK_BYTES` (default 3 MiB, from the size of the largest valid
//! order up to 4 MiB) bounds the bytes of one chunk, as its request body and as escaped
//! into the PostgreSQL binding's `params` (see [`crate::budget`]); a chunk closes at
//! `CHUNK_SIZE` orders or `CHUNK_BYTES` bytes, whichever comes first.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use common::config::{ConfigError, Vars};
use secrecy::SecretString;

use crate::budget::{DAPR_BODY_LIMIT, DEFAULT_CHUNK_BYTES, largest_order};
use crate::read::ReadLimits;
use crate::runner::Settings;
use crate::source::OrdersSource;

/// Everything batch can be configured with.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on (`APP_HOST`, default 127.0.0.1; containers set 0.0.0.0).
    pub host: IpAddr,
    /// Port to listen on (`APP_PORT`, default 6002; 0 picks a free one).
    pub port: u16,
    /// The orders file (`ORDERS_FILE`); the bundled `orders.json` when unset.
    pub source: OrdersSource,
    /// Orders per request to order-processor (`CHUNK_SIZE`, default 2000, chosen by the
    /// benchmark's sweep).
    pub chunk_size: usize,
    /// Bytes per request to order-processor, and per chunk escaped into the binding's
    /// `params` (`CHUNK_BYTES`, default 3 MiB).
    pub chunk_bytes: usize,
    /// Requests on their way at once (`CHUNKS_IN_FLIGHT`, default 4).
    pub chunks_in_flight: usize,
    /// The sidecar's HTTP port (`DAPR_HTTP_PORT`, default 3500).
    pub dapr_http_port: u16,
    /// Token the sidecar requires from the app (`DAPR_API_TOKEN`), if any.
    pub dapr_api_token: Option<SecretString>,
    /// Token the app requires from the sidecar on its API routes (`APP_API_TOKEN`), if any.
    pub app_api_token: Option<SecretString>,
    /// The app id orders go to (`TARGET_APP_ID`, default `order-processor`).
    pub target_app_id: String,
    /// Name of the cron input binding, which is also its route (`CRON_BINDING`, default `cron`).
    pub cron_binding: String,
    /// How long one call to order-processor may take (`INVOKE_TIMEOUT_SECS`, default 15).
    pub invoke_timeout: Duration,
    /// Retries of a failed call before the chunk waits for the next run (`INVOKE_MAX_RETRIES`, default 4).
    pub invoke_max_retries: usize,
    /// First back-off delay (`INVOKE_RETRY_DELAY_MS`, default 250); it doubles up to 4 s.
    pub invoke_retry_delay: Duration,
}

/// The cron binding's name (components/cron.yaml), which is also its route.
pub const DEFAULT_CRON_BINDING: &str = "cron";
/// The Dapr app id of order-processor.
pub const DEFAULT_TARGET_APP_ID: &str = "order-processor";

/// Largest `CHUNK_SIZE`: order-processor's default `MAX_ORDERS_PER_REQUEST`. (Bytes are
/// bounded by `CHUNK_BYTES`.)
pub const MAX_CHUNK_SIZE: usize = 5000;

impl Config {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(&Vars::from_env())
    }

    /// Reads the configuration from `vars`.
    pub fn from_vars(vars: &Vars) -> Result<Self, ConfigError> {
        let source = match vars.optional("ORDERS_FILE")? {
            Some(path) => OrdersSource::File(PathBuf::from(path)),
            None => OrdersSource::Bundled,
        };
        let route_name = |var: &str, default: &str| -> Result<String, ConfigError> {
            let name = vars.optional(var)?.unwrap_or_else(|| default.to_owned());
            if name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                Ok(name)
            } else {
                Err(ConfigError::new(
                    var,
                    format!("may hold only letters, digits, '-' and '_', got {name:?}"),
                ))
            }
        };
        Ok(Self {
            host: vars.parse_or("APP_HOST", IpAddr::from([127, 0, 0, 1]))?,
            port: vars.number_in("APP_PORT", 6002, 0..=u16::MAX)?,
            source,
            chunk_size: vars.number_in("CHUNK_SIZE", 2000, 1..=MAX_CHUNK_SIZE)?,
            chunk_bytes: chunk_bytes(vars)?,
            chunks_in_flight: vars.number_in("CHUNKS_IN_FLIGHT", 4, 1..=16)?,
            dapr_http_port: vars.number_in("DAPR_HTTP_PORT", 3500, 1..=u16::MAX)?,
            dapr_api_token: vars.optional_token("DAPR_API_TOKEN")?,
            app_api_token: vars.optional_token("APP_API_TOKEN")?,
            target_app_id: route_name("TARGET_APP_ID", DEFAULT_TARGET_APP_ID)?,
            cron_binding: route_name("CRON_BINDING", DEFAULT_CRON_BINDING)?,
            invoke_timeout: Duration::from_secs(vars.number_in(
                "INVOKE_TIMEOUT_SECS",
                15,
                1..=300,
            )?),
            invoke_max_retries: vars.number_in("INVOKE_MAX_RETRIES", 4, 0..=20)?,
            invoke_retry_delay: Duration::from_millis(vars.number_in(
                "INVOKE_RETRY_DELAY_MS",
                250,
                1..=60_000,
            )?),
        })
    }
}

/// `CHUNK_BYTES`: at least what the largest valid order takes, so that every valid order
/// fits in a chunk; at most daprd's body limit.
fn chunk_bytes(vars: &Vars) -> Result<usize, ConfigError> {
    let bytes = vars.number_in("CHUNK_BYTES", DEFAULT_CHUNK_BYTES, 1..=DAPR_BODY_LIMIT)?;
    let smallest = largest_order().largest();
    if bytes < smallest {
        return Err(ConfigError::new(
            "CHUNK_BYTES",
            format!(
                "must be at least {smallest}, the bytes the largest valid order takes in a \
                 chunk (escaped into the binding's params), got {bytes}"
            ),
        ));
    }
    Ok(bytes)
}

impl From<&Config> for Settings {
    fn from(config: &Config) -> Self {
        Self {
            chunk_size: config.chunk_size,
            chunk_bytes: config.chunk_bytes,
            in_flight: config.chunks_in_flight,
            max_retries: config.invoke_max_retries,
            retry_delay: config.invoke_retry_delay,
            read: ReadLimits::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_need_no_variables() {
        let config = Config::from_vars(&Vars::from_pairs([])).unwrap();
        assert_eq!(config.source, OrdersSource::Bundled);
        assert_eq!(config.cron_binding, "cron");
        assert_eq!(config.target_app_id, "order-processor");
        assert_eq!(config.chunk_size, 2000);
        assert_eq!(config.chunk_bytes, 3 * 1024 * 1024);
        assert_eq!(config.chunks_in_flight, 4);
    }

    #[test]
    fn a_byte_budget_smaller_than_the_largest_valid_order_is_refused_at_start_up() {
        let smallest = largest_order().largest();
        let too_small = (smallest - 1).to_string();
        let error = Config::from_vars(&Vars::from_pairs([("CHUNK_BYTES", too_small.as_str())]))
            .unwrap_err();
        assert_eq!(error.var, "CHUNK_BYTES");
        assert!(
            error.reason.starts_with(&format!(
                "must be at least {smallest}, the bytes the largest valid order takes"
            )),
            "{error}"
        );
        let just_enough = smallest.to_string();
        let config =
            Config::from_vars(&Vars::from_pairs([("CHUNK_BYTES", just_enough.as_str())])).unwrap();
        assert_eq!(config.chunk_bytes, smallest);
        let error = Config::from_vars(&Vars::from_pairs([("CHUNK_BYTES", "4194305")])).unwrap_err();
        assert_eq!(
            error.reason,
            "must be a whole number from 1 to 4194304, got 4194305"
        );
    }

    #[test]
    fn orders_file_is_taken_from_the_environment() {
        let config =
            Config::from_vars(&Vars::from_pairs([("ORDERS_FILE", "/data/o.json")])).unwrap();
        assert_eq!(config.source, OrdersSource::File("/data/o.json".into()));
    }

    #[test]
    fn chunk_size_beyond_the_limit_is_refused() {
        let error = Config::from_vars(&Vars::from_pairs([("CHUNK_SIZE", "5001")])).unwrap_err();
        assert_eq!(
            error.to_string(),
            "environment variable CHUNK_SIZE must be a whole number from 1 to 5000, got 5001"
        );
    }

    #[test]
    fn a_binding_name_that_is_not_a_route_is_refused() {
        let error = Config::from_vars(&Vars::from_pairs([("CRON_BINDING", "a/b")])).unwrap_err();
        assert_eq!(error.var, "CRON_BINDING");
    }
}
