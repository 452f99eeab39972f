//! README "Seamless takeover": an instance restarted with the same identity adopts its earlier
//! run's lease and key (its place in the queue), but never while that earlier run may still be
//! leading: a live twin with the same identity (at any keepalive interval), or a leader merely
//! stalled for less than RENEW_DEADLINE, is queued behind, never run beside. Adoption is one claim
//! in etcd: of two adopters one wins, and a wrapper whose key was adopted while it stalled queues
//! again with a fresh lease and never revokes the lease its twin now holds.
//!
//! Run: `cargo test --test takeover -- --test-threads=2`.

mod support;

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use libc::{SIGCONT, SIGKILL, SIGSTOP, SIGTERM};
use support::env::{Timings, MARGIN};
use support::marks::{now_ns, secs, Nanos, OnTerm, Start};
use support::procs::alive;
use support::proxy::Proxy;
use support::wrapper::{Scene, Wrapper, SOON};
use support::Kv;

/// A kill point (6 s) that a newcomer can prove well before the lease (10 s) expires.
const TAKEOVER: Timings = Timings {
    lease_s: 10,
    renew_ms: 2000,
    retry_ms: 500,
};

/// What the newcomer logs when a live instance renews its identity's lease.
const LIVE_TWIN: &str = "another live instance uses our identity";
/// What every clash of identities logs, whichever side finds it.
const CLASH: &str = "identities must be unique";
/// What an adopter logs.
const ADOPTED: &str = "adopted our key from an earlier run";

/// When a holder that stopped renewing has killed its command: (RENEW_DEADLINE + LEASE) / 2
/// after its last renewal.
fn kill_point(t: Timings) -> Duration {
    (t.renew() + t.lease()) / 2
}

/// Sleeps until `deadline`: only where a test asserts that nothing happens until then.
fn sleep_until(deadline: Instant) {
    thread::sleep(deadline.saturating_duration_since(Instant::now()));
}

#[test]
fn a_restarted_instance_with_the_same_identity_keeps_its_place() {
    let t = MARGIN;
    let s = Scene::new();
    let mut a = s.candidate("a", t);
    s.await_start("a", SOON);
    let mut b = s.spawn("b", s.env("b", t), s.child("b", OnTerm::Trap));
    let before = s.await_keys(2, SOON);

    // b dies without revoking its lease; b2, same identity, comes back before the lease expires.
    let killed = Instant::now();
    b.signal(SIGKILL);
    b.wait(SOON);
    let mut b2 = s.spawn("b2", s.env("b", t), s.child("b2", OnTerm::Trap));

    // Asserting that nothing happens: past this point b's lease would have expired had b2 not
    // adopted and renewed it, and b2 would then have queued with a new key.
    sleep_until(killed + Duration::from_secs(t.lease_s + 1));
    assert_eq!(s.keys(), before, "b2 did not keep b's key\n{}", s.report());

    s.stop("a", 0);
    assert_eq!(a.code(SOON), 0, "{}", s.report());
    let b2_start = s.await_start("b2", SOON);
    assert_eq!(b2_start.key, before[1].key, "{}", s.report());
    assert_eq!(b2_start.revision, before[1].create_revision);
    assert_eq!(
        i64::from_str_radix(&b2_start.lease_hex, 16),
        Ok(before[1].lease)
    );
    s.stop("b2", 0);
    assert_eq!(b2.code(SOON), 0, "{}", s.report());
    assert!(s.keys().is_empty(), "keys left:\n{}", s.report());
}

/// Whether the live instance whose identity a twin uses leads or waits behind another leader.
#[derive(Clone, Copy, Debug)]
enum Holder {
    Leading,
    Waiting,
}

