//! The load: signed webhook POSTs, closed loop (virtual users waiting for their replies)
//! or open loop (a fixed rate), from client threads that each own an awc connection pool.
//!
//! Every POST body is built here with `format!`: ids and texts are the bench's own ASCII
//! tokens and the page id is JSON-quoted once, so no escaping is needed per event.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix_rt::time::{sleep, sleep_until};
use awc::error::SendRequestError;
use awc::http::Uri;
use futures_util::future::join_all;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::Semaphore;
use tokio::time::timeout_at;

use crate::spike::{SpikePlan, SpikeStats};
use crate::tracker::{Ack, Registered, Tracker};

/// Meta waits 20 s for an answer; a POST unanswered after this long counts as a timeout.
const POST_TIMEOUT: Duration = Duration::from_secs(30);
/// After a failed POST a virtual user pauses this long, so a dead server is not spun on.
const ERROR_PAUSE: Duration = Duration::from_millis(20);
/// A virtual user waits at most this long past `--grace` for one reply in an unbounded run.
const REPLY_WAIT: Duration = Duration::from_secs(60);
/// Open loop: POSTs in flight per client thread before the generator itself waits.
const MAX_IN_FLIGHT: usize = 4096;

/// What the load is, fixed before it starts.
pub struct Plan {
    /// The webhook URLs; POSTs take turns among them (the nodes of a cluster).
    pub targets: Vec<Uri>,
    pub secret: Vec<u8>,
    /// The page ids as JSON string literals; a sender always writes to the same one.
    pub pages: Vec<String>,
    pub run: String,
    pub senders: u32,
    pub batch: u32,
    pub rate: Option<f64>,
    pub receipts: bool,
    pub distinct: Option<u64>,
    pub started: Instant,
    pub warmup_end: Instant,
    /// No POST starts after this.
    pub send_deadline: Instant,
    pub grace: Duration,
    /// Spike mode: replaces the closed and open loops.
    pub spike: Option<SpikePlan>,
}

/// What the clients saw of the server's answers.
#[derive(Default)]
pub struct AckStats {
    /// POST → answer of POSTs sent after the warm-up and answered 200, in µs.
    pub latencies_us: Vec<u32>,
    pub posts_ok: u64,
    pub events_ok: u64,
    pub messages_ok: u64,
    pub receipts_ok: u64,
    /// Events acknowledged in POSTs sent after the warm-up.
    pub events_ok_measured: u64,
    pub messages_ok_measured: u64,
    pub errors: BTreeMap<String, u64>,
}

/// Shared by every client thread.
pub struct Load {
    pub plan: Plan,
    pub tracker: Arc<Tracker>,
    pub acks: Mutex<AckStats>,
    /// Events acknowledged and POSTs failed so far, for the progress line.
    pub events_ok: AtomicU64,
    pub failures: AtomicU64,
    next_distinct: AtomicU64,
    /// Whose turn among the targets the next POST is.
    next_target: std::sync::atomic::AtomicUsize,
    pub spike_stats: Arc<SpikeStats>,
}

impl Load {
    pub fn new(plan: Plan, tracker: Arc<Tracker>) -> Load {
        Load {
            next_target: Default::default(),
            plan,
            tracker,
            acks: Mutex::new(AckStats::default()),
            events_ok: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            next_distinct: AtomicU64::new(0),
            spike_stats: Arc::default(),
        }
    }

    pub fn psid(&self, index: u64) -> Arc<str> {
        Arc::from(format!("b{}u{index}", self.plan.run))
    }

    /// The next `count` sender ids that never sent anything; empty once `--distinct` is spent.
    pub fn fresh_psids(&self, total: u64, count: u32) -> Vec<Arc<str>> {
        let first = self
            .next_distinct
            .fetch_add(u64::from(count), Ordering::Relaxed);
        (first..total.min(first + u64::from(count)))
            .map(|i| Arc::from(format!("b{}d{i}", self.plan.run)))
            .collect()
    }

    /// One signed POST with a message from each registered sender, plus receipts.
    async fn post(&self, client: &awc::Client, messages: &[Registered]) -> Ack {
        let receipts = if self.plan.receipts {
            self.tracker.take_receipts(messages.len())
        } else {
            Vec::new()
        };
        let body = self.body(messages, &receipts);
        let sent = Instant::now();
        let answer = self.send(client, body).await;
        let events = (messages.len() + 2 * receipts.len()) as u64;
        self.record(messages, events, sent, &answer);
        let ack = answer.ack();
        let ns: Vec<u64> = messages.iter().map(|m| m.n).collect();
        self.tracker.ack(&ns, ack);
        ack
    }

