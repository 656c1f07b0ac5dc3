//! The `colloquy` command line: `serve`, `inspect`, `subscribe`, `chat` and `admin`.
//!
//! Parses flags (each `serve` setting also read from its environment variable, flags
//! winning), and runs the command. This is the binary's edge, so it is the one place
//! that uses `anyhow` for error context; the library's modules keep typed errors.
//! Secrets given as flags or variables are never echoed (clap hides their values).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use clap::{Args, Parser, Subcommand};
use serde_json::Value;

use crate::admin_cli::url_component;
use crate::config::{
    Config, RawConfig, Secret, DEFAULT_ADMIN_BIND, DEFAULT_BIND, DEFAULT_DATA_DIR,
    DEFAULT_GRAPH_URL,
};
use crate::flow::builtin::resolve_flow;
use crate::graph::{CallError, GraphClient, PageAuth};
use crate::inspect::{self, ConversationDocument, ConversationListPage, ConversationSummary};
use crate::store::{Store, StoreError};

/// How long `colloquy subscribe` waits for the Graph API: as long as the sender waits
/// for one send (an operator at the terminal would rather wait than retry).
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(15);

/// The webhook fields colloquy parses, subscribed by `colloquy subscribe`.
pub const SUBSCRIBED_FIELDS: &str = "messages,messaging_postbacks,message_deliveries,message_reads,message_echoes,messaging_referrals,messaging_optins,message_reactions,message_edits,messaging_handovers,messaging_policy_enforcement,messaging_account_linking,messaging_game_plays,standby";

#[derive(Debug, Parser)]
#[command(
    name = "colloquy",
    version,
    about = "An actor-based chatbot engine for the Facebook Messenger Platform"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the bot: webhook, conversations and sender.
    Serve(Box<ServeArgs>),
    /// List stored conversations, or show one (works with or without a running server).
    Inspect(InspectArgs),
    /// Subscribe the page to this app's webhook fields (or show the subscription).
    Subscribe(SubscribeArgs),
    /// Talk to a flow in the terminal as a Messenger user would (no Facebook app needed).
    Chat(crate::console::ChatArgs),
    /// Act on a running server's conversations through its admin API.
    Admin(crate::admin_cli::AdminArgs),
    /// Messenger Profile as code: compare each page's live profile with the pages file
    /// (`diff`), or make it match (`apply`).
    Profile(ProfileArgs),
    /// A colloquy cluster on NATS JetStream: `status` shows its partitions and owners.
    Cluster(ClusterArgs),
}

#[derive(Debug, Args)]
pub struct ClusterArgs {
    #[command(subcommand)]
    pub action: ClusterAction,
    /// The NATS servers, comma-separated (`nats://host:4222,...`).
    #[arg(long = "cluster", env = "COLLOQUY_NATS_URL", global = true)]
    pub urls: Option<String>,
    /// Partitions of the cluster (the same on every node).
    #[arg(long, env = "COLLOQUY_PARTITIONS", default_value_t = crate::cluster::DEFAULT_PARTITIONS, global = true)]
    pub partitions: u32,
}

#[derive(Debug, Clone, Copy, Subcommand)]
pub enum ClusterAction {
    /// Each partition and the node holding its lease.
    Status,
}

