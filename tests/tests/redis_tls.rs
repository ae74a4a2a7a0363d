//! TLS to Redis: both servers on `rediss://` with a test CA and a client certificate deliver
//! every audience (API and client publishes), and a wrong CA or host name stops `--check` and
//! startup with a message naming the problem.

use std::process::Command;
use std::time::Duration;

use crier_tests::audiences::{each_audience_reaches_its_sockets, open_audience_sockets};
use crier_tests::server_process::bin_dir;
use crier_tests::{Redis, RedisOptions, Stack, StackOptions};

const RECV: Duration = Duration::from_secs(5);

/// Every connection but the harness's reaches Redis on its TLS port.
async fn assert_servers_use_tls(redis: &Redis, tls_port: u16) {
    let clients = redis.client_list().await;
    assert!(!clients.is_empty(), "the servers hold Redis connections");
    for line in clients {
        assert!(line.contains(&format!("laddr=127.0.0.1:{tls_port} ")), "a connection not over TLS: {line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_audience_is_delivered_over_tls() {
    let stack = Stack::start(StackOptions::default().prefix("px").redis_tls()).await;
    let url = stack.redis.server_url();
    assert!(url.starts_with("rediss://localhost:"), "{url}");
    let tls_port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
    let prefix = stack.prefix().clone();
    let mut sockets = open_audience_sockets(&stack, &stack.redis, &prefix).await;
    assert_servers_use_tls(&stack.redis, tls_port).await;

    each_audience_reaches_its_sockets(&stack, &mut sockets, "tls message", RECV).await;
    assert_eq!(stack.redis.get("px:broadcast:room").await.as_deref(), Some("tls message 0"), "SET .. EX over TLS");

    // A client publish goes through wsserver's command connection, over TLS too.
    // (The sender has no `echo` flag, so the others receive it.)
    sockets[0].send_text("from ann over tls").await.expect("send");
    for socket in &mut sockets[1..] {
        assert_eq!(socket.expect_text(RECV).await, "from ann over tls");
    }
    assert_servers_use_tls(&stack.redis, tls_port).await;
}

/// Runs `binary --check` against `redis` with the CA file `ca` and the URL host `host`.
fn check(binary: &str, redis: &Redis, host: &str, ca: &std::path::Path) -> (i32, String) {
    let ca_files = redis.test_ca().expect("a TLS redis");
    let port = redis.server_url().rsplit(':').next().unwrap().to_owned();
    let out = Command::new(bin_dir().join(binary))
        .env_clear()
        .arg("--check")
        .arg("--redis-url")
        .arg(format!("rediss://{host}:{port}"))
        .arg("--redis-ca")
        .arg(ca)
        .arg("--redis-client-cert")
        .arg(ca_files.client_cert())
        .arg("--redis-client-key")
        .arg(ca_files.client_key())
        .output()
        .expect("run --check");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_ca_or_host_name_stops_check_and_startup_with_a_clear_message() {
    let redis = Redis::start_with(RedisOptions { tls: true, ..RedisOptions::default() }).await;
    let files = redis.test_ca().expect("a TLS redis");
    for binary in ["wsserver", "webserver"] {
        let (code, text) = check(binary, &redis, "localhost", &files.ca());
        assert_eq!(code, 0, "{binary}: the right CA passes: {text}");
        assert!(text.contains("redis: reachable"), "{binary}: {text}");

        let (code, text) = check(binary, &redis, "localhost", &files.other_ca());
        assert_eq!(code, 2, "{binary}: a wrong CA fails --check: {text}");
        assert!(text.contains("not signed by a CA in --redis-ca"), "{binary}: {text}");
        assert!(!text.contains("panicked") && !text.contains("Custom {"), "{binary}: readable: {text}");

        let (code, text) = check(binary, &redis, "127.0.0.1", &files.ca());
        assert_eq!(code, 2, "{binary}: a certificate for another name fails --check: {text}");
        assert!(text.contains("does not name the host"), "{binary}: {text}");

        let (code, text) = check(binary, &redis, "localhost", std::path::Path::new("/nonexistent/ca.pem"));
        assert_eq!(code, 2, "{binary}: a missing CA file fails --check: {text}");
        assert!(text.contains("--redis-ca: /nonexistent/ca.pem: No such file"), "{binary}: {text}");
    }

    // Startup: run() refuses instead of serving with a Redis it can never reach.
    let port = redis.server_url().rsplit(':').next().unwrap().to_owned();
    let mut args = vec!["wsserver".to_owned(), "--redis-url".into(), format!("rediss://localhost:{port}")];
    args.extend(files.crier_args());
    let ca_at = args.iter().position(|a| a == "--redis-ca").unwrap() + 1;
    args[ca_at] = files.other_ca().display().to_string();
    let config = <wsserver::Config as clap::Parser>::try_parse_from(&args).expect("flags");
    let websocket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let run = wsserver::run(
        config,
        wsserver::Listeners { websocket: vec![websocket.into()], admin: vec![admin.into()] },
        std::future::pending(),
    );
    let err = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("wsserver gives up at startup")
        .expect_err("a wrong CA is refused");
    assert!(err.to_string().contains("not signed by a CA in --redis-ca"), "{err}");

    let mut args = vec!["webserver".to_owned(), "--redis-url".into(), format!("rediss://127.0.0.1:{port}")];
    args.extend(files.crier_args());
    let config = <webserver::Config as clap::Parser>::try_parse_from(&args).expect("flags");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let run = webserver::run(config, vec![listener.into()], std::future::pending());
    let err =
        tokio::time::timeout(Duration::from_secs(20), run).await.expect("webserver gives up").expect_err("refused");
    assert!(err.to_string().contains("does not name the host"), "{err}");
}
