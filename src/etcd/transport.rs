//! HTTP mechanics: the two ureq agents (bounded unary calls, long-lived streams), one POST to one
//! endpoint with etcd's error body kept, failover across the endpoint list, and the auth token.

use std::io::{BufRead, BufReader, Read};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use std::net::{IpAddr, SocketAddr};

use ureq::http::Uri;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{Connector, NextTimeout, RustlsConnector, TcpConnector};

use super::coalesce::CoalesceConnector;
use ureq::Agent;

use super::auth::{Chore, Tokens};
use super::tls::{self, TlsNames};
use super::wire::{AuthToken, ErrorBody};
use super::{Cancel, Error};

/// Largest unary answer accepted. etcd refuses requests over 1.5 MiB (`--max-request-bytes`), so no
/// value it stores is larger; the largest answer the election reads carries two keys (the
/// predecessor and the leader), base64-encoded: 2 × 2 MiB. Our own values are identities of at
/// most 1 KiB.
pub(crate) const MAX_BODY: u64 = 8 * 1024 * 1024;
/// Largest single line of a stream (one watch message). The election's watches ask for deletions
/// only, whose events carry no value: a real etcd's lines are a few hundred bytes.
pub(crate) const MAX_LINE: u64 = 1024 * 1024;
/// How much of an error body is kept in an error message.
const MAX_ERROR_TEXT: usize = 512;

/// A streamed answer: a buffered reader over the response body, and the endpoint that serves it.
pub(crate) struct Stream {
    pub endpoint: String,
    pub reader: BufReader<ureq::BodyReader<'static>>,
}

/// Username and password for etcd's auth.
#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, <password>)", self.username)
    }
}

/// The endpoints, the agents and the auth state shared by every call.
pub(crate) struct Transport {
    endpoints: Vec<String>,
    unary: Agent,
    /// Each stream gets an agent of its own, so that cancelling it shuts down its socket alone.
    stream_config: ureq::config::Config,
    /// The endpoint that answered last; calls start there.
    current: AtomicUsize,
    credentials: Option<Credentials>,
    tokens: Arc<Tokens>,
    /// What the TLS settings are called, for hints.
    tls_names: TlsNames,
}

impl Transport {
    pub(crate) fn new(
        endpoints: Vec<String>,
        tls: ureq::tls::TlsConfig,
        tls_names: TlsNames,
        credentials: Option<Credentials>,
        request_timeout: Duration,
        watch_idle_timeout: Duration,
    ) -> Transport {
        let base = || {
            Agent::config_builder()
                .http_status_as_error(false)
                .proxy(None)
                .tls_config(tls.clone())
                .user_agent(concat!("etcd-await-election/", env!("CARGO_PKG_VERSION")))
        };
        let unary = agent(base().timeout_global(Some(request_timeout)).build());
        let stream_config = base()
            .timeout_connect(Some(request_timeout))
            .timeout_send_request(Some(request_timeout))
            .timeout_recv_response(Some(request_timeout))
            .timeout_per_read(Some(watch_idle_timeout))
            .max_idle_connections(0)
            .build();
        Transport {
            endpoints,
            unary,
            stream_config,
            current: AtomicUsize::new(0),
            credentials,
            tokens: Arc::new(Tokens::default()),
            tls_names,
        }
    }

    /// The endpoint calls currently start at.
    pub(crate) fn current_endpoint(&self) -> &str {
        &self.endpoints[self.current.load(Ordering::Relaxed) % self.endpoints.len()]
    }

    /// A unary call: POST `body` to `/v3/<op>` and decode the answer, failing over across endpoints.
    pub(crate) fn call<T: DeserializeOwned>(
        &self,
        op: &'static str,
        body: &Value,
    ) -> Result<T, Error> {
        let (endpoint, bytes) = self.call_raw(op, body)?;
        decode(&endpoint, op, &bytes)
    }

    /// A unary call whose answer is returned undecoded, with the endpoint that gave it.
    pub(crate) fn call_raw(
        &self,
        op: &'static str,
        body: &Value,
    ) -> Result<(String, Vec<u8>), Error> {
        self.with_failover(op, |endpoint| {
            self.with_token(endpoint, op, |token| {
                self.post_unary(endpoint, op, body, token)
            })
            .map(|bytes| (endpoint.to_string(), bytes))
        })
    }

