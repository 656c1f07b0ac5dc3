//! Replies a flow can queue, checked against the Send API's limits when they are built.
//!
//! A reply that Facebook would refuse (empty or over-long text, too many quick replies,
//! a quick-reply title over 20 characters) is an error here, in the flow, with a message
//! that says which limit, rather than a permanent Graph error minutes later.

use serde_json::{json, Value};

use thiserror::Error;

use crate::event::Channel;
use crate::messenger::outbound::{OutAttachment, OutMessage, QuickReply, SenderAction};

/// Send API: `message.text` is at most 2000 characters.
pub const MAX_TEXT_CHARS: usize = 2000;
/// Send API: at most 13 quick replies per message.
pub const MAX_QUICK_REPLIES: usize = 13;
/// Send API: quick-reply titles are cut after 20 characters; we refuse rather than cut.
pub const MAX_QUICK_REPLY_TITLE_CHARS: usize = 20;
/// Send API: quick-reply payloads are at most 1000 characters.
pub const MAX_PAYLOAD_CHARS: usize = 1000;
/// Instagram Direct's longest text message (Messenger allows [`MAX_TEXT_CHARS`]).
pub const INSTAGRAM_MAX_TEXT_CHARS: usize = 1000;

#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum ReplyError {
    #[error("text is empty")]
    EmptyText,
    #[error("text has {chars} characters; the Send API allows at most {MAX_TEXT_CHARS}")]
    TextTooLong { chars: usize },
    #[error("{count} quick replies; the Send API allows at most {MAX_QUICK_REPLIES}")]
    TooManyQuickReplies { count: usize },
    #[error("quick reply title `{title}` must have 1 to {MAX_QUICK_REPLY_TITLE_CHARS} characters")]
    QuickReplyTitle { title: String },
    #[error("quick reply payload must have 1 to {MAX_PAYLOAD_CHARS} characters")]
    QuickReplyPayload,
    #[error("attachment url `{url}` must be an http(s) URL")]
    AttachmentUrl { url: String },
    #[error("callback url `{url}` must be an http(s) URL")]
    CallbackUrl { url: String },
    #[error("{what} has {chars} characters; the Send API allows 1 to {max}")]
    TemplateText {
        what: &'static str,
        chars: usize,
        max: usize,
    },
    #[error("{what} has {count}; the Send API allows {min} to {max}")]
    TemplateCount {
        what: &'static str,
        count: usize,
        min: usize,
        max: usize,
    },
    #[error("text has {chars} characters; {channel} allows at most {max}")]
    ChannelText {
        channel: &'static str,
        chars: usize,
        max: usize,
    },
    #[error("{channel} has no {what}")]
    NotOnChannel {
        channel: &'static str,
        what: &'static str,
    },
}

/// Media types the Send API takes by URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachmentKind {
    Image,
    Audio,
    Video,
    File,
}

impl AttachmentKind {
    fn as_str(self) -> &'static str {
        match self {
            AttachmentKind::Image => "image",
            AttachmentKind::Audio => "audio",
            AttachmentKind::Video => "video",
            AttachmentKind::File => "file",
        }
    }
}

/// What a reply is, for the engine to turn into an outbox item.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Body {
    Message(OutMessage),
    Action(SenderAction),
    Callback { url: String, payload: Value },
}

/// One message or sender action for the user of the conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    tag: Option<MessageTag>,
    body: Body,
}

/// Message tags: the only way to message a user more than 24 hours after their last
/// message (Messenger policy; no promotional content).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageTag {
    AccountUpdate,
    ConfirmedEventUpdate,
    PostPurchaseUpdate,
    /// A human agent's reply, allowed up to 7 days after the user's last message.
    HumanAgent,
}

impl MessageTag {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageTag::AccountUpdate => "ACCOUNT_UPDATE",
            MessageTag::ConfirmedEventUpdate => "CONFIRMED_EVENT_UPDATE",
            MessageTag::PostPurchaseUpdate => "POST_PURCHASE_UPDATE",
            MessageTag::HumanAgent => "HUMAN_AGENT",
        }
    }
}

