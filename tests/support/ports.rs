//! Loopback ports for test servers, shared by the test binaries that start processes
//! (`#[path]`-included; not a test target of its own).

use std::net::TcpListener;

/// A loopback port free now, below Linux's ephemeral range (32768 and up): a port the
/// kernel hands out for port 0 or an outgoing connection could be taken again between
/// this check and the server's bind (or its restart after a kill); these cannot.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // Test binaries running side by side start from different places.
    let _ = NEXT.compare_exchange(
        0,
        std::process::id() * 97 % SPAN + 1,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    loop {
        let port = FIRST + NEXT.fetch_add(1, Ordering::Relaxed) % SPAN;
        let port = u16::try_from(port).expect("below 32768");
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}
