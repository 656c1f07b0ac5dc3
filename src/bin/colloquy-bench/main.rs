//! `colloquy-bench`: a load generator for a running colloquy.
//!
//! It serves a mock Graph API (the server under test runs with `MESSENGER_GRAPH_URL`
//! pointing at it), drives signed webhook POSTs at the server, checks that every
//! acknowledged message gets exactly one reply, to its sender, and reports events/s,
//! replies/s, ack latency (POST → 200) and end-to-end latency (POST → reply at the mock)
//! percentiles, errors by kind, and, given `--pid`, the server's peak RSS and CPU.
//! A missing, duplicate or unexpected reply is printed loudly and the exit status is 1.
//!
//! Loads: closed loop (`--senders N` virtual users, each POSTs and waits for its reply
//! before the next; with `--batch K` each user owns K sender ids and POSTs one message
//! from each), open loop (`--rate R` events/s from `--senders` ids), `--receipts`
//! (delivery and read events for replies already seen, which must not be answered),
//! `--distinct N` (each message from a new sender id, N in all). `--duration` and
//! `--warmup` bound the run; replies get `--grace` seconds (5) after the last POST.
//! Spike (`--spike-rate R --spike-duration S`, see `spike.rs`): R events/s for S seconds
//! from new users (or `--spike-senders N` returning ones), every refused POST redelivered
//! after its `Retry-After`; it adds replies per second through and after the spike, 503s,
//! server CPU per reply and, given `--metrics`, the highest live-actor count seen.
//!
//! Run a benchmark (release build; `COLLOQUY_PAGE_SEND_RATE=0` lifts the per-page Send
//! API limit, 300/s by default, which would otherwise be what is measured):
//!
//! ```text
//! cargo build --release --bins
//! export MESSENGER_APP_SECRET=bench-secret
//! MESSENGER_VERIFY_TOKEN=bench MESSENGER_ACCESS_TOKEN=bench \
//!   MESSENGER_GRAPH_URL=http://127.0.0.1:9999/v21.0 COLLOQUY_PAGE_SEND_RATE=0 \
//!   COLLOQUY_DATA=$(mktemp -d)/db COLLOQUY_BIND=127.0.0.1:8080 \
//!   target/release/colloquy serve --flow echo &
//! target/release/colloquy-bench --target http://127.0.0.1:8080/webhook \
//!   --senders 16 --duration 20 --warmup 3 --pid $!
//! ```
//!
//! `--reference-bot ADDR` drives nothing: it serves a do-nothing bot backend there
//! (`reference.rs`) to measure colloquy against (`REFERENCE=1 scripts/bench.sh`).
//!
//! With `serve` (default flow `thanks`) pass `--flow thanks`: replies are then matched
//! to messages per user in order. `--json` prints one JSON line instead of the table;
//! progress goes to stderr once a second.

mod args;
mod load;
mod mock;
mod procfs;
mod reference;
mod report;
mod spike;
mod tracker;

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;

use args::Args;

// The load generator shares the machine with the server it measures: the less CPU its
// own allocations take, the more is left for the server (see src/main.rs).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use load::{Load, Plan};
use mock::MockGraph;
use procfs::{cores_between, cpu_mark, CpuMark, RssSampler};
use report::{Percentiles, Report, ServerUse};
use tracker::Tracker;

