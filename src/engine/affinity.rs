//! Keeps the engine's thread on one CPU while that CPU is its own (`COLLOQUY_ENGINE_CPU`).
//!
//! At moderate load the engine's thread sleeps and wakes many times a second. Woken on
//! whichever CPU is free, it finds its caches cold there: at 2,000 new users/s the same
//! build used 8 - 13 % less CPU per reply with its engine's thread pinned (returning
//! users 0 - 8 %), and closed loops did not change (docs/performance.md, "The engine's thread kept on one CPU").
//! A CPU that something else keeps busy would starve a pinned thread, though: a busy loop
//! on its CPU cut 128 closed-loop senders from 11,400 to 6,700 replies/s, and a thread
//! that seldom sleeps gains nothing from warm caches on waking and loses by waiting for
//! its one CPU when the machine is full (128 senders x 16 events: 8 % fewer events/s).
//! So, in `auto`, the thread reads its own scheduler statistics every second. When it
//! waits to run longer than it runs, for more than a fifth of the second, or runs for
//! half of the second or more, twice in a row, it lets go of its CPU. After a spell free it pins itself again, to the CPU the scheduler has
//! moved it to. The spell is 10 s and doubles after each release, up to 160 s. Five calm
//! minutes pinned make it short again.
//!
//! Threads inherit the affinity of the thread that starts them. So the engine's thread is
//! pinned by a task that `app` spawns last, after the committer and sled's threads have
//! started and after the HTTP servers' tasks, which start their workers when first polled.
//!
//! This module owns that decision and the affinity of the engine's thread. It never sets
//! another thread's affinity, and it runs nothing but its own timer.

use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;

use crate::config::EngineCpu;
use crate::engine::metrics::Metrics;

/// How often the thread reads its scheduler statistics.
const EVERY: Duration = Duration::from_secs(1);
/// Waiting to run for this share of a sample (and longer than running) is contention.
const CONTENDED_SHARE: f64 = 0.2;
/// Running for this share of a sample is busy: a thread that seldom sleeps gains
/// nothing from a warm cache on wake-up and loses by waiting for one CPU when the
/// machine is full (128 senders x 16 events: 8 % fewer events/s pinned, at 0.65 of a
/// core).
const BUSY_SHARE: f64 = 0.5;
/// Samples of contention or business in a row before the thread lets go: one is as
/// likely a burst.
const CONTENDED_SAMPLES: u32 = 2;
/// The first spell free after a release; each release doubles it, up to the longest.
const FIRST_SPELL: Duration = Duration::from_secs(10);
const LONGEST_SPELL: Duration = Duration::from_secs(160);
/// Pinned without contention this long, the spell starts short again.
const FORGIVEN_AFTER: Duration = Duration::from_secs(300);

#[derive(Debug, Error)]
pub enum AffinityError {
    #[error(
        "invalid COLLOQUY_ENGINE_CPU: CPU {cpu} is not one this process may run on ({allowed})"
    )]
    NotAllowed { cpu: usize, allowed: String },
    #[error("cannot pin the engine's thread to CPU {cpu}: {reason}")]
    Pin { cpu: usize, reason: String },
    #[error("cannot tell {what}: {reason}")]
    Unreadable { what: &'static str, reason: String },
    #[error("invalid COLLOQUY_ENGINE_CPU: pinning the engine's thread needs Linux")]
    Unsupported,
}

/// One reading of the thread's scheduler statistics over an interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Time spent running.
    pub run: Duration,
    /// Time spent runnable, waiting for a CPU.
    pub wait: Duration,
    /// The wall time the sample covers.
    pub interval: Duration,
}

impl Sample {
    /// Whether the thread had better run wherever it can: it waited for its CPU longer
    /// than it ran there, or it was busy most of the time.
    fn crowded(&self) -> bool {
        let interval = self.interval.as_secs_f64();
        let contended =
            self.wait > self.run && self.wait.as_secs_f64() >= interval * CONTENDED_SHARE;
        contended || self.run.as_secs_f64() >= interval * BUSY_SHARE
    }
}

/// What the thread should do with its affinity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Move {
    /// Pin itself to the CPU it runs on now.
    Pin,
    /// Run wherever the process may.
    Release,
}

/// The decision, fed one sample per interval. It starts pinned.
#[derive(Debug)]
pub struct Pinning {
    pinned: bool,
    contended_in_a_row: u32,
    calm_for: Duration,
    free_for: Duration,
    /// The spell the next release stays free.
    spell: Duration,
}

impl Default for Pinning {
    fn default() -> Pinning {
        Pinning {
            pinned: true,
            contended_in_a_row: 0,
            calm_for: Duration::ZERO,
            free_for: Duration::ZERO,
            spell: FIRST_SPELL,
        }
    }
}

