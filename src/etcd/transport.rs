//! HTTP mechanics: the two ureq agents (bounded unary calls, long-lived streams), one POST to one
//! endpoint, failover across the endpoint list, and the auth token. What an answer holds is read in
//! [`super::answer`] (etcd's error body kept), a stream's lines in [`super::stream`].

use std::io::BufReader;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use ureq::unversioned::transport::{Connector, TcpConnector};

use super::coalesce::CoalesceConnector;
use ureq::Agent;

use super::answer::{check_status, decode, read_answer, transport_error};
use super::auth::{Chore, Tokens};
use super::resolver::LiteralResolver;
use super::stream::Stream;
use super::tls::{self, TlsNames};
use super::wire::AuthToken;
use super::{Cancel, Error};

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
            .chain(tls::HandshakeConnector::default())
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
