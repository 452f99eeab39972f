//! The candidate thread (etcd's `Campaign`): join the queue ([`join`]), wait for our turn and lead
//! until the key or the lease is lost ([`campaign`]), and re-queue (paced) when our key goes while
//! we wait.
//!
//! Round trips are counted: joining is a grant and one transaction (which also reads the head of
//! the queue and looks for an earlier run's key), so an uncontended start leads after two; a waiter
//! whose predecessor is the only key ahead watches both keys on one stream and leads on the
//! predecessor's deletion without another look, and a waiter further back watches the key before
//! its predecessor and looks again when it goes (so that by its turn it is usually that first
//! waiter); threads that the start does not need (keepalive, our own key's watch) are started
//! after "leading" is announced.

mod campaign;
mod join;

use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::failures::{Failures, Judgement};
use super::inbox::{Inbox, Interest};
use super::queue::{Join, Position};
use super::retry::{Backoff, Pace};
use super::session::Keeper;
use super::watch::{self, KeyWatch, Watched};
use super::{Alert, Notice, Settings, Shared};
use crate::clock::BootInstant;
use crate::etcd::{self, Client};
use crate::log;

/// Looks that may follow each other at once before [`Pace`] holds them to one per RETRY_PERIOD.
const LOOK_BURST: u32 = 3;

/// One lease and, once started, its keepalive thread.
struct Session {
    id: u64,
    lease: i64,
    keeper: Option<Arc<Keeper>>,
}

/// Our key in the queue.
struct Place {
    key: String,
    revision: i64,
    /// The mod_revision of our last write to the key: it is ours while the key still has it.
    stamp: i64,
    /// Where the joining transaction saw it stand, and when that transaction was sent.
    known: Option<(Position, BootInstant)>,
}

/// What becomes of the lease when we queue again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Ours still: a new key with it.
    Keep,
    /// Gone (expired or revoked), or taken over by an instance with our identity: a fresh one,
    /// and the old one is never revoked by us.
    Drop,
}

/// How a campaign ended.
enum Outcome {
    /// Our key is gone while we waited; queue again.
    Requeue(Fate),
    /// We stop: asked to, leadership lost, or a fatal error.
    Finished,
}

/// Whether we may start leading now.
enum Readiness {
    Ready,
    LeaseGone,
    /// Our lease went unrenewed for RENEW_DEADLINE since our key was written: write it again.
    Reclaim,
    Retry,
    Stop,
}

pub(super) struct Candidate {
    shared: Arc<Shared>,
    /// Which run of the candidate this is (see `Election::rejoin`).
    run: u64,
    inbox: Inbox,
    session: Option<Session>,
    next_id: u64,
    failures: Failures,
    requeue: Backoff,
    looks: Pace,
}

impl Candidate {
    pub(super) fn new(shared: Arc<Shared>, run: u64, alerts: Receiver<Alert>) -> Candidate {
        let settings = &shared.settings;
        let requeue = Backoff::new(settings.retry_period, settings.backoff_cap());
        let looks = Pace::new(settings.retry_period, LOOK_BURST, Instant::now());
        Candidate {
            shared,
            run,
            inbox: Inbox::new(alerts),
            session: None,
            next_id: 0,
            failures: Failures::default(),
            requeue,
            looks,
        }
    }

    pub(super) fn run(mut self) {
        // FORCE_ACQUIRE always takes a fresh key: its transaction deletes every other one. A
        // rejoin (RECAMPAIGN) never adopts: a key with our identity is then the one this process
        // just gave up (its revoke may have failed), and the next run must queue behind the
        // others with a fresh lease and a new fencing token.
        let mut join = match (self.settings().force_acquire, self.run) {
            (true, _) => Join::Force,
            (false, 0) => Join::LookForTwin,
            (false, _) => Join::Plain,
        };
        while let Some(place) = self.join(join) {
            if join == Join::LookForTwin {
                join = Join::Plain;
            }
            match self.campaign(place) {
                Outcome::Finished => return,
                Outcome::Requeue(fate) => {
                    if fate == Fate::Drop {
                        self.end_session();
                    }
                    let pause = self.requeue.pause(Instant::now());
                    log::info("queueing again", &[("in", &format!("{pause:?}"))]);
                    if !self.pause(pause) {
                        return;
                    }
                }
            }
        }
    }

    fn settings(&self) -> &Settings {
        &self.shared.settings
    }

    fn client(&self) -> &Client {
        &self.shared.client
    }

    fn notify(&self, notice: Notice) {
        (self.shared.notify)(notice);
    }

    fn fresh_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Whether this run must stop (asked to, or replaced by a rejoin).
    fn stopping(&self) -> bool {
        self.shared.stopping(self.run)
    }

    fn session_id(&self) -> u64 {
        self.session.as_ref().map_or(0, |s| s.id)
    }

    // ---- watches, alerts, pauses, retries ----

    /// Watches `keys` for deletion after revision `seen` (revisions from etcd saturate).
    fn watch(&mut self, keys: Watched, seen: i64) -> KeyWatch {
        let id = self.fresh_id();
        let from = seen.saturating_add(1);
        watch::watch_keys(&self.shared, self.session_id(), id, keys, from)
    }

    fn watch_own(&mut self, place: &Place, seen: i64) -> KeyWatch {
        let keys = Watched {
            own: Some(place.key.clone()),
            stamp: Some(place.stamp),
            ..Watched::default()
        };
        self.watch(keys, seen)
    }

    fn wait(&mut self, watches: &[u64], leading: bool, until: Option<Instant>) -> Option<Alert> {
        let interest = Interest {
            session: self.session_id(),
            watches,
            leading,
        };
        self.inbox.wait(interest, until)
    }

    /// Sleeps for `duration` unless asked to stop; false when stopping.
    fn pause(&mut self, duration: Duration) -> bool {
        self.inbox.pause(duration) && !self.stopping()
    }

    /// After a failed call: wait RETRY_PERIOD; false when we must stop (asked to, or the error is
    /// one that retrying cannot fix).
    fn retry_later(&mut self, error: &etcd::Error) -> bool {
        if self.stopping() {
            return false;
        }
        let every = self.settings().retry_period;
        match self.failures.judge(error, every) {
            Judgement::Fatal(reason) => {
                self.notify(Notice::Fatal(reason));
                false
            }
            Judgement::Retry => self.pause(every),
        }
    }

    fn answered(&mut self) {
        let endpoint = self.client().current_endpoint();
        self.failures.answered(&endpoint);
    }

    fn bad_answer(&self, op: &'static str, detail: String) -> etcd::Error {
        etcd::Error::Decode {
            endpoint: self.client().current_endpoint(),
            op,
            detail,
        }
    }
}
