//! One actor per conversation (page + user): handles that user's events one at a time.
//!
//! For each journalled event it skips redeliveries (by `mid`, or a digest of the event
//! when it has none), runs the flow for user input, applies echoes and delivery/read
//! watermarks, and commits the outcome (state, transcript, outbox, timers, dedup mark,
//! journal removal) as ONE store operation, durable before the replies go to the sender.
//! It owns its conversation record; it never sends HTTP itself, and it keeps no state in
//! memory that is not in sled, so stopping it (idle or failed) loses nothing.
//!
//! Layout: `mod.rs` the actor and its messages; `turn.rs` one event's handling (dedup,
//! flow, commit); `receipts.rs` echoes and delivery/read watermarks; `policy.rs`
//! Messenger's sending rules (the 24-hour window, tags, handover).

mod entries;
mod operator;
mod outgoing;
mod policy;
mod receipts;
mod turn;

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use sha2::{Digest, Sha256};

use crate::engine::event::EngineEvent;
use crate::engine::load::Load;
use crate::engine::metrics::Metrics;
use crate::engine::sender::{Enqueue, OutboundSender};
use crate::messenger::inbound::{EventKind, InboundEvent};
use crate::pages::Pages;
use crate::store::journal::JournalRef;
use crate::store::{ConversationKey, ConversationRecord, Store, StoreError};
use turn::handle_event;

/// Prefix of the Send API `metadata` we attach, echoed back to link the echo to its entry.
pub const METADATA_PREFIX: &str = "colloquy:";
/// What every conversation actor shares.
pub struct ConversationEnv {
    pub store: Store,
    pub load: Arc<Load>,
    pub metrics: Arc<Metrics>,
    /// The pages served: which flow serves each page's conversations.
    pub pages: Pages,
    pub sender: Addr<OutboundSender>,
    pub flow_timeout: Duration,
    pub idle_timeout: Duration,
    /// A cluster node's replication of every commit (fenced by the partition's lease),
    /// before the local store applies it; `None` on a single node.
    pub replicator: Option<Arc<dyn crate::store::Replicator>>,
    /// Where a pause passes the thread (handover protocol); `None`: no handover.
    pub handover_app_id: Option<String>,
}

/// One acknowledged event for this conversation, with where it waits in the journal.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Deliver {
    pub journal: JournalRef,
    pub event: EngineEvent,
}

/// Stop after the event in hand; whatever is still queued stays in the journal.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Retire;

/// A conversation actor asks to stop after being idle; granted only if every event
/// routed to it has been handled.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct IdleStop {
    pub key: ConversationKey,
    pub incarnation: u64,
    pub handled: u64,
}

/// A conversation actor stopped: retired when asked to, or failed (a store error).
#[derive(Message)]
#[rtype(result = "()")]
pub struct ConversationStopped {
    pub key: ConversationKey,
    pub incarnation: u64,
    pub retired: bool,
}

/// The actor finished one delivered event (committed or failed): its parent counts
/// what it still has queued, to know which actors are idle and may be retired.
#[derive(Message)]
#[rtype(result = "()")]
pub struct EventHandled {
    pub key: ConversationKey,
    pub incarnation: u64,
}

/// Every event of a shared journal item is committed and the item is being removed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct JournalItemDone {
    pub seq: u64,
}

/// Whoever spawned the conversation, as the four messages it sends up. The actor never
/// names its parent's type, so this module does not import the supervisor's (which
/// spawns it): the supervisor's address is turned into these recipients.
pub struct Parent {
    idle_stop: Recipient<IdleStop>,
    stopped: Recipient<ConversationStopped>,
    journal_done: Recipient<JournalItemDone>,
    handled: Recipient<EventHandled>,
}

impl Parent {
    /// The recipients of an actor that handles all four messages.
    pub fn of<A>(parent: &Addr<A>) -> Self
    where
        A: Actor<Context = Context<A>>
            + Handler<IdleStop>
            + Handler<ConversationStopped>
            + Handler<JournalItemDone>
            + Handler<EventHandled>,
    {
        Parent {
            idle_stop: parent.clone().recipient(),
            stopped: parent.clone().recipient(),
            journal_done: parent.clone().recipient(),
            handled: parent.clone().recipient(),
        }
    }
}

