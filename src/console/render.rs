//! How one Send API request looks in the terminal: the lines a Messenger user would see,
//! and the numbered choices (quick replies, template buttons) they could tap.
//!
//! Pure and lenient: any request, however odd its template payload, renders to something
//! readable; nothing here does IO or panics.

use serde_json::Value;

use crate::messenger::outbound::{
    OutAttachment, OutMessage, QuickReply, SendRequest, SenderAction,
};

/// What a `user_email` quick reply sends in the console, where there is no real profile.
pub const CONSOLE_EMAIL: &str = "user@example.com";
/// What a `user_phone_number` quick reply sends in the console.
pub const CONSOLE_PHONE: &str = "+15555550100";

/// Something the user can pick by typing its number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// Sends a message with `text` and `quick_reply.payload`.
    QuickReply { text: String, payload: String },
    /// Sends a `postback` event.
    Postback { title: String, payload: String },
    /// Opens a page in the browser; nothing reaches the bot.
    OpenUrl { title: String, url: String },
    /// A button the console cannot act on (`phone_number`, `account_link`...).
    Unsupported { title: String, kind: String },
}

impl Choice {
    fn label(&self) -> String {
        match self {
            Choice::QuickReply { text, .. } => text.clone(),
            Choice::Postback { title, .. } | Choice::Unsupported { title, .. } => title.clone(),
            Choice::OpenUrl { title, url } => format!("{title} <{url}>"),
        }
    }
}

/// A request as the user sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Shown {
    pub lines: Vec<String>,
    /// Numbered from the `first_number` given to [`render`], in the order shown.
    pub choices: Vec<Choice>,
    /// A sender action (typing, seen) rather than a message: shown dimmed on a terminal.
    pub is_aside: bool,
}

/// Renders `request`, numbering its choices from `first_number`.
pub fn render(request: &SendRequest, first_number: usize) -> Shown {
    match (&request.message, request.sender_action) {
        (Some(message), _) => render_message(message, first_number),
        (None, Some(action)) => render_action(action),
        (None, None) => Shown::default(),
    }
}

fn render_action(action: SenderAction) -> Shown {
    let lines = match action {
        SenderAction::TypingOn => vec!["(typing…)".to_string()],
        SenderAction::MarkSeen => vec!["(seen)".to_string()],
        SenderAction::TypingOff => Vec::new(),
    };
    Shown {
        lines,
        choices: Vec::new(),
        is_aside: true,
    }
}

fn render_message(message: &OutMessage, first_number: usize) -> Shown {
    let mut shown = Shown::default();
    if let Some(text) = &message.text {
        shown.lines.extend(text.lines().map(str::to_string));
    }
    if let Some(attachment) = &message.attachment {
        render_attachment(attachment, first_number, &mut shown);
    }
    let quick_replies: Vec<Choice> = message
        .quick_replies
        .iter()
        .map(quick_reply_choice)
        .collect();
    push_choices(&mut shown, quick_replies, first_number);
    shown
}

fn quick_reply_choice(quick_reply: &QuickReply) -> Choice {
    let fixed = |value: &str| Choice::QuickReply {
        text: value.to_string(),
        payload: value.to_string(),
    };
    match quick_reply.content_type.as_str() {
        "user_email" => fixed(CONSOLE_EMAIL),
        "user_phone_number" => fixed(CONSOLE_PHONE),
        _ => {
            let text = quick_reply.title.clone().unwrap_or_default();
            let payload = quick_reply.payload.clone().unwrap_or_else(|| text.clone());
            Choice::QuickReply { text, payload }
        }
    }
}

/// Appends `choices` as one `[n] label  [n+1] label` line, numbered after those shown.
fn push_choices(shown: &mut Shown, choices: Vec<Choice>, first_number: usize) {
    if choices.is_empty() {
        return;
    }
    let start = first_number + shown.choices.len();
    let labels: Vec<String> = choices
        .iter()
        .enumerate()
        .map(|(i, choice)| format!("[{}] {}", start + i, choice.label()))
        .collect();
    shown.lines.push(labels.join("  "));
    shown.choices.extend(choices);
}

fn render_attachment(attachment: &OutAttachment, first_number: usize, shown: &mut Shown) {
    let payload = &attachment.payload;
    if attachment.kind != "template" {
        let url = payload["url"]
            .as_str()
            .map(|u| format!(" {u}"))
            .unwrap_or_default();
        shown.lines.push(format!("[{}]{url}", attachment.kind));
        return;
    }
    match payload["template_type"].as_str() {
        Some("button") => {
            let text = payload["text"].as_str().unwrap_or_default();
            shown.lines.extend(text.lines().map(str::to_string));
            push_choices(shown, buttons(&payload["buttons"]), first_number);
        }
        Some("generic") => {
            for element in payload["elements"].as_array().into_iter().flatten() {
                shown.lines.push(element_heading(element));
                push_choices(shown, buttons(&element["buttons"]), first_number);
            }
        }
        other => shown
            .lines
            .push(format!("[{} template]", other.unwrap_or("unknown"))),
    }
}

/// `* Title - subtitle` for one card of a generic template.
fn element_heading(element: &Value) -> String {
    let title = element["title"].as_str().unwrap_or_default();
    match element["subtitle"].as_str() {
        Some(subtitle) => format!("* {title} - {subtitle}"),
        None => format!("* {title}"),
    }
}

fn buttons(buttons: &Value) -> Vec<Choice> {
    buttons
        .as_array()
        .into_iter()
        .flatten()
        .map(button_choice)
        .collect()
}

