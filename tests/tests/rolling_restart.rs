//! The rolling restart of the README through the shipped nginx config: two wsserver processes,
//! 200 opted-in subscribers of one broadcast channel on a history facility and 50 plain ones,
//! 50 messages/s through the publish API, and one instance restarted with SIGTERM meanwhile.
//! Clients reconnect as the JS client does (after a random delay of up to 1 s). Every opted-in
//! client ends with every message exactly once and in order; the plain clients keep receiving
//! today's ws4redis frames (the bare payload), in order.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crier_tests::recovering::RecoveringClient;
use crier_tests::server_process::ServerProcess;
use crier_tests::{http, Event, Nginx, Redis, WsClient};

const RECOVERING: usize = 200;
const PLAIN: usize = 50;
const RATE_PER_S: u64 = 50;
const TOKEN: &str = "rolling-restart-token-0123456789";
const HISTORY: [&str; 6] = ["--history", "chat", "--history-size", "1000", "--history-ttl", "5m"];
const PATH: &str = "/ws/chat?subscribe-broadcast";

/// A pseudo-random delay of up to 1 s (xorshift; no shared state between clients).
fn jitter(seed: &mut u64) -> Duration {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    Duration::from_millis(*seed % 1000)
}

/// Runs one recovering client until it has `target` messages (0: not known yet) or `stop`.
async fn run_recovering(mut client: RecoveringClient, mut seed: u64, target: Arc<AtomicUsize>) -> RecoveringClient {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let want = target.load(Ordering::SeqCst);
        if want != 0 && client.received.len() >= want {
            return client;
        }
        if tokio::time::Instant::now() > deadline {
            return client;
        }
        if client.is_connected() {
            client.pump_one(Duration::from_millis(100)).await;
            continue;
        }
        tokio::time::sleep(jitter(&mut seed)).await;
        client.connect(1, Duration::from_secs(5)).await;
    }
}

