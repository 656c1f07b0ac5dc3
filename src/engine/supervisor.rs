//! The supervisor: routes each event to its conversation's actor, one actor per
//! (page, user), spawning it on first use.
//!
//! It replays the journal at start (events acknowledged before a crash), lets idle
//! actors stop only when nothing routed to them is still waiting (a passivation
//! handshake, so no message is lost), retires the least recently used actors when more
//! than `max_live` are alive (buffering their new events until the old actor has
//! stopped, so one conversation never has two actors), and restarts a failed
//! conversation by replaying its journal items into a fresh actor loaded from sled (for
//! an item shared by several events of one request, into the same progress count, which
//! it keeps until the item is done). It never touches a conversation's state itself.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use crate::engine::conversation::{
    Conversation, ConversationEnv, ConversationStopped, Deliver, IdleStop, JournalItemDone, Parent,
    Retire,
};
use crate::engine::event::EngineEvent;
use crate::store::journal::{BatchProgress, JournalRef};
use crate::store::ConversationKey;

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

/// How many conversation actors are alive.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct LiveConversations;

struct Child {
    addr: Addr<Conversation>,
    incarnation: u64,
    routed: u64,
    /// Logical time of the last event routed to it (for least-recently-used retiring).
    last_routed: u64,
    /// Set while the actor is retiring: events that arrive meanwhile wait here for the
    /// next incarnation, which starts once the old one has stopped.
    retiring: Option<Vec<(JournalRef, EngineEvent)>>,
}

pub struct Supervisor {
    env: Arc<ConversationEnv>,
    children: HashMap<ConversationKey, Child>,
    next_incarnation: u64,
    /// Restarts per conversation, to slow down a conversation that keeps failing.
    restarts: HashMap<ConversationKey, u32>,
    /// Conversations waiting to be restarted: their new events stay in the journal until
    /// the restart replays everything pending for them, in order.
    paused: std::collections::HashSet<ConversationKey>,
    /// Live actors beyond this are retired, least recently used first.
    max_live: usize,
    /// Logical clock, one tick per routed event.
    clock: u64,
    /// Progress of the shared journal items not yet finished, so a conversation's restart
    /// replays its events of such an item into the same count (see `store::journal`).
    shared_items: HashMap<u64, Arc<BatchProgress>>,
}

impl Supervisor {
    pub fn new(env: Arc<ConversationEnv>, max_live: usize) -> Self {
        Supervisor {
            max_live: max_live.max(1),
            clock: 0,
            env,
            children: HashMap::new(),
            next_incarnation: 0,
            restarts: HashMap::new(),
            paused: Default::default(),
            shared_items: HashMap::new(),
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

    fn route(&mut self, journal: JournalRef, event: EngineEvent, ctx: &mut Context<Self>) {
        if let JournalRef::Shared { seq, progress, .. } = &journal {
            self.shared_items
                .entry(*seq)
                .or_insert_with(|| progress.clone());
        }
        let key = event.conversation_key();
        if self.paused.contains(&key) {
            return;
        }
        self.clock += 1;
        let failed = self
            .children
            .get(&key)
            .is_some_and(|child| !child.addr.connected() && child.retiring.is_none());
        if failed {
            // It died without a word yet; events in its mailbox were lost, not their
            // journal items: restart it from the journal (this event included).
            self.children.remove(&key);
            self.restart_failed(key, ctx);
            return;
        }
        let mut spawned = false;
        let child = match self.children.get_mut(&key) {
            Some(child) => child,
            None => {
                spawned = true;
                let child = self.spawn(key.clone(), ctx);
                self.children.entry(key).insert_entry(child).into_mut()
            }
        };
        if let Some(waiting) = &mut child.retiring {
            waiting.push((journal, event));
            return;
        }
        child.routed += 1;
        child.last_routed = self.clock;
        child.addr.do_send(Deliver { journal, event });
        if spawned {
            self.retire_least_recently_used();
            self.env.metrics.set_live_conversations(self.children.len());
        }
    }

    /// Retires the least recently used tenth of the actors once there are more than
    /// `max_live`; batching it keeps the O(n) selection rare.
    fn retire_least_recently_used(&mut self) {
        if self.children.len() <= self.max_live {
            return;
        }
        let keep = self.max_live - self.max_live / 10;
        let mut candidates: Vec<(u64, ConversationKey)> = self
            .children
            .iter()
            .filter(|(_, child)| child.retiring.is_none())
            .map(|(key, child)| (child.last_routed, key.clone()))
            .collect();
        let excess = candidates.len().saturating_sub(keep);
        if excess == 0 {
            return;
        }
        candidates.select_nth_unstable(excess - 1);
        for (_, key) in candidates.into_iter().take(excess) {
            if let Some(child) = self.children.get_mut(&key) {
                child.retiring = Some(Vec::new());
                child.addr.do_send(Retire);
            }
        }
        log::debug!("retiring {excess} least recently used conversation actors");
    }

    fn spawn(&mut self, key: ConversationKey, ctx: &mut Context<Self>) -> Child {
        self.next_incarnation += 1;
        let incarnation = self.next_incarnation;
        let conversation = Conversation::new(
            key,
            incarnation,
            self.env.clone(),
            Parent::of(&ctx.address()),
        );
        Child {
            addr: conversation.start(),
            incarnation,
            routed: 0,
            last_routed: self.clock,
            retiring: None,
        }
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
        let mut replayed = 0usize;
        for (seq, item) in pending {
            let events = EngineEvent::from_pending(item);
            let refs = self.refs_for_pending(seq, events.len());
            for (journal, event) in refs.into_iter().zip(events) {
                if only.is_none_or(|key| *key == event.conversation_key()) {
                    self.route(journal, event, ctx);
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
    }
}

impl Handler<Route> for Supervisor {
    type Result = ();

    fn handle(&mut self, msg: Route, ctx: &mut Context<Self>) {
        for (journal, event) in msg.events {
            self.route(journal, event, ctx);
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

    fn handle(&mut self, msg: IdleStop, _: &mut Context<Self>) -> bool {
        // A retiring actor is already on its way out; its stop must go through the
        // retirement path, which hands the events buffered meanwhile to its successor.
        let idle = self.children.get(&msg.key).is_some_and(|child| {
            child.incarnation == msg.incarnation
                && child.routed == msg.handled
                && child.retiring.is_none()
        });
        if idle {
            self.children.remove(&msg.key);
            self.env.metrics.set_live_conversations(self.children.len());
            self.restarts.remove(&msg.key);
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
        let Some(child) = self.children.remove(&msg.key) else {
            return;
        };
        self.env.metrics.set_live_conversations(self.children.len());
        if msg.retired {
            // Events that arrived while it retired go to a fresh incarnation, in order.
            for (journal, event) in child.retiring.unwrap_or_default() {
                self.route(journal, event, ctx);
            }
            return;
        }
        self.restart_failed(msg.key, ctx);
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
        });
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
        ctx.stop();
    }
}
