//! How often the election may repeat itself: pure timing rules, so that churn (keys deleted over
//! and over, predecessors that come and go) costs etcd a bounded number of requests.
//!
//! - [`Backoff`]: RETRY_PERIOD, doubling to a cap, back to RETRY_PERIOD after a quiet spell — for
//!   re-queueing and for re-opening a watch that keeps failing.
//! - [`Pace`]: a token bucket for looks. A handover must look at once, so a few looks pass
//!   immediately; a storm of them is held to one per RETRY_PERIOD.

use std::time::{Duration, Instant};

/// Exponential back-off from `base` to `cap`.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    next: Duration,
    last: Option<Instant>,
}

impl Backoff {
    /// Starts at `base` and doubles up to `cap` (at least `base`).
    pub fn new(base: Duration, cap: Duration) -> Backoff {
        Backoff {
            base,
            cap: cap.max(base),
            next: base,
            last: None,
        }
    }

    /// The pause before the next attempt at `now`. A spell of `cap` without attempts counts as
    /// quiet: the pause starts at `base` again.
    pub fn pause(&mut self, now: Instant) -> Duration {
        if self
            .last
            .is_some_and(|last| now.saturating_duration_since(last) >= self.cap + self.next)
        {
            self.next = self.base;
        }
        let pause = self.next;
        self.next = (self.next * 2).min(self.cap);
        self.last = Some(now + pause);
        pause
    }

    /// Forgets the failures: the next pause is `base`.
    pub fn reset(&mut self) {
        self.next = self.base;
        self.last = None;
    }
}

/// A token bucket: `burst` immediate looks, refilled by one per `period`.
#[derive(Debug, Clone)]
pub(super) struct Pace {
    period: Duration,
    burst: u32,
    tokens: u32,
    refilled: Instant,
}

impl Pace {
    /// A full bucket at `now`.
    pub(super) fn new(period: Duration, burst: u32, now: Instant) -> Pace {
        Pace {
            period,
            burst,
            tokens: burst,
            refilled: now,
        }
    }

    /// Takes a token for a look at `now`; returns how long to wait first (zero when one is there).
    pub(super) fn take(&mut self, now: Instant) -> Duration {
        self.refill(now);
        if self.tokens > 0 {
            self.tokens -= 1;
            return Duration::ZERO;
        }
        // The next token arrives one period after the last refill; it is spent on this look.
        let wait = (self.refilled + self.period).saturating_duration_since(now);
        self.refilled += self.period;
        wait
    }

    fn refill(&mut self, now: Instant) {
        if self.period.is_zero() {
            self.tokens = self.burst;
            return;
        }
        while self.tokens < self.burst && now >= self.refilled + self.period {
            self.tokens += 1;
            self.refilled += self.period;
        }
        if self.tokens == self.burst && now > self.refilled {
            self.refilled = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn backoff_doubles_to_the_cap_and_starts_over_after_a_quiet_spell() {
        let t0 = Instant::now();
        let mut backoff = Backoff::new(2 * S, 15 * S);
        let mut now = t0;
        let mut pauses = Vec::new();
        for _ in 0..6 {
            let pause = backoff.pause(now);
            pauses.push(pause.as_secs());
            now += pause;
        }
        assert_eq!(pauses, [2, 4, 8, 15, 15, 15]);
        // Quiet for longer than the cap after the last pause: back to the base.
        assert_eq!(backoff.pause(now + 31 * S), 2 * S);
        backoff.reset();
        assert_eq!(backoff.pause(now + 32 * S), 2 * S);
    }

    #[test]
    fn a_storm_of_requeues_stays_under_four_requests_per_retry_period() {
        // Each re-queue costs one transaction and opens two watches: 3 requests.
        let retry = 2 * S;
        let mut backoff = Backoff::new(retry, 16 * retry);
        let t0 = Instant::now();
        let mut now = t0;
        let mut requeues = 0u32;
        while now < t0 + 10 * S {
            now += backoff.pause(now);
            requeues += 1;
        }
        let periods = 10 * S.as_millis() as u32 / retry.as_millis() as u32;
        assert!(requeues * 3 <= 4 * periods, "{requeues} re-queues in 10 s");
    }

    #[test]
    fn pace_lets_a_burst_through_then_one_look_per_period() {
        let t0 = Instant::now();
        let mut pace = Pace::new(2 * S, 3, t0);
        assert_eq!(pace.take(t0), Duration::ZERO);
        assert_eq!(pace.take(t0), Duration::ZERO);
        assert_eq!(pace.take(t0), Duration::ZERO);
        assert_eq!(pace.take(t0), 2 * S);
        assert_eq!(pace.take(t0 + 2 * S), 2 * S);
        // After a quiet spell the bucket is full again.
        let later = t0 + 60 * S;
        for _ in 0..3 {
            assert_eq!(pace.take(later), Duration::ZERO);
        }
        assert!(pace.take(later) > Duration::ZERO);
    }

    #[test]
    fn a_storm_of_looks_is_held_to_one_per_period() {
        let t0 = Instant::now();
        let period = 2 * S;
        let mut pace = Pace::new(period, 3, t0);
        let mut now = t0;
        let mut looks = 0u32;
        while now < t0 + 20 * S {
            now += pace.take(now);
            looks += 1;
            now += Duration::from_millis(1); // the look itself
        }
        assert!(looks <= 3 + 10 + 1, "{looks} looks in 20 s");
    }
}
