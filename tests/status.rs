//! README "Status endpoint" and "Logs": the Go tool's body byte for byte on every path, /healthz,
//! /readyz and /metrics (its labels parsed by Prometheus' own parser) following the election,
//! hostile and flooding HTTP clients that must leave probes answered and the election untouched;
//! logs that are JSON when asked and never hold a password.
//!
//! Every wrapper here serves its status endpoint on a free loopback port
//! ([`support::wrapper::Wrapper::status_port`]).
//!
//! Run: `cargo test --test status -- --test-threads=2`.

mod support;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::env::{sh, Timings};
use support::marks::OnTerm;
use support::wrapper::{Scene, Wrapper};
use support::{free_port, unique_name, Etcd};

/// The timings of every wrapper here.
const PROBED: Timings = Timings {
    lease_s: 4,
    renew_ms: 2000,
    retry_ms: 500,
};

/// Spawns the candidate `identity` on `endpoints` with a status endpoint, `extra` variables
/// (suffix, value) and `command`.
fn spawn(
    s: &Scene,
    identity: &str,
    endpoints: &str,
    extra: &[(&str, &str)],
    command: Vec<OsString>,
) -> Wrapper {
    let status = format!("127.0.0.1:{}", free_port());
    let env = s
        .env(identity, PROBED)
        .set("ENDPOINTS", endpoints)
        .set("STATUS_ENDPOINT", status);
    let env = extra.iter().fold(env, |env, (k, v)| env.set(k, *v));
    s.spawn(identity, env, command)
}

/// [`spawn`] with the marks child of that name, once its status endpoint answers.
fn start(s: &Scene, identity: &str, endpoints: &str, extra: &[(&str, &str)]) -> Wrapper {
    let wrapper = spawn(
        s,
        identity,
        endpoints,
        extra,
        s.child(identity, OnTerm::Trap),
    );
    s.wait(
        "the status endpoint listens",
        Duration::from_secs(10),
        || http(&wrapper, "/").is_some(),
    );
    wrapper
}

/// One GET of `path` from the wrapper's status endpoint.
fn http(wrapper: &Wrapper, path: &str) -> Option<Response> {
    get(wrapper.status_port(), path)
}

/// The status code of one GET of `path`.
fn http_code(wrapper: &Wrapper, path: &str) -> Option<u16> {
    http(wrapper, path).map(|r| r.code)
}

struct Response {
    code: u16,
    head: String,
    body: String,
}

/// One GET; `None` when nothing listens or the connection was closed without an answer.
fn get(port: u16, path: &str) -> Option<Response> {
    request(
        port,
        format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes(),
    )
}

fn request(port: u16, bytes: &[u8]) -> Option<Response> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream.write_all(bytes).ok()?;
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let code = head.split(' ').nth(1)?.parse().ok()?;
    Some(Response {
        code,
        head: head.to_string(),
        body: body.to_string(),
    })
}

/// One sample as Prometheus' parser read it.
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses a metrics page with Prometheus' own Python parser.
fn parse_metrics(text: &str) -> Vec<Sample> {
    let script = "import json, sys\n\
        from prometheus_client.parser import text_string_to_metric_families as parse\n\
        for family in parse(sys.stdin.read()):\n\
        \x20   for s in family.samples:\n\
        \x20       print(json.dumps([s.name, s.labels, repr(s.value)]))\n";
    let mut python = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    python
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = python.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client could not parse the metrics (scripts/test.sh installs it):\n{}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = String::from_utf8(out.stdout).unwrap();
    lines
        .lines()
        .map(|line| {
            let (name, labels, value): (String, BTreeMap<String, String>, String) =
                serde_json::from_str(line).unwrap();
            let value = value.parse().unwrap();
            Sample {
                name,
                labels,
                value,
            }
        })
        .collect()
}

fn metric(samples: &[Sample], name: &str) -> f64 {
    samples
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("{name} missing"))
        .value
}

fn is_leader(instance: &Wrapper) -> Option<f64> {
    let page = http(instance, "/metrics")?;
    Some(metric(
        &parse_metrics(&page.body),
        "etcd_await_election_is_leader",
    ))
}

