//! Live hand-off (SIGUSR2) between two real wsserver processes: the old one passes its
//! listeners and sockets to a new one started from the same binary and exits; clients notice
//! nothing. Also what cannot be handed (state of another version: 1001) and a hand-off whose
//! new process dies midway (the old one keeps serving). The new process is not a child of the
//! test: [`Successor`] stops it by its pid (read from `crier_ws_process_id`).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crier_tests::process::signal;
use crier_tests::raw::{FrameBuilder, RawConn};
use crier_tests::server_process::ServerProcess;
use crier_tests::{http, prometheus, wait_until, Event, Nginx, Redis, WsClient};

const CLIENTS: usize = 1000;
const RATE_PER_S: u64 = 100;

/// The process that took over, stopped (TERM, then KILL) when dropped.
struct Successor {
    pid: u32,
    admin: String,
}

impl Successor {
    async fn metric(&self, name: &str) -> Option<f64> {
        let text = http::try_get(&format!("{}/metrics", self.admin)).await.ok()?.body;
        prometheus::sample(&text, name)
    }
}

impl Drop for Successor {
    fn drop(&mut self) {
        signal(self.pid, "TERM");
        for _ in 0..100 {
            if !std::path::Path::new(&format!("/proc/{}", self.pid)).exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        signal(self.pid, "KILL");
    }
}

/// SIGUSR2 to `old`; waits for it to exit 0 and returns the process now answering its admin
/// address.
async fn hand_off(old: &mut ServerProcess) -> Successor {
    let old_pid = old.pid().expect("running");
    old.signal("USR2");
    let status = old.wait_exit(Duration::from_secs(90)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "the old process exits 0 after the hand-off: {status:?}\n{}",
        old.output()
    );
    let admin = old.admin_url("");
    let text =
        http::try_get(&format!("{admin}/metrics")).await.expect("the new process answers on the admin address").body;
    let pid = prometheus::sample(&text, "crier_ws_process_id").expect("process id") as u32;
    assert_ne!(pid, old_pid, "another process answers");
    Successor { pid, admin }
}

/// Publishes `0, 1, 2…` to `channel` at [`RATE_PER_S`] until `stop`; the count published.
fn publisher(
    redis: &Redis,
    channel: &'static str,
    stop: Arc<AtomicBool>,
    count: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    let client = redis.client().clone();
    tokio::spawn(async move {
        let mut conn = client.get_multiplexed_async_connection().await.expect("redis");
        let mut tick = tokio::time::interval(Duration::from_millis(1000 / RATE_PER_S));
        while !stop.load(Ordering::SeqCst) {
            tick.tick().await;
            let n = count.load(Ordering::SeqCst);
            let _: i64 =
                redis::cmd("PUBLISH").arg(channel).arg(n.to_string()).query_async(&mut conn).await.expect("PUBLISH");
            count.store(n + 1, Ordering::SeqCst);
        }
    })
}

/// Collects a client's messages until it has `target` (once known) or something else came;
/// the client stays open.
async fn collect(mut ws: WsClient, target: Arc<AtomicU64>) -> (WsClient, Result<Vec<u64>, String>) {
    let got = collect_from(&mut ws, target).await;
    (ws, got)
}

async fn collect_from(ws: &mut WsClient, target: Arc<AtomicU64>) -> Result<Vec<u64>, String> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(240);
    loop {
        let want = target.load(Ordering::SeqCst);
        if want != 0 && got.len() as u64 >= want {
            return Ok(got);
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("only {} of {want} messages", got.len()));
        }
        match ws.recv(Duration::from_millis(200)).await {
            None => {}
            Some(Event::Text(t)) => got.push(t.parse().map_err(|_| format!("not a number: {t}"))?),
            Some(other) => return Err(format!("after {} messages: {other:?}", got.len())),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_subscribers_through_nginx_get_every_message_once_in_order_across_a_handoff() {
    let redis = Redis::start().await;
    let mut old = ServerProcess::wsserver(&redis.url(), &[]).await;
    let nginx = Nginx::start("127.0.0.1:9", &old.upstream).await;
    let url = format!("ws://{}/ws/handoff?subscribe-broadcast", nginx.addr());
    let mut clients = Vec::with_capacity(CLIENTS);
    for chunk in 0..CLIENTS / 100 {
        let opened = futures_join(100, &url).await;
        assert_eq!(opened.len(), 100, "chunk {chunk}");
        clients.extend(opened);
    }
    wait_until(Duration::from_secs(10), "wsserver subscribed", || async {
        redis.numsub("broadcast:handoff").await == 1
    })
    .await;

    let (stop, count, target) =
        (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let collectors: Vec<_> = clients.into_iter().map(|ws| tokio::spawn(collect(ws, target.clone()))).collect();
    let publishing = publisher(&redis, "broadcast:handoff", stop.clone(), count.clone());
    wait_until(Duration::from_secs(10), "100 messages published before the hand-off", || async {
        count.load(Ordering::SeqCst) >= 100
    })
    .await;

    let before = count.load(Ordering::SeqCst);
    let new = hand_off(&mut old).await;
    let during = count.load(Ordering::SeqCst) - before;
    let after = count.load(Ordering::SeqCst);
    wait_until(Duration::from_secs(10), "100 more messages after the hand-off", || async {
        count.load(Ordering::SeqCst) >= after + 100
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    publishing.await.unwrap();
    let total = count.load(Ordering::SeqCst);
    target.store(total, Ordering::SeqCst);
    eprintln!("{total} messages, {during} of them published during the hand-off");

    let expected: Vec<u64> = (0..total).collect();
    let mut open = Vec::with_capacity(CLIENTS);
    for (i, collector) in collectors.into_iter().enumerate() {
        let (ws, got) = collector.await.unwrap();
        open.push(ws);
        let got = got.unwrap_or_else(|e| panic!("client {i}: {e}"));
        assert!(
            got == expected,
            "client {i}: every message once, in order; got {} ({:?}…)",
            got.len(),
            &got[..got.len().min(5)]
        );
    }
    assert_eq!(new.metric("crier_ws_handoff_sockets_taken_total").await, Some(CLIENTS as f64), "{}", old.output());
    assert_eq!(new.metric("crier_ws_sockets_open").await, Some(CLIENTS as f64), "every client still connected");
    for ws in &mut open {
        assert!(ws.try_recv().is_none(), "nothing after the last message, no close");
    }
    // A new client through nginx reaches the new process.
    let mut late = WsClient::open(&url).await;
    redis.publish("broadcast:handoff", "late").await;
    assert_eq!(late.expect_text(Duration::from_secs(10)).await, "late");
    // Websocket requests are logged when they end: close every client, then read the logs.
    drop(late);
    for ws in open {
        let _ = ws.close().await;
    }
    let access = nginx.dir().join("access.log");
    let read = || std::fs::read_to_string(&access).unwrap_or_default();
    wait_until(Duration::from_secs(30), "every websocket logged by nginx", || async {
        read().lines().filter(|l| l.contains("/ws/handoff")).count() > CLIENTS
    })
    .await;
    let log = read();
    let bad: Vec<&str> = log.lines().filter(|l| l.contains("/ws/") && !l.contains("\" 101 ")).collect();
    assert!(bad.is_empty(), "nginx answered a websocket request with something else than 101: {bad:?}");
    let errors = nginx.error_log();
    let upstream: Vec<&str> = errors.lines().filter(|l| l.contains("/ws/")).collect();
    assert!(upstream.is_empty(), "nginx logged errors for websockets: {upstream:?}");
}

/// Opens `n` clients of `url` concurrently.
async fn futures_join(n: usize, url: &str) -> Vec<WsClient> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let url = url.to_owned();
            tokio::spawn(async move { WsClient::open(&url).await })
        })
        .collect();
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fragmented_message_and_a_slow_consumers_queue_continue_across_a_handoff() {
    let redis = Redis::start().await;
    let mut old = ServerProcess::wsserver(&redis.url(), &["--queue-depth", "10000", "--anonymous-flags", "*"]).await;
    // A client halfway through a fragmented message it publishes (and receives back: echo).
    let mut writer = RawConn::websocket(old.addr, "/ws/frag?subscribe-broadcast&publish-broadcast&echo").await;
    writer.send(&FrameBuilder::text(b"hel").not_fin().build()).await;
    // A consumer that reads nothing yet: its kernel buffers fill and its queue holds the rest.
    let mut slow = RawConn::connect_with_small_buffer(old.addr, 4096).await;
    slow.upgrade("/ws/slow?subscribe-broadcast").await;
    wait_until(Duration::from_secs(10), "wsserver subscribed", || async { redis.numsub("broadcast:slow").await == 1 })
        .await;
    let big = "x".repeat(16 * 1024);
    let messages: Vec<String> = (0..400).map(|i| format!("{i:05}{big}")).collect();
    redis.publish_pipelined("broadcast:slow", messages.iter()).await;

    let new = hand_off(&mut old).await;
    writer.send(&FrameBuilder::continuation(b"lo").build()).await;
    let echoed = writer.read_frame(Duration::from_secs(10)).await.expect("the completed message comes back");
    assert_eq!(
        (echoed.opcode, echoed.payload.as_slice()),
        (1, &b"hello"[..]),
        "the message reassembled across the hand-off"
    );
    redis.publish("broadcast:slow", "after").await;
    for (i, message) in messages.iter().chain(std::iter::once(&"after".to_owned())).enumerate() {
        let frame = slow.read_frame(Duration::from_secs(20)).await.unwrap_or_else(|e| panic!("message {i}: {e:?}"));
        assert_eq!(frame.opcode, 1, "message {i} is a text frame");
        assert!(frame.payload == message.as_bytes(), "message {i} in order and whole");
    }
    assert_eq!(new.metric("crier_ws_handoff_sockets_taken_total").await, Some(2.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_a_new_process_of_another_state_version_refuses_get_1001_and_it_serves_new_clients() {
    let redis = Redis::start().await;
    // Test-only: the new process (which inherits the environment) reads state version 2 only.
    let env = [("CRIER_HANDOFF_TEST_STATE_VERSION", "2")];
    let mut old = ServerProcess::wsserver_with_env(&redis.url(), &[], &env).await;
    let url = format!("ws://{}/ws/news?subscribe-broadcast", old.addr);
    let mut clients = vec![WsClient::open(&url).await, WsClient::open(&url).await];
    let new = hand_off(&mut old).await;
    for ws in &mut clients {
        match ws.recv(Duration::from_secs(10)).await {
            Some(Event::Close { code, .. }) => assert_eq!(code, 1001),
            other => panic!("expected a 1001 close, got {other:?}"),
        }
    }
    assert_eq!(new.metric("crier_ws_handoff_sockets_taken_total").await, Some(0.0));
    let mut fresh = WsClient::open(&url).await;
    wait_until(Duration::from_secs(10), "the new process subscribed", || async {
        redis.numsub("broadcast:news").await == 1
    })
    .await;
    redis.publish("broadcast:news", "still here").await;
    assert_eq!(fresh.expect_text(Duration::from_secs(10)).await, "still here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_new_process_dies_midway_the_old_one_keeps_every_socket_and_accepts_again() {
    let redis = Redis::start().await;
    // Test-only: the new process exits when the first socket arrives, after it said it was
    // ready, took the listeners, and the old process stopped accepting and froze the sockets.
    let env = [("CRIER_HANDOFF_TEST_EXIT_AFTER", "0")];
    let old = ServerProcess::wsserver_with_env(&redis.url(), &[], &env).await;
    let url = format!("ws://{}/ws/news?subscribe-broadcast", old.addr);
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(WsClient::open(&url).await);
    }
    wait_until(Duration::from_secs(10), "wsserver subscribed", || async { redis.numsub("broadcast:news").await == 1 })
        .await;
    redis.publish("broadcast:news", "before").await;
    old.signal("USR2");
    wait_until(Duration::from_secs(60), "the hand-off is abandoned", || async {
        old.metric("crier_ws_handoff_failures_total").await == Some(1.0)
    })
    .await;
    redis.publish("broadcast:news", "after").await;
    for (i, ws) in clients.iter_mut().enumerate() {
        assert_eq!(ws.expect_text(Duration::from_secs(10)).await, "before", "client {i}");
        assert_eq!(ws.expect_text(Duration::from_secs(10)).await, "after", "client {i}: no loss, no close");
    }
    let pid = old.metric("crier_ws_process_id").await.expect("pid") as u32;
    assert_eq!(Some(pid), old.pid(), "the old process still answers");
    let mut fresh = WsClient::open(&url).await;
    redis.publish("broadcast:news", "new client").await;
    assert_eq!(fresh.expect_text(Duration::from_secs(10)).await, "new client");
    assert_eq!(old.metric("crier_ws_sockets_open").await, Some(4.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_on_a_unix_listener_behind_nginx_are_handed_too() {
    let redis = Redis::start().await;
    let dir = crier_tests::TempDir::new("handoff-unix").expect("temp dir");
    let path = dir.path().join("ws.sock");
    let mut old = ServerProcess::wsserver_on_unix(&redis.url(), &path, &[]).await;
    let nginx = Nginx::start("127.0.0.1:9", &old.upstream).await;
    let url = format!("ws://{}/ws/unix?subscribe-broadcast", nginx.addr());
    let mut clients = vec![WsClient::open(&url).await, WsClient::open(&url).await];
    wait_until(Duration::from_secs(10), "wsserver subscribed", || async { redis.numsub("broadcast:unix").await == 1 })
        .await;
    redis.publish("broadcast:unix", "before").await;
    let new = hand_off(&mut old).await;
    redis.publish("broadcast:unix", "after").await;
    for ws in &mut clients {
        assert_eq!(ws.expect_text(Duration::from_secs(10)).await, "before");
        assert_eq!(ws.expect_text(Duration::from_secs(10)).await, "after");
    }
    assert!(path.exists(), "the socket file stays: the new process listens on it");
    let mut fresh = WsClient::open(&url).await;
    redis.publish("broadcast:unix", "new").await;
    assert_eq!(fresh.expect_text(Duration::from_secs(10)).await, "new");
    assert_eq!(new.metric("crier_ws_handoff_sockets_taken_total").await, Some(2.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_hears_the_new_main_pid_then_ready_and_never_stopping() {
    let redis = Redis::start().await;
    let dir = crier_tests::TempDir::new("handoff-notify").expect("temp dir");
    let path = dir.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&path).expect("bind the notify socket");
    notify.set_nonblocking(true).unwrap();
    let env = [("NOTIFY_SOCKET", path.to_str().expect("utf-8 path"))];
    let mut old = ServerProcess::wsserver_with_env(&redis.url(), &[], &env).await;
    let mut ws = WsClient::open(&format!("ws://{}/ws/news?subscribe-broadcast", old.addr)).await;
    let new = hand_off(&mut old).await;
    let mut said = Vec::new();
    wait_until(Duration::from_secs(10), "the new process reports READY=1", || {
        let mut buf = [0u8; 512];
        while let Ok(n) = notify.recv(&mut buf) {
            said.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        let done = said.iter().filter(|m| m.contains("READY=1")).count() >= 2;
        async move { done }
    })
    .await;
    let main_pid = said.iter().position(|m| *m == format!("MAINPID={}", new.pid)).expect("MAINPID= of the new process");
    let ready = said.iter().rposition(|m| m.contains("READY=1")).expect("READY=1");
    assert!(main_pid > 0 && ready > 0, "{said:?}");
    assert!(!said.iter().any(|m| m.contains("STOPPING=1")), "the service is not stopping: {said:?}");
    wait_until(Duration::from_secs(10), "the new process subscribed", || async {
        redis.numsub("broadcast:news").await == 1
    })
    .await;
    redis.publish("broadcast:news", "served").await;
    assert_eq!(ws.expect_text(Duration::from_secs(10)).await, "served");
}
