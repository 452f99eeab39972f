//! Wire types of etcd's v3 JSON gateway, as they really arrive: 64-bit integers as strings, `bytes` as
//! base64, and every field that holds its default value omitted. Requests are built as JSON values
//! with 64-bit integers sent as strings, which every gateway version accepts.
//!
//! Here: what every service shares (the header, a key, the stream and error lines, the integer and
//! base64 decoders). Each service's requests and answers live in [`kv`], [`lease`] and [`watch`],
//! re-exported here, so every type is `wire::X`.

mod kv;
mod lease;
mod watch;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::de::{self, Deserializer};
use serde::Deserialize;

pub use kv::*;
pub use lease::*;
pub use watch::*;

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

/// An error line inside a stream (watch, keepalive).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct StreamError {
    pub grpc_code: u32,
    pub http_code: u16,
    pub message: String,
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
    fn rejects_bad_integers_and_base64() {
        assert!(serde_json::from_str::<Header>(r#"{"revision":"x"}"#).is_err());
        assert!(serde_json::from_str::<Header>(r#"{"revision":1.5}"#).is_err());
        assert!(serde_json::from_str::<KeyValue>(r#"{"key":"!!"}"#).is_err());
        assert!(serde_json::from_str::<Header>(r#"{"revision":"99999999999999999999"}"#).is_err());
    }
}
