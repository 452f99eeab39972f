//! The wrapper under test: `etcd-await-election` processes, and the [`Scene`] one test runs them in.
//!
//! A [`Scene`] owns a temp directory, a lock name and (usually) its own [`Etcd`]. It spawns
//! [`Wrapper`]s with a cleared environment (PATH plus only the variables an [`Env`] sets), each in
//! its own process group, stdout and stderr in files of the directory. Their commands are the
//! children of [`super::marks`], which mark their start and end in the scene's log. Tests
//! synchronise by polling ([`Scene::wait`]: the log, etcd, a wrapper's stderr) with deadlines, and
//! every failure message carries [`Scene::report`]: the log, the keys and every wrapper's stderr.
//! [`Scene::spawn_with`] changes the command further (another stderr: a [`StalledPipe`]).
//!
//! Rule: whatever a test starts dies with it. A [`Wrapper`] still running is SIGKILLed on drop;
//! the scene then kills what its children left (their process groups, found by pid file) and
//! removes its directory.
#![allow(dead_code)]

use std::ffi::OsString;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use super::env::{Env, Timings};
use super::procs::{self, group_alive, send};

use super::marks::{self, Marks, Nanos, OnTerm, Start};
use super::{bin, unique_name, Etcd, Kv};

/// Generous bound for anything that should happen "soon" on a loaded 2-core box.
pub const SOON: Duration = Duration::from_secs(15);

/// A running `etcd-await-election`; SIGKILLed and reaped on drop if still running.
pub struct Wrapper {
    name: String,
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
    status: Option<ExitStatus>,
    /// When the test first saw it exited.
    exited_at: Option<Nanos>,
    status_port: Option<u16>,
}

