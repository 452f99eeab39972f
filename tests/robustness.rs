//! Issue 11: bounded threads and memory under churn and hostile answers, and a clear word for
//! every mistake.
//!
//! - Hostile answers: a fake gateway (`tests/support/fake_gateway.rs`) answering 5xx, garbage,
//!   cut-off bodies, transactions without their responses, lines and bodies at and over the
//!   client's caps, and watches that fail while unary calls work; and mutated or random bytes fed
//!   to the gateway's JSON decoding and to the watch and keepalive streams. The client turns each
//!   into an error naming endpoint and operation, and an instance retries, logs once per change
//!   of state, stays small, and never starts its command on an answer that proves nothing. A real
//!   etcd never sends these, hence the fake.
//! - Against real etcd: a waiter's key deleted in a tight loop, permanent TLS mistakes at start,
//!   TLS files that are devices or FIFOs, a full database (NOSPACE), and auth tokens that expire
//!   while nothing happens. Request counts come from etcd's own `/metrics`
//!   ([`support::Etcd::rpcs_started`]); threads and memory from `/proc/PID/status`.
//!
//! Run: `cargo test --test robustness -- --test-threads=2`.

mod support;

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use base64::Engine;
use etcd_await_election::etcd::{
    Cancel, Client, ClientConfig, Compare, CompareResult, DeleteResponse, Header, KeyValue,
    LeaseGrant, LeaseTtl, Op, OpResponse, PutResponse, RangeRequest, RangeResponse, TxnRequest,
    TxnResponse, WatchEvent, WatchRequest,
};
use support::env::{var, Timings, FAST};
use support::fake_gateway::{Answer, FakeGateway, Reply, Script};
use support::marks::OnTerm;
use support::procs::status_field;
use support::wrapper::{Scene, Wrapper, SOON};
use support::{Etcd, Options};

// ---- the client and an instance facing a broken gateway ----

/// Starts an instance in front of each fake (`<prefix>0`, `<prefix>1`, …), with timings `t`.
fn facing<'a>(
    s: &Scene,
    prefix: &str,
    t: Timings,
    fakes: impl Iterator<Item = &'a FakeGateway>,
) -> Vec<Wrapper> {
    fakes
        .enumerate()
        .map(|(i, fake)| {
            let name = format!("{prefix}{i}");
            let env = s.env(&name, t).set("ENDPOINTS", fake.url.as_str());
            s.spawn(&name, env, s.child(&name, OnTerm::Trap))
        })
        .collect()
}

/// Every client operation, named as the client names it in errors.
#[allow(clippy::type_complexity)]
fn client_ops() -> Vec<(&'static str, Box<dyn Fn(&Client) -> Result<(), String>>)> {
    fn done<T>(r: Result<T, etcd_await_election::etcd::Error>) -> Result<(), String> {
        r.map(|_| ()).map_err(|e| e.to_string())
    }
    vec![
        ("lease/grant", Box::new(|c: &Client| done(c.lease_grant(5)))),
        (
            "lease/keepalive",
            Box::new(|c: &Client| done(c.lease_keepalive(7))),
        ),
        (
            "lease/revoke",
            Box::new(|c: &Client| done(c.lease_revoke(7))),
        ),
        (
            "lease/timetolive",
            Box::new(|c: &Client| done(c.lease_time_to_live(7))),
        ),
        (
            "kv/range",
            Box::new(|c: &Client| done(c.range(&RangeRequest::prefix("l/")))),
        ),
        ("kv/put", Box::new(|c: &Client| done(c.put(b"k", b"v", 7)))),
        (
            "kv/deleterange",
            Box::new(|c: &Client| done(c.delete_range(b"k", b""))),
        ),
        (
            "kv/txn",
            Box::new(|c: &Client| {
                done(c.txn(&TxnRequest {
                    compare: vec![Compare::create_revision("k", CompareResult::Equal, 0)],
                    success: vec![Op::Range(RangeRequest::key("k"))],
                    failure: vec![],
                }))
            }),
        ),
        ("kv/compaction", Box::new(|c: &Client| done(c.compact(3)))),
        (
            "watch",
            Box::new(|c: &Client| done(c.watch(&WatchRequest::key("k", 2), &Cancel::default()))),
        ),
        ("health", Box::new(|c: &Client| done(c.health()))),
    ]
}

#[test]
fn the_client_turns_5xx_and_garbage_into_errors_naming_endpoint_and_operation() {
    for answer in [
        Answer::Unavailable,
        Answer::Garbage,
        Answer::TruncatedChunk,
        Answer::ShortBody,
        Answer::NotHttp,
    ] {
        let fake = FakeGateway::start(answer.clone());
        let mut config = ClientConfig::new(vec![fake.url.clone()]);
        config.request_timeout = Duration::from_secs(2);
        config.watch_idle_timeout = Duration::from_secs(2);
        let client = Client::new(config).expect("client");
        for (op, call) in client_ops() {
            let started = Instant::now();
            let result = call(&client);
            let took = started.elapsed();
            let error = match result {
                Err(error) => error,
                Ok(()) => panic!("{answer:?}: {op} succeeded"),
            };
            assert!(
                error.contains(&fake.url) && error.contains(op),
                "{answer:?}: {op}: the error names neither endpoint nor operation: {error}"
            );
            assert!(
                took < Duration::from_secs(5),
                "{answer:?}: {op} took {took:?}"
            );
        }
        assert!(
            fake.requests().len() >= client_ops().len(),
            "{:?}",
            fake.requests()
        );
    }
}

#[test]
fn an_instance_facing_5xx_or_garbage_retries_logs_and_never_starts_the_child() {
    let s = Scene::without_etcd();
    let answers = [
        Answer::Unavailable,
        Answer::Garbage,
        Answer::TruncatedChunk,
        Answer::NotHttp,
    ];
    let fakes: Vec<FakeGateway> = answers.iter().cloned().map(FakeGateway::start).collect();
    let mut instances = facing(&s, "f", FAST, fakes.iter());
    for ((answer, fake), instance) in answers.iter().zip(&fakes).zip(&mut instances) {
        // Retried every RETRY_PERIOD (500 ms): a few requests arrive within seconds.
        s.wait(
            &format!("{answer:?}: three requests at the fake"),
            Duration::from_secs(10),
            || fake.requests().len() >= 3,
        );
        let log = instance.stderr();
        assert!(!log.contains("panicked"), "{answer:?}\n{}", s.report());
        let context = log.lines().any(|line| {
            line.contains(&fake.url)
                && ["kv/range", "lease/grant", "kv/txn"]
                    .iter()
                    .any(|op| line.contains(op))
        });
        assert!(
            context,
            "{answer:?}: no log line names the endpoint and the operation\n{}",
            s.report()
        );
        assert!(instance.running(), "{answer:?}\n{}", s.report());
        assert!(
            s.start_of(instance.name()).is_none(),
            "{answer:?}\n{}",
            s.report()
        );
    }
    for instance in &mut instances {
        instance.signal(libc::SIGTERM);
    }
    for (answer, instance) in answers.iter().zip(&mut instances) {
        assert_eq!(
            instance.code(Duration::from_secs(5)),
            143,
            "{answer:?}\n{}",
            s.report()
        );
        assert!(!instance.stderr().contains("panicked"), "{}", s.report());
        assert!(s.start_of(instance.name()).is_none(), "{}", s.report());
    }
}

