//! Configuration: turns the process's arguments and its
//! `ETCD_AWAIT_ELECTION_*` environment into a validated [`Config`].
//!
//! This module owns the command-line grammar ([`parse_args`]), the meaning
//! and validation of every `ETCD_AWAIT_ELECTION_*` variable ([`from_env`]),
//! the duration syntax ([`parse_duration`]) and the one-line start-up
//! [`Config::summary`]. It is pure logic: the only I/O is reading the
//! environment in [`from_process_env`]. It never reads the TLS files (the
//! etcd client does, and names the file in its own errors).
//!
//! Every error is a [`ConfigError`] naming the variable, the value given and
//! what was expected. A password is never shown: errors print `<redacted>`
//! and [`Credentials`]' `Debug` hides it.
//!
//! # Rules and decisions
//!
//! * **Election or not.** When none of `LOCK_NAME`, `IDENTITY` and
//!   `ENDPOINTS` is present (present = set, even to an empty string), the
//!   result is [`Mode::Disabled`] and the other variables are not inspected
//!   (as the Go tool: the command runs at once). When any of the three is
//!   present, all three are required and must be valid; a missing one is an
//!   error saying which present variable made it required. There is no
//!   silent fallback to running without the election.
//! * **Empty means unset** for every optional variable: `STATUS_ENDPOINT`,
//!   the durations `LEASE_DURATION`, `RENEW_DEADLINE`, `RETRY_PERIOD` (their
//!   defaults apply) and `ACQUIRE_TIMEOUT` (wait forever), `CACERT`, `CERT`,
//!   `KEY`, `USERNAME`, `PASSWORD`, `FORCE_ACQUIRE` (false) and `LOG_FORMAT`
//!   (text). Only the empty string counts: a whitespace-only duration is an
//!   error. `LOCK_NAME`, `IDENTITY` and `ENDPOINTS` set but empty are errors.
//! * **UTF-8.** Any value that is not valid UTF-8 is an error naming the
//!   variable (the value is shown lossily), file paths included.
//! * **Durations** (see [`parse_duration`]): a bare non-negative integer is
//!   seconds (`15`, as the Go tool); otherwise one or more
//!   `<integer>[.<fraction>]<unit>` groups with the case-sensitive units
//!   `ms`, `s`, `m`, `h` (`500ms`, `1m30s`, `1.5s`). Groups may come in any
//!   order and repeat, as Go's `time.ParseDuration` allows; their sum is the
//!   duration. A fraction is accepted only when the result is a whole number
//!   of milliseconds (`1.5s` yes, `1.0005s` and `1.5ms` no). No whitespace,
//!   sign, `.5s`, `1.s`, bare decimal (`1.5`), other unit (`5d`, `5sec`,
//!   `5S`, `µs`), NaN or infinity. Zero is rejected, and so is anything over
//!   one year (8760h).
//! * **Timings.** `LEASE_DURATION` (default 15s) must be whole seconds and at
//!   least 2s, since etcd leases are whole seconds. `RENEW_DEADLINE`
//!   (default 10s) and `RETRY_PERIOD` (default 2s) may use milliseconds. The
//!   order `LEASE_DURATION > RENEW_DEADLINE > RETRY_PERIOD` is required; a
//!   violation is reported on the smaller variable (`RENEW_DEADLINE`, or
//!   `RETRY_PERIOD`) and states the larger value, also when the smaller one
//!   is only defaulted.
//! * **Names.** `LOCK_NAME` and `IDENTITY` are used as given (no trimming):
//!   non-empty, no NUL byte, at most 1024 bytes.
//! * **Endpoints.** `ENDPOINTS` is split on `,`; items are trimmed and empty
//!   items dropped; at least one must remain and none may contain whitespace.
//!   Schemes and ports are left to the etcd client. An endpoint starting with
//!   `https://` (scheme compared case-insensitively) requires `CACERT`.
//! * **Status endpoint.** `host:port`, `[ipv6]:port` or `:port` with a port
//!   of 1 to 65535; the host is a name or IPv4 address made of ASCII letters,
//!   digits, `.`, `-` and `_`, or a bracketed IPv6 address without zone.
//! * **TLS.** `CERT` and `KEY` go together; with them `CACERT` is required
//!   (a scratch image has no system roots).
//! * **Credentials.** `USERNAME` and `PASSWORD` go together.
//! * **`FORCE_ACQUIRE`** is true for any non-empty value except, trimmed and
//!   ASCII case-insensitive, `0`, `false`, `no`, `off`, `f` and `n` (this set
//!   includes Go's `strconv.ParseBool` false spellings).
//! * **`LOG_FORMAT`** is `text` or `json`, trimmed, ASCII case-insensitive.
//! * **Command line.** Options are recognised only in first position:
//!   `--help`/`-h`, `--version`/`-V`, or `--` (skipped, so that a command
//!   named like an option can run). Everything else, from the first argument
//!   on, is the command. No command, or an empty command name, is a
//!   [`UsageError`].

use std::ffi::OsString;
use std::fmt;
use std::net::Ipv6Addr;
use std::path::PathBuf;
use std::time::Duration;

/// The prefix shared by every environment variable this tool reads.
pub const PREFIX: &str = "ETCD_AWAIT_ELECTION_";

/// The full name of one variable, as a `&'static str` literal.
macro_rules! var {
    ($suffix:literal) => {
        concat!("ETCD_AWAIT_ELECTION_", $suffix)
    };
}

const LOCK_NAME: &str = var!("LOCK_NAME");
const IDENTITY: &str = var!("IDENTITY");
const ENDPOINTS: &str = var!("ENDPOINTS");
const STATUS_ENDPOINT: &str = var!("STATUS_ENDPOINT");
const LEASE_DURATION: &str = var!("LEASE_DURATION");
const RENEW_DEADLINE: &str = var!("RENEW_DEADLINE");
const RETRY_PERIOD: &str = var!("RETRY_PERIOD");
const ACQUIRE_TIMEOUT: &str = var!("ACQUIRE_TIMEOUT");
const CACERT: &str = var!("CACERT");
const CERT: &str = var!("CERT");
const KEY: &str = var!("KEY");
const USERNAME: &str = var!("USERNAME");
const PASSWORD: &str = var!("PASSWORD");
const FORCE_ACQUIRE: &str = var!("FORCE_ACQUIRE");
const LOG_FORMAT: &str = var!("LOG_FORMAT");

const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(15);
const DEFAULT_RENEW_DEADLINE: Duration = Duration::from_secs(10);
const DEFAULT_RETRY_PERIOD: Duration = Duration::from_secs(2);
const MIN_LEASE_SECS: u64 = 2;
const MAX_NAME_BYTES: usize = 1024;
/// One year (365 days) in milliseconds: the largest duration accepted.
const MAX_DURATION_MS: u128 = 365 * 24 * 60 * 60 * 1000;
/// More fraction digits than this (after dropping trailing zeros) can never
/// be a whole number of milliseconds, whatever the unit.
const MAX_FRACTION_DIGITS: usize = 7;
const FALSY: [&str; 6] = ["0", "f", "false", "n", "no", "off"];
const REDACTED: &str = "<redacted>";

const LEASE_EXPECTED: &str = "whole seconds >= 2, e.g. 15 or 15s";
const TIMING_EXPECTED: &str = "a positive duration, e.g. 10, 10s, 500ms or 1m30s";
const ENDPOINTS_EXPECTED: &str =
    "comma-separated etcd endpoints, e.g. http://etcd-0:2379,http://etcd-1:2379";
const STATUS_EXPECTED: &str = "host:port, [ipv6]:port or :port with a port from 1 to 65535, \
     e.g. 127.0.0.1:1234";

// ---------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cli {
    /// Print [`usage`] and exit successfully.
    Help,
    /// Print the version and exit successfully.
    Version,
    /// Run this command (program followed by its arguments; never empty).
    Run(Vec<OsString>),
}

