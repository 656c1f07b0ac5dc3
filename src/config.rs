//! Typed, validated configuration for `colloquy serve`.
//!
//! Owns the settings the engine runs with and the `Secret` wrapper that keeps the app
//! secret, page token and admin token out of `Debug` output and logs. It does not read
//! the environment itself: the CLI (clap, env over defaults, flags over env) fills a
//! `RawConfig`, and `Config::from_raw` turns it into a `Config` or names what is missing.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

use crate::store::{CacheSettings, LingerSettings};

/// The real Graph API, pinned to one version so a Meta release never changes our wire format.
pub const DEFAULT_GRAPH_URL: &str = "https://graph.facebook.com/v21.0";
/// Loopback by default: exposing the bot is a deliberate act (a reverse proxy, or a flag).
pub const DEFAULT_BIND: &str = "127.0.0.1:8080";
/// The admin endpoint listens apart from the webhook, on loopback unless told otherwise.
pub const DEFAULT_ADMIN_BIND: &str = "127.0.0.1:8081";
pub const DEFAULT_DATA_DIR: &str = "data/db";
pub const DEFAULT_WEBHOOK_PATH: &str = "/webhook";
/// Live conversation actors kept at most (a few KiB each).
pub const DEFAULT_MAX_LIVE_CONVERSATIONS: usize = 10_000;
/// Webhook connections served at once per HTTP worker (actix-web's own default is
/// 25,000, which let a flood of connections take 540 MiB and collapse into waves of 503;
/// 256 held 128 MiB and full goodput at twice capacity: docs/performance.md, "Overload,
/// continued"). Facebook delivers over far fewer.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;
/// Meta takes at most 50 requests in one Graph batch call (`COLLOQUY_SEND_BATCH`).
pub const MAX_SEND_BATCH: usize = 50;
/// Meta's Send API limit for text messages: 300 calls per second per page.
pub const DEFAULT_PAGE_SEND_RATE: u32 = 300;
/// A turn normally commits within milliseconds; a POST whose events are not all committed
/// by then (a busy conversation, a slow flow) journals the rest and is answered.
const DEFAULT_ACK_DEADLINE_MS: u64 = 1_000;
/// Facebook gives up on a webhook request after 20 s; the deadline stays well within it.
const MAX_ACK_DEADLINE_MS: u64 = 10_000;
/// A longer commit linger would hold acknowledgements for a noticeable time.
const MAX_COMMIT_LINGER_US: u64 = 100_000;
/// Meta batches at most 1000 updates per POST; a few hundred bytes each fit well under 4 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// A string that must never be printed: `Debug` and `Display` show `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the few places that must use it (HMAC key, query parameter).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True when `presented` (a token a request carries) is this secret. Takes the same
    /// time wherever the two first differ, so timing tells an attacker nothing about how
    /// much of a guess was right (only whether its length was).
    pub(crate) fn matches(&self, presented: &str) -> bool {
        let (secret, presented) = (self.0.as_bytes(), presented.as_bytes());
        secret.len() == presented.len()
            && secret
                .iter()
                .zip(presented)
                .fold(0u8, |differ, (a, b)| differ | (a ^ b))
                == 0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Settings as they arrive from flags and the environment, before validation.
#[derive(Debug, Clone, Default)]
pub struct RawConfig {
    pub verify_token: Option<String>,
    pub app_secret: Option<String>,
    pub access_token: Option<String>,
    pub graph_url: Option<String>,
    pub bind: Option<String>,
    pub admin_bind: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub webhook_path: Option<String>,
    pub admin_token: Option<String>,
    /// `COLLOQUY_PUBLIC_URL`.
    pub public_url: Option<String>,
    /// `COLLOQUY_HANDOVER_APP_ID`.
    pub handover_app_id: Option<String>,
    pub max_body_bytes: Option<usize>,
    pub idle_timeout_secs: Option<u64>,
    pub workers: Option<usize>,
    pub max_pending_events: Option<usize>,
    pub max_pending_replies: Option<usize>,
    pub max_queue_delay_ms: Option<u64>,
    pub shutdown_timeout_secs: Option<u64>,
    pub flow_timeout_secs: Option<u64>,
    pub ack_deadline_ms: Option<u64>,
    pub page_send_rate: Option<u32>,
    /// `COLLOQUY_SEND_BATCH`: most replies per Graph batch call (1 = one call each).
    pub send_batch: Option<usize>,
    pub max_live_conversations: Option<usize>,
    pub max_connections: Option<usize>,
    pub cache_mb: Option<u64>,
    pub cache_max_mb: Option<u64>,
    pub commit_linger_us: Option<u64>,
    pub commit_linger_ops: Option<usize>,
    pub dedup_retention_hours: Option<u64>,
    /// `COLLOQUY_ENGINE_CPU`: `auto`, `off` or a CPU number.
    pub engine_cpu: Option<String>,
    /// `COLLOQUY_PAGES`: the pages file; with it the `MESSENGER_*` secrets are not needed.
    pub pages_file: Option<PathBuf>,
}

impl RawConfig {
    /// The settings from the environment variables `colloquy serve` reads (an empty
    /// variable counts as unset). A number that does not parse is an error naming it.
    pub fn from_env() -> Result<RawConfig, ConfigError> {
        fn var(name: &str) -> Option<String> {
            std::env::var(name).ok().filter(|value| !value.is_empty())
        }
        fn number<T: std::str::FromStr>(name: &'static str) -> Result<Option<T>, ConfigError> {
            var(name)
                .map(|value| {
                    value.parse().map_err(|_| ConfigError::Invalid {
                        variable: name,
                        reason: format!("`{value}` is not a whole number"),
                    })
                })
                .transpose()
        }
        Ok(RawConfig {
            verify_token: var("MESSENGER_VERIFY_TOKEN"),
            app_secret: var("MESSENGER_APP_SECRET"),
            access_token: var("MESSENGER_ACCESS_TOKEN"),
            graph_url: var("MESSENGER_GRAPH_URL"),
            bind: var("COLLOQUY_BIND"),
            admin_bind: var("COLLOQUY_ADMIN_BIND"),
            data_dir: var("COLLOQUY_DATA").map(PathBuf::from),
            webhook_path: var("COLLOQUY_WEBHOOK_PATH"),
            admin_token: var("COLLOQUY_ADMIN_TOKEN"),
            public_url: var("COLLOQUY_PUBLIC_URL"),
            handover_app_id: var("COLLOQUY_HANDOVER_APP_ID"),
            max_body_bytes: number("COLLOQUY_MAX_BODY_BYTES")?,
            idle_timeout_secs: number("COLLOQUY_IDLE_TIMEOUT_SECS")?,
            workers: number("COLLOQUY_WORKERS")?,
            max_pending_events: number("COLLOQUY_MAX_PENDING_EVENTS")?,
            max_pending_replies: number("COLLOQUY_MAX_PENDING_REPLIES")?,
            max_queue_delay_ms: number("COLLOQUY_MAX_QUEUE_DELAY_MS")?,
            shutdown_timeout_secs: number("COLLOQUY_SHUTDOWN_TIMEOUT_SECS")?,
            flow_timeout_secs: number("COLLOQUY_FLOW_TIMEOUT_SECS")?,
            ack_deadline_ms: number("COLLOQUY_ACK_DEADLINE_MS")?,
            page_send_rate: number("COLLOQUY_PAGE_SEND_RATE")?,
            send_batch: number("COLLOQUY_SEND_BATCH")?,
            max_live_conversations: number("COLLOQUY_MAX_LIVE_CONVERSATIONS")?,
            max_connections: number("COLLOQUY_MAX_CONNECTIONS")?,
            cache_mb: number("COLLOQUY_CACHE_MB")?,
            cache_max_mb: number("COLLOQUY_CACHE_MAX_MB")?,
            commit_linger_us: number("COLLOQUY_COMMIT_LINGER_US")?,
            commit_linger_ops: number("COLLOQUY_COMMIT_LINGER_OPS")?,
            dedup_retention_hours: number("COLLOQUY_DEDUP_RETENTION_HOURS")?,
            engine_cpu: var("COLLOQUY_ENGINE_CPU"),
            pages_file: var("COLLOQUY_PAGES").map(PathBuf::from),
        })
    }
}

/// Everything the engine needs to run, validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// Compared with `hub.verify_token` in the subscription handshake (single page; with a
    /// pages file each app has its own).
    pub verify_token: Option<Secret>,
    /// HMAC key of `X-Hub-Signature-256` (single page): unsigned POSTs are never accepted.
    pub app_secret: Option<Secret>,
    /// Page access token for the Send API (single page).
    pub access_token: Option<Secret>,
    /// The pages file (`COLLOQUY_PAGES`): apps, pages, tokens, flows; read at start and
    /// on every reload. Without it the three secrets above serve one page.
    pub pages_file: Option<PathBuf>,
    /// Base URL of the Graph API including the version, without a trailing slash.
    pub graph_url: String,
    pub bind: SocketAddr,
    /// Where the `/admin` endpoints listen (`COLLOQUY_ADMIN_BIND`).
    pub admin_bind: SocketAddr,
    pub data_dir: PathBuf,
    /// Where Facebook POSTs (and GETs the handshake), e.g. `/webhook` or `/chat/webhook/`.
    pub webhook_path: String,
    /// Bearer token of the `/admin` endpoints; `None` disables them.
    pub admin_token: Option<Secret>,
    /// Where the public listener is reached from outside (scheme, host, any path prefix;
    /// no trailing slash), for the data-deletion status URL; `None` derives it from each
    /// request's Host and scheme.
    pub public_url: Option<String>,
    /// The app an operator's pause passes the thread to (handover protocol), and a resume
    /// takes it back from; the Page Inbox is 263902037430900. `None`: no handover.
    pub handover_app_id: Option<String>,
    /// Larger webhook bodies are refused with 413 before they are read to the end.
    pub max_body_bytes: usize,
    /// A conversation actor with nothing to do for this long is stopped; its state is in sled.
    pub idle_timeout: Duration,
    /// Replies per attempt budget and HTTP timeouts of the outbound sender.
    pub sender: SenderSettings,
    /// Upper bound on how long one flow may take for one event.
    pub flow_timeout: Duration,
    /// How long a webhook POST waits for its events' own turns to commit before it
    /// journals the rest and answers; zero journals every event first.
    pub ack_deadline: Duration,
    /// HTTP worker threads serving the webhook; `Some(0)`: the engine's own thread;
    /// `None`: steered between the engine's thread and one HTTP worker per core beyond
    /// two, at least one (`Config::webhook_threads`).
    pub workers: Option<usize>,
    /// When the webhook moves between the engine's thread and the HTTP workers (with
    /// `workers` unset).
    pub webhook_steering: SteeringSettings,
    /// Events acknowledged but not yet handled before the webhook answers 503.
    pub max_pending_events: usize,
    /// Replies committed but not yet sent before the webhook answers 503.
    pub max_pending_replies: usize,
    /// How long the oldest acknowledged event may wait for its conversation before the
    /// webhook answers 503: the engine is then further behind than it can quickly catch up.
    pub max_queue_delay: Duration,
    /// How long a graceful shutdown waits for in-flight requests.
    pub shutdown_timeout: Duration,
    /// Conversation actors kept alive at most; the least recently used beyond it stop
    /// (their state is in sled), which bounds memory at any number of users.
    pub max_live_conversations: usize,
    /// Webhook connections served at once per HTTP worker; beyond it new connections
    /// wait in the kernel's accept queue (each served one holds buffers in memory).
    pub max_connections: usize,
    /// sled's page cache, in bytes: its size at start and least size
    /// (`COLLOQUY_CACHE_MB`), and the most it grows to when its pages do not fit
    /// (`COLLOQUY_CACHE_MAX_MB`; fixed at `COLLOQUY_CACHE_MB` when only that is set).
    pub cache: CacheSettings,
    /// When a small commit cycle waits for more writes (`COLLOQUY_COMMIT_LINGER_US`,
    /// `COLLOQUY_COMMIT_LINGER_OPS`).
    pub commit_linger: LingerSettings,
    /// How long a handled event's dedup mark is kept (redeliveries within it are skipped).
    pub dedup_retention: Duration,
    /// Which CPU the engine's thread keeps to (`COLLOQUY_ENGINE_CPU`, `engine::affinity`).
    pub engine_cpu: EngineCpu,
}

