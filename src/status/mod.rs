//! What this instance knows about the election, and how the status endpoint shows it.
//!
//! [`Status`] is written by the supervisor alone and read by the HTTP server (`server` runs one
//! `poll(2)` loop, `http` turns requests into answers). Two things it does not keep but asks for,
//! through [`Sources`]: the age of the last renewal (the election's renewal clock, the same one the
//! supervisor's deadline reads) and the leader's identity (the election's view, which never waits
//! on etcd). A request is answered from these alone and never waits on etcd.
//!
//! This module owns the bytes: the Go tool's body (`{"status": "ok", "phase": …, "leader": …}` and
//! a newline), the health and readiness verdicts, and the Prometheus text format 0.0.4 page, where
//! every series carries `lock="<LOCK_NAME>"` and label values are escaped as the format requires.

mod http;
mod server;

pub use server::{bind, serve, Listener};

use std::fmt::{Display, Write as _};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

/// Upper bounds of the keepalive duration histogram, in milliseconds and as written (seconds).
/// Integer arithmetic throughout: the page needs no float formatting.
const BUCKETS: [(u64, &str); 10] = [
    (5, "0.005"),
    (10, "0.01"),
    (25, "0.025"),
    (50, "0.05"),
    (100, "0.1"),
    (250, "0.25"),
    (500, "0.5"),
    (1000, "1"),
    (2500, "2.5"),
    (5000, "5"),
];
/// Prefix of every metric name.
const PREFIX: &str = "etcd_await_election_";

/// Who leads, as the election last saw it; must answer at once (never call etcd).
pub type LeaderSource = Box<dyn Fn() -> Option<String> + Send + Sync>;
/// How long ago the last acknowledged renewal was sent (`None` before the first).
pub type RenewalAge = Box<dyn Fn() -> Option<Duration> + Send + Sync>;

/// What the status asks for instead of keeping it.
pub struct Sources {
    pub leader: LeaderSource,
    pub renewal_age: RenewalAge,
}

/// Shared knowledge about this instance.
pub struct Status {
    identity: String,
    /// `lock="<escaped lock name>"`, the label every series carries.
    lock_label: String,
    renew_deadline: Duration,
    sources: Sources,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    leading: bool,
    /// Leadership can no longer be guaranteed and the command is being stopped.
    stepping_down: bool,
    child_running: bool,
    leader_since: Option<SystemTime>,
    transitions: u64,
    attempts: u64,
    recampaigns: u64,
    keepalive_failures: u64,
    child_exit_code: Option<i32>,
    keepalive: Histogram,
}

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    /// Sum of the observations, in microseconds.
    sum_micros: u128,
}

/// The liveness verdict (`/healthz`).
#[derive(Debug, PartialEq, Eq)]
enum Health {
    Healthy,
    /// Stepping down, or leading with a last renewal older than RENEW_DEADLINE.
    RenewalLate,
}

/// The readiness verdict (`/readyz`).
#[derive(Debug, PartialEq, Eq)]
enum Readiness {
    /// Leading with the command running.
    Leading,
    NotLeading,
}

