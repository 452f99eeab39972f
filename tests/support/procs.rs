//! Processes by pid: signals, and whether a process or a process group still runs, read from
//! `/proc`. Rule: a zombie counts as gone (it runs nothing).
#![allow(dead_code)]

use std::fs;

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

/// The process group of `pid`, while it runs (a command's group is its guardian's, not its own).
pub fn pgid_of(pid: i32) -> Option<i32> {
    let fields = stat_fields(&format!("/proc/{pid}/stat"))?;
    fields.get(2)?.parse().ok()
}

/// The state letter of `pid` (`R`, `S`, `D`, `T` stopped, `Z`, …), while it exists.
pub fn state_of(pid: i32) -> Option<char> {
    stat_fields(&format!("/proc/{pid}/stat"))?
        .first()?
        .chars()
        .next()
}
