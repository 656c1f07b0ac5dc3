//! The `colloquy` binary: picks and tunes the allocator, parses the command line, sets up
//! logging, runs the command. All engine logic lives in the library; this file only turns
//! errors into an exit code.

use std::process::ExitCode;

use clap::Parser;
use colloquy::cli::{self, Cli, Command};

// The engine allocates small, short-lived buffers on every thread (HTTP bodies, JSON,
// sled's node copies); glibc's malloc showed up as a fifth of the CPU profile under load
// (docs/performance.md). The library leaves this choice to each binary.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc keeps freed pages for a second before returning them to the OS; under load
/// that held ~15 MiB more than the engine uses. 10 ms gives it back with the same
/// throughput (docs/performance.md, "Memory"). `MIMALLOC_PURGE_DELAY` still overrides it.
#[cfg(feature = "mimalloc")]
mod allocator {
    /// `mi_option_purge_delay` in mimalloc's `mi_option_t` (the Rust bindings name no
    /// constant for it); `the_purge_delay_option_is_the_one_set` checks the index.
    const PURGE_DELAY_OPTION: libmimalloc_sys::mi_option_t = 15;
    const PURGE_DELAY_MS: std::os::raw::c_long = 10;

    pub fn tune() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            set_purge_delay(PURGE_DELAY_MS);
        }
    }

    fn set_purge_delay(ms: std::os::raw::c_long) {
        // SAFETY: sets one of mimalloc's process-wide option values, which its allocator
        // reads on every purge decision; any value is valid (negative = never purge).
        unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY_OPTION, ms) }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn purge_delay() -> std::os::raw::c_long {
            // SAFETY: reads an option value; no other effect.
            unsafe { libmimalloc_sys::mi_option_get(PURGE_DELAY_OPTION) }
        }

        #[test]
        fn the_purge_delay_option_is_the_one_set() {
            // mimalloc's own default for purge_delay is 1000 ms; no neighbour option has
            // it, so reading 1000 at this index proves the index before we change it.
            if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
                assert_eq!(purge_delay(), 1000);
            }
            set_purge_delay(PURGE_DELAY_MS);
            assert_eq!(purge_delay(), PURGE_DELAY_MS);
        }
    }
}

fn main() -> ExitCode {
    #[cfg(feature = "mimalloc")]
    allocator::tune();
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
