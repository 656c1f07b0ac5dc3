//! The one Graph API client: every call colloquy makes to `graph.facebook.com` goes
//! through [`GraphClient`] (the sender's `POST /{page}/messages`, `colloquy subscribe`'s
//! `/{page}/subscribed_apps`), made as one page ([`PageAuth`]: node, token, app secret).
//!
//! Owns the base URL with its version (`MESSENGER_GRAPH_URL`), the HTTP client and its
//! timeout, how the access token travels (an `Authorization: Bearer` header, given per
//! call, never in a URL; with the app secret known, every call also carries
//! `appsecret_proof`, the HMAC-SHA256 of the token keyed by the secret, so a leaked token
//! is useless without the secret; computed once per node and token), and turning every
//! answer into a typed result ([`CallError`] sorts failures into what the caller should
//! do). A new Graph call is one small method here.
//!
//! Must not: retry, wait or pause (callers decide from [`CallError`]), know about the
//! store or the actors, log, or let the token reach any error text (a request URL is
//! never shown: it carries the token).

pub(crate) mod batch;
mod error;

use std::rc::Rc;
use std::time::Duration;

use awc::error::SendRequestError;
use awc::http::Method;
use serde_json::Value;

use crate::config::Secret;
use crate::messenger::outbound::{SendRequest, SendResponse};

pub(crate) use error::{ApiError, CallError};

/// Largest answer read. Graph answers colloquy asks for are small (a Send API answer is
/// under 200 bytes, a batch of 50 about 12 KiB, a page's subscribed apps one short entry
/// per app), and every send in flight may hold one, so a runaway body is cut off rather
/// than buffered.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// A Graph API client for one base URL. Cheap to clone: clones share the connection pool.
/// Like the awc client inside it, it stays on the thread (actix arbiter) that made it.
#[derive(Clone)]
pub(crate) struct GraphClient {
    /// `https://graph.facebook.com/v21.0`, without a trailing slash.
    base: Rc<str>,
    http: awc::Client,
    timeout: Duration,
    /// Shared by the clones, like the pool.
    proofs: Rc<Proofs>,
}

/// The `appsecret_proof`s already computed, by node. A proof is an HMAC of the token keyed
/// by the app secret, the same for every call until either changes (a token rotated in
/// the pages file), so it is computed once per node and token, not once per call (1 % of
/// the engine's thread at 2,000 replies/s).
#[derive(Default)]
struct Proofs(std::cell::RefCell<std::collections::HashMap<String, KnownProof>>);

struct KnownProof {
    token: Secret,
    app_secret: Secret,
    proof: Rc<str>,
}

/// More nodes than any pages file names: past it the cache starts over (a bound, not a
/// policy: rotated tokens replace their node's entry).
const MAX_KNOWN_PROOFS: usize = 4096;

impl Proofs {
    /// The proof of `auth`'s token, if it has an app secret.
    fn of(&self, auth: &PageAuth) -> Option<Rc<str>> {
        let app_secret = auth.app_secret.as_ref()?;
        let mut known = self.0.borrow_mut();
        if let Some(cached) = known.get(&auth.node) {
            if cached.token == auth.token && cached.app_secret == *app_secret {
                return Some(cached.proof.clone());
            }
        }
        let proof: Rc<str> = appsecret_proof(app_secret, &auth.token).into();
        if known.len() >= MAX_KNOWN_PROOFS && !known.contains_key(&auth.node) {
            known.clear();
        }
        let entry = KnownProof {
            token: auth.token.clone(),
            app_secret: app_secret.clone(),
            proof: proof.clone(),
        };
        known.insert(auth.node.clone(), entry);
        Some(proof)
    }
}

/// Who a call is made as: the page node (`me`, or the page or Instagram account id) and
/// its token, with the app secret that proves it (`appsecret_proof`; `None` sends none).
#[derive(Clone, Debug)]
pub(crate) struct PageAuth {
    pub node: String,
    pub token: Secret,
    pub app_secret: Option<Secret>,
}

impl PageAuth {
    /// Calls as the page the token belongs to (`/me/...`).
    pub(crate) fn me(token: Secret, app_secret: Option<Secret>) -> PageAuth {
        PageAuth::of("me", token, app_secret)
    }

    /// Calls on `node` (a page id, or an Instagram account id) with its page's token.
    pub(crate) fn of(node: &str, token: Secret, app_secret: Option<Secret>) -> PageAuth {
        PageAuth {
            node: node.to_string(),
            token,
            app_secret: app_secret.filter(|secret| !secret.expose().is_empty()),
        }
    }

    fn path(&self, edge: &str) -> String {
        format!("/{}/{edge}", self.node)
    }
}

/// One Graph API call: method, path under the versioned base, query parameters (the
/// proof is added to them; the token goes in a header) and an optional JSON body.
struct Call<'a> {
    method: Method,
    path: &'a str,
    query: &'a [(&'a str, &'a str)],
    json: Option<Vec<u8>>,
}

