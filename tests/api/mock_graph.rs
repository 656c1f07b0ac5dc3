//! The mock Graph API: a real HTTP server on port 0, on its own thread and actix system
//! (so it outlives engine restarts), that records every request and answers each with a
//! scripted answer, a stall, or what the Send API would say. A Graph batch call is taken
//! apart: each of its requests is answered and recorded as if it had come alone.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::{json, Value};

use super::wait_until;

/// One request the mock Graph API received, and the status it answered.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
    /// The `Authorization` header as sent.
    pub authorization: Option<String>,
    pub body: Value,
    pub status: u16,
    /// When the mock received it.
    pub at: Instant,
    /// The Graph batch call it came in (numbered from 1 in arrival order), if any: each
    /// request of a batch is recorded on its own, with the batch call's query and
    /// `Authorization`, and its form body decoded back into JSON.
    pub batch: Option<u64>,
}

impl Recorded {
    pub fn query_value(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether the call carried `token` as its bearer token and a correct
    /// `appsecret_proof` for it (HMAC-SHA256 keyed by `app_secret`), and no token in its URL.
    pub fn is_authorized_by(&self, token: &str, app_secret: &str) -> bool {
        let proof = colloquy::test_support::sign_sha256(app_secret.as_bytes(), token.as_bytes());
        self.authorization.as_deref() == Some(&format!("Bearer {token}"))
            && self.query_value("appsecret_proof") == proof.strip_prefix("sha256=")
            && self.query_value("access_token").is_none()
    }

    pub fn is_message_send(&self) -> bool {
        self.method == "POST" && self.path.ends_with("/messages")
    }
}

/// A scripted answer for the next request the mock receives.
#[derive(Debug, Clone)]
pub struct Scripted {
    pub status: u16,
    pub body: Value,
}

/// Status recorded for a request the mock stalled on (its client gave up first).
pub const STALLED: u16 = 0;

#[derive(Default)]
struct MockState {
    /// The next requests hang this long before answering (to make clients time out).
    stalls: VecDeque<Duration>,
    requests: Vec<Recorded>,
    script: VecDeque<Scripted>,
    next_message: u64,
    /// Tokens the mock answers every call of with error 190 (revoked).
    revoked: std::collections::HashSet<String>,
    /// Each page's Messenger Profile, by the page id in the path.
    profiles: std::collections::HashMap<String, serde_json::Map<String, Value>>,
    /// Graph batch calls received.
    batches: u64,
}

/// A mock Graph API on its own thread and actix system, so it outlives app restarts.
#[derive(Clone)]
pub struct MockGraph {
    pub url: String,
    state: Arc<Mutex<MockState>>,
}

impl MockGraph {
    pub fn start() -> MockGraph {
        let state = Arc::new(Mutex::new(MockState::default()));
        let shared = state.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            actix_rt::System::new().block_on(async move {
                let server = HttpServer::new(move || {
                    App::new()
                        .app_data(web::Data::new(shared.clone()))
                        .default_service(web::to(answer))
                })
                .workers(1)
                .bind("127.0.0.1:0")
                .expect("mock graph binds");
                tx.send(server.addrs()[0])
                    .expect("test waits for the address");
                server.run().await
            })
        });
        let addr = rx.recv().expect("mock graph started");
        MockGraph {
            url: format!("http://{addr}/v21.0"),
            state,
        }
    }

    /// The next `n` requests hang for `stall` before answering 500 (recorded as `STALLED`).
    pub fn stall(&self, n: usize, stall: Duration) {
        self.state
            .lock()
            .unwrap()
            .stalls
            .extend((0..n).map(|_| stall));
    }

    /// The next requests get these answers, in order; after that, the default success.
    /// Sets a page's live Messenger Profile, as if set earlier.
    pub fn preset_profile(&self, page: &str, profile: Value) {
        let profile = profile.as_object().cloned().unwrap_or_default();
        self.state
            .lock()
            .unwrap()
            .profiles
            .insert(page.to_string(), profile);
    }

    /// A page's live Messenger Profile.
    pub fn profile(&self, page: &str) -> Value {
        let state = self.state.lock().unwrap();
        Value::Object(state.profiles.get(page).cloned().unwrap_or_default())
    }

    /// Every later call made with `token` is answered with error 190 (a revoked token).
    pub fn revoke(&self, token: &str) {
        self.state.lock().unwrap().revoked.insert(token.to_string());
    }

    /// Calls made with `token` are answered as usual again (see [`MockGraph::revoke`]).
    pub fn restore(&self, token: &str) {
        self.state.lock().unwrap().revoked.remove(token);
    }

    pub fn script(&self, answers: impl IntoIterator<Item = Scripted>) {
        self.state.lock().unwrap().script.extend(answers);
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Send API calls answered with success.
    pub fn sends(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.is_message_send() && r.status == 200)
            .collect()
    }

    pub fn message_calls(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(Recorded::is_message_send)
            .collect()
    }

    /// Waits until at least `n` successful sends arrived; returns them.
    pub async fn wait_for_sends(&self, n: usize) -> Vec<Recorded> {
        wait_until(&format!("{n} successful sends"), || {
            let sends = self.sends();
            (sends.len() >= n).then_some(sends)
        })
        .await
    }

    pub async fn wait_for_message_calls(&self, n: usize) -> Vec<Recorded> {
        wait_until(&format!("{n} Send API calls"), || {
            let calls = self.message_calls();
            (calls.len() >= n).then_some(calls)
        })
        .await
    }
}

