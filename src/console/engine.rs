//! The console's two wires into the running engine, both plain HTTP as in production:
//! signed webhook POSTs (as Facebook sends them) and the admin endpoint (as
//! `colloquy inspect` reads it). Also decides, from the stored transcript, when the
//! engine has finished with one user message.
//!
//! It never touches the store directly: the running engine holds it.

use serde_json::Value;
use thiserror::Error;

use super::events::{Parties, UserAction};
use crate::clock::now_ms;
use crate::inspect::{ConversationDocument, TranscriptLine};
use crate::messenger::outbound::SendRequest;
use crate::store::{Direction, Status};
use crate::webhook::signature::{sign_sha256, HEADER_SHA256};
use crate::RunningApp;

/// Largest admin answer read; a long console transcript stays far below it.
const MAX_DOCUMENT_BYTES: usize = 64 * 1024 * 1024;
/// Largest refusal body read from the webhook, for the message shown to the person.
const MAX_REFUSAL_BYTES: usize = 64 * 1024;

/// Why a call into the engine did not work.
#[derive(Debug, Error)]
pub enum EngineError {
    #[error("cannot reach the engine: {0}")]
    Unreachable(String),
    #[error("the webhook answered HTTP {status}: {body}")]
    Refused { status: u16, body: String },
    #[error("the admin endpoint answered HTTP {status}: {body}")]
    Admin { status: u16, body: String },
    #[error("unreadable answer from the admin endpoint: {0}")]
    Unreadable(String),
}

/// Secrets made up for one console session; only the engine and the console know them.
pub struct SessionSecrets {
    pub app_secret: String,
    pub verify_token: String,
    pub admin_token: String,
}

impl SessionSecrets {
    pub fn generate() -> SessionSecrets {
        let random = || format!("{:032x}", rand::random::<u128>());
        SessionSecrets {
            app_secret: random(),
            verify_token: random(),
            admin_token: random(),
        }
    }
}

/// Where the engine listens, and what the console needs to talk to it.
pub struct EngineLink {
    webhook_url: String,
    admin_url: String,
    app_secret: String,
    admin_token: String,
    parties: Parties,
    /// Keeps the user's `mid`s unique across sessions on one data directory (the engine
    /// skips a `mid` it has handled before).
    mid_prefix: String,
    next_mid: u64,
    client: awc::Client,
}

impl EngineLink {
    pub fn new(
        app: &RunningApp,
        webhook_path: &str,
        secrets: &SessionSecrets,
        parties: Parties,
        session_id: &str,
    ) -> EngineLink {
        EngineLink {
            webhook_url: format!("http://{}{webhook_path}", app.addr()),
            admin_url: format!("http://{}", app.admin_addr()),
            app_secret: secrets.app_secret.clone(),
            admin_token: secrets.admin_token.clone(),
            parties,
            mid_prefix: format!("user_{session_id}"),
            next_mid: 1,
            client: awc::Client::new(),
        }
    }

    /// Posts what the user did; returns its `mid` once the webhook acknowledged it
    /// (acknowledged means journalled and flushed: the engine will handle it).
    pub async fn send_user_action(&mut self, action: &UserAction) -> Result<String, EngineError> {
        let mid = format!("m_{}_{}", self.mid_prefix, self.next_mid);
        self.next_mid += 1;
        let now = now_ms();
        let item = self.parties.user_event(action, &mid, now);
        self.post(self.parties.envelope(vec![item], now)).await?;
        Ok(mid)
    }

    /// Posts Facebook's echo, delivery and read of a page message the user has seen.
    pub async fn acknowledge(&self, request: &SendRequest, mid: &str) -> Result<(), EngineError> {
        let now = now_ms();
        let items = self.parties.after_delivery(request, mid, now);
        self.post(self.parties.envelope(items, now)).await
    }

    async fn post(&self, body: String) -> Result<(), EngineError> {
        let signature = sign_sha256(self.app_secret.as_bytes(), body.as_bytes());
        let mut response = self
            .client
            .post(&self.webhook_url)
            .insert_header(("Content-Type", "application/json"))
            .insert_header((HEADER_SHA256, signature))
            .send_body(body)
            .await
            .map_err(|e| EngineError::Unreachable(e.to_string()))?;
        if response.status().is_success() {
            return Ok(());
        }
        let body = response
            .body()
            .limit(MAX_REFUSAL_BYTES)
            .await
            .unwrap_or_default();
        Err(EngineError::Refused {
            status: response.status().as_u16(),
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }

    /// The stored conversation of the console user; `None` before their first message.
    pub async fn conversation(&self) -> Result<Option<ConversationDocument>, EngineError> {
        // Both ids are plain tokens (`--psid` is validated, the page id is a constant),
        // so they need no escaping in the URL.
        let url = format!(
            "{}/admin/conversations/{}?page={}",
            self.admin_url, self.parties.psid, self.parties.page_id
        );
        let mut response = self
            .client
            .get(url)
            .bearer_auth(&self.admin_token)
            .send()
            .await
            .map_err(|e| EngineError::Unreachable(e.to_string()))?;
        let status = response.status().as_u16();
        let body = response
            .body()
            .limit(MAX_DOCUMENT_BYTES)
            .await
            .map_err(|e| EngineError::Unreachable(e.to_string()))?;
        match status {
            200 => serde_json::from_slice(&body)
                .map(Some)
                .map_err(|e| EngineError::Unreadable(e.to_string())),
            404 => Ok(None),
            _ => Err(EngineError::Admin {
                status,
                body: error_text(&body),
            }),
        }
    }
}

fn error_text(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned())
}

/// How far the engine is with one user message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TurnProgress {
    /// Not handled yet, or some reply still on its way (queued, or sent but not read).
    Pending,
    /// Handled, and every reply it queued has been sent and read, or has failed.
    /// Holds what went wrong, for the user to see.
    Settled { problems: Vec<String> },
}

