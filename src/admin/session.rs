//! Browser sessions of the admin listener: who logged in with the admin token, their
//! CSRF token, and how many wrong tokens each address has tried lately.
//!
//! A session is a random id in an HttpOnly, SameSite=Strict cookie scoped to `/admin`;
//! the token itself never leaves the login form's POST body. Sessions live in memory (a
//! restart logs everyone out) and end after `SESSION_LIFETIME`. Must not: keep or log the
//! admin token, or decide what a session may do (that is `authorize`).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::RngCore;
use thiserror::Error;

use crate::config::Secret;

/// The cookie that carries the session id.
pub const SESSION_COOKIE: &str = "colloquy_session";
/// The header a browser action carries its CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// How long a login lasts.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 60 * 60);
/// Wrong tokens one address may try within `FAILURE_WINDOW` before it must wait.
const MAX_FAILURES: usize = 5;
const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Sessions kept at most; the oldest goes first (a bound, not a expected size).
const MAX_SESSIONS: usize = 1000;

#[derive(Debug, Error, PartialEq)]
pub enum LoginError {
    #[error("wrong admin token")]
    WrongToken,
    #[error("too many wrong tokens from this address; try again in {0} s")]
    TooManyAttempts(u64),
}

/// A new login: the cookie's value and the CSRF token its pages carry.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub id: String,
    pub csrf: String,
}

struct Session {
    csrf: String,
    expires: Instant,
}

#[derive(Default)]
pub struct Sessions {
    open: Mutex<HashMap<String, Session>>,
    failures: Mutex<HashMap<Option<IpAddr>, VecDeque<Instant>>>,
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

impl Sessions {
    /// Opens a session when `presented` is the admin token; counts a wrong one against
    /// the address, and refuses any attempt from an address over its budget.
    pub fn log_in(
        &self,
        token: &Secret,
        presented: &str,
        from: Option<IpAddr>,
    ) -> Result<NewSession, LoginError> {
        let now = Instant::now();
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.retain(|_, times| {
            times.retain(|at| now.duration_since(*at) < FAILURE_WINDOW);
            !times.is_empty()
        });
        let recent = failures.entry(from).or_default();
        if recent.len() >= MAX_FAILURES {
            let wait = FAILURE_WINDOW.saturating_sub(now.duration_since(recent[0]));
            return Err(LoginError::TooManyAttempts(wait.as_secs().max(1)));
        }
        if !token.matches(presented) {
            recent.push_back(now);
            return Err(LoginError::WrongToken);
        }
        drop(failures);
        Ok(self.open(now))
    }

    fn open(&self, now: Instant) -> NewSession {
        let session = NewSession {
            id: random_token(),
            csrf: random_token(),
        };
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.retain(|_, s| s.expires > now);
        if open.len() >= MAX_SESSIONS {
            let oldest = open
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(id, _)| id.clone());
            if let Some(oldest) = oldest {
                open.remove(&oldest);
            }
        }
        open.insert(
            session.id.clone(),
            Session {
                csrf: session.csrf.clone(),
                expires: now + SESSION_LIFETIME,
            },
        );
        session
    }

    /// The CSRF token of a live session, `None` for an unknown or expired id.
    pub fn csrf_of(&self, id: &str) -> Option<String> {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.get(id)
            .filter(|s| s.expires > Instant::now())
            .map(|s| s.csrf.clone())
    }

    pub fn log_out(&self, id: &str) {
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }
}

/// Compares a presented CSRF token with the session's in constant time.
pub fn csrf_matches(expected: &str, presented: &str) -> bool {
    Secret::new(expected).matches(presented)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> Secret {
        Secret::new("s3cret-token")
    }

    #[test]
    fn the_right_token_opens_a_session_with_its_own_csrf_token() {
        let sessions = Sessions::default();
        let session = sessions.log_in(&token(), "s3cret-token", None).unwrap();
        assert_eq!(sessions.csrf_of(&session.id), Some(session.csrf.clone()));
        assert_ne!(session.id, session.csrf);
        sessions.log_out(&session.id);
        assert_eq!(sessions.csrf_of(&session.id), None);
    }

    #[test]
    fn wrong_tokens_are_refused_and_an_address_is_stopped_after_five() {
        let sessions = Sessions::default();
        let attacker = Some("10.0.0.9".parse().unwrap());
        for _ in 0..MAX_FAILURES {
            assert_eq!(
                sessions.log_in(&token(), "guess", attacker).unwrap_err(),
                LoginError::WrongToken
            );
        }
        // Even the right token waits now: the budget is per address, not per guess.
        assert!(matches!(
            sessions.log_in(&token(), "s3cret-token", attacker),
            Err(LoginError::TooManyAttempts(_))
        ));
        // Another address is not held back.
        let operator = Some("10.0.0.1".parse().unwrap());
        assert!(sessions.log_in(&token(), "s3cret-token", operator).is_ok());
    }

    #[test]
    fn an_unknown_session_has_no_csrf_token() {
        assert_eq!(Sessions::default().csrf_of("nope"), None);
    }
}
