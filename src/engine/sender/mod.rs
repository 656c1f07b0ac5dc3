//! The outbound sender: delivers committed replies through the Send API (the `graph`
//! client), and durable callbacks with its own HTTP client.
//!
//! Replies to one recipient leave strictly in order (one in flight per conversation);
//! different recipients proceed concurrently, and those ready together go out in Graph
//! batch calls (`batching.rs`). What a failed call means comes from
//! `graph::CallError`: network errors, timeouts, 5xx and transient Graph errors are
//! retried with capped exponential backoff and jitter; throttling pauses the page;
//! permanent Graph errors end the reply `failed` with code, subcode, message and
//! `fbtrace_id`; a revoked token (190) also stops the page. Every outcome is recorded on
//! the transcript entry and removes the item from the outbox. The page access token is
//! handed to the Graph client per call and never reaches a log line.

mod batching;
mod rate;

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use actix::prelude::*;
use rand::Rng;

use crate::clock::now_ms;
use crate::config::{Secret, SenderSettings};
use crate::engine::load::Load;
use crate::engine::metrics::Metrics;
use crate::graph::{ApiError, CallError, GraphClient, PageAuth};
use crate::messenger::outbound::SendResponse;
use crate::pages::Pages;
use crate::store::{
    ConversationKey, ConversationMap, ConversationSet, Failure, OutboxRecord, Outgoing,
    SendOutcome, SendPermission, Store,
};

/// Throttled pages are given at least this long before the next attempt.
const THROTTLE_BACKOFF: Duration = Duration::from_secs(2);

/// Replies committed by a conversation, by outbox sequence number.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Enqueue {
    pub items: Vec<(u64, OutboxRecord)>,
}

/// Read the outbox again and send what this node owes and does not have queued yet: a
/// cluster node that took a partition over resumes the replies it replayed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ResumeOutbox;

/// How many conversations matching `matches` have a reply in hand: a call in flight, its
/// outcome being recorded, or a retry waiting. A cluster node hands a partition over
/// once none of its conversations has one (no new send starts meanwhile, see
/// `Replicator::may_send`); a conversation stalled on a rejected page token is let go.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct RepliesInHand {
    pub matches: Box<dyn Fn(&ConversationKey) -> bool + Send>,
}

/// An operator forgot this conversation: drop the replies it still owes (its outbox items
/// are already gone from the store). A send in flight cannot be called back.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Forget {
    pub key: ConversationKey,
}

/// Stop sending: no new call starts, the calls in flight finish (within the request
/// timeout) and have their outcomes recorded; replies not yet sent stay in the outbox for
/// the next start. Answered once drained.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

/// How one Send API call ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Attempt {
    Sent {
        message_id: Option<String>,
    },
    Retry {
        reason: String,
        throttled: bool,
        /// When the Graph API said how long to wait (Business Use Case usage header).
        retry_after: Option<Duration>,
        /// The Graph error's trace id, kept if this turns out to be the last attempt.
        fbtrace_id: Option<String>,
    },
    Permanent(Failure),
    /// The Graph API rejected the page token (code 190): this reply fails, and nothing
    /// more is sent for the page until its token changes.
    TokenRevoked(Failure),
}

/// The pages file was reloaded: stalled pages may have a new token.
#[derive(Message)]
#[rtype(result = "()")]
struct PagesReloaded;

