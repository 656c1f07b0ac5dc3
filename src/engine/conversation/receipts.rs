//! Receipts and echoes: delivery and read watermarks (only forward) mark the page's
//! messages `delivered` and `read`; an echo links the page message it echoes (by our
//! metadata or its message id) or records one colloquy did not send. Only the page
//! messages from the first one still awaiting a receipt on are looked at, never the whole
//! transcript.

use serde_json::json;

use super::METADATA_PREFIX;
use crate::messenger::inbound::{EventKind, InboundEvent};
use crate::store::{
    ConversationRecord, Direction, EntryChange, Status, Store, StoreError, TranscriptEntry,
    TurnCommit,
};

/// How far back from the newest transcript entry a receipt looks at most: older page
/// messages no receipt came for stay as they were.
const MAX_RECEIPT_LOOKBACK: u64 = 1024;

/// The page messages from `from` on that are not yet `settled` for a kind of receipt.
fn awaiting(
    store: &Store,
    record: &ConversationRecord,
    from: u64,
    settled: impl Fn(Status) -> bool,
) -> Result<Vec<(u64, TranscriptEntry)>, StoreError> {
    let from = from.max(record.next_entry.saturating_sub(MAX_RECEIPT_LOOKBACK));
    let mut entries = store.transcript_range(&record.key(), from, record.next_entry)?;
    entries.retain(|(_, entry)| entry.gets_receipts() && !settled(entry.status));
    Ok(entries)
}

/// Advances to `status` every awaiting entry the receipt `covers`; returns where the next
/// receipt of this kind looks from: the first entry left awaiting, or past the end.
fn settle(
    record: &ConversationRecord,
    awaiting: Vec<(u64, TranscriptEntry)>,
    status: Status,
    commit: &mut TurnCommit,
    covers: impl Fn(&TranscriptEntry) -> bool,
) -> u64 {
    let mut first_left = None;
    for (seq, entry) in awaiting {
        if covers(&entry) {
            commit
                .entry_changes
                .push((seq, EntryChange::Advance(status)));
        } else {
            first_left.get_or_insert(seq);
        }
    }
    first_left.unwrap_or(record.next_entry)
}

fn is_sent(entry: &TranscriptEntry) -> bool {
    matches!(entry.status, Status::Sent | Status::Delivered)
}

fn covered_by(entry: &TranscriptEntry, watermark: i64) -> bool {
    entry.watermark_time().is_some_and(|t| t <= watermark)
}

pub(super) fn apply_delivery(
    store: &Store,
    record: &mut ConversationRecord,
    mids: &[String],
    watermark: i64,
    commit: &mut TurnCommit,
) -> Result<(), StoreError> {
    record.delivered_watermark = record.delivered_watermark.max(watermark);
    let watermark = record.delivered_watermark;
    let entries = awaiting(store, record, record.undelivered_from, |status| {
        matches!(status, Status::Delivered | Status::Read | Status::Failed)
    })?;
    record.undelivered_from = settle(record, entries, Status::Delivered, commit, |entry| {
        let listed = entry.mid.as_ref().is_some_and(|mid| mids.contains(mid));
        listed || (is_sent(entry) && covered_by(entry, watermark))
    });
    Ok(())
}

pub(super) fn apply_read(
    store: &Store,
    record: &mut ConversationRecord,
    watermark: i64,
    commit: &mut TurnCommit,
) -> Result<(), StoreError> {
    record.read_watermark = record.read_watermark.max(watermark);
    // What was read was delivered.
    record.delivered_watermark = record.delivered_watermark.max(record.read_watermark);
    let watermark = record.read_watermark;
    let entries = awaiting(store, record, record.unread_from, |status| {
        matches!(status, Status::Read | Status::Failed)
    })?;
    record.unread_from = settle(record, entries, Status::Read, commit, |entry| {
        is_sent(entry) && covered_by(entry, watermark)
    });
    record.undelivered_from = record.undelivered_from.max(record.unread_from);
    Ok(())
}

/// Page messages an echo without colloquy's metadata is matched against by message id:
/// every one not yet read, and at least this many of the newest entries.
const ECHO_LOOKBACK: u64 = 64;

/// The recent page message that has Facebook's message id `mid` (an echo whose metadata
/// was not ours: the Send API's answer gave the id first), newest first.
fn recent_page_message(
    store: &Store,
    record: &ConversationRecord,
    mid: &str,
) -> Result<Option<u64>, StoreError> {
    let from = record
        .unread_from
        .min(record.next_entry.saturating_sub(ECHO_LOOKBACK))
        .max(record.next_entry.saturating_sub(MAX_RECEIPT_LOOKBACK));
    let entries = store.transcript_range(&record.key(), from, record.next_entry)?;
    Ok(entries
        .into_iter()
        .rev()
        .find(|(_, e)| e.direction == Direction::Out && e.mid.as_deref() == Some(mid))
        .map(|(seq, _)| seq))
}