/// Stands for "no time bound" (`--distinct` without `--duration`).
const FOREVER: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// After every awaited reply is in, how long to keep listening for duplicates.
const SETTLE: Duration = Duration::from_millis(300);

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(addr) = args.reference_bot {
        let served = actix_rt::System::new().block_on(reference::serve(
            addr,
            &args.reference_graph,
            &args.app_secret,
        ));
        return match served {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("colloquy-bench: {error:#}");
                ExitCode::from(2)
            }
        };
    }
    let json = args.json;
    let outcome = actix_rt::System::new().block_on(run(args));
    match outcome {
        Ok(report) => {
            if json {
                println!("{}", report.to_json());
            } else {
                print!("{}", report.table());
            }
            if report.ok() {
                ExitCode::SUCCESS
            } else {
                if report.events == 0 {
                    eprintln!("colloquy-bench: the server acknowledged no event");
                }
                ExitCode::FAILURE
            }
        }
        Err(error) => {
            eprintln!("colloquy-bench: {error:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: Args) -> anyhow::Result<Report> {
    let targets = args
        .target
        .split(',')
        .map(|target| {
            target
                .trim()
                .parse()
                .with_context(|| format!("--target {target} is not a URL"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let run_id = format!("{:08x}", rand::random::<u32>());
    let started = Instant::now();
    let warmup_end = started + Duration::from_secs_f64(args.warmup_seconds());
    let measured = args.measured_seconds();
    let send_deadline = if measured.is_finite() {
        warmup_end + Duration::from_secs_f64(measured)
    } else {
        warmup_end + FOREVER
    };
    let tracker = Arc::new(Tracker::new(
        args.flow,
        &run_id,
        started,
        warmup_end,
        args.receipts,
    ));
    let mock = MockGraph::start(
        args.graph_bind,
        usize::from(args.graph_workers),
        tracker.clone(),
        args.graph_fail,
        args.graph_fail_kind,
    )?;
    eprintln!(
        "colloquy-bench: run {run_id}: {} load on {}; mock Graph API at {}",
        args.mode(),
        args.target,
        mock.url
    );
    let load = Arc::new(Load::new(
        Plan {
            targets,
            secret: args.app_secret.clone().into_bytes(),
            pages: args
                .page_id
                .split(',')
                .map(|id| serde_json::to_string(id.trim()))
                .collect::<Result<_, _>>()?,
            run: run_id,
            senders: args.senders,
            batch: args.batch,
            rate: args.rate,
            receipts: args.receipts,
            distinct: args.distinct,
            started,
            warmup_end,
            send_deadline,
            grace: Duration::from_secs_f64(args.grace),
            spike: args.spike_rate.map(|rate| spike::SpikePlan {
                rate,
                duration: Duration::from_secs_f64(args.spike_duration),
                returning: args.spike_senders,
                retry_deadline: send_deadline + Duration::from_secs_f64(args.grace),
            }),
        },
        tracker.clone(),
    ));

    let sampler = args.pid.map(RssSampler::start);
    let finished = Arc::new(AtomicBool::new(false));
    actix_rt::spawn(progress(load.clone(), finished.clone()));
    let scraped = Arc::new(spike::Scraped::default());
    if let Some(url) = args.metrics.clone() {
        actix_rt::spawn(spike::scrape(url, scraped.clone(), finished.clone()));
    }
    let marks = Arc::new(std::sync::Mutex::new(None::<Marks>));
    {
        let marks = marks.clone();
        let pid = args.pid;
        actix_rt::spawn(async move {
            actix_rt::time::sleep_until(warmup_end.into()).await;
            *marks.lock().unwrap_or_else(|e| e.into_inner()) = Some(Marks::take(pid));
        });
    }

    // The load itself, on its client threads.
    let threads = u32::from(args.client_threads);
    let mut done = Vec::new();
    let mut arbiters = Vec::new();
    for thread in 0..threads {
        let arbiter = actix_rt::Arbiter::new();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let load = load.clone();
        arbiter.spawn_fn(move || {
            actix_rt::spawn(async move {
                load::run_thread(load, thread, threads).await;
                let _ = tx.send(());
            });
        });
        done.push(rx);
        arbiters.push(arbiter);
    }
    for rx in done {
        let _ = rx.await;
    }
    let send_end = Instant::now().min(send_deadline);
    let end_marks = Marks::take(args.pid);
    let window_start = warmup_end.min(send_end);
    let window = send_end.duration_since(window_start).as_secs_f64();
    let start_marks = marks
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .filter(|_| send_end > warmup_end);

    // Replies still on their way get the grace period.
    let grace_end = Instant::now() + Duration::from_secs_f64(args.grace);
    while tracker.awaited() > 0 && Instant::now() < grace_end {
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
    if args.grace > 0.0 {
        actix_rt::time::sleep(SETTLE).await;
    }
    let replies_end_marks = Marks::take(args.pid);
    let verdict = tracker.verdict();
    finished.store(true, Ordering::Relaxed);
    let memory = sampler.map(RssSampler::finish);
    mock.stop().await;
    for arbiter in arbiters {
        arbiter.stop();
    }

    let acks = std::mem::take(&mut *load.acks.lock().unwrap_or_else(|e| e.into_inner()));
    let per_second = |n: u64| if window > 0.0 { n as f64 / window } else { 0.0 };
    let (from_ms, to_ms) = (
        window_start.duration_since(started).as_millis(),
        send_end.duration_since(started).as_millis(),
    );
    let replies_measured = verdict
        .reply_at_ms
        .iter()
        .filter(|&&ms| (from_ms..=to_ms).contains(&u128::from(ms)))
        .count() as u64;
    let (server_cpu, bench_cpu) = match &start_marks {
        Some(start) => (
            start
                .server
                .as_ref()
                .zip(end_marks.server.as_ref())
                .map(|(a, b)| cores_between(a, b, window)),
            start
                .bench
                .as_ref()
                .zip(end_marks.bench.as_ref())
                .map(|(a, b)| cores_between(a, b, window).0),
        ),
        None => (None, None),
    };
    let server = args.pid.map(|pid| {
        let memory = memory.unwrap_or_default();
        ServerUse {
            pid,
            rss_peak_mib: memory.rss_peak_kib as f64 / 1024.0,
            hwm_mib: memory.hwm_kib as f64 / 1024.0,
            cpu_cores: server_cpu.as_ref().map(|(total, _)| *total),
            threads: server_cpu.map(|(_, threads)| threads).unwrap_or_default(),
        }
    });
    let report = Report {
        target: args.target.clone(),
        flow: args.flow.name(),
        mode: args.mode(),
        senders: args.senders,
        batch: args.batch,
        rate: args.rate,
        receipts: args.receipts,
        distinct: args.distinct,
        warmup_s: args.warmup_seconds(),
        measured_s: window,
        posts: acks.posts_ok,
        events: acks.events_ok,
        messages: acks.messages_ok,
        receipts_sent: acks.receipts_ok,
        replies: verdict.replies,
        missing: verdict.missing,
        duplicates: verdict.duplicates,
        unexpected: verdict.unexpected,
        replies_to_unacked: verdict.replies_to_unacked,
        events_per_s: per_second(acks.events_ok_measured),
        messages_per_s: per_second(acks.messages_ok_measured),
        replies_per_s: per_second(replies_measured),
        ack: Percentiles::of(acks.latencies_us),
        e2e: Percentiles::of(verdict.e2e_us),
        errors: acks.errors.clone(),
        graph_calls: mock.stats.calls.load(Ordering::Relaxed),
        graph_batches: mock.stats.batches.load(Ordering::Relaxed),
        graph_faults: mock.stats.faults.load(Ordering::Relaxed),
        graph_fail: args.graph_fail,
        graph_fail_kind: args.graph_fail_kind.name(),
        server,
        bench_cpu_cores: bench_cpu,
        spike: args.spike_rate.map(|rate| {
            let stats = &load.spike_stats;
            let posts = (rate * args.spike_duration / f64::from(args.batch))
                .round()
                .max(1.0);
            let per_second = spike::SpikeReport::per_second(&verdict.reply_at_ms, from_ms as u64);
            let last_reply_ms = verdict.reply_at_ms.iter().copied().max().unwrap_or(0);
            let spike_ticks = start_marks
                .as_ref()
                .and_then(|start| start.server.as_ref())
                .zip(replies_end_marks.server.as_ref())
                .map(|(a, b)| b.total.saturating_sub(a.total));
            spike::SpikeReport {
                rate,
                duration_s: args.spike_duration,
                returning: args.spike_senders,
                per_second,
                drain_s: (f64::from(last_reply_ms) / 1000.0
                    - send_end.duration_since(started).as_secs_f64())
                .max(0.0),
                refused_503: acks.errors.get("http_503").copied().unwrap_or(0),
                retries: stats.retries.load(Ordering::Relaxed),
                gave_up: stats.gave_up.load(Ordering::Relaxed),
                late_ms_mean: stats.late_us_sum.load(Ordering::Relaxed) as f64 / posts / 1000.0,
                late_ms_max: stats.late_us_max.load(Ordering::Relaxed) as f64 / 1000.0,
                cpu_us_per_reply: spike_ticks.filter(|_| verdict.replies > 0).map(|ticks| {
                    ticks as f64 / procfs::TICKS_PER_SECOND * 1e6 / verdict.replies as f64
                }),
                max_live_conversations: args
                    .metrics
                    .as_ref()
                    .map(|_| scraped.live_conversations.load(Ordering::Relaxed)),
                max_pending_events: args
                    .metrics
                    .as_ref()
                    .map(|_| scraped.pending_events.load(Ordering::Relaxed)),
            }
        }),
    };
    if !report.correct() {
        shout(&report, &verdict.problems, verdict.problems_dropped);
    }
    Ok(report)
}

/// CPU used so far by the server and by the bench.
struct Marks {
    server: Option<CpuMark>,
    bench: Option<CpuMark>,
}

impl Marks {
    fn take(pid: Option<u32>) -> Marks {
        Marks {
            server: pid.and_then(|pid| cpu_mark(Some(pid))),
            bench: cpu_mark(None),
        }
    }
}

/// One line a second on stderr: what was sent and answered so far.
async fn progress(load: Arc<Load>, finished: Arc<AtomicBool>) {
    let mut last = (0u64, 0u64);
    let mut second = 0u64;
    let mut ticker = actix_rt::time::interval(Duration::from_secs(1));
    ticker.tick().await;
    loop {
        ticker.tick().await;
        if finished.load(Ordering::Relaxed) {
            return;
        }
        second += 1;
        let events = load.events_ok.load(Ordering::Relaxed);
        let replies = load.tracker.replies.load(Ordering::Relaxed);
        let errors = load.failures.load(Ordering::Relaxed);
        eprintln!(
            "[{second:>4}s] events {events} (+{}/s)  replies {replies} (+{}/s)  errors {errors}",
            events - last.0,
            replies - last.1
        );
        last = (events, replies);
    }
}

/// A wrong run must not go unnoticed in a scroll of figures.
fn shout(report: &Report, problems: &[String], dropped: u64) {
    eprintln!();
    eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
    eprintln!(
        "!!! REPLIES WRONG: {} missing, {} duplicate, {} unexpected",
        report.missing, report.duplicates, report.unexpected
    );
    for problem in problems {
        eprintln!("!!!   {problem}");
    }
    if dropped > 0 {
        eprintln!("!!!   ... and {dropped} more");
    }
    eprintln!("!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!");
    eprintln!();
}
