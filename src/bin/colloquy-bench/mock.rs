//! The mock Graph API the server under test sends its replies to.
//!
//! Answers `POST <any prefix>/{page or me}/messages` like the Send API
//! (`{"recipient_id":..,"message_id":"m_bench_N"}`), hands each delivered message to the
//! [`Tracker`] with its arrival time, and, when asked, injects faults into a share of
//! the calls. A faulted call delivers nothing: after a 500, a 613 or a stall the reply
//! still has to come from the server's retry. Runs on its own actix-web worker threads.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use actix_web::http::{Method, StatusCode};
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use anyhow::Context as _;
use serde::Deserialize;
use serde_json::json;

use crate::args::FaultKind;
use crate::tracker::Tracker;

/// How long a `timeout` fault stalls: longer than any sensible Send API client timeout.
const STALL: Duration = Duration::from_secs(30);

/// Counters of what the mock was asked and how it answered.
#[derive(Default)]
pub struct MockStats {
    pub calls: AtomicU64,
    pub faults: AtomicU64,
    pub delivered: AtomicU64,
    pub other: AtomicU64,
    next_message: AtomicU64,
}

pub struct MockGraph {
    pub url: String,
    pub stats: Arc<MockStats>,
    handle: ServerHandle,
}

struct MockState {
    tracker: Arc<Tracker>,
    stats: Arc<MockStats>,
    fail: f64,
    kind: FaultKind,
}

impl MockGraph {
    /// Binds `addr` and serves on `workers` threads until [`MockGraph::stop`].
    pub fn start(
        addr: SocketAddr,
        workers: usize,
        tracker: Arc<Tracker>,
        fail: f64,
        kind: FaultKind,
    ) -> anyhow::Result<MockGraph> {
        let stats = Arc::new(MockStats::default());
        let state = web::Data::new(MockState {
            tracker,
            stats: stats.clone(),
            fail,
            kind,
        });
        let server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .app_data(web::PayloadConfig::new(1024 * 1024))
                .default_service(web::to(answer))
        })
        .workers(workers)
        .disable_signals()
        .shutdown_timeout(1)
        .bind(addr)
        .with_context(|| format!("cannot listen on {addr} for the mock Graph API"))?;
        let bound = server.addrs()[0];
        let server = server.run();
        let handle = server.handle();
        actix_rt::spawn(server);
        Ok(MockGraph {
            url: format!("http://{bound}/v21.0"),
            stats,
            handle,
        })
    }

    pub async fn stop(&self) {
        self.handle.stop(false).await;
    }
}

#[derive(Deserialize)]
struct SendBody {
    recipient: Option<Recipient>,
    message: Option<Message>,
}

#[derive(Deserialize)]
struct Recipient {
    id: Option<String>,
}

#[derive(Deserialize)]
struct Message {
    text: Option<String>,
}

async fn answer(req: HttpRequest, body: web::Bytes, state: web::Data<MockState>) -> HttpResponse {
    let at = Instant::now();
    let stats = &state.stats;
    if req.method() != Method::POST || !req.path().ends_with("/messages") {
        stats.other.fetch_add(1, Ordering::Relaxed);
        return graph_error(
            StatusCode::NOT_FOUND,
            100,
            "the bench mocks only /{page}/messages",
        );
    }
    stats.calls.fetch_add(1, Ordering::Relaxed);
    if state.fail > 0.0 && rand::random::<f64>() < state.fail {
        stats.faults.fetch_add(1, Ordering::Relaxed);
        return fault(state.kind).await;
    }
    let Ok(send) = serde_json::from_slice::<SendBody>(&body) else {
        return graph_error(
            StatusCode::BAD_REQUEST,
            100,
            "the body is not a Send API request",
        );
    };
    let Some(recipient) = send.recipient.and_then(|r| r.id) else {
        return graph_error(StatusCode::BAD_REQUEST, 100, "recipient.id is required");
    };
    let message_id = format!(
        "m_bench_{}",
        stats.next_message.fetch_add(1, Ordering::Relaxed) + 1
    );
    // A sender action (typing_on, mark_seen) is answered but is no reply.
    if let Some(message) = send.message {
        stats.delivered.fetch_add(1, Ordering::Relaxed);
        state
            .tracker
            .on_reply(&recipient, message.text.as_deref(), &message_id, at);
    }
    HttpResponse::Ok().json(json!({"recipient_id": recipient, "message_id": message_id}))
}

async fn fault(kind: FaultKind) -> HttpResponse {
    match kind {
        FaultKind::Http500 => transient(),
        FaultKind::RateLimit613 => graph_error(
            StatusCode::BAD_REQUEST,
            613,
            "(#613) Calls to this api have exceeded the rate limit.",
        ),
        FaultKind::Timeout => {
            actix_rt::time::sleep(STALL).await;
            transient()
        }
    }
}

fn transient() -> HttpResponse {
    HttpResponse::InternalServerError().json(json!({"error": {
        "message": "An unexpected error has occurred. Please retry your request later.",
        "type": "OAuthException", "code": 2, "is_transient": true, "fbtrace_id": "bench"
    }}))
}

fn graph_error(status: StatusCode, code: i64, message: &str) -> HttpResponse {
    HttpResponse::build(status).json(json!({"error": {
        "message": message, "type": "OAuthException", "code": code, "fbtrace_id": "bench"
    }}))
}
