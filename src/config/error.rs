//! [`ConfigError`]: one line naming the variable, the value given and what was expected, because
//! the reader is an operator looking at a crash-looping pod, and a secret value never appears in it.

use std::fmt;

use super::vars;

const REDACTED: &str = "<redacted>";

/// A variable is missing or has a value that is not acceptable.
#[derive(Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The full variable name, e.g. `ETCD_AWAIT_ELECTION_LEASE_DURATION`.
    pub variable: String,
    /// The value given (lossily decoded), `None` if unset (or empty where empty means unset).
    /// `<redacted>` for a secret.
    pub value: Option<String>,
    /// What was expected, or why the variable is required.
    pub expected: String,
}

impl ConfigError {
    /// An error about a value that was given.
    pub(super) fn invalid(variable: &str, value: &str, expected: impl Into<String>) -> Self {
        let value = if vars::is_secret(variable) {
            REDACTED
        } else {
            value
        };
        ConfigError {
            variable: variable.to_owned(),
            value: Some(value.to_owned()),
            expected: expected.into(),
        }
    }

    /// An error about a variable that is not set (or empty).
    pub(super) fn unset(variable: &str, expected: impl Into<String>) -> Self {
        ConfigError {
            variable: variable.to_owned(),
            value: None,
            expected: expected.into(),
        }
    }

    /// `missing` is needed because `given` is set.
    pub(super) fn missing_partner(missing: &str, given: &str) -> Self {
        ConfigError::unset(
            missing,
            format!("required because {given} is set (they go together)"),
        )
    }

    /// The value to show: never a secret, even in an error built by hand.
    fn shown_value(&self) -> Option<&str> {
        match self.value.as_deref() {
            Some(_) if vars::is_secret(&self.variable) => Some(REDACTED),
            other => other,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.shown_value() {
            Some(value) => write!(
                f,
                "{}={:?}: expected {}",
                self.variable, value, self.expected
            ),
            None => write!(f, "{} is not set: {}", self.variable, self.expected),
        }
    }
}

impl fmt::Debug for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigError")
            .field("variable", &self.variable)
            .field("value", &self.shown_value())
            .field("expected", &self.expected)
            .finish()
    }
}

impl std::error::Error for ConfigError {}

/// What `Debug` of a secret shows.
pub(super) fn redacted() -> &'static str {
    REDACTED
}
