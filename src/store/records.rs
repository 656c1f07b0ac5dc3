//! The records colloquy persists: journal entries, conversations, transcript entries and
//! outbox items, with their serde encoding.
//!
//! These are plain data; the rules of how they change (watermarks only move forward, an
//! outbound status never goes back) live in methods here so every writer applies the same
//! rule. Nothing here does IO.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::messenger::inbound::Channel;
use crate::messenger::outbound::SendRequest;

/// Which conversation an event or reply belongs to: the page and the non-page party.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ConversationKey {
    pub page_id: String,
    pub psid: String,
}

impl ConversationKey {
    pub fn new(page_id: impl Into<String>, psid: impl Into<String>) -> Self {
        ConversationKey {
            page_id: page_id.into(),
            psid: psid.into(),
        }
    }
}

/// A map keyed by conversation, as the engine keeps one entry per live conversation and
/// looks it up for every event and reply: foldhash (seeded per process) instead of
/// SipHash, which was most of a lookup's cost.
pub type ConversationMap<V> = std::collections::HashMap<ConversationKey, V, ConversationHasher>;
/// A set of conversations, hashed as [`ConversationMap`].
pub type ConversationSet = std::collections::HashSet<ConversationKey, ConversationHasher>;
pub type ConversationHasher = foldhash::fast::RandomState;

impl std::fmt::Display for ConversationKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "page {} psid {}", self.page_id, self.psid)
    }
}

/// One acknowledged inbound event waiting to be handled, exactly as Facebook sent it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JournalRecord {
    pub page_id: String,
    /// Messenger or Instagram; absent (Messenger) in items written before channels.
    #[serde(default, skip_serializing_if = "Channel::is_messenger")]
    pub channel: Channel,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub standby: bool,
    /// The `messaging[]`/`standby[]` item, byte-for-byte meaning preserved.
    pub event: Value,
}

/// How a journal item is stored: one webhook event, the events of one POST that carried
/// several (`{"batch": [...]}`, see `store::journal`), or a flow's timer that fired
/// (`{"timer": {...}}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum JournalItem {
    Batch { batch: Vec<JournalRecord> },
    Timer { timer: TimerRecord },
    One(JournalRecord),
}

/// What a pending journal item holds, as the engine replays it.
#[derive(Debug, Clone, PartialEq)]
pub enum PendingItem {
    /// Webhook events, in the order their POST carried them.
    Events(Vec<JournalRecord>),
    /// A timer that fired and whose turn has not been committed yet.
    Timer(TimerRecord),
}

impl JournalItem {
    pub fn into_pending(self) -> PendingItem {
        match self {
            JournalItem::Batch { batch } => PendingItem::Events(batch),
            JournalItem::Timer { timer } => PendingItem::Timer(timer),
            JournalItem::One(record) => match legacy_timer(&record) {
                Some(timer) => PendingItem::Timer(timer),
                None => PendingItem::Events(vec![record]),
            },
        }
    }
}

/// A fired timer journalled by an earlier version, which wrote it as a made-up
/// webhook event (`{"sender": {"id": psid}, "colloquy_timer": {name, due, payload}}`).
/// Read back as the timer it is, so an upgrade never loses one that was pending.
fn legacy_timer(record: &JournalRecord) -> Option<TimerRecord> {
    let fired = record.event.get("colloquy_timer")?;
    let psid = record.event.get("sender")?.get("id")?;
    let psid = match psid {
        Value::String(id) => id.clone(),
        Value::Number(id) => id.to_string(),
        _ => return None,
    };
    Some(TimerRecord {
        page_id: record.page_id.clone(),
        psid,
        name: fired.get("name")?.as_str()?.to_string(),
        due: fired.get("due").and_then(Value::as_i64).unwrap_or_default(),
        payload: fired.get("payload").cloned().unwrap_or_default(),
        channel: record.channel,
    })
}

