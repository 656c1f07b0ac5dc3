//! Read-only views of persisted conversations, shared by `colloquy inspect` and the
//! admin endpoint, and their text rendering.
//!
//! The JSON document of one conversation is a stable interface (`inspect --json`):
//! `psid`, `page_id`, `state`, `delivered_watermark`, `read_watermark` and `transcript`
//! entries with `direction`, `mid`, `timestamp`, `kind`, `text`, `status`. Fields are
//! only ever added. Nothing here writes to the store or shows a secret.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;

use crate::event::Channel;

use crate::store::{
    ConversationKey, ConversationRecord, Direction, Failure, ListFilter, Status, Store, StoreError,
    TimerEntry,
};

#[derive(Debug, Error)]
pub enum InspectError {
    #[error("no conversation with psid {psid}")]
    NotFound { psid: String },
    #[error("psid {psid} talks to several pages ({pages}); choose one with --page")]
    Ambiguous { psid: String, pages: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One line of `colloquy inspect`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConversationSummary {
    pub psid: String,
    pub page_id: String,
    /// `messenger` or `instagram`.
    #[serde(default)]
    pub channel: Channel,
    /// Local time (epoch ms) of the last event handled.
    pub last_activity: i64,
    pub inbound_count: u64,
    pub outbound_count: u64,
    pub delivered_watermark: i64,
    pub read_watermark: i64,
    /// Handed to a human by an operator.
    #[serde(default)]
    pub paused: bool,
    /// Keeps replies that failed, for an operator's retry.
    #[serde(default)]
    pub failed_replies: bool,
}

/// `colloquy inspect PSID --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConversationDocument {
    pub psid: String,
    pub page_id: String,
    /// `messenger` or `instagram`.
    #[serde(default)]
    pub channel: Channel,
    pub state: Value,
    pub delivered_watermark: i64,
    pub read_watermark: i64,
    pub last_activity: i64,
    pub last_user_message: i64,
    /// Handed to a human by an operator: the flow does not answer.
    #[serde(default)]
    pub paused: bool,
    pub transcript: Vec<TranscriptLine>,
    /// Timers the flow set that have not fired yet (name, epoch ms due).
    #[serde(default)]
    pub timers: Vec<TimerEntry>,
    /// Transcript entries of events the flow failed on, kept for a replay or a skip.
    #[serde(default)]
    pub failed_events: Vec<u64>,
    /// Replies still in the outbox (being sent or retried), oldest first. Given for one
    /// conversation's document; empty in an export (where it would cost a scan each).
    #[serde(default)]
    pub owed: Vec<OwedReply>,
}

/// A reply the outbox still owes: its transcript entry, the attempts it has had, and
/// when it was decided (epoch ms).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OwedReply {
    pub entry: u64,
    pub attempts: u32,
    pub queued_at: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TranscriptLine {
    pub seq: u64,
    pub direction: Direction,
    pub mid: Option<String>,
    pub timestamp: i64,
    pub kind: String,
    pub text: Option<String>,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Failure>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
    /// Arrived after a later-stamped user event had been handled.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub late: bool,
    /// Done by an operator through the admin API.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub by_operator: bool,
}

fn summary(record: ConversationRecord, failed_replies: bool) -> ConversationSummary {
    ConversationSummary {
        psid: record.psid,
        page_id: record.page_id,
        channel: record.channel,
        last_activity: record.last_activity,
        inbound_count: record.inbound_count,
        outbound_count: record.outbound_count,
        delivered_watermark: record.delivered_watermark,
        read_watermark: record.read_watermark,
        paused: record.paused,
        failed_replies,
    }
}

/// One page of the admin list: `GET /admin/conversations`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConversationListPage {
    pub conversations: Vec<ConversationSummary>,
    /// Where the next page starts; `None` after the last.
    pub next_cursor: Option<String>,
}

/// Up to `limit` conversations matching `filter`, most recently active first, from the
/// activity index; `None` for a cursor this store did not make.
pub fn list_page(
    store: &Store,
    filter: &ListFilter,
    cursor: Option<&str>,
    limit: usize,
) -> Result<Option<ConversationListPage>, StoreError> {
    let Some(page) = store.list_conversations(filter, cursor, limit)? else {
        return Ok(None);
    };
    Ok(Some(ConversationListPage {
        conversations: page
            .conversations
            .into_iter()
            .zip(page.failed_replies)
            .map(|(record, failed)| summary(record, failed))
            .collect(),
        next_cursor: page.next_cursor,
    }))
}

