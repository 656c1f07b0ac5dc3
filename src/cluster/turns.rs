//! A conversation's turns, replicated in the state stream: one fenced message per turn
//! on `colloquy.conv.<partition>.<conversation>`, and a partition's turns replayed into a
//! node's own sled store when it takes the partition over.
//!
//! A turn's message is the whole `TurnCommit` (record, new and changed transcript
//! entries, outbox items, timers, dedup mark) and the conversation's key: one message, so
//! one atomic write, published under the partition's lease so that a node fenced out by a
//! takeover cannot commit. Replaying a partition applies its messages in stream order; an
//! outbox item gets a fresh local id (ids are each store's own). Must not: decide what a
//! turn contains, or apply a turn the stream did not accept.

// Run by tests/cluster.rs against real NATS servers; the conversation's commit goes
// through it in `serve --cluster` once partition consumers land (docs/cluster.md).
#![cfg_attr(not(feature = "test-support"), allow(dead_code))]

use async_nats::jetstream::consumer::{pull, DeliverPolicy};
use async_nats::jetstream::stream::Stream;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::lease::{Lease, LeaseError, LeaseTable};
use super::ClusterError;
use crate::store::{ConversationKey, Store, TurnCommit};

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

/// What a turn's message carries: the conversation's key (its record does not serialize
/// it) and the commit.
#[derive(Serialize, Deserialize)]
struct TurnMessage {
    page_id: String,
    psid: String,
    commit: TurnCommit,
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
    let key = record.key();
    let message = TurnMessage {
        page_id: key.page_id.clone(),
        psid: key.psid.clone(),
        commit: TurnCommit {
            // The journal item is this node's own; the stream's consumer acks instead.
            journal_seq: None,
            ..commit.clone()
        },
    };
    let payload = serde_json::to_vec(&message).map_err(|e| LeaseError::Nats(e.to_string()))?;
    table
        .publish_fenced(
            lease,
            conversation_subject(lease.partition, &key),
            payload.into(),
        )
        .await
}

/// Applies every turn of `partition` in `stream` to `store`, in order; how many.
pub async fn replay_partition(
    stream: &Stream,
    partition: u32,
    store: &Store,
) -> Result<usize, ClusterError> {
    let jetstream = |e: &dyn std::fmt::Display| ClusterError::JetStream(e.to_string());
    let filter = format!("colloquy.conv.{partition}.>");
    if stream_count(stream, &filter).await? == 0 {
        return Ok(0);
    }
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            filter_subject: filter,
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .map_err(|e| jetstream(&e))?;
    let mut messages = consumer.messages().await.map_err(|e| jetstream(&e))?;
    let mut applied = 0;
    while let Some(message) = messages.next().await {
        let message = message.map_err(|e| jetstream(&e))?;
        let turn: TurnMessage = serde_json::from_slice(&message.payload)
            .map_err(|e| ClusterError::JetStream(format!("an unreadable turn: {e}")))?;
        apply(store, turn).await?;
        applied += 1;
        let pending = message.info().map_err(|e| jetstream(&e))?.pending;
        if pending == 0 {
            break;
        }
    }
    store
        .flush()
        .await
        .map_err(|e| ClusterError::JetStream(e.to_string()))?;
    Ok(applied)
}

/// How many messages of `stream` match `filter`.
async fn stream_count(stream: &Stream, filter: &str) -> Result<u64, ClusterError> {
    use futures_util::TryStreamExt;
    let mut subjects = stream
        .info_with_subjects(filter)
        .await
        .map_err(|e| ClusterError::JetStream(e.to_string()))?;
    let mut count = 0;
    while let Some((_, messages)) = subjects
        .try_next()
        .await
        .map_err(|e| ClusterError::JetStream(e.to_string()))?
    {
        count += u64::try_from(messages).unwrap_or(0);
    }
    Ok(count)
}

/// One replicated turn into the local store.
async fn apply(store: &Store, turn: TurnMessage) -> Result<(), ClusterError> {
    let mut commit = turn.commit;
    if let Some(record) = commit.conversation.as_mut() {
        record.page_id = turn.page_id;
        record.psid = turn.psid;
    }
    for (id, _) in commit.outbox.iter_mut() {
        *id = store
            .next_id()
            .map_err(|e| ClusterError::JetStream(e.to_string()))?;
    }
    store
        .commit_turn(commit, false)
        .await
        .map_err(|e| ClusterError::JetStream(e.to_string()))
}
