//! The replication seam of a commit: what a cluster node plugs in so that every turn and
//! every send outcome is written to the cluster, fenced by its partition's lease, before
//! this node's store applies it; and which conversations this node may act for at all.
//! Single-node colloquy has none.
//!
//! Must not: know NATS (the cluster module implements it), or let a commit go ahead that
//! the cluster refused.

use futures_util::future::LocalBoxFuture;

use super::{ConversationKey, OutboxRecord, SendOutcome, StoreError, TurnCommit};
use crate::messenger::inbound::Channel;

/// Writes a commit to the cluster first. An error means the commit must not be applied
/// here (this node no longer holds the partition, or the cluster is unreachable).
pub trait Replicator: Send + Sync {
    /// Replicates a turn; the sequence the cluster gave it (kept in the conversation's
    /// record, so a later replay knows the store has it), if it wrote anything.
    fn replicate_turn(
        &self,
        commit: &TurnCommit,
    ) -> LocalBoxFuture<'static, Result<Option<u64>, String>>;

    fn replicate_outcome(
        &self,
        record: &OutboxRecord,
        outcome: &SendOutcome,
    ) -> LocalBoxFuture<'static, Result<(), String>>;

    /// Whether this node holds the conversation's partition now: only then may it run a
    /// turn, fire a timer or send a reply for it.
    fn owns(&self, channel: Channel, key: &ConversationKey) -> bool;

    /// Whether this node may start a send for the conversation now: it owns it, and is
    /// not handing its partition over (then the sends in flight finish, and the next
    /// holder sends the rest, so a planned handover repeats nothing).
    fn may_send(&self, channel: Channel, key: &ConversationKey) -> SendPermission {
        if self.owns(channel, key) {
            SendPermission::Now
        } else {
            SendPermission::Never
        }
    }
}

/// What a node may do about a conversation's next send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendPermission {
    Now,
    /// Not yet: the node still holds the conversation, but must wait (its lease is due
    /// for renewal); the replies stay queued, in order.
    Later,
    /// The conversation is another node's (or on its way there): its replies are left
    /// in the outbox for their next holder.
    Never,
}

impl super::Store {
    /// How far this store applied a cluster partition's turns by replaying them: the
    /// state-stream sequence a later replay goes on after (0: never replayed). Turns this
    /// node committed itself since are in the store too; a replay skips them by their
    /// conversation's `stream_seq`.
    pub fn replayed_through(&self, partition: u32) -> Result<u64, StoreError> {
        let stored = self.inner.tree.get(replayed_key(partition))?;
        Ok(stored
            .and_then(|bytes| <[u8; 8]>::try_from(bytes.as_ref()).ok())
            .map_or(0, u64::from_be_bytes))
    }

    /// Notes that a replay applied `partition`'s turns through `seq`, durably.
    pub fn set_replayed_through(
        &self,
        partition: u32,
        seq: u64,
    ) -> impl std::future::Future<Output = Result<(), StoreError>> + 'static {
        self.submit(true, move |overlay| {
            overlay.insert(replayed_key(partition), seq.to_be_bytes().to_vec());
            Ok(())
        })
    }
}

fn replayed_key(partition: u32) -> Vec<u8> {
    super::keys::meta(&format!("cluster.replayed.{partition}"))
}
