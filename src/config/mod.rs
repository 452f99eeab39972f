//! Configuration: the process's arguments and `ETCD_AWAIT_ELECTION_*` environment become a
//! validated [`Mode`] before anything starts.
//!
//! This module owns what every variable means and the rules between them (the README's
//! *Configuration* section states them for users). Checking everything here, once, means a bad
//! value exits 78 with a line naming the variable instead of surfacing later as a strange failure,
//! and the rest of the program can trust the values. The values derived from several variables
//! that the election, the etcd client and the supervisor must agree on (the keepalive interval, a
//! call's budget, ...) are methods of [`Config`], so each is computed in one place.
//!
//! Pure logic apart from reading secret files (`*_FILE`): the environment and that read both come
//! in through [`from_env`]'s parameters. TLS files are not read here: the etcd client reads them
//! and names the file in its own errors.

mod build;
mod cli;
mod duration;
mod env;
mod error;
mod hints;
mod secret_file;
mod timing;
mod values;
pub mod vars;

#[cfg(test)]
mod tests;

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

pub use crate::supervise::Recampaign;
pub use cli::{parse_args, usage, Cli, LeaderQuery, UsageError};
pub use duration::{format_duration, parse_duration};
pub use env::ReadFile;
pub use error::ConfigError;
pub use secret_file::{read_secret_file, MAX_SECRET_FILE_BYTES};
pub use timing::MIN_RETRY_PERIOD;
pub use values::MAX_HOLDERS;
pub use vars::{PREFIX, SECRETS};

use env::Env;
use values::TIMING_EXPECTED;
use vars::{
    ACQUIRE_TIMEOUT, CACERT, CERT, ENDPOINTS, IDENTITY, KEY, LOCK_NAME, PASSWORD, PASSWORD_FILE,
    TRIGGERS, USERNAME, USERNAME_FILE,
};

/// Whether to take part in an election.
// Built once at start-up and matched at once: boxing `Config` would only make the callers'
// patterns clumsier.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// None of `LOCK_NAME`, `IDENTITY`, `ENDPOINTS` is present: run the command at once. `hint`
    /// is one line to print first when the environment suggests an election was meant.
    Disabled { hint: Option<String> },
    /// Join the election described by `config`. `warning` is one line to log at start about
    /// variables that look like ours but are not (ignored, as the Go tool does).
    Election {
        config: Config,
        warning: Option<String>,
    },
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
    /// Lease time, whole seconds, at least 2 s (`LEASE_DURATION`).
    pub lease_duration: Duration,
    /// Below `lease_duration`, above twice [`Config::keepalive_interval`] (`RENEW_DEADLINE`).
    pub renew_deadline: Duration,
    /// Below `renew_deadline`, at least [`MIN_RETRY_PERIOD`] (`RETRY_PERIOD`).
    pub retry_period: Duration,
    /// TLS file paths (`CACERT`, `CERT`, `KEY`).
    pub tls: TlsPaths,
    /// etcd authentication (`USERNAME`/`USERNAME_FILE`, `PASSWORD`/`PASSWORD_FILE`).
    pub credentials: Option<Credentials>,
    /// Delete existing locks before campaigning (`FORCE_ACQUIRE`).
    pub force_acquire: bool,
    /// Longest wait for leadership; `None` waits forever (`ACQUIRE_TIMEOUT`).
    pub acquire_timeout: Option<Duration>,
    /// What to do when leadership ends (`RECAMPAIGN`).
    pub recampaign: Recampaign,
    /// How many instances may lead at once, 1 to [`MAX_HOLDERS`] (`HOLDERS`).
    pub holders: u32,
    /// Log line format (`LOG_FORMAT`).
    pub log_format: LogFormat,
}

/// TLS file paths; not read here. If `cert` is set, so are `key` and `cacert`.
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
            .field("password", &error::redacted())
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

/// Reads the configuration from the process environment; secret files are read with
/// [`read_secret_file`].
///
/// # Errors
///
/// As [`from_env`].
pub fn from_process_env() -> Result<Mode, ConfigError> {
    from_env(std::env::vars_os(), &read_secret_file)
}

/// Reads the configuration from `vars` (full name, value), reading secret files through
/// `read_file`.
///
/// # Errors
///
/// The first [`ConfigError`] found: a missing required variable or a value that is invalid or
/// inconsistent with another.
pub fn from_env(
    vars: impl IntoIterator<Item = (OsString, OsString)>,
    read_file: ReadFile,
) -> Result<Mode, ConfigError> {
    let env = Env::new(vars, read_file);
    match TRIGGERS.into_iter().find(|name| env.is_present(name)) {
        None => Ok(Mode::Disabled {
            hint: hints::disabled_hint(&env),
        }),
        Some(trigger) => Ok(Mode::Election {
            config: election_config(&env, trigger, Identity::Required)?,
            warning: hints::election_warning(&env),
        }),
    }
}

/// The configuration for `leader`, which only asks etcd: like an election's, but `IDENTITY` may be
/// missing (and `LOCK_NAME` and `ENDPOINTS` are required because the query needs them).
///
/// # Errors
///
/// As [`from_env`].
pub fn query_from_process_env() -> Result<Config, ConfigError> {
    let env = Env::new(std::env::vars_os(), &read_secret_file);
    let mut config = election_config(&env, QUERY, Identity::Optional)?;
    if config.identity.is_empty() {
        config.identity = "-".to_string();
    }
    Ok(config)
}

