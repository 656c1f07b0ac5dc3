//! The activity index: one entry per conversation, ordered by its last activity (to the
//! second, newest first), holding what the list filters by (`listing`: paused, failed
//! replies, failed events, interview tree and status). The admin list pages through it
//! with an opaque cursor instead of scanning every conversation.
//!
//! Entries are moved by `turn`, in the same operation as the conversation record (and
//! flagged by `outbox` when a reply fails); here they are read, and built once for a
//! store written before the index (or this version of it) existed. Must not: write an
//! entry on its own while the store runs (it would drift from the record).

use super::codec::decode_conversation;
use super::listing::{tree_has_any, Listing, TreeStatus};
use super::turn::activity_second;
use super::{keys, ConversationRecord, Store, StoreError};
use crate::messenger::inbound::Channel;

/// Which conversations a list wants; every field narrows it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListFilter {
    pub page_id: Option<String>,
    pub psid_prefix: Option<String>,
    pub paused: Option<bool>,
    /// Last activity at or after this time (epoch ms).
    pub active_since: Option<i64>,
    /// Last activity before this time (epoch ms).
    pub active_until: Option<i64>,
    /// Has (true) or has no (false) failed replies kept for a retry.
    pub failed_replies: Option<bool>,
    /// Has (true) or has no (false) events the flow failed on, kept for a replay.
    pub stuck: Option<bool>,
    /// In (or last in) this interview tree.
    pub tree: Option<String>,
    pub tree_status: Option<TreeStatus>,
    /// Only Messenger, or only Instagram, conversations.
    pub channel: Option<Channel>,
}

/// One page of a list, and where the next one starts (`None` after the last).
#[derive(Debug, Clone, PartialEq)]
pub struct ListPage {
    pub conversations: Vec<ConversationRecord>,
    /// Whether each conversation (same order) keeps failed replies, as its index entry says.
    pub failed_replies: Vec<bool>,
    pub next_cursor: Option<String>,
}

/// Marks a store whose activity index is complete.
const INDEX_BUILT: &str = "activity_index_v2";

