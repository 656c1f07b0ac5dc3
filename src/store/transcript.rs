//! How transcript entries are laid out in the tree: the entries one turn adds, numbered
//! one after another, are ONE value (a run) under the key of the first one's number, so a
//! turn that records an event and its reply writes one key, not two, and the transcript
//! fills half as many sled leaves. A run of one entry is stored as that entry alone,
//! which is also how every entry of earlier builds is stored, so both read back alike.
//!
//! This file turns runs into writes and finds an entry among them, in the tree or through
//! the committer's overlay. It decides nothing about what an entry says (`turn`, `outbox`
//! and the conversation actor do).

use super::codec::{decode, encode};
use super::committer::{KeyValue, Overlay};
use super::{keys, ConversationKey, Store, StoreError, TranscriptEntry};

/// The writes that store a turn's new entries: each run of consecutive numbers as one
/// value under its first number.
pub(super) fn run_writes(
    page_id: &str,
    psid: &str,
    entries: &[(u64, TranscriptEntry)],
) -> Vec<KeyValue> {
    let mut writes = Vec::new();
    let mut start = 0;
    while start < entries.len() {
        let mut end = start + 1;
        while end < entries.len() && entries[end].0 == entries[end - 1].0.wrapping_add(1) {
            end += 1;
        }
        let run: Vec<&TranscriptEntry> = entries[start..end].iter().map(|(_, e)| e).collect();
        let key = keys::transcript_entry(page_id, psid, entries[start].0);
        writes.push((key, encode_run(&run)));
        start = end;
    }
    writes
}

fn encode_run(run: &[&TranscriptEntry]) -> Vec<u8> {
    match run {
        [single] => encode(single),
        _ => encode(&run),
    }
}

/// The entries of the value stored under `key`, numbered from the key's number.
pub(super) fn decode_run(
    key: &[u8],
    value: &[u8],
) -> Result<Vec<(u64, TranscriptEntry)>, StoreError> {
    let first = keys::trailing_seq(key).unwrap_or_default();
    let entries: Vec<TranscriptEntry> = if value.first() == Some(&b'[') {
        decode(key, value)?
    } else {
        vec![decode(key, value)?]
    };
    Ok((first..).zip(entries).collect())
}

/// Changes entry `seq` of a conversation with `change`, through the overlay (so it sees
/// this cycle's writes), rewriting the run that holds it. Returns `false`, writing
/// nothing, when the conversation has no such entry (forgotten, or never written).
pub(super) fn update_entry(
    overlay: &mut Overlay<'_>,
    page_id: &str,
    psid: &str,
    seq: u64,
    change: impl FnOnce(&mut TranscriptEntry),
) -> Result<bool, StoreError> {
    let prefix = keys::transcript_prefix(page_id, psid);
    let wanted = keys::transcript_entry(page_id, psid, seq);
    let Some((key, value)) = overlay.last_at_or_before(&prefix, &wanted)? else {
        return Ok(false);
    };
    let mut run = decode_run(&key, &value)?;
    let Some((_, entry)) = run.iter_mut().find(|(number, _)| *number == seq) else {
        return Ok(false);
    };
    change(entry);
    let entries: Vec<&TranscriptEntry> = run.iter().map(|(_, e)| e).collect();
    overlay.insert(key, encode_run(&entries));
    Ok(true)
}

impl Store {
    /// Every entry of a conversation's transcript, in order.
    pub fn transcript(
        &self,
        key: &ConversationKey,
    ) -> Result<Vec<(u64, TranscriptEntry)>, StoreError> {
        let mut entries = Vec::new();
        for item in self
            .inner
            .tree
            .scan_prefix(keys::transcript_prefix(&key.page_id, &key.psid))
        {
            let (stored, value) = item?;
            entries.extend(decode_run(&stored, &value)?);
        }
        Ok(entries)
    }

