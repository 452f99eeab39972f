//! Seamless takeover: deciding from a lease's TTL, without renewing it, whether the instance that
//! held it before us is gone — dead, or stalled long enough that it has killed its command.
//!
//! etcd answers `lease/timetolive` with whole seconds (the remaining time, rounded down), so one
//! sample says little. The [`Tracker`] keeps a short history and decides from fresh evidence only:
//!
//! - **Renewed** — the TTL rose, or it did not drop across a second of server time (a second must
//!   take at least one off the rounded-down TTL). Someone renews the lease: a live twin.
//! - **A clean edge** — two samples less than a second apart in which the TTL fell from `n` (below
//!   the granted TTL) to less: no renewal can hide between them, and the remaining time crossed `n`
//!   in between, so the holder's last renewal was at or before `received - (granted - n)`. From then
//!   on every renewal shows as a rise; a pair of samples a second or more apart breaks the chain and
//!   the bound is dropped until the next clean edge.
//! - **Abandoned** once that bound plus the holder's kill point (`(RENEW_DEADLINE + LEASE) / 2`
//!   after its last renewal, when a holder that is merely stalled has killed its command) plus a
//!   margin for the kill itself lies behind us.
//!
//! A raft leader change refreshes every lease (the TTL rises without a renewal): the evidence
//! restarts, which only delays the decision. A lease that expires meanwhile is simply [`Verdict::Gone`].

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::queue;
use super::Settings;
use crate::etcd::{self, Client, KeyValue};
use crate::log;

/// How often the driver samples the TTL: well below a second, so that pairs are clean.
pub(super) const STEP: Duration = Duration::from_millis(200);
/// Time for the holder's SIGKILL to take effect after its kill point.
const KILL_MARGIN: Duration = Duration::from_millis(200);
/// One second: what the TTL's rounding hides.
const SECOND: Duration = Duration::from_secs(1);
/// Samples kept: a little more than a second's worth at [`STEP`].
const HISTORY: usize = 16;

/// One `lease/timetolive` answer and when it was asked and answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Sample {
    pub sent: Instant,
    pub received: Instant,
    /// Remaining seconds, rounded down; 0 or below when the lease is gone.
    pub ttl: i64,
    /// The TTL the lease was granted with.
    pub granted: i64,
    /// The raft term of the answer's header.
    pub term: u64,
}

/// What the samples so far prove.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Not enough evidence yet: sample again.
    Wait,
    /// The holder's kill point has passed without a renewal: the lease may be adopted.
    Abandoned,
    /// Someone renews the lease: another live instance uses our identity.
    Renewed,
    /// The lease expired (and its key with it).
    Gone,
    /// The lease was granted with another duration: not ours to adopt.
    OtherDuration,
}

/// Accumulates samples of one lease; see the module docs.
#[derive(Debug)]
pub(super) struct Tracker {
    granted: i64,
    kill_point: Duration,
    history: VecDeque<Sample>,
    /// Upper bound on the holder's last renewal, from clean edges since the chain last broke.
    last_renewal_bound: Option<Instant>,
}

impl Tracker {
    /// A tracker for a lease we expect to have been granted `granted` seconds, whose holder kills
    /// its command `kill_point` after its last renewal.
    pub(super) fn new(granted: i64, kill_point: Duration) -> Tracker {
        Tracker {
            granted,
            kill_point,
            history: VecDeque::with_capacity(HISTORY),
            last_renewal_bound: None,
        }
    }

    /// Takes one more sample into account.
    pub(super) fn observe(&mut self, sample: Sample) -> Verdict {
        if sample.ttl <= 0 {
            return Verdict::Gone;
        }
        if sample.granted != self.granted {
            return Verdict::OtherDuration;
        }
        if self.history.back().is_some_and(|p| p.term != sample.term) {
            self.history.clear();
            self.last_renewal_bound = None;
        }
        if let Some(previous) = self.history.back().copied() {
            if sample.ttl > previous.ttl || self.stood_still_for_a_second(&sample) {
                return Verdict::Renewed;
            }
            self.follow_edge(&previous, &sample);
        }
        self.remember(sample);
        match self.last_renewal_bound {
            Some(bound) if sample.received >= bound + self.kill_point + KILL_MARGIN => {
                Verdict::Abandoned
            }
            _ => Verdict::Wait,
        }
    }

    /// True when an earlier sample, at least a second of server time before this one, had a TTL
    /// no higher: without a renewal it would have dropped.
    fn stood_still_for_a_second(&self, sample: &Sample) -> bool {
        self.history.iter().any(|old| {
            sample.sent.saturating_duration_since(old.received) >= SECOND && sample.ttl >= old.ttl
        })
    }