pub struct OutboundSender {
    store: Store,
    load: std::sync::Arc<Load>,
    metrics: std::sync::Arc<Metrics>,
    graph: GraphClient,
    /// A cluster node's replication of each outcome before the store records it.
    replicator: Option<std::sync::Arc<dyn crate::store::Replicator>>,
    /// Each page's node, token, app secret and rate, read afresh for every send.
    pages: Pages,
    settings: SenderSettings,
    /// For durable callbacks (not Graph calls); made on first use.
    callback_client: Option<awc::Client>,
    queues: ConversationMap<VecDeque<(u64, OutboxRecord)>>,
    in_flight: ConversationSet,
    /// Outbox items queued or in flight, so an item is never queued twice.
    known: HashSet<u64>,
    /// Pages throttled by the Graph API, with when sending may resume: every
    /// conversation of the page waits, since calling while throttled extends the penalty.
    paused_pages: HashMap<String, Instant>,
    /// Pages whose token the Graph API rejected (code 190), with that token: nothing more
    /// is sent for them until their token changes; their replies stay in the outbox.
    blocked_pages: HashMap<String, Secret>,
    /// Conversations whose next send waits for a blocked page's new token.
    stalled: ConversationSet,
    /// Conversations whose last send's outcome is being written: in flight, with that
    /// reply already off their queue.
    recording: ConversationSet,
    /// Each page's Send API rate (`COLLOQUY_PAGE_SEND_RATE`).
    rates: rate::PageRates,
    /// Calls and outcome writes under way; shutdown waits for them.
    calls_in_progress: usize,
    /// Shut down: no new call starts; told once nothing is under way.
    draining: Option<Vec<tokio::sync::oneshot::Sender<()>>>,
    /// Send API requests held until the thread's ready tasks have run, then sent
    /// together (`batching`).
    ready: batching::Ready,
}

impl OutboundSender {
    pub fn new(
        store: Store,
        load: std::sync::Arc<Load>,
        metrics: std::sync::Arc<Metrics>,
        graph_url: &str,
        pages: Pages,
        settings: SenderSettings,
    ) -> Self {
        let rates = rate::PageRates::new(settings.page_send_rate);
        OutboundSender {
            store,
            load,
            metrics,
            graph: GraphClient::new(graph_url, settings.request_timeout),
            replicator: None,
            pages,
            settings,
            callback_client: None,
            calls_in_progress: 0,
            draining: None,
            queues: ConversationMap::default(),
            in_flight: ConversationSet::default(),
            known: HashSet::new(),
            paused_pages: HashMap::new(),
            blocked_pages: HashMap::new(),
            stalled: ConversationSet::default(),
            recording: ConversationSet::default(),
            rates,
            ready: batching::Ready::default(),
        }
    }

    /// The same sender, replicating every outcome through `replicator` first.
    pub fn with_replicator(
        mut self,
        replicator: Option<std::sync::Arc<dyn crate::store::Replicator>>,
    ) -> Self {
        self.replicator = replicator;
        self
    }