/// Runs one parsed command and returns what it prints.
pub async fn run(cli: Cli) -> anyhow::Result<String> {
    match cli.command {
        Command::Serve(args) => serve(*args).await.map(|()| String::new()),
        Command::Inspect(args) => inspect(args).await,
        Command::Subscribe(args) => subscribe(args).await,
        Command::Chat(args) => crate::console::run(args).await.map(|()| String::new()),
        Command::Admin(args) => crate::admin_cli::run(args).await,
        Command::Profile(args) => profile(args).await,
        Command::Cluster(args) => cluster(args).await,
    }
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The flow that answers users: a built-in name (thanks, echo), or tree:PATH for an
    /// interview tree in a JSON file (or a directory of them, chosen by m.me `ref`).
    #[arg(long, default_value = "thanks")]
    pub flow: String,
    /// The pages file (TOML): apps with their secrets, pages with their tokens, channels,
    /// flows and send rates. With it, the three MESSENGER_* secrets are not needed.
    #[arg(long, env = "COLLOQUY_PAGES")]
    pub pages: Option<PathBuf>,
    /// Token Facebook sends in the subscription handshake.
    #[arg(long, env = "MESSENGER_VERIFY_TOKEN", hide_env_values = true)]
    pub verify_token: Option<String>,
    /// App secret: key of the X-Hub-Signature-256 HMAC.
    #[arg(long, env = "MESSENGER_APP_SECRET", hide_env_values = true)]
    pub app_secret: Option<String>,
    /// Page access token for the Send API.
    #[arg(long, env = "MESSENGER_ACCESS_TOKEN", hide_env_values = true)]
    pub access_token: Option<String>,
    /// Graph API base URL with its version.
    #[arg(long, env = "MESSENGER_GRAPH_URL", default_value = DEFAULT_GRAPH_URL)]
    pub graph_url: String,
    /// Address to listen on.
    #[arg(long, env = "COLLOQUY_BIND", default_value = DEFAULT_BIND)]
    pub bind: String,
    /// Address of the admin endpoint (used by `colloquy inspect`).
    #[arg(long, env = "COLLOQUY_ADMIN_BIND", default_value = DEFAULT_ADMIN_BIND)]
    pub admin_bind: String,
    /// Data directory (sled).
    #[arg(long = "data", env = "COLLOQUY_DATA", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Path of the webhook (the seed's Django bot used /chat/webhook/).
    #[arg(long, env = "COLLOQUY_WEBHOOK_PATH", default_value = "/webhook")]
    pub webhook_path: String,
    /// Bearer token of the /admin endpoints; unset disables them.
    #[arg(long, env = "COLLOQUY_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Public base URL of the webhook listener (https://host), for the data-deletion
    /// status URL; unset: taken from each request's Host and scheme.
    #[arg(long, env = "COLLOQUY_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// App the bot passes a paused user's thread to (handover protocol) and takes it back
    /// from on resume; the Page Inbox is 263902037430900. Unset: no handover.
    #[arg(long, env = "COLLOQUY_HANDOVER_APP_ID")]
    pub handover_app_id: Option<String>,
    /// Largest webhook body accepted, in bytes.
    #[arg(long, env = "COLLOQUY_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Seconds before an idle conversation actor is stopped.
    #[arg(long, env = "COLLOQUY_IDLE_TIMEOUT_SECS")]
    pub idle_timeout_secs: Option<u64>,
    /// HTTP worker threads serving the webhook; 0 serves it on the engine's own thread
    /// alone (default: the engine's own thread while it has time to spare, else one worker
    /// per core beyond two, at least one).
    #[arg(long, env = "COLLOQUY_WORKERS")]
    pub workers: Option<usize>,
    /// Events acknowledged but not yet handled before the webhook answers 503.
    #[arg(long, env = "COLLOQUY_MAX_PENDING_EVENTS")]
    pub max_pending_events: Option<usize>,
    /// Replies not yet sent before the webhook answers 503.
    #[arg(long, env = "COLLOQUY_MAX_PENDING_REPLIES")]
    pub max_pending_replies: Option<usize>,
    /// Milliseconds the oldest acknowledged event may wait for its conversation before
    /// the webhook answers 503.
    #[arg(long, env = "COLLOQUY_MAX_QUEUE_DELAY_MS")]
    pub max_queue_delay_ms: Option<u64>,
    /// Seconds a graceful shutdown (SIGTERM, Ctrl-C) waits for in-flight work.
    #[arg(long, env = "COLLOQUY_SHUTDOWN_TIMEOUT_SECS")]
    pub shutdown_timeout_secs: Option<u64>,
    /// Seconds one flow may take for one event before the event is marked failed.
    #[arg(long, env = "COLLOQUY_FLOW_TIMEOUT_SECS")]
    pub flow_timeout_secs: Option<u64>,
    /// Milliseconds a webhook POST waits for its events' turns to commit before it journals
    /// the rest and answers (at most 10000); 0 journals every event before its turn.
    #[arg(long, env = "COLLOQUY_ACK_DEADLINE_MS")]
    pub ack_deadline_ms: Option<u64>,
    /// Send API calls per second per page (Meta allows 300); 0 = no limit.
    #[arg(long, env = "COLLOQUY_PAGE_SEND_RATE")]
    pub page_send_rate: Option<u32>,
    /// Most Messenger replies sent as one Graph batch call (1 to 50; 1 = one call each).
    /// Only replies ready at the same moment go together: none waits for a batch.
    #[arg(long, env = "COLLOQUY_SEND_BATCH")]
    pub send_batch: Option<usize>,
    /// Conversation actors kept alive at most; the least recently used beyond it stop.
    #[arg(long, env = "COLLOQUY_MAX_LIVE_CONVERSATIONS")]
    pub max_live_conversations: Option<usize>,
    /// Webhook connections served at once per HTTP worker (default 256); more wait to be
    /// accepted.
    #[arg(long, env = "COLLOQUY_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// sled's page cache in MiB at start and at least (default 6): the main part of the
    /// server's memory. Set alone, the cache stays at this size.
    #[arg(long, env = "COLLOQUY_CACHE_MB")]
    pub cache_mb: Option<u64>,
    /// The most sled's page cache grows to, in MiB, while its pages do not fit (default
    /// 32, or COLLOQUY_CACHE_MB when only that is set).
    #[arg(long, env = "COLLOQUY_CACHE_MAX_MB")]
    pub cache_max_mb: Option<u64>,
    /// Microseconds a small commit cycle may wait for more writes at moderate load
    /// (default 8000, at most 100000); 0 never waits.
    #[arg(long, env = "COLLOQUY_COMMIT_LINGER_US")]
    pub commit_linger_us: Option<u64>,
    /// Writes at hand that end a commit cycle's wait (default 32).
    #[arg(long, env = "COLLOQUY_COMMIT_LINGER_OPS")]
    pub commit_linger_ops: Option<usize>,
    /// Hours a handled event is remembered, so that its redelivery is skipped (default 168).
    #[arg(long, env = "COLLOQUY_DEDUP_RETENTION_HOURS")]
    pub dedup_retention_hours: Option<u64>,
    /// The CPU the engine's thread keeps to: `auto` (the default: the CPU it starts on,
    /// let go of for a while when something else keeps that CPU busy), `off`, or a CPU
    /// number (always that CPU).
    #[arg(long, env = "COLLOQUY_ENGINE_CPU")]
    pub engine_cpu: Option<String>,
    /// Run as a node of a cluster on NATS JetStream: the NATS servers, comma-separated
    /// (`nats://host:4222,...`). Without it colloquy runs alone on its sled store.
    #[arg(long = "cluster", env = "COLLOQUY_NATS_URL")]
    pub cluster: Option<String>,
    /// This node's name in the cluster, unique among its nodes (default: the host name).
    #[arg(long, env = "COLLOQUY_NODE")]
    pub node: Option<String>,
    /// Partitions of the cluster (the same on every node).
    #[arg(long, env = "COLLOQUY_PARTITIONS", default_value_t = crate::cluster::DEFAULT_PARTITIONS)]
    pub partitions: u32,
    /// How long a partition's lease lasts without renewal, in ms: a dead node's
    /// partitions move to the others after about this long.
    #[arg(long, env = "COLLOQUY_LEASE_MS", default_value_t = crate::cluster::node::DEFAULT_LEASE_MS)]
    pub lease_ms: u64,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The user's page-scoped id; without it, list all conversations.
    pub psid: Option<String>,
    /// The page: of the conversation, when the psid talks to several pages; without a
    /// psid, list only this page's conversations.
    #[arg(long)]
    pub page: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Show only the last N transcript entries of the conversation.
    #[arg(long, value_name = "N")]
    pub last: Option<usize>,
    /// Data directory (sled).
    #[arg(long = "data", env = "COLLOQUY_DATA", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Base URL of the running server, used when it holds the data directory.
    #[arg(long, env = "COLLOQUY_ADMIN_URL")]
    pub admin_url: Option<String>,
    /// Admin address of the running server (to derive the admin URL).
    #[arg(long, env = "COLLOQUY_ADMIN_BIND", default_value = DEFAULT_ADMIN_BIND)]
    pub admin_bind: String,
    /// Admin token of the running server.
    #[arg(long, env = "COLLOQUY_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
}

