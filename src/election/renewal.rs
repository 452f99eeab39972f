//! The one [`RenewalClock`] that the supervisor's renew deadline and the status endpoint read: when
//! the lease was last known renewed, and whether it lapsed.
//!
//! Rules:
//! - A renewal counts from the moment its keepalive was *sent*, on the boot-time clock: the server
//!   keeps the lease at least until that moment + the TTL.
//! - While leading, a renewal sent RENEW_DEADLINE or more after the previous one comes too late:
//!   leadership was forfeited in between (a stalled process cannot have seen its deadline pass, and
//!   a successor may have adopted the lease). It is not counted, and the candidate hears
//!   [`Alert::Lapsed`](super::Alert::Lapsed). A waiter's renewal after such a gap counts, but marks
//!   the session lapsed until our key is written again (see [`RenewalClock::lapsed`]).
//! - While leading, the clock is only as fresh as the older of the last renewal and the last read
//!   that proved our key ours, so a leader that cannot read its key meets the same deadline.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use crate::clock::BootInstant;

/// When the last acknowledged keepalive was sent; see the module docs. While leading, the clock
/// also holds when the leader last proved its key (a confirm that read it): a leader is only as
/// fresh as the older of the two, so one that cannot prove its key stops by the same deadline.
#[derive(Debug)]
pub struct RenewalClock {
    renew_deadline: Duration,
    state: Mutex<ClockState>,
    renewed: Condvar,
}

#[derive(Debug, Clone, Copy, Default)]
struct ClockState {
    /// The session whose keepalives count (a late answer for an earlier lease does not).
    session: u64,
    /// The send time of the last acknowledged keepalive (or of the grant).
    acked: Option<BootInstant>,
    leading: bool,
    /// While leading: the send time of the last read that proved our key is ours.
    confirmed: Option<BootInstant>,
    /// The send time of the last renewal that came RENEW_DEADLINE or more after the one before: the
    /// lease went unrenewed long enough for an instance with our identity to have adopted it.
    lapsed: Option<BootInstant>,
}

impl ClockState {
    fn last(&self) -> Option<BootInstant> {
        match (self.leading, self.acked, self.confirmed) {
            (true, Some(acked), Some(confirmed)) => Some(acked.min(confirmed)),
            _ => self.acked,
        }
    }
}

/// What one acknowledged keepalive does to the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ack {
    /// The clock moved to its send time.
    Counted,
    /// An older keepalive than the one the clock shows: nothing changes.
    Stale,
    /// It came RENEW_DEADLINE or more after the previous one while leading: not counted.
    Lapsed,
}

impl RenewalClock {
    /// A clock for leaders that must renew within `renew_deadline`.
    pub fn new(renew_deadline: Duration) -> RenewalClock {
        RenewalClock {
            renew_deadline,
            state: Mutex::new(ClockState::default()),
            renewed: Condvar::new(),
        }
    }

    /// The moment leadership is measured from: the send time of the last acknowledged keepalive
    /// (or of the grant) — while leading, or of the last confirm if that is older.
    pub fn last(&self) -> Option<BootInstant> {
        self.lock().last()
    }

    /// Time since [`RenewalClock::last`].
    pub fn age(&self) -> Option<Duration> {
        self.last().map(BootInstant::elapsed)
    }

    /// Time since the last acknowledged keepalive was sent (or the grant), confirms aside.
    pub fn renewal_age(&self) -> Option<Duration> {
        self.lock().acked.map(BootInstant::elapsed)
    }

    /// When leadership stops being guaranteed: last + RENEW_DEADLINE.
    pub fn deadline(&self) -> Option<BootInstant> {
        self.last().map(|last| last + self.renew_deadline)
    }

    /// A new session: its lease's grant (or the keepalive that adopted it), sent at `at`, counts
    /// as the first renewal.
    pub(super) fn restart(&self, session: u64, at: BootInstant) {
        *self.lock() = ClockState {
            session,
            acked: Some(at),
            ..ClockState::default()
        };
        self.renewed.notify_all();
    }

