//! Presence (issue 7): logged-in users with a socket on a `--presence` facility are listed by
//! `GET /api/presence/<facility>`, and join/leave events go to `/ws/presence/<facility>`, once
//! per user however many sockets the user has.
//!
//! Events arrive in the order of the socket opens and closes that cause them, so "no event"
//! checks are made by the next expected event arriving first.

use std::time::Duration;

use bytes::Bytes;
use crier_tests::login::{open_with_session, put_session, session_cookie};
use crier_tests::{http, Stack, StackOptions, WsClient};
use hyper::Method;
use serde_json::{json, Value};

const RECV: Duration = Duration::from_secs(5);

async fn next_event(watcher: &mut WsClient) -> Value {
    let text = watcher.expect_text(RECV).await;
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("presence event is not JSON ({e}): {text}"))
}

fn event(kind: &str, user: &str) -> Value {
    json!({"event": kind, "user": user, "facility": "lobby"})
}

async fn users(stack: &Stack, facility: &str) -> Value {
    let auth = format!("Bearer {}", stack.publish_token());
    let response = http::request(
        Method::GET,
        &stack.front_url(&format!("/api/presence/{facility}")),
        &[("authorization", &auth)],
        Bytes::new(),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.body);
    response.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_lists_users_and_publishes_join_and_leave_once_per_user() {
    let stack = Stack::start(StackOptions::default().ws_args(&["--presence", "lobby"])).await;
    for (key, user) in [("sa1", "ann"), ("sa2", "ann"), ("sb", "bob")] {
        put_session(&stack.redis, stack.prefix(), key, user, &[]).await;
    }
    let mut watcher = [stack.connect("/ws/presence/lobby?subscribe-broadcast").await];
    stack.sync("broadcast:presence/lobby", &mut watcher).await;
    let [watcher] = &mut watcher;
    assert_eq!(users(&stack, "lobby").await, json!({"facility": "lobby", "users": []}));

    let lobby = stack.ws_url("/ws/lobby");
    let ann1 = open_with_session(&lobby, Some("sa1")).await;
    assert_eq!(next_event(watcher).await, event("join", "ann"));
    assert_eq!(users(&stack, "lobby").await, json!({"facility": "lobby", "users": ["ann"]}));

    // ann's second socket, an anonymous one and ann elsewhere: no event; bob's join is next.
    let ann2 = open_with_session(&stack.ws_url("/ws/lobby?subscribe-broadcast"), Some("sa2")).await;
    let anonymous = open_with_session(&lobby, Some("not-a-session")).await;
    let elsewhere = open_with_session(&stack.ws_url("/ws/other"), Some("sa1")).await;
    let bob = open_with_session(&lobby, Some("sb")).await;
    assert_eq!(next_event(watcher).await, event("join", "bob"));
    assert_eq!(users(&stack, "lobby").await, json!({"facility": "lobby", "users": ["ann", "bob"]}));
    assert_eq!(users(&stack, "other").await, json!({"facility": "other", "users": []}));

    // Logged-in users may ask too; anybody else may not.
    let response = http::request(
        Method::GET,
        &stack.front_url("/api/presence/lobby"),
        &[("cookie", &session_cookie("sb"))],
        Bytes::new(),
    )
    .await;
    assert_eq!(response.status, 200, "{}", response.body);
    assert_eq!(response.json()["users"], json!(["ann", "bob"]));
    // The auth scheme is case-insensitive (RFC 7235), as on POST /api/publish.
    for scheme in ["bearer", "BEARER"] {
        let auth = format!("{scheme} {}", stack.publish_token());
        let response = http::request(
            Method::GET,
            &stack.front_url("/api/presence/lobby"),
            &[("authorization", &auth)],
            Bytes::new(),
        )
        .await;
        assert_eq!(response.status, 200, "{scheme}: {}", response.body);
    }
    for headers in [vec![], vec![("authorization", "Bearer wrong-token")], vec![("cookie", "sessionid=not-a-session")]]
    {
        let response =
            http::request(Method::GET, &stack.front_url("/api/presence/lobby"), &headers, Bytes::new()).await;
        assert_eq!(response.status, 401, "{headers:?}: {}", response.body);
    }

    // ann leaves only when her last socket on the lobby closes.
    ann1.close().await;
    drop(anonymous);
    drop(elsewhere);
    ann2.close().await;
    assert_eq!(next_event(watcher).await, event("leave", "ann"));
    assert_eq!(users(&stack, "lobby").await, json!({"facility": "lobby", "users": ["bob"]}));
    // A dropped connection counts as leaving.
    bob.abort();
    assert_eq!(next_event(watcher).await, event("leave", "bob"));
    assert_eq!(users(&stack, "lobby").await, json!({"facility": "lobby", "users": []}));
}
