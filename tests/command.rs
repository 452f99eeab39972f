//! README "The command", "Signals", "PID 1 and reaping" and "Exit codes": the command's exit
//! status becomes ours, an unrunnable command exits 127 or 126, signals are forwarded while it
//! runs and make a waiter leave, and one that arrives after "leading" but before the exec stops
//! the start. The command's whole tree dies with it and with us: its process group (even after a
//! `kill -9` of the wrapper, and when the command sends a real-time signal to its group, which
//! the guardian leads) and descendants that left the group with `setsid`, which are gone before
//! the lease is revoked. On a terminal Ctrl-C reaches the command once, and with `stty tostop` the
//! wrapper, in the background behind its command, is never stopped by its own log lines. (PID 1
//! itself needs a PID namespace: `scripts/static-checks.sh` runs it under `unshare`.) The
//! command's election variables are checked where it first leads, in `tests/election.rs`.
//!
//! Run: `cargo test --test command -- --test-threads=2`. The terminal tests drive a pty of their
//! own through Python's `pty` module in a child process (this process's terminal is not
//! touched). The spawn-window test runs the wrapper under `strace` (6.x, `--seccomp-bpf`; ptrace
//! must be allowed), whose syscall tampering holds the command's clone for 3 s.

mod support;

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use libc::{SIGHUP, SIGINT, SIGKILL, SIGTERM, SIGUSR1};
use support::env::{sh, Env, Timings, FAST, STEADY};
use support::marks::{now_ns, secs, Nanos, OnTerm, Start};
use support::procs::{
    alive, children_of, group_alive, group_of, send, session_of, state, terminal_foreground_of,
    with_default_signals,
};
use support::wrapper::{Scene, Wrapper, SOON};

// ---- exit codes ----

#[test]
fn the_child_exit_status_becomes_the_wrapper_exit_code() {
    let s = Scene::new();
    let cases = [
        ("exit 0", 0),
        ("exit 3", 3),
        ("kill -USR1 $$", 128 + SIGUSR1),
        ("kill -TERM $$", 128 + SIGTERM),
        ("kill -9 $$", 128 + SIGKILL),
    ];
    for (i, (script, expected)) in cases.into_iter().enumerate() {
        let name = format!("x{i}");
        let mut w = s.spawn(&name, s.env(&name, STEADY), sh(script));
        assert_eq!(w.code(SOON), expected, "{script}\n{}", w.stderr());
        assert!(
            s.keys().is_empty(),
            "lease not revoked after {script}\n{}",
            s.report()
        );
    }
}

#[test]
fn unrunnable_commands_exit_127_or_126_in_both_modes() {
    let s = Scene::new();
    let not_executable = s.dir().join("not-executable");
    fs::write(&not_executable, "#!/bin/sh\nexit 0\n").unwrap();
    fs::set_permissions(&not_executable, fs::Permissions::from_mode(0o644)).unwrap();
    let cases: [(OsString, i32); 4] = [
        (s.dir().join("missing").into(), 127),
        ("eae-no-such-command-anywhere".into(), 127),
        (not_executable.into(), 126),
        (s.dir().into(), 126),
    ];
    for election in [false, true] {
        for (program, expected) in &cases {
            let env = match election {
                true => s.env("me", STEADY),
                false => Env::default(),
            };
            let mut w = s.spawn("unrunnable", env, vec![program.clone()]);
            assert_eq!(
                w.code(SOON),
                *expected,
                "{program:?} election={election}: {}",
                w.stderr()
            );
            if election {
                assert!(s.keys().is_empty(), "lease not revoked\n{}", s.report());
            }
        }
    }
}

// ---- signals ----

#[test]
fn a_signalled_waiter_leaves_at_once() {
    let s = Scene::new();
    let mut a = s.candidate("a", STEADY);
    s.await_start("a", SOON);
    for (signal, name) in [(SIGTERM, "t"), (SIGINT, "i"), (SIGHUP, "h")] {
        let mut w = s.candidate(name, STEADY);
        let keys = s.await_keys(2, SOON);
        assert_eq!(keys[1].value, name);
        w.signal(signal);
        // Far below the 15 s lease: the waiter revoked it.
        s.wait(
            &format!("{name}'s key removed"),
            Duration::from_secs(3),
            || s.keys().len() == 1,
        );
        assert_eq!(w.code(SOON), 128 + signal, "{}", w.stderr());
        assert!(s.start_of(name).is_none(), "{name}'s child started");
    }
    assert!(a.running() && s.end_of("a").is_none(), "{}", s.report());
    s.stop("a", 0);
    assert_eq!(a.code(SOON), 0);
}

