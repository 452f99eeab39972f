//! etcd's election recipe (the layout of `client/v3/concurrency.Election`), without its known gaps.
//!
//! A candidate grants a lease ([`session`]), creates `<lock>/<lease id in hex>` = identity by a
//! transaction guarded on `create_revision == 0` ([`queue`]), and leads when no key under `<lock>/`
//! has a lower create_revision. Every other candidate watches only its predecessor for deletion
//! ([`watch`]) and then looks again. On top of etcd's recipe:
//!
//! - every look also proves our own key still exists with our revision, so a candidate whose key
//!   vanished never takes itself for the leader (etcd's "phantom leader");
//! - our own key is watched the whole time, and the leader also reads it once per keepalive
//!   interval, so a preemption is noticed within that interval even when the watch is dead;
//! - a keepalive answered without TTL means the lease is gone; the lease is revoked on every way out;
//! - an earlier run's key with our identity is adopted only once its holder has provably stopped
//!   ([`takeover`]);
//! - re-queues and looks are paced ([`retry`]), so churn costs etcd a bounded number of requests.
//!
//! The election runs on its own threads and reports through a callback ([`Notice`]); it never
//! blocks its caller and never writes anyone else's state.

mod candidate;
mod failures;
mod inbox;
mod observe;
mod queue;
mod renewal;
mod retry;
mod session;
mod settings;
mod takeover;
mod watch;

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

pub use observe::{leader_info, watch_leader, LeaderInfo};
pub use renewal::RenewalClock;
pub use retry::Backoff;
pub use settings::{leader_interval, Settings};

use crate::etcd::{self, Client};
use crate::log;
use observe::LeaderView;
use session::Keeper;

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
    /// An instance with our identity took our key over (while our lease went unrenewed).
    Superseded,
    /// etcd refused to let us read our key (e.g. permissions changed).
    Unconfirmed,
    /// Another client overwrote our key (not with our lease).
    Overwritten,
}

impl std::fmt::Display for Loss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Loss::KeyDeleted => "our key was deleted",
            Loss::LeaseGone => "our lease is gone",
            Loss::RenewalLapsed => "a renewal came back after the renew deadline had passed",
            Loss::Superseded => "an instance with our identity took our key over",
            Loss::Unconfirmed => "etcd refused to let us read our key",
            Loss::Overwritten => "another client overwrote our key",
        })
    }
}

/// What the election tells its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A candidacy began: a key in the queue (with a new or an adopted lease).
    Candidacy { key: String },
    /// We wait behind the candidate with this identity.
    Queued { key: String, behind: String },
    /// We lead.
    Leading(Leadership),
    /// We led and no longer do.
    Lost(Loss),
    /// A keepalive was acknowledged after `took`.
    Renewed { took: Duration },
    /// A keepalive got no acknowledgement.
    RenewalFailed,
    /// etcd refused us in a way retrying cannot fix (bad credentials, no permission).
    Fatal(String),
}

/// Which of the watched keys ahead of us a deletion took; ordered so that of several deletions
/// in one message the greatest tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Ahead {
    /// None of them.
    Untouched,
    /// Only the farther one: the nearest is still there, and usually leads now.
    Farther,
    /// The nearest (the farther one too, maybe).
    Nearest,
}

/// What wakes the candidate thread. Each carries the session (and watch) it belongs to, so that
/// late messages from an earlier session are recognised and dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Alert {
    Stop,
    LeaseGone {
        session: u64,
    },
    Lapsed {
        session: u64,
    },
    /// A watched key was deleted at `revision`: our own (`own`), one ahead of us (`ahead`), or
    /// both in one message.
    Deleted {
        session: u64,
        watch: u64,
        own: bool,
        ahead: Ahead,
        revision: i64,
    },
    Recheck {
        session: u64,
        watch: u64,
    },
    /// Our key was written at `revision` (its new mod_revision), with `lease`, by a write that
    /// was not the one that gave it the stamp the watch knew: an instance with our identity
    /// claimed it, or someone else wrote it.
    Rewritten {
        session: u64,
        watch: u64,
        revision: i64,
        lease: i64,
    },
}

/// What every thread of the election shares.
struct Shared {
    client: Client,
    settings: Settings,
    clock: Arc<RenewalClock>,
    notify: Box<dyn Fn(Notice) + Send + Sync>,
    /// Where the threads of the current run send their alerts.
    alerts: Mutex<Sender<Alert>>,
    leader: Arc<LeaderView>,
    state: Mutex<State>,
}

/// What [`Election::resign`] must find: whether we stop, and the lease and keepalive to end.
#[derive(Default)]
struct State {
    stopping: bool,
    /// The current run of the candidate (a rejoin starts a new one; an old one then stops).
    run: u64,
    lease: Option<i64>,
    /// Our key and its stamp, once written.
    key: Option<(String, i64)>,
    keeper: Option<Arc<Keeper>>,
}

