//! Test harness: the real colloquy server on port 0, a mock Graph API that is a real HTTP
//! server (`mock_graph.rs`), and a temporary sled directory per test.

use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::{Duration, Instant};

use colloquy::config::{Config, RawConfig};
use colloquy::test_support::sign_sha256;
use colloquy::{FlowHandle, RunningApp};
use serde_json::{json, Value};

pub const APP_SECRET: &str = "test-app-secret";
pub const VERIFY_TOKEN: &str = "test-verify-token";
pub const ACCESS_TOKEN: &str = "test-page-token";
pub const ADMIN_TOKEN: &str = "test-admin-token";
pub const PAGE_ID: &str = "128922990987384";
pub const THANKS: &str = "Thank you for your time..!!";

// Relative to this file's directory, so the path holds both in `tests/api/main.rs` and in
// the tests that include this file with `#[path = "api/helpers.rs"]`.
#[path = "mock_graph.rs"]
mod mock_graph;
pub use mock_graph::*;

/// How long a test waits for background work before it fails.
const PATIENCE: Duration = Duration::from_secs(15);

pub fn init_logging() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Quiet unless TEST_LOG is set, so failures are readable.
        if std::env::var_os("TEST_LOG").is_some() {
            let _ = env_logger::builder().is_test(true).try_init();
        }
    });
}

/// Polls `probe` until it yields a value or the test's patience runs out.
pub async fn wait_until<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(value) = probe() {
            return value;
        }
        if started.elapsed() > PATIENCE {
            panic!("timed out waiting for {what}");
        }
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
}

/// How a test wants its server configured.
pub struct Options {
    pub webhook_path: Option<String>,
    pub idle_timeout_secs: Option<u64>,
    pub flow: FlowHandle,
    pub max_body_bytes: Option<usize>,
    pub max_pending_events: Option<usize>,
    /// `COLLOQUY_MAX_QUEUE_DELAY_MS` (30 s in tests unless set).
    pub max_queue_delay_ms: Option<u64>,
    pub flow_timeout: Option<Duration>,
    pub page_send_rate: Option<u32>,
    /// `COLLOQUY_SEND_BATCH` (the server's default, 50, when `None`).
    pub send_batch: Option<usize>,
    pub max_live_conversations: Option<usize>,
    /// `COLLOQUY_WORKERS`: that many HTTP workers, 0 for the engine's own thread alone;
    /// unset (the default, as in production), the webhook is steered between both.
    pub workers: Option<usize>,
    /// With `workers` unset: steers with these settings instead of the default ones.
    pub steering: Option<colloquy::config::SteeringSettings>,
    /// `COLLOQUY_MAX_CONNECTIONS` (per thread serving the webhook).
    pub max_connections: Option<usize>,
    /// The sender's per-call timeout (the test default is 5 s).
    pub request_timeout: Option<Duration>,
    /// How long a POST waits for its events' turns (the server's default when `None`).
    pub ack_deadline: Option<Duration>,
    /// `COLLOQUY_PUBLIC_URL`.
    pub public_url: Option<String>,
    /// `COLLOQUY_HANDOVER_APP_ID`.
    pub handover_app_id: Option<String>,
    /// `COLLOQUY_PAGES`.
    pub pages_file: Option<PathBuf>,
    /// `COLLOQUY_ENGINE_CPU`; tests run many engines at once on a test's own thread, so
    /// unless a test sets it, `off`.
    pub engine_cpu: Option<colloquy::config::EngineCpu>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            webhook_path: None,
            idle_timeout_secs: None,
            flow: colloquy::flow::builtin::by_name("thanks").unwrap(),
            max_body_bytes: None,
            max_pending_events: None,
            max_queue_delay_ms: None,
            flow_timeout: None,
            page_send_rate: None,
            send_batch: None,
            max_live_conversations: None,
            workers: None,
            steering: None,
            max_connections: None,
            request_timeout: None,
            ack_deadline: None,
            public_url: None,
            handover_app_id: None,
            pages_file: None,
            engine_cpu: None,
        }
    }
}

/// The error a start with `options` on `data_dir` fails with (against a mock Graph API of
/// its own); panics with `why` if it starts.
pub async fn start_error(data_dir: &Path, options: Options, why: &str) -> String {
    let config = test_config(&MockGraph::start(), data_dir, &options);
    colloquy::start(config, options.flow)
        .await
        .err()
        .expect(why)
        .to_string()
}

