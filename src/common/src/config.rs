//! Reading configuration from environment variables. Every failure names the variable and
//! says what was wrong with it, so a service that cannot start says why in one line.

use std::collections::HashMap;
use std::fmt::Display;
use std::ops::RangeInclusive;
use std::str::FromStr;
use std::time::Duration;

use secrecy::SecretString;

/// The variable both services read for how long order-processor gives one binding call.
pub const BINDING_TIMEOUT_VAR: &str = "BINDING_TIMEOUT_SECS";
/// Its default, in seconds: more than daprd's resiliency policy lets the call take in all
/// (components/resiliency.yaml: 3 tries of at most 5 s and the back-off between them, which
/// a test checks), less than batch waits for order-processor's answer
/// (`INVOKE_TIMEOUT_SECS`, which batch checks at start-up). Timeouts nest so that nobody
/// gives up on a call that someone it called is still working on.
pub const DEFAULT_BINDING_TIMEOUT_SECS: u64 = 25;

/// How long order-processor gives one binding call (`BINDING_TIMEOUT_SECS`).
pub fn binding_timeout(vars: &Vars) -> Result<Duration, ConfigError> {
    vars.number_in(BINDING_TIMEOUT_VAR, DEFAULT_BINDING_TIMEOUT_SECS, 1..=300)
        .map(Duration::from_secs)
}

/// A configuration value that is missing or malformed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("environment variable {var} {reason}")]
pub struct ConfigError {
    /// The variable's name.
    pub var: String,
    /// What is wrong with it, e.g. "is not set".
    pub reason: String,
}

impl ConfigError {
    /// An error about `var`.
    pub fn new(var: &str, reason: impl Into<String>) -> Self {
        Self {
            var: var.to_owned(),
            reason: reason.into(),
        }
    }
}

/// A snapshot of the variables a service reads. Empty values count as unset.
#[derive(Debug, Clone, Default)]
pub struct Vars {
    values: HashMap<String, Option<String>>,
}

impl Vars {
    /// The process environment. Values that are not UTF-8 are kept as errors, not dropped.
    pub fn from_env() -> Self {
        let values = std::env::vars_os()
            .filter_map(|(name, value)| Some((name.into_string().ok()?, value.into_string().ok())))
            .collect();
        Self { values }
    }