    /// Records how a send ended: in the cluster first (when there is one), then here. If
    /// the cluster refuses it, nothing is recorded, and the reply stays owed.
    fn record_outcome(
        &self,
        seq: u64,
        record: OutboxRecord,
        outcome: SendOutcome,
    ) -> impl std::future::Future<Output = Result<(), crate::store::StoreError>> + 'static {
        let replicated = self
            .replicator
            .as_ref()
            .map(|replicator| replicator.replicate_outcome(&record, &outcome));
        let store = self.store.clone();
        async move {
            if let Some(replicated) = replicated {
                replicated
                    .await
                    .map_err(crate::store::StoreError::Replication)?;
            }
            store.complete_send(seq, record, outcome).await
        }
    }

    /// Whether this node may send for the reply's conversation: always on a single node;
    /// in a cluster only while it holds the conversation's partition and is not handing
    /// it over.
    fn may_send(&self, record: &OutboxRecord) -> SendPermission {
        self.replicator
            .as_ref()
            .map_or(SendPermission::Now, |replicator| {
                replicator.may_send(record.channel, &record.conversation())
            })
    }

    /// Drops a conversation's queue from memory, leaving its replies in the outbox: its
    /// partition's owner sends them (and this node again if the partition comes back).
    fn let_go(&mut self, key: &ConversationKey) {
        self.in_flight.remove(key);
        let Some(queue) = self.queues.remove(key) else {
            return;
        };
        for (seq, _) in queue {
            self.known.remove(&seq);
            self.load.replies_out(1);
        }
        log::debug!("{key}: replies left to the partition's owner");
    }

    fn enqueue(&mut self, items: Vec<(u64, OutboxRecord)>, ctx: &mut Context<Self>) {
        let mut touched = Vec::new();
        for (seq, record) in items {
            if !self.known.insert(seq) {
                continue;
            }
            let key = record.conversation();
            self.load.replies_in(1);
            self.queues
                .entry(key.clone())
                .or_default()
                .push_back((seq, record));
            touched.push(key);
        }
        for key in touched {
            if !self.in_flight.contains(&key) {
                self.send_next(key, ctx);
            }
        }
    }

    /// Sends the head of a conversation's queue, if any.
    fn send_next(&mut self, key: ConversationKey, ctx: &mut Context<Self>) {
        if self.draining.is_some() {
            // Shutting down: what is queued stays in the outbox for the next start.
            return;
        }
        let Some((_, record)) = self.queues.get(&key).and_then(|q| q.front()) else {
            self.queues.remove(&key);
            self.in_flight.remove(&key);
            return;
        };
        match self.may_send(record) {
            SendPermission::Now => {}
            SendPermission::Later => {
                // Stays queued and in hand, in order, until the lease is renewed.
                self.in_flight.insert(key.clone());
                ctx.run_later(SEND_PERMISSION_RETRY, move |act, ctx| {
                    act.send_next(key, ctx)
                });
                return;
            }
            SendPermission::Never => {
                self.let_go(&key);
                return;
            }
        }
        self.in_flight.insert(key.clone());
        let channel = record.channel;
        let request = match &record.outgoing {
            Outgoing::Send(request) => GraphRequest::Send(request.clone()),
            Outgoing::ThreadControl {
                psid,
                target_app_id,
            } => GraphRequest::ThreadControl {
                psid: psid.clone(),
                target_app_id: target_app_id.clone(),
            },
            Outgoing::Callback { url, body } => {
                let client = self
                    .callback_client
                    .get_or_insert_with(|| callback_client(&self.settings))
                    .clone();
                let call = post_callback(client, url.clone(), body.clone());
                self.calls_in_progress += 1;
                self.run_apart(ctx, call, move |act, attempt, ctx| {
                    act.finish(key, attempt, ctx);
                    act.call_ended();
                });
                return;
            }
        };
        let Some(target) = self.pages.current().send_target(&key.page_id) else {
            let reason = format!(
                "page {} is not in the pages file: nothing is sent for it",
                key.page_id
            );
            self.finish(key, Attempt::Permanent(Failure::reason(reason)), ctx);
            return;
        };
        if let Some(rejected) = self.blocked_pages.get(&key.page_id) {
            if *rejected == target.token {
                // Stays queued (and in the outbox) until the page's token changes.
                self.stalled.insert(key);
                return;
            }
            log::info!("page {}: its token changed; sending resumes", key.page_id);
            self.blocked_pages.remove(&key.page_id);
        }
        if let Some(resume) = self.paused_pages.get(&key.page_id) {
            let wait = resume.saturating_duration_since(Instant::now());
            if !wait.is_zero() {
                ctx.run_later(wait, move |act, ctx| act.send_next(key, ctx));
                return;
            }
        }
        let taken = self
            .rates
            .take_at(&key.page_id, target.send_rate, Instant::now());
        if let Err(wait) = taken {
            ctx.run_later(wait, move |act, ctx| act.send_next(key, ctx));
            return;
        }
        let auth = PageAuth::of(&target.node, target.token, Some(target.app_secret));
        match request {
            GraphRequest::Send(request) if self.batches(channel) => {
                self.hold_for_batch(key, auth, request, ctx);
            }
            request => self.call_one(key, auth, request, ctx),
        }
    }

    /// Makes one Graph call for the head of `key`'s queue and records how it ended.
    fn call_one(
        &mut self,
        key: ConversationKey,
        auth: PageAuth,
        request: GraphRequest,
        ctx: &mut Context<Self>,
    ) {
        let graph = self.graph.clone();
        let call = async move { attempt_of(request.call(&graph, &auth).await) };
        self.calls_in_progress += 1;
        self.run_apart(ctx, call, move |act, attempt, ctx| {
            // Its outcome write is counted first, so a drain waits for it too.
            act.answered(key, attempt, ctx);
            act.call_ended();
        });
    }

    /// A call for the head of `key`'s queue was answered: its outcome is recorded, unless
    /// the page's token was rejected and another call (made at the same time, or earlier
    /// in the same batch) already stopped the page for it. The reply then waits in the
    /// outbox for a new token, as every later reply of the page does: a rejected token
    /// fails one reply, not every reply that was on its way.
    fn answered(&mut self, key: ConversationKey, attempt: Attempt, ctx: &mut Context<Self>) {
        if matches!(attempt, Attempt::TokenRevoked(_))
            && self.blocked_pages.contains_key(&key.page_id)
        {
            self.stalled.insert(key);
            return;
        }
        self.finish(key, attempt, ctx);
    }

    /// One call or outcome write ended; a drain waiting for the last one is told.
    fn call_ended(&mut self) {
        self.calls_in_progress = self.calls_in_progress.saturating_sub(1);
        if self.calls_in_progress == 0 {
            for waiter in self.draining.iter_mut().flat_map(|w| w.drain(..)) {
                let _ = waiter.send(());
            }
        }
    }

    fn finish(&mut self, key: ConversationKey, attempt: Attempt, ctx: &mut Context<Self>) {
        let Some((seq, record)) = self.queues.get_mut(&key).and_then(|q| q.front_mut()) else {
            return;
        };
        let seq = *seq;
        record.attempts += 1;
        let outcome = match attempt {
            Attempt::Sent { message_id } => {
                self.metrics.reply(&key.page_id, "sent", None);
                log::debug!("{key}: reply {seq} (entry {}) sent", record.entry);
                SendOutcome::Sent {
                    message_id,
                    at: now_ms(),
                }
            }
            Attempt::Permanent(failure) => failed_permanently(&self.metrics, &key, seq, failure),
            Attempt::TokenRevoked(failure) => {
                log::error!(
                    "page {}: the Graph API rejected the page access token (code 190); \
                     sending for this page is stopped until its token changes (a new token \
                     in the pages file and a reload, or a restart with a valid \
                     MESSENGER_ACCESS_TOKEN). Unsent replies stay in the outbox.",
                    key.page_id
                );
                if let Some(target) = self.pages.current().send_target(&key.page_id) {
                    self.blocked_pages.insert(key.page_id.clone(), target.token);
                }
                failed_permanently(&self.metrics, &key, seq, failure)
            }
            Attempt::Retry {
                reason,
                throttled,
                retry_after,
                fbtrace_id,
            } => {
                let age = now_ms().saturating_sub(record.created_at);
                let too_old =
                    u128::try_from(age).unwrap_or_default() > self.settings.max_age.as_millis();
                if record.attempts < self.settings.max_attempts && !too_old {
                    let delay = retry_after
                        .unwrap_or_else(|| backoff(&self.settings, record.attempts, throttled));
                    if throttled {
                        log::warn!(
                            "page {}: throttled by the Graph API ({reason}); pausing its sends for {delay:?}",
                            key.page_id
                        );
                        self.paused_pages
                            .insert(key.page_id.clone(), Instant::now() + delay);
                    }
                    log::info!(
                        "{key}: reply {seq} attempt {} failed ({reason}); retrying in {delay:?}",
                        record.attempts
                    );
                    self.metrics.reply(&key.page_id, "retried", None);
                    // Queued at once; losing it only means more attempts after a crash.
                    drop(self.store.record_attempts(seq, record));
                    ctx.run_later(delay, move |act, ctx| act.send_next(key, ctx));
                    return;
                }
                let why = if too_old {
                    format!("gave up after {} s", age / 1000)
                } else {
                    format!("gave up after {} attempts", record.attempts)
                };
                log::warn!("{key}: reply {seq} failed: {why}: {reason}");
                self.metrics.reply(&key.page_id, "failed", None);
                SendOutcome::Failed(Failure {
                    fbtrace_id,
                    ..Failure::reason(format!("{why}: {reason}"))
                })
            }
        };
        let record = record.clone();
        if let Some(queue) = self.queues.get_mut(&key) {
            queue.pop_front();
        }
        self.load.replies_out(1);
        self.record(key, seq, record, outcome, ctx);
    }

    /// Records a send's outcome; the next reply of this conversation waits until it is
    /// on disk (and in the cluster), so a crash can repeat at most the one send per
    /// conversation that was in flight. (The flush is shared with every other writer of
    /// the same commit cycle.) A write that fails is tried again while this node may
    /// still send for the conversation: the reply went out, and an outbox that still owed
    /// it would send it again. The reply stays `known` meanwhile, so no resumption of the
    /// outbox picks it up.
    fn record(
        &mut self,
        key: ConversationKey,
        seq: u64,
        record: OutboxRecord,
        outcome: SendOutcome,
        ctx: &mut Context<Self>,
    ) {
        let recorded = self.record_outcome(seq, record.clone(), outcome.clone());
        let waiting = Instant::now();
        self.calls_in_progress += 1;
        // Until written (a failed write is tried again): see `Forget`.
        self.recording.insert(key.clone());
        self.run_apart(ctx, recorded, move |act, recorded, ctx| {
                act.call_ended();
                act.metrics.flush_waited("sender", waiting.elapsed());
                match recorded {
                    Ok(()) => {
                        act.known.remove(&seq);
                        act.recording.remove(&key);
                        act.send_next(key, ctx);
                    }
                    Err(error)
                        if act.draining.is_none()
                            && act.may_send(&record) != SendPermission::Never =>
                    {
                        log::warn!(
                        "{key}: cannot record the outcome of reply {seq} yet ({error}); trying again"
                    );
                        ctx.run_later(OUTCOME_RETRY, move |act, ctx| {
                            act.record(key, seq, record, outcome, ctx);
                        });
                    }
                    Err(error) => {
                        // Stays owed in the outbox: the partition's next holder (or this
                        // node's next start) sends it again.
                        log::error!("{key}: cannot record the outcome of reply {seq}: {error}");
                        act.known.remove(&seq);
                        act.recording.remove(&key);
                        act.let_go(&key);
                    }
                }
            },
        );
    }
}

