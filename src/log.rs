//! One line per state change on stderr: an RFC 3339 UTC timestamp, a level, a message and
//! `key=value` fields — or one JSON object per line when `ETCD_AWAIT_ELECTION_LOG_FORMAT=json`.
//! Callers never pass secrets (passwords, tokens, key material) as fields.
//!
//! Rule: logging never blocks the caller. A stderr pipe that nobody drains (a stalled log collector,
//! or the command filling the same pipe) must not hold up the threads that keep the lease and stop
//! the command. Lines go into a bounded queue that one writer thread drains; a line that finds the
//! queue full is dropped and counted, and the writer says how many were dropped once it can write
//! again. Before [`init`] (and if the writer cannot start) lines are written directly, which is
//! only ever the case before any safety-relevant thread exists.

use std::fmt::Display;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Condvar, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Lines that may wait for the writer; more are dropped (and counted).
const QUEUE_LINES: usize = 256;

static LOGGER: OnceLock<Logger> = OnceLock::new();

/// The queue to the writer thread and its bookkeeping.
struct Logger {
    json: bool,
    queue: SyncSender<String>,
    dropped: AtomicU64,
    /// Lines queued and lines written (or given up on), for [`flush`].
    progress: Mutex<(u64, u64)>,
    written: Condvar,
}

/// Starts the writer thread; `json` chooses JSON lines. The first call wins.
pub fn init(json: bool) {
    let (queue, lines) = sync_channel(QUEUE_LINES);
    let logger = Logger {
        json,
        queue,
        dropped: AtomicU64::new(0),
        progress: Mutex::new((0, 0)),
        written: Condvar::new(),
    };
    if LOGGER.set(logger).is_ok() {
        let started = thread::Builder::new()
            .name("log".into())
            .spawn(move || write_forever(lines));
        if started.is_err() {
            write_stderr(
                b"etcd-await-election: cannot start the log writer; logging to stderr directly\n",
            );
        }
    }
}

/// Waits until every queued line is written, at most `timeout` (stderr may be stalled for good).
pub fn flush(timeout: Duration) {
    let Some(logger) = LOGGER.get() else { return };
    let deadline = Instant::now() + timeout;
    let mut progress = lock(&logger.progress);
    while progress.1 < progress.0 {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        progress = logger
            .written
            .wait_timeout(progress, left)
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
}

/// Lines dropped so far because the writer could not keep up.
pub fn dropped() -> u64 {
    LOGGER
        .get()
        .map_or(0, |l| l.dropped.load(Ordering::Relaxed))
}

fn write_forever(lines: Receiver<String>) {
    let Some(logger) = LOGGER.get() else { return };
    for line in lines {
        write_stderr(line.as_bytes());
        let dropped = logger.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            let note = format_line(
                logger.json,
                Level::Warn,
                "log lines were dropped while stderr was blocked",
                &[("count", &dropped)],
            );
            write_stderr(note.as_bytes());
        }
        let mut progress = lock(&logger.progress);
        progress.1 += 1;
        logger.written.notify_all();
    }
}

/// One write to stderr; errors (a closed pipe) are ignored: there is nowhere else to report them.
fn write_stderr(bytes: &[u8]) {
    let _ = std::io::stderr().lock().write_all(bytes);
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// How serious a line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
    Error,
}

impl Level {
    fn as_str(self) -> &'static str {
        match self {
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

/// Writes one line without ever blocking (see the module docs).
pub fn line(level: Level, message: &str, fields: &[(&str, &dyn Display)]) {
    let Some(logger) = LOGGER.get() else {
        write_stderr(format_line(false, level, message, fields).as_bytes());
        return;
    };
    let text = format_line(logger.json, level, message, fields);
    let mut progress = lock(&logger.progress);
    match logger.queue.try_send(text) {
        Ok(()) => progress.0 += 1,
        Err(TrySendError::Full(_)) => {
            logger.dropped.fetch_add(1, Ordering::Relaxed);
        }
        Err(TrySendError::Disconnected(text)) => {
            drop(progress);
            write_stderr(text.as_bytes());
        }
    }
}

/// Writes an info line.
pub fn info(message: &str, fields: &[(&str, &dyn Display)]) {
    line(Level::Info, message, fields);
}

/// Writes a warning.
pub fn warn(message: &str, fields: &[(&str, &dyn Display)]) {
    line(Level::Warn, message, fields);
}

/// Writes an error.
pub fn error(message: &str, fields: &[(&str, &dyn Display)]) {
    line(Level::Error, message, fields);
}

fn format_line(json: bool, level: Level, message: &str, fields: &[(&str, &dyn Display)]) -> String {
    if json {
        json_line(level, message, fields)
    } else {
        text_line(level, message, fields)
    }
}

fn text_line(level: Level, message: &str, fields: &[(&str, &dyn Display)]) -> String {
    let mut out = format!(
        "{} {:5} {message}",
        timestamp(SystemTime::now()),
        level.as_str()
    );
    for (key, value) in fields {
        let value = bounded(value.to_string());
        let plain = !value.is_empty()
            && value
                .chars()
                .all(|c| !c.is_whitespace() && c != '"' && c != '=' && !c.is_control());
        if plain {
            out.push_str(&format!(" {key}={value}"));
        } else {
            out.push_str(&format!(" {key}={value:?}"));
        }
    }
    out.push('\n');
    out
}

fn json_line(level: Level, message: &str, fields: &[(&str, &dyn Display)]) -> String {
    let mut object = serde_json::Map::new();
    object.insert("ts".into(), timestamp(SystemTime::now()).into());
    object.insert("level".into(), level.as_str().into());
    object.insert("msg".into(), message.into());
    for (key, value) in fields {
        object.insert((*key).into(), bounded(value.to_string()).into());
    }
    let mut out = serde_json::Value::Object(object).to_string();
    out.push('\n');
    out
}

/// The longest field value a line carries: values from etcd (another instance's identity, an
/// error body) can be far longer than any line should be.
const MAX_FIELD: usize = 2048;

/// `value`, cut at [`MAX_FIELD`] bytes (on a character boundary) with a note of its length.
fn bounded(mut value: String) -> String {
    if value.len() <= MAX_FIELD {
        return value;
    }
    let length = value.len();
    let mut end = MAX_FIELD;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    value.truncate(end);
    value.push_str(&format!("…({length} bytes)"));
    value
}

/// `2026-11-22T02:10:51.123Z`.
pub fn timestamp(at: SystemTime) -> String {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day), after Howard Hinnant's `civil_from_days`.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_field_values_are_cut_on_a_character_boundary() {
        assert_eq!(bounded("short".into()), "short");
        let long = "é".repeat(MAX_FIELD);
        let cut = bounded(long.clone());
        assert!(cut.len() < MAX_FIELD + 32, "{}", cut.len());
        assert!(cut.ends_with(&format!("…({} bytes)", long.len())));
    }
    use std::time::Duration;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_795_313_451_123);
        assert_eq!(timestamp(t), "2026-11-22T02:10:51.123Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(timestamp(leap), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn text_fields_are_quoted_when_needed() {
        let line = text_line(Level::Warn, "renewal late", &[("a", &"x y"), ("b", &7)]);
        assert!(
            line.contains(" warn  renewal late a=\"x y\" b=7\n"),
            "{line}"
        );
    }

    #[test]
    fn json_lines_parse() {
        let line = json_line(Level::Info, "leading", &[("key", &"l/1")]);
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["msg"], "leading");
        assert_eq!(value["key"], "l/1");
    }
}
