//! One held partition's events, fed into this node's engine in order: a batch is fetched
//! from the partition's durable consumer, routed to the supervisor exactly as the
//! webhook's one-write path routes a POST (an `AwaitedPost`: each turn commits, fenced
//! by the lease, before its event settles), and then each event is acknowledged if its
//! turn committed, or handed back (`nak`: delivered again at once, ahead of later
//! events) if not. The next batch is fetched only once the whole batch has settled, so a
//! conversation's events are never reordered, and no event is acknowledged before the
//! turn that handled it is in the cluster.
//!
//! Must not: run flows or write anything itself, or keep going once told to stop (the
//! node stops it when the partition's lease is given back or lost).

use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::consumer::{PartitionEvents, Receipt};
use super::ClusterError;
use crate::engine::app::EngineHandles;
use crate::engine::event::EngineEvent;
use crate::engine::supervisor::Route;
use crate::messenger::inbound::InboundEvent;
use crate::store::journal::AwaitedPost;

/// Events fetched at once from a partition.
const BATCH: usize = 256;
/// How long a fetch waits for a first event: also how soon a stop is noticed when idle.
const FETCH_WAIT: Duration = Duration::from_millis(500);
/// While a batch is handled, its events are marked in progress this often, so the
/// consumer's ack wait (`ACK_WAIT`) runs out only when this node stopped.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// An event delivered to a node that neither acknowledged it nor marked it in progress
/// within this is delivered again (to whoever holds the partition then). Shorter than
/// two thirds of a lease: by the time a dead node's lease ran out, what it had in hand
/// is due again, and comes ahead of later events.
pub const ACK_WAIT: Duration = Duration::from_secs(3);
/// A batch whose turns have not all settled by then is given up: what did not commit is
/// handed back (a conversation restarting after a failed commit drops its events).
const BATCH_DEADLINE: Duration = Duration::from_secs(60);
/// A batch with a failed turn is ended once no other turn settled for this long: the
/// failed conversation's actor restarts, and the events it still had queued are lost from
/// memory (handed back with the rest). Also how long a stopping consumer waits.
const STALL: Duration = Duration::from_secs(1);
/// Pause before looking again whether a lease near its end was renewed.
const STALE_LEASE_WAIT: Duration = Duration::from_millis(50);
/// How much longer than its wait a fetch may take before it is given up.
const FETCH_PATIENCE: Duration = Duration::from_secs(10);
/// Pause after a failed fetch (NATS unreachable), so a broken link does not spin.
const FETCH_RETRY: Duration = Duration::from_millis(500);

/// A running partition consumer; `stop` ends it after the batch in hand.
pub struct PartitionWorker {
    partition: u32,
    stop: watch::Sender<bool>,
    done: actix_rt::task::JoinHandle<()>,
    lag: Arc<AtomicU64>,
}

impl PartitionWorker {
    /// Starts feeding `events` into `engine`, fetching and marking progress only while
    /// `fresh` says the partition's lease is far enough from running out (see
    /// `LeaseReplicator::lease_fresh`).
    pub fn start(
        events: PartitionEvents,
        engine: EngineHandles,
        fresh: impl Fn() -> bool + 'static,
    ) -> PartitionWorker {
        let (stop, stopped) = watch::channel(false);
        let lag = Arc::new(AtomicU64::new(0));
        let partition = events.partition();
        let fresh: Fresh = Rc::new(fresh);
        let done = actix_rt::spawn(run(events, engine, stopped, lag.clone(), fresh));
        PartitionWorker {
            partition,
            stop,
            done,
            lag,
        }
    }

    /// Events of the partition stored and not yet delivered, as of the last batch.
    pub fn lag(&self) -> u64 {
        self.lag.load(Relaxed)
    }

    /// Stops after the batch in hand has settled (acknowledged or handed back).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        if self.done.await.is_err() {
            log::error!("partition {}: its consumer task failed", self.partition);
        }
    }
}

/// Whether the partition's lease is fresh enough to fetch or mark progress.
type Fresh = Rc<dyn Fn() -> bool>;

