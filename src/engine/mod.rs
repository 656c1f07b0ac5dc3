//! The engine: the actors and the machinery around them, behind the public flow API.
//!
//! `app` wires everything up; `supervisor` routes events to one `conversation` actor per
//! (page, user); conversations hand replies to the `sender`; `timers` fires flow timers;
//! `retention` prunes old dedup marks; `load` holds the backpressure counters (and
//! `backlog` the supervisor's account of how old the waiting events are),
//! `metrics` the Prometheus registry, and `affinity` keeps the engine's thread on one
//! CPU. Nothing here is public: bot authors see `flow`, `launch` and `config` only.

pub(crate) mod affinity;
pub(crate) mod app;
pub(crate) mod backlog;
pub(crate) mod conversation;
pub(crate) mod event;
pub(crate) mod load;
pub(crate) mod metrics;
pub(crate) mod retention;
pub(crate) mod sender;
pub(crate) mod supervisor;
pub(crate) mod timers;
