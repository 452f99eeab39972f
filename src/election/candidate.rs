//! The candidate thread (etcd's `Campaign`): join the queue, wait for our turn, lead until the key or
//! the lease is lost, and re-queue (paced) when our key goes while we wait.

use std::collections::VecDeque;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::queue::{self, Position};
use super::retry::{Backoff, Pace};
use super::session::{self, Keeper, Lease};
use super::takeover::{self, Tracker, Verdict};
use super::watch::{self, KeyWatch};
use super::{Alert, Leadership, Loss, Notice, Settings, Shared};
use crate::clock::BootInstant;
use crate::etcd::{self, Client, RangeRequest, SortOrder, SortTarget};
use crate::log;

/// Looks that may follow each other at once before [`Pace`] holds them to one per RETRY_PERIOD.
const LOOK_BURST: u32 = 3;

/// One lease and its keepalive thread.
struct Session {
    id: u64,
    lease: i64,
    keeper: Arc<Keeper>,
}

/// Our key in the queue.
struct Place {
    key: String,
    revision: i64,
    /// The creating transaction saw our key at the head of the queue.
    at_head: bool,
}

/// How a campaign ended.
enum Outcome {
    /// Our key is gone while we waited; queue again (with the same lease unless it is gone too).
    Requeue { lease_gone: bool },
    /// We stop: asked to, leadership lost, or a fatal error.
    Finished,
}

/// What the takeover check decided.
enum Adoption {
    Adopted(Place),
    Fresh,
    Stop,
}

/// Whether we may start leading now.
enum Readiness {
    Ready,
    LeaseGone,
    Retry,
    Stop,
}

pub(super) struct Candidate {
    shared: Arc<Shared>,
    inbox: Receiver<Alert>,
    /// Alerts that arrived during a pause, for the next wait.
    pending: VecDeque<Alert>,
    session: Option<Session>,
    next_id: u64,
    /// What kind of failure is being retried, if any (logged once per change).
    failing: Option<&'static str>,
    /// etcd has answered at least once since we started.
    connected: bool,
    /// Start-up attempts in a row that failed with a TLS problem on every endpoint.
    tls_strikes: u32,
    requeue: Backoff,
    looks: Pace,
}

impl Candidate {
    pub(super) fn new(shared: Arc<Shared>, inbox: Receiver<Alert>) -> Candidate {
        let settings = &shared.settings;
        let requeue = Backoff::new(settings.retry_period, settings.backoff_cap());
        let looks = Pace::new(settings.retry_period, LOOK_BURST, Instant::now());
        Candidate {
            shared,
            inbox,
            pending: VecDeque::new(),
            session: None,
            next_id: 0,
            failing: None,
            connected: false,
            tls_strikes: 0,
            requeue,
            looks,
        }
    }

