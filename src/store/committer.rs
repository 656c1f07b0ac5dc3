//! Group commit: one thread applies every write to the tree and makes it durable.
//!
//! sled 0.34 seals its I/O buffer on every `apply_batch` and `transaction`, so each one
//! costs a log write and a `sync_file_range`; at one batch per event the disk's sync rate
//! caps throughput (see docs/performance.md). Instead, writers submit *operations*. This
//! thread takes every operation queued so far, runs them one after another against an
//! overlay (each sees the writes of those before it; a failing one is dropped whole),
//! applies the result as one atomic sled batch (several, cut between operations, once a
//! cycle passes `MAX_KEYS_PER_BATCH` keys), flushes once (sled's flush, which as vendored
//! `fdatasync`s the log, so a durable write survives power loss, not only a crash) if any
//! operation asked for durability, then answers them all. Each operation stays atomic:
//! its writes are part of one all-or-nothing batch. Readers read the tree directly and see an operation's writes
//! once it has been answered. At moderate load a cycle that would start with few
//! operations may first wait a moment for more (`linger` decides when and how long). At
//! each cycle's start the thread also resizes sled's page cache when `cache` says so.
//! This module knows nothing of colloquy's records, and the `Overlay` it hands to
//! operations speaks in byte vectors and `BackendError`, not sled types.

use std::collections::BTreeMap;
use std::future::Future;
use std::ops::Bound::{Excluded, Included};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::cache::{CacheSettings, CacheSizer};
use super::error::BackendError;
use super::linger::{Linger, LingerSettings};

/// Why a cycle failed: sled's or the file system's error text.
pub type CycleResult = Result<(), String>;

/// What one operation reports back once its cycle is applied (and flushed).
type Completion = Box<dyn FnOnce(CycleResult) + Send>;

