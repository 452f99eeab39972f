//! A small synchronous client for etcd's v3 JSON gateway (`POST /v3/...` over HTTP/1.1 or HTTPS).
//!
//! It owns the transport ([`transport`]: agents, timeouts, failover across endpoints, the auth
//! token; host names through [`resolver`]), reading answers ([`answer`]) and stream lines
//! ([`stream`]), TLS setup ([`tls`]), endpoint parsing ([`endpoint`]), the wire types ([`wire`]) and
//! the one error type ([`Error`]). It knows nothing about elections: it offers the lease, kv, txn and
//! watch calls the election recipe is built from.
//!
//! Every unary call has a bounded budget (`request_timeout`, per endpoint tried). A watch has no
//! total budget; instead each read waits at most `watch_idle_timeout`, so a connection that went
//! silent ends the watch with a timeout error and the caller re-establishes it from the next revision.

mod answer;
mod auth;
mod cancel;
mod coalesce;
pub mod endpoint;
mod error;
mod resolver;
mod stream;
pub mod tls;
mod transport;
pub mod wire;

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

pub use cancel::Cancel;
pub use endpoint::Endpoint;
pub use error::{code, Error};
pub use tls::{NamedPath, TlsFiles, TlsNames, TlsProblem};
pub use transport::Credentials;
pub use wire::*;

use answer::decode;
use stream::{read_line, Stream};
use transport::Transport;
use wire::{Health, KeepAliveLine, WatchLine};

/// How to reach etcd.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `http://host:port`, `https://host:port` or bare `host:port`; tried in order on failure.
    pub endpoints: Vec<String>,
    /// CA (and client certificate) files; required for `https://` endpoints.
    pub tls: Option<TlsFiles>,
    /// etcd user and password, when etcd has auth enabled.
    pub credentials: Option<Credentials>,
    /// Budget of one unary call on one endpoint, from connecting to the last byte.
    pub request_timeout: Duration,
    /// Longest silence a watch connection may keep before it is considered dead.
    pub watch_idle_timeout: Duration,
    /// A key the user may read: with auth, an idle token is kept alive by reading it.
    pub token_probe_key: Vec<u8>,
    /// What the TLS settings are called where they are set (e.g. environment variables), for
    /// hints; `None`: the names of `tls`, or generic words.
    pub tls_names: Option<TlsNames>,
}

impl ClientConfig {
    /// A configuration with the given endpoints and default timeouts (5 s calls, 60 s idle watch).
    pub fn new(endpoints: Vec<String>) -> ClientConfig {
        ClientConfig {
            endpoints,
            tls: None,
            credentials: None,
            request_timeout: Duration::from_secs(5),
            watch_idle_timeout: Duration::from_secs(60),
            token_probe_key: Vec::new(),
            tls_names: None,
        }
    }
}

/// A handle on etcd; cheap to clone and safe to share between threads.
#[derive(Clone)]
pub struct Client {
    transport: Arc<Transport>,
}

