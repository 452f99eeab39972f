//! Key watchers (etcd's `waitDeletes`): one thread per watch that tells the candidate when our key
//! or a key ahead of us is deleted (which one: the nearest, or one farther ahead), or when the
//! history was compacted away and the queue must be read again. A watch covers our key, a key
//! ahead, or our key and the one ahead: then one stream carries both, and the deletions of one
//! revision arrive in one message — the candidate sees at once whether a predecessor's deletion
//! left our own key standing (a transaction can delete both). Two keys ahead are never watched on
//! one stream: the range between their names may hold any number of other keys (lease IDs begin
//! with bits of the granting member), each deletion of which would reach us.
//!
//! Rules:
//! - Dropping a [`KeyWatch`] cancels it: its socket is shut down at once, so its thread and its
//!   connection go together — churn cannot pile up threads blocked in reads.
//! - Only deletions are asked for — a predecessor that rewrites a large value costs us nothing —
//!   except when our own key is watched alone or with one key ahead: then writes are reported
//!   too, and a write of our key that did not give it our stamp (an instance with our identity
//!   claiming it) is told at once.
//! - The stream of our key and the key ahead goes on after the key ahead is deleted, reporting on
//!   our key alone: the leader that deletion made keeps it as its own-key watch.
//! - A watch that ends is re-established from the next revision; one that stays silent past the
//!   client's idle timeout counts as dead and is replaced. Every watch asks etcd to end it when the
//!   member loses its raft leader, so a member cut off from the cluster cannot hide a deletion.
//! - A watch that fails (refused, cancelled by etcd, garbage) is retried after RETRY_PERIOD,
//!   doubling to a cap; the first failure and the recovery are logged, nothing in between. A
//!   watch has recovered once etcd registered it — after a failure that was a stream ending as
//!   soon as it was registered, only once it also carried something more or stayed open.

use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::retry::Backoff;
use super::{Ahead, Alert, Shared};
use crate::etcd::wire::prefix_end;
use crate::etcd::{self, Cancel, Client, EventKind, WatchEvent, WatchMessage, WatchRequest};
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

/// The keys a watch reports on: ours and/or those ahead of us. With `prefix`, the whole prefix
/// is watched (for HOLDERS > 1, where several keys ahead matter: one stream instead of one each).
#[derive(Debug, Clone, Default)]
pub(super) struct Watched {
    pub own: Option<String>,
    /// Our key's stamp: with `own` (and no `prefix`), writes of our key to another mod_revision
    /// are reported.
    pub stamp: Option<i64>,
    pub ahead: Vec<String>,
    pub prefix: Option<String>,
    /// The keys `ahead` are not the nearest key ahead of us but the one before it: their
    /// deletion is [`Ahead::Farther`].
    pub farther: bool,
}

impl Watched {
    /// The request: the prefix, one key, or the smallest range holding the keys (other keys
    /// inside it are ignored; with deletions only, they cost an event at most).
    fn request(&self, from: i64) -> WatchRequest {
        if let Some(prefix) = &self.prefix {
            let mut request = WatchRequest::key(prefix.as_str(), from).deletes_only();
            request.range_end = prefix_end(prefix.as_bytes());
            return request;
        }
        let mut keys: Vec<&String> = self.own.iter().chain(&self.ahead).collect();
        keys.sort();
        let (first, last) = (keys.first().map_or("", |k| k.as_str()), keys.last());
        let mut request = WatchRequest::key(first, from);
        if self.stamp.is_none() {
            request = request.deletes_only();
        }
        if keys.len() > 1 {
            let mut end = last.map_or_else(Vec::new, |k| k.as_bytes().to_vec());
            end.push(0);
            request.range_end = end;
        }
        request
    }

    fn describe(&self) -> String {
        let keys: Vec<&str> = self
            .own
            .iter()
            .chain(&self.ahead)
            .map(String::as_str)
            .collect();
        match keys.len() {
            0..=2 => keys.join(" and "),
            n => format!("{n} keys"),
        }
    }