/// Runs an operation's writes into the overlay; says whether it succeeded (an operation
/// that failed is dropped whole) and how to report back.
type Work = Box<dyn FnOnce(&mut Overlay<'_>) -> (bool, Completion) + Send>;

struct Operation {
    work: Work,
    durable: bool,
    /// When it was queued: lingering never holds it past the linger window from here.
    queued: Instant,
}

/// A stored key and its value.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// Most operations one cycle takes, so one cycle's latency stays bounded.
const MAX_OPERATIONS_PER_CYCLE: usize = 4096;

/// About the most keys one sled batch carries; a cycle with more writes is applied as
/// several batches (cut between operations, so each operation stays atomic) and flushed
/// once. sled pins one epoch for a whole batch, so every leaf the batch replaces stays
/// allocated until the batch ends: at 128 senders posting 16 events each, cycles of
/// thousands of operations made peaks of 121 – 170 MiB RSS against ~85 MiB between them;
/// batches of at most 1,024 keys peaked at 96 – 99 MiB, of 256 at 92 – 93 MiB, and both
/// answered faster (docs/performance.md). Ordinary cycles (~125 keys at 128 senders) are one
/// batch.
const MAX_KEYS_PER_BATCH: usize = 256;

/// A linger checks for queued operations this many times over its window.
const LINGER_SLICES: u32 = 4;
/// Shortest sleep of a linger, so a nearly spent window does not spin.
const MIN_LINGER_SLICE: Duration = Duration::from_micros(50);

/// Reads that see the writes made earlier in this cycle; writes that stay staged until
/// the operation succeeds.
pub struct Overlay<'a> {
    tree: &'a sled::Tree,
    cycle: &'a BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    staged: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl Overlay<'_> {
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        if let Some(value) = self.staged.get(key).or_else(|| self.cycle.get(key)) {
            return Ok(value.clone());
        }
        Ok(self.tree.get(key)?.map(|v| v.to_vec()))
    }

    pub fn contains(&self, key: &[u8]) -> Result<bool, BackendError> {
        Ok(self.get(key)?.is_some())
    }

    pub fn insert(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.staged.insert(key.into(), Some(value.into()));
    }

    pub fn remove(&mut self, key: impl Into<Vec<u8>>) {
        self.staged.insert(key.into(), None);
    }

    /// Whether any key starting with `prefix` exists, counting the writes of this cycle
    /// and of this operation.
    pub fn any_with_prefix(&self, prefix: &[u8]) -> Result<bool, BackendError> {
        let written = |key: &[u8]| self.staged.get(key).or_else(|| self.cycle.get(key));
        for map in [&self.staged, self.cycle] {
            let under = map
                .range(prefix.to_vec()..)
                .take_while(|(key, _)| key.starts_with(prefix));
            for (key, _) in under {
                if written(key).is_some_and(Option::is_some) {
                    return Ok(true);
                }
            }
        }
        for item in self.tree.scan_prefix(prefix) {
            let (key, _) = item?;
            if !matches!(written(&key), Some(None)) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The greatest key from `floor` up to and including `key` that holds a value, with
    /// that value, counting the writes of this cycle and of this operation.
    pub fn last_at_or_before(
        &self,
        floor: &[u8],
        key: &[u8],
    ) -> Result<Option<KeyValue>, BackendError> {
        let mut upper = Included(key.to_vec());
        loop {
            let bounds = (Included(floor.to_vec()), upper.clone());
            let written = [&self.staged, self.cycle]
                .into_iter()
                .filter_map(|map| map.range(bounds.clone()).next_back())
                .map(|(key, _)| key.clone())
                .max();
            let stored = self
                .tree
                .last_within(upper.as_ref().map(|key| sled::IVec::from(key.as_slice())))?
                .filter(|(key, _)| key.as_ref() >= floor);
            if let Some((key, value)) = &stored {
                if written.as_deref() < Some(&key[..]) {
                    // Stored and not written this cycle: the stored value is what is there.
                    return Ok(Some((key.to_vec(), value.to_vec())));
                }
            }
            let Some(candidate) = written else {
                return Ok(None);
            };
            match self.get(&candidate)? {
                Some(value) => return Ok(Some((candidate, value))),
                // Removed in this cycle: what holds a value is before it.
                None => upper = Excluded(candidate),
            }
        }
    }

    /// The stored keys from `start` up to (not including) `end`, in order, with their
    /// values. A scan of the tree: it does not see this cycle's writes.
    pub fn range(
        &self,
        start: Vec<u8>,
        end: Vec<u8>,
    ) -> impl Iterator<Item = Result<(Vec<u8>, Vec<u8>), BackendError>> + 'static {
        self.tree.range(start..end).map(|item| {
            let (key, value) = item?;
            Ok((key.to_vec(), value.to_vec()))
        })
    }
}

/// Counters for observability and benchmarks: how many cycles ran, how many operations
/// they carried, and where a cycle's time went (applying the batch, sled's flush of its
/// log buffers and its `fdatasync`).
#[derive(Default, Debug)]
pub struct CommitStats {
    pub cycles: AtomicU64,
    pub operations: AtomicU64,
    pub apply_micros: AtomicU64,
    /// sled batches applied: one per cycle, more when a cycle is cut (`MAX_KEYS_PER_BATCH`).
    pub batches: AtomicU64,
    pub flushes: AtomicU64,
    pub flush_micros: AtomicU64,
    /// Cycles that waited for more operations before starting, and for how long.
    pub lingers: AtomicU64,
    pub linger_micros: AtomicU64,
    /// Cycles whose batch or flush failed (every operation of such a cycle got the error).
    pub failed_cycles: AtomicU64,
    /// Whether the latest cycle failed: sled stops a store after an I/O error, so from
    /// then on every cycle fails until a restart (readiness reports it).
    pub failing: AtomicBool,
    /// sled's page cache: its capacity now (bytes), and the pages read back from the log
    /// because it did not hold them, as of the latest cycle (`cache`).
    pub cache_bytes: AtomicU64,
    pub cache_misses: AtomicU64,
}

/// Handle to the committer thread; dropping it stops the thread after a last flush.
pub struct Committer {
    queue: Option<mpsc::Sender<Operation>>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<CommitStats>,
}

impl Committer {
    /// Starts the thread. Its flushes are sled's, which (as vendored, change 6) write the
    /// log buffers and `fdatasync` the log file. `linger` says when a small cycle waits
    /// for more operations (see `linger`); `cache` the range sled's page cache moves in
    /// (see `cache`), starting at its floor.
    pub fn start(
        db: sled::Db,
        tree: sled::Tree,
        linger: LingerSettings,
        cache: CacheSettings,
    ) -> std::io::Result<Committer> {
        let sizer = CacheSizer::new(cache, Instant::now());
        Committer::start_sized(db, tree, linger, sizer)
    }

    fn start_sized(
        db: sled::Db,
        tree: sled::Tree,
        linger: LingerSettings,
        cache: CacheSizer,
    ) -> std::io::Result<Committer> {
        let (queue, inbox) = mpsc::channel::<Operation>();
        let stats = Arc::new(CommitStats::default());
        stats.cache_bytes.store(cache.capacity(), Relaxed);
        let thread_stats = stats.clone();
        let thread = std::thread::Builder::new()
            .name("colloquy-commit".into())
            .spawn(move || {
                let mut tuning = Tuning {
                    linger: Linger::new(linger, Instant::now()),
                    cache,
                };
                let storage = Storage {
                    db: &db,
                    tree: &tree,
                };
                run(&storage, &inbox, &mut tuning, &thread_stats)
            })?;
        Ok(Committer {
            queue: Some(queue),
            thread: Some(thread),
            stats,
        })
    }

    /// Queues an operation at once (not when the future is first polled) and resolves
    /// when its cycle is applied, and flushed to disk when `durable`.
    pub fn submit<T, E>(
        &self,
        durable: bool,
        write: impl FnOnce(&mut Overlay<'_>) -> Result<T, E> + Send + 'static,
    ) -> impl Future<Output = Result<T, E>> + 'static
    where
        T: Send + 'static,
        E: From<String> + Send + 'static,
    {
        let (answer, receive) = oneshot::channel::<Result<T, E>>();
        let work: Work = Box::new(move |overlay| match write(overlay) {
            Ok(value) => {
                let completion: Completion = Box::new(move |cycle| {
                    let _ = answer.send(cycle.map(|()| value).map_err(E::from));
                });
                (true, completion)
            }
            Err(error) => {
                let completion: Completion = Box::new(move |_| {
                    let _ = answer.send(Err(error));
                });
                (false, completion)
            }
        });
        let queued = self.queue.as_ref().map(|q| {
            q.send(Operation {
                work,
                durable,
                queued: Instant::now(),
            })
        });
        async move {
            match queued {
                Some(Ok(())) => receive
                    .await
                    .unwrap_or_else(|_| Err(E::from("the committer stopped".to_string()))),
                _ => Err(E::from("the store is closing".to_string())),
            }
        }
    }

    pub fn stats(&self) -> Arc<CommitStats> {
        self.stats.clone()
    }

    /// Whether the latest cycle failed (`CommitStats::failing`).
    pub fn is_failing(&self) -> bool {
        self.stats.failing.load(Relaxed)
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        // Closing the queue ends the thread's loop; joining it makes sure the last cycle
        // was flushed and sled's files are released before anyone reopens them.
        self.queue.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What a cycle writes to and makes durable.
struct Storage<'a> {
    db: &'a sled::Db,
    tree: &'a sled::Tree,
}

/// What the thread adjusts as the load changes.
struct Tuning {
    linger: Linger,
    cache: CacheSizer,
}

fn run(
    storage: &Storage<'_>,
    inbox: &mpsc::Receiver<Operation>,
    tuning: &mut Tuning,
    stats: &CommitStats,
) {
    while let Ok(first) = inbox.recv() {
        let mut operations = vec![first];
        take_queued(inbox, &mut operations);
        linger_for_more(inbox, &mut operations, &mut tuning.linger, stats);
        size_the_cache(storage.db, &mut tuning.cache, stats);
        run_cycle(storage, operations, stats);
    }
    if let Err(error) = storage.db.flush() {
        log::error!("final sled flush failed: {error}");
    }
}

/// Adds what is queued now, up to a cycle's limit; says whether submitters are left
/// (false: the store is closing).
fn take_queued(inbox: &mpsc::Receiver<Operation>, operations: &mut Vec<Operation>) -> bool {
    while operations.len() < MAX_OPERATIONS_PER_CYCLE {
        match inbox.try_recv() {
            Ok(operation) => operations.push(operation),
            Err(mpsc::TryRecvError::Empty) => return true,
            Err(mpsc::TryRecvError::Disconnected) => return false,
        }
    }
    true
}

/// Resizes sled's page cache when `cache` says so, and reports its figures.
fn size_the_cache(db: &sled::Db, sizer: &mut CacheSizer, stats: &CommitStats) {
    let misses = db.cache_misses();
    stats.cache_misses.store(misses, Relaxed);
    let operations = stats.operations.load(Relaxed);
    if let Some(bytes) = sizer.check(Instant::now(), misses, operations) {
        db.set_cache_capacity(bytes);
        stats.cache_bytes.store(bytes, Relaxed);
        log::info!("sled's page cache is now {} MiB", bytes / (1024 * 1024));
    }
}

/// Lets the cycle about to start wait for more operations when `linger` says so.
fn linger_for_more(
    inbox: &mpsc::Receiver<Operation>,
    operations: &mut Vec<Operation>,
    linger: &mut Linger,
    stats: &CommitStats,
) {
    let oldest = operations[0].queued;
    let Some(deadline) = linger.deadline(operations.len(), oldest, Instant::now()) else {
        return;
    };
    let (at_hand, started) = (operations.len(), Instant::now());
    gather_until(inbox, operations, deadline, linger.target());
    linger.gathered(operations.len() - at_hand);
    stats.lingers.fetch_add(1, Relaxed);
    stats
        .linger_micros
        .fetch_add(micros(started.elapsed()), Relaxed);
}

/// Waits until `target` operations are at hand or `deadline` passes. It sleeps in a few
/// slices rather than waking for each operation queued meanwhile: waking costs CPU, and
/// saving CPU is what lingering is for. A closed queue ends the wait too: the cycle runs,
/// and the next `recv` ends the thread.
fn gather_until(
    inbox: &mpsc::Receiver<Operation>,
    operations: &mut Vec<Operation>,
    deadline: Instant,
    target: usize,
) {
    let slice = deadline.saturating_duration_since(Instant::now()) / LINGER_SLICES;
    while operations.len() < target {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            return;
        };
        std::thread::sleep(left.min(slice).max(MIN_LINGER_SLICE));
        if !take_queued(inbox, operations) {
            return;
        }
    }
}

fn run_cycle(storage: &Storage<'_>, operations: Vec<Operation>, stats: &CommitStats) {
    let Storage { db, tree } = *storage;
    let durable = operations.iter().any(|op| op.durable);
    stats.cycles.fetch_add(1, Relaxed);
    stats.operations.fetch_add(operations.len() as u64, Relaxed);
    let mut cycle: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
    let mut completions = Vec::with_capacity(operations.len());
    let mut outcome = Ok(());
    for operation in operations {
        let mut overlay = Overlay {
            tree,
            cycle: &cycle,
            staged: BTreeMap::new(),
        };
        let (succeeded, completion) = (operation.work)(&mut overlay);
        if succeeded {
            let staged = overlay.staged;
            cycle.extend(staged);
        }
        completions.push(completion);
        if cycle.len() >= MAX_KEYS_PER_BATCH {
            // Between two operations, so each stays whole in one batch; the operations
            // after it read these writes from the tree.
            apply_unless_failed(tree, std::mem::take(&mut cycle), &mut outcome, stats);
        }
    }
    apply_unless_failed(tree, cycle, &mut outcome, stats);
    if outcome.is_ok() && durable {
        outcome = make_durable(db, stats);
    }
    if let Err(error) = &outcome {
        log::error!("store commit failed: {error}");
        stats.failed_cycles.fetch_add(1, Relaxed);
    }
    stats.failing.store(outcome.is_err(), Relaxed);
    for completion in completions {
        completion(outcome.clone());
    }
}

/// Applies one batch of the cycle, unless an earlier one failed (then sled has stopped
/// the store, and the whole cycle is reported failed).
fn apply_unless_failed(
    tree: &sled::Tree,
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    outcome: &mut CycleResult,
    stats: &CommitStats,
) {
    if outcome.is_err() || writes.is_empty() {
        return;
    }
    let started = Instant::now();
    *outcome = apply(tree, writes);
    stats.batches.fetch_add(1, Relaxed);
    stats
        .apply_micros
        .fetch_add(micros(started.elapsed()), Relaxed);
}

fn apply(tree: &sled::Tree, writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>) -> CycleResult {
    let mut batch = sled::Batch::default();
    for (key, value) in writes {
        match value {
            Some(value) => batch.insert(key, value),
            None => batch.remove(key),
        }
    }
    tree.apply_batch(batch).map_err(|e| e.to_string())
}

/// sled's flush: the log buffers written and the log file `fdatasync`ed, so a durable
/// write survives power loss, not only a crash (vendor/README.md, change 6).
fn make_durable(db: &sled::Db, stats: &CommitStats) -> CycleResult {
    let started = Instant::now();
    db.flush().map_err(|e| e.to_string())?;
    stats.flushes.fetch_add(1, Relaxed);
    stats
        .flush_micros
        .fetch_add(micros(started.elapsed()), Relaxed);
    Ok(())
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT_TEST_CACHE: u64 = 6 * 1024 * 1024;

    fn open() -> (tempfile::TempDir, sled::Db, Committer) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let tree = db.open_tree("t").unwrap();
        let committer = started(&db, tree, LingerSettings::off());
        (dir, db, committer)
    }

    /// A committer with a fixed cache, as tests other than the cache's want.
    fn started(db: &sled::Db, tree: sled::Tree, linger: LingerSettings) -> Committer {
        Committer::start(
            db.clone(),
            tree,
            linger,
            CacheSettings::fixed(DEFAULT_TEST_CACHE),
        )
        .unwrap()
    }

    /// sled configured as the store opens it: no flusher thread to flush for us.
    fn unflushed(path: &std::path::Path) -> sled::Config {
        sled::Config::new().path(path).flush_every_ms(None)
    }

    fn block_on<F: Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(future)
    }

    /// sled reuses a log segment only once what was written to it is stable. Writes no
    /// one flushes must get there too (vendor/README.md, change 6: the writer syncs
    /// after 16 unflushed buffers), or the log would only grow: 24 MB written here left a
    /// 25 MB file without that, 2.6 MB with it.
    #[test]
    fn writes_never_flushed_still_let_sled_reuse_their_log_space() {
        const ROUNDS: u64 = 6_000;
        const VALUE_BYTES: usize = 4096;
        let dir = tempfile::tempdir().unwrap();
        let db = unflushed(dir.path()).open().unwrap();
        let tree = db.open_tree("t").unwrap();
        let committer = started(&db, tree, LingerSettings::off());
        for round in 0..ROUNDS {
            let mut value = vec![7u8; VALUE_BYTES];
            value[..8].copy_from_slice(&round.to_be_bytes());
            block_on(committer.submit(false, move |o| {
                o.insert(b"k".to_vec(), value);
                Ok::<(), String>(())
            }))
            .unwrap();
        }
        let written = ROUNDS * VALUE_BYTES as u64;
        let log_bytes = std::fs::metadata(dir.path().join("db")).unwrap().len();
        assert!(
            log_bytes < written / 3,
            "the log kept growing: {log_bytes} bytes after {written} written"
        );
    }

    /// Operations that keep reading pages back because the cache cannot hold them make
    /// it grow (`cache`); the figures reach `CommitStats`, and sled takes the new size.
    #[test]
    fn a_cache_that_thrashes_grows() {
        use super::super::cache::{CachePolicy, CacheSizer};
        const KEYS: u32 = 20_000;
        const FLOOR: u64 = 64 * 1024;
        let dir = tempfile::tempdir().unwrap();
        let db = unflushed(dir.path()).cache_capacity(FLOOR).open().unwrap();
        let tree = db.open_tree("t").unwrap();
        let key = |i: u32| format!("key{i:08}").into_bytes();
        for i in 0..KEYS {
            tree.insert(key(i), vec![1u8; 200]).unwrap();
        }
        db.flush().unwrap();
        // Checks often and grows on any miss rate, so the test needs no particular speed.
        let policy = CachePolicy {
            check_every: Duration::from_millis(20),
            grow_misses_per_second: 1.0,
            grow_misses_per_operation: 0.01,
            quiet_misses_per_operation: 0.0,
            quiet_misses_per_second: 0.0,
            quiet_checks_to_shrink: u32::MAX,
        };
        let settings = CacheSettings {
            floor: FLOOR,
            ceiling: 16 * FLOOR,
        };
        let sizer = CacheSizer::with_policy(settings, policy, Instant::now());
        let committer =
            Committer::start_sized(db.clone(), tree, LingerSettings::off(), sizer).unwrap();
        let stats = committer.stats();
        assert_eq!(stats.cache_bytes.load(Relaxed), FLOOR);
        let started = Instant::now();
        let mut next = 0u32;
        while stats.cache_bytes.load(Relaxed) == FLOOR {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the cache never grew ({} misses counted)",
                stats.cache_misses.load(Relaxed)
            );
            // Keys far apart: each read needs a page the tiny cache has let go.
            let reads: Vec<_> = (0..50)
                .map(|_| {
                    next = (next + 7_919) % KEYS;
                    let k = key(next);
                    committer.submit(false, move |o| {
                        let value = o.get(&k).map_err(|e| e.to_string())?;
                        o.insert(k, value.unwrap_or_default());
                        Ok::<(), String>(())
                    })
                })
                .collect();
            for answer in block_on(futures_util::future::join_all(reads)) {
                answer.unwrap();
            }
        }
        assert!(stats.cache_misses.load(Relaxed) > 0);
        let grown = stats.cache_bytes.load(Relaxed);
        assert!(
            grown.is_power_of_two() && grown <= 16 * FLOOR,
            "grew to {grown}"
        );
    }

    #[test]
    fn concurrent_operations_share_cycles_and_all_get_their_answer() {
        let (_dir, db, committer) = open();
        let waits: Vec<_> = (0..64u32)
            .map(|i| {
                committer.submit(true, move |o| {
                    o.insert(i.to_be_bytes().to_vec(), b"v".to_vec());
                    Ok::<u32, String>(i)
                })
            })
            .collect();
        let answers = block_on(futures_util::future::join_all(waits));
        assert_eq!(answers, (0..64).map(Ok).collect::<Vec<_>>());
        assert_eq!(db.open_tree("t").unwrap().len(), 64);
        // All 64 were queued before the thread could finish its first cycle's flush.
        assert!(committer.stats().cycles.load(Relaxed) < 64);
    }

    /// A cycle with more writes than one sled batch should carry is applied as several
    /// batches, cut between operations: each operation is still whole and answered, and
    /// an operation after a cut sees the writes of those before it.
    #[test]
    fn a_large_cycle_is_applied_in_several_batches_each_operation_whole() {
        const OPERATIONS: u32 = 600;
        const KEYS_EACH: u32 = 4;
        let (_dir, db, committer) = open();
        // Holds the thread in a first cycle so that all the others queue for the next one.
        let (release, held) = std::sync::mpsc::channel::<()>();
        let (running, blocking) = std::sync::mpsc::channel::<()>();
        let blocker = committer.submit(false, move |_| {
            running.send(()).unwrap();
            held.recv().unwrap();
            Ok::<(), String>(())
        });
        blocking.recv().unwrap();
        let key = |op: u32, k: u32| format!("op{op:05}-{k}").into_bytes();
        let waits: Vec<_> = (0..OPERATIONS)
            .map(|op| {
                committer.submit(true, move |o| {
                    if op > 0 && o.get(&key(op - 1, KEYS_EACH - 1)).unwrap().is_none() {
                        return Err(format!("operation {op} did not see operation {}", op - 1));
                    }
                    for k in 0..KEYS_EACH {
                        o.insert(key(op, k), b"v".to_vec());
                    }
                    Ok::<u32, String>(op)
                })
            })
            .collect();
        release.send(()).unwrap();
        block_on(blocker).unwrap();
        let answers = block_on(futures_util::future::join_all(waits));
        assert_eq!(answers, (0..OPERATIONS).map(Ok).collect::<Vec<_>>());
        assert_eq!(
            db.open_tree("t").unwrap().len(),
            (OPERATIONS * KEYS_EACH) as usize
        );
        let stats = committer.stats();
        assert_eq!(
            stats.cycles.load(Relaxed),
            2,
            "the operations shared one cycle"
        );
        // The blocker wrote nothing; 2,400 keys, 4 per operation, so each batch but the
        // last holds exactly `MAX_KEYS_PER_BATCH` (a multiple of 4).
        let keys = (OPERATIONS * KEYS_EACH) as usize;
        let batches = stats.batches.load(Relaxed) as usize;
        assert!(batches > 1, "{keys} keys went in one batch");
        assert_eq!(batches, keys.div_ceil(MAX_KEYS_PER_BATCH));
    }

    #[test]
    fn a_small_cycle_lingers_for_an_operation_queued_within_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let tree = db.open_tree("t").unwrap();
        // Short enough that the test ends within the controller's first lingering phase
        // (500 ms), long enough that the second operation comes within the window.
        let linger = LingerSettings {
            window: Duration::from_millis(100),
            target: 4,
        };
        let committer = Arc::new(started(&db, tree, linger));
        let stats = committer.stats();
        let first = committer.submit(true, |o| {
            o.insert(b"first".to_vec(), b"v".to_vec());
            Ok::<(), String>(())
        });
        let later = std::thread::spawn({
            let committer = committer.clone();
            move || {
                std::thread::sleep(Duration::from_millis(10));
                block_on(committer.submit(true, |o| {
                    o.insert(b"later".to_vec(), b"v".to_vec());
                    Ok::<(), String>(())
                }))
            }
        });
        block_on(first).unwrap();
        later.join().unwrap().unwrap();
        assert_eq!(
            stats.cycles.load(Relaxed),
            1,
            "the second operation joined the first one's cycle"
        );
        assert_eq!(stats.lingers.load(Relaxed), 1);
    }

    #[test]
    fn an_operation_sees_the_writes_of_earlier_ones_in_its_cycle() {
        let (_dir, _db, committer) = open();
        let first = committer.submit(false, |o| {
            o.insert(b"k".to_vec(), b"1".to_vec());
            Ok::<(), String>(())
        });
        let second = committer.submit(true, |o| {
            let seen = o.get(b"k").map_err(|e| e.to_string())?;
            Ok::<_, String>(seen)
        });
        let (_, seen) = block_on(async { (first.await, second.await) });
        assert_eq!(seen, Ok(Some(b"1".to_vec())));
    }

    /// Each conversation's transcript is appended to at its end, beside the next
    /// conversation's. A leaf that splits where the appends go (vendored sled, change
    /// 10) stays nearly full; one split in halves keeps about 17 of its 33 entries for
    /// good. Every key still reads back in order, after reopening too.
    #[test]
    fn leaves_appended_at_their_end_split_where_the_appends_go_and_stay_nearly_full() {
        const CONVERSATIONS: u64 = 8;
        const RUNS: u64 = 400;
        let dir = tempfile::tempdir().unwrap();
        let open = || {
            let db = unflushed(dir.path()).open().unwrap();
            let tree = db.open_tree("t").unwrap();
            (db, tree)
        };
        let key = |conversation: u64, run: u64| {
            let mut key = format!("t/page/user{conversation:03}/").into_bytes();
            key.extend_from_slice(&run.to_be_bytes());
            key
        };
        let (db, tree) = open();
        for run in 0..RUNS {
            for conversation in 0..CONVERSATIONS {
                tree.insert(key(conversation, run), vec![7u8; 120]).unwrap();
            }
        }
        let keys = (CONVERSATIONS * RUNS) as f64;
        let per_leaf = keys / tree.leaf_count().unwrap() as f64;
        assert!(per_leaf >= 24.0, "{per_leaf:.1} keys per leaf");
        db.flush().unwrap();
        drop((db, tree));

        let (_db, tree) = open();
        let mut expected: Vec<Vec<u8>> = (0..CONVERSATIONS)
            .flat_map(|conversation| (0..RUNS).map(move |run| key(conversation, run)))
            .collect();
        expected.sort();
        let read: Vec<Vec<u8>> = tree
            .iter()
            .keys()
            .map(|key| key.unwrap().to_vec())
            .collect();
        assert_eq!(read, expected);
        let backwards: Vec<Vec<u8>> = tree
            .iter()
            .rev()
            .map(|item| item.unwrap().0.to_vec())
            .collect();
        expected.reverse();
        assert_eq!(backwards, expected);
    }

    /// sled's `last_within` (vendored, change 9) reads the leaf that holds the bound in
    /// place and falls back to the iterator when the key is in an earlier leaf: across
    /// a few hundred leaves, with gaps and removals, it answers as a sorted map does.
    #[test]
    fn the_last_key_at_or_before_is_found_across_many_leaves_as_in_a_sorted_map() {
        use rand::{rngs::StdRng, Rng, SeedableRng};
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let tree = db.open_tree("t").unwrap();
        let mut rng = StdRng::seed_from_u64(9);
        let mut model = BTreeMap::new();
        let key = |n: u32| format!("t{n:06}").into_bytes();
        for n in (0..40_000).step_by(4) {
            if rng.gen_bool(0.6) {
                tree.insert(key(n), &n.to_be_bytes()[..]).unwrap();
                model.insert(key(n), n.to_be_bytes().to_vec());
            }
        }
        // Emptied stretches leave leaves with nothing at or before a key in them.
        for n in (0..40_000).step_by(4) {
            if (n / 400) % 5 == 2 || rng.gen_bool(0.1) {
                tree.remove(key(n)).unwrap();
                model.remove(&key(n));
            }
        }
        let committer = started(&db, tree, LingerSettings::off());
        let probes: Vec<u32> = (0..3_000).map(|_| rng.gen_range(0..40_100)).collect();
        let expected: Vec<Option<KeyValue>> = probes
            .iter()
            .map(|n| {
                let floor = b"t00".to_vec();
                model
                    .range(floor..=key(*n))
                    .next_back()
                    .map(|(k, v)| (k.clone(), v.clone()))
            })
            .collect();
        let found = block_on(committer.submit(false, move |o| {
            probes
                .iter()
                .map(|n| o.last_at_or_before(b"t00", &key(*n)))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())
        }))
        .unwrap();
        assert_eq!(found.len(), expected.len());
        for (index, (found, expected)) in found.iter().zip(&expected).enumerate() {
            assert_eq!(found, expected, "probe {index}");
        }
    }

    #[test]
    fn the_last_key_at_or_before_sees_this_cycles_writes_and_removals() {
        let (_dir, db, committer) = open();
        let tree = db.open_tree("t").unwrap();
        for key in [b"a1", b"a3", b"a5"] {
            tree.insert(key, &b"stored"[..]).unwrap();
        }
        let earlier = committer.submit(false, |o| {
            o.insert(b"a4".to_vec(), b"earlier".to_vec());
            o.remove(b"a5".to_vec());
            Ok::<(), String>(())
        });
        let seen = committer.submit(true, |o| {
            o.remove(b"a3".to_vec());
            let at = |key: &[u8]| {
                o.last_at_or_before(b"a", key)
                    .map(|found| found.map(|(k, v)| (k, String::from_utf8(v).unwrap())))
                    .map_err(|e| e.to_string())
            };
            let answers = (at(b"a9")?, at(b"a4")?, at(b"a3")?, at(b"a0")?);
            Ok::<_, String>(answers)
        });
        let (_, seen) = block_on(async { (earlier.await, seen.await) });
        let (after_all, at_four, at_three, before_all) = seen.unwrap();
        let found = |k: &[u8], v: &str| Some((k.to_vec(), v.to_string()));
        assert_eq!(
            after_all,
            found(b"a4", "earlier"),
            "a5 was removed this cycle"
        );
        assert_eq!(at_four, found(b"a4", "earlier"));
        assert_eq!(
            at_three,
            found(b"a1", "stored"),
            "a3 was removed by this operation"
        );
        assert_eq!(before_all, None);
    }

    #[test]
    fn a_failing_operation_leaves_no_trace_and_others_still_commit() {
        let (_dir, db, committer) = open();
        let failing = committer.submit(true, |o| {
            o.insert(b"half".to_vec(), b"written".to_vec());
            Err::<(), String>("refused".into())
        });
        let fine = committer.submit(true, |o| {
            o.insert(b"whole".to_vec(), b"written".to_vec());
            Ok::<(), String>(())
        });
        let (failed, ok) = block_on(async { (failing.await, fine.await) });
        assert_eq!(failed, Err("refused".to_string()));
        assert_eq!(ok, Ok(()));
        let tree = db.open_tree("t").unwrap();
        assert!(tree.get(b"half").unwrap().is_none());
        assert!(tree.get(b"whole").unwrap().is_some());
    }

    #[test]
    fn dropping_the_committer_releases_the_database_for_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir.path()).unwrap();
            let tree = db.open_tree("t").unwrap();
            let committer = started(&db, tree, LingerSettings::default());
            block_on(committer.submit(true, |o| {
                o.insert(b"k".to_vec(), b"v".to_vec());
                Ok::<(), String>(())
            }))
            .unwrap();
        }
        // sled's IO pool may still hold the file for a moment after the last handle
        // drops (a job writing the final flush's buffer); the lock must go soon after.
        let db = reopen_within(dir.path(), Duration::from_secs(10));
        let tree = db.open_tree("t").unwrap();
        assert_eq!(tree.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
    }

    /// sled writes zeros past its log's tip ahead of use (vendor/README.md, change 11),
    /// so a cycle's writes land on blocks the filesystem has allocated already. The zeros
    /// read as nothing written: the store reopens with every value, and takes more, also
    /// after sled has cut the file back.
    #[test]
    fn the_log_is_written_with_zeros_ahead_of_its_tip_and_reopens_whole() {
        const SEGMENT: usize = 512 * 1024;
        const ROUND: u64 = 1_000;
        let dir = tempfile::tempdir().unwrap();
        let value = |i: u64| {
            let mut value = vec![u8::try_from(i % 251).unwrap(); 4096];
            value[..8].copy_from_slice(&i.to_be_bytes());
            value
        };
        let plain_key = |i: u64| i.to_be_bytes().to_vec();
        // Writes value(i) under key(i) for each i, one durable operation each.
        let write = |db: &sled::Db, writes: std::ops::Range<u64>, key: fn(u64) -> Vec<u8>| {
            let committer = started(db, db.open_tree("t").unwrap(), LingerSettings::off());
            for i in writes {
                block_on(committer.submit(true, move |o| {
                    o.insert(key(i), value(i));
                    Ok::<(), String>(())
                }))
                .unwrap();
            }
        };
        let holds_every_value = |db: &sled::Db, count: u64| {
            let tree = db.open_tree("t").unwrap();
            for i in 0..count {
                let stored = tree.get(plain_key(i)).unwrap();
                assert_eq!(
                    stored.as_deref(),
                    Some(&value(i)[..]),
                    "key {i} after reopening"
                );
            }
        };

        write(&unflushed(dir.path()).open().unwrap(), 0..ROUND, plain_key);
        let log = std::fs::read(dir.path().join("db")).unwrap();
        assert_eq!(log.len() % SEGMENT, 0, "the file ends where a segment does");
        let last_segment = &log[log.len() - SEGMENT..];
        assert!(
            last_segment.iter().all(|byte| *byte == 0),
            "a whole segment of zeros past the data ({} bytes in the file)",
            log.len()
        );

        let db = reopen_within(dir.path(), Duration::from_secs(10));
        holds_every_value(&db, ROUND);
        write(&db, ROUND..2 * ROUND, plain_key);
        drop(db);
        let db = reopen_within(dir.path(), Duration::from_secs(10));
        holds_every_value(&db, 2 * ROUND);

        // Values written over and over free whole segments at the file's end: sled
        // truncates it, and the zeros start again at the tip (over fills still running).
        const HOT_KEYS: u64 = 16;
        const OVERWRITES: u64 = 6_000;
        let hot_key = |i: u64| [0xff, u8::try_from(i % HOT_KEYS).unwrap()].to_vec();
        write(&db, 0..OVERWRITES, hot_key);
        drop(db);
        let db = reopen_within(dir.path(), Duration::from_secs(10));
        holds_every_value(&db, 2 * ROUND);
        let tree = db.open_tree("t").unwrap();
        for i in OVERWRITES - HOT_KEYS..OVERWRITES {
            let stored = tree.get(hot_key(i)).unwrap();
            assert_eq!(
                stored.as_deref(),
                Some(&value(i)[..]),
                "the last write of {i}"
            );
        }
    }

    fn reopen_within(path: &std::path::Path, limit: Duration) -> sled::Db {
        let started = Instant::now();
        loop {
            match sled::open(path) {
                Ok(db) => return db,
                Err(_) if started.elapsed() < limit => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => panic!("the database stayed locked after the committer dropped: {e}"),
            }
        }
    }
}
