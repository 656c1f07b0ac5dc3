//! What the interview flow persists per user: the stage, the ordered question/answer
//! pairs, the normalized values, and earlier interviews. The engine stores it (as JSON,
//! shown by `colloquy inspect`) after every event.
//!
//! Owns the state types and their small mutations. Must not decide what to say or where
//! to go next; that is `interview`'s job.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::format::Question;

/// What the flow remembers about one user.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InterviewState {
    pub stage: Stage,
    /// The tree of the current (or last finished) interview; `None` before the first one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tree: Option<String>,
    /// Every question asked and what the user answered, in order.
    #[serde(default)]
    pub answers: Vec<AnswerPair>,
    /// Question id → normalized value (`null` for a question given up on). A question
    /// asked twice (a loop in the tree) keeps its last value.
    #[serde(default)]
    pub values: BTreeMap<String, Value>,
    /// Interviews this user finished before the current one, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub earlier: Vec<InterviewResult>,
}

/// Where a user is in their interview.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Stage {
    /// Never talked to the bot.
    #[default]
    NotStarted,
    /// `question` was asked; `tries` invalid answers to it so far.
    Asking {
        question: String,
        tries: u32,
    },
    Completed,
    /// Stopped by the user while `question` was asked.
    Canceled {
        question: String,
    },
}

/// One question and the answer given, as the user wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnswerPair {
    pub id: String,
    pub question: String,
    /// The user's text (or the title of the quick reply tapped); for a question given
    /// up on, the last invalid attempt.
    pub answer: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub follow_up: bool,
    /// The answer never fitted the question's validation and the interview moved on.
    #[serde(default, skip_serializing_if = "is_false")]
    pub unanswered: bool,
}

fn is_false(value: &bool) -> bool {
    !value
}

/// How an interview ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Completed,
    Canceled,
}

/// A finished interview: what the callback receives and what `earlier` keeps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InterviewResult {
    pub tree: String,
    pub status: Outcome,
    pub answers: Vec<AnswerPair>,
    pub values: BTreeMap<String, Value>,
}

impl InterviewState {
    /// Records `answer` to `question` and its normalized `value` (`null` if unanswered).
    pub fn record(&mut self, question: &Question, answer: &str, value: Value, unanswered: bool) {
        self.answers.push(AnswerPair {
            id: question.id.clone(),
            question: question.text.clone(),
            answer: answer.to_string(),
            follow_up: question.follow_up,
            unanswered,
        });
        self.values.insert(question.id.clone(), value);
    }

    /// Starts `tree` at question `first`; a started interview moves to `earlier` (one
    /// still being asked counts as canceled).
    pub fn begin(&mut self, tree: &str, first: &str) {
        let mut earlier = std::mem::take(&mut self.earlier);
        earlier.extend(self.result());
        *self = InterviewState {
            stage: Stage::Asking {
                question: first.to_string(),
                tries: 0,
            },
            tree: Some(tree.to_string()),
            earlier,
            ..InterviewState::default()
        };
    }

    /// The current interview as a result; `None` before the first one.
    pub fn result(&self) -> Option<InterviewResult> {
        let status = match self.stage {
            Stage::NotStarted => return None,
            Stage::Completed => Outcome::Completed,
            Stage::Asking { .. } | Stage::Canceled { .. } => Outcome::Canceled,
        };
        Some(InterviewResult {
            tree: self.tree.clone()?,
            status,
            answers: self.answers.clone(),
            values: self.values.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::tree::answer::Validation;
    use crate::flow::tree::format::DEFAULT_MAX_TRIES;
    use serde_json::json;

    fn question(id: &str, follow_up: bool) -> Question {
        Question {
            id: id.into(),
            text: format!("{id}?"),
            quick_replies: Vec::new(),
            validation: Validation::FreeText,
            next: None,
            branches: Vec::new(),
            follow_up,
            max_tries: DEFAULT_MAX_TRIES,
        }
    }

    #[test]
    fn a_new_user_has_no_interview_and_an_empty_state_is_null_friendly() {
        let state = InterviewState::default();
        assert_eq!(state.result(), None);
        assert_eq!(
            serde_json::to_value(&state).unwrap(),
            json!({"stage": {"status": "not_started"}, "answers": [], "values": {}})
        );
        let from_stored: InterviewState =
            serde_json::from_value(json!({"stage": {"status": "completed"}})).unwrap();
        assert_eq!(from_stored.stage, Stage::Completed);
    }

    #[test]
    fn answers_keep_their_order_and_flags_while_values_keep_the_last_one() {
        let mut state = InterviewState::default();
        state.begin("jobs", "a");
        state.record(&question("a", false), "first", json!("first"), false);
        state.record(&question("b", true), "?!", Value::Null, true);
        state.record(&question("a", false), "again", json!("again"), false);
        let stored = serde_json::to_value(&state).unwrap();
        assert_eq!(
            stored["answers"],
            json!([
                {"id": "a", "question": "a?", "answer": "first"},
                {"id": "b", "question": "b?", "answer": "?!", "follow_up": true, "unanswered": true},
                {"id": "a", "question": "a?", "answer": "again"}
            ])
        );
        assert_eq!(stored["values"], json!({"a": "again", "b": null}));
    }

    #[test]
    fn beginning_again_keeps_the_previous_interview_in_earlier() {
        let mut state = InterviewState::default();
        state.begin("jobs", "a");
        state.record(&question("a", false), "yes", json!(true), false);
        state.stage = Stage::Completed;
        state.begin("internships", "x");
        assert_eq!(
            state.stage,
            Stage::Asking {
                question: "x".into(),
                tries: 0
            }
        );
        assert!(state.answers.is_empty() && state.values.is_empty());
        assert_eq!(state.earlier.len(), 1);
        assert_eq!(state.earlier[0].tree, "jobs");
        assert_eq!(state.earlier[0].status, Outcome::Completed);
        assert_eq!(state.earlier[0].values["a"], json!(true));
    }
}
