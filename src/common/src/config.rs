//! Reading configuration from environment variables. Every failure names the variable and
//! says what was wrong with it, so a service that cannot start says why in one line. Each
//! binary lists the variables it reads as [`Setting`]s, which its `--help` prints and
//! docs/local.md holds ([`settings_table`]); [`Vars::asked`] lets a test hold that list
//! against what the code reads and the defaults it applies.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::Display;
use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::str::FromStr;
use std::time::Duration;

use secrecy::SecretString;

use crate::dapr::Sidecar;

/// The variable both services read for how long order-processor gives one binding call.
pub const BINDING_TIMEOUT_VAR: &str = "BINDING_TIMEOUT_SECS";
/// Its default, in seconds: more than daprd's resiliency policy lets the call take in all
/// (components/resiliency.yaml: 3 tries of at most 5 s and the back-off between them, which
/// a test checks), less than batch waits for order-processor's answer
/// (`INVOKE_TIMEOUT_SECS`, which batch checks at start-up). Timeouts nest so that nobody
/// gives up on a call that someone it called is still working on.
pub const DEFAULT_BINDING_TIMEOUT_SECS: u64 = 25;

/// A variable a binary reads, as its `--help` and docs/local.md list it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// The variable.
    pub name: &'static str,
    /// Its default as the code applies it; empty when unset means something else, which
    /// `meaning` says.
    pub default: &'static str,
    /// What it sets.
    pub meaning: &'static str,
}

/// The binding's time limit, which both services read, as a line of [`settings`].
pub const BINDING_TIMEOUT: &str = "BINDING_TIMEOUT_SECS | 25 | seconds order-processor gives one \
    binding call; longer than the sidecar's resiliency policy allows the call in all \
    (components/resiliency.yaml), shorter than batch's `INVOKE_TIMEOUT_SECS`, which batch checks \
    at start-up";

