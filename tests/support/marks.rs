//! The command the wrapper tests run, and the log of marks it leaves: the only record of when a
//! command ran.
//!
//! [`child`] is `sh -c CHILD sh DIR NAME MODE`. The child writes its pid to `DIR/NAME.pid` and
//! appends one line per event to the log `DIR/log`, shared by every child of a test:
//!
//! - `start NAME NANOS PID KEY REVISION LEASE_ID` (the election variables it was given, empty in
//!   disabled mode),
//! - `group NAME NANOS PGID` right after: its process group (the guardian's, not its own pid),
//! - `term NAME NANOS` when SIGTERM arrives (modes [`OnTerm::Trap`] and [`OnTerm::Ignore`]),
//!   `hup NAME NANOS` and `usr1 NAME NANOS` for SIGHUP and SIGUSR1 ([`OnTerm::Trap`] only),
//! - `end NAME NANOS` when it exits by itself: the code written to `DIR/NAME.stop` appeared, or
//!   [`OnTerm::Trap`] caught SIGTERM (then it exits 0).
//!
//! NANOS is `date +%s%N`, the wall clock [`now_ns`] reads. A child killed by a signal leaves no
//! `end`. Rule: every check here is a pure function of the log's text ([`Marks::parse`]), so the
//! harness's own tests can feed it made-up logs.
#![allow(dead_code)]

use std::ffi::OsString;
use std::fs;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// Nanoseconds since the Unix epoch (signed, so that differences may be negative).
pub type Nanos = i128;

/// The child's script; see the module docs. `sleep` runs in the child's process group. Its traps
/// are set before its `start` mark: a test that signals it on seeing the mark finds them there.
const CHILD: &str = r#"d=$1 n=$2
now() { date +%s%N; }
case "$3" in
trap)
  trap 'echo "term $n $(now)" >> "$d/log"; echo "end $n $(now)" >> "$d/log"; exit 0' TERM
  trap 'echo "hup $n $(now)" >> "$d/log"' HUP
  trap 'echo "usr1 $n $(now)" >> "$d/log"' USR1 ;;
ignore)
  trap 'echo "term $n $(now)" >> "$d/log"' TERM ;;
esac
echo $$ > "$d/$n.pid"
echo "start $n $(now) $$ ${ETCD_AWAIT_ELECTION_LEADER_KEY-} ${ETCD_AWAIT_ELECTION_LEADER_REVISION-} ${ETCD_AWAIT_ELECTION_LEADER_LEASE_ID-}" >> "$d/log"
read -r _ _ _ _ pg _ < /proc/$$/stat && echo "group $n $(now) $pg" >> "$d/log"
while [ ! -e "$d/$n.stop" ]; do sleep 0.05; done
echo "end $n $(now)" >> "$d/log"
exit "$(cat "$d/$n.stop")"
"#;

/// How the child reacts to SIGTERM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnTerm {
    /// Marks `term` and `end` and exits 0; marks SIGHUP and SIGUSR1 and carries on.
    Trap,
    /// Marks `term` and carries on until its stop file or SIGKILL.
    Ignore,
    /// Dies of it (and of SIGHUP, SIGINT, SIGUSR1), leaving no `end`.
    Die,
}

/// The command line of the child `name` logging into `dir`.
pub fn child(dir: &Path, name: &str, on_term: OnTerm) -> Vec<OsString> {
    let mode = match on_term {
        OnTerm::Trap => "trap",
        OnTerm::Ignore => "ignore",
        OnTerm::Die => "die",
    };
    let args: [OsString; 7] = [
        "sh".into(),
        "-c".into(),
        CHILD.into(),
        "sh".into(),
        dir.into(),
        name.into(),
        mode.into(),
    ];
    args.into()
}

/// Makes the child `name` in `dir` exit with `code` (the stop file is written atomically).
pub fn stop(dir: &Path, name: &str, code: i32) {
    let tmp = dir.join(format!("{name}.stop.tmp"));
    fs::write(&tmp, code.to_string()).expect("write the stop file");
    fs::rename(&tmp, dir.join(format!("{name}.stop"))).expect("rename the stop file");
}

