//! etcd's election recipe (the layout of `client/v3/concurrency.Election`), without its known gaps.
//!
//! A candidate grants a lease, keeps it alive, and creates `<lock>/<lease id in hex>` = identity by a
//! transaction guarded on `create_revision == 0`. The leader is the key with the lowest
//! create_revision under `<lock>/`; every other candidate watches only its predecessor for deletion
//! and then looks again. On top of etcd's recipe:
//!
//! - each look is one transaction that also proves our own key still exists, so a candidate whose key
//!   vanished never takes itself for the leader;
//! - our own key is watched the whole time: deleted while waiting ⇒ re-queue with a fresh lease;
//!   deleted while leading ⇒ [`Event::Lost`];
//! - a keepalive answered without TTL means the lease is gone ⇒ re-queue, or [`Event::Lost`];
//! - the lease is revoked on every way out ([`Election::resign`]).
//!
//! Watches are re-established from the next revision when they end, fail or stay silent longer than
//! the client's idle timeout, so a connection that died without FIN/RST is replaced within that time.
//! A compaction of the watched revision leads to a fresh look.
//!
//! The election runs on its own threads and reports through a callback; it never blocks its caller.
//! The moment of the last successful keepalive *send* is kept for the caller's renew deadline.

use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::etcd::{
    self, Client, Compare, CompareResult, EventKind, KeyValue, Op, RangeRequest, SortOrder,
    SortTarget, TxnRequest, WatchMessage, WatchRequest,
};
use crate::log;
use crate::status::Status;

/// What the election needs to know.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The election's name; keys live under `<lock_name>/`.
    pub lock_name: String,
    /// Our key's value; shown by `etcdctl elect -l`.
    pub identity: String,
    /// Lease TTL (whole seconds).
    pub lease_ttl: Duration,
    /// How often to retry after etcd failed, and the longest pause between keepalives.
    pub retry_period: Duration,
    /// How long leadership holds after the last acknowledged keepalive was sent.
    pub renew_deadline: Duration,
    /// Delete every other key under the prefix when joining.
    pub force_acquire: bool,
}

impl Settings {
    /// Keepalive every min(RETRY_PERIOD, LEASE_DURATION / 3).
    pub fn keepalive_interval(&self) -> Duration {
        self.retry_period.min(self.lease_ttl / 3)
    }

    fn prefix(&self) -> String {
        format!("{}/", self.lock_name)
    }
}

/// Our place at the head of the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leadership {
    /// Our key, `<lock>/<lease hex>`.
    pub key: String,
    /// Our key's create_revision: it rises with every new leader, a fencing token.
    pub revision: i64,
    /// Our lease.
    pub lease: i64,
}

/// Why leadership ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    /// Our key was deleted (by an operator, or by a FORCE_ACQUIRE elsewhere).
    KeyDeleted,
    /// etcd says our lease no longer exists.
    LeaseGone,
    /// A keepalive was acknowledged only after RENEW_DEADLINE had passed (the process stalled).
    RenewalLapsed,
}

impl std::fmt::Display for Loss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Loss::KeyDeleted => "our key was deleted",
            Loss::LeaseGone => "our lease is gone",
            Loss::RenewalLapsed => "a renewal came back after the renew deadline had passed",
        })
    }
}

/// What the election reports to its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// We joined (or re-joined) the queue behind the candidate with this identity.
    Queued { key: String, behind: String },
    /// We lead.
    Leading(Leadership),
    /// We led and no longer do.
    Lost(Loss),
    /// etcd refused us in a way retrying cannot fix (bad credentials, no permission).
    Fatal(String),
}

/// A running candidacy.
pub struct Election {
    shared: Arc<Shared>,
    /// Disconnects when the election thread has returned.
    finished: Mutex<Receiver<()>>,
}

/// How long [`Election::resign`] waits for the election thread to finish a call in flight (a
/// lease granted meanwhile is revoked by that thread before it returns).
const FINISH_WAIT: Duration = Duration::from_secs(3);

impl Election {
    /// Joins the election on background threads; `notify` receives every [`Event`].
    pub fn start(
        client: Client,
        settings: Settings,
        status: Arc<Status>,
        notify: impl Fn(Event) + Send + Sync + 'static,
    ) -> Election {
        let (wake, inbox) = channel();
        let shared = Arc::new(Shared {
            client,
            settings,
            notify: Box::new(notify),
            status,
            state: Mutex::new(State::default()),
            wake,
        });
        let worker = Arc::clone(&shared);
        let (done, finished) = channel::<()>();
        thread::Builder::new()
            .name("election".into())
            .spawn(move || {
                let _done = done; // dropped when the thread returns
                Candidate::new(worker, inbox).run()
            })
            .map(|_| ())
            .unwrap_or_else(|e| shared.fatal(&format!("cannot start the election thread: {e}")));
        Election {
            shared,
            finished: Mutex::new(finished),
        }
    }

