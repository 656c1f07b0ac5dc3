//! The public Flow API: conversation logic written as a handler over typed events.
//!
//! A flow gets one event at a time for one conversation, with a `Turn` holding the
//! conversation's persisted state (the flow's own serde type) and a list of replies to
//! queue. The engine persists the state, the transcript and the replies in one commit
//! after the handler returns, then sends the replies in order. A flow may `.await`
//! anything; other conversations keep going meanwhile. Flows never see actix, sled or
//! HTTP: they are plain async functions, easy to unit-test with `Turn::for_test`.
//!
//! ```
//! use colloquy::flow::{Flow, FlowError, Turn};
//! use colloquy::event::InboundEvent;
//!
//! /// Counts the messages of each user and tells them the count.
//! struct Counter;
//!
//! impl Flow for Counter {
//!     type State = u32;
//!
//!     async fn handle(&self, event: &InboundEvent, turn: &mut Turn<u32>) -> Result<(), FlowError> {
//!         if event.text().is_some() {
//!             *turn.state_mut() += 1;
//!             let count = *turn.state();
//!             turn.say(format!("That is message number {count}."))?;
//!         }
//!         Ok(())
//!     }
//! }
//! # let event = colloquy::event::parse_envelope(br#"{"object":"page","entry":[{"id":"1","messaging":[{"sender":{"id":"2"},"recipient":{"id":"1"},"timestamp":1,"message":{"mid":"m","text":"hi"}}]}]}"#).unwrap().remove(0);
//! # let mut turn = Turn::for_test("2", 0u32);
//! # futures_util::FutureExt::now_or_never(Counter.handle(&event, &mut turn)).unwrap().unwrap();
//! # assert_eq!(turn.replies()[0].text_content(), Some("That is message number 1."));
//! ```

pub mod builtin;
mod input;
mod reply;
mod template;
pub mod tree;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::LocalBoxFuture;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde::Serialize;
use serde_json::Value;
use thiserror::Error;

use crate::event::{Channel, InboundEvent, TimerFired};
pub use input::Input;
pub(crate) use reply::Body;
pub use reply::{quick_reply, AttachmentKind, MessageTag, Reply, ReplyError};
pub use template::{Button, Element};

/// Conversation logic. One value serves every conversation; per-user data goes in `State`.
pub trait Flow: Send + Sync + 'static {
    /// What the flow remembers about one user between events. Persisted after every
    /// event; `Default` is the state of a user never seen before.
    type State: Serialize + DeserializeOwned + Default + 'static;

    /// Handles one event. User messages, quick replies, postbacks and referrals reach a
    /// flow (see [`Input`]); echoes, deliveries and reads are handled by the engine.
    /// Returning an error records the event as `failed` in the transcript; replies queued
    /// before the error are dropped.
    fn handle(
        &self,
        event: &InboundEvent,
        turn: &mut Turn<Self::State>,
    ) -> impl Future<Output = Result<(), FlowError>>;

    /// Handles a timer this flow scheduled with [`Turn::schedule`] (and did not cancel)
    /// when it is due, as a turn of its own: in order with the user's events, with the
    /// same state, replies and error handling as [`Flow::handle`]. A flow that schedules
    /// nothing need not implement it; the default does nothing.
    fn on_timer(
        &self,
        timer: &TimerFired,
        turn: &mut Turn<Self::State>,
    ) -> impl Future<Output = Result<(), FlowError>> {
        let _ = (timer, turn);
        std::future::ready(Ok(()))
    }

    /// An operator starts `what` for this user (the admin API's `start`: for an interview
    /// tree flow, the tree of that name), as a turn of its own, in order with the user's
    /// events. The default refuses: a flow with nothing to start says so, and the
    /// operator's action is recorded `failed` with that reason.
    fn on_start(
        &self,
        what: &str,
        turn: &mut Turn<Self::State>,
    ) -> impl Future<Output = Result<(), FlowError>> {
        let _ = turn;
        std::future::ready(Err(FlowError::Failed(format!(
            "this flow has nothing to start (asked for `{what}`)"
        ))))
    }
}

/// Why a flow could not handle an event.
#[derive(Debug, Error)]
pub enum FlowError {
    /// A reply broke a Send API limit (too long, too many quick replies...).
    #[error("invalid reply: {0}")]
    Reply(#[from] ReplyError),
    /// The stored state could not be decoded into the flow's `State` type.
    #[error("stored state does not fit the flow: {0}")]
    State(String),
    /// The flow's own failure.
    #[error("{0}")]
    Failed(String),
}

impl FlowError {
    pub fn failed(message: impl Into<String>) -> Self {
        FlowError::Failed(message.into())
    }
}

/// What a flow can know about its conversation besides its own state.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConversationView {
    pub page_id: String,
    /// Messenger or Instagram: the Send API rules its replies must keep.
    pub channel: Channel,
    pub psid: String,
    /// Every page message at or before this time (epoch ms) was delivered.
    pub delivered_watermark: i64,
    /// Every page message at or before this time (epoch ms) was read.
    pub read_watermark: i64,
    /// Facebook time (epoch ms) of the user's last message before this event.
    pub last_user_message: i64,
    /// Pending timers (name, due epoch ms) before this event.
    pub timers: Vec<(String, i64)>,
}

/// One event's worth of work: the state to update and the replies to queue.
#[derive(Debug)]
pub struct Turn<S> {
    view: ConversationView,
    state: S,
    replies: Vec<Reply>,
    timers: Vec<TimerOp>,
}

/// A change to the conversation's timers, applied when the turn commits.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum TimerOp {
    Schedule {
        name: String,
        after: Duration,
        payload: Value,
    },
    Cancel {
        name: String,
    },
}

