//! An operator's action on a conversation, as one turn: pause and resume (hand the user to
//! a human and back), a message sent as the page, and setting or resetting the flow's
//! state (with handover configured, a pause also passes the thread to the Page Inbox and a
//! resume takes it back). Each is recorded in the transcript as the operator's, in order with the user's
//! own events, and committed like any turn.
//!
//! Must not: check who the operator is or whether a state fits the flow (the admin API
//! does both before the action is routed), or send anything itself (a message goes
//! through the outbox like a flow's reply).

use serde_json::Value;

use super::entries::{inbound_entry, queue_reply, queue_thread_control, record_inbound};
use super::ConversationEnv;
use crate::clock::now_ms;
use crate::engine::event::{EngineEvent, OperatorAction};
use crate::engine::sender::Forget;
use crate::flow::{MessageTag, Reply};
use crate::store::{ConversationRecord, EntryChange, Failure, Status, StoreError, TurnCommit};

/// Messenger's standard window: past it, an operator's message needs the HUMAN_AGENT tag.
const MESSAGING_WINDOW_MS: i64 = 24 * 3600 * 1000;

/// Applies the action to the record and the commit.
pub(super) fn apply_operator(
    env: &ConversationEnv,
    record: &mut ConversationRecord,
    event: &EngineEvent,
    action: &OperatorAction,
    commit: &mut TurnCommit,
) -> Result<(), StoreError> {
    let was_paused = record.paused;
    match action {
        OperatorAction::Pause => record.paused = true,
        OperatorAction::Resume => record.paused = false,
        OperatorAction::SetState(state) => record.state = state.clone(),
        OperatorAction::ResetState => record.state = Value::Null,
        OperatorAction::Send { text } => return send_as_page(env, record, event, text, commit),
        OperatorAction::Retry { entry } => retry_failed(env, record, *entry, commit)?,
        OperatorAction::Skip { entry } => commit.failed_events_resolved.push(*entry),
        // These run the flow, so the turn handles them (`turn.rs`); never reach here.
        OperatorAction::Replay { .. } | OperatorAction::Start { .. } => {}
        OperatorAction::Forget => {
            forget(env, record, commit);
            return Ok(());
        }
    }
    record_inbound(record, inbound_entry(event, Status::Handled, None), commit);
    if record.paused != was_paused {
        hand_over(env, record, commit)?;
    }
    Ok(())
}

/// With handover configured, a pause passes the thread to the configured app (the Page
/// Inbox, where a human answers) and a resume takes it back, through the outbox so the
/// call is made even after a crash; the transcript shows it as the operator's.
fn hand_over(
    env: &ConversationEnv,
    record: &mut ConversationRecord,
    commit: &mut TurnCommit,
) -> Result<(), StoreError> {
    let Some(app) = &env.handover_app_id else {
        return Ok(());
    };
    let target = record.paused.then(|| app.clone());
    queue_thread_control(env, record, target, now_ms(), commit)
}

/// Forgets the user: the record becomes a tombstone (a new user's, with the time of
/// forgetting), its timers leave the index, and the commit removes the transcript,
/// failed replies and owed replies; the sender drops what it still queued for them.
fn forget(env: &ConversationEnv, record: &mut ConversationRecord, commit: &mut TurnCommit) {
    let key = record.key();
    commit.timers_cleared.append(&mut record.timers);
    commit.forget = true;
    *record = ConversationRecord {
        forgotten_at: now_ms(),
        ..ConversationRecord::new(&key)
    };
    env.sender.do_send(Forget { key });
}

/// Puts failed replies (all, or the one of `only`) back in the outbox as they were first
/// decided, their entries back to `queued`; the sender then tries them afresh.
fn retry_failed(
    env: &ConversationEnv,
    record: &mut ConversationRecord,
    only: Option<u64>,
    commit: &mut TurnCommit,
) -> Result<(), StoreError> {
    let now = now_ms();
    for (entry, mut reply) in env.store.failed_replies(&record.key())? {
        if only.is_some_and(|wanted| wanted != entry) {
            continue;
        }
        reply.attempts = 0;
        reply.created_at = now;
        commit.outbox.push((env.store.next_id()?, reply));
        commit.entry_changes.push((entry, EntryChange::Requeue));
        commit.failed_retried.push(entry);
        // Its delivery receipt must still find it.
        record.undelivered_from = record.undelivered_from.min(entry);
    }
    Ok(())
}

/// A text from the operator, sent as the page through the outbox: within 24 hours of the
/// user's last message as a plain response, up to 7 days with the HUMAN_AGENT tag, and
/// refused (recorded failed) beyond, as Messenger's policy says.
fn send_as_page(
    env: &ConversationEnv,
    record: &mut ConversationRecord,
    event: &EngineEvent,
    text: &str,
    commit: &mut TurnCommit,
) -> Result<(), StoreError> {
    let now = now_ms();
    let reply = match Reply::text(text) {
        Ok(reply) => reply,
        Err(error) => {
            // The admin API checks the text first; this keeps a bad one out of the outbox.
            let failure = Some(Failure::reason(error.to_string()));
            record_inbound(
                record,
                inbound_entry(event, Status::Failed, failure),
                commit,
            );
            return Ok(());
        }
    };
    let reply = if now.saturating_sub(record.window_opened_at) > MESSAGING_WINDOW_MS {
        reply.with_tag(MessageTag::HumanAgent)
    } else {
        reply
    };
    queue_reply(env, record, reply, now, true, commit)?;
    Ok(())
}