#[test]
fn bodies_are_the_go_tools_byte_for_byte_on_every_path() {
    let s = Scene::new();
    let leader = start(&s, "pod-a", &s.url(), &[]);
    s.wait("pod-a runs", Duration::from_secs(10), || {
        http(&leader, "/").is_some_and(|r| r.body.contains("running"))
    });
    let waiter = start(&s, "pod-<b>", &s.url(), &[]);
    s.wait("pod-<b> knows the leader", Duration::from_secs(10), || {
        http(&waiter, "/").is_some_and(|r| r.body.contains("pod-a"))
    });
    let nobody = format!("http://127.0.0.1:{}", free_port());
    let cut_off = start(&s, "pod-c", &nobody, &[]);

    // The Go tool's handler is on `/`, so every path gets its body; a probe on /status works.
    let running = "{\"status\": \"ok\", \"phase\": \"running\", \"leader\": \"pod-a\"}\n";
    for path in ["/", "/status", "/health", "/anything/else?x=1", "/healthz/"] {
        let answer = http(&leader, path).unwrap();
        assert_eq!(
            (answer.code, answer.body.as_str()),
            (200, running),
            "{path}"
        );
        let head = answer.head.to_ascii_lowercase();
        assert!(
            head.contains("\r\ncontent-type: text/plain; charset=utf-8\r\n"),
            "{path}: {head}"
        );
        assert!(
            head.contains(&format!("\r\ncontent-length: {}\r\n", running.len())),
            "{head}"
        );
    }
    let head = request(leader.status_port(), b"HEAD /status HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(
        (head.code, head.body.as_str()),
        (200, ""),
        "HEAD has no body"
    );
    assert!(head
        .head
        .contains(&format!("Content-Length: {}\r\n", running.len())));
    assert_eq!(
        http(&waiter, "/").unwrap().body,
        "{\"status\": \"ok\", \"phase\": \"awaiting\", \"leader\": \"pod-a\"}\n"
    );
    // Our own identity is escaped as Go's encoding/json would (the Go tool does not escape it).
    s.stop("pod-a", 0);
    let took_over =
        "{\"status\": \"ok\", \"phase\": \"running\", \"leader\": \"pod-\\u003cb\\u003e\"}\n";
    s.wait("pod-<b> takes over", Duration::from_secs(10), || {
        http(&waiter, "/").is_some_and(|r| r.body == took_over)
    });
    assert_eq!(
        http(&cut_off, "/").unwrap().body,
        "{\"status\": \"ok\", \"phase\": \"awaiting\", \"leader\": \"unknown\"}\n"
    );
    // The named endpoints stay ours.
    assert_eq!(http(&cut_off, "/healthz").unwrap().body, "ok\n");
    assert_eq!(http_code(&cut_off, "/readyz"), Some(503));
    assert!(http(&cut_off, "/metrics").unwrap().body.contains("# TYPE "));
}

