//! A colloquy node of a cluster (`colloquy serve --cluster`): the engine started with the
//! cluster's hooks (the webhook publishes to the events stream; every turn and send
//! outcome is replicated under its partition's lease; timers, turns and sends only for
//! held partitions), and the ownership loop that decides which partitions this node
//! holds and keeps one partition consumer running for each.
//!
//! Taking a partition: replay its turns into the local store, retire any actor of it
//! (its memory may be stale), resume the replies it owes, then consume its events.
//! Losing or giving one back: stop its consumer (the batch in hand settles), retire its
//! actors. Stopping the node: stop every consumer, give every lease back.
//! Must not: handle an event itself, or consume a partition it does not hold.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use async_nats::jetstream::context::Context;
use async_nats::jetstream::stream::Stream;
use futures_util::future::LocalBoxFuture;
use thiserror::Error;
use tokio::sync::watch;

use super::consumer::PartitionEvents;
use super::intake::{self, partition_of};
use super::lease::LeaseTable;
use super::ownership::{Drained, Ownership, RoundChanges};
use super::partition::{PartitionWorker, ACK_WAIT};
use super::replication::{LeaseReplicator, Serving};
use super::turns::replay_partition;
use super::ClusterError;
use crate::config::Config;
use crate::engine::app::{start_with, ClusterHooks, EngineHandles, RunningApp, StartError};
use crate::engine::metrics::ClusterMetrics;
use crate::engine::sender::{RepliesInHand, ResumeOutbox};
use crate::engine::supervisor::RetireWhere;
use crate::flow::FlowHandle;
use crate::messenger::inbound::{Channel, InboundEvent};
use crate::store::ConversationKey;
use crate::webhook::EventIntake;

/// How a node joins its cluster.
#[derive(Debug, Clone)]
pub struct NodeSettings {
    /// The NATS servers, comma-separated.
    pub urls: String,
    /// This node's name, unique in the cluster.
    pub node: String,
    /// Partitions of the cluster (the same on every node).
    pub partitions: u32,
    /// How long a lease lasts without renewal: how soon a dead node's partitions move.
    pub lease_ttl: Duration,
}

/// A lease lasts this long unless renewed (every third of it): a dead node's partitions
/// move after at most this plus one ownership round.
pub const DEFAULT_LEASE_MS: u64 = 5_000;

#[derive(Debug, Error)]
pub enum NodeError {
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("invalid node name {0:?}: use letters, digits, '-' and '_' only")]
    NodeName(String),
}

/// Starts this node: connects to NATS, starts the engine with the cluster's hooks, and
/// the ownership loop. The app's `stop` (or `wait`) stops the loop and gives the leases
/// back before the engine stops.
pub async fn start_node(
    config: Config,
    flow: FlowHandle,
    settings: NodeSettings,
) -> Result<RunningApp, NodeError> {
    check_node_name(&settings.node)?;
    let partitions = settings.partitions.max(1);
    let jetstream = super::connect(&settings.urls).await?;
    let state = super::state_stream(&jetstream).await?;
    let events = intake::events_stream(&jetstream).await?;
    let table = LeaseTable::new(
        jetstream.clone(),
        state.clone(),
        &settings.node,
        settings.lease_ttl,
    );
    let mut ownership = Ownership::new(table.clone(), state.clone(), partitions);
    let drained = ownership.drain_first();
    let serving = Serving::default();
    let replicator = Arc::new(
        LeaseReplicator::new(table.clone(), ownership.shared(), partitions)
            .with_leaving(ownership.leaving())
            .with_serving(serving.clone()),
    );
    let directory = Arc::new(Directory {
        partitions,
        pages: OnceLock::new(),
        elsewhere: RwLock::new(HashMap::new()),
        seen_pages: Mutex::new(BTreeSet::new()),
    });
    let hooks = ClusterHooks {
        replicator: Some(replicator.clone()),
        intake: Some(Arc::new(StreamIntake {
            jetstream,
            partitions,
            directory: directory.clone(),
        })),
        home: Some(directory.clone()),
    };
    let mut app = start_with(config, flow, hooks).await?;
    let engine = app.engine();
    let _ = directory.pages.set(engine.pages.clone());
    ownership.advertise(format!("http://{}", app.admin_addr()));
    let metrics = engine.metrics.cluster();
    let (stop, stopped) = watch::channel(false);
    let (held_now, held) = watch::channel(Vec::new());
    let (leave, leaving) = watch::channel(false);
    let rounds = actix_rt::spawn(keep_leases(
        ownership,
        settings.lease_ttl / 3,
        held_now,
        metrics.clone(),
        leaving,
        (table, directory),
    ));
    let node = Node {
        state,
        events,
        engine,
        metrics,
        partitions,
        drained,
        serving,
        replicator,
        workers: BTreeMap::new(),
    };
    let serving = actix_rt::spawn(node.serve(held, stopped));
    app.before_stop(Box::new(move || -> LocalBoxFuture<'static, ()> {
        Box::pin(async move {
            // Consumers first (their batches settle under the leases), then the leases.
            let _ = stop.send(true);
            let _ = serving.await;
            let _ = leave.send(true);
            let _ = rounds.await;
        })
    }));
    log::info!(
        "node {} of the cluster at {} ({partitions} partitions, lease {:?})",
        settings.node,
        settings.urls,
        settings.lease_ttl
    );
    Ok(app)
}

