//! Reading conversations: their records, their failed events, and whether an event was
//! already handled (its dedup mark). Transcripts are read in `transcript`.
//!
//! Reads go straight to the tree and see every write whose operation has been answered.
//! Nothing here writes: a turn's writes are in `turn`, a send's outcome in `outbox`.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Mutex;

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
        // Most events are stamped after every mark: they are known new without a read.
        let may_be_marked = !self
            .inner
            .newest_marks
            .surely_unmarked(event_time, event_id);
        if may_be_marked && tree.contains_key(keys::handled_at(page_id, event_time, event_id))? {
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

/// What is known of the newest dedup marks (`keys::HANDLED_AT`), so that an event stamped
/// after every mark, the usual case, is known unmarked without a read of the tree: the
/// newest mark's time, and a hash of each id marked at that time since the store opened.
/// A mark is noted before its write is submitted, so no mark the tree has can be missed;
/// an id whose hash was noted at the newest time (a redelivery, a mark whose turn failed,
/// or a hash collision), or any older time, is still looked up. One lock for all pages:
/// a time is compared, never a page.
pub(super) struct NewestMarks(Mutex<Newest>);

struct Newest {
    /// The newest mark's time, as `keys::handled_at` orders it; `None` when there is none.
    time: Option<u64>,
    /// Hashes of every id marked at `time`; `None` when some may be missing: marks found
    /// at open (only their time is read), or more than `NEWEST_IDS_KEPT` in the time.
    ids: Option<Vec<u64>>,
}

/// Past this many marks in the same millisecond, events of that millisecond are looked
/// up in the tree (a bounded list, compared by a scan).
const NEWEST_IDS_KEPT: usize = 64;

/// An id's hash, as `Newest::ids` keeps it: fixed, since two ids that collide only cost a
/// lookup in the tree.
fn id_hash(event_id: &str) -> u64 {
    use std::hash::BuildHasher;
    foldhash::fast::FixedState::default().hash_one(event_id)
}

impl NewestMarks {
    pub(super) fn found_in(tree: &sled::Tree) -> Result<NewestMarks, StoreError> {
        let time = newest_mark_time(tree)?;
        let ids = time.is_none().then(Vec::new);
        Ok(NewestMarks(Mutex::new(Newest { time, ids })))
    }

    fn newest(&self) -> std::sync::MutexGuard<'_, Newest> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A mark of `event_id` stamped `event_time` is about to be written.
    pub(super) fn noting(&self, event_time: i64, event_id: &str) {
        let (time, id) = (keys::handled_time(event_time), id_hash(event_id));
        let mut newest = self.newest();
        let newest = &mut *newest;
        match newest.time {
            Some(newest_time) if time < newest_time => {}
            Some(newest_time) if time == newest_time => {
                if let Some(ids) = &mut newest.ids {
                    if ids.len() < NEWEST_IDS_KEPT {
                        ids.push(id);
                    } else {
                        newest.ids = None;
                    }
                }
            }
            _ => {
                newest.time = Some(time);
                let ids = newest.ids.get_or_insert_with(Vec::new);
                ids.clear();
                ids.push(id);
            }
        }
    }

    /// True when no mark of `event_id` stamped `event_time` can exist: the time is later
    /// than every mark's, or it is the newest time and the id is not among those marked then.
    pub(super) fn surely_unmarked(&self, event_time: i64, event_id: &str) -> bool {
        let time = keys::handled_time(event_time);
        let newest = self.newest();
        match newest.time {
            None => true,
            Some(newest_time) if time > newest_time => true,
            Some(newest_time) if time == newest_time => newest
                .ids
                .as_ref()
                .is_some_and(|ids| !ids.contains(&id_hash(event_id))),
            Some(_) => false,
        }
    }
}

/// The time of the newest dedup mark of any page: the last mark of each page's range.
/// A mark key that does not parse makes it "any time" (`u64::MAX`): every lookup then
/// reads the tree, as it did before anything was known.
fn newest_mark_time(tree: &sled::Tree) -> Result<Option<u64>, StoreError> {
    const UNKNOWN: Option<u64> = Some(u64::MAX);
    let mut newest = None;
    let mut from = vec![keys::HANDLED_AT];
    while let Some((first, _)) = tree.range(from.as_slice()..).next().transpose()? {
        if first.first() != Some(&keys::HANDLED_AT) {
            break;
        }
        let Some(page_marks) = keys::handled_at_page_prefix(&first) else {
            return Ok(UNKNOWN);
        };
        let Some((last, _)) = tree.scan_prefix(page_marks).next_back().transpose()? else {
            return Ok(UNKNOWN);
        };
        let Some(time) = keys::handled_at_time(&last) else {
            return Ok(UNKNOWN);
        };
        newest = newest.max(Some(time));
        from = last.to_vec();
        from.push(0); // just past it: the next page's marks, if any
    }
    Ok(newest)
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

    fn mark(store: &Store, page: &str, time: i64, event_id: &str) {
        let commit = TurnCommit {
            handled: Some((page.into(), event_id.into())),
            handled_at: Some(time),
            ..TurnCommit::default()
        };
        store.commit_turn(commit, false).into_blocking().unwrap();
    }

    /// Marks of four pages, the newest (12) on the third.
    const MARKS: [(&str, i64, &str); 6] = [
        ("p1", 5, "a"),
        ("p1", 9, "b"),
        ("p2", 7, "c"),
        ("p2", 9, "d"),
        ("p3", 12, "e"),
        ("p4", 3, "f"),
    ];

    #[test]
    fn marks_are_found_after_reopening_whatever_their_page_and_time() {
        let (dir, store) = open();
        for (page, time, id) in MARKS {
            mark(&store, page, time, id);
        }
        drop(store);
        let store = Store::open(&dir.path().join("db")).unwrap();
        for (page, time, id) in MARKS {
            assert!(
                store.is_handled(page, time, id).unwrap(),
                "{page} {time} {id}"
            );
        }
        assert!(!store.is_handled("p3", 12, "new").unwrap());
        assert!(!store.is_handled("p3", 13, "e").unwrap());
        // The newest time (of whichever page) is known, not the ids of that time: they
        // are looked up in the tree.
        assert!(!store.inner.newest_marks.surely_unmarked(12, "new"));
        assert!(store.inner.newest_marks.surely_unmarked(13, "e"));
    }

    #[test]
    fn only_an_event_after_every_mark_or_of_an_unmarked_id_at_the_newest_time_skips_the_tree() {
        let (_dir, store) = open();
        let newest = &store.inner.newest_marks;
        assert!(newest.surely_unmarked(1, "a"), "no mark at all");
        mark(&store, "p1", 10, "a");
        mark(&store, "p2", 10, "b");
        mark(&store, "p1", 4, "old");
        assert!(!newest.surely_unmarked(10, "a"));
        assert!(!newest.surely_unmarked(10, "b"));
        assert!(!newest.surely_unmarked(4, "old"));
        assert!(
            !newest.surely_unmarked(9, "never"),
            "older than the newest: looked up"
        );
        assert!(newest.surely_unmarked(10, "c"));
        assert!(newest.surely_unmarked(11, "a"));
        mark(&store, "p1", 11, "c");
        assert!(
            !newest.surely_unmarked(10, "c"),
            "no longer the newest time"
        );
        assert!(!newest.surely_unmarked(11, "c"));
        assert!(store.is_handled("p1", 10, "a").unwrap());
        assert!(store.is_handled("p1", 11, "c").unwrap());
        assert!(!store.is_handled("p1", 11, "d").unwrap());
    }

    #[test]
    fn many_marks_in_one_millisecond_are_all_looked_up() {
        let (_dir, store) = open();
        let ids: Vec<String> = (0..NEWEST_IDS_KEPT + 10).map(|n| format!("m{n}")).collect();
        for id in &ids {
            mark(&store, "p", 3, id);
        }
        for id in &ids {
            assert!(store.is_handled("p", 3, id).unwrap(), "{id}");
            assert!(!store.inner.newest_marks.surely_unmarked(3, id), "{id}");
        }
        assert!(store.inner.newest_marks.surely_unmarked(4, "m0"));
    }
}