impl Status {
    /// Fresh knowledge for the instance called `identity`, a candidate for the election `lock`.
    pub fn new(identity: &str, lock: &str, renew_deadline: Duration, sources: Sources) -> Status {
        Status {
            identity: identity.to_string(),
            lock_label: format!("lock=\"{}\"", label_value(lock)),
            renew_deadline,
            sources,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new candidacy (lease and key) began.
    pub fn attempt(&self) {
        self.lock().attempts += 1;
    }

    /// We lead from now on.
    pub fn leading(&self) {
        let mut state = self.lock();
        if !state.leading {
            state.transitions += 1;
        }
        state.leading = true;
        state.leader_since = Some(SystemTime::now());
    }

    /// Leadership can no longer be guaranteed: not ready, not healthy, while the command stops.
    pub fn stepping_down(&self) {
        self.not_leading();
        self.lock().stepping_down = true;
    }

    /// Leadership ended and the supervisor campaigns again: healthy again, not ready.
    pub fn recampaigning(&self) {
        self.not_leading();
        let mut state = self.lock();
        state.stepping_down = false;
        state.child_running = false;
        state.recampaigns += 1;
    }

    /// We no longer lead.
    pub fn not_leading(&self) {
        let mut state = self.lock();
        if state.leading {
            state.transitions += 1;
        }
        state.leading = false;
        state.leader_since = None;
    }

    /// The child started (`true`) or exited with `code` (`false`).
    pub fn child(&self, running: bool, code: Option<i32>) {
        let mut state = self.lock();
        state.child_running = running;
        if code.is_some() {
            state.child_exit_code = code;
        }
    }

    /// A keepalive was acknowledged after `took`.
    pub fn renewed(&self, took: Duration) {
        self.lock().keepalive.observe(took);
    }

    /// A keepalive failed (no answer, or an error).
    pub fn renewal_failed(&self) {
        self.lock().keepalive_failures += 1;
    }

    fn health(&self) -> Health {
        let age = (self.sources.renewal_age)();
        let state = self.lock();
        let late = age.is_some_and(|age| age >= self.renew_deadline);
        match state.stepping_down || (state.leading && late) {
            true => Health::RenewalLate,
            false => Health::Healthy,
        }
    }

    fn readiness(&self) -> Readiness {
        let state = self.lock();
        match state.leading && state.child_running {
            true => Readiness::Leading,
            false => Readiness::NotLeading,
        }
    }

    /// The Go tool's body, byte for byte, plus JSON escaping of the identity (which it lacks):
    /// `{"status": "ok", "phase": "running", "leader": "<id>"}` and a newline.
    pub fn body(&self) -> String {
        let state = self.lock();
        let phase = match state.leading && state.child_running {
            true => "running",
            false => "awaiting",
        };
        let seen = match state.leading {
            true => Some(self.identity.clone()),
            false => (self.sources.leader)(),
        };
        let leader = seen.as_deref().unwrap_or("unknown");
        format!(
            "{{\"status\": \"ok\", \"phase\": \"{phase}\", \"leader\": {}}}\n",
            go_json_string(leader)
        )
    }

    /// The metrics in Prometheus text format 0.0.4.
    pub fn metrics(&self) -> String {
        let state = self.lock();
        let mut page = Page {
            out: String::with_capacity(4096),
            lock: &self.lock_label,
        };
        let build = [
            ("version", env!("CARGO_PKG_VERSION")),
            ("target", env!("EAE_TARGET")),
        ];
        page.family(
            "build_info",
            "gauge",
            "Always 1; the labels say which build runs.",
        );
        page.sample("build_info", &build, 1);
        page.gauge(
            "is_leader",
            "1 while this instance leads.",
            flag(state.leading),
        );
        page.gauge(
            "child_running",
            "1 while the command runs.",
            flag(state.child_running),
        );
        page.counter(
            "leader_transitions_total",
            "Times this instance became or stopped being the leader.",
            state.transitions,
        );
        page.counter(
            "election_attempts_total",
            "Candidacies started (a lease and a key).",
            state.attempts,
        );
        page.counter(
            "recampaigns_total",
            "Times the supervisor campaigned again after a leadership ended (RECAMPAIGN).",
            state.recampaigns,
        );
        page.counter(
            "keepalive_failures_total",
            "Keepalives that got no acknowledgement.",
            state.keepalive_failures,
        );
        let age =
            (self.sources.renewal_age)().map_or("NaN".to_string(), |age| seconds(age.as_micros()));
        page.gauge(
            "last_renew_age_seconds",
            "Seconds since the last acknowledged keepalive was sent (NaN before the first).",
            age,
        );
        page.gauge(
            "child_exit_code",
            "Exit code of the command's last run (-1 before it exited).",
            state.child_exit_code.unwrap_or(-1),
        );
        page.histogram(
            "keepalive_duration_seconds",
            "Time etcd took to acknowledge a keepalive.",
            &state.keepalive,
        );
        page.out
    }
}

/// A metrics page being written; every sample gets the `lock` label.
struct Page<'a> {
    out: String,
    lock: &'a str,
}

impl Page<'_> {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = write!(
            self.out,
            "# HELP {PREFIX}{name} {help}\n# TYPE {PREFIX}{name} {kind}\n"
        );
    }

    /// One sample; `labels` come after `lock` and their values are escaped here.
    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        let _ = write!(self.out, "{PREFIX}{name}{{{}", self.lock);
        for (label, text) in labels {
            let _ = write!(self.out, ",{label}=\"{}\"", label_value(text));
        }
        let _ = writeln!(self.out, "}} {value}");
    }

    fn gauge(&mut self, name: &str, help: &str, value: impl Display) {
        self.family(name, "gauge", help);
        self.sample(name, &[], value);
    }

    fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.family(name, "counter", help);
        self.sample(name, &[], value);
    }

    fn histogram(&mut self, name: &str, help: &str, histogram: &Histogram) {
        self.family(name, "histogram", help);
        let bucket = format!("{name}_bucket");
        for (count, bound) in histogram.counts.iter().zip(BUCKETS) {
            self.sample(&bucket, &[("le", bound.1)], count);
        }
        self.sample(&bucket, &[("le", "+Inf")], histogram.count);
        self.sample(&format!("{name}_sum"), &[], seconds(histogram.sum_micros));
        self.sample(&format!("{name}_count"), &[], histogram.count);
    }
}

impl Histogram {
    fn observe(&mut self, took: Duration) {
        let micros = took.as_micros();
        for (count, (bound_ms, _)) in self.counts.iter_mut().zip(BUCKETS) {
            if micros <= u128::from(bound_ms) * 1000 {
                *count += 1;
            }
        }
        self.count += 1;
        self.sum_micros = self.sum_micros.saturating_add(micros);
    }
}

