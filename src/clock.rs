//! Instants on `CLOCK_BOOTTIME`: the clock every safety deadline is measured on.
//!
//! `std::time::Instant` is `CLOCK_MONOTONIC`, which stops while the host is suspended: a leader that
//! resumes after a suspend longer than its lease would still believe its last renewal recent, while
//! etcd (which kept running elsewhere) has expired the lease and another leader runs. `CLOCK_BOOTTIME`
//! counts the suspended time too. Waiting primitives of std sleep on the monotonic clock, so code
//! that waits for a boot-time deadline wakes at least every [`TICK`] to look at this clock again.

use std::ops::Add;
use std::time::Duration;

/// The longest a deadline waiter sleeps before it reads the boot-time clock again (after a suspend,
/// a deadline that passed is noticed within this).
pub const TICK: Duration = Duration::from_millis(100);

/// A moment on `CLOCK_BOOTTIME`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BootInstant(Duration);

impl BootInstant {
    /// Now.
    pub fn now() -> BootInstant {
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes one timespec into `now`, which lives on this stack frame.
        let failed = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut now) } != 0;
        if failed {
            // Linux has had CLOCK_BOOTTIME since 2.6.39; a kernel without it still has MONOTONIC.
            // SAFETY: as above.
            unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
        }
        let secs = u64::try_from(now.tv_sec).unwrap_or(0);
        let nanos = u32::try_from(now.tv_nsec).unwrap_or(0);
        BootInstant(Duration::new(secs, nanos))
    }

    /// The instant `nanos` after boot (the inverse of [`BootInstant::as_nanos`]).
    pub fn from_nanos(nanos: u64) -> BootInstant {
        BootInstant(Duration::from_nanos(nanos))
    }

    /// Nanoseconds since boot, for storing an instant in an atomic.
    pub fn as_nanos(self) -> u64 {
        u64::try_from(self.0.as_nanos()).unwrap_or(u64::MAX)
    }

    /// Time since `earlier`, zero if `earlier` is later.
    pub fn saturating_since(self, earlier: BootInstant) -> Duration {
        self.0.saturating_sub(earlier.0)
    }

    /// Time until `self`, zero if it has passed.
    pub fn until(self) -> Duration {
        self.saturating_since(BootInstant::now())
    }

    /// Time since `self`.
    pub fn elapsed(self) -> Duration {
        BootInstant::now().saturating_since(self)
    }

    /// `self - duration`, or the boot moment if that would be before it.
    pub fn saturating_sub(self, duration: Duration) -> BootInstant {
        BootInstant(self.0.saturating_sub(duration))
    }
}

impl Add<Duration> for BootInstant {
    type Output = BootInstant;

    fn add(self, duration: Duration) -> BootInstant {
        BootInstant(self.0.saturating_add(duration))
    }
}

/// How long to sleep before looking at `deadline` again: until it, but at most [`TICK`].
pub fn nap_until(deadline: BootInstant) -> Duration {
    deadline.until().min(TICK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_time_moves_forward_and_round_trips_through_nanos() {
        let a = BootInstant::now();
        let b = BootInstant::now();
        assert!(b >= a);
        assert_eq!(BootInstant::from_nanos(a.as_nanos()), a);
        assert_eq!(
            (a + Duration::from_secs(1)).saturating_since(a),
            Duration::from_secs(1)
        );
        assert_eq!(
            a.saturating_since(a + Duration::from_secs(1)),
            Duration::ZERO
        );
    }

    #[test]
    fn naps_are_bounded_by_the_tick() {
        let far = BootInstant::now() + Duration::from_secs(60);
        assert_eq!(nap_until(far), TICK);
        let past = BootInstant::now().saturating_sub(Duration::from_secs(1));
        assert_eq!(nap_until(past), Duration::ZERO);
    }
}
