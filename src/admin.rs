//! The admin HTTP endpoints `colloquy inspect` uses while the server holds the store.
//!
//! `GET /admin/conversations` and `GET /admin/conversations/{psid}[?page=ID]` answer the
//! same JSON as `inspect --json`. Every request needs `Authorization: Bearer <token>`
//! (`COLLOQUY_ADMIN_TOKEN`); without a configured token the endpoints answer 404, so an
//! unconfigured server exposes nothing. Read-only: nothing here writes to the store.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use serde::Deserialize;
use serde_json::json;
use thiserror::Error;

use crate::config::Secret;
use crate::engine::metrics::Metrics;
use crate::inspect::{self, InspectError};
use crate::store::Store;

#[derive(Clone)]
pub struct AdminState {
    pub token: Option<Secret>,
    pub store: Store,
    pub metrics: std::sync::Arc<Metrics>,
}

#[derive(Debug, Error)]
pub enum AdminError {
    #[error("the admin endpoint is disabled: set COLLOQUY_ADMIN_TOKEN to enable it")]
    Disabled,
    #[error("missing or wrong admin token (Authorization: Bearer <COLLOQUY_ADMIN_TOKEN>)")]
    Unauthorized,
    #[error(transparent)]
    Inspect(#[from] InspectError),
}

impl ResponseError for AdminError {
    fn status_code(&self) -> StatusCode {
        match self {
            AdminError::Disabled => StatusCode::NOT_FOUND,
            AdminError::Unauthorized => StatusCode::UNAUTHORIZED,
            AdminError::Inspect(InspectError::NotFound { .. }) => StatusCode::NOT_FOUND,
            AdminError::Inspect(InspectError::Ambiguous { .. }) => StatusCode::CONFLICT,
            AdminError::Inspect(InspectError::Store(_)) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status_code()).json(json!({ "error": self.to_string() }))
    }
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/admin/conversations", web::get().to(list))
        .route("/admin/conversations/{psid}", web::get().to(show))
        .route("/metrics", web::get().to(metrics));
}

/// `GET /metrics`: Prometheus text format, for a scraper on the admin (loopback) listener.
async fn metrics(state: web::Data<AdminState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}

pub(crate) fn authorize(req: &HttpRequest, state: &AdminState) -> Result<(), AdminError> {
    let Some(token) = &state.token else {
        return Err(AdminError::Disabled);
    };
    let presented = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if token.matches(presented) {
        Ok(())
    } else {
        Err(AdminError::Unauthorized)
    }
}

async fn list(req: HttpRequest, state: web::Data<AdminState>) -> Result<HttpResponse, AdminError> {
    authorize(&req, &state)?;
    let conversations = inspect::list(&state.store).map_err(InspectError::from)?;
    Ok(HttpResponse::Ok().json(conversations))
}

#[derive(Deserialize)]
struct PageQuery {
    page: Option<String>,
    /// Only the last N transcript entries.
    last: Option<usize>,
}

async fn show(
    req: HttpRequest,
    path: web::Path<String>,
    query: web::Query<PageQuery>,
    state: web::Data<AdminState>,
) -> Result<HttpResponse, AdminError> {
    authorize(&req, &state)?;
    let doc = inspect::document(&state.store, &path, query.page.as_deref(), query.last)?;
    Ok(HttpResponse::Ok().json(doc))
}
