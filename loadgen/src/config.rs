//! Command-line settings. Every loop loadgen runs is bounded by them: connect rate and timeout,
//! phase duration, drain time, search steps and an overall deadline.

use std::net::Ipv4Addr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What the subscribers listen to, and so what the publisher addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum Audience {
    /// Crier: every client subscribes with `subscribe-broadcast` to the facility; channels = 1.
    Broadcast,
    /// Crier: client i is logged in as user `lgu<i % channels>` (session written to Redis) and
    /// subscribes with `subscribe-user`; the publisher addresses users.
    User,
    /// Plain channel ids (Nchan): `{channel}` in --ws-url and --publish-url becomes `lg<n>`.
    Channel,
}

/// How messages are published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum PublishVia {
    /// Crier's `POST /api/publish` (JSON, bearer token) at --publish-url.
    Api,
    /// Straight into Redis (PUBLISH on Crier's channel names) at --redis-url.
    Redis,
    /// `POST` of the raw message to --publish-url with `{channel}` replaced (Nchan's publisher).
    Http,
    /// Nothing is published (connection tests).
    None,
}

/// Open many websocket subscribers, publish at a controlled rate, and report deliveries,
/// loss, reordering, latency and the server's memory and CPU per delivered message.
#[derive(Debug, Clone, Serialize, Deserialize, clap::Parser)]
#[command(name = "loadgen", version, about, long_about = None)]
pub struct Config {
    /// Name of the system under test, copied into the report.
    #[arg(long, default_value = "crier")]
    pub label: String,

    /// Websocket URL; `{channel}` is replaced by the client's channel id (audience channel).
    #[arg(long, env = "LOADGEN_WS_URL", default_value = "ws://127.0.0.1:8081/ws/loadgen?subscribe-broadcast")]
    pub ws_url: String,

    /// Origin header sent with each upgrade (none when unset).
    #[arg(long)]
    pub origin: Option<String>,

    #[arg(long, value_enum, default_value = "broadcast")]
    pub audience: Audience,

    /// Crier facility the publisher addresses (must match the one in --ws-url).
    #[arg(long, env = "LOADGEN_FACILITY", default_value = "loadgen")]
    pub facility: String,

    /// Crier key prefix (CRIER_PREFIX), for channel and session names.
    #[arg(long, default_value = "")]
    pub prefix: String,

    /// Websocket clients to open (1 to 1,000,000).
    #[arg(short = 'n', long, default_value_t = 100)]
    pub clients: usize,

    /// Distinct channels; client i listens on channel i % channels (1 = pure fan-out).
    #[arg(long, default_value_t = 1)]
    pub channels: usize,

    /// New connections per second, over all worker processes.
    #[arg(long, default_value_t = 2000.0)]
    pub connect_rate: f64,

    /// Connections being opened at once, per worker process.
    #[arg(long, default_value_t = 256)]
    pub connect_concurrency: usize,

    /// Time one connection may take (TCP connect plus upgrade).
    #[arg(long, default_value = "10", value_parser = seconds)]
    pub connect_timeout: Duration,

    /// Source addresses clients bind to, round robin: a list (127.0.0.2,127.0.0.3) or a range
    /// (127.0.0.2-127.0.0.20). Each address has its own ~28k ephemeral ports. Empty: the kernel
    /// picks (fine up to ~20k clients per destination).
    #[arg(long, default_value = "", value_parser = parse_addrs)]
    pub source_addrs: SourceAddrs,

    /// Worker processes holding the clients (0: as few as the open-file limit allows, at most
    /// one per core). Each opens clients/workers sockets.
    #[arg(long, default_value_t = 0)]
    pub workers: usize,

    #[arg(long, value_enum, default_value = "api")]
    pub publish: PublishVia,

    /// Publish endpoint: Crier's API URL, or the HTTP publisher template with `{channel}`.
    #[arg(long, env = "LOADGEN_PUBLISH_URL", default_value = "http://127.0.0.1:8000/api/publish")]
    pub publish_url: String,

    /// Send --publish-url's requests over this unix socket instead of to its host:port (the URL
    /// still gives the path and Host header): a publisher on the server's host posting to
    /// webserver's own socket rather than through nginx.
    #[arg(long, env = "LOADGEN_PUBLISH_UNIX_SOCKET")]
    pub publish_unix_socket: Option<std::path::PathBuf>,

