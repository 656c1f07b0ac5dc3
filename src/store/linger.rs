//! When a commit cycle should wait a moment for more operations before it starts.
//!
//! A durable cycle costs about the same CPU whether it carries one operation or forty
//! (sealing and writing sled's log buffers, the `fdatasync`, the wake-ups). Under a closed
//! loop or a spike, operations queue while a cycle runs and the next one starts full.
//! At moderate open-loop load they do not: each message arrives alone and pays for whole
//! cycles by itself (docs/performance.md, "At moderate load the cost is per commit
//! cycle"). This controller decides, for a cycle about to start, whether to linger and
//! until when. It lingers only when all of these hold:
//! - the operations at hand are fewer than the target;
//! - recent cycles kept starting small on their own (the *natural* batch, what was
//!   queued before any lingering, averages under half the target): a loaded engine
//!   fills its cycles without waiting, and its callers are not made to wait;
//! - the oldest operation at hand has waited less than the window: no operation waits
//!   longer than the window for lingering;
//! - lingering does not slow the traffic down. Open-loop traffic (users who write when
//!   they write) arrives at its own rate whatever the committer does; a closed loop
//!   (callers that wait for each answer before they send more) arrives slower when
//!   answers come later, and lingering would only cost it time. So after every
//!   `LINGERING_PHASE` the controller probes for `PROBING_PHASE` without lingering; if
//!   operations then arrive clearly faster than while lingering, in `SLOW_PROBES` probes
//!   in a row (one fast probe is as likely noise: two cores shared with other work, an
//!   uneven second), it stops lingering for `OFF_PHASE` and then tries again. A phase that outlived twice its length (the
//!   traffic paused) is measured again rather than compared: an idle spell is not a
//!   slowdown.
//!
//! It owns no thread and no queue, and it never decides what a cycle writes.

use std::time::{Duration, Instant};

/// How long and for how many operations a small cycle may wait (`COLLOQUY_COMMIT_LINGER_US`,
/// `COLLOQUY_COMMIT_LINGER_OPS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LingerSettings {
    /// Longest an operation waits for lingering, from when it was queued; zero: never.
    pub window: Duration,
    /// Stop waiting once this many operations are at hand.
    pub target: usize,
}

impl LingerSettings {
    pub const DEFAULT_WINDOW: Duration = Duration::from_micros(2000);
    pub const DEFAULT_TARGET: usize = 8;

    pub fn off() -> LingerSettings {
        LingerSettings {
            window: Duration::ZERO,
            target: 1,
        }
    }
}

impl Default for LingerSettings {
    fn default() -> LingerSettings {
        LingerSettings {
            window: Self::DEFAULT_WINDOW,
            target: Self::DEFAULT_TARGET,
        }
    }
}

/// Weight of the newest sample in the running average (about the last eight count).
const WEIGHT: f64 = 1.0 / 8.0;

/// How long lingering runs before each probe without it.
const LINGERING_PHASE: Duration = Duration::from_millis(500);
/// How long a probe without lingering lasts.
const PROBING_PHASE: Duration = Duration::from_millis(100);
/// How long lingering stays off once a probe showed it slows the traffic down: a closed
/// loop spends one lingering phase in this long.
const OFF_PHASE: Duration = Duration::from_secs(30);
/// Operations arriving this much faster without lingering mean it slows the traffic down
/// (well above the noise of a 100 ms count at moderate load).
const SLOWDOWN: f64 = 1.15;
/// Probes in a row that must show the slowdown before lingering stops: a closed loop
/// shows it in every probe, an open loop only by chance (one false alarm cost 30 s of
/// small cycles in about one 20 s benchmark run in eight).
const SLOW_PROBES: u32 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Lingering,
    Probing,
    Off,
}

pub(super) struct Linger {
    settings: LingerSettings,
    natural_batch: f64,
    phase: Phase,
    phase_started: Instant,
    /// Operations taken into cycles since the phase started.
    phase_operations: u64,
    /// Operations per second during the last lingering phase.
    lingering_rate: f64,
    /// Probes in a row so far that showed lingering slowing the traffic down.
    slow_probes: u32,
}

