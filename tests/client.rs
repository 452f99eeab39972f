//! Integration tests of the etcd client (`etcd_await_election::etcd`) against real etcd members
//! started by the harness in `tests/support`.
//!
//! Every test starts its own member(s), so tests never share keys or state. Nothing waits by
//! sleeping: conditions are polled with [`support::wait_until`], and calls that must not hang run in
//! a thread whose answer is awaited with a deadline ([`within`]). The one sleep (token expiry) waits
//! for elapsed idle time itself, which is the condition under test.

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use etcd_await_election::etcd::{
    code, Cancel, Client, ClientConfig, Compare, CompareResult, Credentials, Error, EventKind,
    NamedPath, Op, OpResponse, RangeRequest, SortOrder, SortTarget, TlsFiles, TlsProblem,
    TxnRequest, Watch, WatchEvent, WatchMessage, WatchRequest,
};
use support::{wait_until, Cluster, Etcd};

// ---- helpers ----

/// Names the TLS files go by in error messages, as the binary's configuration names them.
const CACERT: &str = "ETCD_AWAIT_ELECTION_CACERT";
const CERT: &str = "ETCD_AWAIT_ELECTION_CERT";
const KEY: &str = "ETCD_AWAIT_ELECTION_KEY";

/// A configuration for `endpoints` with test-sized timeouts: no call or watch read may block a test
/// for long even when something is broken.
fn config(endpoints: &[String]) -> ClientConfig {
    let mut config = ClientConfig::new(endpoints.to_vec());
    config.request_timeout = Duration::from_secs(5);
    config.watch_idle_timeout = Duration::from_secs(10);
    config
}

/// Builds a client, failing the test if the configuration is refused.
fn connect(config: ClientConfig) -> Client {
    Client::new(config).unwrap_or_else(|e| panic!("Client::new: {e}"))
}

/// A plain client of one member, through its `http://` URL.
fn client_of(etcd: &Etcd) -> Client {
    connect(config(&[etcd.client_url()]))
}

/// The `item` and `problem` of the setup error `Client::new` must return for `config`.
fn setup_error(config: ClientConfig) -> (String, String) {
    match Client::new(config) {
        Ok(_) => panic!("Client::new accepted a configuration it should refuse"),
        Err(Error::Setup { item, problem }) => (item, problem),
        Err(other) => panic!("expected Error::Setup, got {other:?}"),
    }
}

/// The URL of a loopback port nobody listens on (bound, then released).
fn dead_endpoint() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let port = listener.local_addr().expect("local_addr").port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

/// Runs `f` in a thread and returns its result and how long it took; fails the test if it has not
/// finished after `limit` (the thread is then abandoned).
fn within<T: Send + 'static>(
    what: &str,
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> (T, Duration) {
    let (tx, rx) = mpsc::channel();
    let started = Instant::now();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(value) => (value, started.elapsed()),
        Err(_) => panic!("{what}: still blocked after {limit:?}"),
    }
}

/// Reads `watch` until `count` events arrived; any other message, an error or the end fails the test.
fn next_events(watch: &mut Watch, count: usize) -> Vec<WatchEvent> {
    let mut events = Vec::new();
    while events.len() < count {
        match watch.next() {
            Some(Ok(WatchMessage::Events { events: more, .. })) => events.extend(more),
            Some(Ok(WatchMessage::Progress { .. })) => continue,
            other => panic!("expected {count} events, have {events:?}, then got {other:?}"),
        }
    }
    assert_eq!(events.len(), count, "more events than expected: {events:?}");
    events
}

/// Drains a watch to its end in a thread; returns what it yielded and how long that took. Fails the
/// test if the watch is still open after `limit`.
fn drain_within(watch: Watch, limit: Duration) -> (Vec<Result<WatchMessage, Error>>, Duration) {
    within("draining the watch", limit, move || watch.collect())
}

/// The keys of `kvs` as strings, in order.
fn keys(kvs: &[etcd_await_election::etcd::KeyValue]) -> Vec<String> {
    kvs.iter()
        .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
        .collect()
}

/// The value stored at `key`, if any.
fn value_of(client: &Client, key: &str) -> Option<Vec<u8>> {
    let answer = client
        .range(&RangeRequest::key(key))
        .unwrap_or_else(|e| panic!("range {key}: {e}"));
    assert!(answer.kvs.len() <= 1, "{answer:?}");
    answer.kvs.into_iter().next().map(|kv| kv.value)
}

/// TLS files for the client: the CA and optionally a certificate and key, named as the binary names them.
fn tls(ca: &Path, client: Option<(&Path, &Path)>) -> TlsFiles {
    TlsFiles {
        ca: NamedPath::new(CACERT, ca),
        client: client.map(|(cert, key)| (NamedPath::new(CERT, cert), NamedPath::new(KEY, key))),
    }
}

/// A client of a TLS member with the given TLS files.
fn tls_client(etcd: &Etcd, files: TlsFiles) -> Client {
    let mut config = config(&[etcd.client_url()]);
    config.tls = Some(files);
    connect(config)
}

fn credentials(username: &str, password: &str) -> Option<Credentials> {
    Some(Credentials {
        username: username.into(),
        password: password.into(),
    })
}

