//! Unit tests of the configuration as a whole, and the helpers the submodules' tests share.

use super::*;
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

type Vars = HashMap<String, OsString>;
type Pairs<'a> = &'a [(&'a str, &'a str)];

/// Variables from `(suffix, value)` pairs.
fn vars(pairs: &[(&str, &str)]) -> Vars {
    pairs
        .iter()
        .map(|(suffix, value)| (full(suffix), OsString::from(value)))
        .collect()
}

/// A minimal valid election environment plus `pairs` (which override).
fn base(pairs: &[(&str, &str)]) -> Vars {
    let mut map = vars(&[
        ("LOCK_NAME", "jobs"),
        ("IDENTITY", "pod-1"),
        ("ENDPOINTS", "http://etcd-0:2379"),
    ]);
    map.extend(vars(pairs));
    map
}

fn run_with(map: &Vars, read_file: ReadFile) -> Result<Mode, ConfigError> {
    let vars = map.iter().map(|(k, v)| (OsString::from(k), v.clone()));
    from_env(vars, read_file)
}

fn run(map: &Vars) -> Result<Mode, ConfigError> {
    run_with(map, &read_secret_file)
}

fn config(map: &Vars) -> Config {
    match run(map) {
        Ok(Mode::Election { config, .. }) => config,
        other => panic!("expected an election config, got {other:?}"),
    }
}

fn error(map: &Vars) -> ConfigError {
    match run(map) {
        Err(err) => err,
        Ok(mode) => panic!("expected an error, got {mode:?}"),
    }
}

fn hint(map: &Vars) -> Option<String> {
    match run(map) {
        Ok(Mode::Disabled { hint }) => hint,
        other => panic!("expected disabled mode, got {other:?}"),
    }
}

fn warning(map: &Vars) -> Option<String> {
    match run(map) {
        Ok(Mode::Election { warning, .. }) => warning,
        other => panic!("expected an election config, got {other:?}"),
    }
}

fn full(suffix: &str) -> String {
    format!("{PREFIX}{suffix}")
}

/// A deterministic pseudo-random source for the "no panic" property tests.
pub(super) struct XorShift(pub(super) u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    pub(super) fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap_or(0)
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }

    /// Up to 11 pieces of text that parsers find awkward.
    pub(super) fn text(&mut self) -> String {
        let len = self.below(12);
        (0..len).map(|_| self.pick(ALPHABET)).collect()
    }
}

const ALPHABET: &[&str] = &[
    "0", "1", "2", "5", "9", "00", "ms", "s", "m", "h", "d", "S", ".", "-", "+", " ", "\t", "\n",
    "\0", ",", ":", "[", "]", "/", "µ", "é", "日", "😀", "https://", "http://", "x", "::1",
    "\u{FFFD}", "on-loss", "always", "off",
];

/// A temporary directory, removed on drop.
pub(super) struct Scratch(PathBuf);

impl Scratch {
    pub(super) fn new(tag: &str) -> Scratch {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("eae-config-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create a scratch dir");
        Scratch(dir)
    }

    pub(super) fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    pub(super) fn file(&self, name: &str, content: &[u8]) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, content).expect("write a scratch file");
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// --- which mode --------------------------------------------------------------------------------

#[test]
fn every_input_shares_the_prefix_and_is_in_the_usage() {
    for name in vars::INPUTS.iter().chain(&vars::OUTPUTS) {
        assert!(name.starts_with(PREFIX), "{name}");
    }
    for name in vars::INPUTS {
        let suffix = &name[PREFIX.len()..];
        assert!(usage().contains(suffix), "usage lacks {suffix}");
    }
    for secret in SECRETS {
        assert!(vars::INPUTS.contains(secret), "{secret}");
    }
    assert!(SECRETS.contains(&vars::PASSWORD));
}

#[test]
fn disabled_when_none_of_the_three_is_present() {
    assert_eq!(run(&Vars::new()), Ok(Mode::Disabled { hint: None }));
    let unrelated = HashMap::from([
        ("PATH".to_owned(), OsString::from("/bin")),
        ("ETCDCTL_API".to_owned(), OsString::from("3")),
    ]);
    assert_eq!(hint(&unrelated), None);
    // Not inspected: a garbage value is no error without an election.
    let others = vars(&[("LEASE_DURATION", "garbage"), ("FORCE_ACQUIRE", "1")]);
    assert!(matches!(run(&others), Ok(Mode::Disabled { .. })));
}

#[test]
fn any_of_the_three_present_even_empty_requires_all() {
    for (present, missing) in [
        ("LOCK_NAME", "IDENTITY"),
        ("IDENTITY", "LOCK_NAME"),
        ("ENDPOINTS", "LOCK_NAME"),
    ] {
        for value in ["", "x"] {
            let err = error(&vars(&[(present, value)]));
            assert_eq!(err.variable, full(missing));
            assert_eq!(err.value, None);
            assert!(err.expected.contains(&full(present)), "{err}");
        }
    }
}

#[test]
fn missing_identity_when_lock_name_set() {
    let err = error(&vars(&[("LOCK_NAME", "jobs"), ("ENDPOINTS", "http://a:1")]));
    assert!(
        err.to_string().starts_with(
            "ETCD_AWAIT_ELECTION_IDENTITY is not set: required because \
             ETCD_AWAIT_ELECTION_LOCK_NAME is set"
        ),
        "{err}"
    );
    let err = error(&vars(&[("LOCK_NAME", "jobs"), ("IDENTITY", "p")]));
    assert_eq!(err.variable, full("ENDPOINTS"));
}