    /// A write of our key in `events` that did not give it our stamp: (its revision, its lease).
    fn rewrite(&self, events: &[WatchEvent]) -> Option<(i64, i64)> {
        let (own, stamp) = (self.own.as_ref()?, self.stamp?);
        events
            .iter()
            .filter(|e| e.kind == EventKind::Put && e.kv.key == own.as_bytes())
            .find(|e| e.kv.mod_revision != stamp)
            .map(|e| (e.kv.mod_revision, e.kv.lease))
    }

    /// Whether this is the stream of our key and the one key ahead of it (no prefix): after the
    /// key ahead is deleted, it is the leader's own-key watch.
    fn pairs_own_with_ahead(&self) -> bool {
        self.own.is_some() && self.prefix.is_none() && !self.ahead.is_empty()
    }

    /// Stops reporting on the keys ahead that `events` delete.
    fn forget_deleted(&mut self, events: &[WatchEvent]) {
        let deleted = |k: &String| {
            events
                .iter()
                .any(|e| e.kind == EventKind::Delete && e.kv.key == k.as_bytes())
        };
        self.ahead.retain(|k| !deleted(k));
    }

    /// Which of our keys `events` delete (ours, those ahead), and at which revision (the last
    /// such event's).
    fn deletions(&self, events: &[WatchEvent]) -> Option<(bool, Ahead, i64)> {
        let mut found: Option<(bool, Ahead, i64)> = None;
        for event in events.iter().filter(|e| e.kind == EventKind::Delete) {
            let key = event.kv.key.as_slice();
            let own = self.own.as_ref().is_some_and(|k| k.as_bytes() == key);
            let ahead = match self.ahead.iter().position(|k| k.as_bytes() == key) {
                None => Ahead::Untouched,
                Some(0) if !self.farther => Ahead::Nearest,
                Some(_) => Ahead::Farther,
            };
            if own || ahead != Ahead::Untouched {
                let (o, a, _) = found.unwrap_or((false, Ahead::Untouched, 0));
                found = Some((o || own, a.max(ahead), event.kv.mod_revision));
            }
        }
        found
    }
}

/// Starts watching `keys` for deletion from revision `from` on, for the session `session`.
pub(super) fn watch_keys(
    shared: &Shared,
    session: u64,
    id: u64,
    keys: Watched,
    from: i64,
) -> KeyWatch {
    let cancel = Arc::new(Cancel::default());
    let retry = shared.settings.retry_period;
    let watcher = Watcher {
        client: shared.client.clone(),
        alerts: shared.alerts(),
        cancel: Arc::clone(&cancel),
        retry,
        backoff: Backoff::new(retry, shared.settings.backoff_cap()),
        session,
        id,
        keys,
        next_revision: from,
        health: Health::Healthy,
        opened: Instant::now(),
    };
    let spawned = thread::Builder::new()
        .name("watch".into())
        .spawn(move || watcher.run());
    if let Err(error) = spawned {
        // Without a watcher the candidate would wait forever: make it look again later.
        log::error("cannot start a watch thread", &[("error", &error)]);
        let _ = shared.alerts().send(Alert::Recheck { session, watch: id });
    }
    KeyWatch { id, cancel }
}

/// What following one stream came to.
enum Followed {
    /// The candidate was told; the watch is done.
    Done,
    /// The stream ended after doing its job for a while (idle timeout, server going away): open a
    /// new one at once.
    Ended,
    /// The stream failed; why.
    Failed(String),
}

/// Where a watch stands as far as its log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Health {
    Healthy,
    /// A failure was logged; no recovery yet.
    Failing,
    /// A failure was logged, and it was a stream that ended as soon as it was registered: a
    /// registration alone does not prove a recovery.
    FailingAfterRegistration,
}