/// A minimal HTTP/1.0 POST returning (status, body): talks to etcd behind the client's back.
fn http_post(hostport: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(hostport).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut request = format!(
        "POST {path} HTTP/1.0\r\nHost: {hostport}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    s.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().expect("status code");
    let body = response.split_once("\r\n\r\n").map_or("", |x| x.1);
    (status, body.to_string())
}

/// Exercises lease, kv and watch calls through `client`: grant, watch, put with the lease, range,
/// keepalive, revoke (key gone, watch sees the delete). Used by the TLS and auth tests.
fn exercise(client: &Client, key: &str) {
    let grant = client.lease_grant(30).expect("lease_grant");
    let mut watch = client
        .watch(&WatchRequest::key(key, 0), &Cancel::default())
        .expect("open the watch");
    let put = client.put(key.as_bytes(), b"v", grant.id).expect("put");
    assert_eq!(value_of(client, key).as_deref(), Some(&b"v"[..]));
    let kept = client.lease_keepalive(grant.id).expect("lease_keepalive");
    assert_eq!((kept.id, kept.ttl), (grant.id, grant.ttl));
    let events = next_events(&mut watch, 1);
    assert_eq!(events[0].kind, EventKind::Put);
    assert_eq!(events[0].kv.mod_revision, put.header.revision);
    assert_eq!(events[0].kv.lease, grant.id);
    client.lease_revoke(grant.id).expect("lease_revoke");
    assert_eq!(value_of(client, key), None);
    let events = next_events(&mut watch, 1);
    assert_eq!(events[0].kind, EventKind::Delete);
}

// ---- leases ----

#[test]
fn lease_grant_keepalive_time_to_live_and_revoke() {
    let etcd = Etcd::start();
    let client = client_of(&etcd);

    let grant = client.lease_grant(10).expect("lease_grant");
    assert_ne!(grant.id, 0);
    assert!(grant.ttl >= 10, "{grant:?}");
    let other = client.lease_grant(10).expect("second lease_grant");
    assert_ne!(other.id, grant.id, "two grants returned the same lease");

    let live = client.lease_time_to_live(grant.id).expect("time_to_live");
    assert_eq!(live.id, grant.id);
    assert!(
        live.ttl > 0 && live.ttl <= grant.ttl,
        "{live:?} for {grant:?}"
    );

    let kept = client.lease_keepalive(grant.id).expect("keepalive");
    assert_eq!(kept.id, grant.id);
    assert_eq!(
        kept.ttl, grant.ttl,
        "a keepalive resets the TTL to the granted one"
    );

    client.lease_revoke(grant.id).expect("revoke");
    let gone = client.lease_time_to_live(grant.id).expect("time_to_live");
    assert_eq!(gone.ttl, -1, "time-to-live of a revoked lease: {gone:?}");
    // The other lease is untouched.
    assert!(client.lease_time_to_live(other.id).expect("ttl").ttl > 0);
}

#[test]
fn keepalive_of_a_revoked_lease_is_lease_gone() {
    let etcd = Etcd::start();
    let client = client_of(&etcd);
    let grant = client.lease_grant(10).expect("lease_grant");
    client.lease_revoke(grant.id).expect("revoke");

    let error = client.lease_keepalive(grant.id).expect_err("keepalive");
    assert_eq!(error, Error::LeaseGone { lease: grant.id });
    assert!(error.is_lease_gone());
    assert!(!error.is_endpoint_failure(), "{error}");
    assert!(
        error.to_string().contains(&format!("{:x}", grant.id)),
        "{error}"
    );
}

#[test]
fn revoking_twice_is_lease_not_found() {
    let etcd = Etcd::start();
    let client = client_of(&etcd);
    let grant = client.lease_grant(10).expect("lease_grant");
    client.lease_revoke(grant.id).expect("first revoke");

    let error = client.lease_revoke(grant.id).expect_err("second revoke");
    assert!(error.is_lease_gone(), "{error:?}");
    assert_eq!(error.grpc_code(), Some(code::NOT_FOUND), "{error:?}");
    assert!(!error.is_endpoint_failure(), "{error:?}");
    let text = error.to_string();
    assert!(text.contains("lease not found"), "{text}");
    assert!(text.contains(&etcd.client_url()), "{text}");
}

#[test]
fn an_expired_lease_takes_its_key_and_is_gone() {
    let etcd = Etcd::start();
    let client = client_of(&etcd);
    // The shortest TTL etcd grants here (it may raise the request to its minimum).
    let grant = client.lease_grant(1).expect("lease_grant");
    client.put(b"short", b"v", grant.id).expect("put");
    wait_until(
        "the lease expires and takes its key",
        Duration::from_secs(grant.ttl as u64 + 10),
        || value_of(&client, "short").is_none(),
    );
    assert_eq!(client.lease_time_to_live(grant.id).expect("ttl").ttl, -1);
    let error = client.lease_keepalive(grant.id).expect_err("keepalive");
    assert!(error.is_lease_gone(), "{error:?}");
}

// ---- kv ----

#[test]
fn put_with_a_lease_disappears_on_revoke() {
    let etcd = Etcd::start();
    let client = client_of(&etcd);
    let grant = client.lease_grant(30).expect("lease_grant");
    let put = client.put(b"leased", b"v1", grant.id).expect("put");
    client.put(b"unleased", b"v2", 0).expect("put");

    let kv = &client
        .range(&RangeRequest::key("leased"))
        .expect("range")
        .kvs[0];
    assert_eq!(
        (kv.key.as_slice(), kv.value.as_slice()),
        (&b"leased"[..], &b"v1"[..])
    );
    assert_eq!(kv.lease, grant.id);
    assert_eq!(kv.create_revision, put.header.revision);
    assert_eq!(kv.mod_revision, put.header.revision);
    assert_eq!(kv.version, 1);

    client.lease_revoke(grant.id).expect("revoke");
    assert_eq!(value_of(&client, "leased"), None);
    assert_eq!(value_of(&client, "unleased").as_deref(), Some(&b"v2"[..]));
}

#[test]
fn range_single_prefix_limit_sort_and_max_create_revision() {
    let etcd = Etcd::start();
    let client = client_of(&etcd);
    // Created out of key order, so sorting by creation differs from sorting by key.
    let mut created = Vec::new();
    for key in ["p/b", "p/c", "p/a"] {
        let put = client.put(key.as_bytes(), key.as_bytes(), 0).expect("put");
        created.push((put.header.revision, key.to_string()));
    }
    client.put(b"p", b"not under p/", 0).expect("put");
    client.put(b"q/a", b"other prefix", 0).expect("put");
    let second = client.put(b"p/b", b"updated", 0).expect("update");

    // One key: its latest value, and the header carries the store's revision.
    let one = client.range(&RangeRequest::key("p/b")).expect("range");
    assert_eq!(keys(&one.kvs), ["p/b"]);
    assert_eq!(one.kvs[0].value, b"updated");
    assert_eq!(one.kvs[0].version, 2);
    assert_eq!(one.kvs[0].create_revision, created[0].0);
    assert_eq!(one.header.revision, second.header.revision);
    assert!(client
        .range(&RangeRequest::key("p/z"))
        .expect("range")
        .kvs
        .is_empty());

    // A prefix: exactly the keys under it, in key order.
    let all = client.range(&RangeRequest::prefix("p/")).expect("range");
    let mut expected: Vec<String> = created.iter().map(|(_, k)| k.clone()).collect();
    expected.sort();
    assert_eq!(keys(&all.kvs), expected);
    assert_eq!(all.count, 3);
    assert!(!all.more);

    // A limit: fewer keys, `more` set, `count` still the total.
    let limited = client
        .range(&RangeRequest::prefix("p/").limit(2))
        .expect("range");
    assert_eq!(keys(&limited.kvs), expected[..2]);
    assert!(limited.more);
    assert_eq!(limited.count, 3);

    // Sorted by creation, newest first.
    let mut newest_first = created.clone();
    newest_first.sort_by_key(|&(revision, _)| std::cmp::Reverse(revision));
    let newest_first: Vec<String> = newest_first.into_iter().map(|(_, k)| k).collect();
    let sorted = client
        .range(&RangeRequest::prefix("p/").sort(SortTarget::Create, SortOrder::Descend))
        .expect("range");
    assert_eq!(keys(&sorted.kvs), newest_first);
    let newest = client
        .range(
            &RangeRequest::prefix("p/")
                .sort(SortTarget::Create, SortOrder::Descend)
                .limit(1),
        )
        .expect("range");
    assert_eq!(keys(&newest.kvs), newest_first[..1]);

    // Only keys created at or before a revision (what an election candidate waits on).
    let older = client
        .range(&RangeRequest::prefix("p/").max_create_revision(created[1].0))
        .expect("range");
    let mut first_two: Vec<String> = created[..2].iter().map(|(_, k)| k.clone()).collect();
    first_two.sort();
    assert_eq!(keys(&older.kvs), first_two);

    // Count only.
    let counted = client
        .range(&RangeRequest::prefix("p/").count_only())
        .expect("range");
    assert_eq!(counted.count, 3);
    assert!(counted.kvs.is_empty(), "{counted:?}");
}

#[test]
fn range_at_a_compacted_revision_is_compacted() {
    let etcd = Etcd::start();
    let client = client_of(&etcd);
    let first = client.put(b"k", b"1", 0).expect("put");
    let last = client.put(b"k", b"2", 0).expect("put");

    let old = RangeRequest {
        revision: first.header.revision,
        ..RangeRequest::key("k")
    };
    assert_eq!(
        client.range(&old).expect("range at revision").kvs[0].value,
        b"1"
    );
    client.compact(last.header.revision).expect("compact");
    let error = client
        .range(&old)
        .expect_err("range at a compacted revision");
    assert!(error.is_compacted(), "{error:?}");
    assert_eq!(error.grpc_code(), Some(code::OUT_OF_RANGE));
}

#[test]
fn delete_range_of_a_prefix() {
    let etcd = Etcd::start();
    let client = client_of(&etcd);
    for key in ["d/1", "d/2", "d/3", "d", "e/1"] {
        client.put(key.as_bytes(), b"v", 0).expect("put");
    }
    let single = client.delete_range(b"d/3", b"").expect("delete one");
    assert_eq!(single.deleted, 1);
    let gone = client.delete_range(b"d/3", b"").expect("delete again");
    assert_eq!(gone.deleted, 0);

    let prefix = RangeRequest::prefix("d/");
    let deleted = client
        .delete_range(&prefix.key, &prefix.range_end)
        .expect("delete prefix");
    assert_eq!(deleted.deleted, 2);
    assert!(client.range(&prefix).expect("range").kvs.is_empty());
    assert!(
        value_of(&client, "d").is_some(),
        "a key outside the prefix was deleted"
    );
    assert!(
        value_of(&client, "e/1").is_some(),
        "a key outside the prefix was deleted"
    );
}

#[test]
fn txn_create_if_absent_then_fails_and_returns_the_existing_key() {
    let etcd = Etcd::start();
    let client = client_of(&etcd);
    let grant = client.lease_grant(30).expect("lease_grant");
    let create_if_absent = |value: &str| TxnRequest {
        compare: vec![Compare::create_revision("lock", CompareResult::Equal, 0)],
        success: vec![Op::Put {
            key: b"lock".to_vec(),
            value: value.as_bytes().to_vec(),
            lease: grant.id,
        }],
        failure: vec![Op::Range(RangeRequest::key("lock"))],
    };

    let first = client.txn(&create_if_absent("first")).expect("txn");
    assert!(first.succeeded, "{first:?}");
    let [OpResponse::Put(put)] = first.responses.as_slice() else {
        panic!("expected one put response: {first:?}");
    };
    assert_eq!(put.header.revision, first.header.revision);

    let second = client.txn(&create_if_absent("second")).expect("txn");
    assert!(!second.succeeded, "{second:?}");
    let [OpResponse::Range(range)] = second.responses.as_slice() else {
        panic!("expected one range response: {second:?}");
    };
    assert_eq!(range.kvs.len(), 1);
    assert_eq!(range.kvs[0].value, b"first");
    assert_eq!(range.kvs[0].create_revision, first.header.revision);
    assert_eq!(range.kvs[0].lease, grant.id);
    // The failed transaction wrote nothing.
    assert_eq!(second.header.revision, first.header.revision);
    assert_eq!(value_of(&client, "lock").as_deref(), Some(&b"first"[..]));
}

#[test]
fn txn_runs_put_range_and_delete_ops_in_order() {
    let etcd = Etcd::start();
    let client = client_of(&etcd);
    let old = client.put(b"t/old", b"x", 0).expect("put");

    let txn = TxnRequest {
        compare: vec![Compare::create_revision(
            "t/old",
            CompareResult::Equal,
            old.header.revision,
        )],
        success: vec![
            Op::Put {
                key: b"t/new".to_vec(),
                value: b"y".to_vec(),
                lease: 0,
            },
            Op::Range(RangeRequest::prefix("t/")),
            Op::Delete {
                key: b"t/old".to_vec(),
                range_end: Vec::new(),
            },
        ],
        failure: vec![],
    };
    let answer = client.txn(&txn).expect("txn");
    assert!(answer.succeeded, "{answer:?}");
    let [OpResponse::Put(_), OpResponse::Range(range), OpResponse::Delete(delete)] =
        answer.responses.as_slice()
    else {
        panic!("expected put, range and delete responses: {answer:?}");
    };
    // The range runs after the put of the same transaction and sees it.
    assert_eq!(keys(&range.kvs), ["t/new", "t/old"]);
    assert_eq!(delete.deleted, 1);
    assert_eq!(value_of(&client, "t/old"), None);
    assert_eq!(value_of(&client, "t/new").as_deref(), Some(&b"y"[..]));

    // The compare now fails (t/old is gone): only the failure ops run.
    let txn = TxnRequest {
        failure: vec![Op::Delete {
            key: b"t/".to_vec(),
            range_end: etcd_await_election::etcd::prefix_end(b"t/"),
        }],
        ..txn
    };
    let answer = client.txn(&txn).expect("txn");
    assert!(!answer.succeeded, "{answer:?}");
    let [OpResponse::Delete(delete)] = answer.responses.as_slice() else {
        panic!("expected one delete response: {answer:?}");
    };
    assert_eq!(delete.deleted, 1);
    assert!(client
        .range(&RangeRequest::prefix("t/"))
        .expect("range")
        .kvs
        .is_empty());
}

/// A request larger than the HTTP agent's 128 KiB output buffer (ureq's default) goes out as it
/// is: puts and a transaction of values up to etcd's 1.5 MiB request limit read back byte for
/// byte. The election's own requests are small; the client's API takes any value.
#[test]
fn requests_larger_than_the_output_buffer_arrive_intact() {
    let etcd = Etcd::start();
    let client = client_of(&etcd);
    for size in [100 * 1024, 128 * 1024, 256 * 1024, 1024 * 1024] {
        let value: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let key = format!("big-{size}");
        if let Err(error) = client.put(key.as_bytes(), &value, 0) {
            panic!("put of a {size}-byte value: {error}");
        }
        assert!(value_of(&client, &key) == Some(value.clone()), "{size}");
        let txn = TxnRequest {
            compare: vec![],
            success: vec![Op::Put {
                key: format!("txn-{size}").into_bytes(),
                value: value.clone(),
                lease: 0,
            }],
            failure: vec![],
        };
        if let Err(error) = client.txn(&txn) {
            panic!("txn of a {size}-byte value: {error}");
        }
        assert!(
            value_of(&client, &format!("txn-{size}")) == Some(value),
            "{size}"
        );
    }
}

// ---- watch ----

#[test]
fn watch_sees_a_put_then_a_delete_in_order() {
    let etcd = Etcd::start();
    let client = client_of(&etcd);
    let mut watch = client
        .watch(&WatchRequest::key("w", 0), &Cancel::default())
        .expect("watch");
    assert_eq!(watch.endpoint(), Some(etcd.client_url().as_str()));

    client.put(b"other", b"not watched", 0).expect("put");
    let put = client.put(b"w", b"v", 0).expect("put");
    let delete = client.delete_range(b"w", b"").expect("delete");
    assert_eq!(delete.deleted, 1);

    let events = next_events(&mut watch, 2);
    assert_eq!(events[0].kind, EventKind::Put);
    assert_eq!(events[0].kv.key, b"w");
    assert_eq!(events[0].kv.value, b"v");
    assert_eq!(events[0].kv.create_revision, put.header.revision);
    assert_eq!(events[0].kv.mod_revision, put.header.revision);
    assert_eq!(events[1].kind, EventKind::Delete);
    assert_eq!(events[1].kv.key, b"w");
    assert_eq!(events[1].kv.mod_revision, delete.header.revision);
    assert!(put.header.revision < delete.header.revision);
}

#[test]
fn watch_from_a_past_revision_replays_history() {
    let etcd = Etcd::start();
    let client = client_of(&etcd);
    let first = client.put(b"h", b"1", 0).expect("put");
    let second = client.put(b"h", b"2", 0).expect("put");
    let mut watch = client
        .watch(
            &WatchRequest::key("h", first.header.revision),
            &Cancel::default(),
        )
        .expect("watch");
    let events = next_events(&mut watch, 2);
    let seen: Vec<(i64, &[u8])> = events
        .iter()
        .map(|e| (e.kv.mod_revision, e.kv.value.as_slice()))
        .collect();
    assert_eq!(
        seen,
        [
            (first.header.revision, &b"1"[..]),
            (second.header.revision, &b"2"[..])
        ]
    );
}

#[test]
fn watch_from_a_compacted_revision_is_canceled_then_ends() {
    let etcd = Etcd::start();
    let client = client_of(&etcd);
    let first = client.put(b"c", b"1", 0).expect("put");
    client.put(b"c", b"2", 0).expect("put");
    let last = client.put(b"c", b"3", 0).expect("put");
    client.compact(last.header.revision).expect("compact");

    let watch = client
        .watch(
            &WatchRequest::key("c", first.header.revision),
            &Cancel::default(),
        )
        .expect("watch");
    let (items, _) = drain_within(watch, Duration::from_secs(15));
    let [Ok(WatchMessage::Canceled {
        compact_revision, ..
    })] = items.as_slice()
    else {
        panic!("expected one cancellation, then the end: {items:?}");
    };
    assert!(*compact_revision > 0);
    assert_eq!(*compact_revision, last.header.revision);
}

#[test]
fn watch_on_a_killed_member_ends_without_hanging() {
    let mut etcd = Etcd::start();
    let mut config = config(&[etcd.client_url()]);
    config.watch_idle_timeout = Duration::from_secs(2);
    let client = connect(config);
    let mut watch = client
        .watch(&WatchRequest::key("k", 0), &Cancel::default())
        .expect("watch");
    let put = client.put(b"k", b"v", 0).expect("put");
    assert_eq!(
        next_events(&mut watch, 1)[0].kv.mod_revision,
        put.header.revision
    );

    etcd.kill();
    let (items, _) = drain_within(watch, Duration::from_secs(20));
    assert!(
        items.len() <= 1 && items.iter().all(|item| item.is_err()),
        "after the kill the watch may only end, with or without an error: {items:?}"
    );
    // A new watch fails at once: nobody listens any more.
    let error = client
        .watch(&WatchRequest::key("k", 0), &Cancel::default())
        .err()
        .expect("watch on a killed member");
    assert!(error.is_endpoint_failure(), "{error:?}");
}

#[test]
fn watch_on_a_frozen_member_times_out_after_the_idle_timeout() {
    let etcd = Etcd::start();
    let idle = Duration::from_secs(1);
    let mut config = config(&[etcd.client_url()]);
    config.watch_idle_timeout = idle;
    let client = connect(config);
    let watch = client
        .watch(&WatchRequest::key("k", 0), &Cancel::default())
        .expect("watch");

    etcd.freeze();
    let (items, took) = drain_within(watch, idle * 10);
    etcd.resume();
    let [Err(Error::Transport { timed_out, .. })] = items.as_slice() else {
        panic!("expected one transport error, then the end: {items:?}");
    };
    assert!(timed_out, "{items:?}");
    assert!(
        took >= idle / 2,
        "ended after {took:?}, before the idle timeout {idle:?}"
    );
}

#[test]
fn watch_reopened_after_its_idle_timeout_sees_what_happened_meanwhile() {
    let etcd = Etcd::start();
    let idle = Duration::from_secs(1);
    let mut config = config(&[etcd.client_url()]);
    config.watch_idle_timeout = idle;
    let client = connect(config);
    let before = client.put(b"r", b"before", 0).expect("put");
    let next_revision = before.header.revision + 1;
    let watch = client
        .watch(&WatchRequest::key("r", next_revision), &Cancel::default())
        .expect("watch");

    // Nothing happens to the key: the read times out and the watch ends.
    let (items, took) = drain_within(watch, idle * 10);
    assert!(
        matches!(
            items.as_slice(),
            [Err(Error::Transport {
                timed_out: true,
                ..
            })]
        ),
        "expected one timeout error, then the end: {items:?}"
    );
    assert!(
        took >= idle / 2,
        "ended after {took:?}, before the idle timeout"
    );

    // While no watch is open, the key changes.
    let missed = client.put(b"r", b"meanwhile", 0).expect("put");
    let mut watch = client
        .watch(&WatchRequest::key("r", next_revision), &Cancel::default())
        .expect("watch again");
    let events = next_events(&mut watch, 1);
    assert_eq!(events[0].kind, EventKind::Put);
    assert_eq!(events[0].kv.value, b"meanwhile");
    assert_eq!(events[0].kv.mod_revision, missed.header.revision);
}

// ---- health ----

#[test]
fn health_is_ok_on_a_live_member_and_an_error_on_a_dead_one() {
    let etcd = Etcd::start();
    client_of(&etcd).health().expect("health of a live member");

    let dead = dead_endpoint();
    let error = connect(config(std::slice::from_ref(&dead)))
        .health()
        .expect_err("health of a dead endpoint");
    assert!(error.is_endpoint_failure(), "{error:?}");
    assert!(error.to_string().contains(&dead), "{error}");

    let client = connect(config(&[dead, etcd.client_url()]));
    client
        .health()
        .expect("health fails over to the live member");
    assert_eq!(client.current_endpoint(), etcd.client_url());
}

// ---- endpoints and failover ----

#[test]
fn a_dead_endpoint_fails_over_to_a_live_one() {
    let etcd = Etcd::start();
    let dead = dead_endpoint();
    let client = connect(config(&[dead.clone(), etcd.client_url()]));
    assert_eq!(
        client.current_endpoint(),
        dead,
        "calls start at the first endpoint"
    );

    client.put(b"k", b"v", 0).expect("put fails over");
    assert_eq!(client.current_endpoint(), etcd.client_url());
    // Later calls start at the endpoint that answered; streams fail over too.
    assert_eq!(value_of(&client, "k").as_deref(), Some(&b"v"[..]));
    let watch = client
        .watch(&WatchRequest::key("k", 0), &Cancel::default())
        .expect("watch");
    assert_eq!(watch.endpoint(), Some(etcd.client_url().as_str()));

    let client = connect(config(&[dead, etcd.client_url()]));
    let grant = client.lease_grant(10).expect("lease_grant fails over");
    let streamed = connect(config(&[dead_endpoint(), etcd.client_url()]));
    streamed
        .lease_keepalive(grant.id)
        .expect("keepalive (a stream) fails over");
    assert_eq!(streamed.current_endpoint(), etcd.client_url());
}

#[test]
fn all_endpoints_dead_names_each_endpoint() {
    let dead = [dead_endpoint(), dead_endpoint()];
    let client = connect(config(&dead));
    let started = Instant::now();
    let error = client
        .put(b"k", b"v", 0)
        .expect_err("put with no live endpoint");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refused connections fail fast"
    );
    let Error::AllEndpointsFailed { op, failures } = &error else {
        panic!("expected AllEndpointsFailed, got {error:?}");
    };
    assert_eq!(*op, "kv/put");
    assert_eq!(failures.len(), 2);
    for (failure, endpoint) in failures.iter().zip(&dead) {
        assert!(
            matches!(failure, Error::Transport { endpoint: e, timed_out: false, .. } if e == endpoint),
            "{failure:?}"
        );
    }
    assert!(error.is_endpoint_failure());
    let text = error.to_string();
    for endpoint in &dead {
        assert!(text.contains(endpoint.as_str()), "{text}");
    }

    // With one endpoint the error is that endpoint's own.
    let error = connect(config(&dead[..1]))
        .range(&RangeRequest::key("k"))
        .expect_err("range");
    assert!(
        matches!(&error, Error::Transport { endpoint, .. } if *endpoint == dead[0]),
        "{error:?}"
    );
}

