//! Configuration errors and hints end to end: the built binary with a cleared environment (PATH
//! plus only the variables a case sets). A bad configuration must exit 78 with a stderr line naming
//! the variable and the value, before the command starts; hints and warnings are one line and
//! never stop the command.
//!
//! Run: `cargo test --test configuration -- --test-threads=2`.

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use support::{bin, unique_name, Etcd};

/// Generous bound for anything that should happen "soon" on a loaded 2-core box.
const SOON: Duration = Duration::from_secs(15);
/// Valid timings that pass every rule.
const TIMINGS: [(&str, &str); 3] = [
    ("LEASE_DURATION", "3"),
    ("RENEW_DEADLINE", "2"),
    ("RETRY_PERIOD", "500ms"),
];

fn var(suffix: &str) -> String {
    format!("ETCD_AWAIT_ELECTION_{suffix}")
}

/// A temp directory, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new() -> Dir {
        let dir = std::env::temp_dir().join(unique_name("eae-configuration"));
        fs::create_dir_all(&dir).expect("create the test dir");
        Dir(dir)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    fn file(&self, name: &str, content: &[u8]) -> String {
        let path = self.path(name);
        fs::write(&path, content).expect("write a test file");
        path.to_string_lossy().into_owned()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// One run of the wrapper around `sh -c 'touch MARKER; exit 7'`.
struct Run {
    child: Child,
    stderr: PathBuf,
    marker: PathBuf,
}

impl Run {
    /// Starts the wrapper with exactly `vars` (full names) and PATH.
    fn start(dir: &Dir, name: &str, vars: &[(String, String)]) -> Run {
        let stderr = dir.path(&format!("{name}.stderr"));
        let marker = dir.path(&format!("{name}.started"));
        let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
        let child = Command::new(bin())
            .args(["sh", "-c", r#"touch "$1"; exit 7"#, "sh"])
            .arg(&marker)
            .env_clear()
            .env("PATH", path)
            .envs(vars.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&stderr).expect("create the stderr file"))
            .spawn()
            .expect("spawn etcd-await-election");
        Run {
            child,
            stderr,
            marker,
        }
    }

    /// The exit status, polled until `timeout` (then the wrapper is killed and this panics).
    fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "no exit within {timeout:?}; stderr:\n{}",
                self.stderr()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn started(&self) -> bool {
        self.marker.exists()
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A valid election on a dead endpoint (nothing listens on port 9), plus `extra` (suffix, value).
fn election(extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let base = [
        ("LOCK_NAME", "lock"),
        ("IDENTITY", "me"),
        ("ENDPOINTS", "http://127.0.0.1:9"),
    ];
    // Later entries override earlier ones, as in a shell.
    let vars: BTreeMap<String, String> = base
        .iter()
        .chain(TIMINGS.iter())
        .chain(extra)
        .map(|(k, v)| (var(k), (*v).to_owned()))
        .collect();
    vars.into_iter().collect()
}

#[test]
fn new_configuration_errors_exit_78_naming_variable_and_value() {
    let dir = Dir::new();
    let fifo = dir.path("fifo");
    let made = Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("run mkfifo");
    assert!(made.success());
    let fifo = fifo.to_string_lossy().into_owned();
    let latin1 = dir.file("latin1", b"SECRET-\xe9\n");
    let empty = dir.file("empty", b"\n");
    let big = dir.file("big", &vec![b'S'; 64 * 1024 + 1]);
    let pw = dir.file("pw", b"SECRET-pw\n");
    let missing = dir.path("missing").to_string_lossy().into_owned();
    let folder = dir.0.to_string_lossy().into_owned();
    // (changes, variable named, value shown, more text the line must hold)
    type Case<'a> = (Vec<(&'a str, &'a str)>, &'a str, &'a str, &'a str);
    let cases: Vec<Case> = vec![
        (
            vec![("RETRY_PERIOD", "1ms")],
            "RETRY_PERIOD",
            "1ms",
            "at least 100ms",
        ),
        (
            vec![("RETRY_PERIOD", "99ms")],
            "RETRY_PERIOD",
            "99ms",
            "at least 100ms",
        ),
        (
            vec![("RENEW_DEADLINE", "1s")],
            "RENEW_DEADLINE",
            "1s",
            "min(ETCD_AWAIT_ELECTION_RETRY_PERIOD (500ms), ETCD_AWAIT_ELECTION_LEASE_DURATION \
             (3s) / 3) = 500ms",
        ),
        (
            vec![
                ("LEASE_DURATION", "15"),
                ("RENEW_DEADLINE", ""),
                ("RETRY_PERIOD", "5s"),
            ],
            "RENEW_DEADLINE",
            "",
            "its default 10s is not more than twice the keepalive interval",
        ),
        (
            vec![
                ("USERNAME", "u"),
                ("PASSWORD", "SECRET"),
                ("PASSWORD_FILE", &pw),
            ],
            "PASSWORD_FILE",
            &pw,
            "not both",
        ),
        (
            vec![("USERNAME", "u"), ("PASSWORD_FILE", &fifo)],
            "PASSWORD_FILE",
            &fifo,
            "it is a FIFO",
        ),
        (
            vec![("USERNAME", "u"), ("PASSWORD_FILE", "/dev/zero")],
            "PASSWORD_FILE",
            "/dev/zero",
            "it is a device",
        ),
        (
            vec![("USERNAME", "u"), ("PASSWORD_FILE", &folder)],
            "PASSWORD_FILE",
            &folder,
            "it is a directory",
        ),
        (
            vec![("USERNAME", "u"), ("PASSWORD_FILE", &missing)],
            "PASSWORD_FILE",
            &missing,
            "cannot read it",
        ),
        (
            vec![("USERNAME", "u"), ("PASSWORD_FILE", &latin1)],
            "PASSWORD_FILE",
            &latin1,
            "not valid UTF-8",
        ),
        (
            vec![("USERNAME_FILE", &empty), ("PASSWORD", "SECRET")],
            "USERNAME_FILE",
            &empty,
            "it is empty",
        ),
        (
            vec![("USERNAME_FILE", &big), ("PASSWORD", "SECRET")],
            "USERNAME_FILE",
            &big,
            "65537 bytes",
        ),
        (
            vec![("USERNAME_FILE", &pw)],
            "PASSWORD",
            "",
            "required because ETCD_AWAIT_ELECTION_USERNAME_FILE is set",
        ),
        (
            vec![("RECAMPAIGN", "sometimes")],
            "RECAMPAIGN",
            "sometimes",
            "off, on-loss or always",
        ),
        (vec![("HOLDERS", "0")], "HOLDERS", "0", "from 1 to 1000"),
        (
            vec![("HOLDERS", "1001")],
            "HOLDERS",
            "1001",
            "from 1 to 1000",
        ),
    ];
    for (i, (changes, variable, value, text)) in cases.iter().enumerate() {
        let mut run = Run::start(&dir, &format!("case-{i}"), &election(changes));
        let status = run.wait(SOON);
        let stderr = run.stderr();
        let named = var(variable);
        let shown = if value.is_empty() {
            format!("{named} is not set: ")
        } else {
            format!("{named}={value:?}: expected ")
        };
        let context = format!("{changes:?}: stderr:\n{stderr}");
        assert_eq!(status.code(), Some(78), "{context}");
        assert!(stderr.contains(&shown), "no {shown:?} in {context}");
        assert!(stderr.contains(text), "no {text:?} in {context}");
        assert!(!stderr.contains("SECRET"), "a secret shown in {context}");
        assert_eq!(stderr.lines().count(), 1, "{context}");
        assert!(!run.started(), "the command started for {context}");
    }
}

#[test]
fn renew_deadline_error_names_both_variables() {
    let dir = Dir::new();
    let changes = [
        ("LEASE_DURATION", "3"),
        ("RENEW_DEADLINE", "2s"),
        ("RETRY_PERIOD", "1500ms"),
    ];
    let mut run = Run::start(&dir, "both", &election(&changes));
    assert_eq!(run.wait(SOON).code(), Some(78), "{}", run.stderr());
    assert_eq!(
        run.stderr().trim_end(),
        "etcd-await-election: ETCD_AWAIT_ELECTION_RENEW_DEADLINE=\"2s\": expected more than twice \
         the keepalive interval min(ETCD_AWAIT_ELECTION_RETRY_PERIOD (1500ms), \
         ETCD_AWAIT_ELECTION_LEASE_DURATION (3s) / 3) = 1s, so that two renewals can be tried \
         before the deadline"
    );
    assert!(!run.started());
}

#[test]
fn disabled_mode_prints_one_hint_line_and_runs_the_command() {
    let dir = Dir::new();
    let mut quiet = Run::start(&dir, "quiet", &[("ETCDCTL_API".into(), "3".into())]);
    assert_eq!(quiet.wait(SOON).code(), Some(7), "{}", quiet.stderr());
    assert!(quiet.started());
    assert_eq!(quiet.stderr(), "", "no hint without a reason");

    let vars = [
        (
            "ETCDCTL_ENDPOINTS".to_owned(),
            "http://SECRET-host:2379".to_owned(),
        ),
        (var("LOCKNAME"), "SECRET-lock".to_owned()),
    ];
    let mut run = Run::start(&dir, "hinted", &vars);
    assert_eq!(run.wait(SOON).code(), Some(7), "{}", run.stderr());
    assert!(run.started(), "the command did not run");
    let stderr = run.stderr();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    for text in [
        "etcd-await-election: warning: running the command without an election although ",
        "ETCDCTL_ENDPOINTS (etcdctl's; not read here)",
        "ETCD_AWAIT_ELECTION_LOCKNAME (unknown; did you mean ETCD_AWAIT_ELECTION_LOCK_NAME?)",
        "an election needs ETCD_AWAIT_ELECTION_LOCK_NAME, ETCD_AWAIT_ELECTION_IDENTITY and \
         ETCD_AWAIT_ELECTION_ENDPOINTS",
    ] {
        assert!(stderr.contains(text), "no {text:?} in {stderr}");
    }
    assert!(!stderr.contains("SECRET"), "a value shown: {stderr}");
}

#[test]
fn election_mode_warns_about_a_misspelled_variable_and_carries_on() {
    let dir = Dir::new();
    let mut run = Run::start(&dir, "typo", &election(&[("FORCE_AQUIRE", "1")]));
    let expected = "ignoring unknown variable ETCD_AWAIT_ELECTION_FORCE_AQUIRE (did you mean \
                    ETCD_AWAIT_ELECTION_FORCE_ACQUIRE?)";
    let deadline = Instant::now() + SOON;
    while !run.stderr().contains(expected) {
        assert!(
            matches!(run.child.try_wait(), Ok(None)),
            "exited without the warning: {}",
            run.stderr()
        );
        assert!(Instant::now() < deadline, "no warning: {}", run.stderr());
        thread::sleep(Duration::from_millis(20));
    }
    let line = run
        .stderr()
        .lines()
        .find(|l| l.contains(expected))
        .map(str::to_owned);
    assert!(
        line.is_some_and(|l| l.contains(" warn ")),
        "not a warning line: {}",
        run.stderr()
    );
    assert!(!run.started(), "no etcd, no leadership, no command");
}

#[test]
fn credentials_from_files_authenticate() {
    let etcd = Etcd::start_auth();
    let dir = Dir::new();
    let user = dir.file("user", format!("{}\n", support::USER).as_bytes());
    let pass = dir.file("pass", format!("{}\r\n", support::PASSWORD).as_bytes());
    let vars = election(&[
        ("ENDPOINTS", &etcd.client_url()),
        ("LOCK_NAME", &unique_name("lock")),
        ("USERNAME_FILE", &user),
        ("PASSWORD_FILE", &pass),
    ]);
    let mut run = Run::start(&dir, "files", &vars);
    assert_eq!(run.wait(SOON).code(), Some(7), "{}", run.stderr());
    assert!(run.started(), "the command did not run: {}", run.stderr());
    assert!(
        !run.stderr().contains(support::PASSWORD),
        "{}",
        run.stderr()
    );
}

#[test]
fn env_without_prefix_is_not_ours() {
    // An unrelated name that merely contains ours is not warned about.
    let dir = Dir::new();
    let vars: Vec<(String, String)> = vec![("MY_ETCD_AWAIT_ELECTION_LOCK_NAME".into(), "x".into())];
    let mut run = Run::start(&dir, "unrelated", &vars);
    assert_eq!(run.wait(SOON).code(), Some(7));
    assert_eq!(run.stderr(), "");
}
