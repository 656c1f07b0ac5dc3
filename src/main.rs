//! The `colloquy` binary: parses the command line, sets up logging, runs the command.
//! All logic lives in the library; this file only turns errors into an exit code.

use std::process::ExitCode;

use clap::Parser;
use colloquy::cli::{self, Cli, Command};

// The engine allocates small, short-lived buffers on every thread (HTTP bodies, JSON,
// sled's node copies); glibc's malloc showed up as a fifth of the CPU profile under load
// (docs/performance.md). The library leaves this choice to each binary.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let system = actix_rt::System::new();
    let outcome = system.block_on(async move {
        match cli.command {
            Command::Serve(args) => cli::serve(*args).await.map(|()| String::new()),
            Command::Inspect(args) => cli::inspect(args).await,
            Command::Subscribe(args) => cli::subscribe(args).await,
            Command::Chat(args) => colloquy::console::run(args).await.map(|()| String::new()),
        }
    });
    match outcome {
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