    /// Updates the bound on the holder's last renewal from the pair (`previous`, `sample`).
    fn follow_edge(&mut self, previous: &Sample, sample: &Sample) {
        let clean = sample.received.saturating_duration_since(previous.sent) < SECOND;
        if !clean {
            self.last_renewal_bound = None;
            return;
        }
        if sample.ttl < previous.ttl && previous.ttl < self.granted {
            let since =
                Duration::from_secs(u64::try_from(self.granted - previous.ttl).unwrap_or(0));
            let bound = sample
                .received
                .checked_sub(since)
                .unwrap_or(sample.received);
            self.last_renewal_bound = Some(self.last_renewal_bound.map_or(bound, |b| b.min(bound)));
        }
    }

    fn remember(&mut self, sample: Sample) {
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(sample);
    }
}

/// What to do with an earlier run's key that carries our identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Decision {
    /// Its holder has stopped: keep its lease and its place.
    Adopt,
    /// Keep our fresh key (a live twin, a lease of another duration, or one that expired).
    Fresh,
    /// We were asked to stop meanwhile.
    Stop,
}

/// Watches `twin`'s lease until it is provably abandoned or not ours to take, logging the outcome.
pub(super) fn judge_twin(
    client: &Client,
    settings: &Settings,
    twin: &KeyValue,
    pause: impl FnMut(Duration) -> bool,
) -> Result<Decision, etcd::Error> {
    let key = queue::name_of(twin);
    log::info(
        "found our identity's key; waiting until its holder must have stopped",
        &[("key", &key)],
    );
    let tracker = Tracker::new(settings.ttl_secs(), settings.kill_point());
    Ok(match judge_lease(client, twin.lease, tracker, pause)? {
        Some(Verdict::Abandoned) => Decision::Adopt,
        None => Decision::Stop,
        Some(Verdict::Renewed) => {
            log::error(
                "another live instance uses our identity; queueing with a fresh key \
                 (identities must be unique)",
                &[("key", &key)],
            );
            Decision::Fresh
        }
        Some(Verdict::OtherDuration) => {
            log::warn(
                "our identity's key has a lease of another duration; queueing with a fresh key",
                &[("key", &key)],
            );
            Decision::Fresh
        }
        Some(Verdict::Gone | Verdict::Wait) => Decision::Fresh,
    })
}

