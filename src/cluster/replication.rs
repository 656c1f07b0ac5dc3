//! The cluster's side of the commit seam (`store::Replicator`): each turn and each send
//! outcome published to its conversation's subject under the current lease of its
//! partition (`turns.rs`), before the node's own store applies it.
//!
//! The leases come from the node's ownership loop, which renews them (each renewal is a
//! new fencing token): a write fenced while the loop holds a newer lease of the same
//! partition is tried again with it. Must not: apply anything locally, or write for a
//! partition this node does not hold.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

use futures_util::future::LocalBoxFuture;

use super::intake::partition_of;
use super::lease::{Lease, LeaseError, LeaseTable};
use super::turns::{publish_outcome, publish_turn};
use crate::messenger::inbound::Channel;
use crate::store::{
    ConversationKey, OutboxRecord, Replicator, SendOutcome, SendPermission, TurnCommit,
};

/// The leases this node holds now, by partition; kept by the ownership loop.
pub type HeldLeases = Arc<RwLock<HashMap<u32, HeldLease>>>;

/// A lease this node holds, and the holding it belongs to: renewals keep the holding, a
/// partition lost and taken again gets a new one (see `Ownership`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldLease {
    pub lease: Lease,
    pub holding: u64,
}

/// A set of partitions shared between the node's tasks and its writers.
#[derive(Clone, Default)]
pub struct PartitionSet(Arc<RwLock<BTreeSet<u32>>>);

impl PartitionSet {
    pub fn contains(&self, partition: u32) -> bool {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(&partition)
    }

    pub fn replace(&self, partitions: &BTreeSet<u32>) {
        self.0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone_from(partitions);
    }
}

/// The held partitions this node is giving back: it finishes the sends in flight for
/// them and starts no new one (their next holder sends what is still owed).
pub type Leaving = PartitionSet;

/// The held partitions this node has taken over (replayed, its actors retired) and
/// serves, each with the holding it took over: only under that holding may it run a
/// turn, fire a timer or send. A partition just taken is held before its replay ends, and
/// one lost and taken back is held under a new holding before the node took it over
/// anew; a turn or send then would act on stale state (events and actors of the earlier
/// holding, what another node wrote meanwhile not replayed).
#[derive(Clone, Default)]
pub struct Serving(Arc<RwLock<HashMap<u32, u64>>>);

impl Serving {
    /// Serves `partition` under `holding` from now on.
    pub fn serve(&self, partition: u32, holding: u64) {
        self.write().insert(partition, holding);
    }

    /// Serves `partition` no more (given back, lost, or about to be taken over anew).
    pub fn stop(&self, partition: u32) {
        self.write().remove(&partition);
    }

