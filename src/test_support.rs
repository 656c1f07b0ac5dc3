//! Reaches into the engine for the crate's own integration tests and benchmarks only
//! (feature `test-support`). Nothing here is part of the public API.

pub use crate::cluster::consumer::{Delivered, PartitionEvents};
pub use crate::cluster::intake::{
    events_stream, events_subject, partition_of, publish as publish_events,
};
pub use crate::cluster::node::{start_node, NodeSettings};
pub use crate::cluster::replication::{HeldLease, HeldLeases, LeaseReplicator, Serving};
pub use crate::cluster::turns::{publish_outcome, publish_turn, replay_partition};
pub use crate::cluster::{
    connect as cluster_connect, lease::lease_subject, ownership::Ownership, state_stream, Holder,
    Lease, LeaseError, LeaseTable,
};
pub use crate::console::{chat, ChatArgs, ChatError, Terminal};
pub use crate::engine::app::start_replicated;
pub use crate::graph::batch::request_fields as batch_request_fields;
pub use crate::store::{
    keys, ConversationKey, ConversationRecord, Direction, Failure, JournalRecord, ListFilter,
    OutboxRecord, Outgoing, Replicator, SendOutcome, SendPermission, Status, Store, StoreRelease,
    TranscriptEntry, TurnCommit,
};
pub use crate::webhook::deletion::sign_request as sign_deletion_request;
pub use crate::webhook::signature::{sign_sha1, sign_sha256, verify, HEADER_SHA256};
pub use crate::webhook::steering::Side as WebhookSide;
