//! The public listener's connections: how many each thread serving the webhook (an HTTP
//! worker, or the engine's thread with `listener`) has open, and when a response should
//! end its connection.
//!
//! `COLLOQUY_MAX_CONNECTIONS` bounds the connections a thread serves; more wait in the
//! kernel's accept queue until one of them ends. A kept-alive connection that is idle
//! still counts, and a client such as Facebook's delivery keeps its connections alive for
//! as long as it uses them, so with every slot held the waiting connections were never
//! accepted: a POST in the accept queue waited until idle connections timed out, seconds
//! after the traffic paused (e2e p99 of 15 s at 2,000 new users/s, released 5 s after
//! the spike). Like a web server that drains reusable connections when it runs out, a
//! thread at its bound answers with `Connection: close`: the client opens a new
//! connection for its next request, and it queues behind the waiting ones instead of
//! holding a slot. Below the bound nothing changes. This never ends a connection in the
//! middle of a request, and it knows nothing of what is served.

use std::any::Any;
use std::cell::Cell;

use actix_web::dev::Extensions;

thread_local! {
    /// Connections open on this thread (each connection lives on one thread).
    static OPEN: Cell<usize> = const { Cell::new(0) };
}

/// Held while a connection is open (in its data, or by `listener`'s task serving it);
/// counts it on its thread.
pub(super) struct OpenConnection;

impl OpenConnection {
    pub(super) fn opened() -> OpenConnection {
        OPEN.with(|open| open.set(open.get() + 1));
        OpenConnection
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        OPEN.with(|open| open.set(open.get().saturating_sub(1)));
    }
}

/// For `HttpServer::on_connect`: counts the new connection until it closes.
pub fn count_connection(_: &dyn Any, data: &mut Extensions) {
    data.insert(OpenConnection::opened());
}

/// Whether a response finished now should end its connection: its thread has
/// `per_worker` connections or more open. Called on the thread serving the request.
pub fn should_close(per_worker: usize) -> bool {
    OPEN.with(Cell::get) >= per_worker
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_at_its_bound_closes_and_below_it_keeps_alive() {
        let first = OpenConnection::opened();
        assert!(!should_close(2), "one of two slots taken");
        let second = OpenConnection::opened();
        assert!(should_close(2), "both slots taken");
        drop(first);
        assert!(!should_close(2), "a closed connection frees its slot");
        drop(second);
        assert!(!should_close(1));
    }
}