    /// This lease now backs a leader whose key was proven ours by a request sent at `proven`.
    pub(super) fn lead(&self, proven: BootInstant) {
        let mut state = self.lock();
        state.leading = true;
        state.confirmed = Some(proven);
    }

    /// A read sent at `sent` proved our key is still ours.
    pub(super) fn confirmed(&self, sent: BootInstant) {
        let mut state = self.lock();
        state.confirmed = Some(state.confirmed.map_or(sent, |c| c.max(sent)));
    }

    /// Whether the lease went unrenewed for RENEW_DEADLINE or more (see `ClockState::lapsed`) and
    /// our key has not been re-stamped since: an instance with our identity may be adopting it.
    pub fn lapsed(&self) -> bool {
        self.lock().lapsed.is_some()
    }

    /// Our key was re-stamped by a write sent at `sent`: a lapse before it no longer counts (an
    /// adopter's claim, which compares the old stamp, can no longer win).
    pub(super) fn restamped(&self, sent: BootInstant) {
        let mut state = self.lock();
        if state.lapsed.is_some_and(|lapsed| lapsed <= sent) {
            state.lapsed = None;
        }
    }

    /// Records a keepalive of `session`, sent at `sent` and acknowledged at `received`.
    ///
    /// The lapse is measured up to the answer, not the send: etcd may have processed this renewal
    /// as late as `received`, so it saw a gap of up to `received − previous send` (a call that
    /// took its whole budget, or failed over across endpoints, hides a lapse from the send times).
    pub(super) fn acknowledged(
        &self,
        session: u64,
        sent: BootInstant,
        received: BootInstant,
    ) -> Ack {
        let mut state = self.lock();
        if state.session != session {
            return Ack::Stale;
        }
        let ack = judge(*state, sent, self.renew_deadline);
        let gap = state.acked.map(|a| received.saturating_since(a));
        if ack != Ack::Stale && gap.is_some_and(|gap| gap >= self.renew_deadline) {
            state.lapsed = Some(sent);
        }
        if ack == Ack::Counted {
            state.acked = Some(sent);
            self.renewed.notify_all();
        }
        ack
    }

    /// Waits until the clock shows a renewal sent after `after`, at most `timeout`; true if so.
    pub(super) fn wait_renewed_after(&self, after: BootInstant, timeout: Duration) -> bool {
        let state = self.lock();
        let (state, _) = self
            .renewed
            .wait_timeout_while(state, timeout, |s| s.acked.is_none_or(|a| a <= after))
            .unwrap_or_else(|p| p.into_inner());
        state.acked.is_some_and(|a| a > after)
    }

