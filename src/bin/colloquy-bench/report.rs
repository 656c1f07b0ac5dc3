//! The figures of a run: rates, latency percentiles, errors, reply checks and the
//! server's memory and CPU, printed as a table or as one JSON line.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{json, Value};

use crate::spike::SpikeReport;

/// p50/p90/p99/max of a set of latencies, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Percentiles {
    pub count: usize,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    /// Nearest-rank percentiles of latencies given in µs.
    pub fn of(mut us: Vec<u32>) -> Percentiles {
        if us.is_empty() {
            return Percentiles::default();
        }
        us.sort_unstable();
        let rank = |p: f64| {
            let index = ((p / 100.0) * us.len() as f64).ceil() as usize;
            f64::from(us[index.clamp(1, us.len()) - 1]) / 1000.0
        };
        Percentiles {
            count: us.len(),
            p50: rank(50.0),
            p90: rank(90.0),
            p99: rank(99.0),
            max: f64::from(us[us.len() - 1]) / 1000.0,
        }
    }

    fn json(&self) -> Value {
        json!({"n": self.count, "p50": round3(self.p50), "p90": round3(self.p90),
               "p99": round3(self.p99), "max": round3(self.max)})
    }
}

/// The server's resources during the measured window.
#[derive(Debug, Clone, Default)]
pub struct ServerUse {
    pub pid: u32,
    pub rss_peak_mib: f64,
    pub hwm_mib: f64,
    pub cpu_cores: Option<f64>,
    pub threads: Vec<(String, f64)>,
}

#[derive(Debug, Clone, Default)]
pub struct Report {
    pub target: String,
    pub flow: &'static str,
    pub mode: &'static str,
    pub senders: u32,
    pub batch: u32,
    pub rate: Option<f64>,
    pub receipts: bool,
    pub distinct: Option<u64>,
    pub warmup_s: f64,
    pub measured_s: f64,
    pub posts: u64,
    pub events: u64,
    pub messages: u64,
    pub receipts_sent: u64,
    pub replies: u64,
    pub missing: u64,
    pub duplicates: u64,
    pub unexpected: u64,
    pub replies_to_unacked: u64,
    pub events_per_s: f64,
    pub messages_per_s: f64,
    pub replies_per_s: f64,
    pub ack: Percentiles,
    pub e2e: Percentiles,
    pub errors: BTreeMap<String, u64>,
    pub graph_calls: u64,
    pub graph_batches: u64,
    pub graph_faults: u64,
    pub graph_fail: f64,
    pub graph_fail_kind: &'static str,
    pub server: Option<ServerUse>,
    pub bench_cpu_cores: Option<f64>,
    pub spike: Option<SpikeReport>,
}

impl Report {
    /// Every reply arrived once, to the right user, and nothing else arrived.
    pub fn correct(&self) -> bool {
        self.missing == 0 && self.duplicates == 0 && self.unexpected == 0
    }

    /// Correct, and something was measured at all: what the exit status reports.
    pub fn ok(&self) -> bool {
        self.correct() && self.events > 0
    }

    /// The server's CPU time (user + system, all threads) per reply over the measured
    /// window, in µs.
    pub fn cpu_us_per_reply(&self) -> Option<f64> {
        let cores = self.server.as_ref()?.cpu_cores?;
        (self.replies_per_s > 0.0).then(|| cores * 1e6 / self.replies_per_s)
    }

    pub fn to_json(&self) -> Value {
        let cpu_us_per_reply = self.cpu_us_per_reply().map(round1);
        let server = self.server.as_ref().map(|s| {
            let threads: serde_json::Map<String, Value> = s
                .threads
                .iter()
                .map(|(name, cores)| (name.clone(), json!(round3(*cores))))
                .collect();
            json!({"pid": s.pid, "rss_peak_mib": round3(s.rss_peak_mib),
                   "vm_hwm_mib": round3(s.hwm_mib), "cpu_cores": s.cpu_cores.map(round3),
                   "cpu_us_per_reply": cpu_us_per_reply, "threads": threads})
        });
        json!({
            "target": self.target, "flow": self.flow, "mode": self.mode,
            "senders": self.senders, "batch": self.batch, "rate": self.rate,
            "receipts": self.receipts, "distinct": self.distinct,
            "warmup_s": self.warmup_s, "measured_s": round3(self.measured_s),
            "posts": self.posts, "events": self.events, "messages": self.messages,
            "receipts_sent": self.receipts_sent, "replies": self.replies,
            "missing": self.missing, "duplicates": self.duplicates,
            "unexpected": self.unexpected, "replies_to_unacked": self.replies_to_unacked,
            "events_per_s": round1(self.events_per_s),
            "messages_per_s": round1(self.messages_per_s),
            "replies_per_s": round1(self.replies_per_s),
            "ack_ms": self.ack.json(), "e2e_ms": self.e2e.json(),
            "errors": self.errors,
            "graph": {"calls": self.graph_calls, "batches": self.graph_batches,
                      "faults": self.graph_faults,
                      "fail": self.graph_fail, "fail_kind": self.graph_fail_kind},
            "server": server,
            "bench_cpu_cores": self.bench_cpu_cores.map(round3),
            "every_acked_answered": self.missing == 0,
            "spike": self.spike.as_ref().map(SpikeReport::json),
            "ok": self.ok(),
        })
    }