#[test]
fn sigterm_to_the_leader_reaches_its_child_and_the_follower_takes_over() {
    let s = Scene::new();
    let mut a = s.candidate("a", STEADY);
    s.await_start("a", SOON);
    let mut b = s.spawn("b", s.env("b", STEADY), s.child("b", OnTerm::Die));
    s.await_keys(2, SOON);

    // a's child traps SIGTERM and exits 0: so does the wrapper.
    sigterm_ends_a_cleanly(&s, &mut a);
    let a_end = s.end_of("a").expect("a's end");
    let b_start = s.await_start("b", SOON);
    assert!(b_start.at > a_end);
    // Far below the 15 s lease: a resigned as it left.
    assert!(
        b_start.at - a_end < Duration::from_secs(5).as_nanos() as Nanos,
        "takeover took {}\n{}",
        secs(b_start.at - a_end),
        s.report()
    );

    // b's child dies of SIGTERM: 128 + 15.
    b.signal(SIGTERM);
    assert_eq!(b.code(SOON), 128 + SIGTERM, "{}", s.report());
    assert!(!alive(b_start.pid));
    assert!(s.keys().is_empty(), "keys left:\n{}", s.report());
}

/// A command that makes the wrapper its tracer (`PTRACE_TRACEME`, an anti-debugging trick) would
/// stop for good at its next `execve` or signal, with a wrapper deaf to SIGTERM: the wrapper lets
/// it go, and signals reach it as before.
#[test]
fn a_command_that_makes_the_wrapper_its_tracer_runs_and_hears_signals() {
    let traceme = "import ctypes, os, sys\n\
                   ctypes.CDLL(None, use_errno=True).ptrace(0, 0, None, None)\n\
                   os.execvp(sys.argv[1], sys.argv[1:])";
    let s = Scene::new();
    let mut args: Vec<OsString> = ["python3", "-c", traceme]
        .iter()
        .map(OsString::from)
        .collect();
    args.extend(s.child("a", OnTerm::Trap));
    let mut a = s.spawn("a", s.env("a", STEADY), args);
    s.await_start("a", SOON);
    s.wait("a detaches its tracee", SOON, || {
        a.stderr().contains("detached it")
    });
    sigterm_ends_a_cleanly(&s, &mut a);
    assert!(s.keys().is_empty(), "keys left:\n{}", s.report());
}

/// SIGTERM to the wrapper `a`: its child hears it (and, trapping it, exits 0), and so does `a`.
fn sigterm_ends_a_cleanly(s: &Scene, a: &mut Wrapper) {
    a.signal(SIGTERM);
    assert_eq!(a.code(SOON), 0, "{}", s.report());
    assert!(s.at("term", "a").is_some(), "{}", s.report());
}

/// A command that is stopped (Ctrl-Z, SIGSTOP) still hears a SIGTERM to the wrapper: it is
/// continued after the signal is forwarded, as systemd does.
#[test]
fn sigterm_reaches_a_stopped_command() {
    let s = Scene::new();
    let mut a = s.candidate("a", STEADY);
    let start = s.await_start("a", SOON);
    send(start.pid, libc::SIGSTOP);
    s.wait("a's command stopped", SOON, || {
        state(start.pid) == Some('T')
    });
    sigterm_ends_a_cleanly(&s, &mut a);
    assert!(s.keys().is_empty(), "keys left:\n{}", s.report());
}

#[test]
fn other_signals_reach_the_leader_child_without_ending_leadership() {
    let s = Scene::new();
    let mut a = s.candidate("a", STEADY);
    s.await_start("a", SOON);
    a.signal(SIGHUP);
    a.signal(SIGUSR1);
    s.wait("the child logs SIGHUP and SIGUSR1", SOON, || {
        s.at("hup", "a").is_some() && s.at("usr1", "a").is_some()
    });
    assert!(a.running() && s.end_of("a").is_none(), "{}", s.report());
    assert_eq!(s.identities(), ["a"]);
    // SIGINT is forwarded too; the child does not trap it and dies of it.
    a.signal(SIGINT);
    assert_eq!(a.code(SOON), 128 + SIGINT, "{}", s.report());
}