#[test]
fn bare_host_port_and_http_forms_reach_the_member() {
    let etcd = Etcd::start();
    let url = etcd.client_url();
    for form in [
        etcd.endpoint_hostport(),
        url.clone(),
        format!("{url}/"),
        format!(" {url} "),
    ] {
        let client = connect(config(std::slice::from_ref(&form)));
        assert_eq!(client.current_endpoint(), url, "{form:?} normalised");
        client
            .put(b"k", form.as_bytes(), 0)
            .unwrap_or_else(|e| panic!("put via {form:?}: {e}"));
        assert_eq!(value_of(&client, "k"), Some(form.into_bytes()));
    }
}

/// URL schemes are case-insensitive (RFC 3986 section 3.1; Go's `url.Parse`, and so etcdctl, accept
/// `HTTP://`), and the configuration already treats `HTTPS://` as https when it requires `CACERT`.
#[test]
fn uppercase_schemes_are_accepted() {
    let etcd = Etcd::start();
    let url = etcd.client_url();
    for form in [
        url.replacen("http://", "HTTP://", 1),
        url.replacen("http://", "Http://", 1),
    ] {
        let client = Client::new(config(std::slice::from_ref(&form)))
            .unwrap_or_else(|e| panic!("Client::new refuses {form:?}: {e}"));
        assert_eq!(client.current_endpoint(), url, "{form:?} normalised");
        client
            .put(b"k", b"v", 0)
            .unwrap_or_else(|e| panic!("put via {form:?}: {e}"));
    }
}

