//! Reaping and the command's process tree, as an init would do it (`tini`).
//!
//! Rules:
//! - One thread waits for every child (and, as PID 1 or child subreaper, every orphan re-parented to
//!   us) and reports each to the supervisor, which picks out its command: nothing else in the process
//!   waits for children, so no exit status is stolen.
//! - The command's whole tree is ours to stop: its process group, and every descendant that left it
//!   (`setsid`). As a subreaper we are the nearest ancestor of every orphan, so "no children left"
//!   means the whole tree is gone — only then is the lease revoked.
//! - Descendants are found through `/proc/<pid>/task/<tid>/children` and signalled through a pidfd
//!   (a pid that was reused meanwhile is not signalled). As PID 1, `kill(-1)` reaches them all, with
//!   or without `/proc`.
//! - No child is reaped while our own children are listed: the kernel lists them one at a time,
//!   and a child reaped between two entries can make it skip a live one (measured: 2 in 400 exits
//!   once revoked the lease beside a running `setsid` descendant). The reaper therefore waits
//!   without reaping, then reaps under [`REAP_GATE`], which the listing holds too.

use std::fs;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;

use super::{guardian, Input};
use crate::log;

/// Largest tree walked in one sweep (a fork bomb must not make the sweep unbounded).
const MAX_DESCENDANTS: usize = 65_536;

/// Held while a child is reaped and while our own children are listed (see the module rules).
static REAP_GATE: Mutex<()> = Mutex::new(());

/// Wakes the reaping thread when there may be children to wait for.
#[derive(Default)]
pub(super) struct Reaper {
    generation: Mutex<u64>,
    changed: Condvar,
}

impl Reaper {
    /// There may be new children (we spawned one, or SIGCHLD arrived).
    pub(super) fn poke(&self) {
        *self.generation.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.changed.notify_all();
    }

    fn run(&self, events: &Sender<Input>) {
        let mut seen = 0;
        loop {
            // Until ECHILD: no children now.
            while let Some(change) = await_child_change() {
                let pid = match change {
                    Change::Exited(pid) => pid,
                    Change::Stopped(pid) => {
                        resume_if_guardian(pid);
                        continue;
                    }
                    Change::Traced(pid, signal) => {
                        if events.send(Input::Traced { pid, signal }).is_err() {
                            return;
                        }
                        continue;
                    }
                };
                let mut status = 0;
                let gate = REAP_GATE.lock().unwrap_or_else(|p| p.into_inner());
                // SAFETY: waitpid writes only to `status`; `pid` has exited, so it does not block.
                let reaped = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
                drop(gate);
                if reaped != pid {
                    continue;
                }
                guardian::reaped(pid);
                if events.send(Input::Reaped { pid, status }).is_err() {
                    return;
                }
            }
            // A poke after the last round means a child may have come since: wait again at once.
            let mut generation = self.generation.lock().unwrap_or_else(|p| p.into_inner());
            while *generation == seen {
                generation = self
                    .changed
                    .wait(generation)
                    .unwrap_or_else(|p| p.into_inner());
            }
            seen = *generation;
        }
    }
}

/// A child's change of state, as [`await_child_change`] sees it.
enum Change {
    /// It exited (not reaped yet).
    Exited(i32),
    /// It was stopped (already taken note of).
    Stopped(i32),
    /// It was stopped as our tracee, with this signal (already taken note of).
    Traced(i32, i32),
}

