//! One variable at a time: the parsers whose result depends on nothing else. Each error names
//! the variable and says what shape was expected, with the specific problem in parentheses.

use std::net::Ipv6Addr;
use std::time::Duration;

use super::duration::{digits_value, parse_duration};
use super::env::Env;
use super::error::ConfigError;
use super::vars::{
    ENDPOINTS, FORCE_ACQUIRE, HOLDERS, LEASE_DURATION, LOG_FORMAT, RECAMPAIGN, STATUS_ENDPOINT,
};
use super::{LogFormat, Recampaign};

/// Longer names fit no etcd key a human would choose; the bound keeps every key and log line small.
const MAX_NAME_BYTES: usize = 1024;
/// etcd leases are whole seconds, and below 2 s there is no room for a renewal before expiry.
const MIN_LEASE_SECS: u64 = 2;
/// Holders each keep a key, a lease and its keepalives in etcd, and every look at the queue reads
/// up to this many keys ahead: a bound that keeps that read one small response. More concurrent
/// holders than this is a worker pool, not an election.
pub const MAX_HOLDERS: u32 = 1000;
/// Go's `strconv.ParseBool` false spellings, and the usual shell ones.
const FALSY: [&str; 6] = ["0", "f", "false", "n", "no", "off"];

pub(super) const LEASE_EXPECTED: &str = "whole seconds >= 2, e.g. 15 or 15s";
pub(super) const TIMING_EXPECTED: &str = "a positive duration, e.g. 10, 10s, 500ms or 1m30s";
const ENDPOINTS_EXPECTED: &str =
    "comma-separated etcd endpoints, e.g. http://etcd-0:2379,http://etcd-1:2379";
const STATUS_EXPECTED: &str = "host:port, [ipv6]:port or :port with a port from 1 to 65535, \
     e.g. 127.0.0.1:1234";

/// `LOCK_NAME` or `IDENTITY`: used as given (no trimming), since it is part of an etcd key or
/// value that other tools compare byte for byte.
pub(super) fn name(var: &str, value: String, what: &str) -> Result<String, ConfigError> {
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

/// `ENDPOINTS`: schemes and ports are the etcd client's to check; this only splits.
pub(super) fn endpoints(raw: &str) -> Result<Vec<String>, ConfigError> {
    let items: Vec<String> = raw
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::to_owned)
        .collect();
    let problem = if items.is_empty() {
        "no endpoint given".to_owned()
    } else if let Some(bad) = items.iter().find(|item| item.contains(char::is_whitespace)) {
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

/// `STATUS_ENDPOINT`: checked here for shape only, so that a typo fails before anything starts;
/// binding it is the status server's job.
pub(super) fn status_endpoint(env: &Env) -> Result<Option<String>, ConfigError> {
    let Some(raw) = env.optional(STATUS_ENDPOINT)? else {
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

/// A duration variable, unset or empty giving `default`; returns the value and, when given, the
/// raw text (so that a later rule can say whether the user's value or the default broke it).
pub(super) fn timing(
    env: &Env,
    var: &str,
    default: Duration,
    expected: &str,
) -> Result<(Duration, Option<String>), ConfigError> {
    match env.optional(var)? {
        None => Ok((default, None)),
        Some(raw) => Ok((duration(var, &raw, expected)?, Some(raw))),
    }
}

/// Parses a duration variable's value, with the lease's extra rules.
pub(super) fn duration(var: &str, raw: &str, expected: &str) -> Result<Duration, ConfigError> {
    let checked = parse_duration(raw).and_then(|value| {
        if var == LEASE_DURATION {
            check_lease(value).map(|()| value)
        } else {
            Ok(value)
        }
    });
    checked.map_err(|problem| ConfigError::invalid(var, raw, format!("{expected} ({problem})")))
}

fn check_lease(value: Duration) -> Result<(), String> {
    if value.subsec_nanos() != 0 {
        Err("not a whole number of seconds: etcd leases are whole seconds".to_owned())
    } else if value.as_secs() < MIN_LEASE_SECS {
        Err(format!("less than {MIN_LEASE_SECS}s"))
    } else {
        Ok(())
    }
}

/// `FORCE_ACQUIRE`: the Go tool enables it for any non-empty value; the falsy spellings are the
/// exception because nobody who writes `false` means on.
pub(super) fn force_acquire(env: &Env) -> Result<bool, ConfigError> {
    Ok(env
        .text(FORCE_ACQUIRE)?
        .is_some_and(|value| is_truthy(&value)))
}

fn is_truthy(value: &str) -> bool {
    let value = value.trim();
    !value.is_empty() && !FALSY.iter().any(|no| value.eq_ignore_ascii_case(no))
}

/// One of a few keywords, trimmed and ASCII case-insensitive (as `LOG_FORMAT` always was);
/// unset or empty gives the first.
fn keyword<T: Copy>(env: &Env, var: &str, choices: &[(&str, T)]) -> Result<T, ConfigError> {
    let Some(raw) = env.text(var)? else {
        return Ok(choices[0].1);
    };
    let value = raw.trim();
    if value.is_empty() {
        return Ok(choices[0].1);
    }
    if let Some((_, choice)) = choices.iter().find(|(k, _)| value.eq_ignore_ascii_case(k)) {
        return Ok(*choice);
    }
    let names: Vec<&str> = choices.iter().map(|(k, _)| *k).collect();
    let expected = match names.split_last() {
        Some((last, [])) => (*last).to_owned(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    };
    Err(ConfigError::invalid(var, &raw, expected))
}

/// `LOG_FORMAT`: `text` (default) or `json`.
pub(super) fn log_format(env: &Env) -> Result<LogFormat, ConfigError> {
    keyword(
        env,
        LOG_FORMAT,
        &[("text", LogFormat::Text), ("json", LogFormat::Json)],
    )
}

/// `RECAMPAIGN`: `off` (default), `on-loss` or `always`.
pub(super) fn recampaign(env: &Env) -> Result<Recampaign, ConfigError> {
    keyword(
        env,
        RECAMPAIGN,
        &[
            ("off", Recampaign::Off),
            ("on-loss", Recampaign::OnLoss),
            ("always", Recampaign::Always),
        ],
    )
}

/// `HOLDERS`: a plain positive integer (no sign, no whitespace, as the durations), at most
/// [`MAX_HOLDERS`].
pub(super) fn holders(env: &Env) -> Result<u32, ConfigError> {
    let Some(raw) = env.optional(HOLDERS)? else {
        return Ok(1);
    };
    let problem = if !raw.bytes().all(|b| b.is_ascii_digit()) {
        "not a whole number"
    } else {
        match u32::try_from(digits_value(&raw)) {
            Ok(0) => "zero is not allowed",
            Ok(n) if n <= MAX_HOLDERS => return Ok(n),
            _ => "too large",
        }
    };
    Err(ConfigError::invalid(
        HOLDERS,
        &raw,
        format!("a whole number from 1 to {MAX_HOLDERS}, e.g. 1 or 3 ({problem})"),
    ))
}