impl Client {
    /// Checks the configuration (endpoints parse, TLS files load) and builds the client. No network
    /// traffic happens here.
    pub fn new(config: ClientConfig) -> Result<Client, Error> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let tls_by_default = config.tls.is_some();
        let mut endpoints = Vec::new();
        for text in &config.endpoints {
            let endpoint =
                Endpoint::parse(text, tls_by_default).map_err(|problem| Error::Setup {
                    item: format!("endpoint {text:?}"),
                    problem,
                })?;
            if endpoint.tls && config.tls.is_none() {
                return Err(Error::Setup {
                    item: format!("endpoint {text:?}"),
                    problem: "https needs a CA certificate (no system roots are used)".into(),
                });
            }
            endpoints.push(endpoint.url());
        }
        if endpoints.is_empty() {
            return Err(Error::Setup {
                item: "endpoints".into(),
                problem: "no endpoint given".into(),
            });
        }
        let tls = match &config.tls {
            Some(files) => tls::load(files)?,
            None => ureq::tls::TlsConfig::default(),
        };
        let tls_names = config
            .tls_names
            .clone()
            .unwrap_or_else(|| TlsNames::of(config.tls.as_ref()));
        let transport = Transport::new(
            endpoints,
            tls,
            tls_names,
            config.credentials,
            config.request_timeout,
            config.watch_idle_timeout,
        );
        let transport = Arc::new(transport);
        transport.keep_token_fresh(RangeRequest::key(config.token_probe_key).to_json());
        Ok(Client { transport })
    }

    /// The endpoint calls currently go to first (the last one that answered).
    pub fn current_endpoint(&self) -> String {
        self.transport.current_endpoint().to_string()
    }

    /// `GET /health` on the first endpoint that answers; `Ok` when that member reports healthy.
    pub fn health(&self) -> Result<(), Error> {
        let (endpoint, bytes) = self.transport.get("health", "/health")?;
        let health: Health = decode(&endpoint, "health", &bytes)?;
        match health.health.as_str() {
            "true" => Ok(()),
            other => Err(Error::Etcd {
                endpoint,
                op: "health",
                http_status: 200,
                code: None,
                message: format!("member reports health={other:?}"),
            }),
        }
    }

    /// Grants a lease of `ttl_seconds` (etcd may raise it to its minimum).
    pub fn lease_grant(&self, ttl_seconds: i64) -> Result<LeaseGrant, Error> {
        let grant: LeaseGrant = self
            .transport
            .call("lease/grant", &json!({ "TTL": ttl_seconds.to_string() }))?;
        if grant.id == 0 || grant.ttl <= 0 {
            return Err(Error::Decode {
                endpoint: self.current_endpoint(),
                op: "lease/grant",
                detail: format!(
                    "granted lease has ID {} TTL {} ({})",
                    grant.id, grant.ttl, grant.error
                ),
            });
        }
        Ok(grant)
    }

    /// One keepalive of `lease`; returns the TTL etcd reset it to. A lease that expired or was
    /// revoked is answered without a TTL: that is [`Error::LeaseGone`], never success.
    ///
    /// The gateway answers one line on a stream that then ends, so the whole call stays within the
    /// unary budget.
    pub fn lease_keepalive(&self, lease: i64) -> Result<LeaseTtl, Error> {
        const OP: &str = "lease/keepalive";
        let (endpoint, bytes) = self
            .transport
            .call_raw(OP, &json!({ "ID": lease.to_string() }))?;
        let Some(line) = bytes
            .split(|b| *b == b'\n')
            .find(|l| !l.trim_ascii().is_empty())
        else {
            return Err(Error::Decode {
                endpoint,
                op: OP,
                detail: "empty answer".into(),
            });
        };
        let answer: KeepAliveLine = decode(&endpoint, OP, line)?;
        if let Some(error) = answer.error {
            return Err(stream_error(&endpoint, OP, error));
        }
        match answer.result {
            Some(ttl) if ttl.ttl > 0 => Ok(ttl),
            _ => Err(Error::LeaseGone { lease }),
        }
    }

    /// Revokes `lease`, deleting every key attached to it.
    pub fn lease_revoke(&self, lease: i64) -> Result<(), Error> {
        let _: serde_json::Value = self
            .transport
            .call("lease/revoke", &json!({ "ID": lease.to_string() }))?;
        Ok(())
    }

    /// The remaining TTL of `lease`: -1 once it is gone.
    pub fn lease_time_to_live(&self, lease: i64) -> Result<LeaseTtl, Error> {
        self.transport
            .call("lease/timetolive", &json!({ "ID": lease.to_string() }))
    }

    /// Reads keys.
    pub fn range(&self, request: &RangeRequest) -> Result<RangeResponse, Error> {
        self.transport.call("kv/range", &request.to_json())
    }

    /// Writes `key` = `value`, attached to `lease` (0 = none).
    pub fn put(&self, key: &[u8], value: &[u8], lease: i64) -> Result<PutResponse, Error> {
        let mut body = json!({ "key": b64(key), "value": b64(value) });
        if lease != 0 {
            body["lease"] = lease.to_string().into();
        }
        self.transport.call("kv/put", &body)
    }

    /// Deletes `key`, or every key in `[key, range_end)` when `range_end` is not empty.
    pub fn delete_range(&self, key: &[u8], range_end: &[u8]) -> Result<DeleteResponse, Error> {
        let mut body = json!({ "key": b64(key) });
        if !range_end.is_empty() {
            body["range_end"] = b64(range_end).into();
        }
        self.transport.call("kv/deleterange", &body)
    }

    /// Runs a transaction.
    pub fn txn(&self, request: &TxnRequest) -> Result<TxnResponse, Error> {
        self.transport.call("kv/txn", &request.to_json())
    }

    /// Compacts the history up to `revision` (used by tests and operators, not by the election).
    pub fn compact(&self, revision: i64) -> Result<(), Error> {
        let _: serde_json::Value = self.transport.call(
            "kv/compaction",
            &json!({ "revision": revision.to_string(), "physical": true }),
        )?;
        Ok(())
    }

    /// Opens a watch and waits until etcd confirms it is registered. The returned [`Watch`] yields
    /// the messages that follow, in order; it ends (returns `None`) after a cancellation, an error
    /// or the end of the stream, and closes its connection when dropped. `cancel` ends it from
    /// another thread at any moment, releasing the connection at once.
    pub fn watch(&self, request: &WatchRequest, cancel: &Cancel) -> Result<Watch, Error> {
        let mut watch = self.open_watch(request, cancel)?;
        let refused_token = matches!(
            &watch.pending,
            Some(WatchMessage::Canceled { reason, .. }) if reason.contains("auth")
        );
        if refused_token && self.transport.has_credentials() {
            self.transport.forget_token();
            watch = self.open_watch(request, cancel)?;
        }
        Ok(watch)
    }

    fn open_watch(&self, request: &WatchRequest, cancel: &Cancel) -> Result<Watch, Error> {
        let stream = self
            .transport
            .open_stream("watch", &request.to_json(), cancel)?;
        let mut watch = Watch {
            stream: Some(stream),
            pending: None,
        };
        match watch.next() {
            Some(Ok(WatchMessage::Created { .. })) => Ok(watch),
            Some(Ok(message)) => {
                watch.pending = Some(message);
                Ok(watch)
            }
            Some(Err(error)) => Err(error),
            None => Err(Error::Decode {
                endpoint: self.current_endpoint(),
                op: "watch",
                detail: "the stream ended before the watch was created".into(),
            }),
        }
    }
}

