//! The store's last act at a graceful shutdown: sled's log folded into a snapshot, so the
//! next start replays nothing.
//!
//! sled 0.34 writes its snapshot (where every page lives in the log) only while it opens,
//! after replaying the log written since the previous snapshot; that replay is what made
//! the first start after a busy run slow (a million conversations: 0.9 s with the page
//! cache warm, 1.9 s cold), while a start with nothing to replay takes 0.25 s even cold.
//! So once the engine has closed the store, this opens the data directory again, which
//! runs that same recovery and writes the snapshot while nobody waits for an answer, and
//! closes it. It is sled's own recovery, the code every start already relies on: a crash
//! in the middle is a crash during a start, and the snapshot file is written aside and
//! renamed into place. It must not run while a `Store` is open (sled's lock refuses it,
//! and the caller is told so).

use std::path::Path;
use std::time::{Duration, Instant};

use super::{classify_open_error, StoreError};

/// Folds the log of the closed store at `path` into sled's snapshot; returns how long
/// it took. Opens nothing beyond sled's own files, reads no record.
pub fn fold_log_into_snapshot(path: &Path) -> Result<Duration, StoreError> {
    let started = Instant::now();
    let db = sled::Config::new()
        .path(path)
        // Recovery reads the log, not the records: a small cache suffices.
        .cache_capacity(1024 * 1024)
        .flush_every_ms(None)
        .open()
        .map_err(|source| classify_open_error(path.display().to_string(), source.into()))?;
    // Opening wrote the snapshot; what opening itself logged (nothing, or a few bytes of
    // sled's metadata) is flushed as the handle drops.
    drop(db);
    Ok(started.elapsed())
}

#[cfg(test)]
mod tests {
    use super::super::testing::{journal_one, pending_journal_seqs};
    use super::super::Store;
    use super::*;

    /// sled's snapshot files in the data directory, by the log position they cover.
    fn snapshot_positions(path: &Path) -> Vec<u64> {
        let mut positions: Vec<u64> = std::fs::read_dir(path)
            .unwrap()
            .flatten()
            .filter_map(|entry| {
                let name = entry.file_name().into_string().ok()?;
                let hex = name.strip_prefix("snap.")?;
                u64::from_str_radix(hex, 16).ok()
            })
            .collect();
        positions.sort_unstable();
        positions
    }

    #[test]
    fn folding_writes_a_snapshot_covering_the_whole_log_and_keeps_every_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let store = Store::open(&path).unwrap();
        let first = journal_one(&store);
        drop(store);
        assert!(
            snapshot_positions(&path).is_empty(),
            "a fresh store has no snapshot until something folds its log"
        );

        fold_log_into_snapshot(&path).unwrap();
        let after_first = snapshot_positions(&path);
        assert_eq!(after_first.len(), 1, "one snapshot, older ones removed");

        let store = Store::open(&path).unwrap();
        let second = journal_one(&store);
        drop(store);
        fold_log_into_snapshot(&path).unwrap();
        let after_second = snapshot_positions(&path);
        assert_eq!(after_second.len(), 1);
        assert!(
            after_second[0] > after_first[0],
            "the second fold covers the writes of the second run: {after_first:?} then {after_second:?}"
        );

        let store = Store::open(&path).unwrap();
        let pending = pending_journal_seqs(&store);
        assert_eq!(pending, vec![first, second]);
    }

    #[test]
    fn folding_an_open_store_is_refused_as_locked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let store = Store::open(&path).unwrap();
        match fold_log_into_snapshot(&path) {
            Err(StoreError::Locked { .. }) => {}
            other => panic!("expected Locked, got {other:?}"),
        }
        drop(store);
    }
}