#[test]
fn an_instance_never_leads_on_answers_that_lack_what_the_look_must_prove() {
    // A server that answers in etcd's format but leaves out what an election decision rests on:
    // its transactions "succeed" without the responses of their operations. etcd always returns
    // one response per operation; an answer without them proves nothing about the queue.
    let fake = FakeGateway::start(Answer::ByPath(vec![
        ("/v3/kv/range", r#"{"header":{"revision":"5"}}"#),
        (
            "/v3/lease/grant",
            r#"{"header":{"revision":"5"},"ID":"7","TTL":"3"}"#,
        ),
        (
            "/v3/kv/txn",
            r#"{"header":{"revision":"6"},"succeeded":true}"#,
        ),
        (
            "/v3/lease/keepalive",
            r#"{"result":{"header":{"revision":"6"},"ID":"7","TTL":"3"}}"#,
        ),
        (
            "/v3/watch",
            "{\"result\":{\"header\":{\"revision\":\"6\"},\"created\":true}}\n",
        ),
        (
            "/v3/lease/timetolive",
            r#"{"header":{"revision":"6"},"ID":"7","TTL":"-1"}"#,
        ),
    ]));
    let s = Scene::without_etcd();
    let env = s.env("i", FAST).set("ENDPOINTS", fake.url.as_str());
    let mut i = s.spawn("i", env, s.child("i", OnTerm::Trap));
    s.wait("a look at the fake", Duration::from_secs(10), || {
        fake.requests()
            .iter()
            .filter(|r| r.contains("/v3/kv/txn"))
            .count()
            >= 2
    });
    // Asserting that nothing happens: a look that proves nothing must not make us lead. The
    // wrapper would start the child within milliseconds of such a look; watch for two seconds.
    thread::sleep(Duration::from_secs(2));
    let started = s.start_of("i").is_some() || i.stderr().contains("child started");
    assert!(
        !started,
        "the child started on a transaction answer without responses\n{}",
        s.report()
    );
    assert!(!i.stderr().contains("panicked"), "{}", s.report());
    i.signal(libc::SIGTERM);
    assert_eq!(i.code(Duration::from_secs(5)), 143, "{}", s.report());
}

// ---- no panic in the gateway's JSON decoding ----

/// xorshift64*: a small deterministic generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Answers of etcd 3.4's gateway, captured from a live member.
const REAL_ANSWERS: &[&str] = &[
    r#"{"header":{"cluster_id":"15118495548433857066","member_id":"13668033151171901709","revision":"1","raft_term":"2"},"ID":"4111120160589550341","TTL":"30"}"#,
    r#"{"header":{"cluster_id":"15118495548433857066","member_id":"13668033151171901709","revision":"2","raft_term":"2"}}"#,
    r#"{"header":{"cluster_id":"15118495548433857066","member_id":"13668033151171901709","revision":"2","raft_term":"2"},"kvs":[{"key":"bG9jay9h","create_revision":"2","mod_revision":"2","version":"1","value":"aWQtYQ==","lease":"4111120160589550341"}],"count":"1"}"#,
    r#"{"header":{"cluster_id":"15118495548433857066","member_id":"13668033151171901709","revision":"3","raft_term":"2"},"succeeded":true,"responses":[{"response_range":{"header":{"revision":"2"},"kvs":[{"key":"bG9jay9h","create_revision":"2","mod_revision":"2","version":"1","value":"aWQtYQ==","lease":"4111120160589550341"}],"count":"1"}},{"response_put":{"header":{"revision":"3"}}},{"response_delete_range":{"header":{"revision":"3"}}}]}"#,
    r#"{"header":{"cluster_id":"15118495548433857066","member_id":"13668033151171901709","revision":"3","raft_term":"2"},"responses":[{"response_range":{"header":{"revision":"3"},"kvs":[{"key":"bG9jay9h","create_revision":"2","mod_revision":"2","version":"1","value":"aWQtYQ==","lease":"4111120160589550341"}],"count":"1"}}]}"#,
    r#"{"result":{"header":{"cluster_id":"15118495548433857066","member_id":"13668033151171901709","revision":"3","raft_term":"2"},"ID":"4111120160589550341","TTL":"30"}}"#,
    r#"{"result":{"header":{"cluster_id":"15118495548433857066","member_id":"13668033151171901709","revision":"3","raft_term":"2"},"ID":"12345"}}"#,
    r#"{"header":{"cluster_id":"15118495548433857066","member_id":"13668033151171901709","revision":"3","raft_term":"2"},"ID":"4111120160589550341","TTL":"29","grantedTTL":"30"}"#,
    r#"{"header":{"cluster_id":"15118495548433857066","member_id":"13668033151171901709","revision":"4","raft_term":"2"},"deleted":"1"}"#,
    r#"{"error":"etcdserver: requested lease not found","message":"etcdserver: requested lease not found","code":5}"#,
    r#"{"result":{"header":{"cluster_id":"15118495548433857066","member_id":"13668033151171901709","revision":"4","raft_term":"2"},"created":true}}"#,
    r#"{"result":{"header":{"cluster_id":"15118495548433857066","member_id":"13668033151171901709","raft_term":"2"},"canceled":true,"compact_revision":"3"}}"#,
    r#"{"result":{"header":{"cluster_id":"15118495548433857066","member_id":"13668033151171901709","revision":"5","raft_term":"2"},"events":[{"type":"DELETE","kv":{"key":"bG9jay9h","mod_revision":"5"}}]}}"#,
    r#"{"health":"true"}"#,
];

/// Pieces that mutations splice in: boundary numbers, odd JSON, wrong types.
const SPLICES: &[&str] = &[
    "99999999999999999999",
    "-9223372036854775808",
    "18446744073709551615",
    "-1",
    "1e400",
    "-0",
    "1.5",
    "\"\"",
    "null",
    "true",
    "[]",
    "{}",
    "\"\\u0000\"",
    "\"\\ud800\"",
    "\"=\"",
    "\"////\"",
    "\"a===\"",
    "\"DELETE\"",
    "\"PUT\"",
    "\"ID\"",
    "\"TTL\"",
    "{\"a\":",
    "]]]]",
    "\"9223372036854775808\"",
    "\"0x10\"",
    "\" 1\"",
    "NaN",
    "Infinity",
];

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut bytes = seed.to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(bytes.len() + 1);
        match rng.below(7) {
            0 if !bytes.is_empty() => {
                let i = rng.below(bytes.len());
                bytes[i] ^= 1 << rng.below(8);
            }
            1 if !bytes.is_empty() => {
                let i = rng.below(bytes.len());
                bytes[i] = rng.next() as u8;
            }
            2 => {
                let end = (at + rng.below(16)).min(bytes.len());
                bytes.drain(at..end);
            }
            3 => bytes.truncate(at),
            4 => {
                let splice = SPLICES[rng.below(SPLICES.len())].as_bytes();
                bytes.splice(at..at, splice.iter().copied());
            }
            5 => {
                // Replace a JSON string value or number by a splice: find the next ':' after `at`.
                if let Some(colon) = bytes[at..].iter().position(|&b| b == b':') {
                    let from = at + colon + 1;
                    let to = bytes[from..]
                        .iter()
                        .position(|&b| b == b',' || b == b'}')
                        .map_or(bytes.len(), |p| from + p);
                    let splice = SPLICES[rng.below(SPLICES.len())].as_bytes();
                    bytes.splice(from..to, splice.iter().copied());
                }
            }
            _ => {
                let copy = bytes[at..].to_vec();
                bytes.extend_from_slice(&copy[..copy.len().min(64)]);
            }
        }
    }
    bytes
}

