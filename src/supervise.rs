//! The child process and everything around it: waiting for leadership, starting the command,
//! forwarding signals, reaping (as an init would), stopping the child when leadership can no longer
//! be guaranteed, and turning what happened into the exit code.
//!
//! Safety rule: leadership holds while the last acknowledged keepalive was *sent* less than
//! RENEW_DEADLINE ago (monotonic clock). Past that the child's process group gets SIGTERM, then
//! SIGKILL halfway between RENEW_DEADLINE and LEASE_DURATION, so it is dead before etcd could expire
//! the lease. When our key or lease is already gone, another leader may be starting: SIGKILL at once.

use std::ffi::OsString;
use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use signal_hook::consts::signal::{
    SIGHUP, SIGINT, SIGKILL, SIGQUIT, SIGTERM, SIGTTOU, SIGUSR1, SIGUSR2, SIGWINCH,
};
use signal_hook::iterator::Signals;

use crate::election::{self, Election, Leadership, Loss};
use crate::log;
use crate::status::Status;

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

/// Signals forwarded to the child while it runs.
const FORWARDED: [i32; 7] = [SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH];
/// Signals that make a waiting candidate leave.
const LEAVE: [i32; 3] = [SIGTERM, SIGINT, SIGHUP];

/// What to run and the timings that bound it.
#[derive(Debug, Clone)]
pub struct Plan {
    pub command: Vec<OsString>,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub acquire_timeout: Option<Duration>,
}

/// Everything the supervisor waits for.
enum Event {
    Election(election::Event),
    Signal(i32),
    ChildExited { pid: i32, status: i32 },
}

/// Runs the command without an election: replaces this process with it. Returns only on failure,
/// with the exit code to use.
pub fn exec(command: &[OsString]) -> i32 {
    let Some((program, args)) = command.split_first() else {
        return exit::USAGE;
    };
    let error = Command::new(program).args(args).exec();
    report_spawn_error(program, &error)
}

/// Waits for leadership, runs the command while it holds, and returns the exit code.
pub fn run(
    plan: Plan,
    status: Arc<Status>,
    start: impl FnOnce(Box<dyn Fn(election::Event) + Send + Sync>) -> Election,
) -> i32 {
    let (events, inbox) = channel();
    if let Err(error) = forward_signals(events.clone()) {
        log::error("cannot install signal handlers", &[("error", &error)]);
        return exit::UNAVAILABLE;
    }
    become_subreaper();
    let election_events = events.clone();
    let election = start(Box::new(move |event| {
        let _ = election_events.send(Event::Election(event));
    }));
    let mut supervisor = Supervisor {
        plan,
        inbox,
        events,
        election,
        status,
    };
    supervisor.run()
}

struct Supervisor {
    plan: Plan,
    inbox: Receiver<Event>,
    events: Sender<Event>,
    election: Election,
    status: Arc<Status>,
}

/// The child while it runs.
struct Child {
    pid: i32,
}

