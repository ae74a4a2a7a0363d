//! Foundation end-to-end tests: publish → Redis → wsserver → nginx → websocket client, replay,
//! bursts, ws4redis channel compatibility, API errors, and Redis connection economy.

use std::time::Duration;

use crier_tests::raw::RawConn;
use crier_tests::{http, wait_until, Stack, StackOptions, WsClient};
use serde_json::json;

const RECV: Duration = Duration::from_secs(5);
/// Bounded window for "receives nothing" checks.
const QUIET: Duration = Duration::from_millis(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_broadcast_reaches_subscribers_of_its_facility_only() {
    let stack = Stack::start_default().await;
    let mut chat = [stack.connect("/ws/chat?subscribe-broadcast").await];
    let mut news = [stack.connect("/ws/news?subscribe-broadcast").await];
    stack.sync(&stack.broadcast_channel("chat"), &mut chat).await;
    stack.sync(&stack.broadcast_channel("news"), &mut news).await;

    let answer = stack.publish_broadcast("chat", "hello chat", 0).await;
    assert_eq!(answer["channels"], 1, "{answer}");
    assert_eq!(answer["receivers"], 1, "wsserver subscribes once per channel: {answer}");
    assert_eq!(chat[0].expect_text(RECV).await, "hello chat");

    // Redis delivers in publish order over wsserver's one pub/sub connection, so if the chat
    // message had gone to the news socket it would arrive before the news message.
    stack.publish_broadcast("news", "hello news", 0).await;
    assert_eq!(news[0].expect_text(RECV).await, "hello news");
    news[0].expect_silence(QUIET).await;
    chat[0].expect_silence(QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_with_expire_is_replayed_to_late_subscribers() {
    let stack = Stack::start_default().await;
    let channel = stack.broadcast_channel("chat");

    stack.publish_broadcast("chat", "kept for later", 60).await;
    assert_eq!(stack.redis.get(&channel).await.as_deref(), Some("kept for later"));
    let ttl = stack.redis.ttl(&channel).await;
    assert!((1..=60).contains(&ttl), "TTL of {channel} is {ttl}");

    let mut late = stack.connect("/ws/chat?subscribe-broadcast").await;
    assert_eq!(late.expect_text(RECV).await, "kept for later", "replay on connect");
    // Exactly one replayed message, then live traffic.
    stack.sync(&channel, std::slice::from_mut(&mut late)).await;
    stack.publish_broadcast("chat", "live", 60).await;
    assert_eq!(late.expect_text(RECV).await, "live");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_with_expire_zero_is_not_stored_nor_replayed() {
    let stack = Stack::start_default().await;
    let channel = stack.broadcast_channel("news");

    let answer = stack.publish_broadcast("news", "fleeting", 0).await;
    assert_eq!(answer["channels"], 1, "{answer}");
    assert_eq!(answer["receivers"], 0, "nobody subscribed yet: {answer}");
    assert!(!stack.redis.exists(&channel).await, "expire 0 must not store {channel}");

    // A replay is sent before any live message, so if the first thing the new socket gets is
    // a sync probe, nothing was replayed (sync_clients panics on any other message).
    let mut late = [stack.connect("/ws/news?subscribe-broadcast").await];
    stack.sync(&channel, &mut late).await;
    late[0].expect_silence(QUIET).await;
}

async fn subscribers(stack: &Stack, path: &str, n: usize) -> Vec<WsClient> {
    let mut clients = Vec::with_capacity(n);
    for _ in 0..n {
        clients.push(stack.connect(path).await);
    }
    clients
}

async fn assert_all_receive_in_order(clients: &mut [WsClient], expected: &[String]) {
    for (i, client) in clients.iter_mut().enumerate() {
        for (k, want) in expected.iter().enumerate() {
            let got = client
                .recv_text(Duration::from_secs(10))
                .await
                .unwrap_or_else(|| panic!("client {i} stopped after {k} of {} messages", expected.len()));
            assert_eq!(&got, want, "client {i}, message {k}");
        }
        client.expect_silence(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_of_1000_redis_publishes_reaches_50_subscribers_complete_and_in_order() {
    let stack = Stack::start_default().await;
    let channel = stack.broadcast_channel("burst");
    let mut clients = subscribers(&stack, "/ws/burst?subscribe-broadcast", 50).await;
    stack.sync(&channel, &mut clients).await;

    let messages: Vec<String> = (0..1000).map(|i| format!("redis-{i:04}")).collect();
    stack.redis.publish_pipelined(&channel, &messages).await;
    assert_all_receive_in_order(&mut clients, &messages).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_of_1000_api_publishes_reaches_50_subscribers_complete_and_in_order() {
    let stack = Stack::start_default().await;
    let channel = stack.broadcast_channel("burst");
    let mut clients = subscribers(&stack, "/ws/burst?subscribe-broadcast", 50).await;
    stack.sync(&channel, &mut clients).await;

    let messages: Vec<String> = (0..1000).map(|i| format!("api-{i:04}")).collect();
    for message in &messages {
        let answer = stack.publish_broadcast("burst", message, 0).await;
        assert_eq!(answer["receivers"], 1, "{answer}");
    }
    assert_all_receive_in_order(&mut clients, &messages).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_redis_publish_on_the_ws4redis_channel_is_delivered() {
    let stack = Stack::start(StackOptions::default().prefix("ws4redis")).await;
    // The name a ws4redis publisher (RedisPublisher with WS4REDIS_PREFIX = "ws4redis") uses.
    let channel = "ws4redis:broadcast:chat";
    assert_eq!(stack.broadcast_channel("chat"), channel);

    let mut socket = [stack.connect("/ws/chat?subscribe-broadcast").await];
    stack.sync(channel, &mut socket).await;
    let receivers = stack.redis.publish(channel, "from django").await;
    assert_eq!(receivers, 1);
    assert_eq!(socket[0].expect_text(RECV).await, "from django");

    // And the API writes the same channel and key.
    stack.publish_broadcast("chat", "from the api", 30).await;
    assert_eq!(socket[0].expect_text(RECV).await, "from the api");
    assert_eq!(stack.redis.get(channel).await.as_deref(), Some("from the api"));
}

fn assert_json_error(response: &http::HttpResponse, status: u16, what: &str) {
    assert_eq!(response.status, status, "{what}: {}", response.body);
    let body = response.json();
    let error = body["error"].as_str().unwrap_or_else(|| panic!("{what}: no \"error\" string in {body}"));
    assert!(!error.is_empty(), "{what}: empty error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_api_rejects_bad_requests_with_json_errors() {
    let stack = Stack::start(StackOptions::default().max_body(1024)).await;
    let mut socket = [stack.connect("/ws/chat?subscribe-broadcast").await];
    stack.sync(&stack.broadcast_channel("chat"), &mut socket).await;
    let url = stack.front_url("/api/publish");
    let valid = json!({"facility": "chat", "broadcast": true, "message": "must not arrive"}).to_string();
    let token = Some(stack.publish_token());

    assert_json_error(&http::post_json(&url, None, valid.clone()).await, 401, "missing token");
    assert_json_error(&http::post_json(&url, Some("wrong-token"), valid.clone()).await, 401, "wrong token");
    assert_json_error(&http::post_json(&url, token, "{\"facility\": \"chat\", ").await, 400, "malformed JSON");
    let no_audience = json!({"facility": "chat", "message": "x"}).to_string();
    assert_json_error(&http::post_json(&url, token, no_audience).await, 400, "no audience");
    let empty_facility = json!({"facility": "", "broadcast": true, "message": "x"}).to_string();
    assert_json_error(&http::post_json(&url, token, empty_facility).await, 400, "empty facility");
    let too_large = json!({"facility": "chat", "broadcast": true, "message": "x".repeat(2000)}).to_string();
    assert!(too_large.len() > 1024);
    assert_json_error(&http::post_json(&url, token, too_large).await, 413, "body over --max-body");

    // None of them published anything: the next message is the valid one.
    stack.publish_broadcast("chat", "valid", 0).await;
    assert_eq!(socket[0].expect_text(RECV).await, "valid");
    socket[0].expect_silence(QUIET).await;
}

/// A publisher that sends its request and then closes its sending side (`printf .. | nc`
/// does) still gets its answer, and the message goes out: a request read whole is carried out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_followed_by_a_half_close_is_answered_and_delivered() {
    let stack = Stack::start_default().await;
    let mut chat = [stack.connect("/ws/chat?subscribe-broadcast").await];
    stack.sync(&stack.broadcast_channel("chat"), &mut chat).await;
    let body = json!({"facility": "chat", "broadcast": true, "message": "half-closed"}).to_string();
    let request = format!(
        "POST /api/publish HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        stack.publish_token(),
        body.len()
    );
    let mut conn = RawConn::connect(stack.web_addr()).await;
    conn.send(request.as_bytes()).await;
    conn.shutdown_write().await;
    let response = conn.read_response(RECV).await.expect("an answer after the half-close");
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(chat[0].expect_text(RECV).await, "half-closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_without_upgrade_is_answered_400_and_the_server_goes_on() {
    let stack = Stack::start_default().await;
    for url in [stack.front_url("/ws/x"), format!("http://{}/ws/x", stack.ws_addr())] {
        let response = http::get(&url).await;
        assert_eq!(response.status, 400, "{url}: {}", response.body);
        assert_eq!(response.body.trim(), "Client does not wish to upgrade to a websocket", "{url}");
    }

    let mut socket = [stack.connect("/ws/x?subscribe-broadcast").await];
    stack.sync(&stack.broadcast_channel("x"), &mut socket).await;
    stack.publish_broadcast("x", "still serving", 0).await;
    assert_eq!(socket[0].expect_text(RECV).await, "still serving");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_is_unsubscribed_when_the_last_client_leaves() {
    let mut stack = Stack::start_default().await;
    let channel = stack.broadcast_channel("chat");
    // wsserver may hold internal channels of its own (e.g. session revocations).
    let internal = stack.metric("crier_ws_redis_channels").await.expect("crier_ws_redis_channels");
    let mut clients = subscribers(&stack, "/ws/chat?subscribe-broadcast", 3).await;
    stack.sync(&channel, &mut clients).await;
    assert_eq!(stack.redis.numsub(&channel).await, 1, "one subscription for three sockets");
    assert_eq!(stack.metric("crier_ws_redis_channels").await, Some(internal + 1.0));

    // One leaves with a close handshake, one just drops its connection.
    let mut clients = clients.into_iter();
    let first = clients.next().unwrap();
    let second = clients.next().unwrap();
    let mut last = [clients.next().unwrap()];
    assert_eq!(first.close().await.map(|(code, _)| code), Some(1000), "server answers the close");
    second.abort();

    // The remaining socket still gets messages, so the channel is still subscribed.
    stack.publish_broadcast("chat", "for the last one", 0).await;
    assert_eq!(last[0].expect_text(RECV).await, "for the last one");
    assert_eq!(stack.redis.numsub(&channel).await, 1);

    let [last] = last;
    last.close().await;
    wait_until(Duration::from_secs(10), "PUBSUB NUMSUB is 0", || async { stack.redis.numsub(&channel).await == 0 })
        .await;
    wait_until(Duration::from_secs(10), "crier_ws_sockets_open is 0", || async {
        stack.metric("crier_ws_sockets_open").await == Some(0.0)
    })
    .await;
    assert_eq!(stack.metric("crier_ws_redis_channels").await, Some(internal));
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_sockets_use_no_more_redis_connections_than_one() {
    let stack = Stack::start_default().await;
    let facilities: Vec<String> = (0..50).map(|i| format!("room{i}")).collect();
    let internal = stack.metric("crier_ws_redis_channels").await.expect("crier_ws_redis_channels");

    let mut first = [stack.connect_direct(&format!("/ws/{}?subscribe-broadcast", facilities[0])).await];
    stack.sync(&stack.broadcast_channel(&facilities[0]), &mut first).await;
    let with_one = stack.redis.client_list().await;

    // 500 sockets over 50 facilities (10 each), all subscribed.
    let mut groups: Vec<Vec<WsClient>> = Vec::new();
    for (i, facility) in facilities.iter().enumerate() {
        let n = if i == 0 { 9 } else { 10 };
        let mut group = Vec::with_capacity(n);
        for _ in 0..n {
            group.push(stack.connect_direct(&format!("/ws/{facility}?subscribe-broadcast")).await);
        }
        groups.push(group);
    }
    groups[0].push(first.into_iter().next().unwrap());
    for (facility, group) in facilities.iter().zip(groups.iter_mut()) {
        stack.sync(&stack.broadcast_channel(facility), group).await;
    }
    assert_eq!(groups.iter().map(Vec::len).sum::<usize>(), 500);
    assert_eq!(stack.metric("crier_ws_sockets_open").await, Some(500.0));
    assert_eq!(stack.metric("crier_ws_redis_channels").await, Some(internal + 50.0));
    for facility in &facilities {
        assert_eq!(stack.redis.numsub(&stack.broadcast_channel(facility)).await, 1, "{facility}");
    }

    let with_500 = stack.redis.client_list().await;
    eprintln!("redis connections: {} with one socket, {} with 500", with_one.len(), with_500.len());
    let subscribers: Vec<&String> = with_500.iter().filter(|l| field(l, "sub").is_some_and(|n| n != "0")).collect();
    assert_eq!(subscribers.len(), 1, "exactly one pub/sub connection: {subscribers:#?}");
    assert_eq!(field(subscribers[0], "sub"), Some(format!("{}", internal as u64 + 50).as_str()), "{}", subscribers[0]);
    assert!(
        with_500.len() <= with_one.len(),
        "Redis connections grew from {} with one socket to {} with 500:\nwith one:\n{}\nwith 500:\n{}",
        with_one.len(),
        with_500.len(),
        with_one.join("\n"),
        with_500.join("\n")
    );
}

/// A `key=value` field of a CLIENT LIST line.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split_whitespace().find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}
