//! The process's single Redis pub/sub connection, the first step of the message path. It
//! reconciles Redis subscriptions with the registry (SUBSCRIBE on first interest, UNSUBSCRIBE
//! on last; the revocations channel of [`SessionEnds`] always), probes liveness with PING, and
//! on loss (or when a new master is announced, [`MasterSwitches`]) reconnects with [`Backoff`]
//! and resubscribes every channel while client sockets stay open. Each message is [`Subscriber::dispatch`]ed: heartbeats are dropped, session-end
//! announcements go to [`SessionEnds`], everything else to [`Registry::deliver`].

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use protocol::ChannelName;
use tokio_util::sync::CancellationToken;

use crate::heartbeat::Heartbeat;
use crate::metrics::Metrics;
use crate::registry::{DirtyChannels, Registry};
use crate::session_end::SessionEnds;
use service::reconnect::Backoff;
use service::redis_target::{MasterSwitches, RedisTarget};

/// How long a Redis command on the pub/sub connection may take before the connection is
/// declared dead.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(3);
/// How often the connection is probed with PING.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// Most channels per SUBSCRIBE/UNSUBSCRIBE command.
const BATCH: usize = 1000;

/// Why a connection ended.
enum Lost {
    Closed,
    Switched,
    Error(String),
    Shutdown,
}

