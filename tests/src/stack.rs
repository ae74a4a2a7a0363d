//! The whole stack for one test: Redis, wsserver and webserver in-process, nginx in front. Each
//! server listens on a unix socket (nginx's upstream, as deployed on one host) and on an
//! ephemeral TCP port (for tests that bypass nginx); [`StackOptions::nginx_over_tcp`] points
//! nginx at the TCP ports instead.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use protocol::{Facility, KeyPrefix};
use service::listen::{ListenAddr, Listener};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::http::{self, HttpResponse};
use crate::nginx::Nginx;
use crate::redis_server::{Redis, RedisOptions};
use crate::tempdir::TempDir;
use crate::wait::try_wait_until;
use crate::ws::WsClient;

const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Upstream nginx uses for webserver when the stack runs without one (nothing listens there).
const NO_WEBSERVER: &str = "127.0.0.1:9";

/// What to start and how.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// ws4redis key prefix for both servers ("" for none).
    pub prefix: String,
    /// Extra wsserver flags, e.g. `["--heartbeat", "--heartbeat--"]`.
    pub ws_args: Vec<String>,
    /// Extra webserver flags.
    pub web_args: Vec<String>,
    /// Start webserver (default true).
    pub webserver: bool,
    /// Start nginx in front (default true).
    pub nginx: bool,
    pub publish_token: String,
    /// webserver's --max-body.
    pub max_body: usize,
    /// Both servers reach Redis over TLS (`rediss://`, a test CA, a client certificate).
    pub redis_tls: bool,
    /// Both servers' Redis flags instead of the stack's own Redis (e.g. Sentinels); the stack's
    /// Redis still runs, for the harness.
    pub redis_flags: Option<Vec<String>>,
    /// nginx reaches the servers over TCP instead of their unix sockets.
    pub nginx_over_tcp: bool,
}

impl Default for StackOptions {
    fn default() -> Self {
        StackOptions {
            prefix: String::new(),
            ws_args: Vec::new(),
            web_args: Vec::new(),
            webserver: true,
            nginx: true,
            publish_token: "test-publish-token-0123456789".into(),
            max_body: 1024,
            redis_tls: false,
            redis_flags: None,
            nginx_over_tcp: false,
        }
    }
}

impl StackOptions {
    pub fn prefix(mut self, prefix: &str) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Adds wsserver flags.
    pub fn ws_args(mut self, args: &[&str]) -> Self {
        self.ws_args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// Adds webserver flags.
    pub fn web_args(mut self, args: &[&str]) -> Self {
        self.web_args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    pub fn without_webserver(mut self) -> Self {
        self.webserver = false;
        self
    }

    pub fn without_nginx(mut self) -> Self {
        self.nginx = false;
        self
    }

    pub fn max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// Both servers talk to Redis over TLS.
    pub fn redis_tls(mut self) -> Self {
        self.redis_tls = true;
        self
    }

    /// Both servers get these Redis flags (`--redis-url`, `--redis-sentinels`, …).
    pub fn redis_flags(mut self, flags: Vec<String>) -> Self {
        self.redis_flags = Some(flags);
        self
    }

    /// The Redis flags of both servers for `redis`.
    fn redis_flags_for(&self, redis: &Redis) -> Vec<String> {
        match &self.redis_flags {
            Some(flags) => flags.clone(),
            None => {
                let mut flags = vec!["--redis-url".to_owned(), redis.server_url()];
                flags.extend(redis.server_args());
                flags
            }
        }
    }

    /// nginx's upstreams are the servers' TCP ports (wsserver on another host) rather than
    /// their unix sockets.
    pub fn nginx_over_tcp(mut self) -> Self {
        self.nginx_over_tcp = true;
        self
    }
}

/// A server running on the test's runtime; `stop` resolves its shutdown future.
struct Server {
    name: &'static str,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), String>>>,
}

impl Server {
    fn spawn<F, E>(name: &'static str, run: impl FnOnce(Box<dyn Future<Output = ()> + Send + Unpin>) -> F) -> Server
    where
        F: Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Display,
    {
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = Box::new(Box::pin(async move {
            let _ = stopped.await;
        }));
        let fut = run(shutdown);
        let task = tokio::spawn(async move { fut.await.map_err(|e| e.to_string()) });
        Server { name, stop: Some(stop), task: Some(task) }
    }

    fn is_finished(&self) -> bool {
        self.task.as_ref().is_some_and(JoinHandle::is_finished)
    }

    /// Waits until `ready` answers true; panics with what `run` returned when the server
    /// exits first, or after `timeout`.
    async fn wait_ready(&mut self, timeout: Duration, what: &str, url: &str) {
        let ready = try_wait_until(timeout, || async {
            self.is_finished() || http::try_get(url).await.is_ok_and(|r| r.status == 200)
        })
        .await;
        if self.is_finished() {
            let result = self.task.take().expect("task").await;
            panic!("{} exited during startup: {result:?}", self.name);
        }
        assert!(ready, "{what} did not answer 200 within {timeout:?}");
    }

    /// Triggers shutdown and waits for `run` to return, up to `timeout`.
    async fn shutdown(&mut self, timeout: Duration) -> Result<(), String> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let Some(task) = self.task.take() else {
            return Err(format!("{} was already shut down", self.name));
        };
        match tokio::time::timeout(timeout, task).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(format!("{} panicked: {join}", self.name)),
            Err(_) => Err(format!("{} did not return within {timeout:?} of shutdown", self.name)),
        }
    }
}

/// Redis, wsserver, webserver and nginx for one test. Dropping it stops nginx and Redis; the
/// servers stop with the test's runtime.
pub struct Stack {
    // Field order is drop order: nginx before redis.
    nginx: Option<Nginx>,
    ws: Server,
    web: Option<Server>,
    pub redis: Redis,
    // After the servers: their socket files are gone before the directory is removed.
    sockets: TempDir,
    ws_addr: SocketAddr,
    admin_addr: SocketAddr,
    web_addr: Option<SocketAddr>,
    token: String,
    prefix: KeyPrefix,
    options: StackOptions,
}

impl Stack {
    /// Everything with default options.
    pub async fn start_default() -> Stack {
        Stack::start(StackOptions::default()).await
    }

