//! The write loop's timer arithmetic, as pure functions of the time: when to send a websocket
//! ping, when a ping went unanswered too long, when an idle socket is due a heartbeat
//! ([`crate::heartbeat`]), and when the timer must next fire. The write loop
//! ([`crate::write_loop`]) owns one [`Keepalive`] per socket and does what [`Tick`] says.
//!
//! Writes count as activity for the heartbeat, direct writes by the fan-out included: the write
//! loop reports its own with [`Keepalive::wrote`] and hands the last direct one to
//! [`Keepalive::on_timer`]. A delivery never re-arms the timer: a later last write only
//! postpones the heartbeat, which the next firing notices.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use tokio::time::Instant;

use crate::heartbeat::Heartbeat;

/// What the read loop tells the write loop: shared by a socket's two halves.
pub struct Liveness {
    /// [`crate::clock::Clock`] time of the last frame received from the client.
    pub last_heard_us: AtomicU64,
}

/// The configured intervals, borrowed per call (nothing of it is stored per socket).
#[derive(Clone, Copy)]
pub struct Timing<'a> {
    pub ping_interval: Duration,
    pub ping_timeout: Duration,
    pub heartbeat: Option<&'a Heartbeat>,
}

/// One socket's keepalive state.
#[derive(Debug)]
pub struct Keepalive {
    next_ping: Instant,
    /// The ping awaiting an answer: when it was sent, and the [`crate::clock::Clock`] then.
    ping_sent: Option<(Instant, u64)>,
    last_write: Instant,
}

/// What the write loop must do when its timer fired.
#[derive(Debug, PartialEq, Eq)]
pub enum Tick {
    /// The peer did not answer the last ping within the timeout: close it, and fire again at
    /// `next` (the close grace) if it is still open then.
    PingTimedOut { next: Instant },
    /// Queue a heartbeat and/or a ping, and fire again at `next`.
    Send { heartbeat: bool, ping: bool, next: Instant },
}

/// Never re-arm the timer for sooner than this after a firing.
const MIN_REARM: Duration = Duration::from_millis(1);

impl Keepalive {
    /// State of a socket whose write loop starts at `now`.
    pub fn new(now: Instant, timing: Timing<'_>) -> Keepalive {
        Keepalive { next_ping: now + timing.ping_interval, ping_sent: None, last_write: now }
    }

    /// When the timer must first fire.
    pub fn first_deadline(&self, timing: Timing<'_>) -> Instant {
        match timing.heartbeat {
            Some(heartbeat) => self.next_ping.min(heartbeat.next(self.last_write)),
            None => self.next_ping,
        }
    }

    /// The write loop wrote a batch at `at`.
    pub fn wrote(&mut self, at: Instant) {
        self.last_write = at;
    }

