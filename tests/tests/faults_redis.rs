//! Redis faults provoked for real: the server killed and restarted on the same socket, and the
//! server frozen with SIGSTOP. Client sockets must stay open, readiness and metrics must tell,
//! the publish API must answer 503 while Redis is away, and traffic must resume on its return.

use std::time::{Duration, Instant};

use crier_tests::{http, try_wait_until, wait_until, Event, Stack, WsClient};
use serde_json::json;

const RECV: Duration = Duration::from_secs(5);
/// wsserver probes its pub/sub connection every 1 s with a 3 s timeout.
const DETECT_FREEZE: Duration = Duration::from_secs(8);
/// How soon after Redis is back messages must flow again.
const RECOVERY: Duration = Duration::from_secs(2);

async fn readyz(stack: &Stack) -> u16 {
    http::try_get(&stack.admin_url("/readyz")).await.map_or(0, |r| r.status)
}

async fn subscribers(stack: &Stack, facility: &str, n: usize) -> Vec<WsClient> {
    let mut clients = Vec::new();
    for _ in 0..n {
        clients.push(stack.connect(&format!("/ws/{facility}?subscribe-broadcast")).await);
    }
    stack.sync(&stack.broadcast_channel(facility), &mut clients).await;
    clients
}

/// Asserts that no client was closed (a close frame or the connection's end) so far.
fn assert_all_open(clients: &mut [WsClient], when: &str) {
    for (i, client) in clients.iter_mut().enumerate() {
        while let Some(event) = client.try_recv() {
            match event {
                Event::Close { .. } | Event::Ended(_) => {
                    panic!("client {i} was disconnected {when}: {event:?}")
                }
                Event::Text(_) | Event::Binary(_) => {}
            }
        }
    }
}

/// Publishes numbered probes straight to Redis every 20 ms until every client has received
/// one; returns how long that took. Panics after `limit` plus a grace period.
async fn time_until_delivery(stack: &Stack, channel: &str, clients: &mut [WsClient], limit: Duration) -> Duration {
    let start = Instant::now();
    let mut got = vec![false; clients.len()];
    let mut n = 0u64;
    let give_up = limit + Duration::from_secs(10);
    while got.iter().any(|g| !g) {
        assert!(
            start.elapsed() < give_up,
            "{} of {} clients received nothing within {give_up:?} of Redis' return",
            got.iter().filter(|g| !**g).count(),
            clients.len()
        );
        stack.redis.publish(channel, &format!("after-return-{n}")).await;
        n += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
        for (i, client) in clients.iter_mut().enumerate() {
            while let Some(event) = client.try_recv() {
                match event {
                    Event::Text(t) if t.starts_with("after-return-") => got[i] = true,
                    other => panic!("client {i} got {other:?} after Redis' return"),
                }
            }
        }
    }
    start.elapsed()
}

