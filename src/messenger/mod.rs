//! Messenger Platform wire types: the JSON that crosses the boundary with Meta.
//!
//! [`inbound`] owns the webhook POST body (envelope → typed events) and
//! [`outbound`] owns the Send API request/response (Graph error bodies belong to the
//! `graph` client).
//! These are pure serde types: no IO, no HTTP, no signature checks, no logging
//! (in particular never of tokens or secrets), no engine decisions, and no
//! panics on any input.

pub(crate) mod inbound;
pub(crate) mod outbound;