/// Which CPU the engine's thread keeps to (`COLLOQUY_ENGINE_CPU`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EngineCpu {
    /// `auto` (the default): the CPU it runs on at start, let go of for a while whenever
    /// it waits longer to run there than it runs.
    #[default]
    Auto,
    /// `off`: wherever the scheduler puts it.
    Off,
    /// A CPU number: that CPU, always (start fails if the process may not use it).
    Fixed(usize),
}

impl std::str::FromStr for EngineCpu {
    type Err = ConfigError;

    fn from_str(value: &str) -> Result<EngineCpu, ConfigError> {
        match value.trim() {
            "auto" => Ok(EngineCpu::Auto),
            "off" => Ok(EngineCpu::Off),
            number => number
                .parse()
                .map(EngineCpu::Fixed)
                .map_err(|_| ConfigError::Invalid {
                    variable: "COLLOQUY_ENGINE_CPU",
                    reason: format!("`{value}` is not `auto`, `off` or a CPU number"),
                }),
        }
    }
}

/// How the outbound sender talks to the Graph API.
#[derive(Debug, Clone)]
pub struct SenderSettings {
    pub request_timeout: Duration,
    /// Attempts per reply before it is recorded `failed`.
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// A reply still failing this long after it was decided is recorded `failed`.
    pub max_age: Duration,
    /// Send API calls per second per page; 0 = no limit.
    pub page_send_rate: u32,
    /// Most Messenger replies sent as one Graph batch call (1 to 50; 1 = one call each).
    /// Only replies ready at the same moment go together: none waits for a batch.
    pub send_batch: usize,
}

