//! webserver's settings: every one a command-line flag and a `CRIER_*` environment variable,
//! with a documented default and limit; plus the `users` subcommand.

use std::net::SocketAddr;
use std::time::Duration;

use protocol::KeyPrefix;
use service::listen::{ListenAddr, Owner, SocketMode, UnixOptions};
use service::{parse_duration, LogFormat};

/// Crier's web server: pages, login and sessions, and the publish API.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "webserver", version, about, long_about = None)]
pub struct Config {
    /// Where to listen: host:port, or unix:/path for a unix socket (nginx on the same host). A
    /// socket systemd passes (FileDescriptorName=listen) replaces it.
    #[arg(long, env = "CRIER_WEB_LISTEN", default_value = "127.0.0.1:8000")]
    pub listen: ListenAddr,

    /// Permission bits of the unix socket --listen creates (octal; connecting needs write).
    #[arg(long, env = "CRIER_WEB_LISTEN_MODE", default_value = "0660")]
    pub listen_mode: SocketMode,

    /// Owner of the unix socket --listen creates: USER, USER:GROUP or :GROUP (like :www-data,
    /// so nginx may connect). Unset: this process's user and group.
    #[arg(long, env = "CRIER_WEB_LISTEN_OWNER")]
    pub listen_owner: Option<Owner>,

    /// Admin address serving /metrics, /healthz and /readyz (empty: no admin listener).
    #[arg(long, env = "CRIER_WEB_ADMIN_LISTEN", default_value = "127.0.0.1:9190")]
    pub admin_listen: String,

    /// Redis: URL, TLS files, Sentinels (service::redis_config).
    #[command(flatten)]
    pub redis: service::redis_config::RedisArgs,

    /// ws4redis key prefix (WS4REDIS_PREFIX); empty means none. Must match wsserver's.
    #[arg(long, env = "CRIER_PREFIX", default_value = "")]
    pub prefix: String,

    /// Bearer token of POST /api/publish (at least 16 characters). Unset: the API answers 503.
    #[arg(long, env = "CRIER_PUBLISH_TOKEN", hide_env_values = true)]
    pub publish_token: Option<String>,

    #[command(flatten)]
    pub history: service::history_args::HistoryArgs,

    /// Largest request body accepted, in bytes (413 beyond). 1 KiB to 16 MiB.
    #[arg(long, env = "CRIER_MAX_BODY", default_value_t = 65_536)]
    pub max_body: usize,

    /// Seconds a published message is kept as its channel's last message when the request
    /// gives no expire (ws4redis' WS4REDIS_EXPIRE). 0: publish only. At most 30 days.
    #[arg(long, env = "CRIER_EXPIRE", default_value_t = 3600)]
    pub expire: u64,

    /// Lifetime of a login session (1m to 90 days).
    #[arg(long, env = "CRIER_SESSION_TTL", default_value = "14d", value_parser = parse_ttl)]
    pub session_ttl: Duration,

    /// Websocket URL prefix the pages connect to: ws:// or wss://, ending in `/`, like
    /// wss://example.com/ws/. Empty: derived from the request's Host and X-Forwarded-Proto, plus /ws/.
    #[arg(long, env = "CRIER_WEBSOCKET_URL", default_value = "")]
    pub websocket_url: String,

    /// Proxies (comma-separated IPs) whose X-Forwarded-Proto (and other forwarded headers) are
    /// believed, e.g. to mark cookies Secure behind TLS; other peers' forwarded headers are
    /// ignored. nginx on the same host is 127.0.0.1; a peer on a unix socket (--listen unix:…) is
    /// always trusted.
    #[arg(long, env = "CRIER_TRUSTED_PROXIES", value_delimiter = ',', default_value = service::proxy::DEFAULT_TRUSTED_PROXIES)]
    pub trusted_proxies: Vec<std::net::IpAddr>,

    /// Heartbeat string the pages' JS client sends and expects (must match wsserver's).
    #[arg(long, env = "CRIER_HEARTBEAT", allow_hyphen_values = true)]
    pub heartbeat: Option<String>,

    /// How long a game is kept after its last move (1m to 7 days).
    #[arg(long, env = "CRIER_GAME_TTL", default_value = "1h", value_parser = parse_ttl)]
    pub game_ttl: Duration,

    /// How long a game invitation waits for an answer (10s to 1h).
    #[arg(long, env = "CRIER_INVITATION_TTL", default_value = "5m", value_parser = parse_duration)]
    pub invitation_ttl: Duration,

    /// Threads serving requests. 1 (the default): one thread, the cheapest per request (no
    /// hand-offs between threads; one serves tens of thousands of publishes per second); 0: one
    /// per CPU; at most 256. Password checks run on a separate blocking pool either way.
    #[arg(long, env = "CRIER_WEB_THREADS", default_value_t = 1)]
    pub threads: usize,

    /// How long shutdown waits for requests in flight (at most 10m).
    #[arg(long, env = "CRIER_DRAIN_DEADLINE", default_value = "10s", value_parser = parse_duration)]
    pub drain_deadline: Duration,

