//! The command line: only the first argument can be an option (or the `leader` subcommand), so
//! that any command, even one named like an option or `leader`, can be run after `--`; and the
//! `--help` text.

use std::ffi::OsString;
use std::fmt;

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cli {
    /// Print [`usage`] and exit successfully.
    Help,
    /// Print the version and exit successfully.
    Version,
    /// Run this command (program followed by its arguments; never empty).
    Run(Vec<OsString>),
    /// `leader [--json] [--watch]`: print who leads.
    Leader(LeaderQuery),
}

/// How `leader` prints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LeaderQuery {
    /// One JSON object per line instead of text.
    pub json: bool,
    /// One line per change, until interrupted.
    pub watch: bool,
}

/// The command line could not be understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsageError {
    /// No command was given.
    MissingCommand,
    /// The command's program name is the empty string.
    EmptyCommand,
    /// `leader` was given an option it does not know.
    UnknownLeaderOption(String),
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UsageError::MissingCommand => f.write_str("no command given (see --help)"),
            UsageError::EmptyCommand => f.write_str("the command name is empty (see --help)"),
            UsageError::UnknownLeaderOption(option) => write!(
                f,
                "leader: unknown option {option:?}: expected --json or --watch (see --help)"
            ),
        }
    }
}

impl std::error::Error for UsageError {}

/// Parses the arguments (without `argv[0]`): `--help`/`-h`, `--version`/`-V` or `--` in first
/// position; everything else, from the first argument on, is the command, uninterpreted.
///
/// # Errors
///
/// [`UsageError`] when there is no command or its name is empty.
pub fn parse_args(args: impl IntoIterator<Item = OsString>) -> Result<Cli, UsageError> {
    let mut args = args.into_iter();
    let first = args.next().ok_or(UsageError::MissingCommand)?;
    let command: Vec<OsString> = match first.to_str() {
        Some("--help" | "-h") => return Ok(Cli::Help),
        Some("--version" | "-V") => return Ok(Cli::Version),
        Some("leader") => return leader_query(args).map(Cli::Leader),
        Some("--") => args.collect(),
        _ => std::iter::once(first).chain(args).collect(),
    };
    match command.first() {
        None => Err(UsageError::MissingCommand),
        Some(program) if program.is_empty() => Err(UsageError::EmptyCommand),
        Some(_) => Ok(Cli::Run(command)),
    }
}

/// The options of `leader`, in any order.
fn leader_query(args: impl Iterator<Item = OsString>) -> Result<LeaderQuery, UsageError> {
    let mut query = LeaderQuery::default();
    for arg in args {
        match arg.to_str() {
            Some("--json") => query.json = true,
            Some("--watch") => query.watch = true,
            _ => {
                let shown = arg.to_string_lossy().into_owned();
                return Err(UsageError::UnknownLeaderOption(shown));
            }
        }
    }
    Ok(query)
}

/// The usage text, listing the environment variables briefly.
#[must_use]
pub fn usage() -> &'static str {
    "\
Usage: etcd-await-election [--] COMMAND [ARGS...]
       etcd-await-election leader [--json] [--watch]
       etcd-await-election --help | --version

`leader` prints who leads LOCK_NAME (identity, key, create revision) and
exits 0, or 3 when nobody does; --watch prints a line per change until
interrupted. It reads the same variables (IDENTITY is not needed). A
command called `leader` runs with `etcd-await-election -- leader`.

Runs COMMAND once this instance leads an etcd election. When none of
LOCK_NAME, IDENTITY and ENDPOINTS is set, COMMAND runs at once, without
an election.