/// Drains leftover probes so that the next expected message is the next one read.
async fn drain(clients: &mut [WsClient]) {
    for client in clients.iter_mut() {
        while let Some(event) = client.recv(Duration::from_millis(100)).await {
            assert!(matches!(&event, Event::Text(t) if t.starts_with("after-return-")), "unexpected {event:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_keeps_sockets_open_and_traffic_resumes_on_its_return() {
    let mut stack = Stack::start_default().await;
    let channel = stack.broadcast_channel("news");
    let mut clients = subscribers(&stack, "news", 3).await;
    assert_eq!(readyz(&stack).await, 200);
    assert_eq!(stack.metric("crier_ws_redis_up").await, Some(1.0));
    let reconnects = stack.metric("crier_ws_redis_reconnects_total").await.expect("crier_ws_redis_reconnects_total");

    stack.redis.stop().await;
    wait_until(Duration::from_secs(5), "/readyz answers 503", || async { readyz(&stack).await == 503 }).await;
    assert_eq!(stack.metric("crier_ws_redis_up").await, Some(0.0));

    // The publish API fails clearly rather than hanging or pretending.
    let started = Instant::now();
    let response = stack.publish(&json!({"facility": "news", "broadcast": true, "message": "lost", "expire": 0})).await;
    assert_eq!(response.status, 503, "publish while Redis is down: {}", response.body);
    assert!(
        response.json()["error"].as_str().is_some_and(|e| !e.is_empty()),
        "503 without an error message: {}",
        response.body
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the 503 took {:?} (webserver's Redis timeout is 2 s)",
        started.elapsed()
    );
    assert_all_open(&mut clients, "while Redis was down");

    // A session cookie cannot be checked without Redis: refused as unavailable, not as 403.
    let refused = crier_tests::WsClient::connect_with_headers(
        &stack.ws_url("/ws/news?subscribe-session"),
        &[("cookie", "sessionid=some-session-key")],
    )
    .await
    .err()
    .expect("a session upgrade while Redis is down is refused");
    assert_eq!(refused.status, 503, "{refused}");
    let metrics = stack.metrics().await;
    assert!(
        crier_tests::prometheus::sample(&metrics, r#"crier_ws_upgrades_refused_total{reason="unavailable"}"#)
            >= Some(1.0),
        "refusal counted as unavailable"
    );

    stack.redis.restart().await;
    let returned = Instant::now();
    let took = time_until_delivery(&stack, &channel, &mut clients, RECOVERY).await;
    eprintln!("messages flowed again {took:?} after Redis came back");
    assert!(took <= RECOVERY, "messages published after Redis came back took {took:?} to arrive (limit {RECOVERY:?})");
    wait_until(Duration::from_secs(5), "/readyz answers 200 again", || async { readyz(&stack).await == 200 }).await;
    eprintln!("readyz 200 again {:?} after Redis came back", returned.elapsed());
    assert_eq!(stack.metric("crier_ws_redis_up").await, Some(1.0));
    assert!(
        stack.metric("crier_ws_redis_reconnects_total").await >= Some(reconnects + 1.0),
        "crier_ws_redis_reconnects_total did not move"
    );
    assert_eq!(stack.redis.numsub(&channel).await, 1, "resubscribed once for all sockets");
    drain(&mut clients).await;

    // The API works again and reaches the same, never closed, sockets.
    let ok = try_wait_until(Duration::from_secs(5), || async {
        stack.publish(&json!({"facility": "news", "broadcast": true, "message": "back", "expire": 0})).await.status
            == 200
    })
    .await;
    assert!(ok, "publish API did not answer 200 within 5 s of Redis' return");
    for (i, client) in clients.iter_mut().enumerate() {
        assert_eq!(client.expect_text(RECV).await, "back", "client {i}");
    }
    assert_eq!(stack.metric("crier_ws_sockets_open").await, Some(3.0));
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_redis_is_detected_by_the_probe_and_recovered_from() {
    let stack = Stack::start_default().await;
    let channel = stack.broadcast_channel("news");
    let mut clients = subscribers(&stack, "news", 2).await;

    stack.redis.pause();
    let frozen = Instant::now();
    let detected = try_wait_until(DETECT_FREEZE, || async { readyz(&stack).await == 503 }).await;
    let took = frozen.elapsed();
    if !detected {
        stack.redis.resume();
    }
    assert!(detected, "/readyz still 200 {DETECT_FREEZE:?} after Redis was frozen (SIGSTOP)");
    eprintln!("frozen Redis detected after {took:?}");
    assert_eq!(stack.metric("crier_ws_redis_up").await, Some(0.0));

    // The API gives up within its timeout instead of hanging.
    let started = Instant::now();
    let response = stack.publish(&json!({"facility": "news", "broadcast": true, "message": "lost", "expire": 0})).await;
    let api_took = started.elapsed();
    assert_eq!(response.status, 503, "publish while Redis is frozen: {}", response.body);
    assert!(api_took < Duration::from_secs(5), "publish took {api_took:?} to fail");
    assert_all_open(&mut clients, "while Redis was frozen");

    stack.redis.resume();
    let took = time_until_delivery(&stack, &channel, &mut clients, RECOVERY * 3).await;
    eprintln!("messages flowed again {took:?} after Redis was resumed");
    wait_until(Duration::from_secs(10), "/readyz answers 200 again", || async { readyz(&stack).await == 200 }).await;
    drain(&mut clients).await;
    stack.publish_broadcast("news", "thawed", 0).await;
    for client in &mut clients {
        assert_eq!(client.expect_text(RECV).await, "thawed");
    }
}
