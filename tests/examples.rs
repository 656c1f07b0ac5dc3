//! The example bots through the real engine: each example's flow, as its `main` builds
//! it, behind the real webhook, conversation actors, sled, timers and sender, with a mock
//! Graph API that is a real HTTP server. The examples' own unit tests check each state
//! on its own; these check that the whole conversation works when Facebook drives it.

#[path = "api/helpers.rs"]
#[allow(dead_code)]
mod helpers;

// The examples, compiled as modules of this test. Their `main` is an unused function
// here, hence `dead_code`; their unit tests run here too (as `pizza_bot::tests::...`).
#[path = "../examples/echo_bot.rs"]
#[allow(dead_code)]
mod echo_bot;
#[path = "../examples/interview_bot.rs"]
#[allow(dead_code)]
mod interview_bot;
#[path = "../examples/pizza_bot.rs"]
#[allow(dead_code)]
mod pizza_bot;

use std::path::Path;
use std::time::Duration;

use colloquy::flow::tree::CANCELED_TEXT;
use colloquy::FlowHandle;
use serde_json::{json, Value};

use helpers::*;
use pizza_bot::PizzaBot;

/// The `message.text` of a send, or of its button template.
fn text_of(send: &Recorded) -> &str {
    let message = &send.body["message"];
    message["text"]
        .as_str()
        .or(message["attachment"]["payload"]["text"].as_str())
        .unwrap_or_default()
}

/// The template type of a send (`generic`, `button`), or "" for a plain message.
fn template_of(send: &Recorded) -> &str {
    send.body["message"]["attachment"]["payload"]["template_type"]
        .as_str()
        .unwrap_or_default()
}

/// The payloads a send offers: its quick replies' and its template buttons'.
fn payloads_of(send: &Recorded) -> Vec<&str> {
    let message = &send.body["message"];
    let quick_replies = message["quick_replies"].as_array().into_iter().flatten();
    let template = &message["attachment"]["payload"];
    let buttons = template["buttons"].as_array().into_iter().flatten();
    let card_buttons = template["elements"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|card| card["buttons"].as_array().into_iter().flatten());
    quick_replies
        .chain(buttons)
        .chain(card_buttons)
        .filter_map(|choice| choice["payload"].as_str())
        .collect()
}

/// What reached the conversation, in order: the kinds of its inbound transcript lines.
fn inbound_kinds(doc: &Value) -> Vec<&str> {
    doc["transcript"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|line| line["direction"] == "in")
        .filter_map(|line| line["kind"].as_str())
        .collect()
}

#[actix_web::test]
async fn the_echo_bot_repeats_each_message_in_order() {
    let app = spawn_app_with(Options {
        flow: FlowHandle::new(echo_bot::EchoBot),
        ..Options::default()
    })
    .await;
    let mut user = User::new(&app, "51001");

    user.says("Hello, bot!").await;
    user.says("Do you copy?").await;

    let sends = app.graph.wait_for_sends(2).await;
    let texts: Vec<&str> = sends.iter().map(text_of).collect();
    assert_eq!(texts, ["Hello, bot!", "Do you copy?"]);
    assert!(sends.iter().all(|s| s.body["recipient"]["id"] == "51001"));
}

#[actix_web::test]
async fn the_interview_bot_asks_the_shipped_questions_and_posts_a_stopped_interview() {
    let graph = MockGraph::start();
    let dir = tempfile::tempdir().unwrap();
    let tree = Path::new(env!("CARGO_MANIFEST_DIR")).join(interview_bot::DEFAULT_TREE);
    // As with INTERVIEW_CALLBACK_URL=...: the mock answers `/hook` with 200.
    let callback_url = format!("{}/hook", graph.url);
    let flow = interview_bot::interview_flow(&tree, Some(&callback_url))
        .expect("the shipped interview loads");
    let options = Options {
        flow: flow.into_handle(),
        ..Options::default()
    };
    let app = spawn_app_on(graph, &dir.path().join("db"), options).await;
    let mut user = User::new(&app, "51002");

    user.says("Hi").await;
    let sends = app.graph.wait_for_sends(2).await;
    assert!(text_of(&sends[0]).starts_with("Hi! Thank you for your interest"));
    assert!(text_of(&sends[1]).starts_with("What is your current salary"));
    user.says("12 LPA").await;
    let sends = app.graph.wait_for_sends(3).await;
    assert_eq!(text_of(&sends[2]), "What salary do you expect?");
    user.says("15 lakhs").await;
    let sends = app.graph.wait_for_sends(4).await;
    assert_eq!(
        text_of(&sends[3]),
        "How many years of total work experience do you have?"
    );
    user.says("stop").await;
    let sends = app.graph.wait_for_sends(5).await;
    assert_eq!(text_of(&sends[4]), CANCELED_TEXT);

    let hook = wait_until("the results at the callback URL", || {
        app.graph
            .requests()
            .into_iter()
            .find(|r| r.path.ends_with("/hook") && r.status == 200)
    })
    .await;
    assert_eq!(hook.body["status"], "canceled");
    assert_eq!(
        hook.body["values"],
        json!({"current_salary": 1_200_000, "expected_salary": 1_500_000})
    );
    let doc = app
        .wait_for_conversation("51002", |d| d["state"]["stage"]["status"] == "canceled")
        .await;
    assert_eq!(doc["state"]["stage"]["question"], "experience");
}

