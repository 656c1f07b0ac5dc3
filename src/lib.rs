//! colloquy: an actor-based chatbot engine for the Facebook Messenger Platform.
//!
//! ```text
//!  Facebook ──POST /webhook──▶ webhook ──(journal + group-commit flush, then 200)──▶ store
//!                                 │
//!                                 ▼ Route
//!                            supervisor ──spawns/routes──▶ conversation (one per page+user)
//!                                                            │ runs the Flow, commits state,
//!                                                            │ transcript, outbox in one txn
//!                                                            ▼ Enqueue
//!                                                         sender ──awc──▶ Graph Send API
//! ```
//!
//! Layout: [`webhook`] (signature, parsing, durable ack), [`messenger`] (wire types),
//! [`supervisor`], [`conversation`], [`flow`] (the public Flow API and built-in flows),
//! [`sender`], [`store`] (the only code touching sled), [`inspect`] and [`admin`]
//! (reading persisted conversations), [`config`], [`cli`]. [`start`] is the one startup
//! seam, used by the binary and by the integration tests.

pub mod admin;
mod app;
pub mod cli;
pub mod config;
pub mod console;
pub mod conversation;
pub mod flow;
pub mod inspect;
pub mod launch;
pub mod load;
pub mod messenger;
pub mod metrics;
pub mod retention;
pub mod sender;
pub mod store;
pub mod supervisor;
pub mod timers;
pub mod webhook;

pub use app::{start, RunningApp, StartError};
pub use flow::{Flow, FlowError, FlowHandle, Reply, Turn};