impl State {
    /// Whether the candidate of `run` must stop.
    fn stops(&self, run: u64) -> bool {
        self.stopping || self.run != run
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the candidate of `run` must stop.
    fn stopping(&self, run: u64) -> bool {
        self.lock().stops(run)
    }

    /// A sender for the current run's alerts.
    fn alerts(&self) -> Sender<Alert> {
        self.alerts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn current_leader(&self) -> Option<String> {
        let settings = &self.settings;
        self.leader
            .current(&self.client, &settings.lock_name, settings.retry_period)
    }
}

/// A running candidacy.
pub struct Election {
    shared: Arc<Shared>,
    /// Disconnects when the candidate thread has returned.
    finished: Mutex<Receiver<()>>,
}

/// How long [`Election::resign`] waits for the candidate thread to finish a call in flight (a
/// lease it granted meanwhile is revoked by that thread before it returns).
const FINISH_WAIT: Duration = Duration::from_secs(3);

impl Election {
    /// Joins the election on background threads; `notify` hears every [`Notice`]. `clock` is the
    /// renewal clock the owner's deadline reads.
    pub fn start(
        client: Client,
        settings: Settings,
        clock: Arc<RenewalClock>,
        notify: impl Fn(Notice) + Send + Sync + 'static,
    ) -> Election {
        let (alerts, inbox) = channel();
        let shared = Arc::new(Shared {
            client,
            settings,
            clock,
            notify: Box::new(notify),
            alerts: Mutex::new(alerts),
            leader: Arc::new(LeaderView::default()),
            state: Mutex::new(State::default()),
        });
        let finished = spawn_candidate(&shared, 0, inbox);
        Election {
            shared,
            finished: Mutex::new(finished),
        }
    }

    /// Leaves the election and joins it again at the end of the queue, with a fresh lease (see
    /// [`Election::resign`]): for a supervisor that re-campaigns after leadership ended.
    pub fn rejoin(&self) -> Result<(), etcd::Error> {
        let revoked = self.resign();
        let (alerts, inbox) = channel();
        let run = {
            let mut state = self.shared.lock();
            state.run += 1;
            state.stopping = false;
            *self.shared.alerts.lock().unwrap_or_else(|p| p.into_inner()) = alerts;
            state.run
        };
        let finished = spawn_candidate(&self.shared, run, inbox);
        if let Ok(mut current) = self.finished.lock() {
            *current = finished;
        }
        revoked
    }

    /// The renewal clock of this election.
    pub fn clock(&self) -> Arc<RenewalClock> {
        Arc::clone(&self.shared.clock)
    }

    /// The identity of the leader as last seen (see `observe`); never waits on etcd.
    pub fn leader(&self) -> Option<String> {
        self.shared.current_leader()
    }

    /// A handle that answers [`Election::leader`] from any thread.
    pub fn leader_source(&self) -> impl Fn() -> Option<String> + Send + Sync + 'static {
        let shared = Arc::clone(&self.shared);
        move || shared.current_leader()
    }

    /// Leaves the election: stops every thread and revokes the lease, which deletes our key at once.
    /// A lease the candidate thread grants later is revoked by that thread.
    pub fn resign(&self) -> Result<(), etcd::Error> {
        let (lease, key, keeper) = {
            let mut state = self.shared.lock();
            state.stopping = true;
            (state.lease.take(), state.key.take(), state.keeper.take())
        };
        // The revoke first: it deletes our key at once and lets the next leader start; the other
        // threads are told to stop once it is done. A lease that may have been adopted is only
        // revoked once a transaction has deleted our key while it still bore our stamp.
        let revoked = match lease {
            Some(lease) if self.may_be_adopted() => self.release(lease, key),
            Some(lease) => session::revoke(&self.shared.client, lease),
            None => Ok(()),
        };
        if let Some(keeper) = keeper {
            keeper.stop();
        }
        let _ = self.shared.alerts().send(Alert::Stop);
        if let Ok(finished) = self.finished.lock() {
            let _ = finished.recv_timeout(FINISH_WAIT);
        }
        revoked
    }

    /// Deletes our key if it still bears our stamp and lease, and then revokes the lease; leaves
    /// both alone when the key was taken over (the lease is its new holder's).
    fn release(&self, lease: i64, key: Option<(String, i64)>) -> Result<(), etcd::Error> {
        let client = &self.shared.client;
        let released = match &key {
            Some((key, stamp)) => client.txn(&queue::release(key, *stamp, lease))?.succeeded,
            None => false,
        };
        if !released {
            log::warn(
                "not revoking our lease: an instance with our identity may have adopted it \
                 while it went unrenewed; it expires by itself",
                &[("lease", &format!("{lease:x}"))],
            );
            return Ok(());
        }
        session::revoke(client, lease)
    }

    /// Whether an instance with our identity may own our lease now: it lapsed and our key was not
    /// written since, or it has gone unrenewed past the kill point (when a takeover may adopt it).
    fn may_be_adopted(&self) -> bool {
        let clock = &self.shared.clock;
        let kill_point = self.shared.settings.kill_point();
        clock.lapsed() || clock.renewal_age().is_none_or(|age| age >= kill_point)
    }
}

/// Starts the candidate thread of `run`; the receiver disconnects when it returns.
fn spawn_candidate(shared: &Arc<Shared>, run: u64, inbox: Receiver<Alert>) -> Receiver<()> {
    let (done, finished) = channel::<()>();
    let worker = Arc::clone(shared);
    let spawned = thread::Builder::new()
        .name("election".into())
        .spawn(move || {
            let _done = done; // dropped when the thread returns
            candidate::Candidate::new(worker, run, inbox).run();
        });
    if let Err(error) = spawned {
        (shared.notify)(Notice::Fatal(format!(
            "cannot start the election thread: {error}"
        )));
    }
    finished
}