// --- hints and warnings -----------------------------------------------------------------------

#[test]
fn disabled_hint_names_etcdctl_variables_but_never_their_values() {
    let mut map = HashMap::from([
        (
            "ETCDCTL_ENDPOINTS".to_owned(),
            OsString::from("http://SECRET:2379"),
        ),
        ("ETCDCTL_PASSWORD".to_owned(), OsString::from("SECRET")),
    ]);
    let hint = hint(&map).expect("a hint");
    assert_eq!(
        hint,
        "running the command without an election although ETCDCTL_ENDPOINTS (etcdctl's; not read \
         here) and ETCDCTL_PASSWORD (etcdctl's; not read here) are set: an election needs \
         ETCD_AWAIT_ELECTION_LOCK_NAME, ETCD_AWAIT_ELECTION_IDENTITY and \
         ETCD_AWAIT_ELECTION_ENDPOINTS"
    );
    map.extend(vars(&[
        ("LOCK_NAME", "x"),
        ("IDENTITY", "i"),
        ("ENDPOINTS", "http://a:1"),
    ]));
    assert_eq!(
        warning(&map),
        None,
        "etcdctl's variables are fine beside ours"
    );
}

#[test]
fn disabled_hint_names_our_options_and_misspellings() {
    let map = vars(&[
        ("LOCKNAME", "jobs"),
        ("LEASE_DURATION", "SECRET"),
        ("RETRY_PERIOD", ""),
    ]);
    let hint = hint(&map).expect("a hint");
    assert!(
        hint.contains(
            "ETCD_AWAIT_ELECTION_LEASE_DURATION and ETCD_AWAIT_ELECTION_LOCKNAME (unknown; did \
             you mean ETCD_AWAIT_ELECTION_LOCK_NAME?) are set"
        ),
        "{hint}"
    );
    assert!(
        !hint.contains("SECRET") && !hint.contains("RETRY_PERIOD"),
        "{hint}"
    );
}

#[test]
fn election_warns_about_unknown_names_only() {
    assert_eq!(warning(&base(&[])), None);
    // Set by a wrapper around us for its command: known.
    let nested = base(&[
        ("LEADER_KEY", "l/1f"),
        ("LEADER_REVISION", "7"),
        ("LEADER_LEASE_ID", "1f"),
    ]);
    assert_eq!(warning(&nested), None);
    let map = base(&[("LOCKNAME", "x"), ("ZZZ_UNRELATED", "SECRET")]);
    assert_eq!(
        warning(&map).as_deref(),
        Some(
            "ignoring unknown variables ETCD_AWAIT_ELECTION_LOCKNAME (did you mean \
             ETCD_AWAIT_ELECTION_LOCK_NAME?) and ETCD_AWAIT_ELECTION_ZZZ_UNRELATED"
        )
    );
    let mut lower = base(&[]);
    lower.insert("etcd_await_election_holders".into(), "2".into());
    let shown = warning(&lower).expect("a warning");
    assert!(
        shown.starts_with("ignoring unknown variable etcd_"),
        "{shown}"
    );
    assert!(
        shown.contains("did you mean ETCD_AWAIT_ELECTION_HOLDERS?"),
        "{shown}"
    );
}

#[cfg(unix)]
#[test]
fn odd_names_stay_on_one_line() {
    use std::os::unix::ffi::OsStringExt;
    let vars = [
        (
            OsString::from("ETCD_AWAIT_ELECTION_A\nB"),
            OsString::from("v"),
        ),
        (
            OsString::from_vec(b"ETCD_AWAIT_\xff".to_vec()),
            OsString::from("v"),
        ),
    ];
    let Ok(Mode::Disabled { hint: Some(hint) }) = from_env(vars, &read_secret_file) else {
        panic!("expected a hint");
    };
    assert!(!hint.contains('\n'), "{hint}");
    assert!(hint.contains("\"ETCD_AWAIT_ELECTION_A\\nB\""), "{hint}");
    assert!(hint.contains('\u{FFFD}'), "{hint}");
}

// --- values ------------------------------------------------------------------------------------

#[test]
fn all_defaults() {
    let config = config(&base(&[]));
    assert_eq!(
        config,
        Config {
            lock_name: "jobs".into(),
            identity: "pod-1".into(),
            endpoints: vec!["http://etcd-0:2379".into()],
            status_endpoint: None,
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
            tls: TlsPaths::default(),
            credentials: None,
            force_acquire: false,
            acquire_timeout: None,
            recampaign: Recampaign::Off,
            holders: 1,
            log_format: LogFormat::Text,
        }
    );
    assert_eq!(
        config.summary(),
        "lock=jobs identity=pod-1 endpoints=http://etcd-0:2379 lease=15s renew=10s \
         retry=2s status=none tls=none auth=none force_acquire=false recampaign=off holders=1 \
         acquire_timeout=none log_format=text"
    );
}

