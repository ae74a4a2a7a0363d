//! Graceful shutdown of the real binaries: SIGTERM makes wsserver close every socket with 1001
//! and exit 0 within --drain-deadline (even when a client cannot take its close frame), and
//! makes webserver finish a request in flight before exiting 0.

use std::time::{Duration, Instant};

use crier_tests::raw::{RawConn, Read};
use crier_tests::server_process::ServerProcess;
use crier_tests::{sync_clients, wait_until, Redis, WsClient};

const DRAIN: Duration = Duration::from_secs(3);
/// Process exit and scheduling slack on a busy machine.
const SLACK: Duration = Duration::from_secs(2);

fn exit_ok(status: Option<std::process::ExitStatus>, server: &ServerProcess, what: &str) {
    match status {
        Some(s) => assert!(s.success(), "{what} exited with {s}; output:\n{}", server.output()),
        None => panic!("{what} did not exit in time; output:\n{}", server.output()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_every_socket_with_1001_and_exits_0() {
    let redis = Redis::start().await;
    let mut ws = ServerProcess::wsserver(&redis.url(), &["--drain-deadline", "3s"]).await;
    let mut clients = Vec::new();
    for _ in 0..20 {
        clients.push(WsClient::open(&format!("ws://{}/ws/chat?subscribe-broadcast", ws.addr)).await);
    }
    sync_clients(&redis, "broadcast:chat", &mut clients).await;
    // A client that never answers the close handshake (and never reads).
    let mut mute = RawConn::websocket(ws.addr, "/ws/chat?subscribe-broadcast").await;

    let sent = Instant::now();
    ws.signal("TERM");
    for (i, client) in clients.iter_mut().enumerate() {
        let (code, reason) = client.expect_close(DRAIN + SLACK).await;
        assert_eq!(code, 1001, "client {i} close code ({reason:?})");
        assert_eq!(reason, "server shutting down", "client {i}");
    }
    let status = ws.wait_exit(DRAIN + SLACK).await;
    let took = sent.elapsed();
    exit_ok(status, &ws, "wsserver after SIGTERM");
    eprintln!("wsserver exited {took:?} after SIGTERM");
    assert!(took <= DRAIN + SLACK, "exit took {took:?}");

    // The mute client still finds the close frame in its buffer, then the end.
    assert_eq!(mute.read_close(Duration::from_secs(2)).await.map(|(c, _)| c), Ok(1001));
    // Nothing listens any more.
    assert!(tokio::net::TcpStream::connect(ws.addr).await.is_err(), "the websocket port still accepts after exit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_within_the_drain_deadline_when_a_socket_cannot_be_written() {
    let redis = Redis::start().await;
    let mut ws = ServerProcess::wsserver(&redis.url(), &["--drain-deadline", "3s"]).await;
    let mut attentive = [WsClient::open(&format!("ws://{}/ws/flood?subscribe-broadcast", ws.addr)).await];
    // A stuck client: subscribed, small receive buffer, never reads. Its writer blocks once the
    // kernel buffers are full, so its close frame can never be sent.
    let mut stuck = RawConn::connect_with_small_buffer(ws.addr, 4096).await;
    stuck.upgrade("/ws/flood?subscribe-broadcast").await;
    sync_clients(&redis, "broadcast:flood", &mut attentive).await;
    let big = "y".repeat(256 * 1024);
    // ~10 MB: well past the loopback buffers, well under the default queue depth.
    for _ in 0..40 {
        redis.publish("broadcast:flood", &big).await;
    }
    for _ in 0..40 {
        assert_eq!(attentive[0].expect_text(Duration::from_secs(10)).await.len(), big.len());
    }

    let sent = Instant::now();
    ws.signal("TERM");
    let (code, _) = attentive[0].expect_close(DRAIN + SLACK).await;
    assert_eq!(code, 1001);
    let status = ws.wait_exit(DRAIN + SLACK * 2).await;
    let took = sent.elapsed();
    exit_ok(status, &ws, "wsserver with a stuck socket after SIGTERM");
    eprintln!("wsserver with a stuck socket exited {took:?} after SIGTERM (deadline {DRAIN:?})");
    assert!(took <= DRAIN + SLACK, "exit took {took:?} with --drain-deadline {DRAIN:?}");
    // The stuck client's connection is gone (possibly reset, with data unsent).
    match stuck.read_to_end(Duration::from_secs(10)).await {
        Ok(Read::Eof | Read::Error(_)) => {}
        other => panic!("the stuck client's connection outlived the server: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webserver_finishes_a_request_in_flight_after_sigterm_and_exits_0() {
    let redis = Redis::start().await;
    let token = "shutdown-test-token-0123456789";
    let mut web = ServerProcess::webserver(&redis.url(), &["--publish-token", token, "--drain-deadline", "5s"]).await;

    let body = br#"{"facility": "chat", "broadcast": true, "message": "finished after SIGTERM", "expire": 60}"#;
    let (first, rest) = body.split_at(body.len() / 2);
    let mut conn = RawConn::connect(web.addr).await;
    let head = format!(
        "POST /api/publish HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        body.len()
    );
    conn.send(head.as_bytes()).await;
    // 100 Continue: the handler runs and is reading the body; the request is in flight.
    let cont = conn.read_response(Duration::from_secs(5)).await.expect("100 Continue");
    assert_eq!(cont.status, 100, "{cont:?}");
    conn.send(first).await;

    let sent = Instant::now();
    web.signal("TERM");
    // Shutdown has begun once the listener is gone.
    let addr = web.addr;
    wait_until(Duration::from_secs(5), "webserver stops accepting after SIGTERM", || async {
        tokio::net::TcpStream::connect(addr).await.is_err()
    })
    .await;
    assert!(!web.has_exited(), "webserver exited with a request in flight");

    conn.send(rest).await;
    let response = conn.read_response(Duration::from_secs(5)).await.expect("an answer to the request in flight");
    assert_eq!(response.status, 200, "{response:?}");
    let json: serde_json::Value = serde_json::from_str(&response.body).expect("JSON body");
    assert_eq!(json["channels"], 1, "{json}");
    assert_eq!(redis.get("broadcast:chat").await.as_deref(), Some("finished after SIGTERM"));

    let status = web.wait_exit(Duration::from_secs(5) + SLACK).await;
    exit_ok(status, &web, "webserver after SIGTERM");
    eprintln!("webserver exited {:?} after SIGTERM", sent.elapsed());
}
