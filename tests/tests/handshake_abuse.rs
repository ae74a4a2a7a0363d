//! Abusive or broken upgrade requests, written by hand: slow and idle header senders are cut at
//! --handshake-timeout, oversized headers get 431, the per-address and global connection
//! limits refuse with 503, and malformed upgrades get 400/426 — while the server keeps serving.

use std::time::{Duration, Instant};

use crier_tests::raw::{upgrade_request, RawConn, RawResponse, Read, SAMPLE_KEY};
use crier_tests::{prometheus, Stack, StackOptions, WsClient};

const ANSWER: Duration = Duration::from_secs(5);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(1);
const SLACK: Duration = Duration::from_secs(2);

async fn ask(stack: &Stack, request: impl AsRef<[u8]>) -> RawResponse {
    let request = request.as_ref();
    let mut conn = RawConn::connect(stack.ws_addr()).await;
    conn.send(request).await;
    conn.read_response(ANSWER)
        .await
        .unwrap_or_else(|e| panic!("no answer to {:?}: {e:?}", String::from_utf8_lossy(request)))
}

/// Still upgrades and echoes.
async fn assert_serving(stack: &Stack) {
    let mut ws = stack.connect_direct("/ws/echo").await;
    ws.send_text("alive").await.expect("send");
    assert_eq!(ws.expect_text(ANSWER).await, "alive");
}

fn base() -> StackOptions {
    StackOptions::default().without_nginx().without_webserver().ws_args(&["--echo-test-facility", "echo"])
}

