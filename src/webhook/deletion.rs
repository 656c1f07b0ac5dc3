//! Meta's data-deletion callback, on the public listener: `POST /data-deletion` with a
//! signed request forgets the user it names, and `GET /data-deletion/status?code=C` says
//! what became of that request.
//!
//! Meta posts the form field `signed_request=<signature>.<payload>`, both base64url
//! (padding optional): the signature is HMAC-SHA256 of the payload part, as sent, with
//! the app secret, compared in constant time before anything of the payload is read; the
//! payload is JSON with `algorithm` (`HMAC-SHA256`), `user_id` and `issued_at`. Every
//! conversation whose psid is the `user_id`, on every page, is forgotten through its
//! conversation actor exactly as an operator's `DELETE /admin/conversations/{psid}`
//! (`actions::route_action`); the request is recorded durably under a random confirmation
//! code before and after, and the answer is Meta's `{"url", "confirmation_code"}`.
//! Must not: log the signed request or the app secret, or change a conversation itself.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::Sha256;
use thiserror::Error;

use super::{read_limited, WebhookState};
use crate::actions::{route_action, NotApplied};
use crate::clock::now_ms;
use crate::config::Config;
use crate::engine::event::OperatorAction;
use crate::inspect::is_tombstone;
use crate::store::{DeletionRequest, DeletionStatus, StoreError};

/// Where Meta posts deletion requests.
pub const PATH: &str = "/data-deletion";
/// Where the status of one request is shown (`?code=C`).
pub const STATUS_PATH: &str = "/data-deletion/status";
/// A signed request is a few hundred bytes; anything much larger is not one.
const MAX_BODY_BYTES: usize = 16 * 1024;
/// The one algorithm Meta signs deletion requests with.
const ALGORITHM: &str = "HMAC-SHA256";

#[derive(Debug, Error)]
pub enum DeletionError {
    #[error("malformed deletion request: {0}")]
    Malformed(String),
    #[error("the signed_request's signature is missing or does not match")]
    Signature,
    #[error("the user could not be forgotten now; nothing was confirmed, try again")]
    NotApplied(#[from] NotApplied),
    #[error("the deletion request could not be stored; try again")]
    Store(#[from] StoreError),
    #[error("no deletion request has this confirmation code")]
    UnknownCode,
    #[error("the conversations could not be read: {0}")]
    Reader(String),
}

impl ResponseError for DeletionError {
    fn status_code(&self) -> StatusCode {
        match self {
            DeletionError::Malformed(_) => StatusCode::BAD_REQUEST,
            DeletionError::Signature => StatusCode::FORBIDDEN,
            DeletionError::NotApplied(NotApplied::Busy | NotApplied::NotServedHere) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            DeletionError::NotApplied(NotApplied::NotCommitted)
            | DeletionError::Store(_)
            | DeletionError::Reader(_) => StatusCode::INTERNAL_SERVER_ERROR,
            DeletionError::UnknownCode => StatusCode::NOT_FOUND,
        }
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status_code()).json(json!({ "error": self.to_string() }))
    }
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route(PATH, web::post().to(request))
        .route(STATUS_PATH, web::get().to(status));
}

/// What a verified signed request says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeletionPayload {
    pub user_id: String,
    pub issued_at: Option<i64>,
}

#[derive(Deserialize)]
struct RawPayload {
    algorithm: Option<String>,
    user_id: Option<Value>,
    issued_at: Option<i64>,
}

/// Checks a `signed_request` against the app secret, then reads its payload. A missing or
/// wrong signature is `Signature`, whatever the payload holds; a payload that is not what
/// Meta sends is `Malformed`.
/// The payload of a `signed_request` signed by any configured app: each app of the pages
/// file has its own secret. A malformed request is refused as such, whatever the app.
fn verified_by_any_app(
    state: &WebhookState,
    signed_request: &str,
) -> Result<DeletionPayload, DeletionError> {
    let table = state.pages.current();
    let mut outcome = Err(DeletionError::Signature);
    for app in table.apps() {
        outcome = verify_signed_request(app.secret.expose().as_bytes(), signed_request);
        if !matches!(outcome, Err(DeletionError::Signature)) {
            break;
        }
    }
    outcome
}

