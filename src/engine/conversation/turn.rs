//! One event's turn: skip redeliveries, run the flow (with its timeout and panic guard),
//! apply the flow's replies and timer changes, and commit everything in one store
//! operation, durable before any reply may leave. Owns no state between events: the
//! conversation record comes in and the updated record goes out.

use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;
use serde_json::{json, Value};

use super::policy::policy_refusal;
use super::receipts::{apply_delivery, apply_echo, apply_read};
use super::{dedup_id, ConversationEnv, METADATA_PREFIX};
use crate::clock::now_ms;
use crate::flow::{ConversationView, TimerOp};
use crate::messenger::inbound::{EventKind, InboundEvent};
use crate::store::journal::JournalRef;
use crate::store::{
    ConversationRecord, Direction, Failure, OutboxRecord, Status, StoreError, TimerEntry,
    TimerRecord, TranscriptEntry, TurnCommit,
};

/// Handles one journalled event; returns the updated record and the replies to send.
pub(super) async fn handle_event(
    env: &ConversationEnv,
    mut record: ConversationRecord,
    journal: &JournalRef,
    event: InboundEvent,
) -> Result<(ConversationRecord, Vec<(u64, OutboxRecord)>), StoreError> {
    let store = &env.store;
    if !store.journal_contains(journal.seq())? {
        // A replay of an item an earlier incarnation already committed.
        return Ok((record, Vec::new()));
    }
    let event_id = dedup_id(&event);
    if let Some(id) = &event_id {
        if store.is_handled(&event.page_id, id)? {
            log::info!("{}: skipping redelivered event {id}", record.key());
            env.metrics.event(event.kind_name(), "duplicate");
            if let Some(seq) = journal.removed_with_turn() {
                let commit = TurnCommit {
                    journal_seq: Some(seq),
                    ..TurnCommit::default()
                };
                store.commit_turn(commit, false).await?;
            }
            return Ok((record, Vec::new()));
        }
    }
    let mut commit = TurnCommit {
        journal_seq: journal.removed_with_turn(),
        handled: event_id.map(|id| (event.page_id.clone(), id)),
        ..TurnCommit::default()
    };
    record.last_activity = now_ms();
    let watermarks = (record.delivered_watermark, record.read_watermark);
    match &event.kind {
        EventKind::Delivery(delivery) => apply_delivery(
            store,
            &mut record,
            &delivery.mids,
            delivery.watermark,
            &mut commit,
        )?,
        EventKind::Read(read) => apply_read(store, &mut record, read.watermark, &mut commit)?,
        EventKind::Echo(_) => apply_echo(store, &mut record, &event, &mut commit)?,
        EventKind::TakeThreadControl(_) | EventKind::PassThreadControl(_) => {
            // The app that loses the thread gets `take`, the one that receives it `pass`.
            record.thread_elsewhere = matches!(event.kind, EventKind::TakeThreadControl(_));
            let entry = inbound_entry(&event, Status::Handled, None);
            record_inbound(&mut record, entry, &mut commit);
        }
        EventKind::Timer(timer) => {
            let pending = TimerEntry {
                name: timer.name.clone(),
                due: timer.due,
            };
            if record.timers.contains(&pending) {
                record.timers.retain(|t| *t != pending);
                run_flow(env, &mut record, &event, &mut commit).await?
            } else {
                log::debug!("{}: ignoring cancelled timer {}", record.key(), timer.name);
            }
        }
        _ if event.is_user_input() && !event.standby && !record.thread_elsewhere => {
            record.window_opened_at = now_ms();
            run_flow(env, &mut record, &event, &mut commit).await?
        }
        _ => {
            let entry = inbound_entry(&event, Status::Handled, None);
            record_inbound(&mut record, entry, &mut commit);
        }
    }
    commit.conversation = Some(record.clone());
    let outbox = commit.outbox.clone();
    // Replies leave only once the turn that decided them is on disk; otherwise a crash
    // could replay the event and send them twice. A turn without replies need not wait
    // for the disk: losing it in a crash only means replaying it from the journal.
    let durable = !outbox.is_empty();
    let waiting = std::time::Instant::now();
    let counted = count_turn_later(env, &event, &commit, watermarks, &record);
    store.commit_turn(commit, durable).await?;
    if durable {
        env.metrics.flush_waited("conversation", waiting.elapsed());
    }
    counted();
    Ok((record, outbox))
}

/// The metrics of a turn, decided before the commit takes it and recorded after it landed.
fn count_turn_later<'a>(
    env: &'a ConversationEnv,
    event: &InboundEvent,
    commit: &TurnCommit,
    (delivered, read): (i64, i64),
    record: &ConversationRecord,
) -> impl FnOnce() + 'a {
    let failed = commit
        .new_entries
        .iter()
        .any(|(_, e)| e.direction == Direction::In && e.status == Status::Failed);
    let kind = event.kind_name();
    let delivery_moved = record.delivered_watermark > delivered;
    let read_moved = record.read_watermark > read;
    move || {
        env.metrics
            .event(kind, if failed { "failed" } else { "handled" });
        if delivery_moved {
            env.metrics.watermark_moved("delivery");
        }
        if read_moved {
            env.metrics.watermark_moved("read");
        }
    }
}

fn record_inbound(
    record: &mut ConversationRecord,
    entry: TranscriptEntry,
    commit: &mut TurnCommit,
) {
    let seq = record.take_entry_seq();
    record.inbound_count += 1;
    commit.new_entries.push((seq, entry));
}