    pub fn table(&self) -> String {
        let mut out = String::new();
        let load = match (self.rate, self.distinct) {
            _ if self.spike.is_some() => "spike".to_string(),
            (Some(rate), _) => format!("open loop, {rate} events/s over {} senders", self.senders),
            (None, _) => format!("closed loop, {} virtual users", self.senders),
        };
        let _ = writeln!(out, "colloquy-bench → {}", self.target);
        let _ = writeln!(
            out,
            "  load       {load}, {} event(s)/POST, flow {}{}{}",
            self.batch,
            self.flow,
            if self.receipts { ", receipts" } else { "" },
            self.distinct
                .map(|n| format!(", {n} distinct senders"))
                .unwrap_or_default()
        );
        let _ = writeln!(
            out,
            "  window     {:.1} s measured after {:.1} s warm-up",
            self.measured_s, self.warmup_s
        );
        let _ = writeln!(
            out,
            "  rates      {:.0} events/s, {:.0} messages/s, {:.0} replies/s",
            self.events_per_s, self.messages_per_s, self.replies_per_s
        );
        let _ = writeln!(
            out,
            "  latency    {:>9} {:>9} {:>9} {:>9} (ms)",
            "p50", "p90", "p99", "max"
        );
        for (name, p) in [("ack", &self.ack), ("end-to-end", &self.e2e)] {
            let _ = writeln!(
                out,
                "  {name:<10} {:>9.3} {:>9.3} {:>9.3} {:>9.3}   ({} samples)",
                p.p50, p.p90, p.p99, p.max, p.count
            );
        }
        let _ = writeln!(
            out,
            "  totals     {} POSTs, {} events ({} messages, {} receipts) acked, {} replies",
            self.posts, self.events, self.messages, self.receipts_sent, self.replies
        );
        let _ = writeln!(
            out,
            "  checks     {} missing, {} duplicate, {} unexpected, {} to unacked POSTs",
            self.missing, self.duplicates, self.unexpected, self.replies_to_unacked
        );
        let errors = if self.errors.is_empty() {
            "none".to_string()
        } else {
            self.errors
                .iter()
                .map(|(kind, n)| format!("{kind} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(out, "  errors     {errors}");
        let _ = writeln!(
            out,
            "  graph mock {} Send API requests ({} batch calls), {} faults injected ({} at {})",
            self.graph_calls,
            self.graph_batches,
            self.graph_faults,
            self.graph_fail_kind,
            self.graph_fail
        );
        if let Some(s) = &self.server {
            let per_reply = self
                .cpu_us_per_reply()
                .map(|us| format!(" ({us:.0} µs per reply)"))
                .unwrap_or_default();
            let cpu = s
                .cpu_cores
                .map(|c| format!(", {c:.2} cores{per_reply}"))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "  server     pid {}: peak RSS {:.1} MiB (VmHWM {:.1} MiB){cpu}",
                s.pid, s.rss_peak_mib, s.hwm_mib
            );
            for (name, cores) in s.threads.iter().take(8) {
                let _ = writeln!(out, "               {cores:>5.2} cores  {name}");
            }
        }
        if let Some(cores) = self.bench_cpu_cores {
            let _ = writeln!(out, "  bench      {cores:.2} cores");
        }
        if let Some(spike) = &self.spike {
            self.spike_table(&mut out, spike);
        }
        let verdict = match (self.correct(), self.events) {
            (false, _) => "REPLIES WRONG",
            (true, 0) => "NOTHING ACKNOWLEDGED",
            (true, _) => "every reply correct",
        };
        let _ = writeln!(out, "  verdict    {verdict}");
        out
    }
}

impl Report {
    fn spike_table(&self, out: &mut String, spike: &SpikeReport) {
        let users = match spike.returning {
            Some(n) => format!("{n} returning users"),
            None => "new users".to_string(),
        };
        let (min, median) = spike.during();
        let _ = writeln!(
            out,
            "  spike      {} events/s for {} s from {users}; late POSTs mean {:.1} ms, max {:.1} ms",
            spike.rate, spike.duration_s, spike.late_ms_mean, spike.late_ms_max
        );
        let _ = writeln!(
            out,
            "  goodput    during the spike min {min}/s, median {median}/s; last reply {:.1} s after it",
            spike.drain_s
        );
        let seconds: Vec<String> = spike.per_second.iter().map(u64::to_string).collect();
        let _ = writeln!(out, "  per second {}", seconds.join(" "));
        let _ = writeln!(
            out,
            "  refusals   {} answered 503, {} redeliveries, {} POSTs never taken; every acked event answered: {}",
            spike.refused_503,
            spike.retries,
            spike.gave_up,
            if self.missing == 0 { "yes" } else { "NO" }
        );
        if let Some(us) = spike.cpu_us_per_reply {
            let _ = writeln!(out, "  server CPU {us:.0} µs per reply");
        }
        if let Some(live) = spike.max_live_conversations {
            let _ = writeln!(
                out,
                "  gauges     max live conversations {live}, max pending events {}",
                spike.max_pending_events.unwrap_or(0)
            );
        }
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let p = Percentiles::of((1..=100).map(|ms| ms * 1000).collect());
        assert_eq!((p.p50, p.p90, p.p99, p.max), (50.0, 90.0, 99.0, 100.0));
        assert_eq!(Percentiles::of(vec![7000]).p99, 7.0);
        assert_eq!(Percentiles::of(Vec::new()).count, 0);
    }

    #[test]
    fn a_run_with_a_missing_reply_is_not_correct() {
        let mut report = Report {
            events: 1,
            ..Report::default()
        };
        assert!(report.ok());
        report.missing = 1;
        assert!(!report.correct());
        assert_eq!(report.to_json()["ok"], json!(false));
    }
}
