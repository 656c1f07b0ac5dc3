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
//! Besides the three required variables it reads `MESSENGER_GRAPH_URL`, `COLLOQUY_BIND`,
//! `COLLOQUY_WEBHOOK_PATH`, `COLLOQUY_ADMIN_TOKEN` and `COLLOQUY_DATA` (default
//! `data/echo_bot.sled`) as `colloquy serve` does.
//!
//! Test with: cargo test --example echo_bot

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use colloquy::config::{Config, RawConfig};
use colloquy::console::{stdin_lines, ChatArgs, Terminal, DEFAULT_PSID};
use colloquy::flow::{Flow, FlowError, FlowHandle, Input, Turn};
use colloquy::messenger::inbound::InboundEvent;

/// Where this bot keeps its conversations unless `COLLOQUY_DATA` says otherwise.
const DEFAULT_DATA_DIR: &str = "data/echo_bot.sled";

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

#[actix_web::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("echo_bot: {error:#}");
            ExitCode::from(1)
        }
    }
}

/// Serves the bot to Facebook, or chats with it in this terminal with `-- chat`.
async fn run() -> anyhow::Result<()> {
    let in_terminal = std::env::args().nth(1).as_deref() == Some("chat");
    // In the terminal, engine logs would interleave with the chat: only on if asked.
    if !in_terminal || std::env::var_os("RUST_LOG").is_some() {
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    }
    let data_dir = PathBuf::from(env("COLLOQUY_DATA").unwrap_or_else(|| DEFAULT_DATA_DIR.into()));
    let flow = FlowHandle::new(EchoBot);
    if in_terminal {
        let args = ChatArgs {
            flow: "echo_bot".into(),
            data_dir,
            psid: DEFAULT_PSID.into(),
        };
        let colours = std::io::stdout().is_terminal();
        let terminal = Terminal::new(Box::new(std::io::stdout()), colours);
        colloquy::console::chat(flow, &args, stdin_lines(), terminal).await?;
        return Ok(());
    }
    let config = Config::from_raw(RawConfig {
        verify_token: env("MESSENGER_VERIFY_TOKEN"),
        app_secret: env("MESSENGER_APP_SECRET"),
        access_token: env("MESSENGER_ACCESS_TOKEN"),
        graph_url: env("MESSENGER_GRAPH_URL"),
        bind: env("COLLOQUY_BIND"),
        data_dir: Some(data_dir),
        webhook_path: env("COLLOQUY_WEBHOOK_PATH"),
        admin_token: env("COLLOQUY_ADMIN_TOKEN"),
        ..RawConfig::default()
    })?;
    let app = colloquy::start(config, flow).await?;
    app.wait().await?;
    Ok(())
}

/// A setting from the environment; unset and empty both count as missing.
fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|value| !value.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use colloquy::messenger::inbound::parse_envelope;
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