    /// A GET of a plain path such as `/health`, failing over across endpoints.
    pub(crate) fn get(&self, op: &'static str, path: &str) -> Result<(String, Vec<u8>), Error> {
        self.with_failover(op, |endpoint| {
            let response = self
                .unary
                .get(format!("{endpoint}{path}"))
                .call()
                .map_err(|e| self.failure(endpoint, op, e))?;
            read_answer(endpoint, op, response).map(|bytes| (endpoint.to_string(), bytes))
        })
    }

    /// A streaming call: POST `body` to `/v3/<op>` and hand back the open body. The request asks
    /// etcd to end the stream when the member loses its raft leader (`hasleader` metadata), so a
    /// member cut off from the cluster cannot keep a watch open and silent.
    /// `cancel` can end the stream from another thread at any point, also while it is being opened.
    pub(crate) fn open_stream(
        &self,
        op: &'static str,
        body: &Value,
        cancel: &Cancel,
    ) -> Result<Stream, Error> {
        self.with_failover(op, |endpoint| {
            self.with_token(endpoint, op, |token| {
                let agent = agent(self.stream_config.clone());
                if !cancel.register(&agent) {
                    return Err(Error::Cancelled { op });
                }
                let request = self
                    .request(&agent, endpoint, op, token)
                    .header("Grpc-Metadata-hasleader", "true");
                let response = request
                    .send(body.to_string())
                    .map_err(|e| self.failure(endpoint, op, e))?;
                let response = check_status(endpoint, op, response)?;
                Ok(Stream {
                    endpoint: endpoint.to_string(),
                    reader: BufReader::new(response.into_body().into_reader()),
                })
            })
        })
    }

    /// Forgets the token, so that the next call authenticates again (used when a watch was refused).
    pub(crate) fn forget_token(&self) {
        self.tokens.forget();
    }

    /// Whether calls carry an auth token.
    pub(crate) fn has_credentials(&self) -> bool {
        self.credentials.is_some()
    }

    /// Runs `attempt` on each endpoint in turn, starting at the current one, until one succeeds or
    /// fails in a way another endpoint cannot help with.
    fn with_failover<T>(
        &self,
        op: &'static str,
        mut attempt: impl FnMut(&str) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let count = self.endpoints.len();
        let start = self.current.load(Ordering::Relaxed);
        let mut failures = Vec::new();
        for step in 0..count {
            let index = (start + step) % count;
            match attempt(&self.endpoints[index]) {
                Ok(value) => {
                    self.current.store(index, Ordering::Relaxed);
                    return Ok(value);
                }
                Err(error) if error.is_endpoint_failure() => failures.push(error),
                Err(error) => return Err(error),
            }
        }
        match failures.len() {
            1 => Err(failures.remove(0)),
            _ => Err(Error::AllEndpointsFailed { op, failures }),
        }
    }

    /// Runs `attempt` with the current token; when etcd refuses the token, authenticates again on
    /// the same endpoint and retries once.
    fn with_token<T>(
        &self,
        endpoint: &str,
        op: &'static str,
        mut attempt: impl FnMut(Option<&str>) -> Result<T, Error>,
    ) -> Result<T, Error> {
        if self.credentials.is_none() {
            return attempt(None);
        }
        let token = match self.tokens.current() {
            Some(token) => token,
            None => self.authenticate(endpoint, op)?,
        };
        match attempt(Some(&token)) {
            Err(error) if error.is_unauthenticated() => {
                self.tokens
                    .refused(&token, error.is_token_expired(), Instant::now());
                let fresh = self.authenticate(endpoint, op)?;
                let result = attempt(Some(&fresh));
                if result.is_ok() {
                    self.tokens.used(&fresh, Instant::now());
                }
                result
            }
            Ok(value) => {
                self.tokens.used(&token, Instant::now());
                Ok(value)
            }
            Err(error) => Err(error),
        }
    }

    fn authenticate(&self, endpoint: &str, op: &'static str) -> Result<String, Error> {
        let Some(credentials) = &self.credentials else {
            return Err(Error::Setup {
                item: "auth".into(),
                problem: "no credentials configured".into(),
            });
        };
        let body = json!({ "name": credentials.username, "password": credentials.password });
        let bytes = self.post_unary(endpoint, "auth/authenticate", &body, None)?;
        let answer: AuthToken = decode(endpoint, "auth/authenticate", &bytes)?;
        if answer.token.is_empty() {
            return Err(Error::Decode {
                endpoint: endpoint.to_string(),
                op,
                detail: "auth/authenticate answered without a token (is auth enabled?)".into(),
            });
        }
        self.tokens.issued(answer.token.clone(), Instant::now());
        Ok(answer.token)
    }

