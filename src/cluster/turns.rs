//! A conversation's turns and send outcomes, replicated in the state stream: one fenced
//! message per turn, and one per send outcome, on `colloquy.conv.<partition>.<conversation>`;
//! a partition's messages replayed into a node's own sled store when it takes the
//! partition over, so the outbox it resumes owes exactly what was not sent yet.
//!
//! A turn's message is the whole `TurnCommit` (record, new and changed transcript
//! entries, outbox items, timers, dedup mark) and the conversation's key: one message, so
//! one atomic write, published under the partition's lease so that a node fenced out by a
//! takeover cannot commit. Replaying a partition applies its messages in stream order; an
//! outbox item gets a fresh local id (ids are each store's own). Must not: decide what a
//! turn contains, or apply a turn the stream did not accept.

use async_nats::jetstream::consumer::{pull, DeliverPolicy};
use async_nats::jetstream::stream::Stream;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use std::collections::HashMap;

use super::lease::{Lease, LeaseError, LeaseTable};
use super::ClusterError;
use crate::store::{ConversationKey, OutboxRecord, SendOutcome, Store, TurnCommit};

/// The subject of one conversation's turns: its partition, then a digest of its key (ids
/// from the network may hold characters a subject cannot).
pub fn conversation_subject(partition: u32, key: &ConversationKey) -> String {
    let mut hasher = Sha256::new();
    hasher.update(key.page_id.as_bytes());
    hasher.update([0]);
    hasher.update(key.psid.as_bytes());
    format!(
        "colloquy.conv.{partition}.{}",
        hex::encode(&hasher.finalize()[..16])
    )
}

/// What a conversation's message carries: its key (its record does not serialize it)
/// and a turn or a send outcome.
#[derive(Serialize, Deserialize)]
struct ConversationMessage {
    page_id: String,
    psid: String,
    #[serde(flatten)]
    change: Replicated,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Replicated {
    Turn {
        commit: Box<TurnCommit>,
    },
    /// How the reply of transcript entry `entry` ended.
    Outcome {
        entry: u64,
        attempts: u32,
        outcome: SendOutcome,
    },
}

/// Publishes `commit` as its conversation's next turn under `lease`; the stream
/// sequence it got. Fenced once the partition has a newer lease.
pub async fn publish_turn(
    table: &LeaseTable,
    lease: &Lease,
    commit: &TurnCommit,
) -> Result<u64, LeaseError> {
    let Some(record) = &commit.conversation else {
        return Err(LeaseError::Nats("a turn without its conversation".into()));
    };
    let commit = TurnCommit {
        // The journal item is this node's own; the stream's consumer acks instead.
        journal_seq: None,
        ..commit.clone()
    };
    let commit = Box::new(commit);
    publish(table, lease, &record.key(), Replicated::Turn { commit }).await
}

/// Publishes how the send of `record` ended, under `lease`.
pub async fn publish_outcome(
    table: &LeaseTable,
    lease: &Lease,
    record: &OutboxRecord,
    outcome: &SendOutcome,
) -> Result<u64, LeaseError> {
    let key = ConversationKey::new(record.page_id.clone(), record.psid.clone());
    let change = Replicated::Outcome {
        entry: record.entry,
        attempts: record.attempts,
        outcome: outcome.clone(),
    };
    publish(table, lease, &key, change).await
}

async fn publish(
    table: &LeaseTable,
    lease: &Lease,
    key: &ConversationKey,
    change: Replicated,
) -> Result<u64, LeaseError> {
    let message = ConversationMessage {
        page_id: key.page_id.clone(),
        psid: key.psid.clone(),
        change,
    };
    let payload = serde_json::to_vec(&message).map_err(|e| LeaseError::Nats(e.to_string()))?;
    table
        .publish_fenced(
            lease,
            conversation_subject(lease.partition, key),
            payload.into(),
        )
        .await
}

/// Brings `store` up to date with `partition`: applies, in stream order, the messages
/// after its last replay of the partition, skipping the turns it committed itself (its
/// conversation's `stream_seq` already covers them) and outcomes of replies it does not
/// owe. Returns how many it applied. Call it holding the partition's lease, before
/// handling any of its events: nobody else writes the partition meanwhile.
pub async fn replay_partition(
    stream: &Stream,
    partition: u32,
    store: &Store,
) -> Result<usize, ClusterError> {
    let jetstream = |e: &dyn std::fmt::Display| ClusterError::JetStream(e.to_string());
    let failed = |e: crate::store::StoreError| ClusterError::JetStream(e.to_string());
    let filter = format!("colloquy.conv.{partition}.>");
    let from = store.replayed_through(partition).map_err(failed)? + 1;
    let mut consumer = stream
        .create_consumer(pull::OrderedConfig {
            filter_subject: filter,
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: from,
            },
            ..Default::default()
        })
        .await
        .map_err(|e| jetstream(&e))?;
    let info = consumer.info().await.map_err(|e| jetstream(&e))?;
    if info.num_pending == 0 {
        return Ok(0);
    }
    let mut messages = consumer.messages().await.map_err(|e| jetstream(&e))?;
    let mut owed = owed_here(store)?;
    let mut applied = 0;
    let mut through = 0;
    while let Some(message) = messages.next().await {
        let message = message.map_err(|e| jetstream(&e))?;
        let info = message.info().map_err(|e| jetstream(&e))?;
        let (seq, pending) = (info.stream_sequence, info.pending);
        let change: ConversationMessage = serde_json::from_slice(&message.payload)
            .map_err(|e| ClusterError::JetStream(format!("an unreadable turn: {e}")))?;
        if apply(store, change, seq, &mut owed).await? {
            applied += 1;
        }
        through = seq;
        if pending == 0 {
            break;
        }
    }
    store
        .set_replayed_through(partition, through)
        .await
        .map_err(failed)?;
    Ok(applied)
}