    /// Bearer token for --publish api.
    #[arg(long, env = "CRIER_PUBLISH_TOKEN", default_value = "", hide_env_values = true)]
    pub publish_token: String,

    /// Redis for --publish redis and for the session records of --audience user.
    #[arg(long, env = "LOADGEN_REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,

    /// Redis Cluster seed nodes (host:port, comma-separated): the session records of --audience
    /// user are written through a cluster client instead of --redis-url.
    #[arg(long, env = "LOADGEN_REDIS_CLUSTER_NODES", value_delimiter = ',')]
    pub redis_cluster_nodes: Vec<String>,

    /// Publish requests in flight at once, each on its own keep-alive connection. While it is at
    /// most --channels, every channel is published by one connection, one request at a time,
    /// so its order is defined; above (e.g. 4 publishers on one channel) messages of a channel
    /// may legitimately arrive out of order. 0: 1 for one channel, else 32.
    #[arg(long, default_value_t = 0)]
    pub publish_concurrency: usize,

    /// Message size in bytes (at least 38, the header).
    #[arg(long, default_value_t = 64)]
    pub size: usize,

    /// Fixed publish rates (messages/s over all channels), one phase each, in order.
    #[arg(long, value_delimiter = ',')]
    pub rate: Vec<f64>,

    /// After the fixed rates, search for the highest lossless rate: start here and multiply by
    /// --search-factor until a phase fails (loss, disconnects, publish lag or p99 over --max-p99).
    #[arg(long)]
    pub search_from: Option<f64>,

    #[arg(long, default_value_t = 1.5)]
    pub search_factor: f64,

    /// Most phases the search runs stepping up.
    #[arg(long, default_value_t = 10)]
    pub search_steps: usize,

    /// Phases after the first failed search step that bisect (geometrically) between the last
    /// held rate and the failed one, to know the highest held rate more finely than one step.
    #[arg(long, default_value_t = 0)]
    pub search_refine: usize,

    /// A phase whose p99 latency exceeds this (ms) counts as a backlog, not held.
    #[arg(long, default_value_t = 1000.0)]
    pub max_p99: f64,

    /// Publishing time of each phase (seconds).
    #[arg(long, default_value = "10", value_parser = seconds)]
    pub duration: Duration,

    /// Longest wait after a phase's last publish for its deliveries (seconds).
    #[arg(long, default_value = "5", value_parser = seconds)]
    pub drain: Duration,

    /// Idle mode: connect, hold the sockets this many seconds, sample the server's RSS, stop.
    #[arg(long, value_parser = seconds)]
    pub idle: Option<Duration>,

    /// Server processes to sample (/proc/<pid>/stat and status), as LABEL=PID or PID; repeatable
    /// or comma-separated.
    #[arg(long, env = "LOADGEN_SERVER_PID", value_delimiter = ',')]
    pub server_pid: Vec<String>,

    /// Lifetime of the session records written for --audience user (seconds).
    #[arg(long, default_value_t = 3600)]
    pub session_ttl: u64,

    /// Hard limit on the whole run (seconds); 0 computes one from the other settings.
    #[arg(long, default_value = "0", value_parser = seconds)]
    pub deadline: Duration,

    /// Write the summary as JSON here (`-` for stdout, after the text).
    #[arg(long)]
    pub json: Option<String>,

    /// Write the latency-over-time and histogram chart here (SVG).
    #[arg(long)]
    pub svg: Option<String>,

    /// No live progress line.
    #[arg(long)]
    pub quiet: bool,

    /// Internal: run as worker process number N (configuration comes on stdin).
    #[arg(long, hide = true)]
    pub worker: Option<usize>,
}

/// Source addresses, parsed from a list or a range.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SourceAddrs(pub Vec<Ipv4Addr>);

fn seconds(s: &str) -> Result<Duration, String> {
    let s = s.trim().trim_end_matches('s');
    let v: f64 = s.parse().map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !(0.0..=86_400.0).contains(&v) {
        return Err("must be between 0 and 86400 seconds".into());
    }
    Ok(Duration::from_secs_f64(v))
}