    /// When the last keepalive that etcd acknowledged was sent (or the lease was granted).
    pub fn last_renewal(&self) -> Option<Instant> {
        self.shared.lock().last_renewal
    }

    /// Leaves the election: stops every thread and revokes the lease, which deletes our key at once.
    /// Later grants by the election thread are revoked by that thread.
    pub fn resign(&self) -> Result<(), etcd::Error> {
        let lease = {
            let mut state = self.shared.lock();
            state.stopping = true;
            state.lease.take()
        };
        let _ = self.shared.wake.send(Wake::Stop);
        let revoked = match lease {
            Some(lease) => revoke(&self.shared.client, lease),
            None => Ok(()),
        };
        if let Ok(finished) = self.finished.lock() {
            let _ = finished.recv_timeout(FINISH_WAIT);
        }
        revoked
    }
}

/// Revokes `lease`; a lease that is already gone counts as revoked.
fn revoke(client: &Client, lease: i64) -> Result<(), etcd::Error> {
    match client.lease_revoke(lease) {
        Err(error) if !error.is_lease_gone() => Err(error),
        _ => {
            log::info("lease revoked", &[("lease", &format!("{lease:x}"))]);
            Ok(())
        }
    }
}

struct Shared {
    client: Client,
    settings: Settings,
    notify: Box<dyn Fn(Event) + Send + Sync>,
    status: Arc<Status>,
    state: Mutex<State>,
    wake: Sender<Wake>,
}

#[derive(Default)]
struct State {
    stopping: bool,
    /// The lease to revoke when we leave.
    lease: Option<i64>,
    /// The session whose keepalives count.
    session: u64,
    last_renewal: Option<Instant>,
    /// Leadership was announced for the current session.
    leading: bool,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn stopping(&self) -> bool {
        self.lock().stopping
    }

    /// Records an acknowledged keepalive sent at `sent`. While leading, a renewal sent
    /// RENEW_DEADLINE or more after the previous one comes too late: leadership was forfeited in
    /// between (a stalled process cannot have seen its deadline pass), and a successor may already
    /// have adopted the lease. It is not counted, and the owner hears [`Loss::RenewalLapsed`].
    fn renewed(&self, session: u64, sent: Instant) {
        let mut state = self.lock();
        let late = state.last_renewal.is_some_and(|last| {
            sent.saturating_duration_since(last) >= self.settings.renew_deadline
        });
        if state.session == session && state.leading && late {
            drop(state);
            (self.notify)(Event::Lost(Loss::RenewalLapsed));
            return;
        }
        if state.session == session {
            // Keepalives from two threads may be answered out of order: keep the newest send.
            state.last_renewal = Some(state.last_renewal.map_or(sent, |last| last.max(sent)));
            self.status.renewed(sent, sent.elapsed());
        }
    }

    fn fatal(&self, reason: &str) {
        (self.notify)(Event::Fatal(reason.to_string()));
    }
}

/// Messages that wake the election thread. Each carries the session (and watch) it belongs to, so
/// late messages from an earlier session are recognised and dropped.
#[derive(Debug)]
enum Wake {
    Stop,
    LeaseGone { session: u64 },
    Deleted { session: u64, watch: u64 },
    Recheck { session: u64, watch: u64 },
}

/// One lease, one key: from joining the queue until we lose the key, the lease, or stop.
struct Session {
    id: u64,
    lease: i64,
    key: String,
    revision: i64,
    /// The creating transaction saw our key at the head of the queue.
    at_head: bool,
    stop: Arc<Cancel>,
}

/// What the creating transaction learnt.
struct Created {
    revision: i64,
    at_head: bool,
}

/// Where our key stands.
enum Position {
    Leader {
        revision: i64,
    },
    Behind {
        predecessor: KeyValue,
        revision: i64,
    },
    KeyLost,
}

/// How a session ended.
enum Outcome {
    Requeue,
    Finished,
}

struct Candidate {
    shared: Arc<Shared>,
    inbox: Receiver<Wake>,
    next_id: u64,
    unreachable: bool,
}

impl Candidate {
    fn new(shared: Arc<Shared>, inbox: Receiver<Wake>) -> Candidate {
        Candidate {
            shared,
            inbox,
            next_id: 0,
            unreachable: false,
        }
    }

