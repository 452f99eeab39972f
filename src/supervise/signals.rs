//! Signals: which ones the wrapper handles, the thread that receives them, and what the command
//! must inherit instead.
//!
//! Rules:
//! - Every handled signal is blocked in every thread but the signal thread (the mask is set on the
//!   main thread before any other thread exists), so they never interrupt a thread's system call.
//! - SIGTTOU and SIGTTIN are ignored: the command owns the terminal's foreground, and a wrapper
//!   stopped by its own log line (`stty tostop`) could no longer keep its lease or stop the command.
//! - The command gets back the dispositions the wrapper inherited (what was ignored stays ignored,
//!   everything else is default), and an empty mask; SIGPIPE is default, as std does.

use std::io;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::mpsc::Sender;
use std::sync::OnceLock;
use std::thread;

use signal_hook::consts::signal::{
    SIGCHLD, SIGHUP, SIGINT, SIGPIPE, SIGQUIT, SIGTERM, SIGTTIN, SIGTTOU, SIGUSR1, SIGUSR2,
    SIGWINCH,
};
use signal_hook::iterator::Signals;

use super::Input;

/// Signals forwarded to the command while it runs.
pub(super) const FORWARDED: [i32; 7] =
    [SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH];
/// Signals that make a waiting candidate leave.
pub(super) const LEAVE: [i32; 3] = [SIGTERM, SIGINT, SIGHUP];
/// Signals the wrapper ignores.
const IGNORED: [i32; 2] = [SIGTTOU, SIGTTIN];
/// Every signal whose disposition the wrapper changes (the command gets the inherited ones back).
pub(super) const CHANGED: [i32; 11] = [
    SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH, SIGCHLD, SIGTTOU, SIGTTIN,
    SIGPIPE,
];

/// The dispositions the command starts with, per signal of [`CHANGED`]: ignored or default.
static INHERITED: OnceLock<[(i32, bool); CHANGED.len()]> = OnceLock::new();
/// The first leave signal received (0: none), set before the supervisor hears of it.
static LEAVE_REQUESTED: AtomicI32 = AtomicI32::new(0);

/// Run first thing in `main`, before any thread exists: records the inherited dispositions, blocks
/// the handled signals (every thread spawned later inherits the mask) and ignores SIGTTOU/SIGTTIN.
pub fn prepare_process() {
    let inherited = CHANGED.map(|signal| (signal, signal != SIGPIPE && is_ignored(signal)));
    let _ = INHERITED.set(inherited);
    // SAFETY: sigset_t is plain data, initialised by sigemptyset before use; pthread_sigmask and
    // signal only change this thread's mask and the process's dispositions.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for signal in FORWARDED.iter().chain(&[SIGCHLD]) {
            libc::sigaddset(&mut set, *signal);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        for signal in IGNORED {
            libc::signal(signal, libc::SIG_IGN);
        }
    }
}

/// Whether `signal` is ignored now.
fn is_ignored(signal: i32) -> bool {
    // SAFETY: sigaction with a null new action only reads the current one into `old`.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(signal, std::ptr::null(), &mut old) == 0
            && old.sa_sigaction == libc::SIG_IGN
    }
}

/// The dispositions the command must start with (see the module docs).
pub(super) fn inherited() -> [(i32, bool); CHANGED.len()] {
    *INHERITED.get_or_init(|| CHANGED.map(|signal| (signal, false)))
}

/// The leave signal received so far, if any (also while the supervisor has not heard of it yet).
pub(super) fn leave_requested() -> Option<i32> {
    match LEAVE_REQUESTED.load(Ordering::SeqCst) {
        0 => None,
        signal => Some(signal),
    }
}

/// Starts the signal thread: forwarded and leave signals go to `events`, SIGCHLD to `on_child`.
pub(super) fn start(events: Sender<Input>, on_child: impl Fn() + Send + 'static) -> io::Result<()> {
    let mut handled: Vec<i32> = FORWARDED.to_vec();
    handled.push(SIGCHLD);
    let mut signals = Signals::new(&handled)?;
    for signal in LEAVE {
        // SAFETY: the action is one atomic compare-exchange, which is async-signal-safe. It runs
        // when the signal is delivered, so the command's clone sees it before its exec (the
        // signal thread may be scheduled later than that).
        unsafe {
            signal_hook::low_level::register(signal, move || {
                let _ =
                    LEAVE_REQUESTED.compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst);
            })?;
        }
    }
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            unblock(&handled);
            for signal in signals.forever() {
                if signal == SIGCHLD {
                    on_child();
                    continue;
                }
                if events.send(Input::Signal(signal)).is_err() {
                    return;
                }
            }
        })?;
    Ok(())
}

/// Unblocks `signals` in the calling thread only.
fn unblock(signals: &[i32]) {
    // SAFETY: as in `prepare_process`; only this thread's mask changes.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for signal in signals {
            libc::sigaddset(&mut set, *signal);
        }
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
    }
}
