//! TLS and Sentinel together: a master, a replica and three Sentinels (Redis 7's own TLS: the
//! servers listen with TLS only, replicate over TLS, and `tls-replication yes` makes the
//! Sentinels talk TLS to them and to each other). Both Crier servers find the master through
//! the Sentinels' TLS ports with a `rediss://` URL, the test CA and a client certificate, and
//! deliver every audience (API and client publishes); a forced failover moves them to the new
//! master, still over TLS, without closing a socket.

use std::time::Duration;

use crier_tests::audiences::{each_audience_reaches_its_sockets, open_audience_sockets};
use crier_tests::sentinel::SentinelSet;
use crier_tests::{wait_until, Redis, Stack, StackOptions};
use protocol::KeyPrefix;
use serde_json::json;

const RECV: Duration = Duration::from_secs(5);
const FAILOVER: Duration = Duration::from_secs(60);

/// Every connection but the harness's (on the Unix socket) and replication's reaches `redis` on
/// its TLS port.
async fn assert_servers_use_tls(redis: &Redis) {
    let port = redis.tls_port().expect("a TLS redis");
    let clients: String = fresh(redis, redis::cmd("CLIENT").arg("LIST")).await.expect("CLIENT LIST");
    let servers: Vec<&str> =
        clients.lines().filter(|l| !l.contains(" addr=/") && !l.contains(" flags=S ") && !l.is_empty()).collect();
    assert!(!servers.is_empty(), "the servers hold connections to this Redis: {clients:?}");
    for line in servers {
        assert!(line.contains(&format!("laddr=127.0.0.1:{port} ")), "a connection not over TLS: {line}");
    }
}

/// `cmd` on a new connection to `redis` (Sentinel's reconfiguration kills the harness's own).
async fn fresh<T: redis::FromRedisValue>(redis: &Redis, cmd: &redis::Cmd) -> Option<T> {
    let mut conn = redis.client().get_multiplexed_async_connection().await.ok()?;
    cmd.query_async(&mut conn).await.ok()
}

async fn numsub(redis: &Redis, channel: &str) -> Option<i64> {
    let answer: Option<(String, i64)> = fresh(redis, redis::cmd("PUBSUB").arg("NUMSUB").arg(channel)).await;
    answer.map(|(_, n)| n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_servers_deliver_through_sentinels_over_tls_and_follow_a_failover() {
    let set = SentinelSet::start_tls().await;
    let (replica_ports, sentinel_ports) = set.known_ports().await;
    assert_eq!(replica_ports, [set.replica.tls_port().unwrap()], "Sentinels reach the replica on its TLS port");
    let mut others = set.tls_ports();
    others.retain(|p| sentinel_ports.contains(p));
    assert_eq!(others.len(), 2, "Sentinels know each other by their TLS ports: {sentinel_ports:?}");
    assert!(set.crier_flags().iter().any(|f| f == "rediss://sentinel-managed/0"), "{:?}", set.crier_flags());

    let stack = Stack::start(StackOptions::default().redis_flags(set.crier_flags())).await;
    let prefix = KeyPrefix::new("").unwrap();
    let mut sockets = open_audience_sockets(&stack, &set.master, &prefix).await;
    assert_servers_use_tls(&set.master).await;

    each_audience_reaches_its_sockets(&stack, &mut sockets, "over tls through sentinels", RECV).await;
    assert_eq!(set.master.get("broadcast:room").await.as_deref(), Some("over tls through sentinels 0"));
    // A client publish goes through wsserver's command connection to the master.
    sockets[0].send_text("from ann").await.expect("send");
    for socket in &mut sockets[1..] {
        assert_eq!(socket.expect_text(RECV).await, "from ann");
    }

    // The old master keeps running and becomes a replica of the new one (over TLS too).
    set.force_failover().await;
    let new_port = set.replica.tls_port();
    wait_until(FAILOVER, "the Sentinels report the replica as master", || async {
        set.reported_master_port().await == new_port
    })
    .await;
    wait_until(FAILOVER, "the demoted master replicates from the new one", || async {
        let info: Option<String> = fresh(&set.master, redis::cmd("INFO").arg("replication")).await;
        info.is_some_and(|i| i.contains("role:slave") && i.contains("master_link_status:up"))
    })
    .await;
    // Until then, a PUBLISH on the new master would also reach wsserver through the replication
    // stream of the old one.
    wait_until(FAILOVER, "wsserver subscribes on the new master only", || async {
        numsub(&set.replica, "broadcast:room").await == Some(1)
            && numsub(&set.master, "broadcast:room").await == Some(0)
    })
    .await;
    let mut attempt = 0;
    loop {
        attempt += 1;
        assert!(attempt < 400, "the API never published on the new master:\n{}", set.logs());
        let message = format!("after the switch {attempt}");
        let response = stack.publish(&json!({"facility": "room", "broadcast": true, "message": message})).await;
        let delivered = response.status == 200 && response.json()["receivers"] == 1;
        if !delivered {
            // 503 while no master is usable, or receivers 0 before wsserver resubscribed.
            assert!(response.status == 503 || response.status == 200, "{}: {}", response.status, response.body);
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        for (i, socket) in sockets.iter_mut().enumerate() {
            assert_eq!(socket.expect_text(RECV).await, message, "socket {i} after the failover");
        }
        break;
    }
    assert_servers_use_tls(&set.replica).await;
    for (i, socket) in sockets.iter_mut().enumerate() {
        assert!(socket.try_recv().is_none(), "socket {i}: nothing else, no close");
    }
}
