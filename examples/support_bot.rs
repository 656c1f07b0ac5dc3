//! Run with: MESSENGER_VERIFY_TOKEN=... MESSENGER_APP_SECRET=... MESSENGER_ACCESS_TOKEN=... cargo run --example support_bot
//!
//! A tiny help desk written as a user of the `colloquy` library would write it: its own
//! `Flow` over its own serde state, started by its own `main`.
//!
//! The conversation: a new user is greeted with three quick replies (Billing, Tech,
//! Other); after choosing, they describe the problem in one message; the bot opens a
//! ticket and confirms its number. Typing `restart` at any point starts over. Each user's
//! step and ticket count live in the state colloquy persists after every event, so a
//! conversation picks up where it left off after a restart of the process.
//!
//! `colloquy::launch::serve_or_chat` reads every setting from the same environment
//! variables as `colloquy serve`, and `cargo run --example support_bot -- chat` talks to
//! the bot in this terminal instead. The data directory defaults to
//! `data/support_bot.sled`, not `data/db`: a data directory holds one flow's state, and
//! this flow's state is not the built-in flows' state.
//!
//! Test with: cargo test --example support_bot

use std::process::ExitCode;

use colloquy::event::{EventKind, InboundEvent};
use colloquy::flow::{quick_reply, Flow, FlowError, FlowHandle, Reply, ReplyError, Turn};
use serde::{Deserialize, Serialize};

/// The keyword that starts a conversation over, whatever step it is at.
const RESTART: &str = "restart";

/// What a ticket is about; chosen with a quick reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Topic {
    Billing,
    Tech,
    Other,
}

impl Topic {
    const ALL: [Topic; 3] = [Topic::Billing, Topic::Tech, Topic::Other];

    /// The button the user taps.
    fn title(self) -> &'static str {
        match self {
            Topic::Billing => "Billing",
            Topic::Tech => "Tech",
            Topic::Other => "Other",
        }
    }

    /// What comes back in `message.quick_reply.payload` when the button is tapped.
    fn payload(self) -> &'static str {
        match self {
            Topic::Billing => "TOPIC_BILLING",
            Topic::Tech => "TOPIC_TECH",
            Topic::Other => "TOPIC_OTHER",
        }
    }

    /// A tapped button, or the same word typed by hand.
    fn parse(input: &str) -> Option<Topic> {
        Topic::ALL
            .into_iter()
            .find(|t| input == t.payload() || input.eq_ignore_ascii_case(t.title()))
    }
}

/// Where one user's conversation stands. Persisted by colloquy after every event; the
/// default is the state of a user never seen before.
///
/// `tickets` counts the tickets this user opened, so the next one gets a new number.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
enum Desk {
    /// Never talked to us.
    #[default]
    New,
    /// Was shown the topic buttons.
    ChoosingTopic { tickets: u32 },
    /// Chose a topic; the next text message is the description.
    Describing { topic: Topic, tickets: u32 },
    /// Ticket number `ticket` is open (it is also the number of tickets opened).
    Open { ticket: u32, topic: Topic },
}

impl Desk {
    fn tickets(&self) -> u32 {
        match self {
            Desk::New => 0,
            Desk::ChoosingTopic { tickets } | Desk::Describing { tickets, .. } => *tickets,
            Desk::Open { ticket, .. } => *ticket,
        }
    }
}

/// What the user sent, reduced to what this flow cares about.
enum Input<'a> {
    /// Typed text, or the payload of a tapped quick reply or button.
    Words(&'a str),
    /// A message without text (a sticker, a photo...).
    NoText,
}

fn input(event: &InboundEvent) -> Input<'_> {
    let words = match &event.kind {
        EventKind::Message(message) => message
            .quick_reply
            .as_ref()
            .map(|answer| answer.payload.as_str())
            .or(message.text.as_deref()),
        EventKind::Postback(postback) => postback.payload.as_deref().or(postback.title.as_deref()),
        _ => None,
    };
    match words.map(str::trim) {
        Some(words) if !words.is_empty() => Input::Words(words),
        _ => Input::NoText,
    }
}

