//! A Redis master found through Redis Sentinel. The master is asked of the Sentinels (in turn,
//! starting with the one that answered last) on every connect, and each connection is kept only
//! after `ROLE` says `master`. The command connection is dropped — and the next command
//! re-resolves — when a command fails for connection reasons or with `READONLY`, and whenever a
//! Sentinel announces `+switch-master` for this master; wsserver's pub/sub connection reconnects
//! on the same announcement ([`crate::redis_target::MasterSwitches`]). Nothing is retried here:
//! a command that fails during a failover fails to its caller (503, close 1013).

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use redis::aio::MultiplexedConnection;
use redis::{ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo, RedisError, RedisResult};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::reconnect::Backoff;
use crate::redis_link::RESPONSE_TIMEOUT;
use crate::redis_tls::TlsFiles;

/// A `host:port` of a Sentinel or a cluster node.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    host: String,
    port: u16,
}

impl HostPort {
    /// `host:port`, `[v6]:port`.
    pub(crate) fn parse(text: &str) -> Result<HostPort, String> {
        let bad = || format!("{text:?} is not host:port (e.g. 10.0.0.1:26379)");
        let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
        let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        let port: u16 = port.parse().map_err(|_| bad())?;
        if host.is_empty() || port == 0 || host.contains(['/', ' ', '@']) {
            return Err(bad());
        }
        Ok(HostPort { host: host.to_owned(), port })
    }

