//! The interview flow: walks a user through a [`Tree`], one question per turn, and keeps
//! the result in the conversation's state.
//!
//! Owns the handler for each [`Stage`] and the words the bot says besides the tree's own
//! texts. Must not read files or check trees (`load` did) and never fails on user input:
//! whatever a user sends is an answer, a retry, a stop, a restart, or ignored.

use serde_json::{json, Value};

use super::action::UserAction;
use super::format::{GivenAnswer, Question, Tree};
use super::state::{InterviewState, Outcome, Stage};
use super::TreeFlow;
use crate::flow::{Flow, FlowError, Reply, Turn};
use crate::messenger::inbound::InboundEvent;

/// Said when a user stops an interview.
pub const CANCELED_TEXT: &str =
    "Okay, I have stopped the interview. Thank you for your time; write to me any time to start again.";
/// Said to a user who says stop before any interview started.
pub const NOTHING_TO_STOP_TEXT: &str =
    "Okay, I won't ask you anything. Write to me any time to start the interview.";
/// Said to a user who writes again after completing an interview.
pub const ALREADY_COMPLETED_TEXT: &str = "You have already completed this interview. Thank you!";
/// Said before the next question when a question ran out of tries.
pub const MOVING_ON_TEXT: &str = "I could not understand that answer, so let's move on.";
/// Said when a user opens a link to the bot in the middle of an interview.
pub const WELCOME_BACK_TEXT: &str = "Welcome back! Let's continue where we left off.";

impl Flow for TreeFlow {
    type State = InterviewState;

    async fn handle(
        &self,
        event: &InboundEvent,
        turn: &mut Turn<InterviewState>,
    ) -> Result<(), FlowError> {
        match UserAction::from_event(event) {
            Some(input) => self.step(&input, turn),
            None => Ok(()),
        }
    }

    /// An operator starts (or restarts) the tree `name` for this user: the greeting and
    /// the first question, whatever stage they were at (a finished or stopped interview
    /// stays in `earlier`).
    async fn on_start(&self, name: &str, turn: &mut Turn<InterviewState>) -> Result<(), FlowError> {
        let tree = self
            .tree(name)
            .ok_or_else(|| FlowError::failed(format!("no interview tree named `{name}`")))?;
        self.start(tree, turn)
    }
}

impl TreeFlow {
    /// One handler per stage.
    fn step(
        &self,
        input: &UserAction<'_>,
        turn: &mut Turn<InterviewState>,
    ) -> Result<(), FlowError> {
        match turn.state().stage.clone() {
            Stage::NotStarted => self.on_first_contact(input, turn),
            Stage::Asking { question, tries } => self.on_answer(input, &question, tries, turn),
            Stage::Completed => self.on_after_completion(input, turn),
            Stage::Canceled { .. } => self.on_after_cancel(input, turn),
        }
    }

    /// A new user: start the tree their link names, or the default tree.
    fn on_first_contact(
        &self,
        input: &UserAction<'_>,
        turn: &mut Turn<InterviewState>,
    ) -> Result<(), FlowError> {
        if input.is_stop() {
            return Ok(turn.say(NOTHING_TO_STOP_TEXT)?);
        }
        let tree = self.selected(input.referral, None)?;
        self.start(tree, turn)
    }

    fn on_answer(
        &self,
        input: &UserAction<'_>,
        question_id: &str,
        tries: u32,
        turn: &mut Turn<InterviewState>,
    ) -> Result<(), FlowError> {
        let current = turn.state().tree.clone();
        let Some((tree, question)) = self.locate(current.as_deref(), question_id) else {
            // The trees changed under a waiting user (a redeploy): start afresh.
            log::warn!(
                "{}: question `{question_id}` of tree {current:?} no longer exists; restarting",
                turn.psid()
            );
            let tree = self.selected(input.referral, None)?;
            return self.start(tree, turn);
        };
        if !input.is_answer {
            turn.say(WELCOME_BACK_TEXT)?;
            return ask(question, turn);
        }
        if input.is_stop() {
            return self.cancel(tree, question, turn);
        }
        match input.value_for(question) {
            Some(value) => {
                let answer = GivenAnswer {
                    text: input.raw_answer(),
                    payload: input.payload,
                    value: &value,
                };
                let next = question.next_after(&answer);
                turn.state_mut()
                    .record(question, input.raw_answer(), value, false);
                self.advance(tree, next, turn)
            }
            None => self.retry_or_move_on(tree, question, tries + 1, input, turn),
        }
    }