impl GraphClient {
    /// A client for `base_url` (with its version, e.g. `https://graph.facebook.com/v21.0`)
    /// whose calls give up after `timeout`. Redirects are not followed: the token is in
    /// a header, and the Graph API never redirects an API call.
    pub(crate) fn new(base_url: &str, timeout: Duration) -> GraphClient {
        let http = awc::Client::builder()
            .timeout(timeout)
            .disable_redirects()
            .finish();
        GraphClient {
            base: base_url.trim_end_matches('/').into(),
            http,
            timeout,
            proofs: Rc::default(),
        }
    }

    /// `POST /{node}/messages`: one Send API request, answered with the message id (none
    /// for sender actions). A success whose body does not parse still counts as sent.
    pub(crate) async fn send_message(
        &self,
        auth: &PageAuth,
        request: &SendRequest,
    ) -> Result<SendResponse, CallError> {
        let json = encoded(request)?;
        let call = Call {
            method: Method::POST,
            path: &auth.path("messages"),
            query: &[],
            json: Some(json),
        };
        let body = self.call(call, auth).await?;
        Ok(serde_json::from_slice(&body).unwrap_or_default())
    }

    /// The handover protocol: `POST /{node}/pass_thread_control` to `target_app_id` (the
    /// Page Inbox is 263902037430900), or with `None` `POST /{node}/take_thread_control` to
    /// take the thread back. Meta answers `{"success":true}`.
    pub(crate) async fn thread_control(
        &self,
        auth: &PageAuth,
        psid: &str,
        target_app_id: Option<&str>,
    ) -> Result<(), CallError> {
        let (path, body) = match target_app_id {
            Some(app) => (
                "pass_thread_control",
                serde_json::json!({
                    "recipient": {"id": psid},
                    "target_app_id": app,
                    "metadata": "colloquy: paused by an operator",
                }),
            ),
            None => (
                "take_thread_control",
                serde_json::json!({
                    "recipient": {"id": psid},
                    "metadata": "colloquy: resumed by an operator",
                }),
            ),
        };
        let json = encoded(&body)?;
        let call = Call {
            method: Method::POST,
            path: &auth.path(path),
            query: &[],
            json: Some(json),
        };
        self.call(call, auth).await.map(drop)
    }

    /// `GET /{node}/subscribed_apps`: the apps the page's webhook events go to, with their
    /// fields (`{"data":[{"name","id","subscribed_fields"}]}`).
    pub(crate) async fn subscribed_apps(&self, auth: &PageAuth) -> Result<Value, CallError> {
        let call = Call {
            method: Method::GET,
            path: &auth.path("subscribed_apps"),
            query: &[],
            json: None,
        };
        Ok(json_or_null(&self.call(call, auth).await?))
    }

    /// `POST /{node}/subscribed_apps?subscribed_fields=…`: subscribes the page to this
    /// app's webhook `fields` (comma-separated); Meta answers `{"success":true}`.
    pub(crate) async fn subscribe_app(
        &self,
        auth: &PageAuth,
        fields: &str,
    ) -> Result<Value, CallError> {
        let call = Call {
            method: Method::POST,
            path: &auth.path("subscribed_apps"),
            query: &[("subscribed_fields", fields)],
            json: None,
        };
        Ok(json_or_null(&self.call(call, auth).await?))
    }

    /// `GET /{node}/messenger_profile?fields=…`: the page's live Messenger Profile, the
    /// properties set among `fields` (`{}` when none is). `platform` is `instagram` for an
    /// Instagram account.
    pub(crate) async fn messenger_profile(
        &self,
        auth: &PageAuth,
        fields: &[&str],
        platform: Option<&str>,
    ) -> Result<Value, CallError> {
        let fields = fields.join(",");
        let mut query = vec![("fields", fields.as_str())];
        query.extend(platform.map(|platform| ("platform", platform)));
        let call = Call {
            method: Method::GET,
            path: &auth.path("messenger_profile"),
            query: &query,
            json: None,
        };
        let answer = json_or_null(&self.call(call, auth).await?);
        Ok(answer["data"]
            .get(0)
            .cloned()
            .unwrap_or_else(|| Value::Object(Default::default())))
    }

    /// `POST /{node}/messenger_profile`: sets the properties of `profile` (a JSON object),
    /// leaving the others as they are.
    pub(crate) async fn set_messenger_profile(
        &self,
        auth: &PageAuth,
        profile: &Value,
        platform: Option<&str>,
    ) -> Result<(), CallError> {
        self.write_messenger_profile(auth, Method::POST, profile, platform)
            .await
    }

    /// `DELETE /{node}/messenger_profile` with `{"fields": [...]}`: removes those properties.
    pub(crate) async fn delete_messenger_profile(
        &self,
        auth: &PageAuth,
        fields: &[&str],
        platform: Option<&str>,
    ) -> Result<(), CallError> {
        let body = serde_json::json!({ "fields": fields });
        self.write_messenger_profile(auth, Method::DELETE, &body, platform)
            .await
    }

