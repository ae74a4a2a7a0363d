//! A real nginx in front of the servers, rendered from the shipped `nginx/crier.conf` and
//! `nginx/nginx-main.conf.template`, on an ephemeral port; its upstreams are unix sockets
//! (`unix:/path`, as shipped) or TCP addresses.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::process::{find_program, running_as_root, stop_child, tail};
use crate::tempdir::TempDir;

const WEB_TOKEN: &str = "unix:/run/crier/webserver.sock";
const WS_TOKEN: &str = "unix:/run/crier/wsserver.sock";
const LISTEN_TOKEN: &str = "listen 127.0.0.1:8080;";
const READY_TIMEOUT: Duration = Duration::from_secs(10);
const PORT_ATTEMPTS: usize = 5;

/// The repository's `nginx/` directory.
pub fn nginx_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("nginx")
}

/// Renders the site config: each of the three tokens must occur exactly once.
pub fn render_site(template: &str, web_upstream: &str, ws_upstream: &str, listen: SocketAddr) -> String {
    for token in [WEB_TOKEN, WS_TOKEN, LISTEN_TOKEN] {
        assert_eq!(template.matches(token).count(), 1, "nginx/crier.conf must contain {token:?} exactly once");
    }
    template
        .replace(LISTEN_TOKEN, &format!("listen {listen};"))
        .replace(WEB_TOKEN, web_upstream)
        .replace(WS_TOKEN, ws_upstream)
}

/// Renders the main config around the rendered site.
pub fn render_main(template: &str, dir: &Path, site: &Path) -> String {
    for placeholder in ["@USER_LINE@", "@DIR@", "@SITE@"] {
        assert!(template.contains(placeholder), "nginx-main.conf.template lacks {placeholder}");
    }
    let user_line = if running_as_root() { "user root;" } else { "" };
    let rendered = template
        .replace("@USER_LINE@", user_line)
        .replace("@DIR@", &dir.display().to_string())
        .replace("@SITE@", &site.display().to_string());
    rendered
}

/// A running nginx master (stopped with SIGTERM on drop, then killed).
pub struct Nginx {
    dir: TempDir,
    child: Option<Child>,
    addr: SocketAddr,
}

impl Nginx {
    /// Starts nginx (`CRIER_TEST_NGINX`, PATH, or /usr/sbin/nginx) proxying to the given
    /// upstreams ("127.0.0.1:port" or "unix:/path"), and waits until it answers HTTP. Retries on another port
    /// when the chosen one was taken meanwhile.
    pub async fn start(web_upstream: &str, ws_upstream: &str) -> Nginx {
        let bin = find_program("CRIER_TEST_NGINX", "nginx", &["/usr/sbin/nginx", "/usr/local/sbin/nginx"]);
        let site_template = std::fs::read_to_string(nginx_dir().join("crier.conf")).expect("read nginx/crier.conf");
        let main_template = std::fs::read_to_string(nginx_dir().join("nginx-main.conf.template"))
            .expect("read nginx/nginx-main.conf.template");
        let mut failures = Vec::new();
        for _ in 0..PORT_ATTEMPTS {
            let dir = TempDir::new("nginx").expect("create nginx temp dir");
            let addr = free_port();
            let site = dir.path().join("crier.conf");
            std::fs::write(&site, render_site(&site_template, web_upstream, ws_upstream, addr))
                .expect("write site config");
            let conf = dir.path().join("nginx.conf");
            std::fs::write(&conf, render_main(&main_template, dir.path(), &site)).expect("write nginx.conf");
            let child = Command::new(&bin)
                .arg("-c")
                .arg(&conf)
                .arg("-p")
                .arg(dir.path())
                .arg("-e")
                .arg(dir.path().join("error.log"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
            let mut nginx = Nginx { dir, child: Some(child), addr };
            match nginx.wait_ready().await {
                Ok(()) => return nginx,
                Err(e) if e.contains("Address already in use") => failures.push(e),
                Err(e) => panic!("nginx did not start: {e}"),
            }
        }
        panic!("nginx could not bind a port in {PORT_ATTEMPTS} attempts: {failures:?}");
    }

    /// Ready when an HTTP answer with `Server: nginx…` comes from the port; an error with the
    /// log when the process exits first or 10 s pass.
    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let url = format!("http://{}/nginx-ready-probe", self.addr);
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                let mut stderr = String::new();
                if let Some(mut err) = self.child.as_mut().and_then(|c| c.stderr.take()) {
                    use std::io::Read;
                    let _ = err.read_to_string(&mut stderr);
                }
                self.child = None;
                return Err(format!("nginx exited ({status}); stderr: {stderr}; error.log:\n{}", self.error_log()));
            }
            if let Ok(response) = crate::http::try_get(&url).await {
                if response.header("server").is_some_and(|s| s.starts_with("nginx")) {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "no answer from nginx on {} after {READY_TIMEOUT:?}; error.log:\n{}",
                    self.addr,
                    self.error_log()
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The end of nginx's error log.
    pub fn error_log(&self) -> String {
        tail(&self.dir.path().join("error.log"), 6000)
    }

    /// The end of nginx's access log.
    pub fn access_log(&self) -> String {
        tail(&self.dir.path().join("access.log"), 6000)
    }

    /// Stops nginx (SIGTERM, then SIGKILL after 5 s).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child, "TERM", Duration::from_secs(5));
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A loopback port that was free a moment ago (bind port 0, read it, release it).
pub fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr")
}
