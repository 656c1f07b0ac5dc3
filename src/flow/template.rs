//! Button and generic templates, checked against the Send API's limits when built.
//!
//! A button template is a text (≤ 640 characters) with 1 to 3 buttons; a generic
//! template is a carousel of 1 to 10 elements, each with a title (≤ 80), an optional
//! subtitle (≤ 80) and image, and up to 3 buttons. Button titles are at most 20
//! characters. Postback buttons come back to the flow as `postback` events with their
//! payload. Nothing here sends anything: it builds `Reply` values.

use serde::Serialize;
use serde_json::json;

use super::reply::{Reply, ReplyError, MAX_PAYLOAD_CHARS};

pub const MAX_BUTTON_TEXT_CHARS: usize = 640;
pub const MAX_BUTTONS: usize = 3;
pub const MAX_BUTTON_TITLE_CHARS: usize = 20;
pub const MAX_ELEMENTS: usize = 10;
pub const MAX_ELEMENT_TEXT_CHARS: usize = 80;

/// A button of a template.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Button {
    /// Sends a `postback` event with `payload` to the flow.
    Postback { title: String, payload: String },
    /// Opens `url` in the user's browser.
    WebUrl { title: String, url: String },
}

impl Button {
    pub fn postback(
        title: impl Into<String>,
        payload: impl Into<String>,
    ) -> Result<Button, ReplyError> {
        let (title, payload) = (title.into(), payload.into());
        check_text("button title", &title, MAX_BUTTON_TITLE_CHARS)?;
        check_text("button payload", &payload, MAX_PAYLOAD_CHARS)?;
        Ok(Button::Postback { title, payload })
    }

    pub fn url(title: impl Into<String>, url: impl Into<String>) -> Result<Button, ReplyError> {
        let (title, url) = (title.into(), url.into());
        check_text("button title", &title, MAX_BUTTON_TITLE_CHARS)?;
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(ReplyError::AttachmentUrl { url });
        }
        Ok(Button::WebUrl { title, url })
    }
}

/// One card of a generic template.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Element {
    title: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    subtitle: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    image_url: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    buttons: Vec<Button>,
}

impl Element {
    pub fn new(title: impl Into<String>) -> Result<Element, ReplyError> {
        let title = title.into();
        check_text("element title", &title, MAX_ELEMENT_TEXT_CHARS)?;
        Ok(Element {
            title,
            subtitle: None,
            image_url: None,
            buttons: Vec::new(),
        })
    }

    pub fn subtitle(mut self, subtitle: impl Into<String>) -> Result<Element, ReplyError> {
        let subtitle = subtitle.into();
        check_text("element subtitle", &subtitle, MAX_ELEMENT_TEXT_CHARS)?;
        self.subtitle = Some(subtitle);
        Ok(self)
    }

    pub fn image(mut self, url: impl Into<String>) -> Result<Element, ReplyError> {
        let url = url.into();
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(ReplyError::AttachmentUrl { url });
        }
        self.image_url = Some(url);
        Ok(self)
    }

    pub fn buttons(mut self, buttons: Vec<Button>) -> Result<Element, ReplyError> {
        check_count("an element's buttons", buttons.len(), 0, MAX_BUTTONS)?;
        self.buttons = buttons;
        Ok(self)
    }
}

fn check_text(what: &'static str, text: &str, max: usize) -> Result<(), ReplyError> {
    let chars = text.chars().count();
    if chars == 0 || chars > max {
        return Err(ReplyError::TemplateText { what, chars, max });
    }
    Ok(())
}

fn check_count(what: &'static str, count: usize, min: usize, max: usize) -> Result<(), ReplyError> {
    if count < min || count > max {
        return Err(ReplyError::TemplateCount {
            what,
            count,
            min,
            max,
        });
    }
    Ok(())
}

