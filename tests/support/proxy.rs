//! A loopback TCP proxy that tests control, to cut one client off from etcd while etcd stays up.
//!
//! [`Proxy::start`] listens on a free 127.0.0.1 port and forwards every accepted connection to the
//! target with two threads (one per direction). The faults it injects keep every socket open, as a
//! network partition does; data just stops:
//!
//! - [`Proxy::freeze`] stops forwarding bytes in both directions on every connection, current and
//!   future (new connections are accepted, and connected upstream, but carry nothing);
//! - [`Proxy::freeze_existing`] stops only the connections open now; later ones pass;
//! - [`Proxy::hold_matching`] stops every connection, current or future, once the bytes its client
//!   sent contain a pattern (e.g. `/v3/lease/keepalive`: the request carrying it is not forwarded;
//!   [`Proxy::held`] counts them);
//! - [`Proxy::thaw`] lets everything flow again (held bytes are delivered late) and forgets the
//!   patterns;
//! - [`Proxy::close_all`] closes every connection, dropping what was held.
//!
//! An end of stream (FIN) is forwarded like data: it waits while its connection is frozen.
//! When `freeze` or `freeze_existing` returns, no write in progress remains: nothing reaches the
//! other side of a frozen connection after that. [`Proxy::last_forwarded_upstream`] is the moment
//! the last bytes were handed to the target (taken *before* the write, so the target received them
//! later), a lower bound for when the target last heard from any client. Bytes coming back from the
//! target are kept per connection (the first 256 KiB) for [`Proxy::connections_with`].
//! Dropping the proxy closes everything and stops its threads.
//!
//! Each accepted connection is connected upstream in a thread of its own (which then pumps one
//! direction), so one slow upstream connect never holds up the next accept. A connection the
//! proxy could not set up is closed, and why is kept for [`Proxy::failures`]: a test that sees a
//! connection close says so instead of reporting silence.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime};

/// Kept bytes per connection, target to client.
const KEPT_BYTES: usize = 256 * 1024;
/// Kept bytes per connection, client to target (for [`Proxy::hold_matching`]).
const KEPT_REQUEST_BYTES: usize = 64 * 1024;
/// How long `freeze` waits for writes in progress to finish.
const DRAIN_DEADLINE: Duration = Duration::from_secs(5);

/// A running proxy; see the module docs.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

struct Shared {
    target: SocketAddr,
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    stopped: bool,
    /// Every connection, new ones included, is frozen.
    frozen: bool,
    next_id: u64,
    conns: HashMap<u64, Conn>,
    /// Writes in progress (any connection, either direction).
    writing: usize,
    accepted: usize,
    last_upstream: Option<SystemTime>,
    /// What the target sent on each connection (bounded), kept after the connection ends.
    from_target: HashMap<u64, Vec<u8>>,
    /// Connections whose client sent one of these are frozen.
    hold: Vec<Vec<u8>>,
    /// How many connections [`Proxy::hold_matching`] has frozen.
    held: usize,
    /// Why connections could not be set up (bounded).
    failures: Vec<String>,
}

struct Conn {
    frozen: bool,
    /// What the client sent (bounded).
    sent: Vec<u8>,
    closed: bool,
    client: TcpStream,
    server: TcpStream,
    /// Pump threads still running (2 at first).
    pumps: u8,
}

