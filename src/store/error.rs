//! What can go wrong in the store, as the rest of the engine sees it.
//!
//! `StoreError` names no storage-engine type: sled's errors are wrapped in the opaque
//! `BackendError`, whose message and `source()` are sled's own, so callers can log the
//! whole cause without depending on sled. Callers decide by variant (a held data directory,
//! a corrupt record, an unloaded conversation), never by inspecting the backend's error.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("cannot open the data directory {path}: {source}")]
    Open { path: String, source: BackendError },
    #[error("the data directory {path} is in use by another process (is `colloquy serve` running on it?)")]
    Locked { path: String },
    #[error("storage error: {0}")]
    Backend(#[from] BackendError),
    #[error("stored record under {key} cannot be decoded: {reason}")]
    Corrupt { key: String, reason: String },
    /// The committer could not apply or sync a cycle (or is gone, at shutdown).
    #[error("committing to disk failed: {0}")]
    Commit(String),
    /// The cluster refused the commit (this node no longer holds the conversation's
    /// partition, or the cluster is unreachable): nothing was applied.
    #[error("the cluster refused the commit: {0}")]
    Replication(String),
    /// A cluster node was handed an event of a conversation whose partition it does not
    /// hold (it was given back or taken over meanwhile): nothing was applied, and the
    /// event stays for the partition's owner.
    #[error("conversation {key} belongs to a partition this node does not hold")]
    NotHeld { key: String },
    /// A conversation's record was not loaded when an event arrived for it.
    #[error("conversation {key} is not loaded")]
    NotLoaded { key: String },
}

/// An error of the storage engine underneath (sled), opaque outside the store: it shows
/// sled's message and is sled's error as its `source()`, but its type names nothing of sled.
#[derive(Debug, Error)]
#[error(transparent)]
pub struct BackendError(sled::Error);

impl BackendError {
    /// Whether sled refused to open the directory because another process holds its lock.
    pub(super) fn is_lock_held(&self) -> bool {
        // sled reports a held lock as an Io error whose text mentions the lock.
        matches!(&self.0, sled::Error::Io(io) if io.to_string().contains("lock"))
    }
}

impl From<sled::Error> for BackendError {
    fn from(error: sled::Error) -> Self {
        BackendError(error)
    }
}

/// So that store code can `?` a sled result; only the store holds sled errors to convert.
impl From<sled::Error> for StoreError {
    fn from(error: sled::Error) -> Self {
        StoreError::Backend(BackendError(error))
    }
}

impl From<String> for StoreError {
    fn from(message: String) -> Self {
        StoreError::Commit(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn a_backend_error_shows_the_storage_engines_message_and_keeps_it_as_its_source() {
        let sled_error = sled::Error::Unsupported("not here".into());
        let shown = sled_error.to_string();
        let error = StoreError::from(sled_error);
        assert_eq!(error.to_string(), format!("storage error: {shown}"));
        assert!(error.source().is_some(), "the cause is kept for the log");
    }
}
