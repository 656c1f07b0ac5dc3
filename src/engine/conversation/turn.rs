//! One event's turn: skip redeliveries, run the flow (with its timeout and panic guard),
//! apply the flow's replies and timer changes, and commit everything in one store
//! operation, durable before any reply may leave. Owns no state between events: the
//! conversation record comes in and the updated record goes out.

use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;

use super::entries::{inbound_entry, queue_reply, record_inbound};
use super::operator::apply_operator;
use super::receipts::{apply_delivery, apply_echo, apply_read};
use super::{dedup_id, ConversationEnv};
use crate::clock::now_ms;
use crate::engine::event::{EngineEvent, OperatorAction};
use crate::event::{EventKind, InboundEvent, TimerFired};
use crate::flow::{ConversationView, FlowInput, TimerOp};
use crate::store::journal::JournalRef;
use crate::store::{
    ConversationRecord, Direction, FailedEvent, Failure, OutboxRecord, Status, StoreError,
    TimerEntry, TimerRecord, TurnCommit,
};

/// Handles one journalled event; returns the updated record and the replies to send.
pub(super) async fn handle_event(
    env: &ConversationEnv,
    mut record: ConversationRecord,
    journal: &JournalRef,
    event: EngineEvent,
) -> Result<(ConversationRecord, Vec<(u64, OutboxRecord)>), StoreError> {
    let store = &env.store;
    if !journal.claim() {
        // Its request journalled it meanwhile and routed the journalled copy instead, or
        // its conversation's previous event in the request did not commit: either way
        // the request hands it on.
        log::debug!(
            "{}: event not begun here (handed on by its request)",
            record.key()
        );
        return Ok((record, Vec::new()));
    }
    if let Some(seq) = journal.seq() {
        if !store.journal_contains(seq)? {
            // A replay of an item an earlier incarnation already committed.
            return Ok((record, Vec::new()));
        }
    }
    let mut commit = TurnCommit {
        journal_seq: journal.removed_with_turn(),
        ..TurnCommit::default()
    };
    let watermarks = (record.delivered_watermark, record.read_watermark);
    if !matches!(event, EngineEvent::Messenger(_)) {
        // A webhook event says its channel itself (below); a timer or an operator's
        // action on a conversation never seen takes its page's.
        if let Some(channel) = env.pages.current().channel_of(&record.page_id) {
            record.channel = channel;
        }
    }
    if let Some(replicator) = &env.replicator {
        let channel = match &event {
            EngineEvent::Messenger(inbound) => inbound.channel,
            _ => record.channel,
        };
        if !replicator.owns(channel, &record.key()) {
            return leave_to_owner(env, record, commit, &event).await;
        }
    }
    commit.listed_before = Some((record.last_activity, record.paused));
    match &event {
        EngineEvent::Messenger(inbound) => {
            let event_id = dedup_id(inbound);
            if let Some(id) = &event_id {
                if store.is_handled(&inbound.page_id, inbound.timestamp, id)? {
                    skip_redelivery(env, &record, inbound, id, commit).await?;
                    return Ok((record, Vec::new()));
                }
            }
            if inbound.timestamp <= record.forgotten_at {
                // An event from before an operator forgot this user: it stays forgotten.
                log::info!(
                    "{}: dropping an event from before it was forgotten",
                    record.key()
                );
                return finish_without_change(env, record, commit).await;
            }
            commit.handled = event_id.map(|id| (inbound.page_id.clone(), id));
            commit.handled_at = commit.handled.as_ref().map(|_| inbound.timestamp);
            record.last_activity = now_ms();
            record.channel = inbound.channel;
            apply_messenger_event(env, &mut record, &event, inbound, &mut commit).await?;
        }
        EngineEvent::Timer(fired) => {
            record.last_activity = now_ms();
            apply_timer(env, &mut record, &event, &fired.timer, &mut commit).await?;
        }
        EngineEvent::Operator(operator) => {
            record.last_activity = now_ms();
            match &operator.action {
                OperatorAction::Replay { entry } => {
                    replay(env, &mut record, &event, *entry, &mut commit).await?
                }
                OperatorAction::Start { tree } => {
                    let input = FlowInput::Start(tree);
                    run_flow(env, &mut record, &event, input, false, &mut commit).await?
                }
                action => apply_operator(env, &mut record, &event, action, &mut commit)?,
            }
        }
    }
    commit.conversation = Some(record.clone());
    // Replies leave only once the turn that decided them is on disk; otherwise a crash
    // could replay the event and send them twice. An event not journalled is acknowledged
    // on the strength of this commit, so it waits for the disk too. Any other turn need
    // not: losing it in a crash only means replaying it from the journal.
    let durable = !commit.outbox.is_empty() || journal.needs_durable_turn();
    let waiting = std::time::Instant::now();
    let counted = count_turn_later(env, &event, &commit, watermarks, &record);
    if let Some(replicator) = &env.replicator {
        // In a cluster the turn exists once the cluster took it; fenced out, it is not
        // applied here either, and its event goes to the partition's new owner.
        let seq = replicator
            .replicate_turn(&commit)
            .await
            .map_err(StoreError::Replication)?;
        if let (Some(seq), Some(stored)) = (seq, commit.conversation.as_mut()) {
            stored.stream_seq = seq;
            record.stream_seq = seq;
        }
    }
    let outbox = store.commit_turn(commit, durable).await?;
    if durable {
        env.metrics.flush_waited("conversation", waiting.elapsed());
    }
    counted();
    Ok((record, outbox))
}