    /// The last `n` entries of a conversation's transcript, in order (reads only the runs
    /// that hold them).
    pub fn transcript_tail(
        &self,
        key: &ConversationKey,
        n: usize,
    ) -> Result<Vec<(u64, TranscriptEntry)>, StoreError> {
        let mut tail = Vec::new();
        let runs = self
            .inner
            .tree
            .scan_prefix(keys::transcript_prefix(&key.page_id, &key.psid))
            .rev();
        for item in runs {
            if tail.len() >= n {
                break;
            }
            let (stored, value) = item?;
            tail.extend(decode_run(&stored, &value)?.into_iter().rev());
        }
        tail.truncate(n);
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
        let start = self
            .run_holding(key, from)?
            .map(|(stored, _)| stored)
            .unwrap_or_else(|| keys::transcript_entry(&key.page_id, &key.psid, from));
        let end = keys::transcript_entry(&key.page_id, &key.psid, to);
        let mut entries = Vec::new();
        for item in self.inner.tree.range(start..end) {
            let (stored, value) = item?;
            let run = decode_run(&stored, &value)?;
            entries.extend(run.into_iter().filter(|(seq, _)| (from..to).contains(seq)));
        }
        Ok(entries)
    }

    /// Entry `seq` of a conversation's transcript.
    pub fn transcript_entry(
        &self,
        key: &ConversationKey,
        seq: u64,
    ) -> Result<Option<TranscriptEntry>, StoreError> {
        let Some((stored, value)) = self.run_holding(key, seq)? else {
            return Ok(None);
        };
        let run = decode_run(&stored, &value)?;
        Ok(run
            .into_iter()
            .find(|(number, _)| *number == seq)
            .map(|(_, e)| e))
    }

