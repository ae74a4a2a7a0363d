//! Every refused upgrade is an HTTP answer with a reason, and the server goes on serving:
//! 400 (bad method, HTTP/1.0, no upgrade, bad key, bad facility), 426 (websocket version),
//! 403 (Origin, access rules, identity) and 503 (connection limit).

use std::time::{Duration, Instant};

use crier_tests::login::{connect_with_session, put_session};
use crier_tests::raw::{RawConn, SAMPLE_KEY};
use crier_tests::{Stack, StackOptions, WsClient};

const RECV: Duration = Duration::from_secs(5);

/// A good client still connects (through nginx) and receives a publication.
async fn assert_still_serving(stack: &Stack, after: &str) {
    let mut socket = [stack.connect("/ws/alive?subscribe-broadcast").await];
    stack.sync(&stack.broadcast_channel("alive"), &mut socket).await;
    let message = format!("still serving after {after}");
    stack.publish_broadcast("alive", &message, 0).await;
    assert_eq!(socket[0].expect_text(RECV).await, message);
}

/// A hand-written request: request line, then header lines, then an empty line.
fn request(request_line: &str, headers: &[&str]) -> String {
    let mut text = format!("{request_line}\r\nHost: localhost\r\n");
    for header in headers {
        text.push_str(header);
        text.push_str("\r\n");
    }
    text.push_str("\r\n");
    text
}

