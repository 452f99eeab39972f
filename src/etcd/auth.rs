//! The auth token: which one we hold, when it was last proven good, and keeping it fresh off the
//! critical path.
//!
//! etcd's simple tokens expire after `--auth-token-ttl` of *idleness* (lease keepalives do not
//! count), JWT tokens at the `exp` their payload states. A token that expired is refused, and
//! getting a new one costs etcd a bcrypt of the password (~50 ms) — on a handover that was two
//! refusals and two bcrypts. So [`Tokens`] plans, and a keeper thread carries out, the cheap work
//! that keeps a token alive while the election is idle:
//! - a JWT is renewed at 80 % of its lifetime;
//! - a simple token gets a cheap authenticated read whenever it has been idle for half the idle
//!   time that once got a token refused. Until one was refused, reads come at idle 1 s, 2 s, 4 s, …
//!   up to [`MAX_PROBE`]: the first refusal bounds the server's TTL within a factor of two, and
//!   half of that bound is below the TTL.
//!
//! Any successful authenticated call counts as use, so a leader (which reads its key every
//! keepalive interval) needs no extra reads.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;

/// The longest idle time before a read keeps a simple token alive.
const MAX_PROBE: Duration = Duration::from_secs(256);
/// The first idle time at which a simple token is read.
const FIRST_PROBE: Duration = Duration::from_secs(1);
/// The shortest wait of the keeper (a server with a tiny TTL must not make it spin).
const MIN_WAIT: Duration = Duration::from_millis(250);

/// What the keeper should do next, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Chore {
    /// Nothing yet: look again at this moment.
    Wait(Instant),
    /// An authenticated read now (it also fetches a new token if etcd refuses this one).
    Read,
    /// A new token now (a JWT near its expiry).
    Renew,
    /// The client is gone.
    Stop,
}

/// The token and its history; see the module docs.
#[derive(Default)]
pub(crate) struct Tokens {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Debug, Default, Clone)]
struct State {
    token: Option<String>,
    issued: Option<Instant>,
    last_ok: Option<Instant>,
    /// A JWT's expiry, from its payload.
    expires: Option<Instant>,
    /// The shortest idle time after which etcd refused a token of ours.
    refused_after: Option<Duration>,
    /// The idle time of the next read while none was ever refused.
    probe: Option<Duration>,
    stopped: bool,
}

impl Tokens {
    /// The token to send, if we hold one.
    pub(crate) fn current(&self) -> Option<String> {
        self.lock().token.clone()
    }

    /// etcd issued `token` at `now`.
    pub(crate) fn issued(&self, token: String, now: Instant) {
        let mut state = self.lock();
        state.expires = jwt_lifetime(&token).map(|life| now + life);
        state.token = Some(token);
        state.issued = Some(now);
        state.last_ok = Some(now);
        self.changed.notify_all();
    }

    /// A call with `token` succeeded at `now`.
    pub(crate) fn used(&self, token: &str, now: Instant) {
        let mut state = self.lock();
        if state.token.as_deref() == Some(token) {
            state.last_ok = Some(now);
        }
    }

    /// etcd refused `token` at `now`: forget it, and when it `expired` (rather than fell to a
    /// change of users or roles) learn how long it stayed idle.
    pub(crate) fn refused(&self, token: &str, expired: bool, now: Instant) {
        let mut state = self.lock();
        if state.token.as_deref() != Some(token) {
            return;
        }
        if let Some(last) = state.last_ok.filter(|_| expired) {
            let idle = now.saturating_duration_since(last);
            state.refused_after = Some(state.refused_after.map_or(idle, |r| r.min(idle)));
        }
        state.token = None;
    }

    /// Forgets the token (a watch was refused).
    pub(crate) fn forget(&self) {
        self.lock().token = None;
    }

    /// Ends the keeper.
    pub(crate) fn stop(&self) {
        self.lock().stopped = true;
        self.changed.notify_all();
    }

    /// What to do at `now`.
    #[cfg(test)]
    fn chore(&self, now: Instant) -> Chore {
        plan(&mut self.lock(), now)
    }