#[test]
fn empty_optional_values_mean_default() {
    let optional: Vec<(&str, &str)> = vars::INPUTS
        .iter()
        .map(|name| &name[PREFIX.len()..])
        .filter(|suffix| !["LOCK_NAME", "IDENTITY", "ENDPOINTS"].contains(suffix))
        .map(|suffix| (suffix, ""))
        .collect();
    assert!(optional.len() >= 16);
    assert_eq!(config(&base(&optional)), config(&base(&[])));
}

#[test]
fn every_option_set() {
    let config = config(&base(&[
        ("ENDPOINTS", " https://a:2379 ,, https://b:2379,"),
        ("STATUS_ENDPOINT", "[::1]:8080"),
        ("LEASE_DURATION", "1m"),
        ("RENEW_DEADLINE", "45s"),
        ("RETRY_PERIOD", "1.5s"),
        ("ACQUIRE_TIMEOUT", "1h30m"),
        ("CACERT", "/pki/ca.crt"),
        ("CERT", "/pki/c.crt"),
        ("KEY", "/pki/c.key"),
        ("USERNAME", "root"),
        ("PASSWORD", "s3cret"),
        ("FORCE_ACQUIRE", "true"),
        ("RECAMPAIGN", " On-Loss "),
        ("HOLDERS", "3"),
        ("LOG_FORMAT", "JSON"),
    ]));
    assert_eq!(config.endpoints, ["https://a:2379", "https://b:2379"]);
    assert_eq!(config.status_endpoint.as_deref(), Some("[::1]:8080"));
    assert_eq!(config.lease_duration, Duration::from_secs(60));
    assert_eq!(config.renew_deadline, Duration::from_secs(45));
    assert_eq!(config.retry_period, Duration::from_millis(1500));
    assert_eq!(config.acquire_timeout, Some(Duration::from_secs(5400)));
    assert_eq!(config.tls.cacert, Some(PathBuf::from("/pki/ca.crt")));
    assert_eq!(config.tls.cert, Some(PathBuf::from("/pki/c.crt")));
    assert_eq!(config.tls.key, Some(PathBuf::from("/pki/c.key")));
    assert_eq!(
        config.credentials,
        Some(Credentials {
            username: "root".into(),
            password: "s3cret".into()
        })
    );
    assert!(config.force_acquire);
    assert_eq!(config.recampaign, Recampaign::OnLoss);
    assert_eq!(config.holders, 3);
    assert_eq!(config.log_format, LogFormat::Json);
    assert_eq!(
        config.summary(),
        "lock=jobs identity=pod-1 endpoints=https://a:2379,https://b:2379 lease=60s \
         renew=45s retry=1500ms status=[::1]:8080 tls=mutual auth=user:root \
         force_acquire=true recampaign=on-loss holders=3 acquire_timeout=5400s log_format=json"
    );
}

#[test]
fn summary_quotes_unusual_values_and_shows_ca_only_tls() {
    let config = config(&base(&[
        ("LOCK_NAME", "my lock"),
        ("IDENTITY", "p\"1\n"),
        ("CACERT", "/ca.pem"),
    ]));
    let summary = config.summary();
    assert!(summary.contains("lock=\"my lock\""), "{summary}");
    assert!(summary.contains("identity=\"p\\\"1\\n\""), "{summary}");
    assert!(summary.contains("tls=ca"), "{summary}");
    assert!(!summary.contains('\n'));
}