/// A text quick reply: the user taps `title`, the flow receives `payload`.
pub fn quick_reply(
    title: impl Into<String>,
    payload: impl Into<String>,
) -> Result<QuickReply, ReplyError> {
    let (title, payload) = (title.into(), payload.into());
    let title_chars = title.chars().count();
    if title_chars == 0 || title_chars > MAX_QUICK_REPLY_TITLE_CHARS {
        return Err(ReplyError::QuickReplyTitle { title });
    }
    let payload_chars = payload.chars().count();
    if payload_chars == 0 || payload_chars > MAX_PAYLOAD_CHARS {
        return Err(ReplyError::QuickReplyPayload);
    }
    Ok(QuickReply {
        content_type: "text".into(),
        title: Some(title),
        payload: Some(payload),
        image_url: None,
    })
}

impl Reply {
    /// A text message of 1 to 2000 characters.
    ///
    /// ```
    /// use colloquy::flow::{quick_reply, Reply, ReplyError};
    /// let ask = Reply::text("Shall we start?")?
    ///     .with_quick_replies([quick_reply("Yes", "START")?, quick_reply("Later", "LATER")?])?;
    /// assert_eq!(ask.kind_name(), "quick_replies");
    /// assert!(Reply::text("x".repeat(2001)).is_err());
    /// # Ok::<(), ReplyError>(())
    /// ```
    pub fn text(text: impl Into<String>) -> Result<Reply, ReplyError> {
        let text = text.into();
        let chars = text.chars().count();
        if chars == 0 {
            return Err(ReplyError::EmptyText);
        }
        if chars > MAX_TEXT_CHARS {
            return Err(ReplyError::TextTooLong { chars });
        }
        Ok(Reply {
            tag: None,
            body: Body::Message(OutMessage {
                text: Some(text),
                attachment: None,
                quick_replies: Vec::new(),
                metadata: None,
            }),
        })
    }

    /// Adds quick replies to a message (at most 13 in all).
    pub fn with_quick_replies(
        mut self,
        quick_replies: impl IntoIterator<Item = QuickReply>,
    ) -> Result<Reply, ReplyError> {
        if let Body::Message(message) = &mut self.body {
            message.quick_replies.extend(quick_replies);
            let count = message.quick_replies.len();
            if count > MAX_QUICK_REPLIES {
                return Err(ReplyError::TooManyQuickReplies { count });
            }
        }
        Ok(self)
    }