    /// Starts the thread that keeps the token alive while nothing else uses it (see
    /// [`super::auth`]); `probe` is a cheap read the user may make. Ends when the client is gone.
    pub(crate) fn keep_token_fresh(self: &Arc<Self>, probe: Value) {
        if self.credentials.is_none() {
            return;
        }
        let transport = Arc::downgrade(self);
        let tokens = Arc::clone(&self.tokens);
        let spawned = std::thread::Builder::new()
            .name("auth-token".into())
            .spawn(move || keep_token(&transport, &tokens, &probe));
        if let Err(error) = spawned {
            crate::log::warn("cannot start the auth token keeper", &[("error", &error)]);
        }
    }

    fn post_unary(
        &self,
        endpoint: &str,
        op: &'static str,
        body: &Value,
        token: Option<&str>,
    ) -> Result<Vec<u8>, Error> {
        let response = self
            .request(&self.unary, endpoint, op, token)
            .send(body.to_string())
            .map_err(|e| self.failure(endpoint, op, e))?;
        read_answer(endpoint, op, response)
    }

    fn request(
        &self,
        agent: &Agent,
        endpoint: &str,
        op: &'static str,
        token: Option<&str>,
    ) -> ureq::RequestBuilder<ureq::typestate::WithBody> {
        let request = agent
            .post(format!("{endpoint}/v3/{op}"))
            .header("Content-Type", "application/json");
        match token {
            Some(token) => request.header("Authorization", token),
            None => request,
        }
    }
}

/// An agent whose connections write each request at once (see [`CoalesceConnector`]).
fn agent(config: ureq::config::Config) -> Agent {
    let connector =
        ().chain(TcpConnector::default())
            .chain(RustlsConnector::default())
            .chain(CoalesceConnector);
    Agent::with_parts(config, connector, LiteralResolver::default())
}

impl Drop for Transport {
    fn drop(&mut self) {
        self.tokens.stop();
    }
}

/// The token keeper's loop: the chores [`Tokens`] plans, each followed by a pause of at least a
/// second, so that an unreachable etcd is not asked more often than that.
fn keep_token(transport: &Weak<Transport>, tokens: &Tokens, probe: &Value) {
    loop {
        let chore = tokens.next_chore();
        let Some(transport) = transport.upgrade() else {
            return;
        };
        match chore {
            Chore::Stop => return,
            Chore::Read => {
                let _ = transport.call_raw("kv/range", probe);
                tokens.probed();
            }
            Chore::Renew => {
                let endpoint = transport.current_endpoint().to_string();
                let _ = transport.authenticate(&endpoint, "auth/authenticate");
            }
            Chore::Wait(_) => {}
        }
        drop(transport);
        tokens.pause(Duration::from_secs(1));
    }
}

/// Resolves IP-literal hosts in place and hands host names to ureq's resolver. ureq's resolver
/// spawns a thread per lookup whenever a timeout applies — on every request, pooled connection or
/// not — which put a thread spawn on the path of every keepalive, look and watch.
#[derive(Debug, Default)]
struct LiteralResolver(DefaultResolver);

impl Resolver for LiteralResolver {
    fn resolve(
        &self,
        uri: &Uri,
        config: &ureq::config::Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let host = uri.host().unwrap_or_default();
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        match (literal.parse::<IpAddr>(), uri.port_u16()) {
            (Ok(ip), Some(port)) => {
                let mut addresses = self.empty();
                addresses.push(SocketAddr::new(ip, port));
                Ok(addresses)
            }
            _ => self.0.resolve(uri, config, timeout),
        }
    }
}

/// Reads a unary answer: the body of a 2xx, or etcd's error.
fn read_answer(
    endpoint: &str,
    op: &'static str,
    response: ureq::http::Response<ureq::Body>,
) -> Result<Vec<u8>, Error> {
    let response = check_status(endpoint, op, response)?;
    response
        .into_body()
        .into_with_config()
        .limit(MAX_BODY)
        .read_to_vec()
        .map_err(|e| match e {
            // Not an outage: an answer no etcd sends for our requests.
            ureq::Error::BodyExceedsLimit(limit) => Error::Decode {
                endpoint: endpoint.to_string(),
                op,
                detail: format!("the answer is larger than {limit} bytes"),
            },
            e => transport_error(endpoint, op, e),
        })
}

