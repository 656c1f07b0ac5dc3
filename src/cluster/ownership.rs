//! Which partitions this node holds: each round, the node says it is alive, renews its
//! leases, and moves toward its fair share of the partitions (`ceil(partitions / live
//! nodes)`): it takes free or run-out partitions while it holds fewer, and gives back
//! what it holds beyond its share, so a joining node gets partitions without anyone
//! stopping and a dead node's partitions go to the survivors once its leases run out.
//!
//! A node is alive while its heartbeat (`colloquy.node.<name>`, `{until}`) has not run
//! out. Must not: write anything under a lease (the partition's consumer does, fenced),
//! or keep a partition whose renewal was fenced out.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use async_nats::jetstream::stream::Stream;

use super::lease::{lease_subject, Lease, LeaseError, LeaseRecord, LeaseTable};
use super::replication::{HeldLease, HeldLeases, Leaving};
use crate::clock::now_ms;

/// The subject of a node's heartbeat.
pub fn node_subject(node: &str) -> String {
    format!("colloquy.node.{node}")
}

/// What one round changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RoundChanges {
    pub taken: Vec<u32>,
    pub released: Vec<u32>,
    /// Leases another node took (their renewal was fenced out).
    pub lost: Vec<u32>,
    /// Of `taken`, those whose earlier holder's lease ran out (it died, or stalled).
    pub failovers: Vec<u32>,
}

/// One node's share of the partitions.
pub struct Ownership {
    table: LeaseTable,
    stream: Stream,
    partitions: u32,
    held: BTreeMap<u32, Lease>,
    /// Where the node's writers (the replicator) read the current leases.
    shared: HeldLeases,
    /// Partitions beyond the fair share, to give back once their consumer drained (still
    /// held and renewed meanwhile, but no longer served).
    leaving: BTreeSet<u32>,
    /// `leaving` as the node's sender sees it: no new send starts for those partitions.
    shared_leaving: Leaving,
    /// Set by `drain_first`: the partitions whose consumer stopped, to release now.
    drained: Option<Drained>,
    /// The node's admin listener, told in its heartbeats.
    admin: Option<String>,
    /// Each held partition's holding: a new number every time it is taken, so a
    /// partition lost and taken back between two looks of the node's server is still
    /// seen as new (its store must replay what another node did meanwhile).
    holdings: BTreeMap<u32, u64>,
    next_holding: u64,
    /// Rounds since the superseded lease and heartbeat messages were last pruned.
    rounds_since_pruning: u32,
}

/// Every renewal and heartbeat is a message in the state stream; every this many rounds
/// (about a minute at the default lease) the node prunes the ones it superseded, so
/// the stream does not grow with time. Only the last message of a lease subject counts
/// (as the lease, and as the sequence every fenced write expects), and it is kept.
const PRUNE_EVERY_ROUNDS: u32 = 40;

/// The partitions a node stopped consuming, for its ownership loop to give back.
pub type Drained = Arc<Mutex<BTreeSet<u32>>>;

impl Ownership {
    pub fn new(table: LeaseTable, stream: Stream, partitions: u32) -> Ownership {
        Ownership {
            table,
            stream,
            partitions: partitions.max(1),
            held: BTreeMap::new(),
            shared: HeldLeases::default(),
            leaving: BTreeSet::new(),
            shared_leaving: Leaving::default(),
            drained: None,
            admin: None,
            holdings: BTreeMap::new(),
            next_holding: 0,
            rounds_since_pruning: 0,
        }
    }

    /// Says `admin` (`http://host:port`) in this node's heartbeats.
    pub fn advertise(&mut self, admin: String) {
        self.admin = Some(admin);
    }

    /// Partitions beyond the fair share are given back only once marked in the returned
    /// set (their consumer stopped and its batch settled), so the next holder never
    /// fetches an event while an earlier one of its conversation is still in hand here.
    pub fn drain_first(&mut self) -> Drained {
        self.drained.get_or_insert_with(Drained::default).clone()
    }

    /// The held partitions to serve: held, and not on their way out.
    pub fn served(&self) -> Vec<u32> {
        self.held
            .keys()
            .copied()
            .filter(|partition| !self.leaving.contains(partition))
            .collect()
    }

    /// The served partitions, each with its holding (see `holdings`): a partition whose
    /// holding changed was lost and taken again, and is served anew.
    pub fn served_holdings(&self) -> Vec<(u32, u64)> {
        self.served()
            .into_iter()
            .map(|partition| (partition, self.holding(partition)))
            .collect()
    }

