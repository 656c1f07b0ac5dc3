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
//!   lingering phase the controller probes for `PROBING_PHASE` with a quarter of the
//!   window; if operations then arrive clearly faster than while lingering, in
//!   `SLOW_PROBES` probes in a row (one fast probe is as likely noise: two cores shared
//!   with other work, an uneven second), it stops lingering for `OFF_PHASE` and then
//!   tries again. A phase that outlived twice its length (the traffic paused) is
//!   measured again rather than compared: an idle spell is not a slowdown.
//! - probing costs little. Without lingering every few operations pay for a cycle of
//!   their own, so a probe of 100 ms in every 600 ms made half of all cycles at 2,000
//!   messages/s; a probe lingers a quarter of the window (a closed loop still runs
//!   clearly faster with answers that much sooner), for a quarter of those cycles. The
//!   lingering phase starts at `LINGERING_PHASE` and doubles after each probe that
//!   shows no slowdown, up to `LONGEST_LINGERING_PHASE`: traffic that has shown itself
//!   open loop again and again is probed about one time in eighty. A slow probe, a
//!   pause or a spell off starts it short again. The price: a closed loop that begins
//!   during a long phase is slowed until that phase ends (or the next one, when its
//!   probe still counted mostly the open loop), at most 16.8 s, not 1.2 s.
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
    // 8 ms and 32: at 2,000 messages/s a quarter of the commit cycles of 2 ms and 8 and
    // about a quarter less CPU per reply (a tenth less than 4 ms and 16), for 4 ms more
    // at the median (docs/performance.md, "a longer linger window" and "8 ms and 32").
    // A Messenger reply crosses Facebook's servers in hundreds of milliseconds. Closed
    // loops are not held: the probes turn lingering off for them.
    pub const DEFAULT_WINDOW: Duration = Duration::from_micros(8000);
    pub const DEFAULT_TARGET: usize = 32;

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

