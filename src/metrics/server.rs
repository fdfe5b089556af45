//! The HTTP listener of `metrics.listen`: `GET /metrics` and `GET /` on the worker's
//! tokio runtime. Read-only (GET and HEAD; any other method is 405, any other path 404)
//! and bounded: `MAX_CONNECTIONS` at once (more wait in the kernel's backlog), request
//! heads of at most `MAX_HEAD_BYTES`, no request body, a head read within
//! `HEAD_TIMEOUT`, an answer within `HANDLER_TIMEOUT`, and a connection closed after
//! `CONNECTION_LIFETIME` whatever its client does (a client that never reads cannot
//! keep a slot). Handlers only clone the latest snapshot: nothing here waits for the
//! engine, and the engine never waits for anything here.

use super::{dashboard, exposition, Latest};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

pub const MAX_CONNECTIONS: usize = 16;
/// hyper's read buffer: the request line and headers must fit (larger: 431).
pub const MAX_HEAD_BYTES: usize = 16 * 1024;
/// A request body is never read; a longer one is refused (413).
pub const MAX_BODY_BYTES: usize = 1024;
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
pub const HANDLER_TIMEOUT: Duration = Duration::from_secs(5);
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(30);
/// After a failed `accept` (no file descriptors left), wait this long before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(200);

/// Bind `addr` now, before the worker starts (a failure is a configuration error,
/// exit 78, naming `metrics.listen`).
pub fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    let l = TcpListener::bind(addr).map_err(|e| format!("metrics.listen: cannot listen on {addr}: {e}"))?;
    l.set_nonblocking(true)
        .map_err(|e| format!("metrics.listen: {addr}: {e}"))?;
    Ok(l)
}

/// The routes, for the listener and for tests.
pub fn router(latest: Latest) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/", get(page))
        .with_state(latest)
        .layer(tower_http::limit::RequestBodyLimitLayer::new(MAX_BODY_BYTES))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            HANDLER_TIMEOUT,
        ))
}

fn not_ready() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, "1")],
        "sendgate: the worker is starting\n",
    )
        .into_response()
}

async fn metrics(axum::extract::State(latest): axum::extract::State<Latest>) -> Response {
    let Some(snap) = latest.borrow().clone() else {
        return not_ready();
    };
    (
        [(header::CONTENT_TYPE, exposition::CONTENT_TYPE)],
        exposition::render(&snap),
    )
        .into_response()
}

async fn page(axum::extract::State(latest): axum::extract::State<Latest>) -> Response {
    let Some(snap) = latest.borrow().clone() else {
        return not_ready();
    };
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        dashboard::render(&snap),
    )
        .into_response()
}

/// Serve on `listener` from the current tokio runtime until the process ends.
pub fn spawn(
    runtime: &tokio::runtime::Runtime,
    listener: TcpListener,
    latest: Latest,
) -> std::io::Result<()> {
    let listener = {
        let _guard = runtime.enter();
        tokio::net::TcpListener::from_std(listener)?
    };
    let app = router(latest);
    runtime.spawn(accept_loop(listener, app));
    Ok(())
}

async fn accept_loop(listener: tokio::net::TcpListener, app: Router) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(event = "metrics_error", error = %e);
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let service = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .max_buf_size(MAX_HEAD_BYTES)
                .serve_connection(TokioIo::new(stream), service);
            // Dropping the connection at the deadline closes it, read or not.
            let _ = tokio::time::timeout(CONNECTION_LIFETIME, conn).await;
            drop(permit);
        });
    }
}
