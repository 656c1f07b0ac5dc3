//! Cluster intake: a verified webhook's events, published to the replicated events stream
//! before the POST is answered.
//!
//! Each event goes to `colloquy.events.<partition>`, the partition being a stable hash of
//! (channel, page, user) (`partition_of`: FNV-1a, the same on every node and in every
//! version, or partitions would move conversations between consumers), so one
//! conversation's events keep their order on one subject. Each carries `Nats-Msg-Id`
//! (`page:mid`, or a hash of the raw item for events without a mid), so a redelivery by
//! Meta within the stream's duplicate window is dropped by the server. `publish` returns
//! only once every event has its PubAck: stored on a majority of the servers.
//! Must not: answer the webhook, or decide anything about an event.

use std::future::IntoFuture;
use std::time::Duration;

use async_nats::header::HeaderMap;
use async_nats::jetstream::{context::Context, stream};
use futures_util::future::try_join_all;
use sha2::{Digest, Sha256};

use super::ClusterError;
use crate::messenger::inbound::{Channel, InboundEvent};
use crate::store::JournalRecord;

/// The stream of acknowledged webhook events.
pub const EVENTS_STREAM: &str = "COLLOQUY_EVENTS";
/// How long the server remembers a message id: Meta redelivers for hours at most.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(2 * 3600);

/// The subject of a partition's events.
pub fn events_subject(partition: u32) -> String {
    format!("colloquy.events.{partition}")
}

/// The partition of a conversation: FNV-1a 64 over channel, page and user, separated so
/// that no two different triples hash the same bytes.
pub fn partition_of(channel: Channel, page: &str, user: &str, partitions: u32) -> u32 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    for part in [channel.name(), page, user] {
        for byte in part.bytes().chain([0xff]) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(PRIME);
        }
    }
    u32::try_from(hash % u64::from(partitions.max(1))).unwrap_or(0)
}

/// The id the server deduplicates an event by.
pub fn message_id(event: &InboundEvent) -> String {
    match event.mid() {
        Some(mid) => format!("{}:{}:{mid}", event.channel.name(), event.page_id),
        None => {
            let digest = Sha256::digest(event.raw.to_string().as_bytes());
            format!(
                "{}:{}:h{}",
                event.channel.name(),
                event.page_id,
                hex::encode(&digest[..16])
            )
        }
    }
}

/// The events stream, created on first use (three replicas, or one on a lone server).
/// A work queue: an event is removed once its partition's consumer acknowledged it (its
/// turn is in the state stream), so the stream holds only what is still to handle; the
/// server's duplicate window is kept apart from the messages and still drops a
/// redelivery.
pub async fn events_stream(jetstream: &Context) -> Result<stream::Stream, ClusterError> {
    let config = |replicas| stream::Config {
        name: EVENTS_STREAM.to_string(),
        subjects: vec!["colloquy.events.*".into()],
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        num_replicas: replicas,
        duplicate_window: DUPLICATE_WINDOW,
        ..Default::default()
    };
    super::create_replicated(jetstream, config).await
}

/// Publishes every event to its partition's subject and waits for all their PubAcks;
/// how many were new (the rest were redeliveries the server dropped).
pub async fn publish(
    jetstream: &Context,
    events: &[InboundEvent],
    partitions: u32,
) -> Result<usize, ClusterError> {
    let mut acks = Vec::with_capacity(events.len());
    for event in events {
        let record = JournalRecord {
            page_id: event.page_id.clone(),
            channel: event.channel,
            standby: event.standby,
            event: event.raw.clone(),
        };
        let payload =
            serde_json::to_vec(&record).map_err(|e| ClusterError::JetStream(e.to_string()))?;
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", message_id(event).as_str());
        let partition = partition_of(event.channel, &event.page_id, event.party_id(), partitions);
        let ack = jetstream
            .publish_with_headers(events_subject(partition), headers, payload.into())
            .await
            .map_err(|e| ClusterError::JetStream(e.to_string()))?;
        acks.push(ack.into_future());
    }
    let acks = try_join_all(acks)
        .await
        .map_err(|e| ClusterError::JetStream(e.to_string()))?;
    Ok(acks.iter().filter(|ack| !ack.duplicate).count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_conversation_always_maps_to_the_same_partition_and_they_spread() {
        let first = partition_of(Channel::Messenger, "page", "user", 12);
        assert_eq!(first, partition_of(Channel::Messenger, "page", "user", 12));
        // Fixed values: a change of hash would move conversations between partitions.
        assert_eq!(
            partition_of(Channel::Messenger, "1001", "u1", 1_000_000),
            927_915
        );
        let mut counts = [0u32; 12];
        for user in 0..12_000 {
            counts[partition_of(Channel::Messenger, "p", &format!("u{user}"), 12) as usize] += 1;
        }
        assert!(counts.iter().all(|c| (800..1200).contains(c)), "{counts:?}");
        assert_ne!(
            partition_of(Channel::Messenger, "ab", "c", 1 << 30),
            partition_of(Channel::Messenger, "a", "bc", 1 << 30),
            "the parts are separated"
        );
    }
}