/// The replies this store owes, by conversation and transcript entry: their local
/// outbox id, for the outcome that ends them.
type Owed = HashMap<(ConversationKey, u64), (u64, OutboxRecord)>;

fn owed_here(store: &Store) -> Result<Owed, ClusterError> {
    let pending = store
        .pending_outbox()
        .map_err(|e| ClusterError::JetStream(e.to_string()))?;
    Ok(pending
        .into_iter()
        .map(|(id, item)| ((item.conversation(), item.entry), (id, item)))
        .collect())
}

/// One replicated message (stream sequence `seq`) into the local store; whether it
/// changed anything.
async fn apply(
    store: &Store,
    message: ConversationMessage,
    seq: u64,
    owed: &mut Owed,
) -> Result<bool, ClusterError> {
    let failed = |e: crate::store::StoreError| ClusterError::JetStream(e.to_string());
    let key = ConversationKey::new(message.page_id, message.psid);
    match message.change {
        Replicated::Turn { mut commit } => {
            let held = store.conversation(&key).map_err(failed)?;
            if held.is_some_and(|record| record.stream_seq >= seq) {
                // Committed by this node itself while it held the partition before.
                return Ok(false);
            }
            if let Some(record) = commit.conversation.as_mut() {
                record.page_id = key.page_id.clone();
                record.psid = key.psid.clone();
                record.stream_seq = seq;
            }
            for (id, item) in commit.outbox.iter_mut() {
                *id = store.next_id().map_err(failed)?;
                owed.insert((key.clone(), item.entry), (*id, item.clone()));
            }
            store.commit_turn(*commit, false).await.map_err(failed)?;
            Ok(true)
        }
        Replicated::Outcome {
            entry,
            attempts,
            outcome,
        } => {
            let Some((id, mut item)) = owed.remove(&(key, entry)) else {
                // Ended here already (this node sent it, or an earlier replay ended it).
                return Ok(false);
            };
            item.attempts = attempts;
            store
                .complete_send(id, item, outcome)
                .await
                .map_err(failed)?;
            Ok(true)
        }
    }
}
