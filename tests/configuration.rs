//! README "Configuration" (and "Usage"): bad values exit 78 with one stderr line naming the
//! variable and the value before the command starts; usage, `--help` and `--version`; disabled
//! mode; hints and warnings, which are one line and never stop the command; and none of these
//! outputs panics when stdout or stderr is a closed pipe.
//!
//! Each case runs the built binary in a [`Scene`] (PATH plus only the variables the case sets)
//! around the marks child of `tests/support/marks.rs`, told to exit 7 at once: its `start` mark
//! says whether the command ran.
//!
//! Run: `cargo test --test configuration -- --test-threads=2`.

mod support;

use std::ffi::OsString;
use std::fs;
use std::net::TcpListener;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use support::env::{sh, var, Env, FAST};
use support::marks::OnTerm;
use support::wrapper::{Scene, Wrapper, SOON};
use support::Etcd;

/// Starts the wrapper `name` with exactly `env` (and PATH) around a child that exits 7 at once.
fn wrap(s: &Scene, name: &str, env: Env) -> Wrapper {
    s.stop(name, 7);
    s.spawn(name, env, s.child(name, OnTerm::Trap))
}

/// Writes `content` to the file `name` of the scene's directory; returns its path.
fn file(s: &Scene, name: &str, content: &[u8]) -> String {
    let path = s.dir().join(name);
    fs::write(&path, content).expect("write a test file");
    path.to_string_lossy().into_owned()
}

/// A valid election on a dead endpoint (nothing listens on port 9) with [`FAST`] timings, plus
/// `extra` (suffix, value); later entries override earlier ones, as in a shell.
fn election(extra: &[(&str, &str)]) -> Env {
    let base = Env::default()
        .set("LOCK_NAME", "lock")
        .set("IDENTITY", "me")
        .set("ENDPOINTS", "http://127.0.0.1:9")
        .timings(FAST);
    extra.iter().fold(base, |env, (k, v)| env.set(k, *v))
}