impl Store {
    /// Up to `limit` conversations matching `filter`, newest activity first, after the
    /// position `cursor` (from an earlier page) when given. `None` for a cursor this
    /// store did not make.
    pub fn list_conversations(
        &self,
        filter: &ListFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Option<ListPage>, StoreError> {
        let start = match cursor {
            Some(cursor) => match decode_cursor(cursor) {
                Some(mut key) => {
                    key.push(0); // just past the last entry returned
                    key
                }
                None => return Ok(None),
            },
            None => keys::activity_from(filter.active_until.map_or(u64::MAX, activity_second)),
        };
        let oldest_second = filter.active_since.map_or(0, activity_second);
        let mut page = ListPage {
            conversations: Vec::new(),
            failed_replies: Vec::new(),
            next_cursor: None,
        };
        for item in self.inner.tree.range(start..vec![keys::ACTIVITY + 1]) {
            let (key, value) = item?;
            let Some((second, page_id, psid)) = keys::activity_parts(&key) else {
                continue;
            };
            if second < oldest_second {
                break;
            }
            let listing = Listing::decode(&value);
            if !filter.matches_entry(&page_id, &psid, &listing) {
                continue;
            }
            let record_key = keys::conversation(&page_id, &psid);
            let Some(bytes) = self.inner.tree.get(&record_key)? else {
                continue;
            };
            let record = match decode_conversation(&record_key, &bytes) {
                Ok(record) => record,
                Err(error) => {
                    // One unreadable record must not hide every other conversation.
                    log::warn!("listing skips a conversation: {error}");
                    continue;
                }
            };
            if !filter.matches_activity(record.last_activity) {
                continue;
            }
            page.conversations.push(record);
            page.failed_replies.push(listing.failed_reply);
            if page.conversations.len() >= limit.max(1) {
                page.next_cursor = Some(hex::encode(&key));
                break;
            }
        }
        Ok(Some(page))
    }

    /// Builds the activity index from the conversation records once, for a store written
    /// before it existed. Runs before the committer starts, so nothing else writes.
    pub(super) fn build_activity_index_if_missing(tree: &sled::Tree) -> Result<(), StoreError> {
        if tree.contains_key(keys::meta(INDEX_BUILT))? {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        let mut built = 0usize;
        for item in tree.scan_prefix([keys::CONVERSATION]) {
            let (key, value) = item?;
            let Some((page_id, psid)) = keys::conversation_parts(&key) else {
                continue;
            };
            // An unreadable record is listed as long inactive rather than stopping the
            // start: its conversation fails on its own (see docs/guarantees.md).
            let record = decode_conversation(&key, &value).unwrap_or_else(|_| {
                ConversationRecord::new(&super::ConversationKey::new(&page_id, &psid))
            });
            let listing = Listing::of(
                &record,
                tree_has_any(tree, keys::failed_replies(&page_id, &psid))?,
                tree_has_any(tree, keys::failed_events(&page_id, &psid))?,
            );
            batch.insert(
                keys::activity(activity_second(record.last_activity), &page_id, &psid),
                listing.encode(),
            );
            built += 1;
        }
        batch.insert(keys::meta(INDEX_BUILT), &b"1"[..]);
        tree.apply_batch(batch)?;
        tree.flush()?;
        if built > 0 {
            log::info!("built the activity index of {built} conversation(s)");
        }
        Ok(())
    }
}

impl ListFilter {
    /// Whether a conversation record passes every field of the filter (for walks that
    /// read records rather than the index, like the export).
    pub fn matches(&self, record: &ConversationRecord) -> bool {
        self.matches_entry(
            &record.page_id,
            &record.psid,
            &Listing::of(record, false, false),
        ) && self.matches_activity(record.last_activity)
    }

    fn matches_entry(&self, page_id: &str, psid: &str, listing: &Listing) -> bool {
        self.page_id.as_deref().is_none_or(|page| page == page_id)
            && self
                .psid_prefix
                .as_deref()
                .is_none_or(|prefix| psid.starts_with(prefix))
            && self.paused.is_none_or(|wanted| wanted == listing.paused)
            && self
                .failed_replies
                .is_none_or(|wanted| wanted == listing.failed_reply)
            && self
                .stuck
                .is_none_or(|wanted| wanted == listing.failed_event)
            && self
                .channel
                .is_none_or(|wanted| (wanted == Channel::Instagram) == listing.instagram)
            && self
                .tree
                .as_deref()
                .is_none_or(|tree| listing.tree.as_deref() == Some(tree))
            && self
                .tree_status
                .is_none_or(|status| listing.tree_status == Some(status))
    }

    fn matches_activity(&self, last_activity: i64) -> bool {
        self.active_since.is_none_or(|since| last_activity >= since)
            && self.active_until.is_none_or(|until| last_activity < until)
    }
}

/// The index key a cursor stands for, if it is one of ours.
fn decode_cursor(cursor: &str) -> Option<Vec<u8>> {
    let key = hex::decode(cursor).ok()?;
    keys::activity_parts(&key).map(|_| key)
}

#[cfg(test)]
mod tests {
    use super::super::testing::{block_on, open};
    use super::super::{ConversationKey, TurnCommit};
    use super::*;

    fn touch(store: &Store, psid: &str, at_ms: i64, before: Option<(i64, bool)>, paused: bool) {
        let mut record = ConversationRecord::new(&ConversationKey::new("page", psid));
        record.last_activity = at_ms;
        record.paused = paused;
        let commit = TurnCommit {
            conversation: Some(record),
            listed_before: before,
            ..TurnCommit::default()
        };
        block_on(store.commit_turn(commit, false)).unwrap();
    }

    fn psids(page: &ListPage) -> Vec<&str> {
        page.conversations.iter().map(|r| r.psid.as_str()).collect()
    }

    #[test]
    fn pages_go_newest_first_and_a_moved_conversation_is_listed_once() {
        let (_dir, store) = open();
        for (i, psid) in ["a", "b", "c", "d"].iter().enumerate() {
            touch(&store, psid, 1_000 * (i as i64 + 1), None, false);
        }
        // "a" writes again later: its entry moves to the front.
        touch(&store, "a", 9_000, Some((1_000, false)), false);

        let all = ListFilter::default();
        let first = store.list_conversations(&all, None, 3).unwrap().unwrap();
        assert_eq!(psids(&first), ["a", "d", "c"]);
        let cursor = first.next_cursor.as_deref().unwrap();
        let second = store
            .list_conversations(&all, Some(cursor), 3)
            .unwrap()
            .unwrap();
        assert_eq!(psids(&second), ["b"]);
        assert_eq!(second.next_cursor, None);
    }

    #[test]
    fn filters_narrow_by_page_psid_prefix_pause_and_activity() {
        let (_dir, store) = open();
        touch(&store, "100", 1_000, None, false);
        touch(&store, "101", 2_000, None, true);
        touch(&store, "200", 3_000, None, false);
        let list = |filter: ListFilter| {
            let page = store
                .list_conversations(&filter, None, 10)
                .unwrap()
                .unwrap();
            psids(&page)
                .into_iter()
                .map(String::from)
                .collect::<Vec<_>>()
        };
        let prefix = ListFilter {
            psid_prefix: Some("10".into()),
            ..ListFilter::default()
        };
        assert_eq!(list(prefix), ["101", "100"]);
        let paused = ListFilter {
            paused: Some(true),
            ..ListFilter::default()
        };
        assert_eq!(list(paused), ["101"]);
        let window = ListFilter {
            active_since: Some(1_500),
            active_until: Some(3_000),
            ..ListFilter::default()
        };
        assert_eq!(list(window), ["101"]);
        let other_page = ListFilter {
            page_id: Some("other".into()),
            ..ListFilter::default()
        };
        assert!(list(other_page).is_empty());
    }

    #[test]
    fn a_first_turn_is_listed_without_reading_for_failures_and_a_stored_one_reads_them() {
        let (_dir, store) = open();
        let failed_reply = |psid: &str| {
            let key = keys::failed_reply("page", psid, 0);
            store.inner.tree.insert(key, &b"{}"[..]).unwrap();
        };
        let listed_with_failures = |store: &Store| {
            let filter = ListFilter {
                failed_replies: Some(true),
                ..ListFilter::default()
            };
            let page = store
                .list_conversations(&filter, None, 10)
                .unwrap()
                .unwrap();
            psids(&page)
                .into_iter()
                .map(String::from)
                .collect::<Vec<_>>()
        };
        // A failed reply with no record cannot happen (is_first_turn says why): planted,
        // it shows that a first turn does not look for one.
        failed_reply("new");
        touch(&store, "new", 1_000, Some((0, false)), false);
        assert!(listed_with_failures(&store).is_empty());

        // A stored conversation whose entry is missing (a store from before the index)
        // is read for failures as before.
        touch(&store, "old", 1_000, None, false);
        failed_reply("old");
        let entry = keys::activity(super::super::turn::activity_second(1_000), "page", "old");
        store.inner.tree.remove(entry).unwrap();
        touch(&store, "old", 2_000, Some((1_000, false)), false);
        assert_eq!(listed_with_failures(&store), ["old"]);
    }

    #[test]
    fn a_cursor_not_made_here_is_refused() {
        let (_dir, store) = open();
        let filter = ListFilter::default();
        assert_eq!(
            store.list_conversations(&filter, Some("zz"), 5).unwrap(),
            None
        );
        let foreign = hex::encode(keys::conversation("p", "u"));
        assert_eq!(
            store
                .list_conversations(&filter, Some(&foreign), 5)
                .unwrap(),
            None
        );
    }

    #[test]
    fn a_store_written_before_the_index_gets_it_built_once_at_open() {
        let (_dir, store) = open();
        touch(&store, "old", 5_000, None, true);
        // As an older build left it: the record, no index entry, no marker.
        let tree = &store.inner.tree;
        tree.remove(keys::activity(5, "page", "old")).unwrap();
        tree.remove(keys::meta(INDEX_BUILT)).unwrap();
        let filter = ListFilter::default();
        let before = store.list_conversations(&filter, None, 5).unwrap().unwrap();
        assert!(before.conversations.is_empty());

        Store::build_activity_index_if_missing(tree).unwrap();

        let after = store.list_conversations(&filter, None, 5).unwrap().unwrap();
        assert_eq!(psids(&after), ["old"]);
        assert!(after.conversations[0].paused);
        assert!(tree.contains_key(keys::meta(INDEX_BUILT)).unwrap());
    }
}
