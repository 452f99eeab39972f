//! `etcd-await-election CMD ARGS...`: run CMD only while this instance leads an etcd election.
//! Wiring only: arguments and environment → configuration → etcd client → election → supervisor.

use std::ffi::OsString;
use std::io::Write;
use std::process::exit;
use std::sync::Arc;
use std::time::Duration;

use etcd_await_election::config::{self, Cli, Config, LeaderQuery, Mode};
use etcd_await_election::election::{Election, RenewalClock};
use etcd_await_election::etcd::{self, Client};
use etcd_await_election::log;
use etcd_await_election::status::{self, Sources, Status};
use etcd_await_election::supervise::{self, exit as code, Mailbox};

/// How long the last log lines may take to reach a stalled stderr before the process exits.
const LOG_FLUSH: Duration = Duration::from_secs(1);

fn main() {
    let command = match command_from_args() {
        Invocation::Run(command) => command,
        Invocation::Leader(query) => leader(query),
    };
    let (config, warning) = match config::from_process_env() {
        Ok(Mode::Election { config, warning }) => (config, warning),
        Ok(Mode::Disabled { hint }) => {
            if let Some(hint) = hint {
                print_err(&format!("etcd-await-election: warning: {hint}\n"));
            }
            exit(supervise::exec(&command))
        }
        Err(error) => config_error(error),
    };
    // Before any thread exists: the signal mask every thread inherits.
    supervise::prepare_process();
    log::init(config.log_format == config::LogFormat::Json);
    if let Some(warning) = &warning {
        log::warn(warning, &[]);
    }
    let client = connect(&config);
    log::info("starting", &[("config", &config.summary())]);
    let listener = config.status_endpoint.as_deref().map(bind_status);
    // The election's first request goes out first; the rest of the start-up overlaps its answer.
    let mailbox = Mailbox::new();
    let clock = Arc::new(RenewalClock::new(config.renew_deadline));
    let election = Election::start(
        client,
        config.election_settings(),
        Arc::clone(&clock),
        mailbox.notifier(),
    );
    let inbox = match mailbox.open() {
        Ok(inbox) => inbox,
        Err(error) => {
            log::error("cannot install signal handlers", &[("error", &error)]);
            let _ = election.resign();
            finish(code::UNAVAILABLE)
        }
    };
    let guardian = supervise::fork_guardian();
    let sources = Sources {
        leader: Box::new(election.leader_source()),
        renewal_age: Box::new(move || clock.age()),
    };
    let status = Arc::new(Status::new(
        &config.identity,
        &config.lock_name,
        config.renew_deadline,
        sources,
    ));
    if let Some(listener) = listener {
        serve_status(listener, &status);
    }
    let plan = config.plan(command);
    finish(supervise::run(plan, inbox, election, status, guardian))
}

/// What the command line asks for, once `--help`, `--version` and usage errors are dealt with.
enum Invocation {
    Run(Vec<OsString>),
    Leader(LeaderQuery),
}

/// `--help`, `--version` and usage errors end the process here.
fn command_from_args() -> Invocation {
    match config::parse_args(std::env::args_os().skip(1)) {
        Ok(Cli::Run(command)) => Invocation::Run(command),
        Ok(Cli::Leader(query)) => Invocation::Leader(query),
        Ok(Cli::Help) => {
            print_out(config::usage());
            exit(0);
        }
        Ok(Cli::Version) => {
            let (version, target) = (env!("CARGO_PKG_VERSION"), env!("EAE_TARGET"));
            let commit = env!("EAE_GIT_COMMIT");
            print_out(&format!(
                "etcd-await-election {version} ({target}, commit {commit})\n"
            ));
            exit(0);
        }
        Err(error) => {
            print_err(&format!(
                "etcd-await-election: {error}\n\n{}",
                config::usage()
            ));
            exit(code::USAGE);
        }
    }
}

/// The `leader` subcommand; never returns.
fn leader(query: LeaderQuery) -> ! {
    let config = config::query_from_process_env().unwrap_or_else(|error| config_error(error));
    let client = connect(&config);
    match etcd_await_election::query::run(&client, &config.lock_name, config.retry_period, query) {
        Ok(code) => exit(code),
        Err(error) => {
            print_err(&format!("etcd-await-election: leader: {error}\n"));
            exit(code::UNAVAILABLE)
        }
    }
}

/// The etcd client; a bad endpoint or TLS file is a configuration error naming its variable.
fn connect(config: &Config) -> Client {
    match Client::new(config.client_config()) {
        Ok(client) => client,
        Err(etcd::Error::Setup { item, problem }) if item.starts_with("endpoint") => {
            config_error(format!("{}ENDPOINTS: {item}: {problem}", config::PREFIX))
        }
        Err(error) => config_error(error),
    }
}

/// Binds the status endpoint; an address that cannot be bound is a configuration error.
fn bind_status(address: &str) -> status::Listener {
    match status::bind(address) {
        Ok(listener) => listener,
        Err(error) => config_error(format!(
            "{}STATUS_ENDPOINT={address:?}: cannot listen: {error}",
            config::PREFIX
        )),
    }
}

/// Starts serving the status endpoint.
fn serve_status(listener: status::Listener, status: &Arc<Status>) {
    match status::serve(listener, Arc::clone(status)) {
        Ok(bound) => log::info("status endpoint listening", &[("address", &bound)]),
        Err(error) => log::error("cannot serve the status endpoint", &[("error", &error)]),
    }
}

/// Flushes the log (bounded: stderr may be stalled) and exits.
fn finish(code: i32) -> ! {
    log::flush(LOG_FLUSH);
    exit(code)
}

fn config_error(error: impl std::fmt::Display) -> ! {
    log::flush(LOG_FLUSH);
    print_err(&format!("etcd-await-election: {error}\n"));
    exit(code::CONFIG)
}

/// Writes to stdout; a closed stdout is ignored (printing must never panic).
fn print_out(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// Writes to stderr; errors are ignored.
fn print_err(text: &str) {
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}
