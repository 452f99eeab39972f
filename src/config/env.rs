//! The seam between the configuration and the process: the variables come in as a list, and the
//! one file read (a secret given as `*_FILE`) goes through a function, so that every rule can be
//! unit-tested without touching the process environment.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::path::Path;

use super::error::ConfigError;
use super::secret_file::MAX_SECRET_FILE_BYTES;

/// Reads a secret file: its content, or what is wrong with it (never the content).
pub type ReadFile<'a> = &'a dyn Fn(&Path) -> Result<String, String>;

/// The variables and the file reader one configuration is built from.
pub(super) struct Env<'a> {
    vars: HashMap<OsString, OsString>,
    read_file: ReadFile<'a>,
}

impl<'a> Env<'a> {
    pub(super) fn new(
        vars: impl IntoIterator<Item = (OsString, OsString)>,
        read_file: ReadFile<'a>,
    ) -> Self {
        Env {
            vars: vars.into_iter().collect(),
            read_file,
        }
    }

    /// Set, even to the empty string.
    pub(super) fn is_present(&self, name: &str) -> bool {
        self.vars.contains_key(OsStr::new(name))
    }

    /// Set to a non-empty value.
    pub(super) fn is_non_empty(&self, name: &str) -> bool {
        self.vars
            .get(OsStr::new(name))
            .is_some_and(|value| !value.is_empty())
    }

    /// The names of all variables set.
    pub(super) fn names(&self) -> impl Iterator<Item = &OsStr> {
        self.vars.keys().map(OsString::as_os_str)
    }

    /// The value of `name` as UTF-8; `None` when unset.
    pub(super) fn text(&self, name: &str) -> Result<Option<String>, ConfigError> {
        match self.vars.get(OsStr::new(name)) {
            None => Ok(None),
            Some(value) => value
                .to_str()
                .map(|v| Some(v.to_owned()))
                .ok_or_else(|| ConfigError::invalid(name, &value.to_string_lossy(), "valid UTF-8")),
        }
    }

    /// Like [`Env::text`], but an empty value counts as unset.
    pub(super) fn optional(&self, name: &str) -> Result<Option<String>, ConfigError> {
        Ok(self.text(name)?.filter(|value| !value.is_empty()))
    }

    /// A secret given either directly in `var` or as a path in `file_var`, not both; `what` names
    /// it in the error.
    pub(super) fn secret(
        &self,
        var: &str,
        file_var: &str,
        what: &str,
    ) -> Result<Option<String>, ConfigError> {
        match (self.optional(var)?, self.optional(file_var)?) {
            (None, None) => Ok(None),
            (Some(value), None) => Ok(Some(value)),
            (Some(_), Some(path)) => Err(ConfigError::invalid(
                file_var,
                &path,
                format!("either {var} or {file_var}, not both"),
            )),
            (None, Some(path)) => (self.read_file)(Path::new(&path))
                .map(Some)
                .map_err(|problem| {
                    ConfigError::invalid(
                        file_var,
                        &path,
                        format!(
                            "a readable regular file of at most {} KiB holding the {what} \
                         (non-empty, UTF-8; one trailing newline is dropped): {problem}",
                            MAX_SECRET_FILE_BYTES / 1024
                        ),
                    )
                }),
        }
    }
}