/// The settings of `tables`, one per line: `NAME | default | meaning` (an empty default:
/// none, or one the meaning explains).
pub fn settings(tables: &[&'static str]) -> Vec<Setting> {
    let lines = tables.iter().flat_map(|table| table.lines());
    lines
        .filter_map(|line| {
            let mut cells = line.splitn(3, '|').map(str::trim);
            let (name, default, meaning) = (cells.next()?, cells.next()?, cells.next()?);
            (!name.is_empty()).then_some(Setting {
                name,
                default,
                meaning,
            })
        })
        .collect()
}

/// `settings` as a Markdown table, as `--help` prints it and docs/local.md holds it.
pub fn settings_table(settings: &[Setting]) -> String {
    let mut table = String::from("| variable | default | meaning |\n| --- | --- | --- |\n");
    for setting in settings {
        let default = match setting.default {
            "" => "—".to_owned(),
            default => format!("`{default}`"),
        };
        let (name, meaning) = (setting.name, setting.meaning);
        table.push_str(&format!("| `{name}` | {default} | {meaning} |\n"));
    }
    table
}

/// What `--help` says after its options: the variables, as a table.
pub fn help(settings: &[Setting]) -> String {
    format!(
        "Configured by environment variables only (empty counts as unset):\n\n{}",
        settings_table(settings)
    )
}

/// What does not match between the variables configurations read from `readings` (see
/// [`Vars::asked`]) and `settings`, the list of what they read: one line per variable read
/// but not listed, listed but not read, or listed with another default than the code
/// applies.
pub fn mismatches(readings: &[&Vars], settings: &[Setting]) -> Vec<String> {
    let mut asked: Vec<(String, Option<String>)> = Vec::new();
    for read in readings.iter().flat_map(|vars| vars.asked()) {
        if !asked.contains(&read) {
            asked.push(read);
        }
    }
    let mut found = Vec::new();
    for (name, default) in &asked {
        match settings.iter().find(|s| s.name == name) {
            None => found.push(format!("{name} is read but not listed")),
            Some(s) if s.default != default.as_deref().unwrap_or_default() => found.push(format!(
                "{name}: the code applies {default:?}, the list says {:?}",
                s.default
            )),
            Some(_) => {}
        }
    }
    for setting in settings {
        if !asked.iter().any(|(name, _)| name == setting.name) {
            found.push(format!("{} is listed but not read", setting.name));
        }
    }
    found
}

/// Whether `doc` holds `settings` as the table right after the line
/// `<!-- settings: {name} -->`; with `UPDATE_DOCS` set, writes it there first. For the tests that
/// keep docs/local.md generated from the code.
pub fn doc_holds(doc: &std::path::Path, name: &str, settings: &[Setting]) -> Result<(), String> {
    let text = std::fs::read_to_string(doc).map_err(|e| format!("{}: {e}", doc.display()))?;
    let marker = format!("<!-- settings: {name} -->\n");
    let start = text
        .find(&marker)
        .ok_or(format!("no {marker:?} in {}", doc.display()))?;
    let start = start + marker.len();
    let rows = text[start..].split_inclusive('\n');
    let end = start
        + rows
            .take_while(|row| row.starts_with('|'))
            .map(str::len)
            .sum::<usize>();
    let table = settings_table(settings);
    if text[start..end] == table {
        return Ok(());
    }
    if std::env::var_os("UPDATE_DOCS").is_some() {
        let updated = format!("{}{table}{}", &text[..start], &text[end..]);
        return std::fs::write(doc, updated).map_err(|e| e.to_string());
    }
    Err(format!(
        "{} does not hold the settings of {name} as the code lists them; run the test with \
         UPDATE_DOCS=1 to write them:\n{table}",
        doc.display()
    ))
}

/// How long order-processor gives one binding call (`BINDING_TIMEOUT_SECS`).
pub fn binding_timeout(vars: &Vars) -> Result<Duration, ConfigError> {
    vars.seconds_in(BINDING_TIMEOUT_VAR, DEFAULT_BINDING_TIMEOUT_SECS, 1..=300)
}

/// What both services read to listen and to reach their sidecar, as lines of [`settings`];
/// `APP_PORT`, whose default is each service's own, is in each service's list.
pub const SERVICE: &str = "
DAPR_HTTP_PORT | 3500 | the sidecar's HTTP port
DAPR_API_TOKEN | | token the sidecar requires, sent as `dapr-api-token`
APP_API_TOKEN | | token the service requires from its sidecar on its API routes (not the health checks); Container Apps sets it
APP_HOST | 127.0.0.1 | address to listen on (containers use `0.0.0.0`)
";

/// Where a service listens and how it reaches its sidecar ([`SERVICE`] and `APP_PORT`).
#[derive(Debug, Clone)]
pub struct Service {
    /// Address to listen on (`APP_HOST`).
    pub host: IpAddr,
    /// Port to listen on (`APP_PORT`; 0 picks a free one).
    pub port: u16,
    /// The sidecar's HTTP port (`DAPR_HTTP_PORT`).
    pub dapr_http_port: u16,
    /// Token the sidecar requires from the app (`DAPR_API_TOKEN`), if any.
    pub dapr_api_token: Option<SecretString>,
    /// Token the app requires from the sidecar on its API routes (`APP_API_TOKEN`), if any.
    pub app_api_token: Option<SecretString>,
}

impl Service {
    /// Reads [`SERVICE`]'s variables, and `APP_PORT` with `port` as its default.
    pub fn from_vars(vars: &Vars, port: u16) -> Result<Self, ConfigError> {
        Ok(Self {
            host: vars.parse_or("APP_HOST", IpAddr::from([127, 0, 0, 1]))?,
            port: vars.number_in("APP_PORT", port, 0..=u16::MAX)?,
            dapr_http_port: vars.number_in("DAPR_HTTP_PORT", 3500, 1..=u16::MAX)?,
            dapr_api_token: vars.optional_token("DAPR_API_TOKEN")?,
            app_api_token: vars.optional_token("APP_API_TOKEN")?,
        })
    }

    /// A client for the sidecar; each call may take `timeout`.
    pub fn sidecar(&self, timeout: Duration) -> Result<Sidecar, reqwest::Error> {
        Sidecar::new(self.dapr_http_port, self.dapr_api_token.clone(), timeout)
    }

    /// Binds the listener: in `main`, so that tests can serve on a port of their own.
    pub async fn listen(&self) -> std::io::Result<tokio::net::TcpListener> {
        let (host, port) = (self.host, self.port);
        let listener = tokio::net::TcpListener::bind((host, port)).await;
        listener.map_err(|e| {
            std::io::Error::new(e.kind(), format!("cannot listen on {host}:{port}: {e}"))
        })
    }
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
    /// Each variable asked for, in order, with the default applied when it is unset.
    asked: RefCell<Vec<(String, Option<String>)>>,
}

impl Vars {
    /// The process environment. Values that are not UTF-8 are kept as errors, not dropped.
    pub fn from_env() -> Self {
        let values = std::env::vars_os()
            .filter_map(|(name, value)| Some((name.into_string().ok()?, value.into_string().ok())))
            .collect();
        Self {
            values,
            asked: RefCell::default(),
        }
    }

    /// Fixed values, for tests.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let values = pairs
            .into_iter()
            .map(|(name, value)| (name.to_owned(), Some(value.to_owned())))
            .collect();
        Self {
            values,
            asked: RefCell::default(),
        }
    }

    /// Every variable read so far, in order, with the default applied when it is unset
    /// (`None`: none).
    pub fn asked(&self) -> Vec<(String, Option<String>)> {
        self.asked.borrow().clone()
    }

    fn ask(&self, var: &str, default: Option<String>) {
        let mut asked = self.asked.borrow_mut();
        if !asked.iter().any(|(name, _)| name == var) {
            asked.push((var.to_owned(), default));
        }
    }

    /// The value of `var`, or `None` when unset or empty.
    pub fn optional(&self, var: &str) -> Result<Option<String>, ConfigError> {
        self.ask(var, None);
        match self.values.get(var) {
            None => Ok(None),
            Some(None) => Err(ConfigError::new(var, "is not valid UTF-8")),
            Some(Some(value)) if value.trim().is_empty() => Ok(None),
            Some(Some(value)) => Ok(Some(value.clone())),
        }
    }

    /// The value of `var`, or `default` when unset or empty.
    pub fn text_or(&self, var: &str, default: &str) -> Result<String, ConfigError> {
        self.ask(var, Some(default.to_owned()));
        Ok(self.optional(var)?.unwrap_or_else(|| default.to_owned()))
    }

    /// A name that goes into a URL path (a Dapr app id or component name): letters, digits,
    /// '-' and '_'; `default` when unset or empty.
    pub fn name_or(&self, var: &str, default: &str) -> Result<String, ConfigError> {
        let name = self.text_or(var, default)?;
        if name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Ok(name);
        }
        let reason = format!("may hold only letters, digits, '-' and '_', got {name:?}");
        Err(ConfigError::new(var, reason))
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
        T: FromStr + Display,
        T::Err: Display,
    {
        self.ask(var, Some(default.to_string()));
        match self.optional(var)? {
            None => Ok(default),
            Some(raw) => raw
                .trim()
                .parse()
                .map_err(|error| ConfigError::new(var, format!("is not valid ({error}): {raw:?}"))),
        }
    }

    /// A duration of whole seconds in `range`, or `default` seconds when unset.
    pub fn seconds_in(
        &self,
        var: &str,
        default: u64,
        range: RangeInclusive<u64>,
    ) -> Result<Duration, ConfigError> {
        self.number_in(var, default, range).map(Duration::from_secs)
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
        self.ask(var, Some(default.to_string()));
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

    const LISTED: &str = "
PORT | 8080 | port to listen on
TOKEN | | a token, none when unset
";

    #[test]
    fn a_list_of_settings_is_held_against_what_was_read() {
        let settings = settings(&[LISTED]);
        assert_eq!(settings[1].default, "");
        assert!(settings_table(&settings).contains("| `TOKEN` | — | a token, none when unset |"));
        let vars = Vars::from_pairs([]);
        vars.number_in("PORT", 8080_u16, 1..=u16::MAX).unwrap();
        vars.optional("TOKEN").unwrap();
        assert!(mismatches(&[&vars], &settings).is_empty());
        vars.number_in("OTHER", 1_u8, 0..=9).unwrap();
        let other = Vars::from_pairs([]);
        other.number_in("PORT", 80_u16, 1..=u16::MAX).unwrap();
        assert_eq!(
            mismatches(&[&vars, &other], &settings),
            [
                "OTHER is read but not listed",
                "PORT: the code applies Some(\"80\"), the list says \"8080\""
            ],
            "a default other than the listed one, in any reading, is a mismatch"
        );
        assert_eq!(
            mismatches(&[&other], &settings),
            [
                "PORT: the code applies Some(\"80\"), the list says \"8080\"",
                "TOKEN is listed but not read"
            ]
        );
    }

    #[test]
    fn a_name_for_a_url_path_is_refused_with_other_characters() {
        let vars = Vars::from_pairs([("APP", "order/processor"), ("BINDING", "sql-db_2")]);
        let error = vars.name_or("APP", "x").unwrap_err();
        assert_eq!(error.var, "APP");
        assert!(error.reason.contains("\"order/processor\""), "{error}");
        assert_eq!(vars.name_or("BINDING", "x").unwrap(), "sql-db_2");
        assert_eq!(vars.name_or("UNSET", "cron").unwrap(), "cron");
    }

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
