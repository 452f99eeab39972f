//! Operability against a real etcd: the status endpoint (Go-compatible body, /healthz, /readyz,
//! /metrics parsed by Prometheus' own parser), hostile HTTP clients, the acquire timeout, and logs.

mod support;

use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use support::{unique_name, wait_until, Etcd};

/// A child that creates `started` in `dir`, then runs until the file `stop` appears there.
fn until_stopped(dir: &Path) -> Vec<String> {
    let (started, stop) = (dir.join("started"), dir.join("stop"));
    vec![
        "sh".into(),
        "-c".into(),
        format!(
            "touch '{}'; while [ ! -e '{}' ]; do sleep 0.02; done",
            started.display(),
            stop.display()
        ),
    ]
}

struct Instance {
    child: Child,
    status: u16,
    stderr: PathBuf,
    dir: PathBuf,
}

impl Instance {
    fn start(endpoints: &str, lock: &str, identity: &str, extra: &[(&str, &str)]) -> Instance {
        let dir = std::env::temp_dir().join(unique_name("eae-status"));
        fs::create_dir_all(&dir).unwrap();
        let command = until_stopped(&dir);
        let instance = Instance::start_with(endpoints, lock, identity, extra, dir, &command);
        wait_until(
            "the status endpoint listens",
            Duration::from_secs(10),
            || get(instance.status, "/").is_some(),
        );
        instance
    }

    fn start_with(
        endpoints: &str,
        lock: &str,
        identity: &str,
        extra: &[(&str, &str)],
        dir: PathBuf,
        command: &[String],
    ) -> Instance {
        fs::create_dir_all(&dir).unwrap();
        let status = free_port();
        let stderr = dir.join("stderr");
        let mut cmd = Command::new(support::bin());
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("ETCD_AWAIT_ELECTION_ENDPOINTS", endpoints)
            .env("ETCD_AWAIT_ELECTION_LOCK_NAME", lock)
            .env("ETCD_AWAIT_ELECTION_IDENTITY", identity)
            .env("ETCD_AWAIT_ELECTION_LEASE_DURATION", "4")
            .env("ETCD_AWAIT_ELECTION_RENEW_DEADLINE", "2")
            .env("ETCD_AWAIT_ELECTION_RETRY_PERIOD", "500ms")
            .env(
                "ETCD_AWAIT_ELECTION_STATUS_ENDPOINT",
                format!("127.0.0.1:{status}"),
            );
        for (name, value) in extra {
            cmd.env(format!("ETCD_AWAIT_ELECTION_{name}"), value);
        }
        cmd.args(command)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&stderr).unwrap());
        let child = cmd.spawn().expect("spawn etcd-await-election");
        Instance {
            child,
            status,
            stderr,
            dir,
        }
    }

    fn get(&self, path: &str) -> Option<Response> {
        get(self.status, path)
    }

    fn code(&self, path: &str) -> Option<u16> {
        self.get(path).map(|r| r.code)
    }

    fn stop_child(&self) {
        fs::write(self.dir.join("stop"), "").unwrap();
    }

    fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "wrapper did not exit within {timeout:?}; stderr:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

struct Response {
    code: u16,
    head: String,
    body: String,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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

/// Parses a metrics page with Prometheus' own Python parser; returns `name value` lines.
fn parse_metrics(text: &str) -> String {
    let script = "import sys\n\
        from prometheus_client.parser import text_string_to_metric_families as parse\n\
        for family in parse(sys.stdin.read()):\n\
        \x20   for s in family.samples:\n\
        \x20       print(s.name, s.value)\n";
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
    String::from_utf8(out.stdout).unwrap()
}

fn metric(parsed: &str, name: &str) -> f64 {
    parsed
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("{name} missing in\n{parsed}"))
        .parse()
        .unwrap()
}

fn is_leader(instance: &Instance) -> Option<f64> {
    let page = instance.get("/metrics")?;
    Some(metric(
        &parse_metrics(&page.body),
        "etcd_await_election_is_leader",
    ))
}

fn keys(etcd: &Etcd, lock: &str) -> String {
    etcd.etcdctl_ok(&["get", "--prefix", &format!("{lock}/")])
}

