//! The one error type of the etcd client: every failure carries the endpoint, the operation and, when
//! etcd said something, its gRPC code and message.

use std::fmt;

/// gRPC status codes that the client and its callers act on.
pub mod code {
    /// The request is malformed, or etcd refused the credentials.
    pub const INVALID_ARGUMENT: u32 = 3;
    /// The requested entity (usually a lease) does not exist.
    pub const NOT_FOUND: u32 = 5;
    /// The caller lacks a permission.
    pub const PERMISSION_DENIED: u32 = 7;
    /// A resource ran out; etcd's NOSPACE alarm ("database space exceeded") among others.
    pub const RESOURCE_EXHAUSTED: u32 = 8;
    /// The request is valid but cannot be served now (e.g. no leader).
    pub const UNAVAILABLE: u32 = 14;
    /// The auth token is missing, invalid or expired.
    pub const UNAUTHENTICATED: u32 = 16;
    /// The requested revision has been compacted.
    pub const OUT_OF_RANGE: u32 = 11;
}

/// Everything that can go wrong talking to etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The client cannot be set up: an endpoint that does not parse, a TLS file that cannot be used.
    /// `item` names what was wrong (e.g. `endpoint "ftp://x"` or `ETCD_AWAIT_ELECTION_CERT=/a.pem`).
    Setup { item: String, problem: String },
    /// The endpoint could not be reached, or the connection failed during the call.
    Transport {
        endpoint: String,
        op: &'static str,
        detail: String,
        timed_out: bool,
    },
    /// The TLS handshake (or the first exchange after it) failed in a way that points at a
    /// setting; `hint` says what to check.
    Tls {
        endpoint: String,
        op: &'static str,
        problem: super::TlsProblem,
        hint: String,
        detail: String,
    },
    /// etcd answered with an error status (or an error line inside a stream).
    Etcd {
        endpoint: String,
        op: &'static str,
        http_status: u16,
        code: Option<u32>,
        message: String,
    },
    /// etcd's answer could not be understood.
    Decode {
        endpoint: String,
        op: &'static str,
        detail: String,
    },
    /// The lease does not exist any more: a keepalive was answered without a TTL.
    LeaseGone { lease: i64 },
    /// The call was cancelled by its owner (see [`super::Cancel`]).
    Cancelled { op: &'static str },
    /// Every endpoint failed; one error per endpoint, in the order they were tried.
    AllEndpointsFailed {
        op: &'static str,
        failures: Vec<Error>,
    },
}

impl Error {
    /// The gRPC code etcd answered with, if it answered with one.
    pub fn grpc_code(&self) -> Option<u32> {
        match self {
            Error::Etcd { code, .. } => *code,
            _ => None,
        }
    }

    /// True when etcd said the lease is not found (404, code 5) or a keepalive showed it is gone.
    pub fn is_lease_gone(&self) -> bool {
        matches!(self, Error::LeaseGone { .. }) || self.grpc_code() == Some(code::NOT_FOUND)
    }

    /// True when the revision asked for has been compacted away.
    pub fn is_compacted(&self) -> bool {
        self.grpc_code() == Some(code::OUT_OF_RANGE)
    }

    /// True when etcd says the token itself is no good (401, code 16: invalid or expired).
    pub fn is_token_expired(&self) -> bool {
        matches!(self, Error::Etcd { http_status, code, .. }
            if *code == Some(code::UNAUTHENTICATED) || *http_status == 401)
    }

    /// True when the auth token was refused and a fresh one may help: 401/code 16, or etcd's
    /// "revision of auth store is old" (users or roles changed since the token was issued) and
    /// "user name is empty" (no token reached it), both code 3.
    pub fn is_unauthenticated(&self) -> bool {
        match self {
            Error::Etcd {
                http_status,
                code,
                message,
                ..
            } => {
                *code == Some(code::UNAUTHENTICATED)
                    || *http_status == 401
                    || (*code == Some(code::INVALID_ARGUMENT)
                        && (message.contains("auth store is old")
                            || message.contains("user name is empty")))
            }
            _ => false,
        }
    }