/// How a connection that never completes its headers ends: the time it took, and how.
async fn cut_after(conn: &mut RawConn, started: Instant) -> (Duration, String) {
    let limit = HANDSHAKE_TIMEOUT + SLACK + SLACK;
    let how = match conn.read_response(limit).await {
        Ok(response) => format!("answered {} {:?}", response.status, response.body),
        Err(Read::Eof) => "closed".to_owned(),
        Err(Read::Error(e)) => format!("reset ({e})"),
        Err(Read::TimedOut) => panic!(
            "a connection with incomplete headers was still open {limit:?} after it started \
             (--handshake-timeout {HANDSHAKE_TIMEOUT:?})"
        ),
    };
    (started.elapsed(), how)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_header_senders_are_cut_at_the_handshake_timeout() {
    let stack = Stack::start(base().ws_args(&["--handshake-timeout", "1s"])).await;

    // Half a request, then nothing.
    let started = Instant::now();
    let mut half = RawConn::connect(stack.ws_addr()).await;
    half.send(b"GET /ws/echo HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n").await;
    let (took, how) = cut_after(&mut half, started).await;
    eprintln!("half a request: {how} after {took:?}");
    assert!(took <= HANDSHAKE_TIMEOUT + SLACK, "cut after {took:?}");

    // A byte every 200 ms: dripping must not extend the deadline.
    let started = Instant::now();
    let mut drip = RawConn::connect(stack.ws_addr()).await;
    let request =
        upgrade_request("/ws/echo", &["X-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"]);
    let mut ended = None;
    for byte in request.as_bytes() {
        if drip.try_send(&[*byte]).await.is_err() {
            ended = Some(started.elapsed());
            break;
        }
        if started.elapsed() > HANDSHAKE_TIMEOUT + SLACK * 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let took = match ended {
        Some(took) => took,
        None => cut_after(&mut drip, started).await.0,
    };
    eprintln!("dripping headers cut after {took:?}");
    assert!(took <= HANDSHAKE_TIMEOUT + SLACK, "a client dripping header bytes kept its connection for {took:?}");

    // Connected, nothing sent at all.
    let started = Instant::now();
    let mut idle = RawConn::connect(stack.ws_addr()).await;
    let (took, how) = cut_after(&mut idle, started).await;
    eprintln!("idle connection: {how} after {took:?}");
    assert!(took <= HANDSHAKE_TIMEOUT + SLACK, "an idle connection was kept {took:?}");

    assert_serving(&stack).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_get_431() {
    let stack = Stack::start(base()).await;
    let huge = format!("X-Huge: {}", "h".repeat(20 * 1024));
    let response = ask(&stack, &upgrade_request("/ws/echo", &[&huge])).await;
    assert_eq!(response.status, 431, "{response:?}");

    let many: Vec<String> = (0..400).map(|i| format!("X-Many-{i}: {}", "m".repeat(40))).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let response = ask(&stack, &upgrade_request("/ws/echo", &many)).await;
    assert!(response.status == 431 || response.status == 400, "400 headers of 50 bytes: {response:?}");
    assert_serving(&stack).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_address_limit_refuses_with_503_and_frees_slots_on_close() {
    let stack = Stack::start(base().ws_args(&["--max-connections-per-ip", "3"])).await;
    let url = stack.direct_ws_url("/ws/echo");
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(WsClient::open(&url).await);
    }
    let refused = WsClient::connect(&url).await.err().expect("4th refused");
    assert_eq!(refused.status, 503, "{refused}");
    assert_eq!(refused.body.trim(), "too many connections from this address");
    let metrics = stack.metrics().await;
    assert!(
        prometheus::sample(&metrics, r#"crier_ws_upgrades_refused_total{reason="full"}"#) >= Some(1.0),
        "refusal counted as full:\n{metrics}"
    );

    // Closing one frees its slot.
    let first = open.remove(0);
    first.close().await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match WsClient::connect(&url).await {
            Ok(ws) => {
                open.push(ws);
                break;
            }
            Err(e) if e.status == 503 && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("the closed socket's slot was not freed: {e}"),
        }
    }
    assert_eq!(open.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_connection_limit_refuses_with_503() {
    let stack = Stack::start(base().ws_args(&["--max-connections", "2"])).await;
    let url = stack.direct_ws_url("/ws/echo");
    let _a = WsClient::open(&url).await;
    let _b = WsClient::open(&url).await;
    let refused = WsClient::connect(&url).await.err().expect("3rd refused");
    assert_eq!(refused.status, 503, "{refused}");
    assert_eq!(refused.body.trim(), "server is at its connection limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_upgrades_get_400_or_426_and_the_server_goes_on() {
    let stack = Stack::start(base()).await;
    let bad_before =
        prometheus::sample(&stack.metrics().await, r#"crier_ws_upgrades_refused_total{reason="bad_request"}"#)
            .expect("bad_request counter");
    let head = |lines: &[&str]| {
        let mut r = String::from("GET /ws/echo HTTP/1.1\r\nHost: localhost\r\n");
        for l in lines {
            r.push_str(l);
            r.push_str("\r\n");
        }
        r.push_str("\r\n");
        r
    };
    let key = format!("Sec-WebSocket-Key: {SAMPLE_KEY}");
    let key = key.as_str();
    let up = ["Upgrade: websocket", "Connection: Upgrade"];

    let missing_key = ask(&stack, &head(&[up[0], up[1], "Sec-WebSocket-Version: 13"])).await;
    assert_eq!(missing_key.status, 400, "missing key: {missing_key:?}");
    assert!(missing_key.body.contains("Sec-WebSocket-Key"), "{missing_key:?}");

    let short_key =
        ask(&stack, &head(&[up[0], up[1], "Sec-WebSocket-Key: c2hvcnQ=", "Sec-WebSocket-Version: 13"])).await;
    assert_eq!(short_key.status, 400, "bad key: {short_key:?}");

    let v8 = ask(&stack, &head(&[up[0], up[1], key, "Sec-WebSocket-Version: 8"])).await;
    assert_eq!(v8.status, 426, "version 8: {v8:?}");
    assert_eq!(v8.header("sec-websocket-version"), Some("13"), "{v8:?}");

    let no_version = ask(&stack, &head(&[up[0], up[1], key])).await;
    assert_eq!(no_version.status, 426, "no version: {no_version:?}");
    assert_eq!(no_version.header("sec-websocket-version"), Some("13"));

    let post = upgrade_request("/ws/echo", &["Content-Length: 0"]).replacen("GET", "POST", 1);
    let post = ask(&stack, &post).await;
    assert_eq!(post.status, 400, "POST upgrade: {post:?}");

    let http10 = upgrade_request("/ws/echo", &[]).replacen("HTTP/1.1", "HTTP/1.0", 1);
    let http10 = ask(&stack, &http10).await;
    assert_eq!(http10.status, 400, "HTTP/1.0 upgrade: {http10:?}");

    let no_upgrade = ask(&stack, &head(&[key, "Sec-WebSocket-Version: 13"])).await;
    assert_eq!(no_upgrade.status, 400, "no Upgrade header: {no_upgrade:?}");

    let garbage = ask(&stack, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n").await;
    assert_eq!(garbage.status, 400, "TLS hello on the plain port: {garbage:?}");

    let bad_after =
        prometheus::sample(&stack.metrics().await, r#"crier_ws_upgrades_refused_total{reason="bad_request"}"#)
            .expect("bad_request counter");
    assert!(bad_after - bad_before >= 7.0, "bad upgrades counted: {bad_before} → {bad_after}");
    assert_serving(&stack).await;
}
