//! Outbound wire types: the Send API request (`POST /me/messages`), its
//! success response, and Graph API error bodies with their retry class.
//!
//! Owns: the exact JSON shape sent to Meta, lenient decoding of what Meta
//! answers, and mapping Graph error codes to [`ErrorClass`].
//!
//! Must not: do IO or HTTP, hold or log access tokens/app secrets (the token
//! travels in the URL/header, never in these types), enforce limits or retry
//! (callers decide from [`ErrorClass`]), or panic on any input.

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

/// `{"error":{…}}` as returned by the Graph API.
#[cfg(test)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphErrorBody {
    pub error: GraphError,
}

/// A Graph API error. Decoding is lenient: a field of the wrong type takes its
/// default instead of failing, and `code`/`error_subcode` accept numeric strings.
/// Dispatch on `code` + `error_subcode`, never on the message text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphError {
    #[serde(default, deserialize_with = "de_lossy_string")]
    pub message: String,
    #[serde(rename = "type", default, deserialize_with = "de_lossy_opt_string")]
    pub kind: Option<String>,
    #[serde(default, deserialize_with = "de_lossy_int")]
    pub code: i64,
    #[serde(default, deserialize_with = "de_lossy_opt_int")]
    pub error_subcode: Option<i64>,
    #[serde(default, deserialize_with = "de_lossy_opt_bool")]
    pub is_transient: Option<bool>,
    /// Log this: Meta support asks for it.
    #[serde(default, deserialize_with = "de_lossy_opt_string")]
    pub fbtrace_id: Option<String>,
}

/// What the sender should do about a failed Send API call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Temporary failure on Meta's side (codes 1, 2, -1, 1200, or
    /// `is_transient: true`): retry the same request with exponential backoff
    /// and jitter, a small number of times. Code 2 can also hide a user who
    /// blocked the Page, so cap the retries.
    Transient,
    /// Rate limited or temporarily blocked (codes 4, 17, 32, 613, 368,
    /// 80001–80014): pause the whole scope (app, user or page) rather than
    /// retrying, since calling while throttled extends the penalty; 368
    /// (policy block) needs a long pause.
    Throttled,
    /// Will fail again unchanged (10 outside window/permission, 100 bad
    /// parameter or unknown user, 190 bad token, 200–299 permission, 551 user
    /// unavailable, and any unknown code): do not retry; fix the request, mark
    /// the user unreachable, or stop the page and alert.
    Permanent,
}

impl GraphError {
    /// `code/subcode: message`, the way operators search Meta's error tables.
    pub fn describe(&self) -> String {
        match self.error_subcode {
            Some(subcode) => format!("{}/{subcode}: {}", self.code, self.message),
            None => format!("{}: {}", self.code, self.message),
        }
    }

    /// Classifies by `code` (and `is_transient`). Throttling codes win over
    /// `is_transient: true`, because retrying a throttled scope prolongs it.
    pub fn class(&self) -> ErrorClass {
        match self.code {
            4 | 17 | 32 | 368 | 613 | 80001..=80014 => ErrorClass::Throttled,
            1 | 2 | -1 | 1200 => ErrorClass::Transient,
            _ if self.is_transient == Some(true) => ErrorClass::Transient,
            _ => ErrorClass::Permanent,
        }
    }
}

/// Parses a Graph error body leniently; None if the body is not a Graph error.
///
/// A Graph error is a JSON object whose `error` member is an object carrying at
/// least a `code` or a `message`.
pub fn parse_graph_error(body: &[u8]) -> Option<GraphError> {
    let root: Value = serde_json::from_slice(body).ok()?;
    let error = root.get("error")?;
    let fields = error.as_object()?;
    if !fields.contains_key("code") && !fields.contains_key("message") {
        return None;
    }
    GraphError::deserialize(error).ok()
}

fn lenient_int(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn de_lossy_string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(de_lossy_opt_string(d)?.unwrap_or_default())
}

fn de_lossy_opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match Value::deserialize(d)? {
        Value::String(s) => Ok(Some(s)),
        _ => Ok(None),
    }
}

fn de_lossy_opt_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match Value::deserialize(d)? {
        Value::String(s) => Ok(Some(s)),
        Value::Number(n) if n.is_i64() || n.is_u64() => Ok(Some(n.to_string())),
        _ => Ok(None),
    }
}

fn de_lossy_int<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    Ok(de_lossy_opt_int(d)?.unwrap_or_default())
}

fn de_lossy_opt_int<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    Ok(lenient_int(&Value::deserialize(d)?))
}