impl<S> Turn<S> {
    pub(crate) fn new(view: ConversationView, state: S) -> Self {
        Turn {
            view,
            state,
            replies: Vec::new(),
            timers: Vec::new(),
        }
    }

    /// A turn for unit-testing a flow without the engine.
    pub fn for_test(psid: &str, state: S) -> Self {
        Turn::new(
            ConversationView {
                psid: psid.to_string(),
                ..ConversationView::default()
            },
            state,
        )
    }

    /// The user's page-scoped id.
    pub fn psid(&self) -> &str {
        &self.view.psid
    }

    pub fn page_id(&self) -> &str {
        &self.view.page_id
    }

    /// Messenger or Instagram.
    pub fn channel(&self) -> Channel {
        self.view.channel
    }

    pub fn conversation(&self) -> &ConversationView {
        &self.view
    }

    pub fn state(&self) -> &S {
        &self.state
    }

    pub fn state_mut(&mut self) -> &mut S {
        &mut self.state
    }

    pub fn set_state(&mut self, state: S) {
        self.state = state;
    }

    /// Queues a reply; replies are sent in the order they were queued.
    pub fn reply(&mut self, reply: Reply) {
        self.replies.push(reply);
    }

    /// Queues `reply` if the conversation's channel takes it (an Instagram conversation
    /// takes no button template, and text of at most 1,000 characters). A reply queued
    /// with [`Turn::reply`] that breaks its channel's rules is recorded failed, never sent.
    pub fn try_reply(&mut self, reply: Reply) -> Result<(), ReplyError> {
        reply.check_for(self.view.channel)?;
        self.replies.push(reply);
        Ok(())
    }

    /// Queues a text reply, checking the Send API's limits.
    pub fn say(&mut self, text: impl Into<String>) -> Result<(), ReplyError> {
        self.try_reply(Reply::text(text)?)
    }

    /// The replies queued so far.
    pub fn replies(&self) -> &[Reply] {
        &self.replies
    }

    /// Schedules a timer for this conversation `after` from now: [`Flow::on_timer`] then
    /// receives it with its `name` and `payload`. Timers are stored durably and fire after
    /// a restart too. Scheduling a name again replaces that timer.
    ///
    /// ```
    /// # use colloquy::flow::Turn;
    /// # use std::time::Duration;
    /// # let mut turn = Turn::for_test("42", ());
    /// // "If no answer in 2 hours, nudge."
    /// turn.schedule("nudge", Duration::from_secs(2 * 3600), serde_json::json!({"step": 3}));
    /// ```
    pub fn schedule(&mut self, name: impl Into<String>, after: Duration, payload: Value) {
        self.timers.push(TimerOp::Schedule {
            name: name.into(),
            after,
            payload,
        });
    }

    /// Cancels a pending timer (nothing happens if there is none by that name).
    pub fn cancel_timer(&mut self, name: impl Into<String>) {
        self.timers.push(TimerOp::Cancel { name: name.into() });
    }

    /// Names of the timers pending before this turn, with when they are due (epoch ms).
    pub fn pending_timers(&self) -> &[(String, i64)] {
        &self.view.timers
    }
}

/// A flow of any type, ready to hand to the engine (`colloquy::start`).
#[derive(Clone)]
pub struct FlowHandle(pub(crate) Arc<dyn ErasedFlow>);

impl FlowHandle {
    pub fn new<F: Flow>(flow: F) -> Self {
        FlowHandle(Arc::new(flow))
    }
}

impl std::fmt::Debug for FlowHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FlowHandle")
    }
}

/// What a conversation gets back from running its flow once.
pub(crate) struct TurnOutput {
    pub state: Value,
    pub replies: Vec<Reply>,
    pub timers: Vec<TimerOp>,
}

/// What the engine runs a flow on: an event for [`Flow::handle`] or a timer for
/// [`Flow::on_timer`].
#[derive(Debug, Clone, Copy)]
pub(crate) enum FlowInput<'a> {
    Event(&'a InboundEvent),
    Timer(&'a TimerFired),
    /// An operator's `start` of this name.
    Start(&'a str),
}

/// The flow with its state type erased to JSON, so the engine holds any flow behind one type.
pub(crate) trait ErasedFlow: Send + Sync {
    /// Whether `state` deserializes into the flow's state type; the serde error if not.
    fn check_state(&self, state: &Value) -> Result<(), String>;

    fn run<'a>(
        &'a self,
        input: FlowInput<'a>,
        view: ConversationView,
        state: Value,
    ) -> LocalBoxFuture<'a, Result<TurnOutput, FlowError>>;
}

impl<F: Flow> ErasedFlow for F {
    fn check_state(&self, state: &Value) -> Result<(), String> {
        F::State::deserialize(state)
            .map(drop)
            .map_err(|error| error.to_string())
    }

    fn run<'a>(
        &'a self,
        input: FlowInput<'a>,
        view: ConversationView,
        state: Value,
    ) -> LocalBoxFuture<'a, Result<TurnOutput, FlowError>> {
        Box::pin(async move {
            let state: F::State = match state {
                Value::Null => F::State::default(),
                stored => {
                    serde_json::from_value(stored).map_err(|e| FlowError::State(e.to_string()))?
                }
            };
            let mut turn = Turn::new(view, state);
            match input {
                FlowInput::Event(event) => self.handle(event, &mut turn).await?,
                FlowInput::Timer(timer) => self.on_timer(timer, &mut turn).await?,
                FlowInput::Start(what) => self.on_start(what, &mut turn).await?,
            }
            let state =
                serde_json::to_value(&turn.state).map_err(|e| FlowError::State(e.to_string()))?;
            Ok(TurnOutput {
                state,
                replies: turn.replies,
                timers: turn.timers,
            })
        })
    }
}