/// What is kept per conversation besides its transcript.
///
/// Stored compactly (it is rewritten on every turn): short field names (the long ones of
/// earlier builds are still read), zeros left out, and the page id and psid not stored
/// at all since the key holds them (`Store` fills them in when it reads a record).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConversationRecord {
    #[serde(skip)]
    pub page_id: String,
    #[serde(skip)]
    pub psid: String,
    /// The flow's own state, as its serde type wrote it; `null` before the first turn.
    #[serde(default, rename = "s", alias = "state")]
    pub state: Value,
    /// Every page message at or before this time (ms) is delivered. Only moves forward.
    #[serde(
        default,
        rename = "dw",
        alias = "delivered_watermark",
        skip_serializing_if = "is_zero"
    )]
    pub delivered_watermark: i64,
    /// Every page message at or before this time (ms) is read. Only moves forward.
    #[serde(
        default,
        rename = "rw",
        alias = "read_watermark",
        skip_serializing_if = "is_zero"
    )]
    pub read_watermark: i64,
    /// Local time (ms) of the last event handled.
    #[serde(
        default,
        rename = "la",
        alias = "last_activity",
        skip_serializing_if = "is_zero"
    )]
    pub last_activity: i64,
    /// Facebook time (ms) of the last message from the user: opens the 24 h window.
    #[serde(
        default,
        rename = "lu",
        alias = "last_user_message",
        skip_serializing_if = "is_zero"
    )]
    pub last_user_message: i64,
    #[serde(
        default,
        rename = "ni",
        alias = "inbound_count",
        skip_serializing_if = "is_zero"
    )]
    pub inbound_count: u64,
    #[serde(
        default,
        rename = "no",
        alias = "outbound_count",
        skip_serializing_if = "is_zero"
    )]
    pub outbound_count: u64,
    /// Sequence number the next transcript entry gets.
    #[serde(
        default,
        rename = "ne",
        alias = "next_entry",
        skip_serializing_if = "is_zero"
    )]
    pub next_entry: u64,
    /// Every transcript entry before this one is settled for delivery receipts (inbound,
    /// not a message, delivered, read or failed): a delivery watermark looks from here on,
    /// so receipts never scan the whole transcript and the record stays small.
    #[serde(default, rename = "ud", skip_serializing_if = "is_zero")]
    pub undelivered_from: u64,
    /// Likewise for read receipts: every entry before this one is settled for them.
    #[serde(default, rename = "ur", skip_serializing_if = "is_zero")]
    pub unread_from: u64,
    /// Timers the flow scheduled and that have not fired or been cancelled.
    #[serde(
        default,
        rename = "tm",
        alias = "timers",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub timers: Vec<TimerEntry>,
    /// Local time (ms) the user last did something: the 24-hour window runs from here.
    #[serde(
        default,
        rename = "wo",
        alias = "window_opened_at",
        skip_serializing_if = "is_zero"
    )]
    pub window_opened_at: i64,
    /// Another app took control of the thread (handover protocol): the flow does not run
    /// and nothing is sent until control is passed back.
    #[serde(
        default,
        rename = "te",
        alias = "thread_elsewhere",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub thread_elsewhere: bool,
    /// An operator handed this user to a human: their messages are recorded and never
    /// answered by the flow until resumed.
    #[serde(default, rename = "hp", skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
    /// When an operator last forgot this user (local epoch ms; 0 = never): everything
    /// before is gone, and a redelivery of an event from before is dropped.
    #[serde(default, rename = "fg", skip_serializing_if = "is_zero")]
    pub forgotten_at: i64,
    /// Messenger or Instagram: the channel of the events it has had.
    #[serde(default, rename = "ch", skip_serializing_if = "Channel::is_messenger")]
    pub channel: Channel,
    /// In a cluster: the sequence, in the cluster's state stream, of the last turn this
    /// record includes (0 on a single node), so a node replaying a partition skips what
    /// its store already holds.
    #[serde(default, rename = "ss", skip_serializing_if = "is_zero")]
    pub stream_seq: u64,
}

fn is_zero<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// A pending timer of a conversation, by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimerEntry {
    pub name: String,
    /// Epoch ms it is due at.
    pub due: i64,
}

/// A pending timer as stored in the due-ordered timer index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimerRecord {
    pub page_id: String,
    pub psid: String,
    pub name: String,
    pub due: i64,
    #[serde(default)]
    pub payload: Value,
    /// The conversation's channel (a cluster fires a timer on the node owning its
    /// partition, which the channel is part of).
    #[serde(default, skip_serializing_if = "Channel::is_messenger")]
    pub channel: Channel,
}

impl ConversationRecord {
    pub fn new(key: &ConversationKey) -> Self {
        ConversationRecord {
            page_id: key.page_id.clone(),
            psid: key.psid.clone(),
            state: Value::Null,
            delivered_watermark: 0,
            read_watermark: 0,
            last_activity: 0,
            last_user_message: 0,
            inbound_count: 0,
            outbound_count: 0,
            next_entry: 0,
            undelivered_from: 0,
            unread_from: 0,
            timers: Vec::new(),
            window_opened_at: 0,
            thread_elsewhere: false,
            paused: false,
            forgotten_at: 0,
            channel: Channel::Messenger,
            stream_seq: 0,
        }
    }

