//! The supervisor: routes each event to its conversation's actor, one actor per
//! (page, user), spawning it on first use.
//!
//! It replays the journal at start (events acknowledged before a crash), lets idle
//! actors stop only when nothing routed to them is still waiting (a passivation
//! handshake, so no message is lost), and restarts a failed conversation by replaying its
//! journal items into a fresh actor loaded from sled (for an item shared by several
//! events of one request, into the same progress count, which it keeps until the item is
//! done). It never touches a conversation's state itself.
//!
//! **The live-actor bound is hard.** No more than `max_live` actors are ever alive. An
//! event for a conversation without an actor when all slots are taken waits here, its
//! conversation in a first-come queue, while the least recently used *idle* actor (one
//! that has handled everything delivered to it; each actor reports every event it
//! finishes) is retired to free a slot. A busy actor is never retired: retiring it would
//! free nothing until its mailbox drained, which is how a burst of new users once pushed
//! the actor count to six times the bound. Events for a retiring actor wait for its
//! successor, so one conversation never has two actors. All of this is O(log n) per
//! event. The supervisor also knows when each waiting or queued event was taken, and
//! publishes the oldest to `load::Load` for admission (see `backlog`).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use crate::engine::backlog::Backlog;
use crate::engine::conversation::{
    Conversation, ConversationEnv, ConversationStopped, Deliver, EventHandled, IdleStop,
    JournalItemDone, Parent, Retire,
};
use crate::engine::event::EngineEvent;
use crate::store::journal::{BatchProgress, JournalRef};
use crate::store::{ConversationKey, ConversationMap, ConversationSet};

/// Acknowledged events, with where each waits in the journal, in arrival order.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Route {
    pub events: Vec<(JournalRef, EngineEvent)>,
}

/// Stop every conversation (after the event each has in hand) and then the supervisor.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

/// Retire the actors of the conversations `matches` picks, after the events they have
/// in hand, and give up the events still waiting for a slot: a cluster node's partitions
/// moved, so what an actor holds in memory may be stale, or no longer this node's.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RetireWhere(pub Box<dyn Fn(&ConversationKey) -> bool + Send>);

/// How many conversation actors are alive.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct LiveConversations;

/// An event on its way to its conversation, with when the supervisor took it
/// (`Load::now_ms`), for the backlog's age.
struct Taken {
    journal: JournalRef,
    event: EngineEvent,
    at_ms: u64,
}

struct Child {
    addr: Addr<Conversation>,
    incarnation: u64,
    routed: u64,
    /// When each event delivered to it and not yet handled was taken, in delivery order
    /// (the actor handles them in that order and reports each).
    in_hand: VecDeque<u64>,
    /// Logical time of the last event routed to it (for least-recently-used retiring);
    /// unique per child, so it is also the child's key in `Supervisor::idle`.
    last_routed: u64,
    /// Set while the actor is retiring: events that arrive meanwhile wait here for the
    /// next incarnation, which starts once the old one has stopped.
    retiring: Option<Vec<Taken>>,
}

impl Child {
    fn is_idle(&self) -> bool {
        self.in_hand.is_empty() && self.retiring.is_none()
    }
}

