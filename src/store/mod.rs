//! The only code that touches sled: typed reads and atomic writes of colloquy's records.
//!
//! Everything lives in one tree, namespaced by `keys`. Every write is an operation run by
//! the `committer` thread, so one turn of a conversation (journal mark, dedup mark,
//! conversation record, transcript entries, timers, outbox items) is one atomic part of
//! one sled batch, and many writers share a batch (a few, for a very large cycle) and
//! one sync (group commit).
//! Durability is explicit: writers await a durable operation before they tell anyone
//! outside the process that something happened. Reads go straight to the tree. The store
//! holds no business rules beyond "status only moves forward".
//!
//! This file holds the `Store` handle: opening, flushing, ids, and what the engine
//! watches (release, disk size, commit counters). Each concern's reads and writes are
//! `impl Store` blocks in their own file: `journal`, `conversations` and `transcript` (reads), `turn`,
//! `outbox`, `timers`, `pruning`, `deletions`. Nothing outside `store` names a sled type or a key.

mod activity;
mod cache;
pub mod changes;
mod checkpoint;
mod codec;
mod committer;
mod conversations;
mod deletions;
mod error;
pub mod journal;
pub mod keys;
mod linger;
mod listing;
mod outbox;
mod pruning;
pub mod records;
mod replication;
#[cfg(test)]
mod testing;
mod timers;
pub use timers::TimerFilter;
mod transcript;
mod turn;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use serde::de::DeserializeOwned;

use codec::{decode, sequenced};
use committer::{Committer, Overlay};

pub use activity::ListFilter;
pub use cache::CacheSettings;
pub use checkpoint::fold_log_into_snapshot;
pub use committer::CommitStats;
use error::BackendError;
pub use error::StoreError;
pub use linger::LingerSettings;
pub use listing::TreeStatus;
pub use outbox::SendOutcome;
pub use pruning::{PruneCursor, Pruned};
pub use records::{
    ConversationKey, ConversationMap, ConversationRecord, ConversationSet, DeletionRequest,
    DeletionStatus, Direction, FailedEvent, Failure, JournalItem, JournalRecord, OutboxRecord,
    Outgoing, PendingItem, SentRef, Status, TimerEntry, TimerRecord, TranscriptEntry,
};
pub use replication::{Replicator, SendPermission};
pub use turn::{EntryChange, TurnCommit};

/// sled's page cache at start, and the least it shrinks to; sled's own default (1 GiB)
/// would let the cache alone outgrow a small VM. 6 MiB answered as fast as 8 and 16 MiB
/// at 128 senders and with 200,000 distinct senders (docs/performance.md).
/// `COLLOQUY_CACHE_MB` changes it.
pub const DEFAULT_CACHE_BYTES: u64 = 6 * 1024 * 1024;

/// The most sled's page cache grows to when its pages do not fit (`cache`): with 2,048
/// conversations in flight 32 MiB answered ~30 % more events than 6 (docs/performance.md).
/// `COLLOQUY_CACHE_MAX_MB` changes it.
pub const DEFAULT_CACHE_MAX_BYTES: u64 = 32 * 1024 * 1024;

/// How a store trades memory, latency and CPU (`COLLOQUY_CACHE_MB`,
/// `COLLOQUY_CACHE_MAX_MB`, `COLLOQUY_COMMIT_LINGER_US`, `COLLOQUY_COMMIT_LINGER_OPS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreTuning {
    /// sled's page cache, in bytes: where it starts and the range it moves in.
    pub cache: CacheSettings,
    /// When a small commit cycle waits for more operations.
    pub linger: LingerSettings,
}

impl Default for StoreTuning {
    fn default() -> StoreTuning {
        StoreTuning {
            cache: CacheSettings {
                floor: DEFAULT_CACHE_BYTES,
                ceiling: DEFAULT_CACHE_MAX_BYTES,
            },
            linger: LingerSettings::default(),
        }
    }
}

/// Tells, without keeping it open, whether a store is closed: every handle dropped, the
/// committer's final flush done and its thread joined, sled's files released for another
/// process or a reopen.
pub struct StoreRelease(std::sync::Weak<()>);

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
    changes: changes::ChangeFeed,
    legacy_marks: conversations::LegacyMarks,
    newest_marks: conversations::NewestMarks,
    // Dropped after the fields above: its drop joins the thread after a final flush.
    committer: Committer,
    // Declared last so it drops last, once the committer's thread (holding sled's last
    // handle) has joined: `StoreRelease` watches it. Watching `Inner` itself would report
    // the store released while the committer still flushes and sled still holds its lock.
    closed: Arc<()>,
}