    pub async fn start(options: StackOptions) -> Stack {
        crate::init_tracing();
        let redis = Redis::start_with(RedisOptions { tls: options.redis_tls, ..RedisOptions::default() }).await;
        let prefix = KeyPrefix::new(&options.prefix).expect("valid prefix");
        let sockets = TempDir::new("sock").expect("create a directory for the unix sockets");

        let (ws, ws_addr, admin_addr) =
            start_wsserver(&options.redis_flags_for(&redis), &options, sockets.path()).await;

        let (web, web_addr) = if options.webserver {
            let (web, addr) = start_webserver(&options.redis_flags_for(&redis), &options, sockets.path()).await;
            (Some(web), Some(addr))
        } else {
            (None, None)
        };

        let nginx = if options.nginx {
            let (web_upstream, ws_upstream) = if options.nginx_over_tcp {
                (web_addr.map_or_else(|| NO_WEBSERVER.to_owned(), |a| a.to_string()), ws_addr.to_string())
            } else {
                let web = web_addr.map_or_else(|| NO_WEBSERVER.to_owned(), |_| web_socket(sockets.path()).to_string());
                (web, ws_socket(sockets.path()).to_string())
            };
            Some(Nginx::start(&web_upstream, &ws_upstream).await)
        } else {
            None
        };

        let stack = Stack {
            nginx,
            ws,
            web,
            redis,
            sockets,
            ws_addr,
            admin_addr,
            web_addr,
            token: options.publish_token.clone(),
            prefix,
            options,
        };
        if stack.web.is_some() && stack.nginx.is_some() {
            let url = stack.front_url("/healthz");
            let through =
                try_wait_until(READY_TIMEOUT, || async { http::try_get(&url).await.is_ok_and(|r| r.status == 200) })
                    .await;
            assert!(
                through,
                "GET /healthz through nginx never answered 200; nginx log:\n{}",
                stack.nginx().error_log()
            );
        }
        stack
    }

    pub fn options(&self) -> &StackOptions {
        &self.options
    }

    pub fn nginx(&self) -> &Nginx {
        self.nginx.as_ref().expect("this stack runs without nginx")
    }