#[test]
fn bodies_are_the_go_tools_byte_for_byte() {
    let etcd = Etcd::start();
    let lock = unique_name("lock");
    let leader = Instance::start(&etcd.client_url(), &lock, "pod-a", &[]);
    wait_until("pod-a runs", Duration::from_secs(10), || {
        leader.get("/").is_some_and(|r| r.body.contains("running"))
    });
    let waiter = Instance::start(&etcd.client_url(), &lock, "pod-b", &[]);
    wait_until("pod-b knows the leader", Duration::from_secs(10), || {
        waiter.get("/").is_some_and(|r| r.body.contains("pod-a"))
    });
    let nobody = format!("http://127.0.0.1:{}", free_port());
    let cut_off = Instance::start(&nobody, &lock, "pod-c", &[]);

    let running = leader.get("/").unwrap();
    assert_eq!(running.code, 200);
    assert_eq!(
        running.body,
        r#"{"status":"ok","phase":"running","leader":"pod-a"}"#
    );
    assert!(running
        .head
        .to_ascii_lowercase()
        .contains("content-type: application/json"));
    assert_eq!(
        waiter.get("/").unwrap().body,
        r#"{"status":"ok","phase":"awaiting","leader":"pod-a"}"#
    );
    assert_eq!(
        cut_off.get("/").unwrap().body,
        r#"{"status":"ok","phase":"awaiting","leader":"unknown"}"#
    );
}

#[test]
fn readyz_and_metrics_follow_a_handover() {
    let etcd = Etcd::start();
    let lock = unique_name("lock");
    let a = Instance::start(&etcd.client_url(), &lock, "a", &[]);
    wait_until("a leads", Duration::from_secs(10), || {
        a.code("/readyz") == Some(200)
    });
    let mut b = Instance::start(&etcd.client_url(), &lock, "b", &[]);
    wait_until("b is queued", Duration::from_secs(10), || {
        keys(&etcd, &lock).lines().count() == 4
    });
    assert_eq!(b.code("/readyz"), Some(503), "b waits: not ready");
    assert_eq!(b.code("/healthz"), Some(200), "b waits: healthy");
    assert_eq!(is_leader(&a), Some(1.0));
    assert_eq!(is_leader(&b), Some(0.0));

    a.stop_child();
    wait_until("b becomes ready", Duration::from_secs(10), || {
        b.code("/readyz") == Some(200)
    });
    assert_eq!(is_leader(&b), Some(1.0));
    let parsed = parse_metrics(&b.get("/metrics").unwrap().body);
    assert_eq!(
        metric(&parsed, "etcd_await_election_leader_transitions_total"),
        1.0
    );
    assert_eq!(metric(&parsed, "etcd_await_election_child_running"), 1.0);
    assert!(metric(&parsed, "etcd_await_election_election_attempts_total") >= 1.0);
    assert!(parsed.contains("etcd_await_election_keepalive_duration_seconds_count"));

    b.stop_child();
    assert!(b.wait(Duration::from_secs(10)).success());
    assert_eq!(b.code("/readyz"), None, "b exited: its endpoint is gone");
}

#[test]
fn healthz_and_readyz_fail_when_renewals_stop() {
    let etcd = Etcd::start();
    let lock = unique_name("lock");
    let dir = std::env::temp_dir().join(unique_name("eae-status"));
    fs::create_dir_all(&dir).unwrap();
    // The child takes its time to stop, so the stepping-down state can be observed.
    let command = [
        "sh".to_string(),
        "-c".to_string(),
        "trap 'sleep 0.8; exit 0' TERM; while :; do sleep 0.02; done".to_string(),
    ];
    let mut leader = Instance::start_with(&etcd.client_url(), &lock, "a", &[], dir, &command);
    wait_until("a leads", Duration::from_secs(10), || {
        leader.code("/readyz") == Some(200)
    });
    assert_eq!(leader.code("/healthz"), Some(200));

    etcd.freeze();
    let frozen = Instant::now();
    let mut saw = (false, false);
    while frozen.elapsed() < Duration::from_secs(4) && !(saw.0 && saw.1) {
        saw.0 |= leader.code("/healthz") == Some(503);
        saw.1 |= leader.code("/readyz") == Some(503);
        std::thread::sleep(Duration::from_millis(20));
    }
    let code = leader.wait(Duration::from_secs(10)).code();
    etcd.resume();
    assert!(
        saw.0,
        "/healthz never answered 503 after the renew deadline"
    );
    assert!(saw.1, "/readyz never answered 503 after the renew deadline");
    assert_eq!(code, Some(75), "{}", leader.log());
}