#[test]
fn readyz_and_metrics_follow_a_handover() {
    let s = Scene::new();
    // Quote and backslash in the lock name: label values must be escaped for the parser.
    let lock = format!("{}-\"q\\", unique_name("lock"));
    let on_lock = [("LOCK_NAME", lock.as_str())];
    let a = start(&s, "a", &s.url(), &on_lock);
    s.wait("a leads", Duration::from_secs(10), || {
        http_code(&a, "/readyz") == Some(200)
    });
    let mut b = start(&s, "b", &s.url(), &on_lock);
    s.wait("b is queued", Duration::from_secs(10), || {
        s.etcd().keys_under(&format!("{lock}/")).len() == 2
    });
    assert_eq!(http_code(&b, "/readyz"), Some(503), "b waits: not ready");
    assert_eq!(http_code(&b, "/healthz"), Some(200), "b waits: healthy");
    assert_eq!(is_leader(&a), Some(1.0));
    assert_eq!(is_leader(&b), Some(0.0));

    s.stop("a", 0);
    s.wait("b becomes ready", Duration::from_secs(10), || {
        http_code(&b, "/readyz") == Some(200)
    });
    assert_eq!(is_leader(&b), Some(1.0));
    // b may have led on its lease grant alone, before any keepalive (a waiter renews every
    // 900 ms here, a leader every 500 ms): wait for its first acknowledged one in the histogram.
    let mut page = http(&b, "/metrics").unwrap();
    s.wait(
        "b's first keepalive is counted",
        Duration::from_secs(5),
        || {
            page = http(&b, "/metrics").unwrap();
            let count = "etcd_await_election_keepalive_duration_seconds_count";
            metric(&parse_metrics(&page.body), count) >= 1.0
        },
    );
    assert!(page
        .head
        .contains("Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"));
    let parsed = parse_metrics(&page.body);
    assert_eq!(
        metric(&parsed, "etcd_await_election_leader_transitions_total"),
        1.0
    );
    assert_eq!(metric(&parsed, "etcd_await_election_child_running"), 1.0);
    assert!(metric(&parsed, "etcd_await_election_election_attempts_total") >= 1.0);
    assert!(
        metric(
            &parsed,
            "etcd_await_election_keepalive_duration_seconds_count"
        ) >= 1.0
    );

    // Every series carries the lock, like client-go's leader-election metrics carry `name`.
    for sample in &parsed {
        assert_eq!(
            sample.labels.get("lock"),
            Some(&lock),
            "{} has no lock label",
            sample.name
        );
    }
    let build = parsed
        .iter()
        .find(|s| s.name == "etcd_await_election_build_info")
        .expect("build_info");
    assert_eq!(build.value, 1.0);
    assert_eq!(build.labels["version"], env!("CARGO_PKG_VERSION"));
    let version = Command::new(support::bin())
        .arg("--version")
        .output()
        .unwrap();
    let version = String::from_utf8_lossy(&version.stdout).into_owned();
    assert!(
        [")", ","]
            .iter()
            .any(|end| version.contains(&format!("({}{end}", build.labels["target"]))),
        "target {:?} is not the one --version names: {version}",
        build.labels["target"]
    );
    let buckets = parsed
        .iter()
        .filter(|s| s.name.ends_with("_bucket"))
        .count();
    assert_eq!(buckets, 11, "10 bounds and +Inf, each with its le label");

    s.stop("b", 0);
    assert!(b.wait(Duration::from_secs(10)).success());
    assert_eq!(
        http_code(&b, "/readyz"),
        None,
        "b exited: its endpoint is gone"
    );
}

#[test]
fn healthz_and_readyz_fail_when_renewals_stop() {
    let s = Scene::new();
    // The child takes its time to stop, so the stepping-down state can be observed.
    let command = sh("trap 'sleep 0.8; exit 0' TERM; while :; do sleep 0.02; done");
    let mut leader = spawn(&s, "a", &s.url(), &[], command);
    s.wait("a leads", Duration::from_secs(10), || {
        http_code(&leader, "/readyz") == Some(200)
    });
    assert_eq!(http_code(&leader, "/healthz"), Some(200));

    s.etcd().freeze();
    let frozen = Instant::now();
    let mut saw = (false, false);
    while frozen.elapsed() < Duration::from_secs(4) && !(saw.0 && saw.1) {
        saw.0 |= http_code(&leader, "/healthz") == Some(503);
        saw.1 |= http_code(&leader, "/readyz") == Some(503);
        std::thread::sleep(Duration::from_millis(20));
    }
    let code = leader.wait(Duration::from_secs(10)).code();
    s.etcd().resume();
    assert!(
        saw.0,
        "/healthz never answered 503 after the renew deadline"
    );
    assert!(saw.1, "/readyz never answered 503 after the renew deadline");
    assert_eq!(code, Some(75), "{}", leader.stderr());
}

