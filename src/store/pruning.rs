//! Retention's side of the store: removing dedup marks older than a cutoff, and what
//! earlier builds left in the sent-message index (`keys::SENT`), a chunk at a time.
//!
//! The caller (the engine's retention sweeper) says how old is too old and how many keys
//! one chunk may look at, and carries an opaque `PruneCursor` from one chunk to the next;
//! it never sees a key or a namespace. Nothing else is ever removed here: transcripts,
//! conversations, the journal and the outbox are outside every walk.

use std::future::Future;

use super::{keys, SentRef, Store, StoreError};

/// What a pruning pass walks, in this order: dedup marks, those of the legacy layout, then
/// the legacy sent index.
const WALKED_IN_ORDER: [u8; 3] = [keys::HANDLED_AT, keys::HANDLED, keys::SENT];

/// Where a pruning pass stands: the key the next chunk starts at. `default()` is the
/// start of a pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PruneCursor {
    /// The next key to look at; its first byte is the namespace being walked.
    from: Vec<u8>,
}

impl Default for PruneCursor {
    fn default() -> Self {
        PruneCursor::at_start_of(WALKED_IN_ORDER[0])
    }
}

impl PruneCursor {
    fn at_start_of(namespace: u8) -> Self {
        PruneCursor {
            from: vec![namespace],
        }
    }

    fn namespace(&self) -> u8 {
        self.from.first().copied().unwrap_or(WALKED_IN_ORDER[0])
    }

    /// The start of the namespace walked after this cursor's, if any.
    fn next_namespace(&self) -> Option<PruneCursor> {
        let walked = WALKED_IN_ORDER
            .iter()
            .position(|n| *n == self.namespace())?;
        let next = WALKED_IN_ORDER.get(walked + 1)?;
        Some(PruneCursor::at_start_of(*next))
    }
}

/// What one chunk of pruning did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pruned {
    /// Keys removed by this chunk.
    pub removed: usize,
    /// Where the next chunk goes on; `None` once the pass has walked everything.
    pub next: Option<PruneCursor>,
}

impl Store {
    /// Removes dedup marks, then entries of the sent-message index earlier builds kept,
    /// made before `older_than` (epoch ms), looking at no more than `limit` keys from
    /// `from`. A redelivery older than the retention is then handled again: the price of
    /// not keeping one key per message forever. One chunk never crosses from one walked
    /// namespace into the next, so `limit` bounds the committer's time per chunk.
    pub fn prune_dedup_marks_older_than(
        &self,
        older_than: i64,
        from: PruneCursor,
        limit: usize,
    ) -> impl Future<Output = Result<Pruned, StoreError>> + 'static {
        let older_than = u64::try_from(older_than).unwrap_or_default();
        let walked_legacy_marks = from.namespace() == keys::HANDLED;
        let store = self.clone();
        let chunk = self.submit(false, move |overlay| {
            let namespace = from.namespace();
            let mut seen = 0;
            let mut removed = 0;
            let mut last = None;
            for item in overlay.range(from.from.clone(), vec![namespace + 1]) {
                let (key, value) = item?;
                // Keys from before they carried a time count as oldest.
                if made_at(namespace, &value) < older_than {
                    overlay.remove(key.clone());
                    removed += 1;
                }
                seen += 1;
                last = Some(key);
                if seen >= limit {
                    break;
                }
            }
            let next = match last.filter(|_| seen >= limit) {
                // Resume strictly after the last key looked at.
                Some(mut key) => {
                    key.push(0);
                    Some(PruneCursor { from: key })
                }
                None => from.next_namespace(),
            };
            Ok(Pruned { removed, next })
        });
        async move {
            let pruned = chunk.await?;
            let left_legacy_marks = pruned.next.as_ref().map(PruneCursor::namespace);
            if walked_legacy_marks && left_legacy_marks != Some(keys::HANDLED) {
                store.inner.legacy_marks.recount(&store.inner.tree);
            }
            Ok(pruned)
        }
    }
}

