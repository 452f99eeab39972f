//! Reading etcd's answers: a unary body, etcd's error body on any other status than 2xx, a JSON
//! answer decoded, a ureq failure turned into an [`Error`].
//!
//! Rules: an answer costs at most [`MAX_BODY`] in memory, an error body at most 64 KiB read and
//! [`MAX_ERROR_TEXT`] characters kept; every error names its endpoint and operation.

use std::io::Read;

use serde::de::DeserializeOwned;

use super::wire::ErrorBody;
use super::Error;

/// Largest unary answer accepted. etcd refuses requests over 1.5 MiB (`--max-request-bytes`), so no
/// value it stores is larger; the largest answer the election reads carries two keys (the
/// predecessor and the leader), base64-encoded: 2 × 2 MiB. Our own values are identities of at
/// most 1 KiB.
pub(crate) const MAX_BODY: u64 = 8 * 1024 * 1024;

/// How much of an error body is kept in an error message.
const MAX_ERROR_TEXT: usize = 512;

/// Reads a unary answer: the body of a 2xx, or etcd's error.
pub(super) fn read_answer(
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
pub(super) fn check_status(
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

pub(super) fn transport_error(endpoint: &str, op: &'static str, error: ureq::Error) -> Error {
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
