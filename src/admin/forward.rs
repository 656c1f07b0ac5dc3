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
use actix_web::dev::Payload;

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

/// The middleware: forwards what another node serves, passes the rest on. An action this
/// node refused because the conversation's partition is leaving it (or has not arrived
/// from another node yet) goes to the new holder once the directory names it, for up to
/// `HANDOVER_PATIENCE`; past that the refusal (503, `Retry-After`) is the answer.
pub async fn to_the_holder(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let state = req.app_data::<web::Data<AdminState>>().cloned();
    let conversation = conversation_of(&req).filter(|_| !req.headers().contains_key(FORWARDED));
    let (Some(state), Some(psid)) = (state, conversation) else {
        return pass_on(req, next).await;
    };
    let Some(home) = state.home.clone() else {
        return pass_on(req, next).await;
    };
    let page = page_of(&req);
    let body = match req.extract::<web::Bytes>().await {
        Ok(body) => body,
        Err(error) => {
            let refused = HttpResponse::BadRequest().json(json!({ "error": error.to_string() }));
            return Ok(req.into_response(refused));
        }
    };
    // Read once, kept for a forward; the handler here reads the same bytes.
    req.set_payload(Payload::from(body.clone()));
    let deadline = tokio::time::Instant::now() + HANDOVER_PATIENCE;
    // The request is never cloned while it may still go to the handler here: routing
    // needs it to be the only reference.
    let mut request = Request::NotHandledHere(req, next);
    loop {
        let answer = match home.elsewhere(page.as_deref(), &psid) {
            Some(base) => {
                let http = request.http();
                log::debug!("{} {}: forwarded to {base}", http.method(), http.path());
                if let Err(error) = authorize(http, &state) {
                    return Ok(request.answer(error.error_response()));
                }
                Some(forward(http, &state, &base, body.clone()).await)
            }
            None => match request {
                Request::NotHandledHere(req, next) => {
                    let (http, answer) = next.call(req).await?.map_into_boxed_body().into_parts();
                    request = Request::HandledHere(http);
                    Some(answer)
                }
                // Handled here already: wait for the directory to name the new holder.
                Request::HandledHere(_) => None,
            },
        };
        let settled = answer
            .as_ref()
            .is_some_and(|answer| !not_served_here(answer));
        if settled || tokio::time::Instant::now() >= deadline {
            return Ok(request.answer(answer.unwrap_or_else(moving_between_nodes)));
        }
        tokio::time::sleep(HANDOVER_POLL).await;
    }
}

/// A conversation request on its way: not yet given to this node's handler (which may
/// take it only once), or handled here already.
enum Request<N> {
    NotHandledHere(ServiceRequest, N),
    HandledHere(actix_web::HttpRequest),
}

impl<N> Request<N> {
    fn http(&self) -> &actix_web::HttpRequest {
        match self {
            Request::NotHandledHere(req, _) => req.request(),
            Request::HandledHere(http) => http,
        }
    }

    fn answer(self, answer: HttpResponse) -> ServiceResponse<BoxBody> {
        match self {
            Request::NotHandledHere(req, _) => req.into_response(answer),
            Request::HandledHere(http) => ServiceResponse::new(http, answer),
        }
    }
}

async fn pass_on(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    next.call(req)
        .await
        .map(ServiceResponse::map_into_boxed_body)
}

/// The header marking an answer "not served by this node now": the conversation's
/// partition is moving between nodes (set by the actions, read here).
pub const NOT_SERVED_HERE: &str = "x-colloquy-not-served-here";

/// A 503 saying the conversation is moving between nodes.
pub fn moving_between_nodes() -> HttpResponse {
    HttpResponse::ServiceUnavailable()
        .insert_header((NOT_SERVED_HERE, "1"))
        .insert_header((actix_web::http::header::RETRY_AFTER, "1"))
        .json(json!({ "error": "the conversation is moving between cluster nodes; try again" }))
}

/// Whether an answer says the conversation is not served where it was asked.
fn not_served_here(answer: &HttpResponse) -> bool {
    answer.headers().contains_key(NOT_SERVED_HERE)
}

/// How long a request about a conversation whose partition is moving between nodes
/// waits for its new holder.
const HANDOVER_PATIENCE: Duration = Duration::from_secs(10);
/// How often it looks again meanwhile.
const HANDOVER_POLL: Duration = Duration::from_millis(200);

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
    let moving = answer.headers().get(NOT_SERVED_HERE).cloned();
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
    if let Some(moving) = moving {
        response.insert_header((NOT_SERVED_HERE, moving));
    }
    response.body(bytes)
}

fn unreachable_holder(base: &str, error: &str) -> HttpResponse {
    log::warn!("cannot reach the node serving a conversation ({base}): {error}");
    HttpResponse::BadGateway().json(json!({
        "error": format!("the node serving this conversation ({base}) did not answer: {error}")
    }))
}
