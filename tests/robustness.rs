//! Hostile answers: a fake gateway (`tests/support/fake_gateway.rs`) answering 5xx, garbage, cut-off
//! bodies or transactions without their responses, and mutated or random bytes fed to the
//! gateway's JSON decoding and to the watch and keepalive streams. The client turns each into an
//! error naming endpoint and operation, and an instance retries, logs, and never starts its
//! command on an answer that proves nothing. A real etcd never sends these, hence the fake.
//!
//! Run: `cargo test --test robustness -- --test-threads=2`.

mod support;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::thread;
use std::time::{Duration, Instant};

use etcd_await_election::etcd::{
    Cancel, Client, ClientConfig, Compare, CompareResult, DeleteResponse, Header, KeyValue,
    LeaseGrant, LeaseTtl, Op, OpResponse, PutResponse, RangeRequest, RangeResponse, TxnRequest,
    TxnResponse, WatchEvent, WatchRequest,
};
use support::env::FAST;
use support::fake_gateway::{Answer, FakeGateway};
use support::marks::OnTerm;
use support::wrapper::{Scene, Wrapper};

// ---- the client and an instance facing a broken gateway ----

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
    let mut instances: Vec<Wrapper> = fakes
        .iter()
        .enumerate()
        .map(|(i, fake)| {
            let name = format!("f{i}");
            let env = s.env(&name, FAST).set("ENDPOINTS", fake.url.as_str());
            s.spawn(&name, env, s.child(&name, OnTerm::Trap))
        })
        .collect();
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
