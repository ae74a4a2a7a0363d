//! The rolling-restart scenario of issue #18, as a measurement: two wsserver processes behind the
//! shipped nginx config, subscribers of one broadcast channel that reconnect like ws4redis.js
//! (optionally recovering), a steady publisher (the publish API or plain Redis PUBLISH), and one
//! instance restarted the way the README's rolling upgrade does it (SIGTERM, wait for the exit,
//! start it again on the same port). Counts what every client lost, got twice or out of order.
//!
//! Run by `tests/examples/rolling_restart.rs` (and `scripts/rolling-restart.sh`).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::Method;
use redis::aio::MultiplexedConnection;
use tokio_util::sync::CancellationToken;

use crate::recovering_client::{run_client, Backoff, ClientOptions, SequenceCheck};
use crate::server_process::ServerProcess;
use crate::{http, try_wait_until, Nginx, Redis};

/// The facility every client subscribes to.
pub const FACILITY: &str = "rolling";
const HEARTBEAT: &str = "--heartbeat--";
const TOKEN: &str = "rolling-restart-publish-token-0123456789";
const SYNC: &str = "sync";

/// How messages are published.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishPath {
    /// `POST /api/publish` through nginx (appends to the history when it is on).
    Api,
    /// Plain Redis `PUBLISH`, as ws4redis' RedisPublisher does.
    Redis,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub clients: usize,
    /// Messages per second.
    pub rate: u32,
    /// How long the publisher runs.
    pub publish_for: Duration,
    /// When, after the first message, the first instance gets SIGTERM.
    pub restart_after: Duration,
    pub publish: PublishPath,
    /// Clients opt in to recovery.
    pub recover: bool,
    /// Both servers keep a history for [`FACILITY`] (`--history rolling`).
    pub history: bool,
    pub backoff: Backoff,
    pub seed: u64,
}

/// What happened.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub clients: usize,
    pub published: u64,
    pub publish_errors: u64,
    /// Clients whose socket ended at least once (those of the restarted instance).
    pub clients_disconnected: usize,
    pub reconnects: u64,
    pub lost: u64,
    pub clients_losing: usize,
    pub max_lost_per_client: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub gaps: u64,
    pub recoveries: u64,
    /// From SIGTERM until the restarted instance was ready again.
    pub restart_took: Duration,
    /// The first few duplicates, each with the payloads around it and the socket boundaries.
    pub duplicate_samples: Vec<String>,
}