/// Samples `lease` every [`STEP`] until `tracker` reaches a verdict. `pause` sleeps for the given
/// time and returns false when the candidate is asked to stop (then `None`).
fn judge_lease(
    client: &Client,
    lease: i64,
    mut tracker: Tracker,
    mut pause: impl FnMut(Duration) -> bool,
) -> Result<Option<Verdict>, etcd::Error> {
    loop {
        let sent = Instant::now();
        let answer = client.lease_time_to_live(lease)?;
        let verdict = tracker.observe(Sample {
            sent,
            received: Instant::now(),
            ttl: answer.ttl,
            granted: answer.granted_ttl,
            term: answer.header.raft_term,
        });
        if verdict != Verdict::Wait {
            return Ok(Some(verdict));
        }
        if !pause(STEP) {
            return Ok(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A simulated lease on a simulated etcd, sampled every [`STEP`] with a round trip of `rtt`.
    struct World {
        start: Instant,
        granted: i64,
        /// Server times (offsets from `start`) of the holder's renewals.
        renewals: Vec<Duration>,
        rtt: Duration,
    }

    impl World {
        /// A holder that renews every `interval` from 0 until `dies_at` (its last renewal is the
        /// last multiple of `interval` before `dies_at`).
        fn holder(granted: i64, interval: Duration, dies_at: Duration) -> World {
            let mut renewals = Vec::new();
            let mut at = Duration::ZERO;
            while at < dies_at {
                renewals.push(at);
                at += interval;
            }
            World {
                start: Instant::now(),
                granted,
                renewals,
                rtt: Duration::from_millis(2),
            }
        }

        fn last_renewal_before(&self, at: Duration) -> Duration {
            *self
                .renewals
                .iter()
                .rev()
                .find(|r| **r <= at)
                .expect("granted at 0")
        }

        /// The answer etcd gives when it serves the request at `at`.
        fn ttl_at(&self, at: Duration) -> i64 {
            let since = at - self.last_renewal_before(at);
            let remaining = self.granted as f64 - since.as_secs_f64();
            remaining.floor().max(-1.0) as i64
        }

        fn sample(&self, sent: Duration) -> Sample {
            let served = sent + self.rtt / 2;
            Sample {
                sent: self.start + sent,
                received: self.start + sent + self.rtt,
                ttl: self.ttl_at(served),
                granted: self.granted,
                term: 2,
            }
        }

        /// Samples from `from` every STEP until a verdict other than Wait; returns it and when.
        fn run(&self, from: Duration, kill_point: Duration) -> (Verdict, Duration) {
            let mut tracker = Tracker::new(self.granted, kill_point);
            let mut at = from;
            loop {
                let verdict = tracker.observe(self.sample(at));
                if verdict != Verdict::Wait {
                    return (verdict, at + self.rtt);
                }
                at += STEP + self.rtt;
                assert!(at < Duration::from_secs(120), "no verdict");
            }
        }
    }

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    /// Keepalive intervals the tool can run with: ≤ 1 s (RETRY_PERIOD 500ms), 1 s, 1.2 s, 2 s
    /// (defaults), and LEASE/3 = 5 s (a waiter's cadence with the defaults).
    const INTERVALS: [f64; 6] = [0.3, 0.5, 1.0, 1.2, 2.0, 5.0];

    #[test]
    fn a_live_holder_is_seen_renewing_at_every_keepalive_interval() {
        for interval in INTERVALS {
            for offset in [0.0, 0.05, 0.37, 0.81] {
                let world = World::holder(15, secs(interval), secs(600.0));
                let (verdict, at) = world.run(secs(3.0 + offset), secs(12.5));
                assert_eq!(
                    verdict,
                    Verdict::Renewed,
                    "interval {interval} offset {offset}"
                );
                let waited = at - secs(3.0 + offset);
                assert!(
                    waited < secs(interval + 1.5),
                    "interval {interval}: took {waited:?}"
                );
            }
        }
    }

    #[test]
    fn a_dead_holder_is_abandoned_only_after_its_kill_point() {
        for interval in INTERVALS {
            for death in [3.1, 3.5, 4.05, 7.77] {
                let world = World::holder(15, secs(interval), secs(death));
                let last = world.last_renewal_before(secs(death));
                // Start watching at several moments after the death, before the kill point.
                for look in [0.0, 0.3, 2.0, 9.0] {
                    let from = secs(death + look);
                    let (verdict, at) = world.run(from, secs(12.5));
                    let case = format!("interval {interval} death {death} look {look}: {at:?}");
                    match verdict {
                        Verdict::Abandoned => {
                            assert!(at >= last + secs(12.5), "too early: {case}");
                            // Evidence comes with every whole second the TTL drops: soon after.
                            assert!(at <= last + secs(12.5 + 1.8), "too late: {case}");
                        }
                        // Watching began too close to expiry to see a whole second drop.
                        Verdict::Gone if look > 8.0 => assert!(at >= last + secs(14.0), "{case}"),
                        other => panic!("{other:?}: {case}"),
                    }
                }
            }
        }
    }

    #[test]
    fn a_short_lease_expires_before_its_kill_point_can_be_proven() {
        // LEASE 5 / RENEW 3: kill point 4 s; the rounding leaves no whole second to prove it.
        let world = World::holder(5, secs(1.0), secs(2.5));
        let (verdict, at) = world.run(secs(2.6), secs(4.0));
        let last = world.last_renewal_before(secs(2.5));
        match verdict {
            Verdict::Gone => {}
            Verdict::Abandoned => assert!(at >= last + secs(4.0)),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_holder_renewing_after_a_clean_edge_is_seen_at_once() {
        // Renews every 2 s: the TTL goes 14, 13, then jumps back up.
        let world = World::holder(15, secs(2.0), secs(600.0));
        let (verdict, at) = world.run(secs(0.1), secs(12.5));
        assert_eq!(verdict, Verdict::Renewed);
        assert!(at < secs(2.5), "{at:?}");
    }

    #[test]
    fn slow_samples_break_the_chain_of_evidence() {
        let start = Instant::now();
        let at = |s: f64| start + secs(s);
        let sample = |sent: f64, received: f64, ttl: i64| Sample {
            sent: at(sent),
            received: at(received),
            ttl,
            granted: 15,
            term: 1,
        };
        let mut tracker = Tracker::new(15, secs(12.5));
        assert_eq!(tracker.observe(sample(0.0, 0.01, 14)), Verdict::Wait);
        assert_eq!(tracker.observe(sample(0.2, 0.21, 13)), Verdict::Wait);
        assert!(tracker.last_renewal_bound.is_some());
        // A sample that took 1.5 s: a renewal may hide in it, so the bound goes.
        assert_eq!(tracker.observe(sample(0.4, 1.9, 12)), Verdict::Wait);
        assert_eq!(tracker.last_renewal_bound, None);
    }

    #[test]
    fn a_raft_term_change_restarts_the_evidence_and_other_durations_are_refused() {
        let start = Instant::now();
        let sample = |sent: f64, ttl: i64, term: u64, granted: i64| Sample {
            sent: start + secs(sent),
            received: start + secs(sent + 0.01),
            ttl,
            granted,
            term,
        };
        let mut tracker = Tracker::new(15, secs(12.5));
        assert_eq!(tracker.observe(sample(0.0, 3, 1, 15)), Verdict::Wait);
        assert_eq!(tracker.observe(sample(0.2, 2, 1, 15)), Verdict::Wait);
        // The new raft leader refreshed every lease: a rise, but no renewal by anyone.
        assert_eq!(tracker.observe(sample(0.4, 15, 2, 15)), Verdict::Wait);
        assert_eq!(tracker.last_renewal_bound, None);
        assert_eq!(
            tracker.observe(sample(0.6, 5, 2, 10)),
            Verdict::OtherDuration
        );
        assert_eq!(tracker.observe(sample(0.8, -1, 2, 15)), Verdict::Gone);
    }
}