impl Default for SenderSettings {
    fn default() -> Self {
        SenderSettings {
            request_timeout: Duration::from_secs(15),
            max_attempts: 8,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(30),
            // The 24-hour messaging window makes older replies pointless anyway.
            max_age: Duration::from_secs(3600),
            page_send_rate: DEFAULT_PAGE_SEND_RATE,
            send_batch: MAX_SEND_BATCH,
        }
    }
}

/// A setting is missing or does not parse; the message names the variable.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("missing required setting {variable} (or the flag {flag})")]
    Missing {
        variable: &'static str,
        flag: &'static str,
    },
    #[error("invalid {variable}: {reason}")]
    Invalid {
        variable: &'static str,
        reason: String,
    },
}

/// Replies per Graph batch call: 1 to Meta's limit of 50.
fn parse_send_batch(value: Option<usize>) -> Result<usize, ConfigError> {
    match value {
        None => Ok(MAX_SEND_BATCH),
        Some(size) if (1..=MAX_SEND_BATCH).contains(&size) => Ok(size),
        Some(size) => Err(ConfigError::Invalid {
            variable: "COLLOQUY_SEND_BATCH",
            reason: format!(
                "{size} replies per batch: must be 1 (one call each) to {}",
                MAX_SEND_BATCH
            ),
        }),
    }
}

