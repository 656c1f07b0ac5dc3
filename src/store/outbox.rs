//! The outbox: replies a turn committed and the sender still owes, and how a send ends.
//!
//! Items are written by `turn` in the same operation as the transcript entry they update;
//! here they are read back, their attempts counted, and on completion removed together
//! with the entry's outcome (message id, or the Graph error). Nothing here sends anything
//! or decides whether to retry: that is the sender's.

use std::future::Future;

use super::changes::Announcement;
use super::codec::{decode, decode_conversation, encode};
use super::committer::Overlay;
use super::listing::Listing;
use super::transcript;
use super::turn::activity_second;
use super::{keys, ConversationKey, Failure, OutboxRecord, Status, Store, StoreError};

/// How a send ended, as recorded on its transcript entry (and replicated in a cluster).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum SendOutcome {
    Sent { message_id: Option<String>, at: i64 },
    Failed(Failure),
}

impl Store {
    /// The replies of a conversation that failed and were not retried since, by the
    /// transcript entry they update.
    pub fn failed_replies(
        &self,
        key: &ConversationKey,
    ) -> Result<Vec<(u64, OutboxRecord)>, StoreError> {
        self.inner
            .tree
            .scan_prefix(keys::failed_replies(&key.page_id, &key.psid))
            .map(|item| {
                let (stored, value) = item?;
                let entry = keys::trailing_seq(&stored).unwrap_or_default();
                Ok((entry, decode(&stored, &value)?))
            })
            .collect()
    }

    /// Every reply not yet sent or failed, oldest first.
    pub fn pending_outbox(&self) -> Result<Vec<(u64, OutboxRecord)>, StoreError> {
        self.scan_sequenced(keys::OUTBOX)
    }

    /// Remembers how many attempts a reply has had, so a restart does not reset its budget.
    /// Queued at once; the future need not be awaited.
    pub fn record_attempts(
        &self,
        seq: u64,
        record: &OutboxRecord,
    ) -> impl Future<Output = Result<(), StoreError>> + 'static {
        let key = keys::outbox(seq);
        let bytes = encode(record);
        self.submit(false, move |overlay| {
            // Only rewrite an item still pending: a completed one must not come back.
            if overlay.contains(&key)? {
                overlay.insert(key, bytes);
            }
            Ok(())
        })
    }

    /// Records how a reply ended and removes it from the outbox, atomically and durably.
    pub fn complete_send(
        &self,
        seq: u64,
        record: OutboxRecord,
        outcome: SendOutcome,
    ) -> impl Future<Output = Result<(), StoreError>> + 'static {
        let announcement = Announcement {
            page_id: record.page_id.clone(),
            psid: record.psid.clone(),
            entries: vec![record.entry],
            record: false,
            forgotten: false,
        };
        let write = self.submit(true, move |overlay| {
            overlay.remove(keys::outbox(seq));
            let (page, psid) = (&record.page_id, &record.psid);
            let mut newly_failed = false;
            transcript::update_entry(overlay, page, psid, record.entry, |entry| match outcome {
                SendOutcome::Sent { message_id, at } => {
                    entry.advance(Status::Sent);
                    entry.sent_at.get_or_insert(at);
                    if let Some(id) = message_id {
                        entry.mid.get_or_insert(id);
                    }
                }
                SendOutcome::Failed(failure) => {
                    if entry.advance(Status::Failed) {
                        entry.error = Some(failure);
                        newly_failed = true;
                    }
                }
            })?;
            if newly_failed {
                // Kept whole, so an operator can send it again later.
                overlay.insert(
                    keys::failed_reply(page, psid, record.entry),
                    encode(&record),
                );
                flag_failed_reply(overlay, page, psid)?;
            }
            Ok(())
        });
        self.announced(write, Some(announcement))
    }
}

