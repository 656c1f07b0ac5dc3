//! On a cluster node: a request about one conversation (`/admin/conversations/{psid}`
//! and the actions under it) that another node serves is answered by that node. The
//! request is authorized here first (bearer token, or the inspector's session and CSRF
//! token), then sent on to the holder's admin listener with this node's admin token, and
//! its answer handed back as it came. A forwarded request is never forwarded again.
//!
//! Must not: decide who holds a conversation (a [`ConversationHome`] says), or forward
//! anything but one conversation's routes (lists and exports are each node's own).

use std::time::Duration;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{web, HttpResponse, ResponseError};
use serde_json::json;

use super::{authorize, AdminState};

/// Says where a conversation is served when that is another node.
pub trait ConversationHome: Send + Sync {
    /// The admin base URL (`http://host:port`) of the node serving the conversation of
    /// `psid` (with `page`, or with the page it is known to talk to), when it is not
    /// this node.
    fn elsewhere(&self, page: Option<&str>, psid: &str) -> Option<String>;
}

/// Marks a request forwarded by a node, so the next node answers it itself.
const FORWARDED: &str = "x-colloquy-forwarded";
/// How long the holder may take to answer (an action waits for its turn to commit).
const FORWARD_TIMEOUT: Duration = Duration::from_secs(30);

/// The middleware: forwards what another node serves, passes the rest on.
pub async fn to_the_holder(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let Some(state) = req.app_data::<web::Data<AdminState>>().cloned() else {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_boxed_body);
    };
    let home = match (&state.home, conversation_of(&req)) {
        (Some(home), Some(psid)) if !req.headers().contains_key(FORWARDED) => {
            home.elsewhere(page_of(&req).as_deref(), &psid)
        }
        _ => None,
    };
    let Some(base) = home else {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_boxed_body);
    };
    log::debug!("{} {}: forwarded to {base}", req.method(), req.path());
    if let Err(error) = authorize(req.request(), &state) {
        let response = error.error_response();
        return Ok(req.into_response(response));
    }
    let (http, mut payload) = req.into_parts();
    let body = <web::Bytes as actix_web::FromRequest>::from_request(&http, &mut payload).await;
    let response = match body {
        Ok(body) => forward(&http, &state, &base, body).await,
        Err(error) => HttpResponse::BadRequest().json(json!({ "error": error.to_string() })),
    };
    Ok(ServiceResponse::new(http, response))
}

/// The psid of a one-conversation route: `/admin/conversations/{psid}[/action]`.
fn conversation_of(req: &ServiceRequest) -> Option<String> {
    let rest = req.path().strip_prefix("/admin/conversations/")?;
    let psid = rest.split('/').next().filter(|psid| !psid.is_empty())?;
    percent_decode(psid)
}

fn percent_decode(text: &str) -> Option<String> {
    let decoded: Vec<(String, String)> =
        serde_urlencoded::from_str(&format!("p={}", text.replace('+', "%2B"))).ok()?;
    decoded.into_iter().next().map(|(_, value)| value)
}

/// The page the request names (`?page=`).
fn page_of(req: &ServiceRequest) -> Option<String> {
    let query: Vec<(String, String)> = serde_urlencoded::from_str(req.query_string()).ok()?;
    query
        .into_iter()
        .find(|(name, _)| name == "page")
        .map(|(_, page)| page)
}

/// Sends the request on to `base` and hands back the holder's answer.
async fn forward(
    req: &actix_web::HttpRequest,
    state: &AdminState,
    base: &str,
    body: web::Bytes,
) -> HttpResponse {
    let Some(token) = &state.token else {
        return super::AdminError::Disabled.error_response();
    };
    let url = match req.uri().path_and_query() {
        Some(path) => format!("{base}{path}"),
        None => format!("{base}{}", req.path()),
    };
    let mut outgoing = awc::Client::builder()
        .timeout(FORWARD_TIMEOUT)
        .finish()
        .request(req.method().clone(), url)
        .bearer_auth(token.expose())
        .insert_header((FORWARDED, "1"));
    if let Some(content_type) = req.headers().get(actix_web::http::header::CONTENT_TYPE) {
        outgoing = outgoing.insert_header((actix_web::http::header::CONTENT_TYPE, content_type));
    }
    let mut answer = match outgoing.send_body(body).await {
        Ok(answer) => answer,
        Err(error) => return unreachable_holder(base, &error.to_string()),
    };
    let status = answer.status();
    let content_type = answer
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .cloned();
    let bytes = match answer.body().limit(64 * 1024 * 1024).await {
        Ok(bytes) => bytes,
        Err(error) => return unreachable_holder(base, &error.to_string()),
    };
    let mut response = HttpResponse::build(
        StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY),
    );
    if let Some(content_type) = content_type {
        response.insert_header((actix_web::http::header::CONTENT_TYPE, content_type));
    }
    response.body(bytes)
}

fn unreachable_holder(base: &str, error: &str) -> HttpResponse {
    log::warn!("cannot reach the node serving a conversation ({base}): {error}");
    HttpResponse::BadGateway().json(json!({
        "error": format!("the node serving this conversation ({base}) did not answer: {error}")
    }))
}
