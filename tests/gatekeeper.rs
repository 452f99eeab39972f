//! The gatekeeper end to end: the built `etcd-await-election` binary against real etcd members
//! (`tests/support`).
//!
//! Each test owns a [`Scene`]: its own etcd, its own lock name and its own temp directory. Wrappers
//! ([`Instance`]) are spawned with a cleared environment (PATH plus only the variables the test
//! sets). Their children are small `sh` scripts ([`CHILD`]) that append `start`, `term` and `end`
//! lines with nanosecond wall-clock timestamps to `<dir>/log`, and exit when the test writes
//! `<dir>/<name>.stop`. Tests synchronise by polling that log and etcd with deadlines, never by
//! sleeping, except where the assertion is that nothing happens for a while (said where it is done).
//! Every wrapper is SIGKILLed when its guard drops; stray children are killed with the scene.
//!
//! Run: `cargo test --test gatekeeper -- --test-threads=2`.

mod support;

use std::ffi::OsString;
use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use libc::{SIGCONT, SIGHUP, SIGINT, SIGKILL, SIGSTOP, SIGTERM, SIGUSR1};
use support::{bin, unique_name, Etcd};

// ---------------------------------------------------------------------------
// Timings and constants
// ---------------------------------------------------------------------------

/// Generous bound for anything that should happen "soon" on a loaded 2-core box.
const SOON: Duration = Duration::from_secs(15);

/// The wrapper's election timings.
#[derive(Clone, Copy, Debug)]
struct Timings {
    /// LEASE_DURATION in whole seconds.
    lease: u64,
    renew: &'static str,
    retry: &'static str,
}

/// Lease expiry is part of the test: a short lease.
const QUICK: Timings = Timings {
    lease: 3,
    renew: "2",
    retry: "500ms",
};

/// Handover must come from resignation, never from expiry: a lease far longer than any deadline
/// the test waits for, so a quick takeover proves the old leader let go.
const STEADY: Timings = Timings {
    lease: 15,
    renew: "2",
    retry: "500ms",
};

/// The child every election test runs, as `sh -c CHILD sh DIR NAME MODE`.
///
/// Writes its pid to `DIR/NAME.pid`, logs `start NAME NANOS PID KEY REVISION LEASE_ID` to `DIR/log`,
/// and with MODE `trap` logs `term` and `end` on SIGTERM and exits 0, and logs `hup`/`usr1` on
/// SIGHUP/SIGUSR1 and carries on (MODE `notrap`: those signals kill it). It exits with the code written to `DIR/NAME.stop` once that file appears, logging `end`.
const CHILD: &str = r#"d=$1 n=$2
now() { date +%s%N; }
echo $$ > "$d/$n.pid"
echo "start $n $(now) $$ ${ETCD_AWAIT_ELECTION_LEADER_KEY-} ${ETCD_AWAIT_ELECTION_LEADER_REVISION-} ${ETCD_AWAIT_ELECTION_LEADER_LEASE_ID-}" >> "$d/log"
if [ "$3" = trap ]; then
  trap 'echo "term $n $(now)" >> "$d/log"; echo "end $n $(now)" >> "$d/log"; exit 0' TERM
  trap 'echo "hup $n $(now)" >> "$d/log"' HUP
  trap 'echo "usr1 $n $(now)" >> "$d/log"' USR1
fi
while [ ! -e "$d/$n.stop" ]; do sleep 0.05; done
echo "end $n $(now)" >> "$d/log"
exit "$(cat "$d/$n.stop")"
"#;

/// How a [`CHILD`] reacts to SIGTERM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OnTerm {
    /// Traps it, logs `term` and `end`, exits 0 (and logs SIGHUP/SIGUSR1 without exiting).
    Trap,
    /// Dies of it (the wrapper then reports 143).
    Die,
}

/// Nanoseconds since the Unix epoch, the clock the children's `date +%s%N` uses.
type Nanos = u128;

fn now_ns() -> Nanos {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos()
}

fn secs(ns: Nanos) -> f64 {
    ns as f64 / 1e9
}

fn var(suffix: &str) -> String {
    format!("ETCD_AWAIT_ELECTION_{suffix}")
}

/// `sh -c SCRIPT` as a command line.
fn sh(script: &str) -> Vec<OsString> {
    vec!["sh".into(), "-c".into(), script.into()]
}

/// Whether `pid` runs (a zombie counts as gone).
fn alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => false,
    }
}

fn send(pid: i32, signal: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(pid, signal);
    }
}

fn etcdctl_bin() -> String {
    std::env::var("ETCDCTL_BIN").unwrap_or_else(|_| "/usr/bin/etcdctl".to_string())
}

fn host_path() -> OsString {
    std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into())
}

// ---------------------------------------------------------------------------
// Environment
// ---------------------------------------------------------------------------

/// The `ETCD_AWAIT_ELECTION_*` variables given to one wrapper (on top of PATH).
#[derive(Clone, Debug, Default)]
struct Env(Vec<(String, OsString)>);

impl Env {
    /// Sets `ETCD_AWAIT_ELECTION_<suffix>`.
    fn set(self, suffix: &str, value: impl Into<OsString>) -> Env {
        self.unset(suffix).raw(var(suffix), value.into())
    }

    fn unset(mut self, suffix: &str) -> Env {
        let name = var(suffix);
        self.0.retain(|(n, _)| *n != name);
        self
    }

    fn raw(mut self, name: String, value: OsString) -> Env {
        self.0.push((name, value));
        self
    }
}

// ---------------------------------------------------------------------------
// Instance: one wrapper process
// ---------------------------------------------------------------------------

/// A running `etcd-await-election`; SIGKILLed and reaped on drop if still running.
struct Instance {
    name: String,
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
    status: Option<ExitStatus>,
}

impl Instance {
    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn signal(&self, signal: i32) {
        assert!(
            self.status.is_none(),
            "{} already exited, cannot signal it",
            self.name
        );
        send(self.pid(), signal);
    }

    fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
        }
        self.status
    }

    fn running(&mut self) -> bool {
        self.try_status().is_none()
    }

    /// Waits for the wrapper to exit; panics with its stderr after `timeout`.
    fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_status() {
                return status;
            }
            if Instant::now() >= deadline {
                panic!(
                    "{} did not exit within {timeout:?}; stderr:\n{}",
                    self.name,
                    self.stderr()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The wrapper's exit code; panics if it did not exit in time or died of a signal.
    fn code(&mut self, timeout: Duration) -> i32 {
        let status = self.wait(timeout);
        status
            .code()
            .unwrap_or_else(|| panic!("{} died of {status}; stderr:\n{}", self.name, self.stderr()))
    }

    fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn stdout(&self) -> String {
        fs::read_to_string(&self.stdout).unwrap_or_default()
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if self.try_status().is_none() {
            send(self.pid(), SIGKILL);
            let _ = self.child.wait();
        }
    }
}

// ---------------------------------------------------------------------------
// etcd's view
// ---------------------------------------------------------------------------

/// One key under the lock, as etcd reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Kv {
    key: String,
    value: String,
    create_revision: i64,
    lease: i64,
}

/// A `start` line of the log.
#[derive(Clone, Debug)]
struct Start {
    at: Nanos,
    pid: i32,
    key: String,
    revision: i64,
    lease_hex: String,
}

// ---------------------------------------------------------------------------
// Scene: one test's etcd, lock, directory and log
// ---------------------------------------------------------------------------

struct Scene {
    dir: PathBuf,
    etcd: Option<Etcd>,
    lock: String,
    /// (instance name, stderr file) of every wrapper spawned, for failure reports.
    spawned: Mutex<Vec<(String, PathBuf)>>,
}

impl Scene {
    /// A scene with its own etcd.
    fn new() -> Scene {
        Scene::with(Etcd::start())
    }

    /// A scene around this etcd.
    fn with(etcd: Etcd) -> Scene {
        let mut scene = Scene::without_etcd();
        scene.etcd = Some(etcd);
        scene
    }

    /// A scene for tests that never reach etcd.
    fn without_etcd() -> Scene {
        let dir = std::env::temp_dir().join(unique_name("eae-gatekeeper"));
        fs::create_dir_all(&dir).expect("create the scene dir");
        Scene {
            dir,
            etcd: None,
            lock: unique_name("lock"),
            spawned: Mutex::new(Vec::new()),
        }
    }

    fn etcd(&self) -> &Etcd {
        self.etcd.as_ref().expect("this scene has no etcd")
    }

    fn etcd_mut(&mut self) -> &mut Etcd {
        self.etcd.as_mut().expect("this scene has no etcd")
    }

    fn url(&self) -> String {
        self.etcd
            .as_ref()
            .map_or_else(|| "http://127.0.0.1:9".to_string(), Etcd::client_url)
    }

    /// The election variables for `identity` on this scene's lock and etcd.
    fn env(&self, identity: &str, t: Timings) -> Env {
        Env::default()
            .set("LOCK_NAME", self.lock.as_str())
            .set("IDENTITY", identity)
            .set("ENDPOINTS", self.url())
            .set("LEASE_DURATION", t.lease.to_string())
            .set("RENEW_DEADLINE", t.renew)
            .set("RETRY_PERIOD", t.retry)
    }

    /// The [`CHILD`] command line for the child called `name`.
    fn child(&self, name: &str, on_term: OnTerm) -> Vec<OsString> {
        let mode = match on_term {
            OnTerm::Trap => "trap",
            OnTerm::Die => "notrap",
        };
        vec![
            "sh".into(),
            "-c".into(),
            CHILD.into(),
            "sh".into(),
            self.dir.clone().into(),
            name.into(),
            mode.into(),
        ]
    }