fn parse_addrs(s: &str) -> Result<SourceAddrs, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if let Some((a, b)) = part.split_once('-') {
            let a: Ipv4Addr = a.trim().parse().map_err(|e| format!("{a}: {e}"))?;
            let b: Ipv4Addr = b.trim().parse().map_err(|e| format!("{b}: {e}"))?;
            let (a, b) = (u32::from(a), u32::from(b));
            if b < a || b - a > 65_535 {
                return Err(format!("bad range {part}"));
            }
            out.extend((a..=b).map(Ipv4Addr::from));
        } else {
            out.push(part.parse().map_err(|e| format!("{part}: {e}"))?);
        }
    }
    Ok(SourceAddrs(out))
}

impl Config {
    pub fn validate(&mut self) -> Result<(), String> {
        if !(1..=1_000_000).contains(&self.clients) {
            return Err("--clients must be between 1 and 1000000".into());
        }
        if self.audience == Audience::Broadcast {
            self.channels = 1;
        }
        if !(1..=self.clients.max(1)).contains(&self.channels) || self.channels > 9_999_999 {
            return Err("--channels must be between 1 and --clients".into());
        }
        if !(self.connect_rate > 0.0 && self.connect_rate <= 1e6) {
            return Err("--connect-rate must be in (0, 1000000]".into());
        }
        if !(1..=10_000).contains(&self.connect_concurrency) {
            return Err("--connect-concurrency must be between 1 and 10000".into());
        }
        if self.size > 1 << 20 {
            return Err("--size at most 1 MiB".into());
        }
        for r in self.rate.iter().chain(self.search_from.iter()) {
            if !(*r > 0.0 && *r <= 1e6) {
                return Err("rates must be in (0, 1000000] messages/s".into());
            }
        }
        if !(self.search_factor > 1.0 && self.search_factor <= 10.0) {
            return Err("--search-factor must be in (1, 10]".into());
        }
        let phases = self.phase_count();
        if phases > crate::message::MAX_PHASES as usize {
            return Err(format!(
                "at most {} phases (fixed rates + search steps + refinements)",
                crate::message::MAX_PHASES
            ));
        }
        if self.idle.is_none() && phases == 0 && self.publish != PublishVia::None {
            return Err("give --rate and/or --search-from (or --idle, or --publish none)".into());
        }
        if self.publish == PublishVia::Api && self.publish_token.len() < 16 {
            return Err("--publish api needs --publish-token (or CRIER_PUBLISH_TOKEN), at least 16 characters".into());
        }
        if self.publish == PublishVia::Http
            && self.audience == Audience::Channel
            && !self.publish_url.contains("{channel}")
        {
            return Err("--publish http with --audience channel needs {channel} in --publish-url".into());
        }
        if self.audience == Audience::Channel && self.channels > 1 && !self.ws_url.contains("{channel}") {
            return Err("--audience channel with several channels needs {channel} in --ws-url".into());
        }
        protocol::KeyPrefix::new(&self.prefix).map_err(|e| format!("--prefix: {e}"))?;
        protocol::Facility::parse(&self.facility).map_err(|e| format!("--facility: {e}"))?;
        crate::client::Target::parse(&self.ws_url.replace("{channel}", "x"))?;
        Ok(())
    }

    pub fn phase_count(&self) -> usize {
        let search = crate::search::RateSearch::max_phases(self.search_steps, self.search_refine);
        self.rate.len() + if self.search_from.is_some() { search } else { 0 }
    }

    pub fn publish_concurrency(&self) -> usize {
        match self.publish_concurrency {
            0 if self.channels == 1 => 1,
            0 => 32.min(self.channels),
            n => n.min(1024),
        }
    }

    /// Seconds the connect stage may take: the paced schedule, twice over, plus a timeout.
    pub fn connect_budget(&self) -> Duration {
        Duration::from_secs_f64(self.clients as f64 / self.connect_rate * 2.0)
            + self.connect_timeout
            + Duration::from_secs(5)
    }

    /// The run's hard limit: --deadline, or one derived from the stages.
    pub fn effective_deadline(&self) -> Duration {
        if !self.deadline.is_zero() {
            return self.deadline;
        }
        let phases = self.phase_count() as u32;
        self.connect_budget()
            + self.idle.unwrap_or_default()
            + (self.duration + self.drain + Duration::from_secs(2)) * phases
            + Duration::from_secs(30)
    }

    /// Channel id of channel `n` (Nchan ids, and the suffix of Crier user names).
    pub fn channel_id(n: usize) -> String {
        format!("lg{n}")
    }
}