/// Waits until a child exits or stops; `None` when there are no children. An exited child is
/// not reaped; a stop is taken note of, so that it is not reported again.
fn await_child_change() -> Option<Change> {
    loop {
        let flags = libc::WEXITED | libc::WSTOPPED | libc::WNOWAIT;
        // SAFETY: siginfo_t is plain data; waitid with WNOWAIT writes only `info` and reaps
        // nothing.
        let (result, pid, code, signal) = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let result = libc::waitid(libc::P_ALL, 0, &mut info, flags);
            (result, info.si_pid(), info.si_code, info.si_status())
        };
        if result == 0 && pid > 0 {
            if code != libc::CLD_STOPPED && code != libc::CLD_TRAPPED {
                return Some(Change::Exited(pid));
            }
            // SAFETY: as above; without WNOWAIT this consumes the stop (or finds none: the
            // child was continued meanwhile), and WNOHANG keeps it from waiting.
            unsafe {
                let mut info: libc::siginfo_t = std::mem::zeroed();
                let flags = libc::WSTOPPED | libc::WNOHANG;
                libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, flags);
            }
            return Some(match code {
                libc::CLD_TRAPPED => Change::Traced(pid, signal),
                _ => Change::Stopped(pid),
            });
        }
        if result == -1 && io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return None;
        }
    }
}

/// A stopped guardian (its command can SIGSTOP it) could not meet the kill point: resume it.
/// Logged once per guardian (a command may do it in a loop).
fn resume_if_guardian(pid: i32) {
    static LOGGED_FOR: AtomicI32 = AtomicI32::new(0);
    if !guardian::is_guardian(pid) {
        return;
    }
    // SAFETY: kill(2) has no memory-safety preconditions; `pid` is our unreaped child.
    unsafe {
        libc::kill(pid, libc::SIGCONT);
    }
    if LOGGED_FOR.swap(pid, Ordering::Relaxed) != pid {
        log::warn(
            "the command's guardian was stopped; resumed it",
            &[("guardian", &pid)],
        );
    }
}

/// Lets a command that made us its tracer (`PTRACE_TRACEME`) run on untraced: it would otherwise
/// stay stopped for good. Call from the thread that started it (the tracer). The signal it stopped
/// with is delivered, except the SIGTRAP that marks a traced `execve`, as a debugger would.
/// Logged once.
pub(super) fn release_tracee(pid: i32, signal: i32) {
    static LOGGED: AtomicBool = AtomicBool::new(false);
    let deliver = if signal == libc::SIGTRAP { 0 } else { signal };
    // SAFETY: PTRACE_DETACH takes a pid and a signal number; the address is ignored.
    unsafe {
        libc::ptrace(
            libc::PTRACE_DETACH,
            pid,
            std::ptr::null_mut::<libc::c_void>(),
            deliver as usize as *mut libc::c_void,
        );
    }
    if !LOGGED.swap(true, Ordering::Relaxed) {
        log::warn(
            "a process of the command made the wrapper its tracer (PTRACE_TRACEME); detached it",
            &[("pid", &pid)],
        );
    }
}

/// Starts the reaping thread.
pub(super) fn start(events: Sender<Input>) -> io::Result<Arc<Reaper>> {
    let reaper = Arc::new(Reaper::default());
    let running = Arc::clone(&reaper);
    thread::Builder::new()
        .name("reaper".into())
        .spawn(move || running.run(&events))?;
    Ok(reaper)
}

/// Whether any child (a zombie not yet reaped included) is left; does not reap.
pub(super) fn children_left() -> bool {
    // SAFETY: siginfo_t is plain data; waitid with WNOWAIT only reads the state of our children.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
        let result = libc::waitid(libc::P_ALL, 0, &mut info, flags);
        !(result == -1 && io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD))
    }
}

/// Whether any child other than `spared` (the command's guardian, which runs no code of the
/// command) is left, a zombie not yet reaped included; does not reap. From `/proc` when it can be
/// read, so that a dying guardian is not waited for; else as [`children_left`]. The list is read
/// under [`REAP_GATE`], so that it is whole.
pub(super) fn children_left_besides(spared: i32) -> bool {
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    let listed = {
        let _gate = REAP_GATE.lock().unwrap_or_else(|p| p.into_inner());
        try_children_of(me)
    };
    match listed {
        Some(children) => children.iter().any(|&child| child != spared),
        None => children_left(),
    }
}

/// Sends `signal` to the process group `group` only.
pub(super) fn signal_group(group: i32, signal: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions; a negative pid names a process group.
    unsafe {
        libc::kill(-group, signal);
    }
}

