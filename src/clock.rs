//! Wall-clock time as the engine stores it: epoch milliseconds.
//!
//! The one place that reads the system clock for stored times (transcript entries,
//! watermarks, timers, retention). It has no state and imports nothing of the crate, so
//! every module may use it without creating an import circle.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch; 0 if the clock is before 1970, `i64::MAX` past
/// the year 292 million (never seen, but never a panic either).
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn now_is_after_this_code_was_written() {
        // 2024-01-01T00:00:00Z: a clock reading below it means a broken conversion.
        assert!(now_ms() > 1_704_067_200_000);
    }
}
