//! The candidate's inbox: the alerts its keepalive and watch threads send, and its pauses.
//!
//! Rule: no alert is lost. One that arrives during a pause (a back-off, a retry) is kept for the
//! next wait; alerts of an earlier session or of a watch that was replaced are recognised by their
//! ids and dropped.

use std::collections::VecDeque;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use super::Alert;

/// What the candidate waits for.
#[derive(Debug, Clone, Copy)]
pub(super) struct Interest<'a> {
    /// The current session's id.
    pub session: u64,
    /// The watches whose alerts matter.
    pub watches: &'a [u64],
    /// Whether a lapsed renewal matters (only while leading).
    pub leading: bool,
}

impl Interest<'_> {
    fn wants(&self, alert: &Alert) -> bool {
        match *alert {
            Alert::Stop => true,
            Alert::LeaseGone { session } => session == self.session,
            Alert::Lapsed { session } => session == self.session && self.leading,
            Alert::Deleted { session, watch, .. }
            | Alert::Recheck { session, watch }
            | Alert::Rewritten { session, watch, .. } => {
                session == self.session && self.watches.contains(&watch)
            }
        }
    }
}

pub(super) struct Inbox {
    alerts: Receiver<Alert>,
    /// Alerts that arrived during a pause, for the next wait.
    pending: VecDeque<Alert>,
}

impl Inbox {
    pub(super) fn new(alerts: Receiver<Alert>) -> Inbox {
        Inbox {
            alerts,
            pending: VecDeque::new(),
        }
    }

    /// The next alert that matches `interest`; `None` when `until` passed first or every sender
    /// is gone.
    pub(super) fn wait(&mut self, interest: Interest<'_>, until: Option<Instant>) -> Option<Alert> {
        while let Some(alert) = self.pending.pop_front() {
            if interest.wants(&alert) {
                return Some(alert);
            }
        }
        loop {
            let alert = match until {
                None => self.alerts.recv().ok()?,
                Some(until) => {
                    let left = until.saturating_duration_since(Instant::now());
                    self.alerts.recv_timeout(left).ok()?
                }
            };
            if interest.wants(&alert) {
                return Some(alert);
            }
        }
    }

    /// Sleeps for `duration`; false when asked to stop meanwhile. Other alerts are kept.
    pub(super) fn pause(&mut self, duration: Duration) -> bool {
        let deadline = Instant::now() + duration;
        while !duration.is_zero() {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.alerts.recv_timeout(left) {
                Ok(Alert::Stop) | Err(RecvTimeoutError::Disconnected) => return false,
                Ok(alert) => self.pending.push_back(alert),
                Err(RecvTimeoutError::Timeout) => return true,
            }
        }
        true
    }

    /// Whether an alert already received says the session's lease is gone.
    pub(super) fn lease_gone(&self, session: u64) -> bool {
        self.pending.contains(&Alert::LeaseGone { session })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::election::Ahead;
    use std::sync::mpsc::channel;

    #[test]
    fn alerts_that_arrive_during_a_pause_reach_the_next_wait_and_stale_ones_are_dropped() {
        let (send, receive) = channel();
        let mut inbox = Inbox::new(receive);
        let deleted = |session, watch| Alert::Deleted {
            session,
            watch,
            own: false,
            ahead: Ahead::Nearest,
            revision: 9,
        };
        send.send(deleted(1, 7)).unwrap(); // an earlier session
        send.send(deleted(2, 6)).unwrap(); // a replaced watch
        send.send(deleted(2, 7)).unwrap();
        assert!(inbox.pause(Duration::from_millis(20)));
        let interest = Interest {
            session: 2,
            watches: &[7],
            leading: false,
        };
        let soon = Some(Instant::now() + Duration::from_millis(20));
        assert_eq!(inbox.wait(interest, soon), Some(deleted(2, 7)));
        assert_eq!(inbox.wait(interest, soon), None);
        send.send(Alert::Lapsed { session: 2 }).unwrap();
        assert_eq!(
            inbox.wait(interest, soon),
            None,
            "a waiter has no renewal to lapse"
        );
        send.send(Alert::Stop).unwrap();
        assert!(!inbox.pause(Duration::from_secs(5)));
    }
}
