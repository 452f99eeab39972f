//! The command and everything around it: waiting for leadership, starting the command
//! ([`child`]), forwarding signals ([`signals`]), reaping and stopping its whole tree ([`reap`]),
//! stopping it when leadership can no longer be guaranteed, and turning what happened into the exit
//! code. The supervisor is the only writer of the [`Status`].
//!
//! Safety rule: leadership holds while the last acknowledged keepalive was *sent* less than
//! RENEW_DEADLINE ago on the boot-time clock (the election's [`RenewalClock`]). Past that the
//! command's tree gets SIGTERM, then SIGKILL halfway between RENEW_DEADLINE and LEASE_DURATION, so
//! it is dead before etcd could expire the lease. When our key or lease is already gone, another
//! leader may be starting: SIGKILL at once. No I/O that can block stands between a deadline or a
//! loss and the signal (logging never blocks; signal first, log after), and the lease is revoked
//! only once every descendant is gone.

mod child;
mod reap;
mod signals;

use std::ffi::OsString;
use std::io;
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::clock::{self, BootInstant};
use crate::election::{Election, Leadership, Loss, Notice, RenewalClock};
use crate::log;
use crate::status::Status;

pub use signals::prepare_process;

/// Exit codes besides the child's own (see the README).
pub mod exit {
    /// No command, or an unknown option.
    pub const USAGE: i32 = 64;
    /// etcd refused us, or leadership was not won within ACQUIRE_TIMEOUT.
    pub const UNAVAILABLE: i32 = 69;
    /// Leadership was lost while the child ran; the child was stopped.
    pub const LEADERSHIP_LOST: i32 = 75;
    /// Invalid configuration.
    pub const CONFIG: i32 = 78;
    /// The command exists but cannot be executed.
    pub const CANNOT_EXECUTE: i32 = 126;
    /// The command was not found.
    pub const NOT_FOUND: i32 = 127;
}

/// Longest wait for the command's tree to disappear after SIGKILL before the lease is revoked
/// anyway (a process stuck in the kernel cannot be killed).
const TREE_GONE_WAIT: Duration = Duration::from_secs(5);
/// How long a killed process group gets to go before the rest of the tree is looked for.
const GROUP_GONE: Duration = Duration::from_millis(2);
/// How often the tree is swept again while something of it is left.
const SWEEP_EVERY: Duration = Duration::from_millis(20);

/// What to run and the timings that bound it.
#[derive(Debug, Clone)]
pub struct Plan {
    pub command: Vec<OsString>,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub acquire_timeout: Option<Duration>,
    /// Variables of our environment the command must not see (secrets).
    pub hidden_env: Vec<&'static str>,
    /// The names under which the command gets our key, its revision and our lease id.
    pub leader_env: [&'static str; 3],
}

/// Everything the supervisor waits for.
pub enum Input {
    Election(Notice),
    Signal(i32),
    Reaped { pid: i32, status: i32 },
}

/// The supervisor's inbox, with signal handling and reaping running.
pub struct Inbox {
    events: Sender<Input>,
    inbox: Receiver<Input>,
    reaper: Arc<reap::Reaper>,
}

impl Inbox {
    /// Starts the signal and reaping threads and registers as the reaper of orphaned descendants.
    /// Call after [`prepare_process`] and before the election starts.
    pub fn start() -> io::Result<Inbox> {
        become_subreaper();
        let (events, inbox) = channel();
        let reaper = reap::start(events.clone())?;
        let poked = Arc::clone(&reaper);
        signals::start(events.clone(), move || poked.poke())?;
        Ok(Inbox {
            events,
            inbox,
            reaper,
        })
    }

    /// The callback through which the election reports.
    pub fn notifier(&self) -> impl Fn(Notice) + Send + Sync + 'static {
        let events = self.events.clone();
        move |notice| {
            let _ = events.send(Input::Election(notice));
        }
    }
}