/// The call as it came: method, path, query, `Authorization` and JSON body.
struct Call {
    method: String,
    path: String,
    query: Vec<(String, String)>,
    authorization: Option<String>,
    body: Value,
}

async fn answer(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<Arc<Mutex<MockState>>>,
) -> HttpResponse {
    let call = Call {
        method: req.method().to_string(),
        path: req.path().to_string(),
        query: serde_urlencoded::from_str(req.query_string()).unwrap_or_default(),
        authorization: req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    };
    let batch = is_batch(&call).then(|| batch_requests(&call));
    let stall = state.lock().unwrap().stalls.pop_front();
    if let Some(stall) = stall {
        actix_rt::time::sleep(stall).await;
        let mut state = state.lock().unwrap();
        match batch {
            Some(requests) => {
                state.batches += 1;
                let number = state.batches;
                for request in requests {
                    record(&mut state, request, STALLED, Some(number));
                }
            }
            None => record(&mut state, call, STALLED, None),
        }
        return HttpResponse::InternalServerError().finish();
    }
    let mut state = state.lock().unwrap();
    let Some(requests) = batch else {
        let (status, reply) = answer_one(&mut state, &call);
        record(&mut state, call, status, None);
        return HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap())
            .json(reply);
    };
    state.batches += 1;
    let number = state.batches;
    let answers: Vec<Value> = requests
        .into_iter()
        .map(|request| {
            let (status, reply) = answer_one(&mut state, &request);
            record(&mut state, request, status, Some(number));
            json!({"code": status, "body": reply.to_string()})
        })
        .collect();
    HttpResponse::Ok().json(answers)
}

/// A Graph batch call: `POST /v21.0/` with a `batch` list.
fn is_batch(call: &Call) -> bool {
    call.method == "POST"
        && call.path.trim_end_matches('/').ends_with("/v21.0")
        && call.body["batch"].is_array()
}

/// Each request of a batch call, as if it had come alone: its path under the batch's
/// version, the batch's query and `Authorization`, its form body decoded into JSON (a
/// field whose value is a JSON object or list is that JSON, any other is text).
fn batch_requests(call: &Call) -> Vec<Call> {
    let items = call.body["batch"].as_array().cloned().unwrap_or_default();
    items
        .iter()
        .map(|item| {
            let form = item["body"].as_str().unwrap_or_default();
            let fields = colloquy::test_support::batch_request_fields(form);
            Call {
                method: item["method"].as_str().unwrap_or_default().to_string(),
                path: format!(
                    "{}/{}",
                    call.path.trim_end_matches('/'),
                    item["relative_url"].as_str().unwrap_or_default()
                ),
                query: call.query.clone(),
                authorization: call.authorization.clone(),
                body: fields.unwrap_or(Value::Null),
            }
        })
        .collect()
}