    /// The webhook body carrying a message from each registered sender, plus receipts.
    pub fn body(&self, messages: &[Registered], receipts: &[(Arc<str>, String)]) -> String {
        let ts = now_ms();
        let mut events: Vec<String> = Vec::with_capacity(messages.len() + 2 * receipts.len());
        let page = self.page_of(messages);
        for m in messages {
            events.push(format!(
                r#"{{"sender":{{"id":"{}"}},"recipient":{{"id":{page}}},"timestamp":{ts},"message":{{"mid":"m_{}{:016x}","text":"{}"}}}}"#,
                m.psid,
                self.plan.run,
                scrambled(m.n),
                m.text
            ));
        }
        for (psid, mid) in receipts {
            events.push(format!(
                r#"{{"sender":{{"id":"{psid}"}},"recipient":{{"id":{page}}},"timestamp":{ts},"delivery":{{"mids":["{mid}"],"watermark":{ts}}}}}"#
            ));
            events.push(format!(
                r#"{{"sender":{{"id":"{psid}"}},"recipient":{{"id":{page}}},"timestamp":{ts},"read":{{"watermark":{ts}}}}}"#
            ));
        }
        format!(
            r#"{{"object":"page","entry":[{{"id":{page},"time":{ts},"messaging":[{}]}}]}}"#,
            events.join(",")
        )
    }

    /// The page a POST goes to: the first sender's, by a hash of its id, so each sender
    /// keeps talking to one page and the pages share the senders evenly.
    fn page_of(&self, messages: &[Registered]) -> &str {
        let pages = &self.plan.pages;
        let index = messages.first().map_or(0, |m| {
            m.psid.bytes().fold(0usize, |h, b| {
                h.wrapping_mul(31).wrapping_add(usize::from(b))
            })
        });
        &pages[index % pages.len()]
    }

    /// Signs and POSTs a body; what came back. The same body may be sent again (a
    /// redelivery carries the same events and signature, as Facebook's does).
    pub async fn send(&self, client: &awc::Client, body: String) -> Answer {
        let signature = sign_sha256(&self.plan.secret, body.as_bytes());
        let turn = self
            .next_target
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let target = &self.plan.targets[turn % self.plan.targets.len()];
        let answer = client
            .post(target.clone())
            .insert_header(("content-type", "application/json"))
            .insert_header((HEADER_SHA256, signature))
            .send_body(body)
            .await;
        match answer {
            Ok(mut response) => {
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                // Read the answer to the end so the connection goes back to the pool.
                let read = response.body().limit(64 * 1024).await;
                match (response.status().as_u16(), read) {
                    (200, Ok(_)) => Answer::Ok,
                    (200, Err(_)) => Answer::Failed("body", Ack::Unknown, None),
                    (status, _) => Answer::Failed(http_kind(status), Ack::Rejected, retry_after),
                }
            }
            Err(SendRequestError::Connect(_)) => Answer::Failed("connect", Ack::Unknown, None),
            Err(SendRequestError::Timeout) => Answer::Failed("timeout", Ack::Unknown, None),
            Err(_) => Answer::Failed("send", Ack::Unknown, None),
        }
    }

