//! Deletion requests (Meta's data-deletion callback): each one recorded under its
//! confirmation code, written durably through the committer, and read back by code for
//! its status page (and all of them, newest first, for operators).
//!
//! Must not: decide what a deletion forgets (the conversation actors do, as for an
//! operator's forget), or keep more of the user than the id Meta named.

use std::future::Future;

use super::codec::{decode, encode};
use super::{keys, DeletionRequest, Store, StoreError};

impl Store {
    /// Writes a deletion request (a new one, or one whose status moved), durably: resolves
    /// once it is on disk.
    pub fn record_deletion_request(
        &self,
        request: DeletionRequest,
    ) -> impl Future<Output = Result<(), StoreError>> + 'static {
        self.submit(true, move |overlay| {
            overlay.insert(keys::deletion_request(&request.code), encode(&request));
            Ok(())
        })
    }

    /// Every deletion request, newest first (one per request Meta made: a short list).
    pub fn deletion_requests(&self) -> Result<Vec<DeletionRequest>, StoreError> {
        let mut requests = self
            .inner
            .tree
            .scan_prefix([keys::DELETION_REQUEST])
            .map(|item| {
                let (key, value) = item?;
                decode(&key, &value)
            })
            .collect::<Result<Vec<DeletionRequest>, StoreError>>()?;
        requests.sort_by_key(|request| std::cmp::Reverse(request.requested_at));
        Ok(requests)
    }

    /// The deletion request with this confirmation code, if there is one.
    pub fn deletion_request(&self, code: &str) -> Result<Option<DeletionRequest>, StoreError> {
        self.get(&keys::deletion_request(code))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{open, Blocking};
    use super::super::DeletionStatus;
    use super::*;

    #[test]
    fn a_deletion_request_is_read_back_by_its_code_after_a_reopen() {
        let (dir, store) = open();
        let mut request = DeletionRequest {
            code: "00ff".into(),
            user_id: "42".into(),
            requested_at: 1,
            status: DeletionStatus::Pending,
            conversations_forgotten: 0,
            updated_at: 1,
        };
        store
            .record_deletion_request(request.clone())
            .into_blocking()
            .unwrap();
        request.status = DeletionStatus::Completed;
        request.conversations_forgotten = 2;
        store
            .record_deletion_request(request.clone())
            .into_blocking()
            .unwrap();
        drop(store);
        let store = Store::open(&dir.path().join("db")).unwrap();
        assert_eq!(store.deletion_request("00ff").unwrap(), Some(request));
        assert_eq!(store.deletion_request("00fe").unwrap(), None);
    }
}
