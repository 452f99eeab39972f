//! The lease service on the wire: a grant, and the answers to keepalive and time-to-live requests
//! (a `ttl` of 0 or -1 means the lease is gone).

use serde::Deserialize;

use super::{int, Header, StreamError};

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

/// The body of a keepalive answer: one line `{"result":…}` or `{"error":…}`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct KeepAliveLine {
    pub result: Option<LeaseTtl>,
    pub error: Option<StreamError>,
}
