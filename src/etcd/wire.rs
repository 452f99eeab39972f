//! Wire types of etcd's v3 JSON gateway, as they really arrive: 64-bit integers as strings, `bytes` as
//! base64, and every field that holds its default value omitted. Requests are built as JSON values
//! with 64-bit integers sent as strings, which every gateway version accepts.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::de::{self, Deserializer};
use serde::Deserialize;
use serde_json::{json, Value};

/// Encodes bytes the way the gateway expects `bytes` fields.
pub fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

/// The end of the range that holds every key starting with `prefix` (etcd's `GetPrefixRangeEnd`).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0] // every key: the prefix was empty or all 0xff
}

/// The response header every answer carries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct Header {
    #[serde(deserialize_with = "int")]
    pub revision: i64,
    #[serde(deserialize_with = "uint")]
    pub member_id: u64,
    #[serde(deserialize_with = "uint")]
    pub raft_term: u64,
}

/// One key and its metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct KeyValue {
    #[serde(deserialize_with = "bytes")]
    pub key: Vec<u8>,
    #[serde(deserialize_with = "bytes")]
    pub value: Vec<u8>,
    #[serde(deserialize_with = "int")]
    pub create_revision: i64,
    #[serde(deserialize_with = "int")]
    pub mod_revision: i64,
    #[serde(deserialize_with = "int")]
    pub version: i64,
    #[serde(deserialize_with = "int")]
    pub lease: i64,
}

/// A granted lease.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct LeaseGrant {
    pub header: Header,
    #[serde(rename = "ID", deserialize_with = "int")]
    pub id: i64,
    #[serde(rename = "TTL", deserialize_with = "int")]
    pub ttl: i64,
    pub error: String,
}

/// The answer to a keepalive or time-to-live request; `ttl` is 0 (omitted) or -1 for a gone lease.
/// `granted_ttl` is the TTL the lease was granted with (time-to-live answers only).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct LeaseTtl {
    pub header: Header,
    #[serde(rename = "ID", deserialize_with = "int")]
    pub id: i64,
    #[serde(rename = "TTL", deserialize_with = "int")]
    pub ttl: i64,
    #[serde(rename = "grantedTTL", deserialize_with = "int")]
    pub granted_ttl: i64,
}

/// The order of a sorted range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortOrder {
    Ascend,
    Descend,
}

/// What a range is sorted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortTarget {
    Key,
    Create,
    Mod,
}

/// A range request; build it with [`RangeRequest::key`] or [`RangeRequest::prefix`] and the setters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeRequest {
    pub key: Vec<u8>,
    /// Empty for a single key.
    pub range_end: Vec<u8>,
    pub limit: i64,
    pub sort: Option<(SortTarget, SortOrder)>,
    pub max_create_revision: i64,
    pub revision: i64,
    pub count_only: bool,
}

impl RangeRequest {
    /// One key.
    pub fn key(key: impl Into<Vec<u8>>) -> RangeRequest {
        RangeRequest {
            key: key.into(),
            ..RangeRequest::default()
        }
    }

    /// Every key that starts with `prefix`.
    pub fn prefix(prefix: impl Into<Vec<u8>>) -> RangeRequest {
        let key = prefix.into();
        RangeRequest {
            range_end: prefix_end(&key),
            key,
            ..RangeRequest::default()
        }
    }

    /// At most `limit` keys (0 = no limit).
    pub fn limit(mut self, limit: i64) -> RangeRequest {
        self.limit = limit;
        self
    }

    /// Sorted by `target` in `order`.
    pub fn sort(mut self, target: SortTarget, order: SortOrder) -> RangeRequest {
        self.sort = Some((target, order));
        self
    }

    /// Only keys created at or before `revision`.
    pub fn max_create_revision(mut self, revision: i64) -> RangeRequest {
        self.max_create_revision = revision;
        self
    }

    /// Only the count of matching keys.
    pub fn count_only(mut self) -> RangeRequest {
        self.count_only = true;
        self
    }