    fn run(mut self) {
        // FORCE_ACQUIRE always takes a fresh key: its transaction deletes every other one.
        let mut may_adopt = !self.settings().force_acquire;
        while let Some(session) = self.join(may_adopt) {
            may_adopt = false;
            let outcome = self.campaign(&session);
            session.stop.cancel();
            match outcome {
                Outcome::Requeue => self.leave(&session),
                Outcome::Finished => return,
            }
        }
    }

    fn settings(&self) -> &Settings {
        &self.shared.settings
    }

    fn client(&self) -> &Client {
        &self.shared.client
    }

    fn fresh_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Gets a lease and a key, retrying every RETRY_PERIOD until it works or we stop.
    fn join(&mut self, may_adopt: bool) -> Option<Session> {
        loop {
            if self.shared.stopping() {
                return None;
            }
            let attempt = match may_adopt {
                true => self.adopt_or_enqueue(),
                false => self.enqueue(),
            };
            match attempt {
                Ok(session) => {
                    self.reachable();
                    if self.register(&session) {
                        self.start_keepalive(&session);
                        return Some(session);
                    }
                    let _ = revoke(self.client(), session.lease);
                    return None;
                }
                Err(error) if self.retry_later(&error) => continue,
                Err(_) => return None,
            }
        }
    }

    fn adopt_or_enqueue(&mut self) -> Result<Session, etcd::Error> {
        match self.adopt()? {
            Some(session) => Ok(session),
            // Asked to stop during the takeover check: grant nothing (a lease granted now could
            // outlive the process by a TTL, since nobody waits for this thread).
            None if self.shared.stopping() => Err(etcd::Error::Setup {
                item: "election".into(),
                problem: "stopping".into(),
            }),
            None => self.enqueue(),
        }
    }

    /// Seamless takeover: a live key under the prefix that carries our identity is ours from an
    /// earlier run; keep its lease and its place in the queue.
    fn adopt(&mut self) -> Result<Option<Session>, etcd::Error> {
        let settings = self.settings().clone();
        let range =
            RangeRequest::prefix(settings.prefix()).sort(SortTarget::Create, SortOrder::Ascend);
        let found = self.client().range(&range)?;
        let ours = found
            .kvs
            .into_iter()
            .find(|kv| kv.value == settings.identity.as_bytes() && kv.lease != 0);
        let Some(kv) = ours else { return Ok(None) };
        log::info(
            "found our identity's key; waiting until its holder must have stopped",
            &[("key", &key_of(&kv))],
        );
        match self.await_abandoned(kv.lease)? {
            Abandoned::Yes => {}
            Abandoned::RenewedElsewhere => {
                log::error(
                    "another live instance uses our identity; queueing with a fresh key \
                     (identities must be unique)",
                    &[("key", &key_of(&kv))],
                );
                return Ok(None);
            }
            Abandoned::OtherDuration => {
                log::warn(
                    "our identity's key has a lease of another duration; queueing with a fresh key",
                    &[("key", &key_of(&kv))],
                );
                return Ok(None);
            }
            // The lease expired meanwhile (and its key with it), or we are stopping.
            Abandoned::Gone | Abandoned::Stopping => return Ok(None),
        }
        let sent = Instant::now();
        match self.client().lease_keepalive(kv.lease) {
            Ok(_) => {}
            Err(error) if error.is_lease_gone() => return Ok(None),
            Err(error) => return Err(error),
        }
        let session = self.session(
            kv.lease,
            String::from_utf8_lossy(&kv.key).into_owned(),
            Created {
                revision: kv.create_revision,
                at_head: false,
            },
            sent,
        );
        log::info(
            "adopted our key from an earlier run",
            &[
                ("key", &session.key),
                ("revision", &session.revision),
                ("lease", &format!("{:x}", session.lease)),
            ],
        );
        Ok(Some(session))
    }