#[derive(Debug, Args)]
pub struct SubscribeArgs {
    /// Show the page's current subscription instead of changing it.
    #[arg(long)]
    pub status: bool,
    /// Page access token.
    #[arg(long, env = "MESSENGER_ACCESS_TOKEN", hide_env_values = true)]
    pub access_token: Option<String>,
    /// App secret: when given, the calls carry `appsecret_proof`.
    #[arg(long, env = "MESSENGER_APP_SECRET", hide_env_values = true)]
    pub app_secret: Option<String>,
    #[arg(long, env = "MESSENGER_GRAPH_URL", default_value = DEFAULT_GRAPH_URL)]
    pub graph_url: String,
    /// Comma-separated webhook fields to subscribe [default: every field colloquy
    /// handles on the page's channel].
    #[arg(long)]
    pub fields: Option<String>,
    /// The pages file: subscribe each of its pages (or only --page) as itself.
    #[arg(long, env = "COLLOQUY_PAGES")]
    pub pages: Option<PathBuf>,
    /// Only this page of the pages file.
    #[arg(long, requires = "pages")]
    pub page: Option<String>,
}

#[derive(Debug, Args)]
pub struct ProfileArgs {
    #[command(subcommand)]
    pub action: ProfileAction,
    /// The pages file declaring each page's `[pages.profile]`.
    #[arg(long, env = "COLLOQUY_PAGES", global = true)]
    pub pages: Option<PathBuf>,
    /// Only this page of the pages file.
    #[arg(long, global = true)]
    pub page: Option<String>,
    #[arg(long, env = "MESSENGER_GRAPH_URL", default_value = DEFAULT_GRAPH_URL, global = true)]
    pub graph_url: String,
}