    /// Waits until there is something to do, and says what. Plans and waits under one lock, so a
    /// token issued meanwhile is never missed.
    pub(crate) fn next_chore(&self) -> Chore {
        let mut state = self.lock();
        loop {
            let now = Instant::now();
            match plan(&mut state, now) {
                Chore::Wait(until) => {
                    let wait = until.saturating_duration_since(now).max(MIN_WAIT);
                    state = self
                        .changed
                        .wait_timeout(state, wait)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
                chore => return chore,
            }
        }
    }

    /// A read kept the token alive (or got a new one): the next probe may wait twice as long.
    pub(crate) fn probed(&self) {
        let mut state = self.lock();
        let next = state.probe.map_or(FIRST_PROBE, |p| (p * 2).min(MAX_PROBE));
        state.probe = Some(next);
    }

    /// Sleeps for `pause` unless stopped meanwhile.
    pub(crate) fn pause(&self, pause: Duration) {
        let state = self.lock();
        let _ = self
            .changed
            .wait_timeout_while(state, pause, |s| !s.stopped)
            .map(|(guard, _)| drop(guard));
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The keeper's next chore (pure but for the probe's first value).
fn plan(state: &mut State, now: Instant) -> Chore {
    if state.stopped {
        return Chore::Stop;
    }
    let (Some(_), Some(issued), Some(last_ok)) = (&state.token, state.issued, state.last_ok) else {
        // No token: the next call fetches one; nothing to keep alive meanwhile.
        return Chore::Wait(now + MAX_PROBE);
    };
    if let Some(expires) = state.expires {
        let renew_at = issued + expires.saturating_duration_since(issued) * 4 / 5;
        return if now >= renew_at {
            Chore::Renew
        } else {
            Chore::Wait(renew_at)
        };
    }
    let idle_limit = match state.refused_after {
        Some(refused) => (refused / 2).max(MIN_WAIT),
        None => *state.probe.get_or_insert(FIRST_PROBE),
    };
    let read_at = last_ok + idle_limit;
    if now >= read_at {
        Chore::Read
    } else {
        Chore::Wait(read_at)
    }
}

/// A JWT's lifetime from its `iat` and `exp` claims (seconds), `None` for other tokens.
fn jwt_lifetime(token: &str) -> Option<Duration> {
    let mut parts = token.split('.');
    let (_, payload, _, None) = (parts.next()?, parts.next()?, parts.next()?, parts.next()) else {
        return None;
    };
    let bytes = B64URL.decode(payload.trim_end_matches('=')).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let exp = claims.get("exp")?.as_u64()?;
    let iat = claims.get("iat").and_then(serde_json::Value::as_u64);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs();
    Some(Duration::from_secs(
        exp.saturating_sub(iat.unwrap_or(now).min(now)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn an_idle_simple_token_is_read_at_doubling_idle_times_until_one_is_refused() {
        let tokens = Tokens::default();
        let t0 = Instant::now();
        assert!(
            matches!(tokens.chore(t0), Chore::Wait(_)),
            "no token, nothing to keep"
        );
        tokens.issued("abcdef.12".into(), t0);
        assert_eq!(tokens.chore(t0), Chore::Wait(t0 + S));
        assert_eq!(tokens.chore(t0 + S), Chore::Read);
        tokens.used("abcdef.12", t0 + S);
        tokens.probed();
        assert_eq!(tokens.chore(t0 + S), Chore::Wait(t0 + 3 * S));
        // Refused after 2 s idle: from now on read every second of idleness.
        tokens.refused("abcdef.12", true, t0 + 3 * S);
        assert_eq!(tokens.current(), None);
        tokens.issued("ghijkl.13".into(), t0 + 3 * S);
        assert_eq!(tokens.chore(t0 + 3 * S), Chore::Wait(t0 + 4 * S));
        // Use counts as keeping it alive.
        tokens.used("ghijkl.13", t0 + 4 * S);
        assert_eq!(tokens.chore(t0 + 4 * S), Chore::Wait(t0 + 5 * S));
        // A refusal of a token we no longer hold changes nothing.
        tokens.refused("abcdef.12", true, t0 + 10 * S);
        assert_eq!(tokens.current().as_deref(), Some("ghijkl.13"));
    }

    #[test]
    fn a_jwt_is_renewed_at_four_fifths_of_its_life() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let payload = B64URL.encode(format!(
            r#"{{"username":"u","revision":3,"iat":{now},"exp":{}}}"#,
            now + 100
        ));
        let jwt = format!("eyJhbGciOiJSUzI1NiJ9.{payload}.c2ln");
        assert_eq!(jwt_lifetime(&jwt), Some(100 * S));
        assert_eq!(jwt_lifetime("simpletoken.7"), None);
        let tokens = Tokens::default();
        let t0 = Instant::now();
        tokens.issued(jwt, t0);
        assert_eq!(tokens.chore(t0), Chore::Wait(t0 + 80 * S));
        assert_eq!(tokens.chore(t0 + 80 * S), Chore::Renew);
    }

    #[test]
    fn the_probe_stops_doubling_at_its_cap_and_stop_ends_the_keeper() {
        let tokens = Tokens::default();
        for _ in 0..20 {
            tokens.probed();
        }
        assert_eq!(tokens.lock().probe, Some(MAX_PROBE));
        tokens.stop();
        assert_eq!(tokens.chore(Instant::now()), Chore::Stop);
    }
}
