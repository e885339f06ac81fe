//! batch's settings, read once from environment variables at start-up; a setting that
//! cannot work stops it with a message naming the variable. [`settings`] lists every
//! variable with its default and meaning (`batch --help`, docs/local.md). A chunk closes at
//! `CHUNK_SIZE` orders or `CHUNK_BYTES` bytes, whichever comes first; which orders are
//! stored never depends on these: they only change how fast.

use std::time::Duration;

use common::config::{
    BINDING_TIMEOUT, BINDING_TIMEOUT_VAR, ConfigError, SERVICE, Service, Setting, Vars,
    binding_timeout,
};
use common::dapr::MAX_BODY_BYTES;
use common::telemetry;
use common::wire::largest_order;

use crate::source::{BLOCK_BYTES, OrdersSource};

/// The default `CHUNK_BYTES`: 1 MiB under daprd's limit, for the binding's SQL statement,
/// its other metadata and the framing around `params`.
pub const DEFAULT_CHUNK_BYTES: usize = 3 * 1024 * 1024;

/// Largest `CHUNK_SIZE`: order-processor's default `MAX_ORDERS_PER_REQUEST`.
pub const MAX_CHUNK_SIZE: usize = 5000;

/// How much longer than order-processor's binding call batch waits for an answer: for
/// reading the request, the conflict query and the way back through both sidecars.
pub const INVOKE_MARGIN_SECS: u64 = 5;

/// The cron binding's name (components/cron.yaml), which is also its route.
pub const DEFAULT_CRON_BINDING: &str = "cron";
/// The Dapr app id of order-processor.
pub const DEFAULT_TARGET_APP_ID: &str = "order-processor";

/// What batch reads besides [`SERVICE`], [`BINDING_TIMEOUT`] and the telemetry's variables,
/// as lines of [`common::config::settings`].
const SETTINGS: &str = "
APP_PORT | 6002 | port to listen on (0: any free port)
ORDERS_FILE | | the orders file, `{\"orders\":[...]}`; unset, the `orders.json` built into the binary
TARGET_APP_ID | order-processor | Dapr app id the orders go to
CRON_BINDING | cron | name of the cron binding, which is also its route
INVOKE_TIMEOUT_SECS | 30 | time limit of one call to order-processor; at least `BINDING_TIMEOUT_SECS` + 5, checked at start-up, so batch never sends a chunk again while order-processor may still be writing it
CHUNK_SIZE | 2000 | most orders per request (1–5000; chosen by the benchmark)
CHUNK_BYTES | 3145728 | most bytes per request (3 MiB), counted as the body and as the binding's `params`; from what the largest valid order takes to daprd's 4 MiB limit
CHUNKS_IN_FLIGHT | 4 | requests on their way at once (1–16)
INVOKE_MAX_RETRIES | 4 | retries of a failed call within a run
INVOKE_RETRY_DELAY_MS | 250 | first back-off delay; doubles up to 4 s, with jitter
RUN_DEADLINE_SECS | 600 | a run that takes longer stops and leaves what is not stored to the next run
";

/// Every variable batch reads, with its default and meaning.
pub fn settings() -> Vec<Setting> {
    common::config::settings(&[SERVICE, SETTINGS, BINDING_TIMEOUT, telemetry::SETTINGS])
}

/// Everything batch can be configured with.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where it listens (`APP_PORT` 6002 by default) and how it reaches its sidecar.
    pub service: Service,
    /// The orders file (`ORDERS_FILE`); the bundled `orders.json` when unset.
    pub source: OrdersSource,
    /// The app id orders go to (`TARGET_APP_ID`, default `order-processor`).
    pub target_app_id: String,
    /// Name of the cron input binding, which is also its route (`CRON_BINDING`, default `cron`).
    pub cron_binding: String,
    /// How long one call to order-processor may take (`INVOKE_TIMEOUT_SECS`, default 30:
    /// at least [`INVOKE_MARGIN_SECS`] more than `BINDING_TIMEOUT_SECS`).
    pub invoke_timeout: Duration,
    /// How a run cuts and sends.
    pub settings: Settings,
}

