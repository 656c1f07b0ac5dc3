//! Which threads take the webhook's new connections when both may (`COLLOQUY_WORKERS`
//! unset): the engine's own thread while it has time to spare, the HTTP workers once it is
//! busy, and the engine's thread again once it has been calm for a while.
//!
//! Served on the engine's thread a POST costs less CPU (no hand-off between threads for
//! the request and its answer), but that thread then also parses every request, and a
//! spike it cannot keep up with would overrun it (docs/performance.md, "The webhook on the
//! engine's thread"). So the engine's thread measures its own CPU time a few times a
//! second and the side moves with it: to the workers at once when the thread is busy or
//! events wait too long, back only after a calm spell, so that traffic near the threshold
//! does not move connections back and forth. A connection stays on the thread that
//! accepted it; after a move each response on the other side ends its connection
//! (`Connection: close`), and the client's next connection is accepted by the side that
//! now takes them.
//!
//! This module decides and publishes the side. It reads no request and answers none;
//! `listener` accepts for the engine's thread only while the side is `Engine`, and the
//! workers' accept loop is paused and resumed by the steering task.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use tokio::sync::watch;

use crate::config::SteeringSettings;
use crate::engine::load::Load;
use crate::engine::metrics::Metrics;

/// The threads that take new connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The engine's own thread (`listener`).
    Engine,
    /// The actix-web HTTP workers.
    Workers,
}

impl Side {
    /// The side that is not this one.
    pub fn other(self) -> Side {
        match self {
            Side::Engine => Side::Workers,
            Side::Workers => Side::Engine,
        }
    }

    /// The name used in metrics and logs.
    pub fn name(self) -> &'static str {
        match self {
            Side::Engine => "engine",
            Side::Workers => "workers",
        }
    }
}

/// One measurement of the engine's thread over the last interval.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// CPU time used over wall time elapsed (1.0 is a whole core).
    pub cpu_share: f64,
    /// How long the oldest event still waiting for its conversation has waited.
    pub oldest_pending: Option<Duration>,
    /// The wall time the sample covers.
    pub interval: Duration,
}

/// The decision: fed one sample per interval, says when the side should move.
#[derive(Debug)]
pub struct Steering {
    settings: SteeringSettings,
    side: Side,
    busy_in_a_row: u32,
    calm_for: Duration,
}

impl Steering {
    pub fn new(settings: SteeringSettings) -> Steering {
        Steering {
            settings,
            side: Side::Engine,
            busy_in_a_row: 0,
            calm_for: Duration::ZERO,
        }
    }

    /// The side after this sample, if it moved.
    pub fn observe(&mut self, sample: Sample) -> Option<Side> {
        let moves = match self.side {
            Side::Engine => self.overrun(sample),
            Side::Workers => self.calm_long_enough(sample),
        };
        if !moves {
            return None;
        }
        self.side = self.side.other();
        self.busy_in_a_row = 0;
        self.calm_for = Duration::ZERO;
        Some(self.side)
    }

    fn overrun(&mut self, sample: Sample) -> bool {
        if sample.cpu_share >= self.settings.busy_at {
            self.busy_in_a_row += 1;
        } else {
            self.busy_in_a_row = 0;
        }
        self.behind(sample) || self.busy_in_a_row >= self.settings.busy_samples.max(1)
    }

    fn calm_long_enough(&mut self, sample: Sample) -> bool {
        if sample.cpu_share < self.settings.calm_below && !self.behind(sample) {
            self.calm_for += sample.interval;
        } else {
            self.calm_for = Duration::ZERO;
        }
        self.calm_for >= self.settings.calm_for
    }

    /// Whether the oldest waiting event has waited `behind_at` or longer.
    fn behind(&self, sample: Sample) -> bool {
        sample
            .oldest_pending
            .is_some_and(|waited| waited >= self.settings.behind_at)
    }
}

