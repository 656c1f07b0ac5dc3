//! The replication seam of a commit: what a cluster node plugs in so that every turn and
//! every send outcome is written to the cluster, fenced by its partition's lease, before
//! this node's store applies it. Single-node colloquy has none.
//!
//! Must not: know NATS (the cluster module implements it), or let a commit go ahead that
//! the cluster refused.

use futures_util::future::LocalBoxFuture;

use super::{OutboxRecord, SendOutcome, TurnCommit};

/// Writes a commit to the cluster first. An error means the commit must not be applied
/// here (this node no longer holds the partition, or the cluster is unreachable).
pub trait Replicator: Send + Sync {
    fn replicate_turn(&self, commit: &TurnCommit) -> LocalBoxFuture<'static, Result<(), String>>;

    fn replicate_outcome(
        &self,
        record: &OutboxRecord,
        outcome: &SendOutcome,
    ) -> LocalBoxFuture<'static, Result<(), String>>;
}