    /// Waits, without renewing it, until a lease found under our identity is provably abandoned:
    /// its holder's last renewal lies at least (RENEW_DEADLINE + LEASE_DURATION) / 2 back — the
    /// moment by which that holder, dead or merely stalled, has killed its command (a stalled holder
    /// that wakes later forfeits: see `Shared::renewed`). TTLs are whole seconds, so the TTL is
    /// sampled every 200 ms and the tightest bound on the holder's last renewal is kept. A TTL that
    /// rises means someone renews the lease; a raft leader change refreshes every lease, so it
    /// restarts the bound (later, hence safe). Bounded: the lease expires within one TTL.
    fn await_abandoned(&mut self, lease: i64) -> Result<Abandoned, etcd::Error> {
        const STEP: Duration = Duration::from_millis(200);
        let settings = self.settings().clone();
        let kill_point = (settings.renew_deadline + settings.lease_ttl) / 2;
        let granted = settings.lease_ttl.as_secs() as i64;
        let mut last_renewal_bound: Option<Instant> = None;
        let mut previous: Option<(u64, i64)> = None;
        loop {
            let answer = self.client().lease_time_to_live(lease)?;
            let now = Instant::now();
            if answer.ttl <= 0 {
                return Ok(Abandoned::Gone);
            }
            if answer.granted_ttl != granted {
                return Ok(Abandoned::OtherDuration);
            }
            let term = answer.header.raft_term;
            match previous {
                Some((t, ttl)) if t == term && answer.ttl > ttl => {
                    return Ok(Abandoned::RenewedElsewhere)
                }
                Some((t, _)) if t != term => last_renewal_bound = None,
                _ => {}
            }
            previous = Some((term, answer.ttl));
            // The remaining time is below ttl + 1 s, so the last renewal was at most this long ago.
            let since = Duration::from_secs((granted - answer.ttl - 1).max(0) as u64);
            let bound = now.checked_sub(since).unwrap_or(now);
            let bound = last_renewal_bound.map_or(bound, |b| b.min(bound));
            last_renewal_bound = Some(bound);
            if now >= bound + kill_point + STEP {
                return Ok(Abandoned::Yes);
            }
            if !self.pause(STEP) {
                return Ok(Abandoned::Stopping);
            }
        }
    }

    /// Grants a fresh lease and creates our key with it (preempting everyone with FORCE_ACQUIRE).
    fn enqueue(&mut self) -> Result<Session, etcd::Error> {
        let settings = self.settings().clone();
        let sent = Instant::now();
        let grant = self
            .client()
            .lease_grant(settings.lease_ttl.as_secs() as i64)?;
        log::info(
            "lease granted",
            &[
                ("lease", &format!("{:x}", grant.id)),
                ("ttl", &grant.ttl),
                ("endpoint", &self.client().current_endpoint()),
            ],
        );
        let key = format!("{}{:x}", settings.prefix(), grant.id);
        let created = self.create_key(&key, grant.id);
        match created {
            Ok(created) => Ok(self.session(grant.id, key, created, sent)),
            Err(error) => {
                let _ = revoke(self.client(), grant.id);
                Err(error)
            }
        }
    }

    /// The create-if-absent transaction; with FORCE_ACQUIRE it also deletes every other key under
    /// the prefix (two ranges around our key: etcd refuses a put inside a deleted range). It also
    /// reads the head of the queue, which sees our put: when that is our key, we lead at once
    /// without another look.
    fn create_key(&self, key: &str, lease: i64) -> Result<Created, etcd::Error> {
        let settings = self.settings();
        let put = Op::Put {
            key: key.as_bytes().to_vec(),
            value: settings.identity.as_bytes().to_vec(),
            lease,
        };
        let mut success = Vec::new();
        if settings.force_acquire {
            let prefix = settings.prefix().into_bytes();
            let mut after_key = key.as_bytes().to_vec();
            after_key.push(0);
            success.push(Op::Delete {
                key: prefix.clone(),
                range_end: key.as_bytes().to_vec(),
            });
            success.push(Op::Delete {
                key: after_key,
                range_end: etcd::wire::prefix_end(&prefix),
            });
        }
        success.push(put);
        success.push(Op::Range(leader_range(&settings.lock_name)));
        let txn = TxnRequest {
            compare: vec![Compare::create_revision(key, CompareResult::Equal, 0)],
            success,
            failure: vec![Op::Range(RangeRequest::key(key))],
        };
        let answer = self.client().txn(&txn)?;
        if answer.succeeded {
            if settings.force_acquire {
                log::warn(
                    "FORCE_ACQUIRE: deleted every other key under the lock",
                    &[("key", &key)],
                );
            }
            let head = answer.responses.into_iter().rev().find_map(|op| match op {
                etcd::OpResponse::Range(range) => range.kvs.into_iter().next(),
                _ => None,
            });
            return Ok(Created {
                revision: answer.header.revision,
                at_head: head.is_some_and(|kv| kv.key == key.as_bytes()),
            });
        }
        // The key already exists (only possible if the lease was reused): keep its revision.
        answer
            .responses
            .into_iter()
            .find_map(|op| match op {
                etcd::OpResponse::Range(range) => range.kvs.into_iter().next(),
                _ => None,
            })
            .map(|kv| Created {
                revision: kv.create_revision,
                at_head: false,
            })
            .ok_or_else(|| etcd::Error::Decode {
                endpoint: self.client().current_endpoint(),
                op: "kv/txn",
                detail: format!("create of {key} failed and the key cannot be read"),
            })
    }