/// The command line could not be understood.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsageError {
    /// No command was given.
    MissingCommand,
    /// The command's program name is the empty string.
    EmptyCommand,
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UsageError::MissingCommand => f.write_str("no command given (see --help)"),
            UsageError::EmptyCommand => f.write_str("the command name is empty (see --help)"),
        }
    }
}

impl std::error::Error for UsageError {}

/// Parses the arguments (without `argv[0]`).
///
/// Only the first argument can be an option: `--help`/`-h`,
/// `--version`/`-V`, or `--`, which is skipped. Everything else, from the
/// first argument on, is the command, uninterpreted.
///
/// # Errors
///
/// [`UsageError`] when there is no command or its name is empty.
pub fn parse_args(args: impl IntoIterator<Item = OsString>) -> Result<Cli, UsageError> {
    let mut args = args.into_iter();
    let first = args.next().ok_or(UsageError::MissingCommand)?;
    let command: Vec<OsString> = match first.to_str() {
        Some("--help" | "-h") => return Ok(Cli::Help),
        Some("--version" | "-V") => return Ok(Cli::Version),
        Some("--") => args.collect(),
        _ => std::iter::once(first).chain(args).collect(),
    };
    match command.first() {
        None => Err(UsageError::MissingCommand),
        Some(program) if program.is_empty() => Err(UsageError::EmptyCommand),
        Some(_) => Ok(Cli::Run(command)),
    }
}

/// The usage text, listing the environment variables briefly.
#[must_use]
pub fn usage() -> &'static str {
    "\
Usage: etcd-await-election [--] COMMAND [ARGS...]
       etcd-await-election --help | --version

Runs COMMAND once this instance leads an etcd election. When none of
LOCK_NAME, IDENTITY and ENDPOINTS is set, COMMAND runs at once, without
an election.

Environment (each name prefixed with ETCD_AWAIT_ELECTION_):
  LOCK_NAME         election (lock) name; required for an election
  IDENTITY          this instance's identity, e.g. the pod name; required
  ENDPOINTS         comma-separated etcd endpoints; required
  STATUS_ENDPOINT   host:port for the leadership status endpoint
  LEASE_DURATION    lease time, whole seconds >= 2 (default 15s)
  RENEW_DEADLINE    renew deadline, below LEASE_DURATION (default 10s)
  RETRY_PERIOD      retry period, below RENEW_DEADLINE (default 2s)
  ACQUIRE_TIMEOUT   longest wait for leadership (default: no limit)
  CACERT            CA certificate file (PEM) for https endpoints
  CERT, KEY         client certificate and key files (PEM), together
  USERNAME, PASSWORD  etcd authentication, together
  FORCE_ACQUIRE     any value but 0/false/no: delete existing locks first
  LOG_FORMAT        text (default) or json

Durations: a bare number is seconds (15); otherwise units ms, s, m, h
(500ms, 1m30s, 1.5s). An empty variable counts as unset.
"
}

// ---------------------------------------------------------------------------
// Configuration types
// ---------------------------------------------------------------------------

/// Whether to take part in an election.
// Built once at start-up and matched at once: boxing `Config` would only
// make the callers' patterns clumsier.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// None of `LOCK_NAME`, `IDENTITY`, `ENDPOINTS` is set: run the command
    /// at once, without an election.
    Disabled,
    /// Join the election described by this configuration.
    Election(Config),
}

/// A validated election configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The election's name (`LOCK_NAME`).
    pub lock_name: String,
    /// This instance's identity, the value it campaigns with (`IDENTITY`).
    pub identity: String,
    /// etcd endpoints, trimmed, non-empty, at least one (`ENDPOINTS`).
    pub endpoints: Vec<String>,
    /// Where to serve the leadership status, as given (`STATUS_ENDPOINT`).
    pub status_endpoint: Option<String>,
    /// Lease time, whole seconds, at least 2s (`LEASE_DURATION`).
    pub lease_duration: Duration,
    /// Less than `lease_duration` (`RENEW_DEADLINE`).
    pub renew_deadline: Duration,
    /// Less than `renew_deadline`, more than zero (`RETRY_PERIOD`).
    pub retry_period: Duration,
    /// TLS file paths (`CACERT`, `CERT`, `KEY`).
    pub tls: TlsPaths,
    /// etcd authentication (`USERNAME`, `PASSWORD`).
    pub credentials: Option<Credentials>,
    /// Delete existing locks before campaigning (`FORCE_ACQUIRE`).
    pub force_acquire: bool,
    /// Longest wait for leadership; `None` waits forever (`ACQUIRE_TIMEOUT`).
    pub acquire_timeout: Option<Duration>,
    /// Log line format (`LOG_FORMAT`).
    pub log_format: LogFormat,
}

/// TLS file paths; not read here. If `cert` is set, so are `key` and
/// `cacert`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsPaths {
    /// CA certificate(s) that signed the etcd servers' certificates.
    pub cacert: Option<PathBuf>,
    /// Client certificate, for mutual TLS.
    pub cert: Option<PathBuf>,
    /// Client certificate's private key.
    pub key: Option<PathBuf>,
}

/// etcd user name and password. `Debug` does not show the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The etcd user name.
    pub username: String,
    /// The password; never log or display it.
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &REDACTED)
            .finish()
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (the default).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// A variable is missing or has a value that is not acceptable.
#[derive(Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The full variable name, e.g. `ETCD_AWAIT_ELECTION_LEASE_DURATION`.
    pub variable: String,
    /// The value given (lossily decoded), `None` if unset (or empty where
    /// empty means unset). `<redacted>` for `PASSWORD`.
    pub value: Option<String>,
    /// What was expected, or why the variable is required.
    pub expected: String,
}

impl ConfigError {
    /// An error about a value that was given.
    fn invalid(variable: &str, value: &str, expected: impl Into<String>) -> Self {
        let value = if variable == PASSWORD {
            REDACTED
        } else {
            value
        };
        ConfigError {
            variable: variable.to_owned(),
            value: Some(value.to_owned()),
            expected: expected.into(),
        }
    }

    /// An error about a variable that is not set (or empty).
    fn unset(variable: &str, expected: impl Into<String>) -> Self {
        ConfigError {
            variable: variable.to_owned(),
            value: None,
            expected: expected.into(),
        }
    }

    /// The value to show: never a password.
    fn shown_value(&self) -> Option<&str> {
        match self.value.as_deref() {
            Some(_) if self.variable == PASSWORD => Some(REDACTED),
            other => other,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.shown_value() {
            Some(value) => write!(
                f,
                "{}={:?}: expected {}",
                self.variable, value, self.expected
            ),
            None => write!(f, "{} is not set: {}", self.variable, self.expected),
        }
    }
}

impl fmt::Debug for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigError")
            .field("variable", &self.variable)
            .field("value", &self.shown_value())
            .field("expected", &self.expected)
            .finish()
    }
}

impl std::error::Error for ConfigError {}

// ---------------------------------------------------------------------------
// Reading the environment
// ---------------------------------------------------------------------------

/// Looks a variable up by its full name.
type Getter<'a> = &'a dyn Fn(&str) -> Option<OsString>;

/// Reads the configuration from the process environment.
///
/// # Errors
///
/// As [`from_env`].
pub fn from_process_env() -> Result<Mode, ConfigError> {
    from_env(|name: &str| std::env::var_os(name))
}

/// Reads the configuration through `get`, which is given a full variable
/// name and returns its value, `None` when unset.
///
/// # Errors
///
/// The first [`ConfigError`] found: a missing required variable or a value
/// that is invalid or inconsistent with another.
pub fn from_env(get: impl Fn(&str) -> Option<OsString>) -> Result<Mode, ConfigError> {
    let get: Getter = &get;
    let trigger = [LOCK_NAME, IDENTITY, ENDPOINTS]
        .into_iter()
        .find(|name| get(name).is_some());
    match trigger {
        None => Ok(Mode::Disabled),
        Some(trigger) => election_config(get, trigger).map(Mode::Election),
    }
}