#[test]
fn bad_values_name_variable_and_value() {
    let long_name = "x".repeat(1025);
    let cases: &[(&str, &str)] = &[
        ("LEASE_DURATION", "abc"),
        ("LEASE_DURATION", "-5"),
        ("LEASE_DURATION", "+5"),
        ("LEASE_DURATION", "5d"),
        ("LEASE_DURATION", "5sec"),
        ("LEASE_DURATION", "5S"),
        ("LEASE_DURATION", "NaN"),
        ("LEASE_DURATION", "inf"),
        ("LEASE_DURATION", "1500ms"),
        ("LEASE_DURATION", "1"),
        ("LEASE_DURATION", "0"),
        ("LEASE_DURATION", "1.5"),
        ("LEASE_DURATION", "9000h"),
        ("LEASE_DURATION", "99999999999999999999999999"),
        ("LEASE_DURATION", " "),
        ("LEASE_DURATION", " 15"),
        ("RENEW_DEADLINE", "1m30"),
        ("RENEW_DEADLINE", "0s"),
        ("RENEW_DEADLINE", ".5s"),
        ("RENEW_DEADLINE", "1.s"),
        ("RENEW_DEADLINE", "15"),
        ("RENEW_DEADLINE", "4s"),
        ("RETRY_PERIOD", "1.0005s"),
        ("RETRY_PERIOD", "1.5ms"),
        ("RETRY_PERIOD", "5µs"),
        ("RETRY_PERIOD", "1h-5m"),
        ("RETRY_PERIOD", "10s"),
        ("RETRY_PERIOD", "1ms"),
        ("RETRY_PERIOD", "99ms"),
        ("ACQUIRE_TIMEOUT", "forever"),
        ("ACQUIRE_TIMEOUT", "0"),
        ("ACQUIRE_TIMEOUT", "-1s"),
        ("STATUS_ENDPOINT", "1234"),
        ("STATUS_ENDPOINT", "localhost:0"),
        ("STATUS_ENDPOINT", "localhost:65536"),
        ("STATUS_ENDPOINT", "localhost:99999999999999999999"),
        ("STATUS_ENDPOINT", "localhost:http"),
        ("STATUS_ENDPOINT", "localhost:-1"),
        ("STATUS_ENDPOINT", "::1:8080"),
        ("STATUS_ENDPOINT", "[::1]"),
        ("STATUS_ENDPOINT", "[]:80"),
        ("STATUS_ENDPOINT", "[1.2.3.4]:80"),
        ("STATUS_ENDPOINT", "[::1:80"),
        ("STATUS_ENDPOINT", "http://localhost:8080"),
        ("STATUS_ENDPOINT", "host:"),
        ("STATUS_ENDPOINT", "local host:80"),
        ("STATUS_ENDPOINT", "a/b:80"),
        ("ENDPOINTS", ","),
        ("ENDPOINTS", ""),
        ("ENDPOINTS", "  "),
        ("ENDPOINTS", "http://a:2379, http://b :2379"),
        ("LOCK_NAME", ""),
        ("LOCK_NAME", "a\0b"),
        ("LOCK_NAME", &long_name),
        ("IDENTITY", ""),
        ("IDENTITY", "p\0"),
        ("IDENTITY", &long_name),
        ("RECAMPAIGN", "on_loss"),
        ("RECAMPAIGN", "yes"),
        ("RECAMPAIGN", "1"),
        ("HOLDERS", "0"),
        ("HOLDERS", "1001"),
        ("HOLDERS", "-1"),
        ("HOLDERS", "+2"),
        ("HOLDERS", " 2"),
        ("HOLDERS", "2.0"),
        ("HOLDERS", "two"),
        ("HOLDERS", "99999999999999999999999"),
        ("LOG_FORMAT", "yaml"),
        ("LOG_FORMAT", "text/json"),
    ];
    for (suffix, value) in cases {
        let err = error(&base(&[(suffix, value)]));
        let shown = err.to_string();
        assert_eq!(err.variable, full(suffix), "{shown}");
        assert_eq!(err.value.as_deref(), Some(*value), "{shown}");
        assert!(shown.contains(&full(suffix)), "{shown}");
        assert!(shown.contains(&format!("{value:?}")), "{shown}");
        assert!(shown.contains(": expected "), "{shown}");
    }
}

#[test]
fn keyword_and_number_messages() {
    let err = error(&base(&[("RECAMPAIGN", "sometimes")]));
    assert_eq!(
        err.to_string(),
        "ETCD_AWAIT_ELECTION_RECAMPAIGN=\"sometimes\": expected off, on-loss or always"
    );
    let err = error(&base(&[("HOLDERS", "1001")]));
    assert_eq!(
        err.to_string(),
        "ETCD_AWAIT_ELECTION_HOLDERS=\"1001\": expected a whole number from 1 to 1000, \
         e.g. 1 or 3 (too large)"
    );
    for (value, expected) in [
        ("off", Recampaign::Off),
        ("OFF", Recampaign::Off),
        ("on-loss", Recampaign::OnLoss),
        ("always", Recampaign::Always),
        (" Always\t", Recampaign::Always),
        ("  ", Recampaign::Off),
    ] {
        assert_eq!(config(&base(&[("RECAMPAIGN", value)])).recampaign, expected);
    }
    for (value, expected) in [("1", 1), ("007", 7), ("1000", 1000)] {
        assert_eq!(config(&base(&[("HOLDERS", value)])).holders, expected);
    }
}

#[test]
fn force_acquire_truthiness() {
    for (value, expected) in [
        (None, false),
        (Some(""), false),
        (Some("  "), false),
        (Some("0"), false),
        (Some("false"), false),
        (Some("FALSE"), false),
        (Some(" False "), false),
        (Some("no"), false),
        (Some("No"), false),
        (Some("off"), false),
        (Some("f"), false),
        (Some("n"), false),
        (Some("1"), true),
        (Some("true"), true),
        (Some("yes"), true),
        (Some("y"), true),
        (Some("on"), true),
        (Some("anything"), true),
        (Some("00"), true),
        (Some("nope"), true),
    ] {
        let pairs: Vec<(&str, &str)> = value.map(|v| ("FORCE_ACQUIRE", v)).into_iter().collect();
        assert_eq!(config(&base(&pairs)).force_acquire, expected, "{value:?}");
    }
}

#[test]
fn log_format_values() {
    for (value, expected) in [
        ("text", LogFormat::Text),
        ("TEXT", LogFormat::Text),
        (" json ", LogFormat::Json),
        ("Json", LogFormat::Json),
        ("", LogFormat::Text),
    ] {
        assert_eq!(config(&base(&[("LOG_FORMAT", value)])).log_format, expected);
    }
    let err = error(&base(&[("LOG_FORMAT", "xml")]));
    assert_eq!(err.expected, "text or json");
}

#[test]
fn status_endpoint_shapes() {
    for ok in [
        "127.0.0.1:1234",
        "localhost:8080",
        ":8080",
        "[::1]:1",
        "[::]:65535",
        "my_host.example-1.com:80",
    ] {
        let config = config(&base(&[("STATUS_ENDPOINT", ok)]));
        assert_eq!(config.status_endpoint.as_deref(), Some(ok));
    }
}

