//! Partition leases with fencing tokens, kept in the cluster's state stream.
//!
//! A partition's lease is the last message on `colloquy.lease.<partition>`: the node
//! holding it and until when (wall-clock ms). Taking, renewing and giving back a lease
//! is a publish that expects the subject's last sequence to be the one read
//! (`Nats-Expected-Last-Subject-Sequence`), so two nodes never both succeed; the sequence
//! the server assigns is the lease's **fencing token**. Anything a holder writes under
//! its lease ([`LeaseTable::publish_fenced`]) expects the lease subject's last sequence
//! to still be that token (`Nats-Expected-Last-Subject-Sequence-Subject`, server 2.11+):
//! once another node took the partition, the server refuses the write, whatever the old
//! holder's clock says. Clocks only decide when a lease may be taken over, never safety.
//!
//! Must not: decide which partitions a node should hold (the node's ownership loop
//! does), or retry a refused write.

use std::time::Duration;

use async_nats::header::HeaderMap;
use async_nats::jetstream::context::{Context, PublishErrorKind};
use async_nats::jetstream::stream::{LastRawMessageErrorKind, Stream};
use bytes::Bytes;
use rand::Rng;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::clock::now_ms;

/// What a lease message says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// The node holding it; empty when given back.
    pub node: String,
    /// Wall-clock ms until which no other node may take it.
    pub until: i64,
    /// In a heartbeat: the node's admin listener (`http://host:port`), where the other
    /// nodes forward requests about the conversations it serves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<String>,
}

/// A lease this node holds: the partition and its fencing token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub partition: u32,
    /// The stream sequence of the lease message: what every fenced write expects.
    pub token: u64,
    pub until: i64,
}

/// Who holds a partition, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub record: Option<LeaseRecord>,
    /// The sequence of the lease message (0: the partition never had one).
    pub sequence: u64,
}

#[derive(Debug, Error)]
pub enum LeaseError {
    #[error("partition {partition} is held by {node} until {until}")]
    Held {
        partition: u32,
        node: String,
        until: i64,
    },
    /// Another node wrote the lease since it was read: this node no longer holds it, and
    /// must not write anything under it.
    #[error("partition {partition}: the lease moved on (fenced out)")]
    Fenced { partition: u32 },
    #[error("the cluster's stream: {0}")]
    Nats(String),
}

/// The leases of every partition, in the state stream.
#[derive(Clone)]
pub struct LeaseTable {
    jetstream: Context,
    stream: Stream,
    node: String,
    ttl: Duration,
}

/// The subject of a partition's lease.
pub fn lease_subject(partition: u32) -> String {
    format!("colloquy.lease.{partition}")
}

impl LeaseTable {
    /// `node`'s view of the leases in `stream`; a lease lasts `ttl` past each renewal.
    pub fn new(jetstream: Context, stream: Stream, node: &str, ttl: Duration) -> LeaseTable {
        LeaseTable {
            jetstream,
            stream,
            node: node.to_string(),
            ttl,
        }
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// Who holds `partition` now.
    pub async fn holder(&self, partition: u32) -> Result<Holder, LeaseError> {
        let last = self
            .stream
            .get_last_raw_message_by_subject(&lease_subject(partition))
            .await;
        match last {
            Ok(message) => Ok(Holder {
                record: serde_json::from_slice(&message.payload).ok(),
                sequence: message.sequence,
            }),
            Err(error) if error.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(Holder {
                record: None,
                sequence: 0,
            }),
            Err(error) => Err(LeaseError::Nats(error.to_string())),
        }
    }

    /// Takes `partition` if nobody holds it, its lease ran out, or this node holds it.
    #[cfg_attr(not(any(test, feature = "test-support")), allow(dead_code))] // tests use it
    pub async fn acquire(&self, partition: u32) -> Result<Lease, LeaseError> {
        self.take_over(partition).await.map(|(lease, _)| lease)
    }

    /// `acquire`, also saying whose lease ran out, if it was another node's that was
    /// never given back (a failover).
    pub async fn take_over(&self, partition: u32) -> Result<(Lease, Option<String>), LeaseError> {
        let holder = self.holder(partition).await?;
        let mut ran_out = None;
        if let Some(record) = &holder.record {
            let someone_else = !record.node.is_empty() && record.node != self.node;
            if someone_else && record.until > now_ms() {
                return Err(LeaseError::Held {
                    partition,
                    node: record.node.clone(),
                    until: record.until,
                });
            }
            ran_out = someone_else.then(|| record.node.clone());
        }
        let lease = self
            .write(partition, holder.sequence, self.expiry())
            .await?;
        Ok((lease, ran_out))
    }

    /// Extends `lease`; fenced when another node took the partition meanwhile. A lease
    /// message of this node's own that is newer than `lease` (an earlier renewal whose
    /// PubAck never came back, e.g. it timed out under load) is adopted and renewed:
    /// nobody else wrote in between, so the partition is still this node's.
    pub async fn renew(&self, lease: &Lease) -> Result<Lease, LeaseError> {
        match self
            .write(lease.partition, lease.token, self.expiry())
            .await
        {
            Err(LeaseError::Fenced { partition }) => {
                let holder = self.holder(partition).await?;
                let ours = holder
                    .record
                    .as_ref()
                    .is_some_and(|record| record.node == self.node && record.until > now_ms());
                if !ours {
                    return Err(LeaseError::Fenced { partition });
                }
                log::info!("partition {partition}: adopting this node's own newer lease message");
                self.write(partition, holder.sequence, self.expiry()).await
            }
            other => other,
        }
    }

    /// Gives `lease` back at once, so another node need not wait for it to run out.
    pub async fn release(&self, lease: &Lease) -> Result<(), LeaseError> {
        let record = LeaseRecord {
            node: String::new(),
            until: 0,
            admin: None,
        };
        self.publish_lease(lease.partition, lease.token, &record)
            .await
            .map(drop)
    }

    /// Publishes `payload` to `subject` only while `lease` is still the partition's
    /// current lease; the stream sequence it got.
    pub async fn publish_fenced(
        &self,
        lease: &Lease,
        subject: String,
        payload: Bytes,
    ) -> Result<u64, LeaseError> {
        let mut headers = HeaderMap::new();
        headers.insert(
            "Nats-Expected-Last-Subject-Sequence",
            lease.token.to_string().as_str(),
        );
        headers.insert(
            "Nats-Expected-Last-Subject-Sequence-Subject",
            lease_subject(lease.partition).as_str(),
        );
        self.publish(lease.partition, subject, headers, payload)
            .await
    }

    /// The JetStream context the table writes through.
    /// The state stream the leases live in.
    pub fn stream(&self) -> &Stream {
        &self.stream
    }

    pub fn jetstream(&self) -> &Context {
        &self.jetstream
    }

    /// When a lease (or heartbeat) written now runs out.
    /// How long a lease lasts past each renewal.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    pub fn expiry(&self) -> i64 {
        now_ms() + i64::try_from(self.ttl.as_millis()).unwrap_or(i64::MAX / 2)
    }

