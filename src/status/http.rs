//! HTTP/1.x for the status endpoint: the request head as it arrives, and the bytes of each answer.
//!
//! Rule: a request costs at most its request line in memory ([`MAX_LINE`]); the rest of the head
//! (up to [`MAX_HEAD`]) is counted and skipped. Paths: `/healthz`, `/readyz`, `/metrics`; every
//! other path answers like `/` with the Go tool's body (`text/plain; charset=utf-8`, as Go sniffs
//! it), since the Go tool has one handler on `/`. `HEAD` is `GET` without the body; other methods
//! get 405. Answers come from [`Status`] alone.

use super::{Health, Readiness, Status};

/// Longest request head accepted (431 past it).
pub(super) const MAX_HEAD: usize = 8 * 1024;
/// Longest request line accepted (414 past it).
pub(super) const MAX_LINE: usize = 1024;

/// A request head as it arrives: only the request line is kept; the rest is counted and skipped.
#[derive(Default)]
pub(super) struct Head {
    line: Vec<u8>,
    line_done: bool,
    /// The last byte other than CR was a line feed: another one ends the head.
    at_line_start: bool,
    size: usize,
}

#[derive(Debug, PartialEq)]
pub(super) enum Progress {
    More,
    /// The head ended; here is its request line.
    Complete(String),
    LineTooLong,
    TooLarge,
}

impl Head {
    pub(super) fn feed(&mut self, bytes: &[u8]) -> Progress {
        for &byte in bytes {
            self.size += 1;
            if self.size > MAX_HEAD {
                return Progress::TooLarge;
            }
            if !self.line_done {
                match byte {
                    b'\n' => self.line_done = true,
                    b'\r' => {}
                    _ if self.line.len() == MAX_LINE => return Progress::LineTooLong,
                    _ => self.line.push(byte),
                }
            }
            match byte {
                b'\r' => {}
                b'\n' if self.at_line_start => {
                    return Progress::Complete(String::from_utf8_lossy(&self.line).into_owned())
                }
                b'\n' => self.at_line_start = true,
                _ => self.at_line_start = false,
            }
        }
        Progress::More
    }
}

/// One answer before it is encoded.
struct Answer {
    code: u16,
    kind: &'static str,
    body: String,
}

/// Whether the answer carries its body (`GET`) or only its head (`HEAD`).
#[derive(Clone, Copy, PartialEq)]
enum Method {
    Get,
    Head,
}

const TEXT: &str = "text/plain; charset=utf-8";
const METRICS: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The full response to a request line.
pub(super) fn respond_to(line: &str, status: &Status) -> Vec<u8> {
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return refusal(400);
    };
    if !version.starts_with("HTTP/1.") || !target.starts_with('/') {
        return refusal(400);
    }
    let method = match method {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        _ => return refusal(405),
    };
    let path = target.split('?').next().unwrap_or(target);
    encode(&route(path, status), method)
}

fn route(path: &str, status: &Status) -> Answer {
    let text = |code, body: &str| Answer {
        code,
        kind: TEXT,
        body: body.to_string(),
    };
    match path {
        "/healthz" => match status.health() {
            Health::Healthy => text(200, "ok\n"),
            Health::RenewalLate => text(503, "leading, but the lease was not renewed in time\n"),
        },
        "/readyz" => match status.readiness() {
            Readiness::Leading => text(200, "leading\n"),
            Readiness::NotLeading => text(503, "not leading\n"),
        },
        "/metrics" => Answer {
            code: 200,
            kind: METRICS,
            body: status.metrics(),
        },
        _ => text(200, &status.body()),
    }
}

/// The answer to a request we do not serve.
pub(super) fn refusal(code: u16) -> Vec<u8> {
    let body = match code {
        405 => "method not allowed\n",
        414 => "request line too long\n",
        431 => "request too large\n",
        _ => "bad request\n",
    };
    let answer = Answer {
        code,
        kind: TEXT,
        body: body.to_string(),
    };
    encode(&answer, Method::Get)
}

