//! The command and everything around it: waiting for leadership, starting the command
//! ([`child`]) in its guardian's group ([`guardian`]), forwarding signals ([`signals`]), reaping
//! and stopping its whole tree ([`reap`]), stopping it when leadership can no longer be guaranteed,
//! and turning what happened into the exit code. The supervisor is the only writer of the
//! [`Status`].
//!
//! Safety rule: leadership holds while the last acknowledged keepalive was *sent* less than
//! RENEW_DEADLINE ago on the boot-time clock (the election's [`RenewalClock`]). Past that the
//! command's tree gets SIGTERM, then SIGKILL halfway between RENEW_DEADLINE and LEASE_DURATION, so
//! it is dead before etcd could expire the lease. When our key or lease is already gone, another
//! leader may be starting: SIGKILL at once. No I/O that can block stands between a deadline or a
//! loss and the signal (logging never blocks; signal first, log after), and the lease is revoked
//! only once every descendant is gone.

mod child;
mod guardian;
mod notify;
mod reap;
mod signals;
mod stop;
mod supervisor;

use std::ffi::OsString;
use std::io;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::election::{Backoff, Election, Loss, Notice};
use crate::log;
use crate::status::Status;
use notify::Notifier;
use supervisor::{Ended, Supervisor};

pub use guardian::Guardian;
pub use signals::prepare_process;

/// Forks the command's first guardian, early (while the process is small), but once the election
/// and the supervisor's threads run, when the election's first request is usually out: a fork
/// holds the address space's lock, and a thread that maps or touches new memory meanwhile waits.
/// `None` when it cannot be forked now: the supervisor tries again.
pub fn fork_guardian() -> Option<Guardian> {
    Guardian::start().ok()
}

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
    /// What to do when a leadership ends.
    pub recampaign: Recampaign,
    /// The first pause before campaigning again; it doubles up to `backoff_cap`, and starts over
    /// after a leadership that lasted longer than the cap.
    pub retry_period: Duration,
    pub backoff_cap: Duration,
}

/// What to do when a leadership ends (`RECAMPAIGN`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Recampaign {
    /// Exit: with 75 when leadership was lost, with the command's code when it exited.
    #[default]
    Off,
    /// After a lost leadership, campaign again instead of exiting (the command's own exit still
    /// ends the wrapper).
    OnLoss,
    /// Campaign again whenever a leadership ends, also when the command exited.
    Always,
}

impl Recampaign {
    /// The variable's spelling.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Recampaign::Off => "off",
            Recampaign::OnLoss => "on-loss",
            Recampaign::Always => "always",
        }
    }

    /// Whether a leadership that `ended` so is followed by another campaign.
    fn again_after(self, ended: Ended) -> bool {
        matches!(
            (self, ended),
            (Recampaign::OnLoss, Ended::Lost) | (Recampaign::Always, Ended::Lost | Ended::Exited)
        )
    }
}

/// Everything the supervisor waits for.
pub enum Input {
    Election(Notice),
    Signal(i32),
    Reaped {
        pid: i32,
        status: i32,
    },
    /// A child we trace stopped (the command asked for it: `PTRACE_TRACEME`); only this thread,
    /// which started it, can let it go ([`reap::release_tracee`]).
    Traced {
        pid: i32,
        signal: i32,
    },
}

/// The supervisor's inbox, with signal handling and reaping running.
pub struct Inbox {
    /// Keeps the channel open while the inbox lives.
    _events: Sender<Input>,
    inbox: Receiver<Input>,
    reaper: Arc<reap::Reaper>,
}

impl Inbox {
    fn receiver(&self) -> &Receiver<Input> {
        &self.inbox
    }

    /// There may be a new child to wait for.
    fn poke_reaper(&self) {
        self.reaper.poke();
    }
}

/// The supervisor's inbox before its threads run: the election may start (and report) first, so
/// that its first request is not held up by them. Signals wait meanwhile: [`prepare_process`]
/// blocked them.
pub struct Mailbox {
    events: Sender<Input>,
    inbox: Receiver<Input>,
}

impl Mailbox {
    pub fn new() -> Mailbox {
        let (events, inbox) = channel();
        Mailbox { events, inbox }
    }

    /// The callback through which the election reports.
    pub fn notifier(&self) -> impl Fn(Notice) + Send + Sync + 'static {
        let events = self.events.clone();
        move |notice| {
            let _ = events.send(Input::Election(notice));
        }
    }

    /// Starts the signal and reaping threads and registers as the reaper of orphaned descendants.
    /// Call after [`prepare_process`].
    pub fn open(self) -> io::Result<Inbox> {
        let Mailbox { events, inbox } = self;
        become_subreaper();
        let reaper = reap::start(events.clone())?;
        let poked = Arc::clone(&reaper);
        signals::start(events.clone(), move || poked.poke())?;
        Ok(Inbox {
            _events: events,
            inbox,
            reaper,
        })
    }
}

impl Default for Mailbox {
    fn default() -> Mailbox {
        Mailbox::new()
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

/// Waits for leadership, runs the command while it holds, and returns the exit code; with
/// RECAMPAIGN, campaigns again after a leadership ends (paced), until a signal ends everything.
pub fn run(
    plan: Plan,
    inbox: Inbox,
    election: Election,
    status: Arc<Status>,
    guardian: Option<Guardian>,
) -> i32 {
    let clock = election.clock();
    let systemd = Notifier::from_env(Arc::clone(&clock), plan.renew_deadline);
    let mut backoff = Backoff::new(plan.retry_period, plan.backoff_cap);
    let mut supervisor = Supervisor {
        plan,
        inbox,
        election,
        clock,
        status,
        systemd,
        spare: guardian,
        retired: None,
    };
    loop {
        supervisor.prepare_guardian();
        let began = Instant::now();
        let (code, ended) = match supervisor.await_leadership() {
            Ok(leadership) => supervisor.lead(&leadership),
            Err(code) => return supervisor.leave(code),
        };
        let again = supervisor.plan.recampaign.again_after(ended);
        if !again || signals::leave_requested().is_some() {
            return supervisor.leave(code);
        }
        if began.elapsed() > supervisor.plan.backoff_cap {
            backoff.reset();
        }
        let pause = backoff.pause(Instant::now());
        supervisor.resign();
        supervisor.status.recampaigning();
        supervisor.systemd.status("campaigning again");
        log::info(
            "campaigning again",
            &[("in", &format!("{pause:?}")), ("after", &code)],
        );
        if let Err(code) = supervisor.pause(pause) {
            return supervisor.leave(code);
        }
        if let Err(error) = supervisor.election.rejoin() {
            log::warn(
                "cannot revoke the lease; it will expire by itself",
                &[("error", &error)],
            );
        }
    }
}

/// The log line for a child killed because leadership ended under it. A renewal acknowledged only
/// after the deadline is not a loss of the key: the renew deadline already took leadership away.
fn killed_because(loss: Loss) -> &'static str {
    match loss {
        Loss::RenewalLapsed => "renewal lapsed; killed the child",
        Loss::KeyDeleted
        | Loss::LeaseGone
        | Loss::Superseded
        | Loss::Unconfirmed
        | Loss::Overwritten => "leadership lost; killed the child",
    }
}

/// Forwards a signal to the command itself (it forwards further as it sees fit). A leave signal
/// is followed by SIGCONT, as systemd does: a command that is stopped (Ctrl-Z, SIGSTOP) could not
/// act on it otherwise.
fn forward(pid: i32, signal: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(pid, signal);
        if signals::LEAVE.contains(&signal) {
            libc::kill(pid, libc::SIGCONT);
        }
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
