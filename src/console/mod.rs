//! `colloquy chat`: talk to a flow in the terminal as a Messenger user would, with no
//! Facebook app.
//!
//! Owns the console session. It starts the real engine in-process ([`crate::start`]) on
//! loopback with made-up secrets, and plays Facebook's two parts over HTTP: what the
//! person types becomes a signed webhook POST (webhook → supervisor → conversation →
//! sender, as in production), and a Graph API stand-in (an actix-web server on its own
//! thread) answers the sender and hands each reply to the console to print. It must not
//! reach into the engine (store, actors): it only speaks HTTP to it, so what works here
//! works against Facebook.
//!
//! What the person sees: bot lines start with `bot> `, the prompt is `you> `. Quick
//! replies and template buttons are numbered (`[1] Billing  [2] Tech`) and typing the
//! number taps them; a link button only prints its URL. `typing_on` shows as `(typing…)`
//! and `mark_seen` as `(seen)`, dimmed on a terminal; `typing_off` shows nothing.
//!
//! Two protocols a developer may rely on:
//! - **Receipts, as in production.** After printing a message, the console posts what
//!   Facebook would: an echo carrying the request's `metadata`, a delivery of its `mid`,
//!   and a read. The read is posted once the message is on screen, which is when a user
//!   would have read it, so the transcript (`/state`, `colloquy inspect`) ends at `read`.
//! - **The prompt comes back when the engine is done.** After each message the console
//!   reads the transcript through the admin endpoint until the message is handled and
//!   every reply it queued is read or failed (sender actions: sent). That is the engine's
//!   own record, not a quiet period, so the output is the same on every run.
//!
//! State lives in `--data` (default `data/chat`) like the server's, so a conversation
//! continues where it left off next time. Engine logs are off unless `RUST_LOG` is set,
//! so they never interleave with the chat. A binary with its own Rust flow can offer the
//! same console through [`chat`].

mod engine;
mod events;
mod render;
mod session;
mod standin;
mod terminal;

use std::io::{self, BufRead, IsTerminal, Read};
use std::path::PathBuf;

use clap::Args;
use thiserror::Error;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use crate::clock::now_ms;
use crate::config::{Config, ConfigError, RawConfig};
use crate::event::Channel;
use crate::flow::builtin::resolve_flow;
use crate::{FlowHandle, StartError};
use engine::{EngineLink, SessionSecrets};
use events::Parties;
use session::Session;
use standin::GraphStandIn;

pub use terminal::Terminal;

/// Where `colloquy chat` keeps its conversations unless `--data` says otherwise.
pub const DEFAULT_CHAT_DATA_DIR: &str = "data/chat";
/// The console user's page-scoped id unless `--psid` says otherwise.
pub const DEFAULT_PSID: &str = "console-user";
/// The page the console user talks to; fixed, so every session finds the same conversation.
pub const CONSOLE_PAGE_ID: &str = "console-page";
/// The page token the sender presents to the stand-in, which does not check it.
const CONSOLE_PAGE_TOKEN: &str = "console-page-token";
/// The engine's listeners: loopback, on ports the system picks.
const LOOPBACK_ANY_PORT: &str = "127.0.0.1:0";
/// Longest line read from stdin at once; a longer one arrives as several messages.
const MAX_LINE_BYTES: u64 = 64 * 1024;

/// `colloquy chat [--flow NAME] [--data DIR] [--psid ID]`.
#[derive(Debug, Args)]
pub struct ChatArgs {
    /// The flow to talk to: the same names as `serve --flow`.
    #[arg(long, default_value = "thanks")]
    pub flow: String,
    /// Data directory (sled); the conversation continues there next time.
    #[arg(long = "data", default_value = DEFAULT_CHAT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Your page-scoped id as the bot sees it (letters, digits, `-`, `_`, `.`).
    #[arg(long, default_value = DEFAULT_PSID, value_parser = parse_psid)]
    pub psid: String,
    /// Talk to this page of the pages file (`--pages`): its flow, on its channel.
    #[arg(long, requires = "pages")]
    pub page: Option<String>,
    /// The pages file `colloquy serve` runs with.
    #[arg(long, env = "COLLOQUY_PAGES")]
    pub pages: Option<PathBuf>,
    /// Messenger, or Instagram for an Instagram page (set from the page, not a flag).
    #[arg(skip)]
    pub channel: Channel,
}

impl Default for ChatArgs {
    /// What `colloquy chat` runs with no flag: the thanks flow, `data/chat`, the console
    /// user, the console's own page.
    fn default() -> Self {
        ChatArgs {
            flow: "thanks".into(),
            data_dir: PathBuf::from(DEFAULT_CHAT_DATA_DIR),
            psid: DEFAULT_PSID.into(),
            page: None,
            pages: None,
            channel: Channel::Messenger,
        }
    }
}

fn parse_psid(value: &str) -> Result<String, String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if !value.is_empty() && value.len() <= 64 && value.chars().all(allowed) {
        Ok(value.to_string())
    } else {
        Err("use 1 to 64 letters, digits, `-`, `_` or `.`".into())
    }
}

