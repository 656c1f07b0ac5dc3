//! Interview trees as data: a JSON file of questions that the bot asks one by one over
//! Messenger, checking and recording each answer, as the seed's Django interview bot did.
//!
//! Owns the [`TreeFlow`] (one or more loaded trees, served as a [`Flow`](crate::flow::Flow))
//! and the tree format. Submodules: `format` (the checked model), `load` (files,
//! directories, errors), `read` (per-field checks), `graph` (links, reachability,
//! loops), `problem` (what is wrong, and where: shared by the last three), `answer`
//! (validation types), `action` (what a user did), `interview` (the flow) and `state`
//! (what it persists per user). Must not touch the engine: a tree flow is an ordinary
//! flow, and the engine persists its state and delivers its replies and callbacks.
//!
//! Run one with `colloquy serve --flow tree:data/flows/interview.json`, or
//! `--flow tree:data/flows` for every `*.json` tree of a directory.
//!
//! # Format
//!
//! ```json
//! {
//!   "name": "interview",
//!   "greeting_text": "Hi! A few questions about the role.",
//!   "completion_text": "Thank you for your time..!!",
//!   "callback_url": "https://crm.example/interviews",
//!   "start": "serving_notice",
//!   "questions": [
//!     {"id": "serving_notice", "text": "Are you serving a notice period?",
//!      "validation": "yes_no", "quick_replies": ["Yes", "No"],
//!      "branches": [{"answer": "yes", "next": "days_left"},
//!                   {"answer": "no", "next": "notice_period"}],
//!      "next": "notice_period"},
//!     {"id": "days_left", "text": "How many days are left?",
//!      "validation": "duration", "follow_up": true, "next": "city"},
//!     {"id": "notice_period", "text": "What is your notice period?",
//!      "validation": "duration", "max_tries": 2, "next": "city"},
//!     {"id": "city", "text": "Which city do you live in?", "validation": "place",
//!      "next": null}
//!   ]
//! }
//! ```
//!
//! - `name`: selects the tree (an m.me link's `ref`). Optional in a file (the file stem);
//!   in a directory it must equal the file stem.
//! - `greeting_text`, `completion_text`: sent before the first question and after the
//!   last answer. `callback_url` (optional): receives the results, see below.
//! - `start`: the first question's id.
//! - `questions`: a list (each with an `id`) or a map from id to question. Ids are strings
//!   or whole numbers (`"start": 1`, `"next": 2`). Per question:
//!   - `text` (required) and `quick_replies`: titles, or `{"title", "payload"}` objects
//!     (payload defaults to the title); at most 13, titles at most 20 characters.
//!   - `validation`: `free_text` (default), `yes_no` (a bool), `number`, `amount` (money
//!     such as `12 LPA`, `1,20,000`, `15k`, `$3000`, kept as a number), `duration`
//!     (`2 months`, `30 days`, `immediate`, kept in days), `place` (city or place name),
//!     `rating` (1-5), `email`, `phone`.
//!   - `next`: the default next question; absent or `null` ends the interview.
//!   - `branches`: `[{"answer", "next"}]`, tried in order before `next`. An answer matches
//!     the quick-reply payload, the typed text or the normalized value, ignoring case:
//!     `"yes"` matches `Yeah`, and `"30"` on a duration question matches `a month`.
//!   - `follow_up`: marks a question asked only because of an earlier answer; kept in
//!     the result. `max_tries` (default 3): attempts before moving on.
//!
//! Loading checks the whole tree and reports every problem with its JSON path: unknown
//! `start`, `next` or branch targets, questions nothing leads to, questions from which
//! every path loops forever, unknown validation types and fields, duplicate ids, empty
//! texts, quick-reply limits, quick-reply payloads or branch answers that can never be a
//! valid answer, a follow-up question as `start`, a non-http(s) `callback_url`.
//!
//! # Behaviour
//!
//! - The first message (or a Get Started postback) gets the greeting and the first
//!   question. A `ref` (referral, postback referral, message referral) naming a tree,
//!   ignoring case, picks it; otherwise the first tree (file-name order) is used.
//! - An answer that does not fit the question's validation is explained ("Please answer
//!   with a number of days, like 30 or 2 months.") and the question is asked again. After
//!   `max_tries` invalid attempts the question is recorded as unanswered (its last attempt
//!   in the pairs, `null` in the values) and the interview follows the default `next`.
//!   A tapped quick reply's payload is validated first, then its title.
//! - `stop` or `cancel` ends the interview politely and marks it canceled.
//! - State is the engine's: a user who comes back later continues at the same question.
//!   Opening a link mid-interview re-asks the current question (the `ref` is ignored
//!   until the interview ends).
//! - At the end the bot sends `completion_text`. The state keeps the ordered
//!   question/answer pairs and the normalized `values` by question id. With a
//!   `callback_url` (the tree's, else the flow's [`TreeFlow::with_callback_url`]) the
//!   results are POSTed through the engine's outbox, durably and with retries — for a
//!   canceled interview too, with `"status": "canceled"`.
//! - A user who completed the interview and writes again is told it is complete; a link
//!   naming a tree starts that tree afresh. A user who canceled and writes again starts
//!   over. Either way the finished interview moves to the state's `earlier` list.
//!
//! ```
//! use colloquy::flow::tree::TreeFlow;
//!
//! let flow = TreeFlow::from_json(r#"{
//!     "name": "feedback", "greeting_text": "Hi!", "completion_text": "Thanks!",
//!     "start": "stars",
//!     "questions": [{"id": "stars", "text": "How many stars?", "validation": "rating"}]
//! }"#).unwrap();
//! assert_eq!(flow.trees()[0].name, "feedback");
//!
//! let broken = TreeFlow::from_json(r#"{
//!     "name": "feedback", "greeting_text": "Hi!", "completion_text": "Thanks!",
//!     "start": "stars",
//!     "questions": [{"id": "stars", "text": "How many stars?", "next": "why"}]
//! }"#).unwrap_err();
//! assert!(broken.to_string().contains("questions[0].next: unknown question `why`"));
//! ```

