//! README "The renew deadline (safety)", against every etcd fault: etcd frozen, killed and
//! restarted, a cluster losing a member and its quorum, a leader partitioned from etcd by a proxy
//! (`tests/support/proxy.rs`) — wholly, only its watches, or only its keepalives —, a compacted
//! watch revision, and a leader's key deleted, also while its command is being stopped, while the
//! leader's watch is silently dead, or while neither its watch nor its reads get through. And
//! against faults of the leader itself: its stderr a full pipe nobody drains, its wrapper stopped
//! (SIGSTOP) while its command runs on (the guardian's dead-man switch).
//!
//! What is asserted is what happened to the commands (their marks in the scene's log, their
//! process groups), the keys under the lock and the wrappers' exit codes; timings appear only as
//! safety bounds:
//!
//! - a leader's command is dead before its lease could expire on the server: before the last
//!   moment a renewal could have reached etcd + LEASE_DURATION;
//! - two commands of one election never overlap: each end precedes the next start;
//! - a command never starts, or keeps running once its key is gone, against the safety rule
//!   (renewal older than RENEW_DEADLINE; key deleted ⇒ SIGKILL at once).
//!
//! Conditions are polled with deadlines. The few plain sleeps assert that nothing happens for a
//! while, or hold a fault for a fixed time, and say so where they are.
//!
//! Run: `cargo test --test safety -- --test-threads=2`.

mod support;

use std::ffi::OsString;
use std::thread;
use std::time::{Duration, Instant, UNIX_EPOCH};

use etcd_await_election::etcd::{Client, ClientConfig};
use libc::{SIGCONT, SIGSTOP};
use support::env::{sh, Timings, FAST, MARGIN, ROOMY, STEADY};
use support::marks::{now_ns, secs, Nanos, OnTerm};
use support::procs::{alive, group_alive, group_of, state};
use support::proxy::Proxy;
use support::wrapper::{Scene, StalledPipe, Wrapper, SOON};
use support::{Cluster, Kv};

/// How long an instance may take to lead an election nobody else holds (etcd is up).
const LEAD: Duration = Duration::from_secs(10);
/// Slack added to the documented bounds when waiting (never when asserting safety).
const SLACK: Duration = Duration::from_secs(3);

/// The candidate `name` reaching etcd through `endpoints` (a proxy, a cluster).
fn via(s: &Scene, name: &str, endpoints: &str, t: Timings) -> Wrapper {
    let env = s.env(name, t).set("ENDPOINTS", endpoints);
    s.spawn(name, env, s.child(name, OnTerm::Trap))
}

/// `a` leads on etcd directly; `w` queues behind it through a proxy (returned), its watch
/// registered.
fn leader_and_proxied_waiter(s: &Scene, t: Timings) -> (Proxy, Wrapper, Wrapper) {
    let proxy = Proxy::start(&s.etcd().endpoint_hostport());
    let a = s.candidate("a", t);
    s.await_start("a", LEAD);
    let w = via(s, "w", &proxy.url(), t);
    s.await_queued(&w, LEAD);
    // w is alone behind a: one watch covers both keys.
    s.wait("w's watch created", LEAD, || {
        proxy.connections_with(b"\"created\":true") >= 1
    });
    (proxy, a, w)
}

/// Waits for `w` to lead after `a`'s child ended, and asserts the documented bound: a silent
/// watch is replaced after 2 x LEASE_DURATION, a look and the start follow, so within
/// 3 x LEASE_DURATION. Returns how long after `a`'s end `w` started.
fn w_leads_within_the_idle_bound(s: &Scene, t: Timings) -> Nanos {
    let a_end = s.end_of("a").expect("a's end");
    let bound = 3 * t.lease();
    let start = s.await_start("w", bound + SLACK).at;
    eprintln!("w started {} after a's child ended", secs(start - a_end));
    assert!(
        start - a_end < bound.as_nanos() as Nanos,
        "w led {} after a's child ended, over 3 x LEASE_DURATION\n{}",
        secs(start - a_end),
        s.report()
    );
    start - a_end
}

fn ns(t: std::time::SystemTime) -> Nanos {
    t.duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos() as Nanos
}

// ---- etcd frozen ----