/// Decodes `bytes` as every public wire type; only a panic fails.
fn decode_all(bytes: &[u8]) {
    let _ = serde_json::from_slice::<RangeResponse>(bytes);
    let _ = serde_json::from_slice::<TxnResponse>(bytes);
    let _ = serde_json::from_slice::<LeaseGrant>(bytes);
    let _ = serde_json::from_slice::<LeaseTtl>(bytes);
    let _ = serde_json::from_slice::<PutResponse>(bytes);
    let _ = serde_json::from_slice::<DeleteResponse>(bytes);
    let _ = serde_json::from_slice::<OpResponse>(bytes);
    let _ = serde_json::from_slice::<Header>(bytes);
    let _ = serde_json::from_slice::<KeyValue>(bytes);
    let _ = serde_json::from_slice::<WatchEvent>(bytes);
}

#[test]
fn gateway_json_decoding_never_panics() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for seed in REAL_ANSWERS {
        decode_all(seed.as_bytes());
    }
    for round in 0..4000 {
        let input = if round % 4 == 0 {
            (0..rng.below(200)).map(|_| rng.next() as u8).collect()
        } else {
            let seed = REAL_ANSWERS[rng.below(REAL_ANSWERS.len())].as_bytes();
            mutate(&mut rng, seed)
        };
        let outcome = catch_unwind(|| decode_all(&input));
        assert!(
            outcome.is_ok(),
            "decoding panicked on {:?}",
            String::from_utf8_lossy(&input)
        );
    }
}

#[test]
fn watch_and_keepalive_streams_of_mutated_lines_never_panic_the_client() {
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    let watch_lines: Vec<&str> = REAL_ANSWERS
        .iter()
        .copied()
        .filter(|a| a.starts_with(r#"{"result""#))
        .collect();
    let created = REAL_ANSWERS[10];
    let mut bodies = Vec::new();
    for _ in 0..150 {
        let seed = watch_lines[rng.below(watch_lines.len())].as_bytes();
        let line = mutate(&mut rng, seed);
        bodies.push([created.as_bytes(), b"\n", &line, b"\n"].concat());
        bodies.push([&line[..], b"\n"].concat());
    }
    let count = bodies.len();
    let fake = FakeGateway::start(Answer::Stream(bodies));
    let mut config = ClientConfig::new(vec![fake.url.clone()]);
    config.request_timeout = Duration::from_secs(2);
    config.watch_idle_timeout = Duration::from_secs(2);
    let client = Client::new(config).expect("client");
    for i in 0..count {
        // Even requests read a watch to its end, odd ones a keepalive answer.
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            if i % 2 == 0 {
                if let Ok(watch) = client.watch(&WatchRequest::key("k", 2), &Cancel::default()) {
                    watch.take(10).for_each(drop);
                }
            } else {
                let _ = client.lease_keepalive(7);
            }
        }));
        assert!(outcome.is_ok(), "request {i} panicked");
    }
    assert_eq!(fake.requests().len(), count);
}

// ---- measuring an instance ----

/// Samples a process's thread count and resident memory every 20 ms until stopped; keeps the
/// peaks.
struct Peaks {
    stop: Arc<AtomicBool>,
    sampler: thread::JoinHandle<(u64, u64)>,
}

impl Peaks {
    fn watch(pid: i32) -> Peaks {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let sampler = thread::spawn(move || {
            let (mut threads, mut rss) = (0, 0);
            while !stopping.load(Ordering::Relaxed) {
                threads = threads.max(status_field(pid, "Threads").unwrap_or(0));
                rss = rss.max(status_field(pid, "VmRSS").unwrap_or(0));
                thread::sleep(Duration::from_millis(20));
            }
            (threads, rss)
        });
        Peaks { stop, sampler }
    }

    /// The peak thread count and the peak VmRSS (kB) seen.
    fn stop(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.sampler.join().expect("the sampler")
    }
}

/// A number from `/proc/PID/status` of a process that must still run.
fn status_of(pid: i32, field: &str) -> u64 {
    status_field(pid, field).unwrap_or_else(|| panic!("no {field} for pid {pid}: it is gone"))
}

/// The thread count of `pid` once it has stayed the same for half a second.
fn settled_threads(s: &Scene, pid: i32) -> u64 {
    let mut seen: Vec<u64> = Vec::new();
    s.wait("a settled thread count", SOON, || {
        seen.push(status_of(pid, "Threads"));
        let last = &seen[seen.len().saturating_sub(25)..];
        last.len() == 25 && last.iter().all(|&n| n == last[0])
    });
    seen[seen.len() - 1]
}