    async fn write(&self, partition: u32, expected: u64, until: i64) -> Result<Lease, LeaseError> {
        let record = LeaseRecord {
            node: self.node.clone(),
            until,
            admin: None,
        };
        let token = self.publish_lease(partition, expected, &record).await?;
        Ok(Lease {
            partition,
            token,
            until,
        })
    }

    /// Writes a lease message expecting the lease subject's last sequence to be
    /// `expected` (0: no lease message yet).
    async fn publish_lease(
        &self,
        partition: u32,
        expected: u64,
        record: &LeaseRecord,
    ) -> Result<u64, LeaseError> {
        let payload = serde_json::to_vec(record).map_err(|e| LeaseError::Nats(e.to_string()))?;
        let mut headers = HeaderMap::new();
        headers.insert(
            "Nats-Expected-Last-Subject-Sequence",
            expected.to_string().as_str(),
        );
        self.publish(partition, lease_subject(partition), headers, payload.into())
            .await
    }

    async fn publish(
        &self,
        partition: u32,
        subject: String,
        headers: HeaderMap,
        payload: Bytes,
    ) -> Result<u64, LeaseError> {
        let deadline = tokio::time::Instant::now() + CONTENDED_PATIENCE;
        loop {
            let published = self
                .publish_once(partition, subject.clone(), headers.clone(), payload.clone())
                .await;
            match published {
                Err(Refusal::InFlight) if tokio::time::Instant::now() < deadline => {
                    // Another write checked against the same lease is being replicated:
                    // the server takes one at a time. Try again in a moment.
                    let pause = rand::thread_rng().gen_range(200..2_000);
                    tokio::time::sleep(Duration::from_micros(pause)).await;
                }
                Err(Refusal::InFlight) => {
                    return Err(LeaseError::Nats(format!(
                        "partition {partition}: writes kept colliding for {CONTENDED_PATIENCE:?}"
                    )))
                }
                Err(Refusal::Error(error)) => return Err(error),
                Ok(sequence) => return Ok(sequence),
            }
        }
    }

    async fn publish_once(
        &self,
        partition: u32,
        subject: String,
        headers: HeaderMap,
        payload: Bytes,
    ) -> Result<u64, Refusal> {
        // "wrong last sequence" comes in two kinds. Code 10071 (async-nats names it): the
        // expected subject's last sequence differs, another lease message exists: fenced.
        // Code 10164 (not named): in a clustered stream, another write with an expected
        // sequence for the same subject is still being replicated, and the server takes
        // one at a time: nothing is decided, try again.
        let refused = |kind: PublishErrorKind, error: String| match kind {
            PublishErrorKind::WrongLastSequence => Refusal::Error(LeaseError::Fenced { partition }),
            _ if error.contains("10164") => Refusal::InFlight,
            _ if error.contains("wrong last sequence") => {
                Refusal::Error(LeaseError::Fenced { partition })
            }
            _ => Refusal::Error(LeaseError::Nats(error)),
        };
        let ack = self
            .jetstream
            .publish_with_headers(subject, headers, payload)
            .await
            .map_err(|e| refused(e.kind(), e.to_string()))?
            .await
            .map_err(|e| refused(e.kind(), e.to_string()))?;
        Ok(ack.sequence)
    }
}

/// How long a write keeps trying while other writes under the same lease are in flight.
const CONTENDED_PATIENCE: Duration = Duration::from_secs(5);

/// Why one publish did not land.
enum Refusal {
    InFlight,
    Error(LeaseError),
}
