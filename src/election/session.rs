//! The lease that holds our place (etcd's `concurrency.Session`): grant, keepalive at a fixed rate,
//! revoke. Each acknowledged keepalive moves the [`RenewalClock`](super::RenewalClock)
//! ([`super::renewal`]).
//!
//! Rules:
//! - A lease granted (or renewed) for less than LEASE_DURATION is not trusted: the deadlines were
//!   computed for LEASE_DURATION.
//! - A keepalive the clock does not count because it came too late ([`Ack::Lapsed`]) is reported
//!   to the candidate as [`Alert::Lapsed`].
//! - Keepalives go out at a fixed rate (not interval + call time), one at a time: a waiter every
//!   `waiter_interval`, the leader every `leader_interval`; becoming leader sends one at once when the
//!   last is older than the leader's interval.

use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::renewal::Ack;
use super::{Alert, Notice, Shared};
use crate::clock::BootInstant;
use crate::etcd::{self, Client};
use crate::log;

/// A lease we hold, and when it was last known renewed (its grant's send time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Lease {
    pub id: i64,
    pub renewed: BootInstant,
}

/// Grants a lease of `ttl` seconds. A TTL below `ttl` is an error (the lease is revoked): our
/// deadlines assume the full TTL.
pub(super) fn grant(client: &Client, ttl: i64) -> Result<Lease, etcd::Error> {
    let sent = BootInstant::now();
    let grant = client.lease_grant(ttl)?;
    if grant.ttl < ttl {
        let _ = client.lease_revoke(grant.id);
        return Err(etcd::Error::Decode {
            endpoint: client.current_endpoint(),
            op: "lease/grant",
            detail: format!(
                "etcd granted {} s, less than LEASE_DURATION ({ttl} s)",
                grant.ttl
            ),
        });
    }
    log::info(
        "lease granted",
        &[
            ("lease", &format!("{:x}", grant.id)),
            ("ttl", &grant.ttl),
            ("endpoint", &client.current_endpoint()),
        ],
    );
    Ok(Lease {
        id: grant.id,
        renewed: sent,
    })
}

/// Revokes `lease`, which deletes our key at once; a lease already gone counts as revoked.
pub(super) fn revoke(client: &Client, lease: i64) -> Result<(), etcd::Error> {
    match client.lease_revoke(lease) {
        Err(error) if !error.is_lease_gone() => Err(error),
        _ => {
            log::info("lease revoked", &[("lease", &format!("{lease:x}"))]);
            Ok(())
        }
    }
}

/// Controls a running keepalive thread.
#[derive(Debug, Default)]
pub(super) struct Keeper {
    control: Mutex<Control>,
    changed: Condvar,
}

#[derive(Debug, Default, Clone, Copy)]
struct Control {
    stop: bool,
    leading: bool,
    renew_now: bool,
}

impl Keeper {
    /// Ends the thread (at its next wake-up; a call in flight finishes within its budget).
    pub(super) fn stop(&self) {
        self.update(|c| c.stop = true);
    }

    /// Switches to the leader's (or back to the waiter's) cadence.
    pub(super) fn set_leading(&self, leading: bool) {
        self.update(|c| c.leading = leading);
    }

    /// Sends a keepalive now, without waiting for the next tick.
    pub(super) fn renew_now(&self) {
        self.update(|c| c.renew_now = true);
    }

    fn update(&self, change: impl FnOnce(&mut Control)) {
        change(&mut self.control.lock().unwrap_or_else(|p| p.into_inner()));
        self.changed.notify_all();
    }

    /// Waits until `due`, a stop, a renewal asked for, or a change of cadence away from `leading`;
    /// returns the control state then. (Keepalives need no boot-time precision: the deadline is
    /// the supervisor's.)
    fn wait(&self, due: BootInstant, leading: bool) -> Control {
        let control = self.control.lock().unwrap_or_else(|p| p.into_inner());
        let (mut control, _) = self
            .changed
            .wait_timeout_while(control, due.until(), |c| {
                !c.stop && !c.renew_now && c.leading == leading
            })
            .unwrap_or_else(|p| p.into_inner());
        let now = *control;
        control.renew_now = false;
        now
    }
}

