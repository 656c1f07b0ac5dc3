//! Token buckets that hold each page to its Send API rate (Meta: 300 calls/s per page).
//!
//! A bucket refills continuously at `rate` tokens per second and holds at most one
//! second's worth, so a page may burst up to its rate and then sends at that pace. Pure
//! arithmetic on `Instant`s: no timers, no IO; the sender decides when to try again.

use std::collections::HashMap;
use std::time::{Duration, Instant};

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    refilled: Instant,
}

/// One bucket per page; `rate == 0` means no limit. A page may have its own rate (the
/// pages file's `send_rate`), which can change between two sends (a reload).
#[derive(Debug)]
pub struct PageRates {
    rate: f64,
    buckets: HashMap<String, Bucket>,
}

impl PageRates {
    pub fn new(messages_per_second: u32) -> Self {
        PageRates {
            rate: f64::from(messages_per_second),
            buckets: HashMap::new(),
        }
    }

    /// Takes a token for `page` at `now`, or says how long until one is available.
    #[cfg(test)]
    pub fn take(&mut self, page: &str, now: Instant) -> Result<(), Duration> {
        self.take_at(page, None, now)
    }

    /// Takes a token for `page` at its own `rate` (`None`: the default rate).
    pub fn take_at(&mut self, page: &str, rate: Option<u32>, now: Instant) -> Result<(), Duration> {
        let rate = rate.map_or(self.rate, f64::from);
        if rate <= 0.0 {
            return Ok(());
        }
        let bucket = self.buckets.entry(page.to_string()).or_insert(Bucket {
            tokens: rate,
            refilled: now,
        });
        let elapsed = now.saturating_duration_since(bucket.refilled).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(rate);
        bucket.refilled = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_bursts_up_to_its_rate_then_waits() {
        let mut rates = PageRates::new(10);
        let start = Instant::now();
        for _ in 0..10 {
            assert_eq!(rates.take("p", start), Ok(()));
        }
        let wait = rates.take("p", start).unwrap_err();
        assert!(
            wait > Duration::from_millis(90) && wait <= Duration::from_millis(100),
            "{wait:?}"
        );
        assert_eq!(rates.take("p", start + Duration::from_millis(100)), Ok(()));
    }

    #[test]
    fn pages_have_separate_buckets() {
        let mut rates = PageRates::new(1);
        let now = Instant::now();
        assert_eq!(rates.take("a", now), Ok(()));
        assert!(rates.take("a", now).is_err());
        assert_eq!(rates.take("b", now), Ok(()));
    }

    #[test]
    fn rate_zero_means_unlimited() {
        let mut rates = PageRates::new(0);
        let now = Instant::now();
        for _ in 0..10_000 {
            assert_eq!(rates.take("p", now), Ok(()));
        }
    }

    #[test]
    fn a_page_with_its_own_rate_keeps_to_it() {
        let mut rates = PageRates::new(100);
        let now = Instant::now();
        let granted = (0..20)
            .filter(|_| rates.take_at("slow", Some(3), now).is_ok())
            .count();
        assert_eq!(granted, 3);
        assert_eq!(rates.take_at("free", Some(0), now), Ok(()));
    }

    #[test]
    fn a_long_pause_refills_only_one_seconds_worth() {
        let mut rates = PageRates::new(5);
        let start = Instant::now();
        let later = start + Duration::from_secs(60);
        let granted = (0..20).filter(|_| rates.take("p", later).is_ok()).count();
        assert_eq!(granted, 5);
    }
}