/// Runs one plain client until `stop`; returns its text frames, one list per connection.
async fn run_plain(mut ws: WsClient, mut seed: u64, url: String, stop: Arc<AtomicBool>) -> Vec<Vec<String>> {
    let mut connections = vec![Vec::new()];
    while !stop.load(Ordering::SeqCst) {
        match ws.recv(Duration::from_millis(100)).await {
            None => {}
            Some(Event::Text(text)) => connections.last_mut().expect("one list per connection").push(text),
            Some(other) => {
                assert!(matches!(other, Event::Close { .. } | Event::Ended(_)), "{other:?}");
                loop {
                    tokio::time::sleep(jitter(&mut seed)).await;
                    if let Ok(fresh) = WsClient::connect(&url).await {
                        ws = fresh;
                        break;
                    }
                }
                connections.push(Vec::new());
            }
        }
    }
    connections
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_loses_nothing_for_recovering_clients() {
    let redis = Redis::start().await;
    let mut first = ServerProcess::wsserver(&redis.url(), &HISTORY).await;
    let second = ServerProcess::wsserver(&redis.url(), &HISTORY).await;
    let mut web_args = vec!["--publish-token", TOKEN];
    web_args.extend(HISTORY);
    let web = ServerProcess::webserver(&redis.url(), &web_args).await;
    let upstream = format!("{};\n    server {}", first.addr, second.addr);
    let nginx = Nginx::start(&web.addr.to_string(), &upstream).await;
    let url = format!("ws://{}{PATH}", nginx.addr());

    let target = Arc::new(AtomicUsize::new(0));
    let stop_plain = Arc::new(AtomicBool::new(false));
    let mut recovering = Vec::new();
    for i in 0..RECOVERING {
        let mut client = RecoveringClient::new(&url);
        assert!(client.connect(1, Duration::from_secs(10)).await, "client {i} connects");
        recovering.push(tokio::spawn(run_recovering(client, 0x9e37_79b9 + i as u64, target.clone())));
    }
    let mut plain = Vec::new();
    for i in 0..PLAIN {
        let ws = WsClient::open(&url).await;
        plain.push(tokio::spawn(run_plain(ws, 0x51_7cc1 + i as u64, url.clone(), stop_plain.clone())));
    }
    // Every socket is subscribed once both instances count their Redis subscription and all
    // opted-in clients got their status; plain sockets subscribe the same channel.
    let sockets = || async {
        first.metric("crier_ws_sockets_open").await.unwrap_or(0.0)
            + second.metric("crier_ws_sockets_open").await.unwrap_or(0.0)
    };
    crier_tests::wait_until(Duration::from_secs(20), "every socket is open", || async {
        sockets().await as usize == RECOVERING + PLAIN
    })
    .await;
    let on_first = first.metric("crier_ws_sockets_open").await.unwrap_or(0.0) as usize;
    assert!(on_first > 0 && on_first < RECOVERING + PLAIN, "nginx spread the sockets: {on_first} on the first");
    crier_tests::wait_until(Duration::from_secs(20), "both instances subscribe the channel", || async {
        redis.numsub("broadcast:chat").await == 2
    })
    .await;

    // Publish at 50 msg/s for about 2 s, restart the first instance, and go on for 3 s more.
    let publish_url = format!("http://{}/api/publish", web.addr);
    let published = Arc::new(AtomicUsize::new(0));
    let publishing = Arc::new(AtomicBool::new(true));
    let publisher = {
        let (published, publishing) = (published.clone(), publishing.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(1000 / RATE_PER_S));
            while publishing.load(Ordering::SeqCst) {
                tick.tick().await;
                let n = published.load(Ordering::SeqCst) + 1;
                let body = serde_json::json!({"facility": "chat", "broadcast": true, "message": format!("m{n}")});
                let response = http::post_json(&publish_url, Some(TOKEN), body.to_string()).await;
                assert_eq!(response.status, 200, "publish m{n}: {}", response.body);
                published.store(n, Ordering::SeqCst);
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (addr, admin) = (first.addr, first.admin.expect("admin address"));
    first.signal("TERM");
    let status = first.wait_exit(Duration::from_secs(30)).await.expect("the first instance exits after SIGTERM");
    assert!(status.success(), "exit status {status}");
    let restarted = ServerProcess::wsserver_at(&redis.url(), addr, admin, &HISTORY).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    publishing.store(false, Ordering::SeqCst);
    publisher.await.expect("publisher");
    let total = published.load(Ordering::SeqCst);
    target.store(total, Ordering::SeqCst);
    let expected: Vec<String> = (1..=total).map(|i| format!("m{i}")).collect();

    let mut reconnected = 0;
    for (i, handle) in recovering.into_iter().enumerate() {
        let client = handle.await.expect("client task");
        assert_eq!(client.received.len(), total, "client {i}: {} of {total} messages", client.received.len());
        assert_eq!(client.received, expected, "client {i}: every message once, in order");
        assert!(client.statuses.iter().all(|s| s.kind != "gap"), "client {i} got a gap: {:?}", client.statuses);
        if client.connections > 1 {
            reconnected += 1;
        }
    }
    assert!(reconnected > 0, "some clients were on the restarted instance");

    stop_plain.store(true, Ordering::SeqCst);
    let mut plain_lost = 0;
    for (i, handle) in plain.into_iter().enumerate() {
        let connections = handle.await.expect("plain client task");
        let number = |f: &String| -> usize {
            f.strip_prefix('m').and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("plain frame {f:?}"))
        };
        for (c, frames) in connections.iter().enumerate() {
            // A reconnected plain socket gets the ws4redis last-message replay first (the API
            // stores each message for its default expire). As in ws4redis, that stored message can
            // be one the socket also receives live, or newer than the first live ones queued
            // while it was read: only the frames after it are bound to arrive in order.
            let live = if c == 0 { &frames[..] } else { frames.get(1..).unwrap_or_default() };
            let numbers: Vec<usize> = live.iter().map(number).collect();
            assert!(
                numbers.windows(2).all(|w| w[0] < w[1]),
                "plain client {i}, connection {c}: in order, no duplicate: {numbers:?}"
            );
            assert!(frames.iter().map(number).all(|n| (1..=total).contains(&n)), "plain client {i}: known messages");
        }
        if connections.len() > 1 {
            plain_lost += 1;
        } else {
            assert_eq!(connections[0], expected, "plain client {i} never lost its socket and got everything");
        }
    }
    eprintln!(
        "{total} messages; {reconnected} of {RECOVERING} recovering clients reconnected and lost nothing; \
         {plain_lost} of {PLAIN} plain clients reconnected; restarted instance now has {:?} sockets",
        restarted.metric("crier_ws_sockets_open").await
    );
}