/// How long lingering runs before the first probe without it, and again after a slow
/// probe, a pause or a spell off.
const LINGERING_PHASE: Duration = Duration::from_millis(500);
/// The longest lingering phase, reached by doubling after each probe that showed no
/// slowdown: an open loop then spends about 1 % of its time probing (100 ms in 8.1 s).
const LONGEST_LINGERING_PHASE: Duration = Duration::from_secs(8);
/// How long a probe with a shorter linger lasts.
const PROBING_PHASE: Duration = Duration::from_millis(100);
/// A probe lingers this many times shorter than the window.
const PROBE_WINDOW_DIVISOR: u32 = 4;
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
    /// How long the current (or next) lingering phase lasts.
    lingering_phase: Duration,
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
            lingering_phase: LINGERING_PHASE,
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
        let window = self.window();
        let wanted = window > Duration::ZERO
            && at_hand < self.settings.target
            && self.natural_batch < self.settings.target as f64 / 2.0;
        let deadline = oldest_queued + window;
        (wanted && deadline > now).then_some(deadline)
    }

    /// How long a small cycle may wait in the current phase.
    fn window(&self) -> Duration {
        match self.phase {
            Phase::Lingering => self.settings.window,
            // A shorter wait still tells a closed loop (its rate rises when answers come
            // sooner) and costs open-loop traffic a quarter of the cycles a probe without
            // any wait would: those were a third of all cycles in a 20 s run.
            Phase::Probing => self.settings.window / PROBE_WINDOW_DIVISOR,
            Phase::Off => Duration::ZERO,
        }
    }

    /// How many more operations a linger gathered.
    pub(super) fn gathered(&mut self, operations: usize) {
        self.phase_operations += operations as u64;
    }

    pub(super) fn target(&self) -> usize {
        self.settings.target
    }

    /// Judges a probe that counted `rate` operations per second: lingering goes on,
    /// for longer each time the traffic showed itself open loop again, or stops.
    fn after_probe(&mut self, rate: f64) -> Phase {
        let slowed = rate > self.lingering_rate * SLOWDOWN;
        if !slowed {
            self.slow_probes = 0;
            self.lingering_phase = (self.lingering_phase * 2).min(LONGEST_LINGERING_PHASE);
            return Phase::Lingering;
        }
        self.slow_probes += 1;
        // Confirmed or refuted soon: a closed loop is slowed meanwhile.
        self.lingering_phase = LINGERING_PHASE;
        if self.slow_probes < SLOW_PROBES {
            return Phase::Lingering;
        }
        self.slow_probes = 0;
        Phase::Off
    }

    fn next_phase_if_due(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.phase_started);
        let length = match self.phase {
            Phase::Lingering => self.lingering_phase,
            Phase::Probing => PROBING_PHASE,
            Phase::Off => OFF_PHASE,
        };
        if self.phase != Phase::Off && elapsed > length * 2 {
            // Cycles stopped coming for a while: what this phase counted says nothing
            // about the rate of the traffic, so count it again from now, and what comes
            // after the pause has shown nothing yet either.
            self.phase_started = now;
            self.phase_operations = 0;
            self.lingering_phase = LINGERING_PHASE;
            return;
        }
        let rate = self.phase_operations as f64 / elapsed.as_secs_f64().max(1e-6);
        let next = match self.phase {
            Phase::Lingering if elapsed >= length => {
                self.lingering_rate = rate;
                Phase::Probing
            }
            Phase::Probing if elapsed >= length => self.after_probe(rate),
            Phase::Off if elapsed >= length => {
                self.lingering_phase = LINGERING_PHASE;
                Phase::Lingering
            }
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
    /// two every `probe_every`. Returns the time reached and how long each probe cycle
    /// was told to wait (`None`: not at all).
    fn lingering_then_probing(
        linger: &mut Linger,
        from: Instant,
        round: usize,
        probe_every: Duration,
    ) -> (Instant, Vec<Option<Duration>>) {
        // The first cycle ends the probe before it; the phase it starts may be longer.
        let (next, first) = traffic(linger, from, MS * 4, MS * 4, (2, 6));
        let rest = linger.lingering_phase - MS * 4;
        let (after, lingered) = traffic(linger, next, rest, MS * 4, (2, 6));
        let lingered = first + lingered;
        assert!(lingered > 100, "round {round}: {lingered} lingers");
        let (mut now, mut waits) = (after, Vec::new());
        while now < after + PROBING_PHASE {
            waits.push(linger.deadline(2, now, now).map(|until| until - now));
            now += probe_every;
        }
        (now, waits)
    }

    /// The committer under open-loop traffic at 2,000 operations per second for `span`:
    /// a linger of the whole window gathers six more every 4 ms, a shorter one (a probe's)
    /// one more every 1.5 ms, a cycle without one takes two every millisecond.
    /// Returns the time reached and how long it went without the whole window.
    fn open_loop(linger: &mut Linger, from: Instant, span: Duration) -> (Instant, Duration) {
        let (mut now, mut probing) = (from, Duration::ZERO);
        let window = linger.settings.window;
        while now < from + span {
            match linger.deadline(2, now, now) {
                Some(until) if until - now == window => {
                    linger.gathered(6);
                    now += MS * 4;
                }
                Some(_) => {
                    linger.gathered(1);
                    now += MS * 3 / 2;
                    probing += MS * 3 / 2;
                }
                None => {
                    now += MS;
                    probing += MS;
                }
            }
        }
        (now, probing)
    }

    /// A closed loop of three callers for `span`: each cycle of three takes 1.5 ms, and a
    /// linger of `w` delays the next by three quarters of `w` (3 ms a cycle for the whole
    /// 2 ms window, 1.875 ms for a probe's quarter). Returns the time reached and the
    /// times of the cycles that lingered the whole window.
    fn closed_loop(linger: &mut Linger, from: Instant, span: Duration) -> (Instant, Vec<Instant>) {
        let (mut now, mut lingered) = (from, Vec::new());
        let window = linger.settings.window;
        while now < from + span {
            let wait = linger
                .deadline(3, now, now)
                .map_or(Duration::ZERO, |until| until - now);
            if wait == window {
                lingered.push(now);
            }
            now += MS * 3 / 2 + wait * 3 / 4;
        }
        (now, lingered)
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
            // The probe: a quarter of the window, the same rate.
            let (after, waits) = lingering_then_probing(&mut linger, now, round, MS);
            let quarter = settings().window / 4;
            assert!(
                waits.iter().all(|wait| *wait == Some(quarter)),
                "round {round}: a probe waits a quarter of the window: {waits:?}"
            );
            now = after;
        }
    }

    #[test]
    fn a_closed_loop_that_lingering_slows_stops_it_and_is_tried_again_later() {
        let start = Instant::now();
        let mut linger = Linger::new(settings(), start);
        let span = (LINGERING_PHASE + PROBING_PHASE) * SLOW_PROBES + MS * 10;
        let (now, lingered) = closed_loop(&mut linger, start, span);
        assert!(
            lingered.len() > 200,
            "{} lingers before the probes",
            lingered.len()
        );
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
    fn open_loop_traffic_is_probed_less_and_less_often_but_still_probed() {
        let start = Instant::now();
        let mut linger = Linger::new(settings(), start);
        let (now, _) = open_loop(&mut linger, start, Duration::from_secs(20));
        let span = Duration::from_secs(60);
        let (_, probing) = open_loop(&mut linger, now, span);
        // A probe in every 600 ms would be 10 s of these 60; one in every 8.1 s is 0.7 s.
        assert!(probing <= span / 50, "{probing:?} without the whole window");
        assert!(probing >= PROBING_PHASE * 5, "only {probing:?} of probes");
    }

    #[test]
    fn a_closed_loop_after_long_open_loop_traffic_is_still_told_apart() {
        let start = Instant::now();
        let mut linger = Linger::new(settings(), start);
        let (mut now, _) = open_loop(&mut linger, start, Duration::from_secs(30));
        // On to the start of a lingering phase, the longest by now.
        for wanted in [Phase::Probing, Phase::Lingering] {
            while linger.phase != wanted {
                (now, _) = open_loop(&mut linger, now, MS);
            }
        }
        assert_eq!(linger.lingering_phase, LONGEST_LINGERING_PHASE);
        // The probe after this phase sees the slowdown, and the next, after a short
        // phase, confirms it.
        let within = LONGEST_LINGERING_PHASE + LINGERING_PHASE + PROBING_PHASE * 3;
        let (_, lingered) = closed_loop(&mut linger, now, within + Duration::from_secs(5));
        assert!(!lingered.is_empty(), "the closed loop came while lingering");
        let last = *lingered.last().unwrap();
        assert!(last < now + within, "still lingering {:?} in", last - now);
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