/// Builds the configuration once `trigger` showed an election is wanted.
fn election_config(get: Getter, trigger: &str) -> Result<Config, ConfigError> {
    let lock_name = required(get, LOCK_NAME, trigger)?;
    let identity = required(get, IDENTITY, trigger)?;
    let endpoints = required(get, ENDPOINTS, trigger)?;
    let lock_name = name(LOCK_NAME, lock_name, "lock name")?;
    let identity = name(IDENTITY, identity, "identity")?;
    let endpoints = parse_endpoints(&endpoints)?;
    let status_endpoint = status_endpoint(get)?;
    let (lease_duration, renew_deadline, retry_period) = timings(get)?;
    let tls = tls_paths(get, &endpoints)?;
    let credentials = credentials(get)?;
    let force_acquire = force_acquire(get)?;
    let acquire_timeout = acquire_timeout(get)?;
    let log_format = log_format(get)?;
    Ok(Config {
        lock_name,
        identity,
        endpoints,
        status_endpoint,
        lease_duration,
        renew_deadline,
        retry_period,
        tls,
        credentials,
        force_acquire,
        acquire_timeout,
        log_format,
    })
}

/// The value of `name` as UTF-8; `None` when unset.
fn text(get: Getter, name: &str) -> Result<Option<String>, ConfigError> {
    match get(name) {
        None => Ok(None),
        Some(value) => value
            .into_string()
            .map(Some)
            .map_err(|value| ConfigError::invalid(name, &value.to_string_lossy(), "valid UTF-8")),
    }
}

/// Like [`text`], but an empty value counts as unset.
fn optional(get: Getter, name: &str) -> Result<Option<String>, ConfigError> {
    Ok(text(get, name)?.filter(|value| !value.is_empty()))
}

/// One of the three election variables, required because `trigger` is set.
fn required(get: Getter, name: &str, trigger: &str) -> Result<String, ConfigError> {
    text(get, name)?.ok_or_else(|| {
        ConfigError::unset(
            name,
            format!(
                "required because {trigger} is set (an election needs LOCK_NAME, IDENTITY and \
                 ENDPOINTS; unset all three to run the command without one)"
            ),
        )
    })
}

/// `LOCK_NAME` or `IDENTITY`: non-empty, no NUL, at most 1024 bytes.
fn name(var: &str, value: String, what: &str) -> Result<String, ConfigError> {
    let problem = if value.is_empty() {
        "it is empty"
    } else if value.contains('\0') {
        "it contains a NUL byte"
    } else if value.len() > MAX_NAME_BYTES {
        "it is too long"
    } else {
        return Ok(value);
    };
    Err(ConfigError::invalid(
        var,
        &value,
        format!("a non-empty {what} of at most {MAX_NAME_BYTES} bytes without NUL ({problem})"),
    ))
}

/// Splits `ENDPOINTS` into trimmed, non-empty items without whitespace.
fn parse_endpoints(raw: &str) -> Result<Vec<String>, ConfigError> {
    let items: Vec<String> = raw
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::to_owned)
        .collect();
    let problem = if items.is_empty() {
        "no endpoint given".to_owned()
    } else if let Some(bad) = items.iter().find(|item| has_whitespace(item)) {
        format!("{bad:?} contains whitespace")
    } else {
        return Ok(items);
    };
    Err(ConfigError::invalid(
        ENDPOINTS,
        raw,
        format!("{ENDPOINTS_EXPECTED} ({problem})"),
    ))
}

fn has_whitespace(s: &str) -> bool {
    s.chars().any(char::is_whitespace)
}

/// `STATUS_ENDPOINT`: optional `host:port`.
fn status_endpoint(get: Getter) -> Result<Option<String>, ConfigError> {
    let Some(raw) = optional(get, STATUS_ENDPOINT)? else {
        return Ok(None);
    };
    match check_host_port(&raw) {
        Ok(()) => Ok(Some(raw)),
        Err(problem) => Err(ConfigError::invalid(
            STATUS_ENDPOINT,
            &raw,
            format!("{STATUS_EXPECTED} ({problem})"),
        )),
    }
}

/// Checks the shape of `host:port`, `[ipv6]:port` or `:port`.
fn check_host_port(s: &str) -> Result<(), String> {
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("it contains whitespace or control characters".to_owned());
    }
    if s.contains("://") {
        return Err("give host:port, not a URL".to_owned());
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err("the :port is missing".to_owned());
    };
    check_port(port)?;
    check_host(host)
}

fn check_port(port: &str) -> Result<(), String> {
    if port.is_empty() {
        return Err("the port number is missing".to_owned());
    }
    if !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("port {port:?} is not a number"));
    }
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("port {port} is out of range")),
        Ok(_) => Ok(()),
    }
}

fn check_host(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Ok(());
    }
    if let Some(inner) = host.strip_prefix('[') {
        return match inner.strip_suffix(']') {
            Some(addr) if addr.parse::<Ipv6Addr>().is_ok() => Ok(()),
            _ => Err(format!("{host:?} is not a bracketed IPv6 address")),
        };
    }
    if host.contains(':') {
        return Err("an IPv6 address needs brackets, e.g. [::1]:1234".to_owned());
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_');
    if host.chars().all(allowed) {
        Ok(())
    } else {
        Err(format!("{host:?} is not a host name or IP address"))
    }
}

// ---------------------------------------------------------------------------
// Timings
// ---------------------------------------------------------------------------

/// A duration variable's value, and the raw text if it was given.
struct Timing {
    value: Duration,
    raw: Option<String>,
}

/// Lease, renew deadline and retry period, validated and ordered.
fn timings(get: Getter) -> Result<(Duration, Duration, Duration), ConfigError> {
    let lease = timing(get, LEASE_DURATION, DEFAULT_LEASE_DURATION, LEASE_EXPECTED)?;
    let renew = timing(get, RENEW_DEADLINE, DEFAULT_RENEW_DEADLINE, TIMING_EXPECTED)?;
    let retry = timing(get, RETRY_PERIOD, DEFAULT_RETRY_PERIOD, TIMING_EXPECTED)?;
    ensure_less(&renew, RENEW_DEADLINE, lease.value, LEASE_DURATION)?;
    ensure_less(&retry, RETRY_PERIOD, renew.value, RENEW_DEADLINE)?;
    Ok((lease.value, renew.value, retry.value))
}

/// Reads one timing; unset or empty gives `default`.
fn timing(
    get: Getter,
    var: &str,
    default: Duration,
    expected: &str,
) -> Result<Timing, ConfigError> {
    match optional(get, var)? {
        None => Ok(Timing {
            value: default,
            raw: None,
        }),
        Some(raw) => Ok(Timing {
            value: duration_value(var, &raw, expected)?,
            raw: Some(raw),
        }),
    }
}

/// Parses a duration variable's value, with the lease's extra rules.
fn duration_value(var: &str, raw: &str, expected: &str) -> Result<Duration, ConfigError> {
    let checked = parse_duration(raw).and_then(|value| {
        if var == LEASE_DURATION {
            check_lease(value).map(|()| value)
        } else {
            Ok(value)
        }
    });
    checked.map_err(|problem| ConfigError::invalid(var, raw, format!("{expected} ({problem})")))
}

/// etcd leases are whole seconds; below 2s there is no room to renew.
fn check_lease(value: Duration) -> Result<(), String> {
    if value.subsec_nanos() != 0 {
        Err("not a whole number of seconds: etcd leases are whole seconds".to_owned())
    } else if value.as_secs() < MIN_LEASE_SECS {
        Err(format!("less than {MIN_LEASE_SECS}s"))
    } else {
        Ok(())
    }
}