/// The commit linger from its two settings: the window is capped, and a target of one
/// operation (any cycle already has one) means never waiting.
fn commit_linger(window_us: Option<u64>, target: Option<usize>) -> LingerSettings {
    let defaults = LingerSettings::default();
    LingerSettings {
        window: window_us.map_or(defaults.window, |us| {
            Duration::from_micros(us.min(MAX_COMMIT_LINGER_US))
        }),
        target: target.map_or(defaults.target, |ops| ops.max(1)),
    }
}

/// sled's page cache from its two settings (MiB). With neither, it starts at the
/// default and may grow to the default ceiling; `COLLOQUY_CACHE_MB` alone fixes it, as it
/// always did; a ceiling below the floor is raised to it.
fn cache_settings(floor_mb: Option<u64>, ceiling_mb: Option<u64>) -> CacheSettings {
    const MIB: u64 = 1024 * 1024;
    let floor = floor_mb.map_or(crate::store::DEFAULT_CACHE_BYTES, |mb| mb.max(1) * MIB);
    let ceiling = match (floor_mb, ceiling_mb) {
        (_, Some(mb)) => mb.max(1) * MIB,
        (Some(_), None) => floor,
        (None, None) => crate::store::DEFAULT_CACHE_MAX_BYTES,
    };
    CacheSettings {
        floor,
        ceiling: ceiling.max(floor),
    }
}

fn required(
    value: Option<String>,
    variable: &'static str,
    flag: &'static str,
) -> Result<Secret, ConfigError> {
    match value {
        Some(v) if !v.is_empty() => Ok(Secret::new(v)),
        _ => Err(ConfigError::Missing { variable, flag }),
    }
}

fn parse_bind(
    bind: Option<String>,
    default: &str,
    variable: &'static str,
) -> Result<SocketAddr, ConfigError> {
    let bind = bind.unwrap_or_else(|| default.to_string());
    bind.parse().map_err(|_| ConfigError::Invalid {
        variable,
        reason: format!("`{bind}` is not an address like 127.0.0.1:8080"),
    })
}

fn parse_graph_url(url: Option<String>) -> Result<String, ConfigError> {
    let url = url.unwrap_or_else(|| DEFAULT_GRAPH_URL.to_string());
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(ConfigError::Invalid {
            variable: "MESSENGER_GRAPH_URL",
            reason: format!("`{url}` must start with http:// or https://"),
        });
    }
    Ok(url.trim_end_matches('/').to_string())
}