/// Why a chat session could not start or did not end cleanly.
#[derive(Debug, Error)]
pub enum ChatError {
    #[error("cannot start the Graph API stand-in")]
    StandIn(#[source] io::Error),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot start the engine on {dir}")]
    Start {
        dir: PathBuf,
        #[source]
        source: StartError,
    },
    #[error("cannot write the chat")]
    Output(#[source] io::Error),
    #[error("the engine stopped with an error")]
    Stop(#[source] io::Error),
}

/// `colloquy chat`: the flow named by `--flow` (or the flow of `--page` in the pages
/// file), typed on stdin, printed on stdout.
pub async fn run(mut args: ChatArgs) -> anyhow::Result<()> {
    silence_logs_unless_asked();
    let mut flow = resolve_flow(&args.flow)?;
    if let (Some(id), Some(path)) = (&args.page, &args.pages) {
        let table = crate::pages::file::load(path, &flow)?;
        let page = table.page(id).ok_or_else(|| {
            anyhow::anyhow!("page {id} is not in the pages file {}", path.display())
        })?;
        flow = page.flow.clone();
        args.channel = page.channel;
        if let Some(spec) = &page.flow_spec {
            args.flow = spec.clone();
        }
    }
    let stdout = std::io::stdout();
    let colours = stdout.is_terminal();
    let terminal = Terminal::new(Box::new(stdout), colours);
    Ok(chat(flow, &args, stdin_lines(), terminal).await?)
}

/// Chats with any flow (a binary's own Rust flow, or a test's): `lines` are what the
/// person types, and the transcript goes to `output` (see [`Terminal::new`]). Runs until
/// `/quit`, the end of `lines` or Ctrl-C, then stops the engine, which flushes its store.
pub async fn chat(
    flow: FlowHandle,
    args: &ChatArgs,
    lines: UnboundedReceiver<String>,
    mut output: Terminal,
) -> Result<(), ChatError> {
    let session_id = format!("{:x}{:08x}", now_ms(), rand::random::<u32>());
    let (standin, from_standin) =
        GraphStandIn::start(format!("page_{session_id}")).map_err(ChatError::StandIn)?;
    let secrets = SessionSecrets::generate();
    let config = console_config(args, &standin.url, &secrets)?;
    let webhook_path = config.webhook_path.clone();
    let app = match crate::start(config, flow).await {
        Ok(app) => app,
        Err(source) => {
            standin.stop().await;
            let dir = args.data_dir.clone();
            return Err(ChatError::Start { dir, source });
        }
    };
    let parties = Parties {
        page_id: args.page.clone().unwrap_or_else(|| CONSOLE_PAGE_ID.into()),
        psid: args.psid.clone(),
        channel: args.channel,
    };
    let engine = EngineLink::new(&app, &webhook_path, &secrets, parties, &session_id);
    let chatted = match output.note(&banner(args)) {
        Ok(()) => Session::new(output, engine, from_standin).run(lines).await,
        Err(error) => Err(error),
    };
    let stopped = app.stop().await;
    standin.stop().await;
    chatted.map_err(ChatError::Output)?;
    stopped.map_err(ChatError::Stop)
}

fn banner(args: &ChatArgs) -> String {
    let page = match &args.page {
        Some(page) => format!(" on {} page {page}", args.channel.name()),
        None => String::new(),
    };
    format!(
        "colloquy chat: flow `{}`{page}, you are `{}`, state in {}. /help lists commands, /quit ends.",
        args.flow,
        args.psid,
        args.data_dir.display()
    )
}

/// Engine logs would interleave with the chat, so they are off unless `RUST_LOG` asks
/// for them (the binary's logger defaults to `info`).
fn silence_logs_unless_asked() {
    if std::env::var_os("RUST_LOG").is_none() {
        log::set_max_level(log::LevelFilter::Off);
    }
}

fn console_config(
    args: &ChatArgs,
    graph_url: &str,
    secrets: &SessionSecrets,
) -> Result<Config, ConfigError> {
    Config::from_raw(RawConfig {
        verify_token: Some(secrets.verify_token.clone()),
        app_secret: Some(secrets.app_secret.clone()),
        access_token: Some(CONSOLE_PAGE_TOKEN.into()),
        graph_url: Some(graph_url.into()),
        bind: Some(LOOPBACK_ANY_PORT.into()),
        admin_bind: Some(LOOPBACK_ANY_PORT.into()),
        data_dir: Some(args.data_dir.clone()),
        admin_token: Some(secrets.admin_token.clone()),
        workers: Some(1),
        // One person typing never nears Meta's rate; no need to pace the stand-in.
        page_send_rate: Some(0),
        // One person typing: no CPU of the developer's machine is worth keeping.
        engine_cpu: Some("off".into()),
        ..RawConfig::default()
    })
}

/// Lines typed on stdin, read on a thread of their own because reading blocks. Invalid
/// UTF-8 is replaced, not fatal; the channel closes at end of input or on a read error.
pub fn stdin_lines() -> UnboundedReceiver<String> {
    let (lines, typed) = unbounded_channel();
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buffer = Vec::new();
        loop {
            buffer.clear();
            match (&mut stdin)
                .take(MAX_LINE_BYTES)
                .read_until(b'\n', &mut buffer)
            {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let line = String::from_utf8_lossy(&buffer);
            let line = line.trim_end_matches(['\n', '\r']).to_string();
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    typed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_psid_is_a_plain_token() {
        assert!(parse_psid("console-user").is_ok());
        assert!(parse_psid("1234567890").is_ok());
        for bad in ["", "a b", "a/b", "ü", &"x".repeat(65)] {
            assert!(parse_psid(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_console_config_listens_on_loopback_only() {
        let args = ChatArgs {
            flow: "echo".into(),
            data_dir: "x".into(),
            psid: DEFAULT_PSID.into(),
            page: None,
            pages: None,
            channel: Channel::Messenger,
        };
        let secrets = SessionSecrets::generate();
        let config = console_config(&args, "http://127.0.0.1:9/v21.0", &secrets).unwrap();
        assert!(config.bind.ip().is_loopback() && config.admin_bind.ip().is_loopback());
        assert_eq!(config.admin_token.unwrap().expose(), secrets.admin_token);
    }
}