/// The answer to one request: a revoked token's error, the next scripted answer, or what
/// the Graph API would say.
fn answer_one(state: &mut MockState, call: &Call) -> (u16, Value) {
    let revoked = call
        .authorization
        .as_deref()
        .and_then(|header| header.strip_prefix("Bearer "))
        .is_some_and(|token| state.revoked.contains(token));
    match state.script.pop_front() {
        _ if revoked => {
            let answer = graph_error(401, 190, Some(460), "Error validating access token");
            (answer.status, answer.body)
        }
        Some(scripted) => (scripted.status, scripted.body),
        None if call.path.ends_with("/messenger_profile") => {
            let fields = call
                .query
                .iter()
                .find(|(name, _)| name == "fields")
                .map(|(_, value)| value.clone());
            profile_answer(state, &call.method, &call.path, fields, &call.body)
        }
        None => default_answer(state, &call.method, &call.path, &call.body),
    }
}

fn record(state: &mut MockState, call: Call, status: u16, batch: Option<u64>) {
    state.requests.push(Recorded {
        method: call.method,
        path: call.path,
        query: call.query,
        authorization: call.authorization,
        body: call.body,
        status,
        at: Instant::now(),
        batch,
    });
}

fn default_answer(state: &mut MockState, method: &str, path: &str, body: &Value) -> (u16, Value) {
    if path.ends_with("/messages") {
        state.next_message += 1;
        let message_id = format!("m_mock_{}", state.next_message);
        return (
            200,
            json!({"recipient_id": body["recipient"]["id"], "message_id": message_id}),
        );
    }
    if path.ends_with("/subscribed_apps") && method == "POST" {
        return (200, json!({"success": true}));
    }
    if path.ends_with("/subscribed_apps") {
        return (
            200,
            json!({"data": [{"name": "colloquy-test", "id": "1377689312323892",
                              "subscribed_fields": ["messages", "message_reads"]}]}),
        );
    }
    if path.ends_with("/pass_thread_control") || path.ends_with("/take_thread_control") {
        return (200, json!({"success": true}));
    }
    if path.ends_with("/hook") {
        return (200, json!({"ok": true}));
    }
    (
        404,
        json!({"error": {"message": "unknown path", "code": 100}}),
    )
}

/// The Messenger Profile API on the page of `path`: GET the `fields` set, POST merges
/// the body's properties, DELETE removes `{"fields": [...]}`.
fn profile_answer(
    state: &mut MockState,
    method: &str,
    path: &str,
    fields: Option<String>,
    body: &Value,
) -> (u16, Value) {
    let page = path.rsplit('/').nth(1).unwrap_or_default().to_string();
    let profile = state.profiles.entry(page).or_default();
    match method {
        "GET" => {
            let wanted: Vec<String> = fields
                .unwrap_or_default()
                .split(',')
                .map(str::to_string)
                .collect();
            let set: serde_json::Map<String, Value> = profile
                .iter()
                .filter(|(field, _)| wanted.contains(field))
                .map(|(field, value)| (field.clone(), value.clone()))
                .collect();
            let data = if set.is_empty() {
                json!([])
            } else {
                json!([set])
            };
            (200, json!({ "data": data }))
        }
        "POST" => {
            for (field, value) in body.as_object().cloned().unwrap_or_default() {
                profile.insert(field, value);
            }
            (200, json!({"result": "success"}))
        }
        "DELETE" => {
            for field in body["fields"].as_array().cloned().unwrap_or_default() {
                profile.remove(field.as_str().unwrap_or_default());
            }
            (200, json!({"result": "success"}))
        }
        _ => (405, json!({"error": {"message": "method", "code": 100}})),
    }
}

/// A Graph API error body.
pub fn graph_error(status: u16, code: i64, subcode: Option<i64>, message: &str) -> Scripted {
    let mut error =
        json!({"message": message, "type": "OAuthException", "code": code, "fbtrace_id": "Ab1"});
    if let Some(sub) = subcode {
        error["error_subcode"] = json!(sub);
    }
    Scripted {
        status,
        body: json!({ "error": error }),
    }
}

/// The Graph API's rate-limit answer (code 613): the page must slow down.
pub fn rate_limited() -> Scripted {
    graph_error(
        400,
        613,
        None,
        "(#613) Calls to this api have exceeded the rate limit.",
    )
}
