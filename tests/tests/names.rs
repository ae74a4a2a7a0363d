//! Names that could corrupt Redis keys or logs are refused at the edge: facilities with control
//! characters, over 200 bytes or badly percent-encoded get 400 on the websocket (directly and
//! through nginx) and on the publish API; names with `:` are refused by the API.

use crier_tests::raw::RawConn;
use crier_tests::{http, Stack, WsClient};
use serde_json::json;

/// protocol::Facility::MAX_LEN.
const MAX_FACILITY: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_facilities_are_refused_with_400_on_the_websocket() {
    let stack = Stack::start_default().await;
    let long = "a".repeat(MAX_FACILITY + 1);
    // 101 two-byte characters: 202 bytes once decoded.
    let long_utf8 = "%C3%A9".repeat(MAX_FACILITY / 2 + 1);
    let refused = [
        ("control character %01", "a%01b".to_owned()),
        ("newline", "a%0Ab".to_owned()),
        ("carriage return", "a%0Db".to_owned()),
        ("NUL", "a%00".to_owned()),
        ("DEL", "%7F".to_owned()),
        ("C1 control U+0085", "%C2%85".to_owned()),
        ("201 bytes", long),
        ("202 bytes once decoded", long_utf8),
        ("bad percent escape", "%zz".to_owned()),
        ("truncated percent escape", "ab%4".to_owned()),
        ("invalid UTF-8", "%ff".to_owned()),
    ];
    let mut wrong = Vec::new();
    for (what, facility) in &refused {
        for (via, url) in [
            ("direct", stack.direct_ws_url(&format!("/ws/{facility}?subscribe-broadcast"))),
            ("nginx", stack.ws_url(&format!("/ws/{facility}?subscribe-broadcast"))),
        ] {
            match WsClient::connect(&url).await {
                Ok(_) => wrong.push(format!("{what} ({via}): upgraded")),
                Err(e) if e.status == 400 => {}
                Err(e) => wrong.push(format!("{what} ({via}): {e}")),
            }
        }
    }
    assert!(wrong.is_empty(), "bad facilities not refused with 400:\n  {}", wrong.join("\n  "));

    // The limits are exact: 200 bytes, printable non-ASCII and spaces are fine.
    let ok = ["a".repeat(MAX_FACILITY), "%C3%A9".repeat(MAX_FACILITY / 2), "a%20b".to_owned(), "room/42/".to_owned()];
    for facility in &ok {
        let mut ws = [stack.connect(&format!("/ws/{facility}?subscribe-broadcast")).await];
        let decoded = percent_decode(facility);
        stack.sync(&stack.broadcast_channel(&decoded), &mut ws).await;
    }

    // A raw control byte in the request line never reaches the facility parser.
    let mut conn = RawConn::connect(stack.ws_addr()).await;
    conn.send(crier_tests::raw::upgrade_request("/ws/a\x01b", &[]).as_bytes()).await;
    let answer = conn.read_response(std::time::Duration::from_secs(5)).await.expect("an answer");
    assert_eq!(answer.status, 400, "raw control byte: {answer:?}");
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).expect("hex"));
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).expect("utf-8")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_names_are_refused_with_400_by_the_publish_api() {
    let stack = Stack::start_default().await;
    let mut socket = [stack.connect("/ws/chat?subscribe-broadcast").await];
    stack.sync(&stack.broadcast_channel("chat"), &mut socket).await;
    let bodies = [
        ("facility with a control character", json!({"facility": "a\u{1}b", "broadcast": true, "message": "x"})),
        ("facility with a newline", json!({"facility": "a\nb", "broadcast": true, "message": "x"})),
        (
            "facility over 200 bytes",
            json!({"facility": "f".repeat(MAX_FACILITY + 1), "broadcast": true, "message": "x"}),
        ),
        ("user with ':'", json!({"facility": "chat", "users": ["ann:admin"], "message": "x"})),
        ("group with ':'", json!({"facility": "chat", "groups": ["a:b"], "message": "x"})),
        ("session key with ':'", json!({"facility": "chat", "sessions": ["k:1"], "message": "x"})),
        ("user with a control character", json!({"facility": "chat", "users": ["ann\u{0}"], "message": "x"})),
        ("empty user", json!({"facility": "chat", "users": [""], "message": "x"})),
    ];
    let mut wrong = Vec::new();
    for (what, body) in &bodies {
        let response = stack.publish(body).await;
        let has_error = serde_json::from_str::<serde_json::Value>(&response.body)
            .ok()
            .and_then(|v| v["error"].as_str().map(|e| !e.is_empty()))
            .unwrap_or(false);
        if response.status != 400 || !has_error {
            wrong.push(format!("{what}: {} {}", response.status, response.body));
        }
    }
    assert!(wrong.is_empty(), "bad names not refused with 400:\n  {}", wrong.join("\n  "));

    // Nothing was published meanwhile.
    stack.publish_broadcast("chat", "valid", 0).await;
    assert_eq!(socket[0].expect_text(std::time::Duration::from_secs(5)).await, "valid");
    let long_ok = http::post_json(
        &stack.front_url("/api/publish"),
        Some(stack.publish_token()),
        json!({"facility": "f".repeat(MAX_FACILITY), "broadcast": true, "message": "x"}).to_string(),
    )
    .await;
    assert_eq!(long_ok.status, 200, "a 200-byte facility is fine: {}", long_ok.body);
}
