//! The engine's thread kept on one CPU (`COLLOQUY_ENGINE_CPU`): pinned alone, given back
//! when the engine stops, let go of when something else keeps its CPU busy, and a CPU the
//! process may not use refused at start.
//!
//! An actix test runs the engine on the test's own thread, so that thread is the one
//! pinned.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use colloquy::config::EngineCpu;
use nix::sched::{sched_getaffinity, sched_setaffinity, CpuSet};
use nix::unistd::Pid;

use crate::helpers::*;

/// The CPUs a thread of this process may run on, from `/proc` (`Cpus_allowed_list`).
fn allowed_list(task: &str) -> String {
    allowed_list_if_there(task).expect("the thread's status")
}

/// `allowed_list` of a thread that may have ended meanwhile.
fn allowed_list_if_there(task: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{task}/status")).ok()?;
    let list = status
        .lines()
        .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))?;
    Some(list.trim().to_string())
}

/// Waits until the engine's thread (this test's) is pinned, and says to which CPU: it
/// pins itself once the servers' tasks have started their threads.
async fn pinned_cpu() -> usize {
    wait_until("the engine's thread pinned", || {
        allowed_list("thread-self").parse().ok()
    })
    .await
}

/// The CPUs the calling thread may run on.
fn my_cpus() -> Vec<usize> {
    let set = sched_getaffinity(Pid::from_raw(0)).unwrap();
    (0..CpuSet::count())
        .filter(|&cpu| set.is_set(cpu).unwrap())
        .collect()
}

/// Every thread of this process with `name`, by `/proc/self/task` id.
fn threads_named(name: &str) -> Vec<String> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| {
            let id = task.ok()?.file_name().into_string().ok()?;
            let comm = std::fs::read_to_string(format!("/proc/self/task/{id}/comm")).ok()?;
            (comm.trim() == name).then_some(id)
        })
        .collect()
}

async fn spawn_with_engine_cpu(engine_cpu: EngineCpu) -> TestApp {
    spawn_app_with(Options {
        engine_cpu: Some(engine_cpu),
        ..Options::default()
    })
    .await
}

#[actix_web::test]
async fn auto_pins_the_engines_thread_alone_and_stopping_gives_it_back() {
    let before = allowed_list("thread-self");
    let cpus = my_cpus();
    assert!(cpus.len() >= 2, "this test needs two CPUs, has {cpus:?}");
    assert!(
        std::fs::read_to_string("/proc/thread-self/schedstat").is_ok(),
        "auto needs the scheduler's statistics to see contention"
    );
    let app = spawn_with_engine_cpu(EngineCpu::Auto).await;

    let pinned = pinned_cpu().await;
    assert_eq!(
        metric_value(&metrics_text(&app).await, "colloquy_engine_cpu"),
        pinned as f64
    );
    // Started before the pin: the threads the engine started (the committer, the HTTP
    // workers and their accept loop) run anywhere.
    for name in ["colloquy-commit", "actix-rt|system", "actix-server ac"] {
        let threads = threads_named(name);
        assert!(!threads.is_empty(), "no thread named {name}");
        for thread in threads {
            if let Some(allowed) = allowed_list_if_there(&format!("self/task/{thread}")) {
                assert_eq!(allowed, before, "{name}");
            }
        }
    }
    // Pinned, it still serves.
    let body = text_message("24001", "m.pinned", "hello", 1_000);
    assert_eq!(app.post_signed(&body).await.status, 200);
    app.wait_for_first_reply("24001", "sent").await;

    app.app.stop().await.unwrap();
    assert_eq!(allowed_list("thread-self"), before);
}

#[actix_web::test]
async fn a_fixed_cpu_is_kept_and_off_leaves_the_thread_where_it_was() {
    let before = allowed_list("thread-self");
    let last = *my_cpus().last().unwrap();
    let app = spawn_with_engine_cpu(EngineCpu::Fixed(last)).await;
    assert_eq!(pinned_cpu().await, last);
    assert_eq!(
        metric_value(&metrics_text(&app).await, "colloquy_engine_cpu"),
        last as f64
    );
    app.app.stop().await.unwrap();
    assert_eq!(allowed_list("thread-self"), before);

    let app = spawn_with_engine_cpu(EngineCpu::Off).await;
    actix_rt::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        metric_value(&metrics_text(&app).await, "colloquy_engine_cpu"),
        -1.0
    );
    assert_eq!(allowed_list("thread-self"), before);
}

#[actix_web::test]
async fn a_cpu_the_process_may_not_use_stops_the_start_with_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        engine_cpu: Some(EngineCpu::Fixed(4096)),
        ..Options::default()
    };
    let error = start_error(&dir.path().join("db"), options, "the start fails").await;
    assert!(error.contains("COLLOQUY_ENGINE_CPU"), "{error}");
    assert!(error.contains("4096"), "{error}");
    // Nothing was opened: the data directory was never made.
    assert!(!dir.path().join("db").exists());
}

/// Two threads that keep `cpu` busy until dropped.
struct BusyLoops {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl BusyLoops {
    fn on(cpu: usize) -> BusyLoops {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..2)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut only = CpuSet::new();
                    only.set(cpu).unwrap();
                    sched_setaffinity(Pid::from_raw(0), &only).unwrap();
                    while !stop.load(Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                })
            })
            .collect();
        BusyLoops { stop, threads }
    }
}

impl Drop for BusyLoops {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

#[actix_web::test]
async fn the_engines_thread_lets_go_of_a_cpu_that_something_else_keeps_busy() {
    let before = allowed_list("thread-self");
    let app = spawn_with_engine_cpu(EngineCpu::Auto).await;
    let cpu = pinned_cpu().await;
    let busy = BusyLoops::on(cpu);
    // The engine's thread busy too (this test runs on it): it waits for its CPU about
    // twice as long as it runs there. It yields between slices so its own timer runs.
    let started = Instant::now();
    while allowed_list("thread-self") != before {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "still pinned to CPU {cpu} after 30 s beside two busy loops"
        );
        let slice = Instant::now();
        while slice.elapsed() < Duration::from_millis(20) {
            std::hint::spin_loop();
        }
        actix_rt::task::yield_now().await;
    }
    drop(busy);
    let text = metrics_text(&app).await;
    assert_eq!(metric_value(&text, "colloquy_engine_cpu"), -1.0);
    assert_eq!(
        metric_value(&text, "colloquy_engine_cpu_releases_total"),
        1.0
    );
}