/// Requires `small < large`; the error is about the smaller variable.
fn ensure_less(
    small: &Timing,
    small_var: &str,
    large: Duration,
    large_var: &str,
) -> Result<(), ConfigError> {
    if small.value < large {
        return Ok(());
    }
    let large = format_duration(large);
    Err(match &small.raw {
        Some(raw) => {
            ConfigError::invalid(small_var, raw, format!("less than {large_var} ({large})"))
        }
        None => ConfigError::unset(
            small_var,
            format!(
                "its default {} is not less than {large_var} ({large}); set it lower",
                format_duration(small.value)
            ),
        ),
    })
}

/// `ACQUIRE_TIMEOUT`: unset or empty means wait forever.
fn acquire_timeout(get: Getter) -> Result<Option<Duration>, ConfigError> {
    match optional(get, ACQUIRE_TIMEOUT)? {
        None => Ok(None),
        Some(raw) => duration_value(ACQUIRE_TIMEOUT, &raw, TIMING_EXPECTED).map(Some),
    }
}

/// Parses a duration: a bare non-negative integer is seconds (`15`);
/// otherwise one or more `<integer>[.<fraction>]<unit>` groups with units
/// `ms`, `s`, `m`, `h` (`500ms`, `1m30s`, `1.5s`), summed. The result must
/// be a whole number of milliseconds, more than zero and at most one year.
///
/// # Errors
///
/// A short description of what is wrong, without repeating the input.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    if s.is_empty() {
        return Err("the value is empty".to_owned());
    }
    if has_whitespace(s) {
        return Err("whitespace is not allowed".to_owned());
    }
    if s.starts_with('-') {
        return Err("negative durations are not allowed".to_owned());
    }
    if s.starts_with('+') {
        return Err("a '+' sign is not allowed".to_owned());
    }
    let millis = if s.bytes().all(|b| b.is_ascii_digit()) {
        digits_value(s).saturating_mul(1000)
    } else {
        groups_millis(s)?
    };
    if millis == 0 {
        return Err("zero is not allowed".to_owned());
    }
    if millis > MAX_DURATION_MS {
        return Err("too large: the maximum is 1 year, 8760h".to_owned());
    }
    u64::try_from(millis)
        .map(Duration::from_millis)
        .map_err(|_| "too large: the maximum is 1 year, 8760h".to_owned())
}

/// The value of an all-digit string, saturating (and so still "too large").
fn digits_value(digits: &str) -> u128 {
    digits.bytes().fold(0u128, |acc, b| {
        acc.saturating_mul(10)
            .saturating_add(u128::from(b.wrapping_sub(b'0')))
    })
}

/// Sums `<integer>[.<fraction>]<unit>` groups, in milliseconds.
fn groups_millis(s: &str) -> Result<u128, String> {
    let mut rest = s;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let (millis, after) = group_millis(rest)?;
        total = total.saturating_add(millis);
        rest = after;
    }
    Ok(total)
}

/// Splits `s` after its leading ASCII characters matching `pred`.
fn split_leading(s: &str, pred: impl Fn(u8) -> bool) -> (&str, &str) {
    let end = s.bytes().position(|b| !pred(b)).unwrap_or(s.len());
    // `end` follows ASCII bytes only, so it is a char boundary.
    s.split_at(end)
}

/// Parses one group at the start of `s`; returns its milliseconds and the
/// rest of `s`.
fn group_millis(s: &str) -> Result<(u128, &str), String> {
    let (integer, rest) = split_leading(s, |b| b.is_ascii_digit());
    if integer.is_empty() {
        return Err(format!("a number was expected at {s:?}"));
    }
    let (fraction, rest) = match rest.strip_prefix('.') {
        None => ("", rest),
        Some(after_dot) => {
            let (fraction, rest) = split_leading(after_dot, |b| b.is_ascii_digit());
            if fraction.is_empty() {
                return Err(format!("digits were expected after {integer}."));
            }
            (fraction, rest)
        }
    };
    let (unit, rest) = split_leading(rest, |b| b.is_ascii_alphabetic());
    let unit_millis = unit_millis(unit, rest)?;
    let millis = digits_value(integer).saturating_mul(unit_millis);
    let fraction_millis = fraction_millis(fraction, unit_millis)
        .ok_or_else(|| format!("{integer}.{fraction}{unit} is finer than a millisecond"))?;
    Ok((millis.saturating_add(fraction_millis), rest))
}

/// Milliseconds per `unit`; `rest` is what follows it, for the error.
fn unit_millis(unit: &str, rest: &str) -> Result<u128, String> {
    match unit {
        "ms" => Ok(1),
        "s" => Ok(1_000),
        "m" => Ok(60_000),
        "h" => Ok(3_600_000),
        "" => match rest.chars().next() {
            None => Err("a unit ms, s, m or h is missing after the last number; \
                         only a whole number alone means seconds"
                .to_owned()),
            Some(c) => Err(format!(
                "unexpected character {c:?}; units are ms, s, m and h"
            )),
        },
        other => Err(format!(
            "unknown unit {other:?}; units are lower-case ms, s, m and h"
        )),
    }
}

/// The exact milliseconds of `0.<fraction>` units, `None` if not whole.
fn fraction_millis(fraction: &str, unit_millis: u128) -> Option<u128> {
    let significant = fraction.trim_end_matches('0');
    if significant.len() > MAX_FRACTION_DIGITS {
        return None;
    }
    let numerator = digits_value(significant).checked_mul(unit_millis)?;
    let exponent = u32::try_from(significant.len()).ok()?;
    let denominator = 10u128.checked_pow(exponent)?;
    (numerator % denominator == 0).then(|| numerator / denominator)
}

/// Formats a duration for messages and the summary: `15s` or `500ms`.
fn format_duration(value: Duration) -> String {
    let millis = value.as_millis();
    if millis % 1000 == 0 {
        format!("{}s", millis / 1000)
    } else {
        format!("{millis}ms")
    }
}

// ---------------------------------------------------------------------------
// TLS, credentials, flags
// ---------------------------------------------------------------------------

/// `CACERT`, `CERT`, `KEY`: paths that must come in workable combinations.
fn tls_paths(get: Getter, endpoints: &[String]) -> Result<TlsPaths, ConfigError> {
    let cacert = optional(get, CACERT)?.map(PathBuf::from);
    let cert = optional(get, CERT)?.map(PathBuf::from);
    let key = optional(get, KEY)?.map(PathBuf::from);
    match (&cert, &key) {
        (Some(_), None) => return Err(missing_partner(KEY, CERT)),
        (None, Some(_)) => return Err(missing_partner(CERT, KEY)),
        _ => {}
    }
    if cacert.is_none() {
        if cert.is_some() {
            return Err(ConfigError::unset(
                CACERT,
                format!(
                    "required because {CERT} and {KEY} are set (no system CA roots are used: \
                     give the CA that signed the etcd servers' certificates)"
                ),
            ));
        }
        if let Some(https) = endpoints.iter().find(|e| is_https(e)) {
            return Err(ConfigError::unset(
                CACERT,
                format!(
                    "required because {ENDPOINTS} has the https endpoint {https:?} \
                     (no system CA roots are used)"
                ),
            ));
        }
    }
    Ok(TlsPaths { cacert, cert, key })
}

fn missing_partner(missing: &str, given: &str) -> ConfigError {
    ConfigError::unset(
        missing,
        format!("required because {given} is set (they go together)"),
    )
}

fn is_https(endpoint: &str) -> bool {
    endpoint
        .get(..8)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"))
}

/// `USERNAME` and `PASSWORD`: both or neither.
fn credentials(get: Getter) -> Result<Option<Credentials>, ConfigError> {
    match (optional(get, USERNAME)?, optional(get, PASSWORD)?) {
        (None, None) => Ok(None),
        (Some(username), Some(password)) => Ok(Some(Credentials { username, password })),
        (Some(_), None) => Err(missing_partner(PASSWORD, USERNAME)),
        (None, Some(_)) => Err(missing_partner(USERNAME, PASSWORD)),
    }
}