mod action;
mod answer;
mod format;
mod graph;
mod interview;
mod load;
mod problem;
mod read;
mod state;
#[cfg(test)]
mod testing;

use std::path::Path;

use serde_json::Value;

pub use action::STOP_WORDS;
pub use answer::Validation;
pub use format::{Branch, Question, QuickReplySpec, Tree, DEFAULT_MAX_TRIES};
pub use interview::{
    ALREADY_COMPLETED_TEXT, CANCELED_TEXT, MOVING_ON_TEXT, NOTHING_TO_STOP_TEXT, WELCOME_BACK_TEXT,
};
pub use load::{load_trees, parse_tree, TreeError};
pub use problem::Problem;
pub use state::{AnswerPair, InterviewResult, InterviewState, Outcome, Stage};

use crate::flow::{FlowHandle, Reply};

/// One or more interview trees served as one flow; the first is the default.
#[derive(Debug, Clone)]
pub struct TreeFlow {
    trees: Vec<Tree>,
    /// Receives results of trees that have no `callback_url` of their own.
    callback_url: Option<String>,
}

impl TreeFlow {
    /// A flow over checked trees. Fails on an empty list or two trees with one name.
    pub fn new(trees: Vec<Tree>) -> Result<TreeFlow, TreeError> {
        let mut problems = Vec::new();
        if trees.is_empty() {
            problems.push(Problem::new("", "a tree flow needs at least one tree"));
        }
        for (i, tree) in trees.iter().enumerate() {
            if trees[..i]
                .iter()
                .any(|t| t.name.eq_ignore_ascii_case(&tree.name))
            {
                let message = format!("two trees are named `{}`", tree.name);
                problems.push(Problem::new("name", message));
            }
        }
        if !problems.is_empty() {
            return Err(TreeError::Invalid { problems });
        }
        Ok(TreeFlow {
            trees,
            callback_url: None,
        })
    }

    /// Loads a tree file, or every `*.json` tree of a directory (see [`load_trees`]).
    pub fn load(path: impl AsRef<Path>) -> Result<TreeFlow, TreeError> {
        TreeFlow::new(load_trees(path.as_ref())?)
    }

    /// A flow of the one tree in `json` (which must have a `name`).
    pub fn from_json(json: &str) -> Result<TreeFlow, TreeError> {
        let tree = parse_tree(json, None).map_err(|problems| TreeError::Invalid { problems })?;
        TreeFlow::new(vec![tree])
    }

    /// Sends the results of trees without their own `callback_url` to `url`.
    pub fn with_callback_url(mut self, url: impl Into<String>) -> Result<TreeFlow, TreeError> {
        let url = url.into();
        if let Err(error) = Reply::callback(url.clone(), Value::Null) {
            let problems = vec![Problem::new("callback_url", error.to_string())];
            return Err(TreeError::Invalid { problems });
        }
        self.callback_url = Some(url);
        Ok(self)
    }

    pub fn trees(&self) -> &[Tree] {
        &self.trees
    }

    /// The tree called `name`, ignoring case.
    pub fn tree(&self, name: &str) -> Option<&Tree> {
        self.trees
            .iter()
            .find(|t| t.name.eq_ignore_ascii_case(name))
    }

    /// The tree a user gets when no `ref` picks one.
    pub fn default_tree(&self) -> Option<&Tree> {
        self.trees.first()
    }

    /// The flow, ready for `colloquy::start`.
    pub fn into_handle(self) -> FlowHandle {
        FlowHandle::new(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("data/flows")
            .join(name)
    }

    #[test]
    fn the_shipped_interview_tree_loads_clean() {
        let flow = TreeFlow::load(shipped("interview.json")).unwrap();
        let tree = &flow.trees()[0];
        assert_eq!(tree.name, "interview");
        assert_eq!(tree.completion_text, "Thank you for your time..!!");
        let validations: Vec<(&str, Validation)> = tree
            .questions
            .iter()
            .map(|q| (q.id.as_str(), q.validation))
            .collect();
        assert_eq!(
            validations,
            [
                ("current_salary", Validation::Amount),
                ("expected_salary", Validation::Amount),
                ("experience", Validation::Number),
                ("city", Validation::Place),
                ("serving_notice", Validation::YesNo),
                ("days_left", Validation::Duration),
                ("notice_period", Validation::Duration),
                ("skills", Validation::FreeText),
                ("why_change", Validation::FreeText),
                ("why_join", Validation::FreeText),
            ]
        );
        assert!(tree.question("days_left").unwrap().follow_up);
    }

    #[test]
    fn the_shipped_directory_loads_every_tree_in_file_order() {
        let flow = TreeFlow::load(shipped("")).unwrap();
        let names: Vec<&str> = flow.trees().iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["interview", "satisfaction"]);
        assert_eq!(flow.default_tree().unwrap().name, "interview");
        assert_eq!(flow.tree("INTERVIEW").unwrap().name, "interview");
    }

    #[test]
    fn two_trees_with_one_name_are_refused() {
        let tree = TreeFlow::load(shipped("interview.json")).unwrap().trees()[0].clone();
        let error = TreeFlow::new(vec![tree.clone(), tree]).unwrap_err();
        assert!(error
            .to_string()
            .contains("two trees are named `interview`"));
        assert!(TreeFlow::new(Vec::new()).is_err());
    }
}
