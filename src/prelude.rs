//! Everything a bot author needs, in one `use colloquy::prelude::*;`.
//!
//! The flow API (the trait, the turn, replies and their builders, routing), the event a
//! flow receives, the handle that erases a flow's type, the launcher for `main`, and
//! [`Config`] with [`start`] for embedding the engine. Nothing of the engine's internals.

pub use crate::config::{Config, RawConfig};
pub use crate::event::{InboundEvent, TimerFired};
pub use crate::flow::{
    quick_reply, AttachmentKind, Button, Element, Flow, FlowError, FlowHandle, Input, MessageTag,
    Reply, ReplyError, Turn,
};
pub use crate::launch;
pub use crate::{start, RunningApp};