/// Runs the wrapper on a new pty, waits for the command's "ready", types a line and Ctrl-C, and prints
/// everything the terminal showed followed by `EXIT <code>`.
const DRIVER: &str = r#"
import os, pty, select, sys, time
argv = sys.argv[1:]
pid, fd = pty.fork()
if pid == 0:
    os.execv(argv[0], argv)
seen = b""
def read_for(seconds, until=None):
    global seen
    deadline = time.time() + seconds
    while time.time() < deadline:
        ready, _, _ = select.select([fd], [], [], max(0, deadline - time.time()))
        if not ready:
            return
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            return
        if not chunk:
            return
        seen += chunk
        if until and until in seen:
            return
read_for(20, b"ready")
os.write(fd, b"hello\n")
read_for(5, b"read:hello")
os.write(fd, b"\x03")
read_for(5)
deadline = time.time() + 10
while True:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        code = os.waitstatus_to_exitcode(status)
        break
    if time.time() > deadline:
        os.killpg(pid, 9)
        os.waitpid(pid, 0)
        code = "timeout (killed)"
        break
    time.sleep(0.02)
sys.stdout.write(seen.decode(errors="replace"))
print("EXIT", code)
"#;

#[test]
fn ctrl_c_in_a_terminal_reaches_the_command_once() {
    let s = Scene::new();
    // Reading the terminal works only if the command owns its foreground (else SIGTTIN stops it).
    let child = "trap 'echo got-int; exit 7' INT; echo ready; read line; echo \"read:$line\"; \
                 while :; do sleep 0.05; done";
    let out = with_default_signals(&mut Command::new("python3"))
        .args(["-c", DRIVER])
        .arg(support::bin())
        .args(["sh", "-c", child])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("ETCD_AWAIT_ELECTION_ENDPOINTS", s.url())
        .env("ETCD_AWAIT_ELECTION_LOCK_NAME", s.lock())
        .env("ETCD_AWAIT_ELECTION_IDENTITY", "tty")
        .output()
        .expect("python3");
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "driver failed: {shown}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        shown.contains("read:hello"),
        "the command could not read the terminal:\n{shown}"
    );
    assert_eq!(
        shown.matches("got-int").count(),
        1,
        "terminal showed:\n{shown}"
    );
    assert!(
        shown.trim_end().ends_with("EXIT 7"),
        "terminal showed:\n{shown}"
    );
}

// ---- the command dies with us ----

#[test]
fn the_child_process_group_dies_with_the_child() {
    let s = Scene::new();
    // The child leaves a background descendant (same process group) behind and exits.
    let script = r#"sh -c 'while :; do sleep 1; done' "$0" & echo $! > "$0/gc.pid"; exit 4"#;
    let args = vec!["sh".into(), "-c".into(), script.into(), s.dir().into()];
    let mut a = s.spawn("a", s.env("a", STEADY), args);
    assert_eq!(a.code(SOON), 4, "{}", s.report());
    let pid: i32 = fs::read_to_string(s.dir().join("gc.pid"))
        .expect("gc.pid")
        .trim()
        .parse()
        .expect("a pid");
    s.wait("the descendant is killed", Duration::from_secs(2), || {
        !alive(pid)
    });
}

#[test]
fn a_killed_leader_leaves_no_orphan_and_is_replaced_only_after_its_lease() {
    let s = Scene::new();
    // `server & wait`: the command's own child runs in its group, which PDEATHSIG does not reach.
    let child = s.child("a", OnTerm::Trap);
    let command = with_descendant(&s, "server", Descendant::InGroup, ["", ""], child);
    let mut a = s.spawn("a", s.env("a", FAST), command);
    let a_start = s.await_start("a", SOON);
    let server = descendant(&s, "server");
    let group = group_of(a_start.pid).expect("a's group");
    assert_eq!(group_of(server), Some(group), "{}", s.report());
    let b_command = checking_first(&s, "server", s.child("b", OnTerm::Trap));
    let mut b = s.spawn("b", s.env("b", FAST), b_command);
    s.await_keys(2, SOON);

    let killed = now_ns();
    a.signal(SIGKILL);
    assert_eq!(a.wait(SOON).signal(), Some(SIGKILL));
    s.wait(
        "a's command, its server and its whole group die with the wrapper",
        Duration::from_secs(2),
        || !alive(a_start.pid) && !alive(server) && !group_alive(group),
    );
    let b_start = s.await_start("b", FAST.lease() + SOON);
    // a's last renewal was at most one keepalive interval (500 ms) before the kill: b may lead
    // only once that lease expired.
    eprintln!("b started {} after the kill", secs(b_start.at - killed));
    let earliest = killed + Duration::from_millis(FAST.lease_s * 1000 - 1000).as_nanos() as Nanos;
    assert!(
        b_start.at >= earliest,
        "b started {} after the kill, before a's lease could expire\n{}",
        secs(b_start.at - killed),
        s.report()
    );
    let seen = fs::read_to_string(s.dir().join("server.at-next-start")).expect("b's check");
    assert_eq!(seen.trim(), "gone", "{}", s.report());
    s.stop("b", 0);
    assert_eq!(b.code(SOON), 0);
}

