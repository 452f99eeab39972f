//! The KV service on the wire: ranges (a constructor, then setters, as clientv3's options), the
//! answers to put and delete, and transactions of compares and ops.

use serde::Deserialize;
use serde_json::{json, Value};

use super::{b64, int, prefix_end, Header, KeyValue};

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

#[cfg(test)]
mod tests {
    use super::*;

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
