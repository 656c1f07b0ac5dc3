//! Prometheus metrics: what the engine counts and how it renders them for `GET /metrics`.
//!
//! One `Metrics` per running app, with its own registry (so tests can run several apps in
//! one process). Modules record through the typed methods here and never build metric
//! names themselves. Labels carry kinds, statuses and Graph codes only, never ids or
//! tokens, so cardinality stays bounded and nothing secret is exported. The process's own
//! figures (`process_resident_memory_bytes`, CPU, open files, threads) keep the standard
//! unprefixed names Prometheus users look for.

use std::sync::Arc;
use std::time::Duration;

use std::sync::atomic::Ordering::Relaxed;

use prometheus::core::Collector;
use prometheus::{
    CounterVec, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, Opts, Registry, TextEncoder,
};

use crate::engine::load::Load;
use crate::store::CommitStats;
use crate::store::DiskSizeProbe;

/// Latency buckets (seconds) from 100 µs to 5 s: flushes and acks live in the low ms.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

pub struct Metrics {
    registry: Registry,
    webhook_requests: IntCounterVec,
    webhook_connections: IntCounterVec,
    webhook_moves: IntCounterVec,
    webhook_on_engine_thread: IntGauge,
    engine_cpu: IntGauge,
    engine_cpu_releases: IntCounter,
    graph_batch_calls: IntCounter,
    graph_batched_requests: IntCounter,
    events: IntCounterVec,
    events_acked: IntCounter,
    events_journalled_late: IntCounter,
    flow_runs: IntCounterVec,
    replies: IntCounterVec,
    watermark_updates: IntCounterVec,
    events_unknown_page: IntCounterVec,
    ack_latency: Histogram,
    flush_latency: HistogramVec,
    pending_events: IntGauge,
    pending_replies: IntGauge,
    live_conversations: IntGauge,
    store_cycles: IntCounter,
    store_operations: IntCounter,
    store_lingers: IntCounter,
    store_failed_cycles: IntCounter,
    store_flushes: IntCounter,
    store_batches: IntCounter,
    store_cache_misses: IntCounter,
    store_cache_bytes: IntGauge,
    store_seconds: CounterVec,
    store_disk_bytes: IntGauge,
    load: Arc<Load>,
    store_stats: Arc<CommitStats>,
    store_disk: Option<DiskSizeProbe>,
    /// Unprefixed: the process collector's standard names.
    process_registry: Registry,
    // Two scrapes at once must not both add the same difference to a counter.
    catching_up: std::sync::Mutex<()>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// Adds `metric` to `registry` and hands it back for recording.
fn registered<M: Collector + Clone + 'static>(registry: &Registry, metric: M) -> M {
    registry
        .register(Box::new(metric.clone()))
        .expect("unique metric name");
    metric
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let metric = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registered(registry, metric)
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    registered(registry, IntCounter::new(name, help).expect("valid metric"))
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    registered(registry, IntGauge::new(name, help).expect("valid metric"))
}

