//! Stopping the command, a second `impl` of the [`Supervisor`]: SIGTERM to its tree when the renew
//! deadline passes, SIGKILL at the kill point (at once when the key or lease is gone), then a wait
//! until nothing of the tree is left.
//!
//! Rules: signal first, log after; the lease may go only once the tree is gone, or after
//! [`TREE_GONE_WAIT`] when a process survives SIGKILL.

use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use super::reap;
use super::supervisor::{Child, Supervisor};
use super::{exit, exit_code, killed_because, Input};
use crate::clock::{self, BootInstant};
use crate::election::Notice;
use crate::log;

/// Longest wait for the command's tree to disappear after SIGKILL before the lease is revoked
/// anyway (a process stuck in the kernel cannot be killed).
pub(super) const TREE_GONE_WAIT: Duration = Duration::from_secs(5);
/// How long a killed process group gets to go before the rest of the tree is looked for.
const GROUP_GONE: Duration = Duration::from_millis(2);
/// How often the tree is swept again while something of it is left.
const SWEEP_EVERY: Duration = Duration::from_millis(20);

impl Supervisor {
    /// SIGTERM to the command's tree; SIGKILL halfway between RENEW_DEADLINE and LEASE_DURATION.
    pub(super) fn stop_gracefully(&mut self, child: &Child) -> i32 {
        let kill_at = self.kill_point();
        // Signal first, log after.
        reap::signal_tree(child.group, libc::SIGTERM);
        log::warn(
            "renew deadline passed; sent SIGTERM to the child",
            &[("renew_deadline", &format!("{:?}", self.plan.renew_deadline))],
        );
        if !self.await_exit(child, kill_at) {
            reap::signal_tree(child.group, libc::SIGKILL);
            log::warn("child still running; sent SIGKILL", &[("pid", &child.pid)]);
            if !self.await_exit(child, BootInstant::now() + TREE_GONE_WAIT) {
                log::error("child not reaped after SIGKILL", &[("pid", &child.pid)]);
            }
        }
        exit::LEADERSHIP_LOST
    }

    /// Waits until the command is reaped or `until` passes; true if it was reaped. A loss of the
    /// key or lease meanwhile ends the grace period: SIGKILL at once.
    pub(super) fn await_exit(&mut self, child: &Child, until: BootInstant) -> bool {
        loop {
            if BootInstant::now() >= until {
                return self.reaped_already(child);
            }
            match self.inbox.receiver().recv_timeout(clock::nap_until(until)) {
                Ok(Input::Reaped { pid, status }) if pid == child.pid => {
                    self.stopped(pid, status);
                    return true;
                }
                Ok(Input::Election(Notice::Lost(loss))) => {
                    reap::signal_tree(child.group, libc::SIGKILL);
                    log::warn(killed_because(loss), &[("reason", &loss)]);
                }
                Ok(Input::Election(notice)) => self.note(notice),
                Ok(Input::Traced { pid, signal }) => reap::release_tracee(pid, signal),
                Ok(_) | Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return false,
            }
        }
    }

    /// Whether the command's exit is among what already arrived (a wrapper that was stopped past
    /// `until` finds it waiting); what else arrived is noted or dropped: the command is being
    /// stopped anyway.
    fn reaped_already(&mut self, child: &Child) -> bool {
        while let Ok(input) = self.inbox.receiver().try_recv() {
            match input {
                Input::Reaped { pid, status } if pid == child.pid => {
                    self.stopped(pid, status);
                    return true;
                }
                Input::Election(notice) => self.note(notice),
                Input::Traced { pid, signal } => reap::release_tracee(pid, signal),
                _ => {}
            }
        }
        false
    }

    fn stopped(&self, pid: i32, status: i32) {
        self.status.child(false, Some(exit_code(status)));
        log::info(
            "child stopped",
            &[("pid", &pid), ("code", &exit_code(status))],
        );
    }

    /// Kills whatever is left of the command's tree and waits (bounded) until no child of ours is
    /// left but the guardian (running nothing of the command): as a subreaper, that is the whole
    /// tree. Only then may the lease go. A command that leaves nothing behind costs one look at
    /// our children; otherwise its tree is killed at once (the group usually goes within a
    /// millisecond) and swept again while something is left (processes that left the group cost
    /// a walk of `/proc`).
    pub(super) fn await_tree_gone(&mut self, child: &Child) {
        let started = Instant::now();
        if !reap::children_left_besides(child.group) {
            return;
        }
        reap::signal_tree(child.group, libc::SIGKILL);
        let mut sweep_at = started + GROUP_GONE;
        while reap::children_left_besides(child.group) {
            let now = Instant::now();
            if now >= started + TREE_GONE_WAIT {
                log::error(
                    "processes of the command survive SIGKILL; revoking the lease anyway",
                    &[],
                );
                return;
            }
            if now >= sweep_at {
                reap::signal_tree(child.group, libc::SIGKILL);
                sweep_at = now + SWEEP_EVERY;
            }
            let input = self
                .inbox
                .inbox
                .recv_timeout(sweep_at.saturating_duration_since(now));
            match input {
                Ok(Input::Election(notice)) => self.note(notice),
                Ok(Input::Traced { pid, signal }) => reap::release_tracee(pid, signal),
                _ => {}
            }
        }
    }
}
