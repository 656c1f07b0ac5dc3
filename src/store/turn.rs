//! The turn commit: everything one handled event changes (journal item consumed, dedup
//! mark, conversation record, new and changed transcript entries, outbox items, timers),
//! applied as one atomic operation.
//!
//! A `TurnCommit` is built by the conversation actor; this file only turns it into writes.
//! It decides nothing about what a turn should change, and it never lowers an entry's
//! status (`TranscriptEntry::advance`).

use std::future::Future;

use super::changes::Announcement;
use super::codec::{decode, encode};
use super::committer::Overlay;
use super::listing::Listing;
use super::transcript;
use super::{
    keys, ConversationKey, ConversationRecord, FailedEvent, OutboxRecord, Status, Store,
    StoreError, TimerEntry, TimerRecord, TranscriptEntry,
};
use crate::clock::now_ms;

/// A change to an existing transcript entry, applied against its current stored value.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum EntryChange {
    /// Raise the status (never lowers it).
    Advance(Status),
    /// The echo of this page message arrived: remember its mid and Facebook's timestamp.
    LinkEcho { mid: String, timestamp: i64 },
    /// An operator sends this failed reply again: back to `queued`, its error cleared.
    /// The only change that lowers a status, and only from `failed`.
    Requeue,
}

/// Everything one handled event changes, committed atomically. Serializable, so a
/// cluster node can replicate a turn as one message and another node apply it.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct TurnCommit {
    /// The journal item this turn consumes.
    pub journal_seq: Option<u64>,
    /// `(page, event id)` to mark handled, so a redelivery is skipped.
    pub handled: Option<(String, String)>,
    /// The handled event's own time (Facebook's `timestamp`), which orders its mark
    /// (`keys::handled_at`). A turn replicated by an earlier build has none: its mark is
    /// written in the legacy layout, where lookups still find it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handled_at: Option<i64>,
    pub conversation: Option<ConversationRecord>,
    pub new_entries: Vec<(u64, TranscriptEntry)>,
    pub entry_changes: Vec<(u64, EntryChange)>,
    pub outbox: Vec<(u64, OutboxRecord)>,
    /// Timers to add to the due-ordered index.
    pub timers_set: Vec<TimerRecord>,
    /// Timers (name, due) of this conversation to remove from the index.
    pub timers_cleared: Vec<TimerEntry>,
    /// The conversation's last activity (epoch ms) and paused flag as stored before this
    /// turn, so its activity-index entry moves only when either changed.
    pub listed_before: Option<(i64, bool)>,
    /// Failed replies (by transcript entry) this turn sends again, no longer kept failed.
    pub failed_retried: Vec<u64>,
    /// Events the flow failed on in this turn, kept for an operator (by transcript entry).
    pub failed_events: Vec<(u64, FailedEvent)>,
    /// Failed events (by transcript entry) an operator replayed or skipped: no longer kept.
    pub failed_events_resolved: Vec<u64>,
    /// Forget the user: the conversation's transcript, failed replies and outbox items go
    /// (its record is the tombstone the turn writes, its timers are in `timers_cleared`).
    pub forget: bool,
}

impl Store {
    /// Applies one conversation turn atomically; resolves once applied, and once on disk
    /// when `durable`, to the turn's outbox items (handed back, not copied, for the
    /// sender).
    pub fn commit_turn(
        &self,
        mut commit: TurnCommit,
        durable: bool,
    ) -> impl Future<Output = Result<Vec<(u64, OutboxRecord)>, StoreError>> + 'static {
        let writes = turn_writes(&commit);
        // Encoded into `writes`: the records themselves go back to the caller.
        let outbox = std::mem::take(&mut commit.outbox);
        let changes = entry_changes(&commit);
        let forgotten = commit
            .forget
            .then(|| commit.conversation.as_ref().map(ConversationRecord::key))
            .flatten();
        let announcement = announcement(&commit);
        // A turn replicated by an earlier build writes a legacy mark: noted before it is
        // applied and again after, since a retention pass may recount in between.
        let legacy_mark = commit.handled.is_some() && commit.handled_at.is_none();
        let noted_again = legacy_mark.then(|| {
            self.inner.legacy_marks.written();
            self.clone()
        });
        if let (Some((_, event_id)), Some(event_time)) = (&commit.handled, commit.handled_at) {
            // Before the write is submitted: a lookup may skip the tree only for marks
            // that cannot be there yet.
            self.inner.newest_marks.noting(event_time, event_id);
        }
        // Last: it takes the record out of the commit rather than copy it.
        let listing = listing_update(commit);
        let write = self.submit(durable, move |overlay| {
            // Before this turn's writes, which store the record.
            let first_turn = match &listing {
                Some(listing) => listing.is_first_turn(overlay)?,
                None => false,
            };
            if let Some(key) = &forgotten {
                forget_conversation(overlay, key)?;
            }
            for (key, value) in writes {
                match value {
                    Some(value) => overlay.insert(key, value),
                    None => overlay.remove(key),
                }
            }
            if let Some(changes) = &changes {
                changes.apply(overlay)?;
            }
            if let Some(listing) = &listing {
                listing.apply(overlay, first_turn)?;
            }
            Ok(())
        });
        let written = self.announced(write, announcement);
        async move {
            written.await?;
            if let Some(store) = noted_again {
                store.inner.legacy_marks.written();
            }
            Ok(outbox)
        }
    }
}

