//! What a flow's reply becomes in the outbox: a Send API request for the conversation's
//! user (with the metadata its echo brings back), or a POST to a callback URL.
//!
//! The turn builds outbox items here, so `flow` never names a store type. Must not:
//! check the Send API's limits (the reply did when it was built) or do IO.

use crate::flow::{Body, Reply};
use crate::messenger::outbound::{MessagingType, Recipient, SendRequest};
use crate::store::Outgoing;

/// What the outbox delivers for `reply` to `psid`; `metadata` comes back in the echo.
pub(super) fn outgoing(reply: Reply, psid: &str, metadata: String) -> Outgoing {
    let (tag, body) = reply.into_parts();
    let (messaging_type, tag) = match tag {
        Some(tag) => (MessagingType::MessageTag, Some(tag.as_str().to_string())),
        None => (MessagingType::Response, None),
    };
    let (message, sender_action) = match body {
        Body::Callback { url, payload } => return Outgoing::Callback { url, body: payload },
        Body::Message(mut message) => {
            message.metadata = Some(metadata);
            (Some(message), None)
        }
        Body::Action(action) => (None, Some(action)),
    };
    Outgoing::Send(SendRequest {
        recipient: Recipient {
            id: psid.to_string(),
        },
        messaging_type,
        tag,
        message,
        sender_action,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::{quick_reply, AttachmentKind, MessageTag};
    use crate::store::records::NO_RECEIPT_KINDS;
    use serde_json::json;

    trait IntoOutgoing {
        fn into_outgoing_for_test(self, psid: &str, metadata: &str) -> Outgoing;
    }

    impl IntoOutgoing for Reply {
        fn into_outgoing_for_test(self, psid: &str, metadata: &str) -> Outgoing {
            outgoing(self, psid, metadata.to_string())
        }
    }

    #[test]
    fn a_text_reply_becomes_a_send_api_request_with_its_metadata() {
        let Outgoing::Send(request) = Reply::text("hello")
            .unwrap()
            .with_quick_replies([quick_reply("Yes", "YES").unwrap()])
            .unwrap()
            .into_outgoing_for_test("42", "colloquy:7")
        else {
            panic!("a text reply is a Send API call");
        };
        assert_eq!(
            serde_json::to_value(&request).unwrap(),
            json!({
                "recipient": {"id": "42"},
                "messaging_type": "RESPONSE",
                "message": {
                    "text": "hello",
                    "metadata": "colloquy:7",
                    "quick_replies": [{"content_type": "text", "title": "Yes", "payload": "YES"}]
                }
            })
        );
    }

    #[test]
    fn exactly_the_non_message_kinds_are_left_out_of_receipts() {
        let replies = [
            Reply::text("hi").unwrap(),
            Reply::attachment(AttachmentKind::Image, "https://example.com/a.png").unwrap(),
            Reply::typing_on(),
            Reply::typing_off(),
            Reply::mark_seen(),
            Reply::callback("https://crm.example/hook", json!({})).unwrap(),
        ];
        for reply in replies {
            let left_out = NO_RECEIPT_KINDS.contains(&reply.kind_name());
            assert_eq!(left_out, !reply.is_message(), "{}", reply.kind_name());
        }
    }

    #[test]
    fn a_sender_action_carries_no_message() {
        let Outgoing::Send(request) = Reply::typing_on().into_outgoing_for_test("42", "m") else {
            panic!("a sender action is a Send API call");
        };
        assert_eq!(
            serde_json::to_value(&request).unwrap(),
            json!({"recipient": {"id": "42"}, "messaging_type": "RESPONSE", "sender_action": "typing_on"})
        );
    }

    #[test]
    fn a_callback_is_a_post_to_its_url_not_a_message() {
        let reply = Reply::callback("https://crm.example/hook", json!({"done": true})).unwrap();
        assert!(!reply.is_message());
        assert_eq!(reply.kind_name(), "callback");
        assert_eq!(
            reply.into_outgoing_for_test("42", "m"),
            Outgoing::Callback {
                url: "https://crm.example/hook".into(),
                body: json!({"done": true})
            }
        );
        assert!(Reply::callback("ftp://x", json!(null)).is_err());
    }

    #[test]
    fn a_tagged_message_is_sent_as_message_tag() {
        let Outgoing::Send(request) = Reply::text("Your order shipped")
            .unwrap()
            .with_tag(MessageTag::PostPurchaseUpdate)
            .into_outgoing_for_test("42", "m")
        else {
            panic!("a text reply is a Send API call");
        };
        let value = serde_json::to_value(&request).unwrap();
        assert_eq!(value["messaging_type"], "MESSAGE_TAG");
        assert_eq!(value["tag"], "POST_PURCHASE_UPDATE");
    }
}