    /// `http://<nginx><path>`.
    pub fn front_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.nginx().addr())
    }

    /// `ws://<nginx><path_and_query>`, e.g. `ws_url("/ws/chat?subscribe-broadcast")`.
    pub fn ws_url(&self, path_and_query: &str) -> String {
        format!("ws://{}{path_and_query}", self.nginx().addr())
    }

    /// `ws://<wsserver><path_and_query>`, bypassing nginx.
    pub fn direct_ws_url(&self, path_and_query: &str) -> String {
        format!("ws://{}{path_and_query}", self.ws_addr)
    }

    /// `http://<wsserver admin><path>`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin_addr)
    }

    /// `http://<webserver><path>`, bypassing nginx.
    pub fn web_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.web_addr.expect("this stack runs without webserver"))
    }

    pub fn ws_addr(&self) -> SocketAddr {
        self.ws_addr
    }

    /// wsserver's unix socket (`unix:/…/wsserver.sock`), nginx's upstream unless
    /// [`StackOptions::nginx_over_tcp`].
    pub fn ws_socket(&self) -> ListenAddr {
        ws_socket(self.sockets.path())
    }

    /// webserver's unix socket (`unix:/…/webserver.sock`).
    pub fn web_socket(&self) -> ListenAddr {
        web_socket(self.sockets.path())
    }

    /// webserver's own address, bypassing nginx.
    pub fn web_addr(&self) -> SocketAddr {
        self.web_addr.expect("this stack runs without webserver")
    }

    pub fn publish_token(&self) -> &str {
        &self.token
    }

    pub fn prefix(&self) -> &KeyPrefix {
        &self.prefix
    }

    /// The Redis channel (and key) of broadcasts on `facility`, with this stack's prefix.
    pub fn broadcast_channel(&self, facility: &str) -> String {
        let facility = Facility::parse(facility).expect("valid facility");
        self.prefix.broadcast(&facility).as_str().to_owned()
    }

    /// Opens a websocket through nginx; panics unless it upgrades.
    pub async fn connect(&self, path_and_query: &str) -> WsClient {
        WsClient::open(&self.ws_url(path_and_query)).await
    }

    /// Opens a websocket directly to wsserver; panics unless it upgrades.
    pub async fn connect_direct(&self, path_and_query: &str) -> WsClient {
        WsClient::open(&self.direct_ws_url(path_and_query)).await
    }

    /// POST /api/publish through nginx with the stack's token.
    pub async fn publish(&self, body: &serde_json::Value) -> HttpResponse {
        http::post_json(&self.front_url("/api/publish"), Some(&self.token), body.to_string()).await
    }

    /// Publishes `message` to everyone on `facility` through the API and asserts a 200.
    pub async fn publish_broadcast(&self, facility: &str, message: &str, expire: u64) -> serde_json::Value {
        let body = serde_json::json!({"facility": facility, "broadcast": true, "message": message, "expire": expire});
        let response = self.publish(&body).await;
        assert_eq!(response.status, 200, "publish answered {}: {}", response.status, response.body);
        response.json()
    }

    /// wsserver's /metrics text.
    pub async fn metrics(&self) -> String {
        let response = http::get(&self.admin_url("/metrics")).await;
        assert_eq!(response.status, 200, "/metrics answered {}", response.status);
        response.body
    }

    /// One unlabelled sample from wsserver's /metrics (`name value`), if present.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let text = self.metrics().await;
        text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
            let (key, value) = l.split_once(' ')?;
            (key == name).then(|| value.trim().parse().ok()).flatten()
        })
    }

    /// Makes sure `clients` receive live messages on `channel` (see [`crate::sync_clients`]).
    pub async fn sync(&self, channel: &str, clients: &mut [WsClient]) {
        crate::sync::sync_clients(&self.redis, channel, clients).await;
    }

    /// Stops wsserver gracefully and returns what `run` returned.
    pub async fn stop_wsserver(&mut self) -> Result<(), String> {
        let timeout = drain_deadline(&self.options) + Duration::from_secs(10);
        self.ws.shutdown(timeout).await
    }

    /// Starts wsserver again after [`Stack::stop_wsserver`], with the same options and on the
    /// same websocket and admin addresses, so nginx and reconnecting clients find it where it
    /// was. Waits until it is ready.
    pub async fn restart_wsserver(&mut self) {
        let at = Some((self.ws_addr, self.admin_addr));
        let (ws, _, _) =
            start_wsserver_at(&self.options.redis_flags_for(&self.redis), &self.options, self.sockets.path(), at).await;
        self.ws = ws;
    }

    /// Stops webserver gracefully and returns what `run` returned.
    pub async fn stop_webserver(&mut self) -> Result<(), String> {
        match self.web.as_mut() {
            Some(web) => web.shutdown(Duration::from_secs(15)).await,
            None => Ok(()),
        }
    }

    /// Stops both servers gracefully and asserts that both `run`s returned Ok.
    pub async fn shutdown(&mut self) {
        let web = self.stop_webserver().await;
        let ws = self.stop_wsserver().await;
        assert_eq!(web, Ok(()), "webserver::run");
        assert_eq!(ws, Ok(()), "wsserver::run");
    }
}

