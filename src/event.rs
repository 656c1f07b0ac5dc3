//! The events a flow receives: typed Messenger Platform webhook items, and the flow's own
//! timers when they fire.
//!
//! [`InboundEvent`] is one item of a webhook POST with its envelope context (page, sender,
//! time); [`EventKind`] says what it is. A flow usually routes on
//! [`crate::flow::Input`] instead, which folds these into what the user did.
//! [`parse_envelope`] turns a webhook body into events, as the engine does: use it to build
//! events in a flow's unit tests. A fired timer is a [`TimerFired`], handed to
//! [`crate::flow::Flow::on_timer`]; it is colloquy's own, never a Messenger event.
//!
//! Must not: hold engine or store types; this module is what bot authors import.

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use crate::messenger::inbound::{
    parse_envelope, AccountLinking, Attachment, Channel, Delivery, Echo, EventKind, InboundEvent,
    Message, MessageEdit, Optin, ParseError, PolicyEnforcement, Postback, QuickReplyAnswer,
    Reaction, Read, Referral, ReplyTo, ThreadControl,
};

/// A timer the flow scheduled with [`crate::flow::Turn::schedule`] has fired: the name
/// and payload it was scheduled with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimerFired {
    pub name: String,
    /// When it was due (epoch ms).
    pub due: i64,
    pub payload: Value,
}