    /// Log format.
    #[arg(long, env = "CRIER_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Validate the configuration, print it (secrets masked), and exit (0 when valid).
    #[arg(long)]
    pub check: bool,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Manage accounts in Redis.
    #[command(subcommand)]
    Users(UsersCommand),
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum UsersCommand {
    /// Add an account; the password is read from standard input (prompted on a terminal).
    Add {
        name: String,
        /// A group the user belongs to (repeatable).
        #[arg(long = "group")]
        groups: Vec<String>,
    },
    /// Change an account's password (read from standard input) and, with --group, its groups.
    Passwd {
        name: String,
        #[arg(long = "group")]
        groups: Vec<String>,
    },
    /// Delete an account and end its sessions.
    Del { name: String },
    /// List accounts and their groups.
    List,
}

fn parse_ttl(text: &str) -> Result<Duration, String> {
    match text.trim().strip_suffix('d') {
        Some(days) => days
            .parse::<u64>()
            .map(|d| Duration::from_secs(d * 86_400))
            .map_err(|_| format!("{text:?} is not a number of days")),
        None => parse_duration(text),
    }
}

#[derive(Debug, thiserror::Error)]
#[error("--{flag}: {problem}")]
pub struct ConfigError {
    pub flag: &'static str,
    pub problem: String,
}

fn invalid(flag: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError { flag, problem: problem.into() }
}

impl Config {
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.redis.target().map_err(|e| invalid(e.flag, e.problem))?;
        if !self.admin_listen.is_empty() {
            self.admin_listen
                .parse::<SocketAddr>()
                .map_err(|e| invalid("admin-listen", format!("{e} (like 127.0.0.1:9190, or empty for none)")))?;
        }
        KeyPrefix::new(&self.prefix).map_err(|e| invalid("prefix", e.to_string()))?;
        self.history.settings().map_err(|e| invalid("history", e.to_string()))?;
        if let Some(token) = &self.publish_token {
            if token.len() < 16 {
                return Err(invalid("publish-token", "must be at least 16 characters"));
            }
            if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(invalid("publish-token", "must not contain spaces or control characters"));
            }
        }
        if !(1024..=16 << 20).contains(&self.max_body) {
            return Err(invalid("max-body", "must be between 1024 and 16777216 bytes"));
        }
        if self.expire > protocol::PublishRequest::MAX_EXPIRE {
            return Err(invalid("expire", "at most 2592000 seconds (30 days)"));
        }
        if self.session_ttl < Duration::from_secs(60) || self.session_ttl > Duration::from_secs(90 * 86_400) {
            return Err(invalid("session-ttl", "must be between 1m and 90d"));
        }
        let ws = &self.websocket_url;
        if !ws.is_empty() && !((ws.starts_with("ws://") || ws.starts_with("wss://")) && ws.ends_with('/')) {
            return Err(invalid("websocket-url", "must look like wss://example.com/ws/ (or be empty)"));
        }
        if self.game_ttl < Duration::from_secs(60) || self.game_ttl > Duration::from_secs(7 * 86_400) {
            return Err(invalid("game-ttl", "must be between 1m and 7d"));
        }
        if self.invitation_ttl < Duration::from_secs(10) || self.invitation_ttl > Duration::from_secs(3600) {
            return Err(invalid("invitation-ttl", "must be between 10s and 1h"));
        }
        if self.drain_deadline > Duration::from_secs(600) {
            return Err(invalid("drain-deadline", "must be at most 10m"));
        }
        if self.threads > service::runtime::MAX_THREADS {
            return Err(invalid("threads", format!("must be between 0 and {}", service::runtime::MAX_THREADS)));
        }
        Ok(())
    }

    /// Mode and owner of the unix socket `--listen` creates.
    pub fn unix_options(&self) -> UnixOptions {
        UnixOptions { mode: self.listen_mode, owner: self.listen_owner }
    }

    /// The admin listener's address, `None` when off (validated).
    pub fn admin_addr(&self) -> Option<ListenAddr> {
        (!self.admin_listen.is_empty()).then(|| ListenAddr::Tcp(self.admin_listen.parse().expect("validated")))
    }

    pub fn key_prefix(&self) -> KeyPrefix {
        KeyPrefix::new(&self.prefix).expect("validated")
    }

    /// The effective configuration for `--check`, secrets masked.
    pub fn describe(&self) -> String {
        let mut shown = self.clone();
        shown.publish_token = shown.publish_token.map(|_| "****".to_owned());
        shown.redis = self.redis.masked();
        format!("{shown:#?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> Config {
        Config::parse_from(std::iter::once("webserver").chain(args.iter().copied()))
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
    fn validates_and_masks() {
        parse(&[]).validate().unwrap();
        assert!(parse(&["--publish-token", "short"]).validate().is_err());
        let c = parse(&["--publish-token", "0123456789abcdefXYZ", "--redis-url", "redis://:pw12345@h:1"]);
        c.validate().unwrap();
        let shown = c.describe();
        assert!(!shown.contains("0123456789abcdefXYZ") && !shown.contains("pw12345"), "{shown}");
        assert_eq!(parse(&["--session-ttl", "2d"]).session_ttl, Duration::from_secs(172_800));
        assert_eq!(parse(&[]).threads, 1);
        parse(&["--threads", "0"]).validate().unwrap();
        let err = parse(&["--threads", "257"]).validate().unwrap_err();
        assert_eq!(err.to_string(), "--threads: must be between 0 and 256");
        let unix = parse(&["--listen", "unix:/run/crier/webserver.sock", "--listen-mode", "0600"]);
        assert_eq!(unix.listen, ListenAddr::Unix("/run/crier/webserver.sock".into()));
        assert_eq!(unix.unix_options(), UnixOptions { mode: SocketMode(0o600), owner: None });
        assert_eq!(parse(&["--admin-listen", ""]).admin_addr(), None);
    }
}