    /// Spawns the wrapper with PATH plus `env` only, and `args` as its arguments.
    fn spawn(&self, name: &str, env: Env, args: Vec<OsString>) -> Instance {
        let stdout = self.dir.join(format!("{name}.stdout"));
        let stderr = self.dir.join(format!("{name}.stderr"));
        let child = Command::new(bin())
            .args(&args)
            .env_clear()
            .env("PATH", host_path())
            .envs(env.0.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(fs::File::create(&stdout).expect("create stdout file"))
            .stderr(fs::File::create(&stderr).expect("create stderr file"))
            .process_group(0)
            .spawn()
            .expect("spawn etcd-await-election");
        self.spawned
            .lock()
            .unwrap()
            .push((name.to_string(), stderr.clone()));
        Instance {
            name: name.to_string(),
            child,
            stdout,
            stderr,
            status: None,
        }
    }

    /// A candidate called `name` (also its identity) running a trapping [`CHILD`] of that name.
    fn candidate(&self, name: &str, t: Timings) -> Instance {
        self.spawn(name, self.env(name, t), self.child(name, OnTerm::Trap))
    }

    // ---- the children's log ----

    fn log(&self) -> String {
        fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    /// The log's `(kind, name, at, rest)` lines.
    fn records(&self) -> Vec<(String, String, Nanos, Vec<String>)> {
        self.log()
            .lines()
            .filter_map(|line| {
                let mut words = line.split(' ');
                let kind = words.next()?.to_string();
                let name = words.next()?.to_string();
                let at = words.next()?.parse().ok()?;
                Some((kind, name, at, words.map(str::to_string).collect()))
            })
            .collect()
    }

    fn at(&self, kind: &str, name: &str) -> Option<Nanos> {
        self.records()
            .into_iter()
            .find(|(k, n, _, _)| k == kind && n == name)
            .map(|(_, _, at, _)| at)
    }

    fn start_of(&self, name: &str) -> Option<Start> {
        self.records()
            .into_iter()
            .find(|(k, n, _, _)| k == "start" && n == name)
            .map(|(_, _, at, rest)| Start {
                at,
                pid: rest.first().and_then(|p| p.parse().ok()).unwrap_or(0),
                key: rest.get(1).cloned().unwrap_or_default(),
                revision: rest.get(2).and_then(|r| r.parse().ok()).unwrap_or(0),
                lease_hex: rest.get(3).cloned().unwrap_or_default(),
            })
    }

    fn end_of(&self, name: &str) -> Option<Nanos> {
        self.at("end", name)
    }

    fn await_start(&self, name: &str, timeout: Duration) -> Start {
        self.wait(&format!("child {name} starts"), timeout, || {
            self.start_of(name).is_some()
        });
        self.start_of(name).expect("just seen")
    }

    /// Makes the child `name` exit with `code` (written atomically).
    fn stop(&self, name: &str, code: i32) {
        let tmp = self.dir.join(format!("{name}.stop.tmp"));
        fs::write(&tmp, code.to_string()).expect("write stop file");
        fs::rename(&tmp, self.dir.join(format!("{name}.stop"))).expect("rename stop file");
    }

    /// Asserts that the children ran in this order, each ending before the next started.
    fn assert_one_at_a_time(&self, order: &[&str]) {
        let spans: Vec<(Nanos, Nanos)> = order
            .iter()
            .map(|name| {
                let start = self.start_of(name).map(|s| s.at);
                let end = self.end_of(name);
                match (start, end) {
                    (Some(start), Some(end)) if start <= end => (start, end),
                    _ => panic!("child {name} has no proper interval\n{}", self.report()),
                }
            })
            .collect();
        for (i, pair) in spans.windows(2).enumerate() {
            assert!(
                pair[0].1 < pair[1].0,
                "{} (ended {:.3}) overlaps {} (started {:.3})\n{}",
                order[i],
                secs(pair[0].1),
                order[i + 1],
                secs(pair[1].0),
                self.report()
            );
        }
    }

    // ---- etcd ----

    /// The keys under `<lock>/`, oldest (lowest create revision) first.
    fn keys(&self) -> Vec<Kv> {
        let prefix = format!("{}/", self.lock);
        let out = self
            .etcd()
            .etcdctl_ok(&["get", "--prefix", &prefix, "-w", "json"]);
        let json: serde_json::Value = serde_json::from_str(&out).expect("etcdctl json");
        let b64 = |v: &serde_json::Value| {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(v.as_str().unwrap_or(""))
                .expect("base64");
            String::from_utf8_lossy(&bytes).into_owned()
        };
        let mut kvs: Vec<Kv> = json["kvs"]
            .as_array()
            .map(|kvs| {
                kvs.iter()
                    .map(|kv| Kv {
                        key: b64(&kv["key"]),
                        value: b64(&kv["value"]),
                        create_revision: kv["create_revision"].as_i64().unwrap_or(0),
                        lease: kv["lease"].as_i64().unwrap_or(0),
                    })
                    .collect()
            })
            .unwrap_or_default();
        kvs.sort_by_key(|kv| kv.create_revision);
        kvs
    }

    fn identities(&self) -> Vec<String> {
        self.keys().into_iter().map(|kv| kv.value).collect()
    }

    /// Waits until exactly `n` keys exist under the lock and returns them.
    fn await_keys(&self, n: usize, timeout: Duration) -> Vec<Kv> {
        self.wait(&format!("{n} keys under the lock"), timeout, || {
            self.keys().len() == n
        });
        self.keys()
    }

    // ---- waiting and reporting ----

    /// Polls `f` every 20 ms; panics with [`Scene::report`] if `timeout` passes first.
    fn wait(&self, what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while !f() {
            if Instant::now() >= deadline {
                panic!(
                    "timed out after {timeout:?} waiting for: {what}\n{}",
                    self.report()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The log, the keys and every wrapper's stderr (never panics).
    fn report(&self) -> String {
        let mut out = format!("--- children's log:\n{}", self.log());
        if let Some(etcd) = &self.etcd {
            let prefix = format!("{}/", self.lock);
            let keys = etcd.etcdctl(&["--command-timeout=2s", "get", "--prefix", &prefix]);
            out.push_str(&format!(
                "--- keys under {prefix}:\n{}",
                String::from_utf8_lossy(&keys.stdout)
            ));
        }
        for (name, path) in self.spawned.lock().map(|s| s.clone()).unwrap_or_default() {
            let text = fs::read_to_string(path).unwrap_or_default();
            out.push_str(&format!("--- stderr of {name}:\n{text}"));
        }
        out
    }
}

impl Drop for Scene {
    /// Kills children left behind (pid files whose process still runs from this directory).
    fn drop(&mut self) {
        let needle = self.dir.to_string_lossy().into_owned();
        for entry in fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.ends_with(".pid") {
                continue;
            }
            let Some(pid) = fs::read_to_string(entry.path())
                .ok()
                .and_then(|p| p.trim().parse::<i32>().ok())
            else {
                continue;
            };
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if pid > 1 && String::from_utf8_lossy(&cmdline).contains(&needle) {
                send(-pid, SIGKILL);
                send(pid, SIGKILL);
            }
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------------------
// etcdctl elect
// ---------------------------------------------------------------------------

/// A running `etcdctl elect …` whose stdout lines are collected with their arrival time.
struct Elect {
    child: Child,
    lines: Arc<Mutex<Vec<(Nanos, String)>>>,
}

impl Elect {
    fn spawn(etcd: &Etcd, args: &[&str]) -> Elect {
        let mut child = Command::new(etcdctl_bin())
            .env_clear()
            .env("PATH", host_path())
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", etcd.client_url()))
            .arg("elect")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn etcdctl elect");
        let stdout = child.stdout.take().expect("piped stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                sink.lock().unwrap().push((now_ns(), line));
            }
        });
        Elect { child, lines }
    }

    fn lines(&self) -> Vec<String> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .map(|(_, l)| l.clone())
            .collect()
    }

    /// When `line` was first printed.
    fn printed(&self, line: &str) -> Option<Nanos> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .find(|(_, l)| l == line)
            .map(|(at, _)| *at)
    }

    fn signal(&self, signal: i32) {
        send(self.child.id() as i32, signal);
    }

    fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "etcdctl elect did not exit");
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Elect {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ===========================================================================
// Tests
// ===========================================================================

// ---- mutual exclusion and order ----

#[test]
fn two_instances_started_together_take_turns() {
    let s = Scene::new();
    let mut a = s.candidate("a", STEADY);
    let mut b = s.candidate("b", STEADY);
    let keys = s.await_keys(2, SOON);
    // The key created first leads; the other waits.
    let (first, second) = (keys[0].value.clone(), keys[1].value.clone());
    let lead = s.await_start(&first, SOON);
    assert_eq!(lead.key, keys[0].key, "{}", s.report());
    assert_eq!(lead.revision, keys[0].create_revision);
    assert_eq!(lead.key, format!("{}/{}", s.lock, lead.lease_hex));
    assert_eq!(i64::from_str_radix(&lead.lease_hex, 16), Ok(keys[0].lease));
    assert!(s.start_of(&second).is_none(), "both run\n{}", s.report());

    // Graceful handover: the leader's child exits, the other one's child starts.
    s.stop(&first, 0);
    let next = s.await_start(&second, SOON);
    assert_eq!(next.key, keys[1].key);
    assert!(next.revision > lead.revision, "fencing token must rise");
    s.stop(&second, 0);
    assert_eq!(a.code(SOON), 0, "{}", s.report());
    assert_eq!(b.code(SOON), 0, "{}", s.report());
    s.assert_one_at_a_time(&[&first, &second]);
    assert!(s.keys().is_empty(), "keys left:\n{}", s.report());
}

#[test]
fn three_instances_lead_one_at_a_time_in_arrival_order() {
    let s = Scene::new();
    let mut a = s.candidate("a", STEADY);
    s.await_start("a", SOON);
    let mut b = s.candidate("b", STEADY);
    s.await_keys(2, SOON);
    let mut c = s.candidate("c", STEADY);
    s.await_keys(3, SOON);
    assert_eq!(s.identities(), ["a", "b", "c"]);

    s.stop("a", 0);
    assert_eq!(a.code(SOON), 0, "{}", s.report());
    s.await_start("b", SOON);
    assert!(s.start_of("c").is_none(), "c runs beside b\n{}", s.report());
    assert_eq!(s.identities(), ["b", "c"]);

    s.stop("b", 0);
    assert_eq!(b.code(SOON), 0, "{}", s.report());
    s.await_start("c", SOON);
    s.stop("c", 0);
    assert_eq!(c.code(SOON), 0, "{}", s.report());

    s.assert_one_at_a_time(&["a", "b", "c"]);
    assert!(s.keys().is_empty(), "keys left:\n{}", s.report());
}

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
fn disabled_mode_execs_the_command_in_place() {
    let s = Scene::without_etcd();
    // No election variable: the command replaces the wrapper (same pid) and gets no election
    // variables; other ETCD_AWAIT_ELECTION_* variables are not even read.
    let env = Env::default().set("LEASE_DURATION", "abc");
    let script = "echo $$; echo ${ETCD_AWAIT_ELECTION_KEY-unset}; exit 7";
    let mut w = s.spawn("plain", env, sh(script));
    assert_eq!(w.code(SOON), 7, "{}", w.stderr());
    let out = w.stdout();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines, [w.pid().to_string().as_str(), "unset"], "{out}");

    for (script, expected) in [("exit 0", 0), ("exit 3", 3)] {
        let mut w = s.spawn("plain", Env::default(), sh(script));
        assert_eq!(w.code(SOON), expected, "{script}");
    }
    // A signal stays a signal: the process that died of it *is* the wrapper.
    let mut w = s.spawn("signal", Env::default(), sh("kill -USR1 $$"));
    assert_eq!(w.wait(SOON).signal(), Some(SIGUSR1));
}

#[test]
fn bad_configuration_exits_78_naming_the_variable_without_starting_the_child() {
    let s = Scene::without_etcd();
    let garbage = s.dir.join("garbage.pem");
    fs::write(&garbage, "not a certificate\n").unwrap();
    let marker = s.dir.join("started");
    let https = "https://127.0.0.1:9";
    type Row = (
        Vec<(&'static str, OsString)>,
        Vec<&'static str>,
        &'static str,
    );
    let row = |set: &[(&'static str, &str)], unset: &[&'static str], names: &'static str| -> Row {
        let set = set.iter().map(|(k, v)| (*k, OsString::from(*v))).collect();
        (set, unset.to_vec(), names)
    };
    let garbage_path = garbage.to_string_lossy().into_owned();
    let rows: Vec<Row> = vec![
        row(&[("LEASE_DURATION", "abc")], &[], "LEASE_DURATION"),
        row(&[("LEASE_DURATION", "1")], &[], "LEASE_DURATION"),
        row(&[("LEASE_DURATION", "1500ms")], &[], "LEASE_DURATION"),
        row(&[("LEASE_DURATION", "-5")], &[], "LEASE_DURATION"),
        row(
            &[("LEASE_DURATION", "5"), ("RENEW_DEADLINE", "5")],
            &[],
            "RENEW_DEADLINE",
        ),
        // The defaulted RENEW_DEADLINE (10s) is not below a 5s lease.
        row(&[("LEASE_DURATION", "5")], &[], "RENEW_DEADLINE"),
        row(
            &[("RENEW_DEADLINE", "2"), ("RETRY_PERIOD", "2s")],
            &[],
            "RETRY_PERIOD",
        ),
        row(&[("RETRY_PERIOD", "0")], &[], "RETRY_PERIOD"),
        row(&[("ACQUIRE_TIMEOUT", "soon")], &[], "ACQUIRE_TIMEOUT"),
        row(&[("ENDPOINTS", "ftp://x:1")], &[], "ENDPOINTS"),
        row(&[("ENDPOINTS", "http://x:0")], &[], "ENDPOINTS"),
        row(&[("ENDPOINTS", " , ")], &[], "ENDPOINTS"),
        row(&[("ENDPOINTS", "http://a b:1")], &[], "ENDPOINTS"),
        row(&[], &["IDENTITY"], "IDENTITY"),
        row(&[], &["LOCK_NAME"], "LOCK_NAME"),
        row(&[("LOCK_NAME", "")], &[], "LOCK_NAME"),
        row(&[("CERT", "/c")], &[], "ETCD_AWAIT_ELECTION_KEY"),
        row(&[("ENDPOINTS", https)], &[], "CACERT"),
        row(
            &[("ENDPOINTS", https), ("CACERT", "/nonexistent/ca.pem")],
            &[],
            "CACERT",
        ),
        row(
            &[("ENDPOINTS", https), ("CACERT", &garbage_path)],
            &[],
            "CACERT",
        ),
        row(&[("STATUS_ENDPOINT", "nope")], &[], "STATUS_ENDPOINT"),
        row(&[("STATUS_ENDPOINT", "x:0")], &[], "STATUS_ENDPOINT"),
        row(&[("USERNAME", "u")], &[], "PASSWORD"),
        row(&[("LOG_FORMAT", "xml")], &[], "LOG_FORMAT"),
        (
            vec![("FORCE_ACQUIRE", OsString::from_vec(b"y\xff".to_vec()))],
            vec![],
            "FORCE_ACQUIRE",
        ),
    ];
    assert!(rows.len() >= 12);
    let child = vec![
        "sh".into(),
        "-c".into(),
        r#"touch "$1""#.into(),
        "sh".into(),
        marker.clone().into(),
    ];
    for (set, unset, names) in rows {
        let mut env = Env::default()
            .set("LOCK_NAME", "lock")
            .set("IDENTITY", "me")
            .set("ENDPOINTS", "http://127.0.0.1:9");
        for (k, v) in &set {
            env = env.set(k, v.clone());
        }
        for k in &unset {
            env = env.unset(k);
        }
        let mut w = s.spawn("bad", env, child.clone());
        let code = w.code(SOON);
        let stderr = w.stderr();
        assert_eq!(code, 78, "set {set:?} unset {unset:?}: stderr:\n{stderr}");
        let named = if names.starts_with("ETCD_") {
            names.to_string()
        } else {
            var(names)
        };
        assert!(
            stderr.contains(&named),
            "set {set:?} unset {unset:?}: stderr does not name {named}:\n{stderr}"
        );
        assert!(!marker.exists(), "child started for {set:?} {unset:?}");
    }
}

#[test]
fn usage_help_and_version() {
    let s = Scene::without_etcd();
    let election = Env::default()
        .set("LOCK_NAME", "lock")
        .set("IDENTITY", "me")
        .set("ENDPOINTS", "http://127.0.0.1:9");
    for env in [Env::default(), election] {
        for args in [&[][..], &["--"][..], &[""][..]] {
            let args: Vec<OsString> = args.iter().map(OsString::from).collect();
            let mut w = s.spawn("usage", env.clone(), args.clone());
            assert_eq!(w.code(SOON), 64, "{args:?} {env:?}: {}", w.stderr());
            assert!(w.stderr().contains("Usage:"), "{}", w.stderr());
        }
        for flag in ["--help", "-h"] {
            let mut w = s.spawn("help", env.clone(), vec![flag.into()]);
            assert_eq!(w.code(SOON), 0, "{}", w.stderr());
            assert!(w.stdout().starts_with("Usage: "), "{}", w.stdout());
        }
        for flag in ["--version", "-V"] {
            let mut w = s.spawn("version", env.clone(), vec![flag.into()]);
            assert_eq!(w.code(SOON), 0, "{}", w.stderr());
            let expected = format!("etcd-await-election {} (", env!("CARGO_PKG_VERSION"));
            assert!(w.stdout().starts_with(&expected), "{}", w.stdout());
        }
    }
}

#[test]
fn unrunnable_commands_exit_127_or_126_in_both_modes() {
    let s = Scene::new();
    let not_executable = s.dir.join("not-executable");
    fs::write(&not_executable, "#!/bin/sh\nexit 0\n").unwrap();
    fs::set_permissions(&not_executable, fs::Permissions::from_mode(0o644)).unwrap();
    let cases: [(OsString, i32); 4] = [
        (s.dir.join("missing").into(), 127),
        ("eae-no-such-command-anywhere".into(), 127),
        (not_executable.into(), 126),
        (s.dir.clone().into(), 126),
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
        b_start.at - a_end < Duration::from_secs(5).as_nanos(),
        "takeover took {:.3}s\n{}",
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
fn a_killed_leader_leaves_no_orphan_and_is_replaced_only_after_its_lease() {
    let s = Scene::new();
    let mut a = s.candidate("a", QUICK);
    let a_start = s.await_start("a", SOON);
    let mut b = s.candidate("b", QUICK);
    s.await_keys(2, SOON);

    let killed = now_ns();
    a.signal(SIGKILL);
    assert_eq!(a.wait(SOON).signal(), Some(SIGKILL));
    s.wait(
        "a's child dies with its wrapper",
        Duration::from_secs(2),
        || !alive(a_start.pid),
    );
    let b_start = s.await_start("b", Duration::from_secs(QUICK.lease) + SOON);
    // a's last renewal was at most one keepalive interval (500 ms) before the kill: b may lead
    // only once that lease expired.
    eprintln!("b started {:.3}s after the kill", secs(b_start.at - killed));
    let earliest = killed + Duration::from_millis(QUICK.lease * 1000 - 1000).as_nanos();
    assert!(
        b_start.at >= earliest,
        "b started {:.3}s after the kill, before a's lease could expire\n{}",
        secs(b_start.at - killed),
        s.report()
    );
    s.stop("b", 0);
    assert_eq!(b.code(SOON), 0);
}

// ---- losing leadership ----

#[test]
fn deleting_the_leader_key_stops_the_leader_and_the_follower_leads() {
    let s = Scene::new();
    let mut a = s.candidate("a", STEADY);
    let a_start = s.await_start("a", SOON);
    let mut b = s.candidate("b", STEADY);
    let keys = s.await_keys(2, SOON);

    let deleted = s.etcd().etcdctl_ok(&["del", &a_start.key]);
    assert_eq!(deleted.trim(), "1");
    assert_eq!(a.code(SOON), 75, "{}", s.report());
    // The key is gone, another leader may start: the child is killed at once, not asked.
    assert!(!alive(a_start.pid), "a's child survived its wrapper");
    assert!(s.at("term", "a").is_none(), "{}", s.report());
    let b_start = s.await_start("b", SOON);
    assert_eq!(b_start.key, keys[1].key);
    s.stop("b", 0);
    assert_eq!(b.code(SOON), 0);
    assert!(s.keys().is_empty(), "keys left:\n{}", s.report());
}

#[test]
fn force_acquire_preempts_the_leader_and_requeues_waiters() {
    let s = Scene::new();
    let mut a = s.candidate("a", STEADY);
    let a_start = s.await_start("a", SOON);
    let mut b = s.candidate("b", STEADY);
    let old_b = s.await_keys(2, SOON)[1].clone();

    let spawned = now_ns();
    let env = s.env("c", STEADY).set("FORCE_ACQUIRE", "1");
    let mut c = s.spawn("c", env, s.child("c", OnTerm::Trap));
    let c_start = s.await_start("c", SOON);
    // "At once": far below the 15 s lease the old keys had.
    assert!(
        c_start.at - spawned < Duration::from_secs(5).as_nanos(),
        "{}",
        s.report()
    );
    assert_eq!(a.code(SOON), 75, "{}", s.report());
    assert!(!alive(a_start.pid), "a's child survived its wrapper");

    // b's key was deleted while it waited: it queues again, behind c, with its lease (which
    // FORCE_ACQUIRE did not touch) and a new place.
    s.wait("b queued again behind c", SOON, || {
        s.identities() == ["c", "b"]
    });
    let keys = s.keys();
    assert_eq!(keys[0].key, c_start.key);
    assert_eq!(keys[1].lease, old_b.lease, "b changed its live lease");
    assert!(
        keys[1].create_revision > keys[0].create_revision,
        "{}",
        s.report()
    );
    assert!(b.running() && s.start_of("b").is_none(), "{}", s.report());

    s.stop("c", 0);
    assert_eq!(c.code(SOON), 0, "{}", s.report());
    let b_start = s.await_start("b", SOON);
    assert_eq!(b_start.key, keys[1].key);
    s.stop("b", 0);
    assert_eq!(b.code(SOON), 0, "{}", s.report());
    s.assert_one_at_a_time(&["c", "b"]);
}

#[test]
fn a_restarted_instance_with_the_same_identity_keeps_its_place() {
    let t = Timings {
        lease: 5,
        renew: "2",
        retry: "500ms",
    };
    let s = Scene::new();
    let mut a = s.candidate("a", t);
    s.await_start("a", SOON);
    let mut b = s.spawn("b", s.env("b", t), s.child("b", OnTerm::Trap));
    let before = s.await_keys(2, SOON);

    // b dies without revoking its lease; b2, same identity, comes back before the lease expires.
    let killed = Instant::now();
    b.signal(SIGKILL);
    b.wait(SOON);
    let mut b2 = s.spawn("b2", s.env("b", t), s.child("b2", OnTerm::Trap));

    // Asserting that nothing happens: past this point b's lease would have expired had b2 not
    // adopted and renewed it, and b2 would then have queued with a new key.
    let expired = killed + Duration::from_secs(t.lease + 1);
    thread::sleep(expired.saturating_duration_since(Instant::now()));
    assert_eq!(s.keys(), before, "b2 did not keep b's key\n{}", s.report());

    s.stop("a", 0);
    assert_eq!(a.code(SOON), 0, "{}", s.report());
    let b2_start = s.await_start("b2", SOON);
    assert_eq!(b2_start.key, before[1].key, "{}", s.report());
    assert_eq!(b2_start.revision, before[1].create_revision);
    assert_eq!(
        i64::from_str_radix(&b2_start.lease_hex, 16),
        Ok(before[1].lease)
    );
    s.stop("b2", 0);
    assert_eq!(b2.code(SOON), 0, "{}", s.report());
    assert!(s.keys().is_empty(), "keys left:\n{}", s.report());
}

#[test]
fn the_child_is_stopped_before_the_lease_can_expire_when_etcd_freezes() {
    let t = Timings {
        lease: 3,
        renew: "1",
        retry: "400ms",
    };
    let s = Scene::new();
    let mut a = s.candidate("a", t);
    s.await_start("a", SOON);

    // Every renewal acknowledged so far was sent before the freeze.
    let frozen = now_ns();
    s.etcd().freeze();
    let code = a.code(SOON);
    s.etcd().resume();
    assert_eq!(code, 75, "{}", s.report());
    assert!(
        s.at("term", "a").is_some(),
        "not stopped gracefully\n{}",
        s.report()
    );
    let end = s.end_of("a").expect("a's end");
    eprintln!(
        "child stopped {:.3}s after the freeze",
        secs(end.saturating_sub(frozen))
    );
    let lease_end = frozen + Duration::from_secs(t.lease).as_nanos();
    assert!(
        end < lease_end,
        "child ended {:.3}s after the freeze, lease is {}s\n{}",
        secs(end.saturating_sub(frozen)),
        t.lease,
        s.report()
    );
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

#[test]
fn the_child_process_group_dies_with_the_child() {
    let s = Scene::new();
    // The child leaves a background descendant (same process group) behind and exits.
    let script = r#"sh -c 'while :; do sleep 1; done' "$0" & echo $! > "$0/gc.pid"; exit 4"#;
    let args = vec![
        "sh".into(),
        "-c".into(),
        script.into(),
        s.dir.clone().into(),
    ];
    let mut a = s.spawn("a", s.env("a", STEADY), args);
    assert_eq!(a.code(SOON), 4, "{}", s.report());
    let pid: i32 = fs::read_to_string(s.dir.join("gc.pid"))
        .expect("gc.pid")
        .trim()
        .parse()
        .expect("a pid");
    s.wait("the descendant is killed", Duration::from_secs(2), || {
        !alive(pid)
    });
}

#[test]
fn an_operator_deleting_a_waiter_key_or_revoking_the_leader_lease() {
    let s = Scene::new();
    let mut a = s.candidate("a", STEADY);
    let a_start = s.await_start("a", SOON);
    let mut b = s.candidate("b", STEADY);
    s.await_keys(2, SOON);
    let mut c = s.candidate("c", STEADY);
    let keys = s.await_keys(3, SOON);

    // A waiter whose key is deleted queues again at the end, with its lease (still alive).
    s.etcd().etcdctl_ok(&["del", &keys[1].key]);
    s.wait("b queued again at the end", SOON, || {
        s.identities() == ["a", "c", "b"]
    });
    let requeued = s.keys()[2].clone();
    assert_eq!(requeued.lease, keys[1].lease);
    assert!(requeued.create_revision > keys[2].create_revision);
    assert!(b.running() && c.running(), "{}", s.report());

    // The leader's lease revoked: its child is stopped, 75, and c (now next) leads.
    let lease = format!("{:x}", keys[0].lease);
    s.etcd().etcdctl_ok(&["lease", "revoke", &lease]);
    assert_eq!(a.code(SOON), 75, "{}", s.report());
    assert!(!alive(a_start.pid), "a's child survived its wrapper");
    s.await_start("c", SOON);
    assert!(s.start_of("b").is_none(), "{}", s.report());
    s.stop("c", 0);
    assert_eq!(c.code(SOON), 0, "{}", s.report());
    let b_start = s.await_start("b", SOON);
    assert_eq!(b_start.key, requeued.key);
    s.stop("b", 0);
    assert_eq!(b.code(SOON), 0, "{}", s.report());
    s.assert_one_at_a_time(&["c", "b"]);
}

#[test]
fn acquire_timeout_gives_up_with_69_and_leaves_the_queue() {
    let s = Scene::new();
    let mut a = s.candidate("a", STEADY);
    s.await_start("a", SOON);
    let env = s.env("b", STEADY).set("ACQUIRE_TIMEOUT", "1500ms");
    let spawned = Instant::now();
    let mut b = s.spawn("b", env, s.child("b", OnTerm::Trap));
    assert_eq!(b.code(SOON), 69, "{}", s.report());
    assert!(spawned.elapsed() >= Duration::from_millis(1500));
    assert!(s.start_of("b").is_none());
    assert_eq!(s.identities(), ["a"], "{}", s.report());
    s.stop("a", 0);
    assert_eq!(a.code(SOON), 0);
}

#[test]
fn etcd_refusing_the_credentials_exits_69() {
    let s = Scene::with(Etcd::start_auth());
    let env = s
        .env("a", STEADY)
        .set("USERNAME", support::USER)
        .set("PASSWORD", "wrong-password");
    let mut a = s.spawn("a", env, s.child("a", OnTerm::Trap));
    assert_eq!(a.code(SOON), 69, "{}", s.report());
    assert!(s.start_of("a").is_none());
    assert!(
        !a.stderr().contains("wrong-password"),
        "password shown:\n{}",
        a.stderr()
    );

    let env = s
        .env("b", STEADY)
        .set("USERNAME", support::USER)
        .set("PASSWORD", support::PASSWORD);
    let mut b = s.spawn("b", env, s.child("b", OnTerm::Trap));
    s.await_start("b", SOON);
    s.stop("b", 0);
    assert_eq!(b.code(SOON), 0, "{}", s.report());
}

#[test]
fn leader_and_waiter_ride_out_an_etcd_restart() {
    // The restart must fit within the renew deadline.
    let t = Timings {
        lease: 15,
        renew: "10",
        retry: "500ms",
    };
    let mut s = Scene::new();
    let mut a = s.candidate("a", t);
    s.await_start("a", SOON);
    let mut b = s.candidate("b", t);
    let keys = s.await_keys(2, SOON);
    s.etcd_mut().restart();
    assert_eq!(s.keys(), keys, "{}", s.report());
    assert!(a.running() && s.end_of("a").is_none(), "{}", s.report());

    // Both re-established their watches: a's exit is seen by b at once.
    s.stop("a", 0);
    assert_eq!(a.code(SOON), 0, "{}", s.report());
    let a_end = s.end_of("a").expect("a's end");
    let b_start = s.await_start("b", SOON);
    assert!(
        b_start.at - a_end < Duration::from_secs(5).as_nanos(),
        "takeover took {:.3}s\n{}",
        secs(b_start.at - a_end),
        s.report()
    );
    s.stop("b", 0);
    assert_eq!(b.code(SOON), 0, "{}", s.report());
}

#[test]
fn force_acquire_preempts_even_when_restarting_with_a_waiting_key() {
    let s = Scene::new();
    let mut a = s.candidate("a", STEADY);
    let a_start = s.await_start("a", SOON);
    let mut b = s.candidate("b", STEADY);
    s.await_keys(2, SOON);
    // b dies while waiting, its key stays; it comes back with FORCE_ACQUIRE, as a newcomer would.
    b.signal(SIGKILL);
    b.wait(SOON);
    let env = s.env("b", STEADY).set("FORCE_ACQUIRE", "1");
    let mut b2 = s.spawn("b2", env, s.child("b2", OnTerm::Trap));
    // "At once": far below the 15 s lease of a's key.
    let b2_start = s.await_start("b2", Duration::from_secs(5));
    assert_eq!(a.code(SOON), 75, "{}", s.report());
    assert!(!alive(a_start.pid));
    assert_eq!(s.identities(), ["b"]);
    assert_eq!(s.keys()[0].key, b2_start.key);
    s.stop("b2", 0);
    assert_eq!(b2.code(SOON), 0, "{}", s.report());
}

#[test]
fn a_second_live_instance_with_the_same_identity_never_runs_beside_the_first() {
    let s = Scene::new();
    let mut a = s.candidate("a", STEADY);
    s.await_start("a", SOON);
    // A misconfigured twin: same identity, while a is alive and leading.
    let mut twin = s.spawn("twin", s.env("a", STEADY), s.child("twin", OnTerm::Trap));
    // Asserting that nothing happens: give the twin time to join (or wrongly start).
    thread::sleep(Duration::from_secs(3));
    assert!(
        s.start_of("twin").is_none(),
        "two children run at once under one key\n{}",
        s.report()
    );
    s.stop("a", 0);
    assert_eq!(a.code(SOON), 0, "{}", s.report());
    let a_end = s.end_of("a").expect("a's end");
    // Queueing behind a or refusing the clash are both safe; running beside a is not.
    s.wait("the twin leads or leaves", SOON, || {
        s.start_of("twin").is_some() || !twin.running()
    });
    if let Some(start) = s.start_of("twin") {
        assert!(start.at > a_end, "{}", s.report());
        s.stop("twin", 0);
        assert_eq!(twin.code(SOON), 0, "{}", s.report());
    }
}

#[test]
fn a_stalled_leader_is_not_taken_over_by_an_instance_with_its_identity() {
    // The reviewer's case: the leader's wrapper stalls (SIGSTOP stands in for a GC pause or a short
    // partition) for less than RENEW_DEADLINE, so it is still entitled to lead, while a newcomer
    // with the same identity finds its key with a falling TTL.
    let t = Timings {
        lease: 5,
        renew: "3",
        retry: "500ms",
    };
    let s = Scene::new();
    let mut a = s.candidate("a", t);
    s.await_start("a", SOON);
    a.signal(SIGSTOP);
    let stalled = Instant::now();
    let mut twin = s.spawn("twin", s.env("a", t), s.child("twin", OnTerm::Trap));
    // The stall itself is the condition under test: it must stay below RENEW_DEADLINE (3 s).
    thread::sleep(Duration::from_millis(2000).saturating_sub(stalled.elapsed()));
    a.signal(SIGCONT);
    // a renews again, so the twin must see the TTL rise and queue with a fresh key.
    s.wait("the twin queues with a fresh key", SOON, || {
        s.keys().len() == 2
    });
    assert!(
        s.start_of("twin").is_none(),
        "the twin ran beside a stalled but entitled leader\n{}",
        s.report()
    );
    assert!(
        a.running(),
        "a stopped although it was entitled\n{}",
        s.report()
    );
    s.stop("a", 0);
    assert_eq!(a.code(SOON), 0, "{}", s.report());
    let a_end = s.end_of("a").expect("a's end");
    let start = s.await_start("twin", SOON);
    assert!(start.at > a_end, "{}", s.report());
    s.stop("twin", 0);
    assert_eq!(twin.code(SOON), 0, "{}", s.report());
}

// ---- interoperability with etcdctl elect ----

#[test]
fn etcdctl_elect_observes_our_leader() {
    let s = Scene::new();
    let mut a = s.candidate("a", STEADY);
    let a_start = s.await_start("a", SOON);
    let observer = Elect::spawn(s.etcd(), &["-l", &s.lock]);
    s.wait("etcdctl elect -l shows our key and identity", SOON, || {
        let lines = observer.lines();
        lines.windows(2).any(|w| w[0] == a_start.key && w[1] == "a")
    });
    drop(observer);
    s.stop("a", 0);
    assert_eq!(a.code(SOON), 0);
}

#[test]
fn etcdctl_elect_queues_behind_our_leader() {
    let s = Scene::new();
    let mut a = s.candidate("a", STEADY);
    s.await_start("a", SOON);
    let mut theirs = Elect::spawn(s.etcd(), &[&s.lock, "x"]);
    let keys = s.await_keys(2, SOON);
    assert_eq!(keys[1].value, "x");
    assert!(theirs.lines().is_empty(), "etcdctl claims leadership");

    s.stop("a", 0);
    assert_eq!(a.code(SOON), 0, "{}", s.report());
    let a_end = s.end_of("a").expect("a's end");
    s.wait("etcdctl elect wins", SOON, || {
        theirs.printed(&keys[1].key).is_some()
    });
    assert!(theirs.printed(&keys[1].key).expect("printed") > a_end);
    assert_eq!(theirs.lines(), [keys[1].key.as_str(), "x"]);
    theirs.signal(SIGINT);
    theirs.wait(SOON);
    s.wait("etcdctl resigned", SOON, || s.keys().is_empty());
}

#[test]
fn we_queue_behind_etcdctl_elect_until_it_resigns() {
    let s = Scene::new();
    let theirs = Elect::spawn(s.etcd(), &[&s.lock, "x"]);
    s.wait("etcdctl elect leads", SOON, || theirs.lines().len() >= 2);
    let mut a = s.candidate("a", STEADY);
    let keys = s.await_keys(2, SOON);
    assert_eq!(
        keys.iter().map(|k| k.value.as_str()).collect::<Vec<_>>(),
        ["x", "a"]
    );
    assert!(s.start_of("a").is_none(), "{}", s.report());

    let interrupted = now_ns();
    theirs.signal(SIGINT);
    let a_start = s.await_start("a", SOON);
    assert!(a_start.at > interrupted);
    assert_eq!(a_start.key, keys[1].key);
    s.stop("a", 0);
    assert_eq!(a.code(SOON), 0, "{}", s.report());
}