/// A text message with the three topic buttons under it.
fn topic_menu(text: &str) -> Result<Reply, ReplyError> {
    let buttons = Topic::ALL
        .into_iter()
        .map(|topic| quick_reply(topic.title(), topic.payload()))
        .collect::<Result<Vec<_>, _>>()?;
    Reply::text(text)?.with_quick_replies(buttons)
}

/// A ticket number that is unique across users: their page-scoped id and a counter.
fn ticket_number(psid: &str, ticket: u32) -> String {
    format!("{psid}-{ticket}")
}

/// The help desk.
struct SupportBot;

impl Flow for SupportBot {
    type State = Desk;

    async fn handle(&self, event: &InboundEvent, turn: &mut Turn<Desk>) -> Result<(), FlowError> {
        let input = input(event);
        let tickets = turn.state().tickets();
        if matches!(input, Input::Words(w) if w.eq_ignore_ascii_case(RESTART)) {
            turn.reply(topic_menu("Starting over. What do you need help with?")?);
            turn.set_state(Desk::ChoosingTopic { tickets });
            return Ok(());
        }
        match turn.state().clone() {
            Desk::New => {
                turn.reply(topic_menu(
                    "Hi! I can open a support ticket for you. What is it about?",
                )?);
                turn.set_state(Desk::ChoosingTopic { tickets });
            }
            Desk::ChoosingTopic { tickets } => match input {
                Input::Words(words) => match Topic::parse(words) {
                    Some(topic) => {
                        turn.say(format!(
                            "{}: got it. Describe the problem in one message.",
                            topic.title()
                        ))?;
                        turn.set_state(Desk::Describing { topic, tickets });
                    }
                    None => turn.reply(topic_menu("Please pick one of these:")?),
                },
                Input::NoText => turn.reply(topic_menu("Please pick one of these:")?),
            },
            Desk::Describing { topic, tickets } => match input {
                Input::Words(_) => {
                    let ticket = tickets + 1;
                    turn.say(format!(
                        "Thanks. Ticket {} ({}) is open; we will answer here. Type {RESTART} to open another.",
                        ticket_number(turn.psid(), ticket),
                        topic.title()
                    ))?;
                    turn.set_state(Desk::Open { ticket, topic });
                }
                Input::NoText => turn.say("Please describe the problem in words.")?,
            },
            Desk::Open { ticket, .. } => {
                turn.say(format!(
                    "Ticket {} is open; we will answer here. Type {RESTART} to open another.",
                    ticket_number(turn.psid(), ticket)
                ))?;
            }
        }
        Ok(())
    }
}