#[test]
fn new_configuration_errors_exit_78_naming_variable_and_value() {
    let s = Scene::without_etcd();
    let fifo = s.dir().join("fifo");
    let made = Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("run mkfifo");
    assert!(made.success());
    let fifo = fifo.to_string_lossy().into_owned();
    let latin1 = file(&s, "latin1", b"SECRET-\xe9\n");
    let empty = file(&s, "empty", b"\n");
    let big = file(&s, "big", &vec![b'S'; 64 * 1024 + 1]);
    let pw = file(&s, "pw", b"SECRET-pw\n");
    let missing = s.dir().join("missing").to_string_lossy().into_owned();
    let folder = s.dir().to_string_lossy().into_owned();
    // (changes, variable named, value shown, more text the line must hold)
    type Case<'a> = (Vec<(&'a str, &'a str)>, &'a str, &'a str, &'a str);
    let cases: Vec<Case> = vec![
        (
            vec![("RETRY_PERIOD", "1ms")],
            "RETRY_PERIOD",
            "1ms",
            "at least 100ms",
        ),
        (
            vec![("RETRY_PERIOD", "99ms")],
            "RETRY_PERIOD",
            "99ms",
            "at least 100ms",
        ),
        (
            vec![("RENEW_DEADLINE", "1s")],
            "RENEW_DEADLINE",
            "1s",
            "min(ETCD_AWAIT_ELECTION_RETRY_PERIOD (500ms), ETCD_AWAIT_ELECTION_LEASE_DURATION \
             (3s) / 3) = 500ms",
        ),
        (
            vec![
                ("LEASE_DURATION", "15"),
                ("RENEW_DEADLINE", ""),
                ("RETRY_PERIOD", "5s"),
            ],
            "RENEW_DEADLINE",
            "",
            "its default 10s is not more than twice the keepalive interval",
        ),
        (
            vec![
                ("USERNAME", "u"),
                ("PASSWORD", "SECRET"),
                ("PASSWORD_FILE", &pw),
            ],
            "PASSWORD_FILE",
            &pw,
            "not both",
        ),
        (
            vec![("USERNAME", "u"), ("PASSWORD_FILE", &fifo)],
            "PASSWORD_FILE",
            &fifo,
            "it is a FIFO",
        ),
        (
            vec![("USERNAME", "u"), ("PASSWORD_FILE", "/dev/zero")],
            "PASSWORD_FILE",
            "/dev/zero",
            "it is a device",
        ),
        (
            vec![("USERNAME", "u"), ("PASSWORD_FILE", &folder)],
            "PASSWORD_FILE",
            &folder,
            "it is a directory",
        ),
        (
            vec![("USERNAME", "u"), ("PASSWORD_FILE", &missing)],
            "PASSWORD_FILE",
            &missing,
            "cannot read it",
        ),
        (
            vec![("USERNAME", "u"), ("PASSWORD_FILE", &latin1)],
            "PASSWORD_FILE",
            &latin1,
            "not valid UTF-8",
        ),
        (
            vec![("USERNAME_FILE", &empty), ("PASSWORD", "SECRET")],
            "USERNAME_FILE",
            &empty,
            "it is empty",
        ),
        (
            vec![("USERNAME_FILE", &big), ("PASSWORD", "SECRET")],
            "USERNAME_FILE",
            &big,
            "65537 bytes",
        ),
        (
            vec![("USERNAME_FILE", &pw)],
            "PASSWORD",
            "",
            "required because ETCD_AWAIT_ELECTION_USERNAME_FILE is set",
        ),
        (
            vec![("RECAMPAIGN", "sometimes")],
            "RECAMPAIGN",
            "sometimes",
            "off, on-loss or always",
        ),
        (vec![("HOLDERS", "0")], "HOLDERS", "0", "from 1 to 1000"),
        (
            vec![("HOLDERS", "1001")],
            "HOLDERS",
            "1001",
            "from 1 to 1000",
        ),
    ];
    for (i, (changes, variable, value, text)) in cases.iter().enumerate() {
        let name = format!("case-{i}");
        let mut run = wrap(&s, &name, election(changes));
        let status = run.wait(SOON);
        let stderr = run.stderr();
        let named = var(variable);
        let shown = if value.is_empty() {
            format!("{named} is not set: ")
        } else {
            format!("{named}={value:?}: expected ")
        };
        let context = format!("{changes:?}: stderr:\n{stderr}");
        assert_eq!(status.code(), Some(78), "{context}");
        assert!(stderr.contains(&shown), "no {shown:?} in {context}");
        assert!(stderr.contains(text), "no {text:?} in {context}");
        assert!(!stderr.contains("SECRET"), "a secret shown in {context}");
        assert_eq!(stderr.lines().count(), 1, "{context}");
        assert!(
            s.start_of(&name).is_none(),
            "the command started for {context}"
        );
    }
}

#[test]
fn renew_deadline_error_names_both_variables() {
    let s = Scene::without_etcd();
    let changes = [
        ("LEASE_DURATION", "3"),
        ("RENEW_DEADLINE", "2s"),
        ("RETRY_PERIOD", "1500ms"),
    ];
    let mut run = wrap(&s, "both", election(&changes));
    assert_eq!(run.wait(SOON).code(), Some(78), "{}", run.stderr());
    assert_eq!(
        run.stderr().trim_end(),
        "etcd-await-election: ETCD_AWAIT_ELECTION_RENEW_DEADLINE=\"2s\": expected more than twice \
         the keepalive interval min(ETCD_AWAIT_ELECTION_RETRY_PERIOD (1500ms), \
         ETCD_AWAIT_ELECTION_LEASE_DURATION (3s) / 3) = 1s, so that two renewals can be tried \
         before the deadline"
    );
    assert!(s.start_of("both").is_none());
}