/// How a runner cuts and sends chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Most orders per chunk (`CHUNK_SIZE`, default 2000, chosen by the benchmark's sweep).
    pub chunk_size: usize,
    /// Most bytes per chunk, as the body and as the binding's params (`CHUNK_BYTES`).
    pub chunk_bytes: usize,
    /// Chunks on their way at once (`CHUNKS_IN_FLIGHT`, default 4).
    pub in_flight: usize,
    /// Retries of a call that may pass (`INVOKE_MAX_RETRIES`, default 4).
    pub max_retries: usize,
    /// The first back-off delay (`INVOKE_RETRY_DELAY_MS`, default 250); it doubles up to 4 s.
    pub retry_delay: Duration,
    /// How long a run may take before it leaves the rest for the next one
    /// (`RUN_DEADLINE_SECS`, default 600).
    pub deadline: Duration,
    /// Bytes of the file read at once ([`BLOCK_BYTES`]; tests read in smaller blocks).
    pub block: usize,
}

impl Config {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(&Vars::from_env())
    }

    /// Reads the configuration from `vars`.
    pub fn from_vars(vars: &Vars) -> Result<Self, ConfigError> {
        let file = vars.optional("ORDERS_FILE")?;
        let retry_ms = vars.number_in("INVOKE_RETRY_DELAY_MS", 250, 1..=60_000)?;
        Ok(Self {
            service: Service::from_vars(vars, 6002)?,
            source: file.map_or(OrdersSource::Bundled, |f| OrdersSource::File(f.into())),
            target_app_id: vars.name_or("TARGET_APP_ID", DEFAULT_TARGET_APP_ID)?,
            cron_binding: vars.name_or("CRON_BINDING", DEFAULT_CRON_BINDING)?,
            invoke_timeout: invoke_timeout(vars)?,
            settings: Settings {
                chunk_size: vars.number_in("CHUNK_SIZE", 2000, 1..=MAX_CHUNK_SIZE)?,
                chunk_bytes: chunk_bytes(vars)?,
                in_flight: vars.number_in("CHUNKS_IN_FLIGHT", 4, 1..=16)?,
                max_retries: vars.number_in("INVOKE_MAX_RETRIES", 4, 0..=20)?,
                retry_delay: Duration::from_millis(retry_ms),
                deadline: vars.seconds_in("RUN_DEADLINE_SECS", 600, 1..=86_400)?,
                block: BLOCK_BYTES,
            },
        })
    }
}

/// `CHUNK_BYTES`: at least what the largest valid order takes, so that every valid order
/// fits in a chunk; at most daprd's body limit.
fn chunk_bytes(vars: &Vars) -> Result<usize, ConfigError> {
    let bytes = vars.number_in("CHUNK_BYTES", DEFAULT_CHUNK_BYTES, 1..=MAX_BODY_BYTES)?;
    let smallest = largest_order().largest();
    if bytes < smallest {
        return Err(ConfigError::new(
            "CHUNK_BYTES",
            format!(
                "must be at least {smallest}, the bytes the largest valid order takes in a \
                 chunk (as the body and as the binding's params), got {bytes}"
            ),
        ));
    }
    Ok(bytes)
}

