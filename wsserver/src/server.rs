//! `run`: the websocket and admin listeners (served by `service::serve`), and shutdown in three steps —
//! decide (the `shutdown` future), tell (stop accepting, 1001 to every socket), wait (for the
//! sockets, up to the drain deadline). With [`Handoff`], also the live hand-off: SIGUSR2
//! starts a new process and, once it is ready, this one stops accepting and passes its
//! sockets over ([`crate::handoff`]); a process started by one takes over instead of binding.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use service::listen::Listener;
use service::serve::{serve, ConnOptions};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::app::{App, PerIpLimit};
use crate::auth_callback::AuthCallback;
use crate::config::Config;
use crate::identity::{IdentitySource, SessionIdentities};
use crate::metrics::Metrics;
use crate::presence::{PresenceRecorder, PresenceScope};
use crate::registry::Registry;
use crate::shard_subscriber::ShardSubscriber;
use crate::store::Store;
use crate::subscriber::Subscriber;

/// The listeners `run` serves, opened by the caller ([`service::listen::open`]; port 0 in tests).
/// Several of a kind are served alike (a unix socket for nginx and TCP for another host).
pub struct Listeners {
    pub websocket: Vec<Listener>,
    pub admin: Vec<Listener>,
}

/// The live hand-off's part in a run (none in tests that start servers in-process).
#[derive(Default)]
pub struct Handoff {
    /// This process was started by a hand-off: take the sockets of the old one.
    pub take: Option<crate::handoff::take::Taking>,
    /// SIGUSR2 hands this process's sockets to a new process started from the program file.
    pub give_on_sigusr2: bool,
}

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
    #[error("cannot start the fan-out threads: {0}")]
    Threads(std::io::Error),
    #[error(transparent)]
    Listen(#[from] service::listen::ListenError),
}

/// Serves until `shutdown` resolves, then drains and returns.
pub async fn run(config: Config, listeners: Listeners, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
    run_with(config, listeners, shutdown, Handoff::default()).await
}

/// Why the accept loop stopped.
enum Stopped {
    Shutdown,
    Handoff(crate::handoff::give::Successor),
}

