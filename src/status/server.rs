//! The status endpoint's server: one thread and one `poll(2)` loop for every connection.
//!
//! Rule: nothing a client does can hold the loop or grow the process. Every socket is non-blocking;
//! each connection has a deadline (its request head within [`HEAD_DEADLINE`], its answer within
//! [`WRITE_DEADLINE`], then [`LINGER`] for the client to close). At most [`connection_cap`]
//! connections are open; past it, a new connection closes the oldest one, so a fresh probe is
//! served even under a flood of idle or slow clients. Each connection gets one answer ([`http`]),
//! then is closed.
//!
//! [`http`]: super::http

use std::collections::VecDeque;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::http::{refusal, respond_to, Head, Progress, MAX_HEAD};
use super::Status;

/// Most connections open at once, whatever RLIMIT_NOFILE allows (see [`connection_cap`]).
const MAX_CONNECTIONS: usize = 1024;
/// Fewest connections open at once, however low RLIMIT_NOFILE is.
const MIN_CONNECTIONS: usize = 32;
/// Connections accepted per loop turn; below [`MIN_CONNECTIONS`], so a turn never evicts its own.
const ACCEPT_BATCH: usize = 16;
/// The kernel's queue of connections not yet accepted. A full queue drops SYNs, which clients
/// retry only after 1 s: the delay a probe must not see.
const BACKLOG: libc::c_int = 1024;
/// Time a client has to send its request head.
const HEAD_DEADLINE: Duration = Duration::from_secs(2);
/// Time a client has to take its answer.
const WRITE_DEADLINE: Duration = Duration::from_secs(2);
/// Time a client has, after its answer, to close; unread bytes would otherwise turn our close into
/// a reset that can destroy the answer before the client reads it.
const LINGER: Duration = Duration::from_millis(500);
/// Pause of the listener when accept fails for want of resources we cannot free.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// The endpoint's socket, bound (at start, before anything else can fail or hold a lease) but not
/// yet served.
pub struct Listener(TcpListener);

/// Binds `address`: `host:port`, `[v6]:port`, or `:port` for every IPv4 interface.
pub fn bind(address: &str) -> io::Result<Listener> {
    let address = match address.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => address.to_string(),
    };
    let listener = TcpListener::bind(&address)?;
    listener.set_nonblocking(true)?;
    deepen_backlog(&listener)?;
    Ok(Listener(listener))
}

/// Serves the endpoint on `listener` on one thread; returns the address it listens on.
pub fn serve(listener: Listener, status: Arc<Status>) -> io::Result<SocketAddr> {
    let Listener(listener) = listener;
    let bound = listener.local_addr()?;
    let server = Server {
        listener,
        status,
        cap: connection_cap(nofile_limit()),
        connections: VecDeque::new(),
        paused_until: None,
    };
    thread::Builder::new()
        .name("status".into())
        .spawn(move || server.run())?;
    Ok(bound)
}

/// Half the file descriptors RLIMIT_NOFILE allows, so the election always finds some, within
/// [`MIN_CONNECTIONS`]..=[`MAX_CONNECTIONS`].
fn connection_cap(nofile: u64) -> usize {
    usize::try_from(nofile / 2)
        .unwrap_or(usize::MAX)
        .clamp(MIN_CONNECTIONS, MAX_CONNECTIONS)
}

/// The soft RLIMIT_NOFILE (0 when it cannot be read).
fn nofile_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given, which outlives the call.
    match unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } {
        0 => limit.rlim_cur,
        _ => 0,
    }
}

