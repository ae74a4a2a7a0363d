//! Publishing from websockets: each publish flag reaches its audience and stores the frame
//! with the configured expiry; expire 0 stores nothing; binary frames are stored byte for byte;
//! anonymous publish flags are refused; anonymous user/group/session flags without a cookie
//! subscribe to nothing and write no junk keys.

use std::time::Duration;

use crier_tests::login::{open_with_session, put_session};
use crier_tests::{wait_until, Stack, StackOptions, WsClient};

const RECV: Duration = Duration::from_secs(5);
const SUBSCRIBE_ALL: &str = "subscribe-broadcast&subscribe-user&subscribe-group&subscribe-session";

/// Receivers on facility "f", in this order.
const NAMES: [&str; 4] =
    ["ann, same session sa1 as the publisher", "ann, other session sa2", "bob (group g1, session sb)", "anonymous"];

async fn receivers(stack: &Stack) -> Vec<WsClient> {
    let prefix = stack.prefix().clone();
    put_session(&stack.redis, &prefix, "sa1", "ann", &["g1"]).await;
    put_session(&stack.redis, &prefix, "sa2", "ann", &["g1"]).await;
    put_session(&stack.redis, &prefix, "sb", "bob", &["g1"]).await;
    let url = stack.ws_url(&format!("/ws/f?{SUBSCRIBE_ALL}"));
    let mut sockets = Vec::new();
    for session in [Some("sa1"), Some("sa2"), Some("sb"), None] {
        sockets.push(open_with_session(&url, session).await);
    }
    stack.sync("broadcast:f", &mut sockets).await;
    stack.sync("user:ann:f", &mut sockets[0..2]).await;
    stack.sync("group:g1:f", &mut sockets[0..3]).await;
    stack.sync("session:sa1:f", &mut sockets[0..1]).await;
    sockets
}

/// Publishes a marker to everyone on "f" and returns what each socket received before it.
async fn until_marker(stack: &Stack, sockets: &mut [WsClient]) -> Vec<Vec<String>> {
    let marker = "crier-test-marker";
    stack.redis.publish("broadcast:f", marker).await;
    let mut received = Vec::new();
    for (i, socket) in sockets.iter_mut().enumerate() {
        let mut texts = Vec::new();
        loop {
            let text = socket
                .recv_text(RECV)
                .await
                .unwrap_or_else(|| panic!("{} did not get the marker; got {texts:?}", NAMES[i]));
            if text == marker {
                break;
            }
            texts.push(text);
        }
        received.push(texts);
    }
    received
}

async fn wait_for_value(stack: &Stack, key: &str, value: &[u8]) {
    wait_until(RECV, &format!("{key} holds the published frame"), || async {
        let stored: Option<Vec<u8>> = stack.redis.query(redis::cmd("GET").arg(key)).await;
        stored.as_deref() == Some(value)
    })
    .await;
}