#[test]
fn hostile_clients_leave_the_election_unaffected() {
    raise_fd_limit(4096);
    let s = Scene::new();
    let a = start(&s, "a", &s.url(), &[]);
    s.wait("a leads", Duration::from_secs(10), || {
        http_code(&a, "/readyz") == Some(200)
    });
    let b = start(&s, "b", &s.url(), &[]);
    s.wait("b is queued", Duration::from_secs(10), || {
        s.keys().len() == 2
    });

    // Every abuse is aimed at the waiter, whose election must not notice.
    let port = b.status_port();
    let code = |bytes: &[u8]| request(port, bytes).map(|r| r.code);
    assert_eq!(code(b"\x00\xff\x13garbage\r\n\r\n"), Some(400), "garbage");
    let huge = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(100_000));
    assert_eq!(code(huge.as_bytes()), Some(431), "huge head");
    let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(2000));
    assert_eq!(code(long.as_bytes()), Some(414), "long request line");
    let post = request(port, b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc").unwrap();
    assert_eq!(post.code, 405);
    assert!(post.head.contains("\r\nAllow: GET, HEAD"), "{}", post.head);
    assert_eq!(code(b"DELETE /metrics HTTP/1.1\r\n\r\n"), Some(405));
    assert_eq!(code(b"GET /\r\n\r\n"), Some(400), "HTTP/0.9");
    assert_eq!(code(b"GET / HTTP/2.0\r\n\r\n"), Some(400));
    assert_eq!(code(b"GET nope HTTP/1.1\r\n\r\n"), Some(400));
    let pipelined = request(
        port,
        b"GET /healthz HTTP/1.1\r\n\r\nGET /readyz HTTP/1.1\r\n\r\n",
    );
    let pipelined = pipelined.unwrap();
    assert_eq!(
        (pipelined.code, pipelined.body.as_str()),
        (200, "ok\n"),
        "one answer, then close"
    );

    // Slow clients that never finish a request line, and 1,000 connections at once.
    let mut held = Vec::new();
    for _ in 0..20 {
        let mut slow = TcpStream::connect(("127.0.0.1", port)).unwrap();
        slow.write_all(b"GET / HT").unwrap();
        held.push(slow);
    }
    for _ in 0..1000 {
        if let Ok(stream) = TcpStream::connect(("127.0.0.1", port)) {
            held.push(stream);
        }
    }
    assert!(held.len() >= 1000, "opened only {} connections", held.len());

    // While they are held, the election hands over on time (b's child marks its own start).
    s.stop("a", 0);
    s.wait(
        "b leads while its endpoint is flooded",
        Duration::from_secs(5),
        || s.start_of("b").is_some(),
    );

    for stream in &held {
        let _ = stream.shutdown(Shutdown::Both);
    }
    drop(held);
    assert_eq!(http_code(&b, "/"), Some(200));
}

#[test]
fn logs_never_contain_the_password() {
    let s = Scene::with(Etcd::start_auth());
    let quick = || vec![OsString::from("true")];
    let credentials = [
        ("USERNAME", support::USER),
        ("PASSWORD", support::PASSWORD),
        ("LOG_FORMAT", "json"),
    ];
    let mut good = spawn(&s, "a", &s.url(), &credentials, quick());
    assert_eq!(
        good.wait(Duration::from_secs(10)).code(),
        Some(0),
        "{}",
        good.stderr()
    );
    let log = good.stderr();
    assert!(!log.contains(support::PASSWORD), "{log}");
    assert!(log.contains("lease revoked"), "{log}");
    for line in log.lines() {
        let value: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(value["ts"].is_string() && value["level"].is_string() && value["msg"].is_string());
    }

    let wrong = [("USERNAME", support::USER), ("PASSWORD", "wrong-secret-pw")];
    let mut bad = spawn(&s, "b", &s.url(), &wrong, quick());
    assert_eq!(
        bad.wait(Duration::from_secs(10)).code(),
        Some(69),
        "{}",
        bad.stderr()
    );
    let log = bad.stderr();
    assert!(log.contains("authentication failed"), "{log}");
    assert!(!log.contains("wrong-secret-pw"), "{log}");
}

/// A field of /proc/<pid>/status as a number (`VmRSS`, `VmHWM` in kB; `Threads`).
fn proc_status(pid: u32, field: &str) -> u64 {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{field} missing in /proc/{pid}/status"))
}

