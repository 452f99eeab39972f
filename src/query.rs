//! The `leader` subcommand: asks etcd who leads the election and prints it, for operators of
//! images that have no etcdctl. Exit 0 when someone leads, 3 when nobody does; `--watch` prints one
//! line per change until interrupted.

use std::io::Write;

use crate::config::LeaderQuery;
use crate::election::{self, LeaderInfo};
use crate::etcd::{self, Client};

/// The exit code when nobody leads.
pub const NOBODY: i32 = 3;

/// Runs the query on `client` for `lock`; the exit code, or an etcd error.
pub fn run(
    client: &Client,
    lock: &str,
    retry: std::time::Duration,
    query: LeaderQuery,
) -> Result<i32, etcd::Error> {
    let print = |info: Option<&LeaderInfo>| {
        let line = match query.json {
            true => json_line(info),
            false => text_line(info),
        };
        let mut out = std::io::stdout().lock();
        // A closed stdout is no reason to panic (or to stop watching).
        let _ = out.write_all(line.as_bytes()).and_then(|()| out.flush());
    };
    if query.watch {
        election::watch_leader(client, lock, retry, print)?;
        return Ok(0);
    }
    let (info, _) = election::leader_info(client, lock)?;
    print(info.as_ref());
    Ok(if info.is_some() { 0 } else { NOBODY })
}

/// `identity=pod-0 key=jobs/694d8a2c1f3b0c05 revision=12`, or `no leader`; values with spaces or
/// quotes are quoted.
fn text_line(info: Option<&LeaderInfo>) -> String {
    match info {
        None => "no leader\n".to_string(),
        Some(info) => format!(
            "identity={} key={} revision={}\n",
            quoted(&info.identity),
            quoted(&info.key),
            info.revision
        ),
    }
}

fn quoted(value: &str) -> String {
    let plain = !value.is_empty()
        && value
            .chars()
            .all(|c| !c.is_whitespace() && c != '"' && c != '=' && !c.is_control());
    if plain {
        value.to_string()
    } else {
        format!("{value:?}")
    }
}

/// `{"identity":"pod-0","key":"jobs/…","revision":12}`; nobody: every field null.
fn json_line(info: Option<&LeaderInfo>) -> String {
    let value = match info {
        Some(info) => serde_json::json!({
            "identity": info.identity,
            "key": info.key,
            "revision": info.revision,
        }),
        None => serde_json::json!({ "identity": null, "key": null, "revision": null }),
    };
    format!("{value}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_name_the_leader_or_nobody() {
        let info = LeaderInfo {
            identity: "pod 0".into(),
            key: "jobs/1f".into(),
            revision: 12,
        };
        assert_eq!(
            text_line(Some(&info)),
            "identity=\"pod 0\" key=jobs/1f revision=12\n"
        );
        assert_eq!(text_line(None), "no leader\n");
        assert_eq!(
            json_line(Some(&info)),
            "{\"identity\":\"pod 0\",\"key\":\"jobs/1f\",\"revision\":12}\n"
        );
        assert_eq!(
            json_line(None),
            "{\"identity\":null,\"key\":null,\"revision\":null}\n"
        );
    }
}