impl Reply {
    /// A text with 1 to 3 buttons under it.
    ///
    /// ```
    /// use colloquy::flow::{Button, Reply};
    /// let menu = Reply::buttons(
    ///     "What would you like?",
    ///     vec![Button::postback("Order", "ORDER")?, Button::url("Menu", "https://example.com/menu")?],
    /// )?;
    /// assert_eq!(menu.kind_name(), "template");
    /// # Ok::<(), colloquy::flow::ReplyError>(())
    /// ```
    pub fn buttons(text: impl Into<String>, buttons: Vec<Button>) -> Result<Reply, ReplyError> {
        let text = text.into();
        check_text("button template text", &text, MAX_BUTTON_TEXT_CHARS)?;
        check_count("a button template's buttons", buttons.len(), 1, MAX_BUTTONS)?;
        Ok(Reply::template(json!({
            "template_type": "button",
            "text": text,
            "buttons": buttons,
        })))
    }

    /// A carousel of 1 to 10 cards.
    ///
    /// ```
    /// use colloquy::flow::{Button, Element, Reply};
    /// let card = Element::new("Margherita")?
    ///     .subtitle("Tomato, mozzarella, basil")?
    ///     .buttons(vec![Button::postback("Order", "ORDER_MARGHERITA")?])?;
    /// let menu = Reply::generic(vec![card])?;
    /// assert_eq!(menu.kind_name(), "template");
    /// # Ok::<(), colloquy::flow::ReplyError>(())
    /// ```
    pub fn generic(elements: Vec<Element>) -> Result<Reply, ReplyError> {
        check_count(
            "a generic template's elements",
            elements.len(),
            1,
            MAX_ELEMENTS,
        )?;
        Ok(Reply::template(json!({
            "template_type": "generic",
            "elements": elements,
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::Body;

    fn payload_of(reply: Reply) -> serde_json::Value {
        match reply.into_parts().1 {
            Body::Message(message) => {
                let attachment = message.attachment.unwrap();
                assert_eq!(attachment.kind, "template");
                attachment.payload
            }
            other => panic!("a template is a message, not {other:?}"),
        }
    }

    #[test]
    fn a_button_template_has_the_send_api_shape() {
        let reply = Reply::buttons(
            "Pick",
            vec![
                Button::postback("Yes", "YES").unwrap(),
                Button::url("Site", "https://example.com").unwrap(),
            ],
        )
        .unwrap();
        assert_eq!(
            payload_of(reply),
            json!({"template_type": "button", "text": "Pick", "buttons": [
                {"type": "postback", "title": "Yes", "payload": "YES"},
                {"type": "web_url", "title": "Site", "url": "https://example.com"}
            ]})
        );
    }

    #[test]
    fn button_templates_need_one_to_three_buttons() {
        assert!(Reply::buttons("Pick", vec![]).is_err());
        let four = (0..4)
            .map(|i| Button::postback(format!("b{i}"), "P").unwrap())
            .collect();
        assert!(matches!(
            Reply::buttons("Pick", four),
            Err(ReplyError::TemplateCount { count: 4, .. })
        ));
    }

    #[test]
    fn titles_and_texts_are_held_to_their_limits() {
        assert!(Button::postback("x".repeat(21), "P").is_err());
        assert!(
            Reply::buttons("x".repeat(641), vec![Button::postback("a", "b").unwrap()]).is_err()
        );
        assert!(Element::new("x".repeat(81)).is_err());
        assert!(Element::new("ok").unwrap().subtitle("").is_err());
        assert!(Button::url("Site", "javascript:alert(1)").is_err());
    }

    #[test]
    fn a_generic_template_carries_its_cards() {
        let card = Element::new("Margherita")
            .unwrap()
            .subtitle("Tomato, mozzarella")
            .unwrap()
            .buttons(vec![Button::postback("Order", "ORDER_MARGHERITA").unwrap()])
            .unwrap();
        let payload = payload_of(Reply::generic(vec![card]).unwrap());
        assert_eq!(payload["template_type"], "generic");
        assert_eq!(payload["elements"][0]["title"], "Margherita");
        assert_eq!(
            payload["elements"][0]["buttons"][0]["payload"],
            "ORDER_MARGHERITA"
        );
        assert!(Reply::generic(vec![]).is_err());
    }
}
