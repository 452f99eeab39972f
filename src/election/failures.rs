//! What a failed etcd call means for the candidate: retry later, or stop (etcd refused us, or the
//! TLS settings cannot work) — and the log lines, one per change of state, never one per retry.

use crate::etcd;
use crate::log;

/// What to do after a failed call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Judgement {
    /// Wait RETRY_PERIOD and try again.
    Retry,
    /// Retrying cannot help: give up with this reason.
    Fatal(String),
}

/// The candidate's memory of failures.
#[derive(Debug, Default)]
pub(super) struct Failures {
    /// What kind of failure is being retried, if any.
    failing: Option<&'static str>,
    /// etcd has answered at least once since we started.
    connected: bool,
    /// Start-up attempts in a row that failed with a TLS problem on every endpoint.
    tls_strikes: u32,
}

impl Failures {
    /// Judges `error`, logging what is news.
    pub(super) fn judge(&mut self, error: &etcd::Error, every: std::time::Duration) -> Judgement {
        if error.is_permanent() {
            log::error("etcd refused us", &[("error", error)]);
            return Judgement::Fatal(error.to_string());
        }
        if self.tls_settings_wrong(error) {
            log::error(
                "TLS with etcd cannot work with these settings",
                &[("error", error)],
            );
            return Judgement::Fatal(error.to_string());
        }
        let kind = error.summary();
        if self.failing != Some(kind) {
            log::warn(
                &format!("{kind}; retrying"),
                &[("every", &format!("{every:?}")), ("error", error)],
            );
            self.failing = Some(kind);
        }
        Judgement::Retry
    }

    /// A failure that is not an etcd error (e.g. a renewal that did not come in time), logged once.
    pub(super) fn note(&mut self, kind: &'static str, every: std::time::Duration) {
        if self.failing != Some(kind) {
            log::warn(
                &format!("{kind}; retrying"),
                &[("every", &format!("{every:?}"))],
            );
            self.failing = Some(kind);
        }
    }

    /// etcd answered (through `endpoint`): the failing state, if any, is over.
    pub(super) fn answered(&mut self, endpoint: &str) {
        self.connected = true;
        self.tls_strikes = 0;
        if self.failing.take().is_some() {
            log::info("etcd answers again", &[("endpoint", &endpoint)]);
        }
    }

    /// Before etcd ever answered, TLS failing on every endpoint is a setting to fix, not an outage
    /// to wait out: at once when a certificate check says so, on the second attempt in a row when
    /// the connection only closed at a telling moment. After a first success it is retried (a
    /// rotation may be under way) and logged with the same hint.
    fn tls_settings_wrong(&mut self, error: &etcd::Error) -> bool {
        let problems = match error.tls_problems() {
            Some(problems) if !self.connected => problems,
            _ => {
                self.tls_strikes = 0;
                return false;
            }
        };
        self.tls_strikes += 1;
        problems.iter().all(|p| p.certain()) || self.tls_strikes >= 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etcd::{Error, TlsProblem};
    use std::time::Duration;

    fn tls(problem: TlsProblem) -> Error {
        Error::Tls {
            endpoint: "https://e:2379".into(),
            op: "kv/txn",
            problem,
            hint: "check X".into(),
            detail: "d".into(),
        }
    }

    const EVERY: Duration = Duration::from_secs(2);

    #[test]
    fn a_certain_tls_problem_at_start_is_fatal_at_once() {
        let mut failures = Failures::default();
        let judgement = failures.judge(&tls(TlsProblem::UntrustedServer), EVERY);
        assert!(matches!(judgement, Judgement::Fatal(reason) if reason.contains("check X")));
    }

    #[test]
    fn a_telling_close_at_start_is_fatal_the_second_time_in_a_row() {
        let mut failures = Failures::default();
        assert_eq!(
            failures.judge(&tls(TlsProblem::ClientRefused), EVERY),
            Judgement::Retry
        );
        assert!(matches!(
            failures.judge(&tls(TlsProblem::ClientRefused), EVERY),
            Judgement::Fatal(_)
        ));
        // An ordinary failure in between resets the count.
        let mut failures = Failures::default();
        let down = Error::Transport {
            endpoint: "https://e:2379".into(),
            op: "kv/txn",
            detail: "refused".into(),
            timed_out: false,
        };
        assert_eq!(
            failures.judge(&tls(TlsProblem::NotTls), EVERY),
            Judgement::Retry
        );
        assert_eq!(failures.judge(&down, EVERY), Judgement::Retry);
        assert_eq!(
            failures.judge(&tls(TlsProblem::NotTls), EVERY),
            Judgement::Retry
        );
    }

    #[test]
    fn after_a_first_answer_tls_problems_are_retried() {
        let mut failures = Failures::default();
        failures.answered("https://e:2379");
        for _ in 0..3 {
            assert_eq!(
                failures.judge(&tls(TlsProblem::UntrustedServer), EVERY),
                Judgement::Retry
            );
        }
    }
}