struct Watcher {
    client: Client,
    alerts: Sender<Alert>,
    cancel: Arc<Cancel>,
    retry: Duration,
    backoff: Backoff,
    session: u64,
    id: u64,
    keys: Watched,
    next_revision: i64,
    health: Health,
    /// When the current stream was opened.
    opened: Instant,
}

impl Watcher {
    fn run(mut self) {
        while !self.cancel.is_cancelled() {
            self.opened = Instant::now();
            let followed = match self.client.watch(&self.request(), &self.cancel) {
                Ok(watch) => self.follow(watch),
                Err(error) => Followed::Failed(error.to_string()),
            };
            if self.cancel.is_cancelled() {
                return;
            }
            let lasted = self.opened.elapsed() >= self.retry;
            let (reason, registered) = match followed {
                Followed::Done => return,
                Followed::Ended if lasted => {
                    self.recovered();
                    self.backoff.reset();
                    continue;
                }
                Followed::Ended => (
                    "the stream ended as soon as it was opened".to_string(),
                    true,
                ),
                Followed::Failed(reason) => (reason, false),
            };
            if self.health == Health::Healthy {
                log::warn(
                    "watch failed; retrying",
                    &[("keys", &self.keys.describe()), ("error", &reason)],
                );
                self.health = match registered {
                    true => Health::FailingAfterRegistration,
                    false => Health::Failing,
                };
            }
            let pause = self.backoff.pause(Instant::now());
            if !pause.is_zero() && self.cancel.wait_timeout(pause) {
                return;
            }
        }
    }

    fn request(&self) -> WatchRequest {
        self.keys.request(self.next_revision)
    }

    /// Logs the recovery of a failing watch, once.
    fn recovered(&mut self) {
        if self.health != Health::Healthy {
            log::info("watch recovered", &[("keys", &self.keys.describe())]);
            self.health = Health::Healthy;
        }
    }

    /// What a message says about the watch's health: registered (`created`), or more.
    fn heard(&mut self, registration: bool) {
        let proven = match self.health {
            Health::FailingAfterRegistration => {
                !registration || self.opened.elapsed() >= self.retry
            }
            _ => true,
        };
        if proven {
            self.recovered();
        }
    }

    /// Tells the candidate, at once: before this thread closes its stream or frees anything.
    fn tell(&self, alert: Alert) -> Followed {
        let _ = self.alerts.send(alert);
        Followed::Done
    }