#[derive(Debug, Clone, Copy, Subcommand)]
pub enum ProfileAction {
    /// Print what differs between the file and each page's live profile.
    Diff,
    /// Set what differs, and delete what the file no longer declares.
    Apply,
}

impl ServeArgs {
    pub fn config(&self) -> Result<Config, crate::config::ConfigError> {
        Config::from_raw(RawConfig {
            verify_token: self.verify_token.clone(),
            app_secret: self.app_secret.clone(),
            access_token: self.access_token.clone(),
            graph_url: Some(self.graph_url.clone()),
            bind: Some(self.bind.clone()),
            admin_bind: Some(self.admin_bind.clone()),
            data_dir: Some(self.data_dir.clone()),
            webhook_path: Some(self.webhook_path.clone()),
            admin_token: self.admin_token.clone(),
            public_url: self.public_url.clone(),
            handover_app_id: self.handover_app_id.clone(),
            max_body_bytes: self.max_body_bytes,
            idle_timeout_secs: self.idle_timeout_secs,
            workers: self.workers,
            max_pending_events: self.max_pending_events,
            max_pending_replies: self.max_pending_replies,
            max_queue_delay_ms: self.max_queue_delay_ms,
            shutdown_timeout_secs: self.shutdown_timeout_secs,
            flow_timeout_secs: self.flow_timeout_secs,
            ack_deadline_ms: self.ack_deadline_ms,
            page_send_rate: self.page_send_rate,
            send_batch: self.send_batch,
            max_live_conversations: self.max_live_conversations,
            max_connections: self.max_connections,
            cache_mb: self.cache_mb,
            cache_max_mb: self.cache_max_mb,
            commit_linger_us: self.commit_linger_us,
            commit_linger_ops: self.commit_linger_ops,
            dedup_retention_hours: self.dedup_retention_hours,
            engine_cpu: self.engine_cpu.clone(),
            pages_file: self.pages.clone(),
        })
    }
}

