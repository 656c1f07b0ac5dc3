//! The public listener: the webhook served on the threads `Config::webhook_threads` says
//! (the engine's own thread, HTTP workers, or both steered by `webhook::steering`), and
//! how it stops. It builds the webhook's `App` for each thread and ends a connection after
//! a response when its thread is at its connection bound or, steered, no longer takes new
//! connections. It must not: route events or know the actors (the webhook's handlers do).

use std::net::SocketAddr;
use std::sync::Arc;

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpServer};

use super::{bind_error, StartError};
use crate::config::{Config, WebhookThreads};
use crate::engine::metrics::Metrics;
use crate::webhook::listener::{ListenerHandle, ListenerSettings};
use crate::webhook::steering::{self, Placement, Side};
use crate::webhook::{self, WebhookState};

/// The public listener: the webhook only, on the threads `Config::webhook_threads` says.
pub(super) fn serve_webhook(
    config: &Config,
    state: WebhookState,
    listener: std::net::TcpListener,
) -> Result<(SocketAddr, WebhookStop, ServerTask), StartError> {
    let threads = config.webhook_threads();
    let steered = matches!(threads, WebhookThreads::Steered(_));
    let placement = Placement::new(Side::Engine);
    let (load, metrics) = (state.load.clone(), state.metrics.clone());
    let app = WebhookApp {
        path: config.webhook_path.clone(),
        per_thread: config.max_connections,
        state,
        placement: steered.then(|| placement.clone()),
    };
    let addr = listener.local_addr().map_err(bind_error(config.bind))?;
    let on_the_engine = |listener| {
        let settings = ListenerSettings {
            max_connections: config.max_connections,
            shutdown_timeout: config.shutdown_timeout,
            placement: steered.then(|| placement.clone()),
            metrics: Some(metrics.clone()),
        };
        webhook::listener::serve_on_this_thread(listener, app.build(Side::Engine), settings)
            .map_err(bind_error(config.bind))
    };
    let on_workers = |listener, workers| {
        let app = app.clone();
        serve_on_workers(config, listener, workers, metrics.clone(), move || {
            app.build(Side::Workers)
        })
    };
    match threads {
        WebhookThreads::Engine => {
            metrics.set_webhook_threads(Side::Engine.name(), false);
            let (_, handle, task) = on_the_engine(listener)?;
            Ok((addr, WebhookStop::Engine(handle), task))
        }
        WebhookThreads::Workers(workers) => {
            let (handle, task) = on_workers(listener, workers)?;
            Ok((addr, WebhookStop::Workers(handle), task))
        }
        WebhookThreads::Steered(workers) => {
            // Both accept from one socket; the steering task lets one of them at a time.
            let shared = listener.try_clone().map_err(bind_error(config.bind))?;
            let (workers, workers_task) = on_workers(shared, workers)?;
            let (_, engine, engine_task) = on_the_engine(listener)?;
            let steering = actix_rt::spawn(steering::steer(
                placement.clone(),
                config.webhook_steering,
                load,
                workers.clone(),
                metrics.clone(),
            ));
            let stop = WebhookStop::Steered {
                workers,
                engine,
                steering,
                placement,
                metrics,
            };
            Ok((addr, stop, both(workers_task, engine_task)))
        }
    }
}

/// What builds the webhook's `App` on each thread that serves it.
#[derive(Clone)]
struct WebhookApp {
    path: String,
    per_thread: usize,
    state: WebhookState,
    /// Steered: which threads take new connections now.
    placement: Option<Placement>,
}

