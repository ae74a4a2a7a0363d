//! Losing one wsserver instance behind nginx: two real wsserver processes share Redis and sit in
//! one nginx upstream, one on a unix socket (same host), one over TCP (as from another host);
//! the one on the unix socket is SIGKILLed. Its clients lose their sockets, the survivor's clients
//! never notice, and clients that reconnect through nginx are served by the survivor and
//! receive broadcasts.

use std::time::{Duration, Instant};

use crier_tests::server_process::ServerProcess;
use crier_tests::{sync_clients, wait_until, Event, Nginx, Redis, TempDir, WsClient};

const CLIENTS: usize = 10;
const PATH: &str = "/ws/lobby?subscribe-broadcast";
const CHANNEL: &str = "broadcast:lobby";
/// nginx's webserver upstream when there is none (nothing listens there).
const NO_WEBSERVER: &str = "127.0.0.1:9";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_instance_clients_reconnect_through_nginx_to_the_survivor() {
    let redis = Redis::start().await;
    let sockets = TempDir::new("loss").expect("socket dir");
    let mut doomed = ServerProcess::wsserver_on_unix(&redis.url(), &sockets.path().join("ws.sock"), &[]).await;
    let survivor = ServerProcess::wsserver(&redis.url(), &[]).await;
    // nginx/crier.conf has one `server <wsserver>;` line; the token it renders from is the
    // address, so "A;\n    server B" yields two server lines.
    let upstream = format!("{};\n    server {}", doomed.upstream, survivor.upstream);
    let nginx = Nginx::start(NO_WEBSERVER, &upstream).await;
    let url = format!("ws://{}{PATH}", nginx.addr());

    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(WsClient::open(&url).await);
    }
    sync_clients(&redis, CHANNEL, &mut clients).await;
    let on_doomed = doomed.metric("crier_ws_sockets_open").await.unwrap_or(0.0) as usize;
    let on_survivor = survivor.metric("crier_ws_sockets_open").await.unwrap_or(0.0) as usize;
    assert_eq!(on_doomed + on_survivor, CLIENTS);
    assert!(on_doomed > 0 && on_survivor > 0, "nginx did not spread the sockets: {on_doomed} and {on_survivor}");

    doomed.kill();

    // The doomed instance's clients see their connection end; the others stay open.
    let mut lost = vec![false; CLIENTS];
    wait_until(Duration::from_secs(10), "the killed instance's clients are disconnected", || {
        for (i, client) in clients.iter_mut().enumerate() {
            while let Some(event) = client.try_recv() {
                match event {
                    Event::Close { .. } | Event::Ended(_) => lost[i] = true,
                    other => panic!("client {i} got {other:?}"),
                }
            }
        }
        let n = lost.iter().filter(|l| **l).count();
        async move { n >= on_doomed }
    })
    .await;
    assert_eq!(
        lost.iter().filter(|l| **l).count(),
        on_doomed,
        "exactly the killed instance's clients are disconnected"
    );

    // The survivor's clients keep receiving throughout.
    let mut kept: Vec<WsClient> = Vec::new();
    let mut reconnected: Vec<WsClient> = Vec::new();
    for (client, lost) in clients.into_iter().zip(&lost) {
        if *lost {
            drop(client);
            // As the JS client does: try again until nginx has failed over to the live upstream.
            let deadline = Instant::now() + Duration::from_secs(10);
            let fresh = loop {
                match WsClient::connect(&url).await {
                    Ok(ws) => break ws,
                    Err(e) if Instant::now() < deadline => {
                        eprintln!("reconnect attempt failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(e) => panic!("reconnecting through nginx failed for 10 s: {e}"),
                }
            };
            reconnected.push(fresh);
        } else {
            kept.push(client);
        }
    }
    // A client's upgrade completes before the server counts the socket as open: wait for it.
    wait_until(Duration::from_secs(10), "every client is now on the survivor", || async {
        survivor.metric("crier_ws_sockets_open").await == Some(CLIENTS as f64)
    })
    .await;
    let mut everyone: Vec<WsClient> = kept.into_iter().chain(reconnected).collect();
    sync_clients(&redis, CHANNEL, &mut everyone).await;
    let receivers = redis.publish(CHANNEL, "after the loss").await;
    assert_eq!(receivers, 1, "only the survivor subscribes now");
    for (i, client) in everyone.iter_mut().enumerate() {
        assert_eq!(client.expect_text(Duration::from_secs(5)).await, "after the loss", "client {i}");
    }
    eprintln!(
        "{on_doomed} clients lost their instance and reconnected; {on_survivor} were never disturbed; nginx error log:\n{}",
        nginx.error_log()
    );
}
