//! How old the oldest event waiting to be handled is: counts of pending events by the
//! time they were taken (in coarse buckets), so admission can ask "how far behind is the
//! engine?" instead of only "how many events are queued?".
//!
//! Owned by the supervisor, which adds each event it takes and removes it once its
//! conversation has handled it (or the event was dropped from memory to be replayed from
//! the journal); it publishes the oldest time to `load::Load`. Plain data, no actors, no
//! atomics, no IO: it must never decide anything itself.

use std::collections::VecDeque;

/// Width of one bucket. The age is known to this precision; a few hundred buckets cover
/// anything but a stuck engine.
const BUCKET_MS: u64 = 50;

/// Pending events counted by when they were taken, oldest bucket first.
#[derive(Debug, Default)]
pub struct Backlog {
    /// (bucket number, events pending from it), in increasing bucket order. Buckets that
    /// drained in the middle stay until they reach the front.
    buckets: VecDeque<(u64, u64)>,
}

impl Backlog {
    /// Counts an event taken at `at_ms` (milliseconds on the caller's clock).
    pub fn add(&mut self, at_ms: u64) {
        let bucket = at_ms / BUCKET_MS;
        match self.buckets.back_mut() {
            Some((last, count)) if *last == bucket => *count += 1,
            Some((last, _)) if *last > bucket => {
                // Out of order (rare: a replay stamped earlier); keep the buckets sorted.
                match self.buckets.binary_search_by_key(&bucket, |(b, _)| *b) {
                    Ok(at) => self.buckets[at].1 += 1,
                    Err(at) => self.buckets.insert(at, (bucket, 1)),
                }
            }
            _ => self.buckets.push_back((bucket, 1)),
        }
    }

    /// Forgets an event taken at `at_ms`: handled, or dropped to be replayed.
    pub fn remove(&mut self, at_ms: u64) {
        let bucket = at_ms / BUCKET_MS;
        if let Ok(at) = self.buckets.binary_search_by_key(&bucket, |(b, _)| *b) {
            let count = &mut self.buckets[at].1;
            *count = count.saturating_sub(1);
        }
        while self.buckets.front().is_some_and(|(_, count)| *count == 0) {
            self.buckets.pop_front();
        }
    }

    /// When the oldest pending event was taken (to the bucket's precision), if any.
    pub fn oldest_ms(&self) -> Option<u64> {
        self.buckets.front().map(|(bucket, _)| bucket * BUCKET_MS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_moves_on_only_once_every_event_of_its_bucket_is_handled() {
        let mut backlog = Backlog::default();
        assert_eq!(backlog.oldest_ms(), None);
        backlog.add(1_000);
        backlog.add(1_010);
        backlog.add(2_000);
        assert_eq!(backlog.oldest_ms(), Some(1_000));
        backlog.remove(1_010);
        assert_eq!(backlog.oldest_ms(), Some(1_000));
        backlog.remove(1_000);
        assert_eq!(backlog.oldest_ms(), Some(2_000));
        backlog.remove(2_000);
        assert_eq!(backlog.oldest_ms(), None);
    }

    #[test]
    fn a_drained_bucket_in_the_middle_is_skipped_once_the_front_drains() {
        let mut backlog = Backlog::default();
        for at in [100, 200, 300] {
            backlog.add(at);
        }
        backlog.remove(200);
        backlog.remove(100);
        assert_eq!(backlog.oldest_ms(), Some(300));
    }

    #[test]
    fn events_taken_out_of_order_keep_the_oldest_right() {
        let mut backlog = Backlog::default();
        backlog.add(5_000);
        backlog.add(1_000);
        assert_eq!(backlog.oldest_ms(), Some(1_000));
        backlog.remove(1_000);
        assert_eq!(backlog.oldest_ms(), Some(5_000));
        // Removing what was never added changes nothing.
        backlog.remove(9_000);
        assert_eq!(backlog.oldest_ms(), Some(5_000));
    }
}