impl Linger {
    pub(super) fn new(settings: LingerSettings, now: Instant) -> Linger {
        Linger {
            settings,
            // Small until cycles show otherwise: a fresh store has seen no load.
            natural_batch: 0.0,
            phase: Phase::Lingering,
            phase_started: now,
            phase_operations: 0,
            lingering_rate: 0.0,
            slow_probes: 0,
        }
    }

    /// Until when a cycle with `at_hand` operations, the oldest queued at
    /// `oldest_queued`, waits for more; `None`: start now. Called once per cycle.
    pub(super) fn deadline(
        &mut self,
        at_hand: usize,
        oldest_queued: Instant,
        now: Instant,
    ) -> Option<Instant> {
        self.natural_batch += WEIGHT * (at_hand as f64 - self.natural_batch);
        self.next_phase_if_due(now);
        self.phase_operations += at_hand as u64;
        let wanted = self.phase == Phase::Lingering
            && self.settings.window > Duration::ZERO
            && at_hand < self.settings.target
            && self.natural_batch < self.settings.target as f64 / 2.0;
        let deadline = oldest_queued + self.settings.window;
        (wanted && deadline > now).then_some(deadline)
    }

    /// How many more operations a linger gathered.
    pub(super) fn gathered(&mut self, operations: usize) {
        self.phase_operations += operations as u64;
    }

    pub(super) fn target(&self) -> usize {
        self.settings.target
    }

    fn next_phase_if_due(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.phase_started);
        let length = match self.phase {
            Phase::Lingering => LINGERING_PHASE,
            Phase::Probing => PROBING_PHASE,
            Phase::Off => OFF_PHASE,
        };
        if self.phase != Phase::Off && elapsed > length * 2 {
            // Cycles stopped coming for a while: what this phase counted says nothing
            // about the rate of the traffic, so count it again from now.
            self.phase_started = now;
            self.phase_operations = 0;
            return;
        }
        let rate = self.phase_operations as f64 / elapsed.as_secs_f64().max(1e-6);
        let next = match self.phase {
            Phase::Lingering if elapsed >= LINGERING_PHASE => {
                self.lingering_rate = rate;
                Phase::Probing
            }
            Phase::Probing if elapsed >= PROBING_PHASE => {
                let slowed = rate > self.lingering_rate * SLOWDOWN;
                self.slow_probes = if slowed { self.slow_probes + 1 } else { 0 };
                if self.slow_probes >= SLOW_PROBES {
                    self.slow_probes = 0;
                    Phase::Off
                } else {
                    Phase::Lingering
                }
            }
            Phase::Off if elapsed >= OFF_PHASE => Phase::Lingering,
            _ => return,
        };
        self.phase = next;
        self.phase_started = now;
        self.phase_operations = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> LingerSettings {
        LingerSettings {
            window: Duration::from_millis(2),
            target: 8,
        }
    }

    /// Starts a cycle of `at_hand` operations every `every` for `span`; a linger gathers
    /// `gathered` more. Returns the time reached and how many cycles lingered.
    fn traffic(
        linger: &mut Linger,
        from: Instant,
        span: Duration,
        every: Duration,
        (at_hand, gathered): (usize, usize),
    ) -> (Instant, usize) {
        let (mut now, mut lingered) = (from, 0);
        while now < from + span {
            if linger.deadline(at_hand, now, now).is_some() {
                linger.gathered(gathered);
                lingered += 1;
            }
            now += every;
        }
        (now, lingered)
    }

    const MS: Duration = Duration::from_millis(1);

    /// One lingering phase of open-loop traffic at 2,000 operations per second (a linger
    /// gathers six more every 4 ms; it must linger), then a probe phase with a cycle of
    /// two every `probe_every`. Returns the time reached and how many probe cycles
    /// lingered.
    fn lingering_then_probing(
        linger: &mut Linger,
        from: Instant,
        round: usize,
        probe_every: Duration,
    ) -> (Instant, usize) {
        let (after, lingered) = traffic(linger, from, LINGERING_PHASE, MS * 4, (2, 6));
        assert!(lingered > 100, "round {round}: {lingered} lingers");
        traffic(linger, after, PROBING_PHASE, probe_every, (2, 0))
    }

