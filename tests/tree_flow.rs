//! Interview trees end to end: the shipped recruiting interview driven through the real
//! webhook, conversation actors, sled and sender, and an interview's results POSTed to
//! its tree's callback URL through the outbox.

#[path = "api/helpers.rs"]
#[allow(dead_code)]
mod helpers;

use std::path::Path;

use colloquy::flow::tree::TreeFlow;
use colloquy::FlowHandle;
use serde_json::json;

use helpers::*;

const PSID: &str = "31337";

fn shipped_interview() -> FlowHandle {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/flows/interview.json");
    TreeFlow::load(&path)
        .expect("the shipped interview loads")
        .into_handle()
}

fn text_of(send: &Recorded) -> &str {
    send.body["message"]["text"].as_str().unwrap_or_default()
}

fn quick_reply_titles(send: &Recorded) -> Vec<&str> {
    send.body["message"]["quick_replies"]
        .as_array()
        .map(|qrs| qrs.iter().filter_map(|qr| qr["title"].as_str()).collect())
        .unwrap_or_default()
}

/// The shipped interview, start to finish, with one invalid answer on the way, leaves
/// ordered pairs and structured values in the persisted state.
#[actix_web::test]
async fn the_shipped_interview_runs_to_completion_and_keeps_the_answers() {
    let app = spawn_app_with(Options {
        flow: shipped_interview(),
        ..Options::default()
    })
    .await;
    let mut user = User::new(&app, PSID);

    let sends = user.says_awaiting("Hi", 2).await;
    assert!(text_of(&sends[0]).starts_with("Hi! Thank you for your interest"));
    assert!(text_of(&sends[1]).starts_with("What is your current salary"));
    user.says_awaiting("12 LPA", 3).await;
    user.says_awaiting("15 lakhs", 4).await;
    user.says_awaiting("5 years", 5).await;
    let sends = user.says_awaiting("411001", 7).await;
    assert_eq!(
        text_of(&sends[5]),
        "Please answer with the name of a city or place, like Pune or New Delhi."
    );
    assert_eq!(text_of(&sends[6]), "Which city do you currently live in?");
    let sends = user.says_awaiting("Pune", 8).await;
    assert_eq!(text_of(&sends[7]), "Are you serving a notice period?");
    assert_eq!(quick_reply_titles(&sends[7]), ["Yes", "No"]);
    let sends = user.taps_awaiting("Yes", "Yes", 9).await;
    assert_eq!(text_of(&sends[8]), "How many days are left?");
    user.says_awaiting("30 days", 10).await;
    user.says_awaiting("Rust, SQL and Kafka", 11).await;
    user.says_awaiting("Looking for bigger challenges", 12)
        .await;
    let sends = user.says_awaiting("I like your product", 13).await;
    assert_eq!(text_of(&sends[12]), THANKS);

    let doc = app
        .wait_for_conversation(PSID, |d| d["state"]["stage"]["status"] == "completed")
        .await;
    let pairs: Vec<(&str, &str)> = doc["state"]["answers"]
        .as_array()
        .expect("answers are a list")
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["answer"].as_str().unwrap()))
        .collect();
    assert_eq!(
        pairs,
        [
            ("current_salary", "12 LPA"),
            ("expected_salary", "15 lakhs"),
            ("experience", "5 years"),
            ("city", "Pune"),
            ("serving_notice", "Yes"),
            ("days_left", "30 days"),
            ("skills", "Rust, SQL and Kafka"),
            ("why_change", "Looking for bigger challenges"),
            ("why_join", "I like your product"),
        ]
    );
    assert_eq!(
        doc["state"]["answers"][0]["question"],
        "What is your current salary (CTC)? For example 12 LPA or 1,20,000."
    );
    assert_eq!(doc["state"]["answers"][5]["follow_up"], true);
    assert_eq!(
        doc["state"]["values"],
        json!({
            "current_salary": 1_200_000,
            "expected_salary": 1_500_000,
            "experience": 5,
            "city": "Pune",
            "serving_notice": true,
            "days_left": 30,
            "skills": "Rust, SQL and Kafka",
            "why_change": "Looking for bigger challenges",
            "why_join": "I like your product",
        })
    );
    let last_out = outbound(&doc).last().cloned().unwrap_or_default();
    assert_eq!(last_out["text"], THANKS);
    assert_eq!(app.graph.sends().len(), 13, "no extra replies");
    assert!(
        app.graph
            .requests()
            .iter()
            .all(|r| !r.path.ends_with("/hook")),
        "the shipped tree has no callback URL"
    );
}