const UPGRADE: &str = "Upgrade: websocket";
const CONNECTION: &str = "Connection: Upgrade";
const VERSION: &str = "Sec-WebSocket-Version: 13";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_upgrades_are_answered_400_or_426_and_the_server_goes_on() {
    let stack = Stack::start_default().await;
    let key_line = format!("Sec-WebSocket-Key: {SAMPLE_KEY}");
    let key = key_line.as_str();
    let long_facility = format!("/ws/{}", "x".repeat(201));
    // (what, request, status, body starts with)
    let cases: Vec<(&str, String, u16, &str)> = vec![
        (
            "POST",
            request("POST /ws/chat HTTP/1.1", &[UPGRADE, CONNECTION, key, VERSION, "Content-Length: 0"]),
            400,
            "HTTP method must be a GET",
        ),
        (
            "HTTP/1.0",
            request("GET /ws/chat HTTP/1.0", &[UPGRADE, CONNECTION, key, VERSION]),
            400,
            "HTTP server protocol must be 1.1",
        ),
        (
            "no Upgrade header",
            request("GET /ws/chat HTTP/1.1", &[CONNECTION, key, VERSION]),
            400,
            "Client does not wish to upgrade to a websocket",
        ),
        (
            "Upgrade: h2c",
            request("GET /ws/chat HTTP/1.1", &["Upgrade: h2c", CONNECTION, key, VERSION]),
            400,
            "Client does not wish to upgrade to a websocket",
        ),
        (
            "no key",
            request("GET /ws/chat HTTP/1.1", &[UPGRADE, CONNECTION, VERSION]),
            400,
            "Sec-WebSocket-Key header is missing/empty",
        ),
        (
            "empty key",
            request("GET /ws/chat HTTP/1.1", &[UPGRADE, CONNECTION, "Sec-WebSocket-Key:", VERSION]),
            400,
            "Sec-WebSocket-Key header is missing/empty",
        ),
        (
            "short key",
            request("GET /ws/chat HTTP/1.1", &[UPGRADE, CONNECTION, "Sec-WebSocket-Key: short", VERSION]),
            400,
            "Invalid key",
        ),
        (
            "key of 10 bytes",
            request("GET /ws/chat HTTP/1.1", &[UPGRADE, CONNECTION, "Sec-WebSocket-Key: dGhlIHNhbXBsZQ==", VERSION]),
            400,
            "Invalid key",
        ),
        ("no version", request("GET /ws/chat HTTP/1.1", &[UPGRADE, CONNECTION, key]), 426, ""),
        (
            "version 8",
            request("GET /ws/chat HTTP/1.1", &[UPGRADE, CONNECTION, key, "Sec-WebSocket-Version: 8"]),
            426,
            "",
        ),
        (
            "control character in the facility",
            request("GET /ws/a%01b?subscribe-broadcast HTTP/1.1", &[UPGRADE, CONNECTION, key, VERSION]),
            400,
            "",
        ),
        (
            "facility over 200 bytes",
            request(&format!("GET {long_facility} HTTP/1.1"), &[UPGRADE, CONNECTION, key, VERSION]),
            400,
            "",
        ),
    ];
    for (what, text, status, body) in cases {
        let mut conn = RawConn::connect(stack.ws_addr()).await;
        conn.send(text.as_bytes()).await;
        let response = conn.read_response(RECV).await.unwrap_or_else(|e| panic!("{what}: no HTTP answer: {e:?}"));
        assert_eq!(response.status, status, "{what}: {response:?}");
        assert!(response.body.trim().starts_with(body), "{what}: body {:?}", response.body);
        assert!(!response.body.trim().is_empty(), "{what}: the answer gives a reason");
        if status == 426 {
            assert_eq!(response.header("sec-websocket-version"), Some("13"), "{what}: {response:?}");
        }
        assert!(response.header("upgrade").is_none(), "{what}: not upgraded: {response:?}");
        drop(conn);
        assert_still_serving(&stack, what).await;
    }

    // A facility of exactly 200 bytes is fine.
    RawConn::websocket(stack.ws_addr(), &format!("/ws/{}", "x".repeat(200))).await;

    // Through nginx, too: the same answers reach the client.
    let url = stack.ws_url("/ws/chat?subscribe-broadcast");
    let refused =
        WsClient::connect_with_headers(&url, &[("sec-websocket-version", "8")]).await.err().expect("version 8 refused");
    assert_eq!(refused.status, 426, "{refused}");
    assert_eq!(refused.headers.get("sec-websocket-version").and_then(|v| v.to_str().ok()), Some("13"));
    let refused =
        WsClient::connect_with_headers(&url, &[("sec-websocket-key", "short")]).await.err().expect("bad key refused");
    assert_eq!(refused.status, 400, "{refused}");
    assert!(refused.body.starts_with("Invalid key"), "{refused}");
    let refused = WsClient::connect(&stack.ws_url("/ws/a%01b")).await.err().expect("control character refused");
    assert_eq!(refused.status, 400, "{refused}");
    // Without --allowed-origins every Origin is accepted.
    WsClient::connect_with_headers(&url, &[("origin", "https://anywhere.example")])
        .await
        .expect("no allow-list, any Origin");
    assert_still_serving(&stack, "the answers through nginx").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origins_outside_the_allow_list_are_refused_with_403() {
    let stack = Stack::start(
        StackOptions::default().ws_args(&["--allowed-origins", "http://good.example,https://also.example"]),
    )
    .await;
    let url = stack.ws_url("/ws/chat?subscribe-broadcast");
    for origin in
        ["https://evil.example", "http://good.example:8080", "https://good.example", "null", "http://good.example.evil"]
    {
        let refused = WsClient::connect_with_headers(&url, &[("origin", origin)])
            .await
            .err()
            .unwrap_or_else(|| panic!("Origin {origin} was upgraded"));
        assert_eq!(refused.status, 403, "{origin}: {refused}");
        assert_eq!(refused.body.trim(), "Origin not allowed", "{origin}");
        assert_still_serving(&stack, origin).await;
    }
    for origin in ["http://good.example", "https://also.example"] {
        let mut socket = [WsClient::connect_with_headers(&url, &[("origin", origin)])
            .await
            .unwrap_or_else(|e| panic!("Origin {origin}: {e}"))];
        stack.sync("broadcast:chat", &mut socket).await;
    }
    // Clients that are not browsers send no Origin at all.
    WsClient::connect(&url).await.expect("no Origin header");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_rules_and_bad_identities_are_refused_with_403() {
    let stack = Stack::start(StackOptions::default().ws_args(&[
        "--anonymous-flags",
        "subscribe-broadcast",
        "--authenticated-flags",
        "subscribe-broadcast,subscribe-user,publish-user,publish-broadcast",
    ]))
    .await;
    put_session(&stack.redis, stack.prefix(), "sa", "ann", &["g1"]).await;
    // (session cookie, query, refused flag named in the body)
    let refusals = [
        (None, "subscribe-broadcast&subscribe-session", "subscribe-session is not allowed for anonymous clients"),
        (None, "subscribe-broadcast&echo", "echo is not allowed for anonymous clients"),
        (None, "publish-broadcast", "publish-broadcast is not allowed for anonymous clients"),
        (Some("unknown"), "subscribe-user", "subscribe-user is not allowed for anonymous clients"),
        (Some("sa"), "subscribe-user&subscribe-group", "subscribe-group is not allowed for authenticated clients"),
        (Some("sa"), "publish-session", "publish-session is not allowed for authenticated clients"),
    ];
    for (session, query, reason) in refusals {
        let url = stack.ws_url(&format!("/ws/chat?{query}"));
        let refused = connect_with_session(&url, session)
            .await
            .err()
            .unwrap_or_else(|| panic!("{query} with session {session:?} was upgraded"));
        assert_eq!(refused.status, 403, "{query}: {refused}");
        assert_eq!(refused.body.trim(), reason, "{query}");
        assert_still_serving(&stack, query).await;
    }
    for (session, query) in
        [(None, "subscribe-broadcast"), (Some("sa"), "subscribe-user&publish-user&publish-broadcast")]
    {
        connect_with_session(&stack.ws_url(&format!("/ws/chat?{query}")), session)
            .await
            .unwrap_or_else(|e| panic!("{query} with {session:?}: {e}"));
    }

    // Presence event facilities are read-only, even for logged-in users.
    let refused = connect_with_session(&stack.ws_url("/ws/presence/lobby?publish-broadcast"), Some("sa"))
        .await
        .err()
        .expect("publishing to a presence facility");
    assert_eq!(refused.status, 403, "{refused}");

    // Session cookies that cannot be a key: ':' (would alias channel names), too long.
    let url = stack.ws_url("/ws/chat?subscribe-broadcast");
    let long = format!("sessionid={}", "k".repeat(300));
    for cookie in ["sessionid=a:b", "sessionid=x:broadcast", long.as_str()] {
        let refused = WsClient::connect_with_headers(&url, &[("cookie", cookie)])
            .await
            .err()
            .unwrap_or_else(|| panic!("cookie {cookie} was accepted"));
        assert_eq!(refused.status, 403, "{cookie}: {refused}");
        assert!(refused.body.contains("session cookie"), "{cookie}: {refused}");
        assert_still_serving(&stack, cookie).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limit_answers_503_and_frees_slots_on_close() {
    let stack = Stack::start(StackOptions::default().ws_args(&["--max-connections", "2"])).await;
    let url = stack.ws_url("/ws/chat?subscribe-broadcast");
    let first = WsClient::open(&url).await;
    let mut second = [WsClient::open(&url).await];
    for attempt in 0..3 {
        let refused = WsClient::connect(&url).await.err().expect("a third socket is refused");
        assert_eq!(refused.status, 503, "attempt {attempt}: {refused}");
        assert_eq!(refused.body.trim(), "server is at its connection limit");
    }
    // The open ones are unaffected.
    stack.sync("broadcast:chat", &mut second).await;

    assert_eq!(first.close().await.map(|c| c.0), Some(1000));
    // The slot is released when the closed socket's task ends: poll until a new one gets in.
    let deadline = Instant::now() + Duration::from_secs(5);
    let third = loop {
        match WsClient::connect(&url).await {
            Ok(socket) => break socket,
            Err(e) => {
                assert_eq!(e.status, 503, "{e}");
                assert!(Instant::now() < deadline, "the closed socket's slot was never freed");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let mut both = [second.into_iter().next().unwrap(), third];
    stack.sync("broadcast:chat", &mut both).await;
    let refused = WsClient::connect(&url).await.err().expect("full again");
    assert_eq!(refused.status, 503, "{refused}");
}
