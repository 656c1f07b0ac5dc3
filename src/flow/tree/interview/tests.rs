//! Unit tests of the interview flow: one event at a time through `Flow::handle`, with the
//! tree, the state and the replies checked after each.

use super::*;
use crate::flow::tree::answer::Validation;
use crate::flow::tree::format::{Branch, DEFAULT_MAX_TRIES};
use crate::messenger::inbound::parse_envelope;
use futures_util::FutureExt;

fn event(item: Value) -> InboundEvent {
    let body = json!({"object": "page", "entry": [{"id": "1", "time": 1, "messaging": [item]}]});
    parse_envelope(body.to_string().as_bytes())
        .unwrap()
        .remove(0)
}

fn text(said: &str) -> InboundEvent {
    event(
        json!({"sender": {"id": "2"}, "recipient": {"id": "1"}, "timestamp": 5,
                  "message": {"mid": "m", "text": said}}),
    )
}

fn tapped(title: &str, payload: &str) -> InboundEvent {
    event(
        json!({"sender": {"id": "2"}, "recipient": {"id": "1"}, "timestamp": 5,
                  "message": {"mid": "m", "text": title, "quick_reply": {"payload": payload}}}),
    )
}

fn referral(ref_: &str) -> InboundEvent {
    event(
        json!({"sender": {"id": "2"}, "recipient": {"id": "1"}, "timestamp": 5,
                  "referral": {"ref": ref_, "source": "SHORTLINK", "type": "OPEN_THREAD"}}),
    )
}

fn get_started_from(ref_: &str) -> InboundEvent {
    event(
        json!({"sender": {"id": "2"}, "recipient": {"id": "1"}, "timestamp": 5,
                  "postback": {"title": "Get Started", "payload": "GET_STARTED",
                               "referral": {"ref": ref_, "source": "SHORTLINK", "type": "OPEN_THREAD"}}}),
    )
}

fn question(id: &str, validation: Validation, next: Option<&str>) -> Question {
    Question {
        id: id.into(),
        text: format!("Question {id}?"),
        quick_replies: Vec::new(),
        validation,
        next: next.map(str::to_string),
        branches: Vec::new(),
        follow_up: false,
        max_tries: DEFAULT_MAX_TRIES,
    }
}

/// serving (yes_no) → yes: days_left (follow-up) / no: notice; then city; end.
fn notice_tree(name: &str) -> Tree {
    let mut serving = question("serving", Validation::YesNo, Some("notice"));
    serving.quick_replies = crate::flow::tree::testing::yes_no_replies();
    serving.branches = vec![
        Branch {
            answer: "yes".into(),
            next: Some("days_left".into()),
        },
        Branch {
            answer: "no".into(),
            next: Some("notice".into()),
        },
    ];
    let mut days_left = question("days_left", Validation::Duration, Some("city"));
    days_left.follow_up = true;
    Tree {
        name: name.into(),
        greeting_text: format!("Hello from {name}!"),
        completion_text: "Thank you for your time..!!".into(),
        start: "serving".into(),
        questions: vec![
            serving,
            days_left,
            question("notice", Validation::Duration, Some("city")),
            question("city", Validation::Place, None),
        ],
        callback_url: None,
    }
}

fn flow() -> TreeFlow {
    TreeFlow::new(vec![notice_tree("jobs"), notice_tree("internships")]).unwrap()
}

fn run(flow: &TreeFlow, state: InterviewState, event: &InboundEvent) -> Turn<InterviewState> {
    let mut turn = Turn::for_test("2", state);
    flow.handle(event, &mut turn)
        .now_or_never()
        .expect("the tree flow never waits")
        .expect("the tree flow handles any input");
    turn
}

/// Runs each event in order, carrying the state; returns the last turn.
fn converse(flow: &TreeFlow, events: &[InboundEvent]) -> Turn<InterviewState> {
    let mut state = InterviewState::default();
    let mut last = None;
    for event in events {
        let turn = run(flow, state, event);
        state = turn.state().clone();
        last = Some(turn);
    }
    last.expect("at least one event")
}

fn said(turn: &Turn<InterviewState>) -> Vec<&str> {
    turn.replies()
        .iter()
        .filter_map(Reply::text_content)
        .collect()
}

fn asking(question: &str, tries: u32) -> Stage {
    Stage::Asking {
        question: question.into(),
        tries,
    }
}

#[test]
fn the_first_message_gets_the_greeting_and_the_first_question_with_its_quick_replies() {
    let turn = run(&flow(), InterviewState::default(), &text("hi"));
    assert_eq!(said(&turn), ["Hello from jobs!", "Question serving?"]);
    assert_eq!(turn.replies()[1].kind_name(), "quick_replies");
    assert_eq!(turn.state().stage, asking("serving", 0));
    assert_eq!(turn.state().tree.as_deref(), Some("jobs"));
}

