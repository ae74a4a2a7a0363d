//! Several wsserver hosts (issue 19, item 4): three wsserver processes on 127.0.0.1, .2 and .3
//! behind one nginx (the shipped site config, one upstream of three servers), webserver on
//! 127.0.0.4, each process with its own Redis connections and its own view of the topology. The
//! same test body runs on a single Redis, on a Sentinel set, on an all-TLS Sentinel set and on a
//! Redis Cluster (sharded pub/sub); any other topology that implements [`Topology`] is one more
//! test function calling `across_three_hosts`.
//!
//! Across the hosts: every API audience (broadcast, user, group, session) and every client
//! publish flag reaches sockets on all three; the last-message replay reaches a client whichever
//! host it lands on; presence sees users connected to different hosts and announces a user's
//! leave only when their last socket on any host closes; logout closes the session's sockets on
//! every host. Which host serves a socket is read from the hosts' gauges, so nginx's spreading is
//! checked, not assumed.
//!
//! Negative checks avoid sleeping: once every addressed socket has its frames, a marker is
//! published to everyone through the API, and every socket's next frame must be the marker.

use std::time::Duration;

use bytes::Bytes;
use crier_tests::cluster::RedisCluster;
use crier_tests::hosts::{Hosts, Placed, HOSTS, PUBLISH_TOKEN};
use crier_tests::login::{hidden_csrf, home, open_with_session, post_form, put_session, session_cookie};
use crier_tests::redis_server::free_port;
use crier_tests::sentinel::SentinelSet;
use crier_tests::{http, sync_clients, wait_until, Redis, RedisOptions, Topology, WsClient};
use hyper::Method;
use protocol::{Facility, KeyPrefix};
use serde_json::{json, Value};