impl WebhookApp {
    /// The `App` for the threads of `served_by`. A response ends its connection when its
    /// thread serves as many connections as it may (`webhook::connections`), or, steered,
    /// when new connections now go to the other side (the client's next connection is
    /// then accepted there).
    fn build(
        &self,
        served_by: Side,
    ) -> App<
        impl actix_web::dev::ServiceFactory<
            actix_web::dev::ServiceRequest,
            Config = (),
            Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
            Error = actix_web::Error,
            InitError = (),
        >,
    > {
        let (placement, per_thread) = (self.placement.clone(), self.per_thread);
        App::new()
            .wrap_fn(move |request, service| {
                let served = actix_web::dev::Service::call(service, request);
                let placement = placement.clone();
                async move {
                    let mut response = served.await?;
                    let moved_away = placement.is_some_and(|p| p.current() != served_by);
                    if moved_away || webhook::connections::should_close(per_thread) {
                        response
                            .response_mut()
                            .head_mut()
                            .set_connection_type(actix_web::http::ConnectionType::Close);
                    }
                    Ok(response)
                }
            })
            .app_data(web::Data::new(self.state.clone()))
            .configure(webhook::configure(&self.path))
    }
}

/// actix-web's HTTP workers serving `app` from `listener`.
fn serve_on_workers<F, I, S, B>(
    config: &Config,
    listener: std::net::TcpListener,
    workers: usize,
    metrics: Arc<Metrics>,
    app: F,
) -> Result<(ServerHandle, ServerTask), StartError>
where
    F: Fn() -> I + Send + Clone + 'static,
    I: actix_service::IntoServiceFactory<S, actix_http::Request>,
    S: actix_service::ServiceFactory<actix_http::Request, Config = actix_web::dev::AppConfig>
        + 'static,
    S::Error: Into<actix_web::Error> + 'static,
    S::InitError: std::fmt::Debug,
    S::Response: Into<actix_http::Response<B>> + 'static,
    B: actix_web::body::MessageBody + 'static,
{
    // At the bound a response ends its connection (`webhook::connections`).
    let server = HttpServer::new(app)
        .workers(workers)
        .max_connections(config.max_connections)
        .on_connect(move |connection, data| {
            webhook::connections::count_connection(connection, data);
            metrics.webhook_connection(Side::Workers.name());
        })
        // Signals are ours (see `wait`): the webhook must answer 503 while draining.
        .disable_signals()
        .shutdown_timeout(config.shutdown_timeout.as_secs())
        .listen(listener)
        .map_err(bind_error(config.bind))?
        .run();
    let handle = server.handle();
    Ok((handle, actix_rt::spawn(server)))
}

/// A listener's task: ends once the listener stopped.
pub(super) type ServerTask = actix_rt::task::JoinHandle<std::io::Result<()>>;

/// One task for two listeners: ends once both stopped, with the first error.
fn both(first: ServerTask, second: ServerTask) -> ServerTask {
    actix_rt::spawn(async move {
        let (first, second) = futures_util::future::join(first, second).await;
        first.map_err(std::io::Error::other)??;
        second.map_err(std::io::Error::other)?
    })
}

/// Stops the webhook's listener, whichever threads serve it.
pub(super) enum WebhookStop {
    Workers(ServerHandle),
    Engine(ListenerHandle),
    Steered {
        workers: ServerHandle,
        engine: ListenerHandle,
        steering: actix_rt::task::JoinHandle<()>,
        // For the crate's own tests, which move the side themselves (`move_to`).
        #[cfg_attr(not(feature = "test-support"), allow(dead_code))]
        placement: Placement,
        #[cfg_attr(not(feature = "test-support"), allow(dead_code))]
        metrics: Arc<Metrics>,
    },
}

impl WebhookStop {
    /// Stops taking connections and waits for the ones open to finish (within the
    /// shutdown timeout).
    pub(super) async fn stop(&self) {
        match self {
            WebhookStop::Workers(handle) => handle.stop(true).await,
            WebhookStop::Engine(handle) => handle.stop().await,
            WebhookStop::Steered {
                workers,
                engine,
                steering,
                ..
            } => {
                // Nothing resumes the workers' accept loop once it is stopped.
                steering.abort();
                futures_util::future::join(workers.stop(true), engine.stop()).await;
            }
        }
    }

    /// Moves a steered webhook's new connections to `side`; `false` when not steered.
    #[cfg(feature = "test-support")]
    pub(super) async fn move_to(&self, side: Side) -> bool {
        let WebhookStop::Steered {
            workers,
            placement,
            metrics,
            ..
        } = self
        else {
            return false;
        };
        steering::move_to(side, placement, workers, metrics).await;
        true
    }
}
