//! The web inspector at `/admin/` on the admin listener: log in with the admin token,
//! list and filter conversations, open one, and act on it.
//!
//! Pages are rendered here on the server (`view`); the small script of its own
//! (`assets/inspector.js`) only follows `/admin/events` to re-fetch the live part of a
//! conversation page, and calls the admin API's actions with the session's CSRF token.
//! No asset comes from anywhere else, and a Content-Security-Policy says so to the
//! browser. Must not: act on a conversation itself (the actions are the admin API's),
//! or put the admin token anywhere but the login form's body.

mod view;

use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use maud::Markup;
use serde::Deserialize;

use crate::admin::session::{LoginError, SESSION_COOKIE, SESSION_LIFETIME};
use crate::admin::{session_csrf, AdminError, AdminState};
use crate::event::Channel;
use crate::inspect::{self, InspectError};
use crate::store::{ListFilter, TreeStatus};

/// Rows on one page of the list.
const ROWS_PER_PAGE: usize = 50;

/// What the browser may load and run: only this listener's own files.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; \
     frame-ancestors 'none'; base-uri 'none'";

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/admin", web::get().to(to_index))
        .route("/admin/", web::get().to(index))
        .route("/admin/login", web::post().to(log_in))
        .route("/admin/logout", web::post().to(log_out))
        .route("/admin/conversation", web::get().to(conversation))
        .route("/admin/conversation/live", web::get().to(live))
        .route("/admin/assets/inspector.css", web::get().to(css))
        .route("/admin/assets/inspector.js", web::get().to(script));
}

fn page(markup: Markup) -> HttpResponse {
    page_with(actix_web::http::StatusCode::OK, markup)
}

fn page_with(status: actix_web::http::StatusCode, markup: Markup) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header(("Content-Security-Policy", CONTENT_SECURITY_POLICY))
        .insert_header(("X-Content-Type-Options", "nosniff"))
        .insert_header(("Referrer-Policy", "no-referrer"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(markup.into_string())
}

fn redirect(to: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, to))
        .finish()
}

/// The session's CSRF token, or why there is none: the inspector is off (no admin
/// token configured) or the browser has not logged in.
fn session(req: &HttpRequest, state: &AdminState) -> Result<Option<String>, AdminError> {
    if state.token.is_none() {
        return Err(AdminError::Disabled);
    }
    Ok(session_csrf(req, state))
}

async fn to_index() -> HttpResponse {
    redirect("/admin/")
}

#[derive(Deserialize)]
struct ListQuery {
    #[serde(default)]
    page: String,
    #[serde(default)]
    psid_prefix: String,
    #[serde(default)]
    paused: String,
    #[serde(default)]
    failed: String,
    #[serde(default)]
    stuck: String,
    #[serde(default)]
    tree: String,
    #[serde(default)]
    tree_status: String,
    #[serde(default)]
    channel: String,
    cursor: Option<String>,
}

/// An optional yes/no filter of the list form: "" (any), "true" or "false".
fn yes_no(name: &str, value: &str) -> Result<Option<bool>, AdminError> {
    match value {
        "" => Ok(None),
        "true" => Ok(Some(true)),
        "false" => Ok(Some(false)),
        other => Err(AdminError::BadQuery(format!(
            "{name} must be true or false, got {other:?}"
        ))),
    }
}