#[test]
fn disabled_mode_prints_one_hint_line_and_runs_the_command() {
    let s = Scene::without_etcd();
    let mut quiet = wrap(&s, "quiet", Env::default().raw("ETCDCTL_API", "3"));
    assert_eq!(quiet.wait(SOON).code(), Some(7), "{}", quiet.stderr());
    assert!(s.start_of("quiet").is_some());
    assert_eq!(quiet.stderr(), "", "no hint without a reason");

    let vars = Env::default()
        .raw("ETCDCTL_ENDPOINTS", "http://SECRET-host:2379")
        .set("LOCKNAME", "SECRET-lock");
    let mut run = wrap(&s, "hinted", vars);
    assert_eq!(run.wait(SOON).code(), Some(7), "{}", run.stderr());
    assert!(s.start_of("hinted").is_some(), "the command did not run");
    let stderr = run.stderr();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    for text in [
        "etcd-await-election: warning: running the command without an election although ",
        "ETCDCTL_ENDPOINTS (etcdctl's; not read here)",
        "ETCD_AWAIT_ELECTION_LOCKNAME (unknown; did you mean ETCD_AWAIT_ELECTION_LOCK_NAME?)",
        "an election needs ETCD_AWAIT_ELECTION_LOCK_NAME, ETCD_AWAIT_ELECTION_IDENTITY and \
         ETCD_AWAIT_ELECTION_ENDPOINTS",
    ] {
        assert!(stderr.contains(text), "no {text:?} in {stderr}");
    }
    assert!(!stderr.contains("SECRET"), "a value shown: {stderr}");
}

#[test]
fn election_mode_warns_about_a_misspelled_variable_and_carries_on() {
    let s = Scene::without_etcd();
    let mut run = wrap(&s, "typo", election(&[("FORCE_AQUIRE", "1")]));
    let expected = "ignoring unknown variable ETCD_AWAIT_ELECTION_FORCE_AQUIRE (did you mean \
                    ETCD_AWAIT_ELECTION_FORCE_ACQUIRE?)";
    let deadline = Instant::now() + SOON;
    while !run.stderr().contains(expected) {
        assert!(
            run.running(),
            "exited without the warning: {}",
            run.stderr()
        );
        assert!(Instant::now() < deadline, "no warning: {}", run.stderr());
        thread::sleep(Duration::from_millis(20));
    }
    let line = run
        .stderr()
        .lines()
        .find(|l| l.contains(expected))
        .map(str::to_owned);
    assert!(
        line.is_some_and(|l| l.contains(" warn ")),
        "not a warning line: {}",
        run.stderr()
    );
    assert!(
        s.start_of("typo").is_none(),
        "no etcd, no leadership, no command"
    );
}

#[test]
fn credentials_from_files_authenticate() {
    let s = Scene::with(Etcd::start_auth());
    let user = file(&s, "user", format!("{}\n", support::USER).as_bytes());
    let pass = file(&s, "pass", format!("{}\r\n", support::PASSWORD).as_bytes());
    let vars = election(&[
        ("ENDPOINTS", &s.url()),
        ("LOCK_NAME", s.lock()),
        ("USERNAME_FILE", &user),
        ("PASSWORD_FILE", &pass),
    ]);
    let mut run = wrap(&s, "files", vars);
    assert_eq!(run.wait(SOON).code(), Some(7), "{}", run.stderr());
    assert!(
        s.start_of("files").is_some(),
        "the command did not run: {}",
        run.stderr()
    );
    assert!(
        !run.stderr().contains(support::PASSWORD),
        "{}",
        run.stderr()
    );
}

#[test]
fn env_without_prefix_is_not_ours() {
    // An unrelated name that merely contains ours is not warned about.
    let s = Scene::without_etcd();
    let vars = Env::default().raw("MY_ETCD_AWAIT_ELECTION_LOCK_NAME", "x");
    let mut run = wrap(&s, "unrelated", vars);
    assert_eq!(run.wait(SOON).code(), Some(7));
    assert_eq!(run.stderr(), "");
}

