//! Redis Cluster with sharded pub/sub, end to end: three masters with a replica each (real
//! `redis-server --cluster-enabled yes` processes joined by `redis-cli --cluster create`), both
//! Crier servers given the seed nodes. Channels of every audience, spread over all three shards,
//! are delivered whether published through the API (`SPUBLISH`) or with a ws4redis publisher's
//! plain `PUBLISH` on any node; a killed master's replica takes over and delivery resumes with
//! the sockets kept; a resharded slot keeps delivering; shard subscriptions end when clients
//! leave; wsserver's Redis connections do not grow with sockets or channels; history recovery
//! works across a reconnect. The failover test prints the time from the kill to delivery
//! resumed (scripts/bench-cluster-failover.sh takes the median of five runs).

use std::time::{Duration, Instant};

use crier_tests::cluster::{RedisCluster, NODE_TIMEOUT};
use crier_tests::login::open_with_session;
use crier_tests::nginx::free_port;
use crier_tests::recovering::RecoveringClient;
use crier_tests::server_process::ServerProcess;
use crier_tests::ws::all_receive;
use crier_tests::{http, sync_clients, sync_clients_with, wait_until, Stack, StackOptions, WsClient};
use protocol::cluster_slot::cluster_slot;
use protocol::{KeyPrefix, Name, SessionKey, SessionRecord};
use redis::cluster_async::ClusterConnection;
use serde_json::json;

const RECV: Duration = Duration::from_secs(5);
const SETTLE: Duration = Duration::from_secs(60);
const ALL: [usize; 6] = [0, 1, 2, 3, 4, 5];

fn cluster_stack(cluster: &RedisCluster) -> StackOptions {
    StackOptions::default().redis_flags(cluster.crier_flags()).ws_args(&["--anonymous-flags", "*"])
}

async fn spublish(conn: &mut ClusterConnection, channel: &str, message: &str) -> i64 {
    redis::cmd("SPUBLISH").arg(channel).arg(message).query_async(conn).await.expect("SPUBLISH")
}

/// Probes with `SPUBLISH` (the sharded path), then with a plain `PUBLISH` on node 0 (the
/// classic path): afterwards both deliver to `sockets`.
async fn sync_both(cluster: &RedisCluster, conn: &ClusterConnection, channel: &str, sockets: &mut [WsClient]) {
    sync_clients_with(
        |message| {
            let mut conn = conn.clone();
            async move { spublish(&mut conn, channel, &message).await }
        },
        channel,
        sockets,
    )
    .await;
    sync_clients(&cluster.nodes[0], channel, sockets).await;
}

/// A login session written where webserver writes it, through the cluster.
async fn put_session(conn: &mut ClusterConnection, key: &str, user: &str, groups: &[String]) {
    let prefix = KeyPrefix::default();
    let key = SessionKey::parse(key).unwrap();
    let record = SessionRecord {
        user: Name::parse(user).unwrap(),
        groups: groups.iter().map(|g| Name::parse(g).unwrap()).collect(),
        csrf: "csrf".into(),
    };
    let _: () = redis::cmd("SET")
        .arg(prefix.session_record(&key))
        .arg(record.to_json())
        .arg("EX")
        .arg(3600)
        .query_async(conn)
        .await
        .expect("SET session");
}