#[test]
fn bad_endpoints_are_setup_errors_naming_the_endpoint() {
    for (text, reason) in [
        ("ftp://x", "scheme"),
        ("x:0", "out of range"),
        ("::1:2379", "brackets"),
        ("http://x:1/v3", "path"),
    ] {
        let (item, problem) = setup_error(config(&[text.to_string()]));
        assert!(item.contains(text), "{text}: {item}");
        assert!(problem.contains(reason), "{text}: {problem}");
        // Also when an earlier endpoint is fine: every endpoint is checked up front.
        let (item, _) = setup_error(config(&["http://127.0.0.1:2379".into(), text.into()]));
        assert!(item.contains(text), "{text}: {item}");
    }

    let (item, problem) = setup_error(config(&["https://127.0.0.1:2379".into()]));
    assert!(item.contains("https://127.0.0.1:2379"), "{item}");
    assert!(problem.contains("CA"), "{problem}");

    let (item, _) = setup_error(config(&[]));
    assert!(item.contains("endpoints"), "{item}");
}

#[test]
fn a_frozen_member_times_out_within_the_budget() {
    let frozen = Etcd::start();
    let live = Etcd::start();
    let budget = Duration::from_secs(1);
    let with_budget = |endpoints: &[String]| {
        let mut config = config(endpoints);
        config.request_timeout = budget;
        connect(config)
    };
    // Two spellings of the same member: two endpoints, both frozen.
    let both_frozen = with_budget(&[frozen.client_url(), frozen.endpoint_hostport()]);
    let then_live = with_budget(&[frozen.client_url(), live.client_url()]);
    both_frozen
        .put(b"k", b"before", 0)
        .expect("put before the freeze");
    then_live
        .put(b"k", b"before", 0)
        .expect("put before the freeze");
    assert_eq!(then_live.current_endpoint(), frozen.client_url());
    let grant = both_frozen.lease_grant(60).expect("lease_grant");

    frozen.freeze();
    // A unary call, a keepalive and the opening of a watch each give up after one budget per
    // endpoint, with a timeout error from each endpoint.
    type Call = fn(&Client, i64) -> Option<Error>;
    let calls: [(&str, Call); 3] = [
        ("put", |client, _| client.put(b"k", b"frozen", 0).err()),
        ("keepalive", |client, lease| {
            client.lease_keepalive(lease).err()
        }),
        ("watch", |client, _| {
            client
                .watch(&WatchRequest::key("k", 0), &Cancel::default())
                .err()
        }),
    ];
    for (call, run) in calls {
        let client = both_frozen.clone();
        let (error, took) = within(call, budget * 2 * 3, move || run(&client, grant.id));
        let error = error.unwrap_or_else(|| panic!("{call} on a frozen member succeeded"));
        assert!(
            took >= budget,
            "{call} gave up after {took:?}, before the budget"
        );
        let Error::AllEndpointsFailed { failures, .. } = &error else {
            panic!("{call}: expected AllEndpointsFailed, got {error:?}");
        };
        assert_eq!(failures.len(), 2, "{call}: {error:?}");
        for failure in failures {
            assert!(
                matches!(
                    failure,
                    Error::Transport {
                        timed_out: true,
                        ..
                    }
                ),
                "{call}: {failure:?}"
            );
            assert!(
                failure.to_string().contains("timed out"),
                "{call}: {failure}"
            );
        }
    }

    // With a live member behind the frozen one, the call succeeds after one budget.
    let caller = then_live.clone();
    let (result, took) = within("failover from a frozen member", budget * 3, move || {
        caller.put(b"k", b"failed over", 0)
    });
    result.expect("put fails over from the frozen member");
    assert!(took >= budget, "{took:?}");
    assert_eq!(then_live.current_endpoint(), live.client_url());

    frozen.resume();
    // A fresh key: the puts that timed out are still in the member's socket buffers and may be
    // applied after it resumes, in any order relative to new calls.
    wait_until(
        "the resumed member answers",
        Duration::from_secs(15),
        || both_frozen.put(b"resumed", b"yes", 0).is_ok(),
    );
    assert_eq!(
        value_of(&both_frozen, "resumed").as_deref(),
        Some(&b"yes"[..])
    );
    both_frozen
        .lease_keepalive(grant.id)
        .expect("keepalive after the resume");
}

