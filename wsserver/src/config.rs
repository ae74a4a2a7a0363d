//! wsserver's settings: every one a command-line flag and a `CRIER_*` environment variable, with
//! a documented default and limit. `--check` validates them and exits.

use std::net::SocketAddr;
use std::time::Duration;

use protocol::KeyPrefix;
use service::listen::{ListenAddr, Owner, SocketMode, UnixOptions};
use service::{parse_duration, LogFormat};

/// Crier's websocket server: serves `/ws/<facility>?<flags>` and fans Redis pub/sub out to
/// sockets.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "wsserver", version, about, long_about = None)]
pub struct Config {
    /// Where the websocket endpoint listens: host:port, or unix:/path for a unix socket (nginx
    /// on the same host). A socket systemd passes (FileDescriptorName=listen) replaces it.
    #[arg(long, env = "CRIER_WS_LISTEN", default_value = "127.0.0.1:8081")]
    pub listen: ListenAddr,

    /// Permission bits of the unix socket --listen creates (octal; connecting needs write).
    #[arg(long, env = "CRIER_WS_LISTEN_MODE", default_value = "0660")]
    pub listen_mode: SocketMode,

    /// Owner of the unix socket --listen creates: USER, USER:GROUP or :GROUP (like :www-data,
    /// so nginx may connect). Unset: this process's user and group.
    #[arg(long, env = "CRIER_WS_LISTEN_OWNER")]
    pub listen_owner: Option<Owner>,

    /// Address of the admin endpoint (/healthz, /readyz, /metrics). Keep it private.
    #[arg(long, env = "CRIER_WS_ADMIN_LISTEN", default_value = "127.0.0.1:9191")]
    pub admin_listen: SocketAddr,

    /// Redis: URL, TLS files, Sentinels (service::redis_config).
    #[command(flatten)]
    pub redis: service::redis_config::RedisArgs,

    /// ws4redis key prefix (WS4REDIS_PREFIX); empty means none, as in ws4redis.
    #[arg(long, env = "CRIER_PREFIX", default_value = "")]
    pub prefix: String,

    /// URL path prefix of the websocket endpoint (WEBSOCKET_URL); the facility follows it. Must
    /// start and end with `/`.
    #[arg(long, env = "CRIER_WS_URL_PREFIX", default_value = "/ws/")]
    pub url_prefix: String,

    /// Seconds a client-published message is kept as its channel's last message (SET .. EX);
    /// 0 publishes only. At most 30 days.
    #[arg(long, env = "CRIER_EXPIRE", default_value_t = 3600)]
    pub expire: u64,

    /// Heartbeat string (WS4REDIS_HEARTBEAT). When set, a client frame equal to it is answered
    /// with it and never published, and idle sockets receive it every --heartbeat-interval.
    #[arg(long, env = "CRIER_HEARTBEAT", allow_hyphen_values = true)]
    pub heartbeat: Option<String>,

    /// How long a socket may stay silent before it is sent the heartbeat string (1s to 1h).
    #[arg(long, env = "CRIER_HEARTBEAT_INTERVAL", default_value = "4s", value_parser = parse_duration)]
    pub heartbeat_interval: Duration,

    /// Interval of websocket pings to each client (1s to 1h).
    #[arg(long, env = "CRIER_PING_INTERVAL", default_value = "30s", value_parser = parse_duration)]
    pub ping_interval: Duration,

    /// A client that sends nothing (not even a pong) for this long after a ping is closed
    /// (100ms to 10m).
    #[arg(long, env = "CRIER_PING_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub ping_timeout: Duration,

    /// Most websockets open at once in this process; further upgrades get 503 (1 to 10000000).
    #[arg(long, env = "CRIER_MAX_CONNECTIONS", default_value_t = 100_000)]
    pub max_connections: usize,

    /// Most websockets open at once from one client address (0: no limit).
    #[arg(long, env = "CRIER_MAX_CONNECTIONS_PER_IP", default_value_t = 0)]
    pub max_connections_per_ip: usize,