#[test]
fn a_command_that_sends_sigrtmin_to_its_group_still_dies_with_a_killed_wrapper() {
    let s = Scene::new();
    // The command ignores SIGRTMIN+1 (its server inherits that) and sends it to its own group,
    // which the guardian leads.
    let rt = [
        "trap '' RTMIN+1; ",
        r#"kill -s RTMIN+1 0; echo sent > "$0/rt.sent"; "#,
    ];
    let child = s.child("a", OnTerm::Trap);
    let command = with_descendant(&s, "server", Descendant::InGroup, rt, child);
    let mut a = s.spawn("a", s.env("a", STEADY), command);
    let a_start = s.await_start("a", SOON);
    let server = descendant(&s, "server");
    assert!(s.dir().join("rt.sent").exists(), "{}", s.report());
    let guardian = group_of(a_start.pid).expect("a's group");
    assert_ne!(
        guardian, a_start.pid,
        "the command leads its group: no guardian"
    );
    // The signal was sent before the marks child started (a fork and an exec ago): a guardian
    // it killed is gone by now. (Should it die later, the kill below finds the server alive.)
    assert!(
        alive(guardian) && !a.stderr().contains("guardian was killed"),
        "the guardian {guardian} died of SIGRTMIN+1\n{}",
        s.report()
    );

    a.signal(SIGKILL);
    assert_eq!(a.wait(SOON).signal(), Some(SIGKILL));
    s.wait(
        "a's command and its server die with the wrapper",
        Duration::from_secs(2),
        || !alive(a_start.pid) && !alive(server) && !group_alive(guardian),
    );
}

// ---- a terminal with `stty tostop` ----

/// Plays an interactive shell on a new pty: sets `tostop`, reports it (`tostop=on`), runs
/// `argv` as a job of its own in the terminal's foreground, writes the job's pid to `pidfile`,
/// and exits with its code (128 + N for a signal). The outer process drains the terminal until
/// then and prints what it showed, followed by `EXIT <code>`; after 40 s it kills both and
/// prints `EXIT timeout`. The job's parent is in its session, so its group is not orphaned: a
/// background write with `tostop` stops it (SIGTTOU) unless SIGTTOU is ignored.
const TOSTOP_DRIVER: &str = r#"
import os, pty, select, signal, sys, termios, time
pidfile, argv = sys.argv[1], sys.argv[2:]
pid, fd = pty.fork()
if pid == 0:
    attrs = termios.tcgetattr(0)
    attrs[3] |= termios.TOSTOP
    termios.tcsetattr(0, termios.TCSANOW, attrs)
    on = termios.tcgetattr(0)[3] & termios.TOSTOP
    os.write(1, b"tostop=on\n" if on else b"tostop=off\n")
    job = os.fork()
    if job == 0:
        os.setpgid(0, 0)
        signal.signal(signal.SIGTTOU, signal.SIG_IGN)
        os.tcsetpgrp(0, os.getpgrp())
        signal.signal(signal.SIGTTOU, signal.SIG_DFL)
        os.execv(argv[0], argv)
    with open(pidfile + ".tmp", "w") as f:
        f.write(str(job))
    os.rename(pidfile + ".tmp", pidfile)
    _, status = os.waitpid(job, 0)
    code = os.waitstatus_to_exitcode(status)
    os._exit(code if code >= 0 else 128 - code)
