//! `GET /admin/pages` (the pages served, without their secrets) and
//! `POST /admin/pages/reload` (re-read the pages file: new tokens, pages and rates take
//! effect for the next send; a broken file is refused with every problem and the running
//! configuration kept).
//!
//! Must not: show a token or secret, or change the configuration other than through
//! `Pages::reload`.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};

use super::{authorize, AdminError, AdminState};
use crate::pages::{PageTable, ReloadError};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/admin/pages", web::get().to(list))
        .route("/admin/pages/reload", web::post().to(reload));
}

async fn list(req: HttpRequest, state: web::Data<AdminState>) -> Result<HttpResponse, AdminError> {
    authorize(&req, &state)?;
    Ok(HttpResponse::Ok().json(describe(&state.pages.current())))
}

/// The table as an operator reads it: apps by name, pages with app, channel, flow, rate.
fn describe(table: &PageTable) -> Value {
    let pages: Vec<Value> = table
        .pages()
        .into_iter()
        .map(|page| {
            json!({
                "id": page.id,
                "app": page.app,
                "channel": page.channel.name(),
                "flow": page.flow_spec,
                "send_rate": page.send_rate,
                "profile": page.profile.is_some(),
            })
        })
        .collect();
    let apps: Vec<&str> = table.apps().iter().map(|app| app.name.as_str()).collect();
    json!({
        "pages_file": table.has_pages_file(),
        "apps": apps,
        "pages": pages,
    })
}

async fn reload(
    req: HttpRequest,
    state: web::Data<AdminState>,
) -> Result<HttpResponse, AdminError> {
    authorize(&req, &state)?;
    match state.pages.reload() {
        Ok(summary) => {
            log::info!(
                "pages file reloaded through the admin API: {} page(s), added {:?}, removed {:?}, changed {:?}",
                summary.pages.len(),
                summary.added,
                summary.removed,
                summary.changed
            );
            Ok(HttpResponse::Ok().json(json!({ "reloaded": summary })))
        }
        Err(ReloadError::NoFile) => Ok(HttpResponse::build(StatusCode::CONFLICT)
            .json(json!({ "error": ReloadError::NoFile.to_string() }))),
        Err(ReloadError::Broken(error)) => {
            log::warn!("pages file reload refused; the running configuration is kept: {error}");
            let problems: Vec<String> = error.problems.iter().map(ToString::to_string).collect();
            Ok(HttpResponse::BadRequest().json(json!({
                "error": "the pages file has problems; the running configuration is kept",
                "problems": problems,
            })))
        }
    }
}
