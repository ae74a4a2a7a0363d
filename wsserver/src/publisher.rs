//! What a client's text and binary frames become: the heartbeat is answered
//! ([`crate::heartbeat`]), anything else is published to the socket's publish channels through
//! Redis (and expected back by its echo filter when the socket did not ask for `echo`).

use bytes::Bytes;
use protocol::ChannelName;

use crate::app::App;
use crate::close::REDIS_UNAVAILABLE;
use crate::echo_filter::EchoFilter;
use crate::outbox::Outbox;

/// Publishes one socket's messages.
pub struct Publisher<'a> {
    pub app: &'a App,
    pub outbox: &'a Outbox,
    pub channels: &'a [ChannelName],
    pub subscribed: &'a [ChannelName],
    pub echo_filter: Option<&'a EchoFilter>,
}

impl Publisher<'_> {
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
        if let Err(e) = self.app.store.publish(self.channels, &payload, self.app.config.expire).await {
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