    /// Fixed values, for tests.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let values = pairs
            .into_iter()
            .map(|(name, value)| (name.to_owned(), Some(value.to_owned())))
            .collect();
        Self { values }
    }

    /// The value of `var`, or `None` when unset or empty.
    pub fn optional(&self, var: &str) -> Result<Option<String>, ConfigError> {
        match self.values.get(var) {
            None => Ok(None),
            Some(None) => Err(ConfigError::new(var, "is not valid UTF-8")),
            Some(Some(value)) if value.trim().is_empty() => Ok(None),
            Some(Some(value)) => Ok(Some(value.clone())),
        }
    }

    /// The value of `var`; an error when unset or empty.
    pub fn required(&self, var: &str) -> Result<String, ConfigError> {
        self.optional(var)?
            .ok_or_else(|| ConfigError::new(var, "is not set"))
    }

    /// A secret such as a connection string; never printed by `Debug`.
    pub fn secret(&self, var: &str) -> Result<SecretString, ConfigError> {
        self.required(var).map(SecretString::from)
    }

    /// An optional secret, e.g. an API token that enables a check when present.
    pub fn optional_secret(&self, var: &str) -> Result<Option<SecretString>, ConfigError> {
        Ok(self.optional(var)?.map(SecretString::from))
    }

    /// An optional token that travels in an HTTP or gRPC header (`dapr-api-token`): only
    /// visible ASCII, so that it can never be dropped or mangled on the way.
    pub fn optional_token(&self, var: &str) -> Result<Option<SecretString>, ConfigError> {
        match self.optional(var)? {
            Some(token) if !token.bytes().all(|b| b.is_ascii_graphic()) => Err(ConfigError::new(
                var,
                "may hold only visible ASCII characters (no spaces or control characters): it is sent as a header",
            )),
            token => Ok(token.map(SecretString::from)),
        }
    }

    /// `var` parsed as `T`, or `default` when unset.
    pub fn parse_or<T>(&self, var: &str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: Display,
    {
        match self.optional(var)? {
            None => Ok(default),
            Some(raw) => raw
                .trim()
                .parse()
                .map_err(|error| ConfigError::new(var, format!("is not valid ({error}): {raw:?}"))),
        }
    }

    /// A whole number in `range`, or `default` when unset.
    pub fn number_in<T>(
        &self,
        var: &str,
        default: T,
        range: RangeInclusive<T>,
    ) -> Result<T, ConfigError>
    where
        T: FromStr + PartialOrd + Display + Copy,
    {
        let describe = || {
            format!(
                "must be a whole number from {} to {}",
                range.start(),
                range.end()
            )
        };
        let value = match self.optional(var)? {
            None => default,
            Some(raw) => raw
                .trim()
                .parse::<T>()
                .map_err(|_| ConfigError::new(var, format!("{}, got {raw:?}", describe())))?,
        };
        if range.contains(&value) {
            Ok(value)
        } else {
            Err(ConfigError::new(
                var,
                format!("{}, got {value}", describe()),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_required_variable_is_named() {
        let vars = Vars::from_pairs([]);
        let error = vars.required("DATABASE_URL").unwrap_err();
        assert_eq!(
            error.to_string(),
            "environment variable DATABASE_URL is not set"
        );
    }

    #[test]
    fn empty_value_counts_as_unset() {
        let vars = Vars::from_pairs([("CHUNK_SIZE", "  ")]);
        assert_eq!(vars.optional("CHUNK_SIZE").unwrap(), None);
        assert_eq!(vars.number_in("CHUNK_SIZE", 7u32, 1..=10).unwrap(), 7);
    }

    #[test]
    fn number_out_of_range_says_the_range_and_the_value() {
        let vars = Vars::from_pairs([("CHUNK_SIZE", "0")]);
        let error = vars.number_in("CHUNK_SIZE", 7u32, 1..=10).unwrap_err();
        assert_eq!(error.var, "CHUNK_SIZE");
        assert_eq!(error.reason, "must be a whole number from 1 to 10, got 0");
    }

    #[test]
    fn number_that_is_not_a_number_is_quoted() {
        let vars = Vars::from_pairs([("APP_PORT", "eighty")]);
        let error = vars.number_in("APP_PORT", 80u16, 1..=65535).unwrap_err();
        assert_eq!(
            error.reason,
            "must be a whole number from 1 to 65535, got \"eighty\""
        );
    }

    #[test]
    fn parse_or_reports_the_parser_error() {
        let vars = Vars::from_pairs([("APP_HOST", "not-an-ip")]);
        let error = vars
            .parse_or("APP_HOST", std::net::IpAddr::from([127, 0, 0, 1]))
            .unwrap_err();
        assert!(error.reason.contains("not-an-ip"), "{error}");
    }

    #[test]
    fn secret_is_not_printed_by_debug() {
        let vars = Vars::from_pairs([("DATABASE_URL", "postgres://u:hunter2@db/x")]);
        let secret = vars.secret("DATABASE_URL").unwrap();
        assert!(!format!("{secret:?}").contains("hunter2"));
    }

    #[test]
    fn a_token_with_characters_a_header_cannot_carry_is_refused() {
        let vars = Vars::from_pairs([("DAPR_API_TOKEN", "abc\u{e9}def"), ("OTHER", "a b")]);
        let error = vars.optional_token("DAPR_API_TOKEN").unwrap_err();
        assert_eq!(error.var, "DAPR_API_TOKEN");
        assert!(vars.optional_token("OTHER").is_err());
        let vars = Vars::from_pairs([("DAPR_API_TOKEN", "s3cret-TOKEN_1")]);
        assert!(vars.optional_token("DAPR_API_TOKEN").unwrap().is_some());
    }
}