#[test]
fn etcd_frozen_shorter_than_the_renew_deadline_changes_nothing() {
    let t = FAST;
    let s = Scene::new();
    let mut a = s.candidate("a", t);
    s.await_start("a", LEAD);
    let mut b = s.candidate("b", t);
    s.await_queued(&b, LEAD);

    s.etcd().freeze();
    let frozen = Instant::now();
    // The fault itself: etcd stays frozen for a fixed 0.8 s, well under RENEW_DEADLINE (2 s).
    thread::sleep(Duration::from_millis(800));
    s.etcd().resume();
    let held = frozen.elapsed();
    assert!(
        held < Duration::from_millis(1300),
        "the freeze lasted {held:?}"
    );
    // Nothing may happen: a renew deadline missed because of the freeze would fire within
    // RENEW_DEADLINE of it, a lease lost to it would expire within LEASE_DURATION. Watch that long
    // plus a second.
    thread::sleep(
        (frozen + t.lease() + Duration::from_secs(1)).saturating_duration_since(Instant::now()),
    );

    assert!(a.running() && b.running(), "{}", s.report());
    assert_eq!(s.marks().all("start", "a").len(), 1, "{}", s.report());
    assert!(
        s.end_of("a").is_none(),
        "the leader's child was stopped\n{}",
        s.report()
    );
    assert!(
        s.start_of("b").is_none(),
        "a second child started\n{}",
        s.report()
    );
    assert_eq!(s.identities(), ["a", "b"]);
    assert!(
        !a.stderr().contains("renew deadline passed"),
        "{}",
        s.report()
    );

    // And the election still works: the leader's child finishes, the waiter takes over.
    s.stop("a", 0);
    assert_eq!(a.code(LEAD), 0, "{}", s.report());
    s.await_start("b", LEAD);
    s.assert_no_overlap();
}

#[test]
fn etcd_frozen_past_the_renew_deadline_stops_the_leader_before_its_lease_can_expire() {
    let t = FAST;
    let s = Scene::new();
    let mut a = s.candidate("a", t);
    s.await_start("a", LEAD);
    let mut b = s.candidate("b", t);
    s.await_queued(&b, LEAD);

    let frozen_at = etcd_frozen_past_the_renew_deadline(&s, &mut a, &mut b, t);
    // The child took its SIGTERM and ended by itself, before the SIGKILL would have come.
    let end = s.end_of("a").expect("a's child ended by itself");
    assert!(
        end < frozen_at + t.kill_after_ns(),
        "child ended {} after the freeze, later than (RENEW_DEADLINE + LEASE_DURATION) / 2\n{}",
        secs(end - frozen_at),
        s.report()
    );
    s.assert_no_overlap();
    assert!(
        a.stderr().contains("renew deadline passed"),
        "{}",
        s.report()
    );
}