/// Runs the command without an election: replaces this process with it. Returns only on failure,
/// with the exit code to use.
pub fn exec(command: &[OsString]) -> i32 {
    let Some(program) = command.first() else {
        return exit::USAGE;
    };
    let (code, error) = child::exec(command);
    report_spawn_error(program, &error);
    code
}

/// Waits for leadership, runs the command while it holds, and returns the exit code.
pub fn run(plan: Plan, inbox: Inbox, election: Election, status: Arc<Status>) -> i32 {
    let clock = election.clock();
    let mut supervisor = Supervisor {
        plan,
        inbox,
        election,
        clock,
        status,
    };
    let code = match supervisor.await_leadership() {
        Ok(leadership) => supervisor.lead(&leadership),
        Err(code) => code,
    };
    supervisor.leave(code)
}

struct Supervisor {
    plan: Plan,
    inbox: Inbox,
    election: Election,
    clock: Arc<RenewalClock>,
    status: Arc<Status>,
}

/// The running command.
struct Child {
    pid: i32,
    /// Its process group (the guardian's).
    group: i32,
    _guardian: child::Guardian,
}

impl Supervisor {
    /// Revokes the lease and passes the exit code through.
    fn leave(&self, code: i32) -> i32 {
        self.status.stepping_down();
        if let Err(error) = self.election.resign() {
            log::warn(
                "cannot revoke the lease; it will expire by itself",
                &[("error", &error)],
            );
        }
        log::info("exiting", &[("code", &code)]);
        code
    }

