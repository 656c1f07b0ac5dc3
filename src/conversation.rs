//! One actor per conversation (page + user): handles that user's events one at a time.
//!
//! For each journalled event it skips redeliveries (by `mid`, or a digest of the event
//! when it has none), runs the flow for user input, applies echoes and delivery/read
//! watermarks, and commits the outcome (state, transcript, outbox, dedup mark, journal
//! removal) in ONE sled transaction, flushed before the replies go to the sender.
//! It owns its conversation record; it never sends HTTP itself, and it keeps no state in
//! memory that is not in sled, so stopping it (idle or failed) loses nothing.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures_util::FutureExt;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::flow::{ConversationView, FlowHandle, MessageTag, Reply, TimerOp};
use crate::load::Load;
use crate::messenger::inbound::{EventKind, InboundEvent};
use crate::metrics::Metrics;
use crate::sender::{Enqueue, OutboundSender};
use crate::store::{
    ConversationKey, ConversationRecord, Direction, EntryChange, Failure, OutboxRecord, SentRef,
    Status, Store, StoreError, TimerEntry, TimerRecord, TranscriptEntry, TurnCommit,
};
use crate::supervisor::{ConversationStopped, IdleStop, Supervisor};

/// Prefix of the Send API `metadata` we attach, echoed back to link the echo to its entry.
pub const METADATA_PREFIX: &str = "colloquy:";
/// Page messages awaiting a read receipt that one conversation keeps track of; older ones
/// are dropped from tracking (they stay in the transcript as they were).
const MAX_TRACKED_UNREAD: usize = 1024;

/// What every conversation actor shares.
pub struct ConversationEnv {
    pub store: Store,
    pub load: Arc<Load>,
    pub metrics: Arc<Metrics>,
    pub flow: FlowHandle,
    pub sender: Addr<OutboundSender>,
    pub flow_timeout: Duration,
    pub idle_timeout: Duration,
}

/// One acknowledged event for this conversation, by its journal sequence number.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Deliver {
    pub seq: u64,
    pub event: InboundEvent,
}

/// Stop after the event in hand; whatever is still queued stays in the journal.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Retire;

