//! `run`: serve HTTP until `shutdown` resolves, then let requests in flight finish (up to the
//! drain deadline).

use std::future::Future;
use std::sync::Arc;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::app::App;
use crate::config::Config;
use crate::store::Store;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("invalid configuration: {0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Serves until `shutdown` resolves, then drains and returns (no admin listener).
pub async fn run(config: Config, listener: TcpListener, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
    run_with_admin(config, listener, None, shutdown).await
}

/// Like [`run`], also serving `/metrics`, `/healthz` and `/readyz` on `admin`.
pub async fn run_with_admin(
    config: Config,
    listener: TcpListener,
    admin: Option<TcpListener>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    config.validate()?;
    let client = service::redis_link::client(&config.redis_url)?;
    let store = Store::new(client, config.key_prefix())?;
    if config.publish_token.is_none() {
        tracing::warn!("no publish token configured (CRIER_PUBLISH_TOKEN): POST /api/publish answers 503");
    }
    let app = Arc::new(App { config, store, metrics: Arc::default() });
    let cancel = CancellationToken::new();
    let admin_task = admin.map(|admin| {
        let app = app.clone();
        tokio::spawn(service::http::serve_admin(admin, cancel.clone(), move |req| {
            crate::api::health::admin(app.clone(), req)
        }))
    });
    let tracker = TaskTracker::new();
    tracing::info!(listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "webserver listening");
    // systemd readiness: listening (the listener is bound) and Redis reached.
    let ready_app = app.clone();
    let ready_cancel = cancel.clone();
    tokio::spawn(async move {
        let mut delay = std::time::Duration::from_millis(100);
        loop {
            if ready_app.store.ping().await {
                service::notify::notify_ready();
                return;
            }
            tracing::warn!("redis not reachable yet; readiness is held back");
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = ready_cancel.cancelled() => return,
            }
            delay = (delay * 2).min(std::time::Duration::from_secs(5));
        }
    });
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Answers leave at once, never held back by Nagle's algorithm behind an unacknowledged one.
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let cancel = cancel.clone();
        tracker.spawn(async move {
            let service = service_fn(move |req| crate::routes::route(app.clone(), req));
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                // A request read whole is carried out and answered even if the client has
                // closed its sending side. This also spares hyper a read for an early EOF while
                // each request is in flight, and the fresh 8 KiB read buffer that read takes.
                .half_close(true)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                result = conn.as_mut() => if let Err(e) = result { tracing::debug!(%peer, "connection ended: {e}") },
                () = cancel.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    service::notify::notify_stopping();
    drop(listener);
    cancel.cancel();
    tracker.close();
    if tokio::time::timeout(app.config.drain_deadline, tracker.wait()).await.is_err() {
        tracing::warn!("drain deadline reached with requests still in flight");
    }
    if let Some(task) = admin_task {
        let _ = task.await;
    }
    tracing::info!("webserver stopped");
    Ok(())
}
