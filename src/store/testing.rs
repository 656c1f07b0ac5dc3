//! Fixtures the store's unit tests share: a store in a temporary directory, blocking on
//! its futures, and a conversation turn that journals an event and queues one reply.
//! Compiled for tests only; nothing here writes around the store's own methods.

use std::future::Future;

use serde_json::json;

use super::*;
use crate::messenger::outbound::{MessagingType, OutMessage, Recipient, SendRequest};

pub fn block_on<F: Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(future)
}

/// Lets a test chain `.into_blocking()` onto a store call.
pub trait Blocking: Future + Sized {
    fn into_blocking(self) -> Self::Output {
        block_on(self)
    }
}

impl<F: Future> Blocking for F {}

pub fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db")).unwrap();
    (dir, store)
}

pub fn key() -> ConversationKey {
    ConversationKey::new("page", "user")
}

pub fn out_entry() -> TranscriptEntry {
    TranscriptEntry::queued_out("text", Some("hi".into()), 10)
}

pub fn outbox_record(entry: u64) -> OutboxRecord {
    OutboxRecord {
        page_id: "page".into(),
        psid: "user".into(),
        entry,
        outgoing: Outgoing::Send(SendRequest {
            recipient: Recipient { id: "user".into() },
            messaging_type: MessagingType::Response,
            tag: None,
            message: Some(OutMessage {
                text: Some("hi".into()),
                ..OutMessage::default()
            }),
            sender_action: None,
        }),
        attempts: 0,
        created_at: 10,
        channel: Default::default(),
    }
}

/// Commits a turn that queued one reply; returns its outbox sequence number.
pub fn commit_reply(store: &Store, journal_seq: u64) -> u64 {
    let mut record = ConversationRecord::new(&key());
    let entry = record.take_entry_seq();
    record.state = json!({"step": 1});
    let outbox_seq = store.next_id().unwrap();
    store
        .commit_turn(
            TurnCommit {
                journal_seq: Some(journal_seq),
                handled: Some(("page".into(), "m.1".into())),
                handled_at: Some(1),
                conversation: Some(record),
                new_entries: vec![(entry, out_entry())],
                outbox: vec![(outbox_seq, outbox_record(entry))],
                ..TurnCommit::default()
            },
            true,
        )
        .into_blocking()
        .unwrap();
    outbox_seq
}

/// One small text event of page `page`, as the webhook journals it.
pub fn journal_record() -> JournalRecord {
    JournalRecord {
        page_id: "page".into(),
        channel: Default::default(),
        standby: false,
        event: json!({"sender": {"id": "user"}, "message": {"mid": "m.1", "text": "a"}}),
    }
}

/// The sequence numbers of the journal items still pending, oldest first.
pub fn pending_journal_seqs(store: &Store) -> Vec<u64> {
    store
        .pending_journal()
        .unwrap()
        .into_iter()
        .map(|(seq, _)| seq)
        .collect()
}

pub fn journal_one(store: &Store) -> u64 {
    block_on(store.append_journal(vec![journal_record()])).unwrap()
}

/// Marks `event_id` on page `page`, stamped 1, handled, as a turn does.
pub fn mark_handled(store: &Store, event_id: &str) {
    store
        .commit_turn(
            TurnCommit {
                handled: Some(("page".into(), event_id.into())),
                handled_at: Some(1),
                ..TurnCommit::default()
            },
            false,
        )
        .into_blocking()
        .unwrap();
}

/// Marks `event_id` on page `page` handled in the layout of earlier builds (no time), as
/// a turn replicated by such a build still does.
pub fn mark_handled_legacy(store: &Store, event_id: &str) {
    store
        .commit_turn(
            TurnCommit {
                handled: Some(("page".into(), event_id.into())),
                ..TurnCommit::default()
            },
            false,
        )
        .into_blocking()
        .unwrap();
}