/// The rest of a piece of work run apart (`run_apart`), done on the sender.
type Continuation = Box<dyn FnOnce(&mut OutboundSender, &mut Context<OutboundSender>) + Send>;

#[derive(Message)]
#[rtype(result = "()")]
struct Resume(Continuation);

impl Handler<Resume> for OutboundSender {
    type Result = ();

    fn handle(&mut self, Resume(then): Resume, ctx: &mut Context<Self>) {
        then(self, ctx);
    }
}

/// Beyond this many calls and outcome writes under way, each runs as a task of its own
/// (`run_apart`): below it, polling them all at each wake-up costs less than the extra
/// message a task's result needs (measured: 16 senders answered ~5 % slower with every
/// call apart).
const RUN_APART_FROM: usize = 32;

impl OutboundSender {
    /// Runs `work` (a call, an outcome write), then `then` on the sender with its result.
    /// With many under way, as a task of its own: actix polls every future spawned in an
    /// actor's context each time the actor wakes, so with a reply in hand for each of 2,048
    /// conversations every wake-up of the sender polled some 2,000 futures (~8 % of the
    /// server's CPU samples at 128 senders x 16 events; at 128 senders replies came 14 %
    /// faster without it, docs/performance.md); a task is polled only when its own work
    /// can go on. Should the sender stop first, the result is dropped, as
    /// a spawned future's would be.
    fn run_apart<T: Send + 'static>(
        &self,
        ctx: &mut Context<Self>,
        work: impl std::future::Future<Output = T> + 'static,
        then: impl FnOnce(&mut Self, T, &mut Context<Self>) + Send + 'static,
    ) {
        if self.calls_in_progress < RUN_APART_FROM {
            let work = actix::fut::wrap_future(work);
            ctx.spawn(work.map(move |result, act, ctx| then(act, result, ctx)));
            return;
        }
        let sender = ctx.address();
        actix_rt::spawn(async move {
            let result = work.await;
            sender.do_send(Resume(Box::new(move |act, ctx| then(act, result, ctx))));
        });
    }
}

