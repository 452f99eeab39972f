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
            let (ahead, alone, revision) = match position {
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
                    ahead,
                    alone,
                    revision,
                    leader,
                } => {
                    self.shared.leader.seen(leader);
                    (ahead, alone, revision)
                }
            };
            let behind = ahead.first().map(queue::identity_of).unwrap_or_default();
            if queued_behind.as_deref() != Some(behind.as_str()) {
                log::info("queued", &[("key", &place.key), ("behind", &behind)]);
                self.notify(Notice::Queued {
                    key: place.key.clone(),
                    behind: behind.clone(),
                });
                queued_behind = Some(behind);
            }
            self.keeper();
            // Alone behind the leader (and one holder): its deletion alone makes us leader.
            let shortcut = alone && self.settings().holders == 1;
            let ahead = self.watch_ahead(place, &ahead, shortcut, revision, &mut own);
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
                Some(Alert::Deleted { revision, .. }) if shortcut => {
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

    /// Watches the keys `ahead` of us (the nearest first) after `revision`. With one holder and
    /// `shortcut` (the predecessor is the only key ahead), one stream for it and our own key, so
    /// that its deletion alone proves we lead; with one holder otherwise, the predecessor alone
    /// (our own key has its own watch); with several holders, the prefix, reporting on our key and
    /// every key ahead. `own` is dropped when the returned watch covers our key, and started when
    /// it does not and there is none.
    fn watch_ahead(
        &mut self,
        place: &Place,
        ahead: &[etcd::KeyValue],
        shortcut: bool,
        revision: i64,
        own: &mut Option<KeyWatch>,
    ) -> KeyWatch {
        let names: Vec<String> = ahead.iter().map(queue::name_of).collect();
        let ours = Some(place.key.clone());
        let watched = match (self.settings().holders, shortcut) {
            (1, true) => Watched {
                own: ours,
                ahead: names,
                prefix: None,
            },
            (1, false) => Watched {
                own: None,
                ahead: names,
                prefix: None,
            },
            _ => Watched {
                own: ours,
                ahead: names,
                prefix: Some(queue::prefix(&self.settings().lock_name)),
            },
        };
        let covers_own = watched.own.is_some();
        let watch = self.watch(watched, revision);
        if covers_own {
            *own = None;
        } else if own.is_none() {
            *own = Some(self.watch_own(place, revision));
        }
        watch
    }

    /// A look, after the pace allows it, retried until it works; `None` when we stop.
    fn paced_look(&mut self, place: &Place) -> Option<Position> {
        loop {
            let wait = self.looks.take(Instant::now());
            if !self.pause(wait) {
                return None;
            }
            let (lock, holders) = (&self.settings().lock_name, self.settings().holders);
            let looked = self
                .client()
                .txn(&queue::look(lock, &place.key, place.revision, holders))
                .and_then(|answer| {
                    queue::position(answer, holders).map_err(|d| self.bad_answer("kv/txn", d))
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