pub struct Supervisor {
    env: Arc<ConversationEnv>,
    children: ConversationMap<Child>,
    next_incarnation: u64,
    /// Restarts per conversation, to slow down a conversation that keeps failing.
    restarts: ConversationMap<u32>,
    /// Conversations waiting to be restarted: their new events stay in the journal until
    /// the restart replays everything pending for them, in order.
    paused: ConversationSet,
    /// Events not in the journal that came for a conversation while its restart was
    /// pending, in arrival order.
    held_for_restart: ConversationMap<Vec<(JournalRef, EngineEvent)>>,
    /// Never more live actors than this.
    max_live: usize,
    /// Logical clock, one tick per delivered event and per spawn.
    clock: u64,
    /// Progress of the shared journal items not yet finished, so a conversation's restart
    /// replays its events of such an item into the same count (see `store::journal`).
    shared_items: HashMap<u64, Arc<BatchProgress>>,
    /// Idle live actors by `last_routed`: the first is the least recently used.
    idle: BTreeMap<u64, ConversationKey>,
    /// Events of conversations that have no actor and no free slot, in order per
    /// conversation; `waiting_order` is the order the conversations get slots in.
    waiting: ConversationMap<Vec<Taken>>,
    waiting_order: VecDeque<ConversationKey>,
    /// Idle actors asked to retire that have not stopped yet (each will free a slot).
    retiring: usize,
    /// When the events taken and not yet handled were taken.
    backlog: Backlog,
    /// The engine's pace, for admission: events handled so far, at the last measurement
    /// (when, how many, and whether events were waiting then), and the smoothed rate.
    handled: u64,
    pace_mark: (Instant, u64, bool),
    pace: f64,
    /// The recipients every child answers to, shared while any child lives. Weak, so
    /// the supervisor holds no address of its own (it stops once nothing addresses it).
    parent: std::sync::Weak<Parent>,
}

/// How often the pace is measured.
const PACE_EVERY: Duration = Duration::from_millis(250);

/// Hands an event to a live, not retiring actor.
fn deliver(
    child: &mut Child,
    idle: &mut BTreeMap<u64, ConversationKey>,
    clock: &mut u64,
    taken: Taken,
) {
    if child.is_idle() {
        idle.remove(&child.last_routed);
    }
    // A tick of its own, so `last_routed` stays unique among the children.
    *clock += 1;
    child.routed += 1;
    child.last_routed = *clock;
    child.in_hand.push_back(taken.at_ms);
    child.addr.do_send(Deliver {
        journal: taken.journal,
        event: taken.event,
    });
}

impl Supervisor {
    pub fn new(env: Arc<ConversationEnv>, max_live: usize) -> Self {
        Supervisor {
            max_live: max_live.max(1),
            clock: 0,
            env,
            children: ConversationMap::default(),
            next_incarnation: 0,
            restarts: ConversationMap::default(),
            paused: Default::default(),
            held_for_restart: ConversationMap::default(),
            shared_items: HashMap::new(),
            idle: BTreeMap::new(),
            waiting: ConversationMap::default(),
            waiting_order: VecDeque::new(),
            retiring: 0,
            backlog: Backlog::default(),
            handled: 0,
            pace_mark: (Instant::now(), 0, false),
            pace: 0.0,
            parent: std::sync::Weak::new(),
        }
    }

    /// References to the events of a pending journal item: a shared item still being
    /// handled keeps counting on its existing progress.
    fn refs_for_pending(&self, seq: u64, events: usize) -> Vec<JournalRef> {
        match self.shared_items.get(&seq) {
            Some(progress) if events > 1 => JournalRef::sharing(seq, progress, events),
            _ => JournalRef::for_item(seq, events),
        }
    }

