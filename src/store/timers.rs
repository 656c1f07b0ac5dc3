//! The due-ordered timer index: whether a timer is due, and firing the due ones.
//!
//! Timers are set and cleared by `turn` (with the conversation record that lists them);
//! here a due timer leaves the index and becomes a journal item in the same durable
//! operation, so it fires exactly once, after a crash too. The engine's timer wheel
//! decides when to ask; this file never schedules anything itself.

use std::future::Future;
use std::sync::Arc;

use super::codec::{decode, encode};
use super::{keys, JournalItem, Store, StoreError, TimerRecord};

impl Store {
    /// Whether any timer is due by `now` (a cheap read, so idle ticks cost no commit).
    pub fn has_due_timers(&self, now: i64) -> Result<bool, StoreError> {
        let first = self
            .inner
            .tree
            .range(vec![keys::TIMER]..keys::timers_due_by(now))
            .next();
        Ok(first.transpose()?.is_some())
    }

    /// Whether any timer due by `now` passes `fires` (a read: a cluster node's index also
    /// holds timers of partitions it does not hold, which must not cost a commit a tick).
    pub fn has_due_timers_where(&self, now: i64, fires: &TimerFilter) -> Result<bool, StoreError> {
        for item in self
            .inner
            .tree
            .range(vec![keys::TIMER]..keys::timers_due_by(now))
        {
            let (key, value) = item?;
            if fires(&decode::<TimerRecord>(&key, &value)?) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Moves every timer due by `now` from the timer index into the journal, atomically
    /// and durably, each as a journal item of its own. Resolves to the fired timers with
    /// their journal sequence numbers.
    #[cfg_attr(not(any(test, feature = "test-support")), allow(dead_code))] // tests use it
    pub fn fire_due_timers(
        &self,
        now: i64,
    ) -> impl Future<Output = Result<Vec<(u64, TimerRecord)>, StoreError>> + 'static {
        self.fire_due_timers_where(now, Arc::new(|_: &TimerRecord| true))
    }

    /// `fire_due_timers`, leaving in the index the due timers `fires` refuses.
    pub fn fire_due_timers_where(
        &self,
        now: i64,
        fires: TimerFilter,
    ) -> impl Future<Output = Result<Vec<(u64, TimerRecord)>, StoreError>> + 'static {
        let db = self.inner.db.clone();
        self.submit(true, move |overlay| {
            let due: Vec<(Vec<u8>, TimerRecord)> = overlay
                .range(vec![keys::TIMER], keys::timers_due_by(now))
                .map(|item| {
                    let (key, value) = item?;
                    let timer = decode(&key, &value)?;
                    Ok((key, timer))
                })
                .collect::<Result<_, StoreError>>()?;
            let mut fired = Vec::with_capacity(due.len());
            for (key, timer) in due {
                // A timer cancelled earlier in this cycle is gone from the overlay.
                if !fires(&timer) || !overlay.contains(&key)? {
                    continue;
                }
                let seq = db.generate_id()?;
                let item = JournalItem::Timer {
                    timer: timer.clone(),
                };
                overlay.remove(key);
                overlay.insert(keys::journal(seq), encode(&item));
                fired.push((seq, timer));
            }
            Ok(fired)
        })
    }
}

/// Which due timers a node fires (a cluster node: those of the partitions it holds).
pub type TimerFilter = Arc<dyn Fn(&TimerRecord) -> bool + Send + Sync>;

#[cfg(test)]
mod tests {
    use super::super::testing::{key, open, Blocking};
    use super::super::{ConversationRecord, JournalRecord, PendingItem, TurnCommit};
    use super::*;
    use serde_json::json;

    fn timer(name: &str, due: i64) -> TimerRecord {
        TimerRecord {
            page_id: "page".into(),
            psid: "user".into(),
            name: name.into(),
            due,
            payload: json!({"for": name}),
            channel: Default::default(),
        }
    }

    #[test]
    fn a_due_timer_moves_into_the_journal_once_and_a_later_one_waits() {
        let (_dir, store) = open();
        let turn = TurnCommit {
            conversation: Some(ConversationRecord::new(&key())),
            timers_set: vec![timer("soon", 100), timer("later", 200)],
            ..TurnCommit::default()
        };
        store.commit_turn(turn, true).into_blocking().unwrap();
        assert!(!store.has_due_timers(99).unwrap());
        assert!(store.has_due_timers(100).unwrap());

        let fired = store.fire_due_timers(150).into_blocking().unwrap();

        assert_eq!(fired.len(), 1);
        let (seq, fired_timer) = &fired[0];
        assert_eq!(*fired_timer, timer("soon", 100));
        assert_eq!(
            store.pending_journal().unwrap(),
            vec![(*seq, PendingItem::Timer(timer("soon", 100)))]
        );
        assert!(store
            .fire_due_timers(150)
            .into_blocking()
            .unwrap()
            .is_empty());
        assert!(!store.has_due_timers(150).unwrap());
        assert!(store.has_due_timers(200).unwrap());
    }

    #[test]
    fn a_timer_journalled_as_a_colloquy_timer_event_by_an_older_version_is_read_as_a_timer() {
        let (_dir, store) = open();
        // Exactly what fire_due_timers wrote before timers had journal items of their own.
        let old = JournalRecord {
            page_id: "page".into(),
            channel: Default::default(),
            standby: false,
            event: json!({
                "sender": {"id": "user"},
                "recipient": {"id": "page"},
                "timestamp": 100,
                "colloquy_timer": {"name": "soon", "due": 100, "payload": {"for": "soon"}},
            }),
        };
        let seq = super::super::testing::block_on(store.append_journal(vec![old])).unwrap();

        assert_eq!(
            store.pending_journal().unwrap(),
            vec![(seq, PendingItem::Timer(timer("soon", 100)))]
        );
    }
}
