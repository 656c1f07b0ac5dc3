//! Backpressure: how much work is waiting, and whether the webhook should take more.
//!
//! The webhook counts events in when it routes them, conversations count them out when
//! they are handled; the sender does the same for replies waiting to be sent. When either
//! count is over its bound the webhook answers 503 (Facebook redelivers later) instead of
//! letting queues and memory grow without bound; as the counts drain it accepts again.
//! Also carries the "shutting down" flag. Lock-free counters only; no IO here.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Default bound of events acknowledged and not yet handled by their conversation.
pub const DEFAULT_MAX_PENDING_EVENTS: usize = 50_000;
/// Default bound of replies committed and not yet sent or failed.
pub const DEFAULT_MAX_PENDING_REPLIES: usize = 50_000;

#[derive(Debug)]
pub struct Load {
    pending_events: AtomicUsize,
    pending_replies: AtomicUsize,
    max_pending_events: usize,
    max_pending_replies: usize,
    shutting_down: AtomicBool,
}

/// Why the webhook should not take more work right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    ShuttingDown,
    TooManyEvents,
    TooManyReplies,
}

impl Load {
    pub fn new(max_pending_events: usize, max_pending_replies: usize) -> Self {
        Load {
            pending_events: AtomicUsize::new(0),
            pending_replies: AtomicUsize::new(0),
            max_pending_events,
            max_pending_replies,
            shutting_down: AtomicBool::new(false),
        }
    }

    /// Whether a webhook request may be accepted now.
    pub fn admit(&self) -> Result<(), Refusal> {
        if self.shutting_down.load(Ordering::Relaxed) {
            return Err(Refusal::ShuttingDown);
        }
        if self.pending_events.load(Ordering::Relaxed) >= self.max_pending_events {
            return Err(Refusal::TooManyEvents);
        }
        if self.pending_replies.load(Ordering::Relaxed) >= self.max_pending_replies {
            return Err(Refusal::TooManyReplies);
        }
        Ok(())
    }

    pub fn events_in(&self, n: usize) {
        self.pending_events.fetch_add(n, Ordering::Relaxed);
    }

    pub fn events_out(&self, n: usize) {
        saturating_sub(&self.pending_events, n);
    }

    pub fn replies_in(&self, n: usize) {
        self.pending_replies.fetch_add(n, Ordering::Relaxed);
    }

    pub fn replies_out(&self, n: usize) {
        saturating_sub(&self.pending_replies, n);
    }

    pub fn pending_events(&self) -> usize {
        self.pending_events.load(Ordering::Relaxed)
    }

    pub fn pending_replies(&self) -> usize {
        self.pending_replies.load(Ordering::Relaxed)
    }

    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Relaxed);
    }
}

impl Default for Load {
    fn default() -> Self {
        Load::new(DEFAULT_MAX_PENDING_EVENTS, DEFAULT_MAX_PENDING_REPLIES)
    }
}

fn saturating_sub(counter: &AtomicUsize, n: usize) {
    // A count can only go below zero through a bug elsewhere; never wrap around to "full".
    let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
        Some(v.saturating_sub(n))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_over_a_bound_is_refused_until_it_drains() {
        let load = Load::new(2, 10);
        assert_eq!(load.admit(), Ok(()));
        load.events_in(2);
        assert_eq!(load.admit(), Err(Refusal::TooManyEvents));
        load.events_out(1);
        assert_eq!(load.admit(), Ok(()));
    }

    #[test]
    fn pending_replies_have_their_own_bound() {
        let load = Load::new(10, 1);
        load.replies_in(1);
        assert_eq!(load.admit(), Err(Refusal::TooManyReplies));
        load.replies_out(1);
        assert_eq!(load.admit(), Ok(()));
    }

    #[test]
    fn counts_never_wrap_below_zero() {
        let load = Load::new(1, 1);
        load.events_out(5);
        assert_eq!(load.pending_events(), 0);
        assert_eq!(load.admit(), Ok(()));
    }

    #[test]
    fn shutting_down_refuses_everything() {
        let load = Load::default();
        load.begin_shutdown();
        assert_eq!(load.admit(), Err(Refusal::ShuttingDown));
    }
}
