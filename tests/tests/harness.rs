//! Checks of the harness itself against behaviour it must be able to observe: refused
//! handshakes (status and body), close frames, graceful shutdown.

use std::time::Duration;

use crier_tests::{Stack, StackOptions, WsClient};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_handshake_reports_status_and_body() {
    let stack = Stack::start(StackOptions::default().ws_args(&["--allowed-origins", "https://good.example"])).await;
    let url = stack.ws_url("/ws/chat?subscribe-broadcast");

    let refused =
        WsClient::connect_with_headers(&url, &[("origin", "https://evil.example")]).await.err().expect("refused");
    assert_eq!(refused.status, 403, "{refused}");
    assert_eq!(refused.body.trim(), "Origin not allowed");

    let mut ok =
        [WsClient::connect_with_headers(&url, &[("origin", "https://good.example")]).await.expect("allowed origin")];
    stack.sync(&stack.broadcast_channel("chat"), &mut ok).await;

    let nothing = WsClient::connect("ws://127.0.0.1:9/ws/chat").await.err().expect("nothing listens on port 9");
    assert_eq!(nothing.status, 0, "{nothing}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_sockets_with_1001_and_run_returns_ok() {
    let mut stack = Stack::start_default().await;
    let mut socket = [stack.connect("/ws/chat?subscribe-broadcast").await];
    stack.sync(&stack.broadcast_channel("chat"), &mut socket).await;
    stack.shutdown().await;
    let (code, _reason) = socket[0].expect_close(Duration::from_secs(5)).await;
    assert_eq!(code, 1001);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_keeps_the_socket_path_and_starts_empty() {
    let mut redis = crier_tests::Redis::start().await;
    let url = redis.url();
    let _: () = redis.query(redis::cmd("SET").arg("k").arg("v")).await;
    assert!(redis.exists("k").await);
    redis.restart().await;
    assert_eq!(redis.url(), url);
    assert!(!redis.exists("k").await, "no persistence across restarts");
    assert_eq!(redis.client_count().await, 0, "only the harness is connected");
}