    /// An image, audio, video or file fetched by Facebook from `url`.
    pub fn attachment(kind: AttachmentKind, url: impl Into<String>) -> Result<Reply, ReplyError> {
        let url = url.into();
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(ReplyError::AttachmentUrl { url });
        }
        Ok(Reply {
            tag: None,
            body: Body::Message(OutMessage {
                text: None,
                attachment: Some(OutAttachment {
                    kind: kind.as_str().into(),
                    payload: json!({ "url": url, "is_reusable": true }),
                }),
                quick_replies: Vec::new(),
                metadata: None,
            }),
        })
    }

    /// A template message (button, generic...) from its already-checked payload.
    pub(super) fn template(payload: Value) -> Reply {
        Reply {
            tag: None,
            body: Body::Message(OutMessage {
                text: None,
                attachment: Some(OutAttachment {
                    kind: "template".into(),
                    payload,
                }),
                quick_replies: Vec::new(),
                metadata: None,
            }),
        }
    }

    /// A JSON POST to `url` (not to the user), delivered durably with retries like a
    /// message: 2xx is success, 5xx and network errors are retried, other answers fail it.
    ///
    /// ```
    /// use colloquy::flow::Reply;
    /// let report = Reply::callback(
    ///     "https://crm.example.com/hooks/leads",
    ///     serde_json::json!({"psid": "42", "interested": true}),
    /// )?;
    /// assert!(!report.is_message());
    /// # Ok::<(), colloquy::flow::ReplyError>(())
    /// ```
    pub fn callback(url: impl Into<String>, payload: Value) -> Result<Reply, ReplyError> {
        let url = url.into();
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(ReplyError::CallbackUrl { url });
        }
        Ok(Reply {
            tag: None,
            body: Body::Callback { url, payload },
        })
    }

    /// The typing indicator, shown until the next message or for about 20 seconds.
    pub fn typing_on() -> Reply {
        Reply {
            tag: None,
            body: Body::Action(SenderAction::TypingOn),
        }
    }

    pub fn typing_off() -> Reply {
        Reply {
            tag: None,
            body: Body::Action(SenderAction::TypingOff),
        }
    }

    /// Marks the user's last message as seen.
    pub fn mark_seen() -> Reply {
        Reply {
            tag: None,
            body: Body::Action(SenderAction::MarkSeen),
        }
    }

    /// The text of a text reply.
    pub fn text_content(&self) -> Option<&str> {
        match &self.body {
            Body::Message(message) => message.text.as_deref(),
            Body::Action(_) | Body::Callback { .. } => None,
        }
    }

    /// Short kind recorded in the transcript.
    pub fn kind_name(&self) -> &'static str {
        match &self.body {
            Body::Message(OutMessage {
                attachment: Some(attachment),
                ..
            }) if attachment.kind == "template" => "template",
            Body::Message(OutMessage {
                attachment: Some(_),
                ..
            }) => "attachment",
            Body::Message(message) if !message.quick_replies.is_empty() => "quick_replies",
            Body::Message(_) => "text",
            Body::Action(SenderAction::TypingOn) => "typing_on",
            Body::Action(SenderAction::TypingOff) => "typing_off",
            Body::Action(SenderAction::MarkSeen) => "mark_seen",
            Body::Callback { .. } => "callback",
        }
    }

    /// Sends this message with a tag (`messaging_type: MESSAGE_TAG`), allowed outside the
    /// 24-hour window.
    pub fn with_tag(mut self, tag: MessageTag) -> Reply {
        self.tag = Some(tag);
        self
    }

    pub fn tag(&self) -> Option<MessageTag> {
        self.tag
    }

    /// Checks this reply against the rules of `channel` beyond the Messenger rules every
    /// builder already checked: Instagram allows text of at most 1,000 characters and no
    /// button template (quick replies: 13, as on Messenger).
    pub fn check_for(&self, channel: Channel) -> Result<(), ReplyError> {
        let Channel::Instagram = channel else {
            return Ok(());
        };
        let Body::Message(message) = &self.body else {
            return Ok(());
        };
        let chars = message
            .text
            .as_deref()
            .map_or(0, |text| text.chars().count());
        if chars > INSTAGRAM_MAX_TEXT_CHARS {
            return Err(ReplyError::ChannelText {
                channel: "Instagram",
                chars,
                max: INSTAGRAM_MAX_TEXT_CHARS,
            });
        }
        let button_template = message.attachment.as_ref().is_some_and(|attachment| {
            attachment.kind == "template" && attachment.payload["template_type"] == "button"
        });
        if button_template {
            return Err(ReplyError::NotOnChannel {
                channel: "Instagram",
                what: "button template",
            });
        }
        Ok(())
    }

    /// Whether this reply is a message the user receives (and so gets receipts).
    pub fn is_message(&self) -> bool {
        matches!(self.body, Body::Message(_))
    }

    /// The reply's tag and body, for the engine to build the Send API request from.
    pub(crate) fn into_parts(self) -> (Option<MessageTag>, Body) {
        (self.tag, self.body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_over_2000_characters_is_refused_when_built() {
        assert!(Reply::text("é".repeat(2000)).is_ok());
        assert_eq!(
            Reply::text("x".repeat(2001)),
            Err(ReplyError::TextTooLong { chars: 2001 })
        );
        assert_eq!(Reply::text(""), Err(ReplyError::EmptyText));
    }

    #[test]
    fn more_than_13_quick_replies_are_refused() {
        let options = (0..14).map(|i| quick_reply(format!("o{i}"), format!("P{i}")).unwrap());
        let err = Reply::text("pick").unwrap().with_quick_replies(options);
        assert_eq!(err, Err(ReplyError::TooManyQuickReplies { count: 14 }));
    }

    #[test]
    fn a_quick_reply_title_over_20_characters_is_refused() {
        assert!(quick_reply("x".repeat(20), "P").is_ok());
        assert!(matches!(
            quick_reply("x".repeat(21), "P"),
            Err(ReplyError::QuickReplyTitle { .. })
        ));
        assert_eq!(quick_reply("ok", ""), Err(ReplyError::QuickReplyPayload));
    }

    #[test]
    fn attachments_need_an_http_url() {
        assert!(Reply::attachment(AttachmentKind::Image, "https://x/a.png").is_ok());
        assert!(Reply::attachment(AttachmentKind::Image, "file:///etc/passwd").is_err());
    }
}