/// The channels of session `sa` (user ann, group staff) on `facility`, one per audience.
fn audience_channels(facility: &str) -> [(&'static str, String, serde_json::Value); 4] {
    [
        ("broadcast", format!("broadcast:{facility}"), json!({"broadcast": true})),
        ("user", format!("user:ann:{facility}"), json!({"users": ["ann"]})),
        ("group", format!("group:staff:{facility}"), json!({"groups": ["staff"]})),
        ("session", format!("session:sa:{facility}"), json!({"sessions": ["sa"]})),
    ]
}

/// A facility whose four audience channels land on all three masters (`CLUSTER KEYSLOT` agrees
/// with Crier's own slot computation), and each channel's master.
async fn facility_on_every_shard(cluster: &RedisCluster) -> (String, Vec<usize>) {
    for n in 0..200 {
        let facility = format!("room{n}");
        let mut masters = Vec::new();
        for (_, channel, _) in audience_channels(&facility) {
            let slot = cluster.keyslot(0, &channel).await;
            assert_eq!(slot, cluster_slot(&channel), "CLUSTER KEYSLOT {channel}");
            masters.push(cluster.master_of_slot(&ALL, slot).await.expect("every slot has a master"));
        }
        let mut distinct = masters.clone();
        distinct.sort_unstable();
        distinct.dedup();
        if distinct.len() == 3 {
            return (facility, masters);
        }
    }
    panic!("no facility spreads its channels over three shards");
}

/// A broadcast channel (on facility `room<n>`) whose slot master is not `avoid`.
async fn broadcast_channel_on(cluster: &RedisCluster, pick: impl Fn(usize) -> bool) -> (String, u16, usize) {
    for n in 0.. {
        let facility = format!("room{n}");
        let channel = format!("broadcast:{facility}");
        let slot = cluster_slot(&channel);
        let master = cluster.master_of_slot(&ALL, slot).await.expect("a master");
        if pick(master) {
            return (facility, slot, master);
        }
    }
    unreachable!()
}

async fn publish_to(
    stack: &Stack,
    facility: &str,
    audience: &serde_json::Value,
    message: &str,
) -> (u16, serde_json::Value) {
    let mut body = json!({"facility": facility, "message": message, "expire": 0});
    for (k, v) in audience.as_object().unwrap() {
        body[k] = v.clone();
    }
    let response = stack.publish(&body).await;
    let answer = if response.status == 200 { response.json() } else { json!(response.body) };
    (response.status, answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_audience_on_every_shard_via_the_api_and_plain_publish() {
    let cluster = RedisCluster::start().await;
    let mut conn = cluster.connection().await;
    put_session(&mut conn, "sa", "ann", &["staff".into()]).await;
    let stack = Stack::start(cluster_stack(&cluster)).await;
    let (facility, masters) = facility_on_every_shard(&cluster).await;
    let flags = "subscribe-broadcast&subscribe-user&subscribe-group&subscribe-session";
    let url = stack.ws_url(&format!("/ws/{facility}?{flags}"));
    let mut sockets = vec![open_with_session(&url, Some("sa")).await, open_with_session(&url, Some("sa")).await];
    for (_, channel, _) in audience_channels(&facility) {
        sync_both(&cluster, &conn, &channel, &mut sockets).await;
    }
    for ((audience, channel, body), master) in audience_channels(&facility).into_iter().zip(masters) {
        let message = format!("{audience} through the api");
        let (status, answer) = publish_to(&stack, &facility, &body, &message).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["receivers"], 1, "{audience}: SPUBLISH reached wsserver's shard subscription: {answer}");
        all_receive(&mut sockets, &message, RECV).await;
        assert_eq!(cluster.shardnumsub(master, &channel).await, Some(1), "{channel} subscribed on its master");
        // A ws4redis publisher's plain PUBLISH, sent to a node that does not own the channel.
        let other = (0..3).find(|&i| i != master).unwrap();
        let message = format!("{audience} by plain PUBLISH");
        let _: i64 = cluster.query(other, redis::cmd("PUBLISH").arg(&channel).arg(&message)).await;
        all_receive(&mut sockets, &message, RECV).await;
    }
    let metrics = stack.metrics().await;
    assert!(metrics.contains("crier_ws_redis_pubsub_connections 4"), "one classic + one per master:\n{metrics}");

    // Everyone leaves: no shard subscription is left on any node.
    for socket in sockets {
        socket.close().await;
    }
    for (_, channel, _) in audience_channels(&facility) {
        wait_until(SETTLE, "PUBSUB SHARDNUMSUB and NUMSUB return to 0", || async {
            for i in 0..6 {
                if cluster.shardnumsub(i, &channel).await != Some(0) {
                    return false;
                }
            }
            let numsub: Option<(String, i64)> =
                cluster.try_query(0, redis::cmd("PUBSUB").arg("NUMSUB").arg(&channel)).await;
            numsub.is_some_and(|(_, n)| n == 0)
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_master_is_replaced_by_its_replica_and_delivery_resumes_with_sockets_kept() {
    let mut cluster = RedisCluster::start().await;
    let conn = cluster.connection().await;
    let stack = Stack::start(cluster_stack(&cluster)).await;
    // Not the master of the seed node wsserver's classic connection probably uses.
    let (facility, _, master) = broadcast_channel_on(&cluster, |m| m != 0).await;
    let channel = format!("broadcast:{facility}");
    let mut sockets = Vec::new();
    for _ in 0..5 {
        sockets.push(stack.connect(&format!("/ws/{facility}?subscribe-broadcast")).await);
    }
    sync_both(&cluster, &conn, &channel, &mut sockets).await;
    let body = json!({"broadcast": true});
    let (status, answer) = publish_to(&stack, &facility, &body, "before").await;
    assert_eq!((status, answer["receivers"].clone()), (200, json!(1)), "{answer}");
    all_receive(&mut sockets, "before", RECV).await;
    let readyz = stack.admin_url("/readyz");

    let killed = Instant::now();
    cluster.nodes[master].stop().await;
    wait_until(SETTLE, "wsserver /readyz answers 503 while the channel's shard has no master", || async {
        http::try_get(&readyz).await.is_ok_and(|r| r.status == 503)
    })
    .await;
    let alive: Vec<usize> = ALL.into_iter().filter(|&i| i != master).collect();
    let mut promoted_at = None;
    let mut attempt = 0;
    let resumed = loop {
        assert!(killed.elapsed() < SETTLE, "delivery never resumed:\n{}", cluster.logs());
        if promoted_at.is_none() {
            let owner = cluster.master_of_slot(&alive, cluster_slot(&channel)).await;
            if owner.is_some_and(|o| o != master) {
                promoted_at = Some(killed.elapsed());
            }
        }
        attempt += 1;
        let message = format!("during failover {attempt}");
        let (status, answer) = publish_to(&stack, &facility, &body, &message).await;
        match status {
            503 => {}
            200 if answer["receivers"] == 1 => {
                all_receive(&mut sockets, &message, RECV).await;
                break killed.elapsed();
            }
            // On the promoted replica before wsserver subscribed there: published to no one.
            200 => assert_eq!(answer["receivers"], 0, "{answer}"),
            other => panic!("publish during the failover answered {other}: {answer}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let promoted = promoted_at.unwrap_or(resumed);
    println!(
        "cluster failover: delivery resumed {} ms after the master was killed (replica promoted after {} ms)",
        resumed.as_millis(),
        promoted.as_millis()
    );
    // Redis promotes the replica after the node timeout, the FAIL broadcast and an election
    // delay of 0.5 to 1 s; Crier's share is what follows the promotion.
    assert!(
        resumed.saturating_sub(promoted) < Duration::from_secs(2),
        "delivery resumed {resumed:?} after the kill, more than 2 s after the promotion ({promoted:?})"
    );
    assert!(
        resumed < NODE_TIMEOUT * 2 + Duration::from_secs(2),
        "delivery resumed {resumed:?} after the kill (node timeout {NODE_TIMEOUT:?})"
    );
    let promoted = cluster.master_of_slot(&alive, cluster_slot(&channel)).await;
    assert!(promoted.is_some_and(|p| p != master), "a replica was promoted: {promoted:?}");
    wait_until(SETTLE, "wsserver /readyz answers 200 again", || async {
        http::try_get(&readyz).await.is_ok_and(|r| r.status == 200)
    })
    .await;
    for i in 0..3 {
        let message = format!("after {i}");
        let (status, answer) = publish_to(&stack, &facility, &body, &message).await;
        assert_eq!((status, answer["receivers"].clone()), (200, json!(1)), "{answer}");
        all_receive(&mut sockets, &message, RECV).await;
    }
    // The classic path too (it reconnects to a live node if it was on the dead one).
    sync_clients(&cluster.nodes[alive[0]], &channel, &mut sockets).await;
    for (i, socket) in sockets.iter_mut().enumerate() {
        assert!(socket.try_recv().is_none(), "socket {i}: nothing else, no close");
    }
    assert!(stack.metric("crier_ws_redis_resubscriptions_total").await.unwrap_or(0.0) >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resharded_slot_keeps_delivering() {
    let cluster = RedisCluster::start().await;
    let conn = cluster.connection().await;
    let stack = Stack::start(cluster_stack(&cluster)).await;
    let (facility, slot, from) = broadcast_channel_on(&cluster, |_| true).await;
    let channel = format!("broadcast:{facility}");
    let to = cluster.shards(&ALL).await.iter().filter_map(|s| s.master).find(|&m| m != from).unwrap();
    let mut sockets = Vec::new();
    for _ in 0..3 {
        sockets.push(stack.connect(&format!("/ws/{facility}?subscribe-broadcast")).await);
    }
    sync_both(&cluster, &conn, &channel, &mut sockets).await;
    // A stored last message moves with the slot.
    let body = json!({"broadcast": true});
    let stored = json!({"facility": facility, "broadcast": true, "message": "stored", "expire": 600});
    assert_eq!(stack.publish(&stored).await.status, 200);
    all_receive(&mut sockets, "stored", RECV).await;

    cluster.move_slot(slot, from, to).await;
    wait_until(SETTLE, "every node sees the slot on its new master", || async {
        let mut all = true;
        for i in 0..6 {
            all &= cluster.shards_seen_by(i).await.is_some_and(|shards| {
                shards.iter().any(|s| s.master == Some(to) && s.slots.iter().any(|&(a, b)| (a..=b).contains(&slot)))
            });
        }
        all
    })
    .await;
    let mut attempt = 0;
    loop {
        attempt += 1;
        assert!(attempt < 500, "delivery never continued after the slot moved:\n{}", cluster.logs());
        let message = format!("after the move {attempt}");
        let (status, answer) = publish_to(&stack, &facility, &body, &message).await;
        if status == 200 && answer["receivers"] == 1 {
            all_receive(&mut sockets, &message, RECV).await;
            break;
        }
        assert!(status == 200 || status == 503, "{status}: {answer}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(cluster.shardnumsub(to, &channel).await, Some(1), "subscribed on the new master");
    assert_eq!(cluster.shardnumsub(from, &channel).await, Some(0), "not on the old one");
    let replayed = stack.connect(&format!("/ws/{facility}?subscribe-broadcast")).await;
    let mut replayed = vec![replayed];
    all_receive(&mut replayed, "stored", RECV).await;
    for (i, socket) in sockets.iter_mut().enumerate() {
        assert!(socket.try_recv().is_none(), "socket {i}: nothing else, no close");
    }
    assert!(stack.metric("crier_ws_redis_resubscriptions_total").await.unwrap_or(0.0) >= 1.0);
}

/// Client connections held on every node (the test's own cluster connection included: the
/// same at each count), without this count's own (`CLIENT LIST`).
async fn connections(cluster: &RedisCluster) -> usize {
    let mut total = 0;
    for i in 0..6 {
        let list: String = cluster.query(i, redis::cmd("CLIENT").arg("LIST")).await;
        total += list.lines().filter(|l| !l.trim().is_empty() && !l.contains("cmd=client|list")).count();
    }
    total
}

/// Waits until wsserver holds `channels` classic subscriptions (the revocations channel
/// included) and `channels - 1` shard subscriptions.
/// Waits until the nodes hold `expected` connections (a node may list a connection the client
/// already closed for a moment), and fails with the last count after a while.
async fn same_connections(cluster: &RedisCluster, expected: usize, what: &str) {
    let last = std::cell::Cell::new(0);
    let same = crier_tests::try_wait_until(Duration::from_secs(10), || async {
        last.set(connections(cluster).await);
        last.get() == expected
    })
    .await;
    if !same {
        let mut lists = String::new();
        for i in 0..6 {
            let list: String = cluster.query(i, redis::cmd("CLIENT").arg("LIST")).await;
            lists.push_str(&format!("node {i}:\n{list}\n"));
        }
        panic!("{what}: {} connections, {expected} with one socket and one channel:\n{lists}", last.get());
    }
}

async fn settled_channels(stack: &Stack, channels: f64) {
    wait_until(SETTLE, "wsserver subscribed every channel on both paths", || async {
        stack.metric("crier_ws_redis_channels").await == Some(channels)
            && stack.metric("crier_ws_redis_shard_channels").await == Some(channels - 1.0)
            && stack.metric("crier_ws_redis_unplaced_channels").await == Some(0.0)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_connections_stay_the_same_from_1_to_1000_sockets_and_1_to_10000_channels() {
    let cluster = RedisCluster::start().await;
    let mut conn = cluster.connection().await;
    let groups: Vec<String> = (0..10_000).map(|i| format!("g{i}")).collect();
    put_session(&mut conn, "many", "ann", &groups).await;
    let stack = Stack::start(cluster_stack(&cluster)).await;
    let path = "/ws/room?subscribe-broadcast";
    let first = stack.connect_direct(path).await;
    settled_channels(&stack, 2.0).await;
    let one = connections(&cluster).await;
    assert_eq!(stack.metric("crier_ws_redis_pubsub_connections").await, Some(4.0));

    let mut sockets = vec![first];
    for _ in 1..1000 {
        sockets.push(stack.connect_direct(path).await);
    }
    wait_until(SETTLE, "wsserver counts 1,000 sockets", || async {
        stack.metric("crier_ws_sockets_open").await == Some(1000.0)
    })
    .await;
    same_connections(&cluster, one, "1,000 sockets use the connections of one").await;

    let url = stack.direct_ws_url("/ws/room?subscribe-group");
    let _many = open_with_session(&url, Some("many")).await;
    settled_channels(&stack, 10_002.0).await;
    same_connections(&cluster, one, "10,000 more channels use the same connections").await;
    assert_eq!(stack.metric("crier_ws_redis_pubsub_connections").await, Some(4.0));
    // Spread over the three masters.
    let mut per_master = std::collections::HashMap::new();
    for shard in cluster.shards(&ALL).await {
        let master = shard.master.unwrap();
        let channels: Vec<String> = cluster.query(master, redis::cmd("PUBSUB").arg("SHARDCHANNELS")).await;
        per_master.insert(master, channels.len());
    }
    assert_eq!(per_master.values().sum::<usize>(), 10_001, "{per_master:?}");
    assert!(per_master.values().all(|&n| n > 2_000), "every shard holds its share: {per_master:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_recovers_after_a_reconnect_on_a_cluster() {
    let cluster = RedisCluster::start().await;
    let history = ["--history", "chat", "--history-size", "100", "--history-ttl", "5m"];
    let stack = Stack::start(cluster_stack(&cluster).ws_args(&history).web_args(&history)).await;
    let mut client = RecoveringClient::new(&stack.ws_url("/ws/chat?subscribe-broadcast"));
    assert!(client.connect(1, RECV).await);
    for i in 1..=3 {
        stack.publish_broadcast("chat", &format!("m{i}"), 0).await;
    }
    receive(&mut client, 3).await;
    client.drop_connection();
    for i in 4..=6 {
        stack.publish_broadcast("chat", &format!("m{i}"), 60).await;
    }
    assert!(client.connect(1, RECV).await);
    let status = client.last_status().unwrap().value.clone();
    assert_eq!(status["type"], "recovered", "{status}");
    assert_eq!(status["missed"], 3, "{status}");
    stack.publish_broadcast("chat", "live", 0).await;
    receive(&mut client, 7).await;
    assert_eq!(client.received, ["m1", "m2", "m3", "m4", "m5", "m6", "live"], "exactly once, in order");
    // The history keys and the last message share the channel's slot, on its master.
    let slot = cluster_slot("broadcast:chat");
    let master = cluster.master_of_slot(&ALL, slot).await.unwrap();
    let prefix = KeyPrefix::default();
    let channel = protocol::ChannelName::from_redis("broadcast:chat");
    for key in [prefix.history_stream(&channel), prefix.history_meta(&channel), "broadcast:chat".to_owned()] {
        assert_eq!(cluster.keyslot(master, &key).await, slot, "{key}");
        let exists: i64 = cluster.query(master, redis::cmd("EXISTS").arg(&key)).await;
        assert_eq!(exists, 1, "{key} on the channel's master");
    }
}

async fn receive(client: &mut RecoveringClient, n: usize) {
    let deadline = tokio::time::Instant::now() + RECV * 2;
    while client.received.len() < n {
        assert!(tokio::time::Instant::now() < deadline, "got {:?}, want {n}", client.received);
        assert!(client.pump_one(Duration::from_millis(200)).await, "connection ended; got {:?}", client.received);
    }
}

/// A target for the test's own use of webserver's store on the cluster.
fn cluster_target(cluster: &RedisCluster) -> service::redis_target::RedisTarget {
    use clap::{Args, FromArgMatches};
    let mut argv = vec!["test".to_owned()];
    argv.extend(cluster.crier_flags());
    let matches = service::redis_config::RedisArgs::augment_args(clap::Command::new("test")).get_matches_from(argv);
    service::redis_config::RedisArgs::from_arg_matches(&matches).unwrap().target().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_multi_channel_publishes_and_logout_work_across_slots() {
    use crier_tests::login::{cookie_value, hidden_csrf, home, login, post_form, set_cookie};
    let cluster = RedisCluster::start().await;
    let conn = cluster.connection().await;
    let stack = Stack::start(cluster_stack(&cluster)).await;
    // An account: its record and the account index are in different slots (one pipeline).
    let store = webserver::store::Store::new(
        &cluster_target(&cluster),
        KeyPrefix::default(),
        protocol::HistorySettings::off(),
        Default::default(),
    )
    .unwrap();
    let account = webserver::accounts::Account {
        name: Name::parse("ann").unwrap(),
        password_hash: webserver::accounts::hash_password("ann-password").unwrap(),
        groups: vec![Name::parse("staff").unwrap()],
    };
    store.put_account(&account).await.expect("an account written across slots");
    assert_eq!(store.account_names().await.unwrap(), [Name::parse("ann").unwrap()]);
    // Login writes the session record and the user's session index (different slots).
    let base = stack.front_url("");
    let session = login(&base, "ann", "ann-password").await;
    let flags = "subscribe-broadcast&subscribe-user&subscribe-group&publish-broadcast&publish-user&publish-group&echo";
    let url = stack.ws_url(&format!("/ws/multi?{flags}"));
    let mut socket = vec![open_with_session(&url, Some(&session)).await];
    let channels = ["broadcast:multi", "user:ann:multi", "group:staff:multi"];
    let slots: std::collections::HashSet<u16> = channels.iter().map(|c| cluster_slot(c)).collect();
    assert!(slots.len() > 1, "the channels span several slots");
    for channel in channels {
        sync_both(&cluster, &conn, channel, &mut socket).await;
    }

    // One API publish to several channels on several slots.
    let body = json!({"broadcast": true, "users": ["ann", "bob"], "groups": ["staff"]});
    let (status, answer) = publish_to(&stack, "multi", &body, "to all of them").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["receivers"], 3, "broadcast, user:ann and group:staff are subscribed: {answer}");
    for _ in 0..3 {
        assert_eq!(socket[0].expect_text(RECV).await, "to all of them");
    }
    // A client publish to its three publish channels (echo on: it receives each copy).
    socket[0].send_text("from the client").await.unwrap();
    for _ in 0..3 {
        assert_eq!(socket[0].expect_text(RECV).await, "from the client");
    }

    // Logout deletes the session and its index entry and announces it: the socket is closed.
    let page = home(&base, &session).await;
    let csrf = hidden_csrf(&page.body).expect("logout form csrf");
    let response =
        post_form(&format!("{base}/logout"), Some(&format!("sessionid={session}")), &[("csrf", &csrf)], &[]).await;
    assert_eq!(response.status, 303, "{}", response.body);
    assert_eq!(cookie_value(set_cookie(&response, "sessionid").unwrap()), "");
    let (code, reason) = socket[0].expect_close(RECV).await;
    assert_eq!((code, reason.as_str()), (1008, "session ended"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_events_and_lists_work_on_a_cluster() {
    let cluster = RedisCluster::start().await;
    let mut conn = cluster.connection().await;
    put_session(&mut conn, "sa", "ann", &[]).await;
    let stack = Stack::start(cluster_stack(&cluster).ws_args(&["--presence", "lobby"])).await;
    let events = "broadcast:presence/lobby";
    let mut watcher = vec![stack.connect("/ws/presence/lobby?subscribe-broadcast").await];
    sync_both(&cluster, &conn, events, &mut watcher).await;

    // The enter script updates the presence set and SPUBLISHes on the events channel: one slot.
    let ann = open_with_session(&stack.ws_url("/ws/lobby"), Some("sa")).await;
    let joined: serde_json::Value = serde_json::from_str(&watcher[0].expect_text(RECV).await).unwrap();
    assert_eq!(joined, json!({"event": "join", "user": "ann", "facility": "lobby"}));
    let key = KeyPrefix::default().presence(&protocol::Facility::parse("lobby").unwrap());
    assert_eq!(cluster_slot(&key), cluster_slot(events), "{key}");
    let auth = format!("Bearer {}", stack.publish_token());
    let listed = http::request(
        hyper::Method::GET,
        &stack.front_url("/api/presence/lobby"),
        &[("authorization", &auth)],
        bytes::Bytes::new(),
    )
    .await;
    assert_eq!(listed.json(), json!({"facility": "lobby", "users": ["ann"]}), "{}", listed.body);
    ann.close().await;
    let left: serde_json::Value = serde_json::from_str(&watcher[0].expect_text(RECV).await).unwrap();
    assert_eq!(left, json!({"event": "leave", "user": "ann", "facility": "lobby"}));
}

/// A live hand-off cuts each socket's messages at one marker, which needs one order of messages
/// (one Redis server, or Sentinel's master): on a cluster wsserver answers SIGUSR2 (what
/// `systemctl reload` sends) with a refusal in its log and keeps serving, instead of handing
/// sockets over without that guarantee or dying of the signal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr2_on_a_cluster_is_refused_in_the_log_and_the_process_keeps_serving() {
    let cluster = RedisCluster::start().await;
    let conn = cluster.connection().await;
    let mut ws =
        ServerProcess::wsserver_with(&cluster.crier_flags(), free_port(), free_port(), &["--anonymous-flags", "*"])
            .await;
    let (facility, _, _) = broadcast_channel_on(&cluster, |_| true).await;
    let channel = format!("broadcast:{facility}");
    let url = format!("ws://{}/ws/{facility}?subscribe-broadcast", ws.addr);
    let mut sockets = vec![WsClient::connect(&url).await.expect("connect")];
    sync_both(&cluster, &conn, &channel, &mut sockets).await;
    let pid = ws.pid().expect("running");

    ws.signal("USR2");
    wait_until(RECV, "wsserver logs that it refuses the hand-off", || async {
        ws.output().contains("no live hand-off on a Redis Cluster")
    })
    .await;
    assert!(!ws.has_exited(), "SIGUSR2 did not end the process:\n{}", ws.output());
    assert_eq!(ws.metric("crier_ws_process_id").await, Some(f64::from(pid)), "the same process serves");
    sync_both(&cluster, &conn, &channel, &mut sockets).await;
    let mut conn = conn.clone();
    assert_eq!(spublish(&mut conn, &channel, "after the refusal").await, 1);
    all_receive(&mut sockets, "after the refusal", RECV).await;
    assert!(sockets[0].try_recv().is_none(), "nothing else, no close");
}