async fn run(
    mut events: PartitionEvents,
    engine: EngineHandles,
    mut stopped: watch::Receiver<bool>,
    lag: Arc<AtomicU64>,
    fresh: Fresh,
) {
    let partition = events.partition();
    if let Ok(pending) = events.ack_pending().await {
        if pending > 0 {
            // An earlier holder had events in hand: they come again once their ack wait
            // ran out, and must be handled before anything after them.
            log::info!("partition {partition}: {pending} event(s) still in an earlier holder's hands; waiting for them");
            tokio::select! {
                _ = tokio::time::sleep(ACK_WAIT) => {}
                _ = stopped.changed() => return,
            }
        }
    }
    log::info!("partition {partition}: consuming its events");
    while !*stopped.borrow() {
        if !fresh() {
            // The lease may run out before a batch fetched now settles: events in hand
            // here then would let the next holder fetch later ones ahead of them.
            tokio::select! {
                _ = tokio::time::sleep(STALE_LEASE_WAIT) => continue,
                _ = stopped.changed() => break,
            }
        }
        let fetch = tokio::time::timeout(
            FETCH_WAIT + FETCH_PATIENCE,
            events.next_batch(BATCH, FETCH_WAIT),
        );
        let batch = tokio::select! {
            batch = fetch => batch.unwrap_or_else(|_| Err(ClusterError::JetStream("a fetch was not answered".into()))),
            _ = stopped.changed() => break,
        };
        match batch {
            // Nothing came within the wait: nothing is stored undelivered.
            Ok(batch) if batch.is_empty() => lag.store(0, Relaxed),
            Ok(batch) => {
                let handed_back = handle_batch(batch, &engine, &stopped, &fresh).await;
                if !handed_back {
                    log::warn!(
                        "partition {partition}: waiting for unanswered events to come again"
                    );
                    if !wait_for_redelivery(&mut stopped).await {
                        break;
                    }
                }
                if let Ok(pending) = events.lag().await {
                    lag.store(pending, Relaxed);
                }
            }
            Err(error) => {
                // Events delivered by the failed fetch may be in hand unseen.
                log::warn!("partition {partition}: cannot fetch events: {error}");
                if !wait_for_redelivery(&mut stopped).await {
                    break;
                }
            }
        }
    }
    log::info!("partition {partition}: stopped consuming");
}

/// Waits until events this consumer holds unanswered (a hand-back not confirmed, a
/// fetch's answer lost) are due again, so they come before later ones; `false` if told
/// to stop meanwhile.
async fn wait_for_redelivery(stopped: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(ACK_WAIT + FETCH_RETRY) => true,
        _ = stopped.changed() => false,
    }
}

/// Routes a batch, waits until every turn settled, then acknowledges what committed and
/// hands back the rest. Returns whether the server confirmed every event handed back.
async fn handle_batch(
    batch: Vec<super::consumer::Delivered>,
    engine: &EngineHandles,
    stopped: &watch::Receiver<bool>,
    fresh: &Fresh,
) -> bool {
    let (events, receipts): (Vec<_>, Vec<Receipt>) = batch.into_iter().map(|d| d.split()).unzip();
    let post = AwaitedPost::in_order(events.iter().map(InboundEvent::conversation));
    let routed = post
        .refs()
        .into_iter()
        .zip(events.into_iter().map(EngineEvent::Messenger))
        .collect::<Vec<_>>();
    engine.load.events_in(routed.len());
    engine.supervisor.do_send(Route { events: routed });
    let deadline = tokio::time::Instant::now() + BATCH_DEADLINE;
    let mut last_progress = (0, tokio::time::Instant::now());
    let mut marked = tokio::time::Instant::now();
    loop {
        let now = tokio::time::Instant::now();
        post.wait((now + STALL / 4).min(deadline)).await;
        let now = tokio::time::Instant::now();
        let (settled, failed) = post.progress();
        if settled != last_progress.0 {
            last_progress = (settled, now);
        }
        let stalled = now.duration_since(last_progress.1) >= STALL;
        if post.all_settled() || now >= deadline || (stalled && (failed || *stopped.borrow())) {
            break;
        }
        // Past a fresh lease, the events in hand are let come again after their ack
        // wait, by when the lease has run out and their next holder gets them first.
        if now.duration_since(marked) >= PROGRESS_EVERY && fresh() {
            marked = now;
            for (index, receipt) in receipts.iter().enumerate() {
                if !post.is_settled(index) {
                    let _ = receipt.in_progress().await;
                }
            }
        }
    }
    let unfinished = post.take_unfinished();
    if !unfinished.is_empty() {
        let sequences: Vec<u64> = unfinished
            .iter()
            .filter_map(|index| receipts.get(*index).and_then(Receipt::stream_sequence))
            .collect();
        log::info!(
            "{} of {} event(s) not handled here, handed back: stream sequence(s) {sequences:?}",
            unfinished.len(),
            receipts.len()
        );
    }
    let mut not_handled = vec![false; receipts.len()];
    unfinished
        .iter()
        .for_each(|index| not_handled[*index] = true);
    let (handed_back, committed): (Vec<_>, Vec<_>) = receipts
        .iter()
        .enumerate()
        .partition(|(index, _)| not_handled[*index]);
    for (_, receipt) in committed {
        if let Err(error) = receipt.ack().await {
            // Unanswered, it comes again after the ack wait; its dedup mark drops it.
            log::warn!("cannot acknowledge a handled event: {error}");
        }
    }
    hand_back(handed_back.into_iter().map(|(_, receipt)| receipt)).await
}

/// Hands events back in order, the last one confirmed (which confirms them all): one
/// round trip however many, so a slow or lost link delays a batch by one timeout at
/// most. Returns whether the server confirmed them.
async fn hand_back<'a>(receipts: impl Iterator<Item = &'a Receipt>) -> bool {
    let mut receipts = receipts.peekable();
    while let Some(receipt) = receipts.next() {
        let answered = if receipts.peek().is_some() {
            receipt.nak().await
        } else {
            receipt.nak_confirmed().await
        };
        if let Err(error) = answered {
            log::warn!("cannot hand back an event not handled: {error}");
            return false;
        }
    }
    true
}