#[test]
fn names_at_the_limit_are_accepted() {
    let max = "é".repeat(512);
    let config = config(&base(&[("LOCK_NAME", &max), ("IDENTITY", " spaced ")]));
    assert_eq!(config.lock_name, max);
    assert_eq!(config.identity, " spaced ");
}

// --- timings -----------------------------------------------------------------------------------

#[test]
fn lease_error_message_format() {
    let err = error(&base(&[("LEASE_DURATION", "abc")]));
    assert!(
        err.to_string().starts_with(
            "ETCD_AWAIT_ELECTION_LEASE_DURATION=\"abc\": expected whole seconds >= 2, \
             e.g. 15 or 15s"
        ),
        "{err}"
    );
}

#[test]
fn lease_must_be_whole_seconds_of_at_least_two() {
    let err = error(&base(&[("LEASE_DURATION", "1500ms")]));
    assert_eq!(err.variable, full("LEASE_DURATION"));
    assert!(err.expected.contains("whole"), "{err}");
    for ok in ["2s", "2", "2000ms", "1m", "1.5m"] {
        let config = config(&base(&[
            ("LEASE_DURATION", ok),
            ("RENEW_DEADLINE", "1500ms"),
            ("RETRY_PERIOD", "500ms"),
        ]));
        assert!(config.lease_duration >= Duration::from_secs(2), "{ok}");
    }
}

#[test]
fn renew_must_be_less_than_lease() {
    let err = error(&base(&[("RENEW_DEADLINE", "15")]));
    assert_eq!(
        err.to_string(),
        "ETCD_AWAIT_ELECTION_RENEW_DEADLINE=\"15\": expected less than \
         ETCD_AWAIT_ELECTION_LEASE_DURATION (15s)"
    );
    let err = error(&base(&[("LEASE_DURATION", "20"), ("RENEW_DEADLINE", "1m")]));
    assert_eq!(err.variable, full("RENEW_DEADLINE"));
    assert!(err.expected.contains("(20s)"), "{err}");
}

#[test]
fn defaulted_renew_not_less_than_short_lease() {
    let err = error(&base(&[("LEASE_DURATION", "5")]));
    assert_eq!(err.variable, full("RENEW_DEADLINE"));
    assert_eq!(err.value, None);
    let shown = err.to_string();
    assert!(shown.contains("default 10s"), "{shown}");
    assert!(
        shown.contains("ETCD_AWAIT_ELECTION_LEASE_DURATION (5s)"),
        "{shown}"
    );
    let config = config(&base(&[("LEASE_DURATION", "5"), ("RENEW_DEADLINE", "4")]));
    assert_eq!(config.renew_deadline, Duration::from_secs(4));
}

#[test]
fn retry_must_be_less_than_renew() {
    let err = error(&base(&[("RETRY_PERIOD", "10s")]));
    assert_eq!(err.variable, full("RETRY_PERIOD"));
    assert!(err
        .to_string()
        .contains("ETCD_AWAIT_ELECTION_RENEW_DEADLINE (10s)"));
    let err = error(&base(&[("RENEW_DEADLINE", "2s")]));
    assert_eq!(err.variable, full("RETRY_PERIOD"));
    assert_eq!(err.value, None);
    let config = config(&base(&[
        ("RENEW_DEADLINE", "2s"),
        ("RETRY_PERIOD", "500ms"),
    ]));
    assert_eq!(config.retry_period, Duration::from_millis(500));
}

#[test]
fn retry_period_has_a_floor() {
    let err = error(&base(&[("RETRY_PERIOD", "99ms")]));
    assert_eq!(
        err.to_string(),
        "ETCD_AWAIT_ELECTION_RETRY_PERIOD=\"99ms\": expected at least 100ms (keepalives and \
         retries are paced by it, and faster ones only load etcd)"
    );
    let config = config(&base(&[("RETRY_PERIOD", "100ms")]));
    assert_eq!(config.retry_period, MIN_RETRY_PERIOD);
    assert_eq!(config.keepalive_interval(), MIN_RETRY_PERIOD);
}

#[test]
fn renew_deadline_leaves_room_for_two_keepalives() {
    let err = error(&base(&[
        ("LEASE_DURATION", "3"),
        ("RENEW_DEADLINE", "1s"),
        ("RETRY_PERIOD", "500ms"),
    ]));
    assert_eq!(
        err.to_string(),
        "ETCD_AWAIT_ELECTION_RENEW_DEADLINE=\"1s\": expected more than twice the keepalive \
         interval min(ETCD_AWAIT_ELECTION_RETRY_PERIOD (500ms), \
         ETCD_AWAIT_ELECTION_LEASE_DURATION (3s) / 3) = 500ms, so that two renewals can be \
         tried before the deadline"
    );
    // The lease's third can be the smaller term.
    let err = error(&base(&[
        ("LEASE_DURATION", "3"),
        ("RENEW_DEADLINE", "2s"),
        ("RETRY_PERIOD", "1500ms"),
    ]));
    assert_eq!(err.variable, full("RENEW_DEADLINE"));
    assert!(err.expected.contains(") = 1s, so"), "{err}");
    // Only the default broke it: said so, and which other variable to lower.
    let err = error(&base(&[("RETRY_PERIOD", "5s")]));
    assert_eq!(
        (err.variable.as_str(), err.value.as_deref()),
        (vars::RENEW_DEADLINE, None)
    );
    let shown = err.to_string();
    assert!(
        shown.contains("its default 10s is not more than twice"),
        "{shown}"
    );
    assert!(
        shown.contains("ETCD_AWAIT_ELECTION_RETRY_PERIOD (5s)"),
        "{shown}"
    );
    assert!(
        shown.ends_with("set it higher or ETCD_AWAIT_ELECTION_RETRY_PERIOD lower"),
        "{shown}"
    );
    // Just above twice the interval is enough.
    for (lease, renew, retry) in [("3", "1001ms", "500ms"), ("3", "2001ms", "1500ms")] {
        let config = config(&base(&[
            ("LEASE_DURATION", lease),
            ("RENEW_DEADLINE", renew),
            ("RETRY_PERIOD", retry),
        ]));
        assert!(config.renew_deadline > config.keepalive_interval() * 2);
    }
}

