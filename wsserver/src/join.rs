//! A socket's entry into the message path: [`join`] puts it in the registry (live messages
//! start queueing in its outbox), presence and the session-end list; [`replay`] waits for Redis
//! to confirm its subscriptions, then reads the persisted messages and merges them before the
//! live ones. Whatever must be read from Redis once a subscription is confirmed and merged
//! before live traffic belongs in [`replay`].

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use protocol::{ChannelName, Facility, Flags, Identity, Recover};
use tokio::sync::oneshot;

use crate::app::App;
use crate::close::REDIS_UNAVAILABLE;
use crate::echo_filter::EchoFilter;
use crate::frame;
use crate::outbox::Outbox;
use crate::presence::PresenceGuard;
use crate::recovery::Gate;
use crate::registry::{Member, Membership};
use crate::session_end::SessionTracking;

/// What the handshake resolved for a socket.
#[derive(Clone)]
pub struct Socket {
    pub facility: Facility,
    pub flags: Flags,
    pub identity: Identity,
    /// Present when the client opted in to recovery.
    pub recover: Option<Recover>,
}

/// A socket's place in the registry, presence and the session-end list, and what it publishes
/// to. Fields drop in order: presence is left before the channels.
pub struct Joined {
    /// The socket's id in this process's registry.
    pub id: crate::clock::SocketId,
    _open: OpenGauge,
    _presence: Option<PresenceGuard>,
    _session: Option<SessionTracking>,
    /// Also the list of channels subscribed to ([`Joined::subscribe`]), kept once.
    membership: Membership,
    pub publish: Vec<ChannelName>,
    pub echo_filter: Option<Arc<EchoFilter>>,
    pub outbox: Outbox,
    /// The facility is `--echo-test-facility`: the socket's messages are echoed, not published.
    pub echo_test: bool,
    pub facility: Facility,
    /// Opted-in sockets: the recovery request and the gate holding live messages meanwhile.
    pub recovery: Option<(Recover, Arc<Gate>)>,
}

impl Joined {
    /// The channels the socket receives from.
    pub fn subscribe(&self) -> &[ChannelName] {
        self.membership.channels()
    }
}

/// Joins the registry (live messages start queueing), presence and the session-end list.
/// Returns a receiver per channel Redis has not confirmed yet, for [`replay`].
///
/// A socket taken over from another process ([`crate::handoff`]) joins with its `cut` set
/// before any delivery can reach it, and with its recovery (if any) already done.
pub fn join(app: &Arc<App>, socket: Socket, cut: Option<crate::outbox::Cut>) -> (Joined, Vec<oneshot::Receiver<()>>) {
    let id = app.registry.next_socket_id();
    let open = OpenGauge::new(app.clone(), id);
    let channels = |audiences: protocol::AudienceSet| -> Vec<ChannelName> {
        audiences.iter().flat_map(|a| app.prefix.channels_for(a, &socket.identity, &socket.facility)).collect()
    };
    let subscribe = channels(socket.flags.subscribe);
    let publish = channels(socket.flags.publish);
    let echo_filter = (!socket.flags.echo && !publish.is_empty()).then(|| Arc::new(EchoFilter::new()));
    let outbox = Outbox::new(app.config.queue_depth, &app.metrics);
    let resumed = cut.is_some();
    if let Some(cut) = cut {
        outbox.set_cut(cut);
    }
    let recovery = socket.recover.map(|r| (r, Arc::new(Gate::new(&app.prefix, &subscribe))));
    let gate = recovery.as_ref().map(|(_, gate)| gate.clone());
    if let (true, Some(gate)) = (resumed, &gate) {
        let _ = gate.open(&outbox, Vec::new(), &std::collections::HashMap::new());
    }
    let member = Member { outbox: outbox.clone(), echo_filter: echo_filter.clone(), gate };
    // Only a logged-in session ends by announcement.
    let session = socket.identity.user.as_ref().and(socket.identity.session.clone());
    let session = session.map(|session| app.session_ends.track(id, session, &outbox));
    let (membership, waits) = app.registry.join(id, member, subscribe);
    let presence = socket.identity.user.as_ref().and_then(|user| app.presence.enter(&socket.facility, user));
    let echo_test = app.config.echo_test_facility.as_deref() == Some(socket.facility.as_str());
    app.sockets.add(id, &outbox);
    let joined = Joined {
        id,
        _open: open,
        _presence: presence,
        _session: session,
        membership,
        publish,
        echo_filter,
        outbox,
        echo_test,
        facility: socket.facility,
        recovery,
    };
    (joined, waits)
}

/// Waits for Redis to confirm the subscriptions, then puts the persisted last messages before
/// the live ones (for an opted-in socket: its recovery, see [`crate::recovery`]). Closes the
/// socket with 1013 when Redis cannot do either in time.
pub async fn replay(app: &App, joined: &Joined, waits: Vec<oneshot::Receiver<()>>) {
    let subscribed = async {
        for wait in waits {
            let _ = wait.await;
        }
    };
    if tokio::time::timeout(app.config.handshake_timeout, subscribed).await.is_err() {
        joined.outbox.close_now(REDIS_UNAVAILABLE);
        return;
    }
    if let Some((recover, gate)) = &joined.recovery {
        crate::recovery::recover(app, &joined.facility, joined.subscribe(), recover, gate, &joined.outbox).await;
        return;
    }
    match app.store.last_messages(joined.subscribe()).await {
        Ok(values) => {
            let frames: Vec<Bytes> = values.into_iter().flatten().map(|v| frame::text(&v)).collect();
            app.metrics.messages_out.fetch_add(frames.len() as u64, Ordering::Relaxed);
            joined.outbox.push_front(frames);
        }
        Err(e) => {
            tracing::warn!("replay failed: {e}");
            joined.outbox.close_now(REDIS_UNAVAILABLE);
        }
    }
}

/// Counts the socket in the open-socket gauge for as long as it lives.
/// Also removes the socket from [`App::sockets`].
struct OpenGauge(Arc<App>, u64);

impl OpenGauge {
    fn new(app: Arc<App>, id: u64) -> OpenGauge {
        app.metrics.sockets_open.fetch_add(1, Ordering::Relaxed);
        OpenGauge(app, id)
    }
}

impl Drop for OpenGauge {
    fn drop(&mut self) {
        self.0.sockets.remove(self.1);
        self.0.metrics.sockets_open.fetch_sub(1, Ordering::Relaxed);
    }
}