/// An app id is digits (Meta's ids are numbers); anything else is a typo to refuse.
fn parse_app_id(id: Option<String>) -> Result<Option<String>, ConfigError> {
    match id
        .map(|id| id.trim().to_string())
        .filter(|id| !id.is_empty())
    {
        Some(id) if !id.bytes().all(|b| b.is_ascii_digit()) => Err(ConfigError::Invalid {
            variable: "COLLOQUY_HANDOVER_APP_ID",
            reason: format!("`{id}` is not an app id (digits; the Page Inbox is 263902037430900)"),
        }),
        id => Ok(id),
    }
}

fn parse_public_url(url: Option<String>) -> Result<Option<String>, ConfigError> {
    let Some(url) = url.filter(|u| !u.is_empty()) else {
        return Ok(None);
    };
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(ConfigError::Invalid {
            variable: "COLLOQUY_PUBLIC_URL",
            reason: format!("`{url}` must start with http:// or https://"),
        });
    }
    Ok(Some(url.trim_end_matches('/').to_string()))
}

fn parse_webhook_path(path: Option<String>) -> Result<String, ConfigError> {
    let path = path.unwrap_or_else(|| DEFAULT_WEBHOOK_PATH.to_string());
    if !path.starts_with('/') || path.starts_with("/admin") || path.starts_with("/data-deletion") {
        return Err(ConfigError::Invalid {
            variable: "COLLOQUY_WEBHOOK_PATH",
            reason: format!(
                "`{path}` must start with / and must not be under /admin or /data-deletion"
            ),
        });
    }
    Ok(path)
}

impl Config {
    /// Validates raw settings. The first problem found is returned, naming its variable.
    pub fn from_raw(raw: RawConfig) -> Result<Config, ConfigError> {
        let pages_file = raw.pages_file.filter(|path| !path.as_os_str().is_empty());
        let secret = |value: Option<String>, variable, flag| match &pages_file {
            Some(_) => Ok(value.filter(|v| !v.is_empty()).map(Secret::new)),
            None => required(value, variable, flag).map(Some),
        };
        let verify_token = secret(raw.verify_token, "MESSENGER_VERIFY_TOKEN", "--verify-token")?;
        let app_secret = secret(raw.app_secret, "MESSENGER_APP_SECRET", "--app-secret")?;
        let access_token = secret(raw.access_token, "MESSENGER_ACCESS_TOKEN", "--access-token")?;
        let max_body_bytes = raw.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES);
        if max_body_bytes == 0 {
            return Err(ConfigError::Invalid {
                variable: "COLLOQUY_MAX_BODY_BYTES",
                reason: "must be greater than 0".into(),
            });
        }
        Ok(Config {
            verify_token,
            app_secret,
            access_token,
            pages_file,
            graph_url: parse_graph_url(raw.graph_url)?,
            bind: parse_bind(raw.bind, DEFAULT_BIND, "COLLOQUY_BIND")?,
            admin_bind: parse_bind(raw.admin_bind, DEFAULT_ADMIN_BIND, "COLLOQUY_ADMIN_BIND")?,
            data_dir: raw
                .data_dir
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            webhook_path: parse_webhook_path(raw.webhook_path)?,
            admin_token: raw.admin_token.filter(|t| !t.is_empty()).map(Secret::new),
            public_url: parse_public_url(raw.public_url)?,
            handover_app_id: parse_app_id(raw.handover_app_id)?,
            max_body_bytes,
            idle_timeout: Duration::from_secs(raw.idle_timeout_secs.unwrap_or(300).max(1)),
            sender: SenderSettings {
                page_send_rate: raw.page_send_rate.unwrap_or(DEFAULT_PAGE_SEND_RATE),
                send_batch: parse_send_batch(raw.send_batch)?,
                ..SenderSettings::default()
            },
            flow_timeout: Duration::from_secs(raw.flow_timeout_secs.unwrap_or(30).max(1)),
            ack_deadline: Duration::from_millis(
                raw.ack_deadline_ms
                    .unwrap_or(DEFAULT_ACK_DEADLINE_MS)
                    .min(MAX_ACK_DEADLINE_MS),
            ),
            workers: raw.workers,
            webhook_steering: SteeringSettings::default(),
            max_pending_events: raw
                .max_pending_events
                .unwrap_or(crate::engine::load::DEFAULT_MAX_PENDING_EVENTS)
                .max(1),
            max_pending_replies: raw
                .max_pending_replies
                .unwrap_or(crate::engine::load::DEFAULT_MAX_PENDING_REPLIES)
                .max(1),
            max_queue_delay: raw
                .max_queue_delay_ms
                .map_or(crate::engine::load::DEFAULT_MAX_QUEUE_DELAY, |ms| {
                    Duration::from_millis(ms.max(1))
                }),
            shutdown_timeout: Duration::from_secs(raw.shutdown_timeout_secs.unwrap_or(10)),
            cache: cache_settings(raw.cache_mb, raw.cache_max_mb),
            commit_linger: commit_linger(raw.commit_linger_us, raw.commit_linger_ops),
            dedup_retention: Duration::from_secs(
                raw.dedup_retention_hours.unwrap_or(168).max(1) * 3600,
            ),
            engine_cpu: raw
                .engine_cpu
                .as_deref()
                .map_or(Ok(EngineCpu::Auto), str::parse)?,
            max_live_conversations: raw
                .max_live_conversations
                .unwrap_or(DEFAULT_MAX_LIVE_CONVERSATIONS)
                .max(1),
            max_connections: raw
                .max_connections
                .unwrap_or(DEFAULT_MAX_CONNECTIONS)
                .max(1),
        })
    }

    /// Which threads serve the webhook: as configured (`COLLOQUY_WORKERS`: that many HTTP
    /// workers, or 0 for the engine's own thread alone), else both, steered
    /// (`webhook::steering`): the engine's own thread while it has time to spare, and
    /// one HTTP worker per core beyond the two the engine keeps busy itself (the actors'
    /// thread and the committer), at least one, once it is busy. Serving on the engine's
    /// thread costs less CPU per reply at moderate load, but the actors' thread then also
    /// parses every request, and a spike of 9,000 new users/s that one worker held
    /// overran it (docs/performance.md, "The webhook on the engine's thread"). One worker
    /// keeps up with what the single actors' thread can handle, and on two cores a second
    /// one only adds wake-ups and thread switches (docs/performance.md, "One HTTP worker
    /// on two cores").
    pub fn webhook_threads(&self) -> WebhookThreads {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        match self.workers {
            Some(0) => WebhookThreads::Engine,
            Some(workers) => WebhookThreads::Workers(workers),
            None => WebhookThreads::Steered(workers_beside_the_engine(cores)),
        }
    }
}