/// Pause before asking again whether a send may start (a cluster lease due for renewal).
const SEND_PERMISSION_RETRY: Duration = Duration::from_millis(50);

/// Pause before writing a send's outcome again after a failed write.
const OUTCOME_RETRY: Duration = Duration::from_millis(200);

/// A Graph call the outbox owes a user: a Send API message, or a handover call.
enum GraphRequest {
    Send(crate::messenger::outbound::SendRequest),
    ThreadControl {
        psid: String,
        target_app_id: Option<String>,
    },
}

impl GraphRequest {
    async fn call(&self, graph: &GraphClient, auth: &PageAuth) -> Result<SendResponse, CallError> {
        match self {
            GraphRequest::Send(request) => graph.send_message(auth, request).await,
            GraphRequest::ThreadControl {
                psid,
                target_app_id,
            } => graph
                .thread_control(auth, psid, target_app_id.as_deref())
                .await
                .map(|()| SendResponse::default()),
        }
    }
}

/// A reply that will never go out as it is: counted, and logged with Meta's trace id.
fn failed_permanently(
    metrics: &Metrics,
    key: &ConversationKey,
    seq: u64,
    failure: Failure,
) -> SendOutcome {
    metrics.reply(&key.page_id, "failed", failure.code);
    match &failure.fbtrace_id {
        Some(trace) => log::warn!(
            "{key}: reply {seq} failed permanently: {} (fbtrace_id {trace})",
            failure.message
        ),
        None => log::warn!("{key}: reply {seq} failed permanently: {}", failure.message),
    }
    SendOutcome::Failed(failure)
}