/// Wall-clock nanoseconds since the epoch, the clock of the children's `date +%s%N`.
pub fn now_ns() -> Nanos {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos() as Nanos
}

/// `nanos` as seconds with milliseconds, for messages.
pub fn secs(nanos: Nanos) -> String {
    format!("{:.3}s", nanos as f64 / 1e9)
}

/// One line of the log.
#[derive(Clone, Debug)]
pub struct Mark {
    pub kind: String,
    pub name: String,
    pub at: Nanos,
    /// The words after NANOS (a `start`'s pid, key, revision and lease).
    pub rest: Vec<String>,
}

/// A `start` line.
#[derive(Clone, Debug)]
pub struct Start {
    pub at: Nanos,
    pub pid: i32,
    pub key: String,
    pub revision: i64,
    pub lease_hex: String,
}

/// The log's complete lines, in order.
#[derive(Clone, Debug, Default)]
pub struct Marks(pub Vec<Mark>);

impl Marks {
    /// Reads `DIR/log` (missing: no marks).
    pub fn read(dir: &Path) -> Marks {
        Marks::parse(&fs::read_to_string(dir.join("log")).unwrap_or_default())
    }

    /// Parses a log; a line without its newline (still being written) or malformed is skipped.
    pub fn parse(text: &str) -> Marks {
        let marks = text
            .split_inclusive('\n')
            .filter(|line| line.ends_with('\n'))
            .filter_map(|line| {
                let mut words = line.split_whitespace();
                let kind = words.next()?.to_string();
                let name = words.next()?.to_string();
                let at = words.next()?.parse().ok()?;
                let rest = words.map(str::to_string).collect();
                Some(Mark {
                    kind,
                    name,
                    at,
                    rest,
                })
            })
            .collect();
        Marks(marks)
    }

    /// When `name` first marked `kind`.
    pub fn at(&self, kind: &str, name: &str) -> Option<Nanos> {
        self.all(kind, name).first().copied()
    }

    /// Every time `name` marked `kind`.
    pub fn all(&self, kind: &str, name: &str) -> Vec<Nanos> {
        self.0
            .iter()
            .filter(|m| m.kind == kind && m.name == name)
            .map(|m| m.at)
            .collect()
    }

    /// The first start of `name`.
    pub fn start_of(&self, name: &str) -> Option<Start> {
        let mark = self
            .0
            .iter()
            .find(|m| m.kind == "start" && m.name == name)?;
        let word = |i: usize| mark.rest.get(i).cloned().unwrap_or_default();
        Some(Start {
            at: mark.at,
            pid: word(0).parse().unwrap_or(0),
            key: word(1),
            revision: word(2).parse().unwrap_or(0),
            lease_hex: word(3),
        })
    }

    /// The process group the first run of `name` started in.
    pub fn group_of(&self, name: &str) -> Option<i32> {
        let mark = self
            .0
            .iter()
            .find(|m| m.kind == "group" && m.name == name)?;
        mark.rest.first()?.parse().ok()
    }

    /// The first end of `name`.
    pub fn end_of(&self, name: &str) -> Option<Nanos> {
        self.at("end", name)
    }