/// Issue 10 item 2: a keepalive interval ≤ ~1.2 s never lets the TTL drop a whole second between
/// samples; a stale bound then adopted a live instance's lease. Each case: (keepalive interval,
/// timings, whether the live instance leads or waits).
const LIVE_TWIN_CASES: [(&str, Timings, Holder); 4] = [
    (
        "leader renewing every 500 ms (15/2s/500ms)",
        Timings {
            lease_s: 15,
            renew_ms: 2000,
            retry_ms: 500,
        },
        Holder::Leading,
    ),
    (
        "leader renewing every 1 s (5/3s/1s)",
        Timings {
            lease_s: 5,
            renew_ms: 3000,
            retry_ms: 1000,
        },
        Holder::Leading,
    ),
    (
        "leader renewing every 2 s (10/5s/2s)",
        Timings {
            lease_s: 10,
            renew_ms: 5000,
            retry_ms: 2000,
        },
        Holder::Leading,
    ),
    (
        "waiter renewing every 3.6 s (12/8s/2s)",
        Timings {
            lease_s: 12,
            renew_ms: 8000,
            retry_ms: 2000,
        },
        Holder::Waiting,
    ),
];

#[test]
fn a_second_live_instance_with_the_same_identity_never_runs_beside_the_first_at_any_keepalive_interval(
) {
    run_cases(
        &LIVE_TWIN_CASES.map(|(case, t, holder)| (case, (t, holder))),
        |(t, holder)| live_twin_queues_behind(t, holder),
    );
}