/// The side taking new connections now, shared by the engine's listener, the responses of
/// both sides and the steering task.
#[derive(Debug, Clone)]
pub struct Placement(Arc<watch::Sender<Side>>);

impl Placement {
    pub fn new(side: Side) -> Placement {
        Placement(Arc::new(watch::Sender::new(side)))
    }

    pub fn current(&self) -> Side {
        *self.0.borrow()
    }

    /// Moves the side; whoever watches is woken.
    pub fn set(&self, side: Side) {
        self.0.send_replace(side);
    }

    /// A receiver woken at each move. It stays valid as long as this `Placement` (or a
    /// clone) lives, which is why the listener keeps one.
    pub fn watch(&self) -> watch::Receiver<Side> {
        self.0.subscribe()
    }
}

/// Runs on the engine's thread for as long as the webhook is served: measures the thread,
/// and moves the side (resuming or pausing the workers' accept loop) when `Steering` says.
/// Without a way to measure the thread (no `/proc`), the workers serve from the start.
pub async fn steer(
    placement: Placement,
    settings: SteeringSettings,
    load: Arc<Load>,
    workers: ServerHandle,
    metrics: Arc<Metrics>,
) {
    let mut steering = Steering::new(settings);
    // The workers' accept loop starts running: paused while the engine's thread serves.
    if placement.current() == Side::Engine {
        workers.pause().await;
    }
    metrics.set_webhook_threads(placement.current().name(), false);
    let Some(mut cpu_before) = this_thread_cpu() else {
        log::warn!(
            "webhook: cannot read this thread's CPU time (/proc/thread-self/stat); HTTP \
             workers serve the webhook"
        );
        move_to(Side::Workers, &placement, &workers, &metrics).await;
        return;
    };
    let mut at_before = Instant::now();
    let mut ticks = actix_rt::time::interval(settings.every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let (Some(cpu), at) = (this_thread_cpu(), Instant::now()) else {
            continue;
        };
        let interval = at.duration_since(at_before);
        let sample = Sample {
            cpu_share: share(cpu.saturating_sub(cpu_before), interval),
            oldest_pending: load.oldest_pending_age(),
            interval,
        };
        (cpu_before, at_before) = (cpu, at);
        if let Some(side) = steering.observe(sample) {
            log::info!(
                "webhook: new connections go to the {} now (the engine's thread used {:.0} % \
                 of a core)",
                side.name(),
                sample.cpu_share * 100.0
            );
            move_to(side, &placement, &workers, &metrics).await;
        }
    }
}

/// Moves the side, so that at every moment one side or both take connections: the side
/// that takes over starts accepting before the other stops.
pub async fn move_to(side: Side, placement: &Placement, workers: &ServerHandle, metrics: &Metrics) {
    match side {
        Side::Workers => {
            workers.resume().await;
            placement.set(side);
        }
        Side::Engine => {
            placement.set(side);
            workers.pause().await;
        }
    }
    metrics.set_webhook_threads(side.name(), true);
}

fn share(used: Duration, interval: Duration) -> f64 {
    if interval.is_zero() {
        return 0.0;
    }
    used.as_secs_f64() / interval.as_secs_f64()
}

/// Clock ticks per second of `/proc`'s CPU times: `USER_HZ`, 100 on every Linux
/// architecture the project builds for.
const TICKS_PER_SECOND: u64 = 100;

/// The CPU time (user and system) the calling thread has used, from `/proc`.
fn this_thread_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    let ticks = cpu_ticks(&stat)?;
    Some(Duration::from_millis(ticks * 1000 / TICKS_PER_SECOND))
}