/// What the change feed says of a turn: nothing when it touched no conversation.
fn announcement(commit: &TurnCommit) -> Option<Announcement> {
    let conversation = commit.conversation.as_ref()?;
    let entries = commit
        .new_entries
        .iter()
        .map(|(seq, _)| *seq)
        .chain(commit.entry_changes.iter().map(|(seq, _)| *seq))
        .collect();
    Some(Announcement {
        page_id: conversation.page_id.clone(),
        psid: conversation.psid.clone(),
        entries,
        record: true,
        forgotten: commit.forget,
    })
}

/// The plain writes of a turn, encoded outside the committer thread.
fn turn_writes(commit: &TurnCommit) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
    let mut writes = Vec::new();
    if let Some(seq) = commit.journal_seq {
        writes.push((keys::journal(seq), None));
    }
    if let Some((page_id, event_id)) = &commit.handled {
        // The mark holds when it was made, so old marks can be pruned (`pruning`).
        let at = u64::try_from(now_ms()).unwrap_or_default();
        let key = match commit.handled_at {
            Some(event_time) => keys::handled_at(page_id, event_time, event_id),
            None => keys::handled(page_id, event_id),
        };
        writes.push((key, Some(at.to_be_bytes().to_vec())));
    }
    let Some(conversation) = &commit.conversation else {
        // A timer names its conversation: a turn may set one back without a record.
        writes.extend(timers_set(commit));
        return writes;
    };
    let (page, psid) = (&conversation.page_id, &conversation.psid);
    writes.push((keys::conversation(page, psid), Some(encode(conversation))));
    if commit.forget {
        if let Some((at, _)) = commit.listed_before {
            writes.push((keys::activity(activity_second(at), page, psid), None));
        }
    }
    let runs = transcript::run_writes(page, psid, &commit.new_entries);
    writes.extend(runs.into_iter().map(|(key, value)| (key, Some(value))));
    for (seq, record) in &commit.outbox {
        writes.push((keys::outbox(*seq), Some(encode(record))));
    }
    for entry in &commit.failed_retried {
        writes.push((keys::failed_reply(page, psid, *entry), None));
    }
    for (entry, event) in &commit.failed_events {
        writes.push((keys::failed_event(page, psid, *entry), Some(encode(event))));
    }
    for entry in &commit.failed_events_resolved {
        writes.push((keys::failed_event(page, psid, *entry), None));
    }
    for timer in &commit.timers_cleared {
        writes.push((keys::timer(timer.due, page, psid, &timer.name), None));
    }
    // After the clears: a timer rescheduled to the same instant stays.
    writes.extend(timers_set(commit));
    writes
}

fn timers_set(commit: &TurnCommit) -> impl Iterator<Item = (Vec<u8>, Option<Vec<u8>>)> + '_ {
    commit.timers_set.iter().map(|timer| {
        let key = keys::timer(timer.due, &timer.page_id, &timer.psid, &timer.name);
        (key, Some(encode(timer)))
    })
}

/// Removes what a forgotten conversation leaves besides its record and timers: its
/// transcript, its failed replies and the replies it still owes.
fn forget_conversation(overlay: &mut Overlay<'_>, key: &ConversationKey) -> Result<(), StoreError> {
    for prefix in [
        keys::transcript_prefix(&key.page_id, &key.psid),
        keys::failed_events(&key.page_id, &key.psid),
        keys::failed_replies(&key.page_id, &key.psid),
    ] {
        let mut end = prefix.clone();
        end.extend_from_slice(&[0xFF; 9]); // past every 8-byte sequence number under it
        let stored: Vec<Vec<u8>> = overlay
            .range(prefix, end)
            .map(|item| item.map(|(key, _)| key))
            .collect::<Result<_, _>>()?;
        stored.into_iter().for_each(|stored| overlay.remove(stored));
    }
    let outbox: Vec<(Vec<u8>, Vec<u8>)> = overlay
        .range(vec![keys::OUTBOX], vec![keys::OUTBOX + 1])
        .collect::<Result<_, _>>()?;
    for (stored, value) in outbox {
        let item: OutboxRecord = decode(&stored, &value)?;
        if item.page_id == key.page_id && item.psid == key.psid {
            overlay.remove(stored);
        }
    }
    Ok(())
}