/// Links the echo of a page message to its transcript entry, or records a page message
/// colloquy did not send (a human in the Page Inbox, another app).
pub(super) fn apply_echo(
    store: &Store,
    record: &mut ConversationRecord,
    event: &InboundEvent,
    commit: &mut TurnCommit,
) -> Result<(), StoreError> {
    let EventKind::Echo(echo) = &event.kind else {
        return Ok(());
    };
    let key = record.key();
    let by_metadata = echo
        .metadata
        .as_deref()
        .and_then(|m| m.strip_prefix(METADATA_PREFIX))
        .and_then(|seq| seq.parse::<u64>().ok())
        .filter(|seq| *seq < record.next_entry);
    let own = match by_metadata {
        Some(seq) => store
            .transcript_entry(&key, seq)?
            .filter(|e| e.direction == Direction::Out)
            .map(|_| seq),
        None => recent_page_message(store, record, &echo.mid)?,
    };
    if let Some(seq) = own {
        commit.entry_changes.push((
            seq,
            EntryChange::LinkEcho {
                mid: echo.mid.clone(),
                timestamp: event.timestamp,
            },
        ));
        return Ok(());
    }
    let seq = record.take_entry_seq();
    record.outbound_count += 1;
    commit.new_entries.push((
        seq,
        TranscriptEntry {
            direction: Direction::Out,
            mid: Some(echo.mid.clone()),
            timestamp: event.timestamp,
            kind: "echo".into(),
            text: echo.text.clone(),
            status: Status::Sent,
            sent_at: Some(event.timestamp),
            echo_timestamp: Some(event.timestamp),
            error: None,
            payload: echo.app_id.as_ref().map(|app| json!({ "app_id": app })),
            late: false,
            by_operator: false,
        },
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{ConversationKey, Direction};

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(future)
    }

    fn entry(direction: Direction, kind: &str, status: Status, sent_at: i64) -> TranscriptEntry {
        TranscriptEntry {
            direction,
            status,
            sent_at: Some(sent_at),
            ..TranscriptEntry::queued_out(kind, None, sent_at)
        }
    }

    /// A fresh store holding a conversation whose transcript is: in, text sent at 10,
    /// typing_on, text sent at 20, text still queued, text sent at 30.
    fn stored() -> (tempfile::TempDir, Store, ConversationRecord) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut record = ConversationRecord::new(&ConversationKey::new("page", "user"));
        let entries = [
            entry(Direction::In, "text", Status::Handled, 1),
            entry(Direction::Out, "text", Status::Sent, 10),
            entry(Direction::Out, "typing_on", Status::Sent, 11),
            entry(Direction::Out, "text", Status::Sent, 20),
            entry(Direction::Out, "text", Status::Queued, 25),
            entry(Direction::Out, "text", Status::Sent, 30),
        ];
        let new_entries = entries
            .into_iter()
            .map(|e| (record.take_entry_seq(), e))
            .collect();
        let commit = TurnCommit {
            conversation: Some(record.clone()),
            new_entries,
            ..TurnCommit::default()
        };
        block_on(store.commit_turn(commit, false)).unwrap();
        (dir, store, record)
    }

    fn advanced(commit: &TurnCommit) -> Vec<u64> {
        commit.entry_changes.iter().map(|(seq, _)| *seq).collect()
    }

    #[test]
    fn a_delivery_watermark_settles_what_it_covers_and_later_ones_look_from_the_first_left() {
        let (_dir, store, mut record) = stored();
        let mut commit = TurnCommit::default();
        apply_delivery(&store, &mut record, &[], 20, &mut commit).unwrap();
        assert_eq!(
            advanced(&commit),
            [1, 3],
            "messages only, not the typing indicator"
        );
        assert_eq!(
            record.undelivered_from, 4,
            "the queued reply is the first left"
        );
        assert_eq!(record.unread_from, 0, "a delivery reads nothing");

        let mut commit = TurnCommit::default();
        apply_delivery(&store, &mut record, &[], 30, &mut commit).unwrap();
        assert_eq!(
            advanced(&commit),
            [5],
            "entries 1 and 3 are not looked at again"
        );
        assert_eq!(record.undelivered_from, 4);
    }

    #[test]
    fn a_read_watermark_settles_reads_and_deliveries_before_it() {
        let (_dir, store, mut record) = stored();
        let mut commit = TurnCommit::default();
        apply_read(&store, &mut record, 20, &mut commit).unwrap();
        assert_eq!(advanced(&commit), [1, 3]);
        assert_eq!((record.unread_from, record.undelivered_from), (4, 4));
        assert_eq!(
            record.delivered_watermark, 20,
            "what was read was delivered"
        );
    }

    #[test]
    fn receipts_look_back_a_bounded_number_of_entries() {
        let (_dir, store, mut record) = stored();
        // As if thousands of entries had followed without a receipt: the six are out of reach.
        record.next_entry = 6 + MAX_RECEIPT_LOOKBACK;
        let mut commit = TurnCommit::default();
        apply_read(&store, &mut record, 100, &mut commit).unwrap();
        assert!(advanced(&commit).is_empty());
        assert_eq!(record.unread_from, record.next_entry);
    }
}
