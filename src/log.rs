//! One line per state change on stderr: an RFC 3339 UTC timestamp, a level, a message and
//! `key=value` fields — or one JSON object per line when `ETCD_AWAIT_ELECTION_LOG_FORMAT=json`.
//! Callers never pass secrets (passwords, tokens, key material) as fields.

use std::fmt::Display;
use std::io::Write;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

static JSON: OnceLock<bool> = OnceLock::new();

/// Chooses JSON lines instead of text; the first call wins.
pub fn use_json(json: bool) {
    let _ = JSON.set(json);
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

/// Writes one line.
pub fn line(level: Level, message: &str, fields: &[(&str, &dyn Display)]) {
    let text = if *JSON.get().unwrap_or(&false) {
        json_line(level, message, fields)
    } else {
        text_line(level, message, fields)
    };
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
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

fn text_line(level: Level, message: &str, fields: &[(&str, &dyn Display)]) -> String {
    let mut out = format!(
        "{} {:5} {message}",
        timestamp(SystemTime::now()),
        level.as_str()
    );
    for (key, value) in fields {
        let value = value.to_string();
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
        object.insert((*key).into(), value.to_string().into());
    }
    let mut out = serde_json::Value::Object(object).to_string();
    out.push('\n');
    out
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
