//! The election's settings and the timing rules derived from them: the leader's and a waiter's
//! keepalive intervals, when a renewal is fresh enough to lead on, the per-call budget, the kill
//! point and the back-off cap. Rule: every timing the election uses comes from here, once.

use std::time::Duration;

/// What the election needs to know.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The election's name; keys live under `<lock_name>/`.
    pub lock_name: String,
    /// Our key's value; shown by `etcdctl elect -l`.
    pub identity: String,
    /// Lease TTL (whole seconds).
    pub lease_ttl: Duration,
    /// How often to retry after etcd failed; also bounds the leader's keepalive interval.
    pub retry_period: Duration,
    /// How long leadership holds after the last acknowledged keepalive was sent.
    pub renew_deadline: Duration,
    /// Delete every other key under the prefix when joining.
    pub force_acquire: bool,
    /// How many candidates lead at once: the keys with the lowest create revisions (HOLDERS).
    pub holders: u32,
}

/// The leader's keepalive interval: every RETRY_PERIOD, but at least three keepalives per lease,
/// so that one lost keepalive never lets the lease expire. (The configuration checks the renew
/// deadline against the same rule.)
pub fn leader_interval(retry_period: Duration, lease_ttl: Duration) -> Duration {
    retry_period.min(lease_ttl / 3)
}

impl Settings {
    /// See [`leader_interval`].
    pub fn leader_interval(&self) -> Duration {
        leader_interval(self.retry_period, self.lease_ttl)
    }

    /// A waiter risks only its place in the queue: it renews every LEASE_DURATION / 3, but often
    /// enough that it can start its command without an extra keepalive (see
    /// [`Settings::may_lead_on`]), and never less often than the leader.
    pub fn waiter_interval(&self) -> Duration {
        let room = self
            .renew_deadline
            .saturating_sub(2 * self.leader_interval())
            * 9
            / 10;
        (self.lease_ttl / 3).min(room).max(self.leader_interval())
    }

    /// Whether a renewal `age` old leaves room for two of the leader's keepalives before the renew
    /// deadline: the command may start on it.
    pub fn may_lead_on(&self, age: Duration) -> bool {
        age + 2 * self.leader_interval() < self.renew_deadline
    }

    /// The budget of one unary call on one endpoint: one keepalive interval, at least 1 s.
    pub fn request_budget(&self) -> Duration {
        self.leader_interval().max(Duration::from_secs(1))
    }

    /// When a leader that stopped renewing has killed its command: halfway between RENEW_DEADLINE
    /// and LEASE_DURATION after its last renewal.
    pub fn kill_point(&self) -> Duration {
        (self.renew_deadline + self.lease_ttl) / 2
    }

    /// The longest pause of the back-offs: four RETRY_PERIODs. A waiter is back in the queue at
    /// most that long after a storm of deletions ends.
    pub fn backoff_cap(&self) -> Duration {
        4 * self.retry_period
    }

    pub(crate) fn ttl_secs(&self) -> i64 {
        i64::try_from(self.lease_ttl.as_secs()).unwrap_or(i64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(lease: u64, renew_ms: u64, retry_ms: u64) -> Settings {
        Settings {
            lock_name: "l".into(),
            identity: "me".into(),
            lease_ttl: Duration::from_secs(lease),
            retry_period: Duration::from_millis(retry_ms),
            renew_deadline: Duration::from_millis(renew_ms),
            force_acquire: false,
            holders: 1,
        }
    }

    #[test]
    fn leaders_renew_every_retry_period_and_waiters_every_third_of_the_lease() {
        let defaults = settings(15, 10_000, 2_000);
        assert_eq!(defaults.leader_interval(), Duration::from_secs(2));
        assert_eq!(defaults.waiter_interval(), Duration::from_secs(5));
        assert_eq!(defaults.kill_point(), Duration::from_millis(12_500));
        assert_eq!(defaults.request_budget(), Duration::from_secs(2));
        // Fast leader, tight deadline: waiters renew often enough to lead without a keepalive.
        let tight = settings(15, 2_000, 500);
        assert_eq!(tight.leader_interval(), Duration::from_millis(500));
        assert_eq!(tight.waiter_interval(), Duration::from_millis(900));
        assert_eq!(tight.request_budget(), Duration::from_secs(1));
        assert_eq!(
            settings(5, 3_000, 1_000).waiter_interval(),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn a_waiter_renewal_is_fresh_enough_to_lead_on_when_two_keepalives_fit_before_the_deadline() {
        for s in [
            settings(15, 10_000, 2_000),
            settings(15, 2_000, 500),
            settings(3, 2_000, 500),
        ] {
            // A healthy waiter's renewal is at most one waiter interval (plus a round trip) old.
            let healthy = s.waiter_interval() + Duration::from_millis(20);
            assert!(
                s.may_lead_on(healthy) || s.waiter_interval() == s.leader_interval(),
                "{s:?}"
            );
            assert!(!s.may_lead_on(s.renew_deadline));
        }
    }
}
