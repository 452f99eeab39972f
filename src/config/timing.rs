//! The three timings of the election and the rules between them. They decide safety: the renew
//! deadline must pass before the lease can expire, and leave room for more than one renewal, or a
//! single slow etcd call would stop a healthy leader's command.

use std::time::Duration;

use super::env::Env;
use super::error::ConfigError;
use super::format_duration;
use super::values::{self, LEASE_EXPECTED, TIMING_EXPECTED};
use super::vars::{LEASE_DURATION, RENEW_DEADLINE, RETRY_PERIOD};
use crate::election::leader_interval;

const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(15);
const DEFAULT_RENEW_DEADLINE: Duration = Duration::from_secs(10);
const DEFAULT_RETRY_PERIOD: Duration = Duration::from_secs(2);
/// Keepalives and retries are paced by `RETRY_PERIOD`; below this they would flood etcd (1 ms
/// gave about 650 keepalives a second) for no gain in safety.
pub const MIN_RETRY_PERIOD: Duration = Duration::from_millis(100);

/// Lease, renew deadline and retry period, each valid and the three consistent. A broken rule
/// is reported on the variable that has to give (the smaller one), also when only its default
/// broke it, and states the other values.
pub(super) fn timings(env: &Env) -> Result<(Duration, Duration, Duration), ConfigError> {
    let lease = values::timing(env, LEASE_DURATION, DEFAULT_LEASE_DURATION, LEASE_EXPECTED)?;
    let renew = values::timing(env, RENEW_DEADLINE, DEFAULT_RENEW_DEADLINE, TIMING_EXPECTED)?;
    let retry = values::timing(env, RETRY_PERIOD, DEFAULT_RETRY_PERIOD, TIMING_EXPECTED)?;
    if let (value, Some(raw)) = &retry {
        if *value < MIN_RETRY_PERIOD {
            let floor = format_duration(MIN_RETRY_PERIOD);
            let why = "keepalives and retries are paced by it, and faster ones only load etcd";
            return Err(ConfigError::invalid(
                RETRY_PERIOD,
                raw,
                format!("at least {floor} ({why})"),
            ));
        }
    }
    ensure_less(&renew, RENEW_DEADLINE, lease.0, LEASE_DURATION)?;
    ensure_less(&retry, RETRY_PERIOD, renew.0, RENEW_DEADLINE)?;
    ensure_two_renewals(lease.0, &renew, retry.0)?;
    Ok((lease.0, renew.0, retry.0))
}

/// Requires `small < large`.
fn ensure_less(
    (small, small_raw): &(Duration, Option<String>),
    small_var: &str,
    large: Duration,
    large_var: &str,
) -> Result<(), ConfigError> {
    if *small < large {
        return Ok(());
    }
    let large = format_duration(large);
    Err(match small_raw {
        Some(raw) => {
            ConfigError::invalid(small_var, raw, format!("less than {large_var} ({large})"))
        }
        None => ConfigError::unset(
            small_var,
            format!(
                "its default {} is not less than {large_var} ({large}); set it lower",
                format_duration(*small)
            ),
        ),
    })
}

/// A keepalive goes out one interval after the previous one was answered, so the gap between
/// acknowledged sends is an interval plus a call's duration: a deadline within two intervals is
/// tripped by one slow call. Two attempts, at one and two intervals, must fit before it.
fn ensure_two_renewals(
    lease: Duration,
    (renew, renew_raw): &(Duration, Option<String>),
    retry: Duration,
) -> Result<(), ConfigError> {
    let interval = leader_interval(retry, lease);
    if *renew > interval.saturating_mul(2) {
        return Ok(());
    }
    let rule = format!(
        "more than twice the keepalive interval min({RETRY_PERIOD} ({}), {LEASE_DURATION} ({}) / 3) \
         = {}, so that two renewals can be tried before the deadline",
        format_duration(retry),
        format_duration(lease),
        format_duration(interval)
    );
    Err(match renew_raw {
        Some(raw) => ConfigError::invalid(RENEW_DEADLINE, raw, rule),
        None => ConfigError::unset(
            RENEW_DEADLINE,
            format!(
                "its default {} is not {rule}; set it higher or {RETRY_PERIOD} lower",
                format_duration(*renew)
            ),
        ),
    })
}