/// When a prunable key was written, from its value.
fn made_at(namespace: u8, value: &[u8]) -> u64 {
    match namespace {
        keys::SENT => serde_json::from_slice::<SentRef>(value)
            .map_or(0, |sent| u64::try_from(sent.at).unwrap_or_default()),
        _ => value
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u64::from_be_bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::super::codec::encode;
    use super::super::testing::{
        commit_reply, journal_one, key, mark_handled, mark_handled_legacy, open, Blocking,
    };
    use super::*;
    use crate::clock::now_ms;

    /// Runs a whole pass in chunks of `limit`; how many keys it removed, per chunk.
    fn prune_pass(store: &Store, older_than: i64, limit: usize) -> Vec<usize> {
        let mut cursor = PruneCursor::default();
        let mut removed_per_chunk = Vec::new();
        loop {
            let chunk = store
                .prune_dedup_marks_older_than(older_than, cursor, limit)
                .into_blocking()
                .unwrap();
            removed_per_chunk.push(chunk.removed);
            match chunk.next {
                Some(next) => cursor = next,
                None => return removed_per_chunk,
            }
        }
    }

    /// Writes an entry of the sent-message index as earlier builds did, made at `at`.
    fn write_legacy_sent_entry(store: &Store, message_id: &str, at: i64) -> Vec<u8> {
        let key = keys::sent("page", message_id);
        let value = encode(&SentRef {
            psid: "user".into(),
            entry: 0,
            at,
        });
        let written = key.clone();
        let write = store.submit(false, move |overlay| {
            overlay.insert(written, value);
            Ok(())
        });
        write.into_blocking().unwrap();
        key
    }

    #[test]
    fn old_dedup_marks_are_pruned_in_chunks_and_new_ones_kept() {
        let (_dir, store) = open();
        for i in 0..5 {
            mark_handled(&store, &format!("m.old{i}"));
        }
        let cutoff = now_ms() + 1;
        std::thread::sleep(std::time::Duration::from_millis(5));
        mark_handled(&store, "m.new");

        let removed_per_chunk = prune_pass(&store, cutoff, 2);

        assert!(
            removed_per_chunk.iter().all(|n| *n <= 2),
            "{removed_per_chunk:?}"
        );
        assert_eq!(removed_per_chunk.iter().sum::<usize>(), 5);
        assert!(!store.is_handled("page", 1, "m.old0").unwrap());
        assert!(!store.is_handled("page", 1, "m.old4").unwrap());
        assert!(store.is_handled("page", 1, "m.new").unwrap());
    }

    #[test]
    fn old_entries_of_the_legacy_sent_message_index_are_pruned() {
        let (_dir, store) = open();
        // Data directories of earlier builds hold this index; nothing writes it any more.
        let old = write_legacy_sent_entry(&store, "m.old", 1);
        let new = write_legacy_sent_entry(&store, "m.new", now_ms());

        let removed_per_chunk = prune_pass(&store, now_ms() - 60_000, 100);

        assert_eq!(removed_per_chunk.iter().sum::<usize>(), 1);
        assert!(!store.inner.tree.contains_key(old).unwrap());
        assert!(store.inner.tree.contains_key(new).unwrap());
    }

    #[test]
    fn a_pass_walks_the_dedup_marks_then_the_legacy_ones_then_the_legacy_index_and_ends() {
        let (_dir, store) = open();
        mark_handled(&store, "m.1");
        mark_handled_legacy(&store, "m.2");
        write_legacy_sent_entry(&store, "m.1", 1);
        let everything = i64::MAX;
        let chunk = |from: PruneCursor| {
            store
                .prune_dedup_marks_older_than(everything, from, 10)
                .into_blocking()
                .unwrap()
        };

        let marks = chunk(PruneCursor::default());
        let legacy_marks = chunk(marks.next.clone().unwrap());
        let index = chunk(legacy_marks.next.clone().unwrap());

        assert_eq!(marks.removed, 1);
        assert!(!store.is_handled("page", 1, "m.1").unwrap());
        assert_eq!(legacy_marks.removed, 1);
        assert!(!store.is_handled("page", 1, "m.2").unwrap());
        assert_eq!(index.removed, 1);
        assert_eq!(index.next, None, "the pass ends after the legacy index");
    }

    #[test]
    fn marks_of_the_legacy_layout_are_found_whatever_the_time_asked() {
        let (_dir, store) = open();
        mark_handled_legacy(&store, "m.old");
        mark_handled(&store, "m.new");

        assert!(store.is_handled("page", 12345, "m.old").unwrap());
        assert!(store.is_handled("page", 1, "m.new").unwrap());
        assert!(
            !store.is_handled("page", 2, "m.new").unwrap(),
            "a mark is the event's: its time is part of it"
        );
        assert!(!store.is_handled("page", 1, "m.other").unwrap());
    }

    #[test]
    fn once_retention_removed_the_last_legacy_mark_lookups_stop_looking_there() {
        let (_dir, store) = open();
        mark_handled_legacy(&store, "m.old");
        let looks_at_legacy = || store.inner.legacy_marks.may_exist();
        assert!(
            looks_at_legacy(),
            "a legacy mark written in this process counts"
        );

        prune_pass(&store, i64::MAX, 100);

        assert!(!looks_at_legacy());
        assert!(!store.is_handled("page", 1, "m.old").unwrap());
    }

    #[test]
    fn pruning_removes_nothing_but_dedup_marks_and_the_legacy_index() {
        let (_dir, store) = open();
        let journal_seq = journal_one(&store);
        commit_reply(&store, journal_seq);
        let pending = journal_one(&store);

        let removed_per_chunk = prune_pass(&store, i64::MAX, 1);

        assert_eq!(removed_per_chunk.iter().sum::<usize>(), 1, "the one mark");
        assert!(!store.is_handled("page", 1, "m.1").unwrap());
        assert!(store.conversation(&key()).unwrap().is_some());
        assert_eq!(store.transcript(&key()).unwrap().len(), 1);
        assert_eq!(store.pending_outbox().unwrap().len(), 1);
        assert!(store.journal_contains(pending).unwrap());
    }
}
