//! Run with: MESSENGER_VERIFY_TOKEN=... MESSENGER_APP_SECRET=... MESSENGER_ACCESS_TOKEN=... cargo run --example echo_bot
//!
//! The smallest complete bot: it repeats what the user types. It is a `Flow` written by
//! hand (colloquy's built-in `echo` flow does the same) to show the whole API a bot needs:
//! one handler that looks at what the user did and queues replies, and a `main` that
//! starts the engine with it.
//!
//! No Facebook app yet? Talk to the bot in this terminal instead, through the same engine
//! and a stand-in for Facebook: `cargo run --example echo_bot -- chat` (`/quit` ends).
//!
//! Every other setting comes from the same environment variables as `colloquy serve`
//! (`colloquy::launch::serve_or_chat`); the data directory defaults to
//! `data/echo_bot.sled`.
//!
//! Test with: cargo test --example echo_bot

use std::process::ExitCode;

use colloquy::event::InboundEvent;
use colloquy::flow::{Flow, FlowError, FlowHandle, Input, Turn};

/// Repeats every text message back to its sender.
pub struct EchoBot;

impl Flow for EchoBot {
    /// An echo remembers nothing between messages, so its state is `()`.
    type State = ();

    async fn handle(&self, event: &InboundEvent, turn: &mut Turn<()>) -> Result<(), FlowError> {
        match event.input() {
            // `say` checks the Send API's limits; a reply Facebook would refuse becomes
            // an error here, and the engine records the event as failed.
            Input::Text(text) => turn.say(text)?,
            Input::Attachments(_) => turn.say("I can only repeat text. Try typing something.")?,
            // The "Get Started" button, or a tapped button or quick reply: say hello.
            Input::Postback { .. } | Input::QuickReply { .. } => {
                turn.say("Hi! Send me a message and I will repeat it.")?
            }
            // Referrals, timers and the rest: this bot has nothing to say to those.
            _ => {}
        }
        Ok(())
    }
}

/// Serves the bot to Facebook (configured like `colloquy serve`, from the environment),
/// or chats with it in this terminal with `-- chat`.
#[actix_web::main]
async fn main() -> ExitCode {
    match colloquy::launch::serve_or_chat(FlowHandle::new(EchoBot), "echo_bot").await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("echo_bot: {error}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use colloquy::event::parse_envelope;
    use futures_util::FutureExt;

    /// One messaging item from user 42 to page 1, parsed as colloquy would.
    fn event(item: &str) -> InboundEvent {
        let body = format!(
            r#"{{"object":"page","entry":[{{"id":"1","time":1,"messaging":[{{"sender":{{"id":"42"}},"recipient":{{"id":"1"}},"timestamp":5,{item}}}]}}]}}"#
        );
        parse_envelope(body.as_bytes()).unwrap().remove(0)
    }

    /// The texts the bot answers `event` with.
    fn answers(event: &InboundEvent) -> Vec<String> {
        let mut turn = Turn::for_test("42", ());
        EchoBot
            .handle(event, &mut turn)
            .now_or_never()
            .expect("the echo bot never waits")
            .expect("the echo bot handles every event");
        turn.replies()
            .iter()
            .map(|reply| reply.text_content().unwrap_or_default().to_string())
            .collect()
    }

    #[test]
    fn a_text_message_is_repeated_word_for_word() {
        let hello = event(r#""message":{"mid":"m1","text":"Hello, bot!"}"#);
        assert_eq!(answers(&hello), ["Hello, bot!"]);
    }

    #[test]
    fn a_picture_gets_an_explanation_instead() {
        let picture = event(
            r#""message":{"mid":"m2","attachments":[{"type":"image","payload":{"url":"https://x/cat.png"}}]}"#,
        );
        assert_eq!(
            answers(&picture),
            ["I can only repeat text. Try typing something."]
        );
    }

    #[test]
    fn the_get_started_button_gets_a_greeting() {
        let started = event(r#""postback":{"title":"Get Started","payload":"GET_STARTED"}"#);
        assert_eq!(
            answers(&started),
            ["Hi! Send me a message and I will repeat it."]
        );
    }

    #[test]
    fn an_m_me_link_opening_the_thread_gets_no_answer() {
        let link = event(r#""referral":{"ref":"promo","source":"SHORTLINK","type":"OPEN_THREAD"}"#);
        assert!(answers(&link).is_empty());
    }
}
