//! A fake etcd gateway for answers a real etcd never sends: 5xx, garbage, cut-off bodies, streams
//! of mutated lines, transactions without their responses.
//!
//! [`FakeGateway::start`] listens on a free 127.0.0.1 port and answers every request, one per
//! connection, as its [`Answer`] says, in a thread of its own, then closes the connection. It
//! records each request line for [`FakeGateway::requests`]. Rule: it stands in for etcd only where
//! the answer under test cannot come from a real etcd; dropping it stops its acceptor.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// How [`FakeGateway`] answers every request.
#[derive(Clone, Debug)]
pub enum Answer {
    /// 503 with etcd's JSON error body (code 14, no leader).
    Unavailable,
    /// 200 with bytes that are not JSON.
    Garbage,
    /// 200, chunked, one chunk cut short, then the connection closes.
    TruncatedChunk,
    /// 200 with a Content-Length larger than the body sent, then the connection closes.
    ShortBody,
    /// Not HTTP at all.
    NotHttp,
    /// 200, chunked: each request takes the next of these bodies (a watch or keepalive stream),
    /// then the connection closes. The last one repeats.
    Stream(Vec<Vec<u8>>),
    /// 200 with the body listed for the request's path (`/v3/kv/txn`), `{}` for other paths.
    ByPath(Vec<(&'static str, &'static str)>),
    /// Whatever the [`Script`] replies to the request's path and body.
    Scripted(Script),
}

/// A tiny HTTP/1.1 server that answers every request (any path) the same broken way, and records
/// what it was asked.
pub struct FakeGateway {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl FakeGateway {
    /// Starts answering every request with `answer`.
    pub fn start(answer: Answer) -> FakeGateway {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("local_addr"));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen, stopping) = (Arc::clone(&requests), Arc::clone(&stop));
        let acceptor = thread::spawn(move || {
            let served = Mutex::new(0usize);
            for stream in listener.incoming() {
                if stopping.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(stream) = stream else { continue };
                let n = {
                    let mut served = served.lock().unwrap();
                    *served += 1;
                    *served - 1
                };
                let (seen, answer) = (Arc::clone(&seen), answer.clone());
                thread::spawn(move || serve(stream, &answer, n, &seen));
            }
        });
        FakeGateway {
            url,
            requests,
            stop,
            acceptor: Some(acceptor),
        }
    }

    /// Request lines (`POST /v3/kv/range`) received so far.
    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for FakeGateway {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.url.trim_start_matches("http://"));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

/// Reads one request (head and Content-Length body) and answers it; one request per connection.
fn serve(stream: TcpStream, answer: &Answer, n: usize, seen: &Mutex<Vec<String>>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut reader = BufReader::new(&stream);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
        return;
    }
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        if line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.trim().eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    seen.lock().unwrap().push(request_line.trim().to_string());
    let mut out = &stream;
    let head = |status: &str, extra: &str| {
        format!("HTTP/1.1 {status}\r\nContent-Type: application/json\r\n{extra}\r\n")
    };
    let reply: Vec<u8> = match answer {
        Answer::Unavailable => {
            let body =
                r#"{"error":"etcdserver: no leader","message":"etcdserver: no leader","code":14}"#;
            let extra = format!("Content-Length: {}\r\nConnection: close\r\n", body.len());
            [
                head("503 Service Unavailable", &extra).as_bytes(),
                body.as_bytes(),
            ]
            .concat()
        }
        Answer::Garbage => {
            let body = b"\x00\xff<html>{\"header\":{\"revision\":\x07]]]\n";
            let extra = format!("Content-Length: {}\r\nConnection: close\r\n", body.len());
            [head("200 OK", &extra).as_bytes(), &body[..]].concat()
        }
        Answer::TruncatedChunk => {
            let part = br#"{"result":{"header":{"revision":"5"},"ID":"7","TTL":"#;
            let extra = "Transfer-Encoding: chunked\r\n";
            [head("200 OK", extra).as_bytes(), b"400\r\n", &part[..]].concat()
        }
        Answer::ShortBody => {
            let part = br#"{"header":{"revision":"5"},"ID":"7","TTL":"#;
            let extra = "Content-Length: 4096\r\nConnection: close\r\n";
            [head("200 OK", extra).as_bytes(), &part[..]].concat()
        }
        Answer::NotHttp => b"\x16\x03\x01\x02\x00garbage\r\n\r\n".to_vec(),
        Answer::Stream(bodies) => {
            let body = &bodies[n.min(bodies.len() - 1)];
            // One request per connection, said so: a client must not reuse it (racing the close).
            let extra = "Transfer-Encoding: chunked\r\nConnection: close\r\n";
            let mut reply = head("200 OK", extra).into_bytes();
            let _ = write!(reply, "{:x}\r\n", body.len());
            reply.extend_from_slice(body);
            reply.extend_from_slice(b"\r\n0\r\n\r\n");
            reply
        }
        Answer::Scripted(script) => return play(&stream, script, &request_line, &body),
        Answer::ByPath(bodies) => {
            let path = request_line.split_whitespace().nth(1).unwrap_or("");
            let body = bodies
                .iter()
                .find(|(p, _)| *p == path)
                .map_or("{}", |(_, body)| *body);
            let extra = format!("Content-Length: {}\r\nConnection: close\r\n", body.len());
            [head("200 OK", &extra).as_bytes(), body.as_bytes()].concat()
        }
    };
    let _ = out.write_all(&reply);
    let _ = out.flush();
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

