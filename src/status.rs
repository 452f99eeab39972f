//! What this instance knows about the election, and the small HTTP endpoint that shows it.
//!
//! [`Status`] is written by the election and the supervisor and read by the HTTP workers; a request
//! is answered from it alone and never waits on etcd. The leader's identity comes from the election
//! (whenever it looks at the queue) and, while someone polls the endpoint, from a background refresh
//! at most once per `refresh_period`.
//!
//! Paths: `/` (the Go tool's JSON body), `/healthz`, `/readyz`, `/metrics` (Prometheus text format
//! 0.0.4). Other paths 404, methods other than GET/HEAD 405. One thread accepts connections as fast
//! as they come and queues them (bounded) for a fixed number of workers; a connection that finds the
//! queue full is closed at once. Each worker reads a request head within a deadline, so garbage,
//! huge or slow requests cost a worker at most that deadline and never touch the election.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

/// Worker threads of the HTTP endpoint.
const WORKERS: usize = 4;
/// Accepted connections waiting for a worker; past this, new connections are closed at once.
const QUEUE: usize = 32;
/// Longest request head accepted.
const MAX_HEAD: usize = 8 * 1024;
/// Time a client has to send its request head.
const HEAD_DEADLINE: Duration = Duration::from_secs(2);
/// Upper bounds (seconds) of the keepalive duration histogram.
const BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

/// Finds out who leads now (a bounded etcd call), for the background refresh.
pub type LeaderSource = Box<dyn Fn() -> Option<String> + Send + Sync>;

/// Shared knowledge about this instance.
pub struct Status {
    identity: String,
    renew_deadline: Duration,
    state: Mutex<State>,
    refresh: Refresh,
}

#[derive(Default)]
struct State {
    leading: bool,
    /// Leadership can no longer be guaranteed and the command is being stopped.
    stepping_down: bool,
    child_running: bool,
    leader: Option<String>,
    leader_since: Option<SystemTime>,
    last_renewal: Option<Instant>,
    transitions: u64,
    attempts: u64,
    keepalive_failures: u64,
    child_exit_code: Option<i32>,
    keepalive: Histogram,
}

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// The on-demand leader refresh: requests set `wanted`; one thread does the etcd call.
#[derive(Default)]
struct Refresh {
    state: Mutex<RefreshState>,
    wake: Condvar,
}

#[derive(Default)]
struct RefreshState {
    wanted: bool,
    last: Option<Instant>,
}

