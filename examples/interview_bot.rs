//! Run with: MESSENGER_VERIFY_TOKEN=... MESSENGER_APP_SECRET=... MESSENGER_ACCESS_TOKEN=... cargo run --example interview_bot
//!
//! A recruiting interview written as data, not code: the questions, their quick replies,
//! how each answer is checked (an amount, a number of years, a city, yes/no...) and where
//! each answer leads all live in `data/flows/interview.json`. colloquy's `TreeFlow` loads
//! the file, refuses it with every problem listed if it is broken, and asks the questions
//! one by one. Edit the JSON to change the interview; this file does not change.
//!
//! Settings of its own, both optional:
//! - `INTERVIEW_TREE`: the tree file (or a directory of trees) to serve; default
//!   `data/flows/interview.json`, relative to where you run the command (the repository
//!   root).
//! - `INTERVIEW_CALLBACK_URL`: an http(s) URL that receives each finished interview's
//!   answers as a JSON POST, sent durably with retries like any message.
//!
//! No Facebook app yet? Take the interview in this terminal instead, through the same
//! engine and a stand-in for Facebook: `cargo run --example interview_bot -- chat`.
//!
//! Every other setting comes from the same environment variables as `colloquy serve`
//! (`colloquy::launch::serve_or_chat`); the data directory defaults to
//! `data/interview_bot.sled`.
//!
//! Test with: cargo test --example interview_bot

use std::path::Path;
use std::process::ExitCode;

use colloquy::flow::tree::{TreeError, TreeFlow};

/// The interview this bot serves unless `INTERVIEW_TREE` names another.
pub const DEFAULT_TREE: &str = "data/flows/interview.json";

/// The interview flow: the tree(s) at `tree`, checked as a whole before anything is
/// served. With a `callback_url`, every finished interview (completed, or stopped by the
/// user) is POSTed there, unless its tree names its own `callback_url`.
pub fn interview_flow(tree: &Path, callback_url: Option<&str>) -> Result<TreeFlow, TreeError> {
    let flow = TreeFlow::load(tree)?;
    match callback_url {
        Some(url) => flow.with_callback_url(url),
        None => Ok(flow),
    }
}

/// Loads the tree (a broken one stops here, before a port or the data directory is
/// opened), then serves it to Facebook, or runs it in this terminal with `-- chat`.
#[actix_web::main]
async fn main() -> ExitCode {
    let tree = std::env::var("INTERVIEW_TREE").unwrap_or_else(|_| DEFAULT_TREE.into());
    let callback_url = std::env::var("INTERVIEW_CALLBACK_URL")
        .ok()
        .filter(|u| !u.is_empty());
    let flow = match interview_flow(Path::new(&tree), callback_url.as_deref()) {
        Ok(flow) => flow.into_handle(),
        Err(problems) => {
            eprintln!("interview_bot: {problems}");
            return ExitCode::FAILURE;
        }
    };
    match colloquy::launch::serve_or_chat(flow, "interview_bot").await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("interview_bot: {error}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use colloquy::event::{parse_envelope, InboundEvent};
    use colloquy::flow::tree::{InterviewState, Stage};
    use colloquy::flow::{Flow, Turn};
    use futures_util::FutureExt;
    use serde_json::json;
    use std::path::PathBuf;

    /// The shipped tree, wherever the tests run from.
    fn shipped_tree() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(DEFAULT_TREE)
    }

    /// A text message from user 42 to page 1, parsed as colloquy would.
    fn text(words: &str) -> InboundEvent {
        let body = format!(
            r#"{{"object":"page","entry":[{{"id":"1","time":1,"messaging":[{{"sender":{{"id":"42"}},"recipient":{{"id":"1"}},"timestamp":5,"message":{{"mid":"m","text":"{words}"}}}}]}}]}}"#
        );
        parse_envelope(body.as_bytes()).unwrap().remove(0)
    }

    /// Runs the flow once from `state`; returns the turn with the new state and replies.
    fn run(flow: &TreeFlow, state: InterviewState, words: &str) -> Turn<InterviewState> {
        let mut turn = Turn::for_test("42", state);
        flow.handle(&text(words), &mut turn)
            .now_or_never()
            .expect("a tree flow never waits")
            .expect("a tree flow handles every message");
        turn
    }

    fn texts(turn: &Turn<InterviewState>) -> Vec<&str> {
        turn.replies()
            .iter()
            .filter_map(|reply| reply.text_content())
            .collect()
    }

    #[test]
    fn the_first_message_gets_the_greeting_and_the_first_question() {
        let flow = interview_flow(&shipped_tree(), None).unwrap();
        let turn = run(&flow, InterviewState::default(), "Hi");
        let texts = texts(&turn);
        assert!(texts[0].starts_with("Hi! Thank you for your interest"));
        assert_eq!(
            texts[1],
            "What is your current salary (CTC)? For example 12 LPA or 1,20,000."
        );
        assert_eq!(
            turn.state().stage,
            Stage::Asking {
                question: "current_salary".into(),
                tries: 0
            }
        );
    }

    #[test]
    fn an_answer_is_recorded_as_a_number_and_the_next_question_follows() {
        let flow = interview_flow(&shipped_tree(), None).unwrap();
        let asked = run(&flow, InterviewState::default(), "Hi");
        let turn = run(&flow, asked.state().clone(), "12 LPA");
        assert_eq!(texts(&turn), ["What salary do you expect?"]);
        assert_eq!(turn.state().values["current_salary"], json!(1_200_000));
        assert_eq!(turn.state().answers[0].answer, "12 LPA");
    }

    #[test]
    fn an_answer_that_is_not_an_amount_is_explained_and_asked_again() {
        let flow = interview_flow(&shipped_tree(), None).unwrap();
        let asked = run(&flow, InterviewState::default(), "Hi");
        let turn = run(&flow, asked.state().clone(), "a lot");
        let texts = texts(&turn);
        assert_eq!(texts.len(), 2, "an explanation, then the question again");
        assert!(texts[1].starts_with("What is your current salary"));
        assert!(turn.state().values.is_empty());
    }

    #[test]
    fn with_a_callback_url_a_stopped_interview_queues_its_results() {
        let flow = interview_flow(&shipped_tree(), Some("https://crm.example/interviews")).unwrap();
        let asked = run(&flow, InterviewState::default(), "Hi");
        let turn = run(&flow, asked.state().clone(), "stop");
        let kinds: Vec<&str> = turn.replies().iter().map(|r| r.kind_name()).collect();
        assert_eq!(kinds, ["text", "callback"]);
    }

    #[test]
    fn a_callback_url_that_is_not_http_is_refused_at_startup() {
        let refused = interview_flow(&shipped_tree(), Some("ftp://crm.example/interviews"));
        assert!(refused.is_err());
    }
}
