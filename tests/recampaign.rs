//! `ETCD_AWAIT_ELECTION_RECAMPAIGN=on-loss|always` (issue 15, item 1): a wrapper whose leadership
//! ended stays in the election instead of exiting. It revokes, queues again with a fresh lease
//! after a back-off, and starts its command again on its next win:
//!
//! - `on-loss`: after a lost leadership (its key deleted, etcd frozen past the renew deadline); the
//!   command's own exit still ends the wrapper;
//! - `always`: also after the command exited.
//!
//! Each test runs two or three instances on one lock and asserts that their commands never
//! overlap, that the fencing token (the key's create revision) rises with every run, and that a
//! leave signal still ends everything (exit 128+signal while waiting or between campaigns, the
//! command's own code when it was running; the lease revoked either way). The command is
//! [`marks::child_per_run`]: each run is named `NAME-REVISION`, so the log tells runs apart.
//!
//! Run: `cargo test --test recampaign -- --test-threads=2`.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use libc::{SIGINT, SIGTERM};
use support::env::{Timings, MARGIN, STEADY};
use support::free_port;
use support::marks::{self, now_ns, secs, Nanos, OnTerm, Start};
use support::procs::group_alive;
use support::proxy::Proxy;
use support::wrapper::{Scene, Wrapper, SOON};

/// Slack added to the documented bounds when waiting (never when asserting safety).
const SLACK: Duration = Duration::from_secs(3);

/// The candidate `name` with `RECAMPAIGN=recampaign`, running one [`marks::child_per_run`] per
/// leadership; with a status endpoint when `port` is given.
fn candidate(s: &Scene, name: &str, t: Timings, recampaign: &str, port: Option<u16>) -> Wrapper {
    let env = s.env(name, t).set("RECAMPAIGN", recampaign);
    let env = match port {
        Some(port) => env.set("STATUS_ENDPOINT", format!("127.0.0.1:{port}")),
        None => env,
    };
    s.spawn(name, env, marks::child_per_run(s.dir(), name, OnTerm::Trap))
}

/// Waits until `name` has started its `n`-th run (and no more); that run's name and start.
fn await_run(s: &Scene, name: &str, n: usize, timeout: Duration) -> (String, Start) {
    s.wait(&format!("run {n} of {name} starts"), timeout, || {
        s.marks().runs_of(name).len() >= n
    });
    let runs = s.marks().runs_of(name);
    assert_eq!(runs.len(), n, "{name} ran {runs:?}\n{}", s.report());
    let run = runs[n - 1].clone();
    let start = s.start_of(&run).expect("just seen");
    (run, start)
}

/// The end of a re-campaign: b (leading since `b_start`, a queued behind it) leaves; a's second
/// run leads with a revision above both earlier runs', and a leaves cleanly: one command at a
/// time throughout, nothing left in etcd.
fn b_leaves_then_a_runs_again(
    s: &Scene,
    (a, a1_name, a1): (&mut Wrapper, &str, &Start),
    b: &mut Wrapper,
    b_start: &Start,
) {
    s.stop("b", 0);
    assert_eq!(b.code(SOON), 0, "{}", s.report());
    let (a2_name, a2) = await_run(s, "a", 2, SOON);
    assert!(
        a1.revision < b_start.revision && b_start.revision < a2.revision,
        "{}",
        s.report()
    );
    s.stop(&a2_name, 0);
    assert_eq!(a.code(SOON), 0, "{}", s.report());
    s.assert_one_at_a_time(&[a1_name, "b", &a2_name]);
    assert!(s.keys().is_empty(), "keys left:\n{}", s.report());
}

/// Deletes the key `run` leads with, as an operator would, and waits for its command to die: at
/// once (SIGKILL), within a second. Returns a moment just before the key was deleted (etcdctl
/// exits well after the successor has reacted).
fn preempt(s: &Scene, run: &Start) -> Nanos {
    let deleted_at = now_ns();
    let deleted = s.etcd().etcdctl_ok(&["del", &run.key]);
    assert_eq!(deleted.trim(), "1", "{}", s.report());
    s.wait("the preempted command's process group gone", SOON, || {
        !group_alive(run.pid)
    });
    let dead_after = now_ns() - deleted_at;
    assert!(
        dead_after < 1_000_000_000,
        "the command ran on {} after its key was deleted\n{}",
        secs(dead_after),
        s.report()
    );
    deleted_at
}

/// The sample line of `etcd_await_election_recampaigns_total` on the status endpoint at `port`.
fn recampaigns(port: u16) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to /metrics");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
        .expect("send the request");
    let mut page = String::new();
    let _ = stream.read_to_string(&mut page);
    page.lines()
        .find(|line| line.starts_with("etcd_await_election_recampaigns_total{"))
        .unwrap_or_else(|| panic!("no recampaigns_total in:\n{page}"))
        .to_string()
}

