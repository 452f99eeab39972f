//! The supervisor's state machine for one leadership: wait for it, start the command, keep it only
//! while leadership holds, stop it (and its whole tree, [`super::stop`]) when it no longer does.

use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::child::{self, SpawnError};
use super::guardian::Guardian;
use super::notify::{self, Notifier};
use super::reap;
use super::signals;
use super::stop::TREE_GONE_WAIT;
use super::{exit, exit_code, forward, killed_because, report_spawn_error, Inbox, Input, Plan};
use crate::clock::{self, BootInstant};
use crate::election::{Election, Leadership, Notice, RenewalClock};
use crate::log;
use crate::status::Status;

pub(super) struct Supervisor {
    pub(super) plan: Plan,
    pub(super) inbox: Inbox,
    pub(super) election: Election,
    pub(super) clock: Arc<RenewalClock>,
    pub(super) status: Arc<Status>,
    pub(super) systemd: Notifier,
    /// A guardian forked ahead of time, so that no fork stands between leading and the command.
    pub(super) spare: Option<Guardian>,
    /// The guardian of a command that is gone with its whole tree, kept until the lease went:
    /// killing it sooner would put its exit (it is a fork of ours) on the path to the revoke.
    pub(super) retired: Option<Guardian>,
}

/// How one leadership ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ended {
    /// The command exited by itself (or of a forwarded signal).
    Exited,
    /// Leadership ended under the command; it was stopped.
    Lost,
    /// The command never started.
    NotStarted,
}

/// The running command.
pub(super) struct Child {
    pub(super) pid: i32,
    /// Its process group (the guardian's).
    pub(super) group: i32,
    guardian: Guardian,
}

impl Supervisor {
    /// Revokes the lease and passes the exit code through.
    pub(super) fn leave(&mut self, code: i32) -> i32 {
        self.resign();
        log::info("exiting", &[("code", &code)]);
        code
    }

    /// Revokes the lease; then the retired guardian goes (its lifeline closes: it kills its group,
    /// which is itself alone by then).
    pub(super) fn resign(&mut self) {
        self.status.stepping_down();
        if let Err(error) = self.election.resign() {
            log::warn(
                "cannot revoke the lease; it will expire by itself",
                &[("error", &error)],
            );
        }
        self.retired = None;
    }

    pub(super) fn await_leadership(&mut self) -> Result<Leadership, i32> {
        let give_up = self.plan.acquire_timeout.map(|t| Instant::now() + t);
        loop {
            let input = match give_up {
                Some(at) => match self
                    .inbox
                    .inbox
                    .recv_timeout(at.saturating_duration_since(Instant::now()))
                {
                    Ok(input) => input,
                    Err(RecvTimeoutError::Timeout) => {
                        log::warn(
                            "leadership not acquired within ACQUIRE_TIMEOUT; leaving",
                            &[],
                        );
                        return Err(exit::UNAVAILABLE);
                    }
                    Err(RecvTimeoutError::Disconnected) => return Err(exit::UNAVAILABLE),
                },
                None => self
                    .inbox
                    .receiver()
                    .recv()
                    .map_err(|_| exit::UNAVAILABLE)?,
            };
            match input {
                Input::Election(Notice::Leading(leadership)) => return Ok(leadership),
                Input::Election(Notice::Fatal(_)) => return Err(exit::UNAVAILABLE),
                Input::Election(notice) => self.note(notice),
                Input::Signal(signal) if signals::LEAVE.contains(&signal) => {
                    log::info(
                        "signal received while waiting; leaving the election",
                        &[("signal", &signal)],
                    );
                    return Err(128 + signal);
                }
                Input::Reaped { pid, .. } => self.reaped(pid),
                Input::Traced { pid, signal } => reap::release_tracee(pid, signal),
                Input::Signal(_) => {}
            }
        }
    }

    /// Keeps the status (and systemd) up to date with what the election says.
    pub(super) fn note(&self, notice: Notice) {
        match notice {
            Notice::Candidacy { .. } => {
                self.status.attempt();
                self.systemd.ready();
            }
            Notice::Renewed { took } => self.status.renewed(took),
            Notice::RenewalFailed => self.status.renewal_failed(),
            Notice::Queued { behind, .. } => {
                self.systemd.status(&format!("waiting behind {behind}"))
            }
            Notice::Leading(_) | Notice::Lost(_) | Notice::Fatal(_) => {}
        }
    }

