//! Tests of the test harness in `tests/support` itself: the etcd members and clusters, the proxy,
//! the marks log's checks (fed made-up logs, so that each can be seen to fail) and the clean-up
//! of scenes and wrappers.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::thread;
use std::time::{Duration, Instant};

use support::env::Env;
use support::marks::{Marks, OnTerm};
use support::procs::{alive, group_alive};
use support::proxy::Proxy;
use support::wrapper::{Scene, SOON};
use support::{pgrep, wait_until, Cluster, Etcd, Options};

/// Asserts that nothing runs from `dir` any more and that `dir` is gone.
fn assert_cleaned_up(dir: &Path) {
    let left = pgrep(&dir.to_string_lossy());
    assert!(
        left.is_empty(),
        "processes left behind for {dir:?}: {left:?}"
    );
    assert!(!dir.exists(), "{dir:?} was not removed");
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// etcdctl against `url` with only the given global flags (no harness defaults).
fn etcdctl_raw(url: &str, flags: &[String], args: &[&str]) -> Output {
    Command::new(std::env::var("ETCDCTL_BIN").unwrap_or_else(|_| "/usr/bin/etcdctl".into()))
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={url}"))
        .arg("--dial-timeout=2s")
        .arg("--command-timeout=3s")
        .args(flags)
        .args(args)
        .output()
        .expect("run etcdctl")
}

fn tls_flags(ca: &Path, cert: &Path, key: &Path) -> Vec<String> {
    vec![
        format!("--cacert={}", ca.display()),
        format!("--cert={}", cert.display()),
        format!("--key={}", key.display()),
    ]
}

/// A minimal HTTP/1.0 POST returning (status, body).
fn http_post(hostport: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(hostport).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut req = format!(
        "POST {path} HTTP/1.0\r\nHost: {hostport}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp[9..12].parse().expect("status code");
    let body = resp
        .split_once("\r\n\r\n")
        .map(|x| x.1)
        .unwrap_or("")
        .to_string();
    (status, body)
}

#[test]
fn plain_member_serves_and_cleans_up() {
    let etcd = Etcd::start();
    assert!(etcd.client_url().starts_with("http://127.0.0.1:"));
    assert_eq!(
        etcd.client_url(),
        format!("http://{}", etcd.endpoint_hostport())
    );
    assert!(etcd.tls_files().is_none());
    assert!(etcd.data_dir().join("member").is_dir());
    etcd.etcdctl_ok(&["put", "k", "v"]);
    assert_eq!(
        etcd.etcdctl_ok(&["get", "k", "--print-value-only"]).trim(),
        "v"
    );
    // The JSON gateway answers too.
    let (status, body) = http_post(
        &etcd.endpoint_hostport(),
        "/v3/kv/range",
        &[],
        r#"{"key":"aw=="}"#,
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(r#""value":"dg==""#), "{body}");
    let dir = etcd.dir().to_path_buf();
    let pid = etcd.pid();
    assert!(pgrep(&dir.to_string_lossy()).contains(&pid));
    drop(etcd);
    assert_cleaned_up(&dir);
}

#[test]
fn tls_with_client_certs_in_three_key_forms() {
    let etcd = Etcd::start_tls(true);
    assert!(etcd.client_url().starts_with("https://127.0.0.1:"));
    let t = etcd.tls_files().expect("tls files").clone();
    for (path, header) in [
        (&t.key_pkcs8, "-----BEGIN PRIVATE KEY-----"),
        (&t.key_pkcs1, "-----BEGIN RSA PRIVATE KEY-----"),
        (&t.key_sec1, "-----BEGIN EC PRIVATE KEY-----"),
    ] {
        let pem = std::fs::read_to_string(path).unwrap();
        assert!(pem.starts_with(header), "{path:?} starts {:?}", &pem[..40]);
    }
    // Server cert carries both EKUs and both SANs; client certs have no CN.
    let text = openssl_text(&t.ca.parent().unwrap().join("server.pem"));
    assert!(text.contains("TLS Web Server Authentication, TLS Web Client Authentication"));
    assert!(text.contains("IP Address:127.0.0.1") && text.contains("DNS:localhost"));
    for cert in [&t.cert, &t.rsa_cert, &t.ec_cert] {
        let text = openssl_text(cert);
        assert!(text.contains("Subject: O = eae-test\n"), "{text}");
    }

    let url = etcd.client_url();
    for (i, (cert, key)) in [
        (&t.cert, &t.key_pkcs8),
        (&t.rsa_cert, &t.key_pkcs1),
        (&t.ec_cert, &t.key_sec1),
    ]
    .into_iter()
    .enumerate()
    {
        let flags = tls_flags(&t.ca, cert, key);
        let key_name = format!("k{i}");
        let out = etcdctl_raw(&url, &flags, &["put", &key_name, "v"]);
        assert!(out.status.success(), "put with {key:?}: {out:?}");
        let out = etcdctl_raw(&url, &flags, &["get", &key_name, "--print-value-only"]);
        assert_eq!(stdout(&out).trim(), "v", "get with {key:?}: {out:?}");
    }
    // The harness's own etcdctl uses the PKCS#8 pair.
    etcd.etcdctl_ok(&["put", "k", "v"]);
    // No client certificate: refused.
    let out = etcdctl_raw(
        &url,
        &[format!("--cacert={}", t.ca.display())],
        &["get", "k"],
    );
    assert!(!out.status.success(), "no client cert accepted: {out:?}");
    // Wrong CA: the server is not trusted.
    let out = etcdctl_raw(
        &url,
        &tls_flags(&t.wrong_ca, &t.cert, &t.key_pkcs8),
        &["get", "k"],
    );
    assert!(!out.status.success(), "wrong CA accepted: {out:?}");
    let dir = etcd.dir().to_path_buf();
    drop(etcd);
    assert_cleaned_up(&dir);
}

fn openssl_text(cert: &PathBuf) -> String {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(cert)
        .output()
        .unwrap();
    stdout(&out)
}

#[test]
fn tls_without_client_cert_auth() {
    let etcd = Etcd::start_tls(false);
    let t = etcd.tls_files().unwrap();
    let out = etcdctl_raw(
        &etcd.client_url(),
        &[format!("--cacert={}", t.ca.display())],
        &["put", "k", "v"],
    );
    assert!(out.status.success(), "{out:?}");
    etcd.etcdctl_ok(&["get", "k"]);
}

#[test]
fn auth_member_requires_credentials() {
    let etcd = Etcd::start_auth();
    assert!(etcd.auth_enabled());
    etcd.etcdctl_ok(&["put", "k", "v"]); // as root
    let out = etcd.etcdctl_as(None, &["put", "k", "v2"]);
    assert!(
        !out.status.success(),
        "unauthenticated put accepted: {out:?}"
    );
    let out = etcd.etcdctl_as(Some("eae:eaepw"), &["put", "any/key", "v3"]);
    assert!(out.status.success(), "eae put: {out:?}");
    let out = etcd.etcdctl_as(Some("eae:eaepw"), &["get", "k", "--print-value-only"]);
    assert_eq!(stdout(&out).trim(), "v");
    let out = etcd.etcdctl_as(Some("eae:wrong"), &["get", "k"]);
    assert!(!out.status.success(), "wrong password accepted: {out:?}");
    // The eae user may not administer auth.
    let out = etcd.etcdctl_as(Some("eae:eaepw"), &["user", "list"]);
    assert!(!out.status.success(), "eae could list users: {out:?}");
    // The role covers the whole keyspace.
    let role = etcd.etcdctl_ok(&["role", "get", "eae"]);
    assert!(role.contains("<open ended>"), "{role}");
}

#[test]
fn auth_token_ttl_is_an_idle_timeout() {
    let etcd = Etcd::start_auth_with_token_ttl(2);
    let hp = etcd.endpoint_hostport();
    let (status, body) = http_post(
        &hp,
        "/v3/auth/authenticate",
        &[],
        r#"{"name":"eae","password":"eaepw"}"#,
    );
    assert_eq!(status, 200, "{body}");
    let token = body
        .split(r#""token":""#)
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    let range = |tok: &str| {
        http_post(
            &hp,
            "/v3/kv/range",
            &[("Authorization", tok)],
            r#"{"key":"aw=="}"#,
        )
    };
    // Used every second, the token lives past its TTL...
    for _ in 0..3 {
        std::thread::sleep(Duration::from_secs(1));
        assert_eq!(range(&token).0, 200);
    }
    // ...and expires once idle for longer than the TTL.
    std::thread::sleep(Duration::from_millis(3500));
    let (status, body) = range(&token);
    assert_eq!(status, 401, "{body}");
    assert!(body.contains(r#""code":16"#), "{body}");
    // Without any token: 400 "user name is empty" (code 3) on etcd 3.4, not 401.
    let (status, body) = http_post(&hp, "/v3/kv/range", &[], r#"{"key":"aw=="}"#);
    assert!(status == 400 || status == 401, "{status} {body}");
}

#[test]
fn tls_client_certs_plus_user_auth() {
    let etcd = Etcd::start_with(Options {
        tls: true,
        client_cert_auth: true,
        auth: true,
        auth_token_ttl: None,
    });
    etcd.etcdctl_ok(&["put", "k", "v"]); // cert without CN + root password
    let out = etcd.etcdctl_as(None, &["get", "k"]);
    assert!(
        !out.status.success(),
        "cert without CN gave a user: {out:?}"
    );
    let out = etcd.etcdctl_as(Some("eae:eaepw"), &["get", "k", "--print-value-only"]);
    assert_eq!(stdout(&out).trim(), "v", "{out:?}");
}

#[test]
fn freeze_and_resume() {
    let etcd = Etcd::start();
    etcd.freeze();
    let out = etcd.etcdctl(&["--dial-timeout=1s", "--command-timeout=1s", "get", "k"]);
    assert!(!out.status.success(), "frozen etcd answered: {out:?}");
    etcd.resume();
    wait_until("etcd answers after resume", Duration::from_secs(10), || {
        etcd.etcdctl(&["put", "k", "v"]).status.success()
    });
}

#[test]
fn restart_keeps_data_and_ports() {
    let mut etcd = Etcd::start();
    etcd.etcdctl_ok(&["put", "k", "kept"]);
    let (url, pid) = (etcd.client_url(), etcd.pid());
    etcd.kill();
    assert!(!etcd.is_running());
    assert!(
        etcd.data_dir().join("member").is_dir(),
        "kill removed the data dir"
    );
    assert!(!etcd
        .etcdctl(&["--dial-timeout=1s", "get", "k"])
        .status
        .success());
    etcd.restart();
    assert_eq!(etcd.client_url(), url);
    assert_ne!(etcd.pid(), pid);
    assert_eq!(
        etcd.etcdctl_ok(&["get", "k", "--print-value-only"]).trim(),
        "kept"
    );
    // Restarting a running member works too.
    etcd.restart();
    assert_eq!(
        etcd.etcdctl_ok(&["get", "k", "--print-value-only"]).trim(),
        "kept"
    );
}

#[test]
fn auth_survives_restart() {
    let mut etcd = Etcd::start_auth();
    etcd.etcdctl_ok(&["put", "k", "v"]);
    etcd.restart();
    etcd.etcdctl_ok(&["get", "k"]);
    assert!(!etcd.etcdctl_as(None, &["get", "k"]).status.success());
}

#[test]
fn three_member_cluster_survives_one_loss() {
    let mut cluster = Cluster::start(3);
    assert_eq!(cluster.client_urls().len(), 3);
    // etcdctl 3.4 prints the health lines on stderr.
    let out = cluster.etcdctl(&["endpoint", "health"]);
    let health = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(health.matches("is healthy").count(), 3, "{health}");
    let leader = cluster.leader().expect("a leader");
    let dirs: Vec<PathBuf> = cluster
        .members()
        .iter()
        .map(|m| m.dir().to_path_buf())
        .collect();

    // Lose the leader: the other two elect a new one and still serve writes.
    cluster.kill(leader);
    let survivor = (leader + 1) % 3;
    wait_until("two members serve a put", Duration::from_secs(15), || {
        cluster
            .member(survivor)
            .etcdctl(&["put", "after-kill", "yes"])
            .status
            .success()
    });
    wait_until("a new leader", Duration::from_secs(15), || {
        cluster.leader().is_some_and(|l| l != leader)
    });

    cluster.restart(leader);
    assert_eq!(
        cluster
            .member(leader)
            .etcdctl_ok(&["get", "after-kill", "--print-value-only"])
            .trim(),
        "yes"
    );

    // A frozen majority stops the cluster; resumed, it serves again.
    cluster.freeze_all();
    let out = cluster.etcdctl(&["--dial-timeout=1s", "--command-timeout=1s", "put", "f", "1"]);
    assert!(!out.status.success(), "frozen cluster answered: {out:?}");
    cluster.resume_all();
    wait_until(
        "cluster serves after resume",
        Duration::from_secs(15),
        || cluster.etcdctl(&["put", "f", "2"]).status.success(),
    );
    drop(cluster);
    for dir in &dirs {
        assert_cleaned_up(dir);
    }
}

#[test]
fn panicking_test_still_cleans_up() {
    let handle = std::thread::spawn(|| {
        let etcd = Etcd::start();
        let dir = etcd.dir().to_path_buf();
        std::panic::panic_any(dir);
    });
    let dir: PathBuf = *handle
        .join()
        .expect_err("thread should panic")
        .downcast::<PathBuf>()
        .expect("panic payload is the dir");
    assert_cleaned_up(&dir);
}

#[test]
fn unique_names_differ() {
    let a = support::unique_name("lock");
    let b = support::unique_name("lock");
    assert_ne!(a, b);
    assert!(a.starts_with("lock-"));
}

// ---- the proxy ----

/// A loopback echo server; returns its `host:port`.
fn echo_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().unwrap().to_string();
    thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            thread::spawn(move || {
                let mut reader = stream.try_clone().expect("clone");
                let mut writer = stream;
                let _ = std::io::copy(&mut reader, &mut writer);
            });
        }
    });
    addr
}

/// How [`read_within`] ended.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    /// The bytes wanted arrived.
    Complete,
    /// The peer closed the connection.
    Closed,
    /// The time was up.
    TimedOut,
    /// Reading failed otherwise.
    Failed(ErrorKind),
}

/// Reads until `want` bytes arrived, the peer closed, or `wait` passed (a read interrupted
/// early is resumed until then), and says which.
fn read_within(stream: &mut TcpStream, want: usize, wait: Duration) -> (Vec<u8>, Ended) {
    let deadline = Instant::now() + wait;
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (got, Ended::TimedOut);
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return (got, Ended::Closed),
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                if got.len() >= want {
                    return (got, Ended::Complete);
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(e) => return (got, Ended::Failed(e.kind())),
        }
    }
}

/// Asserts that `expected` comes back on `stream` within 5 s.
fn assert_echo(proxy: &Proxy, stream: &mut TcpStream, expected: &[u8]) {
    let (got, ended) = read_within(stream, expected.len(), Duration::from_secs(5));
    assert_eq!(
        (got.as_slice(), &ended),
        (expected, &Ended::Complete),
        "{}",
        proxy_state(proxy)
    );
}

/// Asserts that nothing comes back on `stream` for 300 ms (and that it stays open).
fn assert_silent(proxy: &Proxy, stream: &mut TcpStream) {
    let (got, ended) = read_within(stream, 1, Duration::from_millis(300));
    assert_eq!(
        (got.as_slice(), &ended),
        (&b""[..], &Ended::TimedOut),
        "{}",
        proxy_state(proxy)
    );
}

fn proxy_state(proxy: &Proxy) -> String {
    format!(
        "proxy: {} accepted, {} open, failures {:?}",
        proxy.accepted(),
        proxy.open_connections(),
        proxy.failures()
    )
}

#[test]
fn the_proxy_freezes_thaws_and_closes_without_losing_order() {
    let proxy = Proxy::start(&echo_server());
    let mut old = TcpStream::connect(proxy.hostport()).unwrap();
    old.write_all(b"a").unwrap();
    assert_echo(&proxy, &mut old, b"a");

    proxy.freeze();
    old.write_all(b"b").unwrap();
    // Asserting silence: nothing may come back while frozen.
    assert_silent(&proxy, &mut old);
    proxy.thaw();
    assert_echo(&proxy, &mut old, b"b");

    assert_eq!(proxy.freeze_existing(), 1);
    let mut new = TcpStream::connect(proxy.hostport()).unwrap();
    new.write_all(b"c").unwrap();
    assert_echo(&proxy, &mut new, b"c");
    old.write_all(b"d").unwrap();
    // Asserting silence on the frozen connection.
    assert_silent(&proxy, &mut old);
    assert_eq!(proxy.connections_with(b"c"), 1);
    assert!(proxy.last_forwarded_upstream().is_some());

    proxy.thaw();
    assert_echo(&proxy, &mut old, b"d");
    proxy.hold_matching(b"x");
    new.write_all(b"e").unwrap();
    assert_echo(&proxy, &mut new, b"e");
    new.write_all(b"xy").unwrap();
    // Asserting silence: the chunk with the pattern is held, and the connection with it.
    assert_silent(&proxy, &mut new);
    old.write_all(b"f").unwrap();
    assert_echo(&proxy, &mut old, b"f");
    let mut third = TcpStream::connect(proxy.hostport()).unwrap();
    third.write_all(b"x").unwrap();
    assert_silent(&proxy, &mut third);

    proxy.freeze_existing();
    old.write_all(b"g").unwrap();
    proxy.close_all();
    old.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut rest = Vec::new();
    let _ = old.read_to_end(&mut rest);
    assert_eq!(rest, b"", "held bytes must be dropped by close_all");
    assert_eq!(proxy.accepted(), 3, "{}", proxy_state(&proxy));
    assert!(proxy.failures().is_empty(), "{}", proxy_state(&proxy));
}

#[test]
fn the_proxy_closes_and_reports_a_connection_it_cannot_set_up() {
    // A target nothing listens on: each connection is closed at once, and the proxy says why.
    // 127.0.0.2 with a port held on 127.0.0.1: nobody can listen there (a wildcard bind of the
    // port would clash), and the connection cannot meet itself (its source is 127.0.0.1).
    let held = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = held.local_addr().unwrap().port();
    let proxy = Proxy::start(&format!("127.0.0.2:{port}"));
    let mut client = TcpStream::connect(proxy.hostport()).unwrap();
    let (got, ended) = read_within(&mut client, 1, SOON);
    assert_eq!((got, ended), (Vec::new(), Ended::Closed));
    wait_until("the failure is recorded", SOON, || {
        !proxy.failures().is_empty()
    });
    assert!(
        proxy.failures()[0].starts_with("connect to 127.0.0.2:"),
        "{:?}",
        proxy.failures()
    );
    assert_eq!(proxy.accepted(), 0);
}

// ---- the marks log and its checks ----

/// A log of `lines`, each with its newline.
fn log(lines: &[&str]) -> Marks {
    Marks::parse(&lines.iter().map(|l| format!("{l}\n")).collect::<String>())
}

#[test]
fn the_marks_are_parsed_and_a_half_written_line_is_skipped() {
    let marks = Marks::parse("start a 10 42 lock/1f 7 1f\nterm a 15\nend a 20\nstart b 30 43");
    let start = marks.start_of("a").expect("a started");
    assert_eq!(
        (start.at, start.pid, start.key.as_str(), start.revision),
        (10, 42, "lock/1f", 7)
    );
    assert_eq!(start.lease_hex, "1f");
    assert_eq!(marks.at("term", "a"), Some(15));
    assert_eq!(marks.end_of("a"), Some(20));
    assert!(marks.start_of("b").is_none(), "a line without its newline");
}

#[test]
fn the_overlap_checks_catch_overlaps_and_unfinished_children() {
    let turns = log(&["start a 10", "end a 20", "start b 30", "end b 40"]);
    assert_eq!(turns.check_no_overlap(), Ok(()));
    assert_eq!(turns.check_one_at_a_time(&["a", "b"]), Ok(()));
    assert!(
        turns.check_one_at_a_time(&["b", "a"]).is_err(),
        "wrong order"
    );

    let overlap = log(&["start a 10", "start b 15", "end a 20", "end b 40"]);
    assert!(overlap.check_no_overlap().is_err());
    assert!(overlap.check_one_at_a_time(&["a", "b"]).is_err());
    let touching = log(&["start a 10", "end a 20", "start b 20", "end b 40"]);
    assert!(
        touching.check_no_overlap().is_err(),
        "an end must precede the next start"
    );

    let unfinished = log(&["start a 10", "start b 30", "end b 40"]);
    assert!(unfinished.check_no_overlap().is_err());
    let last_runs = log(&["start a 10", "end a 20", "start b 30"]);
    assert_eq!(last_runs.check_no_overlap(), Ok(()), "the last one may run");
    assert!(last_runs.check_one_at_a_time(&["a", "b"]).is_err());

    let twice = log(&["start a 10", "end a 20", "start a 30", "end a 40"]);
    assert!(twice.check_no_overlap().is_err(), "one child, two starts");
    let backwards = log(&["start a 30", "end a 20"]);
    assert!(backwards.check_no_overlap().is_err());

    // A preempted child (killed, no end) is not one of the turns asked about.
    let preempted = log(&[
        "start a 10",
        "start c 15",
        "end c 20",
        "start b 30",
        "end b 40",
    ]);
    assert_eq!(preempted.check_one_at_a_time(&["c", "b"]), Ok(()));
    assert!(preempted.check_no_overlap().is_err());
}

#[test]
fn a_dropped_wrapper_is_killed_and_a_scene_kills_what_its_children_left() {
    let s = Scene::without_etcd();
    // Disabled mode: the wrapper becomes the child, so dropping the wrapper kills the child.
    let wrapper = s.spawn("direct", Env::default(), s.child("direct", OnTerm::Ignore));
    let direct = s.await_start("direct", SOON).pid;
    assert_eq!(direct, wrapper.pid());
    drop(wrapper);
    assert!(!alive(direct), "a dropped wrapper survived");

    // A child whose wrapper is gone (here: started without one), in a group of its own.
    let args = s.child("orphan", OnTerm::Ignore);
    let mut orphan = Command::new(&args[0])
        .args(&args[1..])
        .process_group(0)
        .spawn()
        .expect("spawn sh");
    let pid = s.await_start("orphan", SOON).pid;
    let dir = s.dir().to_path_buf();
    drop(s);
    wait_until("the orphan and its group are killed", SOON, || {
        !alive(pid) && !group_alive(pid)
    });
    let _ = orphan.wait();
    assert!(!dir.exists(), "{dir:?} was not removed");
}
