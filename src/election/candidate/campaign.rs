//! Waiting for our turn, and leading.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Candidate, Fate, Outcome, Place, Readiness};
use crate::clock::BootInstant;
use crate::election::queue::{self, Confirmed, Position};
use crate::election::watch::{KeyWatch, Watched};
use crate::election::{Ahead, Alert, Leadership, Loss, Notice};
use crate::etcd;
use crate::log;

impl Candidate {
    /// Waits for our turn and leads; reports how it ended.
    pub(super) fn campaign(&mut self, mut place: Place) -> Outcome {
        let mut own: Option<KeyWatch> = None;
        let mut queued_behind: Option<String> = None;
        let mut known = place.known.take();
        loop {
            let (position, proven) = match known.take() {
                Some(known) => known,
                None => match self.paced_look(&place) {
                    Some(looked) => looked,
                    None => return Outcome::Finished,
                },
            };
            let (ahead, alone, revision) = match position {
                Position::Lost => {
                    log::warn("our key is gone; queueing again", &[("key", &place.key)]);
                    return Outcome::Requeue(Fate::Keep);
                }
                Position::Taken => {
                    log::error(TAKEN, &[("key", &place.key)]);
                    return Outcome::Requeue(Fate::Drop);
                }
                Position::Head { revision } => match self.ready_to_lead() {
                    Readiness::Ready => return self.lead(&place, own, revision, proven),
                    Readiness::Reclaim => match self.reclaim(&mut place) {
                        Ok(reclaimed) => {
                            // Its watch knew the old stamp: the leader watches the new one.
                            own = None;
                            known = Some(reclaimed);
                            continue;
                        }
                        Err(outcome) => return outcome,
                    },
                    Readiness::LeaseGone => return Outcome::Requeue(Fate::Drop),
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
            let watch = self.watch_ahead(&place, &ahead, shortcut, revision, &mut own);
            let watches = [Some(watch.id), own.as_ref().map(|w| w.id)];
            let watches: Vec<u64> = watches.into_iter().flatten().collect();
            match self.wait(&watches, false, None) {
                Some(Alert::Deleted { own: true, .. }) => {
                    log::warn(
                        "our key was deleted; queueing again",
                        &[("key", &place.key)],
                    );
                    return Outcome::Requeue(Fate::Keep);
                }
                // The stream that reported the deletion also carries our key's deletion and its
                // writes, in order: it still stood at that revision, with our stamp.
                Some(Alert::Deleted { revision, .. }) if shortcut => {
                    known = Some((Position::Head { revision }, BootInstant::now()));
                    own = Some(watch); // it covers our key: the leader keeps it
                }
                // One holder: the nearest key ahead is still there and leads now, usually. Look
                // again once that handover is done, to watch it together with our key. (With
                // several, any deletion ahead may make us a holder: look at once.)
                Some(Alert::Deleted {
                    ahead: Ahead::Farther,
                    ..
                }) if self.settings().holders == 1 => {
                    if !self.pause(RELOOK_AFTER) {
                        return Outcome::Finished;
                    }
                }
                Some(Alert::Deleted { .. }) => {}
                Some(Alert::Recheck { watch, .. }) => {
                    if own.as_ref().is_some_and(|w| w.id == watch) {
                        own = None;
                    }
                }
                Some(Alert::Rewritten { revision, .. }) if revision == place.stamp => own = None,
                Some(Alert::Rewritten { lease, .. }) => {
                    return match self.rewritten(&place, lease) {
                        Loss::Superseded => Outcome::Requeue(Fate::Drop),
                        _ => Outcome::Requeue(Fate::Keep),
                    };
                }
                Some(Alert::LeaseGone { .. }) => {
                    log::warn("our lease is gone; queueing again", &[("key", &place.key)]);
                    return Outcome::Requeue(Fate::Drop);
                }
                Some(Alert::Lapsed { .. }) => {}
                Some(Alert::Stop) | None => return Outcome::Finished,
            }
        }
    }

    /// Watches the keys `ahead` of us (the nearest first) after `revision`. With one holder and
    /// `shortcut` (the predecessor is the only key ahead), one stream for it and our own key, so
    /// that its deletion alone proves we lead; with one holder otherwise, the key before the
    /// nearest (our own key has its own watch): its deletion usually makes the nearest leader, and
    /// a look soon after finds us the only waiter behind it; with several holders, the prefix,
    /// reporting on our key and every key ahead. `own` is dropped when the returned watch covers
    /// our key, and started when it does not and there is none.
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
                stamp: Some(place.stamp),
                ahead: names,
                prefix: None,
                farther: false,
            },
            // The key before the nearest (usually the leader), when there is one.
            (1, false) => Watched {
                own: None,
                stamp: None,
                farther: names.len() > 1,
                ahead: names.last().cloned().into_iter().collect(),
                prefix: None,
            },
            _ => Watched {
                own: ours,
                stamp: None,
                ahead: names,
                prefix: Some(queue::prefix(&self.settings().lock_name)),
                farther: false,
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

    /// A look, after the pace allows it, retried until it works: where our key stands, and when
    /// the look that proved it was sent. `None` when we stop.
    fn paced_look(&mut self, place: &Place) -> Option<(Position, BootInstant)> {
        loop {
            let wait = self.looks.take(Instant::now());
            if !self.pause(wait) {
                return None;
            }
            let settings = self.settings().clone();
            let lease = self.session.as_ref().map_or(0, |s| s.lease);
            let look = queue::look(
                &settings.lock_name,
                &place.key,
                place.revision,
                place.stamp,
                settings.holders,
            );
            let sent = BootInstant::now();
            let looked = self.client().txn(&look).and_then(|answer| {
                queue::position(answer, lease, settings.holders)
                    .map_err(|d| self.bad_answer("kv/txn", d))
            });
            match looked {
                Ok(position) => {
                    self.answered();
                    return Some((position, sent));
                }
                Err(error) if self.retry_later(&error) => continue,
                Err(_) => return None,
            }
        }
    }

    /// After a lapse, our key is written again (compared with its stamp): if an instance with our
    /// identity is adopting it, exactly one of the two claims wins. Retried until etcd answers;
    /// the error is the outcome when it cannot be ours any more, or when we stop.
    fn reclaim(&mut self, place: &mut Place) -> Result<(Position, BootInstant), Outcome> {
        let Some(lease) = self.session.as_ref().map(|s| s.lease) else {
            return Err(Outcome::Finished);
        };
        let ours = etcd::KeyValue {
            key: place.key.clone().into_bytes(),
            create_revision: place.revision,
            mod_revision: place.stamp,
            lease,
            ..etcd::KeyValue::default()
        };
        let settings = self.settings().clone();
        let claim = queue::claim(
            &settings.lock_name,
            &ours,
            &settings.identity,
            settings.holders,
        );
        log::warn(
            "our lease went unrenewed for RENEW_DEADLINE; claiming our key again before leading",
            &[("key", &place.key)],
        );
        loop {
            let sent = BootInstant::now();
            let claimed = self.client().txn(&claim).and_then(|answer| {
                queue::claimed(answer, settings.holders).map_err(|d| self.bad_answer("kv/txn", d))
            });
            match claimed {
                Ok(Some((stamp, position))) => {
                    self.answered();
                    self.shared.clock.restamped(sent);
                    place.stamp = stamp;
                    self.hold(&place.key, stamp);
                    return Ok((position, sent));
                }
                Ok(None) => {
                    log::error(TAKEN, &[("key", &place.key)]);
                    return Err(Outcome::Requeue(Fate::Drop));
                }
                Err(error) if self.retry_later(&error) => continue,
                Err(_) => return Err(Outcome::Finished),
            }
        }
    }

    /// The command must never start on a stale renewal: unless two of the leader's keepalives fit
    /// before the deadline, one is sent first. Nor after a lapse, until our key is re-stamped.
    fn ready_to_lead(&mut self) -> Readiness {
        let settings = self.settings().clone();
        let clock = Arc::clone(&self.shared.clock);
        let fresh = || clock.age().is_some_and(|a| settings.may_lead_on(a));
        let ready = || match clock.lapsed() {
            true => Readiness::Reclaim,
            false => Readiness::Ready,
        };
        if fresh() {
            return ready();
        }
        let Some(keeper) = self.keeper() else {
            return Readiness::Stop;
        };
        let asked = BootInstant::now();
        keeper.renew_now();
        let budget = settings.request_budget() + Duration::from_millis(100);
        if clock.wait_renewed_after(asked, budget) && fresh() {
            return ready();
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

    /// Leads until the key or the lease is lost, or we stop; our key was proven ours by a request
    /// sent at `proven`. Besides watching our key, the leader reads it once per keepalive
    /// interval, and is only as fresh as the older of its last renewal and its last read: a
    /// preemption is noticed within an interval even when the watch's connection died silently,
    /// and a leader that cannot read its key stops by the renew deadline.
    fn lead(
        &mut self,
        place: &Place,
        own: Option<KeyWatch>,
        revision: i64,
        proven: BootInstant,
    ) -> Outcome {
        let Some(lease) = self.session.as_ref().map(|s| s.lease) else {
            return Outcome::Finished;
        };
        self.shared.clock.lead(proven);
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
                Some(Alert::Rewritten { revision, .. }) if revision == place.stamp => {
                    known = known.max(revision);
                    true
                }
                Some(Alert::Rewritten { lease, .. }) => break self.rewritten(place, lease),
                Some(Alert::Deleted { own: true, .. }) => break Loss::KeyDeleted,
                // The watch that made us leader also covers the key that was ahead of us.
                Some(Alert::Deleted { .. }) => continue,
                Some(Alert::LeaseGone { .. }) => break Loss::LeaseGone,
                Some(Alert::Lapsed { .. }) => break Loss::RenewalLapsed,
                Some(Alert::Stop) => return Outcome::Finished,
            };
            let sent = BootInstant::now();
            match self.confirm(place, lease) {
                Ok(Confirmed::Ours(now)) => {
                    self.shared.clock.confirmed(sent);
                    known = known.max(now);
                    if confirm_failing {
                        log::info("our key is confirmed again", &[("key", &place.key)]);
                        confirm_failing = false;
                    }
                }
                Ok(Confirmed::Lost) => break Loss::KeyDeleted,
                Ok(Confirmed::Taken) => {
                    self.end_session();
                    break Loss::Superseded;
                }
                Err(error) if error.is_permanent() => {
                    log::error("etcd refused to let us read our key", &[("error", &error)]);
                    break Loss::Unconfirmed;
                }
                Err(error) => {
                    if !confirm_failing {
                        log::warn(
                            "cannot confirm our key; the renew deadline runs from the last confirm",
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

    /// Our key was written by someone else, with `lease`: with our lease, an instance with our
    /// identity took it (and the lease) over, which we give up without revoking; without, another
    /// client overwrote it.
    fn rewritten(&mut self, place: &Place, lease: i64) -> Loss {
        let ours = self.session.as_ref().is_some_and(|s| s.lease == lease);
        if ours {
            log::error(TAKEN, &[("key", &place.key)]);
            self.end_session();
            return Loss::Superseded;
        }
        log::warn(
            "our key was overwritten by another client",
            &[("key", &place.key), ("lease", &format!("{lease:x}"))],
        );
        Loss::Overwritten
    }

    /// What a read of our key says about it.
    fn confirm(&self, place: &Place, lease: i64) -> Result<Confirmed, etcd::Error> {
        let answer = self.client().range(&queue::confirm(&place.key))?;
        Ok(queue::confirmed(
            &answer,
            place.revision,
            place.stamp,
            lease,
        ))
    }
}

/// How long a waiter whose farther key ahead was deleted waits before it looks again: the
/// deletion usually made the nearer one leader, whose start should not compete with our look (a
/// leadership shorter than this hands over that much later).
const RELOOK_AFTER: Duration = Duration::from_millis(5);

/// Logged when an instance with our identity took our key (and its lease) over.
const TAKEN: &str = "an instance with our identity took our key over while our lease went \
                     unrenewed; queueing with a fresh lease (identities must be unique)";