/// The timing sets used by tests/*.rs and scripts/ (lease, renew, retry; "" = default), and
/// whether the rules accept them.
#[test]
fn the_repository_timing_sets() {
    let sets: &[(&str, &str, &str, &str, bool)] = &[
        ("gatekeeper QUICK", "3", "2", "500ms", true),
        ("gatekeeper STEADY", "15", "2", "500ms", true),
        ("gatekeeper 5/2", "5", "2", "500ms", true),
        ("gatekeeper freeze test", "3", "1", "500ms", false),
        ("gatekeeper 15/10", "15", "10", "500ms", true),
        ("gatekeeper 5/3", "5", "3", "500ms", true),
        ("faults FAST", "3", "2000ms", "500ms", true),
        ("faults ROOMY", "6", "4000ms", "500ms", true),
        ("faults restart", "8", "6000ms", "500ms", true),
        ("faults stall", "8", "2000ms", "500ms", true),
        ("status", "4", "2", "500ms", true),
        ("demo.sh, bench.py default", "5", "3", "1", true),
        ("static-checks.sh run_pid1", "5", "3", "", false),
        ("bench.py f2", "2", "1500ms", "500ms", true),
        ("bench.py f7", "10", "7", "3", true),
        ("chaos.py", "3", "2", "500ms", true),
        ("defaults", "", "", "", true),
    ];
    for (name, lease, renew, retry, accepted) in sets {
        let map = base(&[
            ("LEASE_DURATION", lease),
            ("RENEW_DEADLINE", renew),
            ("RETRY_PERIOD", retry),
        ]);
        let result = run(&map);
        assert_eq!(result.is_ok(), *accepted, "{name}: {result:?}");
        if let Err(err) = result {
            assert_eq!(err.variable, full("RENEW_DEADLINE"), "{name}");
        }
    }
}

#[test]
fn derived_timings() {
    let defaults = config(&base(&[]));
    assert_eq!(defaults.keepalive_interval(), Duration::from_secs(2));
    assert_eq!(
        defaults.client_config().request_timeout,
        Duration::from_secs(2)
    );
    assert_eq!(defaults.watch_idle_timeout(), Duration::from_secs(30));
    assert_eq!(
        defaults.election_settings().kill_point(),
        Duration::from_millis(12_500)
    );
    let quick = config(&base(&[
        ("LEASE_DURATION", "3"),
        ("RENEW_DEADLINE", "2"),
        ("RETRY_PERIOD", "500ms"),
    ]));
    assert_eq!(quick.keepalive_interval(), Duration::from_millis(500));
    assert_eq!(
        quick.client_config().request_timeout,
        Duration::from_secs(1)
    );
    assert_eq!(quick.watch_idle_timeout(), Duration::from_secs(6));
    let thirds = config(&base(&[("LEASE_DURATION", "4"), ("RENEW_DEADLINE", "3")]));
    assert_eq!(thirds.keepalive_interval(), Duration::from_secs(4) / 3);
    assert_eq!(
        thirds.election_settings().leader_interval(),
        thirds.keepalive_interval()
    );
}

// --- TLS and credentials -----------------------------------------------------------------------

#[test]
fn tls_combinations() {
    let cases: &[(Pairs, Option<&str>)] = &[
        (&[("CERT", "/c")], Some("KEY")),
        (&[("KEY", "/k")], Some("CERT")),
        (&[("CERT", "/c"), ("KEY", "/k")], Some("CACERT")),
        (&[("CERT", "/c"), ("KEY", "/k"), ("CACERT", "/ca")], None),
        (&[("CACERT", "/ca")], None),
        (&[("ENDPOINTS", "http://a:1,https://b:2")], Some("CACERT")),
        (&[("ENDPOINTS", "HTTPS://b:2")], Some("CACERT")),
        (&[("ENDPOINTS", "https://b:2"), ("CACERT", "/ca")], None),
        (
            &[("ENDPOINTS", "https://b:2"), ("CACERT", "")],
            Some("CACERT"),
        ),
    ];
    for (pairs, missing) in cases {
        let result = run(&base(pairs));
        match missing {
            None => assert!(matches!(result, Ok(Mode::Election { .. })), "{pairs:?}"),
            Some(missing) => {
                let err = result.expect_err("an error");
                assert_eq!(err.variable, full(missing), "{pairs:?}");
                assert_eq!(err.value, None);
                assert!(err.to_string().contains("is not set: required because"));
            }
        }
    }
}

