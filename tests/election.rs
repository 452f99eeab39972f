//! README "How it works": etcd's election recipe end to end, the built binary against real etcd.
//! Candidates take turns in arrival order, FORCE_ACQUIRE preempts, a waiter whose key is deleted
//! queues again, ACQUIRE_TIMEOUT gives up, refused credentials exit 69, `etcdctl elect` sees our
//! leader and queues fairly beside us, and an etcd restart is ridden out.
//!
//! Each test owns a [`Scene`] (its etcd, lock and directory); the children mark their start and
//! end in the scene's log (`tests/support/marks.rs`), and tests poll that log and etcd with
//! deadlines.
//!
//! Run: `cargo test --test election -- --test-threads=2`.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use libc::{SIGINT, SIGKILL};
use support::env::{Timings, STEADY};
use support::marks::{now_ns, secs, Nanos, OnTerm};
use support::procs::{alive, send};
use support::proxy::Proxy;
use support::wrapper::{Scene, SOON};
use support::{etcdctl_bin, Etcd};

// ---- taking turns ----

#[test]
fn two_instances_started_together_take_turns() {
    let s = Scene::new();
    let mut a = s.candidate("a", STEADY);
    let mut b = s.candidate("b", STEADY);
    let keys = s.await_keys(2, SOON);
    // The key created first leads; the other waits.
    let (first, second) = (keys[0].value.clone(), keys[1].value.clone());
    let lead = s.await_start(&first, SOON);
    assert_eq!(lead.key, keys[0].key, "{}", s.report());
    assert_eq!(lead.revision, keys[0].create_revision);
    assert_eq!(lead.key, format!("{}/{}", s.lock(), lead.lease_hex));
    assert_eq!(i64::from_str_radix(&lead.lease_hex, 16), Ok(keys[0].lease));
    assert!(s.start_of(&second).is_none(), "both run\n{}", s.report());

    // Graceful handover: the leader's child exits, the other one's child starts.
    s.stop(&first, 0);
    let next = s.await_start(&second, SOON);
    assert_eq!(next.key, keys[1].key);
    assert!(next.revision > lead.revision, "fencing token must rise");
    s.stop(&second, 0);
    assert_eq!(a.code(SOON), 0, "{}", s.report());
    assert_eq!(b.code(SOON), 0, "{}", s.report());
    s.assert_one_at_a_time(&[&first, &second]);
    assert!(s.keys().is_empty(), "keys left:\n{}", s.report());
}

#[test]
fn three_instances_lead_one_at_a_time_in_arrival_order() {
    let s = Scene::new();
    let mut a = s.candidate("a", STEADY);
    s.await_start("a", SOON);
    let mut b = s.candidate("b", STEADY);
    s.await_keys(2, SOON);
    let mut c = s.candidate("c", STEADY);
    s.await_keys(3, SOON);
    assert_eq!(s.identities(), ["a", "b", "c"]);

    s.stop("a", 0);
    assert_eq!(a.code(SOON), 0, "{}", s.report());
    s.await_start("b", SOON);
    assert!(s.start_of("c").is_none(), "c runs beside b\n{}", s.report());
    assert_eq!(s.identities(), ["b", "c"]);

    s.stop("b", 0);
    assert_eq!(b.code(SOON), 0, "{}", s.report());
    s.await_start("c", SOON);
    s.stop("c", 0);
    assert_eq!(c.code(SOON), 0, "{}", s.report());

    s.assert_one_at_a_time(&["a", "b", "c"]);
    assert!(s.keys().is_empty(), "keys left:\n{}", s.report());
}