/// `stop` mid-interview ends it politely, and the persisted state says canceled.
#[actix_web::test]
async fn stop_mid_interview_cancels_it_and_keeps_the_answers_so_far() {
    let app = spawn_app_with(Options {
        flow: shipped_interview(),
        ..Options::default()
    })
    .await;
    let mut user = User::new(&app, "31338");
    user.says_awaiting("hello", 2).await;
    user.says_awaiting("$3000", 3).await;
    let sends = user.says_awaiting("Stop", 4).await;
    assert!(text_of(&sends[3]).starts_with("Okay, I have stopped the interview."));
    let doc = app
        .wait_for_conversation("31338", |d| d["state"]["stage"]["status"] == "canceled")
        .await;
    assert_eq!(doc["state"]["stage"]["question"], "expected_salary");
    assert_eq!(doc["state"]["values"], json!({"current_salary": 3000}));
}

/// A tree with a `callback_url` POSTs the results there once the interview completes.
#[actix_web::test]
async fn a_completed_interview_is_posted_to_the_tree_callback_url() {
    let graph = MockGraph::start();
    let dir = tempfile::tempdir().unwrap();
    let tree = json!({
        "name": "feedback",
        "greeting_text": "Hi! Two quick questions.",
        "completion_text": THANKS,
        "callback_url": format!("{}/hook", graph.url),
        "start": "stars",
        "questions": [
            {"id": "stars", "text": "How many stars?", "validation": "rating",
             "quick_replies": ["1", "2", "3", "4", "5"], "next": "city"},
            {"id": "city", "text": "Where are you?", "validation": "place", "next": null}
        ]
    });
    let flow = TreeFlow::from_json(&tree.to_string()).expect("the tree loads");
    let app = spawn_app_on(
        graph,
        &dir.path().join("db"),
        Options {
            flow: flow.into_handle(),
            ..Options::default()
        },
    )
    .await;
    let mut user = User::new(&app, "31339");
    user.says_awaiting("hi", 2).await;
    user.taps_awaiting("4", "4", 3).await;
    user.says_awaiting("New Delhi", 4).await;

    let hook = wait_until("the results callback", || {
        app.graph
            .requests()
            .into_iter()
            .find(|r| r.path.ends_with("/hook") && r.status == 200)
    })
    .await;
    assert_eq!(hook.method, "POST");
    assert_eq!(
        hook.body,
        json!({
            "psid": "31339",
            "page_id": PAGE_ID,
            "tree": "feedback",
            "status": "completed",
            "answers": [
                {"id": "stars", "question": "How many stars?", "answer": "4"},
                {"id": "city", "question": "Where are you?", "answer": "New Delhi"}
            ],
            "values": {"stars": 4, "city": "New Delhi"}
        })
    );
    let doc = app
        .wait_for_conversation("31339", |d| {
            outbound(d)
                .iter()
                .any(|e| e["kind"] == "callback" && e["status"] == "sent")
        })
        .await;
    assert_eq!(doc["state"]["stage"]["status"], "completed");
}

/// `colloquy serve --flow tree:PATH` with a broken tree refuses to start and prints
/// every problem with its path, before opening the data directory or binding a port.
#[test]
fn serve_refuses_a_broken_tree_and_lists_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    let tree = json!({
        "name": "bad", "greeting_text": "Hi", "completion_text": "Bye", "start": "a",
        "questions": [
            {"id": "a", "text": "A?", "validation": "salary", "next": "gone"},
            {"id": "b", "text": "B?"}
        ]
    });
    std::fs::write(&bad, tree.to_string()).unwrap();
    let data = dir.path().join("db");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_colloquy"))
        .args([
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--admin-bind",
            "127.0.0.1:0",
        ])
        .arg("--flow")
        .arg(format!("tree:{}", bad.display()))
        .arg("--data")
        .arg(&data)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("MESSENGER_VERIFY_TOKEN", VERIFY_TOKEN)
        .env("MESSENGER_APP_SECRET", APP_SECRET)
        .env("MESSENGER_ACCESS_TOKEN", ACCESS_TOKEN)
        .output()
        .expect("the binary runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    for line in [
        "bad.json: questions[0].validation: unknown variant `salary`",
        "bad.json: questions[0].next: unknown question `gone`",
        "bad.json: questions[1]: question `b` is never asked",
    ] {
        assert!(stderr.contains(line), "`{line}` missing from:\n{stderr}");
    }
    assert!(!data.exists(), "nothing was served");
}