impl Metrics {
    /// `store_stats` are the committer's counters, read when the metrics are rendered.
    pub fn new(load: Arc<Load>, store_stats: Arc<CommitStats>) -> Metrics {
        let registry = Registry::new_custom(Some("colloquy".into()), None).expect("valid prefix");
        let events_acked = counter(
            &registry,
            "events_acked_total",
            "Events acknowledged with 200",
        );
        let events_journalled_late = counter(
            &registry,
            "events_journalled_late_total",
            "Events whose turn had not committed by the acknowledgement deadline, journalled instead.",
        );
        let ack_latency = registered(
            &registry,
            Histogram::with_opts(
                HistogramOpts::new(
                    "webhook_ack_seconds",
                    "Webhook POST from first byte read to the durable 200",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
            )
            .expect("valid metric"),
        );
        let flush_latency = registered(
            &registry,
            HistogramVec::new(
                HistogramOpts::new(
                    "store_flush_wait_seconds",
                    "Time a writer waited for a durable flush",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["writer"],
            )
            .expect("valid metric"),
        );
        let store_seconds = registered(
            &registry,
            CounterVec::new(
                Opts::new(
                    "store_commit_seconds_total",
                    "Time the committer spent per phase: apply (the batch), flush (sled's log \
                     writes and fdatasync), linger (a small cycle waiting for more writes)",
                ),
                &["phase"],
            )
            .expect("valid metric"),
        );
        Metrics {
            webhook_requests: counter_vec(
                &registry,
                "webhook_requests_total",
                "Webhook requests by method and answered status",
                &["method", "status"],
            ),
            webhook_connections: counter_vec(
                &registry,
                "webhook_connections_total",
                "Connections the webhook accepted, by the threads serving them (engine, workers)",
                &["thread"],
            ),
            webhook_moves: counter_vec(
                &registry,
                "webhook_moves_total",
                "Moves of the webhook's new connections between the engine's thread and the \
                 HTTP workers, by where they went",
                &["to"],
            ),
            webhook_on_engine_thread: gauge(
                &registry,
                "webhook_on_engine_thread",
                "1 while the engine's own thread takes the webhook's new connections",
            ),
            engine_cpu: gauge(
                &registry,
                "engine_cpu",
                "The CPU the engine's thread is pinned to; -1 while it is not pinned",
            ),
            graph_batch_calls: counter(
                &registry,
                "graph_batch_calls_total",
                "Graph batch calls made for replies ready at the same moment",
            ),
            graph_batched_requests: counter(
                &registry,
                "graph_batched_requests_total",
                "Send API requests made inside Graph batch calls",
            ),
            engine_cpu_releases: counter(
                &registry,
                "engine_cpu_releases_total",
                "Times the engine's thread let go of its CPU because it waited there longer \
                 than it ran",
            ),
            events: counter_vec(
                &registry,
                "events_total",
                "Inbound events handled by conversations, by kind and outcome",
                &["kind", "outcome"],
            ),
            flow_runs: counter_vec(
                &registry,
                "flow_runs_total",
                "Flow runs by outcome (ok, failed)",
                &["outcome"],
            ),
            replies: counter_vec(
                &registry,
                "replies_total",
                "Send API outcomes by page: sent, retried or failed, with the Graph error code",
                &["outcome", "code", "page"],
            ),
            watermark_updates: counter_vec(
                &registry,
                "watermark_updates_total",
                "Delivery and read watermarks that moved forward",
                &["kind"],
            ),
            events_unknown_page: counter_vec(
                &registry,
                "events_unknown_page_total",
                "Events of pages missing from the pages file: acknowledged, never handled",
                &["page"],
            ),
            pending_events: gauge(
                &registry,
                "pending_events",
                "Events acknowledged and not yet handled",
            ),
            pending_replies: gauge(
                &registry,
                "pending_replies",
                "Replies committed and not yet sent or failed",
            ),
            live_conversations: gauge(&registry, "live_conversations", "Conversation actors alive"),
            store_cycles: counter(
                &registry,
                "store_commit_cycles_total",
                "Group-commit cycles (one sled batch each)",
            ),
            store_operations: counter(
                &registry,
                "store_commit_operations_total",
                "Write operations carried by those cycles",
            ),
            store_lingers: counter(
                &registry,
                "store_commit_lingers_total",
                "Cycles that waited for more writes before starting (moderate load)",
            ),
            store_flushes: counter(
                &registry,
                "store_commit_flushes_total",
                "Cycles that flushed (and fdatasynced) because a write in them asked for durability",
            ),
            store_batches: counter(
                &registry,
                "store_commit_batches_total",
                "sled batches applied: one per cycle with writes, more for a cycle past 256 keys",
            ),
            store_cache_misses: counter(
                &registry,
                "store_cache_misses_total",
                "Pages sled read back from its log because its page cache did not hold them",
            ),
            store_cache_bytes: gauge(
                &registry,
                "store_cache_bytes",
                "sled's page cache capacity now (it grows while its pages do not fit)",
            ),
            store_failed_cycles: counter(
                &registry,
                "store_commit_failures_total",
                "Cycles whose batch or flush failed (the store stops after an I/O error)",
            ),
            store_seconds,
            store_disk_bytes: gauge(
                &registry,
                "store_disk_bytes",
                "Size of sled's files in the data directory",
            ),
            events_acked,
            events_journalled_late,
            ack_latency,
            flush_latency,
            registry,
            load,
            store_stats,
            store_disk: None,
            process_registry: process_registry(),
            catching_up: std::sync::Mutex::new(()),
        }
    }

    /// Reports the data directory's size (`colloquy_store_disk_bytes`) at each scrape.
    pub fn with_store_disk_size(mut self, probe: DiskSizeProbe) -> Metrics {
        self.store_disk = Some(probe);
        self
    }

    pub fn webhook_request(&self, method: &str, status: u16) {
        self.webhook_requests
            .with_label_values(&[method, &status.to_string()])
            .inc();
    }

    /// A connection accepted by `thread` (`engine` or `workers`).
    pub fn webhook_connection(&self, thread: &str) {
        self.webhook_connections.with_label_values(&[thread]).inc();
    }

    /// Which threads take the webhook's new connections now (`webhook::steering`);
    /// `moved` counts it as a move.
    pub fn set_webhook_threads(&self, thread: &str, moved: bool) {
        self.webhook_on_engine_thread
            .set(i64::from(thread == "engine"));
        if moved {
            self.webhook_moves.with_label_values(&[thread]).inc();
        }
    }

    /// The CPU the engine's thread is pinned to now, if any (`engine::affinity`).
    pub fn set_engine_cpu(&self, cpu: Option<usize>) {
        self.engine_cpu
            .set(cpu.and_then(|cpu| i64::try_from(cpu).ok()).unwrap_or(-1));
    }

    pub fn engine_cpu_released(&self) {
        self.engine_cpu_releases.inc();
    }

    pub fn acked(&self, events: usize, latency: Duration) {
        self.events_acked.inc_by(events as u64);
        self.ack_latency.observe(latency.as_secs_f64());
    }

    pub fn events_journalled_late(&self, events: usize) {
        self.events_journalled_late.inc_by(events as u64);
    }

    pub fn event(&self, kind: &str, outcome: &str) {
        self.events.with_label_values(&[kind, outcome]).inc();
    }

    pub fn flow_run(&self, ok: bool) {
        let outcome = if ok { "ok" } else { "failed" };
        self.flow_runs.with_label_values(&[outcome]).inc();
    }

    /// `outcome` is `sent`, `retried` or `failed`; `code` the Graph code or `none`.
    /// One Send API outcome of `page` (a page id is not a secret, and a deployment has
    /// few pages, so the label stays small).
    pub fn reply(&self, page: &str, outcome: &str, code: Option<i64>) {
        let code = code.map_or_else(|| "none".to_string(), |c| c.to_string());
        self.replies
            .with_label_values(&[outcome, &code, page])
            .inc();
    }

    /// One event of a page the pages file does not list (signed by a configured app, so
    /// the label's values are pages still subscribed to it: few).
    pub fn event_of_unknown_page(&self, page: &str) {
        self.events_unknown_page.with_label_values(&[page]).inc();
    }

    pub fn watermark_moved(&self, kind: &str) {
        self.watermark_updates.with_label_values(&[kind]).inc();
    }

    /// One Graph batch call made, carrying `requests` Send API requests.
    pub fn graph_batch(&self, requests: usize) {
        self.graph_batch_calls.inc();
        self.graph_batched_requests.inc_by(requests as u64);
    }

    pub fn flush_waited(&self, writer: &str, waited: Duration) {
        self.flush_latency
            .with_label_values(&[writer])
            .observe(waited.as_secs_f64());
    }

    pub fn set_live_conversations(&self, live: usize) {
        self.live_conversations.set(live as i64);
    }

    /// Brings the store counters up to the committer's own (which only ever grow).
    fn catch_up_store_stats(&self) {
        let _one_at_a_time = self
            .catching_up
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let stats = &self.store_stats;
        catch_up(&self.store_cycles, stats.cycles.load(Relaxed));
        catch_up(&self.store_operations, stats.operations.load(Relaxed));
        catch_up(&self.store_lingers, stats.lingers.load(Relaxed));
        catch_up(&self.store_failed_cycles, stats.failed_cycles.load(Relaxed));
        catch_up(&self.store_flushes, stats.flushes.load(Relaxed));
        catch_up(&self.store_batches, stats.batches.load(Relaxed));
        catch_up(&self.store_cache_misses, stats.cache_misses.load(Relaxed));
        self.store_cache_bytes
            .set(i64::try_from(stats.cache_bytes.load(Relaxed)).unwrap_or(i64::MAX));
        for (phase, micros) in [
            ("apply", &stats.apply_micros),
            ("flush", &stats.flush_micros),
            ("linger", &stats.linger_micros),
        ] {
            let counter = self.store_seconds.with_label_values(&[phase]);
            let total = micros.load(Relaxed) as f64 / 1e6;
            let behind = total - counter.get();
            if behind > 0.0 {
                counter.inc_by(behind);
            }
        }
    }

    /// Registers a cluster node's figures (call once; a single node has none).
    pub fn cluster(&self) -> ClusterMetrics {
        let registry = &self.registry;
        ClusterMetrics {
            partitions_owned: gauge(
                registry,
                "cluster_partitions_owned",
                "Partitions whose lease this node holds",
            ),
            consumer_lag: gauge(
                registry,
                "cluster_consumer_lag",
                "Events of this node's partitions stored in the cluster and not yet delivered to it",
            ),
            failovers: counter(
                registry,
                "cluster_failovers_total",
                "Partitions this node took over from a node whose lease ran out",
            ),
            partitions_taken: counter(
                registry,
                "cluster_partitions_taken_total",
                "Partitions this node took (free, given back or run out)",
            ),
            turns_replayed: counter(
                registry,
                "cluster_turns_replayed_total",
                "Turns and send outcomes of other nodes applied to this node's store on taking a partition",
            ),
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        self.pending_events.set(self.load.pending_events() as i64);
        self.pending_replies.set(self.load.pending_replies() as i64);
        self.catch_up_store_stats();
        if let Some(bytes) = self.store_disk.as_ref().and_then(DiskSizeProbe::bytes) {
            self.store_disk_bytes
                .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
        let mut families = self.registry.gather();
        families.extend(self.process_registry.gather());
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for the text format.
        let _ = TextEncoder::new().encode(&families, &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// A cluster node's own figures (`Metrics::cluster`).
#[derive(Clone)]
pub struct ClusterMetrics {
    pub partitions_owned: IntGauge,
    pub consumer_lag: IntGauge,
    pub failovers: IntCounter,
    pub partitions_taken: IntCounter,
    pub turns_replayed: IntCounter,
}

/// The process's memory, CPU, open files and threads, read from /proc at each scrape.
fn process_registry() -> Registry {
    let registry = Registry::new();
    #[cfg(target_os = "linux")]
    registry
        .register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))
        .expect("one process collector per registry");
    registry
}

/// Raises a counter to `total`, a running total kept elsewhere.
fn catch_up(counter: &IntCounter, total: u64) {
    counter.inc_by(total.saturating_sub(counter.get()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_values_appear_in_the_exposition() {
        let load = Arc::new(Load::default());
        load.events_in(3);
        let stats = Arc::new(CommitStats::default());
        stats.cycles.store(4, Relaxed);
        stats.operations.store(9, Relaxed);
        stats.flush_micros.store(1_500_000, Relaxed);
        stats.lingers.store(2, Relaxed);
        stats.linger_micros.store(250_000, Relaxed);
        stats.failed_cycles.store(1, Relaxed);
        stats.flushes.store(3, Relaxed);
        stats.batches.store(6, Relaxed);
        stats.cache_misses.store(42, Relaxed);
        stats.cache_bytes.store(12 * 1024 * 1024, Relaxed);
        let metrics = Metrics::new(load, stats.clone());
        metrics.webhook_request("POST", 200);
        metrics.acked(2, Duration::from_millis(2));
        metrics.reply("1000", "failed", Some(551));
        metrics.event("text", "handled");
        let text = metrics.render();
        assert!(
            text.contains(r#"colloquy_webhook_requests_total{method="POST",status="200"} 1"#),
            "{text}"
        );
        assert!(text.contains("colloquy_events_acked_total 2"), "{text}");
        assert!(
            text.contains(r#"colloquy_replies_total{code="551",outcome="failed",page="1000"} 1"#),
            "{text}"
        );
        assert!(text.contains("colloquy_pending_events 3"), "{text}");
        assert!(
            text.contains("colloquy_webhook_ack_seconds_count 1"),
            "{text}"
        );
        for line in [
            "colloquy_store_commit_cycles_total 4",
            "colloquy_store_commit_operations_total 9",
            r#"colloquy_store_commit_seconds_total{phase="flush"} 1.5"#,
            "colloquy_store_commit_lingers_total 2",
            "colloquy_store_commit_failures_total 1",
            "colloquy_store_commit_flushes_total 3",
            "colloquy_store_commit_batches_total 6",
            "colloquy_store_cache_misses_total 42",
            "colloquy_store_cache_bytes 12582912",
            r#"colloquy_store_commit_seconds_total{phase="linger"} 0.25"#,
        ] {
            assert!(text.contains(line), "{line} missing from {text}");
        }
        // A second render reports the committer's totals, not their sum twice.
        stats.cycles.store(5, Relaxed);
        let text = metrics.render();
        assert!(
            text.contains("colloquy_store_commit_cycles_total 5"),
            "{text}"
        );
    }

    /// The value of an unlabelled sample in a text exposition.
    fn sample(text: &str, name: &str) -> Option<f64> {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|value| value.parse().ok())
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_process_reports_its_memory_under_the_standard_name() {
        let metrics = Metrics::new(Arc::new(Load::default()), Arc::new(CommitStats::default()));
        let text = metrics.render();
        let rss = sample(&text, "process_resident_memory_bytes");
        assert!(rss.is_some_and(|bytes| bytes > 0.0), "{text}");
        assert!(!text.contains("colloquy_process_"), "{text}");
    }

    #[test]
    fn the_store_size_is_reported_while_the_store_is_open() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(dir.path()).unwrap();
        let record = crate::store::JournalRecord {
            page_id: "page".into(),
            channel: Default::default(),
            standby: false,
            event: serde_json::json!({"sender": {"id": "user"}, "message": {"mid": "m.1"}}),
        };
        // Written and flushed, so sled's log file has a size.
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(store.append_journal(vec![record]))
            .unwrap();
        let metrics = Metrics::new(Arc::new(Load::default()), store.commit_stats())
            .with_store_disk_size(store.disk_size_probe());
        let text = metrics.render();
        let bytes = sample(&text, "colloquy_store_disk_bytes");
        assert!(bytes.is_some_and(|bytes| bytes > 0.0), "{text}");
        // The probe does not keep the store open.
        let release = store.release_watch();
        drop(store);
        assert!(release.is_released());
        metrics.render();
    }

    #[test]
    fn two_apps_in_one_process_keep_separate_metrics() {
        let stats = Arc::new(CommitStats::default());
        let a = Metrics::new(Arc::new(Load::default()), stats.clone());
        let b = Metrics::new(Arc::new(Load::default()), stats);
        a.webhook_request("GET", 403);
        assert!(!b.render().contains("status=\"403\""));
    }
}
