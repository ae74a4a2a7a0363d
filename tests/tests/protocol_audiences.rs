//! Who receives what: an audience matrix (two users with two sockets each, a group, several
//! sessions, anonymous clients) published to through the API and through a plain Redis PUBLISH
//! on the ws4redis channel names, and the URL contract (flag parsing, verbatim facility).
//!
//! Negative checks avoid sleeping: after each publication a marker is published to everyone on
//! the broadcast channel. wsserver reads every channel over one Redis connection and keeps
//! order per socket, so a socket that was not addressed sees the marker first, and one that was
//! sees the message exactly once, then the marker.

use std::time::Duration;

use crier_tests::login::{open_with_session, put_session};
use crier_tests::{Stack, StackOptions, WsClient};
use serde_json::json;

const RECV: Duration = Duration::from_secs(5);
/// Bounded window for "receives nothing" checks.
const QUIET: Duration = Duration::from_millis(300);

const FLAGS: &str = "subscribe-broadcast&subscribe-user&subscribe-group&subscribe-session";

/// The sockets of the matrix, in this order (addressed audiences are contiguous ranges, which
/// `Stack::sync` needs).
const NAMES: [&str; 6] = [
    "ann#1 (session sa1, group staff)",
    "ann#2 (session sa2, group staff)",
    "bob#1 (session sb)",
    "bob#2 (session sb)",
    "anonymous with cookie sx",
    "anonymous without cookie",
];

/// Publishes a marker on the broadcast channel and checks, for every socket, that it received
/// `message` exactly once before the marker when it is in `targets`, and nothing but the marker
/// otherwise.
async fn assert_reached(stack: &Stack, sockets: &mut [WsClient], what: &str, message: &str, targets: &[usize]) {
    let marker = format!("marker after {message}");
    stack.redis.publish(&stack.broadcast_channel("room"), &marker).await;
    for (i, socket) in sockets.iter_mut().enumerate() {
        let first = socket
            .recv_text(RECV)
            .await
            .unwrap_or_else(|| panic!("{what}: {} received nothing, not even the marker", NAMES[i]));
        if targets.contains(&i) {
            assert_eq!(first, message, "{what}: {} is addressed", NAMES[i]);
            let second = socket.expect_text(RECV).await;
            assert_eq!(second, marker, "{what}: {} must get {message:?} exactly once", NAMES[i]);
        } else {
            assert_eq!(first, marker, "{what}: {} is not addressed", NAMES[i]);
        }
    }
}

async fn matrix_stack() -> (Stack, Vec<WsClient>) {
    let stack = Stack::start(StackOptions::default().prefix("px")).await;
    let prefix = stack.prefix().clone();
    put_session(&stack.redis, &prefix, "sa1", "ann", &["staff"]).await;
    put_session(&stack.redis, &prefix, "sa2", "ann", &["staff"]).await;
    put_session(&stack.redis, &prefix, "sb", "bob", &[]).await;

    let url = stack.ws_url(&format!("/ws/room?{FLAGS}"));
    let mut sockets = Vec::new();
    for session in [Some("sa1"), Some("sa2"), Some("sb"), Some("sb"), Some("sx"), None] {
        sockets.push(open_with_session(&url, session).await);
    }
    // Every channel subscribed before anything is published.
    stack.sync("px:broadcast:room", &mut sockets).await;
    stack.sync("px:user:ann:room", &mut sockets[0..2]).await;
    stack.sync("px:group:staff:room", &mut sockets[0..2]).await;
    stack.sync("px:user:bob:room", &mut sockets[2..4]).await;
    stack.sync("px:session:sa1:room", &mut sockets[0..1]).await;
    stack.sync("px:session:sa2:room", &mut sockets[1..2]).await;
    stack.sync("px:session:sb:room", &mut sockets[2..4]).await;
    stack.sync("px:session:sx:room", &mut sockets[4..5]).await;
    (stack, sockets)
}