/// `colloquy serve`: runs until SIGINT/SIGTERM.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = args.config()?;
    let flow = resolve_flow(&args.flow)?;
    log::info!("starting with flow `{}`", args.flow);
    let app = match &args.cluster {
        None => crate::start(config, flow).await?,
        Some(urls) => {
            let settings = crate::cluster::node::NodeSettings {
                urls: urls.clone(),
                node: args.node.clone().unwrap_or_else(host_name),
                partitions: args.partitions,
                lease_ttl: std::time::Duration::from_millis(args.lease_ms.max(300)),
            };
            crate::cluster::node::start_node(config, flow, settings).await?
        }
    };
    app.wait().await.context("server stopped with an error")
}

/// This machine's name, as a node name (characters a subject cannot hold become `-`).
fn host_name() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "colloquy".into());
    name.trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// Every conversation the running server lists, page after page.
async fn every_conversation(
    base: &str,
    token: &str,
    page: Option<&str>,
) -> anyhow::Result<Vec<ConversationSummary>> {
    let mut all = Vec::new();
    let first = match page {
        Some(page) => format!(
            "/admin/conversations?limit=1000&page={}",
            url_component(page)
        ),
        None => "/admin/conversations?limit=1000".to_string(),
    };
    let mut path = first.clone();
    loop {
        let page: ConversationListPage =
            serde_json::from_value(admin_get(base, token, &path).await?)?;
        all.extend(page.conversations);
        match page.next_cursor {
            Some(cursor) => path = format!("{first}&cursor={cursor}"),
            None => return Ok(all),
        }
    }
}

/// `colloquy inspect`: prints what it finds, from sled or from the running server.
pub async fn inspect(args: InspectArgs) -> anyhow::Result<String> {
    let source = open_source(&args)?;
    match &args.psid {
        None => {
            let page = args.page.as_deref();
            let list: Vec<ConversationSummary> = match &source {
                Source::Store(store) => inspect::list(store)?
                    .into_iter()
                    .filter(|c| page.is_none_or(|page| c.page_id == page))
                    .collect(),
                Source::Server { base, token } => every_conversation(base, token, page).await?,
            };
            Ok(if args.json {
                serde_json::to_string_pretty(&list)? + "\n"
            } else {
                inspect::render_list(&list)
            })
        }
        Some(psid) => {
            let doc: ConversationDocument = match &source {
                Source::Store(store) => {
                    inspect::document(store, psid, args.page.as_deref(), args.last)?
                }
                Source::Server { base, token } => {
                    let mut path = format!("/admin/conversations/{}", url_component(psid));
                    let mut query = Vec::new();
                    if let Some(page) = &args.page {
                        query.push(format!("page={}", url_component(page)));
                    }
                    if let Some(last) = args.last {
                        query.push(format!("last={last}"));
                    }
                    if !query.is_empty() {
                        path.push('?');
                        path.push_str(&query.join("&"));
                    }
                    serde_json::from_value(admin_get(base, token, &path).await?)?
                }
            };
            Ok(if args.json {
                serde_json::to_string_pretty(&doc)? + "\n"
            } else {
                inspect::render_document(&doc)
            })
        }
    }
}

enum Source {
    Store(Store),
    Server { base: String, token: String },
}

fn open_source(args: &InspectArgs) -> anyhow::Result<Source> {
    if !args.data_dir.exists() {
        bail!("no data directory at {}", args.data_dir.display());
    }
    match Store::open(&args.data_dir) {
        Ok(store) => Ok(Source::Store(store)),
        Err(StoreError::Locked { .. }) => {
            let base = args
                .admin_url
                .clone()
                .unwrap_or_else(|| format!("http://{}", args.admin_bind));
            let token = args.admin_token.clone().ok_or_else(|| {
                anyhow!(
                    "{} is held by a running server; set COLLOQUY_ADMIN_TOKEN (or --admin-token) to ask it",
                    args.data_dir.display()
                )
            })?;
            Ok(Source::Server {
                base: base.trim_end_matches('/').to_string(),
                token,
            })
        }
        Err(error) => Err(error.into()),
    }
}