/// Passes a 2xx through; turns anything else into [`Error::Etcd`] with etcd's code and message.
fn check_status(
    endpoint: &str,
    op: &'static str,
    response: ureq::http::Response<ureq::Body>,
) -> Result<ureq::http::Response<ureq::Body>, Error> {
    let status = response.status().as_u16();
    if (200..300).contains(&status) {
        return Ok(response);
    }
    let mut text = Vec::new();
    let _ = response
        .into_body()
        .into_reader()
        .take(64 * 1024)
        .read_to_end(&mut text);
    let (code, message) = match serde_json::from_slice::<ErrorBody>(&text) {
        Ok(body) if !body.message.is_empty() || !body.error.is_empty() => {
            let message = if body.message.is_empty() {
                body.error
            } else {
                body.message
            };
            (body.code, message)
        }
        _ => (None, shorten(&String::from_utf8_lossy(&text))),
    };
    Err(Error::Etcd {
        endpoint: endpoint.to_string(),
        op,
        http_status: status,
        code,
        message,
    })
}

/// Decodes a JSON answer, naming the endpoint and operation when it does not fit.
pub(crate) fn decode<T: DeserializeOwned>(
    endpoint: &str,
    op: &'static str,
    bytes: &[u8],
) -> Result<T, Error> {
    serde_json::from_slice(bytes).map_err(|e| Error::Decode {
        endpoint: endpoint.to_string(),
        op,
        detail: format!("{e} in {:?}", shorten(&String::from_utf8_lossy(bytes))),
    })
}

/// Reads one line of a stream (without its newline or surrounding blanks); `None` at the end of
/// the stream. A line is read into one buffer and handed on as it is, without a copy.
pub(crate) fn read_line(
    reader: &mut impl BufRead,
    endpoint: &str,
    op: &'static str,
) -> Option<Result<Vec<u8>, Error>> {
    loop {
        let mut line = Vec::new();
        let read = reader.take(MAX_LINE).read_until(b'\n', &mut line);
        match read {
            Ok(0) => return None,
            Err(e) => {
                return Some(Err(Error::Transport {
                    endpoint: endpoint.to_string(),
                    op,
                    timed_out: matches!(
                        e.kind(),
                        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock
                    ) || e.to_string().contains("timeout"),
                    detail: e.to_string(),
                }))
            }
            Ok(_) if line.last() != Some(&b'\n') && line.len() as u64 >= MAX_LINE => {
                return Some(Err(Error::Decode {
                    endpoint: endpoint.to_string(),
                    op,
                    detail: format!("a stream line longer than {MAX_LINE} bytes"),
                }))
            }
            Ok(_) => {
                let end = line.len()
                    - line
                        .iter()
                        .rev()
                        .take_while(|b| b.is_ascii_whitespace())
                        .count();
                let start = line[..end]
                    .iter()
                    .take_while(|b| b.is_ascii_whitespace())
                    .count();
                if start < end {
                    line.truncate(end);
                    line.drain(..start);
                    return Some(Ok(line));
                }
            }
        }
    }
}

impl Transport {
    /// A failed call as an [`Error`]: a TLS problem with its hint, or a plain transport failure.
    fn failure(&self, endpoint: &str, op: &'static str, error: ureq::Error) -> Error {
        let tls = endpoint.starts_with("https://");
        match tls::diagnose(tls, &error) {
            Some(problem) => Error::Tls {
                endpoint: endpoint.to_string(),
                op,
                problem,
                hint: problem.hint(&self.tls_names),
                detail: error.to_string(),
            },
            None => transport_error(endpoint, op, error),
        }
    }
}

fn transport_error(endpoint: &str, op: &'static str, error: ureq::Error) -> Error {
    let timed_out = matches!(error, ureq::Error::Timeout(_));
    Error::Transport {
        endpoint: endpoint.to_string(),
        op,
        detail: error.to_string(),
        timed_out,
    }
}

fn shorten(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(MAX_ERROR_TEXT) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}
