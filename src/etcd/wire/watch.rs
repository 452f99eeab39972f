//! The watch service on the wire: the create request, and the stream's lines turned into one
//! [`WatchMessage`] each (created, events, progress, cancelled).

use serde::Deserialize;
use serde_json::{json, Value};

use super::{b64, int, Header, KeyValue, StreamError};

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
