//! The only code that touches sled: typed reads and atomic writes of colloquy's records.
//!
//! Everything lives in one tree, namespaced by `keys`. Every write is an operation run by
//! the `committer` thread, so one turn of a conversation (journal mark, dedup mark,
//! conversation record, transcript entries, timers, outbox items) is one atomic part of
//! one sled batch, and many writers share one batch and one sync (group commit).
//! Durability is explicit: writers await a durable operation before they tell anyone
//! outside the process that something happened. Reads go straight to the tree. The store
//! holds no business rules beyond "status only moves forward".

pub mod committer;
pub mod journal;
pub mod keys;
pub mod records;

use crate::clock::now_ms;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;
use thiserror::Error;

use committer::{CommitStats, Committer, Overlay};
pub use records::{
    ConversationKey, ConversationRecord, Direction, Failure, JournalItem, JournalRecord,
    OutboxRecord, Outgoing, SentRef, Status, TimerEntry, TimerRecord, TranscriptEntry,
};

/// sled's page cache by default; sled's own default (1 GiB) would let the cache alone
/// outgrow a small VM. 6 MiB answered as fast as 8 and 16 MiB at 128 senders and with
/// 200,000 distinct senders (docs/performance.md). `COLLOQUY_CACHE_MB` changes it.
pub const DEFAULT_CACHE_BYTES: u64 = 6 * 1024 * 1024;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("cannot open the data directory {path}: {source}")]
    Open { path: String, source: sled::Error },
    #[error("the data directory {path} is in use by another process (is `colloquy serve` running on it?)")]
    Locked { path: String },
    #[error("storage error: {0}")]
    Sled(#[from] sled::Error),
    #[error("stored record under {key} cannot be decoded: {reason}")]
    Corrupt { key: String, reason: String },
    /// The committer could not apply or sync a cycle (or is gone, at shutdown).
    #[error("committing to disk failed: {0}")]
    Commit(String),
    /// A conversation's record was not loaded when an event arrived for it.
    #[error("conversation {key} is not loaded")]
    NotLoaded { key: String },
}

impl From<String> for StoreError {
    fn from(message: String) -> Self {
        StoreError::Commit(message)
    }
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Our records are plain structs of strings, numbers and JSON values: serialising
    // them cannot fail, and an empty value would be caught as corrupt on read.
    serde_json::to_vec(value).unwrap_or_default()
}

fn decode<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: e.to_string(),
    })
}

/// A conversation record; its page id and psid come from its key (they are not stored
/// twice).
fn decode_conversation(key: &[u8], bytes: &[u8]) -> Result<ConversationRecord, StoreError> {
    let mut record: ConversationRecord = decode(key, bytes)?;
    let (page_id, psid) = keys::conversation_parts(key).ok_or_else(|| StoreError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: "not a conversation key".into(),
    })?;
    record.page_id = page_id;
    record.psid = psid;
    Ok(record)
}

/// A change to an existing transcript entry, applied against its current stored value.
#[derive(Debug, Clone, PartialEq)]
pub enum EntryChange {
    /// Raise the status (never lowers it).
    Advance(Status),
    /// The echo of this page message arrived: remember its mid and Facebook's timestamp.
    LinkEcho { mid: String, timestamp: i64 },
}

/// Everything one handled event changes, committed atomically.
#[derive(Debug, Default)]
pub struct TurnCommit {
    /// The journal item this turn consumes.
    pub journal_seq: Option<u64>,
    /// `(page, event id)` to mark handled, so a redelivery is skipped.
    pub handled: Option<(String, String)>,
    pub conversation: Option<ConversationRecord>,
    pub new_entries: Vec<(u64, TranscriptEntry)>,
    pub entry_changes: Vec<(u64, EntryChange)>,
    pub outbox: Vec<(u64, OutboxRecord)>,
    /// Timers to add to the due-ordered index.
    pub timers_set: Vec<TimerRecord>,
    /// Timers (name, due) of this conversation to remove from the index.
    pub timers_cleared: Vec<TimerEntry>,
}