#[test]
fn a_leader_whose_key_is_deleted_campaigns_again_and_runs_its_command_on_its_next_win() {
    let t = STEADY;
    let s = Scene::new();
    let port = free_port();
    let mut a = candidate(&s, "a", t, "on-loss", Some(port));
    let (_, a1) = await_run(&s, "a", 1, SOON);
    let mut b = candidate(&s, "b", t, "on-loss", None);
    s.await_keys(2, SOON);
    assert_eq!(
        recampaigns(port),
        format!(
            "etcd_await_election_recampaigns_total{{lock=\"{}\"}} 0",
            s.lock()
        )
    );

    // a's key deleted: its command is killed, b leads, a stays and queues again behind b.
    let deleted_at = preempt(&s, &a1);
    let (_, b1) = await_run(&s, "b", 1, SOON);
    assert!(b1.at > deleted_at, "{}", s.report());
    s.wait("a queues again behind b", SOON, || {
        s.identities() == ["b", "a"]
    });
    assert!(
        a.running(),
        "a exited instead of campaigning again\n{}",
        s.report()
    );
    assert!(a.stderr().contains("campaigning again"), "{}", s.report());
    assert_eq!(
        recampaigns(port),
        format!(
            "etcd_await_election_recampaigns_total{{lock=\"{}\"}} 1",
            s.lock()
        )
    );

    // b's key deleted in turn: a leads again with a new key, and a higher fencing token.
    let deleted_at = preempt(&s, &b1);
    let (a2_name, a2) = await_run(&s, "a", 2, SOON);
    assert!(a2.at > deleted_at, "{}", s.report());
    assert_ne!(a2.key, a1.key);
    assert!(
        a1.revision < b1.revision && b1.revision < a2.revision,
        "fencing tokens {} {} {} do not rise\n{}",
        a1.revision,
        b1.revision,
        a2.revision,
        s.report()
    );
    s.wait("b queues again behind a", SOON, || {
        s.identities() == ["a", "b"]
    });
    assert!(b.running(), "{}", s.report());

    // With on-loss, the command's own exit still ends the wrapper, with its code.
    s.stop(&a2_name, 4);
    assert_eq!(a.code(SOON), 4, "{}", s.report());
    let a2_end = s.end_of(&a2_name).expect("a2 ended");
    let (b2_name, b2) = await_run(&s, "b", 2, SOON);
    assert!(b2.at > a2_end, "{}", s.report());
    // A signal while the command runs is forwarded; the wrapper leaves with the command's code.
    b.signal(SIGTERM);
    assert_eq!(b.code(SOON), 0, "{}", s.report());
    assert!(s.at("term", &b2_name).is_some(), "{}", s.report());
    assert!(s.keys().is_empty(), "keys left:\n{}", s.report());
}

#[test]
fn a_leader_cut_off_by_a_frozen_etcd_campaigns_again_and_runs_after_the_waiter() {
    // b's lease must outlive the freeze (about RENEW_DEADLINE): 5 s against a waiter's renewal
    // every 900 ms.
    let t = MARGIN;
    let s = Scene::new();
    let mut a = candidate(&s, "a", t, "on-loss", None);
    let (a1_name, a1) = await_run(&s, "a", 1, SOON);
    let mut b = s.candidate("b", t);
    s.await_queued(&b, SOON);

    let before_freeze = now_ns();
    s.etcd().freeze();
    let end = s.await_end(&a1_name, t.lease() + SLACK);
    assert!(
        end < before_freeze + t.lease_ns(),
        "a's command ended {} after the freeze, not before its lease could expire\n{}",
        secs(end - before_freeze),
        s.report()
    );
    assert!(s.at("term", &a1_name).is_some(), "{}", s.report());
    s.wait("a campaigns again", SOON, || {
        a.stderr().contains("campaigning again")
    });
    assert!(
        a.running(),
        "a exited instead of campaigning again\n{}",
        s.report()
    );
    s.etcd().resume();

    // a's old lease is revoked or expires; b, next in the queue, leads; a queues behind it.
    let b_start = s.await_start("b", t.lease() + SLACK);
    s.wait("a queues again behind b", SOON, || {
        s.identities() == ["b", "a"]
    });
    assert!(s.start_of(&a1_name).is_some() && s.marks().runs_of("a").len() == 1);
    b_leaves_then_a_runs_again(&s, (&mut a, &a1_name, &a1), &mut b, &b_start);
}