/// Capped exponential backoff with jitter (50-100% of the step), longer when throttled.
fn backoff(settings: &SenderSettings, attempts: u32, throttled: bool) -> Duration {
    let base = if throttled {
        settings.initial_backoff.max(THROTTLE_BACKOFF)
    } else {
        settings.initial_backoff
    };
    let step = base
        .saturating_mul(1u32 << attempts.saturating_sub(1).min(16))
        .min(settings.max_backoff);
    step.mul_f64(rand::thread_rng().gen_range(0.5..=1.0))
}

impl Actor for OutboundSender {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let reloads = futures_util::stream::unfold(self.pages.watch(), |mut watch| async move {
            watch.changed().await.ok()?;
            Some((PagesReloaded, watch))
        });
        ctx.add_stream(reloads);
        // Replies committed before a crash or stop and never completed.
        self.resume_outbox(ctx);
    }
}

impl OutboundSender {
    /// Queues every reply of the outbox this node may send and has not queued yet.
    fn resume_outbox(&mut self, ctx: &mut Context<Self>) {
        match self.store.pending_outbox() {
            Ok(pending) => {
                let owed: Vec<_> = pending
                    .into_iter()
                    .filter(|(seq, record)| {
                        !self.known.contains(seq) && self.may_send(record) != SendPermission::Never
                    })
                    .collect();
                if !owed.is_empty() {
                    log::info!("resuming {} unsent repl(ies) from the outbox", owed.len());
                    for (seq, record) in &owed {
                        log::debug!(
                            "{}: resuming reply {seq} (entry {})",
                            record.conversation(),
                            record.entry
                        );
                    }
                    self.enqueue(owed, ctx);
                }
            }
            Err(error) => log::error!("cannot read the outbox: {error}"),
        }
    }
}

impl Handler<RepliesInHand> for OutboundSender {
    type Result = usize;

    fn handle(&mut self, msg: RepliesInHand, _: &mut Context<Self>) -> usize {
        let stalled: Vec<ConversationKey> = self
            .stalled
            .iter()
            .filter(|key| (msg.matches)(key))
            .cloned()
            .collect();
        for key in stalled {
            self.stalled.remove(&key);
            self.let_go(&key);
        }
        self.in_flight
            .iter()
            .filter(|key| (msg.matches)(key))
            .count()
    }
}

impl Handler<ResumeOutbox> for OutboundSender {
    type Result = ();

