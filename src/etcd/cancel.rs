//! Cancellation of long-lived calls from another thread.
//!
//! A read blocked on a socket cannot be woken by a flag. A [`Cancel`] therefore also holds the agent
//! of every stream opened under it and shuts that agent down when cancelled: the socket is shut down,
//! the blocked read returns at once, and the thread and its connection are released together. The
//! same token is the stop flag (with a wait that ends early) of the threads that own such streams.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use ureq::Agent;

/// A cancellation token; see the module docs.
#[derive(Default)]
pub struct Cancel {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    cancelled: bool,
    agents: Vec<Agent>,
}

impl Cancel {
    /// Cancels: wakes every waiter and shuts down every stream opened under this token.
    pub fn cancel(&self) {
        let agents = {
            let mut state = self.lock();
            state.cancelled = true;
            std::mem::take(&mut state.agents)
        };
        self.changed.notify_all();
        for agent in agents {
            agent.shutdown();
        }
    }

    /// Whether [`Cancel::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.lock().cancelled
    }

    /// Sleeps up to `timeout`; true if cancelled (before or meanwhile).
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        let state = self.lock();
        let (state, _) = self
            .changed
            .wait_timeout_while(state, timeout, |state| !state.cancelled)
            .unwrap_or_else(|p| p.into_inner());
        state.cancelled
    }

    /// Ties a stream's agent to this token; false (and nothing kept) if already cancelled. Agents of
    /// streams that ended are dropped here too, so the list stays as short as the live streams.
    pub(crate) fn register(&self, agent: &Agent) -> bool {
        let mut state = self.lock();
        if state.cancelled {
            return false;
        }
        // One stream at a time lives under a token: the previous one has ended.
        state.agents.clear();
        state.agents.push(agent.clone());
        true
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cancelled_token_refuses_new_streams_and_ends_waits_at_once() {
        let cancel = Cancel::default();
        let agent = Agent::new_with_defaults();
        assert!(cancel.register(&agent));
        assert!(!cancel.wait_timeout(Duration::from_millis(1)));
        cancel.cancel();
        assert!(cancel.is_cancelled());
        assert!(cancel.wait_timeout(Duration::from_secs(60)));
        assert!(!cancel.register(&agent));
    }
}