pub struct Subscriber {
    /// Where the pub/sub connection goes; a Sentinel target's master switches reconnect it.
    pub target: RedisTarget,
    pub registry: Registry,
    pub dirty: DirtyChannels,
    /// Redis' copies of the heartbeat are never delivered.
    pub heartbeat: Option<Heartbeat>,
    pub session_ends: SessionEnds,
    pub metrics: Arc<Metrics>,
    pub cancel: CancellationToken,
    /// Fired once, when the first connection to Redis is established (systemd readiness).
    pub first_connected: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Subscriber {
    /// Runs until `cancel` fires.
    pub async fn run(mut self) {
        let mut backoff = Backoff::new();
        let mut ever_connected = false;
        let mut switches = self.target.switches();
        loop {
            switches.mark_seen();
            let connected = tokio::select! {
                r = tokio::time::timeout(COMMAND_TIMEOUT, self.target.pubsub()) => r,
                () = self.cancel.cancelled() => return,
            };
            let pubsub = match connected {
                Ok(Ok(p)) => p,
                failed => {
                    let why = match failed {
                        Ok(Err(e)) => e.to_string(),
                        _ => "connect timed out".to_owned(),
                    };
                    let delay = backoff.next_delay();
                    if backoff.attempt() == 1 {
                        tracing::warn!("redis pub/sub unavailable: {why}; retrying with backoff");
                    } else {
                        tracing::debug!(attempt = backoff.attempt(), ?delay, "redis pub/sub connect failed: {why}");
                    }
                    tokio::select! {
                        () = tokio::time::sleep(delay) => continue,
                        // A new master is announced: try it now.
                        () = switches.next() => continue,
                        () = self.cancel.cancelled() => return,
                    }
                }
            };
            if ever_connected {
                self.metrics.redis_reconnects.fetch_add(1, Ordering::Relaxed);
            }
            ever_connected = true;
            backoff.reset();
            let lost = self.serve(pubsub, &mut switches).await;
            self.metrics.redis_up.store(0, Ordering::Relaxed);
            self.metrics.redis_channels.store(0, Ordering::Relaxed);
            self.registry.mark_all_pending();
            match lost {
                Lost::Shutdown => return,
                Lost::Closed => tracing::warn!("redis pub/sub connection closed; reconnecting"),
                Lost::Switched => tracing::warn!("a new redis master was announced; resubscribing there"),
                Lost::Error(e) => tracing::warn!("redis pub/sub connection lost: {e}; reconnecting"),
            }
        }
    }

    async fn serve(&mut self, pubsub: redis::aio::PubSub, switches: &mut MasterSwitches) -> Lost {
        let (mut sink, mut stream) = pubsub.split();
        let mut subscribed: HashSet<ChannelName> = HashSet::new();
        // Everything with local interest, plus whatever changed meanwhile, gets reconciled.
        let mut pending: HashSet<ChannelName> = self.registry.channels().into_iter().collect();
        pending.insert(self.session_ends.channel().clone());
        while let Ok(c) = self.dirty.try_recv() {
            pending.insert(c);
        }
        if let Err(e) = self.reconcile(&mut sink, &mut subscribed, pending).await {
            return e;
        }
        self.metrics.redis_up.store(1, Ordering::Relaxed);
        tracing::info!(channels = subscribed.len(), "redis pub/sub connected");
        if let Some(first) = self.first_connected.take() {
            let _ = first.send(());
        }
        let mut probe = tokio::time::interval(PROBE_INTERVAL);
        probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                () = self.cancel.cancelled() => return Lost::Shutdown,
                () = switches.next() => return Lost::Switched,
                message = next_message(&mut stream) => {
                    let Some(message) = message else { return Lost::Closed };
                    self.metrics.redis_messages.fetch_add(1, Ordering::Relaxed);
                    self.dispatch(message.get_channel_name(), message.get_payload_bytes());
                }
                first = self.dirty.recv() => {
                    let Some(first) = first else { return Lost::Shutdown };
                    let mut changed: HashSet<ChannelName> = HashSet::from([first]);
                    while let Ok(c) = self.dirty.try_recv() {
                        changed.insert(c);
                    }
                    if let Err(e) = self.reconcile(&mut sink, &mut subscribed, changed).await {
                        return e;
                    }
                }
                _ = probe.tick() => {
                    match tokio::time::timeout(COMMAND_TIMEOUT, sink.ping::<redis::Value>()).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => return Lost::Error(format!("PING failed: {e}")),
                        Err(_) => return Lost::Error(format!("PING unanswered for {COMMAND_TIMEOUT:?}")),
                    }
                }
            }
        }
    }

    /// Where one pub/sub message goes.
    fn dispatch(&self, channel: &str, payload: &[u8]) {
        if self.heartbeat.as_ref().is_some_and(|h| h.is(payload)) {
            return;
        }
        if channel == self.session_ends.channel().as_str() {
            self.session_ends.announce(payload);
            return;
        }
        self.registry.deliver(channel, payload);
    }

    /// Whether Redis should deliver `channel` to this process.
    fn is_wanted(&self, channel: &ChannelName) -> bool {
        channel == self.session_ends.channel() || self.registry.is_wanted(channel)
    }

    /// Brings Redis' subscriptions for `changed` in line with the registry.
    async fn reconcile(
        &self,
        sink: &mut redis::aio::PubSubSink,
        subscribed: &mut HashSet<ChannelName>,
        changed: HashSet<ChannelName>,
    ) -> Result<(), Lost> {
        let mut to_subscribe = Vec::new();
        let mut to_unsubscribe = Vec::new();
        for channel in changed {
            let wanted = self.is_wanted(&channel);
            if wanted && !subscribed.contains(&channel) {
                to_subscribe.push(channel);
            } else if !wanted && subscribed.contains(&channel) {
                to_unsubscribe.push(channel);
            } else if wanted {
                self.registry.mark_live(&channel);
            }
        }
        for chunk in to_subscribe.chunks(BATCH) {
            let names: Vec<&str> = chunk.iter().map(|c| c.as_str()).collect();
            command(sink.subscribe(names)).await?;
            for channel in chunk {
                subscribed.insert(channel.clone());
                self.registry.mark_live(channel);
            }
        }
        for chunk in to_unsubscribe.chunks(BATCH) {
            let names: Vec<&str> = chunk.iter().map(|c| c.as_str()).collect();
            command(sink.unsubscribe(names)).await?;
            for channel in chunk {
                subscribed.remove(channel);
            }
        }
        self.metrics.redis_channels.store(subscribed.len() as i64, Ordering::Relaxed);
        Ok(())
    }
}

async fn command(f: impl std::future::Future<Output = redis::RedisResult<()>>) -> Result<(), Lost> {
    match tokio::time::timeout(COMMAND_TIMEOUT, f).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(Lost::Error(e.to_string())),
        Err(_) => Err(Lost::Error(format!("no answer within {COMMAND_TIMEOUT:?}"))),
    }
}

