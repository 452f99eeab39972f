//! `etcd-await-election leader [--json] [--watch]` (issue 15, item 3): asks etcd who leads
//! `LOCK_NAME` and prints the leader's identity, key and create revision (exit 0), or that nobody
//! leads (exit 3); `--watch` prints one line per change of leader until interrupted. It reads the
//! same variables as the wrapper (IDENTITY may be left out) and runs against the same real etcd.
//!
//! Run: `cargo test --test leader -- --test-threads=2`.

mod support;

use std::os::unix::process::ExitStatusExt;

use libc::SIGTERM;
use serde_json::Value;
use support::env::{Env, STEADY};
use support::marks::Start;
use support::wrapper::{Scene, Wrapper, SOON};

/// The variables `leader` needs: the scene's lock and etcd, no identity.
fn query_env(s: &Scene) -> Env {
    Env::default()
        .set("LOCK_NAME", s.lock())
        .set("ENDPOINTS", s.url())
        .set("RETRY_PERIOD", "500ms")
}

/// Runs `leader ARGS` to its end; its exit code and stdout.
fn leader(s: &Scene, name: &str, args: &[&str]) -> (i32, String) {
    let args = std::iter::once("leader").chain(args.iter().copied());
    let mut query = s.spawn(name, query_env(s), args.map(Into::into).collect());
    let code = query.code(SOON);
    (code, query.stdout())
}

/// The text line `leader` prints for the run `start` of `identity`.
fn line_of(identity: &str, start: &Start) -> String {
    format!(
        "identity={identity} key={} revision={}",
        start.key, start.revision
    )
}

/// The JSON line `leader --json` prints for the run `start` of `identity`.
fn json_of(identity: &str, start: &Start) -> Value {
    serde_json::json!({ "identity": identity, "key": start.key, "revision": start.revision })
}

/// The complete lines a running `leader --watch` printed so far.
fn lines(watcher: &Wrapper) -> Vec<String> {
    let out = watcher.stdout();
    out.split_inclusive('\n')
        .filter(|l| l.ends_with('\n'))
        .map(|l| l.trim_end().to_string())
        .collect()
}

#[test]
fn leader_prints_who_leads_as_text_or_json_and_exits_3_when_nobody_does() {
    let s = Scene::new();
    assert_eq!(leader(&s, "q0", &[]), (3, "no leader\n".to_string()));
    let (code, out) = leader(&s, "q1", &["--json"]);
    assert_eq!(code, 3);
    let nobody: Value = serde_json::from_str(&out).expect("one JSON line");
    assert_eq!(
        nobody,
        serde_json::json!({ "identity": null, "key": null, "revision": null })
    );

    let mut a = s.candidate("a", STEADY);
    let a_start = s.await_start("a", SOON);
    let b = s.candidate("b", STEADY);
    s.await_queued(&b, SOON);
    // The leader, not a waiter, and exactly one line.
    assert_eq!(
        leader(&s, "q2", &[]),
        (0, format!("{}\n", line_of("a", &a_start)))
    );
    let (code, out) = leader(&s, "q3", &["--json"]);
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 1, "{out}");
    let shown: Value = serde_json::from_str(&out).expect("one JSON line");
    assert_eq!(shown, json_of("a", &a_start));
    assert_eq!(a_start.key, s.keys()[0].key);

    s.stop("a", 0);
    assert_eq!(a.code(SOON), 0, "{}", s.report());
    let b_start = s.await_start("b", SOON);
    let shown: Value = serde_json::from_str(&leader(&s, "q4", &["--json"]).1).expect("JSON");
    assert_eq!(shown, json_of("b", &b_start));
}

#[test]
fn leader_exits_69_naming_the_endpoint_when_etcd_cannot_be_reached() {
    let s = Scene::without_etcd();
    let mut query = s.spawn("q", query_env(&s), vec!["leader".into()]);
    assert_eq!(query.code(SOON), 69, "{}", query.stderr());
    assert!(query.stdout().is_empty(), "{}", query.stdout());
    assert!(
        query.stderr().contains("leader:") && query.stderr().contains("127.0.0.1:9"),
        "{}",
        query.stderr()
    );
}

#[test]
fn leader_watch_prints_one_line_per_change_of_leader_until_interrupted() {
    let s = Scene::new();
    let mut a = s.candidate("a", STEADY);
    let a_start = s.await_start("a", SOON);
    let mut text = s.spawn(
        "watch",
        query_env(&s),
        vec!["leader".into(), "--watch".into()],
    );
    let mut json = s.spawn(
        "watch-json",
        query_env(&s),
        vec!["leader".into(), "--json".into(), "--watch".into()],
    );
    s.wait("both watchers print the leader", SOON, || {
        lines(&text).len() == 1 && lines(&json).len() == 1
    });

    // Waiters joining change the keys under the lock, not the leader: no line.
    let mut b = s.candidate("b", STEADY);
    s.await_queued(&b, SOON);
    let mut c = s.candidate("c", STEADY);
    s.await_queued(&c, SOON);
    s.stop("a", 0);
    assert_eq!(a.code(SOON), 0, "{}", s.report());
    let b_start = s.await_start("b", SOON);
    s.stop("b", 0);
    assert_eq!(b.code(SOON), 0, "{}", s.report());
    let c_start = s.await_start("c", SOON);
    s.stop("c", 0);
    assert_eq!(c.code(SOON), 0, "{}", s.report());

    let want = [
        line_of("a", &a_start),
        line_of("b", &b_start),
        line_of("c", &c_start),
        "no leader".to_string(),
    ];
    s.wait("the watcher prints every change", SOON, || {
        lines(&text).len() >= want.len()
    });
    assert_eq!(lines(&text), want, "{}", s.report());
    let want_json = [
        json_of("a", &a_start),
        json_of("b", &b_start),
        json_of("c", &c_start),
        serde_json::json!({ "identity": null, "key": null, "revision": null }),
    ];
    s.wait("the JSON watcher prints every change", SOON, || {
        lines(&json).len() >= want_json.len()
    });
    let shown: Vec<Value> = lines(&json)
        .iter()
        .map(|line| serde_json::from_str(line).expect("JSON lines"))
        .collect();
    assert_eq!(shown, want_json, "{}", s.report());

    // Until interrupted.
    assert!(text.running() && json.running());
    for watcher in [&mut text, &mut json] {
        watcher.signal(SIGTERM);
        let status = watcher.wait(SOON);
        assert!(
            status.signal() == Some(SIGTERM) || status.code() == Some(128 + SIGTERM),
            "{} ended with {status}",
            watcher.name()
        );
    }
}
