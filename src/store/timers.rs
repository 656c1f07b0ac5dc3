//! The due-ordered timer index: whether a timer is due, and firing the due ones.
//!
//! Timers are set and cleared by `turn` (with the conversation record that lists them);
//! here a due timer leaves the index and becomes a journal item in the same durable
//! operation, so it fires exactly once, after a crash too. The engine's timer wheel
//! decides when to ask; this file never schedules anything itself.

use std::future::Future;

use super::codec::{decode, encode};
use super::{keys, JournalRecord, Store, StoreError, TimerRecord};

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

    /// Moves every timer due by `now` from the timer index into the journal, atomically
    /// and durably, as `colloquy_timer` events. Resolves to the new journal items.
    pub fn fire_due_timers(
        &self,
        now: i64,
    ) -> impl Future<Output = Result<Vec<(u64, JournalRecord)>, StoreError>> + 'static {
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
                if !overlay.contains(&key)? {
                    continue;
                }
                let seq = db.generate_id()?;
                let record = fired_timer_event(timer);
                overlay.remove(key);
                overlay.insert(keys::journal(seq), encode(&record));
                fired.push((seq, record));
            }
            Ok(fired)
        })
    }
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
    use super::super::testing::{key, open, Blocking};
    use super::super::{ConversationRecord, TurnCommit};
    use super::*;
    use serde_json::json;

    fn timer(name: &str, due: i64) -> TimerRecord {
        TimerRecord {
            page_id: "page".into(),
            psid: "user".into(),
            name: name.into(),
            due,
            payload: json!({"for": name}),
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
        let (seq, event) = &fired[0];
        assert_eq!(event.event["colloquy_timer"]["name"], "soon");
        assert_eq!(
            event.event["colloquy_timer"]["payload"],
            json!({"for": "soon"})
        );
        assert_eq!(
            store.pending_journal().unwrap(),
            vec![(*seq, vec![event.clone()])]
        );
        assert!(store
            .fire_due_timers(150)
            .into_blocking()
            .unwrap()
            .is_empty());
        assert!(!store.has_due_timers(150).unwrap());
        assert!(store.has_due_timers(200).unwrap());
    }
}