/// std listens with a backlog of 128; a burst larger than that would lose SYNs.
fn deepen_backlog(listener: &TcpListener) -> io::Result<()> {
    // SAFETY: the descriptor is owned by `listener`, alive for the call; listen on a socket that
    // already listens only changes its backlog.
    match unsafe { libc::listen(listener.as_raw_fd(), BACKLOG) } {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

struct Server {
    listener: TcpListener,
    status: Arc<Status>,
    cap: usize,
    /// Oldest first.
    connections: VecDeque<Connection>,
    /// Accept failed for want of descriptors or memory; the listener rests until then.
    paused_until: Option<Instant>,
}

struct Connection {
    stream: TcpStream,
    deadline: Instant,
    phase: Phase,
}

enum Phase {
    /// Reading the request head.
    Head(Head),
    /// Writing the answer.
    Answer {
        bytes: Vec<u8>,
        sent: usize,
    },
    /// Answered and our side shut: waiting for the client to close.
    Linger,
    Closed,
}

/// What a read found.
enum Received {
    Bytes(usize),
    Nothing,
    /// End of stream or an error: the client is gone.
    Gone,
}

impl Server {
    fn run(mut self) {
        let mut fds = Vec::with_capacity(self.cap + 1);
        let mut scratch = vec![0u8; MAX_HEAD];
        loop {
            let now = Instant::now();
            let accepting = self.paused_until.is_none_or(|until| now >= until);
            if accepting {
                self.paused_until = None;
            }
            fds.clear();
            let listener = if accepting {
                self.listener.as_raw_fd()
            } else {
                -1
            };
            fds.push(pollfd(listener, libc::POLLIN));
            let interest = |c: &Connection| pollfd(c.stream.as_raw_fd(), c.interest());
            fds.extend(self.connections.iter().map(interest));
            if wait(&mut fds, self.timeout(now)).is_err() {
                // Only ENOMEM and the like: rest rather than spin.
                thread::sleep(ACCEPT_PAUSE);
                continue;
            }
            let now = Instant::now();
            for (connection, fd) in self.connections.iter_mut().zip(&fds[1..]) {
                if fd.revents != 0 {
                    connection.advance(&mut scratch, &self.status, now);
                }
                if now >= connection.deadline {
                    connection.phase = Phase::Closed;
                }
            }
            self.connections.retain(Connection::is_open);
            if fds[0].revents != 0 {
                self.accept(&mut scratch, now);
            }
        }
    }

    /// Milliseconds until the nearest deadline or the end of a pause; -1 (forever) without either.
    fn timeout(&self, now: Instant) -> libc::c_int {
        let deadlines = self.connections.iter().map(|c| c.deadline);
        match deadlines.chain(self.paused_until).min() {
            None => -1,
            Some(next) => {
                let left = next
                    .saturating_duration_since(now)
                    .as_micros()
                    .div_ceil(1000);
                libc::c_int::try_from(left).unwrap_or(libc::c_int::MAX)
            }
        }
    }

    /// Accepts up to [`ACCEPT_BATCH`] connections. Out of descriptors, it closes the oldest
    /// connection to make room, once and only before the batch took any: Linux fails accept for
    /// want of a descriptor before it looks at the queue, so only poll's word says one waits.
    /// With none to close, or out of memory, it rests the listener for [`ACCEPT_PAUSE`].
    fn accept(&mut self, scratch: &mut [u8], now: Instant) {
        let mut made_room = false;
        for taken in 0..ACCEPT_BATCH {
            match self.listener.accept() {
                Ok((stream, _)) => self.admit(stream, scratch, now),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::ConnectionAborted | ErrorKind::Interrupted
                    ) => {}
                Err(e) if out_of_descriptors(&e) => {
                    if taken > 0 || made_room {
                        return;
                    }
                    if self.connections.pop_front().is_none() {
                        self.paused_until = Some(now + ACCEPT_PAUSE);
                        return;
                    }
                    made_room = true;
                }
                Err(_) => {
                    self.paused_until = Some(now + ACCEPT_PAUSE);
                    return;
                }
            }
        }
    }

    /// Takes a new connection, closing the oldest one at the cap, and reads what already came.
    fn admit(&mut self, stream: TcpStream, scratch: &mut [u8], now: Instant) {
        if stream.set_nonblocking(true).is_err() {
            return;
        }
        if self.connections.len() >= self.cap {
            self.connections.pop_front();
        }
        let mut connection = Connection {
            stream,
            deadline: now + HEAD_DEADLINE,
            phase: Phase::Head(Head::default()),
        };
        connection.advance(scratch, &self.status, now);
        if connection.is_open() {
            self.connections.push_back(connection);
        }
    }
}

fn out_of_descriptors(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

fn pollfd(fd: RawFd, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

/// poll(2) for `timeout` ms; an interrupted wait is an empty one.
fn wait(fds: &mut [libc::pollfd], timeout: libc::c_int) -> io::Result<()> {
    let count = libc::nfds_t::try_from(fds.len()).unwrap_or(libc::nfds_t::MAX);
    // SAFETY: `fds` is an exclusively borrowed slice of initialised pollfd structs and `count` is
    // at most its length; poll only writes their `revents` fields within the call.
    if unsafe { libc::poll(fds.as_mut_ptr(), count, timeout) } >= 0 {
        return Ok(());
    }
    let error = io::Error::last_os_error();
    match error.kind() {
        ErrorKind::Interrupted => Ok(()),
        _ => Err(error),
    }
}

impl Connection {
    fn is_open(&self) -> bool {
        !matches!(self.phase, Phase::Closed)
    }

    fn interest(&self) -> libc::c_short {
        match self.phase {
            Phase::Answer { .. } => libc::POLLOUT,
            _ => libc::POLLIN,
        }
    }

    /// Does what the socket allows now: reads the head (and answers it), writes, or drains.
    fn advance(&mut self, scratch: &mut [u8], status: &Status, now: Instant) {
        match &mut self.phase {
            Phase::Head(head) => match receive(&mut self.stream, scratch) {
                Received::Bytes(read) => match head.feed(&scratch[..read]) {
                    Progress::More => {}
                    Progress::Complete(line) => self.answer(respond_to(&line, status), now),
                    Progress::LineTooLong => self.answer(refusal(414), now),
                    Progress::TooLarge => self.answer(refusal(431), now),
                },
                Received::Nothing => {}
                Received::Gone => self.phase = Phase::Closed,
            },
            Phase::Answer { .. } => self.send(now),
            Phase::Linger => {
                if let Received::Gone = receive(&mut self.stream, scratch) {
                    self.phase = Phase::Closed;
                }
            }
            Phase::Closed => {}
        }
    }

    fn answer(&mut self, bytes: Vec<u8>, now: Instant) {
        self.phase = Phase::Answer { bytes, sent: 0 };
        self.deadline = now + WRITE_DEADLINE;
        self.send(now);
    }

    /// Writes what the socket takes; once all is written, shuts our side and lingers.
    fn send(&mut self, now: Instant) {
        let Phase::Answer { bytes, sent } = &mut self.phase else {
            return;
        };
        while *sent < bytes.len() {
            match self.stream.write(&bytes[*sent..]) {
                Ok(0) => break,
                Ok(written) => *sent += written,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(_) => break,
            }
        }
        if *sent < bytes.len() || self.stream.shutdown(Shutdown::Write).is_err() {
            self.phase = Phase::Closed;
            return;
        }
        self.phase = Phase::Linger;
        self.deadline = now + LINGER;
    }
}

fn receive(stream: &mut TcpStream, buffer: &mut [u8]) -> Received {
    loop {
        match stream.read(buffer) {
            Ok(0) => return Received::Gone,
            Ok(read) => return Received::Bytes(read),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Received::Nothing,
            Err(_) => return Received::Gone,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status() -> Arc<Status> {
        Arc::new(crate::status::tests::with(None, None))
    }

    #[test]
    fn the_cap_is_half_the_descriptor_limit_within_bounds() {
        assert_eq!(connection_cap(0), MIN_CONNECTIONS);
        assert_eq!(connection_cap(1024), 512);
        assert_eq!(connection_cap(1_048_576), MAX_CONNECTIONS);
        assert_eq!(connection_cap(u64::MAX), MAX_CONNECTIONS);
    }

    fn start() -> SocketAddr {
        serve(bind("127.0.0.1:0").unwrap(), status()).unwrap()
    }

    /// One GET; the status code, or `None` without an answer within 2 s.
    fn probe(address: SocketAddr) -> Option<u16> {
        let mut stream = TcpStream::connect(address).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        stream.write_all(b"GET /healthz HTTP/1.1\r\n\r\n").ok()?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).ok()?;
        answer.get(9..12)?.parse().ok()
    }

    /// Raises the soft RLIMIT_NOFILE towards `want` (within the hard limit); returns the new one.
    fn raise_nofile(want: u64) -> u64 {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit and setrlimit only access the struct they are given, which outlives
        // the calls.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < want {
                limit.rlim_cur = want.min(limit.rlim_max);
                libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
            }
        }
        nofile_limit()
    }

    #[test]
    fn past_the_cap_the_oldest_connection_makes_room() {
        let limit = raise_nofile(8192);
        let address = start();
        let cap = connection_cap(nofile_limit());
        // Both ends of every connection live in this process.
        let needed = 2 * (cap as u64 + 50) + 100;
        assert!(
            limit >= needed,
            "RLIMIT_NOFILE {limit} < {needed}: raise the hard limit"
        );
        let mut idle: Vec<TcpStream> = (0..cap + 50)
            .map(|_| TcpStream::connect(address).unwrap())
            .collect();
        assert_eq!(probe(address), Some(200), "a fresh probe is served");
        let oldest = &mut idle[0];
        oldest
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        assert_eq!(
            oldest.read(&mut [0; 16]).ok(),
            Some(0),
            "the oldest was closed"
        );
        let newest = idle.last_mut().unwrap();
        newest.write_all(b"GET /healthz HTTP/1.1\r\n\r\n").unwrap();
        newest
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let mut answer = String::new();
        newest.read_to_string(&mut answer).unwrap();
        assert!(
            answer.ends_with("\r\n\r\nok\n"),
            "the newest is still served: {answer}"
        );
    }

    /// CPU time of this process (user and system).
    fn cpu_time() -> Duration {
        // SAFETY: an all-zero rusage is a valid value, and getrusage only writes the struct it
        // is given, which outlives the call.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
        let time = |t: libc::timeval| {
            Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
        };
        time(usage.ru_utime) + time(usage.ru_stime)
    }

    fn open_descriptors() -> usize {
        std::fs::read_dir("/proc/self/fd").unwrap().count()
    }

    /// Opens files until RLIMIT_NOFILE is reached; they hold every free descriptor.
    fn exhaust_descriptors() -> Vec<std::fs::File> {
        let mut held = Vec::new();
        while let Ok(file) = std::fs::File::open("/dev/null") {
            held.push(file);
        }
        held
    }

    fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !condition() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Runs in a copy of this test binary of its own, since it lowers RLIMIT_NOFILE.
    #[test]
    fn at_the_descriptor_limit_accept_neither_spins_nor_starves_probes() {
        const NAME: &str =
            "status::server::tests::at_the_descriptor_limit_accept_neither_spins_nor_starves_probes";
        if std::env::var_os("EAE_TEST_DESCRIPTOR_LIMIT").is_none() {
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", NAME, "--nocapture", "--test-threads=1"])
                .env("EAE_TEST_DESCRIPTOR_LIMIT", "1")
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success() && text.contains("1 passed"), "{text}");
            return;
        }
        let address = start();
        let open = u64::try_from(open_descriptors()).unwrap();
        let limit = libc::rlimit {
            rlim_cur: open + 16,
            rlim_max: nofile_limit().max(open + 16),
        };
        // SAFETY: setrlimit only reads the struct it is given, which outlives the call.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);

        // No descriptor and no connection to close: the listener rests instead of spinning.
        let mut held = exhaust_descriptors();
        held.pop();
        let mut starved = TcpStream::connect(address).unwrap();
        starved.write_all(b"GET /healthz HTTP/1.1\r\n\r\n").unwrap();
        starved
            .set_read_timeout(Some(Duration::from_secs(1)))
            .unwrap();
        let before = cpu_time();
        assert!(
            starved.read(&mut [0; 64]).is_err(),
            "answered without a descriptor?"
        );
        let spent = cpu_time() - before;
        assert!(
            spent < Duration::from_millis(300),
            "accept spun: {spent:?} of CPU in 1 s"
        );
        held.truncate(held.len().saturating_sub(4));
        starved
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let mut answer = String::new();
        starved.read_to_string(&mut answer).unwrap();
        assert!(
            answer.ends_with("\r\n\r\nok\n"),
            "served once descriptors came back: {answer}"
        );
        drop(starved);

        // Out of descriptors with a connection open: the oldest one makes room for the probe.
        drop(held);
        let open = usize::try_from(open).unwrap();
        wait_for("the server closes the probe", || open_descriptors() == open);
        let mut idle = TcpStream::connect(address).unwrap();
        wait_for("the server holds the idle connection", || {
            open_descriptors() == open + 2
        });
        let mut held = exhaust_descriptors();
        held.pop();
        let mut probe = TcpStream::connect(address).unwrap();
        probe.write_all(b"GET /healthz HTTP/1.1\r\n\r\n").unwrap();
        probe
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let mut answer = String::new();
        probe.read_to_string(&mut answer).unwrap();
        assert!(
            answer.ends_with("\r\n\r\nok\n"),
            "probe at the limit: {answer}"
        );
        idle.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        assert_eq!(
            idle.read(&mut [0; 16]).ok(),
            Some(0),
            "the idle one was closed"
        );
        drop(held);
    }
}