async fn run_flow(
    env: &ConversationEnv,
    record: &mut ConversationRecord,
    event: &InboundEvent,
    commit: &mut TurnCommit,
) -> Result<(), StoreError> {
    let view = ConversationView {
        page_id: record.page_id.clone(),
        psid: record.psid.clone(),
        delivered_watermark: record.delivered_watermark,
        read_watermark: record.read_watermark,
        last_user_message: record.last_user_message,
        timers: record
            .timers
            .iter()
            .map(|t| (t.name.clone(), t.due))
            .collect(),
    };
    // Facebook does not promise order across requests (a redelivery can come after later
    // events): such an event is handled on arrival and marked late in the transcript.
    let late = event.is_user_input() && event.timestamp < record.last_user_message;
    if event.is_user_input() {
        record.last_user_message = record.last_user_message.max(event.timestamp);
    }
    let run = AssertUnwindSafe(env.flow.0.run(event, view, record.state.clone())).catch_unwind();
    let outcome = match actix_rt::time::timeout(env.flow_timeout, run).await {
        Err(_) => Err(format!(
            "flow did not finish within {} s",
            env.flow_timeout.as_secs_f32()
        )),
        Ok(Err(panic)) => Err(format!("flow panicked: {}", panic_message(&panic))),
        Ok(Ok(Err(error))) => Err(format!("flow failed: {error}")),
        Ok(Ok(Ok(output))) => Ok(output),
    };
    env.metrics.flow_run(outcome.is_ok());
    let output = match outcome {
        Ok(output) => output,
        Err(reason) => {
            log::warn!("{}: event {:?} failed: {reason}", record.key(), event.mid());
            let mut entry = inbound_entry(event, Status::Failed, Some(Failure::reason(reason)));
            entry.late = late;
            record_inbound(record, entry, commit);
            return Ok(());
        }
    };
    record.state = output.state;
    let mut entry = inbound_entry(event, Status::Handled, None);
    entry.late = late;
    record_inbound(record, entry, commit);
    let now = now_ms();
    apply_timer_ops(record, output.timers, now, commit);
    for reply in output.replies {
        let seq = record.take_entry_seq();
        let mut entry = TranscriptEntry::queued_out(
            reply.kind_name(),
            reply.text_content().map(str::to_string),
            now,
        );
        if let Some(refusal) = policy_refusal(record, &reply, now) {
            // Refused here, before the Graph API could refuse it (and count it against us).
            log::warn!("{}: reply not sent: {refusal}", record.key());
            entry.status = Status::Failed;
            entry.error = Some(Failure::reason(refusal));
            commit.new_entries.push((seq, entry));
            record.outbound_count += 1;
            continue;
        }
        let outgoing = reply.into_outgoing(&record.psid, format!("{METADATA_PREFIX}{seq}"));
        let outbox = OutboxRecord {
            page_id: record.page_id.clone(),
            psid: record.psid.clone(),
            entry: seq,
            outgoing,
            attempts: 0,
            created_at: now,
        };
        commit.new_entries.push((seq, entry));
        commit.outbox.push((env.store.next_id()?, outbox));
        record.outbound_count += 1;
    }
    Ok(())
}

/// Applies the flow's timer changes to the record and the commit.
pub(super) fn apply_timer_ops(
    record: &mut ConversationRecord,
    ops: Vec<TimerOp>,
    now: i64,
    commit: &mut TurnCommit,
) {
    for op in ops {
        let name = match &op {
            TimerOp::Schedule { name, .. } | TimerOp::Cancel { name } => name.clone(),
        };
        if let Some(old) = record.timers.iter().position(|t| t.name == name) {
            commit.timers_cleared.push(record.timers.remove(old));
        }
        if let TimerOp::Schedule { after, payload, .. } = op {
            let after_ms = i64::try_from(after.as_millis()).unwrap_or(i64::MAX);
            let due = now.saturating_add(after_ms);
            record.timers.push(TimerEntry {
                name: name.clone(),
                due,
            });
            commit.timers_set.push(TimerRecord {
                page_id: record.page_id.clone(),
                psid: record.psid.clone(),
                name,
                due,
                payload,
            });
        }
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".into())
}

fn inbound_entry(event: &InboundEvent, status: Status, error: Option<Failure>) -> TranscriptEntry {
    TranscriptEntry {
        direction: Direction::In,
        mid: event.mid().map(str::to_string),
        timestamp: event.timestamp,
        kind: event.kind_name().to_string(),
        text: event.text().map(str::to_string),
        status,
        sent_at: None,
        echo_timestamp: None,
        error,
        payload: inbound_payload(event),
        late: false,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ConversationKey;
    use std::time::Duration;

    #[test]
    fn scheduling_a_timer_again_replaces_it_and_cancel_removes_it() {
        let mut record = ConversationRecord::new(&ConversationKey::new("p", "u"));
        let mut commit = TurnCommit::default();
        let schedule = |ms| TimerOp::Schedule {
            name: "nudge".into(),
            after: Duration::from_millis(ms),
            payload: Value::Null,
        };
        apply_timer_ops(&mut record, vec![schedule(100)], 1_000, &mut commit);
        apply_timer_ops(&mut record, vec![schedule(500)], 1_000, &mut commit);
        assert_eq!(
            record.timers,
            vec![TimerEntry {
                name: "nudge".into(),
                due: 1_500
            }]
        );
        assert_eq!(
            commit.timers_cleared,
            vec![TimerEntry {
                name: "nudge".into(),
                due: 1_100
            }]
        );
        apply_timer_ops(
            &mut record,
            vec![TimerOp::Cancel {
                name: "nudge".into(),
            }],
            2_000,
            &mut commit,
        );
        assert!(record.timers.is_empty());
        assert_eq!(commit.timers_cleared.len(), 2);
    }
}