    /// After an invalid answer: explain and ask again, or after the last try record the
    /// question as unanswered and follow its default `next`.
    fn retry_or_move_on(
        &self,
        tree: &Tree,
        question: &Question,
        tries: u32,
        input: &UserAction<'_>,
        turn: &mut Turn<InterviewState>,
    ) -> Result<(), FlowError> {
        if tries >= question.max_tries {
            turn.state_mut()
                .record(question, input.raw_answer(), Value::Null, true);
            turn.say(MOVING_ON_TEXT)?;
            return self.advance(tree, question.next.as_deref(), turn);
        }
        turn.state_mut().stage = Stage::Asking {
            question: question.id.clone(),
            tries,
        };
        turn.say(question.validation.expectation())?;
        ask(question, turn)
    }

    /// A finished user: a link naming a tree starts it; anything else is told it is done.
    fn on_after_completion(
        &self,
        input: &UserAction<'_>,
        turn: &mut Turn<InterviewState>,
    ) -> Result<(), FlowError> {
        match input.referral.and_then(|name| self.tree(name)) {
            Some(tree) => self.start(tree, turn),
            None => Ok(turn.say(ALREADY_COMPLETED_TEXT)?),
        }
    }

    /// A user who stopped and writes again starts over (the stopped interview is kept
    /// in `earlier`), with the tree their link names or the one they stopped.
    fn on_after_cancel(
        &self,
        input: &UserAction<'_>,
        turn: &mut Turn<InterviewState>,
    ) -> Result<(), FlowError> {
        if input.is_stop() {
            return Ok(turn.say(CANCELED_TEXT)?);
        }
        let stopped = turn.state().tree.clone();
        let tree = self.selected(input.referral, stopped.as_deref())?;
        self.start(tree, turn)
    }

    /// Greets the user and asks the first question, keeping any finished interview.
    fn start(&self, tree: &Tree, turn: &mut Turn<InterviewState>) -> Result<(), FlowError> {
        let first = tree
            .first_question()
            .ok_or_else(|| FlowError::failed(format!("tree `{}` has no start", tree.name)))?;
        turn.state_mut().begin(&tree.name, &first.id);
        turn.say(tree.greeting_text.clone())?;
        ask(first, turn)
    }

    /// Asks question `next`, or completes the interview when there is none.
    fn advance(
        &self,
        tree: &Tree,
        next: Option<&str>,
        turn: &mut Turn<InterviewState>,
    ) -> Result<(), FlowError> {
        match next.and_then(|id| tree.question(id)) {
            Some(question) => {
                turn.state_mut().stage = Stage::Asking {
                    question: question.id.clone(),
                    tries: 0,
                };
                ask(question, turn)
            }
            None => self.finish(tree, Outcome::Completed, turn),
        }
    }

    fn cancel(
        &self,
        tree: &Tree,
        question: &Question,
        turn: &mut Turn<InterviewState>,
    ) -> Result<(), FlowError> {
        turn.state_mut().stage = Stage::Canceled {
            question: question.id.clone(),
        };
        self.finish(tree, Outcome::Canceled, turn)
    }

    /// Says goodbye and queues the results for the callback URL, if there is one.
    fn finish(
        &self,
        tree: &Tree,
        outcome: Outcome,
        turn: &mut Turn<InterviewState>,
    ) -> Result<(), FlowError> {
        match outcome {
            Outcome::Completed => {
                turn.state_mut().stage = Stage::Completed;
                turn.say(tree.completion_text.clone())?;
            }
            Outcome::Canceled => turn.say(CANCELED_TEXT)?,
        }
        if let Some(url) = tree.callback_url.as_ref().or(self.callback_url.as_ref()) {
            let body = callback_body(turn, &tree.name, outcome);
            turn.reply(Reply::callback(url.clone(), body)?);
        }
        Ok(())
    }

    /// The tree a `ref` names; else `fallback` (if it still exists); else the default.
    fn selected(&self, referral: Option<&str>, fallback: Option<&str>) -> Result<&Tree, FlowError> {
        if let Some(name) = referral.filter(|name| self.tree(name).is_none()) {
            log::info!("no flow tree named `{name}`; using the default");
        }
        referral
            .and_then(|name| self.tree(name))
            .or_else(|| fallback.and_then(|name| self.tree(name)))
            .or_else(|| self.default_tree())
            .ok_or_else(|| FlowError::failed("no flow trees loaded"))
    }

    fn locate(&self, tree: Option<&str>, question: &str) -> Option<(&Tree, &Question)> {
        let tree = self.tree(tree?)?;
        Some((tree, tree.question(question)?))
    }
}

fn ask(question: &Question, turn: &mut Turn<InterviewState>) -> Result<(), FlowError> {
    turn.reply(question.reply()?);
    Ok(())
}

/// What the callback URL receives: who, which tree, how it ended, and the answers.
fn callback_body(turn: &Turn<InterviewState>, tree: &str, outcome: Outcome) -> Value {
    let state = turn.state();
    json!({
        "psid": turn.psid(),
        "page_id": turn.page_id(),
        "tree": tree,
        "status": outcome,
        "answers": state.answers,
        "values": state.values,
    })
}

#[cfg(test)]
mod tests;