#[test]
fn cluster_call_succeeds_via_another_member_after_a_kill() {
    let mut cluster = Cluster::start(3);
    // The client starts on a follower: killing it leaves the leader in place, so the next call's
    // success depends only on the client's failover, not on how fast a new leader is elected.
    let leader = cluster.leader().expect("a leader");
    let follower = (0..3).find(|&i| i != leader).expect("a follower");
    let mut endpoints = vec![cluster.member(follower).client_url()];
    endpoints.extend(
        (0..3)
            .filter(|&i| i != follower)
            .map(|i| cluster.member(i).client_url()),
    );
    let client = connect(config(&endpoints));
    client.put(b"k", b"1", 0).expect("put");
    assert_eq!(client.current_endpoint(), endpoints[0]);

    cluster.kill(follower);
    let put = client.put(b"k", b"2", 0).expect("put after the kill");
    assert_ne!(client.current_endpoint(), endpoints[0]);
    assert!(endpoints[1..].contains(&client.current_endpoint()));
    let kv = &client.range(&RangeRequest::key("k")).expect("range").kvs[0];
    assert_eq!(
        (kv.value.as_slice(), kv.mod_revision),
        (&b"2"[..], put.header.revision)
    );
    client.health().expect("health via a live member");
}

// ---- TLS ----

