//! What a client's text and binary frames become: the heartbeat is answered
//! ([`crate::heartbeat`]), anything else is published to the socket's publish channels through
//! Redis (and expected back by its echo filter when the socket did not ask for `echo`); on a
//! history facility through the history's append-and-publish script.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use protocol::ChannelName;

use crate::app::App;
use crate::close::REDIS_UNAVAILABLE;
use crate::echo_filter::EchoFilter;
use crate::outbox::Outbox;

/// Publishes one socket's messages.
pub struct Publisher<'a> {
    pub app: &'a App,
    /// The facility keeps a history: publish through the append-and-publish script.
    pub history: bool,
    pub outbox: &'a Outbox,
    pub channels: &'a [ChannelName],
    pub subscribed: &'a [ChannelName],
    pub echo_filter: Option<&'a EchoFilter>,
}

impl Publisher<'_> {
    /// Publishes to the socket's publish channels: with the history's append-and-publish on a
    /// history facility, else the ws4redis PUBLISH (+ SET EX).
    async fn publish(&self, payload: &[u8]) -> Result<(), crate::store::StoreError> {
        let (app, expire) = (self.app, self.app.config.expire);
        if !self.history {
            return app.store.publish(self.channels, payload, expire).await.map(drop);
        }
        let appended = app.store.append_and_publish(&app.history, self.channels, payload, expire).await;
        match &appended {
            Ok(list) => app.metrics.history.appends.fetch_add(list.len() as u64, Ordering::Relaxed),
            Err(_) => app.metrics.history.append_failures.fetch_add(1, Ordering::Relaxed),
        };
        appended.map(drop)
    }

    /// Handles one client message; closes the socket with 1013 when Redis cannot take it.
    pub async fn on_client_message(&self, payload: Bytes) {
        if payload.is_empty() {
            return;
        }
        if let Some(heartbeat) = &self.app.heartbeat {
            if heartbeat.is(&payload) {
                // Through the slow-consumer policy like every data frame.
                self.outbox.push(heartbeat.frame().clone());
                return;
            }
        }
        if self.channels.is_empty() {
            return;
        }
        let echoed: Vec<&ChannelName> = self.channels.iter().filter(|c| self.subscribed.contains(c)).collect();
        if let Some(filter) = self.echo_filter {
            for channel in &echoed {
                filter.expect(channel, payload.clone());
            }
        }
        if let Err(e) = self.publish(&payload).await {
            tracing::warn!("client publish failed: {e}");
            if let Some(filter) = self.echo_filter {
                for channel in &echoed {
                    filter.forget(channel, &payload);
                }
            }
            self.outbox.close_now(REDIS_UNAVAILABLE);
        }
    }
}