/// A node name goes into a subject (`colloquy.node.<name>`).
fn check_node_name(name: &str) -> Result<(), NodeError> {
    let fine = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if fine {
        Ok(())
    } else {
        Err(NodeError::NodeName(name.to_string()))
    }
}

/// The webhook's intake on a cluster node: every event published to its partition of the
/// events stream, answered once every PubAck came.
struct StreamIntake {
    jetstream: Context,
    partitions: u32,
    directory: Arc<Directory>,
}

impl EventIntake for StreamIntake {
    fn take(&self, events: Vec<InboundEvent>) -> LocalBoxFuture<'static, Result<(), String>> {
        self.directory.saw(&events);
        let (jetstream, partitions) = (self.jetstream.clone(), self.partitions);
        Box::pin(async move {
            intake::publish(&jetstream, &events, partitions)
                .await
                .map(drop)
                .map_err(|error| error.to_string())
        })
    }
}

/// The ownership loop: a round every `every` (heartbeat, renewals, fair share), the held
/// partitions told to `held` after each. Runs on its own so that taking a partition
/// over (a replay, which may be long) never delays a renewal. Once `leaving`, gives every
/// lease back, so the other nodes need not wait for them to run out.
async fn keep_leases(
    mut ownership: Ownership,
    every: Duration,
    held: watch::Sender<Vec<(u32, u64)>>,
    metrics: ClusterMetrics,
    mut leaving: watch::Receiver<bool>,
    (table, directory): (LeaseTable, Arc<Directory>),
) {
    let mut rounds = tokio::time::interval(every);
    rounds.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = rounds.tick() => {}
            _ = leaving.changed() => break,
        }
        match ownership.round().await {
            Ok(changes) => count(&metrics, &changes),
            Err(error) => log::warn!("ownership round failed: {error}"),
        }
        // A partition lost and taken back has a new holding: the server takes it over
        // anew (replay, then the outbox), however quickly it came back.
        let _ = held.send(ownership.served_holdings());
        if let Err(error) = directory.refresh(&table).await {
            log::debug!("cannot read where the partitions are served: {error}");
        }
    }
    let _ = held.send(Vec::new());
    if let Err(error) = ownership.release_all().await {
        log::warn!("could not give the leases back (they will run out): {error}");
    }
    log::info!("left the cluster");
}

fn count(metrics: &ClusterMetrics, changes: &RoundChanges) {
    metrics.partitions_taken.inc_by(changes.taken.len() as u64);
    metrics.failovers.inc_by(changes.failovers.len() as u64);
}

/// Where each partition is served, as of the last ownership round: the admin listener
/// of its holder, for the partitions another node holds. The admin API forwards a
/// request about a conversation there (`admin::forward`).
struct Directory {
    partitions: u32,
    /// The pages served (a conversation's channel is part of its partition).
    pages: OnceLock<crate::pages::Pages>,
    elsewhere: RwLock<HashMap<u32, String>>,
    seen_pages: Mutex<BTreeSet<String>>,
}