    pub(crate) fn to_json(&self) -> Value {
        let mut body = json!({ "key": b64(&self.key) });
        if !self.range_end.is_empty() {
            body["range_end"] = b64(&self.range_end).into();
        }
        if self.limit != 0 {
            body["limit"] = self.limit.to_string().into();
        }
        if let Some((target, order)) = self.sort {
            let target = match target {
                SortTarget::Key => "KEY",
                SortTarget::Create => "CREATE",
                SortTarget::Mod => "MOD",
            };
            let order = match order {
                SortOrder::Ascend => "ASCEND",
                SortOrder::Descend => "DESCEND",
            };
            body["sort_target"] = target.into();
            body["sort_order"] = order.into();
        }
        if self.max_create_revision != 0 {
            body["max_create_revision"] = self.max_create_revision.to_string().into();
        }
        if self.revision != 0 {
            body["revision"] = self.revision.to_string().into();
        }
        if self.count_only {
            body["count_only"] = true.into();
        }
        body
    }
}

/// The answer to a range request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct RangeResponse {
    pub header: Header,
    pub kvs: Vec<KeyValue>,
    #[serde(deserialize_with = "int")]
    pub count: i64,
    pub more: bool,
}

/// The answer to a put.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct PutResponse {
    pub header: Header,
}

/// The answer to a delete.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct DeleteResponse {
    pub header: Header,
    #[serde(deserialize_with = "int")]
    pub deleted: i64,
}

/// How a compare relates the key's field to the given value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareResult {
    Equal,
    Greater,
    Less,
    NotEqual,
}

/// Which field of a key a compare looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareTarget {
    /// The create_revision (0 = the key does not exist).
    Create(i64),
    /// The mod_revision (the revision of the last write).
    Mod(i64),
    /// The lease the key is attached to (0 = none).
    Lease(i64),
}

/// A transaction guard on one field of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compare {
    pub key: Vec<u8>,
    pub result: CompareResult,
    pub target: CompareTarget,
}

impl Compare {
    /// `create_revision(key) <result> revision`.
    pub fn create_revision(
        key: impl Into<Vec<u8>>,
        result: CompareResult,
        revision: i64,
    ) -> Compare {
        Compare::of(key, result, CompareTarget::Create(revision))
    }

    /// `<target>(key) <result> value`.
    pub fn of(key: impl Into<Vec<u8>>, result: CompareResult, target: CompareTarget) -> Compare {
        Compare {
            key: key.into(),
            result,
            target,
        }
    }

    fn to_json(&self) -> Value {
        let result = match self.result {
            CompareResult::Equal => "EQUAL",
            CompareResult::Greater => "GREATER",
            CompareResult::Less => "LESS",
            CompareResult::NotEqual => "NOT_EQUAL",
        };
        let (target, field, value) = match self.target {
            CompareTarget::Create(revision) => ("CREATE", "create_revision", revision),
            CompareTarget::Mod(revision) => ("MOD", "mod_revision", revision),
            CompareTarget::Lease(lease) => ("LEASE", "lease", lease),
        };
        let mut compare = json!({ "key": b64(&self.key), "target": target, "result": result });
        compare[field] = value.to_string().into();
        compare
    }
}

/// One operation inside a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
        lease: i64,
    },
    Range(RangeRequest),
    Delete {
        key: Vec<u8>,
        range_end: Vec<u8>,
    },
}

impl Op {
    fn to_json(&self) -> Value {
        match self {
            Op::Put { key, value, lease } => {
                let mut put = json!({ "key": b64(key), "value": b64(value) });
                if *lease != 0 {
                    put["lease"] = lease.to_string().into();
                }
                json!({ "request_put": put })
            }
            Op::Range(range) => json!({ "request_range": range.to_json() }),
            Op::Delete { key, range_end } => {
                let mut delete = json!({ "key": b64(key) });
                if !range_end.is_empty() {
                    delete["range_end"] = b64(range_end).into();
                }
                json!({ "request_delete_range": delete })
            }
        }
    }
}

/// A transaction: if every compare holds, run `success`, else `failure`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TxnRequest {
    pub compare: Vec<Compare>,
    pub success: Vec<Op>,
    pub failure: Vec<Op>,
}

impl TxnRequest {
    pub(crate) fn to_json(&self) -> Value {
        let ops = |ops: &[Op]| ops.iter().map(Op::to_json).collect::<Vec<_>>();
        json!({
            "compare": self.compare.iter().map(Compare::to_json).collect::<Vec<_>>(),
            "success": ops(&self.success),
            "failure": ops(&self.failure),
        })
    }
}