impl Store {
    /// Opens (or creates) the data directory. Fails with `Locked` when another process has it.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Store::open_tuned(path, StoreTuning::default())
    }

    /// Like `open`, with its cache size and commit lingering chosen.
    pub fn open_tuned(path: &Path, tuning: StoreTuning) -> Result<Store, StoreError> {
        let StoreTuning { cache, linger } = tuning;
        let shown = path.display().to_string();
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(cache.floor)
            // Durability comes from explicit group-committed flushes, not a timer.
            .flush_every_ms(None)
            .open()
            .map_err(|source| classify_open_error(shown, source.into()))?;
        let tree = db.open_tree("colloquy")?;
        Store::build_activity_index_if_missing(&tree)?;
        let legacy_marks = conversations::LegacyMarks::found_in(&tree);
        let newest_marks = conversations::NewestMarks::found_in(&tree)?;
        let committer = Committer::start(db.clone(), tree.clone(), linger, cache)
            .map_err(|e| StoreError::Commit(e.to_string()))?;
        Ok(Store {
            inner: Arc::new(Inner {
                db,
                tree,
                changes: changes::ChangeFeed::default(),
                legacy_marks,
                newest_marks,
                committer,
                closed: Arc::new(()),
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

    /// The feed announcing each conversation change once it is applied.
    pub fn changes(&self) -> changes::ChangeFeed {
        self.inner.changes.clone()
    }

    /// Resolves as `write` does, and announces `change` once the write is applied.
    fn announced<T>(
        &self,
        write: impl Future<Output = Result<T, StoreError>> + 'static,
        change: Option<changes::Announcement>,
    ) -> impl Future<Output = Result<T, StoreError>> + 'static {
        let feed = self.inner.changes.clone();
        async move {
            let written = write.await?;
            if let Some(change) = change {
                feed.announce(change);
            }
            Ok(written)
        }
    }

    /// Waits until every write submitted before this call is on disk (shared with other
    /// waiters: one flush per commit cycle).
    pub fn flush(&self) -> impl Future<Output = Result<(), StoreError>> + 'static {
        self.submit(true, |_| Ok(()))
    }

    /// A way to learn when the last handle is gone.
    pub fn release_watch(&self) -> StoreRelease {
        StoreRelease(Arc::downgrade(&self.inner.closed))
    }

    pub fn disk_size_probe(&self) -> DiskSizeProbe {
        DiskSizeProbe(Arc::downgrade(&self.inner))
    }

    pub fn commit_stats(&self) -> Arc<CommitStats> {
        self.inner.committer.stats()
    }

    /// Whether the latest commit cycle failed. sled stops a store after an I/O error (a
    /// full disk, a file it could not write), and every later write fails until a restart,
    /// while reads may still answer: this is what tells readiness so.
    pub fn commits_failing(&self) -> bool {
        self.inner.committer.is_failing()
    }

    /// A unique, increasing id that survives restarts (journal and outbox sequence numbers).
    pub fn next_id(&self) -> Result<u64, StoreError> {
        Ok(self.inner.db.generate_id()?)
    }

    /// The record under `key`, decoded.
    fn get<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StoreError> {
        match self.inner.tree.get(key)? {
            Some(bytes) => Ok(Some(decode(key, &bytes)?)),
            None => Ok(None),
        }
    }

    /// Every record of a namespace whose keys end in a sequence number, in that order.
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

fn classify_open_error(path: String, source: BackendError) -> StoreError {
    if source.is_lock_held() {
        StoreError::Locked { path }
    } else {
        StoreError::Open { path, source }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{journal_one, key, open, pending_journal_seqs};
    use super::*;

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

    /// Our sled applies a batch leaf by leaf, each run of writes to one leaf as one change
    /// of it (vendor/README.md, change 8). Batches of up to 400 writes, most landing in
    /// leaves other writes of the batch also change (dense random keys, and appends past
    /// the end as the outbox and dedup marks make), inserts and removes mixed, under a
    /// cache small enough to page leaves out: the tree holds what a map given the same
    /// writes holds, and so does sled's log replayed by a reopening.
    #[test]
    fn batches_of_many_writes_per_leaf_read_back_and_survive_reopening() {
        use rand::{rngs::StdRng, Rng, SeedableRng};
        use std::collections::BTreeMap;
        type Map = BTreeMap<Vec<u8>, Vec<u8>>;
        fn contents(tree: &sled::Tree) -> Map {
            let pairs = tree.iter().map(|pair| pair.unwrap());
            pairs
                .map(|(key, value)| (key.to_vec(), value.to_vec()))
                .collect()
        }
        /// The first key whose value differs, if any (the maps are too large to print).
        fn first_difference(stored: &Map, model: &Map) -> Option<Vec<u8>> {
            let keys = stored.keys().chain(model.keys());
            keys.filter(|key| stored.get(*key) != model.get(*key))
                .min()
                .cloned()
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sled");
        let config = sled::Config::new().path(&path).cache_capacity(64 * 1024);
        let mut rng = StdRng::seed_from_u64(8);
        let mut model = BTreeMap::new();
        let mut appended = 10_000u32;
        {
            let tree = config.open().unwrap().open_tree("t").unwrap();
            for round in 0..200u32 {
                let mut writes = BTreeMap::new();
                for _ in 0..rng.gen_range(1..400) {
                    let key = if rng.gen_bool(0.3) {
                        appended += 1;
                        appended
                    } else {
                        rng.gen_range(0..appended)
                    };
                    let value = rng.gen_bool(0.7).then(|| {
                        let len = rng.gen_range(0..40);
                        [round.to_be_bytes().to_vec(), vec![7; len]].concat()
                    });
                    writes.insert(key.to_be_bytes().to_vec(), value);
                }
                let mut batch = sled::Batch::default();
                for (key, value) in writes {
                    match value {
                        Some(value) => {
                            batch.insert(key.clone(), value.clone());
                            model.insert(key, value);
                        }
                        None => {
                            batch.remove(key.clone());
                            model.remove(&key);
                        }
                    }
                }
                tree.apply_batch(batch).unwrap();
            }
            assert!(model.len() > 5_000, "{} keys", model.len());
            assert_eq!(first_difference(&contents(&tree), &model), None);
            tree.flush().unwrap();
        }
        let reopened = config.open().unwrap().open_tree("t").unwrap();
        assert_eq!(first_difference(&contents(&reopened), &model), None);
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

    /// A record too large for sled's log goes to a file of its own; when writing that
    /// file fails (disk full, no file handles, the directory gone), the write is an error
    /// and the store still closes. sled 0.34 left the failed write's log slot claimed, so
    /// the buffer holding it was never written and the next flush waited forever, holding
    /// a lock every sled database of the process shares (vendor/README.md, change 5).
    #[test]
    fn a_large_record_whose_file_cannot_be_written_is_an_error_and_the_store_still_closes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let store = Store::open(&path).unwrap();
        let kept = journal_one(&store);
        std::fs::remove_dir_all(path.join("blobs")).unwrap();

        let large = JournalRecord {
            page_id: "page".into(),
            channel: Default::default(),
            standby: false,
            event: serde_json::json!({"message": {"mid": "m.2", "text": "a".repeat(200_000)}}),
        };
        let refused = testing::block_on(store.append_journal(vec![large]));
        assert!(refused.is_err(), "the large record was reported written");
        assert!(
            store.commits_failing(),
            "readiness is not told the store stopped"
        );
        let after = testing::block_on(store.append_journal(vec![testing::journal_record()]));
        assert!(after.is_err(), "a stopped store took a later write");

        let (closed, closing) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            drop(store);
            let _ = closed.send(());
        });
        closing
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("the store never finished closing after the failed write");

        let store = Store::open(&path).unwrap();
        let pending = pending_journal_seqs(&store);
        assert_eq!(
            pending,
            vec![kept],
            "what was durable before the failure is kept, nothing of the failed write"
        );
    }

    /// What a graceful stop relies on before it folds the log: once the watch says
    /// released, the data directory opens again at once.
    #[test]
    fn once_released_the_directory_reopens_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        for round in 0..5 {
            let store = Store::open(&path).unwrap();
            journal_one(&store);
            let release = store.release_watch();
            std::thread::spawn(move || drop(store));
            while !release.is_released() {
                std::thread::yield_now();
            }
            match Store::open(&path) {
                Ok(_) => {}
                Err(error) => panic!("round {round}: released, but the reopen failed: {error}"),
            }
        }
    }
}