/// The "trigger" of a `leader` query's configuration.
const QUERY: &str = "leader";

/// Whether `IDENTITY` is required.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Identity {
    Required,
    Optional,
}

fn election_config(env: &Env, trigger: &str, identity: Identity) -> Result<Config, ConfigError> {
    let lock_name = required(env, LOCK_NAME, trigger)?;
    let identity = match identity {
        Identity::Required => Some(required(env, IDENTITY, trigger)?),
        Identity::Optional => env.optional(IDENTITY)?,
    };
    let endpoints = required(env, ENDPOINTS, trigger)?;
    let lock_name = values::name(LOCK_NAME, lock_name, "lock name")?;
    let identity = match identity {
        Some(identity) => values::name(IDENTITY, identity, "identity")?,
        None => String::new(),
    };
    let endpoints = values::endpoints(&endpoints)?;
    let status_endpoint = values::status_endpoint(env)?;
    let (lease_duration, renew_deadline, retry_period) = timing::timings(env)?;
    let tls = tls_paths(env, &endpoints)?;
    let credentials = credentials(env)?;
    let force_acquire = values::force_acquire(env)?;
    let acquire_timeout = match env.optional(ACQUIRE_TIMEOUT)? {
        None => None,
        Some(raw) => Some(values::duration(ACQUIRE_TIMEOUT, &raw, TIMING_EXPECTED)?),
    };
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
        recampaign: values::recampaign(env)?,
        holders: values::holders(env)?,
        log_format: values::log_format(env)?,
    })
}

/// One of the three election variables, required because `trigger` is present: a partial
/// configuration must never fall back to running without the election.
fn required(env: &Env, name: &str, trigger: &str) -> Result<String, ConfigError> {
    env.text(name)?.ok_or_else(|| {
        let why = match trigger {
            QUERY => "required by `leader` (it asks LOCK_NAME's election at ENDPOINTS)".to_string(),
            _ => format!(
                "required because {trigger} is set (an election needs LOCK_NAME, IDENTITY and \
                 ENDPOINTS; unset all three to run the command without one)"
            ),
        };
        ConfigError::unset(name, why)
    })
}

/// `CACERT`, `CERT`, `KEY`: a scratch image has no system CA roots, so every TLS use needs
/// `CACERT`, and a certificate is useless without its key.
fn tls_paths(env: &Env, endpoints: &[String]) -> Result<TlsPaths, ConfigError> {
    let cacert = env.optional(CACERT)?.map(PathBuf::from);
    let cert = env.optional(CERT)?.map(PathBuf::from);
    let key = env.optional(KEY)?.map(PathBuf::from);
    match (&cert, &key) {
        (Some(_), None) => return Err(ConfigError::missing_partner(KEY, CERT)),
        (None, Some(_)) => return Err(ConfigError::missing_partner(CERT, KEY)),
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

fn is_https(endpoint: &str) -> bool {
    endpoint
        .get(..8)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"))
}

/// User name and password, each given directly or as a file; both or neither.
fn credentials(env: &Env) -> Result<Option<Credentials>, ConfigError> {
    let username = env.secret(USERNAME, USERNAME_FILE, "user name")?;
    let password = env.secret(PASSWORD, PASSWORD_FILE, "password")?;
    let given = |var: &'static str, file_var: &'static str| {
        if env.is_non_empty(var) {
            var
        } else {
            file_var
        }
    };
    let missing = |var: &str, file_var: &str, given: &str| {
        ConfigError::unset(
            var,
            format!("required because {given} is set (they go together; or set {file_var})"),
        )
    };
    match (username, password) {
        (None, None) => Ok(None),
        (Some(username), Some(password)) => Ok(Some(Credentials { username, password })),
        (Some(_), None) => Err(missing(
            PASSWORD,
            PASSWORD_FILE,
            given(USERNAME, USERNAME_FILE),
        )),
        (None, Some(_)) => Err(missing(
            USERNAME,
            USERNAME_FILE,
            given(PASSWORD, PASSWORD_FILE),
        )),
    }
}

impl Config {
    /// The leader's keepalive interval (see [`crate::election::leader_interval`]).
    #[must_use]
    pub fn keepalive_interval(&self) -> Duration {
        crate::election::leader_interval(self.retry_period, self.lease_duration)
    }

    /// A watch connection silent for this long is replaced: twice the lease, so that a flow
    /// dropped without FIN or RST is noticed, while a quiet but live watch is left alone.
    #[must_use]
    pub fn watch_idle_timeout(&self) -> Duration {
        self.lease_duration.saturating_mul(2)
    }

    /// One line of `key=value` pairs for the start-up log. Never contains the password.
    #[must_use]
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
            format!("recampaign={}", self.recampaign.as_str()),
            format!("holders={}", self.holders),
            format!("acquire_timeout={acquire_timeout}"),
            format!("log_format={log_format}"),
        ]
        .join(" ")
    }
}

/// A value as is when it is plain printable ASCII, else quoted and escaped, so that a log line
/// stays one parseable line whatever the environment holds.
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