    fn await_leadership(&mut self) -> Result<Leadership, i32> {
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
                None => self.inbox.inbox.recv().map_err(|_| exit::UNAVAILABLE)?,
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
                Input::Signal(_) | Input::Reaped { .. } => {}
            }
        }
    }

    /// Keeps the status up to date with what the election says.
    fn note(&self, notice: Notice) {
        match notice {
            Notice::Candidacy { .. } => self.status.attempt(),
            Notice::Renewed { took } => self.status.renewed(took),
            Notice::RenewalFailed => self.status.renewal_failed(),
            Notice::Queued { .. } | Notice::Leading(_) | Notice::Lost(_) | Notice::Fatal(_) => {}
        }
    }

    /// Starts the command unless leadership already ended, runs it, and returns the exit code once
    /// the command and its whole tree are gone.
    fn lead(&mut self, leadership: &Leadership) -> i32 {
        if let Err(code) = self.still_leading() {
            return code;
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
        let child = match self.spawn(leadership) {
            Ok(child) => child,
            Err(code) => return code,
        };
        let code = self.supervise(&child);
        self.await_tree_gone(&child);
        code
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
        while let Ok(input) = self.inbox.inbox.try_recv() {
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
                Input::Signal(_) | Input::Reaped { .. } => {}
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

    fn spawn(&self, leadership: &Leadership) -> Result<Child, i32> {
        let guardian = match child::Guardian::start() {
            Ok(guardian) => guardian,
            Err(error) => {
                log::error("cannot start the command's guardian", &[("error", &error)]);
                return Err(exit::CANNOT_EXECUTE);
            }
        };
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
        let spawned = child::spawn(&self.plan.command, &set, &self.plan.hidden_env, &guardian);
        self.inbox.reaper.poke();
        match spawned {
            Ok(pid) => {
                log::info("child started", &[("pid", &pid)]);
                self.status.child(true, None);
                let group = guardian.group();
                Ok(Child {
                    pid,
                    group,
                    _guardian: guardian,
                })
            }
            Err((code, error)) => {
                reap::signal_tree(guardian.group(), libc::SIGKILL);
                if let Some(program) = self.plan.command.first() {
                    report_spawn_error(program, &error);
                }
                Err(code)
            }
        }
    }

    /// Runs until the command exits or leadership can no longer be guaranteed.
    fn supervise(&mut self, child: &Child) -> i32 {
        loop {
            let deadline = self.clock.deadline().unwrap_or_else(BootInstant::now);
            if BootInstant::now() >= deadline {
                self.status.stepping_down();
                return self.stop_gracefully(child);
            }
            let input = match self.inbox.inbox.recv_timeout(clock::nap_until(deadline)) {
                Ok(input) => input,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return exit::UNAVAILABLE,
            };
            match input {
                Input::Reaped { pid, status } if pid == child.pid => {
                    reap::signal_group(child.group, libc::SIGKILL);
                    let code = exit_code(status);
                    self.status.child(false, Some(code));
                    log::info("child exited", &[("pid", &pid), ("code", &code)]);
                    return code;
                }
                Input::Reaped { .. } => {}
                Input::Signal(signal) => forward(child, signal),
                Input::Election(Notice::Lost(loss)) => {
                    reap::signal_tree(child.group, libc::SIGKILL);
                    self.status.stepping_down();
                    log::warn(killed_because(loss), &[("reason", &loss)]);
                    self.await_exit(child, BootInstant::now() + TREE_GONE_WAIT);
                    return exit::LEADERSHIP_LOST;
                }
                Input::Election(notice) => self.note(notice),
            }
        }
    }

    /// SIGTERM to the command's tree; SIGKILL halfway between RENEW_DEADLINE and LEASE_DURATION.
    fn stop_gracefully(&mut self, child: &Child) -> i32 {
        let last = self.clock.last().unwrap_or_else(BootInstant::now);
        let kill_at = last + (self.plan.renew_deadline + self.plan.lease_duration) / 2;
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
    fn await_exit(&mut self, child: &Child, until: BootInstant) -> bool {
        loop {
            if BootInstant::now() >= until {
                return false;
            }
            match self.inbox.inbox.recv_timeout(clock::nap_until(until)) {
                Ok(Input::Reaped { pid, status }) if pid == child.pid => {
                    self.status.child(false, Some(exit_code(status)));
                    log::info(
                        "child stopped",
                        &[("pid", &pid), ("code", &exit_code(status))],
                    );
                    return true;
                }
                Ok(Input::Election(Notice::Lost(loss))) => {
                    reap::signal_tree(child.group, libc::SIGKILL);
                    log::warn(killed_because(loss), &[("reason", &loss)]);
                }
                Ok(Input::Election(notice)) => self.note(notice),
                Ok(_) | Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return false,
            }
        }
    }

    /// Kills whatever is left of the command's tree and waits (bounded) until no child of ours is
    /// left: as a subreaper, that is the whole tree. Only then may the lease go. The group was
    /// killed already and usually goes within a millisecond; only what outlives that (processes
    /// that left the group) costs a walk of `/proc`.
    fn await_tree_gone(&mut self, child: &Child) {
        let started = Instant::now();
        let mut sweep_at = started + GROUP_GONE;
        while reap::children_left() {
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
            if let Ok(Input::Election(notice)) = input {
                self.note(notice);
            }
        }
    }
}

/// The log line for a child killed because leadership ended under it. A renewal acknowledged only
/// after the deadline is not a loss of the key: the renew deadline already took leadership away.
fn killed_because(loss: Loss) -> &'static str {
    match loss {
        Loss::RenewalLapsed => "renewal lapsed; killed the child",
        Loss::KeyDeleted | Loss::LeaseGone => "leadership lost; killed the child",
    }
}

/// Forwards a signal to the command itself (it forwards further as it sees fit).
fn forward(child: &Child, signal: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(child.pid, signal);
    }
}

/// Registers as the reaper of orphaned descendants (PID 1 is one already).
fn become_subreaper() {
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes a plain integer argument.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong);
    }
}

/// The child's exit code, or 128 + the signal that killed it.
fn exit_code(status: i32) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        1
    }
}

fn report_spawn_error(program: &OsString, error: &io::Error) {
    log::error(
        "cannot run the command",
        &[("command", &program.to_string_lossy()), ("error", error)],
    );
}