/// [`run`], with a live hand-off's part: serves until `shutdown` resolves or a hand-off
/// passed every socket to a new process.
pub async fn run_with(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
    handoff: Handoff,
) -> Result<(), RunError> {
    config.validate()?;
    let target = config.redis.target().map_err(|e| RunError::RedisRefused(e.to_string()))?;
    service::redis_check::at_startup(&target).await.map_err(RunError::RedisRefused)?;
    let metrics = Arc::new(Metrics::default());
    // On a cluster, channels are subscribed on two paths: classic and sharded.
    let on_cluster = target.cluster().is_some();
    let paths = if on_cluster { 2 } else { 1 };
    let (registry, mut dirty) =
        Registry::with_paths(metrics.clone(), crate::fanout::Fanout::shards_for(config.fanout_threads), paths)
            .map_err(RunError::Threads)?;
    let shard_dirty = (paths == 2).then(|| dirty.pop().expect("two paths"));
    let dirty = dirty.pop().expect("the classic path");
    let heartbeat = crate::heartbeat::Heartbeat::new(config.heartbeat.as_deref(), config.heartbeat_interval);
    let session_ends = crate::session_end::SessionEnds::new(config.key_prefix().session_revocations());
    let store = Store::new(&target)?;
    let prefix = config.key_prefix();
    let (presence, recorder) = PresenceRecorder::new(
        target.command_connection()?,
        prefix.clone(),
        PresenceScope::parse(&config.presence),
        config.presence_ttl,
    );
    let identities = match &config.auth_url {
        Some(url) => IdentitySource::Callback(Box::new(AuthCallback::new(
            url.parse().expect("validated"),
            config.auth_timeout,
            config.auth_cache_ttl,
        ))),
        None => IdentitySource::Sessions(SessionIdentities { store: store.clone(), prefix: prefix.clone() }),
    };
    let app = Arc::new(App {
        allowed_origins: config.allowed_origins().map(str::to_owned).collect(),
        prefix: prefix.clone(),
        registry: registry.clone(),
        identities,
        access: config.access_rules()?,
        presence,
        store,
        history: service::history::History::new(config.history.settings().expect("validated"), prefix.clone())
            .publishing_with(target.publish_command()),
        metrics: metrics.clone(),
        permits: Arc::new(Semaphore::new(config.max_connections)),
        per_ip: PerIpLimit::new(config.max_connections_per_ip),
        sockets: Default::default(),
        tracker: TaskTracker::new(),
        draining: AtomicBool::new(false),
        heartbeat: heartbeat.clone(),
        session_ends: session_ends.clone(),
        handoff: Default::default(),
        config,
    });

    let background = CancellationToken::new();
    let shard_subscriber = match (target.cluster(), shard_dirty) {
        (Some(cluster), Some(dirty)) => Some(tokio::spawn(
            ShardSubscriber {
                cluster: cluster.clone(),
                registry: registry.clone(),
                dirty,
                heartbeat: heartbeat.clone(),
                metrics: metrics.clone(),
                cancel: background.clone(),
            }
            .run(),
        )),
        _ => None,
    };
    let (first_connected, redis_reached) = tokio::sync::oneshot::channel();
    let subscriber = tokio::spawn(
        Subscriber {
            target,
            registry,
            dirty,
            heartbeat,
            session_ends,
            metrics,
            cancel: background.clone(),
            first_connected: Some(first_connected),
        }
        .run(),
    );
    // systemd readiness: listening (the listeners are bound) and Redis reached. A process
    // taking over tells the old one instead, and systemd once the hand-off is done.
    let taking_failed = CancellationToken::new();
    let taking = handoff.take;
    let taking_app = app.clone();
    let taking_stop = taking_failed.clone();
    tokio::spawn(async move {
        if redis_reached.await.is_ok() {
            match taking {
                Some(taking) => taking.serve(taking_app, taking_stop).await,
                None => service::notify::notify_ready(),
            }
        }
    });
    let presence_cancel = CancellationToken::new();
    let presence_task = tokio::spawn(recorder.run(presence_cancel.clone()));
    // What a hand-off passes to the new process: copies of the listeners, kept for the run.
    // A hand-off's cut orders a socket's messages against one marker, which needs one order of
    // messages: one Redis server (or Sentinel's master), not a cluster's shards.
    let refusal = on_cluster.then_some("on a Redis Cluster (its shards share no message order)");
    let handoff_listeners =
        if handoff.give_on_sigusr2 && refusal.is_none() { handoff_copies(&listeners)? } else { Vec::new() };
    let admin_app = app.clone();
    let admin = tokio::spawn(serve(
        listeners.admin,
        ConnOptions::default(),
        background.clone().cancelled_owned(),
        move |_, req| crate::admin::handle(admin_app.clone(), req),
    ));
    let listening: Vec<String> = listeners.websocket.iter().map(Listener::describe).collect();
    tracing::info!(listen = %listening.join(", "), "wsserver accepting websockets");
    let options = ConnOptions {
        header_read_timeout: app.config.handshake_timeout,
        max_buf_size: Some(16 * 1024),
        half_close: false,
        // A handshake nginx sent just before the stop is answered (503, or upgraded and then
        // closed with 1001) rather than cut off, which nginx would turn into a 502.
        answer_accepted: true,
    };
    let mut requests = crate::handoff::trigger::requests(handoff.give_on_sigusr2, refusal, handoff_listeners);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut connections = Vec::new();
    let mut handed_over = false;
    loop {
        // Each round serves copies of the listeners, so that a failed hand-off can accept again.
        let round: Vec<Listener> = listeners.websocket.iter().map(Listener::try_clone).collect::<Result<_, _>>()?;
        let stop = CancellationToken::new();
        let upgrade_app = app.clone();
        let serving = tokio::spawn(serve(round, options, stop.clone().cancelled_owned(), move |peer, req| {
            crate::upgrade::handle(upgrade_app.clone(), peer, req)
        }));
        let stopped = tokio::select! {
            () = &mut shutdown => Stopped::Shutdown,
            () = taking_failed.cancelled() => Stopped::Shutdown,
            Some(successor) = requests.successors.recv() => Stopped::Handoff(successor),
        };
        // Returns once the accept loop stopped, with every HTTP connection told to finish.
        stop.cancel();
        if let Ok(tracker) = serving.await {
            connections.push(tracker);
        }
        match stopped {
            Stopped::Shutdown => break,
            Stopped::Handoff(successor) => match successor.hand_over(&app).await {
                Ok(()) => {
                    handed_over = true;
                    break;
                }
                Err(e) => {
                    tracing::warn!("live hand-off abandoned: {e}; accepting again");
                    requests.busy.store(false, Ordering::SeqCst);
                }
            },
        }
    }
    requests.stop().await;
    drop(listeners.websocket);

    // Tell: no new connections, every socket gets 1001.
    // After a hand-off the service is not stopping: the new process is its main process now
    // (and with NotifyAccess=all systemd would take STOPPING=1 from this one too).
    if !handed_over {
        service::notify::notify_stopping();
    }
    app.draining.store(true, Ordering::Relaxed);
    let open = app.metrics.sockets_open.load(Ordering::Relaxed);
    tracing::info!(sockets = open, deadline = ?app.config.drain_deadline, "draining");
    app.sockets.close_all(crate::connection::GOING_AWAY);
    app.tracker.close();
    // Wait, bounded by the deadline.
    let drained = tokio::time::timeout(app.config.drain_deadline, async {
        app.tracker.wait().await;
        for tracker in &connections {
            tracker.wait().await;
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            remaining = app.metrics.sockets_open.load(Ordering::Relaxed),
            "drain deadline reached; dropping the remaining sockets"
        );
    }
    presence_cancel.cancel();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), presence_task).await;
    background.cancel();
    let _ = subscriber.await;
    if let Some(shard_subscriber) = shard_subscriber {
        let _ = shard_subscriber.await;
    }
    let _ = admin.await;
    tracing::info!("wsserver stopped");
    Ok(())
}

/// Copies of every listener, for the new process of a hand-off.
fn handoff_copies(listeners: &Listeners) -> Result<Vec<(crate::handoff::link::Role, Listener)>, RunError> {
    use crate::handoff::link::Role;
    let websocket = listeners.websocket.iter().map(|l| Ok((Role::Websocket, l.try_clone()?)));
    let admin = listeners.admin.iter().map(|l| Ok((Role::Admin, l.try_clone()?)));
    websocket.chain(admin).collect()
}