pub fn verify_signed_request(
    secret: &[u8],
    signed_request: &str,
) -> Result<DeletionPayload, DeletionError> {
    let (signature, payload) = signed_request
        .split_once('.')
        .ok_or(DeletionError::Signature)?;
    let signature = base64url(signature).ok_or(DeletionError::Signature)?;
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(secret).map_err(|_| DeletionError::Signature)?;
    mac.update(payload.as_bytes());
    mac.verify_slice(&signature)
        .map_err(|_| DeletionError::Signature)?;
    let json = base64url(payload)
        .ok_or_else(|| DeletionError::Malformed("the payload is not base64url".into()))?;
    let raw: RawPayload = serde_json::from_slice(&json)
        .map_err(|error| DeletionError::Malformed(format!("the payload: {error}")))?;
    if raw.algorithm.as_deref() != Some(ALGORITHM) {
        return Err(DeletionError::Malformed(format!(
            "the payload's algorithm must be {ALGORITHM}"
        )));
    }
    let user_id = match raw.user_id {
        Some(Value::String(id)) if !id.is_empty() => id,
        Some(Value::Number(id)) => id.to_string(),
        _ => {
            return Err(DeletionError::Malformed(
                "the payload has no user_id".into(),
            ))
        }
    };
    Ok(DeletionPayload {
        user_id,
        issued_at: raw.issued_at,
    })
}

