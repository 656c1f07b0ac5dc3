//! Where an acknowledged event waits in the journal until its turn is committed: the
//! store's journal reads and writes (append, remove, replay) and the shared-item progress.
//!
//! A POST with one event journals it as one item, and the turn that handles it removes
//! that item in the same atomic operation. A POST with several events journals them as
//! ONE item (one key written and one removed per POST, not per event); each turn then
//! only marks its event finished in a shared, in-memory [`BatchProgress`], and the turn
//! that finishes the last one has the item removed. After a crash the whole item is
//! replayed and the events already handled are recognised by their dedup marks (receipts
//! have none and are idempotent). The progress types hold no IO; only the `Store`
//! methods here touch the journal's keys. Turns consume items in `turn`, fired timers
//! add them in `timers`.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use super::codec::encode;
use super::{keys, JournalItem, JournalRecord, PendingItem, Store, StoreError};

impl Store {
    /// Appends the acknowledged events of one POST to the journal as ONE item and makes
    /// it durable; resolves to the item's sequence number (see above for how the item is
    /// removed once every event is handled).
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

    /// Every journal item not yet handled, oldest first, with what it holds.
    pub fn pending_journal(&self) -> Result<Vec<(u64, PendingItem)>, StoreError> {
        let items: Vec<(u64, JournalItem)> = self.scan_sequenced(keys::JOURNAL)?;
        Ok(items
            .into_iter()
            .map(|(seq, item)| (seq, item.into_pending()))
            .collect())
    }
}

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

/// Where an event's durability comes from, and how its turn settles that: the journal
/// item it came in, or (not journalled) the webhook request that waits for its turn.
#[derive(Debug, Clone)]
pub enum JournalRef {
    /// Not journalled: the webhook has not answered yet and waits for this event's turn
    /// to commit durably (see [`AwaitedPost`]); the event is `index` of its request.
    Awaited {
        post: Arc<AwaitedPost>,
        index: usize,
    },
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
    /// The journal item's sequence number; `None` for an event not journalled.
    pub fn seq(&self) -> Option<u64> {
        match self {
            JournalRef::Own(seq) | JournalRef::Shared { seq, .. } => Some(*seq),
            JournalRef::Awaited { .. } => None,
        }
    }

    /// The item a turn removes in its own operation: only one it does not share.
    pub fn removed_with_turn(&self) -> Option<u64> {
        match self {
            JournalRef::Own(seq) => Some(*seq),
            JournalRef::Shared { .. } | JournalRef::Awaited { .. } => None,
        }
    }

    /// Whether the turn's commit must be durable before anything depends on it: an
    /// event not journalled is acknowledged on the strength of that commit alone.
    pub fn needs_durable_turn(&self) -> bool {
        matches!(self, JournalRef::Awaited { .. })
    }

    /// Called as the event's turn begins: `false` when the event is no longer this
    /// delivery's to handle (its request journalled it and routed a copy instead).
    pub fn claim(&self) -> bool {
        match self {
            JournalRef::Awaited { post, index } => post.claim(*index),
            JournalRef::Own(_) | JournalRef::Shared { .. } => true,
        }
    }

    /// Called once the event's turn is done: `committed` when it is durably committed,
    /// `false` when it could not be. Wakes the request waiting for it, if any.
    pub fn settle(&self, committed: bool) {
        if let JournalRef::Awaited { post, index } = self {
            post.settle(*index, committed);
        }
    }

