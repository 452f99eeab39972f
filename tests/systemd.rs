//! systemd's notify protocol (issue 15, item 2): with `NOTIFY_SOCKET` set the wrapper sends
//! `READY=1` once its candidate is in the queue, `STATUS=` lines ("waiting behind X", "leading,
//! revision N"), and, with `WATCHDOG_USEC`, `WATCHDOG=1` every half period while its renewals
//! succeed — none once they stop, so systemd restarts a wrapper whose renewals are stuck. The
//! protocol's variables are ours, not the command's: it never sees them.
//!
//! The test binds the Unix datagram socket itself and collects what arrives ([`Notifications`]).
//!
//! Run: `cargo test --test systemd -- --test-threads=2`.

mod support;

use std::ffi::OsString;
use std::fs;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use support::env::{Env, Timings};
use support::marks::OnTerm;
use support::wrapper::{Scene, SOON};

/// `WATCHDOG_USEC`: the wrapper pings every half of it, 200 ms.
const WATCHDOG_USEC: u64 = 400_000;
const PING_EVERY: Duration = Duration::from_millis(200);

/// The datagrams received on a socket the test bound, in order, collected by a thread.
struct Notifications {
    path: PathBuf,
    received: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Notifications {
    fn bind(dir: &Path) -> Notifications {
        let path = dir.join("notify");
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("read timeout");
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (into, stopped) = (Arc::clone(&received), Arc::clone(&stop));
        let thread = thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !stopped.load(Ordering::Relaxed) {
                if let Ok(n) = socket.recv(&mut buf) {
                    let message = String::from_utf8_lossy(&buf[..n]).into_owned();
                    into.lock().unwrap_or_else(|p| p.into_inner()).push(message);
                }
            }
        });
        Notifications {
            path,
            received,
            stop,
            thread: Some(thread),
        }
    }

    /// `env` with `NOTIFY_SOCKET` naming this socket.
    fn env(&self, env: Env) -> Env {
        env.raw("NOTIFY_SOCKET", self.path.as_os_str())
    }

    fn all(&self) -> Vec<String> {
        self.received
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// How many datagrams arrived so far: a mark for [`Notifications::since`].
    fn mark(&self) -> usize {
        self.all().len()
    }

    /// The datagrams received after `mark`.
    fn since(&self, mark: usize) -> Vec<String> {
        self.all().split_off(mark)
    }

    /// Where `message` first arrived after `mark`.
    fn position(&self, message: &str, mark: usize) -> Option<usize> {
        let all = self.all();
        all.iter()
            .skip(mark)
            .position(|m| m == message)
            .map(|i| i + mark)
    }

    fn pings_since(&self, mark: usize) -> usize {
        self.since(mark)
            .iter()
            .filter(|m| *m == "WATCHDOG=1")
            .count()
    }
}

impl Drop for Notifications {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The marks child `name`, which first writes its environment to `DIR/NAME.env`.
fn child_dumping_env(s: &Scene, name: &str) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![
        "sh".into(),
        "-c".into(),
        r#"env > "$0"; exec "$@""#.into(),
        s.dir().join(format!("{name}.env")).into(),
    ];
    args.extend(s.child(name, OnTerm::Trap));
    args
}

#[test]
fn systemd_hears_ready_and_status_and_watchdog_pings_only_while_renewals_succeed() {
    // w's lease must outlive a freeze of RENEW_DEADLINE and a second: 6 s.
    let t = Timings {
        lease_s: 6,
        renew_ms: 2000,
        retry_ms: 500,
    };
    let s = Scene::new();
    let systemd = Notifications::bind(s.dir());
    let _a = s.candidate("a", t);
    s.await_start("a", SOON);
    let env = systemd
        .env(s.env("w", t))
        .raw("WATCHDOG_USEC", WATCHDOG_USEC.to_string());
    let mut w = s.spawn("w", env, child_dumping_env(&s, "w"));

    // A waiter is a healthy service: ready once queued, saying behind whom, pinging.
    let waiting = "STATUS=waiting behind a";
    s.wait("READY=1 and the waiting status", SOON, || {
        systemd.position(waiting, 0).is_some()
    });
    let ready = systemd.position("READY=1", 0);
    assert!(
        ready.is_some_and(|r| Some(r) < systemd.position(waiting, 0)),
        "READY=1 did not come first: {:?}",
        systemd.all()
    );
    s.wait("the waiter's watchdog pings", SOON, || {
        systemd.pings_since(0) >= 3
    });

    // etcd frozen: w's last acknowledged renewal was sent before the freeze, so from
    // RENEW_DEADLINE after it w must not ping. The sleeps hold the fault and then watch for
    // pings that must not come (five intervals).
    s.etcd().freeze();
    let frozen = Instant::now();
    thread::sleep((frozen + t.renew() + PING_EVERY).saturating_duration_since(Instant::now()));
    let stale = systemd.mark();
    thread::sleep(5 * PING_EVERY);
    let pings = systemd.pings_since(stale);
    let held = frozen.elapsed();
    s.etcd().resume();
    assert_eq!(
        pings,
        0,
        "{pings} watchdog pings came while renewals had been stuck for over RENEW_DEADLINE: {:?}\n{}",
        systemd.since(stale),
        s.report()
    );
    assert!(held < t.lease(), "the freeze lasted {held:?}");
    assert!(w.running(), "{}", s.report());

    // a lost its leadership to the freeze; w leads, says so with its fencing token, pings again.
    let resumed = systemd.mark();
    let start = s.await_start("w", t.lease() + SOON);
    let leading = format!("STATUS=leading, revision {}", start.revision);
    s.wait(&leading, SOON, || {
        systemd.position(&leading, resumed).is_some()
    });
    s.wait("the leader's watchdog pings", SOON, || {
        systemd.pings_since(resumed) >= 3
    });

    // The protocol's variables are not the command's.
    let env = fs::read_to_string(s.dir().join("w.env")).expect("w's environment");
    assert!(env.contains("ETCD_AWAIT_ELECTION_LOCK_NAME="), "{env}");
    for name in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
        assert!(
            !env.lines()
                .any(|line| line.starts_with(&format!("{name}="))),
            "the command was given {name}:\n{env}"
        );
    }
    s.stop("w", 0);
    assert_eq!(w.code(SOON), 0, "{}", s.report());
}

#[test]
fn a_watchdog_meant_for_another_process_is_not_pinged_but_ready_and_status_still_come() {
    let t = Timings {
        lease_s: 4,
        renew_ms: 2000,
        retry_ms: 500,
    };
    let s = Scene::new();
    let systemd = Notifications::bind(s.dir());
    // WATCHDOG_PID names the process systemd watches; PID 1 is not this wrapper.
    let env = systemd
        .env(s.env("a", t))
        .raw("WATCHDOG_USEC", WATCHDOG_USEC.to_string())
        .raw("WATCHDOG_PID", "1");
    let mut a = s.spawn("a", env, s.child("a", OnTerm::Trap));
    let start = s.await_start("a", SOON);
    let leading = format!("STATUS=leading, revision {}", start.revision);
    s.wait(&leading, SOON, || systemd.position(&leading, 0).is_some());
    assert!(
        systemd.position("READY=1", 0).is_some(),
        "{:?}",
        systemd.all()
    );
    // Watching for pings that must not come: five intervals while renewals succeed.
    thread::sleep(5 * PING_EVERY);
    assert_eq!(systemd.pings_since(0), 0, "{:?}", systemd.all());
    s.stop("a", 0);
    assert_eq!(a.code(SOON), 0, "{}", s.report());
}