/// RPCs etcd started between two readings of [`support::Etcd::rpcs_started`], except `but`.
fn rpcs_between(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
    but: &[&str],
) -> u64 {
    after
        .iter()
        .filter(|(method, _)| !but.contains(&method.as_str()))
        .map(|(method, n)| n.saturating_sub(before.get(method).copied().unwrap_or(0)))
        .sum()
}

// ---- key churn against real etcd ----

/// RETRY_PERIOD 200 ms: churn is paced in RETRY_PERIODs, so a short one keeps the storm short.
const QUICK: Timings = Timings {
    lease_s: 3,
    renew_ms: 2000,
    retry_ms: 200,
};

/// How long the deletions go on.
const STORM: Duration = Duration::from_secs(10);

/// Issue 11.1: a waiter whose key was deleted over and over re-queued 45 times a second and kept
/// a thread and a connection of every watch it dropped (440 threads, 139 MB). Under a 10 s storm
/// of deletions through the gateway it now stays ≤ 16 threads and ≤ 16 MB, costs etcd ≤ 4
/// requests per RETRY_PERIOD (its keepalives included), is back in the queue with its idle
/// thread count within the back-off's cap (4 RETRY_PERIODs) and a margin, and then leads.
#[test]
fn a_waiter_whose_key_is_deleted_in_a_tight_loop_stays_small_and_paced_and_queues_again() {
    let retry = Duration::from_millis(QUICK.retry_ms);
    let s = Scene::new();
    let etcd = s.etcd();
    let client = Client::new(ClientConfig::new(vec![s.url()])).expect("client");
    // The head of the queue is a key of the test's own on a long lease: no other candidate talks
    // to etcd, so every RPC etcd counts is the waiter's, or one of the test's deletions.
    let holder = client.lease_grant(60).expect("lease/grant").id;
    let head = format!("{}/{holder:x}", s.lock());
    client
        .put(head.as_bytes(), b"holder", holder)
        .expect("kv/put");
    let mut w = s.candidate("w", QUICK);
    s.await_queued(&w, SOON);
    let queued = s.await_keys(2, SOON)[1].clone();
    let pid = w.pid();
    let idle = settled_threads(&s, pid);

    let prefix = format!("{}/", s.lock()).into_bytes();
    let mut after_head = head.clone().into_bytes();
    after_head.push(0);
    let mut prefix_end = prefix.clone();
    *prefix_end.last_mut().expect("a prefix") += 1;
    let others = [
        (prefix, head.clone().into_bytes()),
        (after_head, prefix_end),
    ];

    let peaks = Peaks::watch(pid);
    let before = etcd.rpcs_started();
    let (mut windows, mut last) = (Vec::new(), before.clone());
    let mut deletions = 0u32;
    let started = Instant::now();
    let mut next_window = started + Duration::from_secs(1);
    while started.elapsed() < STORM {
        // Every key under the lock but the holder's: the waiter's, whatever its lease.
        for (from, to) in &others {
            let deleted = client.delete_range(from, to).expect("kv/deleterange");
            deletions += u32::try_from(deleted.deleted).unwrap_or(0);
        }
        if Instant::now() >= next_window {
            let now = etcd.rpcs_started();
            windows.push(rpcs_between(&last, &now, &["DeleteRange"]));
            (last, next_window) = (now, next_window + Duration::from_secs(1));
        }
    }
    let storm = started.elapsed();
    let ended = Instant::now();
    let after = etcd.rpcs_started();
    let (peak_threads, peak_rss) = peaks.stop();

    s.wait(
        "w back in the queue with its idle thread count",
        SOON,
        || s.keys().len() == 2 && status_of(pid, "Threads") == idle,
    );
    let back = ended.elapsed();
    let hwm = status_of(pid, "VmHWM");
    let periods = storm.as_secs_f64() / retry.as_secs_f64();
    let all = rpcs_between(&before, &after, &["DeleteRange"]);
    let keepalives = rpcs_between(&before, &after, &["DeleteRange", "LeaseKeepAlive"]);
    let keepalives = all - keepalives;
    let figures = format!(
        "{deletions} deletions in {storm:?}; idle threads {idle}, peak {peak_threads}; peak \
         VmRSS {peak_rss} kB, VmHWM {hwm} kB; {all} RPCs ({keepalives} keepalives) = {:.2} per \
         RETRY_PERIOD; per second: {windows:?}; back {back:?} after the storm",
        all as f64 / periods
    );
    eprintln!("churn: {figures}");
    assert!(deletions >= 10, "the storm did not bite: {figures}");
    assert!(peak_threads <= 16, "{figures}\n{}", s.report());
    assert!(peak_rss <= 16 * 1024 && hwm <= 16 * 1024, "{figures}");
    assert!(all as f64 <= 4.0 * periods, "{figures}\n{}", s.report());
    let per_window = 4 * (Duration::from_secs(1).as_millis() / retry.as_millis()) as u64;
    assert!(windows.iter().all(|&n| n <= per_window), "{figures}");
    assert!(
        back <= 4 * retry + Duration::from_secs(2),
        "{figures}\n{}",
        s.report()
    );

    // Back in the queue for real: behind the holder, with the lease it had (still alive), and it
    // leads once the holder goes.
    let requeued = s.keys()[1].clone();
    assert_eq!(requeued.value, "w");
    assert_eq!(requeued.lease, queued.lease, "{}", s.report());
    assert!(requeued.create_revision > queued.create_revision);
    assert!(w.running() && s.start_of("w").is_none(), "{}", s.report());
    client.lease_revoke(holder).expect("lease/revoke");
    s.await_start("w", SOON);
    s.stop("w", 0);
    assert_eq!(w.code(SOON), 0, "{}", s.report());
    assert!(!w.stderr().contains("panicked"), "{}", s.report());
}

// ---- a fake queue: one leader ahead of us ----

/// The client's caps (`src/etcd/answer.rs`, `src/etcd/stream.rs`): a unary answer, and one line of
/// a stream.
const MAX_BODY: usize = 8 * 1024 * 1024;
const MAX_LINE: usize = 1024 * 1024;

/// Standard base64.
fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A key as the gateway shows it; `value` is base64 already.
fn kv(key: &str, value: &str, revision: u32, lease: u32) -> String {
    format!(
        r#"{{"key":"{}","value":"{value}","create_revision":"{revision}","mod_revision":"{revision}","version":"1","lease":"{lease}"}}"#,
        b64(key.as_bytes())
    )
}