#[test]
fn yes_branches_to_the_follow_up_and_no_to_the_notice_question() {
    let yes = converse(&flow(), &[text("hi"), text("Yeah")]);
    assert_eq!(yes.state().stage, asking("days_left", 0));
    assert_eq!(yes.state().values["serving"], json!(true));
    let no = converse(&flow(), &[text("hi"), tapped("No", "NO")]);
    assert_eq!(no.state().stage, asking("notice", 0));
    assert_eq!(said(&no), ["Question notice?"]);
    assert_eq!(no.state().answers[0].answer, "No");
}

#[test]
fn a_whole_interview_keeps_ordered_pairs_and_structured_values() {
    let done = converse(
        &flow(),
        &[text("hi"), text("yes"), text("2 months"), text("Pune")],
    );
    assert_eq!(done.state().stage, Stage::Completed);
    assert_eq!(said(&done), ["Thank you for your time..!!"]);
    let pairs: Vec<(&str, &str)> = done
        .state()
        .answers
        .iter()
        .map(|p| (p.id.as_str(), p.answer.as_str()))
        .collect();
    assert_eq!(
        pairs,
        [
            ("serving", "yes"),
            ("days_left", "2 months"),
            ("city", "Pune")
        ]
    );
    assert!(done.state().answers[1].follow_up);
    assert_eq!(
        serde_json::to_value(&done.state().values).unwrap(),
        json!({"serving": true, "days_left": 60, "city": "Pune"})
    );
    assert!(
        done.replies().iter().all(Reply::is_message),
        "no callback configured"
    );
}

#[test]
fn an_invalid_answer_is_explained_and_the_question_asked_again() {
    let turn = converse(&flow(), &[text("hi"), text("no"), text("soon-ish")]);
    assert_eq!(
        said(&turn),
        [
            "Please answer with a number of days, like 30 or 2 months.",
            "Question notice?"
        ]
    );
    assert_eq!(turn.state().stage, asking("notice", 1));
}

#[test]
fn after_the_last_try_the_question_is_recorded_unanswered_and_the_interview_moves_on() {
    let turn = converse(
        &flow(),
        &[
            text("hi"),
            text("no"),
            text("soon"),
            text("later"),
            text("dunno"),
        ],
    );
    assert_eq!(said(&turn), [MOVING_ON_TEXT, "Question city?"]);
    assert_eq!(turn.state().stage, asking("city", 0));
    let last = turn.state().answers.last().unwrap();
    assert_eq!(
        (last.id.as_str(), last.answer.as_str(), last.unanswered),
        ("notice", "dunno", true)
    );
    assert_eq!(turn.state().values["notice"], Value::Null);
}

#[test]
fn a_yes_no_question_out_of_tries_follows_its_default_next() {
    let turn = converse(&flow(), &[text("hi"), text("a"), text("b"), text("c")]);
    assert_eq!(turn.state().stage, asking("notice", 0));
}

#[test]
fn stop_or_cancel_ends_the_interview_politely_and_marks_it_canceled() {
    for word in ["stop", "Cancel", " STOP! "] {
        let turn = converse(&flow(), &[text("hi"), text("no"), text(word)]);
        assert_eq!(said(&turn), [CANCELED_TEXT]);
        assert_eq!(
            turn.state().stage,
            Stage::Canceled {
                question: "notice".into()
            }
        );
        assert_eq!(turn.state().answers.len(), 1, "answers so far are kept");
    }
}

#[test]
fn a_canceled_user_who_writes_again_starts_over_and_the_stopped_interview_is_kept() {
    let turn = converse(
        &flow(),
        &[text("hi"), text("no"), text("stop"), text("hello again")],
    );
    assert_eq!(said(&turn), ["Hello from jobs!", "Question serving?"]);
    assert_eq!(turn.state().stage, asking("serving", 0));
    assert!(turn.state().answers.is_empty());
    assert_eq!(turn.state().earlier.len(), 1);
    assert_eq!(turn.state().earlier[0].status, Outcome::Canceled);
}

#[test]
fn stop_before_anything_started_starts_nothing() {
    let turn = run(&flow(), InterviewState::default(), &text("stop"));
    assert_eq!(said(&turn), [NOTHING_TO_STOP_TEXT]);
    assert_eq!(turn.state().stage, Stage::NotStarted);
}

#[test]
fn a_referral_picks_the_tree_and_an_unknown_ref_falls_back_to_the_first() {
    let turn = run(&flow(), InterviewState::default(), &referral("internships"));
    assert_eq!(said(&turn)[0], "Hello from internships!");
    assert_eq!(turn.state().tree.as_deref(), Some("internships"));
    let turn = run(
        &flow(),
        InterviewState::default(),
        &get_started_from("INTERNSHIPS"),
    );
    assert_eq!(turn.state().tree.as_deref(), Some("internships"));
    let turn = run(&flow(), InterviewState::default(), &referral("nope"));
    assert_eq!(turn.state().tree.as_deref(), Some("jobs"));
}