    /// The timer fired at `now` (the clock then: `now_us`). `last_heard_us` is when the client
    /// was last heard from, `last_direct` when the fan-out last wrote to the socket directly.
    pub fn on_timer(
        &mut self,
        timing: Timing<'_>,
        now: Instant,
        now_us: u64,
        last_heard_us: u64,
        last_direct: Option<Instant>,
        close_grace: Duration,
    ) -> Tick {
        if let Some((sent, sent_us)) = self.ping_sent {
            if last_heard_us > sent_us {
                self.ping_sent = None;
            } else if now >= sent + timing.ping_timeout {
                return Tick::PingTimedOut { next: now + close_grace };
            }
        }
        let mut heartbeat = false;
        if let Some(hb) = timing.heartbeat {
            if let Some(direct) = last_direct {
                self.last_write = self.last_write.max(direct);
            }
            if hb.due(self.last_write, now) {
                heartbeat = true;
                self.last_write = now;
            }
        }
        let mut ping = false;
        if now >= self.next_ping {
            self.next_ping = now + timing.ping_interval;
            if self.ping_sent.is_none() {
                self.ping_sent = Some((now, now_us));
                ping = true;
            }
        }
        let mut next = self.next_ping;
        if let Some((sent, _)) = self.ping_sent {
            next = next.min(sent + timing.ping_timeout);
        }
        if let Some(hb) = timing.heartbeat {
            next = next.min(hb.next(self.last_write));
        }
        Tick::Send { heartbeat, ping, next: next.max(now + MIN_REARM) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(2);

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// Advances paused time to `at` and reports the firing there, with the client last heard
    /// at `heard_us` (the test's clock is seconds × 1e6).
    async fn fire(k: &mut Keepalive, timing: Timing<'_>, start: Instant, at: Instant, heard_us: u64) -> Tick {
        tokio::time::advance(at - Instant::now()).await;
        let now = Instant::now();
        let now_us = (now - start).as_micros() as u64 + 1;
        k.on_timer(timing, now, now_us, heard_us, None, GRACE)
    }

    #[tokio::test(start_paused = true)]
    async fn pings_every_interval_and_times_out_an_unanswered_one() {
        let timing = Timing { ping_interval: secs(30), ping_timeout: secs(10), heartbeat: None };
        let start = Instant::now();
        let mut k = Keepalive::new(start, timing);
        assert_eq!(k.first_deadline(timing), start + secs(30));
        // First ping at 30 s; the timeout is then the next deadline.
        let tick = fire(&mut k, timing, start, start + secs(30), 0).await;
        assert_eq!(tick, Tick::Send { heartbeat: false, ping: true, next: start + secs(40) });
        // Answered at 35 s: no timeout at 40 s, the next ping at 60 s.
        let tick = fire(&mut k, timing, start, start + secs(40), 35_000_001).await;
        assert_eq!(tick, Tick::Send { heartbeat: false, ping: false, next: start + secs(60) });
        let tick = fire(&mut k, timing, start, start + secs(60), 35_000_001).await;
        assert_eq!(tick, Tick::Send { heartbeat: false, ping: true, next: start + secs(70) });
        // Nothing heard since: closed at 70 s, the timer set to the close grace.
        let tick = fire(&mut k, timing, start, start + secs(70), 35_000_001).await;
        assert_eq!(tick, Tick::PingTimedOut { next: start + secs(70) + GRACE });
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_socket_gets_a_heartbeat_every_interval_and_writes_postpone_it() {
        let hb = Heartbeat::new(Some("--heartbeat--"), secs(5)).unwrap();
        let timing = Timing { ping_interval: secs(30), ping_timeout: secs(10), heartbeat: Some(&hb) };
        let start = Instant::now();
        let mut k = Keepalive::new(start, timing);
        assert_eq!(k.first_deadline(timing), start + secs(5));
        let tick = fire(&mut k, timing, start, start + secs(5), 0).await;
        assert_eq!(tick, Tick::Send { heartbeat: true, ping: false, next: start + secs(10) });
        // A write at 8 s postpones the next heartbeat to 13 s; the firing at 10 s finds none due.
        tokio::time::advance(secs(3)).await;
        k.wrote(Instant::now());
        let tick = fire(&mut k, timing, start, start + secs(10), 0).await;
        assert_eq!(tick, Tick::Send { heartbeat: false, ping: false, next: start + secs(13) });
        // A direct write by the fan-out at 12 s counts too.
        tokio::time::advance(secs(3)).await;
        let now = Instant::now();
        let tick = k.on_timer(timing, now, 13_000_001, 0, Some(start + secs(12)), GRACE);
        assert_eq!(tick, Tick::Send { heartbeat: false, ping: false, next: start + secs(17) });
        let tick = fire(&mut k, timing, start, start + secs(17), 0).await;
        assert_eq!(tick, Tick::Send { heartbeat: true, ping: false, next: start + secs(22) });
    }

    #[tokio::test(start_paused = true)]
    async fn heartbeat_and_ping_due_together_are_sent_together() {
        let hb = Heartbeat::new(Some("hb"), secs(10)).unwrap();
        let timing = Timing { ping_interval: secs(10), ping_timeout: secs(3), heartbeat: Some(&hb) };
        let start = Instant::now();
        let mut k = Keepalive::new(start, timing);
        let tick = fire(&mut k, timing, start, start + secs(10), 0).await;
        assert_eq!(tick, Tick::Send { heartbeat: true, ping: true, next: start + secs(13) });
    }
}
