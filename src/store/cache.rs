//! How large sled's page cache is while the store runs.
//!
//! A fixed cache is wrong for someone: 6 MiB holds what 128 conversations at a time
//! touch, and keeps a long run's memory low, but with two thousand conversations in flight
//! (128 senders posting 16 events each) the pages they write to no longer fit, sled reads
//! them back from its log again and again, and a 32 MiB cache answers ~30 % more events
//! with ~25 % less CPU (docs/performance.md). So the cache starts at its floor and
//! doubles, up to its ceiling, whenever pages are being read back at a high rate for the
//! writes being made (misses per operation); it halves back once misses have stayed rare
//! for a minute. A cache that fits stays small: a write-only working set causes no misses.
//!
//! This module decides sizes from counters; it does no IO and never touches sled (the
//! committer applies what it decides).

use std::time::{Duration, Instant};

/// The range the cache moves in (`COLLOQUY_CACHE_MB`, `COLLOQUY_CACHE_MAX_MB`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheSettings {
    /// Where the cache starts, and the least it shrinks to, in bytes.
    pub floor: u64,
    /// The most it grows to, in bytes; equal to `floor` for a fixed cache.
    pub ceiling: u64,
}

impl CacheSettings {
    pub fn fixed(bytes: u64) -> CacheSettings {
        CacheSettings {
            floor: bytes,
            ceiling: bytes,
        }
    }
}

/// When the cache grows and shrinks.
#[derive(Debug, Clone, Copy)]
pub(super) struct CachePolicy {
    /// How often the miss rate is looked at.
    pub check_every: Duration,
    /// Misses per second below which the cache never grows: a trickle is not thrashing.
    pub grow_misses_per_second: f64,
    /// Misses per committed operation at or above which the cache grows (with the rate
    /// above).
    pub grow_misses_per_operation: f64,
    /// A check counts as quiet under either of these.
    pub quiet_misses_per_operation: f64,
    pub quiet_misses_per_second: f64,
    /// Quiet checks in a row before the cache halves.
    pub quiet_checks_to_shrink: u32,
}

impl Default for CachePolicy {
    /// Measured (docs/performance.md): a 6 MiB cache thrashing at 128 senders × 16 events
    /// reads back 1.8 – 2.5 pages per operation, 40,000 – 51,000 a second; one that fits
    /// 0 – 0.13 (32 MiB at that load; 6 MiB at 128 single senders: 0.01 – 0.05, and none
    /// at 2,000 new users a second).
    fn default() -> CachePolicy {
        CachePolicy {
            check_every: Duration::from_secs(1),
            grow_misses_per_second: 1000.0,
            grow_misses_per_operation: 0.5,
            quiet_misses_per_operation: 0.02,
            quiet_misses_per_second: 50.0,
            quiet_checks_to_shrink: 60,
        }
    }
}

pub(super) struct CacheSizer {
    settings: CacheSettings,
    policy: CachePolicy,
    capacity: u64,
    checked_at: Instant,
    misses_then: u64,
    operations_then: u64,
    quiet_checks: u32,
}

impl CacheSizer {
    pub(super) fn new(settings: CacheSettings, now: Instant) -> CacheSizer {
        CacheSizer::with_policy(settings, CachePolicy::default(), now)
    }

    pub(super) fn with_policy(
        settings: CacheSettings,
        policy: CachePolicy,
        now: Instant,
    ) -> CacheSizer {
        CacheSizer {
            settings,
            policy,
            capacity: settings.floor,
            checked_at: now,
            misses_then: 0,
            operations_then: 0,
            quiet_checks: 0,
        }
    }