pub struct Conversation {
    key: ConversationKey,
    incarnation: u64,
    env: Arc<ConversationEnv>,
    supervisor: Addr<Supervisor>,
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
        supervisor: Addr<Supervisor>,
    ) -> Self {
        Conversation {
            key,
            incarnation,
            env,
            supervisor,
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
        let ask = self.supervisor.send(IdleStop {
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
        self.supervisor.do_send(ConversationStopped {
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
        let work = async move {
            match record {
                Some(record) => handle_event(&env, record, msg.seq, msg.event).await,
                None => Err(StoreError::Flush("conversation record not loaded".into())),
            }
        };
        AtomicResponse::new(Box::pin(work.into_actor(self).map(|outcome, act, ctx| {
            act.handled += 1;
            act.env.load.events_out(1);
            act.last_active = Instant::now();
            match outcome {
                Ok((record, outbox)) => {
                    act.record = Some(record);
                    if !outbox.is_empty() {
                        act.env.sender.do_send(Enqueue { items: outbox });
                    }
                }
                Err(error) => {
                    // The journal still holds the event: the supervisor restarts this
                    // conversation from sled and replays it.
                    log::error!("{}: event not committed, restarting: {error}", act.key);
                    ctx.stop();
                }
            }
        })))
    }
}

impl Handler<Retire> for Conversation {
    type Result = ();

    fn handle(&mut self, _: Retire, ctx: &mut Context<Self>) {
        self.retiring = true;
        ctx.stop();
    }
}

/// Handles one journalled event; returns the updated record and the replies to send.
async fn handle_event(
    env: &ConversationEnv,
    mut record: ConversationRecord,
    seq: u64,
    event: InboundEvent,
) -> Result<(ConversationRecord, Vec<(u64, OutboxRecord)>), StoreError> {
    let store = &env.store;
    if !store.journal_contains(seq)? {
        // A replay of an item an earlier incarnation already committed.
        return Ok((record, Vec::new()));
    }
    let event_id = dedup_id(&event);
    if let Some(id) = &event_id {
        if store.is_handled(&event.page_id, id)? {
            log::info!("{}: skipping redelivered event {id}", record.key());
            env.metrics.event(event.kind_name(), "duplicate");
            let commit = TurnCommit {
                journal_seq: Some(seq),
                ..TurnCommit::default()
            };
            store.commit_turn(commit, false).await?;
            return Ok((record, Vec::new()));
        }
    }
    let mut commit = TurnCommit {
        journal_seq: Some(seq),
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
        let is_message = reply.is_message();
        let mut entry = TranscriptEntry {
            direction: Direction::Out,
            mid: None,
            timestamp: now,
            kind: reply.kind_name().to_string(),
            text: reply.text_content().map(str::to_string),
            status: Status::Queued,
            sent_at: None,
            echo_timestamp: None,
            error: None,
            payload: None,
            late: false,
        };
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
        if is_message {
            track_unread(record, seq);
        }
    }
    Ok(())
}

/// Messenger's standard messaging window after the user's last action.
const MESSAGING_WINDOW_MS: i64 = 24 * 3600 * 1000;
/// The HUMAN_AGENT tag's window.
const HUMAN_AGENT_WINDOW_MS: i64 = 7 * 24 * 3600 * 1000;

/// Why Messenger policy forbids sending this reply now, if it does.
fn policy_refusal(record: &ConversationRecord, reply: &Reply, now: i64) -> Option<String> {
    if !reply.is_message() && reply.kind_name() == "callback" {
        return None;
    }
    if record.thread_elsewhere {
        return Some("another app owns the thread (handover protocol)".into());
    }
    let elapsed = now.saturating_sub(record.window_opened_at);
    let allowed = match reply.tag() {
        None => MESSAGING_WINDOW_MS,
        Some(MessageTag::HumanAgent) => HUMAN_AGENT_WINDOW_MS,
        Some(_) => return None,
    };
    (elapsed > allowed).then(|| {
        format!(
            "outside the messaging window: the user's last message was {} h ago; \
             send with a message tag (Reply::with_tag) to reach them",
            elapsed / 3_600_000
        )
    })
}

/// Applies the flow's timer changes to the record and the commit.
fn apply_timer_ops(
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

fn track_unread(record: &mut ConversationRecord, seq: u64) {
    record.unread_out.push(seq);
    if record.unread_out.len() > MAX_TRACKED_UNREAD {
        let excess = record.unread_out.len() - MAX_TRACKED_UNREAD;
        record.unread_out.drain(..excess);
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

/// Collects the tracked page messages with their current entries, dropping from tracking
/// those that no longer need a receipt.
fn tracked_entries(
    store: &Store,
    record: &mut ConversationRecord,
) -> Result<Vec<(u64, TranscriptEntry)>, StoreError> {
    let key = record.key();
    let mut entries = Vec::with_capacity(record.unread_out.len());
    for seq in &record.unread_out {
        if let Some(entry) = store.transcript_entry(&key, *seq)? {
            entries.push((*seq, entry));
        }
    }
    record.unread_out = entries
        .iter()
        .filter(|(_, e)| !matches!(e.status, Status::Failed | Status::Read))
        .map(|(seq, _)| *seq)
        .collect();
    Ok(entries)
}

fn is_sent(entry: &TranscriptEntry) -> bool {
    matches!(entry.status, Status::Sent | Status::Delivered)
}

fn covered_by(entry: &TranscriptEntry, watermark: i64) -> bool {
    entry.watermark_time().is_some_and(|t| t <= watermark)
}

fn apply_delivery(
    store: &Store,
    record: &mut ConversationRecord,
    mids: &[String],
    watermark: i64,
    commit: &mut TurnCommit,
) -> Result<(), StoreError> {
    record.delivered_watermark = record.delivered_watermark.max(watermark);
    let watermark = record.delivered_watermark;
    for (seq, entry) in tracked_entries(store, record)? {
        let listed = entry.mid.as_ref().is_some_and(|mid| mids.contains(mid));
        if entry.status != Status::Failed
            && (listed || (is_sent(&entry) && covered_by(&entry, watermark)))
        {
            commit
                .entry_changes
                .push((seq, EntryChange::Advance(Status::Delivered)));
        }
    }
    Ok(())
}

fn apply_read(
    store: &Store,
    record: &mut ConversationRecord,
    watermark: i64,
    commit: &mut TurnCommit,
) -> Result<(), StoreError> {
    record.read_watermark = record.read_watermark.max(watermark);
    // What was read was delivered.
    record.delivered_watermark = record.delivered_watermark.max(record.read_watermark);
    let watermark = record.read_watermark;
    let mut read = Vec::new();
    for (seq, entry) in tracked_entries(store, record)? {
        if is_sent(&entry) && covered_by(&entry, watermark) {
            commit
                .entry_changes
                .push((seq, EntryChange::Advance(Status::Read)));
            read.push(seq);
        }
    }
    record.unread_out.retain(|seq| !read.contains(seq));
    Ok(())
}

/// Links the echo of a page message to its transcript entry, or records a page message
/// colloquy did not send (a human in the Page Inbox, another app).
fn apply_echo(
    store: &Store,
    record: &mut ConversationRecord,
    event: &InboundEvent,
    commit: &mut TurnCommit,
) -> Result<(), StoreError> {
    let EventKind::Echo(echo) = &event.kind else {
        return Ok(());
    };
    let key = record.key();
    let by_metadata = echo
        .metadata
        .as_deref()
        .and_then(|m| m.strip_prefix(METADATA_PREFIX))
        .and_then(|seq| seq.parse::<u64>().ok())
        .filter(|seq| *seq < record.next_entry);
    let target = match by_metadata {
        Some(seq) => Some(seq),
        None => store
            .find_sent(&event.page_id, &echo.mid)?
            .filter(|sent| sent.psid == record.psid)
            .map(|sent| sent.entry),
    };
    let own = match target {
        Some(seq) => store
            .transcript_entry(&key, seq)?
            .filter(|e| e.direction == Direction::Out)
            .map(|_| seq),
        None => None,
    };
    if let Some(seq) = own {
        commit.entry_changes.push((
            seq,
            EntryChange::LinkEcho {
                mid: echo.mid.clone(),
                timestamp: event.timestamp,
            },
        ));
        return Ok(());
    }
    let seq = record.take_entry_seq();
    record.outbound_count += 1;
    commit.new_entries.push((
        seq,
        TranscriptEntry {
            direction: Direction::Out,
            mid: Some(echo.mid.clone()),
            timestamp: event.timestamp,
            kind: "echo".into(),
            text: echo.text.clone(),
            status: Status::Sent,
            sent_at: Some(event.timestamp),
            echo_timestamp: Some(event.timestamp),
            error: None,
            payload: echo.app_id.as_ref().map(|app| json!({ "app_id": app })),
            late: false,
        },
    ));
    commit.sent_index.push((
        echo.mid.clone(),
        SentRef {
            psid: record.psid.clone(),
            entry: seq,
        },
    ));
    track_unread(record, seq);
    Ok(())
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
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

    fn record_with_window_opened(hours_ago: i64, now: i64) -> ConversationRecord {
        let mut record = ConversationRecord::new(&ConversationKey::new("p", "u"));
        record.window_opened_at = now - hours_ago * 3_600_000;
        record
    }

    #[test]
    fn a_reply_inside_the_24_hour_window_is_allowed() {
        let now = 10_000_000_000;
        let record = record_with_window_opened(23, now);
        assert_eq!(
            policy_refusal(&record, &Reply::text("hi").unwrap(), now),
            None
        );
    }

    #[test]
    fn an_untagged_reply_outside_the_window_is_refused_with_a_reason() {
        let now = 10_000_000_000;
        let record = record_with_window_opened(25, now);
        let refusal = policy_refusal(&record, &Reply::text("hi").unwrap(), now).unwrap();
        assert!(
            refusal.contains("outside the messaging window"),
            "{refusal}"
        );
        assert!(refusal.contains("25 h ago"), "{refusal}");
    }

    #[test]
    fn tags_open_the_way_outside_the_window_within_their_own_limits() {
        let now = 10_000_000_000;
        let late = record_with_window_opened(48, now);
        let tagged = Reply::text("Your order shipped")
            .unwrap()
            .with_tag(MessageTag::PostPurchaseUpdate);
        assert_eq!(policy_refusal(&late, &tagged, now), None);
        let agent = Reply::text("An agent here")
            .unwrap()
            .with_tag(MessageTag::HumanAgent);
        assert_eq!(policy_refusal(&late, &agent, now), None);
        let too_late = record_with_window_opened(8 * 24, now);
        assert!(policy_refusal(&too_late, &agent, now).is_some());
    }

    #[test]
    fn callbacks_are_not_messages_and_need_no_window() {
        let now = 10_000_000_000;
        let record = record_with_window_opened(100, now);
        let callback = Reply::callback("https://x/hook", serde_json::json!({})).unwrap();
        assert_eq!(policy_refusal(&record, &callback, now), None);
    }

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