#[test]
fn https_without_cacert_names_the_endpoint() {
    let err = error(&base(&[("ENDPOINTS", "https://etcd:2379")]));
    assert_eq!(err.variable, full("CACERT"));
    assert!(err.expected.contains("https://etcd:2379"), "{err}");
}

#[test]
fn credentials_go_together() {
    let err = error(&base(&[("USERNAME", "root")]));
    assert_eq!(err.variable, full("PASSWORD"));
    assert!(err.expected.contains(&full("USERNAME")));
    assert!(err.expected.contains(&full("PASSWORD_FILE")));
    let err = error(&base(&[("PASSWORD", "hunter2")]));
    assert_eq!(err.variable, full("USERNAME"));
    assert!(!err.to_string().contains("hunter2"));
    assert!(!format!("{err:?}").contains("hunter2"));
}

#[test]
fn credentials_from_files() {
    let dir = Scratch::new("credentials");
    let user = dir.file("user", b"admin\n");
    let pass = dir.file("pass", b"hunter2-SECRET\r\n");
    let (user, pass) = (user.to_string_lossy(), pass.to_string_lossy());
    let expected = Some(Credentials {
        username: "admin".into(),
        password: "hunter2-SECRET".into(),
    });
    for pairs in [
        [("USERNAME_FILE", &*user), ("PASSWORD_FILE", &*pass)],
        [("USERNAME", "admin"), ("PASSWORD_FILE", &*pass)],
        [("USERNAME_FILE", &*user), ("PASSWORD", "hunter2-SECRET")],
    ] {
        let config = config(&base(&pairs));
        assert_eq!(config.credentials, expected, "{pairs:?}");
        assert!(!config.summary().contains("SECRET"));
    }
    let err = error(&base(&[("USERNAME_FILE", &user)]));
    assert_eq!(err.variable, full("PASSWORD"));
    assert!(
        err.expected
            .contains("because ETCD_AWAIT_ELECTION_USERNAME_FILE is set"),
        "{err}"
    );
}

#[test]
fn secret_file_errors_name_variable_and_path_never_the_content() {
    let dir = Scratch::new("secret-errors");
    let latin1 = dir.file("latin1", b"SECRET\xe9");
    let empty = dir.file("empty", b"\n");
    let missing = dir.path("missing");
    for (suffix, path, problem) in [
        ("PASSWORD_FILE", &latin1, "not valid UTF-8"),
        ("USERNAME_FILE", &empty, "it is empty"),
        ("PASSWORD_FILE", &missing, "cannot read it"),
        ("PASSWORD_FILE", &dir.path(""), "it is a directory"),
    ] {
        let path = path.to_string_lossy();
        let mut map = base(&[(suffix, &path)]);
        map.extend(vars(&[("USERNAME", "u"), ("PASSWORD", "")]));
        if suffix == "USERNAME_FILE" {
            map.extend(vars(&[("USERNAME", ""), ("PASSWORD", "p")]));
        }
        let err = error(&map);
        let shown = err.to_string();
        assert_eq!(err.variable, full(suffix), "{shown}");
        assert!(shown.contains(&format!("{path:?}")), "{shown}");
        assert!(shown.contains(problem), "{shown}");
        assert!(!shown.contains("SECRET"), "{shown}");
    }
}

#[test]
fn a_secret_and_its_file_are_exclusive() {
    let err = error(&base(&[
        ("PASSWORD", "hunter2"),
        ("PASSWORD_FILE", "/run/pw"),
        ("USERNAME", "u"),
    ]));
    assert_eq!(
        err.to_string(),
        "ETCD_AWAIT_ELECTION_PASSWORD_FILE=\"/run/pw\": expected either \
         ETCD_AWAIT_ELECTION_PASSWORD or ETCD_AWAIT_ELECTION_PASSWORD_FILE, not both"
    );
    let err = error(&base(&[("USERNAME", "u"), ("USERNAME_FILE", "/run/u")]));
    assert_eq!(err.variable, full("USERNAME_FILE"));
}

#[test]
fn secret_files_go_through_the_reader_and_only_when_needed() {
    let asked: RefCell<Vec<PathBuf>> = RefCell::new(Vec::new());
    let reader = |path: &Path| {
        asked.borrow_mut().push(path.to_owned());
        Ok("from-reader".to_owned())
    };
    let mut map = base(&[("USERNAME", "u"), ("PASSWORD_FILE", "/run/pw")]);
    let Ok(Mode::Election { config, .. }) = run_with(&map, &reader) else {
        panic!("expected an election");
    };
    assert_eq!(
        config.credentials.map(|c| c.password).as_deref(),
        Some("from-reader")
    );
    assert_eq!(asked.borrow().as_slice(), [PathBuf::from("/run/pw")]);
    // Disabled mode reads nothing.
    asked.borrow_mut().clear();
    for trigger in ["LOCK_NAME", "IDENTITY", "ENDPOINTS"] {
        map.remove(&full(trigger));
    }
    assert!(matches!(run_with(&map, &reader), Ok(Mode::Disabled { .. })));
    assert!(asked.borrow().is_empty());
    // The reader's problem is reported with the path.
    let failing = |_: &Path| Err("it is a FIFO".to_owned());
    let map = base(&[("USERNAME", "u"), ("PASSWORD_FILE", "/run/pw")]);
    let err = run_with(&map, &failing).expect_err("refused");
    assert!(err.to_string().ends_with(": it is a FIFO"), "{err}");
}