/// Starts the keepalive thread of `lease` for the session `session`.
pub(super) fn keep_alive(shared: &Arc<Shared>, session: u64, lease: i64) -> Arc<Keeper> {
    let keeper = Arc::new(Keeper::default());
    let renewer = Renewer {
        shared: Arc::clone(shared),
        keeper: Arc::clone(&keeper),
        alerts: shared.alerts(),
        session,
        lease,
    };
    if let Err(error) = thread::Builder::new()
        .name("keepalive".into())
        .spawn(move || renewer.run())
    {
        log::error("cannot start the keepalive thread", &[("error", &error)]);
    }
    keeper
}

/// The keepalive thread's state.
struct Renewer {
    shared: Arc<Shared>,
    keeper: Arc<Keeper>,
    alerts: Sender<Alert>,
    session: u64,
    lease: i64,
}

impl Renewer {
    fn run(self) {
        let settings = &self.shared.settings;
        let clock = &self.shared.clock;
        let mut failing = false;
        let mut leading = false;
        let mut due = clock.last().unwrap_or_else(BootInstant::now) + settings.waiter_interval();
        loop {
            let control = self.keeper.wait(due, leading);
            if control.stop {
                return;
            }
            if control.leading != leading {
                leading = control.leading;
                let last = clock.last().unwrap_or_else(BootInstant::now);
                due = last + interval(settings, leading);
            }
            let now = BootInstant::now();
            if now < due && !control.renew_now {
                continue;
            }
            match self.renew_once() {
                Renewal::Ok => {
                    if failing {
                        log::info(
                            "renewal recovered",
                            &[("lease", &format!("{:x}", self.lease))],
                        );
                    }
                    failing = false;
                }
                Renewal::Failed(error) => {
                    (self.shared.notify)(Notice::RenewalFailed);
                    if !failing {
                        log::warn(
                            "renewal failed; retrying",
                            &[("lease", &format!("{:x}", self.lease)), ("error", &error)],
                        );
                    }
                    failing = true;
                }
                Renewal::Ended => return,
            }
            // A fixed rate: the next keepalive is one interval after this one was due, never a
            // burst to catch up after a slow call.
            due = (due + interval(settings, leading)).max(now);
        }
    }

    fn renew_once(&self) -> Renewal {
        let sent = BootInstant::now();
        let started = Instant::now();
        let ttl = self.shared.settings.ttl_secs();
        match self.shared.client.lease_keepalive(self.lease) {
            Ok(answer) if answer.ttl >= ttl => {
                match self
                    .shared
                    .clock
                    .acknowledged(self.session, sent, BootInstant::now())
                {
                    Ack::Counted => {
                        (self.shared.notify)(Notice::Renewed {
                            took: started.elapsed(),
                        });
                        Renewal::Ok
                    }
                    Ack::Stale => Renewal::Ok,
                    Ack::Lapsed => {
                        let _ = self.alerts.send(Alert::Lapsed {
                            session: self.session,
                        });
                        Renewal::Ok
                    }
                }
            }
            Ok(answer) => Renewal::Failed(etcd::Error::Decode {
                endpoint: self.shared.client.current_endpoint(),
                op: "lease/keepalive",
                detail: format!(
                    "etcd renewed for {} s, less than LEASE_DURATION",
                    answer.ttl
                ),
            }),
            Err(error) if error.is_lease_gone() => {
                let _ = self.alerts.send(Alert::LeaseGone {
                    session: self.session,
                });
                Renewal::Ended
            }
            Err(error) => Renewal::Failed(error),
        }
    }
}

/// How one keepalive went.
enum Renewal {
    Ok,
    Failed(etcd::Error),
    /// The lease is gone: the thread ends.
    Ended,
}

fn interval(settings: &super::Settings, leading: bool) -> Duration {
    if leading {
        settings.leader_interval()
    } else {
        settings.waiter_interval()
    }
}
