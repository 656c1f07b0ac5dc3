//! The `colloquy` binary: picks the allocator, hands the command line to
//! `colloquy::launch::command_line`, which parses it, sets up logging, runs the command
//! and turns its outcome into an exit code. All engine logic lives in the library.

use std::process::ExitCode;

// The engine allocates small, short-lived buffers on every thread (HTTP bodies, JSON,
// sled's node copies); glibc's malloc showed up as a fifth of the CPU profile under load
// (docs/performance.md). The library leaves this choice to each binary.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

// mimalloc keeps freed pages for its default purge delay (1 s) before returning them to
// the OS, so a busy engine reuses them instead of faulting fresh ones in: with 10 ms a
// sixth of the actor thread's samples went to page faults, `madvise` and first touches
// (docs/performance.md, "mimalloc's own purge delay"), and every memory target of
// issue 12 holds with 1 s. `MIMALLOC_PURGE_DELAY` (milliseconds) changes it.

fn main() -> ExitCode {
    colloquy::launch::command_line()
}