#[test]
fn mutual_tls_works_with_each_key_form() {
    let etcd = Etcd::start_tls(true);
    let files = etcd.tls_files().expect("tls files").clone();
    for (form, cert, key) in [
        ("pkcs8", &files.cert, &files.key_pkcs8),
        ("pkcs1", &files.rsa_cert, &files.key_pkcs1),
        ("sec1", &files.ec_cert, &files.key_sec1),
    ] {
        let client = tls_client(&etcd, tls(&files.ca, Some((cert, key))));
        exercise(&client, &format!("key-{form}"));
    }

    // A bare host:port speaks https once TLS files are given.
    let mut config = config(&[etcd.endpoint_hostport()]);
    config.tls = Some(tls(&files.ca, Some((&files.cert, &files.key_pkcs8))));
    let client = connect(config);
    assert_eq!(client.current_endpoint(), etcd.client_url());
    client
        .put(b"bare", b"v", 0)
        .expect("put via bare host:port");
}

#[test]
fn mutual_tls_member_refuses_a_client_without_a_certificate() {
    let etcd = Etcd::start_tls(true);
    let files = etcd.tls_files().expect("tls files").clone();
    let client = tls_client(&etcd, tls(&files.ca, None));
    let error = client
        .put(b"k", b"v", 0)
        .expect_err("put without a client cert");
    let text = error.to_string();
    assert!(text.contains(&etcd.client_url()), "{text}");
    assert!(error.is_endpoint_failure(), "{error:?}");
}

