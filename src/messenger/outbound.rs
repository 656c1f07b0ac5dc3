//! Outbound wire types: the Send API request (`POST /me/messages`) and its success
//! response.
//!
//! Owns: the exact JSON shape sent to Meta, and lenient decoding of what Meta answers.
//! Graph error bodies and what each means for a caller live with the Graph client
//! (`graph::ApiError`, `graph::CallError`).
//!
//! Must not: do IO or HTTP (the `graph` module sends these), hold or log access
//! tokens/app secrets (the token travels in the URL, never in these types), enforce
//! limits or retry, or panic on any input.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// Body of `POST https://graph.facebook.com/v{N}.0/me/messages`.
/// Carries either `message` or `sender_action`, not both.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SendRequest {
    pub recipient: Recipient,
    #[serde(default)]
    pub messaging_type: MessagingType,
    /// Message tag, required with [`MessagingType::MessageTag`] (e.g. `HUMAN_AGENT`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<OutMessage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender_action: Option<SenderAction>,
}

/// `recipient.id`: the PSID (page-scoped user id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    pub id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MessagingType {
    /// Reply inside the 24 h window.
    #[default]
    Response,
    /// Proactive message inside the window.
    Update,
    /// Outside the window; needs `tag`.
    MessageTag,
}

/// `message`: `text` or `attachment`, plus optional quick replies and metadata.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct OutMessage {
    /// UTF-8, at most 2000 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachment: Option<OutAttachment>,
    /// At most 13.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quick_replies: Vec<QuickReply>,
    /// At most 1000 characters; comes back in the echo.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<String>,
}

/// `{"type":"image|audio|video|file|template","payload":{…}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutAttachment {
    #[serde(rename = "type")]
    pub kind: String,
    pub payload: Value,
}

/// `content_type` is `text` (title required), `user_phone_number` or `user_email`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuickReply {
    pub content_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_url: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SenderAction {
    TypingOn,
    TypingOff,
    MarkSeen,
}

/// Success body. `recipient_id` is absent for `user_ref` sends; `message_id`
/// is absent for sender actions.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SendResponse {
    #[serde(default, deserialize_with = "de_lossy_opt_id")]
    pub recipient_id: Option<String>,
    #[serde(default, deserialize_with = "de_lossy_opt_id")]
    pub message_id: Option<String>,
}

fn de_lossy_opt_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match Value::deserialize(d)? {
        Value::String(s) => Ok(Some(s)),
        Value::Number(n) if n.is_i64() || n.is_u64() => Ok(Some(n.to_string())),
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn to_json<T: Serialize>(v: &T) -> Value {
        serde_json::to_value(v).expect("serializable")
    }

    #[test]
    fn text_message_with_quick_replies_serialises_to_the_send_api_shape() {
        let req = SendRequest {
            recipient: Recipient { id: "PSID".into() },
            messaging_type: MessagingType::Response,
            tag: None,
            message: Some(OutMessage {
                text: Some("Pick a colour".into()),
                attachment: None,
                quick_replies: vec![
                    QuickReply {
                        content_type: "text".into(),
                        title: Some("Red".into()),
                        payload: Some("C_RED".into()),
                        image_url: Some("https://x/red.png".into()),
                    },
                    QuickReply {
                        content_type: "user_email".into(),
                        title: None,
                        payload: None,
                        image_url: None,
                    },
                ],
                metadata: Some("engine:out:42".into()),
            }),
            sender_action: None,
        };
        assert_eq!(
            to_json(&req),
            json!({"recipient": {"id": "PSID"}, "messaging_type": "RESPONSE",
                   "message": {"text": "Pick a colour", "metadata": "engine:out:42",
                               "quick_replies": [
                                   {"content_type": "text", "title": "Red", "payload": "C_RED", "image_url": "https://x/red.png"},
                                   {"content_type": "user_email"}]}})
        );
    }

    #[test]
    fn plain_text_message_omits_empty_quick_replies_and_absent_fields() {
        let req = SendRequest {
            recipient: Recipient { id: "1".into() },
            messaging_type: MessagingType::Update,
            tag: None,
            message: Some(OutMessage {
                text: Some("hi".into()),
                ..OutMessage::default()
            }),
            sender_action: None,
        };
        assert_eq!(
            to_json(&req),
            json!({"recipient": {"id": "1"}, "messaging_type": "UPDATE", "message": {"text": "hi"}})
        );
    }

    #[test]
    fn tagged_attachment_message_serialises_with_tag_and_attachment() {
        let req = SendRequest {
            recipient: Recipient { id: "PSID".into() },
            messaging_type: MessagingType::MessageTag,
            tag: Some("HUMAN_AGENT".into()),
            message: Some(OutMessage {
                attachment: Some(OutAttachment {
                    kind: "image".into(),
                    payload: json!({"url": "https://x/a.png", "is_reusable": true}),
                }),
                ..OutMessage::default()
            }),
            sender_action: None,
        };
        assert_eq!(
            to_json(&req),
            json!({"recipient": {"id": "PSID"}, "messaging_type": "MESSAGE_TAG", "tag": "HUMAN_AGENT",
                   "message": {"attachment": {"type": "image", "payload": {"url": "https://x/a.png", "is_reusable": true}}}})
        );
    }

    #[test]
    fn sender_actions_serialise_in_snake_case_without_a_message() {
        for (action, name) in [
            (SenderAction::TypingOn, "typing_on"),
            (SenderAction::TypingOff, "typing_off"),
            (SenderAction::MarkSeen, "mark_seen"),
        ] {
            let req = SendRequest {
                recipient: Recipient { id: "PSID".into() },
                messaging_type: MessagingType::default(),
                tag: None,
                message: None,
                sender_action: Some(action),
            };
            assert_eq!(
                to_json(&req),
                json!({"recipient": {"id": "PSID"}, "messaging_type": "RESPONSE", "sender_action": name})
            );
        }
    }

    #[test]
    fn send_request_round_trips_and_defaults_messaging_type_to_response() {
        let parsed: SendRequest =
            serde_json::from_value(json!({"recipient": {"id": "u"}, "message": {"text": "t"}}))
                .expect("deserialize");
        assert_eq!(parsed.messaging_type, MessagingType::Response);
        assert!(parsed
            .message
            .as_ref()
            .is_some_and(|m| m.quick_replies.is_empty()));
        let back: SendRequest = serde_json::from_value(to_json(&parsed)).expect("round trip");
        assert_eq!(back, parsed);
    }

    #[test]
    fn send_response_parses_with_and_without_message_id() {
        let full: SendResponse = serde_json::from_str(r#"{"recipient_id":"1254477777772919","message_id":"m_AG5Hz2Uq7tuwNEhXfYYKj8mJEM_QPpz5jdCK48PnKAjSdjfipqxqMvK8ma6AC8fplwlqLP_5cgXIbu7I3rBN0P"}"#).expect("parse");
        assert_eq!(full.recipient_id.as_deref(), Some("1254477777772919"));
        assert!(full
            .message_id
            .as_deref()
            .is_some_and(|m| m.starts_with("m_")));
        let action_only: SendResponse =
            serde_json::from_str(r#"{"recipient_id":1254477777772919}"#).expect("parse");
        assert_eq!(
            action_only,
            SendResponse {
                recipient_id: Some("1254477777772919".into()),
                message_id: None
            }
        );
    }
}
