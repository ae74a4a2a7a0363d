//! The rolling-restart loss measurement (issue #18): private redis-server, two wsserver
//! processes behind the shipped nginx config, a webserver, N subscribers of one broadcast
//! channel reconnecting like ws4redis.js (first retry within 1 s), a publisher at a fixed rate,
//! and one instance restarted with SIGTERM mid-way. Prints messages lost, clients losing,
//! duplicates and out-of-order deliveries. `scripts/rolling-restart.sh` runs the three cases.
//!
//! ```sh
//! cargo run -p crier-tests --example rolling_restart -- --publish api --recover --history
//! ```
//!
//! Needs redis-server and nginx (`CRIER_TEST_REDIS_SERVER`, `CRIER_TEST_NGINX` or PATH); builds
//! wsserver and webserver with the example's profile unless `CRIER_TEST_BIN_DIR` is set.

use std::time::Duration;

use clap::{Parser, ValueEnum};
use crier_tests::recovering_client::Backoff;
use crier_tests::rolling_restart::{run, PublishPath, Scenario};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Publish {
    /// POST /api/publish through nginx.
    Api,
    /// Plain Redis PUBLISH (ws4redis' RedisPublisher).
    Redis,
}

#[derive(Debug, Parser)]
struct Args {
    /// Subscribers of the broadcast channel.
    #[arg(long, default_value_t = 200)]
    clients: usize,
    /// Messages per second.
    #[arg(long, default_value_t = 50)]
    rate: u32,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Seconds after the first message at which one instance gets SIGTERM.
    #[arg(long, default_value_t = 3.0)]
    restart_after: f64,
    #[arg(long, value_enum, default_value = "api")]
    publish: Publish,
    /// Clients opt in to recovery (`recover` on the URL).
    #[arg(long)]
    recover: bool,
    /// Both servers keep a history for the facility.
    #[arg(long)]
    history: bool,
    /// Upper bound of the first reconnect delay, in ms (it doubles per retry in a row).
    #[arg(long, default_value_t = 1000)]
    first_retry_ms: u64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print one Markdown table row instead of the report.
    #[arg(long)]
    row: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.clients > 0 && args.rate > 0 && args.seconds > 0.0,
        "clients, rate and seconds must be positive"
    );
    anyhow::ensure!(
        args.restart_after >= 0.0 && args.restart_after < args.seconds,
        "--restart-after must fall within --seconds"
    );
    let scenario = Scenario {
        clients: args.clients,
        rate: args.rate,
        publish_for: Duration::from_secs_f64(args.seconds),
        restart_after: Duration::from_secs_f64(args.restart_after),
        publish: match args.publish {
            Publish::Api => PublishPath::Api,
            Publish::Redis => PublishPath::Redis,
        },
        recover: args.recover,
        history: args.history,
        backoff: Backoff { first: Duration::from_millis(args.first_retry_ms), ..Backoff::default() },
        seed: args.seed,
    };
    let o = run(&scenario).await.map_err(anyhow::Error::msg)?;
    let publish = match args.publish {
        Publish::Api => "API",
        Publish::Redis => "Redis PUBLISH",
    };
    let on_off = |b: bool| if b { "on" } else { "off" };
    if args.row {
        println!(
            "| {publish} | {} | {} | {} | {} | {} | {} | {} / {} | {} | {} | {} | {} |",
            on_off(args.history),
            on_off(args.recover),
            o.published,
            o.lost,
            o.clients_losing,
            o.max_lost_per_client,
            o.clients_disconnected,
            o.clients,
            o.duplicates,
            o.out_of_order,
            o.gaps,
            o.publish_errors
        );
    } else {
        println!(
            "rolling restart: {} clients, {} msg/s via {publish} for {} s, history {}, recovery {}",
            o.clients,
            args.rate,
            args.seconds,
            on_off(args.history),
            on_off(args.recover)
        );
        println!("  published           {}", o.published);
        println!("  publish errors      {}", o.publish_errors);
        println!("  restart took        {:.2} s (SIGTERM to ready)", o.restart_took.as_secs_f64());
        println!("  clients disconnected {} (reconnects {})", o.clients_disconnected, o.reconnects);
        println!("  messages lost       {}", o.lost);
        println!("  clients losing      {} (at most {} each)", o.clients_losing, o.max_lost_per_client);
        println!("  duplicates          {}", o.duplicates);
        println!("  out of order        {}", o.out_of_order);
        println!("  recovered / gaps    {} / {}", o.recoveries, o.gaps);
    }
    for sample in &o.duplicate_samples {
        eprintln!("duplicate: {sample}");
    }
    Ok(())
}