    fn route(
        &mut self,
        journal: JournalRef,
        event: EngineEvent,
        at_ms: u64,
        ctx: &mut Context<Self>,
    ) {
        if let JournalRef::Shared { seq, progress, .. } = &journal {
            self.shared_items
                .entry(*seq)
                .or_insert_with(|| progress.clone());
        }
        let key = event.conversation_key();
        if self.paused.contains(&key) {
            // Its restart replays what the journal holds; an event not journalled (its
            // POST, or its partition's consumer, waits for its turn) waits here for the
            // restart instead, so a later event can never be handled before it.
            if journal.seq().is_none() {
                self.held_for_restart
                    .entry(key)
                    .or_default()
                    .push((journal, event));
            }
            return;
        }
        let failed = self
            .children
            .get(&key)
            .is_some_and(|child| !child.addr.connected() && child.retiring.is_none());
        if failed {
            // It died without a word yet; events in its mailbox were lost, not their
            // journal items: restart it from the journal, and this event after those
            // (held for the restart, or replayed with them if journalled).
            self.remove_child(&key);
            self.restart_failed(key, ctx);
            self.fill_slots(ctx);
            self.route(journal, event, at_ms, ctx);
            return;
        }
        self.backlog.add(at_ms);
        self.publish_backlog();
        let taken = Taken {
            journal,
            event,
            at_ms,
        };
        if let Some(child) = self.children.get_mut(&key) {
            match &mut child.retiring {
                Some(waiting) => waiting.push(taken),
                None => deliver(child, &mut self.idle, &mut self.clock, taken),
            }
            return;
        }
        if let Some(waiting) = self.waiting.get_mut(&key) {
            waiting.push(taken);
            return;
        }
        if self.children.len() < self.max_live {
            self.spawn_with(key, vec![taken], ctx);
            self.env.metrics.set_live_conversations(self.children.len());
            return;
        }
        self.waiting.insert(key.clone(), vec![taken]);
        self.waiting_order.push_back(key);
        self.retire_idle();
    }

    /// Asks as many least recently used idle actors to retire as waiting conversations
    /// need slots (counting retirements already on their way).
    fn retire_idle(&mut self) {
        let wanted = self.waiting.len().saturating_sub(self.retiring);
        for _ in 0..wanted {
            let Some((_, key)) = self.idle.pop_first() else {
                return;
            };
            if let Some(child) = self.children.get_mut(&key) {
                child.retiring = Some(Vec::new());
                child.addr.do_send(Retire);
                self.retiring += 1;
            }
        }
    }

    /// Starts actors for waiting conversations, first come first served, while slots are
    /// free.
    fn fill_slots(&mut self, ctx: &mut Context<Self>) {
        while self.children.len() < self.max_live {
            let Some(key) = self.waiting_order.pop_front() else {
                break;
            };
            if let Some(events) = self.waiting.remove(&key) {
                self.spawn_with(key, events, ctx);
            }
        }
        self.env.metrics.set_live_conversations(self.children.len());
    }

    /// Forgets a child that stopped or is known dead; what it had in hand is no longer
    /// waiting in memory (a failed actor's events are replayed from the journal).
    fn remove_child(&mut self, key: &ConversationKey) -> Option<Child> {
        let child = self.children.remove(key)?;
        if child.is_idle() {
            self.idle.remove(&child.last_routed);
        }
        if child.retiring.is_some() {
            self.retiring = self.retiring.saturating_sub(1);
        }
        for at in &child.in_hand {
            self.backlog.remove(*at);
        }
        self.publish_backlog();
        self.env.metrics.set_live_conversations(self.children.len());
        Some(child)
    }

    /// Measures how many events per second the conversations finish while work is
    /// waiting (an idle spell says nothing about what the engine can do, so it keeps the
    /// last figure), and tells admission.
    fn measure_pace(&mut self, _: &mut Context<Self>) {
        let now = Instant::now();
        let busy = self.backlog.oldest_ms().is_some();
        let (then, handled_then, busy_then) = self.pace_mark;
        let seconds = now.duration_since(then).as_secs_f64();
        if busy && busy_then && seconds > 0.0 {
            let rate = (self.handled - handled_then) as f64 / seconds;
            // Smoothed over about a second, so one slow tick does not close the door.
            self.pace = if self.pace == 0.0 {
                rate
            } else {
                0.75 * self.pace + 0.25 * rate
            };
            self.env.load.set_handled_per_s(self.pace as u64);
        }
        self.pace_mark = (now, self.handled, busy);
    }

    fn publish_backlog(&self) {
        self.env.load.set_oldest_pending(self.backlog.oldest_ms());
    }

