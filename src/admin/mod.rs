//! The admin HTTP endpoints `colloquy inspect` uses while the server holds the store.
//!
//! `GET /admin/conversations` pages through the conversations, newest activity first,
//! with filters and an opaque cursor (`{"conversations": [...], "next_cursor": ...}`);
//! `GET /admin/conversations/{psid}[?page=ID]` answers the same JSON as `inspect --json`;
//! `?last=N` keeps the newest N transcript entries and `?before=SEQ&last=N` the N before
//! entry SEQ, to page back through a long transcript. Every request needs `Authorization: Bearer <token>`
//! (`COLLOQUY_ADMIN_TOKEN`); without a configured token the endpoints answer 404, so an
//! unconfigured server exposes nothing. `export.rs` streams every conversation as JSON
//! Lines and an interview tree's answers as CSV. Read-only: nothing here writes to the store.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use serde::Deserialize;
use serde_json::json;
use thiserror::Error;

mod events;
mod export;
pub mod forward;
mod pages;
pub mod session;

use std::sync::Arc;

use crate::config::Secret;
use crate::engine::metrics::Metrics;
use crate::event::Channel;
use crate::inspect::{self, InspectError};
use crate::store::{ListFilter, Store, TreeStatus};

#[derive(Clone)]
pub struct AdminState {
    pub token: Option<Secret>,
    pub store: Store,
    pub metrics: Arc<Metrics>,
    /// Browser logins (the web inspector's), besides the bearer token of scripts.
    pub sessions: Arc<session::Sessions>,
    /// The pages served (`/admin/pages`, and their reload).
    pub pages: crate::pages::Pages,
    /// On a cluster node: where the conversations this node does not serve are served.
    pub home: Option<Arc<dyn forward::ConversationHome>>,
}

#[derive(Debug, Error)]
pub enum AdminError {
    #[error("the admin endpoint is disabled: set COLLOQUY_ADMIN_TOKEN to enable it")]
    Disabled,
    #[error("missing or wrong admin token (Authorization: Bearer <COLLOQUY_ADMIN_TOKEN>)")]
    Unauthorized,
    #[error("missing or wrong CSRF token (the {header} header of the page's session)", header = session::CSRF_HEADER)]
    Csrf,
    #[error(transparent)]
    Inspect(#[from] InspectError),
    #[error("bad query: {0}")]
    BadQuery(String),
}

impl ResponseError for AdminError {
    fn status_code(&self) -> StatusCode {
        match self {
            AdminError::Disabled => StatusCode::NOT_FOUND,
            AdminError::Unauthorized => StatusCode::UNAUTHORIZED,
            AdminError::Csrf => StatusCode::FORBIDDEN,
            AdminError::Inspect(InspectError::NotFound { .. }) => StatusCode::NOT_FOUND,
            AdminError::Inspect(InspectError::Ambiguous { .. }) => StatusCode::CONFLICT,
            AdminError::Inspect(InspectError::Store(_)) => StatusCode::INTERNAL_SERVER_ERROR,
            AdminError::BadQuery(_) => StatusCode::BAD_REQUEST,
        }
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status_code()).json(json!({ "error": self.to_string() }))
    }
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/admin/conversations", web::get().to(list))
        .route("/admin/conversations/{psid}", web::get().to(show))
        .route("/admin/events", web::get().to(events::stream))
        .route("/admin/deletion-requests", web::get().to(deletion_requests))
        .route("/metrics", web::get().to(metrics))
        .configure(export::configure)
        .configure(pages::configure);
}

/// `GET /admin/deletion-requests`: Meta's data-deletion requests, newest first, with
/// their codes, the id Meta named, status and how many conversations they forgot.
async fn deletion_requests(
    req: HttpRequest,
    state: web::Data<AdminState>,
) -> Result<HttpResponse, AdminError> {
    authorize(&req, &state)?;
    let requests = state
        .store
        .deletion_requests()
        .map_err(InspectError::from)?;
    let listed: Vec<_> = requests
        .into_iter()
        .map(|request| {
            json!({
                "confirmation_code": request.code,
                "user_id": request.user_id,
                "status": request.status,
                "requested_at": request.requested_at,
                "updated_at": request.updated_at,
                "conversations_forgotten": request.conversations_forgotten,
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "deletion_requests": listed })))
}

/// `GET /metrics`: Prometheus text format, for a scraper on the admin (loopback) listener.
async fn metrics(state: web::Data<AdminState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}