    pub fn new(host: &str, port: u16) -> HostPort {
        HostPort { host: host.to_owned(), port }
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// What [`Sentinel`] needs: the Sentinels, the master's name, and how to talk to both.
#[derive(Clone)]
pub struct SentinelSettings {
    pub sentinels: Vec<HostPort>,
    pub master: String,
    pub sentinel_password: Option<String>,
    /// User, password and db of the master (from `--redis-url`).
    pub redis: RedisConnectionInfo,
    /// With TLS (a `rediss://` URL), to the Sentinels and the master alike.
    pub tls: Option<TlsFiles>,
}

impl fmt::Debug for SentinelSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SentinelSettings")
            .field("sentinels", &self.sentinels.iter().map(ToString::to_string).collect::<Vec<_>>())
            .field("master", &self.master)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// The last master a Sentinel announced, and how many announcements changed it.
#[derive(Debug, Default)]
pub(crate) struct Announced {
    count: u64,
    master: Option<String>,
}

/// The command connection to the current master, with what it was resolved under.
struct Current {
    id: u64,
    switch: u64,
    conn: MultiplexedConnection,
}

/// The Sentinel-managed master of one process, shared by its command connections and its
/// pub/sub connection. The `+switch-master` watchers run from first use until it is dropped.
pub struct Sentinel {
    settings: SentinelSettings,
    switches: Arc<watch::Sender<Announced>>,
    current: std::sync::Mutex<Option<Current>>,
    connecting: tokio::sync::Mutex<()>,
    connections: AtomicU64,
    preferred: AtomicUsize,
    watching: OnceLock<()>,
    cancel: CancellationToken,
}

impl fmt::Debug for Sentinel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.settings.fmt(f)
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl Sentinel {
    pub(crate) fn new(settings: SentinelSettings) -> Sentinel {
        Sentinel {
            settings,
            switches: Arc::new(watch::Sender::new(Announced::default())),
            current: std::sync::Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
            connections: AtomicU64::new(0),
            preferred: AtomicUsize::new(0),
            watching: OnceLock::new(),
            cancel: CancellationToken::new(),
        }
    }

    pub fn settings(&self) -> &SentinelSettings {
        &self.settings
    }

    /// Announcements of a new master (each Sentinel announces it; receivers see it once).
    pub(crate) fn switches(&self) -> watch::Receiver<Announced> {
        self.switches.subscribe()
    }

    /// The command connection to the master, connecting (resolve, `ROLE`) when there is none or
    /// a switch was announced since. Returns the connection's id for [`Sentinel::after_command`].
    pub(crate) async fn master_connection(&self) -> RedisResult<(u64, MultiplexedConnection)> {
        self.start_watching();
        let usable = |current: &Option<Current>, switch: u64| match current {
            Some(c) if c.switch == switch => Some((c.id, c.conn.clone())),
            _ => None,
        };
        let switch = self.switches.borrow().count;
        if let Some(found) = usable(&self.current.lock().expect("not poisoned"), switch) {
            return Ok(found);
        }
        let _one_at_a_time = self.connecting.lock().await;
        let switch = self.switches.borrow().count;
        if let Some(found) = usable(&self.current.lock().expect("not poisoned"), switch) {
            return Ok(found);
        }
        let (_, conn) = self.resolve().await?;
        let id = self.connections.fetch_add(1, Ordering::Relaxed) + 1;
        *self.current.lock().expect("not poisoned") = Some(Current { id, switch, conn: conn.clone() });
        Ok((id, conn))
    }

    /// Drops connection `id` after a failure that means it no longer reaches a master.
    pub(crate) fn after_command(&self, id: u64, error: Option<&RedisError>) {
        let Some(e) = error else { return };
        let lost = e.is_io_error()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
            || e.is_timeout()
            || e.code() == Some("READONLY");
        if lost {
            let mut current = self.current.lock().expect("not poisoned");
            if current.as_ref().is_some_and(|c| c.id == id) {
                tracing::warn!("redis master connection lost ({e}); the next command asks the Sentinels again");
                *current = None;
            }
        }
    }

    /// Asks the Sentinels for the master and connects to it, keeping it only if `ROLE` says
    /// master. Returns its client (for a pub/sub connection) and a command connection.
    pub(crate) async fn resolve(&self) -> RedisResult<(redis::Client, MultiplexedConnection)> {
        let sentinels = &self.settings.sentinels;
        let first = self.preferred.load(Ordering::Relaxed);
        let mut problems = Vec::new();
        for i in 0..sentinels.len() {
            let index = (first + i) % sentinels.len();
            let sentinel = &sentinels[index];
            let (host, port) = match self.ask(sentinel).await {
                Ok(Some(addr)) => addr,
                Ok(None) => {
                    problems.push(format!("{sentinel} does not monitor a master named {:?}", self.settings.master));
                    continue;
                }
                Err(e) => {
                    if let Some(problem) = crate::redis_tls::certificate_problem(&e) {
                        return Err(certificate_error(problem));
                    }
                    problems.push(format!("{sentinel}: {e}"));
                    continue;
                }
            };
            let client = self.client(&host, port, self.settings.redis.clone())?;
            match connect_to_master(&client).await {
                Ok(conn) => {
                    self.preferred.store(index, Ordering::Relaxed);
                    return Ok((client, conn));
                }
                Err(e) => {
                    if let Some(problem) = crate::redis_tls::certificate_problem(&e) {
                        return Err(certificate_error(problem));
                    }
                    problems.push(format!("{sentinel} names {host}:{port}: {e}"));
                }
            }
        }
        Err(std::io::Error::other(format!(
            "no master {:?} reachable through the Sentinels: {}",
            self.settings.master,
            problems.join("; ")
        ))
        .into())
    }

    /// `SENTINEL GET-MASTER-ADDR-BY-NAME`: the master's host and port, `None` when unknown.
    async fn ask(&self, sentinel: &HostPort) -> RedisResult<Option<(String, u16)>> {
        let client = self.sentinel_client(sentinel)?;
        let query = async {
            let mut conn =
                client.get_multiplexed_async_connection_with_config(&crate::redis_link::async_config()).await?;
            redis::cmd("SENTINEL")
                .arg("GET-MASTER-ADDR-BY-NAME")
                .arg(&self.settings.master)
                .query_async::<Option<(String, u16)>>(&mut conn)
                .await
        };
        tokio::time::timeout(RESPONSE_TIMEOUT * 2, query)
            .await
            .unwrap_or_else(|_| Err(std::io::Error::from(std::io::ErrorKind::TimedOut).into()))
    }

    fn sentinel_client(&self, sentinel: &HostPort) -> RedisResult<redis::Client> {
        let mut redis = RedisConnectionInfo::default();
        if let Some(password) = &self.settings.sentinel_password {
            redis = redis.set_password(password);
        }
        self.client(&sentinel.host, sentinel.port, redis)
    }

    fn client(&self, host: &str, port: u16, redis: RedisConnectionInfo) -> RedisResult<redis::Client> {
        let addr = match self.settings.tls {
            Some(_) => ConnectionAddr::TcpTls { host: host.to_owned(), port, insecure: false, tls_params: None },
            None => ConnectionAddr::Tcp(host.to_owned(), port),
        };
        let info = addr
            .into_connection_info()?
            .set_redis_settings(redis)
            .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true));
        crate::redis_link::client_for(info, self.settings.tls.as_ref())
    }