#[test]
fn bad_configuration_exits_78_naming_the_variable_without_starting_the_child() {
    let s = Scene::without_etcd();
    // TLS files as the harness makes them for a member (no member is needed).
    let tls = support::generate_tls(&s.dir().join("tls"));
    let garbage_pem = file(
        &s,
        "garbage.pem",
        b"-----BEGIN CERTIFICATE-----\nnot base64 at all!!\n-----END CERTIFICATE-----\n",
    );
    let garbage_key = file(
        &s,
        "garbage.key",
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    );
    let not_pem = file(&s, "not.pem", b"\x00\x01 random bytes, no PEM\n");
    let not_a_certificate = file(&s, "not-a-certificate.pem", b"not a certificate\n");
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let status_taken = format!("127.0.0.1:{}", taken.local_addr().unwrap().port());
    let dead = format!("http://127.0.0.1:{}", support::free_port());
    let dir = s.dir().to_string_lossy().into_owned();
    let p = |path: &Path| path.to_string_lossy().into_owned();
    let (ca, cert, rsa_cert, key, sec1) = (
        p(&tls.ca),
        p(&tls.cert),
        p(&tls.rsa_cert),
        p(&tls.key_pkcs8),
        p(&tls.key_sec1),
    );
    let https = "https://127.0.0.1:9";
    let long_name = "x".repeat(2000);

    // Two bases: the defaults' timings (LEASE 15, RENEW 10, RETRY 2), and FAST timings on a dead
    // endpoint. A NUL byte cannot be tested: execve takes NUL-terminated strings.
    let defaults = |changes: &[(&str, &str)]| {
        let base = Env::default()
            .set("LOCK_NAME", "lock")
            .set("IDENTITY", "me")
            .set("ENDPOINTS", "http://127.0.0.1:9");
        changes.iter().fold(base, |env, (k, v)| env.set(k, *v))
    };
    let fast = |changes: &[(&str, &str)]| {
        let base = Env::default()
            .set("LOCK_NAME", "lock")
            .set("IDENTITY", "me")
            .set("ENDPOINTS", dead.as_str())
            .timings(FAST);
        changes.iter().fold(base, |env, (k, v)| env.set(k, *v))
    };
    let bytes = |v: &[u8]| OsString::from_vec(v.to_vec());
    // (the variable stderr must name, the environment)
    let rows: Vec<(&str, Env)> = vec![
        ("LEASE_DURATION", defaults(&[("LEASE_DURATION", "abc")])),
        ("LEASE_DURATION", defaults(&[("LEASE_DURATION", "1")])),
        ("LEASE_DURATION", defaults(&[("LEASE_DURATION", "1500ms")])),
        ("LEASE_DURATION", defaults(&[("LEASE_DURATION", "-5")])),
        (
            "RENEW_DEADLINE",
            defaults(&[("LEASE_DURATION", "5"), ("RENEW_DEADLINE", "5")]),
        ),
        // The defaulted RENEW_DEADLINE (10s) is not below a 5s lease.
        ("RENEW_DEADLINE", defaults(&[("LEASE_DURATION", "5")])),
        (
            "RETRY_PERIOD",
            defaults(&[("RENEW_DEADLINE", "2"), ("RETRY_PERIOD", "2s")]),
        ),
        ("RETRY_PERIOD", defaults(&[("RETRY_PERIOD", "0")])),
        ("ACQUIRE_TIMEOUT", defaults(&[("ACQUIRE_TIMEOUT", "soon")])),
        ("ENDPOINTS", defaults(&[("ENDPOINTS", "ftp://x:1")])),
        ("ENDPOINTS", defaults(&[("ENDPOINTS", "http://x:0")])),
        ("ENDPOINTS", defaults(&[("ENDPOINTS", " , ")])),
        ("ENDPOINTS", defaults(&[("ENDPOINTS", "http://a b:1")])),
        ("IDENTITY", defaults(&[]).unset("IDENTITY")),
        ("LOCK_NAME", defaults(&[]).unset("LOCK_NAME")),
        ("LOCK_NAME", defaults(&[("LOCK_NAME", "")])),
        ("KEY", defaults(&[("CERT", "/c")])),
        ("CACERT", defaults(&[("ENDPOINTS", https)])),
        (
            "CACERT",
            defaults(&[("ENDPOINTS", https), ("CACERT", "/nonexistent/ca.pem")]),
        ),
        (
            "CACERT",
            defaults(&[("ENDPOINTS", https), ("CACERT", &not_a_certificate)]),
        ),
        ("STATUS_ENDPOINT", defaults(&[("STATUS_ENDPOINT", "nope")])),
        ("STATUS_ENDPOINT", defaults(&[("STATUS_ENDPOINT", "x:0")])),
        ("PASSWORD", defaults(&[("USERNAME", "u")])),
        ("LOG_FORMAT", defaults(&[("LOG_FORMAT", "xml")])),
        (
            "FORCE_ACQUIRE",
            defaults(&[]).set("FORCE_ACQUIRE", bytes(b"y\xff")),
        ),
        ("LOCK_NAME", fast(&[("LOCK_NAME", "")])),
        (
            "LOCK_NAME",
            fast(&[]).set("LOCK_NAME", bytes(b"lock-\xff\xfe")),
        ),
        ("IDENTITY", fast(&[("IDENTITY", "")])),
        ("IDENTITY", fast(&[("IDENTITY", &long_name)])),
        ("IDENTITY", fast(&[]).unset("IDENTITY").unset("ENDPOINTS")),
        ("ENDPOINTS", fast(&[("ENDPOINTS", "")])),
        ("ENDPOINTS", fast(&[("ENDPOINTS", " , ,")])),
        ("ENDPOINTS", fast(&[("ENDPOINTS", "ftp://127.0.0.1:2379")])),
        ("ENDPOINTS", fast(&[("ENDPOINTS", "unix:///run/etcd.sock")])),
        (
            "ENDPOINTS",
            fast(&[("ENDPOINTS", "http://127.0.0.1:99999")]),
        ),
        ("ENDPOINTS", fast(&[("ENDPOINTS", "http://127.0.0.1:0")])),
        ("ENDPOINTS", fast(&[("ENDPOINTS", "http://127.0.0.1:-1")])),
        (
            "ENDPOINTS",
            fast(&[("ENDPOINTS", "http://127.0.0.1:2379/v3")]),
        ),
        (
            "ENDPOINTS",
            fast(&[("ENDPOINTS", "http://user@127.0.0.1:2379")]),
        ),
        (
            "ENDPOINTS",
            fast(&[("ENDPOINTS", "http://127.0.0.1:2379, http://a b:1")]),
        ),
        ("CACERT", fast(&[("ENDPOINTS", "https://127.0.0.1:2379")])),
        ("LEASE_DURATION", fast(&[("LEASE_DURATION", " ")])),
        ("LEASE_DURATION", fast(&[("LEASE_DURATION", "-5")])),
        (
            "LEASE_DURATION",
            fast(&[("LEASE_DURATION", "99999999999999999999")]),
        ),
        ("LEASE_DURATION", fast(&[("LEASE_DURATION", "nan")])),
        ("LEASE_DURATION", fast(&[("LEASE_DURATION", "inf")])),
        ("LEASE_DURATION", fast(&[("LEASE_DURATION", "5d")])),
        ("LEASE_DURATION", fast(&[("LEASE_DURATION", "1")])),
        ("LEASE_DURATION", fast(&[("LEASE_DURATION", "2.5s")])),
        ("LEASE_DURATION", fast(&[("LEASE_DURATION", "0")])),
        ("RENEW_DEADLINE", fast(&[("RENEW_DEADLINE", "3")])),
        ("RENEW_DEADLINE", fast(&[("RENEW_DEADLINE", "4s")])),
        ("RENEW_DEADLINE", fast(&[("RENEW_DEADLINE", "-1s")])),
        ("RENEW_DEADLINE", fast(&[("RENEW_DEADLINE", "NaN")])),
        ("RENEW_DEADLINE", fast(&[("RENEW_DEADLINE", "1e3")])),
        (
            "RENEW_DEADLINE",
            fast(&[("RENEW_DEADLINE", "99999999999999999999ms")]),
        ),
        ("RETRY_PERIOD", fast(&[("RETRY_PERIOD", "2s")])),
        ("RETRY_PERIOD", fast(&[("RETRY_PERIOD", "0ms")])),
        ("RETRY_PERIOD", fast(&[("RETRY_PERIOD", "infinity")])),
        ("RETRY_PERIOD", fast(&[("RETRY_PERIOD", "5sec")])),
        ("RETRY_PERIOD", fast(&[("RETRY_PERIOD", " 1s")])),
        ("ACQUIRE_TIMEOUT", fast(&[("ACQUIRE_TIMEOUT", "-1")])),
        (
            "ACQUIRE_TIMEOUT",
            fast(&[("ACQUIRE_TIMEOUT", "18446744073709551616s")]),
        ),
        ("ACQUIRE_TIMEOUT", fast(&[("ACQUIRE_TIMEOUT", "9000h")])),
        (
            "STATUS_ENDPOINT",
            fast(&[("STATUS_ENDPOINT", &status_taken)]),
        ),
        (
            "STATUS_ENDPOINT",
            fast(&[("STATUS_ENDPOINT", "127.0.0.1:99999")]),
        ),
        ("STATUS_ENDPOINT", fast(&[("STATUS_ENDPOINT", "no-port")])),
        ("STATUS_ENDPOINT", fast(&[("STATUS_ENDPOINT", "[::1:8080")])),
        ("CACERT", fast(&[("CACERT", &dir)])),
        ("CACERT", fast(&[("CACERT", "/nonexistent/ca.pem")])),
        ("CACERT", fast(&[("CACERT", &garbage_pem)])),
        ("CACERT", fast(&[("CACERT", &not_pem)])),
        (
            "KEY",
            fast(&[("CACERT", &ca), ("CERT", &rsa_cert), ("KEY", &sec1)]),
        ),
        (
            "KEY",
            fast(&[("CACERT", &ca), ("CERT", &cert), ("KEY", &garbage_key)]),
        ),
        (
            "KEY",
            fast(&[("CACERT", &ca), ("CERT", &cert), ("KEY", &dir)]),
        ),
        (
            "KEY",
            fast(&[("CACERT", &ca), ("CERT", &cert), ("KEY", &ca)]),
        ),
        ("KEY", fast(&[("CACERT", &ca), ("CERT", &cert)])),
        (
            "CERT",
            fast(&[("CACERT", &ca), ("CERT", &garbage_pem), ("KEY", &key)]),
        ),
        (
            "CERT",
            fast(&[("CACERT", &ca), ("CERT", &key), ("KEY", &key)]),
        ),
        ("CACERT", fast(&[("CERT", &cert), ("KEY", &key)])),
        ("PASSWORD", fast(&[("USERNAME", "user")])),
        ("LOG_FORMAT", fast(&[("LOG_FORMAT", "xml")])),
        (
            "FORCE_ACQUIRE",
            fast(&[]).set("FORCE_ACQUIRE", bytes(b"\xc3\x28")),
        ),
    ];
    // The two tables this one was merged from had 25 and 57 rows.
    assert!(rows.len() >= 82, "{} rows", rows.len());

    // All at once: each must exit within 10 s of the test starting to wait for it.
    let running: Vec<(String, &str, Env, Wrapper)> = rows
        .into_iter()
        .enumerate()
        .map(|(i, (variable, env))| {
            let name = format!("case-{i}");
            let wrapper = wrap(&s, &name, env.clone());
            (name, variable, env, wrapper)
        })
        .collect();
    let mut failures = Vec::new();
    for (name, variable, env, mut wrapper) in running {
        let status = wrapper.wait_up_to(Duration::from_secs(10));
        let stderr = wrapper.stderr();
        let full = var(variable);
        let problem = match status {
            None => Some("did not exit within 10 s".to_string()),
            Some(status) if status.code() != Some(78) => Some(format!("exited {status}")),
            Some(_) if stderr.contains("panicked") => Some("panicked".into()),
            Some(_) if !stderr.contains(&full) => Some(format!("stderr does not name {full}")),
            Some(_) if s.start_of(&name).is_some() => Some("the child ran".into()),
            Some(_) => None,
        };
        if let Some(problem) = problem {
            failures.push(format!(
                "{name} {:?}: {problem}\n    stderr: {}",
                env.vars(),
                stderr.trim()
            ));
        }
    }
    drop(taken);
    assert!(
        failures.is_empty(),
        "{} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn usage_help_and_version() {
    let s = Scene::without_etcd();
    let election = Env::default()
        .set("LOCK_NAME", "lock")
        .set("IDENTITY", "me")
        .set("ENDPOINTS", "http://127.0.0.1:9");
    for env in [Env::default(), election] {
        for args in [&[][..], &["--"][..], &[""][..]] {
            let args: Vec<OsString> = args.iter().map(OsString::from).collect();
            let mut w = s.spawn("usage", env.clone(), args.clone());
            assert_eq!(w.code(SOON), 64, "{args:?} {env:?}: {}", w.stderr());
            assert!(w.stderr().contains("Usage:"), "{}", w.stderr());
        }
        for flag in ["--help", "-h"] {
            let mut w = s.spawn("help", env.clone(), vec![flag.into()]);
            assert_eq!(w.code(SOON), 0, "{}", w.stderr());
            assert!(w.stdout().starts_with("Usage: "), "{}", w.stdout());
        }
        for flag in ["--version", "-V"] {
            let mut w = s.spawn("version", env.clone(), vec![flag.into()]);
            assert_eq!(w.code(SOON), 0, "{}", w.stderr());
            let expected = format!("etcd-await-election {} (", env!("CARGO_PKG_VERSION"));
            assert!(w.stdout().starts_with(&expected), "{}", w.stdout());
        }
    }
}

#[test]
fn disabled_mode_execs_the_command_in_place() {
    let s = Scene::without_etcd();
    // No election variable: the command replaces the wrapper (same pid) and gets no election
    // variables; other ETCD_AWAIT_ELECTION_* variables are not even read.
    let env = Env::default().set("LEASE_DURATION", "abc");
    let script = "echo $$; echo ${ETCD_AWAIT_ELECTION_KEY-unset}; exit 7";
    let mut w = s.spawn("plain", env, sh(script));
    assert_eq!(w.code(SOON), 7, "{}", w.stderr());
    let out = w.stdout();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines, [w.pid().to_string().as_str(), "unset"], "{out}");

    for (script, expected) in [("exit 0", 0), ("exit 3", 3)] {
        let mut w = s.spawn("plain", Env::default(), sh(script));
        assert_eq!(w.code(SOON), expected, "{script}");
    }
    // A signal stays a signal: the process that died of it *is* the wrapper.
    let mut w = s.spawn("signal", Env::default(), sh("kill -USR1 $$"));
    assert_eq!(w.wait(SOON).signal(), Some(libc::SIGUSR1));
}

