//! The cluster backend on NATS JetStream: what several colloquy nodes share, and a node
//! of them (`node.rs`, `colloquy serve --cluster`).
//!
//! The connection (`connect`), the state stream every node writes to (`state_stream`,
//! replicated as far as the NATS cluster allows, up to three ways), partition leases with
//! fencing tokens (`lease.rs`), each node's fair share of the partitions
//! (`ownership.rs`), the events stream (`intake.rs`) and each partition's durable consumer
//! of it (`consumer.rs`) feeding the engine (`partition.rs`), and turns committed under a
//! lease and replayed by a new owner (`turns.rs`, `replication.rs`). The design is in
//! `docs/cluster.md`. Single-node mode (sled alone) does not use this module. Must not:
//! run flows, or write the store except through the engine's seams.

pub mod consumer;
pub mod intake;
pub mod lease;
pub mod node;
pub mod ownership;
pub mod partition;
pub mod replication;
pub mod turns;

use async_nats::jetstream::{self, context::Context, stream};
use thiserror::Error;

#[cfg_attr(not(feature = "test-support"), allow(unused_imports))]
pub use lease::{Holder, Lease, LeaseError, LeaseTable};

/// The stream holding leases (`colloquy.lease.<partition>`), node heartbeats
/// (`colloquy.node.<name>`) and, as the cluster grows,
/// each conversation's committed turns (`colloquy.conv.<partition>.<conversation>`).
pub const STATE_STREAM: &str = "COLLOQUY_STATE";

/// Partitions unless `COLLOQUY_PARTITIONS` says otherwise: enough to spread over a few
/// nodes evenly, few enough that a node takes its share over in one round of leases.
pub const DEFAULT_PARTITIONS: u32 = 12;

/// Replicas wanted for the cluster's streams: survives losing any one NATS server.
const REPLICAS: usize = 3;

#[derive(Debug, Error)]
pub enum ClusterError {
    #[error("cannot reach NATS at {urls}: {reason}")]
    Connect { urls: String, reason: String },
    #[error("JetStream: {0}")]
    JetStream(String),
}

/// Connects to the NATS servers listed in `urls` (comma-separated `nats://host:port`).
pub async fn connect(urls: &str) -> Result<Context, ClusterError> {
    let addresses: Vec<&str> = urls
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect();
    let client = async_nats::ConnectOptions::new()
        .name("colloquy")
        .retry_on_initial_connect()
        .connection_timeout(std::time::Duration::from_secs(5))
        .connect(addresses.as_slice())
        .await
        .map_err(|error| ClusterError::Connect {
            urls: urls.to_string(),
            reason: error.to_string(),
        })?;
    Ok(jetstream::new(client))
}

/// The state stream, created on first use: three replicas, or one on a NATS server that
/// is not part of a cluster (a developer's single server).
pub async fn state_stream(jetstream: &Context) -> Result<stream::Stream, ClusterError> {
    let config = |replicas| stream::Config {
        name: STATE_STREAM.to_string(),
        subjects: vec![
            "colloquy.lease.*".into(),
            "colloquy.node.*".into(),
            "colloquy.conv.>".into(),
        ],
        storage: stream::StorageType::File,
        num_replicas: replicas,
        allow_direct: true,
        ..Default::default()
    };
    create_replicated(jetstream, config).await
}

/// Gets or creates the stream `config` describes with three replicas, or with one when
/// the server is not part of a cluster.
/// A clustered JetStream may not answer while a server restarts and the stream elects a
/// leader; a node starting meanwhile waits this long for it, instead of exiting.
const STREAM_SETUP_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

async fn create_replicated(
    jetstream: &Context,
    config: impl Fn(usize) -> stream::Config,
) -> Result<stream::Stream, ClusterError> {
    let deadline = tokio::time::Instant::now() + STREAM_SETUP_PATIENCE;
    loop {
        match jetstream.get_or_create_stream(config(REPLICAS)).await {
            Ok(stream) => return Ok(stream),
            Err(error) if !clustered(jetstream) => {
                log::info!("NATS is a single server ({error}); streams have one replica");
                return jetstream
                    .get_or_create_stream(config(1))
                    .await
                    .map_err(|error| ClusterError::JetStream(error.to_string()));
            }
            Err(error) if tokio::time::Instant::now() < deadline => {
                log::warn!("JetStream not ready ({error}); trying again");
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            Err(error) => return Err(ClusterError::JetStream(error.to_string())),
        }
    }
}

/// Whether the server this client is connected to belongs to a NATS cluster.
fn clustered(jetstream: &Context) -> bool {
    let info = jetstream.client().server_info();
    info.cluster.as_deref().is_some_and(|name| !name.is_empty())
}

/// The subjects of `stream` matching `filter`, with how many messages each holds.
pub(crate) async fn subjects(
    stream: &stream::Stream,
    filter: &str,
) -> Result<Vec<(String, usize)>, ClusterError> {
    use futures_util::TryStreamExt;
    let failed = |error: &dyn std::fmt::Display| ClusterError::JetStream(error.to_string());
    let mut listed = stream
        .info_with_subjects(filter)
        .await
        .map_err(|e| failed(&e))?;
    let mut subjects = Vec::new();
    while let Some(subject) = listed.try_next().await.map_err(|e| failed(&e))? {
        subjects.push(subject);
    }
    Ok(subjects)
}

/// Who holds each of `partitions` partitions, for `colloquy cluster status`.
pub async fn holders(table: &LeaseTable, partitions: u32) -> Result<Vec<Holder>, LeaseError> {
    let mut holders = Vec::with_capacity(partitions as usize);
    for partition in 0..partitions {
        holders.push(table.holder(partition).await?);
    }
    Ok(holders)
}

/// The nodes `colloquy cluster status` prints: each node's last heartbeat.
pub fn describe_nodes(beats: &[lease::LeaseRecord], now: i64) -> String {
    if beats.is_empty() {
        return "no node has joined the cluster\n".to_string();
    }
    let mut out = format!("{:<24} {}\n", "node", "state");
    for beat in beats {
        let state = if beat.until > now {
            format!(
                "alive ({:.1} s to its next heartbeat)",
                (beat.until - now) as f64 / 1000.0
            )
        } else {
            format!(
                "gone ({:.1} s since its heartbeat ran out)",
                (now - beat.until) as f64 / 1000.0
            )
        };
        out.push_str(&format!("{:<24} {state}\n", beat.node));
    }
    out
}

/// The table `colloquy cluster status` prints: one line per partition.
pub fn describe_holders(holders: &[Holder], lags: &[Option<u64>], now: i64) -> String {
    let mut out = format!(
        "{:<10} {:<24} {:>8} {}\n",
        "partition", "node", "lag", "lease"
    );
    for (partition, holder) in holders.iter().enumerate() {
        let lag = lags
            .get(partition)
            .copied()
            .flatten()
            .map_or_else(|| "-".to_string(), |lag| lag.to_string());
        let (node, lease) = match &holder.record {
            Some(record) if !record.node.is_empty() && record.until > now => (
                record.node.as_str(),
                format!(
                    "held, {:.1} s left (token {})",
                    (record.until - now) as f64 / 1000.0,
                    holder.sequence
                ),
            ),
            Some(record) if !record.node.is_empty() => {
                (record.node.as_str(), "expired: free to take".to_string())
            }
            _ => ("-", "free".to_string()),
        };
        out.push_str(&format!("{partition:<10} {node:<24} {lag:>8} {lease}\n"));
    }
    out
}
