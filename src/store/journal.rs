//! Where an acknowledged event waits in the journal until its turn is committed.
//!
//! A POST with one event journals it as one item, and the turn that handles it removes
//! that item in the same atomic operation. A POST with several events journals them as
//! ONE item (one key written and one removed per POST, not per event); each turn then
//! only marks its event finished in a shared, in-memory [`BatchProgress`], and the turn
//! that finishes the last one has the item removed. After a crash the whole item is
//! replayed and the events already handled are recognised by their dedup marks (receipts
//! have none and are idempotent). This module holds no IO; `Store` reads and writes.

use std::sync::{Arc, Mutex, PoisonError};

/// Which events of a journal item are still to be committed.
#[derive(Debug)]
pub struct BatchProgress {
    /// `true` at the index of each event not yet finished, and how many those are.
    pending: Mutex<(Vec<bool>, usize)>,
}

impl BatchProgress {
    pub fn new(events: usize) -> Arc<BatchProgress> {
        Arc::new(BatchProgress {
            pending: Mutex::new((vec![true; events], events)),
        })
    }

    /// Marks the event at `index` finished; `true` exactly once: when it was the last.
    /// Finishing an event twice (a replay of one already handled) changes nothing.
    pub fn finish(&self, index: usize) -> bool {
        let mut guard = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let (pending, left) = &mut *guard;
        match pending.get_mut(index) {
            Some(still) if *still => {
                *still = false;
                *left -= 1;
                *left == 0
            }
            _ => false,
        }
    }
}

/// The journal item an event came in, and how its turn settles it.
#[derive(Debug, Clone)]
pub enum JournalRef {
    /// The item holds this event only: the turn removes it.
    Own(u64),
    /// The item holds several events; this one is at `index`.
    Shared {
        seq: u64,
        index: usize,
        progress: Arc<BatchProgress>,
    },
}

impl JournalRef {
    /// The journal item's sequence number.
    pub fn seq(&self) -> u64 {
        match self {
            JournalRef::Own(seq) | JournalRef::Shared { seq, .. } => *seq,
        }
    }

    /// The item a turn removes in its own operation: only one it does not share.
    pub fn removed_with_turn(&self) -> Option<u64> {
        match self {
            JournalRef::Own(seq) => Some(*seq),
            JournalRef::Shared { .. } => None,
        }
    }

    /// Called once the event's turn is committed: the shared item to remove now, if this
    /// event was the last of it still pending.
    pub fn finished(&self) -> Option<u64> {
        match self {
            JournalRef::Own(_) => None,
            JournalRef::Shared {
                seq,
                index,
                progress,
            } => progress.finish(*index).then_some(*seq),
        }
    }

    /// References to each of `events` events of the item `seq`.
    pub fn for_item(seq: u64, events: usize) -> Vec<JournalRef> {
        if events == 1 {
            return vec![JournalRef::Own(seq)];
        }
        let progress = BatchProgress::new(events);
        JournalRef::sharing(seq, &progress, events)
    }

    /// References to each event of the item `seq`, counted by an existing `progress`.
    pub fn sharing(seq: u64, progress: &Arc<BatchProgress>, events: usize) -> Vec<JournalRef> {
        (0..events)
            .map(|index| JournalRef::Shared {
                seq,
                index,
                progress: progress.clone(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_item_of_its_own_is_removed_by_the_turn() {
        let refs = JournalRef::for_item(7, 1);
        assert_eq!(refs.len(), 1);
        assert_eq!(refs[0].removed_with_turn(), Some(7));
        assert_eq!(refs[0].finished(), None);
    }

    #[test]
    fn a_shared_item_is_removed_after_its_last_event_whatever_the_order() {
        let refs = JournalRef::for_item(9, 3);
        assert!(refs.iter().all(|r| r.removed_with_turn().is_none()));
        assert_eq!(refs[2].finished(), None);
        assert_eq!(refs[0].finished(), None);
        assert_eq!(refs[1].finished(), Some(9));
    }

    #[test]
    fn finishing_an_event_twice_never_removes_the_item_early() {
        let refs = JournalRef::for_item(4, 2);
        assert_eq!(refs[0].finished(), None);
        // A replay of the first event, already handled, finishes it again.
        assert_eq!(refs[0].finished(), None);
        assert_eq!(refs[1].finished(), Some(4));
        assert_eq!(refs[1].finished(), None, "only once");
    }
}