/// `FORCE_ACQUIRE`: any non-empty value except the falsy spellings.
fn force_acquire(get: Getter) -> Result<bool, ConfigError> {
    Ok(text(get, FORCE_ACQUIRE)?.is_some_and(|value| is_truthy(&value)))
}

fn is_truthy(value: &str) -> bool {
    let value = value.trim();
    !value.is_empty() && !FALSY.iter().any(|no| value.eq_ignore_ascii_case(no))
}

/// `LOG_FORMAT`: `text` (default) or `json`.
fn log_format(get: Getter) -> Result<LogFormat, ConfigError> {
    let Some(raw) = text(get, LOG_FORMAT)? else {
        return Ok(LogFormat::Text);
    };
    let value = raw.trim();
    if value.is_empty() || value.eq_ignore_ascii_case("text") {
        Ok(LogFormat::Text)
    } else if value.eq_ignore_ascii_case("json") {
        Ok(LogFormat::Json)
    } else {
        Err(ConfigError::invalid(LOG_FORMAT, &raw, "text or json"))
    }
}

// ---------------------------------------------------------------------------
// Summary
// ---------------------------------------------------------------------------

impl Config {
    /// One line of `key=value` pairs for the start-up log. Never contains
    /// the password.
    pub fn summary(&self) -> String {
        let tls = match (&self.tls.cert, &self.tls.cacert) {
            (Some(_), _) => "mutual",
            (None, Some(_)) => "ca",
            (None, None) => "none",
        };
        let auth = match &self.credentials {
            None => "none".to_owned(),
            Some(credentials) => format!("user:{}", log_value(&credentials.username)),
        };
        let status = self
            .status_endpoint
            .as_deref()
            .map_or_else(|| "none".to_owned(), log_value);
        let acquire_timeout = self
            .acquire_timeout
            .map_or_else(|| "none".to_owned(), format_duration);
        let log_format = match self.log_format {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        };
        [
            format!("lock={}", log_value(&self.lock_name)),
            format!("identity={}", log_value(&self.identity)),
            format!("endpoints={}", log_value(&self.endpoints.join(","))),
            format!("lease={}", format_duration(self.lease_duration)),
            format!("renew={}", format_duration(self.renew_deadline)),
            format!("retry={}", format_duration(self.retry_period)),
            format!("status={status}"),
            format!("tls={tls}"),
            format!("auth={auth}"),
            format!("force_acquire={}", self.force_acquire),
            format!("acquire_timeout={acquire_timeout}"),
            format!("log_format={log_format}"),
        ]
        .join(" ")
    }
}