impl Pinning {
    pub fn observe(&mut self, sample: Sample) -> Option<Move> {
        if self.pinned {
            self.observe_pinned(sample)
        } else {
            self.observe_free(sample)
        }
    }

    fn observe_pinned(&mut self, sample: Sample) -> Option<Move> {
        if !sample.crowded() {
            self.contended_in_a_row = 0;
            self.calm_for += sample.interval;
            if self.calm_for >= FORGIVEN_AFTER {
                self.spell = FIRST_SPELL;
            }
            return None;
        }
        self.contended_in_a_row += 1;
        if self.contended_in_a_row < CONTENDED_SAMPLES {
            return None;
        }
        self.pinned = false;
        self.contended_in_a_row = 0;
        self.free_for = Duration::ZERO;
        Some(Move::Release)
    }

    fn observe_free(&mut self, sample: Sample) -> Option<Move> {
        self.free_for += sample.interval;
        if self.free_for < self.spell {
            return None;
        }
        self.pinned = true;
        self.calm_for = Duration::ZERO;
        self.spell = (self.spell * 2).min(LONGEST_SPELL);
        Some(Move::Pin)
    }
}

/// The run and wait times of `/proc/.../schedstat` (nanoseconds, then the count of
/// timeslices).
fn parse_schedstat(text: &str) -> Option<(Duration, Duration)> {
    let mut fields = text.split_whitespace();
    let run: u64 = fields.next()?.parse().ok()?;
    let wait: u64 = fields.next()?.parse().ok()?;
    Some((Duration::from_nanos(run), Duration::from_nanos(wait)))
}

/// The engine's thread as pinned at start; `restore` gives the thread back its affinity.
#[derive(Debug, Default)]
pub struct EnginePin {
    #[cfg(target_os = "linux")]
    pinned: Option<linux::Pinned>,
}

/// Whether `setting` can be kept: a fixed CPU must be one this process may run on. Called
/// before the engine starts anything, so a wrong setting stops the start cleanly.
pub fn check(setting: EngineCpu) -> Result<(), AffinityError> {
    #[cfg(target_os = "linux")]
    {
        linux::check(setting)
    }
    #[cfg(not(target_os = "linux"))]
    match setting {
        EngineCpu::Fixed(_) => Err(AffinityError::Unsupported),
        EngineCpu::Auto | EngineCpu::Off => Ok(()),
    }
}