/// A cluster node handed an event of a partition it does not hold: nothing is applied.
/// A timer fired here goes back into the timer index (the partition may come back, and
/// its owner fires its own copy); an event awaited by a partition consumer stays
/// unacknowledged for the owner; anything else journalled here is dropped from the
/// journal, since only the owner may act on the conversation.
async fn leave_to_owner(
    env: &ConversationEnv,
    record: ConversationRecord,
    commit: TurnCommit,
    event: &EngineEvent,
) -> Result<(ConversationRecord, Vec<(u64, OutboxRecord)>), StoreError> {
    let key = record.key();
    let Some(journal_seq) = commit.journal_seq else {
        return Err(StoreError::NotHeld {
            key: key.to_string(),
        });
    };
    let mut put_back = TurnCommit {
        journal_seq: Some(journal_seq),
        ..TurnCommit::default()
    };
    match event {
        EngineEvent::Timer(fired) => put_back.timers_set.push(TimerRecord {
            page_id: key.page_id.clone(),
            psid: key.psid.clone(),
            name: fired.timer.name.clone(),
            due: fired.timer.due,
            payload: fired.timer.payload.clone(),
            channel: record.channel,
        }),
        _ => log::warn!(
            "{key}: a {} event journalled on a node that does not hold its partition: dropped",
            event.kind_name()
        ),
    }
    env.store.commit_turn(put_back, true).await?;
    Ok((record, Vec::new()))
}

/// A turn that changes nothing but consumes its journal item, if it has its own.
async fn finish_without_change(
    env: &ConversationEnv,
    record: ConversationRecord,
    commit: TurnCommit,
) -> Result<(ConversationRecord, Vec<(u64, OutboxRecord)>), StoreError> {
    if commit.journal_seq.is_some() {
        let commit = TurnCommit {
            journal_seq: commit.journal_seq,
            ..TurnCommit::default()
        };
        env.store.commit_turn(commit, false).await?;
    }
    Ok((record, Vec::new()))
}

/// A redelivery of an event already handled: counted, and its journal item removed.
async fn skip_redelivery(
    env: &ConversationEnv,
    record: &ConversationRecord,
    event: &InboundEvent,
    id: &str,
    commit: TurnCommit,
) -> Result<(), StoreError> {
    log::info!("{}: skipping redelivered event {id}", record.key());
    env.metrics.event(event.kind_name(), "duplicate");
    if commit.journal_seq.is_some() {
        let commit = TurnCommit {
            journal_seq: commit.journal_seq,
            ..TurnCommit::default()
        };
        env.store.commit_turn(commit, false).await?;
    }
    Ok(())
}

/// A webhook event: receipts move watermarks, echoes link to their replies, thread
/// control is noted, and what a user did runs the flow.
async fn apply_messenger_event(
    env: &ConversationEnv,
    record: &mut ConversationRecord,
    event: &EngineEvent,
    inbound: &InboundEvent,
    commit: &mut TurnCommit,
) -> Result<(), StoreError> {
    let store = &env.store;
    match &inbound.kind {
        EventKind::Delivery(delivery) => {
            apply_delivery(store, record, &delivery.mids, delivery.watermark, commit)?
        }
        EventKind::Read(read) => apply_read(store, record, read.watermark, commit)?,
        EventKind::Echo(_) => apply_echo(store, record, inbound, commit)?,
        EventKind::TakeThreadControl(_) | EventKind::PassThreadControl(_) => {
            // The app that loses the thread gets `take`, the one that receives it `pass`.
            record.thread_elsewhere = matches!(inbound.kind, EventKind::TakeThreadControl(_));
            let entry = inbound_entry(event, Status::Handled, None);
            record_inbound(record, entry, commit);
        }
        _ if inbound.is_user_input() && !inbound.standby && !record.thread_elsewhere => {
            record.window_opened_at = now_ms();
            // Facebook does not promise order across requests (a redelivery can come after
            // later events): such an event is handled on arrival and marked late.
            let late = inbound.timestamp < record.last_user_message;
            record.last_user_message = record.last_user_message.max(inbound.timestamp);
            if record.paused {
                // A human has this user: recorded for them, never answered by the flow.
                let mut entry = inbound_entry(event, Status::Handled, None);
                entry.late = late;
                record_inbound(record, entry, commit);
            } else {
                run_flow(env, record, event, FlowInput::Event(inbound), late, commit).await?
            }
        }
        _ => {
            let entry = inbound_entry(event, Status::Handled, None);
            record_inbound(record, entry, commit);
        }
    }
    Ok(())
}