/// `GET /admin/`: the list, or the login form for a browser without a session.
async fn index(req: HttpRequest, state: web::Data<AdminState>) -> Result<HttpResponse, AdminError> {
    let Some(csrf) = session(&req, &state)? else {
        return Ok(page(view::login(None)));
    };
    let query: ListQuery = serde_urlencoded::from_str(req.query_string())
        .map_err(|error| AdminError::BadQuery(error.to_string()))?;
    let tree_status = match query.tree_status.as_str() {
        "" => None,
        raw => Some(
            TreeStatus::parse(raw)
                .ok_or_else(|| AdminError::BadQuery(format!("unknown tree status {raw:?}")))?,
        ),
    };
    let channel = match query.channel.as_str() {
        "" => None,
        raw => Some(
            Channel::from_name(raw)
                .ok_or_else(|| AdminError::BadQuery(format!("unknown channel {raw:?}")))?,
        ),
    };
    let filter = ListFilter {
        page_id: Some(query.page.clone()).filter(|p| !p.is_empty()),
        channel,
        psid_prefix: Some(query.psid_prefix.clone()).filter(|p| !p.is_empty()),
        paused: yes_no("paused", &query.paused)?,
        failed_replies: yes_no("failed", &query.failed)?,
        stuck: yes_no("stuck", &query.stuck)?,
        tree: Some(query.tree.clone()).filter(|t| !t.is_empty()),
        tree_status,
        ..ListFilter::default()
    };
    let listed = inspect::list_page(
        &state.store,
        &filter,
        query.cursor.as_deref(),
        ROWS_PER_PAGE,
    )
    .map_err(InspectError::from)?
    .ok_or_else(|| AdminError::BadQuery("cursor is not one this server gave".into()))?;
    let form = view::ListForm {
        page: query.page,
        psid_prefix: query.psid_prefix,
        paused: query.paused,
        failed: query.failed,
        stuck: query.stuck,
        tree: query.tree,
        tree_status: query.tree_status,
        channel: query.channel,
    };
    let next = listed.next_cursor.map(|cursor| {
        let query = serde_urlencoded::to_string([
            ("page", form.page.as_str()),
            ("psid_prefix", form.psid_prefix.as_str()),
            ("paused", form.paused.as_str()),
            ("failed", form.failed.as_str()),
            ("stuck", form.stuck.as_str()),
            ("tree", form.tree.as_str()),
            ("tree_status", form.tree_status.as_str()),
            ("channel", form.channel.as_str()),
            ("cursor", cursor.as_str()),
        ])
        .unwrap_or_default();
        format!("/admin/?{query}")
    });
    Ok(page(view::list(&csrf, &form, &listed.conversations, next)))
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

/// `POST /admin/login`: opens a session for the right token; wrong ones are counted per
/// address and an address over its budget waits.
async fn log_in(
    req: HttpRequest,
    state: web::Data<AdminState>,
    form: web::Form<LoginForm>,
) -> Result<HttpResponse, AdminError> {
    let Some(token) = &state.token else {
        return Err(AdminError::Disabled);
    };
    let from = req.peer_addr().map(|addr| addr.ip());
    match state.sessions.log_in(token, &form.token, from) {
        Ok(session) => {
            let cookie = Cookie::build(SESSION_COOKIE, session.id)
                .path("/admin")
                .http_only(true)
                .same_site(SameSite::Strict)
                .max_age(actix_web::cookie::time::Duration::seconds(
                    SESSION_LIFETIME.as_secs() as i64,
                ))
                .finish();
            log::info!("admin: a browser logged in from {from:?}");
            Ok(HttpResponse::SeeOther()
                .insert_header((header::LOCATION, "/admin/"))
                .cookie(cookie)
                .finish())
        }
        Err(error @ LoginError::WrongToken) => {
            log::warn!("admin: wrong token from {from:?}");
            Ok(page_with(
                actix_web::http::StatusCode::UNAUTHORIZED,
                view::login(Some(&error.to_string())),
            ))
        }
        Err(error @ LoginError::TooManyAttempts(wait)) => {
            let mut response = page_with(
                actix_web::http::StatusCode::TOO_MANY_REQUESTS,
                view::login(Some(&error.to_string())),
            );
            if let Ok(value) = header::HeaderValue::from_str(&wait.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            Ok(response)
        }
    }
}

#[derive(Deserialize)]
struct LogoutForm {
    csrf: String,
}

/// `POST /admin/logout`: ends the session (with its CSRF token, so no other site can).
async fn log_out(
    req: HttpRequest,
    state: web::Data<AdminState>,
    form: web::Form<LogoutForm>,
) -> Result<HttpResponse, AdminError> {
    let csrf = session(&req, &state)?.ok_or(AdminError::Unauthorized)?;
    if !crate::admin::session::csrf_matches(&csrf, &form.csrf) {
        return Err(AdminError::Csrf);
    }
    if let Some(cookie) = req.cookie(SESSION_COOKIE) {
        state.sessions.log_out(cookie.value());
    }
    let mut gone = Cookie::build(SESSION_COOKIE, "").path("/admin").finish();
    gone.make_removal();
    Ok(HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/admin/"))
        .cookie(gone)
        .finish())
}

#[derive(Deserialize)]
struct ConversationQuery {
    page: Option<String>,
    psid: String,
}

/// `GET /admin/conversation?page=ID&psid=P`: one conversation's page.
async fn conversation(
    req: HttpRequest,
    state: web::Data<AdminState>,
    query: web::Query<ConversationQuery>,
) -> Result<HttpResponse, AdminError> {
    let Some(csrf) = session(&req, &state)? else {
        return Ok(redirect("/admin/"));
    };
    match inspect::document(
        &state.store,
        &query.psid,
        query.page.as_deref(),
        Some(view::SHOWN_ENTRIES),
    ) {
        Ok(doc) => Ok(page(view::conversation(&csrf, &doc))),
        Err(error @ (InspectError::NotFound { .. } | InspectError::Ambiguous { .. })) => {
            Ok(page_with(
                actix_web::http::StatusCode::NOT_FOUND,
                view::missing(&csrf, &error.to_string()),
            ))
        }
        Err(error) => Err(error.into()),
    }
}

/// `GET /admin/conversation/live?page=ID&psid=P`: the changing part of the page, which
/// the script swaps in when the conversation changes.
async fn live(
    req: HttpRequest,
    state: web::Data<AdminState>,
    query: web::Query<ConversationQuery>,
) -> Result<HttpResponse, AdminError> {
    session(&req, &state)?.ok_or(AdminError::Unauthorized)?;
    let doc = inspect::document(
        &state.store,
        &query.psid,
        query.page.as_deref(),
        Some(view::SHOWN_ENTRIES),
    )?;
    Ok(page(view::live(&doc)))
}

async fn css() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "max-age=300"))
        .body(include_str!("assets/inspector.css"))
}

async fn script() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/javascript; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "max-age=300"))
        .body(include_str!("assets/inspector.js"))
}
