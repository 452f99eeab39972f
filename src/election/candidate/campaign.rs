//! Waiting for our turn, and leading.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Candidate, Outcome, Place, Readiness};
use crate::clock::BootInstant;
use crate::election::queue::{self, Position};
use crate::election::watch::{KeyWatch, Watched};
use crate::election::{Alert, Leadership, Loss, Notice};
use crate::etcd;
use crate::log;

impl Candidate {
    /// Waits for our turn and leads; reports how it ended.
    pub(super) fn campaign(&mut self, place: &Place) -> Outcome {
        let mut own: Option<KeyWatch> = None;
        let mut queued_behind: Option<String> = None;
        let mut known = place.at_head.then_some(Position::Head {
            revision: place.revision,
        });
        loop {
            let position = match known.take() {
                Some(position) => position,
                None => match self.paced_look(place) {
                    Some(position) => position,
                    None => return Outcome::Finished,
                },
            };
            let (predecessor, alone, revision) = match position {
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
                    alone,
                    revision,
                    leader,
                } => {
                    self.shared.leader.seen(leader);
                    (predecessor, alone, revision)
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
            self.keeper();
            // Alone behind it: one stream for both keys, so its deletion alone makes us leader.
            let ahead = Some(queue::name_of(&predecessor));
            let watched = match alone {
                true => {
                    own = None;
                    Watched {
                        own: Some(place.key.clone()),
                        ahead,
                    }
                }
                false => Watched { own: None, ahead },
            };
            let ahead = self.watch(watched, revision);
            if own.is_none() && !alone {
                own = Some(self.watch_own(place, revision));
            }
            let watches = [Some(ahead.id), own.as_ref().map(|w| w.id)];
            let watches: Vec<u64> = watches.into_iter().flatten().collect();
            match self.wait(&watches, false, None) {
                Some(Alert::Deleted { own: true, .. }) => {
                    log::warn(
                        "our key was deleted; queueing again",
                        &[("key", &place.key)],
                    );
                    return Outcome::Requeue { lease_gone: false };
                }
                Some(Alert::Deleted { revision, .. }) if alone => {
                    known = Some(Position::Head { revision });
                }
                Some(Alert::Deleted { .. }) => {}
                Some(Alert::Recheck { watch, .. }) => {
                    if own.as_ref().is_some_and(|w| w.id == watch) {
                        own = None;
                    }
                }
                Some(Alert::LeaseGone { .. }) => {
                    log::warn("our lease is gone; queueing again", &[("key", &place.key)]);
                    return Outcome::Requeue { lease_gone: true };
                }
                Some(Alert::Lapsed { .. }) => {}
                Some(Alert::Stop) | None => return Outcome::Finished,
            }
        }
    }

    /// A look, after the pace allows it, retried until it works; `None` when we stop.
    fn paced_look(&mut self, place: &Place) -> Option<Position> {
        loop {
            let wait = self.looks.take(Instant::now());
            if !self.pause(wait) {
                return None;
            }
            let lock = &self.settings().lock_name;
            let looked = self
                .client()
                .txn(&queue::look(lock, &place.key, place.revision))
                .and_then(|answer| {
                    queue::position(answer).map_err(|d| self.bad_answer("kv/txn", d))
                });
            match looked {
                Ok(position) => {
                    self.answered();
                    return Some(position);
                }
                Err(error) if self.retry_later(&error) => continue,
                Err(_) => return None,
            }
        }
    }

    /// The command must never start on a stale renewal: unless two of the leader's keepalives fit
    /// before the deadline, one is sent first.
    fn ready_to_lead(&mut self) -> Readiness {
        let settings = self.settings().clone();
        let clock = Arc::clone(&self.shared.clock);
        let fresh = || clock.age().is_some_and(|a| settings.may_lead_on(a));
        if fresh() {
            return Readiness::Ready;
        }
        let Some(keeper) = self.keeper() else {
            return Readiness::Stop;
        };
        let asked = BootInstant::now();
        keeper.renew_now();
        let budget = settings.request_budget() + Duration::from_millis(100);
        if clock.wait_renewed_after(asked, budget) && fresh() {
            return Readiness::Ready;
        }
        if self.inbox.lease_gone(self.session_id()) {
            return Readiness::LeaseGone;
        }
        self.failures.note(
            "cannot renew the lease in time to lead",
            settings.retry_period,
        );
        match self.pause(settings.retry_period) {
            true => Readiness::Retry,
            false => Readiness::Stop,
        }
    }

    // ---- leading ----

    /// Leads until the key or the lease is lost, or we stop. Besides watching our key, the leader
    /// reads it once per keepalive interval: a preemption is noticed within that interval even
    /// when the watch's connection died silently.
    fn lead(&mut self, place: &Place, own: Option<KeyWatch>, revision: i64) -> Outcome {
        let Some(lease) = self.session.as_ref().map(|s| s.lease) else {
            return Outcome::Finished;
        };
        self.shared.clock.set_leading(true);
        self.shared
            .leader
            .seen(Some(self.settings().identity.clone()));
        self.notify(Notice::Leading(Leadership {
            key: place.key.clone(),
            revision: place.revision,
            lease,
        }));
        // What the start did not need: after the announcement, off the path to the command.
        if let Some(keeper) = self.keeper() {
            keeper.set_leading(true);
        }
        let mut own = own.unwrap_or_else(|| self.watch_own(place, revision));
        let interval = self.settings().leader_interval();
        let mut known = revision;
        let mut confirm_at = Instant::now() + interval;
        let mut confirm_failing = false;
        let loss = loop {
            let rewatch = match self.wait(&[own.id], true, Some(confirm_at)) {
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
                own = self.watch_own(place, known);
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
}