    /// Starts the command unless leadership already ended, runs it, and returns the exit code, and
    /// how it ended, once the command and its whole tree are gone.
    pub(super) fn lead(&mut self, leadership: &Leadership) -> (i32, Ended) {
        if let Err(code) = self.still_leading() {
            let ended = match code {
                exit::LEADERSHIP_LOST => Ended::Lost,
                _ => Ended::NotStarted,
            };
            return (code, ended);
        }
        self.status.leading();
        log::info(
            "leading",
            &[
                ("key", &leadership.key),
                ("revision", &leadership.revision),
                ("lease", &format!("{:x}", leadership.lease)),
            ],
        );
        self.systemd
            .status(&format!("leading, revision {}", leadership.revision));
        let child = match self.spawn(leadership) {
            Ok(child) => child,
            Err(code) => return (code, Ended::NotStarted),
        };
        let (code, ended) = self.supervise(&child);
        self.await_tree_gone(&child);
        self.retired = Some(child.guardian);
        (code, ended)
    }

    /// The last look before the command starts: a leave signal, a loss or a renewal that aged past
    /// the deadline in the moments since the election said "leading" means it must not start.
    fn still_leading(&mut self) -> Result<(), i32> {
        if let Some(signal) = signals::leave_requested() {
            log::info(
                "signal received before the command started; leaving",
                &[("signal", &signal)],
            );
            return Err(128 + signal);
        }
        while let Ok(input) = self.inbox.receiver().try_recv() {
            match input {
                Input::Election(Notice::Lost(loss)) => {
                    log::warn(
                        "leadership lost before the command started",
                        &[("reason", &loss)],
                    );
                    return Err(exit::LEADERSHIP_LOST);
                }
                Input::Election(notice) => self.note(notice),
                Input::Signal(signal) if signals::LEAVE.contains(&signal) => {
                    return Err(128 + signal)
                }
                Input::Reaped { pid, .. } => self.reaped(pid),
                Input::Traced { pid, signal } => reap::release_tracee(pid, signal),
                Input::Signal(_) => {}
            }
        }
        if self
            .clock
            .deadline()
            .is_none_or(|d| d <= BootInstant::now())
        {
            log::warn("the last renewal is too old to start the command", &[]);
            return Err(exit::LEADERSHIP_LOST);
        }
        Ok(())
    }

    /// Forks the spare guardian unless there is one; a failure is only logged (the spawn tries
    /// again, and reports it).
    pub(super) fn prepare_guardian(&mut self) {
        if self.spare.is_none() {
            match Guardian::start() {
                Ok(guardian) => self.spare = Some(guardian),
                Err(error) => log::warn("cannot start a guardian yet", &[("error", &error)]),
            }
        }
    }

    /// Forgets the spare guardian if it is the process `pid` that was reaped.
    fn reaped(&mut self, pid: i32) {
        if self.spare.as_ref().is_some_and(|g| g.group() == pid) {
            self.spare = None;
        }
    }

    /// The guardian for the command, armed with the kill point: the spare, or a new one.
    fn armed_guardian(&mut self) -> Result<Guardian, i32> {
        let kill_point = self.kill_point();
        if let Some(spare) = self.spare.take() {
            if spare.arm(kill_point).is_ok() {
                return Ok(spare);
            }
        }
        let started = Guardian::start().and_then(|g| g.arm(kill_point).map(|()| g));
        started.map_err(|error| {
            log::error("cannot start the command's guardian", &[("error", &error)]);
            exit::CANNOT_EXECUTE
        })
    }