    fn session(&mut self, lease: i64, key: String, created: Created, sent: Instant) -> Session {
        let id = self.fresh_id();
        let mut state = self.shared.lock();
        state.session = id;
        state.last_renewal = Some(sent);
        state.leading = false;
        self.shared.status.lease_granted(sent);
        self.shared.status.attempt();
        Session {
            id,
            lease,
            key,
            revision: created.revision,
            at_head: created.at_head,
            stop: Arc::new(Cancel::default()),
        }
    }

    /// Records the lease to revoke on exit; false when we are already stopping.
    fn register(&self, session: &Session) -> bool {
        let mut state = self.shared.lock();
        if state.stopping {
            return false;
        }
        state.lease = Some(session.lease);
        true
    }

    /// Revokes the session's lease before re-queueing with a fresh one.
    fn leave(&self, session: &Session) {
        let mut state = self.shared.lock();
        if state.lease == Some(session.lease) {
            state.lease = None;
        }
        drop(state);
        if let Err(error) = revoke(self.client(), session.lease) {
            log::warn(
                "cannot revoke the old lease; it will expire",
                &[("error", &error)],
            );
        }
    }

    /// Runs one session: wait for our turn, lead, and report how it ended.
    fn campaign(&mut self, session: &Session) -> Outcome {
        let mut own_watch = self.watch_own_key(session, session.revision + 1);
        let mut queued_behind = String::new();
        let mut known_head = session.at_head;
        loop {
            let looked = match std::mem::take(&mut known_head) {
                true => Ok(Position::Leader {
                    revision: session.revision,
                }),
                false => self.position(session),
            };
            let position = match looked {
                Ok(position) => position,
                Err(error) => {
                    if !self.retry_later(&error) {
                        return Outcome::Finished;
                    }
                    continue;
                }
            };
            self.reachable();
            match position {
                Position::KeyLost => {
                    log::warn(
                        "our key is gone; queueing again with a fresh lease",
                        &[("key", &session.key)],
                    );
                    return Outcome::Requeue;
                }
                Position::Leader { revision } => match self.fresh_renewal(session) {
                    Freshness::Fresh => return self.lead(session, &mut own_watch, revision),
                    Freshness::LeaseGone => return Outcome::Requeue,
                    Freshness::Retry => continue,
                    Freshness::Stop => return Outcome::Finished,
                },
                Position::Behind {
                    predecessor,
                    revision,
                } => {
                    let behind = identity_of(&predecessor);
                    if behind != queued_behind {
                        log::info("queued", &[("key", &session.key), ("behind", &behind)]);
                        (self.shared.notify)(Event::Queued {
                            key: session.key.clone(),
                            behind: behind.clone(),
                        });
                        queued_behind = behind;
                    }
                    let key = String::from_utf8_lossy(&predecessor.key).into_owned();
                    let (watch, cancel) = self.watch_predecessor(session, key, revision + 1);
                    let woke = self.wait(session, &[watch, own_watch]);
                    cancel.cancel();
                    match woke {
                        Woke::Deleted(id) | Woke::Recheck(id) if id == watch => {}
                        Woke::Deleted(_) => return Outcome::Requeue,
                        Woke::Recheck(_) => own_watch = self.watch_own_key(session, revision + 1),
                        Woke::LeaseGone => {
                            log::warn(
                                "our lease is gone; queueing again",
                                &[("lease", &format!("{:x}", session.lease))],
                            );
                            return Outcome::Requeue;
                        }
                        Woke::Stop => return Outcome::Finished,
                    }
                }
            }
        }
    }

    /// The supervisor holds leadership only while the last acknowledged renewal is younger than
    /// RENEW_DEADLINE, so the child must never start on a stale one: a renewal older than one
    /// keepalive interval (a keepalive was due and has not been acknowledged) is renewed first.
    fn fresh_renewal(&mut self, session: &Session) -> Freshness {
        let interval = self.settings().keepalive_interval();
        let last = self.shared.lock().last_renewal;
        if last.is_some_and(|last| last.elapsed() < interval) {
            return Freshness::Fresh;
        }
        let sent = Instant::now();
        match self.client().lease_keepalive(session.lease) {
            Ok(_) => {
                self.shared.renewed(session.id, sent);
                Freshness::Fresh
            }
            Err(error) if error.is_lease_gone() => {
                log::warn(
                    "our lease is gone; queueing again",
                    &[("lease", &format!("{:x}", session.lease))],
                );
                Freshness::LeaseGone
            }
            Err(error) if self.retry_later(&error) => Freshness::Retry,
            Err(_) => Freshness::Stop,
        }
    }

