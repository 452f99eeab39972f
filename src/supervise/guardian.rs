//! The guardian: a process forked ahead of time (no fork stands between leading and the command)
//! that leads the command's process group and SIGKILLs it when the wrapper goes or the kill point
//! passes.
//!
//! Rules:
//! - It holds only the read end of a pipe whose write end only the wrapper holds; when that end
//!   closes — the wrapper died, even by SIGKILL or the OOM killer — it SIGKILLs its process group,
//!   which is the command's. It is also a dead-man switch: the wrapper writes the kill point (on
//!   `CLOCK_BOOTTIME`) into the pipe whenever a renewal moves it, and the guardian SIGKILLs the
//!   group when it passes, so the command dies in time even when the wrapper itself is stopped or
//!   hung.
//! - It ignores and blocks every signal it can (real-time ones included), closes every other
//!   file, and only ever calls async-signal-safe functions (a fork of a threaded process).
//! - SIGSTOP cannot be blocked: a guardian that is stopped (its command can signal it) is resumed
//!   by the reaper at once ([`is_guardian`]).

use std::io;
use std::sync::Mutex;

use crate::clock::BootInstant;

/// The longest the guardian sleeps before it reads the boot-time clock again.
const GUARD_TICK_MS: libc::c_int = 100;
/// One message on the lifeline: a kill point, in nanoseconds of `CLOCK_BOOTTIME`.
const KILL_POINT_BYTES: usize = 8;

/// The pids of our guardians that have not been reaped (the armed one, the next one forked ahead).
static UNREAPED: Mutex<Vec<i32>> = Mutex::new(Vec::new());

/// Whether `pid` is one of our guardians.
pub(super) fn is_guardian(pid: i32) -> bool {
    UNREAPED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .contains(&pid)
}

/// `pid` was reaped: it is no guardian of ours any more.
pub(super) fn reaped(pid: i32) {
    UNREAPED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|&g| g != pid);
}

/// A running guardian; its group is the command's.
pub struct Guardian {
    pid: i32,
    /// The write end of the lifeline (non-blocking); the guardian acts when it closes.
    lifeline: std::os::fd::OwnedFd,
    /// The kill point last written.
    kill_point: std::cell::Cell<BootInstant>,
}

impl Guardian {
    /// Forks the guardian. It waits for the wrapper to go, or for a kill point ([`Guardian::arm`]).
    pub(super) fn start() -> io::Result<Guardian> {
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two fds into `fds`.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let (read, write) = (fds[0], fds[1]);
        // The write end never blocks (a guardian that does not read keeps the earlier kill point).
        // SAFETY: fcntl on the fd just created.
        if unsafe { libc::fcntl(write, libc::F_SETFL, libc::O_NONBLOCK) } != 0 {
            let error = io::Error::last_os_error();
            // SAFETY: both fds are ours and unused elsewhere.
            unsafe {
                libc::close(read);
                libc::close(write);
            }
            return Err(error);
        }
        // SAFETY: after fork the child calls only async-signal-safe functions (`guard`).
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            guard(read);
        }
        // SAFETY: `read` is ours to close; `write` becomes owned by the OwnedFd.
        unsafe {
            libc::close(read);
        }
        if pid < 0 {
            // SAFETY: as above.
            unsafe { libc::close(write) };
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `write` is a valid fd nobody else owns.
        let lifeline =
            unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(write) };
        // Also set from here: the command must not be able to join before the group exists.
        // SAFETY: setpgid on our own child.
        unsafe { libc::setpgid(pid, pid) };
        UNREAPED.lock().unwrap_or_else(|p| p.into_inner()).push(pid);
        Ok(Guardian {
            pid,
            lifeline,
            kill_point: std::cell::Cell::new(BootInstant::from_nanos(u64::MAX)),
        })
    }

    /// Sets the kill point: from now on the guardian kills the group when it passes.
    pub(super) fn arm(&self, kill_point: BootInstant) -> io::Result<()> {
        match self.send(kill_point) {
            true => Ok(()),
            false => Err(io::Error::last_os_error()),
        }
    }

    /// The process group of the guardian and the command (and the guardian's pid).
    pub(super) fn group(&self) -> i32 {
        self.pid
    }

    /// Moves the kill point to `kill_point` if it is later. Never blocks: if the pipe is full (the
    /// guardian does not read), the earlier kill point stands, which only kills sooner.
    pub(super) fn extend(&self, kill_point: BootInstant) {
        if kill_point > self.kill_point.get() {
            self.send(kill_point);
        }
    }

    /// Writes `kill_point` into the lifeline; false if it did not fit.
    fn send(&self, kill_point: BootInstant) -> bool {
        let bytes = kill_point.as_nanos().to_ne_bytes();
        // SAFETY: an 8-byte write (atomic on a pipe) from this stack to our own fd.
        let written = unsafe {
            libc::write(
                std::os::fd::AsRawFd::as_raw_fd(&self.lifeline),
                bytes.as_ptr().cast(),
                KILL_POINT_BYTES,
            )
        };
        let sent = written == KILL_POINT_BYTES as isize;
        if sent {
            self.kill_point.set(kill_point);
        }
        sent
    }
}