/// The next pub/sub message (cancel-safe: only polls the stream).
async fn next_message(stream: &mut redis::aio::PubSubStream) -> Option<redis::Msg> {
    use futures_core::Stream;
    std::future::poll_fn(|cx| std::pin::Pin::new(&mut *stream).poll_next(cx)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::{Batch, Outbox};
    use crate::registry::Member;
    use crate::session_end::SESSION_ENDED;
    use crate::test_redis::TestRedis;
    use protocol::SessionKey;

    async fn subscribers(conn: &mut redis::aio::MultiplexedConnection, channel: &str) -> i64 {
        let (_, n): (String, i64) = redis::cmd("PUBSUB").arg("NUMSUB").arg(channel).query_async(conn).await.unwrap();
        n
    }

    fn taken(outbox: &Outbox) -> Batch {
        let mut batch = Batch::default();
        outbox.take_batch(&mut batch, usize::MAX);
        batch
    }

    #[tokio::test]
    async fn subscribes_delivers_routes_control_traffic_and_unsubscribes() {
        let redis = TestRedis::start().await;
        let metrics = Arc::new(Metrics::default());
        let (registry, dirty) = Registry::new(metrics.clone(), 1).unwrap();
        let session_ends = SessionEnds::new(ChannelName::from_redis("revocations"));
        let cancel = CancellationToken::new();
        let (first, connected) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(
            Subscriber {
                target: RedisTarget::single(redis.client.clone()),
                registry: registry.clone(),
                dirty,
                heartbeat: Heartbeat::new(Some("--heartbeat--"), Duration::from_secs(5)),
                session_ends: session_ends.clone(),
                metrics: metrics.clone(),
                cancel: cancel.clone(),
                first_connected: Some(first),
            }
            .run(),
        );
        tokio::time::timeout(Duration::from_secs(10), connected).await.unwrap().unwrap();
        let mut conn = redis.connection().await;
        assert_eq!(subscribers(&mut conn, "revocations").await, 1, "the revocations channel is always subscribed");

        // The first joiner waits until Redis confirmed the subscription.
        let outbox = Outbox::for_test(16);
        let (membership, waits) = registry.join(
            1,
            Member { outbox: outbox.clone(), echo_filter: None, gate: None },
            vec![ChannelName::from_redis("news")],
        );
        for wait in waits {
            tokio::time::timeout(Duration::from_secs(10), wait).await.unwrap().unwrap();
        }
        assert_eq!(subscribers(&mut conn, "news").await, 1);
        let _tracking = session_ends.track(1, SessionKey::parse("sessiona").unwrap(), &outbox);

        // The heartbeat is dropped, a message is delivered; Redis keeps their order.
        let publish =
            |channel: &'static str, payload: &'static str| redis::cmd("PUBLISH").arg(channel).arg(payload).to_owned();
        let _: i64 = publish("news", "--heartbeat--").query_async(&mut conn).await.unwrap();
        let _: i64 = publish("news", "hello").query_async(&mut conn).await.unwrap();
        let mut frames = Vec::new();
        TestRedis::until("the message arrives", || {
            frames.extend(taken(&outbox).frames);
            let done = !frames.is_empty();
            async move { done }
        })
        .await;
        assert_eq!(frames, [crate::frame::text(b"hello")], "the heartbeat is never delivered");
        assert_eq!(metrics.redis_messages.load(Ordering::Relaxed), 2);

        // A session-end announcement closes the session's sockets and is not delivered.
        let _: i64 = publish("revocations", "sessiona").query_async(&mut conn).await.unwrap();
        let mut close = None;
        TestRedis::until("the session's socket is closed", || {
            let batch = taken(&outbox);
            assert!(batch.frames.is_empty(), "an announcement is not a message");
            close = close.or(batch.close);
            let done = close.is_some();
            async move { done }
        })
        .await;
        assert_eq!(close, Some(SESSION_ENDED));

        // The last member leaving ends the subscription.
        drop(membership);
        let check = redis.connection().await;
        TestRedis::until("news is unsubscribed", || {
            let mut conn = check.clone();
            async move { subscribers(&mut conn, "news").await == 0 }
        })
        .await;
        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(10), task).await.unwrap().unwrap();
    }
}