/// Runs the scenario on private servers (started here, stopped on return).
pub async fn run(scenario: &Scenario) -> Result<Outcome, String> {
    let redis = Redis::start().await;
    let history: Vec<&str> = if scenario.history { vec!["--history", FACILITY] } else { Vec::new() };
    let ws_args: Vec<&str> = [&["--heartbeat", HEARTBEAT][..], &history].concat();
    let web_args: Vec<&str> = [&["--publish-token", TOKEN][..], &history].concat();
    let mut restarted = ServerProcess::wsserver(&redis.url(), &ws_args).await;
    let survivor = ServerProcess::wsserver(&redis.url(), &ws_args).await;
    let web = ServerProcess::webserver(&redis.url(), &web_args).await;
    // nginx/crier.conf has one `server <wsserver>;` line: "A;\n    server B" makes it two.
    let upstream = format!("{};\n    server {}", restarted.addr, survivor.addr);
    let nginx = Nginx::start(&web.addr.to_string(), &upstream).await;
    let front = format!("http://{}", nginx.addr());
    let url = format!("ws://{}/ws/{FACILITY}?subscribe-broadcast", nginx.addr());

    let stop = CancellationToken::new();
    let synced = Arc::new(AtomicUsize::new(0));
    let received = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(scenario.clients);
    for i in 0..scenario.clients {
        let options = ClientOptions {
            url: url.clone(),
            recover: scenario.recover,
            backoff: scenario.backoff,
            heartbeat: Some(HEARTBEAT.into()),
            seed: scenario.seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        };
        let (synced, received) = (synced.clone(), received.clone());
        let mut was_synced = false;
        tasks.push(tokio::spawn(run_client(options, stop.child_token(), move |payload| {
            received.fetch_add(1, Relaxed);
            if payload == SYNC && !was_synced {
                was_synced = true;
                synced.fetch_add(1, Relaxed);
            }
        })));
    }

    let publisher = Publisher { path: scenario.publish, front, redis: redis.conn().await };
    // Every client is subscribed once it got a sync message.
    let all_synced = try_wait_until(Duration::from_secs(60), || {
        let publisher = &publisher;
        let synced = synced.clone();
        async move {
            if synced.load(Relaxed) >= scenario.clients {
                return true;
            }
            let _ = publisher.publish(SYNC).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            false
        }
    })
    .await;
    if !all_synced {
        stop.cancel();
        return Err(format!("only {} of {} clients subscribed within 60 s", synced.load(Relaxed), scenario.clients));
    }

    let total = (f64::from(scenario.rate) * scenario.publish_for.as_secs_f64()).round() as u64;
    let mut outcome = Outcome { clients: scenario.clients, published: total, ..Outcome::default() };
    let restart = async {
        tokio::time::sleep(scenario.restart_after).await;
        let started = Instant::now();
        let (addr, admin) = (restarted.addr, restarted.admin.expect("wsserver admin address"));
        restarted.signal("TERM");
        let status = restarted.wait_exit(Duration::from_secs(30)).await;
        if !status.is_some_and(|s| s.success()) {
            return Err(format!("the restarted instance did not exit cleanly on SIGTERM: {status:?}"));
        }
        restarted = ServerProcess::wsserver_at(&redis.url(), addr, admin, &ws_args).await;
        Ok(started.elapsed())
    };
    let publish = async {
        let mut tick = tokio::time::interval(Duration::from_secs(1) / scenario.rate.max(1));
        let mut errors = 0;
        for n in 1..=total {
            tick.tick().await;
            if publisher.publish(&n.to_string()).await.is_err() {
                errors += 1;
            }
        }
        errors
    };
    let (restart_took, publish_errors) = tokio::join!(restart, publish);
    outcome.restart_took = restart_took?;
    outcome.publish_errors = publish_errors;

    // Drain: until nothing arrived for 2 s (at most 30 s).
    let drain_until = Instant::now() + Duration::from_secs(30);
    let mut last = received.load(Relaxed);
    while Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now = received.load(Relaxed);
        if now == last {
            break;
        }
        last = now;
    }
    stop.cancel();

    for (client, task) in tasks.into_iter().enumerate() {
        let log = task.await.map_err(|e| format!("a client task failed: {e}"))?;
        let (check, duplicates) = SequenceCheck::with_duplicates(&log.payloads, total);
        for at in duplicates.into_iter().take(3usize.saturating_sub(outcome.duplicate_samples.len())) {
            let around = &log.payloads[at.saturating_sub(5)..(at + 3).min(log.payloads.len())];
            outcome.duplicate_samples.push(format!(
                "client {client}: payload #{at} ({}) again; around it {around:?}; sockets started at payloads {:?}",
                log.payloads[at], log.connection_starts
            ));
        }
        outcome.lost += check.lost;
        outcome.duplicates += check.duplicates;
        outcome.out_of_order += check.out_of_order;
        outcome.max_lost_per_client = outcome.max_lost_per_client.max(check.lost);
        outcome.clients_losing += usize::from(check.lost > 0);
        outcome.clients_disconnected += usize::from(log.disconnects > 0);
        outcome.reconnects += u64::from(log.connections.saturating_sub(1));
        outcome.gaps += u64::from(log.gaps);
        outcome.recoveries += u64::from(log.recoveries);
    }
    drop(nginx);
    Ok(outcome)
}

/// One publisher: one message at a time, so the sequence numbers are the order of publishing.
struct Publisher {
    path: PublishPath,
    front: String,
    redis: MultiplexedConnection,
}

impl Publisher {
    async fn publish(&self, message: &str) -> Result<(), String> {
        match self.path {
            PublishPath::Redis => {
                let channel = format!("broadcast:{FACILITY}");
                let mut redis = self.redis.clone();
                redis::cmd("PUBLISH")
                    .arg(&channel)
                    .arg(message)
                    .query_async::<i64>(&mut redis)
                    .await
                    .map(drop)
                    .map_err(|e| format!("PUBLISH {channel}: {e}"))
            }
            PublishPath::Api => {
                let body =
                    serde_json::json!({"facility": FACILITY, "broadcast": true, "message": message, "expire": 0});
                let url = format!("{}/api/publish", self.front);
                let auth = format!("Bearer {TOKEN}");
                let headers = [("content-type", "application/json"), ("authorization", auth.as_str())];
                let answer = http::try_request(Method::POST, &url, &headers, body.to_string()).await?;
                if answer.status == 200 {
                    Ok(())
                } else {
                    Err(format!("publish answered {}: {}", answer.status, answer.body))
                }
            }
        }
    }
}