/// When the webhook's new connections move between the engine's thread and the HTTP
/// workers (`webhook::steering`, `Config::webhook_steering`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SteeringSettings {
    /// How often the engine's thread measures itself.
    pub every: Duration,
    /// The share of a core the engine's thread may use while it also serves the webhook:
    /// at or above it (`busy_samples` measurements in a row) the workers take over.
    pub busy_at: f64,
    /// How many measurements in a row at or above `busy_at` make the engine busy (one
    /// alone is a blip: a large batch, a slow flow).
    pub busy_samples: u32,
    /// The workers take over at once when the oldest waiting event has waited this long.
    pub behind_at: Duration,
    /// With the workers serving, the engine's thread takes the webhook back once it used
    /// less than this share of a core for `calm_for` in a row. Below `busy_at` by enough
    /// that the HTTP work it takes back does not make it busy again.
    pub calm_below: f64,
    /// How long the engine's thread must stay below `calm_below`, without a break and
    /// with no event waiting `behind_at`, before it takes the webhook back.
    pub calm_for: Duration,
}

impl Default for SteeringSettings {
    /// Measured on two cores (docs/performance.md, "The webhook steered"): at 2,000 new
    /// users/s the engine's thread uses 0.17 - 0.20 of a core serving the webhook itself,
    /// 0.13 - 0.15 with a worker serving it; at 9,000/s it used 0.52 - 0.56 while keeping
    /// up and 0.8 once it fell behind. Measuring every 100 ms rather than 250 ms moves the
    /// webhook before a sudden spike has piled up work (e2e p99 63 - 89 ms against 23 -
    /// 1,046 ms at 12,000 new users/s).
    fn default() -> Self {
        SteeringSettings {
            every: Duration::from_millis(100),
            busy_at: 0.4,
            busy_samples: 2,
            behind_at: Duration::from_millis(250),
            calm_below: 0.2,
            calm_for: Duration::from_secs(5),
        }
    }
}

/// Which threads serve the webhook (`Config::webhook_threads`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookThreads {
    /// The actors' own thread (`webhook::listener`).
    Engine,
    /// This many actix-web HTTP workers of their own.
    Workers(usize),
    /// Both: the engine's thread while it has time to spare, this many HTTP workers once
    /// it is busy (`webhook::steering`).
    Steered(usize),
}