impl Wrapper {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends `signal`; panics if the wrapper already exited (its pid may be reused).
    pub fn signal(&mut self, signal: i32) {
        assert!(
            self.running(),
            "{} already exited, cannot signal it",
            self.name
        );
        send(self.pid(), signal);
    }

    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
            if self.status.is_some() {
                self.exited_at = Some(marks::now_ns());
            }
        }
        self.status
    }

    pub fn running(&mut self) -> bool {
        self.try_status().is_none()
    }

    /// When the test first saw the wrapper exited.
    pub fn exited_at(&mut self) -> Option<Nanos> {
        self.try_status();
        self.exited_at
    }

    /// Waits up to `timeout` for the wrapper to exit.
    pub fn wait_up_to(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_status() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the wrapper to exit; panics with its stderr after `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        self.wait_up_to(timeout).unwrap_or_else(|| {
            panic!(
                "{} did not exit within {timeout:?}; stderr:\n{}",
                self.name,
                self.stderr()
            )
        })
    }

    /// The wrapper's exit code; panics if it did not exit in time or died of a signal.
    pub fn code(&mut self, timeout: Duration) -> i32 {
        let status = self.wait(timeout);
        status
            .code()
            .unwrap_or_else(|| panic!("{} died of {status}; stderr:\n{}", self.name, self.stderr()))
    }

    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    pub fn stdout(&self) -> String {
        fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// The port of `STATUS_ENDPOINT=127.0.0.1:PORT`; panics if it was not set so.
    pub fn status_port(&self) -> u16 {
        self.status_port
            .unwrap_or_else(|| panic!("{} has no 127.0.0.1:PORT status endpoint", self.name))
    }
}

impl Drop for Wrapper {
    fn drop(&mut self) {
        if self.running() {
            send(self.pid(), libc::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

/// One test's directory, lock, etcd and wrappers; see the module docs.
pub struct Scene {
    dir: PathBuf,
    etcd: Option<Etcd>,
    lock: String,
    /// (wrapper name, stderr file) of every wrapper spawned, for [`Scene::report`].
    spawned: Mutex<Vec<(String, PathBuf)>>,
}

impl Scene {
    /// A scene with its own plain etcd.
    pub fn new() -> Scene {
        Scene::with(Etcd::start())
    }

    /// A scene around `etcd`.
    pub fn with(etcd: Etcd) -> Scene {
        let mut scene = Scene::without_etcd();
        scene.etcd = Some(etcd);
        scene
    }

    /// A scene whose wrappers reach no etcd of its own (bad configuration, fakes, clusters).
    pub fn without_etcd() -> Scene {
        let dir = std::env::temp_dir().join(unique_name("eae-scene"));
        fs::create_dir_all(&dir).expect("create the scene dir");
        Scene {
            dir,
            etcd: None,
            lock: unique_name("lock"),
            spawned: Mutex::new(Vec::new()),
        }
    }

    pub fn etcd(&self) -> &Etcd {
        self.etcd.as_ref().expect("this scene has no etcd")
    }

    pub fn etcd_mut(&mut self) -> &mut Etcd {
        self.etcd.as_mut().expect("this scene has no etcd")
    }

    pub fn lock(&self) -> &str {
        &self.lock
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The scene's etcd, or a port nothing listens on (9, discard) without one.
    pub fn url(&self) -> String {
        self.etcd
            .as_ref()
            .map_or_else(|| "http://127.0.0.1:9".to_string(), Etcd::client_url)
    }

    /// The election variables for `identity` on this scene's lock and etcd.
    pub fn env(&self, identity: &str, t: Timings) -> Env {
        Env::default()
            .set("LOCK_NAME", self.lock.as_str())
            .set("IDENTITY", identity)
            .set("ENDPOINTS", self.url())
            .timings(t)
    }

    /// The command line of the child `name` (see [`marks::child`]).
    pub fn child(&self, name: &str, on_term: OnTerm) -> Vec<OsString> {
        marks::child(&self.dir, name, on_term)
    }

    /// Spawns the wrapper `name` with PATH plus `env` only, and `args` as its arguments.
    pub fn spawn(&self, name: &str, env: Env, args: Vec<OsString>) -> Wrapper {
        self.launch(name, env, &[], args, |_| {})
    }

    /// [`Scene::spawn`], with `configure` applied to the command last (another stderr, say).
    pub fn spawn_with(
        &self,
        name: &str,
        env: Env,
        args: Vec<OsString>,
        configure: impl FnOnce(&mut Command),
    ) -> Wrapper {
        self.launch(name, env, &[], args, configure)
    }

    /// The candidate `name` (also its identity) running a [`OnTerm::Trap`] child of that name.
    pub fn candidate(&self, name: &str, t: Timings) -> Wrapper {
        self.spawn(name, self.env(name, t), self.child(name, OnTerm::Trap))
    }

    // ---- the children's log ----

    pub fn marks(&self) -> Marks {
        Marks::read(&self.dir)
    }

    pub fn start_of(&self, name: &str) -> Option<Start> {
        self.marks().start_of(name)
    }

    pub fn end_of(&self, name: &str) -> Option<Nanos> {
        self.marks().end_of(name)
    }

    /// When `name` first marked `kind` (`term`, `hup`, …).
    pub fn at(&self, kind: &str, name: &str) -> Option<Nanos> {
        self.marks().at(kind, name)
    }

    /// Waits for the child `name` to start; panics if it started more than once.
    pub fn await_start(&self, name: &str, timeout: Duration) -> Start {
        self.wait(&format!("child {name} starts"), timeout, || {
            self.start_of(name).is_some()
        });
        let marks = self.marks();
        let starts = marks.all("start", name);
        assert_eq!(
            starts.len(),
            1,
            "{name} started {starts:?}\n{}",
            self.report()
        );
        marks.start_of(name).expect("just seen")
    }

    /// Waits for the child `name` to end.
    pub fn await_end(&self, name: &str, timeout: Duration) -> Nanos {
        self.wait(&format!("child {name} ends"), timeout, || {
            self.end_of(name).is_some()
        });
        self.end_of(name).expect("just seen")
    }

    /// Waits until the wrapper logged that it queued behind a leader.
    pub fn await_queued(&self, wrapper: &Wrapper, timeout: Duration) {
        self.wait(&format!("{} queued", wrapper.name), timeout, || {
            wrapper.stderr().contains(" queued ")
        });
    }

    /// Waits until nothing of the child `name`'s process group runs any more.
    pub fn await_group_dead(&self, name: &str, timeout: Duration) {
        let marks = self.marks();
        let pgid = marks
            .group_of(name)
            .expect("the child recorded its process group");
        self.wait(
            &format!("process group {pgid} of {name} gone"),
            timeout,
            || !group_alive(pgid),
        );
    }

    /// Makes the child `name` exit with `code`.
    pub fn stop(&self, name: &str, code: i32) {
        marks::stop(&self.dir, name, code);
    }

    /// Asserts that the children `order` ran in that order, each ending before the next started.
    pub fn assert_one_at_a_time(&self, order: &[&str]) {
        if let Err(e) = self.marks().check_one_at_a_time(order) {
            panic!("{e}\n{}", self.report());
        }
    }

    /// Asserts that no two children ran at once (only the last one may still run).
    pub fn assert_no_overlap(&self) {
        if let Err(e) = self.marks().check_no_overlap() {
            panic!("children overlap: {e}\n{}", self.report());
        }
    }

    // ---- etcd ----

    /// The keys under `<lock>/`, oldest (lowest create revision) first.
    pub fn keys(&self) -> Vec<Kv> {
        self.etcd().keys_under(&format!("{}/", self.lock))
    }

    /// The identities queued on the lock, the leader first.
    pub fn identities(&self) -> Vec<String> {
        self.keys().into_iter().map(|kv| kv.value).collect()
    }

    /// Waits until exactly `n` keys exist under the lock and returns them.
    pub fn await_keys(&self, n: usize, timeout: Duration) -> Vec<Kv> {
        self.wait(&format!("{n} keys under the lock"), timeout, || {
            self.keys().len() == n
        });
        self.keys()
    }

    // ---- waiting and reporting ----

    /// Polls `f` every 20 ms; panics with [`Scene::report`] if `timeout` passes first.
    pub fn wait(&self, what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
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
    pub fn report(&self) -> String {
        let log = fs::read_to_string(self.dir.join("log")).unwrap_or_default();
        let mut out = format!("--- children's log:\n{log}");
        if let Some(etcd) = &self.etcd {
            let prefix = format!("{}/", self.lock);
            let keys = etcd.etcdctl(&["--command-timeout=2s", "get", "--prefix", &prefix]);
            out.push_str(&format!(
                "--- keys under {prefix}:\n{}",
                String::from_utf8_lossy(&keys.stdout)
            ));
        }
        let spawned = self.spawned.lock().map(|s| s.clone()).unwrap_or_default();
        for (name, path) in spawned {
            let text = fs::read_to_string(path).unwrap_or_default();
            out.push_str(&format!("--- stderr of {name}:\n{text}"));
        }
        out
    }
}

impl Drop for Scene {
    /// Kills the process groups of children left behind (pid files whose process still runs
    /// from this directory), then removes the directory.
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
                // Its group is its guardian's, not its pid.
                if let Some(group) = crate::support::procs::group_of(pid).filter(|&g| g > 1) {
                    send(-group, libc::SIGKILL);
                }
                send(pid, libc::SIGKILL);
            }
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

impl Scene {
    /// As [`Scene::spawn`], but the wrapper is started by `launcher` (a program and its
    /// arguments, e.g. `strace …`), which is given the wrapper's path and `args`; the [`Wrapper`]
    /// is then the launcher's process. An empty `launcher` starts the wrapper itself.
    pub fn spawn_under(
        &self,
        name: &str,
        env: Env,
        launcher: &[OsString],
        args: Vec<OsString>,
    ) -> Wrapper {
        self.launch(name, env, launcher, args, |_| {})
    }

    /// The one way wrappers are started: by `launcher` (see [`Scene::spawn_under`]), with
    /// `configure` applied to the command last.
    fn launch(
        &self,
        name: &str,
        env: Env,
        launcher: &[OsString],
        args: Vec<OsString>,
        configure: impl FnOnce(&mut Command),
    ) -> Wrapper {
        let stdout = self.dir.join(format!("{name}.stdout"));
        let stderr = self.dir.join(format!("{name}.stderr"));
        let path =
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
        let status_port = env
            .get("STATUS_ENDPOINT")
            .and_then(|v| v.to_str()?.strip_prefix("127.0.0.1:")?.parse().ok());
        let (program, before) = match launcher.split_first() {
            Some((program, rest)) => (program.clone(), [rest, &[bin().into()]].concat()),
            None => (bin().into(), Vec::new()),
        };
        let mut command = Command::new(program);
        command
            .args(&before)
            .args(&args)
            .env_clear()
            .env("PATH", path)
            .envs(env.vars().iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(fs::File::create(&stdout).expect("create the stdout file"))
            .stderr(fs::File::create(&stderr).expect("create the stderr file"))
            .process_group(0);
        procs::with_default_signals(&mut command);
        configure(&mut command);
        let child = command.spawn().expect("spawn etcd-await-election");
        self.spawned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((name.to_string(), stderr.clone()));
        Wrapper {
            name: name.to_string(),
            child,
            stdout,
            stderr,
            status: None,
            exited_at: None,
            status_port,
        }
    }
}

// ---- a stderr nobody reads ----

/// A pipe for a wrapper's stderr that nobody drains, as a stalled log collector: the test holds
/// the read end and never reads it, so once [`StalledPipe::fill`]ed every blocking write to it
/// blocks. The wrapper's stderr file stays empty, so its log is not in [`Scene::report`].
/// Dropping it closes both ends (a writer blocked on it then fails with EPIPE).
pub struct StalledPipe {
    /// Held, never read: the pipe stays open and full.
    _read: std::os::fd::OwnedFd,
    /// The write end, blocking, for the wrapper (taken by [`StalledPipe::writer`]).
    write: Option<std::os::fd::OwnedFd>,
    /// The same pipe opened again, non-blocking: a file description of its own, so that its
    /// O_NONBLOCK never reaches the wrapper's stderr.
    filler: fs::File,
}

impl StalledPipe {
    pub fn new() -> StalledPipe {
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        use std::os::unix::fs::OpenOptionsExt;
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two new file descriptors into `fds`.
        let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
        assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
        // SAFETY: both descriptors were just created and belong to nothing else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let filler = fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(format!("/proc/self/fd/{}", write.as_raw_fd()))
            .expect("open the pipe again through /proc");
        StalledPipe {
            _read: read,
            write: Some(write),
            filler,
        }
    }

    /// The blocking write end, for `Command::stderr`; panics when taken twice.
    pub fn writer(&mut self) -> Stdio {
        Stdio::from(self.write.take().expect("the write end was taken already"))
    }

    /// Writes until the pipe is full (64 KiB on Linux); returns the bytes this call wrote.
    pub fn fill(&mut self) -> usize {
        use std::io::Write;
        let mut written = 0;
        // Whole pages first, then bytes: a write of up to PIPE_BUF needs room for all of it.
        for chunk in [vec![b'x'; 4096], vec![b'x']] {
            loop {
                match self.filler.write(&chunk) {
                    Ok(n) => written += n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => panic!("fill the stalled pipe: {e}"),
                }
            }
        }
        written
    }

    /// Whether not even one more byte fits (a byte that fits is written).
    pub fn is_full(&mut self) -> bool {
        use std::io::Write;
        match self.filler.write(b"x") {
            Ok(_) => false,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => true,
            Err(e) => panic!("probe the stalled pipe: {e}"),
        }
    }
}