/// Serves the bot to Facebook (configured like `colloquy serve`, from the environment),
/// or chats with it in this terminal with `-- chat`.
#[actix_web::main]
async fn main() -> ExitCode {
    match colloquy::launch::serve_or_chat(FlowHandle::new(SupportBot), "support_bot").await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("support_bot: {error}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use colloquy::event::parse_envelope;
    use futures_util::FutureExt;

    const PSID: &str = "969833033053167";

    /// One messaging item from user `PSID` to page 1, parsed as colloquy would.
    fn event(item: &str) -> InboundEvent {
        let body = format!(
            r#"{{"object":"page","entry":[{{"id":"1","time":1,"messaging":[{{"sender":{{"id":"{PSID}"}},"recipient":{{"id":"1"}},"timestamp":5,{item}}}]}}]}}"#
        );
        parse_envelope(body.as_bytes()).unwrap().remove(0)
    }

    fn text(words: &str) -> InboundEvent {
        event(&format!(r#""message":{{"mid":"m","text":"{words}"}}"#))
    }

    fn tapped(title: &str, payload: &str) -> InboundEvent {
        event(&format!(
            r#""message":{{"mid":"m","text":"{title}","quick_reply":{{"payload":"{payload}"}}}}"#
        ))
    }

    /// Runs the flow once from `state`; returns the turn with the new state and replies.
    fn run(state: Desk, event: &InboundEvent) -> Turn<Desk> {
        let mut turn = Turn::for_test(PSID, state);
        SupportBot
            .handle(event, &mut turn)
            .now_or_never()
            .expect("the support bot never waits")
            .expect("the support bot handles every event");
        turn
    }

    #[test]
    fn a_new_user_is_greeted_with_the_three_topic_buttons() {
        let turn = run(Desk::New, &text("hi there."));
        assert_eq!(turn.replies().len(), 1);
        assert_eq!(turn.replies()[0].kind_name(), "quick_replies");
        assert_eq!(
            turn.replies()[0],
            topic_menu("Hi! I can open a support ticket for you. What is it about?").unwrap()
        );
        assert_eq!(*turn.state(), Desk::ChoosingTopic { tickets: 0 });
    }

    #[test]
    fn tapping_a_topic_asks_for_a_description() {
        let turn = run(
            Desk::ChoosingTopic { tickets: 0 },
            &tapped("Billing", "TOPIC_BILLING"),
        );
        assert_eq!(
            turn.replies()[0].text_content(),
            Some("Billing: got it. Describe the problem in one message.")
        );
        assert_eq!(
            *turn.state(),
            Desk::Describing {
                topic: Topic::Billing,
                tickets: 0
            }
        );
    }

    #[test]
    fn typing_a_topic_by_hand_works_like_tapping_it() {
        let turn = run(Desk::ChoosingTopic { tickets: 0 }, &text("tech"));
        assert!(matches!(
            turn.state(),
            Desk::Describing {
                topic: Topic::Tech,
                ..
            }
        ));
    }

    #[test]
    fn an_unknown_topic_shows_the_buttons_again() {
        let turn = run(Desk::ChoosingTopic { tickets: 0 }, &text("hardware"));
        assert_eq!(turn.replies()[0].kind_name(), "quick_replies");
        assert_eq!(*turn.state(), Desk::ChoosingTopic { tickets: 0 });
    }

    #[test]
    fn a_description_opens_a_ticket_with_the_next_number() {
        let state = Desk::Describing {
            topic: Topic::Tech,
            tickets: 2,
        };
        let turn = run(state, &text("The app crashes on start."));
        assert_eq!(
            turn.replies()[0].text_content(),
            Some("Thanks. Ticket 969833033053167-3 (Tech) is open; we will answer here. Type restart to open another.")
        );
        assert_eq!(
            *turn.state(),
            Desk::Open {
                ticket: 3,
                topic: Topic::Tech
            }
        );
    }

    #[test]
    fn a_sticker_is_not_taken_as_a_description() {
        let state = Desk::Describing {
            topic: Topic::Other,
            tickets: 0,
        };
        let sticker = event(
            r#""message":{"mid":"m","attachments":[{"type":"image","payload":{"url":"https://x/s.png"}}]}"#,
        );
        let turn = run(state.clone(), &sticker);
        assert_eq!(
            turn.replies()[0].text_content(),
            Some("Please describe the problem in words.")
        );
        assert_eq!(*turn.state(), state);
    }

    #[test]
    fn restart_starts_over_and_keeps_the_ticket_count() {
        let open = Desk::Open {
            ticket: 1,
            topic: Topic::Billing,
        };
        let turn = run(open, &text(" Restart "));
        assert_eq!(turn.replies()[0].kind_name(), "quick_replies");
        assert_eq!(*turn.state(), Desk::ChoosingTopic { tickets: 1 });
    }

    #[test]
    fn an_open_ticket_is_confirmed_again_on_any_message() {
        let open = Desk::Open {
            ticket: 1,
            topic: Topic::Billing,
        };
        let turn = run(open.clone(), &text("any news?"));
        assert_eq!(
            turn.replies()[0].text_content(),
            Some("Ticket 969833033053167-1 is open; we will answer here. Type restart to open another.")
        );
        assert_eq!(*turn.state(), open);
    }

    #[test]
    fn the_state_is_stored_as_tagged_json_and_reads_back() {
        let state = Desk::Describing {
            topic: Topic::Billing,
            tickets: 4,
        };
        let json = serde_json::to_value(&state).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"step": "describing", "topic": "billing", "tickets": 4})
        );
        assert_eq!(serde_json::from_value::<Desk>(json).unwrap(), state);
    }
}