/// A value as is when it is plain printable ASCII, else quoted and escaped,
/// so that the summary stays one parseable line.
fn log_value(value: &str) -> String {
    let plain = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_graphic() && c != '"' && c != '\\');
    if plain {
        value.to_owned()
    } else {
        format!("{value:?}")
    }
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    type Env = HashMap<String, OsString>;
    type Pairs<'a> = &'a [(&'a str, &'a str)];

    /// An environment from `(suffix, value)` pairs.
    fn env(pairs: &[(&str, &str)]) -> Env {
        pairs
            .iter()
            .map(|(suffix, value)| (format!("{PREFIX}{suffix}"), OsString::from(value)))
            .collect()
    }

    /// A minimal valid election environment plus `pairs` (which override).
    fn base(pairs: &[(&str, &str)]) -> Env {
        let mut map = env(&[
            ("LOCK_NAME", "jobs"),
            ("IDENTITY", "pod-1"),
            ("ENDPOINTS", "http://etcd-0:2379"),
        ]);
        map.extend(env(pairs));
        map
    }

    fn run(map: &Env) -> Result<Mode, ConfigError> {
        from_env(|k| map.get(k).cloned())
    }

    fn config(map: &Env) -> Config {
        match run(map) {
            Ok(Mode::Election(config)) => config,
            other => panic!("expected an election config, got {other:?}"),
        }
    }

    fn error(map: &Env) -> ConfigError {
        match run(map) {
            Err(err) => err,
            Ok(mode) => panic!("expected an error, got {mode:?}"),
        }
    }

    fn full(suffix: &str) -> String {
        format!("{PREFIX}{suffix}")
    }

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn variable_names_share_the_prefix() {
        for name in [
            LOCK_NAME,
            IDENTITY,
            ENDPOINTS,
            STATUS_ENDPOINT,
            LEASE_DURATION,
            RENEW_DEADLINE,
            RETRY_PERIOD,
            ACQUIRE_TIMEOUT,
            CACERT,
            CERT,
            KEY,
            USERNAME,
            PASSWORD,
            FORCE_ACQUIRE,
            LOG_FORMAT,
        ] {
            assert!(name.starts_with(PREFIX), "{name}");
            let suffix = &name[PREFIX.len()..];
            assert!(usage().contains(suffix), "usage lacks {suffix}");
        }
    }

    #[test]
    fn disabled_when_none_of_the_three_is_present() {
        assert_eq!(run(&Env::new()), Ok(Mode::Disabled));
        let others = env(&[
            ("LEASE_DURATION", "garbage"),
            ("STATUS_ENDPOINT", ":1"),
            ("FORCE_ACQUIRE", "1"),
        ]);
        assert_eq!(run(&others), Ok(Mode::Disabled));
    }

    #[test]
    fn any_of_the_three_present_even_empty_requires_all() {
        for (present, missing) in [
            ("LOCK_NAME", "IDENTITY"),
            ("IDENTITY", "LOCK_NAME"),
            ("ENDPOINTS", "LOCK_NAME"),
        ] {
            for value in ["", "x"] {
                let err = error(&env(&[(present, value)]));
                assert_eq!(err.variable, full(missing));
                assert_eq!(err.value, None);
                assert!(err.expected.contains(&full(present)), "{err}");
            }
        }
    }

    #[test]
    fn missing_identity_when_lock_name_set() {
        let err = error(&env(&[("LOCK_NAME", "jobs"), ("ENDPOINTS", "http://a:1")]));
        assert!(
            err.to_string().starts_with(
                "ETCD_AWAIT_ELECTION_IDENTITY is not set: required because \
                 ETCD_AWAIT_ELECTION_LOCK_NAME is set"
            ),
            "{err}"
        );
        let err = error(&env(&[("LOCK_NAME", "jobs"), ("IDENTITY", "p")]));
        assert_eq!(err.variable, full("ENDPOINTS"));
    }

    #[test]
    fn all_defaults() {
        let config = config(&base(&[]));
        assert_eq!(
            config,
            Config {
                lock_name: "jobs".into(),
                identity: "pod-1".into(),
                endpoints: vec!["http://etcd-0:2379".into()],
                status_endpoint: None,
                lease_duration: Duration::from_secs(15),
                renew_deadline: Duration::from_secs(10),
                retry_period: Duration::from_secs(2),
                tls: TlsPaths::default(),
                credentials: None,
                force_acquire: false,
                acquire_timeout: None,
                log_format: LogFormat::Text,
            }
        );
        assert_eq!(
            config.summary(),
            "lock=jobs identity=pod-1 endpoints=http://etcd-0:2379 lease=15s renew=10s \
             retry=2s status=none tls=none auth=none force_acquire=false \
             acquire_timeout=none log_format=text"
        );
    }

    #[test]
    fn empty_optional_values_mean_default() {
        let config = config(&base(&[
            ("STATUS_ENDPOINT", ""),
            ("LEASE_DURATION", ""),
            ("RENEW_DEADLINE", ""),
            ("RETRY_PERIOD", ""),
            ("ACQUIRE_TIMEOUT", ""),
            ("CACERT", ""),
            ("CERT", ""),
            ("KEY", ""),
            ("USERNAME", ""),
            ("PASSWORD", ""),
            ("FORCE_ACQUIRE", ""),
            ("LOG_FORMAT", ""),
        ]));
        assert_eq!(config, self::config(&base(&[])));
    }

    #[test]
    fn every_option_set() {
        let config = config(&base(&[
            ("ENDPOINTS", " https://a:2379 ,, https://b:2379,"),
            ("STATUS_ENDPOINT", "[::1]:8080"),
            ("LEASE_DURATION", "1m"),
            ("RENEW_DEADLINE", "45s"),
            ("RETRY_PERIOD", "1.5s"),
            ("ACQUIRE_TIMEOUT", "1h30m"),
            ("CACERT", "/pki/ca.crt"),
            ("CERT", "/pki/c.crt"),
            ("KEY", "/pki/c.key"),
            ("USERNAME", "root"),
            ("PASSWORD", "s3cret"),
            ("FORCE_ACQUIRE", "true"),
            ("LOG_FORMAT", "JSON"),
        ]));
        assert_eq!(config.endpoints, ["https://a:2379", "https://b:2379"]);
        assert_eq!(config.status_endpoint.as_deref(), Some("[::1]:8080"));
        assert_eq!(config.lease_duration, Duration::from_secs(60));
        assert_eq!(config.renew_deadline, Duration::from_secs(45));
        assert_eq!(config.retry_period, Duration::from_millis(1500));
        assert_eq!(config.acquire_timeout, Some(Duration::from_secs(5400)));
        assert_eq!(config.tls.cacert, Some(PathBuf::from("/pki/ca.crt")));
        assert_eq!(config.tls.cert, Some(PathBuf::from("/pki/c.crt")));
        assert_eq!(config.tls.key, Some(PathBuf::from("/pki/c.key")));
        assert_eq!(
            config.credentials,
            Some(Credentials {
                username: "root".into(),
                password: "s3cret".into()
            })
        );
        assert!(config.force_acquire);
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(
            config.summary(),
            "lock=jobs identity=pod-1 endpoints=https://a:2379,https://b:2379 lease=60s \
             renew=45s retry=1500ms status=[::1]:8080 tls=mutual auth=user:root \
             force_acquire=true acquire_timeout=5400s log_format=json"
        );
    }

    #[test]
    fn summary_quotes_unusual_values_and_shows_ca_only_tls() {
        let config = config(&base(&[
            ("LOCK_NAME", "my lock"),
            ("IDENTITY", "p\"1\n"),
            ("CACERT", "/ca.pem"),
        ]));
        let summary = config.summary();
        assert!(summary.contains("lock=\"my lock\""), "{summary}");
        assert!(summary.contains("identity=\"p\\\"1\\n\""), "{summary}");
        assert!(summary.contains("tls=ca"), "{summary}");
        assert!(!summary.contains('\n'));
    }

    #[test]
    fn duration_forms() {
        let ms = Duration::from_millis;
        for (text, expected) in [
            ("15", ms(15_000)),
            ("0015", ms(15_000)),
            ("15s", ms(15_000)),
            ("500ms", ms(500)),
            ("1m", ms(60_000)),
            ("1h", ms(3_600_000)),
            ("1m30s", ms(90_000)),
            ("1h2m3s4ms", ms(3_723_004)),
            ("30s1m", ms(90_000)),
            ("1s1s", ms(2_000)),
            ("1.5s", ms(1_500)),
            ("1.500s", ms(1_500)),
            ("0.001s", ms(1)),
            ("1.0ms", ms(1)),
            ("0.5m", ms(30_000)),
            ("0.000125h", ms(450)),
            ("2.5h", ms(9_000_000)),
            ("8760h", ms(31_536_000_000)),
            ("31536000", ms(31_536_000_000)),
        ] {
            assert_eq!(parse_duration(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn duration_rejections() {
        for text in [
            "", " ", "\t", " 15", "15 ", "1 s", "-5", "-5s", "+5", "+5s", "5d", "5sec", "5S",
            "5MS", "5µs", "5us", "5ns", "NaN", "inf", "infinity", "1.5", "1.", ".5s", "1.s",
            "1..5s", "1.0005s", "1.5ms", "0", "0s", "0ms", "0.0s", "8761h", "31536001", "1m30",
            "s", "ms", "1h-5m", "1e3s", "0x10", "1_000s", "15s,", "١٥",
        ] {
            let result = parse_duration(text);
            assert!(result.is_err(), "{text:?} gave {result:?}");
        }
        assert!(parse_duration(&"9".repeat(60)).is_err_and(|e| e.contains("1 year")));
        assert!(parse_duration("9000h").is_err_and(|e| e.contains("1 year")));
        assert!(parse_duration("5S").is_err_and(|e| e.contains("unknown unit")));
        assert!(parse_duration("1.0005s").is_err_and(|e| e.contains("millisecond")));
    }

    #[test]
    fn format_duration_round_trips() {
        for millis in [1u64, 500, 1_000, 1_500, 60_000, 31_536_000_000] {
            let value = Duration::from_millis(millis);
            assert_eq!(parse_duration(&format_duration(value)), Ok(value));
        }
    }

    #[test]
    fn bad_values_name_variable_and_value() {
        let long_name = "x".repeat(1025);
        let cases: &[(&str, &str)] = &[
            ("LEASE_DURATION", "abc"),
            ("LEASE_DURATION", "-5"),
            ("LEASE_DURATION", "+5"),
            ("LEASE_DURATION", "5d"),
            ("LEASE_DURATION", "5sec"),
            ("LEASE_DURATION", "5S"),
            ("LEASE_DURATION", "NaN"),
            ("LEASE_DURATION", "inf"),
            ("LEASE_DURATION", "1500ms"),
            ("LEASE_DURATION", "1"),
            ("LEASE_DURATION", "0"),
            ("LEASE_DURATION", "1.5"),
            ("LEASE_DURATION", "9000h"),
            ("LEASE_DURATION", "99999999999999999999999999"),
            ("LEASE_DURATION", " "),
            ("LEASE_DURATION", " 15"),
            ("RENEW_DEADLINE", "1m30"),
            ("RENEW_DEADLINE", "0s"),
            ("RENEW_DEADLINE", ".5s"),
            ("RENEW_DEADLINE", "1.s"),
            ("RENEW_DEADLINE", "15"),
            ("RETRY_PERIOD", "1.0005s"),
            ("RETRY_PERIOD", "1.5ms"),
            ("RETRY_PERIOD", "5µs"),
            ("RETRY_PERIOD", "1h-5m"),
            ("RETRY_PERIOD", "10s"),
            ("ACQUIRE_TIMEOUT", "forever"),
            ("ACQUIRE_TIMEOUT", "0"),
            ("ACQUIRE_TIMEOUT", "-1s"),
            ("STATUS_ENDPOINT", "1234"),
            ("STATUS_ENDPOINT", "localhost:0"),
            ("STATUS_ENDPOINT", "localhost:65536"),
            ("STATUS_ENDPOINT", "localhost:99999999999999999999"),
            ("STATUS_ENDPOINT", "localhost:http"),
            ("STATUS_ENDPOINT", "localhost:-1"),
            ("STATUS_ENDPOINT", "::1:8080"),
            ("STATUS_ENDPOINT", "[::1]"),
            ("STATUS_ENDPOINT", "[]:80"),
            ("STATUS_ENDPOINT", "[1.2.3.4]:80"),
            ("STATUS_ENDPOINT", "[::1:80"),
            ("STATUS_ENDPOINT", "http://localhost:8080"),
            ("STATUS_ENDPOINT", "host:"),
            ("STATUS_ENDPOINT", "local host:80"),
            ("STATUS_ENDPOINT", "a/b:80"),
            ("ENDPOINTS", ","),
            ("ENDPOINTS", ""),
            ("ENDPOINTS", "  "),
            ("ENDPOINTS", "http://a:2379, http://b :2379"),
            ("LOCK_NAME", ""),
            ("LOCK_NAME", "a\0b"),
            ("LOCK_NAME", &long_name),
            ("IDENTITY", ""),
            ("IDENTITY", "p\0"),
            ("IDENTITY", &long_name),
            ("LOG_FORMAT", "yaml"),
            ("LOG_FORMAT", "text/json"),
        ];
        assert!(cases.len() >= 30);
        for (suffix, value) in cases {
            let err = error(&base(&[(suffix, value)]));
            let shown = err.to_string();
            assert_eq!(err.variable, full(suffix), "{shown}");
            assert_eq!(err.value.as_deref(), Some(*value), "{shown}");
            assert!(shown.contains(&full(suffix)), "{shown}");
            assert!(shown.contains(&format!("{value:?}")), "{shown}");
            assert!(shown.contains(": expected "), "{shown}");
        }
    }

    #[test]
    fn lease_error_message_format() {
        let err = error(&base(&[("LEASE_DURATION", "abc")]));
        assert!(
            err.to_string().starts_with(
                "ETCD_AWAIT_ELECTION_LEASE_DURATION=\"abc\": expected whole seconds >= 2, \
                 e.g. 15 or 15s"
            ),
            "{err}"
        );
    }

    #[test]
    fn lease_must_be_whole_seconds_of_at_least_two() {
        let err = error(&base(&[("LEASE_DURATION", "1500ms")]));
        assert_eq!(err.variable, full("LEASE_DURATION"));
        assert!(err.expected.contains("whole"), "{err}");
        for ok in ["2s", "2", "2000ms", "1m", "1.5m"] {
            let config = config(&base(&[
                ("LEASE_DURATION", ok),
                ("RENEW_DEADLINE", "1500ms"),
                ("RETRY_PERIOD", "1s"),
            ]));
            assert!(config.lease_duration >= Duration::from_secs(2), "{ok}");
        }
    }

    #[test]
    fn renew_must_be_less_than_lease() {
        let err = error(&base(&[("RENEW_DEADLINE", "15")]));
        assert_eq!(
            err.to_string(),
            "ETCD_AWAIT_ELECTION_RENEW_DEADLINE=\"15\": expected less than \
             ETCD_AWAIT_ELECTION_LEASE_DURATION (15s)"
        );
        let err = error(&base(&[("LEASE_DURATION", "20"), ("RENEW_DEADLINE", "1m")]));
        assert_eq!(err.variable, full("RENEW_DEADLINE"));
        assert!(err.expected.contains("(20s)"), "{err}");
    }

    #[test]
    fn defaulted_renew_not_less_than_short_lease() {
        let err = error(&base(&[("LEASE_DURATION", "5")]));
        assert_eq!(err.variable, full("RENEW_DEADLINE"));
        assert_eq!(err.value, None);
        let shown = err.to_string();
        assert!(shown.contains("default 10s"), "{shown}");
        assert!(
            shown.contains("ETCD_AWAIT_ELECTION_LEASE_DURATION (5s)"),
            "{shown}"
        );
        let config = config(&base(&[("LEASE_DURATION", "5"), ("RENEW_DEADLINE", "3")]));
        assert_eq!(config.renew_deadline, Duration::from_secs(3));
    }

    #[test]
    fn retry_must_be_less_than_renew() {
        let err = error(&base(&[("RETRY_PERIOD", "10s")]));
        assert_eq!(err.variable, full("RETRY_PERIOD"));
        assert!(err
            .to_string()
            .contains("ETCD_AWAIT_ELECTION_RENEW_DEADLINE (10s)"));
        let err = error(&base(&[("RENEW_DEADLINE", "2s")]));
        assert_eq!(err.variable, full("RETRY_PERIOD"));
        assert_eq!(err.value, None);
        let config = config(&base(&[
            ("RENEW_DEADLINE", "2s"),
            ("RETRY_PERIOD", "500ms"),
        ]));
        assert_eq!(config.retry_period, Duration::from_millis(500));
    }

    #[test]
    fn tls_combinations() {
        let cases: &[(Pairs, Option<&str>)] = &[
            (&[("CERT", "/c")], Some("KEY")),
            (&[("KEY", "/k")], Some("CERT")),
            (&[("CERT", "/c"), ("KEY", "/k")], Some("CACERT")),
            (&[("CERT", "/c"), ("KEY", "/k"), ("CACERT", "/ca")], None),
            (&[("CACERT", "/ca")], None),
            (&[("ENDPOINTS", "http://a:1,https://b:2")], Some("CACERT")),
            (&[("ENDPOINTS", "HTTPS://b:2")], Some("CACERT")),
            (&[("ENDPOINTS", "https://b:2"), ("CACERT", "/ca")], None),
            (
                &[("ENDPOINTS", "https://b:2"), ("CACERT", "")],
                Some("CACERT"),
            ),
        ];
        for (pairs, missing) in cases {
            let result = run(&base(pairs));
            match missing {
                None => assert!(matches!(result, Ok(Mode::Election(_))), "{pairs:?}"),
                Some(missing) => {
                    let err = result.expect_err("an error");
                    assert_eq!(err.variable, full(missing), "{pairs:?}");
                    assert_eq!(err.value, None);
                    assert!(err.to_string().contains("is not set: required because"));
                }
            }
        }
    }

    #[test]
    fn https_without_cacert_names_the_endpoint() {
        let err = error(&base(&[("ENDPOINTS", "https://etcd:2379")]));
        assert_eq!(err.variable, full("CACERT"));
        assert!(err.expected.contains("https://etcd:2379"), "{err}");
    }

    #[test]
    fn credentials_go_together() {
        let err = error(&base(&[("USERNAME", "root")]));
        assert_eq!(err.variable, full("PASSWORD"));
        assert!(err.expected.contains(&full("USERNAME")));
        let err = error(&base(&[("PASSWORD", "hunter2")]));
        assert_eq!(err.variable, full("USERNAME"));
        assert!(!err.to_string().contains("hunter2"));
        assert!(!format!("{err:?}").contains("hunter2"));
    }

    #[test]
    fn force_acquire_truthiness() {
        for (value, expected) in [
            (None, false),
            (Some(""), false),
            (Some("  "), false),
            (Some("0"), false),
            (Some("false"), false),
            (Some("FALSE"), false),
            (Some(" False "), false),
            (Some("no"), false),
            (Some("No"), false),
            (Some("off"), false),
            (Some("f"), false),
            (Some("n"), false),
            (Some("1"), true),
            (Some("true"), true),
            (Some("yes"), true),
            (Some("y"), true),
            (Some("on"), true),
            (Some("anything"), true),
            (Some("00"), true),
            (Some("nope"), true),
        ] {
            let pairs: Vec<(&str, &str)> =
                value.map(|v| ("FORCE_ACQUIRE", v)).into_iter().collect();
            assert_eq!(config(&base(&pairs)).force_acquire, expected, "{value:?}");
        }
    }

    #[test]
    fn log_format_values() {
        for (value, expected) in [
            ("text", LogFormat::Text),
            ("TEXT", LogFormat::Text),
            (" json ", LogFormat::Json),
            ("Json", LogFormat::Json),
            ("", LogFormat::Text),
        ] {
            assert_eq!(config(&base(&[("LOG_FORMAT", value)])).log_format, expected);
        }
    }

    #[test]
    fn status_endpoint_shapes() {
        for ok in [
            "127.0.0.1:1234",
            "localhost:8080",
            ":8080",
            "[::1]:1",
            "[::]:65535",
            "my_host.example-1.com:80",
        ] {
            let config = config(&base(&[("STATUS_ENDPOINT", ok)]));
            assert_eq!(config.status_endpoint.as_deref(), Some(ok));
        }
    }

    #[test]
    fn names_at_the_limit_are_accepted() {
        let max = "é".repeat(512);
        let config = config(&base(&[("LOCK_NAME", &max), ("IDENTITY", " spaced ")]));
        assert_eq!(config.lock_name, max);
        assert_eq!(config.identity, " spaced ");
    }

    #[test]
    fn password_never_shown() {
        let secret = "hunter2-SECRET";
        let config = config(&base(&[("USERNAME", "admin"), ("PASSWORD", secret)]));
        assert!(!config.summary().contains(secret));
        assert!(config.summary().contains("auth=user:admin"));
        assert!(!format!("{config:?}").contains(secret));
        assert!(!format!("{:?}", Mode::Election(config.clone())).contains(secret));
        let credentials = config.credentials.clone().expect("credentials");
        assert!(format!("{credentials:?}").contains(REDACTED));

        let err = ConfigError {
            variable: full("PASSWORD"),
            value: Some(secret.into()),
            expected: "x".into(),
        };
        assert!(!err.to_string().contains(secret));
        assert!(!format!("{err:?}").contains(secret));
        assert!(err.to_string().contains(REDACTED));
    }

    #[cfg(unix)]
    #[test]
    fn non_utf8_values_are_errors() {
        use std::os::unix::ffi::OsStringExt;
        for suffix in [
            "LOCK_NAME",
            "IDENTITY",
            "ENDPOINTS",
            "STATUS_ENDPOINT",
            "LEASE_DURATION",
            "RENEW_DEADLINE",
            "RETRY_PERIOD",
            "ACQUIRE_TIMEOUT",
            "CACERT",
            "CERT",
            "KEY",
            "USERNAME",
            "PASSWORD",
            "FORCE_ACQUIRE",
            "LOG_FORMAT",
        ] {
            let mut map = base(&[]);
            map.insert(full(suffix), OsString::from_vec(b"se\xffcret".to_vec()));
            let err = error(&map);
            assert_eq!(err.variable, full(suffix));
            assert!(err.expected.contains("UTF-8"), "{err}");
            let shown = err.to_string();
            if suffix == "PASSWORD" {
                assert!(!shown.contains("se") && shown.contains(REDACTED), "{shown}");
            } else {
                assert!(shown.contains("se\u{FFFD}cret"), "{shown}");
            }
        }
    }

    #[test]
    fn parse_args_cases() {
        let cases: &[(&[&str], Result<Cli, UsageError>)] = &[
            (&[], Err(UsageError::MissingCommand)),
            (&["--"], Err(UsageError::MissingCommand)),
            (&[""], Err(UsageError::EmptyCommand)),
            (&["--", ""], Err(UsageError::EmptyCommand)),
            (&["--help"], Ok(Cli::Help)),
            (&["-h", "x"], Ok(Cli::Help)),
            (&["--version"], Ok(Cli::Version)),
            (&["-V"], Ok(Cli::Version)),
            (&["sleep", "10"], Ok(Cli::Run(os(&["sleep", "10"])))),
            (&["sleep", "--help"], Ok(Cli::Run(os(&["sleep", "--help"])))),
            (
                &["sleep", "--version"],
                Ok(Cli::Run(os(&["sleep", "--version"]))),
            ),
            (&["--", "--help"], Ok(Cli::Run(os(&["--help"])))),
            (&["--", "--", "x"], Ok(Cli::Run(os(&["--", "x"])))),
            (
                &["--", "sh", "-c", "x"],
                Ok(Cli::Run(os(&["sh", "-c", "x"]))),
            ),
            (&["-x", "y"], Ok(Cli::Run(os(&["-x", "y"])))),
            (&["--helpme"], Ok(Cli::Run(os(&["--helpme"])))),
        ];
        for (args, expected) in cases {
            assert_eq!(&parse_args(os(args)), expected, "{args:?}");
        }
        assert!(!UsageError::MissingCommand.to_string().is_empty());
        assert!(usage().starts_with("Usage: "));
    }

    #[cfg(unix)]
    #[test]
    fn parse_args_keeps_non_utf8_arguments() {
        use std::os::unix::ffi::OsStringExt;
        let odd = OsString::from_vec(vec![b'a', 0xff]);
        let args = vec![odd.clone(), OsString::from("--help")];
        assert_eq!(parse_args(args.clone()), Ok(Cli::Run(args)));
        assert_eq!(
            parse_args(vec![OsString::from("--"), odd.clone()]),
            Ok(Cli::Run(vec![odd]))
        );
    }

    // --- deterministic "no panic" property tests -------------------------

    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        fn below(&mut self, n: usize) -> usize {
            usize::try_from(self.next() % n as u64).unwrap_or(0)
        }

        fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
            items[self.below(items.len())]
        }
    }

    const ALPHABET: &[&str] = &[
        "0", "1", "2", "5", "9", "00", "ms", "s", "m", "h", "d", "S", ".", "-", "+", " ", "\t",
        "\n", "\0", ",", ":", "[", "]", "/", "µ", "é", "日", "😀", "https://", "http://", "x",
        "::1", "\u{FFFD}",
    ];

    fn random_text(rng: &mut XorShift) -> String {
        let len = rng.below(12);
        (0..len).map(|_| rng.pick(ALPHABET)).collect()
    }

    #[test]
    fn parse_duration_never_panics_and_respects_bounds() {
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        let mut accepted = 0;
        for _ in 0..5_000 {
            let text = random_text(&mut rng);
            if let Ok(value) = parse_duration(&text) {
                accepted += 1;
                assert!(value > Duration::ZERO, "{text:?}");
                assert!(value.as_millis() <= MAX_DURATION_MS, "{text:?}");
                assert_eq!(value.subsec_nanos() % 1_000_000, 0, "{text:?}");
                assert_eq!(parse_duration(&format_duration(value)), Ok(value));
            }
        }
        assert!(accepted > 0);
    }

    #[test]
    fn from_env_never_panics_and_upholds_invariants() {
        let valid: &[(&str, &str)] = &[
            ("LOCK_NAME", "jobs"),
            ("IDENTITY", "pod-1"),
            ("ENDPOINTS", "https://a:1,http://b:2"),
            ("STATUS_ENDPOINT", ":8080"),
            ("LEASE_DURATION", "20"),
            ("RENEW_DEADLINE", "15s"),
            ("RETRY_PERIOD", "500ms"),
            ("ACQUIRE_TIMEOUT", "1m"),
            ("CACERT", "/ca"),
            ("CERT", "/c"),
            ("KEY", "/k"),
            ("USERNAME", "u"),
            ("PASSWORD", "pw-SECRET-42"),
            ("FORCE_ACQUIRE", "yes"),
            ("LOG_FORMAT", "json"),
        ];
        let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
        let (mut disabled, mut elections, mut errors) = (0, 0, 0);
        for _ in 0..3_000 {
            let mut map = env(valid);
            for _ in 0..rng.below(4) {
                let (suffix, _) = valid[rng.below(valid.len())];
                match rng.below(3) {
                    0 => map.remove(&full(suffix)),
                    1 => map.insert(full(suffix), rng.pick(ALPHABET).into()),
                    _ => map.insert(full(suffix), random_text(&mut rng).into()),
                };
            }
            if rng.below(20) == 0 {
                for suffix in ["LOCK_NAME", "IDENTITY", "ENDPOINTS"] {
                    map.remove(&full(suffix));
                }
            }
            match run(&map) {
                Ok(Mode::Disabled) => disabled += 1,
                Ok(Mode::Election(config)) => {
                    elections += 1;
                    assert!(config.lease_duration > config.renew_deadline);
                    assert!(config.renew_deadline > config.retry_period);
                    assert!(config.retry_period > Duration::ZERO);
                    assert_eq!(config.lease_duration.subsec_nanos(), 0);
                    assert!(!config.endpoints.is_empty());
                    assert!(!config
                        .endpoints
                        .iter()
                        .any(|e| e.contains(char::is_whitespace)));
                    assert!(!config.endpoints.iter().any(|e| e.is_empty()));
                    let summary = config.summary();
                    assert!(!summary.contains('\n') && !summary.contains("SECRET"));
                }
                Err(err) => {
                    errors += 1;
                    assert!(err.variable.starts_with(PREFIX));
                    assert!(err.to_string().contains(&err.variable));
                }
            }
        }
        assert!(disabled > 0 && elections > 0 && errors > 0);
    }
}