    /// Starts an actor for `key` and hands it `events`, in order.
    /// The children's shared recipients: made once, not four boxed addresses per spawn.
    fn parent(&mut self, ctx: &mut Context<Self>) -> Arc<Parent> {
        if let Some(parent) = self.parent.upgrade() {
            return parent;
        }
        let parent = Arc::new(Parent::of(&ctx.address()));
        self.parent = Arc::downgrade(&parent);
        parent
    }

    fn spawn_with(&mut self, key: ConversationKey, events: Vec<Taken>, ctx: &mut Context<Self>) {
        self.next_incarnation += 1;
        self.clock += 1;
        let incarnation = self.next_incarnation;
        let conversation =
            Conversation::new(key.clone(), incarnation, self.env.clone(), self.parent(ctx));
        let mut child = Child {
            addr: conversation.start(),
            incarnation,
            routed: 0,
            in_hand: VecDeque::new(),
            last_routed: self.clock,
            retiring: None,
        };
        if events.is_empty() {
            self.idle.insert(child.last_routed, key.clone());
        }
        for taken in events {
            deliver(&mut child, &mut self.idle, &mut self.clock, taken);
        }
        self.children.insert(key, child);
    }

    /// Routes journal items that are still pending (all of them, or one conversation's).
    fn replay(&mut self, only: Option<&ConversationKey>, ctx: &mut Context<Self>) {
        let pending = match self.env.store.pending_journal() {
            Ok(pending) => pending,
            Err(error) => {
                log::error!("cannot read the journal to replay it: {error}");
                return;
            }
        };
        let now = self.env.load.now_ms();
        let mut replayed = 0usize;
        for (seq, item) in pending {
            let events = EngineEvent::from_pending(item);
            let refs = self.refs_for_pending(seq, events.len());
            for (journal, event) in refs.into_iter().zip(events) {
                if only.is_none_or(|key| *key == event.conversation_key()) {
                    self.route(journal, event, now, ctx);
                    replayed += 1;
                }
            }
        }
        if only.is_none() {
            // Events replayed at start were never counted in by the webhook.
            self.env.load.events_in(replayed);
        }
        if replayed > 0 {
            log::info!("replayed {replayed} unhandled event(s) from the journal");
        }
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Everything acknowledged before a crash or stop and not yet handled.
        self.replay(None, ctx);
        ctx.run_interval(PACE_EVERY, Self::measure_pace);
    }
}

impl Handler<Route> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: Route, ctx: &mut Context<Self>) {
        let now = self.env.load.now_ms();
        for (journal, event) in msg.events {
            self.route(journal, event, now, ctx);
        }
    }
}

impl Handler<EventHandled> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: EventHandled, _: &mut Context<Self>) {
        let Some(child) = self.children.get_mut(&msg.key) else {
            return;
        };
        if child.incarnation != msg.incarnation {
            return;
        }
        self.handled += 1;
        let taken_at = child.in_hand.pop_front();
        let idle_since = child.is_idle().then_some(child.last_routed);
        if let Some(at) = taken_at {
            self.backlog.remove(at);
            self.publish_backlog();
        }
        if let Some(last_routed) = idle_since {
            self.idle.insert(last_routed, msg.key);
            self.retire_idle();
        }
    }
}

impl Handler<JournalItemDone> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: JournalItemDone, _: &mut Context<Self>) {
        self.shared_items.remove(&msg.seq);
    }
}

impl Handler<IdleStop> for Supervisor {
    type Result = bool;

    fn handle(&mut self, msg: IdleStop, ctx: &mut Context<Self>) -> bool {
        // A retiring actor is already on its way out; its stop must go through the
        // retirement path, which hands the events buffered meanwhile to its successor.
        let idle = self.children.get(&msg.key).is_some_and(|child| {
            child.incarnation == msg.incarnation
                && child.routed == msg.handled
                && child.retiring.is_none()
        });
        if idle {
            self.remove_child(&msg.key);
            self.restarts.remove(&msg.key);
            self.fill_slots(ctx);
            log::debug!("{}: idle conversation actor stopped", msg.key);
        }
        idle
    }
}

