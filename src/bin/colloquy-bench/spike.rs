//! The spike: an open-loop burst of webhook POSTs at a fixed rate for a fixed time, from
//! new users (a fresh sender id per message) or from a fixed set of returning users, with
//! every refused or unanswered POST redelivered after the server's `Retry-After` (as
//! Facebook does), so every event is eventually taken. Also the `/metrics` scraper that
//! watches the live-actor gauge during the run, and the per-second account of replies.
//!
//! It only drives load and counts; whether each reply was right is the tracker's job, and
//! the figures are printed by `report`. It must not pace itself by the server's answers
//! (that would hide an overload): POSTs leave on schedule whatever came back before.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_rt::time::{sleep, sleep_until};
use futures_util::future::join_all;
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use crate::load::{client, Answer, Load};
use crate::tracker::Ack;

/// POSTs in flight per client thread; beyond it a due POST waits for an answer (the
/// report counts how late POSTs left, so a generator that cannot keep up is visible).
const MAX_IN_FLIGHT: usize = 8192;
/// Wait before redelivering a POST the server refused without a `Retry-After`, or did
/// not answer at all.
const DEFAULT_RETRY: Duration = Duration::from_secs(1);
/// How often `/metrics` is read during the run.
const SCRAPE_EVERY: Duration = Duration::from_millis(100);

/// What the spike is, fixed before it starts.
#[derive(Debug, Clone, Copy)]
pub struct SpikePlan {
    /// Events per second offered.
    pub rate: f64,
    pub duration: Duration,
    /// Returning users: events cycle over this many sender ids. New users otherwise.
    pub returning: Option<u32>,
    /// No redelivery starts after this.
    pub retry_deadline: Instant,
}

/// Counters of the spike's redeliveries, shared by the client threads.
#[derive(Default)]
pub struct SpikeStats {
    /// POSTs sent again after a refusal or no answer.
    pub retries: AtomicU64,
    /// POSTs never acknowledged before the retry deadline (their events were never taken).
    pub gave_up: AtomicU64,
    /// Sum and maximum of how late POSTs left against their schedule, in µs.
    pub late_us_sum: AtomicU64,
    pub late_us_max: AtomicU64,
}

/// Runs this thread's share of the spike (every `threads`-th POST) to its end: every POST
/// acknowledged or given up.
pub async fn run_thread(
    load: Arc<Load>,
    spike: SpikePlan,
    stats: Arc<SpikeStats>,
    thread: u32,
    threads: u32,
) {
    let plan = &load.plan;
    let batch = u64::from(plan.batch);
    let total_posts = (spike.rate * spike.duration.as_secs_f64() / batch as f64).round() as u64;
    let period = batch as f64 / spike.rate;
    let client = client(MAX_IN_FLIGHT);
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let returning: Vec<Arc<str>> = spike
        .returning
        .map(|n| (0..u64::from(n)).map(|i| load.psid(i)).collect())
        .unwrap_or_default();
    let mut tasks = Vec::new();
    let mut post = u64::from(thread);
    while post < total_posts {
        let due = plan.warmup_end + Duration::from_secs_f64(post as f64 * period);
        sleep_until(due.into()).await;
        let psids: Vec<Arc<str>> = if returning.is_empty() {
            load.fresh_psids(u64::MAX, plan.batch)
        } else {
            (0..batch)
                .map(|j| returning[((post * batch + j) % returning.len() as u64) as usize].clone())
                .collect()
        };
        let late = u64::try_from(due.elapsed().as_micros()).unwrap_or(u64::MAX);
        stats.late_us_sum.fetch_add(late, Ordering::Relaxed);
        stats.late_us_max.fetch_max(late, Ordering::Relaxed);
        let (load, client, in_flight, stats) = (
            load.clone(),
            client.clone(),
            in_flight.clone(),
            stats.clone(),
        );
        tasks.push(actix_rt::spawn(async move {
            deliver(
                &load,
                &client,
                &in_flight,
                &stats,
                spike.retry_deadline,
                &psids,
            )
            .await;
        }));
        post += u64::from(threads);
    }
    join_all(tasks).await;
}

/// Delivers one POST until it is acknowledged, redelivering after each refusal.
async fn deliver(
    load: &Load,
    client: &awc::Client,
    in_flight: &Semaphore,
    stats: &SpikeStats,
    retry_deadline: Instant,
    psids: &[Arc<str>],
) {
    let messages = load.tracker.register(psids, false);
    let ns: Vec<u64> = messages.iter().map(|m| m.n).collect();
    let body = load.body(&messages, &[]);
    loop {
        let answer = {
            let Ok(_permit) = in_flight.acquire().await else {
                return;
            };
            let sent = Instant::now();
            let answer = load.send(client, body.clone()).await;
            load.record(&messages, messages.len() as u64, sent, &answer);
            answer
        };
        let (ack, retry_after) = match answer {
            Answer::Ok => {
                load.tracker.ack(&ns, Ack::Ok);
                return;
            }
            Answer::Failed(_, ack, retry_after) => (ack, retry_after),
        };
        // A little spread, so refused POSTs do not all come back in the same instant.
        let wait = retry_after
            .unwrap_or(DEFAULT_RETRY)
            .mul_f64(1.0 + rand::random::<f64>() * 0.1);
        if Instant::now() + wait > retry_deadline {
            load.tracker.ack(&ns, ack);
            stats.gave_up.fetch_add(1, Ordering::Relaxed);
            return;
        }
        sleep(wait).await;
        stats.retries.fetch_add(1, Ordering::Relaxed);
    }
}