    pub(super) fn run(mut self) {
        // FORCE_ACQUIRE always takes a fresh key: its transaction deletes every other one.
        let mut may_adopt = !self.settings().force_acquire;
        while let Some(place) = self.join(may_adopt) {
            may_adopt = false;
            match self.campaign(&place) {
                Outcome::Finished => return,
                Outcome::Requeue { lease_gone } => {
                    if lease_gone {
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

    fn session_id(&self) -> u64 {
        self.session.as_ref().map_or(0, |s| s.id)
    }

    // ---- joining ----

    /// Gets a lease (unless we have one) and a key, retrying every RETRY_PERIOD until it works.
    fn join(&mut self, may_adopt: bool) -> Option<Place> {
        loop {
            if self.shared.stopping() {
                return None;
            }
            match self.try_join(may_adopt) {
                Ok(Some(place)) => {
                    self.reachable();
                    return Some(place);
                }
                Ok(None) => return None,
                Err(error) if self.retry_later(&error) => continue,
                Err(_) => return None,
            }
        }
    }

    /// `None` when we are stopping.
    fn try_join(&mut self, may_adopt: bool) -> Result<Option<Place>, etcd::Error> {
        if self.session.is_none() {
            if may_adopt {
                match self.adopt()? {
                    Adoption::Adopted(place) => return Ok(Some(place)),
                    Adoption::Stop => return Ok(None),
                    Adoption::Fresh => {}
                }
            }
            let lease = session::grant(
                self.client(),
                self.settings().ttl_secs(),
                &self.shared.clock,
            )?;
            if !self.begin_session(lease) {
                return Ok(None);
            }
        }
        let Some(lease) = self.session.as_ref().map(|s| s.lease) else {
            return Ok(None);
        };
        match self.enqueue(lease) {
            Err(error) if error.is_lease_gone() => {
                self.end_session();
                Err(error)
            }
            other => other.map(Some),
        }
    }

    /// Records the lease for [`super::Election::resign`] and starts its keepalive; false (and the
    /// lease revoked) when we are already stopping.
    fn begin_session(&mut self, lease: Lease) -> bool {
        let id = self.fresh_id();
        let mut state = self.shared.lock();
        if state.stopping {
            drop(state);
            let _ = session::revoke(self.client(), lease.id);
            return false;
        }
        let keeper = session::keep_alive(&self.shared, id, lease);
        state.lease = Some(lease.id);
        state.keeper = Some(Arc::clone(&keeper));
        self.session = Some(Session {
            id,
            lease: lease.id,
            keeper,
        });
        true
    }

    /// Forgets a lease that is gone: its keepalive stops, nothing is revoked.
    fn end_session(&mut self) {
        if let Some(session) = self.session.take() {
            session.keeper.stop();
            let mut state = self.shared.lock();
            if state.lease == Some(session.lease) {
                state.lease = None;
                state.keeper = None;
            }
        }
    }

    /// Creates our key (preempting everyone with FORCE_ACQUIRE).
    fn enqueue(&mut self, lease: i64) -> Result<Place, etcd::Error> {
        let settings = self.settings().clone();
        let key = queue::key_for(&settings.lock_name, lease);
        let txn = queue::create(
            &settings.lock_name,
            &key,
            &settings.identity,
            lease,
            settings.force_acquire,
        );
        let answer = self.client().txn(&txn)?;
        let created =
            queue::created(answer, &key, lease).map_err(|d| self.bad_answer("kv/txn", d))?;
        if settings.force_acquire {
            log::warn(
                "FORCE_ACQUIRE: deleted every other key under the lock",
                &[("key", &key)],
            );
        }
        if created.leader.is_some() {
            self.shared.leader.seen(created.leader);
        }
        self.notify(Notice::Candidacy { key: key.clone() });
        Ok(Place {
            key,
            revision: created.revision,
            at_head: created.at_head,
        })
    }

    /// Seamless takeover: a live key under the prefix that carries our identity is ours from an
    /// earlier run; keep its lease and its place once its holder has provably stopped.
    fn adopt(&mut self) -> Result<Adoption, etcd::Error> {
        let settings = self.settings().clone();
        let everyone = RangeRequest::prefix(queue::prefix(&settings.lock_name))
            .sort(SortTarget::Create, SortOrder::Ascend);
        let found = self.client().range(&everyone)?;
        let ours = found
            .kvs
            .into_iter()
            .find(|kv| kv.value == settings.identity.as_bytes() && kv.lease != 0);
        let Some(kv) = ours else {
            return Ok(Adoption::Fresh);
        };
        let key = queue::name_of(&kv);
        log::info(
            "found our identity's key; waiting until its holder must have stopped",
            &[("key", &key)],
        );
        let tracker = Tracker::new(settings.ttl_secs(), settings.kill_point());
        let shared = Arc::clone(&self.shared);
        let verdict = takeover::judge_lease(&shared.client, kv.lease, tracker, |d| self.pause(d))?;
        match verdict {
            Some(Verdict::Abandoned) => {}
            None => return Ok(Adoption::Stop),
            Some(Verdict::Renewed) => {
                log::error(
                    "another live instance uses our identity; queueing with a fresh key \
                     (identities must be unique)",
                    &[("key", &key)],
                );
                return Ok(Adoption::Fresh);
            }
            Some(Verdict::OtherDuration) => {
                log::warn(
                    "our identity's key has a lease of another duration; queueing with a fresh key",
                    &[("key", &key)],
                );
                return Ok(Adoption::Fresh);
            }
            Some(Verdict::Gone | Verdict::Wait) => return Ok(Adoption::Fresh),
        }
        let sent = BootInstant::now();
        match self.client().lease_keepalive(kv.lease) {
            Ok(answer) if answer.ttl >= settings.ttl_secs() => {}
            Ok(_) => return Ok(Adoption::Fresh),
            Err(error) if error.is_lease_gone() => return Ok(Adoption::Fresh),
            Err(error) => return Err(error),
        }
        self.shared.clock.restart(sent);
        if !self.begin_session(Lease { id: kv.lease }) {
            return Ok(Adoption::Stop);
        }
        log::info(
            "adopted our key from an earlier run",
            &[
                ("key", &key),
                ("revision", &kv.create_revision),
                ("lease", &format!("{:x}", kv.lease)),
            ],
        );
        self.notify(Notice::Candidacy { key: key.clone() });
        Ok(Adoption::Adopted(Place {
            key,
            revision: kv.create_revision,
            at_head: false,
        }))
    }

    // ---- waiting for our turn ----

    /// Waits for our turn and leads; reports how it ended.
    fn campaign(&mut self, place: &Place) -> Outcome {
        let mut own = self.watch_after(&place.key, place.revision);
        let mut queued_behind: Option<String> = None;
        let mut known_head = place.at_head;
        loop {
            let looked = if std::mem::take(&mut known_head) {
                Ok(Position::Head {
                    revision: place.revision,
                })
            } else {
                let wait = self.looks.take(Instant::now());
                if !self.pause(wait) {
                    return Outcome::Finished;
                }
                self.look(place)
            };
            let position = match looked {
                Ok(position) => position,
                Err(error) if self.retry_later(&error) => continue,
                Err(_) => return Outcome::Finished,
            };
            self.reachable();
            let (predecessor, revision) = match position {
                Position::Lost => {
                    log::warn("our key is gone; queueing again", &[("key", &place.key)]);
                    return Outcome::Requeue { lease_gone: false };
                }
                Position::Head { revision } => match self.ready_to_lead() {
                    Readiness::Ready => return self.lead(place, own, revision),
                    Readiness::LeaseGone => return Outcome::Requeue { lease_gone: true },
                    Readiness::Retry => continue,
                    Readiness::Stop => return Outcome::Finished,
                },
                Position::Behind {
                    predecessor,
                    revision,
                    leader,
                    ..
                } => {
                    self.shared.leader.seen(leader);
                    (predecessor, revision)
                }
            };
            let behind = queue::identity_of(&predecessor);
            if queued_behind.as_deref() != Some(behind.as_str()) {
                log::info("queued", &[("key", &place.key), ("behind", &behind)]);
                self.notify(Notice::Queued {
                    key: place.key.clone(),
                    behind: behind.clone(),
                });
                queued_behind = Some(behind);
            }
            let ahead = self.watch_after(&queue::name_of(&predecessor), revision);
            match self.wait(&[ahead.id, own.id], false, None) {
                Some(Alert::Deleted { watch, .. } | Alert::Recheck { watch, .. })
                    if watch == ahead.id => {}
                Some(Alert::Deleted { .. }) => {
                    log::warn(
                        "our key was deleted; queueing again",
                        &[("key", &place.key)],
                    );
                    return Outcome::Requeue { lease_gone: false };
                }
                Some(Alert::Recheck { .. }) => own = self.watch_after(&place.key, revision),
                Some(Alert::LeaseGone { .. }) => {
                    log::warn("our lease is gone; queueing again", &[("key", &place.key)]);
                    return Outcome::Requeue { lease_gone: true };
                }
                Some(Alert::Lapsed { .. }) => {}
                Some(Alert::Stop) | None => return Outcome::Finished,
            }
        }
    }

    /// One transaction: does our key still exist, and who is just before it?
    fn look(&self, place: &Place) -> Result<Position, etcd::Error> {
        let lock = &self.settings().lock_name;
        let answer = self
            .client()
            .txn(&queue::look(lock, &place.key, place.revision))?;
        queue::position(answer).map_err(|d| self.bad_answer("kv/txn", d))
    }

    /// The command must never start on a stale renewal: unless two of the leader's keepalives fit
    /// before the deadline, one is sent first.
    fn ready_to_lead(&mut self) -> Readiness {
        let settings = self.settings().clone();
        let fresh =
            |clock: &session::RenewalClock| clock.age().is_some_and(|a| settings.may_lead_on(a));
        if fresh(&self.shared.clock) {
            return Readiness::Ready;
        }
        let Some(keeper) = self.session.as_ref().map(|s| Arc::clone(&s.keeper)) else {
            return Readiness::Stop;
        };
        let asked = BootInstant::now();
        keeper.renew_now();
        let budget = settings.request_budget() + Duration::from_millis(100);
        if self.shared.clock.wait_renewed_after(asked, budget) && fresh(&self.shared.clock) {
            return Readiness::Ready;
        }
        let session = self.session_id();
        if self
            .pending
            .iter()
            .any(|a| *a == Alert::LeaseGone { session })
        {
            return Readiness::LeaseGone;
        }
        const STALE: &str = "cannot renew the lease in time to lead";
        if self.failing != Some(STALE) {
            log::warn(
                &format!("{STALE}; retrying"),
                &[("every", &format!("{:?}", settings.retry_period))],
            );
            self.failing = Some(STALE);
        }
        match self.pause(settings.retry_period) {
            true => Readiness::Retry,
            false => Readiness::Stop,
        }
    }

    // ---- leading ----

    /// Leads until the key or the lease is lost, or we stop. Besides watching our key, the leader
    /// reads it once per keepalive interval: a preemption is noticed within that interval even
    /// when the watch's connection died silently.
    fn lead(&mut self, place: &Place, mut own: KeyWatch, revision: i64) -> Outcome {
        let Some(session) = self.session.as_ref() else {
            return Outcome::Finished;
        };
        let lease = session.lease;
        session.keeper.set_leading(true);
        self.shared.clock.set_leading(true);
        self.shared
            .leader
            .seen(Some(self.settings().identity.clone()));
        self.notify(Notice::Leading(Leadership {
            key: place.key.clone(),
            revision: place.revision,
            lease,
        }));
        let interval = self.settings().leader_interval();
        let mut known = revision;
        let mut confirm_at = Instant::now() + interval;
        let mut confirm_failing = false;
        let loss = loop {
            let alert = self.wait(&[own.id], true, Some(confirm_at));
            let rewatch = match alert {
                None => {
                    confirm_at = (confirm_at + interval).max(Instant::now());
                    false
                }
                Some(Alert::Recheck { .. }) => true,
                Some(Alert::Deleted { .. }) => break Loss::KeyDeleted,
                Some(Alert::LeaseGone { .. }) => break Loss::LeaseGone,
                Some(Alert::Lapsed { .. }) => break Loss::RenewalLapsed,
                Some(Alert::Stop) => return Outcome::Finished,
            };
            match self.confirm(place) {
                Ok(Some(now)) => {
                    known = known.max(now);
                    if confirm_failing {
                        log::info("our key is confirmed again", &[("key", &place.key)]);
                        confirm_failing = false;
                    }
                }
                Ok(None) => break Loss::KeyDeleted,
                Err(error) => {
                    if !confirm_failing {
                        log::warn(
                            "cannot confirm our key; the renew deadline still applies",
                            &[("error", &error)],
                        );
                        confirm_failing = true;
                    }
                    if rewatch && !self.pause(self.settings().retry_period) {
                        return Outcome::Finished;
                    }
                }
            }
            if rewatch {
                own = self.watch_after(&place.key, known);
            }
        };
        self.notify(Notice::Lost(loss));
        Outcome::Finished
    }

    /// The revision our key was read at if it is still ours, `None` if it is gone.
    fn confirm(&self, place: &Place) -> Result<Option<i64>, etcd::Error> {
        let answer = self.client().range(&queue::confirm(&place.key))?;
        Ok(queue::confirmed(&answer, place.revision))
    }

    // ---- alerts, pauses, retries ----

    /// Watches `key` for deletion after revision `seen` (revisions from etcd saturate, never wrap).
    fn watch_after(&mut self, key: &str, seen: i64) -> KeyWatch {
        let id = self.fresh_id();
        watch::watch_key(
            &self.shared,
            self.session_id(),
            id,
            key,
            seen.saturating_add(1),
        )
    }

    /// The next alert of the current session that concerns one of `watches` (or the lease; lapsed
    /// renewals only while `leading`). `None` when `until` passed first or the inbox is closed.
    fn wait(&mut self, watches: &[u64], leading: bool, until: Option<Instant>) -> Option<Alert> {
        let session = self.session_id();
        let relevant = |alert: &Alert| match *alert {
            Alert::Stop => true,
            Alert::LeaseGone { session: s } => s == session,
            Alert::Lapsed { session: s } => s == session && leading,
            Alert::Deleted { session: s, watch } | Alert::Recheck { session: s, watch } => {
                s == session && watches.contains(&watch)
            }
        };
        while let Some(alert) = self.pending.pop_front() {
            if relevant(&alert) {
                return Some(alert);
            }
        }
        loop {
            let alert = match until {
                None => self.inbox.recv().ok()?,
                Some(until) => {
                    let left = until.saturating_duration_since(Instant::now());
                    self.inbox.recv_timeout(left).ok()?
                }
            };
            if relevant(&alert) {
                return Some(alert);
            }
        }
    }

    /// Sleeps for `duration` unless asked to stop; false when stopping. Alerts that arrive
    /// meanwhile are kept for the next wait.
    fn pause(&mut self, duration: Duration) -> bool {
        if duration.is_zero() {
            return !self.shared.stopping();
        }
        let deadline = Instant::now() + duration;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.inbox.recv_timeout(left) {
                Ok(Alert::Stop) | Err(RecvTimeoutError::Disconnected) => return false,
                Ok(alert) => self.pending.push_back(alert),
                Err(RecvTimeoutError::Timeout) => return !self.shared.stopping(),
            }
        }
    }

    /// After a failed call: log it if it is news, and wait RETRY_PERIOD. False when we must stop
    /// (asked to, or the error is one that retrying cannot fix).
    fn retry_later(&mut self, error: &etcd::Error) -> bool {
        if self.shared.stopping() {
            return false;
        }
        if error.is_permanent() {
            log::error("etcd refused us", &[("error", error)]);
            self.notify(Notice::Fatal(error.to_string()));
            return false;
        }
        if self.tls_settings_wrong(error) {
            log::error(
                "TLS with etcd cannot work with these settings",
                &[("error", error)],
            );
            self.notify(Notice::Fatal(error.to_string()));
            return false;
        }
        let kind = error.summary();
        if self.failing != Some(kind) {
            log::warn(
                &format!("{kind}; retrying"),
                &[
                    ("every", &format!("{:?}", self.settings().retry_period)),
                    ("error", error),
                ],
            );
            self.failing = Some(kind);
        }
        self.pause(self.settings().retry_period)
    }

    /// Before etcd ever answered, TLS failing on every endpoint is a setting to fix, not an outage
    /// to wait out: at once when a certificate check says so, on the second attempt in a row when
    /// the connection only closed at a telling moment. After a first success it is retried (a
    /// rotation may be under way) and logged with the same hint.
    fn tls_settings_wrong(&mut self, error: &etcd::Error) -> bool {
        let problems = match error.tls_problems() {
            Some(problems) if !self.connected => problems,
            _ => {
                self.tls_strikes = 0;
                return false;
            }
        };
        self.tls_strikes += 1;
        problems.iter().all(|p| p.certain()) || self.tls_strikes >= 2
    }

    fn reachable(&mut self) {
        self.connected = true;
        self.tls_strikes = 0;
        if self.failing.take().is_some() {
            log::info(
                "etcd answers again",
                &[("endpoint", &self.client().current_endpoint())],
            );
        }
    }

    fn bad_answer(&self, op: &'static str, detail: String) -> etcd::Error {
        etcd::Error::Decode {
            endpoint: self.client().current_endpoint(),
            op,
            detail,
        }
    }
}
