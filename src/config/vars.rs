//! The names of the environment variables, in one place: the parser, the unknown-name check and
//! the supervisor's list of secrets all read these lists, so that a new variable cannot be known
//! to one of them and not to the others.

/// The prefix shared by every environment variable this tool reads.
pub const PREFIX: &str = "ETCD_AWAIT_ELECTION_";

/// The full name of one variable, as a `&'static str` literal.
macro_rules! var {
    ($suffix:literal) => {
        concat!("ETCD_AWAIT_ELECTION_", $suffix)
    };
}

pub const LOCK_NAME: &str = var!("LOCK_NAME");
pub const IDENTITY: &str = var!("IDENTITY");
pub const ENDPOINTS: &str = var!("ENDPOINTS");
pub const STATUS_ENDPOINT: &str = var!("STATUS_ENDPOINT");
pub const LEASE_DURATION: &str = var!("LEASE_DURATION");
pub const RENEW_DEADLINE: &str = var!("RENEW_DEADLINE");
pub const RETRY_PERIOD: &str = var!("RETRY_PERIOD");
pub const ACQUIRE_TIMEOUT: &str = var!("ACQUIRE_TIMEOUT");
pub const CACERT: &str = var!("CACERT");
pub const CERT: &str = var!("CERT");
/// The TLS client key file; the same name carries the election key in the command's environment.
pub const KEY: &str = var!("KEY");
pub const USERNAME: &str = var!("USERNAME");
pub const USERNAME_FILE: &str = var!("USERNAME_FILE");
pub const PASSWORD: &str = var!("PASSWORD");
pub const PASSWORD_FILE: &str = var!("PASSWORD_FILE");
pub const FORCE_ACQUIRE: &str = var!("FORCE_ACQUIRE");
pub const RECAMPAIGN: &str = var!("RECAMPAIGN");
pub const HOLDERS: &str = var!("HOLDERS");
pub const LOG_FORMAT: &str = var!("LOG_FORMAT");
/// Set for the command: our key in the election.
pub const LEADER_KEY: &str = var!("LEADER_KEY");
/// Set for the command: our key's create revision (a fencing token).
pub const LEADER_REVISION: &str = var!("LEADER_REVISION");
/// Set for the command: our lease id, hex.
pub const LEADER_LEASE_ID: &str = var!("LEADER_LEASE_ID");

/// Any one of these present (even empty) asks for an election.
pub const TRIGGERS: [&str; 3] = [LOCK_NAME, IDENTITY, ENDPOINTS];

/// Every variable the configuration reads.
pub const INPUTS: &[&str] = &[
    LOCK_NAME,
    IDENTITY,
    ENDPOINTS,
    STATUS_ENDPOINT,
    LEASE_DURATION,
    RENEW_DEADLINE,
    RETRY_PERIOD,
    ACQUIRE_TIMEOUT,
    CACERT,
    CERT,
    KEY,
    USERNAME,
    USERNAME_FILE,
    PASSWORD,
    PASSWORD_FILE,
    FORCE_ACQUIRE,
    RECAMPAIGN,
    HOLDERS,
    LOG_FORMAT,
];

/// Variables the supervisor sets for the command, in the order key, revision, lease. Known, so
/// that a command that runs this tool again is not warned about them.
pub const OUTPUTS: [&str; 3] = [LEADER_KEY, LEADER_REVISION, LEADER_LEASE_ID];

/// Variables whose value is a secret: never shown in a message, and not to be passed to the
/// command. (`*_FILE` variables hold a path, not the secret.)
pub const SECRETS: &[&str] = &[PASSWORD];

/// etcdctl's variables that describe an etcd connection: set without any of ours, they suggest an
/// election was meant. Only their names are ever shown.
pub const ETCDCTL_LOOKALIKES: &[&str] = &[
    "ETCDCTL_ENDPOINTS",
    "ETCDCTL_CACERT",
    "ETCDCTL_CERT",
    "ETCDCTL_KEY",
    "ETCDCTL_USER",
    "ETCDCTL_PASSWORD",
];

/// Whether `name` is a variable whose value must be hidden.
#[must_use]
pub fn is_secret(name: &str) -> bool {
    SECRETS.contains(&name)
}