    /// The stored run that would hold entry `seq`: the last key at or before its number.
    fn run_holding(&self, key: &ConversationKey, seq: u64) -> Result<Option<KeyValue>, StoreError> {
        let prefix = keys::transcript_prefix(&key.page_id, &key.psid);
        let wanted = keys::transcript_entry(&key.page_id, &key.psid, seq);
        let found = self
            .inner
            .tree
            .range(prefix..=wanted)
            .next_back()
            .transpose()?;
        Ok(found.map(|(stored, value)| (stored.to_vec(), value.to_vec())))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{block_on, key, open, out_entry, Blocking};
    use super::super::{EntryChange, Status, TurnCommit};
    use super::*;
    use crate::store::ConversationRecord;

    /// Commits one turn adding entries numbered `seqs` (texts "e<seq>").
    fn commit_entries(store: &Store, seqs: &[u64]) {
        let mut record = ConversationRecord::new(&key());
        record.next_entry = seqs.iter().max().map_or(0, |s| s + 1);
        let new_entries = seqs
            .iter()
            .map(|seq| {
                let mut entry = out_entry();
                entry.text = Some(format!("e{seq}"));
                (*seq, entry)
            })
            .collect();
        let commit = TurnCommit {
            conversation: Some(record),
            new_entries,
            ..TurnCommit::default()
        };
        block_on(store.commit_turn(commit, false)).unwrap();
    }

    fn texts(entries: &[(u64, TranscriptEntry)]) -> Vec<(u64, String)> {
        entries
            .iter()
            .map(|(seq, e)| (*seq, e.text.clone().unwrap_or_default()))
            .collect()
    }

    #[test]
    fn a_turns_consecutive_entries_are_one_key_and_read_back_one_by_one() {
        let (_dir, store) = open();
        commit_entries(&store, &[0, 1, 2]);
        commit_entries(&store, &[3]);
        commit_entries(&store, &[4, 5]);
        let stored = store
            .inner
            .tree
            .scan_prefix(keys::transcript_prefix("page", "user"))
            .count();
        assert_eq!(stored, 3, "one key per turn");

        let all = texts(&store.transcript(&key()).unwrap());
        let expected: Vec<(u64, String)> = (0..6).map(|n| (n, format!("e{n}"))).collect();
        assert_eq!(all, expected);
        assert_eq!(
            texts(&store.transcript_tail(&key(), 3).unwrap()),
            expected[3..]
        );
        assert_eq!(texts(&store.transcript_tail(&key(), 10).unwrap()), expected);
        assert_eq!(
            texts(&store.transcript_range(&key(), 1, 5).unwrap()),
            expected[1..5]
        );
        assert_eq!(
            texts(&store.transcript_range(&key(), 4, 5).unwrap()),
            expected[4..5]
        );
        for n in 0..6 {
            let entry = store.transcript_entry(&key(), n).unwrap().unwrap();
            assert_eq!(entry.text.unwrap(), format!("e{n}"));
        }
        assert!(store.transcript_entry(&key(), 6).unwrap().is_none());
    }

    #[test]
    fn numbers_that_do_not_follow_each_other_make_runs_of_their_own() {
        let (_dir, store) = open();
        commit_entries(&store, &[0, 1, 5, 6, 9]);
        let stored = store
            .inner
            .tree
            .scan_prefix(keys::transcript_prefix("page", "user"))
            .count();
        assert_eq!(stored, 3);
        let numbers: Vec<u64> = store
            .transcript(&key())
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(numbers, vec![0, 1, 5, 6, 9]);
        assert!(store.transcript_entry(&key(), 3).unwrap().is_none());
        assert!(store.transcript_entry(&key(), 7).unwrap().is_none());
    }

    #[test]
    fn a_change_to_one_entry_of_a_run_leaves_the_others_as_they_were() {
        let (_dir, store) = open();
        commit_entries(&store, &[0, 1]);
        let mut record = store.conversation(&key()).unwrap().unwrap();
        record.read_watermark = 1;
        let commit = TurnCommit {
            conversation: Some(record),
            entry_changes: vec![(1, EntryChange::Advance(Status::Read))],
            ..TurnCommit::default()
        };
        block_on(store.commit_turn(commit, false)).unwrap();
        let first = store.transcript_entry(&key(), 0).unwrap().unwrap();
        let second = store.transcript_entry(&key(), 1).unwrap().unwrap();
        assert_eq!(first.status, Status::Queued);
        assert_eq!(first.text.as_deref(), Some("e0"));
        assert_eq!(second.status, Status::Read);
        assert_eq!(second.text.as_deref(), Some("e1"));
    }

    #[test]
    fn entries_of_earlier_builds_one_key_each_read_back_beside_runs() {
        let (_dir, store) = open();
        let legacy = |seq: u64| {
            let mut entry = out_entry();
            entry.text = Some(format!("e{seq}"));
            (keys::transcript_entry("page", "user", seq), encode(&entry))
        };
        let written: Vec<_> = [0, 1].into_iter().map(legacy).collect();
        block_on(store.submit(false, move |overlay| {
            written.into_iter().for_each(|(k, v)| overlay.insert(k, v));
            Ok(())
        }))
        .unwrap();
        commit_entries(&store, &[2, 3]);
        let all = texts(&store.transcript(&key()).unwrap());
        let expected: Vec<(u64, String)> = (0..4).map(|n| (n, format!("e{n}"))).collect();
        assert_eq!(all, expected);
        assert_eq!(
            texts(&store.transcript_range(&key(), 1, 3).unwrap()),
            expected[1..3]
        );
    }

    #[test]
    fn a_value_that_is_neither_an_entry_nor_a_run_is_corrupt_not_a_panic() {
        let (_dir, store) = open();
        store
            .inner
            .tree
            .insert(keys::transcript_entry("page", "user", 0), &b"[1, 2"[..])
            .unwrap();
        let error = store.transcript(&key()).unwrap_err();
        assert!(matches!(error, StoreError::Corrupt { .. }), "{error}");
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
}
