//! The public listener served on the engine's own thread: accepts connections and
//! serves each with actix-http's HTTP/1 service on the thread that runs the actors.
//!
//! With actix-web's `HttpServer` every POST is read on an HTTP worker thread, handed to
//! the actors' thread, and its answer handed back, waking both threads for each message.
//! Served here (`COLLOQUY_WORKERS=0`), the request, its turn and its answer run on one
//! thread: less CPU per reply at moderate load, but a lower ceiling, since the actors'
//! thread also parses every request (docs/performance.md, "The webhook on the engine's
//! thread"); so by default it serves only while `steering` says the engine's thread has
//! time to spare, sharing its socket with HTTP workers. This module keeps what `HttpServer` gave
//! the webhook: at most `max_connections` connections served at once (more wait in the
//! kernel's accept queue; `connections` ends kept-alive ones at the bound), the same
//! timeouts, and a graceful stop (no new connection, idle ones closed, requests in
//! flight finished within the shutdown timeout, the rest dropped). It knows nothing of
//! routes: it serves the `App` it is given, and it must not block, since it shares the
//! actors' thread.

use std::fmt::Debug;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix_http::body::MessageBody;
use actix_http::error::DispatchError;
use actix_http::{HttpService, Request, Response};
use actix_service::{map_config, IntoServiceFactory, Service, ServiceFactory, ServiceFactoryExt};
use actix_web::dev::AppConfig;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::connections::OpenConnection;
use super::steering::{Placement, Side};
use crate::engine::metrics::Metrics;

