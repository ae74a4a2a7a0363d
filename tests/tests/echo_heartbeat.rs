//! Echo suppression (by sender, not by content), the heartbeat string, and websocket pings.

use std::time::{Duration, Instant};

use crier_tests::login::{open_with_session, put_session};
use crier_tests::{wait_until, Stack, StackOptions, WsClient, WsOptions};

const RECV: Duration = Duration::from_secs(5);
const QUIET: Duration = Duration::from_millis(300);

/// ann's sessions a1, a2; bob's b1.
async fn sessions(stack: &Stack) {
    put_session(&stack.redis, stack.prefix(), "a1", "ann", &[]).await;
    put_session(&stack.redis, stack.prefix(), "a2", "ann", &[]).await;
    put_session(&stack.redis, stack.prefix(), "b1", "bob", &[]).await;
}

async fn expect_texts(socket: &mut WsClient, expected: &[String], who: &str) {
    for (k, want) in expected.iter().enumerate() {
        let got = socket
            .recv_text(RECV)
            .await
            .unwrap_or_else(|| panic!("{who} stopped after {k} of {} messages", expected.len()));
        assert_eq!(&got, want, "{who}, message {k}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_echo_own_frames_never_come_back_even_ten_back_to_back() {
    let stack = Stack::start_default().await;
    sessions(&stack).await;
    let url = stack.ws_url("/ws/chat?subscribe-broadcast&publish-broadcast&subscribe-user&publish-user");
    // The sender, ann's other tab (same user channel) and bob (broadcast only).
    let mut sockets = vec![
        open_with_session(&url, Some("a1")).await,
        open_with_session(&url, Some("a2")).await,
        open_with_session(&stack.ws_url("/ws/chat?subscribe-broadcast"), Some("b1")).await,
    ];
    stack.sync("broadcast:chat", &mut sockets).await;
    stack.sync("user:ann:chat", &mut sockets[0..2]).await;

    let messages: Vec<String> = (0..10).map(|i| format!("burst {i}")).collect();
    for message in &messages {
        sockets[0].send_text(message).await.expect("send");
    }
    // ann's other tab gets each one twice (broadcast, then user channel); bob once.
    let doubled: Vec<String> = messages.iter().flat_map(|m| [m.clone(), m.clone()]).collect();
    expect_texts(&mut sockets[1], &doubled, "ann's other tab").await;
    expect_texts(&mut sockets[2], &messages, "bob").await;
    // All 20 copies passed wsserver before this probe; the sender got none of them (sync
    // panics on anything but its probes).
    stack.sync("broadcast:chat", &mut sockets).await;
    sockets[0].expect_silence(Duration::from_millis(100)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_echo_identical_text_from_others_still_arrives() {
    let stack = Stack::start_default().await;
    sessions(&stack).await;
    let url = stack.ws_url("/ws/chat?subscribe-broadcast&publish-broadcast");
    // [ann, bob], always synced together (each one's probes reach the other too).
    let mut both = [open_with_session(&url, Some("a1")).await, open_with_session(&url, Some("b1")).await];
    stack.sync("broadcast:chat", &mut both).await;
    const ANN: usize = 0;
    const BOB: usize = 1;

    both[ANN].send_text("same").await.expect("send");
    assert_eq!(both[BOB].expect_text(RECV).await, "same");
    stack.sync("broadcast:chat", &mut both).await; // ann's own copy was swallowed

    // The same text from bob, from the API and from a plain PUBLISH all reach ann; bob does
    // not get his own back.
    both[BOB].send_text("same").await.expect("send");
    assert_eq!(both[ANN].expect_text(RECV).await, "same", "bob's identical message");
    stack.publish_broadcast("chat", "same", 0).await;
    assert_eq!(both[ANN].expect_text(RECV).await, "same", "the API's identical message");
    assert_eq!(both[BOB].expect_text(RECV).await, "same", "the API's identical message");
    stack.redis.publish("broadcast:chat", "same").await;
    assert_eq!(both[ANN].expect_text(RECV).await, "same", "a plain PUBLISH");
    assert_eq!(both[BOB].expect_text(RECV).await, "same", "a plain PUBLISH");
    stack.sync("broadcast:chat", &mut both).await;

    // Own and foreign copies interleaved: ann sends "x" twice while bob sends "x" once; ann
    // gets exactly bob's one, bob both of ann's.
    both[ANN].send_text("x").await.expect("send");
    both[BOB].send_text("x").await.expect("send");
    both[ANN].send_text("x").await.expect("send");
    assert_eq!(both[BOB].expect_text(RECV).await, "x");
    assert_eq!(both[BOB].expect_text(RECV).await, "x");
    assert_eq!(both[ANN].expect_text(RECV).await, "x");
    stack.sync("broadcast:chat", &mut both).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_echo_own_frames_come_back_in_order() {
    let stack = Stack::start_default().await;
    sessions(&stack).await;
    let mut both = [
        open_with_session(&stack.ws_url("/ws/chat?subscribe-broadcast&publish-broadcast&echo"), Some("a1")).await,
        open_with_session(&stack.ws_url("/ws/chat?subscribe-broadcast"), Some("b1")).await,
    ];
    stack.sync("broadcast:chat", &mut both).await;

    let messages: Vec<String> = (0..10).map(|i| format!("echoed {i}")).collect();
    for message in &messages {
        both[0].send_text(message).await.expect("send");
    }
    expect_texts(&mut both[0], &messages, "ann (echo)").await;
    expect_texts(&mut both[1], &messages, "bob").await;
    both[0].expect_silence(Duration::from_millis(100)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_is_answered_and_never_published() {
    // An hour between idle heartbeats, so that every heartbeat seen here is an answer.
    let stack =
        Stack::start(StackOptions::default().ws_args(&["--heartbeat=--heartbeat--", "--heartbeat-interval", "1h"]))
            .await;
    sessions(&stack).await;
    // [ann (publishes, with echo), bob]
    let mut both = [
        open_with_session(&stack.ws_url("/ws/chat?subscribe-broadcast&publish-broadcast&echo"), Some("a1")).await,
        open_with_session(&stack.ws_url("/ws/chat?subscribe-broadcast"), Some("b1")).await,
    ];
    // A socket without any flag gets its heartbeat answered too.
    let mut plain = stack.connect("/ws/chat").await;
    stack.sync("broadcast:chat", &mut both).await;

    both[0].send_text("--heartbeat--").await.expect("send");
    assert_eq!(both[0].expect_text(RECV).await, "--heartbeat--", "the answer");
    plain.send_text("--heartbeat--").await.expect("send");
    assert_eq!(plain.expect_text(RECV).await, "--heartbeat--", "the answer to a flagless socket");

    // A real message after it: it is the first thing bob sees, and the first thing ann's echo
    // brings back, so the heartbeat was not published.
    both[0].send_text("real").await.expect("send");
    assert_eq!(both[1].expect_text(RECV).await, "real");
    assert_eq!(both[0].expect_text(RECV).await, "real");
    assert_eq!(stack.redis.get("broadcast:chat").await.as_deref(), Some("real"));

    // A heartbeat published by someone else (a publisher that knows no better) is filtered.
    stack.redis.publish("broadcast:chat", "--heartbeat--").await;
    stack.sync("broadcast:chat", &mut both).await;
    both[0].expect_silence(QUIET).await;
    plain.expect_silence(Duration::from_millis(50)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sockets_receive_the_heartbeat_every_interval() {
    let stack =
        Stack::start(StackOptions::default().ws_args(&["--heartbeat=--heartbeat--", "--heartbeat-interval", "1s"]))
            .await;
    let mut idle = stack.connect("/ws/chat?subscribe-broadcast").await;
    let start = Instant::now();
    let mut arrivals = Vec::new();
    for _ in 0..2 {
        let text = idle.recv_text(Duration::from_millis(2500)).await.expect("a heartbeat within 2.5 s");
        assert_eq!(text, "--heartbeat--");
        arrivals.push(start.elapsed());
    }
    let gaps: Vec<Duration> = arrivals.windows(2).map(|w| w[1] - w[0]).collect();
    for gap in &gaps {
        assert!(
            *gap >= Duration::from_millis(700) && *gap <= Duration::from_millis(2500),
            "heartbeats should be about 1 s apart (the default is 4 s): arrivals {arrivals:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_that_ignores_pings_is_closed_and_one_that_answers_stays() {
    let stack =
        Stack::start(StackOptions::default().ws_args(&["--ping-interval", "1s", "--ping-timeout", "500ms"])).await;
    let url = stack.ws_url("/ws/chat?subscribe-broadcast");
    let mut deaf =
        WsClient::connect_with(&url, WsOptions { auto_pong: false, ..WsOptions::default() }).await.expect("upgrade");
    let mut alive = [WsClient::open(&url).await];
    let started = Instant::now();

    let (code, reason) = deaf.expect_close(Duration::from_secs(4)).await;
    assert_eq!((code, reason.as_str()), (1011, "no answer to ping"));
    assert!(deaf.pings_received() >= 1, "it was pinged first");
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(1000), "closed after {took:?}, before ping interval + timeout");

    // The one that answers has been pinged as well and still receives messages.
    let answering = &alive[0];
    wait_until(
        Duration::from_secs(2),
        "the answering client is pinged",
        || async move { answering.pings_received() >= 1 },
    )
    .await;
    stack.sync("broadcast:chat", &mut alive).await;
    stack.publish_broadcast("chat", "still open", 0).await;
    assert_eq!(alive[0].expect_text(RECV).await, "still open");
}