fn button_choice(button: &Value) -> Choice {
    let field = |name: &str| button[name].as_str().unwrap_or_default().to_string();
    let title = field("title");
    match button["type"].as_str().unwrap_or_default() {
        "postback" => Choice::Postback {
            title,
            payload: field("payload"),
        },
        "web_url" => Choice::OpenUrl {
            title,
            url: field("url"),
        },
        kind => Choice::Unsupported {
            title,
            kind: kind.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request(message: Value) -> SendRequest {
        serde_json::from_value(json!({"recipient": {"id": "u"}, "message": message}))
            .expect("a Send API request")
    }

    #[test]
    fn text_with_quick_replies_shows_numbered_choices_after_the_text() {
        let shown = render(
            &request(json!({
                "text": "What is it about?",
                "quick_replies": [
                    {"content_type": "text", "title": "Billing", "payload": "TOPIC_BILLING"},
                    {"content_type": "text", "title": "Tech", "payload": "TOPIC_TECH"}
                ]
            })),
            1,
        );
        assert_eq!(shown.lines, ["What is it about?", "[1] Billing  [2] Tech"]);
        assert_eq!(
            shown.choices[1],
            Choice::QuickReply {
                text: "Tech".into(),
                payload: "TOPIC_TECH".into()
            }
        );
        assert!(!shown.is_aside);
    }

    #[test]
    fn numbering_continues_from_the_choices_already_shown() {
        let shown = render(
            &request(json!({"text": "More?", "quick_replies": [
                {"content_type": "text", "title": "Yes", "payload": "YES"}
            ]})),
            3,
        );
        assert_eq!(shown.lines[1], "[3] Yes");
    }

    #[test]
    fn a_button_template_shows_its_text_and_buttons() {
        let shown = render(
            &request(json!({"attachment": {"type": "template", "payload": {
                "template_type": "button",
                "text": "What would you like?",
                "buttons": [
                    {"type": "postback", "title": "Order", "payload": "ORDER"},
                    {"type": "web_url", "title": "Menu", "url": "https://example.com/menu"}
                ]
            }}})),
            1,
        );
        assert_eq!(
            shown.lines,
            [
                "What would you like?",
                "[1] Order  [2] Menu <https://example.com/menu>"
            ]
        );
        assert_eq!(
            shown.choices,
            [
                Choice::Postback {
                    title: "Order".into(),
                    payload: "ORDER".into()
                },
                Choice::OpenUrl {
                    title: "Menu".into(),
                    url: "https://example.com/menu".into()
                }
            ]
        );
    }

    #[test]
    fn a_generic_template_numbers_buttons_across_its_cards() {
        let shown = render(
            &request(json!({"attachment": {"type": "template", "payload": {
                "template_type": "generic",
                "elements": [
                    {"title": "Margherita", "subtitle": "Tomato, mozzarella",
                     "buttons": [{"type": "postback", "title": "Order", "payload": "P_MARG"}]},
                    {"title": "Marinara",
                     "buttons": [{"type": "postback", "title": "Order", "payload": "P_MARI"},
                                 {"type": "phone_number", "title": "Call", "payload": "+1"}]}
                ]
            }}})),
            1,
        );
        assert_eq!(
            shown.lines,
            [
                "* Margherita - Tomato, mozzarella",
                "[1] Order",
                "* Marinara",
                "[2] Order  [3] Call"
            ]
        );
        assert_eq!(
            shown.choices[1],
            Choice::Postback {
                title: "Order".into(),
                payload: "P_MARI".into()
            }
        );
        assert!(
            matches!(&shown.choices[2], Choice::Unsupported { kind, .. } if kind == "phone_number")
        );
    }

    #[test]
    fn media_and_unknown_templates_render_as_a_label() {
        let image = render(
            &request(
                json!({"attachment": {"type": "image", "payload": {"url": "https://x/a.png"}}}),
            ),
            1,
        );
        assert_eq!(image.lines, ["[image] https://x/a.png"]);
        let odd = render(
            &request(
                json!({"attachment": {"type": "template", "payload": {"template_type": "media", "elements": 7}}}),
            ),
            1,
        );
        assert_eq!(odd.lines, ["[media template]"]);
        assert!(odd.choices.is_empty());
    }

    #[test]
    fn email_and_phone_quick_replies_answer_with_console_values() {
        let shown = render(
            &request(
                json!({"text": "Your email?", "quick_replies": [{"content_type": "user_email"}]}),
            ),
            1,
        );
        assert_eq!(shown.lines[1], format!("[1] {CONSOLE_EMAIL}"));
    }

    #[test]
    fn sender_actions_are_asides_and_typing_off_shows_nothing() {
        let typing: SendRequest =
            serde_json::from_value(json!({"recipient": {"id": "u"}, "sender_action": "typing_on"}))
                .unwrap();
        let shown = render(&typing, 1);
        assert_eq!(shown.lines, ["(typing…)"]);
        assert!(shown.is_aside);
        let off: SendRequest = serde_json::from_value(
            json!({"recipient": {"id": "u"}, "sender_action": "typing_off"}),
        )
        .unwrap();
        assert!(render(&off, 1).lines.is_empty());
    }

    #[test]
    fn multi_line_text_becomes_one_line_each() {
        let shown = render(&request(json!({"text": "one\ntwo"})), 1);
        assert_eq!(shown.lines, ["one", "two"]);
    }
}
