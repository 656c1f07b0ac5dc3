//! The webhook events the console sends on the user's behalf, and on Facebook's, in the
//! exact shape Facebook POSTs them: a user's text, quick-reply tap or postback, and the
//! echo, delivery and read that follow a page message.
//!
//! Pure JSON builders: no IO, no signing (see [`super::engine`]).

use serde_json::{json, Value};

use crate::event::Channel;
use crate::messenger::outbound::SendRequest;

/// What the user does in one step of the conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserAction {
    /// Types a message.
    Text(String),
    /// Taps a quick reply: a message whose text is the title, with the payload attached.
    QuickReply { text: String, payload: String },
    /// Presses a postback button (or a persistent-menu item).
    Postback { title: String, payload: String },
}

/// Who is talking: the page and the user's page-scoped id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parties {
    pub page_id: String,
    pub psid: String,
    /// The envelope's `object`: `page`, or `instagram` for an Instagram account.
    pub channel: Channel,
}

impl Parties {
    /// One `messaging[]` item from the user to the page.
    pub fn user_event(&self, action: &UserAction, mid: &str, timestamp: i64) -> Value {
        let mut item = json!({
            "sender": {"id": self.psid},
            "recipient": {"id": self.page_id},
            "timestamp": timestamp,
        });
        match action {
            UserAction::Text(text) => item["message"] = json!({"mid": mid, "text": text}),
            UserAction::QuickReply { text, payload } => {
                item["message"] =
                    json!({"mid": mid, "text": text, "quick_reply": {"payload": payload}})
            }
            UserAction::Postback { title, payload } => {
                item["postback"] = json!({"mid": mid, "title": title, "payload": payload})
            }
        }
        item
    }

    /// What Facebook sends after it delivered a page message and the user read it: the
    /// echo (carrying the request's `metadata`), a delivery of its `mid` and a read, all
    /// at `timestamp`.
    pub fn after_delivery(&self, request: &SendRequest, mid: &str, timestamp: i64) -> Vec<Value> {
        vec![
            self.echo(request, mid, timestamp),
            json!({
                "sender": {"id": self.psid}, "recipient": {"id": self.page_id},
                "timestamp": timestamp,
                "delivery": {"mids": [mid], "watermark": timestamp}
            }),
            json!({
                "sender": {"id": self.psid}, "recipient": {"id": self.page_id},
                "timestamp": timestamp,
                "read": {"watermark": timestamp}
            }),
        ]
    }

    fn echo(&self, request: &SendRequest, mid: &str, timestamp: i64) -> Value {
        let mut message = json!({"is_echo": true, "mid": mid});
        if let Some(sent) = &request.message {
            if let Some(text) = &sent.text {
                message["text"] = json!(text);
            }
            if let Some(metadata) = &sent.metadata {
                message["metadata"] = json!(metadata);
            }
            if let Some(attachment) = &sent.attachment {
                message["attachments"] = json!([attachment]);
            }
        }
        json!({
            "sender": {"id": self.page_id},
            "recipient": {"id": self.psid},
            "timestamp": timestamp,
            "message": message
        })
    }

    /// The webhook body carrying `items`, as one page entry.
    pub fn envelope(&self, items: Vec<Value>, time: i64) -> String {
        let object = match self.channel {
            Channel::Messenger => "page",
            Channel::Instagram => "instagram",
        };
        json!({
            "object": object,
            "entry": [{"id": self.page_id, "time": time, "messaging": items}]
        })
        .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messenger::inbound::{parse_envelope, EventKind};

    fn parties() -> Parties {
        Parties {
            channel: Channel::Messenger,
            page_id: "page".into(),
            psid: "user".into(),
        }
    }

    fn parsed(items: Vec<Value>) -> Vec<crate::messenger::inbound::InboundEvent> {
        parse_envelope(parties().envelope(items, 1).as_bytes()).expect("a valid envelope")
    }

    #[test]
    fn user_actions_parse_as_the_events_a_flow_receives() {
        let p = parties();
        let events = parsed(vec![
            p.user_event(&UserAction::Text("hi".into()), "m1", 1),
            p.user_event(
                &UserAction::QuickReply {
                    text: "Tech".into(),
                    payload: "TOPIC_TECH".into(),
                },
                "m2",
                2,
            ),
            p.user_event(
                &UserAction::Postback {
                    title: "Order".into(),
                    payload: "ORDER".into(),
                },
                "m3",
                3,
            ),
        ]);
        let kinds: Vec<_> = events.iter().map(|e| e.kind_name()).collect();
        assert_eq!(kinds, ["text", "quick_reply", "postback"]);
        assert!(events.iter().all(|e| e.party_id() == "user"));
        assert_eq!(events[1].mid(), Some("m2"));
        assert_eq!(events[2].mid(), Some("m3"));
    }

    #[test]
    fn after_delivery_is_an_echo_with_the_metadata_then_delivery_then_read() {
        let request: SendRequest = serde_json::from_value(json!({
            "recipient": {"id": "user"},
            "message": {"text": "hello", "metadata": "colloquy:4"}
        }))
        .unwrap();
        let events = parsed(parties().after_delivery(&request, "m_out", 9));
        let kinds: Vec<_> = events.iter().map(|e| e.kind_name()).collect();
        assert_eq!(kinds, ["echo", "delivery", "read"]);
        let EventKind::Echo(echo) = &events[0].kind else {
            panic!("an echo first");
        };
        assert_eq!(echo.metadata.as_deref(), Some("colloquy:4"));
        assert_eq!(echo.mid, "m_out");
        assert!(events.iter().all(|e| e.party_id() == "user"));
    }
}