impl Supervisor {
    fn run(&mut self) -> i32 {
        let leadership = match self.await_leadership() {
            Ok(leadership) => leadership,
            Err(code) => return self.leave(code),
        };
        let child = match self.spawn(&leadership) {
            Ok(child) => child,
            Err(code) => return self.leave(code),
        };
        let code = self.supervise(&child);
        self.leave(code)
    }

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
        let give_up = self
            .plan
            .acquire_timeout
            .map(|timeout| Instant::now() + timeout);
        loop {
            let event = match give_up {
                Some(at) => match self
                    .inbox
                    .recv_timeout(at.saturating_duration_since(Instant::now()))
                {
                    Ok(event) => event,
                    Err(RecvTimeoutError::Timeout) => {
                        log::warn(
                            "leadership not acquired within ACQUIRE_TIMEOUT; leaving",
                            &[],
                        );
                        return Err(exit::UNAVAILABLE);
                    }
                    Err(RecvTimeoutError::Disconnected) => return Err(exit::UNAVAILABLE),
                },
                None => self.inbox.recv().map_err(|_| exit::UNAVAILABLE)?,
            };
            match event {
                Event::Election(election::Event::Leading(leadership)) => return Ok(leadership),
                Event::Election(election::Event::Fatal(_)) => return Err(exit::UNAVAILABLE),
                Event::Signal(signal) if LEAVE.contains(&signal) => {
                    log::info(
                        "signal received while waiting; leaving the election",
                        &[("signal", &signal)],
                    );
                    return Err(128 + signal);
                }
                _ => continue,
            }
        }
    }

    fn spawn(&self, leadership: &Leadership) -> Result<Child, i32> {
        self.status.leading();
        log::info(
            "leading",
            &[
                ("key", &leadership.key),
                ("revision", &leadership.revision),
                ("lease", &format!("{:x}", leadership.lease)),
            ],
        );
        let Some((program, args)) = self.plan.command.split_first() else {
            return Err(exit::USAGE);
        };
        let mut command = Command::new(program);
        command
            .args(args)
            .env("ETCD_AWAIT_ELECTION_KEY", &leadership.key)
            .env(
                "ETCD_AWAIT_ELECTION_REVISION",
                leadership.revision.to_string(),
            )
            .env(
                "ETCD_AWAIT_ELECTION_LEASE_ID",
                format!("{:x}", leadership.lease),
            )
            .process_group(0);
        prepare_child(&mut command);
        match command.spawn() {
            Ok(child) => {
                let pid = child.id() as i32;
                log::info("child started", &[("pid", &pid)]);
                self.status.child(true, None);
                spawn_reaper(self.events.clone());
                Ok(Child { pid })
            }
            Err(error) => Err(report_spawn_error(program, &error)),
        }
    }

    /// Runs until the child exits or leadership can no longer be guaranteed.
    fn supervise(&mut self, child: &Child) -> i32 {
        loop {
            let deadline = self.renew_deadline();
            let event = match self
                .inbox
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(event) => event,
                Err(RecvTimeoutError::Disconnected) => return exit::UNAVAILABLE,
                Err(RecvTimeoutError::Timeout) => {
                    if Instant::now() < self.renew_deadline() {
                        continue;
                    }
                    self.status.stepping_down();
                    self.stop_gracefully(child);
                    return exit::LEADERSHIP_LOST;
                }
            };
            match event {
                Event::ChildExited { pid, status } if pid == child.pid => {
                    kill_group(child.pid, SIGKILL);
                    let code = exit_code(status);
                    self.status.child(false, Some(code));
                    log::info("child exited", &[("pid", &pid), ("code", &code)]);
                    return code;
                }
                Event::ChildExited { .. } => {}
                Event::Signal(signal) => forward(child, signal),
                Event::Election(election::Event::Lost(loss)) => {
                    self.status.stepping_down();
                    kill_group(child.pid, SIGKILL);
                    log::warn(killed_because(loss), &[("reason", &loss)]);
                    self.kill_now(child);
                    return exit::LEADERSHIP_LOST;
                }
                Event::Election(_) => {}
            }
        }
    }

    /// The moment leadership stops being guaranteed: last acknowledged renewal + RENEW_DEADLINE.
    fn renew_deadline(&self) -> Instant {
        let last = self.election.last_renewal().unwrap_or_else(Instant::now);
        last + self.plan.renew_deadline
    }

    /// SIGTERM to the child's group; SIGKILL halfway between RENEW_DEADLINE and LEASE_DURATION.
    fn stop_gracefully(&mut self, child: &Child) {
        let last = self.election.last_renewal().unwrap_or_else(Instant::now);
        let kill_at = last + (self.plan.renew_deadline + self.plan.lease_duration) / 2;
        // Signal first, log after: a log line can block on a stalled stderr pipe.
        kill_group(child.pid, SIGTERM);
        log::warn(
            "renew deadline passed; sent SIGTERM to the child",
            &[("renew_deadline", &format!("{:?}", self.plan.renew_deadline))],
        );
        if !self.wait_for_exit(child, kill_at) {
            kill_group(child.pid, SIGKILL);
            log::warn("child still running; sent SIGKILL", &[("pid", &child.pid)]);
            self.kill_now(child);
        } else {
            kill_group(child.pid, SIGKILL);
        }
    }

    /// SIGKILL to the child's group, and wait (bounded) until it is reaped.
    fn kill_now(&mut self, child: &Child) {
        kill_group(child.pid, SIGKILL);
        if !self.wait_for_exit(child, Instant::now() + self.plan.lease_duration) {
            log::error("child not reaped after SIGKILL", &[("pid", &child.pid)]);
        }
    }

    /// Waits until the child is reaped or `until` passes; true if it was reaped.
    fn wait_for_exit(&mut self, child: &Child, until: Instant) -> bool {
        loop {
            match self
                .inbox
                .recv_timeout(until.saturating_duration_since(Instant::now()))
            {
                Ok(Event::ChildExited { pid, status }) if pid == child.pid => {
                    self.status.child(false, Some(exit_code(status)));
                    log::info(
                        "child stopped",
                        &[("pid", &pid), ("code", &exit_code(status))],
                    );
                    return true;
                }
                // Our key or lease is gone while the child is being stopped: another leader may be
                // starting now, so the grace period ends here.
                Ok(Event::Election(election::Event::Lost(loss))) => {
                    kill_group(child.pid, SIGKILL);
                    log::warn(killed_because(loss), &[("reason", &loss)]);
                }
                Ok(_) => continue,
                Err(_) => return false,
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

/// Forwards a signal to the child (its own pid: it forwards further as it sees fit).
fn forward(child: &Child, signal: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(child.pid, signal);
    }
}

/// Sends `signal` to the child's process group (the group id is the child's pid).
fn kill_group(pid: i32, signal: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions; a negative pid names a process group.
    unsafe {
        libc::kill(-pid, signal);
    }
}

/// Sets up the forked child before exec: it dies with us (even on SIGKILL), and it owns the
/// terminal's foreground when there is one, so Ctrl-C reaches it once, directly.
fn prepare_child(command: &mut Command) {
    // SAFETY: getpid/isatty are async-signal-safe and read no shared state.
    let parent = unsafe { libc::getpid() };
    let on_terminal = unsafe { libc::isatty(libc::STDIN_FILENO) } == 1;
    // SAFETY: the closure runs in the forked child before exec and calls only async-signal-safe
    // functions (prctl, getppid, signal, tcsetpgrp, getpgrp); it allocates nothing.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, SIGKILL as libc::c_ulong) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                return Err(io::Error::other(
                    "the supervisor exited before the child started",
                ));
            }
            if on_terminal {
                let previous = libc::signal(SIGTTOU, libc::SIG_IGN);
                libc::tcsetpgrp(libc::STDIN_FILENO, libc::getpgrp());
                libc::signal(SIGTTOU, previous);
            }
            Ok(())
        });
    }
}

