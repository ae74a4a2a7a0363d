//! Every API audience published once, each message checked on the sockets it addresses: the
//! shared body of the tests that prove a Redis topology (TLS, TLS behind Sentinel) delivers.

use std::time::Duration;

use protocol::{Facility, KeyPrefix, Name, SessionKey};
use serde_json::json;

use crate::login::{open_with_session, put_session};
use crate::{sync_clients, Stack, Topology, WsClient};

/// The sockets [`each_audience_reaches_its_sockets`] checks: ann (session sa1, group staff) and
/// bob (session sb), logged in through `redis` under `prefix`, each subscribed to every audience
/// of facility `room`, then an anonymous broadcast subscriber; returned once every audience's
/// channel reaches its sockets.
pub async fn open_audience_sockets(stack: &Stack, redis: &impl Topology, prefix: &KeyPrefix) -> Vec<WsClient> {
    put_session(redis, prefix, "sa1", "ann", &["staff"]).await;
    put_session(redis, prefix, "sb", "bob", &[]).await;
    let flags = "subscribe-broadcast&subscribe-user&subscribe-group&subscribe-session&publish-broadcast";
    let ws = stack.ws_url(&format!("/ws/room?{flags}"));
    let mut sockets: Vec<WsClient> = Vec::new();
    for session in [Some("sa1"), Some("sb")] {
        sockets.push(open_with_session(&ws, session).await);
    }
    sockets.push(open_with_session(&stack.ws_url("/ws/room?subscribe-broadcast"), None).await);
    let room = Facility::parse("room").expect("valid facility");
    let name = |n: &str| Name::parse(n).expect("valid name");
    let sb = SessionKey::parse("sb").expect("valid session key");
    sync_clients(redis, prefix.broadcast(&room).as_str(), &mut sockets).await;
    sync_clients(redis, prefix.user(&name("ann"), &room).as_str(), &mut sockets[0..1]).await;
    sync_clients(redis, prefix.group(&name("staff"), &room).as_str(), &mut sockets[0..1]).await;
    sync_clients(redis, prefix.session(&sb, &room).as_str(), &mut sockets[1..2]).await;
    sockets
}

/// Publishes `<label> <i>` through the API to broadcast, user ann, group staff and session sb of
/// facility `room` (kept 60 s), and asserts each reaches its sockets: `sockets` are ann's (session
/// sa1, group staff), bob's (session sb) and an anonymous one, in that order. Every publish must
/// be answered 200 with one receiver (one wsserver subscription).
pub async fn each_audience_reaches_its_sockets(stack: &Stack, sockets: &mut [WsClient], label: &str, recv: Duration) {
    let audiences = [
        (json!({"broadcast": true}), vec![0, 1, 2]),
        (json!({"users": ["ann"]}), vec![0]),
        (json!({"groups": ["staff"]}), vec![0]),
        (json!({"sessions": ["sb"]}), vec![1]),
    ];
    for (i, (audience, targets)) in audiences.into_iter().enumerate() {
        let message = format!("{label} {i}");
        let mut body = audience.clone();
        body["facility"] = json!("room");
        body["message"] = json!(message);
        body["expire"] = json!(60);
        let response = stack.publish(&body).await;
        assert_eq!(response.status, 200, "{audience}: {}", response.body);
        assert_eq!(response.json()["receivers"], 1, "{audience}: one wsserver subscription");
        for &t in &targets {
            assert_eq!(sockets[t].expect_text(recv).await, message, "{audience}: socket {t}");
        }
    }
}