pub fn test_config(graph: &MockGraph, data_dir: &Path, options: &Options) -> Config {
    let mut config = Config::from_raw(RawConfig {
        verify_token: Some(VERIFY_TOKEN.into()),
        app_secret: Some(APP_SECRET.into()),
        access_token: Some(ACCESS_TOKEN.into()),
        graph_url: Some(graph.url.clone()),
        bind: Some("127.0.0.1:0".into()),
        admin_bind: Some("127.0.0.1:0".into()),
        data_dir: Some(data_dir.to_path_buf()),
        webhook_path: options.webhook_path.clone(),
        admin_token: Some(ADMIN_TOKEN.into()),
        max_body_bytes: options.max_body_bytes,
        idle_timeout_secs: options.idle_timeout_secs,
        workers: options.workers,
        max_pending_events: options.max_pending_events,
        // Tests share a loaded machine with a browser and each other: an engine seconds
        // behind is normal here, and only the admission tests (which set their own) are
        // about refusing for it.
        max_queue_delay_ms: options.max_queue_delay_ms.or(Some(30_000)),
        page_send_rate: options.page_send_rate,
        send_batch: options.send_batch,
        max_live_conversations: options.max_live_conversations,
        max_connections: options.max_connections,
        public_url: options.public_url.clone(),
        handover_app_id: options.handover_app_id.clone(),
        pages_file: options.pages_file.clone(),
        ..RawConfig::default()
    })
    .expect("test config is valid");
    if let Some(steering) = options.steering {
        config.webhook_steering = steering;
    }
    config.engine_cpu = options
        .engine_cpu
        .unwrap_or(colloquy::config::EngineCpu::Off);
    config.sender.initial_backoff = Duration::from_millis(20);
    config.sender.max_backoff = Duration::from_millis(200);
    config.sender.max_attempts = 4;
    config.sender.request_timeout = options.request_timeout.unwrap_or(Duration::from_secs(5));
    if let Some(timeout) = options.flow_timeout {
        config.flow_timeout = timeout;
    }
    if let Some(deadline) = options.ack_deadline {
        config.ack_deadline = deadline;
    }
    config
}