async fn admin_get(base: &str, token: &str, path: &str) -> anyhow::Result<Value> {
    let mut response = awc::Client::new()
        .get(format!("{base}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| anyhow!("cannot reach the server at {base}: {e}"))?;
    let body: Value = response
        .json()
        .limit(64 * 1024 * 1024)
        .await
        .map_err(|e| anyhow!("unreadable answer from {base}: {e}"))?;
    if !response.status().is_success() {
        let message = body["error"].as_str().unwrap_or("no error message");
        bail!("server answered {}: {message}", response.status());
    }
    Ok(body)
}

/// The webhook fields an Instagram account is subscribed to: Instagram's singular names,
/// `messaging_seen` for reads, echoes within `messages`.
pub const INSTAGRAM_SUBSCRIBED_FIELDS: &str =
    "messages,messaging_postbacks,messaging_seen,messaging_referral,messaging_handover,message_reactions";

/// The pages file at `path`, checked (its flows too, as `serve` would).
fn load_pages(path: &std::path::Path) -> anyhow::Result<crate::pages::PageTable> {
    let default_flow = crate::flow::builtin::by_name("thanks").expect("built in");
    Ok(crate::pages::file::load(path, &default_flow)?)
}

/// Runs `work` for each page, printing each page's section as it comes; a failure on
/// one page does not stop the others, and fails the command at the end naming them.
async fn for_each_page<'t, F, Fut>(
    pages: Vec<&'t crate::pages::Page>,
    mut work: F,
) -> anyhow::Result<String>
where
    F: FnMut(&'t crate::pages::Page) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<String>>,
{
    let mut failed = Vec::new();
    for page in pages {
        match work(page).await {
            Ok(section) => print!("{section}"),
            Err(error) => {
                println!("page {}: failed: {error:#}", page.id);
                failed.push(page.id.clone());
            }
        }
    }
    if failed.is_empty() {
        Ok(String::new())
    } else {
        bail!("failed for page(s) {}", failed.join(", "))
    }
}

/// `colloquy cluster status`: each partition's lease holder.
pub async fn cluster(args: ClusterArgs) -> anyhow::Result<String> {
    let ClusterAction::Status = args.action;
    let urls = args.urls.as_deref().ok_or_else(|| {
        anyhow!("missing required setting COLLOQUY_NATS_URL (or the flag --cluster)")
    })?;
    let jetstream = crate::cluster::connect(urls).await?;
    let stream = crate::cluster::state_stream(&jetstream).await?;
    let beats = crate::cluster::ownership::heartbeats(&stream).await?;
    let table = crate::cluster::LeaseTable::new(
        jetstream,
        stream,
        "colloquy-cli",
        std::time::Duration::ZERO,
    );
    let holders = crate::cluster::holders(&table, args.partitions).await?;
    let events = crate::cluster::intake::events_stream(table.jetstream()).await?;
    let lags = crate::cluster::consumer::lags(&events, args.partitions).await;
    let now = crate::clock::now_ms();
    Ok(crate::cluster::describe_nodes(&beats, now)
        + "\n"
        + &crate::cluster::describe_holders(&holders, &lags, now))
}

/// `colloquy profile diff|apply [--page ID]`.
pub async fn profile(args: ProfileArgs) -> anyhow::Result<String> {
    let path = args.pages.as_deref().ok_or_else(|| {
        anyhow!("missing required setting COLLOQUY_PAGES (or the flag --pages): the pages file declaring the profiles")
    })?;
    let table = load_pages(path)?;
    let pages = crate::profile::pages_of(&table, args.page.as_deref())?;
    let graph = GraphClient::new(&args.graph_url, SUBSCRIBE_TIMEOUT);
    let apply = matches!(args.action, ProfileAction::Apply);
    let (graph, table) = (&graph, &table);
    for_each_page(pages, |page| async move {
        let outcome = crate::profile::run(graph, table, page, apply).await?;
        Ok(crate::profile::describe(page, &outcome, apply))
    })
    .await
}

/// `colloquy subscribe [--status]`: the page's webhook subscription; with a pages file,
/// each page's (or `--page`'s), made as that page.
pub async fn subscribe(args: SubscribeArgs) -> anyhow::Result<String> {
    if let Some(path) = &args.pages {
        return subscribe_pages(&args, path).await;
    }
    let fields = args
        .fields
        .clone()
        .unwrap_or_else(|| SUBSCRIBED_FIELDS.to_string());
    let token = args.access_token.filter(|t| !t.is_empty()).ok_or_else(|| {
        anyhow!("missing required setting MESSENGER_ACCESS_TOKEN (or the flag --access-token)")
    })?;
    let token = PageAuth::me(Secret::new(token), args.app_secret.map(Secret::new));
    let graph = GraphClient::new(&args.graph_url, SUBSCRIBE_TIMEOUT);
    if args.status {
        let apps = graph.subscribed_apps(&token).await;
        return Ok(describe_subscriptions(
            &apps.map_err(|e| graph_failure(&args.graph_url, e))?,
        ));
    }
    let answer = graph
        .subscribe_app(&token, &fields)
        .await
        .map_err(|e| graph_failure(&args.graph_url, e))?;
    Ok(subscribed(&answer, &fields))
}

fn subscribed(answer: &Value, fields: &str) -> String {
    if answer["success"] == Value::Bool(true) {
        format!("subscribed the page to: {fields}\n")
    } else {
        format!("Graph API answered: {answer}\n")
    }
}

/// `subscribe --pages FILE [--page ID] [--status]`: every page as itself, with its
/// channel's fields.
async fn subscribe_pages(args: &SubscribeArgs, path: &std::path::Path) -> anyhow::Result<String> {
    let table = load_pages(path)?;
    let pages = crate::profile::pages_of(&table, args.page.as_deref())?;
    let graph = GraphClient::new(&args.graph_url, SUBSCRIBE_TIMEOUT);
    let (graph, table) = (&graph, &table);
    for_each_page(pages, |page| async move {
        let auth = PageAuth::of(
            &page.id,
            page.access_token.clone(),
            table.app(&page.app).map(|app| app.secret.clone()),
        );
        let heading = format!("page {} ({}):\n", page.id, page.channel.name());
        if args.status {
            let apps = graph.subscribed_apps(&auth).await;
            let apps = apps.map_err(|e| graph_failure(&args.graph_url, e))?;
            return Ok(heading + &describe_subscriptions(&apps));
        }
        let fields = args.fields.clone().unwrap_or_else(|| match page.channel {
            crate::event::Channel::Messenger => SUBSCRIBED_FIELDS.to_string(),
            crate::event::Channel::Instagram => INSTAGRAM_SUBSCRIBED_FIELDS.to_string(),
        });
        let answer = graph.subscribe_app(&auth, &fields).await;
        let answer = answer.map_err(|e| graph_failure(&args.graph_url, e))?;
        Ok(heading + &subscribed(&answer, &fields))
    })
    .await
}

/// A failed Graph call as an operator reads it: Meta's own error when it sent one.
fn graph_failure(graph_url: &str, error: CallError) -> anyhow::Error {
    match (&error, error.api_error()) {
        (CallError::Network(_) | CallError::Timeout(_), _) => {
            anyhow!("cannot reach the Graph API at {graph_url}: {error}")
        }
        (_, Some(api)) => anyhow!("Graph API error {api}"),
        (_, None) => anyhow!("the Graph API call failed: {error}"),
    }
}

fn describe_subscriptions(value: &Value) -> String {
    let Some(apps) = value["data"].as_array() else {
        return format!("Graph API answered: {value}\n");
    };
    if apps.is_empty() {
        return "the page is not subscribed to any app\n".into();
    }
    let mut out = String::new();
    for app in apps {
        let name = app["name"].as_str().unwrap_or("?");
        let id = app["id"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| app["id"].to_string());
        let fields: Vec<&str> = app["subscribed_fields"]
            .as_array()
            .map(|f| f.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        out.push_str(&format!("app {name} ({id}): {}\n", fields.join(", ")));
    }
    out
}
