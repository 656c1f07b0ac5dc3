//! The Messenger webhook: the subscription handshake (GET) and event intake (POST).
//!
//! A POST is read up to a size limit, its signature checked over the raw bytes, parsed
//! into typed events, appended to the journal and flushed (group commit) before the 200
//! goes back: an acknowledged event survives a crash. Only then are the events handed to
//! the supervisor. Nothing of a rejected request is stored. Meta's data-deletion callback
//! is `deletion.rs`. This module never runs flows and never talks to the Graph API.
//!
//! On a cluster node the verified events go to an [`EventIntake`] instead (the cluster's
//! replicated stream), and the 200 waits until it took every one of them.

pub mod connections;
pub mod deletion;
pub mod listener;
pub mod signature;
pub mod steering;

use actix::Addr;
use actix_web::http::header::ContentType;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use futures_util::future::LocalBoxFuture;
use futures_util::StreamExt;
use serde_json::json;
use thiserror::Error;

use crate::config::Config;
use crate::engine::event::EngineEvent;
use crate::engine::load::{Load, Refusal};
use crate::engine::metrics::Metrics;
use crate::engine::supervisor::{Route, Supervisor};
use crate::messenger::inbound::{parse_envelope, InboundEvent, ParseError};
use crate::pages::{Admission, App, PageTable, Pages};
use crate::store::journal::{AwaitedPost, JournalRef};
use crate::store::{JournalRecord, Store, StoreError};
use signature::SignatureError;

/// What the webhook handlers share.
#[derive(Clone)]
pub struct WebhookState {
    pub config: std::sync::Arc<Config>,
    pub store: Store,
    pub supervisor: Addr<Supervisor>,
    pub load: std::sync::Arc<Load>,
    pub metrics: std::sync::Arc<Metrics>,
    pub pages: Pages,
    /// Pages missing from the pages file whose events came, each logged once.
    pub unknown_pages: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    /// A cluster node's intake: where verified events go instead of this node's engine.
    pub intake: Option<std::sync::Arc<dyn EventIntake>>,
}

/// Where a cluster node's webhook hands verified events: they are acknowledged to
/// Facebook once `take` resolves `Ok`, so it must resolve only once every event is
/// durably stored (replicated) by the cluster.
pub trait EventIntake: Send + Sync {
    fn take(&self, events: Vec<InboundEvent>) -> LocalBoxFuture<'static, Result<(), String>>;
}

/// At most this many unknown pages are remembered as logged (each is a page still
/// subscribed to a configured app, so there are few).
const UNKNOWN_PAGES_LOGGED: usize = 1_000;