#[test]
fn a_leader_whose_stderr_is_blocked_still_stops_its_child_at_the_renew_deadline() {
    // Issue 10, item 1: a's stderr is a pipe nobody drains (a stalled log collector), and its
    // command floods the same pipe: every log line a writes from now on would block. Its command
    // ignores SIGTERM, so only the SIGKILL at the kill point stops it. (The marks child itself
    // writes its stderr elsewhere: sh reports a signalled `sleep` there, and blocked on the full
    // pipe it could not mark its SIGTERM.)
    let t = Timings {
        lease_s: 4,
        renew_ms: 2000,
        retry_ms: 500,
    };
    let s = Scene::new();
    let mut stderr = StalledPipe::new();
    let writer = stderr.writer();
    let mut command = sh(r#"(while :; do echo flood; done) >&2 & exec "$@" 2>/dev/null"#);
    command.push("sh".into());
    command.extend(s.child("a", OnTerm::Ignore));
    let mut a = s.spawn_with("a", s.env("a", t), command, |c| {
        c.stderr(writer);
    });
    s.await_start("a", LEAD);
    let filled = stderr.fill();
    assert!(
        stderr.is_full(),
        "the pipe still takes bytes after {filled}"
    );
    let mut b = s.candidate("b", t);
    s.await_queued(&b, LEAD);

    etcd_frozen_past_the_renew_deadline(&s, &mut a, &mut b, t);
    assert!(stderr.is_full(), "somebody drained a's stderr");
}

/// Freezes etcd while `a` leads and `b` waits, and asserts the renew deadline's promise: `a`'s
/// child gets SIGTERM before the kill point, its whole process group is dead before its lease
/// could expire, `a` exits 75, and `b` leads only once etcd is back and after that death.
/// Returns when etcd was frozen.
fn etcd_frozen_past_the_renew_deadline(
    s: &Scene,
    a: &mut Wrapper,
    b: &mut Wrapper,
    t: Timings,
) -> Nanos {
    let group = group_of(s.start_of("a").expect("a started").pid).expect("a's child runs");
    // Every renewal acknowledged so far was sent before this moment.
    let before_freeze = now_ns();
    s.etcd().freeze();
    // Taken once etcd is stopped: any renewal etcd acknowledged before the resume was sent
    // before this moment.
    let frozen_at = now_ns();
    s.wait("a's child's process group gone", t.lease() + SLACK, || {
        !group_alive(group)
    });
    let gone = now_ns();
    assert!(
        gone < before_freeze + t.lease_ns(),
        "a's child's process group was still alive {} after the freeze, not dead before \
         LEASE_DURATION\n{}",
        secs(gone - frozen_at),
        s.report()
    );
    let term = s.at("term", "a");
    assert!(
        term.is_some_and(|at| at < frozen_at + t.kill_after_ns()),
        "no SIGTERM before (RENEW_DEADLINE + LEASE_DURATION) / 2: {:?} after the freeze\n{}",
        term.map(|at| secs(at - frozen_at)),
        s.report()
    );
    assert_eq!(a.code(Duration::from_secs(5)), 75, "{}", s.report());
    assert!(s.start_of("b").is_none(), "{}", s.report());

    s.etcd().resume();
    let start = s.await_start("b", t.lease() + LEAD).at;
    eprintln!(
        "after the freeze: a's child got SIGTERM at +{}, was dead by +{}, a exited at +{}, b \
         started at +{}",
        secs(term.unwrap_or_default() - frozen_at),
        secs(gone - frozen_at),
        secs(a.exited_at().expect("exited") - frozen_at),
        secs(start - frozen_at)
    );
    assert!(start > gone, "b started beside a's child\n{}", s.report());
    s.wait("only b holds a key", SLACK, || s.identities() == ["b"]);
    s.stop("b", 0);
    assert_eq!(b.code(LEAD), 0, "{}", s.report());
    frozen_at
}

// ---- etcd killed ----

#[test]
fn etcd_down_longer_than_the_renew_deadline_stops_the_leader_and_the_waiter_takes_over() {
    let t = FAST;
    let mut s = Scene::new();
    let mut a = s.candidate("a", t);
    s.await_start("a", LEAD);
    let mut b = s.candidate("b", t);
    s.await_queued(&b, LEAD);

    s.etcd_mut().kill();
    // Taken once etcd is dead: no renewal can be acknowledged after it.
    let killed_at = now_ns();
    assert_eq!(a.code(t.lease() + SLACK), 75, "{}", s.report());
    let end = s.end_of("a").expect("a's end");
    assert!(
        end < killed_at + t.lease_ns(),
        "child ended {} after the kill, not before LEASE_DURATION\n{}",
        secs(end - killed_at),
        s.report()
    );
    s.await_group_dead("a", Duration::from_secs(2));
    assert!(b.running() && s.start_of("b").is_none(), "{}", s.report());

    // etcd comes back with a's key (its revoke failed while etcd was down); the lease expires a
    // LEASE_DURATION after the restart, then the waiter leads.
    s.etcd_mut().restart();
    let start = s.await_start("b", t.lease() + LEAD).at;
    eprintln!(
        "after the kill: a's child ended at +{}, b started at +{}",
        secs(end - killed_at),
        secs(start - killed_at)
    );
    s.assert_no_overlap();
    s.wait("only b holds a key", SLACK, || s.identities() == ["b"]);
}

// ---- a three-member cluster ----

#[test]
fn cluster_member_loss_is_survived_and_quorum_loss_stops_the_leader() {
    let t = ROOMY;
    let mut cluster = Cluster::start(3);
    let s = Scene::without_etcd();
    let endpoints = cluster.endpoints();
    let mut a = via(&s, "a", &endpoints, t);
    s.await_start("a", LEAD);

    // The first endpoint is the one in use: kill it. Renewals must go on through the others,
    // across a raft election if m0 led the cluster.
    let killed = Instant::now();
    cluster.kill(0);
    // Nothing may happen: without renewals the renew deadline would pass RENEW_DEADLINE after the
    // kill. Watch until then plus a second.
    thread::sleep(
        (killed + t.renew() + Duration::from_secs(1)).saturating_duration_since(Instant::now()),
    );
    assert!(a.running(), "{}", s.report());
    assert!(
        s.end_of("a").is_none(),
        "the leader's child was stopped\n{}",
        s.report()
    );

    // Quorum lost: no renewal can succeed any more.
    cluster.kill(1);
    let lost_at = now_ns();
    assert_eq!(a.code(t.lease() + SLACK), 75, "{}", s.report());
    let end = s.end_of("a").expect("a's end");
    assert!(
        end < lost_at + t.lease_ns(),
        "child ended {} after quorum loss, not before LEASE_DURATION\n{}",
        secs(end - lost_at),
        s.report()
    );
    s.await_group_dead("a", Duration::from_secs(2));

    // Restored, a new instance wins once a's lease has expired.
    cluster.restart(0);
    cluster.restart(1);
    let _c = via(&s, "c", &endpoints, t);
    let start = s.await_start("c", t.lease() + LEAD).at;
    eprintln!(
        "after quorum loss: a's child ended at +{}, c started at +{}",
        secs(end - lost_at),
        secs(start - lost_at)
    );
    s.assert_no_overlap();
    let keys = cluster.keys_under(&format!("{}/", s.lock()));
    let values: Vec<&str> = keys.iter().map(|kv| kv.value.as_str()).collect();
    assert_eq!(values, ["c"], "{}", s.report());
}

// ---- a proxy between one instance and etcd ----

#[test]
fn a_leader_partitioned_from_etcd_stops_before_its_lease_expires_and_the_waiter_leads_after() {
    let t = FAST;
    let s = Scene::new();
    let proxy = Proxy::start(&s.etcd().endpoint_hostport());
    let mut a = via(&s, "a", &proxy.url(), t);
    s.await_start("a", LEAD);
    let b = s.candidate("b", t);
    s.await_queued(&b, LEAD);

    proxy.freeze();
    let frozen_at = now_ns();
    // When the proxy last handed bytes of a's to etcd (a leader sends only keepalives). Every
    // renewal a saw acknowledged was sent before it; etcd handled the last keepalive it got no
    // earlier than it — or, if the freeze cut that keepalive in two, the one before, at most one
    // keepalive interval (500 ms) earlier.
    let last_heard = ns(proxy
        .last_forwarded_upstream()
        .expect("a talked through the proxy"));
    let interval_ns = Nanos::from(t.retry_ms) * 1_000_000;
    assert_eq!(a.code(t.lease() + SLACK), 75, "{}", s.report());
    let end = s.end_of("a").expect("a's end");
    assert!(
        end < last_heard + t.lease_ns(),
        "child ended {} after a's last renewal could reach etcd, not before LEASE_DURATION\n{}",
        secs(end - last_heard),
        s.report()
    );
    assert!(end < frozen_at + t.lease_ns(), "{}", s.report());
    s.await_group_dead("a", Duration::from_secs(2));

    // b leads only once etcd expired a's lease: LEASE_DURATION after etcd last renewed it.
    let start = s.await_start("b", t.lease() + LEAD).at;
    eprintln!(
        "after etcd last heard from a: a's child ended at +{}, a exited at +{}, b started at +{}",
        secs(end - last_heard),
        secs(a.exited_at().expect("exited") - last_heard),
        secs(start - last_heard)
    );
    assert!(
        start > last_heard - interval_ns + t.lease_ns(),
        "b started {} after etcd last heard from a, before a's lease could expire\n{}",
        secs(start - last_heard),
        s.report()
    );
    s.assert_no_overlap();
    assert_eq!(s.identities(), ["b"]);
    proxy.close_all();
}

#[test]
fn a_waiter_whose_watch_went_silent_takes_over_within_the_idle_bound() {
    let t = FAST;
    let s = Scene::new();
    let (proxy, mut a, _w) = leader_and_proxied_waiter(&s, t);

    // Cut w's watch connections silently; its later connections (keepalives, new watches) pass.
    assert!(proxy.freeze_existing() >= 2);
    s.stop("a", 0);
    assert_eq!(a.code(LEAD), 0, "{}", s.report());
    // w polls nothing else, so it can learn of a's exit only through a new watch.
    let took = w_leads_within_the_idle_bound(&s, t);
    assert!(
        took > 500_000_000,
        "w led {} after a ended: its watch was not silenced (test broken)\n{}",
        secs(took),
        s.report()
    );
    s.assert_no_overlap();
    assert_eq!(s.identities(), ["w"]);
    proxy.close_all();
}

#[test]
fn a_waiter_whose_watch_revision_was_compacted_takes_over() {
    let t = FAST;
    let s = Scene::new();
    let (proxy, mut a, _w) = leader_and_proxied_waiter(&s, t);

    // Silence w's watches, so that each is re-established (after the idle timeout) from the
    // revision it was opened at; compact past that revision meanwhile.
    assert!(proxy.freeze_existing() >= 2);
    let client = Client::new(ClientConfig::new(vec![s.url()])).expect("client");
    let mut revision = 0;
    for i in 0..20 {
        let key = format!("{}-churn/{i}", s.lock());
        revision = client
            .put(key.as_bytes(), b"x", 0)
            .expect("put")
            .header
            .revision;
    }
    client.compact(revision).expect("compact");
    s.stop("a", 0);
    assert_eq!(a.code(LEAD), 0, "{}", s.report());
    w_leads_within_the_idle_bound(&s, t);
    // The re-established watch met the compaction (etcd cancelled it naming the compacted
    // revision) — the path under test was taken.
    assert!(
        proxy.connections_with(b"\"compact_revision\"") >= 1,
        "no watch was cancelled for compaction\n{}",
        s.report()
    );
    s.assert_no_overlap();
    assert_eq!(s.identities(), ["w"]);
    proxy.close_all();
}

#[test]
fn a_waiter_whose_renewals_stalled_does_not_start_its_child_when_it_reaches_the_head() {
    // A long lease against a short renew deadline: w's renewals can be stale (older than
    // RENEW_DEADLINE) while its lease and key are still alive on etcd.
    let t = Timings {
        lease_s: 8,
        renew_ms: 2000,
        retry_ms: 500,
    };
    let s = Scene::new();
    let (proxy, mut a, w) = leader_and_proxied_waiter(&s, t);

    // Only w's keepalives stall; its watches and its kv calls go on.
    proxy.hold_matching(b"/v3/lease/keepalive");
    let held_at = now_ns();
    // Waiting for time itself: w's last acknowledged renewal (sent before `held_at`) must become
    // older than RENEW_DEADLINE. Its lease stays alive on etcd until LEASE_DURATION after it.
    thread::sleep(t.renew() + Duration::from_millis(400));
    s.stop("a", 0);
    assert_eq!(a.code(LEAD), 0, "{}", s.report());
    // w heads the queue now, but by the safety rule leadership does not hold for it: its last
    // acknowledged renewal is older than RENEW_DEADLINE. Its child must not start. Watch for 2.5 s
    // (w's watch and look take milliseconds, or a retry after a unary budget of 1 s), still well
    // within the lease's life on etcd (at least LEASE_DURATION - 500 ms after `held_at`).
    thread::sleep(Duration::from_millis(2500));
    // The child may die of the SIGTERM before it can write its start mark: the wrapper's log
    // tells too.
    let started = s.start_of("w").is_some() || w.stderr().contains("child started");
    assert!(
        !started,
        "w started its child although its last acknowledged renewal was sent over RENEW_DEADLINE \
         ({} ms) ago: its renewals stalled {} before\n{}",
        t.renew_ms,
        secs(now_ns() - held_at),
        s.report()
    );

    // Renewals flow again: w leads, with a fresh renewal.
    proxy.thaw();
    let thawed_at = now_ns();
    let start = s.await_start("w", t.lease() + LEAD).at;
    assert!(start > thawed_at, "{}", s.report());
    s.assert_no_overlap();
    proxy.close_all();
}

// ---- a leader's key deleted ----

#[test]
fn deleting_the_leader_key_stops_the_leader_and_the_follower_leads() {
    let s = Scene::new();
    let mut a = s.candidate("a", STEADY);
    let a_start = s.await_start("a", SOON);
    let mut b = s.candidate("b", STEADY);
    let keys = s.await_keys(2, SOON);

    let deleted = s.etcd().etcdctl_ok(&["del", &a_start.key]);
    assert_eq!(deleted.trim(), "1");
    assert_eq!(a.code(SOON), 75, "{}", s.report());
    // The key is gone, another leader may start: the child is killed at once, not asked.
    assert!(!alive(a_start.pid), "a's child survived its wrapper");
    assert!(s.at("term", "a").is_none(), "{}", s.report());
    let b_start = s.await_start("b", SOON);
    assert_eq!(b_start.key, keys[1].key);
    s.stop("b", 0);
    assert_eq!(b.code(SOON), 0);
    assert!(s.keys().is_empty(), "keys left:\n{}", s.report());
}

#[test]
fn a_key_deleted_while_the_child_is_stopped_gracefully_gets_it_killed_at_once() {
    // The renew deadline passes long before the SIGKILL point ((2 s + 8 s) / 2 = 5 s).
    let t = Timings {
        lease_s: 8,
        renew_ms: 2000,
        retry_ms: 500,
    };
    let s = Scene::new();
    let proxy = Proxy::start(&s.etcd().endpoint_hostport());
    let env = s.env("a", t).set("ENDPOINTS", proxy.url());
    let mut a = s.spawn("a", env, s.child("a", OnTerm::Ignore));
    s.await_start("a", LEAD);
    s.wait("a's watch of its key created", LEAD, || {
        proxy.connections_with(b"\"created\":true") >= 1
    });

    // a's renewals stall (its watch goes on): past RENEW_DEADLINE the child gets SIGTERM, which
    // it ignores.
    proxy.hold_matching(b"/v3/lease/keepalive");
    s.wait("SIGTERM reached the child", t.renew() + SLACK, || {
        s.at("term", "a").is_some()
    });
    assert!(a.running(), "{}", s.report());

    // Now a's key is deleted (by an operator, or another instance's FORCE_ACQUIRE): another
    // leader may start at once. By the safety rule the child gets SIGKILL at once.
    s.etcd()
        .etcdctl_ok(&["del", "--prefix", &format!("{}/", s.lock())]);
    let deleted_at = now_ns();
    let pgid = s.start_of("a").expect("started").pid;
    s.wait("the child's process group dead", t.lease() + SLACK, || {
        !group_alive(pgid)
    });
    let dead_at = now_ns();
    let term_at = s.at("term", "a").expect("seen");
    assert!(
        dead_at - deleted_at < 1_000_000_000,
        "the child ran on {} after its key was deleted (SIGTERM had come {} before the delete)\n{}",
        secs(dead_at - deleted_at),
        secs(deleted_at - term_at),
        s.report()
    );
    assert_eq!(a.code(Duration::from_secs(5)), 75, "{}", s.report());
    proxy.close_all();
}

// ---- a preempted leader cut off from news of its key ----

/// `a` leads through a proxy (returned), its own-key watch registered; `b` queues on etcd directly.
/// Returns the proxy, both wrappers, `a`'s key and its child's process group.
fn proxied_leader_and_waiter(s: &Scene, t: Timings) -> (Proxy, Wrapper, Wrapper, Kv, i32) {
    let proxy = Proxy::start(&s.etcd().endpoint_hostport());
    let a = via(s, "a", &proxy.url(), t);
    let pid = s.await_start("a", LEAD).pid;
    s.wait("a's watch of its key created", LEAD, || {
        proxy.connections_with(b"\"created\":true") >= 1
    });
    let group = group_of(pid).expect("a's child runs");
    let b = s.candidate("b", t);
    s.await_queued(&b, LEAD);
    let key = s
        .keys()
        .into_iter()
        .find(|kv| kv.value == "a")
        .expect("a's key");
    (proxy, a, b, key, group)
}

/// Deletes `key` as an operator would (another instance's FORCE_ACQUIRE does the same); returns
/// when the deletion was asked for (before etcd applied it).
fn delete(s: &Scene, key: &Kv) -> Nanos {
    let asked = now_ns();
    let deleted = s.etcd().etcdctl_ok(&["del", &key.key]);
    assert_eq!(deleted.trim(), "1", "{}", s.report());
    asked
}

#[test]
fn a_preempted_leader_whose_watch_died_silently_stops_within_an_interval_and_a_request_budget() {
    // Issue 10, item 4: only a's watch flow is dead (a NAT dropped it): its watch connections,
    // open or new, carry nothing; its keepalives and reads pass.
    let t = FAST;
    let s = Scene::new();
    let (proxy, mut a, mut b, key, group) = proxied_leader_and_waiter(&s, t);
    proxy.hold_matching(b"/v3/watch");

    let deleted_at = delete(&s, &key);
    // The leader re-reads its key every keepalive interval (500 ms); the read takes at most one
    // request budget (1 s). One second of slack on top.
    let bound = Duration::from_millis(t.retry_ms + 1000 + 1000);
    s.wait("a's child's process group gone", bound + SLACK, || {
        !group_alive(group)
    });
    let dead_at = now_ns();
    let b_start = s.await_start("b", SOON).at;
    eprintln!(
        "after the deletion: a's child dead by +{}, b started at +{}",
        secs(dead_at - deleted_at),
        secs(b_start - deleted_at)
    );
    assert!(
        dead_at - deleted_at < bound.as_nanos() as Nanos,
        "a's child ran on {} after its key was deleted, over one keepalive interval plus one \
         request budget (+1 s)\n{}",
        secs(dead_at - deleted_at),
        s.report()
    );
    // The key is gone: SIGKILL at once, no graceful stop.
    assert!(s.at("term", "a").is_none(), "{}", s.report());
    assert_eq!(a.code(SOON), 75, "{}", s.report());
    s.stop("b", 0);
    assert_eq!(b.code(SOON), 0, "{}", s.report());
    proxy.close_all();
}

/// Review 3, R3: a waiter alone behind the leader leads on the deletion its one stream reported
/// (that stream carries its own key too), and keeps that stream as its own-key watch. Its key
/// deleted, it must stop at once, told by that stream: its first read of its key comes only a
/// keepalive interval (5 s here) after it leads.
#[test]
fn a_leader_made_by_its_only_predecessors_deletion_still_sees_its_own_key_deleted_at_once() {
    let t = Timings {
        lease_s: 20,
        renew_ms: 16_000,
        retry_ms: 5_000,
    };
    let s = Scene::new();
    let mut c = s.candidate("c", t);
    s.await_start("c", LEAD);
    let mut a = s.candidate("a", t);
    s.await_queued(&a, LEAD);
    s.stop("c", 0);
    assert_eq!(c.code(SOON), 0, "{}", s.report());
    let start = s.await_start("a", SOON);
    let group = group_of(start.pid).expect("a's child runs");
    let [key]: [Kv; 1] = s.keys().try_into().expect("a's key alone");

    let deleted_at = delete(&s, &key);
    s.wait("a's child's process group gone", t.lease(), || {
        !group_alive(group)
    });
    let dead_at = now_ns();
    let bound = Duration::from_secs(2);
    assert!(
        dead_at - deleted_at < bound.as_nanos() as Nanos,
        "a's child ran on {} after its key was deleted: its watch did not tell it\n{}",
        secs(dead_at - deleted_at),
        s.report()
    );
    assert!(s.at("term", "a").is_none(), "{}", s.report());
    assert_eq!(a.code(SOON), 75, "{}", s.report());
    assert!(s.keys().is_empty(), "keys left:\n{}", s.report());
}

#[test]
fn a_preempted_leader_that_can_neither_watch_nor_read_its_key_stops_by_the_renew_deadline() {
    // Review F3: a's watches and its reads of its key hang (as without read permission on the
    // prefix), its keepalives pass, so its lease lives on. Its freshness is that of its last
    // confirmed read: by RENEW_DEADLINE after it the command is stopped.
    let t = Timings {
        lease_s: 6,
        renew_ms: 3000,
        retry_ms: 500,
    };
    let s = Scene::new();
    let (proxy, mut a, mut b, key, group) = proxied_leader_and_waiter(&s, t);
    let client = Client::new(ClientConfig::new(vec![s.url()])).expect("client");
    proxy.hold_matching(b"/v3/watch");
    proxy.hold_matching(b"/v3/kv/range");
    // Every read of a's answered from now on was sent before this moment.
    let held_at = now_ns();
    delete(&s, &key);

    // While waiting, sample a's lease: a TTL of LEASE_DURATION - 1 s or more 1.5 s after the hold
    // proves a keepalive reached etcd after it (the premise: keepalives pass).
    let mut renewed_after_hold = false;
    s.wait("a's child's process group gone", t.lease() + SLACK, || {
        let ttl = client.lease_time_to_live(key.lease).map_or(-1, |l| l.ttl);
        if now_ns() - held_at > 1_500_000_000 && ttl >= t.lease_s as i64 - 1 {
            renewed_after_hold = true;
        }
        !group_alive(group)
    });
    let dead_at = now_ns();
    eprintln!(
        "after the hold: a's child got SIGTERM at +{}, was dead by +{}",
        s.at("term", "a")
            .map_or("-".into(), |at| secs(at - held_at)),
        secs(dead_at - held_at)
    );
    assert!(
        renewed_after_hold,
        "a's keepalives did not pass (test broken)\n{}",
        s.report()
    );
    let term = s.at("term", "a");
    assert!(
        term.is_some_and(|at| at - held_at < t.kill_after_ns()),
        "a's child got no SIGTERM before the kill point: {:?} after the hold\n{}",
        term.map(|at| secs(at - held_at)),
        s.report()
    );
    assert!(
        dead_at - held_at < t.lease_ns(),
        "a's child was still alive {} after a last read its key, a LEASE_DURATION\n{}",
        secs(dead_at - held_at),
        s.report()
    );
    assert_eq!(a.code(SOON), 75, "{}", s.report());
    assert!(
        a.stderr().contains("cannot confirm our key"),
        "{}",
        s.report()
    );
    s.await_start("b", SOON);
    s.stop("b", 0);
    assert_eq!(b.code(SOON), 0, "{}", s.report());
    proxy.close_all();
}

// ---- a stopped wrapper ----

/// Stops the wrapper `a` (SIGSTOP) and waits until its command's process group, led by
/// `guardian`, is gone; asserts that the wrapper stayed stopped meanwhile and that the group died
/// before a's lease could expire. Returns when the wrapper was stopped and when the group was
/// seen gone.
fn stop_until_the_guardian_kills(
    s: &Scene,
    a: &mut Wrapper,
    guardian: i32,
    t: Timings,
) -> (Nanos, Nanos) {
    a.signal(SIGSTOP);
    // Every renewal of a's was sent before this moment; the last one at most one keepalive
    // interval before it, so a's lease lives until LEASE_DURATION - that interval after it.
    let stopped_at = now_ns();
    let lease_lives_until = stopped_at + t.lease_ns() - Nanos::from(t.retry_ms) * 1_000_000;
    s.wait("a's wrapper stopped", SOON, || state(a.pid()) == Some('T'));
    s.wait("a's child's process group gone", t.lease() + SLACK, || {
        !group_alive(guardian)
    });
    let dead_at = now_ns();
    let wrapper_state = state(a.pid());
    eprintln!(
        "after the SIGSTOP: a's child dead by +{} (kill point +{})",
        secs(dead_at - stopped_at),
        secs(t.kill_after_ns())
    );
    assert_eq!(
        wrapper_state,
        Some('T'),
        "a's wrapper ran again before its child died\n{}",
        s.report()
    );
    assert!(
        dead_at < lease_lives_until,
        "a's child was still alive {} after a's wrapper stopped, when its lease could expire\n{}",
        secs(dead_at - stopped_at),
        s.report()
    );
    (stopped_at, dead_at)
}

#[test]
fn a_stopped_leaders_child_is_killed_by_its_guardian_at_the_kill_point() {
    // Review F4: only the leader's wrapper stalls (SIGSTOP stands in for a debugger, a D-state
    // hang); its command runs on, and nothing the wrapper does can stop it. The guardian is a
    // dead-man switch: it SIGKILLs the command's group at the kill point, (RENEW_DEADLINE +
    // LEASE_DURATION) / 2 = 3.5 s after the last renewal.
    let t = MARGIN;
    let s = Scene::new();
    let mut a = s.candidate("a", t);
    let pid = s.await_start("a", LEAD).pid;
    let guardian = group_of(pid).expect("a's child runs");
    assert_ne!(guardian, a.pid(), "a's child is not in a group of its own");
    let mut b = s.candidate("b", t);
    s.await_queued(&b, LEAD);

    let (stopped_at, dead_at) = stop_until_the_guardian_kills(&s, &mut a, guardian, t);
    assert!(
        !alive(pid) && s.at("term", "a").is_none() && s.end_of("a").is_none(),
        "a's child was not SIGKILLed\n{}",
        s.report()
    );
    assert!(
        s.start_of("b").is_none(),
        "b led before a's child died\n{}",
        s.report()
    );

    // a's lease expires (nobody renews it), b leads.
    let b_start = s.await_start("b", t.lease() + LEAD).at;
    eprintln!("b started at +{}", secs(b_start - stopped_at));
    assert!(b_start > dead_at, "{}", s.report());

    // a resumes: it finds its child dead and its deadline long passed, and leaves nothing behind.
    a.signal(SIGCONT);
    assert_eq!(a.code(SOON), 75, "{}", s.report());
    assert!(!alive(guardian) && !group_alive(guardian), "{}", s.report());
    s.wait("only b holds a key", SLACK, || s.identities() == ["b"]);
    s.stop("b", 0);
    assert_eq!(b.code(SOON), 0, "{}", s.report());
}

/// Review 3, R2: the command SIGSTOPs its guardian (which leads the command's process group, so
/// `kill -STOP <its pgid>` reaches the guardian alone; SIGSTOP cannot be blocked), then the wrapper
/// stalls too. The wrapper resumed its guardian as soon as it stopped, so the guardian still kills
/// the command at the kill point.
#[test]
fn a_guardian_stopped_by_its_command_is_resumed_and_still_meets_the_kill_point() {
    let t = MARGIN;
    let s = Scene::new();
    let stop_the_guardian = "kill -STOP \"$(cut -d' ' -f5 /proc/$$/stat)\"; exec \"$@\"";
    let mut args: Vec<OsString> = ["sh", "-c", stop_the_guardian, "sh"]
        .iter()
        .map(OsString::from)
        .collect();
    args.extend(s.child("a", OnTerm::Trap));
    let mut a = s.spawn("a", s.env("a", t), args);
    let pid = s.await_start("a", LEAD).pid;
    let guardian = group_of(pid).expect("a's child runs");
    s.wait("a resumes its stopped guardian", SOON, || {
        a.stderr().contains("guardian was stopped; resumed it")
    });
    s.wait("a's guardian runs", SOON, || state(guardian) != Some('T'));

    stop_until_the_guardian_kills(&s, &mut a, guardian, t);
    a.signal(SIGCONT);
    assert_eq!(a.code(SOON), 75, "{}", s.report());
    s.wait("a's key gone", t.lease() + SLACK, || s.keys().is_empty());
}