    /// The runs of the children `only` names (every child: `None`), sorted by start: (start, end
    /// if it ended, name). Err when one of them started or ended twice, or ended before its start.
    fn runs(&self, only: Option<&[&str]>) -> Result<Vec<Run<'_>>, String> {
        let mut runs = Vec::new();
        let starts = self.0.iter().filter(|m| m.kind == "start");
        for start in starts.filter(|m| only.is_none_or(|names| names.contains(&m.name.as_str()))) {
            let name = start.name.as_str();
            let (starts, ends) = (self.all("start", name), self.all("end", name));
            if starts.len() > 1 || ends.len() > 1 {
                return Err(format!("{name} started {starts:?} and ended {ends:?}"));
            }
            match ends.first() {
                Some(&end) if end < start.at => {
                    return Err(format!("{name} ended before it started"))
                }
                end => runs.push((start.at, end.copied(), name)),
            }
        }
        runs.sort();
        Ok(runs)
    }

    /// Ok when no two of the children ran at once: sorted by start, each ended before the next
    /// started (only the last may still run), and none started or ended twice.
    pub fn check_no_overlap(&self) -> Result<(), String> {
        no_overlap(&self.runs(None)?)
    }

    /// Ok when the children `order` ran in that order, each one ended (the last one too) before
    /// the next started. Other children in the log are not looked at (a preempted one, say).
    pub fn check_one_at_a_time(&self, order: &[&str]) -> Result<(), String> {
        let runs = self.runs(Some(order))?;
        let names: Vec<&str> = runs.iter().map(|(_, _, name)| *name).collect();
        if names != order {
            return Err(format!("the children started as {names:?}, not {order:?}"));
        }
        if let Some((_, _, name)) = runs.iter().find(|(_, end, _)| end.is_none()) {
            return Err(format!("{name} never ended"));
        }
        no_overlap(&runs)
    }
}

/// One child's run: (start, end if it ended, name).
type Run<'a> = (Nanos, Option<Nanos>, &'a str);

/// Ok when each run of `runs` (sorted by start) ended before the next one started.
fn no_overlap(runs: &[Run]) -> Result<(), String> {
    for pair in runs.windows(2) {
        let ((_, end, name), (next_start, _, next)) = (pair[0], pair[1]);
        match end {
            Some(end) if end < next_start => {}
            Some(end) => {
                return Err(format!(
                    "{name} ended {} after {next} started",
                    secs(end - next_start)
                ))
            }
            None => return Err(format!("{name} never ended, {next} started")),
        }
    }
    Ok(())
}

// ---- commands run more than once by one wrapper (RECAMPAIGN) ----

/// The command line of a child that a wrapper may run more than once: each run is the child
/// `NAME-REVISION`, after the create revision of the key it leads with (every campaign has a new
/// key), so that the log tells the runs apart and [`Marks::check_no_overlap`] still applies.
pub fn child_per_run(dir: &Path, name: &str, on_term: OnTerm) -> Vec<OsString> {
    let run = r#"exec sh -c "$1" sh "$2" "$3-${ETCD_AWAIT_ELECTION_LEADER_REVISION-}" "$4""#;
    let mode = child(dir, name, on_term)
        .pop()
        .expect("a child's last argument is its mode");
    let args: [OsString; 8] = [
        "sh".into(),
        "-c".into(),
        run.into(),
        "sh".into(),
        CHILD.into(),
        dir.into(),
        name.into(),
        mode,
    ];
    args.into()
}

impl Marks {
    /// The runs of [`child_per_run`] `name` (`NAME-REVISION`), in the order they started.
    pub fn runs_of(&self, name: &str) -> Vec<String> {
        let prefix = format!("{name}-");
        self.0
            .iter()
            .filter(|m| m.kind == "start" && m.name.starts_with(&prefix))
            .map(|m| m.name.clone())
            .collect()
    }

    /// The most children that ran at once (one still running counts until the end of the log).
    pub fn most_at_once(&self) -> usize {
        let mut edges: Vec<(Nanos, i32)> = Vec::new();
        for start in self.0.iter().filter(|m| m.kind == "start") {
            edges.push((start.at, 1));
            if let Some(end) = self.end_of(&start.name) {
                edges.push((end, -1));
            }
        }
        // At one instant an end comes before a start: a handover is not an overlap.
        edges.sort();
        let (mut now, mut most) = (0i32, 0i32);
        for (_, step) in edges {
            now += step;
            most = most.max(now);
        }
        usize::try_from(most).unwrap_or(0)
    }
}
