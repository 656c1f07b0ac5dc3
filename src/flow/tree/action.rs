//! What a user did, as far as an interview is concerned: typed or tapped an answer,
//! opened an m.me link (a `ref`), or said stop. Built from the Flow API's
//! [`Input`] view of an event.
//!
//! Owns the reading of events and the stop words. Must not decide anything about the
//! interview, and never fails: an event an interview ignores is `None`.

use serde_json::Value;

use super::format::Question;
use crate::flow::Input;
use crate::messenger::inbound::{EventKind, InboundEvent};

/// Words that end an interview, compared without case and trailing `.`/`!`.
pub const STOP_WORDS: &[&str] = &["stop", "cancel"];

/// What the user did, as far as an interview is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct UserAction<'a> {
    /// Typed text, or the title of the quick reply or button tapped.
    pub text: Option<&'a str>,
    /// The quick-reply or postback payload.
    pub payload: Option<&'a str>,
    /// The `ref` of an m.me link or ad the user came through.
    pub referral: Option<&'a str>,
    /// False when the user only opened a link (a referral, a postback carrying one):
    /// nothing to take as an answer.
    pub is_answer: bool,
}

impl<'a> UserAction<'a> {
    /// The action in `event`; `None` for what an interview ignores (timers, others).
    pub fn from_event(event: &'a InboundEvent) -> Option<UserAction<'a>> {
        let answer = |text, payload| UserAction {
            text,
            payload,
            referral: message_referral(event),
            is_answer: true,
        };
        let action = match event.input() {
            Input::Text(text) => answer(Some(text), None),
            Input::QuickReply { payload, text } => answer(text, Some(payload)),
            Input::Attachments(_) => answer(None, None),
            Input::Postback {
                payload,
                title,
                referral,
            } => UserAction {
                text: title,
                payload: Some(payload).filter(|p| !p.is_empty()),
                referral,
                is_answer: referral.is_none(),
            },
            Input::Referral(referral) => UserAction {
                text: None,
                payload: None,
                referral: Some(referral),
                is_answer: false,
            },
            Input::Other => return None,
        };
        Some(action)
    }

    pub fn is_stop(&self) -> bool {
        let is_stop_word = |said: &str| {
            let said = said.trim().trim_end_matches(['.', '!']).trim();
            STOP_WORDS.iter().any(|w| w.eq_ignore_ascii_case(said))
        };
        self.is_answer
            && (self.text.is_some_and(is_stop_word) || self.payload.is_some_and(is_stop_word))
    }

    /// The answer as the user wrote it, for the question/answer pairs.
    pub fn raw_answer(&self) -> &'a str {
        self.text.or(self.payload).unwrap_or_default()
    }

    /// The normalized answer: the payload if it fits `question`, else the text.
    pub fn value_for(&self, question: &Question) -> Option<Value> {
        let parse = |s: &str| question.validation.parse(s);
        self.payload
            .and_then(parse)
            .or_else(|| self.text.and_then(parse))
    }
}

/// The `ref` a message carries when the user wrote from an ad or a shop.
fn message_referral(event: &InboundEvent) -> Option<&str> {
    match &event.kind {
        EventKind::Message(message) => message.referral.as_ref()?.ref_.as_deref(),
        _ => None,
    }
}