/// Sends a slowloris head (one byte every 100 ms, never the blank line) until `stop`; reconnects
/// whenever the server drops it.
fn slowloris(port: u16, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u32> {
    std::thread::spawn(move || {
        let mut connections = 0;
        let head =
            b"GET / HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        while !stop.load(Ordering::Relaxed) {
            let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            };
            connections += 1;
            for byte in head.iter().cycle().skip(1) {
                if stop.load(Ordering::Relaxed) || stream.write_all(&[*byte]).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        connections
    })
}

/// One fresh probe: the time to a complete 200 answer, `None` without one within 3 s.
fn probe(port: u16, path: &str) -> Option<Duration> {
    let started = Instant::now();
    let mut stream =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(3)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: probe\r\n\r\n").as_bytes())
        .ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let complete = head.starts_with("HTTP/1.1 200 ") && body.ends_with('\n');
    complete.then(|| started.elapsed())
}

/// Issue 11.7: 2,000 idle connections and 16 slowloris senders once left every probe unanswered.
/// Now ≥ 95 % of 76 fresh probes (`/` and `/healthz`, one after another, while the flood is held)
/// are answered within 1 s, the wrapper stays ≤ 16 MB and grows no thread, and the election goes on.
#[test]
fn a_flooded_endpoint_answers_fresh_probes() {
    raise_fd_limit(8192);
    let s = Scene::new();
    let mut a = start(&s, "a", &s.url(), &[]);
    s.wait("a leads", Duration::from_secs(10), || {
        http_code(&a, "/readyz") == Some(200)
    });
    let (pid, port) = (a.pid() as u32, a.status_port());
    let before = parse_metrics(&http(&a, "/metrics").unwrap().body);
    let threads_before = proc_status(pid, "Threads");

    let stop = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = (0..16)
        .map(|_| slowloris(port, Arc::clone(&stop)))
        .collect();
    let mut idle = Vec::new();
    for _ in 0..2000 {
        let addr = ([127, 0, 0, 1], port).into();
        if let Ok(stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(3)) {
            idle.push(stream);
        }
    }
    let opened = idle.len();
    let probed = Instant::now();
    let latencies: Vec<Option<Duration>> = (0..76)
        .map(|i| probe(port, if i % 2 == 0 { "/" } else { "/healthz" }))
        .collect();
    let probing = probed.elapsed();
    let (rss, hwm, threads) = (
        proc_status(pid, "VmRSS"),
        proc_status(pid, "VmHWM"),
        proc_status(pid, "Threads"),
    );
    stop.store(true, Ordering::Relaxed);
    let reconnects: u32 = senders.into_iter().map(|s| s.join().unwrap()).sum();
    drop(idle);

    let mut answered: Vec<Duration> = latencies.iter().flatten().copied().collect();
    answered.sort();
    let in_time = answered
        .iter()
        .filter(|d| **d <= Duration::from_secs(1))
        .count();
    let at = |q: f64| {
        let rank = (answered.len() as f64 * q).ceil() as usize;
        answered
            .get(rank.saturating_sub(1))
            .copied()
            .unwrap_or_default()
    };
    eprintln!(
        "flood: {opened} idle connections, 16 slowloris senders ({reconnects} connections); \
         {} of 76 probes answered, {in_time} within 1 s, in {probing:?}; latency p50 {:?} p95 {:?} \
         max {:?}; wrapper RSS {rss} kB (peak {hwm} kB), threads {threads_before} -> {threads}",
        answered.len(),
        at(0.5),
        at(0.95),
        at(1.0),
    );
    assert!(opened >= 2000, "opened only {opened} idle connections");
    assert!(
        in_time >= 73,
        "only {in_time} of 76 probes answered within 1 s"
    );
    assert!(rss <= 16 * 1024, "wrapper RSS {rss} kB > 16 MB");
    assert!(
        threads <= threads_before && threads <= 16,
        "threads: {threads_before} -> {threads}"
    );

    // The election did not notice.
    let after = parse_metrics(&http(&a, "/metrics").unwrap().body);
    assert_eq!(http_code(&a, "/readyz"), Some(200), "a no longer leads");
    assert!(a.running(), "the wrapper exited");
    for name in ["is_leader", "child_running"] {
        assert_eq!(
            metric(&after, &format!("etcd_await_election_{name}")),
            1.0,
            "{name}"
        );
    }
    for name in [
        "keepalive_failures_total",
        "leader_transitions_total",
        "election_attempts_total",
    ] {
        let name = format!("etcd_await_election_{name}");
        assert_eq!(
            metric(&after, &name),
            metric(&before, &name),
            "{name} changed"
        );
    }
}

fn raise_fd_limit(want: u64) {
    // SAFETY: getrlimit/setrlimit only read and write the struct passed in.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < want {
            limit.rlim_cur = want.min(limit.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}