    /// Leads until the key or the lease is lost, or we stop.
    fn lead(&mut self, session: &Session, own_watch: &mut u64, revision: i64) -> Outcome {
        self.shared.lock().leading = true;
        (self.shared.notify)(Event::Leading(Leadership {
            key: session.key.clone(),
            revision: session.revision,
            lease: session.lease,
        }));
        let mut revision = revision;
        loop {
            let loss = match self.wait(session, &[*own_watch]) {
                Woke::Stop => return Outcome::Finished,
                Woke::LeaseGone => Loss::LeaseGone,
                Woke::Deleted(_) => Loss::KeyDeleted,
                Woke::Recheck(_) => match self.still_leading(session) {
                    Ok(Some(now)) => {
                        revision = revision.max(now);
                        *own_watch = self.watch_own_key(session, revision + 1);
                        continue;
                    }
                    Ok(None) => Loss::KeyDeleted,
                    Err(error) => {
                        log::warn(
                            "cannot re-check our key; watching again",
                            &[("error", &error)],
                        );
                        if !self.pause(self.settings().retry_period) {
                            return Outcome::Finished;
                        }
                        *own_watch = self.watch_own_key(session, revision + 1);
                        continue;
                    }
                },
            };
            (self.shared.notify)(Event::Lost(loss));
            return Outcome::Finished;
        }
    }

    /// One transaction: does our key still exist, and who is just before it?
    fn position(&self, session: &Session) -> Result<Position, etcd::Error> {
        let predecessor = RangeRequest::prefix(self.settings().prefix())
            .max_create_revision(session.revision - 1)
            .sort(SortTarget::Create, SortOrder::Descend)
            .limit(1);
        let txn = TxnRequest {
            compare: vec![Compare::create_revision(
                session.key.as_str(),
                CompareResult::Equal,
                session.revision,
            )],
            success: vec![
                Op::Range(predecessor),
                Op::Range(leader_range(&self.settings().lock_name)),
            ],
            failure: vec![],
        };
        let answer = self.client().txn(&txn)?;
        if !answer.succeeded {
            return Ok(Position::KeyLost);
        }
        let revision = answer.header.revision;
        // Both ranges must be answered: a missing one would read as "nobody ahead of us".
        let firsts: Vec<Option<KeyValue>> = answer
            .responses
            .into_iter()
            .filter_map(|op| match op {
                etcd::OpResponse::Range(range) => Some(range.kvs.into_iter().next()),
                _ => None,
            })
            .collect();
        let [predecessor, leader]: [Option<KeyValue>; 2] =
            firsts
                .try_into()
                .map_err(|firsts: Vec<_>| etcd::Error::Decode {
                    endpoint: self.client().current_endpoint(),
                    op: "kv/txn",
                    detail: format!("the look answered {} of 2 ranges", firsts.len()),
                })?;
        self.shared
            .status
            .leader_seen(leader.map(|kv| identity_of(&kv)));
        Ok(match predecessor {
            None => Position::Leader { revision },
            Some(predecessor) => Position::Behind {
                predecessor,
                revision,
            },
        })
    }

    /// While leading: the current revision if our key is still ours, `None` if it is gone.
    fn still_leading(&self, session: &Session) -> Result<Option<i64>, etcd::Error> {
        let answer = self
            .client()
            .range(&RangeRequest::key(session.key.as_str()))?;
        let ours = answer
            .kvs
            .iter()
            .any(|kv| kv.create_revision == session.revision);
        Ok(ours.then_some(answer.header.revision))
    }

    /// Watches our own key for as long as the session lives (the session's stop token ends it).
    fn watch_own_key(&mut self, session: &Session, from: i64) -> u64 {
        let watch = self.fresh_id();
        let stop = Arc::clone(&session.stop);
        self.spawn_watch(session, watch, session.key.clone(), from, stop);
        watch
    }

    /// Watches the predecessor until the returned token is cancelled.
    fn watch_predecessor(
        &mut self,
        session: &Session,
        key: String,
        from: i64,
    ) -> (u64, Arc<Cancel>) {
        let watch = self.fresh_id();
        let cancel = Arc::new(Cancel::default());
        self.spawn_watch(session, watch, key, from, Arc::clone(&cancel));
        (watch, cancel)
    }