/// The guardian's life; never returns.
fn guard(lifeline: libc::c_int) -> ! {
    // SAFETY: only async-signal-safe calls on plain data and our own fds.
    unsafe {
        libc::setpgid(0, 0);
        // Every signal but the two that cannot be: ignored where the C library lets us, and
        // blocked by the raw system call, which also covers the real-time signals the C library
        // reserves for itself (32 and 33 with glibc) and will neither ignore nor block. The
        // guardian only polls, so a blocked signal costs it nothing.
        for signal in 1..=64 {
            if signal != libc::SIGKILL && signal != libc::SIGSTOP {
                libc::signal(signal, libc::SIG_IGN);
            }
        }
        let all: u64 = !0;
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &all as *const u64,
            std::ptr::null_mut::<u64>(),
            8usize,
        );
        libc::dup2(lifeline, 0);
        if libc::syscall(libc::SYS_close_range, 1u32, u32::MAX, 0u32) != 0 {
            for fd in 1..4096 {
                libc::close(fd);
            }
        }
        libc::prctl(
            libc::PR_SET_NAME,
            c"eae-guardian".as_ptr() as libc::c_ulong,
            0,
            0,
            0,
        );
        watch_lifeline(0);
        libc::kill(0, libc::SIGKILL);
        libc::_exit(0)
    }
}

/// Returns when the lifeline `fd` closes or fails, or when the last kill point read from it
/// passes. A timer on `CLOCK_BOOTTIME` wakes it at the kill point (without one, it looks at the
/// clock every 100 ms while a kill point is set); no kill point yet (`u64::MAX`), no wake-ups.
/// Async-signal-safe: timerfd, poll, read and clock_gettime only.
fn watch_lifeline(fd: libc::c_int) {
    // SAFETY: timerfd_create takes plain integers.
    let timer = unsafe {
        libc::timerfd_create(libc::CLOCK_BOOTTIME, libc::TFD_CLOEXEC | libc::TFD_NONBLOCK)
    };
    let mut kill_point = u64::MAX;
    // Whether the timer is set to the kill point (else the clock is looked at every tick).
    let mut timed = false;
    let mut buffer = [0u8; 8 * KILL_POINT_BYTES];
    loop {
        let now = BootInstant::now().as_nanos();
        if now >= kill_point {
            return;
        }
        let wait = match kill_point {
            u64::MAX => -1,
            _ if timed => -1,
            _ => libc::c_int::try_from((kill_point - now).div_ceil(1_000_000))
                .map_or(GUARD_TICK_MS, |ms| ms.min(GUARD_TICK_MS)),
        };
        let mut polls = [
            libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: timer,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let count = if timer >= 0 { 2 } else { 1 };
        // SAFETY: `count` pollfds on this stack.
        let ready = unsafe { libc::poll(polls.as_mut_ptr(), count, wait) };
        if ready == 0 || (ready < 0 && errno() == libc::EINTR) {
            continue;
        }
        if ready < 0 {
            return;
        }
        if polls[1].revents != 0 {
            let mut expirations = [0u8; 8];
            // SAFETY: reads 8 bytes into this stack from our own non-blocking timer.
            unsafe { libc::read(timer, expirations.as_mut_ptr().cast(), 8) };
        }
        if polls[0].revents == 0 {
            continue;
        }
        // SAFETY: reads into `buffer`, which is on this stack and as long as we say.
        let read = unsafe { libc::read(fd, buffer.as_mut_ptr().cast(), buffer.len()) };
        if read < 0 && matches!(errno(), libc::EINTR | libc::EAGAIN) {
            continue;
        }
        // Writes of 8 bytes to a pipe are atomic, so a read returns whole kill points; the last wins.
        let Ok(read) = usize::try_from(read) else {
            return;
        };
        let whole = read - read % KILL_POINT_BYTES;
        if whole == 0 {
            return; // the wrapper is gone
        }
        let mut last = [0u8; KILL_POINT_BYTES];
        last.copy_from_slice(&buffer[whole - KILL_POINT_BYTES..whole]);
        kill_point = u64::from_ne_bytes(last);
        timed = timer >= 0 && arm_timer(timer, kill_point);
    }
}

/// Sets `timer` to fire at `kill_point` (boot-time nanoseconds); `u64::MAX` disarms it. False
/// when the timer could not be set.
fn arm_timer(timer: libc::c_int, kill_point: u64) -> bool {
    let at = match kill_point {
        u64::MAX => libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
        nanos => libc::timespec {
            tv_sec: libc::time_t::try_from(nanos / 1_000_000_000).unwrap_or(libc::time_t::MAX),
            // Below 10^9: fits any c_long.
            tv_nsec: (nanos % 1_000_000_000) as libc::c_long,
        },
    };
    let spec = libc::itimerspec {
        it_interval: libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
        it_value: at,
    };
    // SAFETY: one itimerspec on this stack.
    unsafe {
        libc::timerfd_settime(timer, libc::TFD_TIMER_ABSTIME, &spec, std::ptr::null_mut()) == 0
    }
}

pub(super) fn errno() -> libc::c_int {
    // SAFETY: __errno_location returns this thread's errno slot.
    unsafe { *libc::__errno_location() }
}