/// `INVOKE_TIMEOUT_SECS`: batch must wait longer than order-processor gives its binding
/// call, or it would send a chunk again while the first attempt is still being written.
fn invoke_timeout(vars: &Vars) -> Result<Duration, ConfigError> {
    let binding = binding_timeout(vars)?.as_secs();
    let least = binding + INVOKE_MARGIN_SECS;
    let secs = vars.number_in("INVOKE_TIMEOUT_SECS", least.max(30), 1..=600)?;
    if secs < least {
        return Err(ConfigError::new(
            "INVOKE_TIMEOUT_SECS",
            format!(
                "must be at least {least} s ({BINDING_TIMEOUT_VAR}, {binding} s, and \
                 {INVOKE_MARGIN_SECS} s more), got {secs}: batch would send a chunk again while \
                 order-processor is still writing it"
            ),
        ));
    }
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variable_read_is_listed_with_the_default_the_code_applies() {
        let vars = Vars::from_pairs([]);
        Config::from_vars(&vars).unwrap();
        let own = common::config::settings(&[SERVICE, SETTINGS, BINDING_TIMEOUT]);
        let mismatches = common::config::mismatches(&[&vars], &own);
        assert!(mismatches.is_empty(), "{mismatches:#?}");
    }

    #[test]
    fn docs_local_md_holds_the_settings_batch_lists() {
        let doc = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/local.md");
        common::config::doc_holds(&doc, "batch", &settings()).unwrap();
    }

    #[test]
    fn defaults_need_no_variables() {
        let config = Config::from_vars(&Vars::from_pairs([])).unwrap();
        assert_eq!(config.source, OrdersSource::Bundled);
        assert_eq!(
            (config.cron_binding.as_str(), config.target_app_id.as_str()),
            ("cron", "order-processor")
        );
        let settings = config.settings;
        assert_eq!(
            (
                settings.chunk_size,
                settings.chunk_bytes,
                settings.in_flight
            ),
            (2000, 3 << 20, 4)
        );
        assert_eq!(
            (config.invoke_timeout.as_secs(), settings.deadline.as_secs()),
            (30, 600)
        );
    }

    #[test]
    fn a_byte_budget_smaller_than_the_largest_valid_order_is_refused_at_start_up() {
        let smallest = largest_order().largest();
        let too_small = (smallest - 1).to_string();
        let error = Config::from_vars(&Vars::from_pairs([("CHUNK_BYTES", too_small.as_str())]))
            .unwrap_err();
        assert_eq!(error.var, "CHUNK_BYTES");
        assert!(
            error
                .reason
                .starts_with(&format!("must be at least {smallest}")),
            "{error}"
        );
        let just_enough = smallest.to_string();
        let config =
            Config::from_vars(&Vars::from_pairs([("CHUNK_BYTES", just_enough.as_str())])).unwrap();
        assert_eq!(config.settings.chunk_bytes, smallest);
    }

    #[test]
    fn timeouts_that_do_not_nest_are_refused_naming_both_variables() {
        let config =
            |pairs: &[(&str, &str)]| Config::from_vars(&Vars::from_pairs(pairs.iter().copied()));
        let error = config(&[("INVOKE_TIMEOUT_SECS", "15")]).unwrap_err();
        assert_eq!(error.var, "INVOKE_TIMEOUT_SECS");
        assert!(
            error.reason.contains("BINDING_TIMEOUT_SECS, 25 s"),
            "{error}"
        );
        let error = config(&[
            ("BINDING_TIMEOUT_SECS", "40"),
            ("INVOKE_TIMEOUT_SECS", "44"),
        ])
        .unwrap_err();
        assert!(error.reason.contains("at least 45 s"), "{error}");
        let raised = config(&[("BINDING_TIMEOUT_SECS", "40")]).unwrap();
        assert_eq!(
            raised.invoke_timeout.as_secs(),
            45,
            "the default follows a longer binding call"
        );
        let short = config(&[("BINDING_TIMEOUT_SECS", "2")]).unwrap();
        assert_eq!(
            short.invoke_timeout.as_secs(),
            30,
            "the default stays when it nests"
        );
    }

    #[test]
    fn orders_file_and_names_are_taken_from_the_environment() {
        let config =
            Config::from_vars(&Vars::from_pairs([("ORDERS_FILE", "/data/o.json")])).unwrap();
        assert_eq!(config.source, OrdersSource::File("/data/o.json".into()));
        let error = Config::from_vars(&Vars::from_pairs([("CRON_BINDING", "a/b")])).unwrap_err();
        assert_eq!(error.var, "CRON_BINDING");
        let error = Config::from_vars(&Vars::from_pairs([("CHUNK_SIZE", "5001")])).unwrap_err();
        assert_eq!(
            error.to_string(),
            "environment variable CHUNK_SIZE must be a whole number from 1 to 5000, got 5001"
        );
    }
}