fn de_lossy_opt_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    Ok(Value::deserialize(d)?.as_bool())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn to_json<T: Serialize>(v: &T) -> Value {
        serde_json::to_value(v).expect("serializable")
    }

    fn err_with(code: i64, is_transient: Option<bool>) -> GraphError {
        GraphError {
            message: String::new(),
            kind: Some("OAuthException".into()),
            code,
            error_subcode: None,
            is_transient,
            fbtrace_id: None,
        }
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

    #[test]
    fn real_graph_error_body_is_parsed_and_permanent() {
        let body = br#"{"error":{"message":"(#551) This person isn't available right now.","type":"OAuthException",
            "code":551,"error_subcode":1545041,"error_user_title":"Message Not Sent","error_user_msg":"...",
            "is_transient":false,"fbtrace_id":"AbC123xyz"}}"#;
        let e = parse_graph_error(body).expect("a graph error");
        assert_eq!(
            e,
            GraphError {
                message: "(#551) This person isn't available right now.".into(),
                kind: Some("OAuthException".into()),
                code: 551,
                error_subcode: Some(1545041),
                is_transient: Some(false),
                fbtrace_id: Some("AbC123xyz".into()),
            }
        );
        assert_eq!(e.class(), ErrorClass::Permanent);
    }

    #[test]
    fn graph_error_body_struct_deserialises() {
        let body: GraphErrorBody = serde_json::from_str(r#"{"error":{"message":"Invalid OAuth access token.","type":"OAuthException","code":190,"error_subcode":460,"fbtrace_id":"X"}}"#).expect("parse");
        assert_eq!(body.error.code, 190);
        assert_eq!(body.error.error_subcode, Some(460));
        assert_eq!(body.error.class(), ErrorClass::Permanent);
    }

    #[test]
    fn transient_internal_error_is_parsed_from_a_500_body() {
        let e = parse_graph_error(br#"{"error":{"message":"An unexpected error has occurred. Please retry your request later.","type":"OAuthException","is_transient":true,"code":2,"fbtrace_id":"A1"}}"#)
            .expect("a graph error");
        assert_eq!(e.code, 2);
        assert_eq!(e.is_transient, Some(true));
        assert_eq!(e.class(), ErrorClass::Transient);
    }

    #[test]
    fn graph_error_parsing_is_lenient_about_field_types() {
        let e = parse_graph_error(br#"{"error":{"message":null,"type":7,"code":"613","error_subcode":"x","is_transient":"yes"}}"#)
            .expect("still a graph error");
        assert_eq!(e.message, "");
        assert_eq!(e.kind, None);
        assert_eq!(e.code, 613);
        assert_eq!(e.error_subcode, None);
        assert_eq!(e.is_transient, None);
        assert_eq!(e.class(), ErrorClass::Throttled);
        let only_message =
            parse_graph_error(br#"{"error":{"message":"boom"}}"#).expect("message only");
        assert_eq!(
            (only_message.code, only_message.class()),
            (0, ErrorClass::Permanent)
        );
    }

    #[test]
    fn garbage_and_non_graph_bodies_are_not_graph_errors() {
        let bodies: [&[u8]; 9] = [
            b"",
            b"<html>502 Bad Gateway</html>",
            b"\xff\xfe",
            b"{\"error\":",
            b"[]",
            br#"{"recipient_id":"1","message_id":"m_1"}"#,
            br#"{"error":"rate limited"}"#,
            br#"{"error":{}}"#,
            br#"{"error":{"fbtrace_id":"X"}}"#,
        ];
        for body in bodies {
            assert_eq!(
                parse_graph_error(body),
                None,
                "body {:?}",
                String::from_utf8_lossy(body)
            );
        }
        let deep = "[".repeat(10_000);
        assert_eq!(parse_graph_error(deep.as_bytes()), None);
    }

    #[test]
    fn transient_codes_are_transient() {
        for code in [1, 2, -1, 1200] {
            assert_eq!(
                err_with(code, None).class(),
                ErrorClass::Transient,
                "code {code}"
            );
            assert_eq!(
                err_with(code, Some(false)).class(),
                ErrorClass::Transient,
                "code {code}"
            );
        }
    }

    #[test]
    fn is_transient_flag_makes_an_otherwise_permanent_code_transient() {
        assert_eq!(err_with(100, Some(true)).class(), ErrorClass::Transient);
        assert_eq!(err_with(100, Some(false)).class(), ErrorClass::Permanent);
        assert_eq!(err_with(100, None).class(), ErrorClass::Permanent);
    }

    #[test]
    fn throttling_codes_are_throttled_even_if_flagged_transient() {
        for code in [4, 17, 32, 613, 368, 80001, 80006, 80014] {
            assert_eq!(
                err_with(code, None).class(),
                ErrorClass::Throttled,
                "code {code}"
            );
            assert_eq!(
                err_with(code, Some(true)).class(),
                ErrorClass::Throttled,
                "code {code}"
            );
        }
        assert_eq!(err_with(80000, None).class(), ErrorClass::Permanent);
        assert_eq!(err_with(80015, None).class(), ErrorClass::Permanent);
    }

    #[test]
    fn permission_token_parameter_and_unknown_codes_are_permanent() {
        for code in [
            10,
            100,
            190,
            200,
            230,
            299,
            551,
            0,
            12345,
            i64::MIN,
            i64::MAX,
        ] {
            assert_eq!(
                err_with(code, None).class(),
                ErrorClass::Permanent,
                "code {code}"
            );
        }
    }
}