async fn keys(stack: &Stack) -> Vec<String> {
    let mut keys: Vec<String> = stack.redis.query(redis::cmd("KEYS").arg("*")).await;
    keys.sort();
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_publish_flag_reaches_its_audience_and_is_stored_with_the_expiry() {
    let stack = Stack::start(StackOptions::default().ws_args(&["--expire", "60"])).await;
    let mut sockets = receivers(&stack).await;

    // (flag, key it stores under, copies each receiver gets)
    let cases = [
        ("publish-broadcast", "broadcast:f", [1, 1, 1, 1]),
        ("publish-user", "user:ann:f", [1, 1, 0, 0]),
        ("publish-group", "group:g1:f", [1, 1, 1, 0]),
        ("publish-session", "session:sa1:f", [1, 0, 0, 0]),
    ];
    for (flag, key, copies) in cases {
        let publisher = open_with_session(&stack.ws_url(&format!("/ws/f?{flag}")), Some("sa1")).await;
        let message = format!("sent with {flag}");
        publisher.send_text(&message).await.expect("send");
        // PUBLISH precedes the SET, so once the value is there the message is on its way.
        wait_for_value(&stack, key, message.as_bytes()).await;
        let ttl = stack.redis.ttl(key).await;
        assert!((1..=60).contains(&ttl), "{flag}: TTL of {key} is {ttl}, --expire is 60");
        let received = until_marker(&stack, &mut sockets).await;
        for (i, texts) in received.iter().enumerate() {
            assert_eq!(texts.len(), copies[i], "{flag}: {} received {texts:?}", NAMES[i]);
            assert!(texts.iter().all(|t| *t == message), "{flag}: {} received {texts:?}", NAMES[i]);
        }
        publisher.close().await;
    }

    // All four flags at once: one PUBLISH and one SET per channel.
    let publisher = open_with_session(
        &stack.ws_url("/ws/f?publish-broadcast&publish-user&publish-group&publish-session"),
        Some("sa1"),
    )
    .await;
    publisher.send_text("to all four").await.expect("send");
    for (_, key, _) in cases {
        wait_for_value(&stack, key, b"to all four").await;
    }
    let received = until_marker(&stack, &mut sockets).await;
    let counts: Vec<usize> = received.iter().map(Vec::len).collect();
    assert_eq!(counts, [4, 3, 2, 1], "copies per receiver: {received:?}");

    // Nothing else was stored: the four channel keys and Crier's own session records.
    let channel_keys: Vec<String> = keys(&stack).await.into_iter().filter(|k| !k.starts_with("crier:")).collect();
    assert_eq!(channel_keys, ["broadcast:f", "group:g1:f", "session:sa1:f", "user:ann:f"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expire_zero_publishes_without_storing() {
    let stack = Stack::start(StackOptions::default().ws_args(&["--expire", "0"])).await;
    let mut sockets = receivers(&stack).await;
    let publisher = open_with_session(
        &stack.ws_url("/ws/f?publish-broadcast&publish-user&publish-group&publish-session"),
        Some("sa1"),
    )
    .await;
    publisher.send_text("fleeting").await.expect("send");
    // The socket in the publisher's session hears all four channels; once it has the fourth
    // copy, every PUBLISH was done (nothing is stored to wait for).
    for copy in 0..4 {
        assert_eq!(sockets[0].expect_text(RECV).await, "fleeting", "copy {copy}");
    }
    let received = until_marker(&stack, &mut sockets).await;
    let counts: Vec<usize> = received.iter().map(Vec::len).collect();
    assert_eq!(counts, [0, 3, 2, 1], "copies per receiver: {received:?}");
    assert!(received.iter().flatten().all(|t| t == "fleeting"), "{received:?}");

    let stored: Vec<String> = keys(&stack).await.into_iter().filter(|k| !k.starts_with("crier:")).collect();
    assert!(stored.is_empty(), "--expire 0 must store nothing, found {stored:?}");
    // And a new subscriber gets no replay: its first message is a sync probe.
    let mut late = [open_with_session(&stack.ws_url("/ws/f?subscribe-broadcast"), None).await];
    stack.sync("broadcast:f", &mut late).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_frames_are_stored_byte_for_byte() {
    let stack = Stack::start(StackOptions::default().ws_args(&["--expire", "60"])).await;
    put_session(&stack.redis, stack.prefix(), "sa1", "ann", &[]).await;

    // Not UTF-8 at all: nobody listens (a text frame could not carry it), Redis keeps the bytes.
    let raw: Vec<u8> = vec![0x00, 0xff, 0xfe, 0x80, b'x', 0x01, 0xc3, 0x28, b'\n', 0x00];
    let publisher = open_with_session(&stack.ws_url("/ws/bin?publish-broadcast"), Some("sa1")).await;
    publisher.send_binary(&raw).await.expect("send binary");
    wait_for_value(&stack, "broadcast:bin", &raw).await;
    let ttl = stack.redis.ttl("broadcast:bin").await;
    assert!((1..=60).contains(&ttl), "TTL {ttl}");

    // UTF-8 bytes in a binary frame: stored as they are and delivered (as a text frame).
    let mut listener = [open_with_session(&stack.ws_url("/ws/f?subscribe-broadcast"), None).await];
    stack.sync("broadcast:f", &mut listener).await;
    let text = "héllo \u{1F600} \t\r\n end ";
    let publisher = open_with_session(&stack.ws_url("/ws/f?publish-broadcast"), Some("sa1")).await;
    publisher.send_binary(text.as_bytes()).await.expect("send binary");
    assert_eq!(listener[0].recv(RECV).await, Some(crier_tests::Event::Text(text.to_owned())));
    wait_for_value(&stack, "broadcast:f", text.as_bytes()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_publish_flags_are_refused_with_403() {
    let stack = Stack::start_default().await;
    put_session(&stack.redis, stack.prefix(), "sa1", "ann", &["g1"]).await;
    for flag in ["publish-broadcast", "publish-user", "publish-group", "publish-session"] {
        let url = stack.ws_url(&format!("/ws/f?subscribe-broadcast&{flag}"));
        // No cookie, and a cookie that is not a live session: both anonymous.
        for cookie in [None, Some("not-a-session")] {
            let refused = crier_tests::login::connect_with_session(&url, cookie)
                .await
                .err()
                .unwrap_or_else(|| panic!("anonymous {flag} (cookie {cookie:?}) was upgraded"));
            assert_eq!(refused.status, 403, "{flag} {cookie:?}: {refused}");
            assert!(refused.body.contains(flag), "the body names the flag: {:?}", refused.body);
            assert!(refused.body.contains("anonymous"), "{:?}", refused.body);
        }
        // A logged-in user may.
        open_with_session(&url, Some("sa1")).await.close().await;
    }
    // Anonymous subscriptions of every kind are allowed by default, and the server still serves.
    let mut anonymous = [open_with_session(&stack.ws_url(&format!("/ws/f?{SUBSCRIBE_ALL}&echo")), None).await];
    stack.sync("broadcast:f", &mut anonymous).await;
    stack.publish_broadcast("f", "still serving", 0).await;
    assert_eq!(anonymous[0].expect_text(RECV).await, "still serving");
    let stored: Vec<String> = keys(&stack).await.into_iter().filter(|k| !k.starts_with("crier:")).collect();
    assert!(stored.is_empty(), "refused sockets published nothing: {stored:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_user_group_session_flags_without_cookie_subscribe_and_publish_nothing() {
    // Every flag allowed to anonymous clients, so that their publish flags are exercised too.
    let stack = Stack::start(StackOptions::default().ws_args(&["--anonymous-flags", "*", "--expire", "60"])).await;
    let everything = "subscribe-broadcast&subscribe-user&subscribe-group&subscribe-session\
                      &publish-broadcast&publish-user&publish-group&publish-session&echo";
    let mut anonymous = [stack.connect(&format!("/ws/f?{everything}")).await];
    let mut only_self = [stack.connect("/ws/g?subscribe-user&subscribe-group&subscribe-session").await];
    stack.sync("broadcast:f", &mut anonymous).await;

    anonymous[0].send_text("from nobody").await.expect("send");
    wait_for_value(&stack, "broadcast:f", b"from nobody").await;
    // With echo, its one copy comes back from the broadcast channel, and nothing else.
    let received = until_marker(&stack, &mut anonymous).await;
    assert_eq!(received[0], ["from nobody"]);

    assert_eq!(keys(&stack).await, ["broadcast:f"], "no junk keys (None, SELF, empty names)");
    let mut channels: Vec<String> = stack.redis.query(redis::cmd("PUBSUB").arg("CHANNELS").arg("*")).await;
    channels.sort();
    let audience_channels: Vec<&String> = channels.iter().filter(|c| !c.starts_with("crier:")).collect();
    assert_eq!(audience_channels, ["broadcast:f"], "wsserver's subscriptions: {channels:?}");
    for name in keys(&stack).await.iter().chain(channels.iter()) {
        for junk in ["None", "SELF", "null", "::", "user:", "group:", "session:"] {
            assert!(!name.contains(junk), "junk name {name:?}");
        }
    }

    // Both sockets are still open and the server still serves.
    only_self[0].expect_silence(Duration::from_millis(100)).await;
    stack.publish_broadcast("f", "still here", 0).await;
    assert_eq!(anonymous[0].expect_text(RECV).await, "still here");
    let mut fresh = [stack.connect("/ws/g?subscribe-broadcast").await];
    stack.sync("broadcast:g", &mut fresh).await;
    only_self[0].expect_silence(Duration::from_millis(100)).await;
    assert_eq!(only_self.into_iter().next().unwrap().close().await.map(|c| c.0), Some(1000));
}
