//! The mock Graph API the server under test sends its replies to.
//!
//! Answers `POST <any prefix>/{page or me}/messages` like the Send API
//! (`{"recipient_id":..,"message_id":"m_bench_N"}`), and Graph batch calls of them
//! (`POST /v21.0/` with `batch`: one `{"code","body"}` per request), hands each delivered
//! message to the [`Tracker`] with its arrival time, and, when asked, injects faults into
//! a share of the requests. A faulted request delivers nothing: after a 500, a 613 or a
//! stall (`null` inside a batch) the reply still has to come from the server's retry.
//! Runs on its own actix-web worker threads.

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
    /// Send API requests, made alone or inside a batch call.
    pub calls: AtomicU64,
    /// Graph batch calls (each also counts its requests in `calls`).
    pub batches: AtomicU64,
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

/// A Graph batch call's body: `{"batch": [{"method", "relative_url", "body"}]}`.
#[derive(Deserialize)]
struct BatchBody {
    batch: Vec<BatchItem>,
}

#[derive(Deserialize)]
struct BatchItem {
    method: String,
    relative_url: String,
    /// The request's fields, form-encoded, each field's JSON as its value.
    #[serde(default)]
    body: String,
}

/// How the mock answers one Send API request: status and JSON body, or no answer (a
/// stall for a single call, `null` inside a batch).
enum Answered {
    Now(StatusCode, serde_json::Value),
    Stalled,
}

async fn answer(req: HttpRequest, body: web::Bytes, state: web::Data<MockState>) -> HttpResponse {
    let at = Instant::now();
    let stats = &state.stats;
    if req.method() == Method::POST && req.path().ends_with("/messages") {
        let send = serde_json::from_slice::<SendBody>(&body).ok();
        return match send_api(&state, send, at) {
            Answered::Now(status, body) => HttpResponse::build(status).json(body),
            Answered::Stalled => {
                actix_rt::time::sleep(STALL).await;
                HttpResponse::InternalServerError().json(transient())
            }
        };
    }
    if req.method() == Method::POST && req.path().trim_end_matches('/').ends_with("/v21.0") {
        if let Ok(batch) = serde_json::from_slice::<BatchBody>(&body) {
            stats.batches.fetch_add(1, Ordering::Relaxed);
            let answers: Vec<serde_json::Value> = batch
                .batch
                .into_iter()
                .map(|item| batch_answer(&state, item, at))
                .collect();
            return HttpResponse::Ok().json(answers);
        }
    }
    stats.other.fetch_add(1, Ordering::Relaxed);
    let (status, body) = graph_error(
        StatusCode::NOT_FOUND,
        100,
        "the bench mocks only /{page}/messages and batch calls of them",
    );
    HttpResponse::build(status).json(body)
}

/// One request of a batch call, answered as Meta does: `{"code", "body"}` (the body a
/// JSON string), or `null` for a request not completed.
fn batch_answer(state: &MockState, item: BatchItem, at: Instant) -> serde_json::Value {
    if item.method != "POST" || !item.relative_url.ends_with("/messages") {
        state.stats.other.fetch_add(1, Ordering::Relaxed);
        let (status, body) = graph_error(StatusCode::NOT_FOUND, 100, "not a Send API request");
        return json!({"code": status.as_u16(), "body": body.to_string()});
    }
    match send_api(state, form_send_body(&item.body), at) {
        Answered::Now(status, body) => json!({"code": status.as_u16(), "body": body.to_string()}),
        Answered::Stalled => serde_json::Value::Null,
    }
}

/// A batch item's form body as a Send API request: each field's value is its JSON.
fn form_send_body(form: &str) -> Option<SendBody> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(form).ok()?;
    let fields = pairs.into_iter().map(|(name, value)| {
        let json = if value.starts_with(['{', '[']) {
            serde_json::from_str(&value).ok()
        } else {
            None
        };
        (name, json.unwrap_or(serde_json::Value::String(value)))
    });
    serde_json::from_value(serde_json::Value::Object(fields.collect())).ok()
}

/// One Send API request (`None`: its body did not parse): delivered to the tracker, or
/// faulted when the run injects faults.
fn send_api(state: &MockState, send: Option<SendBody>, at: Instant) -> Answered {
    let stats = &state.stats;
    stats.calls.fetch_add(1, Ordering::Relaxed);
    if state.fail > 0.0 && rand::random::<f64>() < state.fail {
        stats.faults.fetch_add(1, Ordering::Relaxed);
        return fault(state.kind);
    }
    let Some(send) = send else {
        let (status, body) = graph_error(
            StatusCode::BAD_REQUEST,
            100,
            "the body is not a Send API request",
        );
        return Answered::Now(status, body);
    };
    let Some(recipient) = send.recipient.and_then(|r| r.id) else {
        let (status, body) = graph_error(StatusCode::BAD_REQUEST, 100, "recipient.id is required");
        return Answered::Now(status, body);
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
    Answered::Now(
        StatusCode::OK,
        json!({"recipient_id": recipient, "message_id": message_id}),
    )
}

fn fault(kind: FaultKind) -> Answered {
    match kind {
        FaultKind::Http500 => Answered::Now(StatusCode::INTERNAL_SERVER_ERROR, transient()),
        FaultKind::RateLimit613 => {
            let (status, body) = graph_error(
                StatusCode::BAD_REQUEST,
                613,
                "(#613) Calls to this api have exceeded the rate limit.",
            );
            Answered::Now(status, body)
        }
        FaultKind::Timeout => Answered::Stalled,
    }
}

fn transient() -> serde_json::Value {
    json!({"error": {
        "message": "An unexpected error has occurred. Please retry your request later.",
        "type": "OAuthException", "code": 2, "is_transient": true, "fbtrace_id": "bench"
    }})
}

fn graph_error(status: StatusCode, code: i64, message: &str) -> (StatusCode, serde_json::Value) {
    let body = json!({"error": {
        "message": message, "type": "OAuthException", "code": code, "fbtrace_id": "bench"
    }});
    (status, body)
}