/// Connections that may wait in the kernel's accept queue (`HttpServer`'s default).
const ACCEPT_BACKLOG: u32 = 1024;
/// How long a request's head may take to arrive (`HttpServer`'s default).
const CLIENT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a closing connection may take to shut down (`HttpServer`'s default).
const CLIENT_DISCONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause after a failed accept (out of file descriptors, say) before the next one, so a
/// lasting failure does not spin the actors' thread.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// How the listener serves its connections.
#[derive(Debug, Clone)]
pub struct ListenerSettings {
    /// Connections served at once; more wait to be accepted.
    pub max_connections: usize,
    /// How long a graceful stop waits for requests in flight.
    pub shutdown_timeout: Duration,
    /// With HTTP workers sharing the socket (`steering`): new connections are accepted
    /// here only while this says `Side::Engine`.
    pub placement: Option<Placement>,
    /// Counts each accepted connection (`colloquy_webhook_connections_total`).
    pub metrics: Option<Arc<Metrics>>,
}

/// Stops a listener started by `serve_on_this_thread`; it can be sent to any thread.
#[derive(Debug, Clone)]
pub struct ListenerHandle {
    stop: watch::Sender<bool>,
    stopped: watch::Receiver<bool>,
}

impl ListenerHandle {
    /// Stops accepting, closes idle connections, lets requests in flight finish within
    /// the shutdown timeout, and returns once every connection is closed.
    pub async fn stop(&self) {
        self.stop.send_replace(true);
        let mut stopped = self.stopped.clone();
        // An error means the listener's task ended (and dropped its side): it is stopped.
        let _ = stopped.wait_for(|stopped| *stopped).await;
    }
}

/// A listener bound and serving: its address, its stop handle and its task, which ends
/// with `Ok` once stopped.
pub type Listening = (
    SocketAddr,
    ListenerHandle,
    actix_rt::task::JoinHandle<io::Result<()>>,
);

/// Serves `app` on this thread's runtime (it must run inside an actix system), accepting
/// from `listener` (from `bind`; HTTP workers may accept from a clone of it too).
pub fn serve_on_this_thread<I, S, B>(
    listener: std::net::TcpListener,
    app: I,
    settings: ListenerSettings,
) -> io::Result<Listening>
where
    I: IntoServiceFactory<S, Request>,
    S: ServiceFactory<Request, Config = AppConfig> + 'static,
    S::Error: Into<actix_web::Error> + 'static,
    S::InitError: Debug,
    S::Response: Into<Response<B>> + 'static,
    S::Service: 'static,
    <S::Service as Service<Request>>::Future: 'static,
    B: MessageBody + 'static,
{
    let listener = TcpListener::from_std(listener)?;
    let addr = listener.local_addr()?;
    let (stop, stop_seen) = watch::channel(false);
    let (stopped_tx, stopped) = watch::channel(false);
    let http = http_service(app.into_factory(), addr, stop_seen.clone());
    let task = actix_rt::spawn(async move {
        let served = serve(listener, http, settings, stop_seen).await;
        stopped_tx.send_replace(true);
        served
    });
    Ok((addr, ListenerHandle { stop, stopped }, task))
}

/// A listening socket on `bind` with `HttpServer`'s backlog and address reuse (a restart
/// binds again at once while the last run's connections linger in TIME_WAIT). It must be
/// called inside the runtime; the socket is non-blocking.
pub fn bind(bind: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = if bind.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(bind)?;
    socket.listen(ACCEPT_BACKLOG)?.into_std()
}

/// actix-http's HTTP/1 service for `factory` (the `App`), over a TCP connection, with
/// `HttpServer`'s timeouts; at `stop`, idle kept-alive connections close and busy ones
/// after their answer.
fn http_service<S, B>(
    factory: S,
    addr: SocketAddr,
    stop: watch::Receiver<bool>,
) -> impl ServiceFactory<TcpStream, Config = (), Response = (), Error = DispatchError, InitError = ()>
where
    S: ServiceFactory<Request, Config = AppConfig> + 'static,
    S::Error: Into<actix_web::Error> + 'static,
    S::InitError: Debug,
    S::Response: Into<Response<B>> + 'static,
    S::Service: 'static,
    <S::Service as Service<Request>>::Future: 'static,
    B: MessageBody + 'static,
{
    HttpService::build()
        .client_request_timeout(CLIENT_REQUEST_TIMEOUT)
        .client_disconnect_timeout(CLIENT_DISCONNECT_TIMEOUT)
        .local_addr(addr)
        .graceful_shutdown_signal(move || {
            let mut stop = stop.clone();
            async move {
                let _ = stop.wait_for(|stop| *stop).await;
            }
        })
        .finish(map_config(
            factory.map_err(|error| error.into().error_response()),
            |_| AppConfig::default(),
        ))
        .tcp()
}

/// Accepts and serves connections until told to stop, then drains them.
async fn serve<H>(
    listener: TcpListener,
    http: H,
    settings: ListenerSettings,
    stop: watch::Receiver<bool>,
) -> io::Result<()>
where
    H: ServiceFactory<TcpStream, Config = (), InitError = ()>,
    H::Service: 'static,
{
    let service = Rc::new(
        http.new_service(())
            .await
            .map_err(|()| io::Error::other("the webhook's HTTP service could not be built"))?,
    );
    let mut connections = JoinSet::new();
    accept_until_stopped(&listener, &service, &mut connections, &settings, stop).await;
    drop(listener);
    drain(connections, settings.shutdown_timeout).await;
    Ok(())
}

/// The accept loop: a connection is accepted only while fewer than `max_connections`
/// are served (and, steered, while new connections are this thread's), and each is
/// served as a task of its own on this thread.
async fn accept_until_stopped<T>(
    listener: &TcpListener,
    service: &Rc<T>,
    connections: &mut JoinSet<()>,
    settings: &ListenerSettings,
    mut stop: watch::Receiver<bool>,
) where
    T: Service<TcpStream> + 'static,
{
    let mut side = settings.placement.as_ref().map(Placement::watch);
    loop {
        let has_room = connections.len() < settings.max_connections.max(1);
        let ours = side
            .as_mut()
            .is_none_or(|side| *side.borrow_and_update() == Side::Engine);
        tokio::select! {
            biased;
            _ = stop.wait_for(|stop| *stop) => return,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = moved(&mut side), if side.is_some() => {}
            accepted = listener.accept(), if has_room && ours => match accepted {
                Ok((stream, _)) => {
                    if let Some(metrics) = &settings.metrics {
                        metrics.webhook_connection(Side::Engine.name());
                    }
                    // Counted before its task first runs, so a response on another
                    // connection already sees it (`connections::should_close`).
                    let open = OpenConnection::opened();
                    let service = Rc::clone(service);
                    connections.spawn_local(async move {
                        let _open = open;
                        // A connection's own failure (a bad request, a timeout) was
                        // answered or logged by actix-http; it ends only that connection.
                        let _ = service.call(stream).await;
                    });
                }
                Err(error) => {
                    log::warn!("webhook listener: cannot accept a connection: {error}");
                    actix_rt::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            },
        }
    }
}

/// Resolves when the side taking new connections moves (never without a side).
async fn moved(side: &mut Option<watch::Receiver<Side>>) {
    match side {
        Some(side) => {
            if side.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending::<()>().await,
    }
}

/// Waits for the connections of a stopped listener to finish (idle ones close at once
/// on the graceful signal), then drops what is left after `timeout`.
async fn drain(mut connections: JoinSet<()>, timeout: Duration) {
    let finished = async { while connections.join_next().await.is_some() {} };
    if actix_rt::time::timeout(timeout, finished).await.is_err() {
        log::warn!(
            "webhook listener: {} connections still open {timeout:?} after the stop; closing them",
            connections.len()
        );
        connections.abort_all();
        while connections.join_next().await.is_some() {}
    }
}
