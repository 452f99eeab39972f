//! Who leads, as this candidate knows it (etcd's `Election.Leader`), for the status endpoint.
//!
//! The candidate learns the leader's identity from every transaction that reads the head of the
//! queue. A waiter far back in the queue does not see handovers ahead of it, so when someone asks
//! and what we know is older than RETRY_PERIOD, one background thread reads the head of the queue
//! (one bounded request, at most once per RETRY_PERIOD, and only while someone keeps asking).
//! Asking never waits on etcd.
//!
//! For the `leader` subcommand, [`leader_info`] reads the head of the queue once and
//! [`watch_leader`] follows it: one watch on the prefix, and a read of the head after each change
//! under it.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use super::queue;
use super::retry::Backoff;
use crate::etcd::{self, Cancel, Client, RangeRequest, WatchMessage, WatchRequest};
use crate::log;

/// The last leader seen, and the refresh thread's wake-up.
#[derive(Default)]
pub(super) struct LeaderView {
    state: Mutex<View>,
    wanted: Condvar,
}

#[derive(Default)]
struct View {
    identity: Option<String>,
    seen: Option<Instant>,
    wanted: bool,
    refresher: bool,
}

impl LeaderView {
    /// The candidate saw `identity` at the head of the queue (`None`: nobody).
    pub(super) fn seen(&self, identity: Option<String>) {
        let mut view = self.lock();
        view.identity = identity;
        view.seen = Some(Instant::now());
    }

    /// The identity of the leader as last seen; asks for a refresh in the background when that is
    /// older than `period`. Never waits on etcd.
    pub(super) fn current(
        self: &Arc<Self>,
        client: &Client,
        lock: &str,
        period: Duration,
    ) -> Option<String> {
        let mut view = self.lock();
        let stale = view.seen.is_none_or(|seen| seen.elapsed() >= period);
        if stale {
            view.wanted = true;
            if !view.refresher {
                view.refresher = true;
                self.start_refresher(client.clone(), lock.to_string(), period);
            }
            self.wanted.notify_one();
        }
        view.identity.clone()
    }

    fn start_refresher(self: &Arc<Self>, client: Client, lock: String, period: Duration) {
        let view = Arc::clone(self);
        let started = thread::Builder::new()
            .name("leader-view".into())
            .spawn(move || view.refresh_forever(&client, &lock, period));
        if let Err(error) = started {
            log::warn("cannot start the leader refresh", &[("error", &error)]);
        }
    }

    fn refresh_forever(&self, client: &Client, lock: &str, period: Duration) {
        loop {
            {
                let mut view = self.lock();
                while !(view.wanted && view.seen.is_none_or(|seen| seen.elapsed() >= period)) {
                    let wait = match view.seen {
                        Some(seen) if view.wanted => period.saturating_sub(seen.elapsed()),
                        _ => Duration::from_secs(3600),
                    };
                    view = self
                        .wanted
                        .wait_timeout(view, wait)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
                view.wanted = false;
                // Counts as seen now, also when the read fails: at most one read per period.
                view.seen = Some(Instant::now());
            }
            if let Ok(answer) = client.range(&queue::leader_range(lock)) {
                self.seen(queue::leader_of(&answer));
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, View> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Who leads, as `leader` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderInfo {
    pub identity: String,
    pub key: String,
    /// The leader key's create revision (its fencing token).
    pub revision: i64,
}

/// The leader of `lock` now (`None`: nobody leads), and the revision it was read at.
pub fn leader_info(client: &Client, lock: &str) -> Result<(Option<LeaderInfo>, i64), etcd::Error> {
    let answer = client.range(&queue::leader_range(lock))?;
    let info = answer.kvs.first().map(|kv| LeaderInfo {
        identity: queue::identity_of(kv),
        key: queue::name_of(kv),
        revision: kv.create_revision,
    });
    Ok((info, answer.header.revision))
}

/// Calls `on_change` with the leader of `lock` now and after every change, forever. A watch that
/// ends or fails is re-established after RETRY_PERIOD (doubling to a cap), from where it left off.
pub fn watch_leader(
    client: &Client,
    lock: &str,
    retry: Duration,
    mut on_change: impl FnMut(Option<&LeaderInfo>),
) -> Result<(), etcd::Error> {
    let (mut last, mut revision) = leader_info(client, lock)?;
    on_change(last.as_ref());
    let everyone = RangeRequest::prefix(queue::prefix(lock));
    let mut backoff = Backoff::new(retry, retry * 16);
    loop {
        let mut request = WatchRequest::key(everyone.key.clone(), revision.saturating_add(1));
        request.range_end = everyone.range_end.clone();
        let opened = Instant::now();
        if let Ok(watch) = client.watch(&request, &Cancel::default()) {
            for message in watch {
                let Ok(WatchMessage::Events { header, .. }) = message else {
                    break;
                };
                revision = revision.max(header.revision);
                let Ok((now, read_at)) = leader_info(client, lock) else {
                    break;
                };
                revision = revision.max(read_at);
                if now != last {
                    on_change(now.as_ref());
                    last = now;
                }
            }
        }
        if opened.elapsed() > retry {
            backoff.reset();
        }
        std::thread::sleep(backoff.pause(Instant::now()));
    }
}