    fn handle(&mut self, _: ResumeOutbox, ctx: &mut Context<Self>) {
        self.resume_outbox(ctx);
    }
}

impl Handler<Enqueue> for OutboundSender {
    type Result = ();

    fn handle(&mut self, msg: Enqueue, ctx: &mut Context<Self>) {
        self.enqueue(msg.items, ctx);
    }
}

impl StreamHandler<PagesReloaded> for OutboundSender {
    fn handle(&mut self, _: PagesReloaded, ctx: &mut Context<Self>) {
        // A page blocked by error 190 resumes if the reload gave it a new token.
        for key in std::mem::take(&mut self.stalled) {
            self.send_next(key, ctx);
        }
    }

    fn finished(&mut self, _: &mut Context<Self>) {
        // The pages handle lives as long as the engine: nothing to do when it goes.
    }
}

impl Handler<Forget> for OutboundSender {
    type Result = ();

    fn handle(&mut self, msg: Forget, _: &mut Context<Self>) {
        let Some(queue) = self.queues.get_mut(&msg.key) else {
            return;
        };
        // The head stays while its call is in flight (it cannot be called back). While
        // the last call's outcome is written, that reply is already off the queue: its
        // head is the next reply, never sent, and goes too. So does a head held back for
        // a stopped page's new token, and the conversation waits for nothing more.
        let stalled = self.stalled.remove(&msg.key);
        if stalled {
            self.in_flight.remove(&msg.key);
        }
        let head_in_flight =
            self.in_flight.contains(&msg.key) && !self.recording.contains(&msg.key);
        let keep = usize::from(head_in_flight).min(queue.len());
        for (seq, _) in queue.drain(keep..) {
            self.known.remove(&seq);
            self.load.replies_out(1);
        }
        if queue.is_empty() {
            self.queues.remove(&msg.key);
        }
    }
}

impl Handler<Shutdown> for OutboundSender {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Shutdown, _: &mut Context<Self>) -> Self::Result {
        let (drained, wait) = tokio::sync::oneshot::channel();
        self.draining.get_or_insert_with(Vec::new).push(drained);
        if self.calls_in_progress == 0 {
            self.call_ended();
        }
        // A call ends within the request timeout; its outcome write within a flush.
        let limit = self.settings.request_timeout + Duration::from_secs(2);
        Box::pin(
            async move {
                let _ = tokio::time::timeout(limit, wait).await;
            }
            .into_actor(self)
            .map(|(), _, ctx| ctx.stop()),
        )
    }
}

/// The client for durable callbacks: the sender's timeout, and no redirects.
fn callback_client(settings: &SenderSettings) -> awc::Client {
    awc::Client::builder()
        .timeout(settings.request_timeout)
        .disable_redirects()
        .finish()
}

/// One callback POST, classified: 2xx sent; 5xx, 429 and network errors retried; other
/// answers fail it.
async fn post_callback(client: awc::Client, url: String, body: serde_json::Value) -> Attempt {
    let retry = |reason: String| Attempt::Retry {
        reason,
        throttled: false,
        retry_after: None,
        fbtrace_id: None,
    };
    match client.post(&url).send_json(&body).await {
        Err(error) => retry(format!("callback network: {error}")),
        Ok(response) => match response.status().as_u16() {
            200..=299 => Attempt::Sent { message_id: None },
            status @ (429 | 500..=599) => retry(format!("callback answered HTTP {status}")),
            status => {
                Attempt::Permanent(Failure::reason(format!("callback answered HTTP {status}")))
            }
        },
    }
}

/// What one Send API call's result means for the reply (the Graph client sorted it).
fn attempt_of(result: Result<SendResponse, CallError>) -> Attempt {
    let error = match result {
        Ok(answer) => {
            return Attempt::Sent {
                message_id: answer.message_id,
            }
        }
        Err(error) => error,
    };
    let reason = error.to_string();
    let fbtrace_id = error.api_error().and_then(|e| e.fbtrace_id.clone());
    match error {
        CallError::TokenRevoked(api) => Attempt::TokenRevoked(graph_failure(api)),
        CallError::Permanent(api) => Attempt::Permanent(graph_failure(api)),
        CallError::Throttled { retry_after, .. } => Attempt::Retry {
            reason,
            throttled: true,
            retry_after,
            fbtrace_id,
        },
        error if error.is_retryable() => Attempt::Retry {
            reason,
            throttled: false,
            retry_after: None,
            fbtrace_id,
        },
        _ => Attempt::Permanent(Failure::reason(reason)),
    }
}

