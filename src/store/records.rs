//! The records colloquy persists: journal entries, conversations, transcript entries and
//! outbox items, with their serde encoding.
//!
//! These are plain data; the rules of how they change (watermarks only move forward, an
//! outbound status never goes back) live in methods here so every writer applies the same
//! rule. Nothing here does IO.

use serde::{Deserialize, Serialize};
use serde_json::Value;

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

impl std::fmt::Display for ConversationKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "page {} psid {}", self.page_id, self.psid)
    }
}

/// One acknowledged inbound event waiting to be handled, exactly as Facebook sent it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JournalRecord {
    pub page_id: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub standby: bool,
    /// The `messaging[]`/`standby[]` item, byte-for-byte meaning preserved.
    pub event: Value,
}

/// What is kept per conversation besides its transcript.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConversationRecord {
    pub page_id: String,
    pub psid: String,
    /// The flow's own state, as its serde type wrote it; `null` before the first turn.
    #[serde(default)]
    pub state: Value,
    /// Every page message at or before this time (ms) is delivered. Only moves forward.
    #[serde(default)]
    pub delivered_watermark: i64,
    /// Every page message at or before this time (ms) is read. Only moves forward.
    #[serde(default)]
    pub read_watermark: i64,
    /// Local time (ms) of the last event handled.
    #[serde(default)]
    pub last_activity: i64,
    /// Facebook time (ms) of the last message from the user: opens the 24 h window.
    #[serde(default)]
    pub last_user_message: i64,
    #[serde(default)]
    pub inbound_count: u64,
    #[serde(default)]
    pub outbound_count: u64,
    /// Sequence number the next transcript entry gets.
    #[serde(default)]
    pub next_entry: u64,
    /// Every transcript entry before this one is settled for delivery receipts (inbound,
    /// not a message, delivered, read or failed): a delivery watermark looks from here on,
    /// so receipts never scan the whole transcript and the record stays small.
    #[serde(default)]
    pub undelivered_from: u64,
    /// Likewise for read receipts: every entry before this one is settled for them.
    #[serde(default)]
    pub unread_from: u64,
    /// Timers the flow scheduled and that have not fired or been cancelled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub timers: Vec<TimerEntry>,
    /// Local time (ms) the user last did something: the 24-hour window runs from here.
    #[serde(default)]
    pub window_opened_at: i64,
    /// Another app took control of the thread (handover protocol): the flow does not run
    /// and nothing is sent until control is passed back.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub thread_elsewhere: bool,
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
}

impl Failure {
    pub fn reason(message: impl Into<String>) -> Self {
        Failure {
            code: None,
            subcode: None,
            message: message.into(),
        }
    }
}

/// One line of a conversation: an event from Facebook or a message from the page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TranscriptEntry {
    pub direction: Direction,
    /// Facebook's message id: the inbound `mid`, or the `message_id` the Send API returned.
    #[serde(default)]
    pub mid: Option<String>,
    /// Inbound: Facebook's event time. Outbound: when the flow decided it (local ms).
    pub timestamp: i64,
    /// Short event or reply kind (`text`, `postback`, `quick_reply`, `echo`, `typing_on`...).
    pub kind: String,
    #[serde(default)]
    pub text: Option<String>,
    pub status: Status,
    /// Outbound: local time (ms) the Send API accepted it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<i64>,
    /// Outbound: Facebook's time (ms) of the message, from its echo; watermarks compare to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub echo_timestamp: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Failure>,
    /// Inbound: a payload worth keeping (postback/quick reply payload, attachment types,
    /// or the raw JSON of an event kind the engine does not know).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
    /// Inbound: Facebook stamped it before a user event already handled (it arrived out
    /// of order, e.g. redelivered after a failure); it was handled on arrival all the same.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub late: bool,
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
        }
    }

    /// Raises the status; returns whether it changed. `failed` is final.
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

/// What an outbox item delivers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outgoing {
    /// A Send API call for the conversation's user.
    Send(SendRequest),
    /// A JSON POST to a URL the flow chose (an interview's results, a CRM hook...).
    Callback { url: String, body: Value },
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
}