/// Why a webhook request was refused; `status_code` is the one place mapping it to HTTP.
#[derive(Debug, Error)]
pub enum WebhookError {
    #[error("verification failed: hub.mode must be subscribe and hub.verify_token must match")]
    VerificationFailed,
    #[error("{0}")]
    Signature(#[from] SignatureError),
    #[error("request body is larger than the limit of {limit} bytes")]
    TooLarge { limit: usize },
    #[error("could not read the request body: {0}")]
    Body(String),
    #[error("{0}")]
    Parse(#[from] ParseError),
    #[error("page {page} belongs to another app than the one whose secret signed the body")]
    ForeignPage { page: String },
    #[error("the events could not be stored; Facebook will redeliver them")]
    Store(#[from] StoreError),
    #[error("{}", describe_refusal(*.0))]
    Unavailable(Refusal),
    #[error("the cluster could not take the events ({0}); Facebook will redeliver them")]
    Cluster(String),
}

fn describe_refusal(refusal: Refusal) -> &'static str {
    match refusal {
        Refusal::ShuttingDown => "shutting down; Facebook will redeliver",
        Refusal::TooManyEvents | Refusal::TooManyReplies | Refusal::TooFarBehind => {
            "overloaded; Facebook will redeliver once the backlog drains"
        }
    }
}

/// Under overload, one refusal in this many is logged.
const REFUSALS_PER_LOG_LINE: u64 = 10_000;

/// Seconds a refused sender is asked to wait before trying again.
const RETRY_AFTER_SECS: &str = "5";

impl ResponseError for WebhookError {
    fn status_code(&self) -> StatusCode {
        match self {
            WebhookError::VerificationFailed
            | WebhookError::Signature(_)
            | WebhookError::ForeignPage { .. } => StatusCode::FORBIDDEN,
            WebhookError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            WebhookError::Body(_) | WebhookError::Parse(_) => StatusCode::BAD_REQUEST,
            WebhookError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
            WebhookError::Unavailable(_) | WebhookError::Cluster(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        if matches!(
            self,
            WebhookError::Unavailable(_) | WebhookError::Cluster(_)
        ) {
            response.insert_header(("Retry-After", RETRY_AFTER_SECS));
        }
        response.json(json!({ "error": self.to_string() }))
    }
}

/// Registers the GET and POST handlers at the configured webhook path.
pub fn configure(path: &str) -> impl FnOnce(&mut web::ServiceConfig) + '_ {
    move |cfg| {
        cfg.service(
            web::resource(path)
                .route(web::get().to(verify_subscription))
                .route(web::post().to(receive_events)),
        )
        .route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .configure(deletion::configure);
    }
}

/// `GET /webhook?hub.mode=subscribe&hub.verify_token=T&hub.challenge=C` → 200 `C`.
async fn verify_subscription(
    req: HttpRequest,
    state: web::Data<WebhookState>,
) -> Result<HttpResponse, WebhookError> {
    let answer = check_subscription(&req, &state);
    state.metrics.webhook_request("GET", status_of(&answer));
    answer
}

fn status_of(answer: &Result<HttpResponse, WebhookError>) -> u16 {
    match answer {
        Ok(response) => response.status().as_u16(),
        Err(error) => error.status_code().as_u16(),
    }
}

fn check_subscription(
    req: &HttpRequest,
    state: &WebhookState,
) -> Result<HttpResponse, WebhookError> {
    let params: Vec<(String, String)> =
        serde_urlencoded::from_str(req.query_string()).unwrap_or_default();
    let param = |name: &str| {
        params
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    };
    let token_matches = param("hub.verify_token")
        .is_some_and(|token| state.pages.current().verify_token_matches(token));
    match (param("hub.mode"), param("hub.challenge")) {
        (Some("subscribe"), Some(challenge)) if token_matches => {
            log::info!("webhook subscription verified");
            Ok(HttpResponse::Ok()
                .content_type(ContentType::plaintext())
                .body(challenge.to_string()))
        }
        _ => {
            log::warn!("webhook verification refused (wrong mode, token or missing challenge)");
            Err(WebhookError::VerificationFailed)
        }
    }
}

/// `POST /webhook`: verify, parse, journal, flush, ack, route.
async fn receive_events(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<WebhookState>,
) -> Result<HttpResponse, WebhookError> {
    let started = std::time::Instant::now();
    let answer = accept_events(&req, payload, &state).await;
    if let Ok(count) = &answer {
        state.metrics.acked(*count, started.elapsed());
    }
    let answer = answer.map(|_| {
        HttpResponse::Ok()
            .content_type(ContentType::plaintext())
            .body("EVENT_RECEIVED")
    });
    state.metrics.webhook_request("POST", status_of(&answer));
    answer
}

/// Verifies, parses, journals and routes one POST; returns how many events it acked.
async fn accept_events(
    req: &HttpRequest,
    payload: web::Payload,
    state: &WebhookState,
) -> Result<usize, WebhookError> {
    if let Err(refusal) = state.load.admit() {
        // An overload refuses thousands of POSTs a second: a line each would cost more
        // than the refusal (the count is in `colloquy_webhook_requests_total`).
        let refused = state.load.count_refusal();
        if refused == 1 || refused.is_multiple_of(REFUSALS_PER_LOG_LINE) {
            log::warn!("webhook POST refused with 503: {refusal:?} ({refused} refused so far)");
        }
        // Read (and drop) the body all the same: a request whose body is left unread
        // closes its connection, and a sender reconnecting for every retry costs both
        // sides more than the few bytes.
        let _ = read_limited(req, payload, state.config.max_body_bytes).await;
        return Err(WebhookError::Unavailable(refusal));
    }
    let body = read_limited(req, payload, state.config.max_body_bytes).await?;
    let headers = req.headers();
    // One table for the whole request: a reload meanwhile never mixes two configurations.
    let table = state.pages.current();
    let app = signing_app(
        &table,
        &body,
        headers.get(signature::HEADER_SHA256).map(|v| v.as_bytes()),
        headers.get(signature::HEADER_SHA1).map(|v| v.as_bytes()),
    )
    .inspect_err(|error| log::warn!("webhook POST refused: {error}"))?;
    let (events, unknown) = served_events(&table, app, &body).inspect_err(|error| {
        log::warn!("webhook POST refused: {error}");
    })?;
    note_unknown_pages(state, unknown);
    let count = events.len();
    if count == 0 {
        return Ok(0);
    }
    if let Some(intake) = &state.intake {
        intake.take(events).await.map_err(|error| {
            log::warn!("webhook POST refused with 503: the cluster could not take it: {error}");
            WebhookError::Cluster(error)
        })?;
    } else if state.config.ack_deadline.is_zero() {
        let routed = journal_durably(state, events).await?;
        route(state, routed);
    } else {
        acknowledge_by_turns(state, (&table, app), &body, events).await?;
    }
    log::debug!("webhook POST accepted with {count} event(s)");
    Ok(count)
}

/// The events of a body that this process serves, in the order Facebook stamped them:
/// batches may list a sender's events out of order (stable, so equal stamps keep their
/// order, and parsing the same body twice with the same table gives the same events).
/// Events of pages missing from the pages file are left out (their ids are returned, one
/// per event); a page of another app than the one that signed refuses the whole body.
fn served_events(
    table: &PageTable,
    app: &App,
    body: &[u8],
) -> Result<(Vec<InboundEvent>, Vec<String>), WebhookError> {
    let mut events = parse_envelope(body)?;
    let mut unknown = Vec::new();
    let mut refused = None;
    events.retain(|event| match table.admission(app, &event.page_id) {
        Admission::Serve => true,
        Admission::Unknown => {
            unknown.push(event.page_id.clone());
            false
        }
        Admission::OtherApp => {
            refused.get_or_insert_with(|| event.page_id.clone());
            false
        }
    });
    if let Some(page) = refused {
        return Err(WebhookError::ForeignPage { page });
    }
    events.sort_by_key(|event| event.timestamp);
    Ok((events, unknown))
}

/// The app whose secret signed `body`, by its headers (`sha256` preferred). When no app
/// did, the first app's check says why.
fn signing_app<'t>(
    table: &'t PageTable,
    body: &[u8],
    sha256: Option<&[u8]>,
    sha1: Option<&[u8]>,
) -> Result<&'t App, SignatureError> {
    let mut first_error = None;
    for app in table.apps() {
        match signature::verify(app.secret.expose().as_bytes(), body, sha256, sha1) {
            Ok(()) => return Ok(app),
            Err(error) => {
                first_error.get_or_insert(error);
            }
        }
    }
    Err(first_error.unwrap_or(SignatureError::Missing))
}

/// Counts the events of unknown pages, and logs each such page the first time.
fn note_unknown_pages(state: &WebhookState, unknown: Vec<String>) {
    for page in unknown {
        state.metrics.event_of_unknown_page(&page);
        let mut logged = state
            .unknown_pages
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if logged.len() < UNKNOWN_PAGES_LOGGED && logged.insert(page.clone()) {
            log::warn!(
                "events for page {page}, which the pages file does not list, are acknowledged \
                 and dropped (unsubscribe the page, or add it to the file)"
            );
        }
    }
}

fn route(state: &WebhookState, routed: Vec<(JournalRef, EngineEvent)>) {
    state.load.events_in(routed.len());
    state.supervisor.do_send(Route { events: routed });
}

/// The one-write path: routes the events unjournalled and waits until each one's turn
/// has committed durably, which is what makes the 200 safe. What is not committed by the
/// deadline (a busy conversation, a slow flow, a failed commit) is journalled and routed
/// again as ordinary journalled events, so the answer never waits long.
async fn acknowledge_by_turns(
    state: &WebhookState,
    (table, app): (&PageTable, &App),
    body: &[u8],
    events: Vec<InboundEvent>,
) -> Result<(), WebhookError> {
    let post = AwaitedPost::in_order(events.iter().map(InboundEvent::conversation));
    let deadline = tokio::time::Instant::now() + state.config.ack_deadline;
    route(
        state,
        post.refs()
            .into_iter()
            .zip(events.into_iter().map(EngineEvent::Messenger))
            .collect(),
    );
    post.wait(deadline).await;
    if post.all_committed() {
        return Ok(());
    }
    let unfinished = post.take_unfinished();
    state.metrics.events_journalled_late(unfinished.len());
    // The same body parses to the same events in the same order: parsing again here
    // spares the common path a copy of every event.
    let mut events: Vec<Option<InboundEvent>> = served_events(table, app, body)?
        .0
        .into_iter()
        .map(Some)
        .collect();
    let late: Vec<InboundEvent> = unfinished
        .into_iter()
        .filter_map(|index| events.get_mut(index).and_then(Option::take))
        .collect();
    let routed = journal_durably(state, late).await?;
    route(state, routed);
    Ok(())
}

/// `GET /healthz`: the process is up and serving HTTP.
async fn healthz() -> HttpResponse {
    HttpResponse::Ok()
        .content_type(ContentType::plaintext())
        .body("ok")
}

/// `GET /readyz`: the store answers, and the engine is neither draining nor overloaded.
async fn readyz(state: web::Data<WebhookState>) -> HttpResponse {
    let problem = match (state.store.journal_contains(0), state.load.admit()) {
        (Err(error), _) => Some(format!("store unavailable: {error}")),
        _ if state.store.commits_failing() => {
            Some("store unavailable: its latest commit failed (see the log)".to_string())
        }
        (_, Err(refusal)) => Some(describe_refusal(refusal).to_string()),
        _ => None,
    };
    match problem {
        None => HttpResponse::Ok()
            .content_type(ContentType::plaintext())
            .body("ready"),
        Some(problem) => HttpResponse::ServiceUnavailable().json(json!({ "error": problem })),
    }
}

/// Appends the events to the journal (one item for the whole POST) and waits until they
/// are on disk.
async fn journal_durably(
    state: &WebhookState,
    events: Vec<InboundEvent>,
) -> Result<Vec<(JournalRef, EngineEvent)>, WebhookError> {
    let store = &state.store;
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let records: Vec<JournalRecord> = events
        .iter()
        .map(|event| JournalRecord {
            page_id: event.page_id.clone(),
            channel: event.channel,
            standby: event.standby,
            event: event.raw.clone(),
        })
        .collect();
    let waiting = std::time::Instant::now();
    let seq = store
        .append_journal(records)
        .await
        .inspect_err(log_store_error)?;
    state.metrics.flush_waited("webhook", waiting.elapsed());
    let refs = JournalRef::for_item(seq, events.len());
    Ok(refs
        .into_iter()
        .zip(events.into_iter().map(EngineEvent::Messenger))
        .collect())
}

fn log_store_error(error: &StoreError) {
    log::error!("webhook could not journal events: {error}");
}

/// Reads the body, refusing it as soon as it grows past `limit`.
async fn read_limited(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<web::BytesMut, WebhookError> {
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(WebhookError::TooLarge { limit });
    }
    let mut body = web::BytesMut::with_capacity(declared.unwrap_or(1024).min(limit));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| WebhookError::Body(e.to_string()))?;
        if body.len() + chunk.len() > limit {
            return Err(WebhookError::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_maps_to_its_documented_status() {
        assert_eq!(
            WebhookError::VerificationFailed.status_code(),
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            WebhookError::Signature(SignatureError::Missing).status_code(),
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            WebhookError::TooLarge { limit: 1 }.status_code(),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert_eq!(
            WebhookError::Parse(ParseError::NotAnObject).status_code(),
            StatusCode::BAD_REQUEST
        );
    }
}
