//! The `colloquy` binary: picks and tunes the allocator, hands the command line to
//! `colloquy::launch::command_line`, which parses it, sets up logging, runs the command
//! and turns its outcome into an exit code. All engine logic lives in the library.

use std::process::ExitCode;

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
    colloquy::launch::command_line()
}