/// A waiter two keys back watches both: the leader's deletion, which makes the key just ahead of it
/// leader, is its cue to look again, off that handover; the look finds it the only waiter behind
/// the new leader, and it watches that key together with its own: the next deletion alone makes it
/// leader, with no look (no Range) between that deletion and its command's start.
#[test]
fn a_waiter_two_back_is_ready_when_the_key_ahead_leads_and_leads_on_its_deletion_without_a_look() {
    let s = Scene::new();
    // Confirming reads are far apart (LEASE 15 s / 3): none falls into the handover.
    let slow_reads = Timings {
        retry_ms: 5000,
        renew_ms: 11_000,
        ..STEADY
    };
    let mut a = s.candidate("a", STEADY);
    s.await_start("a", SOON);
    let mut b = s.candidate("b", slow_reads);
    s.await_queued(&b, SOON);
    let proxy = Proxy::start(&s.etcd().endpoint_hostport());
    let env = s.env("c", slow_reads).set("ENDPOINTS", proxy.url());
    let mut c = s.spawn("c", env, s.child("c", OnTerm::Trap));
    s.await_queued(&c, SOON);
    // Two keys ahead of c: one watch for both, and its own key apart.
    s.wait("c's watches created", SOON, || {
        proxy.connections_with(b"\"created\":true") >= 2
    });

    s.stop("a", 0);
    assert_eq!(a.code(SOON), 0, "{}", s.report());
    s.await_start("b", SOON);
    // c's third watch: b and c on one stream, after a look that found b leading.
    s.wait("c watches b and its own key together", SOON, || {
        proxy.connections_with(b"\"created\":true") >= 3
    });
    assert_eq!(s.identities(), ["b", "c"], "{}", s.report());

    let looks_before = s.etcd().rpcs_started().get("Range").copied();
    s.stop("b", 0);
    s.await_start("c", SOON);
    let looks_after = s.etcd().rpcs_started().get("Range").copied();
    assert_eq!(
        looks_after,
        looks_before,
        "a look (Range) between b's end and c's start\n{}",
        s.report()
    );
    assert_eq!(b.code(SOON), 0, "{}", s.report());
    s.stop("c", 0);
    assert_eq!(c.code(SOON), 0, "{}", s.report());
    s.assert_one_at_a_time(&["a", "b", "c"]);
}

// ---- FORCE_ACQUIRE and deleted keys ----

#[test]
fn force_acquire_preempts_the_leader_and_requeues_waiters() {
    let s = Scene::new();
    let mut a = s.candidate("a", STEADY);
    let a_start = s.await_start("a", SOON);
    let mut b = s.candidate("b", STEADY);
    let old_b = s.await_keys(2, SOON)[1].clone();

    let spawned = now_ns();
    let env = s.env("c", STEADY).set("FORCE_ACQUIRE", "1");
    let mut c = s.spawn("c", env, s.child("c", OnTerm::Trap));
    let c_start = s.await_start("c", SOON);
    // "At once": far below the 15 s lease the old keys had.
    assert!(
        c_start.at - spawned < Duration::from_secs(5).as_nanos() as Nanos,
        "{}",
        s.report()
    );
    assert_eq!(a.code(SOON), 75, "{}", s.report());
    assert!(!alive(a_start.pid), "a's child survived its wrapper");

    // b's key was deleted while it waited: it queues again, behind c, with its lease (which
    // FORCE_ACQUIRE did not touch) and a new place.
    s.wait("b queued again behind c", SOON, || {
        s.identities() == ["c", "b"]
    });
    let keys = s.keys();
    assert_eq!(keys[0].key, c_start.key);
    assert_eq!(keys[1].lease, old_b.lease, "b changed its live lease");
    assert!(
        keys[1].create_revision > keys[0].create_revision,
        "{}",
        s.report()
    );
    assert!(b.running() && s.start_of("b").is_none(), "{}", s.report());

    s.stop("c", 0);
    assert_eq!(c.code(SOON), 0, "{}", s.report());
    let b_start = s.await_start("b", SOON);
    assert_eq!(b_start.key, keys[1].key);
    s.stop("b", 0);
    assert_eq!(b.code(SOON), 0, "{}", s.report());
    s.assert_one_at_a_time(&["c", "b"]);
}

#[test]
fn force_acquire_preempts_even_when_restarting_with_a_waiting_key() {
    let s = Scene::new();
    let mut a = s.candidate("a", STEADY);
    let a_start = s.await_start("a", SOON);
    let mut b = s.candidate("b", STEADY);
    s.await_keys(2, SOON);
    // b dies while waiting, its key stays; it comes back with FORCE_ACQUIRE, as a newcomer would.
    b.signal(SIGKILL);
    b.wait(SOON);
    let env = s.env("b", STEADY).set("FORCE_ACQUIRE", "1");
    let mut b2 = s.spawn("b2", env, s.child("b2", OnTerm::Trap));
    // "At once": far below the 15 s lease of a's key.
    let b2_start = s.await_start("b2", Duration::from_secs(5));
    assert_eq!(a.code(SOON), 75, "{}", s.report());
    assert!(!alive(a_start.pid));
    assert_eq!(s.identities(), ["b"]);
    assert_eq!(s.keys()[0].key, b2_start.key);
    s.stop("b2", 0);
    assert_eq!(b2.code(SOON), 0, "{}", s.report());
}