/// An open watch: a blocking iterator over the messages of one watch stream.
pub struct Watch {
    stream: Option<Stream>,
    pending: Option<WatchMessage>,
}

impl Watch {
    /// The endpoint serving this watch.
    pub fn endpoint(&self) -> Option<&str> {
        self.stream.as_ref().map(|s| s.endpoint.as_str())
    }

    fn read_message(stream: &mut Stream) -> Option<Result<WatchMessage, Error>> {
        const OP: &str = "watch";
        let line = match read_line(&mut stream.reader, &stream.endpoint, OP)? {
            Ok(line) => line,
            Err(error) => return Some(Err(error)),
        };
        let parsed: WatchLine = match decode(&stream.endpoint, OP, &line) {
            Ok(parsed) => parsed,
            Err(error) => return Some(Err(error)),
        };
        Some(match (parsed.result, parsed.error) {
            (_, Some(error)) => Err(stream_error(&stream.endpoint, OP, error)),
            (Some(result), None) => Ok(result.into_message()),
            (None, None) => Err(Error::Decode {
                endpoint: stream.endpoint.clone(),
                op: OP,
                detail: "a stream line with neither result nor error".into(),
            }),
        })
    }
}

impl Iterator for Watch {
    type Item = Result<WatchMessage, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(message) = self.pending.take() {
            if matches!(message, WatchMessage::Canceled { .. }) {
                self.stream = None;
            }
            return Some(Ok(message));
        }
        let stream = self.stream.as_mut()?;
        let item = Watch::read_message(stream);
        let stream_goes_on = matches!(
            item,
            Some(Ok(WatchMessage::Created { .. }
                | WatchMessage::Events { .. }
                | WatchMessage::Progress { .. }))
        );
        if !stream_goes_on {
            // A cancellation, an error or the end: this stream is finished. Dropping it closes the
            // connection, which is the only way to end a watch on the gateway.
            self.stream = None;
        }
        item
    }
}

fn stream_error(endpoint: &str, op: &'static str, error: wire::StreamError) -> Error {
    Error::Etcd {
        endpoint: endpoint.to_string(),
        op,
        http_status: error.http_code,
        code: Some(error.grpc_code),
        message: error.message,
    }
}