pub struct Conversation {
    key: ConversationKey,
    incarnation: u64,
    env: Arc<ConversationEnv>,
    parent: Arc<Parent>,
    record: Option<ConversationRecord>,
    /// Deliveries handled, compared by the supervisor with deliveries routed before it
    /// lets this actor stop (nothing may be waiting in the mailbox).
    handled: u64,
    last_active: Instant,
    /// Set once the supervisor agreed to an idle stop: the stop is not a failure.
    retiring: bool,
}

impl Conversation {
    pub fn new(
        key: ConversationKey,
        incarnation: u64,
        env: Arc<ConversationEnv>,
        parent: Arc<Parent>,
    ) -> Self {
        Conversation {
            key,
            incarnation,
            env,
            parent,
            record: None,
            handled: 0,
            last_active: Instant::now(),
            retiring: false,
        }
    }

    fn check_idle(&mut self, ctx: &mut Context<Self>) {
        if self.retiring || self.last_active.elapsed() < self.env.idle_timeout {
            return;
        }
        let ask = self.parent.idle_stop.send(IdleStop {
            key: self.key.clone(),
            incarnation: self.incarnation,
            handled: self.handled,
        });
        // `wait` holds the mailbox until the supervisor answers, so no event can slip in
        // between its decision and our stop.
        ctx.wait(ask.into_actor(self).map(|answer, act, ctx| {
            if answer == Ok(true) {
                act.retiring = true;
                ctx.stop();
            }
        }));
    }
}

impl Actor for Conversation {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        match self.env.store.conversation(&self.key) {
            Ok(record) => {
                self.record = Some(record.unwrap_or_else(|| ConversationRecord::new(&self.key)))
            }
            Err(error) => {
                log::error!("{}: cannot load conversation: {error}", self.key);
                ctx.stop();
                return;
            }
        }
        let period = (self.env.idle_timeout / 2).max(Duration::from_millis(10));
        ctx.run_interval(period, Self::check_idle);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.parent.stopped.do_send(ConversationStopped {
            key: self.key.clone(),
            incarnation: self.incarnation,
            retired: self.retiring,
        });
    }
}

impl Handler<Deliver> for Conversation {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, msg: Deliver, _: &mut Context<Self>) -> Self::Result {
        self.last_active = Instant::now();
        let env = self.env.clone();
        let record = self.record.clone();
        let key = self.key.to_string();
        let journal = msg.journal;
        let settled = journal.clone();
        // For the debug log of each event's outcome (none is built unless it is on).
        let label = log::log_enabled!(log::Level::Debug).then(|| event_label(&msg.event));
        let work = async move {
            match record {
                Some(record) => handle_event(&env, record, &journal, msg.event).await,
                None => Err(StoreError::NotLoaded { key }),
            }
        };
        AtomicResponse::new(Box::pin(work.into_actor(self).map(
            move |outcome, act, ctx| {
                act.handled += 1;
                act.env.load.events_out(1);
                act.parent.handled.do_send(EventHandled {
                    key: act.key.clone(),
                    incarnation: act.incarnation,
                });
                act.last_active = Instant::now();
                if let Some(label) = label {
                    let how = match &outcome {
                        Ok(_) => "done".to_string(),
                        Err(error) => format!("not committed ({error})"),
                    };
                    log::debug!("{}: {label}: {how}", act.key);
                }
                settled.settle(outcome.is_ok());
                match outcome {
                    Ok((record, outbox)) => {
                        act.record = Some(record);
                        if !outbox.is_empty() {
                            act.env.sender.do_send(Enqueue { items: outbox });
                        }
                        act.settle_shared_item(&settled);
                    }
                    Err(StoreError::NotHeld { .. }) => {
                        // Its partition's owner handles it; nothing here is stale.
                        log::debug!("{}: event left to its partition's owner", act.key);
                    }
                    Err(error) => {
                        // The journal still holds the event: the supervisor restarts this
                        // conversation from sled and replays it.
                        log::error!("{}: event not committed, restarting: {error}", act.key);
                        ctx.stop();
                    }
                }
            },
        )))
    }
}

