//! colloquy: an actor-based chatbot engine for the Facebook Messenger Platform.
//!
//! You write a [`Flow`]: an async handler that gets one user event at a time with a
//! [`Turn`] holding that user's persisted state, and answers with [`Reply`]s. colloquy
//! does the rest: it verifies and acknowledges Facebook's webhooks durably, runs one
//! actor per conversation so each user's events are handled in order, commits the new
//! state and the replies in one transaction, and sends the replies through the Send API
//! with retries.
//!
//! ```no_run
//! use colloquy::prelude::*;
//!
//! /// Counts each user's messages.
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
//!
//! #[actix_web::main]
//! async fn main() -> std::process::ExitCode {
//!     match launch::serve_or_chat(FlowHandle::new(Counter), "counter").await {
//!         Ok(()) => std::process::ExitCode::SUCCESS,
//!         Err(error) => {
//!             eprintln!("counter: {error}");
//!             std::process::ExitCode::FAILURE
//!         }
//!     }
//! }
//! ```
//!
//! # What is public, and what that promises
//!
//! - [`prelude`]: everything a flow needs, in one `use`.
//! - [`flow`]: the [`Flow`] trait, [`Turn`], [`Reply`] and its builders, [`flow::Input`]
//!   for routing, the built-in flows ([`flow::builtin`]) and interview trees
//!   ([`flow::tree`]).
//! - [`event`]: the typed Messenger events a flow receives, its own fired timers, and the parser that makes events
//!   from a webhook body (for a flow's own unit tests).
//! - [`launch`]: running a bot from its own `main` (serve, or chat in the terminal), or the
//!   whole `colloquy` command line.
//! - [`config`] and [`start`]: embedding the engine in a program of your own.
//!
//! These follow semantic versioning: within a minor version, nothing public is removed or
//! changes meaning, configuration structs only gain fields (they are `#[non_exhaustive]`:
//! build them from `Default` or the environment), and stored data stays readable. The
//! engine itself (actors, store, webhook handlers, the Graph client) is private and may
//! change in any release; its map is `ARCHITECTURE.md` in the repository.

pub mod config;
pub mod event;
pub mod flow;
pub mod launch;
pub mod prelude;

pub use engine::app::{start, RunningApp, StartError};
pub use flow::{Flow, FlowError, FlowHandle, Reply, Turn};

mod actions;
mod admin;
mod admin_cli;
mod cli;
mod clock;
mod cluster;
mod console;
mod engine;
mod graph;
mod inspect;
mod inspector;
mod messenger;
mod pages;
mod profile;
mod store;
mod webhook;

/// Internals that the crate's own integration tests and benchmarks reach into (feature
/// `test-support`, which `cargo test` turns on through the crate's dev-dependency on
/// itself). Not part of the public API: anything here may change in any release.
#[cfg(feature = "test-support")]
#[doc(hidden)]
pub mod test_support;