    /// Proxies (comma-separated IPs) whose X-Real-IP header names the client, for the
    /// per-address limit and logs; other peers' forwarded headers are ignored. nginx on the same
    /// host is 127.0.0.1; a peer on a unix socket (--listen unix:…) is always trusted.
    #[arg(long, env = "CRIER_TRUSTED_PROXIES", value_delimiter = ',', default_value = service::proxy::DEFAULT_TRUSTED_PROXIES)]
    pub trusted_proxies: Vec<std::net::IpAddr>,

    /// Largest message a client may send, in bytes, whole or in fragments (close 1009 beyond);
    /// 125 bytes to 64 MiB.
    #[arg(long, env = "CRIER_MAX_MESSAGE_SIZE", default_value_t = 65_536)]
    pub max_message_size: usize,

    /// Frames queued for one socket before it counts as a slow consumer and is closed with 1008
    /// (1 to 1000000).
    #[arg(long, env = "CRIER_QUEUE_DEPTH", default_value_t = 1024)]
    pub queue_depth: usize,

    /// Threads that write Redis messages out to the sockets; each socket belongs to one. 0: one
    /// per CPU (0 to 256).
    #[arg(long, env = "CRIER_FANOUT_THREADS", default_value_t = 0)]
    pub fanout_threads: usize,

    /// Time a client has to send its upgrade request headers (100ms to 5m).
    #[arg(long, env = "CRIER_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub handshake_timeout: Duration,

    /// Comma-separated Origins allowed to open sockets (e.g. https://example.com). Empty allows
    /// every Origin, which lets any web site use a visitor's cookies here: set it in production.
    #[arg(long, env = "CRIER_ALLOWED_ORIGINS", default_value = "", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// Resolve identities through this HTTP URL instead of Crier's sessions: the upgrade's
    /// Cookie and Authorization headers are forwarded, a 200 answer carries
    /// {"user": .., "groups": [..], "session": ..}. Plain http:// (keep it on the local network).
    #[arg(long, env = "CRIER_AUTH_URL")]
    pub auth_url: Option<String>,

    /// How long the auth callback may take before the upgrade is refused with 503 (10ms to 60s).
    #[arg(long, env = "CRIER_AUTH_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    pub auth_timeout: Duration,

    /// How long auth callback answers are reused for the same Cookie/Authorization (0: never;
    /// at most 1h).
    #[arg(long, env = "CRIER_AUTH_CACHE_TTL", default_value = "10s", value_parser = parse_duration)]
    pub auth_cache_ttl: Duration,

    /// Flags anonymous clients may use (comma-separated; `*` for all). Anything else: 403.
    /// The default refuses every publish flag to anonymous clients.
    #[arg(
        long,
        env = "CRIER_ANONYMOUS_FLAGS",
        value_delimiter = ',',
        default_value = "subscribe-broadcast,subscribe-user,subscribe-group,subscribe-session,echo"
    )]
    pub anonymous_flags: Vec<String>,

    /// Flags logged-in clients may use (comma-separated; `*` for all).
    #[arg(long, env = "CRIER_AUTHENTICATED_FLAGS", value_delimiter = ',', default_value = "*")]
    pub authenticated_flags: Vec<String>,

    /// Facilities whose connected users are recorded in Redis (comma-separated; `*` for all;
    /// empty: presence off). Join/leave events go to the facility `presence/<facility>`.
    #[arg(long, env = "CRIER_PRESENCE", value_delimiter = ',', default_value = "")]
    pub presence: Vec<String>,

    /// How long a presence entry lives without a refresh (refreshed every third of it): a
    /// crashed instance's users disappear within this time. 3s to 1h.
    #[arg(long, env = "CRIER_PRESENCE_TTL", default_value = "30s", value_parser = parse_duration)]
    pub presence_ttl: Duration,

    #[command(flatten)]
    pub history: service::history_args::HistoryArgs,

    /// Test mode for conformance suites: sockets on this facility echo every message back with
    /// its own opcode, without Redis. Off unless set; never set it in production.
    #[arg(long, env = "CRIER_ECHO_TEST_FACILITY", hide = true)]
    pub echo_test_facility: Option<String>,

    /// How long shutdown waits for sockets to close after sending them 1001 (at most 10m).
    #[arg(long, env = "CRIER_DRAIN_DEADLINE", default_value = "10s", value_parser = parse_duration)]
    pub drain_deadline: Duration,

    /// Log format.
    #[arg(long, env = "CRIER_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Validate the configuration, print it, and exit (0 when valid).
    #[arg(long)]
    pub check: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--{flag}: {problem}")]
    Invalid { flag: &'static str, problem: String },
}

