//! The command line of `colloquy-bench`: what to drive, how hard, and what to expect back.

use std::net::SocketAddr;

use clap::{Parser, ValueEnum};

/// Drives signed webhook POSTs at a running colloquy, serves the mock Graph API its
/// replies go to, checks every reply and reports throughput, latency and memory.
#[derive(Debug, Parser)]
#[command(name = "colloquy-bench", version)]
pub struct Args {
    /// Webhook URL of the colloquy under test; several, comma-separated, for the nodes of
    /// a cluster (POSTs take turns among them).
    #[arg(long, default_value = "http://127.0.0.1:8080/webhook")]
    pub target: String,
    /// App secret the server verifies `X-Hub-Signature-256` with.
    #[arg(long, env = "MESSENGER_APP_SECRET", hide_env_values = true)]
    pub app_secret: String,
    /// Page id put in every entry (`entry[].id`, `recipient.id`); several, comma-separated,
    /// spread the senders over that many pages (each sender always writes to one; run the
    /// server with a pages file listing them; use --receipts with one page only).
    #[arg(long, default_value = "1000")]
    pub page_id: String,
    /// Where the mock Graph API listens; run the server with
    /// MESSENGER_GRAPH_URL=http://<this address>/v21.0.
    #[arg(long, default_value = "127.0.0.1:9999")]
    pub graph_bind: SocketAddr,
    /// Worker threads of the mock Graph API.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub graph_workers: u16,
    /// Share of Send API calls the mock answers with a fault (0 to 1).
    #[arg(long, default_value_t = 0.0, value_parser = probability)]
    pub graph_fail: f64,
    /// The fault injected: HTTP 500 (Graph code 2), Graph code 613 (rate limit), or a
    /// 30 s stall followed by a 500 (a call that times out never delivers).
    #[arg(long, value_enum, default_value = "500")]
    pub graph_fail_kind: FaultKind,
    /// Closed loop: concurrent virtual users, each sending one POST and waiting for its
    /// reply(ies) before the next. Open loop (--rate): the sender ids events come from.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    pub senders: u32,
    /// Open loop: events per second, whatever the replies do.
    #[arg(long, value_parser = positive)]
    pub rate: Option<f64>,
    /// Events per POST, each from another sender id, all in one entry.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub batch: u32,
    /// Also send a delivery and a read receipt for each reply already seen (they must
    /// not be answered).
    #[arg(long)]
    pub receipts: bool,
    /// Send N messages, each from a new sender id, then stop (no --duration bound unless
    /// given).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub distinct: Option<u64>,
    /// Seconds of measured load after the warm-up [default: 10; unbounded with --distinct].
    #[arg(long, value_parser = non_negative)]
    pub duration: Option<f64>,
    /// Seconds of load before measuring (excluded from rates and latencies, not from
    /// the reply checks).
    #[arg(long, default_value_t = 2.0, value_parser = non_negative)]
    pub warmup: f64,
    /// Seconds to wait after the last POST for replies still on their way.
    #[arg(long, default_value_t = 5.0, value_parser = non_negative)]
    pub grace: f64,
    /// The flow the server runs: echo replies with the text sent, thanks with a constant.
    #[arg(long, value_enum, default_value = "echo")]
    pub flow: FlowKind,
    /// Process id of the server, to report its peak RSS and CPU use.
    #[arg(long)]
    pub pid: Option<u32>,
    /// Threads running HTTP clients (each with its own awc connection pool).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub client_threads: u16,
    /// Spike (open loop with redelivery): events per second offered for
    /// `--spike-duration` seconds, each from a new sender id unless `--spike-senders`.
    /// A POST answered 503 (or not at all) is sent again after its `Retry-After`, as
    /// Facebook does, until it is taken or `--grace` after the spike has passed. No
    /// warm-up: the spike starts at once.
    #[arg(long, value_parser = positive)]
    pub spike_rate: Option<f64>,
    /// Seconds the spike lasts.
    #[arg(long, default_value_t = 20.0, value_parser = positive)]
    pub spike_duration: f64,
    /// Spike from returning users: the events cycle over this many sender ids.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub spike_senders: Option<u32>,
    /// The server's Prometheus endpoint (its admin listener's `/metrics`), read every
    /// 100 ms to report the highest `colloquy_live_conversations` and
    /// `colloquy_pending_events` seen.
    #[arg(long)]
    pub metrics: Option<String>,
    /// Print one JSON line instead of the summary table.
    #[arg(long)]
    pub json: bool,
    /// Drive nothing: serve the reference bot (`reference.rs`, a do-nothing bot backend
    /// to measure colloquy against) on this address until stopped, replying to
    /// `--reference-graph`. Reads MESSENGER_VERIFY_TOKEN and MESSENGER_ACCESS_TOKEN.
    #[arg(long)]
    pub reference_bot: Option<SocketAddr>,
    /// The Graph API base URL the reference bot sends its replies to.
    #[arg(long, default_value = "http://127.0.0.1:9999/v21.0")]
    pub reference_graph: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FaultKind {
    #[value(name = "500")]
    Http500,
    #[value(name = "613")]
    RateLimit613,
    Timeout,
}

impl FaultKind {
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Http500 => "500",
            FaultKind::RateLimit613 => "613",
            FaultKind::Timeout => "timeout",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FlowKind {
    /// Replies repeat the message text, which carries a unique token.
    Echo,
    /// Replies are the constant `Thank you for your time..!!`; matched per user in order.
    Thanks,
}

impl FlowKind {
    pub fn name(self) -> &'static str {
        match self {
            FlowKind::Echo => "echo",
            FlowKind::Thanks => "thanks",
        }
    }
}

impl Args {
    /// Seconds of sending after the warm-up; infinite in distinct mode unless given.
    pub fn measured_seconds(&self) -> f64 {
        if self.spike_rate.is_some() {
            return self.spike_duration;
        }
        match (self.duration, self.distinct) {
            (Some(duration), _) => duration,
            (None, Some(_)) => f64::INFINITY,
            (None, None) => 10.0,
        }
    }

    /// Seconds of load before measuring; a spike has none.
    pub fn warmup_seconds(&self) -> f64 {
        if self.spike_rate.is_some() {
            0.0
        } else {
            self.warmup
        }
    }

    pub fn mode(&self) -> &'static str {
        if self.spike_rate.is_some() {
            "spike"
        } else if self.rate.is_some() {
            "open"
        } else {
            "closed"
        }
    }
}

fn probability(value: &str) -> Result<f64, String> {
    let p: f64 = value.parse().map_err(|e| format!("{e}"))?;
    if (0.0..=1.0).contains(&p) {
        Ok(p)
    } else {
        Err("must be between 0 and 1".into())
    }
}

fn non_negative(value: &str) -> Result<f64, String> {
    let x: f64 = value.parse().map_err(|e| format!("{e}"))?;
    if x.is_finite() && x >= 0.0 {
        Ok(x)
    } else {
        Err("must be a number of seconds, 0 or more".into())
    }
}

fn positive(value: &str) -> Result<f64, String> {
    let x: f64 = value.parse().map_err(|e| format!("{e}"))?;
    if x.is_finite() && x > 0.0 {
        Ok(x)
    } else {
        Err("must be more than 0".into())
    }
}