    fn spawn_watch(
        &self,
        session: &Session,
        watch: u64,
        key: String,
        from: i64,
        cancel: Arc<Cancel>,
    ) {
        let watcher = KeyWatcher {
            client: self.client().clone(),
            wake: self.shared.wake.clone(),
            cancel,
            retry: self.settings().retry_period,
            session: session.id,
            watch,
            key,
            next_revision: from,
        };
        if let Err(error) = thread::Builder::new()
            .name("watch".into())
            .spawn(move || watcher.run())
        {
            log::error("cannot start a watch thread", &[("error", &error)]);
            let _ = self.shared.wake.send(Wake::Recheck {
                session: session.id,
                watch,
            });
        }
    }

    fn start_keepalive(&self, session: &Session) {
        let keeper = KeepAlive {
            shared: Arc::clone(&self.shared),
            stop: Arc::clone(&session.stop),
            session: session.id,
            lease: session.lease,
            interval: self.settings().keepalive_interval(),
        };
        if let Err(error) = thread::Builder::new()
            .name("keepalive".into())
            .spawn(move || keeper.run())
        {
            log::error("cannot start the keepalive thread", &[("error", &error)]);
        }
    }

    /// Waits for something that concerns this session and one of `watches`.
    fn wait(&self, session: &Session, watches: &[u64]) -> Woke {
        loop {
            let Ok(wake) = self.inbox.recv() else {
                return Woke::Stop;
            };
            match wake {
                Wake::Stop => return Woke::Stop,
                Wake::LeaseGone { session: s } if s == session.id => return Woke::LeaseGone,
                Wake::Deleted { session: s, watch }
                    if s == session.id && watches.contains(&watch) =>
                {
                    return Woke::Deleted(watch)
                }
                Wake::Recheck { session: s, watch }
                    if s == session.id && watches.contains(&watch) =>
                {
                    return Woke::Recheck(watch)
                }
                _ => continue,
            }
        }
    }

    /// After a failed call: log it if it is news, and wait RETRY_PERIOD. False when we must stop
    /// (asked to, or the error is one that retrying cannot fix).
    fn retry_later(&mut self, error: &etcd::Error) -> bool {
        if self.shared.stopping() {
            return false;
        }
        if is_fatal(error) {
            log::error("etcd refused us", &[("error", error)]);
            self.shared.fatal(&error.to_string());
            return false;
        }
        if !self.unreachable {
            log::warn(
                "etcd unreachable; retrying",
                &[
                    ("every", &format!("{:?}", self.settings().retry_period)),
                    ("error", error),
                ],
            );
            self.unreachable = true;
        }
        self.pause(self.settings().retry_period)
    }

    /// Sleeps for `duration` unless asked to stop; false when stopping.
    fn pause(&self, duration: Duration) -> bool {
        let deadline = Instant::now() + duration;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.inbox.recv_timeout(left) {
                Ok(Wake::Stop) | Err(RecvTimeoutError::Disconnected) => return false,
                Ok(_) => continue,
                Err(RecvTimeoutError::Timeout) => return !self.shared.stopping(),
            }
        }
    }

    fn reachable(&mut self) {
        if self.unreachable {
            log::info(
                "etcd reachable again",
                &[("endpoint", &self.client().current_endpoint())],
            );
            self.unreachable = false;
        }
    }
}

/// Who leads the election `lock_name` now: the value of its oldest key (`etcdctl elect -l`).
pub fn current_leader(client: &Client, lock_name: &str) -> Result<Option<String>, etcd::Error> {
    let answer = client.range(&leader_range(lock_name))?;
    Ok(answer.kvs.first().map(identity_of))
}

/// The key with the lowest create_revision under the prefix: the leader's.
fn leader_range(lock_name: &str) -> RangeRequest {
    RangeRequest::prefix(format!("{lock_name}/"))
        .sort(SortTarget::Create, SortOrder::Ascend)
        .limit(1)
}

fn key_of(kv: &KeyValue) -> String {
    String::from_utf8_lossy(&kv.key).into_owned()
}

fn identity_of(kv: &KeyValue) -> String {
    String::from_utf8_lossy(&kv.value).into_owned()
}

/// What watching a lease found under our identity showed.
enum Abandoned {
    Yes,
    RenewedElsewhere,
    OtherDuration,
    Gone,
    Stopping,
}

/// Whether the lease was renewed recently enough to lead.
enum Freshness {
    Fresh,
    LeaseGone,
    Retry,
    Stop,
}

/// What woke a waiting session.
enum Woke {
    Stop,
    LeaseGone,
    Deleted(u64),
    Recheck(u64),
}