const RECV: Duration = Duration::from_secs(5);
const SUBSCRIBE_ALL: &str = "subscribe-broadcast&subscribe-user&subscribe-group&subscribe-session";
const PUBLISH_ALL: &str = "publish-broadcast&publish-user&publish-group&publish-session";
/// ann's sessions (group staff), bob's, carol's.
const SESSIONS: [(&str, &str, &[&str]); 4] =
    [("sa1", "ann", &["staff"]), ("sa2", "ann", &["staff"]), ("sb", "bob", &[]), ("sc", "carol", &[])];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_on_a_single_redis() {
    across_three_hosts(&Redis::start_with(RedisOptions { port: Some(free_port()), ..RedisOptions::default() }).await)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_on_a_sentinel_set() {
    across_three_hosts(&SentinelSet::start().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_on_a_sentinel_set_over_tls() {
    across_three_hosts(&SentinelSet::start_tls().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_on_a_redis_cluster() {
    across_three_hosts(&RedisCluster::start().await).await;
}

/// Who a socket in the `room` facility belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    /// Session sa1 of ann (group staff).
    Ann,
    /// Session sb of bob.
    Bob,
    Anonymous,
}

struct Socket {
    placed: Placed,
    who: Who,
}

fn name(socket: &Socket) -> String {
    format!("{:?} on host {} ({})", socket.who, socket.placed.host, HOSTS[socket.placed.host])
}

async fn across_three_hosts(topology: &impl Topology) {
    let prefix = KeyPrefix::new("").expect("no prefix");
    for (key, user, groups) in SESSIONS {
        put_session(topology, &prefix, key, user, groups).await;
    }
    let hosts = Hosts::start(topology, &["--presence", "lobby", "--expire", "60"], &[]).await;
    eprintln!("{}: three wsservers at {HOSTS:?} behind nginx {}", topology.name(), hosts.nginx().addr());

    let mut room = room_sockets(&hosts, topology).await;
    api_audiences_reach_every_host(&hosts, &mut room).await;
    let publishers = client_publishes_reach_every_host(&hosts, &mut room).await;
    let replayed = last_message_replays_on_every_host(&hosts).await;
    let spread = hosts.sockets_open().await;
    eprintln!("sockets per host through nginx: {spread:?}");
    // Five kinds of socket are held (ann, bob, anonymous, publisher, ann on news), each on every host.
    assert!(spread.iter().all(|n| *n >= 5), "nginx spread the sockets over all three hosts: {spread:?}");

    presence_spans_hosts(&hosts, topology, &prefix).await;
    logout_closes_sockets_on_every_host(&hosts, room, publishers, replayed).await;
}

/// ann (sa1), bob (sb) and anonymous sockets on `room` with every subscribe flag, each on every
/// host, subscribed.
async fn room_sockets(hosts: &Hosts, topology: &impl Topology) -> Vec<Socket> {
    let url = format!("/ws/room?{SUBSCRIBE_ALL}");
    let mut sockets = Vec::new();
    for (who, session) in [(Who::Ann, Some("sa1")), (Who::Bob, Some("sb")), (Who::Anonymous, None)] {
        for placed in hosts.open_on_every_host(&url, session).await {
            sockets.push(Socket { placed, who });
        }
    }
    // Sorted by who, so that each identity's sockets are one slice to sync.
    let count = |who| sockets.iter().filter(|s| s.who == who).count();
    let (anns, bobs) = (count(Who::Ann), count(Who::Bob));
    let mut clients: Vec<WsClient> = Vec::new();
    let mut placement = Vec::new();
    for socket in sockets {
        placement.push((socket.placed.host, socket.who));
        clients.push(socket.placed.ws);
    }
    sync_clients(topology, "broadcast:room", &mut clients).await;
    for channel in ["user:ann:room", "group:staff:room", "session:sa1:room"] {
        sync_clients(topology, channel, &mut clients[..anns]).await;
    }
    for channel in ["user:bob:room", "session:sb:room"] {
        sync_clients(topology, channel, &mut clients[anns..anns + bobs]).await;
    }
    clients.into_iter().zip(placement).map(|(ws, (host, who))| Socket { placed: Placed { ws, host }, who }).collect()
}

/// Publishes through the API and asserts a 200; the answer.
async fn publish(hosts: &Hosts, body: Value) -> Value {
    let response = hosts.publish(&body).await;
    assert_eq!(response.status, 200, "{body}: {}", response.body);
    response.json()
}

/// Every socket receives exactly `expected(socket)` (in any order: the frames come over
/// different channels), then nothing but a marker published to everyone afterwards.
async fn assert_received(hosts: &Hosts, sockets: &mut [Socket], what: &str, expected: impl Fn(&Socket) -> Vec<String>) {
    for socket in sockets.iter_mut() {
        let mut want = expected(socket);
        let mut got = Vec::new();
        for _ in 0..want.len() {
            match socket.placed.ws.recv_text(RECV).await {
                Some(text) => got.push(text),
                None => panic!("{what}: {} got {got:?} of {want:?}", name(socket)),
            }
        }
        want.sort();
        got.sort();
        assert_eq!(got, want, "{what}: {}", name(socket));
    }
    let marker = format!("marker after {what}");
    publish(hosts, json!({"facility": "room", "broadcast": true, "message": marker, "expire": 0})).await;
    for socket in sockets.iter_mut() {
        let next = socket.placed.ws.recv_text(RECV).await;
        assert_eq!(next.as_deref(), Some(marker.as_str()), "{what}: {} gets nothing else", name(socket));
    }
}

async fn api_audiences_reach_every_host(hosts: &Hosts, room: &mut [Socket]) {
    let audiences: [(Value, &[Who]); 6] = [
        (json!({"broadcast": true}), &[Who::Ann, Who::Bob, Who::Anonymous]),
        (json!({"users": ["ann"]}), &[Who::Ann]),
        (json!({"users": ["bob"]}), &[Who::Bob]),
        (json!({"groups": ["staff"]}), &[Who::Ann]),
        (json!({"sessions": ["sa1"]}), &[Who::Ann]),
        (json!({"sessions": ["sb"]}), &[Who::Bob]),
    ];
    for (audience, addressed) in audiences {
        let message = format!("api to {audience}");
        let mut body = audience.clone();
        body["facility"] = json!("room");
        body["message"] = json!(message);
        body["expire"] = json!(0);
        let answer = publish(hosts, body).await;
        assert_eq!(answer["receivers"], 3, "{audience}: each of the three wsservers subscribes: {answer}");
        assert_received(hosts, room, &audience.to_string(), |s| {
            if addressed.contains(&s.who) {
                vec![message.clone()]
            } else {
                vec![]
            }
        })
        .await;
    }
}

/// ann publishes with all four publish flags from a socket on each host; every host's
/// subscribers get each message once per channel they share with it. Returns the publishers.
async fn client_publishes_reach_every_host(hosts: &Hosts, room: &mut [Socket]) -> Vec<Placed> {
    let publishers = hosts.open_on_every_host(&format!("/ws/room?{PUBLISH_ALL}"), Some("sa1")).await;
    let mut messages = Vec::new();
    for publisher in &publishers {
        let message = format!("from ann's socket on host {}", publisher.host);
        publisher.ws.send_text(&message).await.expect("send");
        messages.push(message);
    }
    assert_received(hosts, room, "client publishes", |s| {
        // broadcast, user:ann, group:staff and session:sa1 for ann; broadcast for the others.
        let copies = if s.who == Who::Ann { 4 } else { 1 };
        messages.iter().flat_map(|m| std::iter::repeat_n(m.clone(), copies)).collect()
    })
    .await;
    publishers
}

/// Messages kept by the API (expire 60) are replayed to new sockets on every host.
async fn last_message_replays_on_every_host(hosts: &Hosts) -> Vec<Placed> {
    publish(hosts, json!({"facility": "news", "broadcast": true, "message": "kept for everyone", "expire": 60})).await;
    publish(hosts, json!({"facility": "news", "users": ["ann"], "message": "kept for ann", "expire": 60})).await;
    let mut anns = hosts.open_on_every_host("/ws/news?subscribe-broadcast&subscribe-user", Some("sa1")).await;
    for placed in &mut anns {
        let mut got = vec![placed.ws.expect_text(RECV).await, placed.ws.expect_text(RECV).await];
        got.sort();
        assert_eq!(got, ["kept for ann", "kept for everyone"], "ann's new socket on host {}", placed.host);
    }
    for mut placed in hosts.open_on_every_host("/ws/news?subscribe-broadcast", None).await {
        assert_eq!(placed.ws.expect_text(RECV).await, "kept for everyone", "a new socket on host {}", placed.host);
        placed.ws.expect_silence(Duration::from_millis(100)).await;
    }
    anns
}

/// `GET /api/presence/<facility>` through nginx with the publish token: the users, sorted.
async fn present(hosts: &Hosts, facility: &str) -> Vec<String> {
    let auth = format!("Bearer {PUBLISH_TOKEN}");
    let url = hosts.front_url(&format!("/api/presence/{facility}"));
    let response = http::request(Method::GET, &url, &[("authorization", &auth)], Bytes::new()).await;
    assert_eq!(response.status, 200, "{}", response.body);
    let mut users: Vec<String> = serde_json::from_value(response.json()["users"].clone()).expect("a list of users");
    users.sort();
    users
}

/// Every watcher's next presence event is `kind` for `user`.
async fn next_event(watchers: &mut [WsClient], kind: &str, user: &str) {
    for (host, watcher) in watchers.iter_mut().enumerate() {
        let text = watcher.expect_text(RECV).await;
        let event: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
        assert_eq!(event, json!({"event": kind, "user": user, "facility": "lobby"}), "watcher on host {host}");
    }
}

/// ann's live entries (one per host with a socket of hers) in the presence set of `lobby`.
async fn entries_of_ann(topology: &impl Topology, prefix: &KeyPrefix) -> usize {
    let key = prefix.presence(&Facility::parse("lobby").expect("facility"));
    let members: Vec<String> = topology.query(redis::cmd("ZRANGE").arg(key).arg(0).arg(-1)).await;
    members.iter().filter(|m| m.starts_with("ann|")).count()
}

/// Sockets go straight to chosen hosts here (bypassing nginx) so that each user is on a known
/// host; watchers of the events on every host.
async fn presence_spans_hosts(hosts: &Hosts, topology: &impl Topology, prefix: &KeyPrefix) {
    let mut watchers = Vec::new();
    for host in 0..HOSTS.len() {
        watchers.push(WsClient::open(&hosts.direct_ws_url(host, "/ws/presence/lobby?subscribe-broadcast")).await);
    }
    let events = prefix.presence_events(&Facility::parse("lobby").expect("facility"));
    sync_clients(topology, events.as_str(), &mut watchers).await;
    assert_eq!(present(hosts, "lobby").await, Vec::<String>::new());

    let lobby = |host: usize, session: &str| {
        let url = hosts.direct_ws_url(host, "/ws/lobby");
        let session = session.to_owned();
        async move { open_with_session(&url, Some(&session)).await }
    };
    let ann_on_0 = lobby(0, "sa1").await;
    next_event(&mut watchers, "join", "ann").await;
    let bob_on_1 = lobby(1, "sb").await;
    next_event(&mut watchers, "join", "bob").await;
    let carol_on_2 = lobby(2, "sc").await;
    next_event(&mut watchers, "join", "carol").await;
    assert_eq!(present(hosts, "lobby").await, ["ann", "bob", "carol"], "users on three different hosts");

    // ann also on host 2 (another session): no second join. Then her socket on host 0 closes:
    // no leave, she is still on host 2; carol's leave is the next event.
    let ann_on_2 = lobby(2, "sa2").await;
    wait_until(RECV, "host 2 records ann too", || async { entries_of_ann(topology, prefix).await == 2 }).await;
    ann_on_0.close().await;
    wait_until(RECV, "host 0 removes its entry of ann", || async { entries_of_ann(topology, prefix).await == 1 }).await;
    carol_on_2.close().await;
    next_event(&mut watchers, "leave", "carol").await;
    assert_eq!(present(hosts, "lobby").await, ["ann", "bob"], "ann is still on host 2");

    ann_on_2.close().await;
    next_event(&mut watchers, "leave", "ann").await;
    bob_on_1.abort();
    next_event(&mut watchers, "leave", "bob").await;
    assert_eq!(present(hosts, "lobby").await, Vec::<String>::new());
}

/// Logging out of session sa1 through nginx closes its sockets on every host with 1008; bob's
/// and the anonymous sockets stay open and keep receiving.
async fn logout_closes_sockets_on_every_host(
    hosts: &Hosts,
    room: Vec<Socket>,
    publishers: Vec<Placed>,
    replayed: Vec<Placed>,
) {
    let base = hosts.front_url("");
    let page = home(&base, "sa1").await;
    assert_eq!(page.status, 200, "ann's home page: {}", page.body);
    let csrf = hidden_csrf(&page.body).expect("the logout form's csrf");
    let response = post_form(&format!("{base}/logout"), Some(&session_cookie("sa1")), &[("csrf", &csrf)], &[]).await;
    assert_eq!(response.status, 303, "{}", response.body);

    let (mut ended, mut kept): (Vec<Socket>, Vec<Socket>) = room.into_iter().partition(|s| s.who == Who::Ann);
    ended.extend(publishers.into_iter().chain(replayed).map(|placed| Socket { placed, who: Who::Ann }));
    let mut closed_on = [0usize; 3];
    for socket in &mut ended {
        let (code, reason) = socket.placed.ws.expect_close(RECV).await;
        assert_eq!((code, reason.as_str()), (1008, "session ended"), "{}", name(socket));
        closed_on[socket.placed.host] += 1;
    }
    assert!(closed_on.iter().all(|n| *n > 0), "session sa1 had sockets on every host, all closed: {closed_on:?}");

    let answer =
        publish(hosts, json!({"facility": "room", "broadcast": true, "message": "after the logout", "expire": 0}))
            .await;
    assert_eq!(answer["receivers"], 3);
    for socket in &mut kept {
        assert_eq!(socket.placed.ws.expect_text(RECV).await, "after the logout", "{}", name(socket));
    }
}
