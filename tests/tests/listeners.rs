//! Where the servers listen: nginx reaches both over their unix sockets (the shipped config) or
//! over TCP; unix-socket peers are trusted for X-Real-IP; the wsserver binary replaces a stale
//! socket file, refuses a live one and removes its own on exit; and socket activation
//! (`systemd-socket-activate`) keeps every client served while wsserver restarts.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crier_tests::nginx::free_port;
use crier_tests::process::{find_program, signal, ChildProcess};
use crier_tests::raw::upgrade_request;
use crier_tests::server_process::{bin_dir, ServerProcess};
use crier_tests::{http, try_wait_until as wait_until, Event, Nginx, Redis, Stack, StackOptions, TempDir, WsClient};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

const RECV: Duration = Duration::from_secs(5);
/// nginx's webserver upstream when there is none (nothing listens there).
const NO_WEBSERVER: &str = "127.0.0.1:9";

/// A broadcast published through nginx's `/api/publish` (webserver) reaches a socket opened
/// through nginx's `/ws/` (wsserver).
async fn round_trip(stack: &Stack, facility: &str) {
    let mut client = [stack.connect(&format!("/ws/{facility}?subscribe-broadcast")).await];
    stack.sync(&stack.broadcast_channel(facility), &mut client).await;
    stack.publish_broadcast(facility, "through nginx", 0).await;
    assert_eq!(client[0].expect_text(RECV).await, "through nginx");
}

