//! Backpressure: how much work is waiting, and whether the webhook should take more.
//!
//! The webhook counts events in when it routes them, conversations count them out when
//! they are handled; the sender does the same for replies waiting to be sent. The
//! supervisor publishes when the oldest event still waiting was taken. The webhook answers
//! 503 (Facebook redelivers later) when the oldest waiting event is older than the queue
//! delay bound (the engine is further behind than it can catch up on quickly, whatever
//! the count), or when either count is over its bound (memory); as the backlog drains it
//! accepts again. Also carries the "shutting down" flag. Lock-free values only; no IO here.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Default bound of events acknowledged and not yet handled by their conversation.
pub const DEFAULT_MAX_PENDING_EVENTS: usize = 50_000;
/// Default bound of replies committed and not yet sent or failed.
pub const DEFAULT_MAX_PENDING_REPLIES: usize = 50_000;
/// Default bound of how long the oldest waiting event may have waited before the webhook
/// refuses more: long enough to ride out a burst, short enough that what is taken is
/// answered within seconds and the backlog drains within seconds once the burst passes.
pub const DEFAULT_MAX_QUEUE_DELAY: Duration = Duration::from_secs(2);

/// Events waiting that are always allowed, whatever the measured pace (an engine that
/// was idle has no pace yet).
pub const MIN_PENDING_ALLOWANCE: usize = 1_000;

/// `oldest_pending_ms` when nothing is pending.
const NONE_PENDING: u64 = u64::MAX;

#[derive(Debug)]
pub struct Load {
    pending_events: AtomicUsize,
    pending_replies: AtomicUsize,
    max_pending_events: usize,
    max_pending_replies: usize,
    /// When the oldest event still waiting for its conversation was taken, in ms since
    /// `epoch`; `NONE_PENDING` when none is.
    oldest_pending_ms: AtomicU64,
    /// Events the conversations finished per second lately (the supervisor measures it):
    /// what the engine can finish, so what it may hold is this times `max_queue_delay`.
    handled_per_s: AtomicU64,
    epoch: Instant,
    max_queue_delay: Duration,
    /// POSTs refused so far (for the webhook's sparse log lines).
    refusals: AtomicU64,
    shutting_down: AtomicBool,
}

/// Why the webhook should not take more work right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    ShuttingDown,
    TooManyEvents,
    TooManyReplies,
    /// The oldest waiting event has waited longer than the queue delay bound.
    TooFarBehind,
}

impl Load {
    pub fn new(max_pending_events: usize, max_pending_replies: usize) -> Self {
        Load {
            pending_events: AtomicUsize::new(0),
            pending_replies: AtomicUsize::new(0),
            max_pending_events,
            max_pending_replies,
            oldest_pending_ms: AtomicU64::new(NONE_PENDING),
            handled_per_s: AtomicU64::new(0),
            epoch: Instant::now(),
            max_queue_delay: DEFAULT_MAX_QUEUE_DELAY,
            refusals: AtomicU64::new(0),
            shutting_down: AtomicBool::new(false),
        }
    }

    /// The same, refusing once the oldest waiting event has waited longer than `delay`.
    pub fn with_max_queue_delay(mut self, delay: Duration) -> Self {
        self.max_queue_delay = delay;
        self
    }

    /// Milliseconds on this load's clock (the one `set_oldest_pending` takes).
    pub fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(NONE_PENDING - 1)
    }

    /// When the oldest event still waiting was taken (`now_ms` clock), or `None`.
    pub fn set_oldest_pending(&self, taken_ms: Option<u64>) {
        let value = taken_ms.unwrap_or(NONE_PENDING);
        self.oldest_pending_ms.store(value, Ordering::Relaxed);
    }

    /// How many events per second the conversations have lately been finishing.
    pub fn set_handled_per_s(&self, rate: u64) {
        self.handled_per_s.store(rate, Ordering::Relaxed);
    }

    /// Events the engine can finish within `max_queue_delay` at its recent pace (at
    /// least `MIN_PENDING_ALLOWANCE`, so an idle engine can take a burst).
    pub fn pending_allowance(&self) -> usize {
        let rate = self.handled_per_s.load(Ordering::Relaxed) as f64;
        let allowance = (rate * self.max_queue_delay.as_secs_f64()) as usize;
        allowance.max(MIN_PENDING_ALLOWANCE)
    }

    /// How long the oldest event still waiting has waited.
    pub fn oldest_pending_age(&self) -> Option<Duration> {
        let taken = self.oldest_pending_ms.load(Ordering::Relaxed);
        (taken != NONE_PENDING).then(|| Duration::from_millis(self.now_ms().saturating_sub(taken)))
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
        // Two views of "too far behind": the work waiting is more than the engine can
        // finish within the delay bound at its recent pace (reacts at once to a burst),
        // or the oldest event has already waited longer than the bound (catches a pace
        // that dropped).
        let pending = self.pending_events.load(Ordering::Relaxed);
        let too_old = self
            .oldest_pending_age()
            .is_some_and(|age| age > self.max_queue_delay);
        if too_old || pending >= self.pending_allowance() {
            return Err(Refusal::TooFarBehind);
        }
        Ok(())
    }

    /// Counts one refused POST; returns how many were refused so far, this one included.
    pub fn count_refusal(&self) -> u64 {
        self.refusals.fetch_add(1, Ordering::Relaxed) + 1
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
    fn an_old_waiting_event_refuses_whatever_the_count_until_it_is_handled() {
        let load = Load::new(100, 100).with_max_queue_delay(Duration::from_millis(100));
        load.set_oldest_pending(Some(load.now_ms()));
        assert_eq!(load.admit(), Ok(()));
        // Taken 200 ms ago on the load's clock (its epoch is "now" at creation).
        std::thread::sleep(Duration::from_millis(210));
        load.set_oldest_pending(Some(load.now_ms() - 200));
        assert_eq!(load.admit(), Err(Refusal::TooFarBehind));
        load.set_oldest_pending(None);
        assert_eq!(load.admit(), Ok(()));
    }

    #[test]
    fn waiting_work_beyond_what_the_pace_finishes_within_the_bound_is_refused() {
        let load = Load::new(100_000, 100).with_max_queue_delay(Duration::from_secs(2));
        // No pace yet: the minimum allowance.
        load.events_in(MIN_PENDING_ALLOWANCE - 1);
        assert_eq!(load.admit(), Ok(()));
        load.events_in(1);
        assert_eq!(load.admit(), Err(Refusal::TooFarBehind));
        // 3,000 events/s for 2 s.
        load.set_handled_per_s(3_000);
        assert_eq!(load.pending_allowance(), 6_000);
        load.events_in(4_999);
        assert_eq!(load.admit(), Ok(()));
        load.events_in(1);
        assert_eq!(load.admit(), Err(Refusal::TooFarBehind));
    }

    #[test]
    fn shutting_down_refuses_everything() {
        let load = Load::default();
        load.begin_shutdown();
        assert_eq!(load.admit(), Err(Refusal::ShuttingDown));
    }
}