fn drain_deadline(options: &StackOptions) -> Duration {
    options
        .ws_args
        .iter()
        .position(|a| a == "--drain-deadline")
        .and_then(|i| options.ws_args.get(i + 1))
        .and_then(|v| service_duration(v))
        .unwrap_or(Duration::from_secs(10))
}

/// Parses "250ms", "3s", "2m" (enough for the harness's own timeouts).
fn service_duration(value: &str) -> Option<Duration> {
    let (number, unit) = value.find(|c: char| !c.is_ascii_digit()).map_or((value, "s"), |i| value.split_at(i));
    let n: u64 = number.parse().ok()?;
    match unit {
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" => Some(Duration::from_secs(n * 60)),
        _ => None,
    }
}

async fn bind() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    (listener, addr)
}

fn ws_socket(dir: &std::path::Path) -> ListenAddr {
    ListenAddr::Unix(dir.join("wsserver.sock"))
}

fn web_socket(dir: &std::path::Path) -> ListenAddr {
    ListenAddr::Unix(dir.join("webserver.sock"))
}

/// Binds a server's unix socket (default mode 0660: this user, as nginx runs in the tests).
fn bind_unix(addr: &ListenAddr) -> Listener {
    Listener::bind(addr, &Default::default()).unwrap_or_else(|e| panic!("{e}"))
}

async fn start_wsserver(
    redis_flags: &[String],
    options: &StackOptions,
    sockets: &std::path::Path,
) -> (Server, SocketAddr, SocketAddr) {
    start_wsserver_at(redis_flags, options, sockets, None).await
}

/// Binds `addr` again (it was just released; retries while it is still in use, up to 10 s).
async fn bind_again(addr: SocketAddr) -> TcpListener {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match TcpListener::bind(addr).await {
            Ok(listener) => return listener,
            Err(_) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("cannot bind {addr} again: {e}"),
        }
    }
}

/// Starts wsserver on its unix socket in `sockets` and on ephemeral ports, or on `at`
/// (websocket, admin) when given.
async fn start_wsserver_at(
    redis_flags: &[String],
    options: &StackOptions,
    sockets: &std::path::Path,
    at: Option<(SocketAddr, SocketAddr)>,
) -> (Server, SocketAddr, SocketAddr) {
    let mut args = vec!["wsserver".to_owned(), "--prefix".into(), options.prefix.clone()];
    args.extend(redis_flags.iter().cloned());
    args.extend(options.ws_args.iter().cloned());
    let config = <wsserver::Config as clap::Parser>::try_parse_from(&args)
        .unwrap_or_else(|e| panic!("wsserver flags {args:?}: {e}"));
    let (websocket, ws_addr, admin, admin_addr) = match at {
        Some((ws_addr, admin_addr)) => (bind_again(ws_addr).await, ws_addr, bind_again(admin_addr).await, admin_addr),
        None => {
            let (websocket, ws_addr) = bind().await;
            let (admin, admin_addr) = bind().await;
            (websocket, ws_addr, admin, admin_addr)
        }
    };
    let listeners = wsserver::Listeners {
        websocket: vec![bind_unix(&ws_socket(sockets)), websocket.into()],
        admin: vec![admin.into()],
    };
    let mut server = Server::spawn("wsserver", |shutdown| wsserver::run(config, listeners, shutdown));
    server.wait_ready(READY_TIMEOUT, "wsserver /readyz", &format!("http://{admin_addr}/readyz")).await;
    (server, ws_addr, admin_addr)
}

async fn start_webserver(
    redis_flags: &[String],
    options: &StackOptions,
    sockets: &std::path::Path,
) -> (Server, SocketAddr) {
    let mut args = vec![
        "webserver".to_owned(),
        "--prefix".into(),
        options.prefix.clone(),
        "--publish-token".into(),
        options.publish_token.clone(),
        "--max-body".into(),
        options.max_body.to_string(),
    ];
    args.extend(redis_flags.iter().cloned());
    args.extend(options.web_args.iter().cloned());
    let config = <webserver::Config as clap::Parser>::try_parse_from(&args)
        .unwrap_or_else(|e| panic!("webserver flags {args:?}: {e}"));
    let (listener, addr) = bind().await;
    let listeners = vec![bind_unix(&web_socket(sockets)), listener.into()];
    let mut server = Server::spawn("webserver", |shutdown| webserver::run(config, listeners, shutdown));
    server.wait_ready(READY_TIMEOUT, "webserver /healthz", &format!("http://{addr}/healthz")).await;
    (server, addr)
}