    /// Spawns one `+switch-master` watcher per Sentinel, once (needs the tokio runtime).
    fn start_watching(&self) {
        self.watching.get_or_init(|| {
            for sentinel in &self.settings.sentinels {
                match self.sentinel_client(sentinel) {
                    Ok(client) => {
                        tokio::spawn(watch_switches(
                            sentinel.clone(),
                            client,
                            self.settings.master.clone(),
                            self.switches.clone(),
                            self.cancel.clone(),
                        ));
                    }
                    Err(e) => tracing::warn!(%sentinel, "cannot watch this Sentinel: {e}"),
                }
            }
        });
    }
}

fn certificate_error(problem: String) -> RedisError {
    std::io::Error::new(std::io::ErrorKind::InvalidData, problem).into()
}

/// Connects and checks `ROLE`: anything but a master is refused.
async fn connect_to_master(client: &redis::Client) -> RedisResult<MultiplexedConnection> {
    let attempt = async {
        let mut conn = client.get_multiplexed_async_connection_with_config(&crate::redis_link::async_config()).await?;
        match redis::cmd("ROLE").query_async::<redis::Role>(&mut conn).await? {
            redis::Role::Primary { .. } => Ok(conn),
            _ => Err(std::io::Error::other("ROLE says it is not a master (a failover is under way?)").into()),
        }
    };
    tokio::time::timeout(RESPONSE_TIMEOUT * 2, attempt)
        .await
        .unwrap_or_else(|_| Err(std::io::Error::from(std::io::ErrorKind::TimedOut).into()))
}

/// Follows one Sentinel's `+switch-master` announcements for `master`, reconnecting with
/// [`Backoff`], until `cancel`.
async fn watch_switches(
    sentinel: HostPort,
    client: redis::Client,
    master: String,
    switches: Arc<watch::Sender<Announced>>,
    cancel: CancellationToken,
) {
    use futures_core::Stream;
    let mut backoff = Backoff::new();
    loop {
        let subscribe = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe("+switch-master").await?;
            RedisResult::Ok(pubsub)
        };
        let subscribed = tokio::select! {
            r = tokio::time::timeout(RESPONSE_TIMEOUT * 2, subscribe) => r,
            () = cancel.cancelled() => return,
        };
        match subscribed {
            Ok(Ok(pubsub)) => {
                backoff.reset();
                let mut messages = pubsub.into_on_message();
                loop {
                    let next = std::future::poll_fn(|cx| std::pin::Pin::new(&mut messages).poll_next(cx));
                    let message = tokio::select! {
                        m = next => m,
                        () = cancel.cancelled() => return,
                    };
                    let Some(message) = message else { break };
                    // "<master name> <old ip> <old port> <new ip> <new port>"
                    let text = String::from_utf8_lossy(message.get_payload_bytes()).into_owned();
                    let fields: Vec<&str> = text.split(' ').collect();
                    if let [name, _, _, ip, port] = fields[..] {
                        if name == master {
                            let new = format!("{ip}:{port}");
                            switches.send_if_modified(|last| {
                                if last.master.as_deref() == Some(new.as_str()) {
                                    return false;
                                }
                                tracing::warn!(%sentinel, "Sentinel announced a new master: {}", crate::Escaped(&new));
                                last.master = Some(new.clone());
                                last.count += 1;
                                true
                            });
                        }
                    }
                }
                tracing::debug!(%sentinel, "Sentinel announcement connection closed");
            }
            Ok(Err(e)) if backoff.attempt() == 0 => tracing::warn!(%sentinel, "cannot watch Sentinel: {e}"),
            _ => {}
        }
        tokio::select! {
            () = tokio::time::sleep(backoff.next_delay()) => {}
            () = cancel.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinel_addresses_parse_or_say_why_not() {
        assert_eq!(HostPort::parse("10.0.0.1:26379").unwrap().to_string(), "10.0.0.1:26379");
        assert_eq!(HostPort::parse("[::1]:26379").unwrap().to_string(), "[::1]:26379");
        assert_eq!(HostPort::parse("s.local:1").unwrap(), HostPort { host: "s.local".into(), port: 1 });
        for bad in ["10.0.0.1", "h:0", ":26379", "h:port", "h:70000"] {
            let err = HostPort::parse(bad).unwrap_err();
            assert!(err.contains("host:port"), "{bad}: {err}");
        }
    }
}
