//! The events a flow receives: typed Messenger Platform webhook items.
//!
//! [`InboundEvent`] is one item of a webhook POST with its envelope context (page, sender,
//! time); [`EventKind`] says what it is. A flow usually routes on
//! [`crate::flow::Input`] instead, which folds these into what the user did.
//! [`parse_envelope`] turns a webhook body into events, as the engine does: use it to build
//! events in a flow's unit tests.

pub use crate::messenger::inbound::{
    parse_envelope, AccountLinking, Attachment, Delivery, Echo, EventKind, InboundEvent, Message,
    MessageEdit, Optin, ParseError, PolicyEnforcement, Postback, QuickReplyAnswer, Reaction, Read,
    Referral, ReplyTo, ThreadControl, TimerFired,
};