impl Directory {
    async fn refresh(&self, table: &LeaseTable) -> Result<(), super::LeaseError> {
        let now = crate::clock::now_ms();
        let admins: HashMap<String, String> = super::ownership::heartbeats(table.stream())
            .await?
            .into_iter()
            .filter(|beat| beat.until > now)
            .filter_map(|beat| Some((beat.node, beat.admin?)))
            .collect();
        let holders = super::holders(table, self.partitions).await?;
        let elsewhere: HashMap<u32, String> = holders
            .into_iter()
            .enumerate()
            .filter_map(|(partition, holder)| {
                let record = holder.record?;
                let live = record.until > now && record.node != table.node();
                let admin = admins.get(&record.node).filter(|_| live)?;
                Some((u32::try_from(partition).ok()?, admin.clone()))
            })
            .collect();
        *self
            .elsewhere
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = elsewhere;
        Ok(())
    }
}

impl Directory {
    /// The pages a conversation may belong to when a request does not say: those of the
    /// pages file, and those whose events this node took (the only way to know the page
    /// id of the `MESSENGER_*` settings' single page).
    fn candidate_pages(&self) -> Vec<String> {
        let mut pages: BTreeSet<String> = self
            .seen_pages
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if let Some(served) = self.pages.get() {
            pages.extend(served.current().pages().iter().map(|page| page.id.clone()));
        }
        pages.into_iter().collect()
    }

    fn served_elsewhere(&self, page: &str, psid: &str) -> Option<String> {
        let channel = self
            .pages
            .get()
            .and_then(|pages| pages.current().channel_of(page))
            .unwrap_or(Channel::Messenger);
        let partition = partition_of(channel, page, psid, self.partitions);
        self.elsewhere
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&partition)
            .cloned()
    }

    /// Notes the pages of events this node took in.
    fn saw(&self, events: &[InboundEvent]) {
        let mut seen = self
            .seen_pages
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for event in events {
            if seen.len() < SEEN_PAGES && !seen.contains(&event.page_id) {
                seen.insert(event.page_id.clone());
            }
        }
    }
}

/// Page ids remembered from events, at most (a deployment serves few pages per app).
const SEEN_PAGES: usize = 10_000;

impl crate::admin::forward::ConversationHome for Directory {
    fn elsewhere(&self, page: Option<&str>, psid: &str) -> Option<String> {
        match page {
            Some(page) => self.served_elsewhere(page, psid),
            None => {
                let candidates = self.candidate_pages();
                let mut homes = candidates
                    .iter()
                    .map(|page| self.served_elsewhere(page, psid));
                // Only when every page it may belong to is served by one other node.
                let first = homes.next()??;
                homes
                    .all(|home| home.as_ref() == Some(&first))
                    .then_some(first)
            }
        }
    }
}

/// What serves the held partitions: a consumer for each.
struct Node {
    state: Stream,
    events: Stream,
    engine: EngineHandles,
    metrics: ClusterMetrics,
    partitions: u32,
    /// Partitions whose consumer stopped, for the ownership loop to give back.
    drained: Drained,
    /// The partitions taken over here (replayed), shared with the replicator: turns,
    /// timers and sends only for those.
    serving: Serving,
    /// Says whether a partition's lease is fresh enough to fetch its events.
    replicator: Arc<LeaseReplicator>,
    /// The consumer of each served partition, with the holding it serves.
    workers: BTreeMap<u32, (u64, PartitionWorker)>,
}

/// Longest a handover waits for the sends in flight of the partition to end (a call's
/// timeout, or a retry's pause, at most): past it the partition is given back anyway,
/// and the next holder may repeat those sends.
const HANDOVER_SENDS_WAIT: Duration = Duration::from_secs(10);

