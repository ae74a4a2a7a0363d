//! Recovery end to end (real redis-server, wsserver, webserver, nginx): opted-in clients get a
//! status per channel, then every message exactly once and in order across reconnects; a
//! position the history cannot serve gets the gap signal, then live traffic; plain clients and
//! plain Redis PUBLISH keep today's ws4redis behaviour.

use std::time::Duration;

use crier_tests::cut_proxy::CutProxy;
use crier_tests::recovering::RecoveringClient;
use crier_tests::{wait_until, Stack, StackOptions, WsClient};

const WAIT: Duration = Duration::from_secs(10);

fn history_stack(size: &str) -> StackOptions {
    let history = ["--history", "chat", "--history-size", size, "--history-ttl", "5m"];
    StackOptions::default().ws_args(&history).web_args(&history)
}

/// Reads until `client` has received `n` messages in all.
async fn receive(client: &mut RecoveringClient, n: usize) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while client.received.len() < n {
        assert!(tokio::time::Instant::now() < deadline, "got {:?}, want {n}", client.received);
        assert!(client.pump_one(Duration::from_millis(200)).await, "connection ended; got {:?}", client.received);
    }
}

fn texts(range: std::ops::RangeInclusive<u32>) -> Vec<String> {
    range.map(|i| format!("m{i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_connection_gets_its_position_then_message_objects() {
    let stack = Stack::start(history_stack("100")).await;
    stack.publish_broadcast("chat", "before", 0).await;
    let mut client = RecoveringClient::new(&stack.ws_url("/ws/chat?subscribe-broadcast"));
    assert!(client.connect(1, WAIT).await);
    let status = &client.statuses[0].value;
    assert_eq!(status["type"], "position");
    assert_eq!(status["audience"], "broadcast");
    assert_eq!(status["offset"], 1, "one message was published before: {status}");
    assert_eq!(status["epoch"].as_str().map(str::len), Some(16));
    stack.publish_broadcast("chat", "after", 0).await;
    receive(&mut client, 1).await;
    assert_eq!(client.received, ["after"], "the message before the position is not replayed");
    let metrics = stack.metrics().await;
    assert!(metrics.contains("crier_recovery_gaps_total{reason=\"too-old\"} 0"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_clients_get_todays_frames_on_a_history_facility() {
    let stack = Stack::start(history_stack("100")).await;
    let mut plain = stack.connect("/ws/chat?subscribe-broadcast").await;
    stack.sync("broadcast:chat", std::slice::from_mut(&mut plain)).await;
    stack.publish_broadcast("chat", "through the api", 60).await;
    stack.redis.publish("broadcast:chat", "plain redis publish").await;
    assert_eq!(plain.expect_text(WAIT).await, "through the api");
    assert_eq!(plain.expect_text(WAIT).await, "plain redis publish");
    // The ws4redis last message is the bare payload, replayed to plain clients as before.
    let mut late = stack.connect("/ws/chat?subscribe-broadcast").await;
    assert_eq!(late.expect_text(WAIT).await, "through the api");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_redis_publish_reaches_opted_in_clients_live_without_a_position() {
    let stack = Stack::start(history_stack("100")).await;
    stack.publish_broadcast("chat", "stored", 60).await;
    let mut client = RecoveringClient::new(&stack.ws_url("/ws/chat?subscribe-broadcast"));
    assert!(client.connect(1, WAIT).await);
    stack.redis.publish("broadcast:chat", "from a ws4redis publisher").await;
    stack.publish_broadcast("chat", "through the api", 0).await;
    receive(&mut client, 2).await;
    assert_eq!(client.received, ["from a ws4redis publisher", "through the api"], "no last-message replay");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cut_by_the_network_for_5_s_recovers_everything() {
    let stack = Stack::start(history_stack("100")).await;
    let proxy = CutProxy::start(stack.ws_addr()).await;
    let url = format!("ws://{}/ws/chat?subscribe-broadcast", proxy.addr());
    let mut client = RecoveringClient::new(&url);
    assert!(client.connect(1, WAIT).await);
    for i in 1..=3 {
        stack.publish_broadcast("chat", &format!("m{i}"), 0).await;
    }
    receive(&mut client, 3).await;

    proxy.stall();
    let cut_until = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut i = 4;
    while tokio::time::Instant::now() < cut_until {
        stack.publish_broadcast("chat", &format!("m{i}"), 0).await;
        i += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    proxy.reset();
    proxy.resume();
    // The client learns of the cut from the reset, as a browser would, and reconnects.
    wait_until(WAIT, "the client saw its connection end", || {
        let open = client.pump_ready();
        async move { !open }
    })
    .await;
    let missed_from = client.received.len();
    assert!(client.connect(1, WAIT).await, "reconnect through the proxy");
    let status = client.last_status().unwrap().value.clone();
    assert_eq!(status["type"], "recovered", "{status}");
    stack.publish_broadcast("chat", "live", 0).await;
    let last = i - 1;
    receive(&mut client, last as usize + 1).await;
    let mut expected = texts(1..=last);
    expected.push("live".into());
    assert_eq!(client.received, expected, "everything exactly once, in order");
    assert_eq!(status["missed"].as_u64(), Some((last as usize - missed_from) as u64), "{status}");
    assert_eq!(stack.metric("crier_recoveries_total").await, Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_position_older_than_the_history_gets_a_gap_then_live_messages() {
    let stack = Stack::start(history_stack("3")).await;
    let mut client = RecoveringClient::new(&stack.ws_url("/ws/chat?subscribe-broadcast"));
    assert!(client.connect(1, WAIT).await);
    client.drop_connection();
    for i in 1..=6 {
        stack.publish_broadcast("chat", &format!("m{i}"), 0).await;
    }
    assert!(client.connect(1, WAIT).await);
    let gap = client.last_status().unwrap().value.clone();
    assert_eq!(gap["type"], "gap", "{gap}");
    assert_eq!(gap["reason"], "too-old");
    assert_eq!(gap["offset"], 6, "continue after the newest message: {gap}");
    assert!(client.received.is_empty(), "nothing from the history after a gap");
    stack.publish_broadcast("chat", "live", 0).await;
    receive(&mut client, 1).await;
    assert_eq!(client.received, ["live"]);
    let metrics = stack.metrics().await;
    assert!(metrics.contains("crier_recovery_gaps_total{reason=\"too-old\"} 1"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_without_persistence_is_an_epoch_change_gap_then_live() {
    let mut stack = Stack::start(history_stack("100")).await;
    let mut client = RecoveringClient::new(&stack.ws_url("/ws/chat?subscribe-broadcast"));
    assert!(client.connect(1, WAIT).await);
    stack.publish_broadcast("chat", "m1", 0).await;
    receive(&mut client, 1).await;
    let before = client.statuses[0].value["epoch"].clone();
    stack.redis.restart().await;
    // Reconnect until wsserver is back on Redis (it answers 503 or closes while it is not).
    // Reconnect until wsserver reads the history again: while its Redis connection is being
    // re-established the status is an `unavailable` gap, which is a valid answer too.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if client.connect(1, Duration::from_secs(2)).await {
            let status = &client.last_status().unwrap().value;
            if status["reason"] != "unavailable" {
                break;
            }
            assert_eq!(status["epoch"], serde_json::Value::Null, "{status}");
        }
        assert!(tokio::time::Instant::now() < deadline, "no reconnection was served within 20 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let gap = client.last_status().unwrap().value.clone();
    assert_eq!(gap["type"], "gap", "{gap}");
    assert_eq!(gap["reason"], "epoch-changed");
    assert_ne!(gap["epoch"], before);
    assert_eq!(gap["offset"], 0);
    wait_until(WAIT, "the API publishes again", || async {
        let body = serde_json::json!({"facility": "chat", "broadcast": true, "message": "m2"});
        stack.publish(&body).await.status == 200
    })
    .await;
    receive(&mut client, 2).await;
    assert_eq!(client.received, ["m1", "m2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_publishes_with_echo_are_recoverable_like_api_publishes() {
    let stack = Stack::start(history_stack("100").ws_args(&["--anonymous-flags", "*"])).await;
    let mut talker = RecoveringClient::new(&stack.ws_url("/ws/chat?subscribe-broadcast&publish-broadcast&echo"));
    let mut listener = RecoveringClient::new(&stack.ws_url("/ws/chat?subscribe-broadcast"));
    assert!(talker.connect(1, WAIT).await);
    assert!(listener.connect(1, WAIT).await);
    talker.send_text("hello").await;
    receive(&mut talker, 1).await;
    receive(&mut listener, 1).await;
    listener.drop_connection();
    for text in ["one", "two", "three"] {
        talker.send_text(text).await;
    }
    receive(&mut talker, 4).await;
    assert_eq!(talker.received, ["hello", "one", "two", "three"], "echo: message objects with positions");
    assert!(listener.connect(1, WAIT).await);
    assert_eq!(listener.last_status().unwrap().value["missed"], 3);
    receive(&mut listener, 4).await;
    assert_eq!(listener.received, ["hello", "one", "two", "three"]);
    assert_eq!(stack.metric("crier_history_appends_total").await, Some(4.0), "wsserver appended them");
    assert_eq!(stack.metric("crier_recovered_messages_total").await, Some(3.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_facility_without_history_says_so() {
    let stack = Stack::start(history_stack("100")).await;
    stack.publish_broadcast("news", "stored", 60).await;
    let mut client = RecoveringClient::new(&stack.ws_url("/ws/news?subscribe-broadcast"));
    assert!(client.connect(1, WAIT).await);
    let status = client.statuses[0].value.clone();
    assert_eq!(status, serde_json::json!({"type":"position","audience":"broadcast","epoch":null,"offset":null}));
    receive(&mut client, 1).await;
    assert_eq!(client.received, ["stored"], "the ws4redis replay, as a message object");
    stack.publish_broadcast("news", "live", 0).await;
    receive(&mut client, 2).await;
    // A reconnection with any position: the explicit no-history gap.
    let mut back = RecoveringClient::new(&stack.ws_url("/ws/news?subscribe-broadcast&recover=00000000000000aa:3"));
    assert!(back.connect(1, WAIT).await);
    assert_eq!(back.statuses[0].value["reason"], "no-history");
    // Nothing changes for a plain client.
    let mut plain = WsClient::open(&stack.ws_url("/ws/news?subscribe-broadcast")).await;
    assert_eq!(plain.expect_text(WAIT).await, "stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_echo_an_opted_in_publisher_does_not_get_its_own_messages_live() {
    let stack = Stack::start(history_stack("100").ws_args(&["--anonymous-flags", "*"])).await;
    let mut talker = RecoveringClient::new(&stack.ws_url("/ws/chat?subscribe-broadcast&publish-broadcast"));
    talker.contiguous = false;
    let mut listener = RecoveringClient::new(&stack.ws_url("/ws/chat?subscribe-broadcast"));
    assert!(talker.connect(1, WAIT).await);
    assert!(listener.connect(1, WAIT).await);
    talker.send_text("mine").await;
    stack.publish_broadcast("chat", "theirs", 0).await;
    receive(&mut listener, 2).await;
    receive(&mut talker, 1).await;
    assert_eq!(listener.received, ["mine", "theirs"]);
    assert_eq!(talker.received, ["theirs"], "its own copy is swallowed, the other message arrives");
}