/// The highest values of the engine's gauges seen on `/metrics` during the run.
#[derive(Default)]
pub struct Scraped {
    pub live_conversations: AtomicU64,
    pub pending_events: AtomicU64,
    pub scrapes: AtomicU64,
}

/// Reads `url` (the server's `/metrics`) every 100 ms until `finished`, keeping the
/// maximum of the live-conversation and pending-event gauges.
pub async fn scrape(
    url: String,
    scraped: Arc<Scraped>,
    finished: Arc<std::sync::atomic::AtomicBool>,
) {
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(2))
        .finish();
    while !finished.load(Ordering::Relaxed) {
        if let Ok(mut response) = client.get(&url).send().await {
            if let Ok(body) = response.body().limit(4 * 1024 * 1024).await {
                let text = String::from_utf8_lossy(&body);
                if let Some(live) = gauge(&text, "colloquy_live_conversations") {
                    scraped
                        .live_conversations
                        .fetch_max(live, Ordering::Relaxed);
                }
                if let Some(pending) = gauge(&text, "colloquy_pending_events") {
                    scraped.pending_events.fetch_max(pending, Ordering::Relaxed);
                }
                scraped.scrapes.fetch_add(1, Ordering::Relaxed);
            }
        }
        sleep(SCRAPE_EVERY).await;
    }
}

/// The value of an unlabelled gauge in Prometheus text.
fn gauge(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix(name)?.strip_prefix(' ')?;
        value.trim().parse::<f64>().ok().map(|v| v.max(0.0) as u64)
    })
}

/// The spike's own figures, beside the run's usual ones.
#[derive(Debug, Clone, Default)]
pub struct SpikeReport {
    pub rate: f64,
    pub duration_s: f64,
    pub returning: Option<u32>,
    /// Correct replies in each second from the spike's start to the last reply.
    pub per_second: Vec<u64>,
    /// Seconds from the end of the spike to the last reply.
    pub drain_s: f64,
    pub refused_503: u64,
    pub retries: u64,
    pub gave_up: u64,
    pub late_ms_mean: f64,
    pub late_ms_max: f64,
    /// Server CPU (utime + stime) from the spike's start to the last reply, per reply.
    pub cpu_us_per_reply: Option<f64>,
    pub max_live_conversations: Option<u64>,
    pub max_pending_events: Option<u64>,
}

impl SpikeReport {
    /// Replies per second from a list of reply arrival times (ms since the run began).
    pub fn per_second(reply_at_ms: &[u32], spike_start_ms: u64) -> Vec<u64> {
        let mut seconds: Vec<u64> = Vec::new();
        for &ms in reply_at_ms {
            let since = u64::from(ms).saturating_sub(spike_start_ms) / 1000;
            let index = since as usize;
            if seconds.len() <= index {
                seconds.resize(index + 1, 0);
            }
            seconds[index] += 1;
        }
        seconds
    }

    /// The smallest and the median of the per-second replies while the spike lasted.
    pub fn during(&self) -> (u64, u64) {
        let whole = self.duration_s.floor() as usize;
        let mut during: Vec<u64> = (0..whole)
            .map(|s| self.per_second.get(s).copied().unwrap_or(0))
            .collect();
        if during.is_empty() {
            return (0, 0);
        }
        during.sort_unstable();
        (during[0], during[during.len() / 2])
    }

    pub fn json(&self) -> Value {
        let (min, median) = self.during();
        json!({
            "rate": self.rate, "duration_s": self.duration_s, "returning": self.returning,
            "replies_per_second": self.per_second,
            "during_min": min, "during_median": median,
            "drain_s": (self.drain_s * 10.0).round() / 10.0,
            "refused_503": self.refused_503, "retries": self.retries, "gave_up": self.gave_up,
            "late_ms_mean": (self.late_ms_mean * 10.0).round() / 10.0,
            "late_ms_max": (self.late_ms_max * 10.0).round() / 10.0,
            "cpu_us_per_reply": self.cpu_us_per_reply.map(|c| c.round()),
            "max_live_conversations": self.max_live_conversations,
            "max_pending_events": self.max_pending_events,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauges_are_read_by_exact_name() {
        let text = "# HELP colloquy_live_conversations x\ncolloquy_live_conversations_total 9\ncolloquy_live_conversations 42\n";
        assert_eq!(gauge(text, "colloquy_live_conversations"), Some(42));
        assert_eq!(gauge(text, "colloquy_pending_events"), None);
    }

    #[test]
    fn replies_are_counted_per_second_from_the_spike_start() {
        let seconds = SpikeReport::per_second(&[500, 1500, 1999, 2000, 4100], 1000);
        assert_eq!(seconds, vec![3, 1, 0, 1]);
        let report = SpikeReport {
            duration_s: 3.0,
            per_second: seconds,
            ..SpikeReport::default()
        };
        assert_eq!(report.during(), (0, 1));
    }
}