/// A whole order driven by Facebook events: a text, a card's postback button, a size
/// quick reply, then silence until the reminder fires, then the order button, and the
/// delivery timer's message.
#[actix_web::test]
async fn a_pizza_is_ordered_with_a_reminder_on_the_way_and_then_delivered() {
    let bot = PizzaBot::new(Duration::from_millis(300), Duration::from_millis(300));
    let app = spawn_app_with(Options {
        flow: FlowHandle::new(bot),
        ..Options::default()
    })
    .await;
    let mut user = User::new(&app, "51003");

    user.says("hi").await;
    let sends = app.graph.wait_for_sends(2).await;
    assert_eq!(
        text_of(&sends[0]),
        "Hi! I take pizza orders. Which one would you like?"
    );
    assert_eq!(template_of(&sends[1]), "generic");
    assert_eq!(
        payloads_of(&sends[1]),
        ["PIZZA_MARGHERITA", "PIZZA_PEPPERONI", "PIZZA_FUNGHI"]
    );

    user.presses("Choose", "PIZZA_PEPPERONI").await;
    let sends = app.graph.wait_for_sends(3).await;
    assert_eq!(text_of(&sends[2]), "Pepperoni, good choice. Which size?");
    assert_eq!(
        payloads_of(&sends[2]),
        ["SIZE_SMALL", "SIZE_MEDIUM", "SIZE_LARGE"]
    );

    user.taps("Large", "SIZE_LARGE").await;
    let sends = app.graph.wait_for_sends(4).await;
    assert_eq!(template_of(&sends[3]), "button");
    assert_eq!(
        text_of(&sends[3]),
        "One large Pepperoni. Shall I place the order?"
    );
    assert_eq!(payloads_of(&sends[3]), ["CONFIRM", "CANCEL"]);

    // The user says nothing: the reminder timer fires and asks again.
    let sends = app.graph.wait_for_sends(5).await;
    assert_eq!(
        text_of(&sends[4]),
        "Still there? Your large Pepperoni is waiting. Shall I place the order?"
    );
    assert_eq!(payloads_of(&sends[4]), ["CONFIRM", "CANCEL"]);

    user.presses("Order it", "CONFIRM").await;
    let sends = app.graph.wait_for_sends(6).await;
    assert_eq!(
        text_of(&sends[5]),
        "Thank you! Your large Pepperoni is in the oven. I will tell you when it leaves."
    );
    let sends = app.graph.wait_for_sends(7).await;
    assert_eq!(
        text_of(&sends[6]),
        "Your large Pepperoni is on its way! Enjoy your meal."
    );

    let doc = app
        .wait_for_conversation("51003", |d| d["state"]["step"] == "ordered")
        .await;
    assert_eq!(
        doc["state"],
        json!({"step": "ordered", "order": {"pizza": "pepperoni", "size": "large"}})
    );
    assert_eq!(
        inbound_kinds(&doc),
        [
            "text",
            "postback",
            "quick_reply",
            "timer",
            "postback",
            "timer"
        ]
    );
    assert_eq!(app.graph.sends().len(), 7, "one reminder only");
}

/// Answering "Shall I place the order?" cancels the reminder. The delivery timer is due
/// after the reminder would have been, and timers fire in due order, so once "on its
/// way" arrives a live reminder would have been sent already.
#[actix_web::test]
async fn confirming_in_time_cancels_the_reminder() {
    let bot = PizzaBot::new(Duration::from_secs(1), Duration::from_millis(1500));
    let app = spawn_app_with(Options {
        flow: FlowHandle::new(bot),
        ..Options::default()
    })
    .await;
    let mut user = User::new(&app, "51004");

    // Events of one user are handled in order, so there is no need to wait for each
    // answer; the confirmation is in well before the reminder's second is up.
    user.says("hi").await;
    user.presses("Choose", "PIZZA_FUNGHI").await;
    user.taps("Small", "SIZE_SMALL").await;
    user.presses("Order it", "CONFIRM").await;

    let sends = app.graph.wait_for_sends(6).await;
    let texts: Vec<&str> = sends.iter().map(text_of).collect();
    assert_eq!(
        texts[3..],
        [
            "One small Funghi. Shall I place the order?",
            "Thank you! Your small Funghi is in the oven. I will tell you when it leaves.",
            "Your small Funghi is on its way! Enjoy your meal.",
        ]
    );
    assert_eq!(app.graph.sends().len(), 6, "no reminder was sent");
    // Not only unsent: the reminder never fired. Only the delivery timer reached the
    // flow (the transcript is committed before the replies are sent).
    let doc = app.conversation("51004").await;
    assert_eq!(
        inbound_kinds(&doc),
        ["text", "postback", "quick_reply", "postback", "timer"]
    );
}