/// utime + stime of a `/proc/.../stat` line: fields 14 and 15, counted after the command
/// name, which is in parentheses and may itself hold spaces and parentheses.
fn cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some(user + system)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVERY: Duration = Duration::from_millis(250);

    fn at(cpu_share: f64) -> Sample {
        Sample {
            cpu_share,
            oldest_pending: None,
            interval: EVERY,
        }
    }

    fn steering() -> Steering {
        Steering::new(SteeringSettings::default())
    }

    #[test]
    fn a_busy_engine_hands_the_webhook_over_after_two_busy_samples_in_a_row() {
        let mut steering = steering();
        assert_eq!(
            steering.observe(at(0.45)),
            None,
            "one busy sample is a blip"
        );
        assert_eq!(steering.observe(at(0.1)), None);
        assert_eq!(steering.observe(at(0.45)), None, "the count starts again");
        assert_eq!(steering.observe(at(0.6)), Some(Side::Workers));
        assert_eq!(steering.observe(at(0.9)), None, "already moved");
    }

    #[test]
    fn an_engine_below_the_threshold_keeps_the_webhook() {
        let mut steering = steering();
        for _ in 0..1000 {
            assert_eq!(steering.observe(at(0.39)), None);
        }
    }

    #[test]
    fn events_waiting_too_long_hand_the_webhook_over_at_once() {
        let mut steering = steering();
        let behind = Sample {
            oldest_pending: Some(Duration::from_millis(300)),
            ..at(0.1)
        };
        assert_eq!(steering.observe(behind), Some(Side::Workers));
    }

    #[test]
    fn the_webhook_comes_back_only_after_a_calm_spell_without_interruption() {
        let mut steering = steering();
        steering.observe(at(0.9));
        assert_eq!(steering.observe(at(0.9)), Some(Side::Workers));
        // 4.75 s calm, then one sample above the calm threshold (though below busy).
        for _ in 0..19 {
            assert_eq!(steering.observe(at(0.05)), None);
        }
        assert_eq!(
            steering.observe(at(0.3)),
            None,
            "not calm: the spell restarts"
        );
        for _ in 0..19 {
            assert_eq!(steering.observe(at(0.05)), None);
        }
        assert_eq!(steering.observe(at(0.05)), Some(Side::Engine), "5 s calm");
    }

    #[test]
    fn events_waiting_too_long_are_not_calm_even_on_an_idle_thread() {
        let mut steering = steering();
        steering.observe(at(0.9));
        steering.observe(at(0.9));
        let behind = Sample {
            oldest_pending: Some(Duration::from_secs(1)),
            ..at(0.0)
        };
        for _ in 0..100 {
            assert_eq!(steering.observe(behind), None);
        }
    }

    #[test]
    fn the_cpu_time_is_read_after_a_command_name_with_spaces_and_parentheses() {
        let stat = "4242 (colloquy (x) y) S 1 4242 4242 0 -1 4194560 1523 0 0 0 \
                    731 269 0 0 20 0 9 0 12345 1000 200 18446744073709551615";
        assert_eq!(cpu_ticks(stat), Some(1000));
        assert_eq!(cpu_ticks("garbage"), None);
        assert_eq!(cpu_ticks("1 (x) S 1 2"), None, "too few fields");
    }

    #[test]
    fn this_threads_cpu_time_grows_as_it_works() {
        let before = this_thread_cpu().expect("Linux has /proc/thread-self/stat");
        let started = Instant::now();
        let mut spin = 0u64;
        // Clock ticks are 10 ms: work well past a few of them.
        while this_thread_cpu().unwrap() < before + Duration::from_millis(30) {
            spin = spin.wrapping_add(1);
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "CPU time never grew"
            );
        }
        assert!(spin > 0);
    }

    #[test]
    fn the_placement_wakes_its_watchers_on_a_move() {
        let placement = Placement::new(Side::Engine);
        let mut watcher = placement.watch();
        assert!(!watcher.has_changed().unwrap());
        placement.set(Side::Workers);
        assert!(watcher.has_changed().unwrap());
        assert_eq!(*watcher.borrow_and_update(), Side::Workers);
        assert_eq!(placement.current(), Side::Workers);
    }
}
