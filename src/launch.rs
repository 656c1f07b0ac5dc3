//! Running a bot from its own `main`: the one call a user's binary (or an example) needs.
//!
//! `command_line()` is the whole `colloquy` command line (`serve`, `inspect`, `subscribe`,
//! `chat`) with the built-in flows: the `colloquy` binary is a call to it.
//!
//! `serve_or_chat(flow, name)` serves the flow to Facebook, configured from the same
//! environment variables as `colloquy serve` (see `RawConfig::from_env`), or, when the
//! program's first argument is `chat`, runs `colloquy chat` on it in this terminal. The
//! data directory defaults to `data/<name>.sled`. It owns no engine logic: it chooses,
//! configures and delegates to `start` or the console.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser as _;

use thiserror::Error;

use crate::config::{Config, ConfigError, RawConfig};
use crate::console::{self, ChatArgs, ChatError, Terminal, DEFAULT_PSID};
use crate::flow::FlowHandle;
use crate::StartError;

/// Why a bot could not run.
#[derive(Debug, Error)]
pub enum LaunchError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("the server stopped with an error: {0}")]
    Serve(#[from] std::io::Error),
    #[error(transparent)]
    Chat(#[from] ChatError),
}

/// Serves `flow` (or chats with it in the terminal when the first argument is `chat`).
///
/// ```no_run
/// use colloquy::flow::builtin::Echo;
/// use colloquy::FlowHandle;
///
/// #[actix_web::main]
/// async fn main() -> std::process::ExitCode {
///     match colloquy::launch::serve_or_chat(FlowHandle::new(Echo), "my_bot").await {
///         Ok(()) => std::process::ExitCode::SUCCESS,
///         Err(error) => {
///             eprintln!("my_bot: {error}");
///             std::process::ExitCode::FAILURE
///         }
///     }
/// }
/// ```
pub async fn serve_or_chat(flow: FlowHandle, name: &str) -> Result<(), LaunchError> {
    let in_terminal = std::env::args().nth(1).as_deref() == Some("chat");
    // In the terminal, engine logs would interleave with the chat: only on if asked.
    if !in_terminal || std::env::var_os("RUST_LOG").is_some() {
        let _ = env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
            .try_init();
    }
    let mut raw = RawConfig::from_env()?;
    let data_dir = raw
        .data_dir
        .take()
        .unwrap_or_else(|| PathBuf::from(format!("data/{name}.sled")));
    if in_terminal {
        let args = ChatArgs {
            flow: name.to_string(),
            data_dir,
            psid: DEFAULT_PSID.into(),
            ..ChatArgs::default()
        };
        let stdout = std::io::stdout();
        let colours = stdout.is_terminal();
        let terminal = Terminal::new(Box::new(stdout), colours);
        console::chat(flow, &args, console::stdin_lines(), terminal).await?;
        return Ok(());
    }
    raw.data_dir = Some(data_dir);
    let app = crate::start(Config::from_raw(raw)?, flow).await?;
    app.wait().await?;
    Ok(())
}

/// Runs the `colloquy` command line on this process's arguments, as the `colloquy` binary
/// does: parses them (printing usage and exiting on a usage error), sets up logging
/// (`RUST_LOG`, default `info`), runs the command, prints its output and returns the exit
/// code: success, or failure with the error on stderr.
pub fn command_line() -> ExitCode {
    let cli = crate::cli::Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let system = actix_rt::System::new();
    match system.block_on(crate::cli::run(cli)) {
        Ok(output) => {
            print!("{output}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