/// A Graph error as the transcript keeps it.
fn graph_failure(error: ApiError) -> Failure {
    Failure {
        code: Some(error.code),
        subcode: error.error_subcode,
        message: error.message,
        fbtrace_id: error.fbtrace_id,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: i64, fbtrace_id: Option<&str>) -> ApiError {
        ApiError {
            message: format!("(#{code}) no"),
            kind: Some("OAuthException".into()),
            code,
            error_subcode: Some(7),
            is_transient: None,
            fbtrace_id: fbtrace_id.map(str::to_owned),
        }
    }

    #[test]
    fn a_sent_message_keeps_its_message_id() {
        let answer = SendResponse {
            recipient_id: Some("1".into()),
            message_id: Some("m_9".into()),
        };
        assert_eq!(
            attempt_of(Ok(answer)),
            Attempt::Sent {
                message_id: Some("m_9".into())
            }
        );
    }

    #[test]
    fn a_permanent_graph_error_keeps_code_subcode_message_and_trace_id() {
        let attempt = attempt_of(Err(CallError::Permanent(api_error(551, Some("Ab1")))));
        assert_eq!(
            attempt,
            Attempt::Permanent(Failure {
                code: Some(551),
                subcode: Some(7),
                message: "(#551) no".into(),
                fbtrace_id: Some("Ab1".into()),
            })
        );
    }

    #[test]
    fn a_revoked_token_fails_the_reply_as_token_revoked() {
        let attempt = attempt_of(Err(CallError::TokenRevoked(api_error(190, None))));
        assert!(matches!(
            attempt,
            Attempt::TokenRevoked(Failure {
                code: Some(190),
                ..
            })
        ));
    }

    #[test]
    fn throttling_is_retried_as_throttled_with_the_hinted_wait_and_trace_id() {
        let attempt = attempt_of(Err(CallError::Throttled {
            error: Some(api_error(613, Some("T1"))),
            retry_after: Some(Duration::from_secs(60)),
        }));
        assert_eq!(
            attempt,
            Attempt::Retry {
                reason: "Graph error 613/7: (#613) no".into(),
                throttled: true,
                retry_after: Some(Duration::from_secs(60)),
                fbtrace_id: Some("T1".into()),
            }
        );
    }

    #[test]
    fn network_errors_timeouts_and_5xx_are_retried_unthrottled() {
        for error in [
            CallError::Network("connection refused".into()),
            CallError::Timeout(Duration::from_secs(1)),
            CallError::Unreadable("cut off".into()),
            CallError::Status { status: 502 },
            CallError::Transient(api_error(2, None)),
        ] {
            assert!(
                matches!(
                    attempt_of(Err(error.clone())),
                    Attempt::Retry {
                        throttled: false,
                        retry_after: None,
                        ..
                    }
                ),
                "{error:?}"
            );
        }
    }

    #[test]
    fn an_http_error_without_a_graph_body_that_is_not_5xx_fails_with_its_status() {
        assert_eq!(
            attempt_of(Err(CallError::Status { status: 404 })),
            Attempt::Permanent(Failure::reason("HTTP 404 without a Graph error body"))
        );
    }

    #[test]
    fn backoff_grows_and_stays_capped() {
        let settings = SenderSettings {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            ..SenderSettings::default()
        };
        let first = backoff(&settings, 1, false);
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
        let late = backoff(&settings, 30, false);
        assert!(late <= Duration::from_secs(1) && late >= Duration::from_millis(500));
        // Throttling starts from a 2 s step, capped here at 1 s, so never below half of that.
        assert!(backoff(&settings, 1, true) >= Duration::from_millis(500));
    }
}