    #[test]
    fn a_small_cycle_waits_at_most_the_window_from_its_oldest_operation() {
        let start = Instant::now();
        let mut linger = Linger::new(settings(), start);
        let (now, lingered) = traffic(&mut linger, start, MS * 30, MS, (8, 0));
        assert_eq!(lingered, 0, "full cycles never wait");
        // Cycles have been full: even a small one starts at once.
        assert_eq!(linger.deadline(1, now, now), None);
        let (now, _) = traffic(&mut linger, now, MS * 30, MS, (1, 0));
        assert_eq!(linger.deadline(1, now, now), Some(now + MS * 2));
        // An operation that already waited the window is not held any longer.
        assert_eq!(linger.deadline(1, now - MS * 3, now), None);
        // Enough at hand: no wait.
        assert_eq!(linger.deadline(8, now, now), None);
    }

    #[test]
    fn open_loop_traffic_keeps_lingering_through_its_probes() {
        let start = Instant::now();
        let mut linger = Linger::new(settings(), start);
        // 2,000 operations per second whether the committer lingers or not: a cycle of
        // two every millisecond, or a linger that gathers six more every 4 ms.
        let mut now = start;
        for round in 0..5 {
            // The probe: no linger, the same rate.
            let (after, lingered) = lingering_then_probing(&mut linger, now, round, MS);
            assert_eq!(lingered, 0, "round {round}: a probe does not linger");
            now = after;
        }
    }

    #[test]
    fn a_closed_loop_that_lingering_slows_stops_it_and_is_tried_again_later() {
        let start = Instant::now();
        let mut linger = Linger::new(settings(), start);
        // Three callers that wait for their answers: a cycle of three every 3 ms while
        // the committer lingers, every 1.5 ms (twice the rate) when it does not.
        let mut now = start;
        let mut lingered = 0;
        while now < start + (LINGERING_PHASE + PROBING_PHASE) * SLOW_PROBES + MS * 10 {
            now += if linger.deadline(3, now, now).is_some() {
                lingered += 1;
                MS * 3
            } else {
                MS * 3 / 2
            };
        }
        assert!(lingered > 200, "{lingered} lingers before the probes");
        let quiet = OFF_PHASE - MS * 20;
        let (now, lingered) = traffic(&mut linger, now, quiet, MS * 3 / 2, (3, 0));
        assert_eq!(
            lingered, 0,
            "lingering stays off after slowing a closed loop"
        );
        let (_, lingered) = traffic(&mut linger, now, MS * 100, MS * 3, (3, 3));
        assert!(lingered > 0, "lingering is tried again after a while");
    }

    #[test]
    fn one_probe_that_happens_to_be_fast_does_not_turn_lingering_off() {
        let start = Instant::now();
        let mut linger = Linger::new(settings(), start);
        let mut now = start;
        for round in 0..4 {
            // Every other probe counts a third more operations than the traffic's rate
            // (noise); the ones between do not.
            let every = if round % 2 == 0 { MS * 3 / 4 } else { MS };
            (now, _) = lingering_then_probing(&mut linger, now, round, every);
        }
    }

    #[test]
    fn a_pause_in_the_traffic_does_not_turn_lingering_off() {
        let start = Instant::now();
        let mut linger = Linger::new(settings(), start);
        let (now, _) = traffic(&mut linger, start, MS * 100, MS * 4, (2, 6));
        // Nothing for five seconds, then the same open-loop traffic as before.
        let (now, _) = traffic(
            &mut linger,
            now + Duration::from_secs(5),
            MS * 700,
            MS,
            (2, 0),
        );
        let (_, lingered) = traffic(&mut linger, now, LINGERING_PHASE, MS * 4, (2, 6));
        assert!(lingered >= 90, "{lingered} lingers after the pause");
    }

    #[test]
    fn a_zero_window_never_lingers() {
        let start = Instant::now();
        let mut linger = Linger::new(LingerSettings::off(), start);
        let (_, lingered) = traffic(&mut linger, start, Duration::from_secs(1), MS, (0, 0));
        assert_eq!(lingered, 0);
    }
}
