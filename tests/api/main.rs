//! Integration tests: the real server, real HTTP, real sled files, real actors, and a
//! mock Graph API that is a real HTTP server.

mod acks;
mod actions;
mod affinity;
mod browser;
mod cli;
mod conversations;
mod crash;
mod deletion;
mod events;
mod export;
mod flows;
mod helpers;
mod hostile;
mod inspector;
mod listing;
mod observability;
mod overload;
mod pages;
mod profile;
mod restarts;
mod sending;
mod steering;
mod supervision;
mod webhook;