    /// A change to the Messenger Profile: `body` sent with `method`.
    async fn write_messenger_profile(
        &self,
        auth: &PageAuth,
        method: Method,
        body: &Value,
        platform: Option<&str>,
    ) -> Result<(), CallError> {
        let query: Vec<_> = platform
            .map(|platform| ("platform", platform))
            .into_iter()
            .collect();
        let call = Call {
            method,
            path: &auth.path("messenger_profile"),
            query: &query,
            json: Some(encoded(body)?),
        };
        self.call(call, auth).await.map(drop)
    }

    /// Several Send API requests as one Graph batch call (`POST /` with `batch`; Meta
    /// takes at most `config::MAX_SEND_BATCH` requests): one answer per request, in
    /// order. Each request is made on `auth`'s node with the batch's token and proof. A
    /// failure of the batch call itself (network, timeout, an error status) is every
    /// request's failure; a request the batch answered with `null` (Meta did not
    /// complete it) fails with [`CallError::NotAnswered`], which is retried.
    ///
    /// Meta counts each request of a batch as a call of its own (rate limits, usage); a
    /// batch saves the round trips and the HTTP work per call.
    pub(crate) async fn send_batch(
        &self,
        auth: &PageAuth,
        requests: &[SendRequest],
    ) -> Result<Vec<Result<SendResponse, CallError>>, CallError> {
        let relative_url = format!("{}/messages", auth.node);
        let batch = requests
            .iter()
            .map(|request| batch::item(&relative_url, request))
            .collect::<Result<Vec<_>, _>>()?;
        let body = serde_json::json!({ "include_headers": false, "batch": batch });
        let call = Call {
            method: Method::POST,
            path: "/",
            query: &[],
            json: Some(encoded(&body)?),
        };
        let answer = self.exchange(call, auth).await?;
        let usage = answer.usage.as_deref();
        Ok(batch::answers(&answer.body, requests.len(), usage))
    }

    /// Makes one call and returns the body of a 2xx answer; anything else is sorted into
    /// a [`CallError`].
    async fn call(&self, call: Call<'_>, auth: &PageAuth) -> Result<Vec<u8>, CallError> {
        Ok(self.exchange(call, auth).await?.body)
    }

    /// Makes one call and returns its 2xx answer with the usage header (a batch's
    /// requests may each be throttled); anything else is sorted into a [`CallError`].
    async fn exchange(&self, call: Call<'_>, auth: &PageAuth) -> Result<Answer, CallError> {
        let token = &auth.token;
        let mut query = call.query.to_vec();
        let proof = self.proofs.of(auth);
        if let Some(proof) = &proof {
            query.push(("appsecret_proof", proof));
        }
        let request = self
            .http
            .request(call.method, format!("{}{}", self.base, call.path))
            .bearer_auth(token.expose())
            .query(&query)
            .map_err(|error| CallError::InvalidRequest(error.to_string()))?;
        let sent = match call.json {
            Some(json) => {
                request
                    .content_type("application/json")
                    .send_body(json)
                    .await
            }
            None => request.send().await,
        };
        let mut response = sent.map_err(|error| self.unsent(&error, token))?;
        let status = response.status().as_u16();
        let usage = response
            .headers()
            .get("x-business-use-case-usage")
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned);
        let body = response
            .body()
            .limit(MAX_ANSWER_BYTES)
            .await
            .map_err(|error| CallError::Unreadable(redacted(error.to_string(), token)))?;
        if (200..300).contains(&status) {
            return Ok(Answer {
                usage,
                body: body.to_vec(),
            });
        }
        Err(error::classify_failure(status, &body, usage.as_deref()))
    }

    /// A call that got no answer: timed out, or never reached the Graph API.
    fn unsent(&self, error: &SendRequestError, token: &Secret) -> CallError {
        match error {
            SendRequestError::Timeout => CallError::Timeout(self.timeout),
            other => CallError::Network(redacted(other.to_string(), token)),
        }
    }
}

/// A 2xx Graph answer: the `X-Business-Use-Case-Usage` header and the body.
struct Answer {
    usage: Option<String>,
    body: Vec<u8>,
}

/// Meta's `appsecret_proof`: hex HMAC-SHA256 of the access token, keyed by the app secret.
pub(crate) fn appsecret_proof(app_secret: &Secret, token: &Secret) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(app_secret.expose().as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(token.expose().as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// A request body as JSON bytes.
fn encoded<T: serde::Serialize + ?Sized>(body: &T) -> Result<Vec<u8>, CallError> {
    serde_json::to_vec(body).map_err(|error| CallError::InvalidRequest(error.to_string()))
}

/// An answer's JSON, or `null` when it is not JSON (the caller shows what came).
fn json_or_null(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap_or(Value::Null)
}

/// `text` with every occurrence of the token masked: awc's error texts do not carry the
/// request URL today, and this keeps it so if one ever does.
fn redacted(text: String, token: &Secret) -> String {
    let token = token.expose();
    if token.is_empty() || !text.contains(token) {
        return text;
    }
    text.replace(token, "***")
}

#[cfg(test)]
mod tests;