seen = b""
deadline = time.time() + 40
code = None
while code is None and time.time() < deadline:
    ready, _, _ = select.select([fd], [], [], 0.05)
    if ready:
        try:
            seen += os.read(fd, 65536)
        except OSError:
            pass
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        code = os.waitstatus_to_exitcode(status)
if code is None:
    try:
        os.kill(int(open(pidfile).read()), signal.SIGKILL)
    except Exception:
        pass
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    code = "timeout"
sys.stdout.write(seen.decode(errors="replace"))
print("EXIT", code)
"#;

/// SIGKILLs the process `pid` on drop if it still runs (a wrapper started by another program).
struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if alive(self.0) {
            send(self.0, SIGKILL);
        }
    }
}

/// Waits for the file `path` to hold a pid, and returns it.
fn pid_in(s: &Scene, path: &std::path::Path) -> i32 {
    let read = || fs::read_to_string(path).ok()?.trim().parse().ok();
    s.wait(&format!("a pid in {path:?}"), SOON, || read().is_some());
    read().expect("just seen")
}

/// Samples the state of `pid` every 20 ms until `done` (or `timeout`: a panic); returns every
/// state letter seen.
fn states_until(
    s: &Scene,
    pid: i32,
    what: &str,
    timeout: Duration,
    mut done: impl FnMut() -> bool,
) -> String {
    let mut seen = String::new();
    s.wait(what, timeout, || {
        if let Some(state) = state(pid) {
            if !seen.contains(state) {
                seen.push(state);
            }
        }
        done()
    });
    seen
}

#[test]
fn a_wrapper_behind_its_command_on_a_tostop_terminal_keeps_renewing_and_meets_its_deadline() {
    let t = FAST;
    let s = Scene::new();
    let pidfile = s.dir().join("wrapper.pid");
    let driver = with_default_signals(&mut Command::new("python3"))
        .args(["-c", TOSTOP_DRIVER])
        .arg(&pidfile)
        .arg(support::bin())
        .args(s.child("a", OnTerm::Trap))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(s.env("a", t).vars().iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    let wrapper = pid_in(&s, &pidfile);
    let _kill = KillOnDrop(wrapper);
    let start = s.await_start("a", SOON);

    // The command owns the terminal's foreground; the wrapper writes its log lines from the
    // background ("child started" was the first).
    let command_group = group_of(start.pid).expect("the command's group");
    assert_eq!(terminal_foreground_of(wrapper), Some(command_group));
    assert_ne!(group_of(wrapper), Some(command_group));

    // Renewing: the lease granted before the start outlives LEASE_DURATION only if renewed.
    let renewed_until = start.at + t.lease_ns() + 1_000_000_000;
    let steady = states_until(&s, wrapper, "LEASE_DURATION + 1 s", SOON, || {
        now_ns() >= renewed_until
    });
    assert!(
        !steady.contains('T'),
        "the wrapper was stopped (states {steady})\n{}",
        s.report()
    );
    assert_eq!(s.identities(), ["a"], "{}", s.report());
    assert!(alive(start.pid), "{}", s.report());

    // etcd freezes: the renewals fail (more lines from the background) and the deadline stops
    // the command before the lease could expire.
    let before_freeze = now_ns();
    s.etcd().freeze();
    let stopping = states_until(&s, wrapper, "the command ends", t.lease() + SOON, || {
        s.end_of("a").is_some()
    });
    let end = s.end_of("a").expect("just seen");
    s.etcd().resume();
    eprintln!(
        "the command ended {} after the freeze",
        secs(end - before_freeze)
    );
    let out = driver.wait_with_output().expect("the driver");
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        !stopping.contains('T'),
        "the wrapper was stopped (states {stopping}); terminal:\n{shown}\n{}",
        s.report()
    );
    assert!(
        end < before_freeze + t.lease_ns(),
        "the command ended {} after the freeze, not before LEASE_DURATION\n{}",
        secs(end - before_freeze),
        s.report()
    );
    assert!(s.at("term", "a").is_some(), "{}", s.report());
    assert!(
        shown.contains("tostop=on") && shown.contains("child started"),
        "terminal showed:\n{shown}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        shown.contains("renew deadline passed"),
        "terminal showed:\n{shown}"
    );
    assert!(
        shown.trim_end().ends_with("EXIT 75"),
        "terminal showed:\n{shown}"
    );
}

// ---- descendants: in the group, and escaped from it with setsid ----

