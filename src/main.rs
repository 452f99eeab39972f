//! `etcd-await-election CMD ARGS...`: run CMD only while this instance leads an etcd election.
//! Wiring only: arguments and environment → configuration → etcd client → election → supervisor.

use std::ffi::OsString;
use std::io::Write;
use std::process::exit;
use std::sync::Arc;
use std::time::Duration;

use etcd_await_election::config::{self, Cli, Config, Mode};
use etcd_await_election::election::{Election, RenewalClock, Settings};
use etcd_await_election::etcd::{self, Client, ClientConfig, NamedPath, TlsFiles};
use etcd_await_election::log;
use etcd_await_election::status::{self, Status};
use etcd_await_election::supervise::{self, exit as code, Inbox, Plan};

/// How long the last log lines may take to reach a stalled stderr before the process exits.
const LOG_FLUSH: Duration = Duration::from_secs(1);

fn main() {
    let command = command_from_args();
    let config = match config::from_process_env() {
        Ok(Mode::Election(config)) => config,
        Ok(Mode::Disabled) => exit(supervise::exec(&command)),
        Err(error) => config_error(error),
    };
    // Before any thread exists: the signal mask every thread inherits.
    supervise::prepare_process();
    log::init(config.log_format == config::LogFormat::Json);
    let settings = Settings {
        lock_name: config.lock_name.clone(),
        identity: config.identity.clone(),
        lease_ttl: config.lease_duration,
        retry_period: config.retry_period,
        renew_deadline: config.renew_deadline,
        force_acquire: config.force_acquire,
    };
    let client = connect(&config, &settings);
    log::info("starting", &[("config", &config.summary())]);
    let inbox = match Inbox::start() {
        Ok(inbox) => inbox,
        Err(error) => {
            log::error("cannot install signal handlers", &[("error", &error)]);
            finish(code::UNAVAILABLE)
        }
    };
    let clock = Arc::new(RenewalClock::new(config.renew_deadline));
    let election = Election::start(client, settings, clock, inbox.notifier());
    let status = Arc::new(Status::new(&config.identity, config.renew_deadline));
    if let Some(address) = &config.status_endpoint {
        serve_status(
            address,
            &status,
            Box::new(election.leader_source()),
            &config,
        );
    }
    let plan = Plan {
        command,
        lease_duration: config.lease_duration,
        renew_deadline: config.renew_deadline,
        acquire_timeout: config.acquire_timeout,
        hidden_env: vec!["ETCD_AWAIT_ELECTION_PASSWORD"],
    };
    finish(supervise::run(plan, inbox, election, status))
}

/// The command to run; `--help`, `--version` and usage errors end the process here.
fn command_from_args() -> Vec<OsString> {
    match config::parse_args(std::env::args_os().skip(1)) {
        Ok(Cli::Run(command)) => command,
        Ok(Cli::Help) => {
            print_out(config::usage());
            exit(0);
        }
        Ok(Cli::Version) => {
            let (version, target) = (env!("CARGO_PKG_VERSION"), env!("EAE_TARGET"));
            print_out(&format!("etcd-await-election {version} ({target})\n"));
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

/// The etcd client; a bad endpoint or TLS file is a configuration error naming its variable.
fn connect(config: &Config, settings: &Settings) -> Client {
    match Client::new(client_config(config, settings)) {
        Ok(client) => client,
        Err(etcd::Error::Setup { item, problem }) if item.starts_with("endpoint") => {
            config_error(format!("{}ENDPOINTS: {item}: {problem}", config::PREFIX))
        }
        Err(error) => config_error(error),
    }
}

/// Starts the status endpoint; an address that cannot be bound is a configuration error.
fn serve_status(
    address: &str,
    status: &Arc<Status>,
    leader: status::LeaderSource,
    config: &Config,
) {
    match status::serve(address, Arc::clone(status), leader, config.retry_period) {
        Ok(bound) => log::info("status endpoint listening", &[("address", &bound)]),
        Err(error) => {
            log::error(
                "cannot listen",
                &[
                    ("variable", &format!("{}STATUS_ENDPOINT", config::PREFIX)),
                    ("error", &error),
                ],
            );
            finish(code::CONFIG)
        }
    }
}

/// The client's view of the configuration. Unary calls get one keepalive interval (at least 1 s) per
/// endpoint; a watch silent for two lease durations is replaced.
fn client_config(config: &Config, settings: &Settings) -> ClientConfig {
    let var = |name: &str| format!("{}{name}", config::PREFIX);
    let tls = config.tls.cacert.as_ref().map(|ca| TlsFiles {
        ca: NamedPath::new(var("CACERT"), ca),
        client: config
            .tls
            .cert
            .as_ref()
            .zip(config.tls.key.as_ref())
            .map(|(cert, key)| {
                (
                    NamedPath::new(var("CERT"), cert),
                    NamedPath::new(var("KEY"), key),
                )
            }),
    });
    ClientConfig {
        endpoints: config.endpoints.clone(),
        tls,
        credentials: config.credentials.as_ref().map(|c| etcd::Credentials {
            username: c.username.clone(),
            password: c.password.clone(),
        }),
        request_timeout: settings.request_budget(),
        watch_idle_timeout: config.lease_duration * 2,
    }
}

/// Flushes the log (bounded: stderr may be stalled) and exits.
fn finish(code: i32) -> ! {
    log::flush(LOG_FLUSH);
    exit(code)
}

fn config_error(error: impl std::fmt::Display) -> ! {
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