#[test]
fn a_link_opened_mid_interview_asks_the_current_question_again() {
    let turn = converse(&flow(), &[text("hi"), text("no"), referral("internships")]);
    assert_eq!(said(&turn), [WELCOME_BACK_TEXT, "Question notice?"]);
    assert_eq!(turn.state().tree.as_deref(), Some("jobs"));
    assert_eq!(turn.state().stage, asking("notice", 0));
}

#[test]
fn a_returning_user_continues_from_the_persisted_state() {
    let halfway = converse(&flow(), &[text("hi"), text("yes")]);
    let stored = serde_json::to_value(halfway.state()).unwrap();
    assert_eq!(
        stored["stage"],
        json!({"status": "asking", "question": "days_left", "tries": 0})
    );
    let restored: InterviewState = serde_json::from_value(stored).unwrap();
    let turn = run(&flow(), restored, &text("15 days"));
    assert_eq!(turn.state().stage, asking("city", 0));
    assert_eq!(turn.state().values["days_left"], json!(15));
}

#[test]
fn a_completed_user_is_told_so_unless_a_link_names_a_tree() {
    let done = converse(&flow(), &[text("hi"), text("no"), text("30"), text("Pune")]);
    let again = run(&flow(), done.state().clone(), &text("hello?"));
    assert_eq!(said(&again), [ALREADY_COMPLETED_TEXT]);
    assert_eq!(again.state(), done.state());
    let other = run(&flow(), done.state().clone(), &referral("internships"));
    assert_eq!(said(&other)[0], "Hello from internships!");
    assert_eq!(other.state().earlier.len(), 1);
    assert_eq!(other.state().earlier[0].status, Outcome::Completed);
    assert_eq!(other.state().earlier[0].values["city"], json!("Pune"));
}

#[test]
fn completion_queues_the_results_for_the_tree_callback_url() {
    let mut tree = notice_tree("jobs");
    tree.callback_url = Some("https://crm.example/hook".into());
    let flow = TreeFlow::new(vec![tree]).unwrap();
    let done = converse(
        &flow,
        &[text("hi"), text("no"), text("immediate"), text("Pune")],
    );
    let callback = done.replies().last().unwrap();
    assert_eq!(callback.kind_name(), "callback");
    assert!(!callback.is_message());
    assert_eq!(said(&done), ["Thank you for your time..!!"]);
}

#[test]
fn the_flow_callback_url_serves_trees_without_their_own_and_cancels_are_reported_too() {
    let flow = TreeFlow::new(vec![notice_tree("jobs")])
        .unwrap()
        .with_callback_url("https://crm.example/all")
        .unwrap();
    let canceled = converse(&flow, &[text("hi"), text("cancel")]);
    assert_eq!(canceled.replies().last().unwrap().kind_name(), "callback");
    assert!(TreeFlow::new(vec![notice_tree("jobs")])
        .unwrap()
        .with_callback_url("mailto:x@y.z")
        .is_err());
}

#[test]
fn the_callback_body_holds_who_which_tree_how_and_the_answers() {
    let done = converse(
        &flow(),
        &[text("hi"), text("no"), text("30 days"), text("Pune")],
    );
    let body = callback_body(&done, "jobs", Outcome::Completed);
    assert_eq!(body["psid"], "2");
    assert_eq!(body["status"], "completed");
    assert_eq!(
        body["values"],
        json!({"serving": false, "notice": 30, "city": "Pune"})
    );
    assert_eq!(
        body["answers"][0],
        json!({"id": "serving", "question": "Question serving?", "answer": "no"})
    );
}

#[test]
fn events_that_are_not_user_input_are_ignored() {
    let read = event(
        json!({"sender": {"id": "2"}, "recipient": {"id": "1"}, "timestamp": 5,
                            "read": {"watermark": 4}}),
    );
    let turn = run(&flow(), InterviewState::default(), &read);
    assert!(turn.replies().is_empty());
    assert_eq!(turn.state(), &InterviewState::default());
}

#[test]
fn an_attachment_without_text_counts_as_an_invalid_answer() {
    let photo = event(
        json!({"sender": {"id": "2"}, "recipient": {"id": "1"}, "timestamp": 5,
        "message": {"mid": "m", "attachments": [{"type": "image", "payload": {"url": "https://x/y.png"}}]}}),
    );
    let turn = converse(&flow(), &[text("hi"), photo]);
    assert_eq!(
        said(&turn),
        ["Please answer yes or no.", "Question serving?"]
    );
    assert_eq!(turn.state().stage, asking("serving", 1));
}