    pub fn key(&self) -> ConversationKey {
        ConversationKey::new(self.page_id.clone(), self.psid.clone())
    }

    /// Reserves the next transcript sequence number.
    pub fn take_entry_seq(&mut self) -> u64 {
        let seq = self.next_entry;
        self.next_entry += 1;
        seq
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    In,
    Out,
}

/// Where a transcript entry stands. Outbound: `queued` → `sent` → `delivered` → `read`,
/// or `failed`. Inbound: `handled` or `failed` (the flow could not handle it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Queued,
    Sent,
    Delivered,
    Read,
    Failed,
    Handled,
}

impl Status {
    /// Progress rank of outbound statuses; a status update never lowers it, so a late
    /// "sent" from the sender cannot undo a "read" from a watermark that raced ahead.
    fn rank(self) -> u8 {
        match self {
            Status::Queued => 0,
            Status::Sent | Status::Handled => 1,
            Status::Delivered => 2,
            Status::Read => 3,
            Status::Failed => 4,
        }
    }
}

/// Why an outbound message or an inbound event failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// Graph API error code, when the Graph API gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subcode: Option<i64>,
    pub message: String,
    /// The Graph error's `fbtrace_id`, which Meta support asks for. Absent from records
    /// of earlier builds and from failures the Graph API did not explain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fbtrace_id: Option<String>,
}

impl Failure {
    pub fn reason(message: impl Into<String>) -> Self {
        Failure {
            code: None,
            subcode: None,
            message: message.into(),
            fbtrace_id: None,
        }
    }
}

/// One line of a conversation: an event from Facebook or a message from the page.
///
/// Stored with short field names (the long ones of earlier builds are still read) and
/// without empty fields: transcripts are most of the data directory. What `inspect` and
/// the admin endpoint show is `inspect::TranscriptLine`, with the long names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TranscriptEntry {
    #[serde(rename = "d", alias = "direction")]
    pub direction: Direction,
    /// Facebook's message id: the inbound `mid`, or the `message_id` the Send API returned.
    #[serde(
        default,
        rename = "m",
        alias = "mid",
        skip_serializing_if = "Option::is_none"
    )]
    pub mid: Option<String>,
    /// Inbound: Facebook's event time. Outbound: when the flow decided it (local ms).
    #[serde(rename = "t", alias = "timestamp")]
    pub timestamp: i64,
    /// Short event or reply kind (`text`, `postback`, `quick_reply`, `echo`, `typing_on`...).
    #[serde(rename = "k", alias = "kind")]
    pub kind: String,
    #[serde(
        default,
        rename = "x",
        alias = "text",
        skip_serializing_if = "Option::is_none"
    )]
    pub text: Option<String>,
    #[serde(rename = "s", alias = "status")]
    pub status: Status,
    /// Outbound: local time (ms) the Send API accepted it.
    #[serde(
        default,
        rename = "sa",
        alias = "sent_at",
        skip_serializing_if = "Option::is_none"
    )]
    pub sent_at: Option<i64>,
    /// Outbound: Facebook's time (ms) of the message, from its echo; watermarks compare to it.
    #[serde(
        default,
        rename = "et",
        alias = "echo_timestamp",
        skip_serializing_if = "Option::is_none"
    )]
    pub echo_timestamp: Option<i64>,
    #[serde(
        default,
        rename = "e",
        alias = "error",
        skip_serializing_if = "Option::is_none"
    )]
    pub error: Option<Failure>,
    /// Inbound: a payload worth keeping (postback/quick reply payload, attachment types,
    /// or the raw JSON of an event kind the engine does not know).
    #[serde(
        default,
        rename = "p",
        alias = "payload",
        skip_serializing_if = "Option::is_none"
    )]
    pub payload: Option<Value>,
    /// Inbound: Facebook stamped it before a user event already handled (it arrived out
    /// of order, e.g. redelivered after a failure); it was handled on arrival all the same.
    #[serde(
        default,
        rename = "l",
        alias = "late",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub late: bool,
    /// Done by an operator through the admin API (an action, or a message sent as the page).
    #[serde(default, rename = "op", skip_serializing_if = "std::ops::Not::not")]
    pub by_operator: bool,
}

/// Outbound entry kinds that are not messages the user receives (sender actions, durable
/// callbacks): no delivery or read receipt ever covers them.
pub const NO_RECEIPT_KINDS: [&str; 4] = ["typing_on", "typing_off", "mark_seen", "callback"];