/// How a turn moves its conversation's activity-index entry (see `listing`).
struct ListingUpdate {
    record: ConversationRecord,
    /// When it was last active before this turn (its entry's second).
    before: Option<i64>,
    /// Whether this turn added or removed failed replies or events (else the flags
    /// carry over from the entry as it was).
    failures_changed: bool,
}

fn listing_update(commit: TurnCommit) -> Option<ListingUpdate> {
    let record = commit.conversation.filter(|_| !commit.forget)?;
    Some(ListingUpdate {
        record,
        before: commit.listed_before.map(|(at, _)| at),
        failures_changed: !commit.failed_retried.is_empty()
            || !commit.failed_events.is_empty()
            || !commit.failed_events_resolved.is_empty(),
    })
}

impl ListingUpdate {
    /// Whether the conversation has no stored record yet (read before the turn's writes):
    /// its first turn. A record is never removed (forgetting leaves a tombstone), and a
    /// failed reply or event is only ever stored for a conversation whose record is, so
    /// such a conversation has none of either.
    fn is_first_turn(&self, overlay: &Overlay<'_>) -> Result<bool, StoreError> {
        let key = keys::conversation(&self.record.page_id, &self.record.psid);
        Ok(!overlay.contains(&key)?)
    }

    /// Writes the entry where its activity second puts it, with what it says now; writes
    /// nothing when neither moved. A first turn's entry is made without reading for
    /// failed replies and events: a new user's message costs no more reads than a
    /// returning user's (two prefix scans saved; docs/performance.md).
    fn apply(&self, overlay: &mut Overlay<'_>, first_turn: bool) -> Result<(), StoreError> {
        let (page, psid) = (&self.record.page_id, &self.record.psid);
        let now_key = keys::activity(activity_second(self.record.last_activity), page, psid);
        let old_key = self
            .before
            .map(|at| keys::activity(activity_second(at), page, psid));
        let old_value = match &old_key {
            Some(key) => overlay.get(key)?,
            None => None,
        };
        let listing = match (&old_value, self.failures_changed) {
            (Some(old), false) => {
                let old = Listing::decode(old);
                Listing::of(&self.record, old.failed_reply, old.failed_event)
            }
            (None, false) if first_turn => Listing::of(&self.record, false, false),
            _ => Listing::read(overlay, &self.record)?,
        };
        let value = listing.encode();
        if let Some(old_key) = old_key.filter(|key| *key != now_key) {
            if old_value.is_some() {
                overlay.remove(old_key);
            }
        } else if old_value.as_deref() == Some(&value[..]) {
            return Ok(());
        }
        overlay.insert(now_key, value);
        Ok(())
    }
}

/// The second of an activity time, as the index orders by.
pub(super) fn activity_second(at_ms: i64) -> u64 {
    u64::try_from(at_ms / 1000).unwrap_or(0)
}

/// The changes of a turn to existing entries, with the conversation they belong to.
fn entry_changes(commit: &TurnCommit) -> Option<EntryChanges> {
    let conversation = commit.conversation.as_ref()?;
    Some(EntryChanges {
        page_id: conversation.page_id.clone(),
        psid: conversation.psid.clone(),
        changes: commit.entry_changes.clone(),
    })
}

struct EntryChanges {
    page_id: String,
    psid: String,
    changes: Vec<(u64, EntryChange)>,
}

impl EntryChanges {
    fn apply(&self, overlay: &mut Overlay<'_>) -> Result<(), StoreError> {
        for (seq, change) in &self.changes {
            transcript::update_entry(overlay, &self.page_id, &self.psid, *seq, |entry| {
                apply_entry_change(entry, change)
            })?;
        }
        Ok(())
    }
}

/// Applies a change to an entry as it is now (read inside the committer).
fn apply_entry_change(entry: &mut TranscriptEntry, change: &EntryChange) {
    match change {
        EntryChange::Advance(status) => {
            entry.advance(*status);
        }
        EntryChange::Requeue => {
            if entry.status == Status::Failed {
                entry.status = Status::Queued;
                entry.error = None;
            }
        }
        EntryChange::LinkEcho { mid, timestamp } => {
            entry.mid.get_or_insert_with(|| mid.clone());
            entry.echo_timestamp = Some(*timestamp);
            // An echo is Facebook saying the message went out, whatever our sender knows.
            entry.advance(Status::Sent);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{commit_reply, journal_one, key, open};
    use serde_json::json;

    #[test]
    fn a_turn_writes_state_transcript_outbox_and_dedup_mark_together() {
        let (_dir, store) = open();
        let seq = journal_one(&store);
        commit_reply(&store, seq);
        let record = store.conversation(&key()).unwrap().unwrap();
        assert_eq!(record.state, json!({"step": 1}));
        assert_eq!(store.transcript(&key()).unwrap().len(), 1);
        assert_eq!(store.pending_outbox().unwrap().len(), 1);
        assert!(store.is_handled("page", 1, "m.1").unwrap());
        assert!(!store.is_handled("page", 1, "m.2").unwrap());
    }
}