    /// Called once the event's turn is committed: the shared item to remove now, if this
    /// event was the last of it still pending.
    pub fn finished(&self) -> Option<u64> {
        match self {
            JournalRef::Own(_) | JournalRef::Awaited { .. } => None,
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

/// The events of one webhook request that is answered once their own turns have
/// committed, instead of once they are journalled: one durable write per message instead
/// of two. Each event is delivered with a [`JournalRef::Awaited`]; the request waits
/// ([`AwaitedPost::wait`]) until every turn is committed, or until a deadline, when it
/// journals whatever is not committed ([`AwaitedPost::take_unfinished`]) and routes
/// those again as ordinary journalled events. A delivery whose event was moved to the
/// journal before its turn began does nothing ([`JournalRef::claim`] is `false`); one
/// whose turn was already running finishes, and the journalled copy is then recognised
/// by the event's dedup mark. No IO here.
///
/// A conversation's events commit in order or not at all: an event whose conversation's
/// previous event in the request did not commit is not begun ([`JournalRef::claim`] is
/// `false` and it settles failed), so when a turn fails, or an event is lost on its way
/// (its actor died with it in its mailbox), nothing after it in that conversation gets
/// ahead of it; the request hands them back together, in order.
#[derive(Debug)]
pub struct AwaitedPost {
    turns: Mutex<Vec<AwaitedTurn>>,
    /// For each event, the previous event of the same conversation in the request.
    after: Vec<Option<usize>>,
    changed: tokio::sync::Notify,
}

/// Where one event of an [`AwaitedPost`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AwaitedTurn {
    /// Routed; its turn has not begun.
    Waiting,
    /// Its turn is running.
    Claimed,
    /// Its turn is durably committed.
    Committed,
    /// Its turn could not be committed.
    Failed,
    /// Journalled and routed again by its request before its turn began.
    Moved,
}

impl AwaitedPost {
    /// A request of `events` events, each of its own conversation.
    pub fn new(events: usize) -> Arc<AwaitedPost> {
        AwaitedPost::in_order(0..events)
    }

    /// A request of events of one conversation each: `conversations` names each event's
    /// conversation, in the request's order.
    pub fn in_order<K: std::hash::Hash + Eq>(
        conversations: impl IntoIterator<Item = K>,
    ) -> Arc<AwaitedPost> {
        let mut last_of = std::collections::HashMap::new();
        let after: Vec<Option<usize>> = conversations
            .into_iter()
            .enumerate()
            .map(|(index, conversation)| last_of.insert(conversation, index))
            .collect();
        Arc::new(AwaitedPost {
            turns: Mutex::new(vec![AwaitedTurn::Waiting; after.len()]),
            after,
            changed: tokio::sync::Notify::new(),
        })
    }

    /// One reference per event, in order.
    pub fn refs(self: &Arc<Self>) -> Vec<JournalRef> {
        let events = self.lock().len();
        (0..events)
            .map(|index| JournalRef::Awaited {
                post: self.clone(),
                index,
            })
            .collect()
    }

    /// Waits until every event's turn is settled (committed or failed), or until
    /// `deadline`; whichever comes first.
    pub async fn wait(&self, deadline: tokio::time::Instant) {
        loop {
            // Registered before the check, so a settle in between is not missed.
            let changed = self.changed.notified();
            if all_settled(&self.lock()) {
                return;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return;
            }
        }
    }

    /// Whether every event's turn is settled (committed or failed).
    pub fn all_settled(&self) -> bool {
        all_settled(&self.lock())
    }

    /// How many turns are settled, and whether any of them failed.
    pub fn progress(&self) -> (usize, bool) {
        let turns = self.lock();
        let settled = turns.iter().filter(|turn| turn.is_settled()).count();
        let failed = turns.contains(&AwaitedTurn::Failed);
        (settled, failed)
    }

    /// Whether the event's turn is settled (committed or failed).
    pub fn is_settled(&self, index: usize) -> bool {
        self.lock().get(index).is_some_and(|turn| turn.is_settled())
    }

    /// Whether every event's turn is durably committed.
    pub fn all_committed(&self) -> bool {
        self.lock()
            .iter()
            .all(|turn| *turn == AwaitedTurn::Committed)
    }

    /// The indices of the events whose turns are not committed, for the request to
    /// journal. Those whose turn has not begun are marked moved, so their delivery
    /// leaves them to the journalled copy.
    pub fn take_unfinished(&self) -> Vec<usize> {
        let mut turns = self.lock();
        let mut unfinished = Vec::new();
        for (index, turn) in turns.iter_mut().enumerate() {
            match turn {
                AwaitedTurn::Committed => continue,
                AwaitedTurn::Waiting => *turn = AwaitedTurn::Moved,
                AwaitedTurn::Claimed | AwaitedTurn::Failed | AwaitedTurn::Moved => {}
            }
            unfinished.push(index);
        }
        unfinished
    }

    /// Whether the event was given up before its turn began ([`Self::take_unfinished`]).
    pub fn is_moved(&self, index: usize) -> bool {
        self.lock().get(index) == Some(&AwaitedTurn::Moved)
    }

    fn claim(&self, index: usize) -> bool {
        let mut turns = self.lock();
        let previous = self.after.get(index).copied().flatten();
        let in_order = previous.is_none_or(|before| turns[before] == AwaitedTurn::Committed);
        let claimed = match turns.get_mut(index) {
            Some(turn @ AwaitedTurn::Waiting) if in_order => {
                *turn = AwaitedTurn::Claimed;
                true
            }
            Some(turn @ AwaitedTurn::Waiting) => {
                // Its conversation's previous event did not commit: it must not get ahead.
                *turn = AwaitedTurn::Failed;
                false
            }
            _ => false,
        };
        let done = !claimed && all_settled(&turns);
        drop(turns);
        if done {
            self.changed.notify_one();
        }
        claimed
    }

    fn settle(&self, index: usize, committed: bool) {
        let done = {
            let mut turns = self.lock();
            if let Some(turn @ AwaitedTurn::Claimed) = turns.get_mut(index) {
                *turn = if committed {
                    AwaitedTurn::Committed
                } else {
                    AwaitedTurn::Failed
                };
            }
            all_settled(&turns)
        };
        if done {
            self.changed.notify_one();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<AwaitedTurn>> {
        // The state stays consistent under a panic elsewhere: every change is one store.
        self.turns.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Whether every turn is settled: only then is the request woken. Waking it for each
/// turn of a many-event request cost a cross-thread wake-up per event (4 % of the actors'
/// thread at 16 events per request); what `wait`'s callers check between wake-ups
/// (`progress`) they also check at their deadlines. From the back, where the request's
/// turns settle last, so the check stops at once while some are left.
fn all_settled(turns: &[AwaitedTurn]) -> bool {
    turns.iter().rev().all(|turn| turn.is_settled())
}

impl AwaitedTurn {
    fn is_settled(self) -> bool {
        matches!(self, AwaitedTurn::Committed | AwaitedTurn::Failed)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{block_on, commit_reply, journal_one, open};
    use super::*;
    use serde_json::json;

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
            channel: Default::default(),
            standby: false,
            event: json!({"sender": {"id": "user"}, "message": {"mid": mid}}),
        };
        let seq =
            block_on(store.append_journal(vec![event("m.a"), event("m.b"), event("m.c")])).unwrap();
        let pending = store.pending_journal().unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].0, seq);
        let PendingItem::Events(events) = &pending[0].1 else {
            panic!("webhook events came back as {:?}", pending[0].1);
        };
        let mids: Vec<&serde_json::Value> =
            events.iter().map(|r| &r.event["message"]["mid"]).collect();
        assert_eq!(mids, [&json!("m.a"), &json!("m.b"), &json!("m.c")]);
        block_on(store.remove_journal(seq)).unwrap();
        assert!(store.pending_journal().unwrap().is_empty());
    }

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

    #[test]
    fn an_awaited_post_is_committed_once_every_turn_is() {
        let post = AwaitedPost::new(2);
        let refs = post.refs();
        assert!(refs.iter().all(JournalRef::needs_durable_turn));
        assert!(refs
            .iter()
            .all(|r| r.seq().is_none() && r.finished().is_none()));
        assert!(refs[0].claim());
        refs[0].settle(true);
        assert!(!post.all_committed());
        assert!(refs[1].claim());
        refs[1].settle(true);
        assert!(post.all_committed());
        assert!(post.take_unfinished().is_empty());
    }

    /// Whether the request waiting on `post` has been woken (a wake-up left for it).
    fn woken(post: &AwaitedPost) -> bool {
        use futures_util::FutureExt;
        post.changed.notified().now_or_never().is_some()
    }

    #[test]
    fn the_request_is_woken_once_its_last_turn_settles_not_for_each_one() {
        let post = AwaitedPost::in_order(["a", "b", "a"]);
        let refs = post.refs();
        assert!(refs[0].claim() && refs[1].claim());
        refs[1].settle(true);
        assert!(!woken(&post), "one of three settled");
        refs[0].settle(false);
        assert!(!woken(&post), "two of three settled");
        assert!(!refs[2].claim(), "after its conversation's failed turn");
        assert!(woken(&post), "the last one, given up at its claim");

        let post = AwaitedPost::new(2);
        let refs = post.refs();
        assert!(refs[0].claim() && refs[1].claim());
        refs[0].settle(true);
        assert!(!woken(&post));
        refs[1].settle(true);
        assert!(woken(&post), "the last one, committed");
        // Returns at once (it would need a timer, which this runtime lacks, to wait).
        block_on(post.wait(tokio::time::Instant::now() + std::time::Duration::from_secs(60)));
    }

    #[test]
    fn past_the_deadline_an_event_not_yet_begun_is_moved_and_its_delivery_gives_it_up() {
        let post = AwaitedPost::new(3);
        let refs = post.refs();
        assert!(refs[0].claim());
        refs[0].settle(true);
        assert!(refs[1].claim()); // still running at the deadline

        assert_eq!(post.take_unfinished(), [1, 2]);

        assert!(!refs[2].claim(), "a moved event is the journalled copy's");
        refs[1].settle(true);
        assert!(
            !post.all_committed(),
            "the moved event is committed by its copy, not here"
        );
        assert!(!refs[1].claim(), "an event is claimed once");
    }

    #[test]
    fn a_failed_turn_settles_its_event_as_unfinished() {
        let post = AwaitedPost::new(1);
        let refs = post.refs();
        assert!(refs[0].claim());
        refs[0].settle(false);
        assert!(!post.all_committed());
        assert_eq!(post.take_unfinished(), [0]);
    }

    #[test]
    fn after_a_failed_turn_its_conversations_later_events_are_not_begun() {
        let post = AwaitedPost::in_order(["a", "b", "a", "a"]);
        let refs = post.refs();
        assert!(refs[0].claim());
        refs[0].settle(false);
        assert!(refs[1].claim(), "another conversation goes on");
        refs[1].settle(true);
        assert!(
            !refs[2].claim(),
            "a's next event must not get ahead of the failed one"
        );
        assert!(!refs[3].claim(), "nor the one after it");
        assert!(post.all_settled(), "given up at once, nothing to wait for");
        assert_eq!(post.take_unfinished(), [0, 2, 3]);
    }

    #[test]
    fn an_event_lost_on_its_way_holds_back_its_conversations_later_events() {
        // The actor died with event 0 in its mailbox; its restart got event 1.
        let post = AwaitedPost::in_order(["a", "a"]);
        let refs = post.refs();
        assert!(!refs[1].claim());
        assert!(
            refs[0].claim(),
            "the lost event itself may still be handled"
        );
        refs[0].settle(true);
        assert_eq!(post.take_unfinished(), [1]);
    }

    #[test]
    fn a_conversations_events_go_on_once_the_previous_one_committed() {
        let post = AwaitedPost::in_order(["a", "a"]);
        let refs = post.refs();
        assert!(refs[0].claim());
        assert!(
            !refs[1].claim(),
            "not before its previous event has committed"
        );

        let post = AwaitedPost::in_order(["a", "a"]);
        let refs = post.refs();
        assert!(refs[0].claim());
        refs[0].settle(true);
        assert!(refs[1].claim());
        refs[1].settle(true);
        assert!(post.all_committed());
    }

    #[actix_rt::test]
    async fn waiting_ends_when_every_turn_is_settled_or_at_the_deadline() {
        let post = AwaitedPost::new(1);
        let refs = post.refs();
        let far = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        let settle = {
            let first = refs[0].clone();
            async move {
                actix_rt::time::sleep(std::time::Duration::from_millis(20)).await;
                assert!(first.claim());
                first.settle(true);
            }
        };
        tokio::join!(post.wait(far), settle);
        assert!(post.all_committed());

        let stuck = AwaitedPost::new(1);
        stuck.wait(tokio::time::Instant::now()).await;
        assert!(!stuck.all_committed());
    }
}
