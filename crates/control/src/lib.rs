//! switchboard's control plane: a REST API over a running [`Switch`].
//!
//! - [`native`]: the native API under `/api/v1` (tables, entries, batches, default actions,
//!   ports, pipeline), JSON in and out;
//! - [`compat::p4cf`]: the p4containerflow controller's endpoints (`/addForward`,
//!   `/updateForward`, ...), so its scripts run unchanged;
//! - [`compat::c4bmv2`]: the ECMP-ER controller's `PUT /add/...`, `/install`, `/neigh/...`
//!   paths (plain text), and the native `/api/v1/ecmper/...` for the same operations;
//! - [`iptfs`]: the `iptfs` stage's SA counters at `GET /api/v1/iptfs`;
//! - [`metrics`]: `GET /metrics` in the Prometheus text format;
//! - [`client`]: a blocking client for all of the above (used by `switchboard ctl`, tests and
//!   demos).
//!
//! The data plane runs on plain threads; the API runs on its own tokio runtime, either inside
//! the caller's runtime ([`serve`]) or on a thread of its own ([`spawn_server`]). Handlers
//! only touch tables (lock-free reads, short writer locks) and counters, so the API never
//! stalls packet processing.

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::http::{Method, Uri};
use axum::middleware::Next;
use axum::response::Response;
use dataplane::Switch;
use tokio::sync::watch;

pub mod api;
pub mod client;
pub mod compat;
pub mod error;
pub mod iptfs;
pub mod metrics;
pub mod native;
pub mod state;

#[cfg(test)]
mod tests;

pub use client::{Client, ClientError};
pub use error::{AppError, AppJson, ControlError, Result};
pub use state::AppState;

/// How long in-flight requests may run after a shutdown request before the server stops
/// anyway, so a stuck client cannot hold the switch's exit.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The whole API as one router: `/api/v1/...`, the p4containerflow endpoints at the root,
/// `/metrics`. Unknown paths and methods answer in the JSON error shape too.
pub fn app(switch: Arc<Switch>) -> Router {
    Router::new()
        .nest("/api/v1", native::router())
        .nest("/api/v1/ecmper", compat::c4bmv2::native_router())
        .merge(compat::p4cf::router())
        .merge(compat::c4bmv2::router())
        .merge(iptfs::router())
        .merge(metrics::router())
        .fallback(|method: Method, uri: Uri| async move {
            AppError::NotFound(format!("no endpoint {method} {uri}"))
        })
        .method_not_allowed_fallback(|method: Method, uri: Uri| async move {
            AppError::MethodNotAllowed(format!("method {method} is not allowed on {uri}"))
        })
        .layer(axum::middleware::from_fn(log_request))
        .with_state(AppState::new(switch))
}

/// Logs every request at debug level with its route pattern (not the raw path, so log lines
/// group by endpoint), status and duration.
async fn log_request(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| req.uri().path().to_owned(), |p| p.as_str().to_owned());
    let start = Instant::now();
    let resp = next.run(req).await;
    tracing::debug!(
        %method,
        route,
        status = resp.status().as_u16(),
        micros = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX),
        "API request"
    );
    resp
}

/// Serves the API on `listen` until `shutdown` completes, then lets in-flight requests finish
/// (at most [`SHUTDOWN_GRACE`]). Must be called inside a tokio runtime. A bind failure is
/// [`ControlError::Bind`] naming the address.
pub async fn serve(
    switch: Arc<Switch>,
    listen: SocketAddr,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| ControlError::Bind {
            addr: listen,
            source,
        })?;
    let addr = listener.local_addr().unwrap_or(listen);
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = tx.send(true);
    });
    run(listener, addr, switch, rx).await
}

async fn wait_stop(mut rx: watch::Receiver<bool>) {
    // An error means the sender is gone: nobody can ask for a stop any more, so stop now.
    let _ = rx.wait_for(|stop| *stop).await;
}

async fn run(
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    switch: Arc<Switch>,
    rx: watch::Receiver<bool>,
) -> Result<()> {
    tracing::info!(%addr, "API listening");
    let server = axum::serve(listener, app(switch))
        .with_graceful_shutdown(wait_stop(rx.clone()))
        .into_future();
    let grace = async {
        wait_stop(rx).await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        r = server => r.map_err(|source| ControlError::Serve { addr, source })?,
        () = grace => tracing::warn!(%addr, "API requests still running after the grace period; stopping anyway"),
    }
    tracing::info!(%addr, "API stopped");
    Ok(())
}

/// A server started by [`spawn_server`]; stops on [`ServerHandle::stop`] or when dropped.
#[derive(Debug)]
pub struct ServerHandle {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl ServerHandle {
    /// The address actually bound (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Base URL of the server, e.g. `http://127.0.0.1:5000`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Asks the server to stop, waits for it, and reports how it ended.
    pub fn stop(mut self) -> Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<()> {
        let _ = self.stop.send(true);
        match self.thread.take().map(JoinHandle::join) {
            None => Ok(()),
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(ControlError::Runtime(std::io::Error::other(
                "the API server thread panicked",
            ))),
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            tracing::warn!(error = %e, "API server ended with an error");
        }
    }
}

/// Binds `listen` now (so a bind failure is reported here, naming the address) and serves the
/// API from a tokio runtime on a thread of its own, for callers that are not async (the data
/// plane runs on plain threads).
pub fn spawn_server(switch: Arc<Switch>, listen: SocketAddr) -> Result<ServerHandle> {
    let bind_err = |source| ControlError::Bind {
        addr: listen,
        source,
    };
    let std_listener = std::net::TcpListener::bind(listen).map_err(bind_err)?;
    std_listener.set_nonblocking(true).map_err(bind_err)?;
    let addr = std_listener.local_addr().map_err(bind_err)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("switchboard-api-rt")
        .enable_all()
        .build()
        .map_err(ControlError::Runtime)?;
    let (tx, rx) = watch::channel(false);
    let thread = std::thread::Builder::new()
        .name("switchboard-api".into())
        .spawn(move || {
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(std_listener)
                    .map_err(|source| ControlError::Bind { addr, source })?;
                run(listener, addr, switch, rx).await
            })
        })
        .map_err(ControlError::Runtime)?;
    Ok(ServerHandle {
        addr,
        stop: tx,
        thread: Some(thread),
    })
}