/// Lets a request through with the admin token as a bearer token (scripts, the CLI), or
/// with a browser session's cookie; a session's request that changes something must also
/// carry the session's CSRF token, so another site cannot make the browser act.
pub(crate) fn authorize(req: &HttpRequest, state: &AdminState) -> Result<(), AdminError> {
    let Some(token) = &state.token else {
        return Err(AdminError::Disabled);
    };
    if let Some(presented) = bearer(req) {
        return match token.matches(presented) {
            true => Ok(()),
            false => Err(AdminError::Unauthorized),
        };
    }
    let csrf = session_csrf(req, state).ok_or(AdminError::Unauthorized)?;
    if req.method().is_safe() {
        return Ok(());
    }
    let presented = req
        .headers()
        .get(session::CSRF_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    match session::csrf_matches(&csrf, presented) {
        true => Ok(()),
        false => Err(AdminError::Csrf),
    }
}

fn bearer(req: &HttpRequest) -> Option<&str> {
    req.headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

/// The CSRF token of the request's live browser session, if it has one.
pub(crate) fn session_csrf(req: &HttpRequest, state: &AdminState) -> Option<String> {
    let cookie = req.cookie(session::SESSION_COOKIE)?;
    state.sessions.csrf_of(cookie.value())
}

/// `GET /admin/conversations?limit=N&cursor=C&page=ID&paused=true|false&psid_prefix=P&active_since=MS&active_until=MS&failed=true|false&stuck=true|false&tree=NAME&tree_status=in_progress|completed|cancelled|not_started&channel=messenger|instagram`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    limit: Option<String>,
    cursor: Option<String>,
    page: Option<String>,
    paused: Option<String>,
    psid_prefix: Option<String>,
    active_since: Option<String>,
    active_until: Option<String>,
    failed: Option<String>,
    stuck: Option<String>,
    tree: Option<String>,
    tree_status: Option<String>,
    channel: Option<String>,
}

/// A query parameter parsed as `T`, or an error naming it and what it should be.
fn parameter<T: std::str::FromStr>(
    name: &str,
    value: Option<String>,
    should_be: &str,
) -> Result<Option<T>, AdminError> {
    value
        .map(|raw| {
            raw.parse().map_err(|_| {
                AdminError::BadQuery(format!("{name} must be {should_be}, got {raw:?}"))
            })
        })
        .transpose()
}

/// The filters the list and the export share, parsed from their query parameters.
pub(crate) fn record_filter(
    page: Option<String>,
    psid_prefix: Option<String>,
    paused: Option<String>,
    active_since: Option<String>,
    active_until: Option<String>,
) -> Result<ListFilter, AdminError> {
    Ok(ListFilter {
        page_id: page,
        psid_prefix,
        paused: parameter("paused", paused, "true or false")?,
        active_since: parameter("active_since", active_since, "epoch milliseconds")?,
        active_until: parameter("active_until", active_until, "epoch milliseconds")?,
        ..ListFilter::default()
    })
}

/// A page of conversations when the caller does not say how many.
const DEFAULT_LIST_LIMIT: usize = 50;
/// The most one page may hold.
const MAX_LIST_LIMIT: usize = 1000;

async fn list(req: HttpRequest, state: web::Data<AdminState>) -> Result<HttpResponse, AdminError> {
    authorize(&req, &state)?;
    let query: ListQuery = serde_urlencoded::from_str(req.query_string())
        .map_err(|error| AdminError::BadQuery(error.to_string()))?;
    let limit = parameter(
        "limit",
        query.limit,
        &format!("a number from 1 to {MAX_LIST_LIMIT}"),
    )?
    .unwrap_or(DEFAULT_LIST_LIMIT);
    if !(1..=MAX_LIST_LIMIT).contains(&limit) {
        return Err(AdminError::BadQuery(format!(
            "limit must be 1 to {MAX_LIST_LIMIT}, got {limit}"
        )));
    }
    let filter = ListFilter {
        failed_replies: parameter("failed", query.failed, "true or false")?,
        stuck: parameter("stuck", query.stuck, "true or false")?,
        tree: query.tree,
        tree_status: query
            .tree_status
            .map(|raw| {
                TreeStatus::parse(&raw).ok_or_else(|| {
                    AdminError::BadQuery(format!(
                        "tree_status must be in_progress, completed, cancelled or not_started, got {raw:?}"
                    ))
                })
            })
            .transpose()?,
        channel: query
            .channel
            .map(|raw| {
                Channel::from_name(&raw).ok_or_else(|| {
                    AdminError::BadQuery(format!(
                        "channel must be messenger or instagram, got {raw:?}"
                    ))
                })
            })
            .transpose()?,
        ..record_filter(
            query.page,
            query.psid_prefix,
            query.paused,
            query.active_since,
            query.active_until,
        )?
    };
    let page = inspect::list_page(&state.store, &filter, query.cursor.as_deref(), limit)
        .map_err(InspectError::from)?
        .ok_or_else(|| AdminError::BadQuery("cursor is not one this server gave".into()))?;
    Ok(HttpResponse::Ok().json(page))
}

#[derive(Deserialize)]
struct PageQuery {
    page: Option<String>,
    /// Only the last N transcript entries.
    last: Option<usize>,
    /// With `last`: the N entries numbered below this one (the page before it).
    before: Option<u64>,
}

async fn show(
    req: HttpRequest,
    path: web::Path<String>,
    query: web::Query<PageQuery>,
    state: web::Data<AdminState>,
) -> Result<HttpResponse, AdminError> {
    authorize(&req, &state)?;
    let page = query.page.as_deref();
    let doc = match query.before {
        Some(before) => {
            let last = query.last.unwrap_or(DEFAULT_TRANSCRIPT_PAGE);
            if !(1..=MAX_LIST_LIMIT).contains(&last) {
                return Err(AdminError::BadQuery(format!(
                    "last must be 1 to {MAX_LIST_LIMIT}, got {last}"
                )));
            }
            inspect::document_before(&state.store, &path, page, before, last)?
        }
        None => inspect::document(&state.store, &path, page, query.last)?,
    };
    Ok(HttpResponse::Ok().json(doc))
}

/// Transcript entries a page of `?before=` holds when `last` is not given.
const DEFAULT_TRANSCRIPT_PAGE: usize = 50;