fn rendered_site(stack: &Stack) -> String {
    std::fs::read_to_string(stack.nginx().dir().join("crier.conf")).expect("rendered crier.conf")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_reaches_both_servers_over_their_unix_sockets() {
    let stack = Stack::start_default().await;
    let site = rendered_site(&stack);
    for socket in [stack.ws_socket(), stack.web_socket()] {
        assert!(site.contains(&format!("server {socket};")), "nginx's upstream is {socket}:\n{site}");
        let service::listen::ListenAddr::Unix(path) = &socket else { panic!("{socket} is not a unix socket") };
        let mode = std::fs::metadata(path).expect("socket file").permissions().mode() & 0o777;
        assert_eq!(mode, 0o660, "{socket}: owner and group may connect");
    }
    round_trip(&stack, "unixpath").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_reaches_both_servers_over_tcp_as_well() {
    let stack = Stack::start(StackOptions::default().nginx_over_tcp()).await;
    let site = rendered_site(&stack);
    assert!(site.contains(&format!("server {};", stack.ws_addr())), "{site}");
    assert!(site.contains(&format!("server {};", stack.web_addr())), "{site}");
    round_trip(&stack, "tcppath").await;
}

/// Sends an upgrade with `X-Real-IP: real_ip` straight to wsserver's unix socket; the status.
async fn upgrade_over_unix(path: &Path, real_ip: &str) -> (UnixStream, u16) {
    let mut stream = UnixStream::connect(path).await.expect("connect to wsserver's unix socket");
    let request = upgrade_request("/ws/lobby?subscribe-broadcast", &[&format!("X-Real-IP: {real_ip}")]);
    stream.write_all(request.as_bytes()).await.expect("send the upgrade");
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let byte = tokio::time::timeout(RECV, stream.read_u8()).await.expect("answer in time").expect("answer");
        head.push(byte);
    }
    let head = String::from_utf8_lossy(&head);
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("status in {head}"));
    (stream, status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_address_limit_counts_x_real_ip_from_unix_socket_peers() {
    // No trusted proxy addresses at all: a unix-socket peer is trusted for being one.
    let options =
        StackOptions::default().without_nginx().without_webserver().ws_args(&["--max-connections-per-ip", "1"]);
    let stack = Stack::start(options.ws_args(&["--trusted-proxies", "192.0.2.1"])).await;
    let service::listen::ListenAddr::Unix(path) = stack.ws_socket() else { panic!("not a unix socket") };
    let (_first, status) = upgrade_over_unix(&path, "203.0.113.1").await;
    assert_eq!(status, 101);
    let (_other, status) = upgrade_over_unix(&path, "203.0.113.2").await;
    assert_eq!(status, 101, "another client address has its own count");
    let (_again, status) = upgrade_over_unix(&path, "203.0.113.1").await;
    assert_eq!(status, 503, "the same client address is at its limit of 1");
    // Over TCP from 127.0.0.1, not a trusted proxy here: X-Real-IP is ignored, the peer counts.
    let url = stack.direct_ws_url("/ws/lobby?subscribe-broadcast");
    let _loopback = WsClient::connect_with_headers(&url, &[("X-Real-IP", "203.0.113.9")]).await.expect("first");
    let refused = WsClient::connect_with_headers(&url, &[("X-Real-IP", "203.0.113.10")]).await.err().expect("503");
    assert_eq!(refused.status, 503, "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wsserver_replaces_a_stale_socket_refuses_a_live_one_and_removes_its_own() {
    let redis = Redis::start().await;
    let dir = TempDir::new("stale").expect("temp dir");
    let path = dir.path().join("ws.sock");
    // The leftover of a process that died: a socket file nothing accepts on.
    drop(std::os::unix::net::UnixListener::bind(&path).expect("bind"));
    let mut ws = ServerProcess::wsserver_on_unix(&redis.url(), &path, &["--listen-mode", "0600"]).await;
    assert_eq!(std::fs::metadata(&path).expect("socket").permissions().mode() & 0o777, 0o600);

    let mut second = ServerProcess::wsserver_on_unix_unready(&redis.url(), &path, &[]);
    let status = second.wait_exit(Duration::from_secs(15)).await.expect("the second one exits");
    assert_eq!(status.code(), Some(1), "{}", second.output());
    assert!(second.output().contains("another process is listening"), "{}", second.output());
    assert!(path.exists(), "the live socket is left alone");

    ws.signal("TERM");
    let status = ws.wait_exit(Duration::from_secs(20)).await.expect("exits after SIGTERM");
    assert!(status.success(), "{status}: {}", ws.output());
    assert!(!path.exists(), "its socket file is removed on exit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webserver_takes_both_listeners_from_systemd_by_name() {
    let activate =
        find_program("CRIER_TEST_SOCKET_ACTIVATE", "systemd-socket-activate", &["/usr/bin/systemd-socket-activate"]);
    let redis = Redis::start().await;
    let (main, admin, configured) = (free_port(), free_port(), free_port());
    let mut command = std::process::Command::new(activate);
    command.args(["--listen", &main.to_string(), "--listen", &admin.to_string(), "--fdname=listen:admin-listen"]);
    command.arg(bin_dir().join("webserver"));
    command.args(["--listen", &configured.to_string(), "--redis-url", &redis.url()]);
    let _web = ChildProcess::spawn("socket-activate", command);
    // The first connection makes systemd-socket-activate start webserver, which accepts it.
    let healthz = format!("http://{main}/healthz");
    let ready =
        wait_until(Duration::from_secs(30), || async { http::try_get(&healthz).await.is_ok_and(|r| r.status == 200) });
    assert!(ready.await, "webserver never answered on the socket named listen");
    assert_eq!(http::get(&format!("http://{admin}/metrics")).await.status, 200, "admin-listen from systemd");
    assert!(tokio::net::TcpStream::connect(configured).await.is_err(), "--listen is not bound when systemd passes one");
}

/// How one client fared.
enum Outcome {
    /// Told to reconnect by an instance that is stopping: 503 "shutting down" to the handshake,
    /// or 1001 right after it; what every websocket client, ws4redis' included, retries.
    GoneAway,
    /// Anything else: connection refused, 502, a socket that ends without a close frame.
    Failed(String),
}

/// One client: opens a socket through nginx and waits for the message replayed at join.
async fn serve_one(url: &str) -> Result<(), Outcome> {
    let mut ws = match WsClient::connect(url).await {
        Ok(ws) => ws,
        Err(e) if e.status == 503 && e.body.contains("shutting down") => return Err(Outcome::GoneAway),
        Err(e) => return Err(Outcome::Failed(e.to_string())),
    };
    match ws.recv(Duration::from_secs(10)).await {
        Some(Event::Text(text)) if text == "kept" => Ok(()),
        Some(Event::Close { code: 1001, .. }) => Err(Outcome::GoneAway),
        other => Err(Outcome::Failed(format!("upgraded, then {other:?}"))),
    }
}

/// The restart loop run under `systemd-socket-activate`, which holds the listening socket (as
/// systemd does) and passes it as descriptor 3: each round records its pid (the pid wsserver
/// gets by `exec`, so LISTEN_PID names it) and runs wsserver until it exits; the stop file
/// ends the loop.
const RESTART_LOOP: &str = r#"
while [ ! -e "$CRIER_STOP" ]; do
    /bin/sh -c 'echo $$ > "$CRIER_PIDFILE.tmp" && mv "$CRIER_PIDFILE.tmp" "$CRIER_PIDFILE" && LISTEN_PID=$$ exec "$@"' \
        sh "$CRIER_WSSERVER" --admin-listen "$CRIER_ADMIN" --redis-url "$CRIER_REDIS" --drain-deadline 2s
done
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_activation_keeps_every_client_served_while_wsserver_restarts() {
    let activate =
        find_program("CRIER_TEST_SOCKET_ACTIVATE", "systemd-socket-activate", &["/usr/bin/systemd-socket-activate"]);
    let redis = Redis::start().await;
    let dir = TempDir::new("activate").expect("temp dir");
    let socket = dir.path().join("ws.sock");
    let pidfile = dir.path().join("wsserver.pid");
    let stop = dir.path().join("stop");
    let admin = free_port();
    std::fs::write(dir.path().join("loop.sh"), RESTART_LOOP).expect("write the loop");
    let wsserver = bin_dir().join("wsserver");

    let mut command = std::process::Command::new(activate);
    command.arg("--listen").arg(&socket).arg("--fdname=listen");
    for (key, value) in [
        ("CRIER_STOP", stop.display().to_string()),
        ("CRIER_PIDFILE", pidfile.display().to_string()),
        ("CRIER_WSSERVER", wsserver.display().to_string()),
        ("CRIER_ADMIN", admin.to_string()),
        ("CRIER_REDIS", redis.url()),
        ("RUST_LOG", "info".to_owned()),
    ] {
        command.arg(format!("--setenv={key}={value}"));
    }
    command.arg("/bin/sh").arg(dir.path().join("loop.sh"));
    let mut holder = ChildProcess::spawn("socket-activate", command);
    assert!(
        wait_until(Duration::from_secs(10), || async { socket.exists() }).await,
        "systemd-socket-activate did not create {}: {}",
        socket.display(),
        holder.output()
    );
    // Every client receives this at join: proof it was served by a wsserver, not just accepted.
    redis.query::<()>(redis::cmd("SET").arg("broadcast:lobby").arg("kept")).await;
    let nginx = Nginx::start(NO_WEBSERVER, &format!("unix:{}", socket.display())).await;
    let url = format!("ws://{}/ws/lobby?subscribe-broadcast", nginx.addr());

    let served = Arc::new(AtomicUsize::new(0));
    let redirected = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let done = Arc::new(AtomicBool::new(false));
    let clients = tokio::spawn({
        let (served, redirected, failures, done) = (served.clone(), redirected.clone(), failures.clone(), done.clone());
        async move {
            while !done.load(Ordering::Relaxed) {
                match serve_one(&url).await {
                    Ok(()) => served.fetch_add(1, Ordering::Relaxed),
                    Err(Outcome::GoneAway) => redirected.fetch_add(1, Ordering::Relaxed),
                    Err(Outcome::Failed(why)) => {
                        failures.lock().unwrap().push(why);
                        0
                    }
                };
            }
        }
    });

    let read_pid = || std::fs::read_to_string(&pidfile).ok().and_then(|p| p.trim().parse::<u32>().ok());
    let served_by_new = |before: usize| {
        let served = served.clone();
        async move { served.load(Ordering::Relaxed) >= before + 5 }
    };
    // The first client's connection made systemd-socket-activate start the loop.
    assert!(wait_until(Duration::from_secs(30), || served_by_new(0)).await, "no client served: {}", holder.output());
    for round in 0..5 {
        let pid = read_pid().expect("the running wsserver's pid");
        assert!(signal(pid, "TERM"), "kill -TERM {pid}");
        let restarted = wait_until(Duration::from_secs(30), || async { read_pid().is_some_and(|p| p != pid) }).await;
        assert!(restarted, "round {round}: wsserver was not started again: {}", holder.output());
        let ready_url = format!("http://{admin}/readyz");
        let ready = wait_until(Duration::from_secs(30), || async {
            http::try_get(&ready_url).await.is_ok_and(|r| r.status == 200)
        })
        .await;
        assert!(ready, "round {round}: the new wsserver is not ready: {}", holder.output());
        let now = served.load(Ordering::Relaxed);
        assert!(wait_until(Duration::from_secs(30), || served_by_new(now)).await, "round {round}: clients stalled");
    }
    done.store(true, Ordering::Relaxed);
    clients.await.expect("client loop");

    let failures = failures.lock().unwrap().clone();
    eprintln!("served {}, told to reconnect {}", served.load(Ordering::Relaxed), redirected.load(Ordering::Relaxed));
    assert!(failures.is_empty(), "clients not served during restarts: {failures:?}\nnginx:\n{}", nginx.error_log());
    let bad_gateway = nginx.access_log().lines().filter(|l| l.contains("/ws/") && l.contains(" 502 ")).count();
    assert_eq!(bad_gateway, 0, "nginx answered 502:\n{}", nginx.access_log());
    assert!(served.load(Ordering::Relaxed) >= 20);

    std::fs::write(&stop, "").expect("stop file");
    if let Some(pid) = read_pid() {
        signal(pid, "TERM");
    }
    let exited = holder.wait_exit(Duration::from_secs(20)).await;
    assert!(exited.is_some_and(|s| s.success()), "the loop did not end: {exited:?}: {}", holder.output());
}