/// Marks the conversation's activity-index entry as having a failed reply, so the list's
/// `failed` filter finds it without a scan (its entry is where its stored record says).
fn flag_failed_reply(overlay: &mut Overlay<'_>, page: &str, psid: &str) -> Result<(), StoreError> {
    let record_key = keys::conversation(page, psid);
    let Some(bytes) = overlay.get(&record_key)? else {
        return Ok(());
    };
    let Ok(record) = decode_conversation(&record_key, &bytes) else {
        // An unreadable record is listed without flags; the send's outcome still counts.
        return Ok(());
    };
    let entry = keys::activity(activity_second(record.last_activity), page, psid);
    let Some(value) = overlay.get(&entry)? else {
        return Ok(());
    };
    let mut listing = Listing::decode(&value);
    if !listing.failed_reply {
        listing.failed_reply = true;
        overlay.insert(entry, listing.encode());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testing::{block_on, commit_reply, journal_one, key, open, Blocking};
    use super::super::{EntryChange, TurnCommit};
    use super::*;

    #[test]
    fn a_completed_send_records_the_message_id_and_leaves_the_outbox() {
        let (_dir, store) = open();
        let outbox_seq = commit_reply(&store, journal_one(&store));
        let (_, record) = store.pending_outbox().unwrap().remove(0);
        let outcome = SendOutcome::Sent {
            message_id: Some("m_sent".into()),
            at: 99,
        };
        block_on(store.complete_send(outbox_seq, record, outcome)).unwrap();
        assert!(store.pending_outbox().unwrap().is_empty());
        let entry = store.transcript_entry(&key(), 0).unwrap().unwrap();
        assert_eq!(entry.status, Status::Sent);
        assert_eq!(entry.mid.as_deref(), Some("m_sent"));
        assert_eq!(entry.sent_at, Some(99));
        let index_keys = store.inner.tree.scan_prefix([keys::SENT]).count();
        assert_eq!(index_keys, 0, "the message id lives on the entry only");
    }

    #[test]
    fn a_late_sent_outcome_does_not_undo_a_read_receipt() {
        let (_dir, store) = open();
        let outbox_seq = commit_reply(&store, journal_one(&store));
        let mut record = store.conversation(&key()).unwrap().unwrap();
        record.read_watermark = 50;
        store
            .commit_turn(
                TurnCommit {
                    conversation: Some(record),
                    entry_changes: vec![(0, EntryChange::Advance(Status::Read))],
                    ..TurnCommit::default()
                },
                true,
            )
            .into_blocking()
            .unwrap();
        let (_, outbox) = store.pending_outbox().unwrap().remove(0);
        let sent = SendOutcome::Sent {
            message_id: Some("m".into()),
            at: 1,
        };
        block_on(store.complete_send(outbox_seq, outbox, sent)).unwrap();
        let entry = store.transcript_entry(&key(), 0).unwrap().unwrap();
        assert_eq!(entry.status, Status::Read);
    }

    #[test]
    fn a_failed_send_keeps_the_graph_error() {
        let (_dir, store) = open();
        let outbox_seq = commit_reply(&store, journal_one(&store));
        let (_, record) = store.pending_outbox().unwrap().remove(0);
        let failure = Failure {
            code: Some(551),
            subcode: Some(1545041),
            message: "unavailable".into(),
            fbtrace_id: Some("AbC123".into()),
        };
        store
            .complete_send(outbox_seq, record, SendOutcome::Failed(failure.clone()))
            .into_blocking()
            .unwrap();
        let entry = store.transcript_entry(&key(), 0).unwrap().unwrap();
        assert_eq!(entry.status, Status::Failed);
        assert_eq!(entry.error, Some(failure));
    }

    #[test]
    fn recorded_attempts_never_resurrect_a_completed_reply() {
        let (_dir, store) = open();
        let outbox_seq = commit_reply(&store, journal_one(&store));
        let (_, mut record) = store.pending_outbox().unwrap().remove(0);
        record.attempts = 2;
        block_on(store.record_attempts(outbox_seq, &record)).unwrap();
        assert_eq!(store.pending_outbox().unwrap()[0].1.attempts, 2);
        let sent = SendOutcome::Sent {
            message_id: None,
            at: 1,
        };
        block_on(store.complete_send(outbox_seq, record.clone(), sent)).unwrap();
        block_on(store.record_attempts(outbox_seq, &record)).unwrap();
        assert!(store.pending_outbox().unwrap().is_empty());
    }
}