/// Sends `signal` to the process group `group` and to every descendant of this process outside
/// it (each process gets it once); returns how many such descendants were found (none without
/// `/proc`, where the group is all we can reach).
pub(super) fn signal_tree(group: i32, signal: i32) -> usize {
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    if me == 1 {
        // SAFETY: kill(2) has no memory-safety preconditions; as PID 1, -1 is every other process
        // of our namespace, group and escapees alike.
        unsafe {
            libc::kill(-1, signal);
        }
        return 0;
    }
    signal_group(group, signal);
    let outside: Vec<(i32, i32)> = descendants(me)
        .into_iter()
        .filter(|(pid, _)| stat_of(*pid).is_some_and(|stat| stat.group != group))
        .collect();
    for (pid, parent) in &outside {
        signal_child(*pid, *parent, signal);
    }
    outside.len()
}

/// Every descendant of `root` as (pid, parent), walking `/proc`; empty without `/proc`.
fn descendants(root: i32) -> Vec<(i32, i32)> {
    let mut found = Vec::new();
    let mut next = 0;
    let mut parents = vec![root];
    while let Some(parent) = parents.get(next).copied() {
        next += 1;
        for child in children_of(parent) {
            if found.len() >= MAX_DESCENDANTS {
                return found;
            }
            found.push((child, parent));
            parents.push(child);
        }
    }
    found
}

/// The children of `pid`, from the `children` file of each of its threads; empty without `/proc`.
fn children_of(pid: i32) -> Vec<i32> {
    try_children_of(pid).unwrap_or_default()
}

/// The children of `pid`; `None` unless every thread's `children` file could be read (a thread
/// that ended meanwhile has none left).
fn try_children_of(pid: i32) -> Option<Vec<i32>> {
    let tasks = fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut children = Vec::new();
    for task in tasks {
        let path = task.ok()?.path();
        match fs::read_to_string(path.join("children")) {
            Ok(text) => children.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok()),
            ),
            Err(_) if !path.exists() => {}
            Err(_) => return None,
        }
    }
    Some(children)
}

/// Signals `pid` if it is still a child of `parent`: through a pidfd opened first, so that a pid
/// reused by an unrelated process after `pid` died is never signalled.
fn signal_child(pid: i32, parent: i32, signal: i32) {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if pidfd < 0 {
        if io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS) {
            // A kernel before 5.3: plain kill, the only means it has.
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe {
                libc::kill(pid, signal);
            }
        }
        return;
    }
    let pidfd = pidfd as libc::c_int;
    if stat_of(pid).is_some_and(|stat| stat.parent == parent) {
        // SAFETY: pidfd is an fd we own; a null siginfo means "as kill(2) would".
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                pidfd,
                signal,
                std::ptr::null::<u8>(),
                0,
            );
        }
    }
    // SAFETY: closing the fd we opened above.
    unsafe {
        libc::close(pidfd);
    }
}

/// What `/proc/<pid>/stat` says of a process's place in the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    parent: i32,
    group: i32,
}

/// The parent and process group of `pid`.
fn stat_of(pid: i32) -> Option<Stat> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses, so split after the
    // last ')'.
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace().skip(1);
    let parent = fields.next()?.parse().ok()?;
    let group = fields.next()?.parse().ok()?;
    Some(Stat { parent, group })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_parent_and_group_are_read_from_proc() {
        // SAFETY: getpid/getppid/getpgrp have no preconditions.
        let (me, parent, group) = unsafe { (libc::getpid(), libc::getppid(), libc::getpgrp()) };
        assert_eq!(stat_of(me), Some(Stat { parent, group }));
        assert_eq!(stat_of(-5), None);
    }

    #[test]
    fn a_child_is_found_among_the_descendants() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .expect("sleep");
        // SAFETY: getpid has no preconditions.
        let me = unsafe { libc::getpid() };
        let found = descendants(me);
        let pid = child.id() as i32;
        let _ = child.kill();
        let _ = child.wait();
        assert!(found.contains(&(pid, me)), "{found:?}");
    }
}
