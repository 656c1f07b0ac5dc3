//! A turn's additions to the transcript: the entry of the event it handled, and each
//! reply it queued (in the outbox, or recorded failed when Messenger's rules forbid
//! sending it now). Shared by the turn of a webhook event or timer (`turn.rs`) and of an
//! operator's action (`operator.rs`).
//!
//! Must not: decide what a turn does, or write to the store (entries go into the
//! `TurnCommit` the turn commits).

use serde_json::{json, Value};

use super::outgoing::outgoing;
use super::policy::policy_refusal;
use super::{ConversationEnv, METADATA_PREFIX};
use crate::clock::now_ms;
use crate::engine::event::{EngineEvent, OperatorAction};
use crate::event::{EventKind, InboundEvent};
use crate::flow::Reply;
use crate::store::{
    ConversationRecord, Direction, Failure, OutboxRecord, Outgoing, Status, StoreError,
    TranscriptEntry, TurnCommit,
};

/// Adds the handled event's entry to the transcript; returns the entry's number.
pub(super) fn record_inbound(
    record: &mut ConversationRecord,
    entry: TranscriptEntry,
    commit: &mut TurnCommit,
) -> u64 {
    let seq = record.take_entry_seq();
    record.inbound_count += 1;
    commit.new_entries.push((seq, entry));
    seq
}

pub(super) fn inbound_entry(
    event: &EngineEvent,
    status: Status,
    error: Option<Failure>,
) -> TranscriptEntry {
    let (mid, timestamp, text, payload) = match event {
        EngineEvent::Messenger(inbound) => (
            inbound.mid().map(str::to_string),
            inbound.timestamp,
            inbound.text().map(str::to_string),
            inbound_payload(inbound),
        ),
        EngineEvent::Timer(fired) => (
            None,
            fired.timer.due,
            None,
            serde_json::to_value(&fired.timer).ok(),
        ),
        EngineEvent::Operator(operator) => {
            (None, now_ms(), None, operator_payload(&operator.action))
        }
    };
    TranscriptEntry {
        direction: Direction::In,
        mid,
        timestamp,
        kind: event.kind_name().to_string(),
        text,
        status,
        sent_at: None,
        echo_timestamp: None,
        error,
        payload,
        late: false,
        by_operator: matches!(event, EngineEvent::Operator(_)),
    }
}

/// What of an event is worth keeping in the transcript besides its text.
fn inbound_payload(event: &InboundEvent) -> Option<Value> {
    match &event.kind {
        EventKind::Message(message) => {
            if let Some(quick_reply) = &message.quick_reply {
                Some(json!({ "quick_reply": quick_reply.payload }))
            } else if !message.attachments.is_empty() {
                Some(json!({ "attachments": message.attachments }))
            } else {
                None
            }
        }
        EventKind::Postback(postback) => Some(json!({
            "payload": postback.payload,
            "referral": postback.referral,
        })),
        EventKind::Referral(referral) => serde_json::to_value(referral).ok(),
        EventKind::Reaction(reaction) => serde_json::to_value(reaction).ok(),
        EventKind::Optin(optin) => serde_json::to_value(optin).ok(),
        // Unknown and rarer kinds keep the event as Facebook sent it.
        _ => Some(event.raw.clone()),
    }
}

/// What the transcript keeps of an action besides its kind.
pub(super) fn operator_payload(action: &OperatorAction) -> Option<Value> {
    match action {
        OperatorAction::SetState(state) => Some(json!({ "state": state })),
        OperatorAction::Retry { entry } => Some(json!({ "entry": entry })),
        OperatorAction::Skip { entry } | OperatorAction::Replay { entry } => {
            Some(json!({ "entry": entry }))
        }
        OperatorAction::Start { tree } => Some(json!({ "tree": tree })),
        OperatorAction::Send { .. }
        | OperatorAction::Forget
        | OperatorAction::Pause
        | OperatorAction::Resume
        | OperatorAction::ResetState => None,
    }
}

/// Records a handover call (pass the thread to `target_app_id`, or take it back) as the
/// operator's outbound entry and puts it in the outbox. Not a message: no messaging
/// window applies.
pub(super) fn queue_thread_control(
    env: &ConversationEnv,
    record: &mut ConversationRecord,
    target_app_id: Option<String>,
    now: i64,
    commit: &mut TurnCommit,
) -> Result<(), StoreError> {
    let seq = record.take_entry_seq();
    let kind = match target_app_id {
        Some(_) => "pass_thread_control",
        None => "take_thread_control",
    };
    let mut entry = TranscriptEntry::queued_out(kind, None, now);
    entry.by_operator = true;
    entry.payload = target_app_id
        .as_ref()
        .map(|app| json!({ "target_app_id": app }));
    let outbox = OutboxRecord {
        page_id: record.page_id.clone(),
        psid: record.psid.clone(),
        entry: seq,
        outgoing: Outgoing::ThreadControl {
            psid: record.psid.clone(),
            target_app_id,
        },
        attempts: 0,
        created_at: now,
        channel: record.channel,
    };
    commit.new_entries.push((seq, entry));
    commit.outbox.push((env.store.next_id()?, outbox));
    Ok(())
}

/// Records a reply in the transcript and puts it in the outbox, or records it failed
/// when Messenger's rules forbid sending it now. Returns the refusal, if any.
pub(super) fn queue_reply(
    env: &ConversationEnv,
    record: &mut ConversationRecord,
    reply: Reply,
    now: i64,
    by_operator: bool,
    commit: &mut TurnCommit,
) -> Result<Option<String>, StoreError> {
    let seq = record.take_entry_seq();
    let mut entry = TranscriptEntry::queued_out(
        reply.kind_name(),
        reply.text_content().map(str::to_string),
        now,
    );
    entry.by_operator = by_operator;
    record.outbound_count += 1;
    let refusal = policy_refusal(record, &reply, now).or_else(|| {
        let channel = record.channel;
        reply
            .check_for(channel)
            .err()
            .map(|error| error.to_string())
    });
    if let Some(refusal) = refusal {
        // Refused here, before the Graph API could refuse it (and count it against us).
        log::warn!("{}: reply not sent: {refusal}", record.key());
        entry.status = Status::Failed;
        entry.error = Some(Failure::reason(refusal.clone()));
        commit.new_entries.push((seq, entry));
        return Ok(Some(refusal));
    }
    let outgoing = outgoing(reply, &record.psid, format!("{METADATA_PREFIX}{seq}"));
    let outbox = OutboxRecord {
        page_id: record.page_id.clone(),
        psid: record.psid.clone(),
        entry: seq,
        outgoing,
        attempts: 0,
        created_at: now,
        channel: record.channel,
    };
    commit.new_entries.push((seq, entry));
    commit.outbox.push((env.store.next_id()?, outbox));
    Ok(None)
}