#[test]
fn hostile_clients_leave_the_election_unaffected() {
    raise_fd_limit(4096);
    let etcd = Etcd::start();
    let lock = unique_name("lock");
    let a = Instance::start(&etcd.client_url(), &lock, "a", &[]);
    wait_until("a leads", Duration::from_secs(10), || {
        a.code("/readyz") == Some(200)
    });
    let b = Instance::start(&etcd.client_url(), &lock, "b", &[]);
    wait_until("b is queued", Duration::from_secs(10), || {
        keys(&etcd, &lock).lines().count() == 4
    });

    // Every abuse is aimed at the waiter, whose election must not notice.
    let port = b.status;
    let garbage = request(port, b"\x00\xff\x13garbage\r\n\r\n");
    assert!(garbage.is_none_or(|r| r.code == 400), "garbage");
    let huge = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(100_000));
    let huge = request(port, huge.as_bytes());
    assert!(huge.is_none_or(|r| r.code == 431), "huge header");
    assert_eq!(
        request(port, b"POST / HTTP/1.1\r\n\r\n").map(|r| r.code),
        Some(405)
    );
    assert_eq!(
        request(port, b"GET /nope HTTP/1.1\r\n\r\n").map(|r| r.code),
        Some(404)
    );
    assert_eq!(request(port, b"GET /\r\n\r\n").map(|r| r.code), Some(400));

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
    a.stop_child();
    wait_until(
        "b leads while its endpoint is flooded",
        Duration::from_secs(5),
        || b.dir.join("started").exists(),
    );

    for stream in &held {
        let _ = stream.shutdown(Shutdown::Both);
    }
    drop(held);
    assert_eq!(b.code("/"), Some(200));
}

#[test]
fn acquire_timeout_leaves_cleanly_with_exit_69() {
    let etcd = Etcd::start();
    let lock = unique_name("lock");
    let a = Instance::start(&etcd.client_url(), &lock, "a", &[]);
    wait_until("a leads", Duration::from_secs(10), || {
        a.code("/readyz") == Some(200)
    });
    let before = keys(&etcd, &lock);

    let started = Instant::now();
    let mut b = Instance::start(&etcd.client_url(), &lock, "b", &[("ACQUIRE_TIMEOUT", "1s")]);
    let status = b.wait(Duration::from_secs(10));
    assert_eq!(status.code(), Some(69), "{}", b.log());
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert!(!b.dir.join("stop").exists());
    assert_eq!(keys(&etcd, &lock), before, "b's key was left behind");
    assert!(b.log().contains("lease revoked"), "{}", b.log());
}

#[test]
fn logs_never_contain_the_password() {
    let etcd = Etcd::start_auth();
    let lock = unique_name("lock");
    let dir = std::env::temp_dir().join(unique_name("eae-status"));
    fs::create_dir_all(&dir).unwrap();
    let quick = ["true".to_string()];
    let credentials = [
        ("USERNAME", support::USER),
        ("PASSWORD", support::PASSWORD),
        ("LOG_FORMAT", "json"),
    ];
    let mut good = Instance::start_with(
        &etcd.client_url(),
        &lock,
        "a",
        &credentials,
        dir.clone(),
        &quick,
    );
    assert_eq!(
        good.wait(Duration::from_secs(10)).code(),
        Some(0),
        "{}",
        good.log()
    );
    let log = good.log();
    assert!(!log.contains(support::PASSWORD), "{log}");
    assert!(log.contains("lease revoked"), "{log}");
    for line in log.lines() {
        let value: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(value["ts"].is_string() && value["level"].is_string() && value["msg"].is_string());
    }

    let wrong = [("USERNAME", support::USER), ("PASSWORD", "wrong-secret-pw")];
    let mut bad = Instance::start_with(
        &etcd.client_url(),
        &lock,
        "b",
        &wrong,
        dir.join("bad"),
        &quick,
    );
    assert_eq!(
        bad.wait(Duration::from_secs(10)).code(),
        Some(69),
        "{}",
        bad.log()
    );
    let log = bad.log();
    assert!(log.contains("authentication failed"), "{log}");
    assert!(!log.contains("wrong-secret-pw"), "{log}");
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
