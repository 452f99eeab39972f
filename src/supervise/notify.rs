//! systemd's notify protocol (`sd_notify`), without a library: one datagram per message on the Unix
//! socket named by `NOTIFY_SOCKET` (a path, or `@name` in the abstract namespace).
//!
//! - `READY=1` once the candidate is in the queue: a waiter is a healthy service.
//! - `STATUS=…` on every change: "waiting behind X", "leading, revision N", "campaigning again".
//! - `WATCHDOG=1` every `WATCHDOG_USEC / 2` while renewals succeed (the last acknowledged one is
//!   younger than RENEW_DEADLINE), so systemd restarts a wrapper whose renewals are stuck.
//!
//! Sending never blocks: the socket is non-blocking, and a datagram the socket cannot take is
//! dropped. Without `NOTIFY_SOCKET` everything here does nothing.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crate::election::RenewalClock;
use crate::log;

/// The variables of the protocol, which describe our contract with systemd, not the command's.
pub(super) const VARIABLES: [&str; 3] = ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"];

/// Where notifications go, if anywhere.
pub(super) struct Notifier {
    target: Option<Arc<Target>>,
}

struct Target {
    socket: UnixDatagram,
    address: SocketAddr,
}

impl Target {
    fn send(&self, message: &str) {
        let _ = self.socket.send_to_addr(message.as_bytes(), &self.address);
    }
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET` (and `WATCHDOG_USEC`, when `WATCHDOG_PID` is unset or ours) and starts
    /// the watchdog thread if asked for.
    pub(super) fn from_env(clock: Arc<RenewalClock>, renew_deadline: Duration) -> Notifier {
        let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
            return Notifier { target: None };
        };
        let target = match open(&path.to_string_lossy()) {
            Ok(target) => Arc::new(target),
            Err(error) => {
                log::warn("cannot use NOTIFY_SOCKET", &[("error", &error)]);
                return Notifier { target: None };
            }
        };
        if let Some(every) = watchdog_interval() {
            let pinger = Arc::clone(&target);
            let spawned = thread::Builder::new()
                .name("watchdog".into())
                .spawn(move || ping_forever(&pinger, &clock, renew_deadline, every));
            if let Err(error) = spawned {
                log::warn("cannot start the systemd watchdog", &[("error", &error)]);
            }
        }
        Notifier {
            target: Some(target),
        }
    }

    /// `READY=1` (systemd ignores repeats).
    pub(super) fn ready(&self) {
        self.send("READY=1");
    }

    /// `STATUS=<text>`.
    pub(super) fn status(&self, text: &str) {
        // A status is one line: a newline would start another assignment.
        self.send(&format!("STATUS={}", text.replace('\n', " ")));
    }

    fn send(&self, message: &str) {
        if let Some(target) = &self.target {
            target.send(message);
        }
    }
}

/// A non-blocking socket for `path` (`@name`: the abstract namespace).
fn open(path: &str) -> std::io::Result<Target> {
    let address = match path.strip_prefix('@') {
        Some(name) => SocketAddr::from_abstract_name(name.as_bytes())?,
        None => SocketAddr::from_pathname(path)?,
    };
    let socket = UnixDatagram::unbound()?;
    socket.set_nonblocking(true)?;
    Ok(Target { socket, address })
}

/// Half of `WATCHDOG_USEC`, when the watchdog is meant for this process.
fn watchdog_interval() -> Option<Duration> {
    let micros: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.trim() != std::process::id().to_string() {
            return None;
        }
    }
    (micros > 0).then(|| Duration::from_micros(micros / 2))
}

/// Sends `WATCHDOG=1` every `every` while the last renewal is younger than `renew_deadline`.
fn ping_forever(target: &Target, clock: &RenewalClock, renew_deadline: Duration, every: Duration) {
    loop {
        if clock.age().is_some_and(|age| age < renew_deadline) {
            target.send("WATCHDOG=1");
        }
        thread::sleep(every);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_reach_a_path_socket_and_an_abstract_one() {
        let dir = std::env::temp_dir().join(format!("eae-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        let target = open(path.to_str().unwrap()).unwrap();
        target.send("READY=1");
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        let name = format!("eae-notify-test-{}", std::process::id());
        let abstract_listener =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        open(&format!("@{name}")).unwrap().send("STATUS=x");
        let n = abstract_listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STATUS=x");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