// ---- scripted answers ----

/// One reply of an [`Answer::Scripted`] gateway.
#[derive(Clone, Debug)]
pub struct Reply {
    /// The status after `HTTP/1.1 `, e.g. `200 OK`.
    pub status: &'static str,
    pub body: Vec<u8>,
    /// Chunked, as etcd sends streams (`/v3/watch`), instead of with a Content-Length.
    pub chunked: bool,
    /// How long the connection stays open after the body (before the last chunk, when chunked)
    /// unless the client closes it first: a stream that stays healthy and silent.
    pub hold: Duration,
}

impl Reply {
    /// 200 with `body` and its Content-Length, as etcd answers unary calls.
    pub fn unary(body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            status: "200 OK",
            body: body.into(),
            chunked: false,
            hold: Duration::ZERO,
        }
    }

    /// 200, chunked: the lines of a stream, which then ends.
    pub fn stream(body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            chunked: true,
            ..Reply::unary(body)
        }
    }

    /// The same reply, its connection held open for `hold` after the body.
    pub fn held(self, hold: Duration) -> Reply {
        Reply { hold, ..self }
    }
}

/// What an [`Answer::Scripted`] gateway replies to each request: a function of the request's
/// path (`/v3/kv/txn`) and body, run on the request's own thread.
#[derive(Clone)]
pub struct Script(Arc<ReplyFn>);

/// (path, request body) → reply.
type ReplyFn = dyn Fn(&str, &[u8]) -> Reply + Send + Sync;

impl Script {
    pub fn new(reply: impl Fn(&str, &[u8]) -> Reply + Send + Sync + 'static) -> Script {
        Script(Arc::new(reply))
    }
}

impl std::fmt::Debug for Script {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Script(..)")
    }
}

/// Sends the script's reply to the request, holds the connection as it says, then closes it (and
/// says so in the head: one request per connection).
fn play(stream: &TcpStream, script: &Script, request_line: &str, body: &[u8]) {
    let path = request_line.split_whitespace().nth(1).unwrap_or("");
    let reply = (script.0)(path, body);
    let mut out = stream;
    let framing = match reply.chunked {
        true => "Transfer-Encoding: chunked\r\n".to_string(),
        false => format!("Content-Length: {}\r\n", reply.body.len()),
    };
    let head = format!(
        "HTTP/1.1 {}\r\nContent-Type: application/json\r\n{framing}Connection: close\r\n\r\n",
        reply.status
    );
    let mut bytes = head.into_bytes();
    match reply.chunked {
        true if !reply.body.is_empty() => {
            let _ = write!(bytes, "{:x}\r\n", reply.body.len());
            bytes.extend_from_slice(&reply.body);
            bytes.extend_from_slice(b"\r\n");
        }
        true => {}
        false => bytes.extend_from_slice(&reply.body),
    }
    if out.write_all(&bytes).and_then(|()| out.flush()).is_err() {
        return;
    }
    if !reply.hold.is_zero() {
        // Returns when the client closes the connection, or when the hold is over.
        let _ = stream.set_read_timeout(Some(reply.hold));
        let _ = (&*stream).read(&mut [0u8; 1]);
    }
    if reply.chunked {
        let _ = out.write_all(b"0\r\n\r\n");
    }
    let _ = stream.shutdown(std::net::Shutdown::Both);
}