/// base64url, with or without padding; `None` for anything else (an empty part too).
fn base64url(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    if text.is_empty() {
        return None;
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .ok()
}

/// A `signed_request` as Meta makes it: what the tests and the README's example send.
#[cfg(any(test, feature = "test-support"))]
pub fn sign_request(secret: &[u8], payload: &Value) -> String {
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let payload = engine.encode(payload.to_string());
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(payload.as_bytes());
    format!("{}.{payload}", engine.encode(mac.finalize().into_bytes()))
}

/// `POST /data-deletion`: verify, record, forget, record the outcome, answer the code.
async fn request(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<WebhookState>,
) -> Result<HttpResponse, DeletionError> {
    let body = read_limited(&req, payload, MAX_BODY_BYTES)
        .await
        .map_err(|error| DeletionError::Malformed(error.to_string()))?;
    let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(&body)
        .map_err(|_| DeletionError::Malformed("the body must be a form".into()))?;
    let signed_request = fields
        .into_iter()
        .find_map(|(name, value)| (name == "signed_request").then_some(value))
        .ok_or_else(|| DeletionError::Malformed("the form has no signed_request".into()))?;
    let payload = verified_by_any_app(&state, &signed_request)
        .inspect_err(|error| log::warn!("data-deletion request refused: {error}"))?;
    let now = now_ms();
    let mut record = DeletionRequest {
        code: hex::encode(rand::random::<[u8; 16]>()),
        user_id: payload.user_id,
        requested_at: now,
        status: DeletionStatus::Pending,
        conversations_forgotten: 0,
        updated_at: now,
    };
    // On disk before anything is forgotten, so even a crash midway leaves a trace.
    state.store.record_deletion_request(record.clone()).await?;
    let forgotten = forget_everywhere(&state, &record.user_id).await;
    record.status = match &forgotten {
        Ok(0) => DeletionStatus::NoData,
        Ok(_) => DeletionStatus::Completed,
        Err(_) => DeletionStatus::Failed,
    };
    record.conversations_forgotten = *forgotten.as_ref().unwrap_or(&0);
    record.updated_at = now_ms();
    state.store.record_deletion_request(record.clone()).await?;
    let code = &record.code;
    match forgotten {
        Ok(0) => log::warn!(
            "data-deletion request {code}: no conversation has user id {} (Meta may send an \
             app-scoped id, not a psid; match it to the page's psids by hand)",
            record.user_id
        ),
        Ok(count) => log::info!(
            "data-deletion request {code}: forgot {count} conversation(s) of user {}",
            record.user_id
        ),
        Err(error) => {
            log::error!("data-deletion request {code} failed: {error}");
            return Err(error);
        }
    }
    let url = format!(
        "{}{STATUS_PATH}?code={code}",
        public_base(&req, &state.config)
    );
    Ok(HttpResponse::Ok().json(json!({ "url": url, "confirmation_code": code })))
}

/// Forgets every conversation of `user_id` on every page, each in its own actor's turn;
/// answers how many there were.
async fn forget_everywhere(state: &WebhookState, user_id: &str) -> Result<u64, DeletionError> {
    // A scan of every conversation key: on the blocking pool, not the webhook's workers.
    let (store, id) = (state.store.clone(), user_id.to_string());
    let mut conversations = web::block(move || store.conversations_of(&id))
        .await
        .map_err(|error| DeletionError::Reader(error.to_string()))??;
    conversations.retain(|record| !is_tombstone(record));
    let forgets =
        conversations.iter().map(|record| {
            let key = record.key();
            async move {
                route_action(&state.supervisor, &state.load, &key, OperatorAction::Forget).await
            }
        });
    for forgotten in futures_util::future::join_all(forgets).await {
        forgotten?;
    }
    Ok(conversations.len() as u64)
}

/// `COLLOQUY_PUBLIC_URL`, or else the scheme and host the request came to (its `Host`
/// header, or `Forwarded` / `X-Forwarded-Host` / `X-Forwarded-Proto` from a proxy).
fn public_base(req: &HttpRequest, config: &Config) -> String {
    match &config.public_url {
        Some(url) => url.clone(),
        None => {
            let info = req.connection_info();
            format!("{}://{}", info.scheme(), info.host())
        }
    }
}

/// `GET /data-deletion/status?code=C`: what became of one deletion request.
async fn status(
    req: HttpRequest,
    state: web::Data<WebhookState>,
) -> Result<HttpResponse, DeletionError> {
    let fields: Vec<(String, String)> = serde_urlencoded::from_str(req.query_string())
        .map_err(|_| DeletionError::Malformed("the query must be ?code=C".into()))?;
    let code = fields
        .into_iter()
        .find_map(|(name, value)| (name == "code").then_some(value))
        .ok_or_else(|| DeletionError::Malformed("the query must be ?code=C".into()))?;
    // Codes are 32 hex digits: anything else is not one of ours, without a lookup.
    if code.len() != 32 || !code.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(DeletionError::UnknownCode);
    }
    let request = state
        .store
        .deletion_request(&code)?
        .ok_or(DeletionError::UnknownCode)?;
    // The user id stays out: whoever holds the link learns only what became of it.
    Ok(HttpResponse::Ok().json(json!({
        "confirmation_code": request.code,
        "status": request.status,
        "requested_at": request.requested_at,
        "updated_at": request.updated_at,
        "conversations_forgotten": request.conversations_forgotten,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"app-secret";

    fn payload() -> Value {
        json!({"algorithm": "HMAC-SHA256", "user_id": "42", "issued_at": 1_700_000_000})
    }

    #[test]
    fn a_request_signed_with_the_secret_is_read() {
        let signed = sign_request(SECRET, &payload());
        assert_eq!(
            verify_signed_request(SECRET, &signed).unwrap(),
            DeletionPayload {
                user_id: "42".into(),
                issued_at: Some(1_700_000_000)
            }
        );
        // Padding on the signature is tolerated (the payload is signed as sent).
        let (signature, body) = signed.split_once('.').unwrap();
        let padded = format!("{signature}=.{body}");
        assert!(verify_signed_request(SECRET, &padded).is_ok());
    }

    #[test]
    fn a_wrong_or_missing_signature_is_refused_before_the_payload_is_read() {
        let signed = sign_request(b"another-secret", &payload());
        assert!(matches!(
            verify_signed_request(SECRET, &signed),
            Err(DeletionError::Signature)
        ));
        let (_, body) = signed.split_once('.').unwrap();
        for bad in [body.to_string(), format!(".{body}"), format!("!!.{body}")] {
            assert!(matches!(
                verify_signed_request(SECRET, &bad),
                Err(DeletionError::Signature)
            ));
        }
        // A garbage payload with a wrong signature is a signature error, not a parse one.
        assert!(matches!(
            verify_signed_request(SECRET, "AAAA.not-json"),
            Err(DeletionError::Signature)
        ));
    }

    #[test]
    fn a_signed_payload_that_is_not_metas_is_malformed() {
        for bad in [
            json!({"algorithm": "HMAC-SHA1", "user_id": "42"}),
            json!({"algorithm": "HMAC-SHA256"}),
            json!({"algorithm": "HMAC-SHA256", "user_id": ""}),
            json!(["not", "an", "object"]),
        ] {
            let signed = sign_request(SECRET, &bad);
            assert!(
                matches!(
                    verify_signed_request(SECRET, &signed),
                    Err(DeletionError::Malformed(_))
                ),
                "{bad}"
            );
        }
    }
}