/// The answer to one operation of a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub enum OpResponse {
    #[serde(rename = "response_put")]
    Put(PutResponse),
    #[serde(rename = "response_range")]
    Range(RangeResponse),
    #[serde(rename = "response_delete_range")]
    Delete(DeleteResponse),
}

/// The answer to a transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct TxnResponse {
    pub header: Header,
    pub succeeded: bool,
    pub responses: Vec<OpResponse>,
}

/// A watch request: keys from `key` to `range_end` (empty = one key), from `start_revision` on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchRequest {
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
    pub start_revision: i64,
    pub progress_notify: bool,
    /// Only deletions: etcd sends no PUT events (and so no values).
    pub deletes_only: bool,
}

impl WatchRequest {
    /// One key, from `start_revision` (0 = from now).
    pub fn key(key: impl Into<Vec<u8>>, start_revision: i64) -> WatchRequest {
        WatchRequest {
            key: key.into(),
            start_revision,
            ..WatchRequest::default()
        }
    }

    /// Only the key's deletions (etcd's `NOPUT` filter).
    pub fn deletes_only(mut self) -> WatchRequest {
        self.deletes_only = true;
        self
    }

    pub(crate) fn to_json(&self) -> Value {
        let mut create = json!({ "key": b64(&self.key) });
        if !self.range_end.is_empty() {
            create["range_end"] = b64(&self.range_end).into();
        }
        if self.start_revision != 0 {
            create["start_revision"] = self.start_revision.to_string().into();
        }
        if self.progress_notify {
            create["progress_notify"] = true.into();
        }
        if self.deletes_only {
            create["filters"] = json!(["NOPUT"]);
        }
        json!({ "create_request": create })
    }
}

/// What happened to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum EventKind {
    #[default]
    #[serde(rename = "PUT")]
    Put,
    #[serde(rename = "DELETE")]
    Delete,
}

/// One change seen by a watch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct WatchEvent {
    #[serde(rename = "type")]
    pub kind: EventKind,
    pub kv: KeyValue,
}

/// One message of a watch stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchMessage {
    /// The watch is registered; events after `header.revision` will follow.
    Created { header: Header },
    /// Changes, in revision order.
    Events {
        header: Header,
        events: Vec<WatchEvent>,
    },
    /// A progress notification: nothing changed up to `header.revision`.
    Progress { header: Header },
    /// The server cancelled the watch. `compact_revision` is non-zero when the start revision was
    /// compacted away: re-read state, then watch again from `compact_revision`.
    Canceled {
        header: Header,
        compact_revision: i64,
        reason: String,
    },
}

/// One line of the watch stream, as sent.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct WatchLine {
    pub result: Option<WatchResult>,
    pub error: Option<StreamError>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct WatchResult {
    pub header: Header,
    pub created: bool,
    pub canceled: bool,
    #[serde(deserialize_with = "int")]
    pub compact_revision: i64,
    pub cancel_reason: String,
    pub events: Vec<WatchEvent>,
}

impl WatchResult {
    pub(crate) fn into_message(self) -> WatchMessage {
        let header = self.header;
        if self.canceled {
            WatchMessage::Canceled {
                header,
                compact_revision: self.compact_revision,
                reason: self.cancel_reason,
            }
        } else if self.created {
            WatchMessage::Created { header }
        } else if self.events.is_empty() {
            WatchMessage::Progress { header }
        } else {
            WatchMessage::Events {
                header,
                events: self.events,
            }
        }
    }
}

/// An error line inside a stream (watch, keepalive).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct StreamError {
    pub grpc_code: u32,
    pub http_code: u16,
    pub message: String,
}

/// The body of a keepalive answer: one line `{"result":…}` or `{"error":…}`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct KeepAliveLine {
    pub result: Option<LeaseTtl>,
    pub error: Option<StreamError>,
}

/// An error body: `{"error":"…","message":"…","code":N}`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct ErrorBody {
    pub error: String,
    pub message: String,
    pub code: Option<u32>,
}

/// The answer to `GET /health`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct Health {
    pub health: String,
}

/// The answer to `auth/authenticate`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct AuthToken {
    pub token: String,
}

/// A 64-bit integer that arrives as a string or a number.
#[derive(Deserialize)]
#[serde(untagged)]
enum IntOrString {
    Int(i64),
    Uint(u64),
    Text(String),
}

