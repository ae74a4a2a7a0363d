//! `run`: serve HTTP until `shutdown` resolves, then let requests in flight finish (up to the
//! drain deadline).

use std::future::Future;
use std::sync::Arc;

use service::listen::Listener;
use service::reconnect::Backoff;
use service::serve::{serve, ConnOptions};
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::config::Config;
use crate::store::Store;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("invalid configuration: {0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis: {0}")]
    RedisRefused(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Serves `listeners` (opened by the caller: [`service::listen::open`]) until `shutdown`
/// resolves, then drains and returns (no admin listener).
pub async fn run(config: Config, listeners: Vec<Listener>, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
    run_with_admin(config, listeners, Vec::new(), shutdown).await
}

/// Like [`run`], also serving `/metrics`, `/healthz` and `/readyz` on `admin` (none: off).
pub async fn run_with_admin(
    config: Config,
    listeners: Vec<Listener>,
    admin: Vec<Listener>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    config.validate()?;
    let target = config.redis.target().map_err(|e| RunError::RedisRefused(e.to_string()))?;
    service::redis_check::at_startup(&target).await.map_err(RunError::RedisRefused)?;
    let metrics = Arc::new(crate::metrics::Metrics::default());
    let history = config.history.settings().expect("validated");
    let store = Store::new(&target, config.key_prefix(), history, metrics.history.clone())?;
    if config.publish_token.is_none() {
        tracing::warn!("no publish token configured (CRIER_PUBLISH_TOKEN): POST /api/publish answers 503");
    }
    let app = Arc::new(App { config, store, metrics });
    let cancel = CancellationToken::new();
    let admin_task = (!admin.is_empty()).then(|| {
        let app = app.clone();
        let options = ConnOptions::default();
        tokio::spawn(serve(admin, options, cancel.clone().cancelled_owned(), move |_, req| {
            crate::api::health::admin(app.clone(), req)
        }))
    });
    let listening: Vec<String> = listeners.iter().map(Listener::describe).collect();
    tracing::info!(listen = %listening.join(", "), "webserver listening");
    // systemd readiness: listening (the listener is bound) and Redis reached.
    let ready_app = app.clone();
    let ready_cancel = cancel.clone();
    tokio::spawn(async move {
        let mut backoff = Backoff::new();
        loop {
            if ready_app.store.ping().await {
                service::notify::notify_ready();
                return;
            }
            tracing::warn!("redis not reachable yet; readiness is held back");
            tokio::select! {
                () = tokio::time::sleep(backoff.next_delay()) => {}
                () = ready_cancel.cancelled() => return,
            }
        }
    });
    let options = ConnOptions { half_close: true, ..ConnOptions::default() };
    let handler_app = app.clone();
    let connections =
        serve(listeners, options, shutdown, move |peer, req| crate::routes::route(handler_app.clone(), peer, req))
            .await;
    service::notify::notify_stopping();
    cancel.cancel();
    if tokio::time::timeout(app.config.drain_deadline, connections.wait()).await.is_err() {
        tracing::warn!("drain deadline reached with requests still in flight");
    }
    if let Some(task) = admin_task {
        let _ = task.await;
    }
    tracing::info!("webserver stopped");
    Ok(())
}