/// How a send ended, as recorded on its transcript entry.
#[derive(Debug, Clone, PartialEq)]
pub enum SendOutcome {
    Sent { message_id: Option<String>, at: i64 },
    Failed(Failure),
}

/// Tells, without keeping it open, whether every handle of a store has been dropped
/// (and so its files are released for another process or a reopen).
pub struct StoreRelease(std::sync::Weak<Inner>);

impl StoreRelease {
    pub fn is_released(&self) -> bool {
        self.0.strong_count() == 0
    }
}

/// Reads the data directory's size on disk when asked, without keeping the store open
/// (for `/metrics`, which may outlive the engine's last use of the store).
pub struct DiskSizeProbe(std::sync::Weak<Inner>);

impl DiskSizeProbe {
    /// sled's files in bytes; `None` once the store is closed or the size is unreadable.
    pub fn bytes(&self) -> Option<u64> {
        self.0.upgrade()?.db.size_on_disk().ok()
    }
}

/// Cheap to clone; every clone shares one database and one committer.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    tree: sled::Tree,
    // Declared last so it drops last: its drop joins the thread after a final flush.
    committer: Committer,
}

impl Store {
    /// Opens (or creates) the data directory. Fails with `Locked` when another process has it.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Store::open_with_cache(path, DEFAULT_CACHE_BYTES)
    }

    /// Like `open`, with sled's page cache capped at `cache_bytes`.
    pub fn open_with_cache(path: &Path, cache_bytes: u64) -> Result<Store, StoreError> {
        let shown = path.display().to_string();
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(cache_bytes)
            // Durability comes from explicit group-committed flushes, not a timer.
            .flush_every_ms(None)
            .open()
            .map_err(|source| classify_open_error(shown, source))?;
        let tree = db.open_tree("colloquy")?;
        // sled's log; fdatasync'ed after each durable cycle (see `committer`).
        let log_file = std::fs::File::open(path.join("db")).ok();
        let committer = Committer::start(db.clone(), tree.clone(), log_file)
            .map_err(|e| StoreError::Commit(e.to_string()))?;
        Ok(Store {
            inner: Arc::new(Inner {
                db,
                tree,
                committer,
            }),
        })
    }

    /// Queues a write operation; resolves once applied (and on disk when `durable`).
    fn submit<T: Send + 'static>(
        &self,
        durable: bool,
        write: impl FnOnce(&mut Overlay<'_>) -> Result<T, StoreError> + Send + 'static,
    ) -> impl Future<Output = Result<T, StoreError>> + 'static {
        self.inner.committer.submit(durable, write)
    }

    /// Waits until every write submitted before this call is on disk (shared with other
    /// waiters: one flush per commit cycle).
    pub fn flush(&self) -> impl Future<Output = Result<(), StoreError>> + 'static {
        self.submit(true, |_| Ok(()))
    }

    /// Asks for a flush without waiting for it.
    pub fn flush_soon(&self) {
        drop(self.flush());
    }

    /// A way to learn when the last handle is gone.
    pub fn release_watch(&self) -> StoreRelease {
        StoreRelease(Arc::downgrade(&self.inner))
    }

    pub fn disk_size_probe(&self) -> DiskSizeProbe {
        DiskSizeProbe(Arc::downgrade(&self.inner))
    }

    pub fn commit_stats(&self) -> Arc<CommitStats> {
        self.inner.committer.stats()
    }

    /// A unique, increasing id that survives restarts (journal and outbox sequence numbers).
    pub fn next_id(&self) -> Result<u64, StoreError> {
        Ok(self.inner.db.generate_id()?)
    }

    // ---- journal -------------------------------------------------------------------

    /// Appends the acknowledged events of one POST to the journal as ONE item and makes
    /// it durable; resolves to the item's sequence number (see `journal` for how the
    /// item is removed once every event is handled).
    pub fn append_journal(
        &self,
        records: Vec<JournalRecord>,
    ) -> impl Future<Output = Result<u64, StoreError>> + 'static {
        let item = match <[JournalRecord; 1]>::try_from(records) {
            Ok([record]) => JournalItem::One(record),
            Err(batch) => JournalItem::Batch { batch },
        };
        let bytes = encode(&item);
        let submitted = self.next_id().map(|seq| {
            self.submit(true, move |overlay| {
                overlay.insert(keys::journal(seq), bytes);
                Ok(seq)
            })
        });
        async move { submitted?.await }
    }

    /// Removes a journal item whose events have all been handled. Queued at once; it need
    /// not be durable (a replay would find every event's dedup mark).
    pub fn remove_journal(&self, seq: u64) -> impl Future<Output = Result<(), StoreError>> {
        self.submit(false, move |overlay| {
            overlay.remove(keys::journal(seq));
            Ok(())
        })
    }

    pub fn journal_contains(&self, seq: u64) -> Result<bool, StoreError> {
        Ok(self.inner.tree.contains_key(keys::journal(seq))?)
    }

    /// Every journal item not yet handled, oldest first, with its events.
    pub fn pending_journal(&self) -> Result<Vec<(u64, Vec<JournalRecord>)>, StoreError> {
        let items: Vec<(u64, JournalItem)> = self.scan_sequenced(keys::JOURNAL)?;
        Ok(items
            .into_iter()
            .map(|(seq, item)| (seq, item.into_events()))
            .collect())
    }

    // ---- conversations -------------------------------------------------------------

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

    pub fn transcript(
        &self,
        key: &ConversationKey,
    ) -> Result<Vec<(u64, TranscriptEntry)>, StoreError> {
        self.inner
            .tree
            .scan_prefix(keys::transcript_prefix(&key.page_id, &key.psid))
            .map(sequenced)
            .collect()
    }

    /// The last `n` entries of a conversation's transcript, in order (reads only those).
    pub fn transcript_tail(
        &self,
        key: &ConversationKey,
        n: usize,
    ) -> Result<Vec<(u64, TranscriptEntry)>, StoreError> {
        let mut tail: Vec<(u64, TranscriptEntry)> = self
            .inner
            .tree
            .scan_prefix(keys::transcript_prefix(&key.page_id, &key.psid))
            .rev()
            .take(n)
            .map(sequenced)
            .collect::<Result<_, StoreError>>()?;
        tail.reverse();
        Ok(tail)
    }

    /// The entries of a conversation's transcript numbered `from` up to (not including) `to`.
    pub fn transcript_range(
        &self,
        key: &ConversationKey,
        from: u64,
        to: u64,
    ) -> Result<Vec<(u64, TranscriptEntry)>, StoreError> {
        let start = keys::transcript_entry(&key.page_id, &key.psid, from);
        let end = keys::transcript_entry(&key.page_id, &key.psid, to);
        self.inner.tree.range(start..end).map(sequenced).collect()
    }

    pub fn transcript_entry(
        &self,
        key: &ConversationKey,
        seq: u64,
    ) -> Result<Option<TranscriptEntry>, StoreError> {
        self.get(&keys::transcript_entry(&key.page_id, &key.psid, seq))
    }

    pub fn is_handled(&self, page_id: &str, event_id: &str) -> Result<bool, StoreError> {
        Ok(self
            .inner
            .tree
            .contains_key(keys::handled(page_id, event_id))?)
    }

    /// Applies one conversation turn atomically; resolves once applied, and once on disk
    /// when `durable`.
    pub fn commit_turn(
        &self,
        commit: TurnCommit,
        durable: bool,
    ) -> impl Future<Output = Result<(), StoreError>> + 'static {
        let writes = turn_writes(&commit);
        let changes = entry_change_keys(&commit);
        self.submit(durable, move |overlay| {
            for (key, value) in writes {
                match value {
                    Some(value) => overlay.insert(key, value),
                    None => overlay.remove(key),
                }
            }
            for (key, change) in changes {
                apply_entry_change(overlay, &key, &change)?;
            }
            Ok(())
        })
    }

    /// Removes dedup marks (`keys::HANDLED`) or sent-message index entries
    /// (`keys::SENT`) made before `older_than` (epoch ms), looking at no more than `limit`
    /// keys after `cursor`. Resolves to how many it removed and where to go on from
    /// (`None` once the end was reached). A redelivery older than the retention is then
    /// handled again: the price of not keeping one key per message forever.
    pub fn prune_old(
        &self,
        namespace: u8,
        cursor: Option<Vec<u8>>,
        older_than: i64,
        limit: usize,
    ) -> impl Future<Output = Result<(usize, Option<Vec<u8>>), StoreError>> + 'static {
        let older_than = u64::try_from(older_than).unwrap_or_default();
        self.submit(false, move |overlay| {
            let start = cursor.unwrap_or_else(|| vec![namespace]);
            let end = vec![namespace + 1];
            let mut seen = 0;
            let mut removed = 0;
            let mut last = None;
            for item in overlay.tree().range(start..end) {
                let (key, value) = item?;
                // Keys from before they carried a time count as oldest.
                let made = made_at(namespace, &value);
                if made < older_than {
                    overlay.remove(key.to_vec());
                    removed += 1;
                }
                seen += 1;
                last = Some(key.to_vec());
                if seen >= limit {
                    break;
                }
            }
            // Resume strictly after the last key looked at.
            let next = last.filter(|_| seen >= limit).map(|mut key| {
                key.push(0);
                key
            });
            Ok((removed, next))
        })
    }

    // ---- timers --------------------------------------------------------------------

    /// Whether any timer is due by `now` (a cheap read, so idle ticks cost no commit).
    pub fn has_due_timers(&self, now: i64) -> Result<bool, StoreError> {
        let first = self
            .inner
            .tree
            .range(vec![keys::TIMER]..keys::timers_due_by(now))
            .next();
        Ok(first.transpose()?.is_some())
    }

    /// Moves every timer due by `now` from the timer index into the journal, atomically
    /// and durably, as `colloquy_timer` events. Resolves to the new journal items.
    pub fn fire_due_timers(
        &self,
        now: i64,
    ) -> impl Future<Output = Result<Vec<(u64, JournalRecord)>, StoreError>> + 'static {
        let db = self.inner.db.clone();
        self.submit(true, move |overlay| {
            let due: Vec<(sled::IVec, TimerRecord)> = overlay
                .tree()
                .range(vec![keys::TIMER]..keys::timers_due_by(now))
                .map(|item| {
                    let (key, value) = item?;
                    Ok((key.clone(), decode(&key, &value)?))
                })
                .collect::<Result<_, StoreError>>()?;
            let mut fired = Vec::with_capacity(due.len());
            for (key, timer) in due {
                // A timer cancelled earlier in this cycle is gone from the overlay.
                if !overlay.contains(&key)? {
                    continue;
                }
                let seq = db.generate_id()?;
                let record = fired_timer_event(timer);
                overlay.remove(key.to_vec());
                overlay.insert(keys::journal(seq), encode(&record));
                fired.push((seq, record));
            }
            Ok(fired)
        })
    }

    // ---- outbox --------------------------------------------------------------------

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
        record: &OutboxRecord,
        outcome: SendOutcome,
    ) -> impl Future<Output = Result<(), StoreError>> + 'static {
        let entry_key = keys::transcript_entry(&record.page_id, &record.psid, record.entry);
        self.submit(true, move |overlay| {
            overlay.remove(keys::outbox(seq));
            let Some(bytes) = overlay.get(&entry_key)? else {
                return Ok(());
            };
            let mut entry: TranscriptEntry = decode(&entry_key, &bytes)?;
            match outcome {
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
                    }
                }
            }
            overlay.insert(entry_key, encode(&entry));
            Ok(())
        })
    }

    // ---- helpers -------------------------------------------------------------------

    fn get<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StoreError> {
        match self.inner.tree.get(key)? {
            Some(bytes) => Ok(Some(decode(key, &bytes)?)),
            None => Ok(None),
        }
    }

    fn scan_sequenced<T: DeserializeOwned>(
        &self,
        namespace: u8,
    ) -> Result<Vec<(u64, T)>, StoreError> {
        self.inner
            .tree
            .scan_prefix([namespace])
            .map(sequenced)
            .collect()
    }
}

