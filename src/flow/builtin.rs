//! The flows shipped with the `colloquy` binary, chosen with `serve --flow NAME`, and the
//! reading of such a flow spec (a built-in name or `tree:PATH`) for `serve` and `chat`.
//!
//! `thanks` is the seed system's behaviour: every text message is answered
//! `Thank you for your time..!!`. `echo` repeats what the user sent. Both are stateless
//! beyond a message counter, which shows that state is persisted per conversation.
//! Must not know the command line: `cli` and `console` both come here, not to each other.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::tree::{TreeError, TreeFlow};
use super::{Flow, FlowError, FlowHandle, Turn};
use crate::messenger::inbound::{EventKind, InboundEvent};

/// The seed's reply to every text message.
pub const THANKS_TEXT: &str = "Thank you for your time..!!";

/// Names accepted by `serve --flow`.
pub const NAMES: &[&str] = &["thanks", "echo"];

/// A built-in flow by name.
pub fn by_name(name: &str) -> Option<FlowHandle> {
    match name {
        "thanks" => Some(FlowHandle::new(Thanks)),
        "echo" => Some(FlowHandle::new(Echo)),
        _ => None,
    }
}

/// Why a `--flow` spec names no flow that can be served.
#[derive(Debug, Error)]
pub(crate) enum FlowSpecError {
    /// Neither a built-in name nor `tree:PATH`.
    #[error("unknown flow `{spec}`; built-in flows: {}, or tree:PATH", NAMES.join(", "))]
    Unknown { spec: String },
    /// The interview tree could not be read, or has problems (each one listed).
    #[error("cannot load the flow `{spec}`")]
    Tree {
        spec: String,
        #[source]
        source: TreeError,
    },
}

/// The flow a `--flow` spec names: a built-in flow by name, or `tree:PATH` for the
/// interview tree in a JSON file (or every `*.json` tree of a directory, named by stem).
/// A tree with problems is an error listing each of them, so nothing is served.
pub(crate) fn resolve_flow(spec: &str) -> Result<FlowHandle, FlowSpecError> {
    if let Some(path) = spec.strip_prefix("tree:") {
        let flow = TreeFlow::load(path).map_err(|source| FlowSpecError::Tree {
            spec: spec.to_string(),
            source,
        })?;
        return Ok(flow.into_handle());
    }
    by_name(spec).ok_or_else(|| FlowSpecError::Unknown {
        spec: spec.to_string(),
    })
}

/// How many messages a user sent; kept so `inspect` shows a state that changes.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageCount {
    pub messages: u64,
}

/// Answers every text message with [`THANKS_TEXT`].
pub struct Thanks;

impl Flow for Thanks {
    type State = MessageCount;

    async fn handle(
        &self,
        event: &InboundEvent,
        turn: &mut Turn<MessageCount>,
    ) -> Result<(), FlowError> {
        if let EventKind::Message(message) = &event.kind {
            turn.state_mut().messages += 1;
            if message.text.is_some() {
                turn.say(THANKS_TEXT)?;
            }
        }
        Ok(())
    }
}

/// Repeats text, quick-reply payloads and postback payloads; describes attachments.
pub struct Echo;

impl Flow for Echo {
    type State = MessageCount;

    async fn handle(
        &self,
        event: &InboundEvent,
        turn: &mut Turn<MessageCount>,
    ) -> Result<(), FlowError> {
        turn.state_mut().messages += 1;
        match &event.kind {
            EventKind::Message(message) => match (&message.text, message.attachments.first()) {
                (Some(text), _) => turn.say(text.clone())?,
                (None, Some(attachment)) => turn.say(format!(
                    "You sent {} attachment(s), the first of type {}.",
                    message.attachments.len(),
                    attachment.kind
                ))?,
                (None, None) => {}
            },
            EventKind::Postback(postback) => {
                let shown = postback
                    .payload
                    .as_deref()
                    .or(postback.title.as_deref())
                    .unwrap_or("a button");
                turn.say(format!("You pressed {shown}."))?;
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messenger::inbound::parse_envelope;
    use futures_util::FutureExt;

    fn event(messaging: &str) -> InboundEvent {
        let body = format!(
            r#"{{"object":"page","entry":[{{"id":"1","time":1,"messaging":[{messaging}]}}]}}"#
        );
        parse_envelope(body.as_bytes()).unwrap().remove(0)
    }

    fn run<F: Flow<State = MessageCount>>(flow: F, event: &InboundEvent) -> Turn<MessageCount> {
        let mut turn = Turn::for_test("2", MessageCount::default());
        flow.handle(event, &mut turn)
            .now_or_never()
            .expect("built-in flows never wait")
            .unwrap();
        turn
    }

    const TEXT: &str = r#"{"sender":{"id":"2"},"recipient":{"id":"1"},"timestamp":5,"message":{"mid":"m1","text":"hello"}}"#;

    #[test]
    fn thanks_answers_a_text_message_with_the_seed_text() {
        let turn = run(Thanks, &event(TEXT));
        assert_eq!(turn.replies().len(), 1);
        assert_eq!(turn.replies()[0].text_content(), Some(THANKS_TEXT));
        assert_eq!(turn.state().messages, 1);
    }

    #[test]
    fn thanks_does_not_answer_an_attachment_without_text() {
        let turn = run(
            Thanks,
            &event(
                r#"{"sender":{"id":"2"},"recipient":{"id":"1"},"timestamp":5,"message":{"mid":"m1","attachments":[{"type":"image","payload":{"url":"https://x"}}]}}"#,
            ),
        );
        assert!(turn.replies().is_empty());
    }

    #[test]
    fn echo_repeats_text_and_postback_payloads() {
        let turn = run(Echo, &event(TEXT));
        assert_eq!(turn.replies()[0].text_content(), Some("hello"));
        let turn = run(
            Echo,
            &event(
                r#"{"sender":{"id":"2"},"recipient":{"id":"1"},"timestamp":5,"postback":{"mid":"p1","title":"Start","payload":"GET_STARTED"}}"#,
            ),
        );
        assert_eq!(
            turn.replies()[0].text_content(),
            Some("You pressed GET_STARTED.")
        );
    }

    #[test]
    fn every_builtin_name_resolves_and_others_do_not() {
        for name in NAMES {
            assert!(by_name(name).is_some(), "{name}");
        }
        assert!(by_name("nope").is_none());
    }

    #[test]
    fn a_flow_spec_is_a_builtin_name_or_a_tree_path() {
        assert!(resolve_flow("echo").is_ok());
        let interview = concat!(env!("CARGO_MANIFEST_DIR"), "/data/flows/interview.json");
        assert!(resolve_flow(&format!("tree:{interview}")).is_ok());
    }

    #[test]
    fn an_unknown_flow_spec_is_an_error_that_lists_the_choices() {
        let error = resolve_flow("nope").expect_err("no flow is called nope");
        assert_eq!(
            error.to_string(),
            "unknown flow `nope`; built-in flows: thanks, echo, or tree:PATH"
        );
    }

    #[test]
    fn a_tree_that_cannot_be_loaded_is_an_error_naming_the_spec_with_its_cause() {
        let error = resolve_flow("tree:/no/such/tree.json").expect_err("the tree does not exist");
        assert_eq!(
            error.to_string(),
            "cannot load the flow `tree:/no/such/tree.json`"
        );
        assert!(matches!(
            error,
            FlowSpecError::Tree {
                source: TreeError::Io { .. },
                ..
            }
        ));
    }
}