fn encode(answer: &Answer, method: Method) -> Vec<u8> {
    let reason = match answer.code {
        200 => "OK",
        400 => "Bad Request",
        405 => "Method Not Allowed",
        414 => "URI Too Long",
        431 => "Request Header Fields Too Large",
        _ => "Service Unavailable",
    };
    let allow = match answer.code {
        405 => "Allow: GET, HEAD\r\n",
        _ => "",
    };
    let mut bytes = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{allow}\
         Connection: close\r\n\r\n",
        answer.code,
        answer.kind,
        answer.body.len(),
    )
    .into_bytes();
    if method == Method::Get {
        bytes.extend_from_slice(answer.body.as_bytes());
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status() -> Status {
        crate::status::tests::with(None, None)
    }

    fn answer_to(line: &str) -> String {
        String::from_utf8(respond_to(line, &status())).unwrap()
    }

    #[test]
    fn a_head_ends_at_its_blank_line_however_it_is_split() {
        let mut head = Head::default();
        assert_eq!(head.feed(b"GET /x HT"), Progress::More);
        assert_eq!(head.feed(b"TP/1.1\r\nHost: a\r\n\r"), Progress::More);
        assert_eq!(
            head.feed(b"\n"),
            Progress::Complete("GET /x HTTP/1.1".into())
        );
        let mut bare = Head::default();
        assert_eq!(
            bare.feed(b"GET / HTTP/1.0\nA: b\n\nrest"),
            Progress::Complete("GET / HTTP/1.0".into())
        );
    }

    #[test]
    fn heads_and_lines_past_their_limits_are_refused() {
        let mut head = Head::default();
        assert_eq!(head.feed(b"GET / HTTP/1.1\r\n"), Progress::More);
        let filler = vec![b'a'; MAX_HEAD];
        assert_eq!(head.feed(&filler), Progress::TooLarge);
        let mut line = Head::default();
        assert_eq!(line.feed(&vec![b'a'; MAX_LINE]), Progress::More);
        assert_eq!(line.feed(b"a"), Progress::LineTooLong);
        assert!(String::from_utf8(refusal(414))
            .unwrap()
            .starts_with("HTTP/1.1 414 URI Too Long"));
    }

    #[test]
    fn every_get_path_but_the_named_ones_answers_like_root() {
        let root = answer_to("GET / HTTP/1.1");
        assert!(root.starts_with("HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n"));
        assert!(root.ends_with(
            "\r\n\r\n{\"status\": \"ok\", \"phase\": \"awaiting\", \"leader\": \"unknown\"}\n"
        ));
        for path in ["/status", "/health", "/x?y", "/readyz/", "/metricsz"] {
            assert_eq!(answer_to(&format!("GET {path} HTTP/1.0")), root, "{path}");
        }
        assert!(answer_to("GET /healthz HTTP/1.1").ends_with("\r\n\r\nok\n"));
        assert!(answer_to("GET /readyz?verbose HTTP/1.1").starts_with("HTTP/1.1 503 "));
        let metrics = answer_to("GET /metrics HTTP/1.1");
        assert!(metrics.contains("\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"));
    }

    #[test]
    fn head_is_get_without_the_body_and_other_methods_get_405() {
        let get = answer_to("GET /status HTTP/1.1");
        let head = answer_to("HEAD /status HTTP/1.1");
        assert_eq!(Some(head.as_str()), get.split_inclusive("\r\n\r\n").next());
        for method in ["POST", "PUT", "DELETE", "OPTIONS", "get"] {
            let answer = answer_to(&format!("{method} /healthz HTTP/1.1"));
            assert!(answer.starts_with("HTTP/1.1 405 "), "{method}: {answer}");
            assert!(answer.contains("\r\nAllow: GET, HEAD\r\n"), "{answer}");
        }
        for line in [
            "",
            "GET /",
            "GET / HTTP/2",
            "GET x HTTP/1.1",
            "GET  / HTTP/1.1",
        ] {
            assert!(answer_to(line).starts_with("HTTP/1.1 400 "), "{line:?}");
        }
    }
}