    pub(super) fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Given the running totals of cache misses and committed operations, the capacity
    /// to set now, if it changes. Cheap to call on every commit cycle.
    pub(super) fn check(&mut self, now: Instant, misses: u64, operations: u64) -> Option<u64> {
        let elapsed = now.saturating_duration_since(self.checked_at);
        let policy = self.policy;
        if elapsed < policy.check_every || self.settings.floor >= self.settings.ceiling {
            return None;
        }
        let new_misses = misses.saturating_sub(self.misses_then) as f64;
        let new_operations = operations.saturating_sub(self.operations_then).max(1) as f64;
        self.checked_at = now;
        self.misses_then = misses;
        self.operations_then = operations;
        let per_second = new_misses / elapsed.as_secs_f64();
        let per_operation = new_misses / new_operations;
        let wanted = if per_second >= policy.grow_misses_per_second
            && per_operation >= policy.grow_misses_per_operation
        {
            self.quiet_checks = 0;
            self.capacity.saturating_mul(2).min(self.settings.ceiling)
        } else if per_operation < policy.quiet_misses_per_operation
            || per_second < policy.quiet_misses_per_second
        {
            self.quiet_checks += 1;
            if self.quiet_checks < policy.quiet_checks_to_shrink {
                return None;
            }
            self.quiet_checks = 0;
            (self.capacity / 2).max(self.settings.floor)
        } else {
            self.quiet_checks = 0;
            return None;
        };
        if wanted == self.capacity {
            return None;
        }
        self.capacity = wanted;
        Some(wanted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;
    const QUIET_CHECKS_TO_SHRINK: u32 = 60;

    fn sizer() -> (CacheSizer, Instant) {
        let start = Instant::now();
        let settings = CacheSettings {
            floor: 6 * MIB,
            ceiling: 32 * MIB,
        };
        (CacheSizer::new(settings, start), start)
    }

    /// Feeds one check per second with the given misses and operations per second.
    fn run(
        sizer: &mut CacheSizer,
        start: Instant,
        seconds: std::ops::Range<u64>,
        misses: u64,
        ops: u64,
    ) -> Vec<u64> {
        seconds
            .filter_map(|s| {
                sizer.check(
                    start + Duration::from_secs(s + 1),
                    misses * (s + 1),
                    ops * (s + 1),
                )
            })
            .collect()
    }

    #[test]
    fn thrashing_doubles_the_cache_each_second_up_to_its_ceiling() {
        let (mut sizer, start) = sizer();
        // 20,000 operations/s, two pages read back for each.
        let changes = run(&mut sizer, start, 0..5, 40_000, 20_000);
        assert_eq!(changes, vec![12 * MIB, 24 * MIB, 32 * MIB]);
        assert_eq!(sizer.capacity(), 32 * MIB);
    }

    #[test]
    fn a_working_set_that_fits_keeps_the_cache_at_its_floor() {
        let (mut sizer, start) = sizer();
        // 25,000 operations/s and 1,300 misses: the worst second seen at 128 senders.
        assert!(run(&mut sizer, start, 0..120, 1_300, 25_000).is_empty());
        // Misses at a low rate are not thrashing either, however they compare.
        assert!(run(&mut sizer, start, 120..180, 900, 200).is_empty());
        assert_eq!(sizer.capacity(), 6 * MIB);
    }

    #[test]
    fn a_grown_cache_halves_after_a_quiet_minute_and_not_before() {
        let (mut sizer, start) = sizer();
        run(&mut sizer, start, 0..3, 40_000, 20_000);
        assert_eq!(sizer.capacity(), 32 * MIB);
        // Cumulative totals: keep counting from where the thrashing left them.
        let base = start + Duration::from_secs(3);
        let (mut misses, mut ops) = (120_000, 60_000);
        let mut second = 0;
        let mut check = |sizer: &mut CacheSizer, new_misses: u64, new_ops: u64| {
            (second, misses, ops) = (second + 1, misses + new_misses, ops + new_ops);
            sizer.check(base + Duration::from_secs(second), misses, ops)
        };
        // A grown cache that fits still misses a little (0 - 0.13 per operation): not
        // quiet, so it keeps its size however long that lasts.
        for _ in 0..2 * QUIET_CHECKS_TO_SHRINK {
            assert_eq!(check(&mut sizer, 2_000, 20_000), None);
        }
        for s in 1..QUIET_CHECKS_TO_SHRINK {
            assert_eq!(
                check(&mut sizer, 100, 20_000),
                None,
                "shrank after {s} quiet seconds"
            );
        }
        assert_eq!(check(&mut sizer, 100, 20_000), Some(16 * MIB));
    }

    #[test]
    fn a_fixed_cache_never_changes() {
        let start = Instant::now();
        let mut sizer = CacheSizer::new(CacheSettings::fixed(6 * MIB), start);
        assert!(run(&mut sizer, start, 0..5, 40_000, 20_000).is_empty());
        assert_eq!(sizer.capacity(), 6 * MIB);
    }
}