/// A descendant the command leaves running: it ignores SIGTERM, writes its pid to `DIR/TAG.pid`
/// and loops (`sh -c DESCENDANT DIR TAG`: its command line names DIR, so that the scene's
/// cleanup finds it should a test fail).
const DESCENDANT: &str = r#"trap '' TERM
echo $$ > "$0/$1.pid.tmp"; mv "$0/$1.pid.tmp" "$0/$1.pid"
while :; do sleep 1; done"#;

/// Where a command's descendant runs.
#[derive(Clone, Copy, Debug)]
enum Descendant {
    /// In the command's process group (`server & wait`).
    InGroup,
    /// In a session and process group of its own (`setsid server &`).
    Setsid,
}

/// A command that runs the shell `before`, starts a [`DESCENDANT`] tagged `tag`, runs the shell
/// `after`, and becomes the marks child `child` (the descendant is its child).
fn with_descendant(
    s: &Scene,
    tag: &str,
    how: Descendant,
    [before, after]: [&str; 2],
    child: Vec<OsString>,
) -> Vec<OsString> {
    let start = match how {
        Descendant::InGroup => "sh",
        Descendant::Setsid => "setsid sh",
    };
    let script = format!(r#"{before}{start} -c "$1" "$0" "$2" & {after}shift 2; exec "$@""#);
    let args: Vec<OsString> = vec![s.dir().into(), DESCENDANT.into(), tag.into()];
    [sh(&script), args, child].concat()
}

/// Waits for the descendant `tag` to run and returns its pid.
fn descendant(s: &Scene, tag: &str) -> i32 {
    pid_in(s, &s.dir().join(format!("{tag}.pid")))
}

/// Starts the leader `a` (timings `t`) whose command leaves a setsid'd [`DESCENDANT`] `gc`
/// behind and becomes a marks child reacting to SIGTERM as `on_term`; returns the wrapper, the
/// command's start and the descendant's pid, once it runs in a session of its own.
fn leader_with_setsid_descendant(s: &Scene, t: Timings, on_term: OnTerm) -> (Wrapper, Start, i32) {
    let child = s.child("a", on_term);
    let command = with_descendant(s, "gc", Descendant::Setsid, ["", ""], child);
    let a = s.spawn("a", s.env("a", t), command);
    let start = s.await_start("a", SOON);
    let gc = descendant(s, "gc");
    assert_eq!(session_of(gc), Some(gc), "{}", s.report());
    assert_ne!(group_of(gc), group_of(start.pid), "{}", s.report());
    (a, start, gc)
}

/// The shell test a next leader's command runs first: it writes the state of the process in
/// `DIR/TAG.pid` (`gone` when there is none) to `DIR/TAG.at-next-start`, then becomes `child`.
fn checking_first(s: &Scene, tag: &str, child: Vec<OsString>) -> Vec<OsString> {
    let script = r#"p=$(cat "$0/$1.pid"); st=gone
if [ -r "/proc/$p/stat" ]; then st=$(sed 's/.*) //' "/proc/$p/stat" | cut -c1); fi
echo "$st" > "$0/$1.at-next-start"; shift; exec "$@""#;
    let args: Vec<OsString> = vec![s.dir().into(), tag.into()];
    [sh(script), args, child].concat()
}

#[test]
fn a_setsid_descendant_is_dead_before_the_lease_is_revoked_when_the_command_exits() {
    let s = Scene::new();
    let (mut a, _, gc) = leader_with_setsid_descendant(&s, STEADY, OnTerm::Trap);
    let b_command = checking_first(&s, "gc", s.child("b", OnTerm::Trap));
    let mut b = s.spawn("b", s.env("b", STEADY), b_command);
    s.await_queued(&b, SOON);

    // a's command exits: its group is killed, the escaped descendant too, then the lease goes
    // and b leads at once (far below the 15 s lease).
    s.stop("a", 0);
    assert_eq!(a.code(SOON), 0, "{}", s.report());
    assert!(!alive(gc), "the setsid'd descendant outlived its wrapper");
    s.await_start("b", Duration::from_secs(5));
    let seen = fs::read_to_string(s.dir().join("gc.at-next-start")).expect("b's check");
    assert_eq!(
        seen.trim(),
        "gone",
        "a's setsid'd descendant still existed when b's command started\n{}",
        s.report()
    );
    s.stop("b", 0);
    assert_eq!(b.code(SOON), 0);
}

#[test]
fn a_setsid_descendant_that_ignores_sigterm_is_dead_before_the_lease_could_expire() {
    let t = FAST;
    let s = Scene::new();
    let (mut a, a_start, gc) = leader_with_setsid_descendant(&s, t, OnTerm::Ignore);

    // etcd freezes: at the renew deadline SIGTERM (ignored by both), at the kill point SIGKILL,
    // which must reach the descendant outside the group as well.
    let before_freeze = now_ns();
    s.etcd().freeze();
    s.wait("the descendant dies", t.lease() + SOON, || !alive(gc));
    let dead = now_ns();
    s.etcd().resume();
    eprintln!(
        "the descendant was dead {} after the freeze",
        secs(dead - before_freeze)
    );
    assert!(
        dead < before_freeze + t.lease_ns(),
        "the setsid'd descendant died {} after the freeze, not before LEASE_DURATION\n{}",
        secs(dead - before_freeze),
        s.report()
    );
    assert!(s.at("term", "a").is_some(), "{}", s.report());
    assert!(!alive(a_start.pid), "{}", s.report());
    assert_eq!(a.code(SOON), 75, "{}", s.report());
}

#[test]
fn a_setsid_descendant_dies_with_the_command_when_the_key_is_deleted() {
    let s = Scene::new();
    let (mut a, a_start, gc) = leader_with_setsid_descendant(&s, STEADY, OnTerm::Ignore);

    // Another leader may start at once: the whole tree gets SIGKILL at once.
    let deleted = now_ns();
    s.etcd()
        .etcdctl_ok(&["del", "--prefix", &format!("{}/", s.lock())]);
    s.wait("the descendant dies", Duration::from_secs(5), || !alive(gc));
    eprintln!(
        "the descendant died within {} of the delete",
        secs(now_ns() - deleted)
    );
    assert_eq!(a.code(SOON), 75, "{}", s.report());
    assert!(!alive(a_start.pid), "{}", s.report());
}

// ---- the last moment before the spawn ----

/// Runs the wrapper under strace, which holds every `getppid` system call for 3 s. The only
/// `getppid` the wrapper makes is its command's clone checking its parent, between the clone
/// and the exec (after the last check of the supervisor): a signal sent meanwhile arrives
/// between "leading" and the start of the command, deterministically. SIGTERM is ignored on
/// entry, so a command that starts anyway survives the forwarded SIGTERM and leaves its mark.
fn held_before_the_exec() -> Vec<OsString> {
    let launcher = r#"trap '' TERM; exec "$@""#;
    let strace = "strace -f -qq --seccomp-bpf -o /dev/null -e trace=getppid \
                  -e inject=getppid:delay_enter=3000000";
    [
        sh(launcher),
        vec!["sh".into()],
        strace.split_whitespace().map(OsString::from).collect(),
    ]
    .concat()
}

#[test]
fn a_sigterm_between_leading_and_the_spawn_never_starts_the_command() {
    let s = Scene::new();
    let mut a = s.candidate("a", STEADY);
    s.await_start("a", SOON);
    let b_env = s.env("b", STEADY);
    let mut b = s.spawn_under(
        "b",
        b_env,
        &held_before_the_exec(),
        s.child("b", OnTerm::Trap),
    );
    s.await_queued(&b, SOON);
    let traced = children_of(b.pid());
    let [wrapper] = traced[..] else {
        panic!("strace runs {traced:?}, not one wrapper\n{}", s.report());
    };
    let _kill = KillOnDrop(wrapper);

    // a leaves; b logs "leading" (after its last check) and its command's clone is held.
    s.stop("a", 0);
    assert_eq!(a.code(SOON), 0, "{}", s.report());
    s.wait("b leads", SOON, || b.stderr().contains(" leading "));
    send(wrapper, SIGTERM);
    let sent = now_ns();
    let status = b.wait_up_to(SOON);
    eprintln!("b exited {} after the SIGTERM", secs(now_ns() - sent));
    assert!(
        s.start_of("b").is_none(),
        "b's command started after the SIGTERM\n{}",
        s.report()
    );
    let status = status.unwrap_or_else(|| panic!("b did not exit\n{}", s.report()));
    assert_eq!(status.code(), Some(128 + SIGTERM), "{}", s.report());
    assert!(!b.stderr().contains("child started"), "{}", s.report());
    assert!(
        s.keys().is_empty(),
        "b's lease was not revoked\n{}",
        s.report()
    );
}