    /// Counts one POST's answer into the run's statistics (not into the tracker).
    pub fn record(&self, messages: &[Registered], events: u64, sent: Instant, answer: &Answer) {
        let latency = sent.elapsed();
        let measured = sent >= self.plan.warmup_end;
        let mut acks = self.acks.lock().unwrap_or_else(|e| e.into_inner());
        match answer {
            Answer::Ok => {
                acks.posts_ok += 1;
                acks.events_ok += events;
                acks.messages_ok += messages.len() as u64;
                acks.receipts_ok += events - messages.len() as u64;
                if measured {
                    let us = u32::try_from(latency.as_micros()).unwrap_or(u32::MAX);
                    acks.latencies_us.push(us);
                    acks.events_ok_measured += events;
                    acks.messages_ok_measured += messages.len() as u64;
                }
                self.events_ok.fetch_add(events, Ordering::Relaxed);
            }
            Answer::Failed(kind, _, _) => {
                *acks.errors.entry(kind.to_string()).or_insert(0) += 1;
                self.failures.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// How the server answered one POST.
pub enum Answer {
    Ok,
    /// The kind of failure (for the error counts), what it means for the events, and the
    /// `Retry-After` the server asked for, if any.
    Failed(&'static str, Ack, Option<Duration>),
}

impl Answer {
    pub fn ack(&self) -> Ack {
        match self {
            Answer::Ok => Ack::Ok,
            Answer::Failed(_, ack, _) => *ack,
        }
    }
}

fn http_kind(status: u16) -> &'static str {
    match status {
        400 => "http_400",
        403 => "http_403",
        404 => "http_404",
        413 => "http_413",
        500 => "http_500",
        503 => "http_503",
        _ => "http_other",
    }
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

pub fn client(connections: usize) -> awc::Client {
    awc::Client::builder()
        .connector(awc::Connector::new().limit(connections))
        .timeout(POST_TIMEOUT)
        .disable_redirects()
        .finish()
}

/// Runs this thread's share of the load (thread `thread` of `threads`) to its end.
pub async fn run_thread(load: Arc<Load>, thread: u32, threads: u32) {
    if let Some(spike) = load.plan.spike {
        let stats = load.spike_stats.clone();
        crate::spike::run_thread(load, spike, stats, thread, threads).await;
        return;
    }
    if load.plan.rate.is_some() {
        open_loop(load, thread, threads).await;
        return;
    }
    let users: Vec<u32> = (0..load.plan.senders)
        .filter(|u| u % threads == thread)
        .collect();
    let client = client(users.len().max(1));
    let tasks = users.into_iter().map(|user| {
        let load = load.clone();
        let client = client.clone();
        actix_rt::spawn(async move { virtual_user(&load, &client, user).await })
    });
    join_all(tasks).await;
}

/// Closed loop: POST, wait for the answer and every reply, repeat until the deadline.
async fn virtual_user(load: &Load, client: &awc::Client, user: u32) {
    let plan = &load.plan;
    let own: Vec<Arc<str>> = (0..plan.batch)
        .map(|j| load.psid(u64::from(user) * u64::from(plan.batch) + u64::from(j)))
        .collect();
    let reply_deadline = plan.send_deadline.checked_add(plan.grace);
    while Instant::now() < plan.send_deadline {
        let psids = match plan.distinct {
            Some(total) => load.fresh_psids(total, plan.batch),
            None => own.clone(),
        };
        if psids.is_empty() {
            break;
        }
        let messages = load.tracker.register(&psids, true);
        if load.post(client, &messages).await != Ack::Ok {
            sleep(ERROR_PAUSE).await;
            continue;
        }
        for message in messages {
            let Some(reply) = message.reply else { continue };
            let cap = Instant::now() + plan.grace + REPLY_WAIT;
            let until = reply_deadline.map_or(cap, |d| d.min(cap));
            // A reply that never comes is reported as missing at the end.
            let _ = timeout_at(until.into(), reply).await;
        }
    }
}

/// Open loop: POSTs at `rate / batch` per second in all, this thread taking every
/// `threads`-th one, whether or not earlier ones were answered.
async fn open_loop(load: Arc<Load>, thread: u32, threads: u32) {
    let plan = &load.plan;
    let rate = plan.rate.unwrap_or(1.0);
    let period = f64::from(plan.batch) / rate;
    let client = client(MAX_IN_FLIGHT);
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let psids: Vec<Arc<str>> = (0..plan.senders).map(|i| load.psid(u64::from(i))).collect();
    let mut post = u64::from(thread);
    let due = |post: u64| {
        plan.started
            .checked_add(Duration::from_secs_f64(post as f64 * period))
            .filter(|due| *due < plan.send_deadline)
    };
    while let Some(due) = due(post) {
        sleep_until(due.into()).await;
        let batch: Vec<Arc<str>> = match plan.distinct {
            Some(total) => load.fresh_psids(total, plan.batch),
            None => (0..u64::from(plan.batch))
                .map(|j| {
                    let index = (post * u64::from(plan.batch) + j) % u64::from(plan.senders);
                    psids[index as usize].clone()
                })
                .collect(),
        };
        if batch.is_empty() {
            break;
        }
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            break;
        };
        let load = load.clone();
        let client = client.clone();
        actix_rt::spawn(async move {
            let messages = load.tracker.register(&batch, false);
            load.post(&client, &messages).await;
            drop(permit);
        });
        post += u64::from(threads);
    }
    // Every POST of this thread answered.
    let _ = in_flight.acquire_many(MAX_IN_FLIGHT as u32).await;
}

/// The header Facebook signs webhook bodies in.
const HEADER_SHA256: &str = "X-Hub-Signature-256";

/// `sha256=<hex>` HMAC of a body with the app secret, as Facebook signs a webhook POST.
/// The load generator signs as Facebook does, from the outside: it does not borrow the
/// engine's verifier, whose correctness it must not assume.
pub(crate) fn sign_sha256(secret: &[u8], body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as hmac::digest::KeyInit>::new_from_slice(secret)
        .expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// A message's number scrambled (a bijection, so ids stay unique): Facebook's message ids
/// look random, and so must the bench's, or every dedup mark would land at the end of
/// its range in the server's store, which real traffic never does.
fn scrambled(n: u64) -> u64 {
    let mut z = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
