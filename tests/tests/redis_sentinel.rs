//! Sentinel failover under load: one master, one replica, three Sentinels (real processes on
//! loopback ports). Both servers find the master through the Sentinels; the master is killed;
//! while no master is reachable the publish API answers 503 (never 200), wsserver's /readyz
//! 503, and a client publish closes its socket with 1013; after the failover the API publishes again, every subscriber receives, and no socket was
//! closed. Prints the time from the kill to delivery resumed (scripts/bench-sentinel-failover.sh
//! takes the median of five runs).

use std::time::{Duration, Instant};

use crier_tests::sentinel::SentinelSet;
use crier_tests::ws::all_receive;
use crier_tests::{http, sync_clients, wait_until, Stack, StackOptions, WsClient};
use serde_json::json;

const RECV: Duration = Duration::from_secs(5);
const SOCKETS: usize = 5;
/// Sentinels declare the master down after 1 s; the failover itself takes a few more.
const FAILOVER: Duration = Duration::from_secs(60);

async fn publish(stack: &Stack, message: &str) -> (u16, serde_json::Value) {
    let body = json!({"facility": "room", "broadcast": true, "message": message, "expire": 0});
    let response = stack.publish(&body).await;
    let json = if response.status == 200 { response.json() } else { json!(null) };
    (response.status, json)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_failover_keeps_sockets_and_never_answers_200_for_a_lost_publish() {
    let mut set = SentinelSet::start().await;
    let options = StackOptions::default().redis_flags(set.crier_flags()).ws_args(&["--anonymous-flags", "*"]);
    let stack = Stack::start(options).await;
    let channel = stack.broadcast_channel("room");
    let mut sockets = Vec::new();
    for _ in 0..SOCKETS {
        sockets.push(WsClient::open(&stack.ws_url("/ws/room?subscribe-broadcast")).await);
    }
    sync_clients(&set.master, &channel, &mut sockets).await;
    // A client that publishes (and subscribes to nothing).
    let publisher = WsClient::open(&stack.ws_url("/ws/room?publish-broadcast")).await;
    let (status, answer) = publish(&stack, "before").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["receivers"], 1, "published on the master wsserver subscribes to");
    all_receive(&mut sockets, "before", RECV).await;
    let readyz = stack.admin_url("/readyz");
    let old_port = set.master.port();
    let new_port = set.replica.port();

    let killed = Instant::now();
    set.master.stop().await;
    wait_until(FAILOVER, "wsserver /readyz answers 503 without a master", || async {
        http::try_get(&readyz).await.is_ok_and(|r| r.status == 503)
    })
    .await;
    // The Sentinels need at least down-after-milliseconds (1 s) to promote the replica: a client
    // publish now finds no master and its socket is closed with 1013 (try again later).
    publisher.send_text("lost with the master").await.expect("send");
    let mut publisher = publisher;
    assert_eq!(publisher.expect_close(RECV).await.0, 1013, "a client publish without a master");

    // Publish until one reaches wsserver on the new master; nothing before it may be a 200.
    let mut attempt = 0;
    let mut refused = 0;
    let resumed = loop {
        assert!(killed.elapsed() < FAILOVER, "no publish reached the subscribers within {FAILOVER:?}:\n{}", set.logs());
        attempt += 1;
        let message = format!("during failover {attempt}");
        let (status, answer) = publish(&stack, &message).await;
        match status {
            503 => refused += 1,
            200 if answer["receivers"] == 1 => {
                all_receive(&mut sockets, &message, RECV).await;
                break killed.elapsed();
            }
            // On the new master before wsserver resubscribed: published, to no one yet.
            200 => assert_eq!(answer["receivers"], 0, "{answer}"),
            other => panic!("publish during the failover answered {other}, not 503"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(refused > 0, "the API answered 503 while no master was reachable");
    // Sentinels learn of the switch one after another: the first one asked may lag a moment.
    wait_until(FAILOVER, "the Sentinels report the promoted replica as master", || async {
        set.reported_master_port().await == new_port
    })
    .await;
    assert_ne!(old_port, new_port);
    println!("sentinel failover: delivery resumed {} ms after the master was killed", resumed.as_millis());

    wait_until(FAILOVER, "wsserver /readyz answers 200 again", || async {
        http::try_get(&readyz).await.is_ok_and(|r| r.status == 200)
    })
    .await;
    for i in 0..3 {
        let message = format!("after {i}");
        let (status, answer) = publish(&stack, &message).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["receivers"], 1, "{answer}");
        all_receive(&mut sockets, &message, RECV).await;
    }
    for (i, socket) in sockets.iter_mut().enumerate() {
        assert!(socket.try_recv().is_none(), "socket {i}: nothing else, no close");
    }
}

/// A stand-in Sentinel that names whatever port `named` holds as the master (and answers +OK to
/// anything else), so a test can make it name a replica.
async fn fake_sentinel(named: std::sync::Arc<std::sync::atomic::AtomicU16>) -> u16 {
    use std::sync::atomic::Ordering;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let named = named.clone();
            tokio::spawn(async move {
                let mut stream = BufReader::new(stream);
                loop {
                    let mut line = String::new();
                    if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let Some(count) = line.trim().strip_prefix('*').and_then(|n| n.parse::<usize>().ok()) else {
                        return;
                    };
                    let mut args = Vec::new();
                    for _ in 0..count {
                        line.clear();
                        stream.read_line(&mut line).await.unwrap();
                        let len: usize = line.trim().trim_start_matches('$').parse().unwrap();
                        let mut arg = vec![0; len + 2];
                        stream.read_exact(&mut arg).await.unwrap();
                        args.push(String::from_utf8_lossy(&arg[..len]).to_uppercase());
                    }
                    let answer = match args.first().map(String::as_str) {
                        Some("SENTINEL") => {
                            let port = named.load(Ordering::Relaxed).to_string();
                            format!("*2\r\n$9\r\n127.0.0.1\r\n${}\r\n{port}\r\n", port.len())
                        }
                        Some("SUBSCRIBE") => "*3\r\n$9\r\nsubscribe\r\n$14\r\n+switch-master\r\n:1\r\n".to_owned(),
                        _ => "+OK\r\n".to_owned(),
                    };
                    if stream.get_mut().write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_named_as_master_that_is_a_replica_is_refused() {
    use crier_tests::redis_server::{free_port, RedisOptions};
    use crier_tests::Redis;
    let master = Redis::start_with(RedisOptions { port: Some(free_port()), ..RedisOptions::default() }).await;
    let replica = Redis::start_with(RedisOptions {
        port: Some(free_port()),
        args: vec!["--replicaof".into(), "127.0.0.1".into(), master.port().unwrap().to_string()],
        ..RedisOptions::default()
    })
    .await;
    let named = std::sync::Arc::new(std::sync::atomic::AtomicU16::new(replica.port().unwrap()));
    let sentinel = fake_sentinel(named.clone()).await;
    let args =
        <service::redis_config::RedisArgs as clap::FromArgMatches>::from_arg_matches(
            &<service::redis_config::RedisArgs as clap::Args>::augment_args(clap::Command::new("t"))
                .get_matches_from(["t", "--redis-sentinels", &format!("127.0.0.1:{sentinel}"), "--redis-master", "m"]),
        )
        .unwrap();
    let target = args.target().unwrap();

    let refused = target.probe().await.expect_err("a replica is not a master");
    assert!(refused.to_string().contains("not a master"), "{refused}");
    let mut conn = target.command_connection().unwrap();
    let publish: redis::RedisResult<i64> = redis::cmd("PUBLISH").arg("c").arg("m").query_async(&mut conn).await;
    assert!(publish.is_err(), "nothing is published on a replica");

    named.store(master.port().unwrap(), std::sync::atomic::Ordering::Relaxed);
    target.probe().await.expect("the master is accepted");
    let published: i64 = redis::cmd("PUBLISH").arg("c").arg("m").query_async(&mut conn).await.unwrap();
    assert_eq!(published, 0);
}

/// `cmd` on a new connection to `redis` (Sentinel's reconfiguration kills the harness's own).
async fn fresh<T: redis::FromRedisValue>(redis: &crier_tests::Redis, cmd: &redis::Cmd) -> Option<T> {
    let mut conn = redis.client().get_multiplexed_async_connection().await.ok()?;
    cmd.query_async(&mut conn).await.ok()
}

async fn numsub(redis: &crier_tests::Redis, channel: &str) -> Option<i64> {
    let answer: Option<(String, i64)> = fresh(redis, redis::cmd("PUBSUB").arg("NUMSUB").arg(channel)).await;
    answer.map(|(_, n)| n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_failover_moves_both_servers_off_the_demoted_master() {
    let set = SentinelSet::start().await;
    let stack = Stack::start(StackOptions::default().redis_flags(set.crier_flags())).await;
    let channel = stack.broadcast_channel("room");
    let mut sockets = Vec::new();
    for _ in 0..3 {
        sockets.push(WsClient::open(&stack.ws_url("/ws/room?subscribe-broadcast")).await);
    }
    sync_clients(&set.master, &channel, &mut sockets).await;

    // The old master keeps running, as a replica of the new one.
    set.force_failover().await;
    wait_until(FAILOVER, "the Sentinels report the replica as master", || async {
        set.reported_master_port().await == set.replica.port()
    })
    .await;
    wait_until(FAILOVER, "wsserver subscribes on the new master only", || async {
        numsub(&set.replica, &channel).await == Some(1) && numsub(&set.master, &channel).await == Some(0)
    })
    .await;
    wait_until(FAILOVER, "the demoted master says it is a replica", || async {
        let info: Option<String> = fresh(&set.master, redis::cmd("INFO").arg("replication")).await;
        info.is_some_and(|i| i.contains("role:slave"))
    })
    .await;

    let mut attempt = 0;
    loop {
        attempt += 1;
        assert!(attempt < 200, "the API never published on the new master:\n{}", set.logs());
        let message = format!("after the switch {attempt}");
        let body = json!({"facility": "room", "broadcast": true, "message": message, "expire": 60});
        let response = stack.publish(&body).await;
        if response.status == 503 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        assert_eq!(response.status, 200, "{}", response.body);
        assert_eq!(response.json()["receivers"], 1, "published on the master wsserver listens to, not the demoted one");
        all_receive(&mut sockets, &message, RECV).await;
        let stored: Option<String> = fresh(&set.replica, redis::cmd("GET").arg(&channel)).await;
        assert_eq!(stored.as_deref(), Some(message.as_str()), "stored on the new master");
        break;
    }
    for (i, socket) in sockets.iter_mut().enumerate() {
        assert!(socket.try_recv().is_none(), "socket {i}: nothing else, no close");
    }
}