/// A due timer runs the flow unless it was cancelled or replaced since it was set (the
/// record lists exactly the timers still pending, by name and due time).
async fn apply_timer(
    env: &ConversationEnv,
    record: &mut ConversationRecord,
    event: &EngineEvent,
    timer: &TimerFired,
    commit: &mut TurnCommit,
) -> Result<(), StoreError> {
    let pending = TimerEntry {
        name: timer.name.clone(),
        due: timer.due,
    };
    if record.timers.contains(&pending) {
        record.timers.retain(|t| *t != pending);
        // Gone from this store's index already (fired); a node replaying this turn
        // drops its own copy of the index entry with it.
        commit.timers_cleared.push(pending.clone());
        run_flow(env, record, event, FlowInput::Timer(timer), false, commit).await?
    } else {
        log::debug!("{}: ignoring cancelled timer {}", record.key(), timer.name);
    }
    Ok(())
}

/// The metrics of a turn, decided before the commit takes it and recorded after it landed.
fn count_turn_later<'a>(
    env: &'a ConversationEnv,
    event: &EngineEvent,
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

async fn run_flow(
    env: &ConversationEnv,
    record: &mut ConversationRecord,
    event: &EngineEvent,
    input: FlowInput<'_>,
    late: bool,
    commit: &mut TurnCommit,
) -> Result<(), StoreError> {
    let view = ConversationView {
        page_id: record.page_id.clone(),
        channel: record.channel,
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
    let flow = env.pages.current().flow_for(&record.page_id).clone();
    let run = AssertUnwindSafe(flow.0.run(input, view, record.state.clone())).catch_unwind();
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
            log::warn!(
                "{}: {} event failed: {reason}",
                record.key(),
                event.kind_name()
            );
            let mut entry = inbound_entry(event, Status::Failed, Some(Failure::reason(reason)));
            entry.late = late;
            let seq = record_inbound(record, entry, commit);
            if let Some(failed) = failed_event(event) {
                commit.failed_events.push((seq, failed));
            }
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
        queue_reply(env, record, reply, now, false, commit)?;
    }
    Ok(())
}

/// An event as kept for an operator's replay; `None` for an operator's own action.
fn failed_event(event: &EngineEvent) -> Option<FailedEvent> {
    match event {
        EngineEvent::Messenger(inbound) => Some(FailedEvent::Messenger {
            raw: inbound.raw.clone(),
            standby: inbound.standby,
        }),
        EngineEvent::Timer(fired) => Some(FailedEvent::Timer {
            name: fired.timer.name.clone(),
            due: fired.timer.due,
            payload: fired.timer.payload.clone(),
        }),
        EngineEvent::Operator(_) => None,
    }
}

/// An operator's replay: the action's own entry, then the flow runs again on the failed
/// event as it first arrived (recorded as a new entry, kept again if it fails again).
/// A replay of an event no longer kept (replayed or skipped meanwhile) only records the
/// action.
async fn replay(
    env: &ConversationEnv,
    record: &mut ConversationRecord,
    event: &EngineEvent,
    entry: u64,
    commit: &mut TurnCommit,
) -> Result<(), StoreError> {
    record_inbound(record, inbound_entry(event, Status::Handled, None), commit);
    let kept = env.store.failed_events(&record.key())?;
    let Some((_, failed)) = kept.into_iter().find(|(seq, _)| *seq == entry) else {
        log::info!(
            "{}: entry {entry} is no longer kept for a replay",
            record.key()
        );
        return Ok(());
    };
    commit.failed_events_resolved.push(entry);
    match failed {
        FailedEvent::Messenger { raw, standby } => {
            let inbound = InboundEvent::from_raw(&record.page_id, raw, standby).on(record.channel);
            let replayed = EngineEvent::Messenger(inbound.clone());
            run_flow(
                env,
                record,
                &replayed,
                FlowInput::Event(&inbound),
                false,
                commit,
            )
            .await
        }
        FailedEvent::Timer { name, due, payload } => {
            let timer = TimerFired { name, due, payload };
            let replayed = EngineEvent::Timer(crate::engine::event::FiredTimer {
                key: record.key(),
                timer: timer.clone(),
            });
            run_flow(
                env,
                record,
                &replayed,
                FlowInput::Timer(&timer),
                false,
                commit,
            )
            .await
        }
    }
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
                channel: record.channel,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ConversationKey;
    use serde_json::Value;
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