fn int<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    match IntOrString::deserialize(d)? {
        IntOrString::Int(n) => Ok(n),
        IntOrString::Uint(n) => i64::try_from(n).map_err(de::Error::custom),
        IntOrString::Text(s) => s.parse().map_err(de::Error::custom),
    }
}

fn uint<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    match IntOrString::deserialize(d)? {
        IntOrString::Int(n) => u64::try_from(n).map_err(de::Error::custom),
        IntOrString::Uint(n) => Ok(n),
        IntOrString::Text(s) => s.parse().map_err(de::Error::custom),
    }
}

/// A base64 `bytes` field, decoded straight from the input (no intermediate `String`).
fn bytes<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    struct Base64;
    impl de::Visitor<'_> for Base64 {
        type Value = Vec<u8>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("base64 text")
        }
        fn visit_str<E: de::Error>(self, text: &str) -> Result<Vec<u8>, E> {
            B64.decode(text.as_bytes()).map_err(E::custom)
        }
    }
    d.deserialize_str(Base64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_the_last_byte_that_can_be() {
        assert_eq!(prefix_end(b"lock/"), b"lock0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
        assert_eq!(prefix_end(b""), vec![0]);
    }

    #[test]
    fn decodes_strings_numbers_and_omitted_defaults() {
        let r: RangeResponse = serde_json::from_str(
            r#"{"header":{"cluster_id":"14841639068965178418","member_id":"10276657743932975437","revision":"7","raft_term":"2"},
                "kvs":[{"key":"Zm9v","create_revision":"5","mod_revision":6,"version":"2","value":"YmFy","lease":"7587"}],"count":"1"}"#,
        )
        .unwrap();
        assert_eq!(r.header.revision, 7);
        assert_eq!(r.header.member_id, 10276657743932975437);
        assert_eq!(r.kvs[0].key, b"foo");
        assert_eq!(r.kvs[0].value, b"bar");
        assert_eq!((r.kvs[0].create_revision, r.kvs[0].mod_revision), (5, 6));
        assert!(!r.more);
        let empty: RangeResponse = serde_json::from_str(r#"{"header":{"revision":"3"}}"#).unwrap();
        assert_eq!((empty.kvs.len(), empty.count), (0, 0));
    }

    #[test]
    fn decodes_watch_lines() {
        let line: WatchLine = serde_json::from_str(
            r#"{"result":{"header":{"revision":"9"},"events":[{"kv":{"key":"YQ==","create_revision":"8","mod_revision":"9","version":"1"}},{"type":"DELETE","kv":{"key":"YQ==","mod_revision":"10"}}]}}"#,
        )
        .unwrap();
        let WatchMessage::Events { events, .. } = line.result.unwrap().into_message() else {
            panic!("not events");
        };
        assert_eq!(events[0].kind, EventKind::Put);
        assert_eq!(events[1].kind, EventKind::Delete);
        let compacted: WatchLine = serde_json::from_str(
            r#"{"result":{"header":{"revision":"20"},"canceled":true,"compact_revision":"15"}}"#,
        )
        .unwrap();
        assert!(matches!(
            compacted.result.unwrap().into_message(),
            WatchMessage::Canceled {
                compact_revision: 15,
                ..
            }
        ));
    }

    #[test]
    fn rejects_bad_integers_and_base64() {
        assert!(serde_json::from_str::<Header>(r#"{"revision":"x"}"#).is_err());
        assert!(serde_json::from_str::<Header>(r#"{"revision":1.5}"#).is_err());
        assert!(serde_json::from_str::<KeyValue>(r#"{"key":"!!"}"#).is_err());
        assert!(serde_json::from_str::<Header>(r#"{"revision":"99999999999999999999"}"#).is_err());
    }

    #[test]
    fn encodes_a_create_if_absent_transaction() {
        let txn = TxnRequest {
            compare: vec![Compare::create_revision("l/1", CompareResult::Equal, 0)],
            success: vec![Op::Put {
                key: b"l/1".to_vec(),
                value: b"me".to_vec(),
                lease: 1,
            }],
            failure: vec![Op::Range(RangeRequest::key("l/1"))],
        };
        let body = txn.to_json();
        assert_eq!(body["compare"][0]["create_revision"], "0");
        assert_eq!(body["compare"][0]["target"], "CREATE");
        assert_eq!(body["success"][0]["request_put"]["lease"], "1");
        assert_eq!(body["failure"][0]["request_range"]["key"], b64(b"l/1"));
    }
}