#[test]
fn password_never_shown() {
    let secret = "hunter2-SECRET";
    let config = config(&base(&[("USERNAME", "admin"), ("PASSWORD", secret)]));
    assert!(!config.summary().contains(secret));
    assert!(config.summary().contains("auth=user:admin"));
    assert!(!format!("{config:?}").contains(secret));
    let mode = Mode::Election {
        config: config.clone(),
        warning: None,
    };
    assert!(!format!("{mode:?}").contains(secret));
    let credentials = config.credentials.clone().expect("credentials");
    assert!(format!("{credentials:?}").contains("<redacted>"));

    let err = ConfigError {
        variable: full("PASSWORD"),
        value: Some(secret.into()),
        expected: "x".into(),
    };
    assert!(!err.to_string().contains(secret));
    assert!(!format!("{err:?}").contains(secret));
    assert!(err.to_string().contains("<redacted>"));
}

#[cfg(unix)]
#[test]
fn non_utf8_values_are_errors() {
    use std::os::unix::ffi::OsStringExt;
    for name in vars::INPUTS {
        let mut map = base(&[]);
        map.insert(
            (*name).to_owned(),
            OsString::from_vec(b"se\xffcret".to_vec()),
        );
        let err = error(&map);
        assert_eq!(err.variable, *name);
        assert!(err.expected.contains("UTF-8"), "{err}");
        let shown = err.to_string();
        if vars::is_secret(name) {
            assert!(
                !shown.contains("se") && shown.contains("<redacted>"),
                "{shown}"
            );
        } else {
            assert!(shown.contains("se\u{FFFD}cret"), "{shown}");
        }
    }
}

// --- deterministic "no panic" property test ---------------------------------------------------

#[test]
fn from_env_never_panics_and_upholds_invariants() {
    let valid: &[(&str, &str)] = &[
        ("LOCK_NAME", "jobs"),
        ("IDENTITY", "pod-1"),
        ("ENDPOINTS", "https://a:1,http://b:2"),
        ("STATUS_ENDPOINT", ":8080"),
        ("LEASE_DURATION", "20"),
        ("RENEW_DEADLINE", "15s"),
        ("RETRY_PERIOD", "500ms"),
        ("ACQUIRE_TIMEOUT", "1m"),
        ("CACERT", "/ca"),
        ("CERT", "/c"),
        ("KEY", "/k"),
        ("USERNAME", "u"),
        ("PASSWORD_FILE", "/run/pw"),
        ("FORCE_ACQUIRE", "yes"),
        ("RECAMPAIGN", "always"),
        ("HOLDERS", "5"),
        ("LOG_FORMAT", "json"),
        ("LOCKNAME", "x"),
    ];
    let reader = |path: &Path| {
        if path == Path::new("/run/pw") {
            Ok("pw-SECRET-42".to_owned())
        } else {
            Err("no such file".to_owned())
        }
    };
    let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
    let (mut disabled, mut elections, mut errors) = (0, 0, 0);
    for _ in 0..3_000 {
        let mut map = vars(valid);
        for _ in 0..rng.below(4) {
            let (suffix, _) = valid[rng.below(valid.len())];
            match rng.below(3) {
                0 => map.remove(&full(suffix)),
                1 => map.insert(full(suffix), rng.pick(ALPHABET).into()),
                _ => map.insert(full(suffix), rng.text().into()),
            };
        }
        if rng.below(20) == 0 {
            for suffix in ["LOCK_NAME", "IDENTITY", "ENDPOINTS"] {
                map.remove(&full(suffix));
            }
        }
        match run_with(&map, &reader) {
            Ok(Mode::Disabled { hint }) => {
                disabled += 1;
                let hint = hint.unwrap_or_default();
                assert!(!hint.contains('\n') && !hint.contains("SECRET"), "{hint}");
            }
            Ok(Mode::Election { config, warning }) => {
                elections += 1;
                assert!(config.lease_duration > config.renew_deadline);
                assert!(config.renew_deadline > config.retry_period);
                assert!(config.renew_deadline > config.keepalive_interval() * 2);
                assert!(config.retry_period >= MIN_RETRY_PERIOD);
                assert!((1..=MAX_HOLDERS).contains(&config.holders));
                assert_eq!(config.lease_duration.subsec_nanos(), 0);
                assert!(!config.endpoints.is_empty());
                assert!(!config
                    .endpoints
                    .iter()
                    .any(|e| e.contains(char::is_whitespace)));
                assert!(!config.endpoints.iter().any(|e| e.is_empty()));
                let summary = config.summary();
                assert!(!summary.contains('\n') && !summary.contains("SECRET"));
                assert!(!warning.unwrap_or_default().contains('\n'));
            }
            Err(err) => {
                errors += 1;
                assert!(err.variable.starts_with(PREFIX));
                assert!(err.to_string().contains(&err.variable));
                assert!(!err.to_string().contains("SECRET"), "{err}");
            }
        }
    }
    assert!(disabled > 0 && elections > 0 && errors > 0);
}
