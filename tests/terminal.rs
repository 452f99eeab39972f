//! Interactive use: under a real pseudo-terminal, Ctrl-C reaches the command exactly once and the
//! wrapper exits with the command's code. Python's `pty` module drives the terminal.

mod support;

use std::process::Command;

use support::{unique_name, Etcd};

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
    let etcd = Etcd::start();
    // Reading the terminal works only if the command owns its foreground (else SIGTTIN stops it).
    let child = "trap 'echo got-int; exit 7' INT; echo ready; read line; echo \"read:$line\"; \
                 while :; do sleep 0.05; done";
    let out = Command::new("python3")
        .args(["-c", DRIVER])
        .arg(support::bin())
        .args(["sh", "-c", child])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("ETCD_AWAIT_ELECTION_ENDPOINTS", etcd.client_url())
        .env("ETCD_AWAIT_ELECTION_LOCK_NAME", unique_name("lock"))
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