    fn holding(&self, partition: u32) -> u64 {
        self.holdings.get(&partition).copied().unwrap_or_default()
    }

    /// The leases as the node's writers see them, kept current after every round (a
    /// renewal is a new fencing token).
    pub fn shared(&self) -> HeldLeases {
        self.shared.clone()
    }

    /// The partitions on their way out, as the node's sender sees them.
    pub fn leaving(&self) -> Leaving {
        self.shared_leaving.clone()
    }

    fn publish_held(&self) {
        let mut shared = self
            .shared
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        shared.clear();
        shared.extend(self.held.iter().map(|(partition, lease)| {
            let held = HeldLease {
                lease: lease.clone(),
                holding: self.holding(*partition),
            };
            (*partition, held)
        }));
        drop(shared);
        self.shared_leaving.replace(&self.leaving);
    }

    /// The partitions held after the last round, in order.
    #[cfg_attr(not(any(test, feature = "test-support")), allow(dead_code))] // tests use it
    pub fn held(&self) -> Vec<u32> {
        self.held.keys().copied().collect()
    }

    /// The lease of a held partition (its fencing token for writes).
    #[cfg_attr(not(any(test, feature = "test-support")), allow(dead_code))] // tests use it
    pub fn lease(&self, partition: u32) -> Option<&Lease> {
        self.held.get(&partition)
    }

    /// Heartbeat, renewals, then toward the fair share.
    pub async fn round(&mut self) -> Result<RoundChanges, LeaseError> {
        let mut changes = RoundChanges::default();
        self.heartbeat().await?;
        let renewed = self.renew_all(&mut changes).await;
        // Renewed (or lost) leases reach the writers before anything else can fail.
        self.publish_held();
        renewed?;
        let live = self.live_nodes().await?;
        let nodes = u32::try_from(live.len().max(1)).unwrap_or(u32::MAX);
        let share = usize::try_from(self.partitions.div_ceil(nodes)).unwrap_or(usize::MAX);
        self.give_back_beyond(share, &mut changes).await?;
        let position = live.iter().position(|node| node == self.table.node());
        let taken = self
            .take_up_to(share, position.unwrap_or(0), live.len(), &mut changes)
            .await;
        self.publish_held();
        taken?;
        self.rounds_since_pruning += 1;
        if self.rounds_since_pruning >= PRUNE_EVERY_ROUNDS {
            self.rounds_since_pruning = 0;
            self.prune_superseded().await;
        }
        Ok(changes)
    }

    /// Purges all but the last message of this node's heartbeat subject and of each
    /// lease subject it holds. A failure costs only space: tried again next time.
    async fn prune_superseded(&self) {
        let subjects = std::iter::once(node_subject(self.table.node()))
            .chain(self.held.keys().map(|partition| lease_subject(*partition)));
        for subject in subjects {
            let purged = self.stream.purge().filter(subject.as_str()).keep(1).await;
            if let Err(error) = purged {
                log::warn!("cannot prune the superseded messages of {subject}: {error}");
            }
        }
    }

    /// Gives every lease back (a clean stop): the others need not wait for them to run out.
    pub async fn release_all(&mut self) -> Result<(), LeaseError> {
        let held = std::mem::take(&mut self.held);
        self.publish_held();
        for (_, lease) in held {
            self.table.release(&lease).await?;
        }
        Ok(())
    }

    async fn heartbeat(&self) -> Result<(), LeaseError> {
        let record = LeaseRecord {
            node: self.table.node().to_string(),
            until: self.table.expiry(),
            admin: self.admin.clone(),
        };
        let payload = serde_json::to_vec(&record).map_err(|e| LeaseError::Nats(e.to_string()))?;
        self.table
            .jetstream()
            .publish(node_subject(self.table.node()), payload.into())
            .await
            .map_err(|e| LeaseError::Nats(e.to_string()))?
            .await
            .map_err(|e| LeaseError::Nats(e.to_string()))?;
        Ok(())
    }