impl TranscriptEntry {
    /// A page message a delivery or read receipt may still cover.
    pub fn gets_receipts(&self) -> bool {
        self.direction == Direction::Out && !NO_RECEIPT_KINDS.contains(&self.kind.as_str())
    }
    /// A page message the flow decided, not yet sent.
    pub fn queued_out(kind: impl Into<String>, text: Option<String>, timestamp: i64) -> Self {
        TranscriptEntry {
            direction: Direction::Out,
            mid: None,
            timestamp,
            kind: kind.into(),
            text,
            status: Status::Queued,
            sent_at: None,
            echo_timestamp: None,
            error: None,
            payload: None,
            late: false,
            by_operator: false,
        }
    }

    /// Raises the status; returns whether it changed. `failed` is final here: only an
    /// operator's retry (`EntryChange::Requeue`) takes an entry back to `queued`.
    pub fn advance(&mut self, to: Status) -> bool {
        if self.status == Status::Failed || to.rank() <= self.status.rank() {
            return false;
        }
        self.status = to;
        true
    }

    /// The time a watermark is compared with: Facebook's own clock when the echo gave it.
    pub fn watermark_time(&self) -> Option<i64> {
        self.echo_timestamp.or(self.sent_at)
    }
}

/// An event a flow failed on, kept whole until an operator replays or skips it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum FailedEvent {
    /// A webhook event: its messaging item as Facebook sent it.
    Messenger {
        raw: Value,
        #[serde(default)]
        standby: bool,
    },
    /// A timer of the flow: its name, due time and payload.
    Timer {
        name: String,
        due: i64,
        payload: Value,
    },
}

/// What an outbox item delivers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outgoing {
    /// A Send API call for the conversation's user.
    Send(SendRequest),
    /// A JSON POST to a URL the flow chose (an interview's results, a CRM hook...).
    Callback { url: String, body: Value },
    /// A handover protocol call for the conversation's user: pass the thread to
    /// `target_app_id`, or (`None`) take it back.
    ThreadControl {
        psid: String,
        target_app_id: Option<String>,
    },
}

/// A reply committed by a conversation and owed to the Send API (or a callback URL).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxRecord {
    pub page_id: String,
    pub psid: String,
    /// The transcript entry this reply updates when it is sent or fails.
    pub entry: u64,
    pub outgoing: Outgoing,
    #[serde(default)]
    pub attempts: u32,
    /// Local time (ms) the flow decided it.
    pub created_at: i64,
    /// The conversation's channel (a cluster partitions by it).
    #[serde(default, skip_serializing_if = "Channel::is_messenger")]
    pub channel: Channel,
}

impl OutboxRecord {
    pub fn conversation(&self) -> ConversationKey {
        ConversationKey::new(self.page_id.clone(), self.psid.clone())
    }
}

/// Where a sent message id lives in the transcript: the value of the legacy `x` index
/// (`keys::SENT`), read only to prune it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentRef {
    pub psid: String,
    pub entry: u64,
    /// Local time (ms) the message id was recorded: the index is pruned after the
    /// dedup retention (receipts and echoes come within days).
    #[serde(default)]
    pub at: i64,
}

/// A data-deletion request from Meta, under its confirmation code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletionRequest {
    /// The random confirmation code (32 hex digits) the request was answered with.
    pub code: String,
    /// The id Meta named; the conversations whose psid it is are forgotten.
    pub user_id: String,
    /// Local time (epoch ms) it arrived.
    pub requested_at: i64,
    pub status: DeletionStatus,
    /// How many conversations (one per page) were forgotten for it.
    #[serde(default)]
    pub conversations_forgotten: u64,
    /// Local time (epoch ms) its status last changed.
    #[serde(default)]
    pub updated_at: i64,
}