#[test]
fn an_operator_deleting_a_waiter_key_or_revoking_the_leader_lease() {
    let s = Scene::new();
    let mut a = s.candidate("a", STEADY);
    let a_start = s.await_start("a", SOON);
    let mut b = s.candidate("b", STEADY);
    s.await_keys(2, SOON);
    let mut c = s.candidate("c", STEADY);
    let keys = s.await_keys(3, SOON);

    // A waiter whose key is deleted queues again at the end, with its lease (still alive).
    s.etcd().etcdctl_ok(&["del", &keys[1].key]);
    s.wait("b queued again at the end", SOON, || {
        s.identities() == ["a", "c", "b"]
    });
    let requeued = s.keys()[2].clone();
    assert_eq!(requeued.lease, keys[1].lease);
    assert!(requeued.create_revision > keys[2].create_revision);
    assert!(b.running() && c.running(), "{}", s.report());

    // The leader's lease revoked: its child is stopped, 75, and c (now next) leads.
    let lease = format!("{:x}", keys[0].lease);
    s.etcd().etcdctl_ok(&["lease", "revoke", &lease]);
    assert_eq!(a.code(SOON), 75, "{}", s.report());
    assert!(!alive(a_start.pid), "a's child survived its wrapper");
    s.await_start("c", SOON);
    assert!(s.start_of("b").is_none(), "{}", s.report());
    s.stop("c", 0);
    assert_eq!(c.code(SOON), 0, "{}", s.report());
    let b_start = s.await_start("b", SOON);
    assert_eq!(b_start.key, requeued.key);
    s.stop("b", 0);
    assert_eq!(b.code(SOON), 0, "{}", s.report());
    s.assert_one_at_a_time(&["c", "b"]);
}

// ---- giving up ----

#[test]
fn acquire_timeout_gives_up_with_69_and_leaves_the_queue() {
    let s = Scene::new();
    let mut a = s.candidate("a", STEADY);
    s.await_start("a", SOON);
    let before = s.keys();
    let env = s.env("b", STEADY).set("ACQUIRE_TIMEOUT", "1500ms");
    let spawned = Instant::now();
    let mut b = s.spawn("b", env, s.child("b", OnTerm::Trap));
    assert_eq!(b.code(SOON), 69, "{}", s.report());
    assert!(spawned.elapsed() >= Duration::from_millis(1500));
    assert!(s.start_of("b").is_none(), "{}", s.report());
    assert_eq!(s.identities(), ["a"], "{}", s.report());
    assert_eq!(s.keys(), before, "b's key was left behind\n{}", s.report());
    assert!(b.stderr().contains("lease revoked"), "{}", b.stderr());
    s.stop("a", 0);
    assert_eq!(a.code(SOON), 0);
}

#[test]
fn etcd_refusing_the_credentials_exits_69() {
    let s = Scene::with(Etcd::start_auth());
    let env = s
        .env("a", STEADY)
        .set("USERNAME", support::USER)
        .set("PASSWORD", "wrong-password");
    let mut a = s.spawn("a", env, s.child("a", OnTerm::Trap));
    assert_eq!(a.code(SOON), 69, "{}", s.report());
    assert!(s.start_of("a").is_none());
    assert!(
        !a.stderr().contains("wrong-password"),
        "password shown:\n{}",
        a.stderr()
    );

    let env = s
        .env("b", STEADY)
        .set("USERNAME", support::USER)
        .set("PASSWORD", support::PASSWORD);
    let mut b = s.spawn("b", env, s.child("b", OnTerm::Trap));
    s.await_start("b", SOON);
    s.stop("b", 0);
    assert_eq!(b.code(SOON), 0, "{}", s.report());
}

// ---- an etcd restart ----

#[test]
fn leader_and_waiter_ride_out_an_etcd_restart() {
    // The restart must fit within the renew deadline: it takes about a second; RENEW_DEADLINE 6 s
    // leaves room on a busy machine.
    let t = Timings {
        lease_s: 8,
        renew_ms: 6000,
        retry_ms: 500,
    };
    let lead = Duration::from_secs(10);
    let mut s = Scene::new();
    let mut a = s.candidate("a", t);
    s.await_start("a", lead);
    let mut b = s.candidate("b", t);
    s.await_queued(&b, lead);
    let keys = s.await_keys(2, SOON);

    let killed = Instant::now();
    s.etcd_mut().kill();
    s.etcd_mut().restart();
    let took = killed.elapsed();
    eprintln!("etcd restarted in {took:?}");
    assert!(
        took + Duration::from_secs(1) < t.renew(),
        "etcd took {took:?} to restart: too slow for RENEW_DEADLINE {:?}",
        t.renew()
    );
    assert_eq!(s.keys(), keys, "{}", s.report());
    // Nothing may happen to the leader: had renewals not resumed, the renew deadline would pass
    // RENEW_DEADLINE after the kill. Watch until then plus a second.
    thread::sleep(
        (killed + t.renew() + Duration::from_secs(1)).saturating_duration_since(Instant::now()),
    );
    assert!(a.running() && b.running(), "{}", s.report());
    assert!(
        s.end_of("a").is_none(),
        "the leader's child was stopped\n{}",
        s.report()
    );
    assert!(s.start_of("b").is_none(), "{}", s.report());
    assert_eq!(s.keys(), keys, "{}", s.report());

    // Both re-established their watches: a's exit is seen by b at once.
    s.stop("a", 0);
    assert_eq!(a.code(lead), 0, "{}", s.report());
    let a_end = s.end_of("a").expect("a's end");
    let b_start = s.await_start("b", lead);
    assert!(
        b_start.at - a_end < Duration::from_secs(5).as_nanos() as Nanos,
        "takeover took {}\n{}",
        secs(b_start.at - a_end),
        s.report()
    );
    s.assert_no_overlap();
    assert_eq!(s.identities(), ["b"], "{}", s.report());
    s.stop("b", 0);
    assert_eq!(b.code(SOON), 0, "{}", s.report());
}