    async fn renew_all(&mut self, changes: &mut RoundChanges) -> Result<(), LeaseError> {
        let held: Vec<Lease> = self.held.values().cloned().collect();
        for lease in held {
            match self.table.renew(&lease).await {
                Ok(renewed) => {
                    self.held.insert(lease.partition, renewed);
                    // Writers in flight were just fenced by the renewal: they retry with
                    // the new token as soon as they can see it.
                    self.publish_held();
                }
                Err(LeaseError::Fenced { partition }) => {
                    log::warn!(
                        "node {}: partition {partition} was taken over; letting it go",
                        self.table.node()
                    );
                    self.held.remove(&partition);
                    changes.lost.push(partition);
                }
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    /// The nodes whose heartbeat has not run out, by name.
    pub async fn live_nodes(&self) -> Result<Vec<String>, LeaseError> {
        let now = now_ms();
        let mut live: Vec<String> = heartbeats(&self.stream)
            .await?
            .into_iter()
            .filter(|beat| beat.until > now)
            .map(|beat| beat.node)
            .collect();
        live.dedup();
        Ok(live)
    }

    async fn give_back_beyond(
        &mut self,
        share: usize,
        changes: &mut RoundChanges,
    ) -> Result<(), LeaseError> {
        if let Some(drained) = self.drained.clone() {
            return self.drain_then_give_back(share, &drained, changes).await;
        }
        while self.held.len() > share {
            let Some((partition, lease)) = self.held.pop_last() else {
                break;
            };
            // Writers stop using it before it is given back.
            self.publish_held();
            self.table.release(&lease).await?;
            changes.released.push(partition);
        }
        Ok(())
    }

    /// Marks what exceeds `share` as leaving, and gives back what has drained since.
    async fn drain_then_give_back(
        &mut self,
        share: usize,
        drained: &Drained,
        changes: &mut RoundChanges,
    ) -> Result<(), LeaseError> {
        self.leaving
            .retain(|partition| self.held.contains_key(partition));
        let served = self.held.len() - self.leaving.len();
        let extra = served.saturating_sub(share);
        let newly: Vec<u32> = self.served().into_iter().rev().take(extra).collect();
        self.leaving.extend(newly);
        let ready: Vec<u32> = {
            let mut drained = drained
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let ready = self
                .leaving
                .iter()
                .copied()
                .filter(|partition| drained.contains(partition))
                .collect::<Vec<_>>();
            drained.clear();
            ready
        };
        for partition in ready {
            self.leaving.remove(&partition);
            if let Some(lease) = self.held.remove(&partition) {
                self.publish_held();
                self.table.release(&lease).await?;
                changes.released.push(partition);
            }
        }
        Ok(())
    }

    /// Takes free partitions until `share` are held, starting where this node's place
    /// among the live nodes points, so nodes starting together rarely contend.
    async fn take_up_to(
        &mut self,
        share: usize,
        position: usize,
        nodes: usize,
        changes: &mut RoundChanges,
    ) -> Result<(), LeaseError> {
        let partitions = self.partitions as usize;
        let start = position * partitions / nodes.max(1);
        for offset in 0..partitions {
            if self.held.len() - self.leaving.len() >= share {
                break;
            }
            let partition = u32::try_from((start + offset) % partitions).unwrap_or(0);
            if self.held.contains_key(&partition) {
                continue;
            }
            match self.table.take_over(partition).await {
                Ok((lease, ran_out)) => {
                    if let Some(node) = ran_out {
                        log::warn!(
                            "node {}: took partition {partition} over from {node}, whose lease ran out",
                            self.table.node()
                        );
                        changes.failovers.push(partition);
                    }
                    self.held.insert(partition, lease);
                    self.next_holding += 1;
                    self.holdings.insert(partition, self.next_holding);
                    changes.taken.push(partition);
                }
                Err(LeaseError::Held { .. } | LeaseError::Fenced { .. }) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }
}

/// Every node's last heartbeat (run out or not), by the stream's node subjects.
pub async fn heartbeats(stream: &Stream) -> Result<Vec<LeaseRecord>, LeaseError> {
    let nats = |e: &dyn std::fmt::Display| LeaseError::Nats(e.to_string());
    let names = super::subjects(stream, "colloquy.node.*")
        .await
        .map_err(|e| nats(&e))?;
    let mut beats = Vec::new();
    for (subject, _) in names {
        let message = stream
            .get_last_raw_message_by_subject(&subject)
            .await
            .map_err(|e| nats(&e))?;
        if let Ok(record) = serde_json::from_slice::<LeaseRecord>(&message.payload) {
            beats.push(record);
        }
    }
    beats.sort_by(|a, b| a.node.cmp(&b.node));
    Ok(beats)
}