/// The admin listener's `/metrics` text.
pub async fn metrics_text(app: &TestApp) -> String {
    let mut response = awc::Client::new()
        .get(format!("{}/metrics", app.admin_url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    String::from_utf8(response.body().await.unwrap().to_vec()).unwrap()
}

/// The value of an unlabelled metric in `/metrics` text (0 when absent).
pub fn metric_value(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// A running server with its mock Graph API and data directory.
pub struct TestApp {
    pub app: RunningApp,
    pub base_url: String,
    /// The admin listener, apart from the webhook's.
    pub admin_url: String,
    pub webhook_path: String,
    pub graph: MockGraph,
    pub data_dir: PathBuf,
    _dir: Option<DataDirGuard>,
}

/// A test's temporary data directory, removed once the engine's store has closed. A test
/// that does not stop its app leaves the engine to be dropped with the runtime, after the
/// test body (and so this guard) is gone: removing the directory at once would make the
/// store's last writes fail (sled then stops the store: vendor/README.md, change 5).
struct DataDirGuard(Option<(tempfile::TempDir, colloquy::test_support::StoreRelease)>);

impl Drop for DataDirGuard {
    fn drop(&mut self) {
        let Some((dir, release)) = self.0.take() else {
            return;
        };
        if release.is_released() {
            return;
        }
        std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            while !release.is_released() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            drop(dir);
        });
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(Options::default()).await
}

pub async fn spawn_app_with(options: Options) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("db");
    let mut app = spawn_app_on(MockGraph::start(), &data_dir, options).await;
    app._dir = Some(DataDirGuard(Some((dir, app.app.store_release()))));
    app
}

/// One life of the engine on `data_dir`, in an actix System of its own: starts it, runs
/// `body` against it, stops it cleanly and hands back what `body` returned. Tests that
/// restart the engine on the same data call it once per life.
pub fn one_life<T>(
    graph: &MockGraph,
    data_dir: &Path,
    options: Options,
    body: impl AsyncFnOnce(&TestApp) -> T,
) -> T {
    let (graph, data_dir) = (graph.clone(), data_dir.to_path_buf());
    actix_rt::System::new().block_on(async move {
        let app = spawn_app_on(graph, &data_dir, options).await;
        let answer = body(&app).await;
        app.app.stop().await.unwrap();
        answer
    })
}

/// Starts the server on an existing data directory (for restarts).
pub async fn spawn_app_on(graph: MockGraph, data_dir: &Path, options: Options) -> TestApp {
    init_logging();
    let config = test_config(&graph, data_dir, &options);
    let webhook_path = config.webhook_path.clone();
    let app = colloquy::start(config, options.flow)
        .await
        .expect("app starts");
    TestApp {
        base_url: format!("http://{}", app.addr()),
        admin_url: format!("http://{}", app.admin_addr()),
        app,
        webhook_path,
        graph,
        data_dir: data_dir.to_path_buf(),
        _dir: None,
    }
}

pub struct Answer {
    pub status: u16,
    pub body: String,
    pub content_type: String,
    pub retry_after: Option<String>,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

impl TestApp {
    fn webhook_url(&self) -> String {
        format!("{}{}", self.base_url, self.webhook_path)
    }

    /// POSTs a body signed with the app secret, as Facebook does.
    pub async fn post_signed(&self, body: &str) -> Answer {
        let signature = sign_sha256(APP_SECRET.as_bytes(), body.as_bytes());
        self.post_webhook(
            body.as_bytes().to_vec(),
            &[("X-Hub-Signature-256", signature)],
        )
        .await
    }

    /// POSTs one signed text message from `psid` and checks it was acknowledged.
    pub async fn sends_text(&self, psid: &str, mid: &str, text: &str, timestamp: i64) {
        let answer = self
            .post_signed(&text_message(psid, mid, text, timestamp))
            .await;
        assert_eq!(
            answer.status, 200,
            "{mid} not acknowledged: {}",
            answer.body
        );
    }

    pub async fn post_webhook(&self, body: Vec<u8>, headers: &[(&str, String)]) -> Answer {
        let mut request = awc::Client::new()
            .post(self.webhook_url())
            .insert_header(("Content-Type", "application/json"));
        for (name, value) in headers {
            request = request.insert_header((*name, value.as_str()));
        }
        send(request, body).await
    }

    /// GET `path` (with its query) on the server.
    pub async fn get(&self, path_and_query: &str) -> Answer {
        let request = awc::Client::new().get(format!("{}{}", self.base_url, path_and_query));
        send(request, Vec::new()).await
    }

    /// An admin API call with the admin token: `method` on `path` (with its query).
    pub async fn admin(&self, method: &str, path: &str, body: &str) -> Answer {
        let url = format!("{}{}", self.admin_url, path);
        let client = awc::Client::new();
        let request = match method {
            "GET" => client.get(url),
            "POST" => client.post(url),
            "PUT" => client.put(url),
            "DELETE" => client.delete(url),
            other => panic!("no such method in these tests: {other}"),
        };
        send(request.bearer_auth(ADMIN_TOKEN), body.as_bytes().to_vec()).await
    }

    /// The admin listener's Prometheus text (`/metrics`).
    pub async fn metrics(&self) -> String {
        let request = awc::Client::new()
            .get(format!("{}/metrics", self.admin_url))
            .bearer_auth(ADMIN_TOKEN);
        send(request, Vec::new()).await.body
    }

    /// The admin endpoint's list of every conversation (one page: tests keep few).
    pub async fn conversations(&self) -> Value {
        let request = awc::Client::new()
            .get(format!("{}/admin/conversations?limit=1000", self.admin_url))
            .bearer_auth(ADMIN_TOKEN);
        let mut page = send(request, Vec::new()).await.json();
        assert_eq!(
            page["next_cursor"],
            Value::Null,
            "more than one page: {page}"
        );
        page["conversations"].take()
    }

    /// The admin endpoint's document of one conversation (`Null` when unknown).
    pub async fn conversation(&self, psid: &str) -> Value {
        let request = awc::Client::new()
            .get(format!("{}/admin/conversations/{psid}", self.admin_url))
            .bearer_auth(ADMIN_TOKEN);
        let answer = send(request, Vec::new()).await;
        if answer.status == 200 {
            answer.json()
        } else {
            Value::Null
        }
    }

    /// Waits until the conversation's first page message has `status`; returns the document.
    pub async fn wait_for_first_reply(&self, psid: &str, status: &str) -> Value {
        self.wait_for_conversation(psid, |d| {
            outbound(d).first().is_some_and(|e| e["status"] == status)
        })
        .await
    }

    /// Waits until the conversation's document satisfies `done`.
    pub async fn wait_for_conversation(&self, psid: &str, done: impl Fn(&Value) -> bool) -> Value {
        let started = Instant::now();
        loop {
            let doc = self.conversation(psid).await;
            if done(&doc) {
                return doc;
            }
            if started.elapsed() > PATIENCE {
                panic!("timed out waiting on conversation {psid}; last seen: {doc:#}");
            }
            actix_rt::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

async fn send(request: awc::ClientRequest, body: Vec<u8>) -> Answer {
    let mut response = request.send_body(body).await.expect("server answers");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = response
        .body()
        .limit(16 * 1024 * 1024)
        .await
        .expect("body reads");
    Answer {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
        content_type,
        retry_after,
    }
}

/// An envelope with one text message from `psid` to the test page.
pub fn text_message(psid: &str, mid: &str, text: &str, timestamp: i64) -> String {
    envelope(vec![json!({
        "id": PAGE_ID, "time": timestamp,
        "messaging": [message_event(psid, mid, text, timestamp)]
    })])
}

pub fn message_event(psid: &str, mid: &str, text: &str, timestamp: i64) -> Value {
    json!({
        "sender": {"id": psid}, "recipient": {"id": PAGE_ID}, "timestamp": timestamp,
        "message": {"mid": mid, "text": text}
    })
}

pub fn envelope(entries: Vec<Value>) -> String {
    json!({"object": "page", "entry": entries}).to_string()
}

/// The psids of a list answer (`GET /admin/conversations`), sorted.
pub fn psids(answer: &Answer) -> Vec<String> {
    let mut psids: Vec<String> = answer.json()["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["psid"].as_str().unwrap().to_string())
        .collect();
    psids.sort();
    psids
}

/// A seed sample from data/samples, as shipped.
pub fn sample(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data/samples")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Transcript entries of a conversation document going out (page messages).
pub fn outbound(doc: &Value) -> Vec<Value> {
    doc["transcript"]
        .as_array()
        .map(|t| {
            t.iter()
                .filter(|e| e["direction"] == "out")
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// A user of one test: posts signed events, numbering them so every `mid` and timestamp
/// is new. (Used by the example and tree-flow tests, which include this file.)
#[allow(dead_code)]
pub struct User<'a> {
    app: &'a TestApp,
    psid: &'a str,
    sent: i64,
}

#[allow(dead_code)]
impl<'a> User<'a> {
    pub fn new(app: &'a TestApp, psid: &'a str) -> User<'a> {
        User { app, psid, sent: 0 }
    }

    /// Posts one signed webhook with a `message` or `postback` (`kind`) from this user;
    /// the 200 means the engine stored it and will handle it.
    pub async fn post(&mut self, kind: &str, mut body: Value) {
        self.sent += 1;
        if kind == "message" {
            body["mid"] = json!(format!("m.{}.{}", self.psid, self.sent));
        }
        let event = json!({
            "sender": {"id": self.psid}, "recipient": {"id": PAGE_ID},
            "timestamp": self.sent, kind: body
        });
        let webhook = envelope(vec![
            json!({"id": PAGE_ID, "time": self.sent, "messaging": [event]}),
        ]);
        assert_eq!(self.app.post_signed(&webhook).await.status, 200);
    }

    pub async fn says(&mut self, text: &str) {
        self.post("message", json!({ "text": text })).await;
    }

    /// Taps a quick reply: Messenger sends its title as text, and its payload.
    pub async fn taps(&mut self, title: &str, payload: &str) {
        let message = json!({"text": title, "quick_reply": {"payload": payload}});
        self.post("message", message).await;
    }

    /// Presses a template button: a `postback` event with its payload.
    pub async fn presses(&mut self, title: &str, payload: &str) {
        let postback = json!({"title": title, "payload": payload});
        self.post("postback", postback).await;
    }

    /// Says `text`, then waits until `replies` sends in all reached the mock; returns them.
    pub async fn says_awaiting(&mut self, text: &str, replies: usize) -> Vec<Recorded> {
        self.says(text).await;
        self.app.graph.wait_for_sends(replies).await
    }

    /// Taps a quick reply, then waits until `replies` sends in all reached the mock.
    pub async fn taps_awaiting(
        &mut self,
        title: &str,
        payload: &str,
        replies: usize,
    ) -> Vec<Recorded> {
        self.taps(title, payload).await;
        self.app.graph.wait_for_sends(replies).await
    }
}

/// Waits until sled has let go of a data directory written outside an app: its threads
/// release the lock a moment after the last handle drops, and on a loaded machine the
/// next start could otherwise find it still locked.
pub fn wait_until_the_store_is_let_go(data_dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match colloquy::test_support::Store::open(data_dir) {
            Ok(store) => {
                let released = store.release_watch();
                drop(store);
                while !released.is_released() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(5));
                }
                return;
            }
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(error) => panic!("the store stays locked: {error}"),
        }
    }
}
