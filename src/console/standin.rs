//! The Graph API stand-in: a real HTTP server on `127.0.0.1:0`, on its own thread and
//! actix system, that the engine's sender talks to instead of `graph.facebook.com`.
//!
//! It answers `POST …/me/messages` as Facebook does (`recipient_id`, plus a fresh
//! `message_id` for messages, none for sender actions) and hands every accepted request
//! to the console through a channel. It keeps nothing and never calls the webhook itself:
//! the console posts Facebook's echo and receipts once it has shown the message.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::json;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use crate::messenger::outbound::SendRequest;

/// One Send API call the stand-in accepted.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub request: SendRequest,
    /// The id it answered with; `None` for sender actions, which Facebook gives none.
    pub message_id: Option<String>,
}

/// What every request handler of the stand-in shares.
struct Shared {
    /// Prefix that keeps ids unique across console sessions on one data directory
    /// (the engine deduplicates echoes by `mid`).
    id_prefix: String,
    next_id: AtomicU64,
    to_console: UnboundedSender<Delivered>,
}

/// The running stand-in.
pub struct GraphStandIn {
    /// What `MESSENGER_GRAPH_URL` is set to, with a version like the real one.
    pub url: String,
    handle: ServerHandle,
}

impl GraphStandIn {
    /// Starts the server on its own thread; `id_prefix` starts every `message_id`.
    pub fn start(
        id_prefix: String,
    ) -> std::io::Result<(GraphStandIn, UnboundedReceiver<Delivered>)> {
        let (to_console, from_standin) = unbounded_channel();
        let shared = Arc::new(Shared {
            id_prefix,
            next_id: AtomicU64::new(1),
            to_console,
        });
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            actix_rt::System::new().block_on(async move {
                match bind(shared) {
                    Ok((addr, server)) => {
                        let _ = started_tx.send(Ok((addr, server.handle())));
                        let _ = server.await;
                    }
                    Err(error) => {
                        let _ = started_tx.send(Err(error));
                    }
                }
            })
        });
        let (addr, handle) = started_rx
            .recv()
            .map_err(|_| std::io::Error::other("the Graph API stand-in thread ended early"))??;
        let standin = GraphStandIn {
            url: format!("http://{addr}/v21.0"),
            handle,
        };
        Ok((standin, from_standin))
    }

    /// Stops the server; requests in flight are cut (the engine is stopped before this).
    pub async fn stop(self) {
        self.handle.stop(false).await;
    }
}

fn bind(shared: Arc<Shared>) -> std::io::Result<(SocketAddr, actix_web::dev::Server)> {
    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::from(shared.clone()))
            .default_service(web::to(answer))
    })
    .workers(1)
    .disable_signals()
    .bind("127.0.0.1:0")?;
    let addr = server
        .addrs()
        .first()
        .copied()
        .ok_or_else(|| std::io::Error::other("the Graph API stand-in bound no address"))?;
    Ok((addr, server.run()))
}

async fn answer(req: HttpRequest, body: web::Bytes, shared: web::Data<Shared>) -> HttpResponse {
    if req.method() != actix_web::http::Method::POST || !req.path().ends_with("/me/messages") {
        return graph_error(
            actix_web::http::StatusCode::NOT_FOUND,
            "the console's Graph API stand-in only answers POST /me/messages",
        );
    }
    let request: SendRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(error) => {
            return graph_error(
                actix_web::http::StatusCode::BAD_REQUEST,
                &format!("not a Send API request: {error}"),
            )
        }
    };
    let message_id = request.message.as_ref().map(|_| {
        let n = shared.next_id.fetch_add(1, Ordering::Relaxed);
        format!("m_{}_{n}", shared.id_prefix)
    });
    let mut answer = json!({ "recipient_id": request.recipient.id });
    if let Some(id) = &message_id {
        answer["message_id"] = json!(id);
    }
    // The console may already be gone while the engine drains; the answer stays the same.
    let _ = shared.to_console.send(Delivered {
        request,
        message_id,
    });
    HttpResponse::Ok().json(answer)
}

/// A Graph error body with code 100 (invalid parameter), which the sender treats as permanent.
fn graph_error(status: actix_web::http::StatusCode, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(json!({
        "error": {"message": message, "type": "OAuthException", "code": 100}
    }))
}
