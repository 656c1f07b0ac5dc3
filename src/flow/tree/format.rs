//! The validated model of an interview tree: what [`super::load`] builds from JSON once
//! every check passed, and what the interview flow walks.
//!
//! Owns the tree, question, branch and quick-reply types and the rules for choosing the
//! next question. Must not read files or JSON (that is `load`'s job) and never holds a
//! tree that failed a check: a `Tree` always has known targets and a reachable end.

use serde_json::Value;

use super::answer::{match_key, Validation};
use crate::flow::{quick_reply, Reply, ReplyError};

/// Attempts at one question before the interview moves on without an answer.
pub const DEFAULT_MAX_TRIES: u32 = 3;

/// One interview: a greeting, questions linked by `next` and branches, a completion text.
#[derive(Debug, Clone, PartialEq)]
pub struct Tree {
    /// Selects the tree (an m.me link's `ref`); the file stem when loaded from a directory.
    pub name: String,
    pub greeting_text: String,
    pub completion_text: String,
    /// Id of the first question.
    pub start: String,
    /// In the order they were written.
    pub questions: Vec<Question>,
    /// Receives the results as a JSON POST when an interview ends.
    pub callback_url: Option<String>,
}

impl Tree {
    pub fn question(&self, id: &str) -> Option<&Question> {
        self.questions.iter().find(|q| q.id == id)
    }

    pub fn first_question(&self) -> Option<&Question> {
        self.question(&self.start)
    }
}

/// One question of a tree.
#[derive(Debug, Clone, PartialEq)]
pub struct Question {
    pub id: String,
    pub text: String,
    pub quick_replies: Vec<QuickReplySpec>,
    pub validation: Validation,
    /// Where a valid answer goes when no branch matches; `None` ends the interview.
    pub next: Option<String>,
    /// Checked in order before `next`.
    pub branches: Vec<Branch>,
    /// Asked only because of an earlier answer (the original system's `is_follow_up`);
    /// kept in the result so readers can tell the main questions from follow-ups.
    pub follow_up: bool,
    /// Attempts allowed (at least 1); after the last invalid one the interview moves on.
    pub max_tries: u32,
}

/// A per-answer jump: when the answer matches `answer`, go to `next` (`None` ends).
#[derive(Debug, Clone, PartialEq)]
pub struct Branch {
    pub answer: String,
    pub next: Option<String>,
}

/// A quick reply offered with a question; `payload` is the title unless given.
#[derive(Debug, Clone, PartialEq)]
pub struct QuickReplySpec {
    pub title: String,
    pub payload: String,
}

/// An answer as the branches see it.
#[derive(Debug, Clone, PartialEq)]
pub struct GivenAnswer<'a> {
    /// What the user typed, or the title of the quick reply they tapped.
    pub text: &'a str,
    /// The quick-reply or postback payload, if any.
    pub payload: Option<&'a str>,
    /// The normalized value.
    pub value: &'a Value,
}

impl Question {
    /// The question as a message, with its quick replies.
    pub fn reply(&self) -> Result<Reply, ReplyError> {
        let quick_replies = self
            .quick_replies
            .iter()
            .map(|qr| quick_reply(qr.title.clone(), qr.payload.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        Reply::text(self.text.clone())?.with_quick_replies(quick_replies)
    }

    /// The id of the question after `answer`: the first matching branch, else `next`.
    pub fn next_after(&self, answer: &GivenAnswer<'_>) -> Option<&str> {
        match self.branches.iter().find(|b| self.matches(b, answer)) {
            Some(branch) => branch.next.as_deref(),
            None => self.next.as_deref(),
        }
    }

    /// A branch matches the payload, the raw text, or the normalized value, ignoring case.
    fn matches(&self, branch: &Branch, answer: &GivenAnswer<'_>) -> bool {
        let wanted = branch.answer.trim();
        let same_text = |given: &str| given.trim().eq_ignore_ascii_case(wanted);
        let same_value = || {
            self.validation
                .parse(wanted)
                .is_some_and(|value| match_key(&value) == match_key(answer.value))
        };
        answer.payload.is_some_and(same_text) || same_text(answer.text) || same_value()
    }

    /// Whether `answer` could ever select a branch: it normalizes under the question's
    /// validation or names one of its quick replies.
    pub fn can_match(&self, answer: &str) -> bool {
        let answer = answer.trim();
        self.validation.parse(answer).is_some()
            || self.quick_replies.iter().any(|qr| {
                qr.title.eq_ignore_ascii_case(answer) || qr.payload.eq_ignore_ascii_case(answer)
            })
    }

    /// Every question this one can lead to (default and branches), `None` meaning the end.
    pub fn targets(&self) -> impl Iterator<Item = Option<&str>> {
        std::iter::once(self.next.as_deref()).chain(self.branches.iter().map(|b| b.next.as_deref()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn notice_question() -> Question {
        Question {
            id: "serving".into(),
            text: "Are you serving a notice period?".into(),
            quick_replies: crate::flow::tree::testing::yes_no_replies(),
            validation: Validation::YesNo,
            next: Some("notice".into()),
            branches: vec![Branch {
                answer: "yes".into(),
                next: Some("days_left".into()),
            }],
            follow_up: false,
            max_tries: DEFAULT_MAX_TRIES,
        }
    }

    #[test]
    fn a_branch_matches_the_normalized_answer_ignoring_case() {
        let question = notice_question();
        let yes = json!(true);
        let answer = GivenAnswer {
            text: "Yeah",
            payload: None,
            value: &yes,
        };
        assert_eq!(question.next_after(&answer), Some("days_left"));
        let no = json!(false);
        let answer = GivenAnswer {
            text: "nope",
            payload: None,
            value: &no,
        };
        assert_eq!(question.next_after(&answer), Some("notice"));
    }

    #[test]
    fn a_branch_matches_a_quick_reply_payload() {
        let mut question = notice_question();
        question.validation = Validation::FreeText;
        question.branches[0].answer = "yes".into();
        let value = json!("YES");
        let answer = GivenAnswer {
            text: "Yes, I am",
            payload: Some("YES"),
            value: &value,
        };
        assert_eq!(question.next_after(&answer), Some("days_left"));
    }

    #[test]
    fn a_question_becomes_a_message_with_its_quick_replies() {
        let reply = notice_question().reply().unwrap();
        assert_eq!(
            reply.text_content(),
            Some("Are you serving a notice period?")
        );
        assert_eq!(reply.kind_name(), "quick_replies");
    }

    #[test]
    fn branch_answers_that_no_answer_can_produce_are_detected() {
        let question = notice_question();
        assert!(question.can_match("Y"));
        assert!(question.can_match("NO"));
        assert!(!question.can_match("maybe"));
    }
}