#[test]
fn a_leader_partitioned_from_etcd_campaigns_again_with_a_fresh_key_behind_the_waiter() {
    // The same loss as above, made deterministic: a's revoke never reaches etcd (the proxy drops
    // it), so a's old key and lease are still there when a campaigns again, and live on past the
    // kill point ((2 s + 10 s) / 2), when an earlier run's lease counts as abandoned. a gave that
    // lease up itself: it must queue with a fresh key behind b, not take its old key at the head
    // back (that would also hand the next run the same fencing token).
    let t = Timings {
        lease_s: 10,
        renew_ms: 2000,
        retry_ms: 500,
    };
    let s = Scene::new();
    let proxy = Proxy::start(&s.etcd().endpoint_hostport());
    let env = s
        .env("a", t)
        .set("ENDPOINTS", proxy.url())
        .set("RECAMPAIGN", "on-loss");
    let mut a = s.spawn("a", env, marks::child_per_run(s.dir(), "a", OnTerm::Trap));
    let (a1_name, a1) = await_run(&s, "a", 1, SOON);
    let mut b = s.candidate("b", t);
    s.await_queued(&b, SOON);

    proxy.freeze();
    s.await_end(&a1_name, t.lease() + SLACK);
    s.wait("a campaigns again", SOON, || {
        a.stderr().contains("campaigning again")
    });
    assert!(
        a.stderr().contains("cannot revoke the lease"),
        "the revoke got through (test broken)\n{}",
        s.report()
    );
    // The held revoke is dropped; a reaches etcd again while its old lease is still alive.
    proxy.close_all();
    proxy.thaw();

    let b_start = s.await_start("b", t.lease() + SLACK);
    s.wait("a queues again behind b", SOON, || {
        s.identities() == ["b", "a"]
    });
    assert_eq!(s.marks().runs_of("a").len(), 1, "{}", s.report());
    b_leaves_then_a_runs_again(&s, (&mut a, &a1_name, &a1), &mut b, &b_start);
    proxy.close_all();
}

#[test]
fn with_always_three_instances_take_turns_after_every_command_exit_and_never_overlap() {
    let t = STEADY;
    let s = Scene::new();
    let port = free_port();
    let mut a = candidate(&s, "a", t, "always", Some(port));
    await_run(&s, "a", 1, SOON);
    let mut b = candidate(&s, "b", t, "always", None);
    s.await_keys(2, SOON);
    let mut c = candidate(&s, "c", t, "always", None);
    s.await_keys(3, SOON);

    // Each command exits by itself (0 or not): its wrapper queues again at the back, the next one
    // leads. Two rounds: a b c a b c, then a leads a third time.
    let mut order = Vec::new();
    let mut revisions = Vec::new();
    for (i, name) in ["a", "b", "c", "a", "b", "c"].into_iter().enumerate() {
        let (run, start) = await_run(&s, name, i / 3 + 1, SOON);
        revisions.push(start.revision);
        s.stop(&run, if i % 2 == 0 { 0 } else { 3 });
        order.push(run);
    }
    let (a3, _) = await_run(&s, "a", 3, SOON);
    let order: Vec<&str> = order.iter().map(String::as_str).collect();
    s.assert_one_at_a_time(&order);
    s.assert_no_overlap();
    assert!(
        revisions.windows(2).all(|w| w[0] < w[1]),
        "fencing tokens {revisions:?} do not rise\n{}",
        s.report()
    );
    assert!(a.running() && b.running() && c.running(), "{}", s.report());
    assert_eq!(
        recampaigns(port),
        format!(
            "etcd_await_election_recampaigns_total{{lock=\"{}\"}} 2",
            s.lock()
        )
    );

    // Leave signals still end everything: a waiter leaves at once with 128+signal, its key gone.
    s.wait("b and c queued behind a", SOON, || {
        s.identities() == ["a", "b", "c"]
    });
    c.signal(SIGTERM);
    assert_eq!(c.code(SOON), 128 + SIGTERM, "{}", s.report());
    b.signal(SIGINT);
    assert_eq!(b.code(SOON), 128 + SIGINT, "{}", s.report());
    // With a lease of 15 s, only a revoke removes the keys this soon.
    assert_eq!(s.identities(), ["a"], "{}", s.report());
    // The leader's command gets the signal and exits; the wrapper leaves with its code instead of
    // campaigning again.
    a.signal(SIGTERM);
    assert_eq!(a.code(SOON), 0, "{}", s.report());
    assert!(s.at("term", &a3).is_some(), "{}", s.report());
    assert!(s.keys().is_empty(), "keys left:\n{}", s.report());
    assert_eq!(s.marks().runs_of("a").len(), 3, "{}", s.report());
}

#[test]
fn a_leave_signal_between_two_campaigns_ends_the_wrapper_with_its_lease_revoked() {
    // The pause between campaigns is RETRY_PERIOD: 3 s, time enough to signal within it.
    let t = Timings {
        lease_s: 12,
        renew_ms: 8000,
        retry_ms: 3000,
    };
    let s = Scene::new();
    let mut a = candidate(&s, "a", t, "always", None);
    let (a1, _) = await_run(&s, "a", 1, SOON);
    s.stop(&a1, 0);
    s.wait("a pauses before campaigning again", SOON, || {
        a.stderr().contains("campaigning again")
    });
    a.signal(SIGTERM);
    assert_eq!(a.code(SOON), 128 + SIGTERM, "{}", s.report());
    assert!(
        a.stderr().contains("signal received between campaigns"),
        "{}",
        s.report()
    );
    assert_eq!(s.marks().runs_of("a"), [a1], "{}", s.report());
    assert!(s.keys().is_empty(), "keys left:\n{}", s.report());
}
