//! A websocket client that recovers as the recovery contract (README, "Recovery") tells a
//! client to: it opts in with `recover`, keeps the highest offset seen per epoch, sends those
//! positions on every reconnection, and checks every message object it gets against them, so a
//! duplicate, a message out of order or a silent gap fails the test at once.

use std::time::Duration;

use serde_json::Value;

use crate::recovery_frames::{Positions, RecoveryFrame};
use crate::ws::{Event, WsClient};

/// One status object (`position`, `recovered`, `gap`) as received.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusSeen {
    pub kind: String,
    pub reason: Option<String>,
    pub value: Value,
}

/// A recovering client of one URL.
pub struct RecoveringClient {
    /// The URL without `recover` (ws://host/ws/facility?flags).
    base: String,
    ws: Option<WsClient>,
    /// Highest offset seen per epoch.
    positions: Positions,
    /// `data` of every `message` object, in arrival order.
    pub received: Vec<String>,
    /// Every status object, in arrival order.
    pub statuses: Vec<StatusSeen>,
    /// Connections made (the first one included).
    pub connections: usize,
    /// Every positioned message must follow the previous one of its epoch at once (default).
    /// Off for a socket that publishes without `echo`: its own messages leave holes, and only
    /// the order is checked.
    pub contiguous: bool,
}

impl RecoveringClient {
    /// A client of `base` (a ws:// URL with a query) that is not connected yet.
    pub fn new(base: &str) -> RecoveringClient {
        RecoveringClient {
            base: base.to_owned(),
            ws: None,
            positions: Positions::default(),
            received: Vec::new(),
            statuses: Vec::new(),
            connections: 0,
            contiguous: true,
        }
    }

    /// The URL of the next connection: `recover` empty at first, then the known positions.
    pub fn url(&self) -> String {
        self.positions.recover_url(&self.base)
    }

    /// Connects (or reconnects) and waits for `channels` status objects; false when the
    /// upgrade was refused or the statuses did not come within `timeout` (try again later).
    pub async fn connect(&mut self, channels: usize, timeout: Duration) -> bool {
        self.ws = None;
        let Ok(ws) = WsClient::connect(&self.url()).await else { return false };
        self.ws = Some(ws);
        self.connections += 1;
        let before = self.statuses.len();
        let deadline = tokio::time::Instant::now() + timeout;
        while self.statuses.len() < before + channels {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() || !self.pump_one(left).await {
                self.ws = None;
                return false;
            }
        }
        true
    }

    /// Whether the socket is open (as far as the client knows).
    pub fn is_connected(&self) -> bool {
        self.ws.is_some()
    }

    /// Drops the connection without a close handshake.
    pub fn drop_connection(&mut self) {
        self.ws = None;
    }

    /// Reads what has arrived within `timeout`; false (and disconnected) once the connection
    /// ended. Returns after the first event or the timeout.
    pub async fn pump_one(&mut self, timeout: Duration) -> bool {
        let Some(ws) = self.ws.as_mut() else { return false };
        match ws.recv(timeout).await {
            None => true,
            Some(Event::Text(text)) => {
                self.handle(&text);
                true
            }
            Some(Event::Binary(b)) => panic!("binary frame on a recovering socket: {b:?}"),
            Some(Event::Close { .. } | Event::Ended(_)) => {
                self.ws = None;
                false
            }
        }
    }

    /// Reads everything already queued, without waiting.
    pub fn pump_ready(&mut self) -> bool {
        loop {
            let Some(ws) = self.ws.as_mut() else { return false };
            match ws.try_recv() {
                None => return true,
                Some(Event::Text(text)) => self.handle(&text),
                Some(Event::Binary(b)) => panic!("binary frame on a recovering socket: {b:?}"),
                Some(Event::Close { .. } | Event::Ended(_)) => {
                    self.ws = None;
                    return false;
                }
            }
        }
    }

    /// Sends a text frame on the open socket.
    pub async fn send_text(&self, text: &str) {
        self.ws.as_ref().expect("connected").send_text(text).await.expect("send");
    }

    /// The last status of each kind's reason seen, for assertions.
    pub fn last_status(&self) -> Option<&StatusSeen> {
        self.statuses.last()
    }

    fn handle(&mut self, text: &str) {
        if text == "--heartbeat--" {
            return;
        }
        let value: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
        match RecoveryFrame::of_value(&value) {
            Some(RecoveryFrame::Status { kind, epoch, offset }) => {
                if let (Some(e), Some(o)) = (&epoch, offset) {
                    self.positions.advance(e, o);
                }
                let reason = value["reason"].as_str().map(str::to_owned);
                self.statuses.push(StatusSeen { kind, reason, value });
            }
            Some(RecoveryFrame::Message { data, epoch, offset }) => {
                if let (Some(e), Some(o)) = (&epoch, offset) {
                    if let Some(last) = self.positions.get(e) {
                        if self.contiguous {
                            assert_eq!(o, last + 1, "offset after {last} in epoch {e}: {text}");
                        } else {
                            assert!(o > last, "offset {o} after {last} in epoch {e}: {text}");
                        }
                    }
                    self.positions.advance(e, o);
                }
                self.received.push(data);
            }
            _ => panic!("not a frame of the contract: {text}"),
        }
    }
}
