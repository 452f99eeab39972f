//! Warnings about variables that are set but do nothing: a misspelled name of ours, or etcdctl's
//! variables where ours were meant. The Go tool ignores unknown names and runs without an election
//! when ours are missing, so these never fail start-up; they are one line that tells the operator
//! why the election they expected is not happening. Only names are shown, never values.

use std::ffi::OsStr;

use super::env::Env;
use super::log_value;
use super::vars::{ETCDCTL_LOOKALIKES, INPUTS, OUTPUTS, TRIGGERS};

/// Names are listed up to this many, then counted, to keep the line short whatever the
/// environment holds.
const MAX_LISTED: usize = 6;
/// A name this far (in edits) from one of ours is taken for a misspelling of it.
const MAX_EDITS: usize = 3;
/// Longer names are not compared: no misspelling is that long, and the comparison stays cheap.
const MAX_COMPARED_LEN: usize = 64;

/// In election mode: the unknown names that look like ours, or `None`.
pub(super) fn election_warning(env: &Env) -> Option<String> {
    let unknown: Vec<String> = unknown_names(env)
        .into_iter()
        .map(|(name, guess)| with_guess(&name, guess, None))
        .collect();
    if unknown.is_empty() {
        return None;
    }
    let noun = if unknown.len() == 1 {
        "variable"
    } else {
        "variables"
    };
    Some(format!("ignoring unknown {noun} {}", listing(&unknown)))
}

/// In disabled mode: why an election might have been meant, or `None`.
pub(super) fn disabled_hint(env: &Env) -> Option<String> {
    let mut found: Vec<String> = ETCDCTL_LOOKALIKES
        .iter()
        .filter(|name| env.is_present(name))
        .map(|name| format!("{name} (etcdctl's; not read here)"))
        .collect();
    found.extend(
        INPUTS
            .iter()
            .filter(|name| env.is_non_empty(name))
            .map(|name| (*name).to_owned()),
    );
    found.extend(
        unknown_names(env)
            .into_iter()
            .map(|(name, guess)| with_guess(&name, guess, Some("unknown"))),
    );
    if found.is_empty() {
        return None;
    }
    let verb = if found.len() == 1 { "is" } else { "are" };
    let [lock, identity, endpoints] = TRIGGERS;
    Some(format!(
        "running the command without an election although {} {verb} set: an election needs \
         {lock}, {identity} and {endpoints}",
        listing(&found)
    ))
}

/// `name (unknown; did you mean X?)`, with the parts that apply.
fn with_guess(name: &str, guess: Option<&str>, label: Option<&str>) -> String {
    let guess = guess.map(|guess| format!("did you mean {guess}?"));
    match [label.map(str::to_owned), guess]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
    {
        notes if notes.is_empty() => name.to_owned(),
        notes => format!("{name} ({})", notes.join("; ")),
    }
}

/// `a, b and c`, or `a, b, … and 4 more`.
fn listing(items: &[String]) -> String {
    if items.len() > MAX_LISTED {
        let shown = items[..MAX_LISTED - 1].join(", ");
        return format!("{shown} and {} more", items.len() - (MAX_LISTED - 1));
    }
    match items.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
        None => String::new(),
    }
}

/// Set names that look like ours (any case, `ETCD_AWAIT_` on) but are not, sorted, each with the
/// closest of ours if it is close.
fn unknown_names(env: &Env) -> Vec<(String, Option<&'static str>)> {
    let mut unknown: Vec<(String, Option<&'static str>)> = env
        .names()
        .filter(|name| looks_like_ours(name) && !is_known(name))
        .map(|name| {
            let shown = log_value(&name.to_string_lossy());
            let guess = closest(&name.to_string_lossy());
            (shown, guess)
        })
        .collect();
    unknown.sort();
    unknown
}

fn looks_like_ours(name: &OsStr) -> bool {
    let name = name.as_encoded_bytes();
    name.get(..11)
        .is_some_and(|start| start.eq_ignore_ascii_case(b"ETCD_AWAIT_"))
}

fn is_known(name: &OsStr) -> bool {
    INPUTS.iter().chain(&OUTPUTS).any(|known| name == *known)
}

/// The known input nearest to `name`: equal once case, `_` and `-` are ignored, else within
/// [`MAX_EDITS`] edits of the upper-cased name.
fn closest(name: &str) -> Option<&'static str> {
    if name.len() > MAX_COMPARED_LEN {
        return None;
    }
    let squash = |s: &str| -> String {
        s.chars()
            .filter(|c| !matches!(c, '_' | '-'))
            .map(|c| c.to_ascii_uppercase())
            .collect()
    };
    let squashed = squash(name);
    if let Some(same) = INPUTS.iter().find(|known| squash(known) == squashed) {
        return Some(same);
    }
    let upper = name.to_ascii_uppercase();
    INPUTS
        .iter()
        .map(|known| (edit_distance(&upper, known), *known))
        .filter(|(edits, _)| *edits <= MAX_EDITS)
        .min()
        .map(|(_, known)| known)
}

/// Levenshtein distance over characters, one row at a time.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distances() {
        for (a, b, d) in [
            ("", "", 0),
            ("abc", "abc", 0),
            ("abc", "abd", 1),
            ("abc", "ab", 1),
            ("ab", "abc", 1),
            ("kitten", "sitting", 3),
            ("", "abc", 3),
        ] {
            assert_eq!(edit_distance(a, b), d, "{a} {b}");
        }
    }

    #[test]
    fn guesses() {
        for (name, guess) in [
            (
                "ETCD_AWAIT_ELECTION_LOCKNAME",
                Some("ETCD_AWAIT_ELECTION_LOCK_NAME"),
            ),
            (
                "etcd_await_election_lock_name",
                Some("ETCD_AWAIT_ELECTION_LOCK_NAME"),
            ),
            (
                "ETCD_AWAIT_ELECTION_ENDPOINT",
                Some("ETCD_AWAIT_ELECTION_ENDPOINTS"),
            ),
            (
                "ETCD_AWAIT_ELECTION_PASSWORD_FIL",
                Some("ETCD_AWAIT_ELECTION_PASSWORD_FILE"),
            ),
            (
                "ETCD_AWAIT_ELECTIONS_IDENTITY",
                Some("ETCD_AWAIT_ELECTION_IDENTITY"),
            ),
            ("ETCD_AWAIT_ELECTION_LEASE_TTL", None),
            ("ETCD_AWAIT_ELECTION_SOMETHING_ELSE", None),
        ] {
            assert_eq!(closest(name), guess, "{name}");
        }
        assert_eq!(closest(&"X".repeat(100)), None);
    }

    #[test]
    fn listings_are_bounded() {
        let items: Vec<String> = (0..20).map(|i| format!("V{i}")).collect();
        assert_eq!(listing(&items[..1]), "V0");
        assert_eq!(listing(&items[..3]), "V0, V1 and V2");
        assert_eq!(listing(&items[..6]), "V0, V1, V2, V3, V4 and V5");
        assert_eq!(listing(&items), "V0, V1, V2, V3, V4 and 15 more");
    }
}