fn workers_beside_the_engine(cores: usize) -> usize {
    cores.saturating_sub(2).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_webhook_is_steered_onto_the_cores_the_engine_leaves_free_unless_told_where() {
        assert_eq!(workers_beside_the_engine(1), 1);
        assert_eq!(workers_beside_the_engine(2), 1);
        assert_eq!(workers_beside_the_engine(4), 2);
        assert_eq!(workers_beside_the_engine(16), 14);
        let mut config = Config::from_raw(complete()).unwrap();
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        assert_eq!(
            config.webhook_threads(),
            WebhookThreads::Steered(cores.saturating_sub(2).max(1))
        );
        config.workers = Some(3);
        assert_eq!(config.webhook_threads(), WebhookThreads::Workers(3));
        config.workers = Some(0);
        assert_eq!(config.webhook_threads(), WebhookThreads::Engine);
    }

    fn complete() -> RawConfig {
        RawConfig {
            verify_token: Some("verify".into()),
            app_secret: Some("app-secret-value".into()),
            access_token: Some("page-token-value".into()),
            ..RawConfig::default()
        }
    }

    #[test]
    fn a_complete_raw_config_gets_the_documented_defaults() {
        let config = Config::from_raw(complete()).unwrap();
        assert_eq!(config.graph_url, DEFAULT_GRAPH_URL);
        assert_eq!(config.bind, DEFAULT_BIND.parse::<SocketAddr>().unwrap());
        assert!(config.admin_bind.ip().is_loopback());
        assert_eq!(config.webhook_path, "/webhook");
        assert_eq!(config.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert!(config.admin_token.is_none());
    }

    #[test]
    fn the_engine_cpu_is_auto_off_or_a_cpu_number_and_anything_else_is_named() {
        let engine_cpu = |value: Option<&str>| {
            Config::from_raw(RawConfig {
                engine_cpu: value.map(String::from),
                ..complete()
            })
            .map(|config| config.engine_cpu)
        };
        assert_eq!(engine_cpu(None).unwrap(), EngineCpu::Auto);
        assert_eq!(engine_cpu(Some("auto")).unwrap(), EngineCpu::Auto);
        assert_eq!(engine_cpu(Some("off")).unwrap(), EngineCpu::Off);
        assert_eq!(engine_cpu(Some("3")).unwrap(), EngineCpu::Fixed(3));
        for wrong in ["-1", "on", "1,2"] {
            let error = engine_cpu(Some(wrong)).unwrap_err().to_string();
            assert!(error.contains("COLLOQUY_ENGINE_CPU"), "{error}");
            assert!(error.contains(wrong), "{error}");
        }
    }

    #[test]
    fn replies_go_in_batches_of_up_to_50_and_a_size_beyond_is_named() {
        let send_batch = |value: Option<usize>| {
            Config::from_raw(RawConfig {
                send_batch: value,
                ..complete()
            })
            .map(|config| config.sender.send_batch)
        };
        assert_eq!(send_batch(None).unwrap(), 50);
        assert_eq!(send_batch(Some(1)).unwrap(), 1);
        assert_eq!(send_batch(Some(50)).unwrap(), 50);
        for wrong in [0, 51, 1000] {
            let error = send_batch(Some(wrong)).unwrap_err().to_string();
            assert!(error.contains("COLLOQUY_SEND_BATCH"), "{error}");
            assert!(error.contains(&wrong.to_string()), "{error}");
        }
    }

    #[test]
    fn the_commit_linger_defaults_and_is_bounded() {
        let config = Config::from_raw(complete()).unwrap();
        assert_eq!(config.commit_linger, LingerSettings::default());
        let mut raw = complete();
        raw.commit_linger_us = Some(10_000_000);
        raw.commit_linger_ops = Some(0);
        let config = Config::from_raw(raw).unwrap();
        assert_eq!(
            config.commit_linger,
            LingerSettings {
                window: Duration::from_micros(MAX_COMMIT_LINGER_US),
                target: 1,
            }
        );
        let mut raw = complete();
        raw.commit_linger_us = Some(0);
        let config = Config::from_raw(raw).unwrap();
        assert_eq!(config.commit_linger.window, Duration::ZERO);
    }

    #[test]
    fn a_missing_secret_is_reported_by_its_variable_name() {
        let mut raw = complete();
        raw.app_secret = None;
        let err = Config::from_raw(raw).unwrap_err();
        assert_eq!(
            err.to_string(),
            "missing required setting MESSENGER_APP_SECRET (or the flag --app-secret)"
        );
    }

    #[test]
    fn an_empty_token_counts_as_missing() {
        let mut raw = complete();
        raw.access_token = Some(String::new());
        let err = Config::from_raw(raw).unwrap_err();
        assert!(err.to_string().contains("MESSENGER_ACCESS_TOKEN"));
    }

    #[test]
    fn debug_output_never_contains_secrets() {
        let mut raw = complete();
        raw.admin_token = Some("admin-token-value".into());
        let shown = format!("{:?}", Config::from_raw(raw).unwrap());
        for secret in [
            "verify",
            "app-secret-value",
            "page-token-value",
            "admin-token-value",
        ] {
            assert!(
                !shown.contains(&format!("\"{secret}\"")),
                "{secret} leaked: {shown}"
            );
        }
        assert!(shown.contains("Secret(***)"));
    }

    #[test]
    fn with_a_pages_file_the_single_page_secrets_are_optional() {
        let raw = RawConfig {
            pages_file: Some(PathBuf::from("pages.toml")),
            ..RawConfig::default()
        };
        let config = Config::from_raw(raw).unwrap();
        assert_eq!(config.pages_file, Some(PathBuf::from("pages.toml")));
        assert!(config.app_secret.is_none());
    }

    #[test]
    fn a_secret_matches_only_the_same_text() {
        let secret = Secret::new("token");
        assert!(secret.matches("token"));
        for other in ["tokem", "token2", "toke", "", "TOKEN"] {
            assert!(!secret.matches(other), "{other:?}");
        }
        assert!(!Secret::new("").matches("x"));
    }

    #[test]
    fn a_number_setting_that_does_not_parse_is_an_error_naming_it() {
        // The only test that sets this variable, so parallel tests cannot see it.
        std::env::set_var("COLLOQUY_CACHE_MB", "lots");
        let error = RawConfig::from_env().unwrap_err();
        std::env::remove_var("COLLOQUY_CACHE_MB");
        assert_eq!(
            error.to_string(),
            "invalid COLLOQUY_CACHE_MB: `lots` is not a whole number"
        );
    }

    #[test]
    fn a_bad_bind_address_names_the_variable() {
        let mut raw = complete();
        raw.bind = Some("localhost".into());
        let err = Config::from_raw(raw).unwrap_err();
        assert!(err.to_string().starts_with("invalid COLLOQUY_BIND"));
    }

    #[test]
    fn the_graph_url_loses_its_trailing_slash() {
        let mut raw = complete();
        raw.graph_url = Some("http://127.0.0.1:9/v1/".into());
        assert_eq!(
            Config::from_raw(raw).unwrap().graph_url,
            "http://127.0.0.1:9/v1"
        );
    }

    #[test]
    fn the_seed_callback_path_is_accepted_and_admin_paths_are_not() {
        let mut raw = complete();
        raw.webhook_path = Some("/chat/webhook/".into());
        assert_eq!(
            Config::from_raw(raw.clone()).unwrap().webhook_path,
            "/chat/webhook/"
        );
        raw.webhook_path = Some("/admin/x".into());
        assert!(Config::from_raw(raw.clone()).is_err());
        raw.webhook_path = Some("/data-deletion".into());
        assert!(Config::from_raw(raw).is_err());
    }

    #[test]
    fn the_public_url_is_optional_must_be_http_and_loses_its_trailing_slash() {
        let mut raw = complete();
        assert_eq!(Config::from_raw(raw.clone()).unwrap().public_url, None);
        raw.public_url = Some("https://bot.example.com/".into());
        assert_eq!(
            Config::from_raw(raw.clone()).unwrap().public_url.as_deref(),
            Some("https://bot.example.com")
        );
        raw.public_url = Some("bot.example.com".into());
        let error = Config::from_raw(raw).unwrap_err().to_string();
        assert!(error.contains("COLLOQUY_PUBLIC_URL"), "{error}");
    }

    #[test]
    fn the_page_cache_grows_by_default_and_stays_fixed_when_only_its_size_is_set() {
        const MIB: u64 = 1024 * 1024;
        let cache = |floor, ceiling| {
            let mut raw = complete();
            (raw.cache_mb, raw.cache_max_mb) = (floor, ceiling);
            Config::from_raw(raw).unwrap().cache
        };
        let range = |floor, ceiling| CacheSettings { floor, ceiling };
        assert_eq!(cache(None, None), range(6 * MIB, 32 * MIB));
        assert_eq!(cache(Some(16), None), range(16 * MIB, 16 * MIB));
        assert_eq!(cache(None, Some(64)), range(6 * MIB, 64 * MIB));
        assert_eq!(cache(Some(8), Some(24)), range(8 * MIB, 24 * MIB));
        // A ceiling under the floor is the floor.
        assert_eq!(cache(Some(16), Some(4)), range(16 * MIB, 16 * MIB));
    }
}