/// Every conversation, most recently active first.
pub fn list(store: &Store) -> Result<Vec<ConversationSummary>, StoreError> {
    let mut all = Vec::new();
    for record in store.conversations()? {
        let failed = !store.failed_replies(&record.key())?.is_empty();
        all.push(summary(record, failed));
    }
    all.sort_by_key(|c| std::cmp::Reverse(c.last_activity));
    Ok(all)
}

/// The record of one conversation by psid (and page, when the psid talks to several pages).
pub fn find(
    store: &Store,
    psid: &str,
    page_id: Option<&str>,
) -> Result<ConversationRecord, InspectError> {
    let record = match page_id {
        Some(page) => store
            .conversation(&ConversationKey::new(page, psid))?
            .filter(|record| !is_tombstone(record)),
        None => {
            let mut matches = store.conversations_of(psid)?;
            matches.retain(|record| !is_tombstone(record));
            if matches.len() > 1 {
                let pages: Vec<_> = matches.iter().map(|r| r.page_id.as_str()).collect();
                return Err(InspectError::Ambiguous {
                    psid: psid.into(),
                    pages: pages.join(", "),
                });
            }
            matches.pop()
        }
    };
    record.ok_or_else(|| InspectError::NotFound { psid: psid.into() })
}

/// A conversation an operator forgot and that has had no event since: nothing to show.
pub(crate) fn is_tombstone(record: &ConversationRecord) -> bool {
    record.forgotten_at > 0 && record.last_activity <= record.forgotten_at
}

/// One conversation by psid (and page, when the psid talks to several pages), with its
/// whole transcript or only the `last` entries.
pub fn document(
    store: &Store,
    psid: &str,
    page_id: Option<&str>,
    last: Option<usize>,
) -> Result<ConversationDocument, InspectError> {
    let record = find(store, psid, page_id)?;
    let owed = owed_replies(store, &record)?;
    let mut doc = document_of(store, record, last)?;
    doc.owed = owed;
    Ok(doc)
}

/// The outbox items of one conversation (the outbox is small: only what is unsent).
fn owed_replies(store: &Store, record: &ConversationRecord) -> Result<Vec<OwedReply>, StoreError> {
    Ok(store
        .pending_outbox()?
        .into_iter()
        .filter(|(_, item)| item.page_id == record.page_id && item.psid == record.psid)
        .map(|(_, item)| OwedReply {
            entry: item.entry,
            attempts: item.attempts,
            queued_at: item.created_at,
        })
        .collect())
}

/// The document of a conversation whose record is in hand (with its whole transcript, or
/// only the `last` entries): what `document` answers, without finding the record again.
pub fn document_of(
    store: &Store,
    record: ConversationRecord,
    last: Option<usize>,
) -> Result<ConversationDocument, StoreError> {
    let entries = match last {
        Some(n) => store.transcript_tail(&record.key(), n)?,
        None => store.transcript(&record.key())?,
    };
    assemble(store, record, entries)
}

/// One conversation with the `last` transcript entries numbered below `before`: the page
/// of its transcript before one already shown, for paging back from the newest entry.
pub fn document_before(
    store: &Store,
    psid: &str,
    page_id: Option<&str>,
    before: u64,
    last: usize,
) -> Result<ConversationDocument, InspectError> {
    let record = find(store, psid, page_id)?;
    let from = before.saturating_sub(last as u64);
    let entries = store.transcript_range(&record.key(), from, before)?;
    let owed = owed_replies(store, &record)?;
    let mut doc = assemble(store, record, entries)?;
    doc.owed = owed;
    Ok(doc)
}

fn assemble(
    store: &Store,
    record: ConversationRecord,
    entries: Vec<(u64, crate::store::TranscriptEntry)>,
) -> Result<ConversationDocument, StoreError> {
    let failed_events = store
        .failed_events(&record.key())?
        .into_iter()
        .map(|(entry, _)| entry)
        .collect();
    let transcript = entries
        .into_iter()
        .map(|(seq, e)| TranscriptLine {
            seq,
            direction: e.direction,
            mid: e.mid,
            timestamp: e.echo_timestamp.or(e.sent_at).unwrap_or(e.timestamp),
            kind: e.kind,
            text: e.text,
            status: e.status,
            error: e.error,
            payload: e.payload,
            late: e.late,
            by_operator: e.by_operator,
        })
        .collect();
    Ok(ConversationDocument {
        psid: record.psid,
        page_id: record.page_id,
        channel: record.channel,
        state: record.state,
        delivered_watermark: record.delivered_watermark,
        read_watermark: record.read_watermark,
        last_activity: record.last_activity,
        last_user_message: record.last_user_message,
        paused: record.paused,
        transcript,
        timers: record.timers,
        failed_events,
        owed: Vec::new(),
    })
}