impl Conversation {
    /// After this event's turn is committed: if it was the last pending event of a
    /// journal item shared with other events of its POST, removes the item.
    fn settle_shared_item(&self, journal: &JournalRef) {
        let Some(seq) = journal.finished() else {
            return;
        };
        let removal = self.env.store.remove_journal(seq);
        actix::spawn(async move {
            if let Err(error) = removal.await {
                // Harmless: the item is replayed at the next start and every event of it
                // is recognised as handled.
                log::warn!("cannot remove handled journal item {seq}: {error}");
            }
        });
        self.parent.journal_done.do_send(JournalItemDone { seq });
    }
}

impl Handler<Retire> for Conversation {
    type Result = ();

    fn handle(&mut self, _: Retire, ctx: &mut Context<Self>) {
        self.retiring = true;
        ctx.stop();
    }
}

/// An event as the debug log names it: its kind, and its `mid` if it has one.
fn event_label(event: &EngineEvent) -> String {
    match event {
        EngineEvent::Messenger(inbound) => {
            format!("{} {}", event.kind_name(), inbound.mid().unwrap_or("-"))
        }
        _ => event.kind_name().to_string(),
    }
}

/// The id a redelivery of this event would have: its `mid` where Facebook gives one
/// (edits reuse the original `mid`, so their edit count is part of it); a digest of the
/// raw event otherwise. Deliveries and reads need none: applying them twice is harmless.
pub fn dedup_id(event: &InboundEvent) -> Option<String> {
    match &event.kind {
        EventKind::Delivery(_) | EventKind::Read(_) => None,
        EventKind::Edit(edit) => Some(format!(
            "edit:{}:{}",
            edit.mid,
            edit.num_edit.unwrap_or_default()
        )),
        _ => match event.mid() {
            Some(mid) => Some(mid.to_string()),
            None => {
                let canonical = serde_json::to_vec(&event.raw).unwrap_or_default();
                let digest = Sha256::digest(&canonical);
                Some(format!("sha256:{}", hex::encode(&digest[..16])))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messenger::inbound::parse_envelope;

    fn event(messaging: &str) -> InboundEvent {
        let body =
            format!(r#"{{"object":"page","entry":[{{"id":"1","messaging":[{messaging}]}}]}}"#);
        parse_envelope(body.as_bytes()).unwrap().remove(0)
    }

    #[test]
    fn messages_are_deduplicated_by_mid() {
        let e = event(
            r#"{"sender":{"id":"2"},"recipient":{"id":"1"},"timestamp":5,"message":{"mid":"m.1","text":"a"}}"#,
        );
        assert_eq!(dedup_id(&e).as_deref(), Some("m.1"));
    }

    #[test]
    fn receipts_need_no_dedup_id() {
        let e = event(
            r#"{"sender":{"id":"2"},"recipient":{"id":"1"},"timestamp":5,"read":{"watermark":4}}"#,
        );
        assert_eq!(dedup_id(&e), None);
    }

    #[test]
    fn events_without_mid_get_a_stable_digest_that_differs_by_content() {
        let a = r#"{"sender":{"id":"2"},"recipient":{"id":"1"},"timestamp":5,"referral":{"ref":"x","source":"SHORTLINK","type":"OPEN_THREAD"}}"#;
        let b = a.replace("\"x\"", "\"y\"");
        let id = dedup_id(&event(a)).unwrap();
        assert!(id.starts_with("sha256:"));
        assert_eq!(dedup_id(&event(a)).unwrap(), id);
        assert_ne!(dedup_id(&event(&b)).unwrap(), id);
    }

    #[test]
    fn each_edit_of_a_message_is_its_own_event() {
        let first = event(
            r#"{"sender":{"id":"2"},"recipient":{"id":"1"},"timestamp":5,"message_edit":{"mid":"m.1","text":"b","num_edit":1}}"#,
        );
        let second = event(
            r#"{"sender":{"id":"2"},"recipient":{"id":"1"},"timestamp":6,"message_edit":{"mid":"m.1","text":"c","num_edit":2}}"#,
        );
        assert_ne!(dedup_id(&first), dedup_id(&second));
        assert_ne!(dedup_id(&first).as_deref(), Some("m.1"));
    }
}
