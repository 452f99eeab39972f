//! `ETCD_AWAIT_ELECTION_HOLDERS=N` (issue 15, item 4): up to N commands run at once under one
//! lock, those of the N candidates with the lowest create revisions (consul lock `-n`). A waiter
//! must watch the N keys just below its own, not one: a leader that leaves below a key it does not
//! watch would otherwise be missed. The proof is [`every_order_of_three_leaders_leaving_promotes_the_next_waiter_each_time`]:
//! three leaders leave in each of the 3! orders, and after every departure the waiter with the
//! lowest revision leads — the N lowest keys are always exactly the running commands.
//!
//! With N = 1 nothing changes: one command at a time, in arrival order.
//!
//! Run: `cargo test --test holders -- --test-threads=2`.

mod support;

use std::collections::BTreeSet;

use libc::SIGTERM;
use support::env::{Timings, STEADY};
use support::marks::OnTerm;
use support::wrapper::{Scene, Wrapper, SOON};

/// The candidate `name` (also its identity) on `lock` with `HOLDERS=holders`.
fn holder(s: &Scene, lock: &str, name: &str, holders: u32, t: Timings) -> Wrapper {
    let env = s
        .env(name, t)
        .set("LOCK_NAME", lock)
        .set("HOLDERS", holders.to_string());
    s.spawn(name, env, s.child(name, OnTerm::Trap))
}

/// Starts the candidates `names` on `lock` one after the other, each once its key exists, so that
/// their create revisions follow the order of `names`.
fn join_in_order(s: &Scene, lock: &str, names: &[String], holders: u32) -> Vec<Wrapper> {
    let prefix = format!("{lock}/");
    names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let wrapper = holder(s, lock, name, holders, STEADY);
            s.wait(&format!("{name} has a key"), SOON, || {
                s.etcd().keys_under(&prefix).len() == i + 1
            });
            wrapper
        })
        .collect()
}

/// The children that started and have not ended, by name.
fn running(s: &Scene) -> BTreeSet<String> {
    let marks = s.marks();
    marks
        .0
        .iter()
        .filter(|m| m.kind == "start" && marks.end_of(&m.name).is_none())
        .map(|m| m.name.clone())
        .collect()
}

/// The identities of the `n` lowest keys on `lock`.
fn lowest(s: &Scene, lock: &str, n: usize) -> BTreeSet<String> {
    let keys = s.etcd().keys_under(&format!("{lock}/"));
    keys.into_iter().take(n).map(|kv| kv.value).collect()
}

/// Waits until exactly the commands of `want` run and they are the `n` lowest keys' identities.
fn await_running(s: &Scene, lock: &str, n: usize, want: &[&String]) {
    let want: BTreeSet<String> = want.iter().map(|name| name.to_string()).collect();
    s.wait(&format!("exactly {want:?} run"), SOON, || {
        running(s) == want
    });
    assert_eq!(
        lowest(s, lock, n),
        want,
        "the running commands are not those of the {n} lowest keys\n{}",
        s.report()
    );
}

#[test]
fn with_two_holders_the_two_oldest_lead_and_each_departure_promotes_the_oldest_waiter() {
    let s = Scene::new();
    let lock = s.lock().to_string();
    let names: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
    let mut w = join_in_order(&s, &lock, &names, 2);
    await_running(&s, &lock, 2, &[&names[0], &names[1]]);
    s.await_queued(&w[2], SOON);
    s.await_queued(&w[3], SOON);
    assert_eq!(running(&s).len(), 2, "{}", s.report());

    // The second leader leaves first: the oldest waiter, c, takes its place beside a.
    s.stop("b", 0);
    assert_eq!(w[1].code(SOON), 0, "{}", s.report());
    await_running(&s, &lock, 2, &[&names[0], &names[2]]);
    assert!(s.start_of("c").expect("c").at > s.end_of("b").expect("b"));
    s.stop("a", 0);
    assert_eq!(w[0].code(SOON), 0, "{}", s.report());
    await_running(&s, &lock, 2, &[&names[2], &names[3]]);
    assert!(s.start_of("d").expect("d").at > s.end_of("a").expect("a"));
    for (i, name) in [(2, "c"), (3, "d")] {
        s.stop(name, 0);
        assert_eq!(w[i].code(SOON), 0, "{}", s.report());
    }
    assert_eq!(s.marks().most_at_once(), 2, "{}", s.report());
    assert!(s.keys().is_empty(), "keys left:\n{}", s.report());
}

#[test]
fn every_order_of_three_leaders_leaving_promotes_the_next_waiter_each_time() {
    const N: usize = 3;
    let orders = [
        [0, 1, 2],
        [0, 2, 1],
        [1, 0, 2],
        [1, 2, 0],
        [2, 0, 1],
        [2, 1, 0],
    ];
    let s = Scene::new();
    for (o, order) in orders.iter().enumerate() {
        // Three leaders and three waiters on a lock of this order's own.
        let lock = format!("{}-order{o}", s.lock());
        let names: Vec<String> = (1..=2 * N).map(|k| format!("o{o}k{k}")).collect();
        let mut w = join_in_order(&s, &lock, &names, N as u32);
        let mut leaders: Vec<&String> = names[..N].iter().collect();
        await_running(&s, &lock, N, &leaders);
        for waiter in &w[N..] {
            s.await_queued(waiter, SOON);
        }
        for (step, &gone) in order.iter().enumerate() {
            // A leader leaves, by its command's exit or by a signal to its wrapper.
            if step % 2 == 0 {
                s.stop(&names[gone], 0);
            } else {
                w[gone].signal(SIGTERM);
            }
            assert_eq!(w[gone].code(SOON), 0, "order {order:?}\n{}", s.report());
            leaders.retain(|name| **name != names[gone]);
            let next = &names[N + step];
            leaders.push(next);
            await_running(&s, &lock, N, &leaders);
            assert!(
                s.start_of(next).expect("started").at > s.end_of(&names[gone]).expect("ended"),
                "order {order:?}\n{}",
                s.report()
            );
        }
        for (i, name) in names.iter().enumerate().skip(N) {
            s.stop(name, 0);
            assert_eq!(w[i].code(SOON), 0, "order {order:?}\n{}", s.report());
        }
        assert!(s.etcd().keys_under(&format!("{lock}/")).is_empty());
    }
    // The orders ran one after the other: never more than N commands at once.
    assert_eq!(s.marks().most_at_once(), N, "{}", s.report());
}

#[test]
fn one_holder_is_one_command_at_a_time_in_arrival_order() {
    let s = Scene::new();
    let lock = s.lock().to_string();
    let names: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
    let mut w = join_in_order(&s, &lock, &names, 1);
    await_running(&s, &lock, 1, &[&names[0]]);
    for (i, name) in names.iter().enumerate() {
        s.await_start(name, SOON);
        assert_eq!(running(&s).len(), 1, "{}", s.report());
        s.stop(name, 0);
        assert_eq!(w[i].code(SOON), 0, "{}", s.report());
    }
    s.assert_one_at_a_time(&["a", "b", "c"]);
    assert_eq!(s.marks().most_at_once(), 1);
}