/// Runs `run` on every case in parallel (each scene has its own etcd, so a test takes as long as
/// its longest case), and fails naming every case that failed.
fn run_cases<C: Copy + Send>(cases: &[(&str, C)], run: impl Fn(C) + Sync) {
    let run = &run;
    let failures: Vec<String> = thread::scope(|scope| {
        let runs: Vec<_> = cases
            .iter()
            .map(|&(case, c)| (case, scope.spawn(move || run(c))))
            .collect();
        runs.into_iter()
            .filter_map(|(case, run)| run.join().err().map(|panic| failure(case, &*panic)))
            .collect()
    });
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// One case's panic message, named after the case.
fn failure(case: &str, panic: &(dyn std::any::Any + Send)) -> String {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("(no message)");
    format!("=== {case}: {message}")
}

/// The live instance `a` leads (or waits behind `l`); `twin`, with a's identity, starts. Until a's
/// kill point + 2 s after it started (the latest a wrongful adoption could come), the twin must not
/// run and must have queued behind with a fresh key; it leads only after a's command ended.
fn live_twin_queues_behind(t: Timings, holder: Holder) {
    let s = Scene::new();
    let mut l = match holder {
        Holder::Leading => None,
        Holder::Waiting => {
            let l = s.candidate("l", t);
            s.await_start("l", SOON);
            Some(l)
        }
    };
    let mut a = s.candidate("a", t);
    match holder {
        Holder::Leading => {
            s.await_start("a", SOON);
        }
        Holder::Waiting => s.await_queued(&a, SOON),
    }
    let before = s.keys();
    let a_key = before.last().cloned().expect("a's key");

    let mut twin = s.spawn("twin", s.env("a", t), s.child("twin", OnTerm::Trap));
    let judged = Instant::now() + kill_point(t) + Duration::from_secs(2);
    s.wait(
        "the twin sees a renew and reports the clash",
        judged.saturating_duration_since(Instant::now()),
        || twin.stderr().contains(LIVE_TWIN) || s.start_of("twin").is_some(),
    );
    // Asserting that nothing happens: until past a's kill point + 2 s, no adoption.
    sleep_until(judged);
    assert!(
        s.start_of("twin").is_none(),
        "two commands with one identity\n{}",
        s.report()
    );
    let keys = s.keys();
    assert_eq!(
        keys[..keys.len().saturating_sub(1)],
        before[..],
        "the live instance's key changed\n{}",
        s.report()
    );
    let fresh = keys.last().filter(|_| keys.len() == before.len() + 1);
    let fresh = fresh.unwrap_or_else(|| panic!("the twin has no key of its own\n{}", s.report()));
    assert!(
        fresh.value == "a" && fresh.lease != a_key.lease,
        "the twin's key is not fresh\n{}",
        s.report()
    );

    // The twin waits its turn behind a, on its fresh key.
    if let Some(l) = l.as_mut() {
        s.stop("l", 0);
        assert_eq!(l.code(SOON), 0, "{}", s.report());
        s.await_start("a", SOON);
    }
    s.stop("a", 0);
    assert_eq!(a.code(SOON), 0, "{}", s.report());
    let start = s.await_start("twin", SOON);
    assert_eq!(start.key, fresh.key, "{}", s.report());
    s.stop("twin", 0);
    assert_eq!(twin.code(SOON), 0, "{}", s.report());
    match holder {
        Holder::Leading => s.assert_one_at_a_time(&["a", "twin"]),
        Holder::Waiting => s.assert_one_at_a_time(&["l", "a", "twin"]),
    }
}

#[test]
fn a_stalled_leader_is_not_taken_over_by_an_instance_with_its_identity() {
    // The reviewer's case: the leader's wrapper stalls (SIGSTOP stands in for a GC pause or a short
    // partition) for less than RENEW_DEADLINE, so it is still entitled to lead, while a newcomer
    // with the same identity finds its key with a falling TTL.
    let t = Timings {
        lease_s: 5,
        renew_ms: 3000,
        retry_ms: 500,
    };
    let s = Scene::new();
    let mut a = s.candidate("a", t);
    s.await_start("a", SOON);
    a.signal(SIGSTOP);
    let stalled = Instant::now();
    let mut twin = s.spawn("twin", s.env("a", t), s.child("twin", OnTerm::Trap));
    // The stall itself is the condition under test: it must stay below RENEW_DEADLINE (3 s).
    thread::sleep(Duration::from_millis(2000).saturating_sub(stalled.elapsed()));
    a.signal(SIGCONT);
    // a renews again, so the twin must see the TTL rise and queue with a fresh key.
    s.wait("the twin queues with a fresh key", SOON, || {
        s.keys().len() == 2
    });
    assert!(
        s.start_of("twin").is_none(),
        "the twin ran beside a stalled but entitled leader\n{}",
        s.report()
    );
    assert!(
        a.running(),
        "a stopped although it was entitled\n{}",
        s.report()
    );
    s.stop("a", 0);
    assert_eq!(a.code(SOON), 0, "{}", s.report());
    let a_end = s.end_of("a").expect("a's end");
    let start = s.await_start("twin", SOON);
    assert!(start.at > a_end, "{}", s.report());
    s.stop("twin", 0);
    assert_eq!(twin.code(SOON), 0, "{}", s.report());
}

/// What the resumed waiter of review F1 meets next.
#[derive(Clone, Copy, Debug)]
enum Next {
    /// The leader c leaves: a's next look finds its key taken.
    LeaderLeaves,
    /// a is asked to leave before anything made it look at its key again.
    WaiterLeaves,
}

/// Review F1: c leads; a (identity x) waits and stalls past its kill point; b (identity x) adopts
/// a's key. Resumed, a must never revoke or lead on the shared key: when c leaves, only b leads
/// and a queues again with a fresh lease; when a leaves (before or after that), b keeps its key.
#[test]
fn a_stalled_waiter_whose_key_a_twin_adopted_never_leads_beside_it_nor_revokes_its_lease() {
    run_cases(
        &[
            ("c leaves after a resumed", Next::LeaderLeaves),
            ("a leaves right after it resumed", Next::WaiterLeaves),
        ],
        stalled_waiter_loses_its_key,
    );
}

fn stalled_waiter_loses_its_key(next: Next) {
    let t = TAKEOVER;
    let s = Scene::new();
    let mut c = s.candidate("c", t);
    s.await_start("c", SOON);
    let mut a = s.spawn("a", s.env("x", t), s.child("a", OnTerm::Trap));
    s.await_queued(&a, SOON);
    let [c_key, shared]: [Kv; 2] = s.keys().try_into().expect("c's and a's keys");
    let both = [c_key.clone(), shared.clone()];

    a.signal(SIGSTOP);
    let mut b = s.spawn("b", s.env("x", t), s.child("b", OnTerm::Trap));
    s.wait("b adopts a's key", kill_point(t) + SOON, || {
        b.stderr().contains(ADOPTED)
    });
    assert_eq!(
        s.keys(),
        both,
        "b did not keep a's key and lease\n{}",
        s.report()
    );

    a.signal(SIGCONT);
    // a runs again: its watch reports b's claim of its key at once, and it queues behind with a
    // fresh lease, leaving the key b holds alone.
    s.wait("a sees its key taken", SOON, || a.stderr().contains(CLASH));
    let fresh_only = || {
        let keys = s.keys();
        keys.contains(&c_key)
            && keys.contains(&shared)
            && keys
                .iter()
                .all(|k| k == &c_key || k == &shared || (k.value == "x" && k.lease != shared.lease))
    };
    assert!(fresh_only(), "a disturbed b's key\n{}", s.report());

    if let Next::WaiterLeaves = next {
        a.signal(SIGTERM);
        assert_eq!(a.code(SOON), 128 + SIGTERM, "{}", s.report());
        assert_eq!(
            s.keys(),
            both,
            "a revoked the lease b holds\n{}",
            s.report()
        );
    }
    s.stop("c", 0);
    assert_eq!(c.code(SOON), 0, "{}", s.report());
    let b_start = s.await_start("b", SOON);
    assert_eq!(b_start.key, shared.key, "{}", s.report());
    if let Next::LeaderLeaves = next {
        let requeued = || {
            let keys = s.keys();
            keys.len() == 2
                && keys[0] == shared
                && keys[1].value == "x"
                && keys[1].lease != shared.lease
        };
        s.wait("a queues again with a fresh lease, or starts", SOON, || {
            requeued() || s.start_of("a").is_some()
        });
        // Asserting that nothing happens: a, queued behind b, must not start on the shared key.
        thread::sleep(Duration::from_secs(1));
        assert!(
            s.start_of("a").is_none(),
            "a and b both lead on one key\n{}",
            s.report()
        );
        assert!(requeued(), "a has no fresh key\n{}", s.report());
        assert!(
            a.stderr().contains(CLASH),
            "a did not report that its key was taken\n{}",
            s.report()
        );
        // a leaves: it revokes its fresh lease, never the one b holds.
        a.signal(SIGTERM);
        assert_eq!(a.code(SOON), 128 + SIGTERM, "{}", s.report());
        assert_eq!(
            s.keys(),
            std::slice::from_ref(&shared),
            "a's exit took b's key or left its own\n{}",
            s.report()
        );
    }
    still_leads_then_stops(&s, &mut b, &b_start, "b stopped leading");
    s.assert_one_at_a_time(&["c", "b"]);
    assert!(s.start_of("a").is_none(), "{}", s.report());
    assert!(s.keys().is_empty(), "keys left:\n{}", s.report());
}

/// Review F2: the leader a (identity x) is SIGKILLed; b1 and b2 (identity x) start at once. One of
/// them adopts a's key and leads; the other reports the clash and queues behind with a fresh key.
#[test]
fn two_instances_adopting_one_key_at_once_never_both_lead() {
    let t = TAKEOVER;
    let s = Scene::new();
    let mut a = s.spawn("a", s.env("x", t), s.child("a", OnTerm::Trap));
    s.await_start("a", SOON);
    let [old]: [Kv; 1] = s.keys().try_into().expect("a's key");
    a.signal(SIGKILL);
    a.wait(SOON);
    let killed = Instant::now();
    let names = ["b1", "b2"];
    let mut bs = names.map(|n| s.spawn(n, s.env("x", t), s.child(n, OnTerm::Trap)));

    s.wait("b1 or b2 leads", kill_point(t) + SOON, || {
        names.iter().any(|n| s.start_of(n).is_some())
    });
    let (w, l) = match s.start_of("b1") {
        Some(_) => (0, 1),
        None => (1, 0),
    };
    let (winner, loser) = (names[w], names[l]);
    s.wait(
        &format!("{loser} reports the clash, or starts"),
        SOON,
        || bs[l].stderr().contains(CLASH) || s.start_of(loser).is_some(),
    );
    // Asserting that nothing happens: until a's lease would have expired had the winner not
    // renewed it, plus a second, the loser stays queued.
    sleep_until(killed + t.lease() + Duration::from_secs(1));
    assert!(
        s.start_of(loser).is_none(),
        "two adopters both lead\n{}",
        s.report()
    );
    assert!(
        bs[w].stderr().contains(ADOPTED) && !bs[l].stderr().contains(ADOPTED),
        "not exactly one adopter\n{}",
        s.report()
    );
    let keys = s.keys();
    assert_eq!(keys.len(), 2, "{}", s.report());
    assert_eq!(
        keys[0],
        old,
        "{winner} did not keep a's key\n{}",
        s.report()
    );
    assert!(
        keys[1].value == "x" && keys[1].lease != old.lease,
        "{loser} has no fresh key\n{}",
        s.report()
    );
    let start = s.start_of(winner).expect("the winner started");
    assert_eq!(start.key, old.key, "{}", s.report());

    s.stop(winner, 0);
    assert_eq!(bs[w].code(SOON), 0, "{}", s.report());
    let start = s.await_start(loser, SOON);
    assert_eq!(start.key, keys[1].key, "{}", s.report());
    s.stop(loser, 0);
    assert_eq!(bs[l].code(SOON), 0, "{}", s.report());
    s.assert_one_at_a_time(&[winner, loser]);
}

/// Re-review N1: the waiter a (identity x, alone behind the leader c) reaches etcd through four
/// proxies that hold every keepalive: its next keepalive is *sent* in time but tried endpoint
/// after endpoint, each within its budget, so that etcd hears nothing from a past the kill point;
/// b (identity x) adopts a's key. The proxies then let a's keepalive through, answered right
/// after b's claim, and c leaves. a must count that late answer as the lapse it hid (or see b's
/// claim of its key), never lead beside b.
///
/// The timings make the hole reachable: the held keepalive goes out a waiter interval (5.4 s)
/// after a's last renewal, within RENEW_DEADLINE (16 s); b claims at about the kill point (18 s)
/// plus a second, 13–14 s later, while a's call is still on its third or fourth endpoint (5 s
/// each); and a's next keepalive follows the late answer less than RENEW_DEADLINE after the held
/// one was sent, so counting renewals by their send times alone sees no lapse.
#[test]
fn a_waiter_whose_keepalive_was_answered_only_after_its_twin_adopted_the_key_never_leads_beside_it()
{
    let t = Timings {
        lease_s: 20,
        renew_ms: 16_000,
        retry_ms: 5_000,
    };
    let s = Scene::new();
    let mut c = s.candidate("c", t);
    s.await_start("c", SOON);
    let proxies: Vec<Proxy> = (0..4)
        .map(|_| Proxy::start(&s.etcd().endpoint_hostport()))
        .collect();
    let endpoints: Vec<String> = proxies.iter().map(Proxy::url).collect();
    let mut a = s.spawn(
        "a",
        s.env("x", t).set("ENDPOINTS", endpoints.join(",")),
        s.child("a", OnTerm::Trap),
    );
    s.await_queued(&a, SOON);
    let [_, shared]: [Kv; 2] = s.keys().try_into().expect("c's and a's keys");
    for proxy in &proxies {
        proxy.hold_matching(b"/v3/lease/keepalive");
    }

    let mut b = s.spawn("b", s.env("x", t), s.child("b", OnTerm::Trap));
    s.wait("b adopts a's key", t.lease() + SOON, || {
        b.stderr().contains(ADOPTED)
    });
    for proxy in &proxies {
        proxy.thaw();
    }
    let held: usize = proxies.iter().map(Proxy::held).sum();
    assert!(
        held >= 3,
        "a's keepalive was not tried on at least three held endpoints ({held}): test broken\n{}",
        s.report()
    );

    s.stop("c", 0);
    assert_eq!(c.code(SOON), 0, "{}", s.report());
    let b_start = s.await_start("b", SOON);
    assert_eq!(b_start.key, shared.key, "{}", s.report());
    // Asserting that nothing happens: a, queued behind b with a fresh key, must not start.
    thread::sleep(Duration::from_secs(1));
    assert!(
        s.start_of("a").is_none(),
        "a and b both lead on one key\n{}",
        s.report()
    );
    assert!(
        a.stderr().contains(CLASH),
        "a did not report that its key was taken\n{}",
        s.report()
    );
    still_leads_then_stops(&s, &mut b, &b_start, "b stopped leading");
    a.signal(SIGTERM);
    assert_eq!(a.code(SOON), 128 + SIGTERM, "{}", s.report());
    s.assert_one_at_a_time(&["c", "b"]);
    assert!(s.keys().is_empty(), "keys left:\n{}", s.report());
}

/// Review F4: the leader a's wrapper stalls past its kill point (its command dies then, by the
/// guardian); b, with a's identity, adopts the lease and leads. Resumed, a must not revoke the
/// lease b now holds: b's command keeps running and its key stays.
#[test]
fn a_wrapper_stalled_past_its_kill_point_never_revokes_the_lease_its_twin_adopted() {
    let t = TAKEOVER;
    let s = Scene::new();
    let mut a = s.candidate("a", t);
    let a_start = s.await_start("a", SOON);
    let [old]: [Kv; 1] = s.keys().try_into().expect("a's key");
    let a_child = LastSeenAlive::watch(a_start.pid);

    a.signal(SIGSTOP);
    let mut b = s.spawn("b", s.env("a", t), s.child("b", OnTerm::Trap));
    let b_start = s.await_start("b", kill_point(t) + SOON);
    assert_eq!(
        b_start.key,
        old.key,
        "b did not adopt a's key\n{}",
        s.report()
    );
    let (still_alive, last) = (alive(a_start.pid), a_child.last());
    assert!(
        !still_alive && last < b_start.at,
        "a's command still ran when b's started (alive now: {still_alive}; last seen {} from b's start)\n{}",
        secs(last - b_start.at),
        s.report()
    );

    a.signal(SIGCONT);
    // Its late renewal tells a it may have been taken over: it exits 75 (README).
    assert_eq!(a.code(SOON), 75, "{}", s.report());
    assert_eq!(
        s.keys(),
        [old],
        "the stalled wrapper revoked the lease b adopted\n{}",
        s.report()
    );
    still_leads_then_stops(&s, &mut b, &b_start, "b's command stopped when a resumed");
    assert!(s.keys().is_empty(), "keys left:\n{}", s.report());
}

/// Asserts that `b`'s command (started as `start`) still runs, then stops it: b exits 0.
fn still_leads_then_stops(s: &Scene, b: &mut Wrapper, start: &Start, failure: &str) {
    let name = b.name().to_string();
    assert!(
        b.running() && s.end_of(&name).is_none() && alive(start.pid),
        "{failure}\n{}",
        s.report()
    );
    s.stop(&name, 0);
    assert_eq!(b.code(SOON), 0, "{}", s.report());
}

/// Samples every 10 ms whether a process runs, and remembers when it last did.
struct LastSeenAlive {
    last: Arc<AtomicI64>,
    done: Arc<AtomicBool>,
}

impl LastSeenAlive {
    fn watch(pid: i32) -> LastSeenAlive {
        let last = Arc::new(AtomicI64::new(now_ns() as i64));
        let done = Arc::new(AtomicBool::new(false));
        let (seen, stop) = (Arc::clone(&last), Arc::clone(&done));
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) && alive(pid) {
                seen.store(now_ns() as i64, Ordering::Relaxed);
                thread::sleep(Duration::from_millis(10));
            }
        });
        LastSeenAlive { last, done }
    }

    /// When the process was last seen running.
    fn last(&self) -> Nanos {
        Nanos::from(self.last.load(Ordering::Relaxed))
    }
}

impl Drop for LastSeenAlive {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
    }
}