    /// Reads one stream until it says something the candidate must hear, or ends.
    fn follow(&mut self, watch: etcd::Watch) -> Followed {
        let (session, watch_id) = (self.session, self.id);
        for message in watch {
            match message {
                Ok(WatchMessage::Events { events, .. }) => {
                    self.heard(false);
                    // Before any deletion: a key that is not ours any more makes nobody leader.
                    if let Some((revision, lease)) = self.keys.rewrite(&events) {
                        return self.tell(Alert::Rewritten {
                            session,
                            watch: watch_id,
                            revision,
                            lease,
                        });
                    }
                    if let Some((own, ahead, revision)) = self.keys.deletions(&events) {
                        let alert = Alert::Deleted {
                            session,
                            watch: watch_id,
                            own,
                            ahead,
                            revision,
                        };
                        if own || !self.keys.pairs_own_with_ahead() {
                            return self.tell(alert);
                        }
                        // Only the key ahead went, on the stream that also carries ours: we may
                        // lead on it, so it goes on watching our key (keys below ours never
                        // come back).
                        let _ = self.alerts.send(alert);
                        self.keys.forget_deleted(&events);
                    }
                    for event in &events {
                        self.next_revision = self
                            .next_revision
                            .max(event.kv.mod_revision.saturating_add(1));
                    }
                }
                Ok(WatchMessage::Progress { header }) => {
                    self.heard(false);
                    self.next_revision = self.next_revision.max(header.revision.saturating_add(1));
                }
                Ok(WatchMessage::Canceled {
                    compact_revision, ..
                }) if compact_revision > 0 => {
                    return self.tell(Alert::Recheck {
                        session,
                        watch: watch_id,
                    });
                }
                Ok(WatchMessage::Canceled { reason, .. }) => {
                    return Followed::Failed(format!("etcd cancelled the watch: {reason}"));
                }
                Ok(WatchMessage::Created { .. }) => self.heard(true),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etcd::KeyValue;

    fn event(kind: EventKind, key: &str, revision: i64) -> WatchEvent {
        WatchEvent {
            kind,
            kv: KeyValue {
                key: key.as_bytes().to_vec(),
                mod_revision: revision,
                ..KeyValue::default()
            },
        }
    }

    fn pair() -> Watched {
        Watched {
            own: Some("l/b".into()),
            stamp: Some(3),
            ahead: vec!["l/a".into()],
            prefix: None,
            farther: false,
        }
    }

    #[test]
    fn the_pair_stream_goes_on_for_our_key_alone_once_the_key_ahead_is_deleted() {
        let mut keys = pair();
        assert!(keys.pairs_own_with_ahead());
        let gone = [event(EventKind::Delete, "l/a", 7)];
        assert_eq!(keys.deletions(&gone), Some((false, Ahead::Nearest, 7)));
        keys.forget_deleted(&gone);
        assert!(keys.ahead.is_empty() && !keys.pairs_own_with_ahead());
        // From then on it reports our key: its deletion, and a write that is not ours.
        let ours = [event(EventKind::Delete, "l/b", 9)];
        assert_eq!(keys.deletions(&ours), Some((true, Ahead::Untouched, 9)));
        assert_eq!(
            keys.rewrite(&[event(EventKind::Put, "l/b", 8)]),
            Some((8, 0))
        );
        // Re-opened (idle timeout), it asks for our key alone, writes included.
        let request = keys.request(10);
        assert_eq!(
            (request.key.as_slice(), request.range_end.is_empty()),
            (&b"l/b"[..], true)
        );
        assert!(!request.deletes_only);
    }

    #[test]
    fn a_deletion_says_whether_it_took_the_nearest_key_ahead_or_one_farther() {
        // The prefix with several holders: the nearest first.
        let holders = Watched {
            ahead: vec!["l/b".into(), "l/a".into()],
            prefix: Some("l/".into()),
            ..Watched::default()
        };
        let farther = [event(EventKind::Delete, "l/a", 7)];
        assert_eq!(
            holders.deletions(&farther),
            Some((false, Ahead::Farther, 7))
        );
        let both = [
            event(EventKind::Delete, "l/a", 8),
            event(EventKind::Delete, "l/b", 8),
        ];
        assert_eq!(holders.deletions(&both), Some((false, Ahead::Nearest, 8)));
        let other = [event(EventKind::Delete, "l/c", 9)];
        assert_eq!(holders.deletions(&other), None);
        // One holder, two keys back: the key before the nearest, alone on its stream.
        let two_back = Watched {
            ahead: vec!["l/a".into()],
            farther: true,
            ..Watched::default()
        };
        assert_eq!(
            two_back.deletions(&farther),
            Some((false, Ahead::Farther, 7))
        );
        let request = two_back.request(5);
        assert_eq!(
            (request.key.as_slice(), request.range_end.is_empty()),
            (&b"l/a"[..], true)
        );
    }

    #[test]
    fn other_watches_end_with_the_deletion_they_report() {
        let ahead_only = Watched {
            ahead: vec!["l/a".into()],
            ..Watched::default()
        };
        let own_only = Watched {
            own: Some("l/b".into()),
            ..Watched::default()
        };
        let prefix = Watched {
            prefix: Some("l/".into()),
            ..pair()
        };
        for keys in [ahead_only, own_only, prefix] {
            assert!(!keys.pairs_own_with_ahead(), "{keys:?}");
        }
    }
}
