//! Key watchers (etcd's `waitDeletes`): one thread per watched key that tells the candidate when the
//! key is deleted, or when its history was compacted away and the queue must be read again.
//!
//! Rules:
//! - Dropping a [`KeyWatch`] cancels it: its socket is shut down at once, so its thread and its
//!   connection go together — churn cannot pile up threads blocked in reads.
//! - Only deletions are asked for: a predecessor that rewrites a large value costs us nothing.
//! - A watch that ends is re-established from the next revision; one that stays silent past the
//!   client's idle timeout counts as dead and is replaced. Every watch asks etcd to end it when the
//!   member loses its raft leader, so a member cut off from the cluster cannot hide a deletion.
//! - A watch that fails (refused, cancelled by etcd, garbage) is retried after RETRY_PERIOD,
//!   doubling to a cap; the first failure and the recovery are logged, nothing in between.

use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::retry::Backoff;
use super::{Alert, Shared};
use crate::etcd::{self, Cancel, Client, EventKind, WatchMessage, WatchRequest};
use crate::log;

/// A running watch on one key; dropping it cancels the watch.
pub(super) struct KeyWatch {
    /// Identifies this watch in the alerts it sends.
    pub id: u64,
    cancel: Arc<Cancel>,
}

impl Drop for KeyWatch {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Starts watching `key` for deletion from revision `from` on, for the session `session`.
pub(super) fn watch_key(shared: &Shared, session: u64, id: u64, key: &str, from: i64) -> KeyWatch {
    let cancel = Arc::new(Cancel::default());
    let retry = shared.settings.retry_period;
    let watcher = Watcher {
        client: shared.client.clone(),
        alerts: shared.alerts.clone(),
        cancel: Arc::clone(&cancel),
        retry,
        backoff: Backoff::new(retry, shared.settings.backoff_cap()),
        session,
        id,
        key: key.to_string(),
        next_revision: from,
    };
    let spawned = thread::Builder::new()
        .name("watch".into())
        .spawn(move || watcher.run());
    if let Err(error) = spawned {
        // Without a watcher the candidate would wait forever: make it look again later.
        log::error("cannot start a watch thread", &[("error", &error)]);
        let _ = shared.alerts.send(Alert::Recheck { session, watch: id });
    }
    KeyWatch { id, cancel }
}

/// What following one stream came to.
enum Followed {
    /// Tell the candidate; the watch is done.
    Alert(Alert),
    /// The stream ended after doing its job for a while (idle timeout, server going away): open a
    /// new one at once.
    Ended,
    /// The stream failed; why.
    Failed(String),
}

struct Watcher {
    client: Client,
    alerts: Sender<Alert>,
    cancel: Arc<Cancel>,
    retry: Duration,
    backoff: Backoff,
    session: u64,
    id: u64,
    key: String,
    next_revision: i64,
}

impl Watcher {
    fn run(mut self) {
        let mut failing = false;
        while !self.cancel.is_cancelled() {
            let opened = Instant::now();
            let followed = match self.client.watch(&self.request(), &self.cancel) {
                Ok(watch) => {
                    if failing {
                        log::info("watch recovered", &[("key", &self.key)]);
                        failing = false;
                    }
                    self.follow(watch)
                }
                Err(error) => Followed::Failed(error.to_string()),
            };
            if self.cancel.is_cancelled() {
                return;
            }
            let reason = match followed {
                Followed::Alert(alert) => {
                    let _ = self.alerts.send(alert);
                    return;
                }
                Followed::Ended if opened.elapsed() >= self.retry => {
                    self.backoff.reset();
                    continue;
                }
                Followed::Ended => "the stream ended as soon as it was opened".to_string(),
                Followed::Failed(reason) => reason,
            };
            if !failing {
                log::warn(
                    "watch failed; retrying",
                    &[("key", &self.key), ("error", &reason)],
                );
                failing = true;
            }
            let pause = self.backoff.pause(Instant::now());
            if !pause.is_zero() && self.cancel.wait_timeout(pause) {
                return;
            }
        }
    }

    fn request(&self) -> WatchRequest {
        WatchRequest::key(self.key.as_str(), self.next_revision).deletes_only()
    }

    /// Reads one stream until it says something the candidate must hear, or ends.
    fn follow(&mut self, watch: etcd::Watch) -> Followed {
        let (session, watch_id) = (self.session, self.id);
        for message in watch {
            match message {
                Ok(WatchMessage::Events { events, .. }) => {
                    for event in events {
                        self.next_revision = self
                            .next_revision
                            .max(event.kv.mod_revision.saturating_add(1));
                        if event.kind == EventKind::Delete {
                            return Followed::Alert(Alert::Deleted {
                                session,
                                watch: watch_id,
                            });
                        }
                    }
                }
                Ok(WatchMessage::Progress { header }) => {
                    self.next_revision = self.next_revision.max(header.revision.saturating_add(1));
                }
                Ok(WatchMessage::Canceled {
                    compact_revision, ..
                }) if compact_revision > 0 => {
                    return Followed::Alert(Alert::Recheck {
                        session,
                        watch: watch_id,
                    });
                }
                Ok(WatchMessage::Canceled { reason, .. }) => {
                    return Followed::Failed(format!("etcd cancelled the watch: {reason}"));
                }
                Ok(WatchMessage::Created { .. }) => {}
                Err(error) if is_idle_timeout(&error) => return Followed::Ended,
                Err(error) => return Followed::Failed(error.to_string()),
            }
        }
        Followed::Ended
    }
}

/// A read that waited the whole idle timeout: the connection is presumed dead, which is routine.
fn is_idle_timeout(error: &etcd::Error) -> bool {
    matches!(
        error,
        etcd::Error::Transport {
            timed_out: true,
            ..
        }
    )
}