// ---- interoperability with etcdctl elect ----

/// A running `etcdctl elect …` whose stdout lines are collected with their arrival time.
struct Elect {
    child: Child,
    lines: Arc<Mutex<Vec<(Nanos, String)>>>,
}

impl Elect {
    fn spawn(etcd: &Etcd, args: &[&str]) -> Elect {
        let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
        let mut child = Command::new(etcdctl_bin())
            .env_clear()
            .env("PATH", path)
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", etcd.client_url()))
            .arg("elect")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn etcdctl elect");
        let stdout = child.stdout.take().expect("piped stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                sink.lock().unwrap().push((now_ns(), line));
            }
        });
        Elect { child, lines }
    }

    fn lines(&self) -> Vec<String> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .map(|(_, l)| l.clone())
            .collect()
    }

    /// When `line` was first printed.
    fn printed(&self, line: &str) -> Option<Nanos> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .find(|(_, l)| l == line)
            .map(|(at, _)| *at)
    }

    fn signal(&self, signal: i32) {
        send(self.child.id() as i32, signal);
    }

    fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "etcdctl elect did not exit");
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Elect {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn etcdctl_elect_observes_our_leader() {
    let s = Scene::new();
    let mut a = s.candidate("a", STEADY);
    let a_start = s.await_start("a", SOON);
    let observer = Elect::spawn(s.etcd(), &["-l", s.lock()]);
    s.wait("etcdctl elect -l shows our key and identity", SOON, || {
        let lines = observer.lines();
        lines.windows(2).any(|w| w[0] == a_start.key && w[1] == "a")
    });
    drop(observer);
    s.stop("a", 0);
    assert_eq!(a.code(SOON), 0);
}

#[test]
fn etcdctl_elect_queues_behind_our_leader() {
    let s = Scene::new();
    let mut a = s.candidate("a", STEADY);
    s.await_start("a", SOON);
    let mut theirs = Elect::spawn(s.etcd(), &[s.lock(), "x"]);
    let keys = s.await_keys(2, SOON);
    assert_eq!(keys[1].value, "x");
    assert!(theirs.lines().is_empty(), "etcdctl claims leadership");

    s.stop("a", 0);
    assert_eq!(a.code(SOON), 0, "{}", s.report());
    let a_end = s.end_of("a").expect("a's end");
    s.wait("etcdctl elect wins", SOON, || {
        theirs.printed(&keys[1].key).is_some()
    });
    assert!(theirs.printed(&keys[1].key).expect("printed") > a_end);
    assert_eq!(theirs.lines(), [keys[1].key.as_str(), "x"]);
    theirs.signal(SIGINT);
    theirs.wait(SOON);
    s.wait("etcdctl resigned", SOON, || s.keys().is_empty());
}

#[test]
fn we_queue_behind_etcdctl_elect_until_it_resigns() {
    let s = Scene::new();
    let theirs = Elect::spawn(s.etcd(), &[s.lock(), "x"]);
    s.wait("etcdctl elect leads", SOON, || theirs.lines().len() >= 2);
    let mut a = s.candidate("a", STEADY);
    let keys = s.await_keys(2, SOON);
    assert_eq!(
        keys.iter().map(|k| k.value.as_str()).collect::<Vec<_>>(),
        ["x", "a"]
    );
    assert!(s.start_of("a").is_none(), "{}", s.report());

    let interrupted = now_ns();
    theirs.signal(SIGINT);
    let a_start = s.await_start("a", SOON);
    assert!(a_start.at > interrupted);
    assert_eq!(a_start.key, keys[1].key);
    s.stop("a", 0);
    assert_eq!(a.code(SOON), 0, "{}", s.report());
}