    fn spawn(&mut self, leadership: &Leadership) -> Result<Child, i32> {
        let guardian = self.armed_guardian()?;
        let set = [
            ("ETCD_AWAIT_ELECTION_LEADER_KEY", leadership.key.clone()),
            (
                "ETCD_AWAIT_ELECTION_LEADER_REVISION",
                leadership.revision.to_string(),
            ),
            (
                "ETCD_AWAIT_ELECTION_LEADER_LEASE_ID",
                format!("{:x}", leadership.lease),
            ),
        ];
        let hidden: Vec<&str> = self
            .plan
            .hidden_env
            .iter()
            .copied()
            .chain(notify::VARIABLES)
            .collect();
        let spawned = child::spawn(&self.plan.command, &set, &hidden, &guardian);
        self.inbox.poke_reaper();
        match spawned {
            Ok(pid) => {
                log::info("child started", &[("pid", &pid)]);
                self.status.child(true, None);
                let group = guardian.group();
                Ok(Child {
                    pid,
                    group,
                    guardian,
                })
            }
            Err(SpawnError::Left(signal)) => {
                reap::signal_tree(guardian.group(), libc::SIGKILL);
                log::info(
                    "signal received before the command started; leaving",
                    &[("signal", &signal)],
                );
                Err(128 + signal)
            }
            Err(SpawnError::Failed(code, error)) => {
                reap::signal_tree(guardian.group(), libc::SIGKILL);
                if let Some(program) = self.plan.command.first() {
                    report_spawn_error(program, &error);
                }
                Err(code)
            }
        }
    }

    /// When the command must be dead, measured from the last renewal: halfway between
    /// RENEW_DEADLINE and LEASE_DURATION (the guardian enforces it should we stall).
    pub(super) fn kill_point(&self) -> BootInstant {
        let last = self.clock.last().unwrap_or_else(BootInstant::now);
        last + (self.plan.renew_deadline + self.plan.lease_duration) / 2
    }

    /// Runs until the command exits or leadership can no longer be guaranteed.
    fn supervise(&mut self, child: &Child) -> (i32, Ended) {
        let mut guarded = true;
        loop {
            let deadline = self.clock.deadline().unwrap_or_else(BootInstant::now);
            if BootInstant::now() >= deadline {
                self.status.stepping_down();
                return (self.stop_gracefully(child), Ended::Lost);
            }
            child.guardian.extend(self.kill_point());
            let input = match self
                .inbox
                .receiver()
                .recv_timeout(clock::nap_until(deadline))
            {
                Ok(input) => input,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return (exit::UNAVAILABLE, Ended::Lost),
            };
            match input {
                Input::Reaped { pid, status } if pid == child.pid => {
                    // What is left of its tree is killed before the lease goes (await_tree_gone).
                    let code = exit_code(status);
                    self.status.child(false, Some(code));
                    log::info("child exited", &[("pid", &pid), ("code", &code)]);
                    return (code, Ended::Exited);
                }
                Input::Reaped { pid, .. } if pid == child.group && guarded => {
                    guarded = false;
                    if BootInstant::now() >= self.kill_point() {
                        log::warn(
                            "the guardian killed the command's process group at the kill point \
                             (the wrapper could not run in time)",
                            &[("guardian", &pid)],
                        );
                    } else {
                        log::error(
                            "the command's guardian was killed: should the wrapper die or hang \
                             now, its process group is no longer stopped for it",
                            &[("guardian", &pid)],
                        );
                    }
                }
                Input::Reaped { .. } => {}
                Input::Traced { pid, signal } => reap::release_tracee(pid, signal),
                Input::Signal(signal) => forward(child.pid, signal),
                Input::Election(Notice::Lost(loss)) => {
                    reap::signal_tree(child.group, libc::SIGKILL);
                    self.status.stepping_down();
                    log::warn(killed_because(loss), &[("reason", &loss)]);
                    self.await_exit(child, BootInstant::now() + TREE_GONE_WAIT);
                    return (exit::LEADERSHIP_LOST, Ended::Lost);
                }
                Input::Election(notice) => self.note(notice),
            }
        }
    }
}

impl Supervisor {
    /// Waits `duration` between two campaigns; a leave signal meanwhile ends the wrapper (its exit
    /// code is returned).
    pub(super) fn pause(&mut self, duration: Duration) -> Result<(), i32> {
        let until = Instant::now() + duration;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.inbox.receiver().recv_timeout(left) {
                Ok(Input::Signal(signal)) if signals::LEAVE.contains(&signal) => {
                    log::info(
                        "signal received between campaigns; leaving",
                        &[("signal", &signal)],
                    );
                    return Err(128 + signal);
                }
                Ok(Input::Election(notice)) => self.note(notice),
                Ok(Input::Reaped { pid, .. }) => self.reaped(pid),
                Ok(Input::Traced { pid, signal }) => reap::release_tracee(pid, signal),
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => return Ok(()),
                Err(RecvTimeoutError::Disconnected) => return Err(exit::UNAVAILABLE),
            }
        }
    }
}