/// What became of a deletion request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeletionStatus {
    /// Recorded, its conversations not forgotten yet (or the process stopped meanwhile).
    Pending,
    /// Every conversation of the user was forgotten.
    Completed,
    /// No conversation had that id: nothing was stored under it.
    NoData,
    /// A conversation could not be forgotten in time; Meta was answered with an error.
    Failed,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out_entry(status: Status) -> TranscriptEntry {
        TranscriptEntry {
            status,
            ..TranscriptEntry::queued_out("text", Some("hi".into()), 1)
        }
    }

    #[test]
    fn a_status_only_moves_forward() {
        let mut entry = out_entry(Status::Read);
        assert!(!entry.advance(Status::Sent));
        assert_eq!(entry.status, Status::Read);
        let mut entry = out_entry(Status::Queued);
        assert!(entry.advance(Status::Delivered));
        assert_eq!(entry.status, Status::Delivered);
    }

    #[test]
    fn failed_is_final() {
        let mut entry = out_entry(Status::Failed);
        assert!(!entry.advance(Status::Read));
        assert_eq!(entry.status, Status::Failed);
    }

    #[test]
    fn the_echo_timestamp_wins_over_the_local_send_time() {
        let mut entry = out_entry(Status::Sent);
        entry.sent_at = Some(2_000);
        assert_eq!(entry.watermark_time(), Some(2_000));
        entry.echo_timestamp = Some(1_500);
        assert_eq!(entry.watermark_time(), Some(1_500));
    }

    #[test]
    fn statuses_serialise_as_the_documented_lowercase_words() {
        let words: Vec<String> = [
            Status::Queued,
            Status::Sent,
            Status::Delivered,
            Status::Read,
            Status::Failed,
        ]
        .iter()
        .map(|s| serde_json::to_string(s).unwrap())
        .collect();
        assert_eq!(
            words,
            [
                "\"queued\"",
                "\"sent\"",
                "\"delivered\"",
                "\"read\"",
                "\"failed\""
            ]
        );
    }

    #[test]
    fn a_conversation_record_is_stored_without_its_key_zeros_or_long_names() {
        let mut record = ConversationRecord::new(&ConversationKey::new("1000", "42"));
        record.state = serde_json::json!({"messages": 1});
        record.next_entry = 2;
        record.inbound_count = 1;
        let stored = serde_json::to_string(&record).unwrap();
        assert_eq!(stored, r#"{"s":{"messages":1},"ni":1,"ne":2}"#);
    }

    #[test]
    fn records_written_by_earlier_builds_are_still_read() {
        let conversation = r#"{"page_id":"1000","psid":"42","state":{"step":2},
            "delivered_watermark":5,"read_watermark":4,"last_activity":9,
            "last_user_message":8,"inbound_count":3,"outbound_count":2,"next_entry":5,
            "unread_out":[1,3],"timers":[{"name":"nudge","due":99}],
            "window_opened_at":7,"thread_elsewhere":true}"#;
        let record: ConversationRecord = serde_json::from_str(conversation).unwrap();
        assert_eq!(record.state, serde_json::json!({"step": 2}));
        assert_eq!((record.delivered_watermark, record.read_watermark), (5, 4));
        assert_eq!((record.last_activity, record.last_user_message), (9, 8));
        assert_eq!((record.inbound_count, record.outbound_count), (3, 2));
        assert_eq!((record.next_entry, record.window_opened_at), (5, 7));
        assert_eq!(record.timers[0].name, "nudge");
        assert!(record.thread_elsewhere);
        assert_eq!((record.undelivered_from, record.unread_from), (0, 0));

        let entry = r#"{"direction":"out","mid":"m.1","timestamp":10,"kind":"text",
            "text":"hi","status":"read","sent_at":11,"echo_timestamp":12,"late":true}"#;
        let entry: TranscriptEntry = serde_json::from_str(entry).unwrap();
        assert_eq!(entry.direction, Direction::Out);
        assert_eq!(entry.mid.as_deref(), Some("m.1"));
        assert_eq!(
            (entry.timestamp, entry.sent_at, entry.echo_timestamp),
            (10, Some(11), Some(12))
        );
        assert_eq!(
            (entry.kind.as_str(), entry.text.as_deref()),
            ("text", Some("hi"))
        );
        assert_eq!(entry.status, Status::Read);
        assert!(entry.late);
    }

    #[test]
    fn a_failure_keeps_its_graph_trace_id_and_one_stored_without_it_still_reads() {
        let earlier = r#"{"code":551,"subcode":1545041,"message":"unavailable"}"#;
        let old: Failure = serde_json::from_str(earlier).unwrap();
        assert_eq!((old.code, old.fbtrace_id.as_deref()), (Some(551), None));
        let traced = Failure {
            fbtrace_id: Some("AbC123".into()),
            ..old
        };
        let stored = serde_json::to_string(&traced).unwrap();
        assert_eq!(
            stored,
            r#"{"code":551,"subcode":1545041,"message":"unavailable","fbtrace_id":"AbC123"}"#
        );
        assert_eq!(serde_json::from_str::<Failure>(&stored).unwrap(), traced);
    }

    #[test]
    fn a_transcript_entry_round_trips_through_its_short_form() {
        let mut entry = out_entry(Status::Sent);
        entry.mid = Some("m.2".into());
        entry.sent_at = Some(5);
        let stored = serde_json::to_string(&entry).unwrap();
        assert_eq!(
            stored,
            r#"{"d":"out","m":"m.2","t":1,"k":"text","x":"hi","s":"sent","sa":5}"#
        );
        assert_eq!(
            serde_json::from_str::<TranscriptEntry>(&stored).unwrap(),
            entry
        );
    }
}
