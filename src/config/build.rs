//! What the other parts of the program are built from: the etcd client's, the election's and the
//! supervisor's settings, derived from the validated [`Config`] so that `main` copies nothing.

use std::ffi::OsString;

use super::{vars, Config, PREFIX};
use crate::election::Settings;
use crate::etcd::{ClientConfig, Credentials, NamedPath, TlsFiles, TlsNames};
use crate::supervise::Plan;

impl Config {
    /// The election's settings.
    #[must_use]
    pub fn election_settings(&self) -> Settings {
        Settings {
            lock_name: self.lock_name.clone(),
            identity: self.identity.clone(),
            lease_ttl: self.lease_duration,
            retry_period: self.retry_period,
            renew_deadline: self.renew_deadline,
            force_acquire: self.force_acquire,
            holders: self.holders,
        }
    }

    /// The etcd client's settings: TLS files named by their variables (so that errors point at
    /// what to fix), one unary call gets the election's request budget per endpoint, and a watch
    /// silent for [`Config::watch_idle_timeout`] is replaced.
    #[must_use]
    pub fn client_config(&self) -> ClientConfig {
        let var = |name: &str| format!("{PREFIX}{name}");
        let tls = self.tls.cacert.as_ref().map(|ca| TlsFiles {
            ca: NamedPath::new(var("CACERT"), ca),
            client: self
                .tls
                .cert
                .as_ref()
                .zip(self.tls.key.as_ref())
                .map(|(cert, key)| {
                    (
                        NamedPath::new(var("CERT"), cert),
                        NamedPath::new(var("KEY"), key),
                    )
                }),
        });
        ClientConfig {
            endpoints: self.endpoints.clone(),
            tls,
            credentials: self.credentials.as_ref().map(|c| Credentials {
                username: c.username.clone(),
                password: c.password.clone(),
            }),
            request_timeout: self.election_settings().request_budget(),
            watch_idle_timeout: self.watch_idle_timeout(),
            token_probe_key: format!("{}/", self.lock_name).into_bytes(),
            // Hints name the variables, also those not set (a missing client certificate).
            tls_names: Some(TlsNames {
                ca: var("CACERT"),
                cert: var("CERT"),
                key: var("KEY"),
            }),
        }
    }

    /// The supervisor's plan for running `command`.
    #[must_use]
    pub fn plan(&self, command: Vec<OsString>) -> Plan {
        Plan {
            command,
            lease_duration: self.lease_duration,
            renew_deadline: self.renew_deadline,
            acquire_timeout: self.acquire_timeout,
            hidden_env: vars::SECRETS.to_vec(),
            leader_env: vars::OUTPUTS,
            recampaign: self.recampaign,
            retry_period: self.retry_period,
            backoff_cap: self.election_settings().backoff_cap(),
        }
    }
}
