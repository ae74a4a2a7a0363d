//! Several wsserver hosts behind one nginx: three `wsserver` processes, each listening (websocket
//! and admin) on its own loopback address (127.0.0.1, 127.0.0.2, 127.0.0.3; Linux routes all of
//! 127/8 to `lo`), one `webserver` process on 127.0.0.4 (admin too), and the shipped nginx site config with
//! the three wsservers in its upstream. Every process has its own Redis connections and its own
//! view of the topology: they are given the same [`Topology::crier_flags`] and find Redis (or its
//! master) by themselves.
//!
//! nginx spreads sockets by round robin; which host a socket landed on is read from the hosts'
//! `crier_ws_sockets_open` gauges ([`Hosts::open`]), never assumed.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::http::{self, HttpResponse};
use crate::login::open_with_session;
use crate::nginx::Nginx;
use crate::server_process::ServerProcess;
use crate::topology::Topology;
use crate::wait::wait_until;
use crate::ws::WsClient;

/// The loopback address of each wsserver host.
pub const HOSTS: [Ipv4Addr; 3] =
    [Ipv4Addr::new(127, 0, 0, 1), Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 0, 3)];
/// webserver's address.
const WEB_HOST: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 4);
/// The publish API's bearer token.
pub const PUBLISH_TOKEN: &str = "several-hosts-publish-token-0123456789";
const SETTLE: Duration = Duration::from_secs(10);
/// Opens through nginx before [`Hosts::open_on_every_host`] gives up (round robin needs three).
const MAX_OPENS: usize = 30;

/// A socket opened through nginx and the host (index into [`HOSTS`]) that serves it.
pub struct Placed {
    pub ws: WsClient,
    pub host: usize,
}

/// Three wsserver hosts, webserver and nginx, running.
pub struct Hosts {
    // Field order is drop order: nginx first.
    nginx: Nginx,
    pub wsservers: Vec<ServerProcess>,
    pub webserver: ServerProcess,
}

/// A port nothing listens on right now at `ip` (bound and released).
fn free_port_on(ip: Ipv4Addr) -> SocketAddr {
    let listener = std::net::TcpListener::bind((ip, 0)).unwrap_or_else(|e| panic!("bind {ip}:0: {e}"));
    listener.local_addr().expect("local addr")
}

impl Hosts {
    /// Starts the three wsservers (with `ws_args` besides their listeners and the topology's
    /// flags) and webserver (with the publish token and `web_args`), then nginx in front, and
    /// waits until each is ready and nginx reaches webserver.
    pub async fn start(topology: &impl Topology, ws_args: &[&str], web_args: &[&str]) -> Hosts {
        crate::init_tracing();
        let flags = topology.crier_flags();
        let mut wsservers = Vec::new();
        for ip in HOSTS {
            let (addr, admin) = (free_port_on(ip), free_port_on(ip));
            wsservers.push(ServerProcess::wsserver_with(&flags, addr, admin, ws_args).await);
        }
        let web_admin = free_port_on(WEB_HOST).to_string();
        let mut args = vec!["--publish-token", PUBLISH_TOKEN, "--admin-listen", &web_admin];
        args.extend_from_slice(web_args);
        let webserver = ServerProcess::webserver_with(&flags, free_port_on(WEB_HOST), &args).await;
        // nginx/crier.conf has one `server <wsserver>;` line; the token it renders from is the
        // address, so "A;\n    server B;\n    server C" yields three server lines.
        let upstream = wsservers.iter().map(|w| w.upstream.clone()).collect::<Vec<_>>().join(";\n    server ");
        let nginx = Nginx::start(&webserver.upstream, &upstream).await;
        let hosts = Hosts { nginx, wsservers, webserver };
        let url = hosts.front_url("/healthz");
        wait_until(SETTLE, "GET /healthz through nginx answers 200", || async {
            http::try_get(&url).await.is_ok_and(|r| r.status == 200)
        })
        .await;
        for (i, ws) in hosts.wsservers.iter().enumerate() {
            assert_eq!(ws.addr.ip(), IpAddr::V4(HOSTS[i]), "wsserver {i} listens on its own address");
            assert_eq!(ws.admin.map(|a| a.ip()), Some(IpAddr::V4(HOSTS[i])), "its admin listener too");
        }
        hosts
    }

    pub fn nginx(&self) -> &Nginx {
        &self.nginx
    }

    /// `http://<nginx><path>`.
    pub fn front_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.nginx.addr())
    }

    /// `ws://<nginx><path_and_query>`.
    pub fn ws_url(&self, path_and_query: &str) -> String {
        format!("ws://{}{path_and_query}", self.nginx.addr())
    }

    /// `ws://<wsserver host><path_and_query>`, bypassing nginx to reach one chosen host.
    pub fn direct_ws_url(&self, host: usize, path_and_query: &str) -> String {
        format!("ws://{}{path_and_query}", self.wsservers[host].addr)
    }

    /// POST /api/publish through nginx with the publish token.
    pub async fn publish(&self, body: &serde_json::Value) -> HttpResponse {
        http::post_json(&self.front_url("/api/publish"), Some(PUBLISH_TOKEN), body.to_string()).await
    }

    /// Each host's `crier_ws_sockets_open`.
    pub async fn sockets_open(&self) -> Vec<usize> {
        let mut counts = Vec::new();
        for ws in &self.wsservers {
            counts.push(ws.metric("crier_ws_sockets_open").await.unwrap_or(0.0) as usize);
        }
        counts
    }

    /// Opens a websocket through nginx (with the session cookie, if any) and finds the host
    /// that serves it: the one whose open-socket gauge went up by one. No other socket may
    /// open or close meanwhile.
    pub async fn open(&self, path_and_query: &str, session: Option<&str>) -> Placed {
        let before = self.sockets_open().await;
        let ws = open_with_session(&self.ws_url(path_and_query), session).await;
        let deadline = std::time::Instant::now() + SETTLE;
        let after = loop {
            let after = self.sockets_open().await;
            if after.iter().sum::<usize>() == before.iter().sum::<usize>() + 1 {
                break after;
            }
            assert!(std::time::Instant::now() < deadline, "no host counted the new socket: {before:?} → {after:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let host = (0..HOSTS.len()).find(|&i| after[i] == before[i] + 1).expect("one host counts one more socket");
        Placed { ws, host }
    }

    /// Opens sockets through nginx until every host serves at least one, and returns all of
    /// them (round robin makes that three). Panics when nginx does not spread them.
    pub async fn open_on_every_host(&self, path_and_query: &str, session: Option<&str>) -> Vec<Placed> {
        let mut placed: Vec<Placed> = Vec::new();
        while (0..HOSTS.len()).any(|h| !placed.iter().any(|p| p.host == h)) {
            let hosts: Vec<usize> = placed.iter().map(|p| p.host).collect();
            assert!(placed.len() < MAX_OPENS, "nginx did not spread {MAX_OPENS} sockets over three hosts: {hosts:?}");
            placed.push(self.open(path_and_query, session).await);
        }
        placed
    }

    /// The processes' logs and nginx's error log, for failure messages.
    pub fn logs(&self) -> String {
        let mut text = String::new();
        for (i, ws) in self.wsservers.iter().enumerate() {
            text.push_str(&format!("--- wsserver {i} ({}):\n{}\n", HOSTS[i], ws.output()));
        }
        text.push_str(&format!("--- webserver:\n{}\n", self.webserver.output()));
        text.push_str(&format!("--- nginx:\n{}\n", self.nginx.error_log()));
        text
    }
}