impl Proxy {
    /// Starts a proxy to `target` (`host:port`, e.g. [`super::Etcd::endpoint_hostport`]).
    pub fn start(target: &str) -> Proxy {
        let target: SocketAddr = target
            .parse()
            .unwrap_or_else(|e| panic!("proxy target {target:?}: {e}"));
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy: bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("proxy: local_addr");
        let shared = Arc::new(Shared {
            target,
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        });
        let accepting = Arc::clone(&shared);
        let acceptor = thread::Builder::new()
            .name("proxy-accept".into())
            .spawn(move || accept_loop(listener, accepting))
            .expect("proxy: spawn acceptor");
        Proxy {
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// `http://127.0.0.1:PORT`, to use as an etcd endpoint.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `127.0.0.1:PORT`.
    pub fn hostport(&self) -> String {
        self.addr.to_string()
    }

    /// Stops forwarding on every connection, including those accepted later. Returns once no write
    /// is in progress.
    pub fn freeze(&self) {
        let mut state = self.shared.lock();
        state.frozen = true;
        self.shared.drain(state);
    }

    /// Stops forwarding on the connections open now; connections accepted later pass. Returns once
    /// no write is in progress. Returns how many connections were frozen.
    pub fn freeze_existing(&self) -> usize {
        let mut state = self.shared.lock();
        let mut frozen = 0;
        for conn in state.conns.values_mut().filter(|c| !c.closed) {
            conn.frozen = true;
            frozen += 1;
        }
        self.shared.drain(state);
        frozen
    }

    /// Freezes every connection, open now or accepted later, whose client has sent `pattern` (the
    /// chunk that completes it is not forwarded). Returns once no write is in progress.
    pub fn hold_matching(&self, pattern: &[u8]) {
        let mut state = self.shared.lock();
        state.hold.push(pattern.to_vec());
        for conn in state.conns.values_mut() {
            if contains(&conn.sent, pattern) {
                conn.frozen = true;
            }
        }
        self.shared.drain(state);
    }

    /// Forwards again everywhere (what was held is delivered now) and forgets the patterns of
    /// [`Proxy::hold_matching`].
    pub fn thaw(&self) {
        let mut state = self.shared.lock();
        state.frozen = false;
        state.hold.clear();
        for conn in state.conns.values_mut() {
            conn.frozen = false;
        }
        self.shared.changed.notify_all();
    }

    /// Closes every open connection (both sockets), dropping held bytes.
    pub fn close_all(&self) {
        let mut state = self.shared.lock();
        for conn in state.conns.values_mut() {
            conn.closed = true;
            let _ = conn.client.shutdown(Shutdown::Both);
            let _ = conn.server.shutdown(Shutdown::Both);
        }
        self.shared.changed.notify_all();
    }

    /// Why connections could not be set up (closed at once instead), oldest first.
    pub fn failures(&self) -> Vec<String> {
        self.shared.lock().failures.clone()
    }

    /// Connections accepted and set up so far.
    pub fn accepted(&self) -> usize {
        self.shared.lock().accepted
    }

    /// Connections open now (not yet finished in both directions).
    pub fn open_connections(&self) -> usize {
        self.shared.lock().conns.len()
    }

    /// When bytes were last handed to the target (taken just before the write).
    pub fn last_forwarded_upstream(&self) -> Option<SystemTime> {
        self.shared.lock().last_upstream
    }

    /// How many connections [`Proxy::hold_matching`] has stopped so far.
    pub fn held(&self) -> usize {
        self.shared.lock().held
    }

    /// How many connections (open or finished) carried `needle` from the target to the client.
    pub fn connections_with(&self, needle: &[u8]) -> usize {
        self.shared
            .lock()
            .from_target
            .values()
            .filter(|bytes| contains(bytes, needle))
            .count()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.lock().stopped = true;
        self.close_all();
        // Wake the acceptor, which then sees `stopped`.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records why a connection could not be set up (the first 100 reasons).
    fn fail(&self, why: String) {
        let mut state = self.lock();
        if state.failures.len() < 100 {
            state.failures.push(why);
        }
    }

    /// Waits until no write is in progress.
    fn drain(&self, mut state: MutexGuard<'_, State>) {
        let deadline = Instant::now() + DRAIN_DEADLINE;
        while state.writing > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "proxy: a write stayed blocked for {DRAIN_DEADLINE:?}"
            );
            state = self
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for incoming in listener.incoming() {
        if shared.lock().stopped {
            return;
        }
        let client = match incoming {
            Ok(client) => client,
            Err(e) => {
                shared.fail(format!("accept: {e}"));
                continue;
            }
        };
        let setting_up = Arc::clone(&shared);
        let spawned = thread::Builder::new()
            .name("proxy-conn".into())
            .spawn(move || set_up(client, &setting_up));
        if let Err(e) = spawned {
            shared.fail(format!("spawn a connection thread: {e}"));
        }
    }
}

/// Connects `client` to the target, registers the connection and pumps it: client to target in
/// a new thread, target to client in this one. Any failure closes `client` and is recorded.
fn set_up(client: TcpStream, shared: &Shared) {
    let server = match TcpStream::connect_timeout(&shared.target, Duration::from_secs(2)) {
        Ok(server) => server,
        Err(e) => {
            shared.fail(format!("connect to {}: {e}", shared.target));
            let _ = client.shutdown(Shutdown::Both);
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let clones = (
        client.try_clone(),
        server.try_clone(),
        server.try_clone(),
        client.try_clone(),
    );
    let (Ok(client_read), Ok(server_write), Ok(server_read), Ok(client_write)) = clones else {
        shared.fail("clone the sockets".into());
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let id = {
        let mut state = shared.lock();
        if state.stopped {
            return;
        }
        state.next_id += 1;
        state.accepted += 1;
        let id = state.next_id;
        state.conns.insert(
            id,
            Conn {
                frozen: false,
                sent: Vec::new(),
                closed: false,
                client,
                server,
                pumps: 2,
            },
        );
        state.from_target.insert(id, Vec::new());
        id
    };
    thread::scope(|scope| {
        let upstream = thread::Builder::new()
            .name("proxy-pump".into())
            .spawn_scoped(scope, move || {
                pump(shared, id, client_read, server_write, true)
            });
        if let Err(e) = upstream {
            shared.fail(format!("spawn a pump: {e}"));
            let mut state = shared.lock();
            if let Some(conn) = state.conns.get_mut(&id) {
                conn.closed = true;
                let _ = conn.client.shutdown(Shutdown::Both);
                let _ = conn.server.shutdown(Shutdown::Both);
            }
            // Counts for the pump that never ran.
            n_pumps_left(&mut state, id);
        }
        pump(shared, id, server_read, client_write, false);
    });
}

/// Copies `from` to `to` until the end of stream, an error or `close_all`, waiting while frozen.
fn pump(shared: &Shared, id: u64, mut from: TcpStream, mut to: TcpStream, upstream: bool) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        // 0 bytes = end of stream, forwarded (as a FIN) once the gate opens like any data.
        let n = from.read(&mut buf).unwrap_or(0);
        if !pass_gate(shared, id, upstream, &buf[..n]) {
            break;
        }
        if n == 0 {
            let _ = to.shutdown(Shutdown::Write);
            break;
        }
        let written = to.write_all(&buf[..n]);
        let mut state = shared.lock();
        state.writing -= 1;
        shared.changed.notify_all();
        drop(state);
        if written.is_err() {
            break;
        }
    }
    let mut state = shared.lock();
    if n_pumps_left(&mut state, id) == 0 {
        if let Some(conn) = state.conns.remove(&id) {
            let _ = conn.client.shutdown(Shutdown::Both);
            let _ = conn.server.shutdown(Shutdown::Both);
        }
    }
    shared.changed.notify_all();
}

/// Waits until connection `id` may forward; false when it was closed meanwhile. On true, for data
/// (`chunk` not empty) a write is registered as in progress and the caller must unregister it.
fn pass_gate(shared: &Shared, id: u64, upstream: bool, chunk: &[u8]) -> bool {
    let mut state = shared.lock();
    if upstream && !chunk.is_empty() {
        let state = &mut *state;
        if let Some(conn) = state.conns.get_mut(&id) {
            let room = KEPT_REQUEST_BYTES.saturating_sub(conn.sent.len());
            conn.sent.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if !conn.frozen && state.hold.iter().any(|p| contains(&conn.sent, p)) {
                conn.frozen = true;
                state.held += 1;
            }
        }
    }
    loop {
        let Some(conn) = state.conns.get(&id) else {
            return false;
        };
        if conn.closed {
            return false;
        }
        if !state.frozen && !conn.frozen {
            break;
        }
        state = shared
            .changed
            .wait(state)
            .unwrap_or_else(|p| p.into_inner());
    }
    if chunk.is_empty() {
        return true;
    }
    state.writing += 1;
    if upstream {
        state.last_upstream = Some(SystemTime::now());
    } else if let Some(kept) = state.from_target.get_mut(&id) {
        let room = KEPT_BYTES.saturating_sub(kept.len());
        kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
    }
    true
}

fn n_pumps_left(state: &mut State, id: u64) -> u8 {
    match state.conns.get_mut(&id) {
        Some(conn) => {
            conn.pumps = conn.pumps.saturating_sub(1);
            conn.pumps
        }
        None => 0,
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}