/// A record stored under a key that ends in its sequence number, with that number.
fn sequenced<T: DeserializeOwned>(
    item: sled::Result<(sled::IVec, sled::IVec)>,
) -> Result<(u64, T), StoreError> {
    let (key, value) = item?;
    let seq = keys::trailing_seq(&key).unwrap_or_default();
    Ok((seq, decode(&key, &value)?))
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

fn classify_open_error(path: String, source: sled::Error) -> StoreError {
    // sled reports a held lock as an Io error whose text mentions the lock.
    let locked = matches!(&source, sled::Error::Io(io) if io.to_string().contains("lock"));
    if locked {
        StoreError::Locked { path }
    } else {
        StoreError::Open { path, source }
    }
}

/// The plain writes of a turn, encoded outside the committer thread.
fn turn_writes(commit: &TurnCommit) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
    let mut writes = Vec::new();
    if let Some(seq) = commit.journal_seq {
        writes.push((keys::journal(seq), None));
    }
    if let Some((page_id, event_id)) = &commit.handled {
        // The mark holds when it was made, so old marks can be pruned (`prune_old`).
        let at = u64::try_from(now_ms()).unwrap_or_default();
        writes.push((
            keys::handled(page_id, event_id),
            Some(at.to_be_bytes().to_vec()),
        ));
    }
    let Some(conversation) = &commit.conversation else {
        return writes;
    };
    let (page, psid) = (&conversation.page_id, &conversation.psid);
    writes.push((keys::conversation(page, psid), Some(encode(conversation))));
    for (seq, entry) in &commit.new_entries {
        writes.push((
            keys::transcript_entry(page, psid, *seq),
            Some(encode(entry)),
        ));
    }
    for (seq, record) in &commit.outbox {
        writes.push((keys::outbox(*seq), Some(encode(record))));
    }
    for timer in &commit.timers_cleared {
        writes.push((keys::timer(timer.due, page, psid, &timer.name), None));
    }
    for timer in &commit.timers_set {
        let key = keys::timer(timer.due, &timer.page_id, &timer.psid, &timer.name);
        writes.push((key, Some(encode(timer))));
    }
    writes
}