impl Node {
    /// Follows the held partitions until stopped, then stops every consumer.
    async fn serve(
        mut self,
        mut held: watch::Receiver<Vec<(u32, u64)>>,
        mut stopped: watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                changed = held.changed() => if changed.is_err() { break },
                _ = stopped.changed() => break,
            }
            let partitions = held.borrow_and_update().clone();
            self.reconcile(partitions).await;
        }
        for (partition, (_, worker)) in std::mem::take(&mut self.workers) {
            self.serving.stop(partition);
            worker.stop().await;
        }
        self.metrics.partitions_owned.set(0);
    }

    /// One consumer for every held partition (for its current holding), none for the
    /// others. A partition given back is released only once its consumer stopped and
    /// the sends in flight for it ended.
    async fn reconcile(&mut self, held: Vec<(u32, u64)>) {
        let gone: Vec<u32> = self
            .workers
            .iter()
            .filter(|(partition, (holding, _))| !held.contains(&(**partition, *holding)))
            .map(|(partition, _)| *partition)
            .collect();
        for partition in gone {
            self.serving.stop(partition);
            if let Some((_, worker)) = self.workers.remove(&partition) {
                worker.stop().await;
            }
            self.retire_actors(partition);
            if !held.iter().any(|(p, _)| *p == partition) {
                self.wait_for_sends_in_hand(partition).await;
                self.drained
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(partition);
            }
            log::info!("partition {partition}: no longer served here (in this holding)");
        }
        for (partition, holding) in held {
            if !self.workers.contains_key(&partition) {
                if let Err(error) = self.take(partition, holding).await {
                    // Held but not served yet: tried again next round.
                    log::warn!("partition {partition}: cannot take it over yet: {error}");
                }
            }
        }
        let lag: u64 = self.workers.values().map(|(_, worker)| worker.lag()).sum();
        self.metrics.consumer_lag.set(gauge(lag));
        self.metrics
            .partitions_owned
            .set(gauge(self.workers.len() as u64));
    }

    /// Waits (up to `HANDOVER_SENDS_WAIT`) until no conversation of `partition` has a
    /// send in flight here: the sender starts none for a leaving partition, and the
    /// outcome of each one in flight is replicated under the lease still held.
    async fn wait_for_sends_in_hand(&self, partition: u32) {
        let deadline = tokio::time::Instant::now() + HANDOVER_SENDS_WAIT;
        loop {
            let matches = Box::new(in_partition(partition, self.partitions));
            let in_hand = self.engine.sender.send(RepliesInHand { matches }).await;
            match in_hand {
                Ok(0) | Err(_) => return,
                Ok(n) if tokio::time::Instant::now() >= deadline => {
                    log::warn!(
                        "partition {partition}: given back with {n} send(s) still in flight \
                         (the next holder may repeat them)"
                    );
                    return;
                }
                Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    async fn take(&mut self, partition: u32, holding: u64) -> Result<(), ClusterError> {
        let replayed = replay_partition(&self.state, partition, &self.engine.store).await?;
        self.metrics.turns_replayed.inc_by(replayed as u64);
        self.retire_actors(partition);
        self.serving.serve(partition, holding);
        self.engine.sender.do_send(ResumeOutbox);
        let events = PartitionEvents::open(&self.events, partition, ACK_WAIT).await?;
        let replicator = self.replicator.clone();
        let fresh = move || replicator.lease_fresh(partition);
        self.workers.insert(
            partition,
            (
                holding,
                PartitionWorker::start(events, self.engine.clone(), fresh),
            ),
        );
        log::info!("partition {partition}: taken ({replayed} replicated change(s) replayed)");
        Ok(())
    }

    /// Retires the live actors of `partition`'s conversations (either channel may map
    /// a conversation there; retiring one more actor than needed costs a reload only).
    fn retire_actors(&self, partition: u32) {
        let matches = in_partition(partition, self.partitions);
        self.engine
            .supervisor
            .do_send(RetireWhere(Box::new(matches)));
    }
}

/// Whether a conversation may belong to `partition` (either channel may map it there;
/// one conversation more than needed costs a reload or a short wait only).
fn in_partition(partition: u32, partitions: u32) -> impl Fn(&ConversationKey) -> bool + Send {
    move |key: &ConversationKey| {
        [Channel::Messenger, Channel::Instagram]
            .into_iter()
            .any(|channel| partition_of(channel, &key.page_id, &key.psid, partitions) == partition)
    }
}

fn gauge(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}
