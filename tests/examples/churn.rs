//! Socket churn for `scripts/soak.sh`: many concurrent workers, each looping connect →
//! subscribe → receive → disconnect against one wsserver for a fixed time, while a publisher
//! keeps every channel busy (PUBLISH + SET EX, so each new socket also gets a replay).
//!
//! Half of the disconnects are clean close handshakes, half are dropped TCP connections.
//! Prints a progress line every 10 s and a final `churn: ...` summary; exits 1 when more than
//! 1 % of the cycles failed.
//!
//! ```sh
//! cargo run --release -p crier-tests --example churn -- \
//!     --url ws://127.0.0.1:8081 --redis-url unix:///tmp/redis.sock --seconds 60
//! ```

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use crier_tests::{Event, WsClient};

#[derive(Debug, Parser)]
struct Args {
    /// wsserver's websocket address, `ws://host:port`.
    #[arg(long)]
    url: String,
    /// Redis the publisher writes to (the same wsserver reads).
    #[arg(long)]
    redis_url: String,
    /// wsserver's --prefix.
    #[arg(long, default_value = "soak")]
    prefix: String,
    /// Concurrent workers (each holds at most one socket).
    #[arg(long, default_value_t = 2000)]
    sockets: usize,
    /// Facilities the workers spread over (`soak-0` … `soak-N-1`).
    #[arg(long, default_value_t = 50)]
    channels: usize,
    /// How long to churn.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Interval between publisher rounds (one message to every channel per round).
    #[arg(long, default_value_t = 100)]
    publish_interval_ms: u64,
}

#[derive(Default)]
struct Stats {
    cycles: AtomicU64,
    connect_errors: AtomicU64,
    receive_errors: AtomicU64,
    messages: AtomicU64,
    published: AtomicU64,
    publish_errors: AtomicU64,
}

fn channel(prefix: &str, facility: &str) -> String {
    if prefix.is_empty() {
        format!("broadcast:{facility}")
    } else {
        format!("{prefix}:broadcast:{facility}")
    }
}

async fn publisher(args: Arc<Args>, stats: Arc<Stats>, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    let client = redis::Client::open(args.redis_url.as_str())?;
    // The churn loads the machine; a slow round is not a failure (the default is 500 ms).
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(10)));
    let mut conn = client.get_multiplexed_async_connection_with_config(&config).await?;
    let mut round = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(args.publish_interval_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !stop.load(Relaxed) {
        tick.tick().await;
        let mut pipe = redis::pipe();
        for k in 0..args.channels {
            let name = channel(&args.prefix, &format!("soak-{k}"));
            let message = format!("tick-{round}");
            pipe.cmd("PUBLISH").arg(&name).arg(&message).ignore();
            pipe.cmd("SET").arg(&name).arg(&message).arg("EX").arg(120).ignore();
        }
        match pipe.query_async::<()>(&mut conn).await {
            Ok(()) => {
                stats.published.fetch_add(args.channels as u64, Relaxed);
            }
            Err(e) => {
                if stats.publish_errors.fetch_add(1, Relaxed) == 0 {
                    eprintln!("churn: publishing failed ({e}); retrying every round");
                }
            }
        }
        round += 1;
    }
    // Leave no stored messages behind.
    let mut pipe = redis::pipe();
    for k in 0..args.channels {
        pipe.cmd("DEL").arg(channel(&args.prefix, &format!("soak-{k}"))).ignore();
    }
    pipe.query_async::<()>(&mut conn).await?;
    Ok(())
}

/// One connect → receive (replay and one live message) → disconnect cycle.
async fn cycle(args: &Args, stats: &Stats, worker: usize, n: u64) -> Result<(), &'static str> {
    let k = (worker as u64 + n) % args.channels as u64;
    let url = format!("{}/ws/soak-{k}?subscribe-broadcast", args.url);
    let mut ws = match WsClient::connect(&url).await {
        Ok(ws) => ws,
        Err(_) => {
            stats.connect_errors.fetch_add(1, Relaxed);
            return Err("connect");
        }
    };
    for _ in 0..2 {
        match ws.recv(Duration::from_secs(10)).await {
            Some(Event::Text(_)) => {
                stats.messages.fetch_add(1, Relaxed);
            }
            _ => {
                stats.receive_errors.fetch_add(1, Relaxed);
                return Err("receive");
            }
        }
    }
    if n.is_multiple_of(2) {
        ws.close().await;
    } else {
        ws.abort();
    }
    Ok(())
}

async fn worker(args: Arc<Args>, stats: Arc<Stats>, worker: usize, deadline: Instant) {
    // Spread the first connects over the first second.
    tokio::time::sleep(Duration::from_micros((worker as u64 * 1_000_000) / args.sockets as u64)).await;
    let mut n = 0u64;
    while Instant::now() < deadline {
        let failed = cycle(&args, &stats, worker, n).await.is_err();
        stats.cycles.fetch_add(1, Relaxed);
        n += 1;
        // Back off a little after a failure, as a real client would.
        let pause = if failed { 200 } else { (worker as u64 * 7 + n * 13) % 50 };
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
}

fn line(stats: &Stats, elapsed: Duration) -> String {
    format!(
        "t={:.0}s cycles={} messages={} published={} publish_errors={} connect_errors={} receive_errors={}",
        elapsed.as_secs_f64(),
        stats.cycles.load(Relaxed),
        stats.messages.load(Relaxed),
        stats.published.load(Relaxed),
        stats.publish_errors.load(Relaxed),
        stats.connect_errors.load(Relaxed),
        stats.receive_errors.load(Relaxed),
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Arc::new(Args::parse());
    let stats = Arc::new(Stats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds);

    let publishing = tokio::spawn(publisher(args.clone(), stats.clone(), stop.clone()));
    let workers: Vec<_> =
        (0..args.sockets).map(|w| tokio::spawn(worker(args.clone(), stats.clone(), w, deadline))).collect();
    let progress = {
        let stats = stats.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(10));
            tick.tick().await;
            loop {
                tick.tick().await;
                println!("churn: {}", line(&stats, started.elapsed()));
            }
        })
    };
    for w in workers {
        w.await?;
    }
    stop.store(true, Relaxed);
    progress.abort();
    publishing.await??;

    let cycles = stats.cycles.load(Relaxed).max(1);
    let errors = stats.connect_errors.load(Relaxed) + stats.receive_errors.load(Relaxed);
    println!("churn: done {}", line(&stats, started.elapsed()));
    if errors * 100 > cycles {
        eprintln!("churn: {errors} of {cycles} cycles failed (over 1 %)");
        std::process::exit(1);
    }
    Ok(())
}