/// Pins the calling thread, the engine's, as `setting` (already `check`ed) says. Call it
/// on the engine's thread, once every thread the engine starts at start has started. A
/// failure to pin is logged: the engine runs as well unpinned, only with colder caches.
pub fn pin_engine_thread(setting: EngineCpu, metrics: Arc<Metrics>) -> EnginePin {
    metrics.set_engine_cpu(None);
    #[cfg(target_os = "linux")]
    {
        EnginePin {
            pinned: linux::pin(setting, metrics),
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = setting;
        EnginePin::default()
    }
}

impl EnginePin {
    /// Stops watching and gives the thread the affinity it had before it was pinned (a
    /// program that runs the engine in its own thread gets that thread back as it was).
    pub fn restore(self) {
        #[cfg(target_os = "linux")]
        if let Some(pinned) = self.pinned {
            pinned.restore();
        }
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use std::sync::Arc;
    use std::time::Instant;

    use nix::sched::{sched_getaffinity, sched_getcpu, sched_setaffinity, CpuSet};
    use nix::unistd::Pid;

    use super::{parse_schedstat, AffinityError, Move, Pinning, Sample, EVERY};
    use crate::config::EngineCpu;
    use crate::engine::metrics::Metrics;

    const SCHEDSTAT: &str = "/proc/thread-self/schedstat";

    /// The engine's thread as `pin` left it: what to give back, and the task that pins
    /// it (and, in `auto`, watches it).
    #[derive(Debug)]
    pub(super) struct Pinned {
        before: CpuSet,
        task: actix_rt::task::JoinHandle<()>,
        metrics: Arc<Metrics>,
    }

    impl Pinned {
        pub(super) fn restore(self) {
            self.task.abort();
            set_this_thread(&self.before, "its affinity before");
            self.metrics.set_engine_cpu(None);
        }
    }

    pub(super) fn check(setting: EngineCpu) -> Result<(), AffinityError> {
        let EngineCpu::Fixed(cpu) = setting else {
            return Ok(());
        };
        let allowed = this_thread_affinity()?;
        if allowed.is_set(cpu).unwrap_or(false) {
            Ok(())
        } else {
            Err(AffinityError::NotAllowed {
                cpu,
                allowed: cpu_list(&allowed),
            })
        }
    }

    pub(super) fn pin(setting: EngineCpu, metrics: Arc<Metrics>) -> Option<Pinned> {
        if setting == EngineCpu::Off {
            return None;
        }
        let before = match this_thread_affinity() {
            Ok(before) => before,
            Err(error) => {
                log::warn!("engine: {error}; the engine's thread is not pinned");
                return None;
            }
        };
        let task = actix_rt::spawn({
            let metrics = metrics.clone();
            async move {
                // The HTTP servers start their threads when their tasks, spawned before
                // this one, are first polled: they must not inherit the engine's CPU.
                actix_rt::task::yield_now().await;
                match pin_as(setting, &before, &metrics) {
                    Ok(true) if setting == EngineCpu::Auto => watch(before, metrics).await,
                    Ok(_) => {}
                    Err(error) => log::warn!("engine: {error}; the engine's thread is not pinned"),
                }
            }
        });
        Some(Pinned {
            before,
            task,
            metrics,
        })
    }

    /// Pins as `setting` says; whether it did.
    fn pin_as(
        setting: EngineCpu,
        before: &CpuSet,
        metrics: &Metrics,
    ) -> Result<bool, AffinityError> {
        let cpu = match setting {
            EngineCpu::Off => return Ok(false),
            EngineCpu::Fixed(cpu) => cpu,
            // One CPU: nowhere else to go.
            EngineCpu::Auto if allowed_cpus(before).nth(1).is_none() => return Ok(false),
            EngineCpu::Auto if read_schedstat().is_none() => {
                log::warn!(
                    "engine: cannot read {SCHEDSTAT}, so contention could not be seen; the \
                     engine's thread is not pinned"
                );
                return Ok(false);
            }
            EngineCpu::Auto => current_cpu()?,
        };
        pin_to(cpu)?;
        metrics.set_engine_cpu(Some(cpu));
        log::info!("engine: the engine's thread runs on CPU {cpu}");
        Ok(true)
    }

    /// Samples the thread's scheduler statistics every `EVERY` and moves as `Pinning` says.
    async fn watch(before: CpuSet, metrics: Arc<Metrics>) {
        let mut pinning = Pinning::default();
        let Some(mut last) = read_schedstat() else {
            return;
        };
        let mut last_at = Instant::now();
        let mut ticks = actix_rt::time::interval(EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await;
        loop {
            ticks.tick().await;
            let (Some(now), at) = (read_schedstat(), Instant::now()) else {
                continue;
            };
            let sample = Sample {
                run: now.0.saturating_sub(last.0),
                wait: now.1.saturating_sub(last.1),
                interval: at.duration_since(last_at),
            };
            (last, last_at) = (now, at);
            match pinning.observe(sample) {
                Some(Move::Release) => {
                    set_this_thread(&before, "every CPU it may use");
                    metrics.set_engine_cpu(None);
                    metrics.engine_cpu_released();
                    log::info!(
                        "engine: the engine's thread waited {:?} to run and ran {:?} in {:?}; it \
                         lets go of its CPU for a while",
                        sample.wait,
                        sample.run,
                        sample.interval
                    );
                }
                Some(Move::Pin) => match current_cpu().and_then(|cpu| pin_to(cpu).map(|()| cpu)) {
                    Ok(cpu) => {
                        metrics.set_engine_cpu(Some(cpu));
                        log::info!("engine: the engine's thread runs on CPU {cpu} again");
                    }
                    Err(error) => log::warn!("engine: {error}"),
                },
                None => {}
            }
        }
    }

    fn read_schedstat() -> Option<(std::time::Duration, std::time::Duration)> {
        parse_schedstat(&std::fs::read_to_string(SCHEDSTAT).ok()?)
    }

    fn this_thread_affinity() -> Result<CpuSet, AffinityError> {
        sched_getaffinity(Pid::from_raw(0)).map_err(|error| AffinityError::Unreadable {
            what: "which CPUs the engine's thread may use",
            reason: error.to_string(),
        })
    }

    fn current_cpu() -> Result<usize, AffinityError> {
        sched_getcpu().map_err(|error| AffinityError::Unreadable {
            what: "which CPU the engine's thread runs on",
            reason: error.to_string(),
        })
    }

    fn pin_to(cpu: usize) -> Result<(), AffinityError> {
        let mut only = CpuSet::new();
        only.set(cpu)
            .and_then(|()| sched_setaffinity(Pid::from_raw(0), &only))
            .map_err(|error| AffinityError::Pin {
                cpu,
                reason: error.to_string(),
            })
    }

    fn set_this_thread(cpus: &CpuSet, what: &str) {
        if let Err(error) = sched_setaffinity(Pid::from_raw(0), cpus) {
            log::warn!("engine: cannot give the engine's thread {what}: {error}");
        }
    }

    fn allowed_cpus(cpus: &CpuSet) -> impl Iterator<Item = usize> + '_ {
        (0..CpuSet::count()).filter(|&cpu| cpus.is_set(cpu).unwrap_or(false))
    }

    /// `0-3,6` style, as `/proc/.../status` shows `Cpus_allowed_list`.
    fn cpu_list(cpus: &CpuSet) -> String {
        let listed: Vec<String> = allowed_cpus(cpus).map(|cpu| cpu.to_string()).collect();
        format!("CPUs {}", listed.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn sample(run_ms: u64, wait_ms: u64) -> Sample {
        Sample {
            run: Duration::from_millis(run_ms),
            wait: Duration::from_millis(wait_ms),
            interval: SECOND,
        }
    }

    /// As measured: pinned beside a busy loop on its CPU (234 ms run, 600 waiting).
    fn starved() -> Sample {
        sample(234, 600)
    }

    /// As measured: 128 closed-loop senders on two cores, pinned (465 ms run, 300 waiting).
    fn busy_but_fine() -> Sample {
        sample(465, 300)
    }

    fn seconds_until_pin(pinning: &mut Pinning) -> u64 {
        (1..=1000)
            .find(|_| pinning.observe(busy_but_fine()) == Some(Move::Pin))
            .expect("pins again within 1000 s")
    }

    #[test]
    fn a_busy_machine_is_not_contention_but_waiting_longer_than_running_is() {
        let mut pinning = Pinning::default();
        for _ in 0..10 {
            assert_eq!(pinning.observe(busy_but_fine()), None);
        }
        // Idle: waits little, runs little.
        for _ in 0..10 {
            assert_eq!(pinning.observe(sample(2, 1)), None);
        }
        // Waits longer than it runs, but only briefly: not worth moving for.
        for _ in 0..10 {
            assert_eq!(pinning.observe(sample(50, 150)), None);
        }
        assert_eq!(
            pinning.observe(starved()),
            None,
            "one sample may be a burst"
        );
        assert_eq!(pinning.observe(starved()), Some(Move::Release));
    }

    #[test]
    fn a_thread_busy_most_of_each_second_lets_go_too() {
        let mut pinning = Pinning::default();
        // As measured at 128 senders x 16 events: 650 ms run, 180 waiting.
        let busy = sample(650, 180);
        assert_eq!(pinning.observe(busy), None, "one sample may be a burst");
        assert_eq!(pinning.observe(busy), Some(Move::Release));
        let mut pinning = Pinning::default();
        for _ in 0..10 {
            assert_eq!(pinning.observe(sample(490, 100)), None, "under half: stays");
        }
    }

    #[test]
    fn contention_must_come_in_a_row() {
        let mut pinning = Pinning::default();
        for _ in 0..10 {
            assert_eq!(pinning.observe(starved()), None);
            assert_eq!(pinning.observe(busy_but_fine()), None);
        }
    }

    #[test]
    fn a_released_thread_pins_again_after_a_spell_that_doubles_up_to_the_longest() {
        let mut pinning = Pinning::default();
        let mut spells = Vec::new();
        for _ in 0..6 {
            pinning.observe(starved());
            assert_eq!(pinning.observe(starved()), Some(Move::Release));
            spells.push(seconds_until_pin(&mut pinning));
        }
        assert_eq!(spells, [10, 20, 40, 80, 160, 160]);
    }

    #[test]
    fn five_calm_minutes_pinned_make_the_spell_short_again() {
        let mut pinning = Pinning::default();
        for _ in 0..3 {
            pinning.observe(starved());
            pinning.observe(starved());
            seconds_until_pin(&mut pinning);
        }
        for _ in 0..299 {
            assert_eq!(pinning.observe(busy_but_fine()), None);
        }
        pinning.observe(starved());
        pinning.observe(starved());
        assert_eq!(
            seconds_until_pin(&mut pinning),
            80,
            "299 s calm is not enough"
        );
        for _ in 0..300 {
            pinning.observe(busy_but_fine());
        }
        pinning.observe(starved());
        pinning.observe(starved());
        assert_eq!(seconds_until_pin(&mut pinning), 10);
    }

    #[test]
    fn schedstat_gives_run_and_wait_in_nanoseconds() {
        assert_eq!(
            parse_schedstat("1500000000 250000 42\n"),
            Some((Duration::from_millis(1500), Duration::from_micros(250)))
        );
        assert_eq!(parse_schedstat("12"), None);
        assert_eq!(parse_schedstat("x 1 2"), None);
    }
}