fn invalid(flag: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { flag, problem: problem.into() }
}

impl Config {
    /// Checks every limit; the error names the flag and what is wrong.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.redis.target().map_err(|e| invalid(e.flag, e.problem))?;
        KeyPrefix::new(&self.prefix).map_err(|e| invalid("prefix", e.to_string()))?;
        self.history.settings().map_err(|e| invalid("history", e.to_string()))?;
        if !self.url_prefix.starts_with('/') || !self.url_prefix.ends_with('/') {
            return Err(invalid("url-prefix", "must start and end with '/', like /ws/"));
        }
        if self.expire > protocol::PublishRequest::MAX_EXPIRE {
            return Err(invalid("expire", "at most 2592000 seconds (30 days)"));
        }
        if matches!(&self.heartbeat, Some(h) if h.is_empty()) {
            return Err(invalid("heartbeat", "must not be empty (leave it unset to turn heartbeats off)"));
        }
        let secs = |d: Duration| (1..=3600).contains(&d.as_secs());
        if !secs(self.heartbeat_interval) {
            return Err(invalid("heartbeat-interval", "must be between 1s and 1h"));
        }
        if !secs(self.ping_interval) {
            return Err(invalid("ping-interval", "must be between 1s and 1h"));
        }
        if self.ping_timeout < Duration::from_millis(100) || self.ping_timeout > Duration::from_secs(600) {
            return Err(invalid("ping-timeout", "must be between 100ms and 10m"));
        }
        if !(1..=10_000_000).contains(&self.max_connections) {
            return Err(invalid("max-connections", "must be between 1 and 10000000"));
        }
        if !(125..=64 << 20).contains(&self.max_message_size) {
            return Err(invalid("max-message-size", "must be between 125 bytes and 64 MiB"));
        }
        if self.fanout_threads > 256 {
            return Err(invalid("fanout-threads", "must be between 0 and 256"));
        }
        if !(1..=1_000_000).contains(&self.queue_depth) {
            return Err(invalid("queue-depth", "must be between 1 and 1000000"));
        }
        if self.handshake_timeout < Duration::from_millis(100) || self.handshake_timeout > Duration::from_secs(300) {
            return Err(invalid("handshake-timeout", "must be between 100ms and 5m"));
        }
        if self.drain_deadline > Duration::from_secs(600) {
            return Err(invalid("drain-deadline", "must be at most 10m"));
        }
        if let Some(url) = &self.auth_url {
            let uri: hyper::Uri = url.parse().map_err(|e| invalid("auth-url", format!("{e}")))?;
            if uri.scheme_str() != Some("http") || uri.host().is_none() {
                return Err(invalid("auth-url", "must be an http:// URL with a host"));
            }
        }
        if self.auth_timeout < Duration::from_millis(10) || self.auth_timeout > Duration::from_secs(60) {
            return Err(invalid("auth-timeout", "must be between 10ms and 60s"));
        }
        if self.auth_cache_ttl > Duration::from_secs(3600) {
            return Err(invalid("auth-cache-ttl", "must be at most 1h"));
        }
        self.access_rules()?;
        if self.presence_ttl < Duration::from_secs(3) || self.presence_ttl > Duration::from_secs(3600) {
            return Err(invalid("presence-ttl", "must be between 3s and 1h"));
        }
        for origin in self.allowed_origins() {
            if !(origin.starts_with("http://") || origin.starts_with("https://")) || origin.ends_with('/') {
                return Err(invalid(
                    "allowed-origins",
                    format!("{origin:?} is not an origin like https://example.com"),
                ));
            }
        }
        Ok(())
    }

    /// Mode and owner of the unix socket `--listen` creates.
    pub fn unix_options(&self) -> UnixOptions {
        UnixOptions { mode: self.listen_mode, owner: self.listen_owner }
    }

    /// The allowed Origins, trimmed, empties dropped.
    pub fn allowed_origins(&self) -> impl Iterator<Item = &str> {
        self.allowed_origins.iter().map(|o| o.trim()).filter(|o| !o.is_empty())
    }

    pub fn access_rules(&self) -> Result<crate::access::AccessRules, ConfigError> {
        crate::access::AccessRules::parse(&self.anonymous_flags, &self.authenticated_flags)
            .map_err(|e| invalid("anonymous-flags/--authenticated-flags", e))
    }

    pub fn key_prefix(&self) -> KeyPrefix {
        KeyPrefix::new(&self.prefix).expect("validated")
    }

    /// The effective configuration for `--check`, with the Redis password masked.
    pub fn describe(&self) -> String {
        let mut shown = self.clone();
        shown.redis = self.redis.masked();
        shown.auth_url = self.auth_url.as_deref().map(service::redact::mask_url);
        format!("{shown:#?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> Config {
        Config::parse_from(std::iter::once("wsserver").chain(args.iter().copied()))
    }

    #[test]
    fn history_settings_are_checked() {
        assert!(parse(&["--history", "chat,game", "--history-size", "50", "--history-ttl", "1h"]).validate().is_ok());
        for bad in [["--history-size", "0"], ["--history-ttl", "200h"]] {
            let err = parse(&bad).validate().unwrap_err().to_string();
            assert!(err.contains("history"), "{err}");
        }
    }

    #[test]
    fn defaults_are_valid() {
        parse(&[]).validate().unwrap();
    }

    #[test]
    fn bad_values_name_the_flag() {
        let err = parse(&["--redis-url", "http://x"]).validate().unwrap_err().to_string();
        assert!(err.starts_with("--redis-url"), "{err}");
        let err = parse(&["--allowed-origins", "example.com"]).validate().unwrap_err().to_string();
        assert!(err.contains("allowed-origins"), "{err}");
        assert!(parse(&["--max-message-size", "10"]).validate().is_err());
        let err = parse(&["--fanout-threads", "300"]).validate().unwrap_err().to_string();
        assert!(err.contains("fanout-threads"), "{err}");
        assert!(parse(&["--fanout-threads", "3"]).validate().is_ok());
        let wrong = Config::try_parse_from(["wsserver", "--listen", "unix:"]).unwrap_err().to_string();
        assert!(wrong.contains("needs a socket path"), "{wrong}");
        assert!(Config::try_parse_from(["wsserver", "--listen-mode", "0999"]).is_err());
    }

    #[test]
    fn listens_on_a_unix_socket_with_mode_and_owner() {
        let c = parse(&["--listen", "unix:/run/crier/wsserver.sock", "--listen-mode", "0666", "--listen-owner", ":0"]);
        assert_eq!(c.listen, ListenAddr::Unix("/run/crier/wsserver.sock".into()));
        assert_eq!(
            c.unix_options(),
            UnixOptions { mode: SocketMode(0o666), owner: Some(Owner { uid: None, gid: Some(0) }) }
        );
        assert_eq!(parse(&[]).unix_options().mode, SocketMode(0o660));
    }

    #[test]
    fn passwords_are_masked() {
        let c = parse(&["--redis-url", "redis://:s3cret@127.0.0.1:6379/0"]);
        assert!(!c.describe().contains("s3cret"));
        let c = parse(&["--auth-url", "http://app:cb-pass@auth.local:8080/check?token=cb-token"]);
        c.validate().unwrap();
        let shown = c.describe();
        assert!(!shown.contains("cb-pass") && !shown.contains("cb-token"), "{shown}");
        assert!(shown.contains("http://app:****@auth.local:8080/check?token=****"), "{shown}");
    }
}
