//! Routing helpers: what the user did, in a shape a flow can `match` on.
//!
//! `event.input()` reduces a typed event to the few things conversation logic branches
//! on (a typed text, a tapped quick reply, a pressed button, attachments, an m.me or ad
//! referral), so a flow reads like the conversation it implements. It is
//! a view: it never allocates or changes the event.

use crate::event::{Attachment, EventKind, InboundEvent};

/// What the user did, for matching in a flow.
///
/// ```
/// use colloquy::flow::Input;
/// # use colloquy::event::parse_envelope;
/// # let event = parse_envelope(br#"{"object":"page","entry":[{"id":"1","messaging":[{"sender":{"id":"2"},"recipient":{"id":"1"},"timestamp":1,"message":{"mid":"m","text":"Yes","quick_reply":{"payload":"CONFIRM"}}}]}]}"#).unwrap().remove(0);
/// let answer = match event.input() {
///     Input::QuickReply { payload: "CONFIRM", .. } => "confirmed",
///     Input::Text(text) if text.eq_ignore_ascii_case("menu") => "menu",
///     Input::Postback { payload, .. } => payload,
///     _ => "something else",
/// };
/// assert_eq!(answer, "confirmed");
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Input<'a> {
    /// A typed message (not a quick reply).
    Text(&'a str),
    /// A tapped quick reply: its payload, and the title the user saw.
    QuickReply {
        payload: &'a str,
        text: Option<&'a str>,
    },
    /// A pressed postback button (or Get Started / persistent menu).
    Postback {
        payload: &'a str,
        title: Option<&'a str>,
        /// The `ref` when the press opened the thread from an m.me link or an ad.
        referral: Option<&'a str>,
    },
    /// Attachments without text (images, stickers, files, locations...).
    Attachments(&'a [Attachment]),
    /// An m.me link or ad opened an existing thread: its `ref`.
    Referral(&'a str),
    /// Anything else (a flow rarely sees these).
    Other,
}

impl InboundEvent {
    /// What the user did, for `match`ing in a flow.
    pub fn input(&self) -> Input<'_> {
        match &self.kind {
            EventKind::Message(message) => match (&message.quick_reply, &message.text) {
                (Some(quick), text) => Input::QuickReply {
                    payload: &quick.payload,
                    text: text.as_deref(),
                },
                (None, Some(text)) => Input::Text(text),
                (None, None) => Input::Attachments(&message.attachments),
            },
            EventKind::Postback(postback) => Input::Postback {
                payload: postback.payload.as_deref().unwrap_or_default(),
                title: postback.title.as_deref(),
                referral: postback.referral.as_ref().and_then(|r| r.ref_.as_deref()),
            },
            EventKind::Referral(referral) => referral
                .ref_
                .as_deref()
                .map_or(Input::Other, Input::Referral),
            _ => Input::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messenger::inbound::parse_envelope;

    fn event(item: &str) -> InboundEvent {
        let body = format!(r#"{{"object":"page","entry":[{{"id":"1","messaging":[{item}]}}]}}"#);
        parse_envelope(body.as_bytes()).unwrap().remove(0)
    }

    const FROM: &str = r#""sender":{"id":"2"},"recipient":{"id":"1"},"timestamp":1"#;

    #[test]
    fn typed_text_and_tapped_quick_replies_are_told_apart() {
        let typed = event(&format!(
            r#"{{{FROM},"message":{{"mid":"m","text":"hi"}}}}"#
        ));
        assert_eq!(typed.input(), Input::Text("hi"));
        let tapped = event(&format!(
            r#"{{{FROM},"message":{{"mid":"m","text":"Red","quick_reply":{{"payload":"RED"}}}}}}"#
        ));
        assert_eq!(
            tapped.input(),
            Input::QuickReply {
                payload: "RED",
                text: Some("Red")
            }
        );
    }

    #[test]
    fn postbacks_carry_payload_title_and_referral() {
        let pressed = event(&format!(
            r#"{{{FROM},"postback":{{"title":"Start","payload":"GET_STARTED","referral":{{"ref":"promo","source":"SHORTLINK","type":"OPEN_THREAD"}}}}}}"#
        ));
        assert_eq!(
            pressed.input(),
            Input::Postback {
                payload: "GET_STARTED",
                title: Some("Start"),
                referral: Some("promo")
            }
        );
    }

    #[test]
    fn attachments_and_referrals_have_their_own_inputs() {
        let image = event(&format!(
            r#"{{{FROM},"message":{{"mid":"m","attachments":[{{"type":"image","payload":{{"url":"https://x"}}}}]}}}}"#
        ));
        assert!(matches!(image.input(), Input::Attachments(a) if a[0].kind == "image"));
        let referral = event(&format!(
            r#"{{{FROM},"referral":{{"ref":"summer","source":"SHORTLINK","type":"OPEN_THREAD"}}}}"#
        ));
        assert_eq!(referral.input(), Input::Referral("summer"));
        let read = event(&format!(r#"{{{FROM},"read":{{"watermark":1}}}}"#));
        assert_eq!(read.input(), Input::Other);
    }
}