/// Which of the wrapper's output streams is the write end of a pipe whose read end is closed.
#[derive(Clone, Copy, Debug)]
enum Closed {
    Stdout,
    Stderr,
    Both,
}

/// The write end of a pipe whose read end is closed.
fn closed_pipe() -> OwnedFd {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two new fds into `fds`.
    let made = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(made, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: both fds were just created and are owned by nothing else.
    let (reader, writer) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(reader);
    writer
}

/// Runs the binary with `args` and exactly `env` (and PATH), the streams `closed` names writing
/// into a pipe nobody reads (its read end closed: every write fails with EPIPE), the others to
/// /dev/null; returns how it ended.
fn run_with_closed(env: &Env, args: &[&str], closed: Closed) -> std::process::ExitStatus {
    let writer = closed_pipe();
    let broken = || Stdio::from(writer.try_clone().expect("dup the pipe"));
    let (stdout, stderr) = match closed {
        Closed::Stdout => (broken(), Stdio::null()),
        Closed::Stderr => (Stdio::null(), broken()),
        Closed::Both => (broken(), broken()),
    };
    let mut child = Command::new(support::bin())
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env.vars().iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .expect("spawn etcd-await-election");
    let deadline = Instant::now() + SOON;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{args:?} with {closed:?} closed did not exit within {SOON:?}");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn help_version_usage_and_configuration_errors_keep_their_exit_codes_on_a_closed_pipe() {
    let bad_config = election(&[("LEASE_DURATION", "abc")]);
    let cases: [(&str, Env, &[&str], i32); 6] = [
        ("--help", Env::default(), &["--help"], 0),
        ("--version", Env::default(), &["--version"], 0),
        ("no command", Env::default(), &[], 64),
        ("an empty command", Env::default(), &[""], 64),
        (
            "an unknown option",
            Env::default(),
            &["leader", "--bogus"],
            64,
        ),
        ("LEASE_DURATION=abc", bad_config, &["true"], 78),
    ];
    let mut failures = Vec::new();
    for (what, env, args, expected) in &cases {
        for closed in [Closed::Stdout, Closed::Stderr, Closed::Both] {
            let status = run_with_closed(env, args, closed);
            // A panic under `panic = "abort"` is SIGABRT; SIGPIPE would be a death as well.
            if status.code() != Some(*expected) {
                failures.push(format!(
                    "{what} with {closed:?} closed: {status}, expected exit {expected}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
