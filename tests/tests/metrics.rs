//! wsserver's admin /metrics: every documented series is present with its type, and each one
//! moves when the thing it counts happens.

use std::time::Duration;

use crier_tests::{http, prometheus, wait_until, Stack, StackOptions, WsClient};

const RECV: Duration = Duration::from_secs(5);

const COUNTERS: [&str; 6] = [
    "crier_ws_upgrades_accepted_total",
    "crier_ws_messages_in_total",
    "crier_ws_messages_out_total",
    "crier_ws_slow_consumer_closes_total",
    "crier_ws_redis_reconnects_total",
    "crier_ws_upgrades_refused_total",
];
const GAUGES: [&str; 2] = ["crier_ws_sockets_open", "crier_ws_redis_up"];
const REASONS: [&str; 6] = ["bad_request", "origin", "forbidden", "full", "draining", "unavailable"];

fn refused(text: &str, reason: &str) -> f64 {
    prometheus::sample(text, &format!("crier_ws_upgrades_refused_total{{reason=\"{reason}\"}}"))
        .unwrap_or_else(|| panic!("no refused sample for {reason}:\n{text}"))
}

fn value(text: &str, series: &str) -> f64 {
    prometheus::sample(text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_series_is_exposed_with_its_type() {
    let stack = Stack::start(StackOptions::default().without_nginx().without_webserver()).await;
    let response = http::get(&stack.admin_url("/metrics")).await;
    assert_eq!(response.status, 200);
    assert!(response.header("content-type").is_some_and(|c| c.starts_with("text/plain")), "{:?}", response.headers);
    let text = &response.body;
    for name in COUNTERS {
        assert_eq!(prometheus::metric_type(text, name), Some("counter"), "{name}");
    }
    for name in GAUGES {
        assert_eq!(prometheus::metric_type(text, name), Some("gauge"), "{name}");
    }
    assert_eq!(prometheus::metric_type(text, "crier_ws_delivery_seconds"), Some("histogram"));
    for reason in REASONS {
        refused(text, reason);
    }
    assert_eq!(value(text, "crier_ws_redis_up"), 1.0);
    assert_eq!(value(text, "crier_ws_sockets_open"), 0.0);
    for series in ["crier_ws_delivery_seconds_count", "crier_ws_delivery_seconds_sum"] {
        value(text, series);
    }
    value(text, r#"crier_ws_delivery_seconds_bucket{le="+Inf"}"#);
    // Every sample line parses.
    let samples = prometheus::samples(text);
    let lines = text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).count();
    assert_eq!(samples.len(), lines, "unparseable sample lines in:\n{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_with_traffic_and_refusals() {
    let stack = Stack::start(StackOptions::default().without_webserver().ws_args(&[
        "--anonymous-flags",
        "*",
        "--allowed-origins",
        "https://good.example",
    ]))
    .await;
    let before = stack.metrics().await;
    let channel = stack.broadcast_channel("m");

    // Sockets open and accepted upgrades.
    let mut subscribers = Vec::new();
    for _ in 0..3 {
        subscribers.push(stack.connect("/ws/m?subscribe-broadcast").await);
    }
    stack.sync(&channel, &mut subscribers).await;
    let publisher = stack.connect("/ws/m?publish-broadcast").await;
    // A socket counts as open once its task has started, just after the client's upgrade.
    wait_until(Duration::from_secs(5), "crier_ws_sockets_open is 4", || async {
        stack.metric("crier_ws_sockets_open").await == Some(4.0)
    })
    .await;
    let mid = stack.metrics().await;
    assert_eq!(value(&mid, "crier_ws_sockets_open"), 4.0);
    assert_eq!(
        value(&mid, "crier_ws_upgrades_accepted_total") - value(&before, "crier_ws_upgrades_accepted_total"),
        4.0
    );

    // Messages in (from a client) and out (to each subscriber), with delivery latency.
    for i in 0..5 {
        publisher.send_text(&format!("m{i}")).await.expect("send");
    }
    for s in &mut subscribers {
        for i in 0..5 {
            assert_eq!(s.expect_text(RECV).await, format!("m{i}"));
        }
    }
    stack.redis.publish(&channel, "from redis").await;
    for s in &mut subscribers {
        assert_eq!(s.expect_text(RECV).await, "from redis");
    }
    let moved = stack.metrics().await;
    assert!(
        value(&moved, "crier_ws_messages_in_total") - value(&mid, "crier_ws_messages_in_total") >= 5.0,
        "messages_in"
    );
    assert!(
        value(&moved, "crier_ws_messages_out_total") - value(&mid, "crier_ws_messages_out_total") >= 18.0,
        "messages_out: 6 messages to 3 subscribers"
    );
    let count = value(&moved, "crier_ws_delivery_seconds_count");
    assert!(count - value(&mid, "crier_ws_delivery_seconds_count") >= 1.0, "delivery histogram moved");
    assert!(value(&moved, "crier_ws_delivery_seconds_sum") > 0.0);
    // Buckets are cumulative and end at the count.
    let buckets: Vec<f64> = prometheus::samples(&moved)
        .into_iter()
        .filter(|(k, _)| k.starts_with("crier_ws_delivery_seconds_bucket"))
        .map(|(_, v)| v)
        .collect();
    assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");
    assert_eq!(buckets.last().copied(), Some(count));

    // Refusals by reason.
    let bad = WsClient::connect(&stack.ws_url("/ws/a%01")).await.err().expect("400");
    assert_eq!(bad.status, 400);
    let origin = WsClient::connect_with_headers(&stack.ws_url("/ws/m"), &[("origin", "https://evil.example")])
        .await
        .err()
        .expect("403");
    assert_eq!(origin.status, 403);
    let forbidden = WsClient::connect(&stack.ws_url("/ws/presence/m?publish-broadcast"))
        .await
        .err()
        .expect("presence facilities are read-only");
    assert_eq!(forbidden.status, 403);
    let refusals = stack.metrics().await;
    for (reason, n) in [("bad_request", 1.0), ("origin", 1.0), ("forbidden", 1.0)] {
        assert_eq!(refused(&refusals, reason) - refused(&moved, reason), n, "refused{{reason={reason}}}");
    }

    // Sockets close: the gauge comes back down.
    drop(publisher);
    for s in subscribers {
        s.close().await;
    }
    wait_until(Duration::from_secs(5), "crier_ws_sockets_open is 0", || async {
        stack.metric("crier_ws_sockets_open").await == Some(0.0)
    })
    .await;

    // Redis loss and return.
    let mut stack = stack;
    stack.redis.restart().await;
    wait_until(Duration::from_secs(10), "crier_ws_redis_reconnects_total moves", || async {
        stack.metric("crier_ws_redis_reconnects_total").await > Some(value(&before, "crier_ws_redis_reconnects_total"))
    })
    .await;
    wait_until(Duration::from_secs(10), "crier_ws_redis_up is 1 again", || async {
        stack.metric("crier_ws_redis_up").await == Some(1.0)
    })
    .await;
}