impl Status {
    /// Fresh knowledge for the instance called `identity`.
    pub fn new(identity: &str, renew_deadline: Duration) -> Status {
        Status {
            identity: identity.to_string(),
            renew_deadline,
            state: Mutex::new(State::default()),
            refresh: Refresh::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new candidacy (lease and key) began.
    pub fn attempt(&self) {
        self.lock().attempts += 1;
    }

    /// The candidate with this identity leads, as far as we just saw.
    pub fn leader_seen(&self, identity: Option<String>) {
        let mut state = self.lock();
        if !state.leading {
            state.leader = identity;
        }
    }

    /// We lead from now on.
    pub fn leading(&self) {
        let mut state = self.lock();
        if !state.leading {
            state.transitions += 1;
        }
        state.leading = true;
        state.leader = Some(self.identity.clone());
        state.leader_since = Some(SystemTime::now());
    }

    /// Leadership can no longer be guaranteed: not ready, not healthy, while the command stops.
    pub fn stepping_down(&self) {
        self.not_leading();
        self.lock().stepping_down = true;
    }

    /// We no longer lead.
    pub fn not_leading(&self) {
        let mut state = self.lock();
        if state.leading {
            state.transitions += 1;
        }
        state.leading = false;
        state.leader = None;
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

    /// A keepalive sent at `sent` was acknowledged after `took`.
    pub fn renewed(&self, sent: Instant, took: Duration) {
        let mut state = self.lock();
        state.last_renewal = Some(state.last_renewal.map_or(sent, |last| last.max(sent)));
        state.keepalive.observe(took.as_secs_f64());
    }

    /// A keepalive failed (no answer, or an error).
    pub fn renewal_failed(&self) {
        self.lock().keepalive_failures += 1;
    }

    /// The renewal clock of a new lease starts at `sent` (its grant).
    pub fn lease_granted(&self, sent: Instant) {
        self.lock().last_renewal = Some(sent);
    }

    /// True while we step down, or lead with a last renewal older than RENEW_DEADLINE.
    fn renewal_late(&self, state: &State) -> bool {
        let late = state
            .last_renewal
            .is_some_and(|last| last.elapsed() >= self.renew_deadline);
        state.stepping_down || (state.leading && late)
    }

    /// The Go tool's body, byte for byte: `{"status":"ok","phase":…,"leader":…}`.
    pub fn body(&self) -> String {
        let state = self.lock();
        let phase = if state.leading && state.child_running {
            "running"
        } else {
            "awaiting"
        };
        let leader = state.leader.as_deref().unwrap_or("unknown");
        format!(
            r#"{{"status":"ok","phase":"{phase}","leader":{}}}"#,
            go_json_string(leader)
        )
    }

    /// The metrics in Prometheus text format 0.0.4.
    pub fn metrics(&self) -> String {
        let state = self.lock();
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: String| {
            let _ = write!(
                out,
                "# HELP etcd_await_election_{name} {help}\n# TYPE etcd_await_election_{name} {kind}\n\
                 etcd_await_election_{name} {value}\n"
            );
        };
        let age = state.last_renewal.map_or("NaN".to_string(), |t| {
            format!("{:.3}", t.elapsed().as_secs_f64())
        });
        metric(
            "is_leader",
            "gauge",
            "1 while this instance leads.",
            flag(state.leading),
        );
        metric(
            "child_running",
            "gauge",
            "1 while the command runs.",
            flag(state.child_running),
        );
        metric(
            "leader_transitions_total",
            "counter",
            "Times this instance became or stopped being the leader.",
            state.transitions.to_string(),
        );
        metric(
            "election_attempts_total",
            "counter",
            "Candidacies started (a lease and a key).",
            state.attempts.to_string(),
        );
        metric(
            "keepalive_failures_total",
            "counter",
            "Keepalives that got no acknowledgement.",
            state.keepalive_failures.to_string(),
        );
        metric(
            "last_renew_age_seconds",
            "gauge",
            "Seconds since the last acknowledged keepalive was sent (NaN before the first).",
            age,
        );
        metric(
            "child_exit_code",
            "gauge",
            "Exit code of the command's last run (-1 before it exited).",
            state.child_exit_code.unwrap_or(-1).to_string(),
        );
        state
            .keepalive
            .render("keepalive_duration_seconds", &mut out);
        out
    }

    /// Asks the background refresh for the current leader, without waiting for it.
    fn want_leader(&self) {
        let mut refresh = self.refresh.state.lock().unwrap_or_else(|p| p.into_inner());
        refresh.wanted = true;
        self.refresh.wake.notify_one();
    }

    /// Runs the background refresh: each time a request wanted it, and at most once per `period`.
    fn refresh_leader(&self, source: &LeaderSource, period: Duration) {
        loop {
            {
                let mut refresh = self.refresh.state.lock().unwrap_or_else(|p| p.into_inner());
                loop {
                    let due = refresh.last.is_none_or(|last| last.elapsed() >= period);
                    if refresh.wanted && due {
                        break;
                    }
                    let wait = match refresh.last {
                        Some(last) if refresh.wanted => period.saturating_sub(last.elapsed()),
                        _ => Duration::from_secs(3600),
                    };
                    refresh = self
                        .refresh
                        .wake
                        .wait_timeout(refresh, wait)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
                refresh.wanted = false;
                refresh.last = Some(Instant::now());
            }
            if let Some(leader) = source() {
                self.leader_seen(Some(leader));
            }
        }
    }
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        for (count, bound) in self.counts.iter_mut().zip(BUCKETS) {
            if seconds <= bound {
                *count += 1;
            }
        }
        self.count += 1;
        self.sum += seconds;
    }

    fn render(&self, name: &str, out: &mut String) {
        let name = format!("etcd_await_election_{name}");
        let _ = writeln!(
            out,
            "# HELP {name} Time etcd took to acknowledge a keepalive."
        );
        let _ = writeln!(out, "# TYPE {name} histogram");
        for (count, bound) in self.counts.iter().zip(BUCKETS) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {count}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", self.count);
        let _ = writeln!(out, "{name}_sum {}", self.sum);
        let _ = writeln!(out, "{name}_count {}", self.count);
    }
}

fn flag(on: bool) -> String {
    u8::from(on).to_string()
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

/// Binds `address` (`host:port`, `[v6]:port`, or `:port` for every IPv4 interface) and serves the
/// endpoint on background threads. `source` refreshes the leader at most once per `refresh_period`.
pub fn serve(
    address: &str,
    status: Arc<Status>,
    source: LeaderSource,
    refresh_period: Duration,
) -> io::Result<SocketAddr> {
    let address = match address.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => address.to_string(),
    };
    let listener = TcpListener::bind(&address)?;
    let bound = listener.local_addr()?;
    let (queue, waiting) = sync_channel::<TcpStream>(QUEUE);
    let waiting = Arc::new(Mutex::new(waiting));
    for _ in 0..WORKERS {
        let waiting = Arc::clone(&waiting);
        let status = Arc::clone(&status);
        thread::Builder::new()
            .name("status".into())
            .spawn(move || serve_queued(&waiting, &status))?;
    }
    thread::Builder::new()
        .name("status-accept".into())
        .spawn(move || accept_forever(&listener, &queue))?;
    thread::Builder::new()
        .name("status-refresh".into())
        .spawn(move || status.refresh_leader(&source, refresh_period))?;
    Ok(bound)
}

/// Accepts as fast as connections come, so the kernel's backlog never fills; a connection that
/// finds every worker busy and the queue full is closed at once.
fn accept_forever(listener: &TcpListener, queue: &SyncSender<TcpStream>) {
    loop {
        match listener.accept() {
            Ok((stream, _)) => match queue.try_send(stream) {
                Ok(()) | Err(TrySendError::Full(_)) => {}
                Err(TrySendError::Disconnected(_)) => return,
            },
            // Out of file descriptors and the like: back off instead of spinning.
            Err(_) => thread::sleep(Duration::from_millis(50)),
        }
    }
}

fn serve_queued(waiting: &Mutex<Receiver<TcpStream>>, status: &Status) {
    loop {
        let next = waiting.lock().unwrap_or_else(|p| p.into_inner()).recv();
        match next {
            Ok(stream) => {
                let _ = handle(stream, status);
            }
            Err(_) => return,
        }
    }
}

/// One HTTP/1.x exchange; the connection is closed afterwards.
fn handle(mut stream: TcpStream, status: &Status) -> io::Result<()> {
    stream.set_write_timeout(Some(HEAD_DEADLINE))?;
    let head = match read_head(&mut stream)? {
        Head::Complete(head) => head,
        Head::TooLarge => {
            return respond(&mut stream, 431, "text/plain", "request too large\n", true)
        }
        Head::Incomplete => return Ok(()),
    };
    let mut parts = head.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return respond(&mut stream, 400, "text/plain", "bad request\n", true);
    };
    if !version.starts_with("HTTP/1.") || !target.starts_with('/') {
        return respond(&mut stream, 400, "text/plain", "bad request\n", true);
    }
    let path = target.split('?').next().unwrap_or(target);
    let known = matches!(path, "/" | "/healthz" | "/readyz" | "/metrics");
    if !known {
        return respond(
            &mut stream,
            404,
            "text/plain",
            "not found\n",
            method != "HEAD",
        );
    }
    if method != "GET" && method != "HEAD" {
        return respond(&mut stream, 405, "text/plain", "method not allowed\n", true);
    }
    let with_body = method == "GET";
    let (code, kind, body) = route(path, status);
    respond(&mut stream, code, kind, &body, with_body)
}

fn route(path: &str, status: &Status) -> (u16, &'static str, String) {
    match path {
        "/" => {
            status.want_leader();
            (200, "application/json", status.body())
        }
        "/healthz" => {
            let state = status.lock();
            match status.renewal_late(&state) {
                false => (200, "text/plain", "ok\n".into()),
                true => (
                    503,
                    "text/plain",
                    "leading, but the lease was not renewed in time\n".into(),
                ),
            }
        }
        "/readyz" => {
            let state = status.lock();
            match state.leading && state.child_running {
                true => (200, "text/plain", "leading\n".into()),
                false => (503, "text/plain", "not leading\n".into()),
            }
        }
        _ => {
            status.want_leader();
            (
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                status.metrics(),
            )
        }
    }
}

enum Head {
    /// The request line.
    Complete(String),
    TooLarge,
    /// The client went away or was too slow.
    Incomplete,
}

/// Reads until the blank line that ends the head, within [`HEAD_DEADLINE`] and [`MAX_HEAD`].
fn read_head(stream: &mut TcpStream) -> io::Result<Head> {
    let deadline = Instant::now() + HEAD_DEADLINE;
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(Head::Incomplete);
        }
        stream.set_read_timeout(Some(left))?;
        let read = match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return Ok(Head::Incomplete),
            Ok(read) => read,
        };
        head.extend_from_slice(&chunk[..read]);
        if let Some(end) = find(&head, b"\r\n\r\n").or_else(|| find(&head, b"\n\n")) {
            let line_end = find(&head[..end], b"\n").unwrap_or(end);
            let line = String::from_utf8_lossy(&head[..line_end]);
            return Ok(Head::Complete(line.trim_end_matches('\r').to_string()));
        }
        if head.len() >= MAX_HEAD {
            return Ok(Head::TooLarge);
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn respond(
    stream: &mut TcpStream,
    code: u16,
    kind: &str,
    body: &str,
    with_body: bool,
) -> io::Result<()> {
    let reason = match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Service Unavailable",
    };
    let allow = if code == 405 {
        "Allow: GET, HEAD\r\n"
    } else {
        ""
    };
    let mut response = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n{allow}\
         Connection: close\r\n\r\n",
        body.len(),
    );
    if with_body {
        response.push_str(body);
    }
    stream.write_all(response.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_matches_the_go_tool_in_every_phase() {
        let status = Status::new("pod-1", Duration::from_secs(10));
        assert_eq!(
            status.body(),
            r#"{"status":"ok","phase":"awaiting","leader":"unknown"}"#
        );
        status.leader_seen(Some("pod-0".into()));
        assert_eq!(
            status.body(),
            r#"{"status":"ok","phase":"awaiting","leader":"pod-0"}"#
        );
        status.leading();
        status.child(true, None);
        assert_eq!(
            status.body(),
            r#"{"status":"ok","phase":"running","leader":"pod-1"}"#
        );
    }

    #[test]
    fn leader_strings_are_escaped_as_go_does() {
        assert_eq!(
            go_json_string("a<b>&\"c\""),
            r#""a\u003cb\u003e\u0026\"c\"""#
        );
    }

    #[test]
    fn transitions_count_changes_only() {
        let status = Status::new("me", Duration::from_secs(10));
        status.leading();
        status.leading();
        status.not_leading();
        assert!(status
            .metrics()
            .contains("etcd_await_election_leader_transitions_total 2\n"));
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let mut histogram = Histogram::default();
        histogram.observe(0.003);
        histogram.observe(0.2);
        let mut out = String::new();
        histogram.render("h", &mut out);
        assert!(
            out.contains("etcd_await_election_h_bucket{le=\"0.005\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("etcd_await_election_h_bucket{le=\"0.25\"} 2\n"),
            "{out}"
        );
        assert!(out.contains("etcd_await_election_h_count 2\n"), "{out}");
    }
}
