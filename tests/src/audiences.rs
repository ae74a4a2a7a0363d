//! Every API audience published once, each message checked on the sockets it addresses: the
//! shared body of the tests that prove a Redis topology (TLS, TLS behind Sentinel) delivers.

use std::time::Duration;

use serde_json::json;

use crate::{Stack, WsClient};

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
