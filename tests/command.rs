//! README "The command", "Signals" and "Exit codes": the command's exit status becomes ours, an
//! unrunnable command exits 127 or 126, signals are forwarded while it runs and make a waiter
//! leave, the command's process group dies with it and with us, and on a terminal Ctrl-C reaches
//! the command once. ("PID 1 and reaping" needs a PID namespace: `scripts/static-checks.sh` runs
//! it under `unshare`.) The command's election variables are checked where it first leads, in
//! `tests/election.rs`.
//!
//! Run: `cargo test --test command -- --test-threads=2`. The terminal test drives a pty of its own
//! through Python's `pty` module in a child process (this process's terminal is not touched), so
//! it needs no binary of its own.

mod support;

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::time::Duration;

use libc::{SIGHUP, SIGINT, SIGKILL, SIGTERM, SIGUSR1};
use support::env::{sh, Env, FAST, STEADY};
use support::marks::{now_ns, secs, Nanos, OnTerm};
use support::procs::alive;
use support::wrapper::{Scene, SOON};

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
    a.signal(SIGTERM);
    assert_eq!(a.code(SOON), 0, "{}", s.report());
    assert!(s.at("term", "a").is_some(), "{}", s.report());
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
    let out = Command::new("python3")
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
    let mut a = s.candidate("a", FAST);
    let a_start = s.await_start("a", SOON);
    let mut b = s.candidate("b", FAST);
    s.await_keys(2, SOON);

    let killed = now_ns();
    a.signal(SIGKILL);
    assert_eq!(a.wait(SOON).signal(), Some(SIGKILL));
    s.wait(
        "a's child dies with its wrapper",
        Duration::from_secs(2),
        || !alive(a_start.pid),
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
    s.stop("b", 0);
    assert_eq!(b.code(SOON), 0);
}