fn entry_change_keys(commit: &TurnCommit) -> Vec<(Vec<u8>, EntryChange)> {
    let Some(conversation) = &commit.conversation else {
        return Vec::new();
    };
    commit
        .entry_changes
        .iter()
        .map(|(seq, change)| {
            let key = keys::transcript_entry(&conversation.page_id, &conversation.psid, *seq);
            (key, change.clone())
        })
        .collect()
}

/// Applies a change to an entry against its current value (read inside the committer).
fn apply_entry_change(
    overlay: &mut Overlay<'_>,
    key: &[u8],
    change: &EntryChange,
) -> Result<(), StoreError> {
    let Some(bytes) = overlay.get(key)? else {
        return Ok(());
    };
    let mut entry: TranscriptEntry = decode(key, &bytes)?;
    match change {
        EntryChange::Advance(status) => {
            entry.advance(*status);
        }
        EntryChange::LinkEcho { mid, timestamp } => {
            entry.mid.get_or_insert_with(|| mid.clone());
            entry.echo_timestamp = Some(*timestamp);
            // An echo is Facebook saying the message went out, whatever our sender knows.
            entry.advance(Status::Sent);
        }
    }
    overlay.insert(key.to_vec(), encode(&entry));
    Ok(())
}

/// The journal item of a fired timer: a `colloquy_timer` event from the user.
fn fired_timer_event(timer: TimerRecord) -> JournalRecord {
    JournalRecord {
        page_id: timer.page_id.clone(),
        standby: false,
        event: serde_json::json!({
            "sender": {"id": timer.psid},
            "recipient": {"id": timer.page_id},
            "timestamp": timer.due,
            "colloquy_timer": {"name": timer.name, "due": timer.due, "payload": timer.payload},
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messenger::outbound::{MessagingType, OutMessage, Recipient, SendRequest};
    use serde_json::json;

    fn block_on<F: Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(future)
    }

    /// Lets a test chain `.into_blocking()` onto a store call.
    trait Blocking: Future + Sized {
        fn into_blocking(self) -> Self::Output {
            block_on(self)
        }
    }

    impl<F: Future> Blocking for F {}

    fn open() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        (dir, store)
    }

    fn key() -> ConversationKey {
        ConversationKey::new("page", "user")
    }

    fn out_entry() -> TranscriptEntry {
        TranscriptEntry::queued_out("text", Some("hi".into()), 10)
    }

    fn outbox_record(entry: u64) -> OutboxRecord {
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
        }
    }

    /// Commits a turn that queued one reply; returns its outbox sequence number.
    fn commit_reply(store: &Store, journal_seq: u64) -> u64 {
        let mut record = ConversationRecord::new(&key());
        let entry = record.take_entry_seq();
        record.state = json!({"step": 1});
        let outbox_seq = store.next_id().unwrap();
        store
            .commit_turn(
                TurnCommit {
                    journal_seq: Some(journal_seq),
                    handled: Some(("page".into(), "m.1".into())),
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

    fn journal_one(store: &Store) -> u64 {
        let record = JournalRecord {
            page_id: "page".into(),
            standby: false,
            event: json!({"sender": {"id": "user"}, "message": {"mid": "m.1", "text": "a"}}),
        };
        block_on(store.append_journal(vec![record])).unwrap()
    }

    #[test]
    fn journal_items_stay_pending_until_a_turn_consumes_them() {
        let (_dir, store) = open();
        let seq = journal_one(&store);
        assert!(store.journal_contains(seq).unwrap());
        assert_eq!(store.pending_journal().unwrap().len(), 1);
        commit_reply(&store, seq);
        assert!(!store.journal_contains(seq).unwrap());
        assert!(store.pending_journal().unwrap().is_empty());
    }

    #[test]
    fn the_events_of_one_post_are_one_journal_item_until_it_is_removed() {
        let (_dir, store) = open();
        let event = |mid: &str| JournalRecord {
            page_id: "page".into(),
            standby: false,
            event: json!({"sender": {"id": "user"}, "message": {"mid": mid}}),
        };
        let seq =
            block_on(store.append_journal(vec![event("m.a"), event("m.b"), event("m.c")])).unwrap();
        let pending = store.pending_journal().unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].0, seq);
        let mids: Vec<&serde_json::Value> = pending[0]
            .1
            .iter()
            .map(|r| &r.event["message"]["mid"])
            .collect();
        assert_eq!(mids, [&json!("m.a"), &json!("m.b"), &json!("m.c")]);
        block_on(store.remove_journal(seq)).unwrap();
        assert!(store.pending_journal().unwrap().is_empty());
    }

    #[test]
    fn a_turn_writes_state_transcript_outbox_and_dedup_mark_together() {
        let (_dir, store) = open();
        let seq = journal_one(&store);
        commit_reply(&store, seq);
        let record = store.conversation(&key()).unwrap().unwrap();
        assert_eq!(record.state, json!({"step": 1}));
        assert_eq!(store.transcript(&key()).unwrap().len(), 1);
        assert_eq!(store.pending_outbox().unwrap().len(), 1);
        assert!(store.is_handled("page", "m.1").unwrap());
        assert!(!store.is_handled("page", "m.2").unwrap());
    }

    fn mark_handled(store: &Store, event_id: &str) {
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

    #[test]
    fn old_dedup_marks_are_pruned_in_chunks_and_new_ones_kept() {
        let (_dir, store) = open();
        for i in 0..5 {
            mark_handled(&store, &format!("m.old{i}"));
        }
        let cutoff = now_ms() + 1;
        std::thread::sleep(std::time::Duration::from_millis(5));
        mark_handled(&store, "m.new");
        let mut cursor = None;
        let mut removed = 0;
        loop {
            let (n, next) = store
                .prune_old(keys::HANDLED, cursor, cutoff, 2)
                .into_blocking()
                .unwrap();
            removed += n;
            match next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        assert_eq!(removed, 5);
        assert!(!store.is_handled("page", "m.old0").unwrap());
        assert!(store.is_handled("page", "m.new").unwrap());
    }

    #[test]
    fn old_entries_of_the_legacy_sent_message_index_are_pruned() {
        let (_dir, store) = open();
        let sent = |at| {
            encode(&SentRef {
                psid: "user".into(),
                entry: 0,
                at,
            })
        };
        // Data directories of earlier builds hold this index; nothing writes it any more.
        let (old, new) = (keys::sent("page", "m.old"), keys::sent("page", "m.new"));
        let (o, n) = (old.clone(), new.clone());
        let write = store.inner.committer.submit(false, move |overlay| {
            overlay.insert(o, sent(1));
            overlay.insert(n, sent(now_ms()));
            Ok::<(), StoreError>(())
        });
        write.into_blocking().unwrap();
        let (removed, next) = store
            .prune_old(keys::SENT, None, now_ms() - 60_000, 100)
            .into_blocking()
            .unwrap();
        assert_eq!((removed, next), (1, None));
        assert!(!store.inner.tree.contains_key(old).unwrap());
        assert!(store.inner.tree.contains_key(new).unwrap());
    }

    #[test]
    fn the_transcript_tail_is_the_last_entries_in_order() {
        let (_dir, store) = open();
        let mut record = ConversationRecord::new(&key());
        let entries: Vec<(u64, TranscriptEntry)> = (0..5)
            .map(|_| (record.take_entry_seq(), out_entry()))
            .collect();
        store
            .commit_turn(
                TurnCommit {
                    conversation: Some(record),
                    new_entries: entries,
                    ..TurnCommit::default()
                },
                true,
            )
            .into_blocking()
            .unwrap();
        let tail: Vec<u64> = store
            .transcript_tail(&key(), 2)
            .unwrap()
            .iter()
            .map(|(s, _)| *s)
            .collect();
        assert_eq!(tail, vec![3, 4]);
        assert_eq!(store.transcript_tail(&key(), 10).unwrap().len(), 5);
    }

    #[test]
    fn a_completed_send_records_the_message_id_and_leaves_the_outbox() {
        let (_dir, store) = open();
        let outbox_seq = commit_reply(&store, journal_one(&store));
        let (_, record) = store.pending_outbox().unwrap().remove(0);
        let outcome = SendOutcome::Sent {
            message_id: Some("m_sent".into()),
            at: 99,
        };
        block_on(store.complete_send(outbox_seq, &record, outcome)).unwrap();
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
        block_on(store.complete_send(outbox_seq, &outbox, sent)).unwrap();
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
            .complete_send(outbox_seq, &record, SendOutcome::Failed(failure.clone()))
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
        block_on(store.complete_send(outbox_seq, &record, sent)).unwrap();
        block_on(store.record_attempts(outbox_seq, &record)).unwrap();
        assert!(store.pending_outbox().unwrap().is_empty());
    }

    #[test]
    fn flushed_writes_survive_reopening_and_ids_keep_increasing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let first_id;
        {
            let store = Store::open(&path).unwrap();
            let seq = journal_one(&store);
            first_id = seq;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            runtime.block_on(store.flush()).unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.pending_journal().unwrap()[0].0, first_id);
        assert!(store.next_id().unwrap() > first_id);
    }

    #[test]
    fn a_second_open_of_a_held_directory_is_reported_as_locked() {
        let (dir, _store) = open();
        match Store::open(&dir.path().join("db")) {
            Err(StoreError::Locked { path }) => assert!(path.ends_with("db")),
            Err(other) => panic!("expected Locked, got {other}"),
            Ok(_) => panic!("a held directory opened twice"),
        }
    }

    #[test]
    fn a_corrupt_record_is_an_error_naming_its_key_not_a_panic() {
        let (_dir, store) = open();
        store
            .inner
            .tree
            .insert(keys::conversation("page", "user"), &b"not json"[..])
            .unwrap();
        let error = store.conversation(&key()).unwrap_err();
        assert!(matches!(error, StoreError::Corrupt { .. }), "{error}");
    }
}