    /// True when retrying cannot help: a bad setup, wrong credentials, a missing permission, a
    /// request etcd calls malformed — or every endpoint failed in one of those ways.
    pub fn is_permanent(&self) -> bool {
        match self {
            Error::Setup { .. } => true,
            Error::AllEndpointsFailed { failures, .. } => failures.iter().all(Error::is_permanent),
            _ => matches!(
                self.grpc_code(),
                Some(code::INVALID_ARGUMENT | code::PERMISSION_DENIED | code::UNAUTHENTICATED)
            ),
        }
    }

    /// What kind of failure this is, in a few words for a log line ("etcd unreachable").
    pub fn summary(&self) -> &'static str {
        match self {
            Error::Transport { .. } => "etcd unreachable",
            Error::Tls { .. } => "TLS with etcd failed",
            Error::AllEndpointsFailed { failures, .. }
                if failures
                    .iter()
                    .all(|f| matches!(f, Error::Transport { .. })) =>
            {
                "etcd unreachable"
            }
            Error::AllEndpointsFailed { .. } => "every etcd endpoint failed",
            Error::Etcd {
                code: Some(code::RESOURCE_EXHAUSTED),
                ..
            } => "etcd database space exceeded (NOSPACE)",
            Error::Etcd { http_status, .. } if *http_status >= 500 => "etcd cannot serve requests",
            Error::Etcd { .. } => "etcd refused the request",
            Error::Decode { .. } => "etcd's answer could not be understood",
            Error::LeaseGone { .. } => "the lease is gone",
            Error::Setup { .. } => "the etcd client is not set up",
            Error::Cancelled { .. } => "cancelled",
        }
    }

    /// The TLS problems behind this error when every endpoint tried failed with one (`None` if
    /// any failed otherwise).
    pub fn tls_problems(&self) -> Option<Vec<super::TlsProblem>> {
        match self {
            Error::Tls { problem, .. } => Some(vec![*problem]),
            Error::AllEndpointsFailed { failures, .. } => failures
                .iter()
                .map(|f| f.tls_problems())
                .collect::<Option<Vec<_>>>()
                .map(|all| all.concat()),
            _ => None,
        }
    }

    /// True when another endpoint may succeed where this one failed: the connection failed, or the
    /// member answered 5xx (no leader, shutting down, overloaded).
    pub fn is_endpoint_failure(&self) -> bool {
        match self {
            Error::Transport { .. } | Error::Tls { .. } => true,
            Error::Etcd { http_status, .. } => *http_status >= 500,
            Error::AllEndpointsFailed { .. } => true,
            _ => false,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Setup { item, problem } => write!(f, "{item}: {problem}"),
            Error::Transport {
                endpoint,
                op,
                detail,
                timed_out,
            } => {
                let what = if *timed_out { "timed out" } else { "failed" };
                write!(f, "{op} on {endpoint} {what}: {detail}")
            }
            Error::Tls {
                endpoint,
                op,
                hint,
                detail,
                ..
            } => write!(f, "{op} on {endpoint}: TLS failed: {detail}; {hint}"),
            Error::Etcd {
                endpoint,
                op,
                http_status,
                code,
                message,
            } => {
                write!(f, "{op} on {endpoint}: etcd answered HTTP {http_status}")?;
                if let Some(code) = code {
                    write!(f, " code {code}")?;
                }
                write!(f, ": {message}")
            }
            Error::Decode {
                endpoint,
                op,
                detail,
            } => write!(f, "{op} on {endpoint}: bad answer from etcd: {detail}"),
            Error::LeaseGone { lease } => write!(f, "lease {lease:x} is gone"),
            Error::Cancelled { op } => write!(f, "{op} was cancelled"),
            Error::AllEndpointsFailed { op, failures } => {
                write!(f, "{op}: all {} endpoints failed", failures.len())?;
                for failure in failures {
                    write!(f, "; {failure}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for Error {}