    /// The holding `partition` is served under, if it is.
    pub fn holding(&self, partition: u32) -> Option<u64> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&partition)
            .copied()
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<u32, u64>> {
        self.0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// How long a write fenced by a lease message this node has not seen yet (its own
/// renewal, still on its way back) waits for the ownership loop to show it.
const RENEWAL_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

pub struct LeaseReplicator {
    table: LeaseTable,
    leases: HeldLeases,
    leaving: Leaving,
    /// `None`: every held lease counts as served (a replicator used on its own).
    serving: Option<Serving>,
    partitions: u32,
}

impl LeaseReplicator {
    pub fn new(table: LeaseTable, leases: HeldLeases, partitions: u32) -> Self {
        LeaseReplicator {
            table,
            leases,
            leaving: Leaving::default(),
            serving: None,
            partitions,
        }
    }

    /// Owns only the partitions in `serving` (kept by the node as it takes them over).
    pub fn with_serving(mut self, serving: Serving) -> Self {
        self.serving = Some(serving);
        self
    }

    /// The lease to write `partition`'s changes under: held, and of the holding served.
    fn serving_lease(&self, partition: u32) -> Option<HeldLease> {
        let held = held(&self.leases, partition)?;
        let served = self
            .serving
            .as_ref()
            .is_none_or(|serving| serving.holding(partition) == Some(held.holding));
        served.then_some(held)
    }

    /// Starts no send for the partitions in `leaving` (kept by the ownership loop).
    pub fn with_leaving(mut self, leaving: Leaving) -> Self {
        self.leaving = leaving;
        self
    }

    /// Whether this node's lease of `partition`, of the holding served, has more than a
    /// quarter of its time left by this node's clock. Past that, the node starts nothing
    /// that could outlast the lease: another node may take the partition over once it
    /// ran out, so no send (a side effect no server fences), no fetch of the partition's
    /// events, and no progress mark keeping events in hand here from coming again to the
    /// next holder ahead of later ones.
    pub fn lease_fresh(&self, partition: u32) -> bool {
        self.serving_lease(partition)
            .is_some_and(|held| self.fresh(&held.lease))
    }

    /// Whether `lease` has more than a quarter of its time left by this node's clock.
    fn fresh(&self, lease: &Lease) -> bool {
        let margin = i64::try_from(self.table.ttl().as_millis() / 4).unwrap_or(i64::MAX / 2);
        lease.until - margin > crate::clock::now_ms()
    }

    fn partition(&self, channel: Channel, key: &ConversationKey) -> u32 {
        partition_of(channel, &key.page_id, &key.psid, self.partitions)
    }
}

/// The lease held for `partition`, if any.
fn held(leases: &HeldLeases, partition: u32) -> Option<HeldLease> {
    leases
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(&partition)
        .cloned()
}

/// Runs `write` under `first`, the partition's lease served, and again under a renewal
/// of it if the first was fenced by this node's own renewal. Fenced while the node still
/// shows the same lease, it waits (up to `RENEWAL_WAIT`) for the ownership loop to show a
/// newer one, or to drop the partition (another node took it). Never under another
/// holding: a partition lost and taken back meanwhile must be taken over anew first.
async fn under_lease<F, Fut>(
    leases: HeldLeases,
    first: Option<HeldLease>,
    partition: u32,
    write: F,
) -> Result<u64, String>
where
    F: Fn(Lease) -> Fut,
    Fut: std::future::Future<Output = Result<u64, LeaseError>>,
{
    let not_held = || format!("this node does not serve partition {partition}");
    let deadline = tokio::time::Instant::now() + RENEWAL_WAIT;
    let first = first.ok_or_else(not_held)?;
    let holding = first.holding;
    let mut lease = first.lease;
    let same_holding = |held: HeldLease| (held.holding == holding).then_some(held.lease);
    loop {
        match write(lease.clone()).await {
            Ok(seq) => return Ok(seq),
            Err(LeaseError::Fenced { .. }) => {}
            Err(error) => return Err(error.to_string()),
        }
        let fenced = lease.token;
        loop {
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "partition {partition}: fenced out (another node holds its lease)"
                ));
            }
            lease = held(&leases, partition)
                .and_then(same_holding)
                .ok_or_else(not_held)?;
            if lease.token != fenced {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
}

impl Replicator for LeaseReplicator {
    fn replicate_turn(
        &self,
        commit: &TurnCommit,
    ) -> LocalBoxFuture<'static, Result<Option<u64>, String>> {
        let Some(record) = &commit.conversation else {
            // Consumes a journal item only: nothing of the conversation changes.
            return Box::pin(async { Ok(None) });
        };
        let partition = self.partition(record.channel, &record.key());
        let first = self.serving_lease(partition);
        let (table, leases, commit) = (self.table.clone(), self.leases.clone(), commit.clone());
        Box::pin(async move {
            under_lease(leases, first, partition, |lease| {
                let (table, commit) = (table.clone(), commit.clone());
                async move { publish_turn(&table, &lease, &commit).await }
            })
            .await
            .map(Some)
        })
    }

    fn replicate_outcome(
        &self,
        record: &OutboxRecord,
        outcome: &SendOutcome,
    ) -> LocalBoxFuture<'static, Result<(), String>> {
        let key = ConversationKey::new(record.page_id.clone(), record.psid.clone());
        let partition = self.partition(record.channel, &key);
        let first = self.serving_lease(partition);
        let (table, leases) = (self.table.clone(), self.leases.clone());
        let (record, outcome) = (record.clone(), outcome.clone());
        Box::pin(async move {
            under_lease(leases, first, partition, |lease| {
                let (table, record, outcome) = (table.clone(), record.clone(), outcome.clone());
                async move { publish_outcome(&table, &lease, &record, &outcome).await }
            })
            .await
            .map(|_| ())
        })
    }

    fn owns(&self, channel: Channel, key: &ConversationKey) -> bool {
        let partition = self.partition(channel, key);
        self.serving_lease(partition).is_some()
    }

    /// A send is a side effect no server can fence: the node starts one only while its
    /// lease is fresh (`lease_fresh`), so a node whose renewals are late (starved, cut
    /// off) stops sending before another can take the partition over and send the same
    /// conversation's replies; it waits for the renewal with the replies kept in order.
    fn may_send(&self, channel: Channel, key: &ConversationKey) -> SendPermission {
        let partition = self.partition(channel, key);
        let Some(held) = self.serving_lease(partition) else {
            return SendPermission::Never;
        };
        if self.leaving.contains(partition) {
            return SendPermission::Never;
        }
        if self.fresh(&held.lease) {
            SendPermission::Now
        } else {
            SendPermission::Later
        }
    }
}
