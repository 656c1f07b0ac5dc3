//! The startup seam: wires store, sender, supervisor and the HTTP server together.
//!
//! `start` is used by the binary and by every integration test, so tests run the real
//! engine. It must be called inside an actix system (`#[actix_web::main]`/`::test`).
//! It owns no logic of its own beyond construction and orderly shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use actix::prelude::*;
use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpServer};
use thiserror::Error;

use crate::actions::{self, ActionState};
use crate::admin::{self, AdminState};
use crate::config::Config;
use crate::engine::affinity::{self, pin_engine_thread, AffinityError, EnginePin};
use crate::engine::conversation::ConversationEnv;
use crate::engine::load::Load;
use crate::engine::metrics::Metrics;
use crate::engine::retention::{self, Sweeper};
use crate::engine::sender::{OutboundSender, Shutdown as SenderShutdown};
use crate::engine::supervisor::{LiveConversations, Shutdown, Supervisor};
use crate::engine::timers::{self, TimerWheel};
use crate::flow::FlowHandle;
use crate::inspector;
use crate::pages::{PageTable, Pages, PagesError};
use crate::store::{fold_log_into_snapshot, Store, StoreError, StoreTuning};

/// How long shutdown waits for actors to let go of the store.
const RELEASE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
use crate::webhook::WebhookState;
use public_listener::{serve_webhook, WebhookStop};

mod public_listener;