Environment (each name prefixed with ETCD_AWAIT_ELECTION_):
  LOCK_NAME         election (lock) name; required for an election
  IDENTITY          this instance's identity, e.g. the pod name; required
  ENDPOINTS         comma-separated etcd endpoints; required
  STATUS_ENDPOINT   host:port for the leadership status endpoint
  LEASE_DURATION    lease time, whole seconds >= 2 (default 15s)
  RENEW_DEADLINE    renew deadline, below LEASE_DURATION and above twice
                    min(RETRY_PERIOD, LEASE_DURATION/3) (default 10s)
  RETRY_PERIOD      retry period, 100ms or more, below RENEW_DEADLINE
                    (default 2s)
  ACQUIRE_TIMEOUT   longest wait for leadership (default: no limit)
  CACERT            CA certificate file (PEM) for https endpoints
  CERT, KEY         client certificate and key files (PEM), together
  USERNAME, PASSWORD  etcd authentication, together
  USERNAME_FILE, PASSWORD_FILE  the same, read from files instead
  FORCE_ACQUIRE     any value but 0/false/no: delete existing locks first
  RECAMPAIGN        off (default), on-loss or always
  HOLDERS           how many instances may lead at once, 1 (default) to 1000
  LOG_FORMAT        text (default) or json

Durations: a bare number is seconds (15); otherwise units ms, s, m, h
(500ms, 1m30s, 1.5s). An empty variable counts as unset.
"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn parse_args_cases() {
        let cases: &[(&[&str], Result<Cli, UsageError>)] = &[
            (&[], Err(UsageError::MissingCommand)),
            (&["--"], Err(UsageError::MissingCommand)),
            (&[""], Err(UsageError::EmptyCommand)),
            (&["--", ""], Err(UsageError::EmptyCommand)),
            (&["--help"], Ok(Cli::Help)),
            (&["-h", "x"], Ok(Cli::Help)),
            (&["--version"], Ok(Cli::Version)),
            (&["-V"], Ok(Cli::Version)),
            (&["sleep", "10"], Ok(Cli::Run(os(&["sleep", "10"])))),
            (&["sleep", "--help"], Ok(Cli::Run(os(&["sleep", "--help"])))),
            (
                &["sleep", "--version"],
                Ok(Cli::Run(os(&["sleep", "--version"]))),
            ),
            (&["--", "--help"], Ok(Cli::Run(os(&["--help"])))),
            (&["--", "--", "x"], Ok(Cli::Run(os(&["--", "x"])))),
            (
                &["--", "sh", "-c", "x"],
                Ok(Cli::Run(os(&["sh", "-c", "x"]))),
            ),
            (&["-x", "y"], Ok(Cli::Run(os(&["-x", "y"])))),
            (&["--helpme"], Ok(Cli::Run(os(&["--helpme"])))),
            (&["leader"], Ok(Cli::Leader(LeaderQuery::default()))),
            (
                &["leader", "--watch", "--json"],
                Ok(Cli::Leader(LeaderQuery {
                    json: true,
                    watch: true,
                })),
            ),
            (
                &["leader", "-v"],
                Err(UsageError::UnknownLeaderOption("-v".into())),
            ),
            (&["--", "leader"], Ok(Cli::Run(os(&["leader"])))),
        ];
        for (args, expected) in cases {
            assert_eq!(&parse_args(os(args)), expected, "{args:?}");
        }
        assert!(!UsageError::MissingCommand.to_string().is_empty());
        assert!(usage().starts_with("Usage: "));
    }

    #[cfg(unix)]
    #[test]
    fn parse_args_keeps_non_utf8_arguments() {
        use std::os::unix::ffi::OsStringExt;
        let odd = OsString::from_vec(vec![b'a', 0xff]);
        let args = vec![odd.clone(), OsString::from("--help")];
        assert_eq!(parse_args(args.clone()), Ok(Cli::Run(args)));
        assert_eq!(
            parse_args(vec![OsString::from("--"), odd.clone()]),
            Ok(Cli::Run(vec![odd]))
        );
    }

    #[test]
    fn usage_lines_fit_a_terminal() {
        for line in usage().lines() {
            assert!(line.chars().count() <= 80, "{line:?}");
        }
    }
}