/// (audience fields of the publish body, the channels they name, the sockets addressed).
fn publications() -> Vec<(serde_json::Value, Vec<&'static str>, Vec<usize>)> {
    vec![
        (json!({"broadcast": true}), vec!["px:broadcast:room"], vec![0, 1, 2, 3, 4, 5]),
        (json!({"users": ["ann"]}), vec!["px:user:ann:room"], vec![0, 1]),
        (json!({"users": ["bob"]}), vec!["px:user:bob:room"], vec![2, 3]),
        (json!({"groups": ["staff"]}), vec!["px:group:staff:room"], vec![0, 1]),
        (json!({"sessions": ["sa1"]}), vec!["px:session:sa1:room"], vec![0]),
        (json!({"sessions": ["sa2"]}), vec!["px:session:sa2:room"], vec![1]),
        (json!({"sessions": ["sb"]}), vec!["px:session:sb:room"], vec![2, 3]),
        (json!({"sessions": ["sx"]}), vec!["px:session:sx:room"], vec![4]),
        (json!({"users": ["ann", "bob"]}), vec!["px:user:ann:room", "px:user:bob:room"], vec![0, 1, 2, 3]),
        (
            json!({"users": ["carol"], "groups": ["nobody"], "sessions": ["zz"]}),
            vec!["px:group:nobody:room", "px:user:carol:room", "px:session:zz:room"],
            vec![],
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_publish_reaches_exactly_its_audience() {
    let (stack, mut sockets) = matrix_stack().await;
    for (i, (audience, channels, targets)) in publications().into_iter().enumerate() {
        let message = format!("api message {i} to {audience}");
        let mut body = audience.clone();
        body["facility"] = json!("room");
        body["message"] = json!(message);
        body["expire"] = json!(0);
        let response = stack.publish(&body).await;
        assert_eq!(response.status, 200, "{audience}: {}", response.body);
        let answer = response.json();
        assert_eq!(answer["channels"], channels.len(), "{audience}: {answer}");
        let subscribed = channels
            .iter()
            .filter(|c| !c.contains(":carol:") && !c.contains(":nobody:") && !c.contains(":zz:"))
            .count();
        assert_eq!(answer["receivers"], subscribed, "one wsserver subscription per channel: {audience}: {answer}");
        assert_reached(&stack, &mut sockets, &audience.to_string(), &message, &targets).await;
    }

    // The same audiences on another facility reach nobody here.
    for audience in
        [json!({"broadcast": true}), json!({"users": ["ann"], "groups": ["staff"], "sessions": ["sa1", "sb", "sx"]})]
    {
        let mut body = audience.clone();
        body["facility"] = json!("other");
        body["message"] = json!("elsewhere");
        let response = stack.publish(&body).await;
        assert_eq!(response.status, 200, "{}", response.body);
        assert_eq!(response.json()["receivers"], 0, "{audience} on facility other");
        assert_reached(&stack, &mut sockets, "facility other", "elsewhere", &[]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_redis_publish_on_ws4redis_channels_reaches_exactly_its_audience() {
    let (stack, mut sockets) = matrix_stack().await;
    for (i, (audience, channels, targets)) in publications().into_iter().enumerate() {
        // What a Django RedisPublisher does: one PUBLISH per channel name.
        for (k, channel) in channels.iter().enumerate() {
            let message = format!("redis message {i}.{k} on {channel}");
            let receivers = stack.redis.publish(channel, &message).await;
            let expected: Vec<usize> = if channels.len() == 1 {
                targets.clone()
            } else if channel.contains(":ann:") {
                vec![0, 1]
            } else if channel.contains(":bob:") {
                vec![2, 3]
            } else {
                vec![]
            };
            assert_eq!(receivers, i64::from(!expected.is_empty()), "PUBLISH {channel} ({audience})");
            assert_reached(&stack, &mut sockets, channel, &message, &expected).await;
        }
    }
    // Names that look close but are not a channel of these sockets.
    for channel in [
        "broadcast:room",
        "px:broadcast:room/",
        "px:user:ann:room2",
        "px:user:Ann:room",
        "px:group:staff:",
        "px:session:sa1:Room",
    ] {
        assert_eq!(stack.redis.publish(channel, "near miss").await, 0, "{channel}");
        assert_reached(&stack, &mut sockets, channel, "near miss", &[]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flags_are_trimmed_case_insensitive_query_keys_and_the_facility_is_verbatim() {
    let stack = Stack::start_default().await;
    // Facility "a/b/": trailing slash kept, values and unknown keys ignored, keys trimmed and
    // case-insensitive, the path percent-decoded.
    let mut slashed = vec![
        stack.connect("/ws/a/b/?Subscribe-Broadcast=1&bogus").await,
        stack.connect("/ws/a/b/?%20SUBSCRIBE-broadcast%20=no&echo=0").await,
        stack.connect("/ws/a%2Fb%2F?bogus=subscribe-user&subscribe-broadcast").await,
    ];
    let mut plain = [stack.connect("/ws/a/b?subscribe-broadcast").await];
    let mut accented = [stack.connect("/ws/caf%C3%A9?subscribe-broadcast").await];
    // No recognised flag: a valid socket that subscribes to nothing.
    let mut flagless =
        stack.connect("/ws/a/b/?bogus&subscribe&broadcast&subscribe-everyone&=subscribe-broadcast").await;

    assert_eq!(stack.broadcast_channel("a/b/"), "broadcast:a/b/");
    stack.sync("broadcast:a/b/", &mut slashed).await;
    stack.sync("broadcast:a/b", &mut plain).await;
    stack.sync("broadcast:café", &mut accented).await;
    assert_eq!(stack.redis.numsub("broadcast:a/b/").await, 1);

    stack.publish_broadcast("a/b/", "to a/b/", 0).await;
    stack.publish_broadcast("a/b", "to a/b", 0).await;
    stack.publish_broadcast("café", "to café", 0).await;
    for (i, socket) in slashed.iter_mut().enumerate() {
        assert_eq!(socket.expect_text(RECV).await, "to a/b/", "socket {i} on a/b/");
    }
    // Order is kept per socket, so had "to a/b/" reached it, it would come first.
    assert_eq!(plain[0].expect_text(RECV).await, "to a/b");
    assert_eq!(accented[0].expect_text(RECV).await, "to café");
    flagless.expect_silence(QUIET).await;
    for socket in slashed.iter_mut().chain(plain.iter_mut()).chain(accented.iter_mut()) {
        socket.expect_silence(Duration::from_millis(50)).await;
    }
}