    fn lock(&self) -> MutexGuard<'_, ClockState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The rule of [`RenewalClock::acknowledged`], without the lock.
fn judge(state: ClockState, sent: BootInstant, renew_deadline: Duration) -> Ack {
    match state.acked {
        Some(last) if sent <= last => Ack::Stale,
        Some(last) if state.leading && sent.saturating_since(last) >= renew_deadline => Ack::Lapsed,
        _ => Ack::Counted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);
    const MS: Duration = Duration::from_millis(1);

    fn state(acked: Option<BootInstant>, leading: bool) -> ClockState {
        ClockState {
            acked,
            leading,
            ..ClockState::default()
        }
    }

    #[test]
    fn acknowledged_renewals_move_the_clock_forward_only() {
        let t = BootInstant::now();
        assert_eq!(judge(state(None, false), t, 10 * S), Ack::Counted);
        assert_eq!(judge(state(Some(t), false), t + S, 10 * S), Ack::Counted);
        assert_eq!(judge(state(Some(t + S), false), t, 10 * S), Ack::Stale);
        assert_eq!(judge(state(Some(t), false), t, 10 * S), Ack::Stale);
    }

    #[test]
    fn a_leader_renewal_after_the_deadline_lapses_and_stays_lapsed() {
        let t = BootInstant::now();
        let clock = RenewalClock::new(10 * S);
        clock.restart(1, t);
        clock.lead(t);
        clock.confirmed(t + 30 * S);
        assert_eq!(
            clock.acknowledged(1, t + 9 * S, t + 9 * S + MS),
            Ack::Counted
        );
        // Stalled for 10 s: too late, and every later renewal is measured from the same last one.
        assert_eq!(
            clock.acknowledged(1, t + 19 * S, t + 19 * S + MS),
            Ack::Lapsed
        );
        assert_eq!(
            clock.acknowledged(1, t + 20 * S, t + 20 * S + MS),
            Ack::Lapsed
        );
        assert!(clock.lapsed());
        assert_eq!(clock.last(), Some(t + 9 * S));
        assert_eq!(clock.deadline(), Some(t + 19 * S));
    }

    #[test]
    fn a_leader_is_as_fresh_as_its_older_proof() {
        let t = BootInstant::now();
        let clock = RenewalClock::new(10 * S);
        clock.restart(1, t);
        clock.lead(t);
        assert_eq!(
            clock.acknowledged(1, t + 4 * S, t + 4 * S + MS),
            Ack::Counted
        );
        // Keepalives pass, but the key has not been read since the start: the deadline runs from it.
        assert_eq!(clock.last(), Some(t));
        clock.confirmed(t + 3 * S);
        assert_eq!(clock.last(), Some(t + 3 * S));
        clock.confirmed(t + 6 * S);
        assert_eq!(clock.last(), Some(t + 4 * S));
    }

    #[test]
    fn a_waiter_renewal_after_a_long_gap_is_counted_but_marked_lapsed() {
        let t = BootInstant::now();
        let clock = RenewalClock::new(10 * S);
        clock.restart(1, t);
        assert_eq!(
            clock.acknowledged(1, t + 5 * S, t + 5 * S + MS),
            Ack::Counted
        );
        assert!(!clock.lapsed());
        assert_eq!(
            clock.acknowledged(1, t + 16 * S, t + 16 * S + MS),
            Ack::Counted
        );
        assert!(clock.lapsed());
        // A re-stamp sent before the lapsed renewal does not clear it; one sent after does.
        clock.restamped(t + 15 * S);
        assert!(clock.lapsed());
        clock.restamped(t + 17 * S);
        assert!(!clock.lapsed());
    }

    #[test]
    fn a_renewal_sent_in_time_but_answered_late_marks_the_session_lapsed() {
        let t = BootInstant::now();
        let clock = RenewalClock::new(10 * S);
        clock.restart(1, t);
        // Sent 9 s after the grant, answered 8.5 s later (a held connection, a slow failover):
        // etcd may have seen no renewal for 17.5 s, long enough for a twin to adopt the lease.
        assert_eq!(
            clock.acknowledged(1, t + 9 * S, t + 17 * S + 500 * MS),
            Ack::Counted
        );
        assert!(clock.lapsed());
    }

    #[test]
    fn a_new_lease_restarts_the_clock_as_a_waiter() {
        let t = BootInstant::now();
        let clock = RenewalClock::new(10 * S);
        clock.restart(1, t);
        clock.lead(t);
        clock.restart(2, t + 100 * S);
        // A late answer for the earlier lease does not move the new one's clock.
        assert_eq!(
            clock.acknowledged(1, t + 150 * S, t + 150 * S + MS),
            Ack::Stale
        );
        assert_eq!(
            clock.acknowledged(2, t + 200 * S, t + 200 * S + MS),
            Ack::Counted
        );
        assert!(clock.wait_renewed_after(t + 150 * S, Duration::ZERO));
        assert!(!clock.wait_renewed_after(t + 200 * S, Duration::from_millis(1)));
    }
}