#[derive(Debug, Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Pages(#[from] PagesError),
    #[error(transparent)]
    Affinity(#[from] AffinityError),
    #[error("no pages to serve: set COLLOQUY_PAGES, or MESSENGER_APP_SECRET, MESSENGER_VERIFY_TOKEN and MESSENGER_ACCESS_TOKEN")]
    NoPages,
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// What a cluster node plugs into the engine; the default is a single node.
#[derive(Default, Clone)]
pub struct ClusterHooks {
    /// Every turn and send outcome replicated (fenced) before the local store applies
    /// it; also says which conversations this node may act for (timers, sends, turns).
    pub replicator: Option<Arc<dyn crate::store::Replicator>>,
    /// Where the webhook hands verified events instead of the local engine.
    pub intake: Option<Arc<dyn crate::webhook::EventIntake>>,
    /// Where the conversations this node does not serve are served: the admin API
    /// forwards requests about them there.
    pub home: Option<Arc<dyn crate::admin::forward::ConversationHome>>,
}

/// The engine's actors and shared state, for a cluster node to feed and steer.
#[derive(Clone)]
pub struct EngineHandles {
    pub store: Store,
    pub supervisor: Addr<Supervisor>,
    pub sender: Addr<OutboundSender>,
    pub load: Arc<Load>,
    pub metrics: Arc<Metrics>,
    pub pages: Pages,
}

/// Work to finish once the webhook stopped taking events and before the engine's actors
/// stop (a cluster node: its partition consumers stop and its leases are given back).
type BeforeStop = Box<dyn FnOnce() -> futures_util::future::LocalBoxFuture<'static, ()>>;

/// A running colloquy: the HTTP server plus its actors.
pub struct RunningApp {
    addr: SocketAddr,
    handle: WebhookStop,
    server: actix_rt::task::JoinHandle<std::io::Result<()>>,
    admin_addr: SocketAddr,
    admin_handle: ServerHandle,
    admin_server: actix_rt::task::JoinHandle<std::io::Result<()>>,
    store: Store,
    data_dir: std::path::PathBuf,
    supervisor: Addr<Supervisor>,
    sender: Addr<OutboundSender>,
    timers: Addr<TimerWheel>,
    sweeper: Addr<Sweeper>,
    load: Arc<Load>,
    metrics: Arc<Metrics>,
    pages: Pages,
    before_stop: Option<BeforeStop>,
    engine_pin: EnginePin,
}

impl RunningApp {
    /// The engine's handles (a cluster node feeds its partitions' events through them).
    pub(crate) fn engine(&self) -> EngineHandles {
        EngineHandles {
            store: self.store.clone(),
            supervisor: self.supervisor.clone(),
            sender: self.sender.clone(),
            load: self.load.clone(),
            metrics: self.metrics.clone(),
            pages: self.pages.clone(),
        }
    }

    /// Runs `work` when the app stops, after the webhook stopped and before the actors do.
    pub(crate) fn before_stop(&mut self, work: BeforeStop) {
        self.before_stop = Some(work);
    }

    /// The address actually bound (port 0 in the config becomes a real port here).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The address of the admin listener.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// Tells whether the engine's store has closed (for the crate's own tests, which
    /// remove a data directory only once nothing writes to it).
    #[cfg(feature = "test-support")]
    pub fn store_release(&self) -> crate::store::StoreRelease {
        self.store.release_watch()
    }

    /// Moves the webhook's new connections to `side` as its steering task would (for the
    /// crate's own tests, whose steering never moves by itself); `false` when the webhook
    /// is not steered.
    #[cfg(feature = "test-support")]
    pub async fn move_webhook(&self, side: crate::webhook::steering::Side) -> bool {
        self.handle.move_to(side).await
    }

    /// How many conversation actors are alive right now.
    pub async fn live_conversations(&self) -> usize {
        self.supervisor.send(LiveConversations).await.unwrap_or(0)
    }

    /// Stops taking requests, lets in-flight requests finish, stops the actors, flushes
    /// the store and waits until its files are released.
    pub async fn stop(mut self) -> std::io::Result<()> {
        self.load.begin_shutdown();
        // Event streams end now, or they would hold the admin listener's stop.
        self.store.changes().close();
        self.handle.stop().await;
        if let Some(work) = self.before_stop.take() {
            work().await;
        }
        self.admin_handle.stop(true).await;
        self.finish().await
    }

    /// Runs until SIGINT or SIGTERM, then shuts down like `stop`.
    pub async fn wait(self) -> std::io::Result<()> {
        shutdown_signal().await;
        log::info!("shutdown requested: refusing new webhooks, draining");
        self.stop().await
    }

    async fn finish(self) -> std::io::Result<()> {
        // First: the threads started from here while stopping (the log's fold) are not
        // to inherit the engine's CPU.
        self.engine_pin.restore();
        let served = self
            .server
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        let _ = self.admin_server.await;
        // Conversations finish the event in hand; unhandled events stay in the journal
        // and unsent replies in the outbox, both resumed at the next start.
        let _ = self.timers.send(timers::Stop).await;
        let _ = self.sweeper.send(retention::Stop).await;
        let _ = self.supervisor.send(Shutdown).await;
        let _ = self.sender.send(SenderShutdown).await;
        if let Err(error) = self.store.flush().await {
            log::error!("final flush failed: {error}");
        }
        let release = self.store.release_watch();
        drop(self.store);
        let deadline = std::time::Instant::now() + RELEASE_TIMEOUT;
        while !release.is_released() && std::time::Instant::now() < deadline {
            actix_rt::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        if release.is_released() {
            fold_log_for_next_start(self.data_dir).await;
        } else {
            log::warn!("the store was still in use {RELEASE_TIMEOUT:?} after shutdown");
        }
        served
    }
}

/// Folds the closed store's log into sled's snapshot (`store::fold_log_into_snapshot`),
/// so the next start does not replay this run's writes. A failure costs only that: the
/// next start replays the log as it always could.
async fn fold_log_for_next_start(data_dir: std::path::PathBuf) {
    let folded = actix_web::web::block(move || fold_log_into_snapshot(&data_dir))
        .await
        .map_err(|error| error.to_string())
        .and_then(|folded| folded.map_err(|error| error.to_string()));
    match folded {
        Ok(took) => log::info!("store log folded into a snapshot in {took:?}"),
        Err(error) => log::warn!("could not fold the store's log into a snapshot: {error}"),
    }
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use actix_rt::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = actix_rt::signal::ctrl_c() => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(error) => {
                log::warn!("cannot listen for SIGTERM ({error}); only Ctrl-C stops the server");
                let _ = actix_rt::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = actix_rt::signal::ctrl_c().await;
    }
}

/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use colloquy::config::{Config, RawConfig};
/// let config = Config::from_raw(RawConfig {
///     verify_token: Some("verify".into()),
///     app_secret: Some("app-secret".into()),
///     access_token: Some("page-token".into()),
///     ..RawConfig::default()
/// })?;
/// let flow = colloquy::flow::builtin::by_name("echo").expect("built in");
/// let app = colloquy::start(config, flow).await?;
/// println!("webhook on port {}", app.port());
/// app.wait().await?; // until SIGTERM or Ctrl-C
/// # Ok(())
/// # }
/// ```
///
/// Opens the store, starts the sender and supervisor (which resume unsent replies and
/// unhandled events), and starts serving the webhook and admin endpoints.
pub async fn start(config: Config, flow: FlowHandle) -> Result<RunningApp, StartError> {
    start_with(config, flow, ClusterHooks::default()).await
}

/// `start`, with every turn and send outcome replicated through `replicator` before the
/// local store applies it.
#[cfg_attr(not(any(test, feature = "test-support")), allow(dead_code))] // tests use it
pub async fn start_replicated(
    config: Config,
    flow: FlowHandle,
    replicator: Option<Arc<dyn crate::store::Replicator>>,
) -> Result<RunningApp, StartError> {
    let hooks = ClusterHooks {
        replicator,
        ..ClusterHooks::default()
    };
    start_with(config, flow, hooks).await
}

/// `start` with a cluster node's hooks: how a cluster node runs the engine.
pub async fn start_with(
    config: Config,
    flow: FlowHandle,
    hooks: ClusterHooks,
) -> Result<RunningApp, StartError> {
    let ClusterHooks {
        replicator,
        intake,
        home,
    } = hooks;
    let config = Arc::new(config);
    // A broken pages file, or a CPU the process may not use, stops the start before
    // anything is opened.
    let pages = pages_of(&config, &flow)?;
    affinity::check(config.engine_cpu)?;
    // Before any actor starts: a port in use ends the start with its error alone.
    let (webhook_listener, admin_listener) = bind_listeners(&config)?;
    let store = Store::open_tuned(
        &config.data_dir,
        StoreTuning {
            cache: config.cache,
            linger: config.commit_linger,
        },
    )?;
    let load = Arc::new(
        Load::new(config.max_pending_events, config.max_pending_replies)
            .with_max_queue_delay(config.max_queue_delay),
    );
    let metrics = Arc::new(
        Metrics::new(load.clone(), store.commit_stats())
            .with_store_disk_size(store.disk_size_probe()),
    );
    let sender = OutboundSender::new(
        store.clone(),
        load.clone(),
        metrics.clone(),
        &config.graph_url,
        pages.clone(),
        config.sender.clone(),
    )
    .with_replicator(replicator.clone())
    .start();
    let env = Arc::new(ConversationEnv {
        store: store.clone(),
        load: load.clone(),
        metrics: metrics.clone(),
        pages: pages.clone(),
        sender: sender.clone(),
        flow_timeout: config.flow_timeout,
        idle_timeout: config.idle_timeout,
        handover_app_id: config.handover_app_id.clone(),
        replicator: replicator.clone(),
    });
    let supervisor = Supervisor::new(env, config.max_live_conversations).start();
    let timers = TimerWheel::new(store.clone(), supervisor.clone(), load.clone())
        .firing_only(replicator.clone().map(owned_timers))
        .start();
    let sweeper = Sweeper::new(store.clone(), config.dedup_retention).start();
    let webhook_state = WebhookState {
        config: config.clone(),
        store: store.clone(),
        supervisor: supervisor.clone(),
        load: load.clone(),
        metrics: metrics.clone(),
        pages: pages.clone(),
        unknown_pages: Default::default(),
        intake,
    };
    let webhook_metrics = metrics.clone();
    let app_pages = pages.clone();
    let admin_state = AdminState {
        token: config.admin_token.clone(),
        store: store.clone(),
        metrics,
        sessions: Default::default(),
        pages: pages.clone(),
        home,
    };
    let action_state = ActionState {
        admin: admin_state.clone(),
        supervisor: supervisor.clone(),
        pages: pages.clone(),
        load: load.clone(),
        replicator: replicator.clone(),
    };
    if config.pages_file.is_some() {
        actix_rt::spawn(reload_on_sighup(pages));
    }
    let (addr, handle, server) = serve_webhook(&config, webhook_state, webhook_listener)?;
    let (admin_addr, admin_handle, admin_server) =
        serve_admin(&config, admin_state, action_state, admin_listener)?;
    log::info!(
        "colloquy listening on http://{addr}{} (admin on http://{admin_addr}, graph API {})",
        config.webhook_path,
        config.graph_url
    );
    let admin_server = actix_rt::spawn(admin_server);
    // Last: threads inherit the affinity of the thread that starts them, so the engine's
    // thread is pinned after the servers' tasks, spawned before, have started theirs.
    let engine_pin = pin_engine_thread(config.engine_cpu, webhook_metrics.clone());
    Ok(RunningApp {
        addr,
        handle,
        server,
        admin_addr,
        admin_handle,
        admin_server,
        store,
        data_dir: config.data_dir.clone(),
        supervisor,
        sender,
        timers,
        sweeper,
        load,
        metrics: webhook_metrics,
        pages: app_pages,
        before_stop: None,
        engine_pin,
    })
}

/// The timers a cluster node fires: those of the conversations it holds.
fn owned_timers(replicator: Arc<dyn crate::store::Replicator>) -> crate::store::TimerFilter {
    Arc::new(move |timer: &crate::store::TimerRecord| {
        let key = crate::store::ConversationKey::new(timer.page_id.clone(), timer.psid.clone());
        replicator.owns(timer.channel, &key)
    })
}

/// The pages of the pages file, or the one page of the `MESSENGER_*` settings.
fn pages_of(config: &Config, flow: &FlowHandle) -> Result<Pages, StartError> {
    if let Some(path) = &config.pages_file {
        let pages = Pages::load(path, flow.clone())?;
        log::info!(
            "serving {} page(s) of {}",
            pages.current().pages().len(),
            path.display()
        );
        return Ok(pages);
    }
    match (
        &config.app_secret,
        &config.verify_token,
        &config.access_token,
    ) {
        (Some(secret), Some(verify), Some(token)) => Ok(Pages::fixed(PageTable::single(
            secret.clone(),
            verify.clone(),
            token.clone(),
            flow.clone(),
        ))),
        _ => Err(StartError::NoPages),
    }
}

/// `SIGHUP` re-reads the pages file, as `POST /admin/pages/reload` does.
async fn reload_on_sighup(pages: Pages) {
    #[cfg(unix)]
    {
        use actix_rt::signal::unix::{signal, SignalKind};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            log::warn!("cannot listen for SIGHUP; reload the pages file through the admin API");
            return;
        };
        while hangups.recv().await.is_some() {
            match pages.reload() {
                Ok(summary) => log::info!(
                    "SIGHUP: pages file reloaded: {} page(s), added {:?}, removed {:?}, changed {:?}",
                    summary.pages.len(),
                    summary.added,
                    summary.removed,
                    summary.changed
                ),
                Err(error) => log::error!(
                    "SIGHUP: pages file not reloaded; the running configuration is kept: {error}"
                ),
            }
        }
    }
    #[cfg(not(unix))]
    drop(pages);
}

type Served = (SocketAddr, ServerHandle, actix_web::dev::Server);

fn bind_error(addr: SocketAddr) -> impl FnOnce(std::io::Error) -> StartError {
    move |source| StartError::Bind { addr, source }
}

/// The webhook's and the admin listener's sockets, bound.
fn bind_listeners(
    config: &Config,
) -> Result<(std::net::TcpListener, std::net::TcpListener), StartError> {
    let webhook = crate::webhook::listener::bind(config.bind).map_err(bind_error(config.bind))?;
    let admin =
        std::net::TcpListener::bind(config.admin_bind).map_err(bind_error(config.admin_bind))?;
    Ok((webhook, admin))
}

/// The operator's listener (loopback by default): `/admin` for `colloquy inspect`.
fn serve_admin(
    config: &Config,
    state: AdminState,
    actions: ActionState,
    listener: std::net::TcpListener,
) -> Result<Served, StartError> {
    let server = HttpServer::new(move || {
        App::new()
            .wrap(actix_web::middleware::from_fn(
                admin::forward::to_the_holder,
            ))
            .app_data(web::Data::new(state.clone()))
            .app_data(web::Data::new(actions.clone()))
            .configure(admin::configure)
            .configure(actions::configure)
            .configure(inspector::configure)
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(config.shutdown_timeout.as_secs())
    .listen(listener)
    .map_err(bind_error(config.admin_bind))?;
    let addr = server.addrs().first().copied().unwrap_or(config.admin_bind);
    let server = server.run();
    Ok((addr, server.handle(), server))
}