#[test]
fn ca_only_tls_works_and_a_wrong_ca_is_a_certificate_error() {
    let etcd = Etcd::start_tls(false);
    let files = etcd.tls_files().expect("tls files").clone();
    let client = tls_client(&etcd, tls(&files.ca, None));
    exercise(&client, "ca-only");
    client.health().expect("health over https");

    let wrong = tls_client(&etcd, tls(&files.wrong_ca, None));
    let error = wrong.put(b"k", b"v", 0).expect_err("put with the wrong CA");
    let text = error.to_string();
    assert!(text.contains(&etcd.client_url()), "{text}");
    assert!(text.contains("certificate"), "{text}");
    assert!(text.contains("UnknownIssuer"), "{text}");
    let error = wrong
        .watch(&WatchRequest::key("k", 0), &Cancel::default())
        .err()
        .expect("watch with the wrong CA");
    assert!(error.to_string().contains("UnknownIssuer"), "{error}");
}

/// The four permanent TLS mistakes a user makes at start are each told apart (the binary exits 69
/// on them, see tests/robustness.rs) with a hint naming the setting to fix, and the endpoint.
#[test]
fn tls_mistakes_are_told_apart_with_a_hint_naming_the_setting() {
    let ca_only = Etcd::start_tls(false);
    let mutual = Etcd::start_tls(true);
    let plain = Etcd::start();
    let ours = mutual.tls_files().expect("tls files").clone();
    let theirs = support::generate_tls(&mutual.dir().join("other-pki"));
    let https_to_plain = plain.client_url().replace("http://", "https://");
    let cases = [
        (
            "a CA that did not sign etcd's certificate",
            ca_only.client_url(),
            tls(&ours.wrong_ca, None),
            TlsProblem::UntrustedServer,
            vec![CACERT],
        ),
        (
            "a client certificate from another CA",
            mutual.client_url(),
            tls(&ours.ca, Some((&theirs.cert, &theirs.key_pkcs8))),
            TlsProblem::ClientRefused,
            vec![CERT, KEY],
        ),
        (
            "https:// to a plain-HTTP etcd",
            https_to_plain.clone(),
            tls(&ours.ca, None),
            TlsProblem::NotTls,
            vec!["use http://"],
        ),
    ];
    for (case, endpoint, files, problem, named) in cases {
        let mut config = config(std::slice::from_ref(&endpoint));
        config.tls = Some(files);
        let client = connect(config);
        let error = client.put(b"k", b"v", 0).expect_err(case);
        assert_eq!(
            error.tls_problems(),
            Some(vec![problem]),
            "{case}: {error:?}"
        );
        assert!(error.is_endpoint_failure(), "{case}: {error:?}");
        let text = error.to_string();
        assert!(text.contains(&endpoint), "{case}: {text}");
        for name in named {
            assert!(text.contains(name), "{case}: no {name:?} in {text}");
        }
    }
    // No client certificate where one is required: refused, though no variable names one.
    let client = tls_client(&mutual, tls(&ours.ca, None));
    let error = client
        .put(b"k", b"v", 0)
        .expect_err("no client certificate");
    assert_eq!(
        error.tls_problems(),
        Some(vec![TlsProblem::ClientRefused]),
        "{error:?}"
    );
}

