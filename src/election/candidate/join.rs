//! Joining the queue: a lease (granted, or adopted from an earlier run of ours), and our key.

use std::sync::Arc;

use super::{Candidate, Place, Session};
use crate::clock::BootInstant;
use crate::election::queue::{self, Join};
use crate::election::session::{self, Keeper, Lease};
use crate::election::takeover::{self, Decision};
use crate::election::Notice;
use crate::etcd::{self, KeyValue};
use crate::log;

impl Candidate {
    /// Gets a lease (unless we have one) and a key, retrying every RETRY_PERIOD until it works.
    pub(super) fn join(&mut self, join: Join) -> Option<Place> {
        loop {
            if self.stopping() {
                return None;
            }
            match self.try_join(join) {
                Ok(Some(place)) => {
                    self.answered();
                    self.notify(Notice::Candidacy {
                        key: place.key.clone(),
                    });
                    return Some(place);
                }
                Ok(None) => return None,
                Err(error) if self.retry_later(&error) => continue,
                Err(_) => return None,
            }
        }
    }

    /// `None` when we are stopping.
    fn try_join(&mut self, join: Join) -> Result<Option<Place>, etcd::Error> {
        if self.session.is_none() {
            let ttl = self.settings().ttl_secs();
            let lease = session::grant(self.client(), ttl, &self.shared.clock)?;
            if !self.begin_session(lease) {
                return Ok(None);
            }
        }
        let Some(lease) = self.session.as_ref().map(|s| s.lease) else {
            return Ok(None);
        };
        let (place, twin) = match self.enqueue(lease, join) {
            Err(error) if error.is_lease_gone() => {
                self.end_session();
                return Err(error);
            }
            other => other?,
        };
        match twin {
            Some(twin) => self.adopt(place, &twin),
            None => Ok(Some(place)),
        }
    }

    /// Records the lease for [`super::Election::resign`]; false (and the lease revoked) when we are
    /// already stopping.
    fn begin_session(&mut self, lease: Lease) -> bool {
        let id = self.fresh_id();
        let mut state = self.shared.lock();
        if state.stops(self.run) {
            drop(state);
            let _ = session::revoke(self.client(), lease.id);
            return false;
        }
        state.lease = Some(lease.id);
        self.session = Some(Session {
            id,
            lease: lease.id,
            keeper: None,
        });
        true
    }

    /// The session's keepalive thread, started the first time it is needed.
    pub(super) fn keeper(&mut self) -> Option<Arc<Keeper>> {
        let session = self.session.as_mut()?;
        if session.keeper.is_none() {
            let keeper = session::keep_alive(&self.shared, session.id, Lease { id: session.lease });
            let mut state = self.shared.lock();
            if state.lease == Some(session.lease) {
                state.keeper = Some(Arc::clone(&keeper));
            }
            session.keeper = Some(keeper);
        }
        session.keeper.clone()
    }

    /// Forgets the lease: its keepalive stops, nothing is revoked (it is gone, or replaced).
    pub(super) fn end_session(&mut self) {
        if let Some(session) = self.session.take() {
            if let Some(keeper) = &session.keeper {
                keeper.stop();
            }
            let mut state = self.shared.lock();
            if state.lease == Some(session.lease) {
                state.lease = None;
                state.keeper = None;
            }
        }
    }

    /// Creates our key; returns it and, when `join` looked for one, an earlier run's key of ours.
    fn enqueue(
        &mut self,
        lease: i64,
        join: Join,
    ) -> Result<(Place, Option<KeyValue>), etcd::Error> {
        let settings = self.settings().clone();
        let key = queue::key_for(&settings.lock_name, lease);
        let ours = queue::Ours {
            key: &key,
            identity: &settings.identity,
            lease,
        };
        let txn = queue::create(&settings.lock_name, ours, join, settings.holders);
        let answer = self.client().txn(&txn)?;
        let created =
            queue::created(answer, ours, join).map_err(|d| self.bad_answer("kv/txn", d))?;
        if join == Join::Force {
            log::warn(
                "FORCE_ACQUIRE: deleted every other key under the lock",
                &[("key", &key)],
            );
        }
        if created.leader.is_some() {
            self.shared.leader.seen(created.leader);
        }
        let place = Place {
            key,
            revision: created.revision,
            at_head: created.at_head,
        };
        Ok((place, created.twin))
    }

    /// Seamless takeover of `twin`, an earlier run's key with our identity: once its holder has
    /// provably stopped, its lease and place replace our fresh `place` (whose lease is revoked).
    fn adopt(&mut self, place: Place, twin: &KeyValue) -> Result<Option<Place>, etcd::Error> {
        self.keeper(); // our fresh key must live while the twin is judged
        let shared = Arc::clone(&self.shared);
        let decision =
            takeover::judge_twin(&shared.client, &shared.settings, twin, |d| self.pause(d))?;
        match decision {
            Decision::Stop => return Ok(None),
            Decision::Fresh => return Ok(Some(place)),
            Decision::Adopt => {}
        }
        let sent = BootInstant::now();
        match self.client().lease_keepalive(twin.lease) {
            Ok(answer) if answer.ttl >= self.settings().ttl_secs() => {}
            Ok(_) => return Ok(Some(place)),
            Err(error) if error.is_lease_gone() => return Ok(Some(place)),
            Err(error) => return Err(error),
        }
        if let Some(fresh) = self.session.as_ref().map(|s| s.lease) {
            let _ = session::revoke(self.client(), fresh);
        }
        self.end_session();
        self.shared.clock.restart(sent);
        if !self.begin_session(Lease { id: twin.lease }) {
            return Ok(None);
        }
        log::info(
            "adopted our key from an earlier run",
            &[
                ("key", &queue::name_of(twin)),
                ("revision", &twin.create_revision),
                ("lease", &format!("{:x}", twin.lease)),
            ],
        );
        Ok(Some(Place {
            key: queue::name_of(twin),
            revision: twin.create_revision,
            at_head: false,
        }))
    }
}