/// Reads the transcript: the message `mid` is handled, and each later page entry is
/// final. A message Facebook gave a `mid` is final once `read` (the console posts the
/// read after showing it); one without (a sender action, a callback) once sent.
pub fn turn_progress(doc: &ConversationDocument, mid: &str) -> TurnProgress {
    let Some(position) = doc
        .transcript
        .iter()
        .position(|line| line.direction == Direction::In && line.mid.as_deref() == Some(mid))
    else {
        return TurnProgress::Pending;
    };
    let inbound = &doc.transcript[position];
    let replies = doc.transcript[position + 1..]
        .iter()
        .filter(|line| line.direction == Direction::Out);
    let mut problems = Vec::new();
    if inbound.status == Status::Failed {
        problems.push(format!(
            "your message was not handled: {}",
            failure(inbound)
        ));
    }
    for reply in replies {
        match reply.status {
            Status::Failed => {
                problems.push(format!("a {} reply failed: {}", reply.kind, failure(reply)))
            }
            Status::Read => {}
            Status::Sent if reply.mid.is_none() => {}
            _ => return TurnProgress::Pending,
        }
    }
    TurnProgress::Settled { problems }
}

fn failure(line: &TranscriptLine) -> String {
    line.error
        .as_ref()
        .map(|e| e.message.clone())
        .unwrap_or_else(|| "no reason recorded".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Failure;

    fn line(direction: Direction, mid: Option<&str>, status: Status) -> TranscriptLine {
        TranscriptLine {
            seq: 0,
            direction,
            mid: mid.map(str::to_string),
            timestamp: 1,
            kind: "text".into(),
            text: None,
            status,
            error: None,
            payload: None,
            late: false,
            by_operator: false,
        }
    }

    fn doc(transcript: Vec<TranscriptLine>) -> ConversationDocument {
        ConversationDocument {
            psid: "user".into(),
            page_id: "page".into(),
            channel: Default::default(),
            state: Value::Null,
            delivered_watermark: 0,
            read_watermark: 0,
            last_activity: 0,
            last_user_message: 0,
            paused: false,
            transcript,
            timers: Vec::new(),
            failed_events: Vec::new(),
            owed: Vec::new(),
        }
    }

    #[test]
    fn a_message_not_yet_in_the_transcript_is_pending() {
        let earlier = doc(vec![line(Direction::In, Some("m0"), Status::Handled)]);
        assert_eq!(turn_progress(&earlier, "m1"), TurnProgress::Pending);
    }

    #[test]
    fn replies_must_be_read_before_the_turn_settles() {
        let mut transcript = vec![
            line(Direction::In, Some("m1"), Status::Handled),
            line(Direction::Out, None, Status::Sent),
            line(Direction::Out, Some("out1"), Status::Delivered),
        ];
        assert_eq!(
            turn_progress(&doc(transcript.clone()), "m1"),
            TurnProgress::Pending
        );
        transcript[2].status = Status::Read;
        assert_eq!(
            turn_progress(&doc(transcript), "m1"),
            TurnProgress::Settled { problems: vec![] }
        );
    }

    #[test]
    fn a_queued_reply_keeps_the_turn_pending() {
        let transcript = vec![
            line(Direction::In, Some("m1"), Status::Handled),
            line(Direction::Out, None, Status::Queued),
        ];
        assert_eq!(turn_progress(&doc(transcript), "m1"), TurnProgress::Pending);
    }

    #[test]
    fn failures_settle_the_turn_and_are_reported() {
        let mut failed = line(Direction::In, Some("m1"), Status::Failed);
        failed.error = Some(Failure::reason("boom"));
        let settled = turn_progress(&doc(vec![failed]), "m1");
        assert_eq!(
            settled,
            TurnProgress::Settled {
                problems: vec!["your message was not handled: boom".into()]
            }
        );
    }
}
