//! Joining the queue: a lease (granted, or adopted from an earlier run of ours), and our key.

use std::sync::Arc;

use super::{Candidate, Place, Session};
use crate::clock::BootInstant;
use crate::election::queue::{self, Join, Position};
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
        loop {
            if self.session.is_none() {
                let lease = session::grant(self.client(), self.settings().ttl_secs())?;
                if !self.begin_session(lease) {
                    return Ok(None);
                }
            }
            let Some(lease) = self.session.as_ref().map(|s| s.lease) else {
                return Ok(None);
            };
            match self.enqueue(lease, join) {
                Err(error) if error.is_lease_gone() => {
                    self.end_session();
                    return Err(error);
                }
                Err(error) => return Err(error),
                Ok(None) => {
                    log::warn(
                        "our key is held by another instance with our identity; queueing with \
                         a fresh lease (identities must be unique)",
                        &[("lease", &format!("{lease:x}"))],
                    );
                    self.end_session();
                }
                Ok(Some((place, Some(twin)))) => return self.adopt(place, &twin),
                Ok(Some((place, None))) => return Ok(Some(place)),
            }
        }
    }

    /// Records the lease for [`super::Election::resign`] and starts its renewal clock; false (and
    /// the lease revoked) when we are already stopping.
    fn begin_session(&mut self, lease: Lease) -> bool {
        let id = self.fresh_id();
        let mut state = self.shared.lock();
        if state.stops(self.run) {
            drop(state);
            let _ = session::revoke(self.client(), lease.id);
            return false;
        }
        state.lease = Some(lease.id);
        state.key = None;
        self.shared.clock.restart(id, lease.renewed);
        self.session = Some(Session {
            id,
            lease: lease.id,
            keeper: None,
        });
        true
    }

    /// Records our key and its stamp for [`super::super::Election::resign`] (the lease's key).
    pub(super) fn hold(&self, key: &str, stamp: i64) {
        let lease = self.session.as_ref().map(|s| s.lease);
        let mut state = self.shared.lock();
        if lease.is_some() && state.lease == lease {
            state.key = Some((key.to_string(), stamp));
        }
    }

    /// The session's keepalive thread, started the first time it is needed.
    pub(super) fn keeper(&mut self) -> Option<Arc<Keeper>> {
        let session = self.session.as_mut()?;
        if session.keeper.is_none() {
            let keeper = session::keep_alive(&self.shared, session.id, session.lease);
            let mut state = self.shared.lock();
            if state.lease == Some(session.lease) {
                state.keeper = Some(Arc::clone(&keeper));
            }
            session.keeper = Some(keeper);
        }
        session.keeper.clone()
    }

    /// Forgets the lease: its keepalive stops, and we never revoke it (it is gone, replaced, or
    /// taken over by an instance with our identity).
    pub(super) fn end_session(&mut self) {
        if let Some(session) = self.session.take() {
            if let Some(keeper) = &session.keeper {
                keeper.stop();
            }
            let mut state = self.shared.lock();
            if state.lease == Some(session.lease) {
                state.lease = None;
                state.key = None;
                state.keeper = None;
            }
        }
    }

    /// Creates our key; returns it (where it stands included) and, when `join` looked for one, an
    /// earlier run's key of ours. `None`: our key exists already, taken over with our lease.
    fn enqueue(
        &mut self,
        lease: i64,
        join: Join,
    ) -> Result<Option<(Place, Option<KeyValue>)>, etcd::Error> {
        let settings = self.settings().clone();
        let key = queue::key_for(&settings.lock_name, lease);
        let ours = queue::Ours {
            key: &key,
            identity: &settings.identity,
            lease,
        };
        let sent = BootInstant::now();
        let txn = queue::create(&settings.lock_name, ours, join, settings.holders);
        let answer = self.client().txn(&txn)?;
        let created = queue::created(answer, ours, join, settings.holders)
            .map_err(|d| self.bad_answer("kv/txn", d))?;
        let Some(created) = created else {
            return Ok(None);
        };
        self.shared.clock.restamped(sent);
        self.hold(&key, created.revision);
        if join == Join::Force {
            log::warn(
                "FORCE_ACQUIRE: deleted every other key under the lock",
                &[("key", &key)],
            );
        }
        if let Some(position) = &created.position {
            self.seen(position);
        }
        let place = Place {
            key,
            revision: created.revision,
            stamp: created.revision,
            known: created.position.map(|position| (position, sent)),
        };
        Ok(Some((place, created.twin)))
    }

    /// The leader identity a position tells of.
    pub(super) fn seen(&self, position: &Position) {
        if let Position::Behind { leader, .. } = position {
            self.shared.leader.seen(leader.clone());
        }
    }

    /// Seamless takeover of `twin`, an earlier run's key with our identity: once its holder has
    /// provably stopped, and if our claim wins (one instance only can), its lease and place replace
    /// our fresh `place` (whose lease is revoked).
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
        let renewed = BootInstant::now();
        match self.client().lease_keepalive(twin.lease) {
            Ok(answer) if answer.ttl >= self.settings().ttl_secs() => {}
            Ok(_) => return Ok(Some(place)),
            Err(error) if error.is_lease_gone() => return Ok(Some(place)),
            Err(error) => return Err(error),
        }
        let settings = self.settings().clone();
        let sent = BootInstant::now();
        let claim = queue::claim(
            &settings.lock_name,
            twin,
            &settings.identity,
            settings.holders,
        );
        let answer = self.client().txn(&claim)?;
        let claimed =
            queue::claimed(answer, settings.holders).map_err(|d| self.bad_answer("kv/txn", d))?;
        let Some((stamp, position)) = claimed else {
            log::error(
                "another instance with our identity claimed our earlier key first; keeping a \
                 fresh key (identities must be unique)",
                &[("key", &queue::name_of(twin))],
            );
            return Ok(Some(place));
        };
        if let Some(fresh) = self.session.as_ref().map(|s| s.lease) {
            let _ = session::revoke(self.client(), fresh);
        }
        self.end_session();
        let lease = Lease {
            id: twin.lease,
            renewed,
        };
        if !self.begin_session(lease) {
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
        self.seen(&position);
        self.hold(&queue::name_of(twin), stamp);
        Ok(Some(Place {
            key: queue::name_of(twin),
            revision: twin.create_revision,
            stamp,
            known: Some((position, sent)),
        }))
    }
}
