//! What a conversation actor handles: an engine event. A Messenger event that came
//! through the webhook, a timer of the flow that fired, or an operator's action from the
//! admin API. Each is keyed to exactly one conversation and handled there in order.
//!
//! Must not: parse webhook bodies (that is `messenger::inbound`) or touch the store; it
//! only turns what the store replays into events and says whose conversation each is.

use crate::event::TimerFired;
use crate::messenger::inbound::InboundEvent;
use crate::store::{ConversationKey, PendingItem, TimerRecord};

/// One event for one conversation.
// Nearly every event is a Messenger one, the large variant: boxing it would cost an
// allocation per event to save bytes only on the rare timer.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum EngineEvent {
    /// An item of a webhook POST.
    Messenger(InboundEvent),
    /// A timer the conversation's flow scheduled is due.
    Timer(FiredTimer),
    /// An operator acted on the conversation through the admin API.
    Operator(OperatorEvent),
}

/// An operator's action on one conversation, handled in order with the user's events.
#[derive(Debug, Clone, PartialEq)]
pub struct OperatorEvent {
    pub key: ConversationKey,
    pub action: OperatorAction,
}

/// What an operator can do to a conversation.
#[derive(Debug, Clone, PartialEq)]
pub enum OperatorAction {
    /// Hand the user to a human: their messages are recorded, never answered by the flow.
    Pause,
    /// Give the user back to the flow.
    Resume,
    /// Message the user as the page (through the outbox, under the messaging window).
    Send { text: String },
    /// Replace the flow's state (already checked against the flow's state type).
    SetState(serde_json::Value),
    /// Back to the state of a user never seen before.
    ResetState,
    /// Send failed replies again: the one of this transcript entry, or all of them.
    Retry { entry: Option<u64> },
    /// Leave an event the flow failed on as it is: no longer kept for a replay.
    Skip { entry: u64 },
    /// Run the flow again on an event it failed on, as it first arrived.
    Replay { entry: u64 },
    /// Start something of the flow's for this user (an interview tree, by name).
    Start { tree: String },
    /// Forget the user: transcript, state, index entry, timers and owed replies go; a
    /// tombstone drops redeliveries of their earlier events.
    Forget,
}

impl OperatorAction {
    /// How the action is named in the transcript and the metrics.
    pub fn kind_name(&self) -> &'static str {
        match self {
            OperatorAction::Pause => "operator_pause",
            OperatorAction::Resume => "operator_resume",
            OperatorAction::Send { .. } => "operator_send",
            OperatorAction::SetState(_) => "operator_set_state",
            OperatorAction::ResetState => "operator_reset_state",
            OperatorAction::Retry { .. } => "operator_retry",
            OperatorAction::Forget => "operator_forget",
            OperatorAction::Skip { .. } => "operator_skip",
            OperatorAction::Replay { .. } => "operator_replay",
            OperatorAction::Start { .. } => "operator_start",
        }
    }
}

/// A due timer with the conversation it belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct FiredTimer {
    pub key: ConversationKey,
    pub timer: TimerFired,
}

impl EngineEvent {
    /// The conversation this event belongs to: for a Messenger event the page and the
    /// other party (the recipient of an echo, the sender otherwise).
    pub fn conversation_key(&self) -> ConversationKey {
        match self {
            EngineEvent::Messenger(event) => {
                ConversationKey::new(event.page_id.clone(), event.party_id().to_string())
            }
            EngineEvent::Timer(fired) => fired.key.clone(),
            EngineEvent::Operator(operator) => operator.key.clone(),
        }
    }

    /// The event's kind as metrics and the transcript name it (`timer` for a timer).
    pub fn kind_name(&self) -> &'static str {
        match self {
            EngineEvent::Messenger(event) => event.kind_name(),
            EngineEvent::Timer(_) => "timer",
            EngineEvent::Operator(operator) => operator.action.kind_name(),
        }
    }

    /// A fired timer, from its record in the store.
    pub fn from_timer(record: TimerRecord) -> EngineEvent {
        EngineEvent::Timer(FiredTimer {
            key: ConversationKey::new(record.page_id, record.psid),
            timer: TimerFired {
                name: record.name,
                due: record.due,
                payload: record.payload,
            },
        })
    }

    /// The events of a journal item that is replayed, in their order.
    pub fn from_pending(item: PendingItem) -> Vec<EngineEvent> {
        match item {
            PendingItem::Events(records) => records
                .into_iter()
                .map(|record| {
                    EngineEvent::Messenger(
                        InboundEvent::from_raw(&record.page_id, record.event, record.standby)
                            .on(record.channel),
                    )
                })
                .collect(),
            PendingItem::Timer(record) => vec![EngineEvent::from_timer(record)],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::JournalRecord;
    use serde_json::json;

    #[test]
    fn a_replayed_webhook_event_belongs_to_its_sender_and_an_echo_to_its_recipient() {
        let record = |event| JournalRecord {
            page_id: "page".into(),
            channel: Default::default(),
            standby: false,
            event,
        };
        let events = EngineEvent::from_pending(PendingItem::Events(vec![
            record(
                json!({"sender": {"id": "user"}, "recipient": {"id": "page"},
                "message": {"mid": "m.1", "text": "hi"}}),
            ),
            record(
                json!({"sender": {"id": "page"}, "recipient": {"id": "user2"},
                "message": {"mid": "m.2", "is_echo": true, "text": "yo"}}),
            ),
        ]));
        let keys: Vec<ConversationKey> = events.iter().map(|e| e.conversation_key()).collect();
        assert_eq!(
            keys,
            [
                ConversationKey::new("page", "user"),
                ConversationKey::new("page", "user2")
            ]
        );
        assert_eq!(events[0].kind_name(), "text");
        assert_eq!(events[1].kind_name(), "echo");
    }

    #[test]
    fn a_replayed_timer_is_a_timer_of_its_conversation() {
        let events = EngineEvent::from_pending(PendingItem::Timer(TimerRecord {
            page_id: "page".into(),
            psid: "user".into(),
            name: "nudge".into(),
            due: 42,
            payload: json!({"n": 1}),
            channel: Default::default(),
        }));
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].kind_name(), "timer");
        assert_eq!(
            events[0],
            EngineEvent::Timer(FiredTimer {
                key: ConversationKey::new("page", "user"),
                timer: TimerFired {
                    name: "nudge".into(),
                    due: 42,
                    payload: json!({"n": 1}),
                },
            })
        );
    }
}
