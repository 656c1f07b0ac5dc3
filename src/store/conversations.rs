//! Reading conversations: their records, their failed events, and whether an event was
//! already handled (its dedup mark). Transcripts are read in `transcript`.
//!
//! Reads go straight to the tree and see every write whose operation has been answered.
//! Nothing here writes: a turn's writes are in `turn`, a send's outcome in `outbox`.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

use super::codec::{decode, decode_conversation};
use super::{keys, ConversationKey, ConversationRecord, FailedEvent, Store, StoreError};

impl Store {
    /// The events of a conversation its flow failed on and no operator replayed or
    /// skipped since, by their transcript entry.
    pub fn failed_events(
        &self,
        key: &ConversationKey,
    ) -> Result<Vec<(u64, FailedEvent)>, StoreError> {
        self.inner
            .tree
            .scan_prefix(keys::failed_events(&key.page_id, &key.psid))
            .map(|item| {
                let (stored, value) = item?;
                let entry = keys::trailing_seq(&stored).unwrap_or_default();
                Ok((entry, decode(&stored, &value)?))
            })
            .collect()
    }

    pub fn conversation(
        &self,
        key: &ConversationKey,
    ) -> Result<Option<ConversationRecord>, StoreError> {
        let stored = keys::conversation(&key.page_id, &key.psid);
        match self.inner.tree.get(&stored)? {
            Some(bytes) => Ok(Some(decode_conversation(&stored, &bytes)?)),
            None => Ok(None),
        }
    }

    /// Every conversation record, in key order (page, then psid).
    pub fn conversations(&self) -> Result<Vec<ConversationRecord>, StoreError> {
        self.inner
            .tree
            .scan_prefix([keys::CONVERSATION])
            .map(|item| {
                let (key, value) = item?;
                decode_conversation(&key, &value)
            })
            .collect()
    }

    /// Up to `limit` conversation records in key order (page, then psid), of one page or
    /// of all, starting just after `after` (a walk in batches: keys never move, so a
    /// walk sees each conversation that exists throughout it exactly once). A record
    /// that does not decode is skipped with a warning, as the list does.
    pub fn conversations_after(
        &self,
        page_id: Option<&str>,
        after: Option<&ConversationKey>,
        limit: usize,
    ) -> Result<Vec<ConversationRecord>, StoreError> {
        let prefix = match page_id {
            Some(page) => keys::conversations_of_page(page),
            None => vec![keys::CONVERSATION],
        };
        let start = match after {
            Some(key) => {
                let mut start = keys::conversation(&key.page_id, &key.psid);
                start.push(0); // just past it
                start
            }
            None => prefix.clone(),
        };
        let mut records = Vec::with_capacity(limit.min(1024));
        for item in self.inner.tree.range(start..) {
            let (key, value) = item?;
            if !key.starts_with(&prefix) {
                break;
            }
            match decode_conversation(&key, &value) {
                Ok(record) => records.push(record),
                Err(error) => log::warn!("a walk of the conversations skips one: {error}"),
            }
            if records.len() >= limit.max(1) {
                break;
            }
        }
        Ok(records)
    }

    /// The conversations of one user, on any page. Only the matching records are
    /// decoded: the psid is the key's last component, so it is compared on the key.
    pub fn conversations_of(&self, psid: &str) -> Result<Vec<ConversationRecord>, StoreError> {
        let suffix = keys::conversation_suffix(psid);
        self.inner
            .tree
            .scan_prefix([keys::CONVERSATION])
            .filter(|item| {
                item.as_ref()
                    .map_or(true, |(key, _)| key.ends_with(&suffix))
            })
            .map(|item| {
                let (key, value) = item?;
                decode_conversation(&key, &value)
            })
            .filter(|record| record.as_ref().map_or(true, |r| r.psid == psid))
            .collect()
    }

    /// Whether the event of `page_id` stamped `event_time` with this dedup id was handled
    /// (its mark is kept for the retention).
    pub fn is_handled(
        &self,
        page_id: &str,
        event_time: i64,
        event_id: &str,
    ) -> Result<bool, StoreError> {
        let tree = &self.inner.tree;
        if tree.contains_key(keys::handled_at(page_id, event_time, event_id))? {
            return Ok(true);
        }
        // Marks written before they were ordered by time, until retention removed them.
        Ok(self.inner.legacy_marks.may_exist()
            && tree.contains_key(keys::handled(page_id, event_id))?)
    }
}

/// Whether dedup marks of the legacy layout (`keys::HANDLED`) may still exist, so a
/// redelivery is looked up there too. Found at open, noted again when a turn replicated
/// by an earlier build writes one, recounted when retention has walked them.
pub(super) struct LegacyMarks(AtomicBool);

impl LegacyMarks {
    pub(super) fn found_in(tree: &sled::Tree) -> LegacyMarks {
        LegacyMarks(AtomicBool::new(LegacyMarks::any_in(tree)))
    }

    fn any_in(tree: &sled::Tree) -> bool {
        tree.scan_prefix([keys::HANDLED]).next().is_some()
    }

    pub(super) fn may_exist(&self) -> bool {
        self.0.load(Relaxed)
    }

    /// One was (or is about to be) written.
    pub(super) fn written(&self) {
        self.0.store(true, Relaxed);
    }

    pub(super) fn recount(&self, tree: &sled::Tree) {
        self.0.store(LegacyMarks::any_in(tree), Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{open, Blocking};
    use super::super::TurnCommit;
    use super::*;

    #[test]
    fn a_walk_in_batches_sees_every_conversation_once_in_key_order() {
        let (_dir, store) = open();
        for (page, psid) in [
            ("p1", "a"),
            ("p1", "b"),
            ("p2", "a"),
            ("p2", "c"),
            ("p1", "c"),
        ] {
            let record = ConversationRecord::new(&ConversationKey::new(page, psid));
            store
                .commit_turn(
                    TurnCommit {
                        conversation: Some(record),
                        ..TurnCommit::default()
                    },
                    false,
                )
                .into_blocking()
                .unwrap();
        }
        let walk = |page: Option<&str>| {
            let mut seen = Vec::new();
            let mut after: Option<ConversationKey> = None;
            loop {
                let batch = store.conversations_after(page, after.as_ref(), 2).unwrap();
                let Some(last) = batch.last() else { break };
                after = Some(last.key());
                seen.extend(batch.iter().map(|r| format!("{}/{}", r.page_id, r.psid)));
            }
            seen
        };
        assert_eq!(walk(None), ["p1/a", "p1/b", "p1/c", "p2/a", "p2/c"]);
        assert_eq!(walk(Some("p2")), ["p2/a", "p2/c"]);
        assert!(walk(Some("p3")).is_empty());
    }
}