/// `micros` as seconds with six decimals, e.g. `0.004213`.
fn seconds(micros: u128) -> String {
    format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000)
}

fn flag(on: bool) -> u8 {
    u8::from(on)
}

/// A label value in the text format: backslash, double quote and line feed escaped.
fn label_value(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A JSON string as Go's encoding/json writes it (it also escapes `<`, `>`, `&`, U+2028, U+2029).
fn go_json_string(text: &str) -> String {
    let json = serde_json::Value::from(text).to_string();
    json.replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A status whose election knows `leader` and whose last renewal is `age` old.
    pub(super) fn with(leader: Option<&str>, age: Option<Duration>) -> Status {
        let leader = leader.map(str::to_string);
        let sources = Sources {
            leader: Box::new(move || leader.clone()),
            renewal_age: Box::new(move || age),
        };
        Status::new("pod-1", "jobs", Duration::from_secs(10), sources)
    }

    fn status() -> Status {
        with(None, None)
    }

    #[test]
    fn body_matches_the_go_tool_in_every_phase() {
        let status = status();
        assert_eq!(
            status.body(),
            "{\"status\": \"ok\", \"phase\": \"awaiting\", \"leader\": \"unknown\"}\n"
        );
        let status = with(Some("pod-0"), Some(Duration::ZERO));
        assert_eq!(
            status.body(),
            "{\"status\": \"ok\", \"phase\": \"awaiting\", \"leader\": \"pod-0\"}\n"
        );
        status.leading();
        assert!(
            status.body().contains("\"phase\": \"awaiting\""),
            "no child yet"
        );
        status.child(true, None);
        assert_eq!(
            status.body(),
            "{\"status\": \"ok\", \"phase\": \"running\", \"leader\": \"pod-1\"}\n"
        );
    }

    #[test]
    fn leader_strings_are_escaped_as_go_does() {
        assert_eq!(
            go_json_string("a<b>&\"c\"\n"),
            r#""a\u003cb\u003e\u0026\"c\"\n""#
        );
    }

    #[test]
    fn a_leader_whose_renewal_is_older_than_the_deadline_is_unhealthy() {
        let late = with(None, Some(Duration::from_secs(11)));
        assert_eq!(late.health(), Health::Healthy, "a waiter has no deadline");
        late.leading();
        assert_eq!(late.health(), Health::RenewalLate);
        let fresh = with(None, Some(Duration::from_secs(1)));
        fresh.leading();
        assert_eq!(fresh.health(), Health::Healthy);
    }

    #[test]
    fn verdicts_follow_the_state() {
        let status = status();
        assert_eq!(status.health(), Health::Healthy);
        assert_eq!(status.readiness(), Readiness::NotLeading);
        status.leading();
        status.child(true, None);
        assert_eq!(status.readiness(), Readiness::Leading);
        status.stepping_down();
        assert_eq!(status.health(), Health::RenewalLate);
        assert_eq!(status.readiness(), Readiness::NotLeading);
    }

    #[test]
    fn transitions_count_changes_only() {
        let status = status();
        status.leading();
        status.leading();
        status.not_leading();
        assert!(status
            .metrics()
            .contains("etcd_await_election_leader_transitions_total{lock=\"jobs\"} 2\n"));
    }

    #[test]
    fn every_series_has_the_escaped_lock_label() {
        let sources = Sources {
            leader: Box::new(|| None),
            renewal_age: Box::new(|| None),
        };
        let status = Status::new("me", "a\\b\"c\nd", Duration::from_secs(10), sources);
        let page = status.metrics();
        let samples: Vec<&str> = page.lines().filter(|l| !l.starts_with('#')).collect();
        assert!(samples.len() > 10, "{page}");
        for line in samples {
            assert!(
                line.contains(r#"{lock="a\\b\"c\nd""#),
                "no escaped lock label: {line}"
            );
        }
        let build = format!(
            "etcd_await_election_build_info{{lock=\"a\\\\b\\\"c\\nd\",version=\"{}\",target=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION"),
            env!("EAE_TARGET")
        );
        assert!(page.contains(&build), "{page}");
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let status = status();
        status.renewed(Duration::from_millis(3));
        status.renewed(Duration::from_millis(200));
        let page = status.metrics();
        let name = "etcd_await_election_keepalive_duration_seconds";
        for line in [
            format!("{name}_bucket{{lock=\"jobs\",le=\"0.005\"}} 1\n"),
            format!("{name}_bucket{{lock=\"jobs\",le=\"0.25\"}} 2\n"),
            format!("{name}_bucket{{lock=\"jobs\",le=\"+Inf\"}} 2\n"),
            format!("{name}_count{{lock=\"jobs\"}} 2\n"),
        ] {
            assert!(page.contains(&line), "{line} missing in\n{page}");
        }
    }
}