/// A gateway in front of a queue in which a leader (`<lock>/1`, lease 1) is the only key ahead
/// of ours (`<lock>/7`: every grant gives lease 7), answering as etcd would — but for the
/// watches, whose answers the test chooses, and for as many bytes of padding (whitespace after
/// the JSON, which a parser skips) as the test likes after the transactions and keepalives.
#[derive(Clone)]
struct FakeQueue {
    lock: String,
    /// The leader's value (its identity), base64.
    leader: String,
    pad_txn: usize,
    pad_keepalive: usize,
}

impl FakeQueue {
    fn new(lock: &str) -> FakeQueue {
        FakeQueue {
            lock: lock.to_string(),
            leader: b64(b"boss"),
            pad_txn: 0,
            pad_keepalive: 0,
        }
    }

    /// Answers every `/v3/watch` with what `watch` gives at the time.
    fn script(self, watch: impl Fn() -> Reply + Send + Sync + 'static) -> Script {
        Script::new(move |path, body| match path {
            "/v3/watch" => watch(),
            "/v3/lease/grant" => Reply::unary(r#"{"header":{"revision":"5"},"ID":"7","TTL":"3"}"#),
            "/v3/kv/txn" => Reply::unary(self.padded(self.txn(body), self.pad_txn)),
            "/v3/lease/keepalive" => Reply::unary(self.padded(
                r#"{"result":{"header":{"revision":"6"},"ID":"7","TTL":"3"}}"#.into(),
                self.pad_keepalive,
            )),
            _ => Reply::unary(r#"{"header":{"revision":"6"}}"#),
        })
    }

    /// Our create (its put, then its ranges: the newest keys, the leader, every key) or a look
    /// (the key ahead, the leader).
    fn txn(&self, request: &[u8]) -> String {
        let text = String::from_utf8_lossy(request);
        let leader = kv(&format!("{}/1", self.lock), &self.leader, 2, 1);
        let ours = kv(&format!("{}/7", self.lock), &b64(b"me"), 6, 7);
        let range = |kvs: &[&str]| {
            format!(
                r#"{{"response_range":{{"header":{{"revision":"6"}},"kvs":[{}],"count":"{}"}}}}"#,
                kvs.join(","),
                kvs.len()
            )
        };
        let responses = match text.contains("request_put") {
            true => {
                let mut responses = vec![r#"{"response_put":{"header":{"revision":"6"}}}"#.into()];
                let ranges = [
                    range(&[&ours, &leader]),
                    range(&[&leader]),
                    range(&[&leader, &ours]),
                ];
                let wanted = text.matches("request_range").count();
                responses.extend(ranges.into_iter().take(wanted));
                responses
            }
            false => vec![range(&[&leader]), range(&[&leader])],
        };
        format!(
            r#"{{"header":{{"revision":"6"}},"succeeded":true,"responses":[{}]}}"#,
            responses.join(",")
        )
    }

    fn padded(&self, json: String, pad: usize) -> Vec<u8> {
        let mut bytes = json.into_bytes();
        bytes.resize(bytes.len() + pad, b' ');
        bytes
    }
}

/// A watch's first line: etcd registered it.
const CREATED: &str = "{\"result\":{\"header\":{\"revision\":\"6\"},\"created\":true}}\n";
/// A progress notification: nothing changed up to revision 6.
const PROGRESS: &str = "{\"result\":{\"header\":{\"revision\":\"6\"}}}\n";

/// A valid watch line of `len` bytes (newline included): a put of a value on another key.
fn watch_line(lock: &str, len: usize) -> Vec<u8> {
    let head = format!(
        r#"{{"result":{{"header":{{"revision":"7"}},"events":[{{"type":"PUT","kv":{{"key":"{}","mod_revision":"7","value":""#,
        b64(format!("{lock}/5").as_bytes())
    );
    let tail = "\"}}]}}\n";
    let room = len - head.len() - tail.len();
    let value = "eHh4".repeat(room / 4); // "xxx…"
    let mut line = format!("{head}{value}{tail}").into_bytes();
    line.resize(len, b' ');
    let newline = line.iter().position(|&b| b == b'\n').expect("a newline");
    line.remove(newline);
    line.push(b'\n');
    line
}

// ---- big answers ----

/// Issue 11.2: lines just under the old 16 MiB line cap took a waiter to 116 MB. The caps are now
/// 1 MiB a stream line and 8 MiB a unary answer: a waiter fed lines and bodies just under them
/// (its watches, its join and every keepalive) peaks at ≤ 32 MB, and one fed a line or a body
/// over them logs an error naming the endpoint, the operation and the cap, once — never a panic,
/// and never its command.
#[test]
fn answers_at_the_caps_keep_a_waiter_under_32_mb_and_answers_over_them_are_named_errors() {
    let s = Scene::without_etcd();
    let lock = s.lock().to_string();
    let near_line = watch_line(&lock, MAX_LINE - 64);
    let lines_near_cap = [CREATED.as_bytes(), &near_line.repeat(4)].concat();
    let over_line = watch_line(&lock, MAX_LINE + 64);
    let line_over_cap = [CREATED.as_bytes(), &over_line].concat();
    let just_under = |json: usize| MAX_BODY - 1024 - json;

    // The leader's identity as large as etcd lets a value be (1.5 MiB requests), three times in
    // our create's answer, padded to just under the cap; every keepalive just under it too.
    let mut big = FakeQueue::new(&lock);
    big.leader = b64(&vec![b'x'; 1536 * 1024 - 1024]);
    big.pad_txn = just_under(
        big.txn(b"request_put request_range request_range request_range")
            .len(),
    );
    big.pad_keepalive = just_under(60);
    let mut over = FakeQueue::new(&lock);
    over.pad_txn = MAX_BODY + 1024;

    let quiet = || Reply::stream(CREATED).held(Duration::from_secs(30));
    let cases: Vec<(&str, Script)> = vec![
        ("watch lines near the cap", {
            let body = lines_near_cap.clone();
            FakeQueue::new(&lock).script(move || Reply::stream(body.clone()))
        }),
        ("a watch line over the cap", {
            let body = line_over_cap.clone();
            FakeQueue::new(&lock).script(move || Reply::stream(body.clone()))
        }),
        ("unary answers near the cap", big.script(quiet)),
        ("a unary answer over the cap", over.script(quiet)),
    ];
    let fakes: Vec<(&str, FakeGateway)> = cases
        .into_iter()
        .map(|(case, script)| (case, FakeGateway::start(Answer::Scripted(script))))
        .collect();
    let mut instances = facing(&s, "w", FAST, fakes.iter().map(|(_, fake)| fake));
    let asked = |fake: &FakeGateway, path: &str| {
        let line = format!("POST {path} ");
        fake.requests()
            .iter()
            .filter(|r| r.starts_with(&line))
            .count()
    };
    // What each case waits for: enough of the answers under test, read.
    let (watched, kept_alive, joined) = (&fakes[0].1, &fakes[2].1, &fakes[3].1);
    s.wait("four watches on lines near the cap", SOON, || {
        asked(watched, "/v3/watch") >= 4
    });
    s.wait("three watches on a line over the cap", SOON, || {
        asked(&fakes[1].1, "/v3/watch") >= 3
    });
    s.wait("three keepalives near the cap", SOON, || {
        asked(kept_alive, "/v3/lease/keepalive") >= 3
    });
    s.wait("three joins over the cap", SOON, || {
        asked(joined, "/v3/kv/txn") >= 3
    });

    let mut peaks = Vec::new();
    for ((case, _), instance) in fakes.iter().zip(&mut instances) {
        let log = instance.stderr();
        assert!(instance.running(), "{case}\n{}", s.report());
        assert!(!log.contains("panicked"), "{case}\n{}", s.report());
        let started = s.start_of(instance.name()).is_some();
        assert!(!started, "{case}\n{}", s.report());
        peaks.push((case, status_of(instance.pid(), "VmHWM")));
    }
    eprintln!("big answers, VmHWM in kB: {peaks:?}");
    assert!(peaks.iter().all(|(_, hwm)| *hwm <= 32 * 1024), "{peaks:?}");

    // Over the caps: an error naming the endpoint, the operation and the cap. (How often it is
    // logged is the watch-failure test's business.)
    let over_cap = [
        (
            &instances[1],
            &fakes[1].1,
            "watch failed",
            "watch on",
            "longer than 1048576 bytes",
        ),
        (
            &instances[3],
            &fakes[3].1,
            "retrying",
            "kv/txn on",
            "larger than 8388608 bytes",
        ),
    ];
    for (instance, fake, message, op, cap) in over_cap {
        let log = instance.stderr();
        let lines: Vec<&str> = log.lines().filter(|l| l.contains(cap)).collect();
        let context = format!("{op} {}", fake.url);
        assert!(!lines.is_empty(), "no line about {cap:?}\n{log}");
        for line in lines {
            assert!(
                line.contains(message) && line.contains(&context),
                "{line:?} lacks {message:?} or {context:?}"
            );
        }
    }
    for instance in &mut instances {
        instance.signal(libc::SIGTERM);
    }
    for instance in &mut instances {
        assert_eq!(instance.code(SOON), 143, "{}", s.report());
    }
}

// ---- failing watches ----

/// Issue 11.6: a watch that failed (no permission to watch, garbage, a stream that ends at once)
/// was re-opened silently: a waiter could stay blind with no line in its log. Now, while every
/// unary call works, each such watch is logged once when it starts failing, naming what went
/// wrong, and once when it recovers — not once per retry.
#[test]
fn a_failing_watch_is_logged_once_when_it_starts_failing_and_once_when_it_recovers() {
    let s = Scene::without_etcd();
    let healed = Arc::new(AtomicBool::new(false));
    // (case, what every watch gets until healed, what the failure line must say)
    let cases = [
        ("garbage", "\u{1}<html>not json", "bad answer from etcd"),
        (
            "an error line",
            r#"{"error":{"grpc_code":14,"http_code":503,"message":"etcdserver: no leader","http_status":"Service Unavailable"}}"#,
            "etcdserver: no leader",
        ),
        (
            "no permission to watch (etcd 3.4's answer)",
            r#"{"result":{"header":{"revision":"6"},"watch_id":"-1","created":true,"canceled":true,"cancel_reason":"etcdserver: permission denied"}}"#,
            "permission denied",
        ),
        (
            "a stream that ends as soon as it is created",
            CREATED.trim_end(),
            "ended as soon as it was opened",
        ),
    ];
    let fakes: Vec<FakeGateway> = cases
        .iter()
        .map(|(_, broken, _)| {
            let (healed, broken) = (Arc::clone(&healed), format!("{broken}\n"));
            let script =
                FakeQueue::new(s.lock()).script(move || match healed.load(Ordering::SeqCst) {
                    // Registered, then a progress report: a stream that carries something
                    // beyond its registration (after streams that ended as soon as they were
                    // registered, a registration alone proves nothing).
                    true => {
                        Reply::stream(format!("{CREATED}{PROGRESS}")).held(Duration::from_secs(30))
                    }
                    false => Reply::stream(broken.clone()),
                });
            FakeGateway::start(Answer::Scripted(script))
        })
        .collect();
    let instances = facing(&s, "w", QUICK, fakes.iter());
    let watches = |fake: &FakeGateway| {
        let requests = fake.requests();
        requests
            .iter()
            .filter(|r| r.starts_with("POST /v3/watch "))
            .count()
    };
    // RETRY_PERIOD 200 ms, doubling to 800 ms: four failed watches within about 1.5 s.
    for ((case, ..), fake) in cases.iter().zip(&fakes) {
        s.wait(&format!("{case}: four failed watches"), SOON, || {
            watches(fake) >= 4
        });
    }
    let failed_before: Vec<usize> = fakes.iter().map(watches).collect();
    healed.store(true, Ordering::SeqCst);
    for (((case, ..), fake), (instance, before)) in cases
        .iter()
        .zip(&fakes)
        .zip(instances.iter().zip(&failed_before))
    {
        s.wait(&format!("{case}: the watch recovered"), SOON, || {
            watches(fake) > *before && instance.stderr().contains("watch recovered")
        });
    }
    let mut problems = Vec::new();
    for (((case, _, says), instance), before) in cases.iter().zip(&instances).zip(&failed_before) {
        let log = instance.stderr();
        let failed: Vec<&str> = log.lines().filter(|l| l.contains("watch failed")).collect();
        let recovered = log
            .lines()
            .filter(|l| l.contains("watch recovered"))
            .count();
        if failed.len() != 1 || recovered != 1 || !failed[0].contains(says) {
            problems.push(format!(
                "{case}: {} \"watch failed\" and {recovered} \"watch recovered\" lines for \
                 {before} failed watches and one that works; want one of each, the first \
                 saying {says:?}:\n{log}",
                failed.len()
            ));
        }
        assert!(!log.contains("panicked"), "{case}\n{log}");
        assert!(s.start_of(instance.name()).is_none(), "{case}\n{log}");
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// ---- permanent TLS mistakes at start ----

/// Issue 11.4: a wrong CA, no client certificate where etcd wants one, a certificate from another
/// CA and `https://` to a plain-HTTP etcd were retried every RETRY_PERIOD as if etcd were down,
/// with cryptic lines. At start, each now exits 69 within about one RETRY_PERIOD (a certificate
/// check at once, a connection closed at a telling moment on the second attempt in a row), with
/// one error line that names what to fix and what the server said; the command never starts.
/// What the server says is not always the same: etcd's plain port answers a ClientHello with a
/// FIN, or with a reset when a newline among the hello's first 24 (random) bytes makes it stop
/// reading half-way (about one attempt in ten); either is the same mistake with the same hint.
#[test]
fn permanent_tls_mistakes_at_start_exit_69_at_once_naming_what_to_fix() {
    let s = Scene::without_etcd();
    let ca_only = Etcd::start_tls(false);
    let mutual = Etcd::start_tls(true);
    let plain = Etcd::start();
    let ours = mutual.tls_files().expect("tls files").clone();
    let theirs = support::generate_tls(&s.dir().join("other-pki"));
    let path = |p: &std::path::Path| p.to_string_lossy().into_owned();
    let plain_as_https = plain.client_url().replace("http://", "https://");
    // (case, endpoint, CACERT, CERT and KEY, what the error line must hold, and one of the
    // things the server may have said, which it must hold too)
    type Case = (
        &'static str,
        String,
        String,
        Option<(String, String)>,
        Vec<String>,
        &'static [&'static str],
    );
    let cases: Vec<Case> = vec![
        (
            "a CA that did not sign etcd's certificate",
            ca_only.client_url(),
            path(&ours.wrong_ca),
            None,
            vec![var("CACERT")],
            &["UnknownIssuer"],
        ),
        (
            "no client certificate where etcd requires one",
            mutual.client_url(),
            path(&ours.ca),
            None,
            // The variables to set, though they are not set yet.
            vec![var("CERT"), var("KEY")],
            &["BadCertificate"],
        ),
        (
            "a client certificate from another CA",
            mutual.client_url(),
            path(&ours.ca),
            Some((path(&theirs.cert), path(&theirs.key_pkcs8))),
            vec![var("CERT"), var("KEY")],
            &["BadCertificate"],
        ),
        (
            "https:// to a plain-HTTP etcd",
            plain_as_https.clone(),
            path(&ours.ca),
            None,
            vec![plain_as_https, "use http://".into()],
            &["unexpected end of file", "Connection reset by peer"],
        ),
    ];
    let started = Instant::now();
    let mut instances: Vec<Wrapper> = cases
        .iter()
        .enumerate()
        .map(|(i, (_, endpoint, ca, client, _, _))| {
            let name = format!("t{i}");
            let mut env = s
                .env(&name, FAST)
                .set("ENDPOINTS", endpoint.as_str())
                .set("CACERT", ca.as_str());
            if let Some((cert, key)) = client {
                env = env.set("CERT", cert.as_str()).set("KEY", key.as_str());
            }
            s.spawn(&name, env, s.child(&name, OnTerm::Trap))
        })
        .collect();
    let (mut figures, mut problems) = (Vec::new(), Vec::new());
    for ((case, _, _, _, named, said), instance) in cases.iter().zip(&mut instances) {
        let code = instance.code(SOON);
        let took = started.elapsed();
        let log = instance.stderr();
        figures.push(format!("{case}: exit {code} after {took:?}"));
        assert_eq!(code, 69, "{case}\n{log}");
        assert!(s.start_of(instance.name()).is_none(), "{case}\n{log}");
        assert!(!log.contains("panicked"), "{case}\n{log}");
        // Lines at level error (a warn line may quote an "os error 104").
        let errors: Vec<&str> = log
            .lines()
            .filter(|l| l.split_whitespace().nth(1) == Some("error"))
            .collect();
        assert_eq!(errors.len(), 1, "{case}: not one error line\n{log}");
        let missing: Vec<&String> = named
            .iter()
            .filter(|t| !errors[0].contains(t.as_str()))
            .collect();
        if !missing.is_empty() {
            problems.push(format!(
                "{case}: the error line lacks {missing:?}:\n{}",
                errors[0]
            ));
        }
        if !said.iter().any(|t| errors[0].contains(t)) {
            problems.push(format!(
                "{case}: the error line quotes none of {said:?}:\n{}",
                errors[0]
            ));
        }
    }
    eprintln!("tls mistakes: {figures:?}");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // All four within a few RETRY_PERIODs of starting (they run side by side).
    assert!(started.elapsed() < Duration::from_secs(5), "{figures:?}");
}

// ---- TLS files from outside ----

/// Issue 11.5: TLS files were read with no size limit (`CACERT=/dev/zero` ate memory) and a FIFO
/// blocked start-up. Now a device or a FIFO as CACERT, CERT or KEY is refused before it is read:
/// exit 78 at once, one line naming the variable, the path and what the file is.
#[test]
fn tls_files_that_are_devices_or_fifos_exit_78_at_once_naming_the_variable() {
    let s = Scene::without_etcd();
    let tls = support::generate_tls(&s.dir().join("tls"));
    let fifo = s.dir().join("fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("run mkfifo");
    assert!(made.success());
    let path = |p: &std::path::Path| p.to_string_lossy().into_owned();
    let (fifo, ca, cert, key) = (
        path(&fifo),
        path(&tls.ca),
        path(&tls.cert),
        path(&tls.key_pkcs8),
    );
    // (variable, its value, what the line says about it, the TLS variables)
    type Case<'a> = (&'a str, &'a str, &'a str, Vec<(&'a str, &'a str)>);
    let cases: Vec<Case> = vec![
        (
            "CACERT",
            "/dev/zero",
            "it is a device",
            vec![("CACERT", "/dev/zero")],
        ),
        ("CACERT", &fifo, "it is a FIFO", vec![("CACERT", &fifo)]),
        (
            "CERT",
            "/dev/zero",
            "it is a device",
            vec![("CACERT", &ca), ("CERT", "/dev/zero"), ("KEY", &key)],
        ),
        (
            "KEY",
            &fifo,
            "it is a FIFO",
            vec![("CACERT", &ca), ("CERT", &cert), ("KEY", &fifo)],
        ),
    ];
    let started = Instant::now();
    let mut instances: Vec<Wrapper> = cases
        .iter()
        .enumerate()
        .map(|(i, (_, _, _, files))| {
            let name = format!("f{i}");
            let env = files.iter().fold(
                s.env(&name, FAST).set("ENDPOINTS", "https://127.0.0.1:9"),
                |env, (k, v)| env.set(k, *v),
            );
            s.spawn(&name, env, s.child(&name, OnTerm::Trap))
        })
        .collect();
    for ((variable, value, says, _), instance) in cases.iter().zip(&mut instances) {
        // A read of /dev/zero or a FIFO without a writer would never end: exiting is the proof.
        let status = instance.wait_up_to(Duration::from_secs(5));
        let log = instance.stderr();
        assert_eq!(
            status.and_then(|s| s.code()),
            Some(78),
            "{variable}={value}\n{log}"
        );
        assert_eq!(log.lines().count(), 1, "{variable}={value}\n{log}");
        let named = format!("{}={value}", var(variable));
        assert!(log.contains(&named) && log.contains(says), "{named}: {log}");
        assert!(s.start_of(instance.name()).is_none(), "{named}: {log}");
    }
    eprintln!("tls files: all four exited within {:?}", started.elapsed());
}

// ---- etcd's errors by their name ----

/// Issue 11.6, second half: NOSPACE was logged as "etcd unreachable". Against an etcd whose tiny
/// quota is full (its NOSPACE alarm raised), a new instance logs "etcd database space exceeded"
/// once however often it retries, never "unreachable", and never starts its command; once space
/// is freed and the alarm disarmed it says etcd answers again and leads.
#[test]
fn a_full_etcd_database_is_named_space_exceeded_once_and_the_instance_leads_once_freed() {
    let etcd = Etcd::start_with_flags(Options::default(), &["--quota-backend-bytes=1048576"]);
    let client = Client::new(ClientConfig::new(vec![etcd.client_url()])).expect("client");
    // 64 KiB a put: a request stays under the client's 128 KiB output buffer.
    let value = vec![b'v'; 64 * 1024];
    let mut filled = None;
    for i in 0..256 {
        match client.put(format!("filler/{i}").as_bytes(), &value, 0) {
            Ok(_) => {}
            Err(error) => {
                filled = Some(error);
                break;
            }
        }
    }
    let full = filled.expect("a 1 MiB quota filled with 16 MiB of puts");
    assert!(
        full.to_string().contains("database space exceeded"),
        "{full}"
    );
    let alarms = etcd.etcdctl_ok(&["alarm", "list"]);
    assert!(alarms.contains("NOSPACE"), "{alarms}");

    let s = Scene::with(etcd);
    let before = s.etcd().rpcs_started()["LeaseGrant"];
    let mut a = s.candidate("a", FAST);
    // Retried every RETRY_PERIOD (500 ms): three grants refused within seconds.
    s.wait("three refused grants", SOON, || {
        s.etcd().rpcs_started()["LeaseGrant"] >= before + 3
    });
    let log = a.stderr();
    let named = log
        .lines()
        .filter(|l| l.contains("etcd database space exceeded"))
        .count();
    assert_eq!(named, 1, "not one line naming NOSPACE\n{log}");
    assert!(!log.contains("unreachable"), "{log}");
    assert!(a.running() && s.start_of("a").is_none(), "{}", s.report());

    // Free the space: delete, compact, defragment, disarm.
    s.etcd().etcdctl_ok(&["del", "--prefix", "filler/"]);
    let revision = client
        .range(&RangeRequest::key("filler/0"))
        .expect("kv/range")
        .header
        .revision;
    client.compact(revision).expect("kv/compaction");
    s.etcd().etcdctl_ok(&["defrag"]);
    s.etcd().etcdctl_ok(&["alarm", "disarm"]);
    s.await_start("a", SOON);
    assert!(a.stderr().contains("etcd answers again"), "{}", s.report());
    s.stop("a", 0);
    assert_eq!(a.code(SOON), 0, "{}", s.report());
}

// ---- auth tokens that expire while nothing happens ----

/// Issue 11.8: with etcd's `--auth-token-ttl=2`, a handover after an idle spell cost requests
/// refused for an expired token and the authentications after them (120 ms). After an idle spell
/// longer than the TTL, a handover now costs at most one extra round trip in all — an
/// authentication or a refused request, as etcd counts them — and the follower starts its
/// command.
#[test]
fn a_handover_after_an_idle_spell_past_the_token_ttl_costs_at_most_one_extra_round_trip() {
    const TTL: u64 = 2;
    // The leader reads its key once per keepalive interval (RETRY_PERIOD here): longer than the
    // TTL, so even the leader's token goes idle long enough to expire.
    const SPARSE: Timings = Timings {
        lease_s: 15,
        renew_ms: 10_000,
        retry_ms: 3_000,
    };
    let s = Scene::with(Etcd::start_auth_with_token_ttl(TTL));
    let authed = |name: &str| {
        s.env(name, SPARSE)
            .set("USERNAME", support::USER)
            .set("PASSWORD", support::PASSWORD)
    };
    let mut a = s.spawn("a", authed("a"), s.child("a", OnTerm::Trap));
    s.await_start("a", SOON);
    let mut b = s.spawn("b", authed("b"), s.child("b", OnTerm::Trap));
    s.await_queued(&b, SOON);
    // What a token costs etcd: authentications, and requests it refused for their token.
    let (authentications, refused) = (
        || s.etcd().rpcs_started()["Authenticate"],
        || {
            s.etcd()
                .rpcs_handled()
                .get("Unauthenticated")
                .copied()
                .unwrap_or(0)
        },
    );
    let idle_from = authentications();
    // The condition under test is elapsed idle time, so this sleep is the wait itself: the TTL
    // plus 1.5 s for etcd's once-a-second sweep of expired tokens.
    thread::sleep(Duration::from_secs(TTL) + Duration::from_millis(1500));
    let (before, refused_before) = (authentications(), refused());
    s.stop("a", 0);
    let b_start = s.await_start("b", SOON);
    let (after, refused_after) = (authentications(), refused());
    let extra = (after - before) + (refused_after - refused_before);
    assert_eq!(a.code(SOON), 0, "{}", s.report());
    let a_end = s.end_of("a").expect("a ended");
    let figures = format!(
        "{} authentications while idle; during the handover {} authentications and {} requests \
         refused for their token; a's end to b's start {:.1} ms",
        before - idle_from,
        after - before,
        refused_after - refused_before,
        (b_start.at - a_end) as f64 / 1e6
    );
    eprintln!("auth handover: {figures}");
    assert!(
        extra <= 1,
        "{extra} extra round trips: {figures}\n{}",
        s.report()
    );
    for log in [a.stderr(), b.stderr()] {
        assert!(!log.contains("refused"), "{log}");
    }
    s.stop("b", 0);
    assert_eq!(b.code(SOON), 0, "{}", s.report());
}
