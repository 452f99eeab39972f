//! A streamed answer (a watch, a keepalive), read one line at a time.
//!
//! Rule: a line costs at most [`MAX_LINE`] in memory; a longer one is an error, not a cut.

use std::io::{BufRead, BufReader, Read};

use super::Error;

/// Largest single line of a stream (one watch message). The election's watches ask for deletions
/// only, whose events carry no value: a real etcd's lines are a few hundred bytes.
pub(crate) const MAX_LINE: u64 = 1024 * 1024;

/// A streamed answer: a buffered reader over the response body, and the endpoint that serves it.
pub(crate) struct Stream {
    pub endpoint: String,
    pub reader: BufReader<ureq::BodyReader<'static>>,
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
