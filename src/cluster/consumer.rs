//! A partition's events, consumed by the node that holds its lease: a durable pull
//! consumer per partition (`p<N>`, filter `colloquy.events.<N>`, explicit acks), so a new
//! owner goes on from the last event acknowledged, and an event whose turn never
//! committed (its owner died, or was fenced out) comes again after the ack wait.
//!
//! Acknowledge an event only once its turn is committed (`Delivered::ack`). Must not:
//! decide anything about an event, or acknowledge one on its own.

use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, PullConsumer};
use async_nats::jetstream::stream::Stream;
use async_nats::jetstream::{AckKind, Message};
use futures_util::StreamExt;

use super::intake::events_subject;
use super::ClusterError;
use crate::messenger::inbound::InboundEvent;
use crate::store::JournalRecord;

/// How long the answer to a fetch that does not wait may take.
const FETCH_ANSWER_PATIENCE: Duration = Duration::from_secs(5);

/// Events delivered and not yet acknowledged, at most, per partition.
const MAX_ACK_PENDING: i64 = 1_000;

/// One partition's consumer.
pub struct PartitionEvents {
    consumer: PullConsumer,
    partition: u32,
}

/// An event as delivered, to acknowledge once its turn committed.
pub struct Delivered {
    pub event: InboundEvent,
    /// Delivered before and not acknowledged (its earlier owner never finished it).
    #[cfg_attr(not(any(test, feature = "test-support")), allow(dead_code))] // tests use it
    pub redelivered: bool,
    message: Message,
}

#[cfg_attr(not(any(test, feature = "test-support")), allow(dead_code))] // tests use it
impl Delivered {
    /// Acknowledges the event: it will not come again.
    pub async fn ack(&self) -> Result<(), ClusterError> {
        self.receipt().ack().await
    }

    /// The event, and what acknowledges it.
    pub fn split(self) -> (InboundEvent, Receipt) {
        (self.event, Receipt(self.message))
    }

    fn receipt(&self) -> Receipt {
        Receipt(self.message.clone())
    }
}

/// How a delivered event's handling ended, told to its consumer.
pub struct Receipt(Message);

impl Receipt {
    /// Its turn committed: it will not come again.
    pub async fn ack(&self) -> Result<(), ClusterError> {
        self.0.ack().await.map_err(failed)
    }

    /// Not handled: deliver it again now, ahead of later events. Not confirmed: see
    /// `nak_confirmed`.
    pub async fn nak(&self) -> Result<(), ClusterError> {
        self.0.ack_with(AckKind::Nak(None)).await.map_err(failed)
    }

    /// `nak`, confirmed by the server (one round trip, at most the JetStream context's
    /// timeout). The server takes a connection's messages in order, so confirming the
    /// last of several hand-backs confirms them all. An unconfirmed one comes again only
    /// after the ack wait, so its consumer must not fetch later events before then.
    pub async fn nak_confirmed(&self) -> Result<(), ClusterError> {
        self.0
            .double_ack_with(AckKind::Nak(None))
            .await
            .map_err(failed)
    }

    /// Where the event is in the events stream.
    pub fn stream_sequence(&self) -> Option<u64> {
        self.0.info().ok().map(|info| info.stream_sequence)
    }

    /// Still being handled: the ack wait starts over.
    pub async fn in_progress(&self) -> Result<(), ClusterError> {
        self.0.ack_with(AckKind::Progress).await.map_err(failed)
    }
}

fn failed(error: impl std::fmt::Display) -> ClusterError {
    ClusterError::JetStream(error.to_string())
}

/// Each partition's events stored and not yet acknowledged by its consumer (`None`: no
/// consumer yet), for `colloquy cluster status`.
pub async fn lags(stream: &Stream, partitions: u32) -> Vec<Option<u64>> {
    let mut lags = Vec::with_capacity(partitions as usize);
    for partition in 0..partitions {
        let info = stream
            .consumer_info(format!("p{partition}"))
            .await
            .ok()
            .map(|info| info.num_pending + u64::try_from(info.num_ack_pending).unwrap_or(0));
        lags.push(info);
    }
    lags
}

