//! What a wrapper is given: its election [`Timings`] and its environment ([`Env`]).
//!
//! Rule: a wrapper sees PATH plus exactly the variables its [`Env`] sets, in that order; a later
//! `set` of a name replaces the earlier one, as in a shell.
#![allow(dead_code)]

use std::ffi::OsString;
use std::time::Duration;

use super::marks::Nanos;

/// A wrapper's election timings.
#[derive(Clone, Copy, Debug)]
pub struct Timings {
    /// LEASE_DURATION, whole seconds.
    pub lease_s: u64,
    pub renew_ms: u64,
    pub retry_ms: u64,
}

/// Short: keepalive every 500 ms, unary budget 1 s, idle watch 6 s; lease expiry can be waited for.
pub const FAST: Timings = Timings {
    lease_s: 3,
    renew_ms: 2000,
    retry_ms: 500,
};

/// Handover must come from resignation, never from expiry: a lease far longer than any deadline
/// a test waits for, so a quick takeover proves the old leader let go.
pub const STEADY: Timings = Timings {
    lease_s: 15,
    renew_ms: 2000,
    retry_ms: 500,
};

/// Deadlines well inside the lease: the renew deadline (2 s) and the kill point (3.5 s) come 3 s and
/// 1.5 s before the lease (5 s) can expire, and the lease outlasts a freeze of about the renew
/// deadline.
pub const MARGIN: Timings = Timings {
    lease_s: 5,
    renew_ms: 2000,
    retry_ms: 500,
};

/// Outlasts a raft election (1-2 s with the harness's cluster) with room to spare.
pub const ROOMY: Timings = Timings {
    lease_s: 6,
    renew_ms: 4000,
    retry_ms: 500,
};

impl Timings {
    pub fn lease(self) -> Duration {
        Duration::from_secs(self.lease_s)
    }

    pub fn renew(self) -> Duration {
        Duration::from_millis(self.renew_ms)
    }

    pub fn lease_ns(self) -> Nanos {
        Nanos::from(self.lease_s) * 1_000_000_000
    }

    /// When the wrapper SIGKILLs at the latest after the last renewal: (RENEW + LEASE) / 2.
    pub fn kill_after_ns(self) -> Nanos {
        (Nanos::from(self.renew_ms) * 1_000_000 + self.lease_ns()) / 2
    }

    /// The three variables; a whole number of seconds is written bare, as the Go tool takes it.
    fn vars(self) -> [(&'static str, String); 3] {
        let renew = match self.renew_ms % 1000 {
            0 => (self.renew_ms / 1000).to_string(),
            _ => format!("{}ms", self.renew_ms),
        };
        [
            ("LEASE_DURATION", self.lease_s.to_string()),
            ("RENEW_DEADLINE", renew),
            ("RETRY_PERIOD", format!("{}ms", self.retry_ms)),
        ]
    }
}

/// `ETCD_AWAIT_ELECTION_<suffix>`.
pub fn var(suffix: &str) -> String {
    format!("ETCD_AWAIT_ELECTION_{suffix}")
}

/// `sh -c SCRIPT` as a command line.
pub fn sh(script: &str) -> Vec<OsString> {
    vec!["sh".into(), "-c".into(), script.into()]
}

/// The variables given to one wrapper on top of PATH; a later `set` of a name replaces it.
#[derive(Clone, Debug, Default)]
pub struct Env(Vec<(String, OsString)>);

impl Env {
    /// Sets `ETCD_AWAIT_ELECTION_<suffix>`.
    pub fn set(self, suffix: &str, value: impl Into<OsString>) -> Env {
        self.raw(&var(suffix), value)
    }

    /// Removes `ETCD_AWAIT_ELECTION_<suffix>`.
    pub fn unset(mut self, suffix: &str) -> Env {
        let name = var(suffix);
        self.0.retain(|(n, _)| *n != name);
        self
    }

    /// Sets the variable `name` (any name).
    pub fn raw(mut self, name: &str, value: impl Into<OsString>) -> Env {
        self.0.retain(|(n, _)| n != name);
        self.0.push((name.to_string(), value.into()));
        self
    }

    /// Sets the three timing variables.
    pub fn timings(self, t: Timings) -> Env {
        t.vars().into_iter().fold(self, |env, (k, v)| env.set(k, v))
    }

    /// The value of `ETCD_AWAIT_ELECTION_<suffix>`, if set.
    pub fn get(&self, suffix: &str) -> Option<&OsString> {
        let name = var(suffix);
        self.0.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// The variables, in the order they were set.
    pub fn vars(&self) -> &[(String, OsString)] {
        &self.0
    }
}