/// Registers as the reaper of orphaned descendants (PID 1 is one already).
fn become_subreaper() {
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes a plain integer argument.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong);
    }
}

/// Reaps every child and orphan that ends; reports each to the supervisor, which picks out its
/// own child. Nothing else in this process waits for children, so no status is stolen.
fn spawn_reaper(events: Sender<Event>) {
    let spawned = thread::Builder::new()
        .name("reaper".into())
        .spawn(move || loop {
            let mut status = 0;
            // SAFETY: waitpid writes only to `status`.
            let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
            if pid > 0 {
                if events.send(Event::ChildExited { pid, status }).is_err() {
                    return;
                }
            } else if io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                return; // ECHILD: nothing left to reap
            }
        });
    if let Err(error) = spawned {
        log::error("cannot start the reaper thread", &[("error", &error)]);
    }
}

fn forward_signals(events: Sender<Event>) -> io::Result<()> {
    let mut signals = Signals::new(FORWARDED)?;
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                if events.send(Event::Signal(signal)).is_err() {
                    return;
                }
            }
        })?;
    Ok(())
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

fn report_spawn_error(program: &OsString, error: &io::Error) -> i32 {
    let code = match error.kind() {
        io::ErrorKind::NotFound => exit::NOT_FOUND,
        _ => exit::CANNOT_EXECUTE,
    };
    log::error(
        "cannot run the command",
        &[("command", &program.to_string_lossy()), ("error", error)],
    );
    code
}
