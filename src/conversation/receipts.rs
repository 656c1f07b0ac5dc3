//! Receipts and echoes: delivery and read watermarks (only forward) mark the page's
//! messages `delivered` and `read`; an echo links the page message it echoes (by our
//! metadata or its message id) or records one colloquy did not send. Only the page
//! messages still awaiting a read receipt are looked at, never the whole transcript.

use serde_json::json;

use super::{now_ms, METADATA_PREFIX};
use crate::messenger::inbound::{EventKind, InboundEvent};
use crate::store::{
    ConversationRecord, Direction, EntryChange, SentRef, Status, Store, StoreError,
    TranscriptEntry, TurnCommit,
};

/// Page messages awaiting a read receipt that one conversation keeps track of; older ones
/// are dropped from tracking (they stay in the transcript as they were).
const MAX_TRACKED_UNREAD: usize = 1024;

pub(super) fn track_unread(record: &mut ConversationRecord, seq: u64) {
    record.unread_out.push(seq);
    if record.unread_out.len() > MAX_TRACKED_UNREAD {
        let excess = record.unread_out.len() - MAX_TRACKED_UNREAD;
        record.unread_out.drain(..excess);
    }
}

/// Collects the tracked page messages with their current entries, dropping from tracking
/// those that no longer need a receipt.
fn tracked_entries(
    store: &Store,
    record: &mut ConversationRecord,
) -> Result<Vec<(u64, TranscriptEntry)>, StoreError> {
    let key = record.key();
    let mut entries = Vec::with_capacity(record.unread_out.len());
    for seq in &record.unread_out {
        if let Some(entry) = store.transcript_entry(&key, *seq)? {
            entries.push((*seq, entry));
        }
    }
    record.unread_out = entries
        .iter()
        .filter(|(_, e)| !matches!(e.status, Status::Failed | Status::Read))
        .map(|(seq, _)| *seq)
        .collect();
    Ok(entries)
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
    for (seq, entry) in tracked_entries(store, record)? {
        let listed = entry.mid.as_ref().is_some_and(|mid| mids.contains(mid));
        if entry.status != Status::Failed
            && (listed || (is_sent(&entry) && covered_by(&entry, watermark)))
        {
            commit
                .entry_changes
                .push((seq, EntryChange::Advance(Status::Delivered)));
        }
    }
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
    let mut read = Vec::new();
    for (seq, entry) in tracked_entries(store, record)? {
        if is_sent(&entry) && covered_by(&entry, watermark) {
            commit
                .entry_changes
                .push((seq, EntryChange::Advance(Status::Read)));
            read.push(seq);
        }
    }
    record.unread_out.retain(|seq| !read.contains(seq));
    Ok(())
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
    let target = match by_metadata {
        Some(seq) => Some(seq),
        None => store
            .find_sent(&event.page_id, &echo.mid)?
            .filter(|sent| sent.psid == record.psid)
            .map(|sent| sent.entry),
    };
    let own = match target {
        Some(seq) => store
            .transcript_entry(&key, seq)?
            .filter(|e| e.direction == Direction::Out)
            .map(|_| seq),
        None => None,
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
        },
    ));
    commit.sent_index.push((
        echo.mid.clone(),
        SentRef {
            psid: record.psid.clone(),
            entry: seq,
            at: now_ms(),
        },
    ));
    track_unread(record, seq);
    Ok(())
}