/// A table of conversations for a terminal.
pub fn render_list(conversations: &[ConversationSummary]) -> String {
    if conversations.is_empty() {
        return "no conversations stored\n".into();
    }
    let mut out = format!(
        "{:<20} {:<20} {:<24} {:>6} {:>6}\n",
        "PSID", "PAGE", "LAST ACTIVITY (UTC)", "IN", "OUT"
    );
    for c in conversations {
        let _ = writeln!(
            out,
            "{:<20} {:<20} {:<24} {:>6} {:>6}",
            c.psid,
            c.page_id,
            format_ms(c.last_activity),
            c.inbound_count,
            c.outbound_count
        );
    }
    out
}

/// One conversation for a terminal: state, watermarks, transcript with statuses.
pub fn render_document(doc: &ConversationDocument) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "conversation  psid {} on page {}",
        doc.psid, doc.page_id
    );
    let _ = writeln!(out, "last activity {}", format_ms(doc.last_activity));
    let _ = writeln!(
        out,
        "delivered up to {}",
        format_ms(doc.delivered_watermark)
    );
    let _ = writeln!(out, "read up to      {}", format_ms(doc.read_watermark));
    let _ = writeln!(out, "state         {}", doc.state);
    let _ = writeln!(out, "transcript ({} entries)", doc.transcript.len());
    for line in &doc.transcript {
        let arrow = match line.direction {
            Direction::In => "<-",
            Direction::Out => "->",
        };
        let status = serde_json::to_value(line.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let _ = write!(
            out,
            "  {:>4} {} {} {:<13} {:<9} {}",
            line.seq,
            format_ms(line.timestamp),
            arrow,
            line.kind,
            status,
            line.text.as_deref().unwrap_or("")
        );
        if let Some(error) = &line.error {
            let _ = write!(out, "  [error: {}]", describe_failure(error));
        }
        out.push('\n');
    }
    out
}

fn describe_failure(failure: &Failure) -> String {
    match (failure.code, failure.subcode) {
        (Some(code), Some(sub)) => format!("#{code}/{sub} {}", failure.message),
        (Some(code), None) => format!("#{code} {}", failure.message),
        _ => failure.message.clone(),
    }
}

/// Epoch milliseconds as `YYYY-MM-DD HH:MM:SS.mmm` (UTC); `-` for 0.
pub fn format_ms(ms: i64) -> String {
    if ms <= 0 {
        return "-".into();
    }
    let (days, rem) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{:03}",
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_milliseconds_render_as_utc_dates() {
        assert_eq!(format_ms(1_501_316_911_106), "2017-07-29 08:28:31.106");
        assert_eq!(format_ms(0), "-");
        assert_eq!(format_ms(951_782_400_000), "2000-02-29 00:00:00.000");
    }

    #[test]
    fn the_json_document_has_the_stable_keys() {
        let doc = ConversationDocument {
            psid: "1".into(),
            page_id: "2".into(),
            channel: Default::default(),
            state: Value::Null,
            delivered_watermark: 3,
            read_watermark: 4,
            last_activity: 5,
            last_user_message: 6,
            paused: false,
            transcript: vec![TranscriptLine {
                seq: 0,
                direction: Direction::Out,
                mid: Some("m".into()),
                timestamp: 7,
                kind: "text".into(),
                text: Some("hi".into()),
                status: Status::Read,
                error: None,
                payload: None,
                late: false,
                by_operator: false,
            }],
            timers: Vec::new(),
            failed_events: Vec::new(),
            owed: Vec::new(),
        };
        let value = serde_json::to_value(&doc).unwrap();
        for key in [
            "psid",
            "page_id",
            "state",
            "delivered_watermark",
            "read_watermark",
            "transcript",
        ] {
            assert!(value.get(key).is_some(), "{key}");
        }
        let line = &value["transcript"][0];
        for key in ["direction", "mid", "timestamp", "kind", "text", "status"] {
            assert!(line.get(key).is_some(), "{key}");
        }
        assert_eq!(line["direction"], "out");
        assert_eq!(line["status"], "read");
    }
}
