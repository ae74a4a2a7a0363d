//! The Redis settings both binaries take (`--redis-*`, `CRIER_REDIS_*`): where Redis is (one
//! server, the master a set of Sentinels names, or a Redis Cluster's seed nodes), TLS files,
//! passwords. [`RedisArgs::target`]
//! turns them into a [`RedisTarget`], the only thing the binaries connect through.

use std::path::PathBuf;

use crate::redis_cluster::ClusterSettings;
use crate::redis_sentinel::{HostPort, SentinelSettings};
use crate::redis_target::RedisTarget;
use crate::redis_tls::{TlsFiles, TlsFilesError};

/// Where Redis is and how to reach it. Flattened into both binaries' configurations.
#[derive(Debug, Clone, clap::Args)]
pub struct RedisArgs {
    /// Redis: redis://[[user]:password@]host:port[/db], rediss:// for TLS, or
    /// unix:///path/redis.sock. With --redis-sentinels, its host and port are not used: the
    /// Sentinels name the master, and the scheme (rediss:// for TLS), user, password and db
    /// apply to it.
    #[arg(long = "redis-url", env = "CRIER_REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub url: String,

    /// PEM file with the CA certificate(s) that signed the Redis server's certificate, for
    /// rediss:// (unset: the system's trust store). The server's certificate must name the
    /// host of the URL (or, with Sentinels, the address they announce).
    #[arg(long = "redis-ca", env = "CRIER_REDIS_CA")]
    pub ca: Option<PathBuf>,

    /// PEM file with the client certificate (chain) presented to a Redis that requires one
    /// (tls-auth-clients); needs --redis-client-key.
    #[arg(long = "redis-client-cert", env = "CRIER_REDIS_CLIENT_CERT")]
    pub client_cert: Option<PathBuf>,

    /// PEM file with the private key of --redis-client-cert. Keep it readable by the service
    /// user only.
    #[arg(long = "redis-client-key", env = "CRIER_REDIS_CLIENT_KEY")]
    pub client_key: Option<PathBuf>,

    /// Redis Sentinel addresses, comma-separated host:port (e.g.
    /// 10.0.0.1:26379,10.0.0.2:26379,10.0.0.3:26379). When set, Crier asks them for the master
    /// named by --redis-master, checks its ROLE after every connect, and follows failovers.
    #[arg(long = "redis-sentinels", env = "CRIER_REDIS_SENTINELS", value_delimiter = ',')]
    pub sentinels: Vec<String>,

    /// The master name the Sentinels monitor (`sentinel monitor <name> …`); required with
    /// --redis-sentinels.
    #[arg(long = "redis-master", env = "CRIER_REDIS_MASTER")]
    pub master: Option<String>,

    /// Password of the Sentinels themselves (their requirepass), when they have one; the
    /// master's password is the one in --redis-url.
    #[arg(long = "redis-sentinel-password", env = "CRIER_REDIS_SENTINEL_PASSWORD")]
    pub sentinel_password: Option<String>,

    /// Redis Cluster seed nodes, comma-separated host:port (e.g.
    /// 10.0.0.1:6379,10.0.0.2:6379,10.0.0.3:6379); any reachable node finds the others. When
    /// set, publishes use SPUBLISH and wsserver subscribes with SSUBSCRIBE on the shard owning
    /// each channel (Redis 7.0 or later). The scheme (rediss:// for TLS), user and password of
    /// --redis-url apply to every node; its host, port and db are not used. Not with
    /// --redis-sentinels.
    #[arg(long = "redis-cluster-nodes", env = "CRIER_REDIS_CLUSTER_NODES", value_delimiter = ',')]
    pub cluster_nodes: Vec<String>,
}

/// What is wrong with the Redis settings, and which flag says it.
#[derive(Debug, thiserror::Error)]
#[error("--{flag}: {problem}")]
pub struct RedisConfigError {
    pub flag: &'static str,
    pub problem: String,
}

fn invalid(flag: &'static str, problem: impl Into<String>) -> RedisConfigError {
    RedisConfigError { flag, problem: problem.into() }
}

impl From<TlsFilesError> for RedisConfigError {
    fn from(e: TlsFilesError) -> Self {
        RedisConfigError { flag: e.flag, problem: e.problem_with_path() }
    }
}