impl PartitionEvents {
    /// The durable consumer of `partition` in the events stream, created on first use; an
    /// event not acknowledged within `ack_wait` is delivered again.
    pub async fn open(
        stream: &Stream,
        partition: u32,
        ack_wait: Duration,
    ) -> Result<PartitionEvents, ClusterError> {
        let name = format!("p{partition}");
        let consumer = stream
            .get_or_create_consumer(
                &name,
                pull::Config {
                    durable_name: Some(name.clone()),
                    filter_subject: events_subject(partition),
                    ack_policy: AckPolicy::Explicit,
                    ack_wait,
                    max_ack_pending: MAX_ACK_PENDING,
                    ..Default::default()
                },
            )
            .await
            .map_err(failed)?;
        Ok(PartitionEvents {
            consumer,
            partition,
        })
    }

    pub fn partition(&self) -> u32 {
        self.partition
    }

    /// Up to `max` events, waiting at most `wait` for the first; in stream order. Returns
    /// as soon as one is there, with whatever else is ready then. After an error, events
    /// delivered meanwhile may be in this consumer's hands unseen: they come again after
    /// the ack wait, and nothing may be fetched before then.
    pub async fn next_batch(
        &self,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivered>, ClusterError> {
        // A request for one message is held by the server until one comes (or `wait`
        // ends); the rest is taken without waiting.
        let first = self
            .consumer
            .batch()
            .max_messages(1)
            .expires(wait)
            .messages()
            .await
            .map_err(failed)?;
        let mut delivered = self.read(first).await?;
        if delivered.is_empty() || max <= 1 {
            return Ok(delivered);
        }
        // A request without waiting has no timer of its own in the client: if its answer
        // is lost (its server died meanwhile), reading it would wait forever.
        let rest = async {
            let rest = self
                .consumer
                .fetch()
                .max_messages(max - 1)
                .messages()
                .await
                .map_err(failed)?;
            self.read(rest).await
        };
        let rest = tokio::time::timeout(FETCH_ANSWER_PATIENCE, rest)
            .await
            .map_err(|_| failed("a fetch was not answered"))??;
        delivered.extend(rest);
        Ok(delivered)
    }

    /// The events of one pull request's answer.
    async fn read(
        &self,
        mut messages: impl futures_util::Stream<Item = Result<Message, async_nats::Error>> + Unpin,
    ) -> Result<Vec<Delivered>, ClusterError> {
        let mut delivered = Vec::new();
        while let Some(message) = messages.next().await {
            let message = message.map_err(failed)?;
            let redelivered = message.info().map_err(failed)?.delivered > 1;
            let record: JournalRecord = match serde_json::from_slice(&message.payload) {
                Ok(record) => record,
                Err(error) => {
                    // Nothing any node could do with it: acknowledged, so it never blocks
                    // the partition, and logged.
                    log::error!("partition {}: an unreadable event: {error}", self.partition);
                    message.ack().await.map_err(failed)?;
                    continue;
                }
            };
            let event = InboundEvent::from_raw(&record.page_id, record.event, record.standby)
                .on(record.channel);
            delivered.push(Delivered {
                event,
                redelivered,
                message,
            });
        }
        Ok(delivered)
    }

    /// Events delivered (to this node or an earlier holder) and not acknowledged yet.
    pub async fn ack_pending(&mut self) -> Result<u64, ClusterError> {
        let pending = self.consumer.info().await.map_err(failed)?.num_ack_pending;
        Ok(u64::try_from(pending).unwrap_or_default())
    }

    /// Events of the partition not yet delivered: the consumer's lag.
    pub async fn lag(&mut self) -> Result<u64, ClusterError> {
        Ok(self.consumer.info().await.map_err(failed)?.num_pending)
    }
}