/// Errors that retrying cannot fix: wrong credentials, missing permissions, a bad setup.
fn is_fatal(error: &etcd::Error) -> bool {
    match error {
        etcd::Error::Setup { .. } => true,
        etcd::Error::AllEndpointsFailed { failures, .. } => failures.iter().all(is_fatal),
        _ => matches!(
            error.grpc_code(),
            Some(
                etcd::code::INVALID_ARGUMENT
                    | etcd::code::PERMISSION_DENIED
                    | etcd::code::UNAUTHENTICATED
            )
        ),
    }
}

/// Keeps one lease alive: a keepalive every interval, each send time recorded when etcd acknowledges.
struct KeepAlive {
    shared: Arc<Shared>,
    stop: Arc<Cancel>,
    session: u64,
    lease: i64,
    interval: Duration,
}

impl KeepAlive {
    fn run(self) {
        let mut failing = false;
        while !self.stop.wait_timeout(self.interval) {
            let sent = Instant::now();
            match self.shared.client.lease_keepalive(self.lease) {
                Ok(_) => {
                    self.shared.renewed(self.session, sent);
                    if failing {
                        log::info(
                            "renewal recovered",
                            &[("lease", &format!("{:x}", self.lease))],
                        );
                        failing = false;
                    }
                }
                Err(error) if error.is_lease_gone() => {
                    let _ = self.shared.wake.send(Wake::LeaseGone {
                        session: self.session,
                    });
                    return;
                }
                Err(error) => {
                    self.shared.status.renewal_failed();
                    if !failing {
                        log::warn(
                            "renewal failed; retrying",
                            &[("lease", &format!("{:x}", self.lease)), ("error", &error)],
                        );
                        failing = true;
                    }
                }
            }
        }
    }
}

/// Watches one key for its deletion, re-establishing the watch from the next revision whenever it
/// ends, fails, or stays silent past the client's idle timeout.
struct KeyWatcher {
    client: Client,
    wake: Sender<Wake>,
    cancel: Arc<Cancel>,
    retry: Duration,
    session: u64,
    watch: u64,
    key: String,
    next_revision: i64,
}

impl KeyWatcher {
    fn run(mut self) {
        while !self.cancel.is_cancelled() {
            let opened = Instant::now();
            let request = WatchRequest::key(self.key.as_str(), self.next_revision);
            if let Ok(watch) = self.client.watch(&request) {
                if let Some(wake) = self.follow(watch) {
                    let _ = self.wake.send(wake);
                    return;
                }
            }
            // A stream that ended quickly (refused, cancelled, server going away) is retried after
            // RETRY_PERIOD; one that lived longer (idle timeout) is re-established at once.
            let pause = self.retry.saturating_sub(opened.elapsed());
            if !pause.is_zero() && self.cancel.wait_timeout(pause) {
                return;
            }
        }
    }

    /// Reads the stream; `Some` when the key was deleted or its history compacted away, `None` when
    /// the stream ended for another reason and must be re-established.
    fn follow(&mut self, watch: etcd::Watch) -> Option<Wake> {
        let (session, id) = (self.session, self.watch);
        for message in watch {
            if self.cancel.is_cancelled() {
                return None;
            }
            match message {
                Ok(WatchMessage::Events { events, .. }) => {
                    for event in events {
                        self.next_revision = self.next_revision.max(event.kv.mod_revision + 1);
                        if event.kind == EventKind::Delete {
                            return Some(Wake::Deleted { session, watch: id });
                        }
                    }
                }
                Ok(WatchMessage::Progress { header }) => {
                    self.next_revision = self.next_revision.max(header.revision + 1);
                }
                Ok(WatchMessage::Canceled {
                    compact_revision, ..
                }) if compact_revision > 0 => {
                    return Some(Wake::Recheck { session, watch: id });
                }
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    }
}

/// A cancellation flag that sleeping threads can wait on.
#[derive(Default)]
struct Cancel {
    cancelled: Mutex<bool>,
    changed: Condvar,
}

impl Cancel {
    fn cancel(&self) {
        let mut cancelled = self.cancelled.lock().unwrap_or_else(|p| p.into_inner());
        *cancelled = true;
        self.changed.notify_all();
    }

    fn is_cancelled(&self) -> bool {
        *self.cancelled.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sleeps up to `timeout`; true if cancelled.
    fn wait_timeout(&self, timeout: Duration) -> bool {
        let guard = self.cancelled.lock().unwrap_or_else(|p| p.into_inner());
        let (guard, _) = self
            .changed
            .wait_timeout_while(guard, timeout, |cancelled| !*cancelled)
            .unwrap_or_else(|p| p.into_inner());
        *guard
    }
}