const URL_EXAMPLES: &str =
    "examples: redis://127.0.0.1:6379/0, rediss://redis.example:6380, unix:///run/redis/redis.sock";

impl RedisArgs {
    /// Checks the settings and reads the TLS files (they must exist and parse as PEM); connects
    /// to nothing.
    pub fn target(&self) -> Result<RedisTarget, RedisConfigError> {
        let info = crate::redis_link::connection_info(&self.url)
            .map_err(|e| invalid("redis-url", format!("{e} ({URL_EXAMPLES})")))?;
        let tls = matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. });
        if self.client_cert.is_some() != self.client_key.is_some() {
            return Err(invalid("redis-client-cert", "--redis-client-cert and --redis-client-key go together"));
        }
        if !tls && (self.ca.is_some() || self.client_cert.is_some()) {
            return Err(invalid("redis-url", "--redis-ca and --redis-client-cert need a rediss:// URL"));
        }
        let files = if tls {
            Some(TlsFiles::load(self.ca.as_deref(), self.client_cert.as_deref().zip(self.client_key.as_deref()))?)
        } else {
            None
        };
        let sentinels: Vec<&str> = self.sentinels.iter().map(|s| s.trim()).filter(|s| !s.is_empty()).collect();
        let cluster: Vec<&str> = self.cluster_nodes.iter().map(|s| s.trim()).filter(|s| !s.is_empty()).collect();
        if !cluster.is_empty() {
            if !sentinels.is_empty() || self.master.is_some() {
                return Err(invalid(
                    "redis-cluster-nodes",
                    "a Redis Cluster has no Sentinels: use --redis-cluster-nodes or --redis-sentinels, not both",
                ));
            }
            if matches!(info.addr(), redis::ConnectionAddr::Unix(_)) {
                return Err(invalid(
                    "redis-url",
                    "with --redis-cluster-nodes, use redis:// or rediss:// (not unix://)",
                ));
            }
            if info.redis_settings().db() != 0 {
                return Err(invalid("redis-url", "a Redis Cluster has only db 0; drop the /db from the URL"));
            }
            let seeds = cluster
                .into_iter()
                .map(HostPort::parse)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| invalid("redis-cluster-nodes", e))?;
            let settings = ClusterSettings { seeds, redis: info.redis_settings().clone(), tls: files };
            return RedisTarget::cluster_of(settings).map_err(|e| invalid("redis-cluster-nodes", e.to_string()));
        }
        if sentinels.is_empty() {
            if self.master.is_some() || self.sentinel_password.is_some() {
                return Err(invalid(
                    "redis-sentinels",
                    "--redis-master and --redis-sentinel-password need --redis-sentinels",
                ));
            }
            let client =
                crate::redis_link::client_for(info, files.as_ref()).map_err(|e| invalid("redis-url", e.to_string()))?;
            return Ok(RedisTarget::single(client));
        }
        let master = self.master.as_deref().map(str::trim).filter(|m| !m.is_empty());
        let master = master.ok_or_else(|| {
            invalid("redis-master", "required with --redis-sentinels (the name in `sentinel monitor <name> …`)")
        })?;
        if matches!(info.addr(), redis::ConnectionAddr::Unix(_)) {
            return Err(invalid("redis-url", "with --redis-sentinels, use redis:// or rediss:// (not unix://)"));
        }
        let sentinels = sentinels
            .into_iter()
            .map(HostPort::parse)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid("redis-sentinels", e))?;
        Ok(RedisTarget::sentinel(SentinelSettings {
            sentinels,
            master: master.to_owned(),
            sentinel_password: self.sentinel_password.clone().filter(|p| !p.is_empty()),
            redis: info.redis_settings().clone(),
            tls: files,
        }))
    }

    /// A copy safe to print: passwords masked.
    pub fn masked(&self) -> RedisArgs {
        RedisArgs {
            url: crate::redact::mask_url(&self.url),
            sentinel_password: self.sentinel_password.as_ref().map(|_| "****".to_owned()),
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        redis: RedisArgs,
    }

    fn args(list: &[&str]) -> RedisArgs {
        Cli::try_parse_from(std::iter::once("test").chain(list.iter().copied())).unwrap().redis
    }

    fn error(list: &[&str]) -> String {
        args(list).target().expect_err("refused").to_string()
    }

    #[test]
    fn the_default_and_plain_urls_are_single_servers() {
        assert!(matches!(args(&[]).target().unwrap(), RedisTarget::Single(_)));
        assert!(matches!(args(&["--redis-url", "unix:///run/redis.sock"]).target().unwrap(), RedisTarget::Single(_)));
        assert!(matches!(args(&["--redis-url", "rediss://localhost:6380"]).target().unwrap(), RedisTarget::Single(_)));
    }

    #[test]
    fn bad_combinations_name_the_flag() {
        assert!(error(&["--redis-url", "http://x"]).starts_with("--redis-url"));
        assert!(error(&["--redis-ca", "/etc/hostname"]).contains("rediss://"));
        let half = error(&["--redis-url", "rediss://h:1", "--redis-client-cert", "/etc/hostname"]);
        assert!(half.contains("--redis-client-key"), "{half}");
        let missing = error(&["--redis-url", "rediss://h:1", "--redis-ca", "/nonexistent/ca.pem"]);
        assert!(missing.contains("--redis-ca") && missing.contains("/nonexistent/ca.pem"), "{missing}");
        assert!(error(&["--redis-master", "m"]).starts_with("--redis-sentinels"));
        assert!(error(&["--redis-sentinels", "127.0.0.1:26379"]).starts_with("--redis-master"));
        let port = error(&["--redis-sentinels", "127.0.0.1", "--redis-master", "m"]);
        assert!(port.starts_with("--redis-sentinels") && port.contains("host:port"), "{port}");
    }

    #[test]
    fn sentinel_settings_take_the_masters_password_and_db_from_the_url() {
        let target = args(&[
            "--redis-url",
            "redis://:masterpw@ignored:1/3",
            "--redis-sentinels",
            "127.0.0.1:26379, [::1]:26380,sentinel.local:26381",
            "--redis-master",
            "mymaster",
            "--redis-sentinel-password",
            "sentinelpw",
        ])
        .target()
        .unwrap();
        let RedisTarget::Sentinel(sentinel) = target else { panic!("not a Sentinel target") };
        let settings = sentinel.settings();
        assert_eq!(settings.sentinels.len(), 3);
        assert_eq!(settings.sentinels[1].to_string(), "[::1]:26380");
        assert_eq!(settings.master, "mymaster");
        assert_eq!(settings.redis.password(), Some("masterpw"));
        assert_eq!(settings.redis.db(), 3);
        assert_eq!(settings.sentinel_password.as_deref(), Some("sentinelpw"));
    }

    #[test]
    fn cluster_nodes_are_a_third_topology_and_exclude_sentinels() {
        let target =
            args(&["--redis-url", "redis://:pw@ignored:1", "--redis-cluster-nodes", "127.0.0.1:7000, 127.0.0.1:7001"])
                .target()
                .unwrap();
        let RedisTarget::Cluster(cluster) = &target else { panic!("not a cluster target") };
        assert_eq!(cluster.settings().seeds.len(), 2);
        assert_eq!(cluster.settings().redis.password(), Some("pw"));
        assert_eq!(target.publish_command().as_str(), "SPUBLISH");
        let both = error(&["--redis-cluster-nodes", "h:1", "--redis-sentinels", "s:2", "--redis-master", "m"]);
        assert!(both.starts_with("--redis-cluster-nodes") && both.contains("not both"), "{both}");
        let db = error(&["--redis-url", "redis://h:1/2", "--redis-cluster-nodes", "h:1"]);
        assert!(db.contains("db 0"), "{db}");
        let port = error(&["--redis-cluster-nodes", "h"]);
        assert!(port.starts_with("--redis-cluster-nodes") && port.contains("host:port"), "{port}");
        assert_eq!(args(&[]).target().unwrap().publish_command().as_str(), "PUBLISH");
    }

    #[test]
    fn masked_hides_both_passwords() {
        let shown = format!(
            "{:?}",
            args(&["--redis-url", "redis://:urlsecret@h:1", "--redis-sentinel-password", "sentsecret"]).masked()
        );
        assert!(!shown.contains("urlsecret") && !shown.contains("sentsecret"), "{shown}");
    }
}