impl Handler<ConversationStopped> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: ConversationStopped, ctx: &mut Context<Self>) {
        let current = self
            .children
            .get(&msg.key)
            .is_some_and(|child| child.incarnation == msg.incarnation);
        if !current {
            return;
        }
        let Some(child) = self.remove_child(&msg.key) else {
            return;
        };
        let buffered = child.retiring.unwrap_or_default();
        if msg.retired {
            // Events that arrived while it retired go to a fresh incarnation, in order,
            // ahead of conversations that waited less long.
            if !buffered.is_empty() {
                self.waiting.insert(msg.key.clone(), buffered);
                self.waiting_order.push_front(msg.key);
            }
        } else {
            // Its restart replays the journalled ones from the journal; the others wait
            // for it here, in order.
            for taken in &buffered {
                self.backlog.remove(taken.at_ms);
            }
            self.publish_backlog();
            self.restart_failed(msg.key.clone(), ctx);
            let now = self.env.load.now_ms();
            for taken in buffered {
                self.route(taken.journal, taken.event, now, ctx);
            }
        }
        self.fill_slots(ctx);
        self.retire_idle();
    }
}

impl Supervisor {
    /// Holds a failed conversation's events back, then replays its journal items into a
    /// fresh actor. Back off exponentially (capped at ~1 min) so a conversation whose
    /// store keeps failing does not spin.
    fn restart_failed(&mut self, key: ConversationKey, ctx: &mut Context<Self>) {
        if !self.paused.insert(key.clone()) {
            return;
        }
        let restarts = self.restarts.entry(key.clone()).or_default();
        *restarts = restarts.saturating_add(1);
        let delay = Duration::from_millis(50u64 << (*restarts).min(10));
        log::warn!("{key}: conversation failed; restarting it in {delay:?} (restart {restarts})");
        ctx.run_later(delay, move |act, ctx| {
            act.paused.remove(&key);
            act.replay(Some(&key), ctx);
            let now = act.env.load.now_ms();
            for (journal, event) in act.held_for_restart.remove(&key).unwrap_or_default() {
                act.route(journal, event, now, ctx);
            }
        });
    }
}

impl Handler<RetireWhere> for Supervisor {
    type Result = ();

    fn handle(&mut self, RetireWhere(matches): RetireWhere, _: &mut Context<Self>) {
        for (key, child) in self.children.iter_mut() {
            if child.retiring.is_some() || !matches(key) {
                continue;
            }
            if child.is_idle() {
                self.idle.remove(&child.last_routed);
            }
            child.retiring = Some(Vec::new());
            child.addr.do_send(Retire);
            self.retiring += 1;
        }
        // Waiting events were never begun: a consumer's stay unacknowledged for the
        // partition's owner, journalled ones stay in the journal.
        self.held_for_restart.retain(|key, _| !matches(key));
        let mut given_up = 0;
        let backlog = &mut self.backlog;
        self.waiting.retain(|key, taken| {
            if !matches(key) {
                return true;
            }
            given_up += taken.len();
            taken.iter().for_each(|taken| backlog.remove(taken.at_ms));
            false
        });
        let waiting = &self.waiting;
        self.waiting_order.retain(|key| waiting.contains_key(key));
        self.env.load.events_out(given_up);
        self.publish_backlog();
    }
}

impl Handler<LiveConversations> for Supervisor {
    type Result = usize;

    fn handle(&mut self, _: LiveConversations, _: &mut Context<Self>) -> usize {
        self.children.len()
    }
}

impl Handler<Shutdown> for Supervisor {
    type Result = ();

    fn handle(&mut self, _: Shutdown, ctx: &mut Context<Self>) {
        for (_, child) in self.children.drain() {
            child.addr.do_send(Retire);
        }
        // Still in the journal, replayed at the next start.
        self.waiting.clear();
        self.waiting_order.clear();
        ctx.stop();
    }
}
