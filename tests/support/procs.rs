//! Processes by pid: signals, and what `/proc` says of them (whether a process or a process group
//! still runs, its state, group, session, terminal foreground and children). Rule: a zombie
//! counts as gone (it runs nothing).
#![allow(dead_code)]

use std::fs;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Starts `command` with every signal at its default disposition, whatever the suite inherited:
/// a suite run under `nohup`, or as a background job of a non-interactive shell, has SIGHUP, or
/// SIGINT and SIGQUIT, ignored; the wrapper hands ignored signals on to its command, as `execve`
/// does (README, *The command*), and a shell cannot trap a signal ignored at its start. The
/// signal mask is std's business: it empties it in every child.
pub fn with_default_signals(command: &mut Command) -> &mut Command {
    // SAFETY: the closure runs in the child between fork and exec and calls only signal(2), which
    // is async-signal-safe; SIGKILL and SIGSTOP, which cannot be changed, are skipped.
    unsafe {
        command.pre_exec(|| {
            for signal in 1..libc::SIGRTMIN() {
                if signal != libc::SIGKILL && signal != libc::SIGSTOP {
                    libc::signal(signal, libc::SIG_DFL);
                }
            }
            Ok(())
        })
    }
}

/// Sends `signal` to `pid` (a negative pid names a process group).
pub fn send(pid: i32, signal: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(pid, signal);
    }
}

/// Whether `pid` runs (a zombie counts as gone).
pub fn alive(pid: i32) -> bool {
    stat_fields(&format!("/proc/{pid}/stat")).is_some_and(|fields| !is_dead(&fields))
}

/// Whether any process of process group `pgid` runs (zombies do not count).
pub fn group_alive(pgid: i32) -> bool {
    let Ok(entries) = fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|entry| {
        let stat = entry.path().join("stat");
        stat_fields(&stat.to_string_lossy()).is_some_and(|fields| {
            !is_dead(&fields) && fields.get(2).and_then(|g| g.parse().ok()) == Some(pgid)
        })
    })
}

/// The fields of `/proc/PID/stat` after `(comm)`: state, ppid, pgrp, … (comm may hold spaces).
fn stat_fields(path: &str) -> Option<Vec<String>> {
    let stat = fs::read_to_string(path).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_string).collect())
}

fn is_dead(fields: &[String]) -> bool {
    matches!(fields.first().map(String::as_str), None | Some("Z" | "X"))
}

/// The state letter of `pid` (`R`, `S`, `T` stopped, `Z`, …), if it exists.
pub fn state(pid: i32) -> Option<char> {
    stat_fields(&format!("/proc/{pid}/stat"))?
        .first()?
        .chars()
        .next()
}

/// The process group of `pid`, if it exists.
pub fn group_of(pid: i32) -> Option<i32> {
    stat_field(pid, 2)
}

/// The session of `pid`, if it exists.
pub fn session_of(pid: i32) -> Option<i32> {
    stat_field(pid, 3)
}

/// The foreground process group of `pid`'s controlling terminal (`tpgid`; -1 without one).
pub fn terminal_foreground_of(pid: i32) -> Option<i32> {
    stat_field(pid, 5)
}

/// The children of `pid` (of every thread of it).
pub fn children_of(pid: i32) -> Vec<i32> {
    let tasks = fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten();
    tasks
        .flatten()
        .filter_map(|task| fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|text| {
            text.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect()
}

/// Field `index` (0: state) after `(comm)` of `pid`'s stat, as a number.
fn stat_field(pid: i32, index: usize) -> Option<i32> {
    stat_fields(&format!("/proc/{pid}/stat"))?
        .get(index)?
        .parse()
        .ok()
}

/// A number from `/proc/PID/status` (`Threads`; `VmRSS`, `VmHWM` in kB); `None` once it is gone.
pub fn status_field(pid: i32, field: &str) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let prefix = format!("{field}:");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|value| value.split_whitespace().next())
        .and_then(|value| value.parse().ok())
}