#[test]
fn unusable_tls_files_are_setup_errors_naming_the_file() {
    let etcd = Etcd::start_tls(false);
    let files = etcd.tls_files().expect("tls files").clone();
    let dir = etcd.dir();
    let write = |name: &str, text: &str| -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write test file");
        path
    };
    let missing = dir.join("missing.pem");
    let garbage = write("garbage.pem", "this is not PEM at all\n");
    let broken = write(
        "broken.pem",
        "-----BEGIN CERTIFICATE-----\n!!!! not base64 !!!!\n-----END CERTIFICATE-----\n",
    );
    let empty = write("empty.key", "");
    let cert_text = std::fs::read_to_string(&files.cert).expect("read cert");
    let cert_as_key = write("cert-as.key", &cert_text);

    let cases: [(&str, TlsFiles, &str, &Path, &str); 8] = [
        (
            "missing CA",
            tls(&missing, None),
            CACERT,
            &missing,
            "cannot read",
        ),
        (
            "garbage CA",
            tls(&garbage, None),
            CACERT,
            &garbage,
            "no PEM certificate",
        ),
        ("broken PEM CA", tls(&broken, None), CACERT, &broken, "PEM"),
        (
            "missing cert",
            tls(&files.ca, Some((&missing, &files.key_pkcs8))),
            CERT,
            &missing,
            "cannot read",
        ),
        (
            "garbage cert",
            tls(&files.ca, Some((&garbage, &files.key_pkcs8))),
            CERT,
            &garbage,
            "no PEM certificate",
        ),
        (
            "empty key",
            tls(&files.ca, Some((&files.cert, &empty))),
            KEY,
            &empty,
            "no PEM private key",
        ),
        (
            "certificate as key",
            tls(&files.ca, Some((&files.cert, &cert_as_key))),
            KEY,
            &cert_as_key,
            "no PEM private key",
        ),
        (
            "key of another certificate",
            tls(&files.ca, Some((&files.cert, &files.key_sec1))),
            KEY,
            &files.key_sec1,
            "cannot be used with the client certificate",
        ),
    ];
    for (case, tls_files, name, path, reason) in cases {
        let mut config = config(&[etcd.client_url()]);
        config.tls = Some(tls_files);
        let (item, problem) = setup_error(config);
        let expected = format!("{name}={}", path.display());
        assert_eq!(item, expected, "{case}: {problem}");
        assert!(problem.contains(reason), "{case}: {problem}");
        let text = Error::Setup { item, problem }.to_string();
        assert!(text.contains(&expected), "{case}: {text}");
    }
}

// ---- auth ----

#[test]
fn credentials_work_for_put_range_txn_and_watch() {
    let etcd = Etcd::start_auth();
    let mut config = config(&[etcd.client_url()]);
    config.credentials = credentials(support::USER, support::PASSWORD);
    let client = connect(config);

    exercise(&client, "authed");
    let txn = TxnRequest {
        compare: vec![Compare::create_revision("a/lock", CompareResult::Equal, 0)],
        success: vec![Op::Put {
            key: b"a/lock".to_vec(),
            value: b"me".to_vec(),
            lease: 0,
        }],
        failure: vec![Op::Range(RangeRequest::key("a/lock"))],
    };
    assert!(client.txn(&txn).expect("txn").succeeded);
    assert!(!client.txn(&txn).expect("txn").succeeded);
    // What the client wrote is really there, for another user too.
    let got = etcd.etcdctl_ok(&["get", "a/lock", "--print-value-only"]);
    assert_eq!(got.trim(), "me");
}

#[test]
fn wrong_password_or_no_credentials_are_clear_etcd_errors() {
    let etcd = Etcd::start_auth();
    let mut wrong = config(&[etcd.client_url()]);
    wrong.credentials = credentials(support::USER, "not-the-password");
    let client = connect(wrong);
    for error in [
        client.put(b"k", b"v", 0).expect_err("put"),
        client
            .watch(&WatchRequest::key("k", 0), &Cancel::default())
            .err()
            .expect("watch"),
    ] {
        assert!(matches!(error, Error::Etcd { .. }), "{error:?}");
        assert_eq!(error.grpc_code(), Some(code::INVALID_ARGUMENT), "{error:?}");
        assert!(!error.is_endpoint_failure(), "{error:?}");
        let text = error.to_string();
        assert!(text.contains("authentication failed"), "{text}");
        assert!(text.contains(&etcd.client_url()), "{text}");
        assert!(
            !text.contains("not-the-password"),
            "the password leaks: {text}"
        );
    }

    let anonymous = client_of(&etcd);
    let error = anonymous
        .put(b"k", b"v", 0)
        .expect_err("put without credentials");
    assert_eq!(error.grpc_code(), Some(code::INVALID_ARGUMENT), "{error:?}");
    assert!(error.to_string().contains("user name is empty"), "{error}");
}

#[test]
fn an_expired_token_is_renewed_transparently() {
    const TTL: u64 = 2;
    let etcd = Etcd::start_auth_with_token_ttl(TTL);
    let authed = || {
        let mut config = config(&[etcd.client_url()]);
        config.credentials = credentials(support::USER, support::PASSWORD);
        connect(config)
    };
    // Two clients, each with its own token: one for unary calls, one for a watch.
    let unary = authed();
    let watcher = authed();
    let grant = unary.lease_grant(60).expect("lease_grant");
    unary.put(b"k", b"1", 0).expect("put");
    watcher.range(&RangeRequest::key("k")).expect("range");
    // A token obtained after both clients last used theirs: once it is refused, theirs are too.
    let hostport = etcd.endpoint_hostport();
    let (status, body) = http_post(
        &hostport,
        "/v3/auth/authenticate",
        &[],
        &format!(
            r#"{{"name":"{}","password":"{}"}}"#,
            support::USER,
            support::PASSWORD
        ),
    );
    assert_eq!(status, 200, "{body}");
    let probe = body
        .split(r#""token":""#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a token")
        .to_string();

    // The condition under test is elapsed idle time, so this sleep is the wait itself: the TTL
    // plus 1.5 s for etcd's once-a-second expiry sweep.
    thread::sleep(Duration::from_secs(TTL) + Duration::from_millis(1500));
    let (status, body) = http_post(
        &hostport,
        "/v3/kv/range",
        &[("Authorization", &probe)],
        r#"{"key":"aw=="}"#,
    );
    assert_eq!(status, 401, "the probe token should have expired: {body}");

    unary.put(b"k", b"2", 0).expect("put with an expired token");
    assert_eq!(value_of(&unary, "k").as_deref(), Some(&b"2"[..]));
    unary
        .lease_keepalive(grant.id)
        .expect("keepalive after the token expired");

    let mut watch = watcher
        .watch(&WatchRequest::key("k", 0), &Cancel::default())
        .expect("watch with an expired token");
    let put = unary.put(b"k", b"3", 0).expect("put");
    let events = next_events(&mut watch, 1);
    assert_eq!(events[0].kv.mod_revision, put.header.revision);
}
